/* mod_life.c: run functions for check_life, loaded with tfork_require into
 * tfork-serve templates and copies of the test program.  libc only. */
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tfork.h"
#include "under_valgrind.h"

/* The signal mask and dispositions as the process itself sees them
 * (sigprocmask, sigaction), in the hex format of /proc/self/status: bit
 * n-1 for signal n.  Under valgrind they are the only view of the
 * program's own: the kernel's (/proc) shows the handlers valgrind
 * installs for every signal. */
static void life_sig_view(int fd, int vg)
{
    unsigned long long blk = 0, ign = 0, cgt = 0;
    sigset_t mask;

    if (sigprocmask(SIG_BLOCK, NULL, &mask) < 0)
        sigfillset(&mask);
    for (int s = 1; s <= 64; s++) {
        struct sigaction sa;
        unsigned long long bit = 1ull << (s - 1);

        /* SIGRTMAX is valgrind's own (VG_SIGVGKILL): it shows it ignored */
        if (vg && s == SIGRTMAX)
            continue;
        if (sigismember(&mask, s) == 1)
            blk |= bit;
        /* glibc refuses its internal signals (32, 33): it uses them only
         * once threads are cancelled or change ids */
        if (sigaction(s, NULL, &sa) < 0)
            continue;
        if (sa.sa_handler == SIG_IGN)
            ign |= bit;
        else if (sa.sa_handler != SIG_DFL)
            cgt |= bit;
    }
    dprintf(fd, "ActBlk: %016llx\nActIgn: %016llx\nActCgt: %016llx\n", blk,
            ign, cgt);
}

/* Writes what the child observes of itself over its socket, one item a
 * line:  pid N / ppid N / sock N / arg I fd N | arg I str S /
 * fd N TARGET (every open descriptor but valgrind's, see uv_fd_end) /
 * the SigBlk, SigIgn, SigCgt lines of /proc/self/status / the same seen
 * through sigprocmask and sigaction: ActBlk, ActIgn, ActCgt /
 * valgrind 0|1 (whether this process runs under it) / end. */
int life_report(int fd, int argc, const tfork_arg *argv)
{
    int vg = uv_running(0), fd_end = uv_fd_end();
    DIR *d;
    struct dirent *de;
    FILE *st;
    char line[512];

    dprintf(fd, "pid %d\nppid %d\nsock %d\n", (int)getpid(), (int)getppid(),
            fd);
    for (int i = 0; i < argc; i++) {
        if (argv[i].fd >= 0)
            dprintf(fd, "arg %d fd %d\n", i, argv[i].fd);
        else
            dprintf(fd, "arg %d str %s\n", i, argv[i].buf);
    }
    d = opendir("/proc/self/fd");
    if (!d)
        return 90;
    while ((de = readdir(d))) {
        char path[64], target[256];
        ssize_t n;
        int num;

        if (de->d_name[0] == '.')
            continue;
        num = atoi(de->d_name);
        if (num == dirfd(d) || num >= fd_end)
            continue;
        snprintf(path, sizeof path, "/proc/self/fd/%d", num);
        n = readlink(path, target, sizeof target - 1);
        if (n < 0)
            n = 0;
        target[n] = '\0';
        dprintf(fd, "fd %d %s\n", num, target);
    }
    closedir(d);
    st = fopen("/proc/self/status", "re");
    if (!st)
        return 91;
    while (fgets(line, sizeof line, st)) {
        if (strncmp(line, "SigBlk:", 7) == 0 ||
            strncmp(line, "SigIgn:", 7) == 0 ||
            strncmp(line, "SigCgt:", 7) == 0)
            dprintf(fd, "%s", line);
    }
    fclose(st);
    life_sig_view(fd, vg);
    dprintf(fd, "valgrind %d\nend\n", vg);
    return 0;
}

/* Exits at once with status 0. */
int life_exit0(int fd, int argc, const tfork_arg *argv)
{
    (void)fd;
    (void)argc;
    (void)argv;
    return 0;
}

/* Waits for one byte (or EOF) from the client, then exits with 0: the
 * client looks at the running child meanwhile. */
int life_title_wait(int fd, int argc, const tfork_arg *argv)
{
    char c;

    (void)argc;
    (void)argv;
    return read(fd, &c, 1) == 1 ? 0 : 1;
}

static void life_handler(int sig)
{
    (void)sig;
}

/* eval: user code changing signals in a template (a handler for SIGUSR1,
 * SIGUSR2 ignored, SIGHUP blocked): its children must not inherit any. */
int life_set_signals(int argc, char **argv)
{
    struct sigaction sa;
    sigset_t hup;

    (void)argc;
    (void)argv;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = life_handler;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGUSR1, &sa, NULL) < 0)
        return 1;
    sa.sa_handler = SIG_IGN;
    if (sigaction(SIGUSR2, &sa, NULL) < 0)
        return 1;
    sigemptyset(&hup);
    sigaddset(&hup, SIGHUP);
    return sigprocmask(SIG_BLOCK, &hup, NULL) < 0;
}
