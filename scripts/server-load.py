#!/usr/bin/env python3
"""Bounded load test of `rkinfer serve` (or llama.cpp's llama-server) on
loopback (Python stdlib only).

Starts the server, runs CLIENTS concurrent streaming chat clients for a
warm-up of WARMUP requests, then until REQUESTS requests are done or
DEADLINE seconds have passed, and prints failures, incomplete streams,
p50/p95 time to first token, aggregate generated tokens/s, the server's CPU
time over the run (tokens per CPU second: less noisy than tokens/s on a
shared machine) and its RSS after the warm-up and after the run. Exits non-zero on any failed
request or incomplete stream, or (with --max-rss-growth PCT) if RSS grew by
more than PCT percent across the run.

  scripts/server-load.py [--bin target/release/rkinfer] [--clients 16]
                         [--requests 64] [--warmup 16] [--max-tokens 16]
                         [--parallel 4] [--ctx 512] [--deadline 300]
                         [--max-rss-growth PCT] [--llama-server PATH]
                         [--llama-args ARGS]

--ctx is the context of one slot; llama-server gets --ctx x --parallel
(it divides its context among its slots).
"""

import argparse
import http.client
import json
import os
import re
import socket
import statistics
import subprocess
import threading
import time

ap = argparse.ArgumentParser()
ap.add_argument("--bin", default="target/release/rkinfer")
ap.add_argument("--llama-server", help="run this llama-server instead of rkinfer")
ap.add_argument("--llama-args", default="", help="more llama-server arguments, e.g. '-nr'")
ap.add_argument("--model", default="models/SmolLM2-135M-Instruct.Q4_1.gguf")
ap.add_argument("--clients", type=int, default=16)
ap.add_argument("--requests", type=int, default=64)
ap.add_argument("--warmup", type=int, default=16)
ap.add_argument("--max-tokens", type=int, default=16)
ap.add_argument("--parallel", type=int, default=4)
ap.add_argument("--ctx", type=int, default=512)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--deadline", type=float, default=300)
ap.add_argument("--max-rss-growth", type=float)
args = ap.parse_args()

with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
if args.llama_server:
    cmd = [args.llama_server, "-m", args.model, "--host", "127.0.0.1", "--port", str(port),
           "-c", str(args.ctx * args.parallel), "-np", str(args.parallel), "-t", str(args.threads),
           "--no-webui"] + args.llama_args.split()
else:
    cmd = [args.bin, "serve", "-m", args.model, "--port", str(port), "-c", str(args.ctx),
           "-t", str(args.threads), "--parallel", str(args.parallel), "--queue", str(args.clients)]
server = subprocess.Popen(cmd, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)


def healthy():
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        c.request("GET", "/health")
        return c.getresponse().status == 200
    except OSError:
        return False


for _ in range(600):
    if healthy() or server.poll() is not None:
        break
    time.sleep(0.2)
assert server.poll() is None and healthy(), "server did not start"


def rss_kib():
    with open(f"/proc/{server.pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def cpu_seconds():
    """User + system CPU time of the server process so far (less noisy than
    wall time on a shared machine)."""
    with open(f"/proc/{server.pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Run:
    """One batch of requests spread over the clients."""

    def __init__(self, requests, first_seed):
        self.requests, self.seed = requests, first_seed
        self.lock = threading.Lock()
        self.issued, self.incomplete, self.tokens = 0, 0, 0
        self.ttfts, self.failures = [], []

    def client(self):
        while True:
            with self.lock:
                if self.issued >= self.requests or time.monotonic() - self.start > args.deadline:
                    return
                self.issued += 1
                n = self.seed + self.issued
            self.one(n)

    def one(self, n):
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
                with self.lock:
                    self.failures.append(f"status {r.status}: {r.read()[:200]!r}")
                return
            first, done, usage, deltas = None, False, None, 0
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
                    raise RuntimeError(j["error"]["message"])
                if j.get("usage"):
                    usage = j["usage"]
                if any(ch.get("delta", {}).get("content") for ch in j.get("choices", [])):
                    deltas += 1
                    if first is None:
                        first = time.monotonic() - t0
            c.close()
            with self.lock:
                if first is not None:
                    self.ttfts.append(first)
                if not done:
                    self.incomplete += 1
                else:
                    self.tokens += usage["completion_tokens"] if usage else deltas
        except Exception as e:  # noqa: BLE001 - every failure is counted
            with self.lock:
                self.failures.append(repr(e))

    def go(self):
        self.start = time.monotonic()
        threads = [threading.Thread(target=self.client) for _ in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.elapsed = time.monotonic() - self.start
        return self


warm = Run(args.warmup, 0).go()
rss_warm = rss_kib()
cpu_warm = cpu_seconds()
run = Run(args.requests, args.warmup).go()
rss_after = rss_kib()
cpu_run = cpu_seconds() - cpu_warm
server.terminate()
server.wait(timeout=30)

name = "llama-server" if args.llama_server else "rkinfer serve"
q = statistics.quantiles(run.ttfts, n=20) if len(run.ttfts) >= 2 else [float("nan")] * 19
p50 = statistics.median(run.ttfts) if run.ttfts else float("nan")
growth = (rss_after - rss_warm) * 100 / rss_warm
print(f"{name}: clients {args.clients}, slots {args.parallel}, ctx/slot {args.ctx}, "
      f"threads {args.threads}, max_tokens {args.max_tokens}")
print(f"requests {run.issued} (after {warm.issued} warm-up), failed {len(warm.failures) + len(run.failures)}, "
      f"incomplete streams {warm.incomplete + run.incomplete}, {run.elapsed:.1f} s")
print(f"time to first token: p50 {p50 * 1000:.0f} ms, p95 {q[18] * 1000:.0f} ms")
print(f"aggregate generation: {run.tokens} tokens, {run.tokens / run.elapsed:.1f} tokens/s")
print(f"server CPU time: {cpu_run:.1f} s, {run.tokens / max(cpu_run, 1e-9):.1f} tokens per CPU second")
print(f"server RSS: {rss_warm / 1024:.1f} MiB after warm-up, {rss_after / 1024:.1f} MiB after "
      f"{run.issued} requests ({growth:+.1f}%)")
failed = warm.failures + run.failures
for f in failed[:5]:
    print("failure:", f)
bad = failed or warm.incomplete or run.incomplete
if args.max_rss_growth is not None and growth > args.max_rss_growth:
    print(f"RSS grew {growth:.1f}% > {args.max_rss_growth}%")
    bad = True
if run.issued < args.requests:
    print(f"only {run.issued} of {args.requests} requests before the deadline")
    bad = bad or args.max_rss_growth is not None
raise SystemExit(1 if bad else 0)
