#!/usr/bin/env bash
# Interop suite: redis-py 5.0.8's own geo tests (tests/test_commands.py -k geo, from
# its sdist) against the RESP port of a real `casebook up`, in RESP2 and RESP3.
# Creates its virtualenv and extracts the tests once (outside the clone), starts the
# platform on free ports, runs pytest, stops it. Fails on any failure, or if no
# test ran.
set -euo pipefail
cd "$(dirname "$0")/../.."

REDIS_PY=5.0.8
PYTEST=8.3.5
PACKAGING=24.2
VENV="${REDIS_PY_VENV:-/var/cache/casebook/venv-redis-py}"
TESTS="$VENV/redis-py-$REDIS_PY-tests"
has_redis_py() {
  "$VENV/bin/python" -c "
import importlib.metadata as m, sys
sys.exit(m.version('redis') != '$REDIS_PY' or m.version('pytest') != '$PYTEST')" 2>/dev/null
}
if ! has_redis_py; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    "redis==$REDIS_PY" "pytest==$PYTEST" "packaging==$PACKAGING"
fi
if [ ! -f "$TESTS/tests/test_commands.py" ]; then
  # The wheel has no tests; the sdist does. Only its tests/ directory is kept, so
  # the installed package (not the sdist's source tree) is what runs.
  SDIST="$(mktemp -d)"
  "$VENV/bin/pip" download --quiet --disable-pip-version-check --no-deps \
    --no-binary :all: "redis==$REDIS_PY" -d "$SDIST"
  rm -rf "$TESTS" && mkdir -p "$TESTS"
  tar -xzf "$SDIST/redis-$REDIS_PY.tar.gz" -C "$TESTS" --strip-components=1 "redis-$REDIS_PY/tests"
  rm -rf "$SDIST"
fi

source tests/interop/lib.sh
PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
start_up "$PORT" "the RESP port" CASEBOOK_UBER__RESP_PORT="$PORT"

# Every test whose name has "geo" in it (GEOADD … GEOSEARCHSTORE, GEORADIUS*), none
# deselected: they use only commands of the issue's subset. One is skipped by
# redis-py itself (it needs a server older than 4.0).
run_pytest() {
  local protocol="$1" report="$DATA/junit-$1.xml"
  echo "redis-py $REDIS_PY geo tests, RESP$protocol, against 127.0.0.1:$PORT"
  if ! (cd "$TESTS" && "$VENV/bin/python" -m pytest tests/test_commands.py -k geo \
    --redis-url="redis://127.0.0.1:$PORT/0" --protocol="$protocol" \
    -q -rs -p no:cacheprovider -p no:warnings --junitxml="$report"); then
    echo "--- casebook up log"; tail -50 "$DATA/up.log"
    exit 1
  fi
  # Count from the report: pytest exits 0 when every test is skipped.
  python3 - "$report" "$protocol" <<'PY'
import sys, xml.etree.ElementTree as ET
suite = ET.parse(sys.argv[1]).getroot()
suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
tests, skipped = int(suite.get("tests")), int(suite.get("skipped"))
failed = int(suite.get("failures")) + int(suite.get("errors"))
ran = tests - skipped
print(f"RESP{sys.argv[2]}: {ran} ran, {ran - failed} passed, {failed} failed, {skipped} skipped")
sys.exit(1 if failed or ran == 0 else 0)
PY
}

run_pytest 2
run_pytest 3
