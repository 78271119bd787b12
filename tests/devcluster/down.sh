#!/usr/bin/env bash
# Stops the devcluster and puts the host back as it was before `up`:
#   1. pods: with the controllers stopped (nothing recreates or schedules), every pod is deleted through
#      the API, so the kubelet stops its containers and sandboxes through the CRI (CNI DEL: veths, IPs,
#      netns mounts); whatever is left after that is killed and deleted through containerd;
#   2. processes: kube-proxy, the kubelet, containerd and its shims, the control plane (SIGTERM, then
#      SIGKILL after a grace period), then any process left in the node's cgroups;
#   3. host: kube-proxy --cleanup, the bridges, route and guard (network.sh), then host.sh restore:
#      mounts, the fixed paths the node wrote, iptables chains, cgroups and sysctls.
# State (etcd data, volumes, images) is kept; `down.sh --purge` removes it too.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
[[ -d "$DEVCLUSTER_DIR" ]] || { log "down (nothing there)"; exit 0; }
[[ "$(id -u)" == 0 ]] || die "the devcluster's node needs root"
T0=$(date +%s%N)
ms() { echo "$(( ($(date +%s%N) - T0) / 1000000 )) ms"; }

stop_pid() { # name pid grace_seconds
  local name="$1" pid="$2" grace="$3" i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < grace * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || { log "stopped $name (pid $pid)"; return 0; }
    sleep 0.1
  done
  log "$name (pid $pid) ignored SIGTERM for ${grace}s: SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
}
stop() { # name [grace]
  local pid
  if pid="$(component_pid "$1")"; then stop_pid "$1" "$pid" "${2:-15}"; fi
  rm -f "$(pid_file "$1")"
}

# 1. Pods, through the kubelet while it runs.
# NB: down does not wait out grace periods: the containers are killed at once, and the kubelet, which
# sees their pods deleted, tears the sandboxes down through the CRI (CNI DEL releases IPs and veths).
running_tasks() { ctr_dc tasks ls 2>/dev/null | awk '$3 == "RUNNING" {print $1}'; }
if component_pid kubelet >/dev/null && component_pid kube-apiserver >/dev/null; then
  stop kube-controller-manager
  stop kube-scheduler
  kubectl_dc delete pods --all --all-namespaces --grace-period=0 --force --wait=false >/dev/null 2>&1 || true
  for id in $(running_tasks); do ctr_dc tasks kill -a -s SIGKILL "$id" >/dev/null 2>&1 || true; done
  for ((i = 0; i < 300; i++)); do
    [[ -z "$(running_tasks)" && -z "$(ip -o link show master "$POD_BRIDGE" 2>/dev/null)" ]] && break
    sleep 0.1
  done
  log "pods stopped ($(ms))"
fi
stop kube-proxy
stop kubelet 20
stop kube-controller-manager
stop kube-scheduler
if component_pid containerd >/dev/null; then
  left="$(ctr_dc containers ls -q 2>/dev/null || true)"
  for id in $left; do ctr_dc tasks kill -a -s SIGKILL "$id" >/dev/null 2>&1 || true; done
  for id in $left; do
    ctr_dc tasks delete -f "$id" >/dev/null 2>&1 || true
    ctr_dc containers delete "$id" >/dev/null 2>&1 || true
  done
  [[ -z "$left" ]] || log "killed $(wc -w <<<"$left") containers the kubelet left"
fi
stop containerd
stop kube-apiserver
stop etcd

# 2. Processes that outlive containerd: its shims, anything in the node's cgroups.
for p in /proc/[0-9]*; do
  exe="$(readlink "$p/exe" 2>/dev/null || true)"
  if [[ "$exe" == "$K8S_BIN/containerd-shim-runc-v2" ]]; then
    log "killing leftover shim ${p#/proc/}"
    kill -KILL "${p#/proc/}" 2>/dev/null || true
  fi
done
for ((i = 0; i < 50; i++)); do
  pids="$(find /sys/fs/cgroup/*/"${CGROUP_ROOT#/}" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u || true)"
  [[ -z "$pids" ]] && break
  ((i > 0)) || log "killing processes left in the node's cgroups: $(echo $pids)"
  kill -KILL $pids 2>/dev/null || true
  sleep 0.1
done

# 3. The host.
if [[ -x "$K8S_BIN/kube-proxy" ]]; then
  env "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" "$K8S_BIN/kube-proxy" --cleanup \
    >>"$DEVCLUSTER_DIR/logs/kube-proxy-cleanup.log" 2>&1 || log "kube-proxy --cleanup failed (see logs/kube-proxy-cleanup.log)"
fi
source "$DEVCLUSTER_SRC/network.sh"
network_down
"$DEVCLUSTER_SRC/host.sh" restore
# No pod holds an address any more (those the kubelet could not release go with their sandboxes).
rm -rf "$DEVCLUSTER_DIR/cni/ipam"

if [[ "${1:-}" == "--purge" ]]; then
  log "removing $DEVCLUSTER_DIR"
  rm -rf "$DEVCLUSTER_DIR"
fi
log "down ($(ms))"
