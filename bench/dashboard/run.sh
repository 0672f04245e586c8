#!/usr/bin/env bash
# Dashboard at fleet scale: for each fleet size, one `portico-cp` (embedded store in a temp
# dir, dashboard on 127.0.0.1:18460) with that many simulated agents connected, then
#   (a) the dashboard's API calls with curl: JSON bytes, time to the whole answer (median and
#       max of $CALLS) and the control plane's CPU per call;
#   (b) the fleet page in headless chromium (`dashboard-probe`): navigation → first rows, the
#       page's own data-load-ms / data-render-ms over $REFRESHES refreshes, its JS heap, a screenshot
#       (bench/results/dashboard-fleet-<size>.png, e.g. dashboard-fleet-10k.png).
# Appends one Markdown section per size to $OUT and prints it.
#
# Build first (release binaries in target/release):
#   cargo build --release -p portico-control-plane -p portico-bench -p portico-integration-tests --bins
# Needs chromium (/usr/bin/chromium, or PORTICO_CHROMIUM), curl and jq.
#
# The simulator is the `fleet` binary of bench/fleet: it applies its config (here 20
# listeners, 10 routes each), connects the agents (spread over 5 regions × 3 zones, so the
# page has 15 groups), pushes one route to all of them, then settles for $HOLD seconds with
# every stream open: the quiet window in which this script measures. It is killed when done.
#
# Environment (all optional):
#   AGENTS  fleet sizes (default 10000)   CALLS  curl calls per API measure (default 10)
#   REFRESHES  page refreshes measured (default 10)   HOLD  see above (default 600)
#   OUT     output file (default bench/results/raw-dashboard.md)
#   BIN     where portico-cp, fleet and dashboard-probe are (default target/release)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
AGENTS=${AGENTS:-10000}
CALLS=${CALLS:-10}
REFRESHES=${REFRESHES:-10}
HOLD=${HOLD:-600}
OUT=${OUT:-$root/bench/results/raw-dashboard.md}
bin=${BIN:-$root/target/release}
CP_PORT=18160 CP_METRICS_PORT=18260 WEB_PORT=18460
web=http://127.0.0.1:$WEB_PORT

for tool in curl jq; do
  command -v "$tool" >/dev/null || { echo "bench/dashboard needs $tool" >&2; exit 1; }
done
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"

work=$(mktemp -d /tmp/portico-dashboard.XXXXXX)
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

# One dashboard call as the page makes it: POST /api/v1/<method> with a JSON body.
api() { # method body [curl flags]
  curl -fsS -X POST -H 'Content-Type: application/json' -H 'X-Portico-Request: 1' \
    --data "$2" "${@:3}" "$web/api/v1/$1"
}

# Prints "<bytes> <seconds>" of one call.
call() { # method body
  api "$1" "$2" -o /dev/null -w '%{size_download} %{time_total}\n'
}

# Whether all $1 agents run the simulator's pushed revision, as the fleet page counts them
# (the registry is flushed in batches, so the page may follow the simulator by a second).
settled() { # agents
  local pushed
  pushed=$(api History '{}' 2>/dev/null |
    jq -r 'first(.entries[]? | select(.message == "fleet bench: one route") | .revision) // empty')
  [[ -n $pushed ]] && api Fleet '{"pageSize": 1}' 2>/dev/null |
    jq -e --arg r "$pushed" --argjson n "$1" '.configRevision == $r and .total.inSync == $n' \
      >/dev/null
}

# Median and max of the numbers on stdin, one per line (the upper median of an even count).
median_max() {
  sort -g | awk '{ v[NR] = $1 } END { printf "%s %s\n", v[int(NR / 2) + 1], v[NR] }'
}

# The control plane's CPU time so far, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$cp_pid/stat"; }

# A table row for one call: payload bytes (median), time to the answer in ms (median, max)
# and the control plane's CPU per call in ms (the mean over the calls).
measure() { # label method body
  local samples before cpu
  before=$(cpu_ticks)
  samples=$(for _ in $(seq 1 "$CALLS"); do call "$2" "$3"; done)
  cpu=$((($(cpu_ticks) - before) * 1000 / $(getconf CLK_TCK) / CALLS))
  read -r bytes _ < <(cut -d' ' -f1 <<<"$samples" | median_max)
  read -r median max < <(cut -d' ' -f2 <<<"$samples" | awk '{ print $1 * 1000 }' | median_max)
  printf '| %s | `%s` | %s | %.1f | %.1f | %s |\n' "$1" "$3" "$bytes" "$median" "$max" "$cpu"
}

# One measure of the probe's output.
page() { awk -v k="$1" '$1 == k { print $2 }' "$work/probe.txt"; }

mkdir -p "$(dirname "$OUT")"
for agents in $AGENTS; do
  rm -rf "${work:?}"/*
  load_before=$(cut -d' ' -f1-3 /proc/loadavg)
  RUST_LOG=${RUST_LOG:-warn} "$bin/portico-cp" --store embedded --data-dir "$work/data" \
    --replica-id bench-0 --listen "127.0.0.1:$CP_PORT" \
    --metrics-listen "127.0.0.1:$CP_METRICS_PORT" --web-listen "127.0.0.1:$WEB_PORT" \
    >"$work/cp.log" 2>&1 &
  cp_pid=$!
  pids+=("$cp_pid")
  wait_ready "http://127.0.0.1:$CP_METRICS_PORT/readyz" portico-cp
  "$bin/fleet" --admin "http://127.0.0.1:$CP_PORT" --cp-pid "$cp_pid" --agents "$agents" \
    --listeners 20 --pushes 1 --settle "$HOLD" >"$work/fleet.log" 2>&1 &
  fleet_pid=$!
  pids+=("$fleet_pid")

  start=$SECONDS
  until settled "$agents"; do
    if ((SECONDS - start > 300)) || ! kill -0 "$fleet_pid" 2>/dev/null; then
      echo "the $agents agents were not all in sync after $((SECONDS - start)) s" >&2
      tail -n 20 "$work/fleet.log" "$work/cp.log" >&2
      exit 1
    fi
    sleep 1
  done
  echo "$agents agents in sync after $((SECONDS - start)) s" >&2

  label=$agents
  ((agents % 1000 == 0)) && label=$((agents / 1000))k
  shot=$root/bench/results/dashboard-fleet-$label.png
  "$bin/dashboard-probe" "$web" --refreshes "$REFRESHES" --screenshot "$shot" >"$work/probe.txt" &
  pids+=($!)
  wait "${pids[-1]}"

  {
    echo "### $agents agents"
    echo
    echo "Commit $(git -C "$root" rev-parse --short HEAD), $(nproc) cores, load average" \
      "before: $load_before. Control plane, $agents simulated agents and chromium on one machine."
    echo
    echo "| call | request | JSON bytes | answer ms, median | answer ms, max | CP CPU ms / call |"
    echo "|---|---|---:|---:|---:|---:|"
    measure "Fleet, first page" Fleet '{"pageSize": 100, "offset": 0}'
    measure "Fleet, last page" Fleet "{\"pageSize\": 100, \"offset\": $((agents > 100 ? agents - 100 : 0))}"
    measure "Fleet, page of 1000" Fleet '{"pageSize": 1000, "offset": 0}'
    measure "Agents (unpaged)" Agents '{}'
    measure RolloutStatus RolloutStatus '{}'
    measure Status Status '{}'
    echo
    echo "| fleet page in chromium | value |"
    echo "|---|---:|"
    echo "| navigation → first rows drawn, ms | $(page rows-shown-ms) |"
    echo "| data-load-ms, median / max of $REFRESHES refreshes | $(page load-ms-median) / $(page load-ms-max) |"
    echo "| data-render-ms, median / max | $(page render-ms-median) / $(page render-ms-max) |"
    echo "| JS heap used, MiB | $(page js-heap-mib) |"
    echo "| DOM elements | $(page dom-elements) |"
    echo "| agent rows shown / fleet total | $(page agent-rows) / $(page agents-total) |"
    echo
    echo "Screenshot: \`bench/results/$(basename "$shot")\`."
    echo
  } | tee -a "$OUT"
  stop_all
done
