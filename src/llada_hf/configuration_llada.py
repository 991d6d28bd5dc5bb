"""LLaDA 1.x configuration (LLaDA-8B-Base, LLaDA-8B-Instruct, LLaDA-1.5)."""

from typing import Any

from transformers import PreTrainedConfig
from transformers.modeling_rope_utils import RopeParameters

from .configuration_utils import (
    ReleasedConfigMixin,
    ReleasedRopeMixin,
    check_dropout,
    check_positive,
    check_supported,
    strict_config,
)


# (option, value this implementation computes, what the released checkpoints use)
_SUPPORTED_VALUES = (
    ("alibi", False),
    ("rope", True),
    ("block_type", "llama"),
    ("layer_norm_type", "rms"),
    ("activation_type", "silu"),
    ("include_bias", False),
    ("include_qkv_bias", False),
    ("attention_layer_norm", False),
    ("input_emb_norm", False),
    ("scale_logits", False),
    ("block_group_size", 1),
    ("layer_norm_with_affine", True),
)


def _refuse_llada_moe(config_dict: dict[str, Any]) -> None:
    """LLaDA-MoE shares `model_type: "llada"` with LLaDA 1.x; its configs are refused by name."""
    architectures = config_dict.get("architectures") or []
    if any("moe" in name.lower() for name in architectures) or "moe_num_experts" in config_dict:
        raise ValueError(
            f"This config describes a LLaDA-MoE model (architectures={architectures}), which shares "
            "model_type 'llada' with LLaDA 1.x but is a different architecture; llada_hf does not support it yet."
        )


@strict_config
class LLaDAConfig(ReleasedRopeMixin, ReleasedConfigMixin, PreTrainedConfig):
    r"""
    Configuration of a LLaDA 1.x masked-diffusion model. It reads and writes the released `config.json` unchanged
    (OLMo-style names such as `d_model`, `n_layers`, `mlp_hidden_size`, `weight_tying`) and also answers to the
    standard transformers names (`hidden_size`, `num_hidden_layers`, `intermediate_size`, `tie_word_embeddings`,
    `rope_parameters`, ...). Defaults describe LLaDA-8B.

    Fields are validated like transformers' own configs (`@strict`): a wrong type raises a `TypeError`, an invalid
    value or combination (a size that is not positive, `n_heads` not dividing `d_model`, ...) a `ValueError`, both
    naming the field. Options the released code supports but the released checkpoints do not use (ALiBi, other block
    types or norms, biases, ...) raise a `ValueError` instead of silently computing something else.

    `rope_theta` lives in `rope_parameters` (transformers 5.x) and is saved as the released top-level key; editing
    either is the same edit. `mask_token_id`/`eos_token_id`/`pad_token_id` default to the released tokenizer's ids
    (126336 / 126081 / 126081) when those fit in `vocab_size`, and to `None` otherwise; an id outside the vocabulary
    raises a `ValueError`. The released config states no `bos_token_id` (the tokenizer's `<|startoftext|>`, 126080, is
    never prepended automatically), so it defaults to `None`.

    A loaded `config.json` must state every key of `architecture_keys`: the released config class falls back to
    OLMo's defaults (weight tying on, vocab 50257, rope_theta 10000, ...) for a missing one.

    Example:

    ```python
    >>> from llada_hf import LLaDAConfig, LLaDAModelLM
    >>> config = LLaDAConfig(d_model=256, n_heads=4, n_kv_heads=4, n_layers=2, mlp_hidden_size=512)
    >>> model = LLaDAModelLM(config)
    ```
    """

    model_type = "llada"
    keys_to_ignore_at_inference = ["cache"]
    attribute_map = {
        "hidden_size": "d_model",
        "num_attention_heads": "n_heads",
        "num_hidden_layers": "n_layers",
        "intermediate_size": "mlp_hidden_size",
        "max_position_embeddings": "max_sequence_length",
        "tie_word_embeddings": "weight_tying",
    }
    base_model_tp_plan = {
        "layers.*.self_attn.q_proj": "colwise",
        "layers.*.self_attn.k_proj": "colwise",
        "layers.*.self_attn.v_proj": "colwise",
        "layers.*.self_attn.o_proj": "rowwise",
        "layers.*.mlp.gate_proj": "colwise",
        "layers.*.mlp.up_proj": "colwise",
        "layers.*.mlp.down_proj": "rowwise",
    }
    base_model_pp_plan = {
        "embed_tokens": (["input_ids"], ["inputs_embeds"]),
        "layers": (["hidden_states", "attention_mask"], ["hidden_states"]),
        "norm": (["hidden_states"], ["hidden_states"]),
    }

    default_theta = 500000.0
    architecture_keys = (
        "d_model",
        "n_heads",
        "n_layers",
        "vocab_size",
        "embedding_size",
        "weight_tying",
        "rope_theta",
        "block_type",
        "layer_norm_type",
        "activation_type",
    )
    default_token_ids = {"mask_token_id": 126336, "eos_token_id": 126081, "pad_token_id": 126081}

    # Architecture (LLaDA-8B values)
    d_model: int = 4096
    n_heads: int = 32
    n_kv_heads: int | None = 32
    multi_query_attention: bool | None = None
    n_layers: int = 32
    mlp_hidden_size: int | None = 12288
    mlp_ratio: int = 4
    vocab_size: int = 126464
    embedding_size: int | None = 126464
    max_sequence_length: int = 4096
    weight_tying: bool = False
    rms_norm_eps: float | int = 1e-5
    rope_parameters: RopeParameters | dict | None = None
    rope_full_precision: bool = True
    activation_type: str = "silu"
    block_type: str = "llama"
    layer_norm_type: str = "rms"
    layer_norm_with_affine: bool = True
    bias_for_layer_norm: bool | None = None
    attention_layer_norm: bool = False
    attention_layer_norm_with_affine: bool = True
    include_bias: bool = False
    include_qkv_bias: bool = False
    alibi: bool = False
    alibi_bias_max: float | int = 8.0
    rope: bool = True
    input_emb_norm: bool = False
    scale_logits: bool = False
    block_group_size: int = 1
    clip_qkv: float | int | None = None
    flash_attention: bool = False

    # Regularisation (the released checkpoints were trained without dropout)
    attention_dropout: float | int = 0.0
    residual_dropout: float | int = 0.0
    embedding_dropout: float | int = 0.0

    # Initialisation (used by `_init_weights` for models built from scratch)
    init_std: float | int = 0.02
    init_fn: str = "mitchell"
    init_device: str | None = None
    init_cutoff_factor: float | int | None = None
    precision: str | None = None

    # Tokens and runtime
    mask_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None
    use_cache: bool = False

    # Training: λ of confidence-aware parallel (CAP) training, read by the forward (`llada_hf.training.loss`); with 0
    # the loss is the plain masked-diffusion loss.
    confidence_loss_weight: float | int = 0.0

    def __post_init__(self, **kwargs):
        _refuse_llada_moe({**kwargs, "architectures": self.architectures})
        if self.mlp_hidden_size is None:
            self.mlp_hidden_size = self.mlp_ratio * self.d_model
        super().__post_init__(**kwargs)

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs):
        # Before the check of the architecture keys, which a LLaDA-MoE file lacks.
        _refuse_llada_moe(config_dict)
        return super().from_dict(config_dict, **kwargs)

    def validate_architecture(self):
        """Part of `@strict`-powered validation: sizes, head counts and probabilities."""
        check_positive(
            self,
            (
                "d_model",
                "n_heads",
                "n_kv_heads",
                "n_layers",
                "mlp_hidden_size",
                "mlp_ratio",
                "vocab_size",
                "embedding_size",
                "max_sequence_length",
                "rms_norm_eps",
                "init_std",
            ),
        )
        check_dropout(self, ("attention_dropout", "residual_dropout", "embedding_dropout"))
        if self.d_model % self.n_heads != 0:
            raise ValueError(f"`d_model` ({self.d_model}) must be a multiple of `n_heads` ({self.n_heads}).")
        if self.head_dim % 2 != 0:
            raise ValueError(f"RoPE rotates pairs of channels: `d_model / n_heads` ({self.head_dim}) must be even.")
        if self.n_heads % self.num_key_value_heads != 0:
            raise ValueError(
                f"`n_heads` ({self.n_heads}) must be a multiple of the number of key/value heads "
                f"(`n_kv_heads`: {self.num_key_value_heads})."
            )
        if self.embedding_size is not None and self.embedding_size < self.vocab_size:
            raise ValueError(
                f"`embedding_size` ({self.embedding_size}) pads `vocab_size` ({self.vocab_size}), so it cannot be "
                "smaller."
            )
        super().validate_architecture()

    def validate_supported_options(self):
        """Part of `@strict`-powered validation: options the released checkpoints do not use are refused."""
        check_supported(self, _SUPPORTED_VALUES, "LLaDA")
        if self.clip_qkv is not None:
            raise ValueError(f"LLaDAConfig: `clip_qkv={self.clip_qkv}` is not implemented (only None).")

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        # transformers < 4.56 (which the released remote code pins) reads the weights' dtype from `torch_dtype`.
        if output.get("dtype") is not None:
            output["torch_dtype"] = output["dtype"]
        return output

    # The released files carry `torch_dtype`, so reading it back (as `to_diff_dict` does) is not a deprecated use.
    @property
    def torch_dtype(self):
        return self.dtype

    @torch_dtype.setter
    def torch_dtype(self, value):
        self.dtype = value

    @property
    def num_key_value_heads(self) -> int:
        if self.multi_query_attention:
            return 1
        return self.n_kv_heads if self.n_kv_heads is not None else self.n_heads

    @num_key_value_heads.setter
    def num_key_value_heads(self, value: int) -> None:
        self.n_kv_heads = value
        self.multi_query_attention = None

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def padded_vocab_size(self) -> int:
        """Rows of the embedding / columns of the logits (`embedding_size`, which may pad `vocab_size`)."""
        return self.embedding_size or self.vocab_size


__all__ = ["LLaDAConfig"]
