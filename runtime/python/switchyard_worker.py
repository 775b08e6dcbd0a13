"""Switchyard's Python worker: runs one Azure ML scoring script (score.py) for one instance.

Switchyard starts one such process per instance and talks to it over two inherited pipes,
fd 3 (requests in) and fd 4 (answers out), never stdin/stdout: the user's script prints, and
everything it prints on stdout/stderr goes, line by line, to the deployment's log.

Every frame is a 4-byte big-endian length, a 1-byte type and the payload (length counts type
and payload). Switchyard sends:
  R  run: u16 content-type length, the content type, u32 header-block length, the header
     block, the body. The block holds the request's headers as Azure's server hands them to
     run() (title-cased names, repeated values joined with ","), `name NUL value NUL ...`;
     it is empty when the script reads no headers (the worker says so at init).
The worker sends:
  I  init done: JSON about the worker (python version, pid, whether it reads headers).
  E  init failed: the exception's last line (the traceback is on stderr); then it exits 3.
  A  answer: u16 status, u16 content-type length, the content type, u32 header-block length,
     the header block (an AMLResponse's other headers, as above), the body.
  X  run raised: the exception's last line (the traceback is on stderr); the worker lives on.
  B  bad input (HTTP 400): what was expected.
  U  run() returned an answer that cannot be sent (HTTP 424): why (NaN or Infinity, which JSON
     cannot carry; an answer over the cap of SWITCHYARD_MAX_ANSWER bytes); the worker lives on.

The entry-script rules follow Azure's inference server (azureml-inference-server-http):
AZUREML_ENTRY_SCRIPT is loaded from AML_APP_ROOT as module "entry_module", that folder is on
sys.path and is the working directory, init() runs once, run(raw_data) gets the body as a str
(a parameter named request_headers gets the headers), an AMLResponse/Response passes through,
anything else is json.dumps'ed with status 200. Two things differ on purpose: NaN and Infinity
are refused (Azure's server sends the invalid JSON token NaN), and an answer has a size cap.
Azure's server makes `azureml.contrib.services.aml_request`/`aml_response` names of its own
`azureml_inference_server_http.api` modules; so does this worker (see AzureAlias).
"""

import importlib.util
import inspect
import json
import logging
import os
import struct
import sys
import time
import traceback
import types

# The frame pipes as inherited; main() moves them to private descriptors (hide_frame_pipes).
IN_FD = 3
OUT_FD = 4
HEADER = struct.Struct(">IB")
# The largest frame Switchyard reads (frame::MAX_FRAME); an answer is refused before it is sent.
MAX_FRAME = int(os.environ.get("SWITCHYARD_MAX_ANSWER", 256 * 1024 * 1024))
# json.dumps, refusing NaN and Infinity (one encoder, as json.dumps keeps its default one).
ENCODE = json.JSONEncoder(allow_nan=False).encode


class Unservable(Exception):
    """run()'s answer cannot be sent: the message says why (a U frame, HTTP 424)."""


class FrameReader:
    """Reads frames from a pipe with as few reads as it can: one os.read usually brings a
    whole frame (its head and payload), and what follows it is kept for the next frame."""

    def __init__(self, fd):
        self.fd = fd
        self.buf = b""

    def _fill(self, need):
        chunks = [self.buf]
        have = len(self.buf)
        while have < need:
            chunk = os.read(self.fd, max(65536, need - have))
            if not chunk:
                return False
            chunks.append(chunk)
            have += len(chunk)
        self.buf = b"".join(chunks) if len(chunks) > 1 else chunks[0]
        return True

    def frame(self):
        """(kind, payload), or None once Switchyard closed the pipe."""
        if len(self.buf) < 5 and not self._fill(5):
            return None
        length, kind = HEADER.unpack_from(self.buf)
        end = 4 + length
        if len(self.buf) < end and not self._fill(end):
            return None
        payload = self.buf[5:end]
        self.buf = self.buf[end:]
        return kind, payload


def send(kind, payload):
    if len(payload) + 1 > MAX_FRAME:
        raise Unservable(
            f"run() answered {len(payload)} bytes, over the cap of {MAX_FRAME - 1} bytes per answer"
        )
    data = HEADER.pack(len(payload) + 1, kind) + payload
    view = memoryview(data)
    while view:
        n = os.write(OUT_FD, view)
        view = view[n:]


def header_dict(block):
    """A header block (name NUL value NUL ...) as the dict Azure's server passes."""
    if not block:
        return {}
    parts = iter(block.decode("latin-1").split("\0"))
    return dict(zip(parts, parts))


def header_block(pairs):
    """(name, value) pairs as a header block."""
    out = []
    for name, value in pairs:
        name, value = str(name), str(value)
        if name.lower() in ("content-type", "content-length"):
            continue
        out.append(name)
        out.append(value)
    return "\0".join(out).encode("latin-1", "replace")


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


class AzureAlias(types.ModuleType):
    """`azureml.contrib.services.aml_request` (and `aml_response`), the names Azure's
    documentation uses: azureml-inference-server-http puts its own `api` modules in
    sys.modules under these names when its server starts, so that the same objects (rawhttp's
    flag, AMLResponse) are reached either way. Here the real module is imported on first use,
    not at every worker's start (it imports flask): until then this stand-in is in sys.modules,
    and its first attribute lookup replaces it with the real module."""

    def __init__(self, name, target):
        super().__init__(name)
        self._target = target

    def _real(self):
        try:
            module = importlib.import_module(self._target)
        except ImportError as exc:
            raise ImportError(
                f"{self.__name__} comes from Azure's inference server package: add "
                f"azureml-inference-server-http to the conda file's pip list ({exc})",
                name=self.__name__,
            ) from None
        sys.modules[self.__name__] = module
        # Later lookups (and `from ... import *`) find the real module's names here too.
        self.__dict__.update({k: v for k, v in vars(module).items() if not k.startswith("__")})
        return module

    def __getattr__(self, name):
        if name.startswith("_") and name not in ("__all__", "_rawHttpRequested"):
            raise AttributeError(name)
        return getattr(self._real(), name)


def alias_azure_modules():
    for name in ("aml_request", "aml_response"):
        alias = f"azureml.contrib.services.{name}"
        if alias not in sys.modules:
            sys.modules[alias] = AzureAlias(alias, f"azureml_inference_server_http.api.{name}")


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def configure_logging():
    """The script's logging as Azure's server leaves it: the root logger untouched (WARNING;
    warnings and errors still reach stderr, through the handler logging.warning() and friends
    add when none is set), so logging.info lines cost next to nothing and are dropped. Two ways to have them, before the script is imported:
    a logging.json in the code folder (else in the entry script's folder) is applied with
    logging.config.dictConfig, as Azure's server does; SWITCHYARD_SCRIPT_LOG_LEVEL=INFO (a
    local extension) sets the root logger to that level, lines on stderr. AZUREML_LOG_LEVEL is
    left alone: Azure's server reads it into its config and applies it to no logger."""
    root = os.environ.get("AML_APP_ROOT", os.getcwd())
    script_dir = os.path.dirname(os.path.join(root, os.environ.get("AZUREML_ENTRY_SCRIPT", "")))
    for folder in dict.fromkeys((root, script_dir)):
        path = os.path.join(folder, "logging.json")
        if os.path.isfile(path):
            from logging import config as logging_config  # only then: it imports socket, threading

            try:
                with open(path) as f:
                    logging_config.dictConfig(json.load(f))
            except Exception as exc:
                raise ValueError(f"{path} is not a logging configuration this Python can apply: {exc}") from exc
            break
    level = os.environ.get("SWITCHYARD_SCRIPT_LOG_LEVEL", "").strip().upper()
    if level:
        if level not in LOG_LEVELS:
            raise ValueError(f"SWITCHYARD_SCRIPT_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
        if not logging.getLogger().handlers:
            logging.basicConfig(stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
        logging.getLogger().setLevel(level)


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


class Headers(dict):
    """Request headers looked up without regard to case, as flask's request.headers are."""

    def __init__(self, items):
        super().__init__(items)
        self._lower = {k.lower(): v for k, v in self.items()}

    def __getitem__(self, name):
        return self._lower[name.lower()]

    def __contains__(self, name):
        return isinstance(name, str) and name.lower() in self._lower

    def get(self, name, default=None, type=None):
        value = self._lower.get(name.lower(), default) if isinstance(name, str) else default
        if type is not None and value is not default:
            try:
                return type(value)
            except (TypeError, ValueError):
                return default
        return value


class RawRequest:
    """What a @rawhttp run() receives: the parts of a flask request a scoring script reads."""

    method = "POST"
    path = full_path = "/score"
    args = {}

    def __init__(self, content_type, headers, body):
        self.headers = Headers(headers)
        self.content_type = content_type
        self.mimetype = content_type.split(";")[0].strip().lower()
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
        # Azure's server refuses these signatures when it loads the script (user_script.py).
        allowed = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        if any(p.kind not in allowed for p in params.values()):
            raise TypeError("run() cannot accept positional-only arguments, *args, or **kwargs.")
        self.wants_headers = "request_headers" in params
        self.inputs = [p for p in params.values() if p.name != "request_headers"]
        if params and not self.inputs:
            raise TypeError('run() needs to accept an argument other than "request_headers".')
        self.schema = schema_decorated(self.run)
        self.raw = raw_http_requested()
        if self.raw and self.schema:
            raise TypeError("run() cannot be decorated with both @rawhttp and @input_schema")

    def score(self, content_type, headers, body):
        kwargs = {"request_headers": headers} if self.wants_headers else {}
        if self.raw:
            try:
                reply(self.run(RawRequest(content_type, headers, body), **kwargs))
            except Unservable as exc:
                send(ord("U"), str(exc).encode())
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
                # As Azure's server: the declared inputs only (other keys are ignored), each
                # from the body or its default, else 400.
                for p in self.inputs:
                    value = data.get(p.name, p.default)
                    if value is inspect.Parameter.empty:
                        send(ord("B"), f"A value is not provided for the {p.name!r} parameter.".encode())
                        return
                    kwargs[p.name] = value
                result = self.run(**kwargs)
            else:
                result = self.run(text, **kwargs)
            reply(result)
        except Unservable as exc:
            send(ord("U"), str(exc).encode())
        except Exception as exc:
            traceback.print_exc()
            sys.stderr.flush()
            send(ord("X"), last_line(exc))


class CollectorJoin:
    """Joins a scoring script's custom records (azureml.ai.monitoring's Collector) to the
    request its run() was answering. Switchyard sets this up only for a deployment whose
    data_collector turns on a custom collection, and then sends each run's headers with the
    request's id (X-Request-Id). A Collector.collect() given no correlation context makes one
    with get_context(); here that context takes the request's id as its id (so the records of
    one request share their correlation id, as payload records do) and carries it in a header
    the Collector posts as ce-switchyard-request-id. A context the script passes is left as
    it is."""

    def __init__(self):
        self.request_id = None
        self.patched = False

    def before_run(self, headers):
        self.request_id = headers.get("X-Request-Id")
        if not self.patched:
            self.patch()

    def after_run(self):
        # A collect() after run() returned (another thread, a timer) belongs to no request.
        self.request_id = None
        if not self.patched:
            self.patch()  # a script that imported the Collector in run(): joined from its next run

    def patch(self):
        collector_json = sys.modules.get("azureml.ai.monitoring.collector_json")
        context = sys.modules.get("azureml.ai.monitoring.context")
        if collector_json is None or context is None or not hasattr(context, "BasicCorrelationContext"):
            return
        join = self

        def get_context():
            rid = join.request_id
            return context.BasicCorrelationContext(id=rid, headers={"switchyard-request-id": rid} if rid else None)

        collector_json.get_context = get_context
        self.patched = True


ANSWER_HEAD = struct.Struct(">HH")
NO_HEADERS = struct.pack(">I", 0)


def answer(status, content_type, body, headers=b""):
    ct = content_type.encode("latin-1", "replace")[:1000]
    block = struct.pack(">I", len(headers)) + headers if headers else NO_HEADERS
    send(ord("A"), ANSWER_HEAD.pack(status, len(ct)) + ct + block + body)


def reply(result):
    # AMLResponse (azureml-inference-server-http) and flask/werkzeug Responses pass through:
    # status, headers (repeated ones too) and body.
    if hasattr(result, "status_code") and hasattr(result, "get_data"):
        headers = result.headers
        content_type = headers.get("Content-Type") or "application/octet-stream"
        pairs = headers.items() if isinstance(headers, dict) else list(headers)
        answer(int(result.status_code), content_type, result.get_data(), header_block(pairs))
        return
    try:
        body = ENCODE(result)
    except ValueError as exc:
        if "JSON compliant" not in str(exc):
            raise
        raise Unservable(
            "run() returned NaN or Infinity, which JSON cannot carry (Azure's server would send "
            "the invalid token NaN): return None, or a string, for a missing value"
        ) from None
    answer(200, "application/json", body.encode("utf-8"))


def hide_frame_pipes():
    """Moves the frame pipes to private descriptors and leaves /dev/null on fds 3 and 4.

    Two runs may be in the pipes at once (the next request waits behind the current run), so
    a script, or a library it loads, that writes to fd 4 or reads fd 3 would put a forged
    answer in another client's place or take the next client's request. Now such writes go
    nowhere and such reads find nothing. The private copies are not inherited by processes
    the script starts (os.dup makes them close-on-exec), so a child cannot hold the pipes
    open after the worker is gone either."""
    global IN_FD, OUT_FD
    IN_FD, OUT_FD = os.dup(3), os.dup(4)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 3, inheritable=False)
    os.dup2(null, 4, inheritable=False)
    os.close(null)


def main():
    hide_frame_pipes()
    alias_azure_modules()
    try:
        configure_logging()
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
    join = CollectorJoin() if os.environ.get("AZUREML_MDC_CONFIG_PATH") else None
    about = {
        "python": sys.version.split()[0],
        "pid": os.getpid(),
        "executable": sys.executable,
        "headers": runner.wants_headers or runner.raw or join is not None,
    }
    send(ord("I"), json.dumps(about).encode())
    frames = FrameReader(IN_FD)
    profile = os.environ.get("SWITCHYARD_WORKER_PROFILE")
    read = Profile(profile, runner, frames).read if profile else frames.frame
    run_frame = struct.Struct(">H")
    block_head = struct.Struct(">I")
    while True:
        frame = read()
        if frame is None:
            return  # Switchyard closed the pipe: the instance was removed.
        kind, payload = frame
        if kind == ord("R"):
            (ct_len,) = run_frame.unpack_from(payload)
            content_type = payload[2 : 2 + ct_len].decode("latin-1")
            at = 2 + ct_len
            (block_len,) = block_head.unpack_from(payload, at)
            at += 4
            headers = header_dict(payload[at : at + block_len])
            if join is not None:
                join.before_run(headers)
            runner.score(content_type, headers, payload[at + block_len :])
            if join is not None:
                join.after_run()
        else:
            send(ord("B"), f"unknown frame type {kind}".encode())


class Profile:
    """SWITCHYARD_WORKER_PROFILE=PATH (a benchmark's setting): the worker's own CPU time
    (CLOCK_THREAD_CPUTIME_ID, so time on other processes' behalf or waiting is not counted)
    split into reading frames, the script's run(), writing answers and the rest (parsing,
    encoding, dispatch), written as JSON to PATH.PID after runs 1, 10 and 100 and then every
    1000 (a worker is killed when its instance is removed, so there may be no last word).
    Off, the run loop is the plain one: no clock is read."""

    def __init__(self, path, runner, frames):
        self.path = f"{path}.{os.getpid()}"
        self.frames = frames
        self.runs = 0
        self.read_ns = self.run = self.write = 0
        self.started = time.thread_time_ns()
        clock = time.thread_time_ns
        script_run, plain_send = runner.run, globals()["send"]

        def timed_run(*args, **kwargs):
            t = clock()
            try:
                return script_run(*args, **kwargs)
            finally:
                self.run += clock() - t

        def timed_send(kind, payload):
            t = clock()
            try:
                return plain_send(kind, payload)
            finally:
                self.write += clock() - t

        runner.run = timed_run
        globals()["send"] = timed_send

    def read(self):
        """The next frame, as FrameReader.frame, timed."""
        t = time.thread_time_ns()
        frame = self.frames.frame()
        self.read_ns += time.thread_time_ns() - t
        if frame is not None:
            self.runs += 1
            if self.runs % 1000 == 0 or self.runs in (1, 10, 100):
                self.dump()
        return frame

    def dump(self):
        total = time.thread_time_ns() - self.started
        parts = {"read_frame": self.read_ns, "run": self.run, "write_answer": self.write}
        doc = {"runs": self.runs, "total_ns": total, **{f"{k}_ns": v for k, v in parts.items()},
               "rest_ns": total - sum(parts.values())}
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(doc, f)
        os.replace(tmp, self.path)


if __name__ == "__main__":
    main()
