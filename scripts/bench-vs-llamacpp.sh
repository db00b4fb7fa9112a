#!/bin/bash
# Side-by-side speed of rkinfer and llama.cpp (llama-bench), alternating per
# model so both see the same machine state. Prints the CPU, then per thread
# count one markdown table: a row per test with the ratio rkinfer /
# llama.cpp, and each process's peak RSS.
#
#   LLAMA_BIN=/path/to/llama.cpp/build/bin scripts/bench-vs-llamacpp.sh \
#       [-p 128] [-n 32] [-t 2,1] [-r 3] [-P corpus.txt [-c 512] [-M model]] MODEL...
#
# -t takes a comma-separated list (one table per count). -P FILE adds the
# whole-corpus perplexity wall time side by side (llama-perplexity and
# `rkinfer perplexity`, -c CTX, the first -t count) on the model given
# with -M (default: the first MODEL), each under /usr/bin/time.
# LLAMA_BIN: a llama.cpp build's bin directory with llama-bench (and
# llama-perplexity for -P); on a VM whose CPU advertises AMX that the
# default build trips over, use a build without AMX (GGML_NATIVE=OFF with
# the AVX-512 features named explicitly).
set -euo pipefail
P=128 N=32 T=2 R=3 PPL_FILE="" CTX=512 PPL_MODEL=""
while getopts "p:n:t:r:P:c:M:" o; do
  case $o in
    p) P=$OPTARG ;; n) N=$OPTARG ;; t) T=$OPTARG ;; r) R=$OPTARG ;;
    P) PPL_FILE=$OPTARG ;; c) CTX=$OPTARG ;; M) PPL_MODEL=$OPTARG ;;
    *) exit 2 ;;
  esac
done
shift $((OPTIND - 1))
: "${LLAMA_BIN:?set LLAMA_BIN to the llama.cpp build/bin directory}"
RK=${RKINFER:-$(dirname "$0")/../target/release/rkinfer}
rss=$(mktemp)
trap 'rm -f "$rss"' EXIT

echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores;" \
  "rkinfer kernels: $("$RK" bench -m "$1" -p 1 -n 0 -r 1 -t 1 -o json 2>/dev/null |
    python3 -c 'import json,sys; print(json.load(sys.stdin)[0].get("cpu_isa", "?"))')"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"

for t in ${T//,/ }; do
  echo
  echo "### -t $t"
  echo
  echo "| model | test | llama.cpp t/s | rkinfer t/s | ratio | llama.cpp peak RSS | rkinfer peak RSS | RSS ratio |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|"
  for m in "$@"; do
    lj=$(/usr/bin/time -f "%M" -o "$rss" "$LLAMA_BIN/llama-bench" -m "$m" -p "$P" -n "$N" -t "$t" -r "$R" -o json 2>/dev/null)
    lr=$(tail -1 "$rss")
    rj=$(/usr/bin/time -f "%M" -o "$rss" "$RK" bench -m "$m" -p "$P" -n "$N" -t "$t" -r "$R" -o json 2>/dev/null)
    rr=$(tail -1 "$rss")
    python3 "$(dirname "$0")/bench_rows.py" "$m" "$lj" "$rj" "$lr" "$rr"
  done
done

if [ -n "$PPL_FILE" ]; then
  m=${PPL_MODEL:-$1}
  t=${T%%,*}
  echo
  echo "### perplexity, $(basename "$m"), whole file, -c $CTX -t $t"
  echo
  echo "| engine | wall time | peak RSS | final estimate |"
  echo "|---|---:|---:|---|"
  ppl_row() {
    local name=$1 log
    shift
    log=$(mktemp)
    /usr/bin/time -f "%e %M" -o "$rss" "$@" >"$log" 2>&1
    read -r wall kib <"$rss"
    est=$(grep -o 'Final estimate: PPL = [0-9.]* +/- [0-9.]*' "$log" | tail -1 | sed 's/Final estimate: //')
    rm -f "$log"
    echo "| $name | ${wall} s | $((kib / 1024)) MiB | ${est:-?} |"
    echo "$wall" >>"$rss.walls"
  }
  rm -f "$rss.walls"
  ppl_row llama-perplexity "$LLAMA_BIN/llama-perplexity" -m "$m" -f "$PPL_FILE" -c "$CTX" -t "$t"
  ppl_row "rkinfer perplexity" "$RK" perplexity -m "$m" -f "$PPL_FILE" -c "$CTX" -t "$t"
  python3 -c 'import sys; a, b = map(float, open(sys.argv[1]).read().split()); print(f"| ratio rkinfer / llama.cpp | **{b / a:.2f}** | | |")' "$rss.walls"
  rm -f "$rss.walls"
fi
