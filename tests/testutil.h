/* testutil.h: helpers shared by the Check suites (clock, fds, children, loops, callbacks). */
#ifndef TFORK_TESTUTIL_H
#define TFORK_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>
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

/* > 0 while a tfork_* call of the test runs (see API). */
extern int tu_in_api;

/* Every tfork_* call a test makes goes through these, so a callback can
 * tell whether it was called from inside one. */
#define API(x)                                                              \
    ({ tu_in_api++; __typeof__(x) api_r_ = (x); tu_in_api--; api_r_; })
#define APIV(x) do { tu_in_api++; x; tu_in_api--; } while (0)

/* Monotonic clock in seconds. */
double tu_now(void);
/* Open descriptors of pid ("self" when 0; not counting the one it reads). */
int tu_fd_count_of(pid_t pid);
/* Open descriptors of this process. */
int tu_fd_count(void);
/* Children of pid (every thread's), zombies included; at most max in out,
 * returns how many there are. */
int tu_children_of(pid_t pid, pid_t *out, int max);
/* State letter of /proc/pid/stat (0: none); ppid, start time unless NULL. */
char tu_proc_state(pid_t pid, pid_t *ppid, unsigned long long *start);
/* Children of parent by a /proc scan (no task/TID/children file needed),
 * their states in state unless NULL; at most max, returns how many. */
int tu_scan_children(pid_t parent, pid_t *out, char *state, int max);
/* pid is reaped: kill(pid, 0) fails with ESRCH (a zombie still answers). */
int tu_gone(pid_t pid);
/* $TFORK_TESTDIR/name; fails the test if unset; the last two stay valid. */
const char *tu_testdir(const char *name);
/* Makes this process a child subreaper; returns its open fds (at least 3). */
int tu_subreaper(void);
/* A timer callback that does nothing (keeps EVRUN_ONCE from blocking). */
void tu_tick_cb(struct ev_loop *loop, ev_timer *w, int revents);
/* Sets *(int *)w->data and breaks out of ev_run. */
void tu_watchdog_cb(struct ev_loop *loop, ev_timer *w, int revents);
/* libev's default loop when i, else a new one; fails the test on NULL. */
struct ev_loop *tu_loop_for(int i);
/* Starts guard (cb after secs) so that it does not keep ev_run alive. */
void tu_guard_start(struct ev_loop *loop, ev_timer *guard,
                    void (*cb)(struct ev_loop *, ev_timer *, int),
                    double secs);
/* Stops a guard that tu_guard_start started. */
void tu_guard_stop(struct ev_loop *loop, ev_timer *guard);
/* A subreaper test's end: runs loop until no child is left but one keep
 * accepts (keep may be NULL), reaping zombies not in tpl, up to secs; fails
 * (what) on any other child or waitable pid.  Returns how many were kept. */
int tu_settle(struct ev_loop *loop, double secs, const pid_t *tpl, int ntpl,
              int (*keep)(pid_t pid, char state), const char *what);
/* Stops guard, destroys loop; fails (what) unless fds0 fds are open again. */
void tu_close_loop(struct ev_loop *loop, ev_timer *guard, int fds0,
                   const char *what);
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
/* Reads fd until EOF (line == 0) or through the first newline, waiting
 * with poll up to secs; fails the test (naming what) when time runs out.
 * The bytes, malloc'ed and NUL-terminated; their count in *lenp unless
 * NULL. */
char *tu_read(int fd, int line, double secs, const char *what,
              size_t *lenp);

/* tu_fnv and tu_pattern are static inline: tests/mod_rpc.c, which links
 * neither testutil.o nor Check, uses them too. */

/* FNV-1a 64 of p[0 .. n-1] continued from h (TU_FNV0 to start). */
#define TU_FNV0 14695981039346656037ull
static inline uint64_t tu_fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *s = p;

    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 1099511628211ull;
    }
    return h;
}

/* n bytes of xorshift64 from seed x, 8 at a time, little end first. */
static inline void tu_pattern(unsigned char *b, size_t n, uint64_t x)
{
    for (size_t i = 0; i < n; i += 8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        for (size_t k = 0; k < 8 && i + k < n; k++)
            b[i + k] = (unsigned char)(x >> (8 * k));
    }
}

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
