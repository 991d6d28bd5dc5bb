"""DPO on ELBO estimates with the Trainer: shared (t, mask) draws for policy and reference, and a growing margin."""

import random

import pytest
import torch
from transformers import TrainingArguments

from llada_hf.training.likelihood import estimate_log_likelihood
from llada_hf.training.preference import DataCollatorForDiffusionPreference, DiffusionDPOTrainer
from reversal_task import build_tokenizer, random_digits, reversal_example, tiny_llada


def preference_pairs(tokenizer, count: int, seed: int) -> list[dict]:
    """Chosen: the prompt's digits reversed; rejected: random digits."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        prompt, answer = reversal_example(rng)
        prompt_ids = tokenizer.encode(prompt)
        rows.append(
            {
                "prompt_input_ids": prompt_ids,
                "chosen_input_ids": tokenizer.encode(answer),
                "rejected_input_ids": tokenizer.encode(random_digits(rng)),
            }
        )
    return rows


def elbo_margin(model, pairs: list[dict]) -> float:
    """Mean of ELBO(chosen) - ELBO(rejected) on `pairs` (fixed draws)."""
    prompts = [pair["prompt_input_ids"] for pair in pairs] * 2
    answers = [pair["chosen_input_ids"] for pair in pairs] + [pair["rejected_input_ids"] for pair in pairs]
    scores = estimate_log_likelihood(model, prompts, answers, mc_num=16, batch_size=64, seed=0, progress_bar=False)
    chosen, rejected = scores.chunk(2)
    return (chosen - rejected).mean().item()


def dpo_trainer(tmp_path, tokenizer, model, max_steps: int) -> DiffusionDPOTrainer:
    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=8, max_steps=max_steps, learning_rate=1e-2,
        logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True, seed=0,
    )  # fmt: skip
    collator = DataCollatorForDiffusionPreference(
        mask_token_id=tokenizer.mask_token_id, pad_token_id=tokenizer.pad_token_id, mc_num=4, seed=0
    )
    return DiffusionDPOTrainer(
        model=model, beta=0.1, args=args, train_dataset=preference_pairs(tokenizer, 8 * max_steps, seed=0),
        data_collator=collator,
    )  # fmt: skip


def test_collator_draws_each_answer_mc_num_times_and_never_masks_the_prompt():
    tokenizer = build_tokenizer()
    collator = DataCollatorForDiffusionPreference(
        mask_token_id=tokenizer.mask_token_id, pad_token_id=tokenizer.pad_token_id, mc_num=4, seed=0
    )
    pairs = preference_pairs(tokenizer, 3, seed=1)
    batch = collator(pairs)
    assert batch["sequence_index"].tolist() == [s for s in range(6) for _ in range(4)]  # chosen 0..2, rejected 3..5
    masked = batch["input_ids"] == tokenizer.mask_token_id
    assert not masked[:, :5].any()  # the 5 prompt tokens
    assert torch.equal(masked, batch["labels"] != -100)
    counts = masked.sum(dim=1).view(6, 4)
    chosen_lengths = 4
    assert (counts[:3].sort(dim=1).values == torch.arange(1, 5)).all()  # stratified over 1..L within a sequence
    assert torch.allclose(batch["p_mask"], counts.flatten() / chosen_lengths)


def test_policy_and_reference_share_draws_and_the_margin_grows(tmp_path):
    tokenizer = build_tokenizer()
    model = tiny_llada(tokenizer, seed=2)
    held_out = preference_pairs(tokenizer, 32, seed=123)
    margin_before = elbo_margin(model.eval(), held_out)

    trainer = dpo_trainer(tmp_path, tokenizer, model, max_steps=40)
    reference = trainer.ref_model
    assert reference is not model and not any(p.requires_grad for p in reference.parameters())
    reference_weights = {name: p.clone() for name, p in reference.named_parameters()}
    seen = {"policy": [], "reference": []}

    def recorder(key):
        return lambda module, args, kwargs: seen[key].append(kwargs["input_ids"])

    hooks = [
        module.register_forward_pre_hook(recorder(key), with_kwargs=True)
        for key, module in (("policy", model), ("reference", reference))
    ]
    trainer.train()
    for hook in hooks:
        hook.remove()

    # every step scores the same noised rows (same t, same mask) with both models
    assert len(seen["policy"]) == len(seen["reference"]) == 40
    for policy_rows, reference_rows in zip(seen["policy"], seen["reference"]):
        assert torch.equal(policy_rows, reference_rows)
        assert (policy_rows == tokenizer.mask_token_id).any()
    # at the first step the policy is the reference: margins are exactly 0 and the loss is log 2
    first = next(log for log in trainer.state.log_history if "loss" in log)
    assert first["rewards/margins"] == pytest.approx(0.0, abs=1e-5)
    assert first["loss"] == pytest.approx(0.6931, abs=1e-3)
    assert all(torch.equal(p, reference_weights[name]) for name, p in reference.named_parameters())

    margin_after = elbo_margin(model.eval(), held_out)
    assert margin_after > margin_before + 1.5, (margin_before, margin_after)
    # single batches of 8 are noisy: compare the first and last ten steps
    logs = [log for log in trainer.state.log_history if "loss" in log]
    first_ten, last_ten = logs[:10], logs[-10:]
    assert sum(log["rewards/accuracies"] for log in last_ten) / 10 > 0.6
    assert sum(log["loss"] for log in last_ten) < sum(log["loss"] for log in first_ten)


def test_beta_must_be_positive(tmp_path):
    tokenizer = build_tokenizer()
    with pytest.raises(ValueError, match="beta"):
        DiffusionDPOTrainer(model=tiny_llada(tokenizer), beta=0.0, args=TrainingArguments(str(tmp_path)))
