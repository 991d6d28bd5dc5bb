"""Block-size schedules for block-diffusion training (LLaDA2.0's autoregressive -> diffusion conversion).

LLaDA2.0 turns an AR model into a diffusion LM by training with a Warmup-Stable-Decay schedule over the block size:
small blocks first (block size 1 is autoregressive training), growing to the whole sequence (full diffusion), a
stable phase there, then back down to the block size used for block-causal sampling (e.g. 32).

```python
>>> schedule = BlockSizeSchedule.warmup_stable_decay(
...     sequence_length=4096, warmup_sizes=(1, 4, 32, 64), steps_per_warmup_stage=1000, stable_steps=20000,
...     decay_sizes=(32,))
>>> scheduled = BlockSizeScheduleCallback(DataCollatorForBlockDiffusion(mask_token_id=..., eos_token_id=...), schedule)
>>> trainer = Trainer(model, args, train_dataset=data, data_collator=scheduled, callbacks=[scheduled])
```
"""

from collections.abc import Callable, Sequence
from typing import Any

from transformers import TrainerCallback


class BlockSizeSchedule:
    """A piecewise-constant block size: `stages` is a list of `(block_size, num_steps)`, in training order.

    The last stage's `num_steps` may be `None` (it lasts until the end); after a finite last stage its block size
    stays. `block_size=None` means the whole sequence (one block per row).
    """

    def __init__(self, stages: Sequence[tuple[int | None, int | None]]):
        if not stages:
            raise ValueError("`stages` must hold at least one `(block_size, num_steps)` pair.")
        for index, (block_size, num_steps) in enumerate(stages):
            if block_size is not None and (not isinstance(block_size, int) or block_size < 1):
                raise ValueError(f"`stages[{index}]` has block size {block_size!r}; expected a positive int or None.")
            last = index == len(stages) - 1
            if not (num_steps is None and last) and (not isinstance(num_steps, int) or num_steps < 1):
                raise ValueError(
                    f"`stages[{index}]` lasts {num_steps!r} steps; expected a positive int (None only for the last)."
                )
        self.stages = [tuple(stage) for stage in stages]

    @classmethod
    def warmup_stable_decay(
        cls,
        sequence_length: int,
        warmup_sizes: Sequence[int] = (1, 4, 32, 64),
        steps_per_warmup_stage: int = 1000,
        stable_steps: int = 10000,
        decay_sizes: Sequence[int] = (32,),
        steps_per_decay_stage: int | None = None,
    ) -> "BlockSizeSchedule":
        """LLaDA2.0's WSD schedule: each of `warmup_sizes` for `steps_per_warmup_stage` steps, the whole sequence for
        `stable_steps`, then each of `decay_sizes` for `steps_per_decay_stage` steps (the last one until the end).

        Warmup sizes not smaller than `sequence_length` are dropped: such a block already is the whole sequence.
        """
        if sequence_length < 1:
            raise ValueError(f"`sequence_length` must be positive, got {sequence_length}.")
        stages = [(size, steps_per_warmup_stage) for size in warmup_sizes if size < sequence_length]
        stages.append((sequence_length, stable_steps))
        for index, size in enumerate(decay_sizes):
            last = index == len(decay_sizes) - 1
            stages.append((min(size, sequence_length), None if last else steps_per_decay_stage))
        return cls(stages)

    def __call__(self, step: int) -> int | None:
        """The block size at optimizer step `step` (0-based)."""
        if step < 0:
            raise ValueError(f"`step` must be non-negative, got {step}.")
        for block_size, num_steps in self.stages:
            if num_steps is None or step < num_steps:
                return block_size
            step -= num_steps
        return self.stages[-1][0]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.stages})"


class BlockSizeScheduleCallback(TrainerCallback):
    """
    Sets `collator.block_size` from `schedule` so that every batch of optimizer step `s` uses `schedule(s)`.

    The Trainer (and accelerate's data loader, which reads one batch ahead) collates batches before the step that
    uses them starts, so a callback that only reacted to `on_step_begin` would lag. This object therefore also wraps
    the collator: pass it both as `data_collator` and in `callbacks`. It counts the batches it collates in the epoch
    (batch `n` belongs to step `epoch_start + n // gradient_accumulation_steps`) and sets the block size right before
    collating each one; the block size of the step that just ended is added to the Trainer's logs (and its log
    history).

    Args:
        collator: a collator with a `block_size` attribute, e.g. [`DataCollatorForBlockDiffusion`].
        schedule: maps an optimizer step to a block size, e.g. a [`BlockSizeSchedule`].
    """

    def __init__(self, collator: Callable[[list[dict]], dict], schedule: Callable[[int], int | None]):
        if not hasattr(collator, "block_size"):
            raise TypeError(f"`collator` ({type(collator).__name__}) has no `block_size` attribute to schedule.")
        self.collator = collator
        self.schedule = schedule
        self._gradient_accumulation_steps = 1
        self._epoch_start_step = 0
        self._epoch_batches = 0

    def __call__(self, features: list[dict]) -> dict[str, Any]:
        step = self._epoch_start_step + self._epoch_batches // self._gradient_accumulation_steps
        self.collator.block_size = self.schedule(step)
        self._epoch_batches += 1
        return self.collator(features)

    def on_train_begin(self, args, state, control, **kwargs):
        if args.dataloader_num_workers > 0:
            raise ValueError(
                "BlockSizeScheduleCallback counts batches in the main process; set `dataloader_num_workers=0` (each "
                "data-loader worker would collate with its own copy of the schedule)."
            )
        self._gradient_accumulation_steps = args.gradient_accumulation_steps

    def on_epoch_begin(self, args, state, control, **kwargs):
        self._epoch_start_step = state.global_step
        self._epoch_batches = 0

    def on_step_end(self, args, state, control, **kwargs):
        if self._epoch_batches == 0:
            raise RuntimeError(
                "BlockSizeScheduleCallback has collated no batch: pass it as the Trainer's `data_collator` too."
            )

    def on_log(self, args, state, control, logs=None, **kwargs):
        block_size = self.schedule(max(state.global_step - 1, 0))  # the step that just ended
        if logs is None or block_size is None:
            return
        logs["block_size"] = block_size  # seen by the reporting callbacks after this one
        if state.log_history:  # the Trainer stored its copy of `logs` just before calling the callbacks
            state.log_history[-1]["block_size"] = block_size


__all__ = ["BlockSizeSchedule", "BlockSizeScheduleCallback"]
