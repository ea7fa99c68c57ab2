#!/bin/bash
# Install the system packages vnet and its tests need (Debian 12, as root).
# Idempotent: installs only what is missing, runs apt-get update only then.
set -euo pipefail

# command -> Debian package
declare -A NEED=(
  [ip]=iproute2
  [ping]=iputils-ping
  [unshare]=util-linux
  [iperf3]=iperf3
  [ss]=iproute2
  [wg]=wireguard-tools
  [wireguard-go]=wireguard-go
  [openvpn]=openvpn
  [openssl]=openssl
  [ethtool]=ethtool
  [qemu-system-x86_64]=qemu-system-x86
  [nft]=nftables
  [dot]=graphviz
  [etcd]=etcd-server
  [etcdctl]=etcd-client
  [curl]=curl
  [tcpdump]=tcpdump
)

missing=()
for cmd in "${!NEED[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${NEED[$cmd]}")
done
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  missing+=(python3-venv)
fi
# the native data-path module (vnet._datapath): a C compiler, libcrypto's headers and
# the interpreter's own headers
[ -f /usr/include/openssl/evp.h ] || missing+=(libssl-dev)
command -v gcc >/dev/null 2>&1 || missing+=(gcc)
if ! python3 -c 'import os, sysconfig; assert os.path.exists(
    os.path.join(sysconfig.get_paths()["include"], "Python.h"))' >/dev/null 2>&1; then
  missing+=(python3-dev)
fi
# wg-quick needs resolvconf only for DNS=; we never set it, so it is not installed.
if [ "${#missing[@]}" -gt 0 ]; then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
fi

if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: need root to install: ${missing[*]}" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ ! -c /dev/net/tun ]; then
  modprobe tun 2>/dev/null || true
fi
