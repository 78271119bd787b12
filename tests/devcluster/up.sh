#!/usr/bin/env bash
# Starts the devcluster: a stock control plane and a stock node on this machine, with state and logs
# under $DEVCLUSTER_DIR, one progress line per step. Prints the kubeconfig path last. Running it while
# the cluster is up changes nothing (each step checks first). Needs root.
#
#   pod network   a bridge with no ports holding the node IP (the Service CIDR is routed to it), the
#                 pods' CNI bridge, and a guard so no pod packet leaves through the uplink
#   containerd    its own root, state and socket; runc from Debian; the node's images imported
#   control plane etcd, kube-apiserver (node IP), kube-controller-manager, kube-scheduler (127.0.0.1)
#   kubelet       cgroup v1 (cgroupfs, its own cgroupRoot), the node's serving certificate; Node Ready
#   kube-proxy    iptables mode, leaves host sysctls alone
#   CoreDNS       Deployment + the kube-dns Service at the cluster DNS IP (cluster names only)
#   storage       the default StorageClass `standard` (local-path-provisioner, WaitForFirstConsumer)
#
# Environment: DEVCLUSTER_DIR, PROGLOG_CACHE, DEVCLUSTER_* (see lib.sh).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
[[ "$(id -u)" == 0 ]] || die "the devcluster's node needs root (network, mounts, cgroups)"

mkdir -p "$DEVCLUSTER_DIR"/{run,logs,pki,etcd}
exec 8>"$DEVCLUSTER_DIR/run/up.lock"
flock 8

STEPS=10
n=0
step() { n=$((n + 1)); STEP="$1"; T0=$(date +%s%N); log "[$n/$STEPS] $STEP ..."; }
ok() { log "[$n/$STEPS] $STEP: ${1:-ok} ($(( ($(date +%s%N) - T0) / 1000000 )) ms)"; }

# start name command... : runs a component in its own session, logs to logs/<name>.log.
start() {
  local name="$1"; shift
  if pid="$(component_pid "$name")"; then
    echo "running (pid $pid)"
    return 0
  fi
  # NB: 8>&- so that the component does not inherit (and hold forever) the lock of this script.
  setsid "$@" >>"$DEVCLUSTER_DIR/logs/$name.log" 2>&1 < /dev/null 8>&- &
  echo $! > "$(pid_file "$name")"
  echo "started (pid $!)"
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

step "binaries"
"$DEVCLUSTER_SRC/k8s-bins.sh" 2> >(grep -v ': up to date$' >&2)
command -v runc >/dev/null && command -v iptables >/dev/null \
  || die "runc and iptables are needed: run scripts/install-deps.sh"
ok
step "certificates and images"
"$DEVCLUSTER_SRC/certs.sh" "$DEVCLUSTER_DIR/pki"
PKI="$DEVCLUSTER_DIR/pki"
images="$("$DEVCLUSTER_SRC/node-images.sh")"
mapfile -t IMAGES <<<"$images"
ok "${#IMAGES[@]} images"

step "pod network"
# What the host looked like before anything of ours ran: down.sh puts it back.
"$DEVCLUSTER_SRC/host.sh" record
source "$DEVCLUSTER_SRC/network.sh"
network_up
ok "node $NODE_IP on $NODE_BRIDGE, pods $POD_CIDR on $POD_BRIDGE, services $SERVICE_CIDR"

step "containerd"
source "$DEVCLUSTER_SRC/node.sh"
containerd_up
out="$(import_images "${IMAGES[@]}")"
ok "$out"

step "etcd and kube-apiserver"
write_kubeconfigs
s1="$(start etcd "$K8S_BIN/etcd" --name devcluster --data-dir "$DEVCLUSTER_DIR/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
  --advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "devcluster=http://127.0.0.1:$ETCD_PEER_PORT" \
  --listen-metrics-urls "" --log-level warn)"
wait_for etcd 30 curl -sf "http://127.0.0.1:$ETCD_CLIENT_PORT/health"
s2="$(start kube-apiserver "$K8S_BIN/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$ETCD_CLIENT_PORT" \
  --bind-address "$NODE_IP" --advertise-address "$NODE_IP" --secure-port "$APISERVER_PORT" \
  --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
  --client-ca-file "$PKI/ca.crt" \
  --kubelet-client-certificate "$PKI/admin.crt" --kubelet-client-key "$PKI/admin.key" \
  --kubelet-certificate-authority "$PKI/ca.crt" \
  --kubelet-preferred-address-types InternalIP \
  --authorization-mode Node,RBAC \
  --enable-admission-plugins NodeRestriction \
  --service-account-issuer "https://kubernetes.default.svc.$CLUSTER_DOMAIN" \
  --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
  --service-cluster-ip-range "$SERVICE_CIDR" \
  --allow-privileged=true \
  --cert-dir "$DEVCLUSTER_DIR/run/apiserver-certs")"
wait_for kube-apiserver 120 kubectl_dc get --raw /readyz
ok "etcd $s1, kube-apiserver $s2, https://$NODE_IP:$APISERVER_PORT"

step "kube-controller-manager and kube-scheduler"
s1="$(start kube-controller-manager "$K8S_BIN/kube-controller-manager" \
  --kubeconfig "$KUBECONFIG_PATH" \
  --authentication-kubeconfig "$KUBECONFIG_PATH" --authorization-kubeconfig "$KUBECONFIG_PATH" \
  --bind-address 127.0.0.1 --secure-port "$KCM_PORT" \
  --leader-elect=false \
  --use-service-account-credentials \
  --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
  --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
  --service-cluster-ip-range "$SERVICE_CIDR" \
  --allocate-node-cidrs --cluster-cidr "$POD_CIDR" --node-cidr-mask-size "${POD_CIDR#*/}" \
  --flex-volume-plugin-dir "$DEVCLUSTER_DIR/kcm-flexvolume" \
  --cert-dir "$DEVCLUSTER_DIR/run/kcm-certs")"
s2="$(start kube-scheduler "$K8S_BIN/kube-scheduler" \
  --kubeconfig "$KUBECONFIG_PATH" \
  --authentication-kubeconfig "$KUBECONFIG_PATH" --authorization-kubeconfig "$KUBECONFIG_PATH" \
  --bind-address 127.0.0.1 --secure-port "$SCHEDULER_PORT" \
  --leader-elect=false \
  --cert-dir "$DEVCLUSTER_DIR/run/scheduler-certs")"
wait_for kube-controller-manager 60 curl -skf "https://127.0.0.1:$KCM_PORT/healthz"
wait_for kube-scheduler 60 curl -skf "https://127.0.0.1:$SCHEDULER_PORT/healthz"
ok "kube-controller-manager $s1, kube-scheduler $s2"

step "kubelet"
out="$(kubelet_up)"
ok "$out"

step "kube-proxy"
out="$(kube_proxy_up)"
ok "$out"

step "CoreDNS"
out="$(addons_apply coredns)"
ok "$out"

step "storage"
out="$(addons_apply storage)"
ok "$out"

# The default namespace's service account comes from the controller manager; pods need it.
wait_for "the default service account" 60 kubectl_dc get serviceaccount default -n default
log "ready: kubectl get nodes -o wide: $(kubectl_dc get nodes --no-headers -o wide | awk '{print $1, $2, $6}')"
echo "$KUBECONFIG_PATH"
