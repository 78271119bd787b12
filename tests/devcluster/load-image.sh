#!/usr/bin/env bash
# Imports OCI image archives (scripts/oci-image.sh, `docker save`, ...) into the running devcluster's
# containerd, where the kubelet finds them at once (namespace k8s.io):
#   tests/devcluster/load-image.sh FILE.tar...
# Pods use them by the name the archive carries (io.containerd.image.name), with a tag other than
# `latest` or `imagePullPolicy: Never`. Prints the names and digests containerd has.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
(($#)) || die "usage: load-image.sh FILE.tar..."
component_pid containerd >/dev/null || die "the devcluster is not running (make dev-cluster-up)"
for f in "$@"; do
  [[ -f "$f" ]] || die "no file $f"
  import_one "$f"
  # The names in the archive's index, as containerd shows them.
  for ref in $(tar -xOf "$f" ./index.json 2>/dev/null | jq -r '.manifests[].annotations["io.containerd.image.name"] // empty' 2>/dev/null \
      || tar -xOf "$f" index.json | jq -r '.manifests[].annotations["io.containerd.image.name"] // empty'); do
    ctr_dc images ls "name==$ref" | awk 'NR > 1 {print $1, $3}'
  done
done
