#!/usr/bin/env bash
# benches/seed_tables.sh: the seed's six proxy runs and its three tables.
#
# The seed (an aiohttp proxy) ran backend connections persistent / close x
# policy round-robin / SMA (N=3) / EWMA (alpha 0.2) in front of the simulated
# backends A, B, C, loaded with `wrk -t4 -c100 -d120s`, and computed from its
# CSV log: req/s (rows / duration), mean and p95 latency, and the share of
# requests per backend. This script does the same with `tidegate proxy`:
#
#   for each of the 6 runs (persistent rr, sma, ewma; close rr, sma, ewma):
#     start `tidegate backend` A, B, C (fresh for every run, so every run
#       starts at the same point of A's latency cycle and the backends' own
#       request counts can be checked against the CSV; RESTART_BACKENDS=0
#       keeps one set for all six runs)
#     start `tidegate proxy --workers $WORKERS --policy P --backend-conn C
#       --log-csv FILE`
#     run `wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency` (under timeout)
#     stop the proxy with SIGINT and wait (it drains in-flight requests and
#       writes every CSV row), then stop the backends the same way
#   then benches/seed_report.py computes, per run, from the CSV: rows, req/s
#   (rows / the duration wrk measured; wrk's own Requests/sec beside it),
#   mean/p50/p95/p99/max latency, non-200 rows, distribution per backend; and
#   from wrk: client-side mean and p99.
#
# Environment (defaults in brackets):
#   DURATION          wrk duration per run [30s] (the seed: 120s)
#   THREADS           wrk -t [4]
#   CONNECTIONS       wrk -c [100]
#   WORKERS           proxy --workers [2]
#   BACKEND_PORTS     ports of backends A,B,C [18181,18182,18183]
#   PROXY_PORT        proxy listen port [18190]
#   RUNS              which runs, as CONN:POLICY words
#                     ["persistent:round-robin persistent:sma persistent:ewma
#                       close:round-robin close:sma close:ewma"]
#   RESTART_BACKENDS  1: fresh backends for every run; 0: one set for all [1]
#   PAUSE             seconds between runs [2]
#   TIDEGATE_BIN      use this executable instead of building
#   OUT_DIR           [bench-out]
#
# Writes bench-out/seed_tables.md; raw CSVs, wrk outputs and server logs in
# bench-out/seed/. Runtime about 6 x (DURATION + ~5 s).

# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION="${DURATION:-30s}"
THREADS="${THREADS:-4}"
CONNECTIONS="${CONNECTIONS:-100}"
WORKERS="${WORKERS:-2}"
BACKEND_PORTS="${BACKEND_PORTS:-18181,18182,18183}"
PROXY_PORT="${PROXY_PORT:-18190}"
RUNS="${RUNS:-persistent:round-robin persistent:sma persistent:ewma close:round-robin close:sma close:ewma}"
RESTART_BACKENDS="${RESTART_BACKENDS:-1}"
PAUSE="${PAUSE:-2}"

command -v wrk >/dev/null 2>&1 || die "wrk is not installed (apt-get install wrk)"
command -v python3 >/dev/null 2>&1 || die "python3 is needed for the report"

DURATION_S="$(dur_s "$DURATION")"
((DURATION_S > 0)) || die "DURATION must be > 0"

IFS=, read -r -a PORTS <<<"$BACKEND_PORTS"
((${#PORTS[@]} == 3)) || die "BACKEND_PORTS needs three ports (A,B,C), got '$BACKEND_PORTS'"
NAMES=(A B C)



raise_nofile
build_tidegate

RAW="$OUT_DIR/seed"
mkdir -p "$RAW"
rm -f "$RAW"/*.csv "$RAW"/*.wrk.txt "$RAW"/*.log "$RAW"/runs.tsv "$RAW"/meta.txt
REPORT="$OUT_DIR/seed_tables.md"

BACKEND_PIDS=()
BACKEND_LOGS=""

# start_backends TAG: A, B, C on BACKEND_PORTS; logs RAW/TAG.backend-X.log.
start_backends() {
    local tag="$1" i
    BACKEND_PIDS=()
    BACKEND_LOGS=""
    for i in 0 1 2; do
        start_server "$RAW/$tag.backend-${NAMES[$i]}.log" \
            "$TIDEGATE_BIN" backend --listen "127.0.0.1:${PORTS[$i]}" --profile "${NAMES[$i]}" --name "${NAMES[$i]}"
        BACKEND_PIDS+=("$SERVER_PID")
        BACKEND_LOGS+="${NAMES[$i]}=$tag.backend-${NAMES[$i]}.log "
    done
    BACKEND_LOGS="${BACKEND_LOGS% }"
}

stop_backends() {
    local p
    for p in "${BACKEND_PIDS[@]+"${BACKEND_PIDS[@]}"}"; do
        stop_pid "$p" INT 10 || true
    done
    BACKEND_PIDS=()
}

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ); machine: $(describe_machine)"
    echo "load: \`wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency\` per run (the seed: -t4 -c100 -d120s)"
    echo "proxy: \`tidegate proxy --workers $WORKERS --policy P --backend-conn C --log-csv FILE\` (SMA window 3, EWMA alpha 0.2: the defaults), on 127.0.0.1:$PROXY_PORT"
    echo "backends: \`tidegate backend --profile A|B|C\` on 127.0.0.1:${PORTS[0]}, ${PORTS[1]}, ${PORTS[2]} (A = 10,15,20,400,400,400,10,15,20 ms cycling; B = 200 ms; C = 250 ms); $(
        if [[ "$RESTART_BACKENDS" == 1 ]]; then echo "restarted for every run"; else echo "one set for all runs"; fi
    )"
    echo "wrk: $(wrk -v 2>&1 | head -n 1 || true)"
} >"$RAW/meta.txt"
printf 'key\tbackend_conn\tpolicy\tcsv\twrk\tproxy_log\tproxy_rc\tbackend_logs\tbackends\n' >"$RAW/runs.tsv"

BACKENDS_SPEC="A=${PORTS[0]} B=${PORTS[1]} C=${PORTS[2]}"
PROXY_BACKENDS=()
for i in 0 1 2; do PROXY_BACKENDS+=(--backend "127.0.0.1:${PORTS[$i]}"); done

if [[ "$RESTART_BACKENDS" != 1 ]]; then start_backends all; fi

first=1
for spec in $RUNS; do
    conn="${spec%%:*}"
    policy="${spec#*:}"
    [[ "$conn" == persistent || "$conn" == close ]] || die "bad run '$spec' (CONN is persistent or close)"
    [[ "$policy" == round-robin || "$policy" == sma || "$policy" == ewma ]] ||
        die "bad run '$spec' (POLICY is round-robin, sma or ewma)"
    key="$conn-$policy"
    ((first)) || sleep "$PAUSE"
    first=0
    log "run $key: wrk -t$THREADS -c$CONNECTIONS -d$DURATION"

    if [[ "$RESTART_BACKENDS" == 1 ]]; then start_backends "$key"; fi
    csv="$key.csv"
    rm -f "$RAW/$csv"
    start_server "$RAW/$key.proxy.log" "$TIDEGATE_BIN" proxy --listen "127.0.0.1:$PROXY_PORT" \
        "${PROXY_BACKENDS[@]}" --policy "$policy" --backend-conn "$conn" --workers "$WORKERS" \
        --log-csv "$RAW/$csv"
    proxy_pid="$SERVER_PID"

    run_bounded $((DURATION_S + 30)) "$RAW/$key.wrk.txt" \
        wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "http://127.0.0.1:$PROXY_PORT/"
    ((RUN_RC == 0)) || log "warning: wrk exited with $RUN_RC (see $RAW/$key.wrk.txt)"

    # SIGINT: the proxy drains (up to its --drain-timeout, 10 s), writes the
    # CSV and prints its summary; stop_pid escalates after 30 s.
    proxy_rc=0
    stop_pid "$proxy_pid" INT 30 || proxy_rc=$?
    ((proxy_rc == 0)) || log "warning: proxy exited with status $proxy_rc (see $RAW/$key.proxy.log)"
    if [[ "$RESTART_BACKENDS" == 1 ]]; then stop_backends; fi

    log "  wrk: $(grep -E '^Requests/sec' "$RAW/$key.wrk.txt" | tr -s ' ' || echo 'no Requests/sec')" \
        "; CSV rows: $(($(wc -l <"$RAW/$csv" 2>/dev/null || echo 1) - 1))"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$key" "$conn" "$policy" "$csv" "$key.wrk.txt" \
        "$key.proxy.log" "$proxy_rc" \
        "$(if [[ "$RESTART_BACKENDS" == 1 ]]; then echo "$BACKEND_LOGS"; else echo "A=all.backend-A.log B=all.backend-B.log C=all.backend-C.log"; fi)" \
        "$BACKENDS_SPEC" >>"$RAW/runs.tsv"
done

if [[ "$RESTART_BACKENDS" != 1 ]]; then stop_backends; fi

python3 "$BENCH_DIR/seed_report.py" "$RAW" | tee "$REPORT"
log "report: $REPORT; raw CSVs, wrk outputs and logs: $RAW/"
