#!/usr/bin/env bash
# Runs every Portico benchmark (data plane, control-plane fan-out, micro) and writes the
# Markdown tables to bench/results/<date>.md. About 12 minutes on 2 cores once built.
#
# Environment (all optional): SKIP="dataplane fleet micro" skips parts; the parts' own
# variables (DURATION, RUNS, CONNS, TARGETS, AGENTS, PUSHES) pass through.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
SKIP=${SKIP:-}
date=$(date -u +%Y-%m-%d)
out=$here/results/$date.md
# Kept after the run (also after a failure), for a re-summary.
raw=$(mktemp -d /tmp/portico-bench-raw.XXXXXX)
echo "raw results in $raw" >&2

skipped() { [[ " $SKIP " == *" $1 "* ]]; }

cd "$root"
echo "building release binaries" >&2
cargo build --release -q -p portico-bench -p portico-control-plane -p portico-agent

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
skipped dataplane || RAW=$raw/dataplane.tsv bash "$here/dataplane/run.sh"
skipped fleet || ROWS=$raw/fleet.md bash "$here/fleet/run.sh"
if ! skipped micro; then
  # Short criterion runs keep the whole suite under 15 minutes; medians stay stable.
  cargo bench -q -p portico-bench --benches -- --warm-up-time 1 --measurement-time 3 >&2
fi

mkdir -p "$here/results"
{
  echo "# Benchmark results, $date"
  echo
  echo "Machine: $(nproc) cores, $(uname -sr); load average before the run: $load_before."
  echo "$(nginx -v 2>&1 | sed 's/.*: //'), $(haproxy -v | head -1 | cut -d' ' -f1-3),"
  echo "$(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2), $(h2load --version | head -1)."
  echo "Commit: $(git rev-parse --short HEAD). Command: \`bench/run.sh\`."
  echo
  python3 "$here/summarize.py" \
    $(skipped dataplane || echo --dataplane "$raw/dataplane.tsv") \
    $(skipped fleet || echo --fleet "$raw/fleet.md") \
    $(skipped micro || echo --criterion "$root/target/criterion")
} >"$out"
echo "wrote $out" >&2
