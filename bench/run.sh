#!/bin/bash
# run.sh: the benchmarks behind `make bench`: a header naming the machine,
# then each benchmark program in turn.  `make bench` builds bench/*.c into
# bench/<name> and runs this with TFORK_SERVE set to the build tree's
# tfork-serve.  Not part of `make check`: timings on a shared machine are
# reported, never asserted here.
#
#   bash bench/run.sh [name...]     # default: every benchmark below
#   BENCH_QUICK=1 make bench        # short runs (each program honours it)
#
# Each benchmark's output is also kept in bench/results/<name>.txt (with
# the spawn benchmark's CSV, plot and JSON next to it); the run ends with
# a summary of every goal and budget line.  Exits nonzero if any benchmark
# program fails (exits nonzero, crashes or hangs past its time limit); a
# missed performance goal is printed as FAIL but does not fail the run.
set -u

here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
: "${TFORK_SERVE:=$top/tfork-serve}"
export TFORK_SERVE

# The benchmarks, in order: "name|title|program [arg...]"; the program is
# bench/<program>.  Add a line here for each new one.
benches=(
    "rpc|RPC round trips: tfork_rpc (sync, async) vs a raw socketpair|rpc"
    "pool|process pool: calls/s with 1, 2, 4 workers vs one RPC child; ~1 ms calls scaling|pool"
    "spawn|spawn cycles/s by caller size: fork, posix_spawn, tfork; AnyEvent::Fork, forkserver|spawn-run.py"
)
results=$here/results

# A hung benchmark fails the run instead of hanging it.
limit=()
if command -v timeout >/dev/null 2>&1; then
    limit=(timeout 900)
fi

cpu_model() {
    local m
    m=$(sed -n 's/^model name[[:space:]]*:[[:space:]]*//p' /proc/cpuinfo \
        2>/dev/null | head -n 1)
    # some architectures name it differently
    [[ -n $m ]] || m=$(sed -n 's/^\(Hardware\|cpu model\|Processor\)[[:space:]]*:[[:space:]]*//p' \
        /proc/cpuinfo 2>/dev/null | head -n 1)
    echo "${m:-unknown}"
}

thp() {
    local f=/sys/kernel/mm/transparent_hugepage/enabled s
    if [[ -r $f ]] && s=$(sed -n 's/.*\[\(.*\)\].*/\1/p' "$f") && [[ -n $s ]]
    then
        echo "$s"
    else
        echo "unknown"
    fi
}

header() {
    echo "tfork benchmarks, $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "  machine:  $(nproc 2>/dev/null || echo '?') CPUs, $(cpu_model)"
    echo "  kernel:   $(uname -srm)"
    echo "  transparent hugepages: $(thp)"
    echo "  load:     $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?') (1, 5, 15 min)"
    echo "  mode:     $([[ ${BENCH_QUICK:-0} != 0 ]] && echo 'quick (BENCH_QUICK set)' || echo 'full (BENCH_QUICK=1 for a short run)')"
    echo "  memory:   $(awk '/^MemTotal/ {t=$2} /^MemAvailable/ {a=$2} END {printf "%.1f GiB, %.1f GiB available", t/1048576, a/1048576}' /proc/meminfo 2>/dev/null)"
    echo "  compiler: $(${BENCH_CC:-cc} --version 2>/dev/null | head -n 1)${BENCH_CFLAGS:+, CFLAGS $BENCH_CFLAGS}"
}

# Which to run: the names given, else all.
want=("$@")
selected() {
    local n
    ((${#want[@]} == 0)) && return 0
    for n in "${want[@]}"; do
        [[ $n == "$1" ]] && return 0
    done
    return 1
}

for w in ${want[@]+"${want[@]}"}; do
    found=0
    for b in "${benches[@]}"; do
        [[ ${b%%|*} == "$w" ]] && found=1
    done
    if ((!found)); then
        echo "bench/run.sh: no benchmark named '$w' (known:$(
            for b in "${benches[@]}"; do printf ' %s' "${b%%|*}"; done))" >&2
        exit 2
    fi
done

header
mkdir -p "$results"
failed=()
for b in "${benches[@]}"; do
    IFS='|' read -r name title cmd <<<"$b"
    selected "$name" || continue
    read -r -a argv <<<"$cmd"
    prog=$here/${argv[0]}
    rm -f "$results/$name.txt"
    echo
    echo "== $name: $title"
    if [[ ! -x $prog ]]; then
        echo "bench/run.sh: $prog is not built (run make bench)" >&2
        failed+=("$name (not built)")
        continue
    fi
    if [[ $prog == *.py ]] && ! command -v python3 >/dev/null 2>&1; then
        echo "bench/run.sh: $name needs python3 (Debian: apt-get install python3)" >&2
        failed+=("$name (no python3)")
        continue
    fi
    start=$SECONDS
    ${limit[@]+"${limit[@]}"} "$prog" "${argv[@]:1}" | tee "$results/$name.txt"
    rc=${PIPESTATUS[0]}
    echo "-- $name: $((SECONDS - start)) s, exit status $rc"
    if ((rc != 0)); then
        ((rc == 124)) && echo "bench/run.sh: $name timed out" >&2
        failed+=("$name (exit status $rc)")
    fi
done

# Every goal and budget verdict of the run, in one place.
echo
echo "== summary: the goal and budget lines (outputs in bench/results/*.txt)"
for b in "${benches[@]}"; do
    name=${b%%|*}
    selected "$name" && [[ -f $results/$name.txt ]] || continue
    grep -E '^ *(PASS|FAIL|SKIP) |^goal: ' "$results/$name.txt" |
        sed "s/^ */$name: /"
done
echo "-- all benchmarks: $SECONDS s"

echo
if ((${#failed[@]})); then
    echo "bench: ${#failed[@]} benchmark(s) failed:" >&2
    printf '  %s\n' "${failed[@]}" >&2
    exit 1
fi
echo "bench: all benchmarks ran"
