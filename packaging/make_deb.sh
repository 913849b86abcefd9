#!/usr/bin/env bash
# Pack the app folder as a Debian package: /opt/edgevl, `edgevl` and `edgevl-gui` in /usr/bin, the menu entry
# (packaging/edgevl.desktop) and the icon (gui/resources/edgevl.svg).
#
#   packaging/make_deb.sh dist/edgevl VERSION dist/edgevl_VERSION_amd64.deb      (build.sh runs it)
set -euo pipefail
cd "$(dirname "$0")/.."
folder=$1 version=$2 output=$3

# The libraries the folder takes from the system (see SYSTEM_LIBRARIES in edgevl.spec): Qt's xcb and Wayland
# platforms, GL, fontconfig, GLib, D-Bus. Debian 12 / Ubuntu 22.04 names; newer releases' t64 packages provide
# them. glibc 2.35 and GLIBCXX_3.4.29 are the newest symbol versions the bundled libraries ask for.
# smoke_test.sh checks that this list covers every library the folder links to outside itself.
DEPENDS="libc6 (>= 2.35), libstdc++6 (>= 11), libgcc-s1, libglib2.0-0, libdbus-1-3, libfontconfig1,
 libfreetype6, libbrotli1, libgssapi-krb5-2, libegl1, libgl1, libdrm2, libx11-6, libx11-xcb1, libxcb1,
 libxcb-cursor0, libxcb-glx0, libxcb-icccm4, libxcb-image0, libxcb-keysyms1, libxcb-randr0, libxcb-render0,
 libxcb-render-util0, libxcb-shape0, libxcb-shm0, libxcb-sync1, libxcb-util1, libxcb-xfixes0, libxcb-xkb1,
 libxkbcommon0, libxkbcommon-x11-0, libwayland-client0, libwayland-cursor0, libwayland-egl1"

root=$(mktemp -d)
chmod 755 "$root"
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/DEBIAN" "$root/opt" "$root/usr/bin"
cp -a "$folder" "$root/opt/edgevl"
ln -s /opt/edgevl/edgevl "$root/usr/bin/edgevl"
ln -s /opt/edgevl/edgevl-gui "$root/usr/bin/edgevl-gui"
install -Dm644 packaging/edgevl.desktop "$root/usr/share/applications/edgevl.desktop"
install -Dm644 gui/resources/edgevl.svg "$root/usr/share/icons/hicolor/scalable/apps/edgevl.svg"
cat > "$root/DEBIAN/control" <<CONTROL
Package: edgevl
Version: $version
Architecture: amd64
Maintainer: edgevl developers <edgevl@localhost>
Installed-Size: $(du -sk "$root" | cut -f1)
Depends: $(echo "$DEPENDS" | tr -d '\n')
Section: graphics
Priority: optional
Description: screen OCR, tables and captions with on-device vision-language models
 edgevl reads text, tables and captions from screenshots and images on this computer: an embedded OCR
 engine (RapidOCR, SLANet) and converted Qwen2-VL / MiniCPM-V models on llama.cpp or ONNX Runtime.
 Desktop app (edgevl-gui) and command line (edgevl); no Python installation needed.
CONTROL
# the menu and icon caches (the triggers of desktop-file-utils and hicolor-icon-theme also do it where installed)
cat > "$root/DEBIAN/postinst" <<'SCRIPT'
#!/bin/sh
set -e
command -v update-desktop-database >/dev/null && update-desktop-database -q /usr/share/applications || true
command -v gtk-update-icon-cache >/dev/null && gtk-update-icon-cache -q -t /usr/share/icons/hicolor || true
SCRIPT
cp "$root/DEBIAN/postinst" "$root/DEBIAN/postrm"
chmod 755 "$root/DEBIAN/postinst" "$root/DEBIAN/postrm"
# zstd: 10x faster to pack than xz here (1 instead of 10+ minutes) for 30% more size; every dpkg on a system new
# enough for this package (glibc 2.35: Ubuntu 22.04, Debian 12) reads it
fakeroot dpkg-deb --build -Zzstd -z10 --threads-max=2 "$root" "$output" >/dev/null
echo "$output: $(du -m "$output" | cut -f1) MB"
