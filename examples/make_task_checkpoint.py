"""Trains the small LLaDA of a digit-pair task (`modeling_tests/toy_tasks.py`) and commits it as a test fixture.

- `--task addition` -> `modeling_tests/fixtures/tiny-llada-addition`: two 8-digit numbers written column by column
  (one token per digit pair), answer = their 9-digit sum then EOS, with columns summing to 9 (which pass a carry on)
  made frequent. Measured on the committed checkpoint (512 held-out problems): 100% exact match at one token per step;
  with threshold 0.9, 98.4% exact and 0.62 answer tokens (of 10) still masked after the first step on average.
  1 layer, d_model 192, 4 heads, MLP 384 (about 0.41M parameters), 1200 steps.
- `--task parity` -> `modeling_tests/fixtures/tiny-llada-parity`: 16 random bits; answer = the parity of every
  prefix, then EOS. Each answer bit is the XOR of the one before it and a prompt bit, so decoding is sequential.
  Figures: `benchmarks/README.md` (CAP section).

Both are the tasks of `benchmarks/bench_cap.py` and `bench_fast_sampling.py --task`; addition is also that of the CAP
slow test. The model (LLaDA 1.x) is trained from scratch with `DataCollatorForDiffusionSFT` (prompt never masked) and
AdamW on freshly drawn problems, then saved in bfloat16 (about 1 MB) with its tokenizer. The script ends by printing,
on a held-out set, the exact match at one token per step and, under threshold decoding (0.9), the exact match, NFE and
how many answer tokens are still masked after the first step.

    python examples/make_task_checkpoint.py --task addition         # ~2-4 min on 2 shared CPU cores
    python examples/make_task_checkpoint.py --task parity --output-dir /tmp/m
    LLADA_HF_SMOKE=1 python examples/make_task_checkpoint.py        # a few steps into a temporary folder
"""

import argparse
import os
import random
import sys
import tempfile
from pathlib import Path

import torch

from llada_hf import LLaDAConfig, LLaDAModelLM
from llada_hf.training import DataCollatorForDiffusionSFT


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "modeling_tests"))

from toy_tasks import PAIR_TASKS, PairTask, pair_tokenizer, train_adamw  # noqa: E402


SMOKE = os.environ.get("LLADA_HF_SMOKE") == "1"
HELD_OUT_SEED, TRAIN_SEED = 1, 0
# Per task: model size and training length (the committed fixtures were made with these).
RECIPES = {
    "addition": {"n_layers": 1, "d_model": 192, "mlp_hidden_size": 384, "steps": 1200},
    "parity": {"n_layers": 2, "d_model": 128, "mlp_hidden_size": 256, "steps": 2000},
}


def build_model(tokenizer, n_layers: int, d_model: int, mlp_hidden_size: int, seed: int = 0) -> LLaDAModelLM:
    torch.manual_seed(seed)
    config = LLaDAConfig(
        d_model=d_model, n_heads=4, n_kv_heads=4, n_layers=n_layers, mlp_hidden_size=mlp_hidden_size,
        vocab_size=len(tokenizer), embedding_size=len(tokenizer), max_sequence_length=64, rope_theta=10000.0,
        mask_token_id=tokenizer.mask_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    return LLaDAModelLM(config)


def train(
    model, task: PairTask, tokenizer, steps: int, batch_size: int, learning_rate: float, exclude: frozenset, seed: int
) -> list[float]:
    """AdamW on fresh problems each step (none of them in `exclude`), cosine schedule with warmup."""
    collator = DataCollatorForDiffusionSFT(
        mask_token_id=tokenizer.mask_token_id, eos_token_id=tokenizer.eos_token_id, seed=seed
    )
    rng = random.Random(seed)

    def batch(step: int) -> dict:
        problems = task.problems(batch_size, seed=rng.randrange(2**62), exclude=exclude)
        return collator([task.feature(tokenizer, problem) for problem in problems])

    return train_adamw(model, batch, steps, learning_rate, warmup=min(50, max(1, steps // 10)))


def evaluate(model, task: PairTask, tokenizer, problems) -> dict[str, float]:
    one_per_step = task.decode(model, tokenizer, problems, steps=task.answer_length, temperature=0.0)
    parallel = task.decode(model, tokenizer, problems, parallel_decoding="threshold", threshold=0.9)
    return {
        "exact_one_per_step": one_per_step["exact"],
        "exact_threshold_0.9": parallel["exact"],
        "nfe_threshold_0.9": parallel["nfe"],
        "masked_after_first_step_0.9": parallel["masked_after_first_step"],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=sorted(PAIR_TASKS), default="addition")
    parser.add_argument("--output-dir", default=None, help="default: modeling_tests/fixtures/tiny-llada-<task>")
    parser.add_argument("--steps", type=int, default=None, help="default: the task's recipe")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--held-out", type=int, default=512)
    args = parser.parse_args()
    task, recipe = PAIR_TASKS[args.task], dict(RECIPES[args.task])
    recipe_steps = recipe.pop("steps")
    args.steps = args.steps or recipe_steps
    args.output_dir = args.output_dir or str(REPO / "modeling_tests" / "fixtures" / f"tiny-llada-{args.task}")
    if SMOKE:
        args.output_dir, args.steps, args.batch_size, args.held_out = tempfile.mkdtemp(), 5, 8, 16
    torch.set_num_threads(1)  # tiny matrices: threads only wait on each other

    tokenizer = pair_tokenizer()
    held_out = task.problems(args.held_out, seed=HELD_OUT_SEED)
    model = build_model(tokenizer, **recipe)
    print(f"{args.task}: {sum(p.numel() for p in model.parameters()) / 1e6:.3f}M parameters")
    train(model, task, tokenizer, args.steps, args.batch_size, args.learning_rate, frozenset(held_out), TRAIN_SEED)

    model = model.to(torch.bfloat16)
    model.save_pretrained(args.output_dir)
    tokenizer.save_pretrained(args.output_dir)
    reloaded = LLaDAModelLM.from_pretrained(args.output_dir, dtype=torch.float32).eval()
    print(f"saved to {args.output_dir}; held-out ({len(held_out)}):", evaluate(reloaded, task, tokenizer, held_out))


if __name__ == "__main__":
    main()
