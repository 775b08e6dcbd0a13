#!/usr/bin/env bash
# Same-run A/B of the /score hot path of two switchyard binaries: model-1, wrk -t1 -c32 for 5 s,
# rounds interleaved (A, B, A, B, ...) so that machine noise hits both alike. Loopback only.
# Usage: benches/ab.sh BIN_A BIN_B [WORKERS] [ROUNDS]     (needs wrk: apt-get install wrk)
set -u
cd "$(dirname "$0")/.."
A=$1 B=$2 WORKERS=${3:-1} ROUNDS=${4:-5}
. benches/ab-lib.sh
DOC="{\"name\":\"blue\",\"model\":{\"path\":\"$PWD/models/model-1\"},\"request_settings\":{\"max_concurrent_requests_per_instance\":64}}"
ab_wrk_script /tmp/hp.lua
for round in $(seq "$ROUNDS"); do
  for which in A B; do
    bin=$A; [ $which = B ] && bin=$B
    ab_start $bin blue "$DOC" --workers $WORKERS
    out=$(wrk -t1 -c32 -d5s -H "Authorization: Bearer $KEY" -s /tmp/hp.lua --latency $SC/score 2>&1)
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    p99=$(echo "$out" | awk '$1=="99%" {print $2}')
    non2xx=$(echo "$out" | awk '/Non-2xx/ {print $4}')
    echo "round $round $which req/s=$rps p99=$p99 non2xx=${non2xx:-0}"
    kill $PID; wait $PID 2>/dev/null
  done
done
