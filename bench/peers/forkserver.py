#!/usr/bin/env python3
"""forkserver.py: Python's multiprocessing with the forkserver start method
in the spawn benchmark, from a python caller grown to -m MiB (a bytes
object of that many bytes, every byte written):

  py_forkserver  Process(target=child).start(); join(); close() -- the
                 forkserver forks the child, which calls child() (returns
                 at once: exit 0); join() returns once the forkserver has
                 reaped it and sent its exit status: the caller sees it
                 gone the way bench/spawn's C methods do.

The forkserver is started before the caller grows (it is a fresh python
either way).  Cycles run one at a time; a slice is at least -n cycles and
-t seconds.  Output and commands are bench/spawn's (bench/spawn-run.py):
  python3 bench/peers/forkserver.py -w -m MiB [-t s] [-n N]
Standard library only.
"""
import argparse
import multiprocessing
import multiprocessing.forkserver
import os
import sys
import time


def child():
    """The child's work: none; it exits 0."""


def cycle(ctx):
    p = ctx.Process(target=child)
    p.start()
    p.join()
    if p.exitcode != 0:
        sys.exit("forkserver.py: child %d: exit code %r" % (p.pid, p.exitcode))
    p.close()


def slice_(ctx, tmin, nmin):
    lat = []
    start = t = time.perf_counter()
    while len(lat) < nmin or t - start < tmin:
        c0 = t
        cycle(ctx)
        t = time.perf_counter()
        lat.append(t - c0)
    n, secs = len(lat), t - start
    lat.sort()

    def q(x):  # nearest rank, as bench/spawn
        i = int(x * n + 0.999999) - 1
        return lat[min(max(i, 0), n - 1)]
    return n, secs, q(0.50), q(0.99)


def proc_kb(path, key):
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


def main():
    ap = argparse.ArgumentParser(description="multiprocessing forkserver "
                                 "spawn cycles (bench/spawn's protocol)")
    ap.add_argument("-m", type=int, default=5, help="MiB to grow to")
    ap.add_argument("-t", type=float, default=0.5, help="slice seconds")
    ap.add_argument("-n", type=int, default=10, help="slice cycles")
    ap.add_argument("-w", action="store_true", help="worker mode")
    ap.add_argument("-r", type=int, default=5, help="standalone runs")
    a = ap.parse_args()
    if a.m < 1 or a.n < 1 or a.t < 0:
        ap.error("bad -m, -n or -t")

    ctx = multiprocessing.get_context("forkserver")
    multiprocessing.forkserver.ensure_running()     # while small
    cycle(ctx)

    t0 = time.perf_counter()
    heap = b"\x5a" * (a.m << 20)                    # every byte written
    grow = time.perf_counter() - t0

    def round_(run, prefix):
        n, secs, p50, p99 = slice_(ctx, a.t, a.n)
        print("%spy_forkserver,%d,%d,%d,%.4f,%.1f,%.1f,%.1f,%.1f,status"
              % (prefix, a.m, run, n, secs, n / secs, p50 * 1e6, p99 * 1e6,
                 secs / n * 1e6), flush=True)

    slice_(ctx, 0, 3)                               # untimed warm-up
    rss = proc_kb("/proc/self/status", "VmRSS")
    huge = proc_kb("/proc/self/smaps_rollup", "AnonHugePages")

    def checksum():  # a byte of every page, so the heap is read back
        return sum(heap[::4096])

    if a.w:
        print("ready,%d,%d,%d,%.2f" % (os.getpid(), rss, huge, grow),
              flush=True)
        for cmd in sys.stdin:
            if cmd.startswith("run "):
                round_(int(cmd.split()[1]), "row,")
            elif cmd.startswith("quit"):
                break
            else:
                sys.exit("forkserver.py: unknown command: " + cmd)
            print("done", flush=True)
        print("bye,%x" % checksum(), flush=True)
    else:
        print("# python caller: bytes of %d MiB, VmRSS %d kB" % (a.m, rss))
        print("method,size_mib,run,spawns,seconds,spawns_per_s,p50_us,"
              "p99_us,mean_us,gone")
        for run in range(1, a.r + 1):
            round_(run, "")
        print("# checksum %x" % checksum())


if __name__ == "__main__":
    main()
