#!/usr/bin/env python3
"""Mirror share and mirror cost, in one short run (uses benches/load.py's helpers and wrk).

  * cost: live p99 and req/s with and without a mirror, interleaved rounds (steady, then with
    the mirror on), 1 scoring worker and 16 connections as in load.py's scenarios: a 10% mirror
    to a model-1 twin (a cheap shadow) and load.py's 50% mirror to a ~10x slower shadow;
  * share under CPU load: the same 10% mirror while busy-loop processes keep every core busy,
    and the share of requests the shadow actually scored.

Copies are counted from the metrics (scored = switchyard_requests_total{role="mirror"},
dropped = switchyard_mirror_dropped_total), which every version of the server exports.

    python3 benches/mirror_share.py [--bin target/release/switchyard] [--rounds 3] [--seconds 3]
"""

import argparse
import importlib.util
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
spec = importlib.util.spec_from_file_location("load", HERE / "load.py")
load = importlib.util.module_from_spec(spec)
spec.loader.exec_module(load)


def copies(sy, name):
    """(scored, dropped) copies for shadow `name`, from the metrics."""
    scored = dropped = 0.0
    for line in load.http("GET", sy.admin + "/metrics")[1].splitlines():
        if f'deployment="{name}"' not in line:
            continue
        if line.startswith("switchyard_requests_total{") and 'role="mirror"' in line:
            scored += float(line.rsplit(" ", 1)[1])
        elif line.startswith("switchyard_mirror_dropped_total{"):
            dropped += float(line.rsplit(" ", 1)[1])
    return scored, dropped


def settle(sy, name):
    last = None
    for _ in range(100):
        now = copies(sy, name)
        if now == last:
            return now
        last = now
        time.sleep(0.2)
    return last


def cost(sy, name, percent, body, rounds, seconds):
    steady, mirrored = [], []
    scored = dropped = 0.0
    for _ in range(rounds):
        steady.append(load.wrk(sy.url(), body, 16, seconds, key=sy.key))
        before = settle(sy, name)
        sy.patch_endpoint({"mirror_traffic": {name: percent}})
        r = load.wrk(sy.url(), body, 16, seconds, key=sy.key)
        sy.patch_endpoint({"mirror_traffic": {name: 0}})
        mirrored.append(r)
        after = settle(sy, name)
        scored += after[0] - before[0]
        dropped += after[1] - before[1]
    med = lambda rs, k: statistics.median(x[k] for x in rs)
    requests = sum(x["requests"] for x in mirrored)
    return {
        "steady_p99_ms": med(steady, "p99_ms"), "mirror_p99_ms": med(mirrored, "p99_ms"),
        "steady_rps": med(steady, "rps"), "mirror_rps": med(mirrored, "rps"),
        "mirrored_requests": requests, "copies_scored": scored, "copies_dropped": dropped,
        "scored_share_of_requests": scored / max(requests, 1),
        "errors": sum(x["errors"] for x in steady + mirrored),
        "rounds": {"steady": [x["p99_ms"] for x in steady], "mirror": [x["p99_ms"] for x in mirrored]},
    }


def burners(n, seconds):
    code = f"import time\nt=time.time()+{seconds}\nwhile time.time()<t:\n    pass\n"
    return [subprocess.Popen([sys.executable, "-c", code]) for _ in range(n)]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", type=Path, default=load.BIN)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=int, default=3)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    load.BIN = args.bin.resolve()
    out = {"bin": str(load.BIN)}

    sy = load.Switchyard(workers=1)
    sy.deploy("blue", "model-1", instances=2, all_traffic=True)
    sy.deploy("twin", "model-1", instances=1)
    sy.deploy("slow", "test/slow", instances=1)
    sample = load.ROOT / "sample-requests" / "model-1.json"

    r = cost(sy, "twin", 10, sample, args.rounds, args.seconds)
    out["mirror_10_model1"] = r
    print(f"10% to a model-1 twin: live p99 {r['steady_p99_ms']:.3f} -> {r['mirror_p99_ms']:.3f} ms, "
          f"req/s {r['steady_rps']:.0f} -> {r['mirror_rps']:.0f}; scored {r['copies_scored']:.0f} "
          f"({100 * r['scored_share_of_requests']:.2f}% of {r['mirrored_requests']} requests), "
          f"dropped {r['copies_dropped']:.0f}", flush=True)

    slow_body = load.body_file(2, x00=0.05)
    r = cost(sy, "slow", 50, slow_body, args.rounds, args.seconds)
    out["mirror_50_slow"] = r
    print(f"50% to a 10x slower shadow: live p99 {r['steady_p99_ms']:.3f} -> {r['mirror_p99_ms']:.3f} ms, "
          f"req/s {r['steady_rps']:.0f} -> {r['mirror_rps']:.0f}; scored {r['copies_scored']:.0f}, "
          f"dropped {r['copies_dropped']:.0f}", flush=True)

    # Share under CPU load: every core (plus one) busy with other processes, 4 connections.
    cores = os.cpu_count() or 2
    procs = burners(cores + 1, args.seconds * 2 + 10)
    try:
        time.sleep(0.5)
        before = settle(sy, "twin")
        sy.patch_endpoint({"mirror_traffic": {"twin": 10}})
        w = load.wrk(sy.url(), sample, 4, args.seconds * 2, key=sy.key)
        sy.patch_endpoint({"mirror_traffic": {"twin": 0}})
        during = copies(sy, "twin")
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    after = settle(sy, "twin")
    scored, dropped = during[0] - before[0], after[1] - before[1]
    out["share_under_cpu_load"] = {"requests": w["requests"], "rps": w["rps"], "copies_scored_under_load": scored,
                                   "copies_dropped": dropped, "scored_share_of_requests": scored / max(w["requests"], 1)}
    print(f"10% mirror with {cores + 1} busy-loop processes: scored {scored:.0f} of {w['requests']} requests "
          f"({100 * scored / max(w['requests'], 1):.2f}%), dropped {dropped:.0f}", flush=True)
    sy.stop()
    if args.out:
        args.out.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    threading.current_thread().name = "main"
    main()
