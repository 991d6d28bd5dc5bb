"""Fast sampling on a small trained LLaDA: NFE, answer tokens/s and exact-match accuracy of every sampling mode.

The script trains (fixed seed, a few minutes on CPU, `llada_hf.training.DataCollatorForDiffusionSFT` + a plain
AdamW loop) a small LLaDA 1.x on a generated task with 256-token answers, then decodes a fixed held-out set with
each mode, all batched, from one run:

- plain: the official sampler (`steps` = answer length, block 32: one token per step, full canvas every step);
- prefix / dual cache (Fast-dLLM's approximate KV caches, refreshed once per block), still one token per step;
- parallel: Fast-dLLM's confidence-threshold decoding (top-1 plus every masked position of the block above it);
- both: cache + parallel, and a few other parallel rules (factor, entropy bound) for comparison.

Task ("repeated arithmetic"): the prompt is BOS + 16 random values in [0, 32); the answer repeats them 16 times,
each repetition adding 1 (mod 32): answer column `c` holds `x[c - 16] + 1`. Exact match = the whole 256-token answer.
Tokens/s counts answer tokens before the first EOS (all 256 here: the task has no EOS).

`--task addition` / `--task parity` decode instead a harder task (`modeling_tests/toy_tasks.py`, the tasks of
`bench_cap.py`) with its committed checkpoint (`modeling_tests/fixtures/tiny-llada-<task>`, no training), each answer
in one block: addition (10-token answers, 9 digits + EOS), where an answer digit hangs on a carry chain, and parity
(17-token answers, 16 prefix parities + EOS), where every bit is the XOR of the bit before it and a prompt bit, so
threshold decoding needs several steps per block. Exact match compares the whole answer (EOS included).

    OMP_NUM_THREADS=2 python benchmarks/bench_fast_sampling.py            # trains once (cached in --model-dir)
    python benchmarks/bench_fast_sampling.py --examples 32 --train-steps 50   # a quick smoke run
    python benchmarks/bench_fast_sampling.py --task parity --examples 1000 --batch-size 250
"""

import argparse
import sys
import time
from pathlib import Path

import torch

from llada_hf import LLaDAConfig, LLaDAModelLM
from llada_hf.training import DataCollatorForDiffusionSFT


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "modeling_tests"))

from toy_tasks import PAIR_TASKS, pair_tokenizer, train_adamw  # noqa: E402


VALUES, PATTERN, REPEATS = 32, 16, 16
BOS, EOS, MASK = VALUES, VALUES + 1, VALUES + 2
VOCAB = VALUES + 3
ANSWER = PATTERN * REPEATS  # 256
BLOCK = 32


def make_examples(count: int, seed: int) -> tuple[torch.LongTensor, torch.LongTensor]:
    """`(prompts [count, 1 + PATTERN], answers [count, ANSWER])` of the repeated-arithmetic task."""
    generator = torch.Generator().manual_seed(seed)
    pattern = torch.randint(0, VALUES, (count, PATTERN), generator=generator)
    prompts = torch.cat([torch.full((count, 1), BOS), pattern], dim=1)
    answers = torch.cat([(pattern + r + 1) % VALUES for r in range(REPEATS)], dim=1)
    return prompts, answers


def build_model(seed: int) -> LLaDAModelLM:
    torch.manual_seed(seed)
    config = LLaDAConfig(
        d_model=128,
        n_heads=4,
        n_kv_heads=4,
        n_layers=2,
        mlp_hidden_size=256,
        vocab_size=VOCAB,
        embedding_size=VOCAB,
        max_sequence_length=512,
        mask_token_id=MASK,
        eos_token_id=EOS,
        pad_token_id=EOS,
        bos_token_id=BOS,
        rope_theta=10000.0,
    )
    return LLaDAModelLM(config)


def train(model: LLaDAModelLM, steps: int, batch_size: int, seed: int) -> list[float]:
    """Masked-diffusion SFT on freshly generated examples (the prompt is never masked). Returns the losses."""
    collator = DataCollatorForDiffusionSFT(mask_token_id=MASK, eos_token_id=EOS, seed=seed)

    def batch(step: int) -> dict:
        prompts, answers = make_examples(batch_size, seed=1_000_000 + step)
        return collator([
            {"input_ids": torch.cat([p, a]), "labels": torch.cat([torch.full_like(p, -100), a])}
            for p, a in zip(prompts, answers)
        ])  # fmt: skip

    return train_adamw(model, batch, steps, 3e-3, warmup=max(1, steps // 20), weight_decay=0.01)


def load_or_train(args) -> LLaDAModelLM:
    model_dir = Path(args.model_dir) / f"steps{args.train_steps}-seed{args.seed}"
    if (model_dir / "config.json").exists():
        return LLaDAModelLM.from_pretrained(model_dir).eval()
    model = build_model(args.seed)
    start = time.perf_counter()
    losses = train(model, args.train_steps, args.train_batch_size, args.seed)
    print(f"trained {args.train_steps} steps in {time.perf_counter() - start:.0f} s, final loss {losses[-1]:.4f}")
    model.save_pretrained(model_dir)
    return model


def answer_tokens_before_eos(answers: torch.LongTensor) -> int:
    is_eos = answers == EOS
    first_eos = torch.where(is_eos.any(1), is_eos.long().argmax(1), answers.shape[1])
    return int(first_eos.sum())


def use_pair_task(name: str) -> LLaDAModelLM:
    """Switches the module to the digit-pair task `name` (`modeling_tests/toy_tasks.py`); returns its committed
    checkpoint."""
    global ANSWER, BLOCK, EOS, make_examples
    task, tokenizer = PAIR_TASKS[name], pair_tokenizer()
    ANSWER = BLOCK = task.answer_length
    EOS = tokenizer.eos_token_id

    def make_task_examples(count: int, seed: int) -> tuple[torch.LongTensor, torch.LongTensor]:
        problems = task.problems(count, seed=seed)
        prompts = torch.tensor([tokenizer(task.prompt(problem))["input_ids"] for problem in problems])
        answers = torch.tensor([tokenizer(task.answer(problem))["input_ids"] + [EOS] for problem in problems])
        return prompts, answers

    make_examples = make_task_examples
    for kwargs in MODES.values():
        if "steps" in kwargs:
            kwargs["steps"] = ANSWER
    checkpoint = REPO / "modeling_tests" / "fixtures" / f"tiny-llada-{name}"
    return LLaDAModelLM.from_pretrained(checkpoint, dtype=torch.float32).eval()


# mode name -> generate() keyword arguments (on top of max_new_tokens=256, block_length=32). The first is the baseline.
PLAIN = "plain (official, 1 tok/step)"
MODES = {
    PLAIN: {"steps": ANSWER},
    "+prefix cache": {"steps": ANSWER, "diffusion_cache": "prefix"},
    "+dual cache": {"steps": ANSWER, "diffusion_cache": "dual"},
    "+parallel (threshold 0.9)": {"parallel_decoding": "threshold", "threshold": 0.9},
    "+prefix cache +threshold 0.9": {"diffusion_cache": "prefix", "parallel_decoding": "threshold", "threshold": 0.9},
    "+dual cache +threshold 0.9": {"diffusion_cache": "dual", "parallel_decoding": "threshold", "threshold": 0.9},
    "+dual cache +threshold 0.5": {"diffusion_cache": "dual", "parallel_decoding": "threshold", "threshold": 0.5},
    "+dual cache +factor 1.0": {"diffusion_cache": "dual", "parallel_decoding": "factor", "factor": 1.0},
    "+dual cache +entropy bound 0.1": {
        "diffusion_cache": "dual",
        "parallel_decoding": "entropy_bound",
        "entropy_bound": 0.1,
    },
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=200, help="held-out examples (fixed seed)")
    parser.add_argument("--batch-size", type=int, default=200, help="rows per generate() call")
    parser.add_argument("--train-steps", type=int, default=800)
    parser.add_argument("--train-batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model-dir", default="/tmp/llada_hf_bench_fast_sampling")
    parser.add_argument(
        "--modes", nargs="*", default=list(MODES), help="modes to run, in this order (the plain one is always run)"
    )
    parser.add_argument("--train-only", action="store_true")
    parser.add_argument("--task", choices=["repeat", "addition", "parity"], default="repeat")
    args = parser.parse_args()

    model = load_or_train(args) if args.task == "repeat" else use_pair_task(args.task)
    if args.train_only:
        return
    prompts, answers = make_examples(args.examples, seed=12345)

    rows = []
    for name in dict.fromkeys([*args.modes, PLAIN]):
        kwargs = MODES[name]
        outputs, nfe, seconds = [], 0, 0.0
        for start in range(0, args.examples, args.batch_size):
            batch = prompts[start : start + args.batch_size]
            begin = time.perf_counter()
            out = model.generate(
                batch, max_new_tokens=ANSWER, block_length=BLOCK, return_dict_in_generate=True, **kwargs
            )
            seconds += time.perf_counter() - begin
            outputs.append(out.sequences[:, prompts.shape[1] :])
            nfe += out.nfe
        generated = torch.cat(outputs)
        accuracy = 100.0 * float((generated == answers).all(1).float().mean())
        token_accuracy = 100.0 * float((generated == answers).float().mean())
        rate = answer_tokens_before_eos(generated) / seconds
        rows.append((name, nfe, seconds, rate, accuracy, token_accuracy))
        print(f"{name}: NFE {nfe}, {seconds:.1f} s, {rate:.1f} tok/s, exact match {accuracy:.1f}%", flush=True)

    rows.sort(key=lambda row: list(MODES).index(row[0]))
    base_rate, base_accuracy = rows[0][3], rows[0][4]
    threads = torch.get_num_threads()
    print(
        f"\n{args.examples} held-out examples, batch {args.batch_size}, answer {ANSWER} tokens, block {BLOCK}, "
        f"float32, {threads} CPU thread(s), "
        + (f"model trained {args.train_steps} steps" if args.task == "repeat" else f"{args.task} checkpoint")
        + f" (seed {args.seed})"
    )
    header = (
        f"| {'mode':<32} | {'NFE':>5} | {'wall s':>7} | {'tok/s':>8} | {'speed-up':>8} | {'exact match %':>13} "
        f"| {'token acc %':>11} |"
    )
    print(header)
    print("|" + "|".join("-" * (len(cell)) for cell in header.split("|")[1:-1]) + "|")
    for name, nfe, seconds, rate, accuracy, token_accuracy in rows:
        print(
            f"| {name:<32} | {nfe:>5} | {seconds:>7.1f} | {rate:>8.1f} | {rate / base_rate:>7.1f}x "
            f"| {accuracy:>6.1f} ({accuracy - base_accuracy:+.1f}) | {token_accuracy:>11.2f} |"
        )


if __name__ == "__main__":
    main()
