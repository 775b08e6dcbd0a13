#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: fetches ONNX Runtime if needed, then the unit
# and end-to-end tests (real servers on ephemeral ports, real HTTP, real ONNX Runtime), and
# closes with one summary line over all test binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
SWITCHYARD_SKIP_BUILD=1 scripts/setup.sh
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "\ntests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
