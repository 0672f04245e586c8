#!/usr/bin/env bash
# Data-plane benchmark: the same upstream behind portico-agent, nginx and HAProxy (2 workers
# each), and the direct baseline, under the same wrk / h2load load. All of them run at once on
# ports of their own and the runs are interleaved (round 1 of every target, then round 2, …),
# so a load change on the machine hits every target alike. HTTPS cells: each proxy terminates
# TLS 1.3 with the same ECDSA P-256 certificate, made at start, and forwards to the same
# upstream. Idle cells: the memory each proxy holds per idle keep-alive client connection,
# plain and TLS, on freshly started proxies (idle.py). Writes raw results (one line per run,
# with the proxy's RSS after it) to $RAW and prints nothing else of note; summarize.py turns
# them into tables.
#
# Usage: run.sh [--quick]
#   --quick    the headline cells only (1 route, HTTP/1.1 at 64 connections, h2c, both HTTPS
#              cells and idle memory, 2 rounds of 3 s): under 3 minutes. Settings given in the
#              environment still win.
#
# Environment (all optional):
#   UPSTREAM   "nginx" (default: an nginx that answers a fixed 200, a server nobody here wrote)
#              or "bench" (bench-upstream, the Rust server of this repository)
#   DURATION   seconds per run (default 8)        RUNS     runs per cell (default 3)
#   CONNS      wrk connection counts ("16 64 256") TARGETS  ("direct nginx haproxy portico")
#   ROUTES_MANY  routes of the "last route matches" config (default 1000)
#   ROUTE_SETS which route counts to run: "1" (one route), "many" (ROUTES_MANY); default both
#   PROTOS     which cells to run: "h1" (wrk), "h2" (h2load), "https" (wrk over TLS 1.3 at
#              HTTPS_CONNS connections, default 64: keep-alive, and a new connection every 10
#              requests), "idle" (RSS per idle connection, IDLE_CONNS of them, default 2000,
#              plain and TLS, each making one request, IDLE_CONCURRENCY (4) at a time);
#              default all four. https needs route set 1; idle always runs on 1 route.
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
PROTOS=${PROTOS:-"h1 h2 https idle"}
HTTPS_CONNS=${HTTPS_CONNS:-64}
IDLE_CONNS=${IDLE_CONNS:-2000}
IDLE_CONCURRENCY=${IDLE_CONCURRENCY:-4}
H2_CONNS=${H2_CONNS:-16}
H2_STREAMS=${H2_STREAMS:-8}
RAW=${RAW:-$root/bench/results/raw-dataplane.tsv}
bin=$root/target/release

UP_PORT=18080
# Each proxy's HTTP/1.1 and h2c ports (portico serves both on one listener), and its HTTPS
# port.
NGINX_PORT=18081 NGINX_H2_PORT=18082 HAPROXY_PORT=18083 HAPROXY_H2_PORT=18084 PORTICO_PORT=18085
NGINX_TLS_PORT=18086 HAPROXY_TLS_PORT=18087 PORTICO_TLS_PORT=18088
CP_PORT=18070 CP_METRICS_PORT=18072 AGENT_ADMIN_PORT=18071

# --- tools ------------------------------------------------------------------------------------
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v h2load >/dev/null || need+=(nghttp2-client)
command -v nginx >/dev/null || need+=(nginx)
command -v haproxy >/dev/null || need+=(haproxy)
command -v python3 >/dev/null || need+=(python3)
command -v openssl >/dev/null || need+=(openssl)
if ((${#need[@]})); then
  echo "installing ${need[*]}" >&2
  apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
fi
# The installed packages may start their services; the bench runs its own instances.
for svc in nginx haproxy; do systemctl stop "$svc" 2>/dev/null || true; done
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
# portico-agent's HTTPS listener and Secret go in with the CLI's `portico apply`.
if [[ ! -x $bin/portico ]]; then
  echo "building the portico CLI" >&2
  (cd "$root" && cargo build --release -q -p portico-cli)
fi

. "$here/processes.sh"
tls_files "$work/tls"

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
# PROTO: h1 (wrk), h2 (h2load), https (wrk, keep-alive) or https-new10 (wrk, a new connection
# every 10 requests: reconnect.lua).
measure() {
  local target=$1 routes=$2 proto=$3 conns=$4 run=$5 url=$6
  shift 6
  local before after line requests rps p50 p99 p999 errors
  before=$(cpu_ticks "$@")
  if [[ $proto != h2 ]]; then
    local script=latency.lua
    [[ $proto == https-new10 ]] && script=reconnect.lua
    line=$(wrk -t2 -c"$conns" -d"${DURATION}s" --timeout 5s -s "$here/$script" "$url" |
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

# measure_idle TARGET RUN PATH PID...: opens IDLE_CONNS idle keep-alive connections to the
# target's HTTP port, then as many over TLS (idle.py), and appends one line per kind to $RAW:
# target routes idle|idle-tls conns run open rss_before_kib rss_after_kib kib_per_1000 errors
measure_idle() {
  local target=$1 run=$2 path=$3 kind open before after errors per lines=0
  shift 3
  while read -r kind open before after errors; do
    lines=$((lines + 1))
    [[ $kind == tls ]] && kind=idle-tls || kind=idle
    per=$(python3 -c "print(f'{($after - $before) * 1000 / max($open, 1):.1f}')")
    printf '%s\t1\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$target" "$kind" "$IDLE_CONNS" "$run" \
      "$open" "$before" "$after" "$per" "$errors" >>"$RAW"
    echo "$target $kind c=$IDLE_CONNS run=$run: $open open, RSS ${before} -> ${after} KiB," \
      "${per} KiB per 1000, errors=$errors" >&2
  done < <(python3 "$here/idle.py" --pids "$@" --path "$path" --conns "$IDLE_CONNS" \
    --concurrency "$IDLE_CONCURRENCY" \
    "$(port "$target" h1)" "tls:$(port "$target" https)")
  ((lines == 2)) || { echo "idle.py failed against $target" >&2; return 1; }
}

# resumes TARGET: whether the target resumes a TLS 1.3 session (a ticket from one connection
# accepted on the next), which the https-new10 cell relies on alike for every target.
resumes() {
  local i out
  for i in 1 2; do
    out=$( (printf 'GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n'; sleep 0.3) |
      openssl s_client -connect "127.0.0.1:$(port "$1" https)" \
        $([[ $i == 1 ]] && echo -sess_out || echo -sess_in) "$work/tls/session-$1" 2>/dev/null)
  done
  [[ $out == *$'\nReused, TLSv1.3'* ]]
}

# --- proxies ----------------------------------------------------------------------------------
# start_TARGET ROUTES: starts the proxy with ROUTES routes (and its HTTPS listener); sets
# $proxy_pid.
start_nginx() {
  nginx_config "$work/nginx" "$NGINX_PORT" "$NGINX_H2_PORT" "$UP_PORT" "$1" \
    "$NGINX_TLS_PORT" "$work/tls/cert.pem" "$work/tls/key.pem"
  start nginx nginx -c "$work/nginx/nginx.conf"
  proxy_pid=$last
}

start_haproxy() {
  mkdir -p "$work/haproxy"
  haproxy_config "$work/haproxy" "$HAPROXY_PORT" "$HAPROXY_H2_PORT" "$UP_PORT" "$1" \
    "$HAPROXY_TLS_PORT" "$work/tls/both.pem"
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
  portico_tls_config "$work/portico-tls.yaml" "$PORTICO_TLS_PORT" "$work/tls"
  "$bin/portico" --server "http://127.0.0.1:$CP_PORT" apply -f "$work/portico-tls.yaml" \
    -m "data-plane bench: HTTPS listener" >/dev/null
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
    nginx-https) echo "$NGINX_TLS_PORT" ;;
    haproxy-https) echo "$HAPROXY_TLS_PORT" ;;
    portico-https) echo "$PORTICO_TLS_PORT" ;;
    portico-*) echo "$PORTICO_PORT" ;;
  esac
}

# url TARGET PROTO PATH: the URL of PATH on TARGET over PROTO.
url() {
  case $2 in
    https*) echo "https://127.0.0.1:$(port "$1" https)$3" ;;
    *) echo "http://127.0.0.1:$(port "$1" "$2")$3" ;;
  esac
}

# Another run (or anything else) on these ports would silently take the load.
for port in $UP_PORT $NGINX_PORT $NGINX_H2_PORT $HAPROXY_PORT $HAPROXY_H2_PORT $PORTICO_PORT \
  $NGINX_TLS_PORT $HAPROXY_TLS_PORT $PORTICO_TLS_PORT $CP_PORT $CP_METRICS_PORT $AGENT_ADMIN_PORT; do
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

# start_all ROUTES PATH [WARM]: starts every proxy of $TARGETS with ROUTES routes, fills
# $pid_of and $targets (with direct, on one route), and warms up their connection pools (and
# TLS) with WARM connections (default 64) for a second.
start_all() {
  local routes=$1 path=$2 warm=${3:-64} target
  pid_of=()
  targets=()
  for target in $TARGETS; do
    if [[ $target == direct ]]; then
      [[ $routes == 1 ]] || continue
    else
      "start_$target" "$routes"
      pid_of[$target]=$proxy_pid
      wait_http "$(url "$target" h1 "$path")"
      wait_http "$(url "$target" https "$path")"
    fi
    targets+=("$target")
    # Warm up connection pools before measuring.
    wrk -t2 -c"$warm" -d1s "$(url "$target" h1 "$path")" >/dev/null
    [[ $target == direct ]] || wrk -t2 -c"$warm" -d1s "$(url "$target" https "$path")" >/dev/null
  done
}

declare -A pid_of=()
for set in $ROUTE_SETS; do
  routes=$([[ $set == many ]] && echo "$ROUTES_MANY" || echo 1)
  path="$(route_prefix $((routes - 1)))/bench"
  # Every target of this route set at once; the direct baseline has one route only.
  start_all "$routes" "$path"
  https=
  if [[ $routes == 1 ]] && wants https "$PROTOS"; then
    https=1
    for target in "${!pid_of[@]}"; do
      resumes "$target" && r=yes || r=NO
      echo "$target resumes TLS 1.3 sessions: $r" >&2
    done
  fi
  conns_list=$CONNS
  [[ $routes == 1 ]] || conns_list=64
  wants h1 "$PROTOS" || conns_list=
  for ((run = 1; run <= RUNS; run++)); do
    for conns in $conns_list; do
      for target in "${targets[@]}"; do
        measure "$target" "$routes" h1 "$conns" "$run" "$(url "$target" h1 "$path")" \
          ${pid_of[$target]:-}
      done
    done
    if [[ $routes == 1 ]] && wants h2 "$PROTOS"; then
      for target in "${targets[@]}"; do
        # The nginx upstream speaks HTTP/1.1 only: the direct h2c baseline needs bench-upstream.
        [[ $target == direct && $UPSTREAM != bench ]] && continue
        measure "$target" "$routes" h2 "$H2_CONNS" "$run" "$(url "$target" h2 "$path")" \
          ${pid_of[$target]:-}
      done
    fi
    if [[ -n $https ]]; then
      # The upstream is plain HTTP: there is no direct HTTPS baseline.
      for proto in https https-new10; do
        for target in "${targets[@]}"; do
          [[ $target == direct ]] && continue
          measure "$target" "$routes" "$proto" "$HTTPS_CONNS" "$run" \
            "$(url "$target" "$proto" "$path")" "${pid_of[$target]}"
        done
      done
    fi
  done
  for target in "${!pid_of[@]}"; do stop "${pid_of[$target]}"; done
  pid_of=()
done

# Idle connections: every round on freshly started proxies (1 route), warmed up by as few
# connections as idle.py keeps requesting at once, so that no proxy hands the idle connections
# memory that earlier load left free, nor needs more upstream connections for them.
if wants idle "$PROTOS"; then
  path="$(route_prefix 0)/bench"
  for ((run = 1; run <= RUNS; run++)); do
    start_all 1 "$path" "$IDLE_CONCURRENCY"
    for target in "${targets[@]}"; do
      [[ $target == direct ]] && continue
      measure_idle "$target" "$run" "$path" "${pid_of[$target]}"
    done
    for target in "${!pid_of[@]}"; do stop "${pid_of[$target]}"; done
    pid_of=()
  done
fi
