#!/usr/bin/env bash
# The README's dashboard pictures: `tidegate demo` under load, shot with
# headless Chromium at 1400 px (docs/dashboard.png) and 1000 px
# (docs/dashboard-1000.png).
#
#   cargo build --release && bash docs/screenshot.sh
#
# Bounded: wrk drives the demo for LOAD_S seconds (default 20, the
# demo's own `wrk -t4 -c100` suggestion made smaller for a shared
# machine); the pictures are taken while the load still flows, then the
# demo is stopped by its PID. The demo's ports (8081-8083, 9090, 9091)
# must be free. Needs wrk and chromium (.ci/run installs chromium).
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${TIDEGATE_BIN:-target/release/tidegate}
LOAD_S=${LOAD_S:-20}
CHROMIUM=${CHROMIUM:-chromium}
ADMIN=127.0.0.1:9091
OUT=$(mktemp -d)

"$BIN" demo --workers 2 >"$OUT/demo.log" 2>&1 &
DEMO=$!
WRK=
cleanup() {
    [[ -n "$WRK" ]] && kill "$WRK" 2>/dev/null || true
    kill -INT "$DEMO" 2>/dev/null || true
    wait "$DEMO" 2>/dev/null || true
    rm -rf "$OUT/profile-"*
}
trap cleanup EXIT

for _ in $(seq 50); do
    curl -fs "http://$ADMIN/healthz" >/dev/null && break
    sleep 0.1
done
timeout $((LOAD_S + 10)) wrk -t2 -c40 -d"${LOAD_S}s" http://127.0.0.1:9090/ >"$OUT/wrk.log" 2>&1 &
WRK=$!
# Shoot near the end of the load: the trend then holds LOAD_S seconds.
sleep $((LOAD_S - 4))

shot() { # width height file
    timeout 60 "$CHROMIUM" --headless --no-sandbox --disable-gpu \
        --disable-dev-shm-usage --no-first-run --hide-scrollbars \
        --user-data-dir="$OUT/profile-$1" --virtual-time-budget=3000 \
        --window-size="$1,$2" --screenshot="$3" "http://$ADMIN/" >/dev/null 2>&1
}
shot 1400 1060 docs/dashboard.png
shot 1000 1500 docs/dashboard-1000.png
wait "$WRK" || true
WRK=
cat "$OUT/wrk.log"
kill -INT "$DEMO" 2>/dev/null || true
wait "$DEMO" 2>/dev/null || true
grep -E "requests in|latency ms" "$OUT/demo.log" || true
ls -l docs/dashboard.png docs/dashboard-1000.png
