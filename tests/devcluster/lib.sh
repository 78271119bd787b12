# Shared settings for the devcluster scripts (sourced, not run).
# Everything lives outside the clone, under ${XDG_CACHE_HOME:-$HOME/.cache}/proglog/.

DEVCLUSTER_SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$DEVCLUSTER_SRC/../.." && pwd)"
PROGLOG_CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/proglog"
# The Kubernetes release is the one go.mod pins; etcd is the server version go.mod pins.
K8S_VERSION="$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ {print $2; exit}' "$DEVCLUSTER_SRC/go/go.mod")"
K8S_BIN="${K8S_BIN:-$PROGLOG_CACHE/k8s-$K8S_VERSION/bin}"
DEVCLUSTER_DIR="${DEVCLUSTER_DIR:-$PROGLOG_CACHE/devcluster}"
KUBECONFIG_PATH="$DEVCLUSTER_DIR/kubeconfig"

log() { printf '[devcluster] %s\n' "$*" >&2; }
die() { printf '[devcluster] error: %s\n' "$*" >&2; exit 1; }

# Loopback ports (override through the environment before the first `up`).
ETCD_CLIENT_PORT="${DEVCLUSTER_ETCD_PORT:-12379}"
ETCD_PEER_PORT="${DEVCLUSTER_ETCD_PEER_PORT:-12380}"
APISERVER_PORT="${DEVCLUSTER_APISERVER_PORT:-16443}"
KCM_PORT="${DEVCLUSTER_KCM_PORT:-10257}"
SCHEDULER_PORT="${DEVCLUSTER_SCHEDULER_PORT:-10259}"
KUBELET_PORT="${DEVCLUSTER_KUBELET_PORT:-10250}"
NODE_NAME="${DEVCLUSTER_NODE_NAME:-devcluster-node}"
# Start order; `down` stops them in reverse.
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler devcluster-agent)

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
