#!/bin/sh
# Runs inside the self-extracting dist/edgevl-VERSION-linux-x86_64.run (from the folder it unpacked): installs the
# app for the current user, or for everyone when run as root.
#
#   ./edgevl-VERSION-linux-x86_64.run                      ~/.local/opt/edgevl, ~/.local/bin, the user's menu
#                                                          (as root: /opt/edgevl, /usr/local/bin, everyone's menu)
#   ./edgevl-VERSION-linux-x86_64.run -- --prefix DIR      the app in DIR/edgevl instead
#   ./edgevl-VERSION-linux-x86_64.run -- --user            for the current user, also as root
#   ~/.local/opt/edgevl/uninstall.sh                       removes all of it again
set -eu
user=$( [ "$(id -u)" = 0 ] || echo yes )
prefix=
while [ $# -gt 0 ]; do
  case $1 in
    --user) user=yes ;;
    --prefix) prefix=${2:?--prefix needs a folder}; shift ;;
    *) echo "unknown option: $1 (options: --user, --prefix DIR)" >&2; exit 2 ;;
  esac
  shift
done
if [ -n "$user" ]; then
  bin=$HOME/.local/bin data=${XDG_DATA_HOME:-$HOME/.local/share}
  prefix=${prefix:-$HOME/.local/opt}
else
  bin=/usr/local/bin data=/usr/local/share
  prefix=${prefix:-/opt}
fi
app=$prefix/edgevl
here=$(pwd)

[ -e "$app/uninstall.sh" ] && "$app/uninstall.sh" >/dev/null
mkdir -p "$prefix" "$bin" "$data/applications" "$data/icons/hicolor/scalable/apps"
cp -a "$here/edgevl" "$app"
ln -sf "$app/edgevl" "$bin/edgevl"
ln -sf "$app/edgevl-gui" "$bin/edgevl-gui"
# The menu starts the app by its full path: a desktop session's PATH often lacks ~/.local/bin.
sed "s#^Exec=edgevl-gui#Exec=$app/edgevl-gui#" "$here/edgevl.desktop" > "$data/applications/edgevl.desktop"
cp "$here/edgevl.svg" "$data/icons/hicolor/scalable/apps/edgevl.svg"
cat > "$app/uninstall.sh" <<SCRIPT
#!/bin/sh
# Removes what the edgevl installer put on this computer (your settings, history and models stay).
rm -f "$bin/edgevl" "$bin/edgevl-gui" "$data/applications/edgevl.desktop" "$data/icons/hicolor/scalable/apps/edgevl.svg"
rm -rf "$app"
echo "edgevl removed"
SCRIPT
chmod 755 "$app/uninstall.sh"
command -v update-desktop-database >/dev/null && update-desktop-database -q "$data/applications" || true
echo "edgevl installed in $app"
echo "  menu: edgevl; command line: $bin/edgevl (add $bin to PATH if it is not); remove: $app/uninstall.sh"
