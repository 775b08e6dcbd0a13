#!/usr/bin/env python3
"""Where the CPU goes when model-2 scores 64-row requests with 1 and 2 instances: runs the same
load as the scenario in benches/load.py with `perf record -a` attached and prints the share of
samples per thread name (ONNX Runtime runs on tokio's blocking threads, `tokio-rt-worker`;
`swapper` is idle time). Needs perf (Debian: linux-perf) and root or perf_event_paranoid <= 0.
"""
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import load  # noqa: E402

for n in (1, 2):
    sy = load.Switchyard()
    sy.deploy("model-two", "model-2", instances=n, all_traffic=True)
    data = f"/tmp/switchyard-64rows-{n}.data"
    perf = subprocess.Popen(["perf", "record", "-a", "-F", "999", "-o", data, "--", "sleep", "4"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    r = load.wrk(sy.url(), load.body_file(64), 16, 4, key=sy.key)
    perf.wait()
    sy.stop()
    print(f"{n} instance(s): {r['rps']:.0f} req/s")
    out = subprocess.run(["perf", "report", "-i", data, "--sort", "comm", "--stdio", "-g", "none"],
                         capture_output=True, text=True).stdout
    print("\n".join(l for l in out.splitlines() if l.strip() and not l.startswith("#"))[:1200])
