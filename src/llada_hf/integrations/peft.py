"""PEFT support: default adapter targets for our model types.

PEFT picks the modules an adapter wraps from a per-`model_type` table when the config names none
(`LoraConfig()` without `target_modules`), and raises for a type it does not know. `register_peft_target_modules`
adds `llada` and `llada2_moe` to the tables of the LoRA family of methods, with the attention projections, as PEFT
does for Llama and Falcon: LLaDA's query and value projections, and LLaDA2.0's fused query-key-value projection.
To adapt every linear layer instead, pass `target_modules="all-linear"`.

Importing PEFT takes over a second (it imports bitsandbytes, among others), so `import llada_hf` does not: the
tables are filled when PEFT is already imported, at `import llada_hf` or when one of our models is created
([`register_peft_target_modules_if_imported`]). Import PEFT before creating the model (as scripts do), or pass
`target_modules` explicitly.
"""

import sys


PEFT_TARGET_MODULES = {
    "llada": ["q_proj", "v_proj"],
    "llada2_moe": ["query_key_value"],
}

# PEFT's tables for the methods whose default targets are LoRA's (each is a separate dict in `peft.utils.constants`).
_LORA_LIKE_METHODS = ("LORA", "ADALORA", "LOHA", "LOKR", "OFT", "BOFT", "VERA", "RANDLORA", "HRA", "MISS")


def register_peft_target_modules() -> None:
    """Makes `LoraConfig()` (and the other LoRA-like PEFT configs) without `target_modules` work on our models."""
    from peft.utils import constants

    for method in _LORA_LIKE_METHODS:
        table = getattr(constants, f"TRANSFORMERS_MODELS_TO_{method}_TARGET_MODULES_MAPPING", None)
        if table is not None:
            for model_type, modules in PEFT_TARGET_MODULES.items():
                table.setdefault(model_type, list(modules))


def register_peft_target_modules_if_imported() -> None:
    """[`register_peft_target_modules`], if PEFT has been imported (never imports it)."""
    if "peft.utils.constants" in sys.modules:
        register_peft_target_modules()
