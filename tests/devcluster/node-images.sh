#!/usr/bin/env bash
# Builds the OCI image archives the node itself runs, into $NODE_IMAGES_DIR, each once per content:
#   pause (the sandbox image containerd pins), CoreDNS, rancher's local-path-provisioner (one static
#   binary each, from k8s-bins.sh) and busybox (Debian's busybox-static, for debugging and the
#   provisioner's helper pods), and busybox with kubectl. Prints "REF DIGEST FILE" per image.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
mkdir -p "$NODE_IMAGES_DIR"

# The busybox-static package of this Debian release, downloaded once.
busybox_deb() {
  local deb
  deb="$(ls "$NODE_IMAGES_DIR"/busybox-static_*.deb 2>/dev/null | head -1 || true)"
  if [[ -z "$deb" ]]; then
    (cd "$NODE_IMAGES_DIR" && apt-get download busybox-static >/dev/null 2>&1) \
      || { apt-get update -qq >/dev/null && (cd "$NODE_IMAGES_DIR" && apt-get download busybox-static >/dev/null); } \
      || die "could not download Debian's busybox-static (apt-get download busybox-static)"
    deb="$(ls "$NODE_IMAGES_DIR"/busybox-static_*.deb | head -1)"
  fi
  echo "$deb"
}

# image NAME REF [oci-image args...]: the rootfs is $work/NAME, filled by the caller.
image() {
  local name="$1" ref="$2" rootfs="$work/$1" stamp out="$NODE_IMAGES_DIR/$1.tar"; shift 2
  stamp="$( (cd "$rootfs" && find . -printf '%p %m %U %G %l\n' | LC_ALL=C sort && find . -type f -print0 \
    | LC_ALL=C sort -z | xargs -0 cat) | cat - "$OCI_IMAGE" <(printf '%s\n' "$ref" "$@") | sha256sum | cut -c1-16)"
  if [[ -f "$out" && "$(cut -d' ' -f1 "$out.stamp" 2>/dev/null)" == "$stamp" ]]; then
    echo "$(cut -d' ' -f2- "$out.stamp") $out"
    return
  fi
  local line
  line="$("$OCI_IMAGE" --rootfs "$rootfs" --name "$ref" --out "$out" "$@" | head -1)"
  echo "$stamp $line" > "$out.stamp"
  echo "$line $out"
}

# Nothing changed since the last run (this script, the image tool, the binaries' stamps, the package):
# print what that run printed.
key="$(cat "$0" "$OCI_IMAGE" "$K8S_BIN"/.{pause,coredns,local-path-provisioner,kubectl}.stamp 2>/dev/null \
  | cat - <(printf '%s\n' "$PAUSE_IMAGE" "$COREDNS_IMAGE" "$LOCAL_PATH_IMAGE" "$BUSYBOX_IMAGE" "$KUBECTL_IMAGE") \
    <(ls "$NODE_IMAGES_DIR"/busybox-static_*.deb 2>/dev/null) | sha256sum | cut -c1-16)"
if [[ "$(head -1 "$NODE_IMAGES_DIR/last" 2>/dev/null)" == "$key" ]] \
   && tail -n +2 "$NODE_IMAGES_DIR/last" | awk '{print $3}' | xargs -r ls >/dev/null 2>&1; then
  tail -n +2 "$NODE_IMAGES_DIR/last"
  exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
etc() { # rootfs: /etc/passwd and /etc/group with root and nonroot (65532)
  mkdir -p "$1/etc"
  printf 'root:x:0:0:root:/root:/bin/sh\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > "$1/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' > "$1/etc/group"
}

{
mkdir -p "$work/pause"
install -m 0755 "$K8S_BIN/pause" "$work/pause/pause"
image pause "$PAUSE_IMAGE" --entrypoint /pause --user 65535:65535

mkdir -p "$work/coredns"
etc "$work/coredns"
install -m 0755 "$K8S_BIN/coredns" "$work/coredns/coredns"
image coredns "$COREDNS_IMAGE" --entrypoint /coredns --user 65532:65532

mkdir -p "$work/local-path/usr/bin" "$work/local-path/tmp"
etc "$work/local-path"
chmod 1777 "$work/local-path/tmp"
install -m 0755 "$K8S_BIN/local-path-provisioner" "$work/local-path/usr/bin/local-path-provisioner"
image local-path "$LOCAL_PATH_IMAGE" --entrypoint /usr/bin/local-path-provisioner

deb="$(busybox_deb)"
mkdir -p "$work/deb" "$work/busybox/bin" "$work/busybox/tmp" "$work/busybox/root"
dpkg-deb -x "$deb" "$work/deb"
install -m 0755 "$work/deb/bin/busybox" "$work/busybox/bin/busybox"
for applet in $("$work/busybox/bin/busybox" --list); do
  [[ "$applet" == busybox ]] || ln -s busybox "$work/busybox/bin/$applet"
done
chmod 1777 "$work/busybox/tmp"
etc "$work/busybox"
image busybox "$BUSYBOX_IMAGE" --cmd /bin/sh --env PATH=/bin

# busybox with kubectl, for pods that talk to the API with their service account.
cp -a "$work/busybox" "$work/kubectl"
install -m 0755 "$K8S_BIN/kubectl" "$work/kubectl/bin/kubectl"
image kubectl "$KUBECTL_IMAGE" --entrypoint /bin/kubectl --env PATH=/bin
} > "$work/out"
{ echo "$key"; cat "$work/out"; } > "$NODE_IMAGES_DIR/last"
cat "$work/out"
