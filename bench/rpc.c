/* rpc.c: what a tfork_rpc round trip costs, side by side with the floor
 * under it: a raw socketpair ping-pong between two processes (a forked
 * echo child, blocking read/write on both sides), for small calls (a
 * 16-byte arg, a 16-byte reply).  Two shapes each:
 *   latency     one call at a time, the next queued from the callback
 *               (raw: write, then read the reply): p50, p99 and mean
 *               per round trip;
 *   throughput  many calls in flight (tfork: all -n queued at once; raw:
 *               a window of WINDOW messages, one write and one read
 *               each): calls per second;
 * for tfork with a sync child and with an async child, in three
 * placements: unpinned, all on one CPU, parent and children on two CPUs
 * (see "where the processes run").  Every measurement is repeated -r
 * times, interleaved, and reported as the median of the runs with their
 * spread [min..max]; then the ratios tfork / raw, run by run, and a
 * PASS/FAIL line against the goal, tfork latency <= GOAL x raw, judged
 * on the pinned placements.
 *
 *   bench/rpc [-n calls] [-r repeats] [-p free,one,two]
 *   BENCH_QUICK=1 bench/rpc        # 2000 calls per run, 5 runs: ~5 s
 *
 * The RPC children are forked from an early copy of this program
 * (tfork_early, then tfork_new) and started and warmed up before anything
 * is timed: this measures the RPC layer, not spawning.  Exits 0 when every
 * measurement ran (whatever the ratio), 1 on any error, 2 on bad usage. */
#include <errno.h>
#include <inttypes.h>
#include <sched.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>
#include <tfork.h>
#include <tfork/rpc.h>

#include "benchutil.h"

#define MSG      16             /* bytes in a call's arg and in its reply */
#define WINDOW   64             /* raw throughput: messages in flight; far
                                   below what a socketpair buffers, so no
                                   blocking write can deadlock */
#define GOAL     1.5            /* tfork latency / raw latency, at most */
#define WARMUP   1000           /* untimed calls before the first run */
#define MAGIC    UINT64_C(0x7466726b72706321)

/* ---- the RPC child: an echo, the same function for sync and async ---- */

static int bench_echo(tfork_rpc_req *req, int n, const struct iovec *args)
{
    return tfork_rpc_reply(req, n, args);   /* the reply copies args */
}
TFORK_EXPORT(bench_echo);

/* ---- helpers ---- */

/* A message carries its sequence number and a check word, so a reply
 * proves it is the echo of one call and not stale or garbled bytes. */
static void msg_fill(unsigned char *m, uint64_t seq)
{
    uint64_t chk = seq ^ MAGIC;

    memcpy(m, &seq, 8);
    memcpy(m + 8, &chk, 8);
}

/* The reply's sequence number, or -1 when it is not a message of ours. */
static int64_t msg_seq(const void *buf, size_t len)
{
    uint64_t seq, chk;

    if (len != MSG)
        return -1;
    memcpy(&seq, buf, 8);
    memcpy(&chk, (const char *)buf + 8, 8);
    return chk == (seq ^ MAGIC) && seq < INT64_MAX ? (int64_t)seq : -1;
}

static int write_full(int fd, const void *buf, size_t len)
{
    const char *p = buf;

    while (len > 0) {
        ssize_t w = write(fd, p, len);

        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -errno;
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

/* 1 when len bytes came, 0 at EOF before the first, -errno on an error
 * (-EPIPE for EOF in the middle). */
static int read_full(int fd, void *buf, size_t len)
{
    char *p = buf;
    size_t got = 0;

    while (got < len) {
        ssize_t r = read(fd, p + got, len - got);

        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -errno;
        if (r == 0)
            return got ? -EPIPE : 0;
        got += (size_t)r;
    }
    return 1;
}

/* ---- what one run measured, and the summary over runs ---- */

enum { RAW, SYNC, ASYNC, NMODES };
static const char *const mode_name[NMODES] = {
    "raw socketpair", "tfork_rpc sync", "tfork_rpc async"
};

struct sample {
    double p50, p99, mean;      /* latency run, seconds per round trip */
    double rate;                /* throughput run, calls per second */
};

struct spread {
    double med, min, max;
};

/* Median and range over r runs of the field at off; with base, of the
 * per-run ratios s[i] / base[i] (runs are interleaved: run i of each mode
 * ran side by side, so the pair shares the machine's mood of the moment). */
static struct spread spread_of(const struct sample *s,
                               const struct sample *base, int r, size_t off)
{
    double *v = malloc((size_t)r * sizeof *v);
    struct spread sp = { 0, 0, 0 };

    if (!v)
        return sp;      /* only when out of memory: zeros, no crash */
    for (int i = 0; i < r; i++) {
        double x, y = 1;

        memcpy(&x, (const char *)&s[i] + off, sizeof x);
        if (base)
            memcpy(&y, (const char *)&base[i] + off, sizeof y);
        v[i] = x / y;
    }
    qsort(v, (size_t)r, sizeof *v, cmp_double);
    sp.min = v[0];
    sp.max = v[r - 1];
    sp.med = r % 2 ? v[r / 2] : (v[r / 2 - 1] + v[r / 2]) / 2;
    free(v);
    return sp;
}

/* Latency statistics of one run: lat is sorted in place. */
static void lat_summary(double *lat, int n, struct sample *s)
{
    double sum = 0;

    for (int i = 0; i < n; i++)
        sum += lat[i];
    qsort(lat, (size_t)n, sizeof *lat, cmp_double);
    s->p50 = quantile(lat, n, 0.50);
    s->p99 = quantile(lat, n, 0.99);
    s->mean = sum / n;
}

/* ---- the raw socketpair ---- */

/* The echo child: a blocking read of one message, a blocking write of it
 * back, until EOF. */
static int echo_child(int fd)
{
    unsigned char m[MSG];

    for (;;) {
        int r = read_full(fd, m, MSG);

        if (r == 0)
            return 0;
        if (r < 0 || write_full(fd, m, MSG) < 0)
            return 1;
    }
}

/* Forks the echo child; *fd is our end.  Called before any tfork handle
 * exists, so the child holds no copy of an RPC socket (which would keep
 * an RPC child from ever seeing EOF). */
static int raw_start(pid_t *pid, int *fd)
{
    int sv[2];

    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        fprintf(stderr, "rpc: socketpair: %s\n", strerror(errno));
        return -1;
    }
    *pid = fork();
    if (*pid < 0) {
        fprintf(stderr, "rpc: fork: %s\n", strerror(errno));
        close(sv[0]);
        close(sv[1]);
        return -1;
    }
    if (*pid == 0) {
        close(sv[0]);
        _exit(echo_child(sv[1]));
    }
    close(sv[1]);
    *fd = sv[0];
    return 0;
}

static int raw_check(const unsigned char *m, int64_t want)
{
    int64_t seq = msg_seq(m, MSG);

    if (seq != want) {
        fprintf(stderr, "rpc: raw echo: reply %" PRId64 ", expected %"
                PRId64 "\n", seq, want);
        return -1;
    }
    return 0;
}

static int raw_latency(int fd, int n, double *lat, struct sample *s)
{
    unsigned char m[MSG], back[MSG];

    for (int i = 0; i < n; i++) {
        double t0;
        int r;

        msg_fill(m, (uint64_t)i);
        t0 = now();
        r = write_full(fd, m, MSG);
        if (r == 0)
            r = read_full(fd, back, MSG);
        lat[i] = now() - t0;
        if (r <= 0) {
            fprintf(stderr, "rpc: raw echo: %s\n",
                    r == 0 ? "EOF" : strerror(-r));
            return -1;
        }
        if (raw_check(back, i) < 0)
            return -1;
    }
    lat_summary(lat, n, s);
    return 0;
}

static int raw_throughput(int fd, int n, struct sample *s)
{
    unsigned char m[MSG], back[MSG];
    int sent = 0, got = 0, r;
    double t0 = now();

    while (got < n) {
        while (sent < n && sent - got < WINDOW) {
            msg_fill(m, (uint64_t)sent++);
            r = write_full(fd, m, MSG);
            if (r < 0) {
                fprintf(stderr, "rpc: raw echo: %s\n", strerror(-r));
                return -1;
            }
        }
        r = read_full(fd, back, MSG);
        if (r <= 0) {
            fprintf(stderr, "rpc: raw echo: %s\n",
                    r == 0 ? "EOF" : strerror(-r));
            return -1;
        }
        if (raw_check(back, got++) < 0)
            return -1;
    }
    s->rate = n / (now() - t0);
    return 0;
}

/* ---- tfork_rpc ---- */

struct child {                  /* one RPC child under test */
    const char *name;
    tfork_rpc *rpc;
    int lost;                   /* on_error came */
    int destroyed;              /* on_destroy came */
};

struct run {                    /* one measurement in progress */
    struct ev_loop *loop;
    struct child *c;
    int async;                  /* replies may come out of order */
    int n;                      /* calls to make */
    int sent, done;             /* calls queued, callbacks so far */
    double *lat;                /* latency runs: per-call round trip */
    double t0;                  /* latency: when the call in flight was
                                   queued; throughput: the start */
    double t_end;               /* when the last callback came */
    int failed;
};

static void on_lost(tfork_rpc *r, int err, const char *msg, void *data)
{
    struct child *c = data;

    (void)r;
    c->lost = 1;
    fprintf(stderr, "rpc: %s: lost the child: %s (%s)\n", c->name, msg,
            tfork_strerror(err));
}

static void on_destroy(tfork_rpc *r, void *data)
{
    struct child *c = data;

    (void)r;
    c->destroyed = 1;
}

/* Checks one callback's result; 0 if it is the echo of a call of ours. */
static int reply_check(struct run *u, int err, const char *msg, int n,
                       const struct iovec *res)
{
    int64_t seq;

    if (err < 0) {
        fprintf(stderr, "rpc: %s: call failed: %s (%s)\n", u->c->name, msg,
                tfork_strerror(err));
        return -1;
    }
    seq = n == 1 ? msg_seq(res[0].iov_base, res[0].iov_len) : -1;
    /* sync: in call order; async: any call of this run, once each (the
     * count of callbacks, checked at the end, does the rest) */
    if (seq < 0 || seq >= u->n || (!u->async && seq != u->done)) {
        fprintf(stderr, "rpc: %s: callback %d: not the echo of a call of "
                "ours (%d parts, sequence %" PRId64 ")\n", u->c->name,
                u->done, n, seq);
        return -1;
    }
    return 0;
}

static void lat_cb(int err, const char *msg, int n, const struct iovec *res,
                   void *data);

static void lat_send(struct run *u)
{
    unsigned char m[MSG];
    struct iovec arg = { m, MSG };
    int r;

    msg_fill(m, (uint64_t)u->sent);
    u->t0 = now();
    r = tfork_rpc_call(u->c->rpc, 1, &arg, lat_cb, u);
    if (r < 0) {
        fprintf(stderr, "rpc: %s: tfork_rpc_call: %s\n", u->c->name,
                tfork_strerror(r));
        u->failed = 1;
        return;
    }
    u->sent++;
}

static void lat_cb(int err, const char *msg, int n, const struct iovec *res,
                   void *data)
{
    struct run *u = data;
    double t = now();

    if (u->lat)
        u->lat[u->done] = t - u->t0;
    if (!u->failed && reply_check(u, err, msg, n, res) < 0)
        u->failed = 1;      /* said once: a lost child fails every call */
    u->done++;
    if (!u->failed && u->sent < u->n)
        lat_send(u);
}

static void thr_cb(int err, const char *msg, int n, const struct iovec *res,
                   void *data)
{
    struct run *u = data;

    if (!u->failed && reply_check(u, err, msg, n, res) < 0)
        u->failed = 1;      /* said once: a lost child fails every call */
    if (++u->done == u->n)
        u->t_end = now();
}

/* Runs the loop until every call of the run has had its callback (the
 * pending calls are all that keep ev_run going).  0, or -1 after saying
 * why. */
static int run_finish(struct run *u)
{
    ev_run(u->loop, 0);
    if (u->failed || u->c->lost)
        return -1;
    if (u->done != u->sent) {
        fprintf(stderr, "rpc: %s: ev_run returned with %d of %d callbacks"
                "\n", u->c->name, u->done, u->sent);
        return -1;
    }
    return 0;
}

/* lat NULL: a warm-up, nothing recorded. */
static int tfork_latency(struct ev_loop *loop, struct child *c, int async,
                         int n, double *lat, struct sample *s)
{
    struct run u;

    memset(&u, 0, sizeof u);
    u.loop = loop;
    u.c = c;
    u.async = async;
    u.n = n;
    u.lat = lat;
    lat_send(&u);
    if (run_finish(&u) < 0)
        return -1;
    if (lat)
        lat_summary(lat, n, s);
    return 0;
}

static int tfork_throughput(struct ev_loop *loop, struct child *c, int async,
                            int n, struct sample *s)
{
    unsigned char m[MSG];
    struct iovec arg = { m, MSG };
    struct run u;

    memset(&u, 0, sizeof u);
    u.loop = loop;
    u.c = c;
    u.async = async;
    u.n = n;
    u.t0 = now();
    for (int i = 0; i < n; i++) {
        int r;

        msg_fill(m, (uint64_t)i);
        r = tfork_rpc_call(c->rpc, 1, &arg, thr_cb, &u);
        if (r < 0) {
            fprintf(stderr, "rpc: %s: tfork_rpc_call: %s\n", c->name,
                    tfork_strerror(r));
            u.failed = 1;
            break;
        }
        u.sent++;
    }
    if (run_finish(&u) < 0)
        return -1;
    s->rate = n / (u.t_end - u.t0);
    return 0;
}

static int child_start(struct ev_loop *loop, struct child *c, int async)
{
    tfork_rpc_opts o;
    tfork *p = tfork_new(loop);

    if (!p) {
        fprintf(stderr, "rpc: tfork_new: %s\n", strerror(errno));
        return -1;
    }
    memset(&o, 0, sizeof o);
    o.async = async;
    o.on_error = on_lost;
    o.on_destroy = on_destroy;
    o.data = c;
    c->rpc = tfork_rpc_new(p, "bench_echo", &o);
    if (!c->rpc) {
        fprintf(stderr, "rpc: tfork_rpc_new (%s): %s\n", c->name,
                strerror(errno));
        return -1;
    }
    return 0;
}

/* ---- where the processes run ---- */

/* Where two processes run decides a round trip's cost as much as the code
 * does: on one CPU a round trip is two context switches; on two, two
 * cross-CPU wake-ups, which on a VM can cost several times more; left to
 * the scheduler, a run gets one or the other, so its figures jump between
 * two levels.  So each placement is measured on its own: unpinned first,
 * where the processes started, then every process pinned (the parent
 * re-pins itself and, by pid, its children). */
enum { UNPINNED, ONE_CPU, TWO_CPUS, NPLACES };
static const char *const place_key[NPLACES] = { "free", "one", "two" };
static const char *const place_col[NPLACES] = {
    "unpinned", "one CPU", "two CPUs"
};

struct place {
    cpu_set_t parent;           /* where the parent runs */
    cpu_set_t kids;             /* where the echo and RPC children run */
    char what[96];              /* said in the report */
    int usable;                 /* two CPUs needs two CPUs */
};

static int cpu_count(const cpu_set_t *s)
{
    return CPU_COUNT(s);
}

/* The placements on the CPUs this process may use. */
static void places_init(struct place pl[NPLACES])
{
    cpu_set_t all;
    int a = -1, b = -1;

    memset(pl, 0, NPLACES * sizeof *pl);
    CPU_ZERO(&all);
    if (sched_getaffinity(0, sizeof all, &all) < 0) {
        fprintf(stderr, "rpc: sched_getaffinity: %s (measuring unpinned "
                "only)\n", strerror(errno));
    } else {
        for (int c = 0; c < CPU_SETSIZE && b < 0; c++) {
            if (!CPU_ISSET(c, &all))
                continue;
            if (a < 0)
                a = c;
            else
                b = c;
        }
    }
    if (a >= 0) {
        CPU_SET(a, &pl[ONE_CPU].parent);
        CPU_SET(a, &pl[ONE_CPU].kids);
        snprintf(pl[ONE_CPU].what, sizeof pl[ONE_CPU].what,
                 "one CPU: parent and children all on CPU %d", a);
        pl[ONE_CPU].usable = 1;
    }
    if (b >= 0) {
        CPU_SET(a, &pl[TWO_CPUS].parent);
        CPU_SET(b, &pl[TWO_CPUS].kids);
        snprintf(pl[TWO_CPUS].what, sizeof pl[TWO_CPUS].what,
                 "two CPUs: parent on CPU %d, children on CPU %d", a, b);
        pl[TWO_CPUS].usable = 1;
    }
    pl[UNPINNED].parent = all;
    pl[UNPINNED].kids = all;
    snprintf(pl[UNPINNED].what, sizeof pl[UNPINNED].what,
             "unpinned: on any of %d CPUs, as the scheduler likes",
             cpu_count(&all));
    pl[UNPINNED].usable = 1;
}

static int place_apply(const struct place *pl, const pid_t *pids, int npids)
{
    if (sched_setaffinity(0, sizeof pl->parent, &pl->parent) < 0) {
        fprintf(stderr, "rpc: sched_setaffinity (self): %s\n",
                strerror(errno));
        return -1;
    }
    for (int i = 0; i < npids; i++) {
        if (sched_setaffinity(pids[i], sizeof pl->kids, &pl->kids) < 0) {
            fprintf(stderr, "rpc: sched_setaffinity (child %d): %s\n",
                    (int)pids[i], strerror(errno));
            return -1;
        }
    }
    return 0;
}

/* ---- main ---- */

/* -p one,two,free: which placements, as a bit mask; -1 if bad. */
static int parse_places(const char *s)
{
    int mask = 0;

    while (*s) {
        size_t len = strcspn(s, ",");
        int found = 0;

        for (int i = 0; i < NPLACES; i++) {
            if (strlen(place_key[i]) == len &&
                !strncmp(s, place_key[i], len)) {
                mask |= 1 << i;
                found = 1;
            }
        }
        if (!found)
            return -1;
        s += len + (s[len] == ',');
    }
    return mask ? mask : -1;
}

static void usage(FILE *f, const char *prog)
{
    fprintf(f, "usage: %s [-n calls] [-r repeats] [-p places]\n"
            "  -n calls    calls per run, each shape (default 10000; "
            "BENCH_QUICK=1: 2000)\n"
            "  -r repeats  runs of each measurement, 5 or more (default 7; "
            "BENCH_QUICK=1: 5)\n"
            "  -p places   comma-separated, of: free (unpinned), one (all on "
            "one CPU),\n"
            "              two (parent on one CPU, children on another); "
            "default all\n", prog);
}

/* "12.34 [11.90..13.02]": a spread, scaled, in a column (the last one
 * unpadded). */
static void print_spread(struct spread sp, double scale, int prec, int last)
{
    char cell[100];

    snprintf(cell, sizeof cell, "%.*f [%.*f..%.*f]", prec, sp.med * scale,
             prec, sp.min * scale, prec, sp.max * scale);
    printf(" %-*s", last ? 0 : 24, cell);
}

struct summary {                /* one placement, one mode, over the runs */
    struct spread p50, p99, mean, rate;
};

static void report(const struct place *pl, int n, int reps,
                   struct sample *res[NMODES], struct summary sum[NMODES])
{
    for (int m = 0; m < NMODES; m++) {
        sum[m].p50 = spread_of(res[m], NULL, reps, offsetof(struct sample, p50));
        sum[m].p99 = spread_of(res[m], NULL, reps, offsetof(struct sample, p99));
        sum[m].mean = spread_of(res[m], NULL, reps,
                                offsetof(struct sample, mean));
        sum[m].rate = spread_of(res[m], NULL, reps,
                                offsetof(struct sample, rate));
    }
    printf("\n== %s\n", pl->what);
    printf("latency, one call at a time: us per round trip, median of %d "
           "runs [min..max]\n", reps);
    printf("  %-16s %-24s %-24s %s\n", "", "p50", "p99", "mean");
    for (int m = 0; m < NMODES; m++) {
        printf("  %-16s", mode_name[m]);
        print_spread(sum[m].p50, 1e6, 1, 0);
        print_spread(sum[m].p99, 1e6, 1, 0);
        print_spread(sum[m].mean, 1e6, 1, 1);
        printf("\n");
    }
    printf("throughput, many calls in flight: calls/s, median of %d runs "
           "[min..max]\n", reps);
    for (int m = 0; m < NMODES; m++) {
        printf("  %-16s", mode_name[m]);
        print_spread(sum[m].rate, 1, 0, 0);
        if (m == RAW)
            printf(" window of %d\n", WINDOW);
        else
            printf(" all %d queued at once\n", n);
    }
}

int main(int argc, char **argv)
{
    const char *quick = getenv("BENCH_QUICK");
    int n = 10000, reps = 7, mask = (1 << NPLACES) - 1, opt, r, failed = 0;
    struct child kids[NMODES];
    struct place pl[NPLACES];
    struct sample *res[NPLACES][NMODES], scratch;
    struct summary sum[NPLACES][NMODES];
    struct ev_loop *loop;
    double *lat = NULL;
    pid_t echo_pid, pids[NMODES], w;
    int echo_fd, st, judged = 0, pass = 1;

    /* First: the pristine copy the RPC children are forked from. */
    r = tfork_early();
    if (r < 0) {
        fprintf(stderr, "rpc: tfork_early: %s\n", tfork_strerror(r));
        return 1;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (quick && *quick && strcmp(quick, "0") != 0) {
        n = 2000;
        reps = 5;
    }
    while ((opt = getopt(argc, argv, "n:r:p:h")) != -1) {
        switch (opt) {
        case 'n':
            if (parse_int(optarg, 100, 100000000, &n) < 0) {
                fprintf(stderr, "rpc: -n wants a count, 100 or more\n");
                return 2;
            }
            break;
        case 'r':
            if (parse_int(optarg, 5, 1000, &reps) < 0) {
                fprintf(stderr, "rpc: -r wants 5 to 1000 repeats\n");
                return 2;
            }
            break;
        case 'p':
            mask = parse_places(optarg);
            if (mask < 0) {
                fprintf(stderr, "rpc: -p wants one or more of free,one,two"
                        "\n");
                return 2;
            }
            break;
        case 'h':
            usage(stdout, argv[0]);
            return 0;
        default:
            usage(stderr, argv[0]);
            return 2;
        }
    }
    if (optind < argc) {
        usage(stderr, argv[0]);
        return 2;
    }
    places_init(pl);

    if (raw_start(&echo_pid, &echo_fd) < 0)
        return 1;
    /* A loop of our own: libev's default loop would reap every child,
     * the echo child too, behind our waitpid. */
    loop = ev_loop_new(EVFLAG_AUTO);
    if (!loop) {
        fprintf(stderr, "rpc: could not start libev\n");
        close(echo_fd);
        waitpid(echo_pid, NULL, 0);
        return 1;
    }
    memset(kids, 0, sizeof kids);
    memset(res, 0, sizeof res);
    for (int m = 0; m < NMODES; m++)
        kids[m].name = mode_name[m];
    lat = malloc((size_t)n * sizeof *lat);
    failed = !lat;
    for (int p = 0; p < NPLACES; p++) {
        for (int m = 0; m < NMODES; m++) {
            res[p][m] = calloc((size_t)reps, sizeof *res[p][m]);
            failed |= !res[p][m];
        }
    }
    if (failed)
        fprintf(stderr, "rpc: out of memory\n");
    /* Started and warmed up untimed: no spawn in any figure. */
    if (!failed && (child_start(loop, &kids[SYNC], 0) < 0 ||
                    child_start(loop, &kids[ASYNC], 1) < 0))
        failed = 1;
    if (!failed &&
        (tfork_latency(loop, &kids[SYNC], 0, WARMUP, NULL, NULL) < 0 ||
         tfork_latency(loop, &kids[ASYNC], 1, WARMUP, NULL, NULL) < 0))
        failed = 1;
    pids[RAW] = echo_pid;
    if (!failed) {
        pids[SYNC] = tfork_rpc_pid(kids[SYNC].rpc);
        pids[ASYNC] = tfork_rpc_pid(kids[ASYNC].rpc);
        printf("rpc: round trips of a %d-byte call with a %d-byte reply; "
               "%d calls per run,\n     %d runs of each, interleaved; "
               "children: raw echo %d, sync %d, async %d\n", MSG, MSG, n,
               reps, (int)pids[RAW], (int)pids[SYNC], (int)pids[ASYNC]);
    }

    for (int p = 0; p < NPLACES && !failed; p++) {
        if (!(mask & (1 << p)))
            continue;
        if (!pl[p].usable) {
            printf("\n== %s: skipped, only one CPU to run on\n",
                   place_col[p]);
            continue;
        }
        /* pinned anew, then a short warm-up: caches, and the migration
         * over before anything is timed */
        if (place_apply(&pl[p], pids, NMODES) < 0 ||
            raw_latency(echo_fd, WARMUP < n ? WARMUP : n, lat,
                        &scratch) < 0 ||
            tfork_latency(loop, &kids[SYNC], 0, WARMUP, NULL, NULL) < 0 ||
            tfork_latency(loop, &kids[ASYNC], 1, WARMUP, NULL, NULL) < 0) {
            failed = 1;
            break;
        }
        /* Each repeat runs every mode once, starting with another mode
         * each time, so drifts of a noisy machine fall on all alike. */
        for (int i = 0; i < reps && !failed; i++) {
            for (int k = 0; k < NMODES && !failed; k++) {
                int m = (i + k) % NMODES;
                struct sample *s = &res[p][m][i];

                if (m == RAW)
                    failed = raw_latency(echo_fd, n, lat, s) < 0 ||
                             raw_throughput(echo_fd, n, s) < 0;
                else
                    failed = tfork_latency(loop, &kids[m], m == ASYNC, n,
                                           lat, s) < 0 ||
                             tfork_throughput(loop, &kids[m], m == ASYNC,
                                              n, s) < 0;
            }
        }
        if (!failed)
            report(&pl[p], n, reps, res[p], sum[p]);
    }

    if (!failed) {
        static const char *const what[] = {
            "latency p50", "latency p99", "latency mean", "throughput"
        };
        static const size_t off[] = {
            offsetof(struct sample, p50), offsetof(struct sample, p99),
            offsetof(struct sample, mean), offsetof(struct sample, rate)
        };
        int ncols = 0;

        for (int p = 0; p < NPLACES; p++)
            ncols += (mask & (1 << p)) && pl[p].usable;

        printf("\ntfork_rpc / raw socketpair, run by run: median of the %d "
               "ratios [min..max]\n(latency: below 1 is tfork faster; "
               "throughput: above 1 is)\n", reps);
        printf("  %-18s", "");
        for (int p = 0, k = 0; p < NPLACES; p++)
            if ((mask & (1 << p)) && pl[p].usable)
                printf(" %-*s", ++k < ncols ? 19 : 0, place_col[p]);
        printf("\n");
        for (int m = SYNC; m < NMODES; m++) {
            for (int q = 0; q < 4; q++) {
                printf("  %-5s %-12s", q ? "" : m == SYNC ? "sync" : "async",
                       what[q]);
                for (int p = 0, k = 0; p < NPLACES; p++) {
                    struct spread x;
                    char cell[64];

                    if (!(mask & (1 << p)) || !pl[p].usable)
                        continue;
                    x = spread_of(res[p][m], res[p][RAW], reps, off[q]);
                    snprintf(cell, sizeof cell, "%.2fx [%.2f..%.2f]", x.med,
                             x.min, x.max);
                    printf(" %-*s", ++k < ncols ? 19 : 0, cell);
                    /* The goal is judged where the placement is fixed:
                     * unpinned, a ratio mostly says where the scheduler
                     * happened to put each pair. */
                    if (q == 0 && p != UNPINNED) {
                        judged++;
                        if (!(x.med <= GOAL))
                            pass = 0;
                    }
                }
                printf("\n");
            }
        }
        printf("goal: tfork_rpc latency p50 <= %.1fx raw socketpair (median "
               "ratio, pinned placements): ", GOAL);
        if (judged)
            printf("%s\n", pass ? "PASS" : "FAIL");
        else
            printf("no verdict (-p free only)\n");
    }

    /* The end: the RPC children see EOF and exit (on_destroy), the echo
     * child sees EOF and exits 0. */
    for (int m = SYNC; m < NMODES; m++)
        tfork_rpc_free(kids[m].rpc);    /* lost: released at once */
    ev_run(loop, 0);
    for (int m = SYNC; m < NMODES; m++) {
        if (kids[m].rpc && !kids[m].lost && !kids[m].destroyed) {
            fprintf(stderr, "rpc: %s: no on_destroy after tfork_rpc_free\n",
                    kids[m].name);
            failed = 1;
        }
    }
    close(echo_fd);
    do
        w = waitpid(echo_pid, &st, 0);
    while (w < 0 && errno == EINTR);
    if (w < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "rpc: the raw echo child did not exit cleanly\n");
        failed = 1;
    }
    ev_loop_destroy(loop);
    for (int p = 0; p < NPLACES; p++)
        for (int m = 0; m < NMODES; m++)
            free(res[p][m]);
    free(lat);
    if (failed)
        fprintf(stderr, "rpc: failed\n");
    return failed ? 1 : 0;
}
