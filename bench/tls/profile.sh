#!/usr/bin/env bash
# `make bench-tls-profile`: where TLS + ACL's cost goes at one client count. Starts the same
# two 3-member clusters as `make bench-tls` (plaintext on 127.0.0.1:18700-18702, mutual TLS +
# ACL on 18710-18712, every-batch fsync), then, for each round and each cluster (order
# alternating by round), runs `proglog-bench` and prints per 1,000 records: CPU ms of the
# leader, of the two followers and of `proglog-bench` itself (the client side of TLS), and the
# leader's and the bench's context switches; and records/s and p99. With PROFILE_STRACE=1 one
# extra run per cluster is traced (`strace -c -f` on the leader and on the bench: syscalls per
# record; strace slows the run, so its records/s mean nothing). With PROFILE_PERF=1 one extra
# run per cluster is sampled with `perf record -g` on the leader and the bench (top symbols).
#
# Knobs (environment): BENCH_CLIENTS (default 32), BENCH_COUNT (records per run, default
# 20000), BENCH_ROUNDS (default 2), BIN (a directory holding logserver, proglog-bench and
# proglog-certs, release; proglog, any).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PROGLOG_CACHE=${PROGLOG_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/proglog}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PROGLOG_CACHE/target}
CLIENTS=${BENCH_CLIENTS:-32}
COUNT=${BENCH_COUNT:-20000}
ROUNDS=${BENCH_ROUNDS:-2}
WORK=$PROGLOG_CACHE/bench-tls-profile
PLAIN_PORT=18700
TLS_PORT=18710

log() { echo "bench-tls-profile: $*" >&2; }
die() { log "$*"; exit 1; }

for p in $(seq $PLAIN_PORT $((PLAIN_PORT + 2))) $(seq $TLS_PORT $((TLS_PORT + 2))); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    die "127.0.0.1:$p is in use (a bench-tls?); stop that first"
  fi
done

if [ -z "${BIN:-}" ]; then
  log "building ProgLog (release)..."
  (cd "$ROOT" && cargo build -q --release -p logserver --bin logserver --bin proglog-bench \
    -p proglog-tls --features proglog-tls/issue --bin proglog-certs -p proglog-client --bin proglog)
  BIN=$CARGO_TARGET_DIR/release
fi
CLI=$BIN/proglog
[ -x "$CLI" ] || CLI=$CARGO_TARGET_DIR/debug/proglog

# shellcheck source=bench/tls/clusters.sh
source "$ROOT/bench/tls/clusters.sh"

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
switches() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '/ctxt_switches/ {n += $2} END {print n}'; }
HZ=$(getconf CLK_TCK)

# run <plain|tls> [wrap...]: one bench run; prints "rec/s p99 leader_ms followers_ms bench_ms
# leader_cs bench_cs" (CPU and switches per 1,000 records), the wrapper (strace, perf) around
# the bench if given.
run() {
  local which=$1
  shift
  local eps name flags=()
  if [ "$which" = plain ]; then eps=$PLAIN_EPS name=plain; else eps=$TLS_EPS name=tls-data flags=("${USER_TLS[@]}"); fi
  # Member 1 initialises the cluster and leads (no election is forced here).
  local l=${MPID[${name}1]} f1=${MPID[${name}2]} f2=${MPID[${name}3]}
  local lt0 ft0 ls0
  lt0=$(ticks "$l")
  ft0=$(($(ticks "$f1") + $(ticks "$f2")))
  ls0=$(switches "$l")
  local out
  out=$("$@" "$BIN/proglog-bench" --addr "$eps" --clients "$CLIENTS" --count "$COUNT" \
    --no-consume --json "${flags[@]}" 2>"$WORK/bench-stderr")
  local lt ft ls
  lt=$(($(ticks "$l") - lt0))
  ft=$(($(ticks "$f1") + $(ticks "$f2") - ft0))
  ls=$(($(switches "$l") - ls0))
  local rps p99 leader
  read -r rps p99 leader < <(echo "$out" | jq -r '"\(.produce_records_per_sec | floor) \(.latency_ms.p99) \(.leader)"')
  case $leader in *:$((PLAIN_PORT)) | *:$((TLS_PORT))) ;; *) log "leader is $leader, not member 1: the leader/follower split is off" ;; esac
  awk -v r="$rps" -v p="$p99" -v lt="$lt" -v ft="$ft" -v ls="$ls" -v n="$COUNT" -v hz="$HZ" \
    'BEGIN {k = 1000 / n; printf "%s %s %.1f %.1f %.0f\n", r, p, lt * 1000 / hz * k, ft * 1000 / hz * k, ls * k}'
}

# The bench's own CPU: run it under /usr/bin/time (user+sys seconds).
bench_cpu() { # which -> "rec/s p99 leader followers leader_cs bench_ms"
  local line t
  line=$(run "$1" /usr/bin/time -f '%U %S' -o "$WORK/time")
  t=$(awk -v n="$COUNT" '{printf "%.1f", ($1 + $2) * 1000 * 1000 / n}' "$WORK/time")
  echo "$line $t"
}

echo "TLS + ACL vs plaintext at $CLIENTS clients, $COUNT records of 256 B per run, $(nproc) cores"
printf '%-5s %-9s %-8s %-8s %-10s %-12s %-10s %-10s %s\n' round cluster rec/s p99_ms \
  leader_ms followers_ms bench_ms leader_cs load
for round in $(seq 1 "$ROUNDS"); do
  order=(plain tls)
  ((round % 2)) || order=(tls plain)
  for w in "${order[@]}"; do
    load=$(awk '{print $1}' /proc/loadavg)
    read -r rps p99 lms fms lcs bms < <(bench_cpu "$w")
    printf '%-5s %-9s %-8s %-8s %-10s %-12s %-10s %-10s %s\n' "$round" "$w" "$rps" "$p99" \
      "$lms" "$fms" "$bms" "$lcs" "$load"
  done
done
echo "(CPU ms and context switches per 1,000 records; leader = member 1)"

if [ "${PROFILE_STRACE:-0}" = 1 ]; then
  for w in plain tls; do
    name=plain
    [ "$w" = tls ] && name=tls-data
    l=${MPID[${name}1]}
    strace -c -f -p "$l" -o "$WORK/strace-leader-$w" &
    spid=$!
    sleep 0.5
    run "$w" strace -c -f -o "$WORK/strace-bench-$w" >/dev/null
    kill -INT $spid
    wait $spid 2>/dev/null || true
    for who in leader bench; do
      echo "== strace $w $who: calls per record (top)"
      awk -v n="$COUNT" '$1 ~ /^[0-9.]+$/ && NF >= 5 {c = $4; s = $NF; if (s != "total") printf "%-20s %.2f\n", s, c / n}' \
        "$WORK/strace-$who-$w" | sort -k2 -nr | head -12 || true
    done
  done
fi

if [ "${PROFILE_PERF:-0}" = 1 ]; then
  for w in plain tls; do
    name=plain
    [ "$w" = tls ] && name=tls-data
    l=${MPID[${name}1]}
    perf record -q -g -o "$WORK/perf-leader-$w.data" -p "$l" 2>/dev/null &
    ppid=$!
    sleep 0.3
    run "$w" perf record -q -g -o "$WORK/perf-bench-$w.data" >/dev/null
    kill -INT $ppid
    wait $ppid 2>/dev/null || true
    for who in leader bench; do
      echo "== perf $w $who: top symbols (self)"
      perf report -q -i "$WORK/perf-$who-$w.data" --no-children -g none --sort dso,sym \
        2>/dev/null | grep -v '^$' | head -30 || true
    done
  done
fi
