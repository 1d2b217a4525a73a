/* check_pool.c: tfork/pool.h, pools of RPC workers over tfork-serve
 * templates that loaded tests/mod_pool.so (whose mod_pool_job reads a
 * command line per call: see mod_pool.c) and over copies of this program
 * (tfork_template, pool_self_job below).  Ports of AnyEvent::Fork::Pool's
 * and Coro::ProcessPool's tests, then one behaviour per test: errors,
 * map/stream, several pools, dying, hung and retiring workers, the queue
 * bound, growing and shrinking, load > 1, bad input, ev_run.
 *
 * Every test ends in pool_end(): the test process is a child subreaper,
 * so workers that outlive their template land here and are seen; no
 * descendant and no descriptor may be left. */
#include <check.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>
#include <ev.h>

#include "tfork.h"
#include "tfork-int.h"
#include "tfork/pool.h"
#include "testutil.h"

#define POOL_GUARD 45.          /* seconds before a hung loop fails */
#define POOL_TIMEOUT 90         /* Check's own limit per test */
#define POOL_SETTLE 20.         /* seconds for processes to go away */
#define POOL_MAXTPL 32
#define POOL_FUNC "mod_pool_job"

/* ---------------------------------------------------------------- the
 * worker copies of this program run (static: found only through
 * TFORK_EXPORT) */

static char pool_self_marker[64];       /* set before tfork_template */

/* Replies pid, ppid and "<arg>/<marker>". */
static int pool_self_job(tfork_rpc_req *req, int n, const struct iovec *args)
{
    char pid[24], ppid[24], tag[160];
    struct iovec v[3];

    snprintf(pid, sizeof pid, "%d", (int)getpid());
    snprintf(ppid, sizeof ppid, "%d", (int)getppid());
    snprintf(tag, sizeof tag, "%s/%s", n > 0 ? (char *)args[0].iov_base : "",
             pool_self_marker);
    v[0].iov_base = pid;
    v[0].iov_len = strlen(pid);
    v[1].iov_base = ppid;
    v[1].iov_len = strlen(ppid);
    v[2].iov_base = tag;
    v[2].iov_len = strlen(tag);
    return tfork_rpc_reply(req, 3, v);
}
TFORK_EXPORT(pool_self_job);

/* ---------------------------------------------------------------- state */

static struct {
    struct ev_loop *loop;
    int fds0;                   /* open fds when the test began */
    const char *what;           /* the test, for messages */
    ev_timer guard;
    pid_t tpl[POOL_MAXTPL];     /* templates: the library reaps these */
    int ntpl;
    int order;                  /* callbacks so far (completion order) */
} T;

/* One call's result. */
struct job {
    int called;
    int inside;                 /* callbacks from inside a tfork_* call */
    int order;                  /* T.order when it came */
    int err;
    char msg[512];
    int n;
    int nul_ok;                 /* every part had its NUL */
    pid_t pid, ppid;            /* of the worker (replies) */
    char tag[160];
    int given;                  /* the worker's calls so far, this one too */
    int inflight;               /* calls in flight in the worker at reply */
};

/* A pool's end, and its workers' losses (o.rpc.on_error). */
struct pend {
    int called;                 /* on_destroy */
    int inside;
    int order;
    tfork_pool *pool;           /* as passed to on_destroy */
    int errors;                 /* on_error */
    int last_err;
    char last_msg[512];
};

static void pool_guard_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    ck_abort_msg("%s: the loop still runs after %.0f s", T.what, POOL_GUARD);
}

static void pool_begin(int def, const char *what)
{
    memset(&T, 0, sizeof T);
    T.what = what;
    T.fds0 = tu_subreaper();
    T.loop = tu_loop_for(def);
    tu_guard_start(T.loop, &T.guard, pool_guard_cb, POOL_GUARD);
}

/* Runs the loop until every descendant is gone (templates are reaped by
 * the library, orphaned workers that landed on us by us), then no child
 * and no fd may be left. */
static void pool_end(void)
{
    tu_settle(T.loop, POOL_SETTLE, T.tpl, T.ntpl, NULL, T.what);
    tu_close_loop(T.loop, &T.guard, T.fds0, T.what);
    T.loop = NULL;
}

static void pool_add_tpl(pid_t pid)
{
    ck_assert_int_gt(pid, 0);
    ck_assert_int_lt(T.ntpl, POOL_MAXTPL);
    T.tpl[T.ntpl++] = pid;
}

/* A tfork-serve template that loaded mod_pool.so; its pid in *pid. */
static tfork *pool_tpl(pid_t *pid)
{
    tfork *t = tfork_new_exec(T.loop);

    ck_assert_msg(t != NULL, "tfork_new_exec: %s", strerror(errno));
    ck_assert_int_eq(tfork_require(t, tu_testdir("mod_pool.so")), 0);
    pool_add_tpl(tfork_pid(t));
    if (pid)
        *pid = tfork_pid(t);
    return t;
}

static void pool_destroy_cb(tfork_pool *pool, void *data)
{
    struct pend *d = data;

    d->called++;
    d->inside += tu_in_api > 0;
    d->order = ++T.order;
    d->pool = pool;
}

static void pool_error_cb(tfork_rpc *r, int err, const char *msg, void *data)
{
    struct pend *d = data;

    (void)r;
    d->errors++;
    d->last_err = err;
    snprintf(d->last_msg, sizeof d->last_msg, "%s", msg);
}

/* A pool of func over tpl with o (NULL: defaults), whose on_destroy and
 * on_error report to d. */
static tfork_pool *pool_make(tfork *tpl, const char *func,
                             const tfork_pool_opts *o, struct pend *d)
{
    tfork_pool_opts oo;
    tfork_pool *pool;

    memset(&oo, 0, sizeof oo);
    if (o)
        oo = *o;
    memset(d, 0, sizeof *d);
    oo.on_destroy = pool_destroy_cb;
    oo.data = d;
    oo.rpc.on_error = pool_error_cb;
    oo.rpc.data = d;
    pool = tfork_pool_new(tpl, func, &oo);
    ck_assert_msg(pool != NULL, "tfork_pool_new: %s", strerror(errno));
    return pool;
}

static void pool_job_cb(int err, const char *msg, int n,
                        const struct iovec *res, void *data)
{
    struct job *j = data;

    j->called++;
    j->inside += tu_in_api > 0;
    j->order = ++T.order;
    j->err = err;
    snprintf(j->msg, sizeof j->msg, "%s", msg ? msg : "(null)");
    j->n = n;
    j->nul_ok = 1;
    for (int i = 0; i < n; i++)
        if (((const char *)res[i].iov_base)[res[i].iov_len] != '\0')
            j->nul_ok = 0;
    if (n >= 3) {
        j->pid = atoi(res[0].iov_base);
        j->ppid = atoi(res[1].iov_base);
        snprintf(j->tag, sizeof j->tag, "%s", (const char *)res[2].iov_base);
    }
    if (n >= 5) {
        j->given = atoi(res[3].iov_base);
        j->inflight = atoi(res[4].iov_base);
    }
}

/* Queues the one-part call line; 0 or the -errno of tfork_pool_call. */
static int pool_call(tfork_pool *pool, const char *line, struct job *j)
{
    struct iovec v = { (void *)line, strlen(line) };

    memset(j, 0, sizeof *j);
    return API(tfork_pool_call(pool, 1, &v, pool_job_cb, j));
}

static void pool_call_ok(tfork_pool *pool, const char *line, struct job *j)
{
    int e = pool_call(pool, line, j);

    ck_assert_msg(e == 0, "%s: tfork_pool_call(%s): %s", T.what, line,
                  strerror(-e));
}

/* j was answered once, from the loop, with a reply tagged tag. */
static void pool_job_ok(const struct job *j, const char *tag)
{
    ck_assert_msg(j->called == 1, "%s: call %s answered %d times", T.what,
                  tag, j->called);
    ck_assert_msg(j->err == 0, "%s: call %s failed: %d %s", T.what, tag,
                  j->err, j->msg);
    ck_assert_int_eq(j->inside, 0);
    ck_assert_str_eq(j->msg, "");
    ck_assert_int_ge(j->n, 3);
    ck_assert(j->nul_ok);
    ck_assert_str_eq(j->tag, tag);
    ck_assert_int_gt(j->pid, 0);
    ck_assert_int_ne(j->pid, getpid());
}

/* The graceful end: tfork_pool_free, then ev_run returns by itself once
 * on_destroy fired (from the loop, once, after every call's callback). */
static void pool_close(tfork_pool *pool, struct pend *d)
{
    APIV(tfork_pool_free(pool));
    ck_assert_int_eq(d->called, 0);
    ev_run(T.loop, 0);
    ck_assert_msg(d->called == 1, "%s: on_destroy fired %d times", T.what,
                  d->called);
    ck_assert_int_eq(d->inside, 0);
    ck_assert_ptr_eq(d->pool, pool);
}

/* Every one of the n calls in j was answered. */
static int pool_all(const struct job *j, int n)
{
    for (int i = 0; i < n; i++)
        if (!j[i].called)
            return 0;
    return 1;
}

/* Runs the loop until pid is reaped; fails after secs. */
static void pool_wait_gone(pid_t pid, double secs)
{
    RUN_UNTIL(T.loop, tu_gone(pid), secs);
}

/* ================================================================ ports */

/* AnyEvent::Fork::Pool t/01_basic.t: 30 jobs with default options, each
 * sleeping a little and retiring its worker at random (seeded here, about
 * 1 in 3); the pool is freed right after queueing them.  Every job is
 * answered once with success, a retired worker gets no call after the one
 * that retired it, on_destroy fires once after the last answer. */
START_TEST(test_port_retire_random)
{
    enum { N = 30 };
    static struct job j[N];
    int retire[N], nretire = 0;
    unsigned seed = 20240917u;
    char line[64], tag[32];
    struct pend d;
    tfork_pool *pool;

    pool_begin(_i, "retire at random");
    pool = pool_make(pool_tpl(NULL), POOL_FUNC, NULL, &d);
    for (int i = 0; i < N; i++) {
        int ms = (int)(rand_r(&seed) % 100);

        retire[i] = rand_r(&seed) % 3 == 0;
        nretire += retire[i];
        snprintf(line, sizeof line, "%s %d j%d",
                 retire[i] ? "retire" : "sleep", ms, i);
        pool_call_ok(pool, line, &j[i]);
    }
    ck_assert_msg(nretire >= 3 && nretire < N, "seed gives %d retires",
                  nretire);
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(j[i].called, 0);
    pool_close(pool, &d);
    for (int i = 0; i < N; i++) {
        snprintf(tag, sizeof tag, "j%d", i);
        pool_job_ok(&j[i], tag);
        ck_assert_int_lt(j[i].order, d.order);
    }
    ck_assert_int_eq(d.errors, 0);
    for (int i = 0; i < N; i++)
        for (int k = 0; k < N; k++) {
            if (k == i || j[k].pid != j[i].pid)
                continue;
            ck_assert_msg(j[k].given != j[i].given, "worker %d got two "
                          "calls as its #%d", (int)j[i].pid, j[i].given);
            if (retire[i])
                ck_assert_msg(j[k].given < j[i].given, "job %d ran on "
                              "worker %d after job %d retired it", k,
                              (int)j[i].pid, i);
        }
    pool_end();
}
END_TEST

/* Coro::ProcessPool t/ (max_reqs): 11 jobs over at most 2 workers that
 * are recycled after 3 calls each: all succeed, no worker pid serves more
 * than 3, and recycling is not a loss (no on_error). */
START_TEST(test_port_max_reqs)
{
    enum { N = 11 };
    struct job j[N];
    tfork_pool_opts o = { .max = 2, .max_reqs = 3 };
    pid_t pids[N];
    int npids = 0;
    char line[64], tag[32];
    struct pend d;
    tfork_pool *pool;

    pool_begin(0, "max_reqs");
    pool = pool_make(pool_tpl(NULL), POOL_FUNC, &o, &d);
    for (int i = 0; i < N; i++) {
        snprintf(line, sizeof line, "double %d", i + 1);
        pool_call_ok(pool, line, &j[i]);
    }
    RUN_UNTIL(T.loop, pool_all(j, N), 30.);
    for (int i = 0; i < N; i++) {
        int uses = 0, seen = 0;

        snprintf(tag, sizeof tag, "%d", 2 * (i + 1));
        ck_assert_int_eq(j[i].called, 1);
        pool_job_ok(&j[i], tag);
        ck_assert_int_le(j[i].given, 3);
        for (int k = 0; k < N; k++)
            uses += j[k].pid == j[i].pid;
        ck_assert_msg(uses <= 3, "worker %d served %d calls",
                      (int)j[i].pid, uses);
        for (int k = 0; k < npids; k++)
            seen |= pids[k] == j[i].pid;
        if (!seen)
            pids[npids++] = j[i].pid;
    }
    ck_assert_int_ge(npids, 4);         /* ceil(11 / 3) */
    /* the recycled ones end by themselves: only the last one is left */
    RUN_UNTIL(T.loop, tfork_pool_workers(pool) == 1, 10.);
    for (int k = 0; k < npids; k++)
        if (pids[k] != j[N - 1].pid)
            pool_wait_gone(pids[k], 10.);
    ck_assert_int_eq(d.errors, 0);
    pool_close(pool, &d);
    pool_end();
}
END_TEST

/* ================================================================ errors */

/* tfork_rpc_fail inside a task reaches that call's callback (-ECANCELED
 * and the message, exactly); the calls around it succeed, on the same
 * worker, which goes on serving. */
START_TEST(test_task_fail)
{
    struct job a, b, c;
    tfork_pool_opts o = { .max = 1 };
    struct pend d;
    tfork_pool *pool;

    pool_begin(0, "task fails");
    pool = pool_make(pool_tpl(NULL), POOL_FUNC, &o, &d);
    pool_call_ok(pool, "echo a", &a);
    pool_call_ok(pool, "fail boom: bad input 42", &b);
    pool_call_ok(pool, "echo c", &c);
    RUN_UNTIL(T.loop, c.called, 30.);
    pool_job_ok(&a, "a");
    pool_job_ok(&c, "c");
    ck_assert_int_eq(b.called, 1);
    ck_assert_int_eq(b.inside, 0);
    ck_assert_int_eq(b.err, -ECANCELED);
    ck_assert_str_eq(b.msg, "boom: bad input 42");
    ck_assert_int_eq(b.n, 0);
    ck_assert(a.order < b.order && b.order < c.order);
    ck_assert_int_eq(c.pid, a.pid);
    ck_assert_int_eq(c.given, 3);
    ck_assert_int_eq(d.errors, 0);
    pool_close(pool, &d);
    pool_end();
}
END_TEST

struct evres {
    int n;                      /* events seen */
    int bad;                    /* not with the pool's rpc.data */
    char tag[8][160];
    pid_t pid[8];
    int order[8];
};

static void pool_event_cb(tfork_rpc *r, int n, const struct iovec *ev,
                          void *data)
{
    struct evres *e = data;

    (void)r;
    if (n != 2 || e->n >= 8) {
        e->bad++;
        return;
    }
    snprintf(e->tag[e->n], sizeof e->tag[e->n], "%s",
             (const char *)ev[0].iov_base);
    e->pid[e->n] = atoi(ev[1].iov_base);
    e->order[e->n++] = ++T.order;
}

/* Workers' events reach o.rpc.on_event with o.rpc.data, each before the
 * reply of the call that sent it. */
START_TEST(test_events)
{
    enum { N = 4 };
    struct job c[N];
    struct evres e;
    tfork_pool_opts o = { .max = 2 };
    char line[64], tag[32];
    tfork_pool *pool;

    pool_begin(0, "events");
    memset(&e, 0, sizeof e);
    o.rpc.on_event = pool_event_cb;
    o.rpc.data = &e;
    pool = tfork_pool_new(pool_tpl(NULL), POOL_FUNC, &o);
    ck_assert_ptr_nonnull(pool);
    for (int i = 0; i < N; i++) {
        snprintf(line, sizeof line, "event e%d", i);
        pool_call_ok(pool, line, &c[i]);
    }
    RUN_UNTIL(T.loop, pool_all(c, N), 30.);
    ck_assert_int_eq(e.bad, 0);
    ck_assert_int_eq(e.n, N);
    for (int i = 0; i < N; i++) {
        int k;

        snprintf(tag, sizeof tag, "e%d", i);
        pool_job_ok(&c[i], tag);
        snprintf(tag, sizeof tag, "ev-e%d", i);
        for (k = 0; k < N && strcmp(e.tag[k], tag) != 0; k++)
            ;
        ck_assert_msg(k < N, "no event %s", tag);
        ck_assert_int_eq(e.pid[k], c[i].pid);
        ck_assert_int_lt(e.order[k], c[i].order);
    }
    APIV(tfork_pool_free(pool));
    ev_run(T.loop, 0);
    ck_assert_int_eq(e.n, N);
    pool_end();
}
END_TEST

/* ================================================================ map */

struct mapres {
    int called;
    int inside;
    int n;
    int err[8];
    char tag[8][160];
    int parts[8];
};

static void pool_map_cb(int n, const tfork_pool_result *res, void *data)
{
    struct mapres *m = data;

    m->called++;
    m->inside += tu_in_api > 0;
    m->n = n;
    for (int i = 0; i < n && i < 8; i++) {
        m->err[i] = res[i].err;
        m->parts[i] = res[i].n;
        snprintf(m->tag[i], sizeof m->tag[i], "%s",
                 res[i].n >= 3 ? (const char *)res[i].res[2].iov_base :
                 res[i].msg);
    }
}

/* Inputs that take different times come back in input order. */
START_TEST(test_map_order)
{
    static const char *const in[] = {
        "sleep 600 r0", "echo r1", "sleep 300 r2", "echo r3",
        "sleep 100 r4", "echo r5",
    };
    enum { N = 6 };
    struct iovec v[N];
    tfork_pool_opts o = { .max = 3 };
    struct mapres m;
    char tag[32];
    struct pend d;
    tfork_pool *pool;

    pool_begin(0, "map order");
    pool = pool_make(pool_tpl(NULL), POOL_FUNC, &o, &d);
    for (int i = 0; i < N; i++) {
        v[i].iov_base = (void *)in[i];
        v[i].iov_len = strlen(in[i]);
    }
    memset(&m, 0, sizeof m);
    ck_assert_int_eq(API(tfork_pool_map(pool, N, v, pool_map_cb, &m)), 0);
    ck_assert_int_eq(m.called, 0);
    RUN_UNTIL(T.loop, m.called, 30.);
    ck_assert_int_eq(m.called, 1);
    ck_assert_int_eq(m.inside, 0);
    ck_assert_int_eq(m.n, N);
    for (int i = 0; i < N; i++) {
        snprintf(tag, sizeof tag, "r%d", i);
        ck_assert_int_eq(m.err[i], 0);
        ck_assert_int_eq(m.parts[i], 5);
        ck_assert_str_eq(m.tag[i], tag);
    }
    pool_close(pool, &d);
    ck_assert_int_eq(m.called, 1);
    pool_end();
}
END_TEST

struct streamres {
    int each[8];                /* results seen per index */
    int inside;
    int order[8];
    int err[8];
    char tag[8][160];
    int ends;
    int end_order;
};

static void pool_each_cb(int index, const tfork_pool_result *res, void *data)
{
    struct streamres *s = data;

    ck_assert(index >= 0 && index < 8);
    s->each[index]++;
    s->inside += tu_in_api > 0;
    s->order[index] = ++T.order;
    s->err[index] = res->err;
    snprintf(s->tag[index], sizeof s->tag[index], "%s",
             res->n >= 3 ? (const char *)res->res[2].iov_base : res->msg);
}

static void pool_end_cb(void *data)
{
    struct streamres *s = data;

    s->ends++;
    s->inside += tu_in_api > 0;
    s->end_order = ++T.order;
}

/* Each result once with its index, as it completes (a fast input before
 * a slow one queued ahead of it), then end once. */
START_TEST(test_stream)
{
    static const char *const in[] = {
        "sleep 1500 s0", "echo s1", "echo s2", "sleep 200 s3",
    };
    enum { N = 4 };
    struct iovec v[N];
    tfork_pool_opts o = { .max = 3 };
    struct streamres s;
    char tag[32];
    struct pend d;
    tfork_pool *pool;

    pool_begin(0, "stream");
    pool = pool_make(pool_tpl(NULL), POOL_FUNC, &o, &d);
    for (int i = 0; i < N; i++) {
        v[i].iov_base = (void *)in[i];
        v[i].iov_len = strlen(in[i]);
    }
    memset(&s, 0, sizeof s);
    ck_assert_int_eq(API(tfork_pool_stream(pool, N, v, pool_each_cb,
                                           pool_end_cb, &s)), 0);
    ck_assert_int_eq(s.each[0] + s.each[1] + s.ends, 0);
    RUN_UNTIL(T.loop, s.ends, 30.);
    ck_assert_int_eq(s.ends, 1);
    ck_assert_int_eq(s.inside, 0);
    for (int i = 0; i < N; i++) {
        snprintf(tag, sizeof tag, "s%d", i);
        ck_assert_int_eq(s.each[i], 1);
        ck_assert_int_eq(s.err[i], 0);
        ck_assert_str_eq(s.tag[i], tag);
        ck_assert_int_lt(s.order[i], s.end_order);
    }
    ck_assert_msg(s.order[1] < s.order[0], "stream kept input order: s1 "
                  "came after the slow s0");
    pool_close(pool, &d);
    ck_assert_int_eq(s.ends, 1);
    pool_end();
}
END_TEST

/* n == 0: map and stream call back from the loop, not inside, once; no
 * worker is started for them. */
START_TEST(test_map_empty)
{
    struct mapres m;
    struct streamres s;
    struct pend d;
    tfork_pool *pool;

    pool_begin(0, "map n == 0");
    pool = pool_make(pool_tpl(NULL), POOL_FUNC, NULL, &d);
    memset(&m, 0, sizeof m);
    memset(&s, 0, sizeof s);
    ck_assert_int_eq(API(tfork_pool_map(pool, 0, NULL, pool_map_cb, &m)), 0);
    ck_assert_int_eq(API(tfork_pool_stream(pool, 0, NULL, pool_each_cb,
                                           pool_end_cb, &s)), 0);
    ck_assert_int_eq(m.called, 0);
    ck_assert_int_eq(s.ends, 0);
    RUN_UNTIL(T.loop, m.called && s.ends, 10.);
    ck_assert_int_eq(m.called, 1);
    ck_assert_int_eq(m.n, 0);
    ck_assert_int_eq(m.inside, 0);
    ck_assert_int_eq(s.ends, 1);
    ck_assert_int_eq(s.inside, 0);
    for (int i = 0; i < 8; i++)
        ck_assert_int_eq(s.each[i], 0);
    ck_assert_int_eq(tfork_pool_workers(pool), 0);
    pool_close(pool, &d);
    ck_assert_int_eq(m.called, 1);
    ck_assert_int_eq(s.ends, 1);
    pool_end();
}
END_TEST

/* ================================================================ pools */

/* Two pools over two templates, calls interleaved: each answers from its
 * own workers (children of its template; no pid in common), and each
 * fires its own on_destroy once. */
START_TEST(test_two_pools)
{
    enum { N = 10 };
    struct job a[N], b[N];
    tfork_pool_opts o = { .max = 2 };
    pid_t ta, tb;
    char line[64], tag[32];
    struct pend da, db;
    tfork_pool *pa, *pb;

    pool_begin(0, "two pools");
    pa = pool_make(pool_tpl(&ta), POOL_FUNC, &o, &da);
    pb = pool_make(pool_tpl(&tb), POOL_FUNC, &o, &db);
    for (int i = 0; i < N; i++) {
        snprintf(line, sizeof line, "sleep 20 a%d", i);
        pool_call_ok(pa, line, &a[i]);
        snprintf(line, sizeof line, "sleep 20 b%d", i);
        pool_call_ok(pb, line, &b[i]);
    }
    RUN_UNTIL(T.loop, pool_all(a, N) && pool_all(b, N), 30.);
    for (int i = 0; i < N; i++) {
        snprintf(tag, sizeof tag, "a%d", i);
        pool_job_ok(&a[i], tag);
        snprintf(tag, sizeof tag, "b%d", i);
        pool_job_ok(&b[i], tag);
        ck_assert_int_eq(a[i].ppid, ta);
        ck_assert_int_eq(b[i].ppid, tb);
        for (int k = 0; k < N; k++)
            ck_assert_int_ne(a[i].pid, b[k].pid);
    }
    APIV(tfork_pool_free(pa));
    pool_close(pb, &db);
    RUN_UNTIL(T.loop, da.called, 10.);
    ck_assert_int_eq(da.called, 1);
    ck_assert_int_eq(da.inside, 0);
    ck_assert_ptr_eq(da.pool, pa);
    ck_assert_int_eq(db.called, 1);
    pool_end();
}
END_TEST

/* ================================================================ losses */

/* A worker dies mid-call: _i 0 the test SIGKILLs it (sync, load 1);
 * _i 1 a job _exits in an async worker with another call hanging there
 * (load 2).  Exactly its in-flight calls get -EPIPE ("rpc child"), the
 * queued ones succeed on a replacement; on_error fires once. */
START_TEST(test_worker_dies)
{
    struct job c[5];
    tfork_pool_opts o = { .max = 1, .load = 1 };
    pid_t pid;
    struct pend d;
    tfork_pool *pool;

    pool_begin(0, _i ? "worker _exits" : "worker killed");
    if (_i) {
        o.load = 2;
        o.rpc.async = 1;
    }
    pool = pool_make(pool_tpl(NULL), POOL_FUNC, &o, &d);
    pool_call_ok(pool, "echo a", &c[0]);
    pool_call_ok(pool, "hang", &c[1]);
    if (_i)
        pool_call_ok(pool, "exit 3", &c[2]);
    else
        pool_call_ok(pool, "echo c", &c[2]);
    pool_call_ok(pool, "echo d", &c[3]);
    pool_call_ok(pool, "echo e", &c[4]);
    RUN_UNTIL(T.loop, c[0].called, 30.);
    pool_job_ok(&c[0], "a");
    pid = c[0].pid;
    if (!_i) {
        /* the hang is on it now, c d e wait */
        ck_assert_int_eq(tfork_pool_queued(pool), 3);
        ck_assert_int_eq(kill(pid, SIGKILL), 0);
    }
    RUN_UNTIL(T.loop, c[3].called && c[4].called, 30.);
    for (int i = 1; i <= (_i ? 2 : 1); i++) {
        ck_assert_int_eq(c[i].called, 1);
        ck_assert_int_eq(c[i].inside, 0);
        ck_assert_int_eq(c[i].err, -EPIPE);
        ck_assert_msg(strstr(c[i].msg, "rpc child") != NULL, "msg: %s",
                      c[i].msg);
        ck_assert_int_lt(c[i].order, c[3].order);
    }
    if (!_i)
        pool_job_ok(&c[2], "c");
    pool_job_ok(&c[3], "d");
    pool_job_ok(&c[4], "e");
    for (int i = _i ? 3 : 2; i <= 4; i++) {
        ck_assert_int_ne(c[i].pid, pid);
        ck_assert_int_eq(c[i].pid, c[4].pid);
    }
    ck_assert_int_eq(d.errors, 1);
    ck_assert_int_eq(d.last_err, -EPIPE);
    pool_wait_gone(pid, 10.);
    ck_assert_int_eq(tfork_pool_workers(pool), 1);
    pool_close(pool, &d);
    pool_end();
}
END_TEST

/* A hung worker hits the timeout: -ETIMEDOUT, "timed out" in msg; it is
 * killed and reaped; the next calls succeed on a new pid. */
START_TEST(test_timeout)
{
    struct job a, h, c, e;
    tfork_pool_opts o = { .max = 1, .timeout = 1.0 };
    double t0;
    struct pend d;
    tfork_pool *pool;

    pool_begin(0, "timeout");
    pool = pool_make(pool_tpl(NULL), POOL_FUNC, &o, &d);
    pool_call_ok(pool, "echo a", &a);
    RUN_UNTIL(T.loop, a.called, 30.);
    pool_job_ok(&a, "a");
    t0 = tu_now();
    pool_call_ok(pool, "hang", &h);
    RUN_UNTIL(T.loop, h.called, 30.);
    ck_assert_msg(tu_now() - t0 >= 0.9, "timed out after %.3f s",
                  tu_now() - t0);
    ck_assert_int_eq(h.called, 1);
    ck_assert_int_eq(h.inside, 0);
    ck_assert_int_eq(h.err, -ETIMEDOUT);
    ck_assert_msg(strstr(h.msg, "timed out") != NULL, "msg: %s", h.msg);
    ck_assert_int_eq(h.n, 0);
    pool_wait_gone(a.pid, 10.);
    pool_call_ok(pool, "echo c", &c);
    pool_call_ok(pool, "echo e", &e);
    RUN_UNTIL(T.loop, c.called && e.called, 30.);
    pool_job_ok(&c, "c");
    pool_job_ok(&e, "e");
    ck_assert_int_ne(c.pid, a.pid);
    ck_assert_int_eq(e.pid, c.pid);
    ck_assert_int_eq(h.called, 1);
    pool_close(pool, &d);
    pool_end();
}
END_TEST

/* ================================================================ queue */

/* max 1, queue_max 2, a slow job running: two calls wait, the ones
 * beyond get -EAGAIN and never a callback; the accepted ones succeed, and
 * once the queue drained a call is accepted again. */
START_TEST(test_queue_full)
{
    struct job c[6], z;
    tfork_pool_opts o = { .max = 1, .queue_max = 2 };
    struct pend d;
    tfork_pool *pool;

    pool_begin(0, "queue full");
    pool = pool_make(pool_tpl(NULL), POOL_FUNC, &o, &d);
    pool_call_ok(pool, "sleep 500 c0", &c[0]);
    pool_call_ok(pool, "echo c1", &c[1]);
    pool_call_ok(pool, "echo c2", &c[2]);
    ck_assert_int_eq(tfork_pool_queued(pool), 2);
    ck_assert_int_eq(pool_call(pool, "echo c3", &c[3]), -EAGAIN);
    ck_assert_int_eq(pool_call(pool, "echo c4", &c[4]), -EAGAIN);
    ck_assert_int_eq(tfork_pool_queued(pool), 2);
    RUN_UNTIL(T.loop, c[2].called, 30.);
    pool_job_ok(&c[0], "c0");
    pool_job_ok(&c[1], "c1");
    pool_job_ok(&c[2], "c2");
    ck_assert_int_eq(tfork_pool_queued(pool), 0);
    pool_call_ok(pool, "echo z", &z);
    RUN_UNTIL(T.loop, z.called, 30.);
    pool_job_ok(&z, "z");
    pool_close(pool, &d);
    ck_assert_int_eq(c[3].called, 0);
    ck_assert_int_eq(c[4].called, 0);
    pool_end();
}
END_TEST

/* With queue_max, a map whose inputs do not all fit is refused whole
 * (-EAGAIN, no callback, nothing queued); one that fits runs. */
START_TEST(test_queue_full_map)
{
    static const char *const in[] = { "echo m0", "echo m1", "echo m2" };
    struct iovec v[3];
    struct job slow;
    tfork_pool_opts o = { .max = 1, .queue_max = 2 };
    struct mapres m1, m2;
    struct pend d;
    tfork_pool *pool;

    pool_begin(0, "queue full map");
    pool = pool_make(pool_tpl(NULL), POOL_FUNC, &o, &d);
    for (int i = 0; i < 3; i++) {
        v[i].iov_base = (void *)in[i];
        v[i].iov_len = strlen(in[i]);
    }
    pool_call_ok(pool, "sleep 300 slow", &slow);
    memset(&m1, 0, sizeof m1);
    memset(&m2, 0, sizeof m2);
    ck_assert_int_eq(API(tfork_pool_map(pool, 3, v, pool_map_cb, &m1)),
                     -EAGAIN);
    ck_assert_int_eq(tfork_pool_queued(pool), 0);
    ck_assert_int_eq(API(tfork_pool_map(pool, 2, v, pool_map_cb, &m2)), 0);
    ck_assert_int_eq(tfork_pool_queued(pool), 2);
    RUN_UNTIL(T.loop, m2.called, 30.);
    pool_job_ok(&slow, "slow");
    ck_assert_int_eq(m2.n, 2);
    ck_assert_str_eq(m2.tag[0], "m0");
    ck_assert_str_eq(m2.tag[1], "m1");
    pool_close(pool, &d);
    ck_assert_int_eq(m1.called, 0);
    pool_end();
}
END_TEST

/* ================================================================ size */

/* idle 1, max 3, stop 0.2 s: a burst of slow-ish calls grows the pool to
 * 3 workers; then, with the loop kept running by the test, it shrinks back
 * to 1 (not 0) and that one is a worker of the burst. */
START_TEST(test_shrink_to_idle)
{
    enum { N = 6 };
    struct job c[N], z;
    tfork_pool_opts o = { .idle = 1, .max = 3, .stop = 0.2 };
    double dl;
    ev_timer tick;
    int maxw = 0, all, npids = 0, seen;
    pid_t pids[N];
    char line[64], tag[32];
    struct pend d;
    tfork_pool *pool;

    pool_begin(0, "shrink to idle");
    pool = pool_make(pool_tpl(NULL), POOL_FUNC, &o, &d);
    ck_assert_int_eq(tfork_pool_workers(pool), 1);      /* idle: at once */
    for (int i = 0; i < N; i++) {
        snprintf(line, sizeof line, "sleep 400 b%d", i);
        pool_call_ok(pool, line, &c[i]);
    }
    ev_timer_init(&tick, tu_tick_cb, 0.02, 0.02);
    ev_timer_start(T.loop, &tick);
    dl = tu_now() + 30.;
    do {
        ck_assert_msg(tu_now() < dl, "the burst was not answered");
        ev_run(T.loop, EVRUN_ONCE);
        if (tfork_pool_workers(pool) > maxw)
            maxw = tfork_pool_workers(pool);
        all = 1;
        for (int i = 0; i < N; i++)
            all &= c[i].called;
    } while (!all);
    ck_assert_int_eq(maxw, 3);
    for (int i = 0; i < N; i++) {
        snprintf(tag, sizeof tag, "b%d", i);
        pool_job_ok(&c[i], tag);
        seen = 0;
        for (int k = 0; k < npids; k++)
            seen |= pids[k] == c[i].pid;
        if (!seen)
            pids[npids++] = c[i].pid;
    }
    ck_assert_int_eq(npids, 3);
    RUN_UNTIL(T.loop, tfork_pool_workers(pool) == 1, 5.);
    dl = tu_now() + 0.6;                /* 3 x stop: it stays at idle */
    while (tu_now() < dl) {
        ev_run(T.loop, EVRUN_ONCE);
        ck_assert_int_eq(tfork_pool_workers(pool), 1);
    }
    ev_timer_stop(T.loop, &tick);
    pool_call_ok(pool, "echo z", &z);
    RUN_UNTIL(T.loop, z.called, 30.);
    pool_job_ok(&z, "z");
    seen = 0;
    for (int k = 0; k < npids; k++)
        seen |= pids[k] == z.pid;
    ck_assert_msg(seen, "the idle worker %d is not one of the burst's",
                  (int)z.pid);
    ck_assert_int_eq(tfork_pool_workers(pool), 1);
    ck_assert_int_eq(d.errors, 0);
    pool_close(pool, &d);
    pool_end();
}
END_TEST

/* load 4 with rpc.async: one worker has 4 calls in flight at once (its
 * replies come from timers, shortest first) and never more; the rest
 * wait; all are answered, by that one worker. */
START_TEST(test_async_load)
{
    enum { N = 8 };
    struct job c[N];
    tfork_pool_opts o = { .max = 1, .load = 4, .rpc.async = 1 };
    int maxin = 0;
    char line[64], tag[32];
    struct pend d;
    tfork_pool *pool;

    pool_begin(0, "async load");
    pool = pool_make(pool_tpl(NULL), POOL_FUNC, &o, &d);
    for (int i = 0; i < N; i++) {
        snprintf(line, sizeof line, "after %d q%d", 400 - 50 * (i % 4), i);
        pool_call_ok(pool, line, &c[i]);
    }
    ck_assert_int_eq(tfork_pool_queued(pool), N - 4);
    ck_assert_int_eq(tfork_pool_workers(pool), 1);
    RUN_UNTIL(T.loop, pool_all(c, N), 30.);
    for (int i = 0; i < N; i++) {
        snprintf(tag, sizeof tag, "q%d", i);
        pool_job_ok(&c[i], tag);
        ck_assert_int_eq(c[i].pid, c[0].pid);
        ck_assert_int_le(c[i].inflight, 4);
        if (c[i].inflight > maxin)
            maxin = c[i].inflight;
    }
    ck_assert_int_eq(maxin, 4);
    ck_assert_int_eq(c[N - 1].given, N);
    pool_close(pool, &d);
    pool_end();
}
END_TEST

/* ================================================================ copy */

/* A pool over tfork_template(loop): workers run this program's own
 * TFORK_EXPORTed function and see its data as it was at the copy. */
START_TEST(test_template_copy)
{
    enum { N = 4 };
    struct job c[N];
    tfork_pool_opts o = { .max = 2 };
    char line[64], tag[128];
    tfork *tpl;
    pid_t tp;
    struct pend d;
    tfork_pool *pool;

    pool_begin(0, "template copy");
    snprintf(pool_self_marker, sizeof pool_self_marker, "made-by-%d",
             (int)getpid());
    tpl = tfork_template(T.loop);
    ck_assert_msg(tpl != NULL, "tfork_template: %s", strerror(errno));
    tp = tfork_pid(tpl);
    pool_add_tpl(tp);
    snprintf(pool_self_marker, sizeof pool_self_marker, "changed later");
    pool = pool_make(tpl, "pool_self_job", &o, &d);
    for (int i = 0; i < N; i++) {
        snprintf(line, sizeof line, "x%d", i);
        pool_call_ok(pool, line, &c[i]);
    }
    RUN_UNTIL(T.loop, pool_all(c, N), 30.);
    for (int i = 0; i < N; i++) {
        snprintf(tag, sizeof tag, "x%d/made-by-%d", i, (int)getpid());
        pool_job_ok(&c[i], tag);
        ck_assert_int_eq(c[i].ppid, tp);
    }
    pool_close(pool, &d);
    pool_end();
}
END_TEST

/* A fork the template refuses for a moment (EAGAIN): the calls given to
 * that worker fail with it, and the pool goes on with a fresh worker
 * (it used to count as "no worker can start" and refused all calls). */
static pid_t pool_main_pid;
static int pool_fork_refusals;      /* in the copy: forks still to refuse */

static pid_t pool_fork_eagain_once(void)
{
    if (getpid() != pool_main_pid && pool_fork_refusals > 0) {
        pool_fork_refusals--;
        errno = EAGAIN;
        return -1;
    }
    return tfork__sys_fork();
}

START_TEST(test_transient_start)
{
    struct job c[3];
    tfork_pool_opts o = { .max = 1 };
    tfork *tpl;
    struct pend d;
    tfork_pool *pool;

    pool_begin(0, "transient start failure");
    pool_main_pid = getpid();
    pool_fork_refusals = 1;
    tfork__sys.fork = pool_fork_eagain_once;
    tpl = tfork_template(T.loop);
    tfork__sys.fork = tfork__sys_fork;
    ck_assert_msg(tpl != NULL, "tfork_template: %s", strerror(errno));
    pool_add_tpl(tfork_pid(tpl));
    pool = pool_make(tpl, "pool_self_job", &o, &d);
    pool_call_ok(pool, "t0", &c[0]);
    pool_call_ok(pool, "t1", &c[1]);
    RUN_UNTIL(T.loop, pool_all(c, 2), 30.);
    ck_assert_int_eq(c[0].called, 1);
    ck_assert_msg(c[0].err == -EAGAIN, "first call: %d %s", c[0].err,
                  c[0].msg);
    /* the waiting call went to the next worker, and later calls too */
    ck_assert_int_eq(d.errors, 1);
    pool_call_ok(pool, "t2", &c[2]);
    RUN_UNTIL(T.loop, pool_all(c, 3), 30.);
    ck_assert_msg(c[1].err == 0 && c[2].err == 0, "after: %d %s / %d %s",
                  c[1].err, c[1].msg, c[2].err, c[2].msg);
    ck_assert_int_eq(c[1].pid, c[2].pid);
    pool_close(pool, &d);
    pool_end();
}
END_TEST

/* ================================================================ bad input */

static void pool_run_cb(tfork *p, int fd, int err, void *data)
{
    struct tu_res *r = data;

    tu_on_run(p, fd, err, data);
    if (fd >= 0)
        close(fd);
    r->run_fd = -1;
}

/* tfork_pool_new refuses NULL tpl or func, negative fields, idle > max, a
 * bad rpc part, a handle already run: NULL with EINVAL, and the template
 * it was given is released (its process goes away). */
START_TEST(test_bad_new)
{
    static const tfork_pool_opts bad[] = {
        { .max = -1 }, { .idle = -1 }, { .load = -1 }, { .start = -0.5 },
        { .stop = -1 }, { .max_reqs = -1 }, { .queue_max = -1 },
        { .timeout = -1 }, { .idle = 3, .max = 2 }, { .rpc.async = 2 },
        { .rpc.init = "" },
    };
    enum { NBAD = sizeof bad / sizeof bad[0] };
    pid_t pids[NBAD + 2];
    struct tu_res rr;
    tfork *p;

    pool_begin(0, "bad tfork_pool_new");
    errno = 0;
    ck_assert_ptr_null(tfork_pool_new(NULL, POOL_FUNC, NULL));
    ck_assert_int_eq(errno, EINVAL);
    for (int i = 0; i < NBAD; i++) {
        errno = 0;
        ck_assert_msg(tfork_pool_new(pool_tpl(&pids[i]), POOL_FUNC,
                                     &bad[i]) == NULL, "bad options #%d "
                      "accepted", i);
        ck_assert_int_eq(errno, EINVAL);
    }
    errno = 0;
    ck_assert_ptr_null(tfork_pool_new(pool_tpl(&pids[NBAD]), NULL, NULL));
    ck_assert_int_eq(errno, EINVAL);
    errno = 0;
    ck_assert_ptr_null(tfork_pool_new(pool_tpl(&pids[NBAD + 1]), "", NULL));
    ck_assert_int_eq(errno, EINVAL);
    for (int i = 0; i < NBAD + 2; i++)
        pool_wait_gone(pids[i], 10.);
    /* a handle already run is not a template: refused, and its run goes
     * on unharmed */
    tu_res_init(&rr);
    p = pool_tpl(NULL);
    ck_assert_int_eq(tfork_run(p, "mod_pool_run", pool_run_cb, &rr), 0);
    errno = 0;
    ck_assert_ptr_null(tfork_pool_new(p, POOL_FUNC, NULL));
    ck_assert_int_eq(errno, EINVAL);
    RUN_UNTIL(T.loop, rr.run_called, 30.);
    ck_assert_int_eq(rr.run_called, 1);
    ck_assert_msg(rr.run_err == 0, "run: %d %s", rr.run_err, rr.msg);
    pool_end();
}
END_TEST

/* tfork_pool_call refuses NULL pool or cb and bad parts with -EINVAL and
 * never calls back; the counts of NULL are 0. */
START_TEST(test_bad_call)
{
    struct iovec v = { (void *)"echo x", 6 }, nul = { NULL, 3 };
    struct job j, ok;
    struct mapres m;
    struct streamres s;
    struct pend d;
    tfork_pool *pool;

    pool_begin(0, "bad tfork_pool_call");
    pool = pool_make(pool_tpl(NULL), POOL_FUNC, NULL, &d);
    memset(&j, 0, sizeof j);
    memset(&m, 0, sizeof m);
    memset(&s, 0, sizeof s);
    ck_assert_int_eq(API(tfork_pool_call(NULL, 1, &v, pool_job_cb, &j)),
                     -EINVAL);
    ck_assert_int_eq(API(tfork_pool_call(pool, 1, &v, NULL, &j)), -EINVAL);
    ck_assert_int_eq(API(tfork_pool_call(pool, -1, &v, pool_job_cb, &j)),
                     -EINVAL);
    ck_assert_int_eq(API(tfork_pool_call(pool, 1, NULL, pool_job_cb, &j)),
                     -EINVAL);
    ck_assert_int_eq(API(tfork_pool_call(pool, 1, &nul, pool_job_cb, &j)),
                     -EINVAL);
    ck_assert_int_eq(API(tfork_pool_map(pool, 1, &v, NULL, &m)), -EINVAL);
    ck_assert_int_eq(API(tfork_pool_map(NULL, 1, &v, pool_map_cb, &m)),
                     -EINVAL);
    ck_assert_int_eq(API(tfork_pool_map(pool, -1, &v, pool_map_cb, &m)),
                     -EINVAL);
    ck_assert_int_eq(API(tfork_pool_stream(pool, 1, &v, NULL, pool_end_cb,
                                           &s)), -EINVAL);
    ck_assert_int_eq(tfork_pool_workers(NULL), 0);
    ck_assert_int_eq(tfork_pool_queued(NULL), 0);
    ck_assert_int_eq(tfork_pool_queued(pool), 0);
    ck_assert_int_eq(tfork_pool_workers(pool), 0);   /* no call yet */
    pool_call_ok(pool, "echo ok", &ok);
    RUN_UNTIL(T.loop, ok.called, 30.);
    pool_job_ok(&ok, "ok");
    pool_close(pool, &d);
    ck_assert_int_eq(j.called, 0);
    ck_assert_int_eq(m.called, 0);
    ck_assert_int_eq(s.ends, 0);
    pool_end();
}
END_TEST

/* After tfork_pool_free (before on_destroy): calls and maps get -EINVAL
 * and no callback; the calls queued before still run; on_destroy fires
 * once, from the loop. */
START_TEST(test_call_after_free)
{
    struct iovec v = { (void *)"echo y", 6 };
    struct job a, b;
    struct mapres m;
    struct pend d;
    tfork_pool *pool;

    pool_begin(0, "call after free");
    pool = pool_make(pool_tpl(NULL), POOL_FUNC, NULL, &d);
    pool_call_ok(pool, "sleep 100 a", &a);
    APIV(tfork_pool_free(pool));
    memset(&m, 0, sizeof m);
    ck_assert_int_eq(pool_call(pool, "echo b", &b), -EINVAL);
    ck_assert_int_eq(API(tfork_pool_map(pool, 1, &v, pool_map_cb, &m)),
                     -EINVAL);
    ck_assert_int_eq(d.called, 0);
    ev_run(T.loop, 0);
    pool_job_ok(&a, "a");
    ck_assert_int_eq(d.called, 1);
    ck_assert_int_eq(d.inside, 0);
    ck_assert_int_gt(d.order, a.order);
    ck_assert_int_eq(b.called, 0);
    ck_assert_int_eq(m.called, 0);
    pool_end();
}
END_TEST

/* An unknown function: every call fails with -ENOENT and a message
 * naming it, on_error reports it, later calls are refused with -EPIPE,
 * and on_destroy still fires after tfork_pool_free. */
START_TEST(test_unknown_func)
{
    enum { N = 3 };
    struct job c[N], late;
    struct pend d;
    tfork_pool *pool;

    pool_begin(0, "unknown func");
    pool = pool_make(pool_tpl(NULL), "pool_no_such_fn", NULL, &d);
    for (int i = 0; i < N; i++)
        pool_call_ok(pool, "echo x", &c[i]);
    RUN_UNTIL(T.loop, pool_all(c, N), 30.);
    for (int i = 0; i < N; i++) {
        ck_assert_int_eq(c[i].called, 1);
        ck_assert_int_eq(c[i].inside, 0);
        ck_assert_int_eq(c[i].err, -ENOENT);
        ck_assert_msg(strstr(c[i].msg, "pool_no_such_fn") != NULL,
                      "msg: %s", c[i].msg);
    }
    ck_assert_int_ge(d.errors, 1);
    ck_assert_int_eq(d.last_err, -ENOENT);
    ck_assert_msg(strstr(d.last_msg, "pool_no_such_fn") != NULL, "msg: %s",
                  d.last_msg);
    ck_assert_int_eq(pool_call(pool, "echo late", &late), -EPIPE);
    pool_close(pool, &d);
    ck_assert_int_eq(late.called, 0);
    pool_end();
}
END_TEST

/* ================================================================ ev_run */

/* idle 2 and no call: ev_run returns while the two idle workers live (the
 * pool does not keep the loop alive when idle). */
START_TEST(test_evrun_idle)
{
    tfork_pool_opts o = { .idle = 2, .max = 2 };
    pid_t tp, kids[8];
    int fired = 0, n = 0;
    double dl;
    ev_timer wd;
    struct pend d;
    tfork_pool *pool;

    pool_begin(_i, "ev_run with idle workers");
    pool = pool_make(pool_tpl(&tp), POOL_FUNC, &o, &d);
    ck_assert_int_eq(tfork_pool_workers(pool), 2);
    ev_timer_init(&wd, tu_watchdog_cb, 10., 0.);
    wd.data = &fired;
    ev_timer_start(T.loop, &wd);
    ev_unref(T.loop);
    ev_run(T.loop, 0);
    ev_ref(T.loop);
    ev_timer_stop(T.loop, &wd);
    ck_assert_msg(!fired, "ev_run did not return with idle workers only");
    ck_assert_int_eq(tfork_pool_workers(pool), 2);
    dl = tu_now() + 5.;
    while ((n = tu_scan_children(tp, kids, NULL, 8)) != 2 && tu_now() < dl)
        usleep(10000);
    ck_assert_msg(n == 2, "the template has %d children, not the 2 idle "
                  "workers", n);
    for (int i = 0; i < n; i++)
        ck_assert_int_eq(tu_gone(kids[i]), 0);
    pool_close(pool, &d);
    pool_end();
}
END_TEST

/* A pending call keeps ev_run alive until its callback ran, also with
 * idle workers around. */
START_TEST(test_evrun_pending)
{
    tfork_pool_opts o = { .idle = 2, .max = 2 };
    struct job c;
    struct pend d;
    tfork_pool *pool;

    pool_begin(_i, "ev_run with a pending call");
    pool = pool_make(pool_tpl(NULL), POOL_FUNC, &o, &d);
    ev_run(T.loop, 0);
    pool_call_ok(pool, "sleep 300 p", &c);
    ev_run(T.loop, 0);
    pool_job_ok(&c, "p");
    ck_assert_int_eq(tfork_pool_workers(pool), 2);
    pool_close(pool, &d);
    pool_end();
}
END_TEST

/* ================================================================ suite */

static Suite *pool_suite(void)
{
    Suite *s = suite_create("pool");
    TCase *tc;

    tc = tcase_create("ports");
    tcase_set_timeout(tc, POOL_TIMEOUT);
    tcase_add_loop_test(tc, test_port_retire_random, 0, 2);
    tcase_add_test(tc, test_port_max_reqs);
    suite_add_tcase(s, tc);

    tc = tcase_create("errors");
    tcase_set_timeout(tc, POOL_TIMEOUT);
    tcase_add_test(tc, test_task_fail);
    tcase_add_test(tc, test_unknown_func);
    tcase_add_test(tc, test_events);
    suite_add_tcase(s, tc);

    tc = tcase_create("map");
    tcase_set_timeout(tc, POOL_TIMEOUT);
    tcase_add_test(tc, test_map_order);
    tcase_add_test(tc, test_stream);
    tcase_add_test(tc, test_map_empty);
    suite_add_tcase(s, tc);

    tc = tcase_create("pools");
    tcase_set_timeout(tc, POOL_TIMEOUT);
    tcase_add_test(tc, test_two_pools);
    tcase_add_test(tc, test_template_copy);
    tcase_add_test(tc, test_transient_start);
    suite_add_tcase(s, tc);

    tc = tcase_create("losses");
    tcase_set_timeout(tc, POOL_TIMEOUT);
    tcase_add_loop_test(tc, test_worker_dies, 0, 2);
    tcase_add_test(tc, test_timeout);
    suite_add_tcase(s, tc);

    tc = tcase_create("queue");
    tcase_set_timeout(tc, POOL_TIMEOUT);
    tcase_add_test(tc, test_queue_full);
    tcase_add_test(tc, test_queue_full_map);
    suite_add_tcase(s, tc);

    tc = tcase_create("size");
    tcase_set_timeout(tc, POOL_TIMEOUT);
    tcase_add_test(tc, test_shrink_to_idle);
    tcase_add_test(tc, test_async_load);
    suite_add_tcase(s, tc);

    tc = tcase_create("bad_input");
    tcase_set_timeout(tc, POOL_TIMEOUT);
    tcase_add_test(tc, test_bad_new);
    tcase_add_test(tc, test_bad_call);
    tcase_add_test(tc, test_call_after_free);
    suite_add_tcase(s, tc);

    tc = tcase_create("ev_run");
    tcase_set_timeout(tc, POOL_TIMEOUT);
    tcase_add_loop_test(tc, test_evrun_idle, 0, 2);
    tcase_add_loop_test(tc, test_evrun_pending, 0, 2);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(pool_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
