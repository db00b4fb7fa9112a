#!/usr/bin/env python3
"""Records llama.cpp's outputs on the tiny random-weight fixtures of every
architecture into tests/data/arch/references.json (read by
tests/architectures.rs).

    scripts/record-arch-references.py LLAMA_CPP_BIN_DIR [OUT_JSON] [--only NAME,...]

With --only, just those fixtures are recorded and merged into the existing
OUT_JSON (the others keep their recorded figures).

The fixtures are written by `cargo run --release --example tiny_models`
(tokenizer from the fetched models/SmolLM2-135M-Instruct.Q4_1.gguf; run
scripts/fetch-models.sh first). For each fixture and type:
  - perplexity: `llama-perplexity -c 128 --chunks 3 -t 2` on
    tests/data/arch/text.txt, the running PPL printed after each chunk;
  - greedy: llama-server's /completion (temperature 0, n_probs 5, EOS
    ignored) from fixed prompts: the generated ids and, before each, the
    top-5 [id, logprob] computed from the raw logits.
Only the standard library is used.
"""

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXT = os.path.join(REPO, "tests/data/arch/text.txt")
TOKENIZER = os.path.join(REPO, "models/SmolLM2-135M-Instruct.Q4_1.gguf")
N_CTX = 128
CHUNKS = 3
N_PREDICT = 16
PROMPTS = [
    "The capital of France is",
    # Long enough (64+ tokens) for the tiled attention path and to cross
    # the gemma3 fixture's sliding window while decoding.
    "Shakespeare, William (1564--1616), English poet, player and playwright, "
    "was baptized in the parish church of Stratford-upon-Avon in Warwickshire "
    "on the 26th of April 1564. His father, John Shakespeare, was a burgess "
    "of the borough, who had been settled in Stratford",
]


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    return r.stdout + r.stderr


def perplexity(bin_dir, model):
    out = run([os.path.join(bin_dir, "llama-perplexity"), "-m", model, "-f", TEXT,
               "-c", str(N_CTX), "--chunks", str(CHUNKS), "-t", "2"])
    running = [float(v) for v in re.findall(r"\[\d+\]([0-9.]+(?:e[+-]?\d+)?)", out)]
    final = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", out)
    if len(running) != CHUNKS or not final:
        sys.exit(f"cannot parse llama-perplexity output:\n{out[-3000:]}")
    return {"per_chunk_running_ppl": running, "ppl": float(final.group(1)),
            "stderr": float(final.group(2))}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(port, path, body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}",
                                 data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.load(r)


def greedy(bin_dir, model):
    port = free_port()
    server = subprocess.Popen(
        [os.path.join(bin_dir, "llama-server"), "-m", model, "--port", str(port),
         "-c", "256", "-t", "2", "-np", "1", "--no-webui"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.2)
        else:
            sys.exit("llama-server did not start")
        cases = []
        for prompt in PROMPTS:
            ids = post(port, "/tokenize", {"content": prompt, "add_special": True})["tokens"]
            r = post(port, "/completion", {
                "prompt": ids, "n_predict": N_PREDICT, "temperature": 0,
                "n_probs": 5, "ignore_eos": True, "cache_prompt": False,
                "return_tokens": True})
            steps = r["completion_probabilities"]
            cases.append({
                "prompt": prompt,
                "prompt_ids": ids,
                "generated_ids": [s["id"] for s in steps],
                "top5_per_step": [[[t["id"], round(t["logprob"], 6)] for t in s["top_logprobs"]]
                                  for s in steps],
            })
        return cases
    finally:
        server.terminate()
        server.wait()


def main():
    args = sys.argv[1:]
    only = None
    if "--only" in args:
        i = args.index("--only")
        if i + 1 >= len(args):
            sys.exit(__doc__)
        only = set(args[i + 1].split(","))
        del args[i:i + 2]
    if not args:
        sys.exit(__doc__)
    bin_dir = args[0]
    out_json = args[1] if len(args) > 1 else os.path.join(REPO, "tests/data/arch/references.json")
    with tempfile.TemporaryDirectory() as tmp:
        lines = run(["cargo", "run", "--release", "--quiet", "--example", "tiny_models", "--",
                     tmp, TOKENIZER]).splitlines()
        fixtures = {}
        for line in lines:
            parts = line.split()
            if len(parts) != 4:
                continue
            name, ty, sha, path = parts
            if only is not None and name not in only:
                continue
            print(f"{name} {ty}", file=sys.stderr)
            entry = {"sha256": sha, "perplexity": perplexity(bin_dir, path),
                     "greedy": greedy(bin_dir, path)}
            fixtures.setdefault(name, {})[ty] = entry
    if only is not None:
        with open(out_json) as f:
            previous = json.load(f)["fixtures"]
        previous.update(fixtures)
        fixtures = previous
    doc = {
        "note": "llama.cpp (llama-cpp-python==0.3.36 source package, CPU build) on the tiny "
                "random-weight fixtures of tests/support/tiny_models.rs; made by "
                "scripts/record-arch-references.py",
        "perplexity_tool": f"llama-perplexity -f tests/data/arch/text.txt -c {N_CTX} --chunks {CHUNKS} -t 2",
        "greedy_tool": f"llama-server /completion: prompt ids, n_predict {N_PREDICT}, temperature 0, "
                       "n_probs 5 (logprobs of the raw logits), ignore_eos",
        "n_ctx": N_CTX,
        "chunks": CHUNKS,
        "fixtures": fixtures,
    }
    with open(out_json, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
