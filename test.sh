#!/usr/bin/env bash
# Runs every test of the workspace, installing first what the tests need and the machine
# lacks: etcd (the tests start real etcd servers), python3's venv (the gRPC tests install grpcio
# from PyPI into a virtualenv) and cargo-nextest. Extra arguments go to
# `cargo nextest run`, e.g. `./test.sh -p portico-proxy`.
set -euo pipefail
cd "$(dirname "$0")"

packages=()
command -v etcd >/dev/null || packages+=(etcd-server)
# The gRPC tests make a virtualenv with grpcio from PyPI.
python3 -c 'import venv, ensurepip' 2>/dev/null || packages+=(python3-venv)
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
exec cargo nextest run "${scope[@]}" --no-fail-fast "$@"
