"""Hugging Face checkpoint folder -> edgevl model folder.

One converter class per model family (text + vision parts) describes the files; this module picks the class
for a checkpoint, writes the files into a staging folder, runs llama.cpp's quantizer where needed, adds the
manifest and renames the folder into place.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Protocol

import edgevl
from edgevl.converters.base import Converter, GGUFPlan
from edgevl.converters.checkpoint import Checkpoint
from edgevl.converters.disk_space import estimate, require_room
from edgevl.converters.gguf_files import (
    QUANTS, VISION_QUANTS, Quant, intermediate_quant, parse_quant, quantize_with_llama_cpp, write_gguf,
)
from edgevl.converters.onnx_files import ONNX_QUANTS, Int4Options
from edgevl.converters.output import check_destination, staged_folder
from edgevl.converters.minicpmv import MiniCPMVConverter
from edgevl.converters.qwen2vl import Qwen2VLConverter
from edgevl.converters.qwen25vl import Qwen25VLConverter
from edgevl.errors import CheckpointError, EdgevlError
from edgevl.manifest import Manifest, file_entry, write_manifest

CONVERTERS: tuple[type[Converter], ...] = (Qwen2VLConverter, Qwen25VLConverter, MiniCPMVConverter)
FORMATS = ("gguf", "onnx")


class Progress(Protocol):
    """What a converter reports; the CLI shows it as a progress bar, the GUI as a progress dialog."""

    def step(self, description: str, total: int | None) -> None:
        """A new step begins; `total` units (tensors), or None when it cannot be counted."""

    def advance(self, amount: int = 1) -> None:
        """`amount` more units of the current step are done. May raise to cancel the conversion."""


class SilentProgress:
    def step(self, description: str, total: int | None) -> None:
        pass

    def advance(self, amount: int = 1) -> None:
        pass


SILENT = SilentProgress()


def open_converter(checkpoint_dir: str | Path) -> Converter:
    checkpoint = Checkpoint(checkpoint_dir)
    return converter_class(checkpoint.architecture, checkpoint.folder)(checkpoint)


def converter_class(architecture: str, where: str | Path) -> type[Converter]:
    """The converter for a config.json `architectures` value; a clear error naming `where` for others."""
    for converter in CONVERTERS:
        if architecture in converter.architectures:
            return converter
    supported = ", ".join(arch for converter in CONVERTERS for arch in converter.architectures)
    raise CheckpointError(f"{where}: architecture {architecture!r} is not supported; edgevl converts: {supported}")


def convert(
    checkpoint_dir: str | Path,
    output: str | Path,
    *,
    to: str = "gguf",
    quant: str | None = None,
    vision_quant: str = "f16",
    overwrite: bool = False,
    threads: int = 0,
    int4: Int4Options = Int4Options(),
    progress: Progress = SILENT,
) -> Manifest:
    """Convert a checkpoint folder; returns the manifest of the finished model folder at `output`."""
    if to not in FORMATS:
        raise EdgevlError(f"unknown output format {to!r}; choose one of: {', '.join(FORMATS)}")
    converter = open_converter(checkpoint_dir)
    if to == "gguf":
        text_quant = parse_quant(quant or converter.settings_card.recommended_quant).name
        vision = parse_quant(vision_quant, VISION_QUANTS).name
    else:
        text_quant = _parse_onnx_quant(quant or "int4")
        vision = "fp32" if text_quant == "fp32" else "fp16"
    # refused up front, not after minutes of work: an existing output folder, then a disk without room
    check_destination(Path(output), overwrite)
    require_room(Path(output), estimate(converter, to, text_quant, vision, int4))

    with staged_folder(Path(output), overwrite) as staging:
        if to == "gguf":
            files = _write_gguf_files(converter, staging, QUANTS[text_quant], QUANTS[vision], threads, progress)
        else:
            files = converter.write_onnx(staging, text_quant, int4, progress)
        prompt_settings = converter.prompt_settings()
        manifest = Manifest(
            format=to,
            family=converter.family,
            quant=text_quant,
            vision_quant=vision,
            card=converter.card.id if converter.card else None,
            chat_template=prompt_settings["chat_template"],
            system_prompt=prompt_settings["system_prompt"],
            files={role: file_entry(path) for role, path in files.items()},
            source={
                "path": str(converter.checkpoint.folder.absolute()),
                "architecture": converter.checkpoint.architecture,
                "dtype": converter.source_dtype(),
            },
            edgevl_version=edgevl.__version__,
        )
        write_manifest(staging, manifest)
    return manifest


def _write_gguf_files(converter: Converter, staging: Path, text_quant: Quant, vision: Quant, threads: int,
                      progress: Progress) -> dict[str, Path]:
    slug = converter.card.id if converter.card else _slug(converter.checkpoint.folder.name)
    mmproj = staging / f"mmproj-{slug}-{vision.label}.gguf"
    _write(converter.vision_plan(vision), mmproj, "vision projector", progress)
    text = staging / f"{slug}-{text_quant.label}.gguf"
    _write_text_model(converter, text_quant, text, threads, progress)
    return {"text": text, "mmproj": mmproj}


def _parse_onnx_quant(name: str) -> str:
    if name.lower() not in ONNX_QUANTS:
        raise EdgevlError(f"unknown ONNX quant {name!r}; choose one of: {', '.join(ONNX_QUANTS)}")
    return name.lower()


def _write_text_model(converter: Converter, quant: Quant, path: Path, threads: int, progress: Progress) -> None:
    if quant.direct is not None:
        _write(converter.text_plan(quant), path, "language model", progress)
        return
    # K-quants: a lossless intermediate in the checkpoint's own precision, then llama.cpp's quantizer
    intermediate = intermediate_quant(converter.source_dtype())
    staging_file = path.with_name(f"intermediate-{intermediate.label}.gguf")
    _write(converter.text_plan(intermediate), staging_file, "language model", progress)
    progress.step(f"quantizing to {quant.label} with llama.cpp", None)
    quantize_with_llama_cpp(staging_file, path, quant, threads)
    staging_file.unlink()


def _write(plan: GGUFPlan, path: Path, what: str, progress: Progress) -> None:
    progress.step(f"writing {what} ({path.name})", len(plan.tensors))
    write_gguf(path, plan.arch, plan.add_metadata, plan.tensors, on_tensor=lambda tensor: progress.advance())


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-") or "model"
