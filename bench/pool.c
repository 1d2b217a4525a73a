/* pool.c: what a tfork pool costs per call and how it scales.  Small calls
 * (16-byte argument, 16-byte reply, a few ns of work) through pools of 1,
 * 2 and 4 workers (max = idle = k; load 1, and load 4 with rpc.async),
 * all the calls of a run queued at once, against the same calls pipelined
 * to a single RPC child (tfork_rpc_new); then calls of ~1 ms CPU each,
 * to show the scaling with workers on this machine's CPUs.
 *
 *   bench/pool [-n calls] [-s calls] [-w us] [-r runs]
 *   BENCH_QUICK=1 bench/pool        # small sizes: a smoke run, < 20 s
 *
 * Every figure is the median of the runs, with min..max; the runs of all
 * setups are interleaved, so a noisy moment hits them alike.  calls/s is
 * calls / (first call queued .. last reply); us/call is its inverse.
 * With load 1 a worker has one call at a time, so a pool of 1 is also set
 * against an RPC child with one call in flight: both then wait a round
 * trip per call, cheap when the two processes share a CPU and dear when
 * each wake-up crosses CPUs; `taskset -c 0 bench/pool` pins them all.
 * Workers are forks of this program (tfork_early): no tfork-serve needed.
 * Exits 1 if any call fails or a reply is wrong, 2 on bad usage. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE             /* CPU_COUNT, sched_getaffinity */
#endif
#include <errno.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>
#include <tfork.h>
#include <tfork/pool.h>

#include "benchutil.h"

#define RUNS_MAX 1000
#define TINY_ITERS 16           /* the small calls' work: ~20 ns */
#define BATCH_TIMEOUT 300.0     /* one run may take this long */
#define PIDS_MAX 16             /* distinct workers counted per run */

/* ---- the workers ---- */

/* The call's argument and its reply: 16 bytes each. */
struct call_arg {
    uint64_t iters;             /* work: rounds of spin() */
    uint32_t seq;               /* the call's number in its run */
    uint32_t pad;
};
struct call_reply {
    uint64_t x;                 /* spin(iters, seq) */
    uint32_t seq;               /* the argument's */
    uint32_t pid;               /* the worker that did it */
};

/* CPU work the compiler cannot fold: a chain of dependent multiplies. */
static uint64_t spin(uint64_t iters, uint64_t x)
{
    for (uint64_t i = 0; i < iters; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        __asm__ volatile("" : "+r"(x));
    }
    return x;
}

/* The function every worker and the RPC child run, sync or async: the
 * work asked for, then the reply, at once. */
static int bench_work(tfork_rpc_req *req, int n, const struct iovec *args)
{
    struct call_arg a;
    struct call_reply r;
    struct iovec out;

    if (n != 1 || args[0].iov_len != sizeof a) {
        tfork_rpc_fail(req, "bench_work: want one 16-byte part");
        return 0;
    }
    memcpy(&a, args[0].iov_base, sizeof a);
    r.x = spin(a.iters, a.seq);
    r.seq = a.seq;
    r.pid = (uint32_t)getpid();
    out.iov_base = &r;
    out.iov_len = sizeof r;
    tfork_rpc_reply(req, 1, &out);
    return 0;
}
TFORK_EXPORT(bench_work);

/* ---- the parent ---- */

/* One setup measured: a pool or a single RPC child. */
struct setup {
    const char *label;
    int workers;                /* pool: max = idle; 0: a single RPC child */
    int load;                   /* pool: calls in flight per worker */
    int async;                  /* rpc.async */
    int spin;                   /* also measured with ~1 ms calls */
    int serial;                 /* rpc: one call in flight at a time */
    tfork_pool *pool;
    tfork_rpc *rpc;
    double *tiny;               /* calls/s of each run, small calls */
    double *slow;               /* and ~1 ms calls */
    int used;                   /* workers that answered the last ~1 ms run */
};

static struct setup setups[] = {
    { .label = "rpc child, sync,  pipelined", .spin = 1 },
    { .label = "rpc child, async, pipelined", .async = 1 },
    { .label = "rpc child, sync,  1 in flight", .serial = 1 },
    { .label = "pool, 1 worker,  load 1", .workers = 1, .load = 1, .spin = 1 },
    { .label = "pool, 2 workers, load 1", .workers = 2, .load = 1, .spin = 1 },
    { .label = "pool, 4 workers, load 1", .workers = 4, .load = 1, .spin = 1 },
    { .label = "pool, 1 worker,  load 4 async", .workers = 1, .load = 4,
      .async = 1 },
    { .label = "pool, 2 workers, load 4 async", .workers = 2, .load = 4,
      .async = 1 },
    { .label = "pool, 4 workers, load 4 async", .workers = 4, .load = 4,
      .async = 1 },
};
#define NSETUPS ((int)(sizeof setups / sizeof *setups))
enum { RPC_SYNC, RPC_ASYNC, RPC_SERIAL, POOL1, POOL2, POOL4, POOL1A, POOL2A,
       POOL4A };

/* The run in progress (callbacks get the call's number as their data). */
static struct {
    struct ev_loop *loop;
    ev_timer guard;             /* BATCH_TIMEOUT */
    struct setup *cur;          /* the setup being run */
    int want, issued, done;     /* calls of the run; made; answered */
    uint64_t iters;             /* the run's work per call */
    uint32_t pids[PIDS_MAX];    /* workers that answered */
    int npids;
    int destroyed;              /* pools and RPC children ended cleanly */
} B;

static double cpu_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void issue(void);

static void on_reply(int err, const char *msg, int n,
                     const struct iovec *res, void *data)
{
    uint32_t seq = (uint32_t)(uintptr_t)data;
    struct call_reply r;
    int i;

    /* a benchmark of broken calls measures nothing: stop here (exiting
     * closes every socket, so the workers go too) */
    if (err < 0) {
        fprintf(stderr, "bench/pool: call %u failed: %s (%s)\n", seq, msg,
                tfork_strerror(err));
        exit(1);
    }
    if (n != 1 || res[0].iov_len != sizeof r) {
        fprintf(stderr, "bench/pool: call %u: a malformed reply\n", seq);
        exit(1);
    }
    memcpy(&r, res[0].iov_base, sizeof r);
    /* the small calls' work is checked too; ~1 ms ones only by seq */
    if (r.seq != seq || (B.iters == TINY_ITERS &&
                         r.x != spin(TINY_ITERS, seq))) {
        fprintf(stderr, "bench/pool: call %u: a wrong reply (seq %u)\n",
                seq, r.seq);
        exit(1);
    }
    for (i = 0; i < B.npids && B.pids[i] != r.pid; i++)
        ;
    if (i == B.npids && B.npids < PIDS_MAX)
        B.pids[B.npids++] = r.pid;
    B.done++;
    if (B.cur->serial && B.issued < B.want)
        issue();                /* the next, now that this one is back */
}

static void on_guard(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    fprintf(stderr, "bench/pool: a run took over %.0f s (%d of %d replies)"
            "\n", BATCH_TIMEOUT, B.done, B.want);
    exit(1);
}

/* Makes the run's next call. */
static void issue(void)
{
    struct setup *s = B.cur;
    uint32_t seq = (uint32_t)B.issued++;
    struct call_arg a = { B.iters, seq, 0 };
    struct iovec v = { &a, sizeof a };
    void *data = (void *)(uintptr_t)seq;
    int r = s->pool ? tfork_pool_call(s->pool, 1, &v, on_reply, data)
                    : tfork_rpc_call(s->rpc, 1, &v, on_reply, data);

    if (r < 0) {
        fprintf(stderr, "bench/pool: %s: call %u: %s\n", s->label, seq,
                tfork_strerror(r));
        exit(1);
    }
}

/* One run: ncalls queued at once (serial: one, each reply making the
 * next), then the loop until the last reply.  Returns calls/s. */
static double run(struct setup *s, int ncalls, uint64_t iters)
{
    double t0, t1;

    B.cur = s;
    B.want = ncalls;
    B.issued = 0;
    B.done = 0;
    B.iters = iters;
    B.npids = 0;
    ev_timer_set(&B.guard, BATCH_TIMEOUT, 0.);
    ev_timer_start(B.loop, &B.guard);
    t0 = now();
    while (B.issued < (s->serial ? 1 : ncalls))
        issue();
    while (B.done < ncalls)
        ev_run(B.loop, EVRUN_ONCE);
    t1 = now();
    ev_timer_stop(B.loop, &B.guard);
    return ncalls / (t1 - t0);
}

static void on_error(tfork_rpc *r, int err, const char *msg, void *data)
{
    struct setup *s = data;

    fprintf(stderr, "bench/pool: %s: child %ld lost: %s (%s)\n", s->label,
            (long)tfork_rpc_pid(r), msg, tfork_strerror(err));
}

static void on_rpc_destroy(tfork_rpc *r, void *data)
{
    (void)r;
    (void)data;
    B.destroyed++;
}

static void on_pool_destroy(tfork_pool *pool, void *data)
{
    (void)pool;
    (void)data;
    B.destroyed++;
}

/* Starts s's pool or RPC child; exits on failure. */
static void setup_start(struct setup *s)
{
    if (s->workers) {
        tfork_pool_opts o;
        /* a template per pool: a fork of the early copy, with the
         * function because it is this program */
        tfork *tpl = tfork_new_exec(B.loop);

        if (!tpl) {
            fprintf(stderr, "bench/pool: tfork_new_exec: %s\n",
                    strerror(errno));
            exit(1);
        }
        memset(&o, 0, sizeof o);
        o.max = o.idle = s->workers;    /* all started now, all kept */
        o.load = s->load;
        o.rpc.async = s->async;
        o.rpc.on_error = on_error;
        o.rpc.data = s;
        o.on_destroy = on_pool_destroy;
        s->pool = tfork_pool_new(tpl, "bench_work", &o);
        if (!s->pool) {
            fprintf(stderr, "bench/pool: tfork_pool_new: %s\n",
                    strerror(errno));
            exit(1);
        }
    } else {
        tfork_rpc_opts o;
        tfork *p = tfork_new(B.loop);   /* a child of the early copy */

        if (!p) {
            fprintf(stderr, "bench/pool: tfork_new: %s\n", strerror(errno));
            exit(1);
        }
        memset(&o, 0, sizeof o);
        o.async = s->async;
        o.on_error = on_error;
        o.on_destroy = on_rpc_destroy;
        o.data = s;
        s->rpc = tfork_rpc_new(p, "bench_work", &o);
        if (!s->rpc) {
            fprintf(stderr, "bench/pool: tfork_rpc_new: %s\n",
                    strerror(errno));
            exit(1);
        }
    }
}

struct stats {
    double med, min, max;
};

static struct stats stats(const double *v, int n)
{
    double s[RUNS_MAX];
    struct stats st;

    memcpy(s, v, (size_t)n * sizeof *s);
    qsort(s, (size_t)n, sizeof *s, cmp_double);
    st.min = s[0];
    st.max = s[n - 1];
    st.med = n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
    return st;
}

/* Rounds of spin() that take about us microseconds of CPU: the best of a
 * few measurements, as interruptions only make a round slower. */
static uint64_t calibrate(double us)
{
    const uint64_t probe = 1u << 20;
    double best = 0;

    for (int i = 0; i < 7; i++) {
        double t0 = cpu_now(), t;

        spin(probe, (uint64_t)i);
        t = cpu_now() - t0;
        if (i == 0 || t < best)
            best = t;
    }
    return (uint64_t)((double)probe * us * 1e-6 / best) + 1;
}

static void row(const struct setup *s, const double *v, int runs)
{
    struct stats st = stats(v, runs);

    printf("  %-31s %9.0f  (%7.0f ..%7.0f) %8.2f\n", s->label, st.med,
           st.min, st.max, 1e6 / st.med);
}

/* The pool's cost per call over a single RPC child's, from the medians,
 * and the spread of the per-run ratios (the two ran back to back). */
static void overhead(const struct setup *p, const struct setup *r, int runs)
{
    double ratios[RUNS_MAX];
    struct stats sp = stats(p->tiny, runs), sr = stats(r->tiny, runs), q;

    for (int i = 0; i < runs; i++)
        ratios[i] = r->tiny[i] / p->tiny[i];
    q = stats(ratios, runs);
    printf("  %s  vs  %s\n    %.2f vs %.2f us/call: x%.2f, %+.2f us per "
           "call (per-run ratios x%.2f .. x%.2f)\n", p->label, r->label,
           1e6 / sp.med, 1e6 / sr.med, sr.med / sp.med,
           1e6 / sp.med - 1e6 / sr.med, q.min, q.max);
}

static void usage(FILE *f, const char *prog)
{
    fprintf(f, "usage: %s [-n calls] [-s calls] [-w us] [-r runs]\n"
            "  -n N  small calls per run (default 20000; BENCH_QUICK=1: "
            "2000)\n"
            "  -s N  ~1 ms calls per run (default 400; BENCH_QUICK=1: 100)\n"
            "  -w U  CPU work of those calls in us (default 1000)\n"
            "  -r R  runs of each setup, at least 5; figures are medians\n"
            "        (default 7; BENCH_QUICK=1: 5)\n", prog);
}

int main(int argc, char **argv)
{
    const char *quick = getenv("BENCH_QUICK");
    int ncalls = 20000, nslow = 400, work_us = 1000, runs = 7, opt, r;
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    cpu_set_t cpus;
    int usable = 0;
    uint64_t slow_iters;
    double t_start = now(), base;

    /* First: the pristine copy every template and child is forked from,
     * taken before this program has anything worth copying. */
    r = tfork_early();
    if (r < 0) {
        fprintf(stderr, "bench/pool: tfork_early: %s\n", tfork_strerror(r));
        return 1;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (quick && *quick && strcmp(quick, "0")) {
        ncalls = 2000;
        nslow = 100;
        runs = 5;
    }
    while ((opt = getopt(argc, argv, "n:s:w:r:h")) != -1) {
        int bad = 0;

        switch (opt) {
        case 'n': bad = parse_int(optarg, 1, 10000000, &ncalls); break;
        case 's': bad = parse_int(optarg, 1, 1000000, &nslow); break;
        case 'w': bad = parse_int(optarg, 1, 1000000, &work_us); break;
        case 'r': bad = parse_int(optarg, 5, RUNS_MAX, &runs); break;
        case 'h': usage(stdout, argv[0]); return 0;
        default: usage(stderr, argv[0]); return 2;
        }
        if (bad) {
            fprintf(stderr, "bench/pool: -%c %s: not a number in range\n",
                    opt, optarg);
            return 2;
        }
    }
    if (optind < argc) {
        usage(stderr, argv[0]);
        return 2;
    }
    if (sched_getaffinity(0, sizeof cpus, &cpus) == 0)
        usable = CPU_COUNT(&cpus);

    B.loop = ev_default_loop(0);
    if (!B.loop) {
        fprintf(stderr, "bench/pool: could not start libev\n");
        return 1;
    }
    ev_timer_init(&B.guard, on_guard, BATCH_TIMEOUT, 0.);
    for (int i = 0; i < NSETUPS; i++) {
        setups[i].tiny = calloc((size_t)runs, sizeof(double));
        setups[i].slow = calloc((size_t)runs, sizeof(double));
        if (!setups[i].tiny || !setups[i].slow) {
            fprintf(stderr, "bench/pool: out of memory\n");
            return 1;
        }
    }
    slow_iters = calibrate(work_us);

    printf("tfork pool benchmark (tfork %s)\n", tfork_version());
    printf("CPUs: %ld online, %d usable by this process\n", online, usable);
    printf("each call: a 16-byte argument and a 16-byte reply; every run "
           "queues all its calls at once\n");
    printf("figures: median of %d runs (min .. max); us/call = 1 / "
           "(calls/s)\n", runs);

    for (int i = 0; i < NSETUPS; i++)
        setup_start(&setups[i]);
    /* Warm-up: every worker started and has served, the memory paths
     * are warm; not measured. */
    for (int i = 0; i < NSETUPS; i++) {
        run(&setups[i], ncalls < 1000 ? ncalls : 1000, TINY_ITERS);
        if (setups[i].workers && B.npids != setups[i].workers)
            printf("  (warm-up: %s: %d of %d workers answered)\n",
                   setups[i].label, B.npids, setups[i].workers);
    }

    printf("\nsmall calls (%d rounds of work, ~%.0f ns), %d calls per run:\n",
           TINY_ITERS, 1e3 * TINY_ITERS * work_us / (double)slow_iters,
           ncalls);
    for (int k = 0; k < runs; k++)
        for (int i = 0; i < NSETUPS; i++)
            setups[i].tiny[k] = run(&setups[i], ncalls, TINY_ITERS);
    printf("  %-31s %9s  (%7s ..%7s) %8s\n", "setup", "calls/s", "min",
           "max", "us/call");
    for (int i = 0; i < NSETUPS; i++)
        row(&setups[i], setups[i].tiny, runs);
    printf("\npool overhead per call against a single RPC child (same "
           "function, same calls):\n");
    overhead(&setups[POOL1], &setups[RPC_SYNC], runs);
    overhead(&setups[POOL1A], &setups[RPC_ASYNC], runs);
    /* load 1 is one call at a time per worker: most of the gap above is
     * the round trip, which the pipelined child does not wait for */
    overhead(&setups[POOL1], &setups[RPC_SERIAL], runs);
    printf("  (one call in flight waits a round trip per call: its cost "
           "depends on whether\n   the two processes share a CPU; under "
           "`taskset -c 0` the last ratio is the\n   pool's own cost)\n");

    printf("\ncalls of ~%d us CPU each (%llu rounds), %d calls per run:\n",
           work_us, (unsigned long long)slow_iters, nslow);
    for (int k = 0; k < runs; k++)
        for (int i = 0; i < NSETUPS; i++)
            if (setups[i].spin) {
                setups[i].slow[k] = run(&setups[i], nslow, slow_iters);
                setups[i].used = B.npids;
            }
    printf("  %-31s %9s  (%7s ..%7s) %8s %8s %6s\n", "setup", "calls/s",
           "min", "max", "us/call", "speedup", "used");
    base = stats(setups[POOL1].slow, runs).med;
    for (int i = 0; i < NSETUPS; i++) {
        struct stats st;

        if (!setups[i].spin)
            continue;
        st = stats(setups[i].slow, runs);
        printf("  %-31s %9.1f  (%7.1f ..%7.1f) %8.1f %7.2fx %6d\n",
               setups[i].label, st.med, st.min, st.max, 1e6 / st.med,
               st.med / base, setups[i].used);
    }
    printf("  (speedup: against the pool of 1 worker; at best the number "
           "of CPUs, %d)\n", usable ? usable : (int)online);

    /* A clean end: every pool and child exits, every on_destroy comes. */
    for (int i = 0; i < NSETUPS; i++) {
        if (setups[i].pool)
            tfork_pool_free(setups[i].pool);
        else
            tfork_rpc_free(setups[i].rpc);
    }
    ev_timer_set(&B.guard, BATCH_TIMEOUT, 0.);
    ev_timer_start(B.loop, &B.guard);
    while (B.destroyed < NSETUPS)
        ev_run(B.loop, EVRUN_ONCE);
    ev_timer_stop(B.loop, &B.guard);
    printf("\nall pools and children ended cleanly; %.1f s in all\n",
           now() - t_start);
    for (int i = 0; i < NSETUPS; i++) {
        free(setups[i].tiny);
        free(setups[i].slow);
    }
    return 0;
}
