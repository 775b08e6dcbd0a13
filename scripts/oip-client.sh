#!/usr/bin/env bash
# Makes target/oip-client-venv: the stock `tritonclient[http,grpc]` (PyPI, pinned with every
# dependency in tests/oip/requirements.txt) that tests/oip.rs drives against a real server, and
# `opentelemetry-proto`, which tests/traces/receiver.py decodes exported spans with.
# Skipped when the venv already holds exactly these pins. Measured: ~27 s on a fresh venv.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=target/oip-client-venv
REQS=tests/oip/requirements.txt
if cmp -s "$REQS" "$VENV/requirements.txt" 2>/dev/null; then
  exit 0
fi
command -v python3 >/dev/null || { echo "oip-client: python3 (3.11 or newer, with venv) is needed" >&2; exit 1; }
echo "oip-client: making $VENV (tritonclient[http,grpc], opentelemetry-proto)" >&2
rm -rf "$VENV"
python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --only-binary=:all: --no-deps -r "$REQS"
cp "$REQS" "$VENV/requirements.txt"
