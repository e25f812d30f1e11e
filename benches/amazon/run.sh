#!/usr/bin/env bash
# Reservations/s with zero oversell, side by side, one generator for all:
# casebook (release build, default [amazon] config: fsync before the reply) vs
# PostgreSQL (the machine's server, conditional UPDATE + idempotency insert in one
# transaction, synchronous_commit on) vs Redis (a private redis-server with a Lua
# script and appendfsync always). 10,000 Zipf SKUs, then one hot SKU; 32 clients;
# 5 % duplicate keys. After each run the generator reads the stock back and fails
# on any oversold or unconserved SKU.
#
#   benches/amazon/run.sh                 # 20 s per run
#   SECONDS_PER_RUN=60 benches/amazon/run.sh
#   TARGETS="ours redis" benches/amazon/run.sh
#   ROUNDS=3 benches/amazon/run.sh        # the targets interleaved, 3 times over
#   PG_URL="host=127.0.0.1 port=5432 user=postgres dbname=test" (default)
#
# Writes one JSON line per run to $OUT (default: a temp file) and prints a
# markdown table. Never touches Redis's 6379: its server is private, on a free port,
# with its data in a temporary directory.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SECONDS_PER_RUN=${SECONDS_PER_RUN:-20}
CLIENTS=${CLIENTS:-32}
TARGETS=${TARGETS:-"ours postgres redis"}
PG_URL=${PG_URL:-"host=127.0.0.1 port=5432 user=postgres dbname=test"}
WORK=$(mktemp -d)
OUT=${OUT:-$WORK/results.jsonl}
PIDS=()

cleanup() {
    for pid in "${PIDS[@]}"; do
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK/ours" "$WORK/redis"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for() { # what, command...
    local what=$1
    shift
    for _ in $(seq 1 300); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    echo "run.sh: $what did not come up" >&2
    exit 1
}

echo "building (release)..." >&2
cargo build --release -q -p casebook --manifest-path "$ROOT/Cargo.toml"
cargo build --release -q --manifest-path "$ROOT/benches/amazon/Cargo.toml"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
CASEBOOK=$TARGET_DIR/release/casebook
BENCH_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/benches/amazon/target}
BENCH=$BENCH_TARGET_DIR/release/amazon-reservations-bench

# The disk's fdatasync latency right now (it is bimodal on some VMs, and every
# target here waits for it before answering): the median of 200 4-KiB syncs.
fsync_probe() {
    python3 - "$WORK" <<'PY'
import os, statistics, sys, time
path = os.path.join(sys.argv[1], "fsync-probe")
fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
times = []
for i in range(200):
    os.pwrite(fd, b"x" * 4096, (i % 16) * 4096)
    t = time.perf_counter()
    os.fdatasync(fd)
    times.append(time.perf_counter() - t)
os.close(fd)
os.unlink(path)
print(f"{statistics.median(times) * 1000:.2f}")
PY
}

bench() { # target url config [extra args]
    local target=$1 url=$2 config=$3
    shift 3
    local probe
    probe=$(fsync_probe)
    "$BENCH" --target "$target" --url "$url" --clients "$CLIENTS" \
        --seconds "$SECONDS_PER_RUN" --config "$config" "$@" |
        python3 -c 'import json, sys; r = json.loads(sys.stdin.read()); r["fsync_probe_ms"] = float(sys.argv[1]); r["load"] = sys.argv[2]; print(json.dumps(r))' \
            "$probe" "$(cut -d' ' -f1 /proc/loadavg)" | tee -a "$OUT"
}

run_ours() { # extra args
    rm -rf "$WORK/ours"
    local port
    port=$(free_port)
    CASEBOOK_AMAZON__INVENTORY_ONLY=true CASEBOOK_AMAZON__HTTP_PORT=$port \
        "$CASEBOOK" --data-dir "$WORK/ours" --control-port 0 up --case amazon \
        >/dev/null 2>"$WORK/ours.log" &
    local pid=$!
    PIDS+=("$pid")
    wait_for "casebook" curl -sf "http://127.0.0.1:$port/health"
    bench ours "http://127.0.0.1:$port" \
        "casebook release, default [amazon] (256 shards, WAL fdatasync before reply)" "$@"
    kill "$pid"
    wait "$pid" 2>/dev/null || true
}

run_postgres() { # extra args
    local version
    version=$(psql "$PG_URL" -Atc "show server_version") # fails early if unreachable
    local sync
    sync=$(psql "$PG_URL" -Atc "show synchronous_commit")/$(psql "$PG_URL" -Atc "show fsync")
    bench postgres "$PG_URL" \
        "PostgreSQL $version, synchronous_commit/fsync $sync, one statement per reservation" "$@"
    psql "$PG_URL" -qc "DROP TABLE IF EXISTS bench_reservations, bench_keys, bench_inventory" >/dev/null
}

run_redis() { # extra args
    rm -rf "$WORK/redis"
    mkdir -p "$WORK/redis"
    local port
    port=$(free_port)
    redis-server --port "$port" --bind 127.0.0.1 --dir "$WORK/redis" \
        --appendonly yes --appendfsync always --save '' --daemonize no \
        >"$WORK/redis.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    wait_for "redis-server" redis-cli -p "$port" ping
    local version
    version=$(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/')
    bench redis "redis://127.0.0.1:$port" \
        "Redis $version, Lua script, appendonly + appendfsync always" "$@"
    kill "$pid"
    wait "$pid" 2>/dev/null || true
}

ROUNDS=${ROUNDS:-1}
for round in $(seq 1 "$ROUNDS"); do
    for shape in zipf hot; do
        args=()
        [ "$shape" = hot ] && args=(--hot)
        for target in $TARGETS; do
            echo "== round $round: $target, $shape ==" >&2
            "run_$target" "${args[@]}"
        done
    done
done

echo
echo "| workload | target (config) | reservation decisions/s | p50 / p99 / p99.9 ms | duplicates (mismatched) | oversold SKUs | fdatasync probe ms / load |"
echo "|---|---|---|---|---|---|---|"
python3 - "$OUT" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    shape = "1 hot SKU" if r["hot"] else f'{r["skus"]:,} Zipf SKUs'
    print(f'| {shape}, {r["clients"]} clients | {r["target"]} ({r["config"]}) | '
          f'{r["decisions_per_s"]:,.0f} | '
          f'{r["p50_ms"]:.2f} / {r["p99_ms"]:.2f} / {r["p999_ms"]:.2f} | '
          f'{r["duplicates"]:,} ({r["duplicates_mismatched"]}) | {r["oversold_skus"]} | '
          f'{r["fsync_probe_ms"]:.2f} / {r["load"]} |')
PY
echo >&2
echo "results: $OUT" >&2
