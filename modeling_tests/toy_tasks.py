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
