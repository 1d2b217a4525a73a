/* fdpass.c: frames over unix stream sockets, fds riding with SCM_RIGHTS.
 * Headers and payloads are read exactly, never ahead into the next frame. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tfork-int.h"

ssize_t tfork__send(int fd, const struct iovec *iov, int iovcnt,
                    const int *fds, int nfds, int nonblock)
{
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int) * TFORK_FDS_MAX)];
    } u;
    struct msghdr m;
    ssize_t n;

    memset(&m, 0, sizeof m);
    m.msg_iov = (struct iovec *)iov;
    m.msg_iovlen = (size_t)iovcnt;
    if (nfds > 0) {
        struct cmsghdr *c;

        if (nfds > (int)TFORK_FDS_MAX)
            return -EINVAL;
        memset(&u, 0, sizeof u);
        m.msg_control = u.buf;
        m.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
        c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
    }
    do
        n = tfork__sys.sendmsg(fd, &m, MSG_NOSIGNAL |
                               (nonblock ? MSG_DONTWAIT : 0));
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    return n;
}

int tfork__send_all(int fd, const void *buf, size_t len, const int *fds,
                    int nfds)
{
    const char *p = buf;

    while (len > 0) {
        struct iovec iov = { (void *)p, len };
        ssize_t n = tfork__send(fd, &iov, 1, fds, nfds, 1);

        if (n == -EAGAIN) {
            struct pollfd pfd = { fd, POLLOUT, 0 };

            if (poll(&pfd, 1, -1) < 0 && errno != EINTR)
                return -errno;
            continue;
        }
        if (n < 0)
            return (int)n;
        nfds = 0;   /* the fds went with the first byte */
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

void tfork__rd_init(tfork_rd *r, int cmd)
{
    memset(r, 0, sizeof *r);
    r->cmd = cmd;
    for (unsigned i = 0; i < TFORK_FDS_MAX; i++)
        r->fds[i] = -1;
}

static void close_fds(tfork_rd *r)
{
    for (unsigned i = 0; i < TFORK_FDS_MAX; i++) {
        if (r->fds[i] >= 0)
            close(r->fds[i]);
        r->fds[i] = -1;
    }
    r->nfds = 0;
}

void tfork__rd_next(tfork_rd *r)
{
    int cmd = r->cmd;

    close_fds(r);
    free(r->payload);
    tfork__rd_init(r, cmd);
}

void tfork__rd_free(tfork_rd *r)
{
    tfork__rd_next(r);
}

/* One recvmsg of at most len bytes; fds that arrive are kept in r (up to
 * the cap) and any beyond it closed.  Bytes read, 0 at EOF, or -errno. */
static ssize_t rd_recv(tfork_rd *r, int fd, void *buf, size_t len)
{
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int) * 8)];
    } u;
    struct iovec iov = { buf, len };
    struct msghdr m;
    struct cmsghdr *c;
    ssize_t n;
    int bad = 0;

    memset(&m, 0, sizeof m);
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = u.buf;
    m.msg_controllen = sizeof u.buf;
    do
        n = tfork__sys.recvmsg(fd, &m, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    for (c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            int *fds = (int *)CMSG_DATA(c);

            for (size_t i = 0; i < k; i++) {
                int f;

                memcpy(&f, fds + i, sizeof f);
                if (r->nfds < (int)TFORK_FDS_MAX)
                    r->fds[r->nfds++] = f;
                else {
                    close(f);
                    bad = 1;
                }
            }
        } else {
            bad = 1;    /* credentials or anything else: not ours */
        }
    }
    if ((m.msg_flags & MSG_CTRUNC) && !bad) {
        /* The kernel also truncates when it cannot install a descriptor
         * here: out of fds, say so rather than blame the peer. */
        int probe = fcntl(0, F_DUPFD_CLOEXEC, 0);

        if (probe < 0 && (errno == EMFILE || errno == ENFILE)) {
            int e = errno;

            snprintf(r->err, sizeof r->err, "receive failed: %s (a "
                     "descriptor sent with the frame was lost)",
                     strerror(e));
            return -e;
        }
        if (probe >= 0)
            close(probe);
        bad = 1;
    }
    if (bad) {
        snprintf(r->err, sizeof r->err, "protocol error: unexpected "
                 "control message or too many fds");
        return -EPROTO;
    }
    return n;
}

int tfork__rd_step(tfork_rd *r, int fd)
{
    ssize_t n;

    while (!r->have_hdr) {
        n = rd_recv(r, fd, r->hdr + r->hpos, TFORK_HDR_LEN - r->hpos);
        if (n == -EAGAIN)
            return 0;
        if (n < 0) {
            if (n != -EPROTO && n != -EMFILE && n != -ENFILE)
                snprintf(r->err, sizeof r->err, "receive failed: %s",
                         strerror((int)-n));
            close_fds(r);
            return (int)n;
        }
        if (n == 0) {
            if (r->hpos)
                snprintf(r->err, sizeof r->err, "protocol error: EOF "
                         "inside a frame header");
            else
                snprintf(r->err, sizeof r->err, "connection closed");
            close_fds(r);
            return r->hpos ? -EPROTO : -EPIPE;
        }
        r->hpos += (size_t)n;
        if (r->hpos < TFORK_HDR_LEN)
            continue;
        if (tfork__hdr_get(r->hdr, r->cmd, &r->h, r->err, sizeof r->err)) {
            close_fds(r);
            return -EPROTO;
        }
        if ((unsigned)r->nfds != r->h.nfds) {
            snprintf(r->err, sizeof r->err, "protocol error: %s frame "
                     "announced %u fds, %d arrived",
                     tfork__op_name(r->h.op), r->h.nfds, r->nfds);
            close_fds(r);
            return -EPROTO;
        }
        r->have_hdr = 1;
        /* grow with what arrives, so a header claiming a large payload
         * costs nothing until the bytes are really sent */
        r->pcap = r->h.len < 65536 ? r->h.len + 1 : 65536;
        r->payload = malloc(r->pcap);
        if (!r->payload) {
            snprintf(r->err, sizeof r->err, "out of memory");
            close_fds(r);
            return -ENOMEM;
        }
    }
    while (r->ppos < r->h.len) {
        if (r->ppos == r->pcap) {
            size_t ncap = r->pcap * 2 > (size_t)r->h.len + 1 ?
                          (size_t)r->h.len + 1 : r->pcap * 2;
            unsigned char *np = realloc(r->payload, ncap);

            if (!np) {
                snprintf(r->err, sizeof r->err, "out of memory");
                close_fds(r);
                return -ENOMEM;
            }
            r->payload = np;
            r->pcap = ncap;
        }
        {
            int had = r->nfds;

            n = rd_recv(r, fd, r->payload + r->ppos, r->pcap - r->ppos >
                        r->h.len - r->ppos ? r->h.len - r->ppos :
                        r->pcap - r->ppos);
            if (n >= 0 && r->nfds != had) {
                snprintf(r->err, sizeof r->err, "protocol error: fd "
                         "inside a %s payload", tfork__op_name(r->h.op));
                n = -EPROTO;
            }
        }
        if (n == -EAGAIN)
            return 0;
        if (n == 0) {
            snprintf(r->err, sizeof r->err, "protocol error: EOF inside "
                     "a %s frame", tfork__op_name(r->h.op));
            n = -EPROTO;
        }
        if (n < 0) {
            if (n != -EPROTO && n != -ENOMEM && n != -EMFILE &&
                n != -ENFILE)
                snprintf(r->err, sizeof r->err, "receive failed: %s",
                         strerror((int)-n));
            close_fds(r);
            return (int)n;
        }
        r->ppos += (size_t)n;
    }
    if (r->pcap < (size_t)r->h.len + 1) {
        unsigned char *np = realloc(r->payload, (size_t)r->h.len + 1);

        if (!np) {
            snprintf(r->err, sizeof r->err, "out of memory");
            close_fds(r);
            return -ENOMEM;
        }
        r->payload = np;
        r->pcap = (size_t)r->h.len + 1;
    }
    r->payload[r->h.len] = '\0';
    return 1;
}
