# Shared by benches/compare.sh and benches/floor.sh (sourced, not run): which
# switchboard binary to measure, and waiting for a server to listen.

# BIN: the build you mean to measure. Refuse a missing binary or one older than the
# sources (one session's runs once measured a stale target/release/switchboard).
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release/switchboard}
if [[ ! -x "$BIN" ]]; then
  echo "no switchboard binary at $BIN: run cargo build --release, or set BIN" >&2
  exit 1
fi
stale=$(find "$(dirname "${BASH_SOURCE[0]}")/../src" "$(dirname "${BASH_SOURCE[0]}")/../Cargo.toml" \
  -newer "$BIN" -print -quit)
if [[ -n "$stale" ]]; then
  echo "$BIN is older than $stale: rebuild (cargo build --release) or set BIN" >&2
  exit 1
fi

# wait_port PORT: until something listens on 127.0.0.1:PORT (at most 5 s).
wait_port() {
  for _ in $(seq 100); do
    # Look, do not connect: a probe connection confuses the seed server for good.
    if ss -Hltn "sport = :$1" | grep -q LISTEN; then return 0; fi
    sleep 0.05
  done
  echo "server on port $1 did not come up" >&2; return 1
}
