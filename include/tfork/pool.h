/* tfork/pool.h: a pool of RPC workers forked from one template
 * (AnyEvent::Fork::Pool and Coro::ProcessPool in C).  Calls are queued,
 * given to the least loaded worker, and answered exactly once; workers
 * are started, stopped, recycled and replaced as needed.  See
 * tfork_pool(3). */
#ifndef TFORK_POOL_H
#define TFORK_POOL_H

#include <tfork/rpc.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tfork_pool tfork_pool;

/* Every field 0 means its default. */
typedef struct tfork_pool_opts {
    int max;            /* most workers (default: number of CPUs) */
    int idle;           /* workers started at once and kept even when idle
                           (default 0: idle workers are all stopped) */
    int load;           /* calls in flight per worker (default 1; > 1 is
                           useful with rpc.async) */
    double start;       /* seconds between starting two workers while
                           calls wait (default 0.1) */
    double stop;        /* seconds a worker above `idle` may stay idle
                           before it is stopped (default 10) */
    int max_reqs;       /* recycle a worker after this many calls
                           (0: never) */
    int queue_max;      /* calls waiting for a worker beyond this are
                           refused with -EAGAIN (0: unbounded) */
    double timeout;     /* seconds per call, from tfork_pool_call to its
                           answer: -ETIMEDOUT, and a worker running it is
                           killed and replaced (0: none) */
    tfork_rpc_opts rpc; /* async, init, on_event, on_error (each with
                           rpc.data) for every worker; on_destroy unused */
    void (*on_destroy)(tfork_pool *pool, void *data);  /* after
                           tfork_pool_free: every call answered, every
                           worker has closed its end and exited (the
                           template, or init once the template is gone,
                           reaps it) */
    void *data;         /* passed to on_destroy */
} tfork_pool_opts;

/* A pool of workers forked from tpl (any process not yet run; usually a
 * template that loaded and initialised what the workers need), each
 * calling func per call as an RPC child (tfork_rpc(3)).  Takes ownership
 * of tpl, also on failure.  NULL with errno: EINVAL (NULL tpl or func,
 * bad options: negative fields, idle > max, tpl already run), ENOMEM. */
TFORK_EXTERN tfork_pool *tfork_pool_new(tfork *tpl, const char *func,
                                        const tfork_pool_opts *o);

/* Queues a call (n parts, copied) and never blocks; cb as for
 * tfork_rpc_call, exactly once, never inside this call.  Besides the RPC
 * errors, cb may get -ETIMEDOUT (timeout) or -EPIPE (its worker died:
 * only the calls it was running fail; waiting calls go to other
 * workers).  Returns 0, -EINVAL, -E2BIG, -EAGAIN (queue_max calls are
 * waiting), -EPIPE (workers cannot be started: the template is gone),
 * -ENOMEM.  Not after tfork_pool_free. */
TFORK_EXTERN int tfork_pool_call(tfork_pool *pool, int n,
                                 const struct iovec *args, tfork_rpc_cb *cb,
                                 void *data);

/* Workers alive (starting, serving or ending). */
TFORK_EXTERN int tfork_pool_workers(const tfork_pool *pool);
/* Calls not yet given to a worker. */
TFORK_EXTERN int tfork_pool_queued(const tfork_pool *pool);

/* A graceful end: queued calls are still run, then every worker ends,
 * then on_destroy fires and the pool (and its template) is released.
 * Safe inside callbacks; a no-op on NULL. */
TFORK_EXTERN void tfork_pool_free(tfork_pool *pool);

/* ---- helpers over tfork_pool_call (Coro::ProcessPool's map) ---- */

/* One result of a map or a stream. */
typedef struct tfork_pool_result {
    int err;                    /* 0, or the call's -errno */
    const char *msg;            /* "" or why it failed */
    int n;                      /* parts of the reply */
    const struct iovec *res;    /* the reply's parts (NUL after each) */
} tfork_pool_result;

/* Calls func once per input (input i is the one-part call inputs[i]) and
 * calls cb once at the end with all n results in input order (borrowed
 * until cb returns).  0 or -errno (nothing is called then: with
 * queue_max, all n must fit). */
typedef void tfork_pool_map_cb(int n, const tfork_pool_result *res,
                               void *data);
TFORK_EXTERN int tfork_pool_map(tfork_pool *pool, int n,
                                const struct iovec *inputs,
                                tfork_pool_map_cb *cb, void *data);

/* The same, but each result is handed over as it arrives (completion
 * order, with its input index), then end(data) once after the last. */
typedef void tfork_pool_each_cb(int index, const tfork_pool_result *res,
                                void *data);
TFORK_EXTERN int tfork_pool_stream(tfork_pool *pool, int n,
                                   const struct iovec *inputs,
                                   tfork_pool_each_cb *each,
                                   void (*end)(void *data), void *data);

/* Child side, in a worker: answer what you have, then exit; the pool
 * gives this worker no new call (it learns so before the reply of the
 * current call) and starts a fresh one as needed.  Ignored outside a
 * pool worker. */
TFORK_EXTERN void tfork_pool_retire(void);

#ifdef __cplusplus
}
#endif
#endif
