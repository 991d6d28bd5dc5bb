"""Transfer policies: how many masked positions a step commits, which ones, and with which tokens.

A policy has three parts, called by the sampler loop in this order:

1. [`TransferPolicy.block_quota`], once per block: how many tokens each step of the block should commit.
2. [`TransferPolicy.propose`], every step: a token `x0` and a confidence for every position of the candidate span.
3. [`TransferPolicy.select`], every step: which candidates to commit (top-quota by confidence, or every candidate above
   `threshold` when at least the quota clears it).

[`LLaDATransferPolicy`] mirrors LLaDA 1.x `generate.py`; [`LLaDA2TransferPolicy`] mirrors LLaDA2.0's `generate()`.
"""

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


class TransferPolicy:
    """Base class.

    Args:
        temperature (`float`): 0 is greedy.
        threshold (`float`, *optional*): commit every candidate above it when at least the quota does.
        top_k (`int`, *optional*), top_p (`float`, *optional*): logits filters used when sampling.
        confidence_suppressed_ids (`list[int]`): tokens given zero confidence (`confidence_eos_eot_inf`).
        stops_when_block_filled (`bool`): skip the rest of a block's steps once it has no mask left (no forward pass).
    """

    stops_when_block_filled = False

    def __init__(
        self,
        temperature: float = 0.0,
        threshold: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        confidence_suppressed_ids: list[int] | None = None,
    ):
        self.temperature = temperature
        self.threshold = threshold
        self.top_k = top_k
        self.top_p = top_p
        self.confidence_suppressed_ids = confidence_suppressed_ids or []

    @classmethod
    def from_config(cls, config, confidence_suppressed_ids: list[int]) -> "TransferPolicy":
        """The policy a [`DiffusionGenerationConfig`] describes."""
        return cls(
            temperature=config.temperature,
            threshold=config.threshold,
            top_k=config.top_k,
            top_p=config.top_p,
            confidence_suppressed_ids=confidence_suppressed_ids,
        )

    def block_quota(self, to_resolve: torch.BoolTensor, steps: int) -> torch.LongTensor:
        """`[rows, steps]` tokens to commit at each step of a block, from the masks it must resolve (see
        [`BlockSchedule.to_resolve`])."""
        raise NotImplementedError

    def propose(
        self, logits: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.LongTensor, torch.Tensor]:
        """Predicted tokens `[rows, span]` and their confidence (higher = commit sooner) from `[rows, span, vocab]`."""
        raise NotImplementedError

    def select(self, confidence: torch.Tensor, quota: torch.LongTensor) -> torch.BoolTensor:
        """Positions to commit. `confidence` is -inf outside the candidates; `quota` `[rows]` is this step's count.

        With a `threshold`, a row whose candidates above it are at least `quota` commits all of those; otherwise (and
        without threshold) it commits its `quota` most confident candidates, or all of them if fewer remain.
        """
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

    def _filtered_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return top_p_filter(top_k_filter(logits, self.top_k), self.top_p)


class LLaDATransferPolicy(TransferPolicy):
    """LLaDA 1.x `generate.py`.

    - Quota: the masks a block must resolve (its own; for the first block also the prompt's), split evenly over the
      block's steps (per row).
    - Tokens: argmax of the logits; with `temperature > 0`, Gumbel-max in float64 (`exp(logits) / (-log u) ** T`).
    - Confidence: the untempered float64 softmax probability of the chosen token (`"low_confidence"`), or uniform noise
      (`"random"`).
    """

    def __init__(self, remasking: str = "low_confidence", **kwargs):
        super().__init__(**kwargs)
        self.remasking = remasking

    @classmethod
    def from_config(cls, config, confidence_suppressed_ids):
        policy = super().from_config(config, confidence_suppressed_ids)
        policy.remasking = config.remasking
        return policy

    def block_quota(self, to_resolve, steps):
        return split_evenly(to_resolve.sum(dim=1), steps)

    def propose(self, logits, generator=None):
        if self.temperature > 0:
            logits64 = self._filtered_logits(logits.to(torch.float64))
            uniform = torch.rand(logits64.shape, dtype=torch.float64, device=logits.device, generator=generator)
            x0 = torch.argmax(logits64.exp() / (-torch.log(uniform)) ** self.temperature, dim=-1)
        else:
            x0 = torch.argmax(logits, dim=-1)
        if self.remasking == "random":
            confidence = torch.rand(x0.shape, device=x0.device, generator=generator)
        else:
            probs = torch.softmax(suppress_tokens(logits, self.confidence_suppressed_ids).to(torch.float64), dim=-1)
            confidence = probs.gather(-1, x0[..., None]).squeeze(-1)
        return x0, confidence


class LLaDA2TransferPolicy(TransferPolicy):
    """LLaDA2.0 `generate()`.

    - Quota: `block_length` split evenly over the block's steps (the same for every row), capped by the masks left.
    - Tokens: argmax at temperature 0, else a draw from the softmax of the tempered, top-k/top-p filtered logits.
    - Confidence: the probability of the chosen token under that same distribution (untempered at temperature 0).
    - Threshold (default 0.95) with quota fallback; a block whose masks are all committed ends early.
    """

    stops_when_block_filled = True

    @classmethod
    def from_config(cls, config, confidence_suppressed_ids):
        if config.remasking != "low_confidence":
            raise ValueError(
                f"LLaDA2 ranks positions by confidence only; `remasking={config.remasking!r}` is not available."
            )
        return super().from_config(config, confidence_suppressed_ids)

    def block_quota(self, to_resolve, steps):
        totals = torch.full((to_resolve.shape[0],), to_resolve.shape[1], device=to_resolve.device)  # block_length
        return split_evenly(totals, steps)

    def propose(self, logits, generator=None):
        if self.temperature > 0:
            if self.temperature != 1.0:
                logits = logits / self.temperature
            logits = self._filtered_logits(logits)
        probs = torch.softmax(logits, dim=-1)
        if self.temperature > 0:
            x0 = torch.multinomial(probs.flatten(0, -2), num_samples=1, generator=generator).view(probs.shape[:-1])
        else:
            x0 = torch.argmax(logits, dim=-1)
        if self.confidence_suppressed_ids:
            probs = torch.softmax(suppress_tokens(logits, self.confidence_suppressed_ids), dim=-1)
        return x0, probs.gather(-1, x0[..., None]).squeeze(-1)


__all__ = [
    "TransferPolicy",
    "LLaDATransferPolicy",
    "LLaDA2TransferPolicy",
    "split_evenly",
    "top_k_filter",
    "top_p_filter",
    "suppress_tokens",
]
