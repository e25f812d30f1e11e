#!/usr/bin/env bash
# Side-by-side redis-benchmark of a private redis-server 7.0 and the geo-resp
# port (release build), same commands, same run. Servers pinned to CPU 0, the
# client to CPU 1 (when `taskset` exists). Prints one line per (command, server).
#
#   [ROUNDS=3] [PIN=1] [OURS_THREADS=1] crates/uber/benches/redis_benchmark.sh [MEMBERS=1000000] [REQUESTS=200000]
set -euo pipefail
MEMBERS=${1:-1000000}
REQUESTS=${2:-200000}
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
REDIS_PORT=16379
OURS_PORT=16380
PIN_SERVER=""; PIN_CLIENT=""
# PIN=0 leaves both servers and the client to the scheduler (then OURS_THREADS=2
# lets ours use both cores, which single-threaded Redis cannot).
if [ "${PIN:-1}" = 1 ] && command -v taskset >/dev/null; then PIN_SERVER="taskset -c 0"; PIN_CLIENT="taskset -c 1"; fi

cargo build --release -q -p casebook-uber --example geo_resp --manifest-path "$ROOT/Cargo.toml"
BIN="$ROOT/target/release/examples/geo_resp"

$PIN_SERVER redis-server --port $REDIS_PORT --save '' --appendonly no --daemonize no --loglevel warning &
REDIS_PID=$!
$PIN_SERVER "$BIN" $OURS_PORT "${OURS_THREADS:-1}" 2>/dev/null &
OURS_PID=$!
trap 'kill $REDIS_PID $OURS_PID 2>/dev/null || true' EXIT
for port in $REDIS_PORT $OURS_PORT; do
  for _ in $(seq 50); do redis-cli -p $port ping >/dev/null 2>&1 && break; sleep 0.1; done
done

LOAD=/tmp/casebook-geo-load-$MEMBERS.resp
[ -s "$LOAD" ] || python3 "$ROOT/crates/uber/benches/gen_load.py" drivers "$MEMBERS" 7 > "$LOAD"
for port in $REDIS_PORT $OURS_PORT; do
  start=$(date +%s.%N)
  redis-cli -p $port --pipe < "$LOAD" >/dev/null
  end=$(date +%s.%N)
  echo "load $MEMBERS members port $port: $(echo "$end - $start" | bc) s, zcard $(redis-cli -p $port zcard drivers)"
done

rps() { # port args... -> requests per second
  local port=$1; shift
  $PIN_CLIENT redis-benchmark -p "$port" -c 50 -r 1000000000000 --csv "$@" | tail -1 | cut -d, -f2 | tr -d '"'
}
# Each command runs on Redis and then on ours back to back, ROUNDS times, so a
# ratio compares two runs seconds apart (the machine's load drifts).
pair() { # name args...
  local name=$1; shift
  local theirs ours
  theirs=$(rps $REDIS_PORT "$@")
  ours=$(rps $OURS_PORT "$@")
  echo "$name | redis $theirs | ours $ours | ratio $(echo "scale=2; $ours / $theirs" | bc)"
}
for round in $(seq "${ROUNDS:-3}"); do
  echo "round $round ($(uptime | sed 's/.*load average/load average/'))"
  pair "GEOADD" -n "$REQUESTS" GEOADD bench -73.__rand_int__ 40.__rand_int__ member:__rand_int__
  pair "GEOADD -P 16" -n $((REQUESTS * 5)) -P 16 GEOADD bench -73.__rand_int__ 40.__rand_int__ member:__rand_int__
  pair "GEOSEARCH 2 km COUNT 10 ASC" -n $((REQUESTS / 4)) GEOSEARCH drivers FROMLONLAT -73.__rand_int__ 40.__rand_int__ BYRADIUS 2 km COUNT 10 ASC
  pair "GEOSEARCH 2 km COUNT 10 ASC -P 16" -n $((REQUESTS / 2)) -P 16 GEOSEARCH drivers FROMLONLAT -73.__rand_int__ 40.__rand_int__ BYRADIUS 2 km COUNT 10 ASC
done
