"""The desktop app's command-line options, shared by `edgevl gui` and `edgevl-gui` (no Qt import here, so the
CLI stays fast and works without PySide6)."""

from __future__ import annotations

import argparse
from pathlib import Path

import platformdirs


def default_data_dir() -> Path:
    """Settings and history (the models live in `edgevl.api.models_dir()`)."""
    return platformdirs.user_data_path("edgevl") / "gui"


def add_gui_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--capture", action="store_true",
                        help="capture a screen region at once; with the app already running, in that app "
                             "(bind this to a key for a global shortcut)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help=f"settings and history folder (default: {default_data_dir()})")
