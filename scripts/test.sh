#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: fetches ONNX Runtime if needed, then the unit
# and end-to-end tests (real servers on ephemeral ports, real HTTP, real ONNX Runtime), and
# closes with one summary line over all test binaries. Fails too if a `switchyard serve` that
# the tests started is still running after they exit.
set -euo pipefail
cd "$(dirname "$0")/.."
SWITCHYARD_SKIP_BUILD=1 scripts/setup.sh
# The studio page's browser test (apt chromium + chromium-driver, a Selenium venv) and the
# Python SDK's test (an azure-ai-ml venv): installed once, skipped when already there.
scripts/studio-setup.sh
scripts/sdk-setup.sh
log=$(mktemp)
# tests/common writes the pid of every server it starts here; the servers inherit the variable.
SWITCHYARD_TEST_PID_DIR=$(mktemp -d)
export SWITCHYARD_TEST_PID_DIR
trap 'rm -rf "$log" "$SWITCHYARD_TEST_PID_DIR"' EXIT
set +e
cargo test --workspace --locked --no-fail-fast "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "\ntests: %d passed, %d failed\n", p, f }' "$log"

# A server of ours: the pid is alive (not a zombie) and its environment carries our pid folder
# (a reused pid, or another user's switchyard on this machine, does not).
ours() {
  local pid=$1
  [ -r "/proc/$pid/environ" ] || return 1
  [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ] || return 1
  tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qxF "SWITCHYARD_TEST_PID_DIR=$SWITCHYARD_TEST_PID_DIR"
}
# Servers watch their parent every 200 ms: give them a moment to notice it is gone.
leaked=()
for _ in $(seq 20); do
  leaked=()
  for f in "$SWITCHYARD_TEST_PID_DIR"/*; do
    [ -e "$f" ] || continue
    pid=$(basename "$f")
    if ours "$pid"; then leaked+=("$pid"); fi
  done
  [ ${#leaked[@]} -eq 0 ] && break
  sleep 0.25
done
if [ ${#leaked[@]} -gt 0 ]; then
  echo "test.sh: ${#leaked[@]} switchyard server(s) started by the tests still run after they exited: pid ${leaked[*]}" >&2
  for pid in "${leaked[@]}"; do
    if ours "$pid"; then kill -9 "$pid" 2>/dev/null || true; fi
  done
  [ "$status" -ne 0 ] || status=1
fi
exit "$status"
