"""Shared fixtures. The tiny Qwen2-VL checkpoint, its GGUF conversions and the transformers reference are
built once per test session (a few seconds each) - nothing is downloaded."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="session", autouse=True)
def private_user_cache(tmp_path_factory) -> None:
    """edgevl remembers verified model files in the user cache folder: tests use one of their own."""
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("user-cache"))


@pytest.fixture(scope="session")
def qwen2vl_checkpoint(tmp_path_factory) -> Path:
    from edgevl.testing.qwen2vl import build_qwen2vl_checkpoint

    return build_qwen2vl_checkpoint(tmp_path_factory.mktemp("checkpoints") / "qwen2vl-tiny")


@pytest.fixture(scope="session")
def qwen2vl_gguf(qwen2vl_checkpoint, tmp_path_factory):
    """Function (quant, vision_quant) -> converted model folder, each converted once per session."""
    from edgevl.converters import convert

    root = tmp_path_factory.mktemp("gguf")
    folders: dict[tuple[str, str], Path] = {}

    def converted(quant: str = "f32", vision_quant: str | None = None) -> Path:
        vision_quant = vision_quant or ("f32" if quant == "f32" else "f16")
        key = (quant, vision_quant)
        if key not in folders:
            folders[key] = root / f"{quant}-{vision_quant}"
            convert(qwen2vl_checkpoint, folders[key], quant=quant, vision_quant=vision_quant)
        return folders[key]

    return converted


@pytest.fixture(scope="session")
def qwen2vl_onnx(qwen2vl_checkpoint, tmp_path_factory):
    """Function quant ("fp32", "fp16", "int4") -> exported ONNX model folder, each exported once per session."""
    from edgevl.converters import convert

    root = tmp_path_factory.mktemp("onnx")
    folders: dict[str, Path] = {}

    def exported(quant: str = "fp32") -> Path:
        if quant not in folders:
            folders[quant] = root / quant
            convert(qwen2vl_checkpoint, folders[quant], to="onnx", quant=quant)
        return folders[quant]

    return exported


@pytest.fixture(scope="session")
def qwen2vl_reference(qwen2vl_checkpoint):
    from edgevl.testing.reference import Qwen2VLReference

    return Qwen2VLReference(qwen2vl_checkpoint)


@pytest.fixture(scope="session")
def minicpmv_checkpoint(tmp_path_factory):
    """Function version ("2.6", "2.5") -> tiny MiniCPM-V checkpoint folder in the released layout, built once."""
    from edgevl.testing.minicpmv import build_minicpmv_checkpoint

    root = tmp_path_factory.mktemp("minicpmv-checkpoints")
    folders: dict[str, Path] = {}

    def built(version: str) -> Path:
        if version not in folders:
            folders[version] = build_minicpmv_checkpoint(root / version, version)
        return folders[version]

    return built


@pytest.fixture(scope="session")
def minicpmv_reference(minicpmv_checkpoint):
    """Function version -> the transformers-parts reference of that checkpoint, loaded once."""
    from edgevl.testing.minicpmv import MiniCPMVReference

    references = {}

    def loaded(version: str):
        if version not in references:
            references[version] = MiniCPMVReference(minicpmv_checkpoint(version))
        return references[version]

    return loaded


@pytest.fixture(scope="session")
def minicpmv_gguf(minicpmv_checkpoint, tmp_path_factory):
    """Function (version, quant, vision_quant) -> converted model folder, each converted once per session."""
    from edgevl.converters import convert

    root = tmp_path_factory.mktemp("minicpmv-gguf")
    folders: dict[tuple[str, str, str], Path] = {}

    def converted(version: str, quant: str = "f32", vision_quant: str | None = None) -> Path:
        key = (version, quant, vision_quant or ("f32" if quant == "f32" else "f16"))
        if key not in folders:
            folders[key] = root / "-".join(key)
            convert(minicpmv_checkpoint(version), folders[key], quant=quant, vision_quant=key[2])
        return folders[key]

    return converted


def noise_image(width: int, height: int, seed: int = 0) -> Image.Image:
    """A deterministic busy image: every pixel matters, so preprocessing mistakes show in the logits."""
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)
