#!/usr/bin/env bash
# Unary gRPC calls per second through portico-agent and through nginx (grpc_pass), to the same
# tonic server (`grpc-echo-server`, 2 threads), under the same load: h2load over h2c with a
# fixed gRPC-framed request (portico.test.echo.Echo/Unary, Msg{text: "hello"}) and the headers
# a gRPC client sends (content-type: application/grpc, te: trailers). The agent and nginx get 2
# workers each. After each portico run the agent's own count of grpc_status="0" calls must
# equal h2load's successes (an HTTP 200 alone does not make a successful gRPC call). Writes one
# line per run to $RAW:
#   target conns streams run requests rps succeeded failed
#
# Environment (all optional): DURATION (default 5), RUNS (default 3), CONNS (default 16),
# STREAMS (concurrent streams per connection, default 8), RAW (default
# bench/results/raw-grpc.tsv).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
DURATION=${DURATION:-5}
RUNS=${RUNS:-3}
CONNS=${CONNS:-16}
STREAMS=${STREAMS:-8}
RAW=${RAW:-$root/bench/results/raw-grpc.tsv}
bin=$root/target/release
UP_PORT=18090 PROXY_PORT=18091 NGINX_PORT=18092 CP_PORT=18093 CP_METRICS_PORT=18094
AGENT_ADMIN_PORT=18095
PATH_=/portico.test.echo.Echo/Unary

for tool in h2load:nghttp2-client nginx:nginx curl:curl; do
  command -v "${tool%%:*}" >/dev/null || { echo "installing ${tool#*:}" >&2; apt-get install -y -qq "${tool#*:}" >/dev/null; }
done
for b in grpc-echo-server portico-cp portico-agent portico; do
  [[ -x $bin/$b ]] || { echo "build first: cargo build --release -p portico-grpc-tests -p portico-control-plane -p portico-agent -p portico-cli" >&2; exit 1; }
done
systemctl stop nginx 2>/dev/null || true
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
. "$here/processes.sh"

# The request: a 5-byte gRPC prefix (uncompressed, length 7) and Msg{text: "hello"}.
printf '\x00\x00\x00\x00\x07\x0a\x05hello' >"$work/unary.bin"
# load PORT H2LOAD-ARGS...: h2load's calls through PORT.
load() {
  local port=$1
  shift
  h2load -c "$CONNS" -m "$STREAMS" -t 2 "$@" -d "$work/unary.bin" \
    -H 'content-type: application/grpc' -H 'te: trailers' "http://127.0.0.1:$port$PATH_"
}
# ready PORT: polls until a call through PORT succeeds.
ready() {
  local i
  for ((i = 0; i < 100; i++)); do
    h2load -n 1 -c 1 -d "$work/unary.bin" -H 'content-type: application/grpc' -H 'te: trailers' \
      "http://127.0.0.1:$1$PATH_" 2>/dev/null | grep -q '^status codes: 1 2xx' && return 0
    sleep 0.1
  done
  echo "no gRPC answer on port $1; logs in $work" >&2
  tail -n 20 "$work"/*.log >&2
  return 1
}
# grpc_ok: the agent's count of calls that ended with grpc-status 0.
grpc_ok() {
  curl -fsS "http://127.0.0.1:$AGENT_ADMIN_PORT/metrics" |
    awk '/^portico_agent_requests_total\{.*grpc_status="0"/ {n += $NF} END {print n + 0}'
}

start upstream "$bin/grpc-echo-server" "127.0.0.1:$UP_PORT" 2
start portico-cp "$bin/portico-cp" --web-listen off --data-dir "$work/cp-data" --listen "127.0.0.1:$CP_PORT" \
  --metrics-listen "127.0.0.1:$CP_METRICS_PORT"
cat >"$work/grpc.yaml" <<YAML
kind: Listener
name: grpc
spec: {address: 127.0.0.1, port: $PROXY_PORT, protocol: HTTP, route_table: grpc}
---
kind: RouteTable
name: grpc
spec:
  virtual_hosts:
    - domains: ["*"]
      routes:
        - match: {grpc: {service: portico.test.echo.Echo}}
          action: {cluster: echo}
---
kind: Cluster
name: echo
spec: {endpoints: [{address: 127.0.0.1, port: $UP_PORT}], protocol: HTTP2}
YAML
for ((i = 0; i < 100; i++)); do
  "$bin/portico" --server "http://127.0.0.1:$CP_PORT" apply -f "$work/grpc.yaml" >/dev/null 2>&1 && break
  sleep 0.1
done
start portico-agent env RUST_LOG=info,portico::access=off "$bin/portico-agent" \
  --proxy-workers 2 --control-plane "http://127.0.0.1:$CP_PORT" \
  --admin-listen "127.0.0.1:$AGENT_ADMIN_PORT" --node-id bench --region bench --zone bench
ready "$PROXY_PORT"

mkdir -p "$work/nginx/tmp"
cat >"$work/nginx/nginx.conf" <<CONF
worker_processes 2;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
worker_rlimit_nofile 65536;
events { worker_connections 16384; }
http {
  access_log off;
  client_body_temp_path $work/nginx/tmp/body;
  proxy_temp_path $work/nginx/tmp/proxy;
  fastcgi_temp_path $work/nginx/tmp/fastcgi;
  uwsgi_temp_path $work/nginx/tmp/uwsgi;
  scgi_temp_path $work/nginx/tmp/scgi;
  keepalive_requests 100000000;
  upstream echo {
    server 127.0.0.1:$UP_PORT;
    keepalive 64;
    keepalive_requests 100000000;
  }
  server {
    listen 127.0.0.1:$NGINX_PORT http2;
    location /portico.test.echo.Echo/ { grpc_pass grpc://echo; }
  }
}
CONF
start nginx nginx -c "$work/nginx/nginx.conf"
ready "$NGINX_PORT"

# measure TARGET PORT: one warm-up second, then one h2load run; appends its line to $RAW.
measure() {
  local target=$1 port=$2 out rps requests succeeded failed before after
  load "$port" -D 1 >/dev/null
  before=$([[ $target == portico ]] && grpc_ok || echo 0)
  out=$(load "$port" -D "$DURATION")
  after=$([[ $target == portico ]] && grpc_ok || echo 0)
  rps=$(awk '/^finished in/ {print $4}' <<<"$out")
  read -r requests succeeded failed < <(awk '/^requests:/ {print $2, $8, $10}' <<<"$out")
  if [[ $target == portico && $((after - before)) -lt $succeeded ]]; then
    echo "portico: $succeeded answers, but only $((after - before)) calls with grpc-status 0" >&2
    exit 1
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$target" "$CONNS" "$STREAMS" "$run" "$requests" \
    "$rps" "$succeeded" "$failed" >>"$RAW"
  echo "$target c=$CONNS m=$STREAMS run=$run: $rps calls/s ($succeeded ok, $failed failed)" >&2
}

mkdir -p "$(dirname "$RAW")"
: >"$RAW"
for ((run = 1; run <= RUNS; run++)); do
  measure portico "$PROXY_PORT"
  measure nginx "$NGINX_PORT"
done
