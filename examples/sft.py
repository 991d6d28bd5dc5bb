"""Supervised fine-tuning (SFT) of a masked-diffusion LM with the stock `transformers.Trainer`, optionally with LoRA.

`DataCollatorForDiffusionSFT` never masks the prompt, pads each row with EOS (supervised, as the released models were
trained, so the model learns to fill the rest of its canvas with EOS) and normalises the loss by each answer's
length; the model's forward returns the loss. With a checkpoint and a JSON-lines file of
`{"prompt": ..., "response": ...}` rows (prompts go through the tokenizer's chat template when it has one):

    python examples/sft.py --model GSAI-ML/LLaDA-8B-Instruct --data sft.jsonl --lora --output-dir llada-sft

`--lora` trains a LoRA adapter (`LoraConfig(task_type="CAUSAL_LM")`, so that `AutoPeftModelForCausalLM` reloads it,
with PEFT's default targets, which `import llada_hf` registers for both model families) and saves only the adapter.
Without `--model`, a toy run needing no download: a tiny random LLaDA learns to upper-case 5-letter words ("hello>" ->
"HELLO") and the script prints its exact match on held-out words before and after training (0% -> 100% in about
20 s on one CPU core):

    python examples/sft.py
    LLADA_HF_SMOKE=1 python examples/sft.py     # a few steps, to check the script runs
"""

import argparse
import json
import os
import random
import string

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast, Trainer, TrainingArguments

from llada_hf import LLaDAConfig, LLaDAModelLM
from llada_hf.training import DataCollatorForDiffusionSFT


SMOKE = os.environ.get("LLADA_HF_SMOKE") == "1"
WORD_LENGTH = 5


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="checkpoint to fine-tune (default: a tiny random LLaDA on a toy task)")
    parser.add_argument("--data", help='JSON lines of {"prompt": ..., "response": ...} (needed with --model)')
    parser.add_argument("--output-dir", default="llada-sft")
    parser.add_argument("--lora", action="store_true", help="train a LoRA adapter instead of every weight")
    parser.add_argument("--block-length", type=int, default=32, help="rows are padded with EOS to a multiple of it")
    parser.add_argument("--max-steps", type=int, default=20 if SMOKE else 800)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=None, help="default: 3e-3 toy, 2e-5 full, 1e-4 LoRA")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def sft_feature(tokenizer, prompt: str, response: str) -> dict[str, list[int]]:
    """Prompt (through the chat template when there is one), response and EOS; `labels` is -100 on the prompt."""
    if tokenizer.chat_template:
        prompt_ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True)
        prompt_ids = list(prompt_ids["input_ids"] if isinstance(prompt_ids, dict) else prompt_ids)
    else:
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return {"input_ids": prompt_ids + response_ids, "labels": [-100] * len(prompt_ids) + response_ids}


def toy_words(count: int, seed: int, exclude: set[str] = frozenset()) -> list[str]:
    rng = random.Random(seed)
    words: dict[str, None] = {}
    while len(words) < count:
        word = "".join(rng.choice(string.ascii_lowercase) for _ in range(WORD_LENGTH))
        if word not in exclude:
            words[word] = None
    return list(words)


def toy_setup(seed: int):
    """A character-level tokenizer and a tiny random LLaDA for the upper-casing task."""
    chars = string.ascii_lowercase + string.ascii_uppercase + ">"
    vocab = {char: index for index, char in enumerate(chars)} | {"<eos>": len(chars), "<mask>": len(chars) + 1}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<eos>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<eos>", pad_token="<eos>", mask_token="<mask>"
    )
    torch.manual_seed(seed)
    config = LLaDAConfig(
        d_model=64, n_heads=4, n_kv_heads=4, n_layers=2, mlp_hidden_size=128, vocab_size=len(tokenizer),
        embedding_size=len(tokenizer), max_sequence_length=64, mask_token_id=tokenizer.mask_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    return LLaDAModelLM(config), tokenizer


def toy_exact_match(model, tokenizer, words: list[str]) -> float:
    """Greedy diffusion decoding of each held-out word's answer; the share that is exactly the upper-cased word."""
    model.eval()
    prompts = torch.tensor([tokenizer(f"{word}>")["input_ids"] for word in words], device=model.device)
    length = WORD_LENGTH + 1  # the word and EOS
    with torch.no_grad():
        output = model.generate(prompts, max_new_tokens=length, steps=length, block_length=length, temperature=0.0)
    answers = tokenizer.batch_decode(output[:, prompts.shape[1] :], skip_special_tokens=True)
    return sum(answer == word.upper() for answer, word in zip(answers, words)) / len(words)


def main():
    args = parse_args()
    if args.model:
        if not args.data:
            raise ValueError("`--data` (JSON lines of prompt/response pairs) is needed with `--model`.")
        tokenizer = AutoTokenizer.from_pretrained(args.model)
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype="auto")
        with open(args.data, encoding="utf-8") as file:
            rows = [json.loads(line) for line in file if line.strip()]
        features = [sft_feature(tokenizer, row["prompt"], row["response"]) for row in rows]
        held_out = []
        learning_rate = args.learning_rate or (1e-4 if args.lora else 2e-5)
    else:
        model, tokenizer = toy_setup(args.seed)
        held_out = toy_words(100, seed=args.seed + 1)
        features = [sft_feature(tokenizer, f"{w}>", w.upper()) for w in toy_words(2000, args.seed, set(held_out))]
        learning_rate = args.learning_rate or 3e-3
        print(f"held-out exact match before training: {toy_exact_match(model, tokenizer, held_out):.2f}")

    if args.lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, task_type="CAUSAL_LM"))
        model.print_trainable_parameters()

    collator = DataCollatorForDiffusionSFT(
        mask_token_id=model.config.mask_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_to_multiple_of=args.block_length if args.model else None, seed=args.seed,
    )  # fmt: skip
    training_args = TrainingArguments(
        output_dir=args.output_dir, per_device_train_batch_size=args.batch_size, max_steps=args.max_steps,
        learning_rate=learning_rate, warmup_steps=args.max_steps // 20, lr_scheduler_type="cosine",
        weight_decay=0.0, logging_steps=max(1, args.max_steps // 10), save_strategy="no", report_to=[],
        seed=args.seed, use_cpu=not torch.cuda.is_available(),
    )  # fmt: skip
    trainer = Trainer(model=model, args=training_args, train_dataset=features, data_collator=collator)
    trainer.train()
    trainer.save_model(args.output_dir)  # with --lora: the adapter only
    tokenizer.save_pretrained(args.output_dir)
    if held_out:
        print(f"held-out exact match after training: {toy_exact_match(model, tokenizer, held_out):.2f}")


if __name__ == "__main__":
    main()
