# Sourced by build_opencv.sh and build_numpy.sh: a package of the desktop download compiled here from its sdist on
# PyPI, same version as the registry's wheel, other build options. The build runs in build/<package>/ and is resumed
# there when interrupted; the wheel is kept in build/wheels/ and reused (delete it to rebuild).
wheels=$PWD/build/wheels

# cached_wheel NAME VERSION: prints the wheel built before (NAME as in wheel file names: opencv_python_headless)
cached_wheel() { ls "$wheels/$1-$2"-*.whl 2>/dev/null; }

# unpack_sdist PYTHON NAME VERSION FOLDER: downloads the sdist into FOLDER and unpacks it there
unpack_sdist() {
  local archive
  archive=$("$1" packaging/fetch_sdist.py "$2" "$3" "$4")
  tar -xzf "$archive" -C "$4"
}
