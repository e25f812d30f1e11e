#!/usr/bin/env bash
# Interop suite: Chaos Toolkit 1.19.0 runs examples/chaos/*.json (its experiment
# format: steady-state hypothesis of `http` probes on our API, an `http` action
# starting a casebook experiment, rollbacks) against a real `casebook up --case
# uber`. Creates its virtualenv once (outside the clone), starts the platform on
# free ports, runs `chaos run` per experiment, stops it. Fails unless every
# journal says `completed` with the steady state met before and after, and every
# casebook experiment the run started held.
set -euo pipefail
cd "$(dirname "$0")/../.."

CHAOSTOOLKIT=1.19.0
CHAOSTOOLKIT_LIB=1.44.0
VENV="${CHAOSTOOLKIT_VENV:-/var/cache/casebook/venv-chaostoolkit}"
has_chaostoolkit() {
  "$VENV/bin/python" -c "
import importlib.metadata as m, sys
import jsonpath2
sys.exit(m.version('chaostoolkit') != '$CHAOSTOOLKIT' or m.version('chaostoolkit-lib') != '$CHAOSTOOLKIT_LIB')" 2>/dev/null
}
if ! has_chaostoolkit; then
  mkdir -p "$(dirname "$VENV")"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    "chaostoolkit==$CHAOSTOOLKIT" "chaostoolkit-lib[jsonpath]==$CHAOSTOOLKIT_LIB"
fi

source tests/interop/lib.sh
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# Only the uber case (its replica per region is what Kong moves); ports free.
env CASEBOOK_UBER__RESP_PORT=0 CASEBOOK_UBER__PRICING_PORT=0 CASEBOOK_UBER__HTTP_PORT=0 \
  CASEBOOK_UBER__GOSSIP_PORT=0 \
  "$BIN" --data-dir "$DATA" --control-port 0 up --case uber >"$DATA/up.out" 2>"$DATA/up.log" &
UP=$!
trap stop_up EXIT
URL=""
for _ in $(seq 1 300); do
  URL="$(sed -n 's|^casebook control plane: \(http://[^/]*\)/?token=.*|\1|p' "$DATA/up.out" | head -1)"
  [ -n "$URL" ] && break
  sleep 0.1
done
if [ -z "$URL" ]; then
  echo "casebook up printed no control-plane URL:"; cat "$DATA/up.out" "$DATA/up.log"; exit 1
fi
export CASEBOOK_URL="$URL"
CASEBOOK_TOKEN="$(cat "$DATA/control.token")"
export CASEBOOK_TOKEN
# Every uber replica registered before the hypothesis is first checked.
for _ in $(seq 1 600); do
  if [ "$(curl -fsS "$URL/api/discovery/apps/uber" | grep -o '"region":"[a-z-]*"' | sort -u | wc -l)" = 3 ]; then
    break
  fi
  sleep 0.1
done

status=0
for experiment in examples/chaos/*.json; do
  name="$(basename "$experiment" .json)"
  journal="$DATA/journal-$name.json"
  echo "chaos run $experiment against $URL"
  (cd "$DATA" && "$VENV/bin/chaos" --no-version-check --log-file "$DATA/chaostoolkit-$name.log" \
    run --journal-path "$journal" "$OLDPWD/$experiment") || true
  if ! python3 - "$journal" "$URL" "$CASEBOOK_TOKEN" <<'PY'
import json, sys, urllib.request
journal = json.load(open(sys.argv[1]))
steady = journal.get("steady_states") or {}
before = (steady.get("before") or {}).get("steady_state_met")
after = (steady.get("after") or {}).get("steady_state_met")
print(f"journal: status={journal.get('status')} deviated={journal.get('deviated')} "
      f"steady before={before} after={after}")
request = urllib.request.Request(sys.argv[2] + "/api/chaos/experiments",
                                 headers={"Authorization": "Bearer " + sys.argv[3]})
records = json.load(urllib.request.urlopen(request, timeout=10))
for r in records:
    print(f"casebook {r['id']}: {r['kind']} on {r['target']}: {r['status']}, held={r['held']}")
ok = (journal.get("status") == "completed" and not journal.get("deviated")
      and before is True and after is True
      and records and all(r["status"] == "completed" and r["held"] is True for r in records))
sys.exit(0 if ok else 1)
PY
  then
    echo "--- chaostoolkit log"; tail -40 "$DATA/chaostoolkit-$name.log" || true
    echo "--- casebook up log"; tail -40 "$DATA/up.log"
    status=1
  fi
done
exit "$status"
