#!/usr/bin/env bash
# Starts the devcluster on loopback: etcd, kube-apiserver, kube-controller-manager, kube-scheduler and the
# node agent, with state and logs under $DEVCLUSTER_DIR. Prints the kubeconfig path. Running it while the
# cluster is up changes nothing.
#
# Environment: DEVCLUSTER_AGENT_BIN (agent binary; default: built with cargo), CARGO_TARGET_DIR,
# DEVCLUSTER_*_PORT (see lib.sh), DEVCLUSTER_DIR, XDG_CACHE_HOME.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

mkdir -p "$DEVCLUSTER_DIR"/{run,logs,pki,etcd,agent}
exec 8>"$DEVCLUSTER_DIR/run/up.lock"
flock 8

"$DEVCLUSTER_SRC/k8s-bins.sh"
"$DEVCLUSTER_SRC/certs.sh" "$DEVCLUSTER_DIR/pki"
PKI="$DEVCLUSTER_DIR/pki"

# The agent and the binaries it maps images to come from this workspace.
TARGET_DIR="${CARGO_TARGET_DIR:-$REPO_ROOT/target}"
if [[ -z "${DEVCLUSTER_AGENT_BIN:-}" ]]; then
  DEVCLUSTER_AGENT_BIN="$TARGET_DIR/debug/devcluster-agent"
  # NB: cargo only when a source is newer than the binaries: a cargo run with other packages selected
  # (other feature unification) would relink them for nothing and restart the agent.
  newer="$(find "$REPO_ROOT/tests/agent" "$REPO_ROOT/Cargo.lock" -newer "$DEVCLUSTER_AGENT_BIN" \
    \( -name '*.rs' -o -name Cargo.toml -o -name Cargo.lock \) -print -quit 2>/dev/null || true)"
  if [[ ! -x "$DEVCLUSTER_AGENT_BIN" || ! -x "$TARGET_DIR/debug/devcluster-launch" \
        || ! -x "$TARGET_DIR/debug/devcluster-echo" || -n "$newer" ]]; then
    log "building the node agent (cargo build -p devcluster-agent)"
    (cd "$REPO_ROOT" && cargo build -q -p devcluster-agent --bins)
  fi
fi
[[ -x "$DEVCLUSTER_AGENT_BIN" ]] || die "no agent binary at $DEVCLUSTER_AGENT_BIN"

write_kubeconfig() { # file
  cat > "$1" <<KC
apiVersion: v1
kind: Config
clusters:
- name: devcluster
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority: $PKI/ca.crt
users:
- name: devcluster-admin
  user:
    client-certificate: $PKI/admin.crt
    client-key: $PKI/admin.key
contexts:
- name: devcluster
  context: {cluster: devcluster, user: devcluster-admin}
current-context: devcluster
KC
}
write_kubeconfig "$KUBECONFIG_PATH"

# start name command... : runs a component in its own session, logs to logs/<name>.log.
start() {
  local name="$1"; shift
  if pid="$(component_pid "$name")"; then
    log "$name already running (pid $pid)"
    return 0
  fi
  # NB: 8>&- so that the component does not inherit (and hold forever) the lock of this script.
  setsid "$@" >>"$DEVCLUSTER_DIR/logs/$name.log" 2>&1 < /dev/null 8>&- &
  echo $! > "$(pid_file "$name")"
  log "started $name (pid $!), log: $DEVCLUSTER_DIR/logs/$name.log"
}

# wait_for what seconds command...
wait_for() {
  local what="$1" secs="$2" i; shift 2
  for ((i = 0; i < secs * 5; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  die "$what not ready after ${secs}s (see $DEVCLUSTER_DIR/logs/)"
}

start etcd "$K8S_BIN/etcd" --name devcluster --data-dir "$DEVCLUSTER_DIR/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
  --advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "devcluster=http://127.0.0.1:$ETCD_PEER_PORT" \
  --listen-metrics-urls "" --log-level warn
wait_for etcd 30 curl -sf "http://127.0.0.1:$ETCD_CLIENT_PORT/health"

start kube-apiserver "$K8S_BIN/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$ETCD_CLIENT_PORT" \
  --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$APISERVER_PORT" \
  --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
  --client-ca-file "$PKI/ca.crt" \
  --kubelet-client-certificate "$PKI/admin.crt" --kubelet-client-key "$PKI/admin.key" \
  --kubelet-preferred-address-types InternalIP \
  --authorization-mode RBAC \
  --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
  --service-cluster-ip-range 10.96.0.0/16 \
  --allow-privileged=true \
  --cert-dir "$DEVCLUSTER_DIR/run/apiserver-certs"
wait_for kube-apiserver 120 kubectl_dc get --raw /readyz

start kube-controller-manager "$K8S_BIN/kube-controller-manager" \
  --kubeconfig "$KUBECONFIG_PATH" \
  --authentication-kubeconfig "$KUBECONFIG_PATH" --authorization-kubeconfig "$KUBECONFIG_PATH" \
  --bind-address 127.0.0.1 --secure-port "$KCM_PORT" \
  --leader-elect=false \
  --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
  --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
  --service-cluster-ip-range 10.96.0.0/16 \
  --cert-dir "$DEVCLUSTER_DIR/run/kcm-certs"

start kube-scheduler "$K8S_BIN/kube-scheduler" \
  --kubeconfig "$KUBECONFIG_PATH" \
  --authentication-kubeconfig "$KUBECONFIG_PATH" --authorization-kubeconfig "$KUBECONFIG_PATH" \
  --bind-address 127.0.0.1 --secure-port "$SCHEDULER_PORT" \
  --leader-elect=false \
  --cert-dir "$DEVCLUSTER_DIR/run/scheduler-certs"

# A rebuilt agent replaces the running one (its pods restart under the new one).
if pid="$(component_pid devcluster-agent)" && [[ "$DEVCLUSTER_AGENT_BIN" -nt "$(pid_file devcluster-agent)" ]]; then
  log "the agent binary is newer than the running agent: restarting it"
  kill -TERM "$pid"
  for ((i = 0; i < 400; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$(pid_file devcluster-agent)"
fi
start devcluster-agent env RUST_LOG="${RUST_LOG:-info}" "$DEVCLUSTER_AGENT_BIN" \
  --kubeconfig "$KUBECONFIG_PATH" --node-name "$NODE_NAME" \
  --state-dir "$DEVCLUSTER_DIR/agent" \
  --bin-dir "${DEVCLUSTER_IMAGE_BIN_DIR:-$TARGET_DIR/debug}" \
  --images "$DEVCLUSTER_SRC/images.txt" \
  --api-host 127.0.0.1 --api-port "$APISERVER_PORT" --ca-file "$PKI/ca.crt" \
  --kubelet-port "$KUBELET_PORT" --kubelet-cert "$PKI/kubelet.crt" --kubelet-key "$PKI/kubelet.key"

wait_for "the devcluster-agent node" 60 kubectl_dc wait --for=condition=Ready "node/$NODE_NAME" --timeout=1s
wait_for kube-controller-manager 60 curl -skf "https://127.0.0.1:$KCM_PORT/healthz"
wait_for kube-scheduler 60 curl -skf "https://127.0.0.1:$SCHEDULER_PORT/healthz"
# The default namespace's service account comes from the controller manager; pods need it.
wait_for "the default service account" 60 kubectl_dc get serviceaccount default -n default

log "ready: $(kubectl_dc get --raw /readyz)"
echo "$KUBECONFIG_PATH"
