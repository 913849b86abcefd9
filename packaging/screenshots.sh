#!/usr/bin/env bash
# Screenshots of the desktop app in a few states, on a real X server (Xvfb) with Qt's xcb platform plugin:
# empty, OCR result, table result, model manager, settings, dark theme, Simplified Chinese.
#
#   packaging/screenshots.sh [OUTPUT_DIR]      (default: build/screenshots)
#
# Needs Xvfb; as root on Debian/Ubuntu it installs what is missing. Not part of CI (the tests run offscreen).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-build/screenshots}
python=${PYTHON:-.venv/bin/python}

# Xvfb, and the X libraries Qt's xcb plugin loads that a minimal system may lack
packages="xvfb xauth libxcb-icccm4 libxcb-keysyms1 libxcb-cursor0 libxkbcommon-x11-0 fonts-noto-cjk"
missing=$(for package in $packages; do dpkg -s "$package" >/dev/null 2>&1 || echo "$package"; done)
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && apt-get install -y -qq $missing
  else
    echo "screenshots.sh needs: $missing (sudo apt-get install $missing)" >&2
    exit 1
  fi
fi

QT_QPA_PLATFORM=xcb xvfb-run -a -s "-screen 0 1366x800x24" "$python" packaging/screenshots.py "$out"
