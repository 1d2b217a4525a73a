/* pool.c: tfork/pool.h, a pool of RPC workers forked from one template.
 * Calls wait in a FIFO queue and go to the least loaded worker; workers
 * are started one per `start` step while calls wait, stopped after `stop`
 * idle seconds above `idle`, recycled after max_reqs calls or when they
 * retire, and replaced when they die.  Every accepted call is answered
 * exactly once: by its worker, or with -ETIMEDOUT / -EPIPE. */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tfork-int.h"

struct worker {
    struct worker *next, *prev; /* the pool's workers */
    tfork_pool *pool;
    tfork_rpc *rpc;
    int load;                   /* calls given and not answered */
    int given;                  /* calls given in all (max_reqs) */
    int ending;                 /* takes no more calls: retiring, recycled,
                                   stopped, killed or lost */
    double idle_since;          /* when load last dropped to 0 */
};

struct pcall {
    struct pcall *next, *prev;  /* in the wait queue while queued */
    tfork_pool *pool;
    struct worker *w;           /* running on, NULL while queued */
    tfork_rpc_cb *cb;
    void *data;
    int n;                      /* the call's parts, while queued */
    struct iovec *args;         /* one block: iovecs, then the bytes */
    tfork__timer *timer;        /* timeout, or NULL */
    int answered;               /* cb ran (timed out): drop what follows */
};

struct tfork_pool {
    struct ev_loop *loop;
    tfork *tpl;                 /* owned; freed with the pool */
    char *func;
    char *init;                 /* o.rpc.init points here */
    tfork_pool_opts o;          /* a copy, defaults filled in */
    struct worker *whead;       /* workers, oldest first */
    int nworkers;               /* alive, ending ones included */
    struct pcall *qhead, *qtail;    /* calls waiting for a worker */
    int nqueued;
    int npending;               /* accepted and not yet answered */
    tfork__timer *grow;         /* the next `start` step */
    tfork__timer *shrink;       /* the next idle check */
    tfork__timer *end;          /* on_destroy from the loop */
    double last_start;          /* when the last worker was started */
    int started;                /* a worker was ever started */
    int broken;                 /* workers cannot start: -errno */
    char *brokenmsg;
    int freed;                  /* tfork_pool_free was called */
    int done;                   /* on_destroy is due or fired */
    int busy;                   /* our callbacks on the stack */
    int release;                /* release once busy is 0 */
    int in_call;                /* inside tfork_pool_call: no callbacks */
};

static void pump(tfork_pool *pool);

/* ---- small things ---- */

static int live(const tfork_pool *pool)   /* workers taking calls */
{
    int k = 0;

    for (struct worker *w = pool->whead; w; w = w->next)
        k += !w->ending;
    return k;
}

static void release_now(tfork_pool *pool)
{
    tfork__timer_free(pool->grow);
    tfork__timer_free(pool->shrink);
    tfork__timer_free(pool->end);
    tfork_free(pool->tpl);
    free(pool->func);
    free(pool->init);
    free(pool->brokenmsg);
    free(pool);
}

static int unbusy(tfork_pool *pool)
{
    if (--pool->busy == 0 && pool->release) {
        release_now(pool);
        return 1;
    }
    return 0;
}

static void q_unlink(tfork_pool *pool, struct pcall *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        pool->qhead = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        pool->qtail = c->prev;
    c->next = c->prev = NULL;
    pool->nqueued--;
}

static void pcall_free(struct pcall *c)
{
    tfork__timer_free(c->timer);
    free(c->args);
    free(c);
}

/* Answers c (queued or timed out, never on a worker) and frees it. */
static void answer(struct pcall *c, int err, const char *msg)
{
    tfork_pool *pool = c->pool;

    pool->npending--;
    c->cb(err, msg, 0, NULL, c->data);
    pcall_free(c);
}

/* ---- workers ---- */

static void worker_remove(struct worker *w)
{
    tfork_pool *pool = w->pool;

    if (w->prev)
        w->prev->next = w->next;
    else
        pool->whead = w->next;
    if (w->next)
        w->next->prev = w->prev;
    pool->nworkers--;
    free(w);
}

/* No more calls for w; it answers what it has, then exits. */
static void worker_end(struct worker *w)
{
    if (w->ending)
        return;
    w->ending = 1;
    tfork_rpc_free(w->rpc);
}

static void rpc_done(int err, const char *msg, int n,
                     const struct iovec *res, void *data)
{
    struct pcall *c = data;
    struct worker *w = c->w;
    tfork_pool *pool = c->pool;

    pool->busy++;
    w->load--;
    if (!w->load)
        w->idle_since = tfork__now(pool->loop);
    if (!c->answered) {
        pool->npending--;
        c->cb(err, msg, n, res, c->data);
    }
    pcall_free(c);
    pump(pool);
    unbusy(pool);
}

static void worker_event(tfork_rpc *r, int n, const struct iovec *ev,
                         void *data)
{
    struct worker *w = data;

    (void)r;
    if (w->pool->o.rpc.on_event)
        w->pool->o.rpc.on_event(r, n, ev, w->pool->o.rpc.data);
}

static void worker_retire(tfork_rpc *r, void *data)
{
    struct worker *w = data;

    (void)r;
    w->pool->busy++;
    worker_end(w);
    pump(w->pool);
    unbusy(w->pool);
}

static void worker_destroyed(tfork_rpc *r, void *data)
{
    struct worker *w = data;
    tfork_pool *pool = w->pool;

    (void)r;
    pool->busy++;
    worker_remove(w);
    pump(pool);
    unbusy(pool);
}

/* A worker failed for want of a resource that may come back (a fork
 * refused for a moment): the pool tries again with the next calls. */
static int transient(int err)
{
    return err == -EAGAIN || err == -ENOMEM || err == -EMFILE ||
           err == -ENFILE;
}

/* The worker is lost: its calls have had their -EPIPE (or start error)
 * by now.  One that never started (but for a transient failure) means
 * the template cannot give us workers: the calls waiting fail with the
 * same error, and so do later ones. */
static void worker_error(tfork_rpc *r, int err, const char *msg, void *data)
{
    struct worker *w = data;
    tfork_pool *pool = w->pool;

    pool->busy++;
    if (pool->o.rpc.on_error)
        pool->o.rpc.on_error(r, err, msg, pool->o.rpc.data);
    /* transient, unless the template itself is gone: it gives no more
     * workers, whatever the reason it died of */
    if ((tfork_rpc_pid(r) <= 0 || err != -EPIPE) && !pool->broken &&
        (!transient(err) || pool->tpl->err || pool->tpl->fd < 0)) {
        pool->broken = err;
        free(pool->brokenmsg);
        pool->brokenmsg = strdup(msg);
    }
    w->ending = 1;
    tfork_rpc_free(r);          /* lost: released once its callback ends */
    worker_remove(w);
    pump(pool);
    unbusy(pool);
}

static int worker_start(tfork_pool *pool)
{
    tfork_rpc_opts ro = pool->o.rpc;
    struct worker *w;
    tfork *p;

    w = calloc(1, sizeof *w);
    if (!w)
        return -ENOMEM;
    p = tfork_fork(pool->tpl);
    if (!p) {
        int e = errno;

        free(w);
        return -(e ? e : EPIPE);
    }
    ro.on_event = worker_event;
    ro.on_error = worker_error;
    ro.on_destroy = worker_destroyed;
    ro.data = w;
    w->pool = pool;
    w->rpc = tfork__rpc_new(p, pool->func, &ro, TFORK_RPC_POOL,
                            worker_retire);
    if (!w->rpc) {
        int e = errno;

        free(w);
        return -e;
    }
    w->idle_since = tfork__now(pool->loop);
    w->next = NULL;
    w->prev = NULL;
    if (pool->whead) {
        struct worker *t = pool->whead;

        while (t->next)
            t = t->next;
        t->next = w;
        w->prev = t;
    } else {
        pool->whead = w;
    }
    pool->nworkers++;
    pool->last_start = tfork__now(pool->loop);
    pool->started = 1;
    return 0;
}

/* ---- dispatch ---- */

static struct worker *least_loaded(tfork_pool *pool)
{
    struct worker *best = NULL;

    for (struct worker *w = pool->whead; w; w = w->next)
        if (!w->ending && w->load < pool->o.load &&
            (!best || w->load < best->load))
            best = w;
    return best;
}

/* Gives the first waiting call to w.  0, or -errno (c stays queued). */
static int give(tfork_pool *pool, struct worker *w)
{
    struct pcall *c = pool->qhead;
    int e = tfork_rpc_call(w->rpc, c->n, c->args, rpc_done, c);

    if (e < 0)
        return e;
    q_unlink(pool, c);
    free(c->args);
    c->args = NULL;
    c->w = w;
    w->load++;
    w->given++;
    if (pool->o.max_reqs && w->given >= pool->o.max_reqs)
        worker_end(w);          /* recycled once this call is answered */
    return 0;
}

static void fail_queue(tfork_pool *pool, int err, const char *msg)
{
    if (pool->in_call) {        /* never inside the call: from the loop */
        tfork__timer_start(pool->grow, 0, 1);
        return;
    }
    while (pool->qhead) {
        struct pcall *c = pool->qhead;

        q_unlink(pool, c);
        answer(c, err, msg);
    }
}

static void grow_cb(void *arg)
{
    tfork_pool *pool = arg;

    pool->busy++;
    pump(pool);
    unbusy(pool);
}

static void shrink_cb(void *arg)
{
    tfork_pool *pool = arg;
    double now = tfork__now(pool->loop);
    int extra = live(pool) - pool->o.idle;

    pool->busy++;
    for (struct worker *w = pool->whead; w && extra > 0; w = w->next)
        if (!w->ending && !w->load &&
            now - w->idle_since >= pool->o.stop - 1e-3) {
            worker_end(w);
            extra--;
        }
    pump(pool);
    unbusy(pool);
}

static void end_cb(void *arg)
{
    tfork_pool *pool = arg;

    pool->busy++;
    if (pool->o.on_destroy)
        pool->o.on_destroy(pool, pool->o.data);
    pool->release = 1;
    unbusy(pool);
}

/* Brings the pool in line: calls to free workers, workers started or
 * stopped, the end when freed.  Never calls a user callback except to
 * fail waiting calls when no worker can be had. */
static void pump(tfork_pool *pool)
{
    struct worker *w;
    double now;

    if (pool->done)
        return;
    while (pool->qhead && (w = least_loaded(pool)))
        if (give(pool, w) < 0)
            break;
    if (pool->broken) {
        if (pool->qhead && !pool->nworkers)
            fail_queue(pool, pool->broken, pool->brokenmsg ?
                       pool->brokenmsg : "pool: no worker could start");
    } else if (pool->qhead && live(pool) < pool->o.max) {
        now = tfork__now(pool->loop);
        if (!pool->started || live(pool) == 0 ||
            now - pool->last_start >= pool->o.start) {
            int e = worker_start(pool);

            if (e < 0) {
                char msg[256];

                snprintf(msg, sizeof msg, "pool: cannot start a worker "
                         "of %s: %s", pool->func, strerror(-e));
                if (!pool->nworkers) {
                    if (e != -ENOMEM) {
                        pool->broken = e;
                        free(pool->brokenmsg);
                        pool->brokenmsg = strdup(msg);
                    }
                    fail_queue(pool, e, msg);
                }
            } else if (pool->qhead) {
                while (pool->qhead && (w = least_loaded(pool)))
                    if (give(pool, w) < 0)
                        break;
            }
        }
        if (pool->qhead && live(pool) < pool->o.max &&
            !tfork__timer_active(pool->grow))
            tfork__timer_start(pool->grow, pool->o.start -
                               (tfork__now(pool->loop) - pool->last_start),
                               1);
    }
    if (!pool->qhead && tfork__timer_active(pool->grow))
        tfork__timer_stop(pool->grow);
    if (!pool->freed && !pool->broken)
        while (live(pool) < pool->o.idle && worker_start(pool) == 0)
            ;
    if (pool->freed) {
        if (!pool->qhead)
            for (w = pool->whead; w; w = w->next)
                worker_end(w);
        if (!pool->qhead && !pool->nworkers && !pool->npending) {
            pool->done = 1;
            tfork__timer_stop(pool->shrink);
            tfork__timer_start(pool->end, 0, 1);
        }
        return;
    }
    /* idle workers above `idle`: the oldest idle one is checked first */
    if (live(pool) > pool->o.idle && !tfork__timer_active(pool->shrink)) {
        double first = 0;
        int any = 0;

        for (w = pool->whead; w; w = w->next)
            if (!w->ending && !w->load && (!any || w->idle_since < first)) {
                first = w->idle_since;
                any = 1;
            }
        if (any)
            tfork__timer_start(pool->shrink, first + pool->o.stop -
                               tfork__now(pool->loop), 0);
    }
}

/* ---- the API ---- */

static void timeout_cb(void *arg)
{
    struct pcall *c = arg;
    tfork_pool *pool = c->pool;
    char msg[256];

    pool->busy++;
    if (!c->w) {
        snprintf(msg, sizeof msg, "pool call of %s timed out after %g s "
                 "waiting for a worker", pool->func, pool->o.timeout);
        q_unlink(pool, c);
        answer(c, -ETIMEDOUT, msg);
    } else {
        struct worker *w = c->w;
        pid_t pid = tfork_rpc_pid(w->rpc);

        if (pid > 0)
            snprintf(msg, sizeof msg, "pool call of %s timed out after %g "
                     "s; worker %ld killed", pool->func, pool->o.timeout,
                     (long)pid);
        else
            snprintf(msg, sizeof msg, "pool call of %s timed out after %g "
                     "s; its worker, still starting, is killed", pool->func,
                     pool->o.timeout);
        c->answered = 1;
        pool->npending--;
        /* its other calls get -EPIPE when the rpc sees it die; rpc_done
         * frees c then and drops whatever late answer it gets */
        w->ending = 1;
        tfork__rpc_kill(w->rpc);
        tfork__timer_free(c->timer);
        c->timer = NULL;
        c->cb(-ETIMEDOUT, msg, 0, NULL, c->data);
    }
    pump(pool);
    unbusy(pool);
}

tfork_pool *tfork_pool_new(tfork *tpl, const char *func,
                           const tfork_pool_opts *o)
{
    static const tfork_pool_opts defaults;
    tfork_pool *pool;
    long ncpu;

    if (!tpl) {
        errno = EINVAL;
        return NULL;
    }
    if (!o)
        o = &defaults;
    if (!func || !*func || strlen(func) >= TFORK_STR_MAX || o->max < 0 ||
        o->idle < 0 || o->load < 0 || o->start < 0 || o->stop < 0 ||
        o->max_reqs < 0 || o->queue_max < 0 || o->timeout < 0 ||
        (o->max && o->idle > o->max) ||
        (o->rpc.async != 0 && o->rpc.async != 1) ||
        (o->rpc.init && (!*o->rpc.init ||
                         strlen(o->rpc.init) >= TFORK_STR_MAX)) ||
        tpl->state != TFORK_PREP || !tpl->user) {
        tfork_free(tpl);
        errno = EINVAL;
        return NULL;
    }
    pool = calloc(1, sizeof *pool);
    if (!pool)
        goto nomem;
    pool->loop = tpl->loop;
    pool->o = *o;
    if (!pool->o.max) {
        ncpu = sysconf(_SC_NPROCESSORS_ONLN);
        pool->o.max = ncpu > 0 ? (int)ncpu : 1;
        if (pool->o.idle > pool->o.max)
            pool->o.max = pool->o.idle;
    }
    if (!pool->o.load)
        pool->o.load = 1;
    if (o->start == 0)
        pool->o.start = 0.1;
    if (o->stop == 0)
        pool->o.stop = 10;
    pool->func = strdup(func);
    pool->init = o->rpc.init ? strdup(o->rpc.init) : NULL;
    pool->o.rpc.init = pool->init;
    pool->grow = tfork__timer_new(pool->loop, grow_cb, pool);
    pool->shrink = tfork__timer_new(pool->loop, shrink_cb, pool);
    pool->end = tfork__timer_new(pool->loop, end_cb, pool);
    if (!pool->func || (o->rpc.init && !pool->init) || !pool->grow ||
        !pool->shrink || !pool->end) {
        pool->tpl = NULL;
        release_now(pool);
        goto nomem;
    }
    pool->tpl = tpl;
    pump(pool);                 /* the idle workers, at once */
    return pool;
nomem:
    tfork_free(tpl);
    errno = ENOMEM;
    return NULL;
}

/* A copy of n parts in one block: the iovecs, then the bytes. */
static struct iovec *parts_copy(int n, const struct iovec *v)
{
    size_t total = (size_t)n * sizeof(struct iovec);
    struct iovec *c;
    char *p;

    for (int i = 0; i < n; i++)
        total += v[i].iov_len;
    c = malloc(total ? total : 1);
    if (!c)
        return NULL;
    p = (char *)(c + n);
    for (int i = 0; i < n; i++) {
        c[i].iov_base = p;
        c[i].iov_len = v[i].iov_len;
        if (v[i].iov_len)
            memcpy(p, v[i].iov_base, v[i].iov_len);
        p += v[i].iov_len;
    }
    return c;
}

int tfork_pool_call(tfork_pool *pool, int n, const struct iovec *args,
                    tfork_rpc_cb *cb, void *data)
{
    struct pcall *c;
    int e;

    if (!pool || !cb || pool->freed)
        return -EINVAL;
    e = tfork__parts_check(n, args);
    if (e < 0)
        return e;
    if (pool->broken && !pool->nworkers)
        return -EPIPE;
    if (pool->o.queue_max && pool->nqueued >= pool->o.queue_max &&
        !least_loaded(pool))
        return -EAGAIN;
    c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    c->pool = pool;
    c->cb = cb;
    c->data = data;
    c->n = n;
    c->args = parts_copy(n, args);
    if (!c->args)
        goto nomem;
    if (pool->o.timeout > 0) {
        c->timer = tfork__timer_new(pool->loop, timeout_cb, c);
        if (!c->timer)
            goto nomem;
        tfork__timer_start(c->timer, pool->o.timeout, 1);
    }
    c->prev = pool->qtail;
    if (pool->qtail)
        pool->qtail->next = c;
    else
        pool->qhead = c;
    pool->qtail = c;
    pool->nqueued++;
    pool->npending++;
    pool->in_call = 1;
    pump(pool);
    pool->in_call = 0;
    return 0;
nomem:
    pcall_free(c);
    return -ENOMEM;
}

struct ev_loop *tfork__pool_loop(const tfork_pool *pool)
{
    return pool->loop;
}

int tfork__pool_room(const tfork_pool *pool)
{
    int free_slots = 0;

    if (!pool->o.queue_max)
        return INT_MAX;
    for (struct worker *w = pool->whead; w; w = w->next)
        if (!w->ending)
            free_slots += pool->o.load - w->load;
    /* as tfork_pool_call does: with nothing waiting, a call starts a
     * worker at once when none is left or the start step has passed */
    if (!pool->qhead && !pool->broken && live(pool) < pool->o.max &&
        (!pool->started || live(pool) == 0 ||
         tfork__now(pool->loop) - pool->last_start >= pool->o.start))
        free_slots += pool->o.load;
    return pool->o.queue_max - pool->nqueued + free_slots;
}

int tfork_pool_workers(const tfork_pool *pool)
{
    return pool ? pool->nworkers : 0;
}

int tfork_pool_queued(const tfork_pool *pool)
{
    return pool ? pool->nqueued : 0;
}

void tfork_pool_free(tfork_pool *pool)
{
    if (!pool || pool->freed)
        return;
    pool->freed = 1;
    pool->busy++;
    pump(pool);
    unbusy(pool);
}
