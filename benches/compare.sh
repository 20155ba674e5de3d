#!/usr/bin/env bash
# Compare switchboard, `ncat --chat` and the seed chat server with `switchboard bench`,
# and switchboard's WebSocket door (ws) with a plain Node `ws` broadcast server
# (ws-broadcast, benches/peers/ws-broadcast.mjs); `json` (the JSON door) on request;
# `irc` (switchboard's IRC door) beside `ngircd` and `inspircd` (Debian packages, run
# with benches/peers/*.conf.in) on request: KINDS="irc ngircd inspircd".
# Server pinned to CPU 0, generator to CPU 1; each case run RUNS times; prints one JSON
# summary per run (tagged with the case) on stdout, then (benches/floor.sh) what minimal
# C programs get on the same machine at the same moment. Usage:
#   benches/compare.sh [RUNS] > results.jsonl
#   KINDS="ws ws-broadcast" SIZES=1000 RUNS=3 benches/compare.sh
# Needs: a release build (cargo build --release), ncat, python3, node + npm (for
# ws-broadcast), taskset, cc (for the floor).
set -euo pipefail
RUNS=${RUNS:-${1:-3}}
# shellcheck source=benches/common.sh
source "$(dirname "$0")/common.sh"
SEED=${SEED:-$(dirname "$0")/../../shared/seeds/chat_server2.py}
PEERS=$(dirname "$0")/peers
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
# Long enough for what is still queued when sending stops (node ws: ~3 s at N=1000);
# the drain ends as soon as everything has arrived.
DRAIN=${DRAIN:-10s}
SIZES=${SIZES:-"200 1000"}
ulimit -n "$(ulimit -Hn)"
# Below the ephemeral range (32768-60999 here): a port the bench itself just used as a
# source port can still be in use when the next server wants it.
PORT=${BASE_PORT:-24400}
SERVER_PID=

DATA_DIR=
stop_server() {
  if [[ -n "$SERVER_PID" ]]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  SERVER_PID=
  if [[ -n "$DATA_DIR" ]]; then rm -rf "$DATA_DIR"; DATA_DIR=; fi
}
trap stop_server EXIT

# Switchboard with one door open on $PORT (`serve_switchboard line|json|web [stored]`);
# history in memory, or with `stored` in a fresh SQLite database (persist before fan-out).
serve_switchboard() {
  local doors=(--line off --json off --web off --irc off)
  case "$1" in
    line) doors[1]="127.0.0.1:$PORT" ;;
    json) doors[3]="127.0.0.1:$PORT" ;;
    web) doors[5]="127.0.0.1:$PORT" ;;
    irc) doors[7]="127.0.0.1:$PORT" ;;
  esac
  local history=(--memory)
  if [[ "${2:-}" == stored ]]; then
    DATA_DIR=$(mktemp -d)
    history=(--data "$DATA_DIR")
  fi
  RUST_LOG=warn taskset -c 0 "$BIN" serve "${doors[@]}" "${history[@]}" \
    --flood-rate 0 --max-clients 100000 --max-clients-per-ip 100000 >/dev/null &
}

# start_server KIND: a fresh server on a fresh port (the seed cannot reuse a port in TIME_WAIT).
start_server() {
  PORT=$((PORT + 1))
  case "$1" in
    switchboard) serve_switchboard line ;;
    switchboard-history) serve_switchboard line stored ;;
    json) serve_switchboard json ;;
    ws) serve_switchboard web ;;
    irc) serve_switchboard irc ;;
    ngircd | inspircd)
      # Their own config with this run's port, in a scratch directory the daemon can
      # write its pid file to (ngircd drops root for nobody).
      DATA_DIR=$(mktemp -d)
      chmod 777 "$DATA_DIR"
      sed "s|@PORT@|$PORT|; s|@DIR@|$DATA_DIR|" "$PEERS/$1.conf.in" > "$DATA_DIR/$1.conf"
      if [[ "$1" == ngircd ]]; then
        taskset -c 0 ngircd --nodaemon --config "$DATA_DIR/ngircd.conf" >/dev/null 2>&1 &
      else
        taskset -c 0 inspircd --nofork --runasroot --config="$DATA_DIR/inspircd.conf" >/dev/null 2>&1 &
      fi ;;
    ws-broadcast)
      [[ -d "$PEERS/node_modules/ws" ]] || npm ci --prefix "$PEERS" --silent >&2
      taskset -c 0 node "$PEERS/ws-broadcast.mjs" "$PORT" 127.0.0.1 >/dev/null & ;;
    ncat-chat)
      taskset -c 0 ncat --chat -l 127.0.0.1 "$PORT" --max-conns 20000 >/dev/null 2>&1 & ;;
    seed-chat)
      SEED_HOST=127.0.0.1 SEED_PORT=$PORT taskset -c 0 python3 "$SEED" >/dev/null & ;;
  esac
  SERVER_PID=$!
  wait_port "$PORT"
}

bench() { taskset -c 1 "$BIN" bench "$@" --addr "127.0.0.1:$PORT" --server-pid "$SERVER_PID"; }
# The bench's --target for a kind: the IRC servers all speak `irc`.
target_of() { case "$1" in irc | ngircd | inspircd) echo irc ;; *) echo "$1" ;; esac; }
# Connections opened at once: ngircd listens with a backlog of 10, and past it the
# kernel drops final ACKs, whose connections then outwait the registration timeout.
opening() { case "$1" in ngircd) echo 8 ;; *) echo 128 ;; esac; }
# tag CASE: prefix each summary with the run number and what the case is.
tag() { sed "s|^{|{\"run\":$run,\"case\":\"$1\",|"; }

for run in $(seq "$RUNS"); do
  for kind in ${KINDS:-switchboard ncat-chat seed-chat ws ws-broadcast}; do
    for n in $SIZES; do
      start_server "$kind"
      bench fanout --target "$(target_of "$kind")" --open-concurrency "$(opening "$kind")" \
        --clients "$n" --senders 10 --window 16 \
        --warmup "$WARMUP" --duration "$DURATION" --drain "$DRAIN" | tag "$kind fanout N=$n"
      stop_server
    done
    start_server "$kind"
    bench idle --target "$(target_of "$kind")" --open-concurrency "$(opening "$kind")" \
      --connections 1000 | tag "$kind idle C=1000"
    stop_server
    if [[ "$kind" == switchboard || "$kind" == json || "$kind" == ws ]]; then
      start_server "$kind"
      bench connect --target "$kind" --concurrency 32 --warmup 1s --duration 5s \
        | tag "$kind connect"
      stop_server
    fi
  done
  # A wider window (64 per sender): enough messages in flight that the run is not
  # latency-bound, so it shows the cost per delivery when rounds carry many lines.
  for kind in ${WIDE_KINDS:-switchboard ncat-chat}; do
    start_server "$kind"
    bench fanout --target "$kind" --clients 1000 --senders 10 --window 64 \
      --warmup "$WARMUP" --duration "$DURATION" --drain "$DRAIN" | tag "$kind fanout N=1000 window=64"
    stop_server
  done
  # Paced: 1 M deliveries/s (N=1000, 10 senders at 100 msg/s each, staggered).
  for kind in ${PACED_KINDS:-switchboard ncat-chat}; do
    start_server "$kind"
    bench fanout --target "$kind" --clients 1000 --senders 10 --rate 1000 \
      --warmup "$WARMUP" --duration "$DURATION" --drain "$DRAIN" | tag "$kind paced 1M/s"
    stop_server
  done
  if [[ -z "${KINDS:-}" || "${HISTORY:-}" == 1 ]]; then
    # History on: every message committed to SQLite (WAL, synchronous=FULL) before
    # fan-out, against `--memory` run right beside it (the machine's speed moves by 2x
    # within minutes, so a ratio against a run from minutes earlier says little). The
    # order alternates between runs so neither side always gets the later slot.
    pair=(switchboard switchboard-history)
    if (( run % 2 == 0 )); then pair=(switchboard-history switchboard); fi
    for kind in "${pair[@]}"; do
      start_server "$kind"
      label="switchboard-history fanout N=1000"
      [[ "$kind" == switchboard ]] && label="switchboard-memory fanout N=1000 beside history"
      bench fanout --target switchboard --clients 1000 --senders 10 --window 16 \
        --warmup "$WARMUP" --duration "$DURATION" --drain "$DRAIN" | tag "$label"
      stop_server
    done
    # As many idle connections as the descriptor limit allows (the bench and the
    # server each need one descriptor per connection, plus a few).
    start_server switchboard
    bench idle --connections "${MAX_IDLE:-19000}" | tag "switchboard idle C=${MAX_IDLE:-19000}"
    stop_server
  fi
  if [[ -z "${KINDS:-}" || "${FLOOR:-}" == 1 ]]; then
    # What minimal C programs get at the same moment (benches/floor.sh): the floor
    # under the paced and connect targets on this machine today.
    BIN="$BIN" RUNS=1 RUN_TAG="$run" BASE_PORT=$((24900 + 10 * run)) "$(dirname "$0")/floor.sh"
  fi
done
