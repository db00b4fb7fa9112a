#!/usr/bin/env python3
"""End-to-end checks of an rkinfer binary (run through a runner such as
qemu-aarch64) against tests/data/aarch64-e2e.json: greedy ids of
`rkinfer run --temp 0` and the running perplexity of `rkinfer perplexity`
printed with 4 decimals, as llama.cpp (and rkinfer on x86_64) give them.

Prints one line per check and a closing "N passed, N failed" line; exits 1
when a check fails.
"""

import argparse
import json
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path


def rkinfer(args, cmd):
    """Runs rkinfer with `cmd` and returns its parsed --json output."""
    full = shlex.split(args.runner) + [args.rkinfer] + cmd + ["--json", "-t", str(args.threads)]
    proc = subprocess.run(full, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(full)} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError as e:
        raise RuntimeError(f"{shlex.join(full)}: output is not one JSON object ({e}):\n{proc.stdout[:500]}")


def check_greedy(args, case):
    want = case["generated_ids"]
    out = rkinfer(
        args,
        ["run", "-m", str(args.models / case["model"]), "-p", case["prompt"],
         "-n", str(len(want)), "--temp", "0"],
    )
    if out["prompt_ids"] != case["prompt_ids"]:
        return f"prompt ids {out['prompt_ids']}, want {case['prompt_ids']}"
    if out["generated_ids"] != want:
        return f"greedy ids\n  got  {out['generated_ids']}\n  want {want}"
    return None


def check_perplexity(args, case):
    want = case["running_ppl"][: args.chunks]
    out = rkinfer(
        args,
        ["perplexity", "-m", str(args.models / case["model"]), "-f", str(args.models / "corpus.txt"),
         "-c", str(case["ctx"]), "--chunks", str(len(want))],
    )
    got = [f"{x:.4f}" for x in out["report"]["running_ppl"]]
    if got != want:
        return f"running PPL {got}, want {want}"
    return None


def child_cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rkinfer", required=True, help="the rkinfer binary")
    p.add_argument("--runner", default="", help="command prefix, e.g. 'qemu-aarch64 -cpu cortex-a76'")
    p.add_argument("--models", type=Path, required=True, help="folder of the fetched models and corpus.txt")
    p.add_argument("--data", type=Path, required=True, help="tests/data/aarch64-e2e.json")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--chunks", type=int, default=2, help="perplexity chunks per model (at most 2)")
    p.add_argument("--prompts", type=int, default=3, help="greedy prompts per model")
    p.add_argument("--ppl-models", default="SmolLM2",
                   help="perplexity only for models whose file name contains this ('' for all); "
                        "Gemma3's chunk costs ~20 CPU-minutes under qemu")
    args = p.parse_args()

    data = json.loads(args.data.read_text())
    checks = []
    per_model = {}
    for case in data["greedy"]:
        per_model[case["model"]] = per_model.get(case["model"], 0) + 1
        if per_model[case["model"]] <= args.prompts:
            checks.append((f"run --temp 0 {case['model']} {case['prompt']!r}", check_greedy, case))
    if args.chunks > 0:
        for case in data["perplexity"]:
            if args.ppl_models not in case["model"]:
                continue
            checks.append((f"perplexity --chunks {args.chunks} {case['model']}", check_perplexity, case))

    passed = failed = 0
    for name, fn, case in checks:
        start, cpu = time.monotonic(), child_cpu_seconds()
        try:
            err = fn(args, case)
        except (RuntimeError, KeyError, TypeError) as e:
            err = str(e)
        took = f"{time.monotonic() - start:.0f} s, cpu {child_cpu_seconds() - cpu:.0f} s"
        if err is None:
            passed += 1
            print(f"e2e {name} ... ok ({took})", flush=True)
        else:
            failed += 1
            print(f"e2e {name} ... FAILED ({took}): {err}", flush=True)
    print(f"e2e: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
