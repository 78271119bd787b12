#!/usr/bin/env bash
# `make images`: builds the ProgLog images without Docker and loads them into the devcluster node.
#
#   proglog/logserver:<hash>  logserver + the proglog CLI   (entrypoint /usr/local/bin/logserver)
#   proglog/operator:<hash>   proglog-operator              (entrypoint /usr/local/bin/proglog-operator)
#
# Same content as images/Dockerfile's targets (which stay the way to build them with Docker): the
# binaries, the glibc libraries they link, CA certificates, a passwd/group naming the non-root user
# 65532, no shell; they run as 65532:65532. Each tag is the hash of the image's content, so a rebuild
# of unchanged binaries gives the same tag and the node keeps the image it has. Each is also named
# with the release tag (`proglog/logserver:0.1.0`, what manifests/ and the CRD's default name), which
# then points at the newest build, as `kind load` does.
#
# Writes $PROGLOG_CACHE/images/images.env (LOGSERVER_IMAGE=..., OPERATOR_IMAGE=...) for
# `make deploy`, `make run` and the e2e tests, then imports both archives into the node's containerd
# when it runs (`--no-import` skips that).
#
# Environment: PROFILE=debug|release (default debug: the binaries `make test` builds anyway),
# CARGO_TARGET_DIR, PROGLOG_CACHE.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source tests/devcluster/lib.sh

import=1
for a in "$@"; do
  case "$a" in
    --no-import) import=0 ;;
    -h | --help) sed -n '2,18p' "$0"; exit 0 ;;
    *) die "images: unknown argument '$a'" ;;
  esac
done

PROFILE="${PROFILE:-debug}"
VERSION="$(awk -F'"' '/^version *=/ {print $2; exit}' Cargo.toml)"
TARGET_DIR="${CARGO_TARGET_DIR:-$REPO_ROOT/target}"
OUT="$PROGLOG_CACHE/images"
mkdir -p "$OUT"
exec 7>"$OUT/.lock"
flock 7

say() { printf '[images] %s\n' "$*" >&2; }
# The node's containerd (tests/devcluster/lib.sh names it once the real node is up).
CONTAINERD_SOCK="${CONTAINERD_SOCK:-$DEVCLUSTER_DIR/run/containerd/containerd.sock}"
declare -F ctr_dc >/dev/null || ctr_dc() { "$K8S_BIN/ctr" --address "$CONTAINERD_SOCK" -n k8s.io "$@"; }

cargo_flags=(--bin logserver --bin proglog --bin proglog-operator)
[[ "$PROFILE" == release ]] && cargo_flags+=(--release)
say "building the binaries ($PROFILE): cargo build ${cargo_flags[*]}"
cargo build -q "${cargo_flags[@]}"
bins="$TARGET_DIR/$PROFILE"

# rootfs DIR BINARY... : a root filesystem with the binaries in /usr/local/bin and what they need.
make_rootfs() {
  local dir=$1; shift
  rm -rf "$dir"
  mkdir -p "$dir/usr/local/bin" "$dir/etc/ssl/certs" "$dir/tmp"
  chmod 1777 "$dir/tmp"
  local b lib
  for b in "$@"; do
    # NB: debug info is most of a debug binary; the symbols stay for backtraces.
    objcopy --strip-debug "$bins/$b" "$dir/usr/local/bin/$b"
    # The shared libraries (and the loader) the binary links, at the paths the loader looks in.
    for lib in $(ldd "$bins/$b" | grep -oE '/[^ ]+\.so[^ ]*'); do
      [[ -e "$dir$lib" ]] && continue
      mkdir -p "$dir$(dirname "$lib")"
      cp -L "$lib" "$dir$lib"
    done
  done
  cp -L /etc/ssl/certs/ca-certificates.crt "$dir/etc/ssl/certs/" 2>/dev/null \
    || say "no /etc/ssl/certs/ca-certificates.crt on this machine: the image has no CA bundle"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' \
    > "$dir/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' > "$dir/etc/group"
  mkdir -p "$dir/home/nonroot"
}

# image NAME ENTRYPOINT PORT BINARY... : builds proglog/NAME:<hash>; prints the reference.
image() {
  local name=$1 entry=$2 port=$3; shift 3
  local root="$OUT/rootfs-$name"
  make_rootfs "$root" "$@"
  local hash
  hash="$(tar --create --directory "$root" --format=gnu --sort=name --mtime=@0 --owner=0 --group=0 \
    --numeric-owner . | sha256sum | cut -c1-12)"
  local ref="proglog/$name:$hash" archive="$OUT/$name-$hash.tar"
  if [[ ! -s "$archive" ]]; then
    bash scripts/oci-image.sh --rootfs "$root" --name "$ref" --out "$archive" \
      --name "proglog/$name:$VERSION" --entrypoint "/usr/local/bin/$entry" --user 65532:65532 --port "$port" \
      --env PATH=/usr/local/bin:/usr/bin:/bin >/dev/null
    say "built $ref ($(du -h "$archive" | cut -f1), $archive)"
  else
    say "$ref is up to date ($archive)"
  fi
  rm -rf "$root"
  # Older builds' archives go (the node keeps what it imported).
  find "$OUT" -maxdepth 1 -name "$name-*.tar" ! -name "$name-$hash.tar" -delete
  echo "$ref"
}

logserver="$(image logserver logserver 8400 logserver proglog)"
operator="$(image operator proglog-operator 8080 proglog-operator)"
printf 'LOGSERVER_IMAGE=%s\nOPERATOR_IMAGE=%s\n' "$logserver" "$operator" > "$OUT/images.env.tmp"
mv "$OUT/images.env.tmp" "$OUT/images.env"
say "tags in $OUT/images.env"

if ((import)); then
  if [[ -S "$CONTAINERD_SOCK" ]]; then
    # NB: always import: the content is shared when the node has it already (a second import
    # costs well under a second), and it re-points the release tag at this build.
    for ref in "$logserver" "$operator"; do
      name=${ref#proglog/}; name=${name%%:*}
      file="$OUT/$name-${ref##*:}.tar"
      # NB: lib.sh's import_one pins the image, so the kubelet's image GC never drops it (there
      # is no registry to pull it back from).
      if declare -F import_one >/dev/null; then import_one "$file"; else
        ctr_dc images import --platform linux/amd64 "$file" >/dev/null
      fi
      say "imported $ref (also proglog/$name:$VERSION) into the node's containerd"
    done
  else
    say "the devcluster's containerd is not running ($CONTAINERD_SOCK): not imported (make dev-cluster-up, then make images)"
  fi
fi
cat "$OUT/images.env"
