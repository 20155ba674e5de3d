#!/usr/bin/env bash
# Compare switchboard, `ncat --chat` and the seed chat server with `switchboard bench`.
# Server pinned to CPU 0, generator to CPU 1; each case run RUNS times; prints one JSON
# summary per run (tagged with the case) on stdout. Usage:
#   benches/compare.sh [RUNS] > results.jsonl
# Needs: a release build (cargo build --release), ncat, python3, taskset.
set -euo pipefail
RUNS=${RUNS:-${1:-3}}
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release/switchboard}
SEED=${SEED:-$(dirname "$0")/../../shared/seeds/chat_server2.py}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
SIZES=${SIZES:-"200 1000"}
ulimit -n "$(ulimit -Hn)"
PORT=${BASE_PORT:-47400}
SERVER_PID=

stop_server() {
  if [[ -n "$SERVER_PID" ]]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  SERVER_PID=
}
trap stop_server EXIT

wait_port() {
  for _ in $(seq 100); do
    # Look, do not connect: a probe connection confuses the seed server for good.
    if ss -Hltn "sport = :$1" | grep -q LISTEN; then return 0; fi
    sleep 0.05
  done
  echo "server on port $1 did not come up" >&2; return 1
}

# start_server KIND: a fresh server on a fresh port (the seed cannot reuse a port in TIME_WAIT).
start_server() {
  PORT=$((PORT + 1))
  case "$1" in
    switchboard)
      RUST_LOG=warn taskset -c 0 "$BIN" serve --line "127.0.0.1:$PORT" --json off --web off \
        --memory --flood-rate 0 --max-clients 100000 --max-clients-per-ip 100000 >/dev/null & ;;
    ncat-chat)
      taskset -c 0 ncat --chat -l 127.0.0.1 "$PORT" --max-conns 20000 >/dev/null 2>&1 & ;;
    seed-chat)
      SEED_HOST=127.0.0.1 SEED_PORT=$PORT taskset -c 0 python3 "$SEED" >/dev/null & ;;
  esac
  SERVER_PID=$!
  wait_port "$PORT"
}

bench() { taskset -c 1 "$BIN" bench "$@" --addr "127.0.0.1:$PORT" --server-pid "$SERVER_PID"; }

for run in $(seq "$RUNS"); do
  for kind in ${KINDS:-switchboard ncat-chat seed-chat}; do
    for n in $SIZES; do
      start_server "$kind"
      bench fanout --target "$kind" --clients "$n" --senders 10 --window 16 \
        --warmup "$WARMUP" --duration "$DURATION" | sed "s/^{/{\"run\":$run,/"
      stop_server
    done
    start_server "$kind"
    bench idle --target "$kind" --connections 1000 | sed "s/^{/{\"run\":$run,/"
    stop_server
    if [[ "$kind" == switchboard ]]; then
      start_server "$kind"
      bench connect --target "$kind" --concurrency 32 --warmup 1s --duration 5s \
        | sed "s/^{/{\"run\":$run,/"
      stop_server
    fi
  done
done
