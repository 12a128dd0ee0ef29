#!/usr/bin/env python3
"""benches/capacity_report.py RAW_DIR: two sections appended to the
scenario report (issue 10 targets).

1. Scenario 2 (capacity 4/8/16 x 20 ms) against HAProxy: every run of
   scenario 2 (tidegate policies, the `maxconn` variant, and the HAProxy
   anchors `haproxy-leastconn` / `haproxy-maxconn` from anchors.tsv),
   from wrk's own figures (the same client-side measure for all, since
   HAProxy writes no CSV): req/s, mean, p50, p99, and req/s and p99
   ratios against `haproxy-maxconn` (HAProxy leastconn with maxconn set
   by hand to the true capacities, the issue's anchor). Targets:
   `adaptive` p99 <= 1.1x and req/s >= 0.97x; `maxconn` (tidegate with
   the same configured limits) p99 <= 1.05x.
2. Scenario 1 (seed): requests queued at the proxy per run, from the
   /metrics scrape taken at the end of each run: `tidegate_queued_total`,
   else the sum of `tidegate_queue_*_total` counters that count entries
   (enqueued / entered / requests / queued); `n/a` when the binary has no
   such metric. Target: 0 for the default policy.

Python 3 stdlib only; reads runs.tsv, anchors.tsv, *.wrk.txt, *.metrics.txt.
"""
import csv
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import seed_report as sr  # noqa: E402  (parse_wrk, f, table)

ANCHOR = "haproxy-maxconn"
# target name -> (max p99 ratio, min req/s ratio or None)
TARGETS = {"adaptive": (1.10, 0.97), "maxconn": (1.05, None)}
QUEUE_ENTRY = re.compile(r"^tidegate_queue_(?:enqueued|entered|requests|queued)(?:_total)?(?:\{[^}]*\})?\s+(\S+)$")
QUEUED = re.compile(r"^tidegate_queued_total(?:\{[^}]*\})?\s+(\S+)$")


def rows(path):
    try:
        with open(path, newline="") as fh:
            return list(csv.DictReader(fh, delimiter="\t"))
    except OSError:
        return []


def capacity_section(raw):
    runs = [(r["policy"], r["wrk"]) for r in rows(os.path.join(raw, "runs.tsv"))
            if r.get("scenario") == "2" and r.get("wrk", "-") != "-"]
    runs += [(r["name"], r["wrk"]) for r in rows(os.path.join(raw, "anchors.tsv"))
             if r.get("scenario") == "2" and r.get("wrk", "-") != "-"]
    if not runs:
        return None
    stats = {name: sr.parse_wrk(os.path.join(raw, wrk)) for name, wrk in runs}
    ref = stats.get(ANCHOR)
    ref_ok = bool(ref and ref["ok"] and ref["rps"] and ref["p99"])
    out = ["## Scenario 2 against HAProxy (capacity 4 / 8 / 16 x 20 ms)", ""]
    hdr = ["run", "req/s", "mean ms", "p50 ms", "p99 ms", "non-2xx", "sock err",
           f"req/s / {ANCHOR}", f"p99 / {ANCHOR}", "target"]
    body = []
    verdicts = []
    for name, _ in runs:
        w = stats[name]
        rr = pr = None
        if ref_ok and w["ok"] and w["rps"] and w["p99"]:
            rr, pr = w["rps"] / ref["rps"], w["p99"] / ref["p99"]
        target = "-"
        if name in TARGETS:
            max_p99, min_rps = TARGETS[name]
            want = f"p99 <= {max_p99}x" + (f", req/s >= {min_rps}x" if min_rps else "")
            if rr is None:
                target = f"{want}: n/a"
            else:
                ok = pr <= max_p99 and (min_rps is None or rr >= min_rps)
                target = f"{want}: **{'PASS' if ok else 'FAIL'}**"
                verdicts.append(f"{name}={'PASS' if ok else 'FAIL'}")
        body.append([name, sr.f(w["rps"], 0), sr.f(w["mean"], 1), sr.f(w["p50"], 1),
                     sr.f(w["p99"], 1), w["non2xx"] if w["ok"] else "**wrk failed**",
                     w["sock_err_total"] if w["ok"] else "-", sr.f(rr, 3), sr.f(pr, 3), target])
    out.append(sr.table(hdr, body))
    out.append("")
    out.append(f"Figures are wrk's (client side, the same measure for HAProxy and tidegate). "
               f"Ratios against `{ANCHOR}`: HAProxy `balance leastconn` with `maxconn 4/8/16` "
               f"set by hand to the true capacities. `haproxy-leastconn`: the same without "
               f"maxconn. `maxconn`: tidegate with `--backend ADDR,maxconn=C`.")
    if not ref_ok:
        out.append(f"\n`{ANCHOR}` did not run (or wrk failed): no ratios.")
    missing = [t for t in TARGETS if t not in stats]
    if missing:
        out.append(f"\nnot run (see skipped policies / log): {', '.join(missing)}")
    if verdicts:
        out.append("\ncapacity targets: " + " ".join(verdicts))
    return "\n".join(out)


def queued(metrics_path):
    """Requests queued according to one /metrics scrape; None if absent."""
    try:
        with open(metrics_path, errors="replace") as fh:
            lines = [ln.strip() for ln in fh]
    except OSError:
        return None
    for pattern in (QUEUED, QUEUE_ENTRY):
        vals = [float(m.group(1)) for ln in lines if (m := pattern.match(ln))]
        if vals:
            return int(sum(vals))
    return None


def seed_queue_section(raw):
    runs = [r for r in rows(os.path.join(raw, "runs.tsv")) if r.get("scenario") == "1"]
    if not runs:
        return None
    body = []
    for r in runs:
        q = queued(os.path.join(raw, r["key"] + ".metrics.txt"))
        body.append([r["policy"], "n/a" if q is None else q])
    out = ["## Scenario 1 (seed): requests queued at the proxy", "",
           sr.table(["policy", "queued"], body), "",
           "From the /metrics scrape at the end of each run (`tidegate_queued_total`, or the "
           "`tidegate_queue_*_total` entry counters); `n/a`: the binary exports no queue metric. "
           "Target (issue 10): 0 for the default policy."]
    return "\n".join(out)


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: capacity_report.py RAW_DIR")
    raw = sys.argv[1]
    parts = [s for s in (capacity_section(raw), seed_queue_section(raw)) if s]
    if parts:
        print()
        print("\n\n".join(parts))


if __name__ == "__main__":
    main()
