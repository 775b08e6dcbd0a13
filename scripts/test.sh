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

# A server of ours: the pid is alive (not a zombie) and started when the tests recorded it
# (tests/common's record_server_pid writes the start time, field 22 of /proc/PID/stat: a
# reused pid starts later). Not its environment: the server is not dumpable, so /proc/PID/environ
# is unreadable to a non-root user.
ours() {
  local pid=$1 fields
  fields=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null) || return 1
  [ -n "$fields" ] || return 1
  [ "$(echo "$fields" | awk '{print $1}')" != Z ] || return 1
  [ "$(echo "$fields" | awk '{print $20}')" = "$(cat "$SWITCHYARD_TEST_PID_DIR/$pid" 2>/dev/null)" ]
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
