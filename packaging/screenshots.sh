#!/usr/bin/env bash
# Screenshots of the desktop app in a few states, on a real X server (Xvfb) with Qt's xcb platform plugin, at
# 100 % scaling on 1366x800 and at 200 % on 1600x1000, in English and Simplified Chinese (see screenshots.py).
#
#   packaging/screenshots.sh [OUTPUT_DIR]      (default: build/screenshots)
#
# Needs Xvfb; as root on Debian/Ubuntu it installs what is missing. Not part of CI (the tests run offscreen).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-build/screenshots}
python=${PYTHON:-.venv/bin/python}

# Xvfb, and the X libraries Qt's xcb plugin loads that a minimal system may lack
. packaging/debian_packages.sh
need_packages screenshots.sh xvfb xauth libxcb-icccm4 libxcb-keysyms1 libxcb-cursor0 libxkbcommon-x11-0 fonts-noto-cjk

for setting in "100 1366x800 1" "200 1600x1000 2"; do
  set -- $setting
  QT_QPA_PLATFORM=xcb QT_SCALE_FACTOR=$3 xvfb-run -a -s "-screen 0 ${2}x24" "$python" packaging/screenshots.py "$out/$1"
done
