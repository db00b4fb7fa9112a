#!/usr/bin/env python3
"""Bounded load test of `rkinfer serve` on loopback (Python stdlib only).

Starts the server, runs CLIENTS concurrent streaming chat clients until
REQUESTS requests are done or DEADLINE seconds have passed, and prints
failures, incomplete streams, p50/p95 time to first token, aggregate
generated tokens/s and the server's RSS idle, halfway (caches warm) and after.

  scripts/server-load.py [--bin target/release/rkinfer] [--clients 16]
                         [--requests 64] [--max-tokens 16] [--deadline 300]
"""

import argparse
import http.client
import json
import re
import statistics
import subprocess
import threading
import time

ap = argparse.ArgumentParser()
ap.add_argument("--bin", default="target/release/rkinfer")
ap.add_argument("--model", default="models/SmolLM2-135M-Instruct.Q4_1.gguf")
ap.add_argument("--clients", type=int, default=16)
ap.add_argument("--requests", type=int, default=64)
ap.add_argument("--max-tokens", type=int, default=16)
ap.add_argument("--parallel", type=int, default=4)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--deadline", type=float, default=300)
args = ap.parse_args()

server = subprocess.Popen(
    [args.bin, "serve", "-m", args.model, "--port", "0", "-c", "512", "-t", str(args.threads),
     "--parallel", str(args.parallel), "--queue", str(args.clients)],
    stderr=subprocess.PIPE, text=True)
port = None
for line in server.stderr:
    m = re.search(r"http://127\.0\.0\.1:(\d+)", line)
    if m:
        port = int(m.group(1))
        break
assert port, "server did not start"
threading.Thread(target=lambda: [None for _ in server.stderr], daemon=True).start()


def rss_kib():
    with open(f"/proc/{server.pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


rss_mid = []
lock = threading.Lock()
issued = 0
ttfts, failures, incomplete, tokens = [], [], 0, 0
start = time.monotonic()


def client(i):
    global issued, incomplete, tokens
    while True:
        with lock:
            if issued >= args.requests or time.monotonic() - start > args.deadline:
                return
            issued += 1
            n = issued
            if n == args.requests // 2:
                rss_mid.append(rss_kib())
        body = json.dumps({
            "messages": [{"role": "user", "content": f"Write a sentence about the number {n}."}],
            "max_tokens": args.max_tokens, "temperature": 0.7, "seed": n, "stream": True,
            "stream_options": {"include_usage": True}})
        t0 = time.monotonic()
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            c.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
            r = c.getresponse()
            if r.status != 200:
                failures.append(f"status {r.status}: {r.read()[:200]!r}")
                continue
            first, done, usage = None, False, None
            for raw in r:
                line = raw.decode().strip()
                if not line.startswith("data: "):
                    continue
                data = line[6:]
                if data == "[DONE]":
                    done = True
                    break
                j = json.loads(data)
                if "error" in j:
                    failures.append(j["error"]["message"])
                    break
                if j.get("usage") and not j["choices"]:
                    usage = j["usage"]
                if first is None and any(ch["delta"].get("content") for ch in j["choices"]):
                    first = time.monotonic() - t0
            with lock:
                if first is not None:
                    ttfts.append(first)
                if not done or usage is None:
                    incomplete += 1
                else:
                    tokens += usage["completion_tokens"]
            c.close()
        except Exception as e:  # noqa: BLE001 - every failure is counted
            failures.append(repr(e))


rss_before = rss_kib()
threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
for t in threads:
    t.start()
for t in threads:
    t.join()
elapsed = time.monotonic() - start
rss_after = rss_kib()
server.terminate()
server.wait(timeout=30)

q = statistics.quantiles(ttfts, n=20) if len(ttfts) >= 2 else [float("nan")] * 19
print(f"clients {args.clients}, slots {args.parallel}, threads {args.threads}, max_tokens {args.max_tokens}")
print(f"requests {issued}, failed {len(failures)}, incomplete streams {incomplete}, {elapsed:.1f} s")
print(f"time to first token: p50 {statistics.median(ttfts) * 1000:.0f} ms, p95 {q[18] * 1000:.0f} ms")
print(f"aggregate generation: {tokens} tokens, {tokens / elapsed:.1f} tokens/s")
mid = f"{rss_mid[0] / 1024:.1f} MiB at request {args.requests // 2}, " if rss_mid else ""
print(f"server RSS: {rss_before / 1024:.1f} MiB idle, {mid}{rss_after / 1024:.1f} MiB after")
for f in failures[:5]:
    print("failure:", f)
raise SystemExit(1 if failures or incomplete else 0)
