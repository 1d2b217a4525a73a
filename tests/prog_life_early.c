/* prog_life_early.c: tfork_early() as a user program calls it, for
 * check_life.  Prints what it sees, one line per step, and exits 0 when
 * every step went as the contract says (1 otherwise):
 *   again <tfork_early's second return value>
 *   new: <the worker's report> status <exit status> parent-is-early <0|1>
 *   exec: <the worker's report> status <exit status>
 *     parent-is-template <0|1> template-status <its exit status>
 *   early-pid <pid of the early copy>
 * The worker (a TFORK_EXPORT'ed static function of this program) reports
 * "marker M args A0,A1": marker is set to 1 right after tfork_early, so a
 * pristine copy shows 0. */
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tfork.h"
#include "tfork-int.h"

static int marker;

static int early_worker(int fd, int argc, const tfork_arg *argv)
{
    dprintf(fd, "%d\nmarker %d args", (int)getppid(), marker);
    for (int i = 0; i < argc; i++)
        dprintf(fd, "%s%s", i ? "," : " ", argv[i].fd >= 0 ? "<fd>"
                                                            : argv[i].buf);
    return 7;
}
TFORK_EXPORT(early_worker);

struct res {
    int run_called, run_err, fd;
    pid_t pid;
    char msg[256];
    int exit_called, status;
    pid_t exit_pid;
};

static void on_run(tfork *p, int fd, int err, void *data)
{
    struct res *r = data;

    r->run_called++;
    r->run_err = err;
    r->fd = fd;
    r->pid = tfork_pid(p);
    snprintf(r->msg, sizeof r->msg, "%s", tfork_errmsg(p));
}

static void on_exit_cb(pid_t pid, int status, void *data)
{
    struct res *r = data;

    r->exit_pid = pid;
    r->exit_called++;
    r->status = status;
}

static void tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
}

static int wait_for(struct ev_loop *loop, int *a, int *b)
{
    ev_timer tick;
    time_t dl = time(NULL) + 30;

    ev_timer_init(&tick, tick_cb, 0.05, 0.05);
    ev_timer_start(loop, &tick);
    while (!*a || (b && !*b)) {
        if (time(NULL) > dl) {
            ev_timer_stop(loop, &tick);
            return -1;
        }
        ev_run(loop, EVRUN_ONCE);
    }
    ev_timer_stop(loop, &tick);
    return 0;
}

/* The worker's report: everything up to EOF on the run socket. */
static void slurp(int fd, char *out, size_t cap)
{
    size_t len = 0;

    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    for (;;) {
        ssize_t n = read(fd, out + len, cap - 1 - len);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0 || (len += (size_t)n) == cap - 1)
            break;
    }
    out[len] = '\0';
    close(fd);
}

static int run_worker(struct ev_loop *loop, tfork *p, const char *arg,
                      struct res *r, char *out, size_t cap)
{
    memset(r, 0, sizeof *r);
    r->fd = -1;
    if (tfork_send_arg(p, arg, strlen(arg)) != 0 ||
        tfork_on_exit(p, on_exit_cb, r) != 0 ||
        tfork_run(p, "early_worker", on_run, r) != 0)
        return -1;
    if (wait_for(loop, &r->run_called, &r->exit_called) < 0)
        return -1;
    if (r->run_err || r->fd < 0) {
        snprintf(out, cap, "run failed: %d %s", r->run_err, r->msg);
        return -1;
    }
    slurp(r->fd, out, cap);
    return 0;
}

/* Splits the worker's report into its parent's pid and the rest. */
static const char *report(const char *out, int *ppid)
{
    const char *nl = strchr(out, '\n');

    *ppid = atoi(out);
    return nl ? nl + 1 : "";
}

static int status_code(int st)
{
    return st != -1 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

int main(void)
{
    int again, ok = 1, ppid;
    struct ev_loop *loop;
    struct res r, tr;
    tfork *p, *tpl;
    const char *rest;
    char out[512];

    if (tfork_early() != 0) {
        printf("tfork_early failed\n");
        return 1;
    }
    marker = 1;
    again = tfork_early();
    printf("again %s\n", again == -EALREADY ? "-EALREADY" : "other");
    ok &= again == -EALREADY;

    /* a child straight from the early copy */
    loop = ev_default_loop(0);
    p = tfork_new(loop);
    if (!p || run_worker(loop, p, "one", &r, out, sizeof out) < 0) {
        printf("new: failed: %s\n", p ? out : "tfork_new");
        return 1;
    }
    rest = report(out, &ppid);
    printf("new: %s status %d parent-is-early %d\n", rest,
           status_code(r.status), ppid == (int)tfork__early_pid);
    ok &= ppid == (int)tfork__early_pid && status_code(r.status) == 7 &&
          r.exit_pid == r.pid;

    /* a template forked from the early copy, and a child of it */
    memset(&tr, 0, sizeof tr);
    tpl = tfork_new_exec(loop);
    if (!tpl || tfork_send_arg(tpl, "tpl", 3) != 0 ||
        tfork_on_exit(tpl, on_exit_cb, &tr) != 0) {
        printf("exec: tfork_new_exec failed\n");
        return 1;
    }
    p = tfork_fork(tpl);
    if (!p || run_worker(loop, p, "two", &r, out, sizeof out) < 0) {
        printf("exec: failed: %s\n", p ? out : "tfork_fork");
        return 1;
    }
    tfork_free(tpl);
    if (wait_for(loop, &tr.exit_called, NULL) < 0) {
        printf("exec: the template never exited\n");
        return 1;
    }
    rest = report(out, &ppid);
    printf("exec: %s status %d parent-is-template %d template-status %d\n",
           rest, status_code(r.status), ppid > 0 && ppid == tr.exit_pid,
           status_code(tr.status));
    ok &= ppid > 0 && ppid == tr.exit_pid && ppid != (int)tfork__early_pid &&
          status_code(r.status) == 7 && status_code(tr.status) == 0;
    printf("early-pid %d\n", (int)tfork__early_pid);
    return ok ? 0 : 1;
}
