"""``ml_client.models`` and ``ml_client.environments``: azure-ai-ml's ``Model`` and
``Environment`` ⇄ the server's asset store (CONTRACT §11).

A model's folder or file is uploaded as Azure uploads it to a datastore before registering it
(``POST /v1/uploads``, one ``PUT /v1/uploads/{id}/files/{path}`` per file, its path starting
with the folder's own name), then registered (``POST /v1/models``). An environment's conda
file is sent as its YAML text. Every registered version is ``azureml:NAME:VERSION``, the
entity's ``id``, which a deployment's ``model=`` / ``environment=`` may name.
"""

import os
import urllib.parse

import yaml
from azure.ai.ml.entities import Environment, Model
from azure.ai.ml.exceptions import EmptyDirectoryError, ErrorCategory, ErrorTarget, ValidationException
from azure.core.exceptions import HttpResponseError

from ._client import segment, service_error


def _invalid(message, target):
    """azure-ai-ml's ``ValidationException`` for a call refused before anything is sent."""
    return ValidationException(
        message=message,
        no_personal_data_message=message,
        target=target,
        error_category=ErrorCategory.USER_ERROR,
    )


def reference(name, version=None):
    """``azureml:NAME:VERSION``, or ``azureml:NAME@latest`` without a version."""
    return "azureml:{}:{}".format(name, version) if version is not None else "azureml:{}@latest".format(name)


def _str_tags(tags):
    """Tags as azure-ai-ml sends them: every value a string, ``None`` values dropped."""
    return {str(k): str(v) for k, v in dict(tags or {}).items() if v is not None}


def _view_kind(list_view_type):
    """azure-ai-ml's ``ListViewType`` (an enum, or its text) as ``ActiveOnly``,
    ``ArchivedOnly`` or ``All``."""
    value = getattr(list_view_type, "value", list_view_type) or "ActiveOnly"
    for kind in ("ActiveOnly", "ArchivedOnly", "All"):
        if str(value).lower() == kind.lower():
            return kind
    raise ValueError("list_view_type must be ActiveOnly, ArchivedOnly or All, not {!r}".format(list_view_type))


def _upload_files(local, target):
    """The files of ``local`` (a folder or a file) with the path each is uploaded under: the
    folder's own name first (``model/sklearn_regression_model.pkl``), as a browser's folder
    upload gives it; a file is its base name."""
    if os.path.isfile(local):
        return [(local, os.path.basename(local))]
    if not os.path.isdir(local):
        raise _invalid("the path {} does not exist (or is neither a file nor a folder)".format(local), target)
    base = os.path.basename(local.rstrip(os.sep)) or "root"
    files = []
    for root, dirs, names in os.walk(local):
        dirs.sort()
        for name in sorted(names):
            full = os.path.join(root, name)
            if os.path.isfile(full):
                files.append((full, base + "/" + os.path.relpath(full, local).replace(os.sep, "/")))
    if not files:
        message = "the folder {} holds no file to upload".format(local)
        raise EmptyDirectoryError(message=message, no_personal_data_message=message, target=target,
                                  error_category=ErrorCategory.USER_ERROR)
    return files


def upload(http, local, target=ErrorTarget.MODEL):
    """Uploads ``local`` (a folder or a file): ``POST /v1/uploads``, then each file's bytes,
    streamed, with ``PUT /v1/uploads/{id}/files/{path}``. Returns the upload's id, which a
    registration consumes. An upload over the server's limits (its ``max_files`` and
    ``max_bytes``) is abandoned before a byte is sent; so is one a file of which is refused."""
    local = os.path.abspath(os.path.expanduser(str(local)))
    files = _upload_files(local, target)
    started = http.call("POST", "/v1/uploads")
    upload_id = started["id"]
    try:
        total = sum(os.path.getsize(full) for full, _ in files)
        max_files, max_bytes = started.get("max_files"), started.get("max_bytes")
        if max_files is not None and len(files) > max_files:
            raise service_error(413, "{} holds {} files; an upload takes at most {}".format(local, len(files), max_files))
        if max_bytes is not None and total > max_bytes:
            raise service_error(413, "{} holds {} bytes; an upload takes at most {}".format(local, total, max_bytes))
        for full, relative in files:
            with open(full, "rb") as f:
                http.call("PUT", "/v1/uploads/{}/files/{}".format(segment(upload_id), urllib.parse.quote(relative, safe="/")),
                          f, content_type="application/octet-stream")
    except BaseException:
        abandon(http, upload_id)
        raise
    return upload_id


def abandon(http, upload_id):
    """``DELETE /v1/uploads/{id}``, quietly: an upload not registered is not left behind."""
    try:
        http.call("DELETE", "/v1/uploads/" + segment(upload_id))
    except HttpResponseError:
        pass


class _AssetOperations:
    """What models and environments share: get by version or label, list, archive, restore."""

    plural = None  # "models" / "environments"
    target = None  # azure-ai-ml's ErrorTarget

    def __init__(self, http):
        self._http = http

    def _from(self, view):
        raise NotImplementedError

    def _path(self, name, version=None):
        path = "/v1/{}/{}".format(self.plural, segment(name))
        return path if version is None else path + "/versions/" + segment(version)

    def _version(self, name, version, label):
        """The version ``version`` or ``label`` names (``None``: the latest); as azure-ai-ml,
        both at once is refused, and ``latest`` is the only label."""
        if version and label:
            raise _invalid("Cannot specify both version and label.", self.target)
        if label:
            if label != "latest":
                raise _invalid("Asset {} with version label {} does not exist in workspace.".format(name, label),
                               self.target)
            return None
        return None if version is None else str(version)

    def get(self, name, version=None, label=None, **kwargs):
        """The registered ``version`` of ``name``, or with ``label="latest"`` its latest
        version (the most recently registered one that is not archived). As azure-ai-ml's,
        one of the two is required. An unknown name or version raises
        ``ResourceNotFoundError``, the server's message naming what is registered."""
        if not version and not label:
            raise _invalid("Must provide either version or label.", self.target)
        wanted = self._version(name, version, label)
        return self._from(self._http.call("GET", self._path(name, wanted)))

    def list(self, name=None, *, list_view_type="ActiveOnly", **kwargs):
        """Every version of ``name`` (oldest first), or without a name the latest version of
        each registered name. ``list_view_type`` (azure-ai-ml's ``ListViewType``):
        ``ACTIVE_ONLY`` (the default) leaves archived versions out, ``ARCHIVED_ONLY`` gives
        only them, ``ALL`` both."""
        kind = _view_kind(list_view_type)
        query = None if kind == "ActiveOnly" else {"archived": "true"}
        path = "/v1/" + self.plural if name is None else self._path(name) + "/versions"
        views = self._http.call("GET", path, query=query)
        if kind == "ArchivedOnly":
            views = [v for v in views if v.get("archived")]
        found = [self._from(v) for v in views]
        if name is None:
            for asset in found:
                asset.latest_version = asset.version  # as azure-ai-ml's list of names has it
        return found

    def _set_archived(self, action, name, version, label):
        wanted = self._version(name, version, label)
        if label:  # `latest`: the version it names now
            wanted = str(self._http.call("GET", self._path(name))["version"])
        self._http.call("POST", self._path(name, wanted) + "/" + action)

    def archive(self, name, version=None, label=None, **kwargs):
        """Archives ``version`` of ``name`` (without one: every version of the name). An
        archived version is left out of lists and of ``latest``; a deployment naming it exactly
        still finds it. Refused (``ResourceExistsError``, 409, naming the endpoint and
        deployment) while a deployment uses it."""
        self._set_archived("archive", name, version, label)

    def restore(self, name, version=None, label=None, **kwargs):
        """Brings an archived ``version`` of ``name`` back (without one: every version)."""
        self._set_archived("restore", name, version, label)


def _properties(view, keys):
    """The answer's store details as an entity's ``properties`` (strings, as Azure's are)."""
    props = {}
    for key in keys:
        value = view.get(key)
        if value is not None:
            props[key] = str(value).lower() if isinstance(value, bool) else str(value)
    return props


def model_from(view):
    """A registered model's answer as azure-ai-ml's ``Model``: ``id`` is
    ``azureml:NAME:VERSION``, ``path`` the server's stored copy, ``properties`` its digest,
    size, file count and whether it is archived."""
    name, version = view["name"], str(view["version"])
    model = Model(
        id=view.get("id") or reference(name, version),
        name=name,
        version=version,
        type=view.get("type"),
        path=view.get("path"),
        description=view.get("description"),
        tags=dict(view.get("tags") or {}),
        utc_time_created=view.get("created_at"),
        properties=_properties(view, ("digest", "size_bytes", "file_count", "archived")),
    )
    return model


class ModelOperations(_AssetOperations):
    """``ml_client.models``: register a model from a local folder or file, get, list,
    archive, restore."""

    plural = "models"
    target = ErrorTarget.MODEL

    def _from(self, view):
        return model_from(view)

    def create_or_update(self, model, **kwargs):
        """Registers ``model``: uploads its ``path`` (a folder or a file) and registers it
        under its ``name`` and ``version`` (without a version: the next whole number), with its
        ``type``, ``description`` and ``tags``. Returns the registered ``Model``. A version
        registered before with other content raises ``ResourceExistsError`` (409); with the
        same content it is returned again, so re-running a registration is safe."""
        if not isinstance(model, Model):
            raise TypeError("models.create_or_update takes azure-ai-ml's Model, not {}".format(type(model).__name__))
        path = model.path
        if path is None:
            raise _invalid("the model needs a path= (a local folder or file) to register", self.target)
        if isinstance(path, str) and ("://" in path or path.startswith("azureml:")):
            raise _invalid("the model's path {} is not local: register a local folder or file".format(path), self.target)
        upload_id = upload(self._http, path, self.target)
        doc = {
            "name": model.name,
            "version": None if model.version is None else str(model.version),
            "type": model.type,
            "description": model.description,
            "tags": _str_tags(model.tags),
            "upload": upload_id,
        }
        doc = {k: v for k, v in doc.items() if v not in (None, {})}
        try:
            view = self._http.call("POST", "/v1/models", doc)
        except BaseException:
            abandon(self._http, upload_id)
            raise
        return model_from(view)


def conda_text(env):
    """The YAML text of an ``Environment``'s conda file: the file's own text when azure-ai-ml
    loaded it from a path still there (so the same file registers the same content), else the
    dict it holds, dumped."""
    path = getattr(env, "_conda_file_path", None)
    if path is not None and os.path.isfile(str(path)):
        with open(str(path), encoding="utf-8") as f:
            return f.read()
    conda = getattr(env, "conda_file", None)
    if conda is None:
        return None
    if isinstance(conda, dict):
        return yaml.safe_dump(conda, sort_keys=False)
    if isinstance(conda, (str, os.PathLike)) and os.path.isfile(str(conda)):
        with open(str(conda), encoding="utf-8") as f:
            return f.read()
    if isinstance(conda, str):
        return conda  # YAML text already
    raise _invalid("conda_file must be a path, a dict or YAML text, not {}".format(type(conda).__name__),
                   ErrorTarget.ENVIRONMENT)


def environment_from(view):
    """A registered environment's answer as azure-ai-ml's ``Environment``: ``id`` is
    ``azureml:NAME:VERSION``, ``conda_file`` the conda YAML loaded (as azure-ai-ml loads a
    conda file), ``image``; the stored file's path, digest and whether it is archived in
    ``properties``."""
    name, version = view["name"], str(view["version"])
    text = view.get("conda_yaml")
    conda = yaml.safe_load(text) if text else None
    env = Environment(
        id=view.get("id") or reference(name, version),
        name=name,
        version=version,
        image=view.get("image"),
        conda_file=conda if conda else None,
        description=view.get("description"),
        tags=dict(view.get("tags") or {}),
        properties=_properties(view, ("conda_file", "digest", "created_at", "archived")),
    )
    return env


class EnvironmentOperations(_AssetOperations):
    """``ml_client.environments``: register an environment (an image, a conda file, or
    both), get, list, archive, restore."""

    plural = "environments"
    target = ErrorTarget.ENVIRONMENT

    def _from(self, view):
        return environment_from(view)

    def create_or_update(self, environment, **kwargs):
        """Registers ``environment`` under its ``name`` and ``version`` (without a version:
        the next whole number) with its ``image`` and its conda file's text, ``description``
        and ``tags``. Returns the registered ``Environment``. A Docker build context
        (``build=``) is not built here: give ``image=`` and/or ``conda_file=``."""
        if not isinstance(environment, Environment):
            raise TypeError("environments.create_or_update takes azure-ai-ml's Environment, not {}".format(
                type(environment).__name__))
        if getattr(environment, "_is_anonymous", False):
            raise _invalid("the environment needs a name= (and a version=) to be registered", self.target)
        if getattr(environment, "build", None) is not None:
            raise _invalid("a Docker build context is not built here: give image= and/or conda_file=", self.target)
        doc = {
            "name": environment.name,
            "version": None if environment.version is None else str(environment.version),
            "image": environment.image,
            "conda_file": conda_text(environment),
            "description": environment.description,
            "tags": _str_tags(environment.tags),
        }
        doc = {k: v for k, v in doc.items() if v not in (None, {})}
        return environment_from(self._http.call("POST", "/v1/environments", doc))
