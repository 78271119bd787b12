#!/usr/bin/env bash
# `make bench-profile`: where a durable produce's time goes on the leader. Starts a 3-member
# ProgLog (release, fsync before every acknowledgement, loopback, data under
# $PROGLOG_CACHE/bench-profile), runs `proglog-bench` at each client count and, per run, prints
# what bounds throughput: records/s, server CPU per record (leader and followers), the leader's
# context switches per record, fsyncs per second and records per fsync on the leader and a
# follower, and Raft entries per produce call (from the members' "write path" counters). With
# `perf` installed and PROFILE_PERF=1 it also samples the leader (`perf record`) and prints its
# top functions.
#
# Knobs (environment): BENCH_CLIENTS (default "1 8 32 128"), BENCH_SECS (per run, default 10),
# BENCH_AT_LEAST_ONCE=1 (no producer id), PROGLOG_GROUP_COMMIT_DEPTH (reaches the members),
# PROGLOG_RAFT_PIPELINE=1 (pipelined replication; with PROGLOG_GROUP_COMMIT_DEPTH=2 or more),
# PROGLOG_PEER_DELAY_US (the members hold each peer request that long: a network round trip),
# BIN (a directory holding logserver, proglog and proglog-bench, to profile another build),
# BENCH_BATCH (records per ProduceBatch call, default 1 = Produce; with more, MB/s and CPU per
# MB are printed too), BENCH_VALUE (bytes per record, default 256). PROFILE_PERF=1 samples a
# follower too; PROFILE_PERF=dwarf records DWARF call graphs instead (release builds keep no frame
# pointers), for `perf report --children` on $WORK/perf-N.data (kept until the next run).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PROGLOG_CACHE=${PROGLOG_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/proglog}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PROGLOG_CACHE/target}
CLIENTS=${BENCH_CLIENTS:-1 8 32 128}
SECS=${BENCH_SECS:-10}
WORK=$PROGLOG_CACHE/bench-profile
PORT=18600 # members: 18600-18602
BATCH=${BENCH_BATCH:-1}
VALUE=${BENCH_VALUE:-256}
MODE=(--idempotent)
[ "${BENCH_AT_LEAST_ONCE:-0}" = 1 ] && MODE=()

log() { echo "bench-profile: $*" >&2; }

if [ -z "${BIN:-}" ]; then
  log "building ProgLog (release)..."
  (cd "$ROOT" && cargo build -q --release -p logserver --bin logserver --bin proglog-bench \
    -p proglog-client --bin proglog)
  BIN=$CARGO_TARGET_DIR/release
fi

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
bench_workdir pl

echo "bench-profile-token" >"$WORK/token"
MEMBERS=()
EPS=""
for i in 1 2 3; do
  a=127.0.0.1:$((PORT + i - 1))
  MEMBERS+=(--member "$i=$a")
  EPS+="${EPS:+,}$a"
  "$BIN/logserver" --id "$i" --data-dir "$WORK/pl/m$i" --listen "$a" --advertise "$a" \
    --admin-token-file "$WORK/token" --durability every-batch >"$WORK/m$i.log" 2>&1 &
  PIDS+=($!)
done
for i in 1 2 3; do
  for _ in $(seq 1 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$((PORT + i - 1))") 2>/dev/null; then break; fi
    sleep 0.05
  done
done
"$BIN/proglog" --addr "127.0.0.1:$PORT" --admin-token-file "$WORK/token" admin init "${MEMBERS[@]}" \
  >/dev/null
for i in 1 2 3; do
  "$BIN/proglog" --addr "127.0.0.1:$((PORT + i - 1))" admin wait-serving --timeout-secs 30 >/dev/null
done
LEADER=${PIDS[0]} # member 1 initialises the cluster and leads

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
switches() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '/ctxt_switches/ {n += $2} END {print n}'; }
# "tid-name voluntary nonvoluntary" context switches of each thread of a process.
thread_switches() {
  for t in /proc/"$1"/task/*; do
    printf '%s-%s %s\n' "${t##*/}" "$(tr ' ' _ <"$t/comm")" \
      "$(awk '/^voluntary_ctxt/ {v = $2} /^nonvoluntary_ctxt/ {n = $2} END {print v, n}' "$t/status")"
  done 2>/dev/null | sort
}
# "thread-name ticks" of each thread of a process, summed by name.
thread_ticks() {
  for t in /proc/"$1"/task/*; do
    printf '%s %s\n' "$(tr ' ' _ <"$t/comm")" "$(awk '{print $14 + $15}' "$t/stat")"
  done 2>/dev/null | awk '{n[$1] += $2} END {for (k in n) print k, n[k]}' | sort
}
# The members' write path counters over the last report (they log one every 5 s).
counters() {
  grep '"write path"' "$WORK/m$1.log" | tail -1 |
    jq -r '"fsyncs/s \(.fsyncs_per_sec) (avg \(.fsync_avg_us) µs), records/fsync \(.records_per_fsync), entries/append \(.entries_per_append), produce calls/Raft write \(.produce_calls_per_raft_write), AppendEntries/s with entries \(.append_rpcs_per_sec) without \(.empty_append_rpcs_per_sec // "?"), empty ones answered by the leader itself/s \(.empty_append_rpcs_answered_locally_per_sec // "?"), capped-commit heartbeats/s \(.capped_commit_resends_per_sec // "?"), AppendEntries with entries sent/s \(.append_rpcs_sent_per_sec // "?") (round trip avg \(.append_rpc_round_trip_avg_us // "?") µs), received ones handled in avg \(.append_rpc_handling_avg_us // "?") µs, sent ahead/s \(.append_rpcs_ahead_per_sec // "?") (answered openraft \(.append_rpcs_answered_ahead_per_sec // "?"), cut its request \(.append_rpcs_trimmed_ahead_per_sec // "?"))"'
}

TCK=$(getconf CLK_TCK)
for c in $CLIENTS; do
  load=$(awk '{print $1}' /proc/loadavg)
  l0=$(ticks "$LEADER") f0=$(ticks "${PIDS[1]}") s0=$(switches "$LEADER") fs0=$(switches "${PIDS[1]}")
  thread_ticks "$LEADER" >"$WORK/threads-before"
  thread_switches "$LEADER" >"$WORK/switches-before"
  perf_pid=""
  if [ "${PROFILE_PERF:-0}" != 0 ] && command -v perf >/dev/null; then
    CG=(-F 999 -g)
    [ "$PROFILE_PERF" = dwarf ] && CG=(-F 499 --call-graph dwarf,32768)
    perf record -q "${CG[@]}" -p "$LEADER" -o "$WORK/perf-$c.data" -- sleep "$SECS" 2>/dev/null &
    perf_pid=$!
    perf record -q "${CG[@]}" -p "${PIDS[1]}" -o "$WORK/perf-$c-follower.data" -- sleep "$SECS" \
      2>/dev/null &
    perf_pid="$perf_pid $!"
  fi
  strace_pid=""
  if [ "${PROFILE_STRACE:-0}" = 1 ] && command -v strace >/dev/null; then
    timeout -s INT 5 strace -c -f -p "$LEADER" -o "$WORK/strace-$c.txt" 2>/dev/null &
    strace_pid=$!
  fi
  TIMER=()
  [ -x /usr/bin/time ] && TIMER=(/usr/bin/time -f '%U %S' -o "$WORK/client-time")
  out=$("${TIMER[@]}" "$BIN/proglog-bench" --addr "$EPS" --clients "$c" --duration-secs "$SECS" \
    --batch "$BATCH" --value-size "$VALUE" "${MODE[@]}" --no-consume --json)
  # shellcheck disable=SC2086 # two pids
  [ -n "$perf_pid" ] && wait $perf_pid || true
  [ -n "${strace_pid:-}" ] && wait "$strace_pid" || true
  n=$(jq -r .records <<<"$out")
  rps=$(jq -r '.produce_records_per_sec | floor' <<<"$out")
  p99=$(jq -r .latency_ms.p99 <<<"$out")
  l_t=$(($(ticks "$LEADER") - l0)) f_t=$(($(ticks "${PIDS[1]}") - f0))
  l_us=$((l_t * 1000000 / TCK / (n > 0 ? n : 1)))
  f_us=$((f_t * 1000000 / TCK / (n > 0 ? n : 1)))
  cs=$(awk -v a="$(switches "$LEADER")" -v b="$s0" -v n="$n" 'BEGIN {printf "%.1f", (a - b) / (n > 0 ? n : 1)}')
  fcs=$(awk -v a="$(switches "${PIDS[1]}")" -v b="$fs0" -v n="$n" 'BEGIN {printf "%.1f", (a - b) / (n > 0 ? n : 1)}')
  echo "$c clients (load $load): $rps rec/s, p99 $p99 ms; CPU/record leader $l_us µs, follower $f_us µs;" \
    "context switches/record leader $cs, follower $fcs"
  if [ -s "$WORK/client-time" ]; then
    echo "  the bench client's own CPU: $(awk -v n="$n" '{printf "%.2f", ($1 + $2) * 1e6 / (n > 0 ? n : 1)}' \
      "$WORK/client-time") µs/record"
    rm -f "$WORK/client-time"
  fi
  if [ "$BATCH" -gt 1 ]; then
    mbs=$(jq -r '.produce_mb_per_sec * 10 | floor / 10' <<<"$out")
    # CPU ms per MB of values: (ticks / TCK) s over n * VALUE bytes.
    per_mb() { awk -v t="$1" -v k="$TCK" -v b=$((n * VALUE)) 'BEGIN {printf "%.1f", t / k * 1e3 / (b > 0 ? b / 1e6 : 1)}'; }
    echo "  batches of $BATCH x $VALUE B: $mbs MB/s; CPU ms per MB leader $(per_mb "$l_t")," \
      "follower $(per_mb "$f_t"); context switches per call leader" \
      "$(awk -v c="$cs" -v b="$BATCH" 'BEGIN {printf "%.1f", c * b}'), follower" \
      "$(awk -v c="$fcs" -v b="$BATCH" 'BEGIN {printf "%.1f", c * b}')"
  fi
  # Per produce call (= per record without BENCH_BATCH).
  calls=$((n / BATCH)) unit=record
  [ "$BATCH" -gt 1 ] && unit="call of $BATCH"
  echo "  leader CPU by thread (µs per $unit):" $(thread_ticks "$LEADER" |
    join -a1 - "$WORK/threads-before" |
    awk -v n="$calls" -v t="$TCK" '{d = ($2 - ($3 == "" ? 0 : $3)) * 1e6 / t / (n > 0 ? n : 1); if (d >= 1) printf "%s %.0f; ", $1, d}')
  echo "  leader context switches by thread (voluntary+involuntary per $unit):" $(thread_switches "$LEADER" |
    join -a1 - "$WORK/switches-before" |
    awk -v n="$calls" '{v = ($2 - $4) / (n > 0 ? n : 1); i = ($3 - $5) / (n > 0 ? n : 1); if (v + i >= 0.1) printf "%s %.1f+%.1f; ", $1, v, i}')
  echo "  leader:   $(counters 1)"
  echo "  follower: $(counters 2)"
  if [ -n "$perf_pid" ]; then
    for who in "" -follower; do
      echo "  perf${who:- -leader}, top functions (self):"
      perf report -q --stdio -i "$WORK/perf-$c$who.data" --no-children --sort dso,symbol -g none \
        2>/dev/null | grep -v '^$' | head -25 | sed -e 's/ *$//' -e 's/^/    /' | cut -c1-150 || true
    done
  fi
done
