#!/usr/bin/env bash
# benches/idle_memory.sh: server user-space memory per idle connection.
#
# For each server (tidegate --workers 2, then tokio_echo multi_thread(2)):
# start it fresh, read VmRSS and RssAnon from /proc/PID/status, start the
# client with CONNS connections that are opened and then held idle for HOLD
# seconds (--requests 1 --hold HOLD, 8 source addresses) in the background,
# wait (bounded) until the server holds CONNS more file descriptors, let it
# settle SETTLE seconds, read the memory again, and report
# (idle - before) / connections held, in bytes. The client then sends its one request per
# connection and exits by itself; the memory after it closed is shown too.
# This is user-space memory only: kernel socket buffers are not in RSS.
#
# Environment (defaults in brackets):
#   CONNS            idle connections [10000]
#   HOLD             seconds the client holds them idle [15]
#   SETTLE           seconds between "all accepted" and the reading [1]
#   SERVERS          which servers: "tidegate tokio" [tidegate tokio]
#   CLIENT_THREADS   client --threads [2]
#   SOURCES          number of source addresses 127.0.0.1..K [8]
#   TARGET_BYTES     tidegate's budget per idle connection [1024]
#   MAX_CONNECTING   client --max-connecting (connects in flight per thread)
#                    [the client's default]
#   TIDEGATE_PORT, TOKIO_PORT   listen ports [18000, 18001]
#
# Writes bench-out/idle_memory.md and bench-out/idle_memory/ (raw logs).

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CONNS="${CONNS:-10000}"
HOLD="${HOLD:-15}"
SETTLE="${SETTLE:-1}"
SERVERS="${SERVERS:-tidegate tokio}"
CLIENT_THREADS="${CLIENT_THREADS:-2}"
SOURCES="${SOURCES:-8}"
TARGET_BYTES="${TARGET_BYTES:-1024}"
TIDEGATE_PORT="${TIDEGATE_PORT:-18000}"
TOKIO_PORT="${TOKIO_PORT:-18001}"

raise_nofile
build_all

RAW="$OUT_DIR/idle_memory"
mkdir -p "$RAW"
REPORT="$OUT_DIR/idle_memory.md"
SRC="$(sources_list "$SOURCES")"

per_conn() { # before_kb after_kb connections -> bytes per connection
    awk -v a="$1" -v b="$2" -v n="$3" 'BEGIN {
        if (a ~ /^[0-9]+$/ && b ~ /^[0-9]+$/ && n > 0) printf "%.0f\n", (b - a) * 1024 / n; else print "-"
    }'
}

rows=()
verdict=""
for server in $SERVERS; do
    case "$server" in
        tidegate)
            label="tidegate --workers 2"
            port="$TIDEGATE_PORT"
            cmd=("$TIDEGATE_BIN" echo --listen "127.0.0.1:$port" --workers 2)
            ;;
        tokio)
            label="tokio multi_thread(2)"
            port="$TOKIO_PORT"
            cmd=("$TOKIO_BIN" --listen "127.0.0.1:$port" --flavor multi_thread --threads 2)
            ;;
        *) die "unknown server '$server' (tidegate or tokio)" ;;
    esac
    start_server "$RAW/$server.server.log" "${cmd[@]}"
    pid="$SERVER_REAL_PID"
    backlog="$(listen_backlog "$port")"
    sleep 1
    ovf0="$(tcpext ListenOverflows)"
    fds0="$(fd_count "$pid")"
    rss0="$(rss_kb "$pid" VmRSS)"
    anon0="$(rss_kb "$pid" RssAnon)"
    log "$label: before: $fds0 fds, VmRSS $rss0 kB, RssAnon $anon0 kB"

    run_client_bg $((HOLD + 120)) "$RAW/$server.client.log" --target "127.0.0.1:$port" \
        --connections "$CONNS" --requests 1 --hold "$HOLD" --threads "$CLIENT_THREADS" --sources "$SRC" \
        ${MAX_CONNECTING:+--max-connecting "$MAX_CONNECTING"}

    # Wait until the server holds all the connections, at most until shortly
    # before the client ends its hold, so the reading sees idle connections.
    want=$((fds0 + CONNS))
    held=0
    deadline=$((SECONDS + (HOLD > SETTLE + 2 ? HOLD - SETTLE - 1 : 1)))
    while ((SECONDS < deadline)); do
        held=$(($(fd_count "$pid") - fds0))
        ((held >= CONNS)) && break
        pid_alive "$CLIENT_PID" || break
        sleep 0.2
    done
    waited="all"
    if ((held < CONNS)); then
        waited="only"
        log "$label: server reached only $held of $CONNS connections (want $want fds)"
    fi
    sleep "$SETTLE"
    held=$(($(fd_count "$pid") - fds0))
    rss1="$(rss_kb "$pid" VmRSS)"
    anon1="$(rss_kb "$pid" RssAnon)"
    ovf1="$(tcpext ListenOverflows)"
    ovf="$(awk -v a="$ovf0" -v b="$ovf1" 'BEGIN {if (a ~ /^[0-9]+$/ && b ~ /^[0-9]+$/) print b - a; else print "-"}')"
    log "$label: idle: $held connections, VmRSS $rss1 kB, RssAnon $anon1 kB"

    wait_client
    sleep 0.5
    rss2="$(rss_kb "$pid" VmRSS)"
    stop_server INT
    if [[ -n "$RESULT_LINE" && "$CLIENT_RC" == 0 ]]; then
        cstatus="OK ($R_ok/$R_connections)"
    else
        cstatus="FAIL (exit $CLIENT_RC, ${R_failed:-?} failed: $(result_errors))"
    fi
    b_rss="$(per_conn "$rss0" "$rss1" "$held")"
    b_anon="$(per_conn "$anon0" "$anon1" "$held")"
    held_cell="$held"
    if [[ "$waited" == only ]]; then held_cell="$held (of $CONNS)"; fi
    rows+=("| $label | $backlog | $ovf | $held_cell | $rss0 | $rss1 | $anon0 | $anon1 | **$b_rss** | $b_anon | $rss2 | $cstatus |")
    if [[ "$server" == tidegate && "$b_rss" != - ]]; then
        if ((b_rss <= TARGET_BYTES)); then
            verdict="tidegate: $b_rss B per idle connection (VmRSS) <= target $TARGET_BYTES B: PASS"
        else
            verdict="tidegate: $b_rss B per idle connection (VmRSS) > target $TARGET_BYTES B: FAIL"
        fi
    fi
    summary="$(server_summary "$RAW/$server.server.log")"
    if [[ -n "$summary" ]]; then log "$summary"; fi
    sleep 2
done

{
    echo "# Server memory per idle connection"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(describe_machine)."
    echo "Client: \`echo_client --connections $CONNS --requests 1 --hold $HOLD --threads $CLIENT_THREADS --sources 127.0.0.1..127.0.0.$SOURCES\`."
    echo "Memory from /proc/PID/status of the server process, in kB: before the client, and ${SETTLE}s after the server held"
    echo "all connections (idle: connected, nothing sent yet). Per connection = (idle - before) x 1024 / connections held, in bytes."
    echo "Connections held = the server's open fds at the reading minus those before; if the server had not accepted all"
    echo "$CONNS shortly before the client's hold ended (see the note on ListenOverflows), the row says so and divides by"
    echo "the number it held."
    echo "User-space memory only; kernel socket memory is not included."
    echo "Listen backlog: the listener's backlog as the kernel reports it (ss). ListenOverflows: the kernel's TcpExt counter"
    echo "over the connect phase, for the whole network namespace (other programs' traffic counts too). A connection the"
    echo "server dropped on accept-queue overflow after a SYN cookie looks established to the client but exists on the server"
    echo "only once the client sends data, so it is not held (nor counted) while idle."
    echo
    echo "| Server | Listen backlog | ListenOverflows | Connections held | VmRSS before | VmRSS idle | RssAnon before | RssAnon idle | B/conn (VmRSS) | B/conn (RssAnon) | VmRSS after close | Client |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    printf '%s\n' "${rows[@]}"
    if [[ -n "$verdict" ]]; then
        echo
        echo "$verdict"
    fi
} | tee "$REPORT"
log "wrote $REPORT"
