"""Data collators that noise batches for masked-diffusion training, one class per recipe.

- `DataCollatorForDiffusionPretraining`: `t ~ U(eps, 1)` per sequence; 1% of batches cut to a random length.
- `DataCollatorForDiffusionSFT`: the prompt is never masked; rows are padded with EOS, which is supervised like any
  answer token (as the released models were trained); the loss is normalised by each answer's length.
- `DataCollatorForBlockDiffusion`: LLaDA2.0's recipe: rows padded with EOS to whole blocks, one noise level per block
  drawn from a mask-ratio band, the noisy copy and the clean copy concatenated under the block-diffusion training
  mask; optional complementary masking.
- `DataCollatorForPackedDiffusion`: the batch's documents concatenated into one row, each attending only to itself.

Features are dicts with `input_ids` and, optionally, `labels` in which -100 marks positions that are never masked nor
supervised (an SFT prompt); the targets are always `input_ids`. This is the usual SFT format, and `labels` survives
the Trainer's `remove_unused_columns`.

Every collator returns the noised `input_ids`, `labels` (the clean token at each masked position, -100 elsewhere),
`p_mask` (each position's masking probability) and `loss_normalizer` (each row's number of maskable positions, or per
position when packed), which the models' forward turns into the loss of `llada_hf.training.loss`.

Reproducibility: with `seed` set, the n-th example a collator sees draws its noise from its own generator keyed by
`(seed, n)` (and the process rank and data-loader worker seed), so the same examples get the same noise whether they
come one per batch or together, which lets gradient accumulation be checked against a larger batch. Without `seed`,
the noise comes from torch's global generator, which the Trainer seeds with the same value on every process: pass
`seed` in multi-process training so that the processes draw different noise.
"""

from collections.abc import Mapping
from dataclasses import dataclass, fields
from numbers import Integral, Real
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import get_worker_info

from .loss import IGNORE_INDEX


class NoisedExample(NamedTuple):
    """One example after noising; every field is 1-D over the example's own positions."""

    input_ids: torch.Tensor  # clean tokens
    maskable: torch.Tensor  # False on the prompt
    masked: torch.Tensor  # the positions replaced by the mask token
    p_mask: torch.Tensor  # each position's masking probability


@dataclass(kw_only=True)
class DiffusionDataCollator:
    """What every diffusion collator shares: reading features, per-example generators, masking and padding.

    Subclasses define `draw_p_mask` (the masking probability of each position of one example) and `__call__`.

    Args:
        mask_token_id (`int`): the id that replaces masked tokens.
        seed (`int`, *optional*): makes the noise of the n-th example a function of `(seed, n)`.
        vocab_size (`int`, *optional*): when given, token ids (arguments and features) must be below it.

    Arguments are checked on construction: token ids (every `*_token_id` field) are integers >= 0, sizes positive,
    probabilities in [0, 1]; features are checked as they are read. Errors name the argument.
    """

    mask_token_id: int
    seed: int | None = None
    vocab_size: int | None = None

    def __post_init__(self):
        _check_integer("seed", self.seed, 0, optional=True)
        _check_integer("vocab_size", self.vocab_size, 1, optional=True)
        for field in fields(self):
            if field.name.endswith("_token_id"):
                token_id = getattr(self, field.name)
                _check_integer(field.name, token_id, 0, optional=field.default is None)
                if token_id is not None and self.vocab_size is not None and token_id >= self.vocab_size:
                    raise ValueError(f"`{field.name}` must be below `vocab_size` ({self.vocab_size}), got {token_id}.")
        if getattr(self, "eos_token_id", None) == self.mask_token_id:
            raise ValueError(
                f"`eos_token_id` and `mask_token_id` are both {self.mask_token_id}: the EOS padding is supervised, so "
                "the model would learn to answer with mask tokens."
            )
        self._examples_seen = 0

    def draw_p_mask(self, length: int, generator: torch.Generator | None) -> torch.Tensor:
        raise NotImplementedError

    def noise(self, rows: list[tuple[torch.Tensor, torch.Tensor]]) -> list[NoisedExample]:
        """Masks each `(input_ids, maskable)` row with noise drawn from its example's own generator."""
        examples = []
        for (input_ids, maskable), generator in zip(rows, self._generators(len(rows))):
            p_mask = self.draw_p_mask(len(input_ids), generator)
            masked = (torch.rand(input_ids.shape, generator=generator) < p_mask) & maskable
            examples.append(NoisedExample(input_ids, maskable, masked, p_mask))
        return examples

    def read(self, features: list[dict], require_labels: bool = False) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """`(input_ids, maskable)` per feature; `maskable` is False where `labels` holds -100."""
        if not features:
            raise ValueError("`features` is empty: a batch needs at least one example.")
        rows = []
        for feature in features:
            if not isinstance(feature, Mapping) or "input_ids" not in feature:
                raise TypeError(f"Each feature must be a dict with `input_ids`, got {type(feature).__name__}.")
            input_ids = _integer_tensor("input_ids", feature["input_ids"])
            if input_ids.dim() != 1 or input_ids.numel() == 0:
                raise ValueError(
                    f"Each feature's `input_ids` must be a non-empty 1-D sequence, got {input_ids.shape}."
                )
            low, high = int(input_ids.min()), int(input_ids.max())
            if low < 0 or (self.vocab_size is not None and high >= self.vocab_size):
                rule = ">= 0" if self.vocab_size is None else f"in [0, vocab_size={self.vocab_size})"
                raise ValueError(f"Each feature's `input_ids` must be token ids {rule}, got ids from {low} to {high}.")
            if bool((input_ids == self.mask_token_id).any()):
                raise ValueError(f"`input_ids` already hold the mask token {self.mask_token_id}: pass clean text.")
            labels = feature.get("labels")
            if labels is None:
                if require_labels:
                    raise ValueError(
                        f"{type(self).__name__} needs `labels` in each feature: -100 on the prompt (never masked), "
                        "anything else on the answer."
                    )
                maskable = torch.ones_like(input_ids, dtype=torch.bool)
            else:
                labels = _integer_tensor("labels", labels)
                if labels.shape != input_ids.shape:
                    raise ValueError(
                        f"`labels` {tuple(labels.shape)} must match `input_ids` {tuple(input_ids.shape)}."
                    )
                maskable = labels != IGNORE_INDEX
            rows.append((input_ids, maskable))
        return rows

    def _generators(self, count: int) -> list[torch.Generator | None]:
        """One generator per example, keyed by the example's rank among all the examples this collator has seen."""
        first = self._examples_seen
        self._examples_seen += count
        return [self._generator(first + k, purpose=0) for k in range(count)]

    def _batch_generator(self) -> torch.Generator | None:
        """A generator for batch-level draws, keyed by the batch's first example."""
        return self._generator(self._examples_seen, purpose=1)

    def _generator(self, index: int, purpose: int) -> torch.Generator | None:
        if self.seed is None:
            return None
        worker = get_worker_info()
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        key = (self.seed, rank, worker.seed if worker is not None else 0, index, purpose)
        return torch.Generator().manual_seed(int(np.random.SeedSequence(key).generate_state(1, np.uint64)[0]))

    def stack(self, examples: list[NoisedExample]) -> dict[str, torch.Tensor]:
        """The model inputs of equally long noised examples; `loss_normalizer` counts each row's maskable positions."""
        masked = torch.stack([example.masked for example in examples])
        clean = torch.stack([example.input_ids for example in examples])
        return {
            "input_ids": clean.masked_fill(masked, self.mask_token_id),
            "labels": torch.where(masked, clean, IGNORE_INDEX),
            "p_mask": torch.stack([example.p_mask for example in examples]).float(),
            "loss_normalizer": torch.stack([example.maskable for example in examples]).sum(-1).float(),
        }


def _fit(values: torch.Tensor, length: int, fill) -> torch.Tensor:
    """Cuts `values` to `length`, or right-pads them with `fill`."""
    if len(values) >= length:
        return values[:length]
    return torch.cat([values, values.new_full((length - len(values),), fill)])


def _check_integer(name: str, value, minimum: int, optional: bool = False) -> None:
    """Refuses a `value` that is not an integer >= `minimum` (nor None, where `optional`)."""
    if value is None and optional:
        return
    if not isinstance(value, Integral) or isinstance(value, bool):
        raise TypeError(f"`{name}` must be an integer{' or None' if optional else ''}, got {value!r}.")
    if value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {value}.")


def _check_probability(name: str, value: float) -> None:
    if not isinstance(value, Real) or isinstance(value, bool):
        raise TypeError(f"`{name}` must be a number in [0, 1], got {value!r}.")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"`{name}` must be in [0, 1], got {value}.")


def _integer_tensor(name: str, values) -> torch.Tensor:
    """A feature's `values` as an int64 tensor; floats, booleans and other non-integers are refused."""
    try:
        tensor = torch.as_tensor(values)
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(f"A feature's `{name}` must be a sequence of integer token ids: {error}") from error
    if tensor.numel() and (tensor.dtype == torch.bool or tensor.is_floating_point() or tensor.is_complex()):
        raise TypeError(f"A feature's `{name}` must hold integer token ids, got dtype {tensor.dtype}.")
    return tensor.long()


def _round_up(length: int, multiple: int | None) -> int:
    return -(-length // multiple) * multiple if multiple else length


def block_diffusion_attention_mask(length: int, block_size: int) -> torch.Tensor:
    """The block-diffusion training mask over `[noisy copy; clean copy]`, bool `[1, 1, 2L, 2L]`, True = may attend.

    A noisy block attends to itself and to the clean blocks before it (what the block-causal sampler shows it); a
    clean block attends to the clean blocks up to itself (the cache the sampler builds); clean never sees noisy.
    """
    block = torch.arange(length) // block_size
    query, key = block[:, None], block[None, :]
    noisy_queries = torch.cat([query == key, key < query], dim=1)
    clean_queries = torch.cat([torch.zeros(length, length, dtype=torch.bool), key <= query], dim=1)
    return torch.cat([noisy_queries, clean_queries], dim=0)[None, None]


@dataclass(kw_only=True)
class UniformTimeCollator(DiffusionDataCollator):
    """LLaDA's noise: per example `t ~ U(0, 1)`, every maskable token masked with `p = (1 - eps) * t + eps`."""

    eps: float = 1e-3

    def __post_init__(self):
        super().__post_init__()
        _check_probability("eps", self.eps)

    def draw_p_mask(self, length: int, generator: torch.Generator | None) -> torch.Tensor:
        t = float(torch.rand((), generator=generator))
        return torch.full((length,), (1 - self.eps) * t + self.eps)


@dataclass(kw_only=True)
class DataCollatorForDiffusionPretraining(UniformTimeCollator):
    """Pretraining noise (LLaDA). Every token may be masked; the loss divides each row by its length (`B * L`).

    With probability `random_length_prob` a whole batch is cut to a length drawn uniformly from `1..L`, so that the
    model also sees short inputs. Rows of different lengths are right-padded with `pad_token_id`, never masked nor
    supervised, and hidden by a 2-D `attention_mask`.
    """

    pad_token_id: int | None = None
    random_length_prob: float = 0.01

    def __post_init__(self):
        super().__post_init__()
        _check_probability("random_length_prob", self.random_length_prob)

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        rows = self.read(features)
        lengths = [len(input_ids) for input_ids, _ in rows]
        if len(set(lengths)) > 1 and self.pad_token_id is None:
            raise ValueError("Sequences of different lengths need `pad_token_id` to be padded.")
        length = max(lengths)
        generator = self._batch_generator()
        if float(torch.rand((), generator=generator)) < self.random_length_prob:
            length = int(torch.randint(1, length + 1, (), generator=generator))

        rows = [
            (_fit(input_ids, length, self.pad_token_id), _fit(maskable, length, False)) for input_ids, maskable in rows
        ]
        batch = self.stack(self.noise(rows))
        if min(lengths) < length:
            batch["attention_mask"] = (torch.arange(length)[None] < torch.tensor(lengths)[:, None]).long()
        return batch


@dataclass(kw_only=True)
class DataCollatorForDiffusionSFT(UniformTimeCollator):
    """SFT noise (LLaDA): the prompt (`labels == -100`) is never masked; the loss divides each row by its answer length.

    Rows are right-padded with `eos_token_id` to the longest row (rounded up to `pad_to_multiple_of`, e.g. a block
    length). The EOS padding is part of the answer, as the released models were trained: it is masked, supervised
    and counted in the answer length, which teaches the model to fill the rest of its canvas with EOS.
    """

    eos_token_id: int
    pad_to_multiple_of: int | None = None

    def __post_init__(self):
        super().__post_init__()
        _check_integer("pad_to_multiple_of", self.pad_to_multiple_of, 1, optional=True)

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        rows = self.read(features, require_labels=True)
        length = _round_up(max(len(input_ids) for input_ids, _ in rows), self.pad_to_multiple_of)
        rows = [
            (_fit(input_ids, length, self.eos_token_id), _fit(maskable, length, True)) for input_ids, maskable in rows
        ]
        return self.stack(self.noise(rows))


@dataclass(kw_only=True)
class DataCollatorForBlockDiffusion(DiffusionDataCollator):
    """Block-diffusion noise (LLaDA2.0): one masking probability per block, noisy and clean copies side by side.

    Rows are right-padded with `eos_token_id` (supervised, as in SFT) to whole blocks of `block_size`; each block draws
    its masking probability from `mask_ratio_range`; prompt positions (`labels == -100`) are never masked. The model
    input is the noisy copy followed by the clean copy (`[batch, 2L]`), with positions `0..L-1` for both and the
    `block_diffusion_attention_mask`, so one forward trains every block as the block-causal sampler will see it. Only
    the noisy half is supervised; the loss divides each row by its answer length.

    `complementary_masking=True` adds, after each row, a row that masks exactly the maskable positions the first left
    visible (each with probability `1 - t`), so every answer token is trained once per example. `block_size=None`
    makes each row one block (full-sequence diffusion); the attribute may be changed between batches, e.g. by a
    block-size schedule.
    """

    eos_token_id: int
    block_size: int | None = 32
    mask_ratio_range: tuple[float, float] = (0.3, 0.8)
    complementary_masking: bool = False

    def __post_init__(self):
        super().__post_init__()
        is_pair = isinstance(self.mask_ratio_range, (tuple, list)) and len(self.mask_ratio_range) == 2
        if not is_pair or not all(isinstance(v, Real) and not isinstance(v, bool) for v in self.mask_ratio_range):
            raise TypeError(
                f"`mask_ratio_range` must be a pair of numbers (low, high), got {self.mask_ratio_range!r}."
            )
        low, high = self.mask_ratio_range
        if not 0.0 < low <= high <= 1.0:
            raise ValueError(f"`mask_ratio_range` must satisfy 0 < low <= high <= 1, got {self.mask_ratio_range}.")
        if not isinstance(self.complementary_masking, bool):
            raise TypeError(f"`complementary_masking` must be a bool, got {self.complementary_masking!r}.")
        if self.complementary_masking and high == 1.0:
            raise ValueError("`complementary_masking` needs `mask_ratio_range` below 1, so both rows can be masked.")
        _check_integer("block_size", self.block_size, 1, optional=True)

    def draw_p_mask(self, length: int, generator: torch.Generator | None) -> torch.Tensor:
        block_size = self.block_size or length
        low, high = self.mask_ratio_range
        t = low + (high - low) * torch.rand(-(-length // block_size), generator=generator)
        return t.repeat_interleave(block_size)[:length]

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        rows = self.read(features)
        length = max(len(input_ids) for input_ids, _ in rows)
        block_size = self.block_size or length
        length = _round_up(length, block_size)
        rows = [
            (_fit(input_ids, length, self.eos_token_id), _fit(maskable, length, True)) for input_ids, maskable in rows
        ]
        examples = self.noise(rows)
        if self.complementary_masking:
            examples = [row for example in examples for row in (example, _complement(example))]

        noisy = self.stack(examples)
        clean = torch.stack([example.input_ids for example in examples])
        num_rows = len(examples)
        return {
            "input_ids": torch.cat([noisy["input_ids"], clean], dim=1),
            "labels": torch.cat([noisy["labels"], torch.full_like(clean, IGNORE_INDEX)], dim=1),
            "p_mask": torch.cat([noisy["p_mask"], torch.ones(clean.shape)], dim=1),
            "loss_normalizer": noisy["loss_normalizer"],
            "position_ids": torch.arange(length).repeat(2).expand(num_rows, -1),
            "attention_mask": block_diffusion_attention_mask(length, block_size).expand(num_rows, -1, -1, -1),
        }


def _complement(example: NoisedExample) -> NoisedExample:
    return example._replace(masked=example.maskable & ~example.masked, p_mask=1 - example.p_mask)


@dataclass(kw_only=True)
class DataCollatorForPackedDiffusion(UniformTimeCollator):
    """Packs the batch's examples into one row `[1, total]`, each document attending only to itself.

    Position ids restart at 0 for every document and the 4-D bool `attention_mask` is block-diagonal over documents,
    so the row computes what the documents would separately. Each document draws its own `t`; prompts marked by
    `labels == -100` are never masked. `loss_normalizer` is per position (the document's maskable count times the
    number of documents), which makes the row's loss the mean of the documents' losses: what the pretraining and SFT
    collators give the same documents unpadded. The batch size sets how many documents share a row.
    """

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        examples = self.noise(self.read(features))
        packed = NoisedExample(*(torch.cat(field) for field in zip(*examples)))
        batch = self.stack([packed])

        lengths = torch.tensor([len(example.input_ids) for example in examples])
        document = torch.repeat_interleave(torch.arange(len(examples)), lengths)
        answer_lengths = torch.stack([example.maskable.sum() for example in examples]).float()
        batch["loss_normalizer"] = (answer_lengths * len(examples))[document].unsqueeze(0)
        batch["position_ids"] = torch.cat([torch.arange(n) for n in lengths.tolist()]).unsqueeze(0)
        batch["attention_mask"] = (document[:, None] == document[None, :])[None, None]
        return batch
