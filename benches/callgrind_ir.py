#!/usr/bin/env python3
"""Instructions per request (callgrind Ir) of one server binary: model-1, 2 instances (Switchyard)
or the floor, wrk at concurrency C for SECONDS after a warm-up, counters zeroed before and
dumped after. A measure of the hot path's cost that the machine's load does not change (wall
clock A/B rounds on a shared VM spread +-20%).

usage: python3 benches/callgrind_ir.py NAME BIN C SECONDS
       (needs valgrind and wrk; a NAME starting with "floor" runs the bare-handler floor)
prints: NAME: N requests, errors E, Ir I, Ir per request R   (raw dump: /tmp/cg-NAME.out*)"""
import glob
import os
import subprocess
import sys
import time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
import load  # noqa

name, binpath, c, secs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
out = f"/tmp/cg-{name}.out"
for f in glob.glob(out + "*"):
    os.remove(f)
vg = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--dump-instr=no"]
real_popen = subprocess.Popen


def popen(args, *a, **kw):
    if args and str(args[0]) == binpath:
        args = vg + [str(x) for x in args]
    return real_popen(args, *a, **kw)


subprocess.Popen = popen
sample = load.ROOT / "sample-requests" / "model-1.json"
if name.startswith("floor"):
    load.FLOOR = Path(binpath)
    s = load.Floor("model-1")
else:
    load.BIN = Path(binpath)
    s = load.Switchyard(workers=2)
    s.deploy("bench", "model-1", instances=2, all_traffic=True)
subprocess.Popen = real_popen
pid = s.proc.pid
body = sample.read_bytes()
hdr = {"Content-Type": "application/json"}
if s.key:
    hdr["Authorization"] = "Bearer " + s.key
t = time.time()
ok = 0
while ok < 40:
    st, _ = load.http("POST", s.url(), body, hdr, timeout=600)
    ok += st == 200
print(f"warm in {time.time()-t:.1f}s", flush=True)
load.wrk(s.url(), sample, c, 5, key=s.key)
subprocess.run(["callgrind_control", "-z", str(pid)], check=True, capture_output=True)
w = load.wrk(s.url(), sample, c, secs, key=s.key)
subprocess.run(["callgrind_control", "-d", str(pid)], check=True, capture_output=True)
s.proc.kill()
s.proc.wait()
ir = 0
for dump in glob.glob(out + "*"):
    for line in open(dump):
        if line.startswith("summary:"):
            ir += int(line.split()[1])
per = ir / w["requests"] if w["requests"] else float("nan")
print(f"{name}: {w['requests']} requests, errors {w['errors']}, Ir {ir}, Ir per request {per:,.0f}", flush=True)
