/* exec.c: starting templates: tfork-serve through posix_spawn, or a copy
 * of the calling program (tfork_early, tfork_template). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tfork-int.h"

extern char **environ;

int tfork__early_fd = -1;
pid_t tfork__early_pid;

/* A close-on-exec socketpair whose fds are never 0, 1 or 2 (a client with
 * a closed stdin must not hand its template's socket to a child as its
 * stdin). */
int tfork__cloexec_socketpair(int sv[2])
{
    if (tfork__sys.socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        return -errno;
    for (int i = 0; i < 2; i++) {
        if (sv[i] < 3) {
            int n = tfork__sys.dup_cloexec(sv[i]);

            if (n < 0) {
                int e = errno;

                close(sv[0]);
                close(sv[1]);
                return -e;
            }
            close(sv[i]);
            sv[i] = n;
        }
    }
    return 0;
}

static const char *serve_path(void)
{
    const char *p = secure_getenv("TFORK_SERVE");

    return p && *p ? p : TFORK_LIBEXECDIR "/tfork-serve";
}

int tfork__spawn_serve(int sock, pid_t *pid, char *err, size_t errlen)
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    sigset_t none, all;
    const char *path = serve_path();
    char *argv[] = { (char *)"tfork-serve", (char *)"--fd", (char *)"3",
                     NULL };
    int r, moved = -1;

    /* dup2 onto the same number would leave close-on-exec set */
    if (sock == 3) {
        moved = tfork__sys.dup_cloexec(sock);
        if (moved < 0) {
            r = errno;
            snprintf(err, errlen, "starting %s: %s", path, strerror(r));
            return -r;
        }
        sock = moved;
    }
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&attr);
    posix_spawn_file_actions_adddup2(&fa, sock, 3);
#ifdef HAVE_POSIX_SPAWN_FILE_ACTIONS_ADDCLOSEFROM_NP
    /* the caller's fds without close-on-exec must not leak into it */
    posix_spawn_file_actions_addclosefrom_np(&fa, 4);
#endif
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK |
                             POSIX_SPAWN_SETSIGDEF);
    r = tfork__sys.posix_spawn(pid, path, &fa, &attr, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    if (moved >= 0)
        close(moved);
    if (r) {
        snprintf(err, errlen, "starting %s: %s", path, strerror(r));
        return -r;
    }
    return 0;
}

/* Forks the calling program; the copy serves on its end of a new socket
 * pair.  The client's end (non-blocking) and the pid come back. */
static int fork_copy(int *fd, pid_t *pid, const char *title)
{
    int sv[2], r;
    pid_t p;

    r = tfork__cloexec_socketpair(sv);
    if (r < 0)
        return r;
    fflush(NULL);   /* buffered output must not be written twice */
    p = tfork__sys.fork();
    if (p < 0) {
        r = -errno;
        close(sv[0]);
        close(sv[1]);
        return r;
    }
    if (p == 0) {
        close(sv[0]);
        tfork__serve_copy(sv[1], title);
    }
    close(sv[1]);
    fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK);
    *fd = sv[0];
    *pid = p;
    return 0;
}

TFORK_EXTERN int tfork_early(void)
{
    int fd, r;
    pid_t pid;

    if (tfork__early_fd >= 0)
        return -EALREADY;
    r = fork_copy(&fd, &pid, "tfork: early template");
    if (r < 0)
        return r;
    tfork__early_fd = fd;
    tfork__early_pid = pid;
    return 0;
}

TFORK_EXTERN tfork *tfork_template(struct ev_loop *loop)
{
    int fd, r, saved = errno;
    pid_t pid;
    tfork *p;

    if (!loop) {
        errno = EINVAL;
        return NULL;
    }
    r = fork_copy(&fd, &pid, "tfork: template");
    if (r < 0) {
        errno = -r;
        return NULL;
    }
    p = tfork__proc_own(loop, fd, pid);
    if (!p) {
        /* the copy sees EOF and exits; reap it so no zombie stays */
        int e = errno;

        close(fd);
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
            ;
        errno = e;
        return NULL;
    }
    return tfork__made(p, saved);
}
