#!/usr/bin/env bash
# The main job: sets up a fresh machine (ONNX Runtime + release build), starts one endpoint on
# the shipped models and walks the seed's safe rollout step by step with the az-ml-style CLI:
# blue with all traffic, invoke, scale, green at 0, pinned invoke, mirror, 90/10, 0/100,
# delete blue.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

BIN=$PWD/target/release/switchyard
EP=my-endpoint
LOG=$(mktemp -d)
"$BIN" serve --port 0 --admin-port 0 >"$LOG/stdout" 2>"$LOG/stderr" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null; rm -rf "$LOG"' EXIT
for _ in $(seq 100); do grep -q '^Admin plane:' "$LOG/stdout" 2>/dev/null && break; sleep 0.1; done
grep -q '^Admin plane:' "$LOG/stdout" || { cat "$LOG/stderr" >&2; echo "the server did not start" >&2; exit 1; }
cat "$LOG/stdout"
export SWITCHYARD_ADMIN_URL=$(sed -n 's/^Admin plane: //p' "$LOG/stdout")

step() { printf '\n\033[1m== %s\033[0m\n$ switchyard %s\n' "$1" "${*:2}"; "$BIN" "${@:2}"; }

step "Create the endpoint from the seed's endpoint.yml" online-endpoint create --name $EP -f examples/endpoint.yml
step "Create blue (model-1) with all traffic" online-deployment create --name blue --endpoint $EP -f examples/blue-deployment.yml --all-traffic --query '{name:name,state:provisioning_state,instances:instances}'
step "Show the endpoint's state" online-endpoint show -n $EP --query provisioning_state -o tsv
step "Invoke the endpoint" online-endpoint invoke --name $EP --request-file sample-requests/model-1.json
step "Scale blue to 2 instances" online-deployment update --name blue --endpoint-name $EP --set instance_count=2 --query '{name:name,instance_count:instance_count,ready:instances.ready}'
step "Blue's logs" online-deployment get-logs --name blue --endpoint $EP --lines 5
step "Create green (model-2) with no traffic" online-deployment create --name green --endpoint-name $EP -f examples/green-deployment.yml --query '{name:name,state:provisioning_state}'
step "Traffic: green has 0" online-endpoint show -n $EP --query traffic
step "Invoke green directly (pinned)" online-endpoint invoke --name $EP --deployment-name green --request-file sample-requests/model-2.json
step "Mirror 10% of traffic to green" online-endpoint update --name $EP --mirror-traffic "green=10" --query mirror_traffic
printf '\n== Invoke 20 times (answers come from blue; ~10%% are copied to green)\n'
for _ in $(seq 20); do "$BIN" online-endpoint invoke --name $EP --request-file sample-requests/model-1.json >/dev/null; done
step "Green's logs show the mirrored requests" online-deployment get-logs --name green --endpoint-name $EP --lines 50
step "Does green agree with blue on the mirrored requests?" online-deployment compare --name green --endpoint-name $EP -o json --query '{pairs:pairs,agreement_ratio:agreement_ratio,max_abs_diff:max_abs_diff,dropped:dropped}'
step "Turn mirroring off" online-endpoint update --name $EP --mirror-traffic "green=0" --query mirror_traffic
step "Send 10% of live traffic to green" online-endpoint update --name $EP --traffic "blue=90 green=10" --query traffic
printf '\n== 1000 requests at 90/10: who answered?\n'
KEY=$("$BIN" online-endpoint get-credentials -n $EP -o tsv --query primaryKey)
URI=$("$BIN" online-endpoint show -n $EP -o tsv --query scoring_uri)
python3 - "$URI" "$KEY" <<'PY'
import collections, json, sys, urllib.request
uri, key = sys.argv[1], sys.argv[2]
body = open("sample-requests/model-1.json", "rb").read()
seen = collections.Counter()
for _ in range(1000):
    req = urllib.request.Request(uri, data=body, headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        seen[r.headers["azureml-model-deployment"]] += 1
print(json.dumps(dict(seen)))
PY
step "Send all traffic to green" online-endpoint update --name $EP --traffic "blue=0 green=100" --query traffic
step "Invoke (green answers now)" online-endpoint invoke --name $EP --request-file sample-requests/model-2.json
step "Delete blue" online-deployment delete --name blue --endpoint $EP --yes --no-wait
step "Deployments left" online-deployment list -e $EP --query '[].{name:name,state:provisioning_state}' -o tsv
step "Delete the endpoint" online-endpoint delete --name $EP --yes --no-wait
printf '\nSafe rollout complete.\n'
