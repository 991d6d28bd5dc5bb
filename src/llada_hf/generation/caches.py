"""Cache strategies: which canvas columns each denoising step recomputes, and what it reuses.

The sampler loop asks its strategy, before every forward pass, for the query columns to compute
([`DiffusionCacheStrategy.query_range`]) and the `Cache` to hand to the model, and tells it afterwards
([`DiffusionCacheStrategy.after_forward`]). The model's attention calls `cache.update(keys, values, layer_idx)` and
attends over what that returns, so a `Cache` subclass decides which keys/values are reused.

- [`DiffusionCacheStrategy`] itself recomputes the whole visible window every step (the official samplers).
- [`BlockCache`] is exact for block-causal schedules (LLaDA2.0): committed blocks never see later ones, so their keys
  and values are computed once, and each step computes only the active block (plus the block just committed).

Approximate caches for bidirectional models (LLaDA 1.x prefix / dual cache, refreshed once per block) plug in the same
way: a `query_range` that narrows to the block after a refresh step, and a `Cache` whose `update` splices the active
block's fresh keys/values into the stored ones.
"""

import torch
from transformers.cache_utils import Cache, DynamicCache

from .schedules import Block


class BlockKVCache(DynamicCache):
    """A [`DynamicCache`] that can be cut back to a committed length after every step."""

    def truncate(self, length: int) -> None:
        """Drops every cached position from `length` on."""
        excess = self.get_seq_length() - length
        if excess > 0:
            self.crop(-excess)


class DiffusionCacheStrategy:
    """No cache: every step recomputes the canvas up to the schedule's window end."""

    cache: Cache | None = None

    def query_range(self, block: Block, step: int, window_end: int) -> tuple[int, int]:
        """Canvas columns `[start, end)` whose queries this step's forward computes (keys are `[0, end)`)."""
        return 0, window_end

    def after_forward(self, block: Block, step: int) -> None:
        """Called after each forward pass of `block`."""

    def select_rows(self, index: torch.LongTensor) -> None:
        """Keeps only the batch rows `index` of the forward batch (rows that finished are dropped)."""


class BlockCache(DiffusionCacheStrategy):
    """Exact KV cache for block-causal attention.

    The cache always holds the keys/values of the columns before the active block, computed from their final tokens.
    A step computes the columns from the end of the cache to the end of the active block: on the first step of a block
    that includes the block committed just before (its tokens changed during its last step), afterwards only the
    active block. After the forward, the cache is cut back to the start of the active block, whose tokens are not
    final yet.
    """

    def __init__(self):
        self.cache = BlockKVCache()
        self.cached_length = 0

    def query_range(self, block, step, window_end):
        if window_end != block.end:
            raise ValueError("`diffusion_cache='block'` needs a block-causal schedule (`block_schedule='absolute'`).")
        return self.cached_length, window_end

    def after_forward(self, block, step):
        self.cache.truncate(block.start)
        self.cached_length = block.start

    def select_rows(self, index):
        self.cache.batch_select_indices(index)


DIFFUSION_CACHES = {"none": DiffusionCacheStrategy, "block": BlockCache}


__all__ = ["BlockKVCache", "DiffusionCacheStrategy", "BlockCache"]
