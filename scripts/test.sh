#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: fetches ONNX Runtime if needed, then the unit
# and end-to-end tests (real servers on ephemeral ports, real HTTP, real ONNX Runtime).
set -euo pipefail
cd "$(dirname "$0")/.."
SWITCHYARD_SKIP_BUILD=1 scripts/setup.sh
cargo test --locked "$@"
