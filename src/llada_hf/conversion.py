"""Autoregressive -> masked-diffusion conversion: initialise a LLaDA model from a Llama-architecture causal LM.

This is the starting point of the LLaDA2.0 recipe: the AR model's weights are reused as they are (same pre-norm
SwiGLU block, same rotate-half RoPE, GQA through `n_kv_heads`); only the attention becomes bidirectional and a mask
token joins the vocabulary. Continued training with a block-diffusion collator and a growing block size
(`llada_hf.training.schedules.BlockSizeScheduleCallback`) then turns it into a diffusion LM.

```python
>>> from llada_hf.conversion import convert_llama_to_llada
>>> model, tokenizer = convert_llama_to_llada("path/to/llama", tokenizer="path/to/llama")
>>> model.save_pretrained("llada-from-llama"); tokenizer.save_pretrained("llada-from-llama")
```
"""

import copy
import os

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, PreTrainedModel, PreTrainedTokenizerBase

from .configuration_llada import LLaDAConfig
from .modeling_llada import LLaDAModelLM


DEFAULT_MASK_TOKEN = "<|mdm_mask|>"


def llada_config_from_llama(
    llama_config: LlamaConfig, mask_token_id: int, vocab_size: int | None = None
) -> LLaDAConfig:
    """The [`LLaDAConfig`] with the architecture of `llama_config` (`vocab_size` may grow it to hold the mask token).

    Raises a `ValueError` for Llama options LLaDA does not compute (biases, a head_dim other than hidden/heads, RoPE
    scaling, another activation).
    """
    if llama_config.model_type != "llama":
        raise ValueError(f"Expected a Llama config (model_type 'llama'), got model_type {llama_config.model_type!r}.")
    unsupported = {
        "attention_bias": (llama_config.attention_bias, False),
        "mlp_bias": (llama_config.mlp_bias, False),
        "hidden_act": (llama_config.hidden_act, "silu"),
        "head_dim": (llama_config.head_dim, llama_config.hidden_size // llama_config.num_attention_heads),
        "rope_type": ((llama_config.rope_parameters or {}).get("rope_type", "default"), "default"),
    }
    for name, (value, supported) in unsupported.items():
        if value != supported:
            raise ValueError(
                f"Cannot convert a Llama model with `{name}={value!r}`: LLaDA supports only {supported!r}."
            )

    vocab_size = max(vocab_size or 0, llama_config.vocab_size)
    if not 0 <= mask_token_id < vocab_size:
        raise ValueError(f"`mask_token_id` ({mask_token_id}) is outside the vocabulary (size {vocab_size}).")
    eos_token_id = llama_config.eos_token_id
    return LLaDAConfig(
        d_model=llama_config.hidden_size,
        n_heads=llama_config.num_attention_heads,
        n_kv_heads=llama_config.num_key_value_heads,
        n_layers=llama_config.num_hidden_layers,
        mlp_hidden_size=llama_config.intermediate_size,
        vocab_size=vocab_size,
        embedding_size=vocab_size,
        max_sequence_length=llama_config.max_position_embeddings,
        weight_tying=llama_config.tie_word_embeddings,
        rms_norm_eps=llama_config.rms_norm_eps,
        rope_theta=llama_config.rope_parameters["rope_theta"],
        init_std=llama_config.initializer_range,
        attention_dropout=llama_config.attention_dropout,
        mask_token_id=mask_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=llama_config.pad_token_id if llama_config.pad_token_id is not None else eos_token_id,
        bos_token_id=llama_config.bos_token_id,
    )


def convert_llama_state_dict(state_dict: dict[str, torch.Tensor], config: LLaDAConfig) -> dict[str, torch.Tensor]:
    """Maps a `LlamaForCausalLM` state dict onto `LLaDAModelLM`'s parameter names (which follow Llama's), growing the
    embedding and head to `config.embedding_size` rows; new rows are the mean of the existing ones."""
    converted = {}
    for name, tensor in state_dict.items():
        if name.endswith("rotary_emb.inv_freq"):
            continue
        if name in ("model.embed_tokens.weight", "lm_head.weight") and tensor.shape[0] < config.padded_vocab_size:
            extra_rows = config.padded_vocab_size - tensor.shape[0]
            mean_row = tensor.float().mean(dim=0, keepdim=True).to(tensor.dtype)
            tensor = torch.cat([tensor, mean_row.expand(extra_rows, -1)])
        converted[name] = tensor
    if config.weight_tying:
        converted.pop("lm_head.weight", None)
    return converted


def convert_llama_to_llada(
    llama: str | os.PathLike | PreTrainedModel,
    tokenizer: str | os.PathLike | PreTrainedTokenizerBase | None = None,
    mask_token_id: int | None = None,
    mask_token: str = DEFAULT_MASK_TOKEN,
    dtype: torch.dtype | None = None,
) -> tuple[LLaDAModelLM, PreTrainedTokenizerBase | None]:
    """
    Builds an [`LLaDAModelLM`] with the weights of a Llama causal LM.

    Args:
        llama: a `LlamaForCausalLM` (left unchanged) or the path/hub id of one saved by transformers.
        tokenizer: its tokenizer (instance or path). If it has no mask token, `mask_token` is added to a copy of it
            and the vocabulary grows by one row when needed (initialised to the mean embedding).
        mask_token_id: use this existing id as the mask token instead (then `tokenizer` is optional).
        mask_token: the text of the mask token to add.
        dtype: dtype of the returned model (default: the Llama weights' dtype).

    Returns:
        `(model, tokenizer)`; the tokenizer is `None` when none was given.
    """
    if not isinstance(llama, PreTrainedModel):
        llama = AutoModelForCausalLM.from_pretrained(llama, dtype=dtype or "auto")
    if isinstance(tokenizer, (str, os.PathLike)):
        tokenizer = AutoTokenizer.from_pretrained(tokenizer)

    vocab_size = llama.config.vocab_size
    if mask_token_id is None:
        if tokenizer is None:
            raise ValueError(
                "Pass `tokenizer` (a mask token is added to it if missing) or an explicit `mask_token_id`."
            )
        if tokenizer.mask_token_id is None:
            tokenizer = copy.deepcopy(tokenizer)
            tokenizer.add_special_tokens({"mask_token": mask_token})
        mask_token_id = tokenizer.mask_token_id
        vocab_size = max(vocab_size, len(tokenizer))

    config = llada_config_from_llama(llama.config, mask_token_id, vocab_size)
    config.dtype = dtype or llama.dtype
    state_dict = convert_llama_state_dict(llama.state_dict(), config)
    model = LLaDAModelLM(config).to(config.dtype)
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    if config.weight_tying:
        missing = [name for name in missing if name != "lm_head.weight"]
        model.tie_weights()
    if missing or unexpected:
        raise ValueError(f"The Llama weights do not match LLaDA's: missing {missing}, unexpected {unexpected}.")
    return model, tokenizer


__all__ = ["convert_llama_state_dict", "convert_llama_to_llada", "llada_config_from_llama"]
