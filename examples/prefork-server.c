/* prefork-server.c: a pre-forked TCP server.  The listening socket goes to
 * a template once; -n children forked from it each accept on it and answer
 * every connection with "hello from pid N".  With -c K the program is also
 * its own client: K connections, each reply printed, then the children are
 * shut down and their exit statuses reported.  One libev loop in the
 * parent does it all, never blocking.
 *
 *   examples/prefork-server -n 3 -c 6    # serve, be the client, shut down
 *   examples/prefork-server -p 8080      # serve until ^C; nc 127.0.0.1 8080
 *
 * Shutting down is closing: a child serves until its control socket (the
 * fd of tfork_run's callback) reaches EOF, so the parent closes those, or
 * simply exits, and the children go. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <ev.h>
#include <tfork.h>

#define TIMEOUT 60.0            /* with -c: give up after this many seconds */

/* ---- the children ---- */

/* One connection, if there is one: the reply, then close.  0, or -1 when
 * the listener itself failed. */
static int serve_one(int lfd)
{
    char msg[64];
    int c, n;

    c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (c < 0) {
        /* the listener is non-blocking and shared: a sibling may have
         * taken the connection; a client may have given up already */
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ||
            errno == ECONNABORTED)
            return 0;
        fprintf(stderr, "prefork-server: child %d: accept: %s\n",
                (int)getpid(), strerror(errno));
        return -1;
    }
    n = snprintf(msg, sizeof msg, "hello from pid %d\n", (int)getpid());
    for (int off = 0; off < n;) {
        /* MSG_NOSIGNAL: a client gone away is no reason to die */
        ssize_t w = send(c, msg + off, (size_t)(n - off), MSG_NOSIGNAL);

        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            fprintf(stderr, "prefork-server: child %d: send: %s\n",
                    (int)getpid(), strerror(errno));
            break;
        }
        off += (int)w;
    }
    close(c);
    return 0;
}

/* The run function of every child.  argv[0] is the listener, sent to the
 * template once and inherited; ctl is the child's control socket.  Serves
 * until ctl reaches EOF; returns 0 then, which becomes the exit status.
 * A plain poll loop: the child is a copy of the parent, libev state and
 * all, and needs none of it. */
static int prefork_child(int ctl, int argc, const tfork_arg *argv)
{
    int lfd;

    if (argc < 1 || argv[0].fd < 0) {
        fprintf(stderr, "prefork-server: child %d: no listener was sent\n",
                (int)getpid());
        return 2;
    }
    lfd = argv[0].fd;
    for (;;) {
        struct pollfd pfd[2] = { { ctl, POLLIN, 0 }, { lfd, POLLIN, 0 } };

        if (poll(pfd, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "prefork-server: child %d: poll: %s\n",
                    (int)getpid(), strerror(errno));
            return 3;
        }
        if (pfd[0].revents) {
            char buf[256];
            ssize_t n = read(ctl, buf, sizeof buf);

            if (n == 0 || (n < 0 && errno == ECONNRESET))
                return 0;   /* the parent closed it, or is gone */
            if (n < 0 && errno != EINTR && errno != EAGAIN) {
                fprintf(stderr, "prefork-server: child %d: control socket: "
                        "%s\n", (int)getpid(), strerror(errno));
                return 3;
            }
            /* the parent never writes; anything that comes is ignored */
        }
        if ((pfd[1].revents & (POLLIN | POLLERR | POLLHUP)) &&
            serve_one(lfd) < 0)
            return 3;
    }
}
/* The children are forked from a copy of this program (tfork_template),
 * so registering the function here is all it takes to find it by name. */
TFORK_EXPORT(prefork_child);

/* ---- the parent ---- */

struct server;

struct child {
    struct server *srv;
    ev_io ctl;                  /* control socket: EOF = the child died */
    int ctl_open;               /* ctl is started and its fd ours */
    pid_t pid;                  /* known in the run callback */
};

struct client {
    ev_io io;                   /* the connection, waiting for the reply */
    char buf[128];              /* the reply so far */
    size_t len;
};

struct server {
    struct ev_loop *loop;
    struct child *kids;
    int n;                      /* children */
    int nrun;                   /* run callbacks so far */
    int nexited;                /* on_exit reports so far */
    struct sockaddr_in addr;    /* where we listen */
    int nconn;                  /* -c: connections to make */
    int conn_done;              /* replies received so far */
    int *reply_pids;            /* which child sent each reply */
    struct client cl;           /* the connection in progress */
    int cl_open;
    ev_signal sigint, sigterm;  /* ^C / kill: shut down cleanly */
    ev_timer timeout;           /* -c: the whole run may take this long */
    int stopping;               /* shutdown has begun */
    int failed;                 /* the exit status will be 1 */
};

static void shutdown_children(struct server *s, const char *why);

/* "exited with status 3", "was killed by signal 9 (Killed)": a wait status
 * for a human. */
static const char *describe(int status, char *buf, size_t len)
{
    if (status == -1)
        snprintf(buf, len, "is gone, its status unknown (the template that "
                 "would tell was killed)");
    else if (WIFEXITED(status))
        snprintf(buf, len, "exited with status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(buf, len, "was killed by signal %d (%s)", WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    else
        snprintf(buf, len, "wait status 0x%x", (unsigned)status);
    return buf;
}

/* Everything is over: stop the watchers that keep the loop running. */
static void check_done(struct server *s)
{
    if (s->nexited < s->n)
        return;
    ev_signal_stop(s->loop, &s->sigint);
    ev_signal_stop(s->loop, &s->sigterm);
    ev_timer_stop(s->loop, &s->timeout);
}

static void on_child_exit(pid_t pid, int status, void *data)
{
    struct child *k = data;
    struct server *s = k->srv;
    char how[96];

    s->nexited++;
    printf("child %d %s\n", (int)pid,
           describe(status, how, sizeof how));
    if (status != 0)
        s->failed = 1;
    if (!s->stopping) {
        fprintf(stderr, "prefork-server: child %d died unasked\n", (int)pid);
        s->failed = 1;
        shutdown_children(s, "a child died");
    }
    check_done(s);
}

static void close_ctl(struct server *s, struct child *k)
{
    if (!k->ctl_open)
        return;
    ev_io_stop(s->loop, &k->ctl);
    close(k->ctl.fd);
    k->ctl_open = 0;
}

static void on_ctl(struct ev_loop *loop, ev_io *w, int revents)
{
    struct child *k = w->data;
    char buf[256];
    ssize_t n;

    (void)loop;
    (void)revents;
    n = read(w->fd, buf, sizeof buf);
    if (n > 0 || (n < 0 && (errno == EINTR || errno == EAGAIN)))
        return;     /* the children send nothing: ignore it */
    /* EOF or an error: the child is gone (on_exit says how) */
    close_ctl(k->srv, k);
    if (!k->srv->stopping) {
        fprintf(stderr, "prefork-server: child %d closed its control "
                "socket\n", (int)k->pid);
        k->srv->failed = 1;
        shutdown_children(k->srv, "lost a child");
    }
}

/* The children exit on EOF of their control sockets: closing ours is the
 * whole shutdown.  A child whose run callback has yet to come is closed
 * in the callback. */
static void shutdown_children(struct server *s, const char *why)
{
    if (s->stopping)
        return;
    s->stopping = 1;
    printf("shutting down (%s): closing the children's control sockets\n",
           why);
    if (s->cl_open) {
        ev_io_stop(s->loop, &s->cl.io);
        close(s->cl.io.fd);
        s->cl_open = 0;
    }
    for (int i = 0; i < s->n; i++)
        close_ctl(s, &s->kids[i]);
}

/* ---- the parent as its own client (-c) ---- */

static void connect_next(struct server *s);

static void client_done(struct server *s)
{
    int distinct = 0;

    for (int i = 0; i < s->n; i++) {
        for (int j = 0; j < s->conn_done; j++) {
            if (s->reply_pids[j] == s->kids[i].pid) {
                distinct++;
                break;
            }
        }
    }
    printf("%d %s, from %d of the %d children\n", s->conn_done,
           s->conn_done == 1 ? "reply" : "replies", distinct, s->n);
    shutdown_children(s, "client done");
}

static void on_reply(struct ev_loop *loop, ev_io *w, int revents)
{
    struct server *s = w->data;
    struct client *c = &s->cl;
    ssize_t n;
    int pid, ours = 0, e;

    (void)revents;
    n = read(w->fd, c->buf + c->len, sizeof c->buf - 1 - c->len);
    e = errno;
    if (n < 0 && (e == EINTR || e == EAGAIN))
        return;
    if (n > 0) {
        c->len += (size_t)n;
        if (c->len < sizeof c->buf - 1)
            return; /* until EOF: the child closes after its line */
    }
    /* here: EOF, an error, or more than a reply's worth */
    ev_io_stop(loop, w);
    close(w->fd);
    s->cl_open = 0;
    if (n < 0) {
        fprintf(stderr, "prefork-server: connection %d: %s\n",
                s->conn_done + 1, strerror(e));
        s->failed = 1;
        shutdown_children(s, "client failed");
        return;
    }
    c->buf[c->len] = '\0';
    if (n == 0 && sscanf(c->buf, "hello from pid %d\n", &pid) == 1) {
        for (int i = 0; i < s->n; i++)
            ours |= s->kids[i].pid == pid;
    }
    if (!ours) {
        fprintf(stderr, "prefork-server: connection %d: unexpected reply "
                "\"%s\"\n", s->conn_done + 1, c->buf);
        s->failed = 1;
        shutdown_children(s, "client failed");
        return;
    }
    s->reply_pids[s->conn_done++] = pid;
    printf("reply %d/%d: %s", s->conn_done, s->nconn, c->buf);
    if (s->conn_done < s->nconn)
        connect_next(s);
    else
        client_done(s);
}

/* One connection at a time, non-blocking: the reply is read from the loop
 * like everything else. */
static void connect_next(struct server *s)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    if (fd < 0) {
        fprintf(stderr, "prefork-server: socket: %s\n", strerror(errno));
        s->failed = 1;
        shutdown_children(s, "client failed");
        return;
    }
    /* EINPROGRESS is the usual answer; watching for the reply alone is
     * enough, as a failed connect makes the socket readable too, and
     * read() then tells the error */
    if (connect(fd, (struct sockaddr *)&s->addr, sizeof s->addr) < 0 &&
        errno != EINPROGRESS) {
        fprintf(stderr, "prefork-server: connect: %s\n", strerror(errno));
        close(fd);
        s->failed = 1;
        shutdown_children(s, "client failed");
        return;
    }
    s->cl.len = 0;
    ev_io_init(&s->cl.io, on_reply, fd, EV_READ);
    s->cl.io.data = s;
    ev_io_start(s->loop, &s->cl.io);
    s->cl_open = 1;
}

/* ---- start-up ---- */

static void on_child_run(tfork *p, int fd, int err, void *data)
{
    struct child *k = data;
    struct server *s = k->srv;

    s->nrun++;
    if (err < 0) {
        fprintf(stderr, "prefork-server: child %d: %s\n",
                (int)(k - s->kids) + 1, tfork_errmsg(p));
        s->failed = 1;
        shutdown_children(s, "a child did not start");
        return;
    }
    k->pid = tfork_pid(p);
    if (s->stopping) {
        close(fd);  /* too late: off it goes */
        return;
    }
    ev_io_init(&k->ctl, on_ctl, fd, EV_READ);
    k->ctl.data = k;
    ev_io_start(s->loop, &k->ctl);
    k->ctl_open = 1;
    if (s->nrun < s->n)
        return;
    printf("%d children accepting on 127.0.0.1:%d:", s->n,
           ntohs(s->addr.sin_port));
    for (int i = 0; i < s->n; i++)
        printf(" %d", (int)s->kids[i].pid);
    printf("\n");
    if (s->nconn > 0)
        connect_next(s);
}

static void on_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop;
    (void)revents;
    shutdown_children(w->data, w->signum == SIGINT ? "SIGINT" : "SIGTERM");
}

static void on_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct server *s = w->data;

    (void)loop;
    (void)revents;
    /* exiting closes every control socket: the children still go */
    fprintf(stderr, "prefork-server: timed out after %.0f s (%d of %d "
            "replies, %d of %d children reported)\n", TIMEOUT, s->conn_done,
            s->nconn, s->nexited, s->n);
    exit(1);
}

/* A non-blocking TCP listener on 127.0.0.1:port (0: any free port); its
 * address, with the port chosen, in *addr.  The fd, or -1. */
static int listen_on(int port, struct sockaddr_in *addr)
{
    socklen_t len = sizeof *addr;
    int one = 1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    if (fd < 0) {
        fprintf(stderr, "prefork-server: socket: %s\n", strerror(errno));
        return -1;
    }
    memset(addr, 0, sizeof *addr);
    addr->sin_family = AF_INET;
    addr->sin_port = htons((unsigned short)port);
    addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(fd, (struct sockaddr *)addr, sizeof *addr) < 0 ||
        listen(fd, 128) < 0 ||
        getsockname(fd, (struct sockaddr *)addr, &len) < 0) {
        fprintf(stderr, "prefork-server: listening on 127.0.0.1:%d: %s\n",
                port, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static int parse_int(const char *s, int min, int max, int *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max)
        return -1;
    *out = (int)v;
    return 0;
}

static void usage(FILE *f, const char *prog)
{
    fprintf(f, "usage: %s [-n children] [-p port] [-c connections]\n"
            "  -n N  children accepting on the listener (default 4)\n"
            "  -p P  port on 127.0.0.1 (default 0: any free one)\n"
            "  -c K  connect K times, print the replies, shut down; without"
            "\n        it, serve until SIGINT or SIGTERM\n", prog);
}

int main(int argc, char **argv)
{
    struct server s;
    tfork *tpl;
    int n = 4, port = 0, nconn = 0, opt, lfd, r;

    setvbuf(stdout, NULL, _IOLBF, 0);
    while ((opt = getopt(argc, argv, "n:p:c:h")) != -1) {
        int bad = 0;

        switch (opt) {
        case 'n': bad = parse_int(optarg, 1, 1000, &n); break;
        case 'p': bad = parse_int(optarg, 0, 65535, &port); break;
        case 'c': bad = parse_int(optarg, 1, 1000000, &nconn); break;
        case 'h': usage(stdout, argv[0]); return 0;
        default: usage(stderr, argv[0]); return 2;
        }
        if (bad) {
            fprintf(stderr, "prefork-server: -%c %s: not a number in range\n",
                    opt, optarg);
            return 2;
        }
    }
    if (optind < argc) {
        usage(stderr, argv[0]);
        return 2;
    }

    memset(&s, 0, sizeof s);
    s.n = n;
    s.nconn = nconn;
    s.kids = calloc((size_t)n, sizeof *s.kids);
    s.reply_pids = calloc((size_t)nconn + 1, sizeof *s.reply_pids);
    if (!s.kids || !s.reply_pids) {
        fprintf(stderr, "prefork-server: out of memory\n");
        return 1;
    }
    s.loop = ev_default_loop(0);
    if (!s.loop) {
        fprintf(stderr, "prefork-server: could not start libev\n");
        return 1;
    }

    /* The template is a copy of this program, taken now, while it is
     * small: it has prefork_child() because it is this program, which a
     * tfork-serve template (tfork_new_exec) would not.  tfork_template
     * over tfork_early: the template is a handle of our own to send the
     * listener to and free, and needs no call at the top of main(). */
    tpl = tfork_template(s.loop);
    if (!tpl) {
        fprintf(stderr, "prefork-server: tfork_template: %s\n",
                strerror(errno));
        return 1;
    }
    /* ^C at a terminal signals the whole foreground process group.  The
     * template and its children get a group of their own, so that the
     * signal reaches only us and the shutdown stays ours: closing the
     * control sockets, then collecting every exit status. */
    if (setpgid(tfork_pid(tpl), tfork_pid(tpl)) < 0)
        fprintf(stderr, "prefork-server: setpgid: %s (^C will reach the "
                "children too)\n", strerror(errno));
    lfd = listen_on(port, &s.addr);
    if (lfd < 0)
        return 1;   /* exiting closes the template's socket: it goes too */
    /* Sent once, to the template: every child inherits it.  send_fd dups,
     * and we never accept, so our own copy can go at once. */
    r = tfork_send_fd(tpl, lfd);
    close(lfd);
    if (r < 0) {
        fprintf(stderr, "prefork-server: tfork_send_fd: %s\n",
                tfork_strerror(r));
        return 1;
    }
    for (int i = 0; i < n; i++) {
        struct child *k = &s.kids[i];
        tfork *p = tfork_fork(tpl);

        k->srv = &s;
        if (!p) {
            fprintf(stderr, "prefork-server: tfork_fork: %s\n",
                    strerror(errno));
            return 1;   /* the children made so far see EOF and exit */
        }
        r = tfork_on_exit(p, on_child_exit, k);
        if (r == 0)
            r = tfork_run(p, "prefork_child", on_child_run, k);
        if (r < 0) {
            fprintf(stderr, "prefork-server: tfork_run: %s\n",
                    tfork_strerror(r));
            return 1;
        }
    }
    printf("template %d, listener sent; forking %d children\n",
           (int)tfork_pid(tpl), n);
    /* No more children: the template goes once their exits are in. */
    tfork_free(tpl);

    ev_signal_init(&s.sigint, on_signal, SIGINT);
    s.sigint.data = &s;
    ev_signal_start(s.loop, &s.sigint);
    ev_signal_init(&s.sigterm, on_signal, SIGTERM);
    s.sigterm.data = &s;
    ev_signal_start(s.loop, &s.sigterm);
    ev_timer_init(&s.timeout, on_timeout, TIMEOUT, 0.);
    s.timeout.data = &s;
    if (nconn > 0)
        ev_timer_start(s.loop, &s.timeout);

    /* Returns when every child's exit has been reported. */
    ev_run(s.loop, 0);

    if (!s.failed)
        printf("all %d children exited cleanly\n", n);
    free(s.kids);
    free(s.reply_pids);
    return s.failed;
}
