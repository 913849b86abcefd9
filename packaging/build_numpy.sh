#!/usr/bin/env bash
# NumPy for the desktop download, without BLAS and LAPACK.
#
#   packaging/build_numpy.sh VENV_PYTHON VERSION     prints the path of the wheel (build/wheels/)
#
# PyPI's NumPy wheel links OpenBLAS with its Fortran runtime (numpy.libs, 28 MB). Nothing the app runs does linear
# algebra worth a BLAS: ONNX Runtime and llama.cpp do the model math themselves; edgevl, RapidOCR and rapid-table
# call numpy.linalg.norm on box corners and np.dot on 3x3 matrices, and one dot of two logit vectors when a converted
# model is verified. This builds the same version from its sdist on PyPI with NumPy's own fallback routines (and
# lapack_lite) instead, and its SIMD code paths chosen at run time up to AVX2 (X86_V3; as OpenCV's, see
# build_opencv.sh). It is built in build/numpy/, kept in build/wheels/ (see source_wheels.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
python=$1
version=$2
. packaging/source_wheels.sh
if cached_wheel numpy "$version"; then
  exit
fi
source_dir=build/numpy/numpy-$version
[ -d "$source_dir" ] || unpack_sdist "$python" numpy "$version" build/numpy
# NumPy's build requirements (its pyproject.toml) in a venv of their own rather than pip's isolated build
# environment: that is a new folder each time, and meson's build folder keeps the path of its Cython, which would
# break resuming the build
tools=build/numpy/venv
[ -x "$tools/bin/python" ] || "$python" -m venv "$tools"
pip() { "$tools/bin/python" -m pip -q --disable-pip-version-check "$@"; }
pip install 'meson-python>=0.18.0' 'Cython>=3.0.6' ninja
PATH=$PWD/$tools/bin:$PATH pip wheel --no-deps --no-build-isolation "./$source_dir" -w "$wheels" \
  -Cbuild-dir="$PWD/build/numpy/build" -Csetup-args=-Dblas=none -Csetup-args=-Dlapack=none \
  -Csetup-args=-Dallow-noblas=true -Csetup-args=-Dcpu-dispatch=X86_V3 >&2
cached_wheel numpy "$version"
