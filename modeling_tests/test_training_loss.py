"""The masked-diffusion loss of the LM forwards: LLaDA eq. 3, its guards, bf16 and gradient accumulation."""

import pytest
import torch
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from transformers import DataCollatorForLanguageModeling, PreTrainedTokenizerFast, Trainer, TrainingArguments

from llada_hf import LLaDA2MoeConfig, LLaDA2MoeModelLM, LLaDAConfig, LLaDAModelLM
from llada_hf.training import (
    DataCollatorForDiffusionPretraining,
    DataCollatorForDiffusionSFT,
    masked_diffusion_loss,
)


VOCAB, MASK, EOS = 32, 31, 30


def tiny_model(seed=0, **overrides) -> LLaDAModelLM:
    torch.manual_seed(seed)
    values = dict(
        d_model=64,
        n_heads=4,
        n_kv_heads=4,
        n_layers=2,
        mlp_hidden_size=128,
        vocab_size=VOCAB,
        embedding_size=VOCAB,
        max_sequence_length=64,
        mask_token_id=MASK,
        eos_token_id=EOS,
        pad_token_id=EOS,
    )
    values.update(overrides)
    return LLaDAModelLM(LLaDAConfig(**values))


def tiny_llada2(seed=0) -> LLaDA2MoeModelLM:
    torch.manual_seed(seed)
    config = LLaDA2MoeConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=48, moe_intermediate_size=16, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, num_experts=4, num_experts_per_tok=2, n_group=2,
        topk_group=1, first_k_dense_replace=1, mask_token_id=MASK, eos_token_id=EOS, pad_token_id=EOS,
    )  # fmt: skip
    return LLaDA2MoeModelLM(config)


def fixed_batch():
    """Two rows of 6 tokens; row 0 is a pretraining row, row 1 an SFT row whose first 2 tokens are the prompt."""
    clean = torch.tensor([[3, 4, 5, 6, 7, 8], [9, 10, 11, 12, 13, EOS]])
    masked = torch.tensor([[1, 0, 1, 1, 0, 0], [0, 0, 1, 0, 1, 1]], dtype=torch.bool)
    input_ids = clean.masked_fill(masked, MASK)
    labels = torch.where(masked, clean, -100)
    p_mask = torch.tensor([0.5, 0.25])
    return input_ids, labels, p_mask


def hand_computed_eq3(logits, labels, p_mask, normalizers):
    """`1/B * sum_b 1/n_b * sum_{i masked} -log p(x0_i) / t_b`, one term at a time."""
    total = 0.0
    for b in range(labels.shape[0]):
        row = 0.0
        for i in range(labels.shape[1]):
            if labels[b, i] != -100:
                row += -torch.log_softmax(logits[b, i].double(), -1)[labels[b, i]].item() / p_mask[b].item()
        total += row / normalizers[b]
    return total / labels.shape[0]


def test_forward_loss_is_llada_eq3_with_pretraining_and_sft_normalisers():
    model = tiny_model()
    input_ids, labels, p_mask = fixed_batch()
    pretraining = model(input_ids, labels=labels, p_mask=p_mask)
    assert pretraining.loss.dtype == torch.float32
    expected = hand_computed_eq3(pretraining.logits, labels, p_mask, normalizers=[6, 6])  # B * L
    assert pretraining.loss.item() == pytest.approx(expected, rel=1e-5)

    answer_lengths = torch.tensor([6.0, 4.0])
    sft = model(input_ids, labels=labels, p_mask=p_mask[:, None].expand(-1, 6), loss_normalizer=answer_lengths)
    assert sft.loss.item() == pytest.approx(hand_computed_eq3(sft.logits, labels, p_mask, [6, 4]), rel=1e-5)

    per_row = masked_diffusion_loss(sft.logits, labels, p_mask, loss_normalizer=1.0, reduction="none")
    assert per_row.shape == (2,)
    assert per_row[1].item() == pytest.approx(
        4 * hand_computed_eq3(sft.logits[1:], labels[1:], p_mask[1:], [4]), rel=1e-5
    )


def test_llada2_forward_computes_the_same_eq3_loss():
    model = tiny_llada2()
    input_ids, labels, p_mask = fixed_batch()
    answer_lengths = torch.tensor([6.0, 4.0])
    output = model(input_ids, labels=labels, p_mask=p_mask, loss_normalizer=answer_lengths)
    assert output.loss.dtype == torch.float32
    assert output.loss.item() == pytest.approx(hand_computed_eq3(output.logits, labels, p_mask, [6, 4]), rel=1e-5)
    assert model(input_ids).loss is None


def test_loss_backpropagates_only_through_masked_positions():
    logits = torch.randn(1, 4, VOCAB, requires_grad=True)
    labels = torch.tensor([[-100, 5, -100, 7]])
    masked_diffusion_loss(logits, labels, torch.tensor([0.5])).backward()
    assert logits.grad[0, [0, 2]].abs().sum() == 0
    assert logits.grad[0, [1, 3]].abs().sum() > 0


def test_rows_without_masked_tokens_contribute_zero():
    logits = torch.randn(2, 3, VOCAB)
    labels = torch.tensor([[-100, -100, -100], [1, -100, 2]])
    per_row = masked_diffusion_loss(logits, labels, torch.tensor([0.3, 0.6]), reduction="none")
    assert per_row[0] == 0 and per_row[1] > 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(p_mask=torch.tensor([0.0, 0.5])), "positive"),
        (dict(p_mask=torch.tensor([0.5, 0.5]), loss_normalizer=torch.tensor([0.0, 4.0])), "positive"),
        (dict(p_mask=torch.ones(3)), "p_mask"),
        (dict(p_mask=torch.ones(2, 5)), "p_mask"),
        (dict(p_mask=torch.ones(2), reduction="sum"), "reduction"),
    ],
)
def test_bad_loss_arguments_raise_naming_the_argument(kwargs, match):
    _, labels, _ = fixed_batch()
    with pytest.raises(ValueError, match=match):
        masked_diffusion_loss(torch.randn(2, 6, VOCAB), labels, **kwargs)


def word_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {f"w{i}": i for i in range(EOS)} | {"<eos>": EOS, "<mask>": MASK}
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(WordLevel(vocab, unk_token="w0")), pad_token="<eos>", mask_token="<mask>"
    )


@pytest.mark.parametrize("make_model", [tiny_model, tiny_llada2], ids=["llada", "llada2"])
def test_autoregressive_batches_are_refused_with_a_pointer_to_the_diffusion_collators(make_model):
    model = make_model()
    features = [{"input_ids": [3, 4, 5, 6]}, {"input_ids": [7, 8, 9]}]
    ar_batch = DataCollatorForLanguageModeling(word_tokenizer(), mlm=False)(features)
    assert torch.equal(ar_batch["labels"][0], ar_batch["input_ids"][0])
    with pytest.raises(ValueError, match="p_mask.*DataCollatorForDiffusion"):
        model(**ar_batch)
    with pytest.raises(ValueError, match="not the mask token.*DataCollatorForDiffusion"):
        model(**ar_batch, p_mask=torch.full((2,), 0.5))
    assert model(ar_batch["input_ids"]).loss is None


def test_bf16_loss_is_float32_and_matches_float32():
    model = tiny_model()
    input_ids, labels, p_mask = fixed_batch()
    reference = model(input_ids, labels=labels, p_mask=p_mask).loss
    model_bf16 = model.to(torch.bfloat16)
    output = model_bf16(input_ids, labels=labels, p_mask=p_mask.to(torch.bfloat16))
    assert output.logits.dtype == torch.bfloat16 and output.loss.dtype == torch.float32
    assert output.loss.item() == pytest.approx(reference.item(), rel=2e-2)
    output.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model_bf16.parameters() if p.grad is not None)


def sft_dataset(count=8, length=10):
    """Equal total lengths, different prompt lengths: the per-answer normaliser differs between rows."""
    generator = torch.Generator().manual_seed(0)
    examples = []
    for k in range(count):
        input_ids = torch.randint(0, 29, (length,), generator=generator).tolist()
        prompt = 2 + k % 5
        examples.append({"input_ids": input_ids, "labels": [-100] * prompt + input_ids[prompt:]})
    return examples


def train_one_step(tmp_path, batch_size, accumulation):
    model = tiny_model(seed=1)
    args = TrainingArguments(
        output_dir=str(tmp_path / f"run_{batch_size}x{accumulation}"),
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        max_steps=1,
        learning_rate=1.0,
        optim="sgd",
        lr_scheduler_type="constant",
        max_grad_norm=0.0,
        weight_decay=0.0,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
    )
    collator = DataCollatorForDiffusionSFT(mask_token_id=MASK, eos_token_id=EOS, seed=123)
    trainer = Trainer(model=model, args=args, train_dataset=sft_dataset(4), data_collator=collator)
    assert trainer.model_accepts_loss_kwargs is False
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainer.train()
    return {name: before[name] - p.detach() for name, p in model.named_parameters()}


def test_gradient_accumulation_4x1_equals_one_batch_of_4(tmp_path):
    one_batch = train_one_step(tmp_path, batch_size=4, accumulation=1)
    accumulated = train_one_step(tmp_path, batch_size=1, accumulation=4)
    for name, update in one_batch.items():
        assert update.abs().max() > 0, name
        torch.testing.assert_close(accumulated[name], update, rtol=1e-4, atol=1e-6, msg=name)


def test_pretraining_batch_normalises_by_batch_times_length():
    model = tiny_model()
    features = [{"input_ids": list(range(k, k + 12))} for k in range(3)]
    batch = DataCollatorForDiffusionPretraining(mask_token_id=MASK, seed=0, random_length_prob=0.0)(features)
    output = model(**batch)
    t = batch["p_mask"][:, 0]
    assert output.loss.item() == pytest.approx(
        hand_computed_eq3(output.logits, batch["labels"], t, normalizers=[12, 12, 12]), rel=1e-5
    )
