#!/usr/bin/env bash
# Builds etcd and etcd's own benchmark tool from the Go modules pinned in bench/compare/go/go.mod
# into $BENCH_BIN (default $PROGLOG_CACHE/bench-bin, outside the clone). A binary already built from
# the same go.mod/go.sum/main.go is skipped (stamp file next to it).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PROGLOG_CACHE=${PROGLOG_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/proglog}
BENCH_BIN=${BENCH_BIN:-$PROGLOG_CACHE/bench-bin}
GODIR=$HERE/go

command -v go >/dev/null || { echo "bench-compare: the Go toolchain is needed (go 1.25 or newer)" >&2; exit 1; }
mkdir -p "$BENCH_BIN"
exec 9>"$BENCH_BIN/.lock"
flock 9

for t in etcd etcd-benchmark; do
  stamp=$(cat "$GODIR/go.mod" "$GODIR/go.sum" "$GODIR/$t/main.go" | sha256sum | cut -c1-16)
  if [[ -x $BENCH_BIN/$t && "$(cat "$BENCH_BIN/.$t.stamp" 2>/dev/null)" == "$stamp" ]]; then
    continue
  fi
  echo "bench-compare: building $t from Go modules (first time only; a few minutes)..." >&2
  (cd "$GODIR" && GOWORK=off CGO_ENABLED=0 nice go build -trimpath -ldflags "-s -w" -o "$BENCH_BIN/$t.tmp" "./$t")
  mv "$BENCH_BIN/$t.tmp" "$BENCH_BIN/$t"
  echo "$stamp" >"$BENCH_BIN/.$t.stamp"
done
