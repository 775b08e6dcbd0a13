#!/usr/bin/env bash
# The main job: sets up a fresh machine (ONNX Runtime + release build), starts `switchyard
# serve` and walks the safe rollout step by step with the az-ml-style CLI: endpoint, blue with
# all traffic, invoke, scale, green at 0, pinned invoke of green, mirror 10%, 90/10, 0/100,
# logs, delete blue, delete the endpoint.
#
#   scripts/walkthrough.sh          on the Azure sample's own files (examples/azure-sample:
#                                   endpoint.yml, blue/green-deployment.yml, their score.py
#                                   scripts, conda files and scikit-learn pickles, unchanged)
#   scripts/walkthrough.sh --onnx   on the shipped ONNX models (examples/*.yml)
#
# The sample's deployments run their score.py in the Python environment of their conda file
# (python=3.12, numpy, scipy, scikit-learn, azureml-inference-server-http from PyPI), which
# Switchyard builds into a venv the first time (about a minute with pip; `uv` on PATH is
# faster) and takes from its cache afterwards (seconds). Settings:
#   SWITCHYARD_PYTHON=/path/to/bin/python   run score.py with this interpreter; build nothing
#   SWITCHYARD_ENV_CACHE_DIR=DIR            where built venvs are kept (~/.cache/switchyard/envs)
# Without a Python 3.12 on the machine (PATH, pyenv, uv, /usr/bin), the walkthrough says so
# and runs the scripts in target/python-test-venv (python3 with the conda file's pins).
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=sample
case "${1:-}" in
  "" | --sample) ;;
  --onnx) MODE=onnx ;;
  -h | --help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "usage: $0 [--onnx]" >&2; exit 2 ;;
esac
STARTED=$(date +%s.%N)
elapsed() { awk -v a="$STARTED" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

# A Python of the version the sample's conda file asks for, looked for where the server looks.
python_312() {
  local c
  for c in "$(command -v python3.12 || true)" "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12*/bin/python3 \
    "$HOME"/.local/share/uv/python/cpython-3.12*/bin/python3 /usr/bin/python3.12 /usr/local/bin/python3.12 \
    "$(command -v python3 || true)"; do
    [ -n "$c" ] && [ -x "$c" ] || continue
    if "$c" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null; then
      echo "$c"
      return 0
    fi
  done
  return 1
}

NEED_TEST_VENV=0
if [ "$MODE" = sample ] && [ -z "${SWITCHYARD_PYTHON:-}" ] && ! python_312 >/dev/null; then
  NEED_TEST_VENV=1
fi
if [ "$NEED_TEST_VENV" = 1 ]; then scripts/setup.sh; else SWITCHYARD_SKIP_PYTHON=1 scripts/setup.sh; fi
if [ "$NEED_TEST_VENV" = 1 ]; then
  SWITCHYARD_PYTHON=$PWD/target/python-test-venv/bin/python
  export SWITCHYARD_PYTHON
  cat <<EOF

NOTE: the sample's conda file asks for python=3.12, and no Python 3.12 is on this machine
(looked on PATH, in pyenv's and uv's Pythons, /usr/bin, /usr/local/bin). Its score.py
scripts run in target/python-test-venv instead ($("$SWITCHYARD_PYTHON" -V 2>&1) with the
conda file's numpy, scipy, scikit-learn and joblib pins, from PyPI). Install Python 3.12
(e.g. \`uv python install 3.12\`) to build the conda environment as Azure does.
EOF
fi

BIN=$PWD/target/release/switchyard
EP=my-endpoint
LOG=$(mktemp -d)
"$BIN" serve --port 0 --admin-port 0 >"$LOG/stdout" 2>"$LOG/stderr" &
SERVER=$!
CHILD=
cleanup() {
  [ -z "$CHILD" ] || kill "$CHILD" 2>/dev/null || true
  kill $SERVER 2>/dev/null
  wait $SERVER 2>/dev/null
  rm -rf "$LOG"
}
trap cleanup EXIT
for _ in $(seq 100); do grep -q '^Admin plane:' "$LOG/stdout" 2>/dev/null && break; sleep 0.1; done
grep -q '^Admin plane:' "$LOG/stdout" || { cat "$LOG/stderr" >&2; echo "the server did not start" >&2; exit 1; }
cat "$LOG/stdout"
export SWITCHYARD_ADMIN_URL=$(sed -n 's/^Admin plane: //p' "$LOG/stdout")

title() { printf '\n\033[1m== %s\033[0m\n' "$1"; }
# Prints a command line as one would type it (arguments with spaces or braces quoted).
show() {
  local a out=
  for a in "$@"; do
    if [[ $a =~ ^[A-Za-z0-9_./=:@,+-]+$ ]]; then out+=" $a"; else out+=" '$a'"; fi
  done
  printf '$ switchyard%s\n' "$out"
}
step() { title "$1"; show "${@:2}"; "$BIN" "${@:2}"; }

# As `step`, for a command whose output must be `want` (the walkthrough stops otherwise).
expect() {
  local want=$1 got
  title "$2"
  show "${@:3}"
  got=$("$BIN" "${@:3}")
  echo "$got"
  if [ "$(tr -d ' \n' <<<"$got")" != "$(tr -d ' \n' <<<"$want")" ]; then
    echo "walkthrough: expected $want" >&2
    exit 1
  fi
}

# Counts who answered `n` unpinned requests with the endpoint's key.
who_answered() {
  local n=$1 body=$2 key uri
  key=$("$BIN" online-endpoint get-credentials -n $EP -o tsv --query primaryKey)
  uri=$("$BIN" online-endpoint show -n $EP -o tsv --query scoring_uri)
  python3 - "$uri" "$key" "$body" "$n" <<'PY'
import collections, json, sys, urllib.request
uri, key, path, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
body = open(path, "rb").read()
seen = collections.Counter()
for _ in range(n):
    req = urllib.request.Request(uri, data=body, headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        seen[r.headers["azureml-model-deployment"]] += 1
print(json.dumps(dict(seen)))
PY
}

# A deployment create that may build a Python environment: the create runs in the background
# while its progress (the environment lines of the deployment's log) is printed, with the
# seconds since the create began.
create_showing_build() {
  local name=$1 t0=$SECONDS seen=0 all
  title "$2"
  show "${@:3}"
  "$BIN" "${@:3}" >"$LOG/create.out" 2>"$LOG/create.err" &
  CHILD=$!
  for _ in $(seq 3600); do # at most 30 minutes, 0.5 s a turn
    all=$("$BIN" online-deployment get-logs --name "$name" --endpoint-name $EP --lines 1000 2>/dev/null |
      sed -n 's/^[^ ]* environment: //p') || true
    if [ -n "$all" ]; then
      tail -n +$((seen + 1)) <<<"$all" | awk -v t=$((SECONDS - t0)) '
        /^(building|using|uv is not|cache hit|built in|ERROR|error)/ { printf "  [%3ds] %s\n", t, $0; next }
        /^\$ .*"-m" "venv"/ || /^\$ .*uv" "venv"/ { printf "  [%3ds] creating the venv\n", t; next }
        /^\$ .* pip" "install"/ || /^\$ .*uv" "pip" "install"/ { printf "  [%3ds] installing the pip requirements\n", t; next }
        /^Collecting / { n++; sub(/ \(from .*/, ""); names = names (names ? ", " : "") $2 }
        /^Installing collected packages/ { c = split($0, p, ","); printf "  [%3ds] installing %d packages\n", t, c; next }
        /^Successfully installed/ { printf "  [%3ds] installed %d packages\n", t, NF - 2; next }
        END { if (n) printf "  [%3ds] collecting %s\n", t, names }'
      seen=$(wc -l <<<"$all")
    fi
    kill -0 $CHILD 2>/dev/null || break
    sleep 0.5
  done
  if kill -0 $CHILD 2>/dev/null; then
    echo "walkthrough: the create of $name did not finish in 30 minutes" >&2
    exit 1
  fi
  if ! wait $CHILD; then
    CHILD=
    cat "$LOG/create.err" >&2
    "$BIN" online-deployment get-logs --name "$name" --endpoint-name $EP --lines 30 >&2 || true
    exit 1
  fi
  CHILD=
  cat "$LOG/create.out"
  printf '(%s is ready after %d s)\n' "$name" $((SECONDS - t0))
}

sample_walkthrough() {
  local S=examples/azure-sample/managed/sample
  local REQ=$S/sample-request.json
  if [ -n "${SWITCHYARD_PYTHON:-}" ]; then
    printf '\nscore.py runs in %s (SWITCHYARD_PYTHON): no environment is built.\n' "$SWITCHYARD_PYTHON"
  else
    printf '\nscore.py runs in a venv built from the sample'"'"'s conda file with %s, cached under %s:\n' \
      "$(python_312)" "${SWITCHYARD_ENV_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/switchyard/envs}"
    printf 'the first build downloads numpy, scipy, scikit-learn and azureml-inference-server-http from PyPI\n'
    printf '(about a minute with pip); later runs take it from the cache in a second or two.\n'
  fi

  step "Create the endpoint from the sample's endpoint.yml" online-endpoint create --name $EP -f $S/endpoint.yml
  create_showing_build blue "Create blue (model-1/onlinescoring/score.py) with all traffic" \
    online-deployment create --name blue --endpoint $EP -f $S/blue-deployment.yml --all-traffic \
    --query '{name:name,state:provisioning_state,instances:instances}'
  step "Show the endpoint's state" online-endpoint show -n $EP --query provisioning_state -o tsv
  expect '[11055.977245525679, 4503.079536107787]' "Invoke the endpoint (blue's LinearRegression answers)" \
    online-endpoint invoke --name $EP --request-file $REQ
  title "The same with curl and the endpoint's key"
  local key uri
  key=$("$BIN" online-endpoint get-credentials -n $EP -o tsv --query primaryKey)
  uri=$("$BIN" online-endpoint show -n $EP -o tsv --query scoring_uri)
  printf '$ curl --request POST %s --header "Authorization: Bearer $KEY" --header "Content-Type: application/json" --data @%s\n' "$uri" "$REQ"
  curl -sS --fail-with-body --request POST "$uri" --header "Authorization: Bearer $key" \
    --header 'Content-Type: application/json' --data @"$REQ"
  echo
  step "Scale blue to 2 instances (a second score.py worker process)" online-deployment update --name blue \
    --endpoint-name $EP --set instance_count=2 --query '{name:name,instance_count:instance_count,ready:instances.ready}'
  step "Blue's logs (score.py's logging, each line tagged with its worker)" online-deployment get-logs \
    --name blue --endpoint $EP --lines 8
  create_showing_build green "Create green (model-2/onlinescoring/score.py) with no traffic" \
    online-deployment create --name green --endpoint-name $EP -f $S/green-deployment.yml \
    --query '{name:name,state:provisioning_state}'
  step "Traffic: green has 0" online-endpoint show -n $EP --query traffic
  expect '[0.5, 0.5]' "Invoke green directly (pinned)" online-endpoint invoke --name $EP --deployment-name green \
    --request-file $REQ
  step "Mirror 10% of traffic to green" online-endpoint update --name $EP --mirror-traffic "green=10" --query mirror_traffic
  title "Invoke 50 times (answers come from blue; ~10% are copied to green)"
  printf '$ for i in $(seq 50); do switchyard online-endpoint invoke --name %s --request-file %s; done\n' $EP "$REQ"
  for _ in $(seq 50); do "$BIN" online-endpoint invoke --name $EP --request-file $REQ >/dev/null; done
  step "What green got from the mirror" online-deployment show --name green --endpoint-name $EP \
    --query '{wanted:mirror.wanted,copied:mirror.copied,dropped:mirror.dropped}'
  step "Green's logs show the mirrored requests" online-deployment get-logs --name green --endpoint-name $EP --lines 6
  step "Does green agree with blue on the mirrored requests? (no: another model)" online-deployment compare \
    --name green --endpoint-name $EP -o json --query '{pairs:pairs,agreement_ratio:agreement_ratio,max_abs_diff:max_abs_diff}'
  step "Turn mirroring off" online-endpoint update --name $EP --mirror-traffic "green=0" --query mirror_traffic
  step "Send 10% of live traffic to green" online-endpoint update --name $EP --traffic "blue=90 green=10" --query traffic
  title "500 requests at 90/10: who answered?"
  who_answered 500 "$REQ"
  step "Send all traffic to green" online-endpoint update --name $EP --traffic "blue=0 green=100" --query traffic
  expect '[0.5, 0.5]' "Invoke (green answers now)" online-endpoint invoke --name $EP --request-file $REQ
  step "Green's logs" online-deployment get-logs --name green --endpoint-name $EP --lines 6
  step "Delete blue" online-deployment delete --name blue --endpoint $EP --yes --no-wait
  step "Deployments left" online-deployment list -e $EP --query '[].{name:name,state:provisioning_state}' -o tsv
  step "Delete the endpoint" online-endpoint delete --name $EP --yes --no-wait
}

onnx_walkthrough() {
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
  title "Invoke 20 times (answers come from blue; ~10% are copied to green)"
  for _ in $(seq 20); do "$BIN" online-endpoint invoke --name $EP --request-file sample-requests/model-1.json >/dev/null; done
  step "Green's logs show the mirrored requests" online-deployment get-logs --name green --endpoint-name $EP --lines 50
  step "Does green agree with blue on the mirrored requests?" online-deployment compare --name green --endpoint-name $EP -o json --query '{pairs:pairs,agreement_ratio:agreement_ratio,max_abs_diff:max_abs_diff,dropped:dropped}'
  step "Turn mirroring off" online-endpoint update --name $EP --mirror-traffic "green=0" --query mirror_traffic
  step "Send 10% of live traffic to green" online-endpoint update --name $EP --traffic "blue=90 green=10" --query traffic
  title "1000 requests at 90/10: who answered?"
  who_answered 1000 sample-requests/model-1.json
  step "Send all traffic to green" online-endpoint update --name $EP --traffic "blue=0 green=100" --query traffic
  step "Invoke (green answers now)" online-endpoint invoke --name $EP --request-file sample-requests/model-2.json
  step "Delete blue" online-deployment delete --name blue --endpoint $EP --yes --no-wait
  step "Deployments left" online-deployment list -e $EP --query '[].{name:name,state:provisioning_state}' -o tsv
  step "Delete the endpoint" online-endpoint delete --name $EP --yes --no-wait
}

if [ "$MODE" = onnx ]; then onnx_walkthrough; else sample_walkthrough; fi
printf '\nSafe rollout complete (%s s in all, set-up included).\n' "$(elapsed)"
