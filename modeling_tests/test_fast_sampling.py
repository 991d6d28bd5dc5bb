"""Fast sampling: approximate prefix/dual KV caches (LLaDA 1.x), parallel decoding rules (threshold, factor, entropy
bound), margin/entropy confidences, row dropping, and the compiled static step of LLaDA2.0.

Exactness checks use float64 tiny random models. A one-layer LLaDA is the constructed case where the approximate
caches are exact: its keys/values are a function of each column's own token and position, so keys/values reused from
the block's first step equal recomputed ones as long as those columns' tokens did not change (the sampler only
commits inside the active block). Runtime on 2 shared CPU cores: ~25 s, plus ~30 s for the slow inductor test.
"""

import pytest
import torch

import llada_hf  # noqa: F401
from llada_hf import LLaDA2MoeModelLM, LLaDAConfig, LLaDAModelLM
from llada_hf.generation import LLaDAGenerationConfig, LLaDATransferPolicy
from llada_hf.generation.caches import BlockKVCache
from llada_hf.generation.policies import Proposal


VOCAB, MASK, EOS = 40, 39, 38
GEN, BLOCK = 16, 4


def tiny_llada(n_layers: int, seed: int = 0, initializer_range: float = 0.02) -> LLaDAModelLM:
    """`initializer_range=1.0` gives confidences spread over (0.3, 1), so that the parallel rules vary per step."""
    torch.manual_seed(seed)
    config = LLaDAConfig(
        d_model=32,
        n_heads=2,
        n_kv_heads=2,
        n_layers=n_layers,
        mlp_hidden_size=64,
        vocab_size=VOCAB,
        embedding_size=VOCAB,
        max_sequence_length=128,
        mask_token_id=MASK,
        eos_token_id=EOS,
        pad_token_id=EOS,
        initializer_range=initializer_range,
    )
    return LLaDAModelLM(config).to(torch.float64).eval()


@pytest.fixture(scope="module")
def one_layer():
    return tiny_llada(1)


@pytest.fixture(scope="module")
def two_layers():
    return tiny_llada(2, initializer_range=1.0)


PROMPTS = [[3, 14, 15], [9, 2, 6, 5, 35, 8, 9], [7, 9, 3, 2, 3]]


def left_padded(prompts):
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[EOS] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    return ids, mask


def generate(model, ids, mask=None, **kwargs):
    kwargs = {"max_new_tokens": GEN, "block_length": BLOCK, "return_dict_in_generate": True, **kwargs}
    return model.generate(ids, attention_mask=mask, **kwargs)


class QueryLengths:
    """Records the query length and batch size of every forward of `model`."""

    def __init__(self, model):
        self.calls = []
        self.handle = model.get_input_embeddings().register_forward_hook(
            lambda module, args, output: self.calls.append(tuple(args[0].shape))
        )

    def __enter__(self):
        return self.calls

    def __exit__(self, *exc):
        self.handle.remove()


# ---------------------------------------------------------------------------------------------------------------------
# Defaults and validation
# ---------------------------------------------------------------------------------------------------------------------


def test_approximate_modes_are_off_by_default(two_layers):
    config = LLaDAGenerationConfig.from_model_config(two_layers.config)
    assert (config.diffusion_cache, config.parallel_decoding, config.remasking) == ("none", "quota", "low_confidence")
    assert config.threshold is None and config.factor is None and config.entropy_bound is None
    ids, mask = left_padded(PROMPTS)
    with QueryLengths(two_layers) as calls:
        out = generate(two_layers, ids, mask, steps=GEN)
    assert out.nfe == GEN and all(length == ids.shape[1] + GEN for _, length in calls)  # full canvas every step


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"parallel_decoding": "threshold"}, ValueError, "needs `threshold`"),
        ({"parallel_decoding": "factor"}, ValueError, "needs `factor`"),
        ({"parallel_decoding": "entropy_bound"}, ValueError, "needs `entropy_bound`"),
        ({"parallel_decoding": "greedy"}, ValueError, "parallel_decoding"),
        ({"parallel_decoding": "factor", "factor": -1.0}, ValueError, "factor"),
        ({"remasking": "confidence"}, ValueError, "remasking"),
        ({"diffusion_cache": "block"}, ValueError, "diffusion_cache='block'"),
        ({"diffusion_cache": "triple"}, ValueError, "diffusion_cache"),
    ],
)
def test_bad_fast_sampling_arguments_raise(two_layers, kwargs, error, match):
    with pytest.raises(error, match=match):
        generate(two_layers, torch.tensor([PROMPTS[0]]), **kwargs)


def test_fast_modes_are_saved_in_the_generation_config(two_layers, tmp_path):
    config = LLaDAGenerationConfig(diffusion_cache="dual", parallel_decoding="factor", factor=1.0, remasking="margin")
    config.save_pretrained(tmp_path)
    loaded = LLaDAGenerationConfig.from_pretrained(tmp_path)
    assert (loaded.diffusion_cache, loaded.parallel_decoding, loaded.factor, loaded.remasking) == (
        "dual",
        "factor",
        1.0,
        "margin",
    )
    ids = torch.tensor([PROMPTS[1]])
    from_config = two_layers.generate(ids, generation_config=loaded, max_new_tokens=GEN, block_length=BLOCK)
    assert torch.equal(from_config, generate(two_layers, ids, **config.to_diff_dict()).sequences)


@pytest.mark.parametrize("cache", ["prefix", "dual"])
def test_approximate_caches_refuse_prompt_masks(two_layers, cache):
    with pytest.raises(ValueError, match="mask tokens inside the prompt"):
        generate(two_layers, torch.tensor([[3, MASK, 5]]), diffusion_cache=cache)


def test_use_cache_false_disables_the_cache(two_layers):
    ids = torch.tensor([PROMPTS[1]])
    with QueryLengths(two_layers) as calls:
        generate(two_layers, ids, steps=GEN, diffusion_cache="dual", use_cache=False)
    assert {length for _, length in calls} == {ids.shape[1] + GEN}


# ---------------------------------------------------------------------------------------------------------------------
# Approximate caches
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cache", ["prefix", "dual"])
@pytest.mark.parametrize(
    "options",
    [
        {"steps": GEN},
        {"steps": GEN // 2, "block_length": 8},
        {"steps": GEN, "cfg_scale": 1.0},
        {"parallel_decoding": "threshold", "threshold": 0.2},
    ],
)
def test_caches_equal_plain_path_when_cached_columns_cannot_change(one_layer, cache, options):
    ids, mask = left_padded(PROMPTS)
    plain = generate(one_layer, ids, mask, **options)
    cached = generate(one_layer, ids, mask, diffusion_cache=cache, **options)
    assert torch.equal(cached.sequences, plain.sequences)
    assert cached.nfe == plain.nfe


@pytest.mark.parametrize("cache", ["prefix", "dual"])
def test_cached_steps_compute_only_what_the_cache_does_not_hold(two_layers, cache):
    ids = torch.tensor([PROMPTS[1]])
    prompt_length, width = ids.shape[1], ids.shape[1] + GEN
    with QueryLengths(two_layers) as calls:
        generate(two_layers, ids, steps=GEN, diffusion_cache=cache)
    lengths = [length for _, length in calls]
    per_block = GEN // (GEN // BLOCK)
    for b in range(GEN // BLOCK):
        refresh, *cached = lengths[b * per_block : (b + 1) * per_block]
        assert refresh == width
        expected = BLOCK if cache == "dual" else width - (prompt_length + b * BLOCK)
        assert cached == [expected] * (per_block - 1)


def test_approximate_caches_are_approximate(two_layers):
    """With two layers the reused keys/values are stale: the test above is not trivially true."""
    ids, mask = left_padded(PROMPTS)
    plain = generate(two_layers, ids, mask, steps=GEN).sequences
    cached = [generate(two_layers, ids, mask, steps=GEN, diffusion_cache=c).sequences for c in ("prefix", "dual")]
    assert any(not torch.equal(sequences, plain) for sequences in cached)


# ---------------------------------------------------------------------------------------------------------------------
# Padded batches, parallel rules, early stop
# ---------------------------------------------------------------------------------------------------------------------

MODES = [
    {"steps": GEN},
    {"steps": GEN // 2, "remasking": "margin"},
    {"parallel_decoding": "threshold", "threshold": 0.45},
    {"parallel_decoding": "factor", "factor": 2.0, "remasking": "entropy"},
    {"parallel_decoding": "entropy_bound", "entropy_bound": 2.0, "remasking": "margin"},
    {"parallel_decoding": "threshold", "threshold": 0.45, "eos_early_stop": True},
]


@pytest.mark.parametrize("cache", ["none", "prefix", "dual"])
@pytest.mark.parametrize("mode", MODES, ids=lambda mode: "-".join(f"{k}={v}" for k, v in mode.items()))
def test_padded_batch_equals_single_rows(two_layers, cache, mode):
    ids, mask = left_padded(PROMPTS)
    batched = generate(two_layers, ids, mask, diffusion_cache=cache, **mode).sequences
    nfe = []
    for row, prompt in enumerate(PROMPTS):
        alone = generate(two_layers, torch.tensor([prompt]), diffusion_cache=cache, **mode)
        assert torch.equal(batched[row, ids.shape[1] - len(prompt) :], alone.sequences[0]), f"row {row}"
        nfe.append(alone.nfe)
    if "parallel_decoding" in mode:  # the rule did commit several tokens in some steps
        assert min(nfe) < GEN


@pytest.mark.parametrize(
    "mode", [*MODES, {"steps": GEN, "cfg_scale": 1.0}], ids=lambda mode: "-".join(f"{k}={v}" for k, v in mode.items())
)
def test_static_dual_cache_equals_dual_cache(two_layers, mode):
    """Preallocated buffers written at tensor positions, rows leaving the batch included (early stop)."""
    ids, mask = left_padded(PROMPTS)
    dynamic = generate(two_layers, ids, mask, diffusion_cache="dual", **mode)
    with QueryLengths(two_layers) as calls:
        static = generate(two_layers, ids, mask, diffusion_cache="dual", cache_implementation="static", **mode)
    assert torch.equal(static.sequences, dynamic.sequences)
    assert static.nfe == dynamic.nfe
    width = ids.shape[1] + GEN
    assert {length for _, length in calls} == {width, BLOCK}  # two fixed shapes: the refresh and a block


def test_static_dual_step_is_captured_whole_by_dynamo(two_layers):
    """`fullgraph=True`, and one graph per step shape: the refresh and the block step (the first refresh, which
    allocates the buffers, runs eagerly)."""
    from transformers.generation.configuration_utils import CompileConfig

    ids, mask = left_padded(PROMPTS)
    options = {"diffusion_cache": "dual", "parallel_decoding": "threshold", "threshold": 0.45}
    eager = generate(two_layers, ids, mask, **options)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compile_config = CompileConfig(backend="eager", mode=None, fullgraph=True, dynamic=False)
    compiled = generate(two_layers, ids, mask, cache_implementation="static", compile_config=compile_config, **options)
    assert torch.equal(compiled.sequences, eager.sequences)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 2


def test_block_cache_drops_finished_rows_even_when_cut_back_to_no_columns():
    """A LLaDA2 row that finishes inside the first block leaves while the block cache holds no columns; the next
    forward must join a batch of the remaining rows."""
    cache = BlockKVCache()
    cache.update(torch.zeros(4, 2, 3, 8), torch.zeros(4, 2, 3, 8), 0)
    cache.truncate(0)
    cache.batch_select_indices(torch.tensor([0, 2]))
    keys, values = cache.update(torch.ones(2, 2, 5, 8), torch.ones(2, 2, 5, 8), 0)
    assert keys.shape == values.shape == (2, 2, 5, 8)


def test_prefix_cache_has_no_static_variant(two_layers):
    with pytest.raises(ValueError, match="cache_implementation='static'"):
        generate(two_layers, torch.tensor([PROMPTS[0]]), diffusion_cache="prefix", cache_implementation="static")


@pytest.mark.parametrize("cache", ["none", "dual"])
@pytest.mark.parametrize("threshold", [1.0, 1.5])
def test_threshold_of_one_or_more_commits_one_token_per_step(two_layers, cache, threshold):
    ids, mask = left_padded(PROMPTS)
    one_per_step = generate(two_layers, ids, mask, steps=GEN, diffusion_cache=cache)
    parallel = generate(
        two_layers, ids, mask, diffusion_cache=cache, parallel_decoding="threshold", threshold=threshold
    )
    assert torch.equal(parallel.sequences, one_per_step.sequences)
    assert parallel.nfe == one_per_step.nfe == GEN


def never_mask(input_ids, scores):
    """A logits processor: a random model may predict the mask token, which would leave the position masked."""
    return scores.index_fill(-1, torch.tensor([MASK]), float("-inf"))


def test_zero_threshold_commits_a_block_per_step(one_layer):
    ids, mask = left_padded(PROMPTS)
    out = generate(
        one_layer,
        ids,
        mask,
        parallel_decoding="threshold",
        threshold=0.0,
        output_history=True,
        logits_processor=[never_mask],
    )
    assert out.nfe == GEN // BLOCK
    answers = [step[:, ids.shape[1] :] for step in out.history]
    assert [int((answer != MASK).sum(1).max()) for answer in answers] == [BLOCK, 2 * BLOCK, 3 * BLOCK, 4 * BLOCK]


def selected(policy, confidence, entropy=None):
    confidence = torch.tensor([confidence], dtype=torch.float64)
    candidates = confidence > float("-inf")
    proposal = Proposal(torch.zeros_like(confidence, dtype=torch.long), confidence, entropy)
    return policy.select(proposal, candidates, None)[0].nonzero().squeeze(1).tolist()


def test_parallel_rules_follow_their_definitions():
    inf = float("-inf")
    threshold = LLaDATransferPolicy(parallel_decoding="threshold", threshold=0.9)
    assert selected(threshold, [0.95, inf, 0.5, 0.9, 0.3]) == [0, 3]
    assert selected(threshold, [0.2, 0.5, inf, 0.3]) == [1]  # the most confident one always
    assert selected(threshold, [inf, inf]) == []
    # Fast-dLLM factor: keep n while (n + 1) * (1 - c_n) < factor, c_n the n-th highest confidence.
    factor = LLaDATransferPolicy(parallel_decoding="factor", factor=1.0)
    # sorted 0.9, 0.7, 0.69: (n + 1) * (1 - c_n) = 0.2, 0.9, 1.24
    assert selected(factor, [0.7, 0.9, 0.69, 0.1]) == [0, 1]
    assert selected(factor, [0.1, 0.05]) == [0]
    # EB-sampler: the longest run by confidence whose entropy sum minus its largest entropy is <= the bound.
    entropy = torch.tensor([[0.3, 0.1, 0.5, 0.2]], dtype=torch.float64)
    bound = LLaDATransferPolicy(parallel_decoding="entropy_bound", entropy_bound=0.35)
    # order by confidence: 1 (H .1), 3 (H .2), 0 (H .3), 2 (H .5): sums-minus-max .0, .1, .3, .6
    assert selected(bound, [0.6, 0.9, 0.1, 0.8], entropy) == [0, 1, 3]


def test_margin_and_entropy_confidences():
    probs = torch.tensor([[[0.7, 0.2, 0.1]], [[1 / 3, 1 / 3, 1 / 3]]], dtype=torch.float64)
    logits = probs.log()
    for remasking, expected in (("margin", [0.5, 0.0]), ("entropy", [None, 1 / 3])):
        proposal = LLaDATransferPolicy(remasking=remasking).propose(logits)
        if expected[0] is not None:
            assert proposal.confidence[0, 0].item() == pytest.approx(expected[0])
        assert proposal.confidence[1, 0].item() == pytest.approx(expected[1])
    entropy = -(probs[0, 0] * probs[0, 0].log()).sum()
    confidence = LLaDATransferPolicy(remasking="entropy").propose(logits).confidence[0, 0]
    assert confidence.item() == pytest.approx(torch.exp(-entropy).item())


def test_finished_rows_leave_the_forward_batch(two_layers):
    """With `eos_early_stop`, a row whose answer is complete up to an EOS stops costing compute (dual cache too)."""
    ids, mask = left_padded(PROMPTS)
    # Force EOS as soon as the first answer column of row 0 is committed.
    eos_first = LLaDAGenerationConfig(eos_early_stop=True, diffusion_cache="dual", steps=GEN)

    class EosOnRowZero:
        def __call__(self, input_ids, scores):
            scores = scores.clone()
            if input_ids.shape[0] == len(PROMPTS):
                scores[0, :, EOS] = 1e4
            return scores

    with QueryLengths(two_layers) as calls:
        out = two_layers.generate(
            ids,
            attention_mask=mask,
            generation_config=eos_first,
            max_new_tokens=GEN,
            block_length=BLOCK,
            logits_processor=[EosOnRowZero()],
            return_dict_in_generate=True,
        )
    batch_sizes = [batch for batch, _ in calls]
    assert batch_sizes[0] == 3 and batch_sizes[-1] == 2
    assert bool((out.sequences[0, ids.shape[1] :] == EOS).all())


# ---------------------------------------------------------------------------------------------------------------------
# LLaDA2.0: exact block cache with threshold decoding, static step, compile
# ---------------------------------------------------------------------------------------------------------------------

LLADA2_MASK, LLADA2_EOS = 127, 124
LLADA2_KWARGS = {"mask_token_id": LLADA2_MASK, "eos_token_id": LLADA2_EOS, "max_new_tokens": 24, "block_length": 8}


@pytest.fixture(scope="module")
def llada2(request):
    path = request.config.rootpath / "modeling_tests" / "fixtures" / "llada2-moe-tiny-random"
    return LLaDA2MoeModelLM.from_pretrained(path, dtype=torch.float32).eval()


def llada2_batch():
    ids = torch.randint(0, 120, (3, 11), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[0, :4] = 0
    mask[2, :9] = 0
    return ids, mask


@pytest.mark.parametrize(
    "decoding",
    [{"steps": 4, "threshold": 0.5}, {"parallel_decoding": "threshold", "threshold": 0.5}],
    ids=["official-threshold", "fast-dllm-threshold"],
)
def test_llada2_block_cache_with_threshold_equals_uncached(llada2, decoding):
    ids, mask = llada2_batch()
    kwargs = {**LLADA2_KWARGS, **decoding, "return_dict_in_generate": True}
    uncached = llada2.generate(ids, attention_mask=mask, diffusion_cache="none", **kwargs)
    cached = llada2.generate(ids, attention_mask=mask, diffusion_cache="block", **kwargs)
    static = llada2.generate(ids, attention_mask=mask, cache_implementation="static", **kwargs)
    assert torch.equal(cached.sequences, uncached.sequences)
    assert torch.equal(static.sequences, uncached.sequences)
    assert static.nfe == cached.nfe == uncached.nfe


def test_static_step_has_two_fixed_shapes(llada2):
    ids, mask = llada2_batch()
    with QueryLengths(llada2) as calls:
        llada2.generate(ids, attention_mask=mask, cache_implementation="static", steps=4, **LLADA2_KWARGS)
    block = LLADA2_KWARGS["block_length"]
    assert calls[0][1] > 0 and {length for _, length in calls[1:]} == {block, 2 * block}


def test_static_cache_needs_the_block_cache(two_layers, llada2):
    with pytest.raises(ValueError, match="cache_implementation='static'"):
        generate(two_layers, torch.tensor([PROMPTS[0]]), cache_implementation="static")
    with pytest.raises(ValueError, match="cache_implementation='static'"):
        llada2.generate(torch.tensor([[5, 6]]), cache_implementation="static", diffusion_cache="none", **LLADA2_KWARGS)


def compiled_generate(model, ids, mask, backend, threshold=0.5):
    from transformers.generation.configuration_utils import CompileConfig

    compile_config = CompileConfig(backend=backend, mode=None, fullgraph=True, dynamic=False)
    torch._dynamo.utils.counters.clear()
    return model.generate(
        ids,
        attention_mask=mask,
        cache_implementation="static",
        compile_config=compile_config,
        steps=4,
        threshold=threshold,
        return_dict_in_generate=True,
        **LLADA2_KWARGS,
    )


def test_static_step_is_captured_whole_by_dynamo(llada2):
    """`fullgraph=True`: the step has no graph break; one graph per step shape. (~5 s)"""
    ids, mask = llada2_batch()
    eager = llada2.generate(ids, attention_mask=mask, steps=4, threshold=0.5, **LLADA2_KWARGS)
    compiled = compiled_generate(llada2, ids, mask, backend="eager")
    assert torch.equal(compiled.sequences, eager)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 2


@pytest.mark.slow
def test_compiled_static_step_equals_eager(llada2):
    """Inductor on CPU. Threshold 0 fills a block per step, so only the `2 * block_length` graph is compiled (~60 s
    on 2 busy cores)."""
    ids, mask = llada2_batch()
    eager = llada2.generate(ids, attention_mask=mask, steps=4, threshold=0.0, **LLADA2_KWARGS)
    compiled = compiled_generate(llada2, ids, mask, backend="inductor", threshold=0.0)
    assert torch.equal(compiled.sequences, eager)
