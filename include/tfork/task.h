/* tfork/task.h: a task server with checkouts (AnyEvent::Task in C).
 * A server process owns a template and forks one worker per client
 * connection; a client keeps a pool of such connections and lends one
 * worker at a time to a checkout, which runs its calls in order on it.
 * See tfork_task(3). */
#ifndef TFORK_TASK_H
#define TFORK_TASK_H

#include <sys/types.h>
#include <sys/uio.h>
#include <tfork.h>
#include <tfork/rpc.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Addresses, for the server's listen and the client's connect:
 *   "unix:PATH" or any string with a '/': a unix stream socket.  The
 *       server creates PATH mode 0600 in a directory it makes 0700 if
 *       missing; it replaces a stale socket (nobody accepting) and refuses
 *       (-EADDRINUSE) to steal a live one.  It accepts only peers of its
 *       own uid (SO_PEERCRED); others are refused and logged.
 *   "tcp:HOST:PORT" or "tcp:PORT": TCP; HOST defaults to 127.0.0.1, and
 *       PORT 0 (server) picks a free port (see tfork_task_server_address).
 *       TCP has no peer check: anyone who can connect can call. */

typedef struct tfork_task_server tfork_task_server;
typedef struct tfork_task_client tfork_task_client;
typedef struct tfork_task_checkout tfork_task_checkout;
typedef struct tfork_task_req tfork_task_req;   /* one call, in a worker */

/* Log levels of a log line, worker or client side. */
enum {
    TFORK_TASK_ERROR = 10,
    TFORK_TASK_WARN = 20,
    TFORK_TASK_INFO = 30,
    TFORK_TASK_DEBUG = 40
};

/* ---- server ---- */

typedef struct tfork_task_server_opts {
    const char *listen;         /* address (above); required */
    const char *name;           /* in the process titles: "tfork-task NAME:
                                   server", "tfork-task NAME: worker"
                                   (default "task") */
    /* The workers' code: a template made with tfork_new_exec and told
     * require (a module path, or NULL) then eval (a function name, or
     * NULL, called with eval_argc/eval_argv); without require, the template
     * is a copy of the server process itself (tfork_template), so
     * functions of the program (TFORK_EXPORT) are found too. */
    const char *require;
    const char *eval;
    int eval_argc;
    const char *const *eval_argv;
    /* The interface: one function for every method,
     *   int interface(tfork_task_req *req, const char *method, int n,
     *                 const struct iovec *args);
     * or, with dispatch set instead, the function named dispatch + method
     * (same signature; an unknown method fails the call).  Exactly one of
     * the two.  The function answers with tfork_task_reply or
     * tfork_task_fail before it returns. */
    const char *interface;
    const char *dispatch;
    /* Optional: int setup(tfork_task_req *req), once per worker before its
     * first call; nonzero (or tfork_task_fail) fails that call with
     * -EREMOTEIO and "setup failed: <message>", and the worker exits (the
     * client's next checkout gets a fresh one).  Optional:
     * void checkout_done(void), in the worker when a checkout that used
     * it is released. */
    const char *setup;
    const char *checkout_done;
    double hung_worker_timeout; /* seconds one call may run before the
                                   worker is killed (0: forever) */
    /* Server log lines (connections refused, workers that failed to
     * start): NULL writes them to stderr. */
    void (*on_log)(const char *line, void *data);
    void *data;
} tfork_task_server_opts;

/* Listens now, makes the template, and serves from loop.  NULL with errno
 * set (EINVAL bad options or address, EADDRINUSE a live server already
 * listens there, EEXIST something not a socket is at the path, or the
 * error of socket/bind/listen or of the template).
 * o and its strings are copied. */
TFORK_EXTERN tfork_task_server *tfork_task_server_new(struct ev_loop *loop,
                                    const tfork_task_server_opts *o);
/* The address it listens on, with the real port for "tcp:...:0". */
TFORK_EXTERN const char *tfork_task_server_address(
                                    const tfork_task_server *s);
/* Workers alive now. */
TFORK_EXTERN int tfork_task_server_workers(const tfork_task_server *s);
/* Stops listening, removes its unix socket file, closes the template.
 * Workers serving a client finish with their connection. */
TFORK_EXTERN void tfork_task_server_free(tfork_task_server *s);

/* The server in a process of its own, forked from the caller now (call
 * it early, while the caller is small and has no loop running): it
 * serves o until the caller exits (a keep-alive pipe ties them) and then
 * exits too.  Returns the server's pid (its exit is the caller's to reap,
 * e.g. after killing it), or -errno.  Like AnyEvent::Task's
 * fork_task_server; the listening socket exists when it returns. */
TFORK_EXTERN pid_t tfork_task_fork_server(const tfork_task_server_opts *o);

/* ---- worker side (inside interface, setup) ---- */

/* Answers req with n parts (binary, copied).  0, -EINVAL (NULL or
 * answered req, bad parts), -E2BIG (over TFORK_RPC_MAX /
 * TFORK_RPC_PARTS_MAX). */
TFORK_EXTERN int tfork_task_reply(tfork_task_req *req, int n,
                                  const struct iovec *res);
/* Fails req with a message (printf format): the caller's callback gets
 * -ECANCELED and the message, and its checkout's queued calls are
 * dropped. */
TFORK_EXTERN int tfork_task_fail(tfork_task_req *req, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* A log line that travels back with req's answer (reply or failure) and
 * reaches the checkout's on_log in order. */
TFORK_EXTERN int tfork_task_log(tfork_task_req *req, int level,
                                const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- client ---- */

typedef struct tfork_task_client_opts {
    const char *connect;        /* the server's address; required */
    int min_workers;            /* connections kept open (default 0) */
    int max_workers;            /* at most this many (default 20) */
    double timeout;             /* default checkout timeout, s (30) */
    int max_checkouts;          /* a worker serves at most this many
                                   checkouts, then a fresh one (0: any) */
    int dont_refork_after_error;/* keep a worker whose call failed */
} tfork_task_client_opts;

/* A client on loop.  Connects lazily (min_workers at once); a server
 * that is not up yet is retried while checkouts wait.  NULL with errno
 * (EINVAL, ENOMEM). */
TFORK_EXTERN tfork_task_client *tfork_task_client_new(struct ev_loop *loop,
                                    const tfork_task_client_opts *o);
/* Connections open now (idle and checked out). */
TFORK_EXTERN int tfork_task_client_workers(const tfork_task_client *c);
/* Fails every checkout's pending calls with -ENOTCONN "client freed"
 * (from the loop) and closes every connection.  Checkout handles stay
 * valid until released. */
TFORK_EXTERN void tfork_task_client_free(tfork_task_client *c);

/* A new checkout; timeout <= 0 means the client's default.  Its timer
 * runs while it has calls pending, from the first call queued (waiting
 * for a worker counts) to the last answered, and restarts at each
 * answer.  NULL with errno (EINVAL, ENOMEM). */
TFORK_EXTERN tfork_task_checkout *tfork_task_checkout_new(
                                    tfork_task_client *c, double timeout);

/* A call's result: err 0 with n parts in res (NUL after each, borrowed
 * until the callback returns) and msg ""; or err < 0, n 0 and msg:
 *   -ECANCELED     the worker failed the call (msg is its message), or a
 *                  call queued after it on the same checkout
 *   -EREMOTEIO     the worker's setup failed: "setup failed: <message>"
 *   -ETIMEDOUT     the checkout's timeout expired
 *   -EPIPE         the connection to the worker was lost
 *   -ECONNABORTED  tfork_task_abort (msg is the one given)
 *   -ENOTCONN      the client was freed
 * -ETIMEDOUT, -EPIPE and -ECONNABORTED are sticky: every later call on
 * the checkout fails the same way.  Runs exactly once per accepted call,
 * from the loop, never inside tfork_task_call. */
typedef void tfork_task_cb(tfork_task_checkout *co, int err, const char *msg,
                           int n, const struct iovec *res, void *data);

/* Queues method(args) on the checkout: calls run one at a time, in
 * order, on the checkout's worker.  0, or -EINVAL (NULL or released co,
 * NULL method or cb, bad parts), -E2BIG, -ENOMEM; then cb never runs. */
TFORK_EXTERN int tfork_task_call(tfork_task_checkout *co, const char *method,
                                 int n, const struct iovec *args,
                                 tfork_task_cb *cb, void *data);

/* Log lines of the checkout, the worker's (pid > 0, the worker's clock)
 * and the client's own (pid 0), in the order they happened as far as
 * the checkout can see: a worker's lines arrive with its answer, before
 * that call's callback. */
typedef void tfork_task_log_cb(tfork_task_checkout *co, int level,
                               double time, pid_t pid, const char *line,
                               void *data);
TFORK_EXTERN void tfork_task_on_log(tfork_task_checkout *co,
                                    tfork_task_log_cb *cb, void *data);
/* A client-side log line into the same stream. */
TFORK_EXTERN void tfork_task_checkout_log(tfork_task_checkout *co, int level,
                                          const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Fails the checkout's pending calls with -ECONNABORTED and msg, and
 * every later one: the worker it holds is dropped. */
TFORK_EXTERN void tfork_task_abort(tfork_task_checkout *co, const char *msg);

/* The worker the checkout holds (0 if none yet). */
TFORK_EXTERN pid_t tfork_task_worker_pid(const tfork_task_checkout *co);

/* Gives the checkout back: calls already queued still run and are
 * answered; then its worker returns to the client (checkout_done runs in
 * it) or, after a failure, is replaced.  The handle is freed after its
 * last callback.  A no-op on NULL. */
TFORK_EXTERN void tfork_task_release(tfork_task_checkout *co);

#ifdef __cplusplus
}
#endif

#endif
