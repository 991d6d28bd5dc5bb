"""`peft.AutoPeftModelForCausalLM` on adapters of our models: it rebuilds the base model the adapter names, then the
adapter. Adapters made with `task_type="CAUSAL_LM"` load as they are; PEFT imports the base class of an adapter made
without a task type from the module it was defined in, which PEFT allows for transformers' modules only, so those need
`import_allowlist=["llada_hf"]` (README)."""

import json
import os
import subprocess
import sys

import pytest
import torch
from peft import AutoPeftModelForCausalLM, LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from llada_hf import LLaDA2MoeModelLM, LLaDAModelLM


FAMILIES = {"llada": ("llada-tiny-random", LLaDAModelLM), "llada2_moe": ("llada2-moe-tiny-random", LLaDA2MoeModelLM)}
INPUT_IDS = torch.tensor([[3, 17, 42, 99, 7, 64, 5, 21]])


def save_adapter(family: str, fixtures_dir, tmp_path, **lora_kwargs) -> torch.Tensor:
    """Saves a base model and a (non-trivial) LoRA adapter on it; returns the adapted model's logits."""
    AutoModelForCausalLM.from_pretrained(fixtures_dir / FAMILIES[family][0]).save_pretrained(tmp_path / "base")
    base = AutoModelForCausalLM.from_pretrained(tmp_path / "base", dtype=torch.float64)
    with torch.no_grad():
        base_logits = base(INPUT_IDS).logits
    model = get_peft_model(base, LoraConfig(r=2, init_lora_weights=False, **lora_kwargs)).eval()
    with torch.no_grad():
        logits = model(INPUT_IDS).logits
    assert not torch.allclose(logits, base_logits)
    model.save_pretrained(tmp_path / "adapter")
    return logits


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_auto_peft_model_loads_a_causal_lm_adapter(family, fixtures_dir, tmp_path):
    expected = save_adapter(family, fixtures_dir, tmp_path, task_type="CAUSAL_LM")
    model = AutoPeftModelForCausalLM.from_pretrained(tmp_path / "adapter", dtype=torch.float64).eval()
    assert type(model.get_base_model()) is FAMILIES[family][1]
    with torch.no_grad():
        assert torch.equal(model(INPUT_IDS).logits, expected)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_auto_peft_model_loads_an_adapter_without_task_type_with_the_allowlist(family, fixtures_dir, tmp_path):
    expected = save_adapter(family, fixtures_dir, tmp_path)
    model = AutoPeftModelForCausalLM.from_pretrained(
        tmp_path / "adapter", import_allowlist=["llada_hf"], dtype=torch.float64
    ).eval()
    assert type(model.get_base_model()) is FAMILIES[family][1]
    with torch.no_grad():
        assert torch.equal(model(INPUT_IDS).logits, expected)


LOAD_REMOTE = """
import json
import sys

import torch
from peft import AutoPeftModelForCausalLM

assert "llada_hf" not in sys.modules
model = AutoPeftModelForCausalLM.from_pretrained(sys.argv[1], trust_remote_code=True, dtype=torch.float64).eval()
assert type(model.get_base_model()).__module__.startswith("transformers_modules."), type(model.get_base_model())
with torch.no_grad():
    torch.save(model(torch.tensor(json.loads(sys.argv[2]))).logits, sys.argv[3])
"""


@pytest.mark.slow  # a fresh interpreter: 10-20 s
def test_auto_peft_model_loads_an_adapter_through_remote_code(fixtures_dir, tmp_path):
    expected = save_adapter("llada2_moe", fixtures_dir, tmp_path, task_type="CAUSAL_LM")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    adapter, input_ids, logits_file = str(tmp_path / "adapter"), json.dumps(INPUT_IDS.tolist()), tmp_path / "logits.pt"
    command = [sys.executable, "-c", LOAD_REMOTE, adapter, input_ids, str(logits_file)]
    result = subprocess.run(command, check=False, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert torch.equal(torch.load(logits_file), expected)
