-- Prints one machine-readable line after a wrk run:
-- RESULT <requests> <requests/s> <p50 us> <p99 us> <p99.9 us> <errors>
done = function(summary, latency, requests)
  local e = summary.errors
  local errors = e.connect + e.read + e.write + e.status + e.timeout
  io.write(string.format("RESULT %d %.1f %d %d %d %d\n",
    summary.requests, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), errors))
end
