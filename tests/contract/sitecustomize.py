"""Records what the Python SDK sends to and reads from the admin API, for the contract check.

Python imports this at start-up when this folder is on PYTHONPATH (tests/sdk.rs puts it there
with SWITCHYARD_CONTRACT_LOG=FILE). It wraps ``switchyard_ml._client.AdminHttp.call``: each
call's method, path, body and status are recorded, and its JSON answer is handed back as
dicts and lists that note which fields the SDK reads (by ``[]``, ``get`` or ``in``). At exit the
records go to FILE, one JSON object per line; ``openapi_contract.py`` checks them against the
document the server serves. Without SWITCHYARD_CONTRACT_LOG this does nothing.
"""

import atexit
import json
import os

_LOG = os.environ.get("SWITCHYARD_CONTRACT_LOG")
_records = []


class _Dict(dict):
    """A JSON object that notes the keys read from it."""

    def __init__(self, data, path, reads):
        super().__init__(data)
        self._path, self._reads = path, reads

    def _note(self, key):
        if isinstance(key, str):
            path = self._path + (key,)
            self._reads.add(path)
            if super().__contains__(key):
                self._reads.add((path, _kind(super().__getitem__(key))))

    def __getitem__(self, key):
        self._note(key)
        return _wrap(super().__getitem__(key), self._path + (key,), self._reads)

    def get(self, key, default=None):
        self._note(key)
        if super().__contains__(key):
            return _wrap(super().__getitem__(key), self._path + (key,), self._reads)
        return default

    def __contains__(self, key):
        self._note(key)
        return super().__contains__(key)

    def items(self):
        return [(k, _wrap(v, self._path + (k,), self._reads)) for k, v in super().items()]

    # Overridden so that `f(**d)` and `dict(d)` take CPython's generic path (keys(), then
    # `d[key]` for each, noted above) rather than copying the values past `__getitem__`.
    def __iter__(self):
        return super().__iter__()

    def keys(self):
        return super().keys()

    def values(self):
        return [v for _, v in self.items()]


class _List(list):
    """A JSON array whose items note the keys read from them."""

    def __init__(self, data, path, reads):
        super().__init__(data)
        self._path, self._reads = path, reads

    def __getitem__(self, index):
        item = super().__getitem__(index)
        if isinstance(index, slice):
            return [_wrap(i, self._path + ("[]",), self._reads) for i in item]
        return _wrap(item, self._path + ("[]",), self._reads)

    def __iter__(self):
        for item in super().__iter__():
            yield _wrap(item, self._path + ("[]",), self._reads)


def _kind(value):
    """The JSON type of a value json.loads made."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "object" if isinstance(value, dict) else "array"


def _wrap(value, path, reads):
    if isinstance(value, dict) and not isinstance(value, _Dict):
        return _Dict(value, path, reads)
    if isinstance(value, list) and not isinstance(value, _List):
        return _List(value, path, reads)
    return value


def _install():
    try:
        from switchyard_ml import _client
    except Exception:  # noqa: BLE001 - not the SDK's interpreter: nothing to record
        return
    original = _client.AdminHttp.call

    def call(self, method, path, body=None, query=None, content_type="application/json", raw=False):
        full = path + ("?" + "&".join("{}=".format(k) for k, v in (query or {}).items() if v is not None) if query else "")
        record = {"method": method, "path": full, "status": None,
                  "body": body if isinstance(body, dict) and content_type == "application/json" else None, "reads": set()}
        _records.append(record)
        try:
            answer = original(self, method, path, body, query, content_type, raw)
        except Exception as e:
            record["status"] = getattr(e, "status_code", None)
            raise
        if raw:
            record["status"] = answer[0]
            return answer
        record["status"] = "2xx"  # the SDK does not see which; the check takes any 2xx answer
        return _wrap(answer, (), record["reads"])

    _client.AdminHttp.call = call

    def dump():
        with open(_LOG, "a") as f:
            for r in _records:
                paths = [p for p in r["reads"] if all(isinstance(k, str) for k in p)]
                typed = [[list(p[0]), p[1]] for p in r["reads"] if len(p) == 2 and isinstance(p[0], tuple)]
                r = dict(r, reads=sorted(list(p) for p in paths), types=sorted(typed))
                f.write(json.dumps(r) + "\n")

    atexit.register(dump)


if _LOG:
    _install()
