/* task-hash.c: a task server and its client in one program, after the
 * password-hashing synopsis of Perl's AnyEvent::Task.  main() first forks
 * the server (tfork_task_fork_server, while the program is small); the
 * server forks one worker per client connection from a copy of itself,
 * so the worker methods below are found by name.  Then a client checks
 * workers out: "hash" salts and hashes a password, "verify" checks a
 * password against a hash; a malformed hash shows how a failure arrives.
 *
 *   examples/task-hash [password...]
 *
 * Without passwords it uses a built-in list.  It prints each hash and the
 * verdicts, checks every result against its own computation, stops the
 * server, and exits 0 when all were as expected, 1 otherwise, 2 on bad
 * usage.  It needs no tfork-serve.
 *
 * The hash is salted FNV-1a 64, iterated: self-contained and the same in
 * every process, but NOT a password hash to copy.  A real server would
 * call crypt(3) (-lcrypt) or libsodium's crypto_pwhash in the worker;
 * what this shows is where that slow, blocking work runs: in a worker,
 * never in the client's loop. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <ev.h>
#include <tfork.h>
#include <tfork/task.h>

#define COST      12            /* 2^COST rounds per hash */
#define SALT_LEN  16            /* bytes of salt from /dev/urandom */
#define TIMEOUT   10.0          /* seconds a checkout may wait and work */

/* ---- the hash, shared by the workers and the client's own check ---- */

static uint64_t fnv1a64(uint64_t h, const void *buf, size_t len)
{
    const unsigned char *p = buf;

    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= UINT64_C(0x100000001b3);
    }
    return h;
}

/* "$tfnv$COST$SALT$HASH" (salt and hash in hex) into out[80]. */
static void hash_format(char *out, size_t size, int cost,
                        const unsigned char *salt, const char *pw,
                        size_t pwlen)
{
    uint64_t h = fnv1a64(UINT64_C(0xcbf29ce484222325), salt, SALT_LEN);
    int n;

    h = fnv1a64(h, pw, pwlen);
    for (long r = 0; r < 1L << cost; r++) {
        unsigned char b[8];

        for (int i = 0; i < 8; i++)
            b[i] = (unsigned char)(h >> (8 * i));
        h = fnv1a64(UINT64_C(0xcbf29ce484222325), b, sizeof b);
        h = fnv1a64(h, salt, SALT_LEN);
        h = fnv1a64(h, pw, pwlen);
    }
    n = snprintf(out, size, "$tfnv$%d$", cost);
    for (int i = 0; i < SALT_LEN; i++)
        n += snprintf(out + n, size - (size_t)n, "%02x", salt[i]);
    snprintf(out + n, size - (size_t)n, "$%016" PRIx64, h);
}

/* Splits a hash made by hash_format: 0, or -1 if it is not one. */
static int hash_parse(const char *s, int *cost, unsigned char *salt)
{
    unsigned c;
    int n = 0;

    if (sscanf(s, "$tfnv$%2u$%n", &c, &n) != 1 || n == 0 || c > 20 ||
        strlen(s + n) != 2 * SALT_LEN + 1 + 16 || s[n + 2 * SALT_LEN] != '$')
        return -1;
    for (int i = 0; i < SALT_LEN; i++) {
        unsigned x;

        if (sscanf(s + n + 2 * i, "%2x", &x) != 1)
            return -1;
        salt[i] = (unsigned char)x;
    }
    *cost = (int)c;
    return 0;
}

/* ---- the worker side: runs in the server's workers ---- */

/* The server's dispatch option is "hasher_": method "hash" calls
 * hasher_hash, "verify" hasher_verify.  TFORK_EXPORT makes them findable
 * by name in the worker, which is a copy of this program. */

static int urandom = -1;        /* per worker, opened by hasher_setup */

/* Once per worker, before its first call: what AnyEvent::Task's setup
 * does.  A failure here fails that call with -EREMOTEIO and the worker
 * exits; the next checkout gets a fresh one. */
static int hasher_setup(tfork_task_req *req)
{
    urandom = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (urandom < 0)
        return tfork_task_fail(req, "open /dev/urandom: %s",
                               strerror(errno));
    tfork_task_log(req, TFORK_TASK_INFO, "worker %d ready",
                   (int)getpid());
    return 0;
}
TFORK_EXPORT(hasher_setup);

/* hash(password) -> "$tfnv$COST$SALT$HASH" */
static int hasher_hash(tfork_task_req *req, const char *method, int n,
                       const struct iovec *args)
{
    unsigned char salt[SALT_LEN];
    char out[80];
    struct iovec res;

    (void)method;
    if (n != 1)
        return tfork_task_fail(req, "hash wants one argument, the password");
    if (read(urandom, salt, sizeof salt) != (ssize_t)sizeof salt)
        return tfork_task_fail(req, "read /dev/urandom: %s",
                               strerror(errno));
    hash_format(out, sizeof out, COST, salt, args[0].iov_base,
                args[0].iov_len);
    tfork_task_log(req, TFORK_TASK_DEBUG, "hashed %zu bytes, %ld rounds",
                   args[0].iov_len, 1L << COST);
    res.iov_base = out;
    res.iov_len = strlen(out);
    return tfork_task_reply(req, 1, &res);
}
TFORK_EXPORT(hasher_hash);

/* verify(hash, password) -> "1" (it matches) or "0".  A malformed hash
 * is an error: the caller gets -ECANCELED and the message. */
static int hasher_verify(tfork_task_req *req, const char *method, int n,
                         const struct iovec *args)
{
    unsigned char salt[SALT_LEN];
    char want[80];
    struct iovec res;
    unsigned diff = 0;
    int cost;

    (void)method;
    if (n != 2)
        return tfork_task_fail(req, "verify wants two arguments, the hash "
                               "and the password");
    /* parts are NUL-terminated past iov_len: the hash is a C string */
    if (hash_parse(args[0].iov_base, &cost, salt) < 0)
        return tfork_task_fail(req, "verify: not a $tfnv$ hash: \"%.40s\"",
                               (const char *)args[0].iov_base);
    hash_format(want, sizeof want, cost, salt, args[1].iov_base,
                args[1].iov_len);
    /* compare every byte: the time taken says nothing of where they
     * differ */
    for (size_t i = 0; i < args[0].iov_len; i++)
        diff |= (unsigned char)want[i] ^
                ((const unsigned char *)args[0].iov_base)[i];
    res.iov_base = (void *)(diff ? "0" : "1");
    res.iov_len = 1;
    return tfork_task_reply(req, 1, &res);
}
TFORK_EXPORT(hasher_verify);

/* ---- the client ---- */

struct job;

/* One password's checkout: hash, then verify it right and wrong. */
struct pw {
    struct job *job;
    const char *pw;
    int i;
    char wrong[256];            /* the password with a byte appended */
    char hash[80];
};

struct job {
    struct ev_loop *loop;
    tfork_task_client *client;
    int pending;                /* callbacks still to come */
    int failed;                 /* exit status 1 */
    pid_t workers[64];          /* distinct worker pids seen */
    int nworkers;
};

static void fail(struct job *j, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void fail(struct job *j, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    fputs("task-hash: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    j->failed = 1;
}

static void saw_worker(struct job *j, pid_t pid)
{
    for (int i = 0; i < j->nworkers; i++)
        if (j->workers[i] == pid)
            return;
    if (j->nworkers < (int)(sizeof j->workers / sizeof j->workers[0]))
        j->workers[j->nworkers++] = pid;
}

/* The worker's log lines (pid > 0) and our own (pid 0), in order: a
 * worker's arrive with its answer, before that call's callback. */
static void on_log(tfork_task_checkout *co, int level, double time,
                   pid_t pid, const char *line, void *data)
{
    struct pw *p = data;

    (void)co;
    (void)time;
    if (level > TFORK_TASK_INFO)
        return;                 /* debug lines are not shown */
    if (pid)
        printf("[%d] log from worker %d: %s\n", p->i, (int)pid, line);
    else
        printf("[%d] log from the client: %s\n", p->i, line);
}

static void on_verify(tfork_task_checkout *co, int err, const char *msg,
                      int n, const struct iovec *res, void *data,
                      int want)
{
    struct pw *p = data;
    struct job *j = p->job;

    (void)co;
    j->pending--;
    if (err < 0) {
        fail(j, "[%d] verify: %s (%s)", p->i, msg, tfork_strerror(err));
        return;
    }
    if (n != 1 || strcmp(res[0].iov_base, want ? "1" : "0") != 0) {
        fail(j, "[%d] verify said %s for the %s password", p->i,
             n == 1 ? (const char *)res[0].iov_base : "nothing",
             want ? "right" : "wrong");
        return;
    }
    printf("[%d] verify %s password: %s\n", p->i, want ? "right" : "wrong",
           want ? "match" : "no match");
}

static void on_verify_right(tfork_task_checkout *co, int err, const char *msg,
                            int n, const struct iovec *res, void *data)
{
    on_verify(co, err, msg, n, res, data, 1);
}

static void on_verify_wrong(tfork_task_checkout *co, int err, const char *msg,
                            int n, const struct iovec *res, void *data)
{
    on_verify(co, err, msg, n, res, data, 0);
}

static void on_hash(tfork_task_checkout *co, int err, const char *msg, int n,
                    const struct iovec *res, void *data)
{
    struct pw *p = data;
    struct job *j = p->job;
    unsigned char salt[SALT_LEN];
    char mine[80];
    struct iovec a[2];
    int cost;

    j->pending--;
    if (err < 0) {
        fail(j, "[%d] hash: %s (%s)", p->i, msg, tfork_strerror(err));
        tfork_task_release(co);
        return;
    }
    /* the reply is NUL-terminated past iov_len: a C string */
    if (n != 1 || res[0].iov_len >= sizeof p->hash ||
        hash_parse(res[0].iov_base, &cost, salt) < 0) {
        fail(j, "[%d] hash: not a hash: %s", p->i,
             n == 1 ? (const char *)res[0].iov_base : "(no reply)");
        tfork_task_release(co);
        return;
    }
    strcpy(p->hash, res[0].iov_base);
    saw_worker(j, tfork_task_worker_pid(co));
    printf("[%d] \"%s\" hashed by worker %d: %s\n", p->i, p->pw,
           (int)tfork_task_worker_pid(co), p->hash);
    /* the same salt here must give the same hash */
    hash_format(mine, sizeof mine, cost, salt, p->pw, strlen(p->pw));
    if (strcmp(mine, p->hash) != 0)
        fail(j, "[%d] the worker's hash differs from ours: %s", p->i, mine);
    tfork_task_checkout_log(co, TFORK_TASK_INFO, "hash checked");

    /* Both verifies are queued now and run in order on the same worker;
     * releasing the checkout at once is fine: queued calls still run. */
    a[0].iov_base = p->hash;
    a[0].iov_len = strlen(p->hash);
    a[1].iov_base = (void *)p->pw;
    a[1].iov_len = strlen(p->pw);
    if (tfork_task_call(co, "verify", 2, a, on_verify_right, p) == 0)
        j->pending++;
    else
        fail(j, "[%d] tfork_task_call verify refused", p->i);
    a[1].iov_base = p->wrong;
    a[1].iov_len = strlen(p->wrong);
    if (tfork_task_call(co, "verify", 2, a, on_verify_wrong, p) == 0)
        j->pending++;
    else
        fail(j, "[%d] tfork_task_call verify refused", p->i);
    tfork_task_release(co);
}

/* The malformed hash: the worker fails the call, and the call queued
 * behind it on the same checkout fails with it. */
static void on_bad(tfork_task_checkout *co, int err, const char *msg, int n,
                   const struct iovec *res, void *data)
{
    struct job *j = data;
    static int calls;

    (void)co;
    (void)n;
    (void)res;
    j->pending--;
    calls++;
    if (err != -ECANCELED) {
        fail(j, "verify of a malformed hash, call %d: got %s (%s), expected "
             "ECANCELED", calls, err ? tfork_strerror(err) : "a reply", msg);
        return;
    }
    printf("[bad] call %d failed as expected: %s\n", calls, msg);
}

static int run_client(struct job *j, const char *addr, struct pw *pws, int n)
{
    tfork_task_client_opts co;
    tfork_task_checkout *bad;
    struct iovec a[2];

    memset(&co, 0, sizeof co);
    co.connect = addr;
    co.max_workers = 4;         /* at most 4 workers at once */
    co.timeout = TIMEOUT;
    j->client = tfork_task_client_new(j->loop, &co);
    if (!j->client) {
        fail(j, "tfork_task_client_new: %s", strerror(errno));
        return -1;
    }
    /* one checkout per password, all at once: they share the workers */
    for (int i = 0; i < n; i++) {
        tfork_task_checkout *c = tfork_task_checkout_new(j->client, 0);
        struct iovec pw = { (void *)pws[i].pw, strlen(pws[i].pw) };

        if (!c) {
            fail(j, "tfork_task_checkout_new: %s", strerror(errno));
            return -1;
        }
        tfork_task_on_log(c, on_log, &pws[i]);
        if (tfork_task_call(c, "hash", 1, &pw, on_hash, &pws[i]) == 0)
            j->pending++;
        else
            fail(j, "[%d] tfork_task_call hash refused", i);
    }
    bad = tfork_task_checkout_new(j->client, 0);
    if (!bad) {
        fail(j, "tfork_task_checkout_new: %s", strerror(errno));
        return -1;
    }
    a[0].iov_base = (void *)"$md5$not-ours";
    a[0].iov_len = strlen(a[0].iov_base);
    a[1].iov_base = (void *)"secret";
    a[1].iov_len = 6;
    for (int i = 0; i < 2; i++)
        if (tfork_task_call(bad, "verify", 2, a, on_bad, j) == 0)
            j->pending++;
    tfork_task_release(bad);
    /* returns when every call is answered and every checkout given back:
     * idle connections do not keep the loop running */
    ev_run(j->loop, 0);
    return 0;
}

int main(int argc, char **argv)
{
    static const char *builtin[] = { "secret", "hunter2",
                                     "correct horse battery staple" };
    char dir[256], addr[300];
    tfork_task_server_opts so;
    struct job j;
    struct pw *pws;
    const char **list = builtin;
    int n = (int)(sizeof builtin / sizeof builtin[0]);
    const char *tmp = getenv("TMPDIR");
    pid_t server, r;
    int st = 0;

    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc > 1 && (strcmp(argv[1], "-h") == 0 ||
                     strcmp(argv[1], "--help") == 0)) {
        printf("usage: %s [password...]\nhashes and verifies the passwords "
               "(default: a built-in list) in task server workers\n",
               argv[0]);
        return 0;
    }
    if (argc > 1) {
        list = (const char **)argv + 1;
        n = argc - 1;
    }
    for (int i = 0; i < n; i++)
        if (strlen(list[i]) > 200) {
            fprintf(stderr, "task-hash: passwords of at most 200 bytes\n");
            return 2;
        }

    /* The server first, while this program is small and runs no loop.
     * Its socket lives in a private directory (mkdtemp: mode 0700); the
     * server makes the socket 0600 and takes connections only from our
     * own uid. */
    snprintf(dir, sizeof dir, "%s/task-hash.XXXXXX", tmp && *tmp ? tmp :
             "/tmp");
    if (!mkdtemp(dir)) {
        fprintf(stderr, "task-hash: mkdtemp %s: %s\n", dir, strerror(errno));
        return 1;
    }
    snprintf(addr, sizeof addr, "unix:%s/socket", dir);
    memset(&so, 0, sizeof so);
    so.listen = addr;
    so.name = "hasher";
    so.dispatch = "hasher_";    /* method M calls hasher_M */
    so.setup = "hasher_setup";
    so.hung_worker_timeout = 30;
    /* no require: the workers are forked from a copy of this program */
    server = tfork_task_fork_server(&so);
    if (server < 0) {
        fprintf(stderr, "task-hash: tfork_task_fork_server %s: %s\n", addr,
                tfork_strerror(server));
        rmdir(dir);
        return 1;
    }
    printf("server %d listening at %s\n", (int)server, addr);

    memset(&j, 0, sizeof j);
    pws = calloc((size_t)n, sizeof *pws);
    /* A loop of our own: libev's default loop would reap every child,
     * the server included, whose exit is ours to collect below. */
    j.loop = ev_loop_new(EVFLAG_AUTO);
    if (!pws || !j.loop) {
        fail(&j, "out of memory, or libev would not start");
    } else {
        for (int i = 0; i < n; i++) {
            pws[i].job = &j;
            pws[i].pw = list[i];
            pws[i].i = i;
            snprintf(pws[i].wrong, sizeof pws[i].wrong, "%s!", list[i]);
        }
        run_client(&j, addr, pws, n);
        if (j.pending)
            fail(&j, "%d callbacks never came", j.pending);
        if (!j.failed)
            printf("%d passwords hashed and verified by %d worker%s; "
                   "%d connection%s open\n", n, j.nworkers,
                   j.nworkers == 1 ? "" : "s",
                   tfork_task_client_workers(j.client),
                   tfork_task_client_workers(j.client) == 1 ? "" : "s");
        /* closes the connections: each worker sees EOF and exits */
        tfork_task_client_free(j.client);
        ev_loop_destroy(j.loop);
    }
    free(pws);

    /* The server would exit by itself when we do (a keep-alive pipe ties
     * it to us); stopping it here lets us reap it and tidy up. */
    kill(server, SIGTERM);
    while ((r = waitpid(server, &st, 0)) < 0 && errno == EINTR)
        ;
    unlink(addr + 5);           /* SIGTERM left it behind */
    rmdir(dir);
    if (r < 0)
        fail(&j, "waitpid %d: %s", (int)server, strerror(errno));
    else if (!(WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM))
        fail(&j, "the server ended with wait status %#x", st);
    else
        printf("server %d stopped\n", (int)server);
    return j.failed ? 1 : 0;
}
