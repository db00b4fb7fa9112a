"""One markdown row per test of llama-bench's and rkinfer bench's JSON."""
import json
import os
import sys

name = os.path.basename(sys.argv[1])
llama, ours = json.loads(sys.argv[2]), json.loads(sys.argv[3])
# Peak RSS of each process in KiB (optional).
rss = [int(v) for v in sys.argv[4:6]] if len(sys.argv) > 5 else None


def rows(runs):
    out = {}
    for r in runs:
        test = f"pp{r['n_prompt']}" if r.get("n_prompt") else f"tg{r['n_gen']}"
        out[test] = (r["avg_ts"], r["stddev_ts"])
    return out


theirs, mine = rows(llama), rows(ours)
for i, (test, (la, ls)) in enumerate(theirs.items()):
    if test in mine:
        ka, ks = mine[test]
        row = f"| {name} | {test} | {la:.1f} ± {ls:.1f} | {ka:.1f} ± {ks:.1f} | {ka / la:.2f} |"
        if rss and i == 0:
            row += f" {rss[0] / 1024:.0f} MiB | {rss[1] / 1024:.0f} MiB | {rss[1] / rss[0]:.2f} |"
        elif rss:
            row += " (same process) | | |"
        print(row)
