"""The Azure safe-rollout tutorial's Python SDK steps, in order, against a real Switchyard.

Run by tests/sdk.rs: ``python tutorial.py SAMPLE_DIR`` with SWITCHYARD_ADMIN_URL set. The
code below is the tutorial's own, with the ``MLClient(...)`` line changed; the asserts are
what the tutorial's reader checks by eye. Blue runs the sample's score.py with
``Model(path=<the .pkl file>)`` as the SDK tutorial writes it. The endpoint's name is the
tutorial's ``"endpt-moe-" + str(random.randint(0, 10000))``: run twice against one server,
each run makes (and at its end deletes) its own endpoint beside whatever else the server hosts.
"""

import json
import os
import sys
import time

from azure.ai.ml.entities import CodeConfiguration, Environment, ManagedOnlineDeployment, ManagedOnlineEndpoint, Model
from azure.core.exceptions import HttpResponseError

from switchyard_ml import MLClient

sample = sys.argv[1]
os.chdir(os.path.join(sample, "managed", "sample"))  # the tutorial's relative paths start here
MODEL_1 = [11055.977245525679, 4503.079536107787]


def step(text):
    print("step:", text, flush=True)


# The one changed line (credential, subscription, resource group and workspace are ignored).
ml_client = MLClient(None, "subscription-id", "resource-group", "workspace")

step("create the endpoint")
# The tutorial's unique name: a second run makes a second endpoint.
import random

online_endpoint_name = "endpt-moe-" + str(random.randint(0, 10000))
endpoint = ManagedOnlineEndpoint(
    name=online_endpoint_name, description="this is a sample endpoint", auth_mode="key", tags={"foo": "bar"}
)
ml_client.online_endpoints.begin_create_or_update(endpoint).result()
assert ml_client.online_endpoints.get(name=online_endpoint_name).provisioning_state == "Succeeded"

step("create blue (Model(path=the .pkl), the sample's score.py)")
model = Model(path="../../model-1/model/sklearn_regression_model.pkl")
env = Environment(
    conda_file="../../model-1/environment/conda.yaml",
    image="mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04:latest",
)
blue_deployment = ManagedOnlineDeployment(
    name="blue",
    endpoint_name=online_endpoint_name,
    model=model,
    environment=env,
    code_configuration=CodeConfiguration(code="../../model-1/onlinescoring", scoring_script="score.py"),
    instance_type="Standard_DS3_v2",
    instance_count=1,
)
blue = ml_client.online_deployments.begin_create_or_update(blue_deployment).result()
assert blue.provisioning_state == "Succeeded", blue.provisioning_state

step("blue takes all traffic")
endpoint.traffic = {"blue": 100}
ml_client.begin_create_or_update(endpoint).result()
assert ml_client.online_endpoints.get(name=online_endpoint_name).traffic == {"blue": 100}

step("test blue")
answer = ml_client.online_endpoints.invoke(endpoint_name=online_endpoint_name, request_file="../../model-1/sample-request.json")
got = json.loads(answer)
assert all(abs(a - b) <= 1e-6 * abs(b) for a, b in zip(got, MODEL_1)) and len(got) == 2, answer

step("scale blue to 2")
blue_deployment.instance_count = 2
ml_client.online_deployments.begin_create_or_update(blue_deployment).result()
blue = ml_client.online_deployments.get(name="blue", endpoint_name=online_endpoint_name)
assert blue.instance_count == 2, blue.instance_count

step("endpoint details and logs")
print(ml_client.online_endpoints.get(name=online_endpoint_name).scoring_uri)
logs = ml_client.online_deployments.get_logs(name="blue", endpoint_name=online_endpoint_name, lines=50)
assert "blue/instance-" in logs, logs

step("create green (model-2)")
model2 = Model(path="../../model-2/model/sklearn_regression_model.pkl")
env2 = Environment(
    conda_file="../../model-2/environment/conda.yaml",
    image="mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04:latest",
)
green_deployment = ManagedOnlineDeployment(
    name="green",
    endpoint_name=online_endpoint_name,
    model=model2,
    environment=env2,
    code_configuration=CodeConfiguration(code="../../model-2/onlinescoring", scoring_script="score.py"),
    instance_type="Standard_DS3_v2",
    instance_count=1,
)
ml_client.online_deployments.begin_create_or_update(green_deployment).result()
assert ml_client.online_endpoints.get(name=online_endpoint_name).traffic == {"blue": 100, "green": 0}

step("test green pinned")
answer = ml_client.online_endpoints.invoke(
    endpoint_name=online_endpoint_name, deployment_name="green", request_file="../../model-2/sample-request.json"
)
assert json.loads(answer) and answer.strip() != "", answer

step("mirror 10% to green, then off")
endpoint.mirror_traffic = {"green": 10}
ml_client.begin_create_or_update(endpoint).result()
assert ml_client.online_endpoints.get(name=online_endpoint_name).mirror_traffic == {"green": 10}
for _ in range(50):
    ml_client.online_endpoints.invoke(endpoint_name=online_endpoint_name, request_file="../../model-1/sample-request.json")
endpoint.mirror_traffic = {"green": 0}
ml_client.begin_create_or_update(endpoint).result()
assert not ml_client.online_endpoints.get(name=online_endpoint_name).mirror_traffic

step("a refused traffic update changes nothing")
endpoint.traffic = {"blue": 90, "green": 20}
try:
    ml_client.begin_create_or_update(endpoint).result()
    raise AssertionError("a split summing to 110 was accepted")
except HttpResponseError as e:
    assert "100" in str(e), e
assert ml_client.online_endpoints.get(name=online_endpoint_name).traffic == {"blue": 100, "green": 0}

step("90/10, then 0/100")
endpoint.traffic = {"blue": 90, "green": 10}
ml_client.begin_create_or_update(endpoint).result()
assert ml_client.online_endpoints.get(name=online_endpoint_name).traffic == {"blue": 90, "green": 10}
endpoint.traffic = {"blue": 0, "green": 100}
ml_client.begin_create_or_update(endpoint).result()
assert ml_client.online_endpoints.get(name=online_endpoint_name).traffic == {"blue": 0, "green": 100}

step("keys")
keys = ml_client.online_endpoints.get_keys(name=online_endpoint_name)
assert keys.primary_key and keys.secondary_key

if os.environ.get("TUTORIAL_STOP_BEFORE_CLEAN_UP"):
    # The notebook run up to its clean-up cell, as a user does who keeps what they deployed.
    print("tutorial: all steps passed", flush=True)
    sys.exit(0)

step("delete blue, then the endpoint")
ml_client.online_deployments.begin_delete(name="blue", endpoint_name=online_endpoint_name).result()
assert [d.name for d in ml_client.online_deployments.list(endpoint_name=online_endpoint_name)] == ["green"]
ml_client.online_endpoints.begin_delete(name=online_endpoint_name).result()
# Gone from the list; the server's other endpoints, if it hosts any, are not this script's.
assert online_endpoint_name not in [e.name for e in ml_client.online_endpoints.list()]
print("tutorial: all steps passed", flush=True)
