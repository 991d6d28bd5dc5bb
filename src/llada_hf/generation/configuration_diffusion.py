"""Generation configuration for masked-diffusion sampling (LLaDA 1.x and LLaDA2.0)."""

import math
from typing import Any, ClassVar

from transformers import GenerationConfig


BLOCK_SCHEDULES = ("prompt", "absolute")
REMASKING_STRATEGIES = ("low_confidence", "margin", "entropy", "random")
PARALLEL_DECODING = ("quota", "threshold", "factor", "entropy_bound")
DIFFUSION_CACHES = ("none", "block", "prefix", "dual")
CACHE_IMPLEMENTATIONS = ("static", "dynamic")
STATIC_CACHES = ("block", "dual")  # the caches whose steps have fixed shapes with `cache_implementation="static"`


_LEFT_TO_RIGHT = "it assumes tokens are produced left to right"
_NO_SEARCH = "diffusion sampling denoises one canvas per prompt, it does not search over candidates"
_NO_ASSISTANT = "there is no assisted or speculative decoding for diffusion models"

# Standard `GenerationConfig` fields that diffusion sampling does not implement: the values that leave them off, and
# why. Any other value raises in `validate()`; every other standard field is honoured (see the docstring below).
UNSUPPORTED_STANDARD_FIELDS: dict[str, tuple[tuple, str]] = {
    "min_length": ((0,), _LEFT_TO_RIGHT),
    "min_new_tokens": ((0,), _LEFT_TO_RIGHT),
    "max_time": ((), "a denoising run has no per-token time budget"),
    "early_stopping": ((False,), _NO_SEARCH),
    "num_beams": ((1,), _NO_SEARCH),
    "num_beam_groups": ((1,), _NO_SEARCH),
    "diversity_penalty": ((0.0,), _NO_SEARCH),
    "length_penalty": ((1.0,), _NO_SEARCH),
    "constraints": ((), _NO_SEARCH),
    "force_words_ids": ((), _NO_SEARCH),
    "penalty_alpha": ((), "contrastive search is autoregressive"),
    "dola_layers": ((), "DoLa decoding is autoregressive"),
    "low_memory": ((False,), _NO_SEARCH),
    "use_mtp": ((False,), "multi-token prediction heads are autoregressive"),
    "top_h": ((), "use top_k, top_p or min_p"),
    "no_repeat_ngram_size": ((0,), _LEFT_TO_RIGHT),
    "encoder_no_repeat_ngram_size": ((0,), "the model has no encoder"),
    "encoder_repetition_penalty": ((1.0,), "the model has no encoder"),
    "decoder_start_token_id": ((), "the model has no encoder"),
    "forced_bos_token_id": ((), _LEFT_TO_RIGHT),
    "forced_eos_token_id": ((), _LEFT_TO_RIGHT),
    "exponential_decay_length_penalty": ((), _LEFT_TO_RIGHT),
    "begin_suppress_tokens": ((), _LEFT_TO_RIGHT),
    "token_healing": ((False,), _LEFT_TO_RIGHT),
    "guidance_scale": ((1.0,), "use `cfg_scale` (= guidance_scale - 1; its unconditional copy masks the prompt)"),
    "watermarking_config": ((), "watermarking processors are autoregressive"),
    "output_attentions": ((False,), "call the model's forward for attentions"),
    "output_hidden_states": ((False,), "call the model's forward for hidden states"),
    "output_scores": ((False,), "a step scores canvas columns, not a next token; use `output_history`"),
    "output_logits": ((False,), "a step scores canvas columns, not a next token; use `output_history`"),
    "cache_config": ((), "diffusion caches are chosen with `diffusion_cache`"),
    "max_cache_len": ((), "diffusion caches are sized by the canvas"),
    "prefill_chunk_size": ((), "the canvas is encoded whole"),
    "continuous_batching_config": ((), "continuous batching is autoregressive"),
    "is_assistant": ((False,), _NO_ASSISTANT),
    "num_assistant_tokens": ((), _NO_ASSISTANT),
    "num_assistant_tokens_schedule": ((), _NO_ASSISTANT),
    "assistant_confidence_threshold": ((), _NO_ASSISTANT),
    "prompt_lookup_num_tokens": ((), _NO_ASSISTANT),
    "max_matching_ngram_size": ((), _NO_ASSISTANT),
    "assistant_early_exit": ((), _NO_ASSISTANT),
    "assistant_lookbehind": ((), _NO_ASSISTANT),
    "target_lookbehind": ((), _NO_ASSISTANT),
    "assistant_ensemble_weight": ((), _NO_ASSISTANT),
    "speculation_type": ((), _NO_ASSISTANT),
}


class DiffusionGenerationConfig(GenerationConfig):
    # no-format
    """
    A [`GenerationConfig`] for [`DiffusionGenerationMixin.generate`]: the answer starts as mask tokens and is denoised
    block by block, a few positions per step. Unset (`None`) fields take the model's saved values, then the family's
    defaults (see [`LLaDAGenerationConfig`], [`LLaDA2GenerationConfig`]).

    Args:
        > Length and schedule

        max_new_tokens (`int`, *optional*):
            In transformers' dialect (see [`DiffusionGenerationMixin.generate`]): the most answer tokens to generate;
            the answer ends at its first EOS or stop string. In the official dialect: the answer length returned (the
            canvas is rounded up to whole blocks where the schedule needs it).
        canvas_length (`int`, *optional*):
            Transformers' dialect with the `"prompt"` schedule (LLaDA 1.x): how many masks are denoised together. The
            answer grows one canvas at a time (each canvas sees the prompt and the answer so far) until EOS or
            `max_new_tokens`; `steps` is the step count of a whole canvas. Set at load to the saved `max_new_tokens`
            when the file has no `canvas_length`, so that a saved `steps` keeps its meaning. Block-causal schedules
            extend the answer one block at a time and do not use it.
        steps (`int`, *optional*):
            Denoising steps. Its unit depends on `block_schedule`: all blocks together for `"prompt"` (of the official
            `gen_length`, or of one `canvas_length` in transformers' dialect), each block for `"absolute"`. `None`
            means one token per step.
        block_length (`int`, *optional*):
            Tokens per block (semi-autoregressive decoding).
        block_schedule (`str`, *optional*):
            `"prompt"`: blocks start where the prompt ends and `steps` is the total step count (LLaDA 1.x).
            `"absolute"`: blocks are aligned to each row's first real token, `steps` counts per block and attention is
            block-causal (LLaDA2.0; also for LLaDA 1.x models trained with block diffusion, such as converted
            autoregressive models). Saved so that a saved `steps` keeps its meaning.
        minimal_topk (`int`, *optional*):
            `"absolute"` schedule only: caps the steps per block at `max_new_tokens // minimal_topk` (official LLaDA2).

        > Which positions to commit

        remasking (`str`, *optional*):
            Confidence used to rank masked positions: `"low_confidence"` (probability of the predicted token, the
            official default), `"margin"` (top-1 minus top-2 probability), `"entropy"` (`exp(-entropy)` of the
            predicted distribution) or `"random"` (uniform, LLaDA 1.x only).
        parallel_decoding (`str`, *optional*):
            How many positions a step commits. `"quota"` (default, official): the step's share of the block's masks
            (`steps`), or with `threshold` LLaDA2.0's rule below. The other rules are Fast-dLLM / EB-sampler parallel
            decoding: a step commits at least one token and a block takes as many steps as it needs, so `steps` is
            ignored; they are approximations of the one-token-per-step sampler (approximate, opt-in):
            - `"threshold"`: the most confident masked position of the block and every other one whose confidence is
              at least `threshold` (Fast-dLLM). `threshold >= 1` commits one token per step.
            - `"factor"`: the `n` most confident, `n` the largest with `(n + 1) * (1 - c_n) < factor`, `c_n` the
              `n`-th highest confidence (Fast-dLLM; unlike its code, a run that fails only at its last position is not
              committed whole).
            - `"entropy_bound"`: the longest run of most confident positions whose entropies sum, less the largest
              one, to at most `entropy_bound` nats (EB-sampler).
            Measured exact-match cost with the dual cache (`benchmarks/bench_fast_sampling.py`: a small trained LLaDA,
            200 held-out 256-token answers, block 32, plain sampler 100%): `"threshold"` 0.9: 0.0 points (NFE 256 ->
            9), 0.5: -0.5; `"factor"` 1.0: 0.0; `"entropy_bound"` 0.1: -2.0. That task is easy for its model; on
            LLaDA-8B-Instruct GSM8K, Fast-dLLM reports 79.3 -> 78.5 for dual cache + threshold 0.9.
        threshold (`float`, *optional*):
            With `parallel_decoding="quota"` (LLaDA2.0's rule): commit every masked position of the block whose
            confidence exceeds it, when at least the step's quota do; otherwise commit the quota with the highest
            confidence. Values above 1 mean "quota only". With `parallel_decoding="threshold"`: see there.
        editing_threshold (`float`, *optional*):
            LLaDA2.1 token editing (token-to-token, "T2T"; LLaDA2 models only, off when `None`). At every step, a
            position of the active block that was a mask when the block began and has been committed since is
            replaced by the model's current prediction when that differs from it and its confidence exceeds
            `editing_threshold` (0 edits whenever the prediction changes). A row stays on a block while it has masks,
            then for up to `max_post_steps` more steps, and leaves it at the first of those that edits nothing. Answers
            before the active block are final, so a row still stops after the block that holds its EOS
            (`eos_early_stop` then acts at block ends only). LLaDA2.1's modes: quality `threshold=0.7,
            editing_threshold=0.5`, speed `threshold=0.5, editing_threshold=0.0`. Its mask-to-token fallback is one
            token per step, which is the `"quota"` rule's with `steps == block_length` (the default).
        max_post_steps (`int`, *optional*):
            With `editing_threshold`: how many editing-only steps a row may take on a block after its last mask is
            committed (LLaDA2 default 16).
        factor (`float`, *optional*):
            The factor of `parallel_decoding="factor"` (Fast-dLLM uses 1.0).
        entropy_bound (`float`, *optional*):
            The bound (nats) of `parallel_decoding="entropy_bound"`.
        do_sample (`bool`, *optional*), temperature (`float`, *optional*):
            Greedy or sampled tokens. A `do_sample` passed to `generate()` decides (`do_sample=True` alone samples at
            temperature 1.0, `do_sample=False` is greedy); otherwise tokens are sampled when the config says
            `do_sample=True` or `temperature > 0` (the official samplers' rule). `temperature=0.0` is greedy. Samples
            are drawn as the official samplers do (LLaDA 1.x: Gumbel-max in float64; LLaDA2: softmax of the tempered,
            `top_k`/`top_p` filtered logits). Greedy is saved as `do_sample=False` with `temperature` unset.
        top_k (`int`, *optional*), top_p (`float`, *optional*):
            Filters applied to the logits before sampling (only when sampling).
        repetition_penalty (`float`, *optional*):
            Transformers' repetition penalty, with the row's canvas as the context of every candidate column.
        bad_words_ids (`list[list[int]]`, *optional*):
            Tokens never produced (single tokens only: `[[id1], [id2]]`).
        suppress_tokens (`list[int]`, *optional*):
            Tokens never produced.
        sequence_bias (`list[list]`, *optional*):
            Logit biases of single tokens: `[[[id], bias], ...]`.
        min_p (`float`, *optional*):
            Min-p filter of the untempered distribution (when sampling).
        typical_p (`float`, *optional*):
            Typical-p filter (when sampling).
        epsilon_cutoff (`float`, *optional*):
            Epsilon sampling filter (when sampling).
        eta_cutoff (`float`, *optional*):
            Eta sampling filter (when sampling).
        remove_invalid_values (`bool`, *optional*):
            Replace NaN/inf logits before tokens are chosen.
        renormalize_logits (`bool`, *optional*):
            Log-softmax the processed logits (the chosen tokens do not change).
            All of these are transformers' own logits processors, applied to every candidate column with its row's
            canvas as the context (`processors.py`).
        stop_strings (`str` or `list[str]`, *optional*):
            The answer is cut after the first stop string (and padded); needs `tokenizer=` in `generate()`.
        num_return_sequences (`int`, *optional*):
            Answers per prompt (rows `i * n ... i * n + n - 1` of the output belong to prompt `i`).
        cfg_scale (`float`, *optional*):
            Unsupervised classifier-free guidance: `un + (cfg_scale + 1) * (cond - un)`, where the unconditional copy
            has its prompt masked. 0 disables it.

        > End of sequence

        logits_eos_inf (`bool`, *optional*):
            Never predict the EOS token(s).
        confidence_eos_eot_inf (`bool`, *optional*):
            Give predicted EOS / end-of-turn tokens zero confidence, so they are committed last.
        eos_early_stop (`bool`, *optional*):
            Stop a row once its answer up to its first EOS has no mask left, and fill the rest with EOS. Opt-in: the
            answer up to the EOS is unchanged, only forward passes are saved.

        > Tokens

        mask_token_id (`int`, *optional*):
            The mask token. Taken from the model config when unset.
        eot_token_id (`int` or `list[int]`, *optional*):
            End-of-turn token(s) for `confidence_eos_eot_inf`, in addition to `eos_token_id`.

        > Runtime

        diffusion_cache (`str`, *optional*):
            What each step recomputes. Passing `use_cache=False` to `generate()` forces `"none"` (the `use_cache` of a
            saved config is the autoregressive field and is ignored).
            - `"none"`: the whole visible canvas every step (exact; the LLaDA 1.x default).
            - `"block"`: exact block KV cache of block-causal schedules (LLaDA2.0 default): committed blocks are
              encoded once, each step computes the active block.
            - `"prefix"` (LLaDA 1.x, approximate, opt-in): Fast-dLLM's prefix cache. The first step of each block
              recomputes the whole canvas; the block's other steps recompute the block and everything after it and
              reuse the keys/values of the columns before the block from that first step.
            - `"dual"` (LLaDA 1.x, approximate, opt-in): Fast-dLLM's dual cache. As `"prefix"`, but the block's other
              steps recompute the block alone, reusing the keys/values of the columns before and after it; the
              block's own keys/values are replaced in the cache at every step.
            The approximate caches change tokens only through the columns whose keys/values they reuse: those that
            changed since the block's first step. They refuse prompts that contain mask tokens. Measured exact-match
            cost (`benchmarks/bench_fast_sampling.py`, one token per step, 200 held-out 256-token answers): 0.0 points
            for both (100% -> 100%); see `benchmarks/README.md` for the table.
        cache_implementation (`str`, *optional*):
            `"static"`: keys/values in preallocated canvas-wide buffers, so that the cached steps have fixed shapes.
            With `diffusion_cache="block"` every forward after the prompt's first one has `2 * block_length` queries
            (a block's first step) or `block_length` (the others), keys over the whole canvas; with `"dual"` the
            refresh computes the whole canvas and the other steps one block. Those steps are then run through
            `torch.compile` (CUDA graphs with the default `compile_config` mode `"reduce-overhead"`): automatically
            on CUDA/XPU, on other devices when `compile_config` is given; `disable_compile=True` runs them eagerly.
            Tokens are those of the dynamic cache. In transformers' dialect a LLaDA 1.x answer that grows past its
            first canvas compiles once more per canvas width.
        compile_config ([`CompileConfig`], *optional*), disable_compile (`bool`, *optional*):
            As in [`GenerationConfig`], for the static step above.
        output_history (`bool`, *optional*):
            With `return_dict_in_generate`, also return the canvas after every step.
        show_progress (`bool`, *optional*):
            Show a tqdm progress bar over the denoising steps.
    """

    diffusion_fields: ClassVar[tuple[str, ...]] = (
        "canvas_length",
        "steps",
        "block_length",
        "block_schedule",
        "minimal_topk",
        "remasking",
        "parallel_decoding",
        "threshold",
        "editing_threshold",
        "max_post_steps",
        "factor",
        "entropy_bound",
        "cfg_scale",
        "logits_eos_inf",
        "confidence_eos_eot_inf",
        "eos_early_stop",
        "mask_token_id",
        "eot_token_id",
        "diffusion_cache",
        "output_history",
        "show_progress",
    )
    # Values used for fields that neither the call, the given config nor the model's config set.
    family_defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, **kwargs):
        for name in self.diffusion_fields:
            setattr(self, name, kwargs.pop(name, None))
        super().__init__(**kwargs)

    @classmethod
    def from_model_config(cls, model_config) -> "DiffusionGenerationConfig":
        """Builds a model's default generation config: the family defaults and the model config's token ids."""
        config = cls().complete(model_config)
        config._original_object_hash = hash(config)
        return config

    def complete(self, model_config) -> "DiffusionGenerationConfig":
        """Fills unset fields with the family defaults and the token ids of `model_config`. Returns `self`."""
        config_dict = model_config if isinstance(model_config, dict) else model_config.to_dict()
        for name in ("bos_token_id", "eos_token_id", "pad_token_id", "mask_token_id"):
            if getattr(self, name) is None and config_dict.get(name) is not None:
                setattr(self, name, config_dict[name])
        for name, value in self.family_defaults.items():
            if getattr(self, name, None) is None:
                setattr(self, name, value)
        if self.canvas_length is None:
            self.canvas_length = self.max_new_tokens
        return self

    def to_diff_dict(self) -> dict[str, Any]:
        """As [`GenerationConfig.to_diff_dict`], without the diffusion fields left unset."""
        return {
            key: value
            for key, value in super().to_diff_dict().items()
            if not (value is None and key in self.diffusion_fields)
        }

    def validate(self, strict: bool = False, user_set_attributes: set[str] | None = None):
        """Checks the diffusion fields (and the standard ones they use); raises a `ValueError`/`TypeError` naming the
        offending argument. The autoregressive checks of [`GenerationConfig`] do not apply to diffusion sampling."""
        self._refuse_unsupported_standard_fields()
        check_int("canvas_length", self.canvas_length, minimum=1)
        check_int("num_return_sequences", self.num_return_sequences, minimum=1)
        check_int("steps", self.steps, minimum=1)
        check_int("block_length", self.block_length, minimum=1)
        check_int("minimal_topk", self.minimal_topk, minimum=1)
        check_int("max_post_steps", self.max_post_steps, minimum=0)
        check_int("max_new_tokens", self.max_new_tokens, minimum=1)
        check_int("max_length", self.max_length, minimum=1)
        check_int("top_k", self.top_k, minimum=0)
        _check_choice("block_schedule", self.block_schedule, BLOCK_SCHEDULES)
        _check_choice("remasking", self.remasking, REMASKING_STRATEGIES)
        _check_choice("diffusion_cache", self.diffusion_cache, DIFFUSION_CACHES)
        _check_choice("parallel_decoding", self.parallel_decoding, PARALLEL_DECODING)
        _check_choice("cache_implementation", self.cache_implementation, CACHE_IMPLEMENTATIONS)
        if self.cache_implementation == "static" and self.diffusion_cache not in STATIC_CACHES:
            raise ValueError(
                "`cache_implementation='static'` is available for the block cache (`diffusion_cache='block'`, "
                f"LLaDA2.0) and the dual cache (`'dual'`, LLaDA 1.x); got diffusion_cache={self.diffusion_cache!r}."
            )
        _check_number("factor", self.factor, minimum=0.0)
        _check_number("entropy_bound", self.entropy_bound, minimum=0.0)
        for rule, field in (("threshold", "threshold"), ("factor", "factor"), ("entropy_bound", "entropy_bound")):
            if self.parallel_decoding == rule and getattr(self, field) is None:
                raise ValueError(f"`parallel_decoding={rule!r}` needs `{field}`.")
        _check_number("temperature", self.temperature, minimum=0.0)
        _check_number("cfg_scale", self.cfg_scale, minimum=0.0)
        _check_number("threshold", self.threshold, minimum=0.0)
        _check_number("editing_threshold", self.editing_threshold, minimum=0.0)
        _check_number("top_p", self.top_p, minimum=0.0)
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"`top_p` must be in (0, 1], got {self.top_p}.")
        _check_number("repetition_penalty", self.repetition_penalty, minimum=0.0)
        if self.repetition_penalty == 0.0:
            raise ValueError("`repetition_penalty` must be > 0 (1.0 means no penalty).")
        for name in ("min_p", "typical_p", "epsilon_cutoff", "eta_cutoff"):
            _check_number(name, getattr(self, name), minimum=0.0)
        if self.min_p is not None and self.min_p > 1.0:
            raise ValueError(f"`min_p` must be in [0, 1], got {self.min_p}.")
        _check_token_lists("bad_words_ids", self.bad_words_ids)
        _check_token_lists("sequence_bias", [entry[0] for entry in _check_pairs("sequence_bias", self.sequence_bias)])
        _check_token_lists("suppress_tokens", None if self.suppress_tokens is None else [self.suppress_tokens])
        stop_strings = [self.stop_strings] if isinstance(self.stop_strings, str) else self.stop_strings
        if stop_strings is not None and not all(isinstance(stop, str) and stop for stop in stop_strings):
            raise ValueError(f"`stop_strings` must be non-empty strings, got {self.stop_strings!r}.")
        for name, token_lists in (
            ("bad_words_ids", self.bad_words_ids),
            ("sequence_bias", [ids for ids, _ in _check_pairs("sequence_bias", self.sequence_bias)]),
        ):
            if any(len(ids) != 1 for ids in token_lists or []):
                raise ValueError(
                    f"`{name}` with sequences of several tokens has no meaning for diffusion sampling (tokens are not "
                    "produced left to right); give single tokens, e.g. [[id1], [id2]]."
                )
        check_int("mask_token_id", self.mask_token_id, minimum=0)
        if self.mask_token_id is not None and self.mask_token_id == self.pad_token_id:
            raise ValueError(
                f"`pad_token_id` and `mask_token_id` are both {self.mask_token_id}: padding would be denoised. "
                "Use a different pad token (e.g. the EOS token)."
            )

    def _refuse_unsupported_standard_fields(self) -> None:
        for name, (off_values, reason) in UNSUPPORTED_STANDARD_FIELDS.items():
            value = getattr(self, name, None)
            if value is not None and value not in off_values:
                raise ValueError(
                    f"`{name}={value!r}` is not supported by diffusion sampling ({reason}); leave it unset."
                )

    # Autoregressive-only API of `GenerationConfig` that has no meaning here.
    def get_generation_mode(self, *args, **kwargs):
        raise NotImplementedError(f"{self.__class__.__name__} has no autoregressive generation mode.")


# Defaults both families share: the official samplers' ranking and selection, greedy (`do_sample=False`), no guidance, no EOS options, and
# plain tensor outputs.
_OFFICIAL_SAMPLER_DEFAULTS = {
    "remasking": "low_confidence",
    "parallel_decoding": "quota",
    "do_sample": False,
    "cfg_scale": 0.0,
    "logits_eos_inf": False,
    "confidence_eos_eot_inf": False,
    "eos_early_stop": False,
    "output_history": False,
    "show_progress": False,
    "return_dict_in_generate": False,
}


class LLaDAGenerationConfig(DiffusionGenerationConfig):
    """[`DiffusionGenerationConfig`] with the LLaDA 1.x defaults of the official model card (`generate.py`)."""

    family_defaults = {
        **_OFFICIAL_SAMPLER_DEFAULTS,
        "max_new_tokens": 128,
        "block_length": 32,
        "block_schedule": "prompt",
        "diffusion_cache": "none",
    }


class LLaDA2GenerationConfig(DiffusionGenerationConfig):
    """[`DiffusionGenerationConfig`] with the LLaDA2.0 defaults of the official `generate()` and model card."""

    family_defaults = {
        **_OFFICIAL_SAMPLER_DEFAULTS,
        "max_new_tokens": 512,
        "steps": 32,
        "block_length": 32,
        "block_schedule": "absolute",
        "minimal_topk": 1,
        "threshold": 0.95,
        "max_post_steps": 16,
        "diffusion_cache": "block",
    }


def check_int(name: str, value, minimum: int):
    """Raises a `TypeError`/`ValueError` naming `name` unless `value` is `None` or an integer >= `minimum`."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"`{name}` must be an integer, got {value!r} ({type(value).__name__}).")
    if value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {value}.")


def _check_number(name: str, value, minimum: float):
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"`{name}` must be a number, got {value!r} ({type(value).__name__}).")
    if not math.isfinite(value):
        raise ValueError(f"`{name}` must be a finite number, got {value}.")
    if value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {value}.")


def _check_token_lists(name: str, token_lists) -> None:
    """`token_lists` must be `None` or a list of non-empty lists of token ids (integers >= 0)."""
    if token_lists is None:
        return
    if not isinstance(token_lists, (list, tuple)) or not all(
        isinstance(ids, (list, tuple)) and ids and all(isinstance(i, int) and not isinstance(i, bool) for i in ids)
        for ids in token_lists
    ):
        raise TypeError(f"`{name}` must be a list of lists of token ids, got {token_lists!r}.")
    if any(i < 0 for ids in token_lists for i in ids):
        raise ValueError(f"`{name}` holds a negative token id: {token_lists!r}.")


def _check_pairs(name: str, pairs) -> list:
    """`pairs` (`sequence_bias`) must be `None` or a list of `[token ids, bias]` pairs; returns them as a list."""
    if pairs is None:
        return []
    if isinstance(pairs, dict):
        pairs = [[list(ids), bias] for ids, bias in pairs.items()]
    if not isinstance(pairs, (list, tuple)) or not all(isinstance(p, (list, tuple)) and len(p) == 2 for p in pairs):
        raise TypeError(f"`{name}` must be a list of [token ids, bias] pairs, got {pairs!r}.")
    return list(pairs)


def _check_choice(name: str, value, choices: tuple[str, ...]):
    if value is not None and value not in choices:
        raise ValueError(f"Unknown `{name}` {value!r}; expected one of {list(choices)}.")


__all__ = ["DiffusionGenerationConfig", "LLaDAGenerationConfig", "LLaDA2GenerationConfig"]
