/* prog_life_owner.c: a client that check_life kills with SIGKILL.  It
 * makes a template and unrun children, waits until every pid is known,
 * prints them on one line ("pids P1 P2 ...") and then sleeps forever.
 *   exec      tfork_new_exec template, child, grandchild
 *   template  the same from tfork_template
 *   early     tfork_early first; tfork_new_exec template (forked from the
 *             early copy), child, grandchild, a tfork_new child, and the
 *             early copy's own pid last */
#include <ev.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tfork.h"
#include "tfork-int.h"

static void tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "exec";
    int early = strcmp(mode, "early") == 0;
    struct ev_loop *loop;
    tfork *tpl, *c, *g, *n = NULL;
    ev_timer tick;
    time_t dl;

    if (early && tfork_early() != 0) {
        fprintf(stderr, "prog_life_owner: tfork_early failed\n");
        return 2;
    }
    loop = ev_loop_new(EVFLAG_AUTO);
    if (!loop)
        return 2;
    tpl = strcmp(mode, "template") == 0 ? tfork_template(loop)
                                        : tfork_new_exec(loop);
    if (!tpl)
        return 3;
    c = tfork_fork(tpl);
    if (!c || tfork_send_arg(c, "x", 1) != 0)
        return 4;
    g = tfork_fork(c);
    if (!g || tfork_send_arg(g, "y", 1) != 0)
        return 5;
    if (early) {
        n = tfork_new(loop);
        if (!n || tfork_send_arg(n, "z", 1) != 0)
            return 6;
    }
    ev_timer_init(&tick, tick_cb, 0.05, 0.05);
    ev_timer_start(loop, &tick);
    dl = time(NULL) + 30;
    while (!tfork_pid(tpl) || !tfork_pid(c) || !tfork_pid(g) ||
           (n && !tfork_pid(n))) {
        if (time(NULL) > dl) {
            fprintf(stderr, "prog_life_owner: pids never came\n");
            return 7;
        }
        ev_run(loop, EVRUN_ONCE);
    }
    printf("pids %d %d %d", (int)tfork_pid(tpl), (int)tfork_pid(c),
           (int)tfork_pid(g));
    if (early)
        printf(" %d %d", (int)tfork_pid(n), (int)tfork__early_pid);
    printf("\n");
    fflush(stdout);
    for (;;)
        pause();
}
