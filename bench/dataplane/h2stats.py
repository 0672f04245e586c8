"""Summarizes one h2load run: prints `requests rps p50_us p99_us p999_us errors`.

Arguments: h2load's stdout, and its --log-file (one line per request: start, status, duration
in microseconds).
"""
import re
import sys


def main(out_path, log_path):
    out = open(out_path).read()
    rps = float(re.search(r"finished in [\d.]+s, ([\d.]+) req/s", out).group(1))
    m = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", out)
    done, failed, errored = int(m.group(1)), int(m.group(3)), int(m.group(4))
    durations = []
    for line in open(log_path):
        parts = line.split()
        if len(parts) >= 3:
            durations.append(int(parts[2]))
    durations.sort()

    def q(p):
        if not durations:
            return 0
        return durations[min(len(durations) - 1, max(0, int(p * len(durations) + 0.999999) - 1))]

    print(done, rps, q(0.50), q(0.99), q(0.999), failed + errored)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
