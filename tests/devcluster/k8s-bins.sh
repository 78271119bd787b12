#!/usr/bin/env bash
# Builds every binary the devcluster runs, from Go modules (and one small C file), into $K8S_BIN and
# $CNI_BIN (outside the clone, under $PROGLOG_CACHE):
#   - the control plane and the node's Kubernetes parts: etcd, kube-apiserver (stock), kube-controller-
#     manager, kube-scheduler, kubectl, kubelet, kube-proxy, from the wrapper module in go/ (go.mod pins
#     the release), version-stamped so `kubectl version` prints it;
#   - containerd, ctr and containerd-shim-runc-v2; the CNI plugins bridge, host-local, portmap, loopback;
#     CoreDNS; rancher's local-path-provisioner: `go install module/cmd@version` (static, CGO_ENABLED=0);
#   - pause (the pod sandbox process): pause.c, `gcc -Os -static`.
# Each binary has a stamp of what it was built from; a binary whose stamp matches is skipped.
# runc is not built: it comes from Debian (scripts/install-deps.sh).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

command -v go >/dev/null || die "the Go toolchain is needed (go 1.26 or newer)"
command -v gcc >/dev/null || die "gcc is needed for the pause binary (Debian package: gcc)"
mkdir -p "$K8S_BIN" "$CNI_BIN"
# One build at a time (make and the e2e helper may both ask).
exec 9>"$K8S_BIN/.lock"
flock 9

GODIR="$DEVCLUSTER_SRC/go"
GOVER="$(go env GOVERSION)"
# RECIPE counts changes to how this script builds; a change rebuilds everything.
RECIPE=3
export CGO_ENABLED=0 GOWORK=off GOFLAGS=-buildvcs=false GOTOOLCHAIN=local

# --- Kubernetes and etcd, from the wrapper module -------------------------------------------------------
MAJOR="${K8S_VERSION#v}"; MAJOR="${MAJOR%%.*}"
MINOR="${K8S_VERSION#v*.}"; MINOR="${MINOR%%.*}"
K8S_LDFLAGS="-s -w"
for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
  K8S_LDFLAGS+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$MAJOR -X $pkg.gitMinor=$MINOR"
  K8S_LDFLAGS+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  K8S_LDFLAGS+=" -X $pkg.gitCommit=module-$K8S_VERSION"
done
K8S_STAMP="$(printf '%s\n' "$RECIPE" "$GOVER" "$K8S_LDFLAGS" \
  | cat - "$GODIR/go.mod" "$GODIR/go.sum" "$GODIR/etcd/main.go" | sha256sum | cut -c1-16)"

# name|kind|what|secs. kinds: k8s (package of the wrapper module), mod (go install, `what` =
# module@version, tags and ldflags below), c (a C file here). secs: the wall time of that build on a cold
# 2-core machine of our kind (empty Go caches), for the progress line's estimate of the time left.
CTRD=github.com/containerd/containerd/v2
CTRD_LDFLAGS="-s -w -X $CTRD/version.Version=$CONTAINERD_VERSION -X $CTRD/version.Revision=module-$CONTAINERD_VERSION"
CNI=github.com/containernetworking/plugins
CNI_LDFLAGS="-s -w -X $CNI/pkg/utils/buildversion.BuildVersion=$CNI_PLUGINS_VERSION"
targets=(
  "etcd|k8s|./etcd|77"
  "kube-apiserver|k8s|k8s.io/kubernetes/cmd/kube-apiserver|498"
  "kube-controller-manager|k8s|k8s.io/kubernetes/cmd/kube-controller-manager|135"
  "kube-scheduler|k8s|k8s.io/kubernetes/cmd/kube-scheduler|10"
  "kubectl|k8s|k8s.io/kubernetes/cmd/kubectl|55"
  "kubelet|k8s|k8s.io/kubernetes/cmd/kubelet|41"
  "kube-proxy|k8s|k8s.io/kubernetes/cmd/kube-proxy|22"
  "containerd|mod|$CTRD/cmd/containerd@$CONTAINERD_VERSION|247"
  "ctr|mod|$CTRD/cmd/ctr@$CONTAINERD_VERSION|29"
  "containerd-shim-runc-v2|mod|$CTRD/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION|10"
  "cni/bridge|mod|$CNI/plugins/main/bridge@$CNI_PLUGINS_VERSION|36"
  "cni/host-local|mod|$CNI/plugins/ipam/host-local@$CNI_PLUGINS_VERSION|4"
  "cni/portmap|mod|$CNI/plugins/meta/portmap@$CNI_PLUGINS_VERSION|3"
  "cni/loopback|mod|$CNI/plugins/main/loopback@$CNI_PLUGINS_VERSION|2"
  "coredns|mod|github.com/coredns/coredns@$COREDNS_VERSION|635"
  "local-path-provisioner|mod|github.com/rancher/local-path-provisioner@$LOCAL_PATH_VERSION|276"
  "pause|c|$DEVCLUSTER_SRC/pause.c|1"
)
mod_ldflags() { # module path -> ldflags
  case "$1" in
    "$CTRD"/*) echo "$CTRD_LDFLAGS" ;;
    "$CNI"/*) echo "$CNI_LDFLAGS" ;;
    github.com/coredns/coredns*) echo "-s -w -X github.com/coredns/coredns/coremain.GitCommit=$COREDNS_VERSION" ;;
    github.com/rancher/local-path-provisioner*) echo "-s -w -X main.VERSION=$LOCAL_PATH_VERSION" ;;
    *) echo "-s -w" ;;
  esac
}
# NB: urfave_cli_no_docs leaves out urfave/cli's man/markdown generator (and its dependencies).
MOD_TAGS=urfave_cli_no_docs

out_path() { # name -> path
  case "$1" in cni/*) echo "$CNI_BIN/${1#cni/}" ;; *) echo "$K8S_BIN/$1" ;; esac
}
stamp_of() { # kind what
  case "$1" in
    k8s) echo "$K8S_STAMP" ;;
    mod) printf '%s\n' "$RECIPE" "$GOVER" "$2" "$(mod_ldflags "$2")" "$MOD_TAGS" | sha256sum | cut -c1-16 ;;
    c) printf '%s\n' "$RECIPE" "$(gcc -dumpfullversion)" | cat - "$2" | sha256sum | cut -c1-16 ;;
  esac
}

build_one() { # name kind what out
  local name="$1" kind="$2" what="$3" out="$4" tmp
  case "$kind" in
    k8s)
      (cd "$GODIR" && nice -n 10 go build -trimpath -ldflags "$K8S_LDFLAGS" -o "$out.tmp" "$what") ;;
    mod)
      # NB: `go install pkg@version` builds with the module's own go.mod (its pinned dependencies), as
      # upstream releases do; GOBIN is a scratch dir so a failed build leaves no half-written binary.
      tmp="$(mktemp -d "$K8S_BIN/.gobin.XXXXXX")"
      GOBIN="$tmp" nice -n 10 go install -trimpath -tags "$MOD_TAGS" -ldflags "$(mod_ldflags "$what")" "$what"
      mv -f "$tmp"/* "$out.tmp"
      rm -rf "$tmp" ;;
    c)
      nice -n 10 gcc -Os -static -Wall -Wextra -Werror -o "$out.tmp" "$what"
      strip "$out.tmp" ;;
  esac
  mv -f "$out.tmp" "$out"
}

total=${#targets[@]}
approx() { if (($1 >= 120)); then echo "about $((($1 + 59) / 60)) min"; else echo "about $1 s"; fi; }
# What a cold build still has to do, from the measured times of the binaries that are not up to date.
left=0
for t in "${targets[@]}"; do
  IFS='|' read -r name kind what secs <<<"$t"
  out="$(out_path "$name")"
  [[ -x "$out" && "$(cat "$(dirname "$out")/.$(basename "$out").stamp" 2>/dev/null)" == "$(stamp_of "$kind" "$what")" ]] \
    || left=$((left + secs))
done
if ((left > 120)); then
  log "building the devcluster's binaries from Go modules: $(approx "$left") on 2 cores (once; cached in $PROGLOG_CACHE)"
fi
i=0
start_all=$SECONDS
built=0
for t in "${targets[@]}"; do
  i=$((i + 1))
  IFS='|' read -r name kind what secs <<<"$t"
  out="$(out_path "$name")"
  stampf="$(dirname "$out")/.$(basename "$out").stamp"
  stamp="$(stamp_of "$kind" "$what")"
  if [[ -x "$out" && "$(cat "$stampf" 2>/dev/null)" == "$stamp" ]]; then
    log "[$i/$total] $name: up to date"
    continue
  fi
  log "[$i/$total] building $name (${what#"$DEVCLUSTER_SRC/"}): usually ${secs}s, $(approx "$left") left ..."
  left=$((left - secs))
  t0=$SECONDS
  build_one "$name" "$kind" "$what" "$out" || die "building $name failed"
  echo "$stamp" > "$stampf"
  built=$((built + 1))
  log "[$i/$total] built $name in $((SECONDS - t0))s"
done
log "binaries in $K8S_BIN and $CNI_BIN ($built built, $((SECONDS - start_all))s)"
