"""Confidence-aware parallel (CAP) fine-tuning with the stock `Trainer`: the training that makes threshold decoding
commit more tokens per forward (LLaDA2.0-flash-CAP; dParallel).

CAP adds to the masked-diffusion loss λ times the entropy of the masked positions the model already predicts right.
It takes no custom Trainer: set λ in the model config (`confidence_loss_weight`), train with any diffusion collator,
and add `DiffusionLossPartsCallback` to log both parts of the loss next to `loss`.

By default this fine-tunes the column-addition checkpoint of `modeling_tests/fixtures/tiny-llada-addition` (task in
`modeling_tests/toy_tasks.py`) and prints, before and after, the exact match and tokens per forward under threshold
decoding (0.95) on held-out problems. λ = 0.3 and 150 steps are what `benchmarks/bench_cap.py` chose on its
validation split for this task (a small gain there, see benchmarks/README.md); for another model and data, choose λ
on a validation split of your own: it
does not transfer from dFactory's `confidence_beta` (2.0 there), whose cross-entropy is a plain token mean where
ours is 1/t-weighted.

    python examples/cap_finetune.py                          # ~1 min on CPU
    python examples/cap_finetune.py --weight 1.0 --steps 300 --output-dir /tmp/cap
    LLADA_HF_SMOKE=1 python examples/cap_finetune.py         # a few steps
"""

import argparse
import os
import sys
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

from llada_hf.training import DataCollatorForDiffusionSFT, DiffusionLossPartsCallback


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "modeling_tests"))

from toy_tasks import PAIR_TASKS, pair_tokenizer  # noqa: E402


SMOKE = os.environ.get("LLADA_HF_SMOKE") == "1"


def threshold_decoding(model, task, tokenizer, problems, threshold: float = 0.95) -> str:
    scores = task.decode(model, tokenizer, problems, parallel_decoding="threshold", threshold=threshold)
    return f"exact match {scores['exact']:.1f}%, {scores['tpf']:.2f} tokens per forward"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=sorted(PAIR_TASKS), default="addition")
    parser.add_argument("--model", default=None, help="default: the task's committed checkpoint")
    parser.add_argument("--weight", type=float, default=0.3, help="λ, the model config's confidence_loss_weight")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--output-dir", default=None)
    args = parser.parse_args()
    if SMOKE:
        args.steps = 3
    output_dir = args.output_dir or tempfile.mkdtemp()
    torch.set_num_threads(1)

    task, tokenizer = PAIR_TASKS[args.task], pair_tokenizer()
    model_path = args.model or REPO / "modeling_tests" / "fixtures" / f"tiny-llada-{args.task}"
    # λ is a config field: the forward adds λ * confidence_loss to the loss.
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32, confidence_loss_weight=args.weight)
    held_out = task.problems(32 if SMOKE else 500, seed=7)
    train = task.problems(args.steps * 32, seed=8, exclude=frozenset(held_out))
    print("before:", threshold_decoding(model.eval(), task, tokenizer, held_out))

    trainer = Trainer(
        model=model,
        args=TrainingArguments(
            output_dir=output_dir,
            per_device_train_batch_size=32,
            max_steps=args.steps,
            learning_rate=5e-4,
            lr_scheduler_type="constant",
            weight_decay=0.0,
            logging_steps=max(1, args.steps // 5),
            report_to=[],
            save_strategy="no",
            use_cpu=not torch.cuda.is_available(),
            disable_tqdm=True,
        ),  # fmt: skip
        train_dataset=[task.feature(tokenizer, problem) for problem in train],
        data_collator=DataCollatorForDiffusionSFT(
            mask_token_id=tokenizer.mask_token_id, eos_token_id=tokenizer.eos_token_id
        ),
        callbacks=[DiffusionLossPartsCallback()],  # logs diffusion_loss and confidence_loss next to loss
    )
    trainer.train()
    print("after: ", threshold_decoding(model.eval(), task, tokenizer, held_out))
    trainer.save_model(output_dir)
    print(f"saved to {output_dir}")


if __name__ == "__main__":
    main()
