"""Trainer callbacks for masked-diffusion training."""

import torch
from transformers import TrainerCallback
from transformers.utils import ModelOutput


class DiffusionLossPartsCallback(TrainerCallback):
    """Adds the two parts of the confidence-aware parallel (CAP) loss to the stock `Trainer`'s logs.

    With `model.config.confidence_loss_weight` λ > 0 the models' `loss` is `diffusion_loss + λ * confidence_loss`
    (see `llada_hf.training.loss`); the Trainer only logs `loss`. This callback watches the model's training
    forwards and logs, next to `loss`, the mean of each part over the micro-batches since the last log, which is how
    the Trainer averages `loss` itself (so `loss` = `diffusion_loss` + λ * `confidence_loss` up to rounding, also
    under gradient accumulation). Across processes the means are taken over every process's micro-batches.
    Evaluation forwards are not counted. Without CAP (λ = 0) the forward computes no parts and nothing is added.

    ```python
    >>> from transformers import Trainer
    >>> from llada_hf.training import DiffusionLossPartsCallback

    >>> model.config.confidence_loss_weight = 0.5
    >>> trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator,
    ...                   callbacks=[DiffusionLossPartsCallback()])
    >>> trainer.train()  # logs {'loss': ..., 'diffusion_loss': ..., 'confidence_loss': ..., ...}
    ```

    Callbacks given to the Trainer run after its reporting integrations (TensorBoard, W&B, ...), which therefore log
    before the parts are added; the parts reach `trainer.state.log_history` and the console. For the integrations to
    report them too, put the callback first with `DiffusionLossPartsCallback.add_to(trainer)` instead.
    """

    parts = ("diffusion_loss", "confidence_loss")

    def __init__(self):
        self._handle = None
        self._reset()

    @classmethod
    def add_to(cls, trainer) -> "DiffusionLossPartsCallback":
        """Makes a callback and puts it before every other callback of `trainer`, so reporting integrations log the
        parts as well. Returns the callback."""
        callback = cls()
        trainer.callback_handler.callbacks.insert(0, callback)
        return callback

    def _reset(self):
        self._sums = dict.fromkeys(self.parts, 0.0)
        self._count = 0

    def _record(self, module, args, output):
        if not module.training or not isinstance(output, ModelOutput):
            return
        values = [output.get(part) for part in self.parts]
        if any(value is None for value in values):
            return
        for part, value in zip(self.parts, values):
            self._sums[part] = self._sums[part] + value.detach().float()
        self._count += 1

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if self._handle is not None:
            self._handle.remove()
        self._reset()
        self._handle = model.register_forward_hook(self._record)

    def on_train_end(self, args, state, control, **kwargs):
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None or "loss" not in logs:  # only the training logs
            return
        totals = torch.tensor(
            [float(self._sums[part]) for part in self.parts] + [self._count], dtype=torch.float64, device=args.device
        )
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(totals)
        self._reset()
        count = float(totals[-1])
        if count == 0:
            return
        for part, total in zip(self.parts, totals[:-1].tolist()):
            logs[part] = total / count
        # The Trainer appended its entry of `logs` to the history before calling the callbacks
        if state.log_history and state.log_history[-1].get("loss") == logs["loss"]:
            state.log_history[-1].update({part: logs[part] for part in self.parts})
