/* prog_fault_owner.c: a client that check_fault kills with SIGKILL while
 * it has a template, an unrun child and a running child.  It waits until
 * the running child has written its first line and every pid is known,
 * prints "pids TEMPLATE UNRUN RUNNING" on one line and sleeps forever.
 *   exec      a tfork_new_exec template (the run function comes from
 *             tests/mod_core_basic.so, whose path is argv[2])
 *   template  a tfork_template copy (fault_owner_block, below) */
#include <errno.h>
#include <ev.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tfork.h"

/* The running child: says "up" on its socket, then waits to be killed
 * (it must outlive its client: running children are the user's). */
static int fault_owner_block(int fd, int argc, const tfork_arg *argv)
{
    (void)argc;
    (void)argv;
    if (write(fd, "up\n", 3) != 3)
        return 1;
    for (;;)
        pause();
}
TFORK_EXPORT(fault_owner_block);

static void tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
}

static int run_err = 1;     /* 1 until the run callback came */
static int run_fd = -1;
static pid_t run_pid;       /* the handle is freed after the callback */

static void run_cb(tfork *p, int fd, int err, void *data)
{
    (void)data;
    run_err = err;
    run_pid = tfork_pid(p);
    run_fd = fd;    /* kept open: the child's socket stays connected */
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "template";
    int exec = strcmp(mode, "exec") == 0;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    tfork *tpl, *c, *r;
    ev_timer tick;
    time_t dl;

    if (!loop || (exec && argc < 3))
        return 2;
    tpl = exec ? tfork_new_exec(loop) : tfork_template(loop);
    if (!tpl)
        return 3;
    if (exec && tfork_require(tpl, argv[2]) != 0)
        return 4;
    c = tfork_fork(tpl);
    if (!c || tfork_send_arg(c, "x", 1) != 0)
        return 5;
    r = tfork_fork(tpl);
    if (!r || tfork_run(r, exec ? "mod_core_block" : "fault_owner_block",
                        run_cb, NULL) != 0)
        return 6;
    ev_timer_init(&tick, tick_cb, 0.05, 0.05);
    ev_timer_start(loop, &tick);
    dl = time(NULL) + 30;
    while (run_err == 1 || !tfork_pid(c)) {
        if (time(NULL) > dl) {
            fprintf(stderr, "prog_fault_owner: pids never came\n");
            return 7;
        }
        ev_run(loop, EVRUN_ONCE);
    }
    if (run_err != 0) {
        fprintf(stderr, "prog_fault_owner: run failed: %d\n", run_err);
        return 8;
    }
    /* the child's first line: it has written all it will write before
     * we can be killed (else it could die of SIGPIPE, not of us) */
    for (;;) {
        struct pollfd pfd = { run_fd, POLLIN, 0 };
        char ch;

        if (time(NULL) > dl) {
            fprintf(stderr, "prog_fault_owner: the child said nothing\n");
            return 9;
        }
        if (poll(&pfd, 1, 100) <= 0)
            continue;
        if (read(run_fd, &ch, 1) != 1) {
            if (errno == EAGAIN || errno == EINTR)
                continue;
            return 10;
        }
        if (ch == '\n')
            break;
    }
    printf("pids %d %d %d\n", (int)tfork_pid(tpl), (int)tfork_pid(c),
           (int)run_pid);
    fflush(stdout);
    for (;;)
        pause();
}
