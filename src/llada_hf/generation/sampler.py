"""[`CanvasDenoiser`]: one masked-diffusion pass over one canvas, the loop shared by LLaDA 1.x and LLaDA2.0.

The answer starts as mask tokens; blocks are denoised left to right, a few positions per step, each step being one
forward pass. The three pieces that differ between families and modes are picked by the caller: the block schedule
(`schedules.py`), the transfer policy (`policies.py`) and the cache strategy (`caches.py`). The loop reads top to
bottom as [`CanvasDenoiser.run`] -> [`CanvasDenoiser.denoise_block`] -> [`CanvasDenoiser.denoise_step`].
"""

import functools
import inspect
from dataclasses import dataclass, field

import torch
from transformers import LogitsProcessorList
from transformers.utils.logging import tqdm

from .canvas import Block, ForwardColumns, first_or_length
from .policies import TransferPolicy, suppress_tokens
from .schedules import BlockSchedule


@dataclass
class DenoisingResult:
    """What [`CanvasDenoiser.run`] returns.

    Attributes:
        sequences: `[batch, prompt + answer]` in the caller's layout (left padding kept).
        finished_at_eos: `[batch]` rows that left the loop because their answer was complete up to an EOS.
        nfe: forward passes (a classifier-free-guidance pass counts once).
        history: the sequences after every step (only with `output_history`).
        streamed: answer tokens already sent to the streamer's `put`.
    """

    sequences: torch.LongTensor
    finished_at_eos: torch.BoolTensor
    nfe: int
    history: list[torch.LongTensor] = field(default_factory=list)
    streamed: int = 0


class CanvasDenoiser:
    """Denoises `answer_length` masks after a (left-padded) prompt.

    Args:
        model: the diffusion model (its `__call__` runs the forward passes).
        config ([`DiffusionGenerationConfig`]): the resolved sampler settings.
        schedule, policy: the block schedule and the transfer policy of the family.
        cache_factory: builds the cache strategy for a canvas (`cache_factory(canvas)`).
        logits_processor (`LogitsProcessorList`, *optional*): applied to the candidate logits of every step.
        stop_after_eos_block (`bool`): a row leaves after the block in which it produced an EOS (LLaDA2, and every
            block-causal schedule in transformers' dialect).
        streamer (*optional*): gets final answer tokens (`put`, up to the first EOS) and drafts (`put_draft`).
        stream_final (`bool`): whether `put` is called here; `False` leaves it to the caller (drafts only).
        compiled_forward: the compiled `__call__` for fixed-shape steps, or `None`.
    """

    def __init__(
        self,
        model,
        config,
        schedule: BlockSchedule,
        policy: TransferPolicy,
        cache_factory,
        logits_processor: LogitsProcessorList | None,
        stop_after_eos_block: bool,
        streamer=None,
        stream_final: bool = True,
        compiled_forward=None,
        generator: torch.Generator | None = None,
    ):
        self.model = model
        self.config = config
        self.schedule = schedule
        self.policy = policy
        self.cache_factory = cache_factory
        self.logits_processor = logits_processor
        self.stop_after_eos_block = stop_after_eos_block
        self.streamer = streamer
        self.stream_final = stream_final
        self.compiled_forward = compiled_forward
        self.generator = generator
        self.mask_token_id = config.mask_token_id
        self.eos_token_ids = as_id_list(config.eos_token_id)

    # ----------------------------------------------------------------------------------------------------------------
    # The loop
    # ----------------------------------------------------------------------------------------------------------------

    def run(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None,
        answer_length: int,
        exact_length: bool,
        fill_token_id: int,
        max_length: int | None,
    ) -> DenoisingResult:
        """Lays out the canvas and denoises it block by block. `exact_length`: the caller gave the official
        `gen_length` (the schedule may require whole blocks)."""
        self.input_ids = input_ids
        self.canvas = self.schedule.build(
            input_ids,
            attention_mask,
            answer_length=answer_length,
            exact_length=exact_length,
            mask_token_id=self.mask_token_id,
            fill_token_id=fill_token_id,
            max_length=max_length,
        )
        self.cache = self.cache_factory(self.canvas)
        batch_size = self.canvas.tokens.shape[0]
        # `rows`: the batch rows still being denoised.
        self.rows = torch.arange(batch_size, device=self.canvas.tokens.device)
        self.result = DenoisingResult(
            sequences=input_ids,
            finished_at_eos=torch.zeros(batch_size, dtype=torch.bool, device=self.canvas.tokens.device),
            nfe=0,
        )
        planned_steps = len(self.canvas.blocks) * self.canvas.steps_per_block
        with tqdm(total=planned_steps, disable=not self.config.show_progress, desc="denoising") as self.progress:
            for block in self.canvas.blocks:
                self._keep_rows(self.canvas.row_num_blocks[self.rows] > block.index)
                if self.rows.numel() == 0:
                    break
                self.denoise_block(block)
        self.result.sequences = self.canvas.to_output(self.canvas.tokens, input_ids)
        return self.result

    def denoise_block(self, block: Block) -> None:
        """Runs the steps of `block` for the active rows."""
        tokens, policy, editing = self.canvas.tokens, self.policy, self.policy.editing
        quota = None
        if policy.parallel_decoding == "quota":
            to_resolve = self.schedule.to_resolve(tokens[self.rows], block, self.mask_token_id)
            if not self.schedule.block_causal and policy.draws_noise:
                _check_steps_for_noise(self.canvas.steps_per_block, int(to_resolve.sum(1).max()))
            quota = policy.block_quota(to_resolve, self.canvas.steps_per_block)
        # Without randomness, a step with nothing to commit cannot change the canvas: the block's steps end when the
        # remaining quota is zero (the official sampler runs them; the tokens are the same).
        skip_idle_steps = quota is not None and not policy.draws_noise and policy.threshold is None and not editing
        # Random draws and logits processors see the official sampler's span (LLaDA 1.x: the whole canvas).
        full_span = policy.draws_noise or self.logits_processor is not None
        span = self.schedule.candidate_span(self.canvas, block, self.rows, self.mask_token_id, full_span)
        max_steps = policy.max_block_steps(self.canvas.steps_per_block, block.end - block.start)
        if editing is not None:
            max_steps = editing.max_block_steps(max_steps)
        for step in range(max_steps):
            self.progress.update()
            # The forward does not change the canvas: the candidates seen now are the ones the policy ranks.
            candidates = self.schedule.candidates(tokens[self.rows], block, span, self.mask_token_id)
            if editing is not None:
                if step == 0:
                    editing.start_block(candidates)
                if not bool(editing.start_step(candidates).any()):
                    break
            elif policy.stops_when_block_filled and not bool(candidates.any()):
                break
            if skip_idle_steps and not bool(quota[:, step:].any()):
                break
            step_quota = None if quota is None else quota[:, min(step, quota.shape[1] - 1)]
            self.denoise_step(block, step, span, candidates, step_quota)
            # Opt-in early stop: rows whose answer is complete up to an EOS leave the batch (with token editing only
            # at the end of the block, below).
            if self.config.eos_early_stop and self.eos_token_ids and editing is None:
                complete = self._complete_up_to_eos()
                self.result.finished_at_eos[self.rows[complete]] = True
                quota = self._keep_rows(~complete, quota)
                if self.rows.numel() == 0:
                    return
        # A row may stop after the block in which it produced an EOS.
        if self.stop_after_eos_block and self.eos_token_ids and self.rows.numel():
            answer_cols = self.canvas.answer_cols[self.rows]
            is_eos = torch.isin(tokens[self.rows].gather(1, answer_cols), id_tensor(self.eos_token_ids, tokens))
            has_eos = (is_eos & (answer_cols < block.end)).any(dim=1)
            self.result.finished_at_eos[self.rows[has_eos]] = True
            self._keep_rows(~has_eos)

    def denoise_step(
        self,
        block: Block,
        step: int,
        span: tuple[int, int],
        candidates: torch.BoolTensor,
        quota: torch.LongTensor | None,
    ) -> None:
        """One forward pass, then commits the policy's choice among `candidates` (the positions of `span`)."""
        tokens, rows, policy = self.canvas.tokens, self.rows, self.policy
        # 1. One forward pass over the columns the cache strategy does not hold; logits of the candidates it computes
        # (a cached step sees only candidates inside its queries).
        columns = self.cache.forward_columns(block, step, self.schedule.window_end(self.canvas, block))
        span_start, span_end = max(span[0], columns.query_start), min(span[1], columns.query_end)
        logits = self._candidate_logits(columns, (span_start, span_end))
        self.result.nfe += 1
        self.cache.after_forward(block, step)

        # 2. Propose a token and a confidence for every candidate, commit the policy's choice.
        span_tokens = tokens[rows, span_start:span_end]
        if self.logits_processor is not None:
            logits = self.logits_processor(tokens[rows], logits)
        if self.config.logits_eos_inf:
            logits = suppress_tokens(logits, self.eos_token_ids)
        _check_logits(logits)
        proposal = policy.propose(logits, self.generator)
        candidates = candidates[:, span_start - span[0] : span_end - span[0]]
        transfer = policy.select(proposal, candidates, quota)
        if policy.editing is not None:  # the span is the block (block-causal schedule)
            transfer = policy.editing.add_edits(transfer, proposal, span_tokens, self.mask_token_id)
        tokens[rows, span_start:span_end] = torch.where(transfer, proposal.tokens, span_tokens)

        # 3. Report the step.
        if self.config.output_history:
            self.result.history.append(self.canvas.to_output(tokens, self.input_ids))
        if self.streamer is not None:
            # Edits may still change the active block: only what precedes it is final.
            self._stream(proposal.tokens, span_start, final_before=block.start if policy.editing else None)

    # ----------------------------------------------------------------------------------------------------------------
    # Pieces of a step
    # ----------------------------------------------------------------------------------------------------------------

    def _candidate_logits(self, columns: ForwardColumns, span: tuple[int, int]) -> torch.Tensor:
        """Logits `[rows, span_end - span_start, vocab]` of the candidate columns, with classifier-free guidance."""
        canvas, rows, cfg_scale = self.canvas, self.rows, self.config.cfg_scale
        query_start, query_end, _ = columns
        span_start, span_end = span
        input_ids = canvas.tokens[rows, query_start:query_end]
        model_inputs = self.schedule.model_inputs(canvas, rows, columns)
        if cfg_scale > 0:
            unconditional = input_ids.masked_fill(canvas.prompt_mask[rows, query_start:query_end], self.mask_token_id)
            input_ids = torch.cat([input_ids, unconditional])
            model_inputs = {k: None if v is None else torch.cat([v, v]) for k, v in model_inputs.items()}
        forward_parameters = _forward_parameters(type(self.model).forward)
        if self.cache.cache is not None:
            model_inputs["cache" if "cache" in forward_parameters else "past_key_values"] = self.cache.cache
        static = self.compiled_forward is not None and self.cache.has_static_shapes(columns)
        forward = self.compiled_forward if static else self.model
        keep_all = "logits_to_keep" not in forward_parameters
        if not keep_all:
            # The LM head only runs on the candidate columns: the last ones (int), or a range of positions (always a
            # range in a compiled step, so that the last block does not add a graph).
            model_inputs["logits_to_keep"] = (
                query_end - span_start
                if span_end == query_end and not static
                else torch.arange(span_start - query_start, span_end - query_start, device=input_ids.device)
            )
        logits = forward(input_ids=input_ids, use_cache=self.cache.cache is not None, **model_inputs).logits
        if keep_all:
            logits = logits[:, span_start - query_start : span_end - query_start]
        if cfg_scale > 0:
            conditional, unconditional = logits.chunk(2)
            logits = unconditional + (cfg_scale + 1) * (conditional - unconditional)
        return logits

    def _keep_rows(self, keep: torch.BoolTensor, quota: torch.LongTensor | None = None) -> torch.LongTensor | None:
        """Drops the rows where `keep` is False from the active rows, the cache (and the per-row `quota`)."""
        if bool(keep.all()):
            return quota
        index = keep.nonzero().squeeze(1)
        forward_index = torch.cat([index, index + self.rows.numel()]) if self.config.cfg_scale > 0 else index
        self.cache.select_rows(forward_index)
        self.rows = self.rows[index]
        return None if quota is None else quota[index]

    def _complete_up_to_eos(self) -> torch.BoolTensor:
        """Active rows with an EOS in the answer and no mask before it (prompt included)."""
        row_tokens = self.canvas.tokens[self.rows]
        answer_cols = self.canvas.answer_cols[self.rows]
        is_eos = torch.isin(row_tokens.gather(1, answer_cols), id_tensor(self.eos_token_ids, row_tokens))
        eos_col = answer_cols.gather(1, is_eos.long().argmax(1, keepdim=True))
        columns = torch.arange(row_tokens.shape[1], device=row_tokens.device)
        masked_before = ((row_tokens == self.mask_token_id) & (columns < eos_col)).any(1)
        return is_eos.any(1) & ~masked_before

    def _stream(self, x0: torch.LongTensor, span_start: int, final_before: int | None) -> None:
        """Sends the newly final answer tokens to `streamer.put` and, if the streamer has `put_draft`, the rest of the
        answer with the current predictions in place of the masks.

        Committed tokens never change, so the answer is final up to its first mask (with token editing, up to the
        canvas column `final_before`); nothing after its first EOS is put, since the returned answer ends there."""
        canvas, prompt_length = self.canvas, self.input_ids.shape[1]
        answer = canvas.to_output(canvas.tokens, self.input_ids)[0, prompt_length:]
        final = first_or_length(answer == self.mask_token_id)
        if final_before is not None:
            final = min(final, int((canvas.answer_cols[0] < final_before).sum()))
        if self.eos_token_ids:
            final = min(final, first_or_length(torch.isin(answer, id_tensor(self.eos_token_ids, answer))) + 1)
        streamed = self.result.streamed
        if self.stream_final and final > streamed:
            self.streamer.put(answer[streamed:final].cpu())
            self.result.streamed = streamed = final
        if hasattr(self.streamer, "put_draft"):
            draft = canvas.tokens.clone()
            span = draft[:, span_start : span_start + x0.shape[1]]
            span.copy_(torch.where(span == self.mask_token_id, x0, span))
            draft_answer = canvas.to_output(draft, self.input_ids)[0, prompt_length:]
            self.streamer.put_draft(draft_answer[streamed : first_or_length(draft_answer == self.mask_token_id)].cpu())


def _check_steps_for_noise(steps_per_block: int, masks: int) -> None:
    if steps_per_block > masks:
        raise ValueError(
            f"`steps` gives {steps_per_block} steps per block, more than the {masks} masks a block resolves: with "
            "random remasking or sampling every step costs a forward pass and draws random numbers, but the extra "
            f"steps commit nothing. Use at most {masks} steps per block."
        )


def _check_logits(logits: torch.Tensor) -> None:
    """Refuses NaN logits, and positions where every token has -inf (nothing could be chosen)."""
    if bool(logits.isnan().any() | (logits.amax(dim=-1) == float("-inf")).any()):
        raise ValueError(
            "The logits reaching the sampler are NaN, or -inf for every token at some position: check the "
            "`logits_processor`s and suppressed tokens, or the model's dtype (overflow)."
        )


@functools.cache
def _forward_parameters(forward) -> frozenset[str]:
    return frozenset(inspect.signature(forward).parameters)


def as_id_list(token_ids) -> list[int]:
    """`None`, an id or a list of ids as a list."""
    if token_ids is None:
        return []
    return [token_ids] if isinstance(token_ids, int) else list(token_ids)


def id_tensor(token_ids: list[int], like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(token_ids, dtype=like.dtype, device=like.device)


__all__ = ["CanvasDenoiser", "DenoisingResult"]
