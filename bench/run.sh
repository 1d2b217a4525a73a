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
# Exits nonzero if any benchmark program fails (exits nonzero, crashes or
# hangs past its time limit); a missed performance goal is printed as FAIL
# by the program but does not fail the run.
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
)

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
    echo "  spawn benchmarks (tfork vs fork, posix_spawn, forkserver) are"
    echo "  added by a later issue; for now: ${#benches[@]} benchmark(s)."
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
failed=()
for b in "${benches[@]}"; do
    IFS='|' read -r name title cmd <<<"$b"
    selected "$name" || continue
    read -r -a argv <<<"$cmd"
    prog=$here/${argv[0]}
    echo
    echo "== $name: $title"
    if [[ ! -x $prog ]]; then
        echo "bench/run.sh: $prog is not built (run make bench)" >&2
        failed+=("$name (not built)")
        continue
    fi
    start=$SECONDS
    ${limit[@]+"${limit[@]}"} "$prog" "${argv[@]:1}"
    rc=$?
    echo "-- $name: $((SECONDS - start)) s, exit status $rc"
    if ((rc != 0)); then
        ((rc == 124)) && echo "bench/run.sh: $name timed out" >&2
        failed+=("$name (exit status $rc)")
    fi
done

echo
if ((${#failed[@]})); then
    echo "bench: ${#failed[@]} benchmark(s) failed:" >&2
    printf '  %s\n' "${failed[@]}" >&2
    exit 1
fi
echo "bench: all benchmarks ran"
