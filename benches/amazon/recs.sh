#!/usr/bin/env bash
# Recommendation serving under open-loop load: `casebook load amazon --mix recs=100`
# (GET /v1/recommendations/{user}?limit=10, Zipf users, latency from the intended
# send time) against a fresh release `casebook up --case amazon` (default [amazon]
# config: answer cache 5 s TTL, shedder on), at each rate in $RATES for $SECONDS_PER_RATE.
# Before the measured rates, a warm-up teaches the speed layer some taste (the
# default mix: views, adds, orders) so answers are personal, not all the fallback.
#
#   benches/amazon/recs.sh                      # 2000 5000 10000 /s, 10 s each
#   RATES="10000" SECONDS_PER_RATE=20 benches/amazon/recs.sh
#
# Prints a markdown table: rate asked, answered/s, p50/p99 ms, shed and errors,
# the answer cache's hit ratio over the run (from the server's /metrics: cache
# `recs-answers`), the fallback list's recomputations, and the CPU seconds the
# server and the generator used (where the time goes on the shared cores).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
RATES=${RATES:-"2000 5000 10000"}
SECONDS_PER_RATE=${SECONDS_PER_RATE:-10}
USERS=${USERS:-10000}
WORK=$(mktemp -d)
PID=

cleanup() {
    [ -n "$PID" ] && { kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; }
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

if [ -z "${CASEBOOK:-}" ]; then
    echo "building (release)..." >&2
    cargo build --release -q -p casebook --manifest-path "$ROOT/Cargo.toml"
    CASEBOOK=${CARGO_TARGET_DIR:-$ROOT/target}/release/casebook
fi

PORT=$(free_port)
CPORT=$(free_port)
CASEBOOK_AMAZON__HTTP_PORT=$PORT "$CASEBOOK" --data-dir "$WORK/data" --control-port "$CPORT" \
    up --case amazon >"$WORK/up.log" 2>&1 &
PID=$!
for _ in $(seq 1 300); do
    curl -sf "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && break
    sleep 0.1
done

metric() { # name cache-label
    curl -sf "http://127.0.0.1:$PORT/metrics" |
        awk -v n="$1" -v c="$2" 'index($0, n"{") == 1 && (c == "" || index($0, "cache=\""c"\"")) { s += $NF } END { print s + 0 }'
}
cpu_of() { # pid -> CPU seconds (user + system)
    awk -v t="$(getconf CLK_TCK)" '{ print ($14 + $15) / t }' "/proc/$1/stat"
}

echo "warm-up: the default mix at 300/s for 10 s" >&2
"$CASEBOOK" --data-dir "$WORK/data" --control-port "$CPORT" load amazon --target "127.0.0.1:$PORT" \
    --rate 300 --duration 10s --users "$USERS" --json --no-progress >/dev/null
curl -sf -X POST "http://127.0.0.1:$PORT/v1/recommendations/rebuild" >/dev/null || true

echo "| rate asked | answered/s | p50 / p99 ms | shed / errors+dropped | answer-cache hit ratio | popular list recomputed | CPU s: server / generator | load |"
echo "|---|---|---|---|---|---|---|---|"
for rate in $RATES; do
    hits0=$(metric cache_hits_total recs-answers)
    miss0=$(metric cache_misses_total recs-answers)
    pop0=$(metric amazon_recs_popular_recomputed_total "")
    cpu0=$(cpu_of "$PID")
    "$CASEBOOK" --data-dir "$WORK/data" --control-port "$CPORT" load amazon --target "127.0.0.1:$PORT" \
        --mix recs=100 --stock 0 --rate "$rate" --duration "${SECONDS_PER_RATE}s" --users "$USERS" \
        --max-in-flight 8192 --json --no-progress >"$WORK/recs-$rate.json" &
    gen=$!
    gencpu=0
    while kill -0 "$gen" 2>/dev/null; do
        gencpu=$(cpu_of "$gen" 2>/dev/null || echo "$gencpu")
        sleep 0.5
    done
    wait "$gen"
    cpu1=$(cpu_of "$PID")
    hits1=$(metric cache_hits_total recs-answers)
    miss1=$(metric cache_misses_total recs-answers)
    pop1=$(metric amazon_recs_popular_recomputed_total "")
    python3 - "$WORK/recs-$rate.json" "$rate" "$hits0" "$hits1" "$miss0" "$miss1" "$pop0" "$pop1" \
        "$cpu0" "$cpu1" "$gencpu" "$(cut -d' ' -f1 /proc/loadavg)" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
rate = float(sys.argv[2])
h0, h1, m0, m1, p0, p1, c0, c1, g, load = map(float, sys.argv[3:13])
c = next(c for c in r["phases"][0]["load"]["classes"] if c["class"] == "recs")
secs = r["phases"][0]["load"]["elapsed_ms"] / 1000.0
hits, misses = h1 - h0, m1 - m0
ratio = hits / (hits + misses) if hits + misses else float("nan")
print(f'| {rate:,.0f}/s | {c["ok"] / secs:,.0f}/s | {c["p50_ms"]:.1f} / {c["p99_ms"]:.1f} | '
      f'{c["shed"]:,} / {c["error"] + c["dropped"]:,} | {ratio:.3f} ({hits:,.0f} of {hits + misses:,.0f}) | '
      f'{p1 - p0:.0f} | {c1 - c0:.1f} / {g:.1f} | {load} |')
PY
done
