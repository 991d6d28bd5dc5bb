"""Saved folders load in processes that never imported llada_hf (`trust_remote_code=True`, through the entry points
`save_pretrained` writes), and `transformers serve` finds our classes on the `transformers` module."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
import transformers
from transformers import AutoModel, AutoModelForCausalLM

import llada_hf


FAMILIES = {
    "llada": ("llada-tiny-random", "configuration_llada", "modeling_llada", "LLaDAModelLM"),
    "llada2_moe": ("llada2-moe-tiny-random", "configuration_llada2_moe", "modeling_llada2_moe", "LLaDA2MoeModelLM"),
}

# The `auto_map` of the released LLaDA-8B and LLaDA2.0-mini config.json files.
RELEASED_AUTO_MAPS = {
    "llada": {
        "AutoConfig": "configuration_llada.LLaDAConfig",
        "AutoModel": "modeling_llada.LLaDAModelLM",
        "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM",
    },
    "llada2_moe": {
        "AutoConfig": "configuration_llada2_moe.LLaDA2MoeConfig",
        "AutoModel": "modeling_llada2_moe.LLaDA2MoeModelLM",
        "AutoModelForCausalLM": "modeling_llada2_moe.LLaDA2MoeModelLM",
    },
}

INPUT_IDS = [[3, 17, 42, 99, 7, 64, 5, 21]]

# Run by a fresh interpreter: loads `folder` through its remote code, writes its outputs, optionally saves it again.
LOAD_REMOTE = """
import json
import sys

import torch
from transformers import AutoModel, AutoModelForCausalLM

folder, auto_class, input_ids, outputs_file, save_to = sys.argv[1:]
assert "llada_hf" not in sys.modules
auto_class = {"AutoModel": AutoModel, "AutoModelForCausalLM": AutoModelForCausalLM}[auto_class]
model = auto_class.from_pretrained(folder, trust_remote_code=True, dtype=torch.float64)
assert type(model).__module__.startswith("transformers_modules."), type(model)
with torch.no_grad():
    output = model(torch.tensor(json.loads(input_ids)))
torch.save(output.logits if auto_class is AutoModelForCausalLM else output.last_hidden_state, outputs_file)
if save_to:
    model.save_pretrained(save_to)
"""


def load_remote(folder, auto_class: str, tmp_path, save_to="") -> torch.Tensor:
    """Outputs on `INPUT_IDS` of `folder` loaded by a fresh interpreter through its remote code."""
    outputs_file = tmp_path / f"{folder.name}.pt"
    run_fresh_python(LOAD_REMOTE, folder, auto_class, json.dumps(INPUT_IDS), outputs_file, save_to, tmp_path=tmp_path)
    return torch.load(outputs_file)


def run_fresh_python(code: str, *args, tmp_path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def load_fixture(family: str, fixtures_dir):
    return AutoModelForCausalLM.from_pretrained(fixtures_dir / FAMILIES[family][0], dtype=torch.float64).eval()


def python_files(folder) -> dict[str, str]:
    return {path.name: path.read_text() for path in sorted(folder.glob("*.py"))}


@pytest.mark.slow  # two fresh interpreters per family: ~20 s
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_saved_model_loads_with_remote_code_and_saves_a_folder_that_loads_again(family, fixtures_dir, tmp_path):
    _, config_module, modeling_module, lm_class = FAMILIES[family]
    model = load_fixture(family, fixtures_dir)
    with torch.no_grad():
        expected = model(torch.tensor(INPUT_IDS)).logits
    model.save_pretrained(tmp_path / "first")

    auto_map = json.loads((tmp_path / "first" / "config.json").read_text())["auto_map"]
    lm = f"{modeling_module}.{lm_class}"
    assert auto_map == {
        "AutoConfig": RELEASED_AUTO_MAPS[family]["AutoConfig"],
        "AutoModel": lm,
        "AutoModelForCausalLM": lm,
        "AutoModelForMaskedLM": lm,
    }
    written = python_files(tmp_path / "first")
    assert sorted(written) == [f"{config_module}.py", f"{modeling_module}.py"]
    assert f"class {lm_class}(llada_hf.{lm_class}):" in written[f"{modeling_module}.py"]

    # The remote-code model saves a folder of its own, which a third process loads.
    assert torch.equal(
        load_remote(tmp_path / "first", "AutoModelForCausalLM", tmp_path, tmp_path / "second"), expected
    )
    assert python_files(tmp_path / "second") == written
    assert json.loads((tmp_path / "second" / "config.json").read_text())["auto_map"] == auto_map
    assert torch.equal(load_remote(tmp_path / "second", "AutoModelForCausalLM", tmp_path), expected)


@pytest.mark.slow  # a fresh interpreter per family: ~10 s
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_saved_backbone_loads_with_remote_code_through_auto_model(family, fixtures_dir, tmp_path):
    backbone = load_fixture(family, fixtures_dir).model
    with torch.no_grad():
        expected = backbone(torch.tensor(INPUT_IDS)).last_hidden_state
    backbone.save_pretrained(tmp_path / "backbone")
    auto_map = json.loads((tmp_path / "backbone" / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModel"] == f"{FAMILIES[family][2]}.{type(backbone).__name__}"

    assert torch.equal(load_remote(tmp_path / "backbone", "AutoModel", tmp_path), expected)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_resaving_a_released_checkpoint_keeps_its_auto_map_and_adds_the_files(family, fixtures_dir, tmp_path):
    released = tmp_path / "released"
    shutil.copytree(fixtures_dir / FAMILIES[family][0], released)
    config = json.loads((released / "config.json").read_text())
    (released / "config.json").write_text(json.dumps({**config, "auto_map": RELEASED_AUTO_MAPS[family]}))

    AutoModel.from_pretrained(released).save_pretrained(tmp_path / "saved")

    auto_map = json.loads((tmp_path / "saved" / "config.json").read_text())["auto_map"]
    assert list(auto_map)[:3] == list(RELEASED_AUTO_MAPS[family])
    assert {key: auto_map[key] for key in RELEASED_AUTO_MAPS[family]} == RELEASED_AUTO_MAPS[family]
    for reference in auto_map.values():
        module, name = reference.split(".")
        assert f"class {name}(llada_hf.{name}):" in (tmp_path / "saved" / f"{module}.py").read_text()


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_a_config_saved_alone_writes_the_files_its_auto_map_names(family, fixtures_dir, tmp_path):
    config = transformers.AutoConfig.from_pretrained(fixtures_dir / FAMILIES[family][0])
    config.save_pretrained(tmp_path)
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    for reference in auto_map.values():
        module, name = reference.split(".")
        assert f"class {name}(llada_hf.{name}):" in (tmp_path / f"{module}.py").read_text()


def test_models_carry_hub_tags_of_their_own():
    first = llada_hf.LLaDAModelLM(llada_hf.LLaDAConfig(d_model=16, n_heads=2, n_kv_heads=2, n_layers=1, vocab_size=32,
                                                       embedding_size=32, mlp_hidden_size=32, mask_token_id=31))  # fmt: skip
    second = llada_hf.LLaDAModelLM(first.config)
    assert first.model_tags == ["llada_hf", "diffusion", "masked-diffusion", "llada"]
    first.add_model_tags("sft")
    assert "sft" in first.model_tags and "sft" not in second.model_tags


def test_our_classes_are_attributes_of_the_transformers_module():
    for name in ("LLaDAConfig", "LLaDAModel", "LLaDAModelLM", "LLaDA2MoeConfig", "LLaDA2MoeModel", "LLaDA2MoeModelLM"):
        assert getattr(transformers, name) is getattr(llada_hf, name)
        assert getattr(sys.modules["transformers"], name) is getattr(llada_hf, name)
        assert name in dir(transformers)
    assert transformers.LlamaConfig.model_type == "llama"


# `transformers serve` binds `transformers` when it starts, and its processor loading imports
# `transformers.processing_utils`, which replaces `sys.modules["transformers"]` before the remote code imports llada_hf.
SERVE_LOAD = """
import sys

from transformers.cli.serving import model_manager
import transformers.processing_utils

assert model_manager.transformers is not sys.modules["transformers"]
manager = model_manager.ModelManager(device="cpu", dtype="float64", trust_remote_code=True)
model = manager._load_model(sys.argv[1])
import llada_hf

assert type(model) is llada_hf.%s, type(model)
"""


@pytest.mark.slow  # a fresh interpreter: ~10 s
def test_serve_loads_a_saved_folder_by_its_architecture(fixtures_dir, tmp_path):
    load_fixture("llada2_moe", fixtures_dir).save_pretrained(tmp_path / "saved")
    run_fresh_python(SERVE_LOAD % FAMILIES["llada2_moe"][3], tmp_path / "saved", tmp_path=tmp_path)
