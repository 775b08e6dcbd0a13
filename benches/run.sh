#!/usr/bin/env bash
# The load benchmark, one command: sets up what it needs (ONNX Runtime, release builds, wrk,
# a pinned venv with azureml-inference-server-http), then runs benches/load.py, which prints
# the ratio tables and writes benches/results/{load-results.json,load-plot.svg}.
#   benches/run.sh            full run (~10 minutes on 2 cores)
#   benches/run.sh --quick    shorter points (~4 minutes)
#   benches/run.sh --manycore model-2 64-row throughput against instance count 1..16
#   benches/run.sh --only sample   the Azure sample's score.py: Switchyard against Azure's
#                            inference server (~1 minute; benches/results/python-sample-results.json)
#   benches/run.sh --only native   the Rust model-1 plugin (in process and isolation: process)
#                            against the ONNX model-1 hook (~1 minute; benches/results/native-results.json)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --locked -p switchyard-bench-floor
# The Rust model-1 plugin (runtime/examples/linear), for --only native.
cargo build --release --locked -p switchyard-example-linear

if ! command -v wrk >/dev/null; then
  echo "bench: installing wrk (Debian package)"
  if [ "$(id -u)" = 0 ]; then
    apt-get install -y -q wrk >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q wrk >/dev/null; }
  else
    sudo apt-get install -y -q wrk
  fi
fi

case " $* " in
  *" --manycore "*|*" --no-python "*|*" --only native "*|*" oip "*) ;;
  *)
    if [ ! -x .bench/venv/bin/azmlinfsrv ]; then
      echo "bench: creating .bench/venv with azureml-inference-server-http (pinned)"
      python3 -m venv .bench/venv
      .bench/venv/bin/pip install --quiet -r benches/python-server-requirements.txt
    fi
    # The Azure sample's score.py runs in this one under both servers (scikit-learn pinned).
    if ! cmp -s benches/python-sample-requirements.txt .bench/sample-venv/requirements.txt 2>/dev/null; then
      echo "bench: creating .bench/sample-venv with azureml-inference-server-http and scikit-learn (pinned)"
      rm -rf .bench/sample-venv
      python3 -m venv .bench/sample-venv
      .bench/sample-venv/bin/pip install --quiet -r benches/python-sample-requirements.txt
      cp benches/python-sample-requirements.txt .bench/sample-venv/requirements.txt
    fi
    ;;
esac
exec python3 benches/load.py "$@"
