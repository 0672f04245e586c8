#!/usr/bin/env bash
# The cost of gateway policies on the data path: requests/s and CPU per request on the same
# route with (a) no policy, (b) API key + local rate limit, (c) JWT (ES256) + rate limit +
# header changes + gzip of a 10 KB JSON body; each against nginx doing the nearest equivalent
# (a: proxy_pass; b: the key checked by a map + limit_req per key; c: a bearer header checked by
# a map, as nginx without its commercial JWT module cannot verify a JWT, + limit_req + add_header
# + gzip). wrk over HTTP/1.1, 2 threads; the agent and nginx get 2 workers each. Writes one line
# per run to $RAW:
#   cell target conns run requests rps p50_us p99_us p999_us errors cpu_s_per_10k
#
# Environment (all optional): DURATION (default 5), RUNS (default 3), CONNS (default 64),
# CELLS (default "none api-key jwt"), RAW (default bench/results/raw-gateway.tsv), the ports
# below.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
DURATION=${DURATION:-5}
RUNS=${RUNS:-3}
CONNS=${CONNS:-64}
CELLS=${CELLS:-"none api-key jwt"}
RAW=${RAW:-$root/bench/results/raw-gateway.tsv}
bin=$root/target/release
# Ports: other benches on a shared machine may use the defaults; each can be moved.
UP_PORT=${UP_PORT:-18080} PROXY_PORT=${PROXY_PORT:-18081} NGINX_PORT=${NGINX_PORT:-18082}
CP_PORT=${CP_PORT:-18070} CP_METRICS_PORT=${CP_METRICS_PORT:-18072}
AGENT_ADMIN_PORT=${AGENT_ADMIN_PORT:-18071}
for port in $UP_PORT $PROXY_PORT $NGINX_PORT $CP_PORT $CP_METRICS_PORT $AGENT_ADMIN_PORT; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port is in use; set UP_PORT, PROXY_PORT, NGINX_PORT, CP_PORT, CP_METRICS_PORT or AGENT_ADMIN_PORT" >&2
    exit 1
  fi
done

for tool in wrk:wrk nginx:nginx curl:curl; do
  command -v "${tool%%:*}" >/dev/null || { echo "installing ${tool#*:}" >&2; apt-get install -y -qq "${tool#*:}" >/dev/null; }
done
systemctl stop nginx 2>/dev/null || true
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
. "$here/processes.sh"

start upstream "$bin/bench-upstream" --listen "127.0.0.1:$UP_PORT" --threads 2
wait_http "http://127.0.0.1:$UP_PORT/"
start portico-cp "$bin/portico-cp" --web-listen off --data-dir "$work/cp-data" --listen "127.0.0.1:$CP_PORT" \
  --metrics-listen "127.0.0.1:$CP_METRICS_PORT"
# apply CELL: applies the bench config with CELL's policies; sets $revision and $header.
apply() {
  revision=$("$bin/bench-apply" --admin "http://127.0.0.1:$CP_PORT" --listen-port "$PROXY_PORT" \
    --upstream-port "$UP_PORT" --gateway "$1" --header-out "$work/header")
  header=$(cat "$work/header")
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
apply none
start portico-agent env RUST_LOG=info,portico::access=off "$bin/portico-agent" \
  --proxy-workers 2 --control-plane "http://127.0.0.1:$CP_PORT" \
  --admin-listen "127.0.0.1:$AGENT_ADMIN_PORT" --node-id bench --region bench --zone bench
agent=$last
wait_http "http://127.0.0.1:$PROXY_PORT/r00000/bench"

# nginx_gateway CELL HEADER: an nginx config for CELL, in $work/nginx-CELL/nginx.conf.
nginx_gateway() {
  local cell=$1 dir=$work/nginx-$1 key=${2#*: } check="" extra=""
  mkdir -p "$dir/tmp"
  case $cell in
    api-key)
      check="map \$http_x_api_key \$denied { \"$key\" 0; default 1; }
  limit_req_zone \$http_x_api_key zone=keys:10m rate=1000000r/s;"
      extra="if (\$denied) { return 401; }
      limit_req zone=keys burst=1000000 nodelay;" ;;
    jwt)
      check="map \$http_authorization \$denied { \"$key\" 0; default 1; }
  limit_req_zone \$http_authorization zone=tokens:10m rate=1000000r/s;"
      extra="if (\$denied) { return 401; }
      limit_req zone=tokens burst=1000000 nodelay;
      proxy_set_header x-edge portico;
      add_header Strict-Transport-Security \"max-age=31536000; includeSubDomains\" always;
      add_header X-Content-Type-Options nosniff always;
      add_header X-Frame-Options DENY always;
      add_header Referrer-Policy strict-origin-when-cross-origin always;
      gzip on; gzip_types application/json; gzip_min_length 1024; gzip_comp_level 5;" ;;
  esac
  cat >"$dir/nginx.conf" <<CONF
worker_processes 2;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
worker_rlimit_nofile 65536;
events { worker_connections 16384; }
http {
  access_log off;
  client_body_temp_path $dir/tmp/body;
  proxy_temp_path $dir/tmp/proxy;
  fastcgi_temp_path $dir/tmp/fastcgi;
  uwsgi_temp_path $dir/tmp/uwsgi;
  scgi_temp_path $dir/tmp/scgi;
  keepalive_requests 100000000;
  # The jwt cell's map key is a whole bearer token, longer than the default bucket holds.
  map_hash_bucket_size 1024;
  $check
  upstream u {
    server 127.0.0.1:$UP_PORT;
    keepalive 512;
    keepalive_requests 100000000;
  }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    proxy_http_version 1.1;
    location /r00000 {
      proxy_set_header Connection "";
      $extra
      proxy_pass http://u;
    }
  }
}
CONF
}

# cpu_ticks PID...: user+system clock ticks of the processes and their children.
cpu_ticks() {
  local p total=0 t
  for p in "$@" $(for q in "$@"; do pgrep -P "$q" || true; done); do
    t=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}') || t=0
    total=$((total + ${t:-0}))
  done
  echo "$total"
}

# measure CELL TARGET URL PID...: one wrk run; appends its line to $RAW.
measure() {
  local cell=$1 target=$2 url=$3 before after line requests rps p50 p99 p999 errors cpu
  shift 3
  local args=(-t2 -c"$CONNS" --timeout 5s)
  [[ -n $header ]] && args+=(-H "$header")
  [[ $cell == jwt ]] && args+=(-H "accept-encoding: gzip")
  wrk "${args[@]}" -d1s "$url" >/dev/null
  before=$(cpu_ticks "$@")
  line=$(wrk "${args[@]}" -d"${DURATION}s" -s "$here/latency.lua" "$url" | grep '^RESULT')
  after=$(cpu_ticks "$@")
  read -r _ requests rps p50 p99 p999 errors <<<"$line"
  cpu=$(python3 -c "print(f'{($after - $before) / 100 / max($requests, 1) * 10000:.4f}')")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$cell" "$target" "$CONNS" "$run" \
    "$requests" "$rps" "$p50" "$p99" "$p999" "$errors" "$cpu" >>"$RAW"
  echo "$cell $target c=$CONNS run=$run: $rps req/s p99=${p99}us errors=$errors cpu/10k=$cpu" >&2
}

mkdir -p "$(dirname "$RAW")"
: >"$RAW"
for ((run = 1; run <= RUNS; run++)); do
  for cell in $CELLS; do
    path=/r00000/bench
    [[ $cell == jwt ]] && path=/r00000/json10k
    apply "$cell"
    applied
    # Every answer must be a 200: a refused request would measure the refusal.
    code=$(curl -s -o /dev/null -w '%{http_code}' ${header:+-H "$header"} "http://127.0.0.1:$PROXY_PORT$path")
    [[ $code == 200 ]] || { echo "portico answered $code for cell $cell" >&2; exit 1; }
    measure "$cell" portico "http://127.0.0.1:$PROXY_PORT$path" "$agent"
    nginx_gateway "$cell" "$header"
    start nginx nginx -c "$work/nginx-$cell/nginx.conf"
    nginx_pid=$last
    # Any answer will do: the cell's checks may refuse a request without the header.
    for ((i = 0; i < 100; i++)); do
      curl -s -o /dev/null "http://127.0.0.1:$NGINX_PORT/" && break
      sleep 0.1
    done
    code=$(curl -s -o /dev/null -w '%{http_code}' ${header:+-H "$header"} "http://127.0.0.1:$NGINX_PORT$path")
    [[ $code == 200 ]] || {
      echo "nginx answered $code for cell $cell" >&2
      cat "$work/nginx-$cell/error.log" >&2 || true
      exit 1
    }
    measure "$cell" nginx "http://127.0.0.1:$NGINX_PORT$path" "$nginx_pid"
    stop "$nginx_pid"
  done
done
