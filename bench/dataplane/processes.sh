# Background processes of the data-plane bench scripts, stopped when the script exits.
# Sourced after `set -euo pipefail`; sets $work, a temp dir removed on exit, for their logs.

work=$(mktemp -d /tmp/portico-bench.XXXXXX)
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# start NAME CMD...: runs CMD in the background, logging to $work/NAME.log; sets $last.
start() {
  local name=$1
  shift
  "$@" >"$work/$name.log" 2>&1 &
  last=$!
  pids+=("$last")
}

# stop PID: stops one process started by `start` and waits for it.
stop() {
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
  local p keep=()
  for p in "${pids[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
  pids=("${keep[@]}")
}

# wait_http URL [SECONDS]: polls until URL answers, for up to SECONDS (default 30). HTTPS URLs
# may have a certificate no one signed (the bench makes its own).
wait_http() {
  local i
  for ((i = 0; i < ${2:-30} * 10; i++)); do
    curl -kfsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "no answer from $1; logs in $work" >&2
  tail -n 20 "$work"/*.log >&2
  return 1
}
