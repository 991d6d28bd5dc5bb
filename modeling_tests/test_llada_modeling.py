import json
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM, DynamicCache

from llada_hf import LLaDAConfig, LLaDAModel, LLaDAModelLM
from released_llada import released_llada_logits


TINY = "llada-tiny-random"


def tiny_config(**overrides) -> LLaDAConfig:
    values = dict(
        d_model=32,
        n_heads=4,
        n_kv_heads=4,
        n_layers=2,
        mlp_hidden_size=64,
        vocab_size=128,
        embedding_size=128,
        max_sequence_length=256,
        mask_token_id=126,
        eos_token_id=125,
        pad_token_id=125,
    )
    values.update(overrides)
    return LLaDAConfig(**values)


def random_ids(batch, seq, seed=0, high=120):
    return torch.randint(0, high, (batch, seq), generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def released_dir(fixtures_dir, tmp_path):
    path = tmp_path / TINY
    shutil.copytree(fixtures_dir / TINY, path)
    return path


# --- configuration -------------------------------------------------------------------------------------------------


def test_released_config_reads_unchanged_and_answers_standard_names(fixtures_dir):
    config = AutoConfig.from_pretrained(fixtures_dir / TINY)
    assert isinstance(config, LLaDAConfig)
    assert (config.hidden_size, config.num_attention_heads, config.num_hidden_layers) == (32, 4, 2)
    assert (config.num_key_value_heads, config.intermediate_size, config.max_position_embeddings) == (4, 64, 256)
    assert config.tie_word_embeddings is False  # from `weight_tying`; the file has no `tie_word_embeddings`
    assert config.rope_parameters == {"rope_type": "default", "rope_theta": 500000.0}
    assert config.mask_token_id == 126


def test_llada_8b_config_values_and_defaults(fixtures_dir):
    released = json.loads((fixtures_dir / "llada-8b-instruct.config.json").read_text())
    config = LLaDAConfig.from_dict(released)
    saved = config.to_dict()
    assert {k: saved.get(k) for k in released if k != "transformers_version"} == {
        k: v for k, v in released.items() if k != "transformers_version"
    }
    default = LLaDAConfig()
    for key in ("d_model", "n_layers", "n_heads", "mlp_hidden_size", "vocab_size", "mask_token_id", "rope_theta"):
        assert getattr(default, key) == released[key]
    assert default.tie_word_embeddings is False


def test_missing_architecture_key_in_released_file_raises(fixtures_dir):
    released = json.loads((fixtures_dir / TINY / "config.json").read_text())
    del released["weight_tying"]
    with pytest.raises(ValueError, match="weight_tying"):
        LLaDAConfig.from_dict(released)


@pytest.mark.parametrize(
    "option",
    [
        dict(alibi=True),
        dict(block_type="sequential"),
        dict(layer_norm_type="default"),
        dict(rope=False),
        dict(include_bias=True),
        dict(scale_logits=True),
        dict(clip_qkv=8.0),
    ],
)
def test_unimplemented_options_raise(option):
    with pytest.raises(ValueError, match=next(iter(option))):
        tiny_config(**option)


def test_llada_moe_config_is_refused():
    with pytest.raises(ValueError, match="LLaDA-MoE"):
        tiny_config(architectures=["LLaDAMoEModelLM"])


# --- loading and saving the released format ------------------------------------------------------------------------


@pytest.mark.parametrize("auto_class", [AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM])
def test_auto_classes_load_released_checkpoint(fixtures_dir, auto_class):
    model = auto_class.from_pretrained(fixtures_dir / TINY)
    assert isinstance(model, LLaDAModelLM)
    released = load_file(fixtures_dir / TINY / "model.safetensors")
    state = model.state_dict()
    assert torch.equal(state["lm_head.weight"], released["model.transformer.ff_out.weight"])
    assert torch.equal(state["model.embed_tokens.weight"], released["model.transformer.wte.weight"])
    assert torch.equal(
        state["model.layers.1.mlp.down_proj.weight"], released["model.transformer.blocks.1.ff_out.weight"]
    )
    assert torch.equal(
        state["model.layers.0.self_attn.o_proj.weight"], released["model.transformer.blocks.0.attn_out.weight"]
    )
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()  # weight_tying: false


def test_released_auto_map_needs_no_remote_code(fixtures_dir, released_dir):
    """Hub checkpoints carry the released `auto_map`; with llada_hf imported, our classes load them, no remote code."""
    released_8b = json.loads((fixtures_dir / "llada-8b-instruct.config.json").read_text())
    config = json.loads((released_dir / "config.json").read_text())
    config["auto_map"] = released_8b["auto_map"]
    (released_dir / "config.json").write_text(json.dumps(config))
    assert not list(released_dir.glob("*.py"))
    model = AutoModelForCausalLM.from_pretrained(released_dir)
    assert type(model) is LLaDAModelLM
    assert type(AutoConfig.from_pretrained(released_dir)) is LLaDAConfig


def test_save_load_round_trip_writes_released_format(fixtures_dir, tmp_path):
    model = AutoModel.from_pretrained(fixtures_dir / TINY)
    model.save_pretrained(tmp_path)

    released = load_file(fixtures_dir / TINY / "model.safetensors")
    saved = load_file(tmp_path / "model.safetensors")
    assert sorted(saved) == sorted(released)
    assert all(torch.equal(saved[k], released[k]) for k in released)

    released_config = json.loads((fixtures_dir / TINY / "config.json").read_text())
    saved_config = json.loads((tmp_path / "config.json").read_text())
    differing = {k for k in released_config if saved_config.get(k, "<missing>") != released_config[k]}
    assert differing == {"transformers_version"}

    reloaded = AutoModel.from_pretrained(tmp_path)
    ids = random_ids(2, 12)
    assert torch.equal(reloaded(ids).logits, model(ids).logits)


def test_backbone_class_loads_released_checkpoint(fixtures_dir):
    backbone = LLaDAModel.from_pretrained(fixtures_dir / TINY)
    released = load_file(fixtures_dir / TINY / "model.safetensors")
    assert torch.equal(backbone.norm.weight, released["model.transformer.ln_f.weight"])


# --- numerics ------------------------------------------------------------------------------------------------------


def test_float64_logits_match_released_forward(fixtures_dir):
    model = AutoModelForCausalLM.from_pretrained(fixtures_dir / TINY, dtype=torch.float64, attn_implementation="sdpa")
    released = {k: v.double() for k, v in load_file(fixtures_dir / TINY / "model.safetensors").items()}
    config = json.loads((fixtures_dir / TINY / "config.json").read_text())
    ids = random_ids(3, 17)
    mask = torch.ones_like(ids)
    mask[0, :5] = 0
    mask[2, :2] = 0
    with torch.no_grad():
        ours = model(ids, attention_mask=mask).logits
        ours_unmasked = model(ids).logits
    assert ours.dtype == torch.float64
    torch.testing.assert_close(ours, released_llada_logits(released, config, ids, mask), rtol=0, atol=1e-10)
    torch.testing.assert_close(ours_unmasked, released_llada_logits(released, config, ids), rtol=0, atol=1e-10)


@pytest.mark.parametrize("implementation", ["eager", "flex_attention"])
def test_attention_implementations_agree(fixtures_dir, implementation):
    reference = AutoModel.from_pretrained(fixtures_dir / TINY, attn_implementation="sdpa")
    other = AutoModel.from_pretrained(fixtures_dir / TINY, attn_implementation=implementation)
    ids = random_ids(2, 16)
    mask = torch.ones_like(ids)
    mask[1, :4] = 0
    block_causal = (torch.arange(16)[:, None] // 4 >= torch.arange(16)[None, :] // 4)[None, None].expand(2, 1, 16, 16)
    # flex_attention on CPU runs only without grad, and torch 2.13's CPU inductor can fail to recompile a masked
    # kernel after an unmasked one, so the masked cases go first.
    with torch.no_grad():
        for attention_mask in (block_causal, mask, None):
            expected = reference(ids, attention_mask=attention_mask).logits
            torch.testing.assert_close(other(ids, attention_mask=attention_mask).logits, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
def test_all_dtypes_run(fixtures_dir, dtype):
    model = AutoModel.from_pretrained(fixtures_dir / TINY, dtype=dtype)
    logits = model(random_ids(1, 8)).logits
    assert logits.dtype == dtype and torch.isfinite(logits).all()


def test_left_padding_matches_unpadded_row():
    torch.manual_seed(0)
    model = LLaDAModelLM(tiny_config()).eval()
    row = random_ids(1, 10)
    padded = torch.cat([torch.full((1, 4), 125), row], dim=1)
    mask = torch.cat([torch.zeros(1, 4, dtype=torch.long), torch.ones(1, 10, dtype=torch.long)], dim=1)
    batch = torch.cat([padded, random_ids(1, 14, seed=1)])
    batch_mask = torch.cat([mask, torch.ones(1, 14, dtype=torch.long)])
    with torch.no_grad():  # positions include the pads, as in the released model; RoPE only sees offsets
        alone = model(row).logits
        together = model(batch, attention_mask=batch_mask).logits
    assert torch.isfinite(together).all()
    torch.testing.assert_close(together[0, 4:], alone[0], rtol=0, atol=1e-5)


def test_block_causal_mask_isolates_earlier_blocks():
    torch.manual_seed(0)
    model = LLaDAModelLM(tiny_config()).eval()
    block, seq = 4, 12
    mask = (torch.arange(seq)[:, None] // block >= torch.arange(seq)[None, :] // block)[None, None]
    ids = random_ids(1, seq)
    changed = ids.clone()
    changed[0, 8:] = (changed[0, 8:] + 7) % 120
    with torch.no_grad():
        before = model(ids, attention_mask=mask).logits
        after = model(changed, attention_mask=mask).logits
        additive = model(changed, attention_mask=torch.where(mask, 0.0, torch.finfo(torch.float32).min)).logits
    torch.testing.assert_close(after[:, :8], before[:, :8], rtol=0, atol=0)
    assert not torch.allclose(after[:, 8:], before[:, 8:])
    torch.testing.assert_close(additive, after, rtol=0, atol=1e-6)


def test_zero_one_float_4d_mask_is_refused():
    model = LLaDAModelLM(tiny_config()).eval()
    with pytest.raises(ValueError, match="bool"):
        model(random_ids(1, 4), attention_mask=torch.ones(1, 1, 4, 4))


def test_cache_prefix_then_block_equals_block_causal_forward():
    torch.manual_seed(0)
    model = LLaDAModelLM(tiny_config()).eval()
    ids = random_ids(2, 12)
    mask = (torch.arange(12)[:, None] // 8 >= torch.arange(12)[None, :] // 8)[None, None].expand(2, 1, 12, 12)
    with torch.no_grad():
        full = model(ids, attention_mask=mask).logits
        cache = DynamicCache(config=model.config)
        prefix = model(ids[:, :8], cache=cache, use_cache=True)
        assert prefix.cache is cache and cache.get_seq_length() == 8
        suffix = model(ids[:, 8:], cache=cache, use_cache=True).logits
    torch.testing.assert_close(prefix.logits, full[:, :8], rtol=0, atol=1e-5)
    torch.testing.assert_close(suffix, full[:, 8:], rtol=0, atol=1e-5)


def test_gradient_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    model = LLaDAModelLM(tiny_config()).train()
    ids = random_ids(2, 10)

    def grads():
        model.zero_grad()
        model(ids).logits.float().pow(2).mean().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    plain = grads()
    model.activation_checkpointing_enable()
    assert model.model.layers[0].gradient_checkpointing
    checkpointed = grads()
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=0, atol=1e-7)


def test_gqa_and_tied_variants_build():
    model = LLaDAModelLM(tiny_config(n_kv_heads=2, weight_tying=True))
    assert model.model.layers[0].self_attn.k_proj.out_features == 16
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert torch.isfinite(model(random_ids(1, 6)).logits).all()


MEMORY_SCRIPT = r"""
import gc, os, sys, json
import torch, llada_hf
from transformers import AutoModel

def rss_anon_bytes():
    # resident memory that is not a file mapping (mmapped safetensors pages are excluded)
    with open("/proc/self/status") as status:
        fields = dict(line.split(":", 1) for line in status)
    return int(fields["RssAnon"].split()[0]) * 1024

path = sys.argv[1]
gc.collect()
baseline = rss_anon_bytes()
peak = [baseline]
import threading, time
stop = False
def sample():
    while not stop:
        peak[0] = max(peak[0], rss_anon_bytes()); time.sleep(0.002)
thread = threading.Thread(target=sample); thread.start()
model = AutoModel.from_pretrained(path, dtype=torch.bfloat16)
stop = True; thread.join()
peak[0] = max(peak[0], rss_anon_bytes())
weights = sum(p.numel() * p.element_size() for p in model.parameters())
print(json.dumps({"weights": weights, "peak_above_baseline": peak[0] - baseline}))
"""


@pytest.mark.slow
def test_from_pretrained_peak_memory_is_close_to_weight_size(tmp_path):
    """~200M-parameter bf16 checkpoint: loading must not materialise a random copy first."""
    config = tiny_config(
        d_model=1024,
        n_heads=16,
        n_kv_heads=16,
        n_layers=12,
        mlp_hidden_size=4096,
        vocab_size=32000,
        embedding_size=32000,
    )
    with torch.device("meta"):
        meta_model = LLaDAModelLM(config)
    model = meta_model.to_empty(device="cpu").to(torch.bfloat16)
    for parameter in model.parameters():
        torch.nn.init.normal_(parameter, std=0.02)
    model.save_pretrained(tmp_path)
    del model, meta_model
    result = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, str(tmp_path)], capture_output=True, text=True, check=True
    )
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["weights"] > 350e6
    assert figures["peak_above_baseline"] < 1.3 * figures["weights"], figures


def test_attention_implementation_can_be_switched_after_loading(fixtures_dir):
    model = AutoModel.from_pretrained(fixtures_dir / TINY, attn_implementation="sdpa")
    ids = random_ids(1, 9)
    with torch.no_grad():
        sdpa_logits = model(ids).logits
        model.set_attn_implementation("eager")
        assert model.config._attn_implementation == "eager"
        torch.testing.assert_close(model(ids).logits, sdpa_logits, rtol=1e-5, atol=1e-5)
