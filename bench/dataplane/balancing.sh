#!/usr/bin/env bash
# The cost of load balancing on the data path: portico-agent in front of a 3-endpoint cluster
# (the same bench upstream at 127.0.0.1, .2 and .3), round robin against least request with
# health checks every second, in interleaved rounds of wrk (HTTP/1.1, 2 threads) so both
# policies see the same machine. Writes one line per run to $RAW:
#   policy conns run requests rps p50_us p99_us p999_us errors cpu_s_per_10k
#
# Environment (all optional): DURATION (default 5), RUNS (default 3), CONNS (default 64),
# RAW (default bench/results/raw-balancing.tsv).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
DURATION=${DURATION:-5}
RUNS=${RUNS:-3}
CONNS=${CONNS:-64}
RAW=${RAW:-$root/bench/results/raw-balancing.tsv}
bin=$root/target/release
UP_PORT=18080 PROXY_PORT=18081 CP_PORT=18070 CP_METRICS_PORT=18072 AGENT_ADMIN_PORT=18071

command -v wrk >/dev/null || { echo "installing wrk" >&2; apt-get install -y -qq wrk >/dev/null; }
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
. "$here/processes.sh"

# The upstream listens on every loopback address, so that the three endpoints are one server.
start upstream "$bin/bench-upstream" --listen "0.0.0.0:$UP_PORT" --threads 2
wait_http "http://127.0.0.1:$UP_PORT/"
start portico-cp "$bin/portico-cp" --web-listen off --data-dir "$work/cp-data" --listen "127.0.0.1:$CP_PORT" \
  --metrics-listen "127.0.0.1:$CP_METRICS_PORT"
# apply POLICY: applies the cluster with POLICY; sets $revision.
apply() {
  revision=$("$bin/bench-apply" --admin "http://127.0.0.1:$CP_PORT" --listen-port "$PROXY_PORT" \
    --upstream-port "$UP_PORT" --balancing "$1")
}
# applied: waits until the agent serves $revision.
applied() {
  local i
  for ((i = 0; i < 100; i++)); do
    curl -fsS "http://127.0.0.1:$AGENT_ADMIN_PORT/config" 2>/dev/null |
      python3 -c "import json,sys; sys.exit(json.load(sys.stdin).get('version') != $revision)" &&
      return 0
    sleep 0.1
  done
  echo "the agent did not apply revision $revision" >&2
  return 1
}
apply round-robin
start portico-agent env RUST_LOG=info,portico::access=off "$bin/portico-agent" \
  --proxy-workers 2 --control-plane "http://127.0.0.1:$CP_PORT" \
  --admin-listen "127.0.0.1:$AGENT_ADMIN_PORT" --node-id bench --region bench --zone bench
agent=$last
url="http://127.0.0.1:$PROXY_PORT/r00000/bench"
wait_http "$url"

mkdir -p "$(dirname "$RAW")"
: >"$RAW"
ticks() { sed 's/^.*) //' "/proc/$agent/stat" | awk '{print $12 + $13}'; }
for ((run = 1; run <= RUNS; run++)); do
  for policy in round-robin least-request-checked; do
    apply "$policy"
    applied
    wrk -t2 -c"$CONNS" -d1s "$url" >/dev/null
    before=$(ticks)
    line=$(wrk -t2 -c"$CONNS" -d"${DURATION}s" --timeout 5s -s "$here/latency.lua" "$url" | grep '^RESULT')
    after=$(ticks)
    read -r _ requests rps p50 p99 p999 errors <<<"$line"
    cpu=$(python3 -c "print(f'{($after - $before) / 100 / max($requests, 1) * 10000:.4f}')")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$policy" "$CONNS" "$run" "$requests" \
      "$rps" "$p50" "$p99" "$p999" "$errors" "$cpu" >>"$RAW"
    echo "$policy c=$CONNS run=$run: $rps req/s p99=${p99}us errors=$errors cpu/10k=$cpu" >&2
  done
done
