"""A small generated task with real structure for training tiny models in tests, and its character-level tokenizer.

Digit sorting: the prompt is `SORT_LENGTH` random digits and `=` (`"503194="`), the answer the same digits in
ascending order then EOS (`"013459<eos>"`). Every answer position depends on the whole prompt (how many digits are
smaller), yet a tiny LLaDA learns it in about a thousand steps. Features follow the SFT format of
`llada_hf.training.DataCollatorForDiffusionSFT`: `labels` is -100 on the prompt.

(Multi-digit addition was tried first: with the answer's low digits a function of digit *pairs* only, e.g. the units
digit `(a + b) mod 10`, no single prompt token carries any signal, and a tiny model sits on a plateau for thousands of
steps, beyond a CI budget.)
"""

import random

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast


EOS, MASK = "<eos>", "<mask>"
SORT_ALPHABET = "0123456789="
SORT_LENGTH = 6
PROMPT_LENGTH = SORT_LENGTH + 1  # the digits and "="
ANSWER_LENGTH = SORT_LENGTH + 1  # the sorted digits and EOS


def char_tokenizer(alphabet: str = SORT_ALPHABET) -> PreTrainedTokenizerFast:
    """One token per character of `alphabet`, then EOS (also the padding token) and the mask token."""
    vocab = {char: index for index, char in enumerate(alphabet)} | {EOS: len(alphabet), MASK: len(alphabet) + 1}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=EOS))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=EOS, pad_token=EOS, mask_token=MASK)


def sorting_problems(count: int, seed: int, exclude: frozenset[str] = frozenset()) -> list[str]:
    """`count` distinct digit strings of `SORT_LENGTH` digits, none of them in `exclude`."""
    rng = random.Random(seed)
    problems: dict[str, None] = {}
    while len(problems) < count:
        digits = "".join(str(rng.randrange(10)) for _ in range(SORT_LENGTH))
        if digits not in exclude:
            problems[digits] = None
    return list(problems)


def sorting_prompt(digits: str) -> str:
    return f"{digits}="


def sorting_answer(digits: str) -> str:
    return "".join(sorted(digits))


def sorting_feature(tokenizer: PreTrainedTokenizerFast, digits: str) -> dict[str, list[int]]:
    """The SFT feature of one problem: prompt, then sorted digits and EOS, with the prompt's labels at -100."""
    prompt = tokenizer(sorting_prompt(digits))["input_ids"]
    answer = tokenizer(sorting_answer(digits))["input_ids"] + [tokenizer.eos_token_id]
    return {"input_ids": prompt + answer, "labels": [-100] * len(prompt) + answer}


# Multi-digit addition with carries: a task on which parallel decoding is hard.
#
# Two `ADD_DIGITS`-digit numbers are written column by column, most significant first, one token per column (the
# digit pair (a_i, b_i): 100 column tokens), then "="; the answer is their zero-padded sum (`ADD_DIGITS + 1` digits,
# most significant first) then EOS. Column tokens let a small model learn each column's digit sum in minutes (with
# one character per digit, the pair lookup sits on a long plateau, see above), and what is left is the carry: an
# answer digit depends on the columns to its right through the carry chain, which passes through every column whose
# digits sum to 9. Those columns are made frequent (`ADD_PROPAGATE` of them instead of 1 in 10), so that a model is
# sometimes unsure of a digit until the digits to its right are decoded.
#
# Measured (examples/make_addition_checkpoint.py, 1-layer LLaDA, 1200 steps, 512 held-out problems): 100% exact
# match at one token per step; threshold 0.9 leaves on average 0.62 of the 10 answer tokens masked after the first
# step (98.4% exact, 4 forwards for the batch). That is harder than the sorting and repetition tasks (always one
# step) but short of the >= 3 tokens aimed for: carry look-ahead is parallel work that attention learns (a 3-layer
# model after 1500 steps, and a 1-layer one with ADD_PROPAGATE = 0.8, decoded every answer in one step).
ADD_DIGITS = 8
ADD_PROPAGATE = 0.35
ADD_COLUMN_TOKENS = [f"<{a}{b}>" for a in range(10) for b in range(10)]
ADD_PROMPT_LENGTH = ADD_DIGITS + 1  # the columns and "="
ADD_ANSWER_LENGTH = ADD_DIGITS + 2  # the sum's digits and EOS


def addition_tokenizer() -> PreTrainedTokenizerFast:
    """Digits, the 100 column tokens `<ab>`, "=", EOS (also padding) and the mask token."""
    vocab = {token: index for index, token in enumerate([*"0123456789", *ADD_COLUMN_TOKENS, "="])}
    vocab |= {EOS: len(vocab), MASK: len(vocab) + 1}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=EOS))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"<\d\d>|."), behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=EOS, pad_token=EOS, mask_token=MASK)


def addition_problems(
    count: int, seed: int, exclude: frozenset[tuple[int, int]] = frozenset()
) -> list[tuple[int, int]]:
    """`count` distinct operand pairs, none in `exclude`: each column's digits sum to 9 with probability
    `ADD_PROPAGATE`, otherwise both digits are uniform."""
    rng = random.Random(seed)
    problems: dict[tuple[int, int], None] = {}
    while len(problems) < count:
        a_digits, b_digits = [], []
        for _ in range(ADD_DIGITS):
            a = rng.randrange(10)
            b = 9 - a if rng.random() < ADD_PROPAGATE else rng.randrange(10)
            a_digits.append(str(a))
            b_digits.append(str(b))
        pair = (int("".join(a_digits)), int("".join(b_digits)))
        if pair not in exclude:
            problems[pair] = None
    return list(problems)


def addition_prompt(a: int, b: int) -> str:
    """`"<ab>..."` column by column, most significant first, then `"="`."""
    return "".join(f"<{x}{y}>" for x, y in zip(f"{a:0{ADD_DIGITS}d}", f"{b:0{ADD_DIGITS}d}")) + "="


def addition_answer(a: int, b: int) -> str:
    return f"{a + b:0{ADD_DIGITS + 1}d}"


def addition_feature(tokenizer: PreTrainedTokenizerFast, a: int, b: int) -> dict[str, list[int]]:
    """The SFT feature of one problem: prompt, then the sum's digits and EOS, with the prompt's labels at -100."""
    prompt = tokenizer(addition_prompt(a, b))["input_ids"]
    answer = tokenizer(addition_answer(a, b))["input_ids"] + [tokenizer.eos_token_id]
    return {"input_ids": prompt + answer, "labels": [-100] * len(prompt) + answer}
