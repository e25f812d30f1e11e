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

source tests/interop/lib.sh
# `up` starts one chat node per region on PORT, PORT+100, PORT+200 (and the same
# offsets from TLS_PORT): all of them free.
free_spread_port() {
  python3 -c '
import socket
while True:
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
    if port + 200 > 65535:
        continue
    try:
        for other in (port + 100, port + 200):
            socket.socket().bind(("127.0.0.1", other))
    except OSError:
        continue
    print(port); break
'
}
PORT="$(free_spread_port)"
TLS_PORT="$(free_spread_port)"

for user in alice bob carol; do
  "$BIN" --data-dir "$DATA" whatsapp add-user "$user@localhost" pw >/dev/null
done
start_up "$PORT" "the chat node" CASEBOOK_WHATSAPP__PORT="$PORT" CASEBOOK_WHATSAPP__TLS_PORT="$TLS_PORT"

# One suite: its client log and the server's log are shown if it fails.
run_suite() {
  local suite="$1"
  shift
  if ! env INTEROP_XMPP_PORT="$PORT" "$@" "$VENV/bin/python" "tests/interop/$suite.py" 2>"$DATA/$suite.log"; then
    echo "--- casebook up log"; tail -50 "$DATA/up.log"
    echo "--- client log ($suite)"; tail -50 "$DATA/$suite.log"
    exit 1
  fi
}

run_suite slixmpp_suite
# Over TLS (STARTTLS and direct), trusting the certificate the node generated.
run_suite slixmpp_tls INTEROP_XMPP_TLS_PORT="$TLS_PORT" INTEROP_CA="$DATA/whatsapp/localhost/tls/cert.pem"
run_suite slixmpp_im
