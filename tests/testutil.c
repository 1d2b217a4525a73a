/* testutil.c: helpers shared by the Check suites (see testutil.h). */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <ev.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tfork.h"
#include "testutil.h"

int tu_in_api;

double tu_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int tu_fd_count_of(pid_t pid)
{
    char path[64];
    DIR *d;
    struct dirent *de;
    int n = 0;

    if (pid)
        snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    else
        snprintf(path, sizeof path, "/proc/self/fd");
    d = opendir(path);
    ck_assert_msg(d != NULL, "opendir %s: %s", path, strerror(errno));
    while ((de = readdir(d)))
        if (de->d_name[0] != '.' && (pid || atoi(de->d_name) != dirfd(d)))
            n++;
    closedir(d);
    return n;
}

int tu_fd_count(void)
{
    return tu_fd_count_of(0);
}

int tu_children_of(pid_t pid, pid_t *out, int max)
{
    char path[320];
    DIR *d;
    struct dirent *de;
    int n = 0;

    snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
    d = opendir(path);
    if (!d)
        return 0;
    while ((de = readdir(d))) {
        FILE *f;
        int c;

        if (de->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "/proc/%d/task/%s/children", (int)pid,
                 de->d_name);
        f = fopen(path, "re");
        if (!f)
            continue;
        while (fscanf(f, "%d", &c) == 1) {
            if (n < max)
                out[n] = c;
            n++;
        }
        fclose(f);
    }
    closedir(d);
    return n;
}

char tu_proc_state(pid_t pid, pid_t *ppid, unsigned long long *start)
{
    char path[64], buf[1024], *p;
    FILE *f;
    size_t n;
    char st = 0;
    int pp = 0;
    unsigned long long t = 0;

    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    f = fopen(path, "re");
    if (!f)
        return 0;
    n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    p = strrchr(buf, ')');
    /* after ")": state, ppid, ..., starttime is the 22nd field */
    if (!p || sscanf(p + 1, " %c %d %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s "
                     "%*s %*s %*s %*s %*s %*s %*s %llu", &st, &pp, &t) != 3)
        return 0;
    if (ppid)
        *ppid = pp;
    if (start)
        *start = t;
    return st;
}

int tu_scan_children(pid_t parent, pid_t *out, char *state, int max)
{
    DIR *d = opendir("/proc");
    struct dirent *e;
    int n = 0;

    ck_assert_ptr_nonnull(d);
    while ((e = readdir(d)) && n < max) {
        char *end;
        long v = strtol(e->d_name, &end, 10);
        pid_t pp = 0;
        char st;

        if (*end || v <= 0)
            continue;
        st = tu_proc_state((pid_t)v, &pp, NULL);
        if (st && pp == parent) {
            out[n] = (pid_t)v;
            if (state)
                state[n] = st;
            n++;
        }
    }
    closedir(d);
    return n;
}

int tu_gone(pid_t pid)
{
    errno = 0;
    return kill(pid, 0) == -1 && errno == ESRCH;
}

const char *tu_testdir(const char *name)
{
    static char path[2][4096];
    static int k;
    const char *dir = getenv("TFORK_TESTDIR");

    ck_assert_msg(dir != NULL, "TFORK_TESTDIR is not set (run make check)");
    k ^= 1;
    snprintf(path[k], sizeof path[k], "%s/%s", dir, name);
    return path[k];
}

int tu_subreaper(void)
{
    int fds = tu_fd_count();

    ck_assert_int_ge(fds, 3);
    ck_assert_int_eq(prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), 0);
    return fds;
}

void tu_tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
}

void tu_watchdog_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    *(int *)w->data = 1;
    ev_break(loop, EVBREAK_ALL);
}

struct ev_loop *tu_loop_for(int i)
{
    struct ev_loop *loop = i ? ev_default_loop(0) : ev_loop_new(EVFLAG_AUTO);

    ck_assert_ptr_nonnull(loop);
    return loop;
}

void tu_guard_start(struct ev_loop *loop, ev_timer *guard,
                    void (*cb)(struct ev_loop *, ev_timer *, int),
                    double secs)
{
    ev_timer_init(guard, cb, secs, 0.);
    ev_timer_start(loop, guard);
    ev_unref(loop);
}

void tu_guard_stop(struct ev_loop *loop, ev_timer *guard)
{
    ev_ref(loop);
    ev_timer_stop(loop, guard);
}

static int tu_pid_in(pid_t pid, const pid_t *set, int n)
{
    for (int i = 0; i < n; i++)
        if (set[i] == pid)
            return 1;
    return 0;
}

int tu_settle(struct ev_loop *loop, double secs, const pid_t *tpl, int ntpl,
              int (*keep)(pid_t pid, char state), const char *what)
{
    double deadline = tu_now() + secs;
    pid_t kids[64];
    char st[64];
    int n, kept = 0;
    siginfo_t si;

    for (;;) {
        ev_run(loop, EVRUN_NOWAIT);
        n = tu_scan_children(getpid(), kids, st, 64);
        kept = 0;
        for (int i = 0; i < n; i++) {
            if (keep && keep(kids[i], st[i]))
                kept++;
            else if (st[i] == 'Z' && !tu_pid_in(kids[i], tpl, ntpl))
                waitpid(kids[i], NULL, WNOHANG);
        }
        if (n == kept || tu_now() > deadline)
            break;
        usleep(5000);
    }
    n = tu_scan_children(getpid(), kids, st, 64);
    ck_assert_msg(n == kept && kept <= 1, "%s: %d child(ren) left behind, "
                  "first pid %d state %c%s", what, n - kept,
                  n > 0 ? (int)kids[0] : 0, n > 0 ? st[0] : '-',
                  n > 0 && tu_pid_in(kids[0], tpl, ntpl) ? " (a template)" :
                  "");
    if (kept)
        return kept;
    memset(&si, 0, sizeof si);
    errno = 0;
    ck_assert_msg(waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) < 0 &&
                  errno == ECHILD, "%s: waitid still sees child %d", what,
                  (int)si.si_pid);
    return 0;
}

void tu_close_loop(struct ev_loop *loop, ev_timer *guard, int fds0,
                   const char *what)
{
    tu_guard_stop(loop, guard);
    ev_loop_destroy(loop);
    ck_assert_msg(tu_fd_count() == fds0, "%s: %d fds open, %d at the start",
                  what, tu_fd_count(), fds0);
}

void tu_loop_drains(struct ev_loop *loop)
{
    ev_timer wd;
    int fired = 0;

    ev_timer_init(&wd, tu_watchdog_cb, 10., 0.);
    wd.data = &fired;
    ev_timer_start(loop, &wd);
    ev_unref(loop);
    ev_run(loop, 0);
    ev_ref(loop);
    ev_timer_stop(loop, &wd);
    ck_assert_msg(!fired, "ev_run did not return: a watcher stayed active");
}

void tu_no_children(void)
{
    pid_t kids[16];
    int n = tu_children_of(getpid(), kids, 16);

    ck_assert_msg(n == 0, "%d child(ren) left behind, first %d", n,
                  n ? (int)kids[0] : 0);
    errno = 0;
    ck_assert_int_eq(waitpid(-1, NULL, WNOHANG), -1);
    ck_assert_int_eq(errno, ECHILD);
}

void tu_finish(struct ev_loop *loop, int fds0)
{
    tu_loop_drains(loop);
    ev_loop_destroy(loop);
    ck_assert_int_eq(tu_fd_count(), fds0);
    tu_no_children();
}

void tu_res_init(struct tu_res *r)
{
    memset(r, 0, sizeof *r);
    r->run_fd = -1;
}

void tu_on_run(tfork *p, int fd, int err, void *data)
{
    struct tu_res *r = data;

    r->run_called++;
    r->run_fd = fd;
    r->run_err = err;
    r->run_pid = tfork_pid(p);
    snprintf(r->msg, sizeof r->msg, "%s", tfork_errmsg(p));
}

void tu_on_exit_cb(pid_t pid, int status, void *data)
{
    struct tu_res *r = data;

    r->exit_called++;
    r->exit_pid = pid;
    r->status = status;
}

char *tu_read(int fd, int line, double secs, const char *what,
              size_t *lenp)
{
    double deadline = tu_now() + secs;
    size_t len = 0, cap = 256;
    char *buf = malloc(cap);

    ck_assert_ptr_nonnull(buf);
    for (;;) {
        struct pollfd pfd = { fd, POLLIN, 0 };
        double left = deadline - tu_now();
        ssize_t r;

        ck_assert_msg(left > 0, "%s: no %s on fd %d within %.0f s (got %zu "
                      "bytes)", what, line ? "line" : "EOF", fd, secs, len);
        if (poll(&pfd, 1, (int)(left * 1000) + 1) <= 0)
            continue;
        if (len + 2 > cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            ck_assert_ptr_nonnull(buf);
        }
        r = read(fd, buf + len, line ? 1 : cap - len - 1);
        if (r < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        ck_assert_msg(r >= 0, "read fd %d: %s", fd, strerror(errno));
        if (r == 0)
            break;
        len += (size_t)r;
        if (line && buf[len - 1] == '\n')
            break;
    }
    buf[len] = 0;
    if (lenp)
        *lenp = len;
    return buf;
}

size_t tu_read_to_eof(int fd, char *out, size_t cap, double secs)
{
    double dl = tu_now() + secs;
    size_t len = 0;

    for (;;) {
        struct pollfd pfd = { fd, POLLIN, 0 };
        int left = (int)((dl - tu_now()) * 1000);
        ssize_t n;

        ck_assert_msg(left > 0, "no EOF within %.0f s: a copy of the write "
                      "end lives on", secs);
        if (poll(&pfd, 1, left) <= 0)
            continue;
        n = read(fd, out + len, cap - 1 - len);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        ck_assert_msg(n >= 0, "read: %s", strerror(errno));
        if (n == 0)
            break;
        len += (size_t)n;
        ck_assert_msg(len < cap - 1, "more output than expected");
    }
    out[len] = '\0';
    return len;
}
