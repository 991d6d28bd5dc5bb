"""The tiny LLaDA shipped in the package: files, format, sampler defaults, chat template, held-out accuracy (~10 s)."""

import importlib.util
import json
import random
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import llada_hf
from llada_hf import LLaDAConfig, LLaDAModelLM


BUNDLED = Path(llada_hf.BUNDLED_MODEL_PATH)
MAKE_SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "make_bundled_model.py"


@pytest.fixture(scope="module")
def recipe():
    """examples/make_bundled_model.py as a module: the data generators the model was trained and evaluated with."""
    spec = importlib.util.spec_from_file_location("make_bundled_model", MAKE_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bundled():
    return AutoModelForCausalLM.from_pretrained(BUNDLED).eval(), AutoTokenizer.from_pretrained(BUNDLED)


def test_files_fit_the_package_data_pattern_and_size_budget():
    files = {path.name for path in BUNDLED.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json"} <= files
    assert all(path.is_file() for path in BUNDLED.iterdir())  # setup.cfg ships `bundled/*/*`: no sub-folders
    assert (BUNDLED / "model.safetensors").stat().st_size <= 20 * 2**20


def test_released_llada_format_and_sampler_defaults(bundled):
    model, tokenizer = bundled
    assert isinstance(model, LLaDAModelLM) and isinstance(model.config, LLaDAConfig)
    assert json.loads((BUNDLED / "config.json").read_text())["model_type"] == "llada"
    assert model.config.mask_token_id == tokenizer.mask_token_id
    assert model.config.eos_token_id == tokenizer.eos_token_id == tokenizer.pad_token_id
    saved = json.loads((BUNDLED / "generation_config.json").read_text())
    assert {key: saved[key] for key in ("max_new_tokens", "steps", "block_length")} == {
        "max_new_tokens": 16,
        "steps": 16,
        "block_length": 2,
    }
    assert saved["do_sample"] is False


def test_chat_template_is_llada_instruct_style(bundled):
    _, tokenizer = bundled
    messages = [{"role": "user", "content": "Sort: 3 1"}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == "<|startoftext|><|start_header_id|>user<|end_header_id|>\n\nSort: 3 1<|eot_id|>" + (
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    assert tokenizer.unk_token_id not in tokenizer(text, add_special_tokens=False).input_ids


def test_held_out_accuracy(bundled, recipe):
    """A sample of the held-out sorting prompts (never trained on) is mostly answered exactly, the demo prompt too."""
    model, tokenizer = bundled
    held_out, _ = recipe.held_out_examples(seed=0, per_task=300)
    sample = random.Random(0).sample(held_out["sorting"], 60)
    assert recipe.accuracy(model, tokenizer, sample) >= 0.65  # 77% on all 296 held-out sorts
    assert held_out["sorting"][0] == (recipe.DEMO_PROMPT, recipe.DEMO_ANSWER)
    assert recipe.accuracy(model, tokenizer, [(recipe.DEMO_PROMPT, recipe.DEMO_ANSWER)]) == 1.0


def test_training_recipe_runs(recipe):
    """The script's collator and Trainer wiring: a few steps on its own data and tokenizer lower the loss."""
    from llada_hf.training import DataCollatorForDiffusionSFT

    train = recipe.training_examples(seed=1, count=64, excluded=set(), tasks=list(recipe.TASKS))
    tokenizer = recipe.build_tokenizer([text for example in train for text in example])
    torch.manual_seed(0)
    model = recipe.build_model(tokenizer, smoke=True)
    collator = DataCollatorForDiffusionSFT(mask_token_id=tokenizer.mask_token_id, eos_token_id=tokenizer.eos_token_id)
    batch = collator([recipe.sft_feature(tokenizer, prompt, answer) for prompt, answer in train])
    assert (batch["labels"] != -100).any() and (batch["input_ids"] == tokenizer.mask_token_id).any()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
