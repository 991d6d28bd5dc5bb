"""`DiffusionGenerationMixin`: the masked-diffusion `generate()` shared by LLaDA 1.x and LLaDA2.0.

The loop is the same for both families; what differs is data, picked from the model's `diffusion_family`:
a block schedule (`schedules.py`), a transfer policy (`policies.py`) and a cache strategy (`caches.py`). The fast
modes (approximate caches, parallel decoding, the compiled static step) are the same loop with other pieces; all
are opt-in generation-config fields.
"""

import copy
import functools
import math
from dataclasses import dataclass

import torch
from transformers import GenerationConfig, GenerationMixin, LogitsProcessorList, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer
from transformers.utils import ModelOutput, logging

from ..modeling_diffusion_utils import check_range
from .caches import DIFFUSION_CACHES, DiffusionCacheStrategy
from .canvas import DiffusionCanvas
from .configuration_diffusion import (
    DiffusionGenerationConfig,
    LLaDA2GenerationConfig,
    LLaDAGenerationConfig,
    check_int,
)
from .policies import LLaDA2TransferPolicy, LLaDATransferPolicy, TransferPolicy
from .processors import canvas_logits_processor, combine_logits_processors, first_stop, stop_strings_for
from .sampler import CanvasDenoiser, as_id_list, id_tensor
from .schedules import BLOCK_SCHEDULES, BlockSchedule


logger = logging.get_logger(__name__)


# The official samplers' keywords: passing any of them selects the official dialect of `generate()`.
OFFICIAL_KEYWORDS = frozenset({"gen_length", "steps", "mask_id", "eos_id"})


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
        stopping_criteria: StoppingCriteriaList | None = None,
        streamer: BaseStreamer | None = None,
        generator: torch.Generator | None = None,
        tokenizer=None,
        **kwargs,
    ) -> torch.LongTensor | DiffusionGenerationOutput:
        r"""
        Masked-diffusion generation: the answer starts as `mask_token_id`s and is denoised block by block, a few
        positions per step, each step being one forward pass over the canvas.

        Two dialects, one rule. If the call passes any of the official sampler's keywords `gen_length`, `steps`,
        `mask_id` or `eos_id`, it gets the official sampler's output token for token: an answer of exactly
        `gen_length` (or `max_new_tokens`, the canvas rounded up to whole blocks) tokens, EOS-filled where the official
        code fills it. Otherwise (pipelines, `transformers serve`, plain `max_new_tokens` calls) it gets what
        transformers' `generate()` gives an autoregressive model: `max_new_tokens` is an upper bound, the answer grows
        a canvas (`canvas_length`, LLaDA 1.x) or a block (block-causal models) at a time and ends at its first EOS or
        stop string; rows are then padded with `pad_token_id` (a single row is cut there). Values inherited from a
        saved or given generation config never switch the dialect.

        Parameters:
            inputs (`torch.LongTensor` of shape `(batch_size, prompt_length)`, *optional*):
                The prompt, left-padded in batches (also accepted as `input_ids=`). Mask tokens inside the prompt are
                filled in too (infilling).
            attention_mask (`torch.Tensor` of shape `(batch_size, prompt_length)`, *optional*):
                1 for real tokens, 0 for (left) padding. In float64 each row gets exactly the tokens it gets alone;
                in float32/bfloat16, kernels round differently for other batch shapes, so near-ties can flip
                (measured rates: `benchmarks/bench_batch_consistency.py`).
            generation_config ([`DiffusionGenerationConfig`], *optional*):
                Base parametrization; unset fields fall back to the model's `generation_config`, then to the family
                defaults. Keyword arguments matching its fields override it.
            logits_processor (`LogitsProcessorList`, *optional*):
                Applied to the `[batch, columns, vocab]` logits before tokens are chosen: those of the whole canvas
                (prompt and answer, LLaDA 1.x) or of the active block (LLaDA2). The standard processors of the
                generation config (`repetition_penalty`, `bad_words_ids`, ...) are built from transformers' classes.
            stopping_criteria (`StoppingCriteriaList`, *optional*):
                Checked on the denoised answer: it is cut after the first token at which a criterion holds.
            streamer (`BaseStreamer`, *optional*):
                Receives the prompt, then answer tokens as soon as they are final (`put`; together exactly the
                returned answer), and, if it has `put_draft` (e.g. `TextDiffusionStreamer`), the current draft after
                every step. Batch size 1.
            generator (`torch.Generator`, *optional*):
                Random source for sampling and random remasking (default: the global one).
            tokenizer (`PreTrainedTokenizerBase`, *optional*):
                Needed by `stop_strings`.
            kwargs:
                Fields of [`DiffusionGenerationConfig`] (`max_new_tokens`, `steps`, `block_length`, `remasking`,
                `temperature`, `cfg_scale`, `threshold`, ...) and the official sampler's names: `gen_length` (the
                exact answer length, which must then be a multiple of `block_length` for LLaDA 1.x), `mask_id`,
                `eos_id`. Standard flags with no diffusion meaning raise an error that names them.

        Returns:
            `torch.LongTensor` of shape `(batch_size * num_return_sequences, prompt_length + answer_length)`, or a
            [`DiffusionGenerationOutput`] when `return_dict_in_generate=True`.
        """
        input_ids = self._diffusion_input_ids(inputs, kwargs)
        attention_mask = self._diffusion_attention_mask(attention_mask, input_ids)
        config, dialect = self._prepare_diffusion_config(generation_config, input_ids, kwargs)
        if config.num_return_sequences and config.num_return_sequences > 1:
            input_ids = input_ids.repeat_interleave(config.num_return_sequences, dim=0)
            if attention_mask is not None:
                attention_mask = attention_mask.repeat_interleave(config.num_return_sequences, dim=0)
        if streamer is not None and input_ids.shape[0] != 1:
            raise ValueError(f"`streamer` supports batch size 1, got {input_ids.shape[0]} rows.")
        logits_processor = combine_logits_processors(
            logits_processor, canvas_logits_processor(config, config.do_sample, input_ids.device)
        )
        stop_strings = stop_strings_for(config, tokenizer)
        criteria = StoppingCriteriaList(stopping_criteria or [])
        has_stops = stop_strings is not None or bool(criteria)
        find_stops = functools.partial(first_stop, stop_strings=stop_strings, criteria=criteria)
        if streamer is not None:
            streamer.put(input_ids.cpu())
        # With stop strings or criteria the answer's end is known only once it is denoised: it is streamed then.
        denoiser = functools.partial(
            self._canvas_denoiser, logits_processor, streamer, generator, stream_final=not has_stops
        )
        generate_answers = self._generate_official if dialect == "official" else self._generate_until_stop
        sequences, nfe, history = generate_answers(
            denoiser, input_ids, attention_mask, config, find_stops if has_stops else None
        )
        if streamer is not None:
            streamer.end()
        if not config.return_dict_in_generate:
            return sequences
        return DiffusionGenerationOutput(
            sequences=sequences, nfe=nfe, history=tuple(history) if config.output_history else None
        )

    def _generate_official(self, denoiser, input_ids, attention_mask, config, find_stops):
        """The official samplers: one canvas of exactly the requested answer length (EOS-filled after the first EOS
        of rows that stopped on it); stop strings and criteria, if any, cut it after their first stop."""
        family = DIFFUSION_FAMILIES[self.diffusion_family]
        run = denoiser(config, stop_after_eos_block=family.stop_after_eos_block)
        result = run.run(
            input_ids,
            attention_mask,
            answer_length=config.max_new_tokens,
            exact_length=config.gen_length_given,
            fill_token_id=self._fill_token_id(config),
            max_length=self._max_sequence_length(),
        )
        prompt_length = input_ids.shape[1]
        eos_token_ids = as_id_list(config.eos_token_id)
        sequences = _fill_after_eos(result.sequences, prompt_length, result.finished_at_eos, eos_token_ids)
        if find_stops is not None:
            answer_length = sequences.shape[1] - prompt_length
            stops = find_stops(sequences, prompt_length, 0, answer_length, [])
            sequences = self._end_answers(
                sequences, prompt_length, stops.masked_fill(stops < 0, answer_length), config
            )
        _stream_rest(run.streamer, sequences[:, prompt_length:], result.streamed)
        return sequences, result.nfe, result.history

    def _generate_until_stop(self, denoiser, input_ids, attention_mask, config, find_stops):
        """Transformers' dialect: the answer grows a canvas at a time (LLaDA 1.x `"prompt"` schedule; a block-causal
        schedule is one canvas whose rows stop after their EOS block) until every row has stopped (EOS, stop string or
        criterion) or `max_new_tokens` / the model's positions are reached."""
        batch_size, prompt_length = input_ids.shape
        eos_token_ids = as_id_list(config.eos_token_id)
        fill_token_id = self._fill_token_id(config)
        max_length = self._max_sequence_length()
        cap = config.max_new_tokens
        if max_length is not None:
            if prompt_length >= max_length:
                raise ValueError(
                    f"The prompt ({prompt_length} tokens) leaves no room for an answer: the model has "
                    f"{max_length} positions."
                )
            cap = min(cap, max_length - prompt_length)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        answers = input_ids.new_empty((batch_size, 0))
        stops = torch.full((batch_size,), -1, dtype=torch.long, device=input_ids.device)
        active = torch.arange(batch_size, device=input_ids.device)  # rows that have not stopped
        nfe, history = 0, []
        while active.numel() and answers.shape[1] < cap:
            # 1. Denoise the next canvas after the prompt and the answer so far.
            generated = answers.shape[1]
            round_config = self._canvas_round_config(config, cap - generated, max_length, prompt_length + generated)
            if round_config is None:  # not even one block fits in the model's positions
                if generated == 0:
                    raise ValueError(
                        f"No block of `block_length={config.block_length}` fits after the prompt ({prompt_length} "
                        f"tokens) in the model's {max_length} positions: shorten the prompt or the blocks."
                    )
                break
            run = denoiser(round_config, stop_after_eos_block=True)
            prompt = torch.cat([input_ids[active], answers[active]], dim=1)
            prompt_mask = torch.cat([attention_mask[active], torch.ones_like(answers[active])], dim=1)
            result = run.run(
                prompt,
                prompt_mask,
                answer_length=round_config.max_new_tokens,
                exact_length=False,
                fill_token_id=fill_token_id,
                max_length=max_length,
            )
            nfe += result.nfe
            history += [_scatter_rows(step, active, batch_size, fill_token_id) for step in result.history]
            new_tokens = _scatter_rows(result.sequences[:, prompt.shape[1] :], active, batch_size, fill_token_id)
            answers = torch.cat([answers, new_tokens], dim=1)

            # 2. Rows that stopped in it (EOS, stop string, criterion) leave. `result.sequences` is each active row's
            # prompt and answer so far.
            round_stops = (find_stops or first_stop)(
                result.sequences, prompt_length, generated, answers.shape[1], eos_token_ids
            )
            stops[active] = round_stops
            if run.streamer is not None:  # batch of one
                end = prompt_length + (int(round_stops[0]) if round_stops[0] >= 0 else answers.shape[1])
                _stream_rest(run.streamer, result.sequences[:, prompt.shape[1] : end], result.streamed)
            active = active[round_stops < 0]
        ends = stops.masked_fill(stops < 0, answers.shape[1])
        sequences = self._end_answers(torch.cat([input_ids, answers], dim=1), prompt_length, ends, config)
        return sequences, nfe, history

    def _canvas_round_config(self, config, remaining, max_length, used) -> DiffusionGenerationConfig | None:
        """The config of the next canvas in transformers' dialect: its answer length and (`"prompt"` schedule) its
        total steps, keeping the saved steps per block. `None` when no block fits in the model's positions."""
        round_config = copy.copy(config)
        block_length = config.block_length
        if config.block_schedule != "prompt":  # block-causal: one canvas, rows stop after their EOS block
            if max_length is not None:  # blocks are aligned to position 0 and must end within the positions
                remaining = min(remaining, max_length // block_length * block_length - used)
            if remaining < 1:
                return None
            round_config.max_new_tokens = remaining
            return round_config
        length = min(config.canvas_length, remaining)
        num_blocks = math.ceil(length / block_length)
        if max_length is not None and used + num_blocks * block_length > max_length:
            num_blocks = (max_length - used) // block_length
            length = num_blocks * block_length
        if num_blocks == 0:
            return None
        round_config.max_new_tokens = length
        if config.steps is not None:
            round_config.steps = num_blocks * self._steps_per_block(config)
        return round_config

    @staticmethod
    def _steps_per_block(config) -> int:
        """Transformers' dialect, `"prompt"` schedule: the saved `steps` of one `canvas_length` canvas, per block."""
        num_blocks = math.ceil(config.canvas_length / config.block_length)
        if config.steps % num_blocks:
            raise ValueError(
                f"`steps` ({config.steps}, from the generation config) must be divisible by the number of blocks of a "
                f"canvas ({num_blocks} = canvas_length {config.canvas_length} / block_length {config.block_length}): "
                "`steps` counts the steps of one `canvas_length` canvas. Pass `steps`, or a `block_length` / "
                "`canvas_length` that it fits."
            )
        return config.steps // num_blocks

    def _end_answers(self, sequences, prompt_length, ends, config) -> torch.LongTensor:
        """Pads every row after its answer length `ends[row]` with `pad_token_id` and drops the columns no row uses."""
        width = prompt_length + int(ends.max()) if ends.numel() else sequences.shape[1]
        sequences = sequences[:, :width]
        columns = torch.arange(width, device=sequences.device)
        return sequences.masked_fill(columns >= prompt_length + ends[:, None], self._fill_token_id(config))

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
        check_range("input_ids", input_ids, "vocab_size", self.config.vocab_size)
        return input_ids

    @staticmethod
    def _diffusion_attention_mask(attention_mask, input_ids: torch.LongTensor) -> torch.Tensor | None:
        """The 2-D padding mask as a tensor on the prompt's device (lists are accepted)."""
        if attention_mask is None:
            return None
        if not isinstance(attention_mask, torch.Tensor):
            try:
                attention_mask = torch.tensor(attention_mask, device=input_ids.device)
            except (TypeError, ValueError) as error:
                raise TypeError(
                    f"`attention_mask` must be a tensor (or nested list) of 0/1 values, got {type(attention_mask)}."
                ) from error
        if attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"`attention_mask` must have the shape of `input_ids` {tuple(input_ids.shape)}, got "
                f"{tuple(attention_mask.shape)}."
            )
        if not bool(((attention_mask == 0) | (attention_mask == 1)).all()):
            raise ValueError("`attention_mask` must hold 0 (padding) and 1 (real token) only.")
        return attention_mask.to(input_ids.device)

    def _prepare_diffusion_config(
        self, generation_config: GenerationConfig | None, input_ids: torch.LongTensor, kwargs: dict
    ) -> tuple[DiffusionGenerationConfig, str]:
        """Resolves the config: call kwargs > `generation_config` > `self.generation_config` > family defaults.

        Returns the config and the dialect: `"official"` if the call passed `gen_length`, `steps`, `mask_id` or
        `eos_id`, else `"transformers"`. `config.gen_length_given` says whether the answer length is the official,
        exact `gen_length`.
        """
        family = DIFFUSION_FAMILIES[self.diffusion_family]
        dialect = "official" if OFFICIAL_KEYWORDS & kwargs.keys() else "transformers"
        if isinstance(generation_config, dict):
            generation_config = family.generation_config_class.from_dict(generation_config)
        if generation_config is not None and not isinstance(generation_config, GenerationConfig):
            raise TypeError(
                f"`generation_config` must be a GenerationConfig (or a dict of its fields), got {type(generation_config)}."
            )
        config = copy.deepcopy(generation_config if generation_config is not None else self.generation_config)
        if not isinstance(config, DiffusionGenerationConfig):
            config = family.generation_config_class.from_dict(config.to_dict())
        # `max_length` (of the call, or of a given config without `max_new_tokens`) counts the prompt.
        max_length = kwargs.pop("max_length", None)
        if max_length is None and generation_config is not None and generation_config.max_new_tokens is None:
            max_length = generation_config.max_length
        config.max_length = None
        if max_length is not None and "max_new_tokens" not in kwargs and "gen_length" not in kwargs:
            if max_length <= input_ids.shape[1]:
                raise ValueError(f"`max_length` ({max_length}) must exceed the prompt length ({input_ids.shape[1]}).")
            kwargs["max_new_tokens"] = max_length - input_ids.shape[1]
        # A given config's `steps` without a `canvas_length` counts the steps of the requested answer length.
        steps_of_the_answer = config.canvas_length is None and config.steps is not None
        config.update(**self.generation_config.to_diff_dict(), defaults_only=True)
        config.update(**family.generation_config_class.family_defaults, defaults_only=True)

        # Official argument names.
        config.gen_length_given = "gen_length" in kwargs
        for alias, name in (
            ("mask_id", "mask_token_id"),
            ("eos_id", "eos_token_id"),
            ("gen_length", "max_new_tokens"),
        ):
            if alias in kwargs:
                value = kwargs.pop(alias)
                check_int(alias, value, minimum=1 if alias == "gen_length" else 0)
                if alias == "gen_length":  # the official length wins over `max_new_tokens` (pipelines always pass it)
                    kwargs.pop(name, None)
                if name in kwargs and kwargs[name] != value:
                    raise ValueError(f"`{alias}` ({value}) and `{name}` ({kwargs[name]}) disagree; pass only one.")
                kwargs[name] = value
        if kwargs.get("use_cache") is False:
            # Only an explicit `use_cache=False` in the call disables the cache: the released config files carry the
            # autoregressive `use_cache: false`, which says nothing about diffusion caches.
            kwargs["diffusion_cache"] = "none"
        call_do_sample = kwargs.get("do_sample")
        if steps_of_the_answer and "canvas_length" not in kwargs:
            kwargs["canvas_length"] = kwargs.get("max_new_tokens", config.max_new_tokens)
        unused = config.update(**kwargs)
        if unused:
            raise TypeError(
                f"`generate()` got unexpected keyword arguments: {sorted(unused)}. Diffusion sampling takes the fields "
                f"of {type(config).__name__} and the official names {sorted(OFFICIAL_KEYWORDS)}."
            )
        self._resolve_sampling(config, call_do_sample)

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
        token_ids = {
            name: as_id_list(getattr(config, name))
            for name in ("mask_token_id", "eos_token_id", "pad_token_id", "eot_token_id")
        }
        token_ids["suppress_tokens"] = list(config.suppress_tokens or [])
        token_ids["bad_words_ids"] = [i for ids in config.bad_words_ids or [] for i in ids]
        for name, ids in token_ids.items():
            for token_id in ids:
                if not 0 <= token_id < self.config.vocab_size:
                    raise ValueError(
                        f"`{name}` ({token_id}) is outside the model's vocabulary [0, {self.config.vocab_size})."
                    )
        if config.block_schedule not in family.block_schedules:
            raise ValueError(
                f"`block_schedule={config.block_schedule!r}` does not apply to this model; {type(self).__name__} is "
                f"sampled with {list(family.block_schedules)}."
            )
        return config, dialect

    @staticmethod
    def _resolve_sampling(config: DiffusionGenerationConfig, call_do_sample: bool | None) -> None:
        """Sets `config.temperature` to the one used (0.0: greedy) and `config.do_sample` to match.

        A `do_sample` passed to the call decides (`True` with `temperature` unset samples at 1.0); otherwise tokens
        are sampled when `do_sample` is set in the config or `temperature > 0` (the official samplers' rule), so no
        temperature is ignored. `temperature=0.0` is always greedy."""
        temperature = config.temperature
        if call_do_sample is not None:
            sample = call_do_sample
        else:
            sample = bool(config.do_sample) or (temperature or 0.0) > 0.0
        if call_do_sample is False and (temperature or 0.0) > 0.0:
            logger.warning_once(
                f"`do_sample=False` was passed: decoding is greedy (`temperature={temperature}` unused)."
            )
        config.temperature = (1.0 if temperature is None else temperature) if sample else 0.0
        config.do_sample = config.temperature > 0.0

    def _canvas_denoiser(
        self, logits_processor, streamer, generator, config, *, stream_final, stop_after_eos_block
    ) -> CanvasDenoiser:
        """A [`CanvasDenoiser`] for `config` with the family's pieces."""
        family = DIFFUSION_FAMILIES[self.diffusion_family]
        eos_token_ids = as_id_list(config.eos_token_id)
        suppressed = eos_token_ids + as_id_list(config.eot_token_id) if config.confidence_eos_eot_inf else []
        schedule = BLOCK_SCHEDULES[config.block_schedule].from_config(config)
        return CanvasDenoiser(
            self,
            config,
            schedule=schedule,
            policy=family.policy_class.from_config(config, confidence_suppressed_ids=suppressed),
            cache_factory=functools.partial(self._diffusion_cache, config, schedule),
            logits_processor=logits_processor,
            stop_after_eos_block=stop_after_eos_block,
            streamer=streamer,
            stream_final=stream_final,
            compiled_forward=self._compiled_forward(config),
            generator=generator,
        )

    @staticmethod
    def _fill_token_id(config) -> int:
        """The token of padding columns (left of a row's prompt, after a row's answer): the pad token, else EOS."""
        if config.pad_token_id is not None:
            return config.pad_token_id
        eos_token_ids = as_id_list(config.eos_token_id)
        return eos_token_ids[0] if eos_token_ids else int(config.mask_token_id == 0)

    def _diffusion_cache(
        self, config: DiffusionGenerationConfig, schedule: BlockSchedule, canvas: DiffusionCanvas
    ) -> DiffusionCacheStrategy:
        strategy = DIFFUSION_CACHES[config.diffusion_cache]
        if schedule.name not in strategy.schedules:
            raise ValueError(
                f"`diffusion_cache={strategy.name!r}` does not apply to the {schedule.name!r} block schedule of this "
                f"model (it works with {list(strategy.schedules)})."
            )
        # Masks before a row's first answer column are in its prompt (columns after the answer only round the canvas
        # up to whole blocks).
        columns = torch.arange(canvas.tokens.shape[1], device=canvas.tokens.device)
        in_prompt = columns < canvas.answer_cols[:, :1]
        if not strategy.exact and bool(((canvas.tokens == config.mask_token_id) & in_prompt).any()):
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


def _scatter_rows(sequences, rows, batch_size, fill_token_id) -> torch.LongTensor:
    """`sequences` of the batch `rows` as a `[batch_size, ...]` tensor, other rows filled with `fill_token_id`."""
    full = sequences.new_full((batch_size, sequences.shape[1]), fill_token_id)
    full[rows] = sequences
    return full


def _stream_rest(streamer, answer, streamed) -> None:
    """Puts the tokens of the (batch-1) `answer` after the first `streamed`, so that everything put is `answer`."""
    if streamer is not None and streamed < answer.shape[1]:
        streamer.put(answer[0, streamed:].cpu())


def _fill_after_eos(sequences, prompt_length, rows, eos_token_ids) -> torch.LongTensor:
    """Replaces everything after the first answer EOS of the flagged `rows` by EOS."""
    answer = sequences[:, prompt_length:]
    if not eos_token_ids:
        return sequences
    is_eos = torch.isin(answer, id_tensor(eos_token_ids, answer)).long()
    after_first_eos = (is_eos.cumsum(1) - is_eos) > 0
    answer = torch.where(after_first_eos & rows[:, None], eos_token_ids[0], answer)
    return torch.cat([sequences[:, :prompt_length], answer], dim=1)


__all__ = ["DiffusionFamily", "DiffusionGenerationMixin", "DiffusionGenerationOutput", "DIFFUSION_FAMILIES"]
