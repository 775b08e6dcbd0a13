#!/usr/bin/env bash
# The cost of traces on the /score hot path: one switchyard binary, off (no OTEL_* variable) against
# on, exporting to a real OTLP/HTTP receiver (tests/traces/receiver.py --discard: it counts what
# comes and does not decode it, so its CPU is not the server's cost), rounds interleaved by
# benches/ab.sh (model-1, wrk -t1 -c32, 5 s a round). SAMPLER_ARG is the share of traces kept
# (parentbased_traceidratio; 0.1 is one in ten): a request whose trace is dropped makes only its
# request span (where the sampler decides); a kept one makes its four spans and is exported.
# Usage: benches/traces.sh BIN [SAMPLER_ARG] [ROUNDS]   (needs wrk; makes target/oip-client-venv)
set -eu
cd "$(dirname "$0")/.."
BIN=$(realpath "$1") ARG=${2:-0.1} ROUNDS=${3:-5}
bash scripts/oip-client.sh
exec 3< <(tail -f /dev/null)
target/oip-client-venv/bin/python tests/traces/receiver.py --discard <&3 > /tmp/switchyard-traces-port &
RECEIVER=$!
trap 'kill $RECEIVER 2>/dev/null' EXIT
for _ in $(seq 100); do [ -s /tmp/switchyard-traces-port ] && break; sleep 0.05; done
PORT=$(head -1 /tmp/switchyard-traces-port)
TRACED=$(mktemp /tmp/switchyard-traced-XXXXXX)
cat > "$TRACED" <<SH
#!/bin/sh
export OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$PORT OTEL_TRACES_SAMPLER=parentbased_traceidratio OTEL_TRACES_SAMPLER_ARG=$ARG
exec "$BIN" "\$@"
SH
chmod +x "$TRACED"
echo "A: traces off; B: traces on, sampler ratio $ARG, to the receiver at :$PORT"
bash benches/ab.sh "$BIN" "$TRACED" 1 "$ROUNDS"
echo "received (counted, not decoded): $(curl -s "http://127.0.0.1:$PORT/stats")"
rm -f "$TRACED"
