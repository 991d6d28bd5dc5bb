"""Monte-Carlo ELBO estimate of `log p(answer | prompt)` for masked-diffusion LMs.

Semantics of the official `get_log_likelihood.py` (LLaDA paper, eq. 6): each draw picks a number of answer tokens
`l` uniformly in `1..L`, masks `l` answer positions uniformly at random (the prompt is never masked), and scores the
masked tokens' cross-entropy divided by the mask ratio `l / L`. The counts of a group of draws are spread evenly over
`1..L` from one random offset (low discrepancy), so every draw is still uniform on its own and the estimate is
unbiased for

    ELBO = - sum over non-empty subsets S of the answer positions of
               sum_{j in S} -log p(answer_j | prompt, answer with S masked) / (|S| * C(L, |S|))

which lower-bounds `log p(answer | prompt)`.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm


IGNORE_INDEX = -100


@dataclass
class ELBOBatch:
    """Noised rows `[prompt | answer | padding]` ready for one forward pass.

    `labels` holds the clean token at masked positions and -100 elsewhere; `mask_ratio` is each row's `l / L`;
    `prompt_mask` marks prompt positions (what classifier-free guidance masks in its unconditional copy).
    """

    input_ids: torch.LongTensor
    attention_mask: torch.LongTensor
    labels: torch.LongTensor
    mask_ratio: torch.Tensor
    prompt_mask: torch.BoolTensor

    def to(self, device) -> "ELBOBatch":
        return ELBOBatch(**{name: value.to(device) for name, value in vars(self).items()})


def stratified_mask_counts(answer_length: int, num_draws: int, generator: torch.Generator | None = None):
    """Masked-token counts in `1..answer_length` for a group of draws: one uniform random offset, then evenly spaced.

    Each count is uniform on `1..answer_length` by itself (so the estimate stays unbiased); together they cover the
    range evenly, which is what lowers the variance.
    """
    if answer_length < 1:
        raise ValueError(f"`answer_length` must be at least 1, got {answer_length}.")
    offset = torch.randint(answer_length, (1,), generator=generator)
    draws = torch.arange(num_draws)
    # round(i * L / n) in integer arithmetic, so that the spacing does not depend on the offset
    spacing = (2 * draws * answer_length + num_draws) // (2 * num_draws)
    return (offset + spacing) % answer_length + 1


def mask_answers(
    prompt_lengths: torch.LongTensor,
    answer_lengths: torch.LongTensor,
    mask_counts: torch.LongTensor,
    width: int,
    generator: torch.Generator | None = None,
) -> torch.BoolTensor:
    """For each row, `mask_counts[r]` of the answer positions `[prompt_len, prompt_len + answer_len)`, drawn uniformly
    without replacement; prompt and padding positions are never selected."""
    positions = torch.arange(width)
    in_answer = (positions >= prompt_lengths[:, None]) & (positions < (prompt_lengths + answer_lengths)[:, None])
    scores = torch.rand(len(prompt_lengths), width, generator=generator).masked_fill(~in_answer, 2.0)
    ranks = scores.argsort(dim=-1).argsort(dim=-1)
    return ranks < mask_counts[:, None]


def build_elbo_batch(
    prompts: Sequence[Sequence[int]],
    answers: Sequence[Sequence[int]],
    mask_counts: torch.LongTensor,
    mask_token_id: int,
    pad_token_id: int,
    generator: torch.Generator | None = None,
) -> ELBOBatch:
    """Right-padded rows `prompt + answer` with `mask_counts[r]` answer tokens of row `r` replaced by the mask token."""
    prompt_lengths = torch.tensor([len(prompt) for prompt in prompts])
    answer_lengths = torch.tensor([len(answer) for answer in answers])
    width = int((prompt_lengths + answer_lengths).max())
    clean = torch.full((len(prompts), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, (prompt, answer) in enumerate(zip(prompts, answers)):
        sequence = torch.as_tensor([*prompt, *answer], dtype=torch.long)
        clean[row, : len(sequence)] = sequence
        attention_mask[row, : len(sequence)] = 1

    masked = mask_answers(prompt_lengths, answer_lengths, mask_counts, width, generator)
    return ELBOBatch(
        input_ids=clean.masked_fill(masked, mask_token_id),
        attention_mask=attention_mask,
        labels=clean.masked_fill(~masked, IGNORE_INDEX),
        mask_ratio=mask_counts / answer_lengths,
        prompt_mask=torch.arange(width) < prompt_lengths[:, None],
    )


def masked_logits(
    model, batch: ELBOBatch, mask_token_id: int, cfg_scale: float = 0.0
) -> torch.Tensor:
    """Logits of the model on the noised rows; with `cfg_scale > 0`, guided as `un + (w + 1) * (cond - un)`, where the
    unconditional copy has its prompt masked too (official CFG)."""
    if cfg_scale == 0.0:
        return model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    unconditional = batch.input_ids.masked_fill(batch.prompt_mask, mask_token_id)
    logits = model(
        input_ids=torch.cat([batch.input_ids, unconditional]),
        attention_mask=batch.attention_mask.repeat(2, 1),
    ).logits
    conditional, unconditional = logits.chunk(2)
    return unconditional + (cfg_scale + 1) * (conditional - unconditional)


def weighted_masked_nll(logits: torch.Tensor, labels: torch.LongTensor, mask_ratio: torch.Tensor) -> torch.Tensor:
    """Per row: the masked tokens' summed cross-entropy divided by the row's mask ratio (one draw of `-ELBO`)."""
    token_nll = F.cross_entropy(
        logits.float().transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none"
    )
    return token_nll.sum(dim=-1) / mask_ratio.to(token_nll.dtype)


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
            is scored exactly with one forward pass.
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

    rows = []  # (pair index, masked-token count)
    for pair, answer in enumerate(answers):
        num_draws = mc_num if len(answer) > 1 else 1
        for start in range(0, num_draws, batch_size):
            counts = stratified_mask_counts(len(answer), min(batch_size, num_draws - start), generator)
            rows.extend((pair, int(count)) for count in counts)

    totals = torch.zeros(len(answers), dtype=torch.float64)
    draws = torch.zeros(len(answers), dtype=torch.float64)
    for start in tqdm(range(0, len(rows), batch_size), desc="ELBO", disable=not progress_bar):
        pairs, counts = zip(*rows[start : start + batch_size])
        batch = build_elbo_batch(
            [prompts[pair] for pair in pairs],
            [answers[pair] for pair in pairs],
            torch.tensor(counts),
            mask_token_id,
            pad_token_id,
            generator,
        ).to(model.device)
        logits = masked_logits(model, batch, mask_token_id, cfg_scale)
        nll = weighted_masked_nll(logits, batch.labels, batch.mask_ratio).double().cpu()
        pairs = torch.tensor(pairs)
        totals.index_add_(0, pairs, nll)
        draws.index_add_(0, pairs, torch.ones_like(nll))
    return -totals / draws


__all__ = ["ELBOBatch", "build_elbo_batch", "estimate_log_likelihood", "stratified_mask_counts"]
