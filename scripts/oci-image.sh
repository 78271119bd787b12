#!/usr/bin/env bash
# Writes a one-layer OCI image archive (an OCI image layout in a tar) from a root filesystem
# directory, with no Docker engine and no registry. The output is reproducible: the same rootfs and
# options give the same digests (files are packed sorted, owned by root, with their mtimes at 0).
#
#   scripts/oci-image.sh --rootfs DIR --name REF [--name REF]... --out FILE.tar \
#       [--entrypoint ARG]... [--cmd ARG]... [--user UID:GID] [--env K=V]... [--workdir DIR] \
#       [--port N]...
#
# REF is the image reference pods use, e.g. `proglog/logserver:1a2b3c`; it is normalized the way
# containerd's CRI looks images up (`docker.io/...`, `:latest` when no tag) and stored in the
# `io.containerd.image.name` annotation, so `ctr -n k8s.io images import FILE.tar` makes it visible
# to the kubelet at once. Several --name give the same image several names. Prints each normalized
# reference with the manifest digest.
set -euo pipefail

die() { printf 'oci-image: %s\n' "$*" >&2; exit 1; }

rootfs="" out="" user="" workdir="/"
names=() entrypoint=() cmd=() envs=() ports=()
while (($#)); do
  case "$1" in
    --rootfs) rootfs=$2; shift 2 ;;
    --name) names+=("$2"); shift 2 ;;
    --out) out=$2; shift 2 ;;
    --entrypoint) entrypoint+=("$2"); shift 2 ;;
    --cmd) cmd+=("$2"); shift 2 ;;
    --user) user=$2; shift 2 ;;
    --env) envs+=("$2"); shift 2 ;;
    --workdir) workdir=$2; shift 2 ;;
    --port) ports+=("$2"); shift 2 ;;
    -h | --help) sed -n '2,14p' "$0"; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
[[ -d "$rootfs" ]] || die "--rootfs DIR is required and must be a directory (got '$rootfs')"
((${#names[@]})) || die "--name REF is required"
[[ -n "$out" ]] || die "--out FILE.tar is required"
command -v python3 >/dev/null || die "python3 is needed to write the JSON documents"

# Normalizes a reference as containerd does: a bare name gets docker.io/library/, a name with one
# path element and no registry gets docker.io/, no tag means :latest.
normalize() {
  local ref=$1 first=${1%%/*} last
  if [[ "$ref" != */* ]]; then
    ref="docker.io/library/$ref"
  elif [[ "$first" != *.* && "$first" != *:* && "$first" != localhost ]]; then
    ref="docker.io/$ref"
  fi
  last=${ref##*/}
  [[ "$last" == *:* || "$last" == *@* ]] || ref="$ref:latest"
  echo "$ref"
}
refs=()
for n in "${names[@]}"; do refs+=("$(normalize "$n")"); done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
blobs="$work/layout/blobs/sha256"
mkdir -p "$blobs"

# NB: --sort, --mtime, --owner/--group and the gnu format make the layer byte-for-byte
# reproducible; numeric ids keep the host's user names out of it.
tar --create --file "$work/layer.tar" --directory "$rootfs" --format=gnu --sort=name \
  --mtime=@0 --owner=0 --group=0 --numeric-owner .
layer_digest="$(sha256sum "$work/layer.tar" | cut -d' ' -f1)"
layer_size="$(stat -c %s "$work/layer.tar")"
mv "$work/layer.tar" "$blobs/$layer_digest"

# The config, the manifest and the index, written by one small Python program (JSON escaping).
# NB: one item a line (bash variables cannot hold NUL); no argument here contains a newline.
ENTRYPOINT="$(printf '%s\n' "${entrypoint[@]+"${entrypoint[@]}"}")" \
CMD="$(printf '%s\n' "${cmd[@]+"${cmd[@]}"}")" \
ENVS="$(printf '%s\n' "${envs[@]+"${envs[@]}"}")" \
PORTS="$(printf '%s\n' "${ports[@]+"${ports[@]}"}")" \
REFS="$(printf '%s\n' "${refs[@]}")" \
IMAGE_USER="$user" WORKDIR="$workdir" LAYER_DIGEST="$layer_digest" \
LAYER_SIZE="$layer_size" BLOBS="$blobs" LAYOUT="$work/layout" python3 - <<'PY'
import hashlib, json, os

def items(var):
    return [s for s in os.environ[var].split("\n") if s]

def blob(doc):
    data = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(os.environ["BLOBS"], digest), "wb") as f:
        f.write(data)
    return "sha256:" + digest, len(data)

cfg = {"WorkingDir": os.environ["WORKDIR"]}
if items("ENTRYPOINT"): cfg["Entrypoint"] = items("ENTRYPOINT")
if items("CMD"): cfg["Cmd"] = items("CMD")
if items("ENVS"): cfg["Env"] = items("ENVS")
if os.environ["IMAGE_USER"]: cfg["User"] = os.environ["IMAGE_USER"]
if items("PORTS"): cfg["ExposedPorts"] = {p + "/tcp": {} for p in items("PORTS")}
layer = "sha256:" + os.environ["LAYER_DIGEST"]
config_digest, config_size = blob({
    "architecture": "amd64",
    "os": "linux",
    "created": "1970-01-01T00:00:00Z",
    "config": cfg,
    "rootfs": {"type": "layers", "diff_ids": [layer]},
    "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "scripts/oci-image.sh"}],
})
manifest_digest, manifest_size = blob({
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
               "digest": config_digest, "size": config_size},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": layer, "size": int(os.environ["LAYER_SIZE"])}],
})
index = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.index.v1+json",
    "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": manifest_digest, "size": manifest_size,
        "platform": {"architecture": "amd64", "os": "linux"},
        "annotations": {"io.containerd.image.name": ref,
                        "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[1]},
    } for ref in items("REFS")],
}
layout = os.environ["LAYOUT"]
with open(os.path.join(layout, "index.json"), "w") as f:
    json.dump(index, f, sort_keys=True, separators=(",", ":"))
with open(os.path.join(layout, "oci-layout"), "w") as f:
    json.dump({"imageLayoutVersion": "1.0.0"}, f)
with open(os.path.join(layout, "manifest-digest"), "w") as f:
    f.write(manifest_digest)
PY

digest="$(cat "$work/layout/manifest-digest")"
rm "$work/layout/manifest-digest"
mkdir -p "$(dirname "$out")"
tar --create --file "$out.tmp" --directory "$work/layout" --format=gnu --sort=name --mtime=@0 \
  --owner=0 --group=0 --numeric-owner .
mv -f "$out.tmp" "$out"
for r in "${refs[@]}"; do echo "$r $digest"; done
