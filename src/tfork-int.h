/* tfork-int.h: internals shared by the client library (src/) and the
 * template side (serve/).  Nothing here is installed or exported. */
#ifndef TFORK_INT_H
#define TFORK_INT_H

#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "tfork.h"
#include "tfork/rpc.h"
#include "tfork/pool.h"
#include "tfork/task.h"
#include "proto.h"

#define TFORK_HIDDEN __attribute__((visibility("hidden")))

/* ---- sys.c: the system calls that tests replace to inject faults ---- */
struct tfork__sys {
    pid_t (*fork)(void);
    int (*socketpair)(int domain, int type, int proto, int sv[2]);
    ssize_t (*sendmsg)(int fd, const struct msghdr *m, int flags);
    ssize_t (*recvmsg)(int fd, struct msghdr *m, int flags);
    int (*posix_spawn)(pid_t *pid, const char *path,
                       const posix_spawn_file_actions_t *fa,
                       const posix_spawnattr_t *attr, char *const argv[],
                       char *const envp[]);
    int (*posix_spawnp)(pid_t *pid, const char *file,
                        const posix_spawn_file_actions_t *fa,
                        const posix_spawnattr_t *attr, char *const argv[],
                        char *const envp[]);
    int (*pidfd_open)(pid_t pid, unsigned flags);   /* -1 + errno */
    int (*dup_cloexec)(int fd);                     /* fcntl(F_DUPFD_CLOEXEC, 3) */
    /* How a template runs code a client names (serve.c: require, eval
     * and run, exec; and posix_spawnp above): the fuzz harness
     * tests/fuzz/fuzz_serve.c puts harmless fakes here, so a hostile
     * byte stream cannot dlopen any path, call any symbol ("abort",
     * "system") or exec any program. */
    void *(*dlopen)(const char *path, int flags);
    void (*(*lookup)(const char *name))(void);      /* tfork__lookup */
    int (*execvpe)(const char *file, char *const argv[],
                   char *const envp[]);
};
#define TFORK__SYS_CODE_HOOKS 1 /* dlopen, lookup, execvpe are above */
extern struct tfork__sys tfork__sys;

/* Default implementations, for a test that wraps one of them. */
pid_t tfork__sys_fork(void);
int tfork__sys_pidfd_open(pid_t pid, unsigned flags);

/* ---- fdpass.c: frames over a unix stream socket with SCM_RIGHTS ---- */

/* sendmsg with MSG_NOSIGNAL (and MSG_DONTWAIT when nonblock), fds riding
 * on the first byte; EINTR retried.  Bytes sent, or -errno (-EAGAIN). */
ssize_t tfork__send(int fd, const struct iovec *iov, int iovcnt,
                    const int *fds, int nfds, int nonblock);
/* Sends the whole buffer, waiting with poll when the socket is full. */
int tfork__send_all(int fd, const void *buf, size_t len, const int *fds,
                    int nfds);

/* An incremental frame reader.  It reads headers and payloads exactly, so
 * it never consumes a byte (or an fd) of the frame after the current one:
 * what follows a RUNOK frame stays in the socket for the user. */
typedef struct tfork_rd {
    unsigned char hdr[TFORK_HDR_LEN];   /* header bytes so far */
    size_t hpos;                        /* of TFORK_HDR_LEN */
    int have_hdr;                       /* hdr complete and valid */
    tfork_hdr h;                        /* the decoded header */
    unsigned char *payload;             /* h.len + 1 bytes once complete */
    size_t pcap;                        /* allocated, grows as bytes come */
    size_t ppos;                        /* payload bytes so far */
    int fds[TFORK_FDS_MAX];             /* fds that came with the header */
    int nfds;
    int cmd;                            /* 1: expect commands, 0: replies */
    char err[256];                      /* why a step failed */
} tfork_rd;

void tfork__rd_init(tfork_rd *r, int cmd);
/* Reads what is available (never blocking).  1: a frame is complete
 * (r->h, r->payload, r->fds); 0: would block; -EPIPE: EOF between frames;
 * other -errno: error or protocol violation, message in r->err.  Every fd
 * of a bad frame is closed. */
int tfork__rd_step(tfork_rd *r, int fd);
/* After a complete frame: frees the payload and closes any fd the caller
 * did not take (set to -1), ready for the next frame. */
void tfork__rd_next(tfork_rd *r);
/* Releases everything the reader holds. */
void tfork__rd_free(tfork_rd *r);

/* ---- rpc_io.c: the RPC channel's frame reader ----
 * The RPC channel never carries fds, so this reader may read ahead: one
 * recv takes as many frames as have arrived.  The buffer grows with the
 * bytes of a large frame as they come and shrinks again after it. */
typedef struct tfork__rrd {
    unsigned char *buf;         /* received bytes */
    size_t cap;                 /* allocated */
    size_t start, end;          /* unparsed bytes: buf[start..end) */
    int to_child;               /* accepts Q ops (1) or A ops (0) */
    char err[256];              /* why a step failed */
} tfork__rrd;

void tfork__rrd_init(tfork__rrd *r, int to_child);
void tfork__rrd_free(tfork__rrd *r);
/* One recv, MSG_DONTWAIT when nonblock.  Bytes read (> 0), 0 would
 * block, -EPIPE at EOF (also inside a frame), other -errno; r->err says
 * why.  Frames returned before become invalid. */
ssize_t tfork__rrd_fill(tfork__rrd *r, int fd, int nonblock);
/* The next complete frame: 1 with h and payload (valid until the next
 * fill), 0 when more bytes are needed, -EPROTO for a bad header. */
int tfork__rrd_frame(tfork__rrd *r, tfork_hdr *h,
                     const unsigned char **payload);

/* ---- rpc.c, for the pool ---- */
/* tfork_rpc_new for a pool worker: the child hears tfork_pool_retire()
 * and on_retire(r, o->data) runs when it does (before the reply that
 * follows it is delivered). */
tfork_rpc *tfork__rpc_new(tfork *p, const char *func,
                          const tfork_rpc_opts *o, unsigned flags,
                          void (*on_retire)(tfork_rpc *r, void *data));

/* SIGKILL to the child, now or as soon as its pid is known. */
void tfork__rpc_kill(tfork_rpc *r);

/* An RPC parent on a socket connected some other way (the task client):
 * fd (non-blocking, connected) is the handle's once it returns; the peer
 * must serve func synchronously, without init.  NULL with errno (fd is
 * then still the caller's). */
tfork_rpc *tfork__rpc_attach(struct ev_loop *loop, int fd, const char *func,
                             const tfork_rpc_opts *o);
/* Drops the connection now: pending calls fail with err and msg, then
 * on_error, all before it returns; the handle is then released.  A no-op
 * after tfork_rpc_free. */
void tfork__rpc_abort(tfork_rpc *r, int err, const char *msg);
/* No more on_event, on_error, on_destroy (their data may be gone); the
 * calls' own callbacks still run. */
void tfork__rpc_detach(tfork_rpc *r);
/* The peer's pid, for tfork_rpc_pid and messages, once it is known. */
void tfork__rpc_set_pid(tfork_rpc *r, pid_t pid);

/* ---- pool.c, for pool_map.c ---- */
struct ev_loop *tfork__pool_loop(const tfork_pool *pool);
/* Calls tfork_pool_call accepts now without -EAGAIN (INT_MAX: any). */
int tfork__pool_room(const tfork_pool *pool);

/* ---- rpc_child.c ---- */
/* The run function of an RPC child (registered by rpc.c). */
int tfork__rpc_server(int fd, int argc, const tfork_arg *argv);
#define TFORK__RPC_SERVER "tfork__rpc_server"
/* The same server loop; with fixed set, SETUP must name exactly fixed
 * (sync, no init) and fixed_func serves the calls: the peer cannot pick
 * another function.  started() runs once SETUP was accepted. */
int tfork__rpc_serve(int fd, int argc, const tfork_arg *argv,
                     const char *fixed, tfork_rpc_func *fixed_func,
                     void (*started)(void));
/* tfork_rpc_fail with another code than -ECANCELED. */
int tfork__rpc_fail_code(tfork_rpc_req *req, int err, const char *msg);

/* ---- task_server.c, task_worker.c, task_client.c ---- */
#define TFORK__TASK_WORKER "tfork__task_worker"  /* the workers' run func */
#define TFORK__TASK_FUNC "tfork-task"   /* the RPC function they serve */
int tfork__task_worker(int fd, int argc, const tfork_arg *argv);
/* A tfork/task.h address: *path is the unix path inside a (NULL for
 * TCP).  0 or -EINVAL. */
int tfork__task_addr(const char *a, struct sockaddr_storage *ss,
                     socklen_t *len, const char **path);

/* ---- export.c ---- */
/* A function by name: the TFORK_EXPORT registry, then dlsym. */
void (*tfork__lookup(const char *name))(void);

/* ---- proctitle.c ---- */
void tfork__proctitle_init(int argc, char **argv);
void tfork__proctitle(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

/* ---- serve/serve.c: the template loop ---- */
/* Serves commands on sock forever, then exits.  root: this process reaps
 * (as subreaper) every descendant and reports its exit.  Never returns. */
void tfork__serve(int sock, int root) __attribute__((noreturn));
/* For a copy of the caller's program (tfork_early, tfork_template):
 * /dev/null on closed 0/1/2, sock moved to fd 3, every other fd closed,
 * signals reset; then tfork__serve(3, 1). */
void tfork__serve_copy(int sock, const char *title)
    __attribute__((noreturn));
/* Signal dispositions to default, mask empty (for children). */
void tfork__signals_reset(void);
/* /dev/null on any of 0, 1, 2 that is closed. */
void tfork__std_fds(void);

/* ---- client side (src/client.c and friends) ---- */
struct tfork__ev;

struct tfork__frame {
    struct tfork__frame *next;
    unsigned char *buf;         /* header and payload */
    size_t len;                 /* bytes in buf */
    size_t off;                 /* bytes already sent */
    int fd;                     /* rides on the first byte, or -1 */
};

/* Frames waiting for a socket (queue.c): a short write keeps its rest. */
struct tfork__outq {
    struct tfork__frame *head, *tail;
};

/* The birth and exit record of one forked process; outlives the handle. */
typedef struct tfork__kid {
    struct tfork__kid *next;    /* in a parent's pending list or a table */
    uint32_t id;                /* fork id within the parent */
    pid_t pid;                  /* 0 until FORKED */
    tfork *proc;                /* the handle while it lives (weak) */
    tfork_exit_cb *cb;          /* on_exit, or NULL */
    void *data;
    int exited;                 /* status known, waiting for on_exit */
    int status;
} tfork__kid;

enum tfork__state {
    TFORK_PREP = 0,             /* taking commands */
    TFORK_RUNNING,              /* run or exec sent, waiting for the answer */
    TFORK_DONE                  /* handed over or failed after run */
};

#define TFORK_STASH 64

struct tfork {
    struct ev_loop *loop;       /* the loop all watchers live on */
    struct tfork__ev *ev;       /* loop_ev.c's watchers */
    int fd;                     /* client end of the socket, -1 once closed */
    int user;                   /* the caller still owns the handle */
    int refs;                   /* holds by children and running callbacks */
    int root;                   /* reaps its descendants (subreaper) */
    int lib;                    /* owned by the library: default/early */
    int kidrefs;                /* live handles whose reaper this is */
    enum tfork__state state;
    pid_t pid;                  /* 0 until known */
    int err;                    /* first failure, -errno, 0 if none */
    char *errmsg;               /* its text, NULL if none */

    struct tfork__outq q;       /* unsent frames */
    tfork_rd rd;                /* incoming frames */

    tfork *parent;              /* held until our fork is resolved */
    tfork *reaper;              /* held: whose table has our kid */
    tfork__kid *kid;            /* our own record (weak; see kid->proc) */
    int eof_early;              /* EOF before our fork was resolved */
    int fork_queued;            /* our FORK is still in the parent's queue:
                                   our frames go out just before it */
    struct tfork__frame *fork_frame;    /* that FORK, while fork_queued */
    int draining;               /* freed: half-closed, reading to EOF */

    uint32_t next_id;           /* for children we fork */
    tfork__kid *pending;        /* children forked, FORKED not yet seen */
    tfork__kid *table;          /* root: children alive, by pid */
    int nexitcb;                /* root: table entries with an on_exit */
    pid_t stash_pid[TFORK_STASH];   /* root: exits nobody claimed yet */
    int stash_status[TFORK_STASH];
    unsigned stash_n;

    /* the client's own child (exec'd or forked template, early copy) */
    int own;                    /* we must reap pid ourselves */
    int reaped;                 /* and have done so */
    int handed;                 /* run/exec succeeded: the process is the
                                   user's now, however long it lives */

    tfork_run_cb *run_cb;       /* run or exec in flight */
    void *run_data;
    int is_exec;                /* the run in flight is an exec */
    int exec_started;           /* EXECSTART seen */
    int deferred;               /* a deferred callback is scheduled */
};

/* client.c */
void tfork__hold(tfork *p);
void tfork__release(tfork *p);
void tfork__on_io(tfork *p, int readable, int writable);
void tfork__on_reaped(tfork *p, int status);
void tfork__on_defer(tfork *p);
tfork *tfork__proc_new(struct ev_loop *loop, int fd);
/* A handle for a template the client made itself: its own child, reaped
 * by the loop.  NULL with errno set; fd is then still the caller's. */
tfork *tfork__proc_own(struct ev_loop *loop, int fd, pid_t pid);
/* A constructor's result: on success errno is set back to saved_errno,
 * as the caller had it (posix_spawn's clean-up or a missing pidfd_open
 * change it on the way); on failure it stays as set.  Returns p. */
tfork *tfork__made(tfork *p, int saved_errno);
void tfork__fail(tfork *p, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* queue.c */
/* Appends b's frame (tfork__buf_end is called here) and fd, which rides
 * on its first byte; takes both, also on failure.  0 or -errno. */
int tfork__outq_push(struct tfork__outq *q, tfork_buf *b, int fd);
/* Sends what the socket takes without blocking, at most about 1 MiB per
 * call so the loop gets a turn.  0 (the queue may still hold frames: wait
 * for writability and call again), or -errno on a broken socket. */
int tfork__outq_flush(struct tfork__outq *q, int sock);
void tfork__outq_drop(struct tfork__outq *q);
int tfork__queue(tfork *p, tfork_buf *b, int fd);   /* takes b and fd */
int tfork__queue_hello(tfork *p);
int tfork__flush(tfork *p);     /* tfork__outq_flush on p's socket */
void tfork__queue_drop(tfork *p);

/* exec.c */
int tfork__spawn_serve(int sock, pid_t *pid, char *err, size_t errlen);
int tfork__cloexec_socketpair(int sv[2]);
extern int tfork__early_fd;                 /* early copy's socket, or -1 */
extern pid_t tfork__early_pid;

/* loop_ev.c: every libev call lives there */
int tfork__ev_attach(tfork *p);     /* allocate, start reading p->fd */
void tfork__ev_update(tfork *p);    /* events and reference after a change */
void tfork__ev_close(tfork *p);     /* stop watching p->fd */
int tfork__ev_reap(tfork *p);       /* watch p->pid (our child) */
void tfork__ev_defer(tfork *p);     /* tfork__on_defer soon, from the loop */
void tfork__ev_free(tfork *p);
int tfork__ev_is_default(struct ev_loop *loop);

/* loop_ev.c, for the layers above the core (rpc): a socket watcher and a
 * "soon" callback, both on one loop.  io(arg, readable, writable) while
 * the fd is watched; later(arg) once per tfork__watch_later, from the
 * loop.  ref 0: the io watcher does not keep ev_run alive. */
typedef struct tfork__watch tfork__watch;
tfork__watch *tfork__watch_new(struct ev_loop *loop,
                               void (*io)(void *arg, int rd, int wr),
                               void (*later)(void *arg), void *arg);
void tfork__watch_io(tfork__watch *w, int fd, int rd, int wr, int ref);
void tfork__watch_later(tfork__watch *w);
void tfork__watch_free(tfork__watch *w);
/* The async RPC child's own loop. */
struct ev_loop *tfork__loop_new(void);
void tfork__loop_run(struct ev_loop *loop);
void tfork__loop_free(struct ev_loop *loop);
void tfork__loop_break(struct ev_loop *loop);
/* A timer: fn(arg) once, after seconds; ref 0: it does not keep ev_run
 * alive.  Starting a started timer restarts it. */
typedef struct tfork__timer tfork__timer;
tfork__timer *tfork__timer_new(struct ev_loop *loop, void (*fn)(void *arg),
                               void *arg);
void tfork__timer_start(tfork__timer *t, double seconds, int ref);
void tfork__timer_stop(tfork__timer *t);
int tfork__timer_active(const tfork__timer *t);
void tfork__timer_free(tfork__timer *t);
double tfork__now(struct ev_loop *loop);

#endif
