"""Masked-diffusion pretraining with the stock `transformers.Trainer`: no custom training loop.

The data collator noises each batch (LLaDA: `DataCollatorForDiffusionPretraining`, one `t ~ U(eps, 1)` per sequence
and 1% of batches cut to a random length; LLaDA2.0: `DataCollatorForBlockDiffusion`, one noise level per block under
the block-causal training mask) and the model's forward returns the 1/t-weighted loss of LLaDA eq. 3.

    python examples/pretrain.py --text-file corpus.txt --output-dir llada-pretrain
    python examples/pretrain.py --family llada2 --block-size 16       # a tiny LLaDA2.0 MoE, block diffusion
    accelerate launch --multi_gpu --num_processes 2 examples/pretrain.py  # 2 data-parallel processes
    LLADA_HF_SMOKE=1 python examples/pretrain.py                      # a few steps, to check the script runs

Without `--text-file` the corpus is generated: lines counting up 8 digits, modulo 10 ("78901234."). The script trains
a tiny model from scratch with a character-level tokenizer, saves model and tokenizer to `--output-dir`, asks the
model to continue a few counts ("2345" -> "6789."), and prints one JSON summary line per process (rank, steps,
training loss and a checksum of the weights, equal on every rank when data parallelism keeps them in sync). On a
machine without GPU, `accelerate launch --multi_gpu` runs the processes on CPU over gloo (`--cpu` alone starts a
single process unless MPI is set up).
"""

import argparse
import json
import os
import random

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Trainer, TrainingArguments

from llada_hf import LLaDA2MoeConfig, LLaDA2MoeModelLM, LLaDAConfig, LLaDAModelLM
from llada_hf.training import DataCollatorForBlockDiffusion, DataCollatorForDiffusionPretraining


SMOKE = os.environ.get("LLADA_HF_SMOKE") == "1"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text-file", help="a UTF-8 text file to pretrain on (default: generated counts)")
    parser.add_argument("--family", choices=["llada", "llada2"], default="llada")
    parser.add_argument("--output-dir", default="llada-pretrain")
    parser.add_argument("--seq-length", type=int, default=64)
    parser.add_argument("--block-size", type=int, default=16, help="block diffusion block size (llada2)")
    parser.add_argument("--max-steps", type=int, default=20 if SMOKE else 600)
    parser.add_argument("--batch-size", type=int, default=16 if SMOKE else 32)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def generated_corpus(lines: int, seed: int) -> str:
    rng = random.Random(seed)
    starts = (rng.randrange(10) for _ in range(lines))
    return "\n".join("".join(str((start + k) % 10) for k in range(8)) + "." for start in starts)


def char_tokenizer(text: str) -> PreTrainedTokenizerFast:
    """One token per character of the corpus, then EOS and the mask token."""
    chars = sorted(set(text))
    vocab = {char: index for index, char in enumerate(chars)} | {"<eos>": len(chars), "<mask>": len(chars) + 1}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<eos>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="<eos>", pad_token="<eos>", mask_token="<mask>"
    )


def chunks(token_ids: list[int], length: int) -> list[dict]:
    return [{"input_ids": token_ids[i : i + length]} for i in range(0, len(token_ids) - length + 1, length)]


def tiny_model(family: str, tokenizer: PreTrainedTokenizerFast, seq_length: int):
    ids = dict(
        vocab_size=len(tokenizer), mask_token_id=tokenizer.mask_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    if family == "llada":
        config = LLaDAConfig(
            d_model=64, n_heads=4, n_kv_heads=4, n_layers=2, mlp_hidden_size=128, embedding_size=len(tokenizer),
            max_sequence_length=seq_length, **ids,
        )  # fmt: skip
        return LLaDAModelLM(config)
    config = LLaDA2MoeConfig(
        hidden_size=64, intermediate_size=128, moe_intermediate_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, num_experts=4, num_experts_per_tok=2, n_group=2, topk_group=1,
        first_k_dense_replace=1, max_position_embeddings=2 * seq_length, **ids,
    )  # fmt: skip
    return LLaDA2MoeModelLM(config)


def main():
    args = parse_args()
    if args.text_file:
        with open(args.text_file, encoding="utf-8") as file:
            text = file.read()
    else:
        text = generated_corpus(400 if SMOKE else 20000, args.seed)
    tokenizer = char_tokenizer(text)
    dataset = chunks(tokenizer(text)["input_ids"], args.seq_length)

    torch.manual_seed(args.seed)
    model = tiny_model(args.family, tokenizer, args.seq_length)
    if args.family == "llada":
        collator = DataCollatorForDiffusionPretraining(mask_token_id=tokenizer.mask_token_id, seed=args.seed)
    else:
        collator = DataCollatorForBlockDiffusion(
            mask_token_id=tokenizer.mask_token_id, eos_token_id=tokenizer.eos_token_id, block_size=args.block_size,
            mask_ratio_range=(1e-3, 1.0), seed=args.seed,
        )  # fmt: skip
    training_args = TrainingArguments(
        output_dir=args.output_dir, per_device_train_batch_size=args.batch_size, max_steps=args.max_steps,
        learning_rate=args.learning_rate, warmup_steps=args.max_steps // 20, lr_scheduler_type="cosine",
        weight_decay=0.0, logging_steps=max(1, args.max_steps // 10), save_strategy="no", report_to=[],
        seed=args.seed, use_cpu=not torch.cuda.is_available(), dataloader_drop_last=True,
    )  # fmt: skip
    trainer = Trainer(model=model, args=training_args, train_dataset=dataset, data_collator=collator)
    result = trainer.train()
    trainer.save_model(args.output_dir)
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(args.output_dir)
        model.eval()
        prompts = ["2345", "7890", "\n5678"]
        with torch.no_grad():
            for prompt in prompts:
                input_ids = tokenizer(prompt, return_tensors="pt")["input_ids"].to(model.device)
                output = model.generate(input_ids, max_new_tokens=8, steps=8, block_length=8, temperature=0.0)
                print(f"{prompt!r} -> {tokenizer.decode(output[0, input_ids.shape[1] :], skip_special_tokens=True)!r}")

    checksum = sum(parameter.detach().double().sum().item() for parameter in model.parameters())
    summary = {
        "rank": trainer.args.process_index, "world_size": trainer.args.world_size, "steps": trainer.state.global_step,
        "train_loss": result.training_loss, "checksum": checksum,
    }  # fmt: skip
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
