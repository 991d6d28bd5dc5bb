"""Hub integration: `trust_remote_code` entry points and model tags.

Also, `import llada_hf` makes our classes attributes of the `transformers` module ([`expose_in_transformers`]), as
`transformers serve` looks a model's class up there by its `architectures` name.

A folder saved by our models must load where `llada_hf` was never imported, through
`AutoModel*.from_pretrained(folder, trust_remote_code=True)` (and so `transformers serve --trust-remote-code`).
`save_pretrained` therefore writes an `auto_map` into `config.json` (the released checkpoints' keys and file names)
and, next to it, two small modules that import the installed `llada_hf` and define thin subclasses of its classes.
They are subclasses, not re-exports: transformers marks a class loaded this way for its Auto class and, when that
model is saved again, copies the module that *defines* the class into the new folder. With a subclass that module
is the small file itself, so a remote-code model saves a folder that again loads with `trust_remote_code=True`.
"""

import os
import sys
from dataclasses import dataclass
from types import ModuleType


@dataclass(frozen=True)
class RemoteCodeFiles:
    """The module and class names a family's `auto_map` refers to (those of the released checkpoints)."""

    config_module: str
    config_class: str
    modeling_module: str
    base_model_class: str
    lm_class: str
    tag: str


REMOTE_CODE_FILES = {
    "llada": RemoteCodeFiles(
        "configuration_llada", "LLaDAConfig", "modeling_llada", "LLaDAModel", "LLaDAModelLM", "llada"
    ),
    "llada2_moe": RemoteCodeFiles(
        "configuration_llada2_moe",
        "LLaDA2MoeConfig",
        "modeling_llada2_moe",
        "LLaDA2MoeModel",
        "LLaDA2MoeModelLM",
        "llada2",
    ),
}

# Tags `push_to_hub` and the Trainer's model card put on every model of ours, next to the family's.
MODEL_TAGS = ("llada_hf", "diffusion", "masked-diffusion")

_CONFIG_TEMPLATE = '''"""`trust_remote_code` entry point written by llada_hf: the configuration of the installed `llada_hf` package
(`pip install llada_hf`)."""

import llada_hf


class {config_class}(llada_hf.{config_class}):
    pass
'''

_MODELING_TEMPLATE = '''"""`trust_remote_code` entry point written by llada_hf: the models of the installed `llada_hf` package
(`pip install llada_hf`)."""

import llada_hf

from .{config_module} import {config_class}


class {base_model_class}(llada_hf.{base_model_class}):
    config_class = {config_class}


class {lm_class}(llada_hf.{lm_class}):
    config_class = {config_class}
'''


def model_tags(model_type: str) -> list[str]:
    """The Hub tags of a model of ours."""
    return [*MODEL_TAGS, REMOTE_CODE_FILES[model_type].tag]


def remote_code_auto_map(model_type: str, base_model: bool = False) -> dict[str, str]:
    """The `auto_map` of a saved folder. `AutoModel` maps to the LM, as in the released checkpoints, or to the
    backbone when that is what was saved; the LM also serves `AutoModelForMaskedLM`, as it does in-process."""
    files = REMOTE_CODE_FILES[model_type]
    lm = f"{files.modeling_module}.{files.lm_class}"
    return {
        "AutoConfig": f"{files.config_module}.{files.config_class}",
        "AutoModel": f"{files.modeling_module}.{files.base_model_class}" if base_model else lm,
        "AutoModelForCausalLM": lm,
        "AutoModelForMaskedLM": lm,
    }


def add_remote_code_auto_map(config, base_model: bool = False) -> None:
    """Points `config.auto_map` at our entry points. Keys it already has keep their place (a released checkpoint's
    `auto_map` keeps its keys, now backed by files in the folder); entries for other Auto classes are left alone."""
    auto_map = dict(getattr(config, "auto_map", None) or {})
    auto_map.update(remote_code_auto_map(config.model_type, base_model))
    config.auto_map = auto_map


def write_remote_code_files(model_type: str, save_directory: str | os.PathLike) -> list[str]:
    """Writes the two entry-point modules of `model_type` into `save_directory`; returns their paths."""
    files = REMOTE_CODE_FILES[model_type]
    names = {
        "config_module": files.config_module,
        "config_class": files.config_class,
        "base_model_class": files.base_model_class,
        "lm_class": files.lm_class,
    }
    os.makedirs(save_directory, exist_ok=True)
    paths = []
    for module, template in ((files.config_module, _CONFIG_TEMPLATE), (files.modeling_module, _MODELING_TEMPLATE)):
        path = os.path.join(save_directory, f"{module}.py")
        with open(path, "w", encoding="utf-8") as f:
            f.write(template.format(**names))
        paths.append(path)
    return paths


def expose_in_transformers(classes) -> None:
    """Sets `classes` as attributes of the `transformers` module, under their names (never shadowing a name of
    transformers' own), so that `getattr(transformers, name)` and `from transformers import name` find them.

    A process can hold two `transformers` modules: importing `transformers.processing_utils` executes
    `transformers/__init__.py` a second time, which puts a new lazy module into `sys.modules` while modules imported
    earlier (`transformers serve`'s among them) keep the first. Both get the attributes.
    """
    modules = {id(sys.modules["transformers"]): sys.modules["transformers"]}
    for module in list(sys.modules.values()):
        held = getattr(module, "__dict__", {}).get("transformers")
        if isinstance(held, ModuleType) and held.__name__ == "transformers":
            modules[id(held)] = held
    for module in modules.values():
        known = set(dir(module))
        for cls in classes:
            if cls.__name__ not in known:
                setattr(module, cls.__name__, cls)
