#!/usr/bin/env bash
# Availability under chaos: `casebook load` on the uber and whatsapp cases while a
# chaos experiment runs — Chaos Monkey striking at a stated rate, then Gorilla (a
# zone), then Kong (a region) — one fresh `casebook up --case CASE` per run, on free
# ports, data dirs temporary.
#
#   benches/control/chaos.sh                       # every case × kind, 60 s of load each
#   CASES=uber KINDS="monkey kong" DURATION=30 benches/control/chaos.sh
#   CASEBOOK=target/debug/casebook benches/control/chaos.sh   # default: a release build
#
# What each run does (the load starts, the fault 5 s later, for DURATION − 15 s):
#
#   uber      load: rides + driver pings against the us-east replica (its pickups
#             are in us-east; another region's replica refuses them);
#             monkey: kills an `uber-pricing` instance every MONKEY_EVERY (restored at
#             rollback; the API resolves pricing through discovery, falls back to 1.0);
#             gorilla: zone us-east-a (pricing, geo-resp, the us-east replica; the
#             control plane spared); kong: region eu-west.
#   whatsapp  load: logins + messages on the us-east chat node (on the eu-west one
#             for kong);
#             monkey: kills the eu-west chat node (restored at rollback);
#             gorilla: zone us-east-a (the node the clients are on); kong: region
#             eu-west (the clients' region: their sessions are sent elsewhere, and
#             the record times the drain).
#
# Every service of these cases runs one instance per region, in the region's first
# zone: Gorilla on us-east-a is that region's outage until the rollback restarts it.
#
# Availability = requests that succeeded / requests sent, from the load report
# (uber: pings accepted + rides not failed, shed or dropped; whatsapp: messages
# delivered / sent). Kong's evacuation time comes from the experiment's record
# (`fault.evacuated_after_ms`: from the mark until the region's request rate in
# the metrics store fell to ≤ 1 % of before). Prints a markdown table.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CASES=${CASES:-"uber whatsapp"}
KINDS=${KINDS:-"monkey gorilla kong"}
DURATION=${DURATION:-60}
MONKEY_EVERY=${MONKEY_EVERY:-10s}
UBER_RATE=${UBER_RATE:-50}
UBER_DRIVERS=${UBER_DRIVERS:-500}
WA_USERS=${WA_USERS:-100}
WA_RATE=${WA_RATE:-200}
WORK=$(mktemp -d)
PIDS=()

cleanup() {
    for pid in "${PIDS[@]}"; do
        kill -INT "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    [ -n "${KEEP:-}" ] && { echo "kept $WORK" >&2; return; }
    rm -rf "$WORK"/data-*
}
trap cleanup EXIT

if [ -z "${CASEBOOK:-}" ]; then
    echo "building (release)..." >&2
    cargo build --release -q -p casebook --manifest-path "$ROOT/Cargo.toml"
    CASEBOOK=${CARGO_TARGET_DIR:-$ROOT/target}/release/casebook
fi

# The address of SERVICE's instance in REGION, from the admin API.
address_of() { # url service region
    curl -fsS "$1/api/instances" | python3 -c "
import json, sys
for i in json.load(sys.stdin):
    if i['service'] == '$2' and i['region'] == '$3' and i['state'] == 'running':
        print(i['address']); break"
}

run_one() { # case kind
    local case=$1 kind=$2 data=$WORK/data-$1-$2
    mkdir -p "$data"
    if [ "$case" = whatsapp ]; then
        # Accounts before the node starts (it reads them at start; a login racing
        # its reload would fail).
        "$CASEBOOK" --data-dir "$data" load whatsapp --users "$WA_USERS" --create-users \
            --connections 0 --rate 0 --duration 1ms --target 127.0.0.1:9 --no-progress >/dev/null
    fi
    env CASEBOOK_UBER__RESP_PORT=0 CASEBOOK_UBER__PRICING_PORT=0 CASEBOOK_UBER__HTTP_PORT=0 \
        CASEBOOK_UBER__GOSSIP_PORT=0 CASEBOOK_WHATSAPP__PORT=0 CASEBOOK_WHATSAPP__TLS_PORT=0 \
        CASEBOOK_WHATSAPP__WS_PORT=0 \
        CASEBOOK_DISCOVERY__RENEW_INTERVAL=2s CASEBOOK_DISCOVERY__LEASE_DURATION=6s \
        CASEBOOK_DISCOVERY__EVICTION_INTERVAL=2s \
        "$CASEBOOK" --data-dir "$data" --control-port 0 up --case "$case" >"$data/up.out" 2>"$data/up.log" &
    local up=$!
    PIDS+=("$up")
    local url=""
    for _ in $(seq 1 600); do
        url=$(sed -n 's|^casebook control plane: \(http://[^/]*\)/?token=.*|\1|p' "$data/up.out" | head -1)
        [ -n "$url" ] && break
        sleep 0.1
    done
    [ -n "$url" ] || { echo "no control-plane URL" >&2; cat "$data/up.log" >&2; exit 1; }
    sleep 3 # every instance registered and pushing
    local fault_secs=$((DURATION - 15)) load=() chaos=()
    case "$case" in
    uber)
        # The generator's pickups are in us-east, and a replica refuses rides picked
        # up outside its region (421): the load is always on the us-east replica.
        # Gorilla takes its zone (with the replica in it); Kong takes eu-west out
        # and us-east keeps serving.
        local region=us-east
        local target
        target=$(address_of "$url" uber "$region")
        load=(load uber --target "$target" --rides-per-sec "$UBER_RATE" --drivers "$UBER_DRIVERS"
            --duration "${DURATION}s" --json --no-progress)
        case "$kind" in
        monkey) chaos=(monkey uber-pricing --every "$MONKEY_EVERY" --restore) ;;
        gorilla) chaos=(gorilla us-east-a) ;;
        kong) chaos=(kong eu-west) ;;
        esac
        ;;
    whatsapp)
        # Kong takes the clients' region out: they are sent elsewhere and their
        # sessions drain (the generator does not follow, so they count as lost).
        local target chat_region=us-east
        [ "$kind" = kong ] && chat_region=eu-west
        target=$(address_of "$url" chat "$chat_region")
        load=(load whatsapp --target "$target" --users "$WA_USERS" --rate "$WA_RATE"
            --duration "${DURATION}s" --json --no-progress)
        case "$kind" in
        monkey) chaos=(monkey chat --region eu-west --restore) ;;
        gorilla) chaos=(gorilla us-east-a) ;;
        kong) chaos=(kong eu-west) ;;
        esac
        ;;
    esac
    "$CASEBOOK" --data-dir "$data" "${load[@]}" >"$data/load.json" 2>"$data/load.err" &
    local loader=$!
    sleep 5
    "$CASEBOOK" --data-dir "$data" chaos "${chaos[@]}" --url "$url" --duration "${fault_secs}s" \
        --probe-interval 1s --settle 5s --json --no-progress >"$data/chaos.json" 2>"$data/chaos.err" || true
    wait "$loader" || true
    kill -INT "$up" 2>/dev/null || true
    wait "$up" 2>/dev/null || true
    python3 - "$case" "$kind" "$data/load.json" "$data/chaos.json" "${chaos[*]}" <<'PY'
import json, sys
case, kind, load_path, chaos_path, what = sys.argv[1:6]
try:
    load = json.load(open(load_path))
except Exception as e:
    print(f"| {case} | {kind} | `{what}` | load report unreadable: {e} | | |"); sys.exit(0)
try:
    exp = json.load(open(chaos_path))
except Exception:
    exp = {}
if case == "uber":
    p, r = load["pings"], load["rides"]
    sent = p["sent"] + r["requested"]
    pr, rr = p.get("refused", 0), r.get("refused", 0)
    bad = p["failed"] + p["shed"] + pr + r["failed"] + r["shed"] + rr + r["dropped"]
    detail = f"pings {p['sent'] - p['failed'] - p['shed'] - pr}/{p['sent']}, rides {r['requested'] - r['failed'] - r['shed'] - rr - r['dropped']}/{r['requested']}"
    if pr or rr:
        detail += f" (refused by region: {pr} pings, {rr} rides)"
else:
    m = load.get("messages") or {"sent": 0, "delivered": 0}
    sent, bad = m["sent"], m["sent"] - m["delivered"]
    detail = f"messages {m['delivered']}/{m['sent']}, logins {load['logins']['ok']} ok {load['logins']['failed']} failed"
avail = 100.0 * (sent - bad) / sent if sent else float("nan")
fault = exp.get("fault") or {}
notes = []
if kind == "kong":
    ev = fault.get("evacuated_after_ms")
    notes.append(f"evacuation {ev} ms" if ev is not None else f"not evacuated (last {fault.get('last_rps')} req/s, before {fault.get('baseline_rps')})")
    if fault.get("baseline_connections"):
        dr = fault.get("connections_drained_after_ms")
        notes.append(f"{fault['baseline_connections']:.0f} connections drained in {dr} ms" if dr is not None else f"connections not drained (last {fault.get('last_connections')})")
    notes.append(f"UP in region after mark: {fault.get('up_in_region_after_mark')}")
if kind in ("gorilla", "monkey"):
    notes.append(f"killed {len(fault.get('killed', []))}, restarted {len(fault.get('restarted', []))}")
    rec = fault.get("recovery") or {}
    for svc, r in rec.items():
        notes.append(f"{svc}: back {r.get('recovered_after_ms')} ms by {r.get('by')}")
print(f"| {case} | {kind} | `{what}` | {avail:.3f} % | {detail} | {exp.get('status')}; {'; '.join(notes)} |")
PY
}

echo "| case | chaos | fault | availability | requests | experiment |"
echo "|---|---|---|---|---|---|"
for case in $CASES; do
    for kind in $KINDS; do
        run_one "$case" "$kind"
    done
done
