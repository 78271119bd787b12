#!/usr/bin/env bash
# Starts a local 3-member ProgLog cluster on 127.0.0.1:8400-8402, forms it through the admin API,
# prints how to use it, and stops the members on Ctrl-C. Data stays under $RUN_DIR between runs
# (delete it for a fresh cluster).
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

echo "building logserver and the proglog CLI..."
(cd "$ROOT" && cargo build -q -p logserver --bins -p proglog-client)

mkdir -p "$RUN_DIR"
TOKEN_FILE=$RUN_DIR/admin-token
if [[ ! -s $TOKEN_FILE ]]; then
  (umask 077 && head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$TOKEN_FILE")
fi

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
    --advertise "$addr" --admin-token-file "$TOKEN_FILE" >"$RUN_DIR/m$i.log" 2>&1 &
  PIDS+=($!)
done

admin() { "$BIN/proglog" --admin-token-file "$TOKEN_FILE" "$@"; }
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

ProgLog is running: members 1,2,3 on 127.0.0.1:8400, :8401, :8402 (logs: $RUN_DIR/m*.log).

  # with the proglog CLI ($BIN/proglog):
  proglog --addr 127.0.0.1:8400,127.0.0.1:8401,127.0.0.1:8402 produce hello world
  proglog --addr 127.0.0.1:8400,127.0.0.1:8401,127.0.0.1:8402 consume --from 0 --follow
  proglog --addr 127.0.0.1:8400 servers

  # with grpcurl (server reflection, no .proto files needed):
  grpcurl -plaintext 127.0.0.1:8400 list
  # values are bytes, so JSON carries them in base64 ("aGVsbG8=" is "hello"):
  grpcurl -plaintext -d '{"record":{"value":"aGVsbG8="}}' 127.0.0.1:8400 proglog.v1.Log/Produce
  grpcurl -plaintext -d '{"offset":0}' 127.0.0.1:8401 proglog.v1.Log/Consume
  # the book's API ("Distributed Services with Go", log.v1) over the same log:
  grpcurl -plaintext -d '{"offset":0}' 127.0.0.1:8402 log.v1.Log/Consume
  grpcurl -plaintext -d '{}' 127.0.0.1:8402 proglog.v1.Log/GetServers
  # admin API (bearer token in $TOKEN_FILE):
  grpcurl -plaintext -H "authorization: Bearer \$(cat $TOKEN_FILE)" 127.0.0.1:8400 proglog.v1.Cluster/Status
  $BIN/proglog --admin-token-file $TOKEN_FILE admin status
  # load:
  $BIN/proglog-bench --addr 127.0.0.1:8400 --clients 8 --duration-secs 10

A Produce sent to a follower fails with UNAVAILABLE and the leader's address in the
'proglog-leader' response header. Ctrl-C stops the members.
MSG
wait "${PIDS[@]}"
