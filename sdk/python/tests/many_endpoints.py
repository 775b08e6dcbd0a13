"""switchyard_ml against a server hosting several endpoints (issue 25): each call goes to the
endpoint it names. Run by tests/sdk.rs: ``python many_endpoints.py REPO_DIR`` with
SWITCHYARD_ADMIN_URL set, against a server with no endpoint. Each check prints its name; the
last line is ``many endpoints: all passed``.

Two endpoints, each with a deployment named ``blue``: in ``sdk-many-a`` model-1 with one
instance, in ``sdk-many-b`` model-2 with two, so every answer says which endpoint it came from.
"""

import json
import os
import sys
import urllib.error
import urllib.request

from azure.ai.ml.entities import ManagedOnlineDeployment, ManagedOnlineEndpoint, Model
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from switchyard_ml import MLClient

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import check, failed, no_cli_advice, refused  # noqa: E402


def refused_plainly(call, kind, status=None):
    """``refused``, with a message that gives an SDK user no CLI advice."""
    return no_cli_advice(refused(call, kind, status))

repo = sys.argv[1]
request_file = os.path.join(repo, "sample-requests", "model-1.json")
MODEL_1 = [11055.977245525679, 4503.079536107787]  # models/model-1 (FP64) on the request
MODEL_2 = [120.3559, 92.30396]  # models/model-2 (FP32) on the same request

A, B = "sdk-many-a", "sdk-many-b"
MODELS = {A: ("model-1", 1, MODEL_1), B: ("model-2", 2, MODEL_2)}

ml_client = MLClient(None, "sub", "rg", "ws", show_progress=False)




def close(got, want, rel=1e-5):
    return len(got) == len(want) and all(abs(a - b) <= rel * abs(b) for a, b in zip(got, want))


def answer_of(endpoint_name):
    """What the named endpoint's blue answers to the sample request."""
    return {A: MODEL_1, B: MODEL_2}[endpoint_name]


def score(uri, key, pin=None):
    """POSTs the sample request to a scoring URI as azure-ai-ml's users do with curl:
    (status, body text)."""
    with open(request_file, "rb") as f:
        body = f.read()
    headers = {"Content-Type": "application/json", "Authorization": "Bearer " + key}
    if pin:
        headers["azureml-model-deployment"] = pin
    request = urllib.request.Request(uri, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def blue(endpoint_name):
    model, count, _ = MODELS[endpoint_name]
    return ManagedOnlineDeployment(name="blue", endpoint_name=endpoint_name,
                                   model=Model(path=os.path.join(repo, "models", model)), instance_count=count)


def names(entities):
    return sorted(e.name for e in entities)


endpoints = {n: ManagedOnlineEndpoint(name=n, auth_mode="key", tags={"which": n}) for n in (A, B)}


@check("a second endpoint is created beside the first")
def _():
    for n in (A, B):
        created = ml_client.online_endpoints.begin_create_or_update(endpoints[n]).result()
        assert created.name == n and created.provisioning_state == "Succeeded", (created.name, created.provisioning_state)
    for n in (A, B):
        got = ml_client.online_endpoints.get(name=n)
        assert got.name == n and got.tags == {"which": n}, (got.name, got.tags)
        assert got.scoring_uri.endswith("/endpoints/{}/score".format(n)), got.scoring_uri


@check("list() returns every endpoint")
def _():
    listed = ml_client.online_endpoints.list()
    assert names(listed) == [A, B], names(listed)
    uris = {e.name: e.scoring_uri for e in listed}
    assert uris[A] != uris[B], uris
    for e in listed:
        assert e.scoring_uri == ml_client.online_endpoints.get(name=e.name).scoring_uri


@check("get() of a missing endpoint raises ResourceNotFoundError naming the endpoints that exist")
def _():
    message = refused_plainly(lambda: ml_client.online_endpoints.get(name="sdk-many-missing"), ResourceNotFoundError, 404)
    assert "sdk-many-missing" in message and A in message and B in message, message
    for call in (
        lambda: ml_client.online_endpoints.get_keys(name="sdk-many-missing"),
        lambda: ml_client.online_endpoints.invoke(endpoint_name="sdk-many-missing", request_file=request_file),
        lambda: ml_client.online_endpoints.begin_delete(name="sdk-many-missing"),
        lambda: ml_client.online_deployments.list(endpoint_name="sdk-many-missing"),
    ):
        message = refused_plainly(call, ResourceNotFoundError, 404)
        assert "sdk-many-missing" in message and A in message and B in message, message
    assert names(ml_client.online_endpoints.list()) == [A, B]


@check("deployments named blue in both endpoints: each create goes to its endpoint_name")
def _():
    for n in (A, B):
        made = ml_client.online_deployments.begin_create_or_update(blue(n)).result()
        assert made.provisioning_state == "Succeeded" and made.endpoint_name == n, (made.provisioning_state, made.endpoint_name)
    for n in (A, B):
        model, count, _ = MODELS[n]
        got = ml_client.online_deployments.get(name="blue", endpoint_name=n)
        assert got.endpoint_name == n, got.endpoint_name
        assert got.instance_count == count, (n, got.instance_count)
        assert os.path.basename(got.model.path.rstrip("/")) == model, (n, got.model.path)
        assert names(ml_client.online_deployments.list(endpoint_name=n)) == ["blue"]
        logs = ml_client.online_deployments.get_logs(name="blue", endpoint_name=n, lines=100)
        other = MODELS[B if n == A else A][0]
        assert "models/{}/".format(model) in logs and "models/{}/".format(other) not in logs, (n, logs)


@check("a deployment call without endpoint_name is refused when the server hosts several")
def _():
    for call in (
        lambda: ml_client.online_deployments.get(name="blue"),
        lambda: ml_client.online_deployments.list(),
        lambda: ml_client.online_deployments.get_logs(name="blue", lines=5),
        lambda: ml_client.online_deployments.begin_delete(name="blue"),
        lambda: ml_client.online_deployments.begin_create_or_update(
            ManagedOnlineDeployment(name="blue", model=Model(path=os.path.join(repo, "models", "model-1")))),
        lambda: ml_client.online_endpoints.begin_delete(),
    ):
        message = refused_plainly(call, HttpResponseError, 409)
        assert A in message and B in message and "endpoint_name" in message, message
    assert names(ml_client.online_endpoints.list()) == [A, B]
    for n in (A, B):
        assert ml_client.online_deployments.get(name="blue", endpoint_name=n).instance_count == MODELS[n][1]


@check("scaling blue in one endpoint leaves the other's blue as it was")
def _():
    scaled = blue(A)
    scaled.instance_count = 2
    assert ml_client.online_deployments.begin_create_or_update(scaled).result().instance_count == 2
    assert ml_client.online_deployments.get(name="blue", endpoint_name=A).instance_count == 2
    assert ml_client.online_deployments.get(name="blue", endpoint_name=B).instance_count == 2
    logs_b = ml_client.online_deployments.get_logs(name="blue", endpoint_name=B, lines=1000)
    assert "scaling" not in logs_b, logs_b
    scaled.instance_count = 1
    assert ml_client.online_deployments.begin_create_or_update(scaled).result().instance_count == 1
    assert ml_client.online_deployments.get(name="blue", endpoint_name=B).instance_count == 2


@check("traffic is per endpoint, and invoke answers from the named endpoint's own deployment")
def _():
    endpoints[A].traffic = {"blue": 100}
    ml_client.begin_create_or_update(endpoints[A]).result()
    assert ml_client.online_endpoints.get(name=A).traffic == {"blue": 100}
    assert not any(ml_client.online_endpoints.get(name=B).traffic.values()), ml_client.online_endpoints.get(name=B).traffic
    # B has no live traffic yet: its invoke is refused, A's is not.
    refused_plainly(lambda: ml_client.online_endpoints.invoke(endpoint_name=B, request_file=request_file), HttpResponseError)
    endpoints[B].traffic = {"blue": 100}
    ml_client.begin_create_or_update(endpoints[B]).result()
    for n in (A, B):
        got = json.loads(ml_client.online_endpoints.invoke(endpoint_name=n, request_file=request_file))
        assert close(got, answer_of(n)), (n, got)
        got = json.loads(ml_client.online_endpoints.invoke(endpoint_name=n, request_file=request_file, deployment_name="blue"))
        assert close(got, answer_of(n)), (n, "pinned", got)


@check("get_keys() are per endpoint: each scoring_uri opens with its own key, not the other's")
def _():
    keys = {n: ml_client.online_endpoints.get_keys(name=n) for n in (A, B)}
    assert keys[A].primary_key != keys[B].primary_key, "two endpoints share a key"
    uris = {n: ml_client.online_endpoints.get(name=n).scoring_uri for n in (A, B)}
    for n in (A, B):
        other = B if n == A else A
        for key in (keys[n].primary_key, keys[n].secondary_key):
            status, body = score(uris[n], key)
            assert status == 200 and close(json.loads(body), answer_of(n)), (n, status, body)
        status, body = score(uris[n], keys[other].primary_key)
        assert status == 401, "{}'s key opened {}: {} {}".format(other, n, status, body)


@check("regenerating one endpoint's key leaves the other's")
def _():
    before = {n: ml_client.online_endpoints.get_keys(name=n) for n in (A, B)}
    ml_client.online_endpoints.begin_regenerate_keys(name=A, key_type="primary").result()
    after = {n: ml_client.online_endpoints.get_keys(name=n) for n in (A, B)}
    assert after[A].primary_key != before[A].primary_key, "A's primary key did not change"
    assert after[A].secondary_key == before[A].secondary_key
    assert (after[B].primary_key, after[B].secondary_key) == (before[B].primary_key, before[B].secondary_key), "B's keys changed"
    status, body = score(ml_client.online_endpoints.get(name=A).scoring_uri, after[A].primary_key)
    assert status == 200 and close(json.loads(body), MODEL_1), (status, body)


@check("updating one endpoint's tags leaves the other's")
def _():
    endpoints[A].tags = {"which": A, "changed": "yes"}
    ml_client.begin_create_or_update(endpoints[A]).result()
    assert ml_client.online_endpoints.get(name=A).tags == {"which": A, "changed": "yes"}
    assert ml_client.online_endpoints.get(name=B).tags == {"which": B}


@check("deleting blue in one endpoint leaves the other's blue serving")
def _():
    endpoints[A].traffic = {}
    ml_client.begin_create_or_update(endpoints[A]).result()
    ml_client.online_deployments.begin_delete(name="blue", endpoint_name=A).result()
    assert names(ml_client.online_deployments.list(endpoint_name=A)) == []
    message = refused_plainly(lambda: ml_client.online_deployments.get(name="blue", endpoint_name=A), ResourceNotFoundError, 404)
    assert "blue" in message, message
    assert names(ml_client.online_deployments.list(endpoint_name=B)) == ["blue"]
    got = json.loads(ml_client.online_endpoints.invoke(endpoint_name=B, request_file=request_file))
    assert close(got, MODEL_2), got


@check("begin_delete(name) deletes only that endpoint")
def _():
    keys_b = ml_client.online_endpoints.get_keys(name=B)
    ml_client.online_endpoints.begin_delete(name=A).result()
    assert names(ml_client.online_endpoints.list()) == [B]
    message = refused_plainly(lambda: ml_client.online_endpoints.get(name=A), ResourceNotFoundError, 404)
    assert A in message and B in message, message
    got = ml_client.online_endpoints.get(name=B)
    assert got.traffic == {"blue": 100} and got.tags == {"which": B}, (got.traffic, got.tags)
    assert ml_client.online_endpoints.get_keys(name=B).primary_key == keys_b.primary_key
    status, body = score(got.scoring_uri, keys_b.primary_key)
    assert status == 200 and close(json.loads(body), MODEL_2), (status, body)
    # With one endpoint left, a call without endpoint_name means it, as before.
    assert ml_client.online_deployments.get(name="blue").endpoint_name == B


@check("the last endpoint deleted: list() is empty")
def _():
    ml_client.online_endpoints.begin_delete(name=B).result()
    assert ml_client.online_endpoints.list() == []
    refused_plainly(lambda: ml_client.online_endpoints.get(name=B), ResourceNotFoundError, 404)


if failed:
    print("many endpoints: {} failed: {}".format(len(failed), "; ".join(failed)), flush=True)
    sys.exit(1)
print("many endpoints: all passed", flush=True)
