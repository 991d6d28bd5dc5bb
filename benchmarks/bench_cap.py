"""Confidence-aware parallel (CAP) training against plain SFT, from the same checkpoint, for the same steps.

Start: the small LLaDA of a digit-pair task committed in `modeling_tests/fixtures/tiny-llada-<task>` (made by
`examples/make_task_checkpoint.py`; tasks in `modeling_tests/toy_tasks.py`): `--task parity` (default; running
parity of 16 bits, 17-token answers, sequential by construction) or `--task addition` (8-digit + 8-digit with carries, 10-token
answers); each answer is decoded as one block. Both arms fine-tune it with `DataCollatorForDiffusionSFT` on the same
freshly drawn batches (same seeds), AdamW at a constant learning rate; the CAP arm sets
`model.config.confidence_loss_weight` = λ, the SFT arm leaves it at 0.

Choice of λ and steps (grid `--weights` x `--steps`, on the validation split only): for each step count, the SFT
arm's validation exact match under threshold 0.95 is the reference; among the CAP runs whose validation exact match
(threshold 0.95) is within `--max-drop` points of it, the one with the highest tokens per forward at threshold 0.95
wins (if none is, the one with the smallest drop). The test split is decoded only with the chosen pair and its SFT
counterpart.

Table (test split, one run): exact match, NFE (forwards of the batched call), tokens per forward (TPF: answer
tokens / forwards each row needed, from the step history), answer tokens/s, for the official sampler (one token per
step), threshold 0.9, threshold 0.95 and dual cache + threshold 0.95, for both models. Headline: CAP's TPF gain over
SFT at threshold 0.95 and the exact-match change.

    OMP_NUM_THREADS=1 python benchmarks/bench_cap.py                   # the parity task
    OMP_NUM_THREADS=1 python benchmarks/bench_cap.py --task addition
    python benchmarks/bench_cap.py --weights 0.5 --steps 20 --validation 64 --test 64   # a quick smoke run
"""

import argparse
import copy
import random
import sys
import time
from pathlib import Path

import torch

from llada_hf import LLaDAModelLM
from llada_hf.training import DataCollatorForDiffusionSFT


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "modeling_tests"))

from toy_tasks import PAIR_TASKS, PairTask, pair_tokenizer  # noqa: E402


FIXTURES = REPO / "modeling_tests" / "fixtures"
MODES = {
    "official (1 tok/step)": {},  # steps = the answer length
    "threshold 0.9": {"parallel_decoding": "threshold", "threshold": 0.9},
    "threshold 0.95": {"parallel_decoding": "threshold", "threshold": 0.95},
    "dual cache + threshold 0.95": {"diffusion_cache": "dual", "parallel_decoding": "threshold", "threshold": 0.95},
}


def finetune(
    task: PairTask,
    checkpoint: Path,
    weight: float,
    steps: list[int],
    batch_size: int,
    learning_rate: float,
    exclude: frozenset,
    seed: int,
):
    """Fine-tunes the checkpoint with `confidence_loss_weight=weight`; returns {step count: state dict}."""
    tokenizer = pair_tokenizer()
    model = LLaDAModelLM.from_pretrained(checkpoint, dtype=torch.float32)
    model.config.confidence_loss_weight = weight
    collator = DataCollatorForDiffusionSFT(
        mask_token_id=tokenizer.mask_token_id, eos_token_id=tokenizer.eos_token_id, seed=seed
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0, betas=(0.9, 0.98))
    rng = random.Random(seed)
    snapshots, start = {}, time.perf_counter()
    model.train()
    for step in range(1, max(steps) + 1):
        problems = task.problems(batch_size, seed=rng.randrange(2**62), exclude=exclude)
        output = model(**collator([task.feature(tokenizer, problem) for problem in problems]))
        output.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step in steps:
            snapshots[step] = copy.deepcopy(model.state_dict())
            parts = "" if output.confidence_loss is None else f", confidence {output.confidence_loss.item():.4f}"
            print(
                f"  λ={weight} step {step}: loss {output.loss.item():.4f}{parts} ({time.perf_counter() - start:.0f} s)"
            )
    return snapshots


def load(checkpoint: Path, state) -> LLaDAModelLM:
    model = LLaDAModelLM.from_pretrained(checkpoint, dtype=torch.float32)
    model.load_state_dict(state)
    return model.eval()


def decode(model, task: PairTask, problems, mode: str, batch_size: int) -> dict[str, float]:
    options = MODES[mode] or {"steps": task.answer_length}
    return task.decode(model, pair_tokenizer(), problems, batch_size, temperature=0.0, **options)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=float, nargs="+", default=[0.3, 1.0, 3.0], help="λ grid")
    parser.add_argument("--steps", type=int, nargs="+", default=[150, 300], help="fine-tuning step grid")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--max-drop", type=float, default=2.0, help="validation exact-match points CAP may lose")
    parser.add_argument("--validation", type=int, default=512)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--decode-batch-size", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--task", choices=sorted(PAIR_TASKS), default="parity")
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: the task's committed fixture")
    args = parser.parse_args()
    torch.set_num_threads(1)
    task = PAIR_TASKS[args.task]
    args.checkpoint = args.checkpoint or FIXTURES / f"tiny-llada-{args.task}"

    test = task.problems(args.test, seed=101)
    validation = task.problems(args.validation, seed=102, exclude=frozenset(test))
    exclude = frozenset(test) | frozenset(validation)
    # The fixture was trained on problems drawn by another generator; its own held-out set (seed 1) is not reused.

    print("fine-tuning (same batches for every arm)")
    arms = [0.0, *args.weights]
    runs = {
        weight: finetune(
            task, args.checkpoint, weight, args.steps, args.batch_size, args.learning_rate, exclude, args.seed
        )
        for weight in arms
    }

    print("\nvalidation (threshold 0.95): λ, steps, exact match %, TPF")
    scores = {}
    for weight, snapshots in runs.items():
        for steps, state in snapshots.items():
            scores[weight, steps] = decode(
                load(args.checkpoint, state), task, validation, "threshold 0.95", args.decode_batch_size
            )
            print(f"  λ={weight:<5} steps={steps:<5} exact {scores[weight, steps]['exact']:5.1f}  "
                  f"TPF {scores[weight, steps]['tpf']:.2f}")  # fmt: skip
    candidates = [(w, s) for w in args.weights for s in args.steps]
    drop = {(w, s): scores[0.0, s]["exact"] - scores[w, s]["exact"] for w, s in candidates}
    allowed = [key for key in candidates if drop[key] <= args.max_drop]
    if allowed:
        chosen = max(allowed, key=lambda key: scores[key]["tpf"])
    else:
        chosen = min(candidates, key=lambda key: drop[key])
    weight, steps = chosen
    print(f"chosen on validation: λ={weight}, {steps} steps "
          f"({'within' if allowed else 'NONE within'} {args.max_drop} points of SFT)")  # fmt: skip

    models = {
        "SFT": load(args.checkpoint, runs[0.0][steps]),
        f"CAP λ={weight}": load(args.checkpoint, runs[weight][steps]),
    }
    results = {}
    for name, model in models.items():
        for mode in MODES:
            results[name, mode] = decode(model, task, test, mode, args.decode_batch_size)

    print(
        f"\n{args.task} test split: {args.test} problems, answer {task.answer_length} tokens (one block), batch "
        f"{args.decode_batch_size}, "
        f"float32, {torch.get_num_threads()} CPU thread(s); fine-tuned {steps} steps of {args.batch_size} from "
        f"{args.checkpoint.name}, lr {args.learning_rate}"
    )
    print("| model | mode | exact match % | NFE | tokens/forward | tokens/s |")
    print("|---|---|---|---|---|---|")
    for (name, mode), r in results.items():
        print(f"| {name} | {mode} | {r['exact']:.1f} | {r['nfe']} | {r['tpf']:.2f} | {r['tok_s']:.0f} |")
    sft, cap = results["SFT", "threshold 0.95"], results[f"CAP λ={weight}", "threshold 0.95"]
    print(
        f"\nheadline (threshold 0.95): TPF {sft['tpf']:.2f} -> {cap['tpf']:.2f} (x{cap['tpf'] / sft['tpf']:.2f}), "
        f"exact match {sft['exact']:.1f} -> {cap['exact']:.1f} ({cap['exact'] - sft['exact']:+.1f} points)"
    )


if __name__ == "__main__":
    main()
