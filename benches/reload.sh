#!/usr/bin/env bash
# benches/reload.sh: configuration reloads under load (issue 9 §2).
#
# `tidegate proxy --config FILE` in front of two `tidegate backend --profile
# 0` (a third one is added and removed), loaded with `wrk -t2 -c50 -d20s
# --latency`, twice:
#   1. baseline: no reload;
#   2. reloads:  RELOADS SIGHUPs, RELOAD_EVERY s apart from RELOAD_AT s into
#      the run, alternately adding and removing the third backend.
# After each reload the script checks, from the proxy's access log (csv,
# on in both runs; each line names its backend):
#   - an added backend takes traffic within 1 s;
#   - a removed backend takes no new request after the reload was logged.
# Required: zero wrk socket errors and zero non-2xx responses in the reload
# run, and both checks after every reload. Reported: both runs' requests/s,
# p50 and p99 (a reload must not add latency to requests in flight).
#
# BASE_BACKENDS=3 runs the baseline on all three backends (the reload run
# alternates between two and three, and each backend process takes CPU on
# this 2-core machine). CHECKS=0 skips the per-reload checks (they grep the growing access log,
# which competes for the CPU): the run then measures latency alone.
#
# Environment: TIDEGATE_BIN (skip the build), DURATION (20s), CONNECTIONS
# (50), THREADS (2), WORKERS (2), RELOADS (10), RELOAD_AT (2),
# RELOAD_EVERY (1.5), PROXY_PORT (19590), BACKEND_PORTS
# ("19591 19592 19593"), OUT_DIR.

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION="${DURATION:-20s}"
CONNECTIONS="${CONNECTIONS:-50}"
THREADS="${THREADS:-2}"
WORKERS="${WORKERS:-2}"
RELOADS="${RELOADS:-10}"
RELOAD_AT="${RELOAD_AT:-2}"
RELOAD_EVERY="${RELOAD_EVERY:-1.5}"
CHECKS="${CHECKS:-1}"
BASE_BACKENDS="${BASE_BACKENDS:-2}"
PROXY_PORT="${PROXY_PORT:-19590}"
read -r -a PORTS <<<"${BACKEND_PORTS:-19591 19592 19593}"
CONF="$OUT_DIR/reload.toml"
ALOG="$OUT_DIR/reload.access.csv"

command -v wrk >/dev/null 2>&1 || die "wrk is not installed (apt-get install wrk)"
secs="$(dur_s "$DURATION")"
awk -v a="$RELOAD_AT" -v e="$RELOAD_EVERY" -v n="$RELOADS" -v s="$secs" \
    'BEGIN { exit !(a + (n - 1) * e < s - 2) }' ||
    die "the reloads do not fit in $DURATION (RELOAD_AT, RELOAD_EVERY)"
raise_nofile
build_tidegate

# write_config N: the configuration with the first N backends.
write_config() {
    {
        echo "listen = \"127.0.0.1:$PROXY_PORT\""
        echo "workers = $WORKERS"
        echo "policy = \"round-robin\""
        echo "access_log = \"$ALOG\""
        echo "access_log_format = \"csv\""
        local i
        for ((i = 0; i < $1; i++)); do
            printf '\n[[backend]]\naddress = "127.0.0.1:%s"\nname = "b%d"\n' "${PORTS[$i]}" "$i"
        done
    } >"$CONF.tmp"
    mv "$CONF.tmp" "$CONF"
}

for i in 0 1 2; do
    start_server "$OUT_DIR/reload.backend$i.log" "$TIDEGATE_BIN" backend \
        --listen "127.0.0.1:${PORTS[$i]}" --profile 0 --name "b$i"
    BACKEND_PIDS[$i]="$SERVER_PID"
done

# served PORT: requests the access log shows sent to the backend on PORT.
served() {
    grep -c ",http://127.0.0.1:$1," "$ALOG" || true
}

# start_proxy LOG: starts the proxy (bounded by `timeout`), sets PROXY_PID
# (the timeout wrapper, stopped with stop_pid) and REAL_PID (the proxy, for
# SIGHUP: timeout would relay a HUP as a stop and kill it after its grace).
start_proxy() {
    rm -f "$ALOG"
    write_config "${2:-2}"
    timeout --signal=INT --kill-after=10 "$SERVER_TIMEOUT" \
        "$TIDEGATE_BIN" proxy --config "$CONF" >"$1" 2>&1 &
    PROXY_PID=$!
    BENCH_PIDS+=("$PROXY_PID")
    local i
    for ((i = 0; i < 100; i++)); do
        REAL_PID="$(pgrep -P "$PROXY_PID" 2>/dev/null | head -n 1 || true)"
        [[ -n "$REAL_PID" ]] && grep -q "accepting on" "$1" && return 0
        pid_alive "$PROXY_PID" || break
        sleep 0.1
    done
    cat "$1" >&2
    die "the proxy did not start"
}

# ---------------------------------------------------------------- baseline
log "baseline: wrk -t$THREADS -c$CONNECTIONS -d$DURATION, no reload"
start_proxy "$OUT_DIR/reload.base.proxy.log" "$BASE_BACKENDS"
wrk_bg "$OUT_DIR/reload.base.wrk"
wait "$WRK_PID" || die "wrk failed (baseline)"
_forget_pid "$WRK_PID"
stop_pid "$PROXY_PID" INT 15 || true

# ---------------------------------------------------------------- reloads
log "reload run: the same load, $RELOADS reloads from ${RELOAD_AT}s every ${RELOAD_EVERY}s"
plog="$OUT_DIR/reload.run.proxy.log"
start_proxy "$plog"
wrk_bg "$OUT_DIR/reload.reloads.wrk"
start=$(date +%s.%N)
failures=0
for ((r = 1; r <= RELOADS; r++)); do
    at=$(awk -v a="$RELOAD_AT" -v e="$RELOAD_EVERY" -v r="$r" 'BEGIN { print a + (r - 1) * e }')
    while awk -v s="$start" -v at="$at" -v now="$(date +%s.%N)" 'BEGIN { exit !(now - s < at) }'; do
        sleep 0.05
    done
    before=$(grep -c "configuration reloaded" "$plog" || true)
    if ((r % 2 == 1)); then write_config 3; else write_config 2; fi
    kill -HUP "$REAL_PID"
    for ((i = 0; i < 50; i++)); do
        (($(grep -c "configuration reloaded" "$plog" || true) > before)) && break
        sleep 0.02
    done
    if [[ "$CHECKS" == 0 ]]; then
        :
    elif ((r % 2 == 1)); then
        from=$(served "${PORTS[2]}")
        ok=0
        for ((i = 0; i < 20; i++)); do
            (($(served "${PORTS[2]}") > from)) && { ok=1; break; }
            sleep 0.05
        done
        ((ok)) || { log "reload $r: the added backend took no traffic within 1 s"; failures=$((failures + 1)); }
    else
        sleep 0.1 # answers already on their way from b2 may still land
        frozen=$(served "${PORTS[2]}")
        sleep 0.4
        now=$(served "${PORTS[2]}")
        ((now == frozen)) || { log "reload $r: the removed backend took $((now - frozen)) new requests"; failures=$((failures + 1)); }
    fi
done
wait "$WRK_PID" || die "wrk failed (reload run)"
_forget_pid "$WRK_PID"
stop_pid "$PROXY_PID" INT 15 || true
for pid in "${BACKEND_PIDS[@]}"; do stop_pid "$pid" INT 5 || true; done

reloaded=$(grep -c "configuration reloaded" "$plog" || true)
read -r b_err b_non b_rps b_p50 b_p99 <<<"$(wrk_fields "$OUT_DIR/reload.base.wrk")"
read -r u_err u_non u_rps u_p50 u_p99 <<<"$(wrk_fields "$OUT_DIR/reload.reloads.wrk")"
{
    echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency, proxy --config (workers $WORKERS, round-robin), backends --profile 0"
    printf '%-26s %14s %8s %12s %10s %10s\n' run "socket errors" non-2xx "requests/s" p50 p99
    printf '%-26s %14s %8s %12s %10s %10s\n' "no reload" "$b_err" "$b_non" "$b_rps" "$b_p50" "$b_p99"
    printf '%-26s %14s %8s %12s %10s %10s\n' "$reloaded reloads" "$u_err" "$u_non" "$u_rps" "$u_p50" "$u_p99"
} | tee "$OUT_DIR/reload.txt"
((reloaded == RELOADS)) || die "only $reloaded of $RELOADS reloads were applied (see $plog)"
[[ "$failures" == 0 ]] || die "$failures reload check(s) failed"
[[ "$u_err" == 0 && "$u_non" == 0 ]] ||
    die "required: zero socket errors and zero non-2xx during the reloads (see $OUT_DIR/reload.reloads.wrk)"
log "PASS: $RELOADS reloads under load: added backends served within 1 s, removed ones took no new request, no socket error, no non-2xx"
