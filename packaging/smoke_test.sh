#!/usr/bin/env bash
# Smoke test of the desktop download that packaging/build.sh made (dist/edgevl/, the .deb, the .run):
#
#   links   every library in the folder finds its dependencies, and the .deb depends on the packages of those it
#           takes from the system
#   cli     `edgevl ocr / table / doctor` from the folder with an empty environment (env -i: no Python, no PATH)
#   models  (when a venv with the dev extra is there: SMOKE_PYTHON, default .venv/bin/python) a tiny random
#           Qwen2-VL converted to GGUF by the frozen app and run on its llama.cpp engine; exported to ONNX by the
#           venv and run on the frozen app's ONNX Runtime engine (a caption, and `extract` with its JSON masks)
#   gui     `edgevl-gui` from the folder shows its window on Xvfb (screenshot in build/smoke/gui.png)
#   deb     `dpkg -i` in a throwaway root (an overlay of / with a tmpfs on top, in a private mount namespace, so
#           nothing of it stays), the menu entry validates and its Exec command shows the window, `dpkg -r`
#           removes it all
#   run     the .run installs for a user with an empty HOME, its menu entry's command shows the window, the
#           installed `edgevl` reads the receipt, uninstall.sh removes it all
#
#   packaging/smoke_test.sh             all checks (exit status 1 when one fails; each prints PASS, FAIL or SKIP)
#   packaging/smoke_test.sh cli gui     some of them
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
bundle=$repo/dist/edgevl
out=$repo/build/smoke
deb=$(ls dist/edgevl_*_amd64.deb)
run=$(ls dist/edgevl-*-linux-x86_64.run)
receipt_line="Total due (EUR) 92.40"

# --- inside the throwaway root's mount namespace (see check_deb) ----------------------------------------------
if [ "${1:-}" = "--in-throwaway-root" ]; then
  scratch=$2 display=$3
  root=$scratch/root
  mkdir -p "$root"
  mount -t tmpfs tmpfs "$root"
  mkdir -p "$root/upper" "$root/work" "$root/merged"
  mount -t overlay overlay -o "lowerdir=/,upperdir=$root/upper,workdir=$root/work" "$root/merged"
  for dir in /proc /dev /dev/shm /dev/pts /tmp/.X11-unix; do mount --bind "$dir" "$root/merged$dir"; done
  cp "$deb" "$root/merged/tmp/edgevl.deb"
  in_root() { chroot "$root/merged" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TMPDIR=/tmp "$@"; }
  in_root dpkg -i /tmp/edgevl.deb >/dev/null
  in_root desktop-file-validate /usr/share/applications/edgevl.desktop
  command=$(sed -n 's/^Exec=//p' "$root/merged/usr/share/applications/edgevl.desktop" | head -1)
  echo "menu entry: Exec=$command"
  in_root DISPLAY="$display" sh -c "exec $command" >"$scratch/deb-gui.log" 2>&1 &
  app=$!
  shown=0
  DISPLAY=$display timeout 120 xdotool search --sync --onlyvisible --name '^edgevl$' >/dev/null && shown=1
  kill "$app" 2>/dev/null; wait "$app" 2>/dev/null || true
  [ "$shown" = 1 ] || { echo "the menu entry's command showed no window:"; cat "$scratch/deb-gui.log"; exit 1; }
  in_root dpkg -r edgevl >/dev/null
  [ ! -e "$root/merged/opt/edgevl" ] && [ ! -e "$root/merged/usr/share/applications/edgevl.desktop" ] \
    && [ ! -e "$root/merged/usr/bin/edgevl" ]
  exit
fi

# the tools of the checks, and the libraries the .deb depends on (the folder's GUI needs them too): as root on
# Debian/Ubuntu the missing ones are installed from Debian's registry
. packaging/debian_packages.sh
need_packages smoke_test.sh xvfb xdotool imagemagick desktop-file-utils file binutils \
  $(dpkg-deb -f "$deb" Depends | tr ',' '\n' | sed 's/(.*)//; s/ //g')

scratch=$(mktemp -d)
xvfb=
cleanup() {
  [ -n "$xvfb" ] && kill "$xvfb" 2>/dev/null
  rm -rf "$scratch"
}
trap cleanup EXIT
mkdir -p "$out" "$scratch/home" "$scratch/tmp"
failures=0
check() {
  local name=$1
  shift
  echo "== $name"
  # a subshell outside any `if`, so that `set -e` stops the check at its first failing command
  set +e
  (set -eE; trap '[ $? = 77 ] || echo "failed: $BASH_COMMAND"' ERR; "$@") >"$scratch/$name.log" 2>&1
  local status=$?
  set -e
  if [ "$status" = 0 ]; then
    echo "PASS $name"
  else
    if [ "$status" = 77 ]; then
      echo "SKIP $name: $(tail -1 "$scratch/$name.log")"
    else
      echo "FAIL $name:"
      tail -20 "$scratch/$name.log" | sed 's/^/    /'
      failures=$((failures + 1))
    fi
  fi
}
frozen() { env -i HOME="$scratch/home" TMPDIR="$scratch/tmp" "$@"; }

# the Debian package of a library path (Debian 12 registers /lib/... where /usr/lib/... is the real path)
package_of() {
  local path found
  for path in "$1" "$(readlink -f "$1")" "$(readlink -f "$1" | sed 's#^/usr##')"; do
    found=$(dpkg -S "$path" 2>/dev/null) && { echo "${found%%:*}"; return; }
  done
  echo "no-package-for:$1"
}

check_links() {
  local elf_files needed missing
  elf_files=$(find "$bundle" -type f -print0 | xargs -0 file -N | awk -F': ' '/ELF/ {print $1}')
  # what the folder's libraries find (the bootloader puts _internal on the library path)
  missing=$(echo "$elf_files" | LD_LIBRARY_PATH=$bundle/_internal xargs -d '\n' ldd 2>/dev/null | grep "not found" | sort -u || true)
  [ -z "$missing" ] || { echo "libraries not found:"; echo "$missing"; return 1; }
  # what they take from the system directly, as packages; each must be in the .deb's Depends
  needed=$(echo "$elf_files" | xargs -d '\n' -n 50 readelf -d 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' \
    | sort -u | grep -vxF -f <(find "$bundle" -name '*.so*' -printf '%f\n' | sort -u) || true)
  local depends packages=""
  depends=$(dpkg-deb -f "$deb" Depends | tr ',' '\n' | sed 's/(.*)//; s/ //g')
  for library in $needed; do
    # (awk reads to the end: exiting early would kill ldconfig with SIGPIPE, a failure under pipefail)
    path=$(ldconfig -p | awk -v name="$library" '!found && $1 == name && /x86-64/ {print $NF; found = 1}')
    packages+=" $(package_of "${path:-$library}")"
  done
  missing=$(for package in $packages; do echo "$package"; done | sort -u | grep -vxF -f <(echo "$depends") || true)
  echo "system packages used: $(echo $packages | tr ' ' '\n' | sort -u | tr '\n' ' ')"
  [ -z "$missing" ] || { echo "not in the .deb's Depends: $missing"; return 1; }
}

check_cli() {
  frozen "$bundle/edgevl" ocr examples/receipt.png | tee "$out/receipt.txt"
  grep -qF "$receipt_line" "$out/receipt.txt"
  frozen "$bundle/edgevl" table examples/table.png | grep -F "| Cordless drill | 1"
  frozen "$bundle/edgevl" doctor >"$scratch/doctor.txt" 2>&1 || true  # (it prints to stderr)
  cat "$scratch/doctor.txt"
  grep -q "^ok  llama.cpp (GGUF)" "$scratch/doctor.txt"
  grep -q "^ok  ONNX Runtime" "$scratch/doctor.txt"
  grep -q "^ok  embedded OCR engine" "$scratch/doctor.txt"
}

check_models() {
  local python=${SMOKE_PYTHON:-.venv/bin/python}
  if ! "$python" -c "import torch, transformers, edgevl.testing.qwen2vl" 2>/dev/null; then
    echo "no venv with the dev extra (SMOKE_PYTHON=$python) to build a tiny checkpoint"
    return 77
  fi
  "$python" -c "from edgevl.testing.qwen2vl import build_qwen2vl_checkpoint as b; b('$scratch/checkpoint')"
  frozen "$bundle/edgevl" convert "$scratch/checkpoint" -o "$scratch/gguf" --quant q8_0
  frozen "$bundle/edgevl" caption examples/receipt.png -m "$scratch/gguf" --length short
  "$python" -m edgevl.cli convert "$scratch/checkpoint" -o "$scratch/onnx" --to onnx
  frozen "$bundle/edgevl" caption examples/receipt.png -m "$scratch/onnx" --length short
  # JSON answers: llguidance's token masks on the ONNX engine. A random model never closes the string it starts,
  # so its answer is cut at the token limit; what counts is that the masks ran (else: "needs llguidance").
  frozen "$bundle/edgevl" extract examples/receipt.png -m "$scratch/onnx" --fields total >"$scratch/extract.txt" 2>&1 \
    || grep -q "not complete JSON" "$scratch/extract.txt"
  cat "$scratch/extract.txt"
}

start_xvfb() {
  exec 3>"$scratch/display"
  Xvfb -displayfd 3 -screen 0 1280x800x24 -nolisten tcp >"$scratch/xvfb.log" 2>&1 &
  xvfb=$!
  for _ in $(seq 50); do [ -s "$scratch/display" ] && break; sleep 0.1; done
  display=:$(cat "$scratch/display")
}

# start a GUI command (with DISPLAY set), wait for its window, screenshot it, stop it
shows_window() {
  local screenshot=$1
  shift
  "$@" &
  local app=$! shown=0
  DISPLAY=$display timeout 120 xdotool search --sync --onlyvisible --name '^edgevl$' >/dev/null && shown=1
  sleep 1  # let it paint
  [ -n "$screenshot" ] && [ "$shown" = 1 ] && import -display "$display" -window root "$screenshot"
  kill "$app" 2>/dev/null
  wait "$app" 2>/dev/null || true
  [ "$shown" = 1 ]
}

check_gui() {
  shows_window "$out/gui.png" env -i HOME="$scratch/home" TMPDIR="$scratch/tmp" DISPLAY="$display" \
    "$bundle/edgevl-gui" --data-dir "$scratch/gui-data"
  echo "screenshot: $out/gui.png"
}

check_deb() {
  if [ "$(id -u)" != 0 ] || ! grep -qw overlay /proc/filesystems || ! command -v unshare >/dev/null; then
    echo "needs root and overlayfs for a throwaway root"
    return 77
  fi
  # (dpkg -i does not fetch dependencies: the start of this script installed them)
  unshare --mount --propagation private "$0" --in-throwaway-root "$scratch" "$display"
}

check_run() {
  local home=$scratch/run-home
  mkdir -p "$home"
  env -i HOME="$home" PATH=/usr/bin:/bin TMPDIR="$scratch/tmp" sh "$run" --quiet -- --user
  local entry=$home/.local/share/applications/edgevl.desktop
  grep "^Exec=" "$entry"
  local command
  command=$(sed -n 's/^Exec=//p' "$entry" | head -1)
  shows_window "" env -i HOME="$home" TMPDIR="$scratch/tmp" DISPLAY="$display" sh -c "exec $command"
  env -i HOME="$home" TMPDIR="$scratch/tmp" "$home/.local/bin/edgevl" ocr examples/receipt.png | grep -F "$receipt_line"
  "$home/.local/opt/edgevl/uninstall.sh"
  [ ! -e "$home/.local/opt/edgevl" ] && [ ! -e "$entry" ] && [ ! -e "$home/.local/bin/edgevl" ]
}

start_xvfb
for name in ${@:-links cli models gui deb run}; do
  check "$name" "check_$name"
done
echo "folder $(du -sm "$bundle" | cut -f1) MB, .deb $(du -m "$deb" | cut -f1) MB, .run $(du -m "$run" | cut -f1) MB"
if [ "$failures" -gt 0 ]; then
  echo "smoke test: $failures check(s) failed"
  exit 1
fi
echo "smoke test: all checks passed"
