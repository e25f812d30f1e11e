# Shared by the interop suites (sourced, not run): build the debug `casebook`, start
# `casebook up` with every listener on a free port unless the caller's environment
# names one, wait for one port to listen, and stop it (and remove its data dir)
# when the suite exits.

cargo build --quiet -p casebook
BIN="${CARGO_TARGET_DIR:-target}/debug/casebook"
DATA="$(mktemp -d)"

# start_up WAIT_PORT WHAT [VAR=VALUE ...]: `casebook up` on DATA with the given
# environment on top of free ports; fails, showing its log, if WAIT_PORT never
# listens (WHAT names it in the message).
start_up() {
  local wait_port="$1" what="$2"
  shift 2
  env CASEBOOK_UBER__RESP_PORT=0 CASEBOOK_UBER__PRICING_PORT=0 CASEBOOK_UBER__HTTP_PORT=0 \
    CASEBOOK_UBER__GOSSIP_PORT=0 CASEBOOK_WHATSAPP__PORT=0 CASEBOOK_WHATSAPP__TLS_PORT=0 \
    CASEBOOK_WHATSAPP__WS_PORT=0 CASEBOOK_CONTROL__TOXIPROXY_PORT=0 "$@" \
    "$BIN" --data-dir "$DATA" --control-port 0 up >"$DATA/up.log" 2>&1 &
  UP=$!
  trap stop_up EXIT
  for _ in $(seq 1 300); do
    if python3 -c "import socket; socket.create_connection(('127.0.0.1', $wait_port), 0.2)" 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  echo "$what never listened on $wait_port:"
  cat "$DATA/up.log"
  exit 1
}

stop_up() {
  kill -INT "$UP" 2>/dev/null || true
  wait "$UP" 2>/dev/null || true
  rm -rf "$DATA"
}
