#!/usr/bin/env bash
# Control-plane fan-out benchmark: for each fleet size, fresh control-plane replicas and the
# `fleet` simulator against them. One replica runs on the embedded store (temp dir); several
# share one etcd started here (temp dir). Appends one Markdown row per size to $ROWS.
#
# Environment (all optional):
#   AGENTS    fleet sizes (default "1000 10000")   PUSHES  single-route pushes per size (default 5)
#   REPLICAS  control-plane replicas (default 1); agent i starts on replica i mod REPLICAS
#   STREAMS_PER_CONNECTION  agent streams per HTTP/2 connection (default 100; 1: a TCP
#             connection per agent)
#   ACCEPT_RATE  each replica's --max-stream-accept-rate (default: the binary's)
#   FLEET_ARGS   more flags of `fleet`, e.g. "--listeners 20" (a lighter config per agent)
#   ROWS      output file (default bench/results/raw-fleet.md)
#   BIN       where portico-cp and fleet are (default target/release)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
AGENTS=${AGENTS:-"1000 10000"}
PUSHES=${PUSHES:-5}
REPLICAS=${REPLICAS:-1}
STREAMS_PER_CONNECTION=${STREAMS_PER_CONNECTION:-100}
ROWS=${ROWS:-$root/bench/results/raw-fleet.md}
bin=${BIN:-$root/target/release}
CP_PORT=18170 CP_METRICS_PORT=18270 ETCD_PORT=18370

# Every stream, and with STREAMS_PER_CONNECTION=1 every agent's connection, needs descriptors.
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"

work=$(mktemp -d /tmp/portico-fleet.XXXXXX)
pids=()
stop_all() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pids=()
}
cleanup() {
  stop_all
  rm -rf "$work"
}
trap cleanup EXIT

wait_ready() { # url what
  for _ in $(seq 1 300); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "$2 did not become ready at $1" >&2
  return 1
}

accept=()
[[ -n ${ACCEPT_RATE:-} ]] && accept=(--max-stream-accept-rate "$ACCEPT_RATE")

mkdir -p "$(dirname "$ROWS")"
: >"$ROWS"
for agents in $AGENTS; do
  rm -rf "$work"/*
  store=(--store embedded --data-dir "$work/data")
  if ((REPLICAS > 1)); then
    etcd --name bench --data-dir "$work/etcd" --log-level error \
      --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
      --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
      --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
      --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
      --initial-cluster "bench=http://127.0.0.1:$((ETCD_PORT + 1))" >"$work/etcd.log" 2>&1 &
    pids+=($!)
    wait_ready "http://127.0.0.1:$ETCD_PORT/health" etcd
    store=(--store etcd --etcd-endpoints "http://127.0.0.1:$ETCD_PORT")
  fi
  urls=() cp_pids=() metrics=()
  for ((r = 0; r < REPLICAS; r++)); do
    RUST_LOG=${RUST_LOG:-warn} "$bin/portico-cp" --web-listen off "${store[@]}" "${accept[@]}" \
      --replica-id "bench-$r" \
      --listen "127.0.0.1:$((CP_PORT + r))" --metrics-listen "127.0.0.1:$((CP_METRICS_PORT + r))" \
      >"$work/cp-$r.log" 2>&1 &
    pids+=($!) cp_pids+=($!)
    urls+=("http://127.0.0.1:$((CP_PORT + r))")
    metrics+=("http://127.0.0.1:$((CP_METRICS_PORT + r))")
    wait_ready "http://127.0.0.1:$((CP_METRICS_PORT + r))/readyz" "portico-cp $r"
  done
  if ! "$bin/fleet" --admin "${urls[0]}" --discovery "$(IFS=,; echo "${urls[*]}")" \
    --cp-pid "$(IFS=,; echo "${cp_pids[*]}")" --metrics "$(IFS=,; echo "${metrics[*]}")" \
    --agents "$agents" --pushes "$PUSHES" \
    --streams-per-connection "$STREAMS_PER_CONNECTION" ${FLEET_ARGS:-} --row >>"$ROWS"; then
    echo "fleet bench with $agents agents failed; control-plane logs:" >&2
    tail -n 30 "$work"/cp-*.log >&2
    exit 1
  fi
  tail -n 1 "$ROWS" >&2
  stop_all
done
