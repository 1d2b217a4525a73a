/* spawn.c: spawn cycles per second from a C caller of a given size, the
 * methods side by side.  One process grows to -m MiB (malloc'ed, every
 * page written, kept live to the end), then times, slice after slice:
 *
 *   fork            fork() + _exit(0) in the child + waitpid
 *   posix_spawn     posix_spawn of bench/tiny (static, exits 0) + waitpid
 *   tfork_new       tfork_new() + tfork_run(bench_exit0) + the exit seen
 *                   through tfork_on_exit; the template is the early copy
 *                   (tfork_early, first thing in main, while small)
 *   tfork_new_eof   the same, the exit seen as EOF on the child's socket
 *                   (no on_exit): AnyEvent::Fork's criterion
 *   tfork_exec      tfork_new() + tfork_exec of bench/tiny + on_exit
 *   tfork_new_exec  tfork_new_exec() + tfork_run("close") + on_exit: a real
 *                   posix_spawn+exec of tfork-serve, so only with
 *                   --no-early (tfork_new_exec forks the early copy when
 *                   there is one)
 *
 * One spawn cycle: start a process, it exits, the caller sees it gone.
 * "Gone" is the same for every method that can report it: the caller
 * holds the process's exit status (waitpid returned it, or tfork_on_exit
 * fired with it; for tfork the run/exec callback must have come too).
 * Only tfork_new_eof stops at EOF, and says so in its "gone" column.
 * Cycles run one at a time; a slice is at least -n cycles and at least -t
 * seconds; spawns/s = cycles / slice time, and each cycle's own time gives
 * p50 and p99.
 *
 *   bench/spawn -m MiB [-M method,...] [-t s] [-n count] [-r runs]
 *   bench/spawn -w ...      worker for bench/spawn-run.py (see there)
 *
 * Standalone (-r) it prints CSV; `make bench` runs it through
 * bench/spawn-run.py, which interleaves sizes and methods and reports.
 * Exits 0 when everything ran, 1 on any error, 2 on bad usage. */
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>
#include <tfork.h>

#include "benchutil.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23          /* Linux 5.14 */
#endif

#define SPAWN_TIMEOUT 60.0              /* seconds before a cycle is hung */

extern char **environ;

/* ---- what the children run ---- */

/* A tfork_new child: returns at once, so the child exits 0. */
static int bench_exit0(int fd, int argc, const tfork_arg *argv)
{
    (void)fd;
    (void)argc;
    (void)argv;
    return 0;
}
TFORK_EXPORT(bench_exit0);

/* A child kept alive for the memory figures: waits for EOF. */
static int bench_hold(int fd, int argc, const tfork_arg *argv)
{
    char b[64];
    ssize_t r;

    (void)argc;
    (void)argv;
    do
        r = read(fd, b, sizeof b);
    while (r > 0 || (r < 0 && errno == EINTR));
    return 0;
}
TFORK_EXPORT(bench_hold);

/* ---- the methods ---- */

enum { M_FORK, M_SPAWN, M_NEW, M_NEW_EOF, M_EXEC, M_NEW_EXEC, NMETHODS };

static const struct {
    const char *id;             /* CSV name */
    const char *gone;           /* what "gone" is for it */
    int early;                  /* 1: needs tfork_early, 0: needs none,
                                   -1: either */
} method[NMETHODS] = {
    [M_FORK]     = { "fork",           "status", -1 },
    [M_SPAWN]    = { "posix_spawn",    "status", -1 },
    [M_NEW]      = { "tfork_new",      "status",  1 },
    [M_NEW_EOF]  = { "tfork_new_eof",  "eof",     1 },
    [M_EXEC]     = { "tfork_exec",     "status", -1 },
    [M_NEW_EXEC] = { "tfork_new_exec", "status",  0 },
};

struct bench {
    struct ev_loop *loop;
    const char *tiny;           /* path of bench/tiny */
    int early;                  /* tfork_early was called */
    int size_mib;               /* heap asked for */
    uint64_t *heap;             /* every word written, read at the end */
    size_t words;
    double grow_s;              /* time to grow the heap */
    double tmin;                /* a slice lasts at least this long */
    int nmin;                   /* and has at least this many cycles */
    int use[NMETHODS];          /* methods to time, in this order */
    int nuse;
    double *lat;                /* per-cycle times of the current slice */
    size_t cap;
};

/* The heap's address, where no compiler can assume it unused. */
uint64_t *volatile spawn_heap;

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2),
                                                      noreturn));

static void die(const char *fmt, ...)
{
    va_list ap;

    fflush(stdout);
    fprintf(stderr, "spawn[%d]: ", (int)getpid());
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

static int wait_child(pid_t pid)
{
    int st;
    pid_t w;

    do
        w = waitpid(pid, &st, 0);
    while (w < 0 && errno == EINTR);
    if (w < 0)
        die("waitpid %d: %s", (int)pid, strerror(errno));
    return st;
}

/* -- fork and posix_spawn: synchronous -- */

static void cycle_fork(struct bench *b)
{
    pid_t pid = fork();
    int st;

    (void)b;
    if (pid < 0)
        die("fork: %s", strerror(errno));
    if (pid == 0)
        _exit(0);
    st = wait_child(pid);
    if (st != 0)
        die("forked child %d: wait status 0x%x", (int)pid, (unsigned)st);
}

static void cycle_spawn(struct bench *b)
{
    char *argv[] = { (char *)"tiny", NULL };
    pid_t pid;
    int r, st;

    r = posix_spawn(&pid, b->tiny, NULL, NULL, argv, environ);
    if (r)
        die("posix_spawn %s: %s", b->tiny, strerror(r));
    st = wait_child(pid);
    if (st != 0)
        die("%s (pid %d): wait status 0x%x", b->tiny, (int)pid,
            (unsigned)st);
}

/* -- the tfork methods: driven by the loop until the cycle is done -- */

struct cycle {
    struct bench *b;
    const char *what;           /* for messages */
    int ran;                    /* the run/exec callback came */
    int gone;                   /* on_exit came, or EOF */
    int status;                 /* from on_exit */
    pid_t pid;
    int fd;                     /* our end of the socket, when kept */
    ev_io eof;                  /* tfork_new_eof: watching the socket */
};

static void on_exit_cb(pid_t pid, int status, void *data)
{
    struct cycle *c = data;

    c->pid = pid;
    c->status = status;
    c->gone = 1;
}

static void on_ran(tfork *p, int fd, int err, void *data)
{
    struct cycle *c = data;

    if (err < 0)
        die("%s: %s (%s)", c->what, tfork_errmsg(p), tfork_strerror(err));
    c->ran = 1;
    if (fd >= 0)
        close(fd);      /* the child needs nothing from us */
}

/* The memory figures keep the socket: closing it ends bench_hold. */
static void on_ran_keep(tfork *p, int fd, int err, void *data)
{
    struct cycle *c = data;

    if (err < 0)
        die("%s: %s (%s)", c->what, tfork_errmsg(p), tfork_strerror(err));
    c->ran = 1;
    c->fd = fd;
    c->pid = tfork_pid(p);      /* p is freed when we return */
}

static void on_eof(struct ev_loop *loop, ev_io *w, int revents)
{
    struct cycle *c = w->data;
    char x;
    ssize_t r = read(w->fd, &x, 1);

    (void)revents;
    if (r < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (r != 0)
        die("%s: %s on the child's socket, expected EOF", c->what,
            r < 0 ? strerror(errno) : "data");
    ev_io_stop(loop, w);
    close(w->fd);
    c->gone = 1;
}

static void on_ran_eof(tfork *p, int fd, int err, void *data)
{
    struct cycle *c = data;

    if (err < 0)
        die("%s: %s (%s)", c->what, tfork_errmsg(p), tfork_strerror(err));
    c->ran = 1;
    ev_io_init(&c->eof, on_eof, fd, EV_READ);
    c->eof.data = c;
    ev_io_start(c->b->loop, &c->eof);
}

static void cycle_wait(struct cycle *c, int need_ran)
{
    double t0 = now();

    while (!(c->gone && (c->ran || !need_ran))) {
        ev_run(c->b->loop, EVRUN_ONCE);
        if (now() - t0 > SPAWN_TIMEOUT)
            die("%s: not gone after %.0f s", c->what, SPAWN_TIMEOUT);
    }
}

static void cycle_tfork(struct bench *b, int m)
{
    struct cycle c = { .b = b, .what = method[m].id };
    tfork *p;
    int r;

    p = m == M_NEW_EXEC ? tfork_new_exec(b->loop) : tfork_new(b->loop);
    if (!p)
        die("%s: %s", c.what, strerror(errno));
    r = m == M_NEW_EOF ? 0 : tfork_on_exit(p, on_exit_cb, &c);
    if (r == 0) {
        switch (m) {
        case M_NEW:
            r = tfork_run(p, "bench_exit0", on_ran, &c);
            break;
        case M_NEW_EOF:
            r = tfork_run(p, "bench_exit0", on_ran_eof, &c);
            break;
        case M_NEW_EXEC:
            /* tfork-serve holds no code of ours: libc's close(), found
             * by dlsym, closes the socket and returns 0 -- the exit 0 of
             * AnyEvent::Fork's run("CORE::exit") */
            r = tfork_run(p, "close", on_ran, &c);
            break;
        default: {
            char *argv[] = { (char *)"tiny", NULL };

            r = tfork_exec(p, b->tiny, argv, NULL, on_ran, &c);
        }
        }
    }
    if (r < 0)
        die("%s: %s", c.what, tfork_strerror(r));
    cycle_wait(&c, 1);
    if (m != M_NEW_EOF && c.status != 0)
        die("%s: child %d: wait status 0x%x", c.what, (int)c.pid,
            (unsigned)c.status);
}

static void cycle(struct bench *b, int m)
{
    if (m == M_FORK)
        cycle_fork(b);
    else if (m == M_SPAWN)
        cycle_spawn(b);
    else
        cycle_tfork(b, m);
}

/* ---- a slice: cycles of one method, timed ---- */

struct slice {
    int n;                      /* cycles */
    double secs;                /* their total time */
    double p50, p99, mean;      /* per cycle, seconds */
};

static void run_slice(struct bench *b, int m, double tmin, int nmin,
                      struct slice *s)
{
    double t0 = now(), t = t0;
    int n = 0;

    while (n < nmin || t - t0 < tmin) {
        double c0 = t;

        if ((size_t)n == b->cap) {
            size_t ncap = b->cap ? 2 * b->cap : 4096;
            double *nl = realloc(b->lat, ncap * sizeof *nl);

            if (!nl)
                die("out of memory");
            b->lat = nl;
            b->cap = ncap;
        }
        cycle(b, m);
        t = now();
        b->lat[n++] = t - c0;
    }
    s->n = n;
    s->secs = t - t0;
    s->mean = s->secs / n;
    qsort(b->lat, (size_t)n, sizeof *b->lat, cmp_double);
    s->p50 = quantile(b->lat, n, 0.50);
    s->p99 = quantile(b->lat, n, 0.99);
}

/* One round: every method once, the order rotated by the run number so
 * that no method always runs first or right after the same one. */
static void round_run(struct bench *b, int run, const char *prefix)
{
    for (int i = 0; i < b->nuse; i++) {
        int m = b->use[(i + run) % b->nuse];
        struct slice s;

        run_slice(b, m, b->tmin, b->nmin, &s);
        printf("%s%s,%d,%d,%d,%.4f,%.1f,%.1f,%.1f,%.1f,%s\n", prefix,
               method[m].id, b->size_mib, run, s.n, s.secs, s.n / s.secs,
               s.p50 * 1e6, s.p99 * 1e6, s.mean * 1e6, method[m].gone);
        fflush(stdout);
    }
}

/* ---- memory figures from /proc ---- */

struct memfig {
    long vmrss, rss, pss, pclean, pdirty, anonhuge;    /* kB */
};

static long proc_field(const char *path, const char *key)
{
    FILE *f = fopen(path, "re");
    char line[256];
    size_t kl = strlen(key);
    long v = -1;

    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, key, kl) == 0 && line[kl] == ':') {
            v = strtol(line + kl + 1, NULL, 10);
            break;
        }
    fclose(f);
    return v;
}

static int memfig_of(pid_t pid, struct memfig *m)
{
    char st[64], sr[64];

    snprintf(st, sizeof st, "/proc/%d/status", (int)pid);
    snprintf(sr, sizeof sr, "/proc/%d/smaps_rollup", (int)pid);
    m->vmrss = proc_field(st, "VmRSS");
    m->rss = proc_field(sr, "Rss");
    m->pss = proc_field(sr, "Pss");
    m->pclean = proc_field(sr, "Private_Clean");
    m->pdirty = proc_field(sr, "Private_Dirty");
    m->anonhuge = proc_field(sr, "AnonHugePages");
    return m->vmrss < 0 || m->pclean < 0 || m->pdirty < 0 ? -1 : 0;
}

static void mem_row(const char *prefix, const char *what, pid_t pid)
{
    struct memfig m;

    if (memfig_of(pid, &m) < 0)
        die("memory of %s (pid %d): cannot read /proc/%d/smaps_rollup",
            what, (int)pid, (int)pid);
    printf("%s%s,%d,%ld,%ld,%ld,%ld,%ld,%ld\n", prefix, what, (int)pid,
           m.vmrss, m.rss, m.pss, m.pclean, m.pdirty, m.pclean + m.pdirty);
    fflush(stdout);
}

static void settle(void)
{
    /* a new process has a moment to read its HELLO and reach its poll
     * (or its run function): figures of a process mid-start say little */
    struct timespec ts = { 0, 100 * 1000 * 1000 };

    nanosleep(&ts, NULL);
}

static void wait_pid_known(struct bench *b, tfork *p, const char *what)
{
    double t0 = now();

    while (tfork_pid(p) <= 0) {
        ev_run(b->loop, EVRUN_ONCE);
        if (now() - t0 > SPAWN_TIMEOUT)
            die("%s: no pid after %.0f s", what, SPAWN_TIMEOUT);
    }
}

/* A child of tpl (or, with tpl NULL, of the default template), left
 * unrun: returned once the template has told its pid. */
static tfork *mem_child(struct bench *b, tfork *tpl, struct cycle *c)
{
    tfork *p = tpl ? tfork_fork(tpl) : tfork_new(b->loop);

    if (!p || tfork_on_exit(p, on_exit_cb, c) < 0)
        die("%s: cannot start a child: %s", c->what, strerror(errno));
    wait_pid_known(b, p, c->what);
    return p;
}

/* Memory of a template and of its children, unrun and run, from
 * /proc/PID/smaps_rollup.  With the early copy, the template is the
 * parent of a tfork_new child; without, a fresh tfork-serve from
 * tfork_new_exec.  Also a fork()ed child of this caller, for scale. */
static void mem_figures(struct bench *b, const char *prefix)
{
    struct cycle c0 = { .b = b, .what = "memory: first child", .fd = -1 };
    struct cycle c1 = { .b = b, .what = "memory: unrun child", .fd = -1 };
    struct cycle c2 = { .b = b, .what = "memory: run child", .fd = -1 };
    struct cycle ct = { .b = b, .what = "memory: template", .fd = -1 };
    const char *name = b->early ? "early copy" : "tfork-serve";
    char what[64], path[64];
    tfork *tpl = NULL, *p1, *p;
    pid_t tpid, fpid;
    int r;

    if (!b->early) {
        tpl = tfork_new_exec(b->loop);
        if (!tpl || tfork_on_exit(tpl, on_exit_cb, &ct) < 0)
            die("memory: tfork_new_exec: %s", strerror(errno));
    }
    /* a first child proves the template up and serving (and names it,
     * for the early copy); it goes again so the template is measured
     * alone, without children sharing its pages */
    p = mem_child(b, tpl, &c0);
    snprintf(path, sizeof path, "/proc/%d/status", (int)tfork_pid(p));
    tpid = tpl ? tfork_pid(tpl) : (pid_t)proc_field(path, "PPid");
    if (tpid <= 0)
        die("memory: cannot find the template's pid");
    tfork_free(p);
    cycle_wait(&c0, 0);
    settle();
    mem_row(prefix, name, tpid);

    p1 = mem_child(b, tpl, &c1);
    settle();
    snprintf(what, sizeof what, "%s child unrun", name);
    mem_row(prefix, what, tfork_pid(p1));

    /* tfork-serve holds no code of ours: libc's sleep() waits there, for
     * as many seconds as its socket's fd number -- long enough to be
     * measured, short enough that it ends by itself should we die */
    p = tpl ? tfork_fork(tpl) : tfork_new(b->loop);
    if (!p || tfork_on_exit(p, on_exit_cb, &c2) < 0)
        die("memory: cannot start a child to run: %s", strerror(errno));
    r = tfork_run(p, tpl ? "sleep" : "bench_hold", on_ran_keep, &c2);
    if (r < 0)
        die("memory: tfork_run: %s", tfork_strerror(r));
    {
        double t0 = now();

        while (!c2.ran) {
            ev_run(b->loop, EVRUN_ONCE);
            if (now() - t0 > SPAWN_TIMEOUT)
                die("memory: run child: not running after %.0f s",
                    SPAWN_TIMEOUT);
        }
    }
    settle();
    snprintf(what, sizeof what, "%s child run", name);
    mem_row(prefix, what, c2.pid);
    if (tpl)
        kill(c2.pid, SIGTERM);          /* no need to wait for sleep() */
    close(c2.fd);                       /* bench_hold returns at EOF */
    cycle_wait(&c2, 0);
    if (tpl ? !WIFSIGNALED(c2.status) : c2.status != 0)
        die("memory: run child: wait status 0x%x", (unsigned)c2.status);

    tfork_free(p1);
    cycle_wait(&c1, 0);
    if (tpl) {
        tfork_free(tpl);
        cycle_wait(&ct, 0);
    }

    /* for scale: a plain fork() of this caller, waiting in pause() */
    if (!b->early)
        return;         /* once is enough: the early caller does it */
    fpid = fork();
    if (fpid < 0)
        die("fork: %s", strerror(errno));
    if (fpid == 0) {
        alarm(30);      /* ends it should we die before the kill below */
        pause();
        _exit(0);
    }
    settle();
    snprintf(what, sizeof what, "fork() child of the %d MiB caller",
             b->size_mib);
    mem_row(prefix, what, fpid);
    kill(fpid, SIGKILL);
    (void)wait_child(fpid);
}

/* ---- the caller's heap ---- */

static void grow(struct bench *b, const char *thp)
{
    size_t bytes = (size_t)b->size_mib << 20;
    uintptr_t lo, hi;
    double t0 = now();

    b->words = bytes / sizeof *b->heap;
    /* plain malloc: the heap a program has; what THP does with it is the
     * machine's default unless -H says otherwise */
    b->heap = malloc(bytes);
    if (!b->heap)
        die("malloc %d MiB: %s", b->size_mib, strerror(errno));
    spawn_heap = b->heap;
    lo = ((uintptr_t)b->heap + 4095) & ~(uintptr_t)4095;
    hi = ((uintptr_t)b->heap + bytes) & ~(uintptr_t)4095;
    if (strcmp(thp, "huge") == 0 || strcmp(thp, "nohuge") == 0) {
        if (madvise((void *)lo, hi - lo, thp[0] == 'h' ? MADV_HUGEPAGE :
                    MADV_NOHUGEPAGE) < 0)
            die("madvise %s: %s", thp, strerror(errno));
    }
    /* faulting page by page is slow in some VMs: have the kernel
     * allocate the pages in one go (ignored before Linux 5.14), then
     * write every word anyway */
    (void)madvise((void *)lo, hi - lo, MADV_POPULATE_WRITE);
    for (size_t i = 0; i < b->words; i++)
        b->heap[i] = (i + 1) * UINT64_C(0x9e3779b97f4a7c15);
    b->grow_s = now() - t0;
}

/* Reads the whole heap back: printed at the end, so every write counts. */
static uint64_t checksum(const struct bench *b)
{
    const uint64_t *m = spawn_heap;
    uint64_t sum = 0;

    for (size_t i = 0; i < b->words; i++)
        sum += m[i] ^ (m[i] >> 29);
    return sum;
}

/* ---- main ---- */

static void usage(FILE *f)
{
    fprintf(f,
        "usage: bench/spawn [--no-early] -m MiB [-M method,...] [-t s] "
        "[-n count]\n"
        "                   [-r runs | -w] [-H default|huge|nohuge] "
        "[-x tiny]\n"
        "  -m MiB      grow the heap to this before timing (default 5)\n"
        "  -M list     methods, in order (default fork,posix_spawn,"
        "tfork_new,\n"
        "              tfork_new_eof,tfork_exec; with --no-early: "
        "tfork_new_exec)\n"
        "  -t s, -n N  a slice: at least s seconds and N cycles "
        "(default 0.5, 10)\n"
        "  -r runs     standalone: that many rounds, CSV on stdout "
        "(default 5)\n"
        "  -w          worker for bench/spawn-run.py: commands on stdin\n"
        "  -H advice   THP for the heap: default (as malloc gives it), "
        "huge, nohuge\n"
        "  -x path     the tiny static program (default: tiny next to "
        "this program)\n"
        "  --no-early  no tfork_early: tfork_new_exec execs tfork-serve\n");
}

static int parse_methods(struct bench *b, char *list)
{
    char *save = NULL;

    b->nuse = 0;
    for (char *t = strtok_r(list, ",", &save); t;
         t = strtok_r(NULL, ",", &save)) {
        int m;

        for (m = 0; m < NMETHODS && strcmp(t, method[m].id); m++)
            ;
        if (m == NMETHODS) {
            fprintf(stderr, "spawn: no method '%s'\n", t);
            return -1;
        }
        if (method[m].early >= 0 && method[m].early != b->early) {
            fprintf(stderr, "spawn: %s needs %s\n", t,
                    method[m].early ? "the early copy (drop --no-early)"
                                    : "--no-early (a real tfork-serve)");
            return -1;
        }
        if (b->nuse == NMETHODS)
            return -1;
        b->use[b->nuse++] = m;
    }
    return b->nuse ? 0 : -1;
}

static void warm_up(struct bench *b)
{
    /* untimed: starts the templates, faults in the code paths */
    for (int i = 0; i < b->nuse; i++) {
        struct slice s;

        run_slice(b, b->use[i], 0, 3, &s);
    }
}

static const char CSV_HEAD[] =
    "method,size_mib,run,spawns,seconds,spawns_per_s,p50_us,p99_us,"
    "mean_us,gone\n";

/* Worker: a line per command on stdin, answers on stdout, "done" last. */
static int serve_commands(struct bench *b)
{
    char line[256];

    while (fgets(line, sizeof line, stdin)) {
        int run;

        if (sscanf(line, "run %d", &run) == 1)
            round_run(b, run, "row,");
        else if (strncmp(line, "mem", 3) == 0)
            mem_figures(b, "mem,");
        else if (strncmp(line, "quit", 4) == 0)
            break;
        else
            die("unknown command: %s", line);
        printf("done\n");
        fflush(stdout);
    }
    printf("bye,%016llx\n", (unsigned long long)checksum(b));
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "no-early", no_argument, NULL, 'E' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 }
    };
    struct bench b;
    char *methods = NULL, *end, self[4096], tiny[4200];
    const char *thp = "default";
    int early = 1, opt, runs = 5, worker = 0, r;
    ssize_t n;
    struct memfig mf;

    /* First thing, while the program is small: the early copy, unless
     * this process is to exec real tfork-serves (tfork_new_exec forks
     * the early copy when there is one). */
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--no-early") == 0)
            early = 0;
    if (early && (r = tfork_early()) < 0) {
        fprintf(stderr, "spawn: tfork_early: %s\n", tfork_strerror(r));
        return 1;
    }

    memset(&b, 0, sizeof b);
    b.early = early;
    b.size_mib = 5;
    b.tmin = 0.5;
    b.nmin = 10;
    while ((opt = getopt_long(argc, argv, "m:M:t:n:r:wH:x:h", longopts,
                              NULL)) != -1) {
        switch (opt) {
        case 'm':
            b.size_mib = (int)strtol(optarg, &end, 10);
            if (*end || b.size_mib < 1 || b.size_mib > (1 << 22))
                goto bad;
            break;
        case 'M':
            methods = optarg;
            break;
        case 't':
            b.tmin = strtod(optarg, &end);
            if (*end || !(b.tmin >= 0 && b.tmin < 3600))
                goto bad;
            break;
        case 'n':
            b.nmin = (int)strtol(optarg, &end, 10);
            if (*end || b.nmin < 1 || b.nmin > 10000000)
                goto bad;
            break;
        case 'r':
            runs = (int)strtol(optarg, &end, 10);
            if (*end || runs < 1 || runs > 1000)
                goto bad;
            break;
        case 'w':
            worker = 1;
            break;
        case 'H':
            thp = optarg;
            if (strcmp(thp, "default") && strcmp(thp, "huge") &&
                strcmp(thp, "nohuge"))
                goto bad;
            break;
        case 'x':
            b.tiny = optarg;
            break;
        case 'E':
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            goto bad;
        }
    }
    if (optind < argc)
        goto bad;
    {
        char deflt[] = "fork,posix_spawn,tfork_new,tfork_new_eof,tfork_exec";
        char noearly[] = "tfork_new_exec";
        char *list = methods ? methods : early ? deflt : noearly;

        if (parse_methods(&b, list) < 0)
            goto bad;
    }
    if (!b.tiny) {
        n = readlink("/proc/self/exe", self, sizeof self - 1);
        if (n < 0)
            die("readlink /proc/self/exe: %s", strerror(errno));
        self[n] = '\0';
        *strrchr(self, '/') = '\0';
        snprintf(tiny, sizeof tiny, "%s/tiny", self);
        b.tiny = tiny;
    }
    if (access(b.tiny, X_OK) < 0)
        die("%s: %s (make bench builds it)", b.tiny, strerror(errno));

    /* A loop of our own, not libev's default one: the default loop takes
     * SIGCHLD and reaps every child itself, which would race fork()'s
     * and posix_spawn's waitpid. */
    b.loop = ev_loop_new(EVFLAG_AUTO);
    if (!b.loop)
        die("could not start libev");
    grow(&b, thp);
    warm_up(&b);
    if (memfig_of(getpid(), &mf) < 0)
        die("cannot read /proc/self/smaps_rollup");

    if (worker) {
        printf("ready,%d,%ld,%ld,%.2f\n", (int)getpid(), mf.vmrss,
               mf.anonhuge, b.grow_s);
        fflush(stdout);
        return serve_commands(&b);
    }
    printf("# caller: heap %d MiB (%.2f s to grow), VmRSS %ld kB, "
           "AnonHugePages %ld kB, early copy: %s\n", b.size_mib, b.grow_s,
           mf.vmrss, mf.anonhuge, early ? "yes" : "no");
    fputs(CSV_HEAD, stdout);
    for (int run = 1; run <= runs; run++)
        round_run(&b, run, "");
    printf("# memory checksum %016llx\n", (unsigned long long)checksum(&b));
    return 0;
bad:
    usage(stderr);
    return 2;
}
