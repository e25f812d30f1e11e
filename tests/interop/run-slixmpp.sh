#!/usr/bin/env bash
# Interop suite: slixmpp 1.17, a stock XMPP client, against the chat node of a real
# `casebook up`. Creates its virtualenv once (outside the clone), starts the platform
# on free ports with three accounts, runs tests/interop/slixmpp_suite.py, stops it.
set -euo pipefail
cd "$(dirname "$0")/../.."

VENV="${SLIXMPP_VENV:-/var/cache/casebook/venv-slixmpp}"
has_slixmpp() {
  "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('slixmpp') != '1.17.0')" 2>/dev/null
}
if ! has_slixmpp; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "slixmpp==1.17"
fi

cargo build --quiet -p casebook
BIN="${CARGO_TARGET_DIR:-target}/debug/casebook"
DATA="$(mktemp -d)"
PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"

for user in alice bob carol; do
  "$BIN" --data-dir "$DATA" whatsapp add-user "$user@localhost" pw >/dev/null
done
CASEBOOK_UBER__RESP_PORT=0 CASEBOOK_WHATSAPP__PORT="$PORT" "$BIN" --data-dir "$DATA" --control-port 0 up >"$DATA/up.log" 2>&1 &
UP=$!
cleanup() {
  kill -INT "$UP" 2>/dev/null || true
  wait "$UP" 2>/dev/null || true
  rm -rf "$DATA"
}
trap cleanup EXIT

ready=0
for _ in $(seq 1 300); do
  if python3 -c "import socket; socket.create_connection(('127.0.0.1', $PORT), 0.2)" 2>/dev/null; then
    ready=1
    break
  fi
  sleep 0.1
done
if [ "$ready" != 1 ]; then
  echo "the chat node never listened on $PORT:"
  cat "$DATA/up.log"
  exit 1
fi

if ! INTEROP_XMPP_PORT="$PORT" "$VENV/bin/python" tests/interop/slixmpp_suite.py 2>"$DATA/client.log"; then
  echo "--- casebook up log"; tail -50 "$DATA/up.log"
  echo "--- client log"; tail -50 "$DATA/client.log"
  exit 1
fi
