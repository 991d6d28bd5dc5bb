"""Autoregressive -> diffusion conversion (the LLaDA2.0 recipe), end to end on a toy task, on CPU in about a minute.

    python examples/convert_ar_to_diffusion.py [--output-dir DIR]
    LLADA_HF_SMOKE=1 python examples/convert_ar_to_diffusion.py     # a few steps, to check the script runs

1. Trains a tiny `LlamaForCausalLM` (GQA: 4 query heads, 2 key/value heads) to reverse four digits
   ("3 1 4 1 =" -> "1 4 1 3"), autoregressively with the stock `Trainer`, and saves it with `save_pretrained`.
2. Converts the checkpoint with `llada_hf.conversion.convert_llama_to_llada`: the weights are reused as they are and
   a mask token joins the tokenizer (its embedding row starts as the mean row).
3. Continues training with `DataCollatorForBlockDiffusion` under the Warmup-Stable-Decay block-size schedule
   (1 -> 2 -> 5 -> the whole row -> back down to 5) driven by `BlockSizeScheduleCallback`.
4. Prints the exact match on held-out prompts of the Llama (greedy), of the converted model before diffusion training
   and after it, both sampled by block-causal diffusion `generate()` with blocks of 5 (the prompt is one block).
"""

import argparse
import itertools
import os
import random
import tempfile
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Trainer,
    TrainingArguments,
)

import llada_hf  # noqa: F401  (registers LLaDA with the Auto classes)
from llada_hf.conversion import convert_llama_to_llada
from llada_hf.training import DataCollatorForBlockDiffusion
from llada_hf.training.schedules import BlockSizeSchedule, BlockSizeScheduleCallback


SMOKE = os.environ.get("LLADA_HF_SMOKE") == "1"
DIGITS, EOS = 4, "<eos>"
ROW_LENGTH = 2 * DIGITS + 2  # prompt "d d d d =" (5 tokens), answer (4) and EOS
BLOCK_LENGTH = DIGITS + 1  # the prompt fills block 0, the answer and its EOS block 1


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the digits, "=" and EOS: an AR vocabulary, without a mask token."""
    vocab = {str(digit): digit for digit in range(10)} | {"=": 10, EOS: 11}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=EOS))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=EOS, pad_token=EOS)


def reversal_features(tokenizer, count: int, seed: int) -> list[dict]:
    """`input_ids` = prompt + reversed digits + EOS; `labels` = -100 on the prompt (never trained on nor masked)."""
    rng = random.Random(seed)
    features = []
    for _ in range(count):
        digits = [str(rng.randrange(10)) for _ in range(DIGITS)]
        prompt = tokenizer.encode(" ".join(digits) + " =")
        answer = tokenizer.encode(" ".join(reversed(digits))) + [tokenizer.eos_token_id]
        features.append({"input_ids": prompt + answer, "labels": [-100] * len(prompt) + answer})
    return features


def training_args(output_dir: Path, steps: int, learning_rate: float, **kwargs) -> TrainingArguments:
    return TrainingArguments(
        output_dir=str(output_dir), max_steps=steps, per_device_train_batch_size=64, learning_rate=learning_rate,
        warmup_steps=min(10, steps // 10), lr_scheduler_type="cosine", logging_steps=max(steps // 5, 1),
        save_strategy="no", report_to=[], use_cpu=not torch.cuda.is_available(), disable_tqdm=True, seed=0, **kwargs,
    )  # fmt: skip


def train_llama(tokenizer, output_dir: Path, steps: int) -> LlamaForCausalLM:
    """Step 1: a tiny Llama trained autoregressively on the answers (the Llama shifts its labels itself)."""
    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=len(tokenizer), max_position_embeddings=64, tie_word_embeddings=False,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None,
    )  # fmt: skip
    model = LlamaForCausalLM(config)
    data = reversal_features(tokenizer, steps * 64, seed=1)
    Trainer(model=model, args=training_args(output_dir / "llama-run", steps, 3e-3), train_dataset=data).train()
    model.save_pretrained(output_dir / "llama")
    tokenizer.save_pretrained(output_dir / "llama")
    return model.eval()


def wsd_schedule(steps: int) -> BlockSizeSchedule:
    """1 -> 2 -> 5 -> whole row (stable) -> 5, over `steps` optimizer steps."""
    warmup = max(steps // 8, 1)
    return BlockSizeSchedule.warmup_stable_decay(
        sequence_length=ROW_LENGTH, warmup_sizes=(1, 2, BLOCK_LENGTH), steps_per_warmup_stage=warmup,
        stable_steps=max(steps // 4, 1), decay_sizes=(BLOCK_LENGTH,),
    )  # fmt: skip


def train_diffusion(model, tokenizer, output_dir: Path, steps: int) -> list[int]:
    """Step 3: block-diffusion training under the WSD block-size schedule; returns the block size of every step."""
    collator = DataCollatorForBlockDiffusion(
        mask_token_id=tokenizer.mask_token_id, eos_token_id=tokenizer.eos_token_id, mask_ratio_range=(0.1, 1.0)
    )
    scheduled = BlockSizeScheduleCallback(collator, wsd_schedule(steps))
    data = reversal_features(tokenizer, steps * 64, seed=2)
    args = training_args(output_dir / "diffusion-run", steps, 2e-3)
    trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=scheduled, callbacks=[scheduled])
    trainer.train()
    return [scheduled.schedule(step) for step in range(steps)]


@torch.no_grad()
def exact_match(model, tokenizer, num_prompts: int, diffusion: bool) -> float:
    """Held-out exact match of the four answer digits (diffusion: block-causal `generate()`, one token per step)."""
    features = reversal_features(tokenizer, num_prompts, seed=1234)
    prompts = torch.tensor([feature["input_ids"][:BLOCK_LENGTH] for feature in features])
    answers = torch.tensor([feature["input_ids"][BLOCK_LENGTH : BLOCK_LENGTH + DIGITS] for feature in features])
    if diffusion:
        # The block-causal sampler set in the model's generation config (see `run`); the official keywords keep the
        # answer at exactly one block (wrong answers may end early at an EOS).
        output = model.generate(
            prompts, gen_length=BLOCK_LENGTH, steps=BLOCK_LENGTH, temperature=0.0, mask_id=tokenizer.mask_token_id
        )
    else:
        attention_mask = torch.ones_like(prompts)
        output = model.generate(prompts, attention_mask=attention_mask, max_new_tokens=DIGITS, do_sample=False)
    return (output[:, BLOCK_LENGTH : BLOCK_LENGTH + DIGITS] == answers).all(dim=1).float().mean().item()


def run(output_dir: Path, ar_steps: int = 300, diffusion_steps: int = 400, num_prompts: int = 200) -> dict:
    """The whole recipe; returns the held-out exact matches and the block size of each diffusion step."""
    tokenizer = build_tokenizer()
    llama = train_llama(tokenizer, output_dir, ar_steps)
    results = {"llama (greedy, causal)": exact_match(llama, tokenizer, num_prompts, diffusion=False)}

    model, tokenizer = convert_llama_to_llada(output_dir / "llama", tokenizer=output_dir / "llama")
    # Sample as the model is trained: block-causal attention, blocks of BLOCK_LENGTH aligned to position 0, one token
    # per step, exact block KV cache. Saved with the model, so the reloaded model samples the same way by default.
    model.generation_config.update(
        block_schedule="absolute", block_length=BLOCK_LENGTH, steps=BLOCK_LENGTH, diffusion_cache="block"
    )
    results["converted, before diffusion training"] = exact_match(model, tokenizer, num_prompts, diffusion=True)

    block_sizes = train_diffusion(model.train(), tokenizer, output_dir, diffusion_steps)
    model.save_pretrained(output_dir / "llada")
    tokenizer.save_pretrained(output_dir / "llada")
    reloaded = AutoModelForCausalLM.from_pretrained(output_dir / "llada").eval()
    reloaded_tokenizer = AutoTokenizer.from_pretrained(output_dir / "llada")
    results["after block-diffusion training"] = exact_match(reloaded, reloaded_tokenizer, num_prompts, diffusion=True)
    return {"exact_match": results, "block_sizes": block_sizes}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", type=Path, help="where the Llama and the converted LLaDA are saved")
    parser.add_argument("--ar-steps", type=int, default=300)
    parser.add_argument("--diffusion-steps", type=int, default=400)
    parser.add_argument("--num-prompts", type=int, default=200)
    args = parser.parse_args()
    if SMOKE:
        args.ar_steps, args.diffusion_steps, args.num_prompts = 16, 16, 16

    output_dir = args.output_dir or Path(tempfile.mkdtemp(prefix="ar-to-diffusion-"))
    report = run(output_dir, args.ar_steps, args.diffusion_steps, args.num_prompts)
    stages = [(size, len(list(steps))) for size, steps in itertools.groupby(report["block_sizes"])]
    print("block size schedule: " + " -> ".join(f"{size} ({steps} steps)" for size, steps in stages))
    print(f"exact match on {args.num_prompts} held-out prompts:")
    for name, accuracy in report["exact_match"].items():
        print(f"  {name:40s} {accuracy:6.1%}")
    print(f"models saved in {output_dir}")


if __name__ == "__main__":
    main()
