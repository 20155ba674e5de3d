#!/usr/bin/env bash
# The machine's floor under two issue-7 targets, measured with minimal C programs
# (benches/floor/*.c, nothing of Switchboard in them), pinned as compare.sh pins:
# - one loopback write to each of 1000 sockets (paced latency cannot beat one such
#   round): `floor loopback write` at 64 and 1024 bytes (a paced round carries ~15 lines);
# - connect+register: the C client against the C registration server and against
#   Switchboard, then `switchboard bench connect` against each, all with the server's
#   CPU per connection, one right after the other (this machine's speed moves by 2x
#   within minutes).
# Prints one JSON line per case on stdout, RUNS times (compare.sh runs it once per run,
# with RUN_TAG set to its run number). Usage:
#   benches/floor.sh [RUNS] > floor.jsonl
# Needs: cc, taskset, a release build (cargo build --release; BIN as in compare.sh).
set -euo pipefail
RUNS=${RUNS:-${1:-3}}
# shellcheck source=benches/common.sh
source "$(dirname "$0")/common.sh"
SOURCES=$(dirname "$0")/floor
BUILT=$(mktemp -d)
SERVER_PID=
stop_server() {
  if [[ -n "$SERVER_PID" ]]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  SERVER_PID=
}
trap 'stop_server; rm -rf "$BUILT"' EXIT
for program in writes register_server register_client; do
  cc -O2 -Wall -Wextra -pthread -o "$BUILT/$program" "$SOURCES/$program.c"
done
ulimit -n "$(ulimit -Hn)"
PORT=${BASE_PORT:-24900}
SECONDS_MEASURED=${SECONDS_MEASURED:-4}

# CPU seconds (user + system) the server has used so far.
server_cpu() { awk -v tick="$(getconf CLK_TCK)" '{print ($14 + $15) / tick}' "/proc/$SERVER_PID/stat"; }

start_server() {
  PORT=$((PORT + 1))
  case "$1" in
    c) taskset -c 0 "$BUILT/register_server" "$PORT" & ;;
    switchboard)
      RUST_LOG=warn taskset -c 0 "$BIN" serve --line "127.0.0.1:$PORT" --json off --web off --irc off \
        --memory --flood-rate 0 --max-clients 100000 --max-clients-per-ip 100000 >/dev/null & ;;
  esac
  SERVER_PID=$!
  wait_port "$PORT"
}

# c_client SERVER: the C client against SERVER, with the server's CPU per connection
# over the whole run (warm-up included, as is every connection made in it).
c_client() {
  start_server "$1"
  local before after summary
  before=$(server_cpu)
  summary=$(taskset -c 1 "$BUILT/register_client" "$PORT" 32 "$SECONDS_MEASURED")
  after=$(server_cpu)
  stop_server
  python3 -c '
import json, sys
d = json.loads(sys.argv[1]); cpu = float(sys.argv[3]) - float(sys.argv[2])
d["case"] = "floor connect: C client, " + sys.argv[4] + " server"
d["server_cpu_us_per_connect"] = round(cpu * 1e6 / max(d["registered"], 1), 1)
d["run"] = int(sys.argv[5]); print(json.dumps(d))' "$summary" "$before" "$after" "$1" "$run"
}

for number in $(seq "$RUNS"); do
  run=${RUN_TAG:-$number}
  for size in 64 1024; do
    taskset -c 0 "$BUILT/writes" 1000 "$size" 20 | sed "s|^{|{\"run\":$run,|"
  done
  c_client c
  c_client switchboard
  for server in c switchboard; do
    start_server "$server"
    taskset -c 1 "$BIN" bench connect --addr "127.0.0.1:$PORT" --server-pid "$SERVER_PID" \
      --concurrency 32 --warmup 1s --duration "${SECONDS_MEASURED}s" \
      | sed "s|^{|{\"run\":$run,\"case\":\"floor connect: switchboard bench, $server server\",|"
    stop_server
  done
done
