"""Block schedules: where the answer canvas sits, how it is cut into blocks, and what each step may attend to.

Two schedules cover the released samplers:

- [`PromptBlockSchedule`] (LLaDA 1.x `generate.py`): blocks start where the (left-padded) prompt ends, `steps` is the
  total step count split evenly over the blocks, attention is bidirectional over the whole canvas.
- [`AbsoluteBlockSchedule`] (LLaDA2.0 `generate()`): blocks are aligned to position 0 of each row, so the first block
  may hold the end of the prompt; `steps` counts per block; attention is block-causal, so a step only needs the canvas
  up to the end of its block.

A schedule turns the prompt into a [`DiffusionCanvas`]; the sampler loop then walks `canvas.blocks` in order.
"""

import math

import torch

from .canvas import Block, DiffusionCanvas, ForwardColumns, first_or_length


def prompt_lengths(input_ids: torch.LongTensor, attention_mask: torch.Tensor | None) -> torch.LongTensor:
    """Real prompt length of every row. Left padding only: right-padded or empty rows raise a `ValueError`."""
    batch_size, length = input_ids.shape
    if attention_mask is None:
        return torch.full((batch_size,), length, dtype=torch.long, device=input_ids.device)
    if attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"`attention_mask` must have the shape of `input_ids` {tuple(input_ids.shape)}, got "
            f"{tuple(attention_mask.shape)}."
        )
    real = attention_mask.bool()
    if length and not bool(real.any(dim=1).all()):
        raise ValueError("`attention_mask` has a row without any real token.")
    # Left padding: once a row's real tokens start, they run to the end.
    if not bool((real.long().diff(dim=1) >= 0).all()):
        raise ValueError(
            "Only left padding is supported (this `attention_mask` has padding after real tokens): the answer canvas "
            "follows the prompt, so pad on the left (`tokenizer.padding_side = 'left'`)."
        )
    return real.sum(dim=1)


class BlockSchedule:
    """Base class. Subclasses place the canvas ([`build`]) and say what a step over a block computes."""

    name: str
    block_causal: bool

    def __init__(self, block_length: int, steps: int | None):
        self.block_length = block_length
        self.steps = steps

    @classmethod
    def from_config(cls, config) -> "BlockSchedule":
        """The schedule a [`DiffusionGenerationConfig`] describes."""
        return cls(config.block_length, config.steps)

    def build(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None,
        answer_length: int,
        exact_length: bool,
        mask_token_id: int,
        fill_token_id: int,
        max_length: int | None,
    ) -> DiffusionCanvas:
        """Lays out prompt + `answer_length` masks. `exact_length`: the caller gave the official `gen_length`, which
        the schedule may require to be a whole number of blocks."""
        raise NotImplementedError

    def window_end(self, canvas: DiffusionCanvas, block: Block) -> int:
        """End of the canvas columns a step on `block` must see (its keys start at column 0)."""
        raise NotImplementedError

    def candidate_span(
        self, canvas: DiffusionCanvas, block: Block, rows: torch.LongTensor, mask_token_id: int, full_canvas: bool
    ) -> tuple[int, int]:
        """Columns whose predictions the transfer policy ranks during `block` (for the batch `rows`). `full_canvas`:
        the span must be the official sampler's (its random draws and logits processors depend on its shape)."""
        raise NotImplementedError

    def candidates(
        self, tokens: torch.LongTensor, block: Block, span: tuple[int, int], mask_token_id: int
    ) -> torch.BoolTensor:
        """`[rows, span]`: the positions of the `span` columns that may be committed now (`tokens` holds the rows being
        denoised)."""
        raise NotImplementedError

    def to_resolve(self, tokens: torch.LongTensor, block: Block, mask_token_id: int) -> torch.BoolTensor:
        """The masks that `block` must resolve, as seen at its start; the transfer policy sizes its quota from them."""
        raise NotImplementedError

    def model_inputs(self, canvas: DiffusionCanvas, rows: torch.LongTensor, columns: ForwardColumns) -> dict:
        """`attention_mask` / `position_ids` for a forward of `rows` whose queries are columns
        `[columns.query_start, columns.query_end)` and whose keys are columns `[0, columns.key_end)` (cached or
        not)."""
        raise NotImplementedError

    @staticmethod
    def _check_max_length(lengths: torch.LongTensor, answer_length: int, max_length: int | None):
        longest = int(lengths.max()) if lengths.numel() else 0
        if max_length is not None and longest + answer_length > max_length:
            raise ValueError(
                f"Prompt length ({longest}) + gen_length/max_new_tokens ({answer_length}) = "
                f"{longest + answer_length} exceeds the model's maximum sequence length ({max_length})."
            )


class PromptBlockSchedule(BlockSchedule):
    """LLaDA 1.x: blocks start at the end of the prompt, `steps` is the total over all blocks, bidirectional
    attention. With `max_new_tokens` the canvas is rounded up to whole blocks; an explicit `gen_length` must already be
    a multiple of `block_length`, and `steps` must split evenly over the blocks (`None`: one token per step)."""

    name = "prompt"
    block_causal = False

    def build(self, input_ids, attention_mask, answer_length, exact_length, mask_token_id, fill_token_id, max_length):
        batch_size, prompt_length = input_ids.shape
        block_length = self.block_length
        if exact_length and answer_length % block_length:
            raise ValueError(
                f"`gen_length` ({answer_length}) must be a multiple of `block_length` ({block_length}); use "
                "`max_new_tokens` to have the canvas rounded up to whole blocks."
            )
        num_blocks = math.ceil(answer_length / block_length)
        canvas_length = num_blocks * block_length
        self._check_max_length(torch.tensor([prompt_length]), canvas_length, max_length)
        steps = canvas_length if self.steps is None else self.steps
        if steps % num_blocks:
            raise ValueError(
                f"`steps` ({steps}) must be divisible by the number of blocks ({num_blocks} = "
                f"{canvas_length} answer tokens / block_length {block_length})."
            )
        prompt_lengths(input_ids, attention_mask)  # refuses right padding

        device = input_ids.device
        masks = torch.full((batch_size, canvas_length), mask_token_id, dtype=torch.long, device=device)
        tokens = torch.cat([input_ids, masks], dim=1)
        columns = torch.arange(prompt_length + answer_length, device=device).expand(batch_size, -1)
        output_cols = columns
        position_ids = None
        if attention_mask is not None:
            # Padding is never denoised (even when the pad token is the mask token) and is returned as given.
            padding = attention_mask[:, :prompt_length] == 0
            tokens[:, :prompt_length] = input_ids.masked_fill(padding, fill_token_id)
            output_cols = columns.masked_fill(torch.nn.functional.pad(padding, (0, answer_length)), -1)
            attention_mask = torch.cat([attention_mask, torch.ones_like(masks, dtype=attention_mask.dtype)], dim=1)
            # Positions count from each row's first real token, as for the row alone. (generate.py counts the pads:
            # the same attention scores in exact arithmetic, since RoPE is relative and pad keys are masked, but in
            # bfloat16 a shifted row rounds differently and its tokens then often differ from the row alone.)
            canvas_columns = torch.arange(tokens.shape[1], device=device)
            position_ids = (canvas_columns - padding.sum(dim=1, keepdim=True)).clamp(min=0)
        return DiffusionCanvas(
            tokens=tokens,
            attention_mask=attention_mask,
            key_mask=None,
            position_ids=position_ids,
            prompt_mask=tokens != mask_token_id,
            answer_cols=columns[:, prompt_length:],
            output_cols=output_cols,
            blocks=[
                Block(b, prompt_length + b * block_length, prompt_length + (b + 1) * block_length)
                for b in range(num_blocks)
            ],
            row_num_blocks=torch.full((batch_size,), num_blocks, dtype=torch.long, device=device),
            steps_per_block=steps // num_blocks,
        )

    def window_end(self, canvas, block):
        return canvas.tokens.shape[1]

    def candidate_span(self, canvas, block, rows, mask_token_id, full_canvas):
        # As generate.py: every masked position left of the block's end competes (prompt masks included), and the
        # official span is the whole canvas. Where its shape does not matter, the span starts at the first mask, so the
        # LM head and the softmax skip the prompt and the committed blocks.
        if full_canvas:
            return 0, canvas.tokens.shape[1]
        masked_before = (canvas.tokens[rows, : block.start] == mask_token_id).any(dim=0)
        return first_or_length(masked_before), block.end

    def candidates(self, tokens, block, span, mask_token_id):
        columns = torch.arange(span[0], span[1], device=tokens.device)
        return (tokens[:, span[0] : span[1]] == mask_token_id) & (columns < block.end)

    def to_resolve(self, tokens, block, mask_token_id):
        # The block's masks as in generate.py, plus the prompt's for the first block (infilling): generate.py lets
        # prompt masks compete for the quota without counting them, which would leave answer tokens masked. Masks
        # left over from earlier blocks (a committed mask token) are not counted, as in generate.py.
        return tokens[:, 0 if block.index == 0 else block.start : block.end] == mask_token_id

    def model_inputs(self, canvas, rows, columns):
        start, end, key_end = columns
        # Pad keys are masked, pad queries attend (the released model's 2-D mask). Positions are canvas columns, or
        # count from each row's first real token in a padded batch.
        attention_mask = None if canvas.attention_mask is None else canvas.attention_mask[rows, :key_end]
        if canvas.position_ids is not None:
            return {"attention_mask": attention_mask, "position_ids": canvas.position_ids[rows, start:end]}
        if start == 0 and end == key_end:
            return {"attention_mask": attention_mask, "position_ids": None}
        positions = torch.arange(start, end, device=canvas.tokens.device).expand(rows.numel(), -1)
        return {"attention_mask": attention_mask, "position_ids": positions}


class AbsoluteBlockSchedule(BlockSchedule):
    """LLaDA2.0: blocks aligned to each row's first real token (absolute position 0), `steps` per block (`None`: one
    token per step) capped at `answer_length // minimal_topk`, block-causal attention.

    Rows with different prompt lengths have their block boundaries at different columns of a left-padded batch. The
    canvas therefore shifts every row by a whole number of blocks so that all rows start their first answer block at
    the same column: block `j` of the canvas is then the `j`-th denoised block of every row, and a committed prefix is
    the same set of columns for all rows (which is what a shared KV cache needs).
    """

    name = "absolute"
    block_causal = True

    def __init__(self, block_length: int, steps: int | None, minimal_topk: int = 1):
        super().__init__(block_length, steps)
        self.minimal_topk = minimal_topk

    @classmethod
    def from_config(cls, config):
        return cls(config.block_length, config.steps, minimal_topk=config.minimal_topk or 1)

    def build(self, input_ids, attention_mask, answer_length, exact_length, mask_token_id, fill_token_id, max_length):
        batch_size, prompt_length = input_ids.shape
        block_length = self.block_length
        steps = min(block_length if self.steps is None else self.steps, answer_length // self.minimal_topk)
        if steps < 1:
            raise ValueError(
                f"`minimal_topk` ({self.minimal_topk}) is larger than gen_length/max_new_tokens ({answer_length}), "
                "which leaves no denoising step."
            )
        lengths = prompt_lengths(input_ids, attention_mask)
        self._check_max_length(lengths, answer_length, max_length)
        if max_length is not None and int((lengths + answer_length).max()) > max_length // block_length * block_length:
            raise ValueError(
                f"The last block (`block_length={block_length}`, aligned to position 0) would end past the model's "
                f"{max_length} positions: use a shorter gen_length/max_new_tokens or a block length that divides "
                f"{max_length}."
            )

        device = input_ids.device
        first_block = lengths // block_length  # the block holding each row's first answer token
        row_end_block = (lengths + answer_length + block_length - 1) // block_length
        aligned_block = int(first_block.max())
        shift = (aligned_block - first_block) * block_length  # canvas column of each row's position 0
        row_num_blocks = row_end_block - first_block
        num_blocks = int(row_num_blocks.max())
        width = (aligned_block + num_blocks) * block_length

        columns = torch.arange(width, device=device).expand(batch_size, -1)
        positions = columns - shift[:, None]
        key_mask = positions >= 0
        tokens = torch.full((batch_size, width), mask_token_id, dtype=torch.long, device=device)
        tokens.masked_fill_(~key_mask, fill_token_id)
        # Copy each row's real prompt tokens to positions 0..length-1.
        source = (positions + (prompt_length - lengths)[:, None]).clamp(0, max(prompt_length - 1, 0))
        is_prompt = key_mask & (positions < lengths[:, None])
        if prompt_length:
            tokens = torch.where(is_prompt, input_ids.gather(1, source), tokens)

        first_block_start = aligned_block * block_length
        if bool((is_prompt & (tokens == mask_token_id) & (columns < first_block_start)).any()):
            raise ValueError(
                "The prompt has mask tokens before the block that holds its end: block-causal sampling only denoises "
                "the blocks from there on, so they would stay masked. Move them into the last prompt block, or fill "
                "them with a bidirectional schedule."
            )
        output_positions = (
            torch.arange(prompt_length + answer_length, device=device) - (prompt_length - lengths)[:, None]
        )
        output_cols = torch.where(output_positions >= 0, output_positions + shift[:, None], -1)
        return DiffusionCanvas(
            tokens=tokens,
            attention_mask=None,
            key_mask=key_mask,
            position_ids=positions.clamp(min=0),
            prompt_mask=is_prompt & (tokens != mask_token_id),
            answer_cols=output_cols[:, prompt_length:],
            output_cols=output_cols,
            blocks=[
                Block(j, (aligned_block + j) * block_length, (aligned_block + j + 1) * block_length)
                for j in range(num_blocks)
            ],
            row_num_blocks=row_num_blocks,
            steps_per_block=steps,
        )

    def window_end(self, canvas, block):
        return block.end

    def candidate_span(self, canvas, block, rows, mask_token_id, full_canvas):
        return block.start, block.end

    def candidates(self, tokens, block, span, mask_token_id):
        return tokens[:, span[0] : span[1]] == mask_token_id

    def to_resolve(self, tokens, block, mask_token_id):
        return tokens[:, block.start : block.end] == mask_token_id

    def model_inputs(self, canvas, rows, columns):
        start, end, key_end = columns
        query_cols = torch.arange(start, end, device=canvas.tokens.device)
        key_cols = torch.arange(key_end, device=canvas.tokens.device)
        block_causal = (key_cols // self.block_length)[None, :] <= (query_cols // self.block_length)[:, None]
        allowed = block_causal[None] & canvas.key_mask[rows, None, :key_end]
        # Padding queries attend to themselves only, so no row of the mask is empty.
        allowed = allowed | (key_cols[None, :] == query_cols[:, None])[None]
        return {"attention_mask": allowed[:, None], "position_ids": canvas.position_ids[rows, start:end]}


BLOCK_SCHEDULES = {schedule.name: schedule for schedule in (PromptBlockSchedule, AbsoluteBlockSchedule)}


__all__ = ["BlockSchedule", "PromptBlockSchedule", "AbsoluteBlockSchedule"]
