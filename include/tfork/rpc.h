/* tfork/rpc.h: call functions in a running child (AnyEvent::Fork::RPC in
 * C).  A prepared process (tfork_new, tfork_fork, ...) becomes an RPC
 * server; the parent queues calls at once and gets each reply through a
 * callback from its libev loop.  See tfork_rpc(3). */
#ifndef TFORK_RPC_H
#define TFORK_RPC_H

#include <sys/uio.h>
#include <tfork.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Wire format (after the core's RUNOK, on the run socket; no fds).  Each
 * frame: u8 op, u8 0, u16 0, u32 payload length (little-endian), then
 * the payload.  Integers are u32 little-endian; a string is u32 length,
 * the bytes and a NUL; parts are u32 count, then count strings.
 *   parent to child: 32 SETUP  u32 magic "TFRK", u32 version, u32 flags
 *                              (1 async, 2 pool worker), str func,
 *                              str init ("" for none) -- first frame
 *                    33 CALL   u32 id (from 1), parts
 *   child to parent: 40 REPLY  u32 id, parts
 *                    41 FAIL   u32 id (0: the child cannot serve and
 *                              exits), i32 -errno, str message
 *                    42 EVENT  parts
 *                    43 RETIRE (pool workers) no more calls, please
 * A graceful end is the parent's shutdown(SHUT_WR): the child answers
 * what it has and exits.  Payloads are capped at 64 MiB + 64 KiB; an
 * unknown op or bad frame is a protocol error and ends the channel.
 *
 * Caps, checked on both sides: one call's arguments, one reply and one
 * event each carry at most TFORK_RPC_MAX bytes in at most
 * TFORK_RPC_PARTS_MAX parts; beyond, -E2BIG. */
#define TFORK_RPC_MAX       (64u << 20)
#define TFORK_RPC_PARTS_MAX 8192u

typedef struct tfork_rpc tfork_rpc;     /* the parent's handle */
typedef struct tfork_rpc_req tfork_rpc_req;   /* one call, in the child */

/* ---- parent side ---- */

/* A call's result.  err == 0: the reply, n parts in res (each followed by
 * a NUL not counted in iov_len; borrowed until cb returns) and msg "".
 * err < 0: the call failed, n == 0, res NULL and msg says why:
 *   -ECANCELED  the child called tfork_rpc_fail (msg is its message), or a
 *               sync function returned without replying;
 *   -EPIPE      the child died or was lost with the call pending;
 *   other       the child never started: the core's code and message
 *               (-ENOENT unknown function, -ELIBACC a module that did not
 *               load, ...), or -ENOENT / -ECANCELED for func and init.
 * Runs exactly once per accepted call, from the loop, never inside
 * tfork_rpc_call; safe to call tfork_rpc_call and tfork_rpc_free in it. */
typedef void tfork_rpc_cb(int err, const char *msg, int n,
                          const struct iovec *res, void *data);

typedef struct tfork_rpc_opts {
    int async;          /* 1: the child runs its own libev loop and serves
                           many calls at once; replies by request id.
                           0: one call at a time, replies in call order */
    const char *init;   /* NULL, or int init(int argc, const tfork_arg *argv)
                           called first in the child with the run args
                           (those sent to the template, then to the
                           process); nonzero: every call fails */
    /* an event from tfork_rpc_event: n parts (NUL after each, borrowed
       until it returns), in the order the child sent it relative to
       replies.  NULL: events are dropped */
    void (*on_event)(tfork_rpc *r, int n, const struct iovec *ev,
                     void *data);
    /* the child is lost (died, never started, protocol error): fires once,
       after every pending call's callback, in the same loop iteration */
    void (*on_error)(tfork_rpc *r, int err, const char *msg, void *data);
    /* after tfork_rpc_free, once every call was answered and the child
       closed its end (a clean end); not after on_error */
    void (*on_destroy)(tfork_rpc *r, void *data);
    void *data;         /* passed to on_event, on_error, on_destroy */
} tfork_rpc_opts;

/* Runs p (a process not yet run: tfork_new, tfork_fork, a template...) as
 * an RPC server calling func (found in the child through TFORK_EXPORT,
 * then dlsym) once per call.  o may be NULL for defaults; it and its
 * strings are copied.  Takes ownership of p, also when it fails; set
 * tfork_on_exit on p before, if you want its exit status.  Returns the
 * handle, or NULL with errno (EINVAL: NULL p or func, p already run, bad
 * options; ENOMEM).  Calls may be queued at once: they wait for the
 * child. */
TFORK_EXTERN tfork_rpc *tfork_rpc_new(tfork *p, const char *func,
                                      const tfork_rpc_opts *o);

/* Queues a call of func with n parts (binary, may be empty or n == 0;
 * copied before it returns) and never blocks.  cb gets the result later.
 * Returns 0, or: -EINVAL (NULL r or cb, n < 0, NULL args with n > 0),
 * -E2BIG (over the caps), -EPIPE (the child is lost: on_error fired),
 * -ENOMEM.  When it returns < 0, cb never runs.  Not to be called after
 * tfork_rpc_free. */
TFORK_EXTERN int tfork_rpc_call(tfork_rpc *r, int n, const struct iovec *args,
                                tfork_rpc_cb *cb, void *data);

/* The child's pid: 0 until the child has started (known inside the first
 * callback at the latest), -1 if it never started. */
TFORK_EXTERN pid_t tfork_rpc_pid(const tfork_rpc *r);

/* Calls waiting for their result (queued or in the child). */
TFORK_EXTERN int tfork_rpc_pending(const tfork_rpc *r);

/* A graceful end: calls already queued are still sent and answered, then
 * the child sees EOF, finishes and exits, and on_destroy fires (or
 * on_error, if the child is lost first).  The handle is released after
 * that last callback; while the end is in progress it keeps ev_run alive.
 * On a lost child it is released at once (on_destroy does not fire).
 * Safe inside any of r's callbacks.  A no-op on NULL. */
TFORK_EXTERN void tfork_rpc_free(tfork_rpc *r);

/* ---- child side ----
 * Modules loaded into tfork-serve call these without linking libtfork;
 * programs using tfork_early/tfork_template get them from libtfork. */

/* The function named in tfork_rpc_new:
 *   int func(tfork_rpc_req *req, int n, const struct iovec *args);
 * args: n parts, each followed by a NUL not counted in iov_len, borrowed
 * until func returns (copy what a later reply needs).
 * Sync child: reply (or fail) before returning; returning without either
 * fails the call with -ECANCELED and a message giving the return value;
 * the child goes on serving.
 * Async child: reply now or later from the loop; returning nonzero without
 * having replied fails the call with the return value in the message. */
typedef int tfork_rpc_func(tfork_rpc_req *req, int n,
                           const struct iovec *args);
typedef int tfork_rpc_init_func(int argc, const tfork_arg *argv);

/* Sends the reply of req: n parts, copied.  After it (or tfork_rpc_fail)
 * req is gone.  Returns 0; -EINVAL for a NULL, unknown or already answered
 * req, n < 0, or NULL res with n > 0; -E2BIG over the caps (req stays
 * unanswered: fail it); -EPIPE when the parent is gone. */
TFORK_EXTERN int tfork_rpc_reply(tfork_rpc_req *req, int n,
                                 const struct iovec *res);

/* Fails req: the caller's callback gets -ECANCELED and msg (NULL: "").
 * Same returns as tfork_rpc_reply. */
TFORK_EXTERN int tfork_rpc_fail(tfork_rpc_req *req, const char *msg);

/* Sends an event to the parent's on_event, ordered with the replies: from
 * inside func, init, or (async) any callback of the loop.  Returns 0,
 * -EINVAL, -E2BIG, -EPIPE, or -ENOTCONN when this process is not an RPC
 * child. */
TFORK_EXTERN int tfork_rpc_event(int n, const struct iovec *ev);

/* The async child's loop (made with ev_loop_new, not the default loop, so
 * ev_child watchers are not available); NULL in a sync child or outside
 * an RPC child.  Already valid inside init. */
TFORK_EXTERN struct ev_loop *tfork_rpc_loop(void);

#ifdef __cplusplus
}
#endif
#endif
