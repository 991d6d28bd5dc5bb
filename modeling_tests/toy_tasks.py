"""A small generated task with real structure for training tiny models in tests, and its character-level tokenizer.

Digit sorting: the prompt is `SORT_LENGTH` random digits and `=` (`"503194="`), the answer the same digits in
ascending order then EOS (`"013459<eos>"`). Every answer position depends on the whole prompt (how many digits are
smaller), yet a tiny LLaDA learns it in about a thousand steps. Features follow the SFT format of
`llada_hf.training.DataCollatorForDiffusionSFT`: `labels` is -100 on the prompt.

(Multi-digit addition was tried first: with the answer's low digits a function of digit *pairs* only, e.g. the units
digit `(a + b) mod 10`, no single prompt token carries any signal, and a tiny model sits on a plateau for thousands of
steps, beyond a CI budget.)
"""

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from tqdm.auto import tqdm
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


# Tasks on which parallel decoding is hard: multi-digit addition with carries, and running parity. Both use
# `pair_tokenizer()`: the digits, the 100 digit-pair tokens `<ab>`, "=", EOS (also padding) and the mask. `PAIR_TASKS`
# describes each one the same way ([`PairTask`]), for the scripts that train and decode them.
#
# Addition: two `ADD_DIGITS`-digit numbers are written column by column, most significant first, one token per column
# (the digit pair (a_i, b_i)), then "="; the answer is their zero-padded sum (`ADD_DIGITS + 1` digits, most
# significant first) then EOS. Column tokens let a small model learn each column's digit sum in minutes (with one
# character per digit, the pair lookup sits on a long plateau, see above), and what is left is the carry: an answer
# digit depends on the columns to its right through the carry chain, which passes through every column whose digits
# sum to 9. Those columns are made frequent (`ADD_PROPAGATE` of them instead of 1 in 10), so that a model is sometimes
# unsure of a digit until the digits to its right are decoded.
#
# Measured (examples/make_task_checkpoint.py --task addition, 1-layer LLaDA, 1200 steps, 512 held-out problems): 100%
# exact match at one token per step; threshold 0.9 leaves on average 0.62 of the 10 answer tokens masked after the
# first step (98.4% exact, 4 forwards for the batch). Carry look-ahead is parallel work that attention learns (a
# 3-layer model after 1500 steps, and a 1-layer one with ADD_PROPAGATE = 0.8, decoded every answer in one step), so
# addition is only mildly sequential.
#
# Parity: the prompt is `PARITY_BITS` random bits and "="; the answer is the parity of every prefix (answer bit i =
# answer bit i - 1 XOR prompt bit i) then EOS. Decoded left to right, every bit is a 2-input XOR of two tokens at
# fixed offsets, which a small model learns in minutes; predicted while the answer bits before it are still masked, a
# bit is the parity of a longer span of the prompt, which small transformers compute badly. Decoding is therefore
# sequential, with a little parallelism where the gap back to a decoded bit is short. (Pointer chasing over a
# permutation listed in the prompt, the first candidate, did not leave its loss plateau within 4000 steps.)
ADD_DIGITS = 8
ADD_PROPAGATE = 0.35
PAIR_TOKENS = [f"<{a}{b}>" for a in range(10) for b in range(10)]
ADD_PROMPT_LENGTH = ADD_DIGITS + 1  # the columns and "="
ADD_ANSWER_LENGTH = ADD_DIGITS + 2  # the sum's digits and EOS
PARITY_BITS = 16
PARITY_PROMPT_LENGTH = PARITY_BITS + 1  # the bits and "="
PARITY_ANSWER_LENGTH = PARITY_BITS + 1  # the prefix parities and EOS


def pair_tokenizer() -> PreTrainedTokenizerFast:
    """Digits, the 100 digit-pair tokens `<ab>`, "=", EOS (also padding) and the mask token."""
    vocab = {token: index for index, token in enumerate([*"0123456789", *PAIR_TOKENS, "="])}
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


def addition_prompt(problem: tuple[int, int]) -> str:
    """`"<ab>..."` column by column, most significant first, then `"="`."""
    a, b = problem
    return "".join(f"<{x}{y}>" for x, y in zip(f"{a:0{ADD_DIGITS}d}", f"{b:0{ADD_DIGITS}d}")) + "="


def addition_answer(problem: tuple[int, int]) -> str:
    a, b = problem
    return f"{a + b:0{ADD_DIGITS + 1}d}"


def parity_problems(count: int, seed: int, exclude: frozenset[str] = frozenset()) -> list[str]:
    """`count` distinct uniform random strings of `PARITY_BITS` bits, none in `exclude`."""
    rng = random.Random(seed)
    problems: dict[str, None] = {}
    while len(problems) < count:
        bits = "".join(rng.choice("01") for _ in range(PARITY_BITS))
        if bits not in exclude:
            problems[bits] = None
    return list(problems)


def parity_prompt(bits: str) -> str:
    return bits + "="


def parity_answer(bits: str) -> str:
    """The parity of every prefix: answer bit i = answer bit i - 1 XOR prompt bit i."""
    running, prefixes = 0, []
    for bit in bits:
        running ^= int(bit)
        prefixes.append(str(running))
    return "".join(prefixes)


@dataclass(frozen=True)
class PairTask:
    """One task over `pair_tokenizer()`: how to draw problems and write their prompts and answers, with the token
    lengths of every prompt and answer (EOS included)."""

    name: str
    problems: Callable[..., list]  # (count, seed, exclude=frozenset()) -> distinct problems
    prompt: Callable[[Any], str]
    answer: Callable[[Any], str]  # without EOS
    prompt_length: int
    answer_length: int

    def feature(self, tokenizer: PreTrainedTokenizerFast, problem) -> dict[str, list[int]]:
        """The SFT feature of one problem: prompt, then the answer and EOS, with the prompt's labels at -100."""
        prompt = tokenizer(self.prompt(problem))["input_ids"]
        answer = tokenizer(self.answer(problem))["input_ids"] + [tokenizer.eos_token_id]
        return {"input_ids": prompt + answer, "labels": [-100] * len(prompt) + answer}

    @torch.no_grad()
    def decode(self, model, tokenizer, problems: list, batch_size: int = 250, **generate_kwargs) -> dict[str, float]:
        """Generates every answer as one block (`generate_kwargs` on top of `max_new_tokens` = `block_length` = the
        answer length) and scores it: `exact` match %, `nfe` (forwards of the batched calls), `tpf` (tokens per
        forward: answer tokens / the forwards each row needed, read from the step history), `tok_s` (answer tokens
        per second) and `masked_after_first_step` (answer tokens still masked after the first step, mean)."""
        n = self.answer_length
        correct = nfe = row_forwards = 0
        seconds = still_masked = 0.0
        for begin in range(0, len(problems), batch_size):
            chunk = problems[begin : begin + batch_size]
            prompts = torch.tensor([tokenizer(self.prompt(problem))["input_ids"] for problem in chunk])
            start = time.perf_counter()
            output = model.generate(
                prompts, max_new_tokens=n, block_length=n, return_dict_in_generate=True, output_history=True,
                **generate_kwargs,
            )  # fmt: skip
            seconds += time.perf_counter() - start
            nfe += output.nfe
            masked = [(state[:, self.prompt_length :] == tokenizer.mask_token_id) for state in output.history]
            still_masked += float(masked[0].sum())
            # A row needs a forward at every step that starts with one of its answer tokens still masked.
            row_forwards += len(chunk) + sum(int(state.any(1).sum()) for state in masked[:-1])
            answers = tokenizer.batch_decode(output.sequences[:, self.prompt_length :], skip_special_tokens=True)
            correct += sum(answer == self.answer(problem) for answer, problem in zip(answers, chunk))
        return {
            "exact": 100.0 * correct / len(problems),
            "nfe": nfe,
            "tpf": len(problems) * n / row_forwards,
            "tok_s": len(problems) * n / seconds,
            "masked_after_first_step": still_masked / len(problems),
        }


PAIR_TASKS = {
    task.name: task
    for task in (
        PairTask(
            "addition", addition_problems, addition_prompt, addition_answer, ADD_PROMPT_LENGTH, ADD_ANSWER_LENGTH
        ),
        PairTask("parity", parity_problems, parity_prompt, parity_answer, PARITY_PROMPT_LENGTH, PARITY_ANSWER_LENGTH),
    )
}


def train_adamw(
    model, batches: Callable[[int], dict], steps: int, learning_rate: float, warmup: int, weight_decay: float = 0.0
) -> list[float]:
    """Trains `model` on `batches(step)` (one collated batch per step) with AdamW (betas 0.9 / 0.98, gradients clipped
    to norm 1), the learning rate warmed up linearly over `warmup` steps then decayed on a cosine. Returns the losses;
    the model is left in eval mode."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=weight_decay, betas=(0.9, 0.98))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    model.train()
    losses = []
    progress = tqdm(range(steps), desc="training", mininterval=5)
    for step in progress:
        loss = model(**batches(step)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        progress.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.4f}", refresh=False)
    model.eval()
    return losses
