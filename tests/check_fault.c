/* check_fault.c: faults from outside -- killed templates, children and
 * clients, exhausted descriptor limits, a send path that writes one byte
 * or refuses every other call, a template that cannot read for a while,
 * malformed frames on both ends of a socket, and a pool whose workers die
 * and whose forks fail -- and what a user sees of them: every accepted
 * request answered exactly once, with the error code and message the
 * design promises, promptly, and no descriptor or process left behind.
 *
 * What other suites already cover is not repeated here (see the notes at
 * each TCase).  Loop tests: _i bit 0 picks the template kind (0
 * tfork-serve + tests/mod_core_basic.so, 1 a tfork_template copy of this
 * program), bit 1 the loop (0 ev_loop_new, 1 ev_default_loop), unless a
 * test says otherwise.  The test process is a child subreaper, so any
 * process of the tree that outlives its parent lands here and is seen. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/sockios.h>
#include <ev.h>

#include "tfork.h"
#include "tfork-int.h"
#include "tfork/pool.h"
#include "core_report.h"
#include "testutil.h"
#include "under_valgrind.h"

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

#define FAULT_GUARD 60.         /* seconds before a hung loop fails */
#define FAULT_TIMEOUT 120       /* Check's own limit per test */
#define FAULT_SETTLE 20.        /* seconds for processes to go away */
#define FAULT_MAXTPL 16
/* The bound: callbacks after a template's death, processes after
 * their client's. */
#define FAULT_DEADLINE 1.0
#define MiB (1024u * 1024u)

/* ---------------------------------------------------------------- the
 * functions copies of this program run (found through TFORK_EXPORT) */

static int fault_report(int fd, int argc, const tfork_arg *argv)
{
    return core_report(fd, argc, argv, "") < 0 ? 1 : 0;
}
TFORK_EXPORT(fault_report);

/* Answers "got:<data>" once the client shut its end for writing. */
static int fault_sockecho(int fd, int argc, const tfork_arg *argv)
{
    (void)argc;
    (void)argv;
    return core_sockecho(fd);
}
TFORK_EXPORT(fault_sockecho);

static int fault_eval_block(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    for (;;)
        pause();
    return 0;
}
TFORK_EXPORT(fault_eval_block);

/* ---------------------------------------------------------------- kinds */

struct fault_kind {
    int copy;                   /* tfork_template, else tfork_new_exec */
    const char *name;
    const char *report, *sockecho, *block;  /* run; block is an eval */
};

static const struct fault_kind fault_exec = {
    0, "tfork-serve", "mod_core_report", "mod_core_sockecho",
    "mod_core_eval_block",
};

static const struct fault_kind fault_copy = {
    1, "template copy", "fault_report", "fault_sockecho", "fault_eval_block",
};

#define KIND(i) (((i) & 1) ? &fault_copy : &fault_exec)
#define DEF(i) (((i) >> 1) & 1)

/* ---------------------------------------------------------------- state */

static struct {
    struct ev_loop *loop;
    int fds0;                   /* open fds when the test began */
    const char *what;
    ev_timer guard;
    pid_t tpl[FAULT_MAXTPL];    /* templates: the library reaps these */
    int ntpl;
    pid_t main_pid;             /* the test process */
} T;

static void fault_guard_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    ck_abort_msg("%s: the loop still runs after %.0f s", T.what, FAULT_GUARD);
}

static void fault_begin(int def, const char *what)
{
    memset(&T, 0, sizeof T);
    T.what = what;
    T.main_pid = getpid();
    T.fds0 = tu_subreaper();
    T.loop = tu_loop_for(def);
    tu_guard_start(T.loop, &T.guard, fault_guard_cb, FAULT_GUARD);
}

static void fault_end(void)
{
    tu_settle(T.loop, FAULT_SETTLE, T.tpl, T.ntpl, NULL, T.what);
    tu_close_loop(T.loop, &T.guard, T.fds0, T.what);
    T.loop = NULL;
}

static void fault_add_tpl(pid_t pid)
{
    ck_assert_int_gt(pid, 0);
    ck_assert_int_lt(T.ntpl, FAULT_MAXTPL);
    T.tpl[T.ntpl++] = pid;
}

static tfork *fault_tpl(const struct fault_kind *k)
{
    tfork *t = k->copy ? tfork_template(T.loop) : tfork_new_exec(T.loop);

    ck_assert_msg(t != NULL, "%s: %s: %s", T.what, k->name, strerror(errno));
    fault_add_tpl(tfork_pid(t));
    if (!k->copy)
        ck_assert_int_eq(tfork_require(t, tu_testdir("mod_core_basic.so")),
                         0);
    return t;
}

static tfork *fault_fork(tfork *p)
{
    tfork *c = API(tfork_fork(p));

    ck_assert_msg(c != NULL, "%s: tfork_fork: %s", T.what, strerror(errno));
    return c;
}

/* Reads fd to EOF (or its first line) within secs; malloc'ed, NUL-ended. */
static char *fault_read(int fd, int line, double secs)
{
    return tu_read(fd, line, secs, T.what, NULL);
}

/* ---------------------------------------------------------------- run
 * and exit callbacks */

enum { R_READ, R_KEEP };

struct fault_run {
    int mode;           /* R_READ: read to EOF and close; R_KEEP: keep fd */
    int calls, inside;
    int fd, err;
    pid_t pid;
    double at;          /* tu_now() in the callback */
    char msg[1024];
    char *out;
    int kept;
};

static void fault_run_cb(tfork *p, int fd, int err, void *data)
{
    struct fault_run *r = data;

    r->calls++;
    r->inside += tu_in_api > 0;
    r->at = tu_now();
    r->fd = fd;
    r->err = err;
    r->pid = tfork_pid(p);
    snprintf(r->msg, sizeof r->msg, "%s", tfork_errmsg(p));
    if (fd < 0)
        return;
    if (r->mode == R_KEEP) {
        r->kept = fd;
        return;
    }
    free(r->out);
    r->out = fault_read(fd, 0, 30.);
    close(fd);
}

struct fault_exit {
    int calls, inside;
    pid_t pid;
    int status;
    double at;
};

static void fault_exit_cb(pid_t pid, int status, void *data)
{
    struct fault_exit *e = data;

    e->calls++;
    e->inside += tu_in_api > 0;
    e->pid = pid;
    e->status = status;
    e->at = tu_now();
}

static void fault_run(tfork *p, const char *func, struct fault_run *r)
{
    int e = API(tfork_run(p, func, fault_run_cb, r));

    ck_assert_msg(e == 0, "%s: tfork_run(%s): %s", T.what, func,
                  tfork_strerror(e));
}

static void fault_on_exit(tfork *p, struct fault_exit *e)
{
    ck_assert_int_eq(API(tfork_on_exit(p, fault_exit_cb, e)), 0);
}

/* One callback, from the loop, fd -1, err and exactly msg. */
static void fault_failed(const struct fault_run *r, int err, const char *msg)
{
    ck_assert_msg(r->calls == 1, "%s: %d run callbacks", T.what, r->calls);
    ck_assert_int_eq(r->inside, 0);
    ck_assert_msg(r->err == err, "%s: err %d (%s), expected %d (%s); '%s'",
                  T.what, r->err, tfork_strerror(r->err), err,
                  tfork_strerror(err), r->msg);
    ck_assert_int_eq(r->fd, -1);
    ck_assert_str_eq(r->msg, msg);
}

/* One callback, from the loop, with the socket. */
static void fault_ok(const struct fault_run *r)
{
    ck_assert_msg(r->calls == 1, "%s: %d run callbacks", T.what, r->calls);
    ck_assert_int_eq(r->inside, 0);
    ck_assert_msg(r->err == 0, "%s: run failed: %d %s", T.what, r->err,
                  r->msg);
    ck_assert_str_eq(r->msg, "");
    ck_assert_int_gt(r->pid, 0);
}

/* The report's first line ("P pid ppid nfds"); body after it. */
static const char *fault_body(const struct fault_run *r, pid_t *pid,
                              pid_t *ppid)
{
    int a = 0, b = 0, n = 0;
    const char *nl;

    ck_assert_ptr_nonnull(r->out);
    ck_assert_msg(sscanf(r->out, "P %d %d %d", &a, &b, &n) == 3,
                  "%s: bad report '%s'", T.what, r->out);
    if (pid)
        *pid = a;
    if (ppid)
        *ppid = b;
    nl = strchr(r->out, '\n');
    ck_assert_ptr_nonnull(nl);
    return nl + 1;
}

static void fault_done(struct fault_run *r)
{
    free(r->out);
    r->out = NULL;
}

/* Every run callback and on_exit has come, the last one at the latest
 * FAULT_DEADLINE after t0. */
static double fault_latest(const struct fault_run *r, int nr,
                           const struct fault_exit *e, int ne)
{
    double last = 0;

    for (int i = 0; i < nr; i++)
        if (r[i].at > last)
            last = r[i].at;
    for (int i = 0; i < ne; i++)
        if (e[i].at > last)
            last = e[i].at;
    return last;
}

static int fault_all_called(const struct fault_run *r, int nr,
                            const struct fault_exit *e, int ne)
{
    for (int i = 0; i < nr; i++)
        if (!r[i].calls)
            return 0;
    for (int i = 0; i < ne; i++)
        if (!e[i].calls)
            return 0;
    return 1;
}

/* ================================================================ a
 * killed template.  Covered elsewhere: check_core test_err_template_killed
 * (runs of a blocked template and of the template itself get -EPIPE),
 * test_err_killed_with_queue (killed with 64 MiB queued),
 * test_exit_template_killed_running (a running child's on_exit is -1),
 * check_life test_template_killed (a later fork of the dead template fails
 * with -EPIPE).  Here: many requests in flight at once, every callback
 * within the 1 s, a running child untouched, and the default
 * template replaced. */

#define FAULT_NKIDS 8

/* The default template (tfork_new) is stopped while children, a
 * grandchild and their runs are queued, then SIGKILLed: every run and
 * on_exit fires once within 1 s with -EPIPE and "template N exited";
 * the next tfork_new starts a new default template that works.  _i: the
 * loop. */
START_TEST(test_default_template_killed)
{
    struct fault_run r[FAULT_NKIDS + 1], r2 = { .mode = R_READ };
    struct fault_exit e[FAULT_NKIDS + 1];
    const char *mod;
    char want[64];
    pid_t kids[4], dp, np, ppid;
    tfork *c[FAULT_NKIDS], *g, *c2;
    double t0, last;
    int n, fds_loop, tplfds;

    fault_begin(_i, "default template killed");
    fds_loop = tu_fd_count();
    memset(r, 0, sizeof r);
    memset(e, 0, sizeof e);
    mod = tu_testdir("mod_core_basic.so");
    c[0] = API(tfork_new(T.loop));
    ck_assert_msg(c[0] != NULL, "tfork_new: %s", strerror(errno));
    /* the default template is our only child: stop it, so nothing of
     * what follows is answered */
    n = tu_children_of(getpid(), kids, 4);
    ck_assert_int_eq(n, 1);
    dp = kids[0];
    ck_assert_int_eq(kill(dp, SIGSTOP), 0);
    /* what a default template costs the client: its socket and, on a
     * loop other than the default one, a pidfd (c[0]'s socket aside,
     * once the FORK that carries its other end has left) */
    RUN_UNTIL(T.loop, c[0]->parent->q.head == NULL, 10.);
    tplfds = tu_fd_count() - fds_loop - 1;
    ck_assert_int_ge(tplfds, 1);
    for (int i = 0; i < FAULT_NKIDS; i++) {
        if (i)
            c[i] = API(tfork_new(T.loop));
        ck_assert_ptr_nonnull(c[i]);
        ck_assert_int_eq(API(tfork_require(c[i], mod)), 0);
        ck_assert_int_eq(API(tfork_send_arg(c[i], "x", 1)), 0);
        fault_on_exit(c[i], &e[i]);
    }
    g = fault_fork(c[0]);
    fault_on_exit(g, &e[FAULT_NKIDS]);
    fault_run(g, "mod_core_report", &r[FAULT_NKIDS]);
    for (int i = 0; i < FAULT_NKIDS; i++)
        fault_run(c[i], "mod_core_report", &r[i]);
    /* one turn of the loop: what can be sent is sent */
    ev_run(T.loop, EVRUN_NOWAIT);
    ck_assert_int_eq(r[0].calls, 0);
    t0 = tu_now();
    ck_assert_int_eq(kill(dp, SIGKILL), 0);
    RUN_UNTIL(T.loop, fault_all_called(r, FAULT_NKIDS + 1, e,
                                       FAULT_NKIDS + 1), 30.);
    last = fault_latest(r, FAULT_NKIDS + 1, e, FAULT_NKIDS + 1);
    ck_assert_msg(last - t0 <= FAULT_DEADLINE, "last callback %.3f s after "
                  "the kill", last - t0);
    snprintf(want, sizeof want, "template %d exited", (int)dp);
    for (int i = 0; i <= FAULT_NKIDS; i++) {
        fault_failed(&r[i], -EPIPE, want);
        /* never forked: on_exit says -1, once */
        ck_assert_int_eq(e[i].calls, 1);
        ck_assert_int_eq(e[i].inside, 0);
        ck_assert_int_eq(e[i].status, -1);
    }
    /* the next tfork_new makes a new default template */
    c2 = API(tfork_new(T.loop));
    ck_assert_msg(c2 != NULL, "tfork_new after the kill: %s",
                  strerror(errno));
    ck_assert_int_eq(API(tfork_require(c2, mod)), 0);
    ck_assert_int_eq(API(tfork_send_arg(c2, "after", 5)), 0);
    fault_run(c2, "mod_core_report", &r2);
    RUN_UNTIL(T.loop, r2.calls, 30.);
    fault_ok(&r2);
    ck_assert_str_eq(fault_body(&r2, NULL, &ppid), "A 0 5 1 6166746572\n");
    ck_assert_int_ne(ppid, dp);
    /* the old one was reaped; the new one is our only child now, as the
     * library keeps it, with its socket */
    RUN_UNTIL(T.loop, tu_gone(dp), 10.);
    n = tu_children_of(getpid(), kids, 4);
    ck_assert_msg(n == 1 && kids[0] == ppid, "%d children, first %d; new "
                  "default template %d", n, n ? (int)kids[0] : 0,
                  (int)ppid);
    np = kids[0];
    ck_assert_int_ne(np, dp);
    ck_assert_int_eq(tu_fd_count(), fds_loop + tplfds);
    fault_done(&r2);
    tu_guard_stop(T.loop, &T.guard);
}
END_TEST

/* A template with a running child, a blocked eval and, queued behind it,
 * forks, a grandchild and an exec, each with on_exit, is SIGKILLed: within 1 s every run fails with -EPIPE and
 * "template N exited", every on_exit fires (-1 for what never existed,
 * and for the running child, whose status nobody can learn); the running
 * child still serves its socket; a fork asked for later fails the same
 * way, once. */
START_TEST(test_template_killed_in_flight)
{
    const struct fault_kind *k = KIND(_i);
    enum { NR = FAULT_NKIDS + 2, NE = NR + 1 };
    struct fault_run r[NR], rk = { .mode = R_KEEP }, rl = { .mode = R_READ };
    struct fault_exit e[NE], ek = { 0 };
    char *av[] = { (char *)"true", NULL };
    char want[64], *got;
    tfork *t, *c[FAULT_NKIDS], *g, *x, *run, *late;
    pid_t tp;
    double t0;

    fault_begin(DEF(_i), "template killed in flight");
    memset(r, 0, sizeof r);
    memset(e, 0, sizeof e);
    t = fault_tpl(k);
    tp = tfork_pid(t);
    run = fault_fork(t);
    fault_on_exit(run, &ek);
    fault_run(run, k->sockecho, &rk);
    RUN_UNTIL(T.loop, rk.calls, 30.);
    fault_ok(&rk);
    ck_assert_int_eq(API(tfork_eval(t, k->block, 0, NULL)), 0);
    for (int i = 0; i < FAULT_NKIDS; i++) {
        c[i] = fault_fork(t);
        ck_assert_int_eq(API(tfork_send_arg(c[i], "y", 1)), 0);
        fault_on_exit(c[i], &e[i]);
    }
    g = fault_fork(c[0]);
    fault_on_exit(g, &e[FAULT_NKIDS]);
    fault_run(g, k->report, &r[FAULT_NKIDS]);
    for (int i = 0; i < FAULT_NKIDS; i++)
        fault_run(c[i], k->report, &r[i]);
    x = fault_fork(t);
    fault_on_exit(x, &e[FAULT_NKIDS + 1]);
    ck_assert_int_eq(API(tfork_exec(x, "/bin/true", av, NULL, fault_run_cb,
                                    &r[FAULT_NKIDS + 1])), 0);
    fault_on_exit(t, &e[NR]);
    ev_run(T.loop, EVRUN_NOWAIT);
    t0 = tu_now();
    ck_assert_int_eq(kill(tp, SIGKILL), 0);
    RUN_UNTIL(T.loop, fault_all_called(r, NR, e, NE) && ek.calls, 30.);
    ck_assert_msg(fault_latest(r, NR, e, NE) - t0 <= FAULT_DEADLINE,
                  "last callback %.3f s after the kill",
                  fault_latest(r, NR, e, NE) - t0);
    snprintf(want, sizeof want, "template %d exited", (int)tp);
    for (int i = 0; i < NE; i++) {
        if (i < NR)
            fault_failed(&r[i], -EPIPE, want);
        ck_assert_int_eq(e[i].calls, 1);
        ck_assert_int_eq(e[i].inside, 0);
        if (i == NR) {      /* the template itself */
            ck_assert_int_eq(e[i].pid, tp);
            ck_assert_msg(WIFSIGNALED(e[i].status) &&
                          WTERMSIG(e[i].status) == SIGKILL, "status %#x",
                          e[i].status);
        } else {
            ck_assert_int_eq(e[i].status, -1);
        }
    }
    ck_assert_int_eq(ek.calls, 1);
    ck_assert_int_eq(ek.status, -1);
    /* the running child was not touched: it still answers */
    ck_assert_int_eq(kill(rk.pid, 0), 0);
    ck_assert_int_eq(write(rk.kept, "ping", 4), 4);
    ck_assert_int_eq(shutdown(rk.kept, SHUT_WR), 0);
    got = fault_read(rk.kept, 0, 30.);
    ck_assert_str_eq(got, "got:ping");
    free(got);
    close(rk.kept);
    /* later: fails the same way, from the loop, once */
    late = fault_fork(t);
    fault_run(late, k->report, &rl);
    ck_assert_int_eq(rl.calls, 0);
    APIV(tfork_free(t));
    RUN_UNTIL(T.loop, rl.calls, 30.);
    fault_failed(&rl, -EPIPE, want);
    fault_end();
}
END_TEST

/* ================================================================ a
 * killed child.  Covered elsewhere: check_core test_exit_sigkill (a run
 * child killed while the user reads its stream: EOF, status SIGKILL),
 * test_err_child_died (children that die while prepared), check_rpc
 * test_child_death and check_pool test_worker_dies (RPC children and pool
 * workers killed mid-call).  Here: a child killed while the library is
 * still streaming 64 MiB of commands into it. */

START_TEST(test_child_killed_mid_stream)
{
    const struct fault_kind *k = KIND(_i);
    struct fault_run r = { .mode = R_READ }, r2 = { .mode = R_READ };
    struct fault_exit e = { 0 };
    size_t n = TFORK_ARG_MAX;
    char *b = calloc(1, n), want[64];
    tfork *t, *c, *c2;
    pid_t pid;
    double t0;

    fault_begin(DEF(_i), "child killed mid-stream");
    ck_assert_ptr_nonnull(b);
    t = fault_tpl(k);
    c = fault_fork(t);
    fault_on_exit(c, &e);
    /* the child stops reading at once: the stream cannot finish */
    ck_assert_int_eq(API(tfork_eval(c, k->block, 0, NULL)), 0);
    ck_assert_int_eq(API(tfork_send_arg(c, b, n)), 0);
    free(b);
    ck_assert_int_eq(API(tfork_send_arg(c, "tail", 4)), 0);
    fault_run(c, k->report, &r);
    RUN_UNTIL(T.loop, tfork_pid(c) > 0, 30.);
    pid = tfork_pid(c);
    /* the stream is still going: most of the 64 MiB waits in the client */
    ev_run(T.loop, EVRUN_NOWAIT);
    ck_assert_ptr_nonnull(c->q.head);
    t0 = tu_now();
    ck_assert_int_eq(kill(pid, SIGKILL), 0);
    RUN_UNTIL(T.loop, r.calls && e.calls, 30.);
    ck_assert_msg(fault_latest(&r, 1, &e, 1) - t0 <= FAULT_DEADLINE,
                  "callbacks %.3f s after the kill",
                  fault_latest(&r, 1, &e, 1) - t0);
    snprintf(want, sizeof want, "process %d exited before it was run",
             (int)pid);
    fault_failed(&r, -EPIPE, want);
    ck_assert_int_eq(e.calls, 1);
    ck_assert_int_eq(e.pid, pid);
    ck_assert_msg(WIFSIGNALED(e.status) && WTERMSIG(e.status) == SIGKILL,
                  "status %#x", e.status);
    /* the template goes on */
    c2 = fault_fork(t);
    ck_assert_int_eq(API(tfork_send_arg(c2, "ok", 2)), 0);
    fault_run(c2, k->report, &r2);
    APIV(tfork_free(t));
    RUN_UNTIL(T.loop, r2.calls, 30.);
    fault_ok(&r2);
    ck_assert_str_eq(fault_body(&r2, NULL, NULL), "A 0 2 1 6f6b\n");
    fault_done(&r2);
    fault_end();
}
END_TEST

/* ================================================================ a
 * killed client.  Covered elsewhere: check_life test_owner_death (the
 * template and unrun children of a SIGKILLed client are gone within 1 s,
 * for tfork_new_exec, tfork_template and tfork_early).  Here: a running
 * child of that client is not touched. */

/* pid has exited (gone, zombie or dead) or is another process by now. */
static int fault_proc_gone(pid_t pid, unsigned long long start)
{
    unsigned long long st0;
    char st = tu_proc_state(pid, NULL, &st0);

    return !st || st == 'Z' || st == 'X' || st0 != start;
}

START_TEST(test_client_killed_running_child)
{
    static const char *const modes[] = { "exec", "template" };
    int pp[2], st;
    pid_t prog, pids[3], ppid = 0;
    unsigned long long start[3];
    char path[4096], line[256];
    size_t len = 0;
    double dl, t0;

    fault_begin(0, "client killed");
    ck_assert_int_eq(pipe2(pp, O_CLOEXEC), 0);
    snprintf(path, sizeof path, "%s", tu_testdir("prog_fault_owner"));
    prog = fork();
    ck_assert_int_ge(prog, 0);
    if (prog == 0) {
        dup2(pp[1], 1);
        execl(path, path, modes[_i], tu_testdir("mod_core_basic.so"),
              (char *)NULL);
        _exit(127);
    }
    close(pp[1]);
    dl = tu_now() + 30;
    while (!memchr(line, '\n', len)) {
        struct pollfd pfd = { pp[0], POLLIN, 0 };
        ssize_t n;

        ck_assert_msg(tu_now() < dl, "prog_fault_owner printed no pids");
        if (poll(&pfd, 1, 100) <= 0)
            continue;
        n = read(pp[0], line + len, sizeof line - 1 - len);
        ck_assert_msg(n > 0, "prog_fault_owner failed (output '%.*s')",
                      (int)len, line);
        len += (size_t)n;
    }
    line[len] = '\0';
    close(pp[0]);
    ck_assert_msg(sscanf(line, "pids %d %d %d", &pids[0], &pids[1],
                         &pids[2]) == 3, "output: %s", line);
    for (int i = 0; i < 3; i++)
        ck_assert_msg(tu_proc_state(pids[i], NULL, &start[i]) != 0,
                      "pid %d does not exist", (int)pids[i]);
    ck_assert_int_eq(kill(prog, SIGKILL), 0);
    ck_assert_int_eq(waitpid(prog, &st, 0), prog);
    ck_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    t0 = tu_now();
    /* the template and the unrun child go within the bound */
    for (int i = 0; i < 2; i++) {
        while (!fault_proc_gone(pids[i], start[i]) &&
               tu_now() < t0 + FAULT_DEADLINE)
            usleep(10000);
        ck_assert_msg(fault_proc_gone(pids[i], start[i]), "%s: %s %d still "
                      "runs %.1f s after its client died", modes[_i],
                      i ? "unrun child" : "template", (int)pids[i],
                      FAULT_DEADLINE);
    }
    /* the running child lives on, an orphan (ours: we are a subreaper),
     * and was not signalled */
    ck_assert_msg(!fault_proc_gone(pids[2], start[2]), "the running child "
                  "%d died with its client", (int)pids[2]);
    RUN_UNTIL(T.loop, tu_proc_state(pids[2], &ppid, NULL) && ppid ==
              getpid(), 10.);
    {
        char st2 = tu_proc_state(pids[2], NULL, NULL);

        ck_assert_msg(st2 == 'S' || st2 == 'R', "running child state %c",
                      st2);
    }
    ck_assert_int_eq(kill(pids[2], SIGKILL), 0);
    ck_assert_int_eq(waitpid(pids[2], &st, 0), pids[2]);
    ck_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    fault_end();
}
END_TEST

/* ================================================================
 * exhausted descriptor limits */

/* Fills every free descriptor below the soft RLIMIT_NOFILE, after
 * lowering it to just above the highest one in use.  The fillers in
 * fill[] (at most cap), their count returned; *old gets the limit. */
static int fault_fill_fds(struct rlimit *old, int *fill, int cap)
{
    struct rlimit rl;
    int hi = 0, n = 0;

    for (int fd = 0; fd < 1024; fd++)
        if (fcntl(fd, F_GETFD) >= 0)
            hi = fd;
    ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, old), 0);
    rl = *old;
    rl.rlim_cur = (rlim_t)hi + 1;
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
    for (;;) {
        int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);

        if (fd < 0) {
            ck_assert_int_eq(errno, EMFILE);
            break;
        }
        ck_assert_int_lt(n, cap);
        fill[n++] = fd;
    }
    return n;
}

static void fault_unfill_fds(const struct rlimit *old, int *fill, int n)
{
    for (int i = 0; i < n; i++)
        close(fill[i]);
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, old), 0);
}

/* The client has no descriptor left: constructors fail with EMFILE,
 * send_fd with -EMFILE, nothing leaks; a run already prepared still
 * completes; once descriptors are free again everything works.  _i: the
 * loop. */
START_TEST(test_emfile_client)
{
    struct fault_run r = { .mode = R_READ }, r2 = { .mode = R_READ };
    struct rlimit old;
    int fill[1024], nfill, fds1, pp[2];
    tfork *t, *c, *c2;
    char want[64], *got;

    /* valgrind (3.19) lets socketpair() hand out fds above the
     * RLIMIT_NOFILE it shows its client: no EMFILE to provoke there */
    if (uv_running(0)) {
        fprintf(stderr, "test_emfile_client:%d: skipped: under valgrind "
                "socketpair() ignores RLIMIT_NOFILE\n", _i);
        return;
    }
    fault_begin(_i, "EMFILE in the client");
    t = fault_tpl(&fault_copy);
    c = fault_fork(t);
    ck_assert_int_eq(pipe2(pp, O_CLOEXEC), 0);
    /* the FORK, with the other end of c's socket, has left */
    RUN_UNTIL(T.loop, t->q.head == NULL, 10.);
    fds1 = tu_fd_count();
    nfill = fault_fill_fds(&old, fill, 1024);
    errno = 0;
    ck_assert_ptr_null(API(tfork_fork(t)));
    ck_assert_int_eq(errno, EMFILE);
    errno = 0;
    ck_assert_ptr_null(API(tfork_new_exec(T.loop)));
    ck_assert_int_eq(errno, EMFILE);
    errno = 0;
    ck_assert_ptr_null(API(tfork_template(T.loop)));
    ck_assert_int_eq(errno, EMFILE);
    errno = 0;
    ck_assert_ptr_null(API(tfork_new(T.loop)));
    ck_assert_int_eq(errno, EMFILE);
    ck_assert_int_eq(API(tfork_send_fd(c, pp[1])), -EMFILE);
    /* c was prepared before: its run needs no new descriptor here */
    ck_assert_int_eq(API(tfork_send_arg(c, "still", 5)), 0);
    fault_run(c, "fault_report", &r);
    RUN_UNTIL(T.loop, r.calls, 30.);
    fault_ok(&r);
    ck_assert_str_eq(fault_body(&r, NULL, NULL), "A 0 5 1 7374696c6c\n");
    /* c's socket was handed over and closed; nothing else changed */
    ck_assert_int_eq(tu_fd_count(), fds1 - 1 + nfill);
    fault_unfill_fds(&old, fill, nfill);
    ck_assert_int_eq(tu_fd_count(), fds1 - 1);
    /* descriptors again: all works, fds too */
    c2 = fault_fork(t);
    ck_assert_int_eq(API(tfork_send_fd(c2, pp[1])), 0);
    close(pp[1]);
    fault_run(c2, "fault_report", &r2);
    APIV(tfork_free(t));
    RUN_UNTIL(T.loop, r2.calls, 30.);
    fault_ok(&r2);
    ck_assert_str_eq(fault_body(&r2, NULL, NULL), "F 0 1\n");
    snprintf(want, sizeof want, "fd0:%d\n", (int)r2.pid);
    got = fault_read(pp[0], 0, 30.);
    ck_assert_str_eq(got, want);
    free(got);
    close(pp[0]);
    fault_done(&r);
    fault_done(&r2);
    fault_end();
}
END_TEST

/* Open descriptors of pid and the highest of them. */
static int fault_fds_of(pid_t pid, int *hi)
{
    char path[64];
    int n = 0;

    *hi = -1;
    for (int fd = 0; fd < 4096; fd++) {
        snprintf(path, sizeof path, "/proc/%d/fd/%d", (int)pid, fd);
        if (access(path, F_OK) == 0 || errno != ENOENT) {
            n++;
            *hi = fd;
        }
    }
    return n;
}

/* The template has no descriptor left when a child's socket (FORK)
 * reaches it: the kernel drops the fd and flags the control message as
 * truncated; the template sees it is out of fds, says so (-EMFILE, not
 * a protocol error) and exits 2.  Every request in
 * flight gets exactly one callback with that error, the template's
 * on_exit its status, and every fd it held is closed. */
START_TEST(test_emfile_template)
{
    const struct fault_kind *k = KIND(_i);
    struct fault_run r0 = { .mode = R_READ }, r[3];
    struct fault_exit e[3], et = { 0 };
    struct rlimit rl;
    int pp[2], hi, n, room;
    tfork *t, *c0, *c[3];
    pid_t tp;
    char want[256], *got;

    fault_begin(DEF(_i), "EMFILE in the template");
    memset(r, 0, sizeof r);
    memset(e, 0, sizeof e);
    t = fault_tpl(k);
    tp = tfork_pid(t);
    fault_on_exit(t, &et);
    /* one child first: the template has set itself up by then */
    c0 = fault_fork(t);
    fault_run(c0, k->report, &r0);
    RUN_UNTIL(T.loop, r0.calls, 30.);
    fault_ok(&r0);
    n = fault_fds_of(tp, &hi);
    ck_assert_int_ge(n, 4);
    rl.rlim_cur = (rlim_t)(hi + 1 > n ? hi + 1 : n) + 2;
    rl.rlim_max = rl.rlim_cur;
    room = (int)rl.rlim_cur - n;
    ck_assert_int_eq(prlimit(tp, RLIMIT_NOFILE, &rl, NULL), 0);
    ck_assert_int_eq(pipe2(pp, O_CLOEXEC), 0);
    /* the template keeps fds sent to it (its children get them): these
     * fill its table */
    for (int i = 0; i < room; i++)
        ck_assert_int_eq(API(tfork_send_fd(t, pp[1])), 0);
    close(pp[1]);
    for (int i = 0; i < 3; i++) {
        c[i] = fault_fork(t);
        fault_on_exit(c[i], &e[i]);
        fault_run(c[i], k->report, &r[i]);
    }
    APIV(tfork_free(t));
    RUN_UNTIL(T.loop, fault_all_called(r, 3, e, 3) && et.calls, 30.);
    /* the template's own words, from its ERROR frame */
    snprintf(want, sizeof want, "receive failed: Too many open files (a "
             "descriptor sent with the frame was lost)");
    for (int i = 0; i < 3; i++) {
        fault_failed(&r[i], -EMFILE, want);
        ck_assert_int_eq(e[i].calls, 1);
        ck_assert_int_eq(e[i].status, -1);
    }
    ck_assert_int_eq(et.calls, 1);
    ck_assert_msg(WIFEXITED(et.status) && WEXITSTATUS(et.status) == 2,
                  "template status %#x", et.status);
    /* every copy of the pipe's write end is closed */
    got = fault_read(pp[0], 0, 30.);
    ck_assert_str_eq(got, "");
    free(got);
    close(pp[0]);
    fault_done(&r0);
    fault_end();
}
END_TEST

/* ================================================================ a
 * send path under faults.  Covered elsewhere: check_proto
 * test_fault_send_eintr, test_fault_send_eagain,
 * test_fault_send_short_writes, test_fault_recv_* (tfork__send,
 * tfork__send_all and the reader alone).  Here: whole runs and execs
 * through a sendmsg that writes one byte per call, or refuses every
 * other call with EAGAIN, in the client and in the template copy and its
 * children alike. */

static int fault_send_mode;     /* 0: one byte per call, 1: EAGAIN */
static unsigned long fault_send_calls;

static ssize_t fault_sendmsg(int fd, const struct msghdr *m, int flags)
{
    struct msghdr mm = *m;
    struct iovec one;

    fault_send_calls++;
    if (fault_send_mode == 1) {
        if (fault_send_calls & 1) {
            errno = EAGAIN;
            return -1;
        }
        return sendmsg(fd, m, flags);
    }
    for (size_t i = 0; i < m->msg_iovlen; i++) {
        if (m->msg_iov[i].iov_len) {
            one.iov_base = m->msg_iov[i].iov_base;
            one.iov_len = 1;
            mm.msg_iov = &one;
            mm.msg_iovlen = 1;
            break;
        }
    }
    return sendmsg(fd, &mm, flags);
}

#define FAULT_BIN 70000

START_TEST(test_send_faults)
{
    struct fault_run r = { .mode = R_READ }, rx = { .mode = R_READ };
    struct fault_exit ex = { 0 };
    unsigned char *bin = malloc(FAULT_BIN);
    int p1[2], p2[2], px[2], sv[2], null;
    char want[512], *got, fdmsg[64];
    char *av[] = { (char *)"sh", (char *)"-c",
                   (char *)"echo exec-ok >&2; echo done >&2", NULL };
    tfork *t, *c, *x;

    fault_begin(DEF(_i), _i & 1 ? "EAGAIN every other send"
                                : "one byte per send");
    ck_assert_ptr_nonnull(bin);
    tu_pattern(bin, FAULT_BIN, 77);
    ck_assert_int_eq(pipe2(p1, O_CLOEXEC), 0);
    ck_assert_int_eq(pipe2(p2, O_CLOEXEC), 0);
    ck_assert_int_eq(pipe2(px, O_CLOEXEC), 0);
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv),
                     0);
    null = open("/dev/null", O_RDONLY | O_CLOEXEC);
    ck_assert_int_ge(null, 0);
    fault_send_mode = _i & 1;
    fault_send_calls = 0;
    /* before tfork_template: the copy and its children send the same way */
    tfork__sys.sendmsg = fault_sendmsg;
    t = fault_tpl(&fault_copy);
    ck_assert_int_eq(API(tfork_send_arg(t, "tplarg", 6)), 0);
    ck_assert_int_eq(API(tfork_send_fd(t, p1[1])), 0);
    c = fault_fork(t);
    ck_assert_int_eq(API(tfork_send_arg(c, "alpha", 5)), 0);
    ck_assert_int_eq(API(tfork_send_arg(c, "", 0)), 0);
    ck_assert_int_eq(API(tfork_send_arg(c, bin, FAULT_BIN)), 0);
    ck_assert_int_eq(API(tfork_send_fd(c, p2[1])), 0);
    ck_assert_int_eq(API(tfork_send_fd(c, sv[1])), 0);
    ck_assert_int_eq(API(tfork_send_arg(c, "omega", 5)), 0);
    fault_run(c, "fault_report", &r);
    /* an exec: the fds sent become 0, 1, 2, the template's first (p1 on
     * 0, /dev/null on 1, px on 2) */
    x = fault_fork(t);
    ck_assert_int_eq(API(tfork_send_fd(x, null)), 0);
    ck_assert_int_eq(API(tfork_send_fd(x, px[1])), 0);
    fault_on_exit(x, &ex);
    ck_assert_int_eq(API(tfork_exec(x, "/bin/sh", av, NULL, fault_run_cb,
                                    &rx)), 0);
    close(p1[1]);
    close(p2[1]);
    close(sv[1]);
    close(px[1]);
    close(null);
    APIV(tfork_free(t));
    RUN_UNTIL(T.loop, r.calls && rx.calls && ex.calls, 60.);
    tfork__sys.sendmsg = sendmsg;
    /* the fault was in the way of the client's sends: one byte per call
     * means at least as many calls as bytes of the big arg; EAGAIN every
     * other call at least twice as many as the 7 frames with fds */
    if (!(_i & 1))
        ck_assert_uint_ge(fault_send_calls, FAULT_BIN);
    else
        ck_assert_uint_ge(fault_send_calls, 14);
    fault_ok(&r);
    snprintf(want, sizeof want,
             "A 0 6 1 74706c617267\nF 1 1\nA 2 5 1 616c706861\n"
             "A 3 0 1 \nA 4 %d 1 H%016llx\nF 5 1\nF 6 1\n"
             "A 7 5 1 6f6d656761\n", FAULT_BIN,
             (unsigned long long)core_fnv(bin, FAULT_BIN));
    ck_assert_str_eq(fault_body(&r, NULL, NULL), want);
    snprintf(fdmsg, sizeof fdmsg, "fd1:%d\n", (int)r.pid);
    got = fault_read(p1[0], 0, 30.);
    ck_assert_str_eq(got, fdmsg);
    free(got);
    snprintf(fdmsg, sizeof fdmsg, "fd5:%d\n", (int)r.pid);
    got = fault_read(p2[0], 0, 30.);
    ck_assert_str_eq(got, fdmsg);
    free(got);
    snprintf(fdmsg, sizeof fdmsg, "fd6:%d\n", (int)r.pid);
    got = fault_read(sv[0], 0, 30.);
    ck_assert_str_eq(got, fdmsg);
    free(got);
    ck_assert_int_eq(rx.calls, 1);
    ck_assert_msg(rx.err == 0, "exec: %d %s", rx.err, rx.msg);
    ck_assert_int_eq(rx.fd, -1);
    got = fault_read(px[0], 0, 30.);
    ck_assert_str_eq(got, "exec-ok\ndone\n");
    free(got);
    ck_assert_msg(WIFEXITED(ex.status) && WEXITSTATUS(ex.status) == 0,
                  "exec status %#x", ex.status);
    close(p1[0]);
    close(p2[0]);
    close(sv[0]);
    close(px[0]);
    free(bin);
    fault_done(&r);
    fault_end();
}
END_TEST

/* ================================================================ a
 * full socket.  Covered elsewhere: check_core test_big_arg (64 MiB
 * intact), test_err_killed_with_queue, check_proto test_send_full_socket
 * and test_rd_64mib_frame.  Here: a template that reads nothing for a
 * while (SIGSTOP) with a child's 64 MiB arg queued: the calls return at
 * once, another template is served meanwhile, and after SIGCONT the arg
 * arrives intact. */

START_TEST(test_full_socket_64mib)
{
    const struct fault_kind *k = KIND(_i);
    struct fault_run r = { .mode = R_READ }, r2 = { .mode = R_READ };
    size_t n = TFORK_ARG_MAX;
    unsigned char *b = malloc(n);
    uint64_t h;
    char want[128];
    tfork *t, *t2, *c, *c2;
    pid_t tp;
    int qlen;

    fault_begin(DEF(_i), "full socket, 64 MiB queued");
    ck_assert_ptr_nonnull(b);
    tu_pattern(b, n, 4242);
    h = core_fnv(b, n);
    t = fault_tpl(k);
    tp = tfork_pid(t);
    t2 = fault_tpl(k);
    ck_assert_int_eq(kill(tp, SIGSTOP), 0);
    c = fault_fork(t);
    ck_assert_int_eq(API(tfork_send_arg(c, b, n)), 0);
    free(b);
    fault_run(c, k->report, &r);
    /* the other template works meanwhile; nothing of c's came */
    c2 = fault_fork(t2);
    ck_assert_int_eq(API(tfork_send_arg(c2, "other", 5)), 0);
    fault_run(c2, k->report, &r2);
    APIV(tfork_free(t2));
    RUN_UNTIL(T.loop, r2.calls, 30.);
    fault_ok(&r2);
    ck_assert_str_eq(fault_body(&r2, NULL, NULL), "A 0 5 1 6f74686572\n");
    ck_assert_int_eq(r.calls, 0);
    /* c's socket is full, the rest waits in the client */
    ck_assert_int_eq(ioctl(c->fd, SIOCOUTQ, &qlen), 0);
    ck_assert_int_gt(qlen, 0);
    ck_assert_ptr_nonnull(c->q.head);
    ck_assert_int_eq(kill(tp, SIGCONT), 0);
    APIV(tfork_free(t));
    RUN_UNTIL(T.loop, r.calls, 60.);
    fault_ok(&r);
    snprintf(want, sizeof want, "A 0 %zu 1 H%016llx\n", n,
             (unsigned long long)h);
    ck_assert_str_eq(fault_body(&r, NULL, NULL), want);
    fault_done(&r);
    fault_done(&r2);
    fault_end();
}
END_TEST

/* ================================================================
 * malformed input.  Covered elsewhere: check_proto test_hdr_get_*,
 * test_cur_* (every decoder, byte by byte), test_rd_unexpected_fd,
 * test_rd_fd_in_payload, test_rd_too_many_fds, test_rd_credentials_refused,
 * test_rd_eof_inside_frame, test_rd_huge_len_lazy and
 * test_rd_huge_len_small_as (the reader alone, in the test process).
 * Here: the same inputs against live processes -- a template (tfork-serve
 * and a copy), which answers with an ERROR frame and exits 2, and the
 * client, whose run callback gets -EPROTO and whose fd table is as it
 * was -- and a failed template that stays up closing every fd it is
 * sent. */

static void fault_hdr(unsigned char h[8], unsigned op, unsigned nfds,
                      uint32_t len)
{
    h[0] = (unsigned char)op;
    h[1] = (unsigned char)nfds;
    h[2] = 0;
    h[3] = 0;
    h[4] = (unsigned char)(len & 0xff);
    h[5] = (unsigned char)((len >> 8) & 0xff);
    h[6] = (unsigned char)((len >> 16) & 0xff);
    h[7] = (unsigned char)(len >> 24);
}

/* One plain sendmsg, nfds copies of fd on its first byte. */
static void fault_raw_send(int s, const void *buf, size_t len, int fd,
                           int nfds)
{
    union {
        struct cmsghdr h;
        char b[CMSG_SPACE(sizeof(int) * 8)];
    } u;
    struct iovec iov = { (void *)buf, len };
    struct msghdr m;

    memset(&m, 0, sizeof m);
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    if (nfds > 0) {
        struct cmsghdr *c;
        int fds[8];

        for (int i = 0; i < nfds; i++)
            fds[i] = fd;
        memset(&u, 0, sizeof u);
        m.msg_control = u.b;
        m.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
        c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
    }
    if (sendmsg(s, &m, MSG_NOSIGNAL) != (ssize_t)len)
        ck_abort_msg("sendmsg: %s", strerror(errno));
}

/* Reads exactly len bytes within secs (0: EOF came first). */
static int fault_read_exact(int s, void *buf, size_t len, double secs)
{
    double dl = tu_now() + secs;
    size_t got = 0;

    while (got < len) {
        struct pollfd pfd = { s, POLLIN, 0 };
        ssize_t n;

        ck_assert_msg(tu_now() < dl, "no reply within %.0f s", secs);
        if (poll(&pfd, 1, 100) <= 0)
            continue;
        n = read(s, (char *)buf + got, len - got);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n <= 0)
            return 0;
        got += (size_t)n;
    }
    return 1;
}

static uint32_t fault_le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

/* A template serving on the raw socket *s: tfork-serve (copy 0) or a
 * fork of this program (copy 1), as tfork_new_exec and tfork_template
 * start them.  Its pid. */
static pid_t fault_raw_template(int copy, int *s)
{
    int sv[2];
    pid_t pid;
    char err[512];

    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv),
                     0);
    if (copy) {
        pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
            close(sv[0]);
            tfork__serve_copy(sv[1], "tfork: template");
        }
    } else {
        ck_assert_msg(tfork__spawn_serve(sv[1], &pid, err, sizeof err) == 0,
                      "%s", err);
    }
    close(sv[1]);
    *s = sv[0];
    return pid;
}

static void fault_hello(int s)
{
    unsigned char f[16];

    fault_hdr(f, TFORK_OP_HELLO, 0, 8);
    memcpy(f + 8, "TFRK\1\0\0\0", 8);
    fault_raw_send(s, f, 16, -1, 0);
}

/* VmPeak of pid in KiB. */
static long fault_vmpeak(pid_t pid)
{
    char path[64], line[256];
    long kb = -1;
    FILE *f;

    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    f = fopen(path, "re");
    ck_assert_ptr_nonnull(f);
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmPeak: %ld kB", &kb) == 1)
            break;
    fclose(f);
    ck_assert_int_gt(kb, 0);
    return kb;
}

/* Waits until the peer has read everything we sent on s. */
static void fault_drained(int s)
{
    double dl = tu_now() + 30;
    int q = 1;

    for (;;) {
        ck_assert_int_eq(ioctl(s, SIOCOUTQ, &q), 0);
        if (q == 0)
            return;
        ck_assert_msg(tu_now() < dl, "the peer did not read (%d queued)", q);
        usleep(2000);
    }
}

#define FAULT_NBAD 15

/* Sends bad input number idx to a template on s (pid tp; pipew is an fd
 * to attach); the message the template must answer with in want. */
static void fault_bad_cmd(int idx, int s, pid_t tp, int pipew, char *want,
                          size_t cap)
{
    unsigned char f[64];
    long before;

    if (idx != 10)
        fault_hello(s);
    switch (idx) {
    case 0:     /* a length over the cap */
        fault_hdr(f, TFORK_OP_ARG, 0, TFORK_FRAME_MAX + 1);
        fault_raw_send(s, f, 8, -1, 0);
        snprintf(want, cap, "protocol error: ARG frame of %u bytes exceeds "
                 "the %u byte cap", TFORK_FRAME_MAX + 1, TFORK_FRAME_MAX);
        break;
    case 1:     /* an unknown op */
        fault_hdr(f, 9, 0, 0);
        fault_raw_send(s, f, 8, -1, 0);
        snprintf(want, cap, "protocol error: unknown command op 9");
        break;
    case 2:     /* a reply op sent as a command */
        fault_hdr(f, TFORK_OP_FORKED, 0, 8);
        memset(f + 8, 0, 8);
        fault_raw_send(s, f, 16, -1, 0);
        snprintf(want, cap, "protocol error: unknown command op 16");
        break;
    case 3:     /* a payload cut short */
        fault_hdr(f, TFORK_OP_ARG, 0, 10);
        memcpy(f + 8, "0123", 4);
        fault_raw_send(s, f, 12, -1, 0);
        ck_assert_int_eq(shutdown(s, SHUT_WR), 0);
        snprintf(want, cap, "protocol error: EOF inside a ARG frame");
        break;
    case 4:     /* a header cut short */
        fault_hdr(f, TFORK_OP_RUN, 0, 6);
        fault_raw_send(s, f, 5, -1, 0);
        ck_assert_int_eq(shutdown(s, SHUT_WR), 0);
        snprintf(want, cap, "protocol error: EOF inside a frame header");
        break;
    case 5:     /* an fd on a frame that takes none */
        fault_hdr(f, TFORK_OP_RUN, 0, 6);
        memcpy(f + 8, "\1\0\0\0x\0", 6);
        fault_raw_send(s, f, 14, pipew, 1);
        snprintf(want, cap, "protocol error: RUN frame announced 0 fds, 1 "
                 "arrived");
        break;
    case 6:     /* ... and announced */
        fault_hdr(f, TFORK_OP_RUN, 1, 6);
        memcpy(f + 8, "\1\0\0\0x\0", 6);
        fault_raw_send(s, f, 14, pipew, 1);
        snprintf(want, cap, "protocol error: RUN frame with 1 fds (takes 0)");
        break;
    case 7:     /* more fds than allowed */
        fault_hdr(f, TFORK_OP_ARGFD, 1, 0);
        fault_raw_send(s, f, 8, pipew, 3);
        snprintf(want, cap, "protocol error: unexpected control message or "
                 "too many fds");
        break;
    case 8:     /* an fd in the middle of a payload */
        fault_hdr(f, TFORK_OP_ARG, 0, 6);
        fault_raw_send(s, f, 8, -1, 0);
        fault_raw_send(s, "abc", 3, -1, 0);
        fault_raw_send(s, "def", 3, pipew, 1);
        snprintf(want, cap, "protocol error: fd inside a ARG payload");
        break;
    case 9:     /* a string longer than its payload */
        fault_hdr(f, TFORK_OP_RUN, 0, 4);
        memcpy(f + 8, "\5\0\0\0", 4);
        fault_raw_send(s, f, 12, -1, 0);
        snprintf(want, cap, "protocol error: malformed RUN frame");
        break;
    case 10:    /* no HELLO first */
        fault_hdr(f, TFORK_OP_RUN, 0, 6);
        memcpy(f + 8, "\1\0\0\0x\0", 6);
        fault_raw_send(s, f, 14, -1, 0);
        snprintf(want, cap, "protocol error: RUN before HELLO");
        break;
    case 11:    /* reserved header bytes */
        fault_hdr(f, TFORK_OP_ARG, 0, 1);
        f[2] = 1;
        fault_raw_send(s, f, 8, -1, 0);
        snprintf(want, cap, "protocol error: reserved header bytes set in "
                 "ARG frame");
        break;
    case 12:    /* a FORK (with its socket) whose payload is short */
        fault_hdr(f, TFORK_OP_FORK, 1, 4);
        memcpy(f + 8, "\1\0\0\0", 4);
        fault_raw_send(s, f, 12, pipew, 1);
        snprintf(want, cap, "protocol error: malformed FORK frame");
        break;
    case 13:    /* an EVAL announcing more strings than it holds */
        fault_hdr(f, TFORK_OP_EVAL, 0, 10);
        memcpy(f + 8, "\1\0\0\0f\0\xff\xff\0\0", 10);
        fault_raw_send(s, f, 18, -1, 0);
        snprintf(want, cap, "protocol error: malformed EVAL frame");
        break;
    case 14:    /* 64 MiB announced, 5 bytes sent: nothing that size is
                 * allocated (VmPeak counts even untouched memory) */
        fault_drained(s);
        before = fault_vmpeak(tp);
        fault_hdr(f, TFORK_OP_ARG, 0, TFORK_ARG_MAX_BYTES);
        memcpy(f + 8, "abcde", 5);
        fault_raw_send(s, f, 13, -1, 0);
        fault_drained(s);
        ck_assert_msg(fault_vmpeak(tp) - before < 8 * 1024, "VmPeak of the "
                      "template grew by %ld KiB for 5 bytes received",
                      fault_vmpeak(tp) - before);
        ck_assert_int_eq(shutdown(s, SHUT_WR), 0);
        snprintf(want, cap, "protocol error: EOF inside a ARG frame");
        break;
    }
}

/* _i: bit 0 the template kind, the rest the bad input. */
START_TEST(test_bad_commands)
{
    int copy = _i & 1, idx = _i >> 1;
    unsigned char h[8], *pl;
    char want[256], *got;
    int s, pp[2], st;
    uint32_t len, slen;
    pid_t tp;

    fault_begin(0, "bad commands");
    ck_assert_int_eq(pipe2(pp, O_CLOEXEC), 0);
    tp = fault_raw_template(copy, &s);
    fault_bad_cmd(idx, s, tp, pp[1], want, sizeof want);
    close(pp[1]);
    /* ERROR: i32 -EPROTO, u32 fork id 0, i32 its pid, str message */
    ck_assert_msg(fault_read_exact(s, h, 8, 30.), "case %d: EOF, no ERROR",
                  idx);
    ck_assert_int_eq(h[0], TFORK_OP_ERROR);
    ck_assert_int_eq(h[1], 0);
    len = fault_le32(h + 4);
    ck_assert_uint_lt(len, 2048);
    pl = malloc(len);
    ck_assert_ptr_nonnull(pl);
    ck_assert(fault_read_exact(s, pl, len, 30.));
    ck_assert_int_eq((int32_t)fault_le32(pl), -EPROTO);
    ck_assert_uint_eq(fault_le32(pl + 4), 0);
    ck_assert_int_eq((pid_t)fault_le32(pl + 8), tp);
    slen = fault_le32(pl + 12);
    ck_assert_uint_eq(len, 16 + slen + 1);
    ck_assert_int_eq(pl[16 + slen], 0);
    ck_assert_str_eq((char *)pl + 16, want);
    free(pl);
    /* then it exits 2, and nothing else comes */
    ck_assert_int_eq(fault_read_exact(s, h, 1, 30.), 0);
    ck_assert_int_eq(waitpid(tp, &st, 0), tp);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 2, "status %#x", st);
    close(s);
    /* no copy of the fds it was sent lives on */
    got = fault_read(pp[0], 0, 10.);
    ck_assert_str_eq(got, "");
    free(got);
    close(pp[0]);
    fault_end();
}
END_TEST

/* A template whose require failed ignores the commands that follow but
 * keeps running (until its client closes): every fd those commands
 * carried is closed, its fd table stays as it was, and a child asked for
 * gets the require's error. */
START_TEST(test_failed_template_closes_fds)
{
    const struct fault_kind *k = KIND(_i);
    struct fault_run r0 = { .mode = R_READ }, r = { .mode = R_READ };
    struct fault_exit et = { 0 };
    int pp[2], n0, n1, hi;
    tfork *t, *c0, *c;
    pid_t tp;
    char *got;

    fault_begin(DEF(_i), "failed template closes fds");
    t = fault_tpl(k);
    tp = tfork_pid(t);
    fault_on_exit(t, &et);
    c0 = fault_fork(t);
    fault_run(c0, k->report, &r0);
    RUN_UNTIL(T.loop, r0.calls, 30.);
    fault_ok(&r0);
    n0 = fault_fds_of(tp, &hi);
    ck_assert_int_eq(pipe2(pp, O_CLOEXEC), 0);
    ck_assert_int_eq(API(tfork_require(t, "/nonexistent/fault.so")), 0);
    for (int i = 0; i < 20; i++)
        ck_assert_int_eq(API(tfork_send_fd(t, pp[1])), 0);
    /* all of it is in the socket already, not waiting in the client */
    ck_assert_ptr_null(t->q.head);
    close(pp[1]);
    c = fault_fork(t);
    fault_run(c, k->report, &r);
    /* EOF: the template closed all 20 (and the client its copies) */
    got = fault_read(pp[0], 0, 30.);
    ck_assert_str_eq(got, "");
    free(got);
    close(pp[0]);
    ck_assert_int_eq(tu_proc_state(tp, NULL, NULL) != 'Z', 1);
    ck_assert_int_eq(kill(tp, 0), 0);
    n1 = fault_fds_of(tp, &hi);
    ck_assert_int_eq(n1, n0);
    APIV(tfork_free(t));
    RUN_UNTIL(T.loop, r.calls && et.calls, 30.);
    ck_assert_int_eq(r.calls, 1);
    ck_assert_int_eq(r.err, -ELIBACC);
    ck_assert_msg(strncmp(r.msg, "require /nonexistent/fault.so: ", 31) == 0,
                  "message '%s'", r.msg);
    ck_assert_msg(WIFEXITED(et.status) && WEXITSTATUS(et.status) == 0,
                  "template status %#x", et.status);
    fault_done(&r0);
    fault_end();
}
END_TEST

/* ---------------------------------------------------------------- the
 * client end: a fake template (a fork of this process on a raw socket)
 * answers with bad frames */

#define FAULT_NBADREP 10

/* In the fake: sends bad reply idx (pid p) on s, pipew attached where
 * needed; waits for "go" on ctl before closing where the test measures
 * first. */
static void fault_fake(int idx, int s, int pipew, int ctl, pid_t p)
{
    /* HELLO (16 bytes) and RUN "fault_report" (25): read them all, or
     * our close would reset the connection instead of ending it */
    unsigned char f[64], hello[41];
    char go;

    alarm(60);
    if (!fault_read_exact(s, hello, sizeof hello, 30.))
        _exit(10);
    switch (idx) {
    case 0:     /* EXIT with an fd it does not announce */
        fault_hdr(f, TFORK_OP_EXIT, 0, 8);
        memset(f + 8, 0, 8);
        fault_raw_send(s, f, 16, pipew, 1);
        break;
    case 1:     /* FORKED with three fds */
        fault_hdr(f, TFORK_OP_FORKED, 1, 8);
        memset(f + 8, 0, 8);
        fault_raw_send(s, f, 16, pipew, 3);
        break;
    case 2:     /* an unknown op */
        fault_hdr(f, 9, 0, 0);
        fault_raw_send(s, f, 8, -1, 0);
        break;
    case 3:     /* a command op sent as a reply */
        fault_hdr(f, TFORK_OP_RUN, 0, 6);
        memcpy(f + 8, "\1\0\0\0x\0", 6);
        fault_raw_send(s, f, 14, -1, 0);
        break;
    case 4:     /* over the cap */
        fault_hdr(f, TFORK_OP_ERROR, 0, TFORK_FRAME_MAX + 1);
        fault_raw_send(s, f, 8, -1, 0);
        break;
    case 5:     /* cut short */
        fault_hdr(f, TFORK_OP_ERROR, 0, 20);
        memcpy(f + 8, "\xa5\xff\xff\xff", 4);
        fault_raw_send(s, f, 12, -1, 0);
        close(s);
        _exit(0);
    case 6:     /* a RUNOK too short for its pid */
        fault_hdr(f, TFORK_OP_RUNOK, 0, 2);
        memcpy(f + 8, "\1\0", 2);
        fault_raw_send(s, f, 10, -1, 0);
        break;
    case 7:     /* an fd in the middle of a payload */
        fault_hdr(f, TFORK_OP_EXIT, 0, 8);
        fault_raw_send(s, f, 8, -1, 0);
        fault_raw_send(s, "abcd", 4, -1, 0);
        fault_raw_send(s, "efgh", 4, pipew, 1);
        break;
    case 8:     /* a FORKED with a pidfd for no fork of ours, then the
                 * run's RUNOK: the fd is dropped, the run goes on */
        fault_hdr(f, TFORK_OP_FORKED, 1, 8);
        memcpy(f + 8, "\x63\0\0\0\x10\0\0\0", 8);
        fault_raw_send(s, f, 16, pipew, 1);
        fault_hdr(f, TFORK_OP_RUNOK, 0, 4);
        f[8] = (unsigned char)(p & 0xff);
        f[9] = (unsigned char)((p >> 8) & 0xff);
        f[10] = (unsigned char)((p >> 16) & 0xff);
        f[11] = (unsigned char)((p >> 24) & 0xff);
        fault_raw_send(s, f, 12, -1, 0);
        break;
    case 9:     /* 64 MiB announced, 5 bytes sent */
        fault_hdr(f, TFORK_OP_ERROR, 0, TFORK_ARG_MAX_BYTES);
        memcpy(f + 8, "abcde", 5);
        fault_raw_send(s, f, 13, -1, 0);
        if (read(ctl, &go, 1) != 1)
            _exit(11);
        close(s);
        _exit(0);
    }
    close(pipew);
    /* until the client closes */
    while (read(s, f, sizeof f) > 0)
        ;
    _exit(0);
}

/* Descriptors of this process other than rfd on the pipe rfd reads. */
static int fault_pipe_copies(int rfd)
{
    struct stat want, st;
    int n = 0;

    ck_assert_int_eq(fstat(rfd, &want), 0);
    for (int fd = 0; fd < 4096; fd++)
        if (fd != rfd && fstat(fd, &st) == 0 && st.st_dev == want.st_dev &&
            st.st_ino == want.st_ino)
            n++;
    return n;
}

static size_t fault_heap_used(void)
{
#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 33)
    struct mallinfo2 mi = mallinfo2();

    return mi.uordblks + mi.hblkhd;
#else
    return 0;
#endif
}

/* _i: bit 0 the loop, the rest the bad reply. */
START_TEST(test_bad_replies)
{
    int idx = _i >> 1;
    struct fault_run r = { .mode = R_KEEP };
    struct fault_exit e = { 0 };
    int sv[2], pp[2], ctl[2];
    char want[256], *got;
    pid_t fp;
    tfork *h;

    fault_begin(_i & 1, "bad replies");
    ck_assert_int_eq(pipe2(pp, O_CLOEXEC), 0);
    ck_assert_int_eq(pipe2(ctl, O_CLOEXEC), 0);
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv),
                     0);
    fp = fork();
    ck_assert_int_ge(fp, 0);
    if (fp == 0) {
        close(sv[0]);
        close(ctl[1]);
        fault_fake(idx, sv[1], pp[1], ctl[0], getpid());
    }
    fault_add_tpl(fp);
    close(sv[1]);
    close(pp[1]);
    close(ctl[0]);
    ck_assert_int_eq(fcntl(sv[0], F_SETFL, O_NONBLOCK), 0);
    h = tfork__proc_own(T.loop, sv[0], fp);
    ck_assert_ptr_nonnull(h);
    fault_on_exit(h, &e);
    fault_run(h, "fault_report", &r);
    if (idx == 9) {
        size_t before = fault_heap_used();

        RUN_UNTIL(T.loop, h->rd.have_hdr && h->rd.ppos == 5, 30.);
        if (!UNDER_ASAN)
            ck_assert_msg(fault_heap_used() < before + MiB, "the client "
                          "allocated %zu bytes for 5 received",
                          fault_heap_used() - before);
        ck_assert_int_eq(write(ctl[1], "g", 1), 1);
    }
    RUN_UNTIL(T.loop, r.calls && (e.calls || idx == 8), 30.);
    close(ctl[1]);
    switch (idx) {
    case 0:
        snprintf(want, sizeof want, "protocol error: EXIT frame announced "
                 "0 fds, 1 arrived (process %d)", (int)fp);
        break;
    case 1:
        snprintf(want, sizeof want, "protocol error: unexpected control "
                 "message or too many fds (process %d)", (int)fp);
        break;
    case 2:
        snprintf(want, sizeof want, "protocol error: unknown reply op 9 "
                 "(process %d)", (int)fp);
        break;
    case 3:
        snprintf(want, sizeof want, "protocol error: unknown reply op 7 "
                 "(process %d)", (int)fp);
        break;
    case 4:
        snprintf(want, sizeof want, "protocol error: ERROR frame of %u bytes "
                 "exceeds the %u byte cap (process %d)", TFORK_FRAME_MAX + 1,
                 TFORK_FRAME_MAX, (int)fp);
        break;
    case 5:
    case 9:
        snprintf(want, sizeof want, "protocol error: EOF inside a ERROR "
                 "frame (process %d)", (int)fp);
        break;
    case 6:
        snprintf(want, sizeof want, "protocol error: unexpected or "
                 "malformed reply from process %d", (int)fp);
        break;
    case 7:
        snprintf(want, sizeof want, "protocol error: fd inside a EXIT "
                 "payload (process %d)", (int)fp);
        break;
    }
    if (idx == 8) {
        fault_ok(&r);
        ck_assert_int_eq(r.pid, fp);
        /* the socket is ours now; the fd that came with FORKED is
         * closed already, while the fake still holds its own copy */
        ck_assert_int_eq(fault_pipe_copies(pp[0]), 0);
        close(r.kept);
        RUN_UNTIL(T.loop, e.calls, 30.);
    } else {
        fault_failed(&r, -EPROTO, want);
    }
    ck_assert_int_eq(e.calls, 1);
    ck_assert_int_eq(e.pid, fp);
    ck_assert_msg(WIFEXITED(e.status) && WEXITSTATUS(e.status) == 0,
                  "fake status %#x", e.status);
    /* every fd the fake sent was closed here */
    got = fault_read(pp[0], 0, 10.);
    ck_assert_str_eq(got, "");
    free(got);
    close(pp[0]);
    fault_end();
}
END_TEST

/* ================================================================ a
 * pool under faults.  Covered elsewhere: check_pool test_worker_dies (one
 * worker killed mid-call, its call -EPIPE, the queued ones served),
 * test_transient_start (one fork refused: that worker's call -EAGAIN),
 * test_timeout.  Here: many calls queued while workers die again and
 * again and every third fork fails, then the template itself dies with
 * calls queued: every accepted call is answered exactly once. */

static int fault_forks;     /* forks asked for in this process */

static pid_t fault_fork_every3(void)
{
    if (getpid() != T.main_pid && ++fault_forks % 3 == 0) {
        errno = EAGAIN;
        return -1;
    }
    return tfork__sys_fork();
}

/* "die": SIGKILL itself mid-call; "echo TAG" / "sleep MS TAG": reply the
 * tag (after MS milliseconds). */
static int fault_pool_job(tfork_rpc_req *req, int n,
                          const struct iovec *args)
{
    char tag[64] = "";
    long ms = 0;
    struct iovec v;

    if (n < 1)
        return tfork_rpc_fail(req, "no args");
    if (strcmp(args[0].iov_base, "die") == 0)
        raise(SIGKILL);
    if (sscanf(args[0].iov_base, "echo %63s", tag) != 1 &&
        sscanf(args[0].iov_base, "sleep %ld %63s", &ms, tag) != 2)
        return tfork_rpc_fail(req, "bad command");
    if (ms)
        core_sleep_ms(ms);
    v.iov_base = tag;
    v.iov_len = strlen(tag);
    return tfork_rpc_reply(req, 1, &v);
}
TFORK_EXPORT(fault_pool_job);

struct fault_job {
    int called, inside, err;
    char cmd[64];
    char msg[512];
    char tag[64];
};

static void fault_job_cb(int err, const char *msg, int n,
                         const struct iovec *res, void *data)
{
    struct fault_job *j = data;

    j->called++;
    j->inside += tu_in_api > 0;
    j->err = err;
    snprintf(j->msg, sizeof j->msg, "%s", msg ? msg : "(null)");
    if (n >= 1)
        snprintf(j->tag, sizeof j->tag, "%.*s", (int)res[0].iov_len,
                 (const char *)res[0].iov_base);
}

static int fault_destroyed;

static void fault_pool_destroy(tfork_pool *pool, void *data)
{
    (void)pool;
    (void)data;
    fault_destroyed++;
}

static int fault_jobs_done(const struct fault_job *j, int n)
{
    for (int i = 0; i < n; i++)
        if (!j[i].called)
            return 0;
    return 1;
}

#define FAULT_NJOBS 40
#define FAULT_NLATE 12

START_TEST(test_pool_faults)
{
    struct fault_job j[FAULT_NJOBS], l[FAULT_NLATE];
    tfork_pool_opts o = { .max = 3, .start = 0.01,
                          .on_destroy = fault_pool_destroy };
    int nok = 0, nagain = 0, npipe = 0, lok = 0, lagain = 0, lpipe = 0;
    char forkmsg[128], tplmsg[64];
    tfork_pool *pool;
    tfork *tpl;
    pid_t tp;

    fault_begin(0, "pool under faults");
    memset(j, 0, sizeof j);
    memset(l, 0, sizeof l);
    fault_destroyed = 0;
    fault_forks = 0;
    tfork__sys.fork = fault_fork_every3;
    tpl = tfork_template(T.loop);
    tfork__sys.fork = tfork__sys_fork;
    ck_assert_ptr_nonnull(tpl);
    tp = tfork_pid(tpl);
    fault_add_tpl(tp);
    pool = tfork_pool_new(tpl, "fault_pool_job", &o);
    ck_assert_ptr_nonnull(pool);
    for (int i = 0; i < FAULT_NJOBS; i++) {
        struct iovec v;

        if (i % 4 == 1)
            snprintf(j[i].cmd, sizeof j[i].cmd, "die");
        else
            snprintf(j[i].cmd, sizeof j[i].cmd, "echo t%d", i);
        v.iov_base = j[i].cmd;
        v.iov_len = strlen(j[i].cmd);
        ck_assert_int_eq(API(tfork_pool_call(pool, 1, &v, fault_job_cb,
                                             &j[i])), 0);
    }
    RUN_UNTIL(T.loop, fault_jobs_done(j, FAULT_NJOBS), 60.);
    snprintf(forkmsg, sizeof forkmsg, "fork failed in process %d: %s",
             (int)tp, strerror(EAGAIN));
    for (int i = 0; i < FAULT_NJOBS; i++) {
        char tag[16];

        ck_assert_msg(j[i].called == 1, "call %d answered %d times", i,
                      j[i].called);
        ck_assert_int_eq(j[i].inside, 0);
        if (j[i].err == -EAGAIN) {
            /* its worker's fork was refused */
            ck_assert_str_eq(j[i].msg, forkmsg);
            nagain++;
        } else if (i % 4 == 1) {
            ck_assert_msg(j[i].err == -EPIPE && strstr(j[i].msg,
                          "(fault_pool_job) exited with 1 call pending"),
                          "call %d (die): %d '%s'", i, j[i].err, j[i].msg);
            npipe++;
        } else {
            snprintf(tag, sizeof tag, "t%d", i);
            ck_assert_msg(j[i].err == 0, "call %d: %d '%s'", i, j[i].err,
                          j[i].msg);
            ck_assert_str_eq(j[i].tag, tag);
            nok++;
        }
    }
    /* the faults did happen, and most calls got through all the same */
    ck_assert_int_ge(nagain, 1);
    ck_assert_int_ge(npipe, 1);
    ck_assert_int_ge(nok, FAULT_NJOBS / 2);

    /* the template dies with calls queued: those on live workers are
     * answered by them, the others fail with the template's end */
    for (int i = 0; i < FAULT_NLATE; i++) {
        struct iovec v;

        snprintf(l[i].cmd, sizeof l[i].cmd, "sleep 50 l%d", i);
        v.iov_base = l[i].cmd;
        v.iov_len = strlen(l[i].cmd);
        ck_assert_int_eq(API(tfork_pool_call(pool, 1, &v, fault_job_cb,
                                             &l[i])), 0);
    }
    ck_assert_int_eq(kill(tp, SIGKILL), 0);
    RUN_UNTIL(T.loop, fault_jobs_done(l, FAULT_NLATE), 60.);
    snprintf(tplmsg, sizeof tplmsg, "template %d exited", (int)tp);
    for (int i = 0; i < FAULT_NLATE; i++) {
        char tag[16];

        ck_assert_msg(l[i].called == 1, "late call %d answered %d times", i,
                      l[i].called);
        ck_assert_int_eq(l[i].inside, 0);
        snprintf(tag, sizeof tag, "l%d", i);
        if (l[i].err == 0) {
            ck_assert_str_eq(l[i].tag, tag);
            lok++;
        } else if (l[i].err == -EAGAIN) {
            /* a worker started for it before the kill, and the injected
             * fault refused that fork (slow runs, e.g. under valgrind) */
            ck_assert_str_eq(l[i].msg, forkmsg);
            lagain++;
        } else {
            ck_assert_msg(l[i].err == -EPIPE && strcmp(l[i].msg, tplmsg) ==
                          0, "late call %d: %d '%s'", i, l[i].err, l[i].msg);
            lpipe++;
        }
    }
    ck_assert_int_eq(lok + lagain + lpipe, FAULT_NLATE);
    APIV(tfork_pool_free(pool));
    RUN_UNTIL(T.loop, fault_destroyed, 60.);
    ck_assert_int_eq(fault_destroyed, 1);
    fault_end();
}
END_TEST

/* The pool's template runs out of descriptors and exits: -EMFILE, which
 * for a fork refused by a live template would be worth another try, here
 * breaks the pool -- every queued call and every later one fails with
 * it, once, and the pool does not keep starting workers from a template
 * that is gone. */
START_TEST(test_pool_template_emfile)
{
    struct fault_job first, j[6];
    tfork_pool_opts o = { .max = 1, .start = 0.001, .max_reqs = 1,
                          .on_destroy = fault_pool_destroy };
    struct iovec v = { (void *)"echo x", 6 };
    struct rlimit rl;
    tfork_pool *pool;
    tfork *tpl;
    pid_t tp;
    int n, hi;

    fault_begin(0, "pool template out of fds");
    memset(&first, 0, sizeof first);
    memset(j, 0, sizeof j);
    fault_destroyed = 0;
    tpl = tfork_template(T.loop);
    ck_assert_ptr_nonnull(tpl);
    tp = tfork_pid(tpl);
    fault_add_tpl(tp);
    pool = tfork_pool_new(tpl, "fault_pool_job", &o);
    ck_assert_ptr_nonnull(pool);
    ck_assert_int_eq(API(tfork_pool_call(pool, 1, &v, fault_job_cb, &first)),
                     0);
    RUN_UNTIL(T.loop, first.called, 30.);
    ck_assert_int_eq(first.err, 0);
    /* no room left: the next worker's socket cannot reach it */
    n = fault_fds_of(tp, &hi);
    rl.rlim_cur = rl.rlim_max = (rlim_t)(hi + 1);
    ck_assert_int_eq(prlimit(tp, RLIMIT_NOFILE, &rl, NULL), 0);
    (void)n;
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(API(tfork_pool_call(pool, 1, &v, fault_job_cb,
                                             &j[i])), 0);
    RUN_UNTIL(T.loop, fault_jobs_done(j, 3), 30.);
    for (int i = 0; i < 3; i++) {
        ck_assert_msg(j[i].called == 1, "call %d answered %d times", i,
                      j[i].called);
        ck_assert_msg(j[i].err == -EMFILE && strstr(j[i].msg,
                      "Too many open files"), "call %d: %d '%s'", i,
                      j[i].err, j[i].msg);
    }
    /* broken, no worker left: later calls are refused at once, as for a
     * template that is gone (tfork_pool_call's -EPIPE) */
    for (int i = 3; i < 6; i++)
        ck_assert_int_eq(API(tfork_pool_call(pool, 1, &v, fault_job_cb,
                                             &j[i])), -EPIPE);
    for (int i = 3; i < 6; i++)
        ck_assert_int_eq(j[i].called, 0);
    APIV(tfork_pool_free(pool));
    RUN_UNTIL(T.loop, fault_destroyed, 30.);
    ck_assert_int_eq(fault_destroyed, 1);
    fault_end();
}
END_TEST

/* ---------------------------------------------------------------- suite */

static Suite *fault_suite(void)
{
    Suite *s = suite_create("fault");
    TCase *tc;

    tc = tcase_create("killed template");
    tcase_set_timeout(tc, FAULT_TIMEOUT);
    tcase_add_loop_test(tc, test_default_template_killed, 0, 2);
    tcase_add_loop_test(tc, test_template_killed_in_flight, 0, 4);
    suite_add_tcase(s, tc);

    tc = tcase_create("killed child");
    tcase_set_timeout(tc, FAULT_TIMEOUT);
    tcase_add_loop_test(tc, test_child_killed_mid_stream, 0, 4);
    suite_add_tcase(s, tc);

    tc = tcase_create("killed client");
    tcase_set_timeout(tc, FAULT_TIMEOUT);
    tcase_add_loop_test(tc, test_client_killed_running_child, 0, 2);
    suite_add_tcase(s, tc);

    tc = tcase_create("limits");
    tcase_set_timeout(tc, FAULT_TIMEOUT);
    tcase_add_loop_test(tc, test_emfile_client, 0, 2);
    tcase_add_loop_test(tc, test_emfile_template, 0, 4);
    suite_add_tcase(s, tc);

    tc = tcase_create("send faults");
    tcase_set_timeout(tc, FAULT_TIMEOUT);
    tcase_add_loop_test(tc, test_send_faults, 0, 4);
    tcase_add_loop_test(tc, test_full_socket_64mib, 0, 4);
    suite_add_tcase(s, tc);

    tc = tcase_create("malformed input");
    tcase_set_timeout(tc, FAULT_TIMEOUT);
    tcase_add_loop_test(tc, test_bad_commands, 0, 2 * FAULT_NBAD);
    tcase_add_loop_test(tc, test_failed_template_closes_fds, 0, 4);
    tcase_add_loop_test(tc, test_bad_replies, 0, 2 * FAULT_NBADREP);
    suite_add_tcase(s, tc);

    tc = tcase_create("pool");
    tcase_set_timeout(tc, FAULT_TIMEOUT);
    tcase_add_test(tc, test_pool_faults);
    tcase_add_test(tc, test_pool_template_emfile);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(fault_suite());
    int failed;

    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
