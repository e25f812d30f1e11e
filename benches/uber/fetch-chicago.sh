#!/usr/bin/env bash
# Fetches the Chicago taxi trips sample (10,000 rows) shipped as test data inside
# the PyPI package `tfx`, into /tmp (never committed). Prints the CSV's path.
#
#   benches/uber/fetch-chicago.sh            # -> /tmp/casebook-chicago/data.csv
#   casebook load uber --trips-csv /tmp/casebook-chicago/data.csv ...
set -euo pipefail
out=${1:-/tmp/casebook-chicago}
csv=tfx/components/testdata/external/csv/data.csv
mkdir -p "$out"
if [[ ! -s $out/data.csv ]]; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    # The wheel only (no dependencies, nothing installed): it is a zip file.
    python3 -m pip download tfx --no-deps --only-binary=:all: -d "$tmp" -q
    wheel=$(ls "$tmp"/tfx-*.whl | head -1)
    python3 - "$wheel" "$csv" "$out/data.csv" <<'PY'
import sys, zipfile
wheel, member, dest = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, open(dest, "wb") as f:
    f.write(z.read(member))
PY
fi
echo "$out/data.csv"
