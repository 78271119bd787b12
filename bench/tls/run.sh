#!/usr/bin/env bash
# `make bench-tls`: what mutual TLS and the ACL cost on durable produce. Starts two 3-member
# ProgLog clusters of release-build members on loopback, both fsyncing before every
# acknowledgement (`--durability every-batch`): one plaintext (127.0.0.1:18700-18702), one with
# mutual TLS on every plane and the book's ACL (18710-18712, a development PKI from
# proglog-certs). For each client count both get the same number of 256 B records from
# `proglog-bench --clients N` (one connection per client; the TLS one as user "root"), one
# right after the other, first one then the other by round, so both see the same machine load.
# Prints records/s, p99 and the ratio.
# Everything it started is stopped on exit.
#
# Knobs (environment): BENCH_CLIENTS (default "8 32"), BENCH_SCALE (multiplies the record
# counts, default 1), BENCH_ROUNDS (default 3), BIN (a directory holding release builds of
# logserver, proglog-bench and proglog-certs, and proglog, to measure another build; no build).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PROGLOG_CACHE=${PROGLOG_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/proglog}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PROGLOG_CACHE/target}
CLIENTS=${BENCH_CLIENTS:-8 32}
SCALE=${BENCH_SCALE:-1}
ROUNDS=${BENCH_ROUNDS:-3}
WORK=$PROGLOG_CACHE/bench-tls
PLAIN_PORT=18700
TLS_PORT=18710

log() { echo "bench-tls: $*" >&2; }
die() { log "$*"; exit 1; }

for p in $(seq $PLAIN_PORT $((PLAIN_PORT + 2))) $(seq $TLS_PORT $((TLS_PORT + 2))); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    die "127.0.0.1:$p is in use (another bench-tls?); stop that first"
  fi
done

if [ -z "${BIN:-}" ]; then
  log "building ProgLog (release; the CLI, used only to form the clusters, in debug)..."
  (cd "$ROOT" && cargo build -q --release -p logserver --bin logserver --bin proglog-bench \
    -p proglog-tls --features proglog-tls/issue --bin proglog-certs)
  (cd "$ROOT" && cargo build -q -p proglog-client --bin proglog)
  BIN=$CARGO_TARGET_DIR/release
fi
CLI=$BIN/proglog
[ -x "$CLI" ] || CLI=$CARGO_TARGET_DIR/debug/proglog

# shellcheck source=bench/tls/clusters.sh
source "$ROOT/bench/tls/clusters.sh"

records_for() { case $1 in 1) echo $((3000 * SCALE)) ;; 8) echo $((10000 * SCALE)) ;; *) echo $((20000 * SCALE)) ;; esac; }
bench() { # eps clients records [flags...] -> "rec/s p99_ms"
  local eps=$1 c=$2 n=$3
  shift 3
  "$BIN/proglog-bench" --addr "$eps" --clients "$c" --count "$n" --no-consume --json "$@" |
    jq -r '"\(.produce_records_per_sec | floor) \(.latency_ms.p99)"'
}

RESULTS=$WORK/results.tsv
: >"$RESULTS"
for round in $(seq 1 "$ROUNDS"); do
  for c in $CLIENTS; do
    n=$(records_for "$c")
    load=$(awk '{print $1}' /proc/loadavg)
    # NB: the order alternates by round, so neither cluster always runs on the fuller disk or
    # in the wake of the other's fsyncs.
    if ((round % 2)); then
      read -r p_rps p_p99 < <(bench "$PLAIN_EPS" "$c" "$n")
      read -r t_rps t_p99 < <(bench "$TLS_EPS" "$c" "$n" "${USER_TLS[@]}")
    else
      read -r t_rps t_p99 < <(bench "$TLS_EPS" "$c" "$n" "${USER_TLS[@]}")
      read -r p_rps p_p99 < <(bench "$PLAIN_EPS" "$c" "$n")
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$c" "$p_rps" "$t_rps" "$p_p99" "$t_p99" "$load" >>"$RESULTS"
    log "round $round, $c clients: plaintext $p_rps rec/s p99 $p_p99 ms; TLS+ACL $t_rps rec/s p99 $t_p99 ms (load $load)"
  done
done

echo
echo "Durable produce, 3 members on loopback, 256 B records, $(nproc) cores; records/s (p99 ms)"
printf '%-5s %-7s %-20s %-20s %s\n' round clients plaintext "TLS + ACL" "TLS/plaintext"
while IFS=$'\t' read -r r c p t pp tp l; do
  printf '%-5s %-7s %-20s %-20s %s\n' "$r" "$c" "$p ($pp)" "$t ($tp)" \
    "$(awk -v a="$t" -v b="$p" 'BEGIN {printf "%.2f", a / b}')  (load $l)"
done <"$RESULTS"
for c in $CLIENTS; do
  awk -F'\t' -v c="$c" '$2 == c {p += $3; t += $4} END {if (p > 0) printf "%s clients, all rounds: TLS+ACL / plaintext = %.2f\n", c, t / p}' "$RESULTS"
done
