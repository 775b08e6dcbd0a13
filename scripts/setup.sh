#!/usr/bin/env bash
# One-time set-up of a fresh machine: fetches the pinned ONNX Runtime shared library from the
# PyPI `onnxruntime` wheel into .ort/ (no Python package is installed), then builds the release
# binary. Safe to run again: each step is skipped when its result is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

ORT_VERSION=1.31.1
WHEEL=onnxruntime-${ORT_VERSION}-cp311-cp311-manylinux_2_28_x86_64.whl
WHEEL_SHA256=5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f
LIB=.ort/libonnxruntime.so.${ORT_VERSION}

if [ ! -f "$LIB" ]; then
  case "$(uname -m)" in
    x86_64) ;;
    *) echo "setup: the pinned ONNX Runtime wheel is x86_64 only; this machine is $(uname -m)." >&2
       echo "setup: set SWITCHYARD_ORT_DYLIB to a libonnxruntime.so >= 1.31 built for it." >&2
       exit 1 ;;
  esac
  command -v python3 >/dev/null || { echo "setup: python3 (with pip) is needed to fetch the ONNX Runtime wheel" >&2; exit 1; }
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  echo "setup: fetching onnxruntime==${ORT_VERSION} from PyPI (wheel only; nothing is installed)"
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 \
    --platform manylinux_2_28_x86_64 "onnxruntime==${ORT_VERSION}" -d "$tmp"
  echo "${WHEEL_SHA256}  $tmp/${WHEEL}" | sha256sum -c --quiet -
  mkdir -p .ort
  python3 - "$tmp/$WHEEL" "$LIB" <<'PY'
import shutil, sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.startswith("onnxruntime/capi/libonnxruntime.so."))
    with z.open(name) as src, open(dest + ".part", "wb") as out:
        shutil.copyfileobj(src, out)
shutil.move(dest + ".part", dest)
PY
  ln -sf "libonnxruntime.so.${ORT_VERSION}" .ort/libonnxruntime.so
  echo "setup: ONNX Runtime ${ORT_VERSION} is in .ort/"
fi

if [ "${SWITCHYARD_SKIP_BUILD:-0}" != 1 ]; then
  cargo build --release --locked --bin switchyard
fi

# The Python hook's tests run scoring scripts in a plain venv (the one test that builds an
# environment from a conda file makes its own): made once here, from pinned wheels.
PY_VENV=target/python-test-venv
PY_REQS=runtime/python/test-requirements.txt
PY_NODEPS=runtime/python/test-requirements-nodeps.txt
if [ "${SWITCHYARD_SKIP_PYTHON:-0}" != 1 ] && ! cat "$PY_REQS" "$PY_NODEPS" | cmp -s - "$PY_VENV/requirements.txt" 2>/dev/null; then
  command -v python3 >/dev/null || { echo "setup: python3 (3.11 or newer, with venv) is needed for the Python hook's tests" >&2; exit 1; }
  echo "setup: making $PY_VENV for the Python hook's tests"
  rm -rf "$PY_VENV"
  python3 -m venv "$PY_VENV"
  "$PY_VENV/bin/python" -m pip install --quiet --disable-pip-version-check --only-binary=:all: -r "$PY_REQS"
  "$PY_VENV/bin/python" -m pip install --quiet --disable-pip-version-check --only-binary=:all: --no-deps -r "$PY_NODEPS"
  cat "$PY_REQS" "$PY_NODEPS" > "$PY_VENV/requirements.txt"
fi
