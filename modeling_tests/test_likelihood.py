"""Monte-Carlo ELBO of log p(answer | prompt): unbiased against the exact ELBO, official draws, and a trained model."""

import itertools
import math
import random

import pytest
import torch

from llada_hf.training.likelihood import draw_answer_masks, estimate_log_likelihood, stratified_mask_counts
from reversal_task import build_tokenizer, random_digits, reversal_example, tiny_llada, trained_reversal_model


@torch.no_grad()
def exact_elbo(model, prompt: list[int], answer: list[int], cfg_scale: float = 0.0) -> float:
    """`-sum_S sum_{j in S} CE_j(S) / (|S| C(L, |S|))` over every non-empty set S of masked answer positions."""
    mask_id, length = model.config.mask_token_id, len(answer)
    clean = torch.tensor(prompt + answer)
    subsets = [s for size in range(1, length + 1) for s in itertools.combinations(range(length), size)]
    masks = torch.zeros(len(subsets), len(clean), dtype=torch.bool)
    for row, subset in enumerate(subsets):
        masks[row, [len(prompt) + j for j in subset]] = True
    noised = clean.expand_as(masks).masked_fill(masks, mask_id)
    logits = model(noised).logits.double()
    if cfg_scale:
        unconditional = model(noised.masked_fill(torch.arange(len(clean)) < len(prompt), mask_id)).logits.double()
        logits = unconditional + (cfg_scale + 1) * (logits - unconditional)
    token_nll = -logits.log_softmax(-1).gather(-1, clean.expand_as(masks)[..., None])[..., 0]
    total = 0.0
    for row, subset in enumerate(subsets):
        total += token_nll[row][masks[row]].sum().item() / (len(subset) * math.comb(length, len(subset)))
    return -total


@pytest.mark.parametrize("cfg_scale", [0.0, 1.5])
def test_estimate_is_unbiased_for_the_exact_elbo(cfg_scale):
    model = tiny_llada(build_tokenizer(), seed=1).eval()
    pairs = [([1, 2, 3], [4, 5, 6, 7]), ([8, 9, 1, 2, 3, 10], [2, 5, 11])]  # two lengths share each forward (padding)
    repeats = 300
    prompts = [prompt for prompt, _ in pairs for _ in range(repeats)]
    answers = [answer for _, answer in pairs for _ in range(repeats)]
    # every pair's estimate (a group of 8 stratified draws) is independent of the others': a standard error over pairs
    estimates = estimate_log_likelihood(
        model, prompts, answers, mc_num=8, batch_size=64, cfg_scale=cfg_scale, seed=0, progress_bar=False
    ).view(len(pairs), repeats)
    for (prompt, answer), samples in zip(pairs, estimates):
        exact = exact_elbo(model, prompt, answer, cfg_scale)
        standard_error = samples.std().item() / math.sqrt(repeats)
        assert standard_error < 0.02 * abs(exact)  # a test that could not fail would pass with a huge error
        assert abs(samples.mean().item() - exact) < 3 * standard_error, (samples.mean().item(), exact, standard_error)


def test_one_token_answer_is_scored_exactly_with_one_row():
    model = tiny_llada(build_tokenizer(), seed=1).eval()
    estimate = estimate_log_likelihood(model, [[1, 2]], [[3]], mc_num=128, seed=0, progress_bar=False)
    assert estimate.dtype == torch.float64
    assert estimate.item() == pytest.approx(exact_elbo(model, [1, 2], [3]), rel=1e-5)


def test_draws_never_mask_the_prompt_and_spread_the_counts_over_the_group():
    masks = draw_answer_masks(prompt_length=3, answer_length=4, num_draws=16, group_size=8)
    assert masks.shape == (16, 7)
    assert not masks[:, :3].any()
    for group in masks[:, 3:].sum(dim=1).view(2, 8):
        assert sorted(group.tolist()) == [1, 1, 2, 2, 3, 3, 4, 4]  # every count of 1..L, evenly

    # each draw is uniform on 1..L by itself (the official rounding would put draw 1 of 8 on even counts only)
    counts = torch.stack([stratified_mask_counts(4, 8, torch.Generator().manual_seed(seed)) for seed in range(400)])
    for draw in counts.T:
        frequencies = torch.bincount(draw, minlength=5)[1:] / len(draw)
        assert (frequencies - 0.25).abs().max() < 0.08


def test_seed_makes_the_estimate_reproducible():
    model = tiny_llada(build_tokenizer(), seed=1).eval()
    args = ([[1, 2, 3]], [[4, 5, 6, 7]])
    first = estimate_log_likelihood(model, *args, mc_num=16, batch_size=8, seed=3, progress_bar=False)
    again = estimate_log_likelihood(model, *args, mc_num=16, batch_size=8, seed=3, progress_bar=False)
    other = estimate_log_likelihood(model, *args, mc_num=16, batch_size=8, seed=4, progress_bar=False)
    assert torch.equal(first, again) and not torch.equal(first, other)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(prompts=[[1]], answers=[[2], [3]]), "same length"),
        (dict(prompts=[[1]], answers=[[]]), r"answers\[0\]"),
        (dict(prompts=[[1]], answers=[[2]], mc_num=0), "mc_num"),
        (dict(prompts=[[1]], answers=[[2]], batch_size=0), "batch_size"),
        (dict(prompts=[[1]], answers=[[2]], cfg_scale=-1.0), "cfg_scale"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    model = tiny_llada(build_tokenizer())
    with pytest.raises(ValueError, match=message):
        estimate_log_likelihood(model, progress_bar=False, **kwargs)


def test_trained_model_scores_the_correct_answer_above_distractors():
    model, tokenizer = trained_reversal_model()
    rng = random.Random(1234)  # prompts the model was not trained on (almost surely)
    num_prompts, num_distractors = 40, 3
    prompts, answers = [], []
    for _ in range(num_prompts):
        prompt, answer = reversal_example(rng)
        for candidate in [answer] + [random_digits(rng) for _ in range(num_distractors)]:
            prompts.append(tokenizer.encode(prompt))
            answers.append(tokenizer.encode(candidate) + [tokenizer.eos_token_id])
    scores = estimate_log_likelihood(model, prompts, answers, mc_num=16, batch_size=64, seed=0, progress_bar=False)
    scores = scores.view(num_prompts, num_distractors + 1)
    accuracy = (scores.argmax(dim=1) == 0).float().mean().item()
    assert accuracy >= 0.95, accuracy
    assert scores[:, 0].mean() > scores[:, 1:].mean() + 5.0  # nats
