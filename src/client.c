/* client.c: the tfork handle: the public API, the replies from template
 * and children, fork and exit bookkeeping, and every callback.  Callbacks
 * run only from the loop (loop_ev.c calls in here), never inside an API
 * call; a handle is freed only once nothing refers to it any more. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tfork-int.h"

enum { K_PENDING, K_TABLE, K_DETACHED, K_PRIVATE };

/* Where a kid record lives: a parent's pending list (fork not answered),
 * its reaper's table (alive), detached (exited, waiting for on_exit on a
 * live handle) or private (the client's own child, reaped by the loop). */
struct kid_ext {
    tfork__kid k;
    int where;                  /* K_* */
};

static int kid_place(const tfork__kid *k)
{
    return ((const struct kid_ext *)k)->where;
}

static void kid_set_place(tfork__kid *k, int where)
{
    ((struct kid_ext *)k)->where = where;
}

static tfork__kid *kid_new(int where)
{
    struct kid_ext *e = calloc(1, sizeof *e);

    if (!e)
        return NULL;
    e->where = where;
    return &e->k;
}

static void check(tfork *p);
static void destroy(tfork *p);

void tfork__hold(tfork *p)
{
    p->refs++;
}

void tfork__release(tfork *p)
{
    p->refs--;
    check(p);
}

void tfork__fail(tfork *p, int err, const char *fmt, ...)
{
    va_list ap;
    char buf[1024];

    if (p->err)
        return;     /* the first cause is the one worth telling */
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    p->err = err;
    p->errmsg = strdup(buf);
}

static void fail_copy(tfork *p, const tfork *from)
{
    tfork__fail(p, from->err ? from->err : -EPIPE, "%s",
                from->errmsg ? from->errmsg : "process gone");
}

/* The tree root whose table holds the exits of p's children. */
static tfork *tree_of(tfork *p)
{
    return p->root ? p : p->reaper;
}

tfork *tfork__proc_new(struct ev_loop *loop, int fd)
{
    tfork *p = calloc(1, sizeof *p);

    if (!p)
        return NULL;
    p->loop = loop;
    p->fd = fd;
    p->user = 1;
    tfork__rd_init(&p->rd, 0);
    if (tfork__ev_attach(p) < 0) {
        free(p);
        errno = ENOMEM;
        return NULL;
    }
    return p;
}

/* ---- exits ---- */

/* Callers take k out of any table (and its count) first. */
static void exit_fire(tfork__kid *k, int status)
{
    tfork_exit_cb *cb = k->cb;

    k->cb = NULL;
    if (k->proc)
        k->proc->kid = NULL;
    if (cb)
        cb(k->pid, status, k->data);
    free(k);
}

/* A kid's status is known: tell on_exit, or keep it for a later one. */
static void exit_deliver(tfork__kid *k, int status)
{
    if (!k->cb && k->proc) {
        kid_set_place(k, K_DETACHED);
        k->exited = 1;
        k->status = status;
        return;
    }
    exit_fire(k, status);
}

static void table_add(tfork *root, tfork__kid *k)
{
    kid_set_place(k, K_TABLE);
    k->next = root->table;
    root->table = k;
    if (k->cb)
        root->nexitcb++;
    /* its exit may have come first, through another socket */
    for (unsigned i = 0; i < root->stash_n; i++) {
        if (root->stash_pid[i] == k->pid) {
            int st = root->stash_status[i];

            root->stash_pid[i] = root->stash_pid[--root->stash_n];
            root->stash_status[i] = root->stash_status[root->stash_n];
            root->table = k->next;
            if (k->cb)
                root->nexitcb--;
            k->next = NULL;
            exit_deliver(k, st);
            return;
        }
    }
}

static void exit_report(tfork *root, pid_t pid, int status)
{
    tfork__kid **pp, *k;

    for (pp = &root->table; (k = *pp); pp = &k->next) {
        if (k->pid == pid) {
            *pp = k->next;
            k->next = NULL;
            if (k->cb)
                root->nexitcb--;
            exit_deliver(k, status);
            return;
        }
    }
    /* orphans the subreaper adopted, or a child whose FORKED is still on
     * its way through its parent's socket */
    if (root->stash_n == TFORK_STASH) {
        memmove(root->stash_pid, root->stash_pid + 1,
                sizeof(pid_t) * (TFORK_STASH - 1));
        memmove(root->stash_status, root->stash_status + 1,
                sizeof(int) * (TFORK_STASH - 1));
        root->stash_n--;
    }
    root->stash_pid[root->stash_n] = pid;
    root->stash_status[root->stash_n++] = status;
}

/* The root's socket is gone: no exit will be reported through it. */
static void table_abandon(tfork *root)
{
    while (root->table) {
        tfork__kid *k = root->table;

        root->table = k->next;
        k->next = NULL;
        if (k->cb)
            root->nexitcb--;
        if (k->cb || k->proc)
            exit_deliver(k, -1);
        else
            free(k);
    }
    root->stash_n = 0;
}

/* ---- run/exec completion ---- */

static void fork_failed(tfork__kid *k, const tfork *from);

static void finish_run(tfork *p, int fd, int err)
{
    tfork_run_cb *cb = p->run_cb;

    p->state = TFORK_DONE;
    p->run_cb = NULL;
    tfork__hold(p);
    /* p runs user code now (or failed): a fork it has not answered
     * never will be.  Say so now, from the loop, not later inside the
     * tfork_free of the child that holds p (destroy()). */
    while (p->pending) {
        tfork__kid *k = p->pending;

        p->pending = k->next;
        k->next = NULL;
        fork_failed(k, p);
    }
    if (cb)
        cb(p, fd, err, p->run_data);
    p->user = 0;
    tfork__release(p);
}

/* p has failed: everything waiting on it learns why. */
static void doom(tfork *p)
{
    tfork__hold(p);
    while (p->pending) {
        tfork__kid *k = p->pending;

        p->pending = k->next;
        k->next = NULL;
        fork_failed(k, p);
    }
    if (p->state == TFORK_RUNNING && !p->deferred)
        finish_run(p, -1, p->err);
    tfork__release(p);
}

static void close_sock(tfork *p)
{
    if (p->fd < 0)
        return;
    tfork__ev_close(p);
    close(p->fd);
    p->fd = -1;
    tfork__queue_drop(p);
    tfork__rd_free(&p->rd);
    /* our own child exits now: wait for it, so no zombie outlives ev_run */
    tfork__ev_update(p);
}

/* ---- fork resolution ---- */

static tfork__kid *pending_take(tfork *p, uint32_t id)
{
    tfork__kid **pp, *k;

    for (pp = &p->pending; (k = *pp); pp = &k->next) {
        if (k->id == id) {
            *pp = k->next;
            k->next = NULL;
            return k;
        }
    }
    return NULL;
}

static void fork_failed(tfork__kid *k, const tfork *from)
{
    tfork *c = k->proc;

    if (c) {
        c->kid = NULL;
        tfork__hold(c);
        fail_copy(c, from);
        close_sock(c);
        doom(c);
        tfork__release(c);
    }
    k->proc = NULL;
    /* the process never existed: its on_exit still fires, once */
    exit_fire(k, -1);
}

static void forked(tfork *p, uint32_t id, pid_t pid)
{
    tfork__kid *k = pending_take(p, id);
    tfork *c;

    if (!k)
        return;
    k->pid = pid;
    c = k->proc;
    if (c) {
        if (!c->pid)
            c->pid = pid;
        if (c->parent) {
            tfork *par = c->parent;

            c->parent = NULL;
            tfork__release(par);
        }
    }
    table_add(tree_of(p), k);
    if (c && c->eof_early) {
        tfork__hold(c);
        tfork__fail(c, -EPIPE, "process %d exited before it was run",
                    (int)pid);
        doom(c);
        tfork__release(c);
    }
}

/* ---- incoming frames ---- */

static void protocol_violation(tfork *p, const char *what)
{
    tfork__fail(p, -EPROTO, "protocol error: %s from process %d", what,
                (int)p->pid);
}

static void on_eof(tfork *p)
{
    tfork__hold(p);
    if (p->draining) {          /* the freed child is gone, all read */
        close_sock(p);
        tfork__release(p);
        return;
    }
    if (p->state == TFORK_RUNNING && p->is_exec && p->exec_started &&
        !p->err) {
        /* the close-on-exec socket closed: execve succeeded */
        p->handed = 1;
        close_sock(p);
        finish_run(p, -1, 0);
        tfork__release(p);
        return;
    }
    if (p->kid && kid_place(p->kid) == K_PENDING && !p->err) {
        /* did the fork fail, or did the child die?  its parent says */
        p->eof_early = 1;
        close_sock(p);
        tfork__release(p);
        return;
    }
    if (p->root)
        tfork__fail(p, -EPIPE, "template %d exited", (int)p->pid);
    else
        tfork__fail(p, -EPIPE, "process %d exited before it was run",
                    (int)p->pid);
    close_sock(p);
    if (p->root)
        table_abandon(p);
    doom(p);
    tfork__release(p);
}

static void handle_frame(tfork *p)
{
    tfork_cur c;
    uint32_t a = 0, b = 0, pid = 0;
    const char *msg;

    tfork__cur_init(&c, p->rd.payload, p->rd.h.len);
    switch (p->rd.h.op) {
    case TFORK_OP_FORKED:
        tfork__cur_u32(&c, &a);
        tfork__cur_u32(&c, &b);
        if (tfork__cur_done(&c) || (int32_t)b <= 0)
            break;
        forked(p, a, (pid_t)b);
        return;
    case TFORK_OP_EXIT:
        tfork__cur_u32(&c, &a);
        tfork__cur_u32(&c, &b);
        if (tfork__cur_done(&c) || (int32_t)a <= 0 || !tree_of(p))
            break;
        exit_report(tree_of(p), (pid_t)a, (int)b);
        return;
    case TFORK_OP_ERROR:
        tfork__cur_u32(&c, &a);
        tfork__cur_u32(&c, &b);
        tfork__cur_u32(&c, &pid);
        tfork__cur_str(&c, &msg, NULL);
        if (tfork__cur_done(&c) || (int32_t)a >= 0 || (int32_t)pid <= 0)
            break;
        if (!b && !p->pid)
            p->pid = (pid_t)pid;    /* the failing process itself */
        if (b) {
            tfork__kid *k = pending_take(p, b);
            tfork tmp;

            if (k) {
                memset(&tmp, 0, sizeof tmp);
                tmp.err = (int)a;
                tmp.errmsg = (char *)msg;
                fork_failed(k, &tmp);
            }
            return;
        }
        tfork__fail(p, (int)a, "%s", msg);
        doom(p);
        return;
    case TFORK_OP_RUNOK:
        tfork__cur_u32(&c, &a);
        if (tfork__cur_done(&c) || (int32_t)a <= 0 ||
            p->state != TFORK_RUNNING || p->is_exec)
            break;
        p->pid = (pid_t)a;
        {
            int fd = p->fd;

            /* nothing of ours is left in the stream: the reader stopped
             * exactly at the end of this frame */
            p->handed = 1;
            tfork__ev_close(p);
            p->fd = -1;
            tfork__rd_free(&p->rd);
            if (p->root)
                table_abandon(p);
            finish_run(p, fd, 0);
        }
        return;
    case TFORK_OP_EXECSTART:
        tfork__cur_u32(&c, &a);
        if (tfork__cur_done(&c) || (int32_t)a <= 0 ||
            p->state != TFORK_RUNNING || !p->is_exec)
            break;
        p->pid = (pid_t)a;
        p->exec_started = 1;
        /* the process says who it is: its fork is resolved, whether or
         * not its parent's FORKED has come (a template that spawned it
         * sends none) */
        if (p->kid && kid_place(p->kid) == K_PENDING && p->parent)
            forked(p->parent, p->kid->id, (pid_t)a);
        return;
    }
    protocol_violation(p, "unexpected or malformed reply");
    close_sock(p);
    /* no exit comes through this socket any more: say so now, from the
     * loop, not later inside tfork_free's destroy() */
    if (p->root)
        table_abandon(p);
    doom(p);
}

/* Sends what p's socket takes; first, the frames of children whose
 * FORK is among p's: a child's commands queued before its FORK went out
 * reach its socket before the template reads the FORK (all in one
 * sendmsg where they carry no fds), so the template sees at once a child
 * that only execs (serve.c spawns it). */
static int flush(tfork *p)
{
    for (tfork__kid *k = p->pending; k; k = k->next) {
        tfork *c = k->proc;

        if (c && c->fork_queued) {
            c->fork_queued = 0;
            if (c->fd >= 0 && c->q.head) {
                /* the release lets a child freed meanwhile, whose queue
                 * kept it busy, go on to its end (check) */
                tfork__hold(c);
                if (flush(c) < 0)
                    tfork__queue_drop(c);
                tfork__ev_update(c);
                tfork__release(c);
            }
        }
    }
    return tfork__flush(p);
}

void tfork__on_io(tfork *p, int readable, int writable)
{
    tfork__hold(p);
    if (writable && p->fd >= 0) {
        int r = flush(p);

        if (r < 0)
            tfork__queue_drop(p);   /* the reader will see the EOF */
    }
    while (readable && p->fd >= 0) {
        int r = tfork__rd_step(&p->rd, p->fd);

        if (r == 0)
            break;
        if (r == -EPIPE || r == -ECONNRESET) {
            on_eof(p);
            break;
        }
        if (r < 0) {
            tfork__fail(p, r, "%s (process %d)", p->rd.err, (int)p->pid);
            close_sock(p);
            if (p->root)
                table_abandon(p);
            doom(p);
            break;
        }
        handle_frame(p);
        if (p->fd >= 0)
            tfork__rd_next(&p->rd);
    }
    if (p->fd >= 0)
        tfork__ev_update(p);
    tfork__release(p);
}

void tfork__on_reaped(tfork *p, int status)
{
    tfork__kid *k = p->kid;

    tfork__hold(p);
    p->reaped = 1;
    if (k)
        exit_deliver(k, status);  /* kept for a later on_exit */
    tfork__release(p);
}

void tfork__on_defer(tfork *p)
{
    tfork__hold(p);
    p->deferred = 0;
    if (p->state == TFORK_RUNNING && p->err)
        finish_run(p, -1, p->err);
    if (p->kid && p->kid->exited && p->kid->cb) {
        tfork__kid *k = p->kid;

        p->kid = NULL;
        k->proc = NULL;
        exit_fire(k, k->status);
    }
    tfork__release(p);
}

/* ---- lifetime ---- */

static int busy(const tfork *p)
{
    return p->user || p->state == TFORK_RUNNING || p->q.head ||
           p->pending || p->nexitcb > 0 || (p->root && p->kidrefs > 0);
}

static void check(tfork *p)
{
    if (p->refs > 0)
        return;
    if (p->fd >= 0 && !busy(p) && !p->draining) {
        if (!p->root && p->state == TFORK_PREP && !p->err) {
            /* an unrun child: it exits at our EOF, but may have reaped
             * a child of its own and written that exit already; read
             * on until its EOF, so that status is not lost */
            p->draining = 1;
            shutdown(p->fd, SHUT_WR);
        } else {
            close_sock(p);
        }
    }
    if (p->fd < 0 && !p->user && !p->deferred &&
        !(p->own && !p->reaped && p->pid > 0))
        destroy(p);
    else if (p->fd >= 0)
        tfork__ev_update(p);
}

static void destroy(tfork *p)
{
    tfork *par = p->parent, *rp = p->reaper;

    p->refs++;  /* no re-entry through the releases below */
    close_sock(p);
    while (p->pending) {
        tfork__kid *k = p->pending;

        p->pending = k->next;
        k->next = NULL;
        fork_failed(k, p);
    }
    table_abandon(p);
    if (p->kid) {
        tfork__kid *k = p->kid;

        k->proc = NULL;
        p->kid = NULL;
        if (kid_place(k) == K_DETACHED || kid_place(k) == K_PRIVATE)
            exit_fire(k, k->exited ? k->status : -1);
    }
    tfork__ev_free(p);
    free(p->errmsg);
    free(p);
    if (rp) {
        rp->kidrefs--;
        tfork__release(rp);
    }
    if (par)
        tfork__release(par);
}

/* ---- public API ---- */

static struct tfork *deftpl;    /* the default template */
static struct tfork *earlyp;    /* the early copy, once bound to a loop */

TFORK_EXTERN const char *tfork_version(void)
{
    return TFORK_VERSION_STRING;
}

TFORK_EXTERN const char *tfork_strerror(int err)
{
    if (err > 0)
        err = -err;     /* a plain errno value means the same */
    if (err == 0)
        return "success";
#ifdef HAVE_STRERRORDESC_NP
    {
        const char *s = strerrordesc_np(-err);

        return s ? s : "unknown error";
    }
#else
    return strerror(-err);
#endif
}

static void kick(tfork *p)
{
    if (p->fd < 0)
        return;
    if (p->fork_queued) {
        tfork__ev_update(p);    /* it goes with the FORK (flush) */
        return;
    }
    if (flush(p) < 0)
        tfork__queue_drop(p);
    tfork__ev_update(p);
}

static int can_queue(const tfork *p)
{
    return p && p->user && p->state == TFORK_PREP;
}

/* Queues a frame for p; a process that already failed takes nothing but
 * says nothing either: the failure reaches the run callback. */
static int queue(tfork *p, tfork_buf *b, int fd)
{
    int r;

    if (p->err || p->fd < 0) {
        tfork__buf_free(b);
        if (fd >= 0)
            close(fd);
        return 0;
    }
    r = tfork__queue(p, b, fd);
    if (r == 0)
        kick(p);
    return r;
}

/* A new child of x, its socket pair made here so commands can be queued
 * at once, before the fork has happened. */
static tfork *fork_child(tfork *x, uint32_t flags)
{
    tfork *c;
    tfork__kid *k;
    tfork_buf b;
    int sv[2], r;

    if (x->err || x->fd < 0) {
        /* a child of a failed process fails the same way, when run */
        c = tfork__proc_new(x->loop, -1);
        if (!c)
            return NULL;
        fail_copy(c, x);
        return c;
    }
    r = tfork__cloexec_socketpair(sv);
    if (r < 0) {
        errno = -r;
        return NULL;
    }
    fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK);
    k = kid_new(K_PENDING);
    c = k ? tfork__proc_new(x->loop, sv[0]) : NULL;
    if (!c) {
        free(k);
        close(sv[0]);
        close(sv[1]);
        errno = ENOMEM;
        return NULL;
    }
    k->id = ++x->next_id;
    if (!k->id)
        k->id = ++x->next_id;   /* 0 means "no fork" in ERROR */
    tfork__buf_frame(&b, TFORK_OP_FORK, 1);
    tfork__buf_u32(&b, k->id);
    tfork__buf_u32(&b, flags);
    r = tfork__queue_hello(c);
    if (r == 0)
        r = tfork__queue(x, &b, sv[1]);
    else {
        tfork__buf_free(&b);
        close(sv[1]);
    }
    if (r < 0) {
        free(k);
        c->user = 0;
        check(c);
        errno = -r;
        return NULL;
    }
    k->proc = c;
    c->kid = k;
    k->next = x->pending;
    x->pending = k;
    c->parent = x;
    tfork__hold(x);
    if (flags & TFORK_FORK_NEWROOT)
        c->root = 1;
    c->reaper = tree_of(x);
    tfork__hold(c->reaper);
    c->reaper->kidrefs++;
    /* the FORK goes out from the loop, the child's commands just before
     * it (flush): by then they hold what the caller queued for the child
     * meanwhile, and a child that only execs can be spawned by x instead
     * of forked (serve.c) */
    c->fork_queued = 1;
    c->fork_frame = x->q.tail;
    tfork__ev_update(c);
    tfork__ev_update(x);
    return c;
}

TFORK_EXTERN tfork *tfork_fork(tfork *tpl)
{
    if (!can_queue(tpl)) {
        errno = EINVAL;
        return NULL;
    }
    return fork_child(tpl, 0);
}

/* A handle for a template the client made itself (spawned or forked):
 * its own child, reaped by the loop, its exit told to on_exit.  NULL with
 * errno set on failure; fd is then still the caller's. */
tfork *tfork__proc_own(struct ev_loop *loop, int fd, pid_t pid)
{
    tfork__kid *k = kid_new(K_PRIVATE);
    tfork *p = k ? tfork__proc_new(loop, fd) : NULL;

    if (!p) {
        free(k);
        errno = ENOMEM;
        return NULL;
    }
    p->root = p->own = 1;
    p->pid = pid;
    k->pid = pid;
    k->proc = p;
    p->kid = k;
    if (tfork__ev_reap(p) < 0 || tfork__queue_hello(p) < 0) {
        tfork__ev_free(p);
        tfork__queue_drop(p);
        free(k);
        free(p);
        errno = ENOMEM;
        return NULL;
    }
    kick(p);
    return p;
}

/* The early copy as a handle on loop; bound to the first loop used. */
static tfork *early(struct ev_loop *loop)
{
    if (earlyp) {
        if (earlyp->loop != loop) {
            errno = EXDEV;
            return NULL;
        }
        return earlyp;
    }
    earlyp = tfork__proc_own(loop, tfork__early_fd, tfork__early_pid);
    if (earlyp)
        earlyp->lib = 1;
    return earlyp;
}

/* A template the client spawns itself: tfork-serve via posix_spawn. */
static tfork *spawn_template(struct ev_loop *loop)
{
    int sv[2], r;
    pid_t pid;
    char err[512];
    tfork *p;

    r = tfork__cloexec_socketpair(sv);
    if (r < 0) {
        errno = -r;
        return NULL;
    }
    r = tfork__spawn_serve(sv[1], &pid, err, sizeof err);
    close(sv[1]);
    if (r < 0) {
        close(sv[0]);
        errno = -r;
        return NULL;
    }
    fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK);
    p = tfork__proc_own(loop, sv[0], pid);
    if (!p) {
        /* the new template sees EOF and exits; reap it here */
        close(sv[0]);
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
            ;
        errno = ENOMEM;
        return NULL;
    }
    return p;
}

tfork *tfork__made(tfork *p, int saved_errno)
{
    if (p)
        errno = saved_errno;
    return p;
}

TFORK_EXTERN tfork *tfork_new_exec(struct ev_loop *loop)
{
    int saved = errno;
    tfork *e;

    if (!loop) {
        errno = EINVAL;
        return NULL;
    }
    if (tfork__early_fd < 0)
        return tfork__made(spawn_template(loop), saved);
    e = early(loop);
    return tfork__made(e ? fork_child(e, TFORK_FORK_NEWROOT) : NULL, saved);
}

TFORK_EXTERN tfork *tfork_new(struct ev_loop *loop)
{
    int saved = errno;

    if (!loop) {
        errno = EINVAL;
        return NULL;
    }
    if (tfork__early_fd >= 0) {
        tfork *e = early(loop);

        return e ? fork_child(e, 0) : NULL;
    }
    if (deftpl && deftpl->loop != loop) {
        errno = EXDEV;
        return NULL;
    }
    if (deftpl && (deftpl->err || deftpl->fd < 0)) {
        /* the default template died: start another */
        tfork *old = deftpl;

        deftpl = NULL;
        old->lib = 0;
        old->user = 0;
        check(old);
    }
    if (!deftpl) {
        deftpl = spawn_template(loop);
        if (!deftpl)
            return NULL;
        deftpl->lib = 1;
    }
    return tfork__made(fork_child(deftpl, 0), saved);
}

TFORK_EXTERN int tfork_require(tfork *p, const char *module)
{
    tfork_buf b;
    size_t n;

    if (!can_queue(p) || !module || !*module)
        return -EINVAL;
    n = strlen(module);
    if (n > TFORK_STR_MAX)
        return -E2BIG;
    tfork__buf_frame(&b, TFORK_OP_REQUIRE, 0);
    tfork__buf_str(&b, module, n);
    return queue(p, &b, -1);
}

TFORK_EXTERN int tfork_eval(tfork *p, const char *func, int argc,
                            const char *const argv[])
{
    tfork_buf b;
    size_t n;

    if (!can_queue(p) || !func || !*func || argc < 0 ||
        (argc > 0 && !argv))
        return -EINVAL;
    if ((unsigned)argc > TFORK_LIST_MAX)
        return -E2BIG;
    n = strlen(func);
    if (n > TFORK_STR_MAX)
        return -E2BIG;
    for (int i = 0; i < argc; i++)
        if (!argv[i])
            return -EINVAL;
    tfork__buf_frame(&b, TFORK_OP_EVAL, 0);
    tfork__buf_str(&b, func, n);
    tfork__buf_u32(&b, (uint32_t)argc);
    for (int i = 0; i < argc; i++)
        tfork__buf_str(&b, argv[i], strlen(argv[i]));
    return queue(p, &b, -1);
}

TFORK_EXTERN int tfork_send_arg(tfork *p, const void *buf, size_t len)
{
    tfork_buf b;

    if (!can_queue(p) || (!buf && len))
        return -EINVAL;
    if (len > TFORK_ARG_MAX)
        return -E2BIG;
    tfork__buf_frame(&b, TFORK_OP_ARG, 0);
    tfork__buf_raw(&b, buf, len);
    return queue(p, &b, -1);
}

TFORK_EXTERN int tfork_send_fd(tfork *p, int fd)
{
    tfork_buf b;
    int d;

    if (!can_queue(p) || fd < 0)
        return -EINVAL;
    d = tfork__sys.dup_cloexec(fd);
    if (d < 0)
        return errno == EBADF ? -EINVAL : -errno;
    tfork__buf_frame(&b, TFORK_OP_ARGFD, 1);
    return queue(p, &b, d);
}

/* Sets TFORK_FORK_EXEC in p's FORK, still unsent in its parent's
 * queue (the flags follow the header and the u32 id). */
static void hint_exec(tfork *p)
{
    for (struct tfork__frame *f = p->parent->q.head; f; f = f->next) {
        if (f == p->fork_frame && f->off == 0 &&
            f->len >= TFORK_HDR_LEN + 8) {
            f->buf[TFORK_HDR_LEN + 4] |= TFORK_FORK_EXEC;
            return;
        }
    }
}

static int start_run(tfork *p, tfork_buf *b, int is_exec, tfork_run_cb *cb,
                     void *data)
{
    int r = queue(p, b, -1);

    if (r < 0)
        return r;
    p->state = TFORK_RUNNING;
    p->run_cb = cb;
    p->run_data = data;
    p->is_exec = is_exec;
    /* p takes no more commands: its FORK and they need not wait for the
     * loop (flush sends them in that order); a FORK followed by nothing
     * but an exec says so, for the template to spawn the program */
    if (p->fork_queued && p->parent) {
        if (is_exec)
            hint_exec(p);
        kick(p->parent);
    }
    if (p->err || p->fd < 0) {
        /* already failed: tell the callback from the loop */
        if (!p->err)
            tfork__fail(p, -EPIPE, "process gone before it was run");
        p->deferred = 1;
        tfork__ev_defer(p);
    } else {
        tfork__ev_update(p);
    }
    return 0;
}

TFORK_EXTERN int tfork_run(tfork *p, const char *func, tfork_run_cb *cb,
                           void *data)
{
    tfork_buf b;
    size_t n;

    if (!can_queue(p) || !func || !*func || !cb)
        return -EINVAL;
    n = strlen(func);
    if (n > TFORK_STR_MAX)
        return -E2BIG;
    tfork__buf_frame(&b, TFORK_OP_RUN, 0);
    tfork__buf_str(&b, func, n);
    return start_run(p, &b, 0, cb, data);
}

static int add_list(tfork_buf *b, char *const v[])
{
    uint32_t n = 0;

    while (v[n]) {
        if (strlen(v[n]) > TFORK_STR_MAX)
            return -E2BIG;
        if (++n > TFORK_LIST_MAX)
            return -E2BIG;
    }
    tfork__buf_u32(b, n);
    for (uint32_t i = 0; i < n; i++)
        tfork__buf_str(b, v[i], strlen(v[i]));
    return 0;
}

TFORK_EXTERN int tfork_exec(tfork *p, const char *path, char *const argv[],
                            char *const envp[], tfork_run_cb *cb, void *data)
{
    tfork_buf b;
    int r;

    if (!can_queue(p) || !path || !*path || !argv || !argv[0] || !cb)
        return -EINVAL;
    if (strlen(path) > TFORK_STR_MAX)
        return -E2BIG;
    tfork__buf_frame(&b, TFORK_OP_EXEC, 0);
    tfork__buf_u32(&b, envp ? TFORK_EXEC_ENVP : 0);
    tfork__buf_str(&b, path, strlen(path));
    r = add_list(&b, argv);
    if (r == 0 && envp)
        r = add_list(&b, envp);
    if (r < 0) {
        tfork__buf_free(&b);
        return r;
    }
    return start_run(p, &b, 1, cb, data);
}

TFORK_EXTERN int tfork_on_exit(tfork *p, tfork_exit_cb *cb, void *data)
{
    tfork__kid *k;

    if (!can_queue(p) || !cb)
        return -EINVAL;
    k = p->kid;
    if (!k) {
        /* no process to wait for (it never existed, or its status is
         * gone): accepted all the same, reported once as -1 */
        k = kid_new(K_DETACHED);
        if (!k)
            return -ENOMEM;
        k->proc = p;
        k->exited = 1;
        k->status = -1;
        p->kid = k;
    }
    if (k->cb)
        return -EBUSY;
    k->cb = cb;
    k->data = data;
    if (kid_place(k) == K_TABLE)
        p->reaper->nexitcb++;
    else if (kid_place(k) == K_DETACHED) {
        p->deferred = 1;
        tfork__ev_defer(p);
    }
    if (p->fd >= 0)
        tfork__ev_update(p);
    if (p->reaper && p->reaper->fd >= 0)
        tfork__ev_update(p->reaper);
    return 0;
}

TFORK_EXTERN pid_t tfork_pid(const tfork *p)
{
    return p ? p->pid : 0;
}

TFORK_EXTERN const char *tfork_errmsg(const tfork *p)
{
    return p && p->errmsg ? p->errmsg : "";
}

TFORK_EXTERN void tfork_free(tfork *p)
{
    if (!p || !p->user || p->lib || p->state != TFORK_PREP)
        return;
    p->user = 0;
    check(p);
}
