/* rpc_io.c: reading RPC frames (tfork/rpc.h) on either side.  No fds ride
 * on this channel, so unlike fdpass.c's exact reader this one reads ahead
 * and takes every frame that has arrived with one recv. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "tfork-int.h"

#define RRD_MIN   65536u        /* the buffer's usual size */
#define RRD_KEEP  (1u << 20)    /* larger buffers shrink once empty */

void tfork__rrd_init(tfork__rrd *r, int to_child)
{
    memset(r, 0, sizeof *r);
    r->to_child = to_child;
}

void tfork__rrd_free(tfork__rrd *r)
{
    free(r->buf);
    tfork__rrd_init(r, r->to_child);
}

/* Room for more bytes: compacts, and grows only up to the size of the
 * frame under way, so a header claiming 64 MiB costs nothing until its
 * bytes arrive. */
static int rrd_room(tfork__rrd *r)
{
    size_t have = r->end - r->start, want = RRD_MIN;
    unsigned char *nb;

    if (have == 0 && r->cap > RRD_KEEP) {
        free(r->buf);
        r->buf = NULL;
        r->cap = r->start = r->end = 0;
    }
    if (r->end < r->cap)
        return 0;
    if (r->start > 0) {
        memmove(r->buf, r->buf + r->start, have);
        r->start = 0;
        r->end = have;
        if (r->end < r->cap)
            return 0;
    }
    if (r->cap) {
        /* full with one incomplete frame whose header is known */
        size_t need = TFORK_HDR_LEN + ((size_t)r->buf[4] |
                      (size_t)r->buf[5] << 8 | (size_t)r->buf[6] << 16 |
                      (size_t)r->buf[7] << 24);

        if (need > TFORK_HDR_LEN + TFORK_FRAME_MAX || need <= r->cap) {
            snprintf(r->err, sizeof r->err, "protocol error: bad rpc "
                     "frame header");
            return -EPROTO;
        }
        want = r->cap * 2 < need ? r->cap * 2 : need;
    }
    nb = realloc(r->buf, want);
    if (!nb) {
        snprintf(r->err, sizeof r->err, "out of memory");
        return -ENOMEM;
    }
    r->buf = nb;
    r->cap = want;
    return 0;
}

ssize_t tfork__rrd_fill(tfork__rrd *r, int fd, int nonblock)
{
    ssize_t n;
    int e = rrd_room(r);

    if (e < 0)
        return e;
    do
        n = recv(fd, r->buf + r->end, r->cap - r->end,
                 nonblock ? MSG_DONTWAIT : 0);
    while (n < 0 && errno == EINTR);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return 0;
        e = errno;
        snprintf(r->err, sizeof r->err, "receive failed: %s", strerror(e));
        return -e;
    }
    if (n == 0) {
        /* a peer that died in the middle of a frame is gone all the same */
        snprintf(r->err, sizeof r->err, r->end > r->start ?
                 "connection closed inside a frame" : "connection closed");
        return -EPIPE;
    }
    r->end += (size_t)n;
    return n;
}

int tfork__rrd_frame(tfork__rrd *r, tfork_hdr *h,
                     const unsigned char **payload)
{
    size_t have = r->end - r->start;

    if (have < TFORK_HDR_LEN)
        return 0;
    if (tfork__rpc_hdr_get(r->buf + r->start, r->to_child, h, r->err,
                           sizeof r->err))
        return -EPROTO;
    if (have - TFORK_HDR_LEN < h->len)
        return 0;
    *payload = r->buf + r->start + TFORK_HDR_LEN;
    r->start += TFORK_HDR_LEN + h->len;
    if (r->start == r->end)
        r->start = r->end = 0;
    return 1;
}
