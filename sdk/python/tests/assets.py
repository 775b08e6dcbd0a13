"""Registered models and environments through switchyard_ml (issue 26, items 2 and 3), against a
real Switchyard started with ``--python`` (no environment is built). Run by tests/sdk.rs:
``python assets.py REPO_DIR`` with SWITCHYARD_ADMIN_URL set, against a server with an empty
asset store and no endpoint. Each check prints its name; the last line is
``assets: all passed``.

The Azure sample's registered-assets path, in the SDK: ``my-model`` registered from
model-1/model (version 1) and model-2/model (version 2, the next number; the sample's two
.pkl files are the same bytes, so both versions share one stored copy), ``my-env`` from
model-1/environment/conda.yaml with the sample's image; then blue as
blue-deployment-with-registered-assets.yml writes it (``model="azureml:my-model:1"``,
``environment="azureml:my-env:1"``, code ../../model-1/onlinescoring), scored through the
endpoint; archive refused while blue uses version 1; clean-up.
"""

import json
import os
import sys
import tempfile

import yaml
from azure.ai.ml.constants import ListViewType
from azure.ai.ml.entities import (
    CodeConfiguration,
    DataCollector,
    DeploymentCollection,
    Environment,
    ManagedOnlineDeployment,
    ManagedOnlineEndpoint,
    Model,
    RequestLogging,
)
from azure.ai.ml.exceptions import ValidationException
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError

from switchyard_ml import MLClient

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import check, failed, no_cli_advice, refused  # noqa: E402

repo = sys.argv[1]
sample = os.path.join(repo, "examples", "azure-sample")
os.chdir(os.path.join(sample, "managed", "sample"))  # the sample's relative paths start here
IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:latest"  # the sample's blue-deployment.yml
CONDA = "../../model-1/environment/conda.yaml"
MODEL_1 = [11055.977245525679, 4503.079536107787]  # model-1 on model-1/sample-request.json
ENDPOINT = "sdk-assets"

ml_client = MLClient(None, "sub", "rg", "ws", show_progress=False)
registered = {}  # what the registrations returned, for the later checks


def refused_plainly(call, kind, status=None):
    """``refused``, with a message that gives an SDK user no CLI advice."""
    return no_cli_advice(refused(call, kind, status))


def pkl(model):
    return os.path.abspath("../../{}/model/sklearn_regression_model.pkl".format(model))


def my_model(folder, version=None):
    return Model(path="../../{}/model".format(folder), name="my-model", version=version, type="custom_model",
                 description="the sample's regression model ({})".format(folder), tags={"source": folder})


def versions(name, **kwargs):
    return [m.version for m in ml_client.models.list(name=name, **kwargs)]


def close(got, want, rel=1e-6):
    return len(got) == len(want) and all(abs(a - b) <= rel * abs(b) for a, b in zip(got, want))


@check("models.create_or_update uploads model-1/model and registers my-model version 1")
def _():
    m = ml_client.models.create_or_update(my_model("model-1", "1"))
    assert isinstance(m, Model), type(m)
    assert (m.id, m.name, m.version, m.type) == ("azureml:my-model:1", "my-model", "1", "custom_model"), (m.id, m.name, m.version, m.type)
    assert m.description == "the sample's regression model (model-1)", m.description
    assert m.tags == {"source": "model-1"}, m.tags
    assert m.properties["file_count"] == "1", m.properties
    assert m.properties["size_bytes"] == str(os.path.getsize(pkl("model-1"))), m.properties
    assert m.properties["digest"].startswith("sha256:"), m.properties
    # The stored copy: the folder under its own name, the file inside it, byte for byte.
    assert m.path and os.path.basename(str(m.path).rstrip("/")) == "model", m.path
    stored = os.path.join(str(m.path), "sklearn_regression_model.pkl")
    with open(stored, "rb") as a, open(pkl("model-1"), "rb") as b:
        assert a.read() == b.read(), "the stored copy differs from the uploaded file"
    registered["v1"] = m


@check("registering the same content as version 1 again answers version 1 (re-running is safe)")
def _():
    again = ml_client.models.create_or_update(my_model("model-1", "1"))
    assert (again.version, again.properties["digest"]) == ("1", registered["v1"].properties["digest"]), (again.version, again.properties)


@check("model-2/model without a version becomes my-model version 2, sharing the stored copy")
def _():
    m = ml_client.models.create_or_update(my_model("model-2"))
    assert (m.id, m.version) == ("azureml:my-model:2", "2"), (m.id, m.version)
    assert (m.description, m.tags) == ("the sample's regression model (model-2)", {"source": "model-2"}), (m.description, m.tags)
    # The sample's two .pkl files are the same bytes (model-2 differs in its score.py): the
    # same content under a new version is stored once.
    assert m.properties["digest"] == registered["v1"].properties["digest"], m.properties
    assert str(m.path) == str(registered["v1"].path), (m.path, registered["v1"].path)
    registered["v2"] = m


@check("other content under an existing version is refused (409) and changes nothing")
def _():
    other = os.path.join(tempfile.mkdtemp(), "model")
    os.makedirs(other)
    with open(pkl("model-1"), "rb") as f, open(os.path.join(other, "sklearn_regression_model.pkl"), "wb") as g:
        g.write(f.read() + b"\n")
    message = refused_plainly(lambda: ml_client.models.create_or_update(Model(path=other, name="my-model", version="1")),
                              ResourceExistsError, 409)
    assert "1" in message and "my-model" in message, message
    got = ml_client.models.get("my-model", version="1")
    assert got.properties["digest"] == registered["v1"].properties["digest"], got.properties
    assert versions("my-model") == ["1", "2"], versions("my-model")


@check("a single file registers too (Model(path=the .pkl))")
def _():
    m = ml_client.models.create_or_update(Model(path="../../model-1/model/sklearn_regression_model.pkl", name="my-pkl"))
    assert (m.id, m.version, m.properties["file_count"]) == ("azureml:my-pkl:1", "1", "1"), (m.id, m.version, m.properties)
    assert os.path.basename(str(m.path)) == "sklearn_regression_model.pkl", m.path
    ml_client.models.archive("my-pkl")


@check("environments.create_or_update registers my-env from the sample's conda.yaml and image")
def _():
    env = Environment(name="my-env", version="1", image=IMAGE, conda_file=CONDA, description="the sample's environment")
    e = ml_client.environments.create_or_update(env)
    assert isinstance(e, Environment), type(e)
    assert (e.id, e.name, e.version, e.image) == ("azureml:my-env:1", "my-env", "1", IMAGE), (e.id, e.name, e.version, e.image)
    assert e.description == "the sample's environment", e.description
    with open(CONDA) as f:
        assert e.conda_file == yaml.safe_load(f), e.conda_file
    again = ml_client.environments.create_or_update(env)
    assert (again.version, again.properties.get("digest")) == ("1", e.properties.get("digest")), (again.version, again.properties)
    registered["env"] = e


@check("an environment with neither image nor conda file is refused")
def _():
    message = refused_plainly(lambda: ml_client.environments.create_or_update(Environment(name="empty-env", version="1")),
                              HttpResponseError, 400)
    assert "image" in message and "conda_file" in message, message


@check("list and get")
def _():
    latest = {m.name: m for m in ml_client.models.list()}
    assert sorted(latest) == ["my-model"], sorted(latest)  # my-pkl is archived
    assert (latest["my-model"].version, latest["my-model"].latest_version) == ("2", "2"), latest["my-model"].version
    assert versions("my-model") == ["1", "2"], versions("my-model")
    got = ml_client.models.get(name="my-model", version="1")
    assert (got.id, got.tags, str(got.path)) == ("azureml:my-model:1", {"source": "model-1"}, str(registered["v1"].path)), (got.id, got.tags, got.path)
    assert ml_client.models.get("my-model", label="latest").version == "2"
    refused(lambda: ml_client.models.get("my-model"), ValidationException)  # as azure-ai-ml: a version or a label
    envs = ml_client.environments.list()
    assert [(e.name, e.version) for e in envs] == [("my-env", "1")], [(e.name, e.version) for e in envs]
    assert [e.version for e in ml_client.environments.list(name="my-env")] == ["1"]
    e = ml_client.environments.get("my-env", version="1")
    assert (e.id, e.image, e.conda_file) == ("azureml:my-env:1", IMAGE, registered["env"].conda_file), (e.id, e.image)
    assert ml_client.environments.get("my-env", label="latest").version == "1"


@check("an unknown name or version is ResourceNotFoundError naming what is registered")
def _():
    message = refused_plainly(lambda: ml_client.models.get("my-model", version="9"), ResourceNotFoundError, 404)
    assert "my-model" in message and "9" in message, message
    message = refused_plainly(lambda: ml_client.models.get("no-such-model", version="1"), ResourceNotFoundError, 404)
    assert "no-such-model" in message, message
    message = refused_plainly(lambda: ml_client.environments.get("my-env", version="7"), ResourceNotFoundError, 404)
    assert "my-env" in message and "7" in message, message


endpoint = ManagedOnlineEndpoint(name=ENDPOINT, auth_mode="key")
blue_deployment = ManagedOnlineDeployment(  # blue-deployment-with-registered-assets.yml
    name="blue",
    endpoint_name=ENDPOINT,
    model="azureml:my-model:1",
    code_configuration=CodeConfiguration(code="../../model-1/onlinescoring/", scoring_script="score.py"),
    environment="azureml:my-env:1",
    instance_type="Standard_DS3_v2",
    instance_count=1,
)


@check("blue deploys from azureml:my-model:1 and azureml:my-env:1 and answers as model-1")
def _():
    ml_client.online_endpoints.begin_create_or_update(endpoint).result()
    blue = ml_client.online_deployments.begin_create_or_update(blue_deployment).result()
    assert blue.provisioning_state == "Succeeded", blue.provisioning_state
    assert (blue.model, blue.environment) == ("azureml:my-model:1", "azureml:my-env:1"), (blue.model, blue.environment)
    endpoint.traffic = {"blue": 100}
    ml_client.begin_create_or_update(endpoint).result()
    answer = ml_client.online_endpoints.invoke(endpoint_name=ENDPOINT, request_file="../../model-1/sample-request.json")
    assert close(json.loads(answer), MODEL_1), answer


@check("get() returns the references, and sending it back scales in place")
def _():
    got = ml_client.online_deployments.get(name="blue", endpoint_name=ENDPOINT)
    assert (got.model, got.environment) == ("azureml:my-model:1", "azureml:my-env:1"), (got.model, got.environment)
    before = ml_client.online_deployments.get_logs(name="blue", endpoint_name=ENDPOINT, lines=1000)
    got.instance_count = 2
    assert ml_client.online_deployments.begin_create_or_update(got).result().instance_count == 2
    after = ml_client.online_deployments.get_logs(name="blue", endpoint_name=ENDPOINT, lines=1000)
    assert "scaling from 1 to 2" in after[len(before):], "not scaled in place:\n" + after[len(before):]
    got = ml_client.online_deployments.get(name="blue", endpoint_name=ENDPOINT)
    assert (got.model, got.instance_count) == ("azureml:my-model:1", 2), (got.model, got.instance_count)


@check("Model(name=, version=) and Environment(name=, version=) without local files are references")
def _():
    green = ManagedOnlineDeployment(
        name="green",
        endpoint_name=ENDPOINT,
        model=Model(name="my-model", version="2"),
        code_configuration=CodeConfiguration(code="../../model-2/onlinescoring/", scoring_script="score.py"),
        environment=Environment(name="my-env", version="1"),
        instance_count=1,
    )
    created = ml_client.online_deployments.begin_create_or_update(green).result()
    assert (created.model, created.environment) == ("azureml:my-model:2", "azureml:my-env:1"), (created.model, created.environment)
    answer = ml_client.online_endpoints.invoke(endpoint_name=ENDPOINT, deployment_name="green",
                                               request_file="../../model-2/sample-request.json")
    assert json.loads(answer) == [0.5, 0.5], "green runs model-2's score.py: " + answer


@check("a DataCollector round-trips: sent with the deployment, shown as written, got back as azure-ai-ml's entity")
def _():
    collector = DataCollector(
        collections={"request": DeploymentCollection(enabled="True"), "response": DeploymentCollection(enabled="True"),
                     "model_inputs": DeploymentCollection(enabled="False")},
        sampling_rate=0.5,
        rolling_rate="minute",
        request_logging=RequestLogging(capture_headers=["x-user-id"]),
    )
    got = ml_client.online_deployments.get(name="green", endpoint_name=ENDPOINT)
    got.data_collector = collector
    updated = ml_client.online_deployments.begin_create_or_update(got).result()
    assert updated.provisioning_state == "Succeeded", updated.provisioning_state
    back = ml_client.online_deployments.get(name="green", endpoint_name=ENDPOINT).data_collector
    assert isinstance(back, DataCollector), back
    assert {n: c.enabled for n, c in back.collections.items()} == {"request": "True", "response": "True", "model_inputs": "False"}
    assert (back.sampling_rate, back.rolling_rate, back.request_logging.capture_headers) == (0.5, "minute", ["x-user-id"])
    answer = ml_client.online_endpoints.invoke(endpoint_name=ENDPOINT, deployment_name="green",
                                               request_file="../../model-2/sample-request.json")
    assert json.loads(answer) == [0.5, 0.5], answer
    bad = DataCollector(collections={"request": DeploymentCollection(enabled="True")}, rolling_rate="week")
    got.data_collector = bad
    message = refused_plainly(lambda: ml_client.online_deployments.begin_create_or_update(got).result(), HttpResponseError, 400)
    assert "data_collector.rolling_rate" in message, message


@check("a deployment naming an unknown version is refused (400) naming what is registered")
def _():
    red = ManagedOnlineDeployment(name="red", endpoint_name=ENDPOINT, model="azureml:my-model:9",
                                  code_configuration=CodeConfiguration(code="../../model-1/onlinescoring/", scoring_script="score.py"),
                                  environment="azureml:my-env:1", instance_count=1)
    message = refused_plainly(lambda: ml_client.online_deployments.begin_create_or_update(red).result(), HttpResponseError, 400)
    assert "my-model" in message and "9" in message, message
    assert "1" in message and "2" in message, "the registered versions are not named: " + message
    names = sorted(d.name for d in ml_client.online_deployments.list(endpoint_name=ENDPOINT))
    assert names == ["blue", "green"], names


@check("archiving a version a deployment uses is refused (409) naming the endpoint and deployment")
def _():
    message = refused_plainly(lambda: ml_client.models.archive("my-model", version="1"), ResourceExistsError, 409)
    assert ENDPOINT in message and "blue" in message, message
    message = refused_plainly(lambda: ml_client.environments.archive("my-env", version="1"), ResourceExistsError, 409)
    assert ENDPOINT in message and "blue" in message, message
    assert versions("my-model") == ["1", "2"], versions("my-model")
    assert [e.version for e in ml_client.environments.list(name="my-env")] == ["1"]


@check("deleting the endpoint frees the versions; archive and restore")
def _():
    ml_client.online_endpoints.begin_delete(name=ENDPOINT).result()
    assert ENDPOINT not in [e.name for e in ml_client.online_endpoints.list()]
    ml_client.models.archive("my-model", version="2")
    assert versions("my-model") == ["1"], versions("my-model")
    assert ml_client.models.get("my-model", label="latest").version == "1"
    assert versions("my-model", list_view_type=ListViewType.ALL) == ["1", "2"]
    assert versions("my-model", list_view_type=ListViewType.ARCHIVED_ONLY) == ["2"]
    # An archived version named exactly still answers.
    assert ml_client.models.get("my-model", version="2").properties["archived"] == "true"
    ml_client.models.restore("my-model", version="2")
    assert versions("my-model") == ["1", "2"] and ml_client.models.get("my-model", label="latest").version == "2"
    ml_client.models.archive("my-model")  # every version of the name
    assert "my-model" not in [m.name for m in ml_client.models.list()]
    assert versions("my-model", list_view_type=ListViewType.ARCHIVED_ONLY) == ["1", "2"]
    ml_client.environments.archive("my-env", version="1")
    assert ml_client.environments.list() == []
    assert [e.name for e in ml_client.environments.list(list_view_type=ListViewType.ALL)] == ["my-env"]


if failed:
    print("assets: {} failed: {}".format(len(failed), "; ".join(failed)), flush=True)
    sys.exit(1)
print("assets: all passed", flush=True)
