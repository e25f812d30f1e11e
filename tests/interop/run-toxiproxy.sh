#!/usr/bin/env bash
# Interop suite: toxiproxy-python 0.1.1, the stock Python client of Toxiproxy's
# HTTP API, driving the Toxiproxy-compatible API of a real `casebook up` unchanged.
# Creates its virtualenv once (outside the clone), starts the platform on free
# ports (the API and uber's RESP port chosen here), runs
# tests/interop/toxiproxy_suite.py, stops it. Fails — never skips — when the client
# cannot be installed or any check fails.
set -euo pipefail
cd "$(dirname "$0")/../.."

TOXIPROXY_PY=0.1.1
VENV="${TOXIPROXY_VENV:-/var/cache/casebook/venv-toxiproxy}"
has_client() {
  "$VENV/bin/python" -c "
import importlib.metadata as m, sys
sys.exit(m.version('toxiproxy-python') != '$TOXIPROXY_PY')
import toxiproxy" 2>/dev/null
}
if ! has_client; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "toxiproxy-python==$TOXIPROXY_PY"
  has_client || { echo "toxiproxy-python $TOXIPROXY_PY installed but does not import"; exit 1; }
fi

source tests/interop/lib.sh
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
API_PORT="$(free_port)"
RESP_PORT="$(free_port)"
start_up "$API_PORT" "the Toxiproxy API" \
  CASEBOOK_CONTROL__TOXIPROXY_PORT="$API_PORT" CASEBOOK_UBER__RESP_PORT="$RESP_PORT"

# The control plane's URL (its port is free), for the discovery checks.
CONTROL=""
for _ in $(seq 1 300); do
  CONTROL="$(grep -oE 'casebook control plane: http://[0-9.:]+' "$DATA/up.log" | head -1 | sed 's/.*: //')" || true
  [ -n "$CONTROL" ] && break
  sleep 0.1
done
[ -n "$CONTROL" ] || { echo "no control plane URL in the log:"; cat "$DATA/up.log"; exit 1; }

echo "toxiproxy-python $TOXIPROXY_PY against 127.0.0.1:$API_PORT, proxying uber's RESP port $RESP_PORT"
if ! "$VENV/bin/python" tests/interop/toxiproxy_suite.py "$API_PORT" "$RESP_PORT" "$CONTROL"; then
  echo "--- casebook up log"; tail -50 "$DATA/up.log"
  exit 1
fi
