#!/usr/bin/env bash
# One row of scripts/bench-vs-llamacpp.sh, measured as alternating rounds
# (rkinfer bench, then llama-bench, N times) and reported as medians: on a
# noisy machine this says more than one run of each.
#
#   LLAMA_BIN=path/to/llama.cpp/build/bin scripts/bench-alternate.sh MODEL THREADS ROUNDS pp|tg [RKINFER]
set -euo pipefail
if [ $# -lt 4 ]; then
  echo "usage: LLAMA_BIN=DIR $0 MODEL THREADS ROUNDS pp|tg [RKINFER]" >&2
  exit 2
fi
model=$1 threads=$2 rounds=$3 test=$4
rk=${5:-target/release/rkinfer}
llama=${LLAMA_BIN:?set LLAMA_BIN to the llama.cpp bin directory}/llama-bench
case $test in
  pp) args=(-p 128 -n 0) ;;
  tg) args=(-p 0 -n 32) ;;
  *) echo "test must be pp or tg" >&2; exit 2 ;;
esac
# The t/s column of the pp128 / tg32 row of a llama-bench style table.
rate() { grep -E "pp128|tg32" | awk -F'|' '{print $(NF-1)}' | awk '{print $1}'; }
for _ in $(seq "$rounds"); do
  r=$("$rk" bench -m "$model" "${args[@]}" -t "$threads" -r 2 2>/dev/null | rate)
  l=$("$llama" -m "$model" "${args[@]}" -t "$threads" -r 2 2>/dev/null | rate)
  echo "$r $l"
done | python3 -c '
import statistics, sys
rows = [tuple(map(float, l.split())) for l in sys.stdin if len(l.split()) == 2]
for r, l in rows:
    print(f"round: rkinfer {r:.1f} llama.cpp {l:.1f} t/s")
rk, ll = statistics.median(r for r, _ in rows), statistics.median(l for _, l in rows)
print(f"median of {len(rows)}: rkinfer {rk:.1f} llama.cpp {ll:.1f} t/s, ratio {rk / ll:.2f}")
'
