/* testutil.c: helpers shared by the Check suites (see testutil.h). */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <ev.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tfork.h"
#include "testutil.h"

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
