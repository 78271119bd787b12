#!/usr/bin/env bash
# Starts a local 3-member ProgLog cluster on 127.0.0.1:8400-8402 with mutual TLS on every plane,
# forms it through the admin API (the operator's certificate), prints how to use it, and stops
# the members on Ctrl-C. The first run writes a development PKI and the book's ACL files under
# $RUN_DIR/tls (CA, member, operator, and the users root, who may produce and consume, and
# nobody, who may not). Data and certificates stay under $RUN_DIR between runs (delete it for a
# fresh cluster).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/proglog
RUN_DIR=${RUN_DIR:-$CACHE/run}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CACHE/target}
BIN=$CARGO_TARGET_DIR/debug

for port in 8400 8401 8402; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "make run-local: 127.0.0.1:$port is already in use (another 'make run-local'?). Stop that first." >&2
    exit 1
  fi
done

echo "building logserver, the proglog CLI and proglog-certs..."
(cd "$ROOT" && cargo build -q -p logserver --bins -p proglog-client -p proglog-tls --features proglog-tls/issue)

mkdir -p "$RUN_DIR"
TLS=$RUN_DIR/tls
"$BIN/proglog-certs" "$TLS"

PIDS=()
stop() {
  trap - INT TERM EXIT
  echo
  echo "stopping members..."
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  echo "stopped. data is in $RUN_DIR"
}
trap stop INT TERM EXIT

MEMBERS=()
for i in 1 2 3; do
  addr=127.0.0.1:$((8399 + i))
  MEMBERS+=(--member "$i=$addr")
  "$BIN/logserver" --id "$i" --name "m$i" --data-dir "$RUN_DIR/m$i" --listen "$addr" \
    --advertise "$addr" --tls-ca "$TLS/ca.pem" --tls-cert "$TLS/member.pem" \
    --tls-key "$TLS/member-key.pem" --acl-model "$TLS/model.conf" --acl-policy "$TLS/policy.csv" \
    --metrics-listen "127.0.0.1:$((9399 + i))" >"$RUN_DIR/m$i.log" 2>&1 &
  PIDS+=($!)
done

admin() { "$BIN/proglog" --ca "$TLS/ca.pem" --cert "$TLS/operator.pem" --key "$TLS/operator-key.pem" "$@"; }
for i in 1 2 3; do
  # Members answer health checks as soon as they listen; NOT_SERVING is fine before init.
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$((8399 + i))") 2>/dev/null; then break; fi
    sleep 0.1
  done
done
admin --addr 127.0.0.1:8400 admin init "${MEMBERS[@]}"
for i in 1 2 3; do admin --addr "127.0.0.1:$((8399 + i))" admin wait-serving --timeout-secs 30; done

cat <<MSG

ProgLog is running with mutual TLS: members 1,2,3 on 127.0.0.1:8400, :8401, :8402
(logs: $RUN_DIR/m*.log; certificates and ACL: $TLS).

  # the proglog CLI ($BIN/proglog) as user "root" (the ACL lets root produce and consume):
  export PROGLOG_CA=$TLS/ca.pem PROGLOG_CERT=$TLS/root.pem PROGLOG_KEY=$TLS/root-key.pem
  export PROGLOG_ADDR=127.0.0.1:8400,127.0.0.1:8401,127.0.0.1:8402
  proglog produce hello world
  proglog consume --from 0 --follow
  proglog servers
  # user "nobody" is refused: PERMISSION_DENIED naming the subject and the action
  proglog --cert $TLS/nobody.pem --key $TLS/nobody-key.pem produce nope

  # grpcurl (server reflection, no .proto files needed); values are bytes, so JSON carries them
  # in base64 ("aGVsbG8=" is "hello"):
  G="grpcurl -cacert $TLS/ca.pem -cert $TLS/root.pem -key $TLS/root-key.pem"
  \$G 127.0.0.1:8400 list
  \$G -d '{"record":{"value":"aGVsbG8="}}' 127.0.0.1:8400 proglog.v1.Log/Produce
  \$G -d '{"offset":0}' 127.0.0.1:8401 proglog.v1.Log/Consume
  # the book's API ("Distributed Services with Go", log.v1) over the same log:
  \$G -d '{"offset":0}' 127.0.0.1:8402 log.v1.Log/Consume
  # admin API: only the operator's certificate
  grpcurl -cacert $TLS/ca.pem -cert $TLS/operator.pem -key $TLS/operator-key.pem 127.0.0.1:8400 proglog.v1.Cluster/Status
  $BIN/proglog --cert $TLS/operator.pem --key $TLS/operator-key.pem admin status
  # the chain a member presents:
  openssl s_client -connect 127.0.0.1:8400 -CAfile $TLS/ca.pem -showcerts </dev/null
  # Prometheus metrics of each member (9400-9402, plain HTTP on loopback):
  curl -s 127.0.0.1:9400/metrics | grep -v '^#'
  # load:
  $BIN/proglog-bench --addr 127.0.0.1:8400 --ca $TLS/ca.pem --cert $TLS/root.pem --key $TLS/root-key.pem --clients 8 --duration-secs 10

A Produce sent to a follower fails with UNAVAILABLE and the leader's address in the
'proglog-leader' response header. Renewed certificates written over the files are picked up
within a second, without a restart. Ctrl-C stops the members.
MSG
wait "${PIDS[@]}"
