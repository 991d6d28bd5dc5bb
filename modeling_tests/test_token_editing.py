"""LLaDA2.1 token editing (`editing_threshold`, `max_post_steps`) on the LLaDA2 `generate()`.

`reference_editing_generate` is a plain re-implementation of LLaDA2.1's sampler semantics (one prompt, uncached,
explicit block-causal mask, float64): per block, masks are committed above `threshold` (else the most confident one)
while committed positions of the block are replaced when the prediction changed with confidence above
`editing_threshold`; once the block has no mask, up to `max_post_steps` editing-only steps follow, and the block ends
at the first one that changes nothing.

The tiny random model can predict its mask token (a real vocabulary id here), which would turn a committed position
back into a mask and keep LLaDA2.1's open-ended loop going; both sides therefore never predict it (`NoMaskToken`).
"""

import pytest
import torch
from transformers import AutoModelForCausalLM, LogitsProcessor

import llada_hf  # noqa: F401  (registers the models)

from test_fast_sampling import tiny_llada
from test_generation_llada import RecordingStreamer
from test_generation_llada2 import (
    EOS,
    LLADA2_FIXTURE,
    MASK,
    answer_until_eos,
    block_causal_canvas,
    prompt_of,
)


@torch.no_grad()
def reference_editing_generate(model, prompt, gen_length, block_length, threshold, editing_threshold, max_post_steps):
    """One prompt `[1, L]` -> (answer up to and including the first EOS, forward passes, edits made)."""
    prompt_len = prompt.shape[1]
    x, attend, positions = block_causal_canvas(prompt, gen_length, block_length, MASK)
    forwards = edits_made = 0
    for b in range(prompt_len // block_length, x.shape[1] // block_length):
        start, end = b * block_length, (b + 1) * block_length
        in_prompt = torch.arange(start, end) < prompt_len
        post_steps = 0
        while True:
            block = x[0, start:end].clone()
            masked = block == MASK
            if not masked.any():
                post_steps += 1
                if post_steps > max_post_steps:
                    break
            logits = model(x[:, :end], attention_mask=attend[..., :end, :end], position_ids=positions[:, :end]).logits
            forwards += 1
            probs = torch.softmax(logits[0, -block_length:].index_fill(-1, torch.tensor([MASK]), -torch.inf), -1)
            x0 = probs.argmax(-1)
            p = probs.gather(-1, x0[:, None])[:, 0]
            commit = torch.zeros_like(masked)
            if masked.any():
                confidence = torch.where(masked, p, -torch.inf)
                commit = confidence > threshold
                if not commit.any():
                    commit[confidence.argmax()] = True
            edit = ~masked & ~in_prompt & (x0 != block) & (p > editing_threshold)
            edits_made += int(edit.sum())
            x[0, start:end] = torch.where(commit | edit, x0, block)
            if not masked.any() and not edit.any():
                break
        if (x[0, prompt_len:end] == EOS).any():
            break
    return answer_until_eos(x[0, : prompt_len + gen_length], prompt_len), forwards, edits_made


class NoMaskToken(LogitsProcessor):
    def __call__(self, input_ids, scores):
        return scores.index_fill(-1, torch.tensor([MASK]), -torch.inf)


@pytest.fixture(scope="module")
def model(request):
    path = request.config.rootpath / "modeling_tests" / "fixtures" / LLADA2_FIXTURE
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float64)


def editing_kwargs(block_length, threshold, editing_threshold, max_post_steps, **extra):
    # `steps == block_length`: the quota fallback commits one token per step, as LLaDA2.1's.
    return dict(
        block_length=block_length,
        steps=block_length,
        threshold=threshold,
        editing_threshold=editing_threshold,
        max_post_steps=max_post_steps,
        mask_token_id=MASK,
        logits_processor=[NoMaskToken()],
        **extra,
    )


CASES = [  # prompt length, gen_length, block_length, threshold, editing_threshold, max_post_steps
    (5, 12, 4, 0.95, 0.0, 3),  # "speed"-style editing: any changed prediction is written back
    (8, 8, 4, 0.3, 0.05, 2),  # prompt ends on a block boundary
    (3, 10, 8, 2.0, 0.0, 0),  # no post steps: edits only while masks remain
    (6, 12, 4, 0.1, 0.02, 16),  # low thresholds, the official post-step budget
]


@pytest.mark.parametrize("diffusion_cache", ["block", "none"])
@pytest.mark.parametrize(
    "prompt_length, gen_length, block_length, threshold, editing_threshold, max_post_steps", CASES
)
def test_matches_reference(
    model, diffusion_cache, prompt_length, gen_length, block_length, threshold, editing_threshold, max_post_steps
):
    prompt = prompt_of(prompt_length, seed=40 + prompt_length)
    expected, forwards, _ = reference_editing_generate(
        model, prompt, gen_length, block_length, threshold, editing_threshold, max_post_steps
    )
    out = model.generate(
        prompt,
        max_new_tokens=gen_length,
        diffusion_cache=diffusion_cache,
        return_dict_in_generate=True,
        **editing_kwargs(block_length, threshold, editing_threshold, max_post_steps),
    )
    assert torch.equal(answer_until_eos(out.sequences[0], prompt_length), expected)
    assert out.nfe == forwards


def test_edits_happen_and_change_the_answer(model):
    """The constructed cases really edit (else the comparison above could not tell editing from no editing)."""
    prompt = prompt_of(5, seed=45)
    plain = model.generate(prompt, max_new_tokens=12, return_dict_in_generate=True, **editing_kwargs(4, 0.95, None, 3))
    expected, forwards, edits = reference_editing_generate(model, prompt, 12, 4, 0.95, 0.0, 3)
    assert edits > 0 and forwards > plain.nfe
    assert not torch.equal(answer_until_eos(plain.sequences[0], 5), expected)


def test_editing_threshold_above_one_keeps_the_llada2_answer(model):
    prompt = prompt_of(7, seed=46)
    plain = model.generate(prompt, max_new_tokens=12, **editing_kwargs(4, 0.5, None, 16))
    out = model.generate(prompt, max_new_tokens=12, return_dict_in_generate=True, **editing_kwargs(4, 0.5, 1.5, 16))
    assert torch.equal(out.sequences, plain)
    _, forwards, edits = reference_editing_generate(model, prompt, 12, 4, 0.5, 1.5, 16)
    assert edits == 0 and out.nfe == forwards  # one editing-only step per block finds nothing and ends it


@pytest.mark.parametrize("diffusion_cache", ["block", "none"])
def test_batch_with_different_prompt_lengths_equals_single_rows(model, diffusion_cache):
    lengths = [3, 9, 4, 6]
    prompts = [prompt_of(length, seed=50 + length)[0].tolist() for length in lengths]
    width = max(lengths)
    ids = torch.tensor([[EOS] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    kwargs = editing_kwargs(4, 0.3, 0.0, 2)
    batched = model.generate(ids, attention_mask=mask, max_new_tokens=10, diffusion_cache=diffusion_cache, **kwargs)
    total_edits = 0
    for row, prompt in enumerate(prompts):
        expected, _, edits = reference_editing_generate(model, torch.tensor([prompt]), 10, 4, 0.3, 0.0, 2)
        total_edits += edits
        assert torch.equal(answer_until_eos(batched[row], width), expected)
    assert total_edits > 0


def test_streamer_receives_only_final_tokens(model):
    prompt = prompt_of(5, seed=45)
    streamer = RecordingStreamer()
    out = model.generate(prompt, max_new_tokens=12, streamer=streamer, **editing_kwargs(4, 0.95, 0.0, 3))
    assert sum(streamer.puts[1:], []) == out[0, 5:].tolist() and streamer.ended


def test_eos_early_stop_acts_at_block_ends(model):
    prompt = prompt_of(5, seed=45)
    kwargs = editing_kwargs(4, 0.95, 0.0, 3)
    assert torch.equal(
        model.generate(prompt, max_new_tokens=12, eos_early_stop=True, **kwargs),
        model.generate(prompt, max_new_tokens=12, **kwargs),
    )


def test_refused_where_it_does_not_apply(model):
    with pytest.raises(ValueError, match="LLaDA 1.x"):
        tiny_llada(1).generate(torch.tensor([[1, 2, 3]]), max_new_tokens=4, editing_threshold=0.5)
    with pytest.raises(ValueError, match="max_post_steps"):
        model.generate(prompt_of(4, seed=0), max_new_tokens=4, mask_token_id=MASK, max_post_steps=-1)
    with pytest.raises(ValueError, match="editing_threshold"):
        model.generate(prompt_of(4, seed=0), max_new_tokens=4, mask_token_id=MASK, editing_threshold=-0.1)
