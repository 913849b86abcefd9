#!/usr/bin/env bash
# Put edgevl in the application menu of a Linux desktop (current user): the desktop entry and the icon.
# edgevl-gui must be on PATH (pip install 'edgevl[gui]', or the project's .venv/bin added to PATH).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
data="${XDG_DATA_HOME:-$HOME/.local/share}"
install -Dm644 "$here/edgevl.desktop" "$data/applications/edgevl.desktop"
install -Dm644 "$here/../gui/resources/edgevl.svg" "$data/icons/hicolor/scalable/apps/edgevl.svg"
command -v update-desktop-database >/dev/null && update-desktop-database "$data/applications" || true
echo "installed: $data/applications/edgevl.desktop"
