"""Confidence-aware parallel (CAP) training: the confidence objective, how the forward adds it to the diffusion loss
(`config.confidence_loss_weight`), every diffusion collator, bf16, gradient accumulation and the Trainer's logs; and
(slow) CAP fine-tuning of the committed addition and parity checkpoints (`fixtures/tiny-llada-<task>`, made by
`examples/make_task_checkpoint.py`) sharpens held-out correct predictions more than plain SFT; and the parity
checkpoint decodes sequentially, as `benchmarks/bench_cap.py` needs."""

import math

import pytest
import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from llada_hf import LLaDA2MoeConfig, LLaDA2MoeModelLM, LLaDAConfig, LLaDAModelLM
from llada_hf.training import (
    DataCollatorForBlockDiffusion,
    DataCollatorForDiffusionPretraining,
    DataCollatorForDiffusionSFT,
    DataCollatorForPackedDiffusion,
    DiffusionLossPartsCallback,
    confidence_loss,
    masked_diffusion_loss,
)

from toy_tasks import PAIR_TASKS, pair_tokenizer


VOCAB, MASK, EOS = 32, 31, 30


def tiny_llada(seed=0, **overrides) -> LLaDAModelLM:
    torch.manual_seed(seed)
    values = dict(
        d_model=64, n_heads=4, n_kv_heads=4, n_layers=2, mlp_hidden_size=128, vocab_size=VOCAB, embedding_size=VOCAB,
        max_sequence_length=64, mask_token_id=MASK, eos_token_id=EOS, pad_token_id=EOS,
    )  # fmt: skip
    values.update(overrides)
    return LLaDAModelLM(LLaDAConfig(**values))


def tiny_llada2(seed=0, **overrides) -> LLaDA2MoeModelLM:
    torch.manual_seed(seed)
    config = LLaDA2MoeConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=48, moe_intermediate_size=16, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, num_experts=4, num_experts_per_tok=2, n_group=2,
        topk_group=1, first_k_dense_replace=1, mask_token_id=MASK, eos_token_id=EOS, pad_token_id=EOS, **overrides,
    )  # fmt: skip
    return LLaDA2MoeModelLM(config)


def entropy(probs: list[float]) -> float:
    return -sum(p * math.log(p) for p in probs)


def test_confidence_loss_on_hand_built_logits_is_the_hand_computed_value():
    # Logits are log-probabilities, so the softmax gives these distributions back.
    sharp, flat, even = [0.8, 0.1, 0.1], [0.5, 0.25, 0.25], [0.2, 0.3, 0.5]
    distributions = [
        [sharp, flat, even, sharp],  # row 0: targets 0, 0, 2 correct (supervised), position 3 not supervised
        [flat, even, sharp, even],  # row 1: supervised positions all predicted wrong
        [even, flat, sharp, flat],  # row 2: one correct (position 1), one wrong (position 0)
    ]
    logits = torch.tensor(distributions).log()
    labels = torch.tensor([[0, 0, 2, -100], [1, 0, 1, -100], [0, 0, -100, -100]])
    row0 = (entropy(sharp) + entropy(flat) + entropy(even)) / 3
    row2 = entropy(flat)

    per_row = confidence_loss(logits, labels, reduction="none")
    torch.testing.assert_close(per_row, torch.tensor([row0, 0.0, row2]))
    value = confidence_loss(logits, labels)
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx((row0 + row2) / 2, rel=1e-6)  # row 1 has no correct position: left out

    # bf16 logits: computed in float32, close to the float32 value
    assert confidence_loss(logits.bfloat16(), labels).dtype == torch.float32
    assert confidence_loss(logits.bfloat16(), labels).item() == pytest.approx(value.item(), rel=2e-2)

    # Nothing correct at all: 0, and backward still works
    wrong = torch.tensor([[1, 1, 1, -100]])
    leaf = logits[1:2].clone().requires_grad_()
    zero = confidence_loss(leaf, wrong)
    assert zero.item() == 0.0
    zero.backward()
    assert leaf.grad.abs().sum() == 0


def test_confidence_loss_gradient_sharpens_only_correct_supervised_positions():
    logits = torch.tensor([[[2.0, 1.0, 0.0], [2.0, 1.0, 0.0], [2.0, 1.0, 0.0]]], requires_grad=True)
    labels = torch.tensor([[0, 1, -100]])  # position 0 correct, position 1 wrong, position 2 unsupervised
    confidence_loss(logits, labels).backward()
    assert logits.grad[0, 1:].abs().sum() == 0
    # Descending the entropy raises the argmax logit relative to the others
    assert logits.grad[0, 0, 0] < 0 and logits.grad[0, 0, 2] > 0


def fixed_batch():
    clean = torch.tensor([[3, 4, 5, 6, 7, 8], [9, 10, 11, 12, 13, EOS]])
    masked = torch.tensor([[1, 0, 1, 1, 0, 0], [0, 0, 1, 0, 1, 1]], dtype=torch.bool)
    return {
        "input_ids": clean.masked_fill(masked, MASK),
        "labels": torch.where(masked, clean, -100),
        "p_mask": torch.tensor([0.5, 0.25]),
        "loss_normalizer": torch.tensor([6.0, 4.0]),
    }


def predicted_right(model, batch):
    """`batch` with the labels replaced, at the masked positions, by what `model` predicts there."""
    with torch.no_grad():
        predictions = model(batch["input_ids"]).logits.argmax(-1)
    return batch | {"labels": torch.where(batch["labels"] != -100, predictions, -100)}


@pytest.mark.parametrize("make_model", [tiny_llada, tiny_llada2], ids=["llada", "llada2"])
def test_weight_zero_is_exactly_the_diffusion_loss_and_positive_weight_adds_the_confidence_part(make_model):
    batch = fixed_batch()
    default = make_model()(**batch)
    assert default.diffusion_loss is None and default.confidence_loss is None
    expected = masked_diffusion_loss(default.logits, batch["labels"], batch["p_mask"], batch["loss_normalizer"])
    assert torch.equal(default.loss, expected)
    zero = make_model(confidence_loss_weight=0.0)(**batch)
    assert torch.equal(zero.loss, default.loss) and zero.confidence_loss is None

    model = make_model()
    batch = predicted_right(model, batch)  # so that the confidence part is not 0
    model.config.confidence_loss_weight = 0.7
    cap = model(**batch)
    assert torch.equal(cap.diffusion_loss, masked_diffusion_loss(cap.logits, batch["labels"], batch["p_mask"],
                                                                 batch["loss_normalizer"]))  # fmt: skip
    assert torch.equal(cap.confidence_loss, confidence_loss(cap.logits, batch["labels"]))
    assert cap.confidence_loss > 0
    assert cap.loss.item() == pytest.approx(cap.diffusion_loss.item() + 0.7 * cap.confidence_loss.item(), rel=1e-6)
    assert model(batch["input_ids"]).loss is None  # inference is unaffected


@pytest.mark.parametrize("weight", [-1.0, float("nan"), float("inf")])
def test_bad_confidence_loss_weight_is_refused_by_name(weight):
    """Assignment only type-checks the field (the value rules run at construction and saving), so the forward checks
    it again."""
    model = tiny_llada()
    model.config.confidence_loss_weight = weight
    with pytest.raises(ValueError, match="confidence_loss_weight"):
        model(**fixed_batch())


@pytest.mark.parametrize("weight", ["0.5", True])
def test_confidence_loss_weight_of_the_wrong_type_is_refused_on_assignment(weight):
    model = tiny_llada()
    with pytest.raises(TypeError, match="confidence_loss_weight"):
        model.config.confidence_loss_weight = weight


def collator_batches():
    features = [
        {"input_ids": [3, 4, 5, 6, 7, 8, 9, 10], "labels": [-100, -100, 5, 6, 7, 8, 9, 10]},
        {"input_ids": [11, 12, 13, 14, 15, 16], "labels": [-100, 12, 13, 14, 15, 16]},
    ]
    clean = [{"input_ids": feature["input_ids"]} for feature in features]
    yield "pretraining", DataCollatorForDiffusionPretraining(mask_token_id=MASK, pad_token_id=EOS, seed=0)(clean)
    yield "sft", DataCollatorForDiffusionSFT(mask_token_id=MASK, eos_token_id=EOS, seed=0)(features)
    block = DataCollatorForBlockDiffusion(
        mask_token_id=MASK, eos_token_id=EOS, block_size=4, complementary_masking=True, seed=0
    )
    yield "block", block(features)
    yield "packed", DataCollatorForPackedDiffusion(mask_token_id=MASK, seed=0)(features)


@pytest.mark.parametrize("make_model", [tiny_llada, tiny_llada2], ids=["llada", "llada2"])
def test_cap_works_with_every_diffusion_collator(make_model):
    model = make_model(confidence_loss_weight=1.0)
    for name, batch in collator_batches():
        output = model(**batch)
        labels = batch["labels"]
        assert torch.equal(output.confidence_loss, confidence_loss(output.logits, labels)), name
        assert torch.isfinite(output.loss) and output.loss.item() == pytest.approx(
            output.diffusion_loss.item() + output.confidence_loss.item(), rel=1e-6
        ), name
        if name == "block":  # only the noisy half is supervised, so only it enters the confidence part
            assert bool((labels[:, labels.shape[1] // 2 :] == -100).all())
        model.zero_grad()
        output.loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None), name


def test_bf16_parts_are_float32_and_match_float32():
    model = tiny_llada(confidence_loss_weight=1.0)
    batch = predicted_right(model, fixed_batch())
    reference = model(**batch)
    assert reference.confidence_loss > 0
    model_bf16 = model.to(torch.bfloat16)
    output = model_bf16(**batch)
    assert output.logits.dtype == torch.bfloat16
    assert output.loss.dtype == output.diffusion_loss.dtype == output.confidence_loss.dtype == torch.float32
    # (bf16 rounding may flip a near-tie argmax, so a position may enter or leave the confidence part)
    assert output.confidence_loss.item() == pytest.approx(reference.confidence_loss.item(), abs=0.1)
    assert output.loss.item() == pytest.approx(reference.loss.item(), rel=2e-2)
    output.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model_bf16.parameters() if p.grad is not None)


def sft_dataset(count=4, length=10):
    generator = torch.Generator().manual_seed(0)
    examples = []
    for k in range(count):
        input_ids = torch.randint(0, 29, (length,), generator=generator).tolist()
        prompt = 2 + k % 3
        examples.append({"input_ids": input_ids, "labels": [-100] * prompt + input_ids[prompt:]})
    return examples


@pytest.fixture(scope="module")
def memorised_state():
    """A tiny LLaDA that has memorised `sft_dataset()`, so every row of every noised batch has masked positions it
    predicts right and the confidence part is active in every micro-batch."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model = tiny_llada(seed=1)
    collator = DataCollatorForDiffusionSFT(mask_token_id=MASK, eos_token_id=EOS, seed=7)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        model(**collator(sft_dataset())).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    torch.set_num_threads(threads)
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def training_args(tmp_path, name, batch_size, accumulation, **overrides):
    values = dict(
        output_dir=str(tmp_path / name), per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation, max_steps=1, learning_rate=1.0, optim="sgd",
        lr_scheduler_type="constant", max_grad_norm=0.0, weight_decay=0.0, report_to=[], save_strategy="no",
        use_cpu=True, seed=0, disable_tqdm=True,
    )  # fmt: skip
    values.update(overrides)
    return TrainingArguments(**values)


def train_one_step(tmp_path, state, batch_size, accumulation, weight):
    model = tiny_llada(confidence_loss_weight=weight)
    model.load_state_dict(state)
    args = training_args(tmp_path, f"run_{batch_size}x{accumulation}_{weight}", batch_size, accumulation)
    collator = DataCollatorForDiffusionSFT(mask_token_id=MASK, eos_token_id=EOS, seed=113)
    trainer = Trainer(model=model, args=args, train_dataset=sft_dataset(), data_collator=collator)
    trainer.train()
    return {name: state[name] - p.detach() for name, p in model.named_parameters()}


def test_gradient_accumulation_4x1_equals_one_batch_of_4_with_cap(tmp_path, memorised_state, one_thread):
    # Precondition of exactness: each row of the batch the collator will draw has a correctly predicted masked token.
    model = tiny_llada(confidence_loss_weight=1.0)
    model.load_state_dict(memorised_state)
    batch = DataCollatorForDiffusionSFT(mask_token_id=MASK, eos_token_id=EOS, seed=113)(sft_dataset())
    assert bool((confidence_loss(model(**batch).logits, batch["labels"], reduction="none") > 0).all())

    one_batch = train_one_step(tmp_path, memorised_state, batch_size=4, accumulation=1, weight=1.0)
    accumulated = train_one_step(tmp_path, memorised_state, batch_size=1, accumulation=4, weight=1.0)
    without_cap = train_one_step(tmp_path, memorised_state, batch_size=4, accumulation=1, weight=0.0)
    difference = 0.0
    for name, update in one_batch.items():
        torch.testing.assert_close(accumulated[name], update, rtol=1e-4, atol=1e-6, msg=name)
        difference = max(difference, float((update - without_cap[name]).abs().max()))
    assert difference > 1e-4  # the confidence part moved the weights


class RecordingCallback(TrainerCallback):
    """Stands for a reporting integration: keeps the logs it is shown, as they are when it is called."""

    def __init__(self):
        self.seen = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.seen.append(dict(logs))


def test_trainer_logs_both_parts(tmp_path, memorised_state, one_thread):
    weight = 0.5
    model = tiny_llada(confidence_loss_weight=weight)
    model.load_state_dict(memorised_state)
    args = training_args(tmp_path, "logs", 2, 2, max_steps=3, logging_steps=1, learning_rate=1e-3, optim="adamw_torch")
    collator = DataCollatorForDiffusionSFT(mask_token_id=MASK, eos_token_id=EOS, seed=5)
    recorder = RecordingCallback()
    trainer = Trainer(
        model=model, args=args, train_dataset=sft_dataset(8), data_collator=collator, callbacks=[recorder]
    )
    DiffusionLossPartsCallback.add_to(trainer)  # before the recorder, as before a reporting integration
    trainer.train()

    train_logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(train_logs) == 3
    for entry in train_logs:
        assert entry["confidence_loss"] > 0 and entry["diffusion_loss"] > 0
        assert entry["loss"] == pytest.approx(entry["diffusion_loss"] + weight * entry["confidence_loss"], rel=1e-3)
    assert [seen["confidence_loss"] for seen in recorder.seen if "loss" in seen] == [
        entry["confidence_loss"] for entry in train_logs
    ]
    # Evaluation forwards are not counted, and the hook is removed after training.
    trainer.evaluate(sft_dataset(4))
    assert "confidence_loss" not in trainer.state.log_history[-1]
    assert not model._forward_hooks


def test_callback_passed_to_the_trainer_fills_the_history_and_ignores_models_without_cap(tmp_path, one_thread):
    model = tiny_llada(seed=2)  # no CAP: the forward has no parts, nothing is added
    args = training_args(tmp_path, "no_cap", 2, 1, max_steps=2, logging_steps=1)
    collator = DataCollatorForDiffusionSFT(mask_token_id=MASK, eos_token_id=EOS, seed=5)
    trainer = Trainer(
        model=model, args=args, train_dataset=sft_dataset(4), data_collator=collator,
        callbacks=[DiffusionLossPartsCallback()],
    )  # fmt: skip
    trainer.train()
    train_logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(train_logs) == 2 and all("confidence_loss" not in entry for entry in train_logs)

    model.config.confidence_loss_weight = 2.0
    trainer.args.max_steps = 4
    trainer.train()
    train_logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert all("confidence_loss" in entry and "diffusion_loss" in entry for entry in train_logs[-2:])


def held_out_entropy(model, tokenizer, features) -> tuple[float, float]:
    """Mean entropy at the masked positions predicted right, and the fraction predicted right, over fixed noise."""
    collator = DataCollatorForDiffusionSFT(
        mask_token_id=tokenizer.mask_token_id, eos_token_id=tokenizer.eos_token_id, seed=2024
    )
    entropies, correct, total = [], 0, 0
    with torch.no_grad():
        for start in range(0, len(features), 128):
            batch = collator(features[start : start + 128])
            logits = model(input_ids=batch["input_ids"]).logits.float()
            supervised = batch["labels"] != -100
            log_probs = logits[supervised].log_softmax(-1)
            right = log_probs.argmax(-1) == batch["labels"][supervised]
            entropies.append(-(log_probs.exp() * log_probs).sum(-1)[right])
            correct, total = correct + int(right.sum()), total + int(supervised.sum())
    return float(torch.cat(entropies).mean()), correct / total


def finetune(checkpoint, tmp_path, weight: float, features) -> LLaDAModelLM:
    model = LLaDAModelLM.from_pretrained(checkpoint, dtype=torch.float32)
    model.config.confidence_loss_weight = weight
    tokenizer = pair_tokenizer()
    args = TrainingArguments(
        output_dir=str(tmp_path / f"cap_{weight}"), per_device_train_batch_size=32, max_steps=120,
        learning_rate=5e-4, lr_scheduler_type="constant", weight_decay=0.0, report_to=[], save_strategy="no",
        logging_steps=40, use_cpu=True, seed=0, disable_tqdm=True, dataloader_drop_last=True,
    )  # fmt: skip
    collator = DataCollatorForDiffusionSFT(
        mask_token_id=tokenizer.mask_token_id, eos_token_id=tokenizer.eos_token_id, seed=11
    )
    trainer = Trainer(
        model=model, args=args, train_dataset=features, data_collator=collator,
        callbacks=[DiffusionLossPartsCallback()],
    )  # fmt: skip
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 3
    assert all(("confidence_loss" in entry) == (weight > 0) for entry in logs)
    return model.eval()


@pytest.mark.slow
@pytest.mark.parametrize(
    "task_name, margin",
    # Measured (entropy of held-out correct predictions after SFT -> CAP): addition 0.0322 -> 0.0099; parity, the
    # sequential task of bench_cap.py, 0.1686 -> 0.1593, where most masked "right" predictions are right by chance.
    [("addition", 0.8), ("parity", 1.0)],
)
def test_cap_finetuning_lowers_the_entropy_of_correct_predictions_more_than_sft(
    task_name, margin, fixtures_dir, tmp_path, one_thread
):
    """From the task's committed checkpoint, the same 120 steps with λ = 0 (SFT) and λ = 1 (CAP). (~40 s each)"""
    task, tokenizer = PAIR_TASKS[task_name], pair_tokenizer()
    checkpoint = fixtures_dir / f"tiny-llada-{task_name}"
    held_out = task.problems(512, seed=1)
    train = task.problems(120 * 32, seed=5, exclude=frozenset(held_out))
    train_features = [task.feature(tokenizer, problem) for problem in train]
    held_out_features = [task.feature(tokenizer, problem) for problem in held_out]

    start = LLaDAModelLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    start_entropy, start_accuracy = held_out_entropy(start, tokenizer, held_out_features)
    sft_entropy, sft_accuracy = held_out_entropy(finetune(checkpoint, tmp_path, 0.0, train_features), tokenizer,
                                                 held_out_features)  # fmt: skip
    cap_entropy, cap_accuracy = held_out_entropy(finetune(checkpoint, tmp_path, 1.0, train_features), tokenizer,
                                                 held_out_features)  # fmt: skip
    summary = (
        f"start {start_entropy:.4f} ({start_accuracy:.3f} right), SFT {sft_entropy:.4f} ({sft_accuracy:.3f}), "
        f"CAP {cap_entropy:.4f} ({cap_accuracy:.3f})"
    )
    print(summary)
    assert cap_entropy < margin * sft_entropy, summary
    assert cap_accuracy > sft_accuracy - 0.03, summary  # sharper, not worse


def test_parity_answers_are_prefix_parities():
    parity = PAIR_TASKS["parity"]
    assert parity.answer("1101000000000001") == "1001111111111110"
    feature = parity.feature(pair_tokenizer(), "1101000000000001")
    assert len(feature["input_ids"]) == parity.prompt_length + parity.answer_length
    assert feature["labels"][: parity.prompt_length] == [-100] * parity.prompt_length


def test_parity_checkpoint_decodes_sequentially(fixtures_dir, one_thread):
    """The hard task of `bench_cap.py`: exact at one token per step, but threshold decoding (0.9) leaves most of the
    answer masked after its first step (the bar is >= 3 of 17 tokens)."""
    parity, tokenizer = PAIR_TASKS["parity"], pair_tokenizer()
    model = LLaDAModelLM.from_pretrained(fixtures_dir / "tiny-llada-parity", dtype=torch.float32).eval()
    held_out = parity.problems(256, seed=1)
    one_per_step = parity.decode(model, tokenizer, held_out, steps=parity.answer_length, temperature=0.0)
    threshold = parity.decode(model, tokenizer, held_out, parallel_decoding="threshold", threshold=0.9)
    assert one_per_step["exact"] >= 90.0 and one_per_step["tpf"] == 1.0
    assert threshold["masked_after_first_step"] >= 3.0
    assert threshold["tpf"] < 4.0, threshold  # several steps per 17-token block
