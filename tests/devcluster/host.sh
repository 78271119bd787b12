#!/usr/bin/env bash
# What the devcluster changes on the host outside its own directory, recorded before the first `up`
# and put back by `down`:
#   host.sh record    (up.sh, before the pod network) once per up/down cycle: the sysctls, which of the
#                     fixed paths the node writes exist, the iptables chains, whether the cgroup exists
#   host.sh restore   (down.sh, after every process is gone) unmounts what is left under the fixed paths
#                     and the devcluster dir, removes the paths, iptables chains and cgroups that were not
#                     there, writes back every sysctl that changed, then forgets the record
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
HOST_DIR="$DEVCLUSTER_DIR/host"
# Paths the kubelet, containerd, its shims and the CNI plugins use whatever they are told.
FIXED_PATHS=(/run/containerd /var/lib/cni /var/log/containers /var/log/pods /var/lib/kubelet
  /var/lib/containerd /etc/containerd /opt/containerd /run/netns /etc/cni /opt/cni /run/runc /run/nri /etc/kubernetes)
# Chains of ours: the kubelet's and kube-proxy's KUBE-*, the CNI plugins' CNI-*, the guard.
CHAIN_RE='^(KUBE-|CNI-|DEVCLUSTER-)'
# Values that change on their own.
VOLATILE_RE='^(fs\.(dentry-state|file-nr|inode-nr|inode-state|quota\.[a-z_]+) |kernel\.ns_last_pid |kernel\.random\.|net\.netfilter\.nf_conntrack_count )'

sysctls() { sysctl -a 2>/dev/null | grep -Ev "$VOLATILE_RE" || true; }
chains() { # iptables|ip6tables -> "table chain" lines
  "$1-save" 2>/dev/null | awk '/^\*/ {t = substr($0, 2)} /^:/ {print t, substr($1, 2)}' || true
}

record() {
  [[ -f "$HOST_DIR/done" ]] && return 0
  mkdir -p "$HOST_DIR"
  sysctls > "$HOST_DIR/sysctl"
  local p
  for p in "${FIXED_PATHS[@]}"; do [[ -e "$p" ]] && echo "$p"; done > "$HOST_DIR/paths" || true
  chains iptables > "$HOST_DIR/iptables"
  chains ip6tables > "$HOST_DIR/ip6tables"
  for p in /sys/fs/cgroup/*/; do [[ -d "$p${CGROUP_ROOT#/}" ]] && echo "$p${CGROUP_ROOT#/}"; done \
    > "$HOST_DIR/cgroups" || true
  touch "$HOST_DIR/done"
}

# Unmounts every mount point at or under $1, deepest first.
unmount_under() {
  local m
  for m in $(awk -v p="$1" '$5 == p || index($5, p "/") == 1 {print $5}' /proc/self/mountinfo | sort -r); do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "could not unmount $m"
  done
}

purge_chains() { # iptables|ip6tables recorded-file
  local ipt="$1" before="$2" table chain rule
  for table in $(chains "$ipt" | awk '{print $1}' | sort -u); do
    # Rules that jump to a chain of ours from a chain that stays (FORWARD, INPUT, ...).
    { "$ipt-save" -t "$table" 2>/dev/null | grep '^-A ' || true; } | while read -r rule; do
      chain="$(awk '{print $2}' <<<"$rule")"
      if ! grep -Eq "$CHAIN_RE" <<<"$chain" && grep -Eq -- "-j (KUBE-|CNI-|DEVCLUSTER-)" <<<"$rule"; then
        # shellcheck disable=SC2086
        eval "$ipt -w -t $table -D ${rule#-A }" 2>/dev/null || log "could not delete $ipt -t $table $rule"
      fi
    done
    for chain in $(chains "$ipt" | awk -v t="$table" '$1 == t {print $2}' | grep -E "$CHAIN_RE"); do
      grep -qx "$table $chain" "$before" 2>/dev/null && continue
      "$ipt" -w -t "$table" -F "$chain" 2>/dev/null || true
    done
    for chain in $(chains "$ipt" | awk -v t="$table" '$1 == t {print $2}' | grep -E "$CHAIN_RE"); do
      grep -qx "$table $chain" "$before" 2>/dev/null && continue
      "$ipt" -w -t "$table" -X "$chain" 2>/dev/null || log "could not delete chain $ipt -t $table $chain"
    done
    # NB: with the nf_tables backend a table appears with its first chain and stays when that goes: drop
    # a table that was not there before and holds nothing but empty built-in chains.
    if ! grep -q "^$table " "$before" && command -v nft >/dev/null \
       && ! "$ipt-save" -t "$table" 2>/dev/null | grep -q '^-A ' \
       && ! "$ipt-save" -t "$table" 2>/dev/null | grep '^:' | grep -vq ' ACCEPT '; then
      nft delete table "$([[ $ipt == ip6tables ]] && echo ip6 || echo ip)" "$table" 2>/dev/null \
        || log "could not delete the empty table $ipt -t $table"
    fi
  done
}

restore() {
  [[ -f "$HOST_DIR/done" ]] || return 0
  local p key val cur
  # Mounts: pod volumes and netns mounts (under the kubelet's and containerd's dirs), then the rest.
  unmount_under "$DEVCLUSTER_DIR"
  for p in "${FIXED_PATHS[@]}"; do
    unmount_under "$p"
    if [[ -e "$p" ]] && ! grep -qx "$p" "$HOST_DIR/paths"; then rm -rf "$p"; fi
  done
  purge_chains iptables "$HOST_DIR/iptables"
  purge_chains ip6tables "$HOST_DIR/ip6tables"
  # cgroups: ours is removed in every hierarchy, deepest first (a cgroup goes once it has no process).
  for p in /sys/fs/cgroup/*/"${CGROUP_ROOT#/}"; do
    [[ -d "$p" ]] || continue
    grep -qx "$p" "$HOST_DIR/cgroups" && continue
    find "$p" -depth -type d -exec rmdir {} \; 2>/dev/null || log "could not remove cgroup $p"
  done
  # sysctls the node changed (the kubelet's kernel tunables, ip_forward from the CNI bridge plugin...).
  while IFS= read -r line; do
    key="${line%% = *}"; val="${line#* = }"
    cur="$(sysctl -n "$key" 2>/dev/null | tr '\n' ' ' | sed 's/ $//')" || continue
    [[ "$cur" == "$(printf '%s' "$val" | tr '\t' ' ')" || "$cur" == "$val" ]] && continue
    if sysctl -qw "$key=$val" 2>/dev/null; then
      log "restored sysctl $key = $val (was $cur)"
    fi
  done < <(sysctls | diff - "$HOST_DIR/sysctl" | sed -n 's/^> //p')
  rm -rf "$HOST_DIR"
}

case "${1:-}" in
  record) record ;;
  restore) restore ;;
  *) die "usage: host.sh record|restore" ;;
esac
