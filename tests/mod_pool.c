/* mod_pool.c: the worker check_pool's pools run, loaded with tfork_require
 * into tfork-serve templates (no libtfork: tfork-serve exports the
 * child-side API).  One function serves sync and async pools; the call's
 * one part is a command line:
 *   echo TAG          reply at once
 *   sleep MS TAG      sleep MS milliseconds, then reply
 *   retire MS TAG     sleep MS, tfork_pool_retire(), then reply
 *   double N          reply with 2*N as the tag
 *   event TAG         tfork_rpc_event("ev-TAG", pid), then reply
 *   fail MSG...       tfork_rpc_fail with the rest of the line
 *   exit CODE         _exit(CODE) in the middle of the call
 *   hang              never answer (sync: block for good; async: return 0)
 *   after MS TAG      async: reply from a timer on tfork_rpc_loop() MS
 *                     milliseconds later (sync: as sleep)
 * A reply has five parts: pid, ppid, tag, calls this process has been
 * given so far (1 for its first), calls in flight in it when replying
 * (this one included). */
#include <ev.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tfork.h"
#include "tfork/pool.h"

static int mod_pool_given;      /* calls this worker was given */
static int mod_pool_inflight;   /* calls not yet answered */

struct mod_pool_later {
    ev_timer t;
    tfork_rpc_req *req;
    char tag[64];
};

static void mod_pool_sleep(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

    while (nanosleep(&ts, &ts) != 0)
        ;
}

static int mod_pool_reply(tfork_rpc_req *req, const char *tag)
{
    char pid[24], ppid[24], given[24], inflight[24];
    struct iovec v[5];
    int e;

    snprintf(pid, sizeof pid, "%d", (int)getpid());
    snprintf(ppid, sizeof ppid, "%d", (int)getppid());
    snprintf(given, sizeof given, "%d", mod_pool_given);
    snprintf(inflight, sizeof inflight, "%d", mod_pool_inflight);
    v[0].iov_base = pid;
    v[0].iov_len = strlen(pid);
    v[1].iov_base = ppid;
    v[1].iov_len = strlen(ppid);
    v[2].iov_base = (void *)tag;
    v[2].iov_len = strlen(tag);
    v[3].iov_base = given;
    v[3].iov_len = strlen(given);
    v[4].iov_base = inflight;
    v[4].iov_len = strlen(inflight);
    e = tfork_rpc_reply(req, 5, v);
    mod_pool_inflight--;
    return e;
}

static void mod_pool_later_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct mod_pool_later *l = (struct mod_pool_later *)w;

    (void)revents;
    ev_timer_stop(loop, w);
    mod_pool_reply(l->req, l->tag);
    free(l);
}

int mod_pool_job(tfork_rpc_req *req, int n, const struct iovec *args);
int mod_pool_job(tfork_rpc_req *req, int n, const struct iovec *args)
{
    const char *line = n > 0 ? args[0].iov_base : "";
    char tag[64] = "";
    long ms = 0;
    int k = 0;

    mod_pool_given++;
    mod_pool_inflight++;
    if (sscanf(line, "echo %63s", tag) == 1)
        return mod_pool_reply(req, tag);
    if (sscanf(line, "sleep %ld %63s", &ms, tag) == 2) {
        mod_pool_sleep(ms);
        return mod_pool_reply(req, tag);
    }
    if (sscanf(line, "retire %ld %63s", &ms, tag) == 2) {
        mod_pool_sleep(ms);
        tfork_pool_retire();
        return mod_pool_reply(req, tag);
    }
    if (sscanf(line, "double %d", &k) == 1) {
        snprintf(tag, sizeof tag, "%d", 2 * k);
        return mod_pool_reply(req, tag);
    }
    if (sscanf(line, "event %63s", tag) == 1) {
        char ev[80], pid[24];
        struct iovec v[2];

        snprintf(ev, sizeof ev, "ev-%s", tag);
        snprintf(pid, sizeof pid, "%d", (int)getpid());
        v[0].iov_base = ev;
        v[0].iov_len = strlen(ev);
        v[1].iov_base = pid;
        v[1].iov_len = strlen(pid);
        if (tfork_rpc_event(2, v) < 0)
            return tfork_rpc_fail(req, "mod_pool_job: event not sent");
        return mod_pool_reply(req, tag);
    }
    if (strncmp(line, "fail ", 5) == 0) {
        mod_pool_inflight--;
        return tfork_rpc_fail(req, line + 5);
    }
    if (sscanf(line, "exit %d", &k) == 1)
        _exit(k);
    if (strcmp(line, "hang") == 0) {
        if (tfork_rpc_loop())
            return 0;           /* async: in flight for good */
        for (;;)
            pause();
    }
    if (sscanf(line, "after %ld %63s", &ms, tag) == 2) {
        struct mod_pool_later *l;

        if (!tfork_rpc_loop()) {
            mod_pool_sleep(ms);
            return mod_pool_reply(req, tag);
        }
        l = calloc(1, sizeof *l);
        if (!l)
            return 12;
        l->req = req;
        snprintf(l->tag, sizeof l->tag, "%s", tag);
        ev_timer_init(&l->t, mod_pool_later_cb, (double)ms / 1000., 0.);
        ev_timer_start(tfork_rpc_loop(), &l->t);
        return 0;
    }
    mod_pool_inflight--;
    return tfork_rpc_fail(req, "mod_pool_job: unknown command");
}

/* A plain run function (for a handle that is run, not pooled). */
int mod_pool_run(int fd, int argc, const tfork_arg *argv);
int mod_pool_run(int fd, int argc, const tfork_arg *argv)
{
    (void)fd;
    (void)argc;
    (void)argv;
    return 0;
}
