# Sourced by the bench scripts (after they set WORK and die): a fresh work directory, the
# processes they start (append each pid to PIDS) stopped on exit, also on Ctrl-C or failure.

# bench_workdir SUBDIR...: empties $WORK; on exit stops every pid in PIDS and removes the
# SUBDIRs of $WORK (the members' data; logs and results stay).
bench_workdir() {
  BENCH_DATA_DIRS=("$@")
  rm -rf "$WORK"
  mkdir -p "$WORK"
  PIDS=()
  trap bench_cleanup INT TERM EXIT
}

bench_cleanup() {
  trap - INT TERM EXIT
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  local d
  for d in "${BENCH_DATA_DIRS[@]}"; do rm -rf "${WORK:?}/$d"; done
}

# wait_port PORT: until something listens on 127.0.0.1:PORT (10 s at most).
wait_port() {
  for _ in $(seq 1 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  die "nothing listens on 127.0.0.1:$1 (see $WORK/*.log)"
}
