"""Importing llama-cpp-python in one place: a clear error when it is missing, and llama.cpp's log routed to
Python logging (logger "edgevl.llama_cpp"; everything down to DEBUG with EDGEVL_VERBOSE=1).

llama-cpp-python's own log callback maps the levels of an older ggml (it shows every INFO line as a
warning), so edgevl installs its own, with the levels of the ggml.h vendored in 0.3.36.
"""

from __future__ import annotations

import ctypes
import logging
import os
from types import ModuleType
from typing import TypedDict

from edgevl.errors import BackendUnavailable

INSTALL_HINT = ("pip install 'edgevl[gguf]' (CPU), or for an NVIDIA GPU: "
                "pip install 'edgevl[cuda]' && edgevl doctor --fix")
# what a CUDA build of llama-cpp-python links, in load order (cuBLAS needs cuBLASLt)
_CUDA_LIBRARIES = ("libcudart.so.13", "libcublasLt.so.13", "libcublas.so.13")
# enum ggml_log_level: NONE 0, DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5 (continues the previous message)
_GGML_LEVELS = {0: logging.CRITICAL, 1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR}
logger = logging.getLogger("edgevl.llama_cpp")
class _LogState(TypedDict):
    callback: object | None
    last_level: int


_state: _LogState = {"callback": None, "last_level": logging.INFO}


def load_llama_cpp(purpose: str) -> ModuleType:
    """Import `llama_cpp` (with its mtmd bindings) or raise BackendUnavailable saying how to install it."""
    _preload_cuda_wheels()
    try:
        import llama_cpp
        from llama_cpp import mtmd_cpp
    except (ImportError, OSError) as error:
        raise BackendUnavailable(f"{purpose} needs llama-cpp-python ({error}): {INSTALL_HINT}") from None
    if _state["callback"] is None:
        if os.environ.get("EDGEVL_VERBOSE"):
            logger.setLevel(logging.DEBUG)
        callback = llama_cpp.llama_log_callback(_log)
        _state["callback"] = callback  # ctypes callbacks must stay referenced while C can call them
        llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))
        mtmd_cpp.mtmd_helper_log_set(callback, None)
    return llama_cpp


def _preload_cuda_wheels() -> None:
    """A CUDA build made by `edgevl doctor --fix` links the CUDA runtime and cuBLAS of NVIDIA's wheels
    (site-packages/nvidia/cu13/lib), which are not on the loader's path: load them first, so that the build also
    loads in a virtual environment other than the one it was compiled in. Nothing happens for a CPU build; each
    library the loader finds itself (a system CUDA 13) is taken from there, and only the missing ones from the
    wheels - a system CUDA runtime without cuBLAS is common (a driver-only or runtime-only install)."""
    from edgevl.gpu_setup import wheel_toolkit

    if not has_cuda_backend():
        return
    root = wheel_toolkit(need_compiler=False)
    for name in _CUDA_LIBRARIES:
        try:
            ctypes.CDLL(name, mode=ctypes.RTLD_GLOBAL)
        except OSError:
            if root is None or not (root / "lib" / name).exists():
                return  # importing llama_cpp then names the missing library
            ctypes.CDLL(str(root / "lib" / name), mode=ctypes.RTLD_GLOBAL)


def has_cuda_backend() -> bool:
    """Whether the installed llama-cpp-python is a CUDA build (it ships libggml-cuda), seen without loading it:
    where no driver loads, ggml registers no CUDA backend and llama_supports_gpu_offload() says False."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("llama_cpp")
    origin = Path(spec.origin).parent if spec and spec.origin else None
    return origin is not None and any((origin / "lib").glob("libggml-cuda.*"))


def cuda_build_info(llama: ModuleType) -> tuple[list[str], int | None]:
    """The CUDA architectures compiled into this llama.cpp (ggml's "CUDA : ARCHS = 750,900" feature; empty for a
    CPU build) and the number of CUDA devices ggml found (None when that cannot be asked)."""
    info = llama.llama_print_system_info().decode(errors="replace")
    architectures: list[str] = []
    for part in info.split("|"):
        if "ARCHS" in part and "=" in part:
            architectures = [arch.strip() for arch in part.split("=", 1)[1].split(",") if arch.strip()]
    return architectures, _cuda_device_count(llama) if architectures else None


def _cuda_device_count(llama: ModuleType) -> int | None:
    from pathlib import Path

    if llama.__file__ is None:
        return None
    found = sorted((Path(llama.__file__).parent / "lib").glob("libggml.*"))
    try:
        ggml = ctypes.CDLL(str(found[0]))
    except (IndexError, OSError):
        return None
    ggml.ggml_backend_reg_by_name.restype = ctypes.c_void_p
    ggml.ggml_backend_reg_by_name.argtypes = [ctypes.c_char_p]
    ggml.ggml_backend_reg_dev_count.restype = ctypes.c_size_t
    ggml.ggml_backend_reg_dev_count.argtypes = [ctypes.c_void_p]
    registry = ggml.ggml_backend_reg_by_name(b"CUDA")
    return int(ggml.ggml_backend_reg_dev_count(registry)) if registry else 0


def _log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    python_level = _state["last_level"] if level == 5 else _GGML_LEVELS.get(level, logging.INFO)
    _state["last_level"] = python_level
    message = text.decode("utf-8", errors="replace").rstrip("\n")
    if message and logger.isEnabledFor(python_level):
        logger.log(python_level, message)
