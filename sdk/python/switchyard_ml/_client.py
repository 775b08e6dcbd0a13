"""The client: admin URL, token, HTTP, and Azure's long-running-operation shape."""

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

DEFAULT_ADMIN_URL = "http://127.0.0.1:5002"


class AdminHttp:
    """Calls the admin API; errors become azure-core's exceptions with the server's message."""

    def __init__(self, base_url, token=None, timeout=300.0):
        self.base = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def call(self, method, path, body=None, query=None, content_type="application/json", raw=False):
        url = self.base + path
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        headers = {}
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            headers["Content-Type"] = content_type
        if self.token:
            headers["Authorization"] = "Bearer " + self.token
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as r:
                payload = r.read()
                status = r.status
                served = r.headers.get("azureml-model-deployment")
        except urllib.error.HTTPError as e:
            text = e.read().decode("utf-8", "replace")
            try:
                message = json.loads(text).get("message", text)
            except (ValueError, AttributeError):
                message = text
            error = ResourceNotFoundError if e.code == 404 else HttpResponseError
            raise error(message="({}) {}".format(e.code, message)) from None
        except urllib.error.URLError as e:
            raise HttpResponseError(message="cannot reach the Switchyard admin API at {}: {}".format(self.base, e.reason)) from None
        if raw:
            return status, payload, served
        return json.loads(payload) if payload.strip() else None


class SwitchyardPoller:
    """What ``begin_*`` returns, shaped like azure-core's ``LROPoller``: ``result()`` waits
    for the operation to settle and returns the entity (or raises why it failed)."""

    def __init__(self, wait, timeout=1800.0):
        self._wait = wait
        self._timeout = timeout
        self._result = None
        self._done = False

    def result(self, timeout=None):
        if not self._done:
            self._result = self._wait(timeout if timeout is not None else self._timeout)
            self._done = True
        return self._result

    def wait(self, timeout=None):
        self.result(timeout)

    def done(self):
        return self._done

    def status(self):
        return "Succeeded" if self._done else "InProgress"


def wait_deployment(http, name, timeout):
    """Polls ``GET /v1/deployments/{name}?wait=`` until no operation is in progress."""
    deadline = time.monotonic() + timeout
    while True:
        view = http.call("GET", "/v1/deployments/" + urllib.parse.quote(name), query={"wait": 30})
        state = view.get("provisioning_state")
        if state == "Succeeded":
            return view
        if state == "Failed":
            raise HttpResponseError(message="deployment {} failed: {}".format(name, view.get("error", "no reason given")))
        if time.monotonic() > deadline:
            raise HttpResponseError(message="deployment {} still {} after {:.0f} s".format(name, state, timeout))


class MLClient:
    """``azure.ai.ml.MLClient`` for Switchyard.

    ``credential``, ``subscription_id``, ``resource_group_name`` and ``workspace_name`` are
    accepted and ignored (a local server has no Azure identity). ``admin_url`` (else
    ``SWITCHYARD_ADMIN_URL``, else ``http://127.0.0.1:5002``) is the server's admin API;
    ``admin_token`` (else ``SWITCHYARD_ADMIN_TOKEN``) its token, when it has one.
    """

    def __init__(self, credential=None, subscription_id=None, resource_group_name=None, workspace_name=None,
                 admin_url=None, admin_token=None, **kwargs):
        from ._operations import OnlineDeploymentOperations, OnlineEndpointOperations

        self.subscription_id = subscription_id
        self.resource_group_name = resource_group_name
        self.workspace_name = workspace_name
        url = admin_url or os.environ.get("SWITCHYARD_ADMIN_URL") or DEFAULT_ADMIN_URL
        token = admin_token or os.environ.get("SWITCHYARD_ADMIN_TOKEN")
        self._http = AdminHttp(url, token)
        self.online_endpoints = OnlineEndpointOperations(self._http)
        self.online_deployments = OnlineDeploymentOperations(self._http)

    def begin_create_or_update(self, entity, **kwargs):
        """``ml_client.begin_create_or_update(endpoint)`` (traffic, mirror traffic) or a deployment."""
        from azure.ai.ml.entities import OnlineDeployment, OnlineEndpoint

        if isinstance(entity, OnlineEndpoint):
            return self.online_endpoints.begin_create_or_update(entity, **kwargs)
        if isinstance(entity, OnlineDeployment):
            return self.online_deployments.begin_create_or_update(entity, **kwargs)
        raise TypeError("Switchyard's MLClient handles online endpoints and deployments, not {}".format(type(entity).__name__))

    def create_or_update(self, entity, **kwargs):
        return self.begin_create_or_update(entity, **kwargs).result()
