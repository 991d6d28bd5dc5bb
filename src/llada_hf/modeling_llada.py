"""PyTorch LLaDA 1.x: a Llama-shaped transformer with bidirectional attention, trained as a masked-diffusion LM.

Module names follow transformers (`model.layers.{i}.self_attn.q_proj`, ...). Released checkpoints use OLMo names
(`model.transformer.blocks.{i}.q_proj`, ...); `CHECKPOINT_CONVERSION_MAPPING` renames them at load and back at save,
so files written here still load with the released remote code.
"""

from collections.abc import Callable

import torch
from torch import nn
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache
from transformers.core_model_loading import WeightRenaming
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils.deprecation import deprecate_kwarg
from transformers.utils.output_capturing import capture_outputs

from .configuration_llada import LLaDAConfig
from .generation.utils import DiffusionGenerationMixin
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


# Released key -> module name. Renamings chain in order at load and run backwards at save; every pattern is a
# plain string (regex `.` matches itself) so that the reversed mapping writes the released names exactly. Renaming
# an already converted name must change nothing (PEFT applies this mapping to adapters saved with module names):
# where the module name contains the released one, a lookbehind skips it (and is dropped from the reversed mapping).
CHECKPOINT_CONVERSION_MAPPING = [
    WeightRenaming("model.transformer.ff_out.", "lm_head."),
    WeightRenaming("model.transformer.wte.", "model.embed_tokens."),
    WeightRenaming("model.transformer.ln_f.", "model.norm."),
    WeightRenaming("model.transformer.blocks.", "model.layers."),
    WeightRenaming(".attn_norm.", ".input_layernorm."),
    WeightRenaming(".ff_norm.", ".post_attention_layernorm."),
    WeightRenaming("(?<!self_attn).q_proj.", ".self_attn.q_proj."),
    WeightRenaming("(?<!self_attn).k_proj.", ".self_attn.k_proj."),
    WeightRenaming("(?<!self_attn).v_proj.", ".self_attn.v_proj."),
    WeightRenaming(".attn_out.", ".self_attn.o_proj."),
    WeightRenaming(".ff_proj.", ".mlp.gate_proj."),
    WeightRenaming("(?<!mlp).up_proj.", ".mlp.up_proj."),
    WeightRenaming(".ff_out.", ".mlp.down_proj."),
]


class LLaDAAttention(nn.Module):
    """Multi-head attention without a causal mask; RoPE over the full head dimension."""

    def __init__(self, config: LLaDAConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = config.head_dim
        self.num_key_value_groups = config.n_heads // config.num_key_value_heads
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_dropout
        self.is_causal = False
        self.softmax_dtype = None  # the released model attends through SDPA in the activations' dtype
        self.rotate_in_float32 = config.rope_full_precision

        kv_size = config.num_key_value_heads * self.head_dim
        self.q_proj = nn.Linear(config.d_model, config.n_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(config.d_model, kv_size, bias=False)
        self.v_proj = nn.Linear(config.d_model, kv_size, bias=False)
        self.o_proj = nn.Linear(config.n_heads * self.head_dim, config.d_model, bias=False)

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None,
        cache: Cache | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)

        query_states = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        key_states = self.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        value_states = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)

        cos, sin = position_embeddings
        query_states, key_states = apply_rotary_pos_emb(query_states, key_states, cos, sin, self.rotate_in_float32)

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
        return self.o_proj(attn_output), attn_weights


class LLaDAMLP(nn.Module):
    """SwiGLU feed-forward: `down(silu(gate(x)) * up(x))`."""

    def __init__(self, config: LLaDAConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.d_model, config.mlp_hidden_size, bias=False)
        self.up_proj = nn.Linear(config.d_model, config.mlp_hidden_size, bias=False)
        self.down_proj = nn.Linear(config.mlp_hidden_size, config.d_model, bias=False)
        self.act_fn = ACT2FN[config.activation_type]

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(hidden_states)) * self.up_proj(hidden_states))


class LLaDADecoderLayer(GradientCheckpointingLayer):
    def __init__(self, config: LLaDAConfig, layer_idx: int):
        super().__init__()
        self.input_layernorm = DiffusionRMSNorm(config.d_model, eps=config.rms_norm_eps)
        self.self_attn = LLaDAAttention(config, layer_idx)
        self.post_attention_layernorm = DiffusionRMSNorm(config.d_model, eps=config.rms_norm_eps)
        self.mlp = LLaDAMLP(config)
        self.residual_dropout = nn.Dropout(config.residual_dropout)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: Cache | None = None,
        **kwargs,
    ) -> torch.Tensor:
        attn_output, _ = self.self_attn(
            self.input_layernorm(hidden_states),
            position_embeddings=position_embeddings,
            attention_mask=attention_mask,
            cache=cache,
            **kwargs,
        )
        hidden_states = hidden_states + self.residual_dropout(attn_output)
        mlp_output = self.mlp(self.post_attention_layernorm(hidden_states))
        return hidden_states + self.residual_dropout(mlp_output)


class LLaDAPreTrainedModel(DiffusionPreTrainedModel):
    config: LLaDAConfig
    config_class = LLaDAConfig
    _no_split_modules = ["LLaDADecoderLayer"]
    _can_record_outputs = {"hidden_states": LLaDADecoderLayer, "attentions": LLaDAAttention}


class LLaDAModel(LLaDAPreTrainedModel):
    """The LLaDA transformer without its output projection."""

    def __init__(self, config: LLaDAConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.padded_vocab_size, config.d_model)
        self.embedding_dropout = nn.Dropout(config.embedding_dropout)
        self.layers = nn.ModuleList([LLaDADecoderLayer(config, i) for i in range(config.n_layers)])
        self.norm = DiffusionRMSNorm(config.d_model, eps=config.rms_norm_eps)
        self.rotary_emb = DiffusionRotaryEmbedding(config.head_dim, config.rope_theta)
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
            attend), or a 4-D `[batch, 1, q_len, kv_len]` bool (True = may attend) or additive float mask, e.g. for
            block-causal or per-document attention.
        cache (`Cache`, *optional*):
            Keys/values of positions encoded earlier; this forward's keys/values are added through `Cache.update`,
            so prefix and block caches can decide what to keep.
        """
        check_model_inputs(self.config, input_ids, inputs_embeds, attention_mask, position_ids, cache)
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        if position_ids is None:
            position_ids = default_position_ids(inputs_embeds, cache)

        attention_mask = prepare_attention_mask(self.config, inputs_embeds, attention_mask, cache)
        position_embeddings = self.rotary_emb(position_ids)

        hidden_states = self.embedding_dropout(inputs_embeds)
        for decoder_layer in self.layers:
            hidden_states = decoder_layer(
                hidden_states,
                attention_mask=attention_mask,
                position_embeddings=position_embeddings,
                cache=cache,
                **kwargs,
            )
        return DiffusionModelOutput(last_hidden_state=self.norm(hidden_states), cache=cache)


class LLaDAModelLM(DiffusionLMHeadMixin, LLaDAPreTrainedModel, DiffusionGenerationMixin):
    """LLaDA with its output projection. `generate()` is the masked-diffusion sampler; logits are not shifted."""

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
    _tp_plan = {"lm_head": "colwise_gather_output"}
    _pp_plan = {"lm_head": (["hidden_states"], ["logits"])}
    diffusion_family = "llada"

    def __init__(self, config: LLaDAConfig):
        super().__init__(config)
        self.model = LLaDAModel(config)
        self.lm_head = nn.Linear(config.d_model, config.padded_vocab_size, bias=False)
        self.post_init()


__all__ = ["LLaDAPreTrainedModel", "LLaDAModel", "LLaDAModelLM"]
