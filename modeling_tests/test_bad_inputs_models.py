"""Bad inputs to the configs, the training collators and the models' forward: each gets an exception whose type and
message name the argument and the rule, instead of a silent wrong answer or an error deep inside the model."""

import json
import shutil

import pytest
import torch
from huggingface_hub.errors import StrictDataclassError
from transformers import AutoConfig, AutoModelForCausalLM, DynamicCache

from llada_hf import LLaDA2MoeConfig, LLaDA2MoeModelLM, LLaDAConfig, LLaDAModelLM
from llada_hf.training import (
    DataCollatorForBlockDiffusion,
    DataCollatorForDiffusionPretraining,
    DataCollatorForDiffusionSFT,
    DataCollatorForPackedDiffusion,
)


VOCAB, MASK, EOS = 64, 63, 62
MAX_POSITIONS = 16
FAMILIES = ["llada", "llada2"]
FIXTURE = {"llada": "llada-tiny-random", "llada2": "llada2-moe-tiny-random"}


def tiny_config(family: str, **overrides):
    if family == "llada":
        values = dict(
            d_model=32, n_heads=4, n_kv_heads=4, n_layers=1, mlp_hidden_size=64, vocab_size=VOCAB,
            embedding_size=VOCAB, max_sequence_length=MAX_POSITIONS, mask_token_id=MASK, eos_token_id=EOS,
            pad_token_id=EOS,
        )  # fmt: skip
        return LLaDAConfig(**{**values, **overrides})
    values = dict(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=48, moe_intermediate_size=16, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, num_experts=4, num_experts_per_tok=2, n_group=2,
        topk_group=1, max_position_embeddings=MAX_POSITIONS, mask_token_id=MASK, eos_token_id=EOS, pad_token_id=EOS,
    )  # fmt: skip
    return LLaDA2MoeConfig(**{**values, **overrides})


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {
        "llada": LLaDAModelLM(tiny_config("llada")).eval(),
        "llada2": LLaDA2MoeModelLM(tiny_config("llada2")).eval(),
    }


def ids(batch=2, length=8, high=60):
    return torch.randint(0, high, (batch, length), generator=torch.Generator().manual_seed(0))


# --- configs: special-token ids against the vocabulary ---------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("field", ["mask_token_id", "eos_token_id", "pad_token_id", "bos_token_id"])
@pytest.mark.parametrize("token_id", [VOCAB, -1, 10**6])
def test_config_refuses_a_token_id_outside_the_vocabulary(family, field, token_id):
    with pytest.raises(ValueError, match=rf"`{field}` must be None or a token id in \[0, vocab_size={VOCAB}\)") as e:
        tiny_config(family, **{field: token_id})
    assert isinstance(e.value, StrictDataclassError)


@pytest.mark.parametrize("family", FAMILIES)
def test_config_refuses_an_eos_list_with_an_id_outside_the_vocabulary(family):
    assert tiny_config(family, eos_token_id=[EOS, 3]).eos_token_id == [EOS, 3]
    with pytest.raises(ValueError, match="`eos_token_id`"):
        tiny_config(family, eos_token_id=[EOS, VOCAB])


@pytest.mark.parametrize(
    "config_class, released_ids",
    [
        (LLaDAConfig, {"mask_token_id": 126336, "eos_token_id": 126081, "pad_token_id": 126081}),
        (LLaDA2MoeConfig, {"mask_token_id": 156895, "eos_token_id": 156892, "pad_token_id": 156892}),
    ],
)
def test_released_token_ids_are_defaults_only_where_they_fit(config_class, released_ids):
    family = "llada" if config_class is LLaDAConfig else "llada2"
    unset = dict.fromkeys(released_ids)
    small = tiny_config(family, **unset)
    assert {name: getattr(small, name) for name in released_ids} == unset
    large = tiny_config(
        family, **unset, vocab_size=200000, **({"embedding_size": 200000} if family == "llada" else {})
    )
    assert {name: getattr(large, name) for name in released_ids} == released_ids
    assert {name: getattr(config_class(), name) for name in released_ids} == released_ids


@pytest.mark.parametrize("family", FAMILIES)
def test_config_with_an_id_made_invalid_by_assignment_is_not_saved(family, tmp_path):
    config = tiny_config(family)
    config.mask_token_id = VOCAB + 5  # one field at a time may be inconsistent; saving validates the whole
    with pytest.raises(ValueError, match="`mask_token_id`"):
        config.save_pretrained(tmp_path)


@pytest.mark.parametrize("family", FAMILIES)
def test_config_without_ids_saves_and_reloads_without_ids(family, tmp_path):
    config = tiny_config(family, mask_token_id=None, eos_token_id=None, pad_token_id=None)
    config.save_pretrained(tmp_path)
    reloaded = AutoConfig.from_pretrained(tmp_path)
    assert (reloaded.mask_token_id, reloaded.eos_token_id, reloaded.pad_token_id) == (None, None, None)


# --- configs: a loaded file must state its architecture --------------------------------------------------------------


@pytest.mark.parametrize(
    "config_class, key",
    [(LLaDAConfig, key) for key in LLaDAConfig.architecture_keys]
    + [(LLaDA2MoeConfig, key) for key in LLaDA2MoeConfig.architecture_keys],
)
def test_loaded_config_missing_an_architecture_key_is_refused(config_class, key, fixtures_dir):
    family = "llada" if config_class is LLaDAConfig else "llada2"
    released = json.loads((fixtures_dir / FIXTURE[family] / "config.json").read_text())
    assert config_class.from_dict(released).vocab_size == released["vocab_size"]
    del released[key]
    with pytest.raises(ValueError, match=rf"missing the architecture key\(s\) \['{key}'\]") as error:
        config_class.from_dict(released)
    assert isinstance(error.value, StrictDataclassError)


def test_another_familys_file_that_claims_llada2_is_refused_before_building(fixtures_dir, tmp_path):
    # LLaDA 1.x's config.json relabelled `llada2_moe`: without the check it becomes a model of LLaDA2.0-mini's size.
    path = tmp_path / "relabelled"
    shutil.copytree(fixtures_dir / "llada-tiny-random", path)
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "model_type": "llada2_moe"}))
    with pytest.raises(ValueError, match="missing the architecture key.*'hidden_size'.*'num_experts'"):
        AutoModelForCausalLM.from_pretrained(path)


def test_llada_moe_file_is_refused_as_unsupported_rather_than_incomplete():
    # LLaDA-MoE also says `model_type: "llada"`, with other field names: the error says what it is.
    moe_file = {"model_type": "llada", "architectures": ["LLaDAMoEModelLM"], "hidden_size": 2048, "num_experts": 64}
    with pytest.raises(ValueError, match="LLaDA-MoE .* does not support it yet"):
        LLaDAConfig.from_dict(moe_file)


def test_python_constructor_keeps_the_released_defaults():
    # The check applies to loaded files only: the constructor's defaults describe the released models.
    assert LLaDA2MoeConfig(num_hidden_layers=2).hidden_size == 2048
    assert LLaDAConfig(n_layers=2).d_model == 4096


# --- collators: arguments ------------------------------------------------------------------------------------------


SFT = dict(mask_token_id=MASK, eos_token_id=EOS)


@pytest.mark.parametrize(
    "collator_class, kwargs, error, name",
    [
        (DataCollatorForDiffusionSFT, dict(SFT, pad_to_multiple_of=-2), ValueError, "pad_to_multiple_of"),
        (DataCollatorForDiffusionSFT, dict(SFT, pad_to_multiple_of=0), ValueError, "pad_to_multiple_of"),
        (DataCollatorForDiffusionSFT, dict(SFT, pad_to_multiple_of=2.5), TypeError, "pad_to_multiple_of"),
        (DataCollatorForDiffusionSFT, dict(SFT, mask_token_id=None), TypeError, "mask_token_id"),
        (DataCollatorForDiffusionSFT, dict(SFT, mask_token_id=-1), ValueError, "mask_token_id"),
        (DataCollatorForDiffusionSFT, dict(SFT, mask_token_id="<mask>"), TypeError, "mask_token_id"),
        (DataCollatorForDiffusionSFT, dict(SFT, eos_token_id=None), TypeError, "eos_token_id"),
        (DataCollatorForDiffusionSFT, dict(SFT, eos_token_id=MASK), ValueError, "eos_token_id"),
        (DataCollatorForDiffusionSFT, dict(SFT, eps=1.5), ValueError, "eps"),
        (DataCollatorForDiffusionSFT, dict(SFT, eps=float("nan")), ValueError, "eps"),
        (DataCollatorForDiffusionSFT, dict(SFT, eps="0.1"), TypeError, "eps"),
        (DataCollatorForDiffusionSFT, dict(SFT, seed=-1), ValueError, "seed"),
        (DataCollatorForDiffusionSFT, dict(SFT, seed=1.0), TypeError, "seed"),
        (DataCollatorForDiffusionSFT, dict(SFT, vocab_size=0), ValueError, "vocab_size"),
        (DataCollatorForDiffusionSFT, dict(SFT, vocab_size=MASK), ValueError, "mask_token_id"),
        (DataCollatorForDiffusionPretraining, dict(mask_token_id=MASK, pad_token_id=-5), ValueError, "pad_token_id"),
        (DataCollatorForDiffusionPretraining, dict(mask_token_id=MASK, random_length_prob=-0.1), ValueError,
         "random_length_prob"),
        (DataCollatorForDiffusionPretraining, dict(mask_token_id=MASK, random_length_prob=True), TypeError,
         "random_length_prob"),
        (DataCollatorForBlockDiffusion, dict(SFT, block_size=0), ValueError, "block_size"),
        (DataCollatorForBlockDiffusion, dict(SFT, block_size=4.0), TypeError, "block_size"),
        (DataCollatorForBlockDiffusion, dict(SFT, mask_ratio_range=(0.5, 0.3)), ValueError, "mask_ratio_range"),
        (DataCollatorForBlockDiffusion, dict(SFT, mask_ratio_range=0.5), TypeError, "mask_ratio_range"),
        (DataCollatorForBlockDiffusion, dict(SFT, mask_ratio_range=(0.1, 0.5, 0.9)), TypeError, "mask_ratio_range"),
        (DataCollatorForBlockDiffusion, dict(SFT, complementary_masking="yes"), TypeError, "complementary_masking"),
        (DataCollatorForPackedDiffusion, dict(mask_token_id=MASK, eps=-1e-3), ValueError, "eps"),
    ],
)  # fmt: skip
def test_collator_refuses_bad_arguments_by_name(collator_class, kwargs, error, name):
    with pytest.raises(error, match=f"`{name}`"):
        collator_class(**kwargs)


def test_sft_collator_pads_to_a_multiple_and_keeps_every_token():
    # `pad_to_multiple_of=-2` used to cut rows; a valid multiple pads and keeps every answer token.
    feature = {"input_ids": [1, 2, 3, 4, 5], "labels": [-100, -100, 3, 4, 5]}
    collator = DataCollatorForDiffusionSFT(mask_token_id=MASK, eos_token_id=EOS, pad_to_multiple_of=4, seed=0)
    batch = collator([feature])
    clean = torch.where(batch["labels"] == -100, batch["input_ids"], batch["labels"])
    assert clean.tolist() == [[1, 2, 3, 4, 5, EOS, EOS, EOS]]


# --- collators: features -------------------------------------------------------------------------------------------


COLLATORS = {
    "pretraining": lambda **kw: DataCollatorForDiffusionPretraining(mask_token_id=MASK, pad_token_id=EOS, **kw),
    "sft": lambda **kw: DataCollatorForDiffusionSFT(mask_token_id=MASK, eos_token_id=EOS, **kw),
    "block": lambda **kw: DataCollatorForBlockDiffusion(mask_token_id=MASK, eos_token_id=EOS, block_size=4, **kw),
    "packed": lambda **kw: DataCollatorForPackedDiffusion(mask_token_id=MASK, **kw),
}


@pytest.mark.parametrize("kind", list(COLLATORS))
@pytest.mark.parametrize(
    "features, error, match",
    [
        ([{"input_ids": [1, -4, 3], "labels": [-100, 2, 3]}], ValueError, r"`input_ids` must be token ids >= 0"),
        ([{"input_ids": [1.0, 2.5], "labels": [-100, 2]}], TypeError, r"`input_ids` must hold integer token ids"),
        ([{"input_ids": [1, 2], "labels": [-100, 0.5]}], TypeError, r"`labels` must hold integer token ids"),
        ([{"input_ids": ["a", "b"], "labels": [-100, 2]}], TypeError, r"`input_ids` must be a sequence of integer"),
        ([{"labels": [-100, 2]}], TypeError, r"dict with `input_ids`"),
        ([[1, 2, 3]], TypeError, r"dict with `input_ids`"),
        ([], ValueError, r"`features` is empty"),
    ],
)
def test_collator_refuses_bad_features_by_name(kind, features, error, match):
    with pytest.raises(error, match=match):
        COLLATORS[kind]()(features)


@pytest.mark.parametrize("kind", list(COLLATORS))
def test_collator_that_knows_the_vocabulary_refuses_out_of_vocabulary_ids(kind):
    collator = COLLATORS[kind](vocab_size=VOCAB)
    assert collator([{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}])["input_ids"].shape[0] >= 1
    with pytest.raises(ValueError, match=rf"`input_ids` must be token ids in \[0, vocab_size={VOCAB}\), .* to 70"):
        collator([{"input_ids": [1, 70, 3], "labels": [-100, 70, 3]}])


@pytest.mark.parametrize("family", FAMILIES)
def test_out_of_vocabulary_feature_is_refused_by_the_model_by_name(family, models):
    # A collator without `vocab_size` passes the id on: the model names `input_ids` (in the prompt, never masked) or
    # `labels` (in the answer, where masking moves it) and the vocabulary size.
    collator = COLLATORS["sft"](seed=0)
    batch = collator([{"input_ids": [1, VOCAB + 3, 2, 4], "labels": [-100, -100, 2, 4]}])
    with pytest.raises(ValueError, match=rf"`input_ids` must be in \[0, vocab_size={VOCAB}\)"):
        models[family](**batch)
    batch = collator([{"input_ids": [1, 2, VOCAB + 3, VOCAB + 3], "labels": [-100, -100, 0, 0]}] * 8)
    assert bool((batch["labels"] == VOCAB + 3).any())
    with pytest.raises(ValueError, match=rf"`labels` must be in \[0, vocab_size={VOCAB}\), got values from 67 to 67"):
        models[family](**batch)


# --- forward: lengths ----------------------------------------------------------------------------------------------


LIMIT_NAME = {"llada": "max_sequence_length", "llada2": "max_position_embeddings"}


@pytest.mark.parametrize("family", FAMILIES)
def test_sft_batch_longer_than_the_positions_is_refused(family, models):
    features = [{"input_ids": list(range(1, MAX_POSITIONS + 2)), "labels": [-100] * 4 + list(range(5, 18))}]
    batch = COLLATORS["sft"](seed=0)(features)
    with pytest.raises(ValueError, match=rf"`input_ids` holds 17 positions, .*`{LIMIT_NAME[family]}` \(16\)"):
        models[family](**batch)


@pytest.mark.parametrize("family", FAMILIES)
def test_input_of_exactly_the_limit_runs_and_one_more_is_refused(family, models):
    model = models[family]
    assert model(ids(length=MAX_POSITIONS)).logits.shape == (2, MAX_POSITIONS, VOCAB)
    with pytest.raises(ValueError, match=f"`{LIMIT_NAME[family]}`"):
        model(ids(length=MAX_POSITIONS + 1))
    with pytest.raises(ValueError, match=f"`inputs_embeds` holds 17 positions.*`{LIMIT_NAME[family]}`"):
        model(inputs_embeds=torch.zeros(1, MAX_POSITIONS + 1, 32))


@pytest.mark.parametrize("family", FAMILIES)
def test_cached_positions_count_towards_the_limit(family, models):
    model = models[family]
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        model(ids(length=12), cache=cache)
        assert model(ids(length=4), cache=cache).logits.shape[1] == 4
        with pytest.raises(ValueError, match=f"after 16 cached ones.*`{LIMIT_NAME[family]}`"):
            model(ids(length=1), cache=cache)


@pytest.mark.parametrize("family", FAMILIES)
def test_block_diffusion_batch_twice_the_positions_trains(family, models):
    # [noisy; clean] is 2L columns with positions 0..L-1 each: only the positions count, not the width.
    features = [{"input_ids": list(range(1, MAX_POSITIONS + 1))}]
    batch = COLLATORS["block"](seed=0)(features)
    assert batch["input_ids"].shape[1] == 2 * MAX_POSITIONS
    loss = models[family](**batch).loss
    assert torch.isfinite(loss)


@pytest.mark.parametrize("family", FAMILIES)
def test_generation_runs_at_exactly_the_limit(family, models):
    model = models[family]
    prompt = ids(batch=1, length=8)
    output = model.generate(prompt, max_new_tokens=8, block_length=8, steps=8)
    sequences = output if isinstance(output, torch.Tensor) else output.sequences
    assert sequences.shape == (1, MAX_POSITIONS)
    assert torch.equal(sequences[:, :8], prompt)


# --- forward: ids, types, shapes -----------------------------------------------------------------------------------


def _call(kind):
    """`(kwargs of the forward, exception, what the message must contain)` for a bad-input kind."""
    good = ids()
    cases = {
        "ids_too_large": (dict(input_ids=good + VOCAB), ValueError, rf"`input_ids` must be in \[0, vocab_size={VOCAB}"),
        "ids_negative": (dict(input_ids=good - 100), ValueError, r"`input_ids` must be in \[0, vocab_size"),
        "ids_float": (dict(input_ids=good.float()), TypeError, "`input_ids` must hold int64"),
        "ids_bool": (dict(input_ids=good > 5), TypeError, "`input_ids` must hold int64"),
        "ids_list": (dict(input_ids=good.tolist()), TypeError, "`input_ids` must be a `Tensor`"),
        "ids_1d": (dict(input_ids=good[0]), ValueError, r"`input_ids` must be 2-D \[batch, seq_len\]"),
        "ids_3d": (dict(input_ids=good[None]), ValueError, r"`input_ids` must be 2-D"),
        "ids_and_embeds": (dict(input_ids=good, inputs_embeds=torch.zeros(2, 8, 32)), ValueError, "exactly one of"),
        "nothing": (dict(), ValueError, "exactly one of `input_ids` or `inputs_embeds`"),
        "embeds_width": (dict(inputs_embeds=torch.zeros(2, 8, 31)), ValueError, r"`inputs_embeds` must be .*32"),
        "embeds_list": (dict(inputs_embeds=[[0.0] * 32]), TypeError, "`inputs_embeds` must be a `Tensor`"),
        "mask_list": (dict(input_ids=good, attention_mask=[[1] * 8] * 2), TypeError, "`attention_mask` must be a"),
        "mask_numpy": (dict(input_ids=good, attention_mask=torch.ones(2, 8).numpy()), TypeError, "`attention_mask`"),
        "mask_width": (dict(input_ids=good, attention_mask=torch.ones(2, 5)), ValueError,
                       r"2-D `attention_mask` must be \[batch, seq_len\] = \[2, 8\]"),
        "mask_batch": (dict(input_ids=good, attention_mask=torch.ones(3, 8)), ValueError, "2-D `attention_mask`"),
        "mask_additive_2d": (dict(input_ids=good, attention_mask=torch.full((2, 8), -1e9)), ValueError,
                             "2-D `attention_mask` is a padding mask of 0s"),
        "mask_4d_queries": (dict(input_ids=good, attention_mask=torch.ones(2, 1, 5, 8, dtype=torch.bool)), ValueError,
                            "4-D `attention_mask` must be"),
        "mask_4d_keys": (dict(input_ids=good, attention_mask=torch.ones(2, 1, 8, 9, dtype=torch.bool)), ValueError,
                         "4-D `attention_mask` must be"),
        "mask_3d": (dict(input_ids=good, attention_mask=torch.ones(2, 8, 8)), ValueError, "`attention_mask` must be"),
        "positions_list": (dict(input_ids=good, position_ids=list(range(8))), TypeError, "`position_ids` must be a"),
        "positions_shape": (dict(input_ids=good, position_ids=torch.arange(5)[None]), ValueError,
                            r"`position_ids` must be \[batch or 1, seq_len\]"),
        "positions_1d": (dict(input_ids=good, position_ids=torch.arange(8)), ValueError, "`position_ids` must be"),
        "positions_beyond": (dict(input_ids=good, position_ids=torch.arange(8)[None] + 9), ValueError,
                             r"`position_ids` must be in \[0, .*=16\), got values from 9 to 16"),
        "positions_negative": (dict(input_ids=good, position_ids=torch.arange(8)[None] - 1), ValueError,
                               r"`position_ids` must be in \[0"),
        "cache_tuple": (dict(input_ids=good, cache=((torch.zeros(1),),)), TypeError, "`cache` must be a `Cache`"),
        "labels_list": (dict(input_ids=good, labels=good.tolist()), TypeError, "`labels` must be a `Tensor`"),
        "p_mask_float": (dict(input_ids=good, labels=good, p_mask=0.5), TypeError, "`p_mask` must be a `Tensor`"),
        "loss_normalizer_str": (dict(input_ids=good, loss_normalizer="8"), TypeError, "`loss_normalizer` must be a"),
    }  # fmt: skip
    return cases[kind]


FORWARD_CASES = [
    "ids_too_large", "ids_negative", "ids_float", "ids_bool", "ids_list", "ids_1d", "ids_3d", "ids_and_embeds",
    "nothing", "embeds_width", "embeds_list", "mask_list", "mask_numpy", "mask_width", "mask_batch",
    "mask_additive_2d", "mask_4d_queries", "mask_4d_keys", "mask_3d", "positions_list", "positions_shape",
    "positions_1d", "positions_beyond", "positions_negative", "cache_tuple", "labels_list", "p_mask_float",
    "loss_normalizer_str",
]  # fmt: skip


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", FORWARD_CASES)
def test_forward_refuses_bad_inputs_by_name(family, kind, models):
    kwargs, error, match = _call(kind)
    with pytest.raises(error, match=match):
        models[family](**kwargs)


@pytest.mark.parametrize("family", FAMILIES)
def test_base_model_checks_its_inputs_too(family, models):
    backbone = models[family].model
    with pytest.raises(ValueError, match=r"`input_ids` must be in \[0, vocab_size"):
        backbone(ids() + VOCAB)
    with pytest.raises(TypeError, match="`attention_mask` must be a"):
        backbone(ids(), attention_mask=[[1] * 8] * 2)


@pytest.mark.parametrize("family", FAMILIES)
def test_valid_masks_and_positions_still_run(family, models):
    model, good = models[family], ids()
    padding = torch.ones(2, 8, dtype=torch.long)
    padding[1, :3] = 0
    causal = torch.ones(8, 8, dtype=torch.bool).tril()[None, None]
    for kwargs in (
        dict(attention_mask=padding),
        dict(attention_mask=padding.bool()),
        dict(attention_mask=padding.float()),
        dict(attention_mask=causal),  # broadcast over the batch
        dict(position_ids=torch.arange(8)[None] + 8),  # the last positions the model has
        dict(position_ids=torch.arange(8).repeat(2, 1)),
    ):
        assert model(good, **kwargs).logits.shape == (2, 8, VOCAB)
    assert model(good.int()).logits.shape == (2, 8, VOCAB)


# --- extreme temperatures --------------------------------------------------------------------------------------------


def sample(model, temperature, rows=16):
    torch.manual_seed(0)
    prompt = ids(batch=rows, length=2)
    return model.generate(prompt, gen_length=8, block_length=8, steps=8, temperature=temperature)[:, 2:]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("temperature", [1e30, 1e308])
def test_huge_temperature_samples_the_whole_vocabulary(family, models, temperature):
    """The released Gumbel-max arithmetic overflows here, and argmax then picked the first `inf`: the lowest ids."""
    tokens = sample(models[family], temperature)
    assert tokens.unique().numel() >= VOCAB // 2, tokens.unique().tolist()  # 128 near-uniform draws over 64 ids


@pytest.mark.parametrize("temperature", [1e-30, 1e-300])
def test_tiny_temperature_samples_the_greedy_answer(models, temperature):
    assert torch.equal(sample(models["llada"], temperature), sample(models["llada"], 0.0))


@pytest.mark.parametrize("temperature", [1e-30, 1e-300])
def test_tiny_temperature_draws_argmax_tokens_in_llada2(models, temperature):
    """The tempered softmax overflowed into nan probabilities here (a torch error from `multinomial`). The order of
    commits differs from greedy decoding, whose confidences are untempered, so only the tokens' validity is checked:
    every mask is filled, every token is in the vocabulary."""
    tokens = sample(models["llada2"], temperature)
    assert tokens.shape == (16, 8) and not (tokens == MASK).any() and int(tokens.max()) < VOCAB
