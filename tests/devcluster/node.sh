# The devcluster's node: containerd, the kubelet, kube-proxy and the add-ons (sourced by up.sh, which
# defines `start` and `wait_for`). Settings that were each needed on these machines carry an NB.

CTRD_CONFIG="$DEVCLUSTER_DIR/containerd.toml"

# write_config NAME FILE: writes stdin to FILE; when that changes FILE, a running NAME is stopped, so the
# `start` that follows runs it with the new settings.
write_config() {
  local name="$1" file="$2" pid i
  cat > "$file.new"
  if cmp -s "$file.new" "$file"; then rm -f "$file.new"; return 0; fi
  mv -f "$file.new" "$file"
  if pid="$(component_pid "$name")"; then
    log "$name: settings changed, restarting it"
    kill -TERM "$pid"
    for ((i = 0; i < 300; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$(pid_file "$name")"
  fi
}
KUBELET_DIR="$DEVCLUSTER_DIR/kubelet"
POD_LOGS_DIR="$DEVCLUSTER_DIR/pod-logs"

containerd_up() {
  mkdir -p "$CTRD_DIR" "$DEVCLUSTER_DIR/registry/_default"
  printf 'server = "http://127.0.0.1:9"\n' > "$DEVCLUSTER_DIR/registry/_default/hosts.toml"
  write_config containerd "$CTRD_CONFIG" <<TOML
version = 3
root = "$CTRD_DIR/root"
state = "$CTRD_DIR/state"
imports = []
# NB: the opt plugin would make /opt/containerd; nothing here uses it.
disabled_plugins = ["io.containerd.internal.v1.opt"]

# NB: NRI would listen on /var/run/nri; nothing here uses it.
[plugins.'io.containerd.nri.v1.nri']
  disable = true

[grpc]
  address = "$CONTAINERD_SOCK"

[ttrpc]
  address = "$CONTAINERD_SOCK.ttrpc"

[metrics]
  address = ""

[plugins.'io.containerd.cri.v1.runtime']
  # NB: the capability bounding set lacks CAP_SYS_RESOURCE, so runc cannot lower a container's
  # oom_score_adj below its own: every sandbox would fail. Keep containers at or above containerd's.
  restrict_oom_score_adj = true
  # NB: pod network namespaces are bind-mounted under the state dir, not /run/netns.
  netns_mounts_under_state_dir = true
  enable_selinux = false

[plugins.'io.containerd.cri.v1.runtime'.containerd]
  default_runtime_name = "runc"

[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
  BinaryName = "$(command -v runc)"
  SystemdCgroup = false

[plugins.'io.containerd.cri.v1.runtime'.cni]
  bin_dirs = ["$CNI_BIN"]
  conf_dir = "$DEVCLUSTER_DIR/cni/net.d"
  max_conf_num = 1

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"

# NB: every registry is this machine's port 9, where nothing listens: an image that is not imported
# fails at once (ErrImagePull) and no pull ever sends a packet off the machine.
[plugins.'io.containerd.cri.v1.images'.registry]
  config_path = "$DEVCLUSTER_DIR/registry"

[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = "$PAUSE_IMAGE"

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
TOML
  local s
  # NB: the shim is found on PATH; runc, iptables (portmap) and mount live in the system dirs.
  s="$(start containerd env "PATH=$K8S_BIN:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    "$K8S_BIN/containerd" --config "$CTRD_CONFIG" --log-level warn)"
  wait_for containerd 30 ctr_dc version
  log "containerd $s, socket $CONTAINERD_SOCK"
}

write_kubeconfig() { # file user-cert-name
  cat > "$1" <<KC
apiVersion: v1
kind: Config
clusters:
- name: devcluster
  cluster:
    server: https://$API_HOST:$APISERVER_PORT
    certificate-authority: $PKI/ca.crt
users:
- name: $2
  user:
    client-certificate: $PKI/$2.crt
    client-key: $PKI/$2.key
contexts:
- name: devcluster
  context: {cluster: devcluster, user: $2}
current-context: devcluster
KC
}

write_kubeconfigs() {
  write_kubeconfig "$KUBECONFIG_PATH" admin
  write_kubeconfig "$DEVCLUSTER_DIR/kubelet.kubeconfig" node
  write_kubeconfig "$DEVCLUSTER_DIR/kube-proxy.kubeconfig" kube-proxy
}

# The kubelet's cgroup parent, in every cgroup v1 hierarchy (and the unified one of a hybrid host).
make_cgroup_root() {
  local h
  for h in /sys/fs/cgroup/*/; do
    [[ -d "$h${CGROUP_ROOT#/}" ]] && continue
    mkdir "$h${CGROUP_ROOT#/}"
    if [[ -f "$h/cpuset.cpus" ]]; then
      cat "$h/cpuset.cpus" > "$h${CGROUP_ROOT#/}/cpuset.cpus"
      cat "$h/cpuset.mems" > "$h${CGROUP_ROOT#/}/cpuset.mems"
    fi
  done
}

kubelet_up() {
  mkdir -p "$KUBELET_DIR" "$POD_LOGS_DIR" "$DEVCLUSTER_DIR/kubelet-plugins"
  make_cgroup_root
  # NB: pods get the cluster DNS; anything that falls back to the node's resolv.conf gets an address
  # where nothing listens, never the machine's resolver.
  echo "nameserver $NODE_IP" > "$DEVCLUSTER_DIR/resolv.conf"
  write_config kubelet "$DEVCLUSTER_DIR/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
tlsCertFile: $PKI/kubelet.crt
tlsPrivateKeyFile: $PKI/kubelet.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
# NB: these hosts are cgroup v1 (hybrid) with no systemd as PID 1.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: $CGROUP_ROOT
cgroupsPerQOS: true
failSwapOn: false
# NB: no CAP_SYS_RESOURCE: the kubelet may not lower its own oom_score_adj (default -999).
oomScoreAdj: 0
clusterDNS: [$CLUSTER_DNS_IP]
clusterDomain: $CLUSTER_DOMAIN
resolvConf: $DEVCLUSTER_DIR/resolv.conf
podLogsDir: $POD_LOGS_DIR
volumePluginDir: $DEVCLUSTER_DIR/kubelet-plugins
staticPodPath: ""
rotateCertificates: false
serverTLSBootstrap: false
registerNode: true
maxPods: 110
# Images are imported, never pulled: keep them however full the disk gets.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
# NB: the disk is shared with everything else on the machine: only a nearly full one counts as pressure
# (a tainted node schedules nothing, and eviction would delete the imported images no pod uses).
evictionHard: {memory.available: "100Mi", nodefs.available: "256Mi", imagefs.available: "256Mi",
  nodefs.inodesFree: "1%", imagefs.inodesFree: "1%"}
evictionPressureTransitionPeriod: 10s
shutdownGracePeriod: 0s
# NB: a pod's Secret and ConfigMap volumes are refreshed on its sync, every syncFrequency (1m by
# default): 10s makes renewed certificates and ACL policy reach the members in seconds (tests of
# renewal and revocation wait on that), for a little CPU on a node of a few pods.
syncFrequency: 10s
YAML
  local s
  s="$(start kubelet env "PATH=$K8S_BIN:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    "$K8S_BIN/kubelet" --config "$DEVCLUSTER_DIR/kubelet.yaml" \
    --kubeconfig "$DEVCLUSTER_DIR/kubelet.kubeconfig" --root-dir "$KUBELET_DIR" \
    --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" --v 1)"
  # NB: the Node (and its Ready condition) outlive a `down` in etcd: the kubelet's own health first.
  wait_for "the kubelet" 90 curl -sf "http://127.0.0.1:$KUBELET_HEALTHZ_PORT/healthz"
  wait_for "the kubelet's node" 90 kubectl_dc wait --for=condition=Ready "node/$NODE_NAME" --timeout=1s
  echo "kubelet $s, node $NODE_NAME Ready"
}

kube_proxy_up() {
  write_config kube-proxy "$DEVCLUSTER_DIR/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $DEVCLUSTER_DIR/kube-proxy.kubeconfig}
hostnameOverride: $NODE_NAME
mode: iptables
clusterCIDR: $POD_CIDR
healthzBindAddress: 127.0.0.1:$PROXY_HEALTHZ_PORT
metricsBindAddress: 127.0.0.1:$PROXY_METRICS_PORT
nodePortAddresses: ["$NODE_IP/32"]
# NB: these leave the host's sysctls alone (route_localnet, nf_conntrack_*).
iptables: {localhostNodePorts: false, minSyncPeriod: 0s, syncPeriod: 30s}
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s, udpTimeout: 0s, udpStreamTimeout: 0s}
YAML
  local s
  s="$(start kube-proxy env "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    "$K8S_BIN/kube-proxy" --config "$DEVCLUSTER_DIR/kube-proxy.yaml" --v 1)"
  wait_for kube-proxy 60 curl -sf "http://127.0.0.1:$PROXY_HEALTHZ_PORT/healthz"
  echo "kube-proxy $s"
}

# addons_apply NAME: applies addons/NAME.yaml (with this cluster's values) and waits for it.
addons_apply() {
  local out
  out="$(sed -e "s|@CLUSTER_DNS_IP@|$CLUSTER_DNS_IP|g" -e "s|@CLUSTER_DOMAIN@|$CLUSTER_DOMAIN|g" \
    -e "s|@COREDNS_IMAGE@|$COREDNS_IMAGE|g" -e "s|@LOCAL_PATH_IMAGE@|$LOCAL_PATH_IMAGE|g" \
    -e "s|@BUSYBOX_IMAGE@|$BUSYBOX_IMAGE|g" -e "s|@VOLUMES_DIR@|$DEVCLUSTER_DIR/volumes|g" \
    "$DEVCLUSTER_SRC/addons/$1.yaml" | kubectl_dc apply --server-side --force-conflicts -f - 2>&1)" \
    || die "applying addons/$1.yaml: $out"
  case "$1" in
    coredns)
      kubectl_dc -n kube-system rollout status deployment/coredns --timeout=120s >/dev/null \
        || die "CoreDNS not ready (kubectl -n kube-system describe pods -l k8s-app=kube-dns)"
      echo "kube-dns at $CLUSTER_DNS_IP, pod $(kubectl_dc -n kube-system get pods -l k8s-app=kube-dns \
        -o jsonpath='{.items[0].status.podIP}')" ;;
    storage)
      mkdir -p "$DEVCLUSTER_DIR/volumes"
      kubectl_dc -n kube-system rollout status deployment/local-path-provisioner --timeout=120s >/dev/null \
        || die "local-path-provisioner not ready"
      echo "StorageClass standard (default), volumes in $DEVCLUSTER_DIR/volumes" ;;
  esac
}
