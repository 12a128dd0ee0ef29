#!/usr/bin/env bash
# benches/upgrade.sh: zero-downtime binary upgrade under load (issue 9 §6).
#
# `tidegate proxy --upgrade-socket SOCK` in front of one `tidegate backend
# --profile 0`, loaded with `wrk -t2 -c50 -d20s --latency`, twice:
#   1. baseline: no upgrade;
#   2. upgrade:  three upgrades in a row, UPGRADE_EVERY s apart from
#      UPGRADE_AT s into the run, each by the same command plus --takeover.
#      Each old process must exit 0 with its summary, and each new one
#      must be ready (its upgrade socket bound) before the next upgrade.
# Required: zero wrk socket errors and zero non-2xx responses in the upgrade
# run. Reported: both, and requests/s, p50 and p99 of both runs.
#
# Environment: TIDEGATE_BIN (skip the build), DURATION (20s), CONNECTIONS
# (50), THREADS (2), WORKERS (2), UPGRADES (3), UPGRADE_AT (4), UPGRADE_EVERY
# (5), PROXY_PORT (19490), BACKEND_PORT (19491), OUT_DIR.

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION="${DURATION:-20s}"
CONNECTIONS="${CONNECTIONS:-50}"
THREADS="${THREADS:-2}"
WORKERS="${WORKERS:-2}"
UPGRADES="${UPGRADES:-3}"
UPGRADE_AT="${UPGRADE_AT:-4}"
UPGRADE_EVERY="${UPGRADE_EVERY:-5}"
PROXY_PORT="${PROXY_PORT:-19490}"
BACKEND_PORT="${BACKEND_PORT:-19491}"
SOCK="${SOCK:-$OUT_DIR/upgrade.sock}"

command -v wrk >/dev/null 2>&1 || die "wrk is not installed (apt-get install wrk)"
secs="$(dur_s "$DURATION")"
((UPGRADE_AT + (UPGRADES - 1) * UPGRADE_EVERY < secs - 2)) ||
    die "the upgrades do not fit in $DURATION (UPGRADE_AT, UPGRADE_EVERY)"
raise_nofile
build_tidegate

PROXY_ARGS=(proxy --listen "127.0.0.1:$PROXY_PORT" --backend "127.0.0.1:$BACKEND_PORT"
    --workers "$WORKERS" --upgrade-socket "$SOCK" --drain-timeout 10s)

start_server "$OUT_DIR/upgrade.backend.log" "$TIDEGATE_BIN" backend \
    --listen "127.0.0.1:$BACKEND_PORT" --profile 0
BACKEND_PID="$SERVER_PID"

# start_proxy LOG [--takeover]: starts a proxy process (bounded by `timeout`)
# and sets PROXY_PID; waits until its upgrade socket is bound.
start_proxy() {
    local logfile="$1" i
    shift
    timeout --signal=INT --kill-after=10 "$SERVER_TIMEOUT" \
        "$TIDEGATE_BIN" "${PROXY_ARGS[@]}" "$@" >"$logfile" 2>&1 &
    PROXY_PID=$!
    BENCH_PIDS+=("$PROXY_PID")
    for ((i = 0; i < 100; i++)); do
        grep -q "upgrade socket listening on" "$logfile" && return 0
        pid_alive "$PROXY_PID" || break
        sleep 0.1
    done
    cat "$logfile" >&2
    die "the proxy ($*) did not get ready"
}


# ---------------------------------------------------------------- baseline
log "baseline: wrk -t$THREADS -c$CONNECTIONS -d$DURATION, no upgrade"
start_proxy "$OUT_DIR/upgrade.base.proxy.log"
wrk_bg "$OUT_DIR/upgrade.base.wrk"
wait "$WRK_PID" || die "wrk failed (baseline)"
_forget_pid "$WRK_PID"
stop_pid "$PROXY_PID" INT 15 || true

# ---------------------------------------------------------------- upgrades
log "upgrade run: the same load, $UPGRADES upgrades from ${UPGRADE_AT}s every ${UPGRADE_EVERY}s"
start_proxy "$OUT_DIR/upgrade.p0.log"
wrk_bg "$OUT_DIR/upgrade.upgrade.wrk"
started=$SECONDS
failures=0
for ((u = 1; u <= UPGRADES; u++)); do
    at=$((UPGRADE_AT + (u - 1) * UPGRADE_EVERY))
    while ((SECONDS - started < at)); do sleep 0.1; done
    old_pid="$PROXY_PID"
    old_log="$OUT_DIR/upgrade.p$((u - 1)).log"
    t0=$(date +%s.%N)
    start_proxy "$OUT_DIR/upgrade.p$u.log" --takeover
    ready=$(date +%s.%N)
    old_rc=0
    # The old process drains and exits by itself (bounded: --drain-timeout).
    for ((i = 0; i < 150; i++)); do pid_alive "$old_pid" || break; sleep 0.1; done
    stop_pid "$old_pid" INT 5 || old_rc=$?
    gone=$(date +%s.%N)
    if [[ "$old_rc" != 0 ]] || ! grep -q "^tidegate proxy: .* requests in" "$old_log"; then
        log "upgrade $u: the old process exited $old_rc without its summary"
        failures=$((failures + 1))
    fi
    log "$(awk -v u="$u" -v a="$t0" -v r="$ready" -v g="$gone" -v rc="$old_rc" 'BEGIN {
        printf "upgrade %d: new process ready in %.0f ms; old process exited %d after %.0f ms", u, (r - a) * 1000, rc, (g - a) * 1000 }')"
done
wait "$WRK_PID" || die "wrk failed (upgrade run)"
_forget_pid "$WRK_PID"
stop_pid "$PROXY_PID" INT 15 || true
stop_pid "$BACKEND_PID" INT 5 || true

read -r b_err b_non b_rps b_p50 b_p99 <<<"$(wrk_fields "$OUT_DIR/upgrade.base.wrk")"
read -r u_err u_non u_rps u_p50 u_p99 <<<"$(wrk_fields "$OUT_DIR/upgrade.upgrade.wrk")"
{
    echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency, proxy --workers $WORKERS, backend --profile 0"
    printf '%-26s %14s %8s %12s %10s %10s\n' run "socket errors" non-2xx "requests/s" p50 p99
    printf '%-26s %14s %8s %12s %10s %10s\n' "no upgrade" "$b_err" "$b_non" "$b_rps" "$b_p50" "$b_p99"
    printf '%-26s %14s %8s %12s %10s %10s\n' "$UPGRADES upgrades" "$u_err" "$u_non" "$u_rps" "$u_p50" "$u_p99"
} | tee "$OUT_DIR/upgrade.txt"
[[ "$failures" == 0 ]] || die "$failures upgrade(s) failed (see $OUT_DIR/upgrade.p*.log)"
[[ "$u_err" == 0 && "$u_non" == 0 ]] ||
    die "required: zero socket errors and zero non-2xx during the upgrades (see $OUT_DIR/upgrade.upgrade.wrk)"
log "PASS: $UPGRADES upgrades under load, no socket error, no non-2xx response"
