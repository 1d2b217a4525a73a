#!/usr/bin/env python3
"""spawn-run.py: the spawn benchmark behind `make bench`: spawn cycles per
second from callers of 5, 20, 200, 2048 and 8192 MiB, every method side by
side, then bench/report.py's tables, ratios and budget lines.

It starts, at once, one worker process per caller size and kind:
  C, early    bench/spawn -m SIZE: tfork_early first thing in main, then
              the heap; times fork, posix_spawn, tfork_new (+ its EOF
              variant) and tfork_exec
  C, plain    bench/spawn --no-early -m SIZE: no early copy, so its
              tfork_new_exec really posix_spawns and execs tfork-serve
  perl        bench/peers/anyevent-fork.pl (when AnyEvent::Fork and EV
              are installed: `make bench-peers`)
  python      bench/peers/forkserver.py (this python's multiprocessing)
Each grows its heap once (malloc'ed or a string/bytes, every page written,
kept live to the end).  Then, round after round, each worker in turn
(the order rotated every round) times one slice of each of its methods
(their order rotated too): every figure of a round was taken within the
same few seconds, so a ratio of two figures of one round is taken side by
side.  All workers live at the same time, so the sizes are capped by
MemAvailable (the C sizes need twice their size: two workers each).

  bench/spawn-run.py [--quick] [--runs N] [--slice S] [--sizes 5,20,...]
                     [--out DIR] [--no-peers]
  BENCH_QUICK=1      same as --quick: sizes 5, 200, 2048; peers at 5 MiB
  BENCH_THP=huge|nohuge   madvise the C heaps (default: as malloc gives)

Writes DIR/spawn.csv (one row per slice), DIR/memory.csv, DIR/spawn.json
(the run's facts), then runs bench/report.py on DIR (default
bench/results).  Exits nonzero when a worker failed.
"""
import argparse
import json
import os
import platform
import select
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)

SIZES = [5, 20, 200, 2048, 8192]
QUICK_SIZES = [5, 200, 2048]
PEER_SIZES = [5, 20, 200]
QUICK_PEER_SIZES = [5]
MARGIN_MIB = 1024       # left free besides what the workers need
OVERHEAD_MIB = {"C": 12, "perl": 40, "python": 60}   # process + templates
READY_TIMEOUT = 900     # growing 8 GiB takes a while in some VMs
CMD_TIMEOUT = 600


def log(msg):
    print(msg, flush=True)


def meminfo():
    out = {}
    with open("/proc/meminfo") as f:
        for line in f:
            k, v = line.split(":", 1)
            out[k] = int(v.split()[0])
    return out


def thp_setting():
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            s = f.read()
        return s[s.index("[") + 1:s.index("]")]
    except (OSError, ValueError):
        return "unknown"


class Worker:
    """One measuring process, spoken to over its stdin/stdout."""

    def __init__(self, lang, kind, size, argv):
        self.lang, self.kind, self.size, self.argv = lang, kind, size, argv
        self.name = "%s %s %d MiB" % (lang, kind, size)
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, cwd=TOP)
        self.buf = b""
        self.ready = None

    def line(self, timeout):
        """The next line of output, or raise."""
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError("%s: no answer in %d s" % (self.name,
                                                               timeout))
            r, _, _ = select.select([fd], [], [], left)
            if not r:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                rc = self.proc.wait()
                raise RuntimeError("%s: exited (status %s)" % (self.name, rc))
            self.buf += chunk
        ln, self.buf = self.buf.split(b"\n", 1)
        return ln.decode()

    def send(self, cmd):
        try:
            self.proc.stdin.write((cmd + "\n").encode())
            self.proc.stdin.flush()
        except OSError as e:
            raise RuntimeError("%s: %s" % (self.name, e))

    def command(self, cmd, timeout=CMD_TIMEOUT):
        """Sends cmd; the lines up to "done"."""
        self.send(cmd)
        out = []
        while True:
            ln = self.line(timeout)
            if ln == "done":
                return out
            out.append(ln)

    def wait_ready(self, timeout):
        ln = self.line(timeout)
        f = ln.split(",")
        if f[0] != "ready" or len(f) != 5:
            raise RuntimeError("%s: expected ready, got %r" % (self.name, ln))
        self.ready = {"pid": int(f[1]), "rss_kb": int(f[2]),
                      "anonhuge_kb": int(f[3]), "grow_s": float(f[4])}

    def quit(self):
        try:
            self.send("quit")
            ln = self.line(120)
            rc = self.proc.wait(timeout=120)
            return ln, rc
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            self.kill()
            return str(e), -1

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def have_anyevent_fork():
    try:
        return subprocess.run(["perl", "-MAnyEvent::Fork", "-MEV", "-e", "1"],
                              stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL).returncode == 0
    except OSError:
        return False


def plan_sizes(sizes, peer_sizes, peers, avail_mib):
    """Caps the plan to the memory there is: the peers' larger sizes go
    first, then the largest C size shrinks.  Returns (sizes, peer_sizes,
    notes)."""
    notes = []

    def need(cs, ps):
        n = sum(2 * (s + OVERHEAD_MIB["C"]) for s in cs)
        n += sum(s + OVERHEAD_MIB[p] for s in ps for p in peers)
        return n

    budget = avail_mib - MARGIN_MIB
    while need(sizes, peer_sizes) > budget and len(peer_sizes) > 1:
        dropped = peer_sizes.pop()
        notes.append("peers at %d MiB left out: not enough memory" % dropped)
    while need(sizes, peer_sizes) > budget and sizes:
        big = sizes[-1]
        rest = need(sizes[:-1], peer_sizes)
        fit = (budget - rest) // 2 - OVERHEAD_MIB["C"]
        fit -= fit % 64
        if fit < (sizes[-2] if len(sizes) > 1 else 1) + 64:
            sizes.pop()
            notes.append("%d MiB left out: MemAvailable %d MiB" %
                         (big, avail_mib))
        else:
            sizes[-1] = fit
            notes.append("%d MiB capped to %d MiB by MemAvailable (%d MiB; "
                         "each C size runs twice, plus a %d MiB margin)" %
                         (big, fit, avail_mib, MARGIN_MIB))
    return sizes, peer_sizes, notes


def main():
    ap = argparse.ArgumentParser(
        description="spawn cycles per second vs caller size, side by side")
    ap.add_argument("--quick", action="store_true",
                    default=os.environ.get("BENCH_QUICK", "0") not in
                    ("", "0"))
    ap.add_argument("--runs", type=int)
    ap.add_argument("--slice", type=float)
    ap.add_argument("--sizes")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--no-peers", action="store_true")
    a = ap.parse_args()

    quick = a.quick
    runs = a.runs or (5 if quick else 9)
    tslice = a.slice or (0.15 if quick else 0.4)
    nmin = 5 if quick else 10
    sizes = ([int(s) for s in a.sizes.split(",")] if a.sizes else
             list(QUICK_SIZES if quick else SIZES))
    sizes.sort()
    peer_sizes = [s for s in (QUICK_PEER_SIZES if quick else PEER_SIZES)
                  if s <= sizes[-1]] or sizes[:1]
    thp_advice = os.environ.get("BENCH_THP", "default")
    if thp_advice not in ("default", "huge", "nohuge"):
        sys.exit("spawn-run.py: BENCH_THP must be default, huge or nohuge")
    if runs < 5:
        log("note: %d runs: figures below are medians of fewer than 5" % runs)

    spawn = os.path.join(HERE, "spawn")
    for prog in (spawn, os.path.join(HERE, "tiny")):
        if not os.access(prog, os.X_OK):
            sys.exit("spawn-run.py: %s is not built (run make bench)" % prog)
    os.environ.setdefault("TFORK_SERVE", os.path.join(TOP, "tfork-serve"))

    peers, peer_notes = [], []
    if not a.no_peers:
        if have_anyevent_fork():
            peers.append("perl")
        else:
            peer_notes.append("AnyEvent::Fork: not installed (make "
                              "bench-peers)")
        peers.append("python")

    mi = meminfo()
    avail = mi["MemAvailable"] // 1024
    sizes, peer_sizes, notes = plan_sizes(sizes, peer_sizes, peers, avail)
    if not sizes:
        sys.exit("spawn-run.py: not enough memory for any caller")
    if not peers:
        peer_sizes = []

    log("caller sizes: %s MiB%s; %d runs, slices of >= %.2f s and >= %d "
        "spawns" % (", ".join(map(str, sizes)),
                    " (quick: BENCH_QUICK set)" if quick else "",
                    runs, tslice, nmin))
    for n in notes + peer_notes:
        log("  " + n)

    common = ["-t", str(tslice), "-n", str(nmin)]
    workers = []
    t_start = time.monotonic()
    try:
        for s in sizes:
            workers.append(Worker("C", "early", s, [
                spawn, "-w", "-m", str(s), "-H", thp_advice] + common))
            workers.append(Worker("C", "plain", s, [
                spawn, "-w", "--no-early", "-m", str(s), "-H",
                thp_advice] + common))
        for s in peer_sizes:
            if "perl" in peers:
                workers.append(Worker("perl", "AnyEvent::Fork", s, [
                    "perl", os.path.join(HERE, "peers", "anyevent-fork.pl"),
                    "-w", "-m", str(s)] + common))
            if "python" in peers:
                workers.append(Worker("python", "forkserver", s, [
                    sys.executable,
                    os.path.join(HERE, "peers", "forkserver.py"),
                    "-w", "-m", str(s)] + common))
        for w in workers:
            w.wait_ready(READY_TIMEOUT)
        log("callers ready in %.0f s (heaps grown, methods warmed up)" %
            (time.monotonic() - t_start))

        mem_rows = []
        for w in workers:
            if w.lang == "C" and w.size == sizes[0]:
                mem_rows += [ln.split(",", 1)[1] for ln in w.command("mem")
                             if ln.startswith("mem,")]

        rows = []
        for run in range(1, runs + 1):
            t0 = time.monotonic()
            k = run % len(workers)
            for w in workers[k:] + workers[:k]:
                for ln in w.command("run %d" % run):
                    if not ln.startswith("row,"):
                        raise RuntimeError("%s: unexpected %r" % (w.name, ln))
                    rows.append((w, ln[4:]))
            log("  run %d of %d: %.0f s" % (run, runs, time.monotonic() - t0))

        ok = True
        for w in workers:
            ln, rc = w.quit()
            if rc != 0 or not ln.startswith("bye,"):
                log("%s: ended badly: %s (status %s)" % (w.name, ln, rc))
                ok = False
        if not ok:
            return 1
    except (RuntimeError, KeyboardInterrupt) as e:
        for w in workers:
            w.kill()
        log("spawn-run.py: %s" % e)
        return 1

    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "spawn.csv"), "w") as f:
        f.write("method,lang,size_mib,run,spawns,seconds,spawns_per_s,"
                "p50_us,p99_us,mean_us,gone,caller_rss_kb,"
                "caller_anonhuge_kb\n")
        for w, r in rows:
            m, rest = r.split(",", 1)
            f.write("%s,%s,%s,%d,%d\n" % (m, w.lang, rest,
                                          w.ready["rss_kb"],
                                          w.ready["anonhuge_kb"]))
    with open(os.path.join(a.out, "memory.csv"), "w") as f:
        f.write("process,pid,vmrss_kb,rss_kb,pss_kb,private_clean_kb,"
                "private_dirty_kb,private_kb\n")
        for r in mem_rows:
            f.write(r + "\n")
    facts = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "quick": quick, "runs": runs, "slice_s": tslice, "slice_min": nmin,
        "sizes": sizes, "peer_sizes": peer_sizes, "notes": notes,
        "peer_notes": peer_notes, "peers": peers,
        "thp": thp_setting(), "thp_advice": thp_advice,
        "mem_total_mib": mi["MemTotal"] // 1024, "mem_avail_mib": avail,
        "cpus": os.cpu_count(), "kernel": platform.release(),
        "python": "%s (%s)" % (platform.python_version(), sys.executable),
        "perl": subprocess.run(["perl", "-e", 'print $^V; eval { require '
                                'AnyEvent::Fork; print " AnyEvent::Fork ", '
                                '$AnyEvent::Fork::VERSION }'],
                               capture_output=True, text=True).stdout
        if "perl" in peers else "",
        "callers": [dict(lang=w.lang, kind=w.kind, size_mib=w.size,
                         **w.ready) for w in workers],
        "elapsed_s": round(time.monotonic() - t_start, 1),
    }
    with open(os.path.join(a.out, "spawn.json"), "w") as f:
        json.dump(facts, f, indent=1)
        f.write("\n")
    log("measured in %.0f s; raw figures in %s" %
        (facts["elapsed_s"], os.path.relpath(a.out, TOP)))
    log("")
    return subprocess.run([sys.executable, os.path.join(HERE, "report.py"),
                           a.out]).returncode


if __name__ == "__main__":
    sys.exit(main())
