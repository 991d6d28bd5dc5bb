"""Generation configuration for masked-diffusion sampling (LLaDA 1.x and LLaDA2.0)."""

from typing import Any, ClassVar

from transformers import GenerationConfig


BLOCK_SCHEDULES = ("prompt", "absolute")
REMASKING_STRATEGIES = ("low_confidence", "random")
DIFFUSION_CACHES = ("none", "block")


class DiffusionGenerationConfig(GenerationConfig):
    # no-format
    """
    A [`GenerationConfig`] for [`DiffusionGenerationMixin.generate`]: the answer starts as mask tokens and is denoised
    block by block, a few positions per step. Unset (`None`) fields take the model's saved values, then the family's
    defaults (see [`LLaDAGenerationConfig`], [`LLaDA2GenerationConfig`]).

    Args:
        > Length and schedule

        max_new_tokens (`int`, *optional*):
            Answer length returned. The canvas is rounded up to whole blocks where the schedule needs it.
        steps (`int`, *optional*):
            Denoising steps. Its unit depends on `block_schedule`: all blocks together for `"prompt"`, each block for
            `"absolute"`. `None` with `"prompt"` means one token per step.
        block_length (`int`, *optional*):
            Tokens per block (semi-autoregressive decoding).
        block_schedule (`str`, *optional*):
            `"prompt"`: blocks start where the prompt ends and `steps` is the total step count (LLaDA 1.x).
            `"absolute"`: blocks are aligned to each row's first real token, `steps` counts per block and attention is
            block-causal (LLaDA2.0). Saved so that a saved `steps` keeps its meaning.
        minimal_topk (`int`, *optional*):
            `"absolute"` schedule only: caps the steps per block at `max_new_tokens // minimal_topk` (official LLaDA2).

        > Which positions to commit

        remasking (`str`, *optional*):
            Confidence used to rank masked positions: `"low_confidence"` (probability of the predicted token) or
            `"random"` (uniform, LLaDA 1.x only).
        threshold (`float`, *optional*):
            Commit every masked position of the block whose confidence exceeds it, when at least the step's quota do;
            otherwise commit the quota with the highest confidence. Values above 1 mean "quota only".
        temperature (`float`, *optional*):
            0 is greedy. Above 0 the predicted tokens are sampled (LLaDA 1.x: Gumbel-max in float64; LLaDA2: softmax of
            the tempered, `top_k`/`top_p` filtered logits). Sampling is driven by `temperature` alone.
        top_k (`int`, *optional*), top_p (`float`, *optional*):
            Filters applied to the logits before sampling (only when `temperature > 0`).
        do_sample (`bool`, *optional*):
            Kept `False` in saved configs so that pipelines do not add their sampling defaults. `True` requires
            `temperature > 0`.
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
            `"none"` recomputes the whole visible canvas every step; `"block"` is the exact block KV cache of
            block-causal schedules (committed blocks are encoded once). `use_cache=False` forces `"none"`.
        output_history (`bool`, *optional*):
            With `return_dict_in_generate`, also return the canvas after every step.
        show_progress (`bool`, *optional*):
            Show a tqdm progress bar over the denoising steps.
    """

    diffusion_fields: ClassVar[tuple[str, ...]] = (
        "steps",
        "block_length",
        "block_schedule",
        "minimal_topk",
        "remasking",
        "threshold",
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
        _check_int("steps", self.steps, minimum=1)
        _check_int("block_length", self.block_length, minimum=1)
        _check_int("minimal_topk", self.minimal_topk, minimum=1)
        _check_int("max_new_tokens", self.max_new_tokens, minimum=1)
        _check_int("max_length", self.max_length, minimum=1)
        _check_int("top_k", self.top_k, minimum=0)
        _check_choice("block_schedule", self.block_schedule, BLOCK_SCHEDULES)
        _check_choice("remasking", self.remasking, REMASKING_STRATEGIES)
        _check_choice("diffusion_cache", self.diffusion_cache, DIFFUSION_CACHES)
        _check_number("temperature", self.temperature, minimum=0.0)
        _check_number("cfg_scale", self.cfg_scale, minimum=0.0)
        _check_number("threshold", self.threshold, minimum=0.0)
        _check_number("top_p", self.top_p, minimum=0.0)
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"`top_p` must be in (0, 1], got {self.top_p}.")
        for name in ("num_beams", "num_return_sequences"):
            if getattr(self, name) not in (None, 1):
                raise ValueError(f"`{name}={getattr(self, name)}` is not supported by diffusion sampling (use 1).")
        if self.do_sample is True and not (self.temperature or 0.0) > 0.0:
            raise ValueError(
                "`do_sample=True` needs `temperature > 0`: diffusion sampling is driven by `temperature` "
                f"(got temperature={self.temperature})."
            )
        _check_int("mask_token_id", self.mask_token_id, minimum=0)
        if self.mask_token_id is not None and self.mask_token_id == self.pad_token_id:
            raise ValueError(
                f"`pad_token_id` and `mask_token_id` are both {self.mask_token_id}: padding would be denoised. "
                "Use a different pad token (e.g. the EOS token)."
            )

    # Autoregressive-only API of `GenerationConfig` that has no meaning here.
    def get_generation_mode(self, *args, **kwargs):
        raise NotImplementedError(f"{self.__class__.__name__} has no autoregressive generation mode.")


class LLaDAGenerationConfig(DiffusionGenerationConfig):
    """[`DiffusionGenerationConfig`] with the LLaDA 1.x defaults of the official model card (`generate.py`)."""

    family_defaults = {
        "max_new_tokens": 128,
        "block_length": 32,
        "block_schedule": "prompt",
        "remasking": "low_confidence",
        "temperature": 0.0,
        "do_sample": False,
        "cfg_scale": 0.0,
        "logits_eos_inf": False,
        "confidence_eos_eot_inf": False,
        "eos_early_stop": False,
        "diffusion_cache": "none",
        "output_history": False,
        "show_progress": False,
        "return_dict_in_generate": False,
    }


class LLaDA2GenerationConfig(DiffusionGenerationConfig):
    """[`DiffusionGenerationConfig`] with the LLaDA2.0 defaults of the official `generate()` and model card."""

    family_defaults = {
        "max_new_tokens": 512,
        "steps": 32,
        "block_length": 32,
        "block_schedule": "absolute",
        "minimal_topk": 1,
        "remasking": "low_confidence",
        "threshold": 0.95,
        "temperature": 0.0,
        "do_sample": False,
        "cfg_scale": 0.0,
        "logits_eos_inf": False,
        "confidence_eos_eot_inf": False,
        "eos_early_stop": False,
        "diffusion_cache": "block",
        "output_history": False,
        "show_progress": False,
        "return_dict_in_generate": False,
    }


def _check_int(name: str, value, minimum: int):
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
    if value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {value}.")


def _check_choice(name: str, value, choices: tuple[str, ...]):
    if value is not None and value not in choices:
        raise ValueError(f"Unknown `{name}` {value!r}; expected one of {list(choices)}.")


__all__ = ["DiffusionGenerationConfig", "LLaDAGenerationConfig", "LLaDA2GenerationConfig"]
