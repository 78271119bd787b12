#!/usr/bin/env bash
# Installs what a fresh machine lacks to build and test ProgLog: Debian packages (apt-get) and the
# rustfmt/clippy components. Safe to run again: it installs only what is missing.
set -euo pipefail

# Debian packages, as "command:package".
needs=(
  "openssl:openssl"
  "unshare:util-linux"
  "ip:iproute2"
  "curl:curl"
  # The devcluster's real node: runc (containerd's runtime), iptables (kube-proxy, the kubelet and the
  # pod network's guard rule), gcc (the static pause binary), apt-get download + dpkg-deb for the
  # busybox-static debug image, python3 for the image JSON.
  "runc:runc"
  "iptables:iptables"
  "nft:nftables"
  "gcc:gcc"
  "dpkg-deb:dpkg"
  "python3:python3"
  "flock:util-linux"
  "nsenter:util-linux"
)

missing=()
for pair in "${needs[@]}"; do
  cmd=${pair%%:*} pkg=${pair#*:}
  command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "install-deps: apt-get install ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
fi

for tool in cargo go; do
  command -v "$tool" >/dev/null 2>&1 || { echo "install-deps: '$tool' is not on PATH; install the $tool toolchain first" >&2; exit 1; }
done

if command -v rustup >/dev/null 2>&1; then
  for comp in rustfmt clippy; do
    rustup component list --installed 2>/dev/null | grep -q "^$comp" || rustup component add "$comp"
  done
fi
echo "install-deps: ok"
