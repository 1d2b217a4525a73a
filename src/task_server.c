/* task_server.c: the server side of tfork/task.h.  It listens, checks
 * each unix peer's uid, and forks one worker per connection from its
 * template (task_worker.c serves the connection there). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#include <ev.h>

#include "tfork-int.h"
#include "tfork/task.h"

static struct tfork_export task_worker_export = {
    TFORK__TASK_WORKER, (void (*)(void))tfork__task_worker, NULL
};

__attribute__((constructor)) static void task_register(void)
{
    tfork_export_register(&task_worker_export);
}

/* ---- addresses ---- */

int tfork__task_addr(const char *a, struct sockaddr_storage *ss,
                     socklen_t *len, const char **path)
{
    memset(ss, 0, sizeof *ss);
    *path = NULL;
    if (!a || !*a)
        return -EINVAL;
    if (strncmp(a, "unix:", 5) == 0 || (strncmp(a, "tcp:", 4) != 0 &&
                                        strchr(a, '/'))) {
        struct sockaddr_un *un = (struct sockaddr_un *)ss;
        const char *p = strncmp(a, "unix:", 5) == 0 ? a + 5 : a;

        if (!*p || strlen(p) >= sizeof un->sun_path)
            return -EINVAL;
        un->sun_family = AF_UNIX;
        strcpy(un->sun_path, p);
        *len = (socklen_t)sizeof *un;
        *path = p;
        return 0;
    }
    if (strncmp(a, "tcp:", 4) == 0) {
        struct sockaddr_in *in = (struct sockaddr_in *)ss;
        const char *hp = a + 4, *colon = strrchr(hp, ':');
        char host[64] = "127.0.0.1", *end;
        long port;

        if (colon) {
            if ((size_t)(colon - hp) >= sizeof host || colon == hp)
                return -EINVAL;
            memcpy(host, hp, (size_t)(colon - hp));
            host[colon - hp] = '\0';
            hp = colon + 1;
        }
        port = strtol(hp, &end, 10);
        if (!*hp || *end || port < 0 || port > 65535)
            return -EINVAL;
        in->sin_family = AF_INET;
        in->sin_port = htons((uint16_t)port);
        if (strcmp(host, "localhost") == 0)
            strcpy(host, "127.0.0.1");
        if (inet_pton(AF_INET, host, &in->sin_addr) != 1)
            return -EINVAL;
        *len = (socklen_t)sizeof *in;
        return 0;
    }
    return -EINVAL;
}

/* ---- the server ---- */

struct tfork_task_server {
    struct ev_loop *loop;
    int lfd;                    /* listening socket, -1 once freed */
    char *path;                 /* unix socket file we made, or NULL */
    dev_t dev;                  /* ... and its identity */
    ino_t ino;
    char *address;              /* for tfork_task_server_address */
    char *name;
    void (*on_log)(const char *line, void *data);
    void *data;
    tfork *tpl;                 /* the workers' template */
    tfork__watch *w;            /* accepts */
    int workers;                /* forked, exit not yet reported */
    int freed;
};

static void slog(tfork_task_server *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void slog(tfork_task_server *s, const char *fmt, ...)
{
    char line[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (s->on_log)
        s->on_log(line, s->data);
    else
        fprintf(stderr, "tfork-task %s: %s\n", s->name, line);
}

static void server_release(tfork_task_server *s)
{
    free(s->path);
    free(s->address);
    free(s->name);
    free(s);
}

static void worker_exit(pid_t pid, int status, void *data)
{
    tfork_task_server *s = data;

    (void)pid;
    (void)status;
    s->workers--;
    if (s->freed && s->workers == 0)
        server_release(s);
}

static void worker_run(tfork *p, int fd, int err, void *data)
{
    tfork_task_server *s = data;

    if (err < 0)
        slog(s, "worker did not start: %s", tfork_errmsg(p));
    else
        close(fd);              /* the worker serves its connection */
}

static void new_worker(tfork_task_server *s, int conn)
{
    tfork *w = tfork_fork(s->tpl);
    int e;

    if (!w) {
        slog(s, "cannot fork a worker: %s", strerror(errno));
        close(conn);
        return;
    }
    e = tfork_send_fd(w, conn);
    close(conn);
    if (e == 0)
        e = tfork_on_exit(w, worker_exit, s);
    if (e == 0) {
        s->workers++;
        e = tfork_run(w, TFORK__TASK_WORKER, worker_run, s);
        if (e < 0)
            s->workers--;       /* tfork_free: on_exit fires, with -1 */
    }
    if (e < 0) {
        slog(s, "cannot start a worker: %s", tfork_strerror(e));
        tfork_free(w);
    }
}

static void accept_cb(void *arg, int rd, int wr)
{
    tfork_task_server *s = arg;

    (void)rd;
    (void)wr;
    for (int i = 0; i < 64 && s->lfd >= 0; i++) {
        int conn = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC);

        if (conn < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
                errno != ECONNABORTED)
                slog(s, "accept: %s", strerror(errno));
            return;
        }
        if (s->path) {
            struct ucred cr;
            socklen_t len = sizeof cr;

            if (getsockopt(conn, SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0 ||
                cr.uid != geteuid()) {
                slog(s, "refused a connection from uid %ld (pid %ld): only "
                     "uid %ld may connect", (long)cr.uid, (long)cr.pid,
                     (long)geteuid());
                close(conn);
                continue;
            }
        }
        new_worker(s, conn);
    }
}

/* Binds a unix socket at path: 0600 in a directory made 0700 if
 * missing; a stale socket is replaced, a live one is not. */
static int bind_unix(tfork_task_server *s, int fd, const char *path,
                     const struct sockaddr_storage *ss, socklen_t len)
{
    char dir[sizeof ((struct sockaddr_un *)0)->sun_path];
    char *slash;
    struct stat st;
    mode_t old;
    int r;

    snprintf(dir, sizeof dir, "%s", path);
    slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = '\0';
        if (mkdir(dir, 0700) < 0 && errno != EEXIST)
            return -errno;
    }
    if (lstat(path, &st) == 0) {
        int probe;

        if (!S_ISSOCK(st.st_mode))
            return -EEXIST;     /* not ours to remove */
        probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (probe < 0)
            return -errno;
        r = connect(probe, (const struct sockaddr *)ss, len);
        close(probe);
        if (r == 0)
            return -EADDRINUSE; /* a live server: leave it alone */
        if (errno != ECONNREFUSED)
            return -errno;
        unlink(path);           /* stale: its server is gone */
    }
    old = umask(0177);
    r = bind(fd, (const struct sockaddr *)ss, len);
    umask(old);
    if (r < 0)
        return -errno;
    if (stat(path, &st) == 0) {
        s->dev = st.st_dev;
        s->ino = st.st_ino;
    }
    s->path = strdup(path);
    return s->path ? 0 : -ENOMEM;
}

static int listen_on(tfork_task_server *s, const char *a)
{
    struct sockaddr_storage ss;
    socklen_t len;
    const char *path;
    char buf[128];
    int fd, r;

    r = tfork__task_addr(a, &ss, &len, &path);
    if (r < 0)
        return r;
    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK,
                0);
    if (fd < 0)
        return -errno;
    if (path) {
        r = bind_unix(s, fd, path, &ss, len);
        if (r == 0 && asprintf(&s->address, "unix:%s", path) < 0)
            r = -ENOMEM;
    } else {
        struct sockaddr_in in;
        socklen_t il = sizeof in;
        int one = 1;

        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        r = bind(fd, (const struct sockaddr *)&ss, len) < 0 ? -errno : 0;
        if (r == 0 && getsockname(fd, (struct sockaddr *)&in, &il) < 0)
            r = -errno;
        if (r == 0) {
            inet_ntop(AF_INET, &in.sin_addr, buf, sizeof buf);
            if (asprintf(&s->address, "tcp:%s:%u", buf,
                         (unsigned)ntohs(in.sin_port)) < 0)
                r = -ENOMEM;
        }
    }
    if (r == 0 && listen(fd, 128) < 0)
        r = -errno;
    if (r < 0) {
        close(fd);
        return r;
    }
    s->lfd = fd;
    return 0;
}

static void unlink_ours(tfork_task_server *s)
{
    struct stat st;

    /* only the file we made: a later server may own the name now */
    if (s->path && stat(s->path, &st) == 0 && st.st_dev == s->dev &&
        st.st_ino == s->ino)
        unlink(s->path);
}

static int bad(const char *v)
{
    return v && (!*v || strlen(v) >= 256);
}

static int make_template(tfork_task_server *s,
                         const tfork_task_server_opts *o)
{
    char hung[32];
    const char *args[7];
    int e = 0;

    s->tpl = o->require ? tfork_new_exec(s->loop) : tfork_template(s->loop);
    if (!s->tpl)
        return -errno;
    if (o->require)
        e = tfork_require(s->tpl, o->require);
    if (e == 0 && o->eval)
        e = tfork_eval(s->tpl, o->eval, o->eval_argc, o->eval_argv);
    snprintf(hung, sizeof hung, "%.6f", o->hung_worker_timeout);
    args[0] = "tfork-task";
    args[1] = s->name;
    args[2] = o->interface ? o->interface : "";
    args[3] = o->dispatch ? o->dispatch : "";
    args[4] = o->setup ? o->setup : "";
    args[5] = o->checkout_done ? o->checkout_done : "";
    args[6] = hung;
    for (int i = 0; i < 7 && e == 0; i++)
        e = tfork_send_arg(s->tpl, args[i], strlen(args[i]));
    return e;
}

tfork_task_server *tfork_task_server_new(struct ev_loop *loop,
                                         const tfork_task_server_opts *o)
{
    int saved = errno, e;
    tfork_task_server *s;

    if (!loop || !o || !o->listen || bad(o->name) || bad(o->interface) ||
        bad(o->dispatch) || bad(o->setup) || bad(o->checkout_done) ||
        !o->interface == !o->dispatch || o->hung_worker_timeout < 0 ||
        o->eval_argc < 0 || (o->eval_argc && !o->eval_argv)) {
        errno = EINVAL;
        return NULL;
    }
    s = calloc(1, sizeof *s);
    if (!s || !(s->name = strdup(o->name ? o->name : "task"))) {
        free(s);
        errno = ENOMEM;
        return NULL;
    }
    s->loop = loop;
    s->lfd = -1;
    s->on_log = o->on_log;
    s->data = o->data;
    e = listen_on(s, o->listen);
    if (e == 0)
        e = make_template(s, o);
    if (e == 0) {
        s->w = tfork__watch_new(loop, accept_cb, NULL, s);
        if (!s->w)
            e = -ENOMEM;
    }
    if (e < 0) {
        if (s->tpl)
            tfork_free(s->tpl);
        if (s->lfd >= 0) {
            close(s->lfd);
            unlink_ours(s);
        }
        server_release(s);
        errno = -e;
        return NULL;
    }
    /* unreferenced: a server alone does not keep ev_run going */
    tfork__watch_io(s->w, s->lfd, 1, 0, 0);
    errno = saved;
    return s;
}

const char *tfork_task_server_address(const tfork_task_server *s)
{
    return s ? s->address : NULL;
}

int tfork_task_server_workers(const tfork_task_server *s)
{
    return s ? s->workers : 0;
}

void tfork_task_server_free(tfork_task_server *s)
{
    if (!s || s->freed)
        return;
    s->freed = 1;
    tfork__watch_free(s->w);
    s->w = NULL;
    close(s->lfd);
    s->lfd = -1;
    unlink_ours(s);
    tfork_free(s->tpl);
    s->tpl = NULL;
    if (s->workers == 0)
        server_release(s);
}

/* ---- the server in a process of its own ---- */

static void keepalive_cb(void *arg, int rd, int wr)
{
    (void)rd;
    (void)wr;
    tfork__loop_break(arg);     /* the client exited */
}

pid_t tfork_task_fork_server(const tfork_task_server_opts *o)
{
    int ka[2], ready[2], st = 0;
    ssize_t n;
    pid_t pid;

    if (!o)
        return -EINVAL;
    if (pipe2(ka, O_CLOEXEC) < 0)
        return -errno;
    if (pipe2(ready, O_CLOEXEC) < 0) {
        st = -errno;
        close(ka[0]);
        close(ka[1]);
        return st;
    }
    fflush(NULL);
    pid = tfork__sys.fork();
    if (pid < 0) {
        st = -errno;
        close(ka[0]);
        close(ka[1]);
        close(ready[0]);
        close(ready[1]);
        return st;
    }
    if (pid == 0) {
        /* static: what the server holds stays reachable until _exit */
        static struct ev_loop *loop;
        tfork_task_server *s;
        tfork__watch *w;

        close(ka[1]);
        close(ready[0]);
        loop = tfork__loop_new();
        s = loop ? tfork_task_server_new(loop, o) : NULL;
        /* only now that s has its copies: the title is written over the
         * argv area, where the caller's strings in o may well live */
        tfork__proctitle("tfork-task %s: server", s ? s->name : "task");
        w = s ? tfork__watch_new(loop, keepalive_cb, NULL, loop) : NULL;
        st = w ? 0 : (errno ? errno : ENOMEM);
        if (write(ready[1], &st, sizeof st) != sizeof st || st) {
            tfork__watch_free(w);
            tfork_task_server_free(s);
            tfork__loop_free(loop);
            _exit(1);
        }
        close(ready[1]);
        tfork__watch_io(w, ka[0], 1, 0, 1);
        tfork__loop_run(loop);
        tfork__watch_free(w);
        tfork_task_server_free(s);
        _exit(0);
    }
    close(ka[0]);
    close(ready[1]);
    do
        n = read(ready[0], &st, sizeof st);
    while (n < 0 && errno == EINTR);
    close(ready[0]);
    if (n != sizeof st || st) {
        int e = n == sizeof st ? st : EPIPE;

        close(ka[1]);
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
            ;
        return -e;
    }
    /* ka[1] stays open, close-on-exec, for the rest of our life */
    return pid;
}
