#!/usr/bin/env bash
# Cart add p99.9 at a constant rate while the preferred replica is killed mid-run
# (and restarted), counting adds rejected and lost: a release `casebook up --case
# amazon` on a fresh data dir, then the `cart_bench` example against it.
#
#   cargo build --release -p casebook -p casebook-amazon --example cart_bench
#   benches/amazon/cart.sh
#
# Environment: CART_BENCH_BIN (default target/release/casebook), CART_BENCH_TOOL
# (default target/release/examples/cart_bench), BENCH_OUT (/tmp/casebook-cart-bench),
# RATE (5000), DURATION (60s), KILL_AT (20s), RESTART_AT (40s), USERS (50000),
# API_PORT (18100), CONTROL_PORT (17700).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
BIN=${CART_BENCH_BIN:-$TARGET/release/casebook}
TOOL=${CART_BENCH_TOOL:-$TARGET/release/examples/cart_bench}
OUT=${BENCH_OUT:-/tmp/casebook-cart-bench}
API_PORT=${API_PORT:-18100}
CONTROL_PORT=${CONTROL_PORT:-17700}

rm -rf "$OUT"
mkdir -p "$OUT"
SERVER_PID=
stop_server() {
    if [ -n "$SERVER_PID" ]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=
    fi
}
trap stop_server EXIT

CASEBOOK_AMAZON__HTTP_PORT=$API_PORT "$BIN" up --case amazon --data-dir "$OUT/data" \
    --control-port "$CONTROL_PORT" >"$OUT/up.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 300); do
    if curl -sf "http://127.0.0.1:$API_PORT/health" >/dev/null 2>&1; then break; fi
    sleep 0.1
done
sleep 2 # the replicas list each other (discovery_refresh)

"$TOOL" --api "http://127.0.0.1:$API_PORT" --control "http://127.0.0.1:$CONTROL_PORT" \
    --token-file "$OUT/data/control.token" --rate "${RATE:-5000}" \
    --duration "${DURATION:-60s}" --kill-at "${KILL_AT:-20s}" \
    --restart-at "${RESTART_AT:-40s}" --users "${USERS:-50000}" | tee "$OUT/report.txt"
