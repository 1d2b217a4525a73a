/* fuzz_reply.c: process-to-client frames (replies), as a hostile or
 * buggy template or child would send them.  First the exact frame reader
 * alone (replies, as fuzz_cmd does for commands); then the real client:
 * a tfork handle on a libev loop, with a child forked, run or exec'd and
 * on_exit asked as the scenario byte says, reads the bytes as its
 * template's and its child's replies (client.c's handle_frame), until
 * EOF.  Whatever arrives, every accepted run/exec gets exactly one
 * callback, every accepted on_exit fires exactly once, and once all is
 * freed nothing is left: no fd (counted), no memory (LeakSanitizer under
 * libFuzzer).
 *   byte 0: scenario (REP_* below); byte 1: reader plan: bits 0-2 the
 *   piece size (rep_pieces), bits 3-7 the fd plan of the first 5 pieces;
 *   byte 2: n, the last n bytes are the child's stream (its socket), the
 *   bytes between are the template's. */
#include <ev.h>

#include "fuzz.h"

#define REP_FORK     0x01   /* tfork_fork a child c (fork id 1) */
#define REP_ONEXIT   0x02   /* tfork_on_exit on the template and on c */
#define REP_RUN      0x04   /* tfork_run the target */
#define REP_EXEC     0x08   /* tfork_exec the target (when not REP_RUN) */
#define REP_TPL      0x10   /* the target is the template, not c */
#define REP_FORK2    0x20   /* a second child (id 2) whose peer is gone */
#define REP_FREE     0x40   /* tfork_free the template before any reply */
#define REP_HALVES   0x80   /* the template's bytes in two halves */

static const size_t rep_pieces[8] = { 0, 1, 2, 3, 5, 8, 13, 64 };

struct rep_cb {
    int accepted;           /* the call returned 0 */
    int calls;              /* callbacks so far */
    int exec;               /* run (0) or exec (1) */
};

static int rep_in_api;      /* > 0 inside a tfork_* call */

static void rep_run_cb(tfork *p, int fd, int err, void *data)
{
    struct rep_cb *r = data;
    const char *m = tfork_errmsg(p);

    FUZZ_ASSERT(!rep_in_api, "run callback inside the call");
    r->calls++;
    if (err == 0 && !r->exec)
        FUZZ_ASSERT(fd >= 0 && (fcntl(fd, F_GETFD) & FD_CLOEXEC), "fd %d",
                    fd);
    else
        FUZZ_ASSERT(fd == -1, "fd %d with err %d", fd, err);
    FUZZ_ASSERT(err <= 0, "err %d", err);
    /* the text is the peer's (ERROR frames): it may say nothing */
    if (err < 0)
        FUZZ_ASSERT(m, "err %d without a message", err);
    if (fd >= 0)
        close(fd);
}

static void rep_exit_cb(pid_t pid, int status, void *data)
{
    struct rep_cb *r = data;

    (void)pid;
    (void)status;
    FUZZ_ASSERT(!rep_in_api, "exit callback inside the call");
    r->calls++;
}

/* Writes all of buf to a nonblocking socket whose reader is the loop. */
static void rep_write(struct ev_loop *loop, int sock, const uint8_t *buf,
                      size_t len)
{
    while (len > 0) {
        ssize_t n = fuzz_send(sock, buf, len, -1, 0);

        if (n == -EAGAIN) {
            ev_run(loop, EVRUN_NOWAIT);
            continue;
        }
        if (n < 0)
            return;         /* the client closed: the rest is moot */
        buf += n;
        len -= (size_t)n;
    }
}

static void rep_spin(struct ev_loop *loop, int *peer, int npeer, int rounds)
{
    for (int i = 0; i < rounds; i++) {
        ev_run(loop, EVRUN_NOWAIT);
        for (int k = 0; k < npeer; k++)
            if (peer[k] >= 0)
                fuzz_drain(peer[k], NULL, 0);
    }
}

FUZZ_ENTRY(reply)
{
    struct rep_cb run = { 0, 0, 0 }, ex_t = { 0, 0, 0 }, ex_c = { 0, 0, 0 };
    const uint8_t *ts, *cs;
    size_t tn, cn;
    unsigned sc;
    int fds0, sv[2], peer[3] = { -1, -1, -1 }, got[2] = { -1, -1 };
    struct ev_loop *loop;
    tfork *p, *c = NULL, *c2 = NULL, *target;
    int p_owned = 1, c_owned = 0;

    if (size < 3 || size > (1u << 16))
        return 0;
    sc = data[0];
    cn = data[2] < size - 3 ? data[2] : size - 3;
    ts = data + 3;
    tn = size - 3 - cn;
    cs = ts + tn;

    /* the decoder alone, on the template's bytes */
    if (tn >= TFORK_HDR_LEN)
        fuzz_hdr_diff(ts);
    fuzz_rd_stream(0, rep_pieces[data[1] & 7], data[1] >> 3, ts, tn);

    /* the real client */
    fds0 = fuzz_fd_count();
    loop = ev_loop_new(EVBACKEND_POLL);
    FUZZ_ASSERT(loop, "no loop");
    fuzz_socketpair(sv, 1, 1);
    p = tfork__proc_new(loop, sv[0]);
    FUZZ_ASSERT(p, "no handle");
    p->root = 1;                /* a template, as tfork_new_exec makes */
    peer[0] = sv[1];
    rep_in_api++;
    if (sc & REP_FORK) {
        c = tfork_fork(p);
        FUZZ_ASSERT(c, "tfork_fork: %s", strerror(errno));
        c_owned = 1;
    }
    if (sc & REP_FORK2) {
        c2 = tfork_fork(p);
        FUZZ_ASSERT(c2, "tfork_fork: %s", strerror(errno));
    }
    if (sc & REP_ONEXIT) {
        ex_t.accepted = tfork_on_exit(p, rep_exit_cb, &ex_t) == 0;
        if (c)
            ex_c.accepted = tfork_on_exit(c, rep_exit_cb, &ex_c) == 0;
    }
    target = (sc & REP_TPL) || !c ? p : c;
    if (sc & (REP_RUN | REP_EXEC)) {
        char *argv[] = { (char *)"prog", NULL };
        int r;

        run.exec = !(sc & REP_RUN);
        r = run.exec ? tfork_exec(target, "/nonexistent/prog", argv, NULL,
                                  rep_run_cb, &run) :
            tfork_run(target, "fuzz_func", rep_run_cb, &run);
        FUZZ_ASSERT(r == 0, "run/exec refused: %d", r);
        run.accepted = 1;       /* the handle is the library's now */
        if (target == p)
            p_owned = 0;
        else
            c_owned = 0;
    }
    if ((sc & REP_FREE) && p_owned) {
        tfork_free(p);
        p_owned = 0;
    }
    rep_in_api--;
    /* the FORK frames go out from the loop: their fds are the children's
     * sockets, peer[1] (c's) and c2's, closed: a child that died */
    for (int i = 0; i < 2; i++)
        ev_run(loop, EVRUN_NOWAIT);
    fuzz_drain(sv[1], got, 2);
    if (c) {
        peer[1] = got[0];
        if (c2 && got[1] >= 0)
            close(got[1]);
    } else if (got[0] >= 0) {
        close(got[0]);
    }
    FUZZ_ASSERT(!c || peer[1] >= 0, "no FORK fd");
    if (peer[1] >= 0)
        fcntl(peer[1], F_SETFL, fcntl(peer[1], F_GETFL) | O_NONBLOCK);

    if (sc & REP_HALVES) {
        rep_write(loop, sv[1], ts, tn / 2);
        rep_spin(loop, peer, 2, 2);
        rep_write(loop, sv[1], ts + tn / 2, tn - tn / 2);
    } else {
        rep_write(loop, sv[1], ts, tn);
    }
    if (peer[1] >= 0) {
        rep_write(loop, peer[1], cs, cn);
        shutdown(peer[1], SHUT_WR);
    }
    shutdown(sv[1], SHUT_WR);
    rep_spin(loop, peer, 2, 8);

    /* the user lets go of what it still holds; then every process is
     * gone (its socket closed) */
    rep_in_api++;
    if (c_owned)
        tfork_free(c);
    if (c2)
        tfork_free(c2);
    if (p_owned)
        tfork_free(p);
    rep_in_api--;
    rep_spin(loop, peer, 2, 4);
    for (int k = 0; k < 2; k++)
        if (peer[k] >= 0)
            close(peer[k]);
    rep_spin(loop, peer, 0, 8);

    FUZZ_ASSERT(run.calls == run.accepted, "run callbacks: %d", run.calls);
    FUZZ_ASSERT(ex_t.calls == ex_t.accepted, "template on_exit: %d calls",
                ex_t.calls);
    FUZZ_ASSERT(ex_c.calls == ex_c.accepted, "child on_exit: %d calls",
                ex_c.calls);
    ev_loop_destroy(loop);
    FUZZ_ASSERT(fuzz_fd_count() == fds0, "fds leaked: %d, %d before",
                fuzz_fd_count(), fds0);
    return 0;
}
