/* rpc.c: the parent side of tfork/rpc.h.  A process is run with the RPC
 * server function (rpc_child.c); calls are encoded at once into a frame
 * queue that waits for the child's socket, and every call is answered
 * exactly once: by the child, or with the reason the child was lost. */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tfork-int.h"
#include "tfork/rpc.h"

/* The server function is found by name in the child, which may be
 * tfork-serve or a copy of this program: register it there as here.
 * Referencing it from this file also links it into static programs. */
static struct tfork_export rpc_server_export = {
    TFORK__RPC_SERVER, (void (*)(void))tfork__rpc_server, NULL
};

__attribute__((constructor)) static void rpc_register(void)
{
    tfork_export_register(&rpc_server_export);
}

struct call {
    struct call *next, *prev;   /* pending calls in call order */
    struct call *hnext;         /* hash chain by id */
    uint32_t id;                /* request id, from 1 */
    tfork_rpc_cb *cb;
    void *data;
};

struct tfork_rpc {
    struct ev_loop *loop;
    tfork__watch *w;            /* the socket */
    int fd;                     /* our end, -1 before start and once lost */
    pid_t pid;                  /* 0 before start, -1 never started */
    char *func;                 /* for messages */
    tfork_rpc_opts o;           /* a copy; o.init is NULL (see init) */
    char *init;
    struct tfork__outq q;       /* SETUP and calls not yet sent */
    tfork__rrd rd;              /* replies, failures, events */
    struct call *head, *tail;   /* pending, in call order */
    struct call **tab;          /* pending by id; tabsz a power of two */
    unsigned tabsz;
    int npending;
    uint32_t next_id;           /* last id used */
    int lost;                   /* gone: calls fail, on_error fired */
    int wdead;                  /* writes fail: read on to learn why */
    int freed;                  /* tfork_rpc_free was called */
    int shut;                   /* SHUT_WR sent: the child sees EOF */
    int busy;                   /* our callbacks on the stack */
    void (*on_retire)(tfork_rpc *r, void *data);   /* pool workers */
    int kill_on_start;          /* tfork__rpc_kill before the pid was known */
    int release;                /* release once busy is 0 */
};

static void update(tfork_rpc *r)
{
    if (r->fd < 0) {
        tfork__watch_io(r->w, -1, 0, 0, 0);
        return;
    }
    tfork__watch_io(r->w, r->fd, 1, r->q.head && !r->wdead,
                    r->npending > 0 || r->freed);
}

/* ---- pending calls ---- */

static int tab_grow(tfork_rpc *r)
{
    unsigned nsz = r->tabsz ? r->tabsz * 2 : 64;
    struct call **nt = calloc(nsz, sizeof *nt);

    if (!nt)
        return -ENOMEM;
    for (struct call *c = r->head; c; c = c->next) {
        c->hnext = nt[c->id & (nsz - 1)];
        nt[c->id & (nsz - 1)] = c;
    }
    free(r->tab);
    r->tab = nt;
    r->tabsz = nsz;
    return 0;
}

static struct call *call_find(tfork_rpc *r, uint32_t id)
{
    struct call *c;

    if (!r->tabsz)
        return NULL;
    for (c = r->tab[id & (r->tabsz - 1)]; c; c = c->hnext)
        if (c->id == id)
            return c;
    return NULL;
}

static void call_unlink(tfork_rpc *r, struct call *c)
{
    struct call **pp = &r->tab[c->id & (r->tabsz - 1)];

    while (*pp != c)
        pp = &(*pp)->hnext;
    *pp = c->hnext;
    if (c->prev)
        c->prev->next = c->next;
    else
        r->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        r->tail = c->prev;
    r->npending--;
}

/* ---- release ---- */

static void release_now(tfork_rpc *r)
{
    tfork__watch_free(r->w);
    if (r->fd >= 0)
        close(r->fd);
    tfork__outq_drop(&r->q);
    tfork__rrd_free(&r->rd);
    free(r->tab);
    free(r->func);
    free(r->init);
    free(r);
}

/* After one of our callbacks: a release asked for meanwhile happens now,
 * when nothing of ours is on the stack any more.  1 when r is gone. */
static int unbusy(tfork_rpc *r)
{
    if (--r->busy == 0 && r->release) {
        release_now(r);
        return 1;
    }
    return 0;
}

/* ---- losing the child ---- */

static void close_fd(tfork_rpc *r)
{
    if (r->fd >= 0) {
        tfork__watch_io(r->w, -1, 0, 0, 0);
        close(r->fd);
        r->fd = -1;
    }
    tfork__outq_drop(&r->q);
}

/* Every pending call fails with err and msg, in call order, then on_error;
 * all in this loop iteration.  Caller holds busy. */
static void lose(tfork_rpc *r, int err, const char *msg)
{
    if (r->lost)
        return;
    r->lost = 1;
    close_fd(r);
    while (r->head) {
        struct call *c = r->head;

        call_unlink(r, c);
        c->cb(err, msg, 0, NULL, c->data);
        free(c);
    }
    if (r->o.on_error)
        r->o.on_error(r, err, msg, r->o.data);
    if (r->freed)
        r->release = 1;
}

static void losef(tfork_rpc *r, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void losef(tfork_rpc *r, int err, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    lose(r, err, msg);
}

/* ---- sending ---- */

/* Writes what the socket takes; once a graceful end is asked for and all
 * is sent, half-closes so the child sees EOF after the last call. */
static void kick(tfork_rpc *r)
{
    if (r->fd < 0)
        return;
    if (!r->wdead && tfork__outq_flush(&r->q, r->fd) < 0) {
        /* the child is gone or going: what it said last (a failure
         * message, replies) is still to be read, then EOF */
        r->wdead = 1;
        tfork__outq_drop(&r->q);
    }
    if (r->freed && !r->shut && !r->q.head) {
        shutdown(r->fd, SHUT_WR);
        r->shut = 1;
    }
    update(r);
}

/* ---- receiving ---- */

static int on_reply(tfork_rpc *r, tfork_cur *cur)
{
    uint32_t id, n;
    struct iovec *v = NULL;
    struct call *c;

    /* parts decoded but followed by junk: v is ours to free */
    if (tfork__cur_u32(cur, &id) || tfork__cur_parts(cur, &v, &n) ||
        tfork__cur_done(cur)) {
        free(v);
        return -EPROTO;
    }
    c = call_find(r, id);
    if (!c || (!r->o.async && c != r->head)) {
        free(v);
        return -EPROTO;
    }
    call_unlink(r, c);
    c->cb(0, "", (int)n, v, c->data);
    free(c);
    free(v);
    return 0;
}

static int on_fail(tfork_rpc *r, tfork_cur *cur)
{
    uint32_t id;
    int32_t err;
    const char *msg;
    struct call *c;

    if (tfork__cur_u32(cur, &id) || tfork__cur_i32(cur, &err) ||
        tfork__cur_str(cur, &msg, NULL) || tfork__cur_done(cur) ||
        err >= 0 || err < -4095)
        return -EPROTO;
    if (id == 0) {              /* the child could not start serving */
        lose(r, err, msg);
        return 0;
    }
    c = call_find(r, id);
    if (!c || (!r->o.async && c != r->head))
        return -EPROTO;
    call_unlink(r, c);
    c->cb(err, msg, 0, NULL, c->data);
    free(c);
    return 0;
}

static int on_event(tfork_rpc *r, tfork_cur *cur)
{
    uint32_t n;
    struct iovec *v = NULL;

    if (tfork__cur_parts(cur, &v, &n) || tfork__cur_done(cur)) {
        free(v);
        return -EPROTO;
    }
    if (r->o.on_event)
        r->o.on_event(r, (int)n, v, r->o.data);
    free(v);
    return 0;
}

static void on_eof(tfork_rpc *r, int e)
{
    if (e == -EPIPE && !r->npending && r->freed) {
        /* the clean end: everything answered, the child closed */
        close_fd(r);
        r->lost = 1;
        if (r->o.on_destroy)
            r->o.on_destroy(r, r->o.data);
        r->release = 1;
        return;
    }
    if (e == -EPIPE && r->npending)
        losef(r, -EPIPE, "rpc child %ld (%s) exited with %d call%s "
              "pending (%s)", (long)r->pid, r->func, r->npending,
              r->npending == 1 ? "" : "s", r->rd.err);
    else if (e == -EPIPE)
        losef(r, -EPIPE, "rpc child %ld (%s) exited (%s)", (long)r->pid,
              r->func, r->rd.err);
    else
        losef(r, e == -EPROTO ? -EPROTO : -EPIPE, "rpc child %ld (%s): %s",
              (long)r->pid, r->func, r->rd.err);
}

static void io_cb(void *arg, int rd, int wr)
{
    tfork_rpc *r = arg;

    r->busy++;
    if (wr)
        kick(r);
    if (rd && r->fd >= 0) {
        ssize_t got = tfork__rrd_fill(&r->rd, r->fd, 1);
        tfork_hdr h;
        const unsigned char *pl;
        int k;

        while (r->fd >= 0 && (k = tfork__rrd_frame(&r->rd, &h, &pl)) != 0) {
            tfork_cur cur;
            int e;

            if (k < 0) {
                got = -EPROTO;
                break;
            }
            tfork__cur_init(&cur, pl, h.len);
            if (h.op == TFORK_OP_RPC_REPLY)
                e = on_reply(r, &cur);
            else if (h.op == TFORK_OP_RPC_FAIL)
                e = on_fail(r, &cur);
            else if (h.op == TFORK_OP_RPC_EVENT)
                e = on_event(r, &cur);
            else {              /* RPC_RETIRE: only pools listen */
                e = 0;
                if (r->on_retire)
                    r->on_retire(r, r->o.data);
            }
            if (e < 0) {
                snprintf(r->rd.err, sizeof r->rd.err, "protocol error: "
                         "bad %s frame", tfork__rpc_op_name(h.op));
                got = -EPROTO;
                break;
            }
        }
        if (r->fd >= 0 && got < 0)
            on_eof(r, (int)got);
        else if (r->fd >= 0)
            update(r);
    }
    unbusy(r);
}

/* ---- starting ---- */

static void run_cb(tfork *p, int fd, int err, void *data)
{
    tfork_rpc *r = data;

    r->busy++;
    if (err < 0) {
        r->pid = -1;
        lose(r, err, tfork_errmsg(p));
    } else if (r->lost) {
        close(fd);              /* lost meanwhile (cannot happen today) */
    } else {
        r->fd = fd;
        r->pid = tfork_pid(p);
        if (r->kill_on_start && r->pid > 0)
            kill(r->pid, SIGKILL);
        kick(r);
    }
    unbusy(r);
}

static int bad_name(const char *s)
{
    return !s || !*s || strlen(s) >= TFORK_STR_MAX;
}

tfork_rpc *tfork_rpc_new(tfork *p, const char *func, const tfork_rpc_opts *o)
{
    return tfork__rpc_new(p, func, o, 0, NULL);
}

/* A handle with its RPC_SETUP queued, not yet on a socket; o already
 * checked.  NULL on ENOMEM. */
static tfork_rpc *rpc_alloc(struct ev_loop *loop, const char *func,
                            const tfork_rpc_opts *o, unsigned flags)
{
    tfork_rpc *r = calloc(1, sizeof *r);
    tfork_buf b;

    if (!r || !(r->func = strdup(func)) ||
        (o->init && !(r->init = strdup(o->init))))
        goto nomem;
    r->loop = loop;
    r->fd = -1;
    r->o = *o;
    r->o.init = NULL;
    tfork__rrd_init(&r->rd, 0);
    r->w = tfork__watch_new(loop, io_cb, NULL, r);
    if (!r->w)
        goto nomem;
    tfork__buf_frame(&b, TFORK_OP_RPC_SETUP, 0);
    tfork__buf_u32(&b, TFORK_PROTO_MAGIC);
    tfork__buf_u32(&b, TFORK_PROTO_VERSION);
    tfork__buf_u32(&b, (o->async ? TFORK_RPC_ASYNC : 0) | flags);
    tfork__buf_str(&b, func, strlen(func));
    tfork__buf_str(&b, r->init ? r->init : "", r->init ? strlen(r->init) : 0);
    if (tfork__outq_push(&r->q, &b, -1) < 0)
        goto nomem;
    return r;
nomem:
    if (r)
        release_now(r);
    return NULL;
}

tfork_rpc *tfork__rpc_new(tfork *p, const char *func,
                          const tfork_rpc_opts *o, unsigned flags,
                          void (*on_retire)(tfork_rpc *r, void *data))
{
    static const tfork_rpc_opts defaults;
    tfork_rpc *r;
    int e;

    if (!p) {
        errno = EINVAL;
        return NULL;
    }
    if (!o)
        o = &defaults;
    if (bad_name(func) || (o->init && bad_name(o->init)) ||
        (o->async != 0 && o->async != 1)) {
        tfork_free(p);
        errno = EINVAL;
        return NULL;
    }
    r = rpc_alloc(p->loop, func, o, flags);
    if (!r) {
        tfork_free(p);
        errno = ENOMEM;
        return NULL;
    }
    r->on_retire = on_retire;
    e = tfork_run(p, TFORK__RPC_SERVER, run_cb, r);
    if (e < 0) {
        release_now(r);
        tfork_free(p);
        errno = -e;
        return NULL;
    }
    return r;
}

tfork_rpc *tfork__rpc_attach(struct ev_loop *loop, int fd, const char *func,
                             const tfork_rpc_opts *o)
{
    static const tfork_rpc_opts defaults;
    tfork_rpc *r;

    if (!o)
        o = &defaults;
    if (!loop || fd < 0 || bad_name(func) || o->init || o->async) {
        errno = EINVAL;
        return NULL;
    }
    r = rpc_alloc(loop, func, o, 0);
    if (!r) {
        errno = ENOMEM;
        return NULL;
    }
    r->fd = fd;
    kick(r);
    return r;
}

void tfork__rpc_abort(tfork_rpc *r, int err, const char *msg)
{
    if (!r || r->freed)
        return;
    r->busy++;
    r->freed = 1;
    lose(r, err, msg);          /* pending calls, on_error: at once */
    r->release = 1;
    unbusy(r);
}

void tfork__rpc_detach(tfork_rpc *r)
{
    if (!r)
        return;
    r->o.on_event = NULL;
    r->o.on_error = NULL;
    r->o.on_destroy = NULL;
}

void tfork__rpc_set_pid(tfork_rpc *r, pid_t pid)
{
    if (r && !r->lost)
        r->pid = pid;
}

int tfork_rpc_call(tfork_rpc *r, int n, const struct iovec *args,
                   tfork_rpc_cb *cb, void *data)
{
    struct call *c;
    tfork_buf b;
    int e, idle;

    if (!r || !cb)
        return -EINVAL;
    e = tfork__parts_check(n, args);
    if (e < 0)
        return e;
    if (r->lost)
        return -EPIPE;
    if ((unsigned)r->npending >= r->tabsz && tab_grow(r) < 0)
        return -ENOMEM;
    c = malloc(sizeof *c);
    if (!c)
        return -ENOMEM;
    if (++r->next_id == 0)
        r->next_id = 1;
    c->id = r->next_id;
    c->cb = cb;
    c->data = data;
    tfork__buf_frame(&b, TFORK_OP_RPC_CALL, 0);
    tfork__buf_u32(&b, c->id);
    tfork__buf_parts(&b, n, args);
    idle = !r->q.head;
    e = tfork__outq_push(&r->q, &b, -1);
    if (e < 0) {
        free(c);
        return e;
    }
    c->next = NULL;
    c->prev = r->tail;
    if (r->tail)
        r->tail->next = c;
    else
        r->head = c;
    r->tail = c;
    c->hnext = r->tab[c->id & (r->tabsz - 1)];
    r->tab[c->id & (r->tabsz - 1)] = c;
    r->npending++;
    if (idle)
        kick(r);                /* send now: no loop round trip */
    else
        update(r);
    return 0;
}

void tfork__rpc_kill(tfork_rpc *r)
{
    if (r->pid > 0 && !r->lost)
        kill(r->pid, SIGKILL);
    else if (r->pid == 0)
        r->kill_on_start = 1;
}

pid_t tfork_rpc_pid(const tfork_rpc *r)
{
    return r ? r->pid : -1;
}

int tfork_rpc_pending(const tfork_rpc *r)
{
    return r ? r->npending : 0;
}

void tfork_rpc_free(tfork_rpc *r)
{
    if (!r || r->freed)
        return;
    r->freed = 1;
    if (r->lost) {
        r->release = 1;
        if (!r->busy)           /* else unbusy releases it */
            release_now(r);
        return;
    }
    kick(r);
}
