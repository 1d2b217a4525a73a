/* check_proto.c: the wire protocol (src/proto.c) byte by byte, and the
 * frame reader and senders (src/fdpass.c) over real socketpairs, with
 * faults injected through tfork__sys.recvmsg / sendmsg. */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tfork-int.h"

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

#define MiB (1024u * 1024u)

/* ------------------------------------------------------------ helpers */

/* Open fds of this process, not counting the one used to list them. */
static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int n = 0;

    ck_assert_ptr_nonnull(d);
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1;
}

static int no_children(void)
{
    return waitpid(-1, NULL, WNOHANG) == -1 && errno == ECHILD;
}

/* Every test opens with CLEAN_BEGIN and ends with CLEAN_END: the fd table
 * is as it was and no child is left. */
#define CLEAN_BEGIN() int fds_at_start_ = count_fds()
#define CLEAN_END()                                                 \
    do {                                                            \
        ck_assert_int_eq(count_fds(), fds_at_start_);               \
        ck_assert_msg(no_children(), "a child process was left");   \
    } while (0)

static void xsocketpair(int sv[2])
{
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0,
                                sv), 0);
}

static void xpipe(int p[2])
{
    ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
}

static void xclose(int fd)
{
    ck_assert_int_eq(close(fd), 0);
}

static int is_cloexec(int fd)
{
    int f = fcntl(fd, F_GETFD);

    ck_assert_int_ge(f, 0);
    return (f & FD_CLOEXEC) != 0;
}

/* Bytes waiting in a socket. */
static int pending(int fd)
{
    int n = -1;

    ck_assert_int_eq(ioctl(fd, FIONREAD, &n), 0);
    return n;
}

/* The header, built here independently of tfork__hdr_put. */
static void mkhdr(unsigned char h[8], unsigned op, unsigned nfds,
                  uint32_t len)
{
    h[0] = (unsigned char)op;
    h[1] = (unsigned char)nfds;
    h[2] = 0;
    h[3] = 0;
    h[4] = (unsigned char)(len & 0xff);
    h[5] = (unsigned char)((len >> 8) & 0xff);
    h[6] = (unsigned char)((len >> 16) & 0xff);
    h[7] = (unsigned char)(len >> 24);
}

/* A frame in out (header and payload); its size. */
static size_t mkframe(unsigned char *out, unsigned op, unsigned nfds,
                      const void *payload, uint32_t len)
{
    mkhdr(out, op, nfds, len);
    if (len)
        memcpy(out + 8, payload, len);
    return 8 + (size_t)len;
}

/* One plain sendmsg (not the library's), fds on its first byte. */
static void xsend(int s, const void *buf, size_t len, const int *fds,
                  int nfds)
{
    union {
        struct cmsghdr h;
        char b[CMSG_SPACE(sizeof(int) * 32)];
    } u;
    struct iovec iov = { (void *)buf, len };
    struct msghdr m;

    ck_assert_int_le(nfds, 32);
    memset(&m, 0, sizeof m);
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    if (nfds > 0) {
        struct cmsghdr *c;

        memset(&u, 0, sizeof u);
        m.msg_control = u.b;
        m.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
        c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
    }
    ck_assert_int_eq(sendmsg(s, &m, MSG_NOSIGNAL), (ssize_t)len);
}

/* Plain recvmsg until len bytes came; fds collected into fds (cap 8). */
static void xrecv(int s, void *buf, size_t len, int *fds, int *nfds)
{
    size_t got = 0;

    *nfds = 0;
    while (got < len) {
        union {
            struct cmsghdr h;
            char b[CMSG_SPACE(sizeof(int) * 8)];
        } u;
        struct iovec iov = { (char *)buf + got, len - got };
        struct msghdr m;
        struct cmsghdr *c;
        ssize_t n;

        memset(&m, 0, sizeof m);
        m.msg_iov = &iov;
        m.msg_iovlen = 1;
        m.msg_control = u.b;
        m.msg_controllen = sizeof u.b;
        n = recvmsg(s, &m, MSG_CMSG_CLOEXEC);
        ck_assert_int_gt(n, 0);
        ck_assert_int_eq(m.msg_flags & MSG_CTRUNC, 0);
        for (c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
            size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);

            ck_assert_int_eq(c->cmsg_level, SOL_SOCKET);
            ck_assert_int_eq(c->cmsg_type, SCM_RIGHTS);
            for (size_t i = 0; i < k; i++) {
                ck_assert_int_lt(*nfds, 8);
                memcpy(&fds[(*nfds)++], CMSG_DATA(c) + i * sizeof(int),
                       sizeof(int));
            }
        }
        got += (size_t)n;
    }
}

/* Writes msg through wfd and reads it back from the pipe end rfd: wfd
 * really is that pipe's write end. */
static void check_pipe_link(int wfd, int rfd, const char *msg)
{
    char buf[64];
    size_t n = strlen(msg);

    ck_assert_int_eq(write(wfd, msg, n), (ssize_t)n);
    ck_assert_int_eq(read(rfd, buf, sizeof buf), (ssize_t)n);
    ck_assert_mem_eq(buf, msg, n);
}

/* Reads rfd to EOF (no writer is left): returns the bytes read, -1 if the
 * pipe still has a writer after waiting a long while. */
static int pipe_eof(int rfd)
{
    struct pollfd p = { rfd, POLLIN, 0 };
    char buf[64];
    int total = 0;

    for (;;) {
        ssize_t n;

        if (poll(&p, 1, 10000) != 1)
            return -1;
        n = read(rfd, buf, sizeof buf);
        if (n == 0)
            return total;
        if (n < 0)
            return -1;
        total += (int)n;
    }
}

/* Steps the reader until it reports something other than "would block",
 * polling in between; fails the test after 60 s. */
static int step_wait(tfork_rd *r, int fd)
{
    time_t deadline = time(NULL) + 60;

    for (;;) {
        struct pollfd p = { fd, POLLIN, 0 };
        int rc = tfork__rd_step(r, fd);

        if (rc != 0)
            return rc;
        ck_assert_msg(time(NULL) < deadline, "reader made no progress");
        poll(&p, 1, 1000);
    }
}

/* A copy of n bytes placed just before an inaccessible page: a decoder
 * that reads past the payload faults instead of passing by luck. */
struct guarded {
    unsigned char *map;     /* two pages and more */
    size_t maplen;
    unsigned char *p;       /* the copy, ending at the guard page */
};

static void guard_copy(struct guarded *g, const void *src, size_t n)
{
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    size_t data = (n + pg - 1) / pg * pg;

    if (!data)
        data = pg;
    g->maplen = data + pg;
    g->map = mmap(NULL, g->maplen, PROT_READ | PROT_WRITE,
                  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ck_assert_ptr_ne(g->map, MAP_FAILED);
    ck_assert_int_eq(mprotect(g->map + data, pg, PROT_NONE), 0);
    g->p = g->map + data - n;
    if (n)
        memcpy(g->p, src, n);
}

static void guard_free(struct guarded *g)
{
    ck_assert_int_eq(munmap(g->map, g->maplen), 0);
}

/* Runs fn in a child under RLIMIT_AS = its current size + 48 MiB, where a
 * 128 MiB malloc must fail (checked first, so the limit really bites).
 * fn returns 0 or a failure code (>= 1) that is reported. */
static void run_with_small_as(int (*fn)(void), const char *what)
{
    pid_t pid;
    int st;

    if (UNDER_ASAN)
        return;     /* the sanitizer's shadow mappings defeat RLIMIT_AS */
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        FILE *f = fopen("/proc/self/statm", "r");
        unsigned long pages = 0;
        struct rlimit rl;
        void *volatile big;     /* volatile: clang may not fold the test */

        if (!f || fscanf(f, "%lu", &pages) != 1)
            _exit(120);
        fclose(f);
        if (getrlimit(RLIMIT_AS, &rl))
            _exit(121);
        rl.rlim_cur = (rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE) +
                      48 * (rlim_t)MiB;
        if (setrlimit(RLIMIT_AS, &rl))
            _exit(122);
        big = malloc(128 * MiB);
        if (big)
            _exit(123);     /* the limit does not bite: test meaningless */
        _exit(fn());
    }
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(WIFEXITED(st), "%s: child died (status 0x%x)", what, st);
    ck_assert_msg(WEXITSTATUS(st) == 0, "%s: child failed with code %d",
                  what, WEXITSTATUS(st));
}

/* ------------------------------------------------------------ op table */

START_TEST(test_op_table)
{
    int known[256] = { 0 };
    int nknown = 0;

    /* every entry of the X-macro table, as the library reports it */
#define CHECK_OP(n, c, d, f)                                             \
    do {                                                                 \
        ck_assert_int_eq(TFORK_OP_##n, c);                               \
        ck_assert_ptr_nonnull(tfork__op_name(c));                        \
        ck_assert_str_eq(tfork__op_name(c), #n);                         \
        ck_assert_int_eq(tfork__op_fds(c), f);                           \
        ck_assert_int_eq(tfork__op_is_cmd(c), #d[0] == 'C' ? 1 : 0);     \
        ck_assert_int_lt(c, TFORK_OP_LIMIT);                             \
        ck_assert_msg(!known[c], "op code %d used twice", c);            \
        known[c] = 1;                                                    \
        nknown++;                                                        \
    } while (0);
    TFORK_OPS(CHECK_OP)
#undef CHECK_OP

    /* the wire codes are the protocol: pin them */
    ck_assert_int_eq(nknown, 13);
    ck_assert_int_eq(TFORK_OP_HELLO, 1);
    ck_assert_int_eq(TFORK_OP_REQUIRE, 2);
    ck_assert_int_eq(TFORK_OP_EVAL, 3);
    ck_assert_int_eq(TFORK_OP_ARG, 4);
    ck_assert_int_eq(TFORK_OP_ARGFD, 5);
    ck_assert_int_eq(TFORK_OP_FORK, 6);
    ck_assert_int_eq(TFORK_OP_RUN, 7);
    ck_assert_int_eq(TFORK_OP_EXEC, 8);
    ck_assert_int_eq(TFORK_OP_FORKED, 16);
    ck_assert_int_eq(TFORK_OP_EXIT, 17);
    ck_assert_int_eq(TFORK_OP_ERROR, 18);
    ck_assert_int_eq(TFORK_OP_RUNOK, 19);
    ck_assert_int_eq(TFORK_OP_EXECSTART, 20);
    ck_assert_int_eq(tfork__op_fds(TFORK_OP_ARGFD), 1);
    ck_assert_int_eq(tfork__op_fds(TFORK_OP_FORK), 1);

    /* everything else is unknown, far beyond the table too */
    for (unsigned op = 0; op < 4096; op++) {
        if (op < 256 && known[op])
            continue;
        ck_assert_ptr_null(tfork__op_name(op));
        ck_assert_int_eq(tfork__op_fds(op), -1);
        ck_assert_int_eq(tfork__op_is_cmd(op), -1);
    }
    ck_assert_ptr_null(tfork__op_name(UINT32_MAX));
}
END_TEST

/* ------------------------------------------------------------ header */

START_TEST(test_hdr_put_bytes)
{
    unsigned char h[8];
    static const unsigned char fork_hdr[8] = { 6, 1, 0, 0, 1, 2, 3, 4 };
    static const unsigned char run_hdr[8] = {
        7, 0, 0, 0, 0xd4, 0xc3, 0xb2, 0xa1 };
    static const unsigned char zero[8] = { 1, 0, 0, 0, 0, 0, 0, 0 };
    static const unsigned char max[8] = {
        20, 0, 0, 0, 0xff, 0xff, 0xff, 0xff };

    memset(h, 0xee, sizeof h);
    tfork__hdr_put(h, TFORK_OP_FORK, 1, 0x04030201u);
    ck_assert_mem_eq(h, fork_hdr, 8);
    memset(h, 0xee, sizeof h);
    tfork__hdr_put(h, TFORK_OP_RUN, 0, 0xa1b2c3d4u);
    ck_assert_mem_eq(h, run_hdr, 8);
    memset(h, 0xee, sizeof h);      /* reserved bytes are cleared */
    tfork__hdr_put(h, TFORK_OP_HELLO, 0, 0);
    ck_assert_mem_eq(h, zero, 8);
    tfork__hdr_put(h, TFORK_OP_EXECSTART, 0, UINT32_MAX);
    ck_assert_mem_eq(h, max, 8);
}
END_TEST

START_TEST(test_hdr_roundtrip_every_op)
{
    static const uint32_t lens[] = { 0, 1, 255, 256, 65536, 0x01020304u,
                                     TFORK_FRAME_MAX };
    int n = 0;

#define RT_OP(nm, c, d, f)                                                 \
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {            \
        unsigned char h[8], want[8];                                       \
        tfork_hdr out;                                                     \
        char err[256] = "untouched";                                       \
                                                                           \
        tfork__hdr_put(h, c, f, lens[i]);                                  \
        mkhdr(want, c, f, lens[i]);                                        \
        ck_assert_mem_eq(h, want, 8);                                      \
        memset(&out, 0xee, sizeof out);                                    \
        ck_assert_int_eq(tfork__hdr_get(h, #d[0] == 'C', &out, err,        \
                                        sizeof err), 0);                   \
        ck_assert_uint_eq(out.op, c);                                      \
        ck_assert_uint_eq(out.nfds, f);                                    \
        ck_assert_uint_eq(out.len, lens[i]);                               \
        ck_assert_str_eq(err, "untouched");                                \
        n++;                                                               \
    }
    TFORK_OPS(RT_OP)
#undef RT_OP
    ck_assert_int_eq(n, 13 * (int)(sizeof lens / sizeof lens[0]));
}
END_TEST

/* hdr_get on raw bytes: returns the code, message in err. */
static int hdr_get8(unsigned b0, unsigned b1, unsigned b2, unsigned b3,
                    uint32_t len, int cmd, tfork_hdr *h, char *err,
                    size_t errlen)
{
    unsigned char in[8];

    mkhdr(in, b0, b1, len);
    in[2] = (unsigned char)b2;
    in[3] = (unsigned char)b3;
    return tfork__hdr_get(in, cmd, h, err, errlen);
}

START_TEST(test_hdr_get_unknown_op)
{
    static const unsigned bad[] = { 0, 9, 15, 21, 31, 32, 128, 255 };
    tfork_hdr h;
    char err[256], want[256];

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_int_eq(hdr_get8(bad[i], 0, 0, 0, 0, 1, &h, err,
                                  sizeof err), -EPROTO);
        snprintf(want, sizeof want, "protocol error: unknown command op %u",
                 bad[i]);
        ck_assert_str_eq(err, want);
        ck_assert_int_eq(hdr_get8(bad[i], 0, 0, 0, 0, 0, &h, err,
                                  sizeof err), -EPROTO);
        snprintf(want, sizeof want, "protocol error: unknown reply op %u",
                 bad[i]);
        ck_assert_str_eq(err, want);
    }
}
END_TEST

START_TEST(test_hdr_get_wrong_direction)
{
    tfork_hdr h;
    char err[256], want[256];
    int n = 0;

    /* a reply where a command is expected and the other way round: each
     * op, with the fd count it would otherwise be fine with */
#define WRONG_DIR(nm, c, d, f)                                             \
    {                                                                      \
        int cmd = #d[0] == 'C';                                            \
                                                                           \
        ck_assert_int_eq(hdr_get8(c, f, 0, 0, 4, !cmd, &h, err,            \
                                  sizeof err), -EPROTO);                   \
        snprintf(want, sizeof want, "protocol error: unknown %s op %u",    \
                 cmd ? "reply" : "command", (unsigned)c);                  \
        ck_assert_str_eq(err, want);                                       \
        n++;                                                               \
    }
    TFORK_OPS(WRONG_DIR)
#undef WRONG_DIR
    ck_assert_int_eq(n, 13);
    ck_assert_int_eq(hdr_get8(TFORK_OP_FORKED, 0, 0, 0, 8, 1, &h, err,
                              sizeof err), -EPROTO);
    ck_assert_str_eq(err, "protocol error: unknown command op 16");
    ck_assert_int_eq(hdr_get8(TFORK_OP_HELLO, 0, 0, 0, 8, 0, &h, err,
                              sizeof err), -EPROTO);
    ck_assert_str_eq(err, "protocol error: unknown reply op 1");
}
END_TEST

START_TEST(test_hdr_get_reserved)
{
    tfork_hdr h;
    char err[256];

    ck_assert_int_eq(hdr_get8(TFORK_OP_RUN, 0, 1, 0, 5, 1, &h, err,
                              sizeof err), -EPROTO);
    ck_assert_str_eq(err, "protocol error: reserved header bytes set in "
                     "RUN frame");
    ck_assert_int_eq(hdr_get8(TFORK_OP_RUN, 0, 0, 0x80, 5, 1, &h, err,
                              sizeof err), -EPROTO);
    ck_assert_str_eq(err, "protocol error: reserved header bytes set in "
                     "RUN frame");
    ck_assert_int_eq(hdr_get8(TFORK_OP_EXIT, 0, 0xff, 0xff, 8, 0, &h, err,
                              sizeof err), -EPROTO);
    ck_assert_str_eq(err, "protocol error: reserved header bytes set in "
                     "EXIT frame");
}
END_TEST

START_TEST(test_hdr_get_fd_count)
{
    tfork_hdr h;
    char err[256];

    ck_assert_int_eq(hdr_get8(TFORK_OP_RUN, 1, 0, 0, 5, 1, &h, err,
                              sizeof err), -EPROTO);
    ck_assert_str_eq(err, "protocol error: RUN frame with 1 fds (takes 0)");
    ck_assert_int_eq(hdr_get8(TFORK_OP_ARGFD, 0, 0, 0, 0, 1, &h, err,
                              sizeof err), -EPROTO);
    ck_assert_str_eq(err, "protocol error: ARGFD frame with 0 fds "
                     "(takes 1)");
    ck_assert_int_eq(hdr_get8(TFORK_OP_FORK, 2, 0, 0, 8, 1, &h, err,
                              sizeof err), -EPROTO);
    ck_assert_str_eq(err, "protocol error: FORK frame with 2 fds (takes 1)");
    ck_assert_int_eq(hdr_get8(TFORK_OP_ARG, 255, 0, 0, 8, 1, &h, err,
                              sizeof err), -EPROTO);
    ck_assert_str_eq(err, "protocol error: ARG frame with 255 fds "
                     "(takes 0)");
    /* FORKED may carry one fd (a pidfd) or none, never two */
    ck_assert_int_eq(hdr_get8(TFORK_OP_FORKED, 1, 0, 0, 8, 0, &h, err,
                              sizeof err), 0);
    ck_assert_uint_eq(h.nfds, 1);
    ck_assert_int_eq(hdr_get8(TFORK_OP_FORKED, 0, 0, 0, 8, 0, &h, err,
                              sizeof err), 0);
    ck_assert_uint_eq(h.nfds, 0);
    ck_assert_int_eq(hdr_get8(TFORK_OP_FORKED, 2, 0, 0, 8, 0, &h, err,
                              sizeof err), -EPROTO);
    ck_assert_str_eq(err, "protocol error: FORKED frame with 2 fds "
                     "(takes 0)");
    ck_assert_int_eq(hdr_get8(TFORK_OP_EXIT, 1, 0, 0, 8, 0, &h, err,
                              sizeof err), -EPROTO);
    ck_assert_str_eq(err, "protocol error: EXIT frame with 1 fds (takes 0)");
}
END_TEST

START_TEST(test_hdr_get_len_cap)
{
    tfork_hdr h;
    char err[256], want[256];

    ck_assert_uint_eq(TFORK_FRAME_MAX, (64u << 20) + 65536u);
    ck_assert_int_eq(hdr_get8(TFORK_OP_ARG, 0, 0, 0, TFORK_FRAME_MAX, 1,
                              &h, err, sizeof err), 0);
    ck_assert_uint_eq(h.len, TFORK_FRAME_MAX);
    ck_assert_int_eq(hdr_get8(TFORK_OP_ARG, 0, 0, 0, TFORK_FRAME_MAX + 1, 1,
                              &h, err, sizeof err), -EPROTO);
    ck_assert_str_eq(err, "protocol error: ARG frame of 67174401 bytes "
                     "exceeds the 67174400 byte cap");
    ck_assert_int_eq(hdr_get8(TFORK_OP_ERROR, 0, 0, 0, UINT32_MAX, 0,
                              &h, err, sizeof err), -EPROTO);
    snprintf(want, sizeof want, "protocol error: ERROR frame of %lu bytes "
             "exceeds the %u byte cap", (unsigned long)UINT32_MAX,
             TFORK_FRAME_MAX);
    ck_assert_str_eq(err, want);
}
END_TEST

START_TEST(test_hdr_get_short_errbuf)
{
    tfork_hdr h;
    char err[16];

    memset(err, 'x', sizeof err);
    ck_assert_int_eq(hdr_get8(0, 0, 0, 0, 0, 1, &h, err, 10), -EPROTO);
    ck_assert_str_eq(err, "protocol ");
    ck_assert_int_eq(err[10], 'x');     /* nothing written past errlen */
}
END_TEST

/* ------------------------------------------------------------ encoders */

START_TEST(test_buf_eval_bytes)
{
    static const unsigned char want[] = {
        3, 0, 0, 0, 22, 0, 0, 0,                /* EVAL, 22 bytes */
        2, 0, 0, 0, 'f', 'n', 0,                /* str "fn" */
        2, 0, 0, 0,                             /* argc */
        1, 0, 0, 0, 'a', 0,                     /* "a" */
        0, 0, 0, 0, 0,                          /* "" */
    };
    tfork_buf b;

    tfork__buf_frame(&b, TFORK_OP_EVAL, 0);
    tfork__buf_str(&b, "fn", 2);
    tfork__buf_u32(&b, 2);
    tfork__buf_str(&b, "a", 1);
    tfork__buf_str(&b, "", 0);
    ck_assert_int_eq(tfork__buf_end(&b), 0);
    ck_assert_uint_eq(b.len, sizeof want);
    ck_assert_mem_eq(b.p, want, sizeof want);
    tfork__buf_free(&b);
    ck_assert_ptr_null(b.p);
    ck_assert_uint_eq(b.len, 0);
}
END_TEST

START_TEST(test_buf_hello_bytes)
{
    static const unsigned char want[] = {
        1, 0, 0, 0, 8, 0, 0, 0, 'T', 'F', 'R', 'K', 1, 0, 0, 0 };
    tfork_buf b;

    tfork__buf_frame(&b, TFORK_OP_HELLO, 0);
    tfork__buf_u32(&b, TFORK_PROTO_MAGIC);
    tfork__buf_u32(&b, TFORK_PROTO_VERSION);
    ck_assert_int_eq(tfork__buf_end(&b), 0);
    ck_assert_uint_eq(b.len, sizeof want);
    ck_assert_mem_eq(b.p, want, sizeof want);
    tfork__buf_free(&b);
}
END_TEST

START_TEST(test_buf_u32_le)
{
    static const unsigned char want[] = {
        16, 0, 0, 0, 12, 0, 0, 0,
        0xef, 0xbe, 0xad, 0xde, 0xfb, 0xff, 0xff, 0xff, 0, 0, 0, 0 };
    tfork_buf b;

    tfork__buf_frame(&b, TFORK_OP_FORKED, 0);
    tfork__buf_u32(&b, 0xdeadbeefu);
    tfork__buf_u32(&b, (uint32_t)(int32_t)-5);
    tfork__buf_u32(&b, 0);
    ck_assert_int_eq(tfork__buf_end(&b), 0);
    ck_assert_uint_eq(b.len, sizeof want);
    ck_assert_mem_eq(b.p, want, sizeof want);
    tfork__buf_free(&b);
}
END_TEST

START_TEST(test_buf_str_embedded_nul_and_raw)
{
    static const unsigned char str[] = {
        7, 0, 0, 0, 12, 0, 0, 0, 3, 0, 0, 0, 'a', 0, 'b', 0, 0xff, 0, 'z', 0 };
    static const unsigned char raw[] = {
        4, 0, 0, 0, 5, 0, 0, 0, 0, 0xff, 'x', 0, 0x80 };
    static const unsigned char empty[] = { 4, 0, 0, 0, 0, 0, 0, 0 };
    tfork_buf b;

    /* a string's length counts every byte, NULs too; the terminating
     * NUL is added and not counted */
    tfork__buf_frame(&b, TFORK_OP_RUN, 0);
    tfork__buf_str(&b, "a\0b", 3);
    tfork__buf_raw(&b, "\xff\0z\0", 4);
    ck_assert_int_eq(tfork__buf_end(&b), 0);
    ck_assert_uint_eq(b.len, sizeof str);
    ck_assert_mem_eq(b.p, str, sizeof str);
    tfork__buf_free(&b);

    /* raw octets go as they are, no NUL appended */
    tfork__buf_frame(&b, TFORK_OP_ARG, 0);
    tfork__buf_raw(&b, "\0\xffx\0\x80", 5);
    ck_assert_int_eq(tfork__buf_end(&b), 0);
    ck_assert_uint_eq(b.len, sizeof raw);
    ck_assert_mem_eq(b.p, raw, sizeof raw);
    tfork__buf_free(&b);

    tfork__buf_frame(&b, TFORK_OP_ARG, 0);
    tfork__buf_raw(&b, NULL, 0);
    ck_assert_int_eq(tfork__buf_end(&b), 0);
    ck_assert_uint_eq(b.len, sizeof empty);
    ck_assert_mem_eq(b.p, empty, sizeof empty);
    tfork__buf_free(&b);
}
END_TEST

START_TEST(test_buf_grows)
{
    tfork_buf b;
    const uint32_t n = 100000;

    tfork__buf_frame(&b, TFORK_OP_ARG, 0);
    for (uint32_t i = 0; i < n; i++)
        tfork__buf_u32(&b, i * 2654435761u);
    ck_assert_int_eq(tfork__buf_end(&b), 0);
    ck_assert_uint_eq(b.len, 8 + 4 * (size_t)n);
    ck_assert_uint_ge(b.cap, b.len);
    ck_assert_uint_eq(b.p[4] | b.p[5] << 8 | b.p[6] << 16 |
                      (uint32_t)b.p[7] << 24, 4 * n);
    for (uint32_t i = 0; i < n; i++) {
        const unsigned char *q = b.p + 8 + 4 * (size_t)i;
        uint32_t v = i * 2654435761u;

        ck_assert_uint_eq(q[0], v & 0xff);
        ck_assert_uint_eq(q[1], (v >> 8) & 0xff);
        ck_assert_uint_eq(q[2], (v >> 16) & 0xff);
        ck_assert_uint_eq(q[3], v >> 24);
    }
    tfork__buf_free(&b);
}
END_TEST

START_TEST(test_buf_end_cap)
{
    static const unsigned char cap_hdr[8] = { 4, 0, 0, 0, 0, 0, 1, 4 };
    unsigned char *chunk = calloc(1, MiB);
    tfork_buf b;

    ck_assert_ptr_nonnull(chunk);
    /* exactly TFORK_FRAME_MAX payload bytes: fine */
    tfork__buf_frame(&b, TFORK_OP_ARG, 0);
    for (unsigned i = 0; i < 64; i++)
        tfork__buf_raw(&b, chunk, MiB);
    tfork__buf_raw(&b, chunk, 65536);
    ck_assert_int_eq(tfork__buf_end(&b), 0);
    ck_assert_uint_eq(b.len, 8 + (size_t)TFORK_FRAME_MAX);
    ck_assert_mem_eq(b.p, cap_hdr, 8);
    /* one more: -E2BIG, and the buffer is freed */
    tfork__buf_raw(&b, "x", 1);
    ck_assert_int_eq(tfork__buf_end(&b), -E2BIG);
    ck_assert_ptr_null(b.p);
    ck_assert_uint_eq(b.len, 0);
    ck_assert_uint_eq(b.cap, 0);
    tfork__buf_free(&b);    /* harmless after that */
    free(chunk);
}
END_TEST

START_TEST(test_buf_end_oom)
{
    tfork_buf b;

    /* a string too long for the u32 length voids the frame; the length
     * is checked before the bytes are touched */
    if (SIZE_MAX <= UINT32_MAX)
        return;
    tfork__buf_frame(&b, TFORK_OP_RUN, 0);
    tfork__buf_str(&b, "", (size_t)UINT32_MAX + 1);
    ck_assert_int_ne(b.oom, 0);
    tfork__buf_u32(&b, 1);      /* ignored once void */
    ck_assert_int_eq(tfork__buf_end(&b), -ENOMEM);
    ck_assert_ptr_null(b.p);
    ck_assert_uint_eq(b.len, 0);
}
END_TEST

/* ------------------------------------------------------------ decoders */

/* Decodes an EVAL payload as serve does; 0 or -EPROTO.  Fills the outs on
 * success (argv malloc'ed, pointing into p). */
static int decode_eval(const void *p, size_t len, const char **name,
                       char ***argv, uint32_t *argc)
{
    tfork_cur c;
    int r1, r2, r;

    tfork__cur_init(&c, p, len);
    r1 = tfork__cur_str(&c, name, NULL);
    r2 = tfork__cur_list(&c, TFORK_LIST_MAX, argv, argc);
    r = tfork__cur_done(&c);
    if (r1 || r2) {
        ck_assert_int_eq(r, -EPROTO);
        ck_assert_int_ne(c.bad, 0);
    }
    if (r2) {
        ck_assert_int_eq(r2, -EPROTO);
        ck_assert_ptr_null(*argv);
        ck_assert_uint_eq(*argc, 0);
    }
    if (r) {
        free(*argv);
        *argv = NULL;
    }
    return r;
}

/* An EXEC payload: u32 flags, str path, list argv, list envp if flagged. */
static int decode_exec(const void *p, size_t len, uint32_t *flags,
                       const char **path, char ***argv, uint32_t *argc,
                       char ***envp, uint32_t *envc)
{
    tfork_cur c;
    int r;

    *envp = NULL;
    *envc = 0;
    tfork__cur_init(&c, p, len);
    tfork__cur_u32(&c, flags);
    tfork__cur_str(&c, path, NULL);
    if (tfork__cur_list(&c, TFORK_LIST_MAX, argv, argc) == 0 &&
        (*flags & TFORK_EXEC_ENVP))
        tfork__cur_list(&c, TFORK_LIST_MAX, envp, envc);
    r = tfork__cur_done(&c);
    if (r) {
        free(*argv);
        free(*envp);
        *argv = *envp = NULL;
    }
    return r;
}

static void build_eval(tfork_buf *b)
{
    tfork__buf_frame(b, TFORK_OP_EVAL, 0);
    tfork__buf_str(b, "init_module", 11);
    tfork__buf_u32(b, 4);
    tfork__buf_str(b, "one", 3);
    tfork__buf_str(b, "", 0);
    tfork__buf_str(b, "three", 5);
    tfork__buf_str(b, "--x=\xc3\xa9", 6);
    ck_assert_int_eq(tfork__buf_end(b), 0);
}

static void build_exec(tfork_buf *b, int with_env)
{
    tfork__buf_frame(b, TFORK_OP_EXEC, 0);
    tfork__buf_u32(b, with_env ? TFORK_EXEC_ENVP : 0);
    tfork__buf_str(b, "/bin/echo", 9);
    tfork__buf_u32(b, 3);
    tfork__buf_str(b, "echo", 4);
    tfork__buf_str(b, "hello", 5);
    tfork__buf_str(b, "", 0);
    if (with_env) {
        tfork__buf_u32(b, 2);
        tfork__buf_str(b, "A=1", 3);
        tfork__buf_str(b, "PATH=/bin", 9);
    }
    ck_assert_int_eq(tfork__buf_end(b), 0);
}

START_TEST(test_cur_roundtrip)
{
    tfork_buf b;
    tfork_cur c;
    uint32_t u, n;
    int32_t i;
    const char *s;
    size_t slen;
    char **v;
    const unsigned char *pl;
    size_t plen;

    tfork__buf_frame(&b, TFORK_OP_ERROR, 0);
    tfork__buf_u32(&b, 0xdeadbeefu);
    tfork__buf_u32(&b, (uint32_t)-ENOENT);
    tfork__buf_u32(&b, 0x80000000u);
    tfork__buf_str(&b, "hello, world", 12);
    tfork__buf_str(&b, "a\0b", 3);
    tfork__buf_u32(&b, 3);
    tfork__buf_str(&b, "x", 1);
    tfork__buf_str(&b, "", 0);
    tfork__buf_str(&b, "yz", 2);
    tfork__buf_u32(&b, 0);
    ck_assert_int_eq(tfork__buf_end(&b), 0);
    pl = b.p + 8;
    plen = b.len - 8;

    tfork__cur_init(&c, pl, plen);
    ck_assert_int_eq(tfork__cur_u32(&c, &u), 0);
    ck_assert_uint_eq(u, 0xdeadbeefu);
    ck_assert_int_eq(tfork__cur_i32(&c, &i), 0);
    ck_assert_int_eq(i, -ENOENT);
    ck_assert_int_eq(tfork__cur_i32(&c, &i), 0);
    ck_assert_int_eq(i, INT32_MIN);
    ck_assert_int_eq(tfork__cur_str(&c, &s, &slen), 0);
    ck_assert_uint_eq(slen, 12);
    ck_assert_str_eq(s, "hello, world");
    /* in place: the string points into the payload */
    ck_assert_ptr_eq(s, (const char *)pl + 16);
    ck_assert_int_eq(tfork__cur_str(&c, &s, &slen), 0);
    ck_assert_uint_eq(slen, 3);
    ck_assert_mem_eq(s, "a\0b\0", 4);
    ck_assert_int_eq(tfork__cur_list(&c, 3, &v, &n), 0);
    ck_assert_uint_eq(n, 3);
    ck_assert_str_eq(v[0], "x");
    ck_assert_str_eq(v[1], "");
    ck_assert_str_eq(v[2], "yz");
    ck_assert_ptr_null(v[3]);
    ck_assert(v[0] > (const char *)pl && v[2] < (const char *)pl + plen);
    free(v);
    ck_assert_int_eq(tfork__cur_list(&c, 0, &v, &n), 0);
    ck_assert_uint_eq(n, 0);
    ck_assert_ptr_nonnull(v);
    ck_assert_ptr_null(v[0]);
    free(v);
    ck_assert_int_eq(c.bad, 0);
    ck_assert_int_eq(tfork__cur_done(&c), 0);
    tfork__buf_free(&b);
}
END_TEST

START_TEST(test_cur_truncated_eval)
{
    tfork_buf b;
    const char *name;
    char **argv;
    uint32_t argc;
    size_t plen;
    struct guarded g;

    build_eval(&b);
    plen = b.len - 8;
    ck_assert_uint_eq(plen, 4 + 12 + 4 + 8 + 5 + 10 + 11);

    /* the whole payload, ending at a guard page */
    guard_copy(&g, b.p + 8, plen);
    ck_assert_int_eq(decode_eval(g.p, plen, &name, &argv, &argc), 0);
    ck_assert_str_eq(name, "init_module");
    ck_assert_uint_eq(argc, 4);
    ck_assert_str_eq(argv[0], "one");
    ck_assert_str_eq(argv[1], "");
    ck_assert_str_eq(argv[2], "three");
    ck_assert_str_eq(argv[3], "--x=\xc3\xa9");
    ck_assert_ptr_null(argv[4]);
    free(argv);
    guard_free(&g);

    /* every proper prefix fails cleanly, without reading past its end */
    for (size_t k = 0; k < plen; k++) {
        guard_copy(&g, b.p + 8, k);
        argv = (char **)&argv;      /* must be reset to NULL */
        ck_assert_msg(decode_eval(g.p, k, &name, &argv, &argc) == -EPROTO,
                      "EVAL prefix of %zu bytes accepted", k);
        ck_assert_ptr_null(argv);
        guard_free(&g);
    }
    tfork__buf_free(&b);
}
END_TEST

START_TEST(test_cur_truncated_exec)
{
    for (int env = 0; env < 2; env++) {
        tfork_buf b;
        uint32_t flags, argc, envc;
        const char *path;
        char **argv, **envp;
        size_t plen;
        struct guarded g;

        build_exec(&b, env);
        plen = b.len - 8;
        guard_copy(&g, b.p + 8, plen);
        ck_assert_int_eq(decode_exec(g.p, plen, &flags, &path, &argv, &argc,
                                     &envp, &envc), 0);
        ck_assert_uint_eq(flags, env ? TFORK_EXEC_ENVP : 0);
        ck_assert_str_eq(path, "/bin/echo");
        ck_assert_uint_eq(argc, 3);
        ck_assert_str_eq(argv[0], "echo");
        ck_assert_str_eq(argv[1], "hello");
        ck_assert_str_eq(argv[2], "");
        ck_assert_ptr_null(argv[3]);
        if (env) {
            ck_assert_uint_eq(envc, 2);
            ck_assert_str_eq(envp[0], "A=1");
            ck_assert_str_eq(envp[1], "PATH=/bin");
            ck_assert_ptr_null(envp[2]);
        } else {
            ck_assert_ptr_null(envp);
        }
        free(argv);
        free(envp);
        guard_free(&g);

        for (size_t k = 0; k < plen; k++) {
            guard_copy(&g, b.p + 8, k);
            ck_assert_msg(decode_exec(g.p, k, &flags, &path, &argv, &argc,
                                      &envp, &envc) == -EPROTO,
                          "EXEC (env %d) prefix of %zu bytes accepted",
                          env, k);
            ck_assert_ptr_null(argv);
            ck_assert_ptr_null(envp);
            guard_free(&g);
        }
        tfork__buf_free(&b);
    }
}
END_TEST

START_TEST(test_cur_str_missing_nul)
{
    static const unsigned char nonul[] = {
        3, 0, 0, 0, 'a', 'b', 'c', 'X', 1, 0, 0, 0 };
    static const unsigned char beyond[] = { 5, 0, 0, 0, 'a', 'b', 0 };
    static const unsigned char huge[] = { 0xff, 0xff, 0xff, 0xff, 'a', 0 };
    static const unsigned char empty[] = { 0, 0, 0, 0, 0 };
    static const unsigned char nulonly[] = { 0, 0, 0, 0, 'x' };
    tfork_cur c;
    const char *s;
    size_t len;
    uint32_t u;
    struct guarded g;

    /* the byte after the string is not NUL: refused, and the cursor stays
     * bad although 4 more bytes would make a u32 */
    guard_copy(&g, nonul, sizeof nonul);
    tfork__cur_init(&c, g.p, sizeof nonul);
    len = 99;
    ck_assert_int_eq(tfork__cur_str(&c, &s, &len), -EPROTO);
    ck_assert_ptr_null(s);
    ck_assert_uint_eq(len, 0);
    ck_assert_int_ne(c.bad, 0);
    ck_assert_int_eq(tfork__cur_u32(&c, &u), -EPROTO);
    ck_assert_uint_eq(u, 0);
    ck_assert_int_eq(tfork__cur_done(&c), -EPROTO);
    guard_free(&g);

    /* a length beyond the payload */
    guard_copy(&g, beyond, sizeof beyond);
    tfork__cur_init(&c, g.p, sizeof beyond);
    ck_assert_int_eq(tfork__cur_str(&c, &s, NULL), -EPROTO);
    ck_assert_int_eq(tfork__cur_done(&c), -EPROTO);
    guard_free(&g);

    guard_copy(&g, huge, sizeof huge);
    tfork__cur_init(&c, g.p, sizeof huge);
    ck_assert_int_eq(tfork__cur_str(&c, &s, NULL), -EPROTO);
    ck_assert_ptr_null(s);
    guard_free(&g);

    /* an empty string is 5 bytes; with a non-NUL there it is refused */
    guard_copy(&g, empty, sizeof empty);
    tfork__cur_init(&c, g.p, sizeof empty);
    ck_assert_int_eq(tfork__cur_str(&c, &s, &len), 0);
    ck_assert_str_eq(s, "");
    ck_assert_uint_eq(len, 0);
    ck_assert_int_eq(tfork__cur_done(&c), 0);
    guard_free(&g);

    guard_copy(&g, nulonly, sizeof nulonly);
    tfork__cur_init(&c, g.p, sizeof nulonly);
    ck_assert_int_eq(tfork__cur_str(&c, &s, &len), -EPROTO);
    guard_free(&g);
}
END_TEST

START_TEST(test_cur_short_ints)
{
    static const unsigned char neg[] = { 0xfb, 0xff, 0xff, 0xff };
    tfork_cur c;
    uint32_t u;
    int32_t i;
    struct guarded g;

    guard_copy(&g, neg, sizeof neg);
    tfork__cur_init(&c, g.p, 4);
    ck_assert_int_eq(tfork__cur_i32(&c, &i), 0);
    ck_assert_int_eq(i, -5);
    ck_assert_int_eq(tfork__cur_done(&c), 0);
    ck_assert_int_eq(tfork__cur_i32(&c, &i), -EPROTO);
    ck_assert_int_eq(i, 0);
    ck_assert_int_eq(tfork__cur_done(&c), -EPROTO);
    guard_free(&g);

    for (size_t k = 0; k < 4; k++) {
        guard_copy(&g, neg, k);
        tfork__cur_init(&c, g.p, k);
        u = 7;
        ck_assert_int_eq(tfork__cur_u32(&c, &u), -EPROTO);
        ck_assert_uint_eq(u, 0);
        ck_assert_int_eq(tfork__cur_done(&c), -EPROTO);
        guard_free(&g);
    }
    /* an empty payload is done; any getter on it is not */
    tfork__cur_init(&c, "", 0);
    ck_assert_int_eq(tfork__cur_done(&c), 0);
}
END_TEST

START_TEST(test_cur_list_bad_counts)
{
    unsigned char pl[64];
    tfork_cur c;
    char **v;
    uint32_t n;
    struct guarded g;

    /* count 0xFFFFFFFF and no limit from max: refused by what the payload
     * could hold, and nothing is returned */
    memset(pl, 0, sizeof pl);
    pl[0] = pl[1] = pl[2] = pl[3] = 0xff;
    guard_copy(&g, pl, 4 + 20);
    tfork__cur_init(&c, g.p, 4 + 20);
    v = (char **)&v;
    n = 9;
    ck_assert_int_eq(tfork__cur_list(&c, UINT32_MAX, &v, &n), -EPROTO);
    ck_assert_ptr_null(v);
    ck_assert_uint_eq(n, 0);
    ck_assert_int_eq(tfork__cur_done(&c), -EPROTO);
    guard_free(&g);

    /* 5 empty strings fit in 25 bytes; 6 do not */
    pl[0] = 6;
    pl[1] = pl[2] = pl[3] = 0;
    guard_copy(&g, pl, 4 + 25);
    tfork__cur_init(&c, g.p, 4 + 25);
    ck_assert_int_eq(tfork__cur_list(&c, UINT32_MAX, &v, &n), -EPROTO);
    ck_assert_ptr_null(v);
    guard_free(&g);
    pl[0] = 5;
    guard_copy(&g, pl, 4 + 25);
    tfork__cur_init(&c, g.p, 4 + 25);
    ck_assert_int_eq(tfork__cur_list(&c, UINT32_MAX, &v, &n), 0);
    ck_assert_uint_eq(n, 5);
    for (int i = 0; i < 5; i++)
        ck_assert_str_eq(v[i], "");
    ck_assert_ptr_null(v[5]);
    free(v);
    ck_assert_int_eq(tfork__cur_done(&c), 0);
    guard_free(&g);

    /* over max */
    tfork__cur_init(&c, pl, 4 + 25);
    ck_assert_int_eq(tfork__cur_list(&c, 4, &v, &n), -EPROTO);
    ck_assert_ptr_null(v);
    ck_assert_uint_eq(n, 0);
    ck_assert_int_eq(tfork__cur_done(&c), -EPROTO);

    /* the count passes the size test but the second string is broken:
     * the array allocated for it is released, nothing returned */
    {
        static const unsigned char two[] = {
            2, 0, 0, 0, 1, 0, 0, 0, 'a', 0, 3, 0, 0, 0, 'b', 'c', 'd' };

        guard_copy(&g, two, sizeof two);
        tfork__cur_init(&c, g.p, sizeof two);
        ck_assert_int_eq(tfork__cur_list(&c, 8, &v, &n), -EPROTO);
        ck_assert_ptr_null(v);
        ck_assert_uint_eq(n, 0);
        ck_assert_int_eq(tfork__cur_done(&c), -EPROTO);
        guard_free(&g);
    }

    /* TFORK_LIST_MAX is what serve passes */
    ck_assert_uint_eq(TFORK_LIST_MAX, 65536);
}
END_TEST

/* In a child with a small address space: a list count needing a 128 MiB
 * array (or 32 GiB) is refused as a protocol error, not tried. */
static int list_no_alloc_child(void)
{
    unsigned char pl[4 + 40];
    tfork_cur c;
    char **v;
    uint32_t n;
    int r;

    memset(pl, 0, sizeof pl);
    pl[3] = 0x01;                   /* 0x01000000 strings */
    tfork__cur_init(&c, pl, sizeof pl);
    r = tfork__cur_list(&c, UINT32_MAX, &v, &n);
    if (r == -ENOMEM)
        return 1;
    if (r != -EPROTO || v)
        return 2;
    memset(pl, 0xff, 4);            /* 0xFFFFFFFF strings */
    tfork__cur_init(&c, pl, sizeof pl);
    r = tfork__cur_list(&c, UINT32_MAX, &v, &n);
    if (r == -ENOMEM)
        return 3;
    if (r != -EPROTO || v)
        return 4;
    return 0;
}

START_TEST(test_cur_list_no_alloc)
{
    CLEAN_BEGIN();
    run_with_small_as(list_no_alloc_child, "list count 0x01000000");
    CLEAN_END();
}
END_TEST

START_TEST(test_cur_done_trailing)
{
    tfork_buf b;
    tfork_cur c;
    const char *s;
    unsigned char *pl;
    size_t plen;

    tfork__buf_frame(&b, TFORK_OP_REQUIRE, 0);
    tfork__buf_str(&b, "/lib/mod.so", 11);
    ck_assert_int_eq(tfork__buf_end(&b), 0);
    plen = b.len - 8;
    pl = malloc(plen + 1);
    ck_assert_ptr_nonnull(pl);
    memcpy(pl, b.p + 8, plen);
    pl[plen] = 'G';     /* one byte of trailing garbage */

    tfork__cur_init(&c, pl, plen);
    ck_assert_int_eq(tfork__cur_str(&c, &s, NULL), 0);
    ck_assert_str_eq(s, "/lib/mod.so");
    ck_assert_int_eq(tfork__cur_done(&c), 0);

    tfork__cur_init(&c, pl, plen + 1);
    ck_assert_int_eq(tfork__cur_str(&c, &s, NULL), 0);
    ck_assert_str_eq(s, "/lib/mod.so");
    ck_assert_int_eq(c.bad, 0);
    ck_assert_int_eq(tfork__cur_done(&c), -EPROTO);

    /* HELLO with 4 extra bytes */
    tfork__cur_init(&c, "TFRK\1\0\0\0\0\0\0\0", 12);
    {
        uint32_t magic, version;

        ck_assert_int_eq(tfork__cur_u32(&c, &magic), 0);
        ck_assert_uint_eq(magic, TFORK_PROTO_MAGIC);
        ck_assert_int_eq(tfork__cur_u32(&c, &version), 0);
        ck_assert_uint_eq(version, 1);
        ck_assert_int_eq(tfork__cur_done(&c), -EPROTO);
    }
    free(pl);
    tfork__buf_free(&b);
}
END_TEST

/* ------------------------------------------------------------ reader */

START_TEST(test_rd_split_bytes)
{
    unsigned char fr[64], pl[8] = { 7, 0, 0, 0, 1, 0, 0, 0 };
    int sv[2], p[2], base;
    size_t len;
    tfork_rd r;
    CLEAN_BEGIN();

    xsocketpair(sv);
    xpipe(p);
    base = count_fds();
    /* FORK (id 7, NEWROOT) with the fd on its first byte, then the rest
     * one byte per write; the reader says "would block" until the last */
    len = mkframe(fr, TFORK_OP_FORK, 1, pl, 8);
    tfork__rd_init(&r, 1);
    for (size_t i = 0; i < len; i++) {
        xsend(sv[0], fr + i, 1, &p[1], i == 0);
        if (i + 1 < len)
            ck_assert_int_eq(tfork__rd_step(&r, sv[1]), 0);
    }
    ck_assert_int_eq(tfork__rd_step(&r, sv[1]), 1);
    ck_assert_uint_eq(r.h.op, TFORK_OP_FORK);
    ck_assert_uint_eq(r.h.nfds, 1);
    ck_assert_uint_eq(r.h.len, 8);
    ck_assert_mem_eq(r.payload, pl, 8);
    ck_assert_int_eq(r.payload[8], 0);
    ck_assert_int_eq(r.nfds, 1);
    ck_assert_int_ge(r.fds[0], 0);
    ck_assert_int_eq(count_fds(), base + 1);
    ck_assert(is_cloexec(r.fds[0]));
    check_pipe_link(r.fds[0], p[0], "split");
    ck_assert_int_eq(pending(sv[1]), 0);
    tfork__rd_next(&r);     /* closes the fd nobody took */
    ck_assert_int_eq(count_fds(), base);

    /* a reply (EXIT) split the same way, through a reply reader */
    {
        unsigned char ex[8] = { 0x39, 0x30, 0, 0, 0, 0x0b, 0, 0 };

        tfork__rd_free(&r);
        tfork__rd_init(&r, 0);
        len = mkframe(fr, TFORK_OP_EXIT, 0, ex, 8);
        for (size_t i = 0; i < len; i++) {
            xsend(sv[0], fr + i, 1, NULL, 0);
            ck_assert_int_eq(tfork__rd_step(&r, sv[1]), i + 1 == len);
        }
        ck_assert_uint_eq(r.h.op, TFORK_OP_EXIT);
        ck_assert_mem_eq(r.payload, ex, 8);
        ck_assert_int_eq(r.nfds, 0);
    }
    tfork__rd_free(&r);
    xclose(sv[0]);
    xclose(sv[1]);
    xclose(p[0]);
    xclose(p[1]);
    CLEAN_END();
}
END_TEST

/* payload lengths of the first frame in test_rd_no_read_ahead */
static const uint32_t ahead_lens[] = { 0, 5, 65535, 65536, 70000 };

START_TEST(test_rd_no_read_ahead)
{
    uint32_t plen = ahead_lens[_i];
    unsigned char *fr = malloc(8 + (size_t)plen), fr2[8];
    unsigned char *pl = malloc(plen + 1);
    int sv[2], p[2], base, fd;
    size_t len;
    tfork_rd r;
    CLEAN_BEGIN();

    ck_assert_ptr_nonnull(fr);
    ck_assert_ptr_nonnull(pl);
    for (uint32_t i = 0; i < plen; i++)
        pl[i] = (unsigned char)(i * 7 + 1);
    xsocketpair(sv);
    xpipe(p);
    /* frame 1: ARG, no fd; frame 2: ARGFD carrying the pipe's write end.
     * Both are in the socket before the reader starts. */
    len = mkframe(fr, TFORK_OP_ARG, 0, pl, plen);
    xsend(sv[0], fr, len, NULL, 0);
    mkhdr(fr2, TFORK_OP_ARGFD, 1, 0);
    xsend(sv[0], fr2, 8, &p[1], 1);
    xclose(p[1]);       /* the copy in flight is now the only writer */
    base = count_fds();

    tfork__rd_init(&r, 1);
    ck_assert_int_eq(step_wait(&r, sv[1]), 1);
    ck_assert_uint_eq(r.h.op, TFORK_OP_ARG);
    ck_assert_uint_eq(r.h.len, plen);
    ck_assert_int_eq(r.nfds, 0);
    ck_assert_int_eq(r.fds[0], -1);
    if (plen)
        ck_assert_mem_eq(r.payload, pl, plen);
    ck_assert_int_eq(r.payload[plen], 0);
    /* frame 2's fd and bytes are still in the socket */
    ck_assert_int_eq(count_fds(), base);
    ck_assert_int_eq(pending(sv[1]), 8);
    tfork__rd_next(&r);
    ck_assert_int_eq(count_fds(), base);

    ck_assert_int_eq(tfork__rd_step(&r, sv[1]), 1);
    ck_assert_uint_eq(r.h.op, TFORK_OP_ARGFD);
    ck_assert_uint_eq(r.h.len, 0);
    ck_assert_int_eq(r.nfds, 1);
    ck_assert_int_eq(count_fds(), base + 1);
    ck_assert_int_eq(pending(sv[1]), 0);
    fd = r.fds[0];
    r.fds[0] = -1;      /* taken: rd_next must not close it */
    tfork__rd_next(&r);
    ck_assert_int_eq(count_fds(), base + 1);
    ck_assert(is_cloexec(fd));
    check_pipe_link(fd, p[0], "through the passed fd");
    xclose(fd);
    ck_assert_int_eq(pipe_eof(p[0]), 0);    /* it was the last writer */
    ck_assert_int_eq(tfork__rd_step(&r, sv[1]), 0);
    tfork__rd_free(&r);
    xclose(sv[0]);
    xclose(sv[1]);
    xclose(p[0]);
    free(fr);
    free(pl);
    CLEAN_END();
}
END_TEST

START_TEST(test_rd_fd_first_then_plain)
{
    unsigned char fr[64];
    int sv[2], p[2], base;
    size_t len;
    tfork_rd r;
    CLEAN_BEGIN();

    /* FORK with an fd, then RUN without: the fd belongs to the first */
    xsocketpair(sv);
    xpipe(p);
    len = mkframe(fr, TFORK_OP_FORK, 1, "\1\0\0\0\0\0\0\0", 8);
    xsend(sv[0], fr, len, &p[1], 1);
    len = mkframe(fr, TFORK_OP_RUN, 0, "\2\0\0\0hi\0", 7);
    xsend(sv[0], fr, len, NULL, 0);
    base = count_fds();
    tfork__rd_init(&r, 1);
    ck_assert_int_eq(tfork__rd_step(&r, sv[1]), 1);
    ck_assert_uint_eq(r.h.op, TFORK_OP_FORK);
    ck_assert_int_eq(r.nfds, 1);
    ck_assert_int_eq(count_fds(), base + 1);
    ck_assert_int_eq(pending(sv[1]), 15);
    check_pipe_link(r.fds[0], p[0], "fork");
    tfork__rd_next(&r);
    ck_assert_int_eq(count_fds(), base);
    ck_assert_int_eq(tfork__rd_step(&r, sv[1]), 1);
    ck_assert_uint_eq(r.h.op, TFORK_OP_RUN);
    ck_assert_int_eq(r.nfds, 0);
    ck_assert_mem_eq(r.payload, "\2\0\0\0hi\0", 8);
    tfork__rd_free(&r);
    ck_assert_int_eq(count_fds(), base);
    xclose(sv[0]);
    xclose(sv[1]);
    xclose(p[0]);
    xclose(p[1]);
    CLEAN_END();
}
END_TEST

/* Sends bytes with fds, runs the reader once; expects rc and err, and
 * that every fd that came was closed: the pipe sees EOF once the local
 * copies are closed. */
static void expect_rejected(unsigned char *bytes, size_t len, int nsend,
                            int cmd, int rc, const char *err)
{
    int sv[2], p[2], fds[32], base;
    tfork_rd r;

    xsocketpair(sv);
    xpipe(p);
    for (int i = 0; i < nsend; i++)
        fds[i] = p[1];
    base = count_fds();
    xsend(sv[0], bytes, len, fds, nsend);
    xclose(sv[0]);
    tfork__rd_init(&r, cmd);
    ck_assert_int_eq(step_wait(&r, sv[1]), rc);
    ck_assert_str_eq(r.err, err);
    ck_assert_int_eq(r.nfds, 0);
    ck_assert_int_eq(r.fds[0], -1);
    ck_assert_int_eq(count_fds(), base - 1);
    tfork__rd_free(&r);
    xclose(p[1]);
    ck_assert_int_eq(pipe_eof(p[0]), 0);
    xclose(p[0]);
    xclose(sv[1]);
}

START_TEST(test_rd_unexpected_fd)
{
    unsigned char fr[64];
    size_t len;
    CLEAN_BEGIN();

    len = mkframe(fr, TFORK_OP_RUN, 0, "\1\0\0\0x\0", 6);
    expect_rejected(fr, len, 1, 1, -EPROTO, "protocol error: RUN frame "
                    "announced 0 fds, 1 arrived");
    /* the announced count is wrong for the op: the header check fires */
    len = mkframe(fr, TFORK_OP_RUN, 1, "\1\0\0\0x\0", 6);
    expect_rejected(fr, len, 1, 1, -EPROTO, "protocol error: RUN frame "
                    "with 1 fds (takes 0)");
    /* an unknown op carrying an fd */
    len = mkframe(fr, 9, 1, NULL, 0);
    expect_rejected(fr, len, 1, 1, -EPROTO, "protocol error: unknown "
                    "command op 9");
    /* ARGFD announces 1 but none came */
    len = mkframe(fr, TFORK_OP_ARGFD, 1, NULL, 0);
    expect_rejected(fr, len, 0, 1, -EPROTO, "protocol error: ARGFD frame "
                    "announced 1 fds, 0 arrived");
    /* a reply reader sent a command with an fd */
    len = mkframe(fr, TFORK_OP_ARGFD, 1, NULL, 0);
    expect_rejected(fr, len, 1, 0, -EPROTO, "protocol error: unknown "
                    "reply op 5");
    /* an oversized frame with an fd */
    mkhdr(fr, TFORK_OP_FORK, 1, TFORK_FRAME_MAX + 1);
    expect_rejected(fr, 8, 1, 1, -EPROTO, "protocol error: FORK frame of "
                    "67174401 bytes exceeds the 67174400 byte cap");
    CLEAN_END();
}
END_TEST

START_TEST(test_rd_fd_in_payload)
{
    unsigned char h[8];
    int sv[2], p[2], base;
    tfork_rd r;
    CLEAN_BEGIN();

    xsocketpair(sv);
    xpipe(p);
    base = count_fds();
    mkhdr(h, TFORK_OP_ARG, 0, 6);
    xsend(sv[0], h, 8, NULL, 0);
    xsend(sv[0], "abc", 3, NULL, 0);
    xsend(sv[0], "def", 3, &p[1], 1);
    tfork__rd_init(&r, 1);
    ck_assert_int_eq(step_wait(&r, sv[1]), -EPROTO);
    ck_assert_str_eq(r.err, "protocol error: fd inside a ARG payload");
    ck_assert_int_eq(count_fds(), base);
    tfork__rd_free(&r);
    xclose(p[1]);
    ck_assert_int_eq(pipe_eof(p[0]), 0);
    xclose(p[0]);
    xclose(sv[0]);
    xclose(sv[1]);
    CLEAN_END();
}
END_TEST

/* fds sent on one ARGFD frame in test_rd_too_many_fds: over
 * TFORK_FDS_MAX, and past the reader's control buffer (MSG_CTRUNC) */
static const int many_fds[] = { 2, 3, 8, 9, 20 };

START_TEST(test_rd_too_many_fds)
{
    unsigned char fr[8];
    CLEAN_BEGIN();

    ck_assert_uint_eq(TFORK_FDS_MAX, 1);
    mkhdr(fr, TFORK_OP_ARGFD, 1, 0);
    expect_rejected(fr, 8, many_fds[_i], 1, -EPROTO, "protocol error: "
                    "unexpected control message or too many fds");
    CLEAN_END();
}
END_TEST

START_TEST(test_rd_credentials_refused)
{
    unsigned char fr[64];
    int sv[2], p[2], on = 1, base;
    size_t len;
    tfork_rd r;
    CLEAN_BEGIN();

    /* a control message that is not SCM_RIGHTS (credentials, which the
     * kernel adds once SO_PASSCRED is on) is a protocol error, and the fd
     * beside it is closed */
    xsocketpair(sv);
    xpipe(p);
    ck_assert_int_eq(setsockopt(sv[1], SOL_SOCKET, SO_PASSCRED, &on,
                                sizeof on), 0);
    base = count_fds();
    /* credentials alone, no fd */
    len = mkframe(fr, TFORK_OP_RUN, 0, "\1\0\0\0x\0", 6);
    xsend(sv[0], fr, len, NULL, 0);
    tfork__rd_init(&r, 1);
    ck_assert_int_eq(tfork__rd_step(&r, sv[1]), -EPROTO);
    ck_assert_str_eq(r.err, "protocol error: unexpected control message "
                     "or too many fds");
    tfork__rd_free(&r);
    xclose(sv[1]);
    xclose(sv[0]);
    xsocketpair(sv);
    ck_assert_int_eq(setsockopt(sv[1], SOL_SOCKET, SO_PASSCRED, &on,
                                sizeof on), 0);
    /* credentials and an fd */
    len = mkframe(fr, TFORK_OP_ARGFD, 1, NULL, 0);
    xsend(sv[0], fr, len, &p[1], 1);
    tfork__rd_init(&r, 1);
    ck_assert_int_eq(tfork__rd_step(&r, sv[1]), -EPROTO);
    ck_assert_str_eq(r.err, "protocol error: unexpected control message "
                     "or too many fds");
    ck_assert_int_eq(count_fds(), base);
    tfork__rd_free(&r);
    xclose(p[1]);
    ck_assert_int_eq(pipe_eof(p[0]), 0);
    xclose(p[0]);
    xclose(sv[0]);
    xclose(sv[1]);
    CLEAN_END();
}
END_TEST

START_TEST(test_rd_eof_between_frames)
{
    unsigned char fr[64];
    int sv[2];
    size_t len;
    tfork_rd r;
    CLEAN_BEGIN();

    /* nothing at all */
    xsocketpair(sv);
    xclose(sv[0]);
    tfork__rd_init(&r, 0);
    ck_assert_int_eq(tfork__rd_step(&r, sv[1]), -EPIPE);
    ck_assert_str_eq(r.err, "connection closed");
    tfork__rd_free(&r);
    xclose(sv[1]);

    /* after a complete frame */
    xsocketpair(sv);
    len = mkframe(fr, TFORK_OP_RUNOK, 0, "\x10\x27\0\0", 4);
    xsend(sv[0], fr, len, NULL, 0);
    xclose(sv[0]);
    tfork__rd_init(&r, 0);
    ck_assert_int_eq(tfork__rd_step(&r, sv[1]), 1);
    ck_assert_uint_eq(r.h.op, TFORK_OP_RUNOK);
    ck_assert_mem_eq(r.payload, "\x10\x27\0\0", 4);
    tfork__rd_next(&r);
    ck_assert_int_eq(tfork__rd_step(&r, sv[1]), -EPIPE);
    ck_assert_str_eq(r.err, "connection closed");
    tfork__rd_free(&r);
    xclose(sv[1]);
    CLEAN_END();
}
END_TEST

START_TEST(test_rd_eof_inside_frame)
{
    unsigned char fr[64];
    size_t len;
    CLEAN_BEGIN();

    /* 3 header bytes, with an fd on them */
    len = mkframe(fr, TFORK_OP_ARGFD, 1, NULL, 0);
    expect_rejected(fr, 3, 1, 1, -EPROTO, "protocol error: EOF inside a "
                    "frame header");
    expect_rejected(fr, 7, 0, 1, -EPROTO, "protocol error: EOF inside a "
                    "frame header");
    /* a header, 4 of 10 payload bytes */
    len = mkframe(fr, TFORK_OP_ARG, 0, "0123456789", 10);
    expect_rejected(fr, len - 6, 0, 1, -EPROTO, "protocol error: EOF "
                    "inside a ARG frame");
    /* a header and nothing of the payload; FORK's fd is closed too */
    len = mkframe(fr, TFORK_OP_FORK, 1, "\1\0\0\0\0\0\0\0", 8);
    expect_rejected(fr, 8, 1, 1, -EPROTO, "protocol error: EOF inside a "
                    "FORK frame");
    expect_rejected(fr, len - 1, 1, 1, -EPROTO, "protocol error: EOF "
                    "inside a FORK frame");
    CLEAN_END();
}
END_TEST

START_TEST(test_rd_huge_len_lazy)
{
    unsigned char h[8];
    int sv[2];
    tfork_rd r;
    CLEAN_BEGIN();

    xsocketpair(sv);
    ck_assert_int_eq(fcntl(sv[1], F_SETFL, O_NONBLOCK), 0);
    mkhdr(h, TFORK_OP_ARG, 0, 64u << 20);
    xsend(sv[0], h, 8, NULL, 0);
    xsend(sv[0], "abcde", 5, NULL, 0);
    tfork__rd_init(&r, 1);
    if (!UNDER_ASAN) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 33)
        struct mallinfo2 before = mallinfo2(), after;

        ck_assert_int_eq(tfork__rd_step(&r, sv[1]), 0);
        after = mallinfo2();
        /* in use (arena + mmapped) grew by far less than 64 MiB */
        ck_assert_msg(after.uordblks + after.hblkhd <
                      before.uordblks + before.hblkhd + MiB,
                      "reader allocated %zu bytes for 5 received",
                      (after.uordblks + after.hblkhd) -
                      (before.uordblks + before.hblkhd));
#else
        ck_assert_int_eq(tfork__rd_step(&r, sv[1]), 0);
#endif
    } else {
        ck_assert_int_eq(tfork__rd_step(&r, sv[1]), 0);
    }
    ck_assert_int_eq(r.have_hdr, 1);
    ck_assert_uint_eq(r.ppos, 5);
    ck_assert_int_eq(tfork__rd_step(&r, sv[1]), 0);     /* still nothing */
    xsend(sv[0], "fgh", 3, NULL, 0);
    ck_assert_int_eq(tfork__rd_step(&r, sv[1]), 0);
    ck_assert_uint_eq(r.ppos, 8);
    ck_assert_mem_eq(r.payload, "abcdefgh", 8);
    xclose(sv[0]);
    ck_assert_int_eq(tfork__rd_step(&r, sv[1]), -EPROTO);
    ck_assert_str_eq(r.err, "protocol error: EOF inside a ARG frame");
    tfork__rd_free(&r);
    xclose(sv[1]);
    CLEAN_END();
}
END_TEST

/* The same in a child whose address space cannot hold 64 MiB more: the
 * reader must answer "would block", not -ENOMEM. */
static int huge_len_child(void)
{
    unsigned char h[8];
    int sv[2], rc = 0;
    tfork_rd r;

    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv))
        return 10;
    mkhdr(h, TFORK_OP_ARG, 0, TFORK_ARG_MAX_BYTES);
    if (write(sv[0], h, 8) != 8 || write(sv[0], "xyz", 3) != 3)
        return 11;
    tfork__rd_init(&r, 1);
    switch (tfork__rd_step(&r, sv[1])) {
    case 0:
        break;
    case -ENOMEM:
        rc = 1;
        break;
    default:
        rc = 2;
    }
    if (!rc && (r.ppos != 3 || memcmp(r.payload, "xyz", 3)))
        rc = 3;
    tfork__rd_free(&r);
    close(sv[0]);
    close(sv[1]);
    return rc;
}

START_TEST(test_rd_huge_len_small_as)
{
    CLEAN_BEGIN();
    run_with_small_as(huge_len_child, "64 MiB header");
    CLEAN_END();
}
END_TEST

static unsigned char big_pat(size_t i)
{
    return (unsigned char)(i ^ (i >> 8) ^ (i >> 16) ^ (i >> 24) ^ 0x5a);
}

struct sender {
    int fd;
    const unsigned char *buf;
    size_t len;
    const int *fds;
    int nfds;
    int rc;
};

static void *sender_main(void *arg)
{
    struct sender *s = arg;

    s->rc = tfork__send_all(s->fd, s->buf, s->len, s->fds, s->nfds);
    return NULL;
}

START_TEST(test_rd_64mib_frame)
{
    unsigned char *chunk = malloc(MiB);
    struct sender snd;
    pthread_t th;
    tfork_buf b;
    tfork_rd r;
    int sv[2];
    size_t bad = SIZE_MAX;
    CLEAN_BEGIN();

    ck_assert_ptr_nonnull(chunk);
    tfork__buf_frame(&b, TFORK_OP_ARG, 0);
    for (size_t off = 0; off < TFORK_ARG_MAX_BYTES; off += MiB) {
        for (size_t j = 0; j < MiB; j++)
            chunk[j] = big_pat(off + j);
        tfork__buf_raw(&b, chunk, MiB);
    }
    free(chunk);
    ck_assert_int_eq(tfork__buf_end(&b), 0);
    ck_assert_uint_eq(b.len, 8 + (size_t)TFORK_ARG_MAX_BYTES);

    /* a thread writes it (send_all waiting in poll whenever the socket is
     * full), the reader takes it as it comes */
    xsocketpair(sv);
    snd = (struct sender){ sv[0], b.p, b.len, NULL, 0, 1 };
    ck_assert_int_eq(pthread_create(&th, NULL, sender_main, &snd), 0);
    tfork__rd_init(&r, 1);
    ck_assert_int_eq(step_wait(&r, sv[1]), 1);
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    ck_assert_int_eq(snd.rc, 0);
    ck_assert_uint_eq(r.h.op, TFORK_OP_ARG);
    ck_assert_uint_eq(r.h.len, TFORK_ARG_MAX_BYTES);
    ck_assert_uint_eq(r.ppos, TFORK_ARG_MAX_BYTES);
    for (size_t j = 0; j < TFORK_ARG_MAX_BYTES; j++)
        if (r.payload[j] != big_pat(j)) {
            bad = j;
            break;
        }
    ck_assert_msg(bad == SIZE_MAX, "payload differs at byte %zu", bad);
    ck_assert_int_eq(r.payload[TFORK_ARG_MAX_BYTES], 0);
    ck_assert_int_eq(pending(sv[1]), 0);
    tfork__rd_free(&r);
    tfork__buf_free(&b);
    xclose(sv[0]);
    xclose(sv[1]);
    CLEAN_END();
}
END_TEST

/* ------------------------------------------------------------ senders */

START_TEST(test_send_with_fd)
{
    unsigned char h[8], got[64];
    int sv[2], p[2], fds[8], nfds, base;
    struct iovec iov[2];
    CLEAN_BEGIN();

    xsocketpair(sv);
    xpipe(p);
    base = count_fds();
    tfork__hdr_put(h, TFORK_OP_FORK, 1, 8);
    iov[0] = (struct iovec){ h, 8 };
    iov[1] = (struct iovec){ (void *)"\3\0\0\0\1\0\0\0", 8 };
    ck_assert_int_eq(tfork__send(sv[0], iov, 2, &p[1], 1, 1), 16);
    ck_assert_int_eq(count_fds(), base);    /* the sender keeps its fd */
    xrecv(sv[1], got, 16, fds, &nfds);
    ck_assert_mem_eq(got, "\6\1\0\0\x08\0\0\0\3\0\0\0\1\0\0\0", 16);
    ck_assert_int_eq(nfds, 1);
    ck_assert_int_eq(count_fds(), base + 1);
    check_pipe_link(fds[0], p[0], "sent");
    xclose(fds[0]);

    /* no fds, blocking flavour */
    iov[0] = (struct iovec){ (void *)"abc", 3 };
    ck_assert_int_eq(tfork__send(sv[0], iov, 1, NULL, 0, 0), 3);
    xrecv(sv[1], got, 3, fds, &nfds);
    ck_assert_mem_eq(got, "abc", 3);
    ck_assert_int_eq(nfds, 0);

    /* more fds than a frame may carry: refused, nothing sent */
    {
        int two[2] = { p[1], p[1] };

        ck_assert_int_eq(tfork__send(sv[0], iov, 1, two, 2, 1), -EINVAL);
        ck_assert_int_eq(pending(sv[1]), 0);
    }
    xclose(sv[0]);
    xclose(sv[1]);
    xclose(p[0]);
    xclose(p[1]);
    CLEAN_END();
}
END_TEST

START_TEST(test_send_epipe_no_signal)
{
    int sv[2];
    struct iovec iov = { (void *)"x", 1 };
    CLEAN_BEGIN();

    /* a SIGPIPE would kill the test; MSG_NOSIGNAL turns it into -EPIPE */
    signal(SIGPIPE, SIG_DFL);
    xsocketpair(sv);
    xclose(sv[1]);
    ck_assert_int_eq(tfork__send(sv[0], &iov, 1, NULL, 0, 1), -EPIPE);
    ck_assert_int_eq(tfork__send(sv[0], &iov, 1, NULL, 0, 0), -EPIPE);
    ck_assert_int_eq(tfork__send_all(sv[0], "abc", 3, NULL, 0), -EPIPE);
    xclose(sv[0]);
    CLEAN_END();
}
END_TEST

START_TEST(test_send_full_socket)
{
    static unsigned char blk[65536];
    struct iovec iov = { blk, sizeof blk };
    int sv[2], i;
    ssize_t n = 0;
    CLEAN_BEGIN();

    xsocketpair(sv);
    for (i = 0; i < 10000; i++) {
        n = tfork__send(sv[0], &iov, 1, NULL, 0, 1);
        if (n < 0)
            break;
    }
    ck_assert_int_eq(n, -EAGAIN);
    ck_assert_int_gt(i, 0);
    xclose(sv[0]);
    xclose(sv[1]);
    CLEAN_END();
}
END_TEST

START_TEST(test_send_all_big_with_fd)
{
    size_t len = 4 * MiB;
    unsigned char *buf = malloc(len), *got = malloc(len);
    struct sender snd;
    pthread_t th;
    int sv[2], p[2], fds[8], nfds, base;
    CLEAN_BEGIN();

    ck_assert_ptr_nonnull(buf);
    ck_assert_ptr_nonnull(got);
    for (size_t j = 0; j < len; j++)
        buf[j] = big_pat(j * 3);
    xsocketpair(sv);
    xpipe(p);
    base = count_fds();
    /* more than the socket holds: send_all waits; the fd goes once, with
     * the first byte */
    snd = (struct sender){ sv[0], buf, len, &p[1], 1, 1 };
    ck_assert_int_eq(pthread_create(&th, NULL, sender_main, &snd), 0);
    xrecv(sv[1], got, len, fds, &nfds);
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    ck_assert_int_eq(snd.rc, 0);
    ck_assert_int_eq(nfds, 1);
    ck_assert(memcmp(got, buf, len) == 0);
    ck_assert_int_eq(count_fds(), base + 1);
    check_pipe_link(fds[0], p[0], "big");
    xclose(fds[0]);
    ck_assert_int_eq(pending(sv[1]), 0);
    xclose(sv[0]);
    xclose(sv[1]);
    xclose(p[0]);
    xclose(p[1]);
    free(buf);
    free(got);
    CLEAN_END();
}
END_TEST

/* ------------------------------------------------------------ faults */

static int f_calls;                 /* calls into the fake */
static int f_from, f_to;            /* calls (1-based) that fail */
static int f_errno;                 /* with this errno */
static int f_flags[64];             /* flags of each call */
static size_t f_ctl[64];            /* msg_controllen of each call */
static size_t f_chunk;              /* >0: at most this many bytes a call */

static void fault_setup(int from, int to, int err, size_t chunk)
{
    f_calls = 0;
    f_from = from;
    f_to = to;
    f_errno = err;
    f_chunk = chunk;
    memset(f_flags, 0, sizeof f_flags);
    memset(f_ctl, 0, sizeof f_ctl);
}

static ssize_t fake_recvmsg(int fd, struct msghdr *m, int flags)
{
    struct iovec one, *save = m->msg_iov;
    size_t savelen = m->msg_iovlen;
    ssize_t n;
    int i = f_calls++;

    if (i < 64)
        f_flags[i] = flags;
    if (f_calls >= f_from && f_calls <= f_to) {
        errno = f_errno;
        return -1;
    }
    if (!f_chunk)
        return recvmsg(fd, m, flags);
    one = m->msg_iov[0];
    if (one.iov_len > f_chunk)
        one.iov_len = f_chunk;
    m->msg_iov = &one;
    m->msg_iovlen = 1;
    n = recvmsg(fd, m, flags);
    m->msg_iov = save;
    m->msg_iovlen = savelen;
    return n;
}

static ssize_t fake_sendmsg(int fd, const struct msghdr *m, int flags)
{
    struct msghdr mm = *m;
    struct iovec one;
    int i = f_calls++;

    if (i < 64) {
        f_flags[i] = flags;
        f_ctl[i] = m->msg_controllen;
    }
    if (f_calls >= f_from && f_calls <= f_to) {
        errno = f_errno;
        return -1;
    }
    if (!f_chunk)
        return sendmsg(fd, m, flags);
    one = m->msg_iov[0];
    if (one.iov_len > f_chunk)
        one.iov_len = f_chunk;
    mm.msg_iov = &one;
    mm.msg_iovlen = 1;
    return sendmsg(fd, &mm, flags);
}

static void faults_off(void)
{
    tfork__sys.recvmsg = recvmsg;
    tfork__sys.sendmsg = sendmsg;
}

START_TEST(test_fault_recv_eintr)
{
    unsigned char fr[64];
    int sv[2], p[2];
    size_t len;
    tfork_rd r;
    CLEAN_BEGIN();

    xsocketpair(sv);
    xpipe(p);
    len = mkframe(fr, TFORK_OP_FORK, 1, "\5\0\0\0\0\0\0\0", 8);
    xsend(sv[0], fr, len, &p[1], 1);
    /* the first 3 calls are interrupted: retried inside one step */
    fault_setup(1, 3, EINTR, 0);
    tfork__sys.recvmsg = fake_recvmsg;
    tfork__rd_init(&r, 1);
    ck_assert_int_eq(tfork__rd_step(&r, sv[1]), 1);
    faults_off();
    ck_assert_int_ge(f_calls, 5);   /* 3 EINTR, header, payload */
    for (int i = 0; i < f_calls && i < 64; i++) {
        ck_assert(f_flags[i] & MSG_DONTWAIT);
        ck_assert(f_flags[i] & MSG_CMSG_CLOEXEC);
    }
    ck_assert_uint_eq(r.h.op, TFORK_OP_FORK);
    ck_assert_int_eq(r.nfds, 1);
    ck_assert_mem_eq(r.payload, "\5\0\0\0\0\0\0\0", 8);
    check_pipe_link(r.fds[0], p[0], "eintr");
    tfork__rd_free(&r);
    xclose(sv[0]);
    xclose(sv[1]);
    xclose(p[0]);
    xclose(p[1]);
    CLEAN_END();
}
END_TEST

START_TEST(test_fault_recv_eagain)
{
    unsigned char fr[64];
    int sv[2];
    size_t len;
    tfork_rd r;
    CLEAN_BEGIN();

    xsocketpair(sv);
    len = mkframe(fr, TFORK_OP_RUN, 0, "\3\0\0\0abc\0", 8);
    xsend(sv[0], fr, len, NULL, 0);
    tfork__rd_init(&r, 1);
    tfork__sys.recvmsg = fake_recvmsg;
    /* EAGAIN on the header: "would block", nothing consumed */
    fault_setup(1, 1, EAGAIN, 0);
    ck_assert_int_eq(tfork__rd_step(&r, sv[1]), 0);
    ck_assert_int_eq(f_calls, 1);
    ck_assert_uint_eq(r.hpos, 0);
    ck_assert_int_eq(pending(sv[1]), 16);
    /* EAGAIN on the payload, after the header: still 0, header kept */
    fault_setup(2, 2, EAGAIN, 0);
    ck_assert_int_eq(tfork__rd_step(&r, sv[1]), 0);
    ck_assert_int_eq(r.have_hdr, 1);
    ck_assert_uint_eq(r.ppos, 0);
    ck_assert_int_eq(pending(sv[1]), 8);
    fault_setup(0, 0, 0, 0);
    ck_assert_int_eq(tfork__rd_step(&r, sv[1]), 1);
    faults_off();
    ck_assert_uint_eq(r.h.op, TFORK_OP_RUN);
    ck_assert_mem_eq(r.payload, "\3\0\0\0abc\0", 8);
    tfork__rd_free(&r);
    xclose(sv[0]);
    xclose(sv[1]);
    CLEAN_END();
}
END_TEST

START_TEST(test_fault_recv_error_closes_fd)
{
    unsigned char fr[64];
    int sv[2], p[2], base;
    size_t len;
    tfork_rd r;
    CLEAN_BEGIN();

    xsocketpair(sv);
    xpipe(p);
    base = count_fds();
    len = mkframe(fr, TFORK_OP_FORK, 1, "\5\0\0\0\0\0\0\0", 8);
    xsend(sv[0], fr, len, &p[1], 1);
    /* the header (and its fd) arrive, reading the payload fails */
    tfork__sys.recvmsg = fake_recvmsg;
    fault_setup(2, 1000, ECONNRESET, 0);
    tfork__rd_init(&r, 1);
    ck_assert_int_eq(tfork__rd_step(&r, sv[1]), -ECONNRESET);
    faults_off();
    ck_assert_str_eq(r.err, "receive failed: Connection reset by peer");
    ck_assert_int_eq(r.fds[0], -1);
    ck_assert_int_eq(count_fds(), base);
    tfork__rd_free(&r);

    /* failing on the very first read */
    tfork__sys.recvmsg = fake_recvmsg;
    fault_setup(1, 1000, EIO, 0);
    tfork__rd_init(&r, 0);
    ck_assert_int_eq(tfork__rd_step(&r, sv[1]), -EIO);
    faults_off();
    ck_assert_str_eq(r.err, "receive failed: Input/output error");
    tfork__rd_free(&r);
    xclose(p[1]);
    xclose(sv[0]);
    xclose(sv[1]);
    ck_assert_int_eq(pipe_eof(p[0]), 0);
    xclose(p[0]);
    CLEAN_END();
}
END_TEST

START_TEST(test_fault_recv_short_reads)
{
    unsigned char fr[64];
    int sv[2], p[2], base;
    size_t len;
    tfork_rd r;
    CLEAN_BEGIN();

    /* recvmsg hands over one byte at a time: one step still assembles
     * the frame, the fd kept from the first byte */
    xsocketpair(sv);
    xpipe(p);
    base = count_fds();
    len = mkframe(fr, TFORK_OP_FORK, 1, "\x2a\0\0\0\1\0\0\0", 8);
    xsend(sv[0], fr, len, &p[1], 1);
    len = mkframe(fr, TFORK_OP_RUN, 0, "\0\0\0\0\0", 5);
    xsend(sv[0], fr, len, NULL, 0);
    tfork__sys.recvmsg = fake_recvmsg;
    fault_setup(0, 0, 0, 1);
    tfork__rd_init(&r, 1);
    ck_assert_int_eq(tfork__rd_step(&r, sv[1]), 1);
    ck_assert_int_eq(f_calls, 16);
    ck_assert_int_eq(r.nfds, 1);
    ck_assert_mem_eq(r.payload, "\x2a\0\0\0\1\0\0\0", 8);
    ck_assert_int_eq(count_fds(), base + 1);
    ck_assert_int_eq(pending(sv[1]), 13);
    check_pipe_link(r.fds[0], p[0], "short");
    tfork__rd_next(&r);
    ck_assert_int_eq(tfork__rd_step(&r, sv[1]), 1);
    faults_off();
    ck_assert_uint_eq(r.h.op, TFORK_OP_RUN);
    ck_assert_int_eq(r.nfds, 0);
    tfork__rd_free(&r);
    ck_assert_int_eq(count_fds(), base);
    xclose(sv[0]);
    xclose(sv[1]);
    xclose(p[0]);
    xclose(p[1]);
    CLEAN_END();
}
END_TEST

START_TEST(test_fault_send_eintr)
{
    unsigned char got[8];
    struct iovec iov = { (void *)"hello", 5 };
    int sv[2], fds[8], nfds;
    CLEAN_BEGIN();

    xsocketpair(sv);
    tfork__sys.sendmsg = fake_sendmsg;
    fault_setup(1, 2, EINTR, 0);
    ck_assert_int_eq(tfork__send(sv[0], &iov, 1, NULL, 0, 1), 5);
    ck_assert_int_eq(f_calls, 3);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(f_flags[i], MSG_NOSIGNAL | MSG_DONTWAIT);
    fault_setup(1, 1, EINTR, 0);
    ck_assert_int_eq(tfork__send(sv[0], &iov, 1, NULL, 0, 0), 5);
    ck_assert_int_eq(f_calls, 2);
    ck_assert_int_eq(f_flags[1], MSG_NOSIGNAL);
    faults_off();
    /* sent once each, not once per attempt */
    ck_assert_int_eq(pending(sv[1]), 10);
    xrecv(sv[1], got, 5, fds, &nfds);
    ck_assert_mem_eq(got, "hello", 5);
    xclose(sv[0]);
    xclose(sv[1]);
    CLEAN_END();
}
END_TEST

START_TEST(test_fault_send_eagain)
{
    unsigned char got[16];
    struct iovec iov = { (void *)"hello", 5 };
    int sv[2], p[2], fds[8], nfds;
    CLEAN_BEGIN();

    xsocketpair(sv);
    xpipe(p);
    tfork__sys.sendmsg = fake_sendmsg;
    /* tfork__send reports it */
    fault_setup(1, 1, EAGAIN, 0);
    ck_assert_int_eq(tfork__send(sv[0], &iov, 1, &p[1], 1, 1), -EAGAIN);
    ck_assert_int_eq(f_calls, 1);
    ck_assert_int_eq(pending(sv[1]), 0);
    /* send_all waits for POLLOUT and tries again, fd and all */
    fault_setup(1, 1, EAGAIN, 0);
    ck_assert_int_eq(tfork__send_all(sv[0], "0123456789", 10, &p[1], 1), 0);
    ck_assert_int_eq(f_calls, 2);
    ck_assert_uint_ne(f_ctl[0], 0);
    ck_assert_uint_ne(f_ctl[1], 0);
    /* another error is returned as it is */
    fault_setup(1, 1, EIO, 0);
    ck_assert_int_eq(tfork__send(sv[0], &iov, 1, NULL, 0, 1), -EIO);
    fault_setup(1, 1, ENOBUFS, 0);
    ck_assert_int_eq(tfork__send_all(sv[0], "x", 1, NULL, 0), -ENOBUFS);
    faults_off();
    ck_assert_int_eq(pending(sv[1]), 10);
    xrecv(sv[1], got, 10, fds, &nfds);
    ck_assert_mem_eq(got, "0123456789", 10);
    ck_assert_int_eq(nfds, 1);
    check_pipe_link(fds[0], p[0], "again");
    xclose(fds[0]);
    xclose(sv[0]);
    xclose(sv[1]);
    xclose(p[0]);
    xclose(p[1]);
    CLEAN_END();
}
END_TEST

START_TEST(test_fault_send_short_writes)
{
    unsigned char fr[64];
    int sv[2], p[2], base;
    size_t len;
    tfork_rd r;
    CLEAN_BEGIN();

    /* sendmsg takes 3 bytes a call: send_all finishes the frame, the fd
     * rides on the first call only, and the reader gets one fd */
    xsocketpair(sv);
    xpipe(p);
    base = count_fds();
    len = mkframe(fr, TFORK_OP_FORK, 1, "\x11\0\0\0\0\0\0\0", 8);
    tfork__sys.sendmsg = fake_sendmsg;
    fault_setup(0, 0, 0, 3);
    ck_assert_int_eq(tfork__send_all(sv[0], fr, len, &p[1], 1), 0);
    faults_off();
    ck_assert_int_eq(f_calls, 6);
    ck_assert_uint_ne(f_ctl[0], 0);
    for (int i = 1; i < 6; i++)
        ck_assert_uint_eq(f_ctl[i], 0);
    tfork__rd_init(&r, 1);
    ck_assert_int_eq(step_wait(&r, sv[1]), 1);
    ck_assert_int_eq(r.nfds, 1);
    ck_assert_mem_eq(r.payload, "\x11\0\0\0\0\0\0\0", 8);
    ck_assert_int_eq(count_fds(), base + 1);
    check_pipe_link(r.fds[0], p[0], "3 bytes a time");
    tfork__rd_free(&r);
    ck_assert_int_eq(count_fds(), base);
    xclose(sv[0]);
    xclose(sv[1]);
    xclose(p[0]);
    xclose(p[1]);
    CLEAN_END();
}
END_TEST

/* ------------------------------------------------------------ suite */

static Suite *proto_suite(void)
{
    Suite *s = suite_create("proto");
    TCase *tc;

    tc = tcase_create("header");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_op_table);
    tcase_add_test(tc, test_hdr_put_bytes);
    tcase_add_test(tc, test_hdr_roundtrip_every_op);
    tcase_add_test(tc, test_hdr_get_unknown_op);
    tcase_add_test(tc, test_hdr_get_wrong_direction);
    tcase_add_test(tc, test_hdr_get_reserved);
    tcase_add_test(tc, test_hdr_get_fd_count);
    tcase_add_test(tc, test_hdr_get_len_cap);
    tcase_add_test(tc, test_hdr_get_short_errbuf);
    suite_add_tcase(s, tc);

    tc = tcase_create("encode");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_buf_eval_bytes);
    tcase_add_test(tc, test_buf_hello_bytes);
    tcase_add_test(tc, test_buf_u32_le);
    tcase_add_test(tc, test_buf_str_embedded_nul_and_raw);
    tcase_add_test(tc, test_buf_grows);
    tcase_add_test(tc, test_buf_end_cap);
    tcase_add_test(tc, test_buf_end_oom);
    suite_add_tcase(s, tc);

    tc = tcase_create("decode");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_cur_roundtrip);
    tcase_add_test(tc, test_cur_truncated_eval);
    tcase_add_test(tc, test_cur_truncated_exec);
    tcase_add_test(tc, test_cur_str_missing_nul);
    tcase_add_test(tc, test_cur_short_ints);
    tcase_add_test(tc, test_cur_list_bad_counts);
    tcase_add_test(tc, test_cur_list_no_alloc);
    tcase_add_test(tc, test_cur_done_trailing);
    suite_add_tcase(s, tc);

    tc = tcase_create("reader");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_rd_split_bytes);
    tcase_add_loop_test(tc, test_rd_no_read_ahead, 0,
                        (int)(sizeof ahead_lens / sizeof ahead_lens[0]));
    tcase_add_test(tc, test_rd_fd_first_then_plain);
    tcase_add_test(tc, test_rd_unexpected_fd);
    tcase_add_test(tc, test_rd_fd_in_payload);
    tcase_add_loop_test(tc, test_rd_too_many_fds, 0,
                        (int)(sizeof many_fds / sizeof many_fds[0]));
    tcase_add_test(tc, test_rd_credentials_refused);
    tcase_add_test(tc, test_rd_eof_between_frames);
    tcase_add_test(tc, test_rd_eof_inside_frame);
    tcase_add_test(tc, test_rd_huge_len_lazy);
    tcase_add_test(tc, test_rd_huge_len_small_as);
    tcase_add_test(tc, test_rd_64mib_frame);
    suite_add_tcase(s, tc);

    tc = tcase_create("send");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_send_with_fd);
    tcase_add_test(tc, test_send_epipe_no_signal);
    tcase_add_test(tc, test_send_full_socket);
    tcase_add_test(tc, test_send_all_big_with_fd);
    suite_add_tcase(s, tc);

    tc = tcase_create("faults");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_fault_recv_eintr);
    tcase_add_test(tc, test_fault_recv_eagain);
    tcase_add_test(tc, test_fault_recv_error_closes_fd);
    tcase_add_test(tc, test_fault_recv_short_reads);
    tcase_add_test(tc, test_fault_send_eintr);
    tcase_add_test(tc, test_fault_send_eagain);
    tcase_add_test(tc, test_fault_send_short_writes);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(proto_suite());
    int failed;

    srunner_run_all(sr, CK_ENV);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
