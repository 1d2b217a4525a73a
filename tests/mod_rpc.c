/* mod_rpc.c: the module tests/check_rpc.c loads into tfork-serve children:
 * RPC functions for sync and async children, init functions and a plain
 * run function.  It links neither libtfork nor libev: tfork-serve exports
 * the child-side API and libev.  Of testutil.h it uses only the static
 * inline tu_fnv and tu_pattern (the bytes check_rpc.c checks). */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include <ev.h>

#include "tfork.h"
#include "tfork/rpc.h"
#include "testutil.h"

#define MOD_RPC_INIT_MAX 16     /* init args kept for "initargs" */

/* What the last init saw. */
static struct {
    int calls;                  /* init calls in this process */
    int loop;                   /* tfork_rpc_loop() was set inside init */
    int event_rc;               /* tfork_rpc_event's return inside init */
    int argc;
    char *buf[MOD_RPC_INIT_MAX];        /* copies (NULL: an fd) */
    size_t len[MOD_RPC_INIT_MAX];
} mod_rpc_init_seen;

static int mod_rpc_reply1(tfork_rpc_req *req, const char *s)
{
    struct iovec v = { (void *)s, strlen(s) };

    return tfork_rpc_reply(req, 1, &v);
}

static int mod_rpc_event1(const char *s)
{
    struct iovec v = { (void *)s, strlen(s) };

    return tfork_rpc_event(1, &v);
}

/* Every part must come with a NUL after it, also an empty one. */
static int mod_rpc_nul_ok(tfork_rpc_req *req, int n, const struct iovec *a)
{
    char m[64];

    for (int i = 0; i < n; i++)
        if (!a[i].iov_base || ((const char *)a[i].iov_base)[a[i].iov_len]) {
            snprintf(m, sizeof m, "no NUL after part %d", i);
            tfork_rpc_fail(req, m);
            return 0;
        }
    return 1;
}

static int mod_rpc_is(const struct iovec *a, const char *s)
{
    return a->iov_len == strlen(s) && memcmp(a->iov_base, s, a->iov_len) == 0;
}

static long mod_rpc_num(const struct iovec *a)
{
    return strtol(a->iov_base, NULL, 10);
}

/* ---------------------------------------------------------------- echo */

/* Replies with exactly the parts it got (n == 0 included). */
int mod_rpc_echo(tfork_rpc_req *req, int n, const struct iovec *a);
int mod_rpc_echo(tfork_rpc_req *req, int n, const struct iovec *a)
{
    if (mod_rpc_nul_ok(req, n, a))
        tfork_rpc_reply(req, n, a);
    return 0;
}
TFORK_EXPORT(mod_rpc_echo);

/* Replies "<parts> <bytes> <fnv64 of all bytes>" (no command part, so a
 * call can carry exactly TFORK_RPC_MAX bytes). */
int mod_rpc_len(tfork_rpc_req *req, int n, const struct iovec *a);
int mod_rpc_len(tfork_rpc_req *req, int n, const struct iovec *a)
{
    uint64_t h = TU_FNV0;
    size_t total = 0;
    char out[96];

    if (!mod_rpc_nul_ok(req, n, a))
        return 0;
    for (int i = 0; i < n; i++) {
        h = tu_fnv(h, a[i].iov_base, a[i].iov_len);
        total += a[i].iov_len;
    }
    snprintf(out, sizeof out, "%d %zu %016llx", n, total,
             (unsigned long long)h);
    mod_rpc_reply1(req, out);
    return 0;
}

/* ------------------------------------------- AnyEvent::Fork::RPC ports */

/* t/01_sync.t: event "ok <count>", reply "ok <count + 1>". */
int mod_rpc_count(tfork_rpc_req *req, int n, const struct iovec *a);
int mod_rpc_count(tfork_rpc_req *req, int n, const struct iovec *a)
{
    char s[32];
    long count = n > 0 ? mod_rpc_num(&a[0]) : -1;

    snprintf(s, sizeof s, "ok %ld", count);
    mod_rpc_event1(s);
    ++count;
    snprintf(s, sizeof s, "ok %ld", count);
    mod_rpc_reply1(req, s);
    return 0;
}

/* t/02_async.t: event "ok 5" at once, then every 0.1 s event "ok <5 + k>",
 * and at tick k == count the reply "ok <6 + k>". */
struct mod_rpc_ticks {
    ev_timer w;
    tfork_rpc_req *req;
    int k, count;
};

static void mod_rpc_tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct mod_rpc_ticks *t = (struct mod_rpc_ticks *)w;
    char s[32];

    (void)revents;
    ++t->k;
    snprintf(s, sizeof s, "ok %d", t->k + 5);
    mod_rpc_event1(s);
    if (t->k == t->count) {
        ev_timer_stop(loop, w);
        snprintf(s, sizeof s, "ok %d", t->k + 6);
        mod_rpc_reply1(t->req, s);
        free(t);
    }
}

int mod_rpc_ticks(tfork_rpc_req *req, int n, const struct iovec *a);
int mod_rpc_ticks(tfork_rpc_req *req, int n, const struct iovec *a)
{
    struct ev_loop *loop = tfork_rpc_loop();
    struct mod_rpc_ticks *t;

    if (!loop) {
        tfork_rpc_fail(req, "mod_rpc_ticks: no loop (not async?)");
        return 0;
    }
    t = calloc(1, sizeof *t);
    if (!t)
        return ENOMEM;
    t->req = req;
    t->count = n > 0 ? (int)mod_rpc_num(&a[0]) : 1;
    mod_rpc_event1("ok 5");
    ev_timer_init(&t->w, mod_rpc_tick_cb, 0.1, 0.1);
    ev_timer_start(loop, &t->w);
    return 0;
}

static tfork_rpc_req *mod_rpc_kept;      /* "keep": an answered req */

/* ---------------------------------------------------------------- do:
 * part 0 is a command, the rest its arguments.  Works in sync and async
 * children. */

struct mod_rpc_later {
    ev_timer w;
    tfork_rpc_req *req;
    size_t len;
    char tag[];                 /* the reply */
};

static void mod_rpc_later_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct mod_rpc_later *l = (struct mod_rpc_later *)w;
    struct iovec v = { l->tag, l->len };

    (void)revents;
    ev_timer_stop(loop, w);
    tfork_rpc_reply(l->req, 1, &v);
    free(l);
}

/* Replies tag after ms milliseconds: from the loop when async, after a
 * sleep when sync. */
static int mod_rpc_delay(tfork_rpc_req *req, long ms, const struct iovec *tag)
{
    struct ev_loop *loop = tfork_rpc_loop();
    struct mod_rpc_later *l;

    if (!loop) {
        struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
            ;
        tfork_rpc_reply(req, 1, tag);
        return 0;
    }
    l = malloc(sizeof *l + tag->iov_len + 1);
    if (!l)
        return ENOMEM;
    l->req = req;
    l->len = tag->iov_len;
    memcpy(l->tag, tag->iov_base, tag->iov_len);
    ev_timer_init(&l->w, mod_rpc_later_cb, (double)ms / 1000., 0.);
    ev_timer_start(loop, &l->w);
    return 0;
}

/* Dies the way it is told, with no core file. */
static void mod_rpc_die(const struct iovec *how)
{
    struct rlimit no = { 0, 0 };

    setrlimit(RLIMIT_CORE, &no);
    if (mod_rpc_is(how, "segv"))
        raise(SIGSEGV);
    else if (mod_rpc_is(how, "abort"))
        abort();
    _exit(3);
}

/* "big" data size seed: event "got", then the reply
 * ["<len> <fnv64 of data>", <size> bytes of tu_pattern(seed)]. */
static int mod_rpc_big(tfork_rpc_req *req, int n, const struct iovec *a)
{
    struct iovec out[2];
    char head[64];
    unsigned char *b;
    size_t size;
    uint64_t seed;

    if (n != 4) {
        tfork_rpc_fail(req, "big: data size seed");
        return 0;
    }
    mod_rpc_event1("got");
    size = (size_t)strtoull(a[2].iov_base, NULL, 10);
    seed = strtoull(a[3].iov_base, NULL, 16);
    snprintf(head, sizeof head, "%zu %016llx", a[1].iov_len,
             (unsigned long long)tu_fnv(TU_FNV0, a[1].iov_base,
                                             a[1].iov_len));
    b = malloc(size ? size : 1);
    if (!b)
        return ENOMEM;
    tu_pattern(b, size, seed);
    out[0].iov_base = head;
    out[0].iov_len = strlen(head);
    out[1].iov_base = b;
    out[1].iov_len = size;
    tfork_rpc_reply(req, 2, out);
    free(b);
    return 0;
}

/* Child-side caps: a reply and an event over TFORK_RPC_MAX bytes or
 * TFORK_RPC_PARTS_MAX parts are refused; then the reply says the codes. */
static int mod_rpc_caps(tfork_rpc_req *req)
{
    size_t big = (size_t)TFORK_RPC_MAX + 1;
    char *b = malloc(big);      /* untouched: only its length matters */
    struct iovec one, *many;
    char out[128];
    int r1, r2, r3, r4;

    many = calloc(TFORK_RPC_PARTS_MAX + 1, sizeof *many);
    if (!b || !many) {
        free(b);
        free(many);
        return ENOMEM;
    }
    one.iov_base = b;
    one.iov_len = big;
    for (unsigned i = 0; i <= TFORK_RPC_PARTS_MAX; i++) {
        many[i].iov_base = b;
        many[i].iov_len = 1;
    }
    r1 = tfork_rpc_reply(req, 1, &one);
    r2 = tfork_rpc_reply(req, (int)TFORK_RPC_PARTS_MAX + 1, many);
    r3 = tfork_rpc_event(1, &one);
    r4 = tfork_rpc_event((int)TFORK_RPC_PARTS_MAX + 1, many);
    free(many);
    free(b);
    snprintf(out, sizeof out, "caps %d %d %d %d", r1, r2, r3, r4);
    mod_rpc_reply1(req, out);
    return 0;
}

/* Exactly TFORK_RPC_MAX bytes back: 8 parts of 8 MiB, one buffer. */
static int mod_rpc_maxreply(tfork_rpc_req *req)
{
    size_t each = (size_t)TFORK_RPC_MAX / 8;
    unsigned char *b = malloc(each);
    struct iovec v[8];

    if (!b)
        return ENOMEM;
    tu_pattern(b, each, 0x1234);
    for (int i = 0; i < 8; i++) {
        v[i].iov_base = b;
        v[i].iov_len = each;
    }
    tfork_rpc_reply(req, 8, v);
    free(b);
    return 0;
}

int mod_rpc_do(tfork_rpc_req *req, int n, const struct iovec *a);
int mod_rpc_do(tfork_rpc_req *req, int n, const struct iovec *a)
{
    char out[256];

    if (!mod_rpc_nul_ok(req, n, a))
        return 0;
    if (n < 1) {
        tfork_rpc_fail(req, "no command");
        return 0;
    }
    if (mod_rpc_is(&a[0], "echo")) {
        tfork_rpc_reply(req, n - 1, a + 1);
    } else if (mod_rpc_is(&a[0], "pid")) {
        snprintf(out, sizeof out, "%d %d", (int)getpid(), (int)getppid());
        mod_rpc_reply1(req, out);
    } else if (mod_rpc_is(&a[0], "fail") && n == 2) {
        tfork_rpc_fail(req, a[1].iov_base);
    } else if (mod_rpc_is(&a[0], "noreply") && n == 2) {
        return (int)mod_rpc_num(&a[1]);
    } else if (mod_rpc_is(&a[0], "die") && n == 2) {
        mod_rpc_die(&a[1]);
    } else if (mod_rpc_is(&a[0], "hang")) {
        /* says it is here; sync: blocks for good, async: never replies */
        snprintf(out, sizeof out, "hang %d", (int)getpid());
        mod_rpc_event1(out);
        if (!tfork_rpc_loop())
            for (;;)
                pause();
    } else if (mod_rpc_is(&a[0], "delay") && n == 3) {
        return mod_rpc_delay(req, mod_rpc_num(&a[1]), &a[2]);
    } else if (mod_rpc_is(&a[0], "events")) {
        /* one event per argument, then the reply "done" */
        for (int i = 1; i < n; i++)
            tfork_rpc_event(1, &a[i]);
        mod_rpc_reply1(req, "done");
    } else if (mod_rpc_is(&a[0], "loop")) {
        mod_rpc_reply1(req, tfork_rpc_loop() ? "loop" : "null");
    } else if (mod_rpc_is(&a[0], "reply2")) {
        /* a second answer of the same req is refused */
        int r1 = mod_rpc_reply1(req, "first");
        int r2 = mod_rpc_reply1(req, "second");
        int r3 = tfork_rpc_fail(req, "late");
        int r4 = tfork_rpc_reply(NULL, 0, NULL);
        int r5 = tfork_rpc_fail(NULL, "x");

        snprintf(out, sizeof out, "reply2 %d %d %d %d %d", r1, r2, r3, r4,
                 r5);
        mod_rpc_event1(out);
    } else if (mod_rpc_is(&a[0], "badreply")) {
        /* bad arguments to reply: the req stays unanswered */
        int r1 = tfork_rpc_reply(req, -1, NULL);
        int r2 = tfork_rpc_reply(req, 1, NULL);
        int r3 = tfork_rpc_event(-1, NULL);
        int r4 = tfork_rpc_event(1, NULL);

        snprintf(out, sizeof out, "bad %d %d %d %d", r1, r2, r3, r4);
        mod_rpc_reply1(req, out);
    } else if (mod_rpc_is(&a[0], "keep")) {
        /* replies, and keeps req: a req no longer valid */
        mod_rpc_kept = req;
        mod_rpc_reply1(req, "kept");
    } else if (mod_rpc_is(&a[0], "stale")) {
        /* a reply and a fail to the kept req are refused; the event says
         * the codes, then this call's own reply */
        int r1 = mod_rpc_reply1(mod_rpc_kept, "stale");
        int r2 = tfork_rpc_fail(mod_rpc_kept, "stale");

        snprintf(out, sizeof out, "stale %d %d", r1, r2);
        mod_rpc_event1(out);
        mod_rpc_reply1(req, "own");
    } else if (mod_rpc_is(&a[0], "initargs")) {
        struct iovec v[MOD_RPC_INIT_MAX + 1];
        int k = 1;

        snprintf(out, sizeof out, "init %d %d %d", mod_rpc_init_seen.calls,
                 mod_rpc_init_seen.loop, mod_rpc_init_seen.event_rc);
        v[0].iov_base = out;
        v[0].iov_len = strlen(out);
        for (int i = 0; i < mod_rpc_init_seen.argc; i++, k++) {
            v[k].iov_base = mod_rpc_init_seen.buf[i] ? mod_rpc_init_seen.buf[i]
                                                     : (char *)"<fd>";
            v[k].iov_len = mod_rpc_init_seen.buf[i] ? mod_rpc_init_seen.len[i]
                                                    : 4;
        }
        tfork_rpc_reply(req, k, v);
    } else if (mod_rpc_is(&a[0], "big")) {
        return mod_rpc_big(req, n, a);
    } else if (mod_rpc_is(&a[0], "caps")) {
        return mod_rpc_caps(req);
    } else if (mod_rpc_is(&a[0], "maxreply")) {
        return mod_rpc_maxreply(req);
    } else {
        snprintf(out, sizeof out, "unknown command '%.100s'",
                 (const char *)a[0].iov_base);
        tfork_rpc_fail(req, out);
    }
    return 0;
}

/* ---------------------------------------------------------------- init */

/* Keeps its args for "initargs", writes "init <pid>\n" into each fd arg
 * and sends the event "init <argc>". */
int mod_rpc_init_rec(int argc, const tfork_arg *argv);
int mod_rpc_init_rec(int argc, const tfork_arg *argv)
{
    char s[64];

    mod_rpc_init_seen.calls++;
    mod_rpc_init_seen.loop = tfork_rpc_loop() != NULL;
    mod_rpc_init_seen.argc = argc < MOD_RPC_INIT_MAX ? argc
                                                     : MOD_RPC_INIT_MAX;
    for (int i = 0; i < mod_rpc_init_seen.argc; i++) {
        if (argv[i].fd >= 0) {
            snprintf(s, sizeof s, "init %d\n", (int)getpid());
            if (write(argv[i].fd, s, strlen(s)) < 0)
                return 9;
            continue;
        }
        mod_rpc_init_seen.buf[i] = malloc(argv[i].len + 1);
        if (!mod_rpc_init_seen.buf[i])
            return 8;
        memcpy(mod_rpc_init_seen.buf[i], argv[i].buf, argv[i].len + 1);
        mod_rpc_init_seen.len[i] = argv[i].len;
    }
    snprintf(s, sizeof s, "init %d", argc);
    mod_rpc_init_seen.event_rc = mod_rpc_event1(s);
    return 0;
}

int mod_rpc_init_fail(int argc, const tfork_arg *argv);
int mod_rpc_init_fail(int argc, const tfork_arg *argv)
{
    (void)argc;
    (void)argv;
    return 7;
}

/* ---------------------------------------------------------------- run */

/* A plain run function (for an rpc_new on a process already run). */
int mod_rpc_plain(int fd, int argc, const tfork_arg *argv);
int mod_rpc_plain(int fd, int argc, const tfork_arg *argv)
{
    (void)fd;
    (void)argc;
    (void)argv;
    return 0;
}
