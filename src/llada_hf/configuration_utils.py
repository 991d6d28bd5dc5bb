"""Validation and RoPE helpers shared by the LLaDA 1.x and LLaDA2.0 configurations."""

import functools
import math
from collections.abc import Callable, Iterable
from numbers import Real
from typing import Any

from huggingface_hub.dataclasses import strict
from huggingface_hub.errors import StrictDataclassError

from .integrations.hub import add_remote_code_auto_map, write_remote_code_files


class ConfigTypeError(StrictDataclassError, TypeError):
    """A configuration field has the wrong type."""


class ConfigValueError(StrictDataclassError, ValueError):
    """A configuration field, or a combination of fields, has an invalid value."""


def _raise_builtin_errors(method: Callable) -> Callable:
    """Re-raises `huggingface_hub`'s validation errors as `ConfigTypeError`/`ConfigValueError` (same message)."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except StrictDataclassError as error:
            if isinstance(error, (TypeError, ValueError)):
                raise
            error_class = ConfigTypeError if isinstance(error.__cause__, TypeError) else ConfigValueError
            raise error_class(str(error)) from error.__cause__

    return wrapper


def strict_config(cls: type) -> type:
    """
    `huggingface_hub`'s `@strict`, as on transformers' own configs: every field is type-checked on construction and
    on assignment (also through the standard names of `attribute_map`), and the `validate_*` methods run after
    construction and before saving. The errors it raises are also `TypeError`/`ValueError`.
    """
    cls = strict(cls)
    strict_setattr = cls.__setattr__

    def __setattr__(self, name: str, value: Any) -> None:
        strict_setattr(self, cls.attribute_map.get(name, name), value)

    cls.__setattr__ = _raise_builtin_errors(__setattr__)
    cls.__init__ = _raise_builtin_errors(cls.__init__)
    cls.validate = _raise_builtin_errors(cls.validate)
    return cls


def _check(config, names: Iterable[str], rule: str, is_valid: Callable[[Any], bool]) -> None:
    for name in names:
        value = getattr(config, name)
        if value is not None and not is_valid(value):
            raise ValueError(f"`{name}` must be {rule}, got {value!r}.")


def check_positive(config, names: Iterable[str]) -> None:
    """Raises a `ValueError` naming the first of `names` that is set and not > 0."""
    _check(config, names, "positive", lambda value: value > 0)


def check_non_negative(config, names: Iterable[str]) -> None:
    """Raises a `ValueError` naming the first of `names` that is set and negative."""
    _check(config, names, ">= 0", lambda value: value >= 0)


def check_dropout(config, names: Iterable[str]) -> None:
    """Raises a `ValueError` naming the first of `names` that is not a probability in [0, 1)."""
    _check(config, names, "in [0, 1)", lambda value: 0 <= value < 1)


def checked_confidence_loss_weight(weight: Any) -> float:
    """The λ of confidence-aware parallel training as a float (`None`: 0); refuses negative or non-finite values."""
    if weight is None:
        return 0.0
    if not isinstance(weight, Real) or isinstance(weight, bool) or not math.isfinite(weight) or weight < 0:
        raise ValueError(f"`confidence_loss_weight` must be a finite number >= 0, got {weight!r}.")
    return float(weight)


def check_supported(config, supported_values: Iterable[tuple[str, Any]], released: str) -> None:
    """Refuses options that the released code supports but that are not implemented here."""
    for option, supported in supported_values:
        value = getattr(config, option)
        if value != supported:
            raise ValueError(
                f"{type(config).__name__}: `{option}={value!r}` is not implemented (only {supported!r}, as in the "
                f"released {released} checkpoints)."
            )


class ReleasedConfigMixin:
    """
    What both families' configs check beyond field types: a loaded config file must state every key in
    `architecture_keys` (otherwise the constructor's defaults, which describe a released model, would silently replace
    the checkpoint's sizes), and special-token ids must lie in the vocabulary. The released tokenizer's ids in
    `default_token_ids` fill unset ids only where they fit `vocab_size`.
    """

    architecture_keys: tuple[str, ...] = ()
    default_token_ids: dict[str, int] = {}

    def __post_init__(self, **kwargs):
        for name, default in self.default_token_ids.items():
            if getattr(self, name) is None and default < self.vocab_size:
                setattr(self, name, default)
        super().__post_init__(**kwargs)

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs):
        """Loads a saved config; a file of this model type that lacks an architecture key is refused, and keyword
        overrides are validated as constructor arguments are."""
        if config_dict.get("model_type") == cls.model_type:
            missing = [key for key in cls.architecture_keys if key not in config_dict]
            if missing:
                raise ConfigValueError(
                    f"This {cls.model_type!r} config is missing the architecture key(s) {missing}: the defaults would "
                    "build another model than the checkpoint's, so they must be stated explicitly."
                )
        loaded = super().from_dict(config_dict, **kwargs)
        # Keyword overrides (`from_pretrained(..., attention_dropout=0.1)`) are set after construction, past the
        # class validators: run them again.
        (loaded[0] if isinstance(loaded, tuple) else loaded).validate()
        return loaded

    def validate_training(self):
        """`confidence_loss_weight`, the λ of confidence-aware parallel training, is a finite number >= 0."""
        checked_confidence_loss_weight(self.confidence_loss_weight)

    def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs):
        """As [`~PreTrainedConfig.save_pretrained`], plus an `auto_map` (unless it has one) and the
        `trust_remote_code` entry points it names, written first so that a push uploads them too."""
        if not getattr(self, "auto_map", None):
            add_remote_code_auto_map(self)
        write_remote_code_files(self.model_type, save_directory)
        super().save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)

    def validate_token_ids(self):
        """Part of `@strict`-powered validation: every special-token id set is a token of the vocabulary."""
        for name in ("mask_token_id", "bos_token_id", "eos_token_id", "pad_token_id"):
            value = getattr(self, name)
            token_ids = value if isinstance(value, list) else [value]
            if any(token_id is not None and not 0 <= token_id < self.vocab_size for token_id in token_ids):
                raise ValueError(
                    f"`{name}` must be None or a token id in [0, vocab_size={self.vocab_size}), got {value!r}."
                )


class RopeParameter:
    """
    A RoPE parameter that the released `config.json` stores at the top level (`rope_theta`, `partial_rotary_factor`)
    and transformers 5.x in `config.rope_parameters`. It reads and writes `config.rope_parameters`, so an edit made
    through either name is seen by the other, by the saved file and by models built afterwards.
    """

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, config, owner: type | None = None):
        if config is None:
            return self
        rope_parameters = config.plain_rope_parameters()
        if self.name not in rope_parameters:
            raise AttributeError(f"{type(config).__name__}.rope_parameters has no {self.name!r}.")
        return rope_parameters[self.name]

    def __set__(self, config, value) -> None:
        if config.rope_parameters is None:
            config.rope_parameters = {}
        config.rope_parameters[self.name] = value


class ReleasedRopeMixin:
    """
    Plain RoPE (`rope_type="default"`) whose parameters the released files keep as top-level keys (listed in
    `released_rope_keys`, each a `RopeParameter`). `rope_parameters` is the one place they are stored: edits of it,
    in place or by assigning a new dict, reach the saved file's released keys and the models built from the config;
    any other `rope_type` is refused.
    """

    released_rope_keys = ("rope_theta",)
    rope_theta = RopeParameter()

    def plain_rope_parameters(self) -> dict[str, Any]:
        """`rope_parameters`, after checking that they describe plain RoPE (the only kind implemented)."""
        rope_parameters = self.rope_parameters or {}
        rope_type = rope_parameters.get("rope_type", rope_parameters.get("type", "default"))
        if rope_type != "default":
            raise ValueError(
                f"{type(self).__name__}: rope_type={rope_type!r} (from `rope_scaling`/`rope_parameters`) is not "
                "implemented; the released checkpoints use plain RoPE."
            )
        return rope_parameters

    def validate_rope(self) -> None:
        """Part of `@strict`-powered validation: plain RoPE with every released key set to a positive number."""
        rope_parameters = self.plain_rope_parameters()
        for key in self.released_rope_keys:
            value = rope_parameters.get(key)
            if not isinstance(value, Real) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"`rope_parameters[{key!r}]` must be a positive number, got {value!r}.")
        super().validate_rope()

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        # The released files carry the RoPE parameters as top-level keys and no `rope_parameters`.
        rope_parameters = output.pop("rope_parameters", None) or {}
        output.update({key: rope_parameters.get(key) for key in self.released_rope_keys})
        return output
