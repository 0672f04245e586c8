#!/usr/bin/env bash
# Control-plane fan-out benchmark: for each fleet size, a fresh portico-cp (embedded store in a
# temp dir) and the `fleet` simulator against it. Appends one Markdown row per size to $ROWS.
#
# Environment (all optional):
#   AGENTS   fleet sizes (default "1000 10000")   PUSHES  single-route pushes per size (default 5)
#   ROWS     output file (default bench/results/raw-fleet.md)
#   BIN      where portico-cp and fleet are (default target/release)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
AGENTS=${AGENTS:-"1000 10000"}
PUSHES=${PUSHES:-5}
ROWS=${ROWS:-$root/bench/results/raw-fleet.md}
bin=${BIN:-$root/target/release}
CP_PORT=18170 CP_METRICS_PORT=18172

# Each simulated agent is a stream, not a socket, but leave room for the connections.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

work=$(mktemp -d /tmp/portico-fleet.XXXXXX)
cp_pid=
cleanup() {
  if [[ -n $cp_pid ]]; then
    kill "$cp_pid" 2>/dev/null || true
    wait "$cp_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$(dirname "$ROWS")"
: >"$ROWS"
for agents in $AGENTS; do
  rm -rf "$work/data"
  RUST_LOG=${RUST_LOG:-warn} "$bin/portico-cp" --data-dir "$work/data" \
    --listen "127.0.0.1:$CP_PORT" --metrics-listen "127.0.0.1:$CP_METRICS_PORT" \
    >"$work/cp.log" 2>&1 &
  cp_pid=$!
  if ! "$bin/fleet" --admin "http://127.0.0.1:$CP_PORT" --cp-pid "$cp_pid" \
    --agents "$agents" --pushes "$PUSHES" --row >>"$ROWS"; then
    echo "fleet bench with $agents agents failed; control-plane log:" >&2
    tail -n 30 "$work/cp.log" >&2
    exit 1
  fi
  tail -n 1 "$ROWS" >&2
  kill "$cp_pid"
  wait "$cp_pid" 2>/dev/null || true
  cp_pid=
done
