"""Turns raw bench output into the Markdown tables of bench/README.md.

Usage: summarize.py [--dataplane RAW.tsv] [--fleet ROWS.md] [--criterion TARGET/criterion]

Every data-plane cell is the median of its runs; ratios compare portico-agent with nginx and
HAProxy in the same cell, and each budget of DESIGN.md §8 is marked met or missed. The idle
cells (RSS per 1,000 idle keep-alive connections, plain and TLS) get a table of their own.
"""
import argparse
import json
import os
import statistics
import sys

PROXIES = ["portico", "nginx", "haproxy"]
# Requests per second portico must reach against each of nginx and HAProxy.
TARGET_RATIO = 1.05
# Requests per second portico must reach against nginx in the HTTPS cells.
HTTPS_TARGET_RATIO = 1.0
HTTPS_PROTOS = ("https", "https-new10")
IDLE_PROTOS = ("idle", "idle-tls")


def load_dataplane(path):
    """The load cells, by (routes, proto, conns, target), and the idle cells, by (proto, target)."""
    cells = {}
    idle = {}
    for line in open(path):
        f = line.rstrip("\n").split("\t")
        if len(f) >= 10 and f[2] in IDLE_PROTOS:
            # target routes idle|idle-tls conns run open rss_before rss_after kib_per_1000 errors
            cell = idle.setdefault((f[2], f[0]), [])
            cell.append((int(f[3]), int(f[5]), int(f[6]), int(f[7]), float(f[8]), int(f[9])))
            continue
        if len(f) < 12:
            continue
        target, routes, proto, conns = f[0], int(f[1]), f[2], int(f[3])
        rps, p50, p99, p999, errors = float(f[6]), int(f[7]), int(f[8]), int(f[9]), int(f[10])
        cpu = None if f[11] == "-" else float(f[11])
        # The proxy's RSS after the run (KiB); older raw files have no such column.
        rss = None if len(f) < 13 or f[12] == "-" else int(f[12])
        cell = cells.setdefault((routes, proto, conns, target), [])
        cell.append((rps, p50, p99, p999, errors, cpu, rss))
    out = {}
    for key, runs in cells.items():
        med = lambda i: statistics.median(r[i] for r in runs)
        cpus = [r[5] for r in runs if r[5] is not None]
        rsss = [r[6] for r in runs if r[6] is not None]
        out[key] = {
            "runs": len(runs),
            "rps": med(0),
            "p50": med(1),
            "p99": med(2),
            "p999": med(3),
            "errors": sum(r[4] for r in runs),
            "cpu": statistics.median(cpus) if cpus else None,
            "rss": max(rsss) if rsss else None,
        }
    idle_out = {}
    for key, runs in idle.items():
        med = lambda i: statistics.median(r[i] for r in runs)
        idle_out[key] = {
            "runs": len(runs),
            "conns": max(r[0] for r in runs),
            "before": med(2),
            "per_1000": med(4),
            "spread": (min(r[4] for r in runs), max(r[4] for r in runs)),
            "errors": sum(r[5] for r in runs),
        }
    return out, idle_out


def ms(us):
    return f"{us / 1000:.2f}"


def ratio(a, b):
    return f"{a / b:.2f}×" if a and b else "–"


def dataplane_tables(cells):
    lines = []
    groups = sorted({(k[0], k[1]) for k in cells})
    titles = {
        ("h1",): "HTTP/1.1 (wrk)",
        ("h2",): "HTTP/2 h2c (h2load)",
        ("https",): "HTTPS, TLS 1.3 keep-alive (wrk)",
        ("https-new10",): "HTTPS, TLS 1.3, a new connection every 10 requests (wrk)",
    }
    budget = []
    https_budget = []
    for routes, proto in groups:
        title = titles[(proto,)]
        route_note = "1 route" if routes == 1 else f"{routes} routes, the last one matches"
        lines.append(f"#### {title}, {route_note}\n")
        lines.append(
            "| conns | target | req/s | p50 ms | p99 ms | p99.9 ms | CPU s / 10k req | RSS MiB "
            "| req/s vs nginx | req/s vs haproxy | p99 vs nginx | p99 vs haproxy | errors |"
        )
        lines.append("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for conns in sorted({k[2] for k in cells if k[:2] == (routes, proto)}):
            row = lambda t: cells.get((routes, proto, conns, t))
            nginx, haproxy = row("nginx"), row("haproxy")
            for target in ["direct"] + PROXIES:
                c = row(target)
                if not c:
                    continue
                cpu = f"{c['cpu']:.3f}" if c["cpu"] is not None else "–"
                rss = f"{c['rss'] / 1024:.1f}" if c["rss"] is not None else "–"
                vs = lambda other, key: ratio(c[key], other[key]) if other and target != "direct" else "–"
                lines.append(
                    f"| {conns} | {target} | {c['rps']:.0f} | {ms(c['p50'])} | {ms(c['p99'])} "
                    f"| {ms(c['p999'])} | {cpu} | {rss} | {vs(nginx, 'rps')} | {vs(haproxy, 'rps')} "
                    f"| {vs(nginx, 'p99')} | {vs(haproxy, 'p99')} | {c['errors']} |"
                )
            portico = row("portico")
            if proto in HTTPS_PROTOS:
                if portico and nginx:
                    r = portico["rps"] / nginx["rps"]
                    vs_haproxy = ratio(portico["rps"], haproxy["rps"]) if haproxy else "–"
                    https_budget.append(
                        f"| {title}, {conns} conns | {r:.2f}× | {vs_haproxy} "
                        f"| {'met' if r >= HTTPS_TARGET_RATIO else 'MISSED'} |"
                    )
            elif portico and nginx and haproxy:
                best_p99 = min(nginx["p99"], haproxy["p99"])
                cpu_ok = (
                    portico["cpu"] is not None
                    and nginx["cpu"] is not None
                    and portico["cpu"] <= nginx["cpu"]
                )
                met = (
                    portico["rps"] >= TARGET_RATIO * nginx["rps"]
                    and portico["rps"] >= TARGET_RATIO * haproxy["rps"]
                    and portico["p99"] <= best_p99
                    and cpu_ok
                )
                cpu = (
                    f"{portico['cpu'] / nginx['cpu']:.2f}×"
                    if portico["cpu"] and nginx["cpu"]
                    else "–"
                )
                budget.append(
                    f"| {title}, {route_note}, {conns} conns | {portico['rps'] / nginx['rps']:.2f}× "
                    f"| {portico['rps'] / haproxy['rps']:.2f}× | {cpu} "
                    f"| {portico['p99'] / best_p99:.2f}× | {'met' if met else 'MISSED'} |"
                )
        lines.append("")
    if budget:
        lines.append(
            f"Targets (data-plane issue): portico ≥ {TARGET_RATIO}× the req/s of nginx and of "
            "HAProxy, CPU per request ≤ nginx's, p99 ≤ the better of the two.\n"
        )
        lines.append(
            "| cell | req/s vs nginx | req/s vs haproxy | CPU / req vs nginx "
            "| p99 vs the better | targets |"
        )
        lines.append("|---|---:|---:|---:|---:|---|")
        lines.extend(budget)
        lines.append("")
    if https_budget:
        lines.append(
            f"Targets (data-plane issue, HTTPS): portico ≥ {HTTPS_TARGET_RATIO}× the req/s of "
            "nginx in both cells.\n"
        )
        lines.append("| cell | req/s vs nginx | req/s vs haproxy | target |")
        lines.append("|---|---:|---:|---|")
        lines.extend(https_budget)
        lines.append("")
    return "\n".join(lines)


def idle_table(idle):
    """RSS per 1,000 idle keep-alive client connections, plain and TLS, per proxy."""
    if not idle:
        return ""
    conns = max(c["conns"] for c in idle.values())
    lines = [
        f"#### Idle keep-alive connections: RSS per 1,000 ({conns} open, plain then TLS)\n",
        "| target | RSS before MiB | plain KiB / 1,000 conns | plain, runs' range "
        "| TLS KiB / 1,000 conns | TLS, runs' range | plain vs nginx | TLS vs nginx | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    kib = lambda c: f"{c['per_1000']:.0f}" if c else "–"
    spread = lambda c: f"{c['spread'][0]:.0f}–{c['spread'][1]:.0f}" if c else "–"
    budget = []
    for target in PROXIES:
        plain, tls = idle.get(("idle", target)), idle.get(("idle-tls", target))
        if not plain and not tls:
            continue
        vs = lambda c, kind: (
            ratio(c["per_1000"], idle[(kind, "nginx")]["per_1000"])
            if c and (kind, "nginx") in idle and target != "nginx"
            else "–"
        )
        before = (plain or tls)["before"]
        errors = sum(c["errors"] for c in (plain, tls) if c)
        lines.append(
            f"| {target} | {before / 1024:.1f} | {kib(plain)} | {spread(plain)} | {kib(tls)} "
            f"| {spread(tls)} | {vs(plain, 'idle')} | {vs(tls, 'idle-tls')} | {errors} |"
        )
    lines.append("")
    for kind, name in (("idle", "plain"), ("idle-tls", "TLS")):
        portico, nginx = idle.get((kind, "portico")), idle.get((kind, "nginx"))
        if portico and nginx:
            met = portico["per_1000"] <= nginx["per_1000"]
            budget.append(
                f"| {name} | {portico['per_1000']:.0f} KiB | {nginx['per_1000']:.0f} KiB "
                f"| {'met' if met else 'MISSED'} |"
            )
    if budget:
        lines.append(
            "Target (data-plane issue): portico's RSS per 1,000 idle connections ≤ nginx's, "
            "plain and TLS.\n"
        )
        lines.append("| connections | portico / 1,000 | nginx / 1,000 | target |")
        lines.append("|---|---:|---:|---|")
        lines.extend(budget)
        lines.append("")
    return "\n".join(lines)


def fleet_table(path):
    rows = [l.rstrip("\n") for l in open(path) if l.startswith("| ") and l[2].isdigit()]
    if not rows:
        return ""
    lines = [
        "| agents | connect storm s | storm reconnects | push → 50 % ACKed ms | push → 99 % ms "
        "| push → 100 % ms | CP RSS MiB | CP RSS KiB / agent | CP CPU ms / push "
        "| CP CPU ms / push, settled |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines.extend(rows)
    budget = []
    for r in rows:
        f = [x.strip() for x in r.strip("|").split("|")]
        agents, p99, per_agent = int(f[0]), float(f[4]), float(f[7])
        budget.append(
            f"| {agents} agents | p99 {p99:.0f} ms ({p99 / 1000:.2f}× of 1 s): "
            f"{'met' if p99 < 1000 else 'MISSED'} "
            f"| {per_agent:.1f} KiB ({per_agent / 64:.2f}× of 64 KiB): "
            f"{'met' if per_agent < 64 else 'MISSED'} |"
        )
    lines.append("")
    lines.append("| budget (DESIGN.md §8) | apply → all ACKed p99 < 1 s | memory per agent < 64 KiB |")
    lines.append("|---|---|---|")
    lines.extend(budget)
    return "\n".join(lines) + "\n"


def criterion_table(root):
    results = {}
    for dirpath, _, files in os.walk(root):
        if "estimates.json" in files and dirpath.endswith(os.sep + "new"):
            bench_id = os.path.relpath(os.path.dirname(dirpath), root)
            est = json.load(open(os.path.join(dirpath, "estimates.json")))
            results[bench_id] = est["median"]["point_estimate"]
    if not results:
        return ""
    lines = ["| benchmark | median |", "|---|---:|"]
    for name in sorted(results):
        lines.append(f"| {name} | {fmt_ns(results[name])} |")
    lines.append("")
    budget = []
    m10 = find(results, "route_match", "10")
    m10k = find(results, "route_match", "10000")
    if m10 and m10k:
        r = m10k / m10
        budget.append(f"| route match 10,000 vs 10 routes ≤ 2× | {r:.2f}× | {'met' if r <= 2 else 'MISSED'} |")
    apply = results.get(os.path.join("agent_apply", "one_route_diff", "10000"))
    if apply:
        budget.append(
            f"| one-route diff apply on 10,000 routes < 5 ms | {fmt_ns(apply)} ({apply / 5e6:.2f}× of 5 ms) "
            f"| {'met' if apply < 5e6 else 'MISSED'} |"
        )
    if budget:
        lines.append("| budget (DESIGN.md §8) | measured | |")
        lines.append("|---|---:|---|")
        lines.extend(budget)
        lines.append("")
    return "\n".join(lines)


def find(results, group, leaf):
    for name, value in results.items():
        parts = name.split(os.sep)
        if parts[0] == group and (leaf is None or parts[-1] == leaf):
            return value
    return None


def fmt_ns(ns):
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns:.0f} ns"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dataplane")
    p.add_argument("--fleet")
    p.add_argument("--criterion")
    a = p.parse_args()
    out = []
    if a.dataplane and os.path.exists(a.dataplane):
        out.append("### Data plane\n")
        cells, idle = load_dataplane(a.dataplane)
        out.append(dataplane_tables(cells))
        out.append(idle_table(idle))
    if a.fleet and os.path.exists(a.fleet):
        out.append("### Control plane fan-out\n")
        out.append(fleet_table(a.fleet))
    if a.criterion and os.path.isdir(a.criterion):
        out.append("### Micro\n")
        out.append(criterion_table(a.criterion))
    sys.stdout.write("\n".join(out))


if __name__ == "__main__":
    main()
