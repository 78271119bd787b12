#!/usr/bin/env bash
# Builds etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kubectl from the official Go
# modules pinned in tests/devcluster/go/go.mod into $K8S_BIN (outside the clone), stamped with the real
# release so `kubectl version` prints it. A binary already built from the same go.mod/go.sum is skipped.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

command -v go >/dev/null || die "the Go toolchain is needed (go 1.25 or newer)"
mkdir -p "$K8S_BIN"
# One build at a time (make and the e2e helper may both ask).
exec 9>"$K8S_BIN/.lock"
flock 9

GODIR="$DEVCLUSTER_SRC/go"
MAJOR="${K8S_VERSION#v}"; MAJOR="${MAJOR%%.*}"
MINOR="${K8S_VERSION#v*.}"; MINOR="${MINOR%%.*}"
LDFLAGS="-s -w"
for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
  LDFLAGS+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$MAJOR -X $pkg.gitMinor=$MINOR"
  LDFLAGS+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  LDFLAGS+=" -X $pkg.gitCommit=module-$K8S_VERSION"
done
# What a binary is built from; a change rebuilds. RECIPE counts changes to how this script builds.
RECIPE=2
STAMP="$(printf '%s\n' "$RECIPE" "$LDFLAGS" | cat - "$GODIR/go.mod" "$GODIR/go.sum" "$GODIR/etcd/main.go" | sha256sum | cut -c1-16)"

targets=(
  "etcd=./etcd"
  "kube-apiserver=k8s.io/kubernetes/cmd/kube-apiserver"
  "kube-controller-manager=k8s.io/kubernetes/cmd/kube-controller-manager"
  "kube-scheduler=k8s.io/kubernetes/cmd/kube-scheduler"
  "kubectl=k8s.io/kubernetes/cmd/kubectl"
)
# NB: pods of the devcluster get loopback IPs (127.0.0.0/8), which kube-apiserver refuses in
# EndpointSlices and Endpoints. So the build uses a hard-linked copy of the k8s.io/kubernetes module (outside
# the clone) in which exactly that one check is disabled, wired in by a go.work replace. The patch is made
# here, at build time, from the module's own file; nothing of Kubernetes is copied into this repository.
SRC_COPY="$K8S_BIN/../src/kubernetes"
GOWORK_FILE="$K8S_BIN/../go.work"
make_patched_source() {
  local mod file
  mod="$(cd "$GODIR" && GOWORK=off GOFLAGS=-mod=mod go list -m -f '{{.Dir}}' k8s.io/kubernetes)"
  [[ -n "$mod" && -d "$mod" ]] || (cd "$GODIR" && GOWORK=off go mod download k8s.io/kubernetes)
  mod="$(cd "$GODIR" && GOWORK=off GOFLAGS=-mod=mod go list -m -f '{{.Dir}}' k8s.io/kubernetes)"
  file=pkg/apis/core/validation/validation.go
  if ! grep -q 'devcluster: pods use loopback IPs' "$SRC_COPY/$file" 2>/dev/null; then
    log "preparing a patched copy of k8s.io/kubernetes (hard links) in $SRC_COPY"
    rm -rf "$SRC_COPY.tmp"
    mkdir -p "$(dirname "$SRC_COPY")"
    cp -al "$mod" "$SRC_COPY.tmp"
    chmod u+w "$SRC_COPY.tmp/$(dirname $file)"
    rm -f "$SRC_COPY.tmp/$file"
    sed 's/^\(\t*\)if ip.IsLoopback() {$/\1if false \&\& ip.IsLoopback() { \/\/ devcluster: pods use loopback IPs/' \
      "$mod/$file" > "$SRC_COPY.tmp/$file"
    [[ "$(grep -c 'devcluster: pods use loopback IPs' "$SRC_COPY.tmp/$file")" == 1 ]] \
      || die "could not patch the loopback check in $mod/$file (did the release change it?)"
    rm -rf "$SRC_COPY"
    mv "$SRC_COPY.tmp" "$SRC_COPY"
  fi
  # NB: the local replacement is loaded without module-graph pruning, which lets an old monolithic
  # google.golang.org/genproto in; pin it to a release that no longer holds the split-out packages.
  cat > "$GOWORK_FILE" <<WORK
go $(awk '$1 == "go" {print $2; exit}' "$GODIR/go.mod")

use $GODIR

replace k8s.io/kubernetes $K8S_VERSION => $SRC_COPY

replace google.golang.org/genproto => google.golang.org/genproto v0.0.0-20250303144028-a0af3efb3deb
WORK
}
make_patched_source

total=${#targets[@]}
i=0
start_all=$SECONDS
for t in "${targets[@]}"; do
  i=$((i + 1))
  name="${t%%=*}"; pkg="${t#*=}"
  if [[ -x "$K8S_BIN/$name" && "$(cat "$K8S_BIN/.$name.stamp" 2>/dev/null)" == "$STAMP" ]]; then
    log "[$i/$total] $name $K8S_VERSION: already built"
    continue
  fi
  log "[$i/$total] building $name ($pkg) ..."
  t0=$SECONDS
  (cd "$GODIR" && CGO_ENABLED=0 GOWORK="$GOWORK_FILE" GOFLAGS=-buildvcs=false nice -n 10 \
      go build -trimpath -ldflags "$LDFLAGS" -o "$K8S_BIN/.$name.tmp" "$pkg")
  mv -f "$K8S_BIN/.$name.tmp" "$K8S_BIN/$name"
  echo "$STAMP" > "$K8S_BIN/.$name.stamp"
  log "[$i/$total] built $name in $((SECONDS - t0))s"
done
log "binaries in $K8S_BIN ($((SECONDS - start_all))s)"
