#!/usr/bin/env python3
"""benches/seed_report.py: the seed's three tables from tidegate proxy CSV logs.

Usage: seed_report.py RUN_DIR

RUN_DIR is what benches/seed_tables.sh writes (bench-out/seed/):
  meta.txt   "key: value" lines (shown in the report header)
  runs.tsv   one row per run: key, backend_conn, policy, csv, wrk, proxy_log,
             proxy_rc, backend_logs (space-separated "NAME=FILE"), backends
             (space-separated "NAME=PORT")
and, next to them, the files those rows name (CSV logs, wrk outputs, proxy
and backend logs). Prints the report as Markdown on stdout. Stdlib only.

The metrics follow the seed's section 14.1 (it used pandas):
  req/s          CSV rows / test duration (here: the duration wrk measured)
  mean latency   mean of latency_ms over all rows
  pN latency     pandas' default quantile (linear interpolation between the
                 two nearest ranks), over all rows
  distribution   rows per backend_url / all rows, in %
"""
import csv
import datetime
import math
import os
import re
import sys

# The seed's published numbers (section 15: 120 s runs of its aiohttp proxy,
# wrk -t4 -c100 -d120s, backends A/B/C on 8081-8083):
# (backend_conn, policy) -> (req/s, mean ms, p95 ms, (A %, B %, C %)).
SEED = {
    ("persistent", "round-robin"): (494.93, 201.57, 416.0, (33.33, 33.33, 33.33)),
    ("persistent", "sma"): (467.11, 213.61, 238.0, (22.83, 75.48, 1.69)),
    ("persistent", "ewma"): (468.70, 213.03, 239.0, (22.60, 76.06, 1.34)),
    ("close", "round-robin"): (490.61, 203.28, 429.0, (33.34, 33.33, 33.33)),
    ("close", "sma"): (437.29, 228.08, 416.0, (34.62, 63.19, 2.19)),
    ("close", "ewma"): (442.53, 225.30, 416.0, (34.32, 63.92, 1.76)),
}
CONN_LABEL = {"persistent": "persistent", "close": "non-persistent (close)"}
POLICY_LABEL = {"round-robin": "Round-Robin", "sma": "Adaptive SMA (N=3)", "ewma": "Adaptive EWMA (a=0.2)"}

UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4, "h": 3.6e6}


def to_ms(tok):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", tok or "")
    return float(m.group(1)) * UNIT_MS[m.group(2)] if m else None


def parse_wrk(path):
    """wrk --latency output -> dict (None where absent)."""
    r = {"rps": None, "requests": None, "elapsed_s": None, "mean": None, "p50": None,
         "p99": None, "max": None, "sock_err": None, "non2xx": 0, "ok": False}
    try:
        with open(path) as fh:
            text = fh.read()
    except OSError:
        return r
    m = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    if m:
        r["rps"] = float(m.group(1))
        r["ok"] = True
    m = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)", text, re.M)
    if m:
        r["requests"] = int(m.group(1))
        r["elapsed_s"] = to_ms(m.group(2) + m.group(3)) / 1e3
    m = re.search(r"^\s*Latency\s+(\S+)\s+(\S+)\s+(\S+)", text, re.M)
    if m:
        r["mean"] = to_ms(m.group(1))
        r["max"] = to_ms(m.group(3))
    for pct, key in (("50", "p50"), ("99", "p99")):
        m = re.search(r"^\s*%s(?:\.000)?%%\s+(\S+)" % pct, text, re.M)
        if m:
            r[key] = to_ms(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    r["sock_err"] = "connect %s, read %s, write %s, timeout %s" % m.groups() if m else None
    r["sock_err_total"] = sum(int(x) for x in m.groups()) if m else 0
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    if m:
        r["non2xx"] = int(m.group(1))
    return r


def quantile(sorted_vals, q):
    """pandas Series.quantile(q) with the default linear interpolation."""
    n = len(sorted_vals)
    if n == 0:
        return None
    pos = (n - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (pos - lo)


def port_of(url):
    m = re.search(r":(\d+)/?$", url)
    return m.group(1) if m else url


def parse_csv(path):
    r = {"rows": 0, "lat": [], "by_backend": {}, "non200": 0, "status": {}, "outcome": {},
         "by_worker": {}, "header_ok": None, "bad_lines": 0, "first_ts": None, "last_ts": None,
         "last_by_backend": {}}
    try:
        fh = open(path, newline="")
    except OSError:
        return r
    with fh:
        rd = csv.reader(fh)
        header = next(rd, None)
        r["header_ok"] = header is not None and header[:5] == [
            "timestamp", "backend_url", "latency_ms", "status_code", "routing_mode"]
        idx = {name: i for i, name in enumerate(header or [])}
        for row in rd:
            if not row:
                continue
            try:
                lat = float(row[idx["latency_ms"]])
                url = row[idx["backend_url"]]
                status = row[idx["status_code"]]
            except (KeyError, IndexError, ValueError):
                r["bad_lines"] += 1
                continue
            r["rows"] += 1
            r["lat"].append(lat)
            port = port_of(url)
            r["by_backend"][port] = r["by_backend"].get(port, 0) + 1
            r["status"][status] = r["status"].get(status, 0) + 1
            if status != "200":
                r["non200"] += 1
            if "outcome" in idx and idx["outcome"] < len(row):
                o = row[idx["outcome"]]
                r["outcome"][o] = r["outcome"].get(o, 0) + 1
            if "worker" in idx and idx["worker"] < len(row):
                w = row[idx["worker"]]
                r["by_worker"][w] = r["by_worker"].get(w, 0) + 1
            ts = row[idx["timestamp"]] if "timestamp" in idx else None
            if ts:
                if r["first_ts"] is None or ts < r["first_ts"]:
                    r["first_ts"] = ts
                if r["last_ts"] is None or ts > r["last_ts"]:
                    r["last_ts"] = ts
                if ts > r["last_by_backend"].get(port, ""):
                    r["last_by_backend"][port] = ts
    r["lat"].sort()
    return r


def ts_s(ts):
    """ISO-8601 UTC timestamp (2026-01-01T00:00:00.123456Z) -> POSIX seconds."""
    try:
        return datetime.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
    except (AttributeError, ValueError):
        return None


def f(x, d=2):
    return "-" if x is None else f"{x:.{d}f}"


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def last_line(path, pattern):
    try:
        with open(path, errors="replace") as fh:
            hits = [ln.rstrip("\n") for ln in fh if re.search(pattern, ln)]
    except OSError:
        return []
    return hits


def read_lines(path):
    """The non-empty lines of an optional file (none if it is missing)."""
    try:
        with open(path) as fh:
            return [ln.rstrip("\n") for ln in fh if ln.strip()]
    except OSError:
        return []


def main():
    if len(sys.argv) != 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if len(sys.argv) == 2 else 2
    d = sys.argv[1]
    meta = read_lines(os.path.join(d, "meta.txt"))
    with open(os.path.join(d, "runs.tsv")) as fh:
        runs = list(csv.DictReader(fh, delimiter="\t"))

    res = []
    for run in runs:
        p = lambda name: os.path.join(d, name)  # noqa: E731
        c = parse_csv(p(run["csv"]))
        w = parse_wrk(p(run["wrk"]))
        backends = [kv.split("=", 1) for kv in run["backends"].split()]
        blogs = dict(kv.split("=", 1) for kv in run["backend_logs"].split())
        served = {}
        for name, _port in backends:
            hits = last_line(p(blogs.get(name, "")), r"^tidegate backend: \d+ requests")
            m = re.match(r"^tidegate backend: (\d+) requests on (\d+) connections", hits[-1]) if hits else None
            served[name] = (int(m.group(1)), int(m.group(2))) if m else None
        lat = c["lat"]
        n = c["rows"]
        res.append({
            "run": run, "csv": c, "wrk": w, "backends": backends, "served": served,
            "mean": sum(lat) / n if n else None,
            "p50": quantile(lat, 0.50), "p95": quantile(lat, 0.95), "p99": quantile(lat, 0.99),
            "max": lat[-1] if lat else None,
            "rps_csv": n / w["elapsed_s"] if n and w["elapsed_s"] else None,
            "dist": {name: (100.0 * c["by_backend"].get(port, 0) / n if n else None)
                     for name, port in backends},
            "summary": last_line(p(run["proxy_log"]), r"^tidegate proxy: "),
            "problems": last_line(p(run["proxy_log"]),
                                  r"(WARN|ERROR|panick|tidegate: error|thread .* panicked)"),
        })

    names = [name for name, _ in res[0]["backends"]] if res else ["A", "B", "C"]
    ports = {name: port for name, port in res[0]["backends"]} if res else {}

    def label(r):
        return f"{CONN_LABEL.get(r['run']['backend_conn'], r['run']['backend_conn'])} / " \
               f"{POLICY_LABEL.get(r['run']['policy'], r['run']['policy'])}"

    def seed(r):
        return SEED.get((r["run"]["backend_conn"], r["run"]["policy"]))

    out = ["# Seed reproduction: six proxy runs, the seed's three tables", ""]
    out += [f"- {m}" for m in meta]
    out += ["",
            "Measured columns come from tidegate's `--log-csv` rows (the proxy's view, as "
            "in the seed) unless marked *wrk* (client side). *seed* columns are the seed "
            "report's published numbers (its aiohttp proxy, 120 s runs), for reference.", ""]

    out += ["## Table 1: throughput", ""]
    rows = []
    for r in res:
        s = seed(r)
        rows.append([label(r), r["csv"]["rows"], f(r["wrk"]["elapsed_s"], 2), f(r["rps_csv"]),
                     f(r["wrk"]["rps"]), r["wrk"]["requests"] if r["wrk"]["requests"] is not None else "-",
                     f(s[0]) if s else "-"])
    out += [table(["Run (backend conn / policy)", "CSV rows", "duration s (wrk)", "req/s (rows / duration)",
                   "req/s (wrk)", "requests (wrk)", "seed req/s"], rows), ""]

    out += ["## Table 2: latency (ms)", ""]
    rows = []
    for r in res:
        s = seed(r)
        rows.append([label(r), f(r["mean"]), f(r["p50"]), f(r["p95"]), f(r["p99"]), f(r["max"]),
                     f(r["wrk"]["mean"]), f(r["wrk"]["p99"]),
                     f(s[1]) if s else "-", f(s[2], 1) if s else "-"])
    out += [table(["Run", "mean", "p50", "p95", "p99", "max", "mean (wrk)", "p99 (wrk)",
                   "seed mean", "seed p95"], rows), ""]

    out += ["## Table 3: backend distribution (% of CSV rows)", ""]
    rows = []
    for r in res:
        s = seed(r)
        rows.append([label(r)] + [f(r["dist"][nm]) for nm in names]
                    + ["/".join(f"{x:.2f}" for x in s[3]) if s else "-"])
    hdr = ["Run"] + [f"{nm} ({ports.get(nm, '?')})" for nm in names] + ["seed A/B/C"]
    out += [table(hdr, rows), ""]

    out += ["## Errors and cross-checks", ""]
    rows = []
    for r in res:
        c, w = r["csv"], r["wrk"]
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(c["outcome"].items())) or "-"
        workers = "/".join(str(c["by_worker"][k]) for k in sorted(c["by_worker"], key=lambda x: int(x) if x.isdigit() else 0)) or "-"
        served = " ".join(f"{nm}:{v[0]}" if v else f"{nm}:?" for nm, v in r["served"].items())
        t0 = ts_s(c["first_ts"])
        last = []
        for nm, port in r["backends"]:
            t = ts_s(c["last_by_backend"].get(port))
            last.append(f"{nm}:{t - t0:.1f}" if t is not None and t0 is not None else f"{nm}:-")
        rows.append([label(r), c["non200"], outcomes,
                     (w["sock_err"] or "none") if w["ok"] else "**wrk failed**", w["non2xx"],
                     r["run"]["proxy_rc"], workers, served,
                     c["rows"] - w["requests"] if w["requests"] is not None else "-", " ".join(last)])
    out += [table(["Run", "non-200 rows", "outcomes", "wrk socket errors", "wrk non-2xx",
                   "proxy exit", "rows per worker", "backend-served requests",
                   "CSV rows - wrk requests", "last row per backend (s after first row)"], rows), ""]
    out += ["`CSV rows - wrk requests`: requests still in flight when wrk stopped (up to its "
            "100 connections); the proxy finishes and logs them while draining, wrk does not "
            "count them. `backend-served requests`: the backends' own counts (their stats "
            "line on SIGINT); they equal the per-backend CSV rows when the backends are "
            "restarted for every run. `last row per backend`: when each backend was last used; a "
            "backend an adaptive policy stopped choosing shows an early time (its estimate is only "
            "refreshed when it is chosen), and then its share in Table 3 depends on the run's "
            "length.", ""]

    out += ["## Proxy summary lines", ""]
    for r in res:
        out += [f"- {label(r)}:"] + ([f"  - `{ln}`" for ln in r["summary"]] or ["  - (none)"])
    probs = [(label(r), ln) for r in res for ln in r["problems"]]
    out += ["", "## Proxy warnings and errors (stderr)", ""]
    if probs:
        out += ["```"] + [f"[{lb}] {ln}" for lb, ln in probs[:200]] + ["```"]
        if len(probs) > 200:
            out += [f"({len(probs) - 200} more lines in the proxy logs)"]
    else:
        out += ["none"]
    bad = [label(r) for r in res if r["csv"]["header_ok"] is False or r["csv"]["bad_lines"]]
    if bad:
        out += ["", "CSV problems (unexpected header or unparsable lines): " + ", ".join(bad)]
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
