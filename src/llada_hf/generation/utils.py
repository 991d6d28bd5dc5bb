"""`DiffusionGenerationMixin`: the masked-diffusion `generate()` shared by LLaDA 1.x and LLaDA2.0.

The loop is the same for both families; what differs is data, picked from the model's `diffusion_family`:
a block schedule (`schedules.py`), a transfer policy (`policies.py`) and a cache strategy (`caches.py`). The fast
modes (approximate caches, parallel decoding, the compiled static step) are the same loop with other pieces; all
are opt-in generation-config fields.
"""

import copy
import functools
import inspect
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers import GenerationMixin, LogitsProcessorList
from transformers.generation.streamers import BaseStreamer
from transformers.utils import ModelOutput, logging

from .caches import DIFFUSION_CACHES, DiffusionCacheStrategy, ForwardColumns
from .configuration_diffusion import DiffusionGenerationConfig, LLaDA2GenerationConfig, LLaDAGenerationConfig
from .policies import LLaDA2TransferPolicy, LLaDATransferPolicy, TransferPolicy, suppress_tokens
from .schedules import BLOCK_SCHEDULES, BlockSchedule, DiffusionCanvas, first_or_length


logger = logging.get_logger(__name__)


@dataclass(frozen=True)
class DiffusionFamily:
    """What a model family fixes about sampling: its config defaults, policy, the block schedules its models can be
    sampled with, and whether a row stops after the block in which it produced EOS (the official LLaDA2 behaviour)."""

    generation_config_class: type[DiffusionGenerationConfig]
    policy_class: type[TransferPolicy]
    block_schedules: tuple[str, ...]
    stop_after_eos_block: bool


DIFFUSION_FAMILIES = {
    # LLaDA 1.x models are bidirectional; a model trained with block diffusion (e.g. converted from an autoregressive
    # one) is sampled as trained with the block-causal "absolute" schedule.
    "llada": DiffusionFamily(
        LLaDAGenerationConfig, LLaDATransferPolicy, block_schedules=("prompt", "absolute"), stop_after_eos_block=False
    ),
    "llada2": DiffusionFamily(
        LLaDA2GenerationConfig, LLaDA2TransferPolicy, block_schedules=("absolute",), stop_after_eos_block=True
    ),
}


@dataclass
class DiffusionGenerationOutput(ModelOutput):
    """
    Output of [`DiffusionGenerationMixin.generate`] with `return_dict_in_generate=True`.

    Args:
        sequences (`torch.LongTensor` of shape `(batch_size, prompt_length + max_new_tokens)`):
            Prompt (with filled-in masks, if any) and answer.
        nfe (`int`):
            Number of forward passes of the model (a classifier-free-guidance pass counts once).
        history (`tuple[torch.LongTensor]`, *optional*):
            With `output_history=True`: the sequences after every denoising step (mask tokens where not yet decoded).
    """

    sequences: torch.LongTensor | None = None
    nfe: int | None = None
    history: tuple[torch.LongTensor, ...] | None = None


class DiffusionGenerationMixin(GenerationMixin):
    """Replaces the autoregressive `generate()` with masked-diffusion sampling.

    Model classes set `diffusion_family` (`"llada"` or `"llada2"`), which selects their [`DiffusionGenerationConfig`]
    subclass (defaults) and transfer policy.
    """

    diffusion_family: str | None = None
    generation_config_class = DiffusionGenerationConfig

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.diffusion_family is not None:
            cls.generation_config_class = DIFFUSION_FAMILIES[cls.diffusion_family].generation_config_class

    def adjust_generation_fn(
        self,
        generation_config,
        from_auto_class,
        from_pipeline,
        pretrained_model_name_or_path,
        cache_dir,
        force_download,
        proxies,
        local_files_only,
        token,
        revision,
        subfolder,
        trust_remote_code,
        **kwargs,
    ):
        """At `from_pretrained`: reads `generation_config.json` into the family's config class; fields it does not set
        take the family defaults and the model config's token ids (released files carry neither)."""
        if generation_config is not None:
            self.generation_config = self.generation_config_class.from_dict(generation_config.to_dict())
        elif pretrained_model_name_or_path is not None:
            try:
                self.generation_config = self.generation_config_class.from_pretrained(
                    pretrained_model_name_or_path,
                    cache_dir=cache_dir,
                    force_download=force_download,
                    proxies=proxies,
                    local_files_only=local_files_only,
                    token=token,
                    revision=revision,
                    subfolder=subfolder,
                    _from_auto=from_auto_class,
                    _from_pipeline=from_pipeline,
                )
            except OSError:
                logger.info("No generation config file found; using the defaults of the model family.")
        self.generation_config.complete(self.config)
        self.generation_config._original_object_hash = hash(self.generation_config)

    @torch.no_grad()
    def generate(
        self,
        inputs: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        generation_config: DiffusionGenerationConfig | None = None,
        logits_processor: LogitsProcessorList | None = None,
        streamer: BaseStreamer | None = None,
        generator: torch.Generator | None = None,
        **kwargs,
    ) -> torch.LongTensor | DiffusionGenerationOutput:
        r"""
        Masked-diffusion generation: the answer starts as `mask_token_id`s and is denoised block by block, a few
        positions per step, each step being one forward pass over the canvas.

        Parameters:
            inputs (`torch.LongTensor` of shape `(batch_size, prompt_length)`, *optional*):
                The prompt, left-padded in batches (also accepted as `input_ids=`). Mask tokens inside the prompt are
                filled in too (infilling).
            attention_mask (`torch.Tensor` of shape `(batch_size, prompt_length)`, *optional*):
                1 for real tokens, 0 for (left) padding. Each row then gets the tokens it would get alone.
            generation_config ([`DiffusionGenerationConfig`], *optional*):
                Base parametrization; unset fields fall back to the model's `generation_config`, then to the family
                defaults. Keyword arguments matching its fields override it.
            logits_processor (`LogitsProcessorList`, *optional*):
                Applied to the `[batch, columns, vocab]` logits before tokens are chosen: those of the whole canvas
                (prompt and answer, LLaDA 1.x) or of the active block (LLaDA2).
            streamer (`BaseStreamer`, *optional*):
                Receives the prompt, then committed answer tokens as soon as they are final (`put`), and, if it has
                `put_draft` (e.g. `TextDiffusionStreamer`), the current draft after every step. Batch size 1.
            generator (`torch.Generator`, *optional*):
                Random source for sampling and random remasking (default: the global one).
            kwargs:
                Fields of [`DiffusionGenerationConfig`] (`max_new_tokens`, `steps`, `block_length`, `remasking`,
                `temperature`, `cfg_scale`, `threshold`, ...) and the official sampler's names: `gen_length` (the
                exact answer length, which must then be a multiple of `block_length` for LLaDA 1.x), `mask_id`,
                `eos_id`. With `max_new_tokens`, the canvas is rounded up to whole blocks and exactly
                `max_new_tokens` answer tokens are returned.

        Returns:
            `torch.LongTensor` of shape `(batch_size, prompt_length + max_new_tokens)`, or a
            [`DiffusionGenerationOutput`] when `return_dict_in_generate=True`.
        """
        input_ids = self._diffusion_input_ids(inputs, kwargs)
        if logits_processor is not None and not isinstance(logits_processor, LogitsProcessorList):
            logits_processor = LogitsProcessorList(logits_processor)
        config, exact_length = self._prepare_diffusion_config(generation_config, input_ids, kwargs)
        family = DIFFUSION_FAMILIES[self.diffusion_family]
        mask_token_id = config.mask_token_id
        eos_token_ids = _as_list(config.eos_token_id)
        if streamer is not None and input_ids.shape[0] != 1:
            raise ValueError(f"`streamer` supports batch size 1, got {input_ids.shape[0]} prompts.")

        # 1. The three pieces: where the canvas sits and how it is cut (schedule), what each step commits (policy),
        # what each step recomputes (cache).
        schedule = BLOCK_SCHEDULES[config.block_schedule].from_config(config)
        canvas = schedule.build(
            input_ids,
            attention_mask,
            answer_length=config.max_new_tokens,
            exact_length=exact_length,
            mask_token_id=mask_token_id,
            fill_token_id=_padding_token_id(config.pad_token_id, eos_token_ids, mask_token_id),
            max_length=self._max_sequence_length(),
        )
        suppressed = eos_token_ids + _as_list(config.eot_token_id) if config.confidence_eos_eot_inf else []
        policy = family.policy_class.from_config(config, confidence_suppressed_ids=suppressed)
        editing = policy.editing
        cache = self._diffusion_cache(config, schedule, canvas)
        compiled_forward = self._compiled_forward(config)

        # 2. Denoise block by block. `rows` are the batch rows still being denoised; `stopped_at_eos` the rows that
        # finished on an EOS (their tail is filled with EOS at the end).
        tokens = canvas.tokens
        batch_size = tokens.shape[0]
        rows = torch.arange(batch_size, device=tokens.device)
        stopped_at_eos = torch.zeros(batch_size, dtype=torch.bool, device=tokens.device)
        nfe, history = 0, []
        if streamer is not None:
            streamer.put(input_ids.cpu())
        streamed = 0
        progress = tqdm(
            total=len(canvas.blocks) * canvas.steps_per_block, disable=not config.show_progress, desc="denoising"
        )
        for block in canvas.blocks:
            rows, _ = self._keep_rows(rows, canvas.row_num_blocks[rows] > block.index, cache, config.cfg_scale)
            if rows.numel() == 0:
                break
            quota = None
            if policy.parallel_decoding == "quota":
                to_resolve = schedule.to_resolve(tokens[rows], block, mask_token_id)
                quota = policy.block_quota(to_resolve, canvas.steps_per_block)
            # Random draws and logits processors see the official sampler's span (LLaDA 1.x: the whole canvas).
            full_span = policy.draws_noise or logits_processor is not None
            schedule_span = schedule.candidate_span(canvas, block, rows, mask_token_id, full_span)
            max_steps = policy.max_block_steps(canvas.steps_per_block, block.end - block.start)
            if editing is not None:
                max_steps = editing.max_block_steps(max_steps)
            for step in range(max_steps):
                progress.update()
                # The forward does not change the canvas: the candidates seen now are the ones the policy ranks.
                candidates = schedule.candidates(tokens[rows], block, schedule_span, mask_token_id)
                if editing is not None:
                    if step == 0:
                        editing.start_block(candidates)
                    if not bool(editing.start_step(candidates).any()):
                        break
                elif policy.stops_when_block_filled and not bool(candidates.any()):
                    break
                # 2.a One forward pass over the columns the cache strategy does not hold; logits of the candidates it
                # computes (a cached step sees only candidates inside its queries).
                columns = cache.forward_columns(block, step, schedule.window_end(canvas, block))
                span_start = max(schedule_span[0], columns.query_start)
                span_end = min(schedule_span[1], columns.query_end)
                forward = compiled_forward if compiled_forward and cache.has_static_shapes(columns) else self
                logits = self._denoiser_logits(
                    forward, schedule, canvas, rows, columns, (span_start, span_end), cache, config.cfg_scale,
                    mask_token_id,
                )  # fmt: skip
                nfe += 1
                cache.after_forward(block, step)

                # 2.b Propose a token and a confidence for every candidate, commit the policy's choice.
                span_tokens = tokens[rows, span_start:span_end]
                if logits_processor is not None:
                    logits = logits_processor(tokens[rows], logits)
                if config.logits_eos_inf:
                    logits = suppress_tokens(logits, eos_token_ids)
                proposal = policy.propose(logits, generator)
                candidates = candidates[:, span_start - schedule_span[0] : span_end - schedule_span[0]]
                # Steps past the planned ones (token editing's post steps) have no mask left to commit.
                step_quota = None if quota is None else quota[:, min(step, quota.shape[1] - 1)]
                transfer = policy.select(proposal, candidates, step_quota)
                if editing is not None:  # the span is the block (block-causal schedule)
                    transfer = editing.add_edits(transfer, proposal, span_tokens, mask_token_id)
                tokens[rows, span_start:span_end] = torch.where(transfer, proposal.tokens, span_tokens)

                # 2.c Report the step.
                if config.output_history:
                    history.append(canvas.to_output(tokens, input_ids))
                if streamer is not None:
                    # Edits may still change the active block: only what precedes it is final.
                    final_before = block.start if editing is not None else None
                    streamed = self._stream_step(
                        streamer, canvas, tokens, input_ids, proposal.tokens, span_start, mask_token_id, streamed,
                        final_before,
                    )  # fmt: skip

                # 2.d Opt-in early stop: rows whose answer is complete up to an EOS leave the batch (with token
                # editing only at the end of the block, below).
                if config.eos_early_stop and eos_token_ids and editing is None:
                    complete = self._complete_up_to_eos(canvas, tokens, rows, eos_token_ids, mask_token_id)
                    stopped_at_eos[rows[complete]] = True
                    rows, quota = self._keep_rows(rows, ~complete, cache, config.cfg_scale, quota)
                    if rows.numel() == 0:
                        break

            # 2.e LLaDA2: a row stops after the block in which it produced an EOS.
            if family.stop_after_eos_block and eos_token_ids and rows.numel():
                answer_cols = canvas.answer_cols[rows]
                is_eos = torch.isin(tokens[rows].gather(1, answer_cols), _tensor(eos_token_ids, tokens))
                has_eos = (is_eos & (answer_cols < block.end)).any(dim=1)
                stopped_at_eos[rows[has_eos]] = True
                rows, _ = self._keep_rows(rows, ~has_eos, cache, config.cfg_scale)
        progress.close()

        # 3. Back to the caller's layout; rows that stopped on an EOS get EOS after it.
        sequences = canvas.to_output(tokens, input_ids)
        if eos_token_ids:
            sequences = _fill_after_eos(sequences, input_ids.shape[1], stopped_at_eos, eos_token_ids)
        if streamer is not None:
            if input_ids.shape[1] + streamed < sequences.shape[1]:
                streamer.put(sequences[0, input_ids.shape[1] + streamed :].cpu())
            streamer.end()
        if not config.return_dict_in_generate:
            return sequences
        return DiffusionGenerationOutput(
            sequences=sequences, nfe=nfe, history=tuple(history) if config.output_history else None
        )

    # ----------------------------------------------------------------------------------------------------------------
    # Preparation
    # ----------------------------------------------------------------------------------------------------------------

    def _diffusion_input_ids(self, inputs: torch.LongTensor | None, kwargs: dict) -> torch.LongTensor:
        input_ids = kwargs.pop("input_ids", None)
        if inputs is not None and input_ids is not None:
            raise ValueError("Pass the prompt either as `inputs` or as `input_ids`, not both.")
        input_ids = inputs if inputs is not None else input_ids
        if input_ids is None:  # empty prompt (e.g. from a pipeline)
            return torch.empty((1, 0), dtype=torch.long, device=self.device)
        if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.is_floating_point():
            raise TypeError("`input_ids` must be an integer tensor of shape [batch_size, prompt_length].")
        return input_ids

    def _prepare_diffusion_config(
        self, generation_config: DiffusionGenerationConfig | None, input_ids: torch.LongTensor, kwargs: dict
    ) -> tuple[DiffusionGenerationConfig, bool]:
        """Resolves the config: call kwargs > `generation_config` > `self.generation_config` > family defaults.

        Returns the config and whether the answer length came from the official `gen_length` (then exact).
        """
        family = DIFFUSION_FAMILIES[self.diffusion_family]
        config = copy.deepcopy(generation_config if generation_config is not None else self.generation_config)
        if not isinstance(config, DiffusionGenerationConfig):
            config = family.generation_config_class.from_dict(config.to_dict())
        config.update(**self.generation_config.to_diff_dict(), defaults_only=True)
        config.update(**family.generation_config_class.family_defaults, defaults_only=True)

        # Official argument names.
        exact_length = "gen_length" in kwargs
        for alias, name in (
            ("mask_id", "mask_token_id"),
            ("eos_id", "eos_token_id"),
            ("gen_length", "max_new_tokens"),
        ):
            if alias in kwargs:
                value = kwargs.pop(alias)
                if name in kwargs and kwargs[name] != value:
                    raise ValueError(f"`{alias}` ({value}) and `{name}` ({kwargs[name]}) disagree; pass only one.")
                kwargs[name] = value
        if "max_length" in kwargs and "max_new_tokens" not in kwargs:
            kwargs["max_new_tokens"] = kwargs.pop("max_length") - input_ids.shape[1]
            if kwargs["max_new_tokens"] < 1:
                raise ValueError(f"`max_length` must exceed the prompt length ({input_ids.shape[1]}).")
        if kwargs.get("use_cache") is False:
            # Only an explicit `use_cache=False` in the call disables the cache: the released config files carry the
            # autoregressive `use_cache: false`, which says nothing about diffusion caches.
            kwargs["diffusion_cache"] = "none"
        unused = config.update(**kwargs)
        if unused:
            raise TypeError(f"`generate()` got unexpected keyword arguments: {sorted(unused)}.")

        if config.mask_token_id is None:
            config.mask_token_id = getattr(self.config, "mask_token_id", None)
        if config.mask_token_id is None:
            raise ValueError(
                "No mask token id: the model config has no `mask_token_id`; pass `mask_token_id=` (or `mask_id=`) "
                "to `generate()` or set it in the generation config."
            )
        if config.eos_token_id is None:
            config.eos_token_id = getattr(self.config, "eos_token_id", None)
        config.validate()
        if config.block_schedule not in family.block_schedules:
            raise ValueError(
                f"`block_schedule={config.block_schedule!r}` does not apply to this model; {type(self).__name__} is "
                f"sampled with {list(family.block_schedules)}."
            )
        return config, exact_length

    def _diffusion_cache(
        self, config: DiffusionGenerationConfig, schedule: BlockSchedule, canvas: DiffusionCanvas
    ) -> DiffusionCacheStrategy:
        strategy = DIFFUSION_CACHES[config.diffusion_cache]
        if schedule.name not in strategy.schedules:
            raise ValueError(
                f"`diffusion_cache={strategy.name!r}` does not apply to the {schedule.name!r} block schedule of this "
                f"model (it works with {list(strategy.schedules)})."
            )
        answer = torch.zeros_like(canvas.tokens, dtype=torch.bool).scatter_(1, canvas.answer_cols, True)
        if not strategy.exact and bool(((canvas.tokens == config.mask_token_id) & ~answer).any()):
            raise ValueError(
                f"`diffusion_cache={strategy.name!r}` cannot fill mask tokens inside the prompt (its cached steps "
                "only compute the active block); use `diffusion_cache='none'` for infilling."
            )
        if config.cache_implementation == "static":
            return strategy(static_width=canvas.tokens.shape[1], num_layers=self.config.num_hidden_layers)
        return strategy()

    def _compiled_forward(self, config: DiffusionGenerationConfig):
        """The compiled `__call__` for the fixed-shape steps of a static cache, or `None` (see
        `cache_implementation`)."""
        if config.cache_implementation != "static" or config.disable_compile:
            return None
        if self.device.type not in ("cuda", "xpu") and config.compile_config is None:
            return None
        return self.get_compiled_call(config.compile_config)

    def _max_sequence_length(self) -> int | None:
        for name in ("max_position_embeddings", "max_sequence_length"):
            value = getattr(self.config, name, None)
            if value is not None:
                return value
        return None

    # ----------------------------------------------------------------------------------------------------------------
    # Loop pieces
    # ----------------------------------------------------------------------------------------------------------------

    def _denoiser_logits(
        self,
        forward,
        schedule: BlockSchedule,
        canvas: DiffusionCanvas,
        rows: torch.LongTensor,
        columns: ForwardColumns,
        span: tuple[int, int],
        cache: DiffusionCacheStrategy,
        cfg_scale: float,
        mask_token_id: int,
    ) -> torch.Tensor:
        """Logits `[rows, span_end - span_start, vocab]` of the candidate columns, with classifier-free guidance.
        `forward` is the model's `__call__` or its compiled version."""
        query_start, query_end, _ = columns
        span_start, span_end = span
        input_ids = canvas.tokens[rows, query_start:query_end]
        model_inputs = schedule.model_inputs(canvas, rows, columns)
        if cfg_scale > 0:
            unconditional = input_ids.masked_fill(canvas.prompt_mask[rows, query_start:query_end], mask_token_id)
            input_ids = torch.cat([input_ids, unconditional])
            model_inputs = {k: None if v is None else torch.cat([v, v]) for k, v in model_inputs.items()}
        forward_parameters = _forward_parameters(type(self).forward)
        if cache.cache is not None:
            model_inputs["cache" if "cache" in forward_parameters else "past_key_values"] = cache.cache
        keep_all = "logits_to_keep" not in forward_parameters
        if not keep_all:
            # The LM head only runs on the candidate columns: the last ones (int), or a range of positions.
            model_inputs["logits_to_keep"] = (
                query_end - span_start
                if span_end == query_end
                else torch.arange(span_start - query_start, span_end - query_start, device=input_ids.device)
            )
        logits = forward(input_ids=input_ids, use_cache=cache.cache is not None, **model_inputs).logits
        if keep_all:
            logits = logits[:, span_start - query_start : span_end - query_start]
        if cfg_scale > 0:
            conditional, unconditional = logits.chunk(2)
            logits = unconditional + (cfg_scale + 1) * (conditional - unconditional)
        return logits

    @staticmethod
    def _keep_rows(rows, keep, cache, cfg_scale, quota=None):
        """Drops the rows where `keep` is False from the active rows, the cache (and the per-row `quota`)."""
        if bool(keep.all()):
            return rows, quota
        index = keep.nonzero().squeeze(1)
        forward_index = torch.cat([index, index + rows.numel()]) if cfg_scale > 0 else index
        cache.select_rows(forward_index)
        return rows[index], None if quota is None else quota[index]

    @staticmethod
    def _complete_up_to_eos(canvas, tokens, rows, eos_token_ids, mask_token_id) -> torch.BoolTensor:
        """Rows with an EOS in the answer and no mask before it (prompt included)."""
        row_tokens = tokens[rows]
        answer_cols = canvas.answer_cols[rows]
        is_eos = torch.isin(row_tokens.gather(1, answer_cols), _tensor(eos_token_ids, row_tokens))
        eos_col = answer_cols.gather(1, is_eos.long().argmax(1, keepdim=True))
        columns = torch.arange(row_tokens.shape[1], device=row_tokens.device)
        masked_before = ((row_tokens == mask_token_id) & (columns < eos_col)).any(1)
        return is_eos.any(1) & ~masked_before

    @staticmethod
    def _stream_step(
        streamer, canvas, tokens, input_ids, x0, span_start, mask_token_id, streamed, final_before=None
    ) -> int:
        """Sends the newly final answer tokens to `streamer.put` (committed tokens never change, so the answer is final
        up to its first mask, and, with token editing, up to the canvas column `final_before`) and, if the streamer
        has `put_draft`, the rest of the answer with the current predictions in place of the masks. Returns how many
        answer tokens have been streamed."""
        prompt_length = input_ids.shape[1]
        answer = canvas.to_output(tokens, input_ids)[0, prompt_length:]
        final = first_or_length(answer == mask_token_id)
        if final_before is not None:
            final = min(final, int((canvas.answer_cols[0] < final_before).sum()))
        if final > streamed:
            streamer.put(answer[streamed:final].cpu())
            streamed = final
        if hasattr(streamer, "put_draft"):
            draft = tokens.clone()
            span = draft[:, span_start : span_start + x0.shape[1]]
            span.copy_(torch.where(span == mask_token_id, x0, span))
            draft_answer = canvas.to_output(draft, input_ids)[0, prompt_length:]
            streamer.put_draft(draft_answer[streamed : first_or_length(draft_answer == mask_token_id)].cpu())
        return streamed


@functools.cache
def _forward_parameters(forward) -> frozenset[str]:
    return frozenset(inspect.signature(forward).parameters)


def _as_list(token_ids) -> list[int]:
    if token_ids is None:
        return []
    return [token_ids] if isinstance(token_ids, int) else list(token_ids)


def _tensor(token_ids: list[int], like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(token_ids, dtype=like.dtype, device=like.device)


def _padding_token_id(pad_token_id: int | None, eos_token_ids: list[int], mask_token_id: int) -> int:
    """A non-mask token for canvas columns left of a row's prompt: the pad token, else EOS."""
    if pad_token_id is not None:
        return pad_token_id
    return eos_token_ids[0] if eos_token_ids else int(mask_token_id == 0)


def _fill_after_eos(sequences, prompt_length, rows, eos_token_ids) -> torch.LongTensor:
    """Replaces everything after the first answer EOS of the flagged `rows` by EOS."""
    answer = sequences[:, prompt_length:]
    is_eos = torch.isin(answer, _tensor(eos_token_ids, answer)).long()
    after_first_eos = (is_eos.cumsum(1) - is_eos) > 0
    answer = torch.where(after_first_eos & rows[:, None], eos_token_ids[0], answer)
    return torch.cat([sequences[:, :prompt_length], answer], dim=1)


__all__ = ["DiffusionFamily", "DiffusionGenerationMixin", "DiffusionGenerationOutput", "DIFFUSION_FAMILIES"]
