"""Configuration conventions shared by both families: strict validation, RoPE parameters, special tokens, released
config files, and the model cards' metadata."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import yaml
from huggingface_hub import ModelCardData
from huggingface_hub.errors import StrictDataclassError

from llada_hf import BUNDLED_MODEL_PATH, LLaDA2MoeConfig, LLaDA2MoeModel, LLaDAConfig, LLaDAModel


MODEL_CARDS = Path(__file__).parents[1] / "model_cards"

RELEASED_CONFIGS = [
    (LLaDAConfig, "llada-8b-instruct.config.json"),
    (LLaDAConfig, "llada-tiny-random/config.json"),
    (LLaDA2MoeConfig, "llada2-mini.config.json"),
    (LLaDA2MoeConfig, "llada2-moe-tiny-random/config.json"),
]


def tiny_llada(**overrides) -> LLaDAConfig:
    values = dict(
        d_model=32, n_heads=4, n_kv_heads=4, n_layers=1, mlp_hidden_size=64, vocab_size=64, embedding_size=64
    )
    values.update(overrides)
    return LLaDAConfig(**values)


def tiny_llada2(**overrides) -> LLaDA2MoeConfig:
    values = dict(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=48,
        moe_intermediate_size=16,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        num_experts=8,
        num_experts_per_tok=2,
        n_group=4,
        topk_group=2,
    )
    values.update(overrides)
    return LLaDA2MoeConfig(**values)


TINY = {LLaDAConfig: tiny_llada, LLaDA2MoeConfig: tiny_llada2}
MODEL = {LLaDAConfig: LLaDAModel, LLaDA2MoeConfig: LLaDA2MoeModel}


def released_keys_saved_unchanged(released: dict, saved: dict) -> bool:
    ignored = {"transformers_version", "model_type"}
    return {k: saved.get(k, "<missing>") for k in released if k not in ignored} == {
        k: v for k, v in released.items() if k not in ignored
    }


# --- strict validation ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config_class, values, field",
    [
        (LLaDAConfig, dict(d_model="x"), "d_model"),
        (LLaDAConfig, dict(hidden_size="x"), "d_model"),  # a standard name of `attribute_map`
        (LLaDAConfig, dict(n_layers=2.0), "n_layers"),
        (LLaDAConfig, dict(n_heads=True), "n_heads"),
        (LLaDAConfig, dict(weight_tying="no"), "weight_tying"),
        (LLaDAConfig, dict(rms_norm_eps="1e-5"), "rms_norm_eps"),
        (LLaDAConfig, dict(bos_token_id="<s>"), "bos_token_id"),
        (LLaDA2MoeConfig, dict(hidden_size="x"), "hidden_size"),
        (LLaDA2MoeConfig, dict(num_experts="8"), "num_experts"),
        (LLaDA2MoeConfig, dict(norm_topk_prob=1), "norm_topk_prob"),
        (LLaDA2MoeConfig, dict(eos_token_id=[1, "2"]), "eos_token_id"),
    ],
)
def test_wrong_types_raise_type_error_naming_the_field(config_class, values, field):
    with pytest.raises(TypeError, match=f"'{field}'") as error:
        TINY[config_class](**values)
    assert isinstance(error.value, StrictDataclassError)  # what transformers' own `@strict` configs raise


@pytest.mark.parametrize(
    "config_class, values, match",
    [
        (LLaDAConfig, dict(d_model=-32), "`d_model` must be positive"),
        (LLaDAConfig, dict(n_layers=0), "`n_layers` must be positive"),
        (LLaDAConfig, dict(n_heads=0), "`n_heads` must be positive"),
        (LLaDAConfig, dict(n_heads=3), r"`d_model` \(32\) must be a multiple of `n_heads` \(3\)"),
        (LLaDAConfig, dict(d_model=36, n_heads=12, n_kv_heads=12), r"`d_model / n_heads` \(3\) must be even"),
        (LLaDAConfig, dict(n_kv_heads=3), r"`n_heads` \(4\) must be a multiple of .*`n_kv_heads`"),
        (LLaDAConfig, dict(embedding_size=32), "`embedding_size` .* cannot be smaller"),
        (LLaDAConfig, dict(attention_dropout=1.5), r"`attention_dropout` must be in \[0, 1\)"),
        (LLaDAConfig, dict(alibi=True), "alibi"),
        (LLaDA2MoeConfig, dict(hidden_size=0), "`hidden_size` must be positive"),
        (LLaDA2MoeConfig, dict(num_key_value_heads=3), "`num_attention_heads` .* `num_key_value_heads`"),
        (LLaDA2MoeConfig, dict(topk_group=5), r"`topk_group` \(5\) must be at most `n_group` \(4\)"),
        (LLaDA2MoeConfig, dict(num_experts_per_tok=5), r"`num_experts_per_tok` \(5\) exceeds"),
        (LLaDA2MoeConfig, dict(n_group=3), "`num_experts` .* multiple of `n_group`"),
        (LLaDA2MoeConfig, dict(first_k_dense_replace=-1), "`first_k_dense_replace` must be >= 0"),
        (LLaDA2MoeConfig, dict(partial_rotary_factor=1.5), "`partial_rotary_factor`"),
        (LLaDA2MoeConfig, dict(rope_theta=-1.0), r"`rope_parameters\['rope_theta'\]` must be a positive number"),
        (LLaDA2MoeConfig, dict(rotary_dim=6), r"`rotary_dim` \(6\) must equal `head_dim \* partial_rotary_factor`"),
        (LLaDA2MoeConfig, dict(score_function="softmax"), "score_function"),
    ],
)
def test_invalid_values_raise_value_error_naming_the_rule(config_class, values, match):
    with pytest.raises(ValueError, match=match):
        TINY[config_class](**values)


@pytest.mark.parametrize("config_class", [LLaDAConfig, LLaDA2MoeConfig])
def test_assignment_is_type_checked_and_saving_revalidates(config_class, tmp_path):
    config = TINY[config_class]()
    with pytest.raises(TypeError, match="hidden_size|d_model"):
        config.hidden_size = "wide"
    assert config.hidden_size == 32
    config.num_attention_heads = 3  # a valid int, but no longer consistent with the other sizes
    with pytest.raises(ValueError, match="num_attention_heads|n_heads"):
        config.save_pretrained(tmp_path)
    assert not (tmp_path / "config.json").exists()


@pytest.mark.parametrize("config_class", [LLaDAConfig, LLaDA2MoeConfig])
@pytest.mark.parametrize(
    "override, match",
    [
        ({"attention_dropout": 2.0}, r"`attention_dropout` must be in \[0, 1\)"),
        ({"confidence_loss_weight": -1}, "`confidence_loss_weight` must be a finite number >= 0"),
        ({"confidence_loss_weight": float("nan")}, "`confidence_loss_weight` must be a finite number >= 0"),
    ],
)
def test_from_pretrained_overrides_are_validated_like_constructor_arguments(config_class, override, match, tmp_path):
    TINY[config_class]().save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=match):
        config_class.from_pretrained(tmp_path, **override)
    with pytest.raises(ValueError, match=match):
        TINY[config_class](**override)


@pytest.mark.parametrize("config_class", [LLaDAConfig, LLaDA2MoeConfig])
def test_confidence_loss_weight_is_a_declared_field(config_class, tmp_path):
    """λ of CAP training: 0 by default, set at load like any field, saved and reloaded."""
    config = TINY[config_class]()
    assert config.confidence_loss_weight == 0.0
    config.save_pretrained(tmp_path)
    loaded = config_class.from_pretrained(tmp_path, confidence_loss_weight=0.3)
    assert loaded.confidence_loss_weight == 0.3
    loaded.save_pretrained(tmp_path / "cap")
    assert config_class.from_pretrained(tmp_path / "cap").confidence_loss_weight == 0.3


def test_released_llada_moe_is_still_refused_by_name():
    with pytest.raises(ValueError, match="LLaDA-MoE"):
        tiny_llada(architectures=["LLaDAMoEModelLM"])


# --- released files round-trip -------------------------------------------------------------------------------------


@pytest.mark.parametrize("config_class, name", RELEASED_CONFIGS)
def test_released_configs_load_and_save_back_unchanged(config_class, name, fixtures_dir, tmp_path):
    released = json.loads((fixtures_dir / name).read_text())
    config = config_class.from_dict(dict(released))
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert released_keys_saved_unchanged(released, saved)
    assert "rope_parameters" not in saved  # the released format keeps the top-level RoPE keys only
    reloaded = config_class.from_pretrained(tmp_path)
    assert reloaded.to_dict() | {"transformers_version": None} == config.to_dict() | {"transformers_version": None}


def test_bundled_config_round_trips(tmp_path):
    released = json.loads((Path(BUNDLED_MODEL_PATH) / "config.json").read_text())
    config = LLaDAConfig.from_pretrained(BUNDLED_MODEL_PATH)
    config.save_pretrained(tmp_path)
    assert released_keys_saved_unchanged(released, json.loads((tmp_path / "config.json").read_text()))


# --- RoPE parameters -----------------------------------------------------------------------------------------------


def edit_in_place(config, key, value):
    config.rope_parameters[key] = value


def assign_new_dict(config, key, value):
    config.rope_parameters = {**config.rope_parameters, key: value}


def set_attribute(config, key, value):
    setattr(config, key, value)


@pytest.mark.parametrize("edit", [edit_in_place, assign_new_dict, set_attribute])
@pytest.mark.parametrize("config_class", [LLaDAConfig, LLaDA2MoeConfig])
def test_rope_theta_edits_reach_the_saved_file_and_the_model(config_class, edit, tmp_path):
    config = TINY[config_class]()
    assert config.rope_theta == config_class.default_theta
    edit(config, "rope_theta", 1e4)
    assert config.rope_theta == config.rope_parameters["rope_theta"] == 1e4

    config.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["rope_theta"] == 1e4
    reloaded = config_class.from_pretrained(tmp_path)
    assert reloaded.rope_parameters["rope_theta"] == reloaded.rope_theta == 1e4

    for built_from in (config, reloaded):
        rotary = MODEL[config_class](built_from).rotary_emb
        dim = rotary.inv_freq.numel() * 2
        expected = 1.0 / (1e4 ** (torch.arange(0, dim, 2).float() / dim))
        torch.testing.assert_close(rotary.inv_freq, expected)


@pytest.mark.parametrize("edit", [edit_in_place, assign_new_dict, set_attribute])
def test_partial_rotary_factor_edits_reach_the_saved_file_and_the_model(edit, tmp_path):
    config = tiny_llada2()  # head_dim 8
    assert (config.partial_rotary_factor, config.rotary_dim) == (0.5, 4)
    edit(config, "partial_rotary_factor", 1.0)

    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert (saved["partial_rotary_factor"], saved["rotary_dim"]) == (1.0, 8)
    reloaded = LLaDA2MoeConfig.from_pretrained(tmp_path)
    assert (reloaded.rope_parameters["partial_rotary_factor"], reloaded.rotary_dim) == (1.0, 8)
    assert LLaDA2MoeModel(reloaded).rotary_emb.inv_freq.numel() == 4  # 8 rotated channels, 4 frequencies


@pytest.mark.parametrize("config_class", [LLaDAConfig, LLaDA2MoeConfig])
def test_unsupported_rope_edits_raise_instead_of_being_dropped(config_class, tmp_path):
    config = TINY[config_class]()
    config.rope_parameters["rope_type"] = "linear"
    with pytest.raises(ValueError, match="rope_type='linear'"):
        config.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="rope_type='linear'"):
        MODEL[config_class](config)

    config = TINY[config_class]()
    config.rope_parameters = {"rope_type": "default"}  # a new dict without `rope_theta`
    with pytest.raises(ValueError, match="rope_theta"):
        config.save_pretrained(tmp_path)
    config.rope_parameters["rope_theta"] = "big"
    with pytest.raises(ValueError, match="rope_theta"):
        config.save_pretrained(tmp_path)


# --- special tokens ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("config_class, name", RELEASED_CONFIGS)
def test_bos_token_id_is_declared_and_none_where_the_released_file_has_none(config_class, name, fixtures_dir):
    assert "bos_token_id" in {field.name for field in dataclasses.fields(config_class)}
    assert config_class().bos_token_id is None
    released = json.loads((fixtures_dir / name).read_text())
    assert "bos_token_id" not in released
    assert config_class.from_dict(released).bos_token_id is None


@pytest.mark.parametrize("config_class", [LLaDAConfig, LLaDA2MoeConfig])
def test_bos_token_id_round_trips(config_class, tmp_path):
    TINY[config_class](bos_token_id=60).save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["bos_token_id"] == 60
    assert config_class.from_pretrained(tmp_path).bos_token_id == 60
    assert LLaDAConfig.from_pretrained(BUNDLED_MODEL_PATH).bos_token_id == 0  # its `<|startoftext|>`


# --- model cards ---------------------------------------------------------------------------------------------------


def front_matter(card: Path) -> dict:
    text = card.read_text()
    assert text.startswith("---\n"), f"{card.name} does not start with YAML front matter"
    metadata, separator, _ = text[len("---\n") :].partition("\n---\n")
    assert separator, f"{card.name}: front matter is not closed by '---'"
    return yaml.safe_load(metadata)


CARDS = sorted(MODEL_CARDS.glob("*.md"))


def test_every_supported_checkpoint_has_a_card():
    names = {card.stem for card in CARDS}
    expected = {"LLaDA-8B-Base", "LLaDA-8B-Instruct", "LLaDA-1.5", "LLaDA2.0-mini", "LLaDA2.0-flash"}
    assert expected | {"bundled-tiny-llada"} == names


@pytest.mark.parametrize("card", CARDS, ids=lambda card: card.stem)
def test_model_cards_start_with_hub_metadata(card):
    metadata = front_matter(card)
    ModelCardData(**metadata)  # the hub's own parser accepts it
    assert metadata["library_name"] == "transformers"
    assert metadata["pipeline_tag"] == "text-generation"
    assert {"llada", "diffusion", "masked-diffusion"} <= set(metadata["tags"])
    if card.stem.startswith("LLaDA2.0"):
        assert (metadata["license"], metadata["base_model"]) == ("apache-2.0", f"inclusionAI/{card.stem}")
    elif card.stem.startswith("LLaDA"):
        assert (metadata["license"], metadata["base_model"]) == ("mit", f"GSAI-ML/{card.stem}")
    else:  # trained from scratch here: no base model to name
        assert "base_model" not in metadata
        assert metadata["license"] == "apache-2.0"  # the project's license (setup.cfg)
