/* serve.c: the template side.  One loop, run by tfork-serve and by the
 * early/template copies of user programs: it reads commands, forks, reaps
 * and reports; a forked child continues the same loop on its own socket
 * until it is told to run or exec.  Plain poll + signalfd, never libev:
 * the copies may carry the user's own libev state. */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef HAVE_SIGNALFD
#include <sys/signalfd.h>
#endif

#include "tfork-int.h"

extern char **environ;

struct peek;

struct serve {
    int sock;                   /* our socket to the client */
    int root;                   /* we reap the whole tree below us */
    int sigfd;                  /* signalfd for SIGCHLD, or -1 */
    int hello;                  /* the client's version was accepted */
    int failed;                 /* a require/eval failed: ignore commands */
    int sigdirty;               /* user code ran here or in an ancestor
                                   since the last reset: dispositions may
                                   no longer be the defaults */
    tfork_rd rd;                /* the command being read */
    tfork_arg *args;            /* accumulated args, in order sent */
    size_t nargs, cap;
    struct peek *pk;            /* a new child's frames read by its parent,
                                   to replay before reading on */
};

typedef void serve_fn(struct serve *s);
static void handle_frame(struct serve *s);

static void reply_error(struct serve *s, int code, uint32_t ref,
                        const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void send_frame(struct serve *s, tfork_buf *b)
{
    if (tfork__buf_end(b) < 0)
        return;
    /* a client that stopped reading is still our only client: wait */
    if (tfork__send_all(s->sock, b->p, b->len, NULL, 0) < 0) {
        /* nobody to talk to any more: as good as EOF */
        _exit(0);
    }
    tfork__buf_free(b);
}

static void reply_error(struct serve *s, int code, uint32_t ref,
                        const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    tfork_buf b;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    tfork__buf_frame(&b, TFORK_OP_ERROR, 0);
    tfork__buf_u32(&b, (uint32_t)code);
    tfork__buf_u32(&b, ref);
    tfork__buf_u32(&b, (uint32_t)getpid());
    tfork__buf_str(&b, msg, strlen(msg));
    send_frame(s, &b);
}

static void reply_pid(struct serve *s, unsigned op, pid_t pid)
{
    tfork_buf b;

    tfork__buf_frame(&b, op, 0);
    tfork__buf_u32(&b, (uint32_t)pid);
    send_frame(s, &b);
}

/* A failed require/eval leaves the process unfit: later commands are
 * ignored (their fds closed by the reader) until the client closes. */
static void fail(struct serve *s)
{
    s->failed = 1;
}

static void reap(struct serve *s)
{
    for (;;) {
        int st;
        pid_t pid = waitpid(-1, &st, WNOHANG);
        tfork_buf b;

        if (pid < 0 && errno == EINTR)
            continue;
        if (pid <= 0)
            return;
        tfork__buf_frame(&b, TFORK_OP_EXIT, 0);
        tfork__buf_u32(&b, (uint32_t)pid);
        tfork__buf_u32(&b, (uint32_t)st);
        send_frame(s, &b);
    }
}

static int add_arg(struct serve *s, char *buf, size_t len, int fd)
{
    if (s->nargs == s->cap) {
        size_t ncap = s->cap ? s->cap * 2 : 16;
        tfork_arg *na = realloc(s->args, ncap * sizeof *na);

        if (!na)
            return -ENOMEM;
        s->args = na;
        s->cap = ncap;
    }
    s->args[s->nargs].buf = buf;
    s->args[s->nargs].len = len;
    s->args[s->nargs].fd = fd;
    s->nargs++;
    return 0;
}

static void protocol_error(struct serve *s, const char *what)
{
    reply_error(s, -EPROTO, 0, "protocol error: malformed %s frame", what);
    _exit(2);
}

static void serve_HELLO(struct serve *s)
{
    tfork_cur c;
    uint32_t magic, version;

    tfork__cur_init(&c, s->rd.payload, s->rd.h.len);
    tfork__cur_u32(&c, &magic);
    tfork__cur_u32(&c, &version);
    if (tfork__cur_done(&c) || magic != TFORK_PROTO_MAGIC)
        protocol_error(s, "HELLO");
    if (version != TFORK_PROTO_VERSION) {
        reply_error(s, -EPROTONOSUPPORT, 0, "protocol version %u not "
                    "supported (this template speaks version %u)",
                    (unsigned)version, TFORK_PROTO_VERSION);
        _exit(2);
    }
    s->hello = 1;
}

static void serve_REQUIRE(struct serve *s)
{
    tfork_cur c;
    const char *path;

    tfork__cur_init(&c, s->rd.payload, s->rd.h.len);
    tfork__cur_str(&c, &path, NULL);
    if (tfork__cur_done(&c))
        protocol_error(s, "REQUIRE");
    s->sigdirty = 1;            /* constructors may set up signals */
    if (!tfork__sys.dlopen(path, RTLD_NOW | RTLD_GLOBAL)) {
        const char *e = dlerror();

        reply_error(s, -ELIBACC, 0, "require %s: %s", path,
                    e ? e : "unknown dlopen error");
        fail(s);
    }
}

static void serve_EVAL(struct serve *s)
{
    tfork_cur c;
    const char *name;
    char **argv;
    uint32_t argc;
    void (*f)(void);
    tfork_eval_func *fn;
    int r;

    tfork__cur_init(&c, s->rd.payload, s->rd.h.len);
    tfork__cur_str(&c, &name, NULL);
    if (tfork__cur_list(&c, TFORK_LIST_MAX, &argv, &argc) == -ENOMEM) {
        reply_error(s, -ENOMEM, 0, "eval %s: out of memory", name);
        fail(s);
        return;
    }
    if (tfork__cur_done(&c)) {
        free(argv);
        protocol_error(s, "EVAL");
    }
    f = tfork__sys.lookup(name);
    if (!f) {
        reply_error(s, -ENOENT, 0, "eval: no function '%s' in process %d",
                    name, (int)getpid());
        fail(s);
        free(argv);
        return;
    }
    fn = (tfork_eval_func *)f;
    s->sigdirty = 1;
    r = fn((int)argc, argv);
    free(argv);
    if (r != 0) {
        reply_error(s, -ECANCELED, 0, "eval: %s returned %d", name, r);
        fail(s);
    }
}

static void serve_ARG(struct serve *s)
{
    if (add_arg(s, (char *)s->rd.payload, s->rd.h.len, -1) < 0) {
        reply_error(s, -ENOMEM, 0, "arg of %lu bytes: out of memory",
                    (unsigned long)s->rd.h.len);
        fail(s);
        return;
    }
    s->rd.payload = NULL;   /* the arg keeps it */
}

static void serve_ARGFD(struct serve *s)
{
    if (s->rd.h.len)
        protocol_error(s, "ARGFD");
    if (add_arg(s, NULL, 0, s->rd.fds[0]) < 0) {
        reply_error(s, -ENOMEM, 0, "fd arg: out of memory");
        fail(s);
        return;
    }
    s->rd.fds[0] = -1;
}

/* glibc refuses sigaction() on its internal signals (32, 33), yet its
 * posix_spawn leaves them SIG_IGN in every program it starts (make, a
 * shell, tfork-serve itself), and SIG_IGN survives fork and exec.  Ask
 * the kernel directly; a handler libc installed there stays (libc needs
 * it), only SIG_IGN goes.  The handler is the first field of the kernel's
 * struct sigaction on the common ABIs; all zeroes is SIG_DFL on every ABI. */
static void reset_libc_signal(int sig)
{
#ifdef SYS_rt_sigaction
    struct {
        void *handler;
        unsigned long rest[7];
    } ka, old;
    size_t setsize = _NSIG / 8;

    memset(&ka, 0, sizeof ka);
    memset(&old, 0, sizeof old);
    if (syscall(SYS_rt_sigaction, sig, NULL, &old, setsize) == 0 &&
        old.handler == (void *)SIG_IGN)
        syscall(SYS_rt_sigaction, sig, &ka, NULL, setsize);
#else
    (void)sig;
#endif
}

void tfork__signals_reset(void)
{
    struct sigaction sa;
    sigset_t none;

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    sigemptyset(&sa.sa_mask);
    for (int i = 1; i < NSIG; i++)
        if (i != SIGKILL && i != SIGSTOP &&
            sigaction(i, &sa, NULL) < 0 && errno == EINVAL)
            reset_libc_signal(i);      /* libc's own */
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
}

/* An EXEC payload: path, argv and envp (NULL: keep the environment),
 * the lists malloc'ed, the strings in the payload.  0, or -EPROTO for a
 * malformed frame (nothing to free then). */
static int exec_parse(const void *payload, size_t len, const char **path,
                      char ***argv, char ***envp)
{
    tfork_cur c;
    uint32_t flags, argc, envc;

    *argv = *envp = NULL;
    tfork__cur_init(&c, payload, len);
    tfork__cur_u32(&c, &flags);
    tfork__cur_str(&c, path, NULL);
    if (tfork__cur_list(&c, TFORK_LIST_MAX, argv, &argc) == 0 &&
        (flags & TFORK_EXEC_ENVP))
        tfork__cur_list(&c, TFORK_LIST_MAX, envp, &envc);
    if (tfork__cur_done(&c) || !(*path)[0]) {
        free(*argv);
        free(*envp);
        *argv = *envp = NULL;
        return -EPROTO;
    }
    return 0;
}

static void forked_reply(struct serve *s, uint32_t id, uint32_t flags,
                         pid_t pid)
{
    tfork_buf b;
    int pidfd = -1;

    if (flags & TFORK_FORK_PIDFD)
        pidfd = tfork__sys.pidfd_open(pid, 0);
    tfork__buf_frame(&b, TFORK_OP_FORKED, pidfd >= 0);
    tfork__buf_u32(&b, id);
    tfork__buf_u32(&b, (uint32_t)pid);
    if (tfork__buf_end(&b) == 0 &&
        tfork__send_all(s->sock, b.p, b.len, &pidfd, pidfd >= 0) < 0)
        _exit(0);
    tfork__buf_free(&b);
    if (pidfd >= 0)
        close(pidfd);
}

/* ---- a child that is only going to exec: spawned, not forked ----
 *
 * When a FORK says the child's commands end with an exec
 * (TFORK_FORK_EXEC), its socket already holds them all: the client sends
 * them just before the FORK.  A child whose commands are exactly HELLO,
 * args and EXEC needs no copy of the template at all -- posix_spawn
 * starts the program from here, as
 * cheaply as spawning from a small process can be, and this process
 * answers on the child's socket as the child would have: EXECSTART, then
 * EOF (or an error).  Anything else is forked, and the child first
 * replays the frames read here, then reads on from where this stopped. */
#define PEEK_FRAMES 64
#define PEEK_BYTES  (256 * 1024)

struct peek_frame {
    tfork_hdr h;
    unsigned char *payload;
    int fd;
};

struct peek {
    tfork_rd rd;                /* the child's reader, maybe mid-frame */
    struct peek_frame f[PEEK_FRAMES];   /* complete frames, in order */
    int n;
    int err;                    /* the reader failed: -errno, rd.err */
};

static void peek_free(struct peek *pk)
{
    if (!pk)
        return;
    for (int i = 0; i < pk->n; i++) {
        free(pk->f[i].payload);
        if (pk->f[i].fd >= 0)
            close(pk->f[i].fd);
    }
    tfork__rd_free(&pk->rd);
    free(pk);
}

/* Reads what the child's socket holds now: whole frames while they are
 * HELLO or args, stopping after any other frame, at a partial frame, or
 * at the caps (the rest is the child's to read). */
static struct peek *peek_read(int sock)
{
    struct peek *pk = malloc(sizeof *pk);
    size_t bytes = 0;

    if (!pk)
        return NULL;        /* the child reads it all itself */
    pk->n = 0;
    pk->err = 0;
    tfork__rd_init(&pk->rd, 1);
    while (pk->n < PEEK_FRAMES && bytes <= PEEK_BYTES) {
        struct peek_frame *f;
        int r = tfork__rd_step(&pk->rd, sock);

        if (r == 0)
            break;
        if (r < 0) {
            pk->err = r;
            break;
        }
        f = &pk->f[pk->n++];
        f->h = pk->rd.h;
        f->payload = pk->rd.payload;
        f->fd = pk->rd.nfds ? pk->rd.fds[0] : -1;
        pk->rd.payload = NULL;
        pk->rd.fds[0] = -1;
        tfork__rd_next(&pk->rd);
        bytes += f->h.len;
        if (f->h.op != TFORK_OP_HELLO && f->h.op != TFORK_OP_ARG &&
            f->h.op != TFORK_OP_ARGFD)
            break;
    }
    return pk;
}

/* In the forked child: the frames its parent read, as if read here.  A
 * FORK among them makes a grandchild, which must not replay its parent's
 * frames: it stops, and the frames it was peeked are replayed next. */
static void peek_replay(struct serve *s)
{
    struct peek *pk = s->pk;
    int sock = s->sock;
    int i;

    s->pk = NULL;
    for (i = 0; i < pk->n && s->sock == sock; i++) {
        struct peek_frame *f = &pk->f[i];

        tfork__rd_next(&s->rd);
        s->rd.h = f->h;
        s->rd.payload = f->payload;
        s->rd.ppos = s->rd.pcap = f->h.len;
        s->rd.have_hdr = 1;
        s->rd.fds[0] = f->fd;
        s->rd.nfds = f->fd >= 0;
        f->payload = NULL;
        f->fd = -1;
        handle_frame(s);
    }
    if (s->sock != sock) {
        /* a grandchild: the rest was its parent's */
        peek_free(pk);
        return;
    }
    if (pk->err == -EPIPE)
        _exit(0);               /* the client is gone: so are we */
    if (pk->err) {
        reply_error(s, pk->err, 0, "%s", pk->rd.err);
        _exit(2);
    }
    tfork__rd_free(&s->rd);
    s->rd = pk->rd;             /* read on where the parent stopped */
    free(pk);
}

/* The peeked child is HELLO, args, EXEC: its exec payload, or NULL. */
static const struct peek_frame *spawnable(const struct peek *pk)
{
    const struct peek_frame *f;
    tfork_cur c;
    uint32_t magic, version;

    if (!pk || pk->err || pk->n < 2)
        return NULL;
    f = &pk->f[pk->n - 1];
    if (f->h.op != TFORK_OP_EXEC || pk->f[0].h.op != TFORK_OP_HELLO)
        return NULL;
    tfork__cur_init(&c, pk->f[0].payload, pk->f[0].h.len);
    tfork__cur_u32(&c, &magic);
    tfork__cur_u32(&c, &version);
    if (tfork__cur_done(&c) || magic != TFORK_PROTO_MAGIC ||
        version != TFORK_PROTO_VERSION)
        return NULL;            /* the child says why */
    return f;
}

/* Whether posix_spawn can be trusted to report a failed exec.  glibc's
 * learns of it through memory shared with its CLONE_VM|CLONE_VFORK
 * child; valgrind runs that child as a plain fork, so there posix_spawn
 * says 0 for a missing program and the "child" exits 127.  Under
 * valgrind (its preload objects mapped) the child is forked instead,
 * and its own execvpe reports the errno. */
static int spawn_reports_errors(void)
{
    static int r = -1;          /* not known yet; forks inherit it */
    char line[4352];
    FILE *f;

    if (r >= 0)
        return r;
    r = 1;
    f = fopen("/proc/self/maps", "re");
    if (!f)
        return r;
    while (r && fgets(line, sizeof line, f))
        if (strstr(line, "/vgpreload_"))
            r = 0;
    fclose(f);
    return r;
}

/* posix_spawn of the peeked EXEC with the args' fds on 0, 1, 2, ...:
 * 0 and the pid, or a positive errno (the caller then forks, and the
 * child's own execvpe fails and reports it, exactly as without this). */
static int spawn_exec(struct serve *s, const struct peek *pk,
                      const struct peek_frame *ef, pid_t *pid)
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    sigset_t none, all;
    const char *path;
    char **argv, **envp;
    int *src = NULL, n = 0, low = 0, r = EINVAL;

    if (exec_parse(ef->payload, ef->h.len, &path, &argv, &envp) < 0)
        return EINVAL;          /* the child reports the bad frame */
    src = malloc(sizeof(int) * (s->nargs + (size_t)pk->n));
    if (!src) {
        r = ENOMEM;
        goto out;
    }
    /* the template's fds first, then the child's, in the order sent */
    for (size_t i = 0; i < s->nargs; i++)
        if (s->args[i].fd >= 0)
            src[n++] = s->args[i].fd;
    for (int i = 0; i < pk->n; i++)
        if (pk->f[i].h.op == TFORK_OP_ARGFD && pk->f[i].fd >= 0)
            src[n++] = pk->f[i].fd;
    for (int i = 0; i < n; i++)
        if (src[i] < n)
            low = 1;
    if (low) {
        /* a source among the targets would be overwritten before it is
         * placed: lift every source above them first (close-on-exec) */
        for (int i = 0; i < n; i++) {
            int d = fcntl(src[i], F_DUPFD_CLOEXEC, n);

            if (d < 0) {
                r = errno;
                while (i-- > 0)
                    close(src[i]);
                goto out;
            }
            src[i] = d;
        }
    }
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&attr);
    for (int i = 0; i < n; i++)
        posix_spawn_file_actions_adddup2(&fa, src[i], i);
    sigemptyset(&none);
    posix_spawnattr_setsigmask(&attr, &none);
    /* Every disposition to the default, glibc's internal signals (32,
     * 33) included: its spawn child would otherwise leave those SIG_IGN,
     * and sigfillset() leaves them out.  It visits every signal with a
     * syscall either way, so naming them all costs nothing more. */
    memset(&all, 0xff, sizeof all);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK |
                             POSIX_SPAWN_SETSIGDEF);
    fflush(NULL);
    r = tfork__sys.posix_spawnp(pid, path, &fa, &attr, argv,
                                envp ? envp : environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    if (low)
        for (int i = 0; i < n; i++)
            close(src[i]);
out:
    free(src);
    free(argv);
    free(envp);
    return r;
}

/* Answers for a spawned child: EXECSTART with its pid on its socket,
 * whose EOF then says the exec succeeded.  The client takes that
 * EXECSTART for the FORKED too (one frame and one wake-up less per
 * exec); FORKED still comes when it carries a pidfd, or when the child's
 * socket could not take the EXECSTART. */
static void spawned(struct serve *s, uint32_t id, uint32_t flags, pid_t pid,
                    int child_sock)
{
    tfork_buf b;
    int told = 0;

    tfork__buf_frame(&b, TFORK_OP_EXECSTART, 0);
    tfork__buf_u32(&b, (uint32_t)pid);
    if (tfork__buf_end(&b) == 0)
        told = tfork__send_all(child_sock, b.p, b.len, NULL, 0) == 0;
    tfork__buf_free(&b);
    close(child_sock);
    if (!told || (flags & TFORK_FORK_PIDFD))
        forked_reply(s, id, flags, pid);
}

static void serve_FORK(struct serve *s)
{
    tfork_cur c;
    uint32_t id, flags;
    sigset_t all, old;
    pid_t pid;
    int child_sock = s->rd.fds[0];
    struct peek *pk;

    tfork__cur_init(&c, s->rd.payload, s->rd.h.len);
    tfork__cur_u32(&c, &id);
    tfork__cur_u32(&c, &flags);
    if (tfork__cur_done(&c))
        protocol_error(s, "FORK");
    s->rd.fds[0] = -1;
    /* the client says when the child's commands end with an exec */
    pk = (flags & TFORK_FORK_EXEC) ? peek_read(child_sock) : NULL;
    if (!(flags & TFORK_FORK_NEWROOT) && spawn_reports_errors()) {
        const struct peek_frame *ef = spawnable(pk);

        if (ef && spawn_exec(s, pk, ef, &pid) == 0) {
            spawned(s, id, flags, pid, child_sock);
            peek_free(pk);
            return;
        }
    }
    fflush(NULL);
    /* no signal handler may run in the child before it is ready */
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, &old);
    pid = tfork__sys.fork();
    if (pid == 0) {
        close(s->sock);
        s->sock = child_sock;
        tfork__rd_next(&s->rd);
        if (flags & TFORK_FORK_NEWROOT) {
            s->root = 1;
#ifdef HAVE_PR_SET_CHILD_SUBREAPER
            prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
#endif
            tfork__proctitle("tfork: template");
        } else {
            s->root = 0;
            tfork__proctitle("tfork: child");
        }
        s->hello = 0;
        s->pk = pk;             /* replayed once this frame is done */
        sigprocmask(SIG_SETMASK, &old, NULL);
        return;
    }
    {
        int e = errno;

        sigprocmask(SIG_SETMASK, &old, NULL);
        close(child_sock);
        peek_free(pk);
        if (pid < 0) {
            reply_error(s, -e, id, "fork failed in process %d: %s",
                        (int)getpid(), strerror(e));
            return;
        }
    }
    forked_reply(s, id, flags, pid);
}

/* Leaves the loop for user code: nothing of ours but the socket remains.
 * The template reset every disposition when it started; only user code
 * (require, eval) can have changed one since, so without it the mask is
 * all there is to restore -- one syscall instead of one per signal on the
 * way to every run and exec.  what == NULL: no title (an exec replaces
 * it anyway). */
static void leave_loop(struct serve *s, const char *what)
{
    if (s->sigfd >= 0)
        close(s->sigfd);
    s->sigfd = -1;
    if (s->sigdirty) {
        tfork__signals_reset();
    } else {
        sigset_t none;

        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
    }
    if (what)
        tfork__proctitle("tfork: %s", what);
}

static void serve_RUN(struct serve *s)
{
    tfork_cur c;
    const char *name;
    char *fname;
    void (*f)(void);
    int r;

    tfork__cur_init(&c, s->rd.payload, s->rd.h.len);
    tfork__cur_str(&c, &name, NULL);
    if (tfork__cur_done(&c))
        protocol_error(s, "RUN");
    f = tfork__sys.lookup(name);
    if (!f) {
        reply_error(s, -ENOENT, 0, "run: no function '%s' in process %d",
                    name, (int)getpid());
        fail(s);
        return;
    }
    reply_pid(s, TFORK_OP_RUNOK, getpid());
    fname = strdup(name);
    tfork__rd_free(&s->rd);
    leave_loop(s, fname ? fname : "run");
    free(fname);
    r = ((tfork_run_func *)f)(s->sock, (int)s->nargs, s->args);
    fflush(NULL);
    _exit(r);
}

/* Puts the fd args on 0, 1, 2, ... in order; each is close-on-exec where
 * it came from, and dup2 clears the flag on the target. */
static int place_fds(struct serve *s)
{
    int n = 0, *tmp;

    for (size_t i = 0; i < s->nargs; i++)
        if (s->args[i].fd >= 0)
            n++;
    if (!n)
        return 0;
    tmp = malloc(sizeof(int) * (size_t)n);
    if (!tmp)
        return -ENOMEM;
    /* our socket must survive the placing too: it says whether execve
     * failed (its EOF at exec means success) */
    if (s->sock < n) {
        int moved = fcntl(s->sock, F_DUPFD_CLOEXEC, n);

        if (moved < 0) {
            free(tmp);
            return -errno;
        }
        close(s->sock);
        s->sock = moved;
    }
    /* first move every source above the targets, so no dup2 overwrites
     * a source still to be placed */
    n = 0;
    for (size_t i = 0; i < s->nargs; i++) {
        if (s->args[i].fd < 0)
            continue;
        tmp[n] = fcntl(s->args[i].fd, F_DUPFD_CLOEXEC, 3 + (int)s->nargs);
        if (tmp[n] < 0) {
            free(tmp);
            return -errno;
        }
        n++;
    }
    for (int i = 0; i < n; i++) {
        if (dup2(tmp[i], i) < 0) {
            free(tmp);
            return -errno;
        }
    }
    free(tmp);
    return 0;
}

static void serve_EXEC(struct serve *s)
{
    const char *path;
    char **argv, **envp;
    int e;

    if (exec_parse(s->rd.payload, s->rd.h.len, &path, &argv, &envp) < 0)
        protocol_error(s, "EXEC");
    reply_pid(s, TFORK_OP_EXECSTART, getpid());
    leave_loop(s, NULL);
    e = place_fds(s);
    if (e == 0) {
        tfork__sys.execvpe(path, argv, envp ? envp : environ);
        e = -errno;
    }
    reply_error(s, e, 0, "exec %s: %s", path, strerror(-e));
    _exit(127);
}

static serve_fn *const dispatch[TFORK_OP_LIMIT] = {
    [TFORK_OP_HELLO] = serve_HELLO,
    [TFORK_OP_REQUIRE] = serve_REQUIRE,
    [TFORK_OP_EVAL] = serve_EVAL,
    [TFORK_OP_ARG] = serve_ARG,
    [TFORK_OP_ARGFD] = serve_ARGFD,
    [TFORK_OP_FORK] = serve_FORK,
    [TFORK_OP_RUN] = serve_RUN,
    [TFORK_OP_EXEC] = serve_EXEC,
};

static void handle_frame(struct serve *s)
{
    unsigned op = s->rd.h.op;

    if (!s->hello && op != TFORK_OP_HELLO) {
        reply_error(s, -EPROTO, 0, "protocol error: %s before HELLO",
                    tfork__op_name(op));
        _exit(2);
    }
    /* after a failure nothing more is done; the reader closes the fds
     * the ignored frames carried */
    if (!s->failed || op == TFORK_OP_HELLO)
        dispatch[op](s);
    tfork__rd_next(&s->rd);
}

void tfork__std_fds(void)
{
    for (int fd = 0; fd < 3; fd++) {
        if (fcntl(fd, F_GETFD) < 0 && errno == EBADF) {
            int n = open("/dev/null", O_RDWR);

            if (n >= 0 && n != fd) {
                dup2(n, fd);
                close(n);
            }
        }
    }
}

static int make_sigfd(void)
{
#ifdef HAVE_SIGNALFD
    sigset_t set;

    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigprocmask(SIG_BLOCK, &set, NULL);
    return signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
#else
    return -1;
#endif
}

void tfork__serve(int sock, int root)
{
    struct serve s;

    memset(&s, 0, sizeof s);
    s.sock = sock;
    s.root = root;
    /* a program spawned from here must not inherit it */
    fcntl(sock, F_SETFD, FD_CLOEXEC);
    tfork__rd_init(&s.rd, 1);
    tfork__std_fds();
    /* from default dispositions on (tfork-serve inherits glibc's
     * internal signals ignored from posix_spawn), so that leave_loop
     * need not reset them for every child */
    tfork__signals_reset();
#ifdef HAVE_PR_SET_CHILD_SUBREAPER
    if (root)
        prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
#endif
    s.sigfd = make_sigfd();
    for (;;) {
        struct pollfd pfd[2] = {
            { s.sock, POLLIN, 0 },
            { s.sigfd, POLLIN, 0 },
        };
        /* without a signalfd, look for dead children now and then */
        int n = poll(pfd, s.sigfd >= 0 ? 2 : 1, s.sigfd >= 0 ? -1 : 50);

        if (n < 0 && errno != EINTR)
            _exit(3);
        if (s.sigfd >= 0 && (pfd[1].revents & POLLIN)) {
#ifdef HAVE_SIGNALFD
            struct signalfd_siginfo si;

            while (read(s.sigfd, &si, sizeof si) > 0)
                ;
#endif
        }
        reap(&s);
        if (!(pfd[0].revents & (POLLIN | POLLHUP | POLLERR)))
            continue;
        for (;;) {
            int sock_now = s.sock;
            int r = tfork__rd_step(&s.rd, s.sock);

            if (r == 0)
                break;
            if (r == -EPIPE)
                _exit(0);       /* the client is gone: so are we */
            if (r < 0) {
                reply_error(&s, r, 0, "%s", s.rd.err);
                _exit(2);
            }
            handle_frame(&s);
            if (s.sock != sock_now) {
                /* a new child: what its parent read of its commands
                 * first, then poll its own socket */
                while (s.pk)
                    peek_replay(&s);
                break;
            }
        }
    }
}

void tfork__serve_copy(int sock, const char *title)
{
    tfork__std_fds();
    if (sock != 3) {
        if (dup2(sock, 3) < 0)
            _exit(3);
        fcntl(3, F_SETFD, FD_CLOEXEC);
    }
#ifdef HAVE_CLOSE_RANGE_FUNC
    if (close_range(4, ~0U, 0) < 0)
#endif
    {
        long max = sysconf(_SC_OPEN_MAX);

        for (int fd = 4; fd < max && fd < 65536; fd++)
            close(fd);
    }
    tfork__proctitle("%s", title);
    tfork__serve(3, 1);         /* resets the signal dispositions */
}
