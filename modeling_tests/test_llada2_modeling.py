"""LLaDA2.0 MoE modeling: released config/checkpoint format, routing, experts kernels, masks, and float64 parity with
an independent re-statement of the released forward."""

import json
import math
import re

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM
from transformers import initialization as hf_init

from llada_hf import LLaDA2MoeConfig, LLaDA2MoeModel, LLaDA2MoeModelLM
from llada_hf.modeling_llada2_moe import LLaDA2MoeGate, LLaDA2MoeMLP, LLaDA2MoeSparseMoeBlock


TINY = "llada2-moe-tiny-random"
MINI_CONFIG = "llada2-mini.config.json"
EXPERTS_IMPLEMENTATIONS = ("eager", "batched_mm", "grouped_mm")


def tiny_config(**overrides) -> LLaDA2MoeConfig:
    """Three layers (one dense), 8 experts in 4 groups, 2 groups kept, 3 experts per token."""
    values = dict(
        vocab_size=96,
        hidden_size=32,
        intermediate_size=48,
        moe_intermediate_size=16,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        num_experts=8,
        num_experts_per_tok=3,
        n_group=4,
        topk_group=2,
        first_k_dense_replace=1,
        initializer_range=0.2,  # logits of order 1, so that absolute tolerances mean something
        mask_token_id=94,
        eos_token_id=95,
        pad_token_id=95,
    )
    values.update(overrides)
    return LLaDA2MoeConfig(**values)


def random_model(dtype=torch.float32, seed=0, **overrides) -> LLaDA2MoeModelLM:
    """A tiny model with non-trivial norms and expert biases (zero biases would not test their role)."""
    torch.manual_seed(seed)
    model = LLaDA2MoeModelLM(tiny_config(**overrides))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.normal_(1.0, 0.2)
        for module in model.modules():
            if isinstance(module, LLaDA2MoeGate):
                module.expert_bias.normal_(0.0, 0.3)
    return model.to(dtype).eval()


def random_ids(batch, seq, seed=0, high=94):
    return torch.randint(0, high, (batch, seq), generator=torch.Generator().manual_seed(seed))


def block_causal_mask(batch, seq, block):
    """Bool [batch, 1, seq, seq]: full attention inside a block, causal across blocks (True = may attend)."""
    blocks = torch.arange(seq) // block
    return (blocks[:, None] >= blocks[None, :]).expand(batch, 1, seq, seq)


# --- an independent float64 re-statement of the released forward ---------------------------------------------------


def _released_rms_norm(x, weight, eps):
    dtype = x.dtype
    x = x.to(torch.float32)
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x.to(dtype)


def _released_routing(scores, bias, config):
    """Group-limited top-k written per token: keep the groups with the best top-2 sums, then the best experts."""
    n_group, topk_group, top_k = config["n_group"], config["topk_group"], config["num_experts_per_tok"]
    num_experts = scores.shape[-1]
    per_group = num_experts // n_group
    chosen = []
    for row in (scores + bias).tolist():
        group_score = [sum(sorted(row[g * per_group : (g + 1) * per_group])[-2:]) for g in range(n_group)]
        groups = sorted(range(n_group), key=lambda g: -group_score[g])[:topk_group]
        allowed = [e for e in range(num_experts) if e // per_group in groups]
        chosen.append(sorted(allowed, key=lambda e: -row[e])[:top_k])
    return torch.tensor(chosen)


def released_llada2_logits(state_dict, config, input_ids, attention_mask=None, attention="sdpa"):
    """Float32 logits of the released LLaDA2 model run in float64, from its checkpoint tensors (released names).

    Mirrors the released casts: RMSNorm in float32, RoPE tables in float32 cast to the activations' dtype, router in
    float32, expert outputs weighted and summed in float32, eager softmax in float32, logits cast to float32.
    `attention_mask` is a 4-D bool mask or None.
    """
    w = {k: v.double() for k, v in state_dict.items()}
    batch, seq = input_ids.shape
    n_heads, n_kv, head_dim = config["num_attention_heads"], config["num_key_value_heads"], config["head_dim"]
    eps = config["rms_norm_eps"]
    rot = int(head_dim * config["partial_rotary_factor"])

    inv_freq = 1.0 / (config["rope_theta"] ** (torch.arange(0, rot, 2, dtype=torch.int64).float() / rot))
    freqs = (inv_freq[None, :, None] @ torch.arange(seq)[None, None, :].float()).transpose(1, 2)
    table = torch.cat((freqs, freqs), dim=-1)
    cos, sin = table.cos().double()[:, None], table.sin().double()[:, None]

    def rope(t):
        part = t[..., :rot]
        half = torch.cat((-part[..., rot // 2 :], part[..., : rot // 2]), dim=-1)
        return torch.cat((part * cos + half * sin, t[..., rot:]), dim=-1)

    def swiglu(x, prefix):
        gate = F.silu(x @ w[prefix + "gate_proj.weight"].T)
        return (gate * (x @ w[prefix + "up_proj.weight"].T)) @ w[prefix + "down_proj.weight"].T

    h = w["model.word_embeddings.weight"][input_ids]
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        x = _released_rms_norm(h, w[p + "input_layernorm.weight"], eps)
        qkv = (x @ w[p + "attention.query_key_value.weight"].T).view(batch, seq, n_heads + 2 * n_kv, head_dim)
        q, k, v = (t.transpose(1, 2) for t in qkv.split([n_heads, n_kv, n_kv], dim=-2))
        q = rope(_released_rms_norm(q, w[p + "attention.query_layernorm.weight"], eps))
        k = rope(_released_rms_norm(k, w[p + "attention.key_layernorm.weight"], eps))
        k, v = k.repeat_interleave(n_heads // n_kv, dim=1), v.repeat_interleave(n_heads // n_kv, dim=1)
        if attention == "sdpa":
            att = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask)
        else:
            scores = q @ k.transpose(2, 3) / math.sqrt(head_dim)
            if attention_mask is not None:
                scores = scores.masked_fill(~attention_mask, torch.finfo(torch.float64).min)
            att = F.softmax(scores, dim=-1, dtype=torch.float32).double() @ v
        h = h + att.transpose(1, 2).reshape(batch, seq, -1) @ w[p + "attention.dense.weight"].T

        x = _released_rms_norm(h, w[p + "post_attention_layernorm.weight"], eps)
        if i < config["first_k_dense_replace"]:
            h = h + swiglu(x, p + "mlp.")
            continue
        tokens = x.reshape(-1, x.shape[-1])
        scores = torch.sigmoid(F.linear(tokens.float(), w[p + "mlp.gate.weight"].float()))
        chosen = _released_routing(scores, w[p + "mlp.gate.expert_bias"], config)
        weights = scores.gather(1, chosen)
        weights = weights / (weights.sum(-1, keepdim=True) + 1e-20) * config["routed_scaling_factor"]
        slots = [[swiglu(token, f"{p}mlp.experts.{e}.") for e in row] for token, row in zip(tokens, chosen.tolist())]
        outputs = torch.stack([torch.stack(row) for row in slots])
        routed = (outputs.float() * weights.unsqueeze(-1)).sum(dim=1).double().view_as(x)
        h = h + (routed + swiglu(x, p + "mlp.shared_experts."))
    h = _released_rms_norm(h, w["model.norm.weight"], eps)
    return (h @ w["lm_head.weight"].T).float()


def released_format(model, path):
    """What `save_pretrained` writes: (tensors, config dict)."""
    model.save_pretrained(path)
    return load_file(path / "model.safetensors"), json.loads((path / "config.json").read_text())


# --- configuration -------------------------------------------------------------------------------------------------


def test_released_mini_config_reads_and_saves_unchanged(fixtures_dir, tmp_path):
    released = json.loads((fixtures_dir / MINI_CONFIG).read_text())
    config = LLaDA2MoeConfig.from_dict(released)
    assert config.use_qk_norm is True  # absent from the file
    assert (config.mask_token_id, config.eos_token_id, config.pad_token_id) == (156895, 156892, 156892)
    assert config.rope_parameters == {"rope_type": "default", "rope_theta": 600000, "partial_rotary_factor": 0.5}

    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "llada2_moe"
    assert {k: saved.get(k, "<missing>") for k in released if k != "transformers_version"} == {
        k: v for k, v in released.items() if k != "transformers_version"
    }


def test_defaults_describe_llada2_mini(fixtures_dir):
    released = json.loads((fixtures_dir / MINI_CONFIG).read_text())
    default = LLaDA2MoeConfig()
    not_fields = {
        "architectures",
        "dtype",
        "transformers_version",
        "rope_scaling",
        "norm_softmax",
        "using_split_qkv_in_self_attention",
    }
    assert {k: getattr(default, k) for k in released if k not in not_fields} == {
        k: v for k, v in released.items() if k not in not_fields
    }
    assert default.rope_parameters["rope_theta"] == released["rope_theta"]


def test_special_token_defaults_only_inside_the_vocabulary(fixtures_dir):
    fixture = AutoConfig.from_pretrained(fixtures_dir / TINY)
    assert isinstance(fixture, LLaDA2MoeConfig)
    assert (fixture.mask_token_id, fixture.eos_token_id, fixture.pad_token_id) == (None, 124, 124)
    small = LLaDA2MoeConfig(vocab_size=1000)
    assert (small.mask_token_id, small.eos_token_id, small.pad_token_id) == (None, None, None)
    assert LLaDA2MoeConfig(vocab_size=1000, mask_token_id=999).mask_token_id == 999


@pytest.mark.parametrize(
    "option, match",
    [
        (dict(score_function="softmax"), "score_function"),
        (dict(use_qkv_bias=True), "use_qkv_bias"),
        (dict(use_bias=True), "use_bias"),
        (dict(use_sliding_window=True), "use_sliding_window"),
        (dict(use_qk_norm=False), "use_qk_norm"),
        (dict(norm_head=True), "norm_head"),
        (dict(rope_scaling={"type": "yarn", "factor": 4.0}), "rope_type='yarn'"),
        (dict(n_group=3), "n_group"),
        (dict(num_experts_per_tok=5), "num_experts_per_tok"),
    ],
)
def test_unimplemented_options_raise(option, match):
    with pytest.raises(ValueError, match=match):
        tiny_config(**option)


def test_released_file_with_rope_scaling_raises(fixtures_dir):
    released = json.loads((fixtures_dir / TINY / "config.json").read_text())
    released["rope_scaling"] = {"rope_type": "dynamic", "factor": 2.0}
    with pytest.raises(ValueError, match="dynamic"):
        LLaDA2MoeConfig.from_dict(released)


def test_mini_shapes_build_on_meta_device(fixtures_dir):
    config = LLaDA2MoeConfig.from_dict(json.loads((fixtures_dir / MINI_CONFIG).read_text()))
    with torch.device("meta"):
        model = LLaDA2MoeModelLM(config)
    total = sum(p.numel() for p in model.parameters())
    assert 16.2e9 < total < 16.3e9  # LLaDA2.0-mini: 16B parameters in all
    experts = model.model.layers[1].mlp.experts
    assert tuple(experts.gate_up_proj.shape) == (256, 1024, 2048)
    assert tuple(experts.down_proj.shape) == (256, 2048, 512)
    assert tuple(model.model.layers[0].attention.query_key_value.weight.shape) == ((16 + 2 * 4) * 128, 2048)


# --- loading and saving the released format ------------------------------------------------------------------------


@pytest.mark.parametrize("auto_class", [AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM])
def test_auto_classes_load_released_checkpoint_unchanged(fixtures_dir, auto_class):
    model, info = auto_class.from_pretrained(fixtures_dir / TINY, output_loading_info=True)
    assert isinstance(model, LLaDA2MoeModelLM) and model.diffusion_family == "llada2"
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]

    released = load_file(fixtures_dir / TINY / "model.safetensors")
    state = model.state_dict()
    experts = "model.layers.1.mlp.experts."
    fused = {experts + "gate_up_proj", experts + "down_proj"}
    assert all(torch.equal(state[k], released[k]) for k in state if k not in fused)
    gate_up = torch.stack(
        [torch.cat([released[f"{experts}{e}.{name}_proj.weight"] for name in ("gate", "up")]) for e in range(4)]
    )
    down = torch.stack([released[f"{experts}{e}.down_proj.weight"] for e in range(4)])
    assert torch.equal(state[experts + "gate_up_proj"], gate_up)
    assert torch.equal(state[experts + "down_proj"], down)
    assert model.lm_head.weight.data_ptr() != model.model.word_embeddings.weight.data_ptr()  # untied


def test_from_pretrained_initialises_on_meta_and_draws_no_random_weights(fixtures_dir, monkeypatch):
    devices, draws = [], []
    post_init = LLaDA2MoeModel.post_init
    normal = hf_init.normal_

    def recording_post_init(self):
        devices.append(self.word_embeddings.weight.device.type)
        return post_init(self)

    def recording_normal(tensor, *args, **kwargs):
        draws.append(tuple(tensor.shape))
        return normal(tensor, *args, **kwargs)

    monkeypatch.setattr(LLaDA2MoeModel, "post_init", recording_post_init)
    monkeypatch.setattr(hf_init, "normal_", recording_normal)
    model = AutoModelForCausalLM.from_pretrained(fixtures_dir / TINY)
    assert devices == ["meta"]
    assert draws == []
    assert torch.allclose(model.model.rotary_emb.inv_freq, torch.tensor([1.0, 600000.0**-0.5]))

    LLaDA2MoeModelLM(tiny_config())  # a model built from a config does draw its weights
    assert draws


def test_save_writes_released_format_and_round_trips(fixtures_dir, tmp_path):
    model = AutoModel.from_pretrained(fixtures_dir / TINY)
    saved, saved_config = released_format(model, tmp_path)

    released = load_file(fixtures_dir / TINY / "model.safetensors")
    assert sorted(saved) == sorted(released)
    assert all(torch.equal(saved[k], released[k]) for k in released)
    released_config = json.loads((fixtures_dir / TINY / "config.json").read_text())
    assert {k: saved_config.get(k, "<missing>") for k in released_config if k != "transformers_version"} == {
        k: v for k, v in released_config.items() if k != "transformers_version"
    }

    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    ids = random_ids(2, 12, high=120)
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, model(ids).logits)


def test_random_model_round_trips_with_per_expert_keys(tmp_path):
    model = random_model()
    saved, _ = released_format(model, tmp_path)
    assert tuple(saved["model.layers.2.mlp.experts.7.gate_proj.weight"].shape) == (16, 32)
    assert tuple(saved["model.layers.2.mlp.experts.7.down_proj.weight"].shape) == (32, 16)
    assert not any("gate_up_proj" in k for k in saved)

    reloaded = LLaDA2MoeModelLM.from_pretrained(tmp_path).eval()
    state, reloaded_state = model.state_dict(), reloaded.state_dict()
    assert sorted(state) == sorted(reloaded_state)
    assert all(torch.equal(state[k], reloaded_state[k]) for k in state)
    ids = random_ids(2, 16)
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, model(ids).logits)


def test_parallel_plans_name_existing_modules():
    model = random_model()
    config = model.config
    names = [name for name, _ in model.model.named_modules()] + [name for name, _ in model.model.named_parameters()]
    for pattern in [*config.base_model_tp_plan, *config.base_model_ep_plan, *config.base_model_fsdp_plan]:
        regex = re.compile("^" + re.escape(pattern).replace(r"\*", r"\d+") + "$")
        assert any(regex.match(name) for name in names), pattern


# --- numerics against the released forward --------------------------------------------------------------------------


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_float64_logits_match_released_forward(fixtures_dir, tmp_path, attention):
    fixture = AutoModelForCausalLM.from_pretrained(fixtures_dir / TINY, dtype=torch.float64)
    cases = [
        (fixture, load_file(fixtures_dir / TINY / "model.safetensors"), random_ids(2, 24, high=120)),
        (random_model(torch.float64), None, random_ids(2, 16)),
    ]
    for model, state_dict, ids in cases:
        model.set_attn_implementation(attention)
        assert model.config._attn_implementation == attention  # transformers allows the switch for this file
        if state_dict is None:
            state_dict, _ = released_format(model, tmp_path)
        config = model.config.to_dict()
        for mask in (None, block_causal_mask(ids.shape[0], ids.shape[1], 8)):
            expected = released_llada2_logits(state_dict, config, ids, mask, attention=attention)
            for implementation in EXPERTS_IMPLEMENTATIONS:
                model.set_experts_implementation(implementation)
                with torch.no_grad():
                    logits = model(ids, attention_mask=mask).logits
                assert logits.dtype == torch.float32
                assert (logits - expected).abs().max() <= 1e-8, (implementation, mask is None)
            assert expected.abs().max() > 0.3  # the tolerance is small against the logits' scale


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_runs_in_float32_bfloat16_float64_with_float32_logits(fixtures_dir, dtype):
    model = AutoModel.from_pretrained(fixtures_dir / TINY, dtype=dtype)
    assert model.model.layers[1].mlp.experts.gate_up_proj.dtype == dtype
    reference = AutoModel.from_pretrained(fixtures_dir / TINY, dtype=torch.float64)
    ids = random_ids(2, 16, high=120)
    with torch.no_grad():
        logits, expected = model(ids).logits, reference(ids).logits
    assert logits.dtype == torch.float32
    tolerance = {torch.float64: 0.0, torch.float32: 1e-5, torch.bfloat16: 0.1}[dtype]
    assert (logits - expected).abs().max() <= tolerance


# --- routing ---------------------------------------------------------------------------------------------------------


def router(top_k=3, topk_group=2, scaling=2.5):
    torch.manual_seed(0)
    config = tiny_config(num_experts_per_tok=top_k, topk_group=topk_group, routed_scaling_factor=scaling)
    return LLaDA2MoeGate(config)


def test_router_keeps_only_the_best_groups():
    gate = router()
    with torch.no_grad():
        gate.weight.zero_()  # every score is sigmoid(0) = 0.5: the bias alone decides
        # groups of 2: {0,1} holds the single best expert but the weakest pair; {2,3} and {4,5} are the best pairs
        gate.expert_bias.copy_(torch.tensor([1.0, -1.0, 0.6, 0.6, 0.56, 0.54, 0.0, 0.0]))
    _, _, indices = gate(torch.randn(5, 32))
    assert all(sorted(row) == [2, 3, 4] for row in indices.tolist())

    unlimited = router(topk_group=4)
    unlimited.load_state_dict(gate.state_dict())
    _, _, indices = unlimited(torch.randn(5, 32))
    assert all(0 in row for row in indices.tolist())  # without the group limit, expert 0 wins


def test_router_group_limit_on_random_scores():
    gate = router()
    with torch.no_grad():
        gate.weight.normal_()
        gate.expert_bias.normal_(0.0, 0.3)
    hidden = torch.randn(64, 32)
    _, _, indices = gate(hidden)
    scores = torch.sigmoid(hidden @ gate.weight.T) + gate.expert_bias
    best_groups = scores.view(64, 4, 2).sum(-1).topk(2, dim=-1).indices  # top-2 of a pair = the pair
    for row, groups in zip(indices.tolist(), best_groups.tolist()):
        assert {e // 2 for e in row} <= set(groups)


def test_bias_changes_selection_but_not_weights():
    gate = router()
    with torch.no_grad():
        gate.weight.normal_()
    hidden = torch.randn(16, 32)
    _, _, unbiased_indices = gate(hidden)
    with torch.no_grad():
        gate.expert_bias[7] = 10.0  # always selected, whatever its score
        gate.expert_bias[6] = 10.0
    _, weights, indices = gate(hidden)
    assert (indices[:, :2].sort(dim=-1).values == torch.tensor([6, 7])).all()
    assert not torch.equal(indices, unbiased_indices)

    scores = torch.sigmoid(hidden @ gate.weight.T).gather(1, indices)
    expected = scores / scores.sum(-1, keepdim=True) * 2.5
    assert torch.allclose(weights, expected, atol=1e-6)
    assert weights.dtype == torch.float32


def test_routed_scaling_factor_and_single_expert_weights():
    gate = router(scaling=1.7)
    with torch.no_grad():
        gate.weight.normal_()
    hidden = torch.randn(8, 32, dtype=torch.float64)
    logits, weights, _ = gate.double()(hidden)
    assert logits.dtype == torch.float32  # the router always runs in float32
    assert torch.allclose(weights.sum(-1), torch.full((8,), 1.7))

    single = router(top_k=1, scaling=2.5)
    single.load_state_dict(gate.state_dict())
    logits, weights, indices = single(hidden.float())
    assert torch.allclose(weights, torch.sigmoid(logits).gather(1, indices) * 2.5)  # one expert: not normalised


def test_moe_block_adds_shared_experts():
    model = random_model()
    block = model.model.layers[1].mlp
    assert isinstance(block, LLaDA2MoeSparseMoeBlock)
    hidden = torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        output = block(hidden)
        flat = hidden.view(-1, 32)
        _, weights, indices = block.gate(flat)
        routed = block.experts(flat, indices, weights).view_as(hidden)
        shared = block.shared_experts(hidden)
    assert shared.abs().max() > 1e-3
    assert torch.allclose(output, routed + shared, atol=1e-6)
    assert isinstance(model.model.layers[0].mlp, LLaDA2MoeMLP)  # first_k_dense_replace=1


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("implementation", EXPERTS_IMPLEMENTATIONS)
def test_experts_implementations_match_naive_per_token_reference(dtype, implementation):
    model = random_model(dtype)
    assert type(model)._can_set_experts_implementation()
    model.set_experts_implementation(implementation)
    assert model.config._experts_implementation == implementation
    experts = model.model.layers[2].mlp.experts
    hidden = torch.randn(40, 32, dtype=dtype, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        _, weights, indices = model.model.layers[2].mlp.gate(hidden)
        output = experts(hidden, indices, weights)

        expected = torch.zeros(40, 32, dtype=torch.float64)
        for t in range(40):
            for slot in range(indices.shape[1]):
                e = indices[t, slot]
                gate, up = (experts.gate_up_proj[e] @ hidden[t]).chunk(2)
                out = experts.down_proj[e] @ (F.silu(gate) * up)
                expected[t] += out.double() * weights[t, slot].double()
    assert output.dtype == dtype
    assert torch.allclose(output.double(), expected, rtol=1e-5, atol=1e-6)
    assert len(set(indices.flatten().tolist())) > 4  # many experts really ran


# --- attention and masks -------------------------------------------------------------------------------------------


def test_attention_backends_agree():
    model = random_model()
    ids = random_ids(2, 16)
    padding = torch.tensor([[0] * 3 + [1] * 13, [1] * 16])
    masks = {"none": None, "padding": padding, "block": block_causal_mask(2, 16, 8)}
    logits = {}
    for attention in ("eager", "sdpa", "flex_attention"):
        model.set_attn_implementation(attention)
        for name, mask in masks.items():
            if attention == "flex_attention" and name != "block":
                continue  # flex compiles per mask (seconds on CPU); one mask is enough
            with torch.no_grad():
                logits[attention, name] = model(ids, attention_mask=mask).logits
    for (attention, name), value in logits.items():
        assert torch.allclose(value, logits["sdpa", name], atol=2e-5), (attention, name)
    assert not torch.allclose(logits["sdpa", "none"], logits["sdpa", "block"], atol=1e-3)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_block_causal_mask_hides_later_blocks(attention):
    model = random_model(torch.float64)
    model.set_attn_implementation(attention)
    ids = random_ids(2, 24)
    changed = ids.clone()
    changed[:, 16:] = random_ids(2, 8, seed=1)
    mask = block_causal_mask(2, 24, 8)
    with torch.no_grad():
        logits, changed_logits = model(ids, attention_mask=mask).logits, model(changed, attention_mask=mask).logits
    assert torch.allclose(logits[:, :16], changed_logits[:, :16], rtol=0, atol=1e-7)
    assert not torch.allclose(logits[:, 16:], changed_logits[:, 16:], atol=1e-3)


def test_additive_float_mask_equals_bool_mask_and_01_float_mask_is_refused():
    model = random_model(torch.float64)
    ids = random_ids(1, 16)
    mask = block_causal_mask(1, 16, 8)
    additive = torch.zeros(mask.shape, dtype=torch.float64).masked_fill(~mask, float("-inf"))
    with torch.no_grad():
        assert torch.equal(model(ids, attention_mask=additive).logits, model(ids, attention_mask=mask).logits)
        with pytest.raises(ValueError, match="0/1"):
            model(ids, attention_mask=mask.double())


def test_left_padding_matches_the_unpadded_row():
    model = random_model(torch.float64)
    row = random_ids(1, 10)
    padded = torch.cat([torch.full((1, 4), 95), row], dim=1)
    batch = torch.cat([padded, random_ids(1, 14, seed=3)])
    attention_mask = torch.tensor([[0] * 4 + [1] * 10, [1] * 14])
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # counted from each row's first real token
    with torch.no_grad():
        alone = model(row).logits
        batched = model(batch, attention_mask=attention_mask, position_ids=position_ids).logits
        shifted = model(batch, attention_mask=attention_mask).logits  # positions 0..13, pads included
        unmasked = model(batch, position_ids=position_ids).logits
    assert torch.equal(batched[0, 4:], alone[0])
    # RoPE is relative, so shifting every position changes only the rounding of the float32 RoPE tables
    assert torch.allclose(shifted[0, 4:], alone[0], rtol=0, atol=1e-5)
    assert not torch.allclose(unmasked[0, 4:], alone[0], atol=1e-3)  # without the mask the pads are attended


def test_prefix_cache_is_exact_under_a_block_causal_mask():
    model = random_model(torch.float64)
    ids = random_ids(2, 16)
    with torch.no_grad():
        full = model(ids, attention_mask=block_causal_mask(2, 16, 8)).logits
        prefix = model(ids[:, :8], attention_mask=torch.ones(2, 1, 8, 8, dtype=torch.bool), use_cache=True)
        assert prefix.cache.get_seq_length() == 8
        block = model(ids[:, 8:], attention_mask=torch.ones(2, 1, 8, 16, dtype=torch.bool), cache=prefix.cache)
    assert torch.allclose(prefix.logits, full[:, :8], rtol=0, atol=1e-6)
    assert torch.allclose(block.logits, full[:, 8:], rtol=0, atol=1e-6)  # positions continue at 8


def test_hidden_states_attentions_and_router_logits_outputs():
    model = random_model()
    model.set_attn_implementation("eager")
    ids = random_ids(2, 6)
    with torch.no_grad():
        out = model(ids, output_hidden_states=True, output_attentions=True, output_router_logits=True)
    assert len(out.hidden_states) == 4 and out.hidden_states[0].shape == (2, 6, 32)
    assert len(out.attentions) == 3 and out.attentions[0].shape == (2, 4, 6, 6)
    assert len(out.router_logits) == 2 and out.router_logits[0].shape == (12, 8)
    assert out.router_logits[0].dtype == torch.float32


# --- training --------------------------------------------------------------------------------------------------------


def test_gradient_checkpointing_gives_the_same_gradients():
    model = random_model().train()
    ids = random_ids(2, 16)
    mask = block_causal_mask(2, 16, 8)
    gradients = []
    for checkpointing in (False, True):
        if checkpointing:
            model.activation_checkpointing_enable()
        model.zero_grad()
        model(ids, attention_mask=mask).logits.pow(2).mean().backward()
        gradients.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    plain, checkpointed = gradients
    assert "model.layers.2.mlp.experts.gate_up_proj" in plain and "model.layers.2.mlp.gate.weight" in plain
    assert sorted(plain) == sorted(checkpointed)
    assert all(torch.allclose(plain[n], checkpointed[n], rtol=0, atol=1e-7) for n in plain)
