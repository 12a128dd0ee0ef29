#!/usr/bin/env bash
# benches/compare_tokio.sh: tidegate against the canonical tokio echo server
# (benches/tokio_echo.rs), same client, same machine, interleaved.
#
# For each repetition, for each connection count, for each pairing
#   threads=1: tidegate --workers 1  vs  tokio_echo --flavor current_thread
#   threads=2: tidegate --workers 2  vs  tokio_echo --flavor multi_thread --threads 2
# both servers are run one after the other (which goes first alternates from
# one pair to the next and from one repetition to the next), each started fresh, loaded by one client run, and
# stopped. Every run moves about MSGS messages of SIZE bytes. The client uses
# CLIENT_THREADS event-loop threads (2) and 8 source addresses; it shares the
# 2 CPUs with the server, as in every other bench here.
#
# Environment (defaults in brackets):
#   REPS             repetitions [5]
#   NS               connection counts [100 1000]
#   MSGS             messages per run; requests/conn = MSGS / N [200000]
#   REQUESTS_<N>     requests per connection for N connections, e.g.
#                    REQUESTS_100=2000 REQUESTS_1000=200 [MSGS / N]
#   SIZE             message size, bytes [64]
#   PAIRINGS         which pairings to run: "1 2", "1" or "2" [1 2]
#   CLIENT_THREADS   client --threads [2]
#   SOURCES          number of source addresses 127.0.0.1..K [8]
#   RUN_TIMEOUT      hard bound on one client run, s [120]
#   PAUSE            seconds between runs [1]
#   TIDEGATE_PORT, TOKIO_PORT   listen ports [18000, 18001]
#
# Writes bench-out/compare_tokio.md and bench-out/compare_tokio/ (raw logs).

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REPS="${REPS:-5}"
NS="${NS:-100 1000}"
MSGS="${MSGS:-200000}"
SIZE="${SIZE:-64}"
PAIRINGS="${PAIRINGS:-1 2}"
CLIENT_THREADS="${CLIENT_THREADS:-2}"
SOURCES="${SOURCES:-8}"
RUN_TIMEOUT="${RUN_TIMEOUT:-120}"
PAUSE="${PAUSE:-1}"
TIDEGATE_PORT="${TIDEGATE_PORT:-18000}"
TOKIO_PORT="${TOKIO_PORT:-18001}"

raise_nofile
build_all

RAW="$OUT_DIR/compare_tokio"
mkdir -p "$RAW"
rm -f "$RAW"/*.log
REPORT="$OUT_DIR/compare_tokio.md"
SRC="$(sources_list "$SOURCES")"

requests_for() {
    local n="$1" var="REQUESTS_$1"
    if [[ -n "${!var:-}" ]]; then echo "${!var}"; else echo $((MSGS / n > 0 ? MSGS / n : 1)); fi
}

# server_cmd SERVER THREADS: the command line, one word per line.
server_cmd() {
    local server="$1" threads="$2"
    case "$server/$threads" in
        tidegate/*) printf '%s\n' "$TIDEGATE_BIN" echo --listen "127.0.0.1:$TIDEGATE_PORT" --workers "$threads" ;;
        tokio/1) printf '%s\n' "$TOKIO_BIN" --listen "127.0.0.1:$TOKIO_PORT" --flavor current_thread ;;
        tokio/*) printf '%s\n' "$TOKIO_BIN" --listen "127.0.0.1:$TOKIO_PORT" --flavor multi_thread --threads "$threads" ;;
    esac
}

server_label() {
    case "$1/$2" in
        tidegate/*) echo "tidegate --workers $2" ;;
        tokio/1) echo "tokio current_thread" ;;
        tokio/*) echo "tokio multi_thread($2)" ;;
    esac
}

# Raw runs, one per line: "rep n threads server order requests msgs_per_s p99 p50 status errors".
RUNS=()

one_run() {
    local rep="$1" n="$2" threads="$3" server="$4" order="$5"
    local req port tag
    req="$(requests_for "$n")"
    if [[ "$server" == tidegate ]]; then port="$TIDEGATE_PORT"; else port="$TOKIO_PORT"; fi
    tag="r${rep}-n${n}-t${threads}-${server}"
    local -a cmd
    mapfile -t cmd < <(server_cmd "$server" "$threads")
    start_server "$RAW/$tag.server.log" "${cmd[@]}"
    run_client "$RUN_TIMEOUT" "$RAW/$tag.client.log" --target "127.0.0.1:$port" --connections "$n" \
        --requests "$req" --size "$SIZE" --threads "$CLIENT_THREADS" --sources "$SRC"
    # tidegate stops on SIGINT and prints its summary; tokio_echo has no
    # handler and just dies of it.
    stop_server INT
    local status
    if [[ -z "$RESULT_LINE" ]]; then
        status="FAIL(exit=$CLIENT_RC)"
    elif [[ "$CLIENT_RC" == 0 && "$R_failed" == 0 ]]; then
        status=OK
    else
        status="FAIL(${R_failed}/$n)"
    fi
    log "rep $rep, $n conns, $(server_label "$server" "$threads"): $status," \
        "msgs/s ${R_msgs_per_s:--}, p99 ${R_p99_ms:--} ms"
    RUNS+=("$rep $n $threads $server $order $req ${R_msgs_per_s:--} ${R_p99_ms:--} ${R_p50_ms:--} $status $(result_errors | tr ' ' ',')")
    sleep "$PAUSE"
}

# Which server goes first flips from one pair to the next within a
# repetition, and from one repetition to the next for the same pair, so every
# (N, threads) pairing has each server first in about half its repetitions.
started=$(date +%s)
for ((rep = 1; rep <= REPS; rep++)); do
    pair=0
    for n in $NS; do
        for threads in $PAIRINGS; do
            if (((rep + pair) % 2 == 1)); then order=(tidegate tokio); else order=(tokio tidegate); fi
            pair=$((pair + 1))
            one_run "$rep" "$n" "$threads" "${order[0]}" 1
            one_run "$rep" "$n" "$threads" "${order[1]}" 2
        done
    done
done
elapsed=$(($(date +%s) - started))

# Values of column $1 (1-based, in RUNS) for the OK runs matching n, threads, server.
column_of() {
    local col="$1" n="$2" threads="$3" server="$4" line
    for line in "${RUNS[@]}"; do
        # shellcheck disable=SC2086
        set -- $line
        if [[ "$2" == "$n" && "$3" == "$threads" && "$4" == "$server" && "${10}" == OK ]]; then
            echo "${!col}"
        fi
    done
}

count_runs() {
    local n="$1" threads="$2" server="$3" line total=0 ok=0
    for line in "${RUNS[@]}"; do
        # shellcheck disable=SC2086
        set -- $line
        if [[ "$2" == "$n" && "$3" == "$threads" && "$4" == "$server" ]]; then
            total=$((total + 1))
            if [[ "${10}" == OK ]]; then ok=$((ok + 1)); fi
        fi
    done
    echo "$ok/$total"
}

{
    echo "# tidegate vs tokio echo"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(describe_machine); $REPS repetitions, ${elapsed}s in all."
    echo "Client: \`echo_client --threads $CLIENT_THREADS --sources 127.0.0.1..127.0.0.$SOURCES\`, $SIZE B messages," \
        "about $MSGS messages per run ($(for n in $NS; do printf '%s conns x %s requests; ' "$n" "$(requests_for "$n")"; done | sed 's/; $//'))."
    echo "Each server is started fresh for each run; which one goes first alternates between pairs and between repetitions. Client and server share the machine's $(nproc) CPUs."
    echo "Medians are over the runs in which every connection succeeded (ok/runs)."
    echo
    echo "| Connections | Threads | Server | ok/runs | median msgs/s | median p99 (ms) | median p50 (ms) | tidegate/tokio msgs/s |"
    echo "|---:|---:|---|---:|---:|---:|---:|---:|"
    for n in $NS; do
        for threads in $PAIRINGS; do
            # shellcheck disable=SC2046
            tg="$(median $(column_of 7 "$n" "$threads" tidegate))"
            # shellcheck disable=SC2046
            tk="$(median $(column_of 7 "$n" "$threads" tokio))"
            r="$(ratio "$tg" "$tk" 2)"
            for server in tidegate tokio; do
                # shellcheck disable=SC2046
                m="$(median $(column_of 7 "$n" "$threads" "$server"))"
                # shellcheck disable=SC2046
                p99="$(median $(column_of 8 "$n" "$threads" "$server"))"
                # shellcheck disable=SC2046
                p50="$(median $(column_of 9 "$n" "$threads" "$server"))"
                cell="$([[ "$server" == tidegate ]] && echo "**$r**" || echo "")"
                echo "| $n | $threads | $(server_label "$server" "$threads") | $(count_runs "$n" "$threads" "$server") | $(fmt "$m" 0) | $(fmt "$p99" 3) | $(fmt "$p50" 3) | $cell |"
            done
        done
    done
    echo
    echo "## All runs"
    echo
    echo "| Rep | Connections | Threads | Server | Order in pair | Requests/conn | msgs/s | p99 (ms) | p50 (ms) | Status | errors |"
    echo "|---:|---:|---:|---|---:|---:|---:|---:|---:|---|---|"
    for line in "${RUNS[@]}"; do
        # shellcheck disable=SC2086
        set -- $line
        echo "| $1 | $2 | $3 | $(server_label "$4" "$3") | $5 | $6 | $(fmt "$7" 0) | $(fmt "$8" 3) | $(fmt "$9" 3) | ${10} | ${11//,/ } |"
    done
} | tee "$REPORT"
log "wrote $REPORT"
