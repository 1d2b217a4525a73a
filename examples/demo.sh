#!/bin/bash
# demo.sh: runs each example once with small sizes, a header before each;
# `make demo` runs it with TFORK_SERVE set to the build tree's tfork-serve.
# Exits non-zero if any example fails.
set -u

here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
# TFORK_DEMO_BIN: run the examples built there instead (make installcheck:
# built against an installed tfork, which finds its own tfork-serve).
if [[ -n ${TFORK_DEMO_BIN:-} ]]; then
    bin=$TFORK_DEMO_BIN
else
    bin=$here
    : "${TFORK_SERVE:=$top/tfork-serve}"
    export TFORK_SERVE
fi

# No example should take long at these sizes; a hung one fails the demo
# instead of hanging it.
limit=()
if command -v timeout >/dev/null 2>&1; then
    limit=(timeout 120)
fi

failed=()

# show WORD...: the command line as one would type it
show() {
    local w line='$'
    for w; do
        if [[ $w =~ ^[A-Za-z0-9_./=:,+-]+$ ]]; then
            line+=" $w"
        else
            line+=" '${w//\'/\'\\\'\'}'"
        fi
    done
    echo "$line"
}

# run TITLE EXPECTED-STATUS PROGRAM [ARG...]
run() {
    local title=$1 want=$2 prog=$3 rc
    shift 3
    echo
    echo "== $title"
    show "examples/$prog" "$@"
    ${limit[@]+"${limit[@]}"} "$bin/$prog" "$@"
    rc=$?
    if ((rc != want)); then
        echo "demo: examples/$prog exited with status $rc, expected $want" >&2
        failed+=("$prog $*")
    fi
}

run "big-parent: spawn rate from a big process, tfork vs fork()" 0 \
    big-parent -m 256 -n 100
run "prefork-server: one listener, children forked from a template" 0 \
    prefork-server -n 3 -c 6
run "rpc-hash: a worker function called from a loop that never blocks" 0 \
    rpc-hash
run "pool-map: a pool of workers, map and stream" 0 \
    pool-map
run "task-hash: a task server forked early, checkouts that hash and verify" 0 \
    task-hash
run "exec: a command from the template, stdout through a pipe" 0 \
    exec
run "exec: the exit status comes back" 0 \
    exec sh -c 'echo out; exit 3'
run "exec: a command that does not exist (tfork_exec fails, exits 1)" 1 \
    exec no-such-command-here

echo
if ((${#failed[@]})); then
    echo "demo: ${#failed[@]} run(s) failed:" >&2
    printf '  examples/%s\n' "${failed[@]}" >&2
    exit 1
fi
echo "demo: all examples ran as expected"
