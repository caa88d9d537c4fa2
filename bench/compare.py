#!/usr/bin/env python3
"""Before/after markdown tables from two harness result files:
`bench/compare.py bench/out/results-before.json bench/out/results-after.json`."""
import json
import sys

SUBJECTS = ["direct", "nginx", "gatehouse", "gatehouse-chain"]


def pct(a, b):
    if a in (None, 0) or b is None:
        return ""
    return f" ({(b - a) / a * 100:+.0f}%)"


def f0(x):
    return "n/a" if x is None else f"{x:,.0f}"


def main():
    b, a = (json.load(open(p)) for p in sys.argv[1:3])
    out = []
    out.append("| subject | instr/req user: before → after | req/s median: before → after | ratio to direct | p50 µs | p99 µs | peak RSS MiB |")
    out.append("|---|---|---|---|---|---|---|")
    for s in SUBJECTS:
        ib = b.get("instructions", {}).get(s, {}).get("user")
        ia = a.get("instructions", {}).get(s, {}).get("user")
        tb = b.get("throughput", {}).get(s, {})
        ta = a.get("throughput", {}).get(s, {})
        if not (tb or ta or ib or ia):
            continue
        out.append(
            f"| {s} | {f0(ib)} → {f0(ia)}{pct(ib, ia)} | {f0(tb.get('rps_median'))} → {f0(ta.get('rps_median'))} | "
            f"{tb.get('ratio_median', 0):.3f} → {ta.get('ratio_median', 0):.3f} | "
            f"{f0(tb.get('p50_us'))} → {f0(ta.get('p50_us'))} | {f0(tb.get('p99_us'))} → {f0(ta.get('p99_us'))} | "
            f"{tb.get('peak_rss_kib', 0) / 1024:.1f} → {ta.get('peak_rss_kib', 0) / 1024:.1f} |")
    out.append("")
    if "routes" in b or "routes" in a:
        out.append("| routes | req/s before | vs 1 route before | req/s after | vs 1 route after | RSS MiB before → after |")
        out.append("|---:|---:|---:|---:|---:|---|")
        for n in (a.get("routes") or b.get("routes")):
            rb, ra = b.get("routes", {}).get(n, {}), a.get("routes", {}).get(n, {})
            out.append(f"| {int(n):,} | {f0(rb.get('rps_median'))} | {rb.get('vs_first', 0) * 100:.1f}% | "
                       f"{f0(ra.get('rps_median'))} | {ra.get('vs_first', 0) * 100:.1f}% | "
                       f"{rb.get('rss_kib', 0) / 1024:.1f} → {ra.get('rss_kib', 0) / 1024:.1f} |")
        h2h = [any("vs_first_min" in r for r in x.get("routes", {}).values()) for x in (b, a)]
        if h2h[0] != h2h[1]:
            out.append("")
            out.append("(One of the two runs measured routes head to head with the 1-route gateway, the other "
                       "in separate runs: its req/s is per gateway sharing the core, so compare the "
                       "\"vs 1 route\" columns, not req/s.)")
        out.append("")
    if "idle" in b or "idle" in a:
        out.append("| server | KiB per idle connection: before → after | vs nginx: before → after |")
        out.append("|---|---|---|")
        for s in ("nginx", "gatehouse"):
            kb = b.get("idle", {}).get(s, {}).get("kib_per_conn")
            ka = a.get("idle", {}).get(s, {}).get("kib_per_conn")
            nb = b.get("idle", {}).get("nginx", {}).get("kib_per_conn")
            na = a.get("idle", {}).get("nginx", {}).get("kib_per_conn")
            out.append(f"| {s} | {kb:.2f} → {ka:.2f} | {kb / nb:.1f}x → {ka / na:.1f}x |")
        out.append("")
    if "reload" in b or "reload" in a:
        rb, ra = b.get("reload", {}), a.get("reload", {})
        out.append("| 10,000-route file | before | after |")
        out.append("|---|---:|---:|")
        out.append(f"| startup to first 200, s | {rb.get('startup_s', 0):.2f} | {ra.get('startup_s', 0):.2f} |")
        out.append(f"| reload (POST /reload), ms median | {rb.get('reload_s_median', 0) * 1000:.0f} | {ra.get('reload_s_median', 0) * 1000:.0f} |")
        out.append(f"| RSS after start, MiB | {rb.get('rss_after_start_kib', 0) / 1024:.1f} | {ra.get('rss_after_start_kib', 0) / 1024:.1f} |")
        out.append(f"| RSS after reloads, MiB | {rb.get('rss_after_reloads_kib', 0) / 1024:.1f} | {ra.get('rss_after_reloads_kib', 0) / 1024:.1f} |")
        out.append("")
    print("\n".join(out))


if __name__ == "__main__":
    main()
