"""Transfer policies: how many masked positions a step commits, which ones, and with which tokens.

A policy has three parts, called by the sampler loop in this order:

1. [`TransferPolicy.block_quota`], once per block: how many tokens each step of the block should commit.
2. [`TransferPolicy.propose`], every step: a token, a confidence (and, when needed, the entropy of the predicted
   distribution) for every position of the candidate span.
3. [`TransferPolicy.select`], every step: which candidates to commit. `parallel_decoding` picks the rule:
   - `"quota"`: the step's quota of most confident candidates (official samplers); with a `threshold`, every
     candidate above it when at least the quota clears it (LLaDA2.0's rule);
   - `"threshold"`: the most confident candidate and every other one at or above `threshold` (Fast-dLLM);
   - `"factor"`: the `n` most confident, `n` the largest with `(n + 1) * (1 - c_n) < factor`, `c_n` the `n`-th
     highest confidence (Fast-dLLM);
   - `"entropy_bound"`: the longest run of most confident candidates whose entropies sum, less their largest, to at
     most `entropy_bound` (EB-sampler, Ben-Hamu et al. 2025).
   The last three commit at least one token per step and ignore the quota: a block takes as many steps as it needs.

Confidences (`remasking`): `"low_confidence"` (probability of the chosen token), `"margin"` (top-1 minus top-2
probability), `"entropy"` (`exp(-entropy)`: 1 for a certain prediction, `1 / vocab` for a uniform one) and `"random"`.

[`LLaDATransferPolicy`] mirrors LLaDA 1.x `generate.py`; [`LLaDA2TransferPolicy`] mirrors LLaDA2.0's `generate()`.
[`TokenEditing`] adds LLaDA2.1's token-to-token edits of already committed positions to a LLaDA2 policy.
"""

from typing import NamedTuple

import torch


def split_evenly(totals: torch.LongTensor, steps: int) -> torch.LongTensor:
    """`[rows, steps]` quotas: each row's total split evenly over `steps`, the remainder going to the first steps."""
    base, remainder = totals // steps, totals % steps
    first_steps = torch.arange(steps, device=totals.device)[None, :] < remainder[:, None]
    return base[:, None] + first_steps.long()


def top_k_filter(logits: torch.Tensor, top_k: int | None) -> torch.Tensor:
    """Keeps the `top_k` largest logits of each row (ties with the k-th included), the rest become -inf."""
    if not top_k:
        return logits
    kth_largest = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth_largest, float("-inf"))


def top_p_filter(logits: torch.Tensor, top_p: float | None) -> torch.Tensor:
    """Nucleus filter: keeps the smallest set of most likely tokens whose probability reaches `top_p`."""
    if top_p is None or top_p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    mass_before = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
    # A token is dropped when the tokens ranked above it already exceed `top_p`.
    drop_sorted = torch.nn.functional.pad(mass_before[..., :-1] > top_p, (1, 0), value=False)
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def suppress_tokens(logits: torch.Tensor, token_ids: list[int]) -> torch.Tensor:
    """A copy of `logits` where `token_ids` can never be chosen (-inf); `logits` itself if there are none."""
    if not token_ids:
        return logits
    logits = logits.clone()
    logits[..., token_ids] = float("-inf")
    return logits


class Proposal(NamedTuple):
    """What a policy proposes for every position of the candidate span, each `[rows, span]`."""

    tokens: torch.LongTensor
    confidence: torch.Tensor
    entropy: torch.Tensor | None = None  # only for `parallel_decoding="entropy_bound"`


def confidence_of(probs: torch.Tensor, tokens: torch.LongTensor, remasking: str) -> torch.Tensor:
    """Confidence (higher = commit sooner) of `tokens` under `probs` `[..., vocab]` for a ranking-based `remasking`."""
    if remasking == "margin":
        top2 = probs.topk(2, dim=-1).values
        return top2[..., 0] - top2[..., 1]
    if remasking == "entropy":
        return torch.exp(-entropy_of(probs))
    return probs.gather(-1, tokens[..., None]).squeeze(-1)


def entropy_of(probs: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) over the last dimension."""
    return -(probs * torch.log(probs.clamp_min(torch.finfo(probs.dtype).tiny))).sum(-1)


class TransferPolicy:
    """Base class.

    Args:
        temperature (`float`): 0 is greedy.
        remasking (`str`): the confidence that ranks candidates (see the module docstring).
        threshold (`float`, *optional*): confidence threshold of the `"quota"` and `"threshold"` rules.
        parallel_decoding (`str`): the selection rule: `"quota"`, `"threshold"`, `"factor"` or `"entropy_bound"`.
        factor (`float`, *optional*), entropy_bound (`float`, *optional*): parameters of those rules.
        top_k (`int`, *optional*), top_p (`float`, *optional*): logits filters used when sampling.
        confidence_suppressed_ids (`list[int]`): tokens given zero confidence (`confidence_eos_eot_inf`).
    """

    # The family skips the rest of a block's steps once the block has no mask left (no forward pass).
    family_stops_when_block_filled = False
    # LLaDA2.1 token editing, when the config asks for it (LLaDA2 only).
    editing: "TokenEditing | None" = None

    def __init__(
        self,
        temperature: float = 0.0,
        remasking: str = "low_confidence",
        threshold: float | None = None,
        parallel_decoding: str = "quota",
        factor: float | None = None,
        entropy_bound: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        confidence_suppressed_ids: list[int] | None = None,
    ):
        self.temperature = temperature
        self.remasking = remasking
        self.threshold = threshold
        self.parallel_decoding = parallel_decoding
        self.factor = factor
        self.entropy_bound = entropy_bound
        self.top_k = top_k
        self.top_p = top_p
        self.confidence_suppressed_ids = confidence_suppressed_ids or []

    @classmethod
    def from_config(cls, config, confidence_suppressed_ids: list[int]) -> "TransferPolicy":
        """The policy a [`DiffusionGenerationConfig`] describes."""
        return cls(
            temperature=config.temperature,
            remasking=config.remasking,
            threshold=config.threshold,
            parallel_decoding=config.parallel_decoding,
            factor=config.factor,
            entropy_bound=config.entropy_bound,
            top_k=config.top_k,
            top_p=config.top_p,
            confidence_suppressed_ids=confidence_suppressed_ids,
        )

    @property
    def draws_noise(self) -> bool:
        """Whether `propose` draws random numbers (sampling, random remasking)."""
        return self.temperature > 0 or self.remasking == "random"

    @property
    def stops_when_block_filled(self) -> bool:
        """Whether a block ends as soon as it has no mask left rather than after its planned steps."""
        return self.family_stops_when_block_filled or self.parallel_decoding != "quota" or self.threshold is not None

    def max_block_steps(self, planned_steps: int, block_width: int) -> int:
        """Upper bound on the steps of one block: the planned ones, or (rules that commit at least one token per step
        until the block is filled) one per position of the block."""
        return planned_steps if self.parallel_decoding == "quota" else block_width

    def block_quota(self, to_resolve: torch.BoolTensor, steps: int) -> torch.LongTensor:
        """`[rows, steps]` tokens to commit at each step of a block, from the masks it must resolve (see
        [`BlockSchedule.to_resolve`])."""
        raise NotImplementedError

    def propose(self, logits: torch.Tensor, generator: torch.Generator | None = None) -> Proposal:
        """Predicted tokens, confidences (and entropies) `[rows, span]` from `[rows, span, vocab]` logits."""
        raise NotImplementedError

    def select(
        self, proposal: Proposal, candidates: torch.BoolTensor, quota: torch.LongTensor | None
    ) -> torch.BoolTensor:
        """Positions to commit among `candidates` `[rows, span]`; `quota` `[rows]` is this step's count (`"quota"`)."""
        confidence = proposal.confidence.masked_fill(~candidates, float("-inf"))
        if self.parallel_decoding == "quota":
            return self._select_quota(confidence, quota)
        # The other rules commit a run of the most confident candidates, at least one.
        sorted_confidence, order = confidence.sort(dim=-1, descending=True)
        rank = torch.arange(confidence.shape[-1], device=confidence.device)
        if self.parallel_decoding == "threshold":
            keep = sorted_confidence >= self.threshold
        elif self.parallel_decoding == "factor":
            # n = rank + 1 tokens are kept while (n + 1) * (1 - c_n) < factor.
            keep = (rank + 2) * (1 - sorted_confidence) < self.factor
        else:  # entropy_bound
            sorted_entropy = proposal.entropy.gather(-1, order).masked_fill(sorted_confidence == float("-inf"), 0)
            keep = sorted_entropy.cumsum(-1) - sorted_entropy.cummax(-1).values <= self.entropy_bound
        keep = (keep | (rank == 0)).long().cumprod(-1).bool() & (sorted_confidence > float("-inf"))
        return torch.zeros_like(keep).scatter(-1, order, keep)

    def _select_quota(self, confidence: torch.Tensor, quota: torch.LongTensor) -> torch.BoolTensor:
        """With a `threshold`, a row whose candidates above it are at least `quota` commits all of those; otherwise
        (and without threshold) it commits its `quota` most confident candidates, or all of them if fewer remain."""
        transfer = torch.zeros_like(confidence, dtype=torch.bool)
        num_candidates = (confidence > float("-inf")).sum(dim=-1).tolist()
        if self.threshold is not None:
            confident = confidence > self.threshold
            use_threshold = (confident.sum(dim=-1) >= quota).tolist()
        for row, (k, available) in enumerate(zip(quota.tolist(), num_candidates, strict=True)):
            if self.threshold is not None and use_threshold[row]:
                transfer[row] = confident[row]
            elif min(k, available) > 0:
                transfer[row, torch.topk(confidence[row], min(k, available)).indices] = True
        return transfer

    def _proposal(self, probs: torch.Tensor, tokens: torch.LongTensor, generator) -> Proposal:
        """Confidences (and entropies) of `tokens` under `probs`, per `remasking` and `parallel_decoding`."""
        if self.remasking == "random":
            confidence = torch.rand(tokens.shape, device=tokens.device, generator=generator)
        else:
            confidence = confidence_of(probs, tokens, self.remasking)
        entropy = entropy_of(probs) if self.parallel_decoding == "entropy_bound" else None
        return Proposal(tokens, confidence, entropy)

    def _filtered_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return top_p_filter(top_k_filter(logits, self.top_k), self.top_p)


class TokenEditing:
    """LLaDA2.1 token-to-token editing (T2T), next to a policy's mask-to-token commits (M2T), within the active block.

    A position is editable once it is committed, if it was a mask when the block began (prompt tokens never change).
    An editable position takes the step's proposed token when that differs from its current one and its confidence
    exceeds `editing_threshold`. A row works on a block while it has masks, then for at most `max_post_steps` more
    steps, and leaves the block at the first of those that edits nothing. Rows that left the block wait unchanged for
    the others, so every row gets the tokens it would get alone.

    Call [`TokenEditing.start_block`] before a block's first step, then per step [`TokenEditing.start_step`] (before
    the forward pass) and [`TokenEditing.add_edits`] (after the policy's selection).
    """

    def __init__(self, editing_threshold: float, max_post_steps: int):
        self.editing_threshold = editing_threshold
        self.max_post_steps = max_post_steps

    def max_block_steps(self, mask_steps: int) -> int:
        """Upper bound on a block's steps: those that fill its masks, the post steps, and the one that stops."""
        return mask_steps + self.max_post_steps + 1

    def start_block(self, masks: torch.BoolTensor) -> None:
        """`masks` `[rows, block]`: the block's mask positions before its first step."""
        self.editable = masks.clone()
        self.post_steps = torch.zeros(masks.shape[0], dtype=torch.long, device=masks.device)
        self.working = torch.ones(masks.shape[0], dtype=torch.bool, device=masks.device)

    def start_step(self, masks: torch.BoolTensor) -> torch.BoolTensor:
        """Counts a post step for the working rows without `masks` left; returns the rows still working."""
        self.filled = ~masks.any(dim=1)
        self.post_steps += (self.filled & self.working).long()
        self.working &= self.post_steps <= self.max_post_steps
        return self.working

    def add_edits(
        self, transfer: torch.BoolTensor, proposal: Proposal, block_tokens: torch.LongTensor, mask_token_id: int
    ) -> torch.BoolTensor:
        """The step's commits `transfer` `[rows, block]` plus its edits (in working rows). A row that had no mask at
        the start of the step and edits nothing leaves the block."""
        edits = (
            self.editable
            & (block_tokens != mask_token_id)
            & (proposal.tokens != block_tokens)
            & (proposal.confidence > self.editing_threshold)
            & self.working[:, None]
        )
        self.working &= ~(self.filled & ~edits.any(dim=1))
        return transfer | edits


class LLaDATransferPolicy(TransferPolicy):
    """LLaDA 1.x `generate.py`.

    - Quota: the masks a block must resolve (its own; for the first block also the prompt's), split evenly over the
      block's steps (per row).
    - Tokens: argmax of the logits; with `temperature > 0`, Gumbel-max in float64 (`exp(logits) / (-log u) ** T`,
      or `logits / T - log(-log u)` in the rows where that overflows).
    - Confidence: from the untempered float64 softmax (`"low_confidence"`: probability of the chosen token), or
      uniform noise (`"random"`).
    """

    @classmethod
    def from_config(cls, config, confidence_suppressed_ids):
        if config.editing_threshold is not None:
            raise ValueError(
                "`editing_threshold` (LLaDA2.1 token editing) needs a block-causal LLaDA2 model; LLaDA 1.x models "
                "are not trained to revise committed tokens."
            )
        return super().from_config(config, confidence_suppressed_ids)

    def block_quota(self, to_resolve, steps):
        return split_evenly(to_resolve.sum(dim=1), steps)

    def propose(self, logits, generator=None):
        if self.temperature > 0:
            logits64 = self._filtered_logits(logits.to(torch.float64))
            uniform = torch.rand(logits64.shape, dtype=torch.float64, device=logits.device, generator=generator)
            noise = -torch.log(uniform)
            scores = logits64.exp() / noise**self.temperature  # the released arithmetic
            # Large logits or temperatures overflow it (inf / nan, and argmax then takes the first one): for those
            # rows, the same Gumbel-max draw in log space, scaled by 1 / temperature.
            overflow = ~torch.isfinite(scores).all(dim=-1, keepdim=True)
            if bool(overflow.any()):
                scores = torch.where(overflow, logits64 / self.temperature - torch.log(noise), scores)
            x0 = torch.argmax(scores, dim=-1)
        else:
            x0 = torch.argmax(logits, dim=-1)
        probs = None
        if self.remasking != "random" or self.parallel_decoding == "entropy_bound":
            probs = torch.softmax(suppress_tokens(logits, self.confidence_suppressed_ids).to(torch.float64), dim=-1)
        return self._proposal(probs, x0, generator)


class LLaDA2TransferPolicy(TransferPolicy):
    """LLaDA2.0 `generate()`.

    - Quota: `block_length` split evenly over the block's steps (the same for every row), capped by the masks left.
    - Tokens: argmax at temperature 0, else a draw from the softmax of the tempered, top-k/top-p filtered logits.
    - Confidence: from that same distribution (untempered at temperature 0); not `"random"`.
    - Threshold (default 0.95) with quota fallback; a block whose masks are all committed ends early.
    - With `editing_threshold`: LLaDA2.1's token editing ([`TokenEditing`]).
    """

    family_stops_when_block_filled = True

    @classmethod
    def from_config(cls, config, confidence_suppressed_ids):
        if config.remasking == "random":
            raise ValueError("LLaDA2 ranks positions by confidence; `remasking='random'` is not available.")
        policy = super().from_config(config, confidence_suppressed_ids)
        if config.editing_threshold is not None:
            policy.editing = TokenEditing(config.editing_threshold, config.max_post_steps)
        return policy

    def block_quota(self, to_resolve, steps):
        totals = torch.full((to_resolve.shape[0],), to_resolve.shape[1], device=to_resolve.device)  # block_length
        return split_evenly(totals, steps)

    def propose(self, logits, generator=None):
        if self.temperature > 0:
            if self.temperature != 1.0:
                tempered = logits / self.temperature
                # A tiny temperature overflows the division (+inf, then nan probabilities); shifted by the row maximum
                # first (and in float64, where the temperature itself does not round to 0), the same distribution
                # does not.
                if bool((torch.isnan(tempered) | torch.isposinf(tempered)).any()):
                    shifted = (logits - logits.amax(dim=-1, keepdim=True)).to(torch.float64)
                    tempered = (shifted / self.temperature).to(logits.dtype)
                logits = tempered
            logits = self._filtered_logits(logits)
        probs = torch.softmax(logits, dim=-1)
        if self.temperature > 0:
            x0 = torch.multinomial(probs.flatten(0, -2), num_samples=1, generator=generator).view(probs.shape[:-1])
        else:
            x0 = torch.argmax(logits, dim=-1)
        if self.confidence_suppressed_ids:
            probs = torch.softmax(suppress_tokens(logits, self.confidence_suppressed_ids), dim=-1)
        return self._proposal(probs, x0, generator)


__all__ = [
    "Proposal",
    "TransferPolicy",
    "LLaDATransferPolicy",
    "LLaDA2TransferPolicy",
    "TokenEditing",
    "split_evenly",
    "top_k_filter",
    "top_p_filter",
    "suppress_tokens",
    "confidence_of",
    "entropy_of",
]
