#!/usr/bin/env bash
# CPU time portico-agent spends per proxied HTTP/1.1 request: the agent's user + system time
# (one proxy worker) over a fixed number of requests (h2load --h1), after a warm-up. It counts
# the agent's own time rather than what the machine let it do per second, so it compares two
# builds on a shared machine better than requests/s; other load still moves it through caches
# and clock speed, so the builds take turns, round after round, and the medians are compared.
#
# Environment (all optional):
#   AGENTS    agent binaries measured in turn each round (default target/release/portico-agent),
#             e.g. "AGENTS=/tmp/agent-before /tmp/agent-after" to compare a change
#   REQUESTS  measured requests per round (default 200000)    CONNS  connections (default 16)
#   ROUNDS    rounds (default 5)
#   AGENT_CPU, LOAD_CPUS  with both set, the agent runs on core AGENT_CPU and everything else
#             (h2load, the upstream, the control plane) on LOAD_CPUS (taskset lists), so that
#             the agent does not share its core with the load, e.g. AGENT_CPU=1 LOAD_CPUS=0
# Prints one line per binary and round (CPU µs per request: user + system, and user alone), then
# "<binary>: median <µs> µs/request (user <µs>)".
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
. "$here/configs.sh"
bin=$root/target/release
read -r -a agents <<<"${AGENTS:-$bin/portico-agent}"
REQUESTS=${REQUESTS:-200000}
CONNS=${CONNS:-16}
ROUNDS=${ROUNDS:-5}
UP_PORT=18080 PROXY_PORT=18081 CP_PORT=18070 CP_METRICS_PORT=18072 AGENT_ADMIN_PORT=18071

for tool in h2load:nghttp2-client curl:curl; do
  command -v "${tool%%:*}" >/dev/null || { echo "installing ${tool#*:}" >&2; apt-get install -y -qq "${tool#*:}" >/dev/null; }
done
. "$here/processes.sh"
pin=()
if [[ -n ${AGENT_CPU:-} && -n ${LOAD_CPUS:-} ]]; then
  taskset -pc "$LOAD_CPUS" $$ >/dev/null
  pin=(taskset -c "$AGENT_CPU")
fi

start upstream "$bin/bench-upstream" --listen "127.0.0.1:$UP_PORT" --threads 2
wait_http "http://127.0.0.1:$UP_PORT/"
start portico-cp "$bin/portico-cp" --web-listen off --data-dir "$work/cp-data" --listen "127.0.0.1:$CP_PORT" \
  --metrics-listen "127.0.0.1:$CP_METRICS_PORT"
"$bin/bench-apply" --admin "http://127.0.0.1:$CP_PORT" --listen-port "$PROXY_PORT" \
  --upstream-port "$UP_PORT" >/dev/null
url="http://127.0.0.1:$PROXY_PORT$(route_prefix 0)/bench"

# ticks PID: the process's user and system clock ticks (all its threads).
ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12, $13}'; }

declare -A results users
for ((round = 1; round <= ROUNDS; round++)); do
  for agent_bin in "${agents[@]}"; do
    start agent env RUST_LOG=info,portico::access=off "${pin[@]}" "$agent_bin" --proxy-workers 1 \
      --control-plane "http://127.0.0.1:$CP_PORT" --admin-listen "127.0.0.1:$AGENT_ADMIN_PORT" \
      --node-id bench --region bench --zone bench --drain-timeout 1s
    agent=$last
    wait_http "$url"
    h2load --h1 -n 20000 -c "$CONNS" "$url" >/dev/null
    read -r user_before sys_before < <(ticks "$agent")
    h2load --h1 -n "$REQUESTS" -c "$CONNS" "$url" >"$work/h2load.out"
    read -r user_after sys_after < <(ticks "$agent")
    grep -q " 0 failed, 0 errored" "$work/h2load.out" || { cat "$work/h2load.out" >&2; exit 1; }
    stop "$agent"
    per_request="1e6 / $(getconf CLK_TCK) / $REQUESTS"
    us=$(python3 -c "print(f'{($user_after - $user_before + $sys_after - $sys_before) * $per_request:.3f}')")
    user=$(python3 -c "print(f'{($user_after - $user_before) * $per_request:.3f}')")
    results[$agent_bin]+="$us "
    users[$agent_bin]+="$user "
    echo "$agent_bin round $round: $us µs/request (user $user)"
  done
done
median() { python3 -c "import statistics, sys; print(f'{statistics.median(map(float, sys.argv[1:])):.3f}')" "$@"; }
for agent_bin in "${agents[@]}"; do
  # shellcheck disable=SC2086
  echo "$agent_bin: median $(median ${results[$agent_bin]}) µs/request (user $(median ${users[$agent_bin]}))"
done
