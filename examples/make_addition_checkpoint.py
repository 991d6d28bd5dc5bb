"""Trains the small LLaDA of the column-addition task, committed as `modeling_tests/fixtures/tiny-llada-addition`.

The task (`modeling_tests/toy_tasks.py`): two 8-digit numbers written column by column (one token per digit pair),
answer = their 9-digit sum then EOS, with columns summing to 9 (which pass a carry on) made frequent, so that an
answer digit may depend on a long carry chain. It is the task of `benchmarks/bench_cap.py` and of the CAP slow
test. Measured on the committed checkpoint (512 held-out problems): 100% exact match at one token per step; with
threshold 0.9, 98.4% exact and 0.62 answer tokens (of 10) still masked after the first step on average.

The model (LLaDA 1.x, 1 layer, d_model 192, 4 heads, MLP 384, vocabulary 113; about 0.41M parameters) is trained
from scratch with `DataCollatorForDiffusionSFT` (prompt never masked) and AdamW on freshly drawn problems, then saved
in bfloat16 (about 1 MB) with its tokenizer. The script ends by printing, on a held-out set, the exact match at one
token per step and, under threshold decoding (0.9), the exact match, NFE and how many answer tokens are still masked
after the first step.

    python examples/make_addition_checkpoint.py                     # ~2-4 min on 2 shared CPU cores
    python examples/make_addition_checkpoint.py --output-dir /tmp/m
    LLADA_HF_SMOKE=1 python examples/make_addition_checkpoint.py    # a few steps into a temporary folder
"""

import argparse
import math
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

from llada_hf import LLaDAConfig, LLaDAModelLM
from llada_hf.training import DataCollatorForDiffusionSFT


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "modeling_tests"))

from toy_tasks import (  # noqa: E402
    ADD_ANSWER_LENGTH,
    ADD_PROMPT_LENGTH,
    addition_answer,
    addition_feature,
    addition_problems,
    addition_prompt,
    addition_tokenizer,
)


SMOKE = os.environ.get("LLADA_HF_SMOKE") == "1"
HELD_OUT_SEED, TRAIN_SEED = 1, 0


def build_model(tokenizer, seed: int = 0) -> LLaDAModelLM:
    torch.manual_seed(seed)
    config = LLaDAConfig(
        d_model=192, n_heads=4, n_kv_heads=4, n_layers=1, mlp_hidden_size=384, vocab_size=len(tokenizer),
        embedding_size=len(tokenizer), max_sequence_length=64, rope_theta=10000.0,
        mask_token_id=tokenizer.mask_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    return LLaDAModelLM(config)


def train(model, tokenizer, steps: int, batch_size: int, learning_rate: float, exclude: frozenset, seed: int):
    """Plain AdamW loop on fresh problems each step (none of them in `exclude`), cosine schedule with warmup."""
    collator = DataCollatorForDiffusionSFT(
        mask_token_id=tokenizer.mask_token_id, eos_token_id=tokenizer.eos_token_id, seed=seed
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0, betas=(0.9, 0.98))
    warmup = min(50, max(1, steps // 10))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    model.train()
    rng = random.Random(seed)
    losses = []
    start = time.perf_counter()
    for step in range(steps):
        problems = addition_problems(batch_size, seed=rng.randrange(2**62), exclude=exclude)
        loss = model(**collator([addition_feature(tokenizer, a, b) for a, b in problems])).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if (step + 1) % 100 == 0 or step + 1 == steps:
            recent = losses[-50:]
            print(
                f"step {step + 1}/{steps}  loss {sum(recent) / len(recent):.4f}  {time.perf_counter() - start:.0f} s"
            )
    model.eval()
    return losses


@torch.no_grad()
def evaluate(model, tokenizer, problems) -> dict[str, float]:
    prompts = torch.tensor([tokenizer(addition_prompt(a, b))["input_ids"] for a, b in problems])
    targets = [addition_answer(a, b) for a, b in problems]

    def exact(sequences):
        answers = [tokenizer.decode(row[ADD_PROMPT_LENGTH:], skip_special_tokens=True) for row in sequences]
        return 100.0 * sum(x == y for x, y in zip(answers, targets)) / len(targets)

    n = ADD_ANSWER_LENGTH
    one_per_step = model.generate(prompts, max_new_tokens=n, steps=n, block_length=n, temperature=0.0)
    parallel = model.generate(
        prompts, max_new_tokens=n, block_length=n, parallel_decoding="threshold", threshold=0.9,
        return_dict_in_generate=True, output_history=True,
    )  # fmt: skip
    still_masked = (parallel.history[0][:, ADD_PROMPT_LENGTH:] == tokenizer.mask_token_id).sum(1).float().mean()
    return {
        "exact_one_per_step": exact(one_per_step),
        "exact_threshold_0.9": exact(parallel.sequences),
        "nfe_threshold_0.9": parallel.nfe,
        "masked_after_first_step_0.9": float(still_masked),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", default=str(REPO / "modeling_tests" / "fixtures" / "tiny-llada-addition"))
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--held-out", type=int, default=512)
    args = parser.parse_args()
    if SMOKE:
        args.output_dir, args.steps, args.batch_size, args.held_out = tempfile.mkdtemp(), 5, 8, 16
    torch.set_num_threads(1)  # tiny matrices: threads only wait on each other

    tokenizer = addition_tokenizer()
    held_out = addition_problems(args.held_out, seed=HELD_OUT_SEED)
    model = build_model(tokenizer)
    print(f"{sum(p.numel() for p in model.parameters()) / 1e6:.3f}M parameters")
    train(model, tokenizer, args.steps, args.batch_size, args.learning_rate, frozenset(held_out), TRAIN_SEED)

    model = model.to(torch.bfloat16)
    model.save_pretrained(args.output_dir)
    tokenizer.save_pretrained(args.output_dir)
    reloaded = LLaDAModelLM.from_pretrained(args.output_dir, dtype=torch.float32).eval()
    print(f"saved to {args.output_dir}; held-out ({len(held_out)}):", evaluate(reloaded, tokenizer, held_out))


if __name__ == "__main__":
    main()
