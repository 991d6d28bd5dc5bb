"""The state a denoising run works on: the canvas, its blocks, and the columns of one forward pass.

Schedules (`schedules.py`) build a [`DiffusionCanvas`] and cut it into [`Block`]s; cache strategies (`caches.py`) say
which [`ForwardColumns`] each step computes. Both import these types from here.
"""

from dataclasses import dataclass
from typing import NamedTuple

import torch


class ForwardColumns(NamedTuple):
    """The canvas columns of one forward pass: queries `[query_start, query_end)`, keys `[0, key_end)`."""

    query_start: int
    query_end: int
    key_end: int


@dataclass(frozen=True)
class Block:
    """Canvas columns `[start, end)` denoised together; `index` counts blocks from 0."""

    index: int
    start: int
    end: int


@dataclass
class DiffusionCanvas:
    """The working state of one `generate()` call, in the schedule's own column layout.

    Attributes:
        tokens: `[batch, width]` prompt and answer, masks where nothing is committed yet. Updated in place by the loop.
        attention_mask: the 2-D padding mask to pass to the model as is (prompt schedule), or `None`.
        key_mask: `[batch, width]` True on real tokens, for schedules that build their own masks (else `None`).
        position_ids: `[batch, width]` explicit positions, or `None` for the model's default `0..width-1`.
        prompt_mask: `[batch, width]` True on tokens the user gave (the unconditional CFG copy masks them).
        answer_cols: `[batch, answer_length]` canvas column of every answer token.
        output_cols: `[batch, prompt_length + answer_length]` canvas column of every output token, -1 on left padding
            (kept from the input).
        blocks: the blocks to denoise, left to right.
        row_num_blocks: `[batch]` how many of `blocks` each row denoises; a row is done after its last one.
        steps_per_block: denoising steps spent on each block.
    """

    tokens: torch.LongTensor
    attention_mask: torch.Tensor | None
    key_mask: torch.BoolTensor | None
    position_ids: torch.LongTensor | None
    prompt_mask: torch.BoolTensor
    answer_cols: torch.LongTensor
    output_cols: torch.LongTensor
    blocks: list[Block]
    row_num_blocks: torch.LongTensor
    steps_per_block: int

    def to_output(self, tokens: torch.LongTensor, input_ids: torch.LongTensor) -> torch.LongTensor:
        """`[batch, prompt_length + answer_length]` in the caller's layout (left padding as given)."""
        gathered = tokens.gather(1, self.output_cols.clamp(min=0))
        padding = torch.nn.functional.pad(input_ids, (0, self.output_cols.shape[1] - input_ids.shape[1]))
        return torch.where(self.output_cols >= 0, gathered, padding)


def first_or_length(flags: torch.BoolTensor) -> int:
    """Index of the first True of a 1-D tensor, or its length if there is none."""
    return int(flags.long().argmax()) if bool(flags.any()) else flags.numel()


__all__ = ["Block", "DiffusionCanvas", "ForwardColumns", "first_or_length"]
