# Writes the equivalent nginx and HAProxy configs for the data-plane bench, the nginx upstream,
# and the certificate and Portico config of the HTTPS cells.
# Both: 2 workers, keep-alive to clients and to the upstream, no access log, N prefix routes of
# which the bench requests only the last; HTTPS (TLS 1.3) beside HTTP when asked. Sourced by
# run.sh.

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

# nginx_config DIR PORT H2PORT UPSTREAM_PORT ROUTES [TLSPORT CERT KEY]: with TLSPORT, also
# an HTTPS listener (TLS 1.3 only) there with the certificate CERT and its key KEY (PEM files).
nginx_config() {
  local dir=$1 port=$2 h2port=$3 up=$4 routes=$5 tlsport=${6:-} cert=${7:-} key=${8:-} i
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
    if [[ -n $tlsport ]]; then
      cat <<CONF
    # Session resumption (tickets) as nginx ships it, as for HAProxy and portico-agent.
    listen 127.0.0.1:$tlsport ssl;
    ssl_protocols TLSv1.3;
    ssl_certificate $cert;
    ssl_certificate_key $key;
CONF
    fi
    for ((i = 0; i < routes; i++)); do
      echo "    location $(route_prefix "$i") { proxy_pass http://u; }"
    done
    echo "  }"
    echo "}"
  } >"$dir/nginx.conf"
}

# haproxy_config DIR PORT H2PORT UPSTREAM_PORT ROUTES [TLSPORT PEM]: with TLSPORT, also an
# HTTPS listener (TLS 1.3 only) there with the certificate and key in the one file PEM.
haproxy_config() {
  local dir=$1 port=$2 h2port=$3 up=$4 routes=$5 tlsport=${6:-} pem=${7:-} i
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
    [[ -z $tlsport ]] || echo "  bind 127.0.0.1:$tlsport ssl crt $pem ssl-min-ver TLSv1.3"
    for ((i = 0; i < routes; i++)); do
      echo "  use_backend u if { path_beg $(route_prefix "$i") }"
    done
    cat <<CONF
backend u
  server s1 127.0.0.1:$up
CONF
  } >"$dir/haproxy.cfg"
}

# tls_files DIR: a self-signed ECDSA P-256 certificate for 127.0.0.1 and localhost, made now:
# DIR/cert.pem, DIR/key.pem (PKCS#8) and DIR/both.pem (the two in one file, for HAProxy).
tls_files() {
  local dir=$1
  mkdir -p "$dir"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$dir/key.pem" -out "$dir/cert.pem" 2>/dev/null
  cat "$dir/cert.pem" "$dir/key.pem" >"$dir/both.pem"
}

# portico_tls_config FILE PORT DIR: the Secret and the HTTPS listener (TLS 1.3 only, the
# certificate of tls_files DIR, routed by the bench's route table "bench") that
# `portico apply -f FILE` adds beside bench-apply's plain listener.
portico_tls_config() {
  local file=$1 port=$2 dir=$3
  cat >"$file" <<CONF
kind: Secret
name: bench-tls
spec:
  tls:
    certificate_chain: |
$(sed 's/^/      /' "$dir/cert.pem")
    private_key: |
$(sed 's/^/      /' "$dir/key.pem")
---
kind: Listener
name: bench-tls
spec:
  address: 127.0.0.1
  port: $port
  protocol: HTTPS
  route_table: bench
  tls:
    certificates: [{secret: bench-tls}]
    min_version: TLS_1_3
  # As bench-apply's listener: room for the idle-connection cells.
  limits: {max_connections: 100000}
CONF
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
