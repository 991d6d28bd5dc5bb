"""LLaDA2.0 MoE configuration (inclusionAI/LLaDA2.0-mini, LLaDA2.0-flash)."""

from numbers import Real
from typing import Any

from transformers import PreTrainedConfig
from transformers.modeling_rope_utils import RopeParameters

from .configuration_utils import (
    ReleasedConfigMixin,
    ReleasedRopeMixin,
    RopeParameter,
    check_dropout,
    check_non_negative,
    check_positive,
    check_supported,
    strict_config,
)


# (option, the only value implemented here). The released modeling code either ignores these options or computes
# something the released checkpoints never use; any other value is refused instead of being silently dropped.
_SUPPORTED_VALUES = (
    ("score_function", "sigmoid"),
    ("router_dtype", "fp32"),
    ("use_qkv_bias", False),
    ("use_bias", False),
    ("use_qk_norm", True),
    ("use_rmsnorm", True),
    ("norm_head", False),
    ("norm_topk_prob", True),
    ("use_sliding_window", False),
)


@strict_config
class LLaDA2MoeConfig(ReleasedRopeMixin, ReleasedConfigMixin, PreTrainedConfig):
    r"""
    Configuration of a LLaDA2.0 masked-diffusion mixture-of-experts model (Bailing-MoE-v2 architecture). It reads and
    writes the released `config.json` unchanged; defaults describe LLaDA2.0-mini.

    Attention is GQA with a fused `query_key_value` projection, RMSNorm on queries and keys and RoPE on the first
    `head_dim * partial_rotary_factor` channels. The first `first_k_dense_replace` layers use a dense SwiGLU MLP, the
    others a sigmoid-routed MoE: `num_experts` experts in `n_group` groups, of which each token keeps `topk_group`
    groups and then `num_experts_per_tok` experts (selected with `expert_bias`, weighted without it, normalised and
    scaled by `routed_scaling_factor`), plus `num_shared_experts` always-on experts.

    Fields are validated like transformers' own configs (`@strict`): a wrong type raises a `TypeError`, an invalid
    value or combination (a size that is not positive, `topk_group > n_group`, more experts per token than the
    selected groups hold, ...) a `ValueError`, both naming the field.

    `rope_theta` and `partial_rotary_factor` live in `rope_parameters` (transformers 5.x) and are saved as the
    released top-level keys, with `rotary_dim = head_dim * partial_rotary_factor`; editing either name is the same
    edit. The released config states no `bos_token_id`, so it defaults to `None`.

    `embedding_dropout` and `output_dropout` are kept for the released format; like the released code, the model only
    applies `attention_dropout`. `mask_token_id`/`eos_token_id`/`pad_token_id` default to the released tokenizer's
    ids (156895 / 156892 / 156892) when those fit in `vocab_size`, and to `None` otherwise; an id outside the
    vocabulary raises a `ValueError`. A loaded `config.json` must state every key of `architecture_keys`, so that a
    file of another architecture never silently becomes a model of LLaDA2.0-mini's size.

    Example:

    ```python
    >>> from llada_hf import LLaDA2MoeConfig, LLaDA2MoeModelLM
    >>> config = LLaDA2MoeConfig(
    ...     vocab_size=512, hidden_size=64, intermediate_size=128, moe_intermediate_size=32, num_hidden_layers=2,
    ...     num_attention_heads=4, num_key_value_heads=2, head_dim=16, num_experts=8, num_experts_per_tok=2,
    ...     n_group=4, topk_group=2, mask_token_id=511, eos_token_id=510, pad_token_id=510,
    ... )
    >>> model = LLaDA2MoeModelLM(config)
    ```
    """

    model_type = "llada2_moe"
    keys_to_ignore_at_inference = ["cache"]
    # The fused q/k/v output is split by head groups, so it is gathered before the split (as for Phi-3's `qkv_proj`).
    base_model_tp_plan = {
        "layers.*.attention.query_key_value": "colwise_gather_output",
        "layers.*.attention.dense": "rowwise_split_input",
        "layers.*.mlp.experts.gate_up_proj": "packed_colwise",
        "layers.*.mlp.experts.down_proj": "rowwise",
        "layers.*.mlp.experts": "moe_tp_experts",
        "layers.*.mlp.shared_experts.gate_proj": "colwise",
        "layers.*.mlp.shared_experts.up_proj": "colwise",
        "layers.*.mlp.shared_experts.down_proj": "rowwise",
        "layers.*.mlp.gate_proj": "colwise",
        "layers.*.mlp.up_proj": "colwise",
        "layers.*.mlp.down_proj": "rowwise",
    }
    base_model_ep_plan = {
        "layers.*.mlp.experts.gate_up_proj": "grouped_gemm",
        "layers.*.mlp.experts.down_proj": "grouped_gemm",
        "layers.*.mlp.experts": "ep_dispatch_experts",
    }
    base_model_fsdp_plan = {
        "word_embeddings": "free_full_weight",
        "layers.*": "free_full_weight",
        "norm": "keep_full_weight",
    }
    base_model_pp_plan = {
        "word_embeddings": (["input_ids"], ["inputs_embeds"]),
        "layers": (["hidden_states", "attention_mask"], ["hidden_states"]),
        "norm": (["hidden_states"], ["hidden_states"]),
    }

    default_theta = 600000.0
    architecture_keys = (
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "num_experts",
        "num_shared_experts",
        "num_experts_per_tok",
        "n_group",
        "topk_group",
        "moe_intermediate_size",
        "first_k_dense_replace",
        "rope_theta",
        "partial_rotary_factor",
        "tie_word_embeddings",
    )
    default_token_ids = {"mask_token_id": 156895, "eos_token_id": 156892, "pad_token_id": 156892}
    released_rope_keys = ("rope_theta", "partial_rotary_factor")
    partial_rotary_factor = RopeParameter()

    # Architecture (LLaDA2.0-mini values)
    vocab_size: int = 157184
    hidden_size: int = 2048
    intermediate_size: int = 5120
    num_hidden_layers: int = 20
    num_attention_heads: int = 16
    num_key_value_heads: int = 4
    head_dim: int | None = 128
    hidden_act: str = "silu"
    rms_norm_eps: float | int = 1e-6
    use_qkv_bias: bool = False
    use_bias: bool = False
    use_qk_norm: bool = True
    use_rmsnorm: bool = True
    norm_head: bool = False
    tie_word_embeddings: bool = False
    max_position_embeddings: int = 32768
    rope_parameters: RopeParameters | dict | None = None
    use_sliding_window: bool = False
    sliding_window: int = 4096
    max_window_layers: int = 28

    # Mixture of experts
    num_experts: int | None = 256
    num_shared_experts: int | None = 1
    num_experts_per_tok: int = 8
    n_group: int = 8
    topk_group: int = 4
    moe_intermediate_size: int = 512
    first_k_dense_replace: int = 1
    routed_scaling_factor: float | int = 2.5
    norm_topk_prob: bool = True
    moe_router_enable_expert_bias: bool = True
    score_function: str = "sigmoid"
    router_dtype: str = "fp32"
    output_router_logits: bool = False

    # Regularisation and initialisation (the released checkpoints use no dropout)
    embedding_dropout: float | int = 0.0
    attention_dropout: float | int = 0.0
    output_dropout: float | int = 0.0
    initializer_range: float | int = 0.02

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
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        kwargs.setdefault("partial_rotary_factor", 0.5)
        # Derived from `head_dim * partial_rotary_factor`; a stored value must agree with it.
        rotary_dim = kwargs.pop("rotary_dim", None)
        super().__post_init__(**kwargs)
        if rotary_dim is not None and rotary_dim != self.rotary_dim:
            raise ValueError(
                f"`rotary_dim` ({rotary_dim}) must equal `head_dim * partial_rotary_factor` "
                f"({self.head_dim} * {self.partial_rotary_factor} = {self.rotary_dim})."
            )

    @property
    def rotary_dim(self) -> int | None:
        """Channels of each head that RoPE rotates (the first ones); `None` while `partial_rotary_factor` is unset."""
        factor = (self.rope_parameters or {}).get("partial_rotary_factor")
        return int(self.head_dim * factor) if isinstance(factor, Real) else None

    def validate_architecture(self):
        """Part of `@strict`-powered validation: sizes, head counts, expert routing and probabilities."""
        check_positive(
            self,
            (
                "vocab_size",
                "hidden_size",
                "intermediate_size",
                "num_hidden_layers",
                "num_attention_heads",
                "num_key_value_heads",
                "head_dim",
                "max_position_embeddings",
                "sliding_window",
                "num_experts",
                "num_experts_per_tok",
                "n_group",
                "topk_group",
                "moe_intermediate_size",
                "routed_scaling_factor",
                "rms_norm_eps",
                "initializer_range",
            ),
        )
        check_non_negative(self, ("first_k_dense_replace", "num_shared_experts"))
        check_dropout(self, ("embedding_dropout", "attention_dropout", "output_dropout"))
        if self.num_attention_heads % self.num_key_value_heads != 0:
            raise ValueError(
                f"`num_attention_heads` ({self.num_attention_heads}) must be a multiple of `num_key_value_heads` "
                f"({self.num_key_value_heads})."
            )
        if self.num_experts:
            if self.num_experts % self.n_group != 0:
                raise ValueError(
                    f"`num_experts` ({self.num_experts}) must be a multiple of `n_group` ({self.n_group})."
                )
            if self.topk_group > self.n_group:
                raise ValueError(f"`topk_group` ({self.topk_group}) must be at most `n_group` ({self.n_group}).")
            experts_per_group = self.num_experts // self.n_group
            if experts_per_group < 2:
                raise ValueError(
                    f"Group-limited routing scores each group by its top-2 experts: `num_experts / n_group` "
                    f"({experts_per_group}) must be >= 2."
                )
            if self.num_experts_per_tok > self.topk_group * experts_per_group:
                raise ValueError(
                    f"`num_experts_per_tok` ({self.num_experts_per_tok}) exceeds the experts left after group "
                    f"selection (`topk_group` {self.topk_group} x {experts_per_group} experts per group)."
                )
        super().validate_architecture()

    def validate_rope(self):
        """Part of `@strict`-powered validation: plain RoPE over an even number of channels of each head."""
        super().validate_rope()
        if not 0 < self.partial_rotary_factor <= 1 or self.rotary_dim == 0 or self.rotary_dim % 2 != 0:
            raise ValueError(
                f"`partial_rotary_factor` ({self.partial_rotary_factor}) must be in (0, 1] and rotate an even, "
                f"non-zero number of channels (`head_dim * partial_rotary_factor` = {self.rotary_dim})."
            )

    def validate_supported_options(self):
        """Part of `@strict`-powered validation: options the released checkpoints do not use are refused."""
        check_supported(self, _SUPPORTED_VALUES, "LLaDA2.0")

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        # The released config carries `rope_scaling` (always null for the supported RoPE) and `rotary_dim`.
        output["rope_scaling"] = None
        output["rotary_dim"] = self.rotary_dim
        return output


__all__ = ["LLaDA2MoeConfig"]
