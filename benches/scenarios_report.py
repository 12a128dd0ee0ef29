#!/usr/bin/env python3
"""benches/scenarios_report.py: the routing scenario tables from proxy CSV logs.

Usage: scenarios_report.py RUN_DIR

RUN_DIR is what benches/scenarios.sh writes (bench-out/scenarios/):
  meta.txt     "key: value" lines (shown in the report header)
  skipped.tsv  policy, reason: policies the binary rejected at start-up
  runs.tsv     one row per run: scenario (base, 1-5), policy, key, csv, wrk,
               proxy_log, proxy_rc, backends ("NAME=PORT ..."), backend_logs
               ("NAME=FILE[,FILE] ..."), fault (the faulty backend's name or
               -), t0 / t_end (wrk start / end, epoch s), p1 / p2 (phase
               boundaries, epoch s: the fault's start and end in 3 and 4,
               T1 and T2 otherwise), slo_ms, note
and the files those rows name. Prints Markdown on stdout. Stdlib only.

Metrics (seed_report.py's method, which follows the seed's pandas code):
  req/s          wrk's Requests/sec
  mean, pN       over all CSV rows' latency_ms (pN: pandas' default linear
                 quantile)
  non-2xx rows   CSV rows whose status is not 2xx (the proxy's 502/504 too)
  sock err       wrk's socket errors (connect + read + write + timeout)
  client fail %  (wrk non-2xx + wrk socket errors) / wrk requests
  SLO            proxy: its summary line (responses relayed within D ms /
                 responses relayed); CSV: 2xx rows with latency_ms <= D /
                 all rows
  distribution   CSV rows per backend_url, % of all rows
  p99 ok         p99 of the 2xx rows only
  5xx %          fastfail: wrk's non-2xx responses / wrk requests (what the
                 clients saw), and CSV rows with a 5xx status / all rows
  req/s / base   fastfail: req/s over the same policy's baseline req/s (the
                 same backends without the fault)
Phases (scenarios 3-5) are assigned by each row's start time (timestamp -
latency_ms; the CSV timestamp is when the request ended).
"""
import csv
import os
import re
import sys

sys.dont_write_bytecode = True  # no benches/__pycache__ from the import below
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import seed_report as sr  # noqa: E402  (parse_wrk, quantile, ts_s, f, table, last_line)

TITLES = {
    "base": "Baseline: three healthy 20 ms backends (no fault)",
    "1": "Scenario 1: seed backends A, B, C",
    "2": "Scenario 2: heterogeneous capacity (4 / 8 / 16 slots x 20 ms)",
    "3": "Scenario 3: slow phase (one backend 10x slower from T1 to T2)",
    "4": "Scenario 4: killed backend (SIGKILL at T1, restarted at T2)",
    "5": "Scenario 5: black hole (one of four backends accepts and never answers)",
    "fastfail": "Fast failures: one of three 20 ms backends answers half its requests with a 503",
}
PHASES = {
    "3": ("before", "slow", "after"),
    "4": ("before", "down", "after restart"),
    "5": ("0-T1", "T1-T2", "T2-end"),
    "base": ("0-T1", "T1-T2", "T2-end"),
}
ORDER = ["1", "2", "3", "4", "5", "fastfail", "base"]
# identical: runs "identical-c<N>", one table; the pass mark (% of rows).
ID_PREFIX = "identical-c"
ID_MAX_PCT = float(os.environ.get("ID_MAX_PCT", "47"))
BUCKET_S = 1.0


def load_rows(path):
    """CSV -> list of (start_epoch, latency_ms, status, port, outcome); bad-line count."""
    rows, bad = [], 0
    try:
        fh = open(path, newline="")
    except OSError:
        return rows, bad
    with fh:
        rd = csv.reader(fh)
        header = next(rd, None) or []
        idx = {name: i for i, name in enumerate(header)}
        need = ("timestamp", "backend_url", "latency_ms", "status_code")
        if any(k not in idx for k in need):
            return rows, -1
        io = idx.get("outcome")
        for row in rd:
            if not row:
                continue
            try:
                lat = float(row[idx["latency_ms"]])
                end = sr.ts_s(row[idx["timestamp"]])
                status = row[idx["status_code"]]
                port = sr.port_of(row[idx["backend_url"]]) if row[idx["backend_url"]] else "-"
            except (IndexError, ValueError):
                bad += 1
                continue
            if end is None:
                bad += 1
                continue
            outcome = row[io] if io is not None and io < len(row) else ""
            rows.append((end - lat / 1000.0, lat, status, port, outcome))
    return rows, bad


def is_ok(status):
    return status.startswith("2")


def num(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def pct(a, b):
    return 100.0 * a / b if b else None


def lat_stats(lats):
    lats = sorted(lats)
    n = len(lats)
    return {
        "n": n,
        "mean": sum(lats) / n if n else None,
        "p50": sr.quantile(lats, 0.50),
        "p95": sr.quantile(lats, 0.95),
        "p99": sr.quantile(lats, 0.99),
        "max": lats[-1] if lats else None,
    }


def analyse(d, run):
    p = lambda name: os.path.join(d, name)  # noqa: E731
    r = {"run": run, "scen": run["scenario"], "policy": run["policy"]}
    backends = [kv.split("=", 1) for kv in run["backends"].split()]
    r["backends"] = backends
    r["nostart"] = run["proxy_rc"] == "nostart"
    if r["nostart"]:
        return r
    rows, bad = load_rows(p(run["csv"]))
    r["bad_lines"] = bad
    r["rows"] = len(rows)
    r["all"] = lat_stats([x[1] for x in rows])
    r["ok"] = lat_stats([x[1] for x in rows if is_ok(x[2])])
    r["non2xx"] = sum(1 for x in rows if not is_ok(x[2]))
    r["status"] = {}
    r["outcome"] = {}
    by_port = {}
    for x in rows:
        r["status"][x[2]] = r["status"].get(x[2], 0) + 1
        r["outcome"][x[4]] = r["outcome"].get(x[4], 0) + 1
        by_port[x[3]] = by_port.get(x[3], 0) + 1
    r["dist"] = {name: pct(by_port.get(port, 0), len(rows)) for name, port in backends}
    w = sr.parse_wrk(p(run["wrk"]))
    r["wrk"] = w
    fails = (w["non2xx"] or 0) + (w["sock_err_total"] or 0)
    r["client_fail"] = pct(fails, w["requests"]) if w["requests"] else None
    slo = num(run["slo_ms"])
    r["slo"] = slo
    r["slo_csv"] = pct(sum(1 for x in rows if is_ok(x[2]) and x[1] <= slo), len(rows)) if slo else None
    r["slo_proxy"] = None
    for ln in sr.last_line(p(run["proxy_log"]), r"SLO share:"):
        m = re.search(r"SLO share: ([\d.]+)% answered within (\d+) ms", ln)
        if m:
            r["slo_proxy"] = float(m.group(1))
    r["summary"] = sr.last_line(p(run["proxy_log"]), r"^tidegate proxy: ")
    # Outlier ejections, from the /metrics scraped at the end of the run.
    ej = sr.last_line(p(run["key"] + ".metrics.txt"), r"^tidegate_ejections_total")
    r["ejections"] = int(sum(num(ln.split()[-1]) or 0 for ln in ej)) if ej else "-"
    r["problems"] = sr.last_line(
        p(run["proxy_log"]), r"(WARN|ERROR|panick|tidegate: error|thread .* panicked|Segmentation|Aborted)")
    # Phases and recovery (fault scenarios).
    t0, p1, p2, t_end = (num(run[k]) for k in ("t0", "p1", "p2", "t_end"))
    r["t0"], r["p1"], r["p2"], r["t_end"] = t0, p1, p2, t_end
    fault_port = dict(backends).get(run["fault"]) if run["fault"] != "-" else None
    r["fault_port"] = fault_port
    if p1 is not None and p2 is not None:
        phases = [[], [], []]
        for x in rows:
            phases[0 if x[0] < p1 else (1 if x[0] < p2 else 2)].append(x)
        r["phases"] = []
        for i, ph in enumerate(phases):
            lo = t0 if i == 0 else (p1 if i == 1 else p2)
            hi = p1 if i == 0 else (p2 if i == 1 else t_end)
            secs = (hi - lo) if lo is not None and hi is not None else None
            r["phases"].append({
                "rows": len(ph),
                "secs": secs,
                "rps": len(ph) / secs if secs and secs > 0 else None,
                "all": lat_stats([x[1] for x in ph]),
                "ok": lat_stats([x[1] for x in ph if is_ok(x[2])]),
                "non2xx": sum(1 for x in ph if not is_ok(x[2])),
                "fault_share": pct(sum(1 for x in ph if x[3] == fault_port), len(ph)) if fault_port else None,
            })
        # Reaction and recovery, in 1 s buckets (by start time) aligned on
        # the fault's start and end.
        if fault_port and t_end is not None:
            fair = 100.0 / len(backends)
            marks = [(x[0], x[3] == fault_port) for x in rows]

            def first_bucket(lo, hi, cond):
                k = 0
                while lo + k * BUCKET_S < hi:
                    a, b = lo + k * BUCKET_S, min(lo + (k + 1) * BUCKET_S, hi)
                    sel = [fl for t, fl in marks if a <= t < b]
                    if sel and cond(100.0 * sum(sel) / len(sel)):
                        return b - lo
                    k += 1
                return None
            # Reaction: by the end of which bucket of the fault the faulty
            # backend got under a third of its fair share.
            r["react"] = first_bucket(p1, p2, lambda sh: sh < fair / 3)
            # Recovery: by the end of which bucket after the fault it is back
            # to at least 60 % of its fair share.
            r["recover"] = first_bucket(p2, max(t_end, p2), lambda sh: sh >= 0.6 * fair)
    return r


def served(d, run):
    """Backends' own request counts (sum over their logs)."""
    out = {}
    for kv in run["backend_logs"].split():
        name, files = kv.split("=", 1)
        parts = []
        for fn in files.split(","):
            hits = sr.last_line(os.path.join(d, fn), r"backend \S+ stopped: \d+ requests|^tidegate backend: \d+ requests")
            m = re.search(r"(\d+) requests", hits[-1]) if hits else None
            # A killed backend prints no counts: "?".
            parts.append(m.group(1) if m else "?")
        out[name] = "+".join(parts)
    return out


def identical_section(rs):
    """Issue 12's table: each backend's share of the rows per policy and
    wrk -c, and whether the largest is within ID_MAX_PCT."""
    names = [n for n, _ in rs[0]["backends"]]
    out = ["## Identical backends: three `--profile 10` backends, no `--slo-ms`", "",
           f"PASS when no backend gets more than {ID_MAX_PCT:g} % of the CSV rows (1.4x a fair third).", ""]
    hdr = ["policy", "wrk -c", "req/s", "mean", "p95", "p99", "non-2xx"] + [f"{n} %" for n in names] \
        + ["max %", "result", "load"]
    rows, verdicts = [], []
    for r in rs:
        conns = r["scen"][len(ID_PREFIX):]
        if r["nostart"]:
            rows.append([r["policy"], conns, "proxy did not start"] + ["-"] * (len(hdr) - 3))
            verdicts.append(False)
            continue
        a, w = r["all"], r["wrk"]
        shares = [r["dist"][n] for n in names]
        most = max((x for x in shares if x is not None), default=None)
        ok = most is not None and r["rows"] > 0 and most <= ID_MAX_PCT
        verdicts.append(ok)
        rows.append([r["policy"], conns, f(w["rps"]), f(a["mean"]), f(a["p95"]), f(a["p99"]), r["non2xx"]]
                    + [f(x) for x in shares] + [f(most), "PASS" if ok else "**FAIL**", r["run"].get("load", "-")])
    out += [sr.table(hdr, rows), ""]
    out += [f"identical: {'PASS' if all(verdicts) else 'FAIL'} ({sum(verdicts)} of {len(verdicts)} runs within "
            f"{ID_MAX_PCT:g} %)", ""]
    return out


def f(x, d=1):
    return sr.f(x, d)


def main():
    if len(sys.argv) != 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if len(sys.argv) == 2 else 2
    d = sys.argv[1]
    meta = sr.read_lines(os.path.join(d, "meta.txt"))
    skipped = []
    try:
        with open(os.path.join(d, "skipped.tsv")) as fh:
            skipped = list(csv.DictReader(fh, delimiter="\t"))
    except OSError:
        pass
    with open(os.path.join(d, "runs.tsv")) as fh:
        runs = list(csv.DictReader(fh, delimiter="\t"))

    res = [analyse(d, run) for run in runs]
    for r in res:
        r["served"] = served(d, r["run"])
    by_scen = {}
    for r in res:
        by_scen.setdefault(r["scen"], []).append(r)
    base = {r["policy"]: r for r in by_scen.get("base", []) if not r["nostart"]}

    out = ["# Routing scenarios", ""]
    out += [f"- {m}" for m in meta]
    if skipped:
        out += ["- skipped policies (rejected by the binary at start-up): "
                + "; ".join(f"`{s['policy']}` ({s['reason'].strip()})" for s in skipped)]
    out += ["",
            "Latency columns are ms from the proxy's CSV (`latency_ms`: first byte written to the backend "
            "to the last response byte read), pandas-style linear percentiles over all rows; req/s is wrk's. "
            "*non-2xx* = CSV rows with a non-2xx status (the proxy's own 502/504 included); *sock* = wrk "
            "socket errors; *fail %* = (wrk non-2xx + socket errors) / wrk requests. *SLO* = proxy summary "
            "line (relayed responses within D ms) / CSV (2xx rows within D ms over all rows). Distribution: "
            "% of CSV rows per backend.", ""]

    for scen in [s for s in ORDER if s in by_scen]:
        rs = by_scen[scen]
        names = [n for n, _ in rs[0]["backends"]]
        slo = rs[0]["run"]["slo_ms"]
        out += [f"## {TITLES[scen]}", ""]
        note = rs[0]["run"]["note"]
        if note and note != "-":
            out += [f"Setup: {note}.", ""]
        if scen == "3" and note == "restart":
            out += ["**Method: restart** (this binary has no `--slow`): the slow backend was SIGKILLed and "
                    "restarted with a 10x profile at T1, and again with the normal profile at T2. Each restart "
                    "closes the port for a moment and resets the proxy's connections to it, which causes connect "
                    "failures, retries and usually an outlier ejection at T1 and T2: the slow backend's share "
                    "in the slow phase and just after T2 shows the ejection as much as the policy.", ""]
        hdr = ["policy", "req/s", "mean", "p50", "p95", "p99", "non-2xx", "sock", "fail %",
               f"SLO {slo} ms proxy / CSV %"] + [f"{n} %" for n in names]
        rr = next((r for r in rs if r["policy"] == "round-robin" and not r["nostart"]), None)
        if scen == "2":
            hdr += ["p99 / rr p99", "req/s / rr req/s"]
        if scen in ("3", "4", "5"):
            hdr += ["p99 ok", "base p99", "p99 ok / base", "<= 1.5x"]
        if scen == "fastfail":
            hdr += ["5xx % (wrk)", "5xx % (CSV)", "base req/s", "req/s / base", "ejections"]
        rows = []
        for r in rs:
            if r["nostart"]:
                rows.append([r["policy"], "proxy did not start"] + ["-"] * (len(hdr) - 2))
                continue
            a, w = r["all"], r["wrk"]
            row = [r["policy"], f(w["rps"]), f(a["mean"]), f(a["p50"]), f(a["p95"]), f(a["p99"]),
                   r["non2xx"], w["sock_err_total"] if w["ok"] else "**wrk failed**", f(r["client_fail"], 2),
                   f"{f(r['slo_proxy'], 2)} / {f(r['slo_csv'], 2)}"]
            row += [f(r["dist"][n]) for n in names]
            if scen == "2":
                row += [sr.f(a["p99"] / rr["all"]["p99"], 2) if rr and rr["all"]["p99"] and a["p99"] else "-",
                        sr.f(w["rps"] / rr["wrk"]["rps"], 2) if rr and rr["wrk"]["rps"] and w["rps"] else "-"]
            if scen in ("3", "4", "5"):
                b = base.get(r["policy"])
                bp = b["all"]["p99"] if b else None
                ratio = r["ok"]["p99"] / bp if bp and r["ok"]["p99"] is not None else None
                row += [f(r["ok"]["p99"]), f(bp), sr.f(ratio, 2),
                        "-" if ratio is None else ("yes" if ratio <= 1.5 else "**no**")]
            if scen == "fastfail":
                b = base.get(r["policy"])
                brps = b["wrk"]["rps"] if b else None
                n5 = sum(v for k, v in r["status"].items() if k.startswith("5"))
                row += [f(pct(w["non2xx"] or 0, w["requests"]), 2) if w["requests"] else "-",
                        f(pct(n5, r["rows"]), 2), f(brps),
                        sr.f(w["rps"] / brps, 2) if brps and w["rps"] else "-", r["ejections"]]
            rows.append(row)
        out += [sr.table(hdr, rows), ""]

        if scen in PHASES and any("phases" in r for r in rs):
            labels = PHASES[scen]
            fault = rs[0]["run"]["fault"]
            out += [f"Phases ({' / '.join(labels)}; rows by start time; {'fault backend: ' + fault if fault != '-' else 'no fault'}):", ""]
            hdr = ["policy"]
            for lb in labels:
                hdr += [f"{lb}: req/s", f"{lb}: p99", f"{lb}: p99 ok", f"{lb}: non-2xx"]
                if fault != "-":
                    hdr += [f"{lb}: {fault} %"]
            if scen in ("3", "4"):
                hdr += ["reaction s", "recovery s"]
            rows = []
            for r in rs:
                if r["nostart"] or "phases" not in r:
                    continue
                row = [r["policy"]]
                for ph in r["phases"]:
                    row += [f(ph["rps"]), f(ph["all"]["p99"]), f(ph["ok"]["p99"]), ph["non2xx"]]
                    if fault != "-":
                        row += [f(ph["fault_share"])]
                if scen in ("3", "4"):
                    row += [f(r.get("react")) if r.get("react") is not None else "never",
                            f(r.get("recover")) if r.get("recover") is not None else "never"]
                rows.append(row)
            out += [sr.table(hdr, rows), ""]
            if scen in ("3", "4"):
                out += ["*reaction*: 1 s buckets of requests (by start time) from the fault's start: the end of "
                        "the first one in which the faulty backend got under 1/3 of its fair share, in s after the "
                        "start (`never`: not before the fault ended). *recovery*: the same from the fault's end, "
                        "first bucket with at least 60 % of its fair share (`never`: not before wrk stopped). "
                        "1.0 means within the first second.", ""]

        # Cross-checks.
        hdr = ["policy", "CSV rows", "wrk requests", "CSV - wrk", "statuses", "outcomes", "wrk p99",
               "proxy exit", "backend-served", "load", "proxy WARN/ERROR lines"]
        rows = []
        for r in rs:
            if r["nostart"]:
                continue
            w = r["wrk"]
            rows.append([
                r["policy"], r["rows"], w["requests"] if w["requests"] is not None else "-",
                r["rows"] - w["requests"] if w["requests"] is not None else "-",
                ", ".join(f"{k}: {v}" for k, v in sorted(r["status"].items())) or "-",
                ", ".join(f"{k}: {v}" for k, v in sorted(r["outcome"].items())) or "-",
                f(w["p99"]), r["run"]["proxy_rc"],
                " ".join(f"{n}:{v}" for n, v in r["served"].items()), r["run"].get("load", "-"),
                len(r["problems"]),
            ])
        out += ["<details><summary>cross-checks</summary>", "", sr.table(hdr, rows), "",
                "*wrk p99* is client-side and includes wrk's coordinated-omission correction (synthetic "
                "samples for every stall longer than a connection's mean request interval), so it is far "
                "above the CSV's p99 when requests stall. *CSV - wrk*: requests in flight when wrk stopped "
                "(the proxy drains and logs them). *backend-served*: the backends' own counts, one per "
                "process (`?`: killed, no count). *load*: 1-min load average at the run's start.", "",
                "</details>", ""]

    ids = sorted((r for r in res if r["scen"].startswith(ID_PREFIX)),
                 key=lambda r: (r["policy"], int(r["scen"][len(ID_PREFIX):])))
    if ids:
        out += identical_section(ids)

    # Proxy summary lines and problems.
    out += ["## Proxy summary lines", ""]
    for r in res:
        if r["nostart"]:
            continue
        lines = [ln for ln in r["summary"] if re.search(r"requests in|status:|errors:|SLO share", ln)]
        out += [f"- s{r['scen']} {r['policy']}:"] + ([f"  - `{ln}`" for ln in lines] or ["  - (none)"])
    out += ["", "## Proxy warnings and errors (stderr; distinct messages, digits folded)", ""]
    any_prob = False
    for r in res:
        if r["nostart"]:
            out += [f"- s{r['scen']} {r['policy']}: **the proxy did not start** (see {r['run']['proxy_log']})"]
            any_prob = True
            continue
        if r["run"]["proxy_rc"] not in ("0",):
            out += [f"- s{r['scen']} {r['policy']}: **proxy exit status {r['run']['proxy_rc']}**"]
            any_prob = True
        if not r["problems"]:
            continue
        any_prob = True
        seen = {}
        for ln in r["problems"]:
            k = re.sub(r"\d+", "N", re.sub(r"^\[[^\]]*\]\s*", "", ln))
            if k not in seen:
                seen[k] = [ln, 0]
            seen[k][1] += 1
        out += [f"- s{r['scen']} {r['policy']}: {len(r['problems'])} lines"]
        for k, (ln, c) in list(seen.items())[:8]:
            out += [f"  - {c} x `{ln[:300]}`"]
        if len(seen) > 8:
            out += [f"  - ... {len(seen) - 8} more distinct messages"]
    if not any_prob:
        out += ["none"]
    bad = [f"s{r['scen']} {r['policy']}" for r in res if not r["nostart"] and r.get("bad_lines")]
    if bad:
        out += ["", "CSV problems (missing columns or unparsable lines): " + ", ".join(bad)]
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
