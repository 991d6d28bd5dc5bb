"""CUDA checks (skipped without a CUDA device; CI has none): the attention kernels that only exist on GPUs agree with
eager attention on the released-format fixtures, and bf16 generation runs on the device.

    python -m pytest modeling_tests/test_gpu.py      # on a GPU machine; flash-attn tests need `pip install -e .[flash]`
"""

import importlib.util

import pytest
import torch
from transformers import AutoModelForCausalLM

import llada_hf  # noqa: F401  (registers the model types)


pytestmark = pytest.mark.gpu

FIXTURES = ["llada-tiny-random", "llada2-moe-tiny-random"]
MASK_TOKEN_IDS = {"llada-tiny-random": None, "llada2-moe-tiny-random": 127}  # the tiny LLaDA2 config has no mask id
needs_flash_attn = pytest.mark.skipif(
    importlib.util.find_spec("flash_attn") is None, reason="flash-attn is not installed (`pip install -e .[flash]`)"
)


def load(fixtures_dir, name, implementation):
    return AutoModelForCausalLM.from_pretrained(
        fixtures_dir / name, dtype=torch.bfloat16, attn_implementation=implementation, device_map="cuda"
    )


def ids(model, batch=2, length=24):
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, model.config.vocab_size - 8, (batch, length), generator=generator).to(model.device)


@pytest.mark.parametrize("name", FIXTURES)
@pytest.mark.parametrize("implementation", ["sdpa", pytest.param("flash_attention_2", marks=needs_flash_attn)])
def test_cuda_attention_kernels_match_eager(fixtures_dir, name, implementation):
    eager = load(fixtures_dir, name, "eager")
    other = load(fixtures_dir, name, implementation)
    inputs = ids(eager)
    with torch.no_grad():
        expected = eager(inputs).logits.float()
        logits = other(inputs).logits.float()
    assert torch.isfinite(logits).all()
    torch.testing.assert_close(logits, expected, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("name", FIXTURES)
def test_bf16_generate_on_cuda_matches_its_own_batch_rows(fixtures_dir, name):
    model = load(fixtures_dir, name, "sdpa")
    prompts = ids(model, batch=2, length=8)
    kwargs = dict(max_new_tokens=16, steps=16, block_length=8, temperature=0.0)
    if MASK_TOKEN_IDS[name] is not None:
        kwargs["mask_token_id"] = MASK_TOKEN_IDS[name]
    mask_token_id = kwargs.get("mask_token_id", model.config.mask_token_id)
    batched = model.generate(prompts, **kwargs)
    assert batched.shape == (2, 24) and batched.device.type == "cuda"
    assert not (batched[:, 8:] == mask_token_id).any()
    for row in range(2):
        single = model.generate(prompts[row : row + 1], **kwargs)
        assert torch.equal(single[0], batched[row])
