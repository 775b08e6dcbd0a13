#!/usr/bin/env bash
# Regenerates models/model-1, model-2 and model-3 (and the test models) with the pinned toolchain of
# models/requirements.txt, in a venv of its own (.venv-models/). Users and CI never need this:
# the .onnx files are committed.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv-models/bin/python ] || python3 -m venv .venv-models
.venv-models/bin/pip install --quiet -r models/requirements.txt
.venv-models/bin/python models/generate.py
