#!/usr/bin/env bash
# Makes target/sdk-venv for the Python SDK's tutorial test (tests/sdk.rs): azure-ai-ml and its
# dependency tree, pinned in sdk/python/requirements-test.txt (about 140 MB, a few minutes the
# first time), then `pip install sdk/python` to check the package installs from its folder.
# Skipped when the venv was made from the same requirements. SWITCHYARD_SKIP_SDK=1 skips it.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${SWITCHYARD_SKIP_SDK:-0}" = 1 ] && exit 0
VENV=target/sdk-venv
REQS=sdk/python/requirements-test.txt
if ! cmp -s "$REQS" "$VENV/requirements.txt" 2>/dev/null; then
  command -v python3 >/dev/null || { echo "sdk-setup: python3 (with venv) is needed for the SDK test" >&2; exit 1; }
  echo "sdk-setup: making $VENV (azure-ai-ml and its dependencies, pinned)"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQS"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps ./sdk/python
  cp "$REQS" "$VENV/requirements.txt"
fi
