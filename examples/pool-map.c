/* pool-map.c: a process pool doing work in parallel (tfork/pool.h).  A
 * copy of this program is the template (tfork_template), so the workers
 * run its own count_primes(), found by name through TFORK_EXPORT.  A pool
 * of up to -j workers (default 4, one kept idle) counts the primes below
 * each N, twice: with tfork_pool_map, printed in input order with the pid
 * of the worker that counted each; then with tfork_pool_stream, printed in
 * the order they complete.  Every count is checked against a sieve run in
 * the parent.  Then tfork_pool_free: the workers exit, on_destroy says so,
 * and the program ends.
 *
 *   examples/pool-map                        # a built-in list of N
 *   examples/pool-map -j 2 1000000 10 3000000
 *
 * Exits 0 when every count came back and matched, 1 on any failure or
 * mismatch, 2 on bad usage.  The workers are forks of this program: no
 * tfork-serve is needed. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ev.h>
#include <tfork.h>
#include <tfork/pool.h>

#define LIMIT_MAX 20000000UL    /* largest N (the parent's sieve: N bytes) */
#define INPUTS_MAX 1000         /* most N on the command line */
#define JOBS_MAX 64             /* largest -j */
#define TIMEOUT 300.0           /* give up after this many seconds */

/* ---- the workers ---- */

/* "123" -> 123: decimal digits only.  0, or -1. */
static int parse_number(const char *s, unsigned long *out)
{
    char *end;
    unsigned long v;

    if (*s < '0' || *s > '9')   /* strtoul would take "-1" and " 1" */
        return -1;
    errno = 0;
    v = strtoul(s, &end, 10);
    if (errno || *end)
        return -1;
    *out = v;
    return 0;
}

/* An N we take: 0 <= N <= LIMIT_MAX.  0, or -1. */
static int parse_limit(const char *s, unsigned long *out)
{
    unsigned long v;

    if (parse_number(s, &v) < 0 || v > LIMIT_MAX)
        return -1;
    *out = v;
    return 0;
}

/* The primes below n, by trial division: slow on purpose, the kind of
 * CPU-bound work a pool is for. */
static unsigned long primes_below(unsigned long n)
{
    unsigned long count = n > 2;    /* 2, the one even prime */

    for (unsigned k = 3; k < n; k += 2) {
        int prime = 1;

        for (unsigned d = 3; d * d <= k; d += 2) {
            if (k % d == 0) {
                prime = 0;
                break;
            }
        }
        count += (unsigned long)prime;
    }
    return count;
}

/* The pool's function, called in a worker once per call.  The call is one
 * part, N in decimal (followed by a NUL, so it is a C string); the reply
 * is two parts, the count and this worker's pid, both in decimal. */
static int count_primes(tfork_rpc_req *req, int n, const struct iovec *args)
{
    char count[32], pid[32];
    struct iovec out[2];
    unsigned long lim;

    if (n != 1 || parse_limit(args[0].iov_base, &lim) < 0) {
        char msg[96];

        snprintf(msg, sizeof msg, "count_primes: want one part, a number "
                 "from 0 to %lu", LIMIT_MAX);
        tfork_rpc_fail(req, msg);
        return 0;
    }
    snprintf(count, sizeof count, "%lu", primes_below(lim));
    snprintf(pid, sizeof pid, "%ld", (long)getpid());
    out[0].iov_base = count;
    out[0].iov_len = strlen(count);
    out[1].iov_base = pid;
    out[1].iov_len = strlen(pid);
    /* fails only when the parent is gone: nobody left to tell */
    tfork_rpc_reply(req, 2, out);
    return 0;
}
TFORK_EXPORT(count_primes);

/* ---- the parent ---- */

struct app {
    struct ev_loop *loop;
    tfork_pool *pool;
    int n;                      /* inputs */
    unsigned long *lim;         /* the N of each input */
    unsigned long *expect;      /* the parent's count for each */
    char (*text)[24];           /* each N in decimal: the call's part */
    struct iovec *inputs;       /* one part per input, into text */
    long *pids;                 /* distinct worker pids seen */
    int npids;
    int streamed;               /* stream results so far */
    double t0;                  /* when the current pass began */
    ev_timer guard;             /* TIMEOUT for the whole run */
    int destroyed;              /* on_destroy came */
    int failed;                 /* the exit status will be 1 */
};

/* The primes below each input's N, with a sieve of Eratosthenes: a second,
 * independent way to the counts the workers send.  0, or -1. */
static int sieve_counts(struct app *a)
{
    unsigned long max = 0;
    char *composite;

    for (int i = 0; i < a->n; i++)
        if (a->lim[i] > max)
            max = a->lim[i];
    composite = calloc(max + 1, 1);
    if (!composite)
        return -1;
    for (unsigned long k = 2; k * k < max; k++)
        if (!composite[k])
            for (unsigned long m = k * k; m < max; m += k)
                composite[m] = 1;
    for (int i = 0; i < a->n; i++) {
        a->expect[i] = 0;
        for (unsigned long k = 2; k < a->lim[i]; k++)
            a->expect[i] += !composite[k];
    }
    free(composite);
    return 0;
}

static void note_pid(struct app *a, long pid)
{
    for (int i = 0; i < a->npids; i++)
        if (a->pids[i] == pid)
            return;
    a->pids[a->npids++] = pid;
}

/* Checks one result against the sieve and prints it; what is wrong goes
 * to stderr and fails the run. */
static void report(struct app *a, const char *pass, int i,
                   const tfork_pool_result *r)
{
    unsigned long count, pid;

    if (r->err < 0) {
        fprintf(stderr, "pool-map: %s: N = %lu failed: %s (%s)\n", pass,
                a->lim[i], r->msg, tfork_strerror(r->err));
        a->failed = 1;
        return;
    }
    if (r->n != 2 || parse_number(r->res[0].iov_base, &count) < 0 ||
        parse_number(r->res[1].iov_base, &pid) < 0 || pid == 0) {
        fprintf(stderr, "pool-map: %s: N = %lu: a malformed reply (%d "
                "parts)\n", pass, a->lim[i], r->n);
        a->failed = 1;
        return;
    }
    note_pid(a, (long)pid);
    printf("  #%-2d primes below %8lu: %7lu   (pid %lu)%s\n", i, a->lim[i],
           count, pid, count == a->expect[i] ? "" : "   WRONG");
    if (count != a->expect[i]) {
        fprintf(stderr, "pool-map: %s: primes below %lu: the worker says "
                "%lu, the sieve %lu\n", pass, a->lim[i], count,
                a->expect[i]);
        a->failed = 1;
    }
}

/* The last step: the pool answers what it has (nothing by now), its
 * workers exit, then on_destroy. */
static void finish(struct app *a)
{
    int k = tfork_pool_workers(a->pool);

    printf("freeing the pool (%d worker%s alive)\n", k, k == 1 ? "" : "s");
    tfork_pool_free(a->pool);
}

static void on_each(int index, const tfork_pool_result *r, void *data)
{
    struct app *a = data;

    a->streamed++;
    report(a, "tfork_pool_stream", index, r);
}

static void on_stream_end(void *data)
{
    struct app *a = data;

    printf("stream: %d results in %.2f s\n", a->streamed,
           ev_now(a->loop) - a->t0);
    if (a->streamed != a->n) {
        fprintf(stderr, "pool-map: tfork_pool_stream: %d results for %d "
                "inputs\n", a->streamed, a->n);
        a->failed = 1;
    }
    finish(a);
}

static void on_map(int n, const tfork_pool_result *res, void *data)
{
    struct app *a = data;
    int r, k;

    printf("tfork_pool_map: %d results, in input order:\n", n);
    if (n != a->n) {
        fprintf(stderr, "pool-map: tfork_pool_map: %d results for %d "
                "inputs\n", n, a->n);
        a->failed = 1;
    }
    for (int i = 0; i < n && i < a->n; i++)
        report(a, "tfork_pool_map", i, &res[i]);
    k = tfork_pool_workers(a->pool);
    printf("map: %.2f s, computed by %d distinct worker%s; %d worker%s "
           "alive\n", ev_now(a->loop) - a->t0, a->npids,
           a->npids == 1 ? "" : "s", k, k == 1 ? "" : "s");

    /* The same inputs again, each result handed over as it comes. */
    printf("tfork_pool_stream: the same inputs, in completion order:\n");
    ev_now_update(a->loop);
    a->t0 = ev_now(a->loop);
    r = tfork_pool_stream(a->pool, a->n, a->inputs, on_each, on_stream_end,
                          a);
    if (r < 0) {
        fprintf(stderr, "pool-map: tfork_pool_stream: %s\n",
                tfork_strerror(r));
        a->failed = 1;
        finish(a);
    }
}

/* A worker died or never started; its calls fail with their own
 * errors, reported with them. */
static void on_worker_error(tfork_rpc *r, int err, const char *msg,
                            void *data)
{
    (void)data;
    fprintf(stderr, "pool-map: worker %ld lost: %s (%s)\n",
            (long)tfork_rpc_pid(r), msg, tfork_strerror(err));
}

static void on_destroy(tfork_pool *pool, void *data)
{
    struct app *a = data;

    (void)pool;
    a->destroyed = 1;
    a->pool = NULL;
    printf("pool destroyed: every call answered, every worker exited\n");
    /* nothing else keeps the loop running: ev_run returns */
    ev_timer_stop(a->loop, &a->guard);
}

static void on_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct app *a = w->data;

    (void)loop;
    (void)revents;
    /* exiting closes the pool's sockets: its workers go too */
    fprintf(stderr, "pool-map: timed out after %.0f s (pool %s)\n", TIMEOUT,
            a->destroyed ? "destroyed" : "still alive");
    exit(1);
}

static void usage(FILE *f, const char *prog)
{
    fprintf(f, "usage: %s [-j workers] [N...]\n"
            "  counts the primes below each N (0..%lu) in a pool of "
            "workers\n"
            "  -j J  at most J workers (default 4)\n"
            "  without N: a built-in list\n", prog, LIMIT_MAX);
}

int main(int argc, char **argv)
{
    static const unsigned long dflt[] = { 2000000, 10, 300000, 1000000,
                                          50000, 1500000, 2, 700000 };
    tfork_pool_opts o;
    struct app a;
    tfork *tpl;
    int jobs = 4, opt, r;

    setvbuf(stdout, NULL, _IOLBF, 0);
    while ((opt = getopt(argc, argv, "j:h")) != -1) {
        char *end;
        long v;

        switch (opt) {
        case 'j':
            errno = 0;
            v = strtol(optarg, &end, 10);
            if (errno || end == optarg || *end || v < 1 || v > JOBS_MAX) {
                fprintf(stderr, "pool-map: -j %s: not a number from 1 to "
                        "%d\n", optarg, JOBS_MAX);
                return 2;
            }
            jobs = (int)v;
            break;
        case 'h': usage(stdout, argv[0]); return 0;
        default: usage(stderr, argv[0]); return 2;
        }
    }

    memset(&a, 0, sizeof a);
    a.n = optind < argc ? argc - optind : (int)(sizeof dflt / sizeof *dflt);
    if (a.n > INPUTS_MAX) {
        fprintf(stderr, "pool-map: at most %d numbers\n", INPUTS_MAX);
        return 2;
    }
    a.lim = calloc((size_t)a.n, sizeof *a.lim);
    a.expect = calloc((size_t)a.n, sizeof *a.expect);
    a.text = calloc((size_t)a.n, sizeof *a.text);
    a.inputs = calloc((size_t)a.n, sizeof *a.inputs);
    a.pids = calloc((size_t)a.n, sizeof *a.pids);
    if (!a.lim || !a.expect || !a.text || !a.inputs || !a.pids) {
        fprintf(stderr, "pool-map: out of memory\n");
        return 1;
    }
    for (int i = 0; i < a.n; i++) {
        if (optind < argc) {
            if (parse_limit(argv[optind + i], &a.lim[i]) < 0) {
                fprintf(stderr, "pool-map: %s: not a number from 0 to %lu\n",
                        argv[optind + i], LIMIT_MAX);
                return 2;
            }
        } else {
            a.lim[i] = dflt[i];
        }
        snprintf(a.text[i], sizeof a.text[i], "%lu", a.lim[i]);
        a.inputs[i].iov_base = a.text[i];
        a.inputs[i].iov_len = strlen(a.text[i]);
    }

    a.loop = ev_default_loop(0);
    if (!a.loop) {
        fprintf(stderr, "pool-map: could not start libev (bad "
                "$LIBEV_FLAGS?)\n");
        return 1;
    }
    /* The template is a copy of this program, taken while it is small: it
     * has count_primes() because it is this program.  (The other way:
     * tfork_early() first thing in main(), then tfork_new_exec.) */
    tpl = tfork_template(a.loop);
    if (!tpl) {
        fprintf(stderr, "pool-map: tfork_template: %s\n", strerror(errno));
        return 1;
    }
    printf("template %ld: a copy of this program, count_primes() and all\n",
           (long)tfork_pid(tpl));

    /* The counts to check against; meanwhile the template is starting. */
    if (sieve_counts(&a) < 0) {
        fprintf(stderr, "pool-map: out of memory for the sieve\n");
        tfork_free(tpl);
        return 1;
    }

    memset(&o, 0, sizeof o);
    o.max = jobs;
    o.idle = 1;                 /* one worker at once, kept when idle */
    o.start = 0.02;             /* more, 20 ms apart, while calls wait
                                   (default 0.1 s): each call here is long */
    o.rpc.on_error = on_worker_error;
    o.on_destroy = on_destroy;
    o.data = &a;
    /* The pool owns tpl from here on, also if this fails. */
    a.pool = tfork_pool_new(tpl, "count_primes", &o);
    if (!a.pool) {
        fprintf(stderr, "pool-map: tfork_pool_new: %s\n", strerror(errno));
        return 1;
    }
    printf("pool: up to %d worker%s, 1 kept idle; %d numbers to do\n", jobs,
           jobs == 1 ? "" : "s", a.n);

    ev_timer_init(&a.guard, on_timeout, TIMEOUT, 0.);
    a.guard.data = &a;
    ev_timer_start(a.loop, &a.guard);
    ev_now_update(a.loop);      /* the sieve took a while */
    a.t0 = ev_now(a.loop);
    /* One call per input; on_map gets all the results at the end. */
    r = tfork_pool_map(a.pool, a.n, a.inputs, on_map, &a);
    if (r < 0) {
        fprintf(stderr, "pool-map: tfork_pool_map: %s\n", tfork_strerror(r));
        a.failed = 1;
        finish(&a);
    }

    /* Returns once on_destroy has come: the pending calls and the pool's
     * end kept it running, idle workers do not. */
    ev_run(a.loop, 0);

    if (!a.destroyed) {
        fprintf(stderr, "pool-map: the loop ended before the pool's "
                "on_destroy\n");
        a.failed = 1;
    }
    if (!a.failed)
        printf("all %d counts match the sieve\n", a.n);
    ev_loop_destroy(a.loop);
    free(a.lim);
    free(a.expect);
    free(a.text);
    free(a.inputs);
    free(a.pids);
    return a.failed;
}
