#!/usr/bin/env bash
# Data-plane benchmark: the same upstream behind portico-agent, nginx and HAProxy (2 workers
# each), and the direct baseline, under the same wrk / h2load load. Writes raw results (one
# line per run) to $RAW and prints nothing else of note; summarize.py turns them into tables.
#
# Environment (all optional):
#   DURATION   seconds per run (default 8)        RUNS     runs per cell (default 3)
#   CONNS      wrk connection counts ("16 64 256") TARGETS  ("direct nginx haproxy portico")
#   ROUTES_MANY  routes of the "last route matches" config (default 1000)
#   ROUTE_SETS which route counts to run: "1" (one route), "many" (ROUTES_MANY); default both
#   PROTOS     which protocols to run: "h1" (wrk), "h2" (h2load); default both
#   e.g. only the HTTP/1.1 64-connection cell of nginx and portico:
#   CONNS=64 ROUTE_SETS=1 PROTOS=h1 TARGETS="nginx portico" bench/dataplane/run.sh
#   RAW        raw output file (default bench/results/raw-dataplane.tsv)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
. "$here/configs.sh"

DURATION=${DURATION:-8}
RUNS=${RUNS:-3}
CONNS=${CONNS:-"16 64 256"}
TARGETS=${TARGETS:-"direct nginx haproxy portico"}
ROUTES_MANY=${ROUTES_MANY:-1000}
ROUTE_SETS=${ROUTE_SETS:-"1 many"}
PROTOS=${PROTOS:-"h1 h2"}
H2_CONNS=${H2_CONNS:-16}
H2_STREAMS=${H2_STREAMS:-8}
RAW=${RAW:-$root/bench/results/raw-dataplane.tsv}
bin=$root/target/release

UP_PORT=18080 PROXY_PORT=18081 PROXY_H2_PORT=18082
CP_PORT=18070 CP_METRICS_PORT=18072 AGENT_ADMIN_PORT=18071

# --- tools ------------------------------------------------------------------------------------
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v h2load >/dev/null || need+=(nghttp2-client)
command -v nginx >/dev/null || need+=(nginx)
command -v haproxy >/dev/null || need+=(haproxy)
command -v python3 >/dev/null || need+=(python3)
if ((${#need[@]})); then
  echo "installing ${need[*]}" >&2
  apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
fi
# The installed packages may start their services; the bench runs its own instances.
for svc in nginx haproxy; do systemctl stop "$svc" 2>/dev/null || true; done
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

. "$here/processes.sh"

# cpu_ticks PID...: user+system clock ticks of the processes and their child processes.
cpu_ticks() {
  local all=("$@") p
  for p in "$@"; do
    # nginx's workers are children of its master.
    all+=($(pgrep -P "$p" || true))
  done
  local t=0 s
  for p in "${all[@]}"; do
    s=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null) || continue
    set -- $s
    t=$((t + ${12} + ${13}))
  done
  echo "$t"
}

# measure TARGET ROUTES PROTO CONNS RUN URL PID...: one load run; appends a line to $RAW:
# target routes proto conns run requests rps p50_us p99_us p999_us errors cpu_s_per_10k
measure() {
  local target=$1 routes=$2 proto=$3 conns=$4 run=$5 url=$6
  shift 6
  local before after line requests rps p50 p99 p999 errors
  before=$(cpu_ticks "$@")
  if [[ $proto == h1 ]]; then
    line=$(wrk -t2 -c"$conns" -d"${DURATION}s" --timeout 5s -s "$here/latency.lua" "$url" |
      grep '^RESULT') || { echo "wrk failed against $url" >&2; return 1; }
    read -r _ requests rps p50 p99 p999 errors <<<"$line"
  else
    h2load -c"$conns" -m"$H2_STREAMS" -t2 -D"$DURATION" --log-file="$work/h2.log" "$url" \
      >"$work/h2load.out" || { echo "h2load failed against $url" >&2; return 1; }
    read -r requests rps p50 p99 p999 errors < <(python3 "$here/h2stats.py" "$work/h2load.out" "$work/h2.log")
  fi
  after=$(cpu_ticks "$@")
  local cpu="-"
  if (($# > 0)); then
    cpu=$(python3 -c "print(f'{($after - $before) / 100 / max($requests, 1) * 10000:.4f}')")
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$target" "$routes" "$proto" "$conns" \
    "$run" "$requests" "$rps" "$p50" "$p99" "$p999" "$errors" "$cpu" >>"$RAW"
  echo "$target routes=$routes $proto c=$conns run=$run: $rps req/s p99=${p99}us errors=$errors cpu/10k=$cpu" >&2
}

# --- proxies ----------------------------------------------------------------------------------
# start_TARGET ROUTES: starts the proxy with ROUTES routes; sets $proxy_pid.
start_nginx() {
  nginx_config "$work/nginx" "$PROXY_PORT" "$PROXY_H2_PORT" "$UP_PORT" "$1"
  start nginx nginx -c "$work/nginx/nginx.conf"
  proxy_pid=$last
}

start_haproxy() {
  mkdir -p "$work/haproxy"
  haproxy_config "$work/haproxy" "$PROXY_PORT" "$PROXY_H2_PORT" "$UP_PORT" "$1"
  start haproxy haproxy -db -f "$work/haproxy/haproxy.cfg"
  proxy_pid=$last
}

cp_pid=
start_portico() {
  if [[ -z $cp_pid ]]; then
    rm -rf "$work/cp-data"
    start portico-cp "$bin/portico-cp" --data-dir "$work/cp-data" --listen "127.0.0.1:$CP_PORT" \
      --metrics-listen "127.0.0.1:$CP_METRICS_PORT"
    cp_pid=$last
  fi
  "$bin/bench-apply" --admin "http://127.0.0.1:$CP_PORT" --listen-port "$PROXY_PORT" \
    --upstream-port "$UP_PORT" --routes "$1" >/dev/null
  # The agent's data path gets the same 2 worker threads as nginx and HAProxy.
  # Access log off, as for nginx and HAProxy.
  start portico-agent env RUST_LOG=info,portico::access=off "$bin/portico-agent" \
    --proxy-workers 2 --control-plane "http://127.0.0.1:$CP_PORT" --admin-listen "127.0.0.1:$AGENT_ADMIN_PORT" \
    --node-id bench --region bench --zone bench --drain-timeout 1s
  proxy_pid=$last
  wait_http "http://127.0.0.1:$AGENT_ADMIN_PORT/readyz"
}

# portico serves h1 and h2c on one listener.
h2_port() { [[ $1 == portico ]] && echo "$PROXY_PORT" || echo "$PROXY_H2_PORT"; }

# Another run (or anything else) on these ports would silently take the load.
for port in $UP_PORT $PROXY_PORT $PROXY_H2_PORT $CP_PORT $CP_METRICS_PORT $AGENT_ADMIN_PORT; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port is in use; stop whatever listens there first" >&2
    exit 1
  fi
done

mkdir -p "$(dirname "$RAW")"
: >"$RAW"
start upstream "$bin/bench-upstream" --listen "127.0.0.1:$UP_PORT" --threads 2
upstream_pid=$last
wait_http "http://127.0.0.1:$UP_PORT/"

# wants WORD LIST: whether WORD is one of the words of LIST.
wants() { [[ " $2 " == *" $1 "* ]]; }

for target in $TARGETS; do
  for set in $ROUTE_SETS; do
    routes=$([[ $set == many ]] && echo "$ROUTES_MANY" || echo 1)
    path="$(route_prefix $((routes - 1)))/bench"
    if [[ $target == direct ]]; then
      [[ $routes == 1 ]] || continue
      url="http://127.0.0.1:$UP_PORT$path" h2url=$url
      watch=()
    else
      "start_$target" "$routes"
      url="http://127.0.0.1:$PROXY_PORT$path"
      h2url="http://127.0.0.1:$(h2_port "$target")$path"
      wait_http "$url"
      watch=("$proxy_pid")
    fi
    # Warm up connection pools before measuring.
    wrk -t2 -c64 -d1s "$url" >/dev/null
    conns_list=$CONNS
    [[ $routes == 1 ]] || conns_list=64
    wants h1 "$PROTOS" || conns_list=
    for conns in $conns_list; do
      for ((run = 1; run <= RUNS; run++)); do
        measure "$target" "$routes" h1 "$conns" "$run" "$url" "${watch[@]}"
      done
    done
    if [[ $routes == 1 ]] && wants h2 "$PROTOS"; then
      for ((run = 1; run <= RUNS; run++)); do
        measure "$target" "$routes" h2 "$H2_CONNS" "$run" "$h2url" "${watch[@]}"
      done
    fi
    [[ $target == direct ]] || stop "$proxy_pid"
  done
done
