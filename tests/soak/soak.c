/* soak.c: `make soak`, a long run (not part of make check) that looks for
 * what leaks only over many spawns: descriptors, children, zombies and
 * template memory.  One libev loop, the early copy as the template:
 *
 *   phase A  SOAK_CYCLES (default 100000) spawn cycles, SOAK_INFLIGHT (64)
 *            at a time: most are tfork_new + tfork_run of a function that
 *            returns at once + on_exit; 10% tfork_exec of a static program
 *            (argv[1], else /bin/true); 5% a tfork_fork grandchild beside
 *            its parent; 2% an RPC child (new, one call, graceful free);
 *            5% a call to a pool made afresh for each block of cycles
 *            (max_reqs recycles its workers).  After every block of 10000
 *            the cycles drain, the pool is freed, and a sample is taken:
 *            fds of the client and of the template, children of both
 *            (zombies included), template VmRSS and Private
 *            (smaps_rollup), client VmRSS and heap in use (mallinfo2).
 *   phase B  SOAK_HOLD (default 1000) children alive at once, each blocked
 *            reading its socket: the template must have exactly that many
 *            children and the client that many more fds; then every
 *            socket is closed and everything must come back.
 *
 * The baseline is taken after a warm-up block (the first tfork_new binds
 * the early copy to the loop and opens what the library keeps for it).
 * Fails (exit 1, with the figures) when any count is not back to the
 * baseline within SETTLE_S after a block, when a callback reports an
 * error or a nonzero exit status, or when memory grows beyond the bounds
 * below between the first sample and the last.  Under ASan the memory
 * figures are printed but not judged: its allocator keeps freed memory
 * in quarantine, so RSS grows by design. */
#include <dirent.h>
#include <errno.h>
#include <malloc.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>
#include <tfork.h>
#include <tfork/pool.h>
#include <tfork/rpc.h>

#if defined(__SANITIZE_ADDRESS__)
#define SOAK_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SOAK_ASAN 1
#endif
#endif
#ifndef SOAK_ASAN
#define SOAK_ASAN 0
#endif

#define SOAK_CYCLES_DEF 100000  /* phase A cycles */
#define SOAK_EVERY      10000   /* cycles per block: a sample after each */
#define SOAK_WARMUP     1000    /* cycles before the baseline */
#define SOAK_INFLIGHT   64      /* cycles in flight at once */
#define SOAK_HOLD_DEF   1000    /* phase B children alive at once */
#define SETTLE_S        20.0    /* counts must be back within this */
#define STALL_S         60.0    /* no cycle finished for this long: hung */
/* Memory bounds, first sample to last (KiB).  The template allocates per
 * command and frees it again: 90000 cycles leaking one allocation each
 * (32 bytes at least) would show as ~2.8 MiB.  The client's heap in use
 * (mallinfo2) is the finer figure: libev's arrays and malloc's free
 * lists reach their size with the peak number of handles in flight, in
 * the first block already; its RSS bound leaves room for page noise. */
#define TPL_RSS_MAX_KB   64
#define TPL_PRIV_MAX_KB  64
#define CLI_RSS_MAX_KB   256
#define CLI_HEAP_MAX_KB  64
#define MAX_SAMPLES      1024

/* ---- what the children run (found by TFORK_EXPORT in the early copy) */

/* Returns at once: the child exits 0. */
static int soak_exit0(int fd, int argc, const tfork_arg *argv)
{
    (void)fd;
    (void)argc;
    (void)argv;
    return 0;
}
TFORK_EXPORT(soak_exit0);

/* Blocks until the client closes its end, then exits 0. */
static int soak_hold(int fd, int argc, const tfork_arg *argv)
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
TFORK_EXPORT(soak_hold);

/* RPC and pool worker: the arguments come back as the reply. */
static int soak_echo(tfork_rpc_req *req, int n, const struct iovec *args)
{
    return tfork_rpc_reply(req, n, args);
}
TFORK_EXPORT(soak_echo);

/* ---- the state of the run ---- */

enum kind { K_RUN, K_EXEC, K_GCHILD, K_RPC, K_POOL, K_HOLD, NKINDS };
static const char *const kind_name[NKINDS] = {
    "run", "exec", "grandchild", "rpc", "pool", "hold"
};

struct sample {
    const char *label;          /* "baseline", "A", "B alive", ... */
    long cycles;                /* phase A cycles done */
    double secs;                /* since phase A began */
    double rate;                /* cycles/s over the block */
    int cfds, tfds;             /* open fds: client, template */
    int tkids, ckids;           /* children (zombies included) */
    int zombies;                /* of the template and of the client */
    long trss, tpriv, crss;     /* KiB */
    long cheap;                 /* client heap in use (mallinfo2), KiB */
};

struct soak {
    struct ev_loop *loop;
    pid_t tpl;                  /* the early copy's pid */
    char *tiny;                 /* what exec cycles run */
    long cycles;                /* phase A cycles asked for */
    int hold_n;                 /* phase B children */
    long started, done;         /* cycles (phase A, warm-up included) */
    long limit;                 /* start no cycle beyond this one */
    int inflight;
    long by_kind[NKINDS];       /* cycles finished, by kind */
    tfork_pool *pool;           /* this block's pool, or NULL */
    int pool_gone;              /* its on_destroy came */
    long nerr;                  /* failures seen */
    int *hold_fds;              /* phase B: our ends of the sockets */
    int held;                   /* phase B: run callbacks with a socket */
    int hold_ran;               /* phase B: run callbacks, failed or not */
    int hold_next;              /* phase B: next slot to start */
    int hold_exits;             /* phase B: exits seen */
    double t0;                  /* phase A start */
    struct sample smp[MAX_SAMPLES];
    int nsmp;
    struct sample base;         /* after the warm-up */
};

/* One cycle: freed when its last expected callback has come. */
struct job {
    struct soak *s;
    enum kind kind;
    long n;                     /* cycle number */
    int pending;                /* callbacks still to come */
    int slot;                   /* phase B: index into hold_fds */
    size_t arglen;
    char arg[48];               /* RPC/pool argument, the expected reply */
};

static void print_table(const struct soak *s);

static double now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(struct soak *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3), noreturn));

/* A broken premise (a call refused, a hang): nothing after it would
 * mean anything; the table so far still goes out. */
static void die(struct soak *s, const char *fmt, ...)
{
    va_list ap;

    if (s)
        print_table(s);
    fflush(stdout);
    fprintf(stderr, "soak: FAIL: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

static void fail(struct soak *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* A failure that lets the run go on: counted, the first few printed. */
static void fail(struct soak *s, const char *fmt, ...)
{
    va_list ap;

    if (s->nerr++ >= 20)
        return;
    fflush(stdout);
    fprintf(stderr, "soak: FAIL: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* ---- figures from /proc ---- */

static int fd_count(pid_t pid)
{
    char path[64];
    DIR *d;
    struct dirent *de;
    int n = 0;

    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    d = opendir(path);
    if (!d)
        return -1;
    while ((de = readdir(d)))
        if (de->d_name[0] != '.' &&
            (pid != getpid() || atoi(de->d_name) != dirfd(d)))
            n++;
    closedir(d);
    return n;
}

/* State letter and parent of pid from /proc/pid/stat (0: gone). */
static char proc_state(pid_t pid, pid_t *ppid)
{
    char path[64], buf[512], *p;
    FILE *f;
    size_t n;
    char st = 0;
    int pp = 0;

    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    f = fopen(path, "re");
    if (!f)
        return 0;
    n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    p = strrchr(buf, ')');
    if (!p || sscanf(p + 1, " %c %d", &st, &pp) != 2)
        return 0;
    *ppid = pp;
    return st;
}

/* Children of parent by a /proc scan (this kernel may lack
 * /proc/PID/task/TID/children); zombies among them into *zombies,
 * sleeping ones into *sleeping; a first child into *first. */
static int children_of(pid_t parent, int *zombies, int *sleeping,
                       pid_t *first)
{
    DIR *d = opendir("/proc");
    struct dirent *e;
    int n = 0;

    if (zombies)
        *zombies = 0;
    if (sleeping)
        *sleeping = 0;
    if (!d)
        return -1;
    while ((e = readdir(d))) {
        char *end;
        long v = strtol(e->d_name, &end, 10);
        pid_t pp = 0;
        char st;

        if (*end || v <= 0)
            continue;
        st = proc_state((pid_t)v, &pp);
        if (!st || pp != parent)
            continue;
        if (first && n == 0)
            *first = (pid_t)v;
        n++;
        if (st == 'Z' && zombies)
            (*zombies)++;
        if (st == 'S' && sleeping)
            (*sleeping)++;
    }
    closedir(d);
    return n;
}

/* A "Key:  123 kB" field of a /proc file, in kB; -1 if absent. */
static long proc_kb(pid_t pid, const char *file, const char *key)
{
    char path[64], line[256];
    size_t kl = strlen(key);
    FILE *f;
    long v = -1;

    snprintf(path, sizeof path, "/proc/%d/%s", (int)pid, file);
    f = fopen(path, "re");
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

static void take(struct soak *s, struct sample *m, const char *label)
{
    int tz = 0, cz = 0;
    long pc, pd;

    memset(m, 0, sizeof *m);
    m->label = label;
    m->cycles = s->done - (s->done >= SOAK_WARMUP ? SOAK_WARMUP : 0);
    m->secs = s->t0 > 0 ? now() - s->t0 : 0;
    m->cfds = fd_count(getpid());
    m->tfds = fd_count(s->tpl);
    m->tkids = children_of(s->tpl, &tz, NULL, NULL);
    m->ckids = children_of(getpid(), &cz, NULL, NULL);
    m->zombies = tz + cz;
    m->trss = proc_kb(s->tpl, "status", "VmRSS");
    pc = proc_kb(s->tpl, "smaps_rollup", "Private_Clean");
    pd = proc_kb(s->tpl, "smaps_rollup", "Private_Dirty");
    m->tpriv = pc < 0 || pd < 0 ? -1 : pc + pd;
    m->crss = proc_kb(getpid(), "status", "VmRSS");
#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 33) && \
    !SOAK_ASAN
    m->cheap = (long)(mallinfo2().uordblks / 1024);
#else
    m->cheap = -1;              /* unknown (ASan's allocator says 0) */
#endif
}

static void print_row(const struct sample *m)
{
    printf("%-10s %7ld %7.1f %7.0f %6d %6d %6d %6d %5d %8ld %8ld %8ld "
           "%8ld\n", m->label, m->cycles, m->secs, m->rate, m->cfds,
           m->tfds, m->tkids, m->ckids, m->zombies, m->trss, m->tpriv,
           m->crss, m->cheap);
}

static void print_head(void)
{
    printf("%-10s %7s %7s %7s %6s %6s %6s %6s %5s %8s %8s %8s %8s\n",
           "sample", "cycles", "secs", "cyc/s", "c_fds", "t_fds", "t_kids",
           "c_kids", "zomb", "t_rss", "t_priv", "c_rss", "c_heap");
}

static void print_table(const struct soak *s)
{
    printf("\n");
    print_head();
    print_row(&s->base);
    for (int i = 0; i < s->nsmp; i++)
        print_row(&s->smp[i]);
    printf("(fds and children are counts; t_rss = template VmRSS, t_priv ="
           " its Private_Clean+Private_Dirty, c_rss = client VmRSS, c_heap ="
           " client heap in use, KiB)\n");
    fflush(stdout);
}

/* ---- the cycles ---- */

static void job_done(struct job *j)
{
    struct soak *s = j->s;

    if (--j->pending > 0)
        return;
    s->by_kind[j->kind]++;
    if (j->kind != K_HOLD)
        s->done++;
    s->inflight--;
    free(j);
}

static void on_exit_cb(pid_t pid, int status, void *data)
{
    struct job *j = data;

    if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fail(j->s, "%s cycle %ld: process %d: wait status 0x%x",
             kind_name[j->kind], j->n, (int)pid, (unsigned)status);
    if (j->kind == K_HOLD)
        j->s->hold_exits++;
    job_done(j);
}

/* Run or exec callback: our end of the socket is not needed. */
static void on_ran(tfork *p, int fd, int err, void *data)
{
    struct job *j = data;

    if (err < 0)
        fail(j->s, "%s cycle %ld: %s (%s)", kind_name[j->kind], j->n,
             tfork_errmsg(p), tfork_strerror(err));
    else if (j->kind == K_EXEC ? fd != -1 : fd < 0)
        fail(j->s, "%s cycle %ld: run callback with fd %d",
             kind_name[j->kind], j->n, fd);
    if (fd >= 0)
        close(fd);
    job_done(j);
}

/* Phase B: the socket is kept; closing it ends soak_hold. */
static void on_held(tfork *p, int fd, int err, void *data)
{
    struct job *j = data;

    if (err < 0 || fd < 0) {
        fail(j->s, "hold %d: %s (%s)", j->slot, tfork_errmsg(p),
             tfork_strerror(err));
        if (fd >= 0)
            close(fd);
    } else {
        j->s->hold_fds[j->slot] = fd;
        j->s->held++;
    }
    j->s->hold_ran++;
    job_done(j);
}

static void check_reply(struct job *j, int err, const char *msg, int n,
                        const struct iovec *res)
{
    if (err < 0)
        fail(j->s, "%s cycle %ld: call failed: %s (%s)", kind_name[j->kind],
             j->n, msg, tfork_strerror(err));
    else if (n != 1 || res[0].iov_len != j->arglen ||
             memcmp(res[0].iov_base, j->arg, j->arglen) != 0)
        fail(j->s, "%s cycle %ld: wrong reply (%d parts)", kind_name[j->kind],
             j->n, n);
}

static void on_reply(int err, const char *msg, int n,
                     const struct iovec *res, void *data)
{
    struct job *j = data;

    check_reply(j, err, msg, n, res);
    job_done(j);
}

static void on_rpc_destroy(tfork_rpc *r, void *data)
{
    (void)r;
    job_done(data);
}

/* Instead of on_destroy: the call already failed, so this settles the
 * job's last expected callback. */
static void on_rpc_error(tfork_rpc *r, int err, const char *msg, void *data)
{
    struct job *j = data;

    (void)r;
    fail(j->s, "rpc cycle %ld: child lost: %s (%s)", j->n, msg,
         tfork_strerror(err));
    job_done(j);
}

static void on_pool_destroy(tfork_pool *pool, void *data)
{
    (void)pool;
    ((struct soak *)data)->pool_gone = 1;
}

static void on_pool_error(tfork_rpc *r, int err, const char *msg, void *data)
{
    (void)r;
    fail(data, "pool worker lost: %s (%s)", msg, tfork_strerror(err));
}

static tfork *new_child(struct soak *s, struct job *j)
{
    tfork *p = tfork_new(s->loop);
    int r;

    if (!p)
        die(s, "cycle %ld: tfork_new: %s", j->n, strerror(errno));
    if ((r = tfork_on_exit(p, on_exit_cb, j)) < 0)
        die(s, "cycle %ld: tfork_on_exit: %s", j->n, tfork_strerror(r));
    return p;
}

static void must(struct soak *s, struct job *j, int r, const char *what)
{
    if (r < 0)
        die(s, "%s cycle %ld: %s refused: %s", kind_name[j->kind], j->n, what,
            tfork_strerror(r));
}

static enum kind kind_of(long n)
{
    long k = n % 100;

    return k < 10 ? K_EXEC : k < 15 ? K_GCHILD : k < 17 ? K_RPC :
           k < 22 ? K_POOL : K_RUN;
}

static void start_cycle(struct soak *s, long n)
{
    struct job *j = calloc(1, sizeof *j);
    char *av[] = { (char *)"tiny", NULL };
    tfork *p, *g;

    if (!j)
        die(s, "out of memory");
    j->s = s;
    j->n = n;
    j->kind = kind_of(n);
    j->arglen = (size_t)snprintf(j->arg, sizeof j->arg, "soak cycle %ld", n);
    s->inflight++;
    switch (j->kind) {
    case K_RUN:
        j->pending = 2;                 /* run callback, on_exit */
        p = new_child(s, j);
        must(s, j, tfork_run(p, "soak_exit0", on_ran, j), "tfork_run");
        break;
    case K_EXEC:
        j->pending = 2;
        p = new_child(s, j);
        must(s, j, tfork_exec(p, s->tiny, av, NULL, on_ran, j), "tfork_exec");
        break;
    case K_GCHILD:
        j->pending = 4;                 /* both run callbacks and exits */
        p = new_child(s, j);
        g = tfork_fork(p);
        if (!g)
            die(s, "cycle %ld: tfork_fork: %s", n, strerror(errno));
        must(s, j, tfork_on_exit(g, on_exit_cb, j), "tfork_on_exit");
        must(s, j, tfork_run(g, "soak_exit0", on_ran, j), "tfork_run");
        must(s, j, tfork_run(p, "soak_exit0", on_ran, j), "tfork_run");
        break;
    case K_RPC: {
        tfork_rpc_opts o = { .on_error = on_rpc_error,
                             .on_destroy = on_rpc_destroy, .data = j };
        struct iovec a = { j->arg, j->arglen };
        tfork_rpc *r;

        j->pending = 3;                 /* reply, on_destroy, on_exit */
        p = new_child(s, j);
        r = tfork_rpc_new(p, "soak_echo", &o);
        if (!r)
            die(s, "cycle %ld: tfork_rpc_new: %s", n, strerror(errno));
        must(s, j, tfork_rpc_call(r, 1, &a, on_reply, j), "tfork_rpc_call");
        tfork_rpc_free(r);
        break;
    }
    case K_POOL: {
        struct iovec a = { j->arg, j->arglen };

        j->pending = 1;
        must(s, j, tfork_pool_call(s->pool, 1, &a, on_reply, j),
             "tfork_pool_call");
        break;
    }
    default:
        abort();
    }
}

/* ---- driving the loop ---- */

static void start_hold(struct soak *s, int slot);

/* Starts what may start: phase A cycles up to s->limit, or phase B
 * children, SOAK_INFLIGHT at a time either way (the point is how many
 * are alive at the end, not how many start at once). */
static void refill(struct soak *s)
{
    if (s->hold_fds) {
        while (s->hold_next < s->hold_n &&
               s->hold_next - s->hold_ran < SOAK_INFLIGHT) {
            start_hold(s, s->hold_next);
            s->hold_next++;
        }
        return;
    }
    while (s->inflight < SOAK_INFLIGHT && s->started < s->limit)
        start_cycle(s, s->started++);
}

static void tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
}

/* Runs the loop, starting cycles up to s->limit, until cond(s); dies when
 * no cycle or exit has come for STALL_S. */
static void drive(struct soak *s, int (*cond)(struct soak *),
                  const char *what)
{
    long mark = -1;
    double since = now();

    while (!cond(s)) {
        long m = s->done + s->hold_ran + s->hold_exits;

        refill(s);
        if (m != mark) {
            mark = m;
            since = now();
        } else if (now() - since > STALL_S) {
            die(s, "%s: nothing finished for %.0f s (%d in flight, %ld "
                "cycles done)", what, STALL_S, s->inflight, s->done);
        }
        ev_run(s->loop, EVRUN_ONCE);
    }
}

static int cycles_done(struct soak *s)
{
    return s->done >= s->limit && s->inflight == 0;
}

static int pool_gone(struct soak *s)
{
    return s->pool_gone;
}

/* Counts as in the baseline: wait for them (exits are reported and
 * templates reaped a moment after the last callback). */
static int settled(struct soak *s, int tkids_want, int cfds_want)
{
    int tz, cz;

    return fd_count(getpid()) == cfds_want && fd_count(s->tpl) ==
           s->base.tfds && children_of(s->tpl, &tz, NULL, NULL) ==
           tkids_want && children_of(getpid(), &cz, NULL, NULL) ==
           s->base.ckids && tz == 0 && cz == 0;
}

static void settle(struct soak *s)
{
    double t0 = now();

    while (!settled(s, s->base.tkids, s->base.cfds) &&
           now() - t0 < SETTLE_S)
        ev_run(s->loop, EVRUN_ONCE);
}

/* Before the baseline: no fd count to wait for yet, so wait until the
 * template has no child and the client only the template, then give the
 * loop a few more turns (0.2 s) for whatever follows a reap. */
static void settle_warm(struct soak *s)
{
    double t0 = now();
    int tz, cz;

    while ((children_of(s->tpl, &tz, NULL, NULL) != 0 ||
            children_of(getpid(), &cz, NULL, NULL) != 1) &&
           now() - t0 < SETTLE_S)
        ev_run(s->loop, EVRUN_ONCE);
    t0 = now();
    while (now() - t0 < 0.2)
        ev_run(s->loop, EVRUN_ONCE);
}

static void new_pool(struct soak *s)
{
    tfork_pool_opts o = { .max = 2, .idle = 1, .max_reqs = 50,
                          .rpc = { .on_error = on_pool_error, .data = s },
                          .on_destroy = on_pool_destroy, .data = s };
    tfork *tpl = tfork_new_exec(s->loop);

    if (!tpl)
        die(s, "tfork_new_exec (pool template): %s", strerror(errno));
    s->pool = tfork_pool_new(tpl, "soak_echo", &o);
    if (!s->pool)
        die(s, "tfork_pool_new: %s", strerror(errno));
    s->pool_gone = 0;
}

/* One block: its cycles with a fresh pool, then the pool's graceful end,
 * then the counts settle (to the baseline, once there is one). */
static void block(struct soak *s, long upto, int warm)
{
    new_pool(s);
    s->limit = upto;
    drive(s, cycles_done, "cycles");
    tfork_pool_free(s->pool);
    s->pool = NULL;
    drive(s, pool_gone, "pool end");
    if (warm)
        settle_warm(s);
    else
        settle(s);
}

/* A sample differs from the baseline in a count: say which. */
static void check_counts(struct soak *s, const struct sample *m,
                         int tkids_want, int cfds_want)
{
    if (m->cfds != cfds_want)
        fail(s, "%s at %ld cycles: client fds %d, expected %d", m->label,
             m->cycles, m->cfds, cfds_want);
    if (m->tfds != s->base.tfds)
        fail(s, "%s at %ld cycles: template fds %d, expected %d", m->label,
             m->cycles, m->tfds, s->base.tfds);
    if (m->tkids != tkids_want)
        fail(s, "%s at %ld cycles: template has %d children, expected %d",
             m->label, m->cycles, m->tkids, tkids_want);
    if (m->ckids != s->base.ckids)
        fail(s, "%s at %ld cycles: client has %d children, expected %d",
             m->label, m->cycles, m->ckids, s->base.ckids);
    if (m->zombies)
        fail(s, "%s at %ld cycles: %d zombies", m->label, m->cycles,
             m->zombies);
}

static struct sample *next_sample(struct soak *s)
{
    if (s->nsmp == MAX_SAMPLES)
        die(s, "too many samples");
    return &s->smp[s->nsmp++];
}

/* ---- phase B ---- */

static int all_ran(struct soak *s)
{
    return s->hold_ran == s->hold_n;
}

static int all_exited(struct soak *s)
{
    return s->inflight == 0;
}

static void start_hold(struct soak *s, int slot)
{
    struct job *j = calloc(1, sizeof *j);
    tfork *p;

    if (!j)
        die(s, "out of memory");
    j->s = s;
    j->kind = K_HOLD;
    j->n = slot;
    j->slot = slot;
    j->pending = 2;                     /* run callback, on_exit */
    s->inflight++;
    p = new_child(s, j);
    must(s, j, tfork_run(p, "soak_hold", on_held, j), "tfork_run");
}

static void phase_b(struct soak *s)
{
    struct sample *m;
    double t0;
    int sleeping = 0, tz;

    s->hold_fds = malloc((size_t)s->hold_n * sizeof *s->hold_fds);
    if (!s->hold_fds)
        die(s, "out of memory");
    for (int i = 0; i < s->hold_n; i++)
        s->hold_fds[i] = -1;
    drive(s, all_ran, "hold: starting");
    /* every child has its socket and sits in read(): count them, give a
     * late one a moment to reach the read */
    t0 = now();
    do {
        children_of(s->tpl, &tz, &sleeping, NULL);
        if (sleeping == s->hold_n)
            break;
        ev_run(s->loop, EVRUN_NOWAIT);
        usleep(10000);
    } while (now() - t0 < SETTLE_S);
    m = next_sample(s);
    take(s, m, "B alive");
    check_counts(s, m, s->hold_n, s->base.cfds + s->hold_n);
    if (sleeping != s->hold_n)
        fail(s, "B alive: %d of the template's children asleep in read, "
             "expected %d", sleeping, s->hold_n);
    for (int i = 0; i < s->hold_n; i++)
        if (s->hold_fds[i] >= 0) {
            close(s->hold_fds[i]);
            s->hold_fds[i] = -1;
        }
    drive(s, all_exited, "hold: exits");
    if (s->hold_exits != s->hold_n)
        fail(s, "B closed: %d exits reported, expected %d", s->hold_exits,
             s->hold_n);
    settle(s);
    m = next_sample(s);
    take(s, m, "B closed");
    check_counts(s, m, s->base.tkids, s->base.cfds);
}

/* ---- main ---- */

static long env_long(const char *name, long def, long min, long max)
{
    const char *v = getenv(name);
    char *end;
    long n;

    if (!v || !*v)
        return def;
    errno = 0;
    n = strtol(v, &end, 10);
    if (errno || *end || n < min || n > max)
        die(NULL, "%s=%s: want a number in [%ld, %ld]", name, v, min, max);
    return n;
}

/* Enough descriptors for phase B: every held socket, the cycles in
 * flight (a socket pair each while being prepared), and slack. */
static void raise_nofile(int hold_n)
{
    struct rlimit rl;
    rlim_t need = (rlim_t)hold_n + 4 * SOAK_INFLIGHT + 256;

    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        die(NULL, "getrlimit: %s", strerror(errno));
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            die(NULL, "setrlimit: %s", strerror(errno));
    }
    if (rl.rlim_cur < need)
        die(NULL, "RLIMIT_NOFILE hard limit %llu is too low for %d children "
            "alive at once (needs %llu); raise it (ulimit -Hn) or set "
            "SOAK_HOLD lower", (unsigned long long)rl.rlim_max, hold_n,
            (unsigned long long)need);
}

/* Returns what became of the memory figures, for the last line. */
static const char *judge_memory(struct soak *s)
{
    const struct sample *a = NULL, *z = NULL;

    for (int i = 0; i < s->nsmp; i++)
        if (strcmp(s->smp[i].label, "A") == 0) {
            if (!a)
                a = &s->smp[i];
            z = &s->smp[i];
        }
    if (!a || a == z) {
        printf("memory: fewer than two phase A samples, not judged\n");
        return "not judged (fewer than two samples)";
    }
    printf("memory, %ld to %ld cycles: template VmRSS %+ld KiB (bound %d), "
           "Private %+ld KiB (bound %d); client VmRSS %+ld KiB (bound %d), "
           "heap in use %+ld KiB (bound %d)%s\n",
           a->cycles, z->cycles, z->trss - a->trss, TPL_RSS_MAX_KB,
           z->tpriv - a->tpriv, TPL_PRIV_MAX_KB, z->crss - a->crss,
           CLI_RSS_MAX_KB, z->cheap - a->cheap, CLI_HEAP_MAX_KB,
           SOAK_ASAN ? "; ASan build: not judged" : "");
    if (SOAK_ASAN)
        return "not judged (ASan)";
    if (z->trss - a->trss > TPL_RSS_MAX_KB)
        fail(s, "template VmRSS grew %ld KiB (%ld -> %ld), bound %d",
             z->trss - a->trss, a->trss, z->trss, TPL_RSS_MAX_KB);
    if (z->tpriv - a->tpriv > TPL_PRIV_MAX_KB)
        fail(s, "template Private grew %ld KiB (%ld -> %ld), bound %d",
             z->tpriv - a->tpriv, a->tpriv, z->tpriv, TPL_PRIV_MAX_KB);
    if (z->crss - a->crss > CLI_RSS_MAX_KB)
        fail(s, "client VmRSS grew %ld KiB (%ld -> %ld), bound %d",
             z->crss - a->crss, a->crss, z->crss, CLI_RSS_MAX_KB);
    if (z->cheap - a->cheap > CLI_HEAP_MAX_KB)
        fail(s, "client heap in use grew %ld KiB (%ld -> %ld), bound %d",
             z->cheap - a->cheap, a->cheap, z->cheap, CLI_HEAP_MAX_KB);
    return "within bounds";
}

static struct soak S;

int main(int argc, char **argv)
{
    struct soak *s = &S;
    ev_timer tick;
    double tb;
    long prev = 0;
    const char *mem;
    int r, tz;

    /* the descriptor limit first, so the early copy has it as well */
    s->hold_n = (int)env_long("SOAK_HOLD", SOAK_HOLD_DEF, 1, 100000);
    raise_nofile(s->hold_n);
    if ((r = tfork_early()) < 0)
        die(NULL, "tfork_early: %s", tfork_strerror(r));
    s->cycles = env_long("SOAK_CYCLES", SOAK_CYCLES_DEF, 1, 100000000);
    s->tiny = realpath(argc > 1 ? argv[1] : "/bin/true", NULL);
    if (!s->tiny || access(s->tiny, X_OK) < 0)
        die(NULL, "%s: not an executable", argc > 1 ? argv[1] : "/bin/true");
    /* the early copy is our only child */
    if (children_of(getpid(), &tz, NULL, &s->tpl) != 1 || s->tpl <= 0)
        die(NULL, "cannot find the early copy among our children");
    s->loop = ev_default_loop(0);
    if (!s->loop)
        die(NULL, "ev_default_loop failed");
    /* EVRUN_ONCE must not wait for ever while we poll /proc */
    ev_timer_init(&tick, tick_cb, 0.05, 0.05);
    ev_timer_start(s->loop, &tick);

    printf("soak: %ld cycles (%d in flight, a sample every %d), then %d "
           "children alive at once; template pid %d; exec %s%s\n",
           s->cycles, SOAK_INFLIGHT, SOAK_EVERY, s->hold_n, (int)s->tpl,
           s->tiny, SOAK_ASAN ? "; ASan build" : "");
    fflush(stdout);

    /* warm-up, then the baseline every later sample is held to */
    block(s, SOAK_WARMUP, 1);
    take(s, &s->base, "baseline");
    if (s->base.tkids != 0 || s->base.ckids != 1 || s->base.zombies)
        fail(s, "baseline: template has %d children, client %d (expected "
             "0 and 1), %d zombies", s->base.tkids, s->base.ckids,
             s->base.zombies);
    print_head();
    print_row(&s->base);

    s->t0 = now();
    tb = s->t0;
    while (s->done - SOAK_WARMUP < s->cycles) {
        long next = s->done - SOAK_WARMUP + SOAK_EVERY;
        struct sample *m;

        if (next > s->cycles)
            next = s->cycles;
        block(s, SOAK_WARMUP + next, 0);
        m = next_sample(s);
        take(s, m, "A");
        m->rate = (double)(next - prev) / (now() - tb);
        prev = next;
        tb = now();
        print_row(m);
        fflush(stdout);
        check_counts(s, m, s->base.tkids, s->base.cfds);
    }
    printf("phase A: %ld cycles in %.1f s: run %ld, exec %ld, grandchild "
           "%ld, rpc %ld, pool %ld (warm-up included)\n", s->done - SOAK_WARMUP,
           now() - s->t0, s->by_kind[K_RUN], s->by_kind[K_EXEC],
           s->by_kind[K_GCHILD], s->by_kind[K_RPC], s->by_kind[K_POOL]);

    tb = now();
    phase_b(s);
    free(s->hold_fds);
    s->hold_fds = NULL;
    printf("phase B: %d children alive at once, then closed, in %.1f s\n",
           s->hold_n, now() - tb);

    print_table(s);
    mem = judge_memory(s);
    ev_timer_stop(s->loop, &tick);
    free(s->tiny);
    fflush(stdout);
    if (s->nerr) {
        fprintf(stderr, "soak: FAIL: %ld failure(s), the first above\n",
                s->nerr);
        return 1;
    }
    printf("soak: PASS: counts back to the baseline after every block, "
           "memory %s\n", mem);
    return 0;
}
