# shellcheck shell=bash
# benches/lib.sh: helpers shared by the benchmark scripts. Source it:
#
#     source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# It sets `set -euo pipefail`, installs an EXIT/INT/TERM trap that stops every
# process started through `start_server` / `run_client_bg`, and raises the
# soft fd limit to the hard one (the client and the server each need one fd
# per connection).
#
# Environment it honours:
#   CARGO_TARGET_DIR        where cargo builds (default: cargo's own)
#   TIDEGATE_BIN, CLIENT_BIN, TOKIO_BIN
#                           use these executables instead of building
#   NO_BUILD=1              do not run cargo at all (the three *_BIN must be set)
#   SERVER_TIMEOUT          hard bound on any one server process, s (default 3600)
#   OUT_DIR                 where reports go (default: <repo>/bench-out)

set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$BENCH_DIR/.." && pwd)"
OUT_DIR="${OUT_DIR:-$REPO_ROOT/bench-out}"
SERVER_TIMEOUT="${SERVER_TIMEOUT:-3600}"
mkdir -p "$OUT_DIR"

# ---------------------------------------------------------------- logging

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
# dur_s 30s|2m|45 -> whole seconds.
dur_s() {
    [[ "$1" =~ ^([0-9]+)([smh]?)$ ]] || die "bad duration '$1' (use e.g. 30s, 2m)"
    local n="${BASH_REMATCH[1]}"
    case "${BASH_REMATCH[2]}" in
    '' | s) echo "$n" ;;
    m) echo $((n * 60)) ;;
    h) echo $((n * 3600)) ;;
    esac
}

die() {
    log "error: $*"
    exit 1
}

# ---------------------------------------------------------------- fd limit

raise_nofile() {
    local hard
    hard="$(ulimit -Hn)"
    if [[ "$hard" == unlimited ]]; then hard=1048576; fi
    ulimit -n "$hard" || log "warning: cannot raise ulimit -n to $hard"
    log "ulimit -n $(ulimit -n) (hard $(ulimit -Hn))"
}

# ---------------------------------------------------------------- build

# Prints the executable path of the artifact named $1 from cargo's JSON
# messages on stdin.
_cargo_executable() {
    local name="$1"
    if command -v jq >/dev/null 2>&1; then
        jq -r --arg n "$name" \
            'select(.reason == "compiler-artifact" and .target.name == $n and .executable != null) | .executable'
    else
        python3 -c '
import json, sys
name = sys.argv[1]
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == name and m.get("executable"):
        print(m["executable"])
' "$name"
    fi | tail -n 1
}

# _build VAR NAME CARGO-ARGS...: unless VAR is already set, runs `cargo
# CARGO-ARGS` in the repository and sets VAR to the executable of target NAME.
_build() {
    local var="$1" name="$2" json
    shift 2
    [[ -z "${!var:-}" ]] || return 0
    log "building $name (cargo $*)"
    json="$(cd "$REPO_ROOT" && cargo "$@" --message-format=json-render-diagnostics)" || die "cargo $* failed"
    printf -v "$var" '%s' "$(_cargo_executable "$name" <<<"$json")"
}

# Builds `tidegate` (release) unless TIDEGATE_BIN is set; sets TIDEGATE_BIN.
build_tidegate() {
    _build TIDEGATE_BIN tidegate build --release --bin tidegate
    [[ -n "$TIDEGATE_BIN" && -x "$TIDEGATE_BIN" ]] || die "no executable at '$TIDEGATE_BIN'"
    log "tidegate: $TIDEGATE_BIN"
}

# run_bounded SECONDS OUTFILE CMD...: runs CMD under `timeout` (SIGINT, KILL
# 10 s later) in the background, stdout+stderr to OUTFILE, and waits for it;
# a background job + `wait`, so that an INT/TERM to this script runs the trap
# at once (which stops it by PID). Sets RUN_RC; never fails the script.
# shellcheck disable=SC2034 # RUN_RC is read by the calling scripts.
run_bounded() {
    local secs="$1" out="$2" pid
    shift 2
    RUN_RC=0
    timeout --signal=INT --kill-after=10 "$secs" "$@" >"$out" 2>&1 &
    pid=$!
    BENCH_PIDS+=("$pid")
    wait "$pid" || RUN_RC=$?
    _forget_pid "$pid"
}

# Builds (release) the server, the load client and the tokio baseline, once,
# and sets TIDEGATE_BIN, CLIENT_BIN, TOKIO_BIN. Any of them already set in the
# environment is kept as is.
build_all() {
    if [[ "${NO_BUILD:-0}" == 1 ]]; then
        : "${TIDEGATE_BIN:?NO_BUILD=1 needs TIDEGATE_BIN}" "${CLIENT_BIN:?NO_BUILD=1 needs CLIENT_BIN}" \
            "${TOKIO_BIN:?NO_BUILD=1 needs TOKIO_BIN}"
    fi
    cd "$REPO_ROOT"
    _build TIDEGATE_BIN tidegate build --release --bin tidegate
    _build CLIENT_BIN echo_client build --release --example echo_client
    _build TOKIO_BIN tokio_echo bench --no-run --bench tokio_echo
    local b
    for b in "$TIDEGATE_BIN" "$CLIENT_BIN" "$TOKIO_BIN"; do
        [[ -n "$b" && -x "$b" ]] || die "no executable at '$b'"
    done
    log "tidegate:    $TIDEGATE_BIN"
    log "echo_client: $CLIENT_BIN"
    log "tokio_echo:  $TOKIO_BIN"
    export TIDEGATE_BIN CLIENT_BIN TOKIO_BIN
}

# ---------------------------------------------------------------- processes

# PIDs this script started (the `timeout` wrappers); the trap stops them.
BENCH_PIDS=()

# Is there a process with this PID (and not a zombie)?
pid_alive() {
    local pid="$1" state
    [[ -r "/proc/$pid/stat" ]] || return 1
    state="$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" || return 1
    [[ -n "$state" && "$state" != Z ]]
}

# Sends $2 (default INT) to PID $1, then waits up to $3 s (default 15) for it
# to exit, escalating to TERM and then KILL. The PID must be a child of this
# shell. Prints nothing; returns the process's exit status (or 0 if unknown).
stop_pid() {
    local pid="$1" sig="${2:-INT}" grace="${3:-15}" i rc=0
    [[ -n "$pid" ]] || return 0
    if pid_alive "$pid"; then
        kill -s "$sig" "$pid" 2>/dev/null || true
        for ((i = 0; i < grace * 10; i++)); do
            pid_alive "$pid" || break
            sleep 0.1
        done
        if pid_alive "$pid"; then
            log "pid $pid still running ${grace}s after SIG$sig: sending TERM"
            kill -s TERM "$pid" 2>/dev/null || true
            for ((i = 0; i < 50; i++)); do
                pid_alive "$pid" || break
                sleep 0.1
            done
        fi
        if pid_alive "$pid"; then
            log "pid $pid still running: sending KILL"
            kill -s KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || rc=$?
    _forget_pid "$pid"
    return "$rc"
}

_forget_pid() {
    local p keep=()
    for p in "${BENCH_PIDS[@]}"; do
        [[ "$p" == "$1" ]] || keep+=("$p")
    done
    BENCH_PIDS=("${keep[@]+"${keep[@]}"}")
}

bench_cleanup() {
    local rc=$? p
    trap - EXIT INT TERM
    for p in "${BENCH_PIDS[@]+"${BENCH_PIDS[@]}"}"; do
        if pid_alive "$p"; then
            log "cleanup: stopping pid $p"
            stop_pid "$p" INT 5 || true
        fi
    done
    cg_drop_all
    # A script's scratch directory, if it set one.
    if [[ -n "${BENCH_TMP:-}" ]]; then rm -rf "$BENCH_TMP"; fi
    exit "$rc"
}
trap bench_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- cgroups

# CPU caps, the method of ../shared/anchors/capacity.sh: each capped process
# gets its own cgroup with a CFS quota of QUOTA cores per 10 ms period, so
# the proxy and not the load generator is the bottleneck. cgroup v1 (the
# cpu controller) or v2 (cpu.max). Needs root. The groups are named
# tidegate_bench_NAME_<script pid>; cg_drop_all (also called by the EXIT trap)
# moves their processes back to the root group and removes them.

# Period of the CFS quota, us: capacity.sh's value, short enough that a
# quarter core is not a 75 ms stall every 100 ms (the kernel default period).
CG_PERIOD=10000
CG_V="" CG_ROOT="" CG_MADE=()

# cg_init: finds the cpu controller; fails the script if there is none.
cg_init() {
    if [[ -d /sys/fs/cgroup/cpu && -f /sys/fs/cgroup/cpu/cgroup.procs ]]; then
        CG_V=1 CG_ROOT=/sys/fs/cgroup/cpu
    elif [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then
        CG_V=2 CG_ROOT=/sys/fs/cgroup
        grep -qw cpu "$CG_ROOT/cgroup.subtree_control" || echo +cpu >"$CG_ROOT/cgroup.subtree_control" ||
            die "cannot enable the cgroup v2 cpu controller (root needed)"
    else
        die "no usable cgroup cpu controller"
    fi
}

# cg_cap NAME QUOTA PID: puts PID (all its threads) in cgroup NAME, capped at
# QUOTA cores (e.g. 0.25).
cg_cap() {
    local name="$1" q="$2" pid="$3" g quota
    [[ -n "$CG_V" ]] || cg_init
    g="$CG_ROOT/tidegate_bench_${name}_$$"
    quota="$(awk -v q="$q" -v p="$CG_PERIOD" 'BEGIN {x = int(q * p); if (x < 1000) x = 1000; print x}')"
    if [[ ! -d "$g" ]]; then
        mkdir "$g" || die "cannot create cgroup $g (root needed)"
        CG_MADE+=("$g")
    fi
    if [[ "$CG_V" == 1 ]]; then
        echo "$CG_PERIOD" >"$g/cpu.cfs_period_us"
        echo "$quota" >"$g/cpu.cfs_quota_us"
    else
        echo "$quota $CG_PERIOD" >"$g/cpu.max"
    fi
    echo "$pid" >"$g/cgroup.procs" || die "cannot move pid $pid into $g"
}

# cg_drop_all: moves every process of our groups back to the root group and
# removes the groups.
cg_drop_all() {
    local g p
    for g in "${CG_MADE[@]+"${CG_MADE[@]}"}"; do
        [[ -d "$g" ]] || continue
        for p in $(cat "$g/cgroup.procs" 2>/dev/null); do echo "$p" >"$CG_ROOT/cgroup.procs" 2>/dev/null || true; done
        rmdir "$g" 2>/dev/null || log "warning: cannot remove cgroup $g"
    done
    CG_MADE=()
}

# ---------------------------------------------------------------- ports

# Is something listening on TCP port $1 (any local address)?
port_listening() {
    local port="$1"
    if command -v ss >/dev/null 2>&1; then
        [[ -n "$(ss -Hltn "sport = :$port" 2>/dev/null)" ]]
    else
        # /proc/net/tcp: local address column is HEX_IP:HEX_PORT, state 0A = LISTEN.
        local hex
        hex="$(printf '%04X' "$port")"
        awk -v p=":$hex" '$2 ~ p"$" && $4 == "0A" {found=1} END {exit !found}' /proc/net/tcp
    fi
}

# Port of an ip:port address.
addr_port() { echo "${1##*:}"; }

# ---------------------------------------------------------------- servers

# start_server LOGFILE CMD...
# Starts CMD in the background under `timeout` (SERVER_TIMEOUT s, SIGINT then
# KILL), stdout+stderr to LOGFILE, and waits until the port of its --listen
# address is listening (up to 20 s). Sets SERVER_PID (the timeout wrapper: stop
# it with stop_server; it forwards the signal) and SERVER_REAL_PID (the server
# process itself, for /proc). The listen address is taken from the argument
# after --listen.
start_server() {
    local logfile="$1"
    shift
    local addr="" prev="" a
    for a in "$@"; do
        if [[ "$prev" == --listen ]]; then addr="$a"; fi
        prev="$a"
    done
    [[ -n "$addr" ]] || die "start_server: command has no --listen ADDR"
    start_server_at "$addr" "$logfile" "$@"
}

# start_server_at ADDR LOGFILE CMD...: start_server for a command whose
# listen address is not a --listen argument (a config file, HAProxy); it
# waits for ADDR's port.
start_server_at() {
    local addr="$1" logfile="$2"
    shift 2
    local port
    port="$(addr_port "$addr")"
    if port_listening "$port"; then
        die "port $port is already in use by another process; pick another (see the script's *_PORT variables)"
    fi
    timeout --signal=INT --kill-after=10 "$SERVER_TIMEOUT" "$@" >"$logfile" 2>&1 &
    SERVER_PID=$!
    BENCH_PIDS+=("$SERVER_PID")
    local i
    SERVER_REAL_PID=""
    for ((i = 0; i < 200; i++)); do
        if ! pid_alive "$SERVER_PID"; then
            cat "$logfile" >&2 || true
            wait "$SERVER_PID" 2>/dev/null || true
            _forget_pid "$SERVER_PID"
            die "server exited during start: $*"
        fi
        if [[ -z "$SERVER_REAL_PID" ]]; then
            SERVER_REAL_PID="$(pgrep -P "$SERVER_PID" 2>/dev/null | head -n 1 || true)"
        fi
        if [[ -n "$SERVER_REAL_PID" ]] && port_listening "$port"; then
            log "server up on $addr (pid $SERVER_REAL_PID): $(basename "$1") ${*:2}"
            return 0
        fi
        sleep 0.1
    done
    cat "$logfile" >&2 || true
    stop_pid "$SERVER_PID" INT 5 || true
    die "server did not listen on $addr within 20 s"
}

# stop_server [SIGNAL]: stops the server started last by start_server (SIGINT
# by default) and waits for it. Sets SERVER_RC.
stop_server() {
    local sig="${1:-INT}"
    SERVER_RC=0
    stop_pid "$SERVER_PID" "$sig" 15 || SERVER_RC=$?
    SERVER_PID=""
    SERVER_REAL_PID=""
}

# The tidegate summary line ("tidegate echo: served ...") from a log file.
server_summary() {
    grep -E '^tidegate echo: served' "$1" | tail -n 1 || true
}

# ---------------------------------------------------------------- client

# run_client SECONDS LOGFILE ARGS...
# Runs the load client under `timeout SECONDS` (SIGINT, KILL 10 s later) in
# the foreground, output to LOGFILE, then parses its RESULT line (see
# parse_result). Sets CLIENT_RC (124 = timed out). Never fails the script.
run_client() {
    local secs="$1" logfile="$2"
    shift 2
    CLIENT_RC=0
    timeout --signal=INT --kill-after=10 "$secs" "$CLIENT_BIN" "$@" >"$logfile" 2>&1 &
    CLIENT_PID=$!
    BENCH_PIDS+=("$CLIENT_PID")
    wait "$CLIENT_PID" || CLIENT_RC=$?
    _forget_pid "$CLIENT_PID"
    CLIENT_PID=""
    parse_result "$logfile"
}

# run_client_bg SECONDS LOGFILE ARGS...: as run_client, but in the background;
# sets CLIENT_PID. Collect it with wait_client.
run_client_bg() {
    local secs="$1" logfile="$2"
    shift 2
    timeout --signal=INT --kill-after=10 "$secs" "$CLIENT_BIN" "$@" >"$logfile" 2>&1 &
    CLIENT_PID=$!
    CLIENT_LOG="$logfile"
    BENCH_PIDS+=("$CLIENT_PID")
}

# wait_client: waits for the client started by run_client_bg, sets CLIENT_RC
# and parses its RESULT line.
wait_client() {
    CLIENT_RC=0
    wait "$CLIENT_PID" || CLIENT_RC=$?
    _forget_pid "$CLIENT_PID"
    CLIENT_PID=""
    parse_result "$CLIENT_LOG"
}

# All RESULT keys the client prints; parse_result resets these to "".
RESULT_KEYS=(connections ok failed requests bytes elapsed_s msgs_per_s avg_duration_s
    avg_response_ms p50_ms p99_ms p999_ms max_ms refused timeout reset mismatch other)
# (Spelled out so that readers and shellcheck see where R_* come from.)
# shellcheck disable=SC2034
{
    R_connections="" R_ok="" R_failed="" R_requests="" R_bytes="" R_elapsed_s=""
    R_msgs_per_s="" R_avg_duration_s="" R_avg_response_ms="" R_p50_ms="" R_p99_ms=""
    R_p999_ms="" R_max_ms="" R_refused="" R_timeout="" R_reset="" R_mismatch="" R_other=""
    RESULT_LINE="" CLIENT_RC="" SERVER_RC=""
}

# parse_result FILE: reads the last line beginning with "RESULT " and sets
# R_<key>=<value> for each key=value pair on it (keys not on the line stay "").
# RESULT_LINE holds the line itself ("" if none).
parse_result() {
    local file="$1" k v kv
    for k in "${RESULT_KEYS[@]}"; do
        printf -v "R_$k" '%s' ""
    done
    RESULT_LINE="$(grep -E '^RESULT ' "$file" 2>/dev/null | tail -n 1 || true)"
    [[ -n "$RESULT_LINE" ]] || return 0
    for kv in ${RESULT_LINE#RESULT }; do
        k="${kv%%=*}"
        v="${kv#*=}"
        [[ "$k" =~ ^[A-Za-z_][A-Za-z0-9_]*$ && "$kv" == *=* ]] || continue
        printf -v "R_$k" '%s' "$v"
    done
}

# Errors of the last parsed RESULT as "refused=1 timeout=2" (non-zero only),
# or "-" when none; "no RESULT" if the client printed none.
result_errors() {
    if [[ -z "${RESULT_LINE:-}" ]]; then
        echo "no RESULT (exit ${CLIENT_RC:-?})"
        return
    fi
    local k v out=""
    for k in refused timeout reset mismatch other; do
        v="$(eval "echo \"\${R_$k:-}\"")"
        if [[ -n "$v" && "$v" != 0 ]]; then out+="$k=$v "; fi
    done
    out="${out% }"
    echo "${out:--}"
}

# ---------------------------------------------------------------- numbers

# median N...: the median of its numeric arguments (mean of the middle two
# for an even count); "-" when there are none. Non-numeric ones are ignored.
median() {
    printf '%s\n' "$@" | awk '/^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$/' | sort -g |
        awk '{a[NR] = $1} END {
            if (NR == 0) { print "-"; exit }
            if (NR % 2) m = a[(NR + 1) / 2]; else m = (a[NR / 2] + a[NR / 2 + 1]) / 2
            printf "%.6g\n", m
        }'
}

# fmt NUMBER DECIMALS: fixed-point, "-" passes through.
fmt() {
    if [[ "$1" =~ ^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$ ]]; then
        awk -v x="$1" -v d="$2" 'BEGIN {printf "%.*f\n", d, x}'
    else
        echo "${1:--}"
    fi
}

# ratio A B DECIMALS: A/B, or "-".
ratio() {
    awk -v a="$1" -v b="$2" -v d="${3:-2}" 'BEGIN {
        if (a ~ /^-?[0-9.eE+-]+$/ && b ~ /^-?[0-9.eE+-]+$/ && b + 0 != 0) printf "%.*f\n", d, a / b
        else print "-"
    }'
}

# ---------------------------------------------------------------- /proc

# rss_kb PID FIELD: FIELD (VmRSS, RssAnon, ...) of /proc/PID/status in kB.
rss_kb() {
    awk -v f="$2:" '$1 == f {print $2; found=1} END {if (!found) print "-"}' "/proc/$1/status" 2>/dev/null || echo "-"
}

# fd_count PID: open file descriptors of PID.
fd_count() {
    local n
    n="$(find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)" || n=0
    echo "$n"
}

# threads_of PID: number of threads.
threads_of() {
    awk '$1 == "Threads:" {print $2}' "/proc/$1/status" 2>/dev/null || echo "-"
}

# tcpext NAME: a TcpExt counter from /proc/net/netstat (e.g. ListenOverflows,
# SyncookiesSent). These count for the whole network namespace, so other
# programs' traffic shows up in them too.
tcpext() {
    awk -v f="$1" '$1 == "TcpExt:" {
        if (!n) { for (i = 2; i <= NF; i++) h[i] = $i; n = 1; next }
        for (i = 2; i <= NF; i++) if (h[i] == f) { print $i; exit }
    }' /proc/net/netstat 2>/dev/null || echo "-"
}

# listen_backlog PORT: the backlog of the socket listening on PORT, as the
# kernel has it (ss "Send-Q" of a listener), or "-".
listen_backlog() {
    local b
    b="$(ss -Hltn "sport = :$1" 2>/dev/null | awk 'NR == 1 {print $3}')" || true
    echo "${b:--}"
}

# sources_list K: "127.0.0.1,127.0.0.2,...,127.0.0.K".
sources_list() {
    local k="$1" i out=""
    for ((i = 1; i <= k; i++)); do out+="127.0.0.$i,"; done
    echo "${out%,}"
}

# describe_machine: one line for report headers.
describe_machine() {
    echo "$(nproc) CPUs, load average $(cut -d" " -f1-3 /proc/loadavg), $(uname -sr), $(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$REPO_ROOT" diff --quiet 2>/dev/null || echo '+dirty')"
}

# wrk_fields FILE: "socket_errors non2xx req_s p50 p99" from a wrk report.
wrk_fields() {
    awk '
        /Socket errors:/ { gsub(",", ""); errs = $4 + $6 + $8 + $10 }
        /Non-2xx or 3xx responses:/ { non2xx = $5 }
        /Requests\/sec:/ { rps = $2 }
        $1 == "50%" { p50 = $2 }
        $1 == "99%" { p99 = $2 }
        END { printf "%d %d %s %s %s\n", errs, non2xx, rps, p50, p99 }
    ' "$1"
}

# wrk_bg OUTFILE: wrk -tTHREADS -cCONNECTIONS -dDURATION --latency against
# 127.0.0.1:PROXY_PORT in the background (bounded by `timeout`, secs + 30 s),
# output to OUTFILE; sets WRK_PID.
wrk_bg() {
    timeout --signal=INT --kill-after=10 "$((secs + 30))" \
        wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency \
        "http://127.0.0.1:$PROXY_PORT/" >"$1" 2>&1 &
    WRK_PID=$!
    BENCH_PIDS+=("$WRK_PID")
}
