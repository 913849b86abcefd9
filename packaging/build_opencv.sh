#!/usr/bin/env bash
# OpenCV for the desktop download, with only the modules the embedded OCR engine calls.
#
#   packaging/build_opencv.sh VENV_PYTHON VERSION     prints the path of the wheel (build/wheels/)
#
# RapidOCR and rapid-table call a few dozen functions of OpenCV's core, imgproc and imgcodecs (colour conversion,
# resize, warpPerspective, findContours, minAreaRect, imread/imdecode...). PyPI's opencv-python-headless wheel
# carries all of OpenCV (dnn, video, calib, features, ...; cv2 71 MB) and the libraries those modules link at load
# time (FFmpeg, libaom, libvpx, OpenSSL, OpenBLAS; 81 MB). This builds the same package, same version, from its
# sdist on PyPI with those three modules, PNG and JPEG (both compiled in), and nothing linked that glibc does not
# provide. It is built in build/opencv/, kept in build/wheels/ (see source_wheels.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
python=$1
version=$2
. packaging/source_wheels.sh
source_dir=build/opencv/opencv_python_headless-$version
if cached_wheel opencv_python_headless "$version"; then
  exit
fi
pip() { "$python" -m pip -q --disable-pip-version-check "$@"; }
if [ ! -d "$source_dir" ]; then
  unpack_sdist "$python" opencv-python-headless "$version" build/opencv
  # OpenCV's generator of typing stubs fails without the features2d module (its manual refinements name
  # Feature2D), so there is no py.typed marker and no cv2.typing, which the sdist's setup.py insists on packing
  sed -i -e 's|\[ r"python/cv2/py.typed" \]|[]|' \
    -e 's|rearrange_cmake_output_data\["cv2.typing"\] = .*|pass|' "$source_dir/setup.py"
fi
off() { for feature in "$@"; do printf ' -DWITH_%s=OFF' "$feature"; done; }
# Everything but core, imgproc and imgcodecs (and geometry and flann, which OpenCV 5's imgproc needs), and what
# OpenCV would download (IPP, a Unicode font) or link (LAPACK/OpenBLAS, FFmpeg, the image formats other than PNG and
# JPEG) is off. Of the SIMD code paths chosen at run time, AVX2 only (the rest stays on the SSE3 baseline): each
# extra one is compiled again for each dispatched file.
# NumPy's headers from the build venv: pip's isolated build environment is a new folder each time, and a cached path
# into the last one breaks resuming the build
CMAKE_ARGS="-DBUILD_LIST=core,imgproc,imgcodecs,python3 -DPYTHON3_LIMITED_API=ON -DCPU_DISPATCH=AVX2
  -DPYTHON3_NUMPY_INCLUDE_DIRS=$("$python" -c 'import numpy; print(numpy.get_include())')
  -DBUILD_ZLIB=ON -DBUILD_PNG=ON -DBUILD_JPEG=ON -DBUILD_OPENEXR=OFF -DBUILD_opencv_apps=OFF
  $(off IPP LAPACK EIGEN OPENCL VA VA_INTEL FFMPEG GSTREAMER V4L 1394 TIFF WEBP OPENJPEG JASPER AVIF OPENEXR \
    IMGCODEC_GIF GDAL GDCM PROTOBUF ITT TBB OPENMP QUIRC ADE FLATBUFFERS OPENVINO CUDA VTK GTK QT FASTCV KLEIDICV \
    UNIFONT)" \
  ENABLE_HEADLESS=1 \
  pip wheel --no-deps "./$source_dir" -w "$wheels" >&2
ls "$wheels"/opencv_python_headless-"$version"-*.whl
