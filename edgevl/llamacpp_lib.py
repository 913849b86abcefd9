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

from edgevl.errors import BackendUnavailable

INSTALL_HINT = (
    "pip install 'edgevl[gguf]' (CPU), or for an NVIDIA GPU: "
    "CMAKE_ARGS='-DGGML_CUDA=on' pip install llama-cpp-python==0.3.36 --no-binary llama-cpp-python"
)
# enum ggml_log_level: NONE 0, DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5 (continues the previous message)
_GGML_LEVELS = {0: logging.CRITICAL, 1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR}
logger = logging.getLogger("edgevl.llama_cpp")
_state = {"callback": None, "last_level": logging.INFO}


def load_llama_cpp(purpose: str) -> ModuleType:
    """Import `llama_cpp` (with its mtmd bindings) or raise BackendUnavailable saying how to install it."""
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


def _log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    python_level = _state["last_level"] if level == 5 else _GGML_LEVELS.get(level, logging.INFO)
    _state["last_level"] = python_level
    message = text.decode("utf-8", errors="replace").rstrip("\n")
    if message and logger.isEnabledFor(python_level):
        logger.log(python_level, message)
