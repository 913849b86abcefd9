#!/usr/bin/env bash
# The desktop download for Linux, built offline from registry packages (PyPI, Debian):
#
#   dist/edgevl/                              the app folder: `edgevl` (CLI) and `edgevl-gui`, no Python needed
#   dist/edgevl_<version>_amd64.deb           installs it in /opt/edgevl, with the menu entry and the icon
#   dist/edgevl-<version>-linux-x86_64.run    self-extracting installer for the current user (no root)
#
#   packaging/build.sh
#   EDGEVL_LLAMA_WHEEL=path/to/llama_cpp_python-0.3.36-....whl packaging/build.sh    (the CUDA build, see README)
#
# The build venv (build/venv) gets `.[gui,gguf,pull]` and PyInstaller from PyPI, at the versions pinned in
# packaging/constraints.txt; llama-cpp-python compiles once (10-17 CPU minutes) and pip's wheel cache keeps it;
# NumPy (3-10 CPU minutes) and OpenCV compile once too, their wheels kept in build/wheels/. Needs python3 (3.10+,
# built with a shared libpython), gcc and g++ (NumPy, OpenCV), icu-devtools for Qt's ICU data, and for the packages
# dpkg-deb, fakeroot and makeself (as root on Debian/Ubuntu, the missing ones are installed).
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
venv=build/venv
python=${PYTHON:-python3}
say() { printf '\n== %s (%ss)\n' "$*" "$((SECONDS - started))"; }

say "build venv: $venv"
. packaging/debian_packages.sh
need_packages build.sh dpkg fakeroot makeself icu-devtools binutils gcc g++
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
# setuptools builds the checkout in build/lib and never empties it: a file deleted from the checkout would ship
rm -rf build/lib build/bdist.*
pip() { "$venv/bin/python" -m pip -q --disable-pip-version-check "$@"; }
pip install -c packaging/constraints.txt '.[gui,gguf,pull]' pyinstaller
# Two packages are compiled here from their sdist, same (pinned) version as pip installed, with less in them (once;
# their wheels are kept in build/wheels/, see source_wheels.sh): NumPy without OpenBLAS and its Fortran runtime
# (28 MB, see build_numpy.sh), then OpenCV, against that NumPy's headers, with only the modules the OCR engine calls
# (152 -> 16 MB in the folder, see build_opencv.sh).
own_build() {  # DISTRIBUTION BUILD_SCRIPT
  local version wheel
  version=$("$venv/bin/python" -c "import importlib.metadata as m; print(m.version('$1'))")
  say "$1 $version, built here ($2)"
  wheel=$("$2" "$venv/bin/python" "$version")
  pip install --force-reinstall --no-deps "$wheel"
}
own_build numpy packaging/build_numpy.sh
# rapid-table asks for opencv-python, which links Qt 5 and the X libraries (120 MB more, and a second Qt next to
# PySide6's); RapidOCR asks for opencv-python-headless: both install the same cv2 module, so keep the headless one
pip uninstall -y opencv-python
own_build opencv-python-headless packaging/build_opencv.sh
# the checkout as it is now (pip keeps an installed local project of the same version otherwise)
pip install --force-reinstall --no-deps .
if [ -n "${EDGEVL_LLAMA_WHEEL:-}" ]; then
  say "llama.cpp engine from $EDGEVL_LLAMA_WHEEL"
  pip install --force-reinstall --no-deps "$EDGEVL_LLAMA_WHEEL"
fi
version=$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("edgevl"))')

say "PyInstaller: dist/edgevl/"
nice -n 10 "$venv/bin/pyinstaller" --noconfirm --log-level WARN --distpath dist --workpath build/pyinstaller \
  packaging/edgevl.spec
# Qt's ICU data (31 MB) with only the ICU services Qt calls, in English and Chinese (see shrink_icu_data.py)
"$venv/bin/python" packaging/shrink_icu_data.py dist/edgevl/_internal/PySide6/Qt/lib/libicudata.so.*
# Libraries built from source (Python: libpython 23 -> 6 MB, llama.cpp, OpenCV) keep their symbol tables, and so do
# some wheels'; those strip would break (auditwheel-patched ones) are left as they are.
"$venv/bin/python" packaging/strip_libraries.py dist/edgevl/_internal
echo "dist/edgevl: $(du -sm dist/edgevl | cut -f1) MB"

say "dist/edgevl_${version}_amd64.deb"
packaging/make_deb.sh dist/edgevl "$version" "dist/edgevl_${version}_amd64.deb"

say "dist/edgevl-${version}-linux-x86_64.run"
packaging/make_run.sh dist/edgevl "$version" "dist/edgevl-${version}-linux-x86_64.run"

say "done"
ls -l dist/*.deb dist/*.run
