"""Cache strategies: which canvas columns each denoising step recomputes, and what it reuses.

The sampler loop asks its strategy, before every forward pass, for the columns to compute
([`DiffusionCacheStrategy.forward_columns`]) and the `Cache` to hand to the model, and tells it afterwards
([`DiffusionCacheStrategy.after_forward`]). The model's attention calls `cache.update(keys, values, layer_idx)` and
attends over what that returns, so a `Cache` subclass decides which keys/values are reused.

- [`DiffusionCacheStrategy`] itself recomputes the whole visible window every step (the official samplers).
- [`BlockCache`] is exact for block-causal schedules (LLaDA2.0): committed blocks never see later ones, so their keys
  and values are computed once, and each step computes only the active block (plus the block just committed). With
  `cache_implementation="static"` its keys/values live in preallocated canvas-wide buffers ([`StaticBlockKVCache`])
  and every step after the first has one of two fixed shapes, which `torch.compile` / CUDA graphs can capture.
- [`PrefixCache`] and [`DualCache`] are Fast-dLLM's approximate caches for bidirectional models (LLaDA 1.x): the first
  step of every block recomputes the whole canvas; the other steps of the block reuse the keys/values of the columns
  before the block (prefix), or before and after it (dual), as they were at that refresh, although the tokens they
  attend to have changed since. With `cache_implementation="static"` the dual cache's buffers are preallocated too,
  and its two step shapes (the refresh, a block) are fixed.
"""

import torch
from transformers.cache_utils import Cache, DynamicCache, StaticLayer

from .canvas import Block, ForwardColumns


class BlockKVCache(DynamicCache):
    """A [`DynamicCache`] that can be cut back to a committed length, or overwrite a span in place.

    By default `update` appends the new keys/values (as [`DynamicCache`]). After [`BlockKVCache.overwrite_from`] it
    writes them over the cached columns starting there and returns the whole cache: the dual cache's active block.
    """

    overwrite_start: int | None = None

    def truncate(self, length: int) -> None:
        """Drops every cached position from `length` on."""
        excess = self.get_seq_length() - length
        if excess > 0:
            self.crop(-excess)

    def overwrite_from(self, start: int | None) -> None:
        """Makes later `update`s overwrite the columns from `start` on (`None`: append again)."""
        self.overwrite_start = start

    def reset(self) -> None:
        """Empties the cache (and goes back to appending)."""
        self.truncate(0)
        self.overwrite_start = None

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        if self.overwrite_start is None:
            return super().update(key_states, value_states, layer_idx, *args, **kwargs)
        layer = self.layers[layer_idx]
        end = self.overwrite_start + key_states.shape[-2]
        layer.keys[..., self.overwrite_start : end, :] = key_states
        layer.values[..., self.overwrite_start : end, :] = value_states
        return layer.keys, layer.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keeps the batch rows `indices`, also in layers cut back to no columns (which `DynamicLayer` leaves as they
        are, so that their next update would join a smaller batch to the old one)."""
        for layer in self.layers:
            if layer.is_initialized:
                layer.keys = layer.keys[indices]
                layer.values = layer.values[indices]

    def get_mask_sizes(self, query_length: int, layer_idx: int) -> tuple[int, int]:
        if self.overwrite_start is None:
            return super().get_mask_sizes(query_length, layer_idx)
        return self.get_seq_length(layer_idx), 0


class StaticBlockLayer(StaticLayer):
    """A [`StaticLayer`] whose batch rows can be dropped (finished rows leave the batch)."""

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.is_initialized:
            self.keys = self.keys[indices]
            self.values = self.values[indices]
            self.batch_size = self.keys.shape[0]
            torch._dynamo.mark_static_address(self.keys)
            torch._dynamo.mark_static_address(self.values)


class StaticBlockKVCache(Cache):
    """Preallocated keys/values for `width` canvas columns: `update` writes a forward's columns at the write position
    (in place, at positions held in a tensor) and returns the whole buffers, so shapes do not change from step to step.
    Columns not written yet hold zeros; the block-causal mask never lets a query see them, and the dual cache writes
    every column on its refresh step."""

    def __init__(self, width: int, num_layers: int):
        super().__init__(layers=[StaticBlockLayer(width) for _ in range(num_layers)])

    def truncate(self, length: int) -> None:
        """Makes the next `update` write from column `length` on (in place, without a device sync); the columns after
        it are overwritten by later updates."""
        for layer in self.layers:
            layer.cumulative_length.fill_(length)

    def reset(self) -> None:
        """Makes the next `update` write from column 0."""
        self.truncate(0)


def new_kv_cache(static_width: int | None, num_layers: int | None) -> Cache:
    """A [`BlockKVCache`], or with `static_width` a [`StaticBlockKVCache`] of that many columns."""
    if static_width is None:
        return BlockKVCache()
    return StaticBlockKVCache(static_width, num_layers)


class DiffusionCacheStrategy:
    """No cache: every step recomputes the canvas up to the schedule's window end. Exact."""

    name = "none"
    exact = True
    schedules = ("prompt", "absolute")  # the block schedules it works with
    cache: Cache | None = None

    def forward_columns(self, block: Block, step: int, window_end: int) -> ForwardColumns:
        """The columns step `step` of `block` computes (`window_end`: the end of what the schedule lets it see)."""
        return ForwardColumns(0, window_end, window_end)

    def after_forward(self, block: Block, step: int) -> None:
        """Called after each forward pass of `block`."""

    def has_static_shapes(self, columns: ForwardColumns) -> bool:
        """Whether a forward over `columns` has fixed shapes (a compiled forward may run it)."""
        return False

    def select_rows(self, index: torch.LongTensor) -> None:
        """Keeps only the batch rows `index` of the forward batch (rows that finished are dropped)."""
        if self.cache is not None:
            self.cache.batch_select_indices(index)


class BlockCache(DiffusionCacheStrategy):
    """Exact KV cache for block-causal attention.

    The cache always holds the keys/values of the columns before the active block, computed from their final tokens.
    A step computes the columns from the end of the cache to the end of the active block: on the first step of a block
    that includes the block committed just before (its tokens changed during its last step), afterwards only the
    active block. After the forward, the cache is cut back to the start of the active block, whose tokens are not
    final yet.

    Args:
        static_width (`int`, *optional*): preallocate keys/values for this many canvas columns
            ([`StaticBlockKVCache`]); every step then attends over all of them (the mask hides the ones after the
            block), and every step but the first has `2 * block_length` or `block_length` queries.
        num_layers (`int`, *optional*): the model's layer count, with `static_width`.
    """

    name = "block"
    schedules = ("absolute",)

    def __init__(self, static_width: int | None = None, num_layers: int | None = None):
        self.static_width = static_width
        self.cache = new_kv_cache(static_width, num_layers)
        self.cached_length = 0

    def forward_columns(self, block, step, window_end):
        return ForwardColumns(self.cached_length, window_end, self.static_width or window_end)

    def has_static_shapes(self, columns: ForwardColumns) -> bool:
        """Whether a forward over `columns` has one of the fixed step shapes (not the prompt's first forward)."""
        return self.static_width is not None and columns.query_start > 0

    def after_forward(self, block, step):
        self.cache.truncate(block.start)
        self.cached_length = block.start


class RefreshedBlockCache(DiffusionCacheStrategy):
    """Fast-dLLM's approximate caches: the first step of every block computes the whole canvas and keeps keys/values
    that the block's later steps reuse even though the canvas has changed since."""

    exact = False
    schedules = ("prompt",)

    def __init__(self):
        self.cache = BlockKVCache()

    def forward_columns(self, block, step, window_end):
        if step == 0:
            self.cache.reset()
            return ForwardColumns(0, window_end, window_end)
        return self.cached_step_columns(block, window_end)

    def cached_step_columns(self, block: Block, window_end: int) -> ForwardColumns:
        """The columns a later step of the block computes."""
        raise NotImplementedError


class PrefixCache(RefreshedBlockCache):
    """Fast-dLLM's prefix cache (approximate): keeps the keys/values of the columns before the block; the block's
    other steps compute the block and everything after it, attending to that stored prefix."""

    name = "prefix"

    def cached_step_columns(self, block, window_end):
        return ForwardColumns(block.start, window_end, window_end)

    def after_forward(self, block, step):
        self.cache.truncate(block.start)


class DualCache(RefreshedBlockCache):
    """Fast-dLLM's dual cache (approximate): keeps every column's keys/values; the block's other steps compute the
    block alone, write its fresh keys/values over the stored ones in place, and attend to the stored prefix and
    suffix.

    Args:
        static_width (`int`, *optional*): preallocate keys/values for this many canvas columns
            ([`StaticBlockKVCache`], written at positions held in a tensor). Every step then has one of two fixed
            shapes (the refresh: the whole canvas; the others: one block, keys over the whole canvas), which
            `torch.compile` / CUDA graphs can capture. Tokens are those of the dynamic dual cache.
        num_layers (`int`, *optional*): the model's layer count, with `static_width`.
    """

    name = "dual"

    def __init__(self, static_width: int | None = None, num_layers: int | None = None):
        self.static_width = static_width
        self.cache = new_kv_cache(static_width, num_layers)

    def cached_step_columns(self, block, window_end):
        if self.static_width is not None:
            self.cache.truncate(block.start)  # the step writes the block's keys/values over the stored ones
        return ForwardColumns(block.start, block.end, window_end)

    def has_static_shapes(self, columns: ForwardColumns) -> bool:
        """Every step once the buffers exist: the first refresh allocates them, eagerly (a compiled region could not
        mark them as static addresses for CUDA graphs)."""
        return self.static_width is not None and self.cache.is_initialized

    def after_forward(self, block, step):
        if step == 0 and self.static_width is None:
            self.cache.overwrite_from(block.start)


DIFFUSION_CACHES = {
    strategy.name: strategy for strategy in (DiffusionCacheStrategy, BlockCache, PrefixCache, DualCache)
}


__all__ = [
    "BlockKVCache",
    "StaticBlockKVCache",
    "DiffusionCacheStrategy",
    "BlockCache",
    "DualCache",
    "ForwardColumns",
    "PrefixCache",
]
