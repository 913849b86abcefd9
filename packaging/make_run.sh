#!/usr/bin/env bash
# Pack the app folder as a self-extracting installer (makeself): it unpacks to a temporary folder and runs
# packaging/run-installer.sh there, which installs for the current user (no root needed).
#
#   packaging/make_run.sh dist/edgevl VERSION dist/edgevl-VERSION-linux-x86_64.run      (build.sh runs it)
set -euo pipefail
cd "$(dirname "$0")/.."
folder=$1 version=$2 output=$3

staging=$(mktemp -d)
trap 'rm -rf "$staging"' EXIT
cp -a "$folder" "$staging/edgevl"
cp packaging/run-installer.sh "$staging/install.sh"
cp packaging/edgevl.desktop gui/resources/edgevl.svg "$staging/"
# gzip: every system can unpack it (a zstd archive needs the zstd program there), and it packs in a minute where
# xz takes more than ten here
makeself --quiet --gzip --complevel 6 --nox11 --tar-quietly "$staging" "$output" "edgevl $version" ./install.sh >/dev/null
echo "$output: $(du -m "$output" | cut -f1) MB"
