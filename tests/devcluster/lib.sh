# Shared settings for the devcluster scripts (sourced, not run).
# Everything lives outside the clone, under $PROGLOG_CACHE (default ${XDG_CACHE_HOME:-$HOME/.cache}/proglog).

DEVCLUSTER_SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$DEVCLUSTER_SRC/../.." && pwd)"
PROGLOG_CACHE="${PROGLOG_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/proglog}"
# The Kubernetes release is the one go.mod pins; etcd is the server version go.mod pins.
K8S_VERSION="$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ {print $2; exit}' "$DEVCLUSTER_SRC/go/go.mod")"
CONTAINERD_VERSION=v2.4.2
CNI_PLUGINS_VERSION=v1.10.0
COREDNS_VERSION=v1.15.0
LOCAL_PATH_VERSION=v0.0.30
K8S_BIN="${K8S_BIN:-$PROGLOG_CACHE/k8s-$K8S_VERSION/bin}"
CNI_BIN="${CNI_BIN:-$PROGLOG_CACHE/k8s-$K8S_VERSION/cni}"
DEVCLUSTER_DIR="${DEVCLUSTER_DIR:-$PROGLOG_CACHE/devcluster}"
KUBECONFIG_PATH="$DEVCLUSTER_DIR/kubeconfig"

log() { printf '[devcluster] %s\n' "$*" >&2; }
die() { printf '[devcluster] error: %s\n' "$*" >&2; exit 1; }

# Addresses. NB: every one of them is private to this machine: the node IP sits on a bridge with no
# ports, pods sit behind a bridge whose traffic may not leave through the uplink (see up.sh).
NODE_IP="${DEVCLUSTER_NODE_IP:-10.245.0.1}"
POD_CIDR="${DEVCLUSTER_POD_CIDR:-10.244.0.0/24}"
POD_GATEWAY="${POD_CIDR%.*}.1"
SERVICE_CIDR="${DEVCLUSTER_SERVICE_CIDR:-10.112.0.0/16}"
SERVICE_API_IP="${SERVICE_CIDR%.*.*}.0.1"   # `kubernetes.default`
CLUSTER_DNS_IP="${SERVICE_CIDR%.*.*}.0.10"  # `kube-dns.kube-system`
CLUSTER_DOMAIN=cluster.local
# Addresses local to this machine (like 127.0.0.0/8) for tests that run servers on the host and list
# them in EndpointSlices, where the API server refuses loopback addresses.
HOST_LOCAL_CIDR="${DEVCLUSTER_HOST_LOCAL_CIDR:-10.245.128.0/17}"
NODE_BRIDGE=dcnode0   # holds the node IP; the Service CIDR is routed to it
POD_BRIDGE=dcpods0    # the CNI bridge of the pods

# Ports (override through the environment before the first `up`). The API server and the kubelet bind
# the node IP; etcd, kcm, scheduler, the health and metrics ports and containerd's streaming 127.0.0.1.
ETCD_CLIENT_PORT="${DEVCLUSTER_ETCD_PORT:-12379}"
ETCD_PEER_PORT="${DEVCLUSTER_ETCD_PEER_PORT:-12380}"
APISERVER_PORT="${DEVCLUSTER_APISERVER_PORT:-16443}"
KCM_PORT="${DEVCLUSTER_KCM_PORT:-10257}"
SCHEDULER_PORT="${DEVCLUSTER_SCHEDULER_PORT:-10259}"
KUBELET_PORT="${DEVCLUSTER_KUBELET_PORT:-10250}"
KUBELET_HEALTHZ_PORT="${DEVCLUSTER_KUBELET_HEALTHZ_PORT:-10248}"
PROXY_HEALTHZ_PORT="${DEVCLUSTER_PROXY_HEALTHZ_PORT:-10256}"
PROXY_METRICS_PORT="${DEVCLUSTER_PROXY_METRICS_PORT:-10249}"
NODE_NAME="${DEVCLUSTER_NODE_NAME:-devcluster-node}"
API_HOST="$NODE_IP"
# The processes, in start order.
COMPONENTS=(containerd etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)

# containerd's own places (root and state under the devcluster dir; see up.sh for the fixed ones).
CTRD_DIR="$DEVCLUSTER_DIR/containerd"
CONTAINERD_SOCK="$DEVCLUSTER_DIR/run/containerd.sock"
# The cgroup parent of everything the kubelet runs, in every cgroup v1 hierarchy.
CGROUP_ROOT=/devcluster

pid_file() { echo "$DEVCLUSTER_DIR/run/$1.pid"; }

# Prints the pid of a running component, or fails.
component_pid() {
  local f pid
  f="$(pid_file "$1")"
  [[ -f "$f" ]] || return 1
  pid="$(cat "$f")"
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 1
  # A killed component whose parent is gone may linger as a zombie: that is not running.
  [[ "$(cut -d' ' -f3 "/proc/$pid/stat" 2>/dev/null)" != Z ]] || return 1
  echo "$pid"
}

kubectl_dc() { "$K8S_BIN/kubectl" --kubeconfig "$KUBECONFIG_PATH" "$@"; }
ctr_dc() { "$K8S_BIN/ctr" --address "$CONTAINERD_SOCK" -n k8s.io "$@"; }

# import_one FILE: imports an image archive into the node's containerd, pinned.
# NB: pinned (a CRI label), so that the kubelet's image garbage collection never deletes an image that
# no pod uses yet: there is no registry to pull it back from.
import_one() {
  local out
  out="$(ctr_dc images import --platform linux/amd64 --label io.cri-containerd.pinned=pinned "$1" 2>&1)" \
    || die "importing $1 failed: $out"
}

# import_images "REF DIGEST FILE"...: imports each archive whose image containerd lacks (by digest).
import_images() {
  local line ref digest file have imported=0
  for line in "$@"; do
    read -r ref digest file <<<"$line"
    have="$(ctr_dc images ls "name==$ref" 2>/dev/null | awk 'NR > 1 {print $3}')"
    if [[ -n "$digest" && "$have" == "$digest" ]]; then
      ctr_dc images label "$ref" io.cri-containerd.pinned=pinned >/dev/null 2>&1 || true
      continue
    fi
    import_one "$file"
    imported=$((imported + 1))
  done
  echo "$imported of $# images imported"
}

# The machine's uplink interfaces (those holding a default route), which no pod packet may leave by.
uplinks() { ip -o route show default 2>/dev/null | awk '{for (i = 1; i < NF; i++) if ($i == "dev") print $(i + 1)}' | sort -u; }

# The node's own images (node-images.sh builds them, up.sh imports them into containerd).
PAUSE_IMAGE=registry.k8s.io/pause:3.10.2
COREDNS_IMAGE="proglog.dev/devcluster/coredns:$COREDNS_VERSION"
LOCAL_PATH_IMAGE="proglog.dev/devcluster/local-path-provisioner:$LOCAL_PATH_VERSION"
BUSYBOX_IMAGE=docker.io/library/busybox:1.35.0
KUBECTL_IMAGE="proglog.dev/devcluster/kubectl:$K8S_VERSION"
NODE_IMAGES_DIR="$PROGLOG_CACHE/node-images"
OCI_IMAGE="$REPO_ROOT/scripts/oci-image.sh"
