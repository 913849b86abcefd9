"""Shared fixtures. The tiny Qwen2-VL checkpoint, its GGUF conversions and the transformers reference are
built once per test session (a few seconds each) - nothing is downloaded."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

if importlib.util.find_spec("PySide6") is None:
    # the desktop app's tests (`-m gui`) need the gui extra; a base install leaves them out of collection
    collect_ignore_glob = ["test_gui_*.py"]

#: fixtures that build or convert a tiny checkpoint (seconds to minutes): a test using one must be marked slow
CHECKPOINT_FIXTURES = frozenset({"qwen2vl_checkpoint", "qwen2vl_gguf", "qwen2vl_onnx", "qwen2vl_reference",
                                 "minicpmv_checkpoint", "minicpmv_reference", "minicpmv_gguf", "minicpmv_onnx",
                                 "qwen25vl_checkpoint", "qwen25vl_gguf", "qwen25vl_onnx", "qwen25vl_reference"})


def pytest_collection_modifyitems(config, items) -> None:
    """Keep the fast lane (`-m "not slow and not gui"`) fast: refuse a checkpoint-building test without the mark."""
    unmarked = [item.nodeid for item in items
                if CHECKPOINT_FIXTURES & set(getattr(item, "fixturenames", ())) and not item.get_closest_marker("slow")]
    if unmarked:
        raise pytest.UsageError(f"mark these tests @pytest.mark.slow (they build or convert a checkpoint): "
                                f"{', '.join(unmarked)}")


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
    return gguf_conversions(qwen2vl_checkpoint, tmp_path_factory.mktemp("gguf"))


def gguf_conversions(checkpoint: Path, root: Path):
    """Function (quant, vision_quant) -> the checkpoint converted to GGUF under root, each once."""
    from edgevl.converters import convert

    folders: dict[tuple[str, str], Path] = {}

    def converted(quant: str = "f32", vision_quant: str | None = None) -> Path:
        vision_quant = vision_quant or ("f32" if quant == "f32" else "f16")
        key = (quant, vision_quant)
        if key not in folders:
            folders[key] = root / f"{quant}-{vision_quant}"
            convert(checkpoint, folders[key], quant=quant, vision_quant=vision_quant)
        return folders[key]

    return converted


@pytest.fixture(scope="session")
def qwen2vl_onnx(qwen2vl_checkpoint, tmp_path_factory):
    """Function quant ("fp32", "fp16", "int4") -> exported ONNX model folder, each exported once per session."""
    return onnx_exports(qwen2vl_checkpoint, tmp_path_factory.mktemp("onnx"))


def onnx_exports(checkpoint: Path, root: Path):
    """Function quant -> the checkpoint exported to ONNX under root, each once."""
    from edgevl.converters import convert

    folders: dict[str, Path] = {}

    def exported(quant: str = "fp32") -> Path:
        if quant not in folders:
            folders[quant] = root / quant
            convert(checkpoint, folders[quant], to="onnx", quant=quant)
        return folders[quant]

    return exported


@pytest.fixture(scope="session")
def qwen2vl_reference(qwen2vl_checkpoint):
    from edgevl.testing.reference import Qwen2VLReference

    return Qwen2VLReference(qwen2vl_checkpoint)


# ---- Qwen2.5-VL: the tiny checkpoint, its GGUF and ONNX conversions and the transformers reference -----------

@pytest.fixture(scope="session")
def qwen25vl_checkpoint(tmp_path_factory) -> Path:
    from edgevl.testing.qwen25vl import build_qwen25vl_checkpoint

    return build_qwen25vl_checkpoint(tmp_path_factory.mktemp("checkpoints") / "qwen25vl-tiny")


@pytest.fixture(scope="session")
def qwen25vl_gguf(qwen25vl_checkpoint, tmp_path_factory):
    return gguf_conversions(qwen25vl_checkpoint, tmp_path_factory.mktemp("gguf-qwen25vl"))


@pytest.fixture(scope="session")
def qwen25vl_onnx(qwen25vl_checkpoint, tmp_path_factory):
    return onnx_exports(qwen25vl_checkpoint, tmp_path_factory.mktemp("onnx-qwen25vl"))


@pytest.fixture(scope="session")
def qwen25vl_reference(qwen25vl_checkpoint):
    from edgevl.testing.reference import Qwen25VLReference

    return Qwen25VLReference(qwen25vl_checkpoint)


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


@pytest.fixture(scope="session")
def minicpmv_onnx(minicpmv_checkpoint, tmp_path_factory):
    """Function (version, quant) -> exported ONNX model folder ("fp32", "fp16", "int4"), each exported once."""
    exports = {}

    def exported(version: str, quant: str = "fp32") -> Path:
        if version not in exports:
            exports[version] = onnx_exports(minicpmv_checkpoint(version), tmp_path_factory.mktemp("minicpmv-onnx"))
        return exports[version](quant)

    return exported


def noise_image(width: int, height: int, seed: int = 0) -> Image.Image:
    """A deterministic busy image: every pixel matters, so preprocessing mistakes show in the logits."""
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def require_eval_extra() -> None:
    """Skip the calling test module where the eval extra (`pip install 'edgevl[eval]'`) is not installed."""
    for module in ("rapidfuzz", "lxml", "table_recognition_metric", "fontTools"):
        pytest.importorskip(module)


# ---- GGUFs made by llama.cpp's own converter (edgevl import, edgevl pull) ---------------------------------------

LLAMA_CPP_PYTHON = "llama_cpp_python-0.3.36"
SDIST_HINT = ("pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36 -d DIR, then set "
              f"EDGEVL_LLAMA_CPP_SDIST=DIR/{LLAMA_CPP_PYTHON}.tar.gz")


@pytest.fixture(scope="session")
def llama_cpp_converter(tmp_path_factory) -> Path:
    """llama.cpp's convert_hf_to_gguf.py (with its gguf-py and conversion package) from the pinned sdist,
    extracted once into edgevl's cache folder. Nothing is downloaded here: the sdist must be on this machine."""
    import platformdirs

    pytest.importorskip("sentencepiece", reason="llama.cpp's converter imports sentencepiece")
    root = platformdirs.user_cache_path("edgevl") / "llama.cpp-converter" / LLAMA_CPP_PYTHON
    script = root / "convert_hf_to_gguf.py"
    if script.is_file():
        return script
    sdist = os.environ.get("EDGEVL_LLAMA_CPP_SDIST")
    if not sdist or not Path(sdist).is_file():
        pytest.skip(f"llama.cpp's converter is needed from the llama-cpp-python sdist: {SDIST_HINT}")
    prefix = f"{LLAMA_CPP_PYTHON}/vendor/llama.cpp/"
    partial = root.with_name(root.name + ".partial")
    with tarfile.open(sdist) as archive:
        members = [m for m in archive.getmembers() if m.isfile() and m.name.startswith(prefix) and (
            m.name == prefix + "convert_hf_to_gguf.py" or m.name.startswith((prefix + "gguf-py/",
                                                                             prefix + "conversion/")))]
        for member in members:
            member.name = member.name.removeprefix(prefix)
        archive.extractall(partial, members=members, filter="data")
    partial.rename(root)
    return script


@pytest.fixture(scope="session")
def llama_cpp_conversions(llama_cpp_converter, tmp_path_factory):
    """Function checkpoint -> (text, mmproj) GGUFs, both f32, as llama.cpp's converter writes them (each once)."""
    made: dict[Path, tuple[Path, Path]] = {}

    def converted(checkpoint: Path) -> tuple[Path, Path]:
        if checkpoint not in made:
            folder = tmp_path_factory.mktemp("llama-cpp-made")
            text, mmproj = folder / "Tiny-F32.gguf", folder / "mmproj-Tiny-F32.gguf"
            for extra, output in (([], text), (["--mmproj"], mmproj)):
                subprocess.run([sys.executable, str(llama_cpp_converter), str(checkpoint), "--outtype", "f32",
                                "--outfile", str(output), *extra], check=True, capture_output=True)
            made[checkpoint] = text, mmproj
        return made[checkpoint]

    return converted


@pytest.fixture(scope="session")
def llama_cpp_files(llama_cpp_conversions, qwen2vl_checkpoint) -> tuple[Path, Path]:
    """(text, mmproj) GGUFs of the tiny Qwen2-VL checkpoint, both f32, as llama.cpp's converter writes them."""
    return llama_cpp_conversions(qwen2vl_checkpoint)
