"""One markdown row per test of llama-bench's and rkinfer bench's JSON."""
import json
import os
import sys

name = os.path.basename(sys.argv[1])
llama, ours = json.loads(sys.argv[2]), json.loads(sys.argv[3])


def rows(runs):
    out = {}
    for r in runs:
        test = f"pp{r['n_prompt']}" if r.get("n_prompt") else f"tg{r['n_gen']}"
        out[test] = (r["avg_ts"], r["stddev_ts"])
    return out


theirs, mine = rows(llama), rows(ours)
for test, (la, ls) in theirs.items():
    if test in mine:
        ka, ks = mine[test]
        print(f"| {name} | {test} | {la:.1f} ± {ls:.1f} | {ka:.1f} ± {ks:.1f} | {ka / la:.2f} |")
