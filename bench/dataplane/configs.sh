# Writes the equivalent nginx and HAProxy configs for the data-plane bench, and the nginx
# upstream.
# Both: 2 workers, keep-alive to clients and to the upstream, no access log, N prefix routes of
# which the bench requests only the last. Sourced by run.sh.

# route_prefix I: the path prefix of route I (the same as portico_bench::config::route_prefix).
route_prefix() { printf '/r%05d' "$1"; }

# nginx_head DIR: what every nginx of the bench starts with (2 workers, no access log, its
# pid, log and temp files under DIR, which must exist with a tmp/ inside), up to the inside of
# its http block.
nginx_head() {
  local dir=$1
  cat <<CONF
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
CONF
}

# nginx_config DIR PORT H2PORT UPSTREAM_PORT ROUTES
nginx_config() {
  local dir=$1 port=$2 h2port=$3 up=$4 routes=$5 i
  mkdir -p "$dir/tmp"
  {
    nginx_head "$dir"
    cat <<CONF
  # The other proxies never close an idle-free client or upstream connection by count.
  keepalive_requests 100000000;
  upstream u {
    server 127.0.0.1:$up;
    keepalive 512;
    keepalive_requests 100000000;
  }
  server {
    listen 127.0.0.1:$port;
    # nginx 1.22 serves h2c (prior knowledge) on a plain listener marked http2.
    listen 127.0.0.1:$h2port http2;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
CONF
    for ((i = 0; i < routes; i++)); do
      echo "    location $(route_prefix "$i") { proxy_pass http://u; }"
    done
    echo "  }"
    echo "}"
  } >"$dir/nginx.conf"
}

# haproxy_config DIR PORT H2PORT UPSTREAM_PORT ROUTES
haproxy_config() {
  local dir=$1 port=$2 h2port=$3 up=$4 routes=$5 i
  {
    cat <<CONF
global
  nbthread 2
  maxconn 8000
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always
frontend fe
  bind 127.0.0.1:$port
  bind 127.0.0.1:$h2port proto h2
CONF
    for ((i = 0; i < routes; i++)); do
      echo "  use_backend u if { path_beg $(route_prefix "$i") }"
    done
    cat <<CONF
backend u
  server s1 127.0.0.1:$up
CONF
  } >"$dir/haproxy.cfg"
}

# upstream_config DIR PORT: an nginx (2 workers) answering every request with a fixed 200 of
# a few bytes: the upstream every target proxies to, a server no one here wrote.
upstream_config() {
  local dir=$1 port=$2
  mkdir -p "$dir/tmp"
  {
    nginx_head "$dir"
    cat <<CONF
  keepalive_requests 100000000;
  server {
    listen 127.0.0.1:$port;
    location / { return 200 "ok\n"; }
  }
}
CONF
  } >"$dir/nginx.conf"
}
