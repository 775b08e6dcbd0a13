"""``online_endpoints`` and ``online_deployments``: azure-ai-ml entities ⇄ the admin API."""

import hashlib
import os

import yaml
from azure.ai.ml.entities import (
    CodeConfiguration,
    DataCollector,
    DeploymentCollection,
    EndpointAuthKeys,
    EndpointAuthToken,
    Environment,
    ManagedOnlineDeployment,
    ManagedOnlineEndpoint,
    Model,
    OnlineRequestSettings,
    ProbeSettings,
    RequestLogging,
)
from azure.core.exceptions import ResourceNotFoundError

from ._assets import reference
from ._client import (
    DeploymentProgress,
    SwitchyardPoller,
    deployment_path,
    endpoint_path,
    resolve_endpoint,
    wait_deployment,
)


def _positive(split):
    """A traffic map without its zero entries (``{"green": 0}`` and ``{}`` both mean none)."""
    return {k: v for k, v in dict(split or {}).items() if v}


def _drop_empty(doc):
    return {k: v for k, v in doc.items() if v not in (None, {}, [])}


def _abs(path):
    """Azure's SDK resolves local paths against the working folder; so does this."""
    return os.path.abspath(os.path.expanduser(str(path)))


# ---------- endpoints ----------


def _endpoint_from(view):
    e = ManagedOnlineEndpoint(
        name=view["name"],
        description=view.get("description"),
        tags=view.get("tags") or {},
        auth_mode=view.get("auth_mode", "key"),
        traffic=view.get("traffic") or {},
        mirror_traffic=view.get("mirror_traffic") or {},
        scoring_uri=view.get("scoring_uri"),
        openapi_uri=view.get("swagger_uri"),
        provisioning_state=view.get("provisioning_state"),
    )
    return e


class OnlineEndpointOperations:
    """``ml_client.online_endpoints``: each call names its endpoint, one of the many the
    server may host (``/v1/endpoints/{name}``)."""

    def __init__(self, http):
        self._http = http

    def _view(self, name):
        """The endpoint's view; ``ResourceNotFoundError`` (the server's message names the
        endpoints that exist) when there is none of that name."""
        return self._http.call("GET", endpoint_path(name))

    def get(self, name, **kwargs):
        return _endpoint_from(self._view(name))

    def list(self, **kwargs):
        """Every endpoint of the server."""
        return [_endpoint_from(view) for view in self._http.call("GET", "/v1/endpoints")]

    def begin_create_or_update(self, endpoint, **kwargs):
        """Creates the endpoint beside the server's others, or updates its description, tags,
        traffic and mirror traffic (what ``ml_client.begin_create_or_update(endpoint)`` does in
        the tutorial)."""
        if not endpoint.name:
            raise ValueError("the endpoint needs a name")
        try:
            current = self._view(endpoint.name)
        except ResourceNotFoundError:
            current = None
        if current is None:
            doc = _drop_empty({
                "name": endpoint.name,
                "description": endpoint.description,
                "tags": dict(endpoint.tags or {}),
                "auth_mode": endpoint.auth_mode or "key",
                "traffic": dict(endpoint.traffic or {}),
                "mirror_traffic": dict(endpoint.mirror_traffic or {}),
            })
            view = self._http.call("PUT", endpoint_path(endpoint.name), doc)
        else:
            patch = _drop_empty({
                "description": endpoint.description,
                "tags": dict(endpoint.tags or {}),
            })
            # The entity's traffic and mirror traffic are the whole of what is wanted (as
            # azure-ai-ml sends them, zeros stripped): `{}` clears. Sent only when they differ
            # from the server's, so an unchanged split is never re-sent (during a rollout the
            # server refuses any traffic change).
            for key, wanted in (("traffic", endpoint.traffic), ("mirror_traffic", endpoint.mirror_traffic)):
                wanted = _positive(wanted)
                if wanted != _positive(current.get(key)):
                    patch[key] = wanted
            view = self._http.call("PATCH", endpoint_path(endpoint.name), patch) if patch else current
        return SwitchyardPoller(lambda _t: _endpoint_from(view))

    def begin_delete(self, name=None, **kwargs):
        """Deletes endpoint ``name`` and its deployments; the server's other endpoints stay as
        they are. Without a name: the server's only endpoint."""
        name = resolve_endpoint(self._http, name)
        self._http.call("DELETE", endpoint_path(name))
        return SwitchyardPoller(lambda _t: None)

    def get_keys(self, name, **kwargs):
        k = self._http.call("GET", endpoint_path(name) + "/keys")
        if "accessToken" in k:
            return EndpointAuthToken(
                access_token=k["accessToken"],
                expiry_time_utc=k.get("expiryTimeUtc"),
                refresh_after_time_utc=k.get("refreshAfterTimeUtc"),
                token_type=k.get("tokenType"),
            )
        return EndpointAuthKeys(primary_key=k["primaryKey"], secondary_key=k.get("secondaryKey"))

    def begin_regenerate_keys(self, name, key_type="primary", **kwargs):
        self._http.call("POST", endpoint_path(name) + "/keys/regenerate", {"keyType": key_type})
        return SwitchyardPoller(lambda _t: None)

    def invoke(self, endpoint_name, request_file=None, deployment_name=None, input_data=None, **kwargs):
        """Scores ``request_file`` (a JSON file) through the endpoint; returns the answer's text,
        as azure-ai-ml does. ``deployment_name`` pins a deployment. The server sends it to
        that endpoint's ``scoring_uri`` with that endpoint's key (``POST
        /v1/endpoints/{name}/invoke``)."""
        if request_file is not None:
            with open(request_file, "rb") as f:
                body = f.read()
        elif input_data is not None:
            body = input_data.encode() if isinstance(input_data, str) else bytes(input_data)
        else:
            raise ValueError("invoke needs request_file= (or input_data=)")
        _, payload, _ = self._http.call(
            "POST", endpoint_path(endpoint_name) + "/invoke", body, query={"deployment_name": deployment_name}, raw=True
        )
        return payload.decode("utf-8", "replace")


# ---------- deployments ----------


def _conda_path(conda):
    """azure-ai-ml loads ``Environment(conda_file=...)`` into a dict; the admin API takes a file,
    so the dict is written once under the cache, named by its content."""
    text = yaml.safe_dump(conda, sort_keys=False)
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    folder = os.path.join(cache, "switchyard", "sdk-conda")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, hashlib.sha256(text.encode()).hexdigest()[:16] + ".yml")
    if not os.path.exists(path):
        tmp = path + ".%d.tmp" % os.getpid()
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    return path


def _registered(entity):
    """The ``azureml:NAME:VERSION`` reference of a Model or Environment registered on the
    server: one ``models.get`` / ``environments.get`` / ``create_or_update`` returned (its
    ``id``); ``None`` for any other."""
    found = getattr(entity, "id", None)
    return found if isinstance(found, str) and found.startswith("azureml:") else None


def _named_only(entity):
    """``azureml:NAME:VERSION`` (``@latest`` without a version) for an entity that names a
    registered asset and has nothing local (``Model(name=, version=)`` without a path,
    ``Environment(name=, version=)`` without an image or conda file); else ``None``."""
    if getattr(entity, "_is_anonymous", False) or not getattr(entity, "name", None):
        return None
    return reference(entity.name, entity.version)


def _environment_doc(env):
    if env is None:
        return None
    if isinstance(env, str):
        return env  # azureml:NAME:VERSION, @latest, a long form, a curated environment
    if _registered(env):
        return _registered(env)
    doc = {}
    conda = getattr(env, "conda_file", None)
    # azure-ai-ml loads a conda file given by path into a dict and keeps the path aside: the
    # path is sent when it is still there, so an entity from `get` sends back what it got.
    conda_path = getattr(env, "_conda_file_path", None)
    if conda_path is not None and os.path.isfile(str(conda_path)):
        doc["conda_file"] = _abs(conda_path)
    elif isinstance(conda, dict):
        doc["conda_file"] = _conda_path(conda)
    elif isinstance(conda, (str, os.PathLike)):
        doc["conda_file"] = _abs(conda)
    if getattr(env, "image", None):
        doc["image"] = env.image
    python = (getattr(env, "properties", None) or {}).get("python")
    if python:
        doc["python"] = python  # the local extension, kept in properties by `get`
    if not doc and getattr(env, "build", None) is None:
        return _named_only(env)  # Environment(name=, version=): the registered one
    return doc or None


def _probe_doc(p):
    if p is None:
        return None
    return _drop_empty({k: getattr(p, k, None) for k in ("initial_delay", "period", "timeout", "success_threshold", "failure_threshold")})


def _model_doc(model):
    """A reference string as it is (``azureml:NAME:VERSION``, ``@latest``, a long form); a
    registered ``Model`` (from ``models.get``, or ``Model(name=, version=)`` without a path)
    as its reference; a ``Model`` with a local path as that path."""
    if model is None or isinstance(model, str):
        return model
    if _registered(model):
        return _registered(model)
    if getattr(model, "path", None) is not None:
        return {"path": _abs(model.path)}
    named = _named_only(model)
    if named is None:
        raise ValueError("the deployment's model needs a path= (a local folder or file), or the name= and version= "
                         "of a registered model")
    return named


def _deployment_doc(d):
    model_doc = _model_doc(d.model)
    cc = d.code_configuration
    code_doc = None
    if cc is not None:
        code_doc = _drop_empty({"code": _abs(cc.code) if isinstance(cc.code, (str, os.PathLike)) else None,
                                "scoring_script": cc.scoring_script})
    rs = d.request_settings
    return _drop_empty({
        "name": d.name,
        "endpoint_name": d.endpoint_name,
        "description": d.description,
        "tags": dict(d.tags or {}),
        "model": model_doc,
        "code_configuration": code_doc,
        "environment": _environment_doc(d.environment),
        "environment_variables": dict(d.environment_variables or {}),
        "instance_type": d.instance_type,
        "instance_count": d.instance_count,
        "request_settings": _drop_empty({k: getattr(rs, k, None) for k in
                                         ("request_timeout_ms", "max_concurrent_requests_per_instance", "max_queue_wait_ms")}) if rs else None,
        "liveness_probe": _probe_doc(d.liveness_probe),
        "readiness_probe": _probe_doc(d.readiness_probe),
        "app_insights_enabled": d.app_insights_enabled or None,
        "data_collector": _data_collector_doc(getattr(d, "data_collector", None)),
    })


def _data_collector_doc(dc):
    """azure-ai-ml's ``DataCollector`` as the deployment YAML's ``data_collector`` (CONTRACT
    §12): each ``DeploymentCollection``'s ``enabled`` as Azure writes it (``'True'``/``'False'``),
    its ``data`` when it is a name or a reference, ``sampling_rate``, ``rolling_rate``,
    ``request_logging.capture_headers``."""
    if dc is None:
        return None
    collections = {}
    for name, c in (getattr(dc, "collections", None) or {}).items():
        enabled = getattr(c, "enabled", None)
        entry = {"enabled": enabled if isinstance(enabled, str) else ("True" if enabled else "False")}
        data = getattr(c, "data", None)
        if isinstance(data, str):
            entry["data"] = data
        collections[name] = entry
    logging = getattr(dc, "request_logging", None)
    headers = getattr(logging, "capture_headers", None) if logging is not None else None
    return _drop_empty({
        "collections": collections or None,
        "sampling_rate": getattr(dc, "sampling_rate", None),
        "rolling_rate": getattr(dc, "rolling_rate", None),
        "request_logging": {"capture_headers": list(headers)} if headers else None,
    })


def _data_collector_from(doc):
    """The view's ``data_collector`` as azure-ai-ml's ``DataCollector``."""
    if not isinstance(doc, dict):
        return None
    collections = {
        name: DeploymentCollection(enabled=str((c or {}).get("enabled", "False")), data=(c or {}).get("data"))
        for name, c in (doc.get("collections") or {}).items()
    }
    headers = (doc.get("request_logging") or {}).get("capture_headers")
    return DataCollector(
        collections=collections,
        sampling_rate=doc.get("sampling_rate"),
        rolling_rate=doc.get("rolling_rate"),
        request_logging=RequestLogging(capture_headers=headers) if headers else None,
    )


def _resolved(view):
    """A resolved reference in a deployment's view (``{reference, name, version, ...}``) as
    ``azureml:NAME:VERSION`` (the version it resolved to, as Azure's answer names the asset
    version's id); ``None`` when the view is not a reference."""
    if not isinstance(view, dict) or not view.get("reference"):
        return None
    if view.get("name") and view.get("version") is not None:
        return reference(view["name"], view["version"])
    return view["reference"]


def _same(current, wanted):
    """Whether the value a deployment has (its view's) is what the entity asks for: a
    reference the deployment resolved matches either as it was written or as the version it
    resolved to, so sending back what ``get`` returned changes nothing."""
    if isinstance(wanted, str) and _resolved(current) is not None:
        return wanted in (current["reference"], _resolved(current))
    return current == wanted


def _environment_from(env):
    """The view's ``environment`` as azure-ai-ml's entity: ``Environment(conda_file=...,
    image=...)`` (the conda file is loaded by azure-ai-ml, as for one given by path); a
    registered environment as ``azureml:NAME:VERSION`` (a string, as Azure's answer has it);
    another reference stays a string; the local ``python:`` extension has no field in
    azure-ai-ml's ``Environment`` and is kept in its ``properties``."""
    if env is None or isinstance(env, str):
        return env
    if not isinstance(env, dict):
        return None
    if _resolved(env) is not None:
        return _resolved(env)
    conda = env.get("conda_file")
    if isinstance(conda, str) and not os.path.isfile(conda):
        conda = None  # gone from disk since: azure-ai-ml would fail to load it
    properties = {"python": str(env["python"])} if env.get("python") else None
    return Environment(conda_file=conda, image=env.get("image"), properties=properties)


def _model_from(model, deployment_name):
    """The view's ``model``: a registered one as ``azureml:NAME:VERSION`` (a string, as
    Azure's answer has it), a local one as ``Model(path=...)``."""
    if not isinstance(model, dict):
        return model
    if _resolved(model) is not None:
        return _resolved(model)
    return Model(name=deployment_name + "-model", version="1", path=model["path"])


def _deployment_from(view):
    cc = view.get("code_configuration")
    rs = view.get("request_settings") or {}
    d = ManagedOnlineDeployment(
        name=view["name"],
        endpoint_name=view.get("endpoint_name"),
        description=view.get("description"),
        tags=view.get("tags") or {},
        model=_model_from(view.get("model"), view["name"]),
        code_configuration=CodeConfiguration(code=cc.get("code"), scoring_script=cc.get("scoring_script")) if cc else None,
        environment=_environment_from(view.get("environment")),
        environment_variables=view.get("environment_variables") or {},
        instance_type=view.get("instance_type"),
        instance_count=view.get("instance_count"),
        request_settings=OnlineRequestSettings(**{k: rs[k] for k in
                                                  ("request_timeout_ms", "max_concurrent_requests_per_instance", "max_queue_wait_ms") if k in rs}),
        liveness_probe=ProbeSettings(**view["liveness_probe"]) if view.get("liveness_probe") else None,
        readiness_probe=ProbeSettings(**view["readiness_probe"]) if view.get("readiness_probe") else None,
        provisioning_state=view.get("provisioning_state"),
        data_collector=_data_collector_from(view.get("data_collector")),
    )
    return d


class OnlineDeploymentOperations:
    """``ml_client.online_deployments``: each call goes to the deployments of the endpoint
    ``endpoint_name`` names (``/v1/endpoints/{endpoint_name}/deployments/...``); an endpoint
    the server does not host raises ``ResourceNotFoundError`` naming the ones it does. Without
    ``endpoint_name`` (the argument, or the entity's): the server's only endpoint."""

    def __init__(self, http):
        self._http = http

    def _endpoint(self, endpoint_name):
        return resolve_endpoint(self._http, endpoint_name)

    def get(self, name, endpoint_name=None, **kwargs):
        endpoint = self._endpoint(endpoint_name)
        return _deployment_from(self._http.call("GET", deployment_path(endpoint, name)))

    def list(self, endpoint_name=None, **kwargs):
        endpoint = self._endpoint(endpoint_name)
        return [_deployment_from(v) for v in self._http.call("GET", deployment_path(endpoint))]

    def begin_create_or_update(self, deployment, *, all_traffic=False, **kwargs):
        """Creates the deployment in its endpoint (``deployment.endpoint_name``); for one that
        exists, sends the entity as a merge patch, so a changed ``instance_count`` scales in
        place and a changed model or code replaces it (the old version serves until the new
        one is ready). ``result()`` waits for ``Succeeded`` (printing progress: dots and the
        deployment's new log lines, unless the client has ``show_progress=False``) and raises
        with the reason on ``Failed``."""
        endpoint = self._endpoint(deployment.endpoint_name)
        # The endpoint first: a 404 below then means no such deployment, and an endpoint the
        # server does not host is refused before anything is sent to change.
        self._http.call("GET", endpoint_path(endpoint))
        doc = _deployment_doc(deployment)
        path = deployment_path(endpoint, deployment.name)
        try:
            # Waits out an operation in progress (the server refuses changes meanwhile).
            current = self._http.call("GET", path, query={"wait": 60})
        except ResourceNotFoundError:
            current = None
        progress = DeploymentProgress(self._http, endpoint, deployment.name) if self._http.show_progress else None
        if progress is not None:
            progress.baseline()
        if current is not None:
            # Only what differs: naming `model` (even unchanged) would replace the deployment.
            patch = {k: v for k, v in doc.items() if k != "name" and not _same(current.get(k), v)}
            if patch:
                self._http.call("PATCH", path, patch)
        else:
            query = {"all_traffic": "true"} if all_traffic else None
            self._http.call("PUT", path, doc, query=query)
        return SwitchyardPoller(
            lambda t: _deployment_from(wait_deployment(self._http, endpoint, deployment.name, t, progress))
        )

    def begin_delete(self, name, endpoint_name=None, **kwargs):
        endpoint = self._endpoint(endpoint_name)
        self._http.call("DELETE", deployment_path(endpoint, name))
        return SwitchyardPoller(lambda _t: None)

    def get_logs(self, name, endpoint_name=None, lines=100, container_type=None, local=False, **kwargs):
        endpoint = self._endpoint(endpoint_name)
        _, payload, _ = self._http.call("GET", deployment_path(endpoint, name) + "/logs", query={"lines": lines}, raw=True)
        return payload.decode("utf-8", "replace")
