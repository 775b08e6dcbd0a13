"""Switchyard's Python worker: runs one Azure ML scoring script (score.py) for one instance.

Switchyard starts one such process per instance and talks to it over two inherited pipes,
fd 3 (requests in) and fd 4 (answers out), never stdin/stdout: the user's script prints, and
everything it prints on stdout/stderr goes, line by line, to the deployment's log.

Every frame is a 4-byte big-endian length, a 1-byte type and the payload (length counts type
and payload). Switchyard sends:
  R  run: u16 content-type length, the content type, the body.
The worker sends:
  I  init done: JSON about the worker (python version, pid).
  E  init failed: the exception's last line (the traceback is on stderr); then it exits 3.
  A  answer: u16 status, u16 content-type length, the content type, the body.
  X  run raised: the exception's last line (the traceback is on stderr); the worker lives on.
  B  bad input (HTTP 400): what was expected.

The entry-script rules follow Azure's inference server (azureml-inference-server-http):
AZUREML_ENTRY_SCRIPT is loaded from AML_APP_ROOT as module "entry_module", that folder is on
sys.path and is the working directory, init() runs once, run(raw_data) gets the body as a str
(a parameter named request_headers gets the headers), an AMLResponse/Response passes through,
anything else is json.dumps'ed with status 200.
"""

import importlib.util
import inspect
import json
import logging
import os
import struct
import sys
import traceback

IN_FD = 3
OUT_FD = 4
HEADER = struct.Struct(">IB")


def read_exact(fd, n):
    chunks = []
    while n:
        chunk = os.read(fd, n)
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def send(kind, payload):
    data = HEADER.pack(len(payload) + 1, kind) + payload
    view = memoryview(data)
    while view:
        n = os.write(OUT_FD, view)
        view = view[n:]


def last_line(exc):
    lines = traceback.format_exception_only(type(exc), exc)
    text = lines[-1].strip() if lines else type(exc).__name__
    return text.encode("utf-8", "replace")[:2000]


def load_entry_script():
    root = os.environ.get("AML_APP_ROOT", os.getcwd())
    script = os.environ["AZUREML_ENTRY_SCRIPT"]
    path = os.path.join(root, script)
    for folder in (root, os.environ.get("AZUREML_SOURCE_DIRECTORY")):
        if folder and folder not in sys.path:
            sys.path.append(folder)
    spec = importlib.util.spec_from_file_location("entry_module", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load the scoring script {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["entry_module"] = module
    spec.loader.exec_module(module)
    for name in ("init", "run"):
        if not callable(getattr(module, name, None)):
            raise AttributeError(f"the scoring script {script} must define {name}()")
    return module


def wait_for_debugger():
    """SWITCHYARD_DEBUGPY=[HOST:]PORT (the server's environment or the deployment's
    environment_variables): listen with debugpy and wait until a debugger attaches, before the
    scoring script is even imported, so breakpoints in init() and run() hold. Unset: nothing."""
    address = os.environ.get("SWITCHYARD_DEBUGPY", "").strip()
    if not address:
        return
    host, _, port = address.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"SWITCHYARD_DEBUGPY must be PORT or HOST:PORT (e.g. 0.0.0.0:5678), got {address!r}")
    try:
        import debugpy
    except ImportError:
        raise ImportError(
            "SWITCHYARD_DEBUGPY is set but debugpy is not installed in this deployment's Python: "
            "add debugpy to the conda file's pip list"
        ) from None
    host = host or "0.0.0.0"
    debugpy.listen((host, int(port)))
    print(f"debugpy listens on {host}:{port}: waiting for a debugger to attach", file=sys.stderr, flush=True)
    debugpy.wait_for_client()


def schema_decorated(run):
    """Whether run is decorated with @input_schema (inference-schema installed and used)."""
    try:
        from inference_schema.schema_util import is_schema_decorated
    except Exception:
        return False
    try:
        return bool(is_schema_decorated(run))
    except Exception:
        return False


def raw_http_requested():
    """Whether the script used @rawhttp (azureml-inference-server-http sets a module flag)."""
    module = sys.modules.get("azureml_inference_server_http.api.aml_request")
    return bool(getattr(module, "_rawHttpRequested", False))


class RawRequest:
    """What a @rawhttp run() receives: the parts of a flask request a scoring script reads."""

    method = "POST"
    path = full_path = "/score"
    args = {}

    def __init__(self, content_type, body):
        self.headers = {"Content-Type": content_type} if content_type else {}
        self.content_type = content_type
        self.data = body

    def get_data(self, as_text=False):
        return self.data.decode("utf-8", "replace") if as_text else self.data

    def get_json(self, *args, **kwargs):
        return json.loads(self.data)

    @property
    def json(self):
        return self.get_json()


class Runner:
    def __init__(self, module):
        self.run = module.run
        try:
            params = inspect.signature(self.run).parameters
        except (TypeError, ValueError):
            params = {}
        self.wants_headers = "request_headers" in params
        self.schema = schema_decorated(self.run)
        self.raw = raw_http_requested()
        if self.raw and self.schema:
            raise TypeError("run() cannot be decorated with both @rawhttp and @input_schema")

    def score(self, content_type, body):
        if self.raw:
            try:
                reply(self.run(RawRequest(content_type, body)))
            except Exception as exc:
                traceback.print_exc()
                sys.stderr.flush()
                send(ord("X"), last_line(exc))
            return
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            send(ord("B"), b"the request body is not UTF-8 text: run(raw_data) receives it as a str")
            return
        kwargs = {}
        if self.wants_headers:
            kwargs["request_headers"] = {"Content-Type": content_type} if content_type else {}
        try:
            if self.schema:
                if content_type and not content_type.split(";")[0].strip().lower() == "application/json":
                    answer(415, "application/json", json.dumps({"message": "this scoring script takes application/json"}).encode())
                    return
                try:
                    data = json.loads(text)
                except ValueError as exc:
                    send(ord("B"), f"the request body is not JSON: {exc}".encode())
                    return
                if not isinstance(data, dict):
                    send(ord("B"), b"the scoring script's @input_schema expects a JSON object of named inputs")
                    return
                result = self.run(**data, **kwargs)
            else:
                result = self.run(text, **kwargs)
            reply(result)
        except Exception as exc:
            traceback.print_exc()
            sys.stderr.flush()
            send(ord("X"), last_line(exc))


def answer(status, content_type, body):
    ct = content_type.encode("latin-1", "replace")[:1000]
    send(ord("A"), struct.pack(">HH", status, len(ct)) + ct + body)


def reply(result):
    # AMLResponse (azureml-inference-server-http) and flask/werkzeug Responses pass through.
    if hasattr(result, "status_code") and hasattr(result, "get_data"):
        content_type = result.headers.get("Content-Type") or "application/octet-stream"
        answer(int(result.status_code), content_type, result.get_data())
        return
    answer(200, "application/json", json.dumps(result).encode("utf-8"))


def main():
    os.set_inheritable(IN_FD, False)
    os.set_inheritable(OUT_FD, False)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    try:
        wait_for_debugger()
        module = load_entry_script()
        module.init()
        runner = Runner(module)
    except BaseException as exc:
        traceback.print_exc()
        sys.stderr.flush()
        send(ord("E"), last_line(exc))
        sys.exit(3)
    sys.stdout.flush()
    about = {"python": sys.version.split()[0], "pid": os.getpid(), "executable": sys.executable}
    send(ord("I"), json.dumps(about).encode())
    while True:
        head = read_exact(IN_FD, HEADER.size)
        if head is None:
            return  # Switchyard closed the pipe: the instance was removed.
        length, kind = HEADER.unpack(head)
        payload = read_exact(IN_FD, length - 1)
        if payload is None:
            return
        if kind == ord("R"):
            (ct_len,) = struct.unpack_from(">H", payload)
            content_type = payload[2 : 2 + ct_len].decode("latin-1")
            runner.score(content_type, payload[2 + ct_len :])
        else:
            send(ord("B"), f"unknown frame type {kind}".encode())


if __name__ == "__main__":
    main()
