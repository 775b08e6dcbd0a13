#!/usr/bin/env bash
# The cost of payload logging (issue 28), same run: one switchyard binary, model-1, wrk -t1
# -c32 for 5 s, rounds interleaved: A without data_collector, B with request and response
# logging at sampling_rate 1.0 (every request and answer written as JSON lines under a fresh
# --data-dir). Reports req/s and p99 per round and the records B wrote. Loopback only.
# Usage: benches/collector_cost.sh BIN [WORKERS] [ROUNDS]      (needs wrk)
set -u
cd "$(dirname "$0")/.."
BIN=$1 WORKERS=${2:-1} ROUNDS=${3:-5}
. benches/ab-lib.sh
MODEL="\"model\":{\"path\":\"$PWD/models/model-1\"},\"request_settings\":{\"max_concurrent_requests_per_instance\":64}"
OFF="{\"name\":\"blue\",$MODEL}"
ON="{\"name\":\"blue\",$MODEL,\"data_collector\":{\"collections\":{\"request\":{\"enabled\":\"True\"},\"response\":{\"enabled\":\"True\"}},\"sampling_rate\":1.0}}"
ab_wrk_script /tmp/collector-cost.lua
for round in $(seq "$ROUNDS"); do
  for which in A B; do
    doc=$OFF; [ $which = B ] && doc=$ON
    data=$(mktemp -d /tmp/switchyard-collector-cost-XXXXXX)
    ab_start "$BIN" blue "$doc" --workers "$WORKERS" --data-dir "$data"
    out=$(wrk -t1 -c32 -d5s -H "Authorization: Bearer $KEY" -s /tmp/collector-cost.lua --latency "$SC/score" 2>&1)
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    p99=$(echo "$out" | awk '$1=="99%" {print $2}')
    written=$(curl -s "$AD/v1/deployments/blue" | python3 -c 'import json,sys; print((json.load(sys.stdin).get("data_collector_status") or {}).get("written", "-"))')
    echo "round $round $which req/s=$rps p99=$p99 records_written=$written"
    kill $PID; wait $PID 2>/dev/null
    rm -rf "$data"
  done
done
