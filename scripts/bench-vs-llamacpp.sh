#!/bin/bash
# Side-by-side speed of rkinfer and llama.cpp (llama-bench), alternating per
# model so both see the same machine state. Prints one markdown row per test
# with the ratio rkinfer / llama.cpp, and each process's peak RSS.
#
#   LLAMA_BIN=/path/to/llama.cpp/build/bin scripts/bench-vs-llamacpp.sh [-p 128] [-n 32] [-t 2] [-r 3] MODEL...
set -euo pipefail
P=128 N=32 T=2 R=3
while getopts "p:n:t:r:" o; do
  case $o in p) P=$OPTARG ;; n) N=$OPTARG ;; t) T=$OPTARG ;; r) R=$OPTARG ;; *) exit 2 ;; esac
done
shift $((OPTIND - 1))
: "${LLAMA_BIN:?set LLAMA_BIN to the llama.cpp build/bin directory}"
RK=${RKINFER:-$(dirname "$0")/../target/release/rkinfer}
echo "| model | test | llama.cpp t/s | rkinfer t/s | ratio | llama.cpp peak RSS | rkinfer peak RSS | RSS ratio |"
echo "|---|---|---:|---:|---:|---:|---:|---:|"
rss=$(mktemp)
for m in "$@"; do
  lj=$(/usr/bin/time -f "%M" -o "$rss" "$LLAMA_BIN/llama-bench" -m "$m" -p "$P" -n "$N" -t "$T" -r "$R" -o json 2>/dev/null)
  lr=$(tail -1 "$rss")
  rj=$(/usr/bin/time -f "%M" -o "$rss" "$RK" bench -m "$m" -p "$P" -n "$N" -t "$T" -r "$R" -o json 2>/dev/null)
  rr=$(tail -1 "$rss")
  python3 "$(dirname "$0")/bench_rows.py" "$m" "$lj" "$rj" "$lr" "$rr"
done
rm -f "$rss"
