#!/usr/bin/env bash
# rkinfer against llama.cpp on the board itself (an RK3588 or any aarch64
# machine): for each model, llama-bench then `rkinfer bench` with the same
# -p/-n/-t/-r, pinned to the same cores, one markdown row per test with the
# ratio rkinfer / llama.cpp (and each process's peak RSS when GNU time is
# installed). First it prints what decides the numbers: the CPU features
# both programs choose their kernels by (dotprod: llama.cpp's Q4_0 4x4 and
# Q4_K 8x4 repacking; i8mm: its 4x8/8x8 ones), the CPU and DDR governors.
#
# Usage (on the board):
#   scripts/bench-board.sh -l ~/llama.cpp/build/bin/llama-bench [-k ./rkinfer] \
#       [-c 4-7] [-p 128] [-n 32] [-t 4] [-r 3] MODEL.gguf...
#   -l  llama-bench (or LLAMA_BENCH=...)
#   -k  rkinfer binary (or RKINFER=...; default: the static one
#       scripts/build-board.sh leaves, else target/release/rkinfer)
#   -c  cores to pin both to (default 4-7: the RK3588's Cortex-A76; '' for none)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

P=128 N=32 T=4 R=3 CPUS=4-7
LLAMA_BENCH=${LLAMA_BENCH:-}
RKINFER=${RKINFER:-}
while getopts "l:k:c:p:n:t:r:" o; do
    case $o in
    l) LLAMA_BENCH=$OPTARG ;;
    k) RKINFER=$OPTARG ;;
    c) CPUS=$OPTARG ;;
    p) P=$OPTARG ;;
    n) N=$OPTARG ;;
    t) T=$OPTARG ;;
    r) R=$OPTARG ;;
    *) exit 2 ;;
    esac
done
shift $((OPTIND - 1))
if [ -z "$LLAMA_BENCH" ] || [ $# -eq 0 ]; then
    echo "usage: $0 -l LLAMA_BENCH [-k RKINFER] [-c CPUS] [-p N] [-n N] [-t N] [-r N] MODEL..." >&2
    exit 2
fi
if [ -z "$RKINFER" ]; then
    for c in "$here/../target/aarch64/aarch64-unknown-linux-gnu/release/rkinfer" \
        "$here/../target/release/rkinfer" "$(command -v rkinfer || true)"; do
        if [ -n "$c" ] && [ -x "$c" ]; then
            RKINFER=$c
            break
        fi
    done
fi
for b in "$LLAMA_BENCH" "$RKINFER"; do
    if [ ! -x "$b" ]; then
        echo "bench-board: '$b' is not an executable (see -l / -k)" >&2
        exit 2
    fi
done

# Both programs run on the chosen cores.
pin=()
[ -n "$CPUS" ] && pin=(taskset -c "$CPUS")

# The features and clocks of the first core benched.
first_cpu=${CPUS%%[-,]*}
first_cpu=${first_cpu:-0}
features=$(awk -v cpu="$first_cpu" '$1 == "processor" { p = $3 } p == cpu && /^Features/ { sub(/^[^:]*: /, ""); print; exit }' /proc/cpuinfo 2>/dev/null || true)
has() { case " $features " in *" $1 "*) echo yes ;; *) echo no ;; esac; }
gov=$(cat "/sys/devices/system/cpu/cpu$first_cpu/cpufreq/scaling_governor" 2>/dev/null || echo '?')
cur=$(cat "/sys/devices/system/cpu/cpu$first_cpu/cpufreq/scaling_cur_freq" 2>/dev/null || echo '?')
echo "host: $(uname -m), cores ${CPUS:-all}; cpu$first_cpu: dotprod $(has asimddp), i8mm $(has i8mm), governor $gov at $cur kHz"
for d in /sys/class/devfreq/*dmc*; do
    [ -e "$d/governor" ] && echo "DDR ($d): governor $(cat "$d/governor"), $(cat "$d/cur_freq" 2>/dev/null || echo '?') Hz"
done
echo "rkinfer: $RKINFER ($("$RKINFER" --version 2>/dev/null || echo '?'))"
echo "llama-bench: $LLAMA_BENCH"
echo "-p $P -n $N -t $T -r $R"
echo
echo "| model | test | llama.cpp t/s | rkinfer t/s | ratio | llama.cpp peak RSS | rkinfer peak RSS | RSS ratio |"
echo "|---|---|---:|---:|---:|---:|---:|---:|"

# Peak RSS through GNU time when there is one (not in every board image).
rss=$(mktemp)
trap 'rm -f "$rss"' EXIT
timed() {
    if [ -x /usr/bin/time ]; then
        /usr/bin/time -f "%M" -o "$rss" "$@"
    else
        : >"$rss"
        "$@"
    fi
}
for m in "$@"; do
    lj=$(timed ${pin[@]+"${pin[@]}"} "$LLAMA_BENCH" -m "$m" -p "$P" -n "$N" -t "$T" -r "$R" -o json 2>/dev/null)
    lr=$(tail -1 "$rss")
    rj=$(timed ${pin[@]+"${pin[@]}"} "$RKINFER" bench -m "$m" -p "$P" -n "$N" -t "$T" -r "$R" -o json 2>/dev/null)
    rr=$(tail -1 "$rss")
    if [ -n "$lr" ] && [ -n "$rr" ]; then
        python3 "$here/bench_rows.py" "$m" "$lj" "$rj" "$lr" "$rr"
    else
        python3 "$here/bench_rows.py" "$m" "$lj" "$rj"
    fi
done
