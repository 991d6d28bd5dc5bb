"""bitsandbytes support: LLaDA2.0's routed experts as linear layers, and a census of what a quantizer converts.

bitsandbytes quantizes by swapping `nn.Linear` layers for 4-/8-bit ones. LLaDA2.0 stores its routed experts as fused
3-D parameters (`gate_up_proj` `[E, 2I, H]`, `down_proj` `[E, H, I]`) for the grouped-GEMM kernels, and those hold
about 94% of LLaDA2.0-mini's weights: left fused, a "4-bit" model would keep them in bf16 and save almost nothing.
So when the config carries a bitsandbytes quantization config, the MoE blocks build their routed experts as
[`LLaDA2MoeLinearExperts`] instead, one SwiGLU MLP of `nn.Linear` layers per expert. Its parameter names are the
released checkpoint's (`mlp.experts.{e}.{gate,up,down}_proj.weight`), so released files load into it unchanged.

What stays in higher precision, with no argument from the user:
- the LM head: transformers never converts the output embeddings (unless `llm_int8_skip_modules` is given, which
  replaces that default list; then add `"lm_head"` to it);
- the LLaDA2.0 router (`mlp.gate.weight`, `mlp.gate.expert_bias`): not an `nn.Linear`, and declared in
  `_keep_in_fp32_modules_strict`, so it is stored in float32 as it is computed;
- norms and embeddings: not linear layers, kept in the load dtype.

Saving: `save_pretrained` of a bitsandbytes model (4-bit or 8-bit) writes the quantized tensors and their
quantization state under the released key names, with the `quantization_config` in `config.json`; it reloads with
`from_pretrained` (on a bitsandbytes backend) to the same logits. LLaDA2.0 loads it without its expert-merging
converters (see `LLaDA2MoePreTrainedModel._load_pretrained_model`), so the per-expert quantization state reaches
bitsandbytes. It is not a bf16 release: the released remote code cannot read it.
For a full-precision copy, load the original checkpoint again, or call `model.dequantize()` before saving.
"""

import torch
from torch import nn
from transformers import PreTrainedConfig
from transformers.quantizers.base import HfQuantizer
from transformers.quantizers.quantizers_utils import should_convert_module
from transformers.utils.quantization_config import QuantizationMethod


def is_bitsandbytes_quantized(config: PreTrainedConfig) -> bool:
    """Whether `config` asks for bitsandbytes quantization (on the fly, or as saved in a quantized checkpoint)."""
    quantization_config = getattr(config, "quantization_config", None)
    if quantization_config is None:
        return False
    if isinstance(quantization_config, dict):
        method = quantization_config.get("quant_method")
    else:
        method = quantization_config.quant_method
    return method == QuantizationMethod.BITS_AND_BYTES


class LLaDA2MoeLinearExperts(nn.ModuleList):
    """LLaDA2.0's routed experts as one SwiGLU MLP of `nn.Linear` layers per expert, for linear-layer quantizers.

    Computes what the fused experts' `eager` path computes: each expert that received tokens runs once on all of
    them; every (token, slot) output is cast to the routing weights' dtype (float32), weighted, and each token's
    `top_k` slots are summed in slot order, then cast back to the hidden states' dtype.

    Args:
        config ([`LLaDA2MoeConfig`]): the model configuration.
        expert_class (`type[nn.Module]`): the SwiGLU MLP, built as `expert_class(config, config.moe_intermediate_size)`.
    """

    def __init__(self, config: PreTrainedConfig, expert_class: type[nn.Module]):
        super().__init__(expert_class(config, config.moe_intermediate_size) for _ in range(config.num_experts))

    def forward(
        self, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor
    ) -> torch.Tensor:
        """`hidden_states` `[tokens, hidden]`, `top_k_index`/`top_k_weights` `[tokens, top_k]` -> `[tokens, hidden]`."""
        num_tokens, top_k = top_k_index.shape
        slot_experts = top_k_index.reshape(-1)
        slot_outputs = hidden_states.new_empty(
            slot_experts.shape[0], hidden_states.shape[-1], dtype=top_k_weights.dtype
        )
        for expert_idx in slot_experts.unique().tolist():
            slots = (slot_experts == expert_idx).nonzero().squeeze(-1)
            slot_outputs[slots] = self[expert_idx](hidden_states[slots // top_k]).to(top_k_weights.dtype)
        weighted = slot_outputs * top_k_weights.reshape(-1, 1)
        return weighted.view(num_tokens, top_k, -1).sum(dim=1).to(hidden_states.dtype)


def count_parameters_by_kind(model: nn.Module, modules_to_not_convert: list[str] | None = None) -> dict[str, int]:
    """Counts `model`'s parameters by what a linear-layer quantizer (bitsandbytes) does with them.

    Works on a meta-device model, so the full-size architectures can be measured without memory. Returns
    `{"quantized": ..., "linear_kept": ..., "fused_experts": ..., "embedding": ..., "other": ...}`: parameters of
    `nn.Linear` layers that get converted; of `nn.Linear` layers left in the load dtype (the LM head); of fused 3-D
    expert tensors, which such quantizers cannot convert; of embeddings; and the rest (norms, routers).

    Args:
        model (`nn.Module`): the model, e.g. built under `torch.device("meta")`.
        modules_to_not_convert (`list[str]`, *optional*): module-name patterns kept unconverted, as bitsandbytes'
            `llm_int8_skip_modules`. Defaults to what `from_pretrained` skips for `model`.
    """
    if modules_to_not_convert is None:
        modules_to_not_convert = HfQuantizer.get_modules_to_not_convert(
            model, keep_in_fp32_modules=model._keep_in_fp32_modules
        )
    counts = dict.fromkeys(("quantized", "linear_kept", "fused_experts", "embedding", "other"), 0)
    for name, module in model.named_modules():
        for parameter in module.parameters(recurse=False):
            if type(module) is nn.Linear:
                kind = "quantized" if should_convert_module(name, modules_to_not_convert) else "linear_kept"
            elif isinstance(module, nn.Embedding):
                kind = "embedding"
            elif parameter.dim() == 3:
                kind = "fused_experts"
            else:
                kind = "other"
            counts[kind] += parameter.numel()
    return counts


__all__ = ["LLaDA2MoeLinearExperts", "count_parameters_by_kind", "is_bitsandbytes_quantized"]
