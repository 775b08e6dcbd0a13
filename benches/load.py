#!/usr/bin/env python3
"""Switchyard's load benchmark (run it through benches/run.sh, which sets everything up).

Measures, in one run on one machine, so that every number has a baseline beside it:
  * model-1 (batch 2) and model-2 requests/s and p50/p90/p99 at concurrency 1, 8, 32, 64 for
    Switchyard, the HTTP floor (benches/floor: actix-web + the same ONNX call, nothing else)
    and the Azure ML inference server (azureml-inference-server-http + a score.py on
    onnxruntime), with wrk as the load generator;
  * the Azure sample's score.py + pickle (model-1, scikit-learn) under Switchyard (2 instances,
    the Python hook) and under azureml-inference-server-http (2 workers), same interpreter and
    packages, at concurrency 1, 8, 32: req/s and p99 ratios, the hook's per-request overhead
    (latency minus the in-process time of run()) and idle RSS per Python instance;
  * native plugins (--only native): the Rust model-1 plugin (runtime/examples/linear) in process
    and with `isolation: process` against the ONNX model-1 hook, same server, same run, c=1
    and c=32: req/s ratios and the worker's cost per request;
  * scenarios: live p99 with a 50% mirror to a 10x slower shadow, p99 during traffic flips,
    scale 1->2->1 and deployment creates, model-2 on 64-row requests with 1 vs 2 instances,
    create->ready time, resident memory per added deployment;
  * Open Inference Protocol v2: model-2 on 64-row requests, binary-tensor `infer` (as
    tritonclient sends it) against `/score` JSON, req/s ratio (`--only oip` runs just this);
and prints ratio tables, writes benches/results/load-results.json and load-plot.svg.
Only the standard library is used.
"""

import argparse
import atexit
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "target" / "release" / "switchyard"
FLOOR = ROOT / "target" / "release" / "switchyard-bench-floor"
RESULTS = ROOT / "benches" / "results"
VENV = ROOT / ".bench" / "venv"
SAMPLE_VENV = ROOT / ".bench" / "sample-venv"
SAMPLE = ROOT / "examples" / "azure-sample"
CONCURRENCY = [1, 8, 32, 64]
SAMPLE_CONCURRENCY = [1, 8, 32]

WRK_LUA = """
wrk.method = "POST"
local f = io.open(os.getenv("WRK_BODY"), "rb"); wrk.body = f:read("*a"); f:close()
wrk.headers["Content-Type"] = "application/json"
local auth = os.getenv("WRK_AUTH")
if auth and auth ~= "" then wrk.headers["Authorization"] = "Bearer " .. auth end
local pin = os.getenv("WRK_PIN")
if pin and pin ~= "" then wrk.headers["azureml-model-deployment"] = pin end
"""

SCORE_PY = '''
"""score.py for the Azure ML inference server: the same ONNX model, scored with onnxruntime."""
import json, os
import numpy as np
import onnxruntime as ort

def init():
    global session, name, dtype
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(os.environ["BENCH_MODEL"], options, providers=["CPUExecutionProvider"])
    first = session.get_inputs()[0]
    name = first.name
    dtype = np.float64 if first.type == "tensor(double)" else np.float32

def run(raw_data):
    data = np.array(json.loads(raw_data)["data"], dtype=dtype)
    return session.run(None, {name: data})[0].reshape(-1).tolist()
'''


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None, headers=None, timeout=30):
    data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            text = r.read().decode()
            return r.status, (json.loads(text) if text.strip().startswith(("{", "[")) else text)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def wait_until(check, what, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if check():
                return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.05)
    raise SystemExit(f"bench: timed out waiting for {what}")


# --- servers ------------------------------------------------------------------------------


# Every server process a benchmark starts, stopped when this script exits however it exits
# (a later server failing to start, Ctrl-C): before, a Switchyard started for a point whose
# floor binary was missing went on running after the script had failed.
STARTED = []


def started(proc):
    STARTED.append(proc)
    return proc


@atexit.register
def stop_started():
    for proc in STARTED:
        if proc.poll() is None:
            try:
                # Azure's server runs in its own session, with its gunicorn workers.
                if os.getsid(proc.pid) == proc.pid:
                    os.killpg(proc.pid, signal.SIGKILL)
                else:
                    proc.kill()
            except OSError:
                pass
            proc.wait()


class Switchyard:
    def __init__(self, workers=None, extra=()):
        args = [str(BIN), "serve", "--port", "0", "--admin-port", "0", *extra]
        if workers:
            args += ["--workers", str(workers)]
        self.proc = started(subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True))
        self.scoring = self.admin = None
        while self.scoring is None or self.admin is None:
            line = self.proc.stdout.readline()
            if not line:
                raise SystemExit("bench: switchyard exited at start")
            if line.startswith("Scoring plane: "):
                self.scoring = line.split(": ", 1)[1].strip()
            elif line.startswith("Admin plane: "):
                self.admin = line.split(": ", 1)[1].strip()
        http("PUT", self.admin + "/v1/endpoint", {"name": "bench", "auth_mode": "key"})
        self.key = http("GET", self.admin + "/v1/endpoint/keys")[1]["primaryKey"]

    def deploy(self, name, model, instances=1, mcr=64, all_traffic=False, spec=None):
        spec = spec or {"model": {"path": str(ROOT / "models" / model)}}
        spec = dict(spec, instance_count=instances, request_settings={"max_concurrent_requests_per_instance": mcr})
        status, body = http("PUT", f"{self.admin}/v1/deployments/{name}?all_traffic={str(all_traffic).lower()}", spec)
        assert status in (200, 201), body
        return self.wait(name)

    def wait(self, name, poll=0.01):
        # Polling costs CPU on the same 2 cores as the load: 10 ms apart by default.
        while True:
            d = http("GET", f"{self.admin}/v1/deployments/{name}")[1]
            if d["provisioning_state"] in ("Succeeded", "Failed"):
                assert d["provisioning_state"] == "Succeeded", d
                return d
            time.sleep(poll)

    def patch_endpoint(self, body):
        status, out = http("PATCH", self.admin + "/v1/endpoint", body)
        assert status == 200, out

    def patch_deployment(self, name, body):
        status, out = http("PATCH", f"{self.admin}/v1/deployments/{name}", body)
        assert status == 200, out

    def delete(self, name):
        status, out = http("DELETE", f"{self.admin}/v1/deployments/{name}")
        assert status == 200, out

    def rss(self):
        text = http("GET", self.admin + "/metrics")[1]
        m = re.search(r"^switchyard_process_resident_memory_bytes (\d+)", text, re.M)
        return int(m.group(1))

    def url(self):
        return self.scoring + "/score"

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)


class Floor:
    def __init__(self, model):
        self.port = free_port()
        self.proc = started(subprocess.Popen([str(FLOOR), str(ROOT / "models" / model / "model.onnx"), str(self.port), "2"],
                                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_until(lambda: socket.create_connection(("127.0.0.1", self.port), timeout=1).close() or True, "the floor")
        self.key = ""

    def url(self):
        return f"http://127.0.0.1:{self.port}/score"

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


class PythonServer:
    def __init__(self, model, workdir, script=None, env=None, venv=VENV):
        """Azure ML's inference server with 2 workers: on `script` (with `env`), else on a
        score.py written to `workdir` that scores models/MODEL/model.onnx with onnxruntime."""
        self.port, health = free_port(), free_port()
        if script is None:
            script = workdir / "score.py"
            script.write_text(SCORE_PY)
            env = {"BENCH_MODEL": str(ROOT / "models" / model / "model.onnx")}
        env = dict(os.environ, WORKER_COUNT="2", **(env or {}))
        self.proc = started(subprocess.Popen(
            [str(venv / "bin" / "azmlinfsrv"), "--entry_script", str(script), "--port", str(self.port),
             "--health_port", str(health), "--worker_count", "2"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=workdir, start_new_session=True))
        body = (ROOT / "sample-requests" / "model-1.json").read_bytes()
        wait_until(lambda: http("POST", self.url(), body, {"Content-Type": "application/json"})[0] == 200,
                   "the Azure ML inference server", timeout=120)
        self.key = ""

    def url(self):
        return f"http://127.0.0.1:{self.port}/score"

    def stop(self):
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=30)


# --- wrk ----------------------------------------------------------------------------------


def parse_duration(text):
    m = re.match(r"([\d.]+)(us|ms|s|m)", text)
    value, unit = float(m.group(1)), m.group(2)
    return value * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


# A v2 binary infer as tritonclient sends it: no Content-Type, the JSON header's length in
# Inference-Header-Content-Length, the tensor's bytes after it.
WRK_OIP_LUA = """
wrk.method = "POST"
local f = io.open(os.getenv("WRK_BODY"), "rb"); wrk.body = f:read("*a"); f:close()
wrk.headers["Inference-Header-Content-Length"] = os.getenv("WRK_HEADER_LENGTH")
wrk.headers["Authorization"] = "Bearer " .. os.getenv("WRK_AUTH")
"""


def wrk(url, body_file, concurrency, seconds, key="", pin="", threads=1, header_length=None):
    lua = Path(tempfile.gettempdir()) / ("switchyard-bench.lua" if header_length is None else "switchyard-bench-oip.lua")
    lua.write_text(WRK_LUA if header_length is None else WRK_OIP_LUA)
    env = dict(os.environ, WRK_BODY=str(body_file), WRK_AUTH=key, WRK_PIN=pin, WRK_HEADER_LENGTH=str(header_length))
    out = subprocess.run(
        ["wrk", f"-t{min(threads, concurrency)}", f"-c{concurrency}", f"-d{seconds}s", "--latency", "--timeout", "10s",
         "-s", str(lua), url], capture_output=True, text=True, env=env, check=True).stdout
    res = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)), "errors": 0}
    for q in ("50", "75", "90", "99"):
        res[f"p{q}_ms"] = parse_duration(re.search(rf"^\s+{q}%\s+(\S+)", out, re.M).group(1))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["errors"] += int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    res["errors"] += sum(int(x) for x in m.groups()) if m else 0
    res["requests"] = int(re.search(r"(\d+) requests in", out).group(1))
    return res


def body_file(rows, x00=None):
    """A request body with `rows` rows of the seed's sample (row 0's first number = x00)."""
    seed = [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [10, 9, 8, 7, 6, 5, 4, 3, 2, 1]]
    data = [list(seed[i % 2]) for i in range(rows)]
    if x00 is not None:
        data[0][0] = x00
    f = Path(tempfile.gettempdir()) / f"switchyard-bench-{rows}-{x00}.json"
    f.write_text(json.dumps({"data": data}))
    return f


# --- the runs -----------------------------------------------------------------------------


def throughput(args, results):
    sample = ROOT / "sample-requests" / "model-1.json"
    for model in ("model-1", "model-2"):
        servers = {}
        sy = Switchyard()
        sy.deploy("bench", model, instances=2, all_traffic=True)
        servers["switchyard"] = sy
        servers["floor"] = Floor(model)
        if not args.no_python:
            servers["python"] = PythonServer(model, Path(tempfile.mkdtemp()))
        table = results.setdefault("throughput", {}).setdefault(model, {})
        for c in CONCURRENCY:
            # Interleave servers at each concurrency, so drift in the machine hits all alike.
            for name, server in servers.items():
                if name == "python" and c > 32 and args.quick:
                    continue
                r = wrk(server.url(), sample, c, args.seconds, key=server.key)
                table.setdefault(name, {})[str(c)] = r
                print(f"  {model} {name:10} c={c:<3} {r['rps']:>9.0f} req/s  p50 {r['p50_ms']:.3f}  p90 {r['p90_ms']:.3f}"
                      f"  p99 {r['p99_ms']:.3f} ms  errors {r['errors']}", flush=True)
        for s in servers.values():
            s.stop()


# run() of the sample's score.py in one process, timed per call: the same interpreter and
# packages as both servers' workers, with the root logger untouched (both servers' default:
# the script's logging.info lines are dropped) or, with a 4th argument "info", at INFO
# (written to /dev/null here), so the log records the script writes are formatted too.
RUN_TIMER = r"""
import importlib.util, json, logging, os, sys, time
if sys.argv[4:] == ["info"]:
    logging.basicConfig(level=logging.INFO, stream=open(os.devnull, "w"), format="%(levelname)s %(name)s: %(message)s")
spec = importlib.util.spec_from_file_location("entry_module", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
module.init()
raw, n = open(sys.argv[2]).read(), int(sys.argv[3])
for _ in range(n // 10):
    module.run(raw)
times = []
for _ in range(n):
    t = time.perf_counter_ns()
    module.run(raw)
    times.append(time.perf_counter_ns() - t)
times.sort()
print(json.dumps({"calls": n, "median_us": times[n // 2] / 1e3, "mean_us": sum(times) / n / 1e3,
                  "p99_us": times[int(n * 0.99)] / 1e3}))
"""


def children(pid):
    """The pids whose parent is `pid`."""
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(d.name))
    return sorted(found)


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_by_thread(pid):
    """CPU seconds (user + system) of each live thread of `pid`, by thread name (numbered
    threads of one kind summed), and the process's total (dead threads included)."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        name = re.sub(r"[-_#:]?\d+$", "", stat[stat.index("(") + 1: stat.rindex(")")])
        fields = stat.rsplit(")", 1)[1].split()
        out[name] = out.get(name, 0) + (int(fields[11]) + int(fields[12])) / CLK_TCK
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    out["(total)"] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


def cpu_snapshot(server):
    """CPU seconds of a server's process by thread, and of each child process (its workers)."""
    snap = {"server": cpu_by_thread(server.proc.pid)}
    for child in children(server.proc.pid):
        try:
            snap[f"worker {child}"] = {"(total)": cpu_by_thread(child)["(total)"]}
        except OSError:
            pass
    return snap


def cpu_per_request(before, after, requests):
    """µs of CPU per request answered between two snapshots: the server's threads by name, its
    workers each and together."""
    out = {}
    for proc, threads in after.items():
        for name, sec in threads.items():
            delta = sec - before.get(proc, {}).get(name, 0)
            key = f"{proc}: {name}" if proc == "server" else proc
            if proc == "server" or name == "(total)":
                out[key] = round(delta * 1e6 / max(requests, 1), 1)
    out["workers (all)"] = round(sum(v for k, v in out.items() if k.startswith("worker ")), 1)
    return out


def memory_mib(pid):
    """RSS and PSS of one process, in MiB (PSS splits shared pages among their sharers)."""
    values = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key = line.split(":", 1)[0]
        if key in ("Rss", "Pss"):
            values[key.lower() + "_mib"] = int(line.split()[1]) / 1024
    return values


# How the script's logging.info lines are treated: "default" is each server as it comes (both
# leave the root logger at WARNING, so the sample's two INFO lines per request are dropped);
# "info" has both write them.
LOGGING_MODES = ["default", "info"]

# Azure's server applies a logging.json found in its app root (AML_APP_ROOT, by default the
# working folder) instead of its own: this one is its own (its loggers and access lines as
# they come) plus the root logger at INFO on stderr, as Switchyard's
# SWITCHYARD_SCRIPT_LOG_LEVEL=INFO does.
def azure_info_logging():
    own = next(SAMPLE_VENV.glob("lib/python*/site-packages/azureml_inference_server_http/logging.json"))
    config = json.loads(own.read_text())
    config["formatters"]["plain"] = {"format": "%(levelname)s %(name)s: %(message)s"}
    config["handlers"]["root_stderr"] = {"class": "logging.StreamHandler", "stream": "ext://sys.stderr",
                                         "formatter": "plain"}
    config["root"] = {"level": "INFO", "handlers": ["root_stderr"]}
    return config


def sample_servers(script, python, model_dir, mode):
    """Switchyard (2 instances of the sample's score.py) and Azure's server (2 workers), with the
    script's INFO lines dropped (mode "default") or written (mode "info")."""
    sy = Switchyard(extra=["--python", str(python)])
    spec = {"model": {"path": str(SAMPLE / "model-1" / "model")},
            "code_configuration": {"code": str(script.parent), "scoring_script": "score.py"}}
    if mode == "info":
        spec["environment_variables"] = {"SWITCHYARD_SCRIPT_LOG_LEVEL": "INFO"}
    sy.deploy("blue", None, instances=2, mcr=16, all_traffic=True, spec=spec)
    workdir = Path(tempfile.mkdtemp())
    if mode == "info":
        (workdir / "logging.json").write_text(json.dumps(azure_info_logging()))
    az = PythonServer(None, workdir, script=script, env=model_dir, venv=SAMPLE_VENV)
    return {"switchyard": sy, "azure": az}


def sample(args, results):
    """The Azure sample's model-1 score.py + pickle: Switchyard (2 instances) against Azure's
    inference server (2 workers), both on the interpreter of .bench/sample-venv."""
    out = results.setdefault("python_sample", {})
    script = SAMPLE / "model-1" / "onlinescoring" / "score.py"
    request = SAMPLE / "managed" / "sample" / "sample-request.json"
    python = SAMPLE_VENV / "bin" / "python"
    model_dir = {"AZUREML_MODEL_DIR": str(SAMPLE / "model-1")}
    calls = 20000
    for mode in LOGGING_MODES:
        r = subprocess.run([str(python), "-c", RUN_TIMER, str(script), str(request), str(calls), mode],
                           capture_output=True, text=True, check=True, env=dict(os.environ, **model_dir))
        run_us = json.loads(r.stdout.strip().splitlines()[-1])
        out.setdefault("run_in_process_us_by_logging", {})[mode] = run_us
        print(f"  run() in process, logging {mode}: median {run_us['median_us']:.1f} us, mean {run_us['mean_us']:.1f} us"
              f" ({calls} calls)", flush=True)
    run_us = out["run_in_process_us"] = out["run_in_process_us_by_logging"]["default"]

    # max_concurrent_requests_per_instance 16: 2 x 16 x 2 instances = 64 admitted, so c=32 is
    # queued as by Azure's server (whose gunicorn workers leave waiting connections in the
    # backlog), never answered 429; each instance still runs one request at a time.
    out["settings"] = {"switchyard": "serve --python .bench/sample-venv/bin/python (2 scoring workers); "
                                     "instance_count 2, max_concurrent_requests_per_instance 16",
                       "azure": "azmlinfsrv --worker_count 2 (azureml-inference-server-http 1.5.1)",
                       "logging": "default: both servers as they come (the root logger untouched, the script's "
                                  "logging.info lines dropped); info: the script's INFO lines written by both "
                                  "(Switchyard: SWITCHYARD_SCRIPT_LOG_LEVEL=INFO; Azure: a logging.json in its "
                                  "app root, the working folder, setting the root logger to INFO on stderr)",
                       "seconds_per_point": args.seconds, "concurrency": SAMPLE_CONCURRENCY}
    servers = sample_servers(script, python, model_dir, "default")
    body = request.read_bytes()
    for s in servers.values():
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {s.key}"}
        for _ in range(50):
            status, answer = http("POST", s.url(), body, headers)
            assert status == 200 and abs(answer[0] - 11055.977245525679) < 1e-6, (status, answer)
    time.sleep(1)
    # Idle memory: each Python instance (Switchyard's worker processes, Azure's gunicorn
    # workers) and the process that holds them (switchyard serve, the gunicorn master).
    mem = {}
    for name, s in servers.items():
        workers = children(s.proc.pid)
        mem[name] = {"per_instance": [memory_mib(p) for p in workers], "parent": memory_mib(s.proc.pid)}
        rss = [m["rss_mib"] for m in mem[name]["per_instance"]]
        pss = [m["pss_mib"] for m in mem[name]["per_instance"]]
        print(f"  idle memory {name:10}: {len(workers)} Python instance(s), RSS {statistics.mean(rss):.1f} MiB"
              f" (PSS {statistics.mean(pss):.1f}) each; parent RSS {mem[name]['parent']['rss_mib']:.1f} MiB", flush=True)
    out["idle_memory"] = mem
    # The same server's HTTP path without Python, for reference: the ONNX model-1, pinned.
    sy = servers["switchyard"]
    sy.deploy("onnx", "model-1", instances=1)

    for mode in LOGGING_MODES[: 1 if args.sample_logging == "default" else None]:
        if mode != "default":
            servers = sample_servers(script, python, model_dir, mode)
            sy = servers["switchyard"]
        table = out.setdefault("load" if mode == "default" else f"load_{mode}", {})
        for c in SAMPLE_CONCURRENCY:
            for name, s in servers.items():
                before = cpu_snapshot(s)
                r = wrk(s.url(), request, c, args.seconds, key=s.key)
                r["cpu_us_per_request"] = cpu_per_request(before, cpu_snapshot(s), r["requests"])
                table.setdefault(name, {})[str(c)] = r
                print(f"  sample {mode:7} {name:10} c={c:<3} {r['rps']:>9.0f} req/s  p50 {r['p50_ms']:.3f}"
                      f"  p99 {r['p99_ms']:.3f} ms  errors {r['errors']}", flush=True)
            if c == 1 and mode == "default":
                r = wrk(sy.url(), request, c, args.seconds, key=sy.key, pin="onnx")
                table["switchyard_onnx"] = {"1": r}
                print(f"  sample {'(onnx)':18} c=1   {r['rps']:>9.0f} req/s  p50 {r['p50_ms']:.3f}  p99 {r['p99_ms']:.3f}"
                      f" ms  errors {r['errors']}  (Switchyard's HTTP path with model-1.onnx, no Python)", flush=True)
        for s in servers.values():
            s.stop()
    table = out["load"]
    # Per-request overhead at c=1: the client's median latency less the median run() in process.
    out["overhead_us"] = {name: table[name]["1"]["p50_ms"] * 1e3 - run_us["median_us"] for name in servers}
    # ... and the part of Switchyard's that the Python hook adds to its HTTP path (the ONNX
    # model-1's own run, a few microseconds, is counted as HTTP path here).
    out["python_hook_beyond_http_us"] = out["overhead_us"]["switchyard"] - table["switchyard_onnx"]["1"]["p50_ms"] * 1e3


def native(args, results):
    """The Rust model-1 plugin against the ONNX model-1 hook, one server, interleaved rounds."""
    library = ROOT / "target" / "release" / "libswitchyard_example_linear.so"
    if not library.exists():
        raise SystemExit("bench: build the plugin first: cargo build --release -p switchyard-example-linear")
    code = Path(tempfile.mkdtemp(prefix="switchyard-bench-native-"))
    shutil.copy(library, code / "plugin.so")
    model = {"path": str(ROOT / "models" / "model-1")}
    plugin = {"model": model, "code_configuration": {"code": str(code), "scoring_script": "plugin.so"}}
    sy = Switchyard()
    try:
        sy.deploy("onnx", "model-1", instances=2)
        sy.deploy("native", None, instances=2, spec=plugin)
        sy.deploy("isolated", None, instances=2, spec=dict(plugin, isolation="process"))
        sample = ROOT / "sample-requests" / "model-1.json"
        rounds = 1 if args.quick else 2
        table = {}
        for c in (1, 32):
            for _ in range(rounds):
                for name in ("onnx", "native", "isolated"):
                    r = wrk(sy.url(), sample, c, args.seconds, key=sy.key, pin=name)
                    assert r["errors"] == 0, (name, c, r)
                    table.setdefault(name, {}).setdefault(str(c), []).append(r)
                    print(f"  {name:9} c={c:<3} {r['rps']:>9.0f} req/s  p50 {r['p50_ms']:.3f}  p99 {r['p99_ms']:.3f} ms",
                          flush=True)
    finally:
        sy.stop()
        shutil.rmtree(code, ignore_errors=True)
    best = {n: {c: max(rs, key=lambda r: r["rps"]) for c, rs in by_c.items()} for n, by_c in table.items()}
    out = {
        "table": best,
        "native_vs_onnx_rps_c32": best["native"]["32"]["rps"] / best["onnx"]["32"]["rps"],
        "isolated_vs_native_rps_c32": best["isolated"]["32"]["rps"] / best["native"]["32"]["rps"],
        # What the worker process adds to one request: a frame each way through two pipes and
        # a context switch, seen as the c=1 median latency over the in-process plugin's.
        "isolated_cost_per_request_us": (best["isolated"]["1"]["p50_ms"] - best["native"]["1"]["p50_ms"]) * 1e3,
    }
    results["native"] = out
    print(f"  native plugin / ONNX model-1 at c=32: {out['native_vs_onnx_rps_c32']:.2f}x req/s; "
          f"isolation: process / in process: {out['isolated_vs_native_rps_c32']:.2f}x req/s, "
          f"+{out['isolated_cost_per_request_us']:.0f} us per request at c=1 (p50)", flush=True)


def p99_pair(sy, body, seconds, rounds, change=None, c=16):
    """Median over `rounds` of (steady p99, p99 with `change` running in a thread)."""
    steady, changed = [], []
    for _ in range(rounds):
        steady.append(wrk(sy.url(), body, c, seconds, key=sy.key))
        stop = threading.Event()
        t = threading.Thread(target=change, args=(stop,)) if change else None
        if t:
            t.start()
        changed.append(wrk(sy.url(), body, c, seconds, key=sy.key))
        stop.set()
        if t:
            t.join()
    med = lambda rs, k: statistics.median(r[k] for r in rs)
    return {
        "steady_p99_ms": med(steady, "p99_ms"), "changed_p99_ms": med(changed, "p99_ms"),
        "steady_rps": med(steady, "rps"), "changed_rps": med(changed, "rps"),
        "errors": sum(r["errors"] for r in steady + changed),
        "rounds": {"steady": steady, "changed": changed},
    }


def scenarios(args, results):
    out = results.setdefault("scenarios", {})
    rounds = 2 if args.quick else 5
    seconds = min(args.seconds, 3)
    # p99 is measured with one scoring worker and 16 connections: wrk has the other core to
    # itself, so the p99 shows the server, not the OS juggling three busy threads on two cores
    # (at saturation, p99 flips between ~0.5 and ~4 ms from run to run, floor included).
    out["p99_method"] = {"workers": 1, "concurrency": 16, "seconds": seconds, "rounds": rounds, "statistic": "median of rounds"}
    # 1. Mirror 50% to a shadow whose run is ~10x model-1's (test/slow with x00 = 0.05).
    sy = Switchyard(workers=1)
    sy.deploy("blue", "model-1", instances=2, all_traffic=True)
    sy.deploy("shadow", "test/slow", instances=1)
    body = body_file(2, x00=0.05)

    copies = {"scored": 0, "dropped": 0, "pairs": 0, "agreement_ratio": []}

    def mirror_on(stop):
        sy.patch_endpoint({"mirror_traffic": {"shadow": 50}})
        stop.wait()
        c = http("GET", sy.admin + "/v1/deployments/shadow/comparison")[1]
        copies["pairs"] += c["pairs"]
        copies["dropped"] += c["dropped"]
        copies["agreement_ratio"].append(c["agreement_ratio"])
        sy.patch_endpoint({"mirror_traffic": {"shadow": 0}})

    r = p99_pair(sy, body, seconds, rounds, mirror_on)
    r["copies"] = copies
    out["mirror_50"] = r
    print(f"  mirror 50% to a 10x slower shadow: live p99 {r['steady_p99_ms']:.3f} -> {r['changed_p99_ms']:.3f} ms"
          f" (copies compared {copies['pairs']}, dropped {copies['dropped']})", flush=True)

    # 2. p99 during changes.
    sy.deploy("green", "model-1", instances=2)
    sample = ROOT / "sample-requests" / "model-1.json"

    def flips(stop):
        i = 0
        while not stop.is_set():
            sy.patch_endpoint({"traffic": {"blue": 100} if i % 2 else {"green": 100}})
            i += 1
            time.sleep(0.1)
        sy.patch_endpoint({"traffic": {"blue": 100}})

    def scaling(stop):
        while not stop.is_set():
            for n in (3, 2):
                sy.patch_deployment("blue", {"instance_count": n})
                sy.wait("blue")
                time.sleep(0.1)

    def creating(stop):
        i = 0
        while not stop.is_set():
            sy.deploy(f"extra-{i}", "model-1")
            time.sleep(0.1)
            sy.delete(f"extra-{i}")
            i += 1
            time.sleep(0.1)

    for name, fn in (("traffic_flip", flips), ("scale_2_3_2", scaling), ("create_deployment", creating)):
        r = p99_pair(sy, sample, seconds, rounds, fn)
        out[f"during_{name}"] = r
        print(f"  p99 during {name}: {r['steady_p99_ms']:.3f} -> {r['changed_p99_ms']:.3f} ms (errors {r['errors']})", flush=True)

    # 3. Create -> ready for model-1 (server-side load time and the client's view).
    server_ms, client_ms = [], []
    for i in range(20):
        t = time.perf_counter()
        status, body = http("PUT", f"{sy.admin}/v1/deployments/ready-{i}", {"model": {"path": str(ROOT / "models" / "model-1")}})
        assert status == 201, body
        d = sy.wait(f"ready-{i}", poll=0.0005)
        client_ms.append((time.perf_counter() - t) * 1e3)
        server_ms.append(d["load_ms"])
        sy.delete(f"ready-{i}")
    out["create_to_ready_ms"] = {"server_median": statistics.median(server_ms), "server_max": max(server_ms),
                                 "client_median": statistics.median(client_ms), "client_max": max(client_ms)}
    print(f"  create->ready model-1: median {statistics.median(server_ms):.2f} ms in the server, "
          f"{statistics.median(client_ms):.2f} ms seen by the client", flush=True)

    # 4. Resident memory per added deployment.
    for model in ("model-1", "model-2"):
        before = sy.rss()
        for i in range(5):
            sy.deploy(f"mem-{model}-{i}", model)
        time.sleep(0.2)
        per = (sy.rss() - before) / 5
        out[f"rss_per_deployment_{model}_mib"] = per / 2**20
        print(f"  RSS per added {model} deployment: {per / 2**20:.2f} MiB", flush=True)
    sy.stop()

    # 5. model-2 on 64-row requests, 1 vs 2 instances.
    rows64 = body_file(64)
    res = {}
    for n in (1, 2):
        sy = Switchyard()
        sy.deploy("model-two", "model-2", instances=n, all_traffic=True)
        res[str(n)] = statistics.median([wrk(sy.url(), rows64, 16, seconds, key=sy.key)["rps"] for _ in range(rounds)])
        sy.stop()
    res["ratio"] = res["2"] / res["1"]
    out["model2_64rows_rps"] = res
    print(f"  model-2 64-row req/s: 1 instance {res['1']:.0f}, 2 instances {res['2']:.0f} ({res['ratio']:.2f}x)", flush=True)


def oip_rows(rows, floats):
    """`rows` rows of 10 features: the seed's sample rows (small integers), or full-precision
    floats (what real features look like in JSON: ~18 characters a number), fixed seed."""
    if not floats:
        seed = [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [10, 9, 8, 7, 6, 5, 4, 3, 2, 1]]
        return [list(seed[i % 2]) for i in range(rows)]
    import random
    rng = random.Random(7)
    # float32-exact values, so /score and v2 score the very same numbers.
    import struct
    f32 = lambda x: struct.unpack("<f", struct.pack("<f", x))[0]
    return [[f32(rng.uniform(0, 10)) for _ in range(10)] for _ in range(rows)]


def oip_bodies(rows, floats):
    """The /score JSON body and the v2 binary infer body (FP32, model-2) for the same rows;
    returns both files and the v2 JSON header's length."""
    import struct
    data = oip_rows(rows, floats)
    tag = "floats" if floats else "sample"
    score = Path(tempfile.gettempdir()) / f"switchyard-bench-oip-{rows}-{tag}.json"
    score.write_text(json.dumps({"data": data}))
    values = [v for row in data for v in row]
    header = json.dumps({"inputs": [{"name": "X", "shape": [rows, 10], "datatype": "FP32",
                                     "parameters": {"binary_data_size": 4 * len(values)}}],
                         "parameters": {"binary_data_output": True}}).encode()
    v2 = Path(tempfile.gettempdir()) / f"switchyard-bench-oip-{rows}-{tag}.bin"
    v2.write_bytes(header + struct.pack(f"<{len(values)}f", *values))
    return score, v2, len(header)


def oip(args, results):
    """model-2, 64-row requests: v2 binary infer against /score JSON, same server, alternated
    round by round; with the seed's integer rows and with full-precision float rows."""
    seconds, rounds = args.seconds, (1 if args.quick else 3)
    sy = Switchyard()
    sy.deploy("model-two", "model-2", all_traffic=True)
    infer = sy.scoring + "/v2/models/model-2/infer"
    out = {}
    for floats in (False, True):
        score_body, v2_body, header_length = oip_bodies(64, floats)
        score, v2 = [], []
        for _ in range(rounds):
            score.append(wrk(sy.url(), score_body, 16, seconds, key=sy.key))
            v2.append(wrk(infer, v2_body, 16, seconds, key=sy.key, header_length=header_length))
        assert all(r["errors"] == 0 for r in score + v2), (score, v2)
        r = {"score_json_rps": statistics.median(x["rps"] for x in score),
             "v2_binary_rps": statistics.median(x["rps"] for x in v2),
             "score_json_p50_ms": statistics.median(x["p50_ms"] for x in score),
             "v2_binary_p50_ms": statistics.median(x["p50_ms"] for x in v2),
             "body_bytes": {"score_json": score_body.stat().st_size, "v2_binary": v2_body.stat().st_size}}
        r["ratio"] = r["v2_binary_rps"] / r["score_json_rps"]
        kind = "float_rows" if floats else "sample_rows"
        out[kind] = r
        print(f"  model-2 64-row ({kind}) req/s: /score JSON {r['score_json_rps']:.0f}, v2 binary "
              f"{r['v2_binary_rps']:.0f} ({r['ratio']:.2f}x); p50 {r['score_json_p50_ms']:.2f} vs "
              f"{r['v2_binary_p50_ms']:.2f} ms; bodies {r['body_bytes']['score_json']} vs "
              f"{r['body_bytes']['v2_binary']} bytes", flush=True)
    sy.stop()
    out["ratio"] = out["float_rows"]["ratio"]
    results["oip"] = out


def manycore(args, results):
    rows64 = body_file(64)
    cores = os.cpu_count() or 2
    res = {}
    for n in (1, 2, 4, 8, 16):
        sy = Switchyard(workers=cores)
        sy.deploy("model-two", "model-2", instances=n, all_traffic=True)
        r = wrk(sy.url(), rows64, 64, args.seconds, key=sy.key, threads=max(1, cores // 4))
        res[str(n)] = r
        print(f"  model-2 64-row, {n:>2} instance(s): {r['rps']:>8.0f} req/s  p99 {r['p99_ms']:.2f} ms", flush=True)
        sy.stop()
    results["manycore"] = {"cores": cores, "model2_64rows": res}


# --- report -------------------------------------------------------------------------------


def report(results):
    t = results.get("throughput", {})
    lines = []
    for model, table in t.items():
        lines.append(f"\n{model}: requests/s (p99 ms) and ratios")
        lines.append(f"{'c':>4} {'switchyard':>18} {'floor':>18} {'python':>18} {'sy/floor':>9} {'sy/python':>10}")
        for c in map(str, CONCURRENCY):
            row = {n: table.get(n, {}).get(c) for n in ("switchyard", "floor", "python")}
            cell = lambda r: f"{r['rps']:>9.0f} ({r['p99_ms']:>6.2f})" if r else f"{'-':>18}"
            ratio = lambda a, b: f"{a['rps'] / b['rps']:.2f}" if a and b else "-"
            lines.append(f"{c:>4} {cell(row['switchyard'])} {cell(row['floor'])} {cell(row['python'])} "
                         f"{ratio(row['switchyard'], row['floor']):>9} {ratio(row['switchyard'], row['python']):>10}")
    ps = results.get("python_sample")
    if ps and "load" in ps:
        for key, what in (("load", "each server's default logging (the script's INFO lines dropped)"),
                          ("load_info", "the script's INFO lines written by both")):
            if key not in ps:
                continue
            lines.append(f"\nAzure sample score.py (model-1 pickle), {what}: requests/s (p99 ms) and ratios")
            lines.append(f"{'c':>4} {'switchyard':>18} {'azure server':>18} {'req/s ratio':>12} {'p99 ratio':>10}")
            for c in map(str, SAMPLE_CONCURRENCY):
                a, b = ps[key]["switchyard"].get(c), ps[key]["azure"].get(c)
                if a and b:
                    lines.append(f"{c:>4} {a['rps']:>9.0f} ({a['p99_ms']:>6.2f}) {b['rps']:>9.0f} ({b['p99_ms']:>6.2f}) "
                                 f"{a['rps'] / b['rps']:>12.2f} {a['p99_ms'] / b['p99_ms']:>10.2f}")
        for key in ("load", "load_info"):
            for c in map(str, SAMPLE_CONCURRENCY):
                for n in ("switchyard", "azure"):
                    cpu = ps.get(key, {}).get(n, {}).get(c, {}).get("cpu_us_per_request")
                    if cpu:
                        top = sorted(((v, k) for k, v in cpu.items() if v >= 1 and k != "workers (all)"), reverse=True)
                        lines.append(f"CPU us/request, {key} c={c} {n}: workers (all) {cpu['workers (all)']}; "
                                     + ", ".join(f"{k} {v}" for v, k in top[:8]))
        run = ps["run_in_process_us"]["median_us"]
        lines.append(f"run() in process: {run:.1f} us (median); c=1 median latency less run(): "
                     + ", ".join(f"{n} {v:.0f} us" for n, v in ps["overhead_us"].items()))
        onnx = ps["load"]["switchyard_onnx"]["1"]["p50_ms"] * 1e3
        lines.append(f"Switchyard's HTTP path alone (model-1.onnx, c=1 median): {onnx:.0f} us; the Python hook adds "
                     f"{ps['python_hook_beyond_http_us']:.0f} us to it besides run()")
        for n, m in ps["idle_memory"].items():
            rss = statistics.mean(x["rss_mib"] for x in m["per_instance"])
            pss = statistics.mean(x["pss_mib"] for x in m["per_instance"])
            lines.append(f"idle per Python instance, {n}: RSS {rss:.1f} MiB, PSS {pss:.1f} MiB"
                         f" ({len(m['per_instance'])} instances; parent RSS {m['parent']['rss_mib']:.1f} MiB)")
    s = results.get("scenarios", {})
    targets = []
    m1 = t.get("model-1", {})
    if m1.get("python", {}).get("32"):
        r = m1["switchyard"]["32"]["rps"] / m1["python"]["32"]["rps"]
        targets.append(("model-1 c=32 vs Python server", f"{r:.1f}x", ">= 20x", r >= 20))
    if m1.get("floor", {}).get("32"):
        r = m1["switchyard"]["32"]["rps"] / m1["floor"]["32"]["rps"]
        targets.append(("model-1 c=32 vs floor", f"{r:.1%}", ">= 85%", r >= 0.85))
    if "mirror_50" in s:
        r = s["mirror_50"]["changed_p99_ms"] / s["mirror_50"]["steady_p99_ms"] - 1
        targets.append(("live p99 change with mirror 50%", f"{r:+.1%}", "<= +5%", r <= 0.05))
    for k in ("traffic_flip", "scale_2_3_2", "create_deployment"):
        if f"during_{k}" in s:
            x = s[f"during_{k}"]
            r = x["changed_p99_ms"] / x["steady_p99_ms"]
            targets.append((f"p99 during {k} / steady", f"{r:.2f}x", "<= 1.5x", r <= 1.5))
    if "oip" in results:
        r = results["oip"]["ratio"]
        targets.append(("model-2 64-row, v2 binary vs /score JSON", f"{r:.2f}x", "> 1.0x", r > 1.0))
    if "model2_64rows_rps" in s:
        r = s["model2_64rows_rps"]["ratio"]
        targets.append(("model-2 64-row, 2 vs 1 instance", f"{r:.2f}x", ">= 1.8x", r >= 1.8))
    if "create_to_ready_ms" in s:
        r = s["create_to_ready_ms"]["server_median"]
        targets.append(("create -> ready (model-1)", f"{r:.1f} ms", "<= 50 ms", r <= 50))
    if targets:
        lines.append("\ntargets")
        for name, got, want, ok in targets:
            lines.append(f"  {'PASS' if ok else 'MISS'}  {name:36} {got:>10}  (target {want})")
    text = "\n".join(lines)
    print(text)
    results["targets"] = [{"name": n, "measured": g, "target": w, "pass": ok} for n, g, w, ok in targets]
    return text


def plot(results, path):
    """req/s and p99 against concurrency for the three servers (model-1), as an SVG."""
    table = results.get("throughput", {}).get("model-1")
    if not table:
        return
    colors = {"switchyard": "#1f77b4", "floor": "#2ca02c", "python": "#d62728"}
    w, h, pad = 460, 300, 50
    xs = {c: pad + i * (w - 2 * pad) / (len(CONCURRENCY) - 1) for i, c in enumerate(CONCURRENCY)}
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * w}" height="{h + 40}" font-family="sans-serif" font-size="12">',
             '<rect width="100%" height="100%" fill="white"/>']
    for panel, (key, title) in enumerate((("rps", "requests/s (model-1, batch 2)"), ("p99_ms", "p99 latency, ms"))):
        ox = panel * w
        top = max(r[key] for s in table.values() for r in s.values()) * 1.1
        y = lambda v: h - pad + 10 - (h - 2 * pad) * v / top
        parts.append(f'<text x="{ox + w / 2}" y="20" text-anchor="middle" font-weight="bold">{title}</text>')
        parts.append(f'<line x1="{ox + pad}" y1="{h - pad + 10}" x2="{ox + w - pad}" y2="{h - pad + 10}" stroke="black"/>')
        parts.append(f'<line x1="{ox + pad}" y1="{pad - 10}" x2="{ox + pad}" y2="{h - pad + 10}" stroke="black"/>')
        for frac in (0, 0.5, 1):
            v = top * frac / 1.1
            parts.append(f'<text x="{ox + pad - 4}" y="{y(v) + 4}" text-anchor="end">{v:,.0f}</text>' if key == "rps"
                         else f'<text x="{ox + pad - 4}" y="{y(v) + 4}" text-anchor="end">{v:.2f}</text>')
        for c, x in xs.items():
            parts.append(f'<text x="{ox + x}" y="{h - pad + 26}" text-anchor="middle">c={c}</text>')
        for name, series in table.items():
            pts = [(ox + xs[int(c)], y(r[key])) for c, r in series.items()]
            parts.append(f'<polyline fill="none" stroke="{colors[name]}" stroke-width="2" points="'
                         + " ".join(f"{a:.1f},{b:.1f}" for a, b in pts) + '"/>')
            parts += [f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3" fill="{colors[name]}"/>' for a, b in pts]
    for i, (name, color) in enumerate(colors.items()):
        if name in table:
            parts.append(f'<rect x="{60 + i * 120}" y="{h + 18}" width="12" height="12" fill="{color}"/>'
                         f'<text x="{76 + i * 120}" y="{h + 29}">{name}</text>')
    parts.append("</svg>")
    path.write_text("\n".join(parts))


def machine():
    info = {"cpus": os.cpu_count(), "platform": sys.platform}
    try:
        model = [l for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("model name")]
        info["cpu"] = model[0].split(":", 1)[1].strip() if model else "unknown"
        info["memory_gib"] = round(int(Path("/proc/meminfo").read_text().split()[1]) / 2**20, 1)
    except OSError:
        pass
    return info


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="2-second points, one round per scenario")
    p.add_argument("--seconds", type=int, help="seconds per measurement (default 5, quick 2)")
    p.add_argument("--no-python", action="store_true", help="skip the Azure ML inference server baseline")
    p.add_argument("--only", choices=["throughput", "scenarios", "sample", "native", "oip"], help="run one part")
    p.add_argument("--sample-logging", choices=["both", "default"], default="both",
                   help="--only sample: both logging settings (default), or each server's default logging only")
    p.add_argument("--manycore", action="store_true", help="model-2 64-row throughput against instances 1..16")
    p.add_argument("--out", type=Path, help="raw results (default: benches/results/load-results.json, with --only "
                   "sample python-sample-results.json)")
    p.add_argument("--merge", action="store_true", help="keep the other part's results already in --out")
    args = p.parse_args()
    args.seconds = args.seconds or (2 if args.quick else 5)
    args.out = args.out or RESULTS / {"sample": "python-sample-results.json", "native": "native-results.json",
                                      "oip": "oip-results.json"}.get(args.only, "load-results.json")
    if shutil.which("wrk") is None:
        raise SystemExit("bench: wrk is not installed (benches/run.sh installs it)")
    if not args.no_python and not args.manycore and args.only not in ("sample", "native", "oip") \
            and not (VENV / "bin" / "azmlinfsrv").exists():
        raise SystemExit("bench: .bench/venv is missing (benches/run.sh creates it), or pass --no-python")
    if not args.no_python and not args.manycore and args.only in (None, "sample") \
            and not (SAMPLE_VENV / "bin" / "azmlinfsrv").exists():
        raise SystemExit("bench: .bench/sample-venv is missing (benches/run.sh creates it), or pass --no-python")
    results = {"machine": machine(), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "seconds_per_point": args.seconds, "load_generator": "wrk 4 (1 thread, on the same machine)"}
    if args.merge and args.out.exists():
        old = json.loads(args.out.read_text())
        results.update({k: v for k, v in old.items()
                        if k in ("throughput", "scenarios", "python_sample", "oip")
                        and k != {"sample": "python_sample"}.get(args.only, args.only)})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.only == "native":
        print("native plugins: the Rust model-1 plugin against the ONNX model-1 hook", flush=True)
        native(args, results)
    elif args.manycore:
        manycore(args, results)
        args.out = args.out.with_name("manycore-results.json")
    else:
        if args.only in (None, "throughput"):
            print("throughput", flush=True)
            throughput(args, results)
        if args.only in (None, "sample") and not args.no_python:
            print("the Azure sample's score.py: Switchyard against Azure's inference server", flush=True)
            sample(args, results)
        if args.only in (None, "scenarios"):
            print("scenarios", flush=True)
            scenarios(args, results)
        if args.only in (None, "oip"):
            print("Open Inference Protocol v2: binary infer against /score JSON", flush=True)
            oip(args, results)
        if args.only == "oip":
            args.out.write_text(json.dumps(results, indent=2))
            return
        report(results)
        plot(results, args.out.with_name("load-plot.svg"))
    args.out.write_text(json.dumps(results, indent=2))
    print(f"\nraw results: {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")


if __name__ == "__main__":
    main()
