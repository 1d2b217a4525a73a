/* testutil.h: helpers shared by the Check suites (clock, fds, children, loops, callbacks). */
#ifndef TFORK_TESTUTIL_H
#define TFORK_TESTUTIL_H

#include <stddef.h>
#include <sys/types.h>
#include <ev.h>

#include "tfork.h"

/* Results of a run callback (tu_on_run) and an exit callback (tu_on_exit_cb). */
struct tu_res {
    int run_called;
    int run_fd;
    int run_err;
    pid_t run_pid;
    char msg[512];
    int exit_called;
    pid_t exit_pid;
    int status;
};

/* Monotonic clock in seconds. */
double tu_now(void);
/* Open descriptors of pid ("self" when 0; not counting the one it reads). */
int tu_fd_count_of(pid_t pid);
/* Open descriptors of this process. */
int tu_fd_count(void);
/* Children of pid (every thread's), zombies included; at most max in out,
 * returns how many there are. */
int tu_children_of(pid_t pid, pid_t *out, int max);
/* A timer callback that does nothing (keeps EVRUN_ONCE from blocking). */
void tu_tick_cb(struct ev_loop *loop, ev_timer *w, int revents);
/* Sets *(int *)w->data and breaks out of ev_run. */
void tu_watchdog_cb(struct ev_loop *loop, ev_timer *w, int revents);
/* libev's default loop when i, else a new one; fails the test on NULL. */
struct ev_loop *tu_loop_for(int i);
/* The library keeps nothing alive once all is done: ev_run returns by
 * itself (an unreferenced watchdog says if it did not). */
void tu_loop_drains(struct ev_loop *loop);
/* Fails the test if this process has any child (or zombie) left. */
void tu_no_children(void);
/* Common end of a test on a loop: nothing referenced, nothing left; the
 * loop is destroyed and the fd count must be fds0 again. */
void tu_finish(struct ev_loop *loop, int fds0);
/* Zeroes r, with run_fd -1. */
void tu_res_init(struct tu_res *r);
/* tfork run callback; data is a struct tu_res. */
void tu_on_run(tfork *p, int fd, int err, void *data);
/* tfork exit callback; data is a struct tu_res. */
void tu_on_exit_cb(pid_t pid, int status, void *data);
/* Reads fd until EOF (every writer closed) into out (NUL-terminated);
 * fails the test if EOF does not come within secs seconds. */
size_t tu_read_to_eof(int fd, char *out, size_t cap, double secs);

/* Runs loop until cond holds; fails the test after secs seconds. */
#define RUN_UNTIL(loop, cond, secs)                                         \
    do {                                                                    \
        double dl_ = tu_now() + (secs);                                     \
        ev_timer tick_;                                                     \
        ev_timer_init(&tick_, tu_tick_cb, 0.05, 0.05);                      \
        ev_timer_start((loop), &tick_);                                     \
        while (!(cond)) {                                                   \
            ck_assert_msg(tu_now() < dl_, "timed out waiting for: %s",      \
                          #cond);                                           \
            ev_run((loop), EVRUN_ONCE);                                     \
        }                                                                   \
        ev_timer_stop((loop), &tick_);                                      \
    } while (0)

#endif
