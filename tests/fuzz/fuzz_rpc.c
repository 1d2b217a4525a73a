/* fuzz_rpc.c: the RPC channel's frame decoder (src/rpc_io.c's read-ahead
 * reader tfork__rrd_fill/_frame, proto.c's tfork__rpc_hdr_get, and the
 * parts: tfork__cur_parts, tfork__parts_check, tfork__buf_parts).  The
 * input after the plan byte is a byte stream sent through a socketpair in
 * pieces; every frame the reader returns must be the next bytes sent,
 * valid by proto.h's rules, and its payload decodes and encodes back to
 * the same bytes (fuzz_frame_check).  A failure says why.
 *   byte 0: bit 0 the direction (1: to the child, Q ops; 0: to the
 *   parent, A ops), bits 1-3 the piece size (rpc_pieces).
 * With bit 4 of byte 0 set, the bytes go to the real parent instead
 * (src/rpc.c): a tfork_rpc handle with calls queued reads them as its
 * child's answers, after a RUNOK (unless bit 1: then they are the core's
 * replies too); bit 5 asks for an async child, bits 6-7 the number of
 * calls.  Whatever arrives, every accepted call gets exactly one
 * callback, never inside an API call; on_error fires at most once and
 * after every call's callback; on_destroy only after tfork_rpc_free and
 * never with on_error; and all is released (fds counted, LeakSanitizer
 * under libFuzzer). */
#include <ev.h>

#include "fuzz.h"

struct rpc_state {
    int in_api;             /* > 0 inside a tfork_* call */
    int calls[4];           /* callbacks per call */
    int pending;            /* accepted calls not yet answered */
    int errors, destroys, events;
    int freed;              /* tfork_rpc_free was called */
};

static void rpc_parts_ok(int n, const struct iovec *v)
{
    FUZZ_ASSERT(n >= 0 && (n == 0 || v), "%d parts at %p", n, (void *)v);
    for (int i = 0; i < n; i++)
        FUZZ_ASSERT(!((const char *)v[i].iov_base)[v[i].iov_len],
                    "part %d without its NUL", i);
}

static struct rpc_state *rpc_st;

static void rpc_call_cb(int err, const char *msg, int n,
                        const struct iovec *res, void *data)
{
    int *calls = data;

    FUZZ_ASSERT(!rpc_st->in_api, "call callback inside an API call");
    FUZZ_ASSERT(!rpc_st->errors, "call callback after on_error");
    (*calls)++;
    rpc_st->pending--;
    FUZZ_ASSERT(msg, "no msg");
    if (err == 0) {
        FUZZ_ASSERT(!msg[0], "reply with msg %s", msg);
        rpc_parts_ok(n, res);
    } else {
        /* msg may be empty: it is the peer's text (ERROR, RPC_FAIL) */
        FUZZ_ASSERT(err < 0 && n == 0 && !res, "err %d n %d", err, n);
    }
}

static void rpc_on_event(tfork_rpc *r, int n, const struct iovec *ev,
                         void *data)
{
    struct rpc_state *st = data;

    (void)r;
    FUZZ_ASSERT(!st->in_api, "on_event inside an API call");
    rpc_parts_ok(n, ev);
    st->events++;
}

static void rpc_on_error(tfork_rpc *r, int err, const char *msg, void *data)
{
    struct rpc_state *st = data;

    (void)r;
    FUZZ_ASSERT(!st->in_api, "on_error inside an API call");
    FUZZ_ASSERT(err < 0 && msg, "on_error %d", err);
    FUZZ_ASSERT(st->pending == 0, "on_error with %d calls unanswered",
                st->pending);
    st->errors++;
}

static void rpc_on_destroy(tfork_rpc *r, void *data)
{
    struct rpc_state *st = data;

    (void)r;
    FUZZ_ASSERT(!st->in_api, "on_destroy inside an API call");
    FUZZ_ASSERT(st->freed, "on_destroy before tfork_rpc_free");
    st->destroys++;
}

static void rpc_spin(struct ev_loop *loop, int peer, int rounds)
{
    for (int i = 0; i < rounds; i++) {
        ev_run(loop, EVRUN_NOWAIT);
        if (peer >= 0)
            fuzz_drain(peer, NULL, 0);
    }
}

static void rpc_parent(unsigned plan, const uint8_t *stream, size_t len)
{
    struct rpc_state st;
    tfork_rpc_opts o;
    struct ev_loop *loop;
    int fds0 = fuzz_fd_count(), sv[2], ncalls = (int)(plan >> 6);
    int accepted[4] = { 0, 0, 0, 0 };
    tfork_rpc *r;
    tfork *p;

    memset(&st, 0, sizeof st);
    rpc_st = &st;
    memset(&o, 0, sizeof o);
    o.async = !!(plan & 0x20);
    o.on_event = rpc_on_event;
    o.on_error = rpc_on_error;
    o.on_destroy = rpc_on_destroy;
    o.data = &st;
    loop = ev_loop_new(EVBACKEND_POLL);
    FUZZ_ASSERT(loop, "no loop");
    fuzz_socketpair(sv, 1, 1);
    p = tfork__proc_new(loop, sv[0]);
    FUZZ_ASSERT(p, "no handle");
    st.in_api++;
    r = tfork_rpc_new(p, "fuzz_func", &o);
    FUZZ_ASSERT(r, "tfork_rpc_new: %s", strerror(errno));
    for (int i = 0; i < ncalls; i++) {
        struct iovec a = { (void *)"arg", 3 };

        accepted[i] = tfork_rpc_call(r, i & 1, &a, rpc_call_cb,
                                     &st.calls[i]) == 0;
        st.pending += accepted[i];
    }
    st.in_api--;
    rpc_spin(loop, sv[1], 2);
    if (!(plan & 0x02)) {
        unsigned char ok[TFORK_HDR_LEN + 4] = { TFORK_OP_RUNOK, 0, 0, 0,
                                                4, 0, 0, 0, 100, 0, 0, 0 };

        fuzz_send(sv[1], ok, sizeof ok, -1, 0);
    }
    for (size_t off = 0; off < len;) {
        ssize_t k = fuzz_send(sv[1], stream + off, len - off, -1, 0);

        if (k == -EAGAIN) {
            rpc_spin(loop, sv[1], 1);
            continue;
        }
        if (k < 0)
            break;
        off += (size_t)k;
    }
    shutdown(sv[1], SHUT_WR);
    rpc_spin(loop, sv[1], 8);
    st.in_api++;
    st.freed = 1;
    tfork_rpc_free(r);
    st.in_api--;
    rpc_spin(loop, sv[1], 4);
    close(sv[1]);
    rpc_spin(loop, -1, 8);
    for (int i = 0; i < ncalls; i++)
        FUZZ_ASSERT(st.calls[i] == accepted[i], "call %d: %d callbacks", i,
                    st.calls[i]);
    FUZZ_ASSERT(st.errors <= 1 && st.destroys <= 1 &&
                st.errors + st.destroys == 1, "on_error %d, on_destroy %d",
                st.errors, st.destroys);
    ev_loop_destroy(loop);
    rpc_st = NULL;
    FUZZ_ASSERT(fuzz_fd_count() == fds0, "fds leaked: %d, %d before",
                fuzz_fd_count(), fds0);
}

static const size_t rpc_pieces[8] = { 0, 1, 3, 7, 8, 64, 4096, 65536 };

FUZZ_ENTRY(rpc)
{
    int to_child, sv[2], fds0, shut = 0, dead = 0;
    size_t piece, sent = 0, off = 0, len;
    const uint8_t *stream;
    tfork__rrd r;

    if (size < 1 || size > (8u << 20))
        return 0;
    if (data[0] & 0x10) {
        rpc_parent(data[0], data + 1, size - 1);
        return 0;
    }
    to_child = data[0] & 1;
    piece = rpc_pieces[(data[0] >> 1) & 7];
    stream = data + 1;
    len = size - 1;
    if (len >= TFORK_HDR_LEN)
        fuzz_hdr_diff(stream);

    fds0 = fuzz_fd_count();
    fuzz_socketpair(sv, 1, 1);
    tfork__rrd_init(&r, to_child);
    while (!dead) {
        ssize_t got;

        if (sent < len) {
            size_t n = piece && piece < len - sent ? piece : len - sent;
            ssize_t k = fuzz_send(sv[1], stream + sent, n, -1, 0);

            FUZZ_ASSERT(k > 0 || k == -EAGAIN, "send: %s",
                        strerror((int)-k));
            if (k > 0)
                sent += (size_t)k;
        } else if (!shut) {
            shutdown(sv[1], SHUT_WR);
            shut = 1;
        }
        got = tfork__rrd_fill(&r, sv[0], 1);
        if (got < 0) {
            FUZZ_ASSERT(got == -EPIPE || got == -EPROTO || got == -ENOMEM,
                        "rrd_fill returned %zd (%s)", got, r.err);
            FUZZ_ASSERT(r.err[0], "no message for %zd", got);
            if (got == -EPIPE)
                FUZZ_ASSERT(shut, "EOF before the end");
            /* a peer gone inside a frame is gone all the same; the
             * frames before it were all returned */
            if (got == -EPIPE && off == len)
                FUZZ_ASSERT(!strstr(r.err, "inside"), "%s", r.err);
            break;
        }
        FUZZ_ASSERT(r.start <= r.end && r.end <= r.cap, "buffer %zu %zu %zu",
                    r.start, r.end, r.cap);
        FUZZ_ASSERT(r.cap <= TFORK_HDR_LEN + TFORK_FRAME_MAX + 65536,
                    "buffer of %zu bytes", r.cap);
        for (;;) {
            tfork_hdr h;
            const unsigned char *pl = NULL;
            int k = tfork__rrd_frame(&r, &h, &pl);

            if (k == 0)
                break;
            if (k < 0) {
                FUZZ_ASSERT(k == -EPROTO && r.err[0], "rrd_frame %d", k);
                FUZZ_ASSERT(off + TFORK_HDR_LEN <= sent &&
                            !fuzz_hdr_ok(stream + off, to_child ? 2 : 3),
                            "valid header refused: %s", r.err);
                dead = 1;
                break;
            }
            FUZZ_ASSERT(off + TFORK_HDR_LEN + h.len <= sent,
                        "frame beyond the bytes sent");
            FUZZ_ASSERT(fuzz_hdr_ok(stream + off, to_child ? 2 : 3),
                        "invalid header accepted");
            FUZZ_ASSERT(h.op == stream[off] && (!h.len ||
                        memcmp(pl, stream + off + TFORK_HDR_LEN, h.len) == 0),
                        "frame bytes differ from those sent");
            fuzz_frame_check(stream + off, pl, h.len);
            off += TFORK_HDR_LEN + h.len;
        }
    }
    tfork__rrd_free(&r);
    close(sv[0]);
    close(sv[1]);
    FUZZ_ASSERT(fuzz_fd_count() == fds0, "fds leaked: %d, %d before",
                fuzz_fd_count(), fds0);
    return 0;
}
