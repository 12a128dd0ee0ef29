#!/usr/bin/env bash
# benches/slow_head.sh: the proxy's CPU time for a request head that arrives
# one byte per TCP segment (a slow or hostile client).
#
# A 16 KiB head (just under http::MAX_HEAD, so it is accepted and answered
# 200) is sent one byte per send() with TCP_NODELAY and a short sleep between
# bytes, REPS times on fresh connections, to `tidegate proxy --workers 1` in
# front of one `tidegate backend --profile 0`. The proxy's CPU time is read
# from /proc/PID/stat (utime+stime, clock ticks) and, more precisely, from
# /proc/PID/task/*/schedstat (ns on CPU, summed over threads) before and
# after; the figure reported is per head. Target: under 20 ms.
#
# Environment: TIDEGATE_BIN (skip the build), REPS (3), HEAD_BYTES (16000),
# GAP_US (sleep between bytes, 20), PROXY_PORT (19390), BACKEND_PORT (19391).
# Each head is bounded by CLIENT_TIMEOUT seconds (60).

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REPS="${REPS:-3}"
HEAD_BYTES="${HEAD_BYTES:-16000}"
GAP_US="${GAP_US:-20}"
PROXY_PORT="${PROXY_PORT:-19390}"
BACKEND_PORT="${BACKEND_PORT:-19391}"
CLIENT_TIMEOUT="${CLIENT_TIMEOUT:-60}"

build_tidegate

# Process CPU time in clock ticks (utime + stime, all threads).
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# Nanoseconds on CPU, summed over the process's threads.
cpu_ns() { cat /proc/"$1"/task/*/schedstat | awk '{s += $1} END {printf "%d\n", s}'; }

start_server "$OUT_DIR/slow_head.backend.log" "$TIDEGATE_BIN" backend \
    --listen "127.0.0.1:$BACKEND_PORT" --profile 0
BACKEND_PID="$SERVER_PID"
start_server "$OUT_DIR/slow_head.proxy.log" "$TIDEGATE_BIN" proxy \
    --listen "127.0.0.1:$PROXY_PORT" --backend "127.0.0.1:$BACKEND_PORT" \
    --workers 1 --policy round-robin --header-timeout 60s
PROXY_PID="$SERVER_REAL_PID"

ticks0="$(cpu_ticks "$PROXY_PID")"
ns0="$(cpu_ns "$PROXY_PID")"
client_rc=0
timeout --signal=KILL "$((CLIENT_TIMEOUT * REPS))" python3 - "$PROXY_PORT" "$HEAD_BYTES" "$GAP_US" "$REPS" <<'EOF' || client_rc=$?
import socket, sys, time
port, size, gap_us, reps = (int(a) for a in sys.argv[1:5])
head = b"GET / HTTP/1.1\r\nHost: bench\r\n"
pad = b"X-Pad: " + b"a" * 190 + b"\r\n"  # 199 bytes: ~80 fields, under MAX_HEADERS (100)
while len(head) + len(pad) + 2 <= size:
    head += pad
head += b"X-Last: " + b"b" * max(0, size - len(head) - 12) + b"\r\n\r\n"
for rep in range(reps):
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    t0 = time.monotonic()
    for i in range(len(head)):
        s.send(head[i:i + 1])
        if gap_us:
            time.sleep(gap_us / 1e6)
    reply = s.recv(256)
    s.close()
    status = reply.split(b" ", 2)[1].decode() if reply.count(b" ") >= 2 else "none"
    print(f"head {rep + 1}: {len(head)} bytes in {time.monotonic() - t0:.2f} s, status {status}")
    if status != "200":
        sys.exit(1)
EOF
ticks1="$(cpu_ticks "$PROXY_PID")"
ns1="$(cpu_ns "$PROXY_PID")"
hz="$(getconf CLK_TCK)"

stop_server
stop_pid "$BACKEND_PID" INT 5 || true
[[ "$client_rc" == 0 ]] || die "the client failed (exit $client_rc)"

awk -v t="$((ticks1 - ticks0))" -v hz="$hz" -v ns="$((ns1 - ns0))" -v reps="$REPS" -v bytes="$HEAD_BYTES" 'BEGIN {
    printf "proxy CPU per %d-byte head sent one byte per segment: %.1f ms (schedstat), %.1f ms (/proc stat utime+stime, %d ticks of %d Hz over %d heads)\n",
        bytes, ns / reps / 1e6, t * 1000 / hz / reps, t, hz, reps
}' | tee "$OUT_DIR/slow_head.txt"
