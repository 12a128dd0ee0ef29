#!/usr/bin/env bash
# benches/tls.sh: TLS termination, tidegate side by side with HAProxy.
#
# Usage: benches/tls.sh [TIDEGATE_BIN]      (or TIDEGATE_BIN=...; else it builds)
#
# For each key type in KEYS (ECDSA P-256, RSA 2048), with a self-signed
# certificate that openssl generates at run time into a temp dir:
#   * tidegate `proxy --config` with `[[listener]] tls = { cert, key }`,
#     workers = 1, round robin, and HAProxy (Debian's, OpenSSL; nbthread 1,
#     `bind ... ssl crt <cert+key pem> alpn http/1.1`, keep-alive and
#     `http-reuse always` to the backend), both in front of one
#     `tidegate backend --profile 0` (answers at once, not capped);
#   * each proxy in its own cgroup capped at QUOTA of a core (the method of
#     ../shared/anchors/capacity.sh, cg_cap in lib.sh), so the proxy and not
#     wrk is the bottleneck;
#   * the protocol, cipher suite and key exchange group each proxy
#     negotiates with OpenSSL's client defaults (`openssl s_client -brief`,
#     what wrk gets too);
#   * interleaved reps (tidegate, haproxy, tidegate, ...), each rep running
#     both measurements for every proxy:
#       1. keep-alive: `wrk -t1 -cCONNECTIONS -dDURATION https://localhost:P/`,
#          requests/s over established TLS connections (target: tidegate
#          >= 1.3x HAProxy);
#       2. full handshakes: HS_CLIENTS parallel `openssl s_time -new -time
#          DURATION` (a new connection and a full handshake each time, no
#          session resumed; no HTTP request), summed (target >= 1.0x);
#       3. new connections with wrk: `-cHS_CONNECTIONS -H 'Connection: close'`,
#          one connection per request. wrk reconnects with SSL_clear, which
#          keeps the last session, so these handshakes are *resumed* (TLS 1.3
#          PSK with ECDHE, no certificate signature): a separate figure;
#   * idle memory, after the reps, uncapped (a quarter core would make
#     10,000 RSA handshakes take minutes): a fresh proxy per run, VmRSS and
#     RssAnon from /proc/PID/status before, then tls_idle_client.py opens
#     IDLE_CONNS TLS connections from SOURCES addresses 127.0.0.1..K
#     (handshake done, nothing sent; with IDLE_REQUEST=1, one GET first) and
#     holds them; SETTLE s after all are up the memory is read again.
#     (idle - before) x 1024 / connections held = user-space bytes per idle
#     TLS connection (target for tidegate <= 8 KiB; kernel socket memory is
#     not in RSS).
# Medians over the reps; ratios tidegate / HAProxy.
#
# Environment (defaults in brackets):
#   REPS            interleaved repetitions [3]
#   DURATION        wrk -d of each run [5s]
#   QUOTA           CPU cap of each proxy, cores [0.25]
#   CONNECTIONS     wrk -c, keep-alive [100]
#   HS_CONNECTIONS  wrk -c, new connections with wrk [50]
#   HS_CLIENTS      parallel `openssl s_time -new` processes [6]
#   IDLE_CONNS      idle TLS connections [10000] (the hard fd limit is 20000)
#   IDLE_REQUEST    1: one GET per idle connection before it idles [0]
#   SOURCES         source addresses for the idle client [8]
#   SETTLE          seconds between "all up" and the memory reading [2]
#   KEYS            key types: "ecdsa rsa" [ecdsa rsa]
#   PARTS           "keepalive handshake idle" [all three]
#   PROXIES         "tidegate haproxy" [both]; "haproxy" alone needs no TLS in
#                   tidegate (only its `backend`)
#   PAUSE           seconds between wrk runs [1]
#   BACKEND_PORT, TIDEGATE_PORT, HAPROXY_PORT   [18400, 18443, 18444]
#   TIDEGATE_PLAIN_PORT  tidegate's main (plaintext) `listen`, unused [18445]
#   TIDEGATE_BIN, OUT_DIR (bench-out), CARGO_TARGET_DIR: see lib.sh
#
# Needs root (cgroups), wrk, haproxy, openssl, curl, python3 (stdlib).
# Loopback only; every process is bounded by `timeout` and stopped by PID.
# Writes bench-out/tls.md, raw outputs in bench-out/tls/. Runtime with the
# defaults: about 2 keys x (4 x REPS x (DURATION + PAUSE) + 1 min), ~5 min.

# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [[ "${1:-}" == -h || "${1:-}" == --help ]]; then
    sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
fi
if [[ -n "${1:-}" ]]; then TIDEGATE_BIN="$(readlink -f "$1")"; fi

REPS="${REPS:-3}"
DURATION="${DURATION:-5s}"
QUOTA="${QUOTA:-0.25}"
CONNECTIONS="${CONNECTIONS:-100}"
HS_CONNECTIONS="${HS_CONNECTIONS:-50}"
HS_CLIENTS="${HS_CLIENTS:-6}"
IDLE_CONNS="${IDLE_CONNS:-10000}"
IDLE_REQUEST="${IDLE_REQUEST:-0}"
SOURCES="${SOURCES:-8}"
SETTLE="${SETTLE:-2}"
KEYS="${KEYS:-ecdsa rsa}"
PARTS="${PARTS:-keepalive handshake idle}"
PROXIES="${PROXIES:-tidegate haproxy}"
PAUSE="${PAUSE:-1}"
BACKEND_PORT="${BACKEND_PORT:-18400}"
TIDEGATE_PORT="${TIDEGATE_PORT:-18443}"
HAPROXY_PORT="${HAPROXY_PORT:-18444}"
TIDEGATE_PLAIN_PORT="${TIDEGATE_PLAIN_PORT:-18445}"

# HAProxy's maxconn: room for the idle connections plus a margin.
HAPROXY_MAXCONN=$((IDLE_CONNS + 100))

for tool in wrk haproxy openssl curl python3; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed (../shared/anchors/anchors.sh install)"
done
[[ "$REPS" =~ ^[1-9][0-9]*$ ]] || die "REPS must be a positive integer"
DURATION_S="$(dur_s "$DURATION")"
read -r -a PROXY_LIST <<<"$PROXIES"
read -r -a KEY_LIST <<<"$KEYS"
has_part() { [[ " $PARTS " == *" $1 "* ]]; }

RAW="$OUT_DIR/tls"
REPORT="$OUT_DIR/tls.md"
mkdir -p "$RAW"
rm -f "$RAW"/*.txt "$RAW"/*.log
TMP="$(mktemp -d "${TMPDIR:-/tmp}/tidegate-tls.XXXXXX")"

# lib.sh's bench_cleanup (trapped on EXIT) stops our PIDs, drops the
# cgroups and removes this scratch directory.
BENCH_TMP="$TMP"
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- certificates

# gen_cert KEY: a self-signed certificate for localhost / 127.0.0.1 into
# $TMP/KEY.{crt,key,pem} (pem = crt + key, for HAProxy).
gen_cert() {
    local k="$1" alg=()
    case "$k" in
        ecdsa) alg=(-newkey ec -pkeyopt ec_paramgen_curve:P-256) ;;
        rsa) alg=(-newkey rsa:2048) ;;
        *) die "unknown key type '$k' (ecdsa or rsa)" ;;
    esac
    openssl req -x509 "${alg[@]}" -nodes -days 2 -subj "/CN=localhost" \
        -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
        -keyout "$TMP/$k.key" -out "$TMP/$k.crt" >"$RAW/openssl_$k.log" 2>&1 ||
        die "openssl could not make the $k certificate (see $RAW/openssl_$k.log)"
    cat "$TMP/$k.crt" "$TMP/$k.key" >"$TMP/$k.pem"
}

key_desc() {
    case "$1" in
        ecdsa) echo "ECDSA P-256" ;;
        rsa) echo "RSA 2048" ;;
    esac
}

# ---------------------------------------------------------------- proxies

write_configs() {
    local k="$1"
    cat >"$TMP/haproxy-$k.cfg" <<CFG
global
    nbthread 1
    maxconn $HAPROXY_MAXCONN
    # Idle connections need one fd each, not the two per connection HAProxy
    # reserves; without this it refuses to start above the 20000 fd limit.
    no strict-limits
    tune.ssl.default-dh-param 2048

defaults
    mode http
    timeout connect 5s
    timeout client  60s
    timeout server  60s
    option http-keep-alive
    http-reuse always

frontend fe
    bind 127.0.0.1:$HAPROXY_PORT ssl crt $TMP/$k.pem alpn http/1.1
    default_backend be

backend be
    server b1 127.0.0.1:$BACKEND_PORT
CFG
    cat >"$TMP/tidegate-$k.toml" <<CFG
# The main (plaintext) listener always exists: on a port of our own.
listen = "127.0.0.1:$TIDEGATE_PLAIN_PORT"
workers = 1
policy = "round-robin"

[[listener]]
address = "127.0.0.1:$TIDEGATE_PORT"
tls = { cert = "$TMP/$k.crt", key = "$TMP/$k.key" }

[[backend]]
address = "127.0.0.1:$BACKEND_PORT"
CFG
}

declare -A PORT_OF=([tidegate]="$TIDEGATE_PORT" [haproxy]="$HAPROXY_PORT")
declare -A WRAP_OF=() PID_OF=()

# start_proxy NAME KEY: starts it, sets WRAP_OF[NAME] and PID_OF[NAME].
start_proxy() {
    local p="$1" k="$2" cmd=()
    case "$p" in
        tidegate) cmd=("$TIDEGATE_BIN" proxy --config "$TMP/tidegate-$k.toml") ;;
        haproxy) cmd=(haproxy -db -f "$TMP/haproxy-$k.cfg") ;;
        *) die "unknown proxy '$p' (tidegate or haproxy)" ;;
    esac
    start_server_at "127.0.0.1:${PORT_OF[$p]}" "$RAW/${p}_$k.log" "${cmd[@]}"
    WRAP_OF[$p]="$SERVER_PID"
    PID_OF[$p]="$SERVER_REAL_PID"
    local code
    code="$(curl -sk -o /dev/null -w '%{http_code}' --max-time 5 "https://localhost:${PORT_OF[$p]}/" || true)"
    [[ "$code" == 200 ]] || die "$p ($k) answered '${code:-nothing}' to a GET probe over https"
}

stop_proxy() {
    local p="$1"
    stop_pid "${WRAP_OF[$p]}" INT 10 || true
    WRAP_OF[$p]="" PID_OF[$p]=""
}

# negotiated NAME: "TLSv1.3 TLS_AES_256_GCM_SHA384 X25519" as OpenSSL's
# client negotiates it by default with that proxy.
negotiated() {
    local out
    out="$(timeout 10 openssl s_client -brief -connect "127.0.0.1:${PORT_OF[$1]}" -servername localhost \
        -alpn http/1.1 </dev/null 2>&1)" || true
    awk -F': ' '
        /^Protocol version/ {v = $2}
        /^Ciphersuite/ {c = $2}
        /^(Negotiated TLS1.3 group|Server Temp Key)/ {g = $2; sub(/,.*/, "", g)}
        END {printf "%s %s %s\n", v ? v : "?", c ? c : "?", g ? g : "?"}
    ' <<<"$out"
}

# ---------------------------------------------------------------- wrk

# run_wrk OUTFILE CONNS [WRK_ARGS...]: one bounded wrk run against the
# current proxy port ($port).
run_wrk() {
    local out="$1" c="$2"
    shift 2
    run_bounded $((DURATION_S + 30)) "$out" wrk -t1 -c"$c" -d"$DURATION" --latency "$@" "https://localhost:$port/"
}

# full_handshakes OUTPREFIX: HS_CLIENTS parallel `openssl s_time -new`
# against the current proxy port ($port) for DURATION; prints the summed
# rate (connections / real seconds of each), or "-".
full_handshakes() {
    local out="$1" i pids=()
    for ((i = 1; i <= HS_CLIENTS; i++)); do
        timeout --signal=INT --kill-after=10 $((DURATION_S + 30)) \
            openssl s_time -connect "127.0.0.1:$port" -new -time "$DURATION_S" >"$out.$i.txt" 2>&1 &
        pids+=("$!")
        BENCH_PIDS+=("$!")
    done
    for i in "${pids[@]}"; do
        wait "$i" || true
        _forget_pid "$i"
    done
    cat "$out".*.txt | awk '/connections in [0-9]+ real seconds/ {s += $1 / $4; n++}
        END {if (n) printf "%.1f\n", s; else print "-"}'
}

# ---------------------------------------------------------------- idle memory

per_conn() { # before_kb after_kb connections -> bytes per connection
    awk -v a="$1" -v b="$2" -v n="$3" 'BEGIN {
        if (a ~ /^[0-9]+$/ && b ~ /^[0-9]+$/ && n > 0) printf "%.0f\n", (b - a) * 1024 / n; else print "-"
    }'
}

# idle_run NAME KEY: sets IDLE_RSS, IDLE_ANON (bytes per connection),
# IDLE_HELD and IDLE_NOTE.
idle_run() {
    local p="$1" k="$2" pid rss0 anon0 rss1 anon1 i log="$RAW/idle_${p}_$k.client.log"
    start_proxy "$p" "$k"
    pid="${PID_OF[$p]}"
    sleep 1
    rss0="$(rss_kb "$pid" VmRSS)" anon0="$(rss_kb "$pid" RssAnon)"
    local extra=()
    if [[ "$IDLE_REQUEST" == 1 ]]; then extra=(--request); fi
    # Held for at most 600 s; stopped by PID as soon as the reading is done.
    timeout --signal=INT --kill-after=10 660 python3 "$BENCH_DIR/tls_idle_client.py" \
        --target "127.0.0.1:${PORT_OF[$p]}" --connections "$IDLE_CONNS" --sources "$(sources_list "$SOURCES")" \
        --hold 600 "${extra[@]}" >"$log" 2>&1 &
    local cpid=$!
    BENCH_PIDS+=("$cpid")
    for ((i = 0; i < 3000; i++)); do # up to 300 s for the handshakes
        grep -q '^READY' "$log" 2>/dev/null && break
        pid_alive "$cpid" || break
        sleep 0.1
    done
    sleep "$SETTLE"
    rss1="$(rss_kb "$pid" VmRSS)" anon1="$(rss_kb "$pid" RssAnon)"
    IDLE_HELD="$(sed -n 's/^READY held=\([0-9]*\).*/\1/p' "$log" | awk 'NR == 1')"
    IDLE_HELD="${IDLE_HELD:-0}"
    log "$p ($k) idle: $IDLE_HELD TLS connections, VmRSS $rss0 -> $rss1 kB, RssAnon $anon0 -> $anon1 kB"
    stop_pid "$cpid" INT 20 || true
    IDLE_NOTE="$(grep '^RESULT' "$log" | sed 's/^RESULT //' || true)"
    IDLE_RSS="$(per_conn "$rss0" "$rss1" "$IDLE_HELD")"
    IDLE_ANON="$(per_conn "$anon0" "$anon1" "$IDLE_HELD")"
    stop_proxy "$p"
}

# ---------------------------------------------------------------- main

raise_nofile
if [[ -z "${TIDEGATE_BIN:-}" ]]; then build_tidegate; fi
[[ -x "$TIDEGATE_BIN" ]] || die "no executable at '$TIDEGATE_BIN'"
cg_init
MACHINE="$(describe_machine)"
HAPROXY_VERSION="$(haproxy -v 2>/dev/null | awk 'NR == 1 {print $3}')"
OPENSSL_VERSION="$(openssl version)"

start_server "$RAW/backend.log" "$TIDEGATE_BIN" backend --listen "127.0.0.1:$BACKEND_PORT" --profile 0 --name b1
BACKEND_WRAP="$SERVER_PID"

rows=()
verdicts=()
for k in "${KEY_LIST[@]}"; do
    gen_cert "$k"
    write_configs "$k"
    declare -A NEG=() KA=() KA_RUNS=() KA_ERR=() HS=() HS_RUNS=() HS_ERR=() FH=() FH_RUNS=() MEM=() MEM_ANON=() MEM_HELD=()
    if has_part keepalive || has_part handshake; then
        for p in "${PROXY_LIST[@]}"; do
            start_proxy "$p" "$k"
            cg_cap "$p" "$QUOTA" "${PID_OF[$p]}"
            NEG[$p]="$(negotiated "$p")"
            log "$p ($(key_desc "$k")): pid ${PID_OF[$p]}, capped at $QUOTA core, negotiates ${NEG[$p]}"
        done
        for p in "${PROXY_LIST[@]}"; do # warm-up, not recorded
            port="${PORT_OF[$p]}"
            run_bounded 40 "$RAW/warmup_${p}_$k.txt" wrk -t1 -c"$CONNECTIONS" -d2s "https://localhost:$port/"
        done
        declare -A kav=() kae=() hsv=() hse=() fhv=()
        for ((r = 1; r <= REPS; r++)); do
            for p in "${PROXY_LIST[@]}"; do
                port="${PORT_OF[$p]}"
                if has_part keepalive; then
                    f="$RAW/keepalive_${p}_${k}_r$r.txt"
                    run_wrk "$f" "$CONNECTIONS"
                    read -r errs non2xx rps _ _ <<<"$(wrk_fields "$f")"
                    kav[$p]+="${rps:-0} " kae[$p]=$((${kae[$p]:-0} + errs + non2xx))
                    log "rep $r/$REPS $k $p keep-alive: ${rps:-?} req/s (errors $((errs + non2xx)), rc $RUN_RC)"
                    sleep "$PAUSE"
                fi
                if has_part handshake; then
                    rate="$(full_handshakes "$RAW/full_${p}_${k}_r$r")"
                    fhv[$p]+="$rate "
                    log "rep $r/$REPS $k $p full handshakes (s_time -new x $HS_CLIENTS): $rate /s"
                    sleep "$PAUSE"
                    f="$RAW/handshake_${p}_${k}_r$r.txt"
                    run_wrk "$f" "$HS_CONNECTIONS" -H 'Connection: close'
                    read -r errs non2xx rps _ _ <<<"$(wrk_fields "$f")"
                    hsv[$p]+="${rps:-0} " hse[$p]=$((${hse[$p]:-0} + errs + non2xx))
                    log "rep $r/$REPS $k $p handshakes: ${rps:-?} /s (errors $((errs + non2xx)), rc $RUN_RC)"
                    sleep "$PAUSE"
                fi
            done
        done
        for p in "${PROXY_LIST[@]}"; do
            # shellcheck disable=SC2086 # word splitting of the run lists is meant
            {
                KA[$p]="$(median ${kav[$p]:-})" HS[$p]="$(median ${hsv[$p]:-})"
                KA_RUNS[$p]="$(printf '%.0f/' ${kav[$p]:-0} | sed 's:/$::')"
                HS_RUNS[$p]="$(printf '%.0f/' ${hsv[$p]:-0} | sed 's:/$::')"
                FH[$p]="$(median ${fhv[$p]:-})"
                FH_RUNS[$p]="$(printf '%s/' ${fhv[$p]:--} | sed 's:/$::')"
            }
            KA_ERR[$p]="${kae[$p]:-0}" HS_ERR[$p]="${hse[$p]:-0}"
            stop_proxy "$p"
        done
        cg_drop_all
        unset kav kae hsv hse fhv
    fi
    if has_part idle; then
        for p in "${PROXY_LIST[@]}"; do
            idle_run "$p" "$k"
            MEM[$p]="$IDLE_RSS" MEM_ANON[$p]="$IDLE_ANON" MEM_HELD[$p]="$IDLE_HELD"
            NEG[$p]="${NEG[$p]:-$(awk '{for (i = 1; i <= NF; i++) if ($i ~ /^(protocol|cipher)=/) {sub(/^[a-z]*=/, "", $i); printf "%s ", $i}}' <<<"$IDLE_NOTE")}"
            log "$p ($k) idle client: $IDLE_NOTE"
            sleep 2
        done
    fi
    for p in "${PROXY_LIST[@]}"; do
        ka_ratio="-" hs_ratio="-" mem_ratio="-" fh_ratio="-"
        if [[ "$p" == tidegate && -n "${PORT_OF[haproxy]:-}" && " ${PROXY_LIST[*]} " == *" haproxy "* ]]; then
            ka_ratio="$(ratio "${KA[tidegate]:--}" "${KA[haproxy]:--}")"
            hs_ratio="$(ratio "${HS[tidegate]:--}" "${HS[haproxy]:--}")"
            fh_ratio="$(ratio "${FH[tidegate]:--}" "${FH[haproxy]:--}")"
            mem_ratio="$(ratio "${MEM[tidegate]:--}" "${MEM[haproxy]:--}")"
        fi
        rows+=("| $(key_desc "$k") | $p | ${NEG[$p]:--} | $(fmt "${KA[$p]:--}" 0) | ${KA_RUNS[$p]:--} | ${KA_ERR[$p]:--} | $ka_ratio | $(fmt "${FH[$p]:--}" 0) | ${FH_RUNS[$p]:--} | $fh_ratio | $(fmt "${HS[$p]:--}" 0) | ${HS_RUNS[$p]:--} | ${HS_ERR[$p]:--} | $hs_ratio | ${MEM[$p]:--} | ${MEM_ANON[$p]:--} | ${MEM_HELD[$p]:--} |")
        if [[ "$p" == tidegate ]]; then
            v="$(key_desc "$k"):"
            [[ "$ka_ratio" != - ]] && v+=" keep-alive ${ka_ratio}x HAProxy (target >= 1.3: $(awk -v x="$ka_ratio" 'BEGIN {print (x >= 1.3) ? "PASS" : "FAIL"}'));"
            [[ "$fh_ratio" != - ]] && v+=" full handshakes ${fh_ratio}x (target >= 1.0: $(awk -v x="$fh_ratio" 'BEGIN {print (x >= 1.0) ? "PASS" : "FAIL"}'));"
            [[ "$hs_ratio" != - ]] && v+=" wrk new connections (resumed) ${hs_ratio}x;"
            [[ "${MEM[$p]:--}" != - ]] && v+=" idle ${MEM[$p]} B/conn (target <= 8192: $(awk -v x="${MEM[$p]}" 'BEGIN {print (x <= 8192) ? "PASS" : "FAIL"}'))"
            verdicts+=("$v")
        fi
    done
    unset NEG KA KA_RUNS KA_ERR HS HS_RUNS HS_ERR FH FH_RUNS MEM MEM_ANON MEM_HELD
done
stop_pid "$BACKEND_WRAP" INT 10 || true

{
    echo "# TLS termination: tidegate and HAProxy"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $MACHINE; HAProxy $HAPROXY_VERSION, $OPENSSL_VERSION (wrk, s_client and HAProxy's TLS)."
    echo "Each proxy: 1 worker / 1 thread, capped at $QUOTA core (cgroup, ${CG_PERIOD} us period) for the wrk runs, in front of"
    echo "one \`tidegate backend --profile 0\` (not capped). $REPS interleaved reps of ${DURATION}; medians; ratio = tidegate / HAProxy."
    echo "Keep-alive: \`wrk -t1 -c$CONNECTIONS https://localhost:P/\`. Full handshakes: $HS_CLIENTS parallel \`openssl s_time -new\` (no"
    echo "resumption, no request), summed. wrk new conns: \`wrk -t1 -c$HS_CONNECTIONS -H 'Connection: close'\`, one connection per"
    echo "request; wrk's SSL_clear keeps the session, so these handshakes resume (PSK + ECDHE, no signature)."
    echo "Negotiated = protocol, cipher suite and key exchange"
    echo "group with OpenSSL's client defaults. Idle: $IDLE_CONNS TLS connections (handshake done$([[ "$IDLE_REQUEST" == 1 ]] && echo ", one GET each"), then idle) from"
    echo "$SOURCES source addresses to a fresh, uncapped proxy; (VmRSS idle - before) x 1024 / held, bytes; user space only."
    echo "Errors: wrk socket errors + non-2xx, summed over the reps. The machine's 2 cores are shared with other work: compare"
    echo "ratios within this run only."
    echo
    echo "| Key | Proxy | Negotiated | Keep-alive req/s | runs | err | ratio | Full handshakes/s | runs | ratio | wrk new conns/s (resumed) | runs | err | ratio | Idle B/conn (VmRSS) | (RssAnon) | held |"
    echo "|---|---|---|---:|---|---:|---:|---:|---|---:|---:|---|---:|---:|---:|---:|---:|"
    printf '%s\n' "${rows[@]}"
    if ((${#verdicts[@]})); then
        echo
        printf -- '- %s\n' "${verdicts[@]}"
    fi
} | tee "$REPORT"
log "wrote $REPORT"
