/* fuzz_serve.c: the template loop (serve/serve.c, tfork__serve) fed an
 * arbitrary byte stream, and fds, on its socket, as a hostile or buggy
 * client would.  Per input a child runs tfork__serve(sock, 1); the
 * harness sends the input's records (some with an fd: a socket that
 * becomes a forked child's holds that child's own stream), shuts its
 * write side, and reads every reply until EOF.  Each reply must be a well-formed reply
 * frame; the template and every process it forked must end by exiting
 * with a documented status, never by a signal: 0 (client gone, or a run
 * function's 0), 2 (protocol error), 127 (exec failed), SRV_RUN_RET (a
 * run function returned it); anything else aborts.  A hang is one too:
 * libFuzzer's -timeout, Check's timeout, or the harness's own 20 s.
 *
 * REQUIRE, EVAL, RUN and EXEC (and FORK, which may spawn a child that
 * only execs) would run any code a byte names: dlopen of any path, dlsym
 * of "abort" or "system", execvp or posix_spawnp of any program.  The
 * tfork__sys hooks dlopen, lookup, execvpe and posix_spawnp get fakes
 * here: paths and names starting "ok" succeed harmlessly (a program is
 * a process that exits 0), "no" names a function that returns
 * SRV_RUN_RET, anything else is not found.
 *
 * Input: byte 0 is n, the last n bytes are the stream every forked child
 * is sent; the bytes between are records: a control byte c, then
 * (c & 63) + 1 bytes sent with one sendmsg, an fd riding on it by c >> 6:
 * 0 none, 1 a socket whose peer the harness keeps (a child's socket:
 * the child stream is written to it at once, then its write side shut),
 * 2 a socket whose peer is closed, 3 /dev/null. */
#include <elf.h>
#include <link.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include "fuzz.h"

#define SRV_RUN_RET 99      /* what the "no" function returns */
#define SRV_PEERS   8       /* kept peers at most */

static int srv_ok(int status)
{
    if (WIFSIGNALED(status))
        return 0;
    switch (WEXITSTATUS(status)) {
    case 0: case 2: case 127: case SRV_RUN_RET:
        return 1;
    }
    return 0;
}

#ifdef TFORK__SYS_CODE_HOOKS

static int srv_handle;      /* what the fake dlopen returns */

static void *srv_dlopen(const char *path, int flags)
{
    (void)flags;
    FUZZ_ASSERT(path, "dlopen(NULL)");
    return strncmp(path, "ok", 2) == 0 ? &srv_handle : NULL;
}

/* Called as an eval function (int argc, char **argv) and as a run
 * function (int fd, int argc, const tfork_arg *argv): they read no
 * argument, so either call is harmless. */
static int srv_fn_ok(void)
{
    return 0;
}

static int srv_fn_no(void)
{
    return SRV_RUN_RET;
}

static void (*srv_lookup(const char *name))(void)
{
    FUZZ_ASSERT(name, "lookup(NULL)");
    if (strncmp(name, "ok", 2) == 0)
        return (void (*)(void))srv_fn_ok;
    if (strncmp(name, "no", 2) == 0)
        return (void (*)(void))srv_fn_no;
    return NULL;
}

/* FORK's shortcut (serve.c): a child whose socket holds only HELLO,
 * args and EXEC is spawned from the template, not forked.  A spawn that
 * succeeds is a process that exits 0 at once. */
static int srv_posix_spawnp(pid_t *pid, const char *file,
                            const posix_spawn_file_actions_t *fa,
                            const posix_spawnattr_t *attr,
                            char *const argv[], char *const envp[])
{
    size_t n = 0;
    pid_t p;

    (void)fa;
    (void)attr;
    FUZZ_ASSERT(file && file[0], "spawn of an empty path");
    FUZZ_ASSERT(argv && envp, "spawn without argv or envp");
    for (size_t i = 0; argv[i]; i++)
        n += strlen(argv[i]);
    for (size_t i = 0; envp[i]; i++)
        n += strlen(envp[i]);
    (void)n;
    if (strncmp(file, "ok", 2) != 0)
        return ENOENT;
    p = fork();
    if (p < 0)
        return errno;
    if (p == 0)
        _exit(0);
    *pid = p;
    return 0;
}

/* An exec that succeeds is a program that exits 0 at once. */
static int srv_execvpe(const char *file, char *const argv[],
                       char *const envp[])
{
    size_t n = 0;

    FUZZ_ASSERT(file && file[0], "exec of an empty path");
    FUZZ_ASSERT(argv && envp, "exec without argv or envp");
    for (size_t i = 0; argv[i]; i++)
        n += strlen(argv[i]);
    for (size_t i = 0; envp[i]; i++)
        n += strlen(envp[i]);
    (void)n;
    if (strncmp(file, "ok", 2) == 0)
        _exit(0);
    errno = ENOENT;
    return -1;
}

/* ---- coverage from the forked processes (libFuzzer build only) ----
 * The template and its children run in other processes, whose coverage
 * counters libFuzzer never sees: the build links with --wrap=_exit (the
 * serve loop only ever leaves by _exit), and each process folds its
 * counters into a shared page on the way out, which the harness folds
 * into its own after the input. */
#ifdef TFORK_FUZZ_MAIN
void __real__exit(int status) __attribute__((noreturn));
void __wrap__exit(int status) __attribute__((noreturn));

static unsigned char *srv_cntrs;    /* libFuzzer's 8-bit counters */
static size_t srv_ncntrs;
static unsigned char *srv_cov;      /* shared with the children */
static pid_t srv_harness;

void __wrap__exit(int status)
{
    if (srv_cov && getpid() != srv_harness)
        for (size_t i = 0; i < srv_ncntrs; i++)
            if (srv_cntrs[i] > srv_cov[i])
                srv_cov[i] = srv_cntrs[i];
    __real__exit(status);
}

static int srv_bias(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    *(ElfW(Addr) *)data = info->dlpi_addr;
    return 1;                       /* the first one is the program */
}

/* The counters are the program's section __sancov_cntrs: found in
 * /proc/self/exe (naming __start___sancov_cntrs in the source instead
 * leaves libFuzzer with no coverage at all). */
static void srv_cov_init(void)
{
    int fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
    ElfW(Ehdr) eh;
    ElfW(Shdr) *sh = NULL;
    ElfW(Addr) bias = 0;
    char *names = NULL;
    void *m;

    srv_harness = getpid();
    if (fd < 0)
        return;
    if (pread(fd, &eh, sizeof eh, 0) != (ssize_t)sizeof eh ||
        eh.e_shentsize != sizeof *sh || eh.e_shstrndx >= eh.e_shnum)
        goto out;
    sh = calloc(eh.e_shnum, sizeof *sh);
    if (!sh || pread(fd, sh, eh.e_shnum * sizeof *sh, (off_t)eh.e_shoff) !=
        (ssize_t)(eh.e_shnum * sizeof *sh))
        goto out;
    names = calloc(1, sh[eh.e_shstrndx].sh_size + 1);
    if (!names || pread(fd, names, sh[eh.e_shstrndx].sh_size,
                        (off_t)sh[eh.e_shstrndx].sh_offset) !=
        (ssize_t)sh[eh.e_shstrndx].sh_size)
        goto out;
    dl_iterate_phdr(srv_bias, &bias);
    for (unsigned i = 0; i < eh.e_shnum; i++) {
        if (sh[i].sh_name < sh[eh.e_shstrndx].sh_size &&
            strcmp(names + sh[i].sh_name, "__sancov_cntrs") == 0) {
            srv_cntrs = (unsigned char *)(bias + sh[i].sh_addr);
            srv_ncntrs = sh[i].sh_size;
        }
    }
    if (!srv_ncntrs)
        goto out;
    m = mmap(NULL, srv_ncntrs, PROT_READ | PROT_WRITE,
             MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (m != MAP_FAILED)
        srv_cov = m;
out:
    free(names);
    free(sh);
    close(fd);
}

static void srv_cov_merge(void)
{
    if (!srv_cov)
        return;
    for (size_t i = 0; i < srv_ncntrs; i++) {
        if (srv_cov[i] > srv_cntrs[i])
            srv_cntrs[i] = srv_cov[i];
        srv_cov[i] = 0;
    }
}
#else
static void srv_cov_init(void)
{
}

static void srv_cov_merge(void)
{
}
#endif

/* One reply channel: the template's socket or a child's. */
struct srv_chan {
    int fd;                 /* our end, -1 once at EOF and closed */
    tfork_rd rd;            /* its replies */
    const uint8_t *out;     /* what is still to be sent on it */
    size_t outlen;
    int shut;               /* our write side is shut */
};

/* Reads what chan has; checks every reply.  0 at EOF (closed), else 1. */
static int srv_read(struct srv_chan *ch)
{
    for (;;) {
        int r = tfork__rd_step(&ch->rd, ch->fd);

        if (r == 0)
            return 1;
        if (r == -EPIPE || r == -ECONNRESET) {
            tfork__rd_free(&ch->rd);
            close(ch->fd);
            ch->fd = -1;
            return 0;
        }
        FUZZ_ASSERT(r == 1, "a bad reply from the template: %s", ch->rd.err);
        FUZZ_ASSERT(fuzz_frame_check(ch->rd.hdr, ch->rd.payload,
                                     ch->rd.h.len),
                    "malformed %s reply", tfork__op_name(ch->rd.h.op));
        if (ch->rd.h.op == TFORK_OP_EXIT) {
            const unsigned char *p = ch->rd.payload;
            int st = (int)((uint32_t)p[4] | (uint32_t)p[5] << 8 |
                           (uint32_t)p[6] << 16 | (uint32_t)p[7] << 24);

            FUZZ_ASSERT(srv_ok(st), "a forked process ended with wait "
                        "status 0x%x", st);
        }
        tfork__rd_next(&ch->rd);
    }
}

/* Until every channel is at EOF: sends what is left (then shuts the
 * write side), reads replies.  until_sent: only until all is sent. */
static void srv_pump(struct srv_chan *ch, int n, int until_sent)
{
    for (;;) {
        struct pollfd pfd[SRV_PEERS + 1];
        int live = 0, pending = 0, r;

        for (int i = 0; i < n; i++) {
            pfd[i].fd = ch[i].fd;
            pfd[i].events = 0;
            pfd[i].revents = 0;
            if (ch[i].fd < 0)
                continue;
            live++;
            if (!ch[i].outlen && !ch[i].shut && !until_sent) {
                shutdown(ch[i].fd, SHUT_WR);
                ch[i].shut = 1;
            }
            pfd[i].events = POLLIN;
            if (ch[i].outlen) {
                pfd[i].events |= POLLOUT;
                pending++;
            }
        }
        if (!live || (until_sent && !pending))
            return;
        r = poll(pfd, (nfds_t)n, 20000);
        if (r < 0 && errno == EINTR)
            continue;
        FUZZ_ASSERT(r > 0, "the template hangs: nothing for 20 s");
        for (int i = 0; i < n; i++) {
            if (ch[i].fd < 0)
                continue;
            if ((pfd[i].revents & POLLOUT) && ch[i].outlen) {
                ssize_t k = fuzz_send(ch[i].fd, ch[i].out, ch[i].outlen,
                                      -1, 0);

                if (k > 0) {
                    ch[i].out += k;
                    ch[i].outlen -= (size_t)k;
                } else if (k != -EAGAIN) {
                    ch[i].outlen = 0;   /* the process is gone */
                }
            }
            if (pfd[i].revents & (POLLIN | POLLHUP | POLLERR))
                srv_read(&ch[i]);
        }
    }
}

FUZZ_ENTRY(serve)
{
    static int ready;
    struct srv_chan ch[SRV_PEERS + 1];
    int nch = 1, fds0, sv[2], st;
    size_t cn, end, pos = 1;
    pid_t pid, w;

    if (!ready) {
        tfork__sys.dlopen = srv_dlopen;
        tfork__sys.lookup = srv_lookup;
        tfork__sys.execvpe = srv_execvpe;
        tfork__sys.posix_spawnp = srv_posix_spawnp;
        /* the processes the template leaves behind come to us */
        prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        signal(SIGPIPE, SIG_IGN);
        srv_cov_init();
        ready = 1;
    }
    if (size < 1 || size > (1u << 20))
        return 0;
    cn = data[0] < size - 1 ? data[0] : size - 1;
    end = size - cn;

    fds0 = fuzz_fd_count();
    fuzz_socketpair(sv, 0, 1);
    pid = fork();
    FUZZ_ASSERT(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        close(sv[1]);
        tfork__serve(sv[0], 1);
    }
    close(sv[0]);
    memset(ch, 0, sizeof ch);
    ch[0].fd = sv[1];
    tfork__rd_init(&ch[0].rd, 0);

    /* the records, each with one sendmsg; the template's replies are
     * read meanwhile, so neither side waits for the other forever */
    while (pos < end && ch[0].fd >= 0) {
        unsigned c = data[pos++];
        size_t len = (c & 63) + 1;
        int fd = -1, pr[2];
        ssize_t k;

        if (len > end - pos)
            len = end - pos;
        if (!len)
            break;
        switch (c >> 6) {
        case 1:
        case 2:
            fuzz_socketpair(pr, 0, 1);
            fd = pr[0];
            if ((c >> 6) == 1 && nch < SRV_PEERS + 1) {
                /* the child's commands are there before the FORK, as
                 * the client queues them (so FORK may spawn it) */
                fuzz_send(pr[1], data + end, cn, -1, 0);
                shutdown(pr[1], SHUT_WR);
                ch[nch].fd = pr[1];
                ch[nch].shut = 1;
                tfork__rd_init(&ch[nch].rd, 0);
                nch++;
            } else {
                close(pr[1]);
            }
            break;
        case 3:
            fd = open("/dev/null", O_RDWR | O_CLOEXEC);
            break;
        }
        k = fuzz_send(ch[0].fd, data + pos, len, fd, fd >= 0);
        while (k == -EAGAIN) {
            srv_read(&ch[0]);
            if (ch[0].fd < 0)
                break;
            poll(&(struct pollfd){ ch[0].fd, POLLOUT | POLLIN, 0 }, 1,
                 20000);
            k = fuzz_send(ch[0].fd, data + pos, len, fd, fd >= 0);
        }
        if (fd >= 0)
            close(fd);
        if (k < 0 && k != -EAGAIN)
            break;          /* the template is gone (a protocol error) */
        if (k > 0 && (size_t)k < len) {
            /* the rest of the record, without the fd */
            ch[0].out = data + pos + k;
            ch[0].outlen = len - (size_t)k;
            srv_pump(ch, 1, 1);
        }
        pos += len;
        if (ch[0].fd >= 0)
            srv_read(&ch[0]);
    }
    if (ch[0].fd >= 0) {
        shutdown(ch[0].fd, SHUT_WR);
        ch[0].shut = 1;
    }
    srv_pump(ch, nch, 0);

    while ((w = waitpid(pid, &st, 0)) < 0 && errno == EINTR)
        ;
    FUZZ_ASSERT(w == pid, "waitpid: %s", strerror(errno));
    FUZZ_ASSERT(srv_ok(st), "the template ended with wait status 0x%x", st);
    /* the children it left to us: each exits once its socket is closed */
    while ((w = waitpid(-1, &st, 0)) > 0 || (w < 0 && errno == EINTR))
        if (w > 0)
            FUZZ_ASSERT(srv_ok(st), "process %d ended with wait status 0x%x",
                        (int)w, st);
    srv_cov_merge();
    for (int i = 0; i < nch; i++) {
        if (ch[i].fd >= 0)
            close(ch[i].fd);
        tfork__rd_free(&ch[i].rd);
    }
    FUZZ_ASSERT(fuzz_fd_count() == fds0, "fds leaked: %d, %d before",
                fuzz_fd_count(), fds0);
    return 0;
}

#else /* !TFORK__SYS_CODE_HOOKS */

/* Without the hooks the template would run whatever code the bytes name:
 * refuse to run at all. */
FUZZ_ENTRY(serve)
{
    (void)data;
    (void)size;
    (void)srv_ok;
    fuzz_fail("fuzz_serve needs the tfork__sys hooks dlopen, lookup and "
              "execvpe (src/tfork-int.h, TFORK__SYS_CODE_HOOKS)");
}

#endif
