# The devcluster's pod network (sourced by up.sh and down.sh).
#
#   $NODE_BRIDGE  a bridge with no ports: it holds the node IP ($NODE_IP/32), which the API server and
#                 the kubelet bind, and the route of the Service CIDR, so a ClusterIP that kube-proxy
#                 does not translate dies on this machine instead of going to the default route.
#                 $HOST_LOCAL_CIDR is routed to it as `local`: every address in it is this machine's.
#                 NB: a bridge, since this kernel has no `dummy` netdev (no modules at all).
#   $POD_BRIDGE   the pods' bridge with the gateway $POD_GATEWAY; the CNI bridge plugin plugs each pod's
#                 veth into it (no masquerade: pod IPs are seen as they are). Made here, before any pod,
#                 so the pod CIDR is routed to it from the start.
#   guard         the mangle FORWARD chain DEVCLUSTER-GUARD drops every forwarded packet that enters or
#                 leaves through an uplink (an interface with a default route): no pod packet can leave
#                 the machine, and nothing from outside can reach a pod.

GUARD_CHAIN=DEVCLUSTER-GUARD
CNI_CONF_DIR="$DEVCLUSTER_DIR/cni/net.d"

network_up() {
  ip link show "$NODE_BRIDGE" >/dev/null 2>&1 || ip link add "$NODE_BRIDGE" type bridge
  ip addr replace "$NODE_IP/32" dev "$NODE_BRIDGE"
  ip link set "$NODE_BRIDGE" up
  ip route replace "$SERVICE_CIDR" dev "$NODE_BRIDGE"
  ip route replace local "$HOST_LOCAL_CIDR" dev "$NODE_BRIDGE"

  ip link show "$POD_BRIDGE" >/dev/null 2>&1 || ip link add "$POD_BRIDGE" type bridge
  ip addr replace "$POD_GATEWAY/${POD_CIDR#*/}" dev "$POD_BRIDGE"
  ip link set "$POD_BRIDGE" up

  iptables -w -t mangle -N "$GUARD_CHAIN" 2>/dev/null || true
  iptables -w -t mangle -F "$GUARD_CHAIN"
  local u
  for u in $(uplinks); do
    iptables -w -t mangle -A "$GUARD_CHAIN" -o "$u" -j DROP
    iptables -w -t mangle -A "$GUARD_CHAIN" -i "$u" -j DROP
  done
  iptables -w -t mangle -C FORWARD -j "$GUARD_CHAIN" 2>/dev/null \
    || iptables -w -t mangle -I FORWARD 1 -j "$GUARD_CHAIN"

  # NB: no `loopback` in the chain: containerd brings up each pod's lo itself.
  mkdir -p "$CNI_CONF_DIR" "$DEVCLUSTER_DIR/cni/ipam"
  cat > "$CNI_CONF_DIR/10-devcluster.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "devcluster",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$POD_BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$POD_GATEWAY"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$DEVCLUSTER_DIR/cni/ipam"
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
JSON
}

# Removes the bridges (with any veth left on the pods' bridge), the route and the guard.
network_down() {
  local l
  for l in $(ip -o link show master "$POD_BRIDGE" 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
    ip link del "$l" 2>/dev/null || true
  done
  ip link del "$POD_BRIDGE" 2>/dev/null || true
  ip link del "$NODE_BRIDGE" 2>/dev/null || true
  while iptables -w -t mangle -D FORWARD -j "$GUARD_CHAIN" 2>/dev/null; do :; done
  iptables -w -t mangle -F "$GUARD_CHAIN" 2>/dev/null || true
  iptables -w -t mangle -X "$GUARD_CHAIN" 2>/dev/null || true
}
