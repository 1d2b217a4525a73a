/* rpc-hash.c: calling a function in a running child with tfork_rpc, from a
 * parent whose libev loop never blocks.  The child, a copy of this program
 * (tfork_template), hashes strings with FNV-1a 64 and pretends each hash
 * is expensive (-d ms of sleep).  The parent queues every string at once,
 * shows with a timer that its loop stays free while the child works,
 * prints each result as "<hex>  <string>" in call order, checks it against
 * a hash of its own, then ends the child with tfork_rpc_free and finishes
 * from on_destroy.
 *
 *   examples/rpc-hash [-d ms] [--] [string...]
 *
 * Without strings it hashes a built-in list.  It exits 0 when every hash
 * came back and matched, 1 on any failure (a mismatch, a lost child, a
 * call that failed), 2 on bad usage.  It needs no tfork-serve: the child
 * is forked from a copy of this program, which has hash_worker() in it. */
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>
#include <tfork.h>
#include <tfork/rpc.h>

#define HEARTBEAT 0.05          /* seconds between heartbeats */
#define TIMEOUT   60.0          /* give up after this many seconds */
#define HEX_LEN   16            /* a 64-bit hash in hex */

/* FNV-1a, 64 bits: tiny, and the same in parent and child. */
static uint64_t fnv1a64(const void *buf, size_t len)
{
    const unsigned char *p = buf;
    uint64_t h = UINT64_C(0xcbf29ce484222325);

    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= UINT64_C(0x100000001b3);
    }
    return h;
}

/* ---- the child ---- */

static long child_delay_ms;     /* the pretend cost of one hash */

/* Runs first in the child, with the run args: here the delay, sent by the
 * parent with tfork_send_arg.  (This child is a copy of the parent and
 * could read the parent's variables; args are how a worker gets its
 * settings when it is not, e.g. in a module loaded into tfork-serve.)
 * Nonzero fails every call, with this function's name in the message. */
static int hash_init(int argc, const tfork_arg *argv)
{
    char *end;

    if (argc != 1 || !argv[0].buf) {
        fprintf(stderr, "rpc-hash: hash_init: expected one arg, the "
                "delay in ms\n");
        return 1;
    }
    errno = 0;
    child_delay_ms = strtol(argv[0].buf, &end, 10);
    if (errno || end == argv[0].buf || *end || child_delay_ms < 0) {
        fprintf(stderr, "rpc-hash: hash_init: bad delay \"%s\"\n",
                argv[0].buf);
        return 1;
    }
    return 0;
}
TFORK_EXPORT(hash_init);

/* One call: args[0] is the string (any bytes), the reply its hash in hex.
 * A sync worker: one call at a time, replied to before it returns, so the
 * replies come back in call order. */
static int hash_worker(tfork_rpc_req *req, int n, const struct iovec *args)
{
    struct timespec ts = { child_delay_ms / 1000,
                           (child_delay_ms % 1000) * 1000000L };
    char hex[HEX_LEN + 1];
    struct iovec res;

    if (n != 1)
        return tfork_rpc_fail(req, "hash_worker wants exactly one string");
    /* the expensive part, in the child, where it blocks nobody */
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
    snprintf(hex, sizeof hex, "%016" PRIx64,
             fnv1a64(args[0].iov_base, args[0].iov_len));
    res.iov_base = hex;
    res.iov_len = HEX_LEN;
    /* < 0 only when the parent is gone: nobody is left to tell */
    return tfork_rpc_reply(req, 1, &res);
}
TFORK_EXPORT(hash_worker);

/* ---- the parent ---- */

struct job;

struct call {
    struct job *job;
    int i;                      /* which string */
};

struct job {
    struct ev_loop *loop;
    tfork_rpc *rpc;
    char **strs;                /* the strings to hash */
    int n;
    struct call *calls;         /* one per string: the callbacks' data */
    int done;                   /* callbacks so far */
    int beats;                  /* heartbeats so far */
    ev_timer heartbeat;         /* shows the loop is free */
    ev_timer timeout;           /* the whole run may take this long */
    ev_tstamp t0;               /* when the calls were queued */
    int freed;                  /* tfork_rpc_free was called */
    int destroyed;              /* on_destroy came: a clean end */
    int failed;                 /* the exit status will be 1 */
};

static void stop_timers(struct job *j)
{
    ev_timer_stop(j->loop, &j->heartbeat);
    ev_timer_stop(j->loop, &j->timeout);
}

/* One result.  Sync child: these come in call order, each exactly once,
 * from the loop, never inside tfork_rpc_call. */
static void on_hash(int err, const char *msg, int n, const struct iovec *res,
                    void *data)
{
    struct call *c = data;
    struct job *j = c->job;
    const char *s = j->strs[c->i];
    char want[HEX_LEN + 1];

    if (c->i != j->done) {
        fprintf(stderr, "rpc-hash: result %d came when %d was due: out of "
                "call order\n", c->i + 1, j->done + 1);
        j->failed = 1;
    }
    j->done++;
    if (err < 0) {
        fprintf(stderr, "rpc-hash: \"%s\": %s (%s)\n", s, msg,
                tfork_strerror(err));
        j->failed = 1;
    } else {
        snprintf(want, sizeof want, "%016" PRIx64, fnv1a64(s, strlen(s)));
        if (n != 1 || res[0].iov_len != HEX_LEN ||
            memcmp(res[0].iov_base, want, HEX_LEN) != 0) {
            fprintf(stderr, "rpc-hash: \"%s\": the child said %.*s, "
                    "expected %s\n", s, n >= 1 ? (int)res[0].iov_len : 0,
                    n >= 1 ? (const char *)res[0].iov_base : "", want);
            j->failed = 1;
        } else {
            /* the reply is NUL-terminated past iov_len: a C string */
            printf("%s  %s\n", (const char *)res[0].iov_base, s);
        }
    }
    if (j->done == j->n) {
        /* all in: a graceful end, safe here inside a callback.  The child
         * sees EOF and exits; on_destroy follows. */
        if (!j->failed)
            printf("-- %d results in %.2f s; ending the child %d\n", j->n,
                   ev_now(j->loop) - j->t0, (int)tfork_rpc_pid(j->rpc));
        j->freed = 1;
        tfork_rpc_free(j->rpc);
    }
}

/* The child is gone: every pending call has had its callback already. */
static void on_rpc_error(tfork_rpc *r, int err, const char *msg, void *data)
{
    struct job *j = data;

    fprintf(stderr, "rpc-hash: lost the child: %s (%s)\n", msg,
            tfork_strerror(err));
    j->failed = 1;
    stop_timers(j);
    /* the handle still needs freeing, unless on_hash did that already
     * (after the last call; the library then releases it itself) */
    if (!j->freed) {
        j->freed = 1;
        tfork_rpc_free(r);
    }
}

/* After tfork_rpc_free: every call answered, the child has exited.  The
 * end of the program: with the timers stopped nothing keeps ev_run going,
 * and main() takes over. */
static void on_destroy(tfork_rpc *r, void *data)
{
    struct job *j = data;

    (void)r;
    j->destroyed = 1;
    stop_timers(j);
}

static void on_heartbeat(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct job *j = w->data;

    (void)revents;
    j->beats++;
    printf("-- heartbeat %d at %.2f s: %d of %d results in, the loop is "
           "free\n", j->beats, ev_now(loop) - j->t0, j->done, j->n);
}

static void on_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct job *j = w->data;

    (void)loop;
    (void)revents;
    fprintf(stderr, "rpc-hash: timed out after %.0f s with %d of %d results"
            "\n", TIMEOUT, j->done, j->n);
    exit(1);    /* the child sees EOF and goes */
}

static void usage(FILE *f, const char *prog)
{
    fprintf(f, "usage: %s [-d ms] [--] [string...]\n"
            "  -d ms  what the child pretends one hash costs (default 40)\n"
            "hashes the strings (default: a built-in list) with FNV-1a 64 "
            "in a child,\nprinting \"<hex>  <string>\" for each\n", prog);
}

int main(int argc, char **argv)
{
    static char *builtin[] = {
        (char *)"", (char *)"a", (char *)"foobar", (char *)"hello, world",
        (char *)"tfork", (char *)"The quick brown fox jumps over the lazy dog",
        (char *)"pre-initialised processes, cheaply",
    };
    struct job j;
    tfork_rpc_opts o;
    tfork *tpl, *p;
    long delay = 40;
    char delay_arg[32], *end;
    int opt, r;

    setvbuf(stdout, NULL, _IOLBF, 0);
    while ((opt = getopt(argc, argv, "d:h")) != -1) {
        switch (opt) {
        case 'd':
            errno = 0;
            delay = strtol(optarg, &end, 10);
            if (errno || end == optarg || *end || delay < 0 || delay > 10000) {
                fprintf(stderr, "rpc-hash: -d wants ms, 0 to 10000\n");
                return 2;
            }
            break;
        case 'h':
            usage(stdout, argv[0]);
            return 0;
        default:
            usage(stderr, argv[0]);
            return 2;
        }
    }

    memset(&j, 0, sizeof j);
    if (optind < argc) {
        j.strs = argv + optind;
        j.n = argc - optind;
    } else {
        j.strs = builtin;
        j.n = (int)(sizeof builtin / sizeof builtin[0]);
    }
    j.calls = calloc((size_t)j.n, sizeof *j.calls);
    if (!j.calls) {
        fprintf(stderr, "rpc-hash: out of memory\n");
        return 1;
    }
    j.loop = ev_default_loop(0);
    if (!j.loop) {
        fprintf(stderr, "rpc-hash: could not start libev (bad $LIBEV_FLAGS?)"
                "\n");
        free(j.calls);
        return 1;
    }

    /* The template is a copy of this program, taken now while it is
     * small: it has hash_init() and hash_worker() because it is this
     * program.  Its child p becomes the RPC server; the template itself is
     * needed no more once p is forked from it. */
    tpl = tfork_template(j.loop);
    if (!tpl) {
        fprintf(stderr, "rpc-hash: tfork_template: %s\n", strerror(errno));
        free(j.calls);
        return 1;
    }
    p = tfork_fork(tpl);
    tfork_free(tpl);    /* exits once p is forked: commands are in order */
    if (!p) {
        fprintf(stderr, "rpc-hash: tfork_fork: %s\n", strerror(errno));
        free(j.calls);
        return 1;
    }
    snprintf(delay_arg, sizeof delay_arg, "%ld", delay);
    r = tfork_send_arg(p, delay_arg, strlen(delay_arg));
    if (r < 0) {
        fprintf(stderr, "rpc-hash: tfork_send_arg: %s\n", tfork_strerror(r));
        tfork_free(p);
        free(j.calls);
        return 1;
    }

    memset(&o, 0, sizeof o);
    o.async = 0;                /* one call at a time, results in order */
    o.init = "hash_init";
    o.on_error = on_rpc_error;
    o.on_destroy = on_destroy;
    o.data = &j;
    j.rpc = tfork_rpc_new(p, "hash_worker", &o);    /* owns p, always */
    if (!j.rpc) {
        fprintf(stderr, "rpc-hash: tfork_rpc_new: %s\n", strerror(errno));
        free(j.calls);
        return 1;
    }

    /* Every call at once: they wait in the library for the child to start
     * and then for their turn; none of this blocks. */
    j.t0 = ev_now(j.loop);
    for (int i = 0; i < j.n; i++) {
        struct iovec arg = { j.strs[i], strlen(j.strs[i]) };

        j.calls[i].job = &j;
        j.calls[i].i = i;
        r = tfork_rpc_call(j.rpc, 1, &arg, on_hash, &j.calls[i]);
        if (r < 0) {
            /* no callback will come for this one, nor for the rest */
            fprintf(stderr, "rpc-hash: tfork_rpc_call \"%s\": %s\n",
                    j.strs[i], tfork_strerror(r));
            j.failed = 1;
            j.n = i;
            break;
        }
    }
    printf("-- %d string%s queued for the child, %ld ms each\n", j.n,
           j.n == 1 ? "" : "s", delay);
    if (j.n == 0) {
        j.freed = 1;            /* nothing queued: no callback to end it */
        tfork_rpc_free(j.rpc);
    }

    ev_timer_init(&j.heartbeat, on_heartbeat, HEARTBEAT, HEARTBEAT);
    j.heartbeat.data = &j;
    ev_timer_start(j.loop, &j.heartbeat);
    ev_timer_init(&j.timeout, on_timeout, TIMEOUT, 0.);
    j.timeout.data = &j;
    ev_timer_start(j.loop, &j.timeout);

    /* Returns once on_destroy (or on_error) has stopped the timers and
     * the library holds nothing more. */
    ev_run(j.loop, 0);

    if (j.done < j.n) {
        fprintf(stderr, "rpc-hash: only %d of %d results came\n", j.done,
                j.n);
        j.failed = 1;
    }
    if (!j.destroyed && !j.failed) {
        fprintf(stderr, "rpc-hash: the child did not end cleanly (no "
                "on_destroy)\n");
        j.failed = 1;
    }
    /* The child slept at least delay * n ms while our loop was free: a
     * loop that ticked not once through four heartbeats' worth was not. */
    if (!j.failed && j.beats == 0 && delay * j.n >= 4 * HEARTBEAT * 1000) {
        fprintf(stderr, "rpc-hash: no heartbeat in %ld ms of child work: "
                "the loop was blocked\n", delay * j.n);
        j.failed = 1;
    }
    if (!j.failed)
        printf("-- %d of %d hashes matched ours; %d heartbeat%s while the "
               "child worked; child ended cleanly\n", j.n, j.n, j.beats,
               j.beats == 1 ? "" : "s");
    ev_loop_destroy(j.loop);
    free(j.calls);
    return j.failed ? 1 : 0;
}
