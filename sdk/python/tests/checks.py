"""Checks of switchyard_ml beyond the tutorial's steps (issue 22, item 18), against a real
Switchyard started with ``--python`` (no environment is built). Run by tests/sdk.rs:
``python checks.py REPO_DIR`` with SWITCHYARD_ADMIN_URL set. Each check prints its name; the
last line is ``checks: all passed``.
"""

import io
import json
import os
import sys
import tempfile
import threading

from azure.ai.ml.entities import CodeConfiguration, Environment, ManagedOnlineDeployment, ManagedOnlineEndpoint, Model
from azure.ai.ml.exceptions import ValidationException
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from switchyard_ml import MLClient

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import check, failed, no_cli_advice, refused  # noqa: E402

repo = sys.argv[1]
admin_url = os.environ["SWITCHYARD_ADMIN_URL"]
fixtures = os.path.join(repo, "tests", "fixtures", "python")
conda_file = os.path.join(repo, "examples", "azure-sample", "model-1", "environment", "conda.yaml")




ml_client = MLClient(None, "sub", "rg", "ws", show_progress=False)
name = "sdk-checks"
endpoint = ManagedOnlineEndpoint(name=name, auth_mode="key")



def deployment(dname, **more):
    return ManagedOnlineDeployment(name=dname, endpoint_name=name, model=Model(path=os.path.join(repo, "models", "model-1")),
                                   instance_count=1, **more)


def ensure(dname):
    try:
        ml_client.online_deployments.get(name=dname)
    except ResourceNotFoundError:
        ml_client.online_deployments.begin_create_or_update(deployment(dname)).result()


@check("no endpoint: the error says so in API terms")
def _():
    message = no_cli_advice(refused(lambda: ml_client.online_endpoints.get(name=name), ResourceNotFoundError))
    assert "no endpoint" in message and "yet" not in message, message


ml_client.online_endpoints.begin_create_or_update(endpoint).result()
ensure("blue")
ensure("green")


@check("online_deployments refuse an endpoint_name the server does not host")
def _():
    try:
        for call in (
            lambda: ml_client.online_deployments.get(name="blue", endpoint_name="some-other"),
            lambda: ml_client.online_deployments.list(endpoint_name="some-other"),
            lambda: ml_client.online_deployments.get_logs(name="blue", endpoint_name="some-other", lines=5),
            lambda: ml_client.online_deployments.begin_delete(name="blue", endpoint_name="some-other"),
            lambda: ml_client.online_deployments.begin_create_or_update(
                ManagedOnlineDeployment(name="red", endpoint_name="some-other", model=Model(path=os.path.join(repo, "models", "model-1")))),
        ):
            message = refused(call, ResourceNotFoundError, 404)
            assert "some-other" in message and name in message, message
        names = sorted(d.name for d in ml_client.online_deployments.list(endpoint_name=name))
        assert names == ["blue", "green"], "something was deleted or made: {}".format(names)
        assert ml_client.online_deployments.get(name="blue", endpoint_name=name).name == "blue"
    finally:
        ensure("blue")


@check("mirror_traffic = {} and traffic = {} clear them")
def _():
    endpoint.traffic = {"blue": 100}
    endpoint.mirror_traffic = {"green": 10}
    ml_client.begin_create_or_update(endpoint).result()
    got = ml_client.online_endpoints.get(name=name)
    assert got.traffic == {"blue": 100, "green": 0} and got.mirror_traffic == {"green": 10}, (got.traffic, got.mirror_traffic)
    endpoint.mirror_traffic = {}
    ml_client.begin_create_or_update(endpoint).result()
    got = ml_client.online_endpoints.get(name=name)
    assert not any(got.mirror_traffic.values()), "mirror_traffic = {{}} left {}".format(got.mirror_traffic)
    assert got.traffic == {"blue": 100, "green": 0}, got.traffic
    endpoint.traffic = {}
    ml_client.begin_create_or_update(endpoint).result()
    got = ml_client.online_endpoints.get(name=name)
    assert not any(got.traffic.values()), "traffic = {{}} left {}".format(got.traffic)


@check("a refusal speaks in API terms, not CLI commands")
def _():
    endpoint.traffic = {"blue": 100}
    endpoint.mirror_traffic = {}
    ml_client.begin_create_or_update(endpoint).result()
    message = no_cli_advice(refused(lambda: ml_client.online_deployments.begin_delete(name="blue", endpoint_name=name), HttpResponseError, 409))
    assert "traffic" in message, message


class Watched(io.TextIOBase):
    """stdout, recorded; `seen` is set once init's log line has been printed."""

    def __init__(self):
        self.text = ""
        self.seen = threading.Event()

    def write(self, s):
        self.text += s
        if "gated init: waiting for the gate file" in self.text:
            self.seen.set()
        return len(s)


@check("result() shows the deployment's progress while init runs")
def _():
    folder = tempfile.mkdtemp()
    gate = os.path.join(folder, "gate")
    gated = ManagedOnlineDeployment(
        name="gated",
        endpoint_name=name,
        model=Model(path=os.path.join(fixtures, "probe", "model")),
        code_configuration=CodeConfiguration(code=os.path.join(fixtures, "gated", "code"), scoring_script="score.py"),
        environment=Environment(conda_file=conda_file, image="mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04:latest"),
        environment_variables={"GATE_FILE": gate, "GATE_TIMEOUT_S": "30"},
        instance_count=1,
    )
    out = Watched()

    def open_gate_when_seen():
        # init waits for the gate; it is opened only once result() has shown init's line.
        if out.seen.wait(30):
            open(gate, "w").close()

    opener = threading.Thread(target=open_gate_when_seen)
    opener.start()
    shown = MLClient(None, "sub", "rg", "ws")  # show_progress defaults to on, as in azure-ai-ml
    real_stdout, sys.stdout = sys.stdout, out
    try:
        created = shown.online_deployments.begin_create_or_update(gated).result()
    finally:
        sys.stdout = real_stdout
        opener.join()
    print(out.text, end="", flush=True)
    assert out.seen.is_set(), "init's log line was never shown while result() waited:\n" + out.text
    assert "gated init: gate open" in out.text and "gated: Succeeded" in out.text, out.text
    assert created.provisioning_state == "Succeeded"


@check("get() returns the environment, and sending it back scales in place")
def _():
    got = ml_client.online_deployments.get(name="gated", endpoint_name=name)
    assert got.environment is not None, "environment=None"
    assert got.environment.image == "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04:latest", got.environment.image
    assert got.environment.conda_file and got.environment.conda_file.get("name") == "model-env", got.environment.conda_file
    before = ml_client.online_deployments.get_logs(name="gated", endpoint_name=name, lines=1000)
    got.instance_count = 2
    assert ml_client.online_deployments.begin_create_or_update(got).result().instance_count == 2
    after = ml_client.online_deployments.get_logs(name="gated", endpoint_name=name, lines=1000)
    assert "scaling from 1 to 2" in after[len(before):], "not scaled in place:\n" + after[len(before):]


@check("MLClient.from_config reads config.json as azure-ai-ml does, plus switchyard_admin_url")
def _():
    root = tempfile.mkdtemp()
    os.makedirs(os.path.join(root, ".azureml"))
    os.makedirs(os.path.join(root, "project", "notebooks"))
    config = {"subscription_id": "sub-1", "resource_group": "rg-1", "workspace_name": "ws-1", "switchyard_admin_url": admin_url}
    with open(os.path.join(root, ".azureml", "config.json"), "w") as f:
        json.dump(config, f)
    os.environ["SWITCHYARD_ADMIN_URL"] = "http://127.0.0.1:1"  # the file's key wins over it
    cwd = os.getcwd()
    try:
        os.chdir(os.path.join(root, "project", "notebooks"))
        client = MLClient.from_config(credential=None)  # found two folders up, in .azureml/
        os.chdir(cwd)
        assert (client.subscription_id, client.resource_group_name, client.workspace_name) == ("sub-1", "rg-1", "ws-1")
        assert client.online_endpoints.get(name=name).name == name
        other = os.path.join(root, "team.json")
        with open(other, "w") as f:
            json.dump(config, f)
        assert MLClient.from_config(None, path=other).online_endpoints.get(name=name).name == name
        assert MLClient.from_config(None, path=root, file_name="team.json").online_endpoints.get(name=name).name == name
        message = refused(lambda: MLClient.from_config(None, path=root, file_name="no-such-sdk-config.json"), ValidationException)
        assert "no-such-sdk-config.json" in message, message
    finally:
        os.chdir(cwd)
        os.environ["SWITCHYARD_ADMIN_URL"] = admin_url


@check("after deleting the endpoint, nothing says 'yet'")
def _():
    ml_client.online_endpoints.begin_delete(name=name).result()
    message = no_cli_advice(refused(lambda: ml_client.online_endpoints.get(name=name), ResourceNotFoundError))
    assert "yet" not in message, message


if failed:
    print("checks: {} failed: {}".format(len(failed), "; ".join(failed)), flush=True)
    sys.exit(1)
print("checks: all passed", flush=True)
