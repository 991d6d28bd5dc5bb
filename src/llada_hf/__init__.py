"""llada_hf: LLaDA 1.x and LLaDA2.0 masked-diffusion models as native transformers models.

Importing the package registers both families with the Auto classes and their released checkpoint formats, so
`AutoModel.from_pretrained("GSAI-ML/LLaDA-8B-Instruct")` works without `trust_remote_code`.
"""

import os

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
)
from transformers.conversion_mapping import register_checkpoint_conversion_mapping

from .configuration_llada import LLaDAConfig
from .configuration_llada2_moe import LLaDA2MoeConfig
from .generation import DiffusionGenerationConfig, DiffusionGenerationMixin
from .integrations.hub import expose_in_transformers
from .integrations.peft import register_peft_target_modules_if_imported
from .modeling_llada import CHECKPOINT_CONVERSION_MAPPING as _LLADA_CONVERSION
from .modeling_llada import LLaDAModel, LLaDAModelLM, LLaDAPreTrainedModel
from .modeling_llada2_moe import CHECKPOINT_CONVERSION_MAPPING as _LLADA2_CONVERSION
from .modeling_llada2_moe import LLaDA2MoeModel, LLaDA2MoeModelLM, LLaDA2MoePreTrainedModel


__version__ = "0.1.0"

# The tiny instruction-following LLaDA shipped with the package (model_cards/bundled-tiny-llada.md).
BUNDLED_MODEL_PATH = os.path.join(os.path.dirname(__file__), "bundled", "tiny-llada-instruct")


def _register() -> None:
    # As in the released `auto_map`, AutoModel returns the model with the LM head (the sampler needs logits).
    for config_class, model_class in ((LLaDAConfig, LLaDAModelLM), (LLaDA2MoeConfig, LLaDA2MoeModelLM)):
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        for auto_class in (AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM):
            auto_class.register(config_class, model_class, exist_ok=True)
    register_checkpoint_conversion_mapping(LLaDAConfig.model_type, _LLADA_CONVERSION, overwrite=True)
    register_checkpoint_conversion_mapping(LLaDA2MoeConfig.model_type, _LLADA2_CONVERSION, overwrite=True)
    register_peft_target_modules_if_imported()
    # `transformers serve` loads a model as `getattr(transformers, config.architectures[0])`.
    expose_in_transformers((LLaDAConfig, LLaDAModel, LLaDAModelLM, LLaDA2MoeConfig, LLaDA2MoeModel, LLaDA2MoeModelLM))


_register()

__all__ = [
    "BUNDLED_MODEL_PATH",
    "DiffusionGenerationConfig",
    "DiffusionGenerationMixin",
    "LLaDA2MoeConfig",
    "LLaDA2MoeModel",
    "LLaDA2MoeModelLM",
    "LLaDA2MoePreTrainedModel",
    "LLaDAConfig",
    "LLaDAModel",
    "LLaDAModelLM",
    "LLaDAPreTrainedModel",
]
