#!/usr/bin/env bash
# Instructions portico-agent executes per proxied HTTP/1.1 request, counted by callgrind: a
# deterministic check of a change where requests/s on a shared machine is not. The agent runs
# under valgrind with one proxy worker; after a warm-up, counting is switched on for a fixed
# number of requests (h2load --h1), and the total is divided by that number.
#
# Environment (all optional):
#   REQUESTS   measured requests (default 20000)    CONNS  client connections (default 16)
#   ROUTES     routes in the config (default 1)     OUT    (default /tmp/portico-callgrind.out)
#   AGENT      the agent binary measured (default target/release/portico-agent), e.g. one
#              built from an older commit, to compare a change
# Prints: "<instructions per request> Ir/request (<requests> requests)"; the profile in $OUT
# reads with callgrind_annotate.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
. "$here/configs.sh"
REQUESTS=${REQUESTS:-20000}
CONNS=${CONNS:-16}
ROUTES=${ROUTES:-1}
bin=$root/target/release
AGENT=${AGENT:-$bin/portico-agent}
UP_PORT=18080 PROXY_PORT=18081 CP_PORT=18070 CP_METRICS_PORT=18072 AGENT_ADMIN_PORT=18071

for tool in valgrind:valgrind callgrind_control:valgrind h2load:nghttp2-client curl:curl; do
  command -v "${tool%%:*}" >/dev/null || { echo "installing ${tool#*:}" >&2; apt-get install -y -qq "${tool#*:}" >/dev/null; }
done
OUT=${OUT:-/tmp/portico-callgrind.out}
. "$here/processes.sh"

start upstream "$bin/bench-upstream" --listen "127.0.0.1:$UP_PORT" --threads 2
wait_http "http://127.0.0.1:$UP_PORT/"
start portico-cp "$bin/portico-cp" --web-listen off --data-dir "$work/cp-data" --listen "127.0.0.1:$CP_PORT" \
  --metrics-listen "127.0.0.1:$CP_METRICS_PORT"
"$bin/bench-apply" --admin "http://127.0.0.1:$CP_PORT" --listen-port "$PROXY_PORT" \
  --upstream-port "$UP_PORT" --routes "$ROUTES" >/dev/null
start agent env RUST_LOG=info,portico::access=off valgrind --tool=callgrind --instr-atstart=no \
  --callgrind-out-file="$OUT" "$AGENT" --proxy-workers 1 \
  --control-plane "http://127.0.0.1:$CP_PORT" --admin-listen "127.0.0.1:$AGENT_ADMIN_PORT" \
  --node-id bench --region bench --zone bench --drain-timeout 1s
agent=$last
wait_http "http://127.0.0.1:$AGENT_ADMIN_PORT/readyz" 120
url="http://127.0.0.1:$PROXY_PORT$(route_prefix $((ROUTES - 1)))/bench"
wait_http "$url"
h2load --h1 -n 2000 -c "$CONNS" "$url" >/dev/null
callgrind_control -i on "$agent" >/dev/null 2>&1
h2load --h1 -n "$REQUESTS" -c "$CONNS" "$url" >"$work/h2load.out"
callgrind_control -i off "$agent" >/dev/null 2>&1
grep -q " 0 failed, 0 errored" "$work/h2load.out" || { cat "$work/h2load.out" >&2; exit 1; }
# valgrind writes the profile as the agent exits.
stop "$agent"
total=$(awk '/^totals:/ {s += $2} END {print s}' "$OUT")
echo "$((total / REQUESTS)) Ir/request ($REQUESTS requests)"
