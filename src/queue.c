/* queue.c: outgoing frame queues.  Frames wait here until the socket takes
 * them; a short write keeps its remainder, an fd rides on the first byte
 * of its frame, and frames without fds go out together. */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "tfork-int.h"

#define IOV_BATCH 16
/* Bytes one flush sends at most: a peer that keeps draining could
 * otherwise take a 64 MiB frame in one go while the loop waits for us. */
#define FLUSH_BUDGET (1u << 20)

int tfork__outq_push(struct tfork__outq *q, tfork_buf *b, int fd)
{
    struct tfork__frame *f;
    int r = tfork__buf_end(b);

    if (r < 0) {
        if (fd >= 0)
            close(fd);
        return r;
    }
    f = malloc(sizeof *f);
    if (!f) {
        tfork__buf_free(b);
        if (fd >= 0)
            close(fd);
        return -ENOMEM;
    }
    f->next = NULL;
    f->buf = b->p;
    f->len = b->len;
    f->off = 0;
    f->fd = fd;
    b->p = NULL;
    if (q->tail)
        q->tail->next = f;
    else
        q->head = f;
    q->tail = f;
    return 0;
}

static void frame_free(struct tfork__frame *f)
{
    if (f->fd >= 0)
        close(f->fd);
    free(f->buf);
    free(f);
}

void tfork__outq_drop(struct tfork__outq *q)
{
    while (q->head) {
        struct tfork__frame *f = q->head;

        q->head = f->next;
        frame_free(f);
    }
    q->tail = NULL;
}

int tfork__outq_flush(struct tfork__outq *q, int sock)
{
    size_t sent = 0;

    while (q->head && sock >= 0 && sent < FLUSH_BUDGET) {
        struct iovec iov[IOV_BATCH];
        struct tfork__frame *f = q->head;
        int n = 0, fds = f->off == 0 && f->fd >= 0;
        size_t room = FLUSH_BUDGET - sent;
        ssize_t w;

        /* a frame with an fd starts a batch: the fd must ride on its
         * own first byte, not on an earlier frame's.  The batch holds at
         * most the budget: one sendmsg to a reader that keeps draining
         * can take all it is given */
        for (; f && n < IOV_BATCH && room > 0; f = f->next) {
            if (n && f->fd >= 0)
                break;
            iov[n].iov_base = f->buf + f->off;
            iov[n].iov_len = f->len - f->off;
            if (iov[n].iov_len > room)
                iov[n].iov_len = room;
            room -= iov[n].iov_len;
            n++;
        }
        w = tfork__send(sock, iov, n, fds ? &q->head->fd : NULL,
                        fds ? 1 : 0, 1);
        if (w == -EAGAIN)
            return 0;
        if (w < 0)
            return (int)w;
        sent += (size_t)w;
        if (fds) {
            close(q->head->fd);
            q->head->fd = -1;
        }
        while (w > 0) {
            f = q->head;
            if ((size_t)w < f->len - f->off) {
                f->off += (size_t)w;
                break;
            }
            w -= (ssize_t)(f->len - f->off);
            q->head = f->next;
            if (!q->head)
                q->tail = NULL;
            frame_free(f);
        }
    }
    return 0;
}

int tfork__queue(tfork *p, tfork_buf *b, int fd)
{
    return tfork__outq_push(&p->q, b, fd);
}

int tfork__queue_hello(tfork *p)
{
    tfork_buf b;

    tfork__buf_frame(&b, TFORK_OP_HELLO, 0);
    tfork__buf_u32(&b, TFORK_PROTO_MAGIC);
    tfork__buf_u32(&b, TFORK_PROTO_VERSION);
    return tfork__queue(p, &b, -1);
}

void tfork__queue_drop(tfork *p)
{
    tfork__outq_drop(&p->q);
}

int tfork__flush(tfork *p)
{
    return tfork__outq_flush(&p->q, p->fd);
}
