#!/usr/bin/env bash
# The load benchmark, one command: sets up what it needs (ONNX Runtime, release builds, wrk,
# a pinned venv with azureml-inference-server-http), then runs benches/load.py, which prints
# the ratio tables and writes benches/results/{load-results.json,load-plot.svg}.
#   benches/run.sh            full run (~10 minutes on 2 cores)
#   benches/run.sh --quick    shorter points (~4 minutes)
#   benches/run.sh --manycore model-2 64-row throughput against instance count 1..16
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --locked -p switchyard-bench-floor

if ! command -v wrk >/dev/null; then
  echo "bench: installing wrk (Debian package)"
  if [ "$(id -u)" = 0 ]; then
    apt-get install -y -q wrk >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q wrk >/dev/null; }
  else
    sudo apt-get install -y -q wrk
  fi
fi

case " $* " in
  *" --manycore "*|*" --no-python "*) ;;
  *)
    if [ ! -x .bench/venv/bin/azmlinfsrv ]; then
      echo "bench: creating .bench/venv with azureml-inference-server-http (pinned)"
      python3 -m venv .bench/venv
      .bench/venv/bin/pip install --quiet -r benches/python-server-requirements.txt
    fi
    ;;
esac
exec python3 benches/load.py "$@"
