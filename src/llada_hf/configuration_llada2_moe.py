"""LLaDA2.0 MoE configuration (inclusionAI/LLaDA2.0-mini, LLaDA2.0-flash)."""

from typing import Any

from transformers import PreTrainedConfig


# Default special tokens of the released tokenizer; used only when they fit the vocabulary.
DEFAULT_EOS_TOKEN_ID = 156892
DEFAULT_MASK_TOKEN_ID = 156895

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


class LLaDA2MoeConfig(PreTrainedConfig):
    r"""
    Configuration of a LLaDA2.0 masked-diffusion mixture-of-experts model (Bailing-MoE-v2 architecture). It reads and
    writes the released `config.json` unchanged; defaults describe LLaDA2.0-mini.

    Attention is GQA with a fused `query_key_value` projection, RMSNorm on queries and keys and RoPE on the first
    `head_dim * partial_rotary_factor` channels. The first `first_k_dense_replace` layers use a dense SwiGLU MLP, the
    others a sigmoid-routed MoE: `num_experts` experts in `n_group` groups, of which each token keeps `topk_group`
    groups and then `num_experts_per_tok` experts (selected with `expert_bias`, weighted without it, normalised and
    scaled by `routed_scaling_factor`), plus `num_shared_experts` always-on experts.

    `embedding_dropout` and `output_dropout` are kept for the released format; like the released code, the model only
    applies `attention_dropout`. `mask_token_id`/`eos_token_id`/`pad_token_id` default to the released tokenizer's
    ids (156895 / 156892 / 156892) when those fit in `vocab_size`, and to `None` otherwise.

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

    # Architecture (LLaDA2.0-mini values)
    vocab_size: int = 157184
    hidden_size: int = 2048
    intermediate_size: int = 5120
    num_hidden_layers: int = 20
    num_attention_heads: int = 16
    num_key_value_heads: int = 4
    head_dim: int | None = 128
    hidden_act: str = "silu"
    rms_norm_eps: float = 1e-6
    use_qkv_bias: bool = False
    use_bias: bool = False
    use_qk_norm: bool = True
    use_rmsnorm: bool = True
    norm_head: bool = False
    tie_word_embeddings: bool = False
    max_position_embeddings: int = 32768
    rope_theta: float = 600000.0
    partial_rotary_factor: float = 0.5
    rotary_dim: int | None = None
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
    routed_scaling_factor: float = 2.5
    norm_topk_prob: bool = True
    moe_router_enable_expert_bias: bool = True
    score_function: str = "sigmoid"
    router_dtype: str = "fp32"
    output_router_logits: bool = False

    # Regularisation and initialisation (the released checkpoints use no dropout)
    embedding_dropout: float = 0.0
    attention_dropout: float = 0.0
    output_dropout: float = 0.0
    initializer_range: float = 0.02

    # Tokens and runtime
    mask_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None
    use_cache: bool = False

    def __post_init__(self, **kwargs):
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.rotary_dim is None:
            self.rotary_dim = int(self.head_dim * self.partial_rotary_factor)
        for name, default in (
            ("mask_token_id", DEFAULT_MASK_TOKEN_ID),
            ("eos_token_id", DEFAULT_EOS_TOKEN_ID),
            ("pad_token_id", DEFAULT_EOS_TOKEN_ID),
        ):
            if getattr(self, name) is None and default < self.vocab_size:
                setattr(self, name, default)
        super().__post_init__(**kwargs)
        self._reject_unsupported()

    def _reject_unsupported(self) -> None:
        for option, supported in _SUPPORTED_VALUES:
            value = getattr(self, option)
            if value != supported:
                raise ValueError(
                    f"LLaDA2MoeConfig: `{option}={value!r}` is not implemented (only {supported!r}, as in the "
                    "released LLaDA2.0 checkpoints)."
                )
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
            if not 1 <= self.topk_group <= self.n_group:
                raise ValueError(f"`topk_group` ({self.topk_group}) must be between 1 and `n_group` ({self.n_group}).")
            experts_per_group = self.num_experts // self.n_group
            if experts_per_group < 2:
                raise ValueError("Group-limited routing scores each group by its top-2 experts: use >= 2 per group.")
            if self.num_experts_per_tok > self.topk_group * experts_per_group:
                raise ValueError(
                    f"`num_experts_per_tok` ({self.num_experts_per_tok}) exceeds the experts left after group "
                    f"selection ({self.topk_group} groups x {experts_per_group})."
                )

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        # The released config carries `rope_scaling` (always null for the supported RoPE); `rope_parameters` is
        # derived from `rope_theta`/`partial_rotary_factor`, which are written as they are.
        output["rope_scaling"] = None
        output.pop("rope_parameters", None)
        output.pop("ignore_keys_at_rope_validation", None)
        return output

    @property
    def rope_parameters(self) -> dict[str, Any]:
        return {
            "rope_type": "default",
            "rope_theta": self.rope_theta,
            "partial_rotary_factor": self.partial_rotary_factor,
        }

    @rope_parameters.setter
    def rope_parameters(self, value: dict[str, Any] | None) -> None:
        if not value:
            return
        rope_type = value.get("rope_type", value.get("type", "default"))
        if rope_type != "default":
            raise ValueError(
                f"LLaDA2MoeConfig: rope_type={rope_type!r} (from `rope_scaling`/`rope_parameters`) is not "
                "implemented; the released LLaDA2.0 checkpoints use plain RoPE (`rope_scaling: null`)."
            )
        self.rope_theta = value.get("rope_theta", self.rope_theta)
        self.partial_rotary_factor = value.get("partial_rotary_factor", self.partial_rotary_factor)


__all__ = ["LLaDA2MoeConfig"]
