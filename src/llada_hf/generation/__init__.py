"""Masked-diffusion generation: configuration, block schedules, transfer policies, cache strategies and the mixin."""

from .caches import BlockCache, BlockKVCache, DiffusionCacheStrategy, DualCache, PrefixCache, StaticBlockKVCache
from .canvas import Block, DiffusionCanvas, ForwardColumns
from .configuration_diffusion import DiffusionGenerationConfig, LLaDA2GenerationConfig, LLaDAGenerationConfig
from .policies import LLaDA2TransferPolicy, LLaDATransferPolicy, Proposal, TransferPolicy
from .schedules import AbsoluteBlockSchedule, BlockSchedule, PromptBlockSchedule
from .utils import DIFFUSION_FAMILIES, DiffusionFamily, DiffusionGenerationMixin, DiffusionGenerationOutput


__all__ = [
    "AbsoluteBlockSchedule",
    "Block",
    "BlockCache",
    "BlockKVCache",
    "BlockSchedule",
    "DIFFUSION_FAMILIES",
    "DiffusionCacheStrategy",
    "DiffusionCanvas",
    "DiffusionFamily",
    "DiffusionGenerationConfig",
    "DiffusionGenerationMixin",
    "DiffusionGenerationOutput",
    "DualCache",
    "ForwardColumns",
    "LLaDA2GenerationConfig",
    "LLaDA2TransferPolicy",
    "LLaDAGenerationConfig",
    "LLaDATransferPolicy",
    "PrefixCache",
    "PromptBlockSchedule",
    "Proposal",
    "StaticBlockKVCache",
    "TransferPolicy",
]
