"""Training masked-diffusion models with the stock `transformers.Trainer`: the loss and the data collators."""

from .collators import (
    DataCollatorForBlockDiffusion,
    DataCollatorForDiffusionPretraining,
    DataCollatorForDiffusionSFT,
    DataCollatorForPackedDiffusion,
    DiffusionDataCollator,
    block_diffusion_attention_mask,
)
from .loss import IGNORE_INDEX, check_diffusion_labels, masked_diffusion_loss


__all__ = [
    "DataCollatorForBlockDiffusion",
    "DataCollatorForDiffusionPretraining",
    "DataCollatorForDiffusionSFT",
    "DataCollatorForPackedDiffusion",
    "DiffusionDataCollator",
    "IGNORE_INDEX",
    "block_diffusion_attention_mask",
    "check_diffusion_labels",
    "masked_diffusion_loss",
]
