/* big-parent.c: spawning workers from a big process.  Grows to -m MiB
 * (every page written and kept live), then spawns -n workers that return
 * at once, first through tfork, forked by a copy of this program taken at
 * start-up while it was small, then with fork()+_exit()+waitpid() from the
 * big process itself, and prints both rates side by side.
 *
 *   examples/big-parent [-m MiB] [-n count]
 *
 * It needs no tfork-serve: its template is a copy of itself. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>
#include <tfork.h>

/* The worker: runs in a child of the early copy and exits 0 at once. */
static int worker(int fd, int argc, const tfork_arg *argv)
{
    (void)fd;
    (void)argc;
    (void)argv;
    return 0;
}
TFORK_EXPORT(worker);

struct bench {
    struct ev_loop *loop;
    int n;                      /* spawns wanted */
    int started;                /* spawns queued so far */
    int exited;                 /* on_exit reports so far */
    int failed;                 /* a spawn went wrong: stop */
};

static double now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The bracketed word of /sys/kernel/mm/transparent_hugepage/enabled. */
static const char *thp_setting(char *buf, size_t len)
{
    FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "re");
    char line[256], *a, *b;

    snprintf(buf, len, "unknown");
    if (!f)
        return buf;
    if (fgets(line, sizeof line, f) && (a = strchr(line, '[')) &&
        (b = strchr(a, ']'))) {
        *b = '\0';
        snprintf(buf, len, "%s", a + 1);
    }
    fclose(f);
    return buf;
}

/* ---- spawning through tfork, one at a time ---- */

static void spawn_one(struct bench *b);

static void on_run(tfork *p, int fd, int err, void *data)
{
    struct bench *b = data;

    if (err < 0) {
        fprintf(stderr, "big-parent: worker %d: %s\n", b->started,
                tfork_errmsg(p));
        b->failed = 1;
        return;
    }
    close(fd);          /* the worker needs nothing from us */
}

/* The next spawn starts when the previous worker's exit is known: the
 * rate counts the whole cycle, as waitpid does for fork() below. */
static void on_worker_exit(pid_t pid, int status, void *data)
{
    struct bench *b = data;

    b->exited++;
    if (status != 0) {
        fprintf(stderr, "big-parent: worker pid %d: wait status 0x%x, "
                "expected exit status 0\n", (int)pid, (unsigned)status);
        b->failed = 1;
    }
    if (!b->failed && b->started < b->n)
        spawn_one(b);
}

static void spawn_one(struct bench *b)
{
    tfork *p = tfork_new(b->loop);
    int r;

    if (!p) {
        fprintf(stderr, "big-parent: tfork_new: %s\n", strerror(errno));
        b->failed = 1;
        return;
    }
    r = tfork_on_exit(p, on_worker_exit, b);
    if (r == 0)
        r = tfork_run(p, "worker", on_run, b);
    if (r < 0) {
        fprintf(stderr, "big-parent: tfork_run: %s\n", tfork_strerror(r));
        tfork_free(p);
        b->failed = 1;
        return;
    }
    b->started++;
}

/* Spawns per second through tfork, or -1 after printing why not. */
static double tfork_rate(struct ev_loop *loop, int n)
{
    struct bench b = { loop, n, 0, 0, 0 };
    double t0 = now(), t;

    spawn_one(&b);
    ev_run(loop, 0);    /* returns once nothing is pending */
    t = now() - t0;
    if (b.failed)
        return -1;
    if (b.exited != n) {
        fprintf(stderr, "big-parent: %d of %d tfork workers reported\n",
                b.exited, n);
        return -1;
    }
    return n / t;
}

/* ---- the same with fork() from the big process ---- */

static double fork_rate(int n)
{
    double t0 = now(), t;

    for (int i = 0; i < n; i++) {
        int st;
        pid_t pid = fork(), w;

        if (pid < 0) {
            fprintf(stderr, "big-parent: fork: %s\n", strerror(errno));
            return -1;
        }
        if (pid == 0)
            _exit(0);
        do
            w = waitpid(pid, &st, 0);
        while (w < 0 && errno == EINTR);
        if (w < 0) {
            fprintf(stderr, "big-parent: waitpid: %s\n", strerror(errno));
            return -1;
        }
        if (st != 0) {
            fprintf(stderr, "big-parent: forked child %d: wait status "
                    "0x%x\n", (int)pid, (unsigned)st);
            return -1;
        }
    }
    t = now() - t0;
    return n / t;
}

/* ---- the big part ---- */

/* Writes a position-dependent pattern to every word, so every page is
 * private, dirty and different. */
static void fill(uint64_t *m, size_t words)
{
    for (size_t i = 0; i < words; i++)
        m[i] = (i + 1) * UINT64_C(0x9e3779b97f4a7c15);
}

/* Reads all of it back: printed at the end, so the memory is live
 * through the measurement and no compiler may drop the writes. */
static uint64_t checksum(const uint64_t *m, size_t words)
{
    uint64_t sum = 0;

    for (size_t i = 0; i < words; i++)
        sum += m[i] ^ (m[i] >> 29);
    return sum;
}

static void usage(FILE *f, const char *prog)
{
    fprintf(f, "usage: %s [-m MiB] [-n count]\n"
            "  -m MiB    memory to grow to before spawning (default 2048)\n"
            "  -n count  workers to spawn each way (default 200)\n", prog);
}

static int parse_int(const char *s, int min, int max, int *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max)
        return -1;
    *out = (int)v;
    return 0;
}

int main(int argc, char **argv)
{
    struct ev_loop *loop;
    int mib = 2048, n = 200, opt, r;
    size_t bytes, words;
    uint64_t *mem, sum;
    double t0, grow_s, rt, rf;
    char thp[64], label[64];

    /* First thing: keep a copy of the program while it is still small.
     * tfork_new then forks workers from that copy, and the copy has
     * worker() too, being this program (a tfork-serve template would not,
     * short of a module to require). */
    r = tfork_early();
    if (r < 0) {
        fprintf(stderr, "big-parent: tfork_early: %s\n", tfork_strerror(r));
        return 1;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    while ((opt = getopt(argc, argv, "m:n:h")) != -1) {
        switch (opt) {
        case 'm':
            if (parse_int(optarg, 1, 1 << 22, &mib) < 0) {
                fprintf(stderr, "big-parent: -m wants MiB, 1 or more\n");
                return 2;
            }
            break;
        case 'n':
            if (parse_int(optarg, 1, 10000000, &n) < 0) {
                fprintf(stderr, "big-parent: -n wants a count, 1 or more\n");
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
    if (optind < argc) {
        usage(stderr, argv[0]);
        return 2;
    }

    /* A loop of our own, not libev's default one: the default loop takes
     * SIGCHLD for itself, which would add a signal to every fork() of the
     * comparison and race its waitpid. */
    loop = ev_loop_new(EVFLAG_AUTO);
    if (!loop) {
        fprintf(stderr, "big-parent: could not start libev\n");
        return 1;
    }

    bytes = (size_t)mib << 20;
    words = bytes / sizeof *mem;
    mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
        fprintf(stderr, "big-parent: mmap %d MiB: %s\n", mib, strerror(errno));
        return 1;
    }
    t0 = now();
    fill(mem, words);
    grow_s = now() - t0;
    printf("grew to %d MiB (every page written, %.2f s); transparent "
           "hugepages: %s\n", mib, grow_s, thp_setting(thp, sizeof thp));
    printf("spawning %d workers each way, one at a time (spawn, run, "
           "exit, status back)\n", n);

    rt = tfork_rate(loop, n);
    if (rt < 0) {
        munmap(mem, bytes);
        return 1;
    }
    printf("  %-36s %8.0f spawns/s\n", "tfork_new+run, from the early copy:",
           rt);
    rf = fork_rate(n);
    if (rf < 0) {
        munmap(mem, bytes);
        return 1;
    }
    snprintf(label, sizeof label, "fork+_exit+waitpid, from %d MiB:", mib);
    printf("  %-36s %8.0f spawns/s\n", label, rf);
    printf("  %-36s %8.1fx\n", "tfork / fork:", rt / rf);

    sum = checksum(mem, words);
    printf("memory checksum: %016llx\n", (unsigned long long)sum);
    munmap(mem, bytes);
    return 0;
}
