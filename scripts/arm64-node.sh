#!/usr/bin/env bash
# Unpacks Debian's arm64 Node (with the libraries it needs) into a sysroot, so that the arm64
# prebuild can be loaded on an x64 machine: qemu-aarch64 -L <sysroot> <sysroot>/usr/bin/node.
# Uses a private apt state (arch arm64, Debian's sources only): the machine's dpkg architectures
# and package lists are left alone. Prints the sysroot. Safe to run again: it skips what is there.
set -euo pipefail
dir=${LINEN_ARM64_SYSROOT:-/var/cache/linen/arm64-node}
root=$dir/root
if [ -x "$root/usr/bin/node" ]; then echo "$root"; exit 0; fi

state=$dir/apt
rm -rf "$state" "$root"
mkdir -p "$state/lists/partial" "$state/cache/archives/partial" "$state/sources" "$root"
touch "$state/status"
if [ -f /etc/apt/sources.list.d/debian.sources ]; then
  cp /etc/apt/sources.list.d/debian.sources "$state/sources/"
else
  echo "deb http://deb.debian.org/debian bookworm main" > "$state/sources/debian.list"
fi
apt=(apt-get -qq -o "Dir::State::Lists=$state/lists" -o "Dir::State::Status=$state/status"
  -o "Dir::Cache=$state/cache" -o APT::Architecture=arm64 -o "APT::Architectures::=arm64"
  -o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$state/sources" -o Debug::NoLocking=1)
"${apt[@]}" update >&2
"${apt[@]}" install --download-only -y --no-install-recommends nodejs >&2
for deb in "$state"/cache/archives/*.deb; do dpkg-deb -x "$deb" "$root"; done
rm -rf "$state"
echo "$root"
