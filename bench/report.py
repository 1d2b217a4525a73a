#!/usr/bin/env python3
"""report.py: the spawn benchmark's report, from the files
bench/spawn-run.py writes (spawn.csv, memory.csv, spawn.json):

  - spawn cycles per second, rows = methods, columns = caller sizes, as
    in AnyEvent::Fork's PERFORMANCE section: median of the runs [min..max]
  - latency per spawn, p50 / p99
  - the ratios, run by run (both sides of a ratio from the same run)
  - memory of tfork-serve, the early copy and their children
  - a PASS/FAIL line per figure of the performance budget (DESIGN.md)
  - a plot, spawns/s against caller size (log scales, a line per method),
    as PNG and SVG with gnuplot, next to the CSV

  bench/report.py [DIR]     (default bench/results)

Standard library only.  Exits 0 whatever the figures (a missed budget is a
FAIL line, not an error), 1 when the files are missing or malformed.
"""
import csv
import json
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

# Rows of the table, in order: (method, label).
METHODS = [
    ("fork", "fork+_exit+waitpid"),
    ("posix_spawn", "posix_spawn tiny+waitpid"),
    ("tfork_new", "tfork_new+run+exit"),
    ("tfork_new_eof", "tfork_new+run, to EOF"),
    ("tfork_exec", "tfork_exec tiny"),
    ("tfork_new_exec", "tfork_new_exec+run+exit"),
    ("ae_new", "AnyEvent::Fork new, EOF"),
    ("ae_new_exec", "AnyEvent::Fork new_exec"),
    ("py_forkserver", "Python forkserver"),
]
LABEL = dict(METHODS)
# Plot styles: (colour, dash type, point type); tfork in blues and greens.
STYLE = {
    "fork": ("#000000", 1, 7),
    "posix_spawn": ("#808080", 1, 5),
    "tfork_new": ("#1f5fd0", 1, 7),
    "tfork_new_eof": ("#1f5fd0", 2, 6),
    "tfork_exec": ("#2a9d3a", 1, 5),
    "tfork_new_exec": ("#2a9d3a", 2, 9),
    "ae_new": ("#d04020", 1, 13),
    "ae_new_exec": ("#d04020", 2, 12),
    "py_forkserver": ("#8a3ab9", 1, 11),
}
# What each row times; printed for the rows present.
LEGEND = [
    ("fork", "fork          the C caller forks itself; the child _exits 0; "
     "waitpid"),
    ("posix_spawn", "posix_spawn   of bench/tiny (static, exits 0); "
     "waitpid"),
    ("tfork_new", "tfork_new     a child of the early copy (tfork_early, "
     "first thing in main,\n"
     "              while small) runs bench_exit0 (returns 0); "
     "tfork_on_exit fires"),
    ("tfork_new_eof", "  ..to EOF    the same, but done at EOF on the "
     "child's socket (no on_exit)"),
    ("tfork_exec", "tfork_exec    of bench/tiny, from a tfork_new child; "
     "exec callback and on_exit"),
    ("tfork_new_exec", "tfork_new_exec  a fresh tfork-serve (posix_spawn+"
     "exec; its caller has no early\n"
     "              copy) runs libc's close(), returns 0; tfork_on_exit "
     "fires"),
    ("ae_new", "AnyEvent::Fork  ->new / ->new_exec ->run(\"CORE::exit\") "
     "from a perl caller; done\n"
     "              at EOF (new: its children are the template's) / at EOF "
     "and exit\n"
     "              status (new_exec: our own child, AE::child)"),
    ("py_forkserver", "Python forkserver  Process(target=f).start(); "
     "join(); close() from a python\n"
     "              caller; join() returns the exit status"),
]
LEGEND_END = [
    "gone: the caller holds the exit status, except where EOF is said.",
    "A slice of a slow method holds few spawns (at least the minimum): "
    "its p99",
    "is close to its maximum.",
]

BUDGET_SAME = 0.10          # 8 GiB within 10% of 5 MB
BUDGET_FORK = 0.9           # template spawn >= 0.9x bare fork
BUDGET_SERVE_KIB = 512
BUDGET_CHILD_KIB = 256
BUDGET_EXEC = 0.8           # tfork_exec >= 0.8x posix_spawn


def median(v):
    v = sorted(v)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def fmt_rate(x):
    return "%.0f" % x if x >= 100 else "%.1f" % x if x >= 10 else "%.2f" % x


def fmt_ms(us):
    x = us / 1000
    return "%.0f" % x if x >= 100 else "%.1f" % x if x >= 10 else \
        "%.2f" % x


def fmt_size(s):
    return "%d MiB" % s


class Figures:
    def __init__(self, d):
        self.dir = d
        with open(os.path.join(d, "spawn.json")) as f:
            self.facts = json.load(f)
        self.rows = []
        with open(os.path.join(d, "spawn.csv")) as f:
            for r in csv.DictReader(f):
                for k in ("size_mib", "run", "spawns"):
                    r[k] = int(r[k])
                for k in ("seconds", "spawns_per_s", "p50_us", "p99_us",
                          "mean_us"):
                    r[k] = float(r[k])
                self.rows.append(r)
        self.mem = []
        mp = os.path.join(d, "memory.csv")
        if os.path.exists(mp):
            with open(mp) as f:
                self.mem = list(csv.DictReader(f))
        self.sizes = sorted({r["size_mib"] for r in self.rows})
        self.methods = [m for m, _ in METHODS
                        if any(r["method"] == m for r in self.rows)]
        self.by = {}
        for r in self.rows:
            self.by[(r["method"], r["size_mib"], r["run"])] = r

    def values(self, m, s, key="spawns_per_s"):
        return [r[key] for (mm, ss, _), r in sorted(self.by.items())
                if mm == m and ss == s]

    def ratios(self, m1, s1, m2, s2):
        """Per-run ratios rate(m1, s1) / rate(m2, s2), runs both have."""
        out = []
        for (m, s, run), r in self.by.items():
            if m == m1 and s == s1:
                o = self.by.get((m2, s2, run))
                if o:
                    out.append(r["spawns_per_s"] / o["spawns_per_s"])
        return out


def spread(v):
    return median(v), min(v), max(v)


def print_table(F):
    f = F.facts
    w = 14
    print("spawn cycles per second: start a process, it exits, the caller "
          "sees it gone")
    print("median of %d runs [min..max]; a run is one slice per method, "
          ">= %.2f s and >= %d" % (f["runs"], f["slice_s"], f["slice_min"]))
    print("spawns; within a run every method and size took its turn "
          "(interleaved)")
    print()
    head = "%-26s" % "caller heap" + "".join("%*s" % (w, fmt_size(s))
                                             for s in F.sizes)
    print(head)
    rss = {}
    for c in f["callers"]:
        rss.setdefault((c["lang"], c["size_mib"]), []).append(c["rss_kb"])
    print("%-26s" % "  C caller VmRSS" + "".join(
        "%*s" % (w, "%.0f MiB" % (max(rss.get(("C", s), [0])) / 1024))
        for s in F.sizes))
    for m in F.methods:
        med, lo = [], []
        for s in F.sizes:
            v = F.values(m, s)
            if v:
                a, b, c = spread(v)
                med.append("%*s" % (w, fmt_rate(a)))
                lo.append("%*s" % (w, "[%s..%s]" % (fmt_rate(b),
                                                    fmt_rate(c))))
            else:
                med.append("%*s" % (w, "-"))
                lo.append(" " * w)
        print("%-26s" % LABEL[m] + "".join(med))
        print("%-26s" % "" + "".join(lo))
    print()
    print("latency per spawn, milliseconds: p50 / p99 (median over the "
          "runs)")
    print("%-26s" % "" + "".join("%*s" % (w, fmt_size(s)) for s in F.sizes))
    for m in F.methods:
        cells = []
        for s in F.sizes:
            p50, p99 = F.values(m, s, "p50_us"), F.values(m, s, "p99_us")
            cells.append("%*s" % (w, "%s / %s" % (
                fmt_ms(median(p50)), fmt_ms(median(p99))) if p50 else "-"))
        print("%-26s" % LABEL[m] + "".join(cells))
    print()
    for m, text in LEGEND:
        if m in F.methods or (m == "ae_new" and "ae_new_exec" in F.methods):
            for ln in text.split("\n"):
                print("  " + ln)
    for ln in LEGEND_END:
        print("  " + ln)
    print()


def print_setup(F):
    f = F.facts
    print("callers")
    huge = {c["anonhuge_kb"] for c in f["callers"] if c["lang"] == "C"}
    adv = f.get("thp_advice", "default")
    print("  C: bench/spawn, a malloc'ed heap of the column's size, every "
          "word written,")
    print("     read back at the end; two callers per size (with and "
          "without tfork_early)")
    if adv == "default":
        if f["thp"] == "madvise":
            what = ("'madvise': a malloc'ed heap gets no huge pages,\n"
                    "     the same as with MADV_NOHUGEPAGE;")
        elif f["thp"] == "always":
            what = "'always': a malloc'ed heap may get huge pages;\n    "
        else:
            what = "'%s';\n    " % f["thp"]
        print("  transparent hugepages %s the table uses the heaps as "
              "malloc gives" % what)
        print("     them (no madvise; BENCH_THP=huge|nohuge to change): "
              "AnonHugePages %s kB" % "/".join(str(h) for h in sorted(huge)))
    else:
        print("  transparent hugepages '%s'; heaps madvise(MADV_%s): "
              "AnonHugePages %s kB" % (f["thp"], adv.upper() + "PAGE",
                                        "/".join(str(h)
                                                 for h in sorted(huge))))
    for lang, what in (("perl", "perl %s: a string" % f.get("perl", "")),
                       ("python", "python %s: a bytes object" %
                        f.get("python", ""))):
        cs = [c for c in f["callers"] if c["lang"] == lang]
        if cs:
            print("  %s: %s of the column's size\n     (VmRSS %s MiB)" % (
                lang, what, ", ".join("%.0f" % (c["rss_kb"] / 1024)
                                      for c in cs)))
    ps = f.get("peer_sizes", [])
    if ps and ps != f["sizes"]:
        print("  peers at %s MiB only: their callers never fork "
              "themselves, so a bigger" % ", ".join(map(str, ps)))
        print("     heap only costs memory (the run holds every caller "
              "at once)")
    for n in f.get("notes", []) + f.get("peer_notes", []):
        print("  note: " + n)
    if f["quick"]:
        print("  note: quick run (BENCH_QUICK): sizes %s MiB only, %d runs, "
              "short slices" % (", ".join(map(str, f["sizes"])), f["runs"]))
    print()


def ratio_text(v):
    if not v:
        return "-"
    a, b, c = spread(v)
    return "%.2fx [%.2f..%.2f]" % (a, b, c)


def print_ratios(F):
    print("ratios of spawns/s, run by run: median [min..max] of the per-run "
          "ratios")
    s0, sN = F.sizes[0], F.sizes[-1]
    out = []

    def line(label, v):
        out.append((label, ratio_text(v)))
        print("  %-54s %s" % (label, ratio_text(v)))

    for s in F.sizes:
        line("tfork_new / fork, %s caller" % fmt_size(s),
             F.ratios("tfork_new", s, "fork", s))
    if sN != s0:
        line("tfork_new, %s / %s caller" % (fmt_size(sN), fmt_size(s0)),
             F.ratios("tfork_new", sN, "tfork_new", s0))
    line("template spawn / bare fork of the %s program" % fmt_size(s0),
         F.ratios("tfork_new", s0, "fork", s0))
    for s in F.sizes:
        line("tfork_exec / posix_spawn, %s caller" % fmt_size(s),
             F.ratios("tfork_exec", s, "posix_spawn", s))
    peer = False
    for s in F.sizes:
        pairs = [("tfork_new_eof", "ae_new",
                  "tfork_new / AnyEvent::Fork new (both to EOF)"),
                 ("tfork_new_exec", "ae_new_exec",
                  "tfork_new_exec / AnyEvent::Fork new_exec"),
                 ("tfork_new", "py_forkserver",
                  "tfork_new / Python forkserver")]
        for a, b, label in pairs:
            if F.values(b, s):
                peer = True
                line("%s, %s" % (label, fmt_size(s)), F.ratios(a, s, b, s))
    if not peer:
        print("  (no peers in this run)")
    print()


def budget(F):
    print("performance budget (../shared/DESIGN.md), on the medians of the "
          "per-run ratios")
    s0, sN = F.sizes[0], F.sizes[-1]
    f = F.facts

    def verdict(ok, text):
        print("  %-4s  %s" % ("PASS" if ok else "FAIL", text))

    # spawn cost independent of caller size
    if 8192 not in F.sizes:
        why = "quick run" if f["quick"] else "; ".join(f["notes"]) or \
            "not in this run"
        if sN > s0 and F.ratios("tfork_new", sN, "tfork_new", s0):
            v = median(F.ratios("tfork_new", sN, "tfork_new", s0))
            print("  SKIP  8 GiB caller not measured (%s); at %s: %.2fx "
                  "the rate at %s" % (why, fmt_size(sN), v, fmt_size(s0)))
        else:
            print("  SKIP  8 GiB caller not measured (%s)" % why)
    else:
        v = median(F.ratios("tfork_new", 8192, "tfork_new", s0))
        verdict(abs(v - 1) <= BUDGET_SAME,
                "tfork_new from an 8 GiB caller: %.2fx the rate from %s "
                "(within %d%%)" % (v, fmt_size(s0), BUDGET_SAME * 100))
    # template spawn vs bare fork
    v = F.ratios("tfork_new", 5, "fork", 5)
    if v:
        v = median(v)
        verdict(v >= BUDGET_FORK,
                "template spawn: tfork_new %.2fx fork()+_exit+waitpid of the "
                "5 MiB program (>= %.1fx)" % (v, BUDGET_FORK))
    else:
        print("  SKIP  template spawn vs bare fork: no 5 MiB caller")
    # memory
    serve = [m for m in F.mem if m["process"] == "tfork-serve"]
    if serve:
        k = int(serve[0]["private_kb"])
        verdict(k <= BUDGET_SERVE_KIB,
                "tfork-serve private memory %d KiB (<= %d KiB; VmRSS %s KiB)"
                % (k, BUDGET_SERVE_KIB, serve[0]["vmrss_kb"]))
    else:
        print("  SKIP  tfork-serve memory: not measured")
    kids = [m for m in F.mem if " child " in m["process"] and
            not m["process"].startswith("fork()")]
    if kids:
        worst = max(kids, key=lambda m: int(m["private_kb"]))
        verdict(int(worst["private_kb"]) <= BUDGET_CHILD_KIB,
                "per-child private memory: at most %s KiB (%s; <= %d KiB)"
                % (worst["private_kb"], worst["process"], BUDGET_CHILD_KIB))
    # tfork_exec vs posix_spawn at every size
    per = [(median(F.ratios("tfork_exec", s, "posix_spawn", s)), s)
           for s in F.sizes if F.ratios("tfork_exec", s, "posix_spawn", s)]
    if per:
        lo, s = min(per)
        verdict(lo >= BUDGET_EXEC,
                "tfork_exec >= %.1fx posix_spawn at every size: lowest "
                "%.2fx (%s caller)" % (BUDGET_EXEC, lo, fmt_size(s)))
    print()


def print_memory(F):
    if not F.mem:
        return
    print("memory, kB, from /proc/PID/status and /proc/PID/smaps_rollup")
    print("  %-36s %8s %8s %8s" % ("process", "VmRSS", "Pss", "Private"))
    for m in F.mem:
        print("  %-36s %8s %8s %8s" % (m["process"], m["vmrss_kb"],
                                        m["pss_kb"], m["private_kb"]))
    print("  (Private = Private_Clean + Private_Dirty; each template "
          "measured alone,")
    print("  its children with the template alive; a run child waits in "
          "its function)")
    print()


def plot(F):
    d = F.dir
    dat = os.path.join(d, "spawn-plot.dat")
    with open(dat, "w") as f:
        f.write("# size_mib, then median min max spawns/s per method: %s\n"
                % " ".join(F.methods))
        for s in F.sizes:
            cells = []
            for m in F.methods:
                v = F.values(m, s)
                cells += (["%.3f" % x for x in spread(v)] if v
                          else ["NaN"] * 3)
            f.write("%d %s\n" % (s, " ".join(cells)))
    gp = os.path.join(d, "spawn.gp")
    plots = []
    for i, m in enumerate(F.methods):
        c = 2 + 3 * i
        color, dash, pt = STYLE[m]
        plots.append("'%s' using 1:%d:%d:%d with yerrorlines lw 2 lc rgb "
                     "'%s' dt %d pt %d title \"%s\""
                     % (os.path.basename(dat), c, c + 1, c + 2, color, dash,
                        pt, LABEL[m].replace('"', "'")))
    f = F.facts
    with open(gp, "w") as g:
        g.write("# gnuplot script written by bench/report.py: run it in %s\n"
                % os.path.basename(d))
        g.write("set termoption noenhanced\n")
        g.write("set logscale xy\nset grid\nset key outside right top\n")
        g.write("set xlabel 'caller heap, MiB'\n")
        g.write("set ylabel 'spawn cycles per second'\n")
        g.write("set xtics (%s)\n" % ", ".join("'%d' %d" % (s, s)
                                              for s in F.sizes))
        g.write("set xrange [%g:%g]\n" % (F.sizes[0] / 1.5,
                                           F.sizes[-1] * 1.5))
        g.write("set title 'tfork spawn benchmark, %s (%d CPUs, %s)'\n" % (
            f["date"][:10], f["cpus"], f["kernel"]))
        g.write("plot " + ", \\\n     ".join(plots) + "\n")
    gnuplot = shutil.which("gnuplot")
    if not gnuplot:
        print("plot: gnuplot not installed (make bench-peers installs "
              "gnuplot-nox): no PNG/SVG;")
        print("  the figures are in %s, the script in %s" % (
            os.path.join(d, "spawn.csv"), gp))
        return
    made = []
    for term, ext in (("pngcairo size 1000,600", "png"),
                      ("svg size 1000,600 dynamic", "svg")):
        out = "spawn.%s" % ext
        script = "set terminal %s\nset output '%s'\nload '%s'\n" % (
            term, out, os.path.basename(gp))
        r = subprocess.run([gnuplot], input=script, text=True, cwd=d,
                           capture_output=True)
        if r.returncode == 0:
            made.append(os.path.join(d, out))
        else:
            print("plot: gnuplot failed for %s: %s" % (ext, r.stderr.strip()))
    if made:
        print("plot: %s" % ", ".join(made))


def main(argv):
    d = argv[1] if len(argv) > 1 else os.path.join(HERE, "results")
    try:
        F = Figures(d)
    except (OSError, ValueError, KeyError) as e:
        print("report.py: cannot read the figures in %s: %s" % (d, e),
              file=sys.stderr)
        return 1
    if not F.rows:
        print("report.py: no figures in %s" % d, file=sys.stderr)
        return 1
    print_table(F)
    print_setup(F)
    print_ratios(F)
    print_memory(F)
    budget(F)
    plot(F)
    print("raw figures: %s, %s" % (os.path.join(d, "spawn.csv"),
                                    os.path.join(d, "memory.csv")))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
