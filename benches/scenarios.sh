#!/usr/bin/env bash
# benches/scenarios.sh: the routing scenario suite. Every routing policy in
# front of the same simulated backends, in five situations:
#
#   1  seed          backends A, B, C (the seed's profiles); wrk -t4 -c100;
#                    --slo-ms 205
#   2  capacity      three backends `--profile 0 --capacity 4|8|16
#                    --service-ms 20` (200, 400, 800 req/s); wrk -t4 -c40
#   3  slow phase    three 20 ms backends; one is 10x slower (200 ms) from
#                    T1 = DURATION/3 to T2 = 2*DURATION/3, then recovers
#   4  killed        three 20 ms backends; one is SIGKILLed at T1 and
#                    restarted on the same port at T2
#   5  black hole    three 20 ms backends plus one `--fail hang`; proxy
#                    --backend-timeout 2s
#   fastfail         three 20 ms backends, one `--fail status:503:0.5` (half
#                    its answers are 503s, after its usual 20 ms); wrk -t4
#                    -c40. Reports
#                    the share of 5xx client responses and req/s against
#                    the baseline (the same backends without the fault)
#   identical        three identical `--profile $ID_PROFILE` (10 ms) backends,
#                    no fault, one run per wrk -c in ID_CONNS (1 4 40), no
#                    --slo-ms (T follows the backends' p95, as by default):
#                    each backend's share of the CSV rows, PASS if none
#                    gets more than ID_MAX_PCT (47 %, 1.4x a fair third;
#                    issue 12: tail-budget used to herd onto one)
#   baseline         three 20 ms backends, no fault: the reference for the
#                    p99 ratios of 3, 4 and 5 and fastfail's req/s ratio
#                    (run when any of them is)
#
# For every scenario and every policy: start fresh backends (so every run
# starts equal), start `tidegate proxy --policy P --workers $WORKERS
# --log-csv FILE --slo-ms D`, run wrk (under timeout) and do the scenario's
# fault on schedule, SIGINT the proxy and wait (it drains and writes every
# CSV row), stop the backends. benches/scenarios_report.py then computes the
# tables from the CSVs and wrk outputs (seed_report.py's method).
#
# Scenario 3 needs a slow phase. When `tidegate backend --help` lists
# `--slow`, the slow backend is started with `--slow 10xAFTER+FOR` (timed
# from its start; the script starts wrk a fixed LEAD after it). Otherwise the
# slow backend is restarted: at T1 killed (SIGKILL, the quickest stop) and
# started again with profile 200 on the same port, at T2 killed and started
# with profile 20. Each restart leaves the port closed for ~0.1-0.3 s and
# resets the proxy's connections to it, so this method adds connect failures
# and retries, and usually an outlier ejection (5 consecutive failures) of
# the slow backend right at T1 and T2, which a pure slowdown would not
# cause: with it, the slow backend's share in the slow phase and right after
# T2 measures the ejection as much as the policy.
# SLOW_METHOD=restart forces it; SLOW_METHOD=flag insists on --slow.
#
# Policies the binary rejects at start-up (`--policy P` exits with an error)
# are skipped with a note in the report; the check runs once, up front.
#
# Capacity anchors (issue 10). In scenario 2 each run of POLICIES is
# followed by the HAProxy anchors in ANCHORS, on fresh backends as well:
#   haproxy-leastconn  HAProxy `balance leastconn`, no server limits
#   haproxy-maxconn    the same with `maxconn 4|8|16` per server: the true
#                      capacities, set by hand (the issue's target anchor)
# HAProxy runs as ../shared/anchors/anchors.sh runs it (same global and
# defaults sections: keep-alive, `http-reuse always`, `nbthread
# $HAP_THREADS`), in the foreground (`-db`) under `timeout` like every
# server here, plus `timeout queue 5s` (tidegate's --queue-timeout default).
# The pseudo-policy `maxconn` is tidegate with the same configured limits:
# `--policy $MAXCONN_POLICY --backend ADDR,maxconn=C` (scenario 2 only;
# skipped elsewhere, and skipped with a note when the binary rejects the
# `,maxconn=N` suffix). benches/capacity_report.py then prints every
# scenario-2 run's wrk req/s and p99 with ratios against haproxy-maxconn and
# the targets (adaptive: p99 <= 1.1x, req/s >= 0.97x; maxconn: p99 <=
# 1.05x), and scenario 1's requests queued from /metrics
# (`tidegate_queued_total` or the `tidegate_queue_*_total` entry counters;
# n/a without them).
#
# Environment (defaults in brackets):
#   DURATION        wrk duration of every run [30s]; scenarios 3-5 want
#                   >= 30s (their fault times are fractions of it)
#   POLICIES        ["round-robin sma ewma least-conn p2c peak-ewma
#                    predictive tail-budget adaptive maxconn"]
#   ANCHORS         scenario 2's HAProxy anchors ["haproxy-leastconn
#                   haproxy-maxconn"]; "" for none
#   MAXCONN_POLICY  the policy behind the `maxconn` pseudo-policy
#                   [least-conn: like HAProxy's leastconn]
#   HAP_THREADS     HAProxy nbthread [1, as in ../shared/anchors]
#   HAP_PORT        HAProxy's listen port [PROXY_PORT]
#   SCENARIOS       which scenarios, in order ["1 2 3 4 5 fastfail
#                   identical"]; the
#                   baseline runs (first) when 3, 4, 5 or fastfail is among
#                   them. E.g. SCENARIOS=fastfail POLICIES="tail-budget
#                   round-robin peak-ewma" DURATION=15s benches/scenarios.sh
#   FAIL_SPEC       fastfail's fault [status:503:0.5]
#   ID_CONNS        identical's wrk -c values, one run each [1 4 40]
#   ID_PROFILE      identical's backend --profile [10]
#   ID_MAX_PCT      identical's pass mark: most % of rows per backend [47]
#   PROXY_EXTRA     more proxy arguments for every run, e.g. "--eject-after
#                   0" to see a policy without outlier ejection []
#   WORKERS         proxy --workers [2]
#   THREADS         wrk -t [4] (at most -c: identical -c1 runs -t1)
#   CONNS_1         wrk -c of scenario 1 [100]
#   CONNS           wrk -c of the other scenarios [40]
#   WRK_TIMEOUT     wrk --timeout [10s] (wrk's default, 2 s, would count
#                   scenario 5's 2 s backend timeouts as socket errors)
#   SLO_1           --slo-ms of scenario 1 [205]
#   SLO_2           --slo-ms of scenario 2 [100]
#   SLO_F           --slo-ms of 3, 4, 5 and the baseline [50]
#   SLOW_FACTOR     scenario 3's slowdown [10]
#   SLOW_METHOD     auto | flag | restart [auto]
#   HANG_TIMEOUT    scenario 5's --backend-timeout [2s]
#   LEAD            seconds from starting the backends to starting wrk in
#                   scenario 3 with --slow [3]
#   BASE_PORT       backends on BASE_PORT .. BASE_PORT+3 [18481]
#   PROXY_PORT      [18490]
#   PAUSE           seconds between runs [1]
#   TIDEGATE_BIN    use this executable instead of building
#   OUT_DIR         [bench-out]
#
# Writes bench-out/scenarios.md (fastfail's table is also printed on its
# own at the end); raw CSVs, wrk outputs and logs in
# bench-out/scenarios/. Runtime: (#scenarios + 1) x #policies x
# (DURATION + ~2 s); with DURATION=30s and 3 policies ~10 min.

# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION="${DURATION:-30s}"
POLICIES="${POLICIES:-round-robin sma ewma least-conn p2c peak-ewma predictive tail-budget adaptive maxconn}"
ANCHORS="${ANCHORS-haproxy-leastconn haproxy-maxconn}"
MAXCONN_POLICY="${MAXCONN_POLICY:-least-conn}"
HAP_THREADS="${HAP_THREADS:-1}"
SCENARIOS="${SCENARIOS:-1 2 3 4 5 fastfail identical}"
FAIL_SPEC="${FAIL_SPEC:-status:503:0.5}"
ID_CONNS="${ID_CONNS:-1 4 40}"
ID_PROFILE="${ID_PROFILE:-10}"
ID_MAX_PCT="${ID_MAX_PCT:-47}"
export ID_MAX_PCT # read by scenarios_report.py
read -r -a PROXY_EXTRA_ARGS <<<"${PROXY_EXTRA:-}"
WORKERS="${WORKERS:-2}"
THREADS="${THREADS:-4}"
CONNS_1="${CONNS_1:-100}"
CONNS="${CONNS:-40}"
WRK_TIMEOUT="${WRK_TIMEOUT:-10s}"
SLO_1="${SLO_1:-205}"
SLO_2="${SLO_2:-100}"
SLO_F="${SLO_F:-50}"
SLOW_FACTOR="${SLOW_FACTOR:-10}"
SLOW_METHOD="${SLOW_METHOD:-auto}"
HANG_TIMEOUT="${HANG_TIMEOUT:-2s}"
LEAD="${LEAD:-3}"
BASE_PORT="${BASE_PORT:-18481}"
PROXY_PORT="${PROXY_PORT:-18490}"
HAP_PORT="${HAP_PORT:-$PROXY_PORT}"
ADMIN_PORT="${ADMIN_PORT:-$((PROXY_PORT + 1))}"
PAUSE="${PAUSE:-1}"

command -v wrk >/dev/null 2>&1 || die "wrk is not installed (apt-get install wrk)"
command -v python3 >/dev/null 2>&1 || die "python3 is needed for the report"

DURATION_S="$(dur_s "$DURATION")"
((DURATION_S >= 3)) || die "DURATION must be at least 3s"
for s in $SCENARIOS; do
    [[ "$s" =~ ^([1-5]|fastfail|identical)$ ]] || die "bad scenario '$s' in SCENARIOS (1-5, fastfail, identical)"
done
[[ "$SLOW_METHOD" =~ ^(auto|flag|restart)$ ]] || die "SLOW_METHOD is auto, flag or restart"
for a in $ANCHORS; do
    [[ "$a" =~ ^haproxy-(leastconn|maxconn)$ ]] || die "bad anchor '$a' in ANCHORS (haproxy-leastconn, haproxy-maxconn)"
done
# Scenario 2's capacities, in backend order (the maxconn runs use them).
CAP_SLOTS=(4 8 16)

# Fault times, seconds after wrk starts (fractions of DURATION).
T1="$(awk -v d="$DURATION_S" 'BEGIN {printf "%.3f", d / 3}')"
T2="$(awk -v d="$DURATION_S" 'BEGIN {printf "%.3f", 2 * d / 3}')"

# ---------------------------------------------------------------- helpers

now() { date +%s.%N; }

# sleep_until EPOCH: sleeps (interruptibly) until that time; at once if past.
sleep_until() {
    local d
    d="$(awk -v t="$1" -v n="$(now)" 'BEGIN {d = t - n; if (d < 0) d = 0; printf "%.3f", d}')"
    sleep "$d" &
    wait $! || true
}

# add EPOCH SECONDS -> EPOCH
add() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.6f", a + b}'; }

# try_start_server LOGFILE CMD...: start_server that fails softly. Returns 1
# (and leaves nothing running) if the process exits before listening or does
# not listen within 20 s. Sets SERVER_PID, SERVER_REAL_PID. The port is that
# of CMD's --listen, or TRY_PORT when set (HAProxy has no --listen).
try_start_server() {
    local logfile="$1"
    shift
    local addr="" prev="" a port i
    for a in "$@"; do
        if [[ "$prev" == --listen ]]; then addr="$a"; fi
        prev="$a"
    done
    port="${TRY_PORT:-$(addr_port "$addr")}"
    if port_listening "$port"; then
        die "port $port is already in use by another process (see BASE_PORT / PROXY_PORT)"
    fi
    timeout --signal=INT --kill-after=10 "$SERVER_TIMEOUT" "$@" >"$logfile" 2>&1 &
    SERVER_PID=$!
    BENCH_PIDS+=("$SERVER_PID")
    SERVER_REAL_PID=""
    for ((i = 0; i < 200; i++)); do
        if ! pid_alive "$SERVER_PID"; then
            wait "$SERVER_PID" 2>/dev/null || true
            _forget_pid "$SERVER_PID"
            return 1
        fi
        if [[ -z "$SERVER_REAL_PID" ]]; then
            SERVER_REAL_PID="$(pgrep -P "$SERVER_PID" 2>/dev/null | head -n 1 || true)"
        fi
        if [[ -n "$SERVER_REAL_PID" ]] && port_listening "$port"; then
            return 0
        fi
        sleep 0.1
    done
    stop_pid "$SERVER_PID" INT 5 || true
    return 1
}


raise_nofile
build_tidegate

RAW="$OUT_DIR/scenarios"
mkdir -p "$RAW"
rm -f "$RAW"/*.csv "$RAW"/*.wrk.txt "$RAW"/*.log "$RAW"/runs.tsv "$RAW"/meta.txt "$RAW"/skipped.tsv \
    "$RAW"/anchors.tsv "$RAW"/*.haproxy.cfg "$RAW"/*.metrics.txt
REPORT="$OUT_DIR/scenarios.md"

# ---------------------------------------------------------------- backends

# Per backend name: wrapper PID, real PID, port, log files (comma-separated).
declare -A BK_WRAP=() BK_REAL=() BK_PORT=() BK_LOGS=()
BK_ORDER=()

# start_backend TAG NAME PORT ARGS...: `tidegate backend --listen
# 127.0.0.1:PORT --name NAME ARGS...`, log RAW/TAG.backend-NAME[.N].log.
start_backend() {
    local tag="$1" name="$2" port="$3" logf n=1
    shift 3
    logf="$tag.backend-$name.log"
    while [[ -e "$RAW/$logf" && ",${BK_LOGS[$name]:-}," == *",$logf,"* ]]; do
        n=$((n + 1))
        logf="$tag.backend-$name.$n.log"
    done
    start_server "$RAW/$logf" "$TIDEGATE_BIN" backend --listen "127.0.0.1:$port" --name "$name" "$@"
    BK_WRAP[$name]="$SERVER_PID"
    BK_REAL[$name]="$SERVER_REAL_PID"
    BK_PORT[$name]="$port"
    BK_LOGS[$name]="${BK_LOGS[$name]:+${BK_LOGS[$name]},}$logf"
    if [[ " ${BK_ORDER[*]-} " != *" $name "* ]]; then BK_ORDER+=("$name"); fi
}

# stop_backend NAME [SIGNAL]: SIGINT (graceful) by default; KILL is sent to
# the backend process itself (a crash: the kernel resets its connections),
# then the timeout wrapper is collected.
stop_backend() {
    local name="$1" sig="${2:-INT}"
    if [[ "$sig" == KILL && -n "${BK_REAL[$name]:-}" ]]; then
        kill -s KILL "${BK_REAL[$name]}" 2>/dev/null || true
        stop_pid "${BK_WRAP[$name]}" INT 5 || true
    else
        stop_pid "${BK_WRAP[$name]}" "$sig" 10 || true
    fi
    BK_WRAP[$name]=""
    BK_REAL[$name]=""
}

stop_all_backends() {
    local name
    for name in "${BK_ORDER[@]-}"; do
        if [[ -n "$name" && -n "${BK_WRAP[$name]:-}" ]]; then stop_backend "$name"; fi
    done
    BK_ORDER=()
    BK_WRAP=() BK_REAL=() BK_PORT=() BK_LOGS=()
}

backends_spec() {
    local name out=""
    for name in "${BK_ORDER[@]}"; do out+="$name=${BK_PORT[$name]} "; done
    echo "${out% }"
}

backend_logs_spec() {
    local name out=""
    for name in "${BK_ORDER[@]}"; do out+="$name=${BK_LOGS[$name]} "; done
    echo "${out% }"
}

# ---------------------------------------------------------------- wrk

# start_wrk OUTFILE CONNS [PORT]: wrk in the background (under timeout)
# against 127.0.0.1:PORT (default PROXY_PORT); sets WRK_PID and WRK_T0.
start_wrk() {
    local out="$1" conns="$2" wport="${3:-$PROXY_PORT}"
    # wrk needs at least one connection per thread.
    local threads=$((conns < THREADS ? conns : THREADS))
    WRK_T0="$(now)"
    timeout --signal=INT --kill-after=10 $((DURATION_S + 30)) \
        wrk -t"$threads" -c"$conns" -d"$DURATION" --timeout "$WRK_TIMEOUT" --latency \
        "http://127.0.0.1:$wport/" >"$out" 2>&1 &
    WRK_PID=$!
    BENCH_PIDS+=("$WRK_PID")
}

# wait_wrk: waits for it; sets WRK_RC and WRK_T1.
wait_wrk() {
    WRK_RC=0
    wait "$WRK_PID" || WRK_RC=$?
    _forget_pid "$WRK_PID"
    WRK_T1="$(now)"
    ((WRK_RC == 0)) || log "warning: wrk exited with $WRK_RC"
}

# ---------------------------------------------------------------- scenario 2

# start_capacity_backends TAG: scenario 2's backends, `--capacity C
# --service-ms 20` for each C of CAP_SLOTS.
start_capacity_backends() {
    local i=0 c
    for c in "${CAP_SLOTS[@]}"; do
        start_backend "$1" "cap$c" "$(port $i)" --profile 0 --capacity "$c" --service-ms 20
        i=$((i + 1))
    done
}

# haproxy_cfg NAME: an HAProxy configuration for scenario 2's backends, as
# ../shared/anchors/anchors.sh writes it (global + defaults), with
# `balance leastconn`; NAME haproxy-maxconn adds `maxconn C` per server.
haproxy_cfg() {
    local name="$1" i=0 n lim nofile
    nofile="$(ulimit -n)"
    [[ "$nofile" == unlimited ]] && nofile=1048576
    cat <<CFG
global
    nbthread $HAP_THREADS
    maxconn $(((nofile - 100) / 2 < 9000 ? (nofile - 100) / 2 : 9000))

defaults
    mode http
    timeout connect 5s
    timeout client  60s
    timeout server  60s
    timeout queue   5s
    option http-keep-alive
    http-reuse always

frontend fe
    bind 127.0.0.1:$HAP_PORT
    default_backend be

backend be
    balance leastconn
CFG
    for n in "${BK_ORDER[@]}"; do
        lim=""
        if [[ "$name" == haproxy-maxconn ]]; then lim=" maxconn ${CAP_SLOTS[$i]}"; fi
        echo "    server b$((i + 1)) 127.0.0.1:${BK_PORT[$n]}$lim"
        i=$((i + 1))
    done
}

# run_anchor NAME: scenario 2 through HAProxy (fresh backends, wrk like the
# policies' runs); one row in anchors.tsv.
run_anchor() {
    local name="$1" key="s2-$1" rc=0 hpid
    log "scenario 2, anchor $name"
    start_capacity_backends "$key"
    haproxy_cfg "$name" >"$RAW/$key.haproxy.cfg"
    if ! haproxy -c -q -f "$RAW/$key.haproxy.cfg" >"$RAW/$key.proxy.log" 2>&1 ||
        ! TRY_PORT="$HAP_PORT" try_start_server "$RAW/$key.proxy.log" haproxy -db -f "$RAW/$key.haproxy.cfg"; then
        log "warning: HAProxy did not start (see $RAW/$key.proxy.log); anchor skipped"
        printf '2\t%s\t%s\t-\tnostart\n' "$name" "$key" >>"$RAW/anchors.tsv"
        stop_all_backends
        return 0
    fi
    hpid="$SERVER_PID"
    start_wrk "$RAW/$key.wrk.txt" "$CONNS" "$HAP_PORT"
    wait_wrk
    stop_pid "$hpid" INT 10 || rc=$?
    # HAProxy ends on SIGINT with 130 (a hard stop; its clients are gone).
    if ((rc == 130)); then rc=0; fi
    stop_all_backends
    log "  wrk: $(grep -E '^Requests/sec' "$RAW/$key.wrk.txt" | tr -s ' ' || echo 'no Requests/sec')"
    printf '2\t%s\t%s\t%s\t%s\n' "$name" "$key" "$key.wrk.txt" "$rc" >>"$RAW/anchors.tsv"
}

# ---------------------------------------------------------------- policies

# Which policies does this binary accept? Probe each once: start the proxy
# (backend: a port nobody listens on) and see whether it comes up.
SUPPORTED=()
printf 'policy\treason\n' >"$RAW/skipped.tsv"
for policy in $POLICIES; do
    # `maxconn` is tidegate with configured limits: probe the flag suffix.
    probe_backend="127.0.0.1:$BASE_PORT" probe_policy="$policy"
    if [[ "$policy" == maxconn ]]; then
        probe_backend="127.0.0.1:$BASE_PORT,maxconn=4" probe_policy="$MAXCONN_POLICY"
    fi
    if try_start_server "$RAW/probe-$policy.log" "$TIDEGATE_BIN" proxy --listen "127.0.0.1:$PROXY_PORT" \
        --backend "$probe_backend" --policy "$probe_policy" --workers 1; then
        stop_pid "$SERVER_PID" INT 10 || true
        SUPPORTED+=("$policy")
        rm -f "$RAW/probe-$policy.log"
    else
        reason="$(grep -m1 -iE 'error|invalid|unknown' "$RAW/probe-$policy.log" || head -n 1 "$RAW/probe-$policy.log" || true)"
        if [[ "$policy" == maxconn ]]; then
            reason="tidegate rejects --backend ADDR,maxconn=N (configured limits not in this build): ${reason:-the proxy did not start}"
        fi
        log "skipping policy $policy: ${reason:-the proxy did not start}"
        printf '%s\t%s\n' "$policy" "${reason:-the proxy did not start}" >>"$RAW/skipped.tsv"
    fi
done
((${#SUPPORTED[@]} > 0)) || die "the binary accepts none of POLICIES ($POLICIES)"
if [[ -n "${ANCHORS// /}" && " $SCENARIOS " == *" 2 "* ]] && ! command -v haproxy >/dev/null 2>&1; then
    log "skipping the HAProxy anchors: haproxy is not installed (../shared/anchors/anchors.sh install)"
    ANCHORS=""
fi
log "policies: ${SUPPORTED[*]}"

# Scenario 3's method.
HAS_SLOW=0
if "$TIDEGATE_BIN" backend --help 2>/dev/null | grep -q -- '--slow'; then HAS_SLOW=1; fi
case "$SLOW_METHOD" in
auto) if ((HAS_SLOW)); then SLOW_USE=flag; else SLOW_USE=restart; fi ;;
flag)
    ((HAS_SLOW)) || die "SLOW_METHOD=flag but \`tidegate backend --help\` has no --slow"
    SLOW_USE=flag
    ;;
restart) SLOW_USE=restart ;;
esac

RUN_SCEN=()
want_baseline=0
for s in $SCENARIOS; do
    if [[ "$s" == 3 || "$s" == 4 || "$s" == 5 || "$s" == fastfail ]]; then want_baseline=1; fi
done
if ((want_baseline)); then RUN_SCEN+=(base); fi
for s in $SCENARIOS; do
    if [[ "$s" == identical ]]; then
        for c in $ID_CONNS; do
            [[ "$c" =~ ^[1-9][0-9]*$ ]] || die "bad wrk -c '$c' in ID_CONNS"
            RUN_SCEN+=("identical-c$c")
        done
    else
        RUN_SCEN+=("$s")
    fi
done

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ); machine: $(describe_machine)"
    echo "wrk: $(wrk -v 2>&1 | head -n 1 || true); \`wrk -t$THREADS -c$CONNS_1\` (scenario 1) or \`-c$CONNS\` (the others), \`-d$DURATION --timeout $WRK_TIMEOUT --latency\`"
    echo "proxy: \`tidegate proxy --workers $WORKERS --policy P --log-csv FILE --slo-ms D${PROXY_EXTRA:+ $PROXY_EXTRA}\` on 127.0.0.1:$PROXY_PORT (other settings: defaults; scenario 5 adds \`--backend-timeout $HANG_TIMEOUT\`; identical has no \`--slo-ms\`)"
    echo "fault times: T1 = ${T1} s, T2 = ${T2} s after wrk starts (DURATION/3, 2*DURATION/3)"
    echo "scenario 3 method: $(if [[ "$SLOW_USE" == flag ]]; then echo "\`--slow ${SLOW_FACTOR}x@...\` on the slow backend"; else echo "restart (the binary has no --slow: the slow backend is restarted with profile $((20 * SLOW_FACTOR)) at T1 and with 20 at T2)"; fi)"
    echo "policies run: ${SUPPORTED[*]}"
    echo "scenario 2 anchors: ${ANCHORS:-none} (HAProxy $(haproxy -v 2>/dev/null | head -n 1 | awk '{print $3}' || echo '?'), nbthread $HAP_THREADS, balance leastconn; \`maxconn\`: --policy $MAXCONN_POLICY with --backend ADDR,maxconn=C)"
    echo "backends restarted for every run"
} >"$RAW/meta.txt"
printf 'scenario\tname\tkey\twrk\trc\n' >"$RAW/anchors.tsv"
printf 'scenario\tpolicy\tkey\tcsv\twrk\tproxy_log\tproxy_rc\tbackends\tbackend_logs\tfault\tt0\tt_end\tp1\tp2\tslo_ms\tnote\tload\n' >"$RAW/runs.tsv"

port() { echo $((BASE_PORT + $1)); }

# ---------------------------------------------------------------- runs

first=1
for scen in "${RUN_SCEN[@]}"; do
    for policy in "${SUPPORTED[@]}"; do
        ((first)) || sleep "$PAUSE"
        first=0
        key="s$scen-$policy"
        csv="$key.csv"
        rm -f "$RAW/$csv"
        fault="-" p1="-" p2="-" note="" conns="$CONNS" slo="$SLO_F"
        extra=()
        load="$(cut -d' ' -f1 /proc/loadavg)"
        if [[ "$policy" == maxconn && "$scen" != 2 ]]; then
            continue # configured limits only mean something with known capacities
        fi
        log "scenario $scen, policy $policy (load $load)"

        # Backends.
        t_b="$(now)"
        case "$scen" in
        1)
            conns="$CONNS_1" slo="$SLO_1"
            i=0
            for n in A B C; do
                start_backend "$key" "$n" "$(port $i)" --profile "$n"
                i=$((i + 1))
            done
            ;;
        2)
            slo="$SLO_2"
            start_capacity_backends "$key"
            ;;
        3)
            fault=slow
            if [[ "$SLOW_USE" == flag ]]; then
                after_ms="$(awk -v l="$LEAD" -v t="$T1" 'BEGIN {printf "%d", (l + t) * 1000}')"
                for_ms="$(awk -v a="$T1" -v b="$T2" 'BEGIN {printf "%d", (b - a) * 1000}')"
                t_b="$(now)"
                start_backend "$key" slow "$(port 0)" --profile 20 --slow "${SLOW_FACTOR}x@${after_ms}ms+${for_ms}ms"
                p1="$(add "$t_b" "$(awk -v m="$after_ms" 'BEGIN {print m / 1000}')")"
                p2="$(add "$p1" "$(awk -v m="$for_ms" 'BEGIN {print m / 1000}')")"
                note="--slow ${SLOW_FACTOR}x@${after_ms}ms+${for_ms}ms"
            else
                start_backend "$key" slow "$(port 0)" --profile 20
                note="restart"
            fi
            start_backend "$key" ok1 "$(port 1)" --profile 20
            start_backend "$key" ok2 "$(port 2)" --profile 20
            ;;
        4)
            fault=killed
            start_backend "$key" killed "$(port 0)" --profile 20
            start_backend "$key" ok1 "$(port 1)" --profile 20
            start_backend "$key" ok2 "$(port 2)" --profile 20
            note="SIGKILL at T1, restart at T2"
            ;;
        5)
            fault=hang
            start_backend "$key" hang "$(port 0)" --profile 20 --fail hang
            start_backend "$key" ok1 "$(port 1)" --profile 20
            start_backend "$key" ok2 "$(port 2)" --profile 20
            start_backend "$key" ok3 "$(port 3)" --profile 20
            extra=(--backend-timeout "$HANG_TIMEOUT")
            note="--backend-timeout $HANG_TIMEOUT"
            ;;
        fastfail)
            fault=fastfail
            start_backend "$key" fastfail "$(port 0)" --profile 20 --fail "$FAIL_SPEC"
            start_backend "$key" ok1 "$(port 1)" --profile 20
            start_backend "$key" ok2 "$(port 2)" --profile 20
            note="fastfail: --fail $FAIL_SPEC"
            ;;
        identical-c*)
            conns="${scen#identical-c}" slo=""
            for i in 0 1 2; do
                start_backend "$key" "id$((i + 1))" "$(port $i)" --profile "$ID_PROFILE"
            done
            note="wrk -c$conns, no --slo-ms"
            ;;
        base)
            start_backend "$key" ok1 "$(port 0)" --profile 20
            start_backend "$key" ok2 "$(port 1)" --profile 20
            start_backend "$key" ok3 "$(port 2)" --profile 20
            ;;
        esac

        # Proxy.
        pb=()
        run_policy="$policy" i=0
        for n in "${BK_ORDER[@]}"; do
            if [[ "$policy" == maxconn ]]; then
                pb+=(--backend "127.0.0.1:${BK_PORT[$n]},maxconn=${CAP_SLOTS[$i]}")
                run_policy="$MAXCONN_POLICY"
            else
                pb+=(--backend "127.0.0.1:${BK_PORT[$n]}")
            fi
            i=$((i + 1))
        done
        if [[ -n "$slo" ]]; then pb+=(--slo-ms "$slo"); fi
        if ! try_start_server "$RAW/$key.proxy.log" "$TIDEGATE_BIN" proxy --listen "127.0.0.1:$PROXY_PORT" \
            "${pb[@]}" --policy "$run_policy" --workers "$WORKERS" --log-csv "$RAW/$csv" \
            --admin "127.0.0.1:$ADMIN_PORT" "${extra[@]+"${extra[@]}"}" \
            "${PROXY_EXTRA_ARGS[@]+"${PROXY_EXTRA_ARGS[@]}"}"; then
            log "warning: the proxy did not start (see $RAW/$key.proxy.log); run skipped"
            printf '%s\t%s\t%s\t-\t-\t%s\tnostart\t%s\t%s\t%s\t-\t-\t-\t-\t%s\t%s\t%s\n' "$scen" "$policy" "$key" \
                "$key.proxy.log" "$(backends_spec)" "$(backend_logs_spec)" "$fault" "${slo:--}" "${note:--}" "$load" >>"$RAW/runs.tsv"
            stop_all_backends
            continue
        fi
        proxy_pid="$SERVER_PID"
        proxy_real="$SERVER_REAL_PID"

        # Load, and the fault on schedule.
        if [[ "$scen" == 3 && "$SLOW_USE" == flag ]]; then
            sleep_until "$(add "$t_b" "$LEAD")"
            late="$(awk -v t="$(now)" -v b="$t_b" -v l="$LEAD" 'BEGIN {print (t - b > l + 0.2) ? 1 : 0}')"
            ((late == 0)) || log "warning: wrk starts $(awk -v t="$(now)" -v b="$t_b" 'BEGIN {printf "%.1f", t - b}') s after the slow backend (LEAD $LEAD): the phase is earlier in the run"
        fi
        start_wrk "$RAW/$key.wrk.txt" "$conns"
        case "$scen" in
        3)
            if [[ "$SLOW_USE" == restart ]]; then
                sleep_until "$(add "$WRK_T0" "$T1")"
                p1="$(now)"
                stop_backend slow KILL
                start_backend "$key" slow "$(port 0)" --profile $((20 * SLOW_FACTOR))
                sleep_until "$(add "$WRK_T0" "$T2")"
                p2="$(now)"
                stop_backend slow KILL
                start_backend "$key" slow "$(port 0)" --profile 20
            fi
            ;;
        4)
            sleep_until "$(add "$WRK_T0" "$T1")"
            p1="$(now)"
            stop_backend killed KILL
            sleep_until "$(add "$WRK_T0" "$T2")"
            start_backend "$key" killed "$(port 0)" --profile 20
            p2="$(now)"
            ;;
        5 | base | 1 | 2 | fastfail | identical-c*)
            p1="$(add "$WRK_T0" "$T1")"
            p2="$(add "$WRK_T0" "$T2")"
            ;;
        esac
        wait_wrk
        # The policy's own view at the end of the run (estimates, weights,
        # predictive's R^2), from the admin endpoint.
        timeout 5 curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" >"$RAW/$key.metrics.txt" 2>/dev/null || true

        # SIGINT: the proxy drains (up to --drain-timeout, 10 s), writes the
        # CSV and prints its summary; stop_pid escalates after 30 s.
        proxy_rc=0
        stop_pid "$proxy_pid" INT 30 || proxy_rc=$?
        if ((proxy_rc != 0)); then
            log "warning: proxy (pid $proxy_real) exited with status $proxy_rc (see $RAW/$key.proxy.log)"
        fi
        bspec="$(backends_spec)"
        blogs="$(backend_logs_spec)"
        stop_all_backends

        log "  wrk: $(grep -E '^Requests/sec' "$RAW/$key.wrk.txt" | tr -s ' ' || echo 'no Requests/sec')" \
            "; CSV rows: $(($(wc -l <"$RAW/$csv" 2>/dev/null || echo 1) - 1))"
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$scen" "$policy" "$key" "$csv" \
            "$key.wrk.txt" "$key.proxy.log" "$proxy_rc" "$bspec" "$blogs" "$fault" "$WRK_T0" "$WRK_T1" \
            "$p1" "$p2" "${slo:--}" "${note:--}" "$load" >>"$RAW/runs.tsv"
    done
    if [[ "$scen" == 2 ]]; then
        for anchor in $ANCHORS; do
            sleep "$PAUSE"
            run_anchor "$anchor"
        done
    fi
done

python3 "$BENCH_DIR/scenarios_report.py" "$RAW" | tee "$REPORT"
python3 "$BENCH_DIR/capacity_report.py" "$RAW" | tee -a "$REPORT"
# Predictive's prediction quality (rolling R^2 per backend) at the end of
# each run, as scraped from /metrics.
{
    echo
    echo "## Predictive: rolling R^2 per backend at the end of each run"
    echo
    echo "| run | backend | R^2 |"
    echo "| --- | --- | --- |"
    for f in "$RAW"/*predictive*.metrics.txt; do
        [[ -e "$f" ]] || continue
        run="$(basename "$f" .metrics.txt)"
        grep -E '^tidegate_backend_r_squared\{' "$f" |
            sed -E 's/.*backend="([^"]*)".* ([^ ]+)$/\1 \2/' |
            while read -r b v; do printf '| %s | %s | %.3f |\n' "$run" "$b" "$v"; done
    done
} | tee -a "$REPORT"
if [[ " $SCENARIOS " == *" fastfail "* ]]; then
    echo
    log "fastfail (from $REPORT):"
    sed -n '/^## Fast failures/,/^<details>/p' "$REPORT" | sed '$d'
fi
if [[ " $SCENARIOS " == *" identical "* ]]; then
    echo
    log "identical (from $REPORT):"
    sed -n '/^## Identical backends/,/^identical: /p' "$REPORT"
fi
log "report: $REPORT; raw CSVs, wrk outputs and logs: $RAW/"
