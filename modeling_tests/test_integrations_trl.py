"""TRL's trainers refuse our models at construction (they would train a next-token objective); the stock `Trainer`
and our diffusion DPO trainer still work."""

import math

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import Trainer, TrainingArguments

from llada_hf import LLaDA2MoeConfig, LLaDA2MoeModelLM
from llada_hf.training import DataCollatorForDiffusionSFT
from llada_hf.training.preference import DataCollatorForDiffusionPreference, DiffusionDPOTrainer
from reversal_task import build_tokenizer, tiny_llada


trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

ALTERNATIVES = r"transformers\.Trainer.*DataCollatorForDiffusionSFT.*DiffusionDPOTrainer"


def tiny_llada2(tokenizer) -> LLaDA2MoeModelLM:
    torch.manual_seed(0)
    config = LLaDA2MoeConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=48, moe_intermediate_size=16, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, num_experts=4, num_experts_per_tok=2, n_group=2,
        topk_group=1, first_k_dense_replace=1, mask_token_id=tokenizer.mask_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    return LLaDA2MoeModelLM(config)


FAMILIES = {"llada": tiny_llada, "llada2_moe": tiny_llada2}


def trl_args(config_class, tmp_path, **kwargs):
    return config_class(
        output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=2, report_to=[], use_cpu=True,
        save_strategy="no", **kwargs,
    )  # fmt: skip


def sft_trainer(model, tokenizer, tmp_path, **kwargs):
    dataset = datasets.Dataset.from_list([{"prompt": "1 2 3 4 =", "completion": " 4 3 2 1"}] * 4)
    args = trl_args(trl.SFTConfig, tmp_path)
    return trl.SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer, **kwargs)


def dpo_trainer(model, tokenizer, tmp_path, **kwargs):
    dataset = datasets.Dataset.from_list([{"prompt": "1 2 3 4 =", "chosen": " 4 3 2 1", "rejected": " 1 2 3 4"}] * 4)
    args = trl_args(trl.DPOConfig, tmp_path)
    return trl.DPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer, **kwargs)


def grpo_trainer(model, tokenizer, tmp_path, **kwargs):
    dataset = datasets.Dataset.from_list([{"prompt": "1 2 3 4 ="}] * 4)
    args = trl_args(trl.GRPOConfig, tmp_path, num_generations=2)

    def reward(completions, **_):
        return [0.0] * len(completions)

    return trl.GRPOTrainer(
        model=model, reward_funcs=reward, args=args, train_dataset=dataset, processing_class=tokenizer, **kwargs
    )


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(
    "make_trainer, tag",
    [(sft_trainer, "sft"), (dpo_trainer, "dpo"), (grpo_trainer, "grpo")],
    ids=["SFTTrainer", "DPOTrainer", "GRPOTrainer"],
)
def test_trl_trainers_refuse_our_models_and_name_the_alternatives(family, make_trainer, tag, tmp_path):
    tokenizer = build_tokenizer()
    model = FAMILIES[family](tokenizer)
    # DPOTrainer would otherwise load its reference model from `model.name_or_path`
    kwargs = {"ref_model": FAMILIES[family](tokenizer)} if make_trainer is dpo_trainer else {}
    with pytest.raises(ValueError, match=ALTERNATIVES) as error:
        make_trainer(model, tokenizer, tmp_path, **kwargs)
    assert f"tagged '{tag}'" in str(error.value) and type(model).__name__ in str(error.value)
    assert "trl" not in (model.model_tags or [])


@pytest.mark.parametrize("make_trainer", [sft_trainer, dpo_trainer], ids=["SFTTrainer", "DPOTrainer"])
def test_trl_trainers_refuse_peft_wrapped_models(make_trainer, tmp_path):
    tokenizer = build_tokenizer()
    model = get_peft_model(tiny_llada(tokenizer), LoraConfig(target_modules=["q_proj", "v_proj"]))
    with pytest.raises(ValueError, match=ALTERNATIVES):
        make_trainer(model, tokenizer, tmp_path)


def test_sft_trainer_refuses_when_it_applies_the_peft_config_itself(tmp_path):
    tokenizer = build_tokenizer()
    peft_config = LoraConfig(target_modules=["q_proj", "v_proj"])
    with pytest.raises(ValueError, match=ALTERNATIVES):
        sft_trainer(tiny_llada(tokenizer), tokenizer, tmp_path, peft_config=peft_config)


def test_other_tags_are_still_added():
    model = tiny_llada(build_tokenizer())
    model.add_model_tags(["custom", "trl-free"])
    assert {"custom", "trl-free"} <= set(model.model_tags)


def test_stock_trainer_still_trains(tmp_path, one_thread):
    tokenizer = build_tokenizer()
    model = tiny_llada(tokenizer)
    prompt, answer = tokenizer.encode("1 2 3 4 ="), tokenizer.encode("4 3 2 1") + [tokenizer.eos_token_id]
    features = [{"input_ids": prompt + answer, "labels": [-100] * len(prompt) + answer}] * 8
    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=2, logging_steps=1, save_strategy="no",
        report_to=[], use_cpu=True, disable_tqdm=True,
    )  # fmt: skip
    collator = DataCollatorForDiffusionSFT(
        mask_token_id=tokenizer.mask_token_id, eos_token_id=tokenizer.eos_token_id, seed=0
    )
    trainer = Trainer(model=model, args=args, train_dataset=features, data_collator=collator)
    trainer.train()
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert len(losses) == 2 and all(math.isfinite(loss) and loss > 0 for loss in losses)
    assert "trl" not in (model.model_tags or [])


def test_diffusion_dpo_trainer_is_not_refused(tmp_path):
    tokenizer = build_tokenizer()
    pair = {
        "prompt_input_ids": tokenizer.encode("1 2 3 4 ="),
        "chosen_input_ids": tokenizer.encode("4 3 2 1"),
        "rejected_input_ids": tokenizer.encode("1 2 3 4"),
    }
    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=2, max_steps=1, save_strategy="no", report_to=[],
        use_cpu=True, disable_tqdm=True,
    )  # fmt: skip
    collator = DataCollatorForDiffusionPreference(
        mask_token_id=tokenizer.mask_token_id, pad_token_id=tokenizer.pad_token_id, mc_num=2, seed=0
    )
    trainer = DiffusionDPOTrainer(
        model=tiny_llada(tokenizer), args=args, train_dataset=[pair] * 2, data_collator=collator
    )
    assert math.isfinite(trainer.train().training_loss)
