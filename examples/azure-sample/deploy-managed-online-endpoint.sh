#!/bin/bash
# --- Switchyard's header (not in the original) --------------------------------------------------
# azureml-examples' cli/deploy-managed-online-endpoint.sh, written down from memory of the
# original (it is not vendored: compare with the upstream file before relying on a detail), with
# `az ml` replaced by `$SWITCHYARD` (default: `switchyard` on PATH). Nothing else in the
# script's body differs from the original:
#   - the original runs from azureml-examples' cli/ folder and names the sample's files as
#     endpoints/online/managed/sample/... and endpoints/online/model-1/...; this repository keeps
#     them in examples/azure-sample/ (managed/sample/..., model-1/...). So that those paths stand
#     unchanged, the lines below run the script from a scratch folder in which endpoints/online
#     points at examples/azure-sample.
#   - it talks to the admin API at $SWITCHYARD_ADMIN_URL (default http://127.0.0.1:5002) of a
#     running `switchyard serve`, the way `az ml` talks to a workspace.
# Run it: `target/release/switchyard serve &` then
#   SWITCHYARD=target/release/switchyard examples/azure-sample/deploy-managed-online-endpoint.sh
# (tests/azure_script.rs runs it against a real server.)
SWITCHYARD=${SWITCHYARD:-switchyard}
case $SWITCHYARD in */*) SWITCHYARD=$(cd "$(dirname "$SWITCHYARD")" && pwd)/$(basename "$SWITCHYARD") ;; esac
SAMPLE_DIR=$(cd "$(dirname "$0")" && pwd)
SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT
mkdir -p "$SCRATCH/endpoints"
ln -s "$SAMPLE_DIR" "$SCRATCH/endpoints/online"
cd "$SCRATCH"
# --- the original, `az ml` replaced by `$SWITCHYARD` --------------------------------------------

## IMPORTANT: this file and accompanying assets are the source for snippets in https://docs.microsoft.com/azure/machine-learning!
## Please reach out to the Azure ML docs & samples team before before editing for the first time.

set -e

# <set_endpoint_name>
export ENDPOINT_NAME="<YOUR_ENDPOINT_NAME>"
# </set_endpoint_name>

#  endpoint name
export ENDPOINT_NAME=endpt-moe-`echo $RANDOM`

# <create_endpoint>
$SWITCHYARD online-endpoint create --name $ENDPOINT_NAME -f endpoints/online/managed/sample/endpoint.yml
# </create_endpoint>

# <create_blue>
$SWITCHYARD online-deployment create --name blue --endpoint $ENDPOINT_NAME -f endpoints/online/managed/sample/blue-deployment.yml --all-traffic
# </create_blue>

# <get_status>
$SWITCHYARD online-endpoint show -n $ENDPOINT_NAME
# </get_status>

# check if create was successful
endpoint_status=`$SWITCHYARD online-endpoint show --name $ENDPOINT_NAME --query "provisioning_state" -o tsv`
echo $endpoint_status
if [[ $endpoint_status == "Succeeded" ]]
then
  echo "Endpoint created successfully"
else
  echo "Endpoint creation failed"
  exit 1
fi

deploy_status=`$SWITCHYARD online-deployment show --name blue --endpoint $ENDPOINT_NAME --query "provisioning_state" -o tsv`
echo $deploy_status
if [[ $deploy_status == "Succeeded" ]]
then
  echo "Deployment completed successfully"
else
  echo "Deployment failed"
  exit 1
fi

# <get_logs>
$SWITCHYARD online-deployment get-logs --name blue --endpoint $ENDPOINT_NAME
# </get_logs>

# <test_blue>
$SWITCHYARD online-endpoint invoke --name $ENDPOINT_NAME --request-file endpoints/online/model-1/sample-request.json
# </test_blue>

# <test_blue_using_curl>
# get the scoring uri
SCORING_URI=$($SWITCHYARD online-endpoint show -n $ENDPOINT_NAME -o tsv --query scoring_uri)
echo "Scoring uri: $SCORING_URI"

# get the key
ENDPOINT_KEY=$($SWITCHYARD online-endpoint get-credentials -n $ENDPOINT_NAME -o tsv --query primaryKey)

# use curl to invoke the endpoint
curl --request POST "$SCORING_URI" --header "Authorization: Bearer $ENDPOINT_KEY" --header 'Content-Type: application/json' --data @endpoints/online/model-1/sample-request.json
# </test_blue_using_curl>

# <scale_blue>
$SWITCHYARD online-deployment update --name blue --endpoint $ENDPOINT_NAME --set instance_count=2
# </scale_blue>

# <create_green>
$SWITCHYARD online-deployment create --name green --endpoint $ENDPOINT_NAME -f endpoints/online/managed/sample/green-deployment.yml
# </create_green>

# <get_traffic>
$SWITCHYARD online-endpoint show -n $ENDPOINT_NAME --query traffic
# </get_traffic>

# <test_green>
$SWITCHYARD online-endpoint invoke --name $ENDPOINT_NAME --deployment-name green --request-file endpoints/online/model-2/sample-request.json
# </test_green>

# supply the deployment name to invoke green using curl
# <test_green_using_curl>
curl --request POST "$SCORING_URI" --header "Authorization: Bearer $ENDPOINT_KEY" --header 'Content-Type: application/json' --header "azureml-model-deployment: green" --data @endpoints/online/model-2/sample-request.json
# </test_green_using_curl>

# <test_green_with_mirror_traffic>
$SWITCHYARD online-endpoint update --name $ENDPOINT_NAME --mirror-traffic "green=10"
# </test_green_with_mirror_traffic>

# <generate_traffic>
for i in {1..20} ; do
    $SWITCHYARD online-endpoint invoke --name $ENDPOINT_NAME --request-file endpoints/online/model-1/sample-request.json
done
# </generate_traffic>

# <check_mirror_traffic_logs>
$SWITCHYARD online-deployment get-logs --name green --endpoint $ENDPOINT_NAME
# </check_mirror_traffic_logs>

# <reset_mirror_traffic>
$SWITCHYARD online-endpoint update --name $ENDPOINT_NAME --mirror-traffic "green=0"
# </reset_mirror_traffic>

# <green_10pct_traffic>
$SWITCHYARD online-endpoint update --name $ENDPOINT_NAME --traffic "blue=90 green=10"
# </green_10pct_traffic>

# <green_100pct_traffic>
$SWITCHYARD online-endpoint update --name $ENDPOINT_NAME --traffic "blue=0 green=100"
# </green_100pct_traffic>

# <delete_blue>
$SWITCHYARD online-deployment delete --name blue --endpoint $ENDPOINT_NAME --yes --no-wait
# </delete_blue>

# <delete_endpoint>
$SWITCHYARD online-endpoint delete --name $ENDPOINT_NAME --yes --no-wait
# </delete_endpoint>
