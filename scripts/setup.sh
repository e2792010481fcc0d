#!/usr/bin/env bash
# Installs what linen needs on a fresh Debian machine with Node: Debian packages for the tests,
# the demo and the benchmark, then the npm packages. Safe to run again: it skips what is there.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v etcd >/dev/null || need+=(etcd-server)
command -v etcdctl >/dev/null || need+=(etcd-client)
command -v iperf3 >/dev/null || need+=(iperf3)
command -v iptables >/dev/null || need+=(iptables)
command -v tshark >/dev/null || need+=(tshark)
command -v ip >/dev/null || need+=(iproute2)
command -v ping >/dev/null || need+=(iputils-ping)
command -v curl >/dev/null || need+=(curl)
[ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
command -v ethtool >/dev/null || need+=(ethtool)
# kubectl drives the lab Kubernetes API server in the kube-mode tests.
command -v kubectl >/dev/null || need+=(kubernetes-client)
command -v python3 >/dev/null || need+=(python3)
# The WireGuard backend's interop tests and benchmark run Debian's userspace WireGuard as the peer.
command -v wireguard-go >/dev/null || need+=(wireguard-go)
command -v wg >/dev/null || need+=(wireguard-tools)
# promtool (Debian ships it in the prometheus package): checks /metrics and deploy/alerts.yml.
command -v promtool >/dev/null || need+=(prometheus)
# npm pack builds the arm64 prebuild; the install test loads it with arm64 Node under qemu-user.
command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu)
command -v qemu-aarch64 >/dev/null || need+=(qemu-user)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "setup: linen needs these Debian packages: ${need[*]}; run as root or install them" >&2
    exit 1
  fi
  echo "setup: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [ "$(id -u)" = 0 ]; then bash scripts/arm64-node.sh >/dev/null; fi

# npm ci only when the lock file changed since the last install.
stamp=node_modules/.linen-lock
if [ ! -f "$stamp" ] || ! cmp -s package-lock.json "$stamp"; then
  echo "setup: installing npm packages" >&2
  npm ci --no-audit --no-fund --loglevel=error
  cp package-lock.json "$stamp"
fi
