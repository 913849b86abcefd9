"""What every model family's converter provides: the two GGUF files (language model and vision projector)
described as metadata + a list of planned tensors. The writing, quantizing and packaging is shared
(converters/__init__.py); a family only says what goes into the files."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable

import gguf

from edgevl.converters.checkpoint import Checkpoint, LazyTensor
from edgevl.converters.onnx_files import Int4Options
from edgevl.converters.gguf_files import PlannedTensor, Quant
from edgevl.errors import CheckpointError
from edgevl.model_cards import ModelCard, card_for_config, family_card


@dataclass(frozen=True)
class GGUFPlan:
    """Everything needed to write one GGUF file."""

    arch: str
    add_metadata: Callable[[gguf.GGUFWriter], None]
    tensors: list[PlannedTensor]


class Converter(abc.ABC):
    #: config.json `architectures` values this converter handles
    architectures: tuple[str, ...] = ()
    family: str = ""

    def __init__(self, checkpoint: Checkpoint) -> None:
        self.checkpoint = checkpoint
        #: the checkpoint's tensors under the family's canonical (released) names
        self.tensors: dict[str, LazyTensor] = {self.canonical_name(name): tensor
                                               for name, tensor in checkpoint.tensors.items()}
        self.card: ModelCard | None = card_for_config(self.family, checkpoint.text_config())

    @staticmethod
    def canonical_name(name: str) -> str:
        """Hook: rename tensors saved in another layout to the released one."""
        return name

    @property
    def settings_card(self) -> ModelCard:
        """The matching released model's card, or the family defaults for other sizes."""
        return self.card or family_card(self.family)

    def prompt_settings(self) -> dict[str, str]:
        """How to prompt the converted model (chat template family, default system prompt); kept in the manifest."""
        settings = self.settings_card.settings
        return {"chat_template": settings["chat_template"], "system_prompt": settings.get("system_prompt", "")}

    @property
    def model_name(self) -> str:
        return self.card.name if self.card else self.checkpoint.folder.name

    @abc.abstractmethod
    def text_plan(self, quant: Quant) -> GGUFPlan:
        """The language model GGUF at a directly written quant (f32/f16/bf16/q8_0)."""

    @abc.abstractmethod
    def vision_plan(self, quant: Quant) -> GGUFPlan:
        """The vision projector (mmproj) GGUF."""

    def write_onnx(self, folder: Path, quant: str, int4: Int4Options, progress) -> dict[str, Path]:
        """Export the ONNX graphs into `folder`; returns {role: file}, reporting to a converters.Progress."""
        raise CheckpointError(f"ONNX export of {self.family} models is not available yet; use --to gguf")

    def source_dtype(self) -> str:
        """The checkpoint's weight precision (safetensors dtype of its largest tensor)."""
        largest = max(self.tensors.values(), key=lambda tensor: tensor.nbytes)
        return largest.dtype

    def require_decoder(self, prefix: str, layers: int) -> None:
        """A Llama-style decoder (Qwen2, Llama) under `prefix` ("model." or "llm.model."): every tensor present."""
        parts = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
                 "mlp.up_proj", "mlp.down_proj", "input_layernorm", "post_attention_layernorm")
        self.require_tensors([f"{prefix}embed_tokens.weight", f"{prefix}norm.weight"] + [
            f"{prefix}layers.{i}.{part}.weight" for i in range(layers) for part in parts])

    def require_tensors(self, names: list[str]) -> None:
        missing = [name for name in names if name not in self.tensors]
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise CheckpointError(f"{self.checkpoint.folder}: tensors missing from the checkpoint: {shown}")
