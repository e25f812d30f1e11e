#!/usr/bin/env bash
# The CDN tier side by side with nginx's proxy_cache, same origin, same run:
#   1. cached-segment serving: requests/s and MB/s (wrk) for a 2 MiB segment and
#      a small playlist, both tiers warmed first;
#   2. the same Zipf trace through each with the same cache size: origin bytes and
#      byte-hit ratio (ours: memory, TinyLFU; nginx: proxy_cache, LRU on disk).
# Needs nginx (Debian `nginx-light`) and wrk: `apt-get install -y nginx-light wrk`.
# Usage: benches/netflix/cdn.sh [WRK_SECONDS] [TRACE_REQUESTS]
# Environment: CDN_BENCH_DIR (scratch, default /tmp/casebook-cdn-bench),
# CONNECTIONS (wrk, default 32), CACHE_MB (trace cache size, default: 5 % of the
# trace's catalogue), OBJECTS (default 4000), ZIPF (default 0.9), SEED (default 7).
set -euo pipefail

SECONDS_PER_RUN=${1:-10}
TRACE_REQUESTS=${2:-40000}
DIR=${CDN_BENCH_DIR:-/tmp/casebook-cdn-bench}
CONNECTIONS=${CONNECTIONS:-32}
OBJECTS=${OBJECTS:-4000}
ZIPF=${ZIPF:-0.9}
SEED=${SEED:-7}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)

for tool in nginx wrk; do
    command -v $tool >/dev/null || { echo "needs $tool: apt-get install -y nginx-light wrk" >&2; exit 1; }
done

rm -rf "$DIR" && mkdir -p "$DIR"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    [ -f "$DIR/nginx/nginx.pid" ] && kill "$(cat "$DIR/nginx/nginx.pid")" 2>/dev/null || true
    wait 2>/dev/null || true
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 400); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }

(cd "$ROOT" && cargo build --release -p casebook-edge --example cdn_bench -j 2 >&2)
BENCH=${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/cdn_bench

# Sum of the trace catalogue's sizes (the same function the origin serves).
catalogue_bytes() {
    python3 - "$OBJECTS" <<'PY'
import sys
n = int(sys.argv[1]); M = (1 << 64) - 1
def size(i):
    x = (i * 0x9e3779b97f4a7c15) & M
    x = ((x << 17) | (x >> 47)) & M
    return 20_000 + ((x ^ 0x5555) % 180_000)
print(sum(size(i) for i in range(n)))
PY
}
CATALOGUE=$(catalogue_bytes)
CACHE_BYTES=${CACHE_MB:+$((CACHE_MB << 20))}
CACHE_BYTES=${CACHE_BYTES:-$((CATALOGUE / 20))}

# Each start_* sets PORT (command substitution would lose the PIDs and hang on the pipe).
start_origin() {
    PORT=$(free_port)
    "$BENCH" origin --listen "127.0.0.1:$PORT" >/dev/null 2>&1 &
    PIDS+=($!)
    wait_port "$PORT"
}

start_edge() { # upstream_port memory_bytes
    PORT=$(free_port)
    "$BENCH" edge --listen "127.0.0.1:$PORT" --upstream "http://127.0.0.1:$1" \
        --key "$DIR/signing.key" --memory-bytes "$2" --data-dir "$DIR/edge-$PORT" >/dev/null 2>&1 &
    PIDS+=($!)
    wait_port "$PORT"
}

start_nginx() { # upstream_port max_size_bytes
    local port; port=$(free_port)
    local dir=$DIR/nginx
    rm -rf "$dir" && mkdir -p "$dir/cache" "$dir/tmp"
    cat > "$dir/nginx.conf" <<CONF
user root;
worker_processes 2;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    # The cache manager enforces max_size in passes; make them frequent and large.
    proxy_cache_path $dir/cache levels=1:2 keys_zone=cdn:32m max_size=$2 inactive=7d use_temp_path=off
        manager_files=100000 manager_sleep=10ms manager_threshold=1000ms;
    upstream origin { server 127.0.0.1:$1; keepalive 32; }
    server {
        listen 127.0.0.1:$port;
        location /o/ {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache cdn;
            proxy_cache_key \$uri;
            proxy_cache_valid 200 7d;
            proxy_cache_lock on;
            add_header X-Cache \$upstream_cache_status;
        }
    }
}
CONF
    nginx -p "$dir" -c "$dir/nginx.conf" -g 'daemon on;'
    wait_port "$port"
    PORT=$port
}

stop_nginx() { kill "$(cat "$DIR/nginx/nginx.pid")"; sleep 0.5; }

origin_bytes() { curl -s "http://127.0.0.1:$1/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["bytes"])'; }

wrk_run() { # label url
    local out; out=$(wrk -t2 -c"$CONNECTIONS" -d"${SECONDS_PER_RUN}s" "$2")
    local rps mbs
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    mbs=$(echo "$out" | awk '/Transfer\/sec/ {v=$2; if (v ~ /GB/) {sub("GB","",v); v*=1024} else if (v ~ /KB/) {sub("KB","",v); v/=1024} else {sub("MB","",v)}; printf "%.1f", v}')
    printf '| %s | %s | %s |\n' "$1" "$rps" "$mbs"
}

echo "# CDN bench: $(date -u +%FT%TZ), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "wrk: 2 threads, $CONNECTIONS connections, ${SECONDS_PER_RUN}s per row; nginx $(nginx -v 2>&1 | cut -d/ -f2), 2 workers"
echo

# 1. Cached serving.
start_origin; ORIGIN=$PORT
start_edge "$ORIGIN" $((512 << 20)); EDGE=$PORT
start_nginx "$ORIGIN" $((1 << 30)); NGINX=$PORT
SEG_Q=$("$BENCH" sign --key "$DIR/signing.key" --path /o/bench/seg2m.ts)
PL_Q=$("$BENCH" sign --key "$DIR/signing.key" --path /o/bench/index.m3u8)
SMALL_Q=$("$BENCH" sign --key "$DIR/signing.key" --path /o/bench/small.ts)
OURS_SEG="http://127.0.0.1:$EDGE/o/bench/seg2m.ts?$SEG_Q"
OURS_PL="http://127.0.0.1:$EDGE/o/bench/index.m3u8?$PL_Q"
NGINX_SEG="http://127.0.0.1:$NGINX/o/bench/seg2m.ts"
NGINX_PL="http://127.0.0.1:$NGINX/o/bench/index.m3u8"
OURS_SMALL="http://127.0.0.1:$EDGE/o/bench/small.ts?$SMALL_Q"
NGINX_SMALL="http://127.0.0.1:$NGINX/o/bench/small.ts"
for url in "$OURS_SEG" "$OURS_PL" "$OURS_SMALL" "$NGINX_SEG" "$NGINX_PL" "$NGINX_SMALL"; do
    curl -s -o /dev/null -w '%{http_code} ' "$url"; curl -s -o /dev/null -D - "$url" | grep -i '^x-cache' | tr -d '\r'
done >&2
echo "| cached object | requests/s | MB/s |"
echo "|---|---|---|"
wrk_run "2 MiB segment, ours" "$OURS_SEG"
wrk_run "2 MiB segment, nginx" "$NGINX_SEG"
wrk_run "playlist (30 segments, rewritten + signed per URL, cached), ours" "$OURS_PL"
wrk_run "playlist (30 segments, as stored), nginx" "$NGINX_PL"
wrk_run "1 kB object, ours" "$OURS_SMALL"
wrk_run "1 kB object, nginx" "$NGINX_SMALL"
stop_nginx
echo

# 2. The same Zipf trace, same cache size, each against a fresh origin count.
echo "Zipf trace: $OBJECTS objects of 20–200 kB ($((CATALOGUE >> 20)) MiB), s=$ZIPF, $TRACE_REQUESTS requests, seed $SEED, one at a time; cache $((CACHE_BYTES >> 20)) MiB each"
echo
echo "| cache | requested MiB | origin MiB | byte-hit ratio | errors |"
echo "|---|---|---|---|---|"
trace_run() { # label base [key]
    local before after result
    before=$(origin_bytes "$ORIGIN")
    result=$("$BENCH" trace --base "$2" --objects "$OBJECTS" --requests "$TRACE_REQUESTS" --zipf "$ZIPF" --seed "$SEED" \
        --lru-bytes "$CACHE_BYTES" ${3:+--key "$3"})
    after=$(origin_bytes "$ORIGIN")
    LAST_TRACE=$result
    python3 - "$1" "$result" "$before" "$after" <<'PY'
import json, sys
label, result, before, after = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
origin = after - before
print(f"| {label} | {result['bytes'] / 2**20:.0f} | {origin / 2**20:.0f} | {1 - origin / result['bytes']:.3f} | {result['errors']} |")
PY
}
start_edge "$ORIGIN" "$CACHE_BYTES"; EDGE2=$PORT
trace_run "ours: memory, TinyLFU (moka), $((CACHE_BYTES >> 20)) MiB" "http://127.0.0.1:$EDGE2" "$DIR/signing.key"
start_nginx "$ORIGIN" "$CACHE_BYTES"; NGINX2=$PORT
trace_run "nginx proxy_cache, LRU, max_size $((CACHE_BYTES >> 20)) MiB" "http://127.0.0.1:$NGINX2"
NGINX_HELD=$(du -s --apparent-size -B1 "$DIR/nginx/cache" | cut -f1)
python3 - "$LAST_TRACE" "$CACHE_BYTES" <<'PY'
import json, sys
r, cache = json.loads(sys.argv[1]), int(sys.argv[2])
print(f"| exact LRU of {cache >> 20} MiB, simulated on the same trace | {r['bytes'] / 2**20:.0f} | {(r['bytes'] - r['lru_hit_bytes']) / 2**20:.0f} | {r['lru_hit_bytes'] / r['bytes']:.3f} | — |")
PY
# nginx enforces max_size in cache-manager passes (sleeping, as we read its source,
# until the LRU tail's `inactive` expiry): it may hold far more. Ours again at that size.
start_edge "$ORIGIN" "$NGINX_HELD"; EDGE3=$PORT
trace_run "ours: memory, TinyLFU, $((NGINX_HELD >> 20)) MiB (what nginx held on disk at the end)" "http://127.0.0.1:$EDGE3" "$DIR/signing.key"
echo
echo "nginx cache on disk after the trace: $((NGINX_HELD >> 20)) MiB in $(find "$DIR/nginx/cache" -type f | wc -l) files (max_size $((CACHE_BYTES >> 20)) MiB)"
