"""A/B of Switchyard builds or settings on the Azure sample's score.py (2 instances, as in
benches/load.py --only sample, no Azure server): points interleaved per round, medians of
req/s, p99 and CPU µs per request (the serve process; its worker processes together).

  python3 benches/sample_ab.py CONFIGS CONCURRENCIES ROUNDS SECONDS
  python3 benches/sample_ab.py '{"before": {"bin": "/other/checkout/target/release/switchyard"}, "after": {}}' 1,8,32 2 4

A config may set "bin" (default target/release/switchyard), "extra" (serve flags), "env"
(the deployment's environment_variables) and "instances" (default 2).
"""
import sys, json, importlib.util, statistics, resource, glob
from pathlib import Path
spec = importlib.util.spec_from_file_location("load", Path(__file__).resolve().parent / "load.py")
L = importlib.util.module_from_spec(spec); spec.loader.exec_module(L)
configs = json.loads(sys.argv[1])  # {"name": {"bin": path, "extra": [...], "env": {...}}}
cs = [int(x) for x in sys.argv[2].split(",")]
rounds = int(sys.argv[3]); secs = int(sys.argv[4])
script = L.SAMPLE / "model-1" / "onlinescoring" / "score.py"
request = L.SAMPLE / "managed" / "sample" / "sample-request.json"
python = L.SAMPLE_VENV / "bin" / "python"
servers = {}; DEFAULT_BIN = str(L.BIN)
for name, cfg in configs.items():
    L.BIN = Path(cfg.get("bin", DEFAULT_BIN))
    sy = L.Switchyard(extra=["--python", str(python)] + cfg.get("extra", []))
    spec_ = {"model": {"path": str(L.SAMPLE / "model-1" / "model")},
             "code_configuration": {"code": str(script.parent), "scoring_script": "score.py"},
             "environment_variables": cfg.get("env", {})}
    sy.deploy("blue", None, instances=cfg.get("instances", 2), mcr=16, all_traffic=True, spec=spec_)
    servers[name] = sy


def sleeps(sy):
    """Voluntary context switches of the server's worker processes, all threads."""
    total = 0
    for child in L.children(sy.proc.pid):
        for status in glob.glob(f"/proc/{child}/task/*/status"):
            try:
                total += sum(int(l.split()[1]) for l in open(status) if l.startswith("voluntary_ctxt_switches"))
            except OSError:
                pass
    return total


def wrk_cpu():
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


res = {}
for r in range(rounds):
    for c in cs:
        for name, sy in servers.items():
            before, slept, client = L.cpu_snapshot(sy), sleeps(sy), wrk_cpu()
            x = L.wrk(sy.url(), request, c, secs, key=sy.key)
            n = max(x["requests"], 1)
            cpu = L.cpu_per_request(before, L.cpu_snapshot(sy), x["requests"])
            res.setdefault((name, c), []).append((x["rps"], x["p99_ms"], cpu["server: (total)"], cpu["workers (all)"],
                                                  (wrk_cpu() - client) * 1e6 / n, (sleeps(sy) - slept) / n))
for (name, c), v in sorted(res.items(), key=lambda kv: (kv[0][1], kv[0][0])):
    med = lambda i: statistics.median(x[i] for x in v)
    print(f"c={c:<3} {name:12} req/s {med(0):7.0f}  p99 {med(1):7.2f} ms  serve {med(2):6.1f} us/req  workers {med(3):6.1f} us/req  wrk {med(4):5.1f} us/req  worker sleeps {med(5):4.2f}/req   runs {[round(x[0]) for x in v]}")
for sy in servers.values(): sy.stop()
