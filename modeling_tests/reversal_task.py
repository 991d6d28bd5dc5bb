"""A tiny digit-reversal task ("3 1 4 1 =" -> "1 4 1 3") and a LLaDA trained on it with the stock `Trainer`.

Shared by the likelihood, evaluation and preference tests: the model is trained once per process (a few seconds on
one CPU core) and must not be modified by a test (copy it first).
"""

import functools
import random
import tempfile

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Trainer, TrainingArguments

from llada_hf import LLaDAConfig, LLaDAModelLM
from llada_hf.training import DataCollatorForDiffusionSFT


DIGITS = 4
SEPARATOR, EOS, MASK = "=", "<eos>", "<mask>"


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Word-level tokenizer over the digits, the separator, EOS (also padding) and the mask token."""
    vocab = {str(digit): digit for digit in range(10)} | {SEPARATOR: 10, EOS: 11, MASK: 12}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=EOS))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=EOS, pad_token=EOS, mask_token=MASK)


def reversal_example(rng: random.Random) -> tuple[str, str]:
    """A prompt `"d1 d2 d3 d4 ="` and its answer `"d4 d3 d2 d1"`."""
    digits = [str(rng.randrange(10)) for _ in range(DIGITS)]
    return " ".join(digits) + f" {SEPARATOR}", " ".join(reversed(digits))


def random_digits(rng: random.Random) -> str:
    return " ".join(str(rng.randrange(10)) for _ in range(DIGITS))


def tiny_llada(tokenizer: PreTrainedTokenizerFast, seed: int = 0) -> LLaDAModelLM:
    torch.manual_seed(seed)
    config = LLaDAConfig(
        d_model=64, n_heads=4, n_kv_heads=4, n_layers=2, mlp_hidden_size=128, vocab_size=len(tokenizer),
        embedding_size=len(tokenizer), max_sequence_length=64, mask_token_id=tokenizer.mask_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    return LLaDAModelLM(config)


@functools.cache
def trained_reversal_model(steps: int = 400, batch_size: int = 64, seed: int = 0):
    """`(model, tokenizer)`: a tiny LLaDA trained by SFT (prompt never masked, answer + EOS supervised)."""
    tokenizer = build_tokenizer()
    rng = random.Random(seed)
    features = []
    for _ in range(steps * batch_size):
        prompt, answer = reversal_example(rng)
        prompt_ids, answer_ids = tokenizer.encode(prompt), tokenizer.encode(answer) + [tokenizer.eos_token_id]
        features.append({"input_ids": prompt_ids + answer_ids, "labels": [-100] * len(prompt_ids) + answer_ids})
    model = tiny_llada(tokenizer, seed)
    args = TrainingArguments(
        output_dir=tempfile.mkdtemp(), per_device_train_batch_size=batch_size, num_train_epochs=1, learning_rate=3e-3,
        warmup_steps=10, lr_scheduler_type="cosine", save_strategy="no", report_to=[], use_cpu=True,
        disable_tqdm=True, logging_strategy="no", seed=seed,
    )  # fmt: skip
    collator = DataCollatorForDiffusionSFT(mask_token_id=tokenizer.mask_token_id, eos_token_id=tokenizer.eos_token_id)
    Trainer(model=model, args=args, train_dataset=features, data_collator=collator).train()
    return model.eval(), tokenizer
