"""Training masked-diffusion models with the stock `transformers.Trainer`: the loss and the data collators."""

from .collators import (
    DataCollatorForBlockDiffusion,
    DataCollatorForDiffusionPretraining,
    DataCollatorForDiffusionSFT,
    DataCollatorForPackedDiffusion,
    DiffusionDataCollator,
    block_diffusion_attention_mask,
)
from .loss import IGNORE_INDEX, check_diffusion_labels, confidence_loss, masked_diffusion_loss


def __getattr__(name):
    # Imported on first use: it needs transformers' Trainer modules, which `import llada_hf` does not otherwise load.
    if name == "DiffusionLossPartsCallback":
        from .callbacks import DiffusionLossPartsCallback

        return DiffusionLossPartsCallback
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DataCollatorForBlockDiffusion",
    "DataCollatorForDiffusionPretraining",
    "DataCollatorForDiffusionSFT",
    "DataCollatorForPackedDiffusion",
    "DiffusionDataCollator",
    "DiffusionLossPartsCallback",
    "IGNORE_INDEX",
    "block_diffusion_attention_mask",
    "check_diffusion_labels",
    "confidence_loss",
    "masked_diffusion_loss",
]
