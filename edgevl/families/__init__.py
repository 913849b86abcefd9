"""Model families: everything particular to Qwen2-VL or MiniCPM-V lives in one module each, and this registry
maps a family name (as stored in a model folder's manifest) to it, and (format, family) to the engine class.

A new family is one module here (a `Family` subclass: card defaults, prompt wording, preprocessing, engines), one
converter class (converters/), its model cards (models/) and tests. Engines are named by import path, so that
opening a GGUF model never imports ONNX Runtime's engine and listing families imports no backend at all.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from edgevl.errors import ModelError
from edgevl.families.base import EncodedImages, Family, OnnxImages
from edgevl.families.minicpmv import MiniCPMV
from edgevl.families.qwen2vl import Qwen2VL
from edgevl.families.qwen25vl import Qwen25VL

if TYPE_CHECKING:
    from edgevl.engines.base import ModelFolderEngine

FAMILIES: dict[str, Family] = {family.name: family for family in (Qwen2VL(), Qwen25VL(), MiniCPMV())}
#: assumed for a model whose server does not say (the tasks' default wording was written for Qwen2-VL)
DEFAULT_FAMILY = "qwen2vl"
#: (format, family) -> "module:Class" of the engine that runs such a model folder
ENGINES: dict[tuple[str, str], str] = {
    (fmt, family.name): engine for family in FAMILIES.values() for fmt, engine in family.engines.items()
}


def get_family(name: str) -> Family:
    if name not in FAMILIES:
        raise ModelError(f"unknown model family {name!r}; this version of edgevl knows {', '.join(FAMILIES)}")
    return FAMILIES[name]


def wording(family: str, prompt_id: str, default: str) -> str:
    """The family's own wording for a prompt, or the task's default (also for "classic" and unknown families,
    such as a remote server's model)."""
    known = FAMILIES.get(family)
    return known.prompts.get(prompt_id, default) if known else default


def engine_class(fmt: str, family: str) -> type[ModelFolderEngine]:
    """The engine class for a model folder of this format and family, imported now."""
    if (fmt, family) not in ENGINES:
        formats = sorted(f for f, name in ENGINES if name == family)
        known = f"; {family} models run as {', '.join(formats)}" if formats else ""
        raise ModelError(f"this version of edgevl cannot run {family} models in {fmt} format{known}")
    module, _, name = ENGINES[fmt, family].partition(":")
    return getattr(importlib.import_module(module), name)


__all__ = ["DEFAULT_FAMILY", "ENGINES", "EncodedImages", "FAMILIES", "Family", "OnnxImages", "engine_class",
           "get_family", "wording"]
