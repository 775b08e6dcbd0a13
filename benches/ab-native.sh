#!/usr/bin/env bash
# Same-run A/B of two switchyard binaries on the Rust model-1 plugin in process
# (runtime/examples/linear, 2 instances, pinned): wrk -t1 for 5 s at c=1 and c=32 (or $CONNS),
# rounds interleaved (A, B, A, B, ...) so machine noise hits both alike. Loopback only.
# Usage: benches/ab-native.sh BIN_A BIN_B [ROUNDS]
# (needs wrk and: cargo build --release -p switchyard-example-linear)
set -u
cd "$(dirname "$0")/.."
A=$1 B=$2 ROUNDS=${3:-4} CONNS=${CONNS:-"1 32"}
PLUGIN=$(mktemp -d /tmp/switchyard-ab-native-XXXXXX)
cp target/release/libswitchyard_example_linear.so "$PLUGIN/plugin.so"
. benches/ab-lib.sh
DOC="{\"name\":\"native\",\"instance_count\":2,\"model\":{\"path\":\"$PWD/models/model-1\"},\"code_configuration\":{\"code\":\"$PLUGIN\",\"scoring_script\":\"plugin.so\"},\"request_settings\":{\"max_concurrent_requests_per_instance\":64}}"
ab_wrk_script /tmp/abn.lua
for round in $(seq "$ROUNDS"); do
  for which in A B; do
    bin=$A; [ $which = B ] && bin=$B
    ab_start $bin native "$DOC"
    for c in $CONNS; do
      out=$(wrk -t1 -c$c -d5s -H "Authorization: Bearer $KEY" -s /tmp/abn.lua --latency $SC/score 2>&1)
      rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
      p50=$(echo "$out" | awk '$1=="50%" {print $2}')
      p99=$(echo "$out" | awk '$1=="99%" {print $2}')
      non2xx=$(echo "$out" | awk '/Non-2xx/ {print $4}')
      echo "round $round $which c=$c req/s=$rps p50=$p50 p99=$p99 non2xx=${non2xx:-0}"
    done
    kill $PID; wait $PID 2>/dev/null
  done
done
rm -rf "$PLUGIN"
