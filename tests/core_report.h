/* core_report.h: what the run functions of tests/check_core.c report on
 * their socket, shared by the test program and tests/mod_core_basic.c
 * (libc only, since modules do not link libtfork).
 *
 * The report is text, one line each:
 *   P <pid> <ppid> <open fds>
 *   E <argc> [arg0][arg1]...        one per eval of core/mod_core_eval_record
 *   A <i> <len> <nul ok> <hex>      a string arg of at most 256 bytes
 *   A <i> <len> <nul ok> H<fnv64>   a longer one
 *   F <i> <cloexec>                 an fd arg; "fd<i>:<pid>\n" is written
 *                                   into it */
#ifndef CORE_REPORT_H
#define CORE_REPORT_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tfork.h"
#include "under_valgrind.h"

#define CORE_HEX_MAX 256        /* args up to this long are shown in hex */
#define CORE_REC_MAX 8192       /* eval records kept by a process */

static inline uint64_t core_fnv(const void *p, size_t n)
{
    const unsigned char *s = p;
    uint64_t h = 14695981039346656037ull;

    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 1099511628211ull;
    }
    return h;
}

static inline int core_write_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;

    while (n > 0) {
        ssize_t w = write(fd, p, n);

        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Open descriptors, not counting the one opendir() itself uses, nor
 * valgrind's own (see uv_fd_end). */
static inline int core_count_fds(void)
{
    int end = uv_fd_end();
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int n = 0;

    if (!d)
        return -1;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.' && atoi(e->d_name) < end)
            n++;
    closedir(d);
    return n - 1;
}

/* Appends one "E ..." line for an eval to rec (CORE_REC_MAX bytes). */
static inline void core_record_eval(char *rec, int argc, char **argv)
{
    size_t n = strlen(rec);

    n += (size_t)snprintf(rec + n, CORE_REC_MAX - n, "E %d ", argc);
    for (int i = 0; i < argc && n < CORE_REC_MAX; i++)
        n += (size_t)snprintf(rec + n, CORE_REC_MAX - n, "[%s]", argv[i]);
    if (n < CORE_REC_MAX - 1) {
        rec[n++] = '\n';
        rec[n] = 0;
    }
}

static inline int core_report(int fd, int argc, const tfork_arg *argv,
                              const char *rec)
{
    size_t cap = 256 + strlen(rec) + (size_t)argc * (2 * CORE_HEX_MAX + 64);
    char *out = malloc(cap);
    size_t n;
    int r;

    if (!out)
        return -1;
    n = (size_t)snprintf(out, cap, "P %d %d %d\n%s", (int)getpid(),
                         (int)getppid(), core_count_fds(), rec);
    for (int i = 0; i < argc; i++) {
        const tfork_arg *a = &argv[i];

        if (a->fd >= 0) {
            char msg[64];
            int fl = fcntl(a->fd, F_GETFD);
            int m = snprintf(msg, sizeof msg, "fd%d:%d\n", i, (int)getpid());

            n += (size_t)snprintf(out + n, cap - n, "F %d %d\n", i,
                                  fl >= 0 && (fl & FD_CLOEXEC));
            /* a read end refuses: that is fine */
            (void)!write(a->fd, msg, (size_t)m);
            continue;
        }
        n += (size_t)snprintf(out + n, cap - n, "A %d %zu %d ", i, a->len,
                              a->buf != NULL && a->buf[a->len] == 0);
        if (!a->buf) {
            n += (size_t)snprintf(out + n, cap - n, "NULL\n");
        } else if (a->len <= CORE_HEX_MAX) {
            for (size_t j = 0; j < a->len; j++)
                n += (size_t)snprintf(out + n, cap - n, "%02x",
                                      (unsigned char)a->buf[j]);
            out[n++] = '\n';
        } else {
            n += (size_t)snprintf(out + n, cap - n, "H%016llx\n",
                                  (unsigned long long)core_fnv(a->buf,
                                                               a->len));
        }
    }
    r = core_write_all(fd, out, n);
    free(out);
    return r;
}

/* Reads the socket until EOF (the client closed its end). */
static inline void core_wait_eof(int fd)
{
    char b[256];

    for (;;) {
        ssize_t r = read(fd, b, sizeof b);

        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return;
    }
}

/* Reads the first fd arg until EOF and answers "echo:<data>" on it. */
static inline int core_echo(int argc, const tfork_arg *argv)
{
    char buf[4096] = "echo:";
    size_t n = 5;

    for (int i = 0; i < argc; i++) {
        if (argv[i].fd < 0)
            continue;
        for (;;) {
            ssize_t r = read(argv[i].fd, buf + n, sizeof buf - n);

            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                break;
            n += (size_t)r;
        }
        return core_write_all(argv[i].fd, buf, n) < 0 ? 1 : 0;
    }
    return 2;
}

/* Reads its own socket until EOF and answers "got:<data>" on it: the
 * client's bytes must arrive with nothing of the library's before them. */
static inline int core_sockecho(int fd)
{
    char buf[4096] = "got:";
    size_t n = 4;

    for (;;) {
        ssize_t r = read(fd, buf + n, sizeof buf - n);

        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    return core_write_all(fd, buf, n) < 0 ? 1 : 0;
}

static inline void core_sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

#endif
