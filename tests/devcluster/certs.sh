#!/usr/bin/env bash
# Makes the devcluster's PKI in $1 (each file once): a CA; serving certificates for the API server and
# the kubelet; client certificates for the user and the control plane (system:masters), the kubelet
# (system:node:<node>, group system:nodes, so the Node authorizer and NodeRestriction apply) and
# kube-proxy (system:kube-proxy, bound to system:node-proxier by the default RBAC policy); and the
# service-account key pair.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
PKI="$1"
# NB: the marker names what the certificates were made for; other addresses (or an older layout)
# make them all again.
MARK="v2 $NODE_IP $SERVICE_API_IP $NODE_NAME"
[[ "$(cat "$PKI/done" 2>/dev/null)" == "$MARK" ]] && exit 0
command -v openssl >/dev/null || die "openssl is needed to make certificates (Debian package: openssl)"
rm -rf "$PKI"
mkdir -p "$PKI"
cd "$PKI"
log "making certificates in $PKI"
q() { "$@" 2>/dev/null >/dev/null || "$@"; }
q openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 -subj "/CN=devcluster-ca" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature"

sign() { # name subject extensions
  q openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2"
  printf '%s\n' "$3" > "$1.ext"
  q openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -out "$1.crt" -days 3650 \
    -extfile "$1.ext"
  rm -f "$1.csr" "$1.ext"
}
server="basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth"
client="basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
sign apiserver "/CN=kube-apiserver" "$server
subjectAltName=IP:$NODE_IP,IP:127.0.0.1,IP:$SERVICE_API_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.$CLUSTER_DOMAIN"
sign kubelet "/CN=$NODE_NAME" "$server
subjectAltName=IP:$NODE_IP,IP:127.0.0.1,DNS:$NODE_NAME,DNS:localhost"
sign admin "/O=system:masters/CN=devcluster-admin" "$client"
sign node "/O=system:nodes/CN=system:node:$NODE_NAME" "$client"
sign kube-proxy "/CN=system:kube-proxy" "$client"
q openssl genrsa -out sa.key 2048
q openssl rsa -in sa.key -pubout -out sa.pub
chmod 600 ./*.key
echo "$MARK" > done
