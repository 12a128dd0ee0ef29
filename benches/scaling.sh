#!/usr/bin/env bash
# benches/scaling.sh: the connection-scaling table of the seed, against
# tidegate.
#
# One `tidegate echo --workers 2` is started once and serves every row (as
# the seed's server did); for each connection count the load client opens all
# N connections at once, then each sends REQUESTS messages of SIZE bytes, one
# at a time, verifying every echo. All rows use 8 source addresses
# (127.0.0.1-127.0.0.8) so that TIME_WAIT left by earlier rows cannot run one
# source address out of ephemeral ports.
#
# Environment (defaults in brackets):
#   CONNS            connection counts [100 200 500 1000 1500 2000 2500 3000 4000 10000 19000]
#   REQUESTS         messages per connection [100]
#   SIZE             message size, bytes [64]
#   WORKERS          tidegate --workers [2]
#   CLIENT_THREADS   client --threads [2]
#   SOURCES          number of source addresses 127.0.0.1..K [8]
#   PAUSE            seconds between rows [3]
#   ROW_TIMEOUT      hard bound on one client run, s [60 + N/25]
#   CLIENT_EXTRA     extra client arguments, e.g. "--timeout 30" [none]
#   TIDEGATE_PORT    listen port [18000]
#
# Writes bench-out/scaling.md (the table) and bench-out/scaling/ (raw logs).

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CONNS="${CONNS:-100 200 500 1000 1500 2000 2500 3000 4000 10000 19000}"
REQUESTS="${REQUESTS:-100}"
SIZE="${SIZE:-64}"
WORKERS="${WORKERS:-2}"
CLIENT_THREADS="${CLIENT_THREADS:-2}"
SOURCES="${SOURCES:-8}"
PAUSE="${PAUSE:-3}"
TIDEGATE_PORT="${TIDEGATE_PORT:-18000}"
CLIENT_EXTRA="${CLIENT_EXTRA:-}"
ADDR="127.0.0.1:$TIDEGATE_PORT"

# The seed's own numbers: connections -> "avg total duration s|avg response s".
declare -A SEED=(
    [100]="3.5599|0.016238"
    [200]="4.7865|0.028205"
    [500]="9.9519|0.079521"
    [1000]="17.8867|0.155840"
    [1500]="25.7254|0.231553"
    [2000]="31.7022|0.298103"
    [2500]="37.1417|0.354455"
    [3000]="42.6792|0.406415"
    [4000]="Fail (timeouts)|Fail (timeouts)"
)

raise_nofile
build_all

RAW="$OUT_DIR/scaling"
mkdir -p "$RAW"
REPORT="$OUT_DIR/scaling.md"
SRC="$(sources_list "$SOURCES")"

start_server "$RAW/server.log" "$TIDEGATE_BIN" echo --listen "$ADDR" --workers "$WORKERS"

rows=()
for n in $CONNS; do
    secs="${ROW_TIMEOUT:-$((60 + n / 25))}"
    log "row: $n connections x $REQUESTS requests x $SIZE B (bound ${secs}s)"
    # shellcheck disable=SC2086  # CLIENT_EXTRA is a list of words
    run_client "$secs" "$RAW/client-$n.log" --target "$ADDR" --connections "$n" \
        --requests "$REQUESTS" --size "$SIZE" --threads "$CLIENT_THREADS" --sources "$SRC" \
        $CLIENT_EXTRA
    if [[ -z "$RESULT_LINE" ]]; then
        if [[ "$CLIENT_RC" == 124 || "$CLIENT_RC" == 137 ]]; then
            status="Fail (client killed after ${secs}s)"
        else
            status="Fail (client exit $CLIENT_RC, no RESULT)"
        fi
    elif [[ "$CLIENT_RC" == 0 && "${R_failed:-1}" == 0 ]]; then
        status="OK"
    else
        status="Fail (${R_failed:-?}/$n failed)"
    fi
    seed="${SEED[$n]:-|}"
    seed_dur="${seed%%|*}"
    seed_resp="${seed#*|}"
    if [[ "$seed_resp" =~ ^[0-9.]+$ ]]; then seed_resp="$(fmt "$(awk -v s="$seed_resp" 'BEGIN {print s * 1000}')" 3)"; fi
    row="| $n | $status | $REQUESTS | $((REQUESTS * SIZE)) | ${R_requests:--} | ${R_bytes:--}"
    row+=" | $(fmt "${R_avg_duration_s:--}" 4) | $(fmt "${R_avg_response_ms:--}" 3)"
    row+=" | $(fmt "${R_msgs_per_s:--}" 0) | $(fmt "${R_p99_ms:--}" 3) | $(result_errors)"
    row+=" | ${seed_dur:--} | ${seed_resp:--} |"
    rows+=("$row")
    log "  $status; ${RESULT_LINE:-no RESULT line}"
    log "  server holds $(fd_count "$SERVER_REAL_PID") fds, RSS $(rss_kb "$SERVER_REAL_PID" VmRSS) kB;" \
        "TIME_WAIT sockets: $(ss -Htan state time-wait 2>/dev/null | wc -l)"
    sleep "$PAUSE"
done

stop_server INT
summary="$(server_summary "$RAW/server.log")"

{
    echo "# tidegate connection scaling"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(describe_machine)."
    echo "Server: \`tidegate echo --workers $WORKERS\`, one process for all rows."
    echo "Client: \`echo_client --threads $CLIENT_THREADS --sources 127.0.0.1..127.0.0.$SOURCES\`," \
        "$REQUESTS requests x $SIZE B per connection, all connections open at once${CLIENT_EXTRA:+, extra: \`$CLIENT_EXTRA\`}."
    echo "Avg total duration: mean per-connection time from first request to last echo;" \
        "avg response: mean round trip of one message. The last two columns are the seed's numbers for the same row."
    echo
    echo "| Connections | Status | Requests/conn | Bytes/conn | Total requests | Total bytes | Avg total duration (s) | Avg response (ms) | msgs/s | p99 (ms) | errors | Seed avg total duration (s) | Seed avg response (ms) |"
    echo "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|"
    printf '%s\n' "${rows[@]}"
    echo
    echo "Server summary: \`${summary:-none (server exit $SERVER_RC)}\`"
} | tee "$REPORT"
log "wrote $REPORT"
