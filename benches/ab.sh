#!/usr/bin/env bash
# Same-run A/B of the /score hot path of two switchyard binaries: model-1, wrk -t1 -c32 for 5 s,
# rounds interleaved (A, B, A, B, ...) so that machine noise hits both alike. Loopback only.
# Usage: benches/ab.sh BIN_A BIN_B [WORKERS] [ROUNDS]     (needs wrk: apt-get install wrk)
set -u
cd "$(dirname "$0")/.."
A=$1 B=$2 WORKERS=${3:-1} ROUNDS=${4:-5}
start() { # bin -> sets PID SC KEY
  "$1" serve --port 0 --admin-port 0 --workers $WORKERS > /tmp/hp.out 2>/dev/null &
  PID=$!
  for _ in $(seq 100); do grep -q '^Admin plane' /tmp/hp.out && break; sleep 0.05; done
  SC=$(sed -n 's/^Scoring plane: //p' /tmp/hp.out); AD=$(sed -n 's/^Admin plane: //p' /tmp/hp.out)
  curl -s -XPUT $AD/v1/endpoint -H 'content-type: application/json' -d '{"name":"my-endpoint"}' >/dev/null
  curl -s -XPUT "$AD/v1/deployments/blue?all_traffic=true" -H 'content-type: application/json' -d "{\"name\":\"blue\",\"model\":{\"path\":\"$PWD/models/model-1\"},\"request_settings\":{\"max_concurrent_requests_per_instance\":64}}" >/dev/null
  sleep 1
  KEY=$(curl -s $AD/v1/endpoint/keys | python3 -c 'import json,sys;print(json.load(sys.stdin)["primaryKey"])')
}
cat > /tmp/hp.lua <<LUA
wrk.method = "POST"
wrk.body = io.open("sample-requests/model-1.json"):read("a")
wrk.headers["Content-Type"] = "application/json"
LUA
for round in $(seq "$ROUNDS"); do
  for which in A B; do
    bin=$A; [ $which = B ] && bin=$B
    start $bin
    out=$(wrk -t1 -c32 -d5s -H "Authorization: Bearer $KEY" -s /tmp/hp.lua --latency $SC/score 2>&1)
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    p99=$(echo "$out" | awk '$1=="99%" {print $2}')
    non2xx=$(echo "$out" | awk '/Non-2xx/ {print $4}')
    echo "round $round $which req/s=$rps p99=$p99 non2xx=${non2xx:-0}"
    kill $PID; wait $PID 2>/dev/null
  done
done
