#!/usr/bin/env bash
# Installs what the studio page's browser test needs (tests/studio.rs runs tests/studio/studio_test.py):
# Debian's chromium + chromium-driver (apt; a matched pair) and Selenium from PyPI, pinned, in
# target/studio-venv. Each step is skipped when its result is already there. Set
# SWITCHYARD_SKIP_BROWSER=1 to skip (the browser test then says it was skipped).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${SWITCHYARD_SKIP_BROWSER:-0}" = 1 ] && exit 0

if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "studio-setup: chromium and chromedriver are needed (Debian: apt-get install chromium chromium-driver)" >&2
    exit 1
  fi
  echo "studio-setup: installing chromium and chromium-driver with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
fi

VENV=target/studio-venv
REQS=tests/studio/requirements.txt
if ! cmp -s "$REQS" "$VENV/requirements.txt" 2>/dev/null; then
  echo "studio-setup: making $VENV (selenium)"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --only-binary=:all: -r "$REQS"
  cp "$REQS" "$VENV/requirements.txt"
fi
