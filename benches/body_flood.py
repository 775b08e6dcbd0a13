#!/usr/bin/env python3
"""Hostile-client measurements of the scoring plane (issue 9), on loopback only, bounded in time.

  python3 benches/body_flood.py BINARY flood [--clients 120] [--mib 10]
      N concurrent 10 MiB /score bodies against a 1-instance model-1 deployment (admission cap
      2): prints the answers by status, the server's peak RSS (VmHWM) and its RSS 3 s after.
  python3 benches/body_flood.py BINARY trickle [--limit 60]
      one /score body sent a byte a second: prints how long the connection stays open
      (stops waiting after --limit seconds).

BINARY is a built `switchyard`. The server is started on ephemeral ports and killed at the end.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def admin(base, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read() or b"null")


def start(binary, extra):
    p = subprocess.Popen([binary, "serve", "--port", "0", "--admin-port", "0", *extra],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    scoring = admin_url = None
    while scoring is None or admin_url is None:
        line = p.stdout.readline()
        if not line:
            sys.exit("server exited")
        if line.startswith("Scoring plane: "):
            scoring = line.split(": ", 1)[1].strip()
        if line.startswith("Admin plane: "):
            admin_url = line.split(": ", 1)[1].strip()
    threading.Thread(target=lambda: [None for _ in p.stdout], daemon=True).start()
    admin(admin_url, "PUT", "/v1/endpoint", {"name": "flood-ep", "auth_mode": "key"})
    model = os.path.join(ROOT, "models", "model-1")
    admin(admin_url, "PUT", "/v1/deployments/blue", {"name": "blue", "model": {"path": model}, "instance_count": 1})
    for _ in range(600):
        if admin(admin_url, "GET", "/v1/deployments/blue")["provisioning_state"] == "Succeeded":
            break
        time.sleep(0.1)
    admin(admin_url, "PATCH", "/v1/endpoint", {"traffic": {"blue": 100}})
    key = admin(admin_url, "GET", "/v1/endpoint/keys")["primaryKey"]
    host, port = scoring.replace("http://", "").rsplit(":", 1)
    return p, (host, int(port)), key


def rss_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def head(key, length):
    return (f"POST /score HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n").encode()


def flood(binary, clients, mib):
    p, addr, key = start(binary, [])
    row = b"[1,2,3,4,5,6,7,8,9,10],"
    size = mib * 1024 * 1024
    n = (size - len(b'{"data":[]}') - 64) // len(row)
    body = b'{"data":[' + row * n
    body = body[:-1] + b"]}"
    body += b" " * (size - len(body))
    assert len(body) == size
    statuses = {}
    lock = threading.Lock()
    go = threading.Barrier(clients)

    def one():
        status = "error"
        try:
            s = socket.create_connection(addr, timeout=90)
            go.wait()
            s.sendall(head(key, len(body)))
            s.sendall(body)
            first = s.recv(64)
            status = first.split(b" ")[1].decode() if first else "closed"
        except (OSError, threading.BrokenBarrierError) as e:
            # A refused request's connection may be closed while its body is still being sent:
            # read what answer came before the reset.
            status = f"error:{type(e).__name__}"
            try:
                first = s.recv(64)
                if first:
                    status = first.split(b" ")[1].decode()
            except OSError:
                pass
        with lock:
            statuses[status] = statuses.get(status, 0) + 1

    base = rss_kib(p.pid, "VmRSS")
    threads = [threading.Thread(target=one) for _ in range(clients)]
    t0 = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    took = time.time() - t0
    hwm = rss_kib(p.pid, "VmHWM")
    time.sleep(3)
    after = rss_kib(p.pid, "VmRSS")
    p.kill()
    print(json.dumps({"clients": clients, "body_mib": mib, "statuses": statuses, "seconds": round(took, 1),
                      "rss_before_mb": base // 1024, "peak_rss_mb": hwm // 1024, "rss_3s_after_mb": after // 1024}))


def trickle(binary, limit):
    p, addr, key = start(binary, [])
    s = socket.create_connection(addr)
    s.sendall(head(key, 1000))
    s.settimeout(1.0)
    t0 = time.time()
    answer = b""
    while time.time() - t0 < limit:
        try:
            s.sendall(b" ")
        except OSError:
            break
        try:
            got = s.recv(4096)
            if not got:
                break
            answer += got
            if b"\r\n\r\n" in answer:
                break
        except socket.timeout:
            pass
    took = time.time() - t0
    p.kill()
    first = answer.split(b"\r\n", 1)[0].decode() if answer else "(no answer)"
    print(json.dumps({"open_seconds": round(took, 1), "gave_up_at": limit, "answer": first}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("what", choices=["flood", "trickle"])
    ap.add_argument("--clients", type=int, default=120)
    ap.add_argument("--mib", type=int, default=10)
    ap.add_argument("--limit", type=float, default=60)
    a = ap.parse_args()
    if a.what == "flood":
        flood(a.binary, a.clients, a.mib)
    else:
        trickle(a.binary, a.limit)


if __name__ == "__main__":
    main()
