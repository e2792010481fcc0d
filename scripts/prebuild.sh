#!/usr/bin/env bash
# Builds the N-API addon (native/linen_io.c) for every platform the package ships, into
# prebuilds/<platform>-<arch>/, where node-gyp-build finds it at run time: a node then needs no
# compiler. N-API makes one build per platform serve every Node version >= 20; it is built with
# the headers of the Node that runs this (from its install prefix), so nothing is downloaded.
# Targets another than the host's are cross-compiled with Debian's gcc-<triplet> package.
# Builds in a scratch copy: prebuildify moves build/Release's addon away, and build/ is the
# developer's own build, which node-gyp-build prefers.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

# arch (Node's name), GNU triplet (Debian's cross compiler is gcc-<triplet with - for _>).
targets=("x64 x86_64-linux-gnu" "arm64 aarch64-linux-gnu")

host=$(node -p process.arch)
node_version=$(node -p process.versions.node)
export npm_config_nodedir
npm_config_nodedir=$(node -p 'require("path").resolve(process.execPath, "../..")')
if [ ! -f "$npm_config_nodedir/include/node/node_api.h" ]; then
  echo "prebuild: no Node headers in $npm_config_nodedir/include/node" >&2
  exit 1
fi
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cp -r binding.gyp native "$scratch/"
# prebuildify names the files after the package.
node -e 'const p = require("./package.json"); console.log(JSON.stringify({ name: p.name, version: p.version }))' \
  > "$scratch/package.json"

for t in "${targets[@]}"; do
  read -r arch triplet <<<"$t"
  if [ "$arch" = "$host" ]; then cc=gcc strip=strip; else cc=$triplet-gcc strip=$triplet-strip; fi
  if ! command -v "$cc" >/dev/null; then
    echo "prebuild: $cc not found; for linux-$arch install Debian's gcc-${triplet//_/-}" >&2
    exit 1
  fi
  echo "prebuild: linux-$arch with $cc" >&2
  (cd "$scratch" && rm -rf build &&
    CC=$cc LINK=$cc PREBUILD_NODE_GYP="$root/node_modules/.bin/node-gyp" \
      "$root/node_modules/.bin/prebuildify" --napi --strip --strip-bin "$strip" --tag-libc \
      --platform linux --arch "$arch" --target "$node_version" --quiet)
done

rm -rf prebuilds
cp -r "$scratch/prebuilds" prebuilds
find prebuilds -type f >&2
