#!/usr/bin/env bash
# Data-plane benchmark: the same upstream behind portico-agent, nginx and HAProxy (2 workers
# each), and the direct baseline, under the same wrk / h2load load. All of them run at once on
# ports of their own and the runs are interleaved (round 1 of every target, then round 2, …),
# so a load change on the machine hits every target alike. Writes raw results (one line per
# run, with the proxy's RSS after it) to $RAW and prints nothing else of note; summarize.py
# turns them into tables.
#
# Usage: run.sh [--quick]
#   --quick    the headline cells only (1 route, HTTP/1.1 at 64 connections and h2c, 2 rounds
#              of 3 s): under 3 minutes. Settings given in the environment still win.
#
# Environment (all optional):
#   UPSTREAM   "nginx" (default: an nginx that answers a fixed 200, a server nobody here wrote)
#              or "bench" (bench-upstream, the Rust server of this repository)
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

if [[ ${1:-} == --quick ]]; then
  DURATION=${DURATION:-3} RUNS=${RUNS:-2} CONNS=${CONNS:-64} ROUTE_SETS=${ROUTE_SETS:-1}
elif (($#)); then
  echo "usage: $0 [--quick]" >&2
  exit 2
fi
UPSTREAM=${UPSTREAM:-nginx}
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

UP_PORT=18080
# Each proxy's HTTP/1.1 and h2c ports (portico serves both on one listener).
NGINX_PORT=18081 NGINX_H2_PORT=18082 HAPROXY_PORT=18083 HAPROXY_H2_PORT=18084 PORTICO_PORT=18085
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

# rss_kib PID...: resident memory of the processes and their child processes, in KiB.
rss_kib() {
  local all=("$@") p t=0 r
  for p in "$@"; do all+=($(pgrep -P "$p" || true)); done
  for p in "${all[@]}"; do
    r=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null) || continue
    t=$((t + ${r:-0}))
  done
  echo "$t"
}

# measure TARGET ROUTES PROTO CONNS RUN URL PID...: one load run; appends a line to $RAW:
# target routes proto conns run requests rps p50_us p99_us p999_us errors cpu_s_per_10k rss_kib
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
  local cpu="-" rss="-"
  if (($# > 0)); then
    cpu=$(python3 -c "print(f'{($after - $before) / 100 / max($requests, 1) * 10000:.4f}')")
    rss=$(rss_kib "$@")
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$target" "$routes" "$proto" "$conns" \
    "$run" "$requests" "$rps" "$p50" "$p99" "$p999" "$errors" "$cpu" "$rss" >>"$RAW"
  echo "$target routes=$routes $proto c=$conns run=$run: $rps req/s p99=${p99}us errors=$errors cpu/10k=$cpu rss=${rss}KiB" >&2
}

# --- proxies ----------------------------------------------------------------------------------
# start_TARGET ROUTES: starts the proxy with ROUTES routes; sets $proxy_pid.
start_nginx() {
  nginx_config "$work/nginx" "$NGINX_PORT" "$NGINX_H2_PORT" "$UP_PORT" "$1"
  start nginx nginx -c "$work/nginx/nginx.conf"
  proxy_pid=$last
}

start_haproxy() {
  mkdir -p "$work/haproxy"
  haproxy_config "$work/haproxy" "$HAPROXY_PORT" "$HAPROXY_H2_PORT" "$UP_PORT" "$1"
  start haproxy haproxy -db -f "$work/haproxy/haproxy.cfg"
  proxy_pid=$last
}

cp_pid=
start_portico() {
  if [[ -z $cp_pid ]]; then
    rm -rf "$work/cp-data"
    start portico-cp "$bin/portico-cp" --web-listen off --data-dir "$work/cp-data" --listen "127.0.0.1:$CP_PORT" \
      --metrics-listen "127.0.0.1:$CP_METRICS_PORT"
    cp_pid=$last
  fi
  "$bin/bench-apply" --admin "http://127.0.0.1:$CP_PORT" --listen-port "$PORTICO_PORT" \
    --upstream-port "$UP_PORT" --routes "$1" >/dev/null
  # The agent's data path gets the same 2 worker threads as nginx and HAProxy.
  # Access log off, as for nginx and HAProxy.
  start portico-agent env RUST_LOG=info,portico::access=off "$bin/portico-agent" \
    --proxy-workers 2 --control-plane "http://127.0.0.1:$CP_PORT" --admin-listen "127.0.0.1:$AGENT_ADMIN_PORT" \
    --node-id bench --region bench --zone bench --drain-timeout 1s
  proxy_pid=$last
  wait_http "http://127.0.0.1:$AGENT_ADMIN_PORT/readyz"
}

# port TARGET PROTO: where TARGET serves PROTO.
port() {
  case $1-$2 in
    direct-*) echo "$UP_PORT" ;;
    nginx-h1) echo "$NGINX_PORT" ;;
    nginx-h2) echo "$NGINX_H2_PORT" ;;
    haproxy-h1) echo "$HAPROXY_PORT" ;;
    haproxy-h2) echo "$HAPROXY_H2_PORT" ;;
    portico-*) echo "$PORTICO_PORT" ;;
  esac
}

# Another run (or anything else) on these ports would silently take the load.
for port in $UP_PORT $NGINX_PORT $NGINX_H2_PORT $HAPROXY_PORT $HAPROXY_H2_PORT $PORTICO_PORT \
  $CP_PORT $CP_METRICS_PORT $AGENT_ADMIN_PORT; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port is in use; stop whatever listens there first" >&2
    exit 1
  fi
done

mkdir -p "$(dirname "$RAW")"
: >"$RAW"
case $UPSTREAM in
  nginx)
    upstream_config "$work/upstream" "$UP_PORT"
    start upstream nginx -c "$work/upstream/nginx.conf"
    ;;
  bench) start upstream "$bin/bench-upstream" --listen "127.0.0.1:$UP_PORT" --threads 2 ;;
  *)
    echo "UPSTREAM is nginx or bench, not $UPSTREAM" >&2
    exit 2
    ;;
esac
wait_http "http://127.0.0.1:$UP_PORT/"

# wants WORD LIST: whether WORD is one of the words of LIST.
wants() { [[ " $2 " == *" $1 "* ]]; }

for set in $ROUTE_SETS; do
  routes=$([[ $set == many ]] && echo "$ROUTES_MANY" || echo 1)
  path="$(route_prefix $((routes - 1)))/bench"
  # Every target of this route set at once; the direct baseline has one route only.
  declare -A pid_of=()
  targets=()
  for target in $TARGETS; do
    if [[ $target == direct ]]; then
      [[ $routes == 1 ]] || continue
    else
      "start_$target" "$routes"
      pid_of[$target]=$proxy_pid
      wait_http "http://127.0.0.1:$(port "$target" h1)$path"
    fi
    targets+=("$target")
    # Warm up connection pools before measuring.
    wrk -t2 -c64 -d1s "http://127.0.0.1:$(port "$target" h1)$path" >/dev/null
  done
  conns_list=$CONNS
  [[ $routes == 1 ]] || conns_list=64
  wants h1 "$PROTOS" || conns_list=
  for ((run = 1; run <= RUNS; run++)); do
    for conns in $conns_list; do
      for target in "${targets[@]}"; do
        measure "$target" "$routes" h1 "$conns" "$run" \
          "http://127.0.0.1:$(port "$target" h1)$path" ${pid_of[$target]:-}
      done
    done
    if [[ $routes == 1 ]] && wants h2 "$PROTOS"; then
      for target in "${targets[@]}"; do
        # The nginx upstream speaks HTTP/1.1 only: the direct h2c baseline needs bench-upstream.
        [[ $target == direct && $UPSTREAM != bench ]] && continue
        measure "$target" "$routes" h2 "$H2_CONNS" "$run" \
          "http://127.0.0.1:$(port "$target" h2)$path" ${pid_of[$target]:-}
      done
    fi
  done
  for target in "${!pid_of[@]}"; do stop "${pid_of[$target]}"; done
  unset pid_of
done
