"""PyTorch LLaDA2.0 MoE: a Bailing-MoE-v2 transformer with bidirectional (or block-causal) attention, trained as a
masked-diffusion LM.

Module names are the released ones (`model.word_embeddings`, `layers.{i}.attention.query_key_value`, ...), except
that the routed experts are stored fused (`mlp.experts.gate_up_proj` `[E, 2I, H]`, `mlp.experts.down_proj`
`[E, H, I]`) so that the transformers experts kernels (`eager`, `batched_mm`, `grouped_mm`) can run them.
`CHECKPOINT_CONVERSION_MAPPING` merges the released per-expert tensors at load and splits them back at save, so
files written here still load with the released remote code.

Numerics follow the released code: RMSNorm in float32, router in float32, expert outputs weighted and summed in the
router's float32, eager softmax in float32, logits returned in float32.
"""

import dataclasses
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache
from transformers.core_model_loading import Concatenate, MergeModulelist, WeightConverter
from transformers.integrations.moe import ExpertsInterface, grouped_mm_experts_forward, use_experts_implementation
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils.deprecation import deprecate_kwarg
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

from .configuration_llada2_moe import LLaDA2MoeConfig
from .generation.utils import DiffusionGenerationMixin
from .integrations.quantization import LLaDA2MoeLinearExperts, is_bitsandbytes_quantized
from .modeling_diffusion_utils import (
    DiffusionLMHeadMixin,
    DiffusionModelOutput,
    DiffusionPreTrainedModel,
    DiffusionRMSNorm,
    DiffusionRotaryEmbedding,
    apply_rotary_pos_emb,
    check_model_inputs,
    default_position_ids,
    eager_attention_forward,
    prepare_attention_mask,
)


# Released per-expert tensors <-> fused expert tensors (gate rows first, then up rows). Reversed on save.
CHECKPOINT_CONVERSION_MAPPING = [
    WeightConverter(
        source_patterns=["mlp.experts.*.gate_proj.weight", "mlp.experts.*.up_proj.weight"],
        target_patterns="mlp.experts.gate_up_proj",
        operations=[MergeModulelist(dim=0), Concatenate(dim=1)],
    ),
    WeightConverter(
        source_patterns="mlp.experts.*.down_proj.weight",
        target_patterns="mlp.experts.down_proj",
        operations=[MergeModulelist(dim=0)],
    ),
]
_FUSED_EXPERTS_TARGETS = {converter.target_patterns[0] for converter in CHECKPOINT_CONVERSION_MAPPING}

# The router (and so the routing weights) always runs in float32 (`router_dtype: "fp32"`).
ROUTER_DTYPE = torch.float32
# Dtypes torch's grouped GEMM implements; others (float64) take the per-expert loop.
_GROUPED_MM_DTYPES = (torch.bfloat16, torch.float16, torch.float32)


class LLaDA2MoeAttention(nn.Module):
    """GQA without a causal mask: fused `query_key_value` (all query heads, then key, then value heads), RMSNorm on
    queries and keys, RoPE on the first `head_dim * partial_rotary_factor` channels of each head."""

    def __init__(self, config: LLaDA2MoeConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = config.head_dim
        self.num_heads = config.num_attention_heads
        self.num_key_value_heads = config.num_key_value_heads
        self.num_key_value_groups = self.num_heads // self.num_key_value_heads
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_dropout
        self.is_causal = False
        self.softmax_dtype = torch.float32  # the released eager attention upcasts the softmax

        self.query_key_value = nn.Linear(
            config.hidden_size, (self.num_heads + 2 * self.num_key_value_heads) * self.head_dim, bias=False
        )
        self.query_layernorm = DiffusionRMSNorm(self.head_dim, eps=config.rms_norm_eps)
        self.key_layernorm = DiffusionRMSNorm(self.head_dim, eps=config.rms_norm_eps)
        self.dense = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=False)

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None,
        cache: Cache | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        input_shape = hidden_states.shape[:-1]
        qkv = self.query_key_value(hidden_states).view(*input_shape, -1, self.head_dim).transpose(1, 2)
        query_states, key_states, value_states = qkv.split(
            [self.num_heads, self.num_key_value_heads, self.num_key_value_heads], dim=1
        )
        query_states = self.query_layernorm(query_states)
        key_states = self.key_layernorm(key_states)

        cos, sin = position_embeddings
        query_states, key_states = apply_rotary_pos_emb(query_states, key_states, cos, sin, rotate_in_float32=False)

        if cache is not None:
            key_states, value_states = cache.update(key_states, value_states, self.layer_idx)

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        attn_output, attn_weights = attention_interface(
            self,
            query_states,
            key_states,
            value_states,
            attention_mask,
            dropout=0.0 if not self.training else self.attention_dropout,
            scaling=self.scaling,
            is_causal=False,
            **kwargs,
        )
        attn_output = attn_output.reshape(*input_shape, -1).contiguous()
        return self.dense(attn_output), attn_weights


class LLaDA2MoeMLP(nn.Module):
    """SwiGLU feed-forward: `down(act(gate(x)) * up(x))` (dense layers and shared experts)."""

    def __init__(self, config: LLaDA2MoeConfig, intermediate_size: int):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, config.hidden_size, bias=False)
        self.act_fn = ACT2FN[config.hidden_act]

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(hidden_states)) * self.up_proj(hidden_states))


class LLaDA2MoeGate(nn.Module):
    """Sigmoid router with group-limited top-k selection.

    Experts are *selected* on `sigmoid(logits) + expert_bias`: each group of experts is scored by the sum of its two
    best experts, the `topk_group` best groups are kept and the top `num_experts_per_tok` experts chosen among them.
    The routing *weights* are the unbiased sigmoid scores of the chosen experts, normalised to sum to one and scaled
    by `routed_scaling_factor`. Everything runs in float32, whatever the model dtype.
    """

    def __init__(self, config: LLaDA2MoeConfig):
        super().__init__()
        self.top_k = config.num_experts_per_tok
        self.num_experts = config.num_experts
        self.n_group = config.n_group
        self.topk_group = config.topk_group
        self.routed_scaling_factor = config.routed_scaling_factor
        self.weight = nn.Parameter(torch.empty(config.num_experts, config.hidden_size))
        # Load-balancing bias, adjusted outside autograd during training; only shifts which experts are selected.
        self.register_buffer("expert_bias", torch.zeros(config.num_experts))

    def _apply(self, fn, recurse=True):
        # As `_keep_in_fp32_modules_strict` does at load, a cast of the model to 16 bits (`.to(torch.bfloat16)`,
        # `.half()`) leaves the router in float32: it only moves it. Other casts (e.g. to float64) apply as usual.
        weight, expert_bias = self.weight.data, self.expert_bias
        super()._apply(fn, recurse)
        if self.weight.dtype in (torch.float16, torch.bfloat16) and self.weight.dtype != weight.dtype:
            self.weight.data = weight.to(self.weight.device, ROUTER_DTYPE)
            self.expert_bias = expert_bias.to(self.expert_bias.device, ROUTER_DTYPE)
        return self

    def group_limited_topk(self, scores: torch.Tensor) -> torch.Tensor:
        """Indices `[tokens, top_k]` of the selected experts, best first."""
        num_tokens = scores.shape[0]
        group_scores = scores.view(num_tokens, self.n_group, -1).topk(2, dim=-1)[0].sum(dim=-1)
        group_idx = torch.topk(group_scores, k=self.topk_group, dim=-1, sorted=False)[1]
        group_mask = torch.zeros_like(group_scores).scatter_(1, group_idx, 1)
        score_mask = (
            group_mask.unsqueeze(-1)
            .expand(num_tokens, self.n_group, self.num_experts // self.n_group)
            .reshape(num_tokens, -1)
        )
        masked_scores = scores.masked_fill(~score_mask.bool(), float("-inf"))
        return torch.topk(masked_scores, k=self.top_k, dim=-1)[1]

    def forward(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`hidden_states` `[tokens, hidden]` -> `(router_logits [tokens, E], weights [tokens, k], indices)`."""
        router_logits = F.linear(hidden_states.to(ROUTER_DTYPE), self.weight.to(ROUTER_DTYPE))
        scores = torch.sigmoid(router_logits)
        topk_indices = self.group_limited_topk(scores + self.expert_bias)
        topk_weights = scores.gather(1, topk_indices)
        if self.top_k > 1:
            topk_weights = topk_weights / (topk_weights.sum(dim=-1, keepdim=True) + 1e-20)
        return router_logits, topk_weights * self.routed_scaling_factor, topk_indices


class LLaDA2MoeExpertOutputCast(nn.Module):
    """Casts each expert's output to the router dtype before it is weighted, as the released code combines experts.

    Installed as the experts interface's `post_expert_norm` hook so that every experts implementation (`eager`,
    `batched_mm`, `grouped_mm`) weights and sums in the same dtype. It only changes float64 runs: lower-precision
    outputs are promoted to float32 by the weighting anyway.
    """

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states.to(ROUTER_DTYPE)


def _experts_loop_forward(
    experts: nn.Module, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor
) -> torch.Tensor:
    """Sorts the (token, slot) pairs by expert and runs each expert that received tokens once on all of them, then
    weights the outputs in the router dtype and sums each token's `top_k` slots, as the released `moe_infer` does."""
    num_tokens, top_k = top_k_index.shape
    expert_ids = top_k_index.reshape(-1)
    order = expert_ids.argsort()
    sorted_states = hidden_states[order // top_k]
    tokens_per_expert = torch.bincount(expert_ids, minlength=experts.num_experts)[: experts.num_experts].tolist()

    chunks = []
    start = 0
    for expert_idx, count in enumerate(tokens_per_expert):
        if count:
            gate_up = F.linear(sorted_states[start : start + count], experts.gate_up_proj[expert_idx])
            chunks.append(F.linear(experts._apply_gate(gate_up), experts.down_proj[expert_idx]))
        start += count
    # Under expert parallelism, ids >= num_experts belong to other ranks: they sort last and contribute nothing.
    chunks.append(hidden_states.new_zeros(expert_ids.shape[0] - start, experts.hidden_dim))
    sorted_outputs = torch.cat(chunks)
    expert_outputs = torch.empty_like(sorted_outputs).index_copy(0, order, sorted_outputs)  # undo the sort

    weighted = experts.post_expert_norm(expert_outputs) * top_k_weights.reshape(-1, 1)
    return weighted.view(num_tokens, top_k, -1).sum(dim=1).to(hidden_states.dtype)


def _grouped_mm_or_loop_experts_forward(experts, hidden_states, top_k_index, top_k_weights):
    """`grouped_mm` where torch's grouped GEMM has a kernel for the dtype; the per-expert loop otherwise (float64)."""
    if hidden_states.dtype in _GROUPED_MM_DTYPES:
        return grouped_mm_experts_forward(experts, hidden_states, top_k_index, top_k_weights)
    return _experts_loop_forward(experts, hidden_states, top_k_index, top_k_weights)


LLADA2_EXPERTS_FUNCTIONS = ExpertsInterface()
LLADA2_EXPERTS_FUNCTIONS["grouped_mm"] = _grouped_mm_or_loop_experts_forward


@use_experts_implementation(experts_interface=LLADA2_EXPERTS_FUNCTIONS, has_post_expert_norm=True)
class LLaDA2MoeExperts(nn.Module):
    """The routed experts, stored fused: `gate_up_proj` `[E, 2I, H]` (gate rows, then up rows), `down_proj`
    `[E, H, I]`.

    The kernel is chosen by `config._experts_implementation` (`experts_implementation=` at load, or
    `model.set_experts_implementation`): `grouped_mm` by default (the per-expert loop in float64, which torch's
    grouped GEMM lacks), `batched_mm`, or `eager`. All of them weight and sum the expert outputs as the released code
    does (see `LLaDA2MoeExpertOutputCast`), so each reproduces the released float64 forward.
    """

    def __init__(self, config: LLaDA2MoeConfig):
        super().__init__()
        self.num_experts = config.num_experts
        self.hidden_dim = config.hidden_size
        self.intermediate_dim = config.moe_intermediate_size
        self.gate_up_proj = nn.Parameter(torch.empty(self.num_experts, 2 * self.intermediate_dim, self.hidden_dim))
        self.down_proj = nn.Parameter(torch.empty(self.num_experts, self.hidden_dim, self.intermediate_dim))
        self.act_fn = ACT2FN[config.hidden_act]
        self.post_expert_norm = LLaDA2MoeExpertOutputCast()

    def forward(
        self, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor
    ) -> torch.Tensor:
        """`eager`: the released algorithm, one matmul per expert that received tokens."""
        return _experts_loop_forward(self, hidden_states, top_k_index, top_k_weights)


class LLaDA2MoeSparseMoeBlock(nn.Module):
    """Routed experts plus always-on shared experts. Under bitsandbytes the routed experts are per-expert linear
    layers (`LLaDA2MoeLinearExperts`) so that they get quantized; otherwise they are fused."""

    def __init__(self, config: LLaDA2MoeConfig):
        super().__init__()
        self.gate = LLaDA2MoeGate(config)
        if is_bitsandbytes_quantized(config):
            self.experts = LLaDA2MoeLinearExperts(config, LLaDA2MoeMLP)
        else:
            self.experts = LLaDA2MoeExperts(config)
        self.shared_experts = (
            LLaDA2MoeMLP(config, config.moe_intermediate_size * config.num_shared_experts)
            if config.num_shared_experts
            else None
        )

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        flat_states = hidden_states.reshape(-1, hidden_states.shape[-1])
        _, topk_weights, topk_indices = self.gate(flat_states)
        output = self.experts(flat_states, topk_indices, topk_weights).view_as(hidden_states)
        if self.shared_experts is not None:
            output = output + self.shared_experts(hidden_states)
        return output


class LLaDA2MoeDecoderLayer(GradientCheckpointingLayer):
    def __init__(self, config: LLaDA2MoeConfig, layer_idx: int):
        super().__init__()
        self.input_layernorm = DiffusionRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.attention = LLaDA2MoeAttention(config, layer_idx)
        self.post_attention_layernorm = DiffusionRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        is_sparse = config.num_experts is not None and layer_idx >= config.first_k_dense_replace
        self.mlp = LLaDA2MoeSparseMoeBlock(config) if is_sparse else LLaDA2MoeMLP(config, config.intermediate_size)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: Cache | None = None,
        **kwargs,
    ) -> torch.Tensor:
        attn_output, _ = self.attention(
            self.input_layernorm(hidden_states),
            position_embeddings=position_embeddings,
            attention_mask=attention_mask,
            cache=cache,
            **kwargs,
        )
        hidden_states = hidden_states + attn_output
        return hidden_states + self.mlp(self.post_attention_layernorm(hidden_states))


class LLaDA2MoePreTrainedModel(DiffusionPreTrainedModel):
    config: LLaDA2MoeConfig
    config_class = LLaDA2MoeConfig
    _no_split_modules = ["LLaDA2MoeDecoderLayer"]
    _input_embed_layer = "word_embeddings"
    # The router runs in float32 (`router_dtype: "fp32"`): store it so, whatever the load dtype.
    _keep_in_fp32_modules_strict = ["gate.weight", "gate.expert_bias"]
    _can_record_outputs = {
        "hidden_states": LLaDA2MoeDecoderLayer,
        "attentions": LLaDA2MoeAttention,
        "router_logits": OutputRecorder(LLaDA2MoeGate, index=0),
    }

    @staticmethod
    def _load_pretrained_model(model, state_dict, checkpoint_files, load_config, *args, **kwargs):
        # Under bitsandbytes the routed experts keep the released per-expert layout (`LLaDA2MoeLinearExperts`), so the
        # expert-merging converters must not claim their keys: a saved 4-bit checkpoint's quantization state
        # (`...weight.absmax`, ...) would never reach bitsandbytes' deserializer.
        if is_bitsandbytes_quantized(model.config) and load_config.weight_mapping:
            weight_mapping = [
                transform
                for transform in load_config.weight_mapping
                if transform.target_patterns[0] not in _FUSED_EXPERTS_TARGETS
            ]
            load_config = dataclasses.replace(load_config, weight_mapping=weight_mapping)
        return DiffusionPreTrainedModel._load_pretrained_model(
            model, state_dict, checkpoint_files, load_config, *args, **kwargs
        )

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        std = self.config.initializer_range
        if isinstance(module, LLaDA2MoeExperts):
            init.normal_(module.gate_up_proj, mean=0.0, std=std)
            init.normal_(module.down_proj, mean=0.0, std=std)
        elif isinstance(module, LLaDA2MoeGate):
            init.normal_(module.weight, mean=0.0, std=std)
            init.zeros_(module.expert_bias)


class LLaDA2MoeModel(LLaDA2MoePreTrainedModel):
    """The LLaDA2.0 transformer without its output projection."""

    def __init__(self, config: LLaDA2MoeConfig):
        super().__init__(config)
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.layers = nn.ModuleList([LLaDA2MoeDecoderLayer(config, i) for i in range(config.num_hidden_layers)])
        self.norm = DiffusionRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        rotary_dim = int(config.head_dim * config.partial_rotary_factor)
        self.rotary_emb = DiffusionRotaryEmbedding(rotary_dim, config.rope_theta)
        self.gradient_checkpointing = False
        self.post_init()

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    @capture_outputs
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        use_cache: bool | None = None,
        **kwargs,
    ) -> DiffusionModelOutput:
        r"""
        attention_mask (`torch.Tensor`, *optional*):
            `None` (attend everywhere), a 2-D `[batch, seq]` 0/1 padding mask (pad keys are masked, pad queries still
            attend), or a 4-D `[batch, 1, q_len, kv_len]` bool (True = may attend) or additive float mask, e.g. the
            block-causal mask of block diffusion or a per-document mask. A 0/1 float 4-D mask is refused.
        cache (`Cache`, *optional*):
            Keys/values of positions encoded earlier; this forward's keys/values are added through `Cache.update`.
            Since earlier blocks never attend to later ones under a block-causal mask, a prefix cache is exact.
        """
        check_model_inputs(self.config, input_ids, inputs_embeds, attention_mask, position_ids, cache)
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        if position_ids is None:
            position_ids = default_position_ids(inputs_embeds, cache)

        attention_mask = prepare_attention_mask(self.config, inputs_embeds, attention_mask, cache)
        position_embeddings = self.rotary_emb(position_ids)

        hidden_states = inputs_embeds
        for decoder_layer in self.layers:
            hidden_states = decoder_layer(
                hidden_states,
                attention_mask=attention_mask,
                position_embeddings=position_embeddings,
                cache=cache,
                **kwargs,
            )
        return DiffusionModelOutput(last_hidden_state=self.norm(hidden_states), cache=cache)


class LLaDA2MoeModelLM(DiffusionLMHeadMixin, LLaDA2MoePreTrainedModel, DiffusionGenerationMixin):
    """LLaDA2.0 with its output projection. `generate()` is the block-diffusion sampler; logits are not shifted and
    are returned in float32, as by the released code."""

    _tied_weights_keys = {"lm_head.weight": "model.word_embeddings.weight"}
    _tp_plan = {"lm_head": "colwise_gather_output"}
    _pp_plan = {"lm_head": (["hidden_states"], ["logits"])}
    _fsdp_plan = {"lm_head": "keep_full_weight"}
    diffusion_family = "llada2"
    logits_in_float32 = True

    def __init__(self, config: LLaDA2MoeConfig):
        super().__init__(config)
        self.model = LLaDA2MoeModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()


__all__ = ["LLaDA2MoePreTrainedModel", "LLaDA2MoeModel", "LLaDA2MoeModelLM"]
