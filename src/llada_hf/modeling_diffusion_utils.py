"""Building blocks shared by the LLaDA 1.x and LLaDA2.0 model files.

Both families are pre-norm transformers with RMSNorm, rotate-half RoPE and *bidirectional* attention, and both keep
the released checkpoints' float32 islands (norms, RoPE). What differs between them (fused QKV, q/k norms, partial
RoPE, MoE) stays in each family's modeling file; everything with the same logic lives here once.
"""

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.attention.flex_attention import BlockMask, create_block_mask
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache
from transformers.integrations.sdpa_attention import repeat_kv
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_utils import slice_logits_to_keep
from transformers.utils import ModelOutput, can_return_tuple
from transformers.utils.deprecation import deprecate_kwarg
from transformers.utils.import_utils import is_tracing

from .integrations.hub import add_remote_code_auto_map, model_tags
from .integrations.lm_eval import warn_if_evaluated_by_lm_eval_hf
from .integrations.peft import register_peft_target_modules_if_imported
from .integrations.trl import refuse_trl_trainer
from .training.loss import (
    IGNORE_INDEX,
    check_diffusion_labels,
    confidence_loss,
    confidence_loss_weight,
    masked_diffusion_loss,
)


class DiffusionRMSNorm(nn.Module):
    """RMSNorm computed in float32 and cast back before the weight, as both released families do."""

    def __init__(self, hidden_size: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.float32)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        return self.weight * hidden_states.to(input_dtype)

    def extra_repr(self):
        return f"{tuple(self.weight.shape)}, eps={self.variance_epsilon}"


class DiffusionRotaryEmbedding(nn.Module):
    """Rotate-half RoPE tables over the first `dim` channels of a head, always computed in float32.

    Returns `(cos, sin)` of shape `[batch, seq, dim]` in float32; the attention decides in which dtype to rotate
    (see `apply_rotary_pos_emb`).
    """

    inv_freq: torch.Tensor

    def __init__(self, dim: int, base: float, device=None):
        super().__init__()
        self.dim = dim
        self.base = base
        self.register_buffer("inv_freq", self.compute_inv_freq(device), persistent=False)

    def compute_inv_freq(self, device=None) -> torch.Tensor:
        exponents = torch.arange(0, self.dim, 2, dtype=torch.int64, device=device).float() / self.dim
        return 1.0 / (self.base**exponents)

    def _apply(self, fn, recurse=True):
        # `model.to(torch.bfloat16)` / `.half()` would round the frequencies (and `.float()` cannot undo it): after
        # any conversion, recompute them in float32 on the buffer's new device, as `from_pretrained(dtype=...)` has them.
        super()._apply(fn, recurse)
        self.inv_freq = self.compute_inv_freq(self.inv_freq.device)
        return self

    @torch.no_grad()
    def forward(self, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inv_freq = self.inv_freq.float().to(position_ids.device)
        device_type = position_ids.device.type if position_ids.device.type != "mps" else "cpu"
        with torch.autocast(device_type=device_type, enabled=False):
            freqs = position_ids[..., None].float() * inv_freq
            emb = torch.cat((freqs, freqs), dim=-1)
            return emb.cos(), emb.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


def apply_rotary_pos_emb(
    query: torch.Tensor,
    key: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    rotate_in_float32: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotates the first `cos.shape[-1]` channels of `query`/`key` (`[batch, heads, seq, head_dim]`).

    `rotate_in_float32=True` casts q/k to float32 for the rotation and back (LLaDA 1.x, `rope_full_precision`);
    otherwise the float32 tables are cast to the activations' dtype (LLaDA2.0).
    """
    rotary_dim = cos.shape[-1]
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)

    def rotate(states: torch.Tensor) -> torch.Tensor:
        rot, passthrough = states[..., :rotary_dim], states[..., rotary_dim:]
        if rotate_in_float32:
            rot = rot.float()
            rotated = (rot * cos + rotate_half(rot) * sin).to(states.dtype)
        else:
            rotated = rot * cos.to(states.dtype) + rotate_half(rot) * sin.to(states.dtype)
        return torch.cat((rotated, passthrough), dim=-1) if passthrough.shape[-1] else rotated

    return rotate(query), rotate(key)


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain attention with an additive mask; the softmax runs in `module.softmax_dtype` (None: the input dtype)."""
    key_states = repeat_kv(key, module.num_key_value_groups)
    value_states = repeat_kv(value, module.num_key_value_groups)

    attn_weights = torch.matmul(query, key_states.transpose(2, 3)) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask[:, :, :, : key_states.shape[-2]]

    softmax_dtype = getattr(module, "softmax_dtype", None) or query.dtype
    attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=softmax_dtype).to(query.dtype)
    attn_weights = nn.functional.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value_states)
    return attn_output.transpose(1, 2).contiguous(), attn_weights


# What the forwards accept for each tensor argument (besides None)
_ARGUMENT_TYPES = {
    "input_ids": torch.Tensor,
    "inputs_embeds": torch.Tensor,
    "attention_mask": (torch.Tensor, BlockMask),
    "position_ids": torch.Tensor,
    "cache": Cache,
    "labels": torch.Tensor,
    "p_mask": torch.Tensor,
    "loss_normalizer": (torch.Tensor, float, int),
}


def check_argument_types(**arguments) -> None:
    """Raises a `TypeError` naming the first argument that is neither None nor of its type in `_ARGUMENT_TYPES`."""
    for name, value in arguments.items():
        expected = _ARGUMENT_TYPES[name]
        if value is not None and not isinstance(value, expected):
            expected = expected if isinstance(expected, tuple) else (expected,)
            names = " or ".join(f"`{cls.__name__}`" for cls in expected)
            raise TypeError(f"`{name}` must be a {names} or None, got {type(value).__name__}.")


def _can_read_values(tensor: torch.Tensor) -> bool:
    """Whether the values of `tensor` may be read (not while compiling, tracing or capturing a CUDA graph)."""
    return tensor.numel() > 0 and tensor.device.type != "meta" and not is_tracing(tensor)


def check_range(name: str, tensor: torch.Tensor, limit_name: str, limit: int) -> None:
    """Raises a `ValueError` naming `name` unless every value of `tensor` is in `[0, limit)` (skipped while tracing)."""
    if _can_read_values(tensor):
        low, high = (int(value) for value in torch.aminmax(tensor))
        if low < 0 or high >= limit:
            raise ValueError(f"`{name}` must be in [0, {limit_name}={limit}), got values from {low} to {high}.")


def check_model_inputs(
    config,
    input_ids: torch.LongTensor | None,
    inputs_embeds: torch.Tensor | None,
    attention_mask: "torch.Tensor | BlockMask | None",
    position_ids: torch.LongTensor | None,
    cache: Cache | None,
) -> None:
    """Refuses, naming the argument and the rule, inputs that would fail deep inside the backbone or silently compute
    something else: wrong types or shapes, token ids outside `[0, vocab_size)`, positions beyond
    `max_position_embeddings`, a padding mask of another shape than `input_ids`."""
    check_argument_types(
        input_ids=input_ids,
        inputs_embeds=inputs_embeds,
        attention_mask=attention_mask,
        position_ids=position_ids,
        cache=cache,
    )
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("Pass exactly one of `input_ids` or `inputs_embeds`.")
    if input_ids is not None:
        if input_ids.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"`input_ids` must hold int64 (or int32) token ids, got dtype {input_ids.dtype}.")
        if input_ids.dim() != 2:
            raise ValueError(f"`input_ids` must be 2-D [batch, seq_len], got shape {tuple(input_ids.shape)}.")
        check_range("input_ids", input_ids, "vocab_size", config.vocab_size)
        batch_size, length = input_ids.shape
        input_name = "input_ids"
    else:
        if inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != config.hidden_size:
            raise ValueError(
                f"`inputs_embeds` must be [batch, seq_len, hidden_size={config.hidden_size}], got shape "
                f"{tuple(inputs_embeds.shape)}."
            )
        batch_size, length = inputs_embeds.shape[:2]
        input_name = "inputs_embeds"

    limit = config.max_position_embeddings
    limit_name = type(config).attribute_map.get("max_position_embeddings", "max_position_embeddings")
    if position_ids is None:
        past_length = 0 if cache is None or is_tracing() else int(cache.get_seq_length())
        if past_length + length > limit:
            cached = f" after {past_length} cached ones" if past_length else ""
            raise ValueError(
                f"`{input_name}` holds {length} positions{cached}, more than the model's `{limit_name}` ({limit}): "
                "shorten the input."
            )
    else:
        if position_ids.dim() != 2 or position_ids.shape[0] not in (1, batch_size) or position_ids.shape[1] != length:
            raise ValueError(
                f"`position_ids` must be [batch or 1, seq_len] = [{batch_size} or 1, {length}], got shape "
                f"{tuple(position_ids.shape)}."
            )
        check_range("position_ids", position_ids, limit_name, limit)

    if not isinstance(attention_mask, torch.Tensor):
        return
    # With a cache, the keys also cover cached positions, whose number depends on the cache.
    key_length = length if cache is None else attention_mask.shape[-1]
    if attention_mask.dim() == 4 and (
        attention_mask.shape[0] not in (1, batch_size) or attention_mask.shape[2:] != (length, key_length)
    ):
        raise ValueError(
            f"A 4-D `attention_mask` must be [batch or 1, 1, q_len, kv_len] for {batch_size} rows of {length} "
            f"positions, got shape {tuple(attention_mask.shape)}."
        )
    if attention_mask.dim() == 2:
        if tuple(attention_mask.shape) != (batch_size, key_length):
            raise ValueError(
                f"A 2-D `attention_mask` must be [batch, seq_len] = [{batch_size}, {key_length}], got shape "
                f"{tuple(attention_mask.shape)}."
            )
        if attention_mask.dtype != torch.bool and _can_read_values(attention_mask):
            if not bool(((attention_mask == 0) | (attention_mask == 1)).all()):
                raise ValueError(
                    "A 2-D `attention_mask` is a padding mask of 0s (pad) and 1s (token); this one holds other values "
                    "(an additive mask must be 4-D [batch, 1, q_len, kv_len])."
                )


def prepare_attention_mask(
    config,
    inputs_embeds: torch.Tensor,
    attention_mask: "torch.Tensor | BlockMask | None",
    cache: Cache | None = None,
):
    """Turns what a user passes into what the configured attention kernel expects.

    - `None` or a 2-D `[batch, kv_len]` 0/1 padding mask: bidirectional attention over the non-pad keys (padded
      queries still see every real key, so no row is ever fully masked).
    - A 4-D `[batch, 1, q_len, kv_len]` mask, either bool (True = may attend) or additive float (0 / large
      negative): used as given. This is how block-causal and per-document masks come in.
    - A flex-attention `BlockMask`: used as given.
    """
    if isinstance(attention_mask, BlockMask):
        return attention_mask
    if attention_mask is None or attention_mask.dim() == 2:
        return create_bidirectional_mask(
            config=config, inputs_embeds=inputs_embeds, attention_mask=attention_mask, cache=cache
        )
    if attention_mask.dim() != 4:
        raise ValueError(
            f"`attention_mask` must be 2-D [batch, seq] (padding) or 4-D [batch, 1, q_len, kv_len], got shape "
            f"{tuple(attention_mask.shape)}."
        )
    implementation = config._attn_implementation
    if "flash" in implementation:
        raise ValueError(
            f"A 4-D `attention_mask` cannot be used with attn_implementation={implementation!r}, which only takes "
            "padding masks; load the model with attn_implementation='sdpa', 'flex_attention' or 'eager'."
        )
    if attention_mask.dtype != torch.bool:
        if not attention_mask.is_floating_point():
            raise TypeError(
                f"A 4-D `attention_mask` must be bool (True = may attend) or an additive float mask, got "
                f"{attention_mask.dtype}."
            )
        if bool((attention_mask == 1).any()):
            raise ValueError(
                "A 4-D float `attention_mask` is read as additive (0 = attend, large negative = blocked), but this "
                "one holds 1s, so it looks like a 0/1 mask: pass it as bool (`mask.bool()`) instead."
            )
    if implementation == "flex_attention":
        return _to_block_mask(attention_mask if attention_mask.dtype == torch.bool else attention_mask == 0)
    if attention_mask.dtype != torch.bool:
        return attention_mask.to(inputs_embeds.dtype)
    if implementation == "sdpa":
        return attention_mask
    zero = torch.zeros((), dtype=inputs_embeds.dtype, device=attention_mask.device)
    return torch.where(attention_mask, zero, torch.finfo(inputs_embeds.dtype).min)


def _to_block_mask(allowed: torch.Tensor) -> BlockMask:
    """A dense 4-D bool mask as a flex-attention `BlockMask` (flex cannot take dense masks reliably)."""
    batch, _, q_len, kv_len = allowed.shape
    allowed = allowed[:, 0].contiguous()

    def mask_mod(batch_idx, head_idx, q_idx, kv_idx):
        return allowed[batch_idx, q_idx, kv_idx]

    return create_block_mask(mask_mod, batch, None, q_len, kv_len, device=allowed.device)


def default_position_ids(inputs_embeds: torch.Tensor, cache: Cache | None) -> torch.Tensor:
    """Absolute positions `past_len .. past_len + seq - 1`; left pads count as positions, as in the released code."""
    past_length = cache.get_seq_length() if cache is not None else 0
    positions = torch.arange(inputs_embeds.shape[1], device=inputs_embeds.device) + past_length
    return positions.unsqueeze(0).expand(inputs_embeds.shape[0], -1)


@dataclass
class DiffusionModelOutput(ModelOutput):
    """Backbone output: final hidden states, the cache when one is used, optional per-layer states."""

    last_hidden_state: torch.FloatTensor | None = None
    cache: Cache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    router_logits: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class DiffusionLMOutput(ModelOutput):
    """LM output. `logits[:, i]` predicts token `i` itself (no shift): the masked-diffusion convention."""

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    cache: Cache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    router_logits: tuple[torch.FloatTensor, ...] | None = None
    # The two parts of `loss` in confidence-aware parallel training (`config.confidence_loss_weight` > 0), else None:
    # `loss = diffusion_loss + confidence_loss_weight * confidence_loss` (see `llada_hf.training.loss`).
    diffusion_loss: torch.FloatTensor | None = None
    confidence_loss: torch.FloatTensor | None = None


def _llada_hf_class(cls: type) -> type:
    """The nearest class of `cls`'s MRO defined by llada_hf itself."""
    return next(base for base in cls.__mro__ if base.__module__.startswith("llada_hf."))


class DiffusionPreTrainedModel(PreTrainedModel):
    """What both families' `PreTrainedModel` classes share: attention back-ends, checkpointing and initialisation."""

    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = True
    # The diffusion loss is a mean over rows, not over `num_items_in_batch` tokens: the Trainer must scale it for
    # gradient accumulation itself (see `llada_hf.training.loss`).
    accepts_loss_kwargs = False

    def post_init(self):
        super().post_init()
        # Default PEFT adapter targets for our model types, if PEFT is in use (see `integrations/peft.py`).
        register_peft_target_modules_if_imported()
        # Hub tags for `push_to_hub` and the Trainer's model card, on the instance: `add_model_tags` appends in place.
        self.add_model_tags(model_tags(self.config.model_type))

    def save_pretrained(self, save_directory, is_main_process: bool = True, **kwargs):
        """As [`~PreTrainedModel.save_pretrained`], plus an `auto_map` and the `trust_remote_code` entry points of
        `llada_hf.integrations.hub`: the folder also loads where `llada_hf` was never imported."""
        add_remote_code_auto_map(self.config, base_model=not isinstance(self, DiffusionLMHeadMixin))
        super().save_pretrained(save_directory, is_main_process=is_main_process, **kwargs)  # the config writes them

    # transformers decides whether the attention and experts kernels can be switched by reading the source of the
    # module defining the class. The `trust_remote_code` entry points are subclasses in modules without layers, so
    # judge by the llada_hf class they extend (otherwise a remote-code LLaDA2 would be stuck on eager experts).
    @classmethod
    def _can_set_attn_implementation(cls) -> bool:
        return PreTrainedModel._can_set_attn_implementation.__func__(_llada_hf_class(cls))

    @classmethod
    def _can_set_experts_implementation(cls) -> bool:
        return PreTrainedModel._can_set_experts_implementation.__func__(_llada_hf_class(cls))

    def add_model_tags(self, tags: list[str] | str) -> None:
        # TRL's trainers tag the model they are built on, and would train it with a next-token loss: refuse them
        refuse_trl_trainer(self, tags)
        super().add_model_tags(tags)

    def tie_weights(self, *args, **kwargs):
        # lm-eval's `hf` model calls this on the model it evaluates, and would score it as autoregressive: warn
        warn_if_evaluated_by_lm_eval_hf(self)
        return super().tie_weights(*args, **kwargs)

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, DiffusionRotaryEmbedding):
            init.copy_(module.inv_freq, module.compute_inv_freq(module.inv_freq.device))


class DiffusionLMHeadMixin:
    """The output projection and diffusion loss both families put on top of their backbone (`self.model`,
    `self.lm_head`). `logits_in_float32` mirrors the released code's cast of the logits."""

    logits_in_float32 = False

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        labels: torch.LongTensor | None = None,
        p_mask: torch.Tensor | None = None,
        loss_normalizer: torch.Tensor | None = None,
        **kwargs,
    ) -> DiffusionLMOutput:
        r"""
        Returns logits where position `i` scores the token *at* `i` (masked-diffusion convention, no shift). See the
        backbone's `forward` for the mask formats; `logits_to_keep` limits the projection to the last positions.

        labels (`torch.LongTensor` of shape `[batch, seq]`, *optional*):
            The clean token at each masked position of `input_ids`, -100 elsewhere. With `p_mask` (each position's
            masking probability) and `loss_normalizer` (defaults to the sequence length), the output's `loss` is the
            masked-diffusion loss of `llada_hf.training.masked_diffusion_loss`; the diffusion collators of
            `llada_hf.training` produce all three. With `config.confidence_loss_weight` λ > 0 (confidence-aware
            parallel training), `loss` adds λ times `llada_hf.training.confidence_loss`, and the output also holds
            both parts (`diffusion_loss`, `confidence_loss`).
        """
        check_argument_types(labels=labels, p_mask=p_mask, loss_normalizer=loss_normalizer)
        if labels is not None:
            check_range("labels", labels[labels != IGNORE_INDEX], "vocab_size", self.config.vocab_size)
        outputs: DiffusionModelOutput = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        logits = self.lm_head(slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep))
        if self.logits_in_float32:
            logits = logits.float()
        loss = diffusion_loss = confidence_part = None
        if labels is not None:
            check_diffusion_labels(input_ids, labels, p_mask, self.config.mask_token_id)
            loss = masked_diffusion_loss(logits, labels, p_mask, loss_normalizer)
            weight = confidence_loss_weight(self.config)
            if weight > 0:
                diffusion_loss, confidence_part = loss, confidence_loss(logits, labels)
                loss = diffusion_loss + weight * confidence_part
        return DiffusionLMOutput(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            router_logits=outputs.router_logits,
            diffusion_loss=diffusion_loss,
            confidence_loss=confidence_part,
        )
