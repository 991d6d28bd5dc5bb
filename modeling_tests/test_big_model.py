"""Big-model loading through accelerate: `device_map="auto"` with `max_memory` splitting a model between CPU memory
and disk offload gives the same logits and the same generated tokens as the model in one piece."""

import pytest
import torch
from transformers import AutoModelForCausalLM

import llada_hf  # noqa: F401  (registers both families)


FAMILIES = {
    "llada": ("llada-tiny-random", {}),
    "llada2": ("llada2-moe-tiny-random", {"mask_token_id": 127}),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_cpu_and_disk_offload_match_single_device(fixtures_dir, family, tmp_path):
    folder, generate_kwargs = FAMILIES[family]
    path = fixtures_dir / folder
    reference = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    # Room for the embeddings and the first decoder layer only: the rest goes to `offload_folder`.
    max_memory = {"cpu": int(0.9 * reference.get_memory_footprint())}
    offloaded = AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.float32, device_map="auto", max_memory=max_memory, offload_folder=tmp_path
    ).eval()

    device_map = offloaded.hf_device_map
    assert device_map["model.layers.0"] == "cpu" and device_map["model.layers.1"] == "disk"
    # `_no_split_modules`: a decoder layer is placed whole, never split across devices.
    assert all(name.count(".") <= 2 for name in device_map if name.startswith("model.layers"))
    # Offloaded weights live on disk (the offload folder or the safetensors file itself) and are loaded per forward.
    assert {p.device.type for p in offloaded.model.layers[1].parameters()} == {"meta"}
    assert {p.device.type for p in offloaded.model.layers[0].parameters()} == {"cpu"}

    input_ids = torch.randint(0, 100, (2, 12), generator=torch.Generator().manual_seed(0))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, :3] = 0
    with torch.no_grad():
        expected = reference(input_ids, attention_mask=attention_mask).logits
        actual = offloaded(input_ids, attention_mask=attention_mask).logits
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)

    prompt = input_ids[:1, :6]
    kwargs = dict(max_new_tokens=16, steps=8, block_length=8, temperature=0.0, **generate_kwargs)
    expected_tokens = reference.generate(prompt, **kwargs)
    actual_tokens = offloaded.generate(prompt, **kwargs)
    assert torch.equal(actual_tokens, expected_tokens)
    assert actual_tokens.shape == (1, 6 + 16)
