"""PEFT LoRA on both families (default target modules, Trainer fine-tune, adapter save/reload) and gradient
checkpointing."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

from llada_hf import LLaDA2MoeConfig, LLaDA2MoeModelLM, LLaDAConfig, LLaDAModelLM
from llada_hf.integrations.peft import PEFT_TARGET_MODULES
from llada_hf.training import DataCollatorForBlockDiffusion, DataCollatorForDiffusionSFT


VOCAB, MASK, EOS = 48, 47, 46
ANSWER = [7, 7, 7, EOS]


def tiny_llada() -> LLaDAModelLM:
    torch.manual_seed(0)
    config = LLaDAConfig(
        d_model=32, n_heads=4, n_kv_heads=4, n_layers=2, mlp_hidden_size=64, vocab_size=VOCAB, embedding_size=VOCAB,
        max_sequence_length=64, mask_token_id=MASK, eos_token_id=EOS, pad_token_id=EOS,
    )  # fmt: skip
    return LLaDAModelLM(config)


def tiny_llada2() -> LLaDA2MoeModelLM:
    torch.manual_seed(0)
    config = LLaDA2MoeConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=48, moe_intermediate_size=16, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, num_experts=4, num_experts_per_tok=2, n_group=2,
        topk_group=1, first_k_dense_replace=1, mask_token_id=MASK, eos_token_id=EOS, pad_token_id=EOS,
    )  # fmt: skip
    return LLaDA2MoeModelLM(config)


FAMILIES = {
    "llada": (tiny_llada, lambda: DataCollatorForDiffusionSFT(mask_token_id=MASK, eos_token_id=EOS, seed=0)),
    "llada2_moe": (
        tiny_llada2,
        lambda: DataCollatorForBlockDiffusion(mask_token_id=MASK, eos_token_id=EOS, block_size=4, seed=0),
    ),
}


def constant_answer_task(count: int, seed: int = 0) -> list[dict]:
    """Prompt: 5 random tokens; answer: always `ANSWER`. A random tiny base cannot learn much more in a few dozen
    LoRA steps; this is enough to see the adapter train."""
    generator = torch.Generator().manual_seed(seed)
    return [
        {"input_ids": torch.randint(0, 40, (5,), generator=generator).tolist() + ANSWER, "labels": [-100] * 5 + ANSWER}
        for _ in range(count)
    ]


def test_import_does_not_load_peft_and_targets_register_when_it_is_used():
    """`import llada_hf` leaves PEFT (and bitsandbytes) alone; a model created after `import peft` registers the
    default targets."""
    code = (
        "import sys, llada_hf\n"
        "assert 'peft' not in sys.modules and 'bitsandbytes' not in sys.modules, 'imported too early'\n"
        "from peft import LoraConfig, get_peft_model\n"
        "from test_training_peft import tiny_llada\n"
        "model = get_peft_model(tiny_llada(), LoraConfig(r=2))\n"
        "print(sorted({n.rsplit('.', 1)[-1] for n, m in model.named_modules() if hasattr(m, 'lora_A')}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parent, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == str(sorted(PEFT_TARGET_MODULES["llada"]))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_lora_config_without_target_modules_adapts_the_attention_projections(family):
    model = get_peft_model(FAMILIES[family][0](), LoraConfig(r=4))
    adapted = {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if hasattr(module, "lora_A")}
    assert adapted == set(PEFT_TARGET_MODULES[family])
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_lora_fine_tune_through_the_trainer_saves_an_adapter_that_reloads(family, tmp_path):
    make_model, make_collator = FAMILIES[family]
    base = make_model()
    with torch.no_grad():  # with a random init's tiny head, logits stay near uniform whatever the adapter does
        base.lm_head.weight.mul_(20)
    base.save_pretrained(tmp_path / "base")
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tmp_path / "base"), LoraConfig(r=8, lora_alpha=16))
    probe = make_collator()(constant_answer_task(16, seed=1))  # a fixed noised batch to measure the loss on

    def probe_loss() -> float:
        model.eval()
        with torch.no_grad():
            return model(**probe).loss.item()

    before = probe_loss()
    args = TrainingArguments(
        output_dir=str(tmp_path / "run"), per_device_train_batch_size=16, max_steps=30, learning_rate=1e-2,
        report_to=[], save_strategy="no", use_cpu=True, seed=0, disable_tqdm=True,
        activation_checkpointing=True, activation_checkpointing_kwargs={"use_reentrant": False},
    )  # fmt: skip
    Trainer(model=model, args=args, train_dataset=constant_answer_task(256), data_collator=make_collator()).train()
    after = probe_loss()
    assert after < 0.8 * before

    model.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").exists()
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tmp_path / "base"), tmp_path / "adapter")
    base = AutoModelForCausalLM.from_pretrained(tmp_path / "base").eval()
    inputs = {key: probe[key] for key in ("input_ids", "attention_mask", "position_ids") if key in probe}
    with torch.no_grad():
        expected = model(**inputs).logits
        assert not torch.allclose(base(**inputs).logits, expected, atol=1e-3)  # the adapter changed the model
        torch.testing.assert_close(reloaded.eval()(**inputs).logits, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_gradient_checkpointing_gives_the_same_gradients(family):
    make_model, make_collator = FAMILIES[family]
    batch = make_collator()(constant_answer_task(4))
    gradients = []
    for checkpointing in (False, True):
        model = make_model().train()
        if checkpointing:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        assert model.model.gradient_checkpointing is checkpointing
        model(**batch).loss.backward()
        gradients.append({name: p.grad for name, p in model.named_parameters() if p.grad is not None})
    assert gradients[0].keys() == gradients[1].keys() and len(gradients[0]) > 0
    for name, gradient in gradients[0].items():
        torch.testing.assert_close(gradients[1][name], gradient, msg=name)
