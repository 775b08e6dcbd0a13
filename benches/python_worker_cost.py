"""Where a Switchyard Python worker's CPU goes per request, in one process, without the
wake-ups: the sample's run(), json.dumps of its answer, the worker's Runner.score (decode,
run, reply, write the answer frame), the frame read and parse from a pipe, and the same with
the script's two logging.info lines written (INFO on, stderr to /dev/null). CPU time
(time.process_time), so other processes on the machine do not count.

  .bench/sample-venv/bin/python benches/python_worker_cost.py [calls]

Compare with the worker's CPU per request under load (benches/load.py --only sample prints it
by process): the difference is what sleeping and waking between requests costs.
"""
import logging
import os
import struct
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "runtime" / "python"))
os.environ["AZUREML_MODEL_DIR"] = str(ROOT / "examples/azure-sample/model-1")
os.environ["AML_APP_ROOT"] = str(ROOT / "examples/azure-sample/model-1/onlinescoring")
os.environ["AZUREML_ENTRY_SCRIPT"] = "score.py"
warnings.simplefilter("ignore")
import switchyard_worker as w  # noqa: E402

N = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
module = w.load_entry_script()
module.init()
runner = w.Runner(module)
w.OUT_FD = os.open(os.devnull, os.O_WRONLY)
body = (ROOT / "examples/azure-sample/managed/sample/sample-request.json").read_bytes()
ct = b"application/json"
payload = struct.pack(">H", len(ct)) + ct + struct.pack(">I", 0) + body
frame = struct.pack(">IB", len(payload) + 1, ord("R")) + payload
raw = body.decode()
r_fd, w_fd = os.pipe()
reader = w.FrameReader(r_fd)
run_frame, block_head = struct.Struct(">H"), struct.Struct(">I")


def through_pipe():
    os.write(w_fd, frame)
    kind, p = reader.frame()
    (ct_len,) = run_frame.unpack_from(p)
    content_type = p[2 : 2 + ct_len].decode("latin-1")
    at = 2 + ct_len
    (block_len,) = block_head.unpack_from(p, at)
    at += 4
    runner.score(content_type, w.header_dict(p[at : at + block_len]), p[at + block_len :])


def bench(label, fn):
    for _ in range(N // 10):
        fn()
    start = time.process_time()
    for _ in range(N):
        fn()
    us = (time.process_time() - start) / N * 1e6
    print(f"{label:58} {us:7.1f} us")
    return us


bench("run()", lambda: module.run(raw))
bench("run() + json.dumps", lambda: w.json.dumps(module.run(raw)).encode())
bench("Runner.score: decode, run(), answer frame written", lambda: runner.score("application/json", {}, body))
bench("+ the run frame written to and read from a pipe, parsed", through_pipe)
logging.basicConfig(level=logging.INFO, stream=open(os.devnull, "w"), format="%(levelname)s %(name)s: %(message)s", force=True)
bench("+ the script's 2 logging.info lines written (INFO on)", through_pipe)
