/* rpc_child.c: the child side of tfork/rpc.h.  tfork__rpc_server is the
 * run function of every RPC child: it reads RPC_SETUP, finds the user's
 * function, calls init, then serves calls one at a time (sync: a blocking
 * loop) or many at once (async: its own libev loop). */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tfork-int.h"
#include "tfork/rpc.h"

struct tfork_rpc_req {
    struct tfork_rpc_req *next, *prev;  /* async: in flight */
    uint32_t id;                        /* the parent's request id */
    int in_func;                        /* func has not returned yet */
    int done;                           /* answered (while in_func) */
};

/* One RPC server per process: the child is nothing else. */
static struct {
    int on;                     /* this process is an RPC child */
    int fd;                     /* the socket to the parent */
    int async;
    int pool;                   /* a pool worker (RPC_SETUP flag) */
    const char *fname;          /* the function's name */
    tfork_rpc_func *func;
    tfork_rpc_req *sync_req;    /* sync: the call being served */
    struct ev_loop *loop;       /* async: our loop */
    tfork__watch *w;            /* async: the socket */
    struct tfork__outq q;       /* async: frames not yet sent */
    tfork_rpc_req *head, *tail; /* async: calls in flight */
    int inflight;
    int eof;                    /* the parent closed its end */
    int broken;                 /* the parent is gone: nothing is sent */
    int retired;                /* RPC_RETIRE sent */
    tfork__rrd rd;
} S;

/* ---- sending ---- */

/* The async child's work is over: the parent closed its end (or is
 * gone) and every call is answered and sent. */
static int async_over(void)
{
    return (S.eof || S.broken) && !S.inflight && (!S.q.head || S.broken);
}

static void async_update(void)
{
    tfork__watch_io(S.w, S.fd, !S.eof && !S.broken,
                    S.q.head && !S.broken, 1);
    if (async_over())
        tfork__loop_break(S.loop);
}

/* Sends a finished frame: at once in a sync child (blocking), through
 * the queue in an async one.  0, or -errno. */
static int send_frame(tfork_buf *b)
{
    int e;

    if (S.broken) {
        tfork__buf_free(b);
        return -EPIPE;
    }
    if (!S.async) {
        e = tfork__buf_end(b);
        if (e < 0)
            return e;
        e = tfork__send_all(S.fd, b->p, b->len, NULL, 0);
        tfork__buf_free(b);
        if (e < 0) {
            S.broken = 1;
            return -EPIPE;
        }
        return 0;
    }
    e = tfork__outq_push(&S.q, b, -1);
    if (e < 0)
        return e;
    if (tfork__outq_flush(&S.q, S.fd) < 0) {
        S.broken = 1;
        tfork__outq_drop(&S.q);
        async_update();
        return -EPIPE;
    }
    async_update();
    return 0;
}

static int send_fail(uint32_t id, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int send_fail(uint32_t id, int err, const char *fmt, ...)
{
    char msg[1024];
    tfork_buf b;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    tfork__buf_frame(&b, TFORK_OP_RPC_FAIL, 0);
    tfork__buf_u32(&b, id);
    tfork__buf_u32(&b, (uint32_t)err);
    tfork__buf_str(&b, msg, strlen(msg));
    return send_frame(&b);
}

/* ---- requests ---- */

/* What func and the API see of a call is its id, never the struct: a
 * req kept after its answer then names no call at all (the parent does
 * not reuse an id for 2^32 calls), where a pointer would name whichever
 * later call reuses the stack slot (sync) or the memory (async). */
static tfork_rpc_req *req_handle(const tfork_rpc_req *req)
{
    return (tfork_rpc_req *)(uintptr_t)req->id;
}

/* The call h names, if we are still to answer it: the sync call being
 * served, or an async call in flight.  NULL otherwise. */
static tfork_rpc_req *req_find(tfork_rpc_req *h)
{
    uintptr_t id = (uintptr_t)h;

    if (!S.on || id == 0 || id > UINT32_MAX)
        return NULL;
    if (!S.async)
        return S.sync_req && S.sync_req->id == id && !S.sync_req->done
               ? S.sync_req : NULL;
    for (tfork_rpc_req *x = S.head; x; x = x->next)
        if (x->id == id)
            return x->done ? NULL : x;
    return NULL;
}

/* req is answered: an async one leaves the flight list and, unless func
 * is still running with it, is freed. */
static void req_done(tfork_rpc_req *req)
{
    req->done = 1;
    if (!S.async)
        return;
    if (req->prev)
        req->prev->next = req->next;
    else
        S.head = req->next;
    if (req->next)
        req->next->prev = req->prev;
    else
        S.tail = req->prev;
    req->next = req->prev = NULL;
    S.inflight--;
    if (!req->in_func)
        free(req);
    async_update();
}

int tfork_rpc_reply(tfork_rpc_req *h, int n, const struct iovec *res)
{
    tfork_rpc_req *req = req_find(h);
    tfork_buf b;
    int e;

    if (!req)
        return -EINVAL;
    e = tfork__parts_check(n, res);
    if (e < 0)
        return e;
    tfork__buf_frame(&b, TFORK_OP_RPC_REPLY, 0);
    tfork__buf_u32(&b, req->id);
    tfork__buf_parts(&b, n, res);
    e = send_frame(&b);
    if (e == -ENOMEM || e == -E2BIG)
        return e;               /* unanswered still: the caller may fail it */
    req_done(req);
    return e;
}

int tfork_rpc_fail(tfork_rpc_req *h, const char *msg)
{
    return tfork__rpc_fail_code(h, -ECANCELED, msg);
}

int tfork__rpc_fail_code(tfork_rpc_req *h, int err, const char *msg)
{
    tfork_rpc_req *req = req_find(h);
    tfork_buf b;
    size_t len;
    int e;

    if (!req || err >= 0 || err < -4095)
        return -EINVAL;
    if (!msg)
        msg = "";
    len = strnlen(msg, TFORK_STR_MAX);
    tfork__buf_frame(&b, TFORK_OP_RPC_FAIL, 0);
    tfork__buf_u32(&b, req->id);
    tfork__buf_u32(&b, (uint32_t)err);
    tfork__buf_str(&b, msg, len);
    e = send_frame(&b);
    if (e == -ENOMEM)
        return e;
    req_done(req);
    return e;
}

int tfork_rpc_event(int n, const struct iovec *ev)
{
    tfork_buf b;
    int e;

    if (!S.on)
        return -ENOTCONN;
    e = tfork__parts_check(n, ev);
    if (e < 0)
        return e;
    tfork__buf_frame(&b, TFORK_OP_RPC_EVENT, 0);
    tfork__buf_parts(&b, n, ev);
    return send_frame(&b);
}

void tfork_pool_retire(void)
{
    tfork_buf b;

    /* a plain RPC child has nobody to replace it: ignored there */
    if (!S.on || !S.pool || S.retired || S.broken)
        return;
    S.retired = 1;
    tfork__buf_frame(&b, TFORK_OP_RPC_RETIRE, 0);
    send_frame(&b);
}

struct ev_loop *tfork_rpc_loop(void)
{
    return S.on && S.async ? S.loop : NULL;
}

/* One RPC_CALL: func is called with the parts, in place in the buffer. */
static int serve_call(tfork_cur *cur)
{
    uint32_t id, n;
    struct iovec *v;
    tfork_rpc_req sreq, *req = &sreq;
    int ret;

    if (tfork__cur_u32(cur, &id) || tfork__cur_parts(cur, &v, &n) ||
        tfork__cur_done(cur) || id == 0)
        return -EPROTO;
    if (S.async) {
        req = malloc(sizeof *req);
        if (!req) {
            free(v);
            send_fail(id, -ENOMEM, "rpc child: out of memory for a call "
                      "of %s", S.fname);
            return 0;
        }
    }
    memset(req, 0, sizeof *req);
    req->id = id;
    req->in_func = 1;
    if (S.async) {
        req->prev = S.tail;
        if (S.tail)
            S.tail->next = req;
        else
            S.head = req;
        S.tail = req;
        S.inflight++;
    } else {
        S.sync_req = req;
    }
    ret = S.func(req_handle(req), (int)n, v);
    free(v);
    req->in_func = 0;
    if (!S.async) {
        S.sync_req = NULL;
        if (!req->done)
            send_fail(id, -ECANCELED, "rpc function %s returned %d "
                      "without replying", S.fname, ret);
    } else if (req->done) {
        free(req);
    } else if (ret != 0) {
        send_fail(id, -ECANCELED, "rpc function %s returned %d", S.fname,
                  ret);
        req_done(req);
    }
    return 0;
}

/* Serves every complete frame in the buffer.  0, or -EPROTO. */
static int serve_frames(void)
{
    tfork_hdr h;
    const unsigned char *pl;
    int k;

    while (!S.broken && (k = tfork__rrd_frame(&S.rd, &h, &pl)) != 0) {
        tfork_cur cur;

        if (k < 0)
            return -EPROTO;
        if (h.op != TFORK_OP_RPC_CALL)
            return -EPROTO;     /* a second SETUP */
        tfork__cur_init(&cur, pl, h.len);
        if (serve_call(&cur) < 0)
            return -EPROTO;
    }
    return 0;
}

/* ---- the two servers ---- */

static int serve_sync(void)
{
    for (;;) {
        ssize_t got;

        if (serve_frames() < 0)
            return 2;
        if (S.broken)
            return 0;
        got = tfork__rrd_fill(&S.rd, S.fd, 0);
        if (got == -EPIPE)
            return 0;           /* the parent's graceful end */
        if (got < 0)
            return 2;
    }
}

static void async_io(void *arg, int rd, int wr)
{
    (void)arg;
    if (wr && tfork__outq_flush(&S.q, S.fd) < 0) {
        S.broken = 1;
        tfork__outq_drop(&S.q);
    }
    if (rd && !S.eof && !S.broken) {
        ssize_t got = tfork__rrd_fill(&S.rd, S.fd, 1);

        if (got > 0 && serve_frames() < 0)
            got = -EPROTO;
        if (got == -EPIPE)
            S.eof = 1;
        else if (got < 0)
            S.broken = 1;       /* nothing sensible can follow */
    }
    async_update();
}

static int serve_async(void)
{
    /* calls that came with SETUP are in the buffer already */
    if (serve_frames() < 0)
        return 2;
    async_update();
    if (!async_over())          /* a break before ev_run is forgotten */
        tfork__loop_run(S.loop);
    return S.broken && S.inflight ? 1 : 0;
}

/* ---- setup ---- */

int tfork__rpc_server(int fd, int argc, const tfork_arg *argv)
{
    return tfork__rpc_serve(fd, argc, argv, NULL, NULL, NULL);
}

int tfork__rpc_serve(int fd, int argc, const tfork_arg *argv,
                     const char *fixed, tfork_rpc_func *fixed_func,
                     void (*started)(void))
{
    tfork_hdr h;
    const unsigned char *pl;
    tfork_cur cur;
    uint32_t magic, version, flags;
    const char *func, *init;
    size_t initlen;
    tfork_rpc_init_func *initf = NULL;
    int k, ret;

    S.fd = fd;
    tfork__rrd_init(&S.rd, 1);
    while ((k = tfork__rrd_frame(&S.rd, &h, &pl)) == 0) {
        ssize_t got = tfork__rrd_fill(&S.rd, fd, 0);

        if (got == -EPIPE)
            return 0;           /* freed before it started */
        if (got < 0)
            return 2;
    }
    if (k < 0 || h.op != TFORK_OP_RPC_SETUP)
        return 2;
    tfork__cur_init(&cur, pl, h.len);
    if (tfork__cur_u32(&cur, &magic) || tfork__cur_u32(&cur, &version) ||
        tfork__cur_u32(&cur, &flags) || tfork__cur_str(&cur, &func, NULL) ||
        tfork__cur_str(&cur, &init, &initlen) || tfork__cur_done(&cur))
        return 2;
    S.on = 1;
    if (magic != TFORK_PROTO_MAGIC || version != TFORK_PROTO_VERSION) {
        send_fail(0, -EPROTO, "rpc child: protocol version %u not spoken "
                  "(this library speaks %u)", version, TFORK_PROTO_VERSION);
        return 2;
    }
    S.async = !!(flags & TFORK_RPC_ASYNC);
    S.pool = !!(flags & TFORK_RPC_POOL);
    S.fname = strdup(func);     /* the buffer moves on: keep a copy */
    if (!S.fname) {
        S.fname = "?";
        send_fail(0, -ENOMEM, "rpc child: out of memory");
        return 3;
    }
    if (fixed) {
        /* the function is ours to choose, not the peer's: a peer that
         * asks for another gets nothing called */
        if (strcmp(func, fixed) != 0 || initlen || S.async) {
            S.async = 0;
            send_fail(0, -EPROTO, "rpc child: this server serves only "
                      "%s, synchronously and without init", fixed);
            return 2;
        }
        S.func = fixed_func;
    } else {
        tfork__proctitle("tfork: rpc %s", func);
        S.func = (tfork_rpc_func *)tfork__lookup(func);
    }
    if (!S.func) {
        S.async = 0;            /* report with a plain blocking send */
        send_fail(0, -ENOENT, "rpc function %s not found in the child",
                  func);
        return 1;
    }
    if (initlen) {
        initf = (tfork_rpc_init_func *)tfork__lookup(init);
        if (!initf) {
            S.async = 0;
            send_fail(0, -ENOENT, "rpc init function %s not found in the "
                      "child", init);
            return 1;
        }
    }
    if (S.async) {
        int fl = fcntl(fd, F_GETFL);

        S.loop = tfork__loop_new();
        S.w = S.loop ? tfork__watch_new(S.loop, async_io, NULL, NULL) : NULL;
        if (!S.w || fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
            S.async = 0;
            send_fail(0, -ENOMEM, "rpc child: cannot make its event loop "
                      "for %s", func);
            return 3;
        }
    }
    if (initf) {
        ret = initf(argc, argv);
        if (ret != 0) {
            send_fail(0, -ECANCELED, "rpc init function %s returned %d",
                      init, ret);
            if (S.async) {      /* let the failure out before exiting */
                S.eof = 1;
                async_update();
                if (!async_over())
                    tfork__loop_run(S.loop);
            }
            return 1;
        }
    }
    if (started)
        started();
    return S.async ? serve_async() : serve_sync();
}
