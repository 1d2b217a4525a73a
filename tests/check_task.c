/* check_task.c: the task server and its clients (tfork/task.h, after
 * Perl's AnyEvent::Task): binary-safe calls, interface and dispatch
 * modes, worker errors against setup errors, refork rules, the checkout
 * queue, log merging, abort, max_checkouts, max_workers FIFO, setup once
 * per worker, a surge, connect and call timeouts, a client before its
 * server, hung and dying workers, the unix socket's file and peer rules,
 * tcp, a soak, tfork_task_fork_server, process titles, the tfork-task
 * program, and bad input.
 *
 * Unless a test says otherwise, the server runs in the test process and
 * its workers are forked from a copy of this program (no `require`: a
 * tfork_template), so they run the TFORK_EXPORTed functions below.  The
 * test process is a child subreaper: a worker or server that outlives its
 * parent lands here and is seen.  Every test ends in tt_end(): the client
 * and server are freed, every process of the tree must go, the loop must
 * drain and no descriptor may be left; every call a test made must have
 * had exactly one callback, never inside an API call. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <ev.h>

#include "tfork.h"
#include "tfork/rpc.h"          /* TFORK_RPC_MAX, TFORK_RPC_PARTS_MAX */
#include "tfork/task.h"
#include "testutil.h"
#include "under_valgrind.h"

#define TT_GUARD 100.           /* seconds before a hung loop fails */
#define TT_TIMEOUT 150          /* Check's own limit per test */
#define TT_SETTLE 20.           /* seconds for processes to go away */
#define TT_WAIT 30.             /* seconds for one expected callback */
#define TT_KEEP 16              /* reply parts a result keeps */
#define TT_MAXRES 64            /* results one test may register */
#define TT_MAXTPL 4
#define MiB (1024u * 1024u)

/* ---------------------------------------------------------------- what
 * the workers run (copies of this program; found through TFORK_EXPORT) */

static int tt_counter;          /* setup sets it to 100, "inc" bumps it */
static int tt_done;             /* checkout_done calls in this worker */

static int tt_reply_fmt(tfork_task_req *req, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int tt_reply_fmt(tfork_task_req *req, const char *fmt, ...)
{
    char line[512];
    struct iovec v;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    v.iov_base = line;
    v.iov_len = strlen(line);
    return tfork_task_reply(req, 1, &v);
}

/* Appends b to the file at path (the worker's own proof that it ran). */
static int tt_append(const char *path, const void *b, size_t len)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    ssize_t w;

    if (fd < 0)
        return -1;
    w = write(fd, b, len);
    close(fd);
    return w == (ssize_t)len ? 0 : -1;
}

/* The worker-side API with bad input, and after the answer: the codes
 * before the answer are the reply, those after go to the file args[0]
 * (the next call on the checkout shows they were written). */
static int tt_api(tfork_task_req *req, int n, const struct iovec *a)
{
    static struct iovec many[TFORK_RPC_PARTS_MAX + 1];  /* empty parts */
    /* through a pointer: a NULL format on purpose, unseen by -Wformat */
    int (*failp)(tfork_task_req *, const char *, ...) = tfork_task_fail;
    char after[128];
    int r[9];

    if (n != 1)
        return tfork_task_fail(req, "api: one path please");
    r[0] = tfork_task_reply(NULL, 0, NULL);
    r[1] = tfork_task_fail(NULL, "x");
    r[2] = tfork_task_log(NULL, TFORK_TASK_INFO, "x");
    r[3] = tfork_task_reply(req, -1, NULL);
    r[4] = failp(req, NULL);
    r[5] = tfork_task_reply(req, (int)TFORK_RPC_PARTS_MAX + 1, many);
    r[6] = tfork_task_reply((tfork_task_req *)(uintptr_t)0x7777, 0, NULL);
    if (tt_reply_fmt(req, "%d %d %d %d %d %d %d", r[0], r[1], r[2], r[3],
                     r[4], r[5], r[6]) != 0)
        return 1;
    r[6] = tfork_task_reply(req, 0, NULL);
    r[7] = tfork_task_fail(req, "late");
    r[8] = tfork_task_log(req, TFORK_TASK_INFO, "late");
    snprintf(after, sizeof after, "%d %d %d", r[6], r[7], r[8]);
    tt_append(a[0].iov_base, after, strlen(after));
    return 0;
}

/* The interface of most servers here: one function, every method. */
static int tt_iface(tfork_task_req *req, const char *method, int n,
                    const struct iovec *a)
{
    const char *a0 = n > 0 ? a[0].iov_base : "";

    for (int i = 0; i < n; i++)     /* each part has its NUL */
        if (!a[i].iov_base || ((const char *)a[i].iov_base)[a[i].iov_len])
            return tfork_task_fail(req, "part %d without its NUL", i);
    if (!strcmp(method, "echo"))
        return tfork_task_reply(req, n, a);
    if (!strcmp(method, "pid"))
        return tt_reply_fmt(req, "%d", (int)getpid());
    if (!strcmp(method, "method"))
        return tt_reply_fmt(req, "iface %s %d", method, n);
    if (!strcmp(method, "fail"))
        return tfork_task_fail(req, "%s", n ? a0 : "failed");
    if (!strcmp(method, "sleep")) {
        usleep((useconds_t)(atof(a0) * 1e6));
        return tt_reply_fmt(req, "%d", (int)getpid());
    }
    if (!strcmp(method, "append")) {
        if (n != 2 || tt_append(a0, a[1].iov_base, a[1].iov_len) < 0)
            return tfork_task_fail(req, "append failed");
        return tt_reply_fmt(req, "ok");
    }
    if (!strcmp(method, "inc"))
        return tt_reply_fmt(req, "%d", ++tt_counter);
    if (!strcmp(method, "done"))
        return tt_reply_fmt(req, "%d", tt_done);
    if (!strcmp(method, "exit"))
        _exit(3);               /* dies in the middle of the request */
    if (!strcmp(method, "log") || !strcmp(method, "logfail")) {
        for (int i = 0; i < n; i++)
            if (tfork_task_log(req, TFORK_TASK_INFO + i, "%s",
                               (const char *)a[i].iov_base) != 0)
                return tfork_task_fail(req, "tfork_task_log failed");
        if (!strcmp(method, "logfail"))
            return tfork_task_fail(req, "bad thing after %d lines", n);
        return tt_reply_fmt(req, "logged %d", n);
    }
    if (!strcmp(method, "hash"))
        return tt_reply_fmt(req, "%zu %016llx", a[0].iov_len,
                            (unsigned long long)tu_fnv(TU_FNV0, a0,
                                                       a[0].iov_len));
    if (!strcmp(method, "nargs"))
        return tt_reply_fmt(req, "%d", n);
    if (!strcmp(method, "noreply"))
        return 5;               /* returns without an answer */
    if (!strcmp(method, "api"))
        return tt_api(req, n, a);
    return tfork_task_fail(req, "tt_iface: no method %s", method);
}
TFORK_EXPORT(tt_iface);

/* Dispatch mode: method M is tt_d_M. */
static int tt_d_echo(tfork_task_req *req, const char *method, int n,
                     const struct iovec *a)
{
    (void)method;
    return tfork_task_reply(req, n, a);
}
TFORK_EXPORT(tt_d_echo);

static int tt_d_whoami(tfork_task_req *req, const char *method, int n,
                       const struct iovec *a)
{
    (void)a;
    return tt_reply_fmt(req, "tt_d_whoami %s %d", method, n);
}
TFORK_EXPORT(tt_d_whoami);

static int tt_setup_100(tfork_task_req *req)
{
    (void)req;
    tt_counter = 100;
    return 0;
}
TFORK_EXPORT(tt_setup_100);

static int tt_setup_fail(tfork_task_req *req)
{
    return tfork_task_fail(req, "no database at %s", "db:1");
}
TFORK_EXPORT(tt_setup_fail);

static int tt_setup_rc(tfork_task_req *req)
{
    (void)req;
    return 7;
}
TFORK_EXPORT(tt_setup_rc);

static void tt_done_fn(void)
{
    tt_done++;
}
TFORK_EXPORT(tt_done_fn);

/* ---------------------------------------------------------------- state */

/* One call's result. */
struct tt_res {
    const char *tag;            /* for the trace (NULL: not traced) */
    int registered;             /* in T.res: tt_end checks it */
    int called;                 /* callbacks (must end as 1) */
    int inside;                 /* ... that ran inside an API call */
    int shape_bad;              /* a part without NUL, err with parts,
                                   success with a message */
    int err;
    int n;
    int seq;                    /* T.seq at the callback */
    pid_t wpid;                 /* tfork_task_worker_pid then */
    double when;                /* tu_now() then */
    tfork_task_checkout *co;    /* the checkout it came on */
    char msg[512];
    size_t len[TT_KEEP];
    char *part[TT_KEEP];        /* copies, NUL-terminated */
    /* runs inside the callback */
    void (*then)(struct tt_res *r);
    void *ctx;
};

static struct {
    struct ev_loop *loop;
    const char *what;           /* the test, for messages */
    int fds0;                   /* open fds when the test began */
    ev_timer guard;
    char dir[64];               /* private directory (mkdtemp) */
    char path[128];             /* dir/s: the socket */
    char addr[160];             /* unix:path */
    tfork_task_server *srv;
    tfork_task_client *cli;
    pid_t tpl[TT_MAXTPL];       /* server templates: the library reaps */
    int ntpl;
    int seq;                    /* callbacks of any kind so far */
    char trace[1 << 13];        /* logs and callbacks, in order */
    size_t tlen;
    char slog[1 << 13];         /* server log lines */
    int nslog;
    struct tt_res *res[TT_MAXRES];
    int nres;
} T;

static void tt_tracef(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void tt_tracef(const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(T.trace + T.tlen, sizeof T.trace - T.tlen, fmt, ap);
    va_end(ap);
    ck_assert_msg(n >= 0 && (size_t)n < sizeof T.trace - T.tlen,
                  "%s: trace full", T.what);
    T.tlen += (size_t)n;
}

static void tt_guard_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    ck_abort_msg("%s: the loop still runs after %.0f s; trace:\n%s", T.what,
                 TT_GUARD, T.trace);
}

static void tt_slog(const char *line, void *data)
{
    size_t len = strlen(T.slog);

    ck_assert_ptr_eq(data, &T);
    T.nslog++;
    snprintf(T.slog + len, sizeof T.slog - len, "%s\n", line);
}

static void tt_begin(int def, const char *what)
{
    memset(&T, 0, sizeof T);
    T.what = what;
    T.fds0 = tu_subreaper();
    T.loop = tu_loop_for(def);
    tu_guard_start(T.loop, &T.guard, tt_guard_cb, TT_GUARD);
    snprintf(T.dir, sizeof T.dir, "/tmp/tfork-task-check.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(T.dir));
    snprintf(T.path, sizeof T.path, "%s/s", T.dir);
    snprintf(T.addr, sizeof T.addr, "unix:%s", T.path);
}

/* Server options most tests use: T.addr, name "tt", tt_iface, logs to
 * T.slog. */
static void tt_opts(tfork_task_server_opts *o)
{
    memset(o, 0, sizeof *o);
    o->listen = T.addr;
    o->name = "tt";
    o->interface = "tt_iface";
    o->on_log = tt_slog;
    o->data = &T;
}

static int tt_has(const pid_t *set, int n, pid_t pid)
{
    for (int i = 0; i < n; i++)
        if (set[i] == pid)
            return 1;
    return 0;
}

/* A server on T.loop; its template (our new child) is remembered. */
static tfork_task_server *tt_server(const tfork_task_server_opts *o)
{
    pid_t before[32], after[32];
    int nb = tu_scan_children(getpid(), before, NULL, 32), na;
    tfork_task_server *s = API(tfork_task_server_new(T.loop, o));

    ck_assert_msg(s != NULL, "%s: tfork_task_server_new: %s", T.what,
                  strerror(errno));
    na = tu_scan_children(getpid(), after, NULL, 32);
    for (int i = 0; i < na; i++)
        if (!tt_has(before, nb, after[i])) {
            ck_assert_int_lt(T.ntpl, TT_MAXTPL);
            T.tpl[T.ntpl++] = after[i];
        }
    if (!T.srv)
        T.srv = s;
    return s;
}

static void tt_server_default(void)
{
    tfork_task_server_opts o;

    tt_opts(&o);
    tt_server(&o);
}

/* A client of T.addr (or of c->connect when set) on T.loop. */
static tfork_task_client *tt_client(const tfork_task_client_opts *given)
{
    tfork_task_client_opts o;
    tfork_task_client *c;

    if (given)
        o = *given;
    else
        memset(&o, 0, sizeof o);
    if (!o.connect)
        o.connect = T.addr;
    c = API(tfork_task_client_new(T.loop, &o));
    ck_assert_msg(c != NULL, "%s: tfork_task_client_new: %s", T.what,
                  strerror(errno));
    if (!T.cli)
        T.cli = c;
    return c;
}

static tfork_task_checkout *tt_checkout(tfork_task_client *c, double timeout)
{
    tfork_task_checkout *co = API(tfork_task_checkout_new(c, timeout));

    ck_assert_msg(co != NULL, "%s: tfork_task_checkout_new: %s", T.what,
                  strerror(errno));
    return co;
}

static void tt_cb(tfork_task_checkout *co, int err, const char *msg, int n,
                  const struct iovec *res, void *data)
{
    struct tt_res *r = data;

    r->called++;
    r->inside += tu_in_api > 0;
    r->err = err;
    r->n = n;
    r->seq = ++T.seq;
    r->co = co;
    r->wpid = tfork_task_worker_pid(co);
    r->when = tu_now();
    if (!msg || (err == 0 && *msg) || (err < 0 && (n != 0 || !*msg)) ||
        err > 0)
        r->shape_bad++;
    snprintf(r->msg, sizeof r->msg, "%s", msg ? msg : "(null)");
    for (int i = 0; i < n; i++) {
        const char *b = res[i].iov_base;

        if (!b || b[res[i].iov_len])
            r->shape_bad++;
        if (i >= TT_KEEP || !b)
            continue;
        r->len[i] = res[i].iov_len;
        r->part[i] = malloc(res[i].iov_len + 1);
        ck_assert_ptr_nonnull(r->part[i]);
        memcpy(r->part[i], b, res[i].iov_len + 1);
    }
    if (r->tag)
        tt_tracef("%s %d%s%s\n", r->tag, err, err ? " " : "",
                  err ? msg : "");
    if (r->then)
        r->then(r);
}

/* Queues method(n args) on co; r gets the result.  The call must be
 * accepted and must not answer inside tfork_task_call. */
static void tt_callv(tfork_task_checkout *co, struct tt_res *r,
                     const char *method, int n, const struct iovec *args)
{
    int rc;

    ck_assert_msg(!r->registered, "%s: a result used twice", T.what);
    ck_assert_int_lt(T.nres, TT_MAXRES);
    T.res[T.nres++] = r;
    r->registered = 1;
    rc = API(tfork_task_call(co, method, n, args, tt_cb, r));
    ck_assert_msg(rc == 0, "%s: tfork_task_call(%s): %s", T.what, method,
                  tfork_strerror(rc));
    ck_assert_int_eq(r->called, 0);
}

/* The same with string args (NULL-terminated list). */
static void tt_call(tfork_task_checkout *co, struct tt_res *r,
                    const char *method, ...)
{
    struct iovec v[TT_KEEP];
    va_list ap;
    const char *s;
    int n = 0;

    va_start(ap, method);
    while ((s = va_arg(ap, const char *))) {
        ck_assert_int_lt(n, TT_KEEP);
        v[n].iov_base = (void *)s;
        v[n++].iov_len = strlen(s);
    }
    va_end(ap);
    tt_callv(co, r, method, n, v);
}

static void tt_wait(struct tt_res *r)
{
    RUN_UNTIL(T.loop, r->called, TT_WAIT);
}

/* r succeeded with exactly one part, equal to want. */
static void tt_ok1(const struct tt_res *r, const char *want)
{
    ck_assert_msg(r->called == 1 && r->err == 0, "%s: call failed: %d %s",
                  T.what, r->err, r->msg);
    ck_assert_int_eq(r->n, 1);
    ck_assert_str_eq(r->part[0], want);
}

/* r failed with err and exactly msg. */
static void tt_failed(const struct tt_res *r, int err, const char *msg)
{
    ck_assert_int_eq(r->called, 1);
    ck_assert_msg(r->err == err, "%s: err %d (%s), want %d", T.what, r->err,
                  r->msg, err);
    ck_assert_int_eq(r->n, 0);
    if (msg)
        ck_assert_str_eq(r->msg, msg);
}

static pid_t tt_pid_of(const struct tt_res *r)
{
    ck_assert_msg(r->called == 1 && r->err == 0 && r->n == 1,
                  "%s: no pid: %d %s", T.what, r->err, r->msg);
    return (pid_t)atoi(r->part[0]);
}

static void tt_release(tfork_task_checkout *co)
{
    APIV(tfork_task_release(co));
}

/* Frees the client and the server; every process goes, the loop drains,
 * no fd is left, every call had one callback. */
static void tt_end(void)
{
    struct stat st;

    if (T.cli)
        APIV(tfork_task_client_free(T.cli));
    if (T.srv) {
        int unix_sock = strncmp(tfork_task_server_address(T.srv), "unix:",
                                5) == 0;

        APIV(tfork_task_server_free(T.srv));
        if (unix_sock)
            ck_assert_msg(lstat(T.path, &st) < 0 && errno == ENOENT,
                          "%s: the socket file outlives its server", T.what);
    }
    tu_settle(T.loop, TT_SETTLE, T.tpl, T.ntpl, NULL, T.what);
    tu_loop_drains(T.loop);
    for (int i = 0; i < T.nres; i++) {
        struct tt_res *r = T.res[i];

        ck_assert_msg(r->called == 1, "%s: call %d had %d callbacks", T.what,
                      i, r->called);
        ck_assert_msg(!r->inside, "%s: call %d answered inside an API call",
                      T.what, i);
        ck_assert_msg(!r->shape_bad, "%s: call %d: malformed result (%d %s)",
                      T.what, i, r->err, r->msg);
        for (int k = 0; k < TT_KEEP; k++)
            free(r->part[k]);
    }
    tu_close_loop(T.loop, &T.guard, T.fds0, T.what);
    T.loop = NULL;
    ck_assert_msg(rmdir(T.dir) == 0, "%s: rmdir %s: %s", T.what, T.dir,
                  strerror(errno));
}

/* Reads a whole (small) file into buf; "" if it does not exist. */
static const char *tt_slurp(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n = 0;

    buf[0] = 0;
    if (fd < 0)
        return buf;
    n = read(fd, buf, cap - 1);
    close(fd);
    buf[n > 0 ? n : 0] = 0;
    return buf;
}

/* /proc/pid/cmdline, its first string. */
static const char *tt_cmdline(pid_t pid, char *buf, size_t cap)
{
    char path[64];

    snprintf(path, sizeof path, "/proc/%d/cmdline", (int)pid);
    return tt_slurp(path, buf, cap);
}

/* The process title of pid starts with want.  Under valgrind cmdline
 * is valgrind's own: there the kernel's comm (the title's first 15
 * bytes, set with PR_SET_NAME) is compared instead, and a note says so.
 * buf gets what was read. */
static int tt_title_is(pid_t pid, const char *want, char *buf, size_t cap)
{
    char path[64];
    size_t n = strlen(want);

    if (!uv_running(pid)) {
        tt_cmdline(pid, buf, cap);
        return strncmp(buf, want, n) == 0;
    }
    snprintf(path, sizeof path, "/proc/%d/comm", (int)pid);
    tt_slurp(path, buf, cap);
    buf[strcspn(buf, "\n")] = '\0';
    fprintf(stderr, "check_task: under valgrind: title of %d checked "
            "through comm\n", (int)pid);
    return strncmp(buf, want, n < 15 ? n : 15) == 0;
}

/* waitpid(pid) within secs: its status, or fails the test. */
static int tt_reap(pid_t pid, double secs, const char *what)
{
    double dl = tu_now() + secs;
    int st;

    for (;;) {
        pid_t w = waitpid(pid, &st, WNOHANG);

        ck_assert_msg(w >= 0, "%s: waitpid %d: %s", what, (int)pid,
                      strerror(errno));
        if (w == pid)
            return st;
        ck_assert_msg(tu_now() < dl, "%s: pid %d did not exit within %.0f s",
                      what, (int)pid, secs);
        usleep(5000);
    }
}

/* ---------------------------------------------------------------- calls */

/* Args and results are octet strings: NULs, all 256 byte values, empty
 * parts, no parts, a 1 MiB part; each comes back byte for byte with a
 * NUL after it.  _i: a private loop (0) or libev's default loop (1). */
START_TEST(test_binary_safe)
{
    static const char nuls[] = "a\0b\0\0c";
    unsigned char all[256];
    unsigned char *big = malloc(MiB);
    struct tt_res r1 = { 0 }, r2 = { 0 }, r3 = { 0 }, r4 = { 0 }, r5 = { 0 };
    struct iovec v[4];
    tfork_task_checkout *co;
    char want[64];

    ck_assert_ptr_nonnull(big);
    tt_begin(_i, "binary_safe");
    tt_server_default();
    tt_client(NULL);
    co = tt_checkout(T.cli, 0);
    for (int i = 0; i < 256; i++)
        all[i] = (unsigned char)i;
    tu_pattern(big, MiB, 0x5eed);
    v[0].iov_base = (void *)nuls;
    v[0].iov_len = sizeof nuls - 1;
    v[1].iov_base = all;
    v[1].iov_len = sizeof all;
    v[2].iov_base = NULL;       /* an empty part may have no buffer */
    v[2].iov_len = 0;
    v[3].iov_base = (void *)"";
    v[3].iov_len = 0;
    tt_callv(co, &r1, "echo", 4, v);
    tt_callv(co, &r2, "echo", 0, NULL);
    v[0].iov_base = big;
    v[0].iov_len = MiB;
    tt_callv(co, &r3, "echo", 1, v);
    tt_callv(co, &r4, "hash", 1, v);
    memset(big, 0xee, MiB);     /* args were copied at the call */
    tt_call(co, &r5, "nargs", "", "", "", NULL);
    tt_wait(&r5);
    ck_assert_int_eq(r1.err, 0);
    ck_assert_int_eq(r1.n, 4);
    ck_assert_uint_eq(r1.len[0], sizeof nuls - 1);
    ck_assert_mem_eq(r1.part[0], nuls, sizeof nuls - 1);
    ck_assert_uint_eq(r1.len[1], 256);
    ck_assert_mem_eq(r1.part[1], all, 256);
    ck_assert_uint_eq(r1.len[2], 0);
    ck_assert_uint_eq(r1.len[3], 0);
    ck_assert_int_eq(r2.err, 0);
    ck_assert_int_eq(r2.n, 0);
    ck_assert_int_eq(r3.err, 0);
    ck_assert_int_eq(r3.n, 1);
    ck_assert_uint_eq(r3.len[0], MiB);
    tu_pattern(big, MiB, 0x5eed);
    ck_assert_mem_eq(r3.part[0], big, MiB);
    snprintf(want, sizeof want, "%u %016llx", MiB,
             (unsigned long long)tu_fnv(TU_FNV0, big, MiB));
    tt_ok1(&r4, want);
    tt_ok1(&r5, "3");
    ck_assert_int_lt(r1.seq, r2.seq);       /* answered in order */
    ck_assert_int_lt(r2.seq, r3.seq);
    ck_assert_int_lt(r3.seq, r4.seq);
    ck_assert_int_lt(r4.seq, r5.seq);
    tt_release(co);
    free(big);
    tt_end();
}
END_TEST

/* interface mode: one function sees every method by name; its failure
 * and its returning without an answer fail the call (-ECANCELED). */
START_TEST(test_interface_mode)
{
    struct tt_res r1 = { 0 }, r2 = { 0 }, r3 = { 0 }, r4 = { 0 }, r5 = { 0 };
    struct tt_res r6 = { 0 };
    tfork_task_checkout *co;

    tt_begin(0, "interface_mode");
    tt_server_default();
    tt_client(NULL);
    co = tt_checkout(T.cli, 0);
    tt_call(co, &r1, "method", "x", "y", NULL);
    tt_call(co, &r2, "pid", NULL);
    tt_call(co, &r3, "no_such", NULL);
    tt_call(co, &r4, "echo", "after", NULL);
    tt_wait(&r4);
    tt_ok1(&r1, "iface method 2");
    tt_pid_of(&r2);
    tt_failed(&r3, -ECANCELED, "tt_iface: no method no_such");
    tt_failed(&r4, -ECANCELED, "tt_iface: no method no_such");
    tt_release(co);
    co = tt_checkout(T.cli, 0);
    tt_call(co, &r5, "echo", "new checkout", NULL);
    tt_call(co, &r6, "noreply", NULL);
    tt_wait(&r6);
    tt_ok1(&r5, "new checkout");
    tt_failed(&r6, -ECANCELED, "method noreply: tt_iface returned 5 "
              "without replying");
    tt_release(co);
    tt_end();
}
END_TEST

/* dispatch mode: method M runs PREFIX + M; an unknown method fails that
 * call (-ECANCELED, naming method, worker and function) and the calls
 * queued behind it, and the worker goes on serving. */
START_TEST(test_dispatch_mode)
{
    struct tt_res r1 = { 0 }, r2 = { 0 }, r3 = { 0 }, r4 = { 0 }, r5 = { 0 };
    struct tt_res r6 = { 0 };
    tfork_task_server_opts o;
    tfork_task_checkout *co;
    char want[256];

    tt_begin(0, "dispatch_mode");
    tt_opts(&o);
    o.interface = NULL;
    o.dispatch = "tt_d_";
    tt_server(&o);
    tt_client(NULL);
    co = tt_checkout(T.cli, 0);
    tt_call(co, &r1, "whoami", "a", NULL);
    tt_call(co, &r2, "echo", "hi", "there", NULL);
    tt_wait(&r2);
    tt_ok1(&r1, "tt_d_whoami whoami 1");
    ck_assert_int_eq(r2.n, 2);
    ck_assert_str_eq(r2.part[0], "hi");
    ck_assert_str_eq(r2.part[1], "there");
    /* tt_iface exists in the worker, but no tt_d_iface */
    tt_call(co, &r3, "iface", NULL);
    tt_call(co, &r4, "echo", "queued behind the failure", NULL);
    tt_wait(&r4);
    snprintf(want, sizeof want, "no method 'iface' in worker %d (no "
             "function tt_d_iface)", (int)r1.wpid);
    tt_failed(&r3, -ECANCELED, want);
    tt_failed(&r4, -ECANCELED, want);
    tt_call(co, &r5, "echo", "on", NULL);
    tt_call(co, &r6, "whoami", NULL);
    tt_wait(&r6);
    tt_ok1(&r5, "on");
    tt_ok1(&r6, "tt_d_whoami whoami 0");
    ck_assert_int_eq(r6.wpid, r1.wpid);
    tt_release(co);
    tt_end();
}
END_TEST

/* A method's failure is -ECANCELED with its message; a setup failure is
 * -EREMOTEIO "setup failed: ..." (by tfork_task_fail, _i 0, or a nonzero
 * return, _i 1); the two are never confused. */
START_TEST(test_error_vs_setup_error)
{
    struct tt_res r1 = { 0 }, r2 = { 0 }, r3 = { 0 }, r4 = { 0 };
    tfork_task_server_opts o;
    tfork_task_client_opts co_o;
    tfork_task_client *c2;
    tfork_task_checkout *co;
    char addr2[160];
    const char *setup_msg = _i ? "setup failed: tt_setup_rc returned 7" :
        "setup failed: no database at db:1";

    tt_begin(0, "error_vs_setup_error");
    /* a server whose setup works */
    tt_opts(&o);
    o.setup = "tt_setup_100";
    tt_server(&o);
    tt_client(NULL);
    co = tt_checkout(T.cli, 0);
    tt_call(co, &r1, "fail", "the method's own words", NULL);
    tt_call(co, &r2, "inc", NULL);
    tt_wait(&r2);
    tt_failed(&r1, -ECANCELED, "the method's own words");
    tt_failed(&r2, -ECANCELED, "the method's own words");
    tt_release(co);
    /* one whose setup fails, at another address */
    snprintf(addr2, sizeof addr2, "unix:%s/s2", T.dir);
    tt_opts(&o);
    o.listen = addr2;
    o.setup = _i ? "tt_setup_rc" : "tt_setup_fail";
    tfork_task_server *s2 = tt_server(&o);
    memset(&co_o, 0, sizeof co_o);
    co_o.connect = addr2;
    c2 = tt_client(&co_o);
    co = tt_checkout(c2, 0);
    tt_call(co, &r3, "fail", "never runs", NULL);
    tt_call(co, &r4, "pid", NULL);
    tt_wait(&r4);
    tt_failed(&r3, -EREMOTEIO, setup_msg);
    tt_failed(&r4, -EREMOTEIO, setup_msg);
    tt_release(co);
    APIV(tfork_task_client_free(c2));
    APIV(tfork_task_server_free(s2));
    tt_end();
}
END_TEST

/* dont_refork_after_error (_i 1) keeps the worker whose call failed: the
 * next checkout gets the same pid; without it (_i 0) the tainted worker
 * is replaced once its checkout is released, and exits.  Within the
 * checkout a failure is not sticky: a later call runs on the same
 * worker. */
START_TEST(test_refork_after_error)
{
    struct tt_res r1 = { 0 }, r2 = { 0 }, r3 = { 0 }, r4 = { 0 };
    tfork_task_client_opts o;
    tfork_task_checkout *co;
    pid_t p1, p2;

    tt_begin(0, "refork_after_error");
    tt_server_default();
    memset(&o, 0, sizeof o);
    o.max_workers = 1;
    o.dont_refork_after_error = _i;
    tt_client(&o);
    co = tt_checkout(T.cli, 0);
    tt_call(co, &r1, "pid", NULL);
    tt_call(co, &r2, "fail", "oops", NULL);
    tt_wait(&r2);
    p1 = tt_pid_of(&r1);
    tt_failed(&r2, -ECANCELED, "oops");
    tt_call(co, &r3, "pid", NULL);
    tt_wait(&r3);
    ck_assert_int_eq(tt_pid_of(&r3), p1);
    tt_release(co);
    co = tt_checkout(T.cli, 0);
    tt_call(co, &r4, "pid", NULL);
    tt_wait(&r4);
    p2 = tt_pid_of(&r4);
    if (_i) {
        ck_assert_int_eq(p2, p1);
    } else {
        ck_assert_int_ne(p2, p1);
        RUN_UNTIL(T.loop, tu_gone(p1), TT_SETTLE);
    }
    ck_assert_int_eq(tfork_task_client_workers(T.cli), 1);
    tt_release(co);
    tt_end();
}
END_TEST

/* ok, ok, error, then two more queued: those two get the error's code
 * and message and never run in the worker (each call appends to a file;
 * a later call on the same worker shows nothing ran in between). */
START_TEST(test_error_clears_queue)
{
    struct tt_res r[6];
    tfork_task_client_opts o;
    tfork_task_checkout *co;
    char file[160], buf[64];

    memset(r, 0, sizeof r);
    tt_begin(0, "error_clears_queue");
    snprintf(file, sizeof file, "%s/appended", T.dir);
    tt_server_default();
    memset(&o, 0, sizeof o);
    o.dont_refork_after_error = 1;  /* the same worker goes on */
    tt_client(&o);
    co = tt_checkout(T.cli, 0);
    tt_call(co, &r[0], "append", file, "1", NULL);
    tt_call(co, &r[1], "append", file, "2", NULL);
    tt_call(co, &r[2], "fail", "third one fails", NULL);
    tt_call(co, &r[3], "append", file, "3", NULL);
    tt_call(co, &r[4], "append", file, "4", NULL);
    tt_wait(&r[4]);
    tt_ok1(&r[0], "ok");
    tt_ok1(&r[1], "ok");
    for (int i = 2; i < 5; i++)
        tt_failed(&r[i], -ECANCELED, "third one fails");
    for (int i = 1; i < 5; i++)
        ck_assert_int_lt(r[i - 1].seq, r[i].seq);
    tt_call(co, &r[5], "append", file, "5", NULL);
    tt_wait(&r[5]);
    tt_ok1(&r[5], "ok");
    ck_assert_str_eq(tt_slurp(file, buf, sizeof buf), "125");
    ck_assert_int_eq(unlink(file), 0);
    tt_release(co);
    tt_end();
}
END_TEST

/* ---------------------------------------------------------------- logs */

struct tt_log {
    int lines;
    int inside;
    int bad_time;               /* a time far from ours */
    pid_t worker;               /* pid of the worker lines */
};

static void tt_log_cb(tfork_task_checkout *co, int level, double time,
                      pid_t pid, const char *line, void *data)
{
    struct tt_log *l = data;
    struct timespec ts;

    (void)co;
    clock_gettime(CLOCK_REALTIME, &ts);
    l->lines++;
    if (pid != 0)               /* the client's own come at once */
        l->inside += tu_in_api > 0;
    if (time < (double)ts.tv_sec - 60 || time > (double)ts.tv_sec + 60)
        l->bad_time++;
    if (pid > 0)
        l->worker = pid;
    tt_tracef("log %s %d %s\n", pid > 0 ? "worker" : pid == 0 ? "client" :
              "bad-pid", level, line);
}

/* One stream per checkout: the client's own line (pid 0, at once), the
 * worker's lines (its pid) before their call's callback, also when the
 * call fails; levels and times as given. */
START_TEST(test_log_merge)
{
    struct tt_res r1 = { .tag = "cb1" }, r2 = { .tag = "cb2" };
    struct tt_res r3 = { .tag = "cb3" };
    struct tt_log l = { 0 };
    tfork_task_checkout *co;
    char want[1024];

    tt_begin(0, "log_merge");
    tt_server_default();
    tt_client(NULL);
    co = tt_checkout(T.cli, 0);
    APIV(tfork_task_on_log(co, tt_log_cb, &l));
    APIV(tfork_task_checkout_log(co, TFORK_TASK_WARN, "client %s %d",
                                 "line", 1));
    tt_call(co, &r1, "log", "w1", "w2", NULL);
    tt_call(co, &r2, "logfail", "w3", NULL);
    tt_call(co, &r3, "echo", "dropped", NULL);
    tt_wait(&r3);
    APIV(tfork_task_checkout_log(co, TFORK_TASK_DEBUG, "client end"));
    snprintf(want, sizeof want,
             "log client %d client line 1\n"
             "log worker %d w1\n"
             "log worker %d w2\n"
             "cb1 0\n"
             "log worker %d w3\n"
             "cb2 %d bad thing after 1 lines\n"
             "cb3 %d bad thing after 1 lines\n"
             "log client %d client end\n",
             TFORK_TASK_WARN, TFORK_TASK_INFO, TFORK_TASK_INFO + 1,
             TFORK_TASK_INFO, -ECANCELED, -ECANCELED, TFORK_TASK_DEBUG);
    ck_assert_str_eq(T.trace, want);
    ck_assert_int_eq(l.lines, 5);
    ck_assert_int_eq(l.inside, 0);
    ck_assert_int_eq(l.bad_time, 0);
    ck_assert_int_gt(l.worker, 0);
    ck_assert_int_eq(l.worker, r1.wpid);
    tt_ok1(&r1, "logged 2");
    tt_release(co);
    tt_end();
}
END_TEST

/* ---------------------------------------------------------------- abort */

/* tfork_task_abort fails the pending calls with -ECONNABORTED and its
 * message, from the loop, and every later call the same way; the worker
 * is dropped and a new checkout works.  _i 0: before the checkout has a
 * worker; 1: while its call runs. */
START_TEST(test_abort_sticky)
{
    struct tt_res r1 = { 0 }, r2 = { 0 }, r3 = { 0 }, r4 = { 0 };
    tfork_task_checkout *co;
    pid_t busy = 0;

    tt_begin(0, "abort_sticky");
    tt_server_default();
    tt_client(NULL);
    co = tt_checkout(T.cli, 0);
    tt_call(co, &r1, "sleep", "0.5", NULL);
    tt_call(co, &r2, "pid", NULL);
    if (_i) {
        RUN_UNTIL(T.loop, tfork_task_worker_pid(co) > 0, TT_WAIT);
        busy = tfork_task_worker_pid(co);
    }
    APIV(tfork_task_abort(co, "enough"));
    ck_assert_int_eq(r1.called, 0);         /* from the loop */
    tt_wait(&r2);
    tt_failed(&r1, -ECONNABORTED, "enough");
    tt_failed(&r2, -ECONNABORTED, "enough");
    ck_assert_int_lt(r1.seq, r2.seq);
    ck_assert_int_eq(tfork_task_worker_pid(co), 0);
    tt_call(co, &r3, "pid", NULL);          /* sticky */
    tt_wait(&r3);
    tt_failed(&r3, -ECONNABORTED, "enough");
    tt_release(co);
    co = tt_checkout(T.cli, 0);
    tt_call(co, &r4, "pid", NULL);
    tt_wait(&r4);
    if (_i)
        ck_assert_int_ne(tt_pid_of(&r4), busy);
    else
        tt_pid_of(&r4);
    tt_release(co);
    tt_end();
}
END_TEST

/* ---------------------------------------------------------------- worker
 * reuse */

/* max_checkouts 2: pids p, p, then a new one.  The three checkouts are
 * made and released at once: released checkouts still run what they
 * queued, and with one worker they run in order. */
START_TEST(test_max_checkouts)
{
    struct tt_res r[3];
    tfork_task_client_opts o;
    tfork_task_checkout *co[3];

    memset(r, 0, sizeof r);
    tt_begin(0, "max_checkouts");
    tt_server_default();
    memset(&o, 0, sizeof o);
    o.max_workers = 1;
    o.max_checkouts = 2;
    tt_client(&o);
    for (int i = 0; i < 3; i++) {
        co[i] = tt_checkout(T.cli, 0);
        tt_call(co[i], &r[i], "pid", NULL);
        tt_release(co[i]);
    }
    tt_wait(&r[2]);
    ck_assert_int_eq(tt_pid_of(&r[0]), tt_pid_of(&r[1]));
    ck_assert_int_ne(tt_pid_of(&r[2]), tt_pid_of(&r[0]));
    ck_assert_int_lt(r[0].seq, r[1].seq);
    ck_assert_int_lt(r[1].seq, r[2].seq);
    RUN_UNTIL(T.loop, tu_gone(tt_pid_of(&r[0])), TT_SETTLE);
    tt_end();
}
END_TEST

struct tt_nest {
    tfork_task_checkout *co1, *co2;
    struct tt_res *b1, *c2;     /* co1's second call, co2's call */
    int workers_max;            /* client connections seen */
};

static void tt_nest_co1_second(struct tt_res *r)
{
    struct tt_nest *x = r->ctx;

    /* co2 has not run yet: it waits for the one worker */
    ck_assert_int_eq(x->c2->called, 0);
    tt_release(x->co1);
}

static void tt_nest_co1_first(struct tt_res *r)
{
    struct tt_nest *x = r->ctx;

    x->co2 = tt_checkout(T.cli, 0);
    tt_call(x->co2, x->c2, "inc", NULL);
    tt_call(x->co1, x->b1, "inc", NULL);
}

static void tt_nest_watch(struct ev_loop *loop, ev_prepare *w, int revents)
{
    struct tt_nest *x = w->data;
    int n = tfork_task_client_workers(T.cli);

    (void)loop;
    (void)revents;
    if (n > x->workers_max)
        x->workers_max = n;
}

/* max_workers 1 is strict FIFO across nested checkouts: a second
 * checkout made and called inside the first's callback runs only after
 * the first is released, on the same worker (its counter shows the
 * order on the worker's side). */
START_TEST(test_max_workers_fifo)
{
    struct tt_res a1 = { .tag = "co1-a" }, b1 = { .tag = "co1-b" };
    struct tt_res c2 = { .tag = "co2" };
    struct tt_nest x = { .b1 = &b1, .c2 = &c2 };
    tfork_task_client_opts o;
    tfork_task_server_opts so;
    ev_prepare prep;

    tt_begin(0, "max_workers_fifo");
    tt_opts(&so);
    so.setup = "tt_setup_100";
    tt_server(&so);
    memset(&o, 0, sizeof o);
    o.max_workers = 1;
    tt_client(&o);
    ev_prepare_init(&prep, tt_nest_watch);
    prep.data = &x;
    ev_prepare_start(T.loop, &prep);
    ev_unref(T.loop);
    x.co1 = tt_checkout(T.cli, 0);
    a1.then = tt_nest_co1_first;
    a1.ctx = &x;
    b1.then = tt_nest_co1_second;
    b1.ctx = &x;
    tt_call(x.co1, &a1, "inc", NULL);
    tt_wait(&c2);
    ev_ref(T.loop);
    ev_prepare_stop(T.loop, &prep);
    ck_assert_str_eq(T.trace, "co1-a 0\nco1-b 0\nco2 0\n");
    tt_ok1(&a1, "101");
    tt_ok1(&b1, "102");
    tt_ok1(&c2, "103");
    ck_assert_int_eq(c2.wpid, a1.wpid);
    ck_assert_int_eq(x.workers_max, 1);
    tt_release(x.co2);
    tt_end();
}
END_TEST

/* A failing setup is reported again on a second try: the worker exits
 * after its setup failed and the next checkout's worker runs setup
 * anew. */
START_TEST(test_setup_error_twice)
{
    struct tt_res r1 = { 0 }, r2 = { 0 };
    tfork_task_server_opts so;
    tfork_task_client_opts o;
    tfork_task_checkout *co;

    tt_begin(0, "setup_error_twice");
    tt_opts(&so);
    so.setup = "tt_setup_fail";
    tt_server(&so);
    memset(&o, 0, sizeof o);
    o.max_workers = 1;
    tt_client(&o);
    co = tt_checkout(T.cli, 0);
    tt_call(co, &r1, "pid", NULL);
    tt_wait(&r1);
    tt_failed(&r1, -EREMOTEIO, "setup failed: no database at db:1");
    tt_release(co);
    RUN_UNTIL(T.loop, tfork_task_server_workers(T.srv) == 0, TT_SETTLE);
    co = tt_checkout(T.cli, 0);
    tt_call(co, &r2, "pid", NULL);
    tt_wait(&r2);
    tt_failed(&r2, -EREMOTEIO, "setup failed: no database at db:1");
    tt_release(co);
    tt_end();
}
END_TEST

/* setup runs once per worker (it sets 100, each "inc" adds one: 101,
 * then 102 on the same worker in the next checkout), and checkout_done
 * runs in it when a checkout is released. */
START_TEST(test_setup_once)
{
    struct tt_res r1 = { 0 }, r2 = { 0 }, r3 = { 0 }, r0 = { 0 };
    tfork_task_server_opts so;
    tfork_task_client_opts o;
    tfork_task_checkout *co;

    tt_begin(0, "setup_once");
    tt_opts(&so);
    so.setup = "tt_setup_100";
    so.checkout_done = "tt_done_fn";
    tt_server(&so);
    memset(&o, 0, sizeof o);
    o.max_workers = 1;
    tt_client(&o);
    co = tt_checkout(T.cli, 0);
    tt_call(co, &r0, "done", NULL);
    tt_call(co, &r1, "inc", NULL);
    tt_wait(&r1);
    tt_ok1(&r0, "0");
    tt_ok1(&r1, "101");
    tt_release(co);
    co = tt_checkout(T.cli, 0);
    tt_call(co, &r2, "inc", NULL);
    tt_call(co, &r3, "done", NULL);
    tt_wait(&r3);
    tt_ok1(&r2, "102");
    tt_ok1(&r3, "1");
    ck_assert_int_eq(r2.wpid, r1.wpid);
    tt_release(co);
    tt_end();
}
END_TEST

/* ---------------------------------------------------------------- load */

#define SURGE_N 100
#define SURGE_WORKERS 5

static struct {
    int done, bad, inside, over;
    pid_t pids[SURGE_N];
} S;

static void tt_surge_cb(tfork_task_checkout *co, int err, const char *msg,
                        int n, const struct iovec *res, void *data)
{
    int i = (int)(intptr_t)data;

    (void)msg;
    S.done++;
    S.inside += tu_in_api > 0;
    if (err || n != 1 || S.pids[i])
        S.bad++;
    else
        S.pids[i] = (pid_t)atoi(res[0].iov_base);
    if (tfork_task_client_workers(T.cli) > SURGE_WORKERS ||
        tfork_task_server_workers(T.srv) > SURGE_WORKERS)
        S.over++;
    tfork_task_release(co);
}

/* 100 checkouts at once over at most 5 workers: all complete, each
 * once, none inside tfork_task_call, never more than 5 workers. */
START_TEST(test_surge)
{
    tfork_task_client_opts o;
    pid_t seen[SURGE_N];
    int nseen = 0;

    memset(&S, 0, sizeof S);
    tt_begin(0, "surge");
    tt_server_default();
    memset(&o, 0, sizeof o);
    o.max_workers = SURGE_WORKERS;
    tt_client(&o);
    for (int i = 0; i < SURGE_N; i++) {
        tfork_task_checkout *co = tt_checkout(T.cli, 0);
        struct iovec v = { (void *)"0.002", 5 };

        ck_assert_int_eq(API(tfork_task_call(co, "sleep", 1, &v, tt_surge_cb,
                                             (void *)(intptr_t)i)), 0);
    }
    ck_assert_int_eq(S.done, 0);
    RUN_UNTIL(T.loop, S.done == SURGE_N, 60);
    ck_assert_int_eq(S.bad, 0);
    ck_assert_int_eq(S.inside, 0);
    ck_assert_int_eq(S.over, 0);
    for (int i = 0; i < SURGE_N; i++)
        if (!tt_has(seen, nseen, S.pids[i]))
            seen[nseen++] = S.pids[i];
    ck_assert_int_ge(nseen, 1);
    ck_assert_int_le(nseen, SURGE_WORKERS);
    tt_end();
    ck_assert_int_eq(S.done, SURGE_N);
}
END_TEST

#define SOAK_N 1000
#define SOAK_WORKERS 4
#define SOAK_INFLIGHT 8

static struct {
    int started, done, bad, inside, target;
    int failing;                /* every 20th call fails */
} K;

static void soak_next(void);

static void soak_cb(tfork_task_checkout *co, int err, const char *msg, int n,
                    const struct iovec *res, void *data)
{
    int fail = (int)(intptr_t)data;

    K.done++;
    K.inside += tu_in_api > 0;
    if (fail) {
        if (err != -ECANCELED || strcmp(msg, "soak"))
            K.bad++;
    } else if (err || n != 1 || atoi(res[0].iov_base) <= 1) {
        K.bad++;
    }
    tfork_task_release(co);
    soak_next();
}

/* Keeps SOAK_INFLIGHT checkouts going until K.target were started;
 * every 20th fails (a tainted worker: replaced). */
static void soak_next(void)
{
    while (K.started < K.target && K.started - K.done < SOAK_INFLIGHT) {
        tfork_task_checkout *co = tfork_task_checkout_new(T.cli, 0);
        int i = K.started++, rc;
        int fail = K.failing && i % 20 == 19;
        struct iovec v = { (void *)"soak", 4 };

        ck_assert_ptr_nonnull(co);
        tu_in_api++;
        rc = tfork_task_call(co, fail ? "fail" : "pid", fail, &v, soak_cb,
                             (void *)(intptr_t)fail);
        tu_in_api--;
        ck_assert_int_eq(rc, 0);
    }
}

/* All workers up, nothing else going on. */
static int soak_quiet(pid_t tpl)
{
    pid_t kids[32];

    return tfork_task_client_workers(T.cli) == SOAK_WORKERS &&
        tfork_task_server_workers(T.srv) == SOAK_WORKERS &&
        tu_scan_children(tpl, kids, NULL, 32) == SOAK_WORKERS;
}

/* Runs the loop until the counts are back (fds, tfds >= 0) or fails,
 * saying which is not. */
static void soak_settle(pid_t tpl, int fds, int tfds)
{
    double dl = tu_now() + TT_SETTLE;
    ev_timer tick;
    pid_t kids[32];

    ev_timer_init(&tick, tu_tick_cb, 0.05, 0.05);
    ev_timer_start(T.loop, &tick);
    while (!(soak_quiet(tpl) && (fds < 0 || tu_fd_count() == fds) &&
             (tfds < 0 || tu_fd_count_of(tpl) == tfds))) {
        ck_assert_msg(tu_now() < dl, "%s: not flat after %.0f s: client "
                      "workers %d, server workers %d, template children %d "
                      "(want %d each); fds %d (was %d); template fds %d "
                      "(was %d)", T.what, TT_SETTLE,
                      tfork_task_client_workers(T.cli),
                      tfork_task_server_workers(T.srv),
                      tu_scan_children(tpl, kids, NULL, 32), SOAK_WORKERS,
                      tu_fd_count(), fds, tu_fd_count_of(tpl), tfds);
        ev_run(T.loop, EVRUN_ONCE);
    }
    ev_timer_stop(T.loop, &tick);
}

/* 1,000 checkouts (50 of them failing, so 50 workers replaced): the
 * process's fds, the template's fds and its children are what they
 * were before. */
START_TEST(test_soak_flat)
{
    tfork_task_client_opts o;
    int fds, tfds;
    double t0;
    pid_t tpl;

    memset(&K, 0, sizeof K);
    tt_begin(0, "soak_flat");
    tt_server_default();
    ck_assert_int_eq(T.ntpl, 1);
    tpl = T.tpl[0];
    memset(&o, 0, sizeof o);
    o.min_workers = SOAK_WORKERS;
    o.max_workers = SOAK_WORKERS;
    tt_client(&o);
    /* warm up without failures: a replaced worker's connection closes
     * some time after its exit is reported, and must not be counted */
    K.target = 40;
    soak_next();
    RUN_UNTIL(T.loop, K.done == K.target, 60);
    soak_settle(tpl, -1, -1);
    fds = tu_fd_count();
    tfds = tu_fd_count_of(tpl);
    t0 = tu_now();
    K.target += SOAK_N;
    K.failing = 1;
    soak_next();
    RUN_UNTIL(T.loop, K.done == K.target, 120);
    fprintf(stderr, "soak_flat: %d checkouts in %.2f s\n", SOAK_N,
            tu_now() - t0);
    ck_assert_int_eq(K.bad, 0);
    ck_assert_int_eq(K.inside, 0);
    ck_assert_int_eq(K.done, K.target);
    soak_settle(tpl, fds, tfds);
    tt_end();
}
END_TEST

/* ---------------------------------------------------------------- time */

/* No server: a call waits for one until its checkout's timeout, then
 * fails with -ETIMEDOUT (not earlier). */
START_TEST(test_connect_timeout)
{
    struct tt_res r1 = { 0 }, r2 = { 0 };
    tfork_task_checkout *co;
    double t0;

    tt_begin(0, "connect_timeout");
    tt_client(NULL);
    co = tt_checkout(T.cli, 0.3);
    t0 = tu_now();
    tt_call(co, &r1, "pid", NULL);
    tt_wait(&r1);
    tt_failed(&r1, -ETIMEDOUT, "checkout timed out after 0.3 s");
    ck_assert_msg(r1.when - t0 >= 0.29, "timed out after %.3f s",
                  r1.when - t0);
    ck_assert_int_eq(tfork_task_client_workers(T.cli), 0);
    tt_call(co, &r2, "pid", NULL);          /* sticky */
    tt_wait(&r2);
    tt_failed(&r2, -ETIMEDOUT, "checkout timed out after 0.3 s");
    tt_release(co);
    tt_end();
}
END_TEST

/* A client started before its server waits for it: the queued calls
 * all run, in order, once the server is up. */
START_TEST(test_client_before_server)
{
    struct tt_res r[3];
    tfork_task_checkout *co;
    ev_timer pause;

    memset(r, 0, sizeof r);
    tt_begin(0, "client_before_server");
    tt_client(NULL);
    co = tt_checkout(T.cli, 0);
    tt_call(co, &r[0], "echo", "a", NULL);
    tt_call(co, &r[1], "echo", "b", NULL);
    tt_call(co, &r[2], "pid", NULL);
    ev_timer_init(&pause, tu_tick_cb, 0.3, 0.);
    ev_timer_start(T.loop, &pause);
    while (ev_is_active(&pause))
        ev_run(T.loop, EVRUN_ONCE);
    ck_assert_int_eq(r[0].called, 0);
    ck_assert_int_eq(tfork_task_client_workers(T.cli), 0);
    tt_server_default();
    tt_wait(&r[2]);
    tt_ok1(&r[0], "a");
    tt_ok1(&r[1], "b");
    ck_assert_int_eq(tt_pid_of(&r[2]), r[2].wpid);
    ck_assert_int_lt(r[0].seq, r[1].seq);
    tt_release(co);
    tt_end();
}
END_TEST

/* hung_worker_timeout 1 s, a 3 s job, a 2 s checkout timeout: the worker
 * is killed and the call gets the lost-connection error (not the
 * timeout), after at least the 1 s. */
START_TEST(test_hung_worker)
{
    struct tt_res r1 = { 0 }, r2 = { 0 }, r3 = { 0 };
    tfork_task_server_opts so;
    tfork_task_checkout *co;
    char want[128];
    double t0;
    pid_t p;

    tt_begin(0, "hung_worker");
    tt_opts(&so);
    so.hung_worker_timeout = 1;
    tt_server(&so);
    tt_client(NULL);
    co = tt_checkout(T.cli, 2);
    tt_call(co, &r1, "pid", NULL);
    tt_wait(&r1);
    p = tt_pid_of(&r1);
    t0 = tu_now();
    tt_call(co, &r2, "sleep", "3", NULL);
    tt_wait(&r2);
    snprintf(want, sizeof want, "lost connection to worker %d", (int)p);
    tt_failed(&r2, -EPIPE, want);
    ck_assert_msg(r2.when - t0 >= 0.9, "lost after %.3f s", r2.when - t0);
    RUN_UNTIL(T.loop, tu_gone(p), TT_SETTLE);
    tt_release(co);
    co = tt_checkout(T.cli, 0);
    tt_call(co, &r3, "sleep", "0.1", NULL); /* short calls still work */
    tt_wait(&r3);
    ck_assert_int_ne(tt_pid_of(&r3), p);
    tt_release(co);
    tt_end();
}
END_TEST

/* A 0.4 s job on a 0.2 s checkout: -ETIMEDOUT, sticky; the worker is
 * dropped.  The timer restarts at each answer: six 0.2 s jobs on a 1 s
 * checkout all succeed. */
START_TEST(test_call_timeout)
{
    struct tt_res r1 = { 0 }, r2 = { 0 }, r3 = { 0 }, r[6];
    tfork_task_checkout *co;
    double t0;

    memset(r, 0, sizeof r);
    tt_begin(0, "call_timeout");
    tt_server_default();
    tt_client(NULL);
    co = tt_checkout(T.cli, 0.2);
    t0 = tu_now();
    tt_call(co, &r1, "sleep", "0.4", NULL);
    tt_call(co, &r2, "pid", NULL);
    tt_wait(&r2);
    tt_failed(&r1, -ETIMEDOUT, "checkout timed out after 0.2 s");
    tt_failed(&r2, -ETIMEDOUT, "checkout timed out after 0.2 s");
    ck_assert_msg(r1.when - t0 >= 0.19, "timed out after %.3f s",
                  r1.when - t0);
    tt_call(co, &r3, "pid", NULL);
    tt_wait(&r3);
    tt_failed(&r3, -ETIMEDOUT, "checkout timed out after 0.2 s");
    tt_release(co);
    co = tt_checkout(T.cli, 1);
    for (int i = 0; i < 6; i++)
        tt_call(co, &r[i], "sleep", "0.2", NULL);
    tt_wait(&r[5]);
    for (int i = 0; i < 6; i++)
        tt_pid_of(&r[i]);
    tt_release(co);
    tt_end();
}
END_TEST

/* The checkout's timer runs from the call: a program that was busy
 * outside its loop for longer than the timeout (libev's cached time is
 * as old as the loop's last iteration) and then calls is not timed out
 * at once; a 0.5 s timeout still allows the round trip. */
START_TEST(test_timeout_from_call)
{
    struct tt_res r1 = { 0 }, r2 = { 0 };
    tfork_task_checkout *co;

    tt_begin(0, "timeout_from_call");
    tt_server_default();
    tt_client(NULL);
    co = tt_checkout(T.cli, 0.5);
    tt_call(co, &r1, "pid", NULL);          /* it holds a worker now */
    tt_wait(&r1);
    ev_run(T.loop, EVRUN_NOWAIT);
    usleep(800 * 1000);                     /* busy, not in the loop */
    tt_call(co, &r2, "pid", NULL);
    tt_wait(&r2);
    ck_assert_msg(r2.err == 0, "%s: %d %s", T.what, r2.err, r2.msg);
    ck_assert_int_eq(tt_pid_of(&r2), tt_pid_of(&r1));
    tt_release(co);
    tt_end();
}
END_TEST

/* A worker that _exits in the middle of a call: -EPIPE naming it, and
 * every later call on the checkout the same; a new checkout works. */
START_TEST(test_worker_exit_sticky)
{
    struct tt_res r1 = { 0 }, r2 = { 0 }, r3 = { 0 }, r4 = { 0 };
    struct tt_res r5 = { 0 };
    tfork_task_checkout *co;
    char want[128];
    pid_t p;

    tt_begin(0, "worker_exit_sticky");
    tt_server_default();
    tt_client(NULL);
    co = tt_checkout(T.cli, 0);
    tt_call(co, &r1, "pid", NULL);
    tt_call(co, &r2, "exit", NULL);
    tt_call(co, &r3, "pid", NULL);
    tt_wait(&r3);
    p = tt_pid_of(&r1);
    snprintf(want, sizeof want, "lost connection to worker %d", (int)p);
    tt_failed(&r2, -EPIPE, want);
    tt_failed(&r3, -EPIPE, want);
    tt_call(co, &r4, "pid", NULL);
    tt_wait(&r4);
    tt_failed(&r4, -EPIPE, want);
    tt_release(co);
    co = tt_checkout(T.cli, 0);
    tt_call(co, &r5, "pid", NULL);
    tt_wait(&r5);
    ck_assert_int_ne(tt_pid_of(&r5), p);
    tt_release(co);
    tt_end();
}
END_TEST

/* ---------------------------------------------------------------- the
 * socket */

/* A second user's connection is refused: a child of ours that became
 * uid 65534 connects (the path is opened up for it first, so the peer
 * check is what stops it); the server logs the refusal, forks no worker
 * for it, and the child's call fails. */
START_TEST(test_other_uid_refused)
{
    struct tt_res r1 = { 0 };
    tfork_task_checkout *co;
    int pp[2], st;
    char got[600];
    size_t len = 0;
    pid_t kid;

    if (geteuid() != 0) {
        printf("test_other_uid_refused: skipped, not root\n");
        return;
    }
    tt_begin(0, "other_uid_refused");
    tt_server_default();
    ck_assert_int_eq(chmod(T.dir, 0711), 0);
    ck_assert_int_eq(chmod(T.path, 0666), 0);
    ck_assert_int_eq(pipe2(pp, O_CLOEXEC), 0);
    kid = fork();
    ck_assert_int_ge(kid, 0);
    if (kid == 0) {
        /* the other user: its own loop and client; tells err and msg */
        struct ev_loop *loop;
        tfork_task_client_opts o;
        tfork_task_client *c;
        tfork_task_checkout *kco;
        struct tt_res kr = { 0 };
        double dl = tu_now() + 20;

        close(pp[0]);
        if (setresgid(65534, 65534, 65534) < 0 ||
            setresuid(65534, 65534, 65534) < 0)
            _exit(10);
        loop = ev_loop_new(EVFLAG_AUTO);
        memset(&o, 0, sizeof o);
        o.connect = T.addr;
        o.max_workers = 1;
        c = loop ? tfork_task_client_new(loop, &o) : NULL;
        kco = c ? tfork_task_checkout_new(c, 10) : NULL;
        if (!kco || tfork_task_call(kco, "pid", 0, NULL, tt_cb, &kr) < 0)
            _exit(11);
        while (!kr.called && tu_now() < dl)
            ev_run(loop, EVRUN_ONCE);
        dprintf(pp[1], "%d %d %s", kr.called, kr.err, kr.msg);
        _exit(0);
    }
    close(pp[1]);
    for (;;) {
        struct pollfd pfd = { pp[0], POLLIN, 0 };
        ssize_t n;

        ev_run(T.loop, EVRUN_NOWAIT);
        if (poll(&pfd, 1, 10) <= 0)
            continue;
        n = read(pp[0], got + len, sizeof got - 1 - len);
        ck_assert_int_ge(n, 0);
        if (n == 0)
            break;
        len += (size_t)n;
    }
    got[len] = 0;
    close(pp[0]);
    st = tt_reap(kid, TT_SETTLE, T.what);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child: 0x%x", st);
    ck_assert_msg(strncmp(got, "1 -32 lost connection to worker", 31) == 0,
                  "the other user's call: %s", got);
    ck_assert_msg(strstr(T.slog, "refused a connection from uid 65534"),
                  "server log: %s", T.slog);
    ck_assert_int_eq(T.nslog, 1);
    ck_assert_int_eq(tfork_task_server_workers(T.srv), 0);
    /* we, the right uid, are served */
    tt_client(NULL);
    co = tt_checkout(T.cli, 0);
    tt_call(co, &r1, "pid", NULL);
    tt_wait(&r1);
    tt_pid_of(&r1);
    tt_release(co);
    tt_end();
}
END_TEST

/* A stale socket file (nobody accepting) is replaced; a live server's is
 * not stolen (EADDRINUSE, and it goes on serving at the same inode); a
 * regular file at the path is left alone. */
START_TEST(test_socket_file_rules)
{
    struct tt_res r1 = { 0 };
    struct sockaddr_un un = { .sun_family = AF_UNIX };
    tfork_task_server_opts o;
    tfork_task_checkout *co;
    struct stat st1, st2;
    char file[160], buf[64];
    int fd, e;

    tt_begin(0, "socket_file_rules");
    ck_assert_uint_lt(strlen(T.path), sizeof un.sun_path);
    memcpy(un.sun_path, T.path, strlen(T.path) + 1);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&un, sizeof un), 0);
    close(fd);                  /* its file stays: stale */
    ck_assert_int_eq(lstat(T.path, &st1), 0);
    tt_server_default();
    ck_assert_int_eq(lstat(T.path, &st2), 0);
    ck_assert_msg(S_ISSOCK(st2.st_mode), "not a socket");
    /* a second server at the same path */
    tt_opts(&o);
    errno = 0;
    ck_assert_ptr_null(API(tfork_task_server_new(T.loop, &o)));
    ck_assert_int_eq(errno, EADDRINUSE);
    ck_assert_int_eq(lstat(T.path, &st1), 0);
    ck_assert_msg(st1.st_ino == st2.st_ino, "the live socket was replaced");
    tt_client(NULL);
    co = tt_checkout(T.cli, 0);
    tt_call(co, &r1, "pid", NULL);
    tt_wait(&r1);
    tt_pid_of(&r1);
    tt_release(co);
    /* a regular file */
    snprintf(file, sizeof file, "%s/file", T.dir);
    fd = open(file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, "keep me", 7), 7);
    close(fd);
    o.listen = file;
    errno = 0;
    ck_assert_ptr_null(API(tfork_task_server_new(T.loop, &o)));
    e = errno;
    ck_assert_msg(e == EEXIST || e == EADDRINUSE, "errno %d", e);
    ck_assert_str_eq(tt_slurp(file, buf, sizeof buf), "keep me");
    ck_assert_int_eq(unlink(file), 0);
    tt_end();
}
END_TEST

/* The socket is mode 0600 and a missing directory is made 0700, whatever
 * the umask. */
START_TEST(test_socket_modes)
{
    struct tt_res r1 = { 0 };
    tfork_task_server_opts o;
    tfork_task_client_opts co_o;
    tfork_task_checkout *co;
    char sub[160], addr[200];
    struct stat st;
    mode_t old = umask(0);

    tt_begin(0, "socket_modes");
    snprintf(sub, sizeof sub, "%s/sub", T.dir);
    snprintf(addr, sizeof addr, "%s/sock", sub);   /* a path, no prefix */
    tt_opts(&o);
    o.listen = addr;
    tt_server(&o);
    umask(old);
    ck_assert_int_eq(stat(sub, &st), 0);
    ck_assert_msg(S_ISDIR(st.st_mode) && (st.st_mode & 07777) == 0700,
                  "directory mode %o", (unsigned)st.st_mode);
    ck_assert_int_eq(lstat(addr, &st), 0);
    ck_assert_msg(S_ISSOCK(st.st_mode) && (st.st_mode & 07777) == 0600,
                  "socket mode %o", (unsigned)st.st_mode);
    ck_assert_int_eq(strncmp(tfork_task_server_address(T.srv), "unix:", 5),
                     0);
    ck_assert_str_eq(tfork_task_server_address(T.srv) + 5, addr);
    memset(&co_o, 0, sizeof co_o);
    co_o.connect = addr;
    tt_client(&co_o);
    co = tt_checkout(T.cli, 0);
    tt_call(co, &r1, "pid", NULL);
    tt_wait(&r1);
    tt_pid_of(&r1);
    tt_release(co);
    APIV(tfork_task_client_free(T.cli));
    T.cli = NULL;
    APIV(tfork_task_server_free(T.srv));
    T.srv = NULL;
    ck_assert_msg(lstat(addr, &st) < 0 && errno == ENOENT, "socket left");
    ck_assert_int_eq(rmdir(sub), 0);
    tt_end();
}
END_TEST

/* tcp:0 (and tcp:HOST:0) picks a port that tfork_task_server_address
 * tells; a client there is served. */
START_TEST(test_tcp)
{
    struct tt_res r1 = { 0 };
    tfork_task_server_opts o;
    tfork_task_client_opts co_o;
    tfork_task_checkout *co;
    const char *a;
    char *end;
    long port;

    tt_begin(0, "tcp");
    tt_opts(&o);
    o.listen = _i ? "tcp:localhost:0" : "tcp:0";
    tt_server(&o);
    a = tfork_task_server_address(T.srv);
    ck_assert_msg(strncmp(a, "tcp:127.0.0.1:", 14) == 0, "address %s", a);
    port = strtol(a + 14, &end, 10);
    ck_assert_msg(!*end && port > 0 && port < 65536, "address %s", a);
    memset(&co_o, 0, sizeof co_o);
    co_o.connect = a;
    tt_client(&co_o);
    co = tt_checkout(T.cli, 0);
    tt_call(co, &r1, "echo", "over tcp", NULL);
    tt_wait(&r1);
    tt_ok1(&r1, "over tcp");
    tt_release(co);
    tt_end();
}
END_TEST

/* ---------------------------------------------------------------- its
 * own process, titles, the program */

/* tfork_task_fork_server from a child program: the server is up when it
 * returns, serves, is titled, and is gone within 1 s of that child's
 * exit (then its socket file is gone too). */
START_TEST(test_fork_server)
{
    struct tt_res r1 = { 0 };
    tfork_task_client_opts co_o;
    tfork_task_checkout *co;
    int up[2], down[2], st;
    pid_t kid, srv = 0, w, ppid = 0, tpl_ppid = 0;
    char buf[256];
    double t0;
    struct stat sst;

    tt_begin(0, "fork_server");
    ck_assert_int_eq(pipe2(up, O_CLOEXEC), 0);
    ck_assert_int_eq(pipe2(down, O_CLOEXEC), 0);
    kid = fork();
    ck_assert_int_ge(kid, 0);
    if (kid == 0) {
        tfork_task_server_opts o;
        pid_t s;
        char c;

        close(up[0]);
        close(down[1]);
        memset(&o, 0, sizeof o);
        o.listen = T.addr;
        o.name = "ttfs";
        o.interface = "tt_iface";
        s = tfork_task_fork_server(&o);
        if (write(up[1], &s, sizeof s) != sizeof s)
            _exit(1);
        while (read(down[0], &c, 1) < 0 && errno == EINTR)
            ;
        _exit(0);               /* the server must follow */
    }
    close(up[1]);
    close(down[0]);
    ck_assert_int_eq(read(up[0], &srv, sizeof srv), (ssize_t)sizeof srv);
    close(up[0]);
    ck_assert_msg(srv > 0, "tfork_task_fork_server: %s",
                  tfork_strerror(srv));
    ck_assert_int_eq(lstat(T.path, &sst), 0);      /* listening already */
    ck_assert_msg(tt_title_is(srv, "tfork-task ttfs: server", buf,
                              sizeof buf), "server title %s", buf);
    memset(&co_o, 0, sizeof co_o);
    tt_client(&co_o);
    co = tt_checkout(T.cli, 0);
    tt_call(co, &r1, "pid", NULL);
    tt_wait(&r1);
    w = tt_pid_of(&r1);
    /* the worker is the server's: a child of its template */
    ck_assert_int_ne(tu_proc_state(w, &ppid, NULL), 0);
    ck_assert_int_ne(tu_proc_state(ppid, &tpl_ppid, NULL), 0);
    ck_assert_int_eq(tpl_ppid, srv);
    tt_release(co);
    close(down[1]);             /* the child exits */
    st = tt_reap(kid, TT_SETTLE, T.what);
    t0 = tu_now();
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child 0x%x", st);
    /* the server was the child's; as subreaper we inherit it */
    for (;;) {
        char s = tu_proc_state(srv, NULL, NULL);

        if (s == 0 || s == 'Z')
            break;
        ck_assert_msg(tu_now() - t0 < 1.0, "the server (state %c) still "
                      "runs 1 s after its client process exited", s);
        usleep(2000);
    }
    st = tt_reap(srv, TT_SETTLE, T.what);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "server 0x%x", st);
    ck_assert_msg(lstat(T.path, &sst) < 0 && errno == ENOENT,
                  "the server left its socket file");
    /* our client still holds the worker: freeing it lets the worker go;
     * it and the template, orphans now, land on us */
    APIV(tfork_task_client_free(T.cli));
    T.cli = NULL;
    tu_settle(T.loop, TT_SETTLE, NULL, 0, NULL, T.what);
    tt_end();
}
END_TEST

/* Workers are titled "tfork-task NAME: worker". */
START_TEST(test_process_titles)
{
    struct tt_res r1 = { 0 };
    tfork_task_server_opts o;
    tfork_task_checkout *co;
    char buf[256];

    tt_begin(0, "process_titles");
    tt_opts(&o);
    o.name = "tt-title";
    tt_server(&o);
    tt_client(NULL);
    co = tt_checkout(T.cli, 0);
    tt_call(co, &r1, "pid", NULL);
    tt_wait(&r1);
    ck_assert_msg(tt_title_is(tt_pid_of(&r1), "tfork-task tt-title: worker",
                              buf, sizeof buf), "worker title \"%s\"", buf);
    tt_release(co);
    tt_end();
}
END_TEST

/* Starts the tfork-task program of the build tree with argv (NULL-
 * terminated, argv[0] its path); its stdout is *out (unless NULL), its
 * stderr /dev/null when quiet. */
static pid_t tt_spawn_task(char *const argv[], int *out, int quiet)
{
    int pp[2] = { -1, -1 };
    pid_t pid;

    if (out)
        ck_assert_int_eq(pipe2(pp, O_CLOEXEC), 0);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);

        if ((out && dup2(pp[1], 1) < 0) || null < 0 ||
            (quiet && dup2(null, 2) < 0))
            _exit(126);
        execv(argv[0], argv);
        _exit(127);
    }
    if (out) {
        close(pp[1]);
        *out = pp[0];
    }
    return pid;
}

/* One line from fd (without its newline) within secs. */
static void tt_read_line(int fd, char *buf, size_t cap, double secs)
{
    double dl = tu_now() + secs;
    size_t len = 0;

    for (;;) {
        struct pollfd pfd = { fd, POLLIN, 0 };
        ssize_t n;

        ck_assert_msg(tu_now() < dl, "no line within %.0f s", secs);
        if (poll(&pfd, 1, 50) <= 0)
            continue;
        n = read(fd, buf + len, 1);
        ck_assert_msg(n == 1, "EOF or error before a line: %zd", n);
        if (buf[len] == '\n')
            break;
        ck_assert_uint_lt(++len, cap - 1);
    }
    buf[len] = 0;
}

/* The tfork-task program serves a module: eval with its argument, setup,
 * dispatch; prints its address; titles its workers; exits 0 on SIGTERM
 * and removes its socket.  Bad usage exits 1, an address it cannot serve
 * 2. */
START_TEST(test_program)
{
    struct tt_res r1 = { 0 }, r2 = { 0 }, r3 = { 0 };
    tfork_task_checkout *co;
    char prog[4096], mod[4096], line[256], want[256], buf[256];
    int out, st;
    pid_t pid, w, ppid = 0, tppid = 0;
    struct stat sst;

    tt_begin(0, "program");
    snprintf(prog, sizeof prog, "%s", tu_testdir("../tfork-task"));
    snprintf(mod, sizeof mod, "%s", tu_testdir("mod_task.so"));
    {
        char *argv[] = { prog, (char *)"--require", mod, (char *)"--eval",
                         (char *)"mod_task_init", (char *)"--eval-arg",
                         (char *)"howdy", (char *)"--dispatch",
                         (char *)"mod_task_", (char *)"--setup",
                         (char *)"mod_task_setup", (char *)"--name",
                         (char *)"modt", T.addr, NULL };

        pid = tt_spawn_task(argv, &out, 0);
    }
    tt_read_line(out, line, sizeof line, TT_WAIT);
    ck_assert_str_eq(line, T.addr);
    tt_client(NULL);
    co = tt_checkout(T.cli, 0);
    tt_call(co, &r1, "greet", "you", NULL);
    tt_call(co, &r2, "refuse", NULL);
    tt_wait(&r2);
    w = r1.wpid;
    snprintf(want, sizeof want, "howdy you from %d (setups 1)", (int)w);
    tt_ok1(&r1, want);
    tt_failed(&r2, -ECANCELED, "mod_task refuses");
    tt_call(co, &r3, "greet", NULL);
    tt_wait(&r3);
    snprintf(want, sizeof want, "howdy nobody from %d (setups 1)", (int)w);
    tt_ok1(&r3, want);
    ck_assert_msg(tt_title_is(w, "tfork-task modt: worker", buf,
                              sizeof buf), "worker title \"%s\"", buf);
    /* worker -> its template (tfork-serve) -> the program */
    ck_assert_int_ne(tu_proc_state(w, &ppid, NULL), 0);
    ck_assert_int_ne(tu_proc_state(ppid, &tppid, NULL), 0);
    ck_assert_int_eq(tppid, pid);
    tt_release(co);
    APIV(tfork_task_client_free(T.cli));
    T.cli = NULL;
    ck_assert_int_eq(kill(pid, SIGTERM), 0);
    st = tt_reap(pid, TT_SETTLE, T.what);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "exit 0x%x", st);
    ck_assert_msg(lstat(T.path, &sst) < 0 && errno == ENOENT,
                  "tfork-task left its socket file");
    tu_settle(T.loop, TT_SETTLE, NULL, 0, NULL, T.what);  /* its orphans */
    close(out);
    {
        char *argv[] = { prog, NULL };

        st = tt_reap(tt_spawn_task(argv, NULL, 1), TT_SETTLE, T.what);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 1, "usage 0x%x",
                      st);
    }
    {
        char *argv[] = { prog, (char *)"--require", mod, (char *)"--dispatch",
                         (char *)"mod_task_", (char *)"tcp:no.such:1", NULL };

        st = tt_reap(tt_spawn_task(argv, NULL, 1), TT_SETTLE, T.what);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 2, "bad address "
                      "0x%x", st);
    }
    tt_end();
}
END_TEST

/* ---------------------------------------------------------------- the
 * worker-side API, caps, the client's end */

/* Bad input to tfork_task_reply, _fail and _log in a worker, and after
 * the answer: -EINVAL (and -E2BIG over the parts cap); the call's
 * answer is the one reply. */
START_TEST(test_worker_api)
{
    struct tt_res r1 = { 0 }, r2 = { 0 };
    tfork_task_checkout *co;
    char file[160], buf[128], want[128];

    tt_begin(0, "worker_api");
    snprintf(file, sizeof file, "%s/after", T.dir);
    tt_server_default();
    tt_client(NULL);
    co = tt_checkout(T.cli, 0);
    tt_call(co, &r1, "api", file, NULL);
    tt_call(co, &r2, "pid", NULL);
    tt_wait(&r2);
    snprintf(want, sizeof want, "%d %d %d %d %d %d %d", -EINVAL, -EINVAL,
             -EINVAL, -EINVAL, -EINVAL, -E2BIG, -EINVAL);
    tt_ok1(&r1, want);
    tt_pid_of(&r2);
    snprintf(want, sizeof want, "%d %d %d", -EINVAL, -EINVAL, -EINVAL);
    ck_assert_str_eq(tt_slurp(file, buf, sizeof buf), want);
    ck_assert_int_eq(unlink(file), 0);
    tt_release(co);
    tt_end();
}
END_TEST

/* The method takes one part of the RPC cap: a call with the most parts
 * the API allows is either refused at once (-E2BIG, no callback) or
 * answered; either way the checkout goes on working.  One part fewer is
 * always served. */
START_TEST(test_parts_cap)
{
    static struct iovec many[TFORK_RPC_PARTS_MAX];     /* empty parts */
    struct tt_res r1 = { 0 }, r2 = { 0 }, r3 = { 0 };
    tfork_task_checkout *co;
    char want[32];
    int rc;

    tt_begin(0, "parts_cap");
    tt_server_default();
    tt_client(NULL);
    co = tt_checkout(T.cli, 0);
    tt_callv(co, &r1, "nargs", (int)TFORK_RPC_PARTS_MAX - 1, many);
    tt_wait(&r1);
    snprintf(want, sizeof want, "%u", TFORK_RPC_PARTS_MAX - 1);
    tt_ok1(&r1, want);
    rc = API(tfork_task_call(co, "nargs", (int)TFORK_RPC_PARTS_MAX, many,
                             tt_cb, &r2));
    if (rc == 0) {
        T.res[T.nres++] = &r2;
        r2.registered = 1;
        tt_wait(&r2);
        snprintf(want, sizeof want, "%u", TFORK_RPC_PARTS_MAX);
        tt_ok1(&r2, want);
    } else {
        ck_assert_int_eq(rc, -E2BIG);
    }
    tt_call(co, &r3, "echo", "still fine", NULL);
    tt_wait(&r3);
    tt_ok1(&r3, "still fine");
    tt_release(co);
    tt_end();
}
END_TEST

/* tfork_task_client_free fails every pending call, running or waiting,
 * with -ENOTCONN "client freed" from the loop; later calls on the
 * checkouts too; no new checkout; the handles stay valid until
 * released. */
START_TEST(test_client_free)
{
    struct tt_res r1 = { 0 }, r2 = { 0 }, r3 = { 0 }, r4 = { 0 };
    tfork_task_client_opts o;
    tfork_task_checkout *co1, *co2;
    pid_t busy;

    tt_begin(0, "client_free");
    tt_server_default();
    memset(&o, 0, sizeof o);
    o.max_workers = 1;
    tt_client(&o);
    co1 = tt_checkout(T.cli, 0);
    tt_call(co1, &r1, "sleep", "0.3", NULL);
    tt_call(co1, &r2, "pid", NULL);
    co2 = tt_checkout(T.cli, 0);
    tt_call(co2, &r3, "pid", NULL);
    RUN_UNTIL(T.loop, tfork_task_worker_pid(co1) > 0, TT_WAIT);
    busy = tfork_task_worker_pid(co1);
    APIV(tfork_task_client_free(T.cli));
    ck_assert_int_eq(r1.called + r2.called + r3.called, 0);
    tt_wait(&r3);
    tt_wait(&r2);
    tt_failed(&r1, -ENOTCONN, "client freed");
    tt_failed(&r2, -ENOTCONN, "client freed");
    tt_failed(&r3, -ENOTCONN, "client freed");
    tt_call(co1, &r4, "pid", NULL);
    tt_wait(&r4);
    tt_failed(&r4, -ENOTCONN, "client freed");
    errno = 0;
    ck_assert_ptr_null(API(tfork_task_checkout_new(T.cli, 0)));
    ck_assert_int_eq(errno, EINVAL);
    tt_release(co1);
    tt_release(co2);
    T.cli = NULL;
    RUN_UNTIL(T.loop, tu_gone(busy), TT_SETTLE);   /* its worker went */
    tt_end();
}
END_TEST

static void tt_never_cb(tfork_task_checkout *co, int err, const char *msg,
                        int n, const struct iovec *res, void *data)
{
    (void)co;
    (void)n;
    (void)res;
    (void)data;
    ck_abort_msg("%s: a refused call got a callback: %d %s", T.what, err,
                 msg);
}

static void tt_never_log(tfork_task_checkout *co, int level, double time,
                         pid_t pid, const char *line, void *data)
{
    (void)co;
    (void)level;
    (void)time;
    (void)pid;
    (void)data;
    ck_abort_msg("%s: a log line: %s", T.what, line);
}

/* NULL, empty and malformed options and addresses: EINVAL (and nothing
 * forked, no file made); calls that are refused get no callback; NULL
 * handles are harmless; errno is left alone on success. */
START_TEST(test_bad_input)
{
    static const char *const bad_addrs[] = {
        "", "unix:", "tcp:", "tcp:x", "tcp:70000", "tcp:-1", "tcp:1.2.3:5",
        "tcp::5", "tcp:5x", "tcp:no.such.host:5", "nohost", "udp:1",
        ("unix:/tmp/tfork-task-check-a-path-too-long-for-sun-path-xxxxxxxxx"
         "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx/s"),
    };
    static struct iovec many[TFORK_RPC_PARTS_MAX + 1];
    tfork_task_server_opts o;
    tfork_task_client_opts co_o;
    tfork_task_checkout *co;
    struct iovec v;
    char c = 'x';
    pid_t kids[4];

    tt_begin(0, "bad_input");
#define TT_EINVAL_NULL(expr)                                                \
    do {                                                                    \
        errno = 0;                                                          \
        ck_assert_ptr_null(API(expr));                                      \
        ck_assert_msg(errno == EINVAL, "%s: errno %d", #expr, errno);       \
    } while (0)
    /* the server */
    tt_opts(&o);
    TT_EINVAL_NULL(tfork_task_server_new(NULL, &o));
    TT_EINVAL_NULL(tfork_task_server_new(T.loop, NULL));
    o.listen = NULL;
    TT_EINVAL_NULL(tfork_task_server_new(T.loop, &o));
    tt_opts(&o);
    o.interface = NULL;                 /* neither */
    TT_EINVAL_NULL(tfork_task_server_new(T.loop, &o));
    o.interface = "tt_iface";
    o.dispatch = "tt_d_";               /* both */
    TT_EINVAL_NULL(tfork_task_server_new(T.loop, &o));
    tt_opts(&o);
    o.interface = "";
    TT_EINVAL_NULL(tfork_task_server_new(T.loop, &o));
    tt_opts(&o);
    o.name = "";
    TT_EINVAL_NULL(tfork_task_server_new(T.loop, &o));
    tt_opts(&o);
    o.hung_worker_timeout = -1;
    TT_EINVAL_NULL(tfork_task_server_new(T.loop, &o));
    tt_opts(&o);
    o.eval = "x";
    o.eval_argc = 1;                    /* and no argv */
    TT_EINVAL_NULL(tfork_task_server_new(T.loop, &o));
    tt_opts(&o);
    o.eval_argc = -1;
    TT_EINVAL_NULL(tfork_task_server_new(T.loop, &o));
    for (size_t i = 0; i < sizeof bad_addrs / sizeof *bad_addrs; i++) {
        tt_opts(&o);
        o.listen = bad_addrs[i];
        errno = 0;
        ck_assert_ptr_null(API(tfork_task_server_new(T.loop, &o)));
        ck_assert_msg(errno == EINVAL, "server at \"%s\": errno %d",
                      bad_addrs[i], errno);
        memset(&co_o, 0, sizeof co_o);
        co_o.connect = bad_addrs[i];
        errno = 0;
        ck_assert_ptr_null(API(tfork_task_client_new(T.loop, &co_o)));
        ck_assert_msg(errno == EINVAL, "client of \"%s\": errno %d",
                      bad_addrs[i], errno);
    }
    ck_assert_int_eq(tu_scan_children(getpid(), kids, NULL, 4), 0);
    ck_assert_int_eq(T.nslog, 0);
    ck_assert_int_eq(tfork_task_fork_server(NULL), -EINVAL);
    tt_opts(&o);
    o.listen = "tcp:x";         /* the forked server fails: reported */
    ck_assert_int_eq(tfork_task_fork_server(&o), -EINVAL);
    ck_assert_int_eq(tu_scan_children(getpid(), kids, NULL, 4), 0);
    /* the client */
    memset(&co_o, 0, sizeof co_o);
    TT_EINVAL_NULL(tfork_task_client_new(T.loop, &co_o));   /* no address */
    co_o.connect = T.addr;
    TT_EINVAL_NULL(tfork_task_client_new(NULL, &co_o));
    TT_EINVAL_NULL(tfork_task_client_new(T.loop, NULL));
    co_o.min_workers = -1;
    TT_EINVAL_NULL(tfork_task_client_new(T.loop, &co_o));
    co_o.min_workers = 0;
    co_o.max_workers = -1;
    TT_EINVAL_NULL(tfork_task_client_new(T.loop, &co_o));
    co_o.max_workers = 2;
    co_o.min_workers = 3;
    TT_EINVAL_NULL(tfork_task_client_new(T.loop, &co_o));
    co_o.min_workers = 0;
    co_o.timeout = -1;
    TT_EINVAL_NULL(tfork_task_client_new(T.loop, &co_o));
    co_o.timeout = 0;
    co_o.max_checkouts = -1;
    TT_EINVAL_NULL(tfork_task_client_new(T.loop, &co_o));
    TT_EINVAL_NULL(tfork_task_checkout_new(NULL, 0));
    /* errno is left as found by constructors that succeed */
    errno = EBADMSG;
    tt_client(NULL);
    ck_assert_int_eq(errno, EBADMSG);
    co = tt_checkout(T.cli, 0);
    ck_assert_int_eq(errno, EBADMSG);
    /* refused calls: no callback, ever */
    ck_assert_int_eq(API(tfork_task_call(NULL, "m", 0, NULL, tt_never_cb,
                                         NULL)), -EINVAL);
    ck_assert_int_eq(API(tfork_task_call(co, NULL, 0, NULL, tt_never_cb,
                                         NULL)), -EINVAL);
    ck_assert_int_eq(API(tfork_task_call(co, "", 0, NULL, tt_never_cb,
                                         NULL)), -EINVAL);
    ck_assert_int_eq(API(tfork_task_call(co, "m", 0, NULL, NULL, NULL)),
                     -EINVAL);
    ck_assert_int_eq(API(tfork_task_call(co, "m", -1, NULL, tt_never_cb,
                                         NULL)), -EINVAL);
    ck_assert_int_eq(API(tfork_task_call(co, "m", 1, NULL, tt_never_cb,
                                         NULL)), -EINVAL);
    v.iov_base = NULL;
    v.iov_len = 1;
    ck_assert_int_eq(API(tfork_task_call(co, "m", 1, &v, tt_never_cb,
                                         NULL)), -EINVAL);
    v.iov_base = &c;            /* never read: the length is refused */
    v.iov_len = (size_t)TFORK_RPC_MAX + 1;
    ck_assert_int_eq(API(tfork_task_call(co, "m", 1, &v, tt_never_cb,
                                         NULL)), -E2BIG);
    ck_assert_int_eq(API(tfork_task_call(co, "m",
                                         (int)TFORK_RPC_PARTS_MAX + 1, many,
                                         tt_never_cb, NULL)), -E2BIG);
    /* NULL handles */
    APIV(tfork_task_release(NULL));
    APIV(tfork_task_abort(NULL, "x"));
    APIV(tfork_task_on_log(NULL, tt_never_log, NULL));
    APIV(tfork_task_checkout_log(NULL, TFORK_TASK_INFO, "x"));
    APIV(tfork_task_client_free(NULL));
    APIV(tfork_task_server_free(NULL));
    ck_assert_int_eq(tfork_task_worker_pid(NULL), 0);
    ck_assert_int_eq(tfork_task_worker_pid(co), 0);
    ck_assert_ptr_null(tfork_task_server_address(NULL));
    ck_assert_int_eq(tfork_task_server_workers(NULL), 0);
    ck_assert_int_eq(tfork_task_client_workers(NULL), 0);
    /* a released checkout takes no calls (until the loop frees it) */
    tt_release(co);
    tt_release(co);             /* twice: a no-op */
    ck_assert_int_eq(API(tfork_task_call(co, "m", 0, NULL, tt_never_cb,
                                         NULL)), -EINVAL);
    ck_assert_int_eq(T.nslog, 0);
    tt_end();
#undef TT_EINVAL_NULL
}
END_TEST

/* ---------------------------------------------------------------- suite */

static Suite *task_suite(void)
{
    Suite *s = suite_create("task");
    TCase *tc;

    tc = tcase_create("calls");
    tcase_set_timeout(tc, TT_TIMEOUT);
    tcase_add_loop_test(tc, test_binary_safe, 0, 2);
    tcase_add_test(tc, test_interface_mode);
    tcase_add_test(tc, test_dispatch_mode);
    tcase_add_loop_test(tc, test_error_vs_setup_error, 0, 2);
    tcase_add_loop_test(tc, test_refork_after_error, 0, 2);
    tcase_add_test(tc, test_error_clears_queue);
    tcase_add_test(tc, test_log_merge);
    tcase_add_loop_test(tc, test_abort_sticky, 0, 2);
    suite_add_tcase(s, tc);

    tc = tcase_create("workers");
    tcase_set_timeout(tc, TT_TIMEOUT);
    tcase_add_test(tc, test_max_checkouts);
    tcase_add_test(tc, test_max_workers_fifo);
    tcase_add_test(tc, test_setup_error_twice);
    tcase_add_test(tc, test_setup_once);
    tcase_add_test(tc, test_surge);
    tcase_add_test(tc, test_soak_flat);
    suite_add_tcase(s, tc);

    tc = tcase_create("time");
    tcase_set_timeout(tc, TT_TIMEOUT);
    tcase_add_test(tc, test_connect_timeout);
    tcase_add_test(tc, test_client_before_server);
    tcase_add_test(tc, test_hung_worker);
    tcase_add_test(tc, test_call_timeout);
    tcase_add_test(tc, test_timeout_from_call);
    tcase_add_test(tc, test_worker_exit_sticky);
    suite_add_tcase(s, tc);

    tc = tcase_create("socket");
    tcase_set_timeout(tc, TT_TIMEOUT);
    tcase_add_test(tc, test_other_uid_refused);
    tcase_add_test(tc, test_socket_file_rules);
    tcase_add_test(tc, test_socket_modes);
    tcase_add_loop_test(tc, test_tcp, 0, 2);
    suite_add_tcase(s, tc);

    tc = tcase_create("process");
    tcase_set_timeout(tc, TT_TIMEOUT);
    tcase_add_test(tc, test_fork_server);
    tcase_add_test(tc, test_process_titles);
    tcase_add_test(tc, test_program);
    suite_add_tcase(s, tc);

    tc = tcase_create("api");
    tcase_set_timeout(tc, TT_TIMEOUT);
    tcase_add_test(tc, test_worker_api);
    tcase_add_test(tc, test_parts_cap);
    tcase_add_test(tc, test_client_free);
    tcase_add_test(tc, test_bad_input);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(task_suite());
    int failed;

    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
