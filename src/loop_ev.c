/* loop_ev.c: the libev binding.  Every libev call of the library lives
 * here, behind the small interface in tfork-int.h (watch a socket, reap a
 * child, run something soon), so another loop can be bound later. */
#include <errno.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
#include <ev.h>

#include "tfork-int.h"

struct tfork__ev {
    ev_io io;               /* p->fd */
    int io_on;              /* io started */
    int io_ref;             /* io counts toward ev_run staying alive */
    int io_events;          /* EV_READ/EV_WRITE it watches */
    ev_child child;         /* default loop: libev reaps, we get status */
    ev_io pidio;            /* other loops: a pidfd turns readable */
    int pidfd;
    ev_timer poll;          /* no pidfd: waitpid now and then */
    int reap_on;            /* one of the three is started */
    int reap_ref;
    ev_timer defer;         /* tfork__on_defer from the loop */
    tfork *p;
};

int tfork__ev_is_default(struct ev_loop *loop)
{
    return ev_is_default_loop(loop);
}

static void io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct tfork__ev *e = w->data;

    (void)loop;
    tfork__on_io(e->p, !!(revents & EV_READ), !!(revents & EV_WRITE));
}

static void defer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct tfork__ev *e = w->data;

    (void)loop;
    (void)revents;
    tfork__on_defer(e->p);
}

int tfork__ev_attach(tfork *p)
{
    struct tfork__ev *e = calloc(1, sizeof *e);

    if (!e)
        return -ENOMEM;
    e->p = p;
    e->pidfd = -1;
    e->io_ref = 1;
    ev_io_init(&e->io, io_cb, p->fd, EV_READ);
    e->io.data = e;
    ev_timer_init(&e->defer, defer_cb, 0., 0.);
    e->defer.data = e;
    p->ev = e;
    tfork__ev_update(p);
    return 0;
}

static int want_ref(const tfork *p)
{
    return p->q.head || p->state == TFORK_RUNNING || p->pending ||
           p->draining ||
           p->nexitcb > 0;
}

static void io_stop(struct tfork__ev *e, struct ev_loop *loop)
{
    if (!e->io_on)
        return;
    if (!e->io_ref)
        ev_ref(loop);
    ev_io_stop(loop, &e->io);
    e->io_on = 0;
}

void tfork__ev_update(tfork *p)
{
    struct tfork__ev *e = p->ev;
    int events, ref;

    if (!e)
        return;
    if (p->fd < 0) {
        io_stop(e, p->loop);
    } else {
        events = EV_READ | (p->q.head ? EV_WRITE : 0);
        ref = want_ref(p);
        if (e->io_on && (events != e->io_events || ref != e->io_ref))
            io_stop(e, p->loop);
        if (!e->io_on) {
            ev_io_set(&e->io, p->fd, events);
            ev_io_start(p->loop, &e->io);
            e->io_on = 1;
            e->io_events = events;
            e->io_ref = ref;
            if (!ref)
                ev_unref(p->loop);
        }
    }
    if (e->reap_on) {
        /* once its socket is closed it exits at once: wait for that */
        ref = (p->kid && p->kid->cb) || (p->fd < 0 && !p->handed);
        if (ref != e->reap_ref) {
            if (ref)
                ev_ref(p->loop);
            else
                ev_unref(p->loop);
            e->reap_ref = ref;
        }
    }
}

void tfork__ev_close(tfork *p)
{
    if (p->ev)
        io_stop(p->ev, p->loop);
}

static void reap_stop(struct tfork__ev *e, struct ev_loop *loop)
{
    if (!e->reap_on)
        return;
    if (!e->reap_ref)
        ev_ref(loop);
    if (ev_is_active(&e->child))
        ev_child_stop(loop, &e->child);
    if (ev_is_active(&e->pidio))
        ev_io_stop(loop, &e->pidio);
    if (ev_is_active(&e->poll))
        ev_timer_stop(loop, &e->poll);
    if (e->pidfd >= 0)
        close(e->pidfd);
    e->pidfd = -1;
    e->reap_on = 0;
}

static void reaped(struct tfork__ev *e, struct ev_loop *loop, int status)
{
    reap_stop(e, loop);
    tfork__on_reaped(e->p, status);
}

static void child_cb(struct ev_loop *loop, ev_child *w, int revents)
{
    (void)revents;
    if (WIFEXITED(w->rstatus) || WIFSIGNALED(w->rstatus))
        reaped(w->data, loop, w->rstatus);
}

/* waitpid on our own child only: never a pid the library did not make */
static void try_wait(struct tfork__ev *e, struct ev_loop *loop)
{
    int st;
    pid_t r;

    do
        r = waitpid(e->p->pid, &st, WNOHANG);
    while (r < 0 && errno == EINTR);
    if (r == e->p->pid)
        reaped(e, loop, st);
    else if (r < 0 && errno == ECHILD)
        reaped(e, loop, -1);    /* somebody else reaped it */
}

static void pidio_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    try_wait(w->data, loop);
}

static void poll_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    try_wait(w->data, loop);
}

int tfork__ev_reap(tfork *p)
{
    struct tfork__ev *e = p->ev;

    if (!e || e->reap_on || p->pid <= 0)
        return -EINVAL;
    if (ev_is_default_loop(p->loop)) {
        /* libev's default loop reaps every child itself; ask it */
        ev_child_init(&e->child, child_cb, p->pid, 0);
        e->child.data = e;
        ev_child_start(p->loop, &e->child);
    } else {
        e->pidfd = tfork__sys.pidfd_open(p->pid, 0);
        if (e->pidfd >= 0) {
            ev_io_init(&e->pidio, pidio_cb, e->pidfd, EV_READ);
            e->pidio.data = e;
            ev_io_start(p->loop, &e->pidio);
        } else {
            /* old kernel: look now and then */
            ev_timer_init(&e->poll, poll_cb, 0.02, 0.02);
            e->poll.data = e;
            ev_timer_start(p->loop, &e->poll);
        }
    }
    e->reap_on = 1;
    e->reap_ref = 0;
    ev_unref(p->loop);
    tfork__ev_update(p);
    return 0;
}

void tfork__ev_defer(tfork *p)
{
    struct tfork__ev *e = p->ev;

    if (!e)
        return;
    if (!ev_is_active(&e->defer))
        ev_timer_start(p->loop, &e->defer);
}

void tfork__ev_free(tfork *p)
{
    struct tfork__ev *e = p->ev;

    if (!e)
        return;
    io_stop(e, p->loop);
    reap_stop(e, p->loop);
    if (ev_is_active(&e->defer))
        ev_timer_stop(p->loop, &e->defer);
    free(e);
    p->ev = NULL;
}

/* ---- watchers for the layers above the core ---- */

struct tfork__watch {
    struct ev_loop *loop;
    ev_io io;               /* the socket */
    int fd;                 /* watched fd, -1: none */
    int events;             /* EV_READ/EV_WRITE watched */
    int ref;                /* io counts toward ev_run staying alive */
    ev_timer soon;          /* later() from the loop */
    void (*iofn)(void *arg, int rd, int wr);
    void (*later)(void *arg);
    void *arg;
};

static void watch_io_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    tfork__watch *w = io->data;

    (void)loop;
    w->iofn(w->arg, !!(revents & EV_READ), !!(revents & EV_WRITE));
}

static void watch_soon_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    tfork__watch *w = t->data;

    (void)loop;
    (void)revents;
    w->later(w->arg);
}

tfork__watch *tfork__watch_new(struct ev_loop *loop,
                               void (*io)(void *arg, int rd, int wr),
                               void (*later)(void *arg), void *arg)
{
    tfork__watch *w = calloc(1, sizeof *w);

    if (!w)
        return NULL;
    w->loop = loop;
    w->fd = -1;
    w->ref = 1;
    w->iofn = io;
    w->later = later;
    w->arg = arg;
    ev_init(&w->io, watch_io_cb);
    w->io.data = w;
    ev_timer_init(&w->soon, watch_soon_cb, 0., 0.);
    w->soon.data = w;
    return w;
}

static void watch_io_stop(tfork__watch *w)
{
    if (!ev_is_active(&w->io))
        return;
    if (!w->ref)
        ev_ref(w->loop);
    ev_io_stop(w->loop, &w->io);
}

void tfork__watch_io(tfork__watch *w, int fd, int rd, int wr, int ref)
{
    int events = (rd ? EV_READ : 0) | (wr ? EV_WRITE : 0);

    ref = !!ref;
    if (ev_is_active(&w->io) && fd == w->fd && events == w->events &&
        ref == w->ref)
        return;
    watch_io_stop(w);
    w->fd = fd;
    w->events = events;
    w->ref = ref;
    if (fd < 0 || !events)
        return;
    ev_io_set(&w->io, fd, events);
    ev_io_start(w->loop, &w->io);
    if (!ref)
        ev_unref(w->loop);
}

void tfork__watch_later(tfork__watch *w)
{
    if (!ev_is_active(&w->soon))
        ev_timer_start(w->loop, &w->soon);
}

void tfork__watch_free(tfork__watch *w)
{
    if (!w)
        return;
    watch_io_stop(w);
    if (ev_is_active(&w->soon))
        ev_timer_stop(w->loop, &w->soon);
    free(w);
}

struct ev_loop *tfork__loop_new(void)
{
    return ev_loop_new(EVFLAG_AUTO);
}

void tfork__loop_free(struct ev_loop *loop)
{
    if (loop)
        ev_loop_destroy(loop);
}

void tfork__loop_run(struct ev_loop *loop)
{
    ev_run(loop, 0);
}

void tfork__loop_break(struct ev_loop *loop)
{
    ev_break(loop, EVBREAK_ALL);
}

struct tfork__timer {
    struct ev_loop *loop;
    ev_timer t;
    int ref;                /* counts toward ev_run staying alive */
    void (*fn)(void *arg);
    void *arg;
};

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    tfork__timer *t = w->data;

    (void)revents;
    if (!t->ref)
        ev_ref(loop);       /* a stopped watcher must not stay unref'd */
    t->ref = 1;
    t->fn(t->arg);
}

tfork__timer *tfork__timer_new(struct ev_loop *loop, void (*fn)(void *arg),
                               void *arg)
{
    tfork__timer *t = calloc(1, sizeof *t);

    if (!t)
        return NULL;
    t->loop = loop;
    t->ref = 1;
    t->fn = fn;
    t->arg = arg;
    ev_timer_init(&t->t, timer_cb, 0., 0.);
    t->t.data = t;
    return t;
}

void tfork__timer_stop(tfork__timer *t)
{
    if (!t || !ev_is_active(&t->t))
        return;
    if (!t->ref)
        ev_ref(t->loop);
    t->ref = 1;
    ev_timer_stop(t->loop, &t->t);
}

void tfork__timer_start(tfork__timer *t, double seconds, int ref)
{
    tfork__timer_stop(t);
    /* from now, not from the loop's cached time: that is as old as the
     * loop's last wake-up, and a caller busy outside the loop since then
     * would see its timeout expire early, or at once */
    ev_now_update(t->loop);
    ev_timer_set(&t->t, seconds > 0 ? seconds : 0., 0.);
    ev_timer_start(t->loop, &t->t);
    t->ref = !!ref;
    if (!t->ref)
        ev_unref(t->loop);
}

int tfork__timer_active(const tfork__timer *t)
{
    return t && ev_is_active(&t->t);
}

void tfork__timer_free(tfork__timer *t)
{
    tfork__timer_stop(t);
    free(t);
}

double tfork__now(struct ev_loop *loop)
{
    return ev_now(loop);
}
