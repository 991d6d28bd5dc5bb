"""Masked-diffusion training with the stock `Trainer`; the launcher decides how the model is distributed.

    # FSDP2 through accelerate (GPUs):
    accelerate launch --config_file examples/distributed/fsdp2.yaml examples/distributed/train.py --model PATH \
        --output-dir OUT
    # FSDP2 applied by transformers itself at load time: GPUs, or CPU processes talking over gloo (what CI runs,
    # on a tiny random model; accelerate 1.15 only enables FSDP on accelerators):
    LLADA_HF_SMOKE=1 torchrun --nproc_per_node 2 examples/distributed/train.py --fsdp-size 2
    # DeepSpeed ZeRO-3 (GPUs, `pip install deepspeed`):
    accelerate launch --config_file examples/distributed/deepspeed_zero3.yaml examples/distributed/train.py \
        --model PATH --output-dir OUT

The batches are noised by `DataCollatorForDiffusionPretraining` (LLaDA's pre-training objective: a masking ratio t
per row, the 1/t-weighted cross-entropy of the masked tokens, computed by the model's forward). The data are random
token ids so that the recipe runs anywhere: replace `RandomTokens` with your tokenized dataset. Every process prints
one line at the end (its rank, the distributed backend, the share of the weights it holds, the steps it ran); the
trained model is saved in the released format by `save_model`, which gathers the shards.

With `LLADA_HF_SMOKE=1` and no `--model`, a tiny random LLaDA is written to `OUTPUT_DIR/initial` and trained for
2 steps (a few seconds).
"""

import argparse
import os
import tempfile

import torch
from torch.distributed.tensor import DTensor
from torch.utils.data import Dataset
from transformers import AutoModelForCausalLM, Trainer, TrainingArguments
from transformers.distributed import DistributedConfig

from llada_hf import LLaDAConfig, LLaDAModelLM
from llada_hf.training import DataCollatorForDiffusionPretraining


SMOKE = os.environ.get("LLADA_HF_SMOKE") == "1"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=not SMOKE, help="Checkpoint folder or Hub id (LLaDA 1.x or LLaDA2.0).")
    parser.add_argument(
        "--output-dir",
        required=not SMOKE,
        default=os.path.join(tempfile.gettempdir(), "llada_hf_distributed"),
        help="Where the trained model is saved.",
    )
    parser.add_argument("--fsdp-size", type=int, default=None, help="Shard with transformers' own FSDP2 (torchrun).")
    parser.add_argument("--steps", type=int, default=2 if SMOKE else 10)
    parser.add_argument("--batch-size", type=int, default=2, help="Rows per process and step.")
    parser.add_argument("--seq-len", type=int, default=32 if SMOKE else 512)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--bf16", action="store_true", help="Train in bfloat16 mixed precision.")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


class RandomTokens(Dataset):
    """Rows of random token ids that never contain the mask token."""

    def __init__(self, num_rows: int, seq_len: int, vocab_size: int, mask_token_id: int, seed: int):
        tokens = torch.randint(0, vocab_size - 1, (num_rows, seq_len), generator=torch.Generator().manual_seed(seed))
        self.tokens = torch.where(tokens >= mask_token_id, tokens + 1, tokens)

    def __len__(self):
        return len(self.tokens)

    def __getitem__(self, index):
        return {"input_ids": self.tokens[index]}


def write_tiny_model(path: str) -> str:
    """Writes a tiny random LLaDA in the released format to `path`."""
    torch.manual_seed(0)
    config = LLaDAConfig(
        d_model=64, n_heads=4, n_kv_heads=4, n_layers=2, mlp_hidden_size=128, vocab_size=128, embedding_size=128,
        max_sequence_length=128, mask_token_id=127, eos_token_id=126, pad_token_id=126,
    )  # fmt: skip
    LLaDAModelLM(config).save_pretrained(path)
    return path


def held_fraction(model: torch.nn.Module) -> float:
    """The share of the model's weights stored by this process (below 1 when they are sharded)."""
    local = sum((p.to_local() if isinstance(p, DTensor) else p).numel() for p in model.parameters())
    full = sum(p.numel() for p in model.parameters())
    return local / full


def main():
    args = parse_args()
    training_args = TrainingArguments(
        output_dir=args.output_dir,
        max_steps=args.steps,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.lr,
        bf16=args.bf16,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=args.seed,
        use_cpu=not torch.cuda.is_available(),  # CPU processes then form a gloo process group
    )
    model_path = args.model
    if model_path is None:
        model_path = os.path.join(args.output_dir, "initial")
        with training_args.main_process_first(desc="writing the tiny model"):
            if training_args.process_index == 0:
                write_tiny_model(model_path)
    # Loaded after the TrainingArguments so that under DeepSpeed ZeRO-3 each process only materialises its partition.
    distributed_config = DistributedConfig(fsdp_size=args.fsdp_size) if args.fsdp_size else None
    model = AutoModelForCausalLM.from_pretrained(model_path, distributed_config=distributed_config)
    mask_token_id = model.config.mask_token_id
    if mask_token_id is None:
        raise ValueError(f"`--model` {model_path} has no `mask_token_id` in its config; set it there before training.")
    dataset = RandomTokens(
        args.steps * args.batch_size * training_args.world_size,
        args.seq_len,
        model.config.vocab_size,
        mask_token_id,
        args.seed,
    )
    collator = DataCollatorForDiffusionPretraining(mask_token_id=mask_token_id, seed=args.seed)
    trainer = Trainer(model=model, args=training_args, train_dataset=dataset, data_collator=collator)
    result = trainer.train()
    print(
        f"rank {training_args.process_index}/{training_args.world_size} "
        f"backend={trainer.accelerator.distributed_type.value} held_fraction={held_fraction(trainer.model):.3f} "
        f"steps={result.global_step} train_loss={result.training_loss:.4f}",
        flush=True,
    )
    trainer.save_model()  # gathers the full weights from every shard; written in the released format


if __name__ == "__main__":
    main()
