#!/usr/bin/env bash
# The Netflix service plane through the gateway, at the default configuration:
# a release `casebook up --case netflix` in a scratch dir, then
# `casebook load netflix --api` (signed-in users: home 40 %, search 30 %, play +
# heartbeat 15 %, billing 10 %, titles 5 %; open loop) at each rate, and the
# gateway's own per-route view (`/admin/routes`) after each step.
# Usage: benches/netflix/api.sh [RATES="50 100 200"] [SECONDS_PER_RATE=15]
# Environment: API_BENCH_DIR (scratch, default /tmp/casebook-api-bench), USERS (20).
set -euo pipefail

RATES=${1:-"50 100 200"}
SECONDS_PER_RATE=${2:-15}
DIR=${API_BENCH_DIR:-/tmp/casebook-api-bench}
USERS=${USERS:-20}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)

(cd "$ROOT" && cargo build --release -p casebook >&2)
CASEBOOK=${CARGO_TARGET_DIR:-$ROOT/target}/release/casebook

rm -rf "$DIR" && mkdir -p "$DIR"
"$CASEBOOK" --data-dir "$DIR/data" up --case netflix >"$DIR/up.log" 2>&1 &
UP=$!
trap 'kill $UP 2>/dev/null || true; wait 2>/dev/null || true' EXIT
for _ in $(seq 600); do
    curl -fs localhost:8080/admin/routes >/dev/null 2>&1 && break
    sleep 0.1
done
# The search index and the sample title (encoded at first start: with ffmpeg, a
# minute or so) come up in the background; plays before it would be 404s.
for _ in $(seq 1200); do
    curl -fs localhost:8081/v1/titles | grep -q '"id"' && break
    sleep 0.25
done
for _ in $(seq 300); do
    curl -fs 'localhost:8088/api/v1/search?q=sample' | grep -q '"fallback":false' && break
    sleep 0.2
done

for rate in $RATES; do
    echo "=== $rate requests/s for ${SECONDS_PER_RATE}s (load $(cut -d' ' -f1 /proc/loadavg)) ==="
    "$CASEBOOK" --data-dir "$DIR/data" load netflix --api --no-progress \
        --rate "$rate" --duration "${SECONDS_PER_RATE}s" --users "$USERS" \
        --json >"$DIR/load-$rate.json"
    python3 - "$DIR/load-$rate.json" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
print(f"{'class':8} {'sent':>6} {'ok':>6} {'shed':>5} {'err':>5} {'drop':>5} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
for c in report["load"]["classes"]:
    print(f"{c['class']:8} {c['sent']:>6} {c['ok']:>6} {c['shed']:>5} {c['error']:>5} {c['dropped']:>5} "
          f"{c['p50_ms']:>8.1f} {c['p99_ms']:>8.1f} {c['max_ms']:>8.1f}")
print("fallbacks:", {k: v for k, v in report["fallbacks"].items() if v})
PY
    curl -fs localhost:8080/admin/routes >"$DIR/routes-$rate.json" || true
    python3 - "$DIR/routes-$rate.json" <<'PY'
import json, sys
for r in json.load(open(sys.argv[1]))["routes"]:
    if r["requests"]:
        print(f"  gateway route {r['name']:8} {r['requests']:>6} requests in its window, "
              f"error {r['error_percent']} %, latency {r['latency_ms']}, breaker {r['breaker']['state']}")
PY
done
