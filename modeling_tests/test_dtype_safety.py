"""Casting a loaded model (`.to(dtype)`, `.half()`, `.float()`) keeps the float32 islands of the released code: the
RoPE frequencies of both families and LLaDA2.0's router (`gate.weight`, `gate.expert_bias`). A cast model equals one
loaded in that dtype, a cast back to float32 restores the float32 model's tables, and save -> reload changes nothing.
"""

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from llada_hf import BUNDLED_MODEL_PATH, LLaDA2MoeConfig, LLaDA2MoeModelLM
from llada_hf.modeling_diffusion_utils import DiffusionRotaryEmbedding


VOCAB = {"llada": 33, "llada2": 128}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """The bundled LLaDA, and a tiny LLaDA2 with LLaDA-8B's RoPE base and a non-zero expert bias."""
    config = LLaDA2MoeConfig(
        vocab_size=VOCAB["llada2"], hidden_size=64, intermediate_size=128, moe_intermediate_size=32,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16, num_experts=8,
        num_experts_per_tok=2, n_group=2, topk_group=1, first_k_dense_replace=1, max_position_embeddings=256,
        rope_theta=500000.0, mask_token_id=127, eos_token_id=126, pad_token_id=126,
    )  # fmt: skip
    torch.manual_seed(0)
    model = LLaDA2MoeModelLM(config)
    with torch.no_grad():
        model.model.layers[1].mlp.gate.expert_bias.copy_(torch.randn(config.num_experts) * 0.01 + 1 / 3)
    path = tmp_path_factory.mktemp("dtype_safety") / "llada2"
    model.save_pretrained(path)
    return {"llada": Path(BUNDLED_MODEL_PATH), "llada2": path}


def load(path: Path, dtype: torch.dtype):
    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()


def logits(model, family: str) -> torch.Tensor:
    input_ids = torch.randint(0, VOCAB[family] - 2, (2, 96), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model(input_ids).logits


def float32_islands(model) -> dict[str, torch.Tensor]:
    """The RoPE frequencies and, for LLaDA2, every router tensor, by name."""
    tensors = dict(model.named_parameters()) | dict(model.named_buffers())  # `inv_freq` is not in the state dict
    return {
        name: tensor for name, tensor in tensors.items() if name.endswith("rotary_emb.inv_freq") or ".gate." in name
    }


@pytest.mark.parametrize("family", ["llada", "llada2"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cast_model_equals_model_loaded_in_that_dtype(checkpoints, family, dtype):
    cast = load(checkpoints[family], torch.float32)
    cast = cast.half() if dtype == torch.float16 else cast.to(dtype)
    loaded = load(checkpoints[family], dtype)
    islands = float32_islands(cast)
    assert islands and all(tensor.dtype == torch.float32 for tensor in islands.values())
    assert cast.lm_head.weight.dtype == dtype
    torch.testing.assert_close(logits(cast, family), logits(loaded, family), rtol=0, atol=0)


@pytest.mark.parametrize("family", ["llada", "llada2"])
def test_cast_back_to_float32_restores_rotary_tables_and_router(checkpoints, family):
    reference = load(checkpoints[family], torch.float32)
    round_trip = load(checkpoints[family], torch.float32).to(torch.bfloat16).float()
    expected, actual = float32_islands(reference), float32_islands(round_trip)
    assert expected.keys() == actual.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=0, msg=name)
    position_ids = torch.arange(256)[None]
    for table, expected_table in zip(
        round_trip.model.rotary_emb(position_ids), reference.model.rotary_emb(position_ids)
    ):
        torch.testing.assert_close(table, expected_table, rtol=0, atol=0)


@pytest.mark.parametrize("family", ["llada", "llada2"])
def test_save_reload_of_bfloat16_model_keeps_logits(checkpoints, family, tmp_path):
    model = load(checkpoints[family], torch.float32).to(torch.bfloat16)
    model.save_pretrained(tmp_path)
    for dtype in (torch.bfloat16, "auto"):
        reloaded = load(tmp_path, dtype)
        assert reloaded.lm_head.weight.dtype == torch.bfloat16
        torch.testing.assert_close(logits(reloaded, family), logits(model, family), rtol=0, atol=0)


def test_llada2_float64_cast_keeps_released_dtypes(checkpoints):
    """In float64 the released code keeps `expert_bias` (a checkpoint tensor) in float64 and RoPE in float32."""
    model = load(checkpoints["llada2"], torch.float32).to(torch.float64)
    gate = model.model.layers[1].mlp.gate
    assert gate.weight.dtype == gate.expert_bias.dtype == torch.float64
    assert model.model.rotary_emb.inv_freq.dtype == torch.float32
    torch.testing.assert_close(logits(model, "llada2"), logits(load(checkpoints["llada2"], torch.float64), "llada2"))


def test_rotary_tables_at_llada_8b_scale_survive_half_precision_casts():
    """LLaDA-8B's RoPE (head_dim 128, base 5e5): rounded frequencies were off by 1.5 in cos/sin at position 1000."""
    reference = DiffusionRotaryEmbedding(128, 500000.0)
    position_ids = torch.tensor([[100, 1000, 4095]])
    for cast in (lambda module: module.to(torch.bfloat16), lambda module: module.half().float()):
        rotary = cast(DiffusionRotaryEmbedding(128, 500000.0))
        assert rotary.inv_freq.dtype == torch.float32
        for table, expected in zip(rotary(position_ids), reference(position_ids)):
            torch.testing.assert_close(table, expected, rtol=0, atol=0)
