#!/usr/bin/env bash
# Builds the in-cluster interop image without Docker: the static test binary of ./incluster
# (`CGO_ENABLED=0 go test -c`) alone in a one-layer OCI archive (scripts/oci-image.sh), tagged by
# content hash: proglog/interop:<hash>. Prints `INTEROP_IMAGE=<ref>` and `INTEROP_ARCHIVE=<file>`;
# tests/tests/interop_in_cluster.rs imports the archive into the devcluster node.
#
# Go modules come from the machine's module proxy into the module cache; the archive goes to
# $PROGLOG_CACHE/images (both outside the clone).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
ROOT=$(cd ../.. && pwd)
PROGLOG_CACHE=${PROGLOG_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/proglog}
OUT=$PROGLOG_CACHE/images
mkdir -p "$OUT"
exec 7>"$OUT/.interop.lock"
flock 7

root=$OUT/rootfs-interop
rm -rf "$root"
mkdir -p "$root/usr/local/bin" "$root/tmp"
chmod 1777 "$root/tmp"
CGO_ENABLED=0 go test -c -trimpath -buildvcs=false -o "$root/usr/local/bin/interop-incluster" ./incluster
hash=$(tar --create --directory "$root" --format=gnu --sort=name --mtime=@0 --owner=0 --group=0 \
  --numeric-owner . | sha256sum | cut -c1-12)
ref=proglog/interop:$hash
archive=$OUT/interop-$hash.tar
if [[ ! -s $archive ]]; then
  bash "$ROOT/scripts/oci-image.sh" --rootfs "$root" --name "$ref" --out "$archive" \
    --entrypoint /usr/local/bin/interop-incluster --user 65532:65532 >/dev/null
  find "$OUT" -maxdepth 1 -name 'interop-*.tar' ! -name "interop-$hash.tar" -delete
fi
rm -rf "$root"
printf 'INTEROP_IMAGE=%s\nINTEROP_ARCHIVE=%s\n' "$ref" "$archive"
