#!/usr/bin/env bash
# `make bench-compare`: durable produce of ProgLog against etcd `put`, side by side on this machine.
#
# Starts a 3-member etcd (built from Go modules by build-etcd.sh) and a 3-member ProgLog (release
# build) on loopback, both fsyncing before every acknowledgement (etcd's default; ProgLog
# `--durability every-batch`), data under $PROGLOG_CACHE/bench-compare (a real disk, not tmpfs).
# For each client count both get the same number of 256 B values from closed-loop clients, each
# client on its own connection (etcd: its own `benchmark put --clients N --conns N
# --target-leader`; ProgLog: `proglog-bench --clients N`), runs alternating so both see the same
# load. ProgLog's clients are idempotent producers (InitProducer, then producer id + sequence on
# every Produce), as the client library and the CLI are by default: the table measures what users
# get. Prints one table with records/s, p99 and the ratios. Each round ends with ProduceBatch runs
# (100 values per request, at each of BENCH_BATCH_CLIENTS), each between two measurements of the
# disk's raw fsync'd write rate for the same bytes (raw, batch, raw, batch, ..., raw); a second
# table gives each run's ratio to the mean of the two raw rates around it. Everything it started
# is stopped on exit, also on Ctrl-C or failure.
#
# Knobs (environment): BENCH_CLIENTS (default "1 8 32 128"), BENCH_BATCH_CLIENTS (ProduceBatch
# client counts, default "8 32": a closed loop of 8 callers keeps 8 calls in flight, so 8 shows
# the cycle's latency and 32 the throughput group commit reaches), BENCH_SCALE (multiplies the record
# counts, default 1), BENCH_VALUE (bytes, default 256), BENCH_ROUNDS (repeat the whole table,
# default 1), BENCH_AT_LEAST_ONCE=1 (ProgLog clients without a producer id, the opt-out);
# PROGLOG_GROUP_COMMIT_DEPTH reaches the members (0 turns group commit off). The
# members' logs (with their "write path" counters every 5 s) stay in $PROGLOG_CACHE/bench-compare.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PROGLOG_CACHE=${PROGLOG_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/proglog}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PROGLOG_CACHE/target}
BENCH_BIN=${BENCH_BIN:-$PROGLOG_CACHE/bench-bin}
CLIENTS=${BENCH_CLIENTS:-1 8 32 128}
BATCH_CLIENTS=${BENCH_BATCH_CLIENTS:-8 32}
SCALE=${BENCH_SCALE:-1}
VALUE=${BENCH_VALUE:-256}
ROUNDS=${BENCH_ROUNDS:-1}
if [ "${BENCH_AT_LEAST_ONCE:-0}" = 1 ]; then
  PL_MODE=() PL_MODE_NAME="at least once (no producer id)"
else
  PL_MODE=(--idempotent) PL_MODE_NAME="idempotent producers (the client default)"
fi
WORK=$PROGLOG_CACHE/bench-compare
PL_PORT=18400  # ProgLog members: 18400-18402
ETCD_PORT=18500 # etcd member i: client 18500+2i, peer 18501+2i

log() { echo "bench-compare: $*" >&2; }
die() { log "$*"; exit 1; }

for p in $PL_PORT $((PL_PORT + 1)) $((PL_PORT + 2)) $(seq $ETCD_PORT $((ETCD_PORT + 5))); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    die "127.0.0.1:$p is in use (another bench-compare?); stop that first"
  fi
done

bash "$ROOT/bench/compare/build-etcd.sh"
log "building ProgLog (release)..."
(cd "$ROOT" && cargo build -q --release -p logserver --bin logserver --bin proglog-bench \
  -p proglog-client --bin proglog)
BIN=$CARGO_TARGET_DIR/release

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
bench_workdir pl etcd

# etcd: 3 members, default durability (WAL fsync before a proposal is acknowledged).
cluster=""
for i in 0 1 2; do cluster+="${cluster:+,}e$i=http://127.0.0.1:$((ETCD_PORT + 2 * i + 1))"; done
ETCD_EPS=""
ETCD_PIDS=()
PL_PIDS=()
for i in 0 1 2; do
  c=$((ETCD_PORT + 2 * i)); p=$((c + 1))
  ETCD_EPS+="${ETCD_EPS:+,}127.0.0.1:$c"
  "$BENCH_BIN/etcd" --name "e$i" --data-dir "$WORK/etcd/e$i" \
    --listen-client-urls "http://127.0.0.1:$c" --advertise-client-urls "http://127.0.0.1:$c" \
    --listen-peer-urls "http://127.0.0.1:$p" --initial-advertise-peer-urls "http://127.0.0.1:$p" \
    --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token bench \
    --log-level error >"$WORK/etcd-e$i.log" 2>&1 &
  PIDS+=($!)
  ETCD_PIDS+=($!)
done

# ProgLog: 3 members, fsync before acknowledging.
TOKEN=$WORK/token
echo "bench-compare-token" >"$TOKEN"
MEMBERS=()
PL_EPS=""
for i in 1 2 3; do
  a=127.0.0.1:$((PL_PORT + i - 1))
  MEMBERS+=(--member "$i=$a")
  PL_EPS+="${PL_EPS:+,}$a"
  "$BIN/logserver" --id "$i" --data-dir "$WORK/pl/m$i" --listen "$a" --advertise "$a" \
    --admin-token-file "$TOKEN" --durability every-batch >"$WORK/pl-m$i.log" 2>&1 &
  PIDS+=($!)
  PL_PIDS+=($!)
done
for i in 1 2 3; do wait_port $((PL_PORT + i - 1)); done
"$BIN/proglog" --addr "127.0.0.1:$PL_PORT" --admin-token-file "$TOKEN" admin init "${MEMBERS[@]}" >/dev/null
for i in 1 2 3; do
  "$BIN/proglog" --addr "127.0.0.1:$((PL_PORT + i - 1))" admin wait-serving --timeout-secs 30 \
    >/dev/null
done
for i in 0 1 2; do
  c=$((ETCD_PORT + 2 * i))
  wait_port "$c"
  for _ in $(seq 1 200); do
    if curl -fsS "http://127.0.0.1:$c/health" 2>/dev/null | grep -q '"health":"true"'; then break; fi
    sleep 0.05
  done
done
log "both clusters up (etcd $("$BENCH_BIN/etcd" --version | awk '/etcd Version/ {print $3}'), ProgLog $PL_EPS)"

# Records per run: enough for a few seconds at each client count.
records_for() {
  local c=$1 n
  case $c in 1) n=3000 ;; 8) n=10000 ;; 32) n=20000 ;; *) n=40000 ;; esac
  echo $((n * SCALE))
}

run_etcd() { # clients records -> "rec/s p99_ms"
  local out
  out=$("$BENCH_BIN/etcd-benchmark" --endpoints "$ETCD_EPS" --target-leader \
    --clients "$1" --conns "$1" put --total "$2" --val-size "$VALUE" --key-size 8 \
    --sequential-keys --key-space-size "$2" 2>/dev/null)
  echo "$out" | awk '/Requests\/sec:/ {rps = $2} /^ *99% in/ {p99 = $3 * 1000}
    END {printf "%.0f %.2f\n", rps, p99}'
}

run_proglog() { # clients records -> "rec/s p99_ms"
  "$BIN/proglog-bench" --addr "$PL_EPS" --clients "$1" --count "$2" --value-size "$VALUE" \
    "${PL_MODE[@]}" --no-consume --json | jq -r '"\(.produce_records_per_sec | floor) \(.latency_ms.p99)"'
}

# CPU time (ms, user + system) the given processes have used so far.
cpu_ms() {
  local tck total=0 pid
  tck=$(getconf CLK_TCK)
  for pid in "$@"; do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
  done
  echo $((total * 1000 / tck))
}

# ProduceBatch of 100 records per request, $1 clients -> "MB/s rec/s p99_ms".
run_batch() {
  "$BIN/proglog-bench" --addr "$PL_EPS" --clients "$1" --batch 100 --count $((800000 * SCALE)) \
    --value-size "$VALUE" "${PL_MODE[@]}" --no-consume --json |
    jq -r '"\(.produce_mb_per_sec * 10 | floor / 10) \(.produce_records_per_sec | floor) \(.latency_ms.p99)"'
}

# The raw reference of `make bench` for the same batch: 100 values written with one write and
# fsynced (dd with O_DSYNC, one block per batch) into a new file on the same disk, as many bytes
# as the ProduceBatch run writes -> "MB/s".
run_raw() {
  dd if=/dev/zero of="$WORK/raw" bs=$((100 * VALUE)) count=$((8000 * SCALE)) oflag=dsync 2>&1 |
    awk '/copied/ {printf "%.1f\n", $1 / $(NF - 3) / 1e6}'
  rm -f "$WORK/raw"
}

RESULTS=$WORK/results.tsv
BATCHES=$WORK/batches.tsv
: >"$RESULTS"
: >"$BATCHES"
for round in $(seq 1 "$ROUNDS"); do
  for c in $CLIENTS; do
    n=$(records_for "$c")
    load=$(awk '{print $1}' /proc/loadavg)
    e_cpu=$(cpu_ms "${ETCD_PIDS[@]}")
    read -r e_rps e_p99 < <(run_etcd "$c" "$n")
    e_cpu=$(($(cpu_ms "${ETCD_PIDS[@]}") - e_cpu))
    p_cpu=$(cpu_ms "${PL_PIDS[@]}")
    read -r p_rps p_p99 < <(run_proglog "$c" "$n")
    p_cpu=$(($(cpu_ms "${PL_PIDS[@]}") - p_cpu))
    # Server CPU per record, all three members together, in microseconds.
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$c" "$p_rps" "$e_rps" "$p_p99" "$e_p99" \
      "$load" "$(awk '{print $1}' /proc/loadavg)" $((p_cpu * 1000 / n)) $((e_cpu * 1000 / n)) >>"$RESULTS"
    log "round $round, $c clients: ProgLog $p_rps rec/s p99 $p_p99 ms; etcd $e_rps rec/s p99 $e_p99 ms"
  done
  # NB: each ProduceBatch run sits between two measurements of the raw disk and is compared with
  # their mean, so both see the same disk (its fsync latency drifts over minutes on a shared
  # machine); each run starts with no dirty pages left to write back (`sync`).
  sync
  raw_before=$(run_raw)
  for c in $BATCH_CLIENTS; do
    load=$(awk '{print $1}' /proc/loadavg)
    sync
    read -r b_mb b_rps b_p99 < <(run_batch "$c")
    sync
    raw_after=$(run_raw)
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$b_mb" "$b_rps" "$b_p99" "$raw_before" \
      "$raw_after" "$load" "$c" >>"$BATCHES"
    log "round $round, ProduceBatch, $c clients: $b_mb MB/s p99 $b_p99 ms;" \
      "raw fsync'd writes $raw_before / $raw_after MB/s"
    raw_before=$raw_after
  done
done


echo
echo "Durable produce, 3 members on loopback, $VALUE B values, closed-loop clients ($(nproc) CPUs;" \
  "ProgLog: $PL_MODE_NAME, group commit depth ${PROGLOG_GROUP_COMMIT_DEPTH:-default})"
echo
echo "| round | clients | ProgLog rec/s | etcd rec/s | ratio | ProgLog p99 ms | etcd p99 ms | p99 ratio | server CPU µs/rec ProgLog / etcd | load before/after |"
echo "|---|---|---|---|---|---|---|---|---|---|"
awk -F'\t' '{ printf "| %s | %s | %s | %s | %.2fx | %s | %s | %.2f | %s / %s | %s / %s |\n",
  $1, $2, $3, $4, ($4 > 0 ? $3 / $4 : 0), $5, $6, ($6 > 0 ? $5 / $6 : 0), $9, $10, $7, $8 }' "$RESULTS"
echo
echo "(ratio: ProgLog / etcd; p99 ratio below 1 means ProgLog's p99 is lower)"
echo
echo "ProgLog ProduceBatch of 100 x $VALUE B against raw fsync'd writes of $((100 * VALUE)) B" \
  "(one write + fsync per batch, new file, same disk, right before and after each run)"
echo
echo "| round | clients | ProduceBatch MB/s | rec/s | p99 ms | raw MB/s before / after | ProduceBatch / raw mean | load before |"
echo "|---|---|---|---|---|---|---|---|"
awk -F'\t' '{ m = ($5 + $6) / 2; printf "| %s | %s | %s | %s | %s | %s / %s | %.0f%% | %s |\n",
  $1, $8, $2, $3, $4, $5, $6, (m > 0 ? 100 * $2 / m : 0), $7 }' "$BATCHES"
