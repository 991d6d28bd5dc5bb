"""The masked-diffusion training objective shared by both model families (LLaDA, eq. 3).

A batch holds noised sequences `x_t`: every position `i` of row `b` was replaced by the mask token with probability
`p_mask[b, i]` (the row's `t`, or its block's `t` in block diffusion). The model is trained to recover the clean tokens
at the masked positions, each cross-entropy weighted by the inverse of its masking probability:

    loss = 1/B * sum_b 1/n_b * sum_{i masked in b} -log p_theta(x0[b, i] | x_t[b]) / p_mask[b, i]

`n_b`, the row's `loss_normalizer`, is the row length `L` for pretraining (the sum is then normalised by `B * L`) and
the answer length for SFT. The data collators of `llada_hf.training.collators` produce `labels` (the clean token at
each masked position, -100 elsewhere), `p_mask` and `loss_normalizer`, and the models' `forward` turns them into this
loss.

Gradient accumulation and data parallelism: the loss is a mean over rows, while the `num_items_in_batch` that
`transformers.Trainer` offers counts labelled (= masked) tokens, which is neither `B * L` nor an answer length. The
models therefore set `accepts_loss_kwargs = False`: the Trainer does not pass `num_items_in_batch` and divides each
micro-batch's loss by the number of accumulation steps, and DDP averages gradients over processes. With micro-batches
of equal row counts (the Trainer's default), 4 accumulated micro-batches of 1 row give the gradient of one batch of
4 rows. An epoch's last, smaller batch is weighted like a full one, as for any model without loss kwargs
(`dataloader_drop_last=True` avoids it).

Confidence-aware parallel (CAP) training (dParallel; LLaDA2.0 section 5.2, how LLaDA2.0-flash-CAP was made) adds to
this loss `λ * confidence_loss`, the entropy of the correctly predicted masked positions, so that threshold decoding
commits more tokens per forward. λ is the model config's `confidence_loss_weight` (unset or 0: the loss above,
unchanged), read by the forward as transformers' MoE models read `router_aux_loss_coef`, so the stock Trainer and
every collator work unchanged; `save_pretrained` keeps it in config.json:

    model.config.confidence_loss_weight = 0.5

`outputs.loss` is then the total, and `outputs.diffusion_loss` / `outputs.confidence_loss` its two parts, which
`llada_hf.training.DiffusionLossPartsCallback` adds to the Trainer's logs. λ does not transfer from dFactory's
default `confidence_beta=2.0`: its cross-entropy is a plain token mean, ours is 1/t-weighted (about 2x larger at
mean t = 1/2) and normalised per answer.
"""

import torch
from torch.nn import functional as F

from ..configuration_utils import checked_confidence_loss_weight


IGNORE_INDEX = -100

COLLATOR_HINT = (
    "Noise the batch with a diffusion collator from `llada_hf.training` (DataCollatorForDiffusionPretraining, "
    "DataCollatorForDiffusionSFT, DataCollatorForBlockDiffusion or DataCollatorForPackedDiffusion)."
)


def check_diffusion_labels(
    input_ids: torch.LongTensor | None,
    labels: torch.LongTensor,
    p_mask: torch.Tensor | None,
    mask_token_id: int | None,
) -> None:
    """Refuses batches built for autoregressive or MLM-style training.

    `DataCollatorForLanguageModeling(mlm=False)`, TRL's `SFTTrainer` and similar tools send `labels` equal to the
    (unmasked) `input_ids` and no `p_mask`: a masked-diffusion model would learn to copy its input. Every labelled
    position must hold the mask token, and `p_mask` must be given.
    """
    if p_mask is None:
        raise ValueError(
            f"`labels` were given without `p_mask`, the masking probability of each position. {COLLATOR_HINT}"
        )
    if input_ids is None:
        return
    if mask_token_id is None:
        raise ValueError("Training needs `config.mask_token_id` to check that the labelled positions are masked.")
    unmasked_targets = (labels != IGNORE_INDEX) & (input_ids != mask_token_id)
    if bool(unmasked_targets.any()):
        raise ValueError(
            f"{int(unmasked_targets.sum())} labelled position(s) of `input_ids` are not the mask token "
            f"({mask_token_id}). A masked-diffusion model is trained to recover masked tokens only; labels on visible "
            f"tokens (as autoregressive collators produce) would teach it to copy its input. {COLLATOR_HINT}"
        )


def masked_diffusion_loss(
    logits: torch.Tensor,
    labels: torch.LongTensor,
    p_mask: torch.Tensor,
    loss_normalizer: torch.Tensor | float | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """The 1/t-weighted masked-token cross-entropy of LLaDA eq. 3, computed in float32 whatever the logits' dtype.

    Args:
        logits (`torch.Tensor` of shape `[batch, seq, vocab]`): position `i` scores the token *at* `i` (no shift).
        labels (`torch.LongTensor` of shape `[batch, seq]`): the clean token at supervised (masked) positions, -100
            elsewhere.
        p_mask (`torch.Tensor` of shape `[batch]` or `[batch, seq]`): the probability with which each position was
            masked; must be positive at the supervised positions.
        loss_normalizer (`torch.Tensor` or number, *optional*): what each row's weighted sum is divided by, per row
            (`[batch]`) or per position (`[batch, seq]`). Defaults to the sequence length (pretraining's `B * L`).
        reduction (`str`, *optional*, defaults to `"mean"`): `"mean"` averages the rows, `"none"` returns one value
            per row (e.g. a Monte-Carlo term of the negative ELBO with `loss_normalizer=1`).
    """
    _check_loss_arguments(logits, labels, reduction)
    p_mask = _per_position(p_mask, labels, "p_mask")
    normalizer = (
        labels.shape[1] if loss_normalizer is None else _per_position(loss_normalizer, labels, "loss_normalizer")
    )
    weights = 1.0 / (p_mask * normalizer)

    supervised = labels != IGNORE_INDEX
    rows = supervised.nonzero()[:, 0]
    supervised_weights = weights[supervised]
    if not bool(torch.isfinite(supervised_weights).all()) or bool((supervised_weights < 0).any()):
        raise ValueError("`p_mask` and `loss_normalizer` must be positive at every labelled position.")

    token_losses = F.cross_entropy(logits[supervised].float(), labels[supervised], reduction="none")
    row_losses = torch.zeros(labels.shape[0], dtype=torch.float32, device=logits.device)
    row_losses = row_losses.index_add(0, rows, token_losses * supervised_weights)
    return row_losses.mean() if reduction == "mean" else row_losses


def confidence_loss(
    logits: torch.Tensor,
    labels: torch.LongTensor,
    reduction: str = "mean",
) -> torch.Tensor:
    """The confidence objective of confidence-aware parallel (CAP) training (dParallel; LLaDA2.0 section 5.2).

    The entropy of the predicted distribution at the supervised (masked) positions whose argmax already equals the
    target, computed in float32 whatever the logits' dtype. Minimising it sharpens the predictions the model already
    gets right, so that threshold decoding commits more of them per forward; wrong predictions are left to the
    cross-entropy. Per row it is the mean over such positions; `"mean"` then averages the rows that have any (a batch
    without any gives 0).

    Args:
        logits (`torch.Tensor` of shape `[batch, seq, vocab]`): position `i` scores the token *at* `i` (no shift).
        labels (`torch.LongTensor` of shape `[batch, seq]`): the clean token at supervised positions, -100 elsewhere.
        reduction (`str`, *optional*, defaults to `"mean"`): `"mean"` or `"none"` (one value per row, 0 for a row
            without a correctly predicted supervised position).

    Gradient accumulation: each row is normalised by its own count of correct positions (not by the micro-batch's
    token count, as dFactory's `compute_confidence_loss` does), so the value does not depend on how rows are grouped
    into micro-batches as long as every row has at least one correct position: then 4 accumulated micro-batches of
    1 row give the gradient of one batch of 4. A row without any contributes 0 to its 1-row micro-batch but is left
    out of a larger batch's mean, the only case where the two differ.
    """
    _check_loss_arguments(logits, labels, reduction)
    supervised = labels != IGNORE_INDEX
    supervised_logits = logits[supervised]
    correct = supervised_logits.argmax(-1) == labels[supervised]
    log_probs = F.log_softmax(supervised_logits[correct].float(), dim=-1)
    entropies = -(log_probs.exp() * log_probs).sum(-1)
    rows = supervised.nonzero()[:, 0][correct]

    counts = torch.zeros(labels.shape[0], dtype=torch.float32, device=logits.device)
    counts = counts.index_add(0, rows, torch.ones_like(entropies))
    sums = torch.zeros(labels.shape[0], dtype=torch.float32, device=logits.device).index_add(0, rows, entropies)
    row_means = sums / counts.clamp(min=1)
    if reduction == "none":
        return row_means
    return row_means.sum() / (counts > 0).sum().clamp(min=1)


def confidence_loss_weight(config) -> float:
    """`config.confidence_loss_weight` (the λ of CAP training), 0 when unset; refuses negative or non-finite values
    (checked again here: the configs validate it at construction, not on assignment)."""
    return checked_confidence_loss_weight(getattr(config, "confidence_loss_weight", None))


def _per_position(value: torch.Tensor | float, labels: torch.Tensor, name: str) -> torch.Tensor:
    """Broadcasts a scalar, per-row `[batch]` or per-position `[batch, seq]` value to float32 `[batch, seq]`."""
    value = torch.as_tensor(value, dtype=torch.float32, device=labels.device)
    if value.dim() == 1:
        value = value[:, None]
    if value.dim() == 0 or (
        value.dim() == 2 and value.shape[0] in (1, labels.shape[0]) and value.shape[1] in (1, labels.shape[1])
    ):
        return value.expand(labels.shape)
    raise ValueError(
        f"`{name}` must be a number, [batch] or [batch, seq] for labels of shape {tuple(labels.shape)}, got shape "
        f"{tuple(value.shape)}."
    )


def _check_loss_arguments(logits: torch.Tensor, labels: torch.Tensor, reduction: str) -> None:
    if logits.dim() != 3 or labels.shape != logits.shape[:2]:
        raise ValueError(
            f"`labels` must have the shape of `logits` without the vocabulary dimension, got labels "
            f"{tuple(labels.shape)} for logits {tuple(logits.shape)}."
        )
    if reduction not in ("mean", "none"):
        raise ValueError(f"`reduction` must be 'mean' or 'none', got {reduction!r}.")
