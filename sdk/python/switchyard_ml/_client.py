"""The client: admin URL, token, HTTP, and Azure's long-running-operation shape."""

import itertools
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError

DEFAULT_ADMIN_URL = "http://127.0.0.1:5002"
# The config.json key (next to azure-ai-ml's subscription_id, resource_group, workspace_name)
# that ``MLClient.from_config`` reads the admin API's URL from.
CONFIG_ADMIN_URL_KEY = "switchyard_admin_url"


def service_error(status, message):
    """azure-core's exception for an error answer, as azure-ai-ml's generated clients map
    them: ``ResourceNotFoundError`` for 404, ``ResourceExistsError`` for 409 (a conflict: a
    version registered with other content, an asset a deployment uses, ...), else
    ``HttpResponseError`` (of which both are kinds); ``status_code`` set, as azure-ai-ml's
    errors have it."""
    kind = {404: ResourceNotFoundError, 409: ResourceExistsError}.get(status, HttpResponseError)
    error = kind(message="({}) {}".format(status, message))
    error.status_code = status
    return error


class AdminHttp:
    """Calls the admin API; errors become azure-core's exceptions with the server's message.

    Every request but GET/HEAD is sent with ``Content-Type: application/json``, with or without
    a body (the admin API refuses other types on state-changing requests), except a file's
    bytes (``body`` bytes or an open binary file, streamed) sent with the ``content_type``
    given: an upload's ``application/octet-stream``."""

    def __init__(self, base_url, token=None, timeout=300.0, show_progress=True):
        self.base = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.show_progress = show_progress

    def call(self, method, path, body=None, query=None, content_type="application/json", raw=False):
        url = self.base + path
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        headers = {}
        data = None
        if body is not None:
            if hasattr(body, "read"):
                # An open file, streamed rather than read into memory (a model may be large).
                data = body
                headers["Content-Length"] = str(os.fstat(body.fileno()).st_size - body.tell())
            elif isinstance(body, (bytes, bytearray)):
                data = bytes(body)
            else:
                data = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        elif method not in ("GET", "HEAD"):
            # A state-changing request says JSON even without a body: the admin API may refuse
            # other (or missing) types there, as a browser's cross-site form cannot send this.
            headers["Content-Type"] = "application/json"
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
            raise service_error(e.code, message) from None
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


def segment(name):
    """A name as one segment of an admin API path."""
    return urllib.parse.quote(str(name), safe="")


def endpoint_path(endpoint):
    """``/v1/endpoints/{endpoint}``: every call about an endpoint names it (the server hosts
    many; ``/v1/endpoint`` means its only one and is refused when it has several)."""
    return "/v1/endpoints/" + segment(endpoint)


def deployment_path(endpoint, name=None):
    """``/v1/endpoints/{endpoint}/deployments[/{name}]``."""
    path = endpoint_path(endpoint) + "/deployments"
    return path if name is None else path + "/" + segment(name)


def endpoint_names(http):
    """The names of the endpoints the server hosts (``GET /v1/endpoints``), in its order."""
    return [view["name"] for view in http.call("GET", "/v1/endpoints")]


def resolve_endpoint(http, name):
    """``name``; or, when it is ``None`` (a call that names no endpoint, as this SDK allowed
    when a server hosted one), the server's only endpoint: ``ResourceNotFoundError`` when it
    hosts none, ``HttpResponseError`` (409) naming them when it hosts several."""
    if name is not None:
        return name
    names = endpoint_names(http)
    if len(names) == 1:
        return names[0]
    if not names:
        raise service_error(404, "this server hosts no endpoint: create one first")
    raise service_error(
        409, "this server hosts {} endpoints ({}): name one with endpoint_name=".format(len(names), ", ".join(names))
    )


def log_tail(http, endpoint, name, lines=50):
    """The deployment's last log lines, ``[]`` when there are none (or no deployment yet)."""
    try:
        _, payload, _ = http.call("GET", deployment_path(endpoint, name) + "/logs", query={"lines": lines}, raw=True)
    except HttpResponseError:
        return []
    return [line for line in payload.decode("utf-8", "replace").splitlines() if line.strip()]


class DeploymentProgress:
    """What ``result()`` prints while a deployment is Creating or Updating, as azure-ai-ml
    prints its dots: a dot per poll, and each new line of the deployment's log (the
    environment build's, init's) as it arrives, without its timestamp."""

    def __init__(self, http, endpoint, name, out=None):
        self._http = http
        self._endpoint = endpoint
        self._name = name
        self._out = out
        self._last = None  # the last log line already accounted for (with its timestamp)
        self._dots = False

    def baseline(self):
        """Takes the log as it is before the operation: only what comes after is shown."""
        tail = log_tail(self._http, self._endpoint, self._name, 1)
        self._last = tail[-1] if tail else None

    def poll(self, dot=True):
        out = self._out or sys.stdout
        tail = log_tail(self._http, self._endpoint, self._name)
        fresh = tail
        if self._last is not None and self._last in tail:
            fresh = tail[len(tail) - tail[::-1].index(self._last):]
        if fresh:
            if self._dots:
                out.write("\n")
                self._dots = False
            for line in fresh:
                stamp, _, text = line.partition(" ")
                shown = text if stamp.endswith("Z") and "T" in stamp else line
                out.write("{}: {}\n".format(self._name, shown))
            self._last = fresh[-1]
        elif dot:
            out.write(".")
            self._dots = True
        out.flush()

    def done(self, state, seconds):
        out = self._out or sys.stdout
        if self._dots:
            out.write("\n")
        minutes, secs = divmod(int(round(seconds)), 60)
        out.write("{}: {} ({}m {}s)\n".format(self._name, state, minutes, secs))
        out.flush()


def wait_deployment(http, endpoint, name, timeout, progress=None):
    """Polls ``GET /v1/endpoints/{endpoint}/deployments/{name}?wait=`` until no operation is in
    progress; with a ``DeploymentProgress``, shows the log between polls (every 2 s at most)."""
    started = time.monotonic()
    deadline = started + timeout
    wait = 2 if progress is not None else 30
    while True:
        view = http.call("GET", deployment_path(endpoint, name), query={"wait": wait})
        state = view.get("provisioning_state")
        if progress is not None:
            settled = state in ("Succeeded", "Failed")
            progress.poll(dot=not settled)
            if settled:
                progress.done(state, time.monotonic() - started)
        if state == "Succeeded":
            return view
        if state == "Failed":
            raise HttpResponseError(message="deployment {} failed: {}".format(name, view.get("error", "no reason given")))
        if time.monotonic() > deadline:
            raise HttpResponseError(message="deployment {} still {} after {:.0f} s".format(name, state, timeout))


def find_config(path=None, file_name=None):
    """azure-ai-ml's search for the workspace config: ``path`` itself when it is a file;
    otherwise, from ``path`` (default: the working folder) up to 20 folders above it, in
    ``.azureml/``, ``aml_config/`` and the folder itself, ``file_name`` (default
    ``config.json``, then ``project.json``). ``None`` when there is none."""
    start = Path(".") if path is None else Path(path)
    if start.is_file():
        return start
    start = start.resolve()
    folders = [start] + list(start.parents)[:20]
    names = [file_name] if file_name else ["config.json", "project.json"]
    for sub, name in itertools.product([".azureml", "aml_config", None], names):
        for folder in folders:
            candidate = folder / sub / name if sub else folder / name
            if candidate.is_file():
                return candidate
    return None


class MLClient:
    """``azure.ai.ml.MLClient`` for Switchyard.

    ``credential``, ``subscription_id``, ``resource_group_name`` and ``workspace_name`` are
    accepted and ignored (a local server has no Azure identity). ``admin_url`` (else
    ``SWITCHYARD_ADMIN_URL``, else ``http://127.0.0.1:5002``) is the server's admin API;
    ``admin_token`` (else ``SWITCHYARD_ADMIN_TOKEN``) its token, when it has one.
    ``show_progress`` (azure-ai-ml's flag, default on): ``result()`` of a deployment prints
    dots and the deployment's log lines while it waits. ``models`` and ``environments`` are
    the server's registered assets (its store stands for the workspace's).
    """

    def __init__(self, credential=None, subscription_id=None, resource_group_name=None, workspace_name=None,
                 admin_url=None, admin_token=None, show_progress=True, **kwargs):
        from ._assets import EnvironmentOperations, ModelOperations
        from ._operations import OnlineDeploymentOperations, OnlineEndpointOperations

        self.subscription_id = subscription_id
        self.resource_group_name = resource_group_name
        self.workspace_name = workspace_name
        url = admin_url or os.environ.get("SWITCHYARD_ADMIN_URL") or DEFAULT_ADMIN_URL
        token = admin_token or os.environ.get("SWITCHYARD_ADMIN_TOKEN")
        self._http = AdminHttp(url, token, show_progress=show_progress)
        self.online_endpoints = OnlineEndpointOperations(self._http)
        self.online_deployments = OnlineDeploymentOperations(self._http)
        self.models = ModelOperations(self._http)
        self.environments = EnvironmentOperations(self._http)

    @classmethod
    def from_config(cls, credential=None, *, path=None, file_name=None, **kwargs):
        """azure-ai-ml's ``MLClient.from_config``: reads the workspace config.json found as
        azure-ai-ml finds it (``path`` a file, or the folder to search up from; ``file_name``
        instead of ``config.json``). Its ``subscription_id``, ``resource_group`` and
        ``workspace_name`` are kept (and ignored, as by the constructor); the Switchyard key
        ``switchyard_admin_url`` gives the admin API's URL (an ``admin_url=`` argument wins
        over it; without either, ``SWITCHYARD_ADMIN_URL``, then the default). Raises
        azure-ai-ml's ``ValidationException`` when no file is found."""
        from azure.ai.ml.exceptions import ErrorCategory, ErrorTarget, ValidationException

        found = find_config(path, file_name)
        if found is None:
            msg = (
                "We could not find {} in: {} or in its parent directories. Please provide the full path to the "
                "config file or ensure that {} exists in the parent directories."
            )
            wanted = file_name or "config.json"
            raise ValidationException(
                message=msg.format(wanted, Path(".") if path is None else path, wanted),
                no_personal_data_message=msg.format(wanted, "[path]", wanted),
                target=ErrorTarget.GENERAL,
                error_category=ErrorCategory.USER_ERROR,
            )
        try:
            with open(found, encoding="utf-8") as f:
                config = json.load(f)
            if not isinstance(config, dict):
                raise ValueError("expected a JSON object")
        except (OSError, ValueError) as e:
            raise ValidationException(
                message="cannot read the config file {}: {}".format(found, e),
                no_personal_data_message="cannot read the config file",
                target=ErrorTarget.GENERAL,
                error_category=ErrorCategory.USER_ERROR,
            ) from None
        admin_url = kwargs.pop("admin_url", None) or config.get(CONFIG_ADMIN_URL_KEY)
        return cls(
            credential,
            config.get("subscription_id"),
            config.get("resource_group"),
            config.get("workspace_name"),
            admin_url=admin_url,
            **kwargs,
        )

    def begin_create_or_update(self, entity, **kwargs):
        """``ml_client.begin_create_or_update(endpoint)`` (traffic, mirror traffic) or a deployment."""
        from azure.ai.ml.entities import OnlineDeployment, OnlineEndpoint

        if isinstance(entity, OnlineEndpoint):
            return self.online_endpoints.begin_create_or_update(entity, **kwargs)
        if isinstance(entity, OnlineDeployment):
            return self.online_deployments.begin_create_or_update(entity, **kwargs)
        raise TypeError(
            "Switchyard's MLClient.begin_create_or_update handles online endpoints and deployments, not {}".format(
                type(entity).__name__
            )
        )

    def create_or_update(self, entity, **kwargs):
        """``ml_client.create_or_update(model)`` / ``(environment)`` registers it, as
        azure-ai-ml's does; an endpoint or a deployment is created and waited for."""
        from azure.ai.ml.entities import Environment, Model

        if isinstance(entity, Model):
            return self.models.create_or_update(entity)
        if isinstance(entity, Environment):
            return self.environments.create_or_update(entity)
        return self.begin_create_or_update(entity, **kwargs).result()
