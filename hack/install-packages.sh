#!/usr/bin/env bash
# Installs the Debian packages the project needs (listed in hack/debian-packages.txt, the one
# place they live) and only those that are missing, so that calling it again costs a dpkg query.
#
# Usage: hack/install-packages.sh [package...]   (default: every package of the list)
# Needs root for the install itself; prints what it installs on stderr.
set -euo pipefail

hack_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

log() { printf 'install-packages: %s\n' "$*" >&2; }

wanted=("$@")
if [ ${#wanted[@]} -eq 0 ]; then
  # The list's first word on each line; comments and blank lines are not packages.
  mapfile -t wanted < <(sed -e 's/#.*//' -e 's/^[[:space:]]*//' -e '/^$/d' "$hack_dir/debian-packages.txt" | awk '{print $1}')
fi

missing=()
for package in "${wanted[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null || true)
  [ "$status" = "install ok installed" ] || missing+=("$package")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" != 0 ]; then
  log "missing ${missing[*]}; run this script as root (or: apt-get install ${missing[*]})"
  exit 1
fi
log "installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Another apt run on the machine holds the lock for a while: wait for it instead of failing.
apt_opts=(-o DPkg::Lock::Timeout=600 -q)
# The package lists may be absent or stale on a fresh machine; one update, then the install.
apt-get "${apt_opts[@]}" update >/dev/null
apt-get "${apt_opts[@]}" install -y --no-install-recommends "${missing[@]}" >/dev/null
log "installed ${missing[*]}"
