/* fuzz.h: what the fuzz harnesses (tests/fuzz/fuzz_*.c) share.  Each
 * harness is built twice: by `make fuzz` with libFuzzer (TFORK_FUZZ_MAIN
 * defined: its entry is LLVMFuzzerTestOneInput), and into
 * tests/check_fuzz.c, which includes every harness and replays the files
 * of tests/fuzz/<harness>/ through it (entry fuzz_<name>_one).  So every
 * crash or hang the fuzzer finds, kept in that directory, is replayed by
 * `make check`.  A harness reports a bug with fuzz_fail(): abort(). */
#ifndef TFORK_FUZZ_H
#define TFORK_FUZZ_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "tfork-int.h"

#ifdef TFORK_FUZZ_MAIN
#define FUZZ_ENTRY(name)                                                    \
    int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
#else
#define FUZZ_ENTRY(name)                                                    \
    int fuzz_##name##_one(const uint8_t *data, size_t size)
#endif

/* fuzz.h's functions: each harness uses some of them */
#define FUZZ_HELPER static __attribute__((unused))

/* The input being replayed (check_fuzz sets it), for the failure text. */
__attribute__((unused)) static const char *fuzz_input_name = "(libFuzzer input)";

static void fuzz_fail(const char *fmt, ...)
    __attribute__((format(printf, 1, 2), noreturn));
static void fuzz_fail(const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "fuzz: %s: ", fuzz_input_name);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    abort();
}

#define FUZZ_ASSERT(cond, fmt, ...)                                         \
    do {                                                                    \
        if (!(cond))                                                        \
            fuzz_fail("%s:%d: %s: " fmt, __FILE__, __LINE__, #cond,        \
                      ##__VA_ARGS__);                                       \
    } while (0)

/* Open descriptors of this process, not counting the one that lists. */
FUZZ_HELPER int fuzz_fd_count(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int n = 0;

    if (!d)
        fuzz_fail("opendir /proc/self/fd: %s", strerror(errno));
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1;
}

/* A close-on-exec stream socketpair; nonblocking ends as asked. */
FUZZ_HELPER void fuzz_socketpair(int sv[2], int nb0, int nb1)
{
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        fuzz_fail("socketpair: %s", strerror(errno));
    if (nb0)
        fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK);
    if (nb1)
        fcntl(sv[1], F_SETFL, fcntl(sv[1], F_GETFL) | O_NONBLOCK);
}

/* sendmsg of buf with nfds fds (fd repeated) riding on its first byte;
 * bytes sent, or -errno. */
FUZZ_HELPER ssize_t fuzz_send(int sock, const void *buf, size_t len, int fd,
                         int nfds)
{
    union {
        struct cmsghdr h;
        char b[CMSG_SPACE(sizeof(int) * 4)];
    } u;
    struct iovec iov = { (void *)buf, len };
    struct msghdr m;
    ssize_t n;

    memset(&m, 0, sizeof m);
    memset(&u, 0, sizeof u);
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    if (nfds > 0) {
        struct cmsghdr *c;
        int fds[4] = { fd, fd, fd, fd };

        m.msg_control = u.b;
        m.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
        c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
    }
    do
        n = sendmsg(sock, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    return n < 0 ? -errno : n;
}

/* Reads and drops what sock holds now, closing any fd that came with it;
 * the first fds are stored in keep (up to nkeep, set to -1 when none).
 * Returns 1 at EOF (or a reset), 0 otherwise. */
FUZZ_HELPER int fuzz_drain(int sock, int *keep, int nkeep)
{
    for (;;) {
        union {
            struct cmsghdr h;
            char b[CMSG_SPACE(sizeof(int) * 8)];
        } u;
        char buf[4096];
        struct iovec iov = { buf, sizeof buf };
        struct msghdr m;
        struct cmsghdr *c;
        ssize_t n;

        memset(&m, 0, sizeof m);
        m.msg_iov = &iov;
        m.msg_iovlen = 1;
        m.msg_control = u.b;
        m.msg_controllen = sizeof u.b;
        n = recvmsg(sock, &m, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno != EAGAIN && errno != EWOULDBLOCK;
        for (c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
            if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
                continue;
            for (size_t i = 0; i < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                 i++) {
                int f;

                memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof f);
                if (keep && nkeep > 0) {
                    *keep++ = f;
                    nkeep--;
                } else {
                    close(f);
                }
            }
        }
        if (n == 0)
            return 1;
    }
}

/* A list as tfork__cur_list gave it (pointers into the payload): each
 * string's length is the u32 before it, which may count NULs inside it
 * (the C string then ends early: a list is used as argv). */
FUZZ_HELPER void fuzz_buf_list(tfork_buf *b, char **v, uint32_t n)
{
    tfork__buf_u32(b, n);
    for (uint32_t i = 0; i < n; i++) {
        const unsigned char *l = (const unsigned char *)v[i] - 4;

        tfork__buf_str(b, v[i], (size_t)l[0] | (size_t)l[1] << 8 |
                       (size_t)l[2] << 16 | (size_t)l[3] << 24);
    }
}

/* ---- the frame layouts of src/proto.h, decoded and encoded again ----
 *
 * fuzz_frame_check decodes one complete frame's payload by its op's
 * layout (as proto.h's op tables state it) with the cursor of proto.c,
 * and when the payload is well-formed encodes the fields again with
 * tfork__buf_* and compares: whatever the decoder accepts, the encoder
 * must reproduce byte for byte (hdr is the frame's received header).
 * 1: well-formed and round-tripped; 0: malformed (cursor said so). */
FUZZ_HELPER int fuzz_frame_check(const unsigned char hdr[TFORK_HDR_LEN],
                            const unsigned char *payload, uint32_t len)
{
    unsigned op = hdr[0];
    tfork_cur c;
    tfork_buf b;
    uint32_t u[4] = { 0, 0, 0, 0 };
    const char *s1 = NULL, *s2 = NULL;
    size_t l1 = 0, l2 = 0;
    char **v1 = NULL, **v2 = NULL;
    uint32_t n1 = 0, n2 = 0;
    struct iovec *parts = NULL;
    uint32_t nparts = 0;
    int ok;

    tfork__cur_init(&c, payload, len);
    switch (op) {
    case TFORK_OP_HELLO:
    case TFORK_OP_FORK:
    case TFORK_OP_FORKED:
    case TFORK_OP_EXIT:
        tfork__cur_u32(&c, &u[0]);
        tfork__cur_u32(&c, &u[1]);
        break;
    case TFORK_OP_REQUIRE:
    case TFORK_OP_RUN:
        tfork__cur_str(&c, &s1, &l1);
        break;
    case TFORK_OP_EVAL:
        tfork__cur_str(&c, &s1, &l1);
        if (!c.bad)
            tfork__cur_list(&c, TFORK_LIST_MAX, &v1, &n1);
        break;
    case TFORK_OP_ARG:
        c.p = c.end;                    /* raw octets: any will do */
        break;
    case TFORK_OP_ARGFD:
    case TFORK_OP_RPC_RETIRE:
        break;
    case TFORK_OP_EXEC:
        tfork__cur_u32(&c, &u[0]);
        tfork__cur_str(&c, &s1, &l1);
        if (!c.bad)
            tfork__cur_list(&c, TFORK_LIST_MAX, &v1, &n1);
        if (!c.bad && (u[0] & TFORK_EXEC_ENVP))
            tfork__cur_list(&c, TFORK_LIST_MAX, &v2, &n2);
        break;
    case TFORK_OP_ERROR:
        tfork__cur_u32(&c, &u[0]);
        tfork__cur_u32(&c, &u[1]);
        tfork__cur_u32(&c, &u[2]);
        tfork__cur_str(&c, &s1, &l1);
        break;
    case TFORK_OP_RUNOK:
    case TFORK_OP_EXECSTART:
        tfork__cur_u32(&c, &u[0]);
        break;
    case TFORK_OP_RPC_SETUP:
        tfork__cur_u32(&c, &u[0]);
        tfork__cur_u32(&c, &u[1]);
        tfork__cur_u32(&c, &u[2]);
        tfork__cur_str(&c, &s1, &l1);
        tfork__cur_str(&c, &s2, &l2);
        break;
    case TFORK_OP_RPC_CALL:
    case TFORK_OP_RPC_REPLY:
        tfork__cur_u32(&c, &u[0]);
        if (!c.bad)
            tfork__cur_parts(&c, &parts, &nparts);
        break;
    case TFORK_OP_RPC_FAIL:
        tfork__cur_u32(&c, &u[0]);
        tfork__cur_u32(&c, &u[1]);
        tfork__cur_str(&c, &s1, &l1);
        break;
    case TFORK_OP_RPC_EVENT:
        tfork__cur_parts(&c, &parts, &nparts);
        break;
    default:
        fuzz_fail("a reader returned a frame of unknown op %u", op);
    }
    ok = tfork__cur_done(&c) == 0;
    /* what the cursor hands out lies inside the payload, NUL-terminated */
    if (ok) {
        const char *lo = (const char *)payload, *hi = lo + len;

        FUZZ_ASSERT(!s1 || (s1 >= lo && s1 + l1 < hi && !s1[l1]), "str");
        FUZZ_ASSERT(!s2 || (s2 >= lo && s2 + l2 < hi && !s2[l2]), "str");
        FUZZ_ASSERT(!v1 || !v1[n1], "list not NULL-terminated");
        FUZZ_ASSERT(!v2 || !v2[n2], "list not NULL-terminated");
        for (uint32_t i = 0; i < n1; i++)
            FUZZ_ASSERT(v1[i] >= lo && v1[i] + strlen(v1[i]) < hi, "list");
        for (uint32_t i = 0; i < n2; i++)
            FUZZ_ASSERT(v2[i] >= lo && v2[i] + strlen(v2[i]) < hi, "list");
        for (uint32_t i = 0; i < nparts; i++) {
            const char *p = parts[i].iov_base;

            FUZZ_ASSERT(p >= lo && p + parts[i].iov_len < hi &&
                        !p[parts[i].iov_len], "part %u", (unsigned)i);
        }
        if (parts || nparts)
            FUZZ_ASSERT(tfork__parts_check((int)nparts, parts) == 0,
                        "decoded parts the encoder refuses");
    }
    if (!ok)
        goto out;
    tfork__buf_frame(&b, op, hdr[1]);
    switch (op) {
    case TFORK_OP_HELLO:
    case TFORK_OP_FORK:
    case TFORK_OP_FORKED:
    case TFORK_OP_EXIT:
        tfork__buf_u32(&b, u[0]);
        tfork__buf_u32(&b, u[1]);
        break;
    case TFORK_OP_REQUIRE:
    case TFORK_OP_RUN:
        tfork__buf_str(&b, s1, l1);
        break;
    case TFORK_OP_EVAL:
        tfork__buf_str(&b, s1, l1);
        fuzz_buf_list(&b, v1, n1);
        break;
    case TFORK_OP_ARG:
        tfork__buf_raw(&b, payload, len);
        break;
    case TFORK_OP_EXEC:
        tfork__buf_u32(&b, u[0]);
        tfork__buf_str(&b, s1, l1);
        fuzz_buf_list(&b, v1, n1);
        if (u[0] & TFORK_EXEC_ENVP)
            fuzz_buf_list(&b, v2, n2);
        break;
    case TFORK_OP_ERROR:
        tfork__buf_u32(&b, u[0]);
        tfork__buf_u32(&b, u[1]);
        tfork__buf_u32(&b, u[2]);
        tfork__buf_str(&b, s1, l1);
        break;
    case TFORK_OP_RUNOK:
    case TFORK_OP_EXECSTART:
        tfork__buf_u32(&b, u[0]);
        break;
    case TFORK_OP_RPC_SETUP:
        tfork__buf_u32(&b, u[0]);
        tfork__buf_u32(&b, u[1]);
        tfork__buf_u32(&b, u[2]);
        tfork__buf_str(&b, s1, l1);
        tfork__buf_str(&b, s2, l2);
        break;
    case TFORK_OP_RPC_CALL:
    case TFORK_OP_RPC_REPLY:
        tfork__buf_u32(&b, u[0]);
        tfork__buf_parts(&b, (int)nparts, parts);
        break;
    case TFORK_OP_RPC_FAIL:
        tfork__buf_u32(&b, u[0]);
        tfork__buf_u32(&b, u[1]);
        tfork__buf_str(&b, s1, l1);
        break;
    case TFORK_OP_RPC_EVENT:
        tfork__buf_parts(&b, (int)nparts, parts);
        break;
    }
    FUZZ_ASSERT(tfork__buf_end(&b) == 0, "encoding op %u failed", op);
    FUZZ_ASSERT(b.len == TFORK_HDR_LEN + (size_t)len &&
                memcmp(b.p, hdr, TFORK_HDR_LEN) == 0 &&
                (!len || memcmp(b.p + TFORK_HDR_LEN, payload, len) == 0),
                "op %u: decode + encode gave other bytes (%zu, not %zu)",
                op, b.len, TFORK_HDR_LEN + (size_t)len);
    tfork__buf_free(&b);
out:
    free(v1);
    free(v2);
    free(parts);
    return ok;
}

/* The header rules of proto.h, written out again from its comments: the
 * reference that tfork__hdr_get and tfork__rpc_hdr_get are held to.
 * kind 1: commands, 0: replies, 2: RPC to the child, 3: RPC to parent. */
FUZZ_HELPER int fuzz_hdr_ok(const unsigned char h[TFORK_HDR_LEN], int kind)
{
    unsigned op = h[0], nfds = h[1];
    uint32_t len = (uint32_t)h[4] | (uint32_t)h[5] << 8 |
                   (uint32_t)h[6] << 16 | (uint32_t)h[7] << 24;
    if (h[2] || h[3] || len > TFORK_FRAME_MAX)
        return 0;
    switch (op) {
    case TFORK_OP_HELLO: case TFORK_OP_REQUIRE: case TFORK_OP_EVAL:
    case TFORK_OP_ARG: case TFORK_OP_RUN: case TFORK_OP_EXEC:
        return kind == 1 && nfds == 0;
    case TFORK_OP_ARGFD: case TFORK_OP_FORK:
        return kind == 1 && nfds == 1;
    case TFORK_OP_FORKED:
        return kind == 0 && nfds <= 1;
    case TFORK_OP_EXIT: case TFORK_OP_ERROR: case TFORK_OP_RUNOK:
    case TFORK_OP_EXECSTART:
        return kind == 0 && nfds == 0;
    case TFORK_OP_RPC_SETUP: case TFORK_OP_RPC_CALL:
        return kind == 2 && nfds == 0;
    case TFORK_OP_RPC_REPLY: case TFORK_OP_RPC_FAIL:
    case TFORK_OP_RPC_EVENT: case TFORK_OP_RPC_RETIRE:
        return kind == 3 && nfds == 0;
    }
    return 0;
}

/* Sends stream to an exact frame reader (src/fdpass.c, tfork__rd_step)
 * in pieces of piece bytes (0: all at once), an fd (2 when fdplan has
 * 0x80) riding on piece i when bit i of fdplan (i < 7) is set; checks
 * every frame it returns against the bytes sent (it must stop exactly at
 * each frame's end), the header rules, the fds (as announced, close-on-
 * exec), the payload layout (fuzz_frame_check), and that a failure says
 * why and keeps no fd.  cmd: the reader takes commands (1) or replies. */
FUZZ_HELPER void fuzz_rd_stream(int cmd, size_t piece, unsigned fdplan,
                           const uint8_t *stream, size_t len)
{
    int fds0 = fuzz_fd_count(), sv[2], shut = 0, dead = 0;
    size_t sent = 0, off = 0;
    unsigned pieces = 0;
    tfork_rd r;

    fuzz_socketpair(sv, 1, 1);
    tfork__rd_init(&r, cmd);
    while (!dead) {
        if (sent < len) {
            size_t n = piece && piece < len - sent ? piece : len - sent;
            int nf = pieces < 7 && (fdplan >> pieces & 1) ?
                     (fdplan & 0x80 ? 2 : 1) : 0;
            int fd = nf ? open("/dev/null", O_RDONLY | O_CLOEXEC) : -1;
            ssize_t k = fuzz_send(sv[1], stream + sent, n, fd, nf);

            if (fd >= 0)
                close(fd);
            FUZZ_ASSERT(k > 0 || k == -EAGAIN, "send: %s",
                        strerror((int)-k));
            if (k > 0) {
                sent += (size_t)k;
                pieces++;
            }
        } else if (!shut) {
            shutdown(sv[1], SHUT_WR);
            shut = 1;
        }
        for (;;) {
            int rv = tfork__rd_step(&r, sv[0]);

            if (rv == 0)
                break;
            if (rv == 1) {
                FUZZ_ASSERT(off + TFORK_HDR_LEN + r.h.len <= sent,
                            "frame beyond the bytes sent");
                FUZZ_ASSERT(memcmp(r.hdr, stream + off, TFORK_HDR_LEN) == 0 &&
                            (!r.h.len || memcmp(r.payload, stream + off +
                                                TFORK_HDR_LEN, r.h.len) == 0),
                            "frame bytes differ from those sent");
                FUZZ_ASSERT(r.payload && r.payload[r.h.len] == '\0',
                            "payload not NUL-terminated");
                FUZZ_ASSERT(fuzz_hdr_ok(r.hdr, cmd), "header accepted");
                FUZZ_ASSERT((unsigned)r.nfds == r.h.nfds, "fds %d of %u",
                            r.nfds, r.h.nfds);
                for (int i = 0; i < r.nfds; i++)
                    FUZZ_ASSERT(fcntl(r.fds[i], F_GETFD) == FD_CLOEXEC,
                                "fd %d", r.fds[i]);
                fuzz_frame_check(r.hdr, r.payload, r.h.len);
                off += TFORK_HDR_LEN + r.h.len;
                tfork__rd_next(&r);
                continue;
            }
            FUZZ_ASSERT(rv == -EPIPE || rv == -EPROTO || rv == -ENOMEM,
                        "rd_step returned %d (%s)", rv, r.err);
            FUZZ_ASSERT(r.err[0], "no message for %d", rv);
            FUZZ_ASSERT(r.nfds == 0 && r.fds[0] == -1, "fd kept on error");
            if (rv == -EPIPE)   /* only between frames, after all bytes */
                FUZZ_ASSERT(shut && off == len, "EOF at %zu of %zu",
                            off, len);
            if (rv == -EPROTO && r.hpos == TFORK_HDR_LEN && !r.have_hdr &&
                off + TFORK_HDR_LEN <= sent)
                FUZZ_ASSERT(!fuzz_hdr_ok(stream + off, cmd) ||
                            strstr(r.err, "announced") ||
                            strstr(r.err, "unexpected control"),
                            "valid header refused: %s", r.err);
            dead = 1;
            break;
        }
    }
    tfork__rd_free(&r);
    close(sv[0]);
    close(sv[1]);
    FUZZ_ASSERT(fuzz_fd_count() == fds0, "fds leaked: %d, %d before",
                fuzz_fd_count(), fds0);
}

/* tfork__hdr_get and tfork__rpc_hdr_get against fuzz_hdr_ok. */
FUZZ_HELPER void fuzz_hdr_diff(const uint8_t h[TFORK_HDR_LEN])
{
    char err[256];
    tfork_hdr hh;

    for (int kind = 0; kind < 4; kind++) {
        int r;

        err[0] = 0;
        r = kind < 2 ? tfork__hdr_get(h, kind, &hh, err, sizeof err) :
            tfork__rpc_hdr_get(h, kind == 2, &hh, err, sizeof err);
        FUZZ_ASSERT((r == 0) == fuzz_hdr_ok(h, kind),
                    "kind %d: header %02x %02x %02x %02x len %02x%02x%02x%02x"
                    " gave %d (%s)", kind, h[0], h[1], h[2], h[3], h[7], h[6],
                    h[5], h[4], r, err);
        FUZZ_ASSERT(r == 0 || (r == -EPROTO && err[0]), "no message");
    }
}

#endif
