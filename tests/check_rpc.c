/* check_rpc.c: tfork_rpc, calling functions in a running child (after
 * AnyEvent::Fork::RPC): replies, events and errors as the caller sees them,
 * sync and async children, the graceful end, lost children, caps and bad
 * input, and the child-side API.  The children are tfork-serve children
 * running tests/mod_rpc.so, the default template's (tfork_new) in the
 * ports of AnyEvent::Fork::RPC's t/01_sync.t and t/02_async.t, and copies
 * of this program (tfork_template) running the TFORK_EXPORTed functions
 * below.
 *
 * Loop tests: where a test runs more than once, bit 0 of _i picks a sync
 * (0) or async (1) child; the higher bits pick the loop (ev_loop_new or
 * the default loop) or a variant, as the comment above each test says.
 * Every test ends in rb_end(), which checks that
 * no descendant process and no descriptor is left behind; the test process
 * is a child subreaper, so any process of the tree that outlives its
 * parent lands here and is seen. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>
#include <ev.h>

#include "tfork.h"
#include "tfork/rpc.h"
#include "testutil.h"
#include "under_valgrind.h"

#define RB_GUARD 100.           /* seconds before a hung loop fails */
#define RB_TIMEOUT 150          /* Check's own limit per test */
#define RB_SETTLE 20.           /* seconds for processes to go away */
#define RB_WAIT 30.             /* seconds for one expected callback */
#define RB_KEEP 16              /* reply parts a call record copies */
#define RB_MAXTPL 8
#define MiB (1024u * 1024u)

/* ---------------------------------------------------------------- what
 * copies of this program run (static: found only through TFORK_EXPORT) */

/* ["self <pid>", then the parts it got]; a part without its NUL fails. */
static int rpc_self_reply(tfork_rpc_req *req, int n, const struct iovec *a)
{
    struct iovec v[RB_KEEP + 1];
    char head[64];

    if (n > RB_KEEP)
        return tfork_rpc_fail(req, "too many parts");
    for (int i = 0; i < n; i++)
        if (!a[i].iov_base || ((const char *)a[i].iov_base)[a[i].iov_len])
            return tfork_rpc_fail(req, "no NUL after a part");
    snprintf(head, sizeof head, "self %d", (int)getpid());
    v[0].iov_base = head;
    v[0].iov_len = strlen(head);
    for (int i = 0; i < n; i++)
        v[i + 1] = a[i];
    return tfork_rpc_reply(req, n + 1, v);
}

static int rpc_self_echo(tfork_rpc_req *req, int n, const struct iovec *a)
{
    rpc_self_reply(req, n, a);
    return 0;
}
TFORK_EXPORT(rpc_self_echo);

/* Async: the same reply 10 ms later, from the child's loop. */
struct rpc_self_later {
    ev_timer w;
    tfork_rpc_req *req;
    int n;
    struct iovec v[RB_KEEP];
};

static void rpc_self_later_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct rpc_self_later *l = (struct rpc_self_later *)w;

    (void)revents;
    ev_timer_stop(loop, w);
    rpc_self_reply(l->req, l->n, l->v);
    for (int i = 0; i < l->n; i++)
        free(l->v[i].iov_base);
    free(l);
}

static int rpc_self_async(tfork_rpc_req *req, int n, const struct iovec *a)
{
    struct ev_loop *loop = tfork_rpc_loop();
    struct rpc_self_later *l;

    if (!loop)
        return tfork_rpc_fail(req, "rpc_self_async: no loop");
    if (n > RB_KEEP)
        return tfork_rpc_fail(req, "too many parts");
    l = calloc(1, sizeof *l);
    if (!l)
        return 12;
    l->req = req;
    l->n = n;
    for (int i = 0; i < n; i++) {
        /* args are borrowed until we return: keep copies, NUL included */
        l->v[i].iov_base = malloc(a[i].iov_len + 1);
        if (!l->v[i].iov_base)
            return 12;
        memcpy(l->v[i].iov_base, a[i].iov_base, a[i].iov_len + 1);
        l->v[i].iov_len = a[i].iov_len;
    }
    ev_timer_init(&l->w, rpc_self_later_cb, 0.01, 0.);
    ev_timer_start(loop, &l->w);
    return 0;
}
TFORK_EXPORT(rpc_self_async);

/* ---------------------------------------------------------------- state */

static struct {
    struct ev_loop *loop;
    int fds0;                   /* open fds when the test began */
    int fds_loop;               /* ... and once the loop existed */
    const char *what;           /* the test, for messages */
    ev_timer guard;
    pid_t tpl[RB_MAXTPL];       /* our templates: the library reaps them */
    int ntpl;
    int deftpl;                 /* tfork_new used: the library's default
                                   template may stay */
    int seq;                    /* callbacks of any kind so far */
    char log[1 << 14];          /* one line per callback, in order */
    size_t loglen;
} T;

static void rb_logf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void rb_logf(const char *fmt, ...)
{
    va_list ap;
    int n;

    ck_assert_msg(T.loglen < sizeof T.log - 1, "%s: log full", T.what);
    va_start(ap, fmt);
    n = vsnprintf(T.log + T.loglen, sizeof T.log - T.loglen, fmt, ap);
    va_end(ap);
    ck_assert_msg(n >= 0 && (size_t)n < sizeof T.log - T.loglen,
                  "%s: log full", T.what);
    T.loglen += (size_t)n;
}

static void rb_guard_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    ck_abort_msg("%s: the loop still runs after %.0f s; log:\n%s", T.what,
                 RB_GUARD, T.log);
}

static const char *rb_mod(void)
{
    return tu_testdir("mod_rpc.so");
}

/* pid runs the tfork-serve of the build tree (the default template),
 * also under valgrind (see uv_runs_exe). */
static int rb_is_serve(pid_t pid)
{
    char want[4096];
    const char *serve = getenv("TFORK_SERVE");

    if (!serve || !realpath(serve, want))
        return 0;
    return uv_runs_exe(pid, want);
}

/* A child rb_end leaves: the default template, running (T.deftpl). */
static int rb_keep(pid_t pid, char state)
{
    return state != 'Z' && rb_is_serve(pid);
}

static void rb_begin(int def, const char *what)
{
    memset(&T, 0, sizeof T);
    T.what = what;
    T.fds0 = tu_subreaper();
    T.loop = tu_loop_for(def);
    T.fds_loop = tu_fd_count();
    tu_guard_start(T.loop, &T.guard, rb_guard_cb, RB_GUARD);
}

/* Runs the loop until nothing keeps it alive. */
static void rb_loop(void)
{
    ck_assert_int_eq(tu_in_api, 0);
    ev_run(T.loop, 0);
}

/* Runs the loop until every descendant is gone (but the default template,
 * when T.deftpl): templates are reaped by the library, orphans that landed
 * on us by us.  Then no child, no fd may be left. */
static void rb_end(void)
{
    if (tu_settle(T.loop, RB_SETTLE, T.tpl, T.ntpl, T.deftpl ? rb_keep : NULL,
                  T.what)) {
        /* the default template belongs to the library and lives on with
         * its socket: that and nothing else remains */
        ck_assert_msg(tu_fd_count() == T.fds_loop + 1, "%s: %d fds open, "
                      "%d with the loop and the default template", T.what,
                      tu_fd_count(), T.fds_loop + 1);
        tu_guard_stop(T.loop, &T.guard);
        return;
    }
    tu_close_loop(T.loop, &T.guard, T.fds0, T.what);
    T.loop = NULL;
}

/* ---------------------------------------------------------------- an rpc
 * and its callbacks */

struct rb_ctx {
    tfork_rpc *r;
    int events, errors, destroys;
    int ev_nul_bad;             /* events whose parts lacked a NUL */
    int ev_inside, err_inside, destroy_inside;
    int err;
    char err_msg[512];
    unsigned err_iter;
    int err_seq, destroy_seq;
    int free_in_error;          /* tfork_rpc_free inside on_error */
    int free_in_event;          /* ... inside the first on_event */
    int call_in_error;          /* tfork_rpc_call inside on_error */
    int err_call_rc;            /* ... and what it returned */
    int kill_at;                /* SIGKILL the child at this "hang" event */
    int hangs;                  /* "hang" events seen */
    pid_t killed;               /* the pid SIGKILLed */
    /* a hook for the event "got" (big calls) */
    void (*on_got)(struct rb_ctx *x);
};

struct rb_call {
    int id;
    struct rb_ctx *x;
    int free_rpc;               /* tfork_rpc_free(x->r) inside the callback */
    struct rb_call *chain;      /* a call made inside the callback */
    int chain_rc;               /* ... and what it returned */
    int calls, inside, err, n, seq;
    int nul_bad;                /* parts without their NUL */
    int shape_bad;              /* an error with parts, or a reply with msg */
    unsigned iter;              /* ev_iteration() in the callback */
    pid_t pid;                  /* tfork_rpc_pid() in the callback */
    char msg[512];
    size_t len[RB_KEEP];
    char *part[RB_KEEP];        /* copies of the parts, NUL-terminated */
};

static void rb_on_event(tfork_rpc *r, int n, const struct iovec *ev,
                        void *data)
{
    struct rb_ctx *x = data;
    char line[300];
    size_t k = 0;

    ck_assert_msg(r == x->r, "%s: on_event for another handle", T.what);
    x->events++;
    x->ev_inside += tu_in_api > 0;
    T.seq++;
    line[0] = 0;
    for (int i = 0; i < n; i++) {
        const char *b = ev[i].iov_base;

        if (!b || b[ev[i].iov_len])
            x->ev_nul_bad++;
        if (b && k < sizeof line - 1)
            k += (size_t)snprintf(line + k, sizeof line - k, "%s%.*s",
                                  i ? "|" : "", (int)ev[i].iov_len, b);
    }
    rb_logf("ev %s\n", line);
    if (n >= 1 && ev[0].iov_len > 5 && !memcmp(ev[0].iov_base, "hang ", 5)
        && ++x->hangs == x->kill_at) {
        x->killed = (pid_t)atoi((const char *)ev[0].iov_base + 5);
        ck_assert_int_gt(x->killed, 1);
        ck_assert_int_eq(kill(x->killed, SIGKILL), 0);
    }
    if (n == 1 && ev[0].iov_len == 3 && !memcmp(ev[0].iov_base, "got", 3) &&
        x->on_got)
        x->on_got(x);
    if (x->free_in_event && x->events == 1)
        tfork_rpc_free(r);
}

/* For calls that must never be answered. */
static void rb_never_cb(int err, const char *msg, int n,
                        const struct iovec *res, void *data)
{
    (void)n;
    (void)res;
    (void)data;
    ck_abort_msg("%s: a refused call got a callback: %d %s", T.what, err,
                 msg);
}

static void rb_on_error(tfork_rpc *r, int err, const char *msg, void *data)
{
    struct rb_ctx *x = data;

    ck_assert_msg(r == x->r, "%s: on_error for another handle", T.what);
    ck_assert_ptr_nonnull(msg);
    x->errors++;
    x->err_inside += tu_in_api > 0;
    x->err = err;
    x->err_iter = ev_iteration(T.loop);
    x->err_seq = T.seq++;
    snprintf(x->err_msg, sizeof x->err_msg, "%s", msg);
    rb_logf("error %d\n", err);
    if (x->call_in_error)
        x->err_call_rc = tfork_rpc_call(r, 0, NULL, rb_never_cb, NULL);
    if (x->free_in_error)
        tfork_rpc_free(r);
}

static void rb_on_destroy(tfork_rpc *r, void *data)
{
    struct rb_ctx *x = data;

    ck_assert_msg(r == x->r, "%s: on_destroy for another handle", T.what);
    x->destroys++;
    x->destroy_inside += tu_in_api > 0;
    x->destroy_seq = T.seq++;
    rb_logf("destroy\n");
}

static void rb_cb(int err, const char *msg, int n, const struct iovec *res,
                  void *data)
{
    struct rb_call *c = data;

    ck_assert_msg(c->calls == 0, "%s: call %d: a second callback (err %d)",
                  T.what, c->id, err);
    c->calls++;
    c->inside += tu_in_api > 0;
    c->err = err;
    c->n = n;
    c->seq = T.seq++;
    c->iter = ev_iteration(T.loop);
    c->pid = c->x ? tfork_rpc_pid(c->x->r) : 0;
    ck_assert_ptr_nonnull(msg);
    snprintf(c->msg, sizeof c->msg, "%s", msg);
    if (err < 0 ? n != 0 || res != NULL : *msg != 0 || n < 0)
        c->shape_bad++;
    for (int i = 0; i < n; i++) {
        const char *b = res[i].iov_base;

        if (!b || b[res[i].iov_len]) {
            c->nul_bad++;
            continue;
        }
        if (i < RB_KEEP) {
            c->part[i] = malloc(res[i].iov_len + 1);
            ck_assert_ptr_nonnull(c->part[i]);
            memcpy(c->part[i], b, res[i].iov_len + 1);
            c->len[i] = res[i].iov_len;
        }
    }
    if (err < 0)
        rb_logf("cb%d %d\n", c->id, err);
    else if (n > 0 && c->part[0] && c->len[0] <= 60 &&
             strlen(c->part[0]) == c->len[0])
        rb_logf("cb%d ok %s\n", c->id, c->part[0]);
    else
        rb_logf("cb%d ok (%d parts)\n", c->id, n);
    if (c->chain) {
        struct iovec v[2] = { { (void *)"echo", 4 },
                              { (void *)"chained", 7 } };

        c->chain->id = c->id + 100;
        c->chain->x = c->x;
        c->chain_rc = tfork_rpc_call(c->x->r, 2, v, rb_cb, c->chain);
    }
    if (c->free_rpc)
        tfork_rpc_free(c->x->r);
}

static void rb_call_done(struct rb_call *c)
{
    for (int i = 0; i < RB_KEEP; i++) {
        free(c->part[i]);
        c->part[i] = NULL;
    }
}

struct rb_exit {
    int calls;
    pid_t pid;
    int status;
};

static void rb_exit_cb(pid_t pid, int status, void *data)
{
    struct rb_exit *e = data;

    ck_assert_msg(e->calls == 0, "%s: a second on_exit", T.what);
    e->calls++;
    e->pid = pid;
    e->status = status;
}

/* ---------------------------------------------------------------- makers */

/* A tfork-serve template with tests/mod_rpc.so loaded. */
static tfork *rb_tpl(void)
{
    tfork *t;

    errno = 0;
    t = API(tfork_new_exec(T.loop));
    ck_assert_msg(t != NULL, "%s: tfork_new_exec: %s", T.what,
                  strerror(errno));
    ck_assert_int_gt(tfork_pid(t), 0);
    ck_assert_int_lt(T.ntpl, RB_MAXTPL);
    T.tpl[T.ntpl++] = tfork_pid(t);
    ck_assert_int_eq(API(tfork_require(t, rb_mod())), 0);
    return t;
}

/* A child of tpl, its exit reported to e (when not NULL). */
static tfork *rb_child(tfork *tpl, struct rb_exit *e)
{
    tfork *p = API(tfork_fork(tpl));

    ck_assert_msg(p != NULL, "%s: tfork_fork: %s", T.what, strerror(errno));
    if (e)
        ck_assert_int_eq(API(tfork_on_exit(p, rb_exit_cb, e)), 0);
    return p;
}

static tfork_rpc *rb_new(tfork *p, const char *func, int async,
                         const char *init, struct rb_ctx *x)
{
    tfork_rpc_opts o;
    tfork_rpc *r;

    memset(&o, 0, sizeof o);
    o.async = async;
    o.init = init;
    o.on_event = rb_on_event;
    o.on_error = rb_on_error;
    o.on_destroy = rb_on_destroy;
    o.data = x;
    errno = 0;
    r = API(tfork_rpc_new(p, func, &o));
    ck_assert_msg(r != NULL, "%s: tfork_rpc_new(%s): %s", T.what, func,
                  strerror(errno));
    x->r = r;
    ck_assert_int_eq(tfork_rpc_pid(r), 0);
    ck_assert_int_eq(tfork_rpc_pending(r), 0);
    return r;
}

/* The usual start: a template, one child (exit reported to e) made an rpc
 * server of func, the template freed at once (it stays until it reported
 * the child's exit). */
static tfork_rpc *rb_start(const char *func, int async, const char *init,
                           struct rb_ctx *x, struct rb_exit *e)
{
    tfork *t = rb_tpl();
    tfork *p = rb_child(t, e);
    tfork_rpc *r = rb_new(p, func, async, init, x);

    APIV(tfork_free(t));
    return r;
}

static void rb_callv(struct rb_ctx *x, struct rb_call *c, int id, int n,
                     const struct iovec *v)
{
    int e;

    c->id = id;
    c->x = x;
    e = API(tfork_rpc_call(x->r, n, v, rb_cb, c));
    ck_assert_msg(e == 0, "%s: tfork_rpc_call %d: %d %s", T.what, id, e,
                  tfork_strerror(e));
}

/* A call with NUL-terminated string parts (a NULL ends the list). */
static void rb_calls(struct rb_ctx *x, struct rb_call *c, int id, ...)
{
    struct iovec v[16];
    va_list ap;
    const char *s;
    int n = 0;

    va_start(ap, id);
    while ((s = va_arg(ap, const char *)) && n < 16) {
        v[n].iov_base = (void *)s;
        v[n++].iov_len = strlen(s);
    }
    va_end(ap);
    rb_callv(x, c, id, n, v);
}

/* A call that worked: one callback, from the loop, no error. */
static void rb_ok(const struct rb_call *c)
{
    ck_assert_msg(c->calls == 1, "%s: call %d: %d callbacks", T.what, c->id,
                  c->calls);
    ck_assert_msg(c->err == 0, "%s: call %d failed: %d %s: %s", T.what,
                  c->id, c->err, tfork_strerror(c->err), c->msg);
    ck_assert_msg(c->inside == 0, "%s: call %d: callback inside a tfork "
                  "call", T.what, c->id);
    ck_assert_str_eq(c->msg, "");
    ck_assert_int_eq(c->nul_bad, 0);
    ck_assert_int_eq(c->shape_bad, 0);
    ck_assert_int_gt(c->pid, 0);
}

/* A call that worked with one part, s. */
static void rb_ok1(const struct rb_call *c, const char *s)
{
    rb_ok(c);
    ck_assert_msg(c->n == 1 && c->part[0] && strcmp(c->part[0], s) == 0 &&
                  c->len[0] == strlen(s), "%s: call %d: %d parts, first "
                  "'%s', expected '%s'", T.what, c->id, c->n,
                  c->n > 0 && c->part[0] ? c->part[0] : "", s);
}

static void rb_part_eq(const struct rb_call *c, int i, const void *b,
                       size_t len)
{
    ck_assert_int_lt(i, c->n);
    ck_assert_ptr_nonnull(c->part[i]);
    ck_assert_msg(c->len[i] == len, "%s: call %d part %d: %zu bytes, "
                  "expected %zu", T.what, c->id, i, c->len[i], len);
    ck_assert_msg(len == 0 || memcmp(c->part[i], b, len) == 0,
                  "%s: call %d part %d: other bytes", T.what, c->id, i);
}

/* A call that failed: one callback, from the loop, err, no parts, and a
 * message holding has1 and has2 (when not NULL). */
static void rb_failed(const struct rb_call *c, int err, const char *has1,
                      const char *has2)
{
    ck_assert_msg(c->calls == 1, "%s: call %d: %d callbacks", T.what, c->id,
                  c->calls);
    ck_assert_msg(c->err == err, "%s: call %d: err %d (%s), expected %d "
                  "(%s); message '%s'", T.what, c->id, c->err,
                  tfork_strerror(c->err), err, tfork_strerror(err), c->msg);
    ck_assert_int_eq(c->inside, 0);
    ck_assert_int_eq(c->n, 0);
    ck_assert_int_eq(c->shape_bad, 0);
    ck_assert_msg(has1 == NULL || strstr(c->msg, has1), "%s: call %d: "
                  "message '%s' lacks '%s'", T.what, c->id, c->msg, has1);
    ck_assert_msg(has2 == NULL || strstr(c->msg, has2), "%s: call %d: "
                  "message '%s' lacks '%s'", T.what, c->id, c->msg, has2);
}

/* Frees r and runs the loop to its end: on_destroy once, after every
 * callback. */
static void rb_free_clean(struct rb_ctx *x)
{
    APIV(tfork_rpc_free(x->r));
    ck_assert_int_eq(x->destroys, 0);
    rb_loop();
    ck_assert_msg(x->destroys == 1, "%s: on_destroy fired %d times; log:\n%s",
                  T.what, x->destroys, T.log);
    ck_assert_int_eq(x->destroy_inside, 0);
    ck_assert_int_eq(x->errors, 0);
    ck_assert_int_eq(x->ev_inside, 0);
    ck_assert_int_eq(x->ev_nul_bad, 0);
}

static void rb_exited0(const struct rb_exit *e)
{
    ck_assert_int_eq(e->calls, 1);
    ck_assert_msg(WIFEXITED(e->status) && WEXITSTATUS(e->status) == 0,
                  "%s: the rpc child ended with status %#x", T.what,
                  e->status);
}

/* ================================================================ basic */

/* Binary parts with NULs, an empty part, n == 0: echoed exactly, a NUL
 * after each part on both sides, callbacks in call order and never inside
 * tfork_rpc_call.  _i bit 0: async; bit 1: the default loop. */
START_TEST(test_basic)
{
    int async = _i & 1;
    struct rb_ctx x = { 0 };
    struct rb_call c[6] = { { 0 } };
    struct rb_exit e = { 0 };
    unsigned char all[256];
    char nuls[] = "a\0b\0", zeros[3] = { 0, 0, 0 }, mut[] = "mutable";
    struct iovec v[5];
    tfork_rpc *r;

    rb_begin(_i >> 1, "basic");
    for (int i = 0; i < 256; i++)
        all[i] = (unsigned char)i;
    r = rb_start("mod_rpc_echo", async, NULL, &x, &e);
    v[0] = (struct iovec){ nuls, 4 };
    v[1] = (struct iovec){ (void *)"", 0 };
    v[2] = (struct iovec){ zeros, 3 };
    v[3] = (struct iovec){ all, 256 };
    v[4] = (struct iovec){ mut, 7 };
    rb_callv(&x, &c[0], 0, 5, v);
    rb_callv(&x, &c[1], 1, 0, NULL);
    rb_callv(&x, &c[2], 2, 0, v);               /* n == 0, args ignored */
    rb_callv(&x, &c[3], 3, 1, &v[1]);           /* one empty part */
    v[0] = (struct iovec){ NULL, 0 };           /* empty, NULL base */
    rb_callv(&x, &c[4], 4, 1, v);
    rb_callv(&x, &c[5], 5, 1, &v[4]);
    /* the parts were copied: the caller's memory is free again */
    memcpy(mut, "CHANGED", 7);
    for (int i = 0; i < 6; i++)
        ck_assert_int_eq(c[i].calls, 0);
    ck_assert_int_eq(tfork_rpc_pending(r), 6);
    RUN_UNTIL(T.loop, c[5].calls && c[4].calls && c[3].calls && c[2].calls &&
              c[1].calls && c[0].calls, RB_WAIT);
    for (int i = 0; i < 6; i++) {
        rb_ok(&c[i]);
        ck_assert_int_eq(c[i].pid, c[0].pid);
        if (!async)
            ck_assert_int_eq(c[i].seq, i);
    }
    ck_assert_int_eq(tfork_rpc_pending(r), 0);
    ck_assert_int_eq(tfork_rpc_pid(r), c[0].pid);
    ck_assert_int_eq(c[0].n, 5);
    rb_part_eq(&c[0], 0, "a\0b\0", 4);
    rb_part_eq(&c[0], 1, "", 0);
    rb_part_eq(&c[0], 2, zeros, 3);
    rb_part_eq(&c[0], 3, all, 256);
    rb_part_eq(&c[0], 4, "mutable", 7);
    ck_assert_int_eq(c[1].n, 0);
    ck_assert_int_eq(c[2].n, 0);
    ck_assert_int_eq(c[3].n, 1);
    rb_part_eq(&c[3], 0, "", 0);
    ck_assert_int_eq(c[4].n, 1);
    rb_part_eq(&c[4], 0, "", 0);
    ck_assert_int_eq(c[5].n, 1);
    rb_part_eq(&c[5], 0, "mutable", 7);
    rb_free_clean(&x);
    ck_assert_int_eq(x.events, 0);
    rb_exited0(&e);
    ck_assert_int_eq(e.pid, c[0].pid);
    for (int i = 0; i < 6; i++) {
        ck_assert_int_lt(c[i].seq, x.destroy_seq);
        rb_call_done(&c[i]);
    }
    rb_end();
}
END_TEST

/* Events and replies arrive in the order the child sent them. */
START_TEST(test_event_order)
{
    int async = _i & 1;
    struct rb_ctx x = { 0 };
    struct rb_call c[3] = { { 0 } };
    struct rb_exit e = { 0 };

    rb_begin(0, "event_order");
    rb_start("mod_rpc_do", async, NULL, &x, &e);
    rb_calls(&x, &c[0], 0, "events", "a", "", "c", NULL);
    rb_calls(&x, &c[1], 1, "events", NULL);
    rb_calls(&x, &c[2], 2, "events", "z", NULL);
    rb_free_clean(&x);
    for (int i = 0; i < 3; i++)
        rb_ok1(&c[i], "done");
    ck_assert_str_eq(T.log, "ev a\nev \nev c\ncb0 ok done\ncb1 ok done\n"
                     "ev z\ncb2 ok done\ndestroy\n");
    rb_exited0(&e);
    for (int i = 0; i < 3; i++)
        rb_call_done(&c[i]);
    rb_end();
}
END_TEST

/* ================================================================ ports */

/* The callbacks of the AnyEvent::Fork::RPC ports: print what they get. */
static const char *port_last;   /* what on_destroy prints */

static void port_cb(int err, const char *msg, int n, const struct iovec *res,
                    void *data)
{
    (void)data;
    if (err < 0 || n != 1)
        rb_logf("Bail out! call: %d %s (%d parts)\n", err, msg, n);
    else
        rb_logf("%.*s\n", (int)res[0].iov_len, (const char *)res[0].iov_base);
}

static void port_event(tfork_rpc *r, int n, const struct iovec *ev,
                       void *data)
{
    (void)r;
    (void)data;
    if (n != 1)
        rb_logf("Bail out! event of %d parts\n", n);
    else
        rb_logf("%.*s\n", (int)ev[0].iov_len, (const char *)ev[0].iov_base);
}

static void port_error(tfork_rpc *r, int err, const char *msg, void *data)
{
    (void)r;
    (void)data;
    rb_logf("Bail out! on_error %d %s\n", err, msg);
}

static void port_destroy(tfork_rpc *r, void *data)
{
    (void)r;
    (*(int *)data)++;
    rb_logf("%s\n", port_last);
}

/* t/01_sync.t: four calls, each an event "ok N" and a reply "ok N+1". */
START_TEST(test_port_01_sync)
{
    tfork_rpc_opts o;
    tfork_rpc *r;
    tfork *p;
    int done = 0;
    char num[16];

    rb_begin(1, "port_01_sync");
    T.deftpl = 1;
    port_last = "ok 13";
    rb_logf("ok 1\n");
    p = tfork_new(T.loop);
    ck_assert_msg(p != NULL, "tfork_new: %s", strerror(errno));
    ck_assert_int_eq(tfork_require(p, rb_mod()), 0);
    memset(&o, 0, sizeof o);
    o.on_error = port_error;
    o.on_event = port_event;
    o.on_destroy = port_destroy;
    o.data = &done;
    r = tfork_rpc_new(p, "mod_rpc_count", &o);
    ck_assert_ptr_nonnull(r);
    rb_logf("ok 2\n");
    for (int i = 3; i <= 6; i++) {
        struct iovec v;

        snprintf(num, sizeof num, "%d", i * 2 - 1);     /* 5, 7, 9, 11 */
        v.iov_base = num;
        v.iov_len = strlen(num);
        ck_assert_int_eq(tfork_rpc_call(r, 1, &v, port_cb, NULL), 0);
    }
    rb_logf("ok 3\n");
    tfork_rpc_free(r);
    rb_logf("ok 4\n");
    rb_loop();                  /* $done->recv */
    ck_assert_int_eq(done, 1);
    ck_assert_str_eq(T.log, "ok 1\nok 2\nok 3\nok 4\nok 5\nok 6\nok 7\n"
                     "ok 8\nok 9\nok 10\nok 11\nok 12\nok 13\n");
    rb_end();
}
END_TEST

/* t/02_async.t: one call; the child's timer sends events and replies
 * later, after the handle was freed. */
START_TEST(test_port_02_async)
{
    tfork_rpc_opts o;
    tfork_rpc *r;
    tfork *p;
    int done = 0;
    struct iovec v = { (void *)"3", 1 };

    rb_begin(1, "port_02_async");
    T.deftpl = 1;
    port_last = "ok 10";
    rb_logf("ok 1\n");
    p = tfork_new(T.loop);
    ck_assert_msg(p != NULL, "tfork_new: %s", strerror(errno));
    ck_assert_int_eq(tfork_require(p, rb_mod()), 0);
    memset(&o, 0, sizeof o);
    o.async = 1;
    o.on_error = port_error;
    o.on_event = port_event;
    o.on_destroy = port_destroy;
    o.data = &done;
    r = tfork_rpc_new(p, "mod_rpc_ticks", &o);
    ck_assert_ptr_nonnull(r);
    rb_logf("ok 2\n");
    ck_assert_int_eq(tfork_rpc_call(r, 1, &v, port_cb, NULL), 0);
    rb_logf("ok 3\n");
    tfork_rpc_free(r);
    rb_logf("ok 4\n");
    rb_loop();
    ck_assert_int_eq(done, 1);
    ck_assert_str_eq(T.log, "ok 1\nok 2\nok 3\nok 4\nok 5\nok 6\nok 7\n"
                     "ok 8\nok 9\nok 10\n");
    rb_end();
}
END_TEST

/* ================================================================ async */

/* Replies come in completion order, each to its own callback. */
START_TEST(test_async_out_of_order)
{
    struct rb_ctx x = { 0 };
    struct rb_call c[3] = { { 0 } };
    struct rb_exit e = { 0 };

    rb_begin(0, "async_out_of_order");
    rb_start("mod_rpc_do", 1, NULL, &x, &e);
    rb_calls(&x, &c[0], 0, "delay", "300", "slow", NULL);
    rb_calls(&x, &c[1], 1, "delay", "100", "fast", NULL);
    rb_calls(&x, &c[2], 2, "delay", "200", "middle", NULL);
    rb_free_clean(&x);
    rb_ok1(&c[0], "slow");
    rb_ok1(&c[1], "fast");
    rb_ok1(&c[2], "middle");
    ck_assert_str_eq(T.log, "cb1 ok fast\ncb2 ok middle\ncb0 ok slow\n"
                     "destroy\n");
    rb_exited0(&e);
    for (int i = 0; i < 3; i++)
        rb_call_done(&c[i]);
    rb_end();
}
END_TEST

/* ================================================================ end */

/* on_destroy once, after the last callback; the child is gone after it.
 * The calls and the free come before the child even started. */
START_TEST(test_destroy_after_calls)
{
    int async = _i & 1;
    struct rb_ctx x = { 0 };
    struct rb_call c[3] = { { 0 } };
    struct rb_exit e = { 0 };
    pid_t pid = 0, ppid = 0;
    tfork_rpc *r;

    rb_begin(0, "destroy_after_calls");
    r = rb_start("mod_rpc_do", async, NULL, &x, &e);
    rb_calls(&x, &c[0], 0, "delay", "100", "a", NULL);
    rb_calls(&x, &c[1], 1, "pid", NULL);
    rb_calls(&x, &c[2], 2, "delay", "50", "c", NULL);
    ck_assert_int_eq(tfork_rpc_pid(r), 0);      /* not started yet */
    ck_assert_int_eq(tfork_rpc_pending(r), 3);
    rb_free_clean(&x);
    rb_ok1(&c[0], "a");
    rb_ok(&c[1]);
    ck_assert_int_eq(sscanf(c[1].part[0], "%d %d", &pid, &ppid), 2);
    ck_assert_int_eq(pid, c[1].pid);
    rb_ok1(&c[2], "c");
    for (int i = 0; i < 3; i++)
        ck_assert_int_lt(c[i].seq, x.destroy_seq);
    rb_exited0(&e);
    ck_assert_int_eq(e.pid, pid);
    /* the template reaped it: no such process any more */
    RUN_UNTIL(T.loop, tu_gone(pid), 10.);
    for (int i = 0; i < 3; i++)
        rb_call_done(&c[i]);
    rb_end();
}
END_TEST

/* A free without any call: the child starts, sees EOF, exits cleanly.
 * _i bit 0: async; bit 1: the default loop. */
START_TEST(test_destroy_idle)
{
    struct rb_ctx x = { 0 };
    struct rb_exit e = { 0 };

    rb_begin(_i >> 1, "destroy_idle");
    rb_start("mod_rpc_do", _i & 1, NULL, &x, &e);
    rb_free_clean(&x);
    ck_assert_str_eq(T.log, "destroy\n");
    rb_exited0(&e);
    RUN_UNTIL(T.loop, tu_gone(e.pid), 10.);
    rb_end();
}
END_TEST

/* ================================================================ death */

/* The child dies with 5 calls queued or in flight.  _i bit 0: async;
 * bits 1-2: raise(SIGSEGV), abort(), _exit(3), SIGKILL from the test. */
START_TEST(test_child_death)
{
    static const char *const how[] = { "segv", "abort", "exit3", "kill" };
    int async = _i & 1, kind = _i >> 1;
    struct rb_ctx x = { 0 };
    struct rb_call c[5] = { { 0 } }, late = { 0 };
    struct rb_exit e = { 0 };
    char what[64];
    tfork_rpc *r;
    int rc;

    snprintf(what, sizeof what, "child_death %s %s", async ? "async" : "sync",
             how[kind]);
    rb_begin(0, what);
    r = rb_start("mod_rpc_do", async, NULL, &x, &e);
    for (int i = 0; i < 5; i++) {
        if (kind == 3 && (async || i == 0))
            rb_calls(&x, &c[i], i, "hang", NULL);
        else if (i == 0)
            rb_calls(&x, &c[i], i, "die", how[kind], NULL);
        else
            rb_calls(&x, &c[i], i, "pid", NULL);
    }
    /* SIGKILL once every call is in the child (async) or the first one is
     * (sync: four more queued) */
    x.kill_at = kind == 3 ? (async ? 5 : 1) : 0;
    RUN_UNTIL(T.loop, x.errors, RB_WAIT);
    /* every call failed, then on_error once, all in one loop iteration */
    for (int i = 0; i < 5; i++) {
        rb_failed(&c[i], -EPIPE, "rpc child", NULL);
        ck_assert_msg(c[i].iter == x.err_iter, "%s: call %d in iteration "
                      "%u, on_error in %u", what, i, c[i].iter, x.err_iter);
        ck_assert_int_lt(c[i].seq, x.err_seq);
    }
    ck_assert_int_eq(x.errors, 1);
    ck_assert_int_eq(x.err, -EPIPE);
    ck_assert_int_eq(x.err_inside, 0);
    ck_assert_ptr_nonnull(strstr(x.err_msg, "rpc child"));
    ck_assert_int_eq(tfork_rpc_pending(r), 0);
    /* a lost child takes no more calls, and they get no callback */
    rc = API(tfork_rpc_call(r, 0, NULL, rb_cb, &late));
    ck_assert_int_eq(rc, -EPIPE);
    RUN_UNTIL(T.loop, e.calls, RB_WAIT);
    for (int k = 0; k < 10; k++)
        ev_run(T.loop, EVRUN_NOWAIT);
    ck_assert_int_eq(late.calls, 0);
    ck_assert_int_eq(x.errors, 1);
    switch (kind) {
    case 0:
        ck_assert_msg(WIFSIGNALED(e.status) && WTERMSIG(e.status) == SIGSEGV,
                      "%s: status %#x", what, e.status);
        break;
    case 1:
        ck_assert_msg(WIFSIGNALED(e.status) && WTERMSIG(e.status) == SIGABRT,
                      "%s: status %#x", what, e.status);
        break;
    case 2:
        ck_assert_msg(WIFEXITED(e.status) && WEXITSTATUS(e.status) == 3,
                      "%s: status %#x", what, e.status);
        break;
    default:
        ck_assert_int_eq(x.killed, e.pid);
        ck_assert_msg(WIFSIGNALED(e.status) && WTERMSIG(e.status) == SIGKILL,
                      "%s: status %#x", what, e.status);
    }
    if (c[0].pid > 0)
        ck_assert_int_eq(c[0].pid, e.pid);
    /* the handle still needs a free: at once, no on_destroy */
    APIV(tfork_rpc_free(r));
    rb_loop();
    ck_assert_int_eq(x.destroys, 0);
    ck_assert_int_eq(x.errors, 1);
    rb_end();
}
END_TEST

/* ================================================================ fail */

/* tfork_rpc_fail and a function that returns without replying fail only
 * that call; the same child serves the next ones. */
START_TEST(test_fail_keeps_serving)
{
    int async = _i & 1;
    struct rb_ctx x = { 0 };
    struct rb_call c[7] = { { 0 } };
    struct rb_exit e = { 0 };

    rb_begin(0, "fail_keeps_serving");
    rb_start("mod_rpc_do", async, NULL, &x, &e);
    rb_calls(&x, &c[0], 0, "fail", "boom", NULL);
    rb_calls(&x, &c[1], 1, "pid", NULL);
    rb_calls(&x, &c[2], 2, "noreply", "5", NULL);
    rb_calls(&x, &c[3], 3, "pid", NULL);
    rb_calls(&x, &c[4], 4, "fail", "", NULL);
    rb_calls(&x, &c[5], 5, async ? "pid" : "noreply", "0", NULL);
    rb_calls(&x, &c[6], 6, "pid", NULL);
    rb_free_clean(&x);
    rb_failed(&c[0], -ECANCELED, NULL, NULL);
    ck_assert_str_eq(c[0].msg, "boom");
    rb_ok(&c[1]);
    rb_failed(&c[2], -ECANCELED, "mod_rpc_do", "5");
    if (!async)
        rb_failed(&c[2], -ECANCELED, "mod_rpc_do", "without replying");
    rb_ok(&c[3]);
    ck_assert_str_eq(c[3].part[0], c[1].part[0]);       /* the same child */
    rb_failed(&c[4], -ECANCELED, NULL, NULL);
    ck_assert_str_eq(c[4].msg, "");
    if (async) {
        /* "pid" with an extra argument: still a reply */
        rb_ok(&c[5]);
    } else {
        /* returning 0 without a reply is no reply either */
        rb_failed(&c[5], -ECANCELED, "mod_rpc_do", "without replying");
    }
    rb_ok(&c[6]);
    ck_assert_str_eq(c[6].part[0], c[1].part[0]);
    for (int i = 0; i < 7; i++) {
        ck_assert_int_eq(c[i].pid, c[1].pid);
        if (!async)
            ck_assert_int_eq(c[i].seq, i);
    }
    rb_exited0(&e);
    for (int i = 0; i < 7; i++)
        rb_call_done(&c[i]);
    rb_end();
}
END_TEST

/* ================================================================ lost
 * before serving */

/* Unknown func, unknown init, init returning nonzero: every queued call
 * fails with the code and the name, then on_error once.  _i bit 0:
 * async; _i >> 1: the case. */
START_TEST(test_bad_func_init)
{
    static const struct {
        const char *func, *init, *name;
        int err;
    } k[] = {
        { "no_such_rpc_func", NULL, "no_such_rpc_func", -ENOENT },
        { "mod_rpc_echo", "no_such_rpc_init", "no_such_rpc_init", -ENOENT },
        { "mod_rpc_echo", "mod_rpc_init_fail", "mod_rpc_init_fail",
          -ECANCELED },
    };
    int async = _i & 1, w = _i >> 1;
    struct rb_ctx x = { 0 };
    struct rb_call c[3] = { { 0 } }, late = { 0 };
    struct rb_exit e = { 0 };
    tfork_rpc *r;

    rb_begin(0, k[w].name);
    r = rb_start(k[w].func, async, k[w].init, &x, &e);
    for (int i = 0; i < 3; i++)
        rb_calls(&x, &c[i], i, "x", NULL);
    RUN_UNTIL(T.loop, x.errors, RB_WAIT);
    for (int i = 0; i < 3; i++) {
        rb_failed(&c[i], k[w].err, k[w].name, NULL);
        ck_assert_str_eq(c[i].msg, c[0].msg);
        ck_assert_int_lt(c[i].seq, x.err_seq);
        ck_assert_int_eq(c[i].iter, x.err_iter);
    }
    ck_assert_int_eq(x.errors, 1);
    ck_assert_int_eq(x.err, k[w].err);
    ck_assert_str_eq(x.err_msg, c[0].msg);
    ck_assert_int_eq(API(tfork_rpc_call(r, 0, NULL, rb_cb, &late)), -EPIPE);
    APIV(tfork_rpc_free(r));
    rb_loop();
    ck_assert_int_eq(late.calls, 0);
    ck_assert_int_eq(x.destroys, 0);
    ck_assert_int_eq(x.errors, 1);
    ck_assert_int_eq(e.calls, 1);
    rb_end();
}
END_TEST

/* The child never starts: a module that does not load, or its template
 * killed before the fork.  _i bit 0: async; bit 1: the case. */
START_TEST(test_never_started)
{
    int async = _i & 1, killed = _i >> 1;
    const char *bad = "/nonexistent/tfork-test/mod_rpc_nope.so";
    struct rb_ctx x = { 0 };
    struct rb_call c[3] = { { 0 } }, late = { 0 };
    struct rb_exit e = { 0 }, te = { 0 };
    tfork *t, *p;
    tfork_rpc *r;

    rb_begin(0, killed ? "never_started template killed"
                       : "never_started bad module");
    t = rb_tpl();
    ck_assert_int_eq(API(tfork_on_exit(t, rb_exit_cb, &te)), 0);
    if (killed) {
        /* dead before it could fork anything: a zombie the loop has not
         * seen yet */
        double dl = tu_now() + RB_WAIT;

        ck_assert_int_eq(kill(tfork_pid(t), SIGKILL), 0);
        while (tu_proc_state(tfork_pid(t), NULL, NULL) != 'Z') {
            ck_assert_msg(tu_now() < dl, "%s: the template does not die",
                          T.what);
            usleep(1000);
        }
    }
    p = rb_child(t, &e);
    if (!killed)
        ck_assert_int_eq(API(tfork_require(p, bad)), 0);
    r = rb_new(p, "mod_rpc_echo", async, NULL, &x);
    APIV(tfork_free(t));
    for (int i = 0; i < 3; i++)
        rb_calls(&x, &c[i], i, "x", NULL);
    RUN_UNTIL(T.loop, x.errors, RB_WAIT);
    for (int i = 0; i < 3; i++) {
        if (killed)
            rb_failed(&c[i], -EPIPE, NULL, NULL);
        else
            rb_failed(&c[i], -ELIBACC, bad, NULL);
        ck_assert_msg(c[i].msg[0], "%s: no message", T.what);
        ck_assert_str_eq(c[i].msg, c[0].msg);
        ck_assert_int_lt(c[i].seq, x.err_seq);
        ck_assert_int_eq(c[i].iter, x.err_iter);
    }
    ck_assert_int_eq(x.errors, 1);
    ck_assert_int_eq(x.err, c[0].err);
    ck_assert_str_eq(x.err_msg, c[0].msg);
    ck_assert_int_eq(tfork_rpc_pid(r), -1);
    ck_assert_int_eq(API(tfork_rpc_call(r, 0, NULL, rb_cb, &late)), -EPIPE);
    APIV(tfork_rpc_free(r));
    rb_loop();
    ck_assert_int_eq(late.calls, 0);
    ck_assert_int_eq(x.destroys, 0);
    ck_assert_int_eq(e.calls, 1);
    ck_assert_int_eq(te.calls, 1);
    if (killed)
        ck_assert(WIFSIGNALED(te.status) && WTERMSIG(te.status) == SIGKILL);
    rb_end();
}
END_TEST

/* ================================================================ big */

static struct {
    ev_timer tick;
    ev_check check;
    int ticks, iters;
    int ticks_got, iters_got;   /* at the event "got" */
    int counting;
} big;

static void big_tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    big.ticks += big.counting;
}

static void big_check_cb(struct ev_loop *loop, ev_check *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    big.iters += big.counting;
}

static void big_got(struct rb_ctx *x)
{
    (void)x;
    big.ticks_got = big.ticks;
    big.iters_got = big.iters;
}

/* A 16 MiB argument and a 16 MiB reply, both intact, while the loop keeps
 * turning: a 1 ms timer ticks and many loop iterations pass while the
 * argument travels. */
START_TEST(test_big)
{
    size_t size = 16 * MiB;
    struct rb_ctx x = { 0 };
    struct rb_call c = { 0 };
    struct rb_exit e = { 0 };
    unsigned char *arg = malloc(size), *want = malloc(size);
    char head[64];
    struct iovec v[4];

    ck_assert_ptr_nonnull(arg);
    ck_assert_ptr_nonnull(want);
    rb_begin(0, "big");
    tu_pattern(arg, size, 0xabcdef);
    tu_pattern(want, size, 0x5eed);
    snprintf(head, sizeof head, "%zu %016llx", size,
             (unsigned long long)tu_fnv(TU_FNV0, arg, size));
    memset(&big, 0, sizeof big);
    ev_timer_init(&big.tick, big_tick_cb, 0.001, 0.001);
    ev_timer_start(T.loop, &big.tick);
    ev_check_init(&big.check, big_check_cb);
    ev_check_start(T.loop, &big.check);
    x.on_got = big_got;
    rb_start("mod_rpc_do", 0, NULL, &x, &e);
    v[0] = (struct iovec){ (void *)"big", 3 };
    v[1] = (struct iovec){ arg, size };
    v[2] = (struct iovec){ (void *)"16777216", 8 };
    v[3] = (struct iovec){ (void *)"5eed", 4 };
    big.counting = 1;
    rb_callv(&x, &c, 0, 4, v);
    memset(arg, 0, size);       /* copied: ours again */
    RUN_UNTIL(T.loop, c.calls, 60.);
    big.counting = 0;
    rb_ok(&c);
    ck_assert_int_eq(c.n, 2);
    ck_assert_str_eq(c.part[0], head);
    rb_part_eq(&c, 1, want, size);
    ck_assert_int_eq(x.events, 1);
    ck_assert_msg(big.iters_got >= 8, "%s: only %d loop iterations while "
                  "16 MiB went to the child (%d ticks): the loop blocked",
                  T.what, big.iters_got, big.ticks_got);
    ck_assert_msg(big.ticks >= 20, "%s: the 1 ms timer ticked only %d times "
                  "during the call (%d iterations)", T.what, big.ticks,
                  big.iters);
    ev_timer_stop(T.loop, &big.tick);
    ev_check_stop(T.loop, &big.check);
    rb_free_clean(&x);
    rb_exited0(&e);
    rb_call_done(&c);
    free(arg);
    free(want);
    rb_end();
}
END_TEST

/* ================================================================ many */

static struct {
    int next, done, bad;
    int async;
    char why[256];
    unsigned char *seen;
} bulk;

static void bulk_cb(int err, const char *msg, int n, const struct iovec *res,
                    void *data)
{
    int id = (int)(intptr_t)data;
    char want[32];
    size_t wl;

    snprintf(want, sizeof want, "call %d", id);
    wl = strlen(want);
    bulk.done++;
    if (tu_in_api && !bulk.bad++)
        snprintf(bulk.why, sizeof bulk.why, "call %d: inside a tfork call",
                 id);
    if (!bulk.async && id != bulk.next && !bulk.bad++)
        snprintf(bulk.why, sizeof bulk.why, "call %d answered when %d was "
                 "due", id, bulk.next);
    bulk.next = id + 1;
    if (bulk.seen[id]++ && !bulk.bad++)
        snprintf(bulk.why, sizeof bulk.why, "call %d: a second callback",
                 id);
    if (err < 0) {
        if (!bulk.bad++)
            snprintf(bulk.why, sizeof bulk.why, "call %d: %d %s", id, err,
                     msg);
        return;
    }
    if ((n < 1 || res[0].iov_len != wl || memcmp(res[0].iov_base, want, wl))
        && !bulk.bad++)
        snprintf(bulk.why, sizeof bulk.why, "call %d: reply '%.*s'", id,
                 n > 0 ? (int)res[0].iov_len : 0,
                 n > 0 ? (const char *)res[0].iov_base : "");
    if (!bulk.async && (n != 2 || res[1].iov_len != sizeof id ||
                        memcmp(res[1].iov_base, &id, sizeof id)) &&
        !bulk.bad++)
        snprintf(bulk.why, sizeof bulk.why, "call %d: second part", id);
}

/* 10,000 calls queued at once to a sync child, a few thousand to an async
 * one: all answered, each once with its own payload; in order when sync. */
START_TEST(test_many)
{
    int async = _i & 1, n = async ? 3000 : 10000;
    struct rb_ctx x = { 0 };
    struct rb_exit e = { 0 };
    tfork_rpc *r;
    char s[32];

    rb_begin(0, async ? "many async" : "many sync");
    memset(&bulk, 0, sizeof bulk);
    bulk.async = async;
    bulk.seen = calloc((size_t)n, 1);
    ck_assert_ptr_nonnull(bulk.seen);
    r = rb_start(async ? "mod_rpc_do" : "mod_rpc_echo", async, NULL, &x, &e);
    for (int i = 0; i < n; i++) {
        struct iovec v[3];
        int k = 0;

        snprintf(s, sizeof s, "call %d", i);
        if (async) {
            /* every other one replied later, from the child's loop */
            if (i % 2) {
                v[k++] = (struct iovec){ (void *)"delay", 5 };
                v[k++] = (struct iovec){ (void *)"0", 1 };
            } else {
                v[k++] = (struct iovec){ (void *)"echo", 4 };
            }
            v[k++] = (struct iovec){ s, strlen(s) };
        } else {
            v[k++] = (struct iovec){ s, strlen(s) };
            v[k++] = (struct iovec){ &i, sizeof i };
        }
        ck_assert_int_eq(API(tfork_rpc_call(r, k, v, bulk_cb,
                                            (void *)(intptr_t)i)), 0);
    }
    ck_assert_int_eq(tfork_rpc_pending(r), n);
    ck_assert_int_eq(bulk.done, 0);
    RUN_UNTIL(T.loop, bulk.done == n || bulk.bad, 120.);
    ck_assert_msg(!bulk.bad, "%s: %s", T.what, bulk.why);
    ck_assert_int_eq(tfork_rpc_pending(r), 0);
    rb_free_clean(&x);
    ck_assert_int_eq(bulk.done, n);
    rb_exited0(&e);
    free(bulk.seen);
    rb_end();
}
END_TEST

/* ================================================================ caps */

static int bad_called;

static void bad_cb(int err, const char *msg, int n, const struct iovec *res,
                   void *data)
{
    (void)err;
    (void)msg;
    (void)n;
    (void)res;
    (void)data;
    bad_called++;
}

/* Bad input and calls over the caps: refused at once, no callback. */
START_TEST(test_bad_input)
{
    struct rb_ctx x = { 0 };
    struct rb_call c[3] = { { 0 } };
    struct rb_exit e = { 0 };
    size_t each = TFORK_RPC_MAX / 8;
    char *shared = calloc(1, each), *huge = calloc(1, TFORK_RPC_MAX + 1ul);
    struct iovec *many = calloc(TFORK_RPC_PARTS_MAX + 1, sizeof *many);
    struct iovec v[9], one = { (void *)"x", 1 };
    char want[96];
    uint64_t h = TU_FNV0;
    tfork_rpc *r;

    ck_assert_ptr_nonnull(shared);
    ck_assert_ptr_nonnull(huge);
    ck_assert_ptr_nonnull(many);
    rb_begin(0, "bad_input");
    r = rb_start("mod_rpc_len", 0, NULL, &x, &e);
    ck_assert_int_eq(API(tfork_rpc_call(r, -1, &one, bad_cb, NULL)), -EINVAL);
    ck_assert_int_eq(API(tfork_rpc_call(r, 1, NULL, bad_cb, NULL)), -EINVAL);
    ck_assert_int_eq(API(tfork_rpc_call(r, 1, &one, NULL, NULL)), -EINVAL);
    ck_assert_int_eq(API(tfork_rpc_call(NULL, 1, &one, bad_cb, NULL)),
                     -EINVAL);
    ck_assert_int_eq(API(tfork_rpc_call(NULL, 0, NULL, bad_cb, NULL)),
                     -EINVAL);
    /* one part too many */
    for (unsigned i = 0; i <= TFORK_RPC_PARTS_MAX; i++)
        many[i] = (struct iovec){ shared, 1 };
    ck_assert_int_eq(API(tfork_rpc_call(r, (int)TFORK_RPC_PARTS_MAX + 1, many,
                                        bad_cb, NULL)), -E2BIG);
    ck_assert_int_eq(API(tfork_rpc_call(r, INT_MAX, many, bad_cb, NULL)),
                     -E2BIG);
    /* one byte too many: in one part, and over 9 parts of one buffer */
    v[0] = (struct iovec){ huge, TFORK_RPC_MAX + 1ul };
    ck_assert_int_eq(API(tfork_rpc_call(r, 1, v, bad_cb, NULL)), -E2BIG);
    for (int i = 0; i < 8; i++)
        v[i] = (struct iovec){ shared, each };
    v[8] = (struct iovec){ shared, 1 };
    ck_assert_int_eq(API(tfork_rpc_call(r, 9, v, bad_cb, NULL)), -E2BIG);
    /* lengths whose sum wraps around */
    v[0] = (struct iovec){ shared, SIZE_MAX };
    v[1] = (struct iovec){ shared, 2 };
    ck_assert_int_eq(API(tfork_rpc_call(r, 2, v, bad_cb, NULL)), -E2BIG);
    v[0] = (struct iovec){ shared, SIZE_MAX / 2 + 1 };
    v[1] = (struct iovec){ shared, SIZE_MAX / 2 + 1 };
    ck_assert_int_eq(API(tfork_rpc_call(r, 2, v, bad_cb, NULL)), -E2BIG);
    ck_assert_int_eq(tfork_rpc_pending(r), 0);

    /* exactly at the caps: accepted and delivered whole */
    for (int i = 0; i < 8; i++)
        v[i] = (struct iovec){ shared, each };
    rb_callv(&x, &c[0], 0, 8, v);
    rb_callv(&x, &c[1], 1, (int)TFORK_RPC_PARTS_MAX, many);
    rb_callv(&x, &c[2], 2, 0, NULL);
    ck_assert_int_eq(tfork_rpc_pending(r), 3);
    rb_free_clean(&x);
    for (int i = 0; i < 8; i++)
        h = tu_fnv(h, shared, each);
    snprintf(want, sizeof want, "8 %u %016llx", TFORK_RPC_MAX,
             (unsigned long long)h);
    rb_ok1(&c[0], want);
    h = TU_FNV0;
    for (unsigned i = 0; i < TFORK_RPC_PARTS_MAX; i++)
        h = tu_fnv(h, shared, 1);
    snprintf(want, sizeof want, "%u %u %016llx", TFORK_RPC_PARTS_MAX,
             TFORK_RPC_PARTS_MAX, (unsigned long long)h);
    rb_ok1(&c[1], want);
    snprintf(want, sizeof want, "0 0 %016llx", TU_FNV0);
    rb_ok1(&c[2], want);
    ck_assert_int_eq(bad_called, 0);
    rb_exited0(&e);
    for (int i = 0; i < 3; i++)
        rb_call_done(&c[i]);
    free(shared);
    free(huge);
    free(many);
    rb_end();
}
END_TEST

/* The child's caps: a reply or event over them is refused with -E2BIG and
 * the call can still be answered; a reply of exactly TFORK_RPC_MAX bytes
 * arrives whole; bad reply arguments are -EINVAL. */
START_TEST(test_child_caps)
{
    int async = _i & 1;
    size_t each = TFORK_RPC_MAX / 8;
    struct rb_ctx x = { 0 };
    struct rb_call c[4] = { { 0 } };
    struct rb_exit e = { 0 };
    unsigned char *want = malloc(each);

    ck_assert_ptr_nonnull(want);
    rb_begin(0, "child_caps");
    tu_pattern(want, each, 0x1234);
    rb_start("mod_rpc_do", async, NULL, &x, &e);
    rb_calls(&x, &c[0], 0, "caps", NULL);
    rb_calls(&x, &c[1], 1, "maxreply", NULL);
    rb_calls(&x, &c[2], 2, "badreply", NULL);
    rb_calls(&x, &c[3], 3, "pid", NULL);
    rb_free_clean(&x);
    rb_ok1(&c[0], "caps -7 -7 -7 -7");
    rb_ok(&c[1]);
    ck_assert_int_eq(c[1].n, 8);
    for (int i = 0; i < 8; i++)
        rb_part_eq(&c[1], i, want, each);
    rb_ok1(&c[2], "bad -22 -22 -22 -22");
    rb_ok(&c[3]);
    ck_assert_int_eq(x.events, 0);
    rb_exited0(&e);
    for (int i = 0; i < 4; i++)
        rb_call_done(&c[i]);
    free(want);
    rb_end();
}
END_TEST

struct plain_run {
    int calls, inside, err;
    char msg[512];
};

static void plain_run_cb(tfork *p, int fd, int err, void *data)
{
    struct plain_run *r = data;

    r->calls++;
    r->inside += tu_in_api > 0;
    r->err = err;
    snprintf(r->msg, sizeof r->msg, "%s", tfork_errmsg(p));
    if (fd >= 0)
        close(fd);
}

/* tfork_rpc_new refuses NULL p, NULL func and a process already run; it
 * owns p even then (nothing is left behind). */
START_TEST(test_new_bad)
{
    struct plain_run run = { 0 };
    struct rb_exit e1 = { 0 };
    tfork *t, *p;
    tfork_rpc_opts o;

    rb_begin(0, "new_bad");
    memset(&o, 0, sizeof o);
    errno = 0;
    ck_assert_ptr_null(API(tfork_rpc_new(NULL, "mod_rpc_echo", NULL)));
    ck_assert_int_eq(errno, EINVAL);
    errno = 0;
    ck_assert_ptr_null(API(tfork_rpc_new(NULL, "mod_rpc_echo", &o)));
    ck_assert_int_eq(errno, EINVAL);
    t = rb_tpl();
    /* NULL func: p is freed, its unrun process exits */
    p = rb_child(t, &e1);
    errno = 0;
    ck_assert_ptr_null(API(tfork_rpc_new(p, NULL, &o)));
    ck_assert_int_eq(errno, EINVAL);
    /* already run */
    p = rb_child(t, NULL);
    ck_assert_int_eq(API(tfork_run(p, "mod_rpc_plain", plain_run_cb, &run)),
                     0);
    errno = 0;
    ck_assert_ptr_null(API(tfork_rpc_new(p, "mod_rpc_echo", NULL)));
    ck_assert_int_eq(errno, EINVAL);
    APIV(tfork_rpc_free(NULL));
    APIV(tfork_free(t));
    rb_loop();
    ck_assert_int_eq(e1.calls, 1);
    ck_assert_int_eq(run.calls, 1);
    ck_assert_int_eq(run.inside, 0);
    ck_assert_msg(run.err == 0, "%s: run: %d %s", T.what, run.err, run.msg);
    rb_end();
}
END_TEST

/* The child-side API outside an RPC child (here, in the test process). */
START_TEST(test_child_api_outside)
{
    struct iovec v = { (void *)"x", 1 };

    ck_assert_int_eq(tfork_rpc_event(1, &v), -ENOTCONN);
    ck_assert_int_eq(tfork_rpc_event(0, NULL), -ENOTCONN);
    ck_assert_ptr_null(tfork_rpc_loop());
    ck_assert_int_eq(tfork_rpc_reply(NULL, 1, &v), -EINVAL);
    ck_assert_int_eq(tfork_rpc_fail(NULL, "x"), -EINVAL);
}
END_TEST

/* ================================================================ child
 * side */

/* A second reply (or fail) of the same req is refused with -EINVAL, and
 * so are a NULL req; the first reply arrives, the child goes on. */
START_TEST(test_reply_twice)
{
    int async = _i & 1;
    struct rb_ctx x = { 0 };
    struct rb_call c[2] = { { 0 } };
    struct rb_exit e = { 0 };

    rb_begin(0, "reply_twice");
    rb_start("mod_rpc_do", async, NULL, &x, &e);
    rb_calls(&x, &c[0], 0, "reply2", NULL);
    rb_calls(&x, &c[1], 1, "echo", "after", NULL);
    rb_free_clean(&x);
    rb_ok1(&c[0], "first");
    rb_ok1(&c[1], "after");
    ck_assert_str_eq(T.log, "cb0 ok first\nev reply2 0 -22 -22 -22 -22\n"
                     "cb1 ok after\ndestroy\n");
    rb_exited0(&e);
    for (int i = 0; i < 2; i++)
        rb_call_done(&c[i]);
    rb_end();
}
END_TEST

/* A req kept after its reply stays answered: replying to it in a later
 * call is refused, and does not answer that later call.  _i bit 0:
 * async. */
START_TEST(test_stale_req)
{
    int async = _i & 1;
    struct rb_ctx x = { 0 };
    struct rb_call c[4] = { { 0 } };
    struct rb_exit e = { 0 };

    rb_begin(0, "stale_req");
    rb_start("mod_rpc_do", async, NULL, &x, &e);
    rb_calls(&x, &c[0], 0, "keep", NULL);
    rb_calls(&x, &c[1], 1, "stale", NULL);
    /* async: a reply later from the loop frees a req, the next call's
     * may take its memory */
    rb_calls(&x, &c[2], 2, "delay", "0", "later", NULL);
    RUN_UNTIL(T.loop, c[2].calls, RB_WAIT);
    rb_calls(&x, &c[3], 3, "stale", NULL);
    rb_free_clean(&x);
    rb_ok1(&c[0], "kept");
    rb_ok1(&c[1], "own");
    rb_ok1(&c[2], "later");
    rb_ok1(&c[3], "own");
    ck_assert_str_eq(T.log, "cb0 ok kept\nev stale -22 -22\ncb1 ok own\n"
                     "cb2 ok later\nev stale -22 -22\ncb3 ok own\n"
                     "destroy\n");
    rb_exited0(&e);
    for (int i = 0; i < 4; i++)
        rb_call_done(&c[i]);
    rb_end();
}
END_TEST

/* tfork_rpc_loop(): NULL in a sync child, a loop in an async one. */
START_TEST(test_child_loop)
{
    int async = _i & 1;
    struct rb_ctx x = { 0 };
    struct rb_call c = { 0 };
    struct rb_exit e = { 0 };

    rb_begin(0, "child_loop");
    rb_start("mod_rpc_do", async, NULL, &x, &e);
    rb_calls(&x, &c, 0, "loop", NULL);
    rb_free_clean(&x);
    rb_ok1(&c, async ? "loop" : "null");
    rb_exited0(&e);
    rb_call_done(&c);
    rb_end();
}
END_TEST

static char *rb_read_line(int fd, double secs)
{
    static char buf[256];
    double dl = tu_now() + secs;
    size_t len = 0;

    for (;;) {
        struct pollfd pfd = { fd, POLLIN, 0 };
        ssize_t n;

        ck_assert_msg(tu_now() < dl, "%s: no line within %.0f s", T.what,
                      secs);
        if (poll(&pfd, 1, 100) <= 0)
            continue;
        n = read(fd, buf + len, 1);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        ck_assert_int_eq(n, 1);
        if (buf[len] == '\n' || ++len == sizeof buf - 1)
            break;
    }
    buf[len] = 0;
    return buf;
}

/* init gets the run args, the template's first then the process's own
 * (fds included); an event sent from init arrives before the first
 * reply; tfork_rpc_loop() is already set inside an async init. */
START_TEST(test_init_args_event)
{
    int async = _i & 1;
    struct rb_ctx x = { 0 };
    struct rb_call c[2] = { { 0 } };
    struct rb_exit e = { 0 };
    char want[64];
    int pfd[2];
    tfork *t, *p;

    rb_begin(0, "init_args_event");
    ck_assert_int_eq(pipe2(pfd, O_CLOEXEC), 0);
    t = rb_tpl();
    ck_assert_int_eq(API(tfork_send_arg(t, "t1", 2)), 0);
    ck_assert_int_eq(API(tfork_send_arg(t, "", 0)), 0);
    ck_assert_int_eq(API(tfork_send_fd(t, pfd[1])), 0);
    p = rb_child(t, &e);
    ck_assert_int_eq(API(tfork_send_arg(t, "late", 4)), 0);    /* not p's */
    ck_assert_int_eq(API(tfork_send_arg(p, "c\0b", 3)), 0);
    ck_assert_int_eq(API(tfork_send_arg(p, "c2", 2)), 0);
    close(pfd[1]);
    rb_new(p, "mod_rpc_do", async, "mod_rpc_init_rec", &x);
    APIV(tfork_free(t));
    rb_calls(&x, &c[0], 0, "initargs", NULL);
    rb_calls(&x, &c[1], 1, "pid", NULL);
    rb_free_clean(&x);
    rb_ok(&c[0]);
    rb_ok(&c[1]);
    snprintf(want, sizeof want, "init 1 %d 0", async);
    ck_assert_int_eq(c[0].n, 6);
    rb_part_eq(&c[0], 0, want, strlen(want));
    rb_part_eq(&c[0], 1, "t1", 2);
    rb_part_eq(&c[0], 2, "", 0);
    rb_part_eq(&c[0], 3, "<fd>", 4);
    rb_part_eq(&c[0], 4, "c\0b", 3);
    rb_part_eq(&c[0], 5, "c2", 2);
    snprintf(want, sizeof want, "ev init 5\ncb0 ok init 1 %d 0\ncb1 ok ",
             async);
    ck_assert_msg(strncmp(T.log, want, strlen(want)) == 0, "%s: log:\n%s",
                  T.what, T.log);
    /* the fd sent to the template reached init */
    snprintf(want, sizeof want, "init %d", (int)e.pid);
    ck_assert_str_eq(rb_read_line(pfd[0], 10.), want);
    close(pfd[0]);
    rb_exited0(&e);
    for (int i = 0; i < 2; i++)
        rb_call_done(&c[i]);
    rb_end();
}
END_TEST

/* ================================================================ ev_run */

/* An idle rpc (alive, not freed, nothing pending) does not keep ev_run
 * alive; pending calls and the graceful end do.
 * _i bit 0: async; bit 1: the default loop. */
START_TEST(test_evrun)
{
    int async = _i & 1;
    struct rb_ctx x = { 0 };
    struct rb_call c[3] = { { 0 } };
    tfork *t, *p;
    tfork_rpc *r;
    pid_t pid;

    rb_begin(_i >> 1, "evrun");
    t = rb_tpl();
    p = rb_child(t, NULL);      /* no on_exit: it would keep ev_run alive */
    r = rb_new(p, "mod_rpc_do", async, NULL, &x);
    /* a pending call keeps it running: ev_run returns after the reply */
    rb_calls(&x, &c[0], 0, "delay", "300", "a", NULL);
    rb_loop();
    rb_ok1(&c[0], "a");
    pid = tfork_rpc_pid(r);
    ck_assert_int_gt(pid, 0);
    /* idle: ev_run returns by itself, the child lives on */
    tu_loop_drains(T.loop);
    ck_assert_int_eq(kill(pid, 0), 0);
    ck_assert_int_eq(x.destroys + x.errors, 0);
    rb_calls(&x, &c[1], 1, "delay", "200", "b", NULL);
    rb_calls(&x, &c[2], 2, "delay", "100", "c", NULL);
    rb_loop();
    rb_ok1(&c[1], "b");
    rb_ok1(&c[2], "c");
    tu_loop_drains(T.loop);
    ck_assert_int_eq(kill(pid, 0), 0);
    /* the graceful end keeps it running until on_destroy */
    rb_free_clean(&x);
    /* on_destroy means the child closed its end; its template, still
     * here, reaps it once it exited */
    RUN_UNTIL(T.loop, tu_gone(pid), 10.);
    APIV(tfork_free(t));
    rb_loop();
    for (int i = 0; i < 3; i++)
        rb_call_done(&c[i]);
    rb_end();
}
END_TEST

/* ================================================================ free
 * inside callbacks */

/* Freed inside the first reply's callback (or on_event): the calls
 * already queued are still answered, then on_destroy once.  _i bit 0:
 * async; bit 1: free inside on_event. */
START_TEST(test_free_in_callback)
{
    int async = _i & 1, in_event = _i >> 1;
    struct rb_ctx x = { 0 };
    struct rb_call c[3] = { { 0 } };
    struct rb_exit e = { 0 };

    rb_begin(0, in_event ? "free_in_event" : "free_in_callback");
    rb_start("mod_rpc_do", async, NULL, &x, &e);
    if (in_event) {
        x.free_in_event = 1;
        rb_calls(&x, &c[0], 0, "events", "e1", NULL);
    } else {
        c[0].free_rpc = 1;
        rb_calls(&x, &c[0], 0, "echo", "a", NULL);
    }
    rb_calls(&x, &c[1], 1, "delay", "100", "b", NULL);
    rb_calls(&x, &c[2], 2, "echo", "c", NULL);
    rb_loop();
    ck_assert_int_eq(x.destroys, 1);
    ck_assert_int_eq(x.errors, 0);
    rb_ok1(&c[0], in_event ? "done" : "a");
    rb_ok1(&c[1], "b");
    rb_ok1(&c[2], "c");
    for (int i = 0; i < 3; i++)
        ck_assert_int_lt(c[i].seq, x.destroy_seq);
    rb_exited0(&e);
    for (int i = 0; i < 3; i++)
        rb_call_done(&c[i]);
    rb_end();
}
END_TEST

/* A lost child: freed inside on_error, or later from outside; at once,
 * with no on_destroy.  _i bit 0: async; bit 1: free inside on_error. */
START_TEST(test_free_lost)
{
    int async = _i & 1, inside = _i >> 1;
    struct rb_ctx x = { 0 };
    struct rb_call c[2] = { { 0 } };
    struct rb_exit e = { 0 };
    tfork_rpc *r;

    rb_begin(0, inside ? "free_in_on_error" : "free_lost");
    r = rb_start("mod_rpc_do", async, NULL, &x, &e);
    x.free_in_error = inside;
    rb_calls(&x, &c[0], 0, "die", "exit3", NULL);
    rb_calls(&x, &c[1], 1, "pid", NULL);
    if (inside) {
        rb_loop();
    } else {
        RUN_UNTIL(T.loop, x.errors && e.calls, RB_WAIT);
        APIV(tfork_rpc_free(r));
        rb_loop();
    }
    rb_failed(&c[0], -EPIPE, "rpc child", NULL);
    rb_failed(&c[1], -EPIPE, "rpc child", NULL);
    ck_assert_int_eq(x.errors, 1);
    ck_assert_int_eq(x.destroys, 0);
    ck_assert_int_eq(e.calls, 1);
    ck_assert(WIFEXITED(e.status) && WEXITSTATUS(e.status) == 3);
    rb_end();
}
END_TEST

/* Freed inside a reply's callback, then the child dies with calls still
 * queued: they fail with -EPIPE, on_error fires, on_destroy does not.
 * _i bit 0: async. */
START_TEST(test_free_then_lost)
{
    struct rb_ctx x = { 0 };
    struct rb_call c[3] = { { 0 } };
    struct rb_exit e = { 0 };

    rb_begin(0, "free_then_lost");
    rb_start("mod_rpc_do", _i & 1, NULL, &x, &e);
    c[0].free_rpc = 1;
    rb_calls(&x, &c[0], 0, "echo", "a", NULL);
    rb_calls(&x, &c[1], 1, "die", "exit3", NULL);
    rb_calls(&x, &c[2], 2, "pid", NULL);
    rb_loop();
    rb_ok1(&c[0], "a");
    rb_failed(&c[1], -EPIPE, "rpc child", NULL);
    rb_failed(&c[2], -EPIPE, "rpc child", NULL);
    ck_assert_int_eq(x.errors, 1);
    ck_assert_int_eq(x.err, -EPIPE);
    ck_assert_int_eq(x.destroys, 0);
    ck_assert_int_lt(c[2].seq, x.err_seq);
    ck_assert_int_eq(c[1].iter, x.err_iter);
    ck_assert_int_eq(e.calls, 1);
    ck_assert(WIFEXITED(e.status) && WEXITSTATUS(e.status) == 3);
    rb_call_done(&c[0]);
    rb_end();
}
END_TEST

/* Freed inside the first failing callback while a lost child's calls are
 * being failed: every call still gets its one callback, on_error fires
 * once, nothing is left.  _i bit 0: async. */
START_TEST(test_free_in_loss)
{
    struct rb_ctx x = { 0 };
    struct rb_call c[4] = { { 0 } };
    struct rb_exit e = { 0 };

    rb_begin(0, "free_in_loss");
    rb_start("mod_rpc_do", _i & 1, NULL, &x, &e);
    c[0].free_rpc = 1;
    rb_calls(&x, &c[0], 0, "die", "segv", NULL);
    for (int i = 1; i < 4; i++)
        rb_calls(&x, &c[i], i, "pid", NULL);
    rb_loop();
    for (int i = 0; i < 4; i++) {
        rb_failed(&c[i], -EPIPE, "rpc child", NULL);
        ck_assert_int_eq(c[i].iter, c[0].iter);
    }
    ck_assert_int_eq(x.errors, 1);
    ck_assert_int_eq(x.destroys, 0);
    ck_assert_int_eq(e.calls, 1);
    ck_assert(WIFSIGNALED(e.status) && WTERMSIG(e.status) == SIGSEGV);
    rb_end();
}
END_TEST

/* An idle child (no call pending, not freed) that dies: on_error once,
 * no call callback; later calls are refused.
 * _i bit 0: async; bit 1: the default loop. */
START_TEST(test_idle_death)
{
    struct rb_ctx x = { 0 };
    struct rb_call c = { 0 }, late = { 0 };
    struct rb_exit e = { 0 };
    tfork_rpc *r;
    pid_t pid;

    rb_begin(_i >> 1, "idle_death");
    r = rb_start("mod_rpc_do", _i & 1, NULL, &x, &e);
    rb_calls(&x, &c, 0, "pid", NULL);
    RUN_UNTIL(T.loop, c.calls, RB_WAIT);
    rb_ok(&c);
    pid = tfork_rpc_pid(r);
    ck_assert_int_gt(pid, 0);
    ck_assert_int_eq(kill(pid, SIGKILL), 0);
    RUN_UNTIL(T.loop, x.errors && e.calls, RB_WAIT);
    ck_assert_int_eq(x.errors, 1);
    ck_assert_int_eq(x.err, -EPIPE);
    ck_assert_msg(strstr(x.err_msg, "rpc child"), "%s: on_error message "
                  "'%s'", T.what, x.err_msg);
    ck_assert_int_eq(e.pid, pid);
    ck_assert(WIFSIGNALED(e.status) && WTERMSIG(e.status) == SIGKILL);
    ck_assert_int_eq(API(tfork_rpc_call(r, 0, NULL, rb_cb, &late)), -EPIPE);
    APIV(tfork_rpc_free(r));
    rb_loop();
    ck_assert_int_eq(late.calls, 0);
    ck_assert_int_eq(x.destroys, 0);
    ck_assert_int_eq(x.errors, 1);
    rb_call_done(&c);
    rb_end();
}
END_TEST

/* tfork_rpc_call inside a reply's callback is answered too (before the
 * graceful end); inside on_error it is refused with -EPIPE. */
START_TEST(test_call_in_callback)
{
    int async = _i & 1;
    struct rb_ctx x = { 0 }, y = { 0 };
    struct rb_call c[3] = { { 0 } }, d[2] = { { 0 } };
    struct rb_exit e = { 0 }, f = { 0 };

    rb_begin(0, "call_in_callback");
    rb_start("mod_rpc_do", async, NULL, &x, &e);
    c[0].chain = &c[1];
    rb_calls(&x, &c[0], 0, "echo", "first", NULL);
    rb_calls(&x, &c[2], 2, "echo", "second", NULL);
    RUN_UNTIL(T.loop, c[0].calls && c[1].calls && c[2].calls, RB_WAIT);
    rb_free_clean(&x);
    ck_assert_int_eq(c[0].chain_rc, 0);
    rb_ok1(&c[0], "first");
    rb_ok1(&c[1], "chained");
    rb_ok1(&c[2], "second");
    if (!async)
        ck_assert_str_eq(T.log, "cb0 ok first\ncb2 ok second\n"
                         "cb100 ok chained\ndestroy\n");
    rb_exited0(&e);
    /* and inside on_error */
    rb_start("mod_rpc_do", async, NULL, &y, &f);
    y.call_in_error = 1;
    y.err_call_rc = 1;
    rb_calls(&y, &d[0], 0, "die", "exit3", NULL);
    rb_calls(&y, &d[1], 1, "pid", NULL);
    RUN_UNTIL(T.loop, y.errors && f.calls, RB_WAIT);
    ck_assert_int_eq(y.err_call_rc, -EPIPE);
    rb_failed(&d[0], -EPIPE, "rpc child", NULL);
    rb_failed(&d[1], -EPIPE, "rpc child", NULL);
    APIV(tfork_rpc_free(y.r));
    rb_loop();
    for (int i = 0; i < 3; i++)
        rb_call_done(&c[i]);
    rb_end();
}
END_TEST

/* The template process itself made the RPC server (p is any unrun
 * process): it serves, and exits cleanly after the free.
 * _i bit 0: async; bit 1: the default loop. */
START_TEST(test_rpc_on_template)
{
    struct rb_ctx x = { 0 };
    struct rb_call c[2] = { { 0 } };
    struct rb_exit e = { 0 };
    pid_t tpid, pid = 0, ppid = 0;
    tfork *t;

    rb_begin(_i >> 1, "rpc_on_template");
    t = rb_tpl();
    tpid = tfork_pid(t);
    ck_assert_int_eq(API(tfork_on_exit(t, rb_exit_cb, &e)), 0);
    rb_new(t, "mod_rpc_do", _i & 1, NULL, &x);
    rb_calls(&x, &c[0], 0, "pid", NULL);
    rb_calls(&x, &c[1], 1, "echo", "on the template", NULL);
    rb_free_clean(&x);
    rb_ok(&c[0]);
    ck_assert_int_eq(sscanf(c[0].part[0], "%d %d", &pid, &ppid), 2);
    ck_assert_int_eq(pid, tpid);
    ck_assert_int_eq(ppid, getpid());
    ck_assert_int_eq(c[0].pid, tpid);
    rb_ok1(&c[1], "on the template");
    rb_exited0(&e);
    ck_assert_int_eq(e.pid, tpid);
    for (int i = 0; i < 2; i++)
        rb_call_done(&c[i]);
    rb_end();
}
END_TEST

/* ================================================================ copy */

/* A tfork_template copy of this program serves its own TFORK_EXPORTed
 * functions.
 * _i bit 0: async; bit 1: the default loop. */
START_TEST(test_template_copy)
{
    int async = _i & 1;
    struct rb_ctx x = { 0 };
    struct rb_call c[3] = { { 0 } };
    struct rb_exit e = { 0 };
    char self[32];
    struct iovec v[3];
    tfork *t, *p;

    rb_begin(_i >> 1, "template_copy");
    t = API(tfork_template(T.loop));
    ck_assert_msg(t != NULL, "tfork_template: %s", strerror(errno));
    T.tpl[T.ntpl++] = tfork_pid(t);
    p = rb_child(t, &e);
    rb_new(p, async ? "rpc_self_async" : "rpc_self_echo", async, NULL, &x);
    APIV(tfork_free(t));
    v[0] = (struct iovec){ (void *)"a\0b", 3 };
    v[1] = (struct iovec){ (void *)"", 0 };
    v[2] = (struct iovec){ (void *)"z", 1 };
    rb_callv(&x, &c[0], 0, 3, v);
    rb_callv(&x, &c[1], 1, 0, NULL);
    rb_callv(&x, &c[2], 2, 1, &v[2]);
    rb_free_clean(&x);
    for (int i = 0; i < 3; i++)
        rb_ok(&c[i]);
    snprintf(self, sizeof self, "self %d", (int)c[0].pid);
    ck_assert_int_eq(c[0].n, 4);
    rb_part_eq(&c[0], 0, self, strlen(self));
    rb_part_eq(&c[0], 1, "a\0b", 3);
    rb_part_eq(&c[0], 2, "", 0);
    rb_part_eq(&c[0], 3, "z", 1);
    rb_ok1(&c[1], self);
    ck_assert_int_eq(c[2].n, 2);
    rb_part_eq(&c[2], 1, "z", 1);
    rb_exited0(&e);
    ck_assert_int_eq(e.pid, c[0].pid);
    for (int i = 0; i < 3; i++)
        rb_call_done(&c[i]);
    rb_end();
}
END_TEST

/* ================================================================ suite */

static Suite *rpc_suite(void)
{
    Suite *s = suite_create("rpc");
    TCase *tc;

    tc = tcase_create("calls");
    tcase_set_timeout(tc, RB_TIMEOUT);
    tcase_add_loop_test(tc, test_basic, 0, 4);
    tcase_add_loop_test(tc, test_event_order, 0, 2);
    tcase_add_test(tc, test_async_out_of_order);
    tcase_add_loop_test(tc, test_fail_keeps_serving, 0, 2);
    tcase_add_loop_test(tc, test_template_copy, 0, 4);
    tcase_add_loop_test(tc, test_rpc_on_template, 0, 4);
    suite_add_tcase(s, tc);

    tc = tcase_create("ports");
    tcase_set_timeout(tc, RB_TIMEOUT);
    tcase_add_test(tc, test_port_01_sync);
    tcase_add_test(tc, test_port_02_async);
    suite_add_tcase(s, tc);

    tc = tcase_create("end");
    tcase_set_timeout(tc, RB_TIMEOUT);
    tcase_add_loop_test(tc, test_destroy_after_calls, 0, 2);
    tcase_add_loop_test(tc, test_destroy_idle, 0, 4);
    tcase_add_loop_test(tc, test_evrun, 0, 4);
    tcase_add_loop_test(tc, test_free_in_callback, 0, 4);
    tcase_add_loop_test(tc, test_free_lost, 0, 4);
    tcase_add_loop_test(tc, test_free_then_lost, 0, 2);
    tcase_add_loop_test(tc, test_free_in_loss, 0, 2);
    tcase_add_loop_test(tc, test_call_in_callback, 0, 2);
    suite_add_tcase(s, tc);

    tc = tcase_create("lost");
    tcase_set_timeout(tc, RB_TIMEOUT);
    tcase_add_loop_test(tc, test_child_death, 0, 8);
    tcase_add_loop_test(tc, test_bad_func_init, 0, 6);
    tcase_add_loop_test(tc, test_never_started, 0, 4);
    tcase_add_loop_test(tc, test_idle_death, 0, 4);
    suite_add_tcase(s, tc);

    tc = tcase_create("load");
    tcase_set_timeout(tc, RB_TIMEOUT);
    tcase_add_test(tc, test_big);
    tcase_add_loop_test(tc, test_many, 0, 2);
    suite_add_tcase(s, tc);

    tc = tcase_create("caps");
    tcase_set_timeout(tc, RB_TIMEOUT);
    tcase_add_test(tc, test_bad_input);
    tcase_add_loop_test(tc, test_child_caps, 0, 2);
    tcase_add_test(tc, test_new_bad);
    tcase_add_test(tc, test_child_api_outside);
    suite_add_tcase(s, tc);

    tc = tcase_create("child_side");
    tcase_set_timeout(tc, RB_TIMEOUT);
    tcase_add_loop_test(tc, test_reply_twice, 0, 2);
    tcase_add_loop_test(tc, test_stale_req, 0, 2);
    tcase_add_loop_test(tc, test_child_loop, 0, 2);
    tcase_add_loop_test(tc, test_init_args_event, 0, 2);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(rpc_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
