/* exec.c: tfork_exec as a fork+exec replacement.  Runs a command from a
 * small template (no copy of this process's memory or descriptors), with
 * /dev/null as its stdin and a pipe as its stdout; reads the pipe from a
 * libev loop and prints what came and the command's exit status.
 *
 *   TFORK_SERVE=$PWD/tfork-serve examples/exec [--] [command [arg...]]
 *
 * Without a command it runs  echo hello from tfork_exec.  It exits 0 when
 * the command ran and was reported (whatever its own status), 1 when tfork
 * could not run it, 2 on bad usage. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <ev.h>
#include <tfork.h>

#define KEEP_MAX 4096           /* output bytes kept for printing */

struct job {
    ev_io out;                  /* the read end of the command's stdout */
    char *buf;                  /* the first KEEP_MAX bytes of it */
    size_t len;                 /* bytes kept in buf */
    size_t total;               /* bytes read, kept or not */
    pid_t pid;                  /* the command's pid, once exec'd */
    int exec_done;              /* the exec callback came */
    int exec_err;               /* its err: 0 or -errno */
    int exited;                 /* on_exit came for the command */
    int status;                 /* and its wait status */
    int failed;                 /* something of ours went wrong */
};

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

static void on_output(struct ev_loop *loop, ev_io *w, int revents)
{
    struct job *j = w->data;
    char chunk[4096];
    ssize_t n;

    (void)revents;
    for (;;) {
        n = read(w->fd, chunk, sizeof chunk);
        if (n > 0) {
            size_t keep = (size_t)n;

            if (keep > KEEP_MAX - j->len)
                keep = KEEP_MAX - j->len;
            memcpy(j->buf + j->len, chunk, keep);
            j->len += keep;
            j->total += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;     /* more later */
        break;          /* EOF: every writer is gone; or an error */
    }
    if (n < 0) {
        fprintf(stderr, "exec: reading the command's output: %s\n",
                strerror(errno));
        j->failed = 1;
    }
    ev_io_stop(loop, w);
    close(w->fd);
}

/* Runs once: the command was exec'd (err 0), or why it could not be.
 * fd is always -1 for exec: the command owns the other end now. */
static void on_exec(tfork *p, int fd, int err, void *data)
{
    struct job *j = data;

    (void)fd;
    j->exec_done = 1;
    j->exec_err = err;
    if (err < 0) {
        fprintf(stderr, "exec: %s\n", tfork_errmsg(p));
        return;
    }
    j->pid = tfork_pid(p);
}

static void on_cmd_exit(pid_t pid, int status, void *data)
{
    struct job *j = data;

    j->pid = pid;
    j->exited = 1;
    j->status = status;
}

/* The command as a shell would take it back: words quoted as needed. */
static void print_cmd(char *const cmd[])
{
    for (int i = 0; cmd[i]; i++) {
        const char *a = cmd[i];

        fputs(i ? " " : "", stdout);
        if (*a && strspn(a, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRST"
                         "UVWXYZ0123456789_./=:,+-@%") == strlen(a)) {
            fputs(a, stdout);
            continue;
        }
        putchar('\'');
        for (; *a; a++) {
            if (*a == '\'')
                fputs("'\\''", stdout);
            else
                putchar(*a);
        }
        putchar('\'');
    }
}

static void print_output(const struct job *j)
{
    const char *s = j->buf, *end = j->buf + j->len;

    printf("its stdout (%zu bytes):\n", j->total);
    while (s < end) {
        const char *nl = memchr(s, '\n', (size_t)(end - s));
        int n = (int)((nl ? nl : end) - s);

        printf("  | %.*s%s\n", n, s, nl ? "" : j->total > j->len ? " ..." :
               "  (no newline at end)");
        s += n + (nl ? 1 : 0);
    }
    if (j->total > j->len)
        printf("  (%zu more bytes not shown)\n", j->total - j->len);
}

/* Everything the command needs, queued on p: stdin, stdout, the exec.
 * Returns 0, or -errno with a message printed. */
static int start(struct ev_loop *loop, tfork *p, char *const cmd[],
                 struct job *j)
{
    int null, pfd[2], r;

    null = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (null < 0) {
        r = -errno;
        fprintf(stderr, "exec: /dev/null: %s\n", strerror(errno));
        return r;
    }
    if (pipe2(pfd, O_CLOEXEC) < 0) {
        r = -errno;
        fprintf(stderr, "exec: pipe2: %s\n", strerror(errno));
        close(null);
        return r;
    }
    /* the fds sent become the command's 0, 1, ... in order; fd 2 stays
     * the template's, which is our stderr.  send_fd dups: ours close now,
     * so the pipe's EOF comes when the command's copy closes. */
    r = tfork_send_fd(p, null);
    if (r == 0)
        r = tfork_send_fd(p, pfd[1]);
    close(null);
    close(pfd[1]);
    if (r < 0) {
        fprintf(stderr, "exec: tfork_send_fd: %s\n", tfork_strerror(r));
        close(pfd[0]);
        return r;
    }
    if (fcntl(pfd[0], F_SETFL, O_NONBLOCK) < 0) {
        r = -errno;
        fprintf(stderr, "exec: fcntl: %s\n", strerror(errno));
        close(pfd[0]);
        return r;
    }
    r = tfork_on_exit(p, on_cmd_exit, j);
    if (r == 0)
        r = tfork_exec(p, cmd[0], cmd, NULL, on_exec, j);
    if (r < 0) {
        fprintf(stderr, "exec: tfork_exec %s: %s\n", cmd[0],
                tfork_strerror(r));
        close(pfd[0]);
        return r;
    }
    ev_io_init(&j->out, on_output, pfd[0], EV_READ);
    j->out.data = j;
    ev_io_start(loop, &j->out);
    return 0;
}

int main(int argc, char **argv)
{
    static char *const dflt[] = { (char *)"echo",
                                  (char *)"hello from tfork_exec", NULL };
    char *const *cmd = dflt;
    struct ev_loop *loop;
    struct job j;
    tfork *tpl, *p;
    pid_t tpl_pid;
    char how[128];

    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc > 1 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
        printf("usage: %s [--] [command [arg...]]\n"
               "runs the command through tfork_exec (default: echo hello "
               "from tfork_exec)\nand prints its stdout and exit status\n",
               argv[0]);
        return 0;
    }
    if (argc > 1 && !strcmp(argv[1], "--")) {
        argv++;
        argc--;
    }
    if (argc > 1)
        cmd = argv + 1;

    memset(&j, 0, sizeof j);
    j.buf = malloc(KEEP_MAX);
    if (!j.buf) {
        fprintf(stderr, "exec: out of memory\n");
        return 1;
    }
    loop = ev_default_loop(0);
    if (!loop) {
        fprintf(stderr, "exec: could not start libev (bad $LIBEV_FLAGS?)\n");
        free(j.buf);
        return 1;
    }

    /* An explicit template rather than tfork_new's default one: a program
     * that execs often keeps one such template for all its commands, and
     * this one can be freed, so the example ends with nothing left over
     * (no process, no memory: valgrind finds nothing). */
    tpl = tfork_new_exec(loop);
    if (!tpl) {
        int e = errno;
        const char *env = getenv("TFORK_SERVE");

        fprintf(stderr, "exec: tfork_new_exec: %s (starting %s)\n",
                strerror(e), env && *env ? env :
                "the installed tfork-serve; set TFORK_SERVE to use another");
        free(j.buf);
        return 1;
    }
    tpl_pid = tfork_pid(tpl);
    p = tfork_fork(tpl);
    if (!p) {
        fprintf(stderr, "exec: tfork_fork: %s\n", strerror(errno));
        tfork_free(tpl);
        free(j.buf);
        return 1;
    }
    if (start(loop, p, cmd, &j) < 0) {
        tfork_free(p);
        j.failed = 1;
    }
    /* no more children: it exits once the command's exit is reported,
     * and ev_run returns once it has been reaped */
    tfork_free(tpl);
    ev_run(loop, 0);

    if (j.exec_done && j.exec_err == 0) {
        printf("ran ");
        print_cmd(cmd);
        printf(" as pid %d, from template pid %d\n", (int)j.pid, (int)tpl_pid);
        print_output(&j);
    }
    if (j.exited)
        printf("%s %s\n", j.exec_err == 0 ? "it" : "the child that tried",
               describe(j.status, how, sizeof how));
    else if (j.exec_done) {
        fprintf(stderr, "exec: no exit status came for %s\n", cmd[0]);
        j.failed = 1;
    }
    ev_loop_destroy(loop);
    free(j.buf);
    return j.failed || !j.exec_done || j.exec_err < 0 ? 1 : 0;
}
