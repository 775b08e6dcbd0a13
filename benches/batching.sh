#!/usr/bin/env bash
# Adaptive batching (issue 29), same run: one switchyard binary, one instance, wrk -t1 -c32 for
# 5 s of one-row requests, rounds interleaved: A without batching, B with
# `batching: {max_batch_size: 32, max_delay_us: DELAY}`. Reports req/s and p99 per round, and
# for B the batch sizes and queue delays from /metrics (switchyard_batch_size,
# switchyard_batch_queue_delay_seconds). Loopback only.
# Usage: benches/batching.sh BIN [MODEL] [ROUNDS] [DELAY_US]     (needs wrk)
#   MODEL: model-3 (default; the 512-1024-1024-16 MLP, sample-requests/model-3.json) or
#   model-1 (sample-requests/model-1.json, two rows).
set -u
cd "$(dirname "$0")/.."
BIN=$1 MODEL=${2:-model-3} ROUNDS=${3:-3} DELAY=${4:-500}
. benches/ab-lib.sh
# Admission lets 2 x 32 requests in: every client's request is admitted, and a batch can fill.
BASE="\"model\":{\"path\":\"$PWD/models/$MODEL\"},\"request_settings\":{\"max_concurrent_requests_per_instance\":32}"
OFF="{\"name\":\"blue\",$BASE}"
ON="{\"name\":\"blue\",$BASE,\"batching\":{\"max_batch_size\":32,\"max_delay_us\":$DELAY}}"
cat > /tmp/batching-bench.lua <<LUA
wrk.method = "POST"
wrk.body = io.open("sample-requests/$MODEL.json"):read("a")
wrk.headers["Content-Type"] = "application/json"
LUA
for round in $(seq "$ROUNDS"); do
  for which in A B; do
    doc=$OFF; [ $which = B ] && doc=$ON
    ab_start "$BIN" blue "$doc"
    out=$(wrk -t1 -c32 -d5s -H "Authorization: Bearer $KEY" -s /tmp/batching-bench.lua --latency "$SC/score" 2>&1)
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    p50=$(echo "$out" | awk '$1=="50%" {print $2}')
    p99=$(echo "$out" | awk '$1=="99%" {print $2}')
    non2xx=$(echo "$out" | awk '/Non-2xx/ {print $4}')
    echo "round $round $which $MODEL req/s=$rps p50=$p50 p99=$p99 non2xx=${non2xx:-0}"
    if [ $which = B ]; then
      curl -s "$AD/metrics" | python3 -c '
import sys
lines = [l for l in sys.stdin if l.startswith("switchyard_batch_") and "blue" in l]
def val(name):
    return next((float(l.rsplit(" ", 1)[1]) for l in lines if l.startswith(name + "{")), 0.0)
runs, rows = val("switchyard_batch_size_count"), val("switchyard_batch_size_sum")
delays, delay_sum = val("switchyard_batch_queue_delay_seconds_count"), val("switchyard_batch_queue_delay_seconds_sum")
prev, dist = 0.0, []
for l in lines:
    if l.startswith("switchyard_batch_size_bucket{"):
        le = l.split("le=\"")[1].split("\"")[0]
        n = float(l.rsplit(" ", 1)[1])
        if n > prev:
            dist.append(f"<={le}: {int(n - prev)}")
        prev = n
print(f"  batches={int(runs)} rows={int(rows)} mean_batch_size={rows / max(runs, 1):.1f} "
      f"mean_queue_delay_us={1e6 * delay_sum / max(delays, 1):.0f}")
print("  batch sizes (runs per bucket): " + ", ".join(dist))
'
    fi
    kill $PID; wait $PID 2>/dev/null
  done
done
