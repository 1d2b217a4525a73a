/* proto.c: encoding and decoding of tfork frames (see proto.h).
 * No I/O: both sides and the Check suite use these byte by byte. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include "proto.h"

struct op_info {
    const char *name;   /* "FORK" */
    int cmd;            /* 1: client to process, 0: process to client */
    int fds;            /* fds the frame carries */
};

#define OP_DIR_C 1
#define OP_DIR_P 0
static const struct op_info ops[TFORK_OP_LIMIT] = {
#define OP_INFO(n, c, d, f) [c] = { #n, OP_DIR_##d, f },
    TFORK_OPS(OP_INFO)
#undef OP_INFO
};

const char *tfork__op_name(unsigned op)
{
    return op < TFORK_OP_LIMIT ? ops[op].name : NULL;
}

int tfork__op_fds(unsigned op)
{
    return tfork__op_name(op) ? ops[op].fds : -1;
}

int tfork__op_is_cmd(unsigned op)
{
    return tfork__op_name(op) ? ops[op].cmd : -1;
}

static void put32(unsigned char *p, uint32_t v)
{
    p[0] = v & 0xff;
    p[1] = (v >> 8) & 0xff;
    p[2] = (v >> 16) & 0xff;
    p[3] = (v >> 24) & 0xff;
}

static uint32_t get32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

void tfork__hdr_put(unsigned char out[TFORK_HDR_LEN], unsigned op,
                    unsigned nfds, uint32_t len)
{
    out[0] = (unsigned char)op;
    out[1] = (unsigned char)nfds;
    out[2] = out[3] = 0;
    put32(out + 4, len);
}

int tfork__hdr_get(const unsigned char in[TFORK_HDR_LEN], int cmd,
                   tfork_hdr *h, char *err, size_t errlen)
{
    h->op = in[0];
    h->nfds = in[1];
    h->len = get32(in + 4);
    if (tfork__op_is_cmd(h->op) != cmd) {
        snprintf(err, errlen, "protocol error: unknown %s op %u",
                 cmd ? "command" : "reply", h->op);
        return -EPROTO;
    }
    if (in[2] || in[3]) {
        snprintf(err, errlen, "protocol error: reserved header bytes set "
                 "in %s frame", tfork__op_name(h->op));
        return -EPROTO;
    }
    if ((int)h->nfds != ops[h->op].fds &&
        !(h->op == TFORK_OP_FORKED && h->nfds == 1)) {
        snprintf(err, errlen, "protocol error: %s frame with %u fds "
                 "(takes %d)", tfork__op_name(h->op), h->nfds,
                 ops[h->op].fds);
        return -EPROTO;
    }
    if (h->len > TFORK_FRAME_MAX) {
        snprintf(err, errlen, "protocol error: %s frame of %lu bytes "
                 "exceeds the %u byte cap", tfork__op_name(h->op),
                 (unsigned long)h->len, TFORK_FRAME_MAX);
        return -EPROTO;
    }
    return 0;
}

static void buf_need(tfork_buf *b, size_t more)
{
    size_t want, ncap;
    unsigned char *np;

    if (b->oom)
        return;
    if (more > SIZE_MAX / 2 - b->len) {
        b->oom = 1;
        return;
    }
    want = b->len + more;
    if (want <= b->cap)
        return;
    ncap = b->cap ? b->cap : 64;
    while (ncap < want)
        ncap *= 2;
    np = realloc(b->p, ncap);
    if (!np) {
        b->oom = 1;
        return;
    }
    b->p = np;
    b->cap = ncap;
}

void tfork__buf_frame(tfork_buf *b, unsigned op, unsigned nfds)
{
    b->p = NULL;
    b->len = b->cap = 0;
    b->oom = 0;
    buf_need(b, TFORK_HDR_LEN);
    if (b->oom)
        return;
    tfork__hdr_put(b->p, op, nfds, 0);
    b->len = TFORK_HDR_LEN;
}

void tfork__buf_raw(tfork_buf *b, const void *s, size_t len)
{
    buf_need(b, len);
    if (b->oom || !len)
        return;
    memcpy(b->p + b->len, s, len);
    b->len += len;
}

void tfork__buf_u32(tfork_buf *b, uint32_t v)
{
    unsigned char x[4];

    put32(x, v);
    tfork__buf_raw(b, x, 4);
}

void tfork__buf_str(tfork_buf *b, const char *s, size_t len)
{
    if (len > UINT32_MAX) {
        b->oom = 1;
        return;
    }
    tfork__buf_u32(b, (uint32_t)len);
    tfork__buf_raw(b, s, len);
    tfork__buf_raw(b, "", 1);
}

void tfork__buf_free(tfork_buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

int tfork__buf_end(tfork_buf *b)
{
    if (b->oom) {
        tfork__buf_free(b);
        return -ENOMEM;
    }
    if (b->len - TFORK_HDR_LEN > TFORK_FRAME_MAX) {
        tfork__buf_free(b);
        return -E2BIG;
    }
    put32(b->p + 4, (uint32_t)(b->len - TFORK_HDR_LEN));
    return 0;
}

void tfork__cur_init(tfork_cur *c, const void *payload, size_t len)
{
    c->p = payload;
    c->end = c->p + len;
    c->bad = 0;
}

int tfork__cur_u32(tfork_cur *c, uint32_t *v)
{
    if (c->bad || c->end - c->p < 4) {
        c->bad = 1;
        *v = 0;
        return -EPROTO;
    }
    *v = get32(c->p);
    c->p += 4;
    return 0;
}

int tfork__cur_i32(tfork_cur *c, int32_t *v)
{
    uint32_t u;
    int r = tfork__cur_u32(c, &u);

    *v = (int32_t)u;
    return r;
}

int tfork__cur_str(tfork_cur *c, const char **s, size_t *len)
{
    uint32_t n;

    *s = NULL;
    if (len)
        *len = 0;
    if (tfork__cur_u32(c, &n))
        return -EPROTO;
    if ((size_t)(c->end - c->p) < (size_t)n + 1 || c->p[n] != '\0') {
        c->bad = 1;
        return -EPROTO;
    }
    *s = (const char *)c->p;
    if (len)
        *len = n;
    c->p += (size_t)n + 1;
    return 0;
}

int tfork__cur_list(tfork_cur *c, uint32_t max, char ***v, uint32_t *n)
{
    uint32_t i, cnt;
    char **a;

    *v = NULL;
    *n = 0;
    if (tfork__cur_u32(c, &cnt))
        return -EPROTO;
    /* each string needs at least 5 bytes, so a count the payload cannot
     * hold is refused before anything is allocated */
    if (cnt > max || cnt > (size_t)(c->end - c->p) / 5) {
        c->bad = 1;
        return -EPROTO;
    }
    a = malloc(((size_t)cnt + 1) * sizeof *a);
    if (!a) {
        c->bad = 1;
        return -ENOMEM;
    }
    for (i = 0; i < cnt; i++) {
        const char *s;

        if (tfork__cur_str(c, &s, NULL)) {
            free(a);
            return -EPROTO;
        }
        a[i] = (char *)s;
    }
    a[cnt] = NULL;
    *v = a;
    *n = cnt;
    return 0;
}

int tfork__cur_done(const tfork_cur *c)
{
    return c->bad || c->p != c->end ? -EPROTO : 0;
}

/* ---- the RPC channel ---- */

struct rpc_op_info {
    const char *name;   /* "RPC_CALL" */
    int to_child;       /* 1: parent to child (Q), 0: child to parent (A) */
};

#define RPC_DIR_Q 1
#define RPC_DIR_A 0
static const struct rpc_op_info rpc_ops[TFORK_RPC_OP_LIMIT] = {
#define RPC_OP_INFO(n, c, d) [c] = { #n, RPC_DIR_##d },
    TFORK_RPC_OPS(RPC_OP_INFO)
#undef RPC_OP_INFO
};

const char *tfork__rpc_op_name(unsigned op)
{
    return op < TFORK_RPC_OP_LIMIT ? rpc_ops[op].name : NULL;
}

int tfork__rpc_hdr_get(const unsigned char in[TFORK_HDR_LEN], int to_child,
                       tfork_hdr *h, char *err, size_t errlen)
{
    h->op = in[0];
    h->nfds = in[1];
    h->len = get32(in + 4);
    if (!tfork__rpc_op_name(h->op) || rpc_ops[h->op].to_child != to_child) {
        snprintf(err, errlen, "protocol error: unknown rpc %s op %u",
                 to_child ? "call" : "reply", h->op);
        return -EPROTO;
    }
    if (in[2] || in[3] || h->nfds) {
        snprintf(err, errlen, "protocol error: reserved header bytes set "
                 "in %s frame", rpc_ops[h->op].name);
        return -EPROTO;
    }
    if (h->len > TFORK_FRAME_MAX) {
        snprintf(err, errlen, "protocol error: %s frame of %lu bytes "
                 "exceeds the %u byte cap", rpc_ops[h->op].name,
                 (unsigned long)h->len, TFORK_FRAME_MAX);
        return -EPROTO;
    }
    return 0;
}

int tfork__parts_check(int n, const struct iovec *v)
{
    size_t total = 0;

    if (n < 0 || (n > 0 && !v))
        return -EINVAL;
    if ((unsigned)n > TFORK_RPC_PARTS)
        return -E2BIG;
    for (int i = 0; i < n; i++) {
        if (!v[i].iov_base && v[i].iov_len)
            return -EINVAL;
        if (v[i].iov_len > TFORK_RPC_BYTES - total)
            return -E2BIG;
        total += v[i].iov_len;
    }
    return 0;
}

void tfork__buf_parts(tfork_buf *b, int n, const struct iovec *v)
{
    size_t total = 4;

    for (int i = 0; i < n; i++)
        total += 5 + v[i].iov_len;
    buf_need(b, total);     /* once: a 16 MiB reply is not copied twice */
    tfork__buf_u32(b, (uint32_t)n);
    for (int i = 0; i < n; i++)
        tfork__buf_str(b, v[i].iov_base, v[i].iov_len);
}

int tfork__cur_parts(tfork_cur *c, struct iovec **v, uint32_t *n)
{
    uint32_t i, cnt;
    size_t total = 0;
    struct iovec *a;

    *v = NULL;
    *n = 0;
    if (tfork__cur_u32(c, &cnt))
        return -EPROTO;
    if (cnt > TFORK_RPC_PARTS || cnt > (size_t)(c->end - c->p) / 5) {
        c->bad = 1;
        return -EPROTO;
    }
    if (!cnt)
        return 0;
    a = malloc((size_t)cnt * sizeof *a);
    if (!a) {
        c->bad = 1;
        return -ENOMEM;
    }
    for (i = 0; i < cnt; i++) {
        const char *s;
        size_t len;

        if (tfork__cur_str(c, &s, &len) || len > TFORK_RPC_BYTES - total) {
            c->bad = 1;
            free(a);
            return -EPROTO;
        }
        total += len;
        a[i].iov_base = (void *)s;
        a[i].iov_len = len;
    }
    *v = a;
    *n = cnt;
    return 0;
}
