#!/usr/bin/env bash
# The WhatsApp case side by side with Prosody 0.12: same machine, same run, same
# generator (`casebook load whatsapp`). Server pinned to one core, generator to the
# other. Writes every JSON report under $OUT and prints a summary.
#
#   cargo build --release -p casebook
#   benches/whatsapp/bench.sh [memory|logins|messages|flush|all]
#
# Environment: WA_BENCH_BIN (default target/release/casebook), BENCH_OUT
# (default /tmp/casebook-wa-bench), SERVER_CPU (0), LOAD_CPU (1), STEP_SECS (10), SYSTEMS,
# OUR_RATES / PROSODY_RATES (message rates to step through), SESSIONS ("1000 5000 15000"),
# OUR_ARCHIVE (false: like Prosody here, no message archive; true = the node's default),
# MSG_SM (false: the message steps run without XEP-0198 on both; true = the generator
# enables it when offered, and our node then stores every message durably first),
# TAG (suffix for report names and summary lines).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
# (Not CASEBOOK_*: that prefix belongs to the configuration loader.)
BIN=${WA_BENCH_BIN:-$REPO/target/release/casebook}
OUT=${BENCH_OUT:-/tmp/casebook-wa-bench}
OUR_PORT=25222
PROSODY_PORT=25223
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
STEP_SECS=${STEP_SECS:-10}
SESSIONS=${SESSIONS:-"1000 5000 15000"}
OUR_RATES=${OUR_RATES:-"5000 10000 20000 30000 40000 50000 60000"}
PROSODY_RATES=${PROSODY_RATES:-"500 1000 1500 2000 3000 4000 5000 6000 8000"}
MAX_USERS=15000
PASSWORD=load-pw
export PROSODY_ROOT=${PROSODY_ROOT:-$OUT/prosody}
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

wait_port() {
    for _ in $(seq 1 300); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "nothing listens on $1" >&2
    return 1
}

rss_kb() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }

# Accounts for our node, created once (PBKDF2 per account) and copied per start.
accounts() {
    if [ ! -f "$OUT/accounts/whatsapp/localhost/accounts.json" ]; then
        "$BIN" --data-dir "$OUT/accounts" load whatsapp --users $MAX_USERS --create-users \
            --connections 0 --rate 0 --duration 1ms --target 127.0.0.1:9 --no-progress >/dev/null
    fi
    if [ ! -d "$PROSODY_ROOT/data/localhost/accounts" ] ||
        [ "$(ls "$PROSODY_ROOT/data/localhost/accounts" | wc -l)" -lt $MAX_USERS ]; then
        "$REPO/benches/whatsapp/prosody.sh" users $MAX_USERS $PASSWORD >/dev/null
    fi
}

# Our node alone on SERVER_CPU, fresh state (accounts copied in), benchmark limits.
start_ours() {
    stop_server
    rm -rf "$OUT/ours"
    mkdir -p "$OUT/ours/whatsapp/localhost"
    cp "$OUT/accounts/whatsapp/localhost/accounts.json" "$OUT/ours/whatsapp/localhost/"
    # The per-connection rate limit (100 stanzas/s by default) is lifted: the message
    # steps send up to 120/s per connection.
    CASEBOOK_WHATSAPP__MAX_CONNECTIONS=19000 \
        CASEBOOK_WHATSAPP__ALLOW_INSECURE_PLAIN=true \
        CASEBOOK_WHATSAPP__ARCHIVE_MESSAGES=${OUR_ARCHIVE:-false} \
        CASEBOOK_WHATSAPP__MAX_STANZAS_PER_SECOND=1000000 \
        CASEBOOK_WHATSAPP__STANZA_BURST=1000000 \
        CASEBOOK_WHATSAPP__MAX_BYTES_PER_SECOND=1000000000 \
        CASEBOOK_METRICS_PUSH__ENABLED=false \
        taskset -c "$SERVER_CPU" "$BIN" --data-dir "$OUT/ours" --control-port 0 \
        --whatsapp-port $OUR_PORT --log warn up >"$OUT/ours.log" 2>&1 &
    SERVER_PID=$!
    wait_port $OUR_PORT
}

start_prosody() {
    stop_server
    rm -rf "$PROSODY_ROOT/data/localhost/offline"
    taskset -c "$SERVER_CPU" "$REPO/benches/whatsapp/prosody.sh" run $PROSODY_PORT \
        >"$OUT/prosody.log" 2>&1 &
    SERVER_PID=$!
    wait_port $PROSODY_PORT
}

# load NAME PORT ARGS...: one generator run on LOAD_CPU, JSON to $OUT/NAME.json.
load() {
    local name=$1 port=$2
    shift 2
    taskset -c "$LOAD_CPU" "$BIN" load whatsapp --target 127.0.0.1:"$port" --domain localhost \
        --users $MAX_USERS --password $PASSWORD --json --no-progress "$@" \
        >"$OUT/$name.json" 2>"$OUT/$name.err"
}

# Idle sessions, each system logged in with its benchmark mechanism (ours SCRAM-SHA-256,
# what clients use; Prosody PLAIN), at a login rate it keeps up with, so few logins
# are in flight at once (transient login state inflates the high-water mark).
memory() {
    for system in ${SYSTEMS:-ours prosody}; do
        for n in $SESSIONS; do
            # Prosody logs in ≈ 40-60/s here (one contended core); more in flight overflows
            # its listen backlog (128).
            if [ $system = ours ]; then start_ours; port=$OUR_PORT; lrate=300; lconc=2000
                mech=${OUR_MEMORY_MECH:-scram-sha-256}; else
                start_prosody; port=$PROSODY_PORT; lrate=60; lconc=64; mech=plain; fi
            sleep 1
            local before after
            before=$(rss_kb "$SERVER_PID")
            # Sources: 2 addresses keep every run far from the ephemeral port limit.
            load "memory-$system-$n${TAG:-}" $port --connections "$n" --sources 2 --mechanism $mech \
                --login-rate $lrate --login-concurrency $lconc --rate 0 --duration 15s &
            local gen=$!
            # Until every login is done (bounded: the expected login time + 60 s).
            for _ in $(seq 1 $(((n / lrate + 60) * 10))); do
                grep -q "phase: hold" "$OUT/memory-$system-$n${TAG:-}.err" 2>/dev/null && break
                sleep 0.1
            done
            sleep 5
            after=$(rss_kb "$SERVER_PID")
            wait $gen
            local ok
            ok=$(jq .logins.ok "$OUT/memory-$system-$n${TAG:-}.json")
            echo "memory $system${TAG:-} sessions=$ok rss_before_kb=$before rss_after_kb=$after per_session_bytes=$(((after - before) * 1024 / (ok > 0 ? ok : 1)))" |
                tee -a "$OUT/summary.txt"
        done
    done
    stop_server
}

# Saturation: an open-loop login rate above capacity for a few seconds, at most
# 200 (Prosody: 64) in flight; logins due beyond that are dropped, so logins/s is
# what completed per second of the window. Ours with SCRAM-SHA-256 after a warm-up
# pass (the generator caches SCRAM keys as real clients do; otherwise its own PBKDF2
# is the bottleneck) and with PLAIN (the server runs PBKDF2 per login); Prosody with
# PLAIN against internal_plain (a string compare).
logins() {
    start_ours
    load logins-ours-scram $OUR_PORT --connections 15000 --sources 2 --mechanism scram-sha-256 \
        --warm-scram --login-rate 10000 --login-concurrency 200 --rate 0 --duration 1s
    start_ours
    load logins-ours-plain $OUR_PORT --connections 10000 --sources 2 --mechanism plain \
        --login-rate 2500 --login-concurrency 200 --rate 0 --duration 1s
    start_prosody
    load logins-prosody-plain $PROSODY_PORT --connections 4000 --sources 2 --mechanism plain \
        --login-rate 1000 --login-concurrency 64 --rate 0 --duration 1s
    stop_server
    for f in logins-ours-scram logins-ours-plain logins-prosody-plain; do
        echo "logins $f $(jq -c '{ok: .logins.ok, elapsed_s: .logins.elapsed_s, failed: .logins.failed, dropped: .logins.dropped, per_sec: .logins.per_sec, p99_ms: .logins.p99_ms, errors: .errors}' "$OUT/$f.json")" |
            tee -a "$OUT/summary.txt"
    done
}

# Steps the rate up; each step passes if p99 < 100 ms with nothing lost. Stops at
# the first loss (or delivery below 95 % of the offered rate).
messages() {
    for system in ${SYSTEMS:-ours prosody}; do
        if [ $system = ours ]; then rates=$OUR_RATES; else rates=$PROSODY_RATES; fi
        mech=plain # logins are not what this measures
        local sm_flag=--no-stream-management
        if [ "${MSG_SM:-false}" = true ]; then sm_flag=; fi
        for rate in $rates; do
            if [ $system = ours ]; then start_ours; port=$OUR_PORT; else
                start_prosody; port=$PROSODY_PORT; fi
            local name="messages-$system${TAG:-}-$rate"
            load "$name" $port --connections 500 --sources 2 --mechanism $mech $sm_flag \
                --login-rate 1000 --login-concurrency 64 --rate "$rate" --duration "${STEP_SECS}s" --loss-timeout 5s
            local line
            line=$(jq -c '{sent: .messages.sent, delivered: .messages.delivered, lost: .messages.lost, unsent: .messages.unsent, per_sec: .messages.delivered_per_sec, p50: .messages.p50_ms, p99: .messages.p99_ms, p999: .messages.p999_ms, max: .messages.max_ms, errors: .errors}' \
                "$OUT/$name.json")
            local verdict=pass
            if jq -e '.messages.p99_ms >= 100' "$OUT/$name.json" >/dev/null; then
                verdict=p99-over-100ms
            fi
            echo "messages $system${TAG:-} rate=$rate $verdict $line" | tee -a "$OUT/summary.txt"
            # Past the p99 bound the steps go on while nothing is lost: how far the
            # throughput goes is worth knowing too.
            if jq -e '.messages.lost > 0 or .messages.unsent > 0
                    or .messages.delivered_per_sec < 0.95 * .messages.offered_rate' \
                "$OUT/$name.json" >/dev/null; then
                break
            fi
        done
    done
    stop_server
}

flush() {
    for system in ${SYSTEMS:-ours prosody}; do
        if [ $system = ours ]; then start_ours; port=$OUR_PORT; mech=scram-sha-256; else
            start_prosody; port=$PROSODY_PORT; mech=plain; fi
        load "flush-$system" $port --connections 0 --mechanism $mech --offline-flush 10000 \
            --rate 0 --duration 1ms --loss-timeout 60s
        echo "flush $system $(jq -c '.offline_flush + {errors: .errors}' "$OUT/flush-$system.json")" |
            tee -a "$OUT/summary.txt"
    done
    stop_server
}

"$REPO/benches/whatsapp/prosody.sh" install
accounts
echo "== $(date -u +%FT%TZ) load average $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/summary.txt"
case "${1:-all}" in
memory) memory ;;
logins) logins ;;
messages) messages ;;
flush) flush ;;
all) memory; logins; messages; flush ;;
*) echo "usage: $0 [memory|logins|messages|flush|all]" >&2; exit 2 ;;
esac
