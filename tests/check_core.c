/* check_core.c: the core commands (require, eval, send_arg, send_fd, fork,
 * run) and their error paths, against tfork-serve templates (tfork_new_exec
 * + tests/mod_core_basic.so) and copies of this program (tfork_template,
 * TFORK_EXPORT'ed functions below), on the default loop and a private one.
 *
 * Loop tests run each case four times: _i bit 0 picks the template kind
 * (0 tfork-serve, 1 copy of this program), bit 1 the loop (0 ev_loop_new,
 * 1 ev_default_loop).  Every test ends in core_end(), which checks that no
 * descendant process and no descriptor is left behind.  The test process
 * is a child subreaper, so any process of the tree that outlives its parent
 * lands here and is seen. */
#include <check.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <ev.h>

#include "tfork.h"
#include "tfork-int.h"
#include "core_report.h"
#include "testutil.h"

#define CORE_GUARD 45.          /* seconds before a hung loop fails */
#define CORE_TIMEOUT 90         /* Check's own limit per test */
#define CORE_SETTLE 20.         /* seconds for processes to go away */
#define CORE_MAXTPL 16

/* ---------------------------------------------------------------- the
 * functions copies of this program run (static: found only through
 * TFORK_EXPORT, never through dlsym) */

static char core_rec[CORE_REC_MAX];     /* evals seen by this process */
static pid_t core_main_pid;             /* the test process */

static int core_eval_record(int argc, char **argv)
{
    core_record_eval(core_rec, argc, argv);
    return 0;
}
TFORK_EXPORT(core_eval_record);

static int core_eval_fail(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return 3;
}
TFORK_EXPORT(core_eval_fail);

static int core_eval_block(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    for (;;)
        pause();
    return 0;
}
TFORK_EXPORT(core_eval_block);

static int core_eval_exit5(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    _exit(5);
}
TFORK_EXPORT(core_eval_exit5);

static int core_eval_sleep(int argc, char **argv)
{
    core_sleep_ms(argc > 0 ? atol(argv[0]) : 100);
    return 0;
}
TFORK_EXPORT(core_eval_sleep);

static pid_t core_fork_eagain(void)
{
    errno = EAGAIN;
    return -1;
}

/* fork fails in every process but the test process itself */
static pid_t core_fork_fail_in_copy(void)
{
    if (getpid() == core_main_pid)
        return tfork__sys_fork();
    errno = EAGAIN;
    return -1;
}

static int core_eval_break_fork(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    tfork__sys.fork = core_fork_eagain;
    return 0;
}
TFORK_EXPORT(core_eval_break_fork);

static int core_eval_mend_fork(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    tfork__sys.fork = tfork__sys_fork;
    return 0;
}
TFORK_EXPORT(core_eval_mend_fork);

static int core_report_fn(int fd, int argc, const tfork_arg *argv)
{
    return core_report(fd, argc, argv, core_rec) < 0 ? 1 : 0;
}
TFORK_EXPORT(core_report_fn);

static int core_exit7(int fd, int argc, const tfork_arg *argv)
{
    if (core_report(fd, argc, argv, core_rec) < 0)
        return 1;
    core_wait_eof(fd);
    return 7;
}
TFORK_EXPORT(core_exit7);

static int core_block(int fd, int argc, const tfork_arg *argv)
{
    if (core_report(fd, argc, argv, core_rec) < 0)
        return 1;
    for (;;)
        pause();
}
TFORK_EXPORT(core_block);

static int core_sockecho_fn(int fd, int argc, const tfork_arg *argv)
{
    (void)argc;
    (void)argv;
    return core_sockecho(fd);
}
TFORK_EXPORT(core_sockecho_fn);

static int core_echo_fn(int fd, int argc, const tfork_arg *argv)
{
    (void)fd;
    return core_echo(argc, argv);
}
TFORK_EXPORT(core_echo_fn);

/* ---------------------------------------------------------------- kinds */

struct core_kind {
    int copy;                   /* tfork_template, else tfork_new_exec */
    const char *name;
    const char *report, *exit7, *block, *echo, *sockecho;   /* run */
    const char *rec, *fail, *stall, *sleep, *exit5;     /* eval */
};

static const struct core_kind core_exec = {
    0, "tfork-serve",
    "mod_core_report", "mod_core_exit7", "mod_core_block", "mod_core_echo",
    "mod_core_sockecho",
    "mod_core_eval_record", "mod_core_eval_fail", "mod_core_eval_block",
    "mod_core_eval_sleep", "mod_core_eval_exit5",
};

static const struct core_kind core_copy = {
    1, "template copy",
    "core_report_fn", "core_exit7", "core_block", "core_echo_fn",
    "core_sockecho_fn",
    "core_eval_record", "core_eval_fail", "core_eval_block",
    "core_eval_sleep", "core_eval_exit5",
};

#define KIND(i) (((i) & 1) ? &core_copy : &core_exec)
#define DEF(i) (((i) >> 1) & 1)

/* ---------------------------------------------------------------- state */

static struct {
    struct ev_loop *loop;
    int def;                    /* the default loop */
    int fds0;                   /* open fds when the test began */
    const char *what;           /* the test, for the guard's message */
    ev_timer guard;
    pid_t tpl[CORE_MAXTPL];     /* templates: the library reaps these */
    int ntpl;
} T;

static void core_guard_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    ck_abort_msg("%s: the loop still runs after %.0f s", T.what, CORE_GUARD);
}

static void core_begin(int def, const char *what)
{
    memset(&T, 0, sizeof T);
    T.what = what;
    T.fds0 = tu_subreaper();
    core_main_pid = getpid();
    T.def = def;
    T.loop = tu_loop_for(def);
    ck_assert_int_eq(!!ev_is_default_loop(T.loop), def);
    tu_guard_start(T.loop, &T.guard, core_guard_cb, CORE_GUARD);
}

static void core_loop(void)
{
    ck_assert_int_eq(tu_in_api, 0);
    ev_run(T.loop, 0);
}

/* Runs the loop until every descendant is gone: templates are reaped by
 * the library, orphans that landed on us (we are a subreaper) by us.  Then
 * no child, no fd may be left. */
static void core_end(void)
{
    tu_settle(T.loop, CORE_SETTLE, T.tpl, T.ntpl, NULL, T.what);
    tu_close_loop(T.loop, &T.guard, T.fds0, T.what);
    T.loop = NULL;
}

/* Reads fd until EOF (line == 0) or through the first newline. */
static char *core_read(int fd, int line, double secs, size_t *lenp)
{
    return tu_read(fd, line, secs, T.what, lenp);
}

static void core_hex(char *out, const void *p, size_t n)
{
    const unsigned char *s = p;

    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", s[i]);
    out[2 * n] = 0;
}

/* ---------------------------------------------------------------- run
 * and exit callbacks */

enum {
    R_READ,             /* read the report to EOF, close */
    R_LINE,             /* read the P line, close (exit7 then returns) */
    R_KILL,             /* read the P line, SIGKILL the child, close */
    R_KEEP,             /* read the P line, keep the fd in kept */
    R_RAW,              /* read to EOF, close; no report expected */
    R_SAY               /* write "hello", shut down writing, read to EOF */
};

struct core_run {
    int mode;
    int calls;
    int inside;         /* calls made from inside a tfork_* call */
    int fd, err;
    int nonblock, cloexec;
    pid_t pid;          /* tfork_pid inside the callback */
    pid_t rpid, rppid;  /* what the child reported */
    int rfds;
    char msg[1024];
    char *out;          /* the report */
    int kept;           /* R_KEEP */
};

static void core_run_cb(tfork *p, int fd, int err, void *data)
{
    struct core_run *r = data;

    ck_assert_msg(r->calls == 0, "%s: a second run callback (fd %d err %d)",
                  T.what, fd, err);
    r->calls++;
    r->inside += tu_in_api > 0;
    r->fd = fd;
    r->err = err;
    r->pid = tfork_pid(p);
    snprintf(r->msg, sizeof r->msg, "%s", tfork_errmsg(p));
    if (fd < 0)
        return;
    r->nonblock = !!(fcntl(fd, F_GETFL) & O_NONBLOCK);
    r->cloexec = !!(fcntl(fd, F_GETFD) & FD_CLOEXEC);
    free(r->out);
    if (r->mode == R_SAY) {
        ck_assert_int_eq(write(fd, "hello", 5), 5);
        ck_assert_int_eq(shutdown(fd, SHUT_WR), 0);
    }
    r->out = core_read(fd, r->mode == R_LINE || r->mode == R_KILL ||
                       r->mode == R_KEEP, 20., NULL);
    if (r->mode == R_RAW || r->mode == R_SAY) {
        close(fd);
        return;
    }
    ck_assert_msg(sscanf(r->out, "P %d %d %d", &r->rpid, &r->rppid,
                         &r->rfds) == 3, "%s: bad report '%s'", T.what,
                  r->out);
    if (r->mode == R_KILL)
        kill(r->rpid, SIGKILL);
    if (r->mode == R_KEEP)
        r->kept = fd;
    else
        close(fd);
}

/* The report without its P line. */
static const char *core_body(const struct core_run *r)
{
    const char *nl;

    ck_assert_ptr_nonnull(r->out);
    nl = strchr(r->out, '\n');
    ck_assert_ptr_nonnull(nl);
    return nl + 1;
}

/* A run that worked: one callback, from the loop, with the socket. */
static void core_ok(const struct core_run *r)
{
    ck_assert_msg(r->calls == 1, "%s: %d run callbacks", T.what, r->calls);
    ck_assert_int_eq(r->inside, 0);
    ck_assert_msg(r->err == 0 && r->fd >= 0, "%s: run failed: %d %s (%s)",
                  T.what, r->err, tfork_strerror(r->err), r->msg);
    ck_assert_str_eq(r->msg, "");
    ck_assert_int_eq(r->nonblock, 1);
    ck_assert_int_eq(r->cloexec, 1);
    ck_assert_int_gt(r->pid, 0);
    if (r->mode != R_RAW && r->mode != R_SAY)
        ck_assert_int_eq(r->pid, r->rpid);
}

/* A run that failed: exactly one callback, from the loop, fd -1, err,
 * and a message that names what has to be named. */
static void core_failed(const struct core_run *r, int err, const char *has1,
                        const char *has2)
{
    ck_assert_msg(r->calls == 1, "%s: %d run callbacks", T.what, r->calls);
    ck_assert_int_eq(r->inside, 0);
    ck_assert_msg(r->err == err, "%s: err %d (%s), expected %d (%s); "
                  "message '%s'", T.what, r->err, tfork_strerror(r->err),
                  err, tfork_strerror(err), r->msg);
    ck_assert_int_eq(r->fd, -1);
    ck_assert_msg(has1 == NULL || strstr(r->msg, has1), "%s: message '%s' "
                  "lacks '%s'", T.what, r->msg, has1);
    ck_assert_msg(has2 == NULL || strstr(r->msg, has2), "%s: message '%s' "
                  "lacks '%s'", T.what, r->msg, has2);
}

struct core_exit {
    int calls, inside;
    pid_t pid;
    int status;
    pid_t tpl;          /* a template whose state to note */
    char tplstate;      /* its /proc state inside the callback */
};

static void core_exit_cb(pid_t pid, int status, void *data)
{
    struct core_exit *e = data;

    ck_assert_msg(e->calls == 0, "%s: a second on_exit for %d (status %#x)",
                  T.what, (int)pid, status);
    e->calls++;
    e->inside += tu_in_api > 0;
    e->pid = pid;
    e->status = status;
    if (e->tpl)
        e->tplstate = tu_proc_state(e->tpl, NULL, NULL);
}

/* ---------------------------------------------------------------- makers */

static tfork *core_tpl(const struct core_kind *k)
{
    tfork *t;
    pid_t pid, pp = 0;

    errno = 4321;       /* success leaves errno as found */
    t = k->copy ? API(tfork_template(T.loop)) : API(tfork_new_exec(T.loop));
    ck_assert_msg(t != NULL, "%s: %s: %s", T.what, k->name, strerror(errno));
    ck_assert_int_eq(errno, 4321);
    pid = tfork_pid(t);
    ck_assert_int_gt(pid, 0);
    ck_assert_int_lt(T.ntpl, CORE_MAXTPL);
    T.tpl[T.ntpl++] = pid;
    /* our own child, at once */
    ck_assert_int_ne(tu_proc_state(pid, &pp, NULL), 0);
    ck_assert_int_eq(pp, getpid());
    if (!k->copy)
        ck_assert_int_eq(API(tfork_require(t,
                                           tu_testdir("mod_core_basic.so"))),
                         0);
    return t;
}

static tfork *core_fork(tfork *p)
{
    tfork *c = API(tfork_fork(p));

    ck_assert_msg(c != NULL, "%s: tfork_fork: %s", T.what, strerror(errno));
    return c;
}

static void core_run(tfork *p, const char *func, struct core_run *r)
{
    int e = API(tfork_run(p, func, core_run_cb, r));

    ck_assert_msg(e == 0, "%s: tfork_run(%s): %s", T.what, func,
                  tfork_strerror(e));
}

static void core_arg(tfork *p, const void *buf, size_t len)
{
    ck_assert_int_eq(API(tfork_send_arg(p, buf, len)), 0);
}

static void core_on_exit(tfork *p, struct core_exit *e)
{
    ck_assert_int_eq(API(tfork_on_exit(p, core_exit_cb, e)), 0);
}

static void core_done(struct core_run *r)
{
    free(r->out);
    r->out = NULL;
}

/* ================================================================ commands */

START_TEST(test_require_run)
{
    const struct core_kind *k = KIND(_i);
    struct core_run r = { .mode = R_READ };
    tfork *t, *c;

    core_begin(DEF(_i), "require_run");
    t = core_tpl(k);
    c = core_fork(t);
    core_run(c, k->report, &r);
    APIV(tfork_free(t));
    ck_assert_int_eq(r.calls, 0);
    core_loop();
    core_ok(&r);
    ck_assert_str_eq(core_body(&r), "");
    ck_assert_int_eq(r.rfds, 4);   /* 0, 1, 2 and the socket */
    core_done(&r);
    core_end();
}
END_TEST

/* run on a template handle itself: the template process runs func */
START_TEST(test_run_template_itself)
{
    const struct core_kind *k = KIND(_i);
    struct core_run r = { .mode = R_READ };
    tfork *t;
    pid_t tp;
    const char *a[] = { "tpl" };

    core_begin(DEF(_i), "run_template_itself");
    t = core_tpl(k);
    tp = tfork_pid(t);
    core_arg(t, "t", 1);
    ck_assert_int_eq(API(tfork_eval(t, k->rec, 1, a)), 0);
    core_run(t, k->report, &r);
    core_loop();
    core_ok(&r);
    ck_assert_int_eq(r.rpid, tp);
    ck_assert_int_eq(r.rppid, getpid());
    ck_assert_str_eq(core_body(&r), "E 1 [tpl]\nA 0 1 1 74\n");
    core_done(&r);
    core_end();
}
END_TEST

START_TEST(test_eval_argv)
{
    const struct core_kind *k = KIND(_i);
    struct core_run r1 = { .mode = R_READ }, r2 = { .mode = R_READ };
    char x[] = "x", yz[] = "y z";
    const char *a1[] = { x, "", yz };
    const char *a2[] = { "c" };
    const char *a3[] = { "late" };
    tfork *t, *c1, *c2;

    core_begin(DEF(_i), "eval_argv");
    t = core_tpl(k);
    ck_assert_int_eq(API(tfork_eval(t, k->rec, 3, a1)), 0);
    /* argv was copied: the caller's strings are free to change */
    x[0] = 'Q';
    yz[0] = 'Q';
    c1 = core_fork(t);
    ck_assert_int_eq(API(tfork_eval(c1, k->rec, 0, NULL)), 0);
    ck_assert_int_eq(API(tfork_eval(c1, k->rec, 1, a2)), 0);
    /* after c1's fork: only later children see it */
    ck_assert_int_eq(API(tfork_eval(t, k->rec, 1, a3)), 0);
    c2 = core_fork(t);
    core_run(c1, k->report, &r1);
    core_run(c2, k->report, &r2);
    APIV(tfork_free(t));
    core_loop();
    core_ok(&r1);
    core_ok(&r2);
    ck_assert_str_eq(core_body(&r1), "E 3 [x][][y z]\nE 0 \nE 1 [c]\n");
    ck_assert_str_eq(core_body(&r2), "E 3 [x][][y z]\nE 1 [late]\n");
    core_done(&r1);
    core_done(&r2);
    core_end();
}
END_TEST

/* args and fds: the template's first, then the child's, in the order
 * sent; what the template gets after the fork is not the child's */
START_TEST(test_args_order)
{
    const struct core_kind *k = KIND(_i);
    struct core_run r = { .mode = R_READ };
    int p1[2], p2[2];
    char want[64], *got;
    tfork *t, *c;

    core_begin(DEF(_i), "args_order");
    ck_assert_int_eq(pipe2(p1, O_CLOEXEC), 0);
    ck_assert_int_eq(pipe2(p2, O_CLOEXEC), 0);
    t = core_tpl(k);
    core_arg(t, "t1", 2);
    ck_assert_int_eq(API(tfork_send_fd(t, p1[1])), 0);
    core_arg(t, "t2", 2);
    c = core_fork(t);
    core_arg(c, "c1", 2);
    ck_assert_int_eq(API(tfork_send_fd(c, p2[1])), 0);
    core_arg(c, NULL, 0);
    core_arg(t, "late", 4);
    /* the library dup'ed them: ours may go at once */
    close(p1[1]);
    close(p2[1]);
    core_run(c, k->report, &r);
    APIV(tfork_free(t));
    core_loop();
    core_ok(&r);
    ck_assert_str_eq(core_body(&r), "A 0 2 1 7431\nF 1 1\nA 2 2 1 7432\n"
                     "A 3 2 1 6331\nF 4 1\nA 5 0 1 \n");
    ck_assert_int_eq(r.rfds, 6);
    got = core_read(p1[0], 1, 10., NULL);
    snprintf(want, sizeof want, "fd1:%d\n", (int)r.rpid);
    ck_assert_str_eq(got, want);
    free(got);
    got = core_read(p2[0], 1, 10., NULL);
    snprintf(want, sizeof want, "fd4:%d\n", (int)r.rpid);
    ck_assert_str_eq(got, want);
    free(got);
    close(p1[0]);
    close(p2[0]);
    core_done(&r);
    core_end();
}
END_TEST

START_TEST(test_binary_args)
{
    const struct core_kind *k = KIND(_i);
    struct core_run r = { .mode = R_READ };
    unsigned char b256[257];
    char want[2048], hex[600];
    size_t n = 0;
    tfork *t, *c;

    core_begin(DEF(_i), "binary_args");
    for (int i = 0; i < 257; i++)
        b256[i] = (unsigned char)(255 - i % 256);
    t = core_tpl(k);
    core_arg(t, "\0t\0", 3);
    c = core_fork(t);
    core_arg(c, "a\0b\0", 4);
    core_arg(c, "\0", 1);
    core_arg(c, b256, 256);
    core_arg(c, b256, 257);
    core_run(c, k->report, &r);
    APIV(tfork_free(t));
    core_loop();
    core_ok(&r);
    n += (size_t)snprintf(want + n, sizeof want - n,
                          "A 0 3 1 007400\nA 1 4 1 61006200\nA 2 1 1 00\n");
    core_hex(hex, b256, 256);
    n += (size_t)snprintf(want + n, sizeof want - n, "A 3 256 1 %s\n", hex);
    snprintf(want + n, sizeof want - n, "A 4 257 1 H%016llx\n",
             (unsigned long long)core_fnv(b256, 257));
    ck_assert_str_eq(core_body(&r), want);
    core_done(&r);
    core_end();
}
END_TEST

START_TEST(test_empty_args)
{
    const struct core_kind *k = KIND(_i);
    struct core_run r = { .mode = R_READ };
    tfork *t, *c;

    core_begin(DEF(_i), "empty_args");
    t = core_tpl(k);
    core_arg(t, NULL, 0);
    c = core_fork(t);
    core_arg(c, "", 0);
    core_arg(c, "xyz", 0);
    core_arg(c, NULL, 0);
    core_run(c, k->report, &r);
    APIV(tfork_free(t));
    core_loop();
    core_ok(&r);
    /* an empty string, never NULL, NUL-terminated */
    ck_assert_str_eq(core_body(&r), "A 0 0 1 \nA 1 0 1 \nA 2 0 1 \n"
                     "A 3 0 1 \n");
    core_done(&r);
    core_end();
}
END_TEST

/* TFORK_ARG_MAX exactly passes, intact; one byte more is -E2BIG */
START_TEST(test_big_arg)
{
    const struct core_kind *k = KIND(_i);
    struct core_run r = { .mode = R_READ };
    size_t n = TFORK_ARG_MAX;
    unsigned char *b = malloc(n + 1);
    uint64_t h, x = 88172645463325252ull;
    char want[128];
    tfork *t, *c;

    core_begin(DEF(_i), "big_arg");
    ck_assert_ptr_nonnull(b);
    for (size_t i = 0; i < n + 1; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        b[i] = (unsigned char)x;
    }
    h = core_fnv(b, n);
    t = core_tpl(k);
    c = core_fork(t);
    ck_assert_int_eq(API(tfork_send_arg(c, b, n + 1)), -E2BIG);
    ck_assert_int_eq(API(tfork_send_arg(t, b, n + 1)), -E2BIG);
    ck_assert_int_eq(API(tfork_send_arg(c, b, SIZE_MAX)), -E2BIG);
    core_arg(c, b, n);
    /* copied: the caller's buffer is free to reuse */
    memset(b, 0, n + 1);
    free(b);
    core_arg(c, "end", 3);
    core_run(c, k->report, &r);
    APIV(tfork_free(t));
    core_loop();
    core_ok(&r);
    snprintf(want, sizeof want, "A 0 %zu 1 H%016llx\nA 1 3 1 656e64\n", n,
             (unsigned long long)h);
    ck_assert_str_eq(core_body(&r), want);
    core_done(&r);
    core_end();
}
END_TEST

/* a pipe and a socket sent with send_fd, used by the child; once the
 * child is gone nobody else holds them (EOF) */
START_TEST(test_fd_pipe_socket)
{
    const struct core_kind *k = KIND(_i);
    struct core_run r = { .mode = R_READ }, re = { .mode = R_RAW };
    int pp[2], sv[2], se[2];
    char want[64], *got;
    tfork *t, *c, *e;

    core_begin(DEF(_i), "fd_pipe_socket");
    ck_assert_int_eq(pipe2(pp, O_CLOEXEC), 0);
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv),
                     0);
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, se),
                     0);
    t = core_tpl(k);
    c = core_fork(t);
    ck_assert_int_eq(API(tfork_send_fd(c, pp[1])), 0);
    ck_assert_int_eq(API(tfork_send_fd(c, sv[1])), 0);
    close(pp[1]);
    close(sv[1]);
    core_run(c, k->report, &r);
    e = core_fork(t);
    ck_assert_int_eq(API(tfork_send_fd(e, se[1])), 0);
    close(se[1]);
    ck_assert_int_eq(write(se[0], "ping", 4), 4);
    ck_assert_int_eq(shutdown(se[0], SHUT_WR), 0);
    core_run(e, k->echo, &re);
    APIV(tfork_free(t));
    core_loop();
    core_ok(&r);
    ck_assert_str_eq(core_body(&r), "F 0 1\nF 1 1\n");
    ck_assert_int_eq(r.rfds, 6);
    snprintf(want, sizeof want, "fd0:%d\n", (int)r.rpid);
    got = core_read(pp[0], 0, 10., NULL);
    ck_assert_str_eq(got, want);
    free(got);
    snprintf(want, sizeof want, "fd1:%d\n", (int)r.rpid);
    got = core_read(sv[0], 0, 10., NULL);
    ck_assert_str_eq(got, want);
    free(got);
    /* echo: said nothing on its own socket, answered on the one sent */
    core_ok(&re);
    ck_assert_str_eq(re.out, "");
    got = core_read(se[0], 0, 10., NULL);
    ck_assert_str_eq(got, "echo:ping");
    free(got);
    close(pp[0]);
    close(sv[0]);
    close(se[0]);
    core_done(&r);
    core_done(&re);
    core_end();
}
END_TEST

/* A freed unrun child may already have reaped a child of its own and
 * written that exit before it sees our EOF: the status still reaches
 * the grandchild's on_exit (it was lost when the socket was closed at
 * once, and ev_run then never returned). */
START_TEST(test_free_parent_after_grandchild_exit)
{
    const struct core_kind *k = KIND(_i);
    struct core_run rg = { .mode = R_LINE };
    struct core_exit eg = { 0 };
    tfork *t, *c, *g;
    double dl;

    core_begin(DEF(_i), "free_parent_after_grandchild_exit");
    t = core_tpl(k);
    c = core_fork(t);
    g = core_fork(c);
    core_on_exit(g, &eg);
    core_run(g, k->exit7, &rg);
    while (rg.calls == 0) {
        ck_assert_int_eq(tu_in_api, 0);
        ev_run(T.loop, EVRUN_ONCE);
    }
    core_ok(&rg);
    /* g exits and c reaps it, while we read nothing */
    for (dl = tu_now() + 10; tu_proc_state(rg.rpid, NULL, NULL) != 0;) {
        ck_assert_msg(tu_now() < dl, "grandchild %d not reaped",
                      (int)rg.rpid);
        usleep(1000);
    }
    usleep(20000);      /* c has written EXIT by now, most likely */
    APIV(tfork_free(c));
    APIV(tfork_free(t));
    core_loop();
    ck_assert_int_eq(eg.calls, 1);
    ck_assert_int_eq(eg.inside, 0);
    ck_assert_int_eq(eg.pid, rg.rpid);
    ck_assert_msg(WIFEXITED(eg.status) && WEXITSTATUS(eg.status) == 7,
                  "status 0x%x", eg.status);
    core_done(&rg);
    core_end();
}
END_TEST

/* tfork_fork of an unrun child: the grandchild inherits the template's
 * and the child's args and evals; the child stays usable */
START_TEST(test_fork_grandchild)
{
    const struct core_kind *k = KIND(_i);
    struct core_run rg = { .mode = R_READ }, rc = { .mode = R_READ };
    struct core_exit eg = { 0 }, ec = { 0 };
    const char *at[] = { "t" }, *ac[] = { "c" };
    tfork *t, *c, *g;
    pid_t tp;

    core_begin(DEF(_i), "fork_grandchild");
    t = core_tpl(k);
    tp = tfork_pid(t);
    core_arg(t, "t", 1);
    ck_assert_int_eq(API(tfork_eval(t, k->rec, 1, at)), 0);
    c = core_fork(t);
    core_arg(c, "c", 1);
    ck_assert_int_eq(API(tfork_eval(c, k->rec, 1, ac)), 0);
    g = core_fork(c);
    core_arg(g, "g", 1);
    core_arg(c, "c2", 2);
    core_on_exit(g, &eg);
    core_on_exit(c, &ec);
    core_run(g, k->report, &rg);
    /* g reports its parent while c is still unrun (then c exits, and g
     * would be the template's) */
    while (rg.calls == 0) {
        ck_assert_int_eq(tu_in_api, 0);
        ev_run(T.loop, EVRUN_ONCE);
    }
    core_run(c, k->report, &rc);
    APIV(tfork_free(t));
    core_loop();
    core_ok(&rg);
    core_ok(&rc);
    ck_assert_str_eq(core_body(&rg), "E 1 [t]\nE 1 [c]\nA 0 1 1 74\n"
                     "A 1 1 1 63\nA 2 1 1 67\n");
    ck_assert_str_eq(core_body(&rc), "E 1 [t]\nE 1 [c]\nA 0 1 1 74\n"
                     "A 1 1 1 63\nA 2 2 1 6332\n");
    ck_assert_int_eq(rc.rppid, tp);
    ck_assert_int_eq(rg.rppid, rc.rpid);
    ck_assert_int_eq(eg.calls, 1);
    ck_assert_int_eq(ec.calls, 1);
    ck_assert_int_eq(eg.inside + ec.inside, 0);
    ck_assert_int_eq(eg.pid, rg.rpid);
    ck_assert_int_eq(ec.pid, rc.rpid);
    ck_assert(WIFEXITED(eg.status) && WEXITSTATUS(eg.status) == 0);
    ck_assert(WIFEXITED(ec.status) && WEXITSTATUS(ec.status) == 0);
    core_done(&rg);
    core_done(&rc);
    core_end();
}
END_TEST

/* ================================================================ errors */

START_TEST(test_err_unknown_run)
{
    const struct core_kind *k = KIND(_i);
    struct core_run r = { .mode = R_READ }, rt = { .mode = R_READ };
    struct core_exit e = { 0 };
    tfork *t, *c, *t2;

    core_begin(DEF(_i), "err_unknown_run");
    t = core_tpl(k);
    c = core_fork(t);
    core_on_exit(c, &e);
    core_run(c, "core_no_such_function", &r);
    t2 = core_tpl(k);
    core_run(t2, "core_no_such_function2", &rt);
    APIV(tfork_free(t));
    ck_assert_int_eq(r.calls + rt.calls + e.calls, 0);
    core_loop();
    core_failed(&r, -ENOENT, "'core_no_such_function'", "run");
    core_failed(&rt, -ENOENT, "'core_no_such_function2'", NULL);
    /* the child existed: its exit is reported once */
    ck_assert_int_eq(e.calls, 1);
    ck_assert_int_eq(e.inside, 0);
    ck_assert_msg(e.status != -1 && WIFEXITED(e.status), "status %#x",
                  e.status);
    core_end();
}
END_TEST

/* require fails: on the child itself, on its template (a child forked
 * before and after the client learned it fails the same way) */
START_TEST(test_err_missing_module)
{
    const struct core_kind *k = KIND(_i);
    struct core_run r1 = { .mode = R_READ }, r2 = { .mode = R_READ },
                    r3 = { .mode = R_READ }, r4 = { .mode = R_READ };
    char dl1[1024], dl2[1024], undef[4096];
    const char *missing = "/nonexistent/mod_core_missing.so";
    tfork *t, *c, *t2, *c2, *c3;

    core_begin(DEF(_i), "err_missing_module");
    snprintf(undef, sizeof undef, "%s", tu_testdir("mod_core_undef.so"));
    /* the dlerror text this libc gives */
    ck_assert_ptr_null(dlopen(missing, RTLD_NOW | RTLD_GLOBAL));
    snprintf(dl1, sizeof dl1, "%s", dlerror());
    ck_assert_ptr_null(dlopen(undef, RTLD_NOW | RTLD_GLOBAL));
    snprintf(dl2, sizeof dl2, "%s", dlerror());
    ck_assert_ptr_nonnull(strstr(dl2, "mod_core_no_such_symbol"));

    t = core_tpl(k);
    c = core_fork(t);
    ck_assert_int_eq(API(tfork_require(c, missing)), 0);
    core_run(c, k->report, &r1);
    c = core_fork(t);
    ck_assert_int_eq(API(tfork_require(c, undef)), 0);
    core_run(c, k->report, &r2);
    t2 = core_tpl(k);
    ck_assert_int_eq(API(tfork_require(t2, missing)), 0);
    c2 = core_fork(t2);
    core_run(c2, k->report, &r3);
    APIV(tfork_free(t));
    core_loop();
    core_failed(&r1, -ELIBACC, missing, dl1);
    core_failed(&r2, -ELIBACC, undef, dl2);
    core_failed(&r3, -ELIBACC, missing, dl1);
    /* t2 is known to have failed now */
    c3 = core_fork(t2);
    core_run(c3, k->report, &r4);
    APIV(tfork_free(t2));
    ck_assert_int_eq(r4.calls, 0);
    core_loop();
    core_failed(&r4, -ELIBACC, missing, dl1);
    core_end();
}
END_TEST

START_TEST(test_err_eval_fail)
{
    const struct core_kind *k = KIND(_i);
    struct core_run r1 = { .mode = R_READ }, r2 = { .mode = R_READ };
    tfork *t, *c, *t2, *c2;

    core_begin(DEF(_i), "err_eval_fail");
    t = core_tpl(k);
    c = core_fork(t);
    ck_assert_int_eq(API(tfork_eval(c, k->fail, 0, NULL)), 0);
    core_run(c, k->report, &r1);
    t2 = core_tpl(k);
    ck_assert_int_eq(API(tfork_eval(t2, k->fail, 0, NULL)), 0);
    c2 = core_fork(t2);
    core_run(c2, k->report, &r2);
    APIV(tfork_free(t));
    APIV(tfork_free(t2));
    core_loop();
    core_failed(&r1, -ECANCELED, k->fail, "3");
    core_failed(&r2, -ECANCELED, k->fail, "3");
    core_end();
}
END_TEST

START_TEST(test_err_eval_missing)
{
    const struct core_kind *k = KIND(_i);
    struct core_run r1 = { .mode = R_READ }, r2 = { .mode = R_READ };
    tfork *t, *c, *c2;

    core_begin(DEF(_i), "err_eval_missing");
    t = core_tpl(k);
    c = core_fork(t);
    ck_assert_int_eq(API(tfork_eval(c, "core_no_such_eval", 0, NULL)), 0);
    core_run(c, k->report, &r1);
    /* a module's function is not found in the test process's copy, nor a
     * static function of the test program in tfork-serve */
    c2 = core_fork(t);
    ck_assert_int_eq(API(tfork_eval(c2, k->copy ? "mod_core_eval_record" :
                                    "core_eval_record", 0, NULL)), 0);
    core_run(c2, k->report, &r2);
    APIV(tfork_free(t));
    core_loop();
    core_failed(&r1, -ENOENT, "'core_no_such_eval'", "eval");
    core_failed(&r2, -ENOENT, k->copy ? "'mod_core_eval_record'" :
                "'core_eval_record'", "eval");
    core_end();
}
END_TEST

/* the template dies (SIGKILL) before it could answer anything */
START_TEST(test_err_template_killed)
{
    const struct core_kind *k = KIND(_i);
    struct core_run r = { .mode = R_READ }, rt = { .mode = R_READ };
    struct core_exit e = { 0 }, et = { 0 };
    char pidstr[32], pidstr2[32];
    tfork *t, *c, *t2;

    core_begin(DEF(_i), "err_template_killed");
    t = core_tpl(k);
    ck_assert_int_eq(API(tfork_eval(t, k->stall, 0, NULL)), 0);
    c = core_fork(t);
    core_on_exit(c, &e);
    core_run(c, k->report, &r);
    t2 = core_tpl(k);
    ck_assert_int_eq(API(tfork_eval(t2, k->stall, 0, NULL)), 0);
    core_on_exit(t2, &et);
    core_run(t2, k->report, &rt);
    snprintf(pidstr, sizeof pidstr, "%d", (int)tfork_pid(t));
    snprintf(pidstr2, sizeof pidstr2, "%d", (int)tfork_pid(t2));
    ck_assert_int_eq(kill(tfork_pid(t), SIGKILL), 0);
    ck_assert_int_eq(kill(tfork_pid(t2), SIGKILL), 0);
    APIV(tfork_free(t));
    core_loop();
    core_failed(&r, -EPIPE, "exited", pidstr);
    core_failed(&rt, -EPIPE, "exited", pidstr2);
    /* c never existed: -1, once; t2's own status is the SIGKILL */
    ck_assert_int_eq(e.calls, 1);
    ck_assert_int_eq(e.status, -1);
    ck_assert_int_eq(et.calls, 1);
    ck_assert_int_eq(e.inside + et.inside, 0);
    ck_assert_int_eq(et.pid, atoi(pidstr2));
    ck_assert(WIFSIGNALED(et.status) && WTERMSIG(et.status) == SIGKILL);
    core_end();
}
END_TEST

/* fork fails in the template copy: injected before tfork_template, so the
 * copy inherits the failing fork (_i: the loop) */
START_TEST(test_err_fork_fail_inherited)
{
    struct core_run r = { .mode = R_READ }, r2 = { .mode = R_READ };
    struct core_exit e = { 0 };
    tfork *t, *c, *c2;

    core_begin(_i, "err_fork_fail_inherited");
    tfork__sys.fork = core_fork_fail_in_copy;
    t = core_tpl(&core_copy);
    tfork__sys.fork = tfork__sys_fork;
    c = core_fork(t);
    core_on_exit(c, &e);
    core_run(c, core_copy.report, &r);
    c2 = core_fork(t);
    core_run(c2, core_copy.report, &r2);
    APIV(tfork_free(t));
    core_loop();
    core_failed(&r, -EAGAIN, "fork", NULL);
    core_failed(&r2, -EAGAIN, "fork", NULL);
    ck_assert_int_eq(e.calls, 1);
    ck_assert_int_eq(e.status, -1);
    core_end();
}
END_TEST

/* fork broken by an eval inside the template, then mended: the failure
 * does not spoil the template; a child whose own fork fails still runs */
START_TEST(test_err_fork_fail_eval)
{
    struct core_run r = { .mode = R_READ }, r2 = { .mode = R_READ },
                    rg = { .mode = R_READ }, rc = { .mode = R_READ };
    struct core_exit e = { 0 };
    tfork *t, *c, *c2, *c3, *g;

    core_begin(_i, "err_fork_fail_eval");
    t = core_tpl(&core_copy);
    ck_assert_int_eq(API(tfork_eval(t, "core_eval_break_fork", 0, NULL)), 0);
    c = core_fork(t);
    core_on_exit(c, &e);
    core_run(c, core_copy.report, &r);
    ck_assert_int_eq(API(tfork_eval(t, "core_eval_mend_fork", 0, NULL)), 0);
    c2 = core_fork(t);
    core_run(c2, core_copy.report, &r2);
    /* only c3's fork is broken: its child fails, c3 itself runs */
    c3 = core_fork(t);
    ck_assert_int_eq(API(tfork_eval(c3, "core_eval_break_fork", 0, NULL)),
                     0);
    g = core_fork(c3);
    core_run(g, core_copy.report, &rg);
    core_run(c3, core_copy.report, &rc);
    APIV(tfork_free(t));
    core_loop();
    core_failed(&r, -EAGAIN, "fork", NULL);
    ck_assert_int_eq(e.calls, 1);
    ck_assert_int_eq(e.status, -1);
    core_ok(&r2);
    core_failed(&rg, -EAGAIN, "fork", NULL);
    core_ok(&rc);
    core_done(&r2);
    core_done(&rc);
    core_end();
}
END_TEST

/* ================================================================ bad input */

START_TEST(test_bad_null)
{
    struct core_run r = { .mode = R_READ };
    struct core_exit e = { 0 };
    char *av[] = { (char *)"true", NULL };
    const char *ev1[] = { "a" };

    core_begin(DEF(_i), "bad_null");
    errno = 0;
    ck_assert_ptr_null(API(tfork_new_exec(NULL)));
    ck_assert_int_eq(errno, EINVAL);
    errno = 0;
    ck_assert_ptr_null(API(tfork_template(NULL)));
    ck_assert_int_eq(errno, EINVAL);
    errno = 0;
    ck_assert_ptr_null(API(tfork_fork(NULL)));
    ck_assert_int_eq(errno, EINVAL);
    errno = 4242;
    ck_assert_int_eq(API(tfork_require(NULL, "x.so")), -EINVAL);
    ck_assert_int_eq(API(tfork_eval(NULL, "f", 1, ev1)), -EINVAL);
    ck_assert_int_eq(API(tfork_send_arg(NULL, "x", 1)), -EINVAL);
    ck_assert_int_eq(API(tfork_send_arg(NULL, NULL, 0)), -EINVAL);
    ck_assert_int_eq(API(tfork_send_fd(NULL, 0)), -EINVAL);
    ck_assert_int_eq(API(tfork_run(NULL, "f", core_run_cb, &r)), -EINVAL);
    ck_assert_int_eq(API(tfork_exec(NULL, "true", av, NULL, core_run_cb, &r)),
                     -EINVAL);
    ck_assert_int_eq(API(tfork_on_exit(NULL, core_exit_cb, &e)), -EINVAL);
    /* errno is left as found by calls that return -errno */
    ck_assert_int_eq(errno, 4242);
    ck_assert_int_eq(tfork_pid(NULL), 0);
    ck_assert_str_eq(tfork_errmsg(NULL), "");
    APIV(tfork_free(NULL));
    core_loop();
    ck_assert_int_eq(r.calls, 0);
    ck_assert_int_eq(e.calls, 0);
    core_end();
}
END_TEST

/* Successful calls leave errno as they found it, constructors included
 * (posix_spawn's clean-up used to leave EINVAL behind); tfork_strerror
 * takes a plain errno value as well as a negated one. */
START_TEST(test_errno_kept)
{
    const struct core_kind *k = KIND(_i);
    tfork *t, *c;

    core_begin(DEF(_i), "errno_kept");
    t = core_tpl(k);            /* checks errno itself */
    errno = 4321;
    c = API(tfork_fork(t));
    ck_assert_ptr_nonnull(c);
    ck_assert_int_eq(errno, 4321);
    ck_assert_int_eq(API(tfork_send_arg(c, "x", 1)), 0);
    ck_assert_int_eq(API(tfork_send_fd(c, 0)), 0);
    ck_assert_int_eq(errno, 4321);
    APIV(tfork_free(c));
    APIV(tfork_free(t));
    ck_assert_int_eq(errno, 4321);
    core_loop();
    ck_assert_str_eq(tfork_strerror(ENOENT), tfork_strerror(-ENOENT));
    ck_assert_str_eq(tfork_strerror(0), "success");
    core_end();
}
END_TEST

/* refused calls on a live handle: -EINVAL and no callback; the handle is
 * unharmed; after tfork_run is accepted nothing more is taken */
START_TEST(test_bad_handle)
{
    const struct core_kind *k = KIND(_i);
    struct core_run r = { .mode = R_READ }, rbad = { .mode = R_READ };
    struct core_exit e = { 0 }, ebad = { 0 };
    const char *withnull[] = { "a", NULL };
    char *av[] = { (char *)"true", NULL };
    int closed = 1000;          /* a number no fd has */
    tfork *t, *c;

    core_begin(DEF(_i), "bad_handle");
    ck_assert_int_eq(fcntl(closed, F_GETFD), -1);
    t = core_tpl(k);
    c = core_fork(t);
    ck_assert_int_eq(API(tfork_require(c, NULL)), -EINVAL);
    ck_assert_int_eq(API(tfork_require(c, "")), -EINVAL);
    ck_assert_int_eq(API(tfork_eval(c, NULL, 0, NULL)), -EINVAL);
    ck_assert_int_eq(API(tfork_eval(c, "", 0, NULL)), -EINVAL);
    ck_assert_int_eq(API(tfork_eval(c, k->rec, -1, NULL)), -EINVAL);
    ck_assert_int_eq(API(tfork_eval(c, k->rec, 1, NULL)), -EINVAL);
    ck_assert_int_eq(API(tfork_eval(c, k->rec, 2, withnull)), -EINVAL);
    ck_assert_int_eq(API(tfork_send_arg(c, NULL, 1)), -EINVAL);
    ck_assert_int_eq(API(tfork_send_fd(c, -1)), -EINVAL);
    ck_assert_int_eq(API(tfork_send_fd(c, -100)), -EINVAL);
    ck_assert_int_eq(API(tfork_send_fd(c, closed)), -EINVAL);
    ck_assert_int_eq(API(tfork_run(c, NULL, core_run_cb, &rbad)), -EINVAL);
    ck_assert_int_eq(API(tfork_run(c, "", core_run_cb, &rbad)), -EINVAL);
    ck_assert_int_eq(API(tfork_run(c, k->report, NULL, &rbad)), -EINVAL);
    ck_assert_int_eq(API(tfork_on_exit(c, NULL, &ebad)), -EINVAL);
    core_on_exit(c, &e);
    ck_assert_int_eq(API(tfork_on_exit(c, core_exit_cb, &ebad)), -EBUSY);
    core_arg(c, "ok", 2);
    core_run(c, k->report, &r);
    /* accepted: the handle takes nothing more */
    ck_assert_int_eq(API(tfork_require(c, tu_testdir("mod_core_basic.so"))),
                     -EINVAL);
    ck_assert_int_eq(API(tfork_eval(c, k->rec, 0, NULL)), -EINVAL);
    ck_assert_int_eq(API(tfork_send_arg(c, "late", 4)), -EINVAL);
    ck_assert_int_eq(API(tfork_send_fd(c, 0)), -EINVAL);
    ck_assert_int_eq(API(tfork_run(c, k->report, core_run_cb, &rbad)),
                     -EINVAL);
    ck_assert_int_eq(API(tfork_exec(c, "true", av, NULL, core_run_cb, &rbad)),
                     -EINVAL);
    ck_assert_int_eq(API(tfork_on_exit(c, core_exit_cb, &ebad)), -EINVAL);
    errno = 0;
    ck_assert_ptr_null(API(tfork_fork(c)));
    ck_assert_int_eq(errno, EINVAL);
    APIV(tfork_free(c));        /* a no-op now: the library owns c */
    APIV(tfork_free(t));
    ck_assert_int_eq(r.calls, 0);
    core_loop();
    core_ok(&r);
    ck_assert_str_eq(core_body(&r), "A 0 2 1 6f6b\n");
    ck_assert_int_eq(rbad.calls, 0);
    ck_assert_int_eq(ebad.calls, 0);
    ck_assert_int_eq(e.calls, 1);
    core_done(&r);
    core_end();
}
END_TEST

/* ================================================================ pid */

START_TEST(test_pid)
{
    const struct core_kind *k = KIND(_i);
    struct core_run r = { .mode = R_READ }, rt = { .mode = R_READ };
    tfork *t, *c, *t2;
    pid_t tp, tp2, pp = 0;

    core_begin(DEF(_i), "pid");
    t = core_tpl(k);            /* checks tfork_pid > 0 and our child */
    tp = tfork_pid(t);
    c = core_fork(t);
    /* the template cannot have answered: the loop has not run */
    ck_assert_int_eq(tfork_pid(c), 0);
    core_run(c, k->report, &r);
    ck_assert_int_eq(tfork_pid(c), 0);
    t2 = core_tpl(k);
    tp2 = tfork_pid(t2);
    core_run(t2, k->report, &rt);
    ck_assert_int_eq(tfork_pid(t2), tp2);
    ck_assert_int_eq(tfork_pid(t), tp);
    ck_assert_int_ne(tu_proc_state(tp, &pp, NULL), 0);
    ck_assert_int_eq(pp, getpid());
    APIV(tfork_free(t));
    core_loop();
    core_ok(&r);                /* tfork_pid(c) in the cb == child's getpid */
    ck_assert_int_ne(r.rpid, tp);
    ck_assert_int_eq(r.rppid, tp);
    core_ok(&rt);
    ck_assert_int_eq(rt.rpid, tp2);
    core_done(&r);
    core_done(&rt);
    core_end();
}
END_TEST

/* ================================================================ on_exit */

/* the run function's return value is the exit status; the template freed
 * right after run lives until that exit was reported, then goes */
START_TEST(test_exit_status_after_free)
{
    const struct core_kind *k = KIND(_i);
    struct core_run r = { .mode = R_LINE };
    struct core_exit e = { 0 };
    tfork *t, *c;
    pid_t tp;

    core_begin(DEF(_i), "exit_status_after_free");
    t = core_tpl(k);
    tp = tfork_pid(t);
    c = core_fork(t);
    e.tpl = tp;
    core_on_exit(c, &e);
    core_run(c, k->exit7, &r);
    APIV(tfork_free(t));
    core_loop();
    core_ok(&r);
    ck_assert_int_eq(e.calls, 1);
    ck_assert_int_eq(e.inside, 0);
    ck_assert_int_eq(e.pid, r.rpid);
    ck_assert_msg(WIFEXITED(e.status) && WEXITSTATUS(e.status) == 7,
                  "status %#x", e.status);
    /* the template was alive when the exit was reported */
    ck_assert_msg(e.tplstate != 0 && e.tplstate != 'Z', "template state %c",
                  e.tplstate ? e.tplstate : '-');
    core_done(&r);
    core_end();
    /* and is gone now (core_end waited for it and it was reaped) */
    ck_assert_int_eq(tu_proc_state(tp, NULL, NULL), 0);
    ck_assert_int_eq(kill(tp, 0), -1);
    ck_assert_int_eq(errno, ESRCH);
}
END_TEST

START_TEST(test_exit_sigkill)
{
    const struct core_kind *k = KIND(_i);
    struct core_run r = { .mode = R_KILL };
    struct core_exit e = { 0 };
    tfork *t, *c;

    core_begin(DEF(_i), "exit_sigkill");
    t = core_tpl(k);
    c = core_fork(t);
    core_on_exit(c, &e);
    core_run(c, k->block, &r);
    APIV(tfork_free(t));
    core_loop();
    core_ok(&r);
    ck_assert_int_eq(e.calls, 1);
    ck_assert_int_eq(e.pid, r.rpid);
    ck_assert_msg(WIFSIGNALED(e.status) && WTERMSIG(e.status) == SIGKILL,
                  "status %#x", e.status);
    core_done(&r);
    core_end();
}
END_TEST

/* on_exit of a template run itself (the client reaps it) */
START_TEST(test_exit_template_itself)
{
    const struct core_kind *k = KIND(_i);
    struct core_run r = { .mode = R_LINE };
    struct core_exit e = { 0 };
    tfork *t;

    core_begin(DEF(_i), "exit_template_itself");
    t = core_tpl(k);
    core_on_exit(t, &e);
    core_run(t, k->exit7, &r);
    core_loop();
    core_ok(&r);
    ck_assert_int_eq(e.calls, 1);
    ck_assert_int_eq(e.pid, r.rpid);
    ck_assert_msg(WIFEXITED(e.status) && WEXITSTATUS(e.status) == 7,
                  "status %#x", e.status);
    core_done(&r);
    core_end();
}
END_TEST

/* on_exit of a child freed unrun: it exits, reported once */
START_TEST(test_exit_freed_unrun)
{
    const struct core_kind *k = KIND(_i);
    struct core_exit e = { 0 };
    tfork *t, *c;

    core_begin(DEF(_i), "exit_freed_unrun");
    t = core_tpl(k);
    c = core_fork(t);
    core_on_exit(c, &e);
    APIV(tfork_free(c));
    APIV(tfork_free(t));
    core_loop();
    ck_assert_int_eq(e.calls, 1);
    ck_assert_int_eq(e.inside, 0);
    ck_assert_int_gt(e.pid, 0);
    ck_assert_msg(WIFEXITED(e.status), "status %#x", e.status);
    core_end();
}
END_TEST

/* ================================================================ ev_run */

/* an idle template keeps nothing alive; ev_run returns by itself once
 * the work is done (the guard timer is unreferenced) */
START_TEST(test_evrun_returns)
{
    const struct core_kind *k = KIND(_i);
    struct core_run r = { .mode = R_READ };
    tfork *t, *c;

    core_begin(DEF(_i), "evrun_returns");
    t = core_tpl(k);
    core_loop();                /* idle template: returns */
    c = core_fork(t);
    core_run(c, k->report, &r);
    core_loop();                /* t still ours, unfreed */
    core_ok(&r);
    core_done(&r);
    memset(&r, 0, sizeof r);
    r.mode = R_READ;
    c = core_fork(t);
    core_run(c, k->report, &r);
    APIV(tfork_free(t));
    core_loop();
    core_ok(&r);
    core_done(&r);
    core_end();
}
END_TEST

static void core_close_kept(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct core_run *r = w->data;

    (void)loop;
    (void)revents;
    close(r->kept);
    r->kept = -1;
}

/* a run in flight (slow template) and a pending on_exit keep ev_run
 * running: it does not return before their callbacks */
START_TEST(test_evrun_not_early)
{
    const struct core_kind *k = KIND(_i);
    struct core_run r = { .mode = R_READ }, r2 = { .mode = R_KEEP };
    struct core_exit e = { 0 };
    const char *ms[] = { "400" };
    ev_timer closer;
    tfork *t, *c, *t2, *c2;

    core_begin(DEF(_i), "evrun_not_early");
    t = core_tpl(k);
    ck_assert_int_eq(API(tfork_eval(t, k->sleep, 1, ms)), 0);
    c = core_fork(t);
    core_run(c, k->report, &r);
    APIV(tfork_free(t));
    core_loop();
    ck_assert_int_eq(r.calls, 1);
    core_ok(&r);
    core_done(&r);

    /* the child exits 400 ms after the run callback, when the timer
     * closes its socket; only the pending on_exit keeps the loop then */
    t2 = core_tpl(k);
    c2 = core_fork(t2);
    core_on_exit(c2, &e);
    core_run(c2, k->exit7, &r2);
    APIV(tfork_free(t2));
    ev_timer_init(&closer, core_close_kept, 0.4, 0.);
    closer.data = &r2;
    r2.kept = -1;
    /* started once the run callback handed the fd over */
    while (r2.calls == 0) {
        ck_assert_int_eq(tu_in_api, 0);
        ev_run(T.loop, EVRUN_ONCE);
    }
    core_ok(&r2);
    ck_assert_int_ge(r2.kept, 0);
    ev_timer_start(T.loop, &closer);
    core_loop();
    ck_assert_int_eq(r2.kept, -1);
    ck_assert_int_eq(e.calls, 1);
    ck_assert_msg(WIFEXITED(e.status) && WEXITSTATUS(e.status) == 7,
                  "status %#x", e.status);
    core_done(&r2);
    core_end();
}
END_TEST

/* ================================================================ more */

/* a child forked from a template already known to have failed: on_exit
 * is accepted (the header allows only -EINVAL/-EBUSY) and fires once with
 * -1, the run fails with the template's error */
START_TEST(test_err_failed_template_on_exit)
{
    const struct core_kind *k = KIND(_i);
    struct core_run r = { .mode = R_READ }, r2 = { .mode = R_READ };
    struct core_exit e = { 0 };
    const char *missing = "/nonexistent/mod_core_missing2.so";
    tfork *t, *c;
    int rc;

    core_begin(DEF(_i), "err_failed_template_on_exit");
    t = core_tpl(k);
    ck_assert_int_eq(API(tfork_require(t, missing)), 0);
    c = core_fork(t);
    core_run(c, k->report, &r);
    core_loop();
    core_failed(&r, -ELIBACC, missing, NULL);
    c = core_fork(t);
    rc = API(tfork_on_exit(c, core_exit_cb, &e));
    core_run(c, k->report, &r2);
    APIV(tfork_free(t));
    core_loop();
    core_failed(&r2, -ELIBACC, missing, NULL);
    ck_assert_msg(rc == 0, "tfork_on_exit on a child of a failed template "
                  "returned %d (%s)", rc, tfork_strerror(rc));
    ck_assert_int_eq(e.calls, 1);
    ck_assert_int_eq(e.status, -1);
    core_end();
}
END_TEST

/* the template dies while its child runs: the child's on_exit fires once
 * with -1 (nobody can learn its status any more) */
START_TEST(test_exit_template_killed_running)
{
    const struct core_kind *k = KIND(_i);
    struct core_run r = { .mode = R_KEEP };
    struct core_exit e = { 0 };
    tfork *t, *c;

    core_begin(DEF(_i), "exit_template_killed_running");
    t = core_tpl(k);
    c = core_fork(t);
    core_on_exit(c, &e);
    core_run(c, k->block, &r);
    while (r.calls == 0) {
        ck_assert_int_eq(tu_in_api, 0);
        ev_run(T.loop, EVRUN_ONCE);
    }
    core_ok(&r);
    ck_assert_int_eq(kill(tfork_pid(t), SIGKILL), 0);
    APIV(tfork_free(t));
    core_loop();
    ck_assert_int_eq(e.calls, 1);
    ck_assert_int_eq(e.status, -1);
    /* the child lives on, an orphan (ours: we are a subreaper) */
    ck_assert_int_eq(kill(r.rpid, SIGKILL), 0);
    close(r.kept);
    core_done(&r);
    core_end();
}
END_TEST

/* a freed template stays for its unrun children: run them later */
START_TEST(test_free_then_run_child)
{
    const struct core_kind *k = KIND(_i);
    struct core_run r = { .mode = R_READ };
    struct core_exit e = { 0 };
    tfork *t, *c;
    pid_t tp;

    core_begin(DEF(_i), "free_then_run_child");
    t = core_tpl(k);
    tp = tfork_pid(t);
    core_arg(t, "t", 1);
    c = core_fork(t);
    APIV(tfork_free(t));
    core_loop();
    ck_assert_msg(tu_proc_state(tp, NULL, NULL) != 0 &&
                  tu_proc_state(tp, NULL, NULL) != 'Z',
                  "the template went while its child was unrun");
    core_arg(c, "c", 1);
    core_on_exit(c, &e);
    core_run(c, k->report, &r);
    core_loop();
    core_ok(&r);
    ck_assert_str_eq(core_body(&r), "A 0 1 1 74\nA 1 1 1 63\n");
    ck_assert_int_eq(r.rppid, tp);
    ck_assert_int_eq(e.calls, 1);
    ck_assert(WIFEXITED(e.status) && WEXITSTATUS(e.status) == 0);
    core_done(&r);
    core_end();
}
END_TEST

struct core_nest {
    const struct core_kind *k;
    tfork *t;
    struct core_run r1, r2;
    int r2_during;      /* r2's callback came inside the nested calls */
};

/* a run callback that forks, runs and frees (API calls inside a
 * callback) */
static void core_nest_cb(tfork *p, int fd, int err, void *data)
{
    struct core_nest *n = data;
    tfork *c2;

    core_run_cb(p, fd, err, &n->r1);
    APIV(tfork_free(p));        /* a no-op: the library frees p */
    c2 = core_fork(n->t);
    core_arg(c2, "n", 1);
    core_run(c2, n->k->report, &n->r2);
    APIV(tfork_free(n->t));
    n->t = NULL;
    n->r2_during = n->r2.calls;
}

START_TEST(test_api_in_callback)
{
    struct core_nest n = { 0 };
    tfork *c;

    n.k = KIND(_i);
    n.r1.mode = n.r2.mode = R_READ;
    core_begin(DEF(_i), "api_in_callback");
    n.t = core_tpl(n.k);
    c = core_fork(n.t);
    ck_assert_int_eq(API(tfork_run(c, n.k->report, core_nest_cb, &n)), 0);
    core_loop();
    core_ok(&n.r1);
    ck_assert_int_eq(n.r2_during, 0);
    core_ok(&n.r2);
    ck_assert_str_eq(core_body(&n.r2), "A 0 1 1 6e\n");
    core_done(&n.r1);
    core_done(&n.r2);
    core_end();
}
END_TEST

/* a copy of this program requires the module: its dlsym'ed and its
 * TFORK_EXPORT'ed functions are found there (_i: the loop) */
START_TEST(test_copy_requires_module)
{
    struct core_run r = { .mode = R_READ }, r2 = { .mode = R_LINE };
    const char *a[] = { "m" };
    tfork *t, *c, *c2;

    core_begin(_i, "copy_requires_module");
    t = core_tpl(&core_copy);
    ck_assert_int_eq(API(tfork_require(t, tu_testdir("mod_core_basic.so"))),
                     0);
    ck_assert_int_eq(API(tfork_eval(t, "mod_core_eval_record", 1, a)), 0);
    c = core_fork(t);
    core_run(c, "mod_core_report", &r);
    c2 = core_fork(t);
    core_run(c2, "mod_core_exit7", &r2);
    APIV(tfork_free(t));
    core_loop();
    core_ok(&r);
    ck_assert_str_eq(core_body(&r), "E 1 [m]\n");
    core_ok(&r2);
    core_done(&r);
    core_done(&r2);
    core_end();
}
END_TEST

static int core_no_pidfd(pid_t pid, unsigned flags)
{
    (void)pid;
    (void)flags;
    errno = ENOSYS;
    return -1;
}

/* a private loop on a kernel without pidfd_open: templates are still
 * reaped and on_exit of a template run itself still fires (_i: kind) */
START_TEST(test_reap_without_pidfd)
{
    const struct core_kind *k = KIND(_i);
    struct core_run r = { .mode = R_READ }, rt = { .mode = R_LINE };
    struct core_exit et = { 0 };
    tfork *t, *c, *t2;

    core_begin(0, "reap_without_pidfd");
    tfork__sys.pidfd_open = core_no_pidfd;
    t = core_tpl(k);
    c = core_fork(t);
    core_run(c, k->report, &r);
    APIV(tfork_free(t));
    t2 = core_tpl(k);
    core_on_exit(t2, &et);
    core_run(t2, k->exit7, &rt);
    core_loop();
    core_ok(&r);
    core_ok(&rt);
    ck_assert_int_eq(et.calls, 1);
    ck_assert_msg(WIFEXITED(et.status) && WEXITSTATUS(et.status) == 7,
                  "status %#x", et.status);
    core_done(&r);
    core_done(&rt);
    core_end();
    tfork__sys.pidfd_open = tfork__sys_pidfd_open;
}
END_TEST

static void core_kill_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    kill(*(pid_t *)w->data, SIGKILL);
}

/* the template dies while 64 MiB of commands still wait to be sent: the
 * run fails with -EPIPE, no SIGPIPE, nothing hangs */
START_TEST(test_err_killed_with_queue)
{
    const struct core_kind *k = KIND(_i);
    struct core_run r = { .mode = R_READ }, rt = { .mode = R_READ };
    size_t n = TFORK_ARG_MAX;
    char *b = calloc(1, n);
    ev_timer killer;
    pid_t tp;
    tfork *t, *c;

    core_begin(DEF(_i), "err_killed_with_queue");
    ck_assert_ptr_nonnull(b);
    t = core_tpl(k);
    tp = tfork_pid(t);
    ck_assert_int_eq(API(tfork_eval(t, k->stall, 0, NULL)), 0);
    core_arg(t, b, n);
    free(b);
    c = core_fork(t);
    core_run(c, k->report, &r);
    core_run(t, k->report, &rt);
    ev_timer_init(&killer, core_kill_cb, 0.2, 0.);
    killer.data = &tp;
    ev_timer_start(T.loop, &killer);
    core_loop();
    core_failed(&r, -EPIPE, "exited", NULL);
    core_failed(&rt, -EPIPE, "exited", NULL);
    core_end();
}
END_TEST

/* the run function reads its socket: the caller's bytes come first, with
 * nothing of the library's before them, in both directions */
START_TEST(test_run_socket_clean)
{
    const struct core_kind *k = KIND(_i);
    struct core_run r = { .mode = R_SAY }, rt = { .mode = R_SAY };
    tfork *t, *c;

    core_begin(DEF(_i), "run_socket_clean");
    t = core_tpl(k);
    core_arg(t, "x", 1);
    c = core_fork(t);
    core_arg(c, "y", 1);
    core_run(c, k->sockecho, &r);
    core_run(t, k->sockecho, &rt);
    core_loop();
    core_ok(&r);
    ck_assert_str_eq(r.out, "got:hello");
    core_ok(&rt);
    ck_assert_str_eq(rt.out, "got:hello");
    core_done(&r);
    core_done(&rt);
    core_end();
}
END_TEST

struct core_freer {
    struct core_exit e;
    tfork *t;
};

static void core_free_exit_cb(pid_t pid, int status, void *data)
{
    struct core_freer *f = data;

    core_exit_cb(pid, status, &f->e);
    APIV(tfork_free(f->t));
    f->t = NULL;
}

/* the template freed from inside its child's on_exit */
START_TEST(test_free_in_exit_cb)
{
    const struct core_kind *k = KIND(_i);
    struct core_run r = { .mode = R_READ };
    struct core_freer f = { { 0 }, NULL };
    tfork *c;

    core_begin(DEF(_i), "free_in_exit_cb");
    f.t = core_tpl(k);
    c = core_fork(f.t);
    ck_assert_int_eq(API(tfork_on_exit(c, core_free_exit_cb, &f)), 0);
    core_run(c, k->report, &r);
    core_loop();
    core_ok(&r);
    ck_assert_int_eq(f.e.calls, 1);
    ck_assert_ptr_null(f.t);
    core_done(&r);
    core_end();
}
END_TEST

#define CORE_MANY 24
#define CORE_MANY_G 8

/* many children and grandchildren at once, each with on_exit: every run
 * callback and every exit exactly once, the right pid for each */
START_TEST(test_many_children)
{
    const struct core_kind *k = KIND(_i);
    static struct core_run r[CORE_MANY + CORE_MANY_G + 1];
    static struct core_exit e[CORE_MANY + CORE_MANY_G + 1];
    tfork *t, *c, *x;
    int n = 0;

    core_begin(DEF(_i), "many_children");
    memset(r, 0, sizeof r);
    memset(e, 0, sizeof e);
    t = core_tpl(k);
    c = core_fork(t);
    for (int i = 0; i < CORE_MANY; i++, n++) {
        x = core_fork(t);
        core_on_exit(x, &e[n]);
        core_run(x, k->report, &r[n]);
    }
    for (int i = 0; i < CORE_MANY_G; i++, n++) {
        x = core_fork(c);
        core_on_exit(x, &e[n]);
        core_run(x, k->report, &r[n]);
    }
    core_on_exit(c, &e[n]);
    core_run(c, k->report, &r[n]);
    n++;
    APIV(tfork_free(t));
    core_loop();
    for (int i = 0; i < n; i++) {
        core_ok(&r[i]);
        ck_assert_msg(e[i].calls == 1, "child %d: %d exits", i, e[i].calls);
        ck_assert_int_eq(e[i].pid, r[i].rpid);
        ck_assert_msg(WIFEXITED(e[i].status) && WEXITSTATUS(e[i].status) == 0,
                      "child %d: status %#x", i, e[i].status);
        core_done(&r[i]);
    }
    core_end();
}
END_TEST

/* names beyond the protocol's caps are refused, with no callback */
START_TEST(test_bad_too_big)
{
    const struct core_kind *k = KIND(_i);
    struct core_run r = { .mode = R_READ }, rbad = { .mode = R_READ };
    size_t n = (1u << 20) + 1;
    char *name = malloc(n + 1);
    const char **many = calloc(65537, sizeof *many);
    tfork *t, *c;

    core_begin(DEF(_i), "bad_too_big");
    ck_assert_ptr_nonnull(name);
    ck_assert_ptr_nonnull(many);
    memset(name, 'a', n);
    name[n] = 0;
    for (int i = 0; i < 65537; i++)
        many[i] = "m";
    t = core_tpl(k);
    c = core_fork(t);
    ck_assert_int_eq(API(tfork_require(c, name)), -E2BIG);
    ck_assert_int_eq(API(tfork_eval(c, name, 0, NULL)), -E2BIG);
    ck_assert_int_eq(API(tfork_eval(c, k->rec, 65537, many)), -E2BIG);
    ck_assert_int_eq(API(tfork_run(c, name, core_run_cb, &rbad)), -E2BIG);
    free(name);
    free(many);
    core_run(c, k->report, &r);
    APIV(tfork_free(t));
    core_loop();
    core_ok(&r);
    ck_assert_str_eq(core_body(&r), "");
    ck_assert_int_eq(rbad.calls, 0);
    core_done(&r);
    core_end();
}
END_TEST

#define CORE_DYING 12

/* children that die while being prepared (before run): whether the
 * client sees the EOF of their socket before or after their FORKED, the
 * run fails once with -EPIPE and on_exit tells the real status once */
START_TEST(test_err_child_died)
{
    const struct core_kind *k = KIND(_i);
    struct core_run r[CORE_DYING];
    struct core_exit e[CORE_DYING];
    tfork *t, *c;

    core_begin(DEF(_i), "err_child_died");
    memset(r, 0, sizeof r);
    memset(e, 0, sizeof e);
    t = core_tpl(k);
    for (int i = 0; i < CORE_DYING; i++) {
        c = core_fork(t);
        ck_assert_int_eq(API(tfork_eval(c, k->exit5, 0, NULL)), 0);
        core_on_exit(c, &e[i]);
        core_run(c, k->report, &r[i]);
    }
    APIV(tfork_free(t));
    core_loop();
    for (int i = 0; i < CORE_DYING; i++) {
        char pid[32];

        snprintf(pid, sizeof pid, "process %d ", (int)e[i].pid);
        core_failed(&r[i], -EPIPE, "exited", pid);
        ck_assert_msg(e[i].calls == 1, "child %d: %d exits", i, e[i].calls);
        ck_assert_msg(WIFEXITED(e[i].status) && WEXITSTATUS(e[i].status) == 5,
                      "child %d: status %#x", i, e[i].status);
    }
    core_end();
}
END_TEST

/* on_exit set only after the child is known to have died (its status may
 * already wait in the client): fires once with the real status; a run
 * then fails with -EPIPE */
START_TEST(test_exit_set_late)
{
    const struct core_kind *k = KIND(_i);
    struct core_run r = { .mode = R_READ };
    struct core_exit e = { 0 };
    double deadline;
    tfork *t, *c;
    pid_t pid;

    core_begin(DEF(_i), "exit_set_late");
    t = core_tpl(k);
    c = core_fork(t);
    ck_assert_int_eq(API(tfork_eval(c, k->exit5, 0, NULL)), 0);
    deadline = tu_now() + 20.;
    while ((pid = tfork_pid(c)) == 0 || tu_proc_state(pid, NULL, NULL) != 0) {
        ck_assert_msg(tu_now() < deadline, "child did not die");
        ev_run(T.loop, EVRUN_NOWAIT);
        usleep(2000);
    }
    for (int i = 0; i < 20; i++) {
        ev_run(T.loop, EVRUN_NOWAIT);
        usleep(2000);
    }
    core_on_exit(c, &e);
    core_run(c, k->report, &r);
    APIV(tfork_free(t));
    ck_assert_int_eq(e.calls + r.calls, 0);
    core_loop();
    core_failed(&r, -EPIPE, "exited", NULL);
    ck_assert_int_eq(e.calls, 1);
    ck_assert_int_eq(e.inside, 0);
    ck_assert_int_eq(e.pid, pid);
    ck_assert_msg(WIFEXITED(e.status) && WEXITSTATUS(e.status) == 5,
                  "status %#x", e.status);
    core_end();
}
END_TEST

/* ================================================================ suite */

static Suite *core_suite(void)
{
    Suite *s = suite_create("core");
    TCase *tc;

    tc = tcase_create("commands");
    tcase_set_timeout(tc, CORE_TIMEOUT);
    tcase_add_loop_test(tc, test_require_run, 0, 4);
    tcase_add_loop_test(tc, test_run_template_itself, 0, 4);
    tcase_add_loop_test(tc, test_eval_argv, 0, 4);
    tcase_add_loop_test(tc, test_args_order, 0, 4);
    tcase_add_loop_test(tc, test_binary_args, 0, 4);
    tcase_add_loop_test(tc, test_empty_args, 0, 4);
    tcase_add_loop_test(tc, test_big_arg, 0, 4);
    tcase_add_loop_test(tc, test_fd_pipe_socket, 0, 4);
    tcase_add_loop_test(tc, test_fork_grandchild, 0, 4);
    tcase_add_loop_test(tc, test_free_parent_after_grandchild_exit, 0, 4);
    tcase_add_loop_test(tc, test_free_then_run_child, 0, 4);
    tcase_add_loop_test(tc, test_api_in_callback, 0, 4);
    tcase_add_loop_test(tc, test_copy_requires_module, 0, 2);
    tcase_add_loop_test(tc, test_run_socket_clean, 0, 4);
    tcase_add_loop_test(tc, test_many_children, 0, 4);
    suite_add_tcase(s, tc);

    tc = tcase_create("errors");
    tcase_set_timeout(tc, CORE_TIMEOUT);
    tcase_add_loop_test(tc, test_err_unknown_run, 0, 4);
    tcase_add_loop_test(tc, test_err_missing_module, 0, 4);
    tcase_add_loop_test(tc, test_err_eval_fail, 0, 4);
    tcase_add_loop_test(tc, test_err_eval_missing, 0, 4);
    tcase_add_loop_test(tc, test_err_template_killed, 0, 4);
    tcase_add_loop_test(tc, test_err_fork_fail_inherited, 0, 2);
    tcase_add_loop_test(tc, test_err_fork_fail_eval, 0, 2);
    tcase_add_loop_test(tc, test_err_failed_template_on_exit, 0, 4);
    tcase_add_loop_test(tc, test_err_killed_with_queue, 0, 4);
    tcase_add_loop_test(tc, test_err_child_died, 0, 4);
    suite_add_tcase(s, tc);

    tc = tcase_create("bad_input");
    tcase_set_timeout(tc, CORE_TIMEOUT);
    tcase_add_loop_test(tc, test_bad_null, 0, 4);
    tcase_add_loop_test(tc, test_errno_kept, 0, 4);
    tcase_add_loop_test(tc, test_bad_handle, 0, 4);
    tcase_add_loop_test(tc, test_bad_too_big, 0, 4);
    suite_add_tcase(s, tc);

    tc = tcase_create("pid");
    tcase_set_timeout(tc, CORE_TIMEOUT);
    tcase_add_loop_test(tc, test_pid, 0, 4);
    suite_add_tcase(s, tc);

    tc = tcase_create("on_exit");
    tcase_set_timeout(tc, CORE_TIMEOUT);
    tcase_add_loop_test(tc, test_exit_status_after_free, 0, 4);
    tcase_add_loop_test(tc, test_exit_sigkill, 0, 4);
    tcase_add_loop_test(tc, test_exit_template_itself, 0, 4);
    tcase_add_loop_test(tc, test_exit_freed_unrun, 0, 4);
    tcase_add_loop_test(tc, test_exit_template_killed_running, 0, 4);
    tcase_add_loop_test(tc, test_free_in_exit_cb, 0, 4);
    tcase_add_loop_test(tc, test_exit_set_late, 0, 4);
    suite_add_tcase(s, tc);

    tc = tcase_create("ev_run");
    tcase_set_timeout(tc, CORE_TIMEOUT);
    tcase_add_loop_test(tc, test_evrun_returns, 0, 4);
    tcase_add_loop_test(tc, test_evrun_not_early, 0, 4);
    tcase_add_loop_test(tc, test_reap_without_pidfd, 0, 2);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(core_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
