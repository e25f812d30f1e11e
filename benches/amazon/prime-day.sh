#!/usr/bin/env bash
# Prime Day at 10x, with and without shedding and autoscaling, in one run:
# `casebook load amazon --prime-day` (1x, 10x for twice as long, 1x again; open
# loop, latency from the intended send time) against a fresh release
# `casebook up --case amazon` per run, the two configurations alternating:
#
#   on   the default [amazon] config (priority shedder in front of every route) and
#        the load command's pre-scale: an autoscaler policy for amazon-cart plus a
#        scheduled floor of 6 instances from 5 s before the surge until its end;
#   off  [amazon] shed_enabled = false and no autoscaler policy or schedule
#        (--prescale-instances 0).
#
#   benches/amazon/prime-day.sh                 # 1 round of each, 10 s per 1x phase
#   ROUNDS=2 RATE=300 BASE=10s benches/amazon/prime-day.sh
#   PLOT=docs/plots/amazon-prime-day.svg (default; "" for none)
#
# Each run's JSON report (with its per-second timeline) goes to $WORK; the script
# prints a markdown table (critical goodput and success during the surge, its p99
# against the 1x baseline, what normal and low traffic got) and writes the plot:
# goodput over time of critical traffic and of all traffic, both configurations.
# Ports are free ones (never the defaults), the data dirs temporary.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
ROUNDS=${ROUNDS:-1}
RATE=${RATE:-300}
BASE=${BASE:-10s}
CONFIGS=${CONFIGS:-"on off"}
PLOT=${PLOT-$ROOT/docs/plots/amazon-prime-day.svg}
WORK=$(mktemp -d)
PIDS=()

cleanup() {
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"/data-*
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

run_one() { # config round
    local config=$1 round=$2
    local data=$WORK/data-$config-$round
    local port cport
    port=$(free_port)
    cport=$(free_port)
    local env=(CASEBOOK_AMAZON__HTTP_PORT="$port")
    local prescale=()
    if [ "$config" = off ]; then
        env+=(CASEBOOK_AMAZON__SHED_ENABLED=false)
        prescale=(--prescale-instances 0)
    fi
    env "${env[@]}" "$CASEBOOK" --data-dir "$data" --control-port "$cport" up --case amazon \
        >"$WORK/up-$config-$round.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    for _ in $(seq 1 300); do
        curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
        sleep 0.1
    done
    echo "== round $round: $config (load average $(cut -d' ' -f1 /proc/loadavg)) ==" >&2
    "$CASEBOOK" --data-dir "$data" --control-port "$cport" load amazon \
        --target "127.0.0.1:$port" --prime-day --rate "$RATE" --duration "$BASE" \
        "${prescale[@]}" --json --no-progress >"$WORK/run-$round-$config.json"
    # What the autoscaler did, for the record.
    curl -sf "http://127.0.0.1:$cport/api/autoscaler" -H "authorization: Bearer $(cat "$data/control.token" 2>/dev/null)" \
        >"$WORK/autoscaler-$round-$config.json" 2>/dev/null || true
    kill "$pid"
    wait "$pid" 2>/dev/null || true
}

for round in $(seq 1 "$ROUNDS"); do
    for config in $CONFIGS; do
        run_one "$config" "$round"
    done
done

python3 - "$WORK" "$RATE" "$BASE" "$PLOT" <<'PY'
import glob, json, os, sys

work, rate, base, plot = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4]
LABEL = {
    "on": "shedding on + autoscaler pre-scale (default [amazon])",
    "off": "shedding off (shed_enabled = false), no autoscaler policy",
}
CLASSES = {"critical": ("reserve", "checkout"), "normal": ("cart_add", "cart_remove"),
           "low": ("browse", "recs")}

def outcome(phase, priority):
    classes = [c for c in phase["load"]["classes"] if c["class"] in CLASSES[priority]]
    due = sum(c["sent"] + c["dropped"] for c in classes)
    ok = sum(c["ok"] for c in classes)
    good = sum(c["ok_within_slo"] for c in classes)
    shed = sum(c["shed"] for c in classes)
    p99 = max((c["p99_ms"] for c in classes), default=0.0)
    return {"due": due, "ok": ok, "good": good, "shed": shed, "p99": p99,
            "success": ok / due if due else 1.0, "goodput": good / due if due else 1.0,
            "per_s": good / (phase["load"]["elapsed_ms"] / 1000.0)}

runs = []
for path in sorted(glob.glob(os.path.join(work, "run-*.json"))):
    name = os.path.basename(path)[4:-5]
    round_, config = name.split("-")
    runs.append((int(round_), config, json.load(open(path))))

print(f"| config | round | critical success (surge) | critical goodput (surge) | critical p99: 1x → 10x | normal success / shed (surge) | low success / shed (surge) | meets goals |")
print("|---|---|---|---|---|---|---|---|")
for round_, config, report in runs:
    phases = report["phases"]
    surge = max(phases, key=lambda p: p["multiplier"])
    before = phases[0]
    c, c0 = outcome(surge, "critical"), outcome(before, "critical")
    n, l = outcome(surge, "normal"), outcome(surge, "low")
    ratio = c["p99"] / c0["p99"] if c0["p99"] else float("inf")
    met = "yes" if c["success"] >= 0.999 and ratio <= 2.0 else "no"
    print(f'| {LABEL.get(config, config)} | {round_} | {c["success"]*100:.2f} % | '
          f'{c["goodput"]*100:.2f} % ({c["per_s"]:.0f}/s) | '
          f'{c0["p99"]:.1f} → {c["p99"]:.1f} ms ({ratio:.2f}x) | '
          f'{n["success"]*100:.1f} % / {n["shed"]/max(n["due"],1)*100:.1f} % | '
          f'{l["success"]*100:.1f} % / {l["shed"]/max(l["due"],1)*100:.1f} % | {met} |')

if not plot or not runs:
    sys.exit(0)
# Goodput over time: the last round of each config.
last = {}
for round_, config, report in runs:
    last[config] = report
W, H, L, R, T, B = 640, 400, 70, 610, 40, 340
seconds = max(len(r["timeline"]) for r in last.values())
def series(report, priorities):
    return [sum(s[p]["ok_within_slo"] for p in priorities) for s in report["timeline"]]
lines = []
for config, report in sorted(last.items()):
    lines.append((config, "critical", series(report, ["critical"])))
    lines.append((config, "all", series(report, ["critical", "normal", "low"])))
top = max(max(v) for _, _, v in lines) or 1
offered = rate * 10
top = max(top, offered) * 1.1
x = lambda i: L + (R - L) * i / max(seconds - 1, 1)
y = lambda v: B - (B - T) * v / top
out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       '<rect width="100%" height="100%" fill="white"/>',
       f'<text x="{W/2}" y="22" text-anchor="middle" font-size="15">Prime Day at 10x: goodput over time ({rate:.0f}/s base, {base} per 1x phase)</text>']
# The surge window, shaded.
first = next(iter(last.values()))
surge_secs = [s["second"] for s in first["timeline"] if s["phase"] == "surge"]
if surge_secs:
    x0, x1 = x(surge_secs[0]), x(surge_secs[-1] + 1 if surge_secs[-1] + 1 < seconds else surge_secs[-1])
    out.append(f'<rect x="{x0:.1f}" y="{T}" width="{x1-x0:.1f}" height="{B-T}" fill="#f5f5f5"/>')
    out.append(f'<text x="{(x0+x1)/2:.1f}" y="{T+14}" text-anchor="middle" fill="#888">10x surge</text>')
step = 10 ** max(len(str(int(top))) - 1, 0)
if top / step < 4:
    step //= 2 or 1
v = 0
while v <= top:
    out.append(f'<line x1="{L}" x2="{R}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#e5e5e5"/><text x="{L-6}" y="{y(v)+4:.1f}" text-anchor="end">{v:,}</text>')
    v += max(step, 1)
for t in range(0, seconds, 10):
    out.append(f'<text x="{x(t):.1f}" y="{B+18}" text-anchor="middle">{t}s</text>')
out.append(f'<text x="{W/2}" y="{H-15}" text-anchor="middle">time since the first phase started</text>')
out.append(f'<text x="16" y="{(T+B)/2}" transform="rotate(-90 16 {(T+B)/2})" text-anchor="middle">goodput, requests/s (ok within 300 ms)</text>')
colour = {"on": "#1f77b4", "off": "#d62728"}
legend_y = T + 100  # below the 10x line, above the 1x ones
for config, what, values in lines:
    dash = '' if what == "critical" else ' stroke-dasharray="6 4"'
    width = 2.5 if what == "critical" else 1.5
    points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(values))
    out.append(f'<polyline fill="none" stroke="{colour.get(config, "#555")}" stroke-width="{width}"{dash} points="{points}"/>')
    name = ("shedding + pre-scale" if config == "on" else "no shedding, no autoscaler") + (", critical" if what == "critical" else ", all traffic")
    out.append(f'<line x1="{L+10}" x2="{L+40}" y1="{legend_y}" y2="{legend_y}" stroke="{colour.get(config, "#555")}" stroke-width="{width}"{dash}/><text x="{L+46}" y="{legend_y+4}">{name}</text>')
    legend_y += 18
out.append("</svg>")
open(plot, "w").write("\n".join(out) + "\n")
print(f"\nplot written to {plot}", file=sys.stderr)
PY
echo "reports: $WORK/run-*.json (kept; autoscaler views beside them)" >&2
trap - EXIT
cleanup
