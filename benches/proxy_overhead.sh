#!/usr/bin/env bash
# benches/proxy_overhead.sh: tidegate's proxy overhead next to nginx and
# HAProxy, same backends, same run, interleaved.
#
# Uses the anchors toolkit (/work/shared/anchors, see its README.md):
#   1. `anchors.sh start --with-backends`: three nginx fast backends ("hello\n",
#      1 worker each) on BACKEND_PORTS, the nginx reverse proxy (1 worker) on
#      NGINX_PORT and HAProxy (1 thread) on HAPROXY_PORT, both keep-alive to the
#      backends, round robin. Its run dir is ANCHORS_DIR (our own by default,
#      so that `anchors.sh stop` only ever touches what this script started).
#   2. `tidegate proxy --workers 1 --policy round-robin` on TIDEGATE_PORT and
#      `tidegate proxy --workers 2 --policy round-robin` on TIDEGATE_W2_PORT,
#      both in front of the same three backends (persistent backend
#      connections, the default; no --log-csv).
#   3. `compare.sh --target haproxy=... --target nginx=... --target tidegate=...
#      --target tidegate_w2=... --reps REPS --duration DURATION --threads 1
#      --connections 100`: wrk runs interleaved; medians; ratios vs HAProxy
#      (the first target).
#   4. CPU cost per request: for CPU_REPS repetitions, for each proxy process
#      (haproxy; the nginx proxy's worker, i.e. the child of the master whose
#      pid file is in the anchors run dir; tidegate 1 worker; tidegate 2
#      workers), interleaved: read utime+stime of /proc/PID/stat (all threads),
#      run `wrk -t1 -c100 -dCPU_DURATION`, read them again; CPU time / wrk's
#      request count = us of CPU per request (user and system also apart).
#      Medians over the repetitions.
#   5. `anchors.sh stop`, the tidegate proxies stopped by PID (also by the
#      trap, on any exit).
#
# Environment (defaults in brackets):
#   REPS              compare.sh --reps [5]
#   DURATION          compare.sh --duration [10s]
#   CONNECTIONS       wrk -c, both parts [100]
#   CPU_REPS          repetitions of the CPU measurement [REPS]
#   CPU_DURATION      wrk -d of one CPU measurement [5s]
#   BACKEND_PORTS     nginx fast backends [18081,18082,18083]
#   NGINX_PORT, HAPROXY_PORT          anchor proxies [19090, 19091]
#   TIDEGATE_PORT, TIDEGATE_W2_PORT   tidegate proxies [19200, 19201]
#   ANCHORS           the anchors toolkit [/work/shared/anchors]
#   ANCHORS_DIR       its run dir [bench-out/proxy_overhead/anchors]
#   PAUSE             seconds between wrk runs [1]
#   TIDEGATE_BIN      use this executable instead of building
#   OUT_DIR           [bench-out]
#
# Writes bench-out/proxy_overhead.md; compare.sh's output and raw wrk files,
# the CPU runs and the proxies' logs in bench-out/proxy_overhead/. Runtime
# with the defaults: about 4 x (REPS + 1) x (DURATION + 1 s) + 4 x CPU_REPS x
# (CPU_DURATION + 1 s), ~6 min.

# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REPS="${REPS:-5}"
DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-100}"
CPU_REPS="${CPU_REPS:-$REPS}"
CPU_DURATION="${CPU_DURATION:-5s}"
BACKEND_PORTS="${BACKEND_PORTS:-18081,18082,18083}"
NGINX_PORT="${NGINX_PORT:-19090}"
HAPROXY_PORT="${HAPROXY_PORT:-19091}"
TIDEGATE_PORT="${TIDEGATE_PORT:-19200}"
TIDEGATE_W2_PORT="${TIDEGATE_W2_PORT:-19201}"
ANCHORS="${ANCHORS:-/work/shared/anchors}"
PAUSE="${PAUSE:-1}"

RAW="$OUT_DIR/proxy_overhead"
ANCHORS_DIR="${ANCHORS_DIR:-$RAW/anchors}"
REPORT="$OUT_DIR/proxy_overhead.md"

[[ -x "$ANCHORS/anchors.sh" && -x "$ANCHORS/compare.sh" ]] || die "no anchors toolkit at $ANCHORS (set ANCHORS)"
command -v wrk >/dev/null 2>&1 || die "wrk is not installed (\"$ANCHORS/anchors.sh\" install)"
[[ "$REPS" =~ ^[1-9][0-9]*$ && "$CPU_REPS" =~ ^[1-9][0-9]*$ ]] || die "REPS and CPU_REPS must be positive integers"

DURATION_S="$(dur_s "$DURATION")"
CPU_DURATION_S="$(dur_s "$CPU_DURATION")"

IFS=, read -r -a PORTS <<<"$BACKEND_PORTS"
((${#PORTS[@]} >= 1)) || die "BACKEND_PORTS is empty"

# ---------------------------------------------------------------- cleanup

# lib.sh's trap stops the tidegate proxies (BENCH_PIDS); this one also stops
# the anchors, once, whatever way the script ends.
ANCHORS_STARTED=0
overhead_cleanup() {
    local rc=$? p
    trap - EXIT INT TERM
    for p in "${BENCH_PIDS[@]+"${BENCH_PIDS[@]}"}"; do
        if pid_alive "$p"; then
            log "cleanup: stopping pid $p"
            stop_pid "$p" INT 5 || true
        fi
    done
    if ((ANCHORS_STARTED)); then
        log "cleanup: anchors.sh stop --dir $ANCHORS_DIR"
        timeout 60 "$ANCHORS/anchors.sh" stop --dir "$ANCHORS_DIR" >&2 || log "warning: anchors.sh stop failed"
    fi
    exit "$rc"
}
trap overhead_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- build



# ---------------------------------------------------------------- /proc

# cpu_ticks PID: "utime stime" of the whole process (all threads), in clock
# ticks; fields 14 and 15 of /proc/PID/stat, counted after the ")" that ends
# the command name (which may contain spaces).
cpu_ticks() {
    local stat
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    stat="${stat##*) }"
    awk '{print $12, $13}' <<<"$stat"
}

# children_pids PID: the PIDs of PID's child processes.
children_pids() {
    cat /proc/"$1"/task/*/children 2>/dev/null | tr ' ' '\n' | awk 'NF' || true
}

read_pidfile() {
    local pid
    pid="$(cat "$1" 2>/dev/null)" || die "no pid file $1"
    if ! [[ "$pid" =~ ^[0-9]+$ ]] || ! pid_alive "$pid"; then
        die "pid file $1 names no live process ('$pid')"
    fi
    echo "$pid"
}

# ---------------------------------------------------------------- main

raise_nofile
build_tidegate
mkdir -p "$RAW"
rm -f "$RAW"/*.txt "$RAW"/*.log "$RAW"/*.tsv
mkdir -p "$ANCHORS_DIR"

log "starting anchors (run dir $ANCHORS_DIR)"
ANCHORS_STARTED=1
timeout 120 "$ANCHORS/anchors.sh" start --with-backends --backends "$BACKEND_PORTS" \
    --nginx-port "$NGINX_PORT" --haproxy-port "$HAPROXY_PORT" --dir "$ANCHORS_DIR" \
    >"$RAW/anchors_start.txt" 2>&1 || {
    cat "$RAW/anchors_start.txt" >&2
    die "anchors.sh start failed"
}
cat "$RAW/anchors_start.txt" >&2

TG_BACKENDS=()
for p in "${PORTS[@]}"; do TG_BACKENDS+=(--backend "127.0.0.1:$p"); done
start_server "$RAW/tidegate.log" "$TIDEGATE_BIN" proxy --listen "127.0.0.1:$TIDEGATE_PORT" \
    "${TG_BACKENDS[@]}" --policy round-robin --workers 1
TG1_WRAPPER="$SERVER_PID" TG1_PID="$SERVER_REAL_PID"
start_server "$RAW/tidegate_w2.log" "$TIDEGATE_BIN" proxy --listen "127.0.0.1:$TIDEGATE_W2_PORT" \
    "${TG_BACKENDS[@]}" --policy round-robin --workers 2
TG2_WRAPPER="$SERVER_PID" TG2_PID="$SERVER_REAL_PID"

HAPROXY_PID="$(read_pidfile "$ANCHORS_DIR/run/haproxy.pid")"
NGINX_MASTER="$(read_pidfile "$ANCHORS_DIR/run/nginx-proxy.pid")"
NGINX_WORKER="$(children_pids "$NGINX_MASTER" | head -n 1)"
[[ -n "$NGINX_WORKER" ]] || die "nginx proxy master $NGINX_MASTER has no worker process"
log "pids: haproxy $HAPROXY_PID ($(threads_of "$HAPROXY_PID") threads), nginx worker $NGINX_WORKER (master $NGINX_MASTER)," \
    "tidegate $TG1_PID ($(threads_of "$TG1_PID") threads), tidegate_w2 $TG2_PID ($(threads_of "$TG2_PID") threads)"

NAMES=(haproxy nginx tidegate tidegate_w2)
declare -A URL=(
    [haproxy]="http://127.0.0.1:$HAPROXY_PORT/"
    [nginx]="http://127.0.0.1:$NGINX_PORT/"
    [tidegate]="http://127.0.0.1:$TIDEGATE_PORT/"
    [tidegate_w2]="http://127.0.0.1:$TIDEGATE_W2_PORT/"
)
declare -A PID_OF=([haproxy]="$HAPROXY_PID" [nginx]="$NGINX_WORKER" [tidegate]="$TG1_PID" [tidegate_w2]="$TG2_PID")
declare -A PROC_DESC=(
    [haproxy]="haproxy (nbthread 1), pid $HAPROXY_PID"
    [nginx]="nginx proxy worker, pid $NGINX_WORKER (master $NGINX_MASTER not counted)"
    [tidegate]="tidegate proxy --workers 1, pid $TG1_PID"
    [tidegate_w2]="tidegate proxy --workers 2, pid $TG2_PID"
)

for n in "${NAMES[@]}"; do
    code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 3 "${URL[$n]}" 2>/dev/null || true)"
    [[ "$code" == 200 ]] || die "$n (${URL[$n]}) answered '${code:-nothing}' to a GET probe"
done

MACHINE="$(describe_machine)"

# ---- part 1: compare.sh
TARGETS=()
for n in "${NAMES[@]}"; do TARGETS+=(--target "$n=${URL[$n]}"); done
COMPARE_TIMEOUT=$(((REPS + 1) * ${#NAMES[@]} * (DURATION_S + 40) + 120))
log "compare.sh: ${#NAMES[@]} targets x $REPS reps x $DURATION (bounded by ${COMPARE_TIMEOUT}s)"
# compare.sh prints its progress on stderr, the table on stdout.
# shellcheck disable=SC2016  # the bash -c script is meant to be single-quoted
run_bounded "$COMPARE_TIMEOUT" "$RAW/compare.stderr.txt" \
    bash -c 'out="$1"; shift; exec "$@" >"$out"' compare "$RAW/compare.txt" \
    "$ANCHORS/compare.sh" "${TARGETS[@]}" --reps "$REPS" --duration "$DURATION" --threads 1 \
    --connections "$CONNECTIONS" --pause "$PAUSE" --dir "$ANCHORS_DIR"
cat "$RAW/compare.stderr.txt" >&2
cat "$RAW/compare.txt" >&2
((RUN_RC == 0)) || log "warning: compare.sh exited with $RUN_RC"
RESULTS_DIR="$(sed -n 's/^results: //p' "$RAW/compare.stderr.txt" | head -n 1)"
if [[ -n "$RESULTS_DIR" && -d "$RESULTS_DIR" ]]; then
    rm -rf "$RAW/compare_raw"
    cp -r "$RESULTS_DIR" "$RAW/compare_raw"
fi
SUMMARY_TSV="$RAW/compare_raw/summary.tsv"

# summary_field NAME COLUMN: a column of compare.sh's summary.tsv.
summary_field() {
    [[ -r "$SUMMARY_TSV" ]] || {
        echo "-"
        return
    }
    awk -F'\t' -v n="$1" -v c="$2" 'NR == 1 {for (i = 1; i <= NF; i++) col[$i] = i; next}
        $1 == n {v = $(col[c]); print (v == "" ? "-" : v); found = 1}
        END {if (!found) print "-"}' "$SUMMARY_TSV"
}

# ---- part 2: CPU per request
CLK_TCK="$(getconf CLK_TCK)"
CPU_TSV="$RAW/cpu.tsv"
printf 'rep\ttarget\tpid\trequests\treq_s\tutime_ticks\tstime_ticks\tcpu_us_per_req\tuser_us_per_req\tsys_us_per_req\terrors\n' >"$CPU_TSV"
log "CPU per request: ${#NAMES[@]} processes x $CPU_REPS reps x wrk -t1 -c$CONNECTIONS -d$CPU_DURATION (CLK_TCK $CLK_TCK)"
for ((rep = 1; rep <= CPU_REPS; rep++)); do
    for n in "${NAMES[@]}"; do
        pid="${PID_OF[$n]}"
        pid_alive "$pid" || die "$n (pid $pid) is gone"
        f="$RAW/cpu_${n}_r$rep.txt"
        read -r u0 s0 < <(cpu_ticks "$pid")
        run_bounded $((CPU_DURATION_S + 30)) "$f" wrk -t1 -c"$CONNECTIONS" -d"$CPU_DURATION" --latency "${URL[$n]}"
        wrc="$RUN_RC"
        read -r u1 s1 < <(cpu_ticks "$pid")
        reqs="$(sed -nE 's/^[[:space:]]*([0-9]+) requests in .*/\1/p' "$f" | head -n 1)"
        rps="$(sed -nE 's/^Requests\/sec:[[:space:]]+([0-9.]+).*/\1/p' "$f" | head -n 1)"
        errs="$( (grep -E 'Socket errors|Non-2xx' "$f" || true) | tr -s ' ' | paste -sd';' -)"
        ((wrc == 0)) || errs="wrk rc=$wrc${errs:+; $errs}"
        read -r cpu usr sys < <(awk -v du=$((u1 - u0)) -v ds=$((s1 - s0)) -v r="${reqs:-0}" -v hz="$CLK_TCK" 'BEGIN {
            if (r > 0) printf "%.2f %.2f %.2f\n", (du + ds) / hz * 1e6 / r, du / hz * 1e6 / r, ds / hz * 1e6 / r
            else print "- - -"
        }')
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$rep" "$n" "$pid" "${reqs:--}" "${rps:--}" \
            $((u1 - u0)) $((s1 - s0)) "$cpu" "$usr" "$sys" "${errs:--}" >>"$CPU_TSV"
        log "cpu rep $rep/$CPU_REPS $(printf '%-12s' "$n") ${rps:-FAILED} req/s, $cpu us/req (user $usr, sys $sys)${errs:+ [$errs]}"
        sleep "$PAUSE"
    done
done

# cpu_col NAME COLUMN: the values of COLUMN of cpu.tsv for target NAME.
cpu_col() {
    awk -F'\t' -v n="$1" -v c="$2" 'NR == 1 {for (i = 1; i <= NF; i++) col[$i] = i; next}
        $2 == n {print $(col[c])}' "$CPU_TSV"
}

# ---- stop
for w in "$TG1_WRAPPER" "$TG2_WRAPPER"; do
    rc=0
    stop_pid "$w" INT 15 || rc=$?
    ((rc == 0)) || log "warning: a tidegate proxy exited with status $rc"
done
log "anchors.sh stop"
timeout 60 "$ANCHORS/anchors.sh" stop --dir "$ANCHORS_DIR" >"$RAW/anchors_stop.txt" 2>&1 ||
    log "warning: anchors.sh stop failed (see $RAW/anchors_stop.txt)"
ANCHORS_STARTED=0

# ---- report
{
    echo "# Proxy overhead: tidegate next to nginx and HAProxy"
    echo
    echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ); machine: $MACHINE"
    echo "- backends: ${#PORTS[@]} nginx fast backends (\`return 200 \"hello\\n\"\`, 1 worker each) on 127.0.0.1:${BACKEND_PORTS//,/, }"
    echo "- proxies, all round robin over those backends with keep-alive backend connections:"
    echo "  haproxy (1 thread) :$HAPROXY_PORT, nginx (1 worker) :$NGINX_PORT,"
    echo "  \`tidegate proxy --workers 1\` :$TIDEGATE_PORT, \`tidegate proxy --workers 2\` :$TIDEGATE_W2_PORT (no --log-csv)"
    echo "- throughput and p99: \`compare.sh\` (anchors), \`wrk -t1 -c$CONNECTIONS -d$DURATION --latency\`, $REPS reps interleaved, medians; ratios vs haproxy"
    echo "- CPU: utime+stime from /proc/PID/stat around \`wrk -t1 -c$CONNECTIONS -d$CPU_DURATION\`, $CPU_REPS reps interleaved, median of per-run (CPU time / wrk requests); CLK_TCK $CLK_TCK"
    echo
    echo "| proxy | req/s (median) | p99 ms (median) | req/s ratio vs haproxy | p99 ratio vs haproxy | wrk errors | CPU us/req | user us/req | sys us/req | req/s in CPU runs |"
    echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    for n in "${NAMES[@]}"; do
        # shellcheck disable=SC2046  # word splitting of the column values is intended
        printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$n" \
            "$(summary_field "$n" req_s)" "$(fmt "$(summary_field "$n" p99_ms)" 2)" \
            "$(fmt "$(summary_field "$n" rps_ratio)" 3)" "$(fmt "$(summary_field "$n" p99_ratio)" 2)" \
            "$(summary_field "$n" errors)" \
            "$(fmt "$(median $(cpu_col "$n" cpu_us_per_req))" 1)" \
            "$(fmt "$(median $(cpu_col "$n" user_us_per_req))" 1)" \
            "$(fmt "$(median $(cpu_col "$n" sys_us_per_req))" 1)" \
            "$(fmt "$(median $(cpu_col "$n" req_s))" 0)"
    done
    echo
    echo "Processes measured for CPU:"
    for n in "${NAMES[@]}"; do echo "- $n: ${PROC_DESC[$n]}"; done
    echo
    echo "## compare.sh output"
    echo
    echo '```'
    cat "$RAW/compare.txt"
    echo '```'
    echo
    echo "## CPU runs (us of CPU per request, per run)"
    echo
    echo "| rep | proxy | requests | req/s | utime ticks | stime ticks | CPU us/req | user us/req | sys us/req | errors |"
    echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    awk -F'\t' 'NR > 1 {printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $4, $5, $6, $7, $8, $9, $10, $11}' "$CPU_TSV"
    echo
    echo "wrk, the proxies and the backends share the machine's CPUs; the load average is in the header."
    echo "Only ratios within this one run mean anything (see the anchors README)."
    echo "The CPU columns count only the proxy process (all its threads), not wrk or the backends."
    echo
    echo "## Proxy logs"
    echo
    for n in tidegate tidegate_w2; do
        echo "- $n: $(grep -cE 'WARN|ERROR|panick' "$RAW/$n.log" || true) WARN/ERROR lines"
        grep -E '^tidegate proxy: ' "$RAW/$n.log" | sed "s/^/  - \`/; s/\$/\`/" || true
    done
    if grep -qE 'WARN|ERROR|panick' "$RAW/tidegate.log" "$RAW/tidegate_w2.log"; then
        echo
        echo '```'
        grep -hE 'WARN|ERROR|panick' "$RAW/tidegate.log" "$RAW/tidegate_w2.log" | head -n 50
        echo '```'
    fi
} >"$REPORT"
cat "$REPORT"
log "report: $REPORT; raw: $RAW/"
