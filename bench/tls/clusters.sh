# Sourced by bench/tls/run.sh and bench/tls/profile.sh (after they set ROOT, BIN, CLI, WORK,
# PLAIN_PORT, TLS_PORT, log and die): starts the two 3-member clusters side by side, plaintext on
# PLAIN_PORT.. and mutual TLS + the book's ACL on TLS_PORT.. (a development PKI from
# proglog-certs in $WORK/pki), forms them, stops them on exit. Sets PLAIN_EPS, TLS_EPS,
# USER_TLS (the CLI/bench flags of user "root"), OP_TLS and MPID ("<cluster><i>" -> pid;
# clusters "plain" and "tls-data").

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
bench_workdir plain tls-data

T=$WORK/pki
"$BIN/proglog-certs" "$T" >/dev/null
echo "bench-tls-token" >"$WORK/token"
TLS_FLAGS=(--tls-ca "$T/ca.pem" --tls-cert "$T/member.pem" --tls-key "$T/member-key.pem"
  --acl-model "$T/model.conf" --acl-policy "$T/policy.csv")
USER_TLS=(--ca "$T/ca.pem" --cert "$T/root.pem" --key "$T/root-key.pem")
OP_TLS=(--ca "$T/ca.pem" --cert "$T/operator.pem" --key "$T/operator-key.pem")

declare -A MPID # "<cluster><i>" -> pid
start() { # name base_port [member flags...]
  local name=$1 base=$2
  shift 2
  local i a
  for i in 1 2 3; do
    a=127.0.0.1:$((base + i - 1))
    "$BIN/logserver" --id "$i" --data-dir "$WORK/$name/m$i" --listen "$a" --advertise "$a" \
      --durability every-batch "$@" >"$WORK/$name-m$i.log" 2>&1 &
    PIDS+=($!)
    MPID[$name$i]=$!
  done
  for i in 1 2 3; do wait_port $((base + i - 1)); done
}
form() { # base_port [proglog flags...]
  local base=$1
  shift
  local m=() i
  for i in 1 2 3; do m+=(--member "$i=127.0.0.1:$((base + i - 1))"); done
  "$CLI" --addr "127.0.0.1:$base" "$@" admin init "${m[@]}" >/dev/null
  for i in 1 2 3; do
    "$CLI" --addr "127.0.0.1:$((base + i - 1))" "$@" admin wait-serving \
      --timeout-secs 30 >/dev/null
  done
}
start plain $PLAIN_PORT --admin-token-file "$WORK/token"
start tls-data $TLS_PORT "${TLS_FLAGS[@]}"
form $PLAIN_PORT --admin-token-file "$WORK/token"
form $TLS_PORT "${OP_TLS[@]}"
PLAIN_EPS=127.0.0.1:$PLAIN_PORT,127.0.0.1:$((PLAIN_PORT + 1)),127.0.0.1:$((PLAIN_PORT + 2))
TLS_EPS=127.0.0.1:$TLS_PORT,127.0.0.1:$((TLS_PORT + 1)),127.0.0.1:$((TLS_PORT + 2))
log "both clusters up: plaintext $PLAIN_EPS, mutual TLS + ACL $TLS_EPS"
