"""The diffusion data collators: what they mask, how they pad, their attention layouts and their reproducibility."""

import pytest
import torch

from llada_hf import LLaDA2MoeConfig, LLaDA2MoeModelLM, LLaDAConfig, LLaDAModelLM
from llada_hf.training import (
    DataCollatorForBlockDiffusion,
    DataCollatorForDiffusionPretraining,
    DataCollatorForDiffusionSFT,
    DataCollatorForPackedDiffusion,
    block_diffusion_attention_mask,
)


VOCAB, MASK, EOS, PAD = 48, 47, 46, 45


def documents(count, length=None, seed=0, prompt=None):
    generator = torch.Generator().manual_seed(seed)
    features = []
    for _ in range(count):
        n = length or int(torch.randint(4, 12, (), generator=generator))
        input_ids = torch.randint(0, 40, (n,), generator=generator).tolist()
        feature = {"input_ids": input_ids}
        if prompt is not None:
            feature["labels"] = [-100] * prompt + input_ids[prompt:]
        features.append(feature)
    return features


def assert_consistent(batch, clean):
    """Masked positions hold MASK and are exactly the labelled ones; labels are the clean tokens."""
    masked = batch["input_ids"] == MASK
    assert torch.equal(masked, batch["labels"] != -100)
    assert torch.equal(batch["labels"][masked], clean[masked])
    assert torch.equal(batch["input_ids"][~masked], clean[~masked])


def test_pretraining_masks_each_sequence_at_its_own_rate():
    collator = DataCollatorForDiffusionPretraining(mask_token_id=MASK, eps=1e-3, random_length_prob=0.0, seed=0)
    features = documents(256, length=400)
    batch = collator(features)
    clean = torch.tensor([f["input_ids"] for f in features])
    assert_consistent(batch, clean)
    t = batch["p_mask"][:, 0]
    assert torch.equal(batch["p_mask"], t[:, None].expand(-1, 400))
    assert bool((t >= 1e-3).all() and (t <= 1).all())
    # t ~ U(eps, 1): its mean and quartiles; each row's masked fraction follows its own t.
    assert t.mean().item() == pytest.approx(0.5, abs=0.06)
    assert torch.quantile(t, 0.25).item() == pytest.approx(0.25, abs=0.07)
    fraction = (batch["labels"] != -100).float().mean(-1)
    assert (fraction - t).abs().max() < 5 * (0.25 / 400) ** 0.5
    assert torch.equal(batch["loss_normalizer"], torch.full((256,), 400.0))
    assert "attention_mask" not in batch


def test_pretraining_cuts_about_one_batch_in_a_hundred_to_a_random_length():
    collator = DataCollatorForDiffusionPretraining(mask_token_id=MASK, seed=1)
    features = documents(1, length=64)
    lengths = [collator(features)["input_ids"].shape[1] for _ in range(2000)]
    short = [n for n in lengths if n < 64]
    assert 5 <= len(short) <= 40  # Binomial(2000, ~0.01)
    always = DataCollatorForDiffusionPretraining(mask_token_id=MASK, random_length_prob=1.0, seed=1)
    cut = [always(features) for _ in range(50)]
    assert len({batch["input_ids"].shape[1] for batch in cut}) > 10
    assert all(batch["loss_normalizer"].item() == batch["input_ids"].shape[1] for batch in cut)


def test_pretraining_pads_unsupervised_and_hides_the_padding():
    collator = DataCollatorForDiffusionPretraining(
        mask_token_id=MASK, pad_token_id=PAD, random_length_prob=0.0, seed=0
    )
    batch = collator([{"input_ids": [1, 2, 3, 4, 5]}, {"input_ids": [6, 7]}])
    assert batch["input_ids"][1, 2:].tolist() == [PAD, PAD, PAD]
    assert batch["labels"][1, 2:].tolist() == [-100] * 3
    assert batch["attention_mask"].tolist() == [[1] * 5, [1, 1, 0, 0, 0]]
    assert batch["loss_normalizer"].tolist() == [5.0, 2.0]
    with pytest.raises(ValueError, match="pad_token_id"):
        DataCollatorForDiffusionPretraining(mask_token_id=MASK)([{"input_ids": [1, 2]}, {"input_ids": [3]}])


def test_sft_never_masks_the_prompt_and_supervises_eos_padding():
    collator = DataCollatorForDiffusionSFT(mask_token_id=MASK, eos_token_id=EOS, pad_to_multiple_of=8, seed=0)
    features = [
        {"input_ids": [1, 2, 3, 4, 5, 6, EOS], "labels": [-100, -100, -100, 4, 5, 6, EOS]},
        {"input_ids": [7, 8, 9, EOS], "labels": [-100, -100, 9, EOS]},
    ]
    prompt = torch.tensor([[1, 1, 1, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0, 0]], dtype=torch.bool)
    eos_padding_supervised = 0
    for _ in range(300):
        batch = collator(features)
        assert batch["input_ids"].shape == (2, 8)
        assert not bool((batch["input_ids"][prompt] == MASK).any())
        assert batch["input_ids"][prompt].tolist() == [1, 2, 3, 7, 8]
        assert batch["loss_normalizer"].tolist() == [5.0, 6.0]  # answer + EOS padding
        eos_padding_supervised += int((batch["labels"][1, 4:] == EOS).sum())
        clean = torch.tensor([[1, 2, 3, 4, 5, 6, EOS, EOS], [7, 8, 9, EOS, EOS, EOS, EOS, EOS]])
        assert_consistent(batch, clean)
    assert eos_padding_supervised > 300  # about half of 4 * 300 positions
    with pytest.raises(ValueError, match="labels"):
        collator([{"input_ids": [1, 2, 3]}])


def test_same_seed_gives_each_example_the_same_noise_alone_or_batched():
    features = documents(4, length=16, prompt=3)
    together = DataCollatorForDiffusionSFT(mask_token_id=MASK, eos_token_id=EOS, seed=7)(features)
    one_by_one = DataCollatorForDiffusionSFT(mask_token_id=MASK, eos_token_id=EOS, seed=7)
    alone = [one_by_one([feature]) for feature in features]
    for key in ("input_ids", "labels", "p_mask"):
        assert torch.equal(torch.cat([batch[key] for batch in alone]), together[key])
    other_seed = DataCollatorForDiffusionSFT(mask_token_id=MASK, eos_token_id=EOS, seed=8)(features)
    assert not torch.equal(other_seed["input_ids"], together["input_ids"])
    next_batch = DataCollatorForDiffusionSFT(mask_token_id=MASK, eos_token_id=EOS, seed=7)
    next_batch(features)
    assert not torch.equal(next_batch(features)["input_ids"], together["input_ids"])  # fresh noise each time


def test_without_seed_the_noise_follows_torch_global_generator():
    collator = DataCollatorForDiffusionPretraining(mask_token_id=MASK)
    features = documents(3, length=32)
    torch.manual_seed(0)
    first = collator(features)
    torch.manual_seed(0)
    assert torch.equal(collator(features)["input_ids"], first["input_ids"])


def test_clean_inputs_must_not_hold_the_mask_token():
    with pytest.raises(ValueError, match="mask token"):
        DataCollatorForDiffusionPretraining(mask_token_id=MASK)([{"input_ids": [1, MASK]}])


def test_block_diffusion_attention_mask_layout():
    mask = block_diffusion_attention_mask(4, 2)[0, 0].int()
    expected = torch.tensor([
        # noisy 0..3     clean 0..3
        [1, 1, 0, 0,     0, 0, 0, 0],
        [1, 1, 0, 0,     0, 0, 0, 0],
        [0, 0, 1, 1,     1, 1, 0, 0],
        [0, 0, 1, 1,     1, 1, 0, 0],
        [0, 0, 0, 0,     1, 1, 0, 0],
        [0, 0, 0, 0,     1, 1, 0, 0],
        [0, 0, 0, 0,     1, 1, 1, 1],
        [0, 0, 0, 0,     1, 1, 1, 1],
    ])  # fmt: skip
    assert torch.equal(mask, expected)


def test_block_diffusion_noises_per_block_within_the_band_and_never_the_prompt():
    collator = DataCollatorForBlockDiffusion(
        mask_token_id=MASK, eos_token_id=EOS, block_size=4, mask_ratio_range=(0.3, 0.8), seed=0
    )
    features = documents(64, length=10, prompt=3)
    batch = collator(features)
    assert batch["input_ids"].shape == (64, 24)  # 10 -> 12 (3 blocks), noisy + clean
    noisy, clean = batch["input_ids"][:, :12], batch["input_ids"][:, 12:]
    assert torch.equal(clean[:, :10], torch.tensor([f["input_ids"] for f in features]))
    assert bool((clean[:, 10:] == EOS).all())
    assert_consistent({"input_ids": noisy, "labels": batch["labels"][:, :12]}, clean)
    assert bool((batch["labels"][:, 12:] == -100).all()) and not bool((noisy[:, :3] == MASK).any())
    p_mask = batch["p_mask"][:, :12].view(64, 3, 4)
    assert bool((p_mask == p_mask[..., :1]).all())  # one level per block...
    assert bool((p_mask[:, 0, 0] != p_mask[:, 1, 0]).all())  # ...drawn independently
    assert bool((p_mask >= 0.3).all() and (p_mask <= 0.8).all())
    assert batch["loss_normalizer"].tolist() == [9.0] * 64  # 7 answer tokens + 2 EOS padding
    assert batch["position_ids"][0].tolist() == list(range(12)) * 2
    assert torch.equal(batch["attention_mask"][5], block_diffusion_attention_mask(12, 4)[0])


def test_complementary_masking_trains_every_answer_token_once():
    collator = DataCollatorForBlockDiffusion(
        mask_token_id=MASK, eos_token_id=EOS, block_size=4, complementary_masking=True, seed=0
    )
    batch = collator(documents(3, length=8, prompt=2))
    assert batch["input_ids"].shape == (6, 16)
    first, second = batch["labels"][0::2, :8] != -100, batch["labels"][1::2, :8] != -100
    assert not bool((first & second).any())
    assert bool((first | second)[:, 2:].all()) and not bool((first | second)[:, :2].any())
    torch.testing.assert_close(batch["p_mask"][1::2, 2:8], 1 - batch["p_mask"][0::2, 2:8])


def test_block_size_none_makes_each_row_one_block():
    collator = DataCollatorForBlockDiffusion(mask_token_id=MASK, eos_token_id=EOS, block_size=None, seed=0)
    batch = collator(documents(2, length=7))
    assert batch["input_ids"].shape == (2, 14)
    assert len(set(batch["p_mask"][0, :7].tolist())) == 1
    with pytest.raises(ValueError, match="mask_ratio_range"):
        DataCollatorForBlockDiffusion(mask_token_id=MASK, eos_token_id=EOS, mask_ratio_range=(0.0, 0.5))


def tiny_llada2() -> LLaDA2MoeModelLM:
    torch.manual_seed(0)
    config = LLaDA2MoeConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=48,
        moe_intermediate_size=16,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        num_experts=4,
        num_experts_per_tok=2,
        n_group=2,
        topk_group=1,
        first_k_dense_replace=1,
        mask_token_id=MASK,
        eos_token_id=EOS,
        pad_token_id=EOS,
    )
    return LLaDA2MoeModelLM(config).eval()


def test_block_diffusion_training_sees_each_block_as_the_block_causal_sampler_does():
    model = tiny_llada2()
    block_size = 4
    batch = DataCollatorForBlockDiffusion(mask_token_id=MASK, eos_token_id=EOS, block_size=block_size, seed=0)(
        documents(2, length=12, prompt=2)
    )
    with torch.no_grad():
        training_logits = model(
            batch["input_ids"], attention_mask=batch["attention_mask"], position_ids=batch["position_ids"]
        ).logits
        noisy, clean = batch["input_ids"][:, :12], batch["input_ids"][:, 12:]
        for block in range(3):
            end = (block + 1) * block_size
            canvas = torch.cat([clean[:, : end - block_size], noisy[:, end - block_size : end]], dim=1)
            blocks = torch.arange(end) // block_size
            block_causal = (blocks[None, :] <= blocks[:, None])[None, None].expand(2, -1, -1, -1)
            sampler_logits = model(canvas, attention_mask=block_causal).logits[:, end - block_size :]
            torch.testing.assert_close(
                training_logits[:, end - block_size : end], sampler_logits, rtol=1e-4, atol=1e-4
            )


def tiny_llada() -> LLaDAModelLM:
    torch.manual_seed(0)
    config = LLaDAConfig(
        d_model=32,
        n_heads=4,
        n_kv_heads=4,
        n_layers=2,
        mlp_hidden_size=64,
        vocab_size=VOCAB,
        embedding_size=VOCAB,
        max_sequence_length=64,
        mask_token_id=MASK,
        eos_token_id=EOS,
        pad_token_id=PAD,
    )
    return LLaDAModelLM(config).eval()


def test_packed_documents_train_as_the_same_documents_padded_in_a_batch():
    model = tiny_llada()
    features = documents(3, seed=3)
    packed = DataCollatorForPackedDiffusion(mask_token_id=MASK, seed=5)(features)
    padded = DataCollatorForDiffusionPretraining(mask_token_id=MASK, pad_token_id=PAD, random_length_prob=0.0, seed=5)(
        features
    )
    lengths = [len(f["input_ids"]) for f in features]
    assert packed["input_ids"].shape == (1, sum(lengths))
    assert packed["position_ids"][0].tolist() == [i for n in lengths for i in range(n)]
    real = padded["attention_mask"].bool()
    assert torch.equal(packed["input_ids"][0], padded["input_ids"][real])  # same draws per document
    with torch.no_grad():
        packed_out = model(**packed)
        padded_out = model(**padded)
    torch.testing.assert_close(packed_out.logits[0], padded_out.logits[real], rtol=1e-4, atol=1e-4)
    assert packed_out.loss.item() == pytest.approx(padded_out.loss.item(), rel=1e-4)


RECIPES = {
    "pretraining": lambda: DataCollatorForDiffusionPretraining(
        mask_token_id=MASK, pad_token_id=PAD, random_length_prob=0.0, seed=0
    ),
    "sft": lambda: DataCollatorForDiffusionSFT(mask_token_id=MASK, eos_token_id=EOS, seed=0),
    "block_diffusion": lambda: DataCollatorForBlockDiffusion(
        mask_token_id=MASK, eos_token_id=EOS, block_size=4, complementary_masking=True, seed=0
    ),
    "packed": lambda: DataCollatorForPackedDiffusion(mask_token_id=MASK, seed=0),
}


@pytest.mark.parametrize("recipe", sorted(RECIPES))
@pytest.mark.parametrize("make_model", [tiny_llada, tiny_llada2], ids=["llada", "llada2"])
def test_both_families_train_with_every_collator(make_model, recipe):
    model = make_model().train()
    batch = RECIPES[recipe]()(documents(4, seed=2, prompt=2))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(8):  # the same noised batch: the loss must go down
        loss = model(**batch).loss
        assert loss.dtype == torch.float32 and bool(torch.isfinite(loss)) and loss > 0
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_processes_draw_different_noise_for_the_same_seed(monkeypatch):
    features = documents(2, length=64)
    rank0 = DataCollatorForDiffusionPretraining(mask_token_id=MASK, random_length_prob=0.0, seed=3)(features)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: 1)
    rank1 = DataCollatorForDiffusionPretraining(mask_token_id=MASK, random_length_prob=0.0, seed=3)(features)
    assert not torch.equal(rank0["p_mask"], rank1["p_mask"])
