"""Diffusion `generate()` on LLaDA2.0: token identity with the official block-diffusion sampler (several thresholds,
quotas, prompt lengths and block sizes), the exact block KV cache, per-row batching, EOS stops, sampling, streaming.

`reference_generate` is an independent, plain re-implementation of the official `generate()` semantics (one prompt,
uncached, explicit block-causal mask); the tests compare `model.generate()` with it in float64.
"""

import pytest
import torch
from transformers import AutoModelForCausalLM, LogitsProcessor, LogitsProcessorList, pipeline

import llada_hf  # noqa: F401  (registers the models)
from llada_hf.generation import LLaDA2GenerationConfig

from test_generation_llada import LLADA_FIXTURE, RecordingStreamer, tiny_tokenizer


LLADA2_FIXTURE = "llada2-moe-tiny-random"
MASK, EOS = 127, 124  # the tiny config has no mask token of its own


@torch.no_grad()
def reference_generate(
    model,
    prompt,
    gen_length,
    block_length,
    steps,
    threshold,
    minimal_topk=1,
    temperature=0.0,
    mask_id=MASK,
    eos_id=EOS,
):
    """One prompt `[1, L]` -> (answer up to and including the first EOS, number of forward passes)."""
    steps = min(steps, gen_length // minimal_topk)
    prompt_len = prompt.shape[1]
    x, attend, positions = block_causal_canvas(prompt, gen_length, block_length, mask_id)
    num_blocks = x.shape[1] // block_length
    quota = [block_length // steps + (i < block_length % steps) for i in range(steps)]
    forwards = 0
    for b in range(prompt_len // block_length, num_blocks):
        end = (b + 1) * block_length
        for step in range(steps):
            active = x[0, end - block_length : end] == mask_id
            if not active.any():
                break
            logits = model(x[:, :end], attention_mask=attend[..., :end, :end], position_ids=positions[:, :end]).logits
            forwards += 1
            logits = logits[0, -block_length:]
            if temperature > 0:
                probs = torch.softmax(logits / temperature, -1)
                x0 = torch.multinomial(probs, 1)[:, 0]
            else:
                probs = torch.softmax(logits, -1)
                x0 = logits.argmax(-1)
            conf = torch.where(active, probs.gather(-1, x0[:, None])[:, 0], -torch.inf)
            chosen = conf > threshold
            if chosen.sum() < quota[step]:
                chosen = torch.zeros_like(chosen)
                chosen[torch.topk(conf, min(quota[step], int(active.sum()))).indices] = True
            x[0, end - block_length : end][chosen] = x0[chosen]
        if (x[0, prompt_len:end] == eos_id).any():
            break
    return answer_until_eos(x[0, : prompt_len + gen_length], prompt_len, eos_id), forwards


def block_causal_canvas(prompt, gen_length, block_length, mask_id):
    """The official LLaDA2 layout of one prompt `[1, L]`: the canvas (prompt, then masks, up to a whole number of
    blocks counted from position 0), its block-causal 4-D mask and its positions."""
    total = -(-(prompt.shape[1] + gen_length) // block_length) * block_length
    block_of = torch.arange(total) // block_length
    attend = (block_of[None, :] <= block_of[:, None])[None, None]
    x = torch.full((1, total), mask_id, dtype=torch.long)
    x[:, : prompt.shape[1]] = prompt
    return x, attend, torch.arange(total)[None]


@pytest.fixture(scope="module")
def model(request):
    path = request.config.rootpath / "modeling_tests" / "fixtures" / LLADA2_FIXTURE
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float64)


def prompt_of(length, seed):
    return torch.randint(0, 120, (1, length), generator=torch.Generator().manual_seed(seed))


def answer_until_eos(sequence, prompt_length, eos_id=EOS):
    answer = sequence[prompt_length:]
    eos_at = (answer == eos_id).nonzero()
    return answer[: int(eos_at[0]) + 1] if len(eos_at) else answer


class ForceEosAt(LogitsProcessor):
    """Boosts EOS on the candidate column `offset` of every block (only to make EOS appear in these tests)."""

    def __init__(self, offset):
        self.offset = offset

    def __call__(self, input_ids, scores):
        scores = scores.clone()
        scores[:, self.offset, EOS] += 50.0
        return scores


CASES = [  # prompt length, gen_length, block_length, steps, threshold, minimal_topk
    (5, 12, 4, 4, 0.95, 1),  # prompt ends inside a block
    (8, 8, 4, 4, 0.3, 1),  # prompt ends on a block boundary, low threshold
    (3, 10, 8, 3, 2.0, 1),  # threshold > 1: quota only; uneven quota (3, 3, 2); canvas past gen_length
    (6, 8, 4, 8, 0.5, 1),  # more steps than tokens: zero quotas
    (7, 16, 8, 8, 0.9, 4),  # minimal_topk caps steps at 16 // 4
    (4, 6, 2, 2, 0.0, 1),  # threshold 0: every candidate at once
]


@pytest.mark.parametrize("diffusion_cache", ["block", "none"])
@pytest.mark.parametrize("prompt_length, gen_length, block_length, steps, threshold, minimal_topk", CASES)
def test_matches_reference(
    model, diffusion_cache, prompt_length, gen_length, block_length, steps, threshold, minimal_topk
):
    prompt = prompt_of(prompt_length, seed=prompt_length)
    expected, forwards = reference_generate(model, prompt, gen_length, block_length, steps, threshold, minimal_topk)
    out = model.generate(
        prompt,
        max_new_tokens=gen_length,
        block_length=block_length,
        steps=steps,
        threshold=threshold,
        minimal_topk=minimal_topk,
        temperature=0.0,
        mask_token_id=MASK,
        diffusion_cache=diffusion_cache,
        return_dict_in_generate=True,
    )
    assert out.sequences.shape == (1, prompt_length + gen_length)
    assert torch.equal(answer_until_eos(out.sequences[0], prompt_length), expected)
    assert out.nfe == forwards


def test_official_argument_names(model):
    prompt = prompt_of(5, seed=1)
    expected, _ = reference_generate(model, prompt, 9, 4, 4, 0.95)
    out = model.generate(inputs=prompt, gen_length=9, block_length=4, steps=4, mask_id=MASK, eos_id=EOS)
    assert torch.equal(answer_until_eos(out[0], 5), expected)


def test_stops_after_the_block_holding_eos(model):
    prompt = prompt_of(4, seed=2)
    eos_in_block = LogitsProcessorList([ForceEosAt(2)])
    out = model.generate(
        prompt,
        max_new_tokens=16,
        block_length=4,
        steps=4,
        mask_token_id=MASK,
        logits_processor=eos_in_block,
        return_dict_in_generate=True,
    )
    assert out.nfe <= 4  # only the first answer block is denoised
    answer = out.sequences[0, 4:]
    first_eos = int((answer == EOS).nonzero()[0])
    assert (answer[first_eos:] == EOS).all() and first_eos < 4


def test_block_cache_computes_only_the_active_block(model):
    prompt = prompt_of(9, seed=3)
    query_lengths = []
    hook = model.register_forward_pre_hook(
        lambda module, args, kwargs: query_lengths.append(kwargs["input_ids"].shape[1]), with_kwargs=True
    )
    try:
        cached = model.generate(prompt, max_new_tokens=12, block_length=4, steps=4, mask_token_id=MASK, threshold=2.0)
    finally:
        hook.remove()
    uncached = model.generate(
        prompt, max_new_tokens=12, block_length=4, steps=4, mask_token_id=MASK, threshold=2.0, use_cache=False
    )
    assert torch.equal(cached, uncached)
    # First step: the prompt's blocks and the first answer block (3 masks: 3 steps); first step of a later block: the
    # block just committed and the active one; then the active block only.
    assert len(query_lengths) >= 7
    assert query_lengths == ([12, 4, 4] + [8, 4, 4, 4] * 3)[: len(query_lengths)]


PROMPT_LENGTHS = [3, 9, 4, 6]


@pytest.mark.parametrize("diffusion_cache", ["block", "none"])
def test_batch_with_different_prompt_lengths_equals_single_rows(model, diffusion_cache):
    prompts = [prompt_of(length, seed=10 + length)[0].tolist() for length in PROMPT_LENGTHS]
    width = max(PROMPT_LENGTHS)
    ids = torch.tensor([[EOS] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    kwargs = {"max_new_tokens": 10, "block_length": 4, "steps": 3, "threshold": 0.2, "mask_token_id": MASK}
    batched = model.generate(ids, attention_mask=mask, diffusion_cache=diffusion_cache, **kwargs)
    assert batched.shape == (4, width + 10)
    assert torch.equal(batched[:, :width], ids)
    for row, prompt in enumerate(prompts):
        expected, _ = reference_generate(model, torch.tensor([prompt]), 10, 4, 3, 0.2)
        assert torch.equal(answer_until_eos(batched[row], width), expected)


def test_batch_rows_stop_independently_at_eos(model):
    prompts = [prompt_of(5, seed=20)[0].tolist(), prompt_of(3, seed=21)[0].tolist()]
    ids = torch.tensor([prompts[0], [EOS] * 2 + prompts[1]])
    mask = torch.tensor([[1] * 5, [0, 0, 1, 1, 1]])

    class FirstRowEos(LogitsProcessor):  # EOS only for the 5-token prompt (first row while it is in the batch)
        def __call__(self, input_ids, scores):
            scores = scores.clone()
            if scores.shape[0] == 2:
                scores[0, 3, EOS] += 50.0
            return scores

    sizes = []
    hook = model.register_forward_pre_hook(
        lambda module, args, kwargs: sizes.append(kwargs["input_ids"].shape[0]), with_kwargs=True
    )
    try:
        out = model.generate(
            ids,
            attention_mask=mask,
            max_new_tokens=12,
            block_length=4,
            steps=4,
            threshold=2.0,
            mask_token_id=MASK,
            logits_processor=[FirstRowEos()],
        )
    finally:
        hook.remove()
    # The first answer block takes 3 steps (the longer prompt leaves 3 masks in it); then the first row, which produced
    # an EOS there, leaves the batch.
    assert sizes[:3] == [2, 2, 2] and sizes[3:] == [1] * (len(sizes) - 3) and len(sizes) > 3
    assert (out[0, 5 + 3 :] == EOS).all() and EOS not in out[0, 5 : 5 + 2]
    alone = model.generate(ids[1:, 2:], max_new_tokens=12, block_length=4, steps=4, threshold=2.0, mask_token_id=MASK)
    assert torch.equal(out[1, 2:], alone[0])


def test_eos_early_stop_saves_steps_without_changing_the_answer(model):
    prompt = prompt_of(4, seed=4)
    eos_early = LogitsProcessorList([ForceEosAt(1)])
    kwargs = {"max_new_tokens": 8, "block_length": 8, "steps": 8, "threshold": 2.0, "mask_token_id": MASK}
    kwargs.update(logits_processor=eos_early, return_dict_in_generate=True)
    full = model.generate(prompt, **kwargs)
    early = model.generate(prompt, eos_early_stop=True, **kwargs)
    assert early.nfe < full.nfe
    assert torch.equal(answer_until_eos(early.sequences[0], 4), answer_until_eos(full.sequences[0], 4))


def test_cfg_block_cache_equals_uncached(model):
    prompt = prompt_of(6, seed=5)
    kwargs = {"max_new_tokens": 8, "block_length": 4, "steps": 4, "mask_token_id": MASK, "cfg_scale": 1.0}
    guided = model.generate(prompt, **kwargs)
    assert torch.equal(guided, model.generate(prompt, use_cache=False, **kwargs))
    assert not torch.equal(guided, model.generate(prompt, **{**kwargs, "cfg_scale": 0.0}))


def test_infilling_in_the_first_block(model):
    prompt = prompt_of(6, seed=6)
    prompt[0, 5] = MASK  # the prompt's last block is denoised with the answer
    expected, _ = reference_generate(model, prompt, 6, 4, 4, 0.95)
    out = model.generate(prompt, max_new_tokens=6, block_length=4, steps=4, mask_token_id=MASK)
    assert out[0, 5] != MASK
    assert torch.equal(out[0, :5], prompt[0, :5])
    assert torch.equal(answer_until_eos(out[0], 6), expected)


def test_sampling_follows_official_random_stream(model):
    prompt = prompt_of(5, seed=7)
    torch.manual_seed(99)
    expected, _ = reference_generate(model, prompt, 8, 4, 4, 0.9, temperature=0.7)
    torch.manual_seed(99)
    out = model.generate(
        prompt, max_new_tokens=8, block_length=4, steps=4, threshold=0.9, temperature=0.7, mask_token_id=MASK
    )
    assert torch.equal(answer_until_eos(out[0], 5), expected)

    def sample(seed):
        generator = torch.Generator().manual_seed(seed)
        return model.generate(
            prompt, max_new_tokens=8, temperature=0.7, top_k=20, top_p=0.9, mask_token_id=MASK, generator=generator
        )

    assert torch.equal(sample(0), sample(0))
    assert any(not torch.equal(sample(0), sample(seed)) for seed in (1, 2, 3))


def test_streamer_and_mask_id_requirement(model):
    prompt = prompt_of(5, seed=8)
    streamer = RecordingStreamer()
    out = model.generate(prompt, max_new_tokens=8, block_length=4, steps=4, mask_token_id=MASK, streamer=streamer)
    assert sum(streamer.puts[1:], []) == out[0, 5:].tolist() and streamer.drafts and streamer.ended
    with pytest.raises(ValueError, match="mask_token_id"):
        model.generate(prompt, max_new_tokens=8)


def test_generation_config_and_pipeline(model, tmp_path):
    assert isinstance(model.generation_config, LLaDA2GenerationConfig)
    assert (model.generation_config.steps, model.generation_config.threshold) == (32, 0.95)
    assert model.generation_config.block_schedule == "absolute"
    model.generation_config.mask_token_id = MASK
    try:
        tokenizer = tiny_tokenizer()
        generator = pipeline("text-generation", model=model, tokenizer=tokenizer)
        ids = tokenizer("w5 w6 w7", return_tensors="pt").input_ids
        expected = model.generate(ids, max_new_tokens=6, block_length=4, steps=4)
        text = generator("w5 w6 w7", max_new_tokens=6, block_length=4, steps=4, return_full_text=False)
        assert text[0]["generated_text"] == tokenizer.decode(expected[0, 3:], skip_special_tokens=True)
    finally:
        model.generation_config.mask_token_id = None


@pytest.mark.parametrize("diffusion_cache", ["block", "none"])
def test_llada_model_trained_with_block_diffusion_samples_block_causally(request, diffusion_cache):
    """`block_schedule="absolute"` on a LLaDA 1.x model: LLaDA2.0's block-causal sampling (the prompt fills whole
    blocks, so both families' quotas agree), exact block cache included."""
    path = request.config.rootpath / "modeling_tests" / "fixtures" / LLADA_FIXTURE
    llada = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float64)
    mask_id, eos_id = llada.config.mask_token_id, llada.config.eos_token_id
    prompt = prompt_of(8, seed=12)
    expected, forwards = reference_generate(llada, prompt, 12, 4, 2, 2.0, mask_id=mask_id, eos_id=eos_id)
    kwargs = {"max_new_tokens": 12, "block_length": 4, "steps": 2, "mask_token_id": mask_id}
    out = llada.generate(
        prompt, block_schedule="absolute", diffusion_cache=diffusion_cache, return_dict_in_generate=True, **kwargs
    )
    assert torch.equal(answer_until_eos(out.sequences[0], 8, eos_id), expected)
    assert out.nfe >= forwards  # LLaDA 1.x rows do not stop after an EOS block
    bidirectional = llada.generate(prompt, **{**kwargs, "steps": 6})
    assert not torch.equal(out.sequences, bidirectional)
    with pytest.raises(ValueError, match="block_schedule"):
        prompt_llada2 = prompt_of(4, seed=0)
        AutoModelForCausalLM.from_pretrained(path.parent / LLADA2_FIXTURE).generate(
            prompt_llada2, max_new_tokens=4, mask_token_id=MASK, block_schedule="prompt"
        )
