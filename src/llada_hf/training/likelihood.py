"""Monte-Carlo ELBO estimate of `log p(answer | prompt)` for masked-diffusion LMs.

Semantics of the official `get_log_likelihood.py` (LLaDA paper, eq. 6): each draw picks a number of answer tokens
`l` uniformly in `1..L`, masks `l` answer positions uniformly at random (the prompt is never masked), and scores the
masked tokens' cross-entropy divided by the mask ratio `l / L`. The counts of a group of draws are spread evenly over
`1..L` from one random offset (low discrepancy), so every draw is still uniform on its own and the estimate is
unbiased for

    ELBO = - sum over non-empty subsets S of the answer positions of
               sum_{j in S} -log p(answer_j | prompt, answer with S masked) / (|S| * C(L, |S|))

which lower-bounds `log p(answer | prompt)`. The attention is bidirectional over the whole row (LLaDA 1.x).
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers.utils import logging

from .loss import IGNORE_INDEX, masked_diffusion_loss


@dataclass
class ELBOBatch:
    """Noised rows `[prompt | answer | padding]` ready for one forward pass.

    `labels` holds the clean token at masked positions and -100 elsewhere; `p_mask` is each row's mask ratio `l / L`;
    `prompt_mask` marks prompt positions (what classifier-free guidance masks in its unconditional copy).
    """

    input_ids: torch.LongTensor
    attention_mask: torch.LongTensor
    labels: torch.LongTensor
    p_mask: torch.Tensor
    prompt_mask: torch.BoolTensor

    def to(self, device) -> "ELBOBatch":
        return ELBOBatch(**{name: value.to(device) for name, value in vars(self).items()})


def stratified_mask_counts(answer_length: int, num_draws: int, generator: torch.Generator | None = None):
    """Masked-token counts in `1..answer_length` for a group of draws: one uniform random offset, then evenly spaced.

    Each count is uniform on `1..answer_length` by itself (so the estimate stays unbiased); together they cover the
    range evenly, which is what lowers the variance. The official script rounds `offset + i * L / n` with
    round-half-to-even, which makes a draw whose spacing ends in .5 land on even counts only (e.g. `n = 2L`); the
    spacing is rounded here before the offset is added, so every draw stays uniform.
    """
    if answer_length < 1:
        raise ValueError(f"`answer_length` must be at least 1, got {answer_length}.")
    offset = torch.randint(answer_length, (1,), generator=generator)
    draws = torch.arange(num_draws)
    # round(i * L / n) in integer arithmetic, so that the spacing does not depend on the offset
    spacing = (2 * draws * answer_length + num_draws) // (2 * num_draws)
    return (offset + spacing) % answer_length + 1


def draw_answer_masks(
    prompt_length: int,
    answer_length: int,
    num_draws: int,
    group_size: int,
    generator: torch.Generator | None = None,
) -> torch.BoolTensor:
    """`[num_draws, prompt_length + answer_length]` masks of one `(prompt, answer)` pair: the prompt is never masked,
    each draw masks its count of answer positions uniformly at random, and the counts of every `group_size`
    consecutive draws are stratified (`stratified_mask_counts`)."""
    counts = torch.cat(
        [
            stratified_mask_counts(answer_length, min(group_size, num_draws - start), generator)
            for start in range(0, num_draws, group_size)
        ]
    )
    scores = torch.rand(num_draws, answer_length, generator=generator)
    answer_masks = scores.argsort(dim=-1).argsort(dim=-1) < counts[:, None]
    return torch.cat([torch.zeros(num_draws, prompt_length, dtype=torch.bool), answer_masks], dim=1)


def build_elbo_batch(
    sequences: Sequence[Sequence[int]],
    prompt_lengths: Sequence[int],
    masks: Sequence[torch.BoolTensor],
    mask_token_id: int,
    pad_token_id: int,
) -> ELBOBatch:
    """Right-pads `prompt + answer` rows and replaces the positions of each row's mask by the mask token."""
    width = max(len(sequence) for sequence in sequences)
    clean = torch.full((len(sequences), width), pad_token_id, dtype=torch.long)
    masked = torch.zeros((len(sequences), width), dtype=torch.bool)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, (sequence, mask) in enumerate(zip(sequences, masks)):
        clean[row, : len(sequence)] = torch.as_tensor(sequence, dtype=torch.long)
        masked[row, : len(sequence)] = mask
        attention_mask[row, : len(sequence)] = 1
    prompt_lengths = torch.as_tensor(prompt_lengths)
    answer_lengths = attention_mask.sum(dim=1) - prompt_lengths
    return ELBOBatch(
        input_ids=clean.masked_fill(masked, mask_token_id),
        attention_mask=attention_mask,
        labels=clean.masked_fill(~masked, IGNORE_INDEX),
        p_mask=masked.sum(dim=1) / answer_lengths,
        prompt_mask=torch.arange(width) < prompt_lengths[:, None],
    )


def denoiser_logits(model, batch: ELBOBatch, mask_token_id: int, cfg_scale: float = 0.0) -> torch.Tensor:
    """The model's logits on the noised rows; with `cfg_scale > 0`, guided as `un + (w + 1) * (cond - un)`, where
    the unconditional copy has its prompt masked too (official CFG)."""
    if cfg_scale == 0.0:
        return model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    unconditional = batch.input_ids.masked_fill(batch.prompt_mask, mask_token_id)
    logits = model(
        input_ids=torch.cat([batch.input_ids, unconditional]),
        attention_mask=batch.attention_mask.repeat(2, 1),
    ).logits
    conditional, unconditional = logits.chunk(2)
    return unconditional + (cfg_scale + 1) * (conditional - unconditional)


def negative_elbo_terms(logits: torch.Tensor, batch: ELBOBatch) -> torch.Tensor:
    """Per row: the masked tokens' summed cross-entropy divided by the row's mask ratio (one draw of `-ELBO`)."""
    return masked_diffusion_loss(logits, batch.labels, batch.p_mask, loss_normalizer=1.0, reduction="none")


def resolve_mask_token_id(model, mask_token_id: int | None) -> int:
    """`mask_token_id` if given, else the model's generation config's, else its config's."""
    for candidate in (
        mask_token_id,
        getattr(getattr(model, "generation_config", None), "mask_token_id", None),
        getattr(model.config, "mask_token_id", None),
    ):
        if candidate is not None:
            return int(candidate)
    raise ValueError("The model's config has no `mask_token_id`: pass `mask_token_id=` explicitly.")


@torch.no_grad()
def estimate_log_likelihood(
    model,
    prompts: Sequence[Sequence[int]],
    answers: Sequence[Sequence[int]],
    mc_num: int = 128,
    batch_size: int = 16,
    cfg_scale: float = 0.0,
    mask_token_id: int | None = None,
    seed: int | None = None,
    progress_bar: bool = True,
) -> torch.Tensor:
    """
    Monte-Carlo ELBO estimate of `log p(answers[i] | prompts[i])` for every pair, as a float64 tensor.

    Args:
        model: a masked-diffusion LM whose forward takes `input_ids` and a 2-D padding `attention_mask`.
        prompts, answers: token ids (lists or 1-D tensors), one prompt per answer; prompts may be empty, answers not.
        mc_num: draws per pair (the official default is 128). A one-token answer has a single possible draw, so it
            is scored exactly with one forward row.
        batch_size: rows per forward pass. Each pair's draws are grouped by `batch_size` and the masked-token
            counts of a group are spread evenly over `1..len(answer)`; rows of several pairs share a forward when
            they fit (right-padded, padding keys masked).
        cfg_scale: unsupervised classifier-free guidance scale (0 disables it).
        mask_token_id: defaults to the model's (generation) config.
        seed: seeds a private generator for the mask draws; `None` uses torch's global generator.
        progress_bar: show a tqdm bar over forward passes.
    """
    if len(prompts) != len(answers):
        raise ValueError(f"`prompts` ({len(prompts)}) and `answers` ({len(answers)}) must have the same length.")
    if mc_num < 1:
        raise ValueError(f"`mc_num` must be at least 1, got {mc_num}.")
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be at least 1, got {batch_size}.")
    if cfg_scale < 0:
        raise ValueError(f"`cfg_scale` must be non-negative, got {cfg_scale}.")
    prompts = [torch.as_tensor(prompt, dtype=torch.long).tolist() for prompt in prompts]
    answers = [torch.as_tensor(answer, dtype=torch.long).tolist() for answer in answers]
    for index, answer in enumerate(answers):
        if len(answer) == 0:
            raise ValueError(f"`answers[{index}]` is empty: there is nothing to score.")
    mask_token_id = resolve_mask_token_id(model, mask_token_id)
    pad_token_id = model.config.pad_token_id if model.config.pad_token_id is not None else mask_token_id
    generator = torch.Generator().manual_seed(seed) if seed is not None else None

    rows = []  # (pair index, mask)
    for pair, (prompt, answer) in enumerate(zip(prompts, answers)):
        num_draws = mc_num if len(answer) > 1 else 1
        masks = draw_answer_masks(len(prompt), len(answer), num_draws, batch_size, generator)
        rows.extend((pair, mask) for mask in masks)

    totals = torch.zeros(len(answers), dtype=torch.float64)
    draws = torch.zeros(len(answers), dtype=torch.float64)
    for start in logging.tqdm(range(0, len(rows), batch_size), desc="ELBO", disable=not progress_bar):
        pairs, masks = zip(*rows[start : start + batch_size])
        batch = build_elbo_batch(
            [prompts[pair] + answers[pair] for pair in pairs],
            [len(prompts[pair]) for pair in pairs],
            masks,
            mask_token_id,
            pad_token_id,
        ).to(model.device)
        logits = denoiser_logits(model, batch, mask_token_id, cfg_scale)
        nll = negative_elbo_terms(logits, batch).double().cpu()
        pairs = torch.tensor(pairs)
        totals.index_add_(0, pairs, nll)
        draws.index_add_(0, pairs, torch.ones_like(nll))
    return -totals / draws


__all__ = [
    "ELBOBatch",
    "build_elbo_batch",
    "draw_answer_masks",
    "estimate_log_likelihood",
    "stratified_mask_counts",
]
