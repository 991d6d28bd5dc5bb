"""bitsandbytes 4-bit (nf4, double quant) and 8-bit loading of both families, on bitsandbytes' CPU backend.

Every test here builds its own tiny checkpoint: bitsandbytes' CPU 4-bit kernel needs input features that are a
multiple of its block size (64), which the shared fixtures (hidden size 32) are not.
"""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from transformers import AutoModelForCausalLM, BitsAndBytesConfig, Trainer, TrainingArguments

from llada_hf import LLaDA2MoeConfig, LLaDA2MoeModelLM, LLaDAConfig, LLaDAModelLM
from llada_hf.integrations.quantization import LLaDA2MoeLinearExperts, count_parameters_by_kind
from llada_hf.modeling_diffusion_utils import DiffusionRMSNorm
from llada_hf.training import DataCollatorForDiffusionPretraining


bnb = pytest.importorskip("bitsandbytes", reason="bitsandbytes is not installed (`pip install llada_hf[quant]`)")

FIXTURES = Path(__file__).parent / "fixtures"
VOCAB = 128
MASK, EOS = 127, 126


def _bnb_cpu_backend_error() -> str | None:
    """Why bitsandbytes cannot run 4-bit and 8-bit layers on this CPU, or None when it can."""
    try:
        x = torch.randn(2, 64)
        linear = nn.Linear(64, 64, bias=False)
        four_bit = bnb.nn.Linear4bit(64, 64, bias=False, compute_dtype=torch.float32, quant_type="nf4")
        four_bit.weight = bnb.nn.Params4bit(linear.weight.data.clone(), requires_grad=False, quant_type="nf4")
        four_bit.to("cpu")(x)
        eight_bit = bnb.nn.Linear8bitLt(64, 64, bias=False, has_fp16_weights=False)
        eight_bit.weight = bnb.nn.Int8Params(linear.weight.data.clone(), requires_grad=False, has_fp16_weights=False)
        eight_bit.to("cpu")(x)
    except Exception as error:  # any failure means: no usable CPU backend
        return f"bitsandbytes {bnb.__version__} has no working CPU backend here: {type(error).__name__}: {error}"
    return None


_BACKEND_ERROR = _bnb_cpu_backend_error()
pytestmark = pytest.mark.skipif(_BACKEND_ERROR is not None, reason=_BACKEND_ERROR or "")

QUANTIZATION = {
    "nf4": dict(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.float32,
    ),
    "int8": dict(load_in_8bit=True),
}
QUANTIZED_LINEAR = {"nf4": "Linear4bit", "int8": "Linear8bitLt"}


def tiny_llada() -> LLaDAModelLM:
    config = LLaDAConfig(
        d_model=64, n_heads=4, n_kv_heads=4, n_layers=2, mlp_hidden_size=128, vocab_size=VOCAB,
        embedding_size=VOCAB, max_sequence_length=128, mask_token_id=MASK, eos_token_id=EOS, pad_token_id=EOS,
    )  # fmt: skip
    return LLaDAModelLM(config)


def tiny_llada2_config(**kwargs) -> LLaDA2MoeConfig:
    return LLaDA2MoeConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, moe_intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, num_experts=4, num_experts_per_tok=2, n_group=2,
        topk_group=1, first_k_dense_replace=1, max_position_embeddings=128, mask_token_id=MASK, eos_token_id=EOS,
        pad_token_id=EOS, **kwargs,
    )  # fmt: skip


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Tiny random checkpoints of both families in the released format, with a non-zero LLaDA2 expert bias."""
    root = tmp_path_factory.mktemp("quantization")
    torch.manual_seed(0)
    llada2 = LLaDA2MoeModelLM(tiny_llada2_config())
    with torch.no_grad():
        for layer in llada2.model.layers[llada2.config.first_k_dense_replace :]:
            layer.mlp.gate.expert_bias.copy_(torch.randn(llada2.config.num_experts) * 0.1)
    paths = {"llada": root / "llada", "llada2": root / "llada2"}
    tiny_llada().save_pretrained(paths["llada"])
    llada2.save_pretrained(paths["llada2"])
    return paths


def inputs() -> torch.Tensor:
    return torch.randint(0, MASK, (2, 16), generator=torch.Generator().manual_seed(0))


def load(path: Path, mode: str | None, dtype=torch.float32):
    quantization_config = BitsAndBytesConfig(**QUANTIZATION[mode]) if mode else None
    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype, quantization_config=quantization_config).eval()


@pytest.mark.parametrize("mode", ["nf4", "int8"])
@pytest.mark.parametrize("family", ["llada", "llada2"])
def test_quantized_load_keeps_head_router_and_norms(checkpoints, family, mode):
    model = load(checkpoints[family], mode)
    quantized = QUANTIZED_LINEAR[mode]
    linears = [module for name, module in model.named_modules() if name.endswith("proj") or name.endswith("dense")]
    assert {type(module).__name__ for module in linears} == {quantized}
    assert type(model.lm_head) is nn.Linear and model.lm_head.weight.dtype == torch.float32
    norms = [module for module in model.modules() if isinstance(module, DiffusionRMSNorm)]
    assert norms and all(norm.weight.dtype == torch.float32 for norm in norms)
    if family == "llada2":
        moe = model.model.layers[1].mlp
        assert isinstance(moe.experts, LLaDA2MoeLinearExperts)  # so the routed experts are quantized too
        assert type(moe.experts[0].down_proj).__name__ == quantized
        assert moe.gate.weight.dtype == torch.float32 and moe.gate.expert_bias.dtype == torch.float32
        assert moe.gate.expert_bias.abs().sum() > 0  # loaded, not left at its zero initialisation

    reference = load(checkpoints[family], None)
    assert model.get_memory_footprint() < 0.6 * reference.get_memory_footprint()
    with torch.no_grad():
        logits, expected = model(inputs()).logits, reference(inputs()).logits
    assert logits.dtype == torch.float32
    similarity = torch.cosine_similarity(logits.flatten(), expected.flatten(), dim=0)
    assert similarity > (0.99 if mode == "int8" else 0.95)
    assert not torch.equal(logits, expected)


def test_router_stored_in_float32_under_bfloat16(checkpoints):
    model = AutoModelForCausalLM.from_pretrained(checkpoints["llada2"], dtype=torch.bfloat16)
    gate = model.model.layers[1].mlp.gate
    assert gate.weight.dtype == torch.float32 and gate.expert_bias.dtype == torch.float32
    assert model.model.layers[1].mlp.experts.gate_up_proj.dtype == torch.bfloat16


@pytest.mark.parametrize("family", ["llada", "llada2"])
def test_quantized_generate_and_likelihood(checkpoints, family):
    from llada_hf.training.likelihood import estimate_log_likelihood

    model = load(checkpoints[family], "nf4")
    prompt = torch.randint(0, EOS, (1, 6), generator=torch.Generator().manual_seed(1))
    output = model.generate(prompt, max_new_tokens=8, steps=8, block_length=8, temperature=0.0, mask_token_id=MASK)
    sequences = output.sequences if hasattr(output, "sequences") else output
    assert sequences.shape[0] == 1 and torch.equal(sequences[:, :6], prompt)
    assert not (sequences[:, 6:] == MASK).any()
    log_likelihood = estimate_log_likelihood(
        model, [prompt[0].tolist()], [[3, 4, 5]], mc_num=4, batch_size=4, seed=0, progress_bar=False
    )
    assert log_likelihood.shape == (1,) and torch.isfinite(log_likelihood).all() and log_likelihood.item() < 0


def _lora(model):
    peft = pytest.importorskip("peft")
    model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    targets = ["q_proj", "v_proj", "query_key_value", "gate_proj", "up_proj", "down_proj"]
    return peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=8, target_modules=targets, lora_dropout=0.0))


def _lora_b(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters() if "lora_B" in name}


def _frozen_quantized(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.dtype == torch.uint8}


@pytest.mark.parametrize("family", ["llada", "llada2"])
def test_qlora_trainer_step(checkpoints, family, tmp_path):
    model = _lora(load(checkpoints[family], "nf4"))
    if family == "llada2":  # the routed experts are quantized linears, so they get adapters too
        assert any("experts.3.down_proj.lora_B" in name for name in _lora_b(model))
    lora_before, frozen_before = _lora_b(model), _frozen_quantized(model)
    assert lora_before and frozen_before
    tokens = torch.randint(0, EOS, (4, 16), generator=torch.Generator().manual_seed(2))
    args = TrainingArguments(
        output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=2, learning_rate=1e-2, report_to="none",
        save_strategy="no", use_cpu=True, logging_steps=1, remove_unused_columns=False,
    )  # fmt: skip
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=[{"input_ids": row} for row in tokens],
        data_collator=DataCollatorForDiffusionPretraining(mask_token_id=MASK, seed=0),
    )
    result = trainer.train()
    assert torch.isfinite(torch.tensor(result.training_loss))
    lora_after = _lora_b(model)
    assert any(not torch.equal(lora_before[n], lora_after[n]) for n in lora_before)
    assert all(torch.equal(p, frozen_before[n]) for n, p in _frozen_quantized(model).items())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_linear_experts_load_released_keys_and_match_fused(checkpoints, dtype):
    fused = AutoModelForCausalLM.from_pretrained(checkpoints["llada2"], dtype=dtype).eval()
    # What `from_pretrained` builds under bitsandbytes, before any layer is swapped: per-expert `nn.Linear`s.
    config = tiny_llada2_config(quantization_config={"quant_method": "bitsandbytes"})
    linear = LLaDA2MoeModelLM(config).to(dtype).eval()
    assert isinstance(linear.model.layers[1].mlp.experts, LLaDA2MoeLinearExperts)
    linear.load_state_dict(load_file(checkpoints["llada2"] / "model.safetensors"), strict=True)  # released names
    with torch.no_grad():
        expected, actual = fused(inputs()).logits, linear(inputs()).logits
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5 if dtype == torch.float32 else 1e-12)


def test_parameter_census_of_released_shapes():
    """On the meta device: how much of LLaDA2.0-mini and LLaDA-8B a linear-layer quantizer converts."""
    llada2_config = json.loads((FIXTURES / "llada2-mini.config.json").read_text())
    llada_config = json.loads((FIXTURES / "llada-8b-instruct.config.json").read_text())
    with torch.device("meta"):
        fused = count_parameters_by_kind(LLaDA2MoeModelLM(LLaDA2MoeConfig(**llada2_config)))
        linear = count_parameters_by_kind(
            LLaDA2MoeModelLM(LLaDA2MoeConfig(**llada2_config, quantization_config={"quant_method": "bitsandbytes"}))
        )
        llada = count_parameters_by_kind(LLaDAModelLM(LLaDAConfig(**llada_config)))
    assert sum(fused.values()) == sum(linear.values())
    assert fused["fused_experts"] / sum(fused.values()) > 0.9  # left fused, 4-bit would save almost nothing
    assert linear["fused_experts"] == 0
    assert linear["quantized"] == fused["quantized"] + fused["fused_experts"]
    assert linear["linear_kept"] == llada2_config["hidden_size"] * llada2_config["vocab_size"]  # the LM head
    assert llada["fused_experts"] == 0 and llada["linear_kept"] == 4096 * 126464


@pytest.mark.parametrize("mode", ["nf4", "int8"])
def test_save_quantized_llada_reloads(checkpoints, mode, tmp_path):
    model = load(checkpoints["llada"], mode)
    # Save before running on CPU: bitsandbytes' CPU kernel repacks 4-bit weights in place at the first forward.
    model.save_pretrained(tmp_path)
    keys = load_file(tmp_path / "model.safetensors").keys()
    assert "model.transformer.blocks.0.q_proj.weight" in keys and "model.transformer.ff_out.weight" in keys
    saved_config = json.loads((tmp_path / "config.json").read_text())
    assert saved_config["quantization_config"]["quant_method"] == "bitsandbytes"
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(reloaded.model.layers[0].self_attn.q_proj).__name__ == QUANTIZED_LINEAR[mode]
    with torch.no_grad():
        torch.testing.assert_close(reloaded(inputs()).logits, model(inputs()).logits, rtol=0, atol=0)


@pytest.mark.parametrize("mode", ["nf4", "int8"])
def test_save_quantized_llada2_reloads(checkpoints, mode, tmp_path):
    model = load(checkpoints["llada2"], mode)
    model.save_pretrained(tmp_path)  # before the first forward, as above
    keys = load_file(tmp_path / "model.safetensors").keys()
    assert "model.layers.1.mlp.experts.0.gate_proj.weight" in keys  # released names
    if mode == "nf4":
        assert "model.layers.1.mlp.experts.0.gate_proj.weight.absmax" in keys  # bitsandbytes' quantization state
    reloaded, info = AutoModelForCausalLM.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["unexpected_keys"] and not info["missing_keys"] and not info["mismatched_keys"]
    experts = reloaded.model.layers[1].mlp.experts
    assert isinstance(experts, LLaDA2MoeLinearExperts)
    assert type(experts[3].up_proj).__name__ == QUANTIZED_LINEAR[mode]
    with torch.no_grad():
        torch.testing.assert_close(reloaded.eval()(inputs()).logits, model(inputs()).logits, rtol=0, atol=0)
