"""Facts about the machine that several parts need (threads, memory)."""

from __future__ import annotations

import os
from pathlib import Path

import psutil


def default_threads() -> int:
    """Physical cores: more threads than cores makes llama.cpp and ONNX Runtime slower, not faster."""
    return max(1, psutil.cpu_count(logical=False) or os.cpu_count() or 1)


def rss_bytes() -> int:
    """Resident memory of this process."""
    return psutil.Process().memory_info().rss


def nearest_existing(path: Path) -> Path:
    """The path, or its nearest existing parent: where a folder not yet made will be, to ask its disk for room."""
    path = path.expanduser().absolute()
    while not path.exists():
        path = path.parent
    return path
