#!/usr/bin/env bash
# Makes the devcluster's PKI in $1 (each file once): a CA, the API server's and the agent's (kubelet
# endpoint) serving certificates, one client certificate (system:masters) shared by the components, the
# API server's kubelet client and the user, and the service-account key pair.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
PKI="$1"
[[ -f "$PKI/done" && -f "$PKI/kubelet.crt" ]] && exit 0
command -v openssl >/dev/null || die "openssl is needed to make certificates (Debian package: openssl)"
mkdir -p "$PKI"
cd "$PKI"
log "making certificates in $PKI"
q() { "$@" 2>/dev/null >/dev/null || "$@"; }
[[ -f ca.crt ]] || q openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 -subj "/CN=devcluster-ca" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature"

sign() { # name subject extensions
  [[ -f "$1.crt" ]] && return 0
  q openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2"
  printf '%s\n' "$3" > "$1.ext"
  q openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -out "$1.crt" -days 3650 \
    -extfile "$1.ext"
  rm -f "$1.csr" "$1.ext"
}
sign apiserver "/CN=kube-apiserver" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
sign admin "/O=system:masters/CN=devcluster-admin" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
sign kubelet "/CN=devcluster-node" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost"
[[ -f sa.key ]] || q openssl genrsa -out sa.key 2048
[[ -f sa.pub ]] || q openssl rsa -in sa.key -pubout -out sa.pub
chmod 600 ./*.key
touch done
