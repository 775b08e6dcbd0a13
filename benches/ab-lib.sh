# Shared by benches/ab.sh and benches/ab-native.sh (sourced): start a server and make one
# deployment that holds all traffic, and the wrk script that POSTs the model-1 sample.

# ab_start BIN NAME DEPLOYMENT_JSON [SERVE_ARGS...] -> sets PID SC AD KEY. Waits until the
# deployment is Succeeded (at most 10 s) rather than for a fixed time.
ab_start() {
  local bin=$1 name=$2 doc=$3 out
  shift 3
  out=$(mktemp /tmp/switchyard-ab-XXXXXX.out)
  "$bin" serve --port 0 --admin-port 0 "$@" > "$out" 2>/dev/null &
  PID=$!
  for _ in $(seq 100); do grep -q '^Admin plane' "$out" && break; sleep 0.05; done
  SC=$(sed -n 's/^Scoring plane: //p' "$out"); AD=$(sed -n 's/^Admin plane: //p' "$out")
  rm -f "$out"
  curl -s -XPUT "$AD/v1/endpoint" -H 'content-type: application/json' -d '{"name":"my-endpoint"}' >/dev/null
  curl -s -XPUT "$AD/v1/deployments/$name?all_traffic=true" -H 'content-type: application/json' -d "$doc" >/dev/null
  for _ in $(seq 100); do curl -s "$AD/v1/deployments/$name" | grep -q '"Succeeded"' && break; sleep 0.1; done
  KEY=$(curl -s "$AD/v1/endpoint/keys" | python3 -c 'import json,sys;print(json.load(sys.stdin)["primaryKey"])')
}

# ab_wrk_script FILE: the wrk script POSTing sample-requests/model-1.json.
ab_wrk_script() {
  cat > "$1" <<LUA
wrk.method = "POST"
wrk.body = io.open("sample-requests/model-1.json"):read("a")
wrk.headers["Content-Type"] = "application/json"
LUA
}
