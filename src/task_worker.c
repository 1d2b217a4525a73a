/* task_worker.c: a task server's worker (tfork/task.h).  The server's
 * template forks one per client connection and runs tfork__task_worker in
 * it with the connection as its last arg; the worker then serves that
 * client as an RPC child that calls nothing but the task dispatcher below:
 * each call is [method, args...]; an empty method is the end of a
 * checkout.  Log lines go out as RPC events ahead of the answer. */
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "tfork-int.h"
#include "tfork/task.h"

typedef int task_func(tfork_task_req *req, const char *method, int n,
                      const struct iovec *args);
typedef int task_setup_func(tfork_task_req *req);
typedef void task_done_func(void);

/* One worker per process. */
static struct {
    const char *name, *interface, *dispatch, *setup, *done;
    double hung;                /* seconds, 0: none */
    int setup_done;
    uint32_t call;              /* the call being served (its handle) */
    int answered;               /* it has its answer */
    int in_setup;               /* setup is running: failures are kept */
    tfork_rpc_req *rq;          /* its RPC request */
    char setup_msg[1024];       /* what setup's tfork_task_fail said */
    int setup_failed;
} W;

static int live(const tfork_task_req *req)
{
    return W.call && (uintptr_t)req == W.call && !W.answered;
}

int tfork_task_reply(tfork_task_req *req, int n, const struct iovec *res)
{
    int e;

    if (!live(req) || W.in_setup)
        return -EINVAL;
    e = tfork_rpc_reply(W.rq, n, res);
    if (e == 0 || e == -EPIPE)
        W.answered = 1;
    return e;
}

int tfork_task_fail(tfork_task_req *req, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    int e;

    if (!live(req) || !fmt)
        return -EINVAL;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (W.in_setup) {           /* told as "setup failed: ..." */
        snprintf(W.setup_msg, sizeof W.setup_msg, "%s", msg);
        W.setup_failed = 1;
        return 0;
    }
    e = tfork_rpc_fail(W.rq, msg);
    if (e == 0 || e == -EPIPE)
        W.answered = 1;
    return e;
}

int tfork_task_log(tfork_task_req *req, int level, const char *fmt, ...)
{
    char msg[4096], lv[16], tm[32];
    struct timespec ts;
    struct iovec v[4];
    va_list ap;

    if (!live(req) || !fmt)
        return -EINVAL;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(lv, sizeof lv, "%d", level);
    snprintf(tm, sizeof tm, "%.6f", (double)ts.tv_sec + ts.tv_nsec / 1e9);
    v[0].iov_base = (void *)"log";
    v[0].iov_len = 3;
    v[1].iov_base = lv;
    v[1].iov_len = strlen(lv);
    v[2].iov_base = tm;
    v[2].iov_len = strlen(tm);
    v[3].iov_base = msg;
    v[3].iov_len = strlen(msg);
    return tfork_rpc_event(4, v);
}

/* A call that runs longer than hung_worker_timeout ends the worker:
 * SIGALRM's default action, whatever the call is stuck in. */
static void hung_arm(int on)
{
    struct itimerval it;

    if (W.hung <= 0)
        return;
    memset(&it, 0, sizeof it);
    if (on) {
        it.it_value.tv_sec = (time_t)W.hung;
        it.it_value.tv_usec = (suseconds_t)((W.hung - (double)
                                             it.it_value.tv_sec) * 1e6);
        if (!it.it_value.tv_sec && !it.it_value.tv_usec)
            it.it_value.tv_usec = 1;
    }
    setitimer(ITIMER_REAL, &it, NULL);
}

static void (*find(const char *fn))(void)
{
    return fn && *fn ? tfork__lookup(fn) : NULL;
}

static int run_setup(tfork_task_req *h, tfork_rpc_req *rq)
{
    task_setup_func *f = (task_setup_func *)find(W.setup);
    char msg[1200];
    int r;

    if (!f) {
        snprintf(msg, sizeof msg, "setup failed: no function '%s' in "
                 "worker %d", W.setup, (int)getpid());
        goto failed;
    }
    W.in_setup = 1;
    hung_arm(1);
    r = f(h);
    hung_arm(0);
    W.in_setup = 0;
    if (r == 0 && !W.setup_failed) {
        W.setup_done = 1;
        return 0;
    }
    if (W.setup_failed)
        snprintf(msg, sizeof msg, "setup failed: %s", W.setup_msg);
    else
        snprintf(msg, sizeof msg, "setup failed: %s returned %d", W.setup,
                 r);
failed:
    /* the worker is unfit: say why, then go; the client's next checkout
     * gets a fresh one */
    tfork__rpc_fail_code(rq, -EREMOTEIO, msg);
    fflush(NULL);
    _exit(0);
}

static int task_call(tfork_rpc_req *rq, int n, const struct iovec *args)
{
    tfork_task_req *h;
    const char *method;
    task_func *f;
    char fname[512];
    int r;

    if (n < 1)
        return tfork_rpc_fail(rq, "task call without a method");
    method = args[0].iov_base;
    if (!*method) {             /* a checkout was released */
        task_done_func *d = (task_done_func *)find(W.done);

        if (d)
            d();
        return tfork_rpc_reply(rq, 0, NULL);
    }
    if (++W.call == 0)
        W.call = 1;
    h = (tfork_task_req *)(uintptr_t)W.call;
    W.answered = 0;
    W.rq = rq;
    if (W.setup && *W.setup && !W.setup_done)
        run_setup(h, rq);
    if (W.interface && *W.interface) {
        f = (task_func *)find(W.interface);
        snprintf(fname, sizeof fname, "%s", W.interface);
    } else {
        snprintf(fname, sizeof fname, "%s%s", W.dispatch, method);
        f = (task_func *)find(fname);
    }
    if (!f) {
        char msg[700];

        snprintf(msg, sizeof msg, "no method '%s' in worker %d (no "
                 "function %s)", method, (int)getpid(), fname);
        W.call = 0;
        tfork_rpc_fail(rq, msg);
        return 0;
    }
    hung_arm(1);
    r = f(h, method, n - 1, args + 1);
    hung_arm(0);
    if (!W.answered) {
        char msg[700];

        snprintf(msg, sizeof msg, "method %s: %s returned %d without "
                 "replying", method, fname, r);
        tfork_rpc_fail(rq, msg);
    }
    W.call = 0;
    return 0;
}

static void started(void)
{
    char pid[16];
    struct iovec v[2];

    snprintf(pid, sizeof pid, "%d", (int)getpid());
    v[0].iov_base = (void *)"hello";
    v[0].iov_len = 5;
    v[1].iov_base = pid;
    v[1].iov_len = strlen(pid);
    tfork_rpc_event(2, v);
}

/* Run args (the server sent them to its template): "tfork-task",
 * name, interface, dispatch, setup, checkout_done, hung timeout; then
 * the connection's fd. */
int tfork__task_worker(int fd, int argc, const tfork_arg *argv)
{
    int conn;

    if (argc != 8 || strcmp(argv[0].buf, "tfork-task") != 0 ||
        argv[7].fd < 0)
        return 2;
    close(fd);                  /* the server needs no word from us */
    W.name = argv[1].buf;
    W.interface = argv[2].buf;
    W.dispatch = argv[3].buf;
    W.setup = argv[4].buf;
    W.done = argv[5].buf;
    W.hung = atof(argv[6].buf);
    conn = argv[7].fd;
    tfork__proctitle("tfork-task %s: worker", W.name);
    return tfork__rpc_serve(conn, 0, NULL, TFORK__TASK_FUNC, task_call,
                            started);
}
