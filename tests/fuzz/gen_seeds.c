/* gen_seeds.c: writes the seed corpora of the fuzz harnesses,
 * tests/fuzz/<harness>/seed-*, from frames encoded with src/proto.c (so
 * they follow the protocol as it is).  `make fuzz-seeds` runs it; the
 * seeds are kept in the repository, next to the crash inputs found. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>

#include "tfork-int.h"

static const char *outdir;

/* a growing byte string */
struct bytes {
    unsigned char *p;
    size_t len, cap;
};

static void put(struct bytes *b, const void *s, size_t n)
{
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        if (!b->p) {
            perror("realloc");
            exit(1);
        }
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

static void put8(struct bytes *b, unsigned v)
{
    unsigned char c = (unsigned char)v;

    put(b, &c, 1);
}

static void save(const char *harness, const char *name, const struct bytes *b)
{
    char path[4096];
    FILE *f;

    snprintf(path, sizeof path, "%s/%s", outdir, harness);
    mkdir(path, 0777);
    snprintf(path, sizeof path, "%s/%s/seed-%s", outdir, harness, name);
    f = fopen(path, "wb");
    if (!f || fwrite(b->p, 1, b->len, f) != b->len || fclose(f)) {
        fprintf(stderr, "gen_seeds: %s: %s\n", path, strerror(errno));
        exit(1);
    }
}

/* ---- frames ---- */

static void end(struct bytes *out, tfork_buf *b)
{
    if (tfork__buf_end(b) < 0) {
        fprintf(stderr, "gen_seeds: encoding failed\n");
        exit(1);
    }
    put(out, b->p, b->len);
    tfork__buf_free(b);
}

static void f_u32s(struct bytes *o, unsigned op, unsigned nfds, int n,
                   uint32_t a, uint32_t b2, uint32_t c)
{
    tfork_buf b;

    tfork__buf_frame(&b, op, nfds);
    if (n > 0)
        tfork__buf_u32(&b, a);
    if (n > 1)
        tfork__buf_u32(&b, b2);
    if (n > 2)
        tfork__buf_u32(&b, c);
    end(o, &b);
}

static void f_hello(struct bytes *o)
{
    f_u32s(o, TFORK_OP_HELLO, 0, 2, TFORK_PROTO_MAGIC, TFORK_PROTO_VERSION, 0);
}

static void f_str(struct bytes *o, unsigned op, const char *s)
{
    tfork_buf b;

    tfork__buf_frame(&b, op, 0);
    tfork__buf_str(&b, s, strlen(s));
    end(o, &b);
}

static void f_eval(struct bytes *o, const char *fn, int argc,
                   const char *const *argv)
{
    tfork_buf b;

    tfork__buf_frame(&b, TFORK_OP_EVAL, 0);
    tfork__buf_str(&b, fn, strlen(fn));
    tfork__buf_u32(&b, (uint32_t)argc);
    for (int i = 0; i < argc; i++)
        tfork__buf_str(&b, argv[i], strlen(argv[i]));
    end(o, &b);
}

static void f_arg(struct bytes *o, const char *s, size_t n)
{
    tfork_buf b;

    tfork__buf_frame(&b, TFORK_OP_ARG, 0);
    tfork__buf_raw(&b, s, n);
    end(o, &b);
}

static void f_exec(struct bytes *o, const char *path, int envp)
{
    tfork_buf b;

    tfork__buf_frame(&b, TFORK_OP_EXEC, 0);
    tfork__buf_u32(&b, envp ? TFORK_EXEC_ENVP : 0);
    tfork__buf_str(&b, path, strlen(path));
    tfork__buf_u32(&b, 2);
    tfork__buf_str(&b, "prog", 4);
    tfork__buf_str(&b, "-x", 2);
    if (envp) {
        tfork__buf_u32(&b, 1);
        tfork__buf_str(&b, "A=1", 3);
    }
    end(o, &b);
}

static void f_error(struct bytes *o, int code, uint32_t ref, int pid,
                    const char *msg)
{
    tfork_buf b;

    tfork__buf_frame(&b, TFORK_OP_ERROR, 0);
    tfork__buf_u32(&b, (uint32_t)code);
    tfork__buf_u32(&b, ref);
    tfork__buf_u32(&b, (uint32_t)pid);
    tfork__buf_str(&b, msg, strlen(msg));
    end(o, &b);
}

static void f_parts(struct bytes *o, unsigned op, int with_id, uint32_t id,
                    int n, const char *const *s)
{
    struct iovec v[8];
    tfork_buf b;

    for (int i = 0; i < n; i++) {
        v[i].iov_base = (void *)s[i];
        v[i].iov_len = strlen(s[i]);
    }
    tfork__buf_frame(&b, op, 0);
    if (with_id)
        tfork__buf_u32(&b, id);
    tfork__buf_parts(&b, n, v);
    end(o, &b);
}

/* ---- the harnesses' seeds ---- */

static void cmd_seeds(void)
{
    static const char *const av[] = { "a", "bc" };
    struct bytes b = { 0 };
    struct { const char *name; unsigned piece, plan; } v[] = {
        { "all", 0, 0 }, { "bytes", 1, 0 }, { "threes", 3, 0 },
    };

    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        char name[64];

        b.len = 0;
        put8(&b, v[i].piece);
        put8(&b, v[i].plan);
        f_hello(&b);
        f_str(&b, TFORK_OP_REQUIRE, "/lib/mod.so");
        f_eval(&b, "init", 2, av);
        f_arg(&b, "hello", 5);
        f_arg(&b, "", 0);
        f_str(&b, TFORK_OP_RUN, "worker");
        f_exec(&b, "/bin/true", 0);
        f_exec(&b, "ls", 1);
        snprintf(name, sizeof name, "session-%s", v[i].name);
        save("cmd", name, &b);
    }
    /* fds: ARGFD and FORK carry one, on their first piece */
    b.len = 0;
    put8(&b, 0);
    put8(&b, 0x01);
    f_u32s(&b, TFORK_OP_ARGFD, 1, 0, 0, 0, 0);
    save("cmd", "argfd", &b);
    b.len = 0;
    put8(&b, TFORK_HDR_LEN + 8);
    put8(&b, 0x03);
    f_u32s(&b, TFORK_OP_FORK, 1, 2, 1, TFORK_FORK_NEWROOT, 0);
    f_u32s(&b, TFORK_OP_FORK, 1, 2, 2, TFORK_FORK_PIDFD, 0);
    save("cmd", "fork-fds", &b);
    /* an fd on a frame that takes none; two fds */
    b.len = 0;
    put8(&b, 0);
    put8(&b, 0x81);
    f_hello(&b);
    save("cmd", "fd-extra", &b);
    /* a header claiming a huge payload; a reply op; reserved bytes */
    b.len = 0;
    put8(&b, 0);
    put8(&b, 0);
    put(&b, "\x04\x00\x00\x00\xff\xff\xff\x04", 8);
    save("cmd", "huge-len", &b);
    b.len = 0;
    put8(&b, 0);
    put8(&b, 0);
    f_u32s(&b, TFORK_OP_RUNOK, 0, 1, 42, 0, 0);
    save("cmd", "reply-op", &b);
    b.len = 0;
    put8(&b, 5);
    put8(&b, 0);
    f_str(&b, TFORK_OP_RUN, "x");
    b.p[2 + 2] = 1;
    save("cmd", "reserved", &b);
    /* truncated: EOF inside a header and inside a payload */
    b.len = 0;
    put8(&b, 0);
    put8(&b, 0);
    f_str(&b, TFORK_OP_REQUIRE, "/lib/mod.so");
    b.len -= 3;
    save("cmd", "truncated", &b);
    /* a string without its NUL, a list claiming too much */
    b.len = 0;
    put8(&b, 0);
    put8(&b, 0);
    f_str(&b, TFORK_OP_RUN, "abc");
    b.p[b.len - 1] = 'x';
    f_eval(&b, "f", 1, av);
    b.p[b.len - 3 - 5 - 1] = 0x7f;
    save("cmd", "malformed", &b);
    free(b.p);
}

static void reply_seeds(void)
{
    struct bytes b = { 0 }, t = { 0 }, c = { 0 };
    struct {
        const char *name;
        unsigned sc;
        int tpl;        /* the template's bytes: which */
        int child;      /* the child's bytes: which */
    } v[] = {
        /* template: FORKED 1, EXIT of it; child: RUNOK */
        { "run-ok", 0x01 | 0x02 | 0x04, 1, 1 },
        { "exec-ok", 0x01 | 0x02 | 0x08, 1, 2 },
        { "fork-failed", 0x01 | 0x02 | 0x04, 2, 0 },
        { "run-error", 0x01 | 0x04, 1, 3 },
        { "tpl-run", 0x10 | 0x04, 3, 0 },
        { "tpl-exec", 0x10 | 0x08, 4, 0 },
        { "two-kids", 0x01 | 0x02 | 0x20 | 0x04, 5, 1 },
        { "freed", 0x01 | 0x40 | 0x02, 1, 0 },
        { "halves", 0x01 | 0x80 | 0x04 | 0x02, 1, 1 },
        { "exit-first", 0x01 | 0x02 | 0x04, 6, 1 },
    };

    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        t.len = c.len = b.len = 0;
        switch (v[i].tpl) {
        case 1:
            f_u32s(&t, TFORK_OP_FORKED, 0, 2, 1, 4242, 0);
            f_u32s(&t, TFORK_OP_EXIT, 0, 2, 4242, 0, 0);
            break;
        case 2:
            f_error(&t, -EAGAIN, 1, 100, "fork failed in process 100");
            break;
        case 3:
            f_u32s(&t, TFORK_OP_RUNOK, 0, 1, 100, 0, 0);
            break;
        case 4:
            f_u32s(&t, TFORK_OP_EXECSTART, 0, 1, 100, 0, 0);
            f_error(&t, -ENOENT, 0, 100, "exec x: No such file");
            break;
        case 5:
            f_u32s(&t, TFORK_OP_FORKED, 0, 2, 2, 4243, 0);
            f_u32s(&t, TFORK_OP_FORKED, 0, 2, 1, 4242, 0);
            f_u32s(&t, TFORK_OP_EXIT, 0, 2, 4243, 9, 0);
            f_u32s(&t, TFORK_OP_EXIT, 0, 2, 4242, 256, 0);
            break;
        case 6:
            f_u32s(&t, TFORK_OP_EXIT, 0, 2, 4242, 0, 0);
            f_u32s(&t, TFORK_OP_FORKED, 0, 2, 1, 4242, 0);
            break;
        }
        switch (v[i].child) {
        case 1:
            f_u32s(&c, TFORK_OP_RUNOK, 0, 1, 4242, 0, 0);
            put(&c, "user bytes", 10);
            break;
        case 2:
            f_u32s(&c, TFORK_OP_EXECSTART, 0, 1, 4242, 0, 0);
            break;
        case 3:
            f_error(&c, -ENOENT, 0, 4242, "run: no function 'f'");
            break;
        }
        put8(&b, v[i].sc);
        put8(&b, i & 1 ? 0x09 : 0x00);
        put8(&b, (unsigned)c.len);
        put(&b, t.p, t.len);
        put(&b, c.p, c.len);
        save("reply", v[i].name, &b);
    }
    free(b.p);
    free(t.p);
    free(c.p);
}

static void rpc_seeds(void)
{
    static const char *const parts[] = { "hello", "", "world" };
    struct bytes b = { 0 };
    tfork_buf f;
    char *big;

    /* to the child: SETUP, calls */
    for (unsigned piece = 0; piece < 3; piece++) {
        char name[32];

        b.len = 0;
        put8(&b, 1 | piece << 1);
        tfork__buf_frame(&f, TFORK_OP_RPC_SETUP, 0);
        tfork__buf_u32(&f, TFORK_PROTO_MAGIC);
        tfork__buf_u32(&f, TFORK_PROTO_VERSION);
        tfork__buf_u32(&f, TFORK_RPC_ASYNC);
        tfork__buf_str(&f, "func", 4);
        tfork__buf_str(&f, "", 0);
        end(&b, &f);
        f_parts(&b, TFORK_OP_RPC_CALL, 1, 1, 3, parts);
        f_parts(&b, TFORK_OP_RPC_CALL, 1, 2, 0, parts);
        snprintf(name, sizeof name, "to-child-%u", piece);
        save("rpc", name, &b);
    }
    /* to the parent: replies, a failure, events, retire */
    for (unsigned piece = 0; piece < 3; piece++) {
        char name[32];

        b.len = 0;
        put8(&b, 0 | piece << 1);
        f_parts(&b, TFORK_OP_RPC_REPLY, 1, 1, 2, parts);
        f_parts(&b, TFORK_OP_RPC_EVENT, 0, 0, 1, parts);
        tfork__buf_frame(&f, TFORK_OP_RPC_FAIL, 0);
        tfork__buf_u32(&f, 2);
        tfork__buf_u32(&f, (uint32_t)-ECANCELED);
        tfork__buf_str(&f, "failed", 6);
        end(&b, &f);
        f_u32s(&b, TFORK_OP_RPC_RETIRE, 0, 0, 0, 0, 0);
        snprintf(name, sizeof name, "to-parent-%u", piece);
        save("rpc", name, &b);
    }
    /* a reply larger than the reader's first buffer (64 KiB), in pieces
     * of 64 KiB */
    b.len = 0;
    put8(&b, 0 | 7 << 1);
    big = malloc(100000);
    memset(big, 'x', 99999);
    big[99999] = 0;
    {
        const char *const one[] = { big };

        f_parts(&b, TFORK_OP_RPC_REPLY, 1, 1, 1, one);
    }
    free(big);
    save("rpc", "big-reply", &b);
    /* the real parent (byte 0 bit 4): 3 calls, sync and async */
    for (unsigned async = 0; async < 2; async++) {
        b.len = 0;
        put8(&b, 0x10 | async << 5 | 3u << 6);
        f_parts(&b, TFORK_OP_RPC_EVENT, 0, 0, 1, parts);
        f_parts(&b, TFORK_OP_RPC_REPLY, 1, async ? 2 : 1, 2, parts);
        tfork__buf_frame(&f, TFORK_OP_RPC_FAIL, 0);
        tfork__buf_u32(&f, async ? 1 : 2);
        tfork__buf_u32(&f, (uint32_t)-ECANCELED);
        tfork__buf_str(&f, "failed", 6);
        end(&b, &f);
        f_u32s(&b, TFORK_OP_RPC_RETIRE, 0, 0, 0, 0, 0);
        f_parts(&b, TFORK_OP_RPC_REPLY, 1, 3, 0, parts);
        save("rpc", async ? "parent-async" : "parent-sync", &b);
    }
    /* the child never started: its FAIL 0; the run failed: core ERROR */
    b.len = 0;
    put8(&b, 0x10 | 1u << 6);
    tfork__buf_frame(&f, TFORK_OP_RPC_FAIL, 0);
    tfork__buf_u32(&f, 0);
    tfork__buf_u32(&f, (uint32_t)-ENOENT);
    tfork__buf_str(&f, "rpc function fuzz_func not found", 32);
    end(&b, &f);
    save("rpc", "parent-not-found", &b);
    b.len = 0;
    put8(&b, 0x12 | 2u << 6);
    f_error(&b, -ENOENT, 0, 100, "run: no function 'tfork__rpc_server'");
    save("rpc", "parent-run-error", &b);
    /* a wrong-direction op, a huge length, a truncated frame */
    b.len = 0;
    put8(&b, 1);
    f_parts(&b, TFORK_OP_RPC_REPLY, 1, 1, 1, parts);
    save("rpc", "wrong-way", &b);
    b.len = 0;
    put8(&b, 0);
    put(&b, "\x28\x00\x00\x00\xff\xff\xff\x7f", 8);
    save("rpc", "huge-len", &b);
    b.len = 0;
    put8(&b, 0);
    f_parts(&b, TFORK_OP_RPC_EVENT, 0, 0, 3, parts);
    b.len -= 4;
    save("rpc", "truncated", &b);
    free(b.p);
}

/* A serve record: control byte (fd kind << 6 | len - 1), then the bytes;
 * longer runs are split into records of at most 64 bytes, the fd riding
 * on the first. */
static void rec(struct bytes *o, unsigned kind, const struct bytes *fr)
{
    size_t off = 0;

    while (off < fr->len) {
        size_t n = fr->len - off > 64 ? 64 : fr->len - off;

        put8(o, (off ? 0 : kind) << 6 | (unsigned)(n - 1));
        put(o, fr->p + off, n);
        off += n;
    }
}

static void serve_seeds(void)
{
    static const char *const av[] = { "x" };
    struct bytes b = { 0 }, f = { 0 }, child = { 0 };
    struct { const char *name; int what; } v[] = {
        { "require-eval", 0 }, { "fork-run", 1 }, { "fork-exec", 2 },
        { "exec-root", 3 }, { "run-root", 4 }, { "bad-version", 5 },
        { "no-hello", 6 }, { "fork-gone", 7 }, { "eval-fails", 8 },
        { "bad-frame", 9 }, { "fork-pidfd", 10 }, { "argfd-exec", 11 },
    };

    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        b.len = child.len = 0;
        f.len = 0;
        if (v[i].what == 5)
            f_u32s(&f, TFORK_OP_HELLO, 0, 2, TFORK_PROTO_MAGIC, 99, 0);
        else if (v[i].what != 6)
            f_hello(&f);
        rec(&b, 0, &f);
        f.len = 0;
        switch (v[i].what) {
        case 0:
            f_str(&f, TFORK_OP_REQUIRE, "ok-module.so");
            f_str(&f, TFORK_OP_REQUIRE, "missing.so");
            f_eval(&f, "ok_init", 1, av);
            rec(&b, 0, &f);
            break;
        case 1:
        case 2:
        case 10:
            f_arg(&f, "template arg", 12);
            rec(&b, 0, &f);
            f.len = 0;
            f_u32s(&f, TFORK_OP_FORK, 1, 2, 1,
                   v[i].what == 10 ? TFORK_FORK_PIDFD : 0, 0);
            rec(&b, 1, &f);
            f_hello(&child);
            f_arg(&child, "child arg", 9);
            if (v[i].what == 2)
                f_exec(&child, "ok-prog", 1);
            else
                f_str(&child, TFORK_OP_RUN, "ok_worker");
            break;
        case 3:
            f_exec(&f, "missing-prog", 0);
            rec(&b, 0, &f);
            break;
        case 4:
            f_str(&f, TFORK_OP_RUN, "no_worker");
            rec(&b, 0, &f);
            break;
        case 6:
        case 5:
            f_str(&f, TFORK_OP_RUN, "ok_worker");
            rec(&b, 0, &f);
            break;
        case 7:
            f_u32s(&f, TFORK_OP_FORK, 1, 2, 1, TFORK_FORK_NEWROOT, 0);
            rec(&b, 2, &f);
            f.len = 0;
            f_u32s(&f, TFORK_OP_FORK, 1, 2, 2, 0, 0);
            rec(&b, 3, &f);
            break;
        case 8:
            f_eval(&f, "no_init", 0, av);
            f_str(&f, TFORK_OP_RUN, "ok_worker");
            rec(&b, 0, &f);
            break;
        case 9:
            put(&f, "\x03\x00\x00\x00\x04\x00\x00\x00\x09\x00\x00\x00", 12);
            rec(&b, 0, &f);
            break;
        case 11:
            f_u32s(&f, TFORK_OP_ARGFD, 1, 0, 0, 0, 0);
            rec(&b, 3, &f);
            f.len = 0;
            f_u32s(&f, TFORK_OP_ARGFD, 1, 0, 0, 0, 0);
            rec(&b, 1, &f);
            f.len = 0;
            f_exec(&f, "ok-prog", 0);
            rec(&b, 0, &f);
            break;
        }
        {
            struct bytes out = { 0 };

            if (child.len > 255) {
                fprintf(stderr, "gen_seeds: child stream too long\n");
                exit(1);
            }
            put8(&out, (unsigned)child.len);
            put(&out, b.p, b.len);
            put(&out, child.p, child.len);
            save("serve", v[i].name, &out);
            free(out.p);
        }
    }
    free(b.p);
    free(f.p);
    free(child.p);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: gen_seeds DIR  (writes DIR/<harness>/seed-*)\n");
        return 1;
    }
    outdir = argv[1];
    mkdir(outdir, 0777);
    cmd_seeds();
    reply_seeds();
    rpc_seeds();
    serve_seeds();
    return 0;
}
