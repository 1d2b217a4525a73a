/* task_client.c: the client side of tfork/task.h.  Each connection to
 * the server is one worker, driven as an RPC channel (rpc.c); a checkout
 * borrows one connection and runs its calls on it one at a time, in
 * order.  Checkouts wait for a connection first come, first served. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "tfork-int.h"
#include "tfork/task.h"

struct conn {
    struct conn *next;          /* in the client's list */
    tfork_task_client *c;
    int fd;                     /* while connecting, else -1 */
    tfork__watch *cw;           /* the connect in progress */
    tfork_rpc *r;               /* once connected */
    pid_t pid;                  /* the worker's, once it said hello */
    tfork_task_checkout *co;    /* its holder, or NULL: idle */
    int nco;                    /* checkouts it has served */
    int dead;                   /* lost or dropped: never lent again */
};

struct tcall {
    struct tcall *next;
    tfork_task_checkout *co;
    tfork_task_cb *cb;
    void *data;
    int n;                      /* parts: method, then the args */
    struct iovec *v;            /* n iovecs, then the bytes */
    int sent;                   /* the RPC layer holds it: call_cb will
                                   run for it, exactly once */
    int listed;                 /* in its checkout's list */
    int dropped;                /* the checkout answers it itself
                                   (timeout, abort, loss): call_cb only
                                   lets go of it */
};

struct tfork_task_checkout {
    tfork_task_client *c;
    tfork_task_checkout *wnext; /* in the client's wait queue */
    int waiting;
    struct tcall *head, *tail;  /* not yet answered; head may be sent */
    struct conn *conn;          /* the worker it holds */
    double timeout;
    tfork__timer *timer;
    tfork__watch *later;        /* failures told from the loop */
    int err;                    /* sticky failure, 0 if none */
    char *errmsg;
    int tainted;                /* a call failed in the worker */
    int released;
    int busy;                   /* our callbacks on the stack */
    tfork_task_log_cb *log_cb;
    void *log_data;
};

struct tfork_task_client {
    struct ev_loop *loop;
    tfork_task_client_opts o;
    char *addr;
    struct sockaddr_storage ss;
    socklen_t sslen;
    struct conn *conns;
    int nconns;                 /* alive, connecting included */
    int connecting;
    tfork_task_checkout *whead, *wtail;
    tfork__timer *retry;        /* reconnects after a failed connect */
    double backoff;
    int ncheckouts;             /* handles not yet gone */
    int freed;
};

static void dispatch(tfork_task_client *c);
static void pump(tfork_task_checkout *co);
static void co_check(tfork_task_checkout *co);

static void client_release(tfork_task_client *c)
{
    tfork__timer_free(c->retry);
    free(c->addr);
    free(c);
}

/* ---- connections ---- */

static void conn_unlink(struct conn *k)
{
    tfork_task_client *c = k->c;
    struct conn **pp;

    for (pp = &c->conns; *pp; pp = &(*pp)->next) {
        if (*pp == k) {
            *pp = k->next;
            c->nconns--;
            return;
        }
    }
}

/* The connection goes: abruptly (the worker's pending answer is not
 * wanted) or gracefully (the worker answers what it has, then sees EOF). */
static void conn_drop(struct conn *k, int abrupt)
{
    tfork_rpc *r = k->r;

    if (k->dead)
        return;
    k->dead = 1;
    k->r = NULL;
    conn_unlink(k);
    if (k->co && k->co->conn == k)
        k->co->conn = NULL;
    k->co = NULL;
    if (k->cw) {
        tfork__watch_free(k->cw);
        k->c->connecting--;
    }
    if (k->fd >= 0)
        close(k->fd);
    tfork__rpc_detach(r);       /* k is gone: no on_event, on_error */
    if (r && abrupt)
        tfork__rpc_abort(r, -ECONNABORTED, "connection dropped");
    else if (r)
        tfork_rpc_free(r);
    free(k);
}

static void on_event(tfork_rpc *r, int n, const struct iovec *ev,
                     void *data)
{
    struct conn *k = data;

    (void)r;
    if (n == 2 && strcmp(ev[0].iov_base, "hello") == 0) {
        k->pid = (pid_t)atol(ev[1].iov_base);
        tfork__rpc_set_pid(k->r, k->pid);
    } else if (n == 4 && strcmp(ev[0].iov_base, "log") == 0 && k->co &&
               k->co->log_cb) {
        tfork_task_checkout *co = k->co;

        co->busy++;
        co->log_cb(co, atoi(ev[1].iov_base), atof(ev[2].iov_base), k->pid,
                   ev[3].iov_base, co->log_data);
        co->busy--;
        co_check(co);
    }
}

static void fail_sticky(tfork_task_checkout *co, int err, const char *fmt,
                        ...) __attribute__((format(printf, 3, 4)));

static void connect_failed(tfork_task_client *c);

static void on_error(tfork_rpc *r, int err, const char *msg, void *data)
{
    struct conn *k = data;
    tfork_task_client *c = k->c;
    int early = !k->pid;

    (void)r;
    (void)err;
    (void)msg;
    if (k->co)                  /* drops k too */
        fail_sticky(k->co, -EPIPE, "lost connection to worker %ld",
                    (long)k->pid);
    else
        conn_drop(k, 0);
    /* closed before the worker said hello: the server refused us or
     * could not start one; do not reconnect at full speed */
    if (early)
        connect_failed(c);
    dispatch(c);
}

static const tfork_rpc_opts rpc_opts_base = { .on_event = on_event,
                                              .on_error = on_error };

static void connected(struct conn *k)
{
    tfork_rpc_opts o = rpc_opts_base;
    tfork_task_client *c = k->c;

    o.data = k;
    k->r = tfork__rpc_attach(c->loop, k->fd, TFORK__TASK_FUNC, &o);
    if (!k->r) {
        close(k->fd);           /* attach did not take it */
        k->fd = -1;
        conn_drop(k, 1);
        return;
    }
    k->fd = -1;
    c->backoff = 0;
}

static void retry_cb(void *arg)
{
    dispatch(arg);
}

static void connect_failed(tfork_task_client *c)
{
    /* not up yet, or restarting: try again soon, checkouts wait within
     * their timeouts */
    c->backoff = c->backoff ? c->backoff * 2 : 0.02;
    if (c->backoff > 0.5)
        c->backoff = 0.5;
    if (!tfork__timer_active(c->retry))     /* alive while some wait */
        tfork__timer_start(c->retry, c->backoff, c->whead != NULL);
}

static void connect_cb(void *arg, int rd, int wr)
{
    struct conn *k = arg;
    tfork_task_client *c = k->c;
    int e = 0;
    socklen_t len = sizeof e;

    (void)rd;
    (void)wr;
    if (getsockopt(k->fd, SOL_SOCKET, SO_ERROR, &e, &len) < 0)
        e = errno;
    tfork__watch_free(k->cw);
    k->cw = NULL;
    c->connecting--;
    if (e) {
        conn_drop(k, 1);
        connect_failed(c);
        return;
    }
    connected(k);
    dispatch(c);
}

static void conn_new(tfork_task_client *c)
{
    struct conn *k = calloc(1, sizeof *k);
    int r;

    if (!k)
        return;
    k->c = c;
    k->fd = socket(c->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK |
                   SOCK_CLOEXEC, 0);
    if (k->fd < 0) {
        free(k);
        connect_failed(c);
        return;
    }
    k->next = c->conns;
    c->conns = k;
    c->nconns++;
    r = connect(k->fd, (struct sockaddr *)&c->ss, c->sslen);
    if (r == 0) {
        connected(k);
        return;
    }
    if (errno == EINPROGRESS || errno == EAGAIN) {
        k->cw = tfork__watch_new(c->loop, connect_cb, NULL, k);
        if (k->cw) {
            c->connecting++;
            tfork__watch_io(k->cw, k->fd, 0, 1, 1);
            return;
        }
    }
    conn_drop(k, 1);
    connect_failed(c);
}

/* Lends idle workers to waiting checkouts, connects more while some
 * wait (up to max_workers), keeps min_workers open. */
static void dispatch(tfork_task_client *c)
{
    if (c->freed)
        return;
    for (;;) {
        int waiting = 0, want;

        for (struct conn *k = c->conns; k && c->whead; k = k->next) {
            if (k->r && !k->co) {
                tfork_task_checkout *co = c->whead;

                c->whead = co->wnext;
                if (!c->whead)
                    c->wtail = NULL;
                co->wnext = NULL;
                co->waiting = 0;
                k->co = co;
                k->nco++;
                co->conn = k;
                pump(co);
            }
        }
        for (tfork_task_checkout *co = c->whead; co; co = co->wnext)
            waiting++;
        want = waiting - c->connecting;
        if (want < c->o.min_workers - c->nconns)
            want = c->o.min_workers - c->nconns;
        if (want <= 0 || c->nconns >= c->o.max_workers ||
            tfork__timer_active(c->retry))
            return;
        conn_new(c);            /* connected at once, pending, or failed */
    }
}

/* ---- checkouts ---- */

static void call_free(struct tcall *t)
{
    free(t->v);
    free(t);
}

/* Frees co; 1 when the client went with it (freed, and co its last). */
static int co_release_now(tfork_task_checkout *co)
{
    tfork_task_client *c = co->c;

    tfork__timer_free(co->timer);
    tfork__watch_free(co->later);
    free(co->errmsg);
    free(co);
    if (--c->ncheckouts == 0 && c->freed) {
        client_release(c);
        return 1;
    }
    return 0;
}

static void wait_remove(tfork_task_checkout *co)
{
    tfork_task_client *c = co->c;
    tfork_task_checkout **pp = &c->whead, *prev = NULL;

    if (!co->waiting)
        return;
    while (*pp != co) {
        prev = *pp;
        pp = &(*pp)->wnext;
    }
    *pp = co->wnext;
    if (c->wtail == co)
        c->wtail = prev;
    co->wnext = NULL;
    co->waiting = 0;
}

static void done_cb(int err, const char *msg, int n,
                    const struct iovec *res, void *data)
{
    (void)err;
    (void)msg;
    (void)n;
    (void)res;
    (void)data;
}

/* A released checkout with nothing pending gives its worker back (or
 * drops it) and goes. */
static void co_check(tfork_task_checkout *co)
{
    tfork_task_client *c = co->c;
    struct conn *k = co->conn;

    if (!co->released || co->busy || co->head)
        return;
    wait_remove(co);
    if (k) {
        co->conn = NULL;
        k->co = NULL;
        if ((co->tainted && !c->o.dont_refork_after_error) ||
            (c->o.max_checkouts > 0 && k->nco >= c->o.max_checkouts)) {
            conn_drop(k, 0);    /* a fresh worker for the next one */
        } else {
            /* checkout_done runs in the worker before the next call */
            struct iovec v = { (void *)"", 0 };

            if (tfork_rpc_call(k->r, 1, &v, done_cb, NULL) < 0)
                conn_drop(k, 1);
        }
    }
    if (!co_release_now(co))
        dispatch(c);
}

/* Tells one call its result; co may be released by the callback. */
static void answer(struct tcall *t, int err, const char *msg, int n,
                   const struct iovec *res)
{
    tfork_task_checkout *co = t->co;

    co->busy++;
    t->cb(co, err, msg, n, res, t->data);
    co->busy--;
}

/* Every call not yet answered fails with err and msg, in order. */
static void fail_all(tfork_task_checkout *co, int err, const char *msg)
{
    while (co->head) {
        struct tcall *t = co->head;

        co->head = t->next;
        if (!co->head)
            co->tail = NULL;
        t->listed = 0;
        t->dropped = 1;         /* a late answer is not wanted */
        answer(t, err, msg, 0, NULL);
        if (!t->sent)
            call_free(t);
    }
    tfork__timer_stop(co->timer);
}

static void later_cb(void *arg)
{
    tfork_task_checkout *co = arg;

    if (co->err)
        fail_all(co, co->err, co->errmsg ? co->errmsg : "out of memory");
    co_check(co);
}

/* A failure that stays: pending calls learn it from the loop, later
 * calls too; the worker is dropped. */
static void fail_sticky(tfork_task_checkout *co, int err, const char *fmt,
                        ...)
{
    char msg[1024];
    va_list ap;

    if (co->err)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    co->err = err;
    co->errmsg = strdup(msg);
    if (co->head)
        co->head->dropped = 1;  /* answered below, from the loop */
    wait_remove(co);
    if (co->conn) {
        struct conn *k = co->conn;

        co->conn = NULL;
        k->co = NULL;
        conn_drop(k, 1);
    }
    tfork__timer_stop(co->timer);
    tfork__watch_later(co->later);
}

static void call_cb(int err, const char *msg, int n, const struct iovec *res,
                    void *data)
{
    struct tcall *t = data;
    tfork_task_checkout *co = t->co;

    t->sent = 0;
    if (t->dropped) {           /* the checkout answers it, or did */
        if (!t->listed)
            call_free(t);
        return;
    }
    /* t is co->head */
    co->head = t->next;
    if (!co->head)
        co->tail = NULL;
    t->listed = 0;
    co->busy++;
    if (err == 0) {
        answer(t, 0, "", n, res);
    } else if (err == -ECANCELED || err == -EREMOTEIO) {
        /* the worker failed it: the calls queued behind it go too */
        co->tainted = 1;
        if (err == -EREMOTEIO && co->conn) {
            /* its setup failed and it exits: the next call gets another */
            struct conn *k = co->conn;

            co->conn = NULL;
            k->co = NULL;
            conn_drop(k, 0);
        }
        answer(t, err, msg, 0, NULL);
        fail_all(co, err, msg);
    } else {
        /* the connection is lost (the worker exited or was killed, the
         * server went away): sticky */
        char m[256];

        (void)msg;
        snprintf(m, sizeof m, "lost connection to worker %ld",
                 co->conn ? (long)co->conn->pid : 0L);
        fail_sticky(co, -EPIPE, "%s", m);
        answer(t, -EPIPE, m, 0, NULL);
    }
    call_free(t);
    co->busy--;
    if (co->head && !co->err)
        tfork__timer_start(co->timer, co->timeout, 1);
    else if (!co->head)
        tfork__timer_stop(co->timer);
    pump(co);
    co_check(co);
}

/* Sends the next call when the worker is free; asks for a worker. */
static void pump(tfork_task_checkout *co)
{
    struct tcall *t = co->head;
    tfork_task_client *c = co->c;
    int e;

    if (!t || t->sent || co->err)
        return;
    if (c->freed) {
        fail_sticky(co, -ENOTCONN, "client freed");
        return;
    }
    if (!co->conn) {
        if (!co->waiting) {
            co->waiting = 1;
            co->wnext = NULL;
            if (c->wtail)
                c->wtail->wnext = co;
            else
                c->whead = co;
            c->wtail = co;
            dispatch(c);
        }
        return;
    }
    t->sent = 1;
    e = tfork_rpc_call(co->conn->r, t->n, t->v, call_cb, t);
    if (e < 0) {
        t->sent = 0;
        fail_sticky(co, e == -EPIPE ? -EPIPE : e, "lost connection to "
                    "worker %ld: %s", (long)co->conn->pid, tfork_strerror(e));
    }
}

static void timeout_cb(void *arg)
{
    tfork_task_checkout *co = arg;

    fail_sticky(co, -ETIMEDOUT, "checkout timed out after %g s",
                co->timeout);
}

/* ---- public API ---- */

tfork_task_client *tfork_task_client_new(struct ev_loop *loop,
                                         const tfork_task_client_opts *o)
{
    tfork_task_client *c;
    const char *path;
    int saved = errno;

    if (!loop || !o || !o->connect || o->min_workers < 0 ||
        o->max_workers < 0 || o->timeout < 0 || o->max_checkouts < 0 ||
        (o->max_workers && o->min_workers > o->max_workers)) {
        errno = EINVAL;
        return NULL;
    }
    c = calloc(1, sizeof *c);
    if (!c) {
        errno = ENOMEM;
        return NULL;
    }
    c->loop = loop;
    c->o = *o;
    if (!c->o.max_workers)
        c->o.max_workers = 20;
    if (c->o.timeout <= 0)
        c->o.timeout = 30;
    if (tfork__task_addr(o->connect, &c->ss, &c->sslen, &path) < 0) {
        free(c);
        errno = EINVAL;
        return NULL;
    }
    c->addr = strdup(o->connect);
    c->retry = tfork__timer_new(loop, retry_cb, c);
    if (!c->addr || !c->retry) {
        client_release(c);
        errno = ENOMEM;
        return NULL;
    }
    c->o.connect = c->addr;
    dispatch(c);
    errno = saved;
    return c;
}

int tfork_task_client_workers(const tfork_task_client *c)
{
    int n = 0;

    if (c)
        for (struct conn *k = c->conns; k; k = k->next)
            if (k->r)
                n++;
    return n;
}

void tfork_task_client_free(tfork_task_client *c)
{
    if (!c || c->freed)
        return;
    c->freed = 1;
    tfork__timer_stop(c->retry);
    while (c->whead) {
        tfork_task_checkout *co = c->whead;

        c->whead = co->wnext;
        co->waiting = 0;
        co->wnext = NULL;
        fail_sticky(co, -ENOTCONN, "client freed");
    }
    c->wtail = NULL;
    while (c->conns) {
        struct conn *k = c->conns;

        if (k->co)              /* drops k too */
            fail_sticky(k->co, -ENOTCONN, "client freed");
        else
            conn_drop(k, 1);
    }
    if (c->ncheckouts == 0)
        client_release(c);
}

tfork_task_checkout *tfork_task_checkout_new(tfork_task_client *c,
                                             double timeout)
{
    tfork_task_checkout *co;

    if (!c || c->freed) {
        errno = EINVAL;
        return NULL;
    }
    co = calloc(1, sizeof *co);
    if (!co) {
        errno = ENOMEM;
        return NULL;
    }
    co->c = c;
    co->timeout = timeout > 0 ? timeout : c->o.timeout;
    co->timer = tfork__timer_new(c->loop, timeout_cb, co);
    co->later = tfork__watch_new(c->loop, NULL, later_cb, co);
    if (!co->timer || !co->later) {
        tfork__timer_free(co->timer);
        tfork__watch_free(co->later);
        free(co);
        errno = ENOMEM;
        return NULL;
    }
    c->ncheckouts++;
    return co;
}

int tfork_task_call(tfork_task_checkout *co, const char *method, int n,
                    const struct iovec *args, tfork_task_cb *cb, void *data)
{
    struct tcall *t;
    size_t mlen, total, off;
    char *bytes;
    int e;

    if (!co || co->released || !method || !*method || !cb)
        return -EINVAL;
    e = tfork__parts_check(n, args);
    if (e < 0)
        return e;
    if ((unsigned)n >= TFORK_RPC_PARTS_MAX)    /* the method is a part too */
        return -E2BIG;
    mlen = strlen(method);
    if (mlen > TFORK_STR_MAX)
        return -E2BIG;
    total = mlen + 1;
    for (int i = 0; i < n; i++)
        total += args[i].iov_len;
    if (total - mlen - 1 > TFORK_RPC_MAX - mlen - 1)
        return -E2BIG;
    t = calloc(1, sizeof *t);
    if (!t)
        return -ENOMEM;
    t->v = malloc(sizeof(struct iovec) * (size_t)(n + 1) + total);
    if (!t->v) {
        free(t);
        return -ENOMEM;
    }
    bytes = (char *)(t->v + n + 1);
    memcpy(bytes, method, mlen + 1);
    t->v[0].iov_base = bytes;
    t->v[0].iov_len = mlen;
    off = mlen + 1;
    for (int i = 0; i < n; i++) {
        if (args[i].iov_len)
            memcpy(bytes + off, args[i].iov_base, args[i].iov_len);
        t->v[i + 1].iov_base = bytes + off;
        t->v[i + 1].iov_len = args[i].iov_len;
        off += args[i].iov_len;
    }
    t->n = n + 1;
    t->co = co;
    t->cb = cb;
    t->data = data;
    if (co->tail)
        co->tail->next = t;
    else
        co->head = t;
    co->tail = t;
    t->listed = 1;
    if (co->err) {
        tfork__watch_later(co->later);  /* sticky: told from the loop */
        return 0;
    }
    if (!tfork__timer_active(co->timer))
        tfork__timer_start(co->timer, co->timeout, 1);
    pump(co);
    return 0;
}

void tfork_task_on_log(tfork_task_checkout *co, tfork_task_log_cb *cb,
                       void *data)
{
    if (!co)
        return;
    co->log_cb = cb;
    co->log_data = data;
}

void tfork_task_checkout_log(tfork_task_checkout *co, int level,
                             const char *fmt, ...)
{
    char line[4096];
    struct timespec ts;
    va_list ap;

    if (!co || !fmt || !co->log_cb)
        return;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    clock_gettime(CLOCK_REALTIME, &ts);
    co->busy++;
    co->log_cb(co, level, (double)ts.tv_sec + ts.tv_nsec / 1e9, 0, line,
               co->log_data);
    co->busy--;
}

void tfork_task_abort(tfork_task_checkout *co, const char *msg)
{
    if (!co)
        return;
    fail_sticky(co, -ECONNABORTED, "%s", msg ? msg : "checkout aborted");
}

pid_t tfork_task_worker_pid(const tfork_task_checkout *co)
{
    return co && co->conn ? co->conn->pid : 0;
}

void tfork_task_release(tfork_task_checkout *co)
{
    if (!co || co->released)
        return;
    co->released = 1;
    tfork__watch_later(co->later);      /* goes from the loop */
}
