# Sourced by the packaging scripts: `need_packages SCRIPT PACKAGE...` installs the Debian packages that are
# missing (as root, from Debian's registry), or says which ones SCRIPT needs and exits.
need_packages() {
  local script=$1 missing
  shift
  missing=$(for package in "$@"; do dpkg -s "$package" >/dev/null 2>&1 || echo "$package"; done)
  [ -z "$missing" ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  else
    echo "$script needs: $(echo $missing) (sudo apt-get install $(echo $missing))" >&2
    exit 1
  fi
}
