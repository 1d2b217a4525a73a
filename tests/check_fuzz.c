/* check_fuzz.c: the fuzz harnesses of tests/fuzz/ without libFuzzer.
 * Every file of tests/fuzz/<harness>/ -- the seed corpus and every crash,
 * hang or leak `make fuzz` found (crash-*, timeout-*, leak-*) -- is fed to
 * its harness once, in a test of its own: the harness aborts on a bug,
 * and the input's process must leave no fd and no child behind.  Built
 * with ASan (the CI's sanitizer run), it must leak no memory either. */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif
#if UNDER_ASAN
#include <sanitizer/lsan_interface.h>
#endif

/* every harness, each with its own entry: fuzz_<name>_one */
#include "fuzz/fuzz_cmd.c"
#include "fuzz/fuzz_reply.c"
#include "fuzz/fuzz_rpc.c"
#include "fuzz/fuzz_serve.c"

#define MAX_INPUTS 4096

struct harness {
    const char *name;                   /* also its directory */
    int (*one)(const uint8_t *data, size_t size);
    char **files;                       /* sorted paths */
    int nfiles;
};

static struct harness harnesses[] = {
    { "cmd", fuzz_cmd_one, NULL, 0 },
    { "reply", fuzz_reply_one, NULL, 0 },
    { "rpc", fuzz_rpc_one, NULL, 0 },
    { "serve", fuzz_serve_one, NULL, 0 },
};
#define NHARNESS ((int)(sizeof harnesses / sizeof harnesses[0]))

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The files of $TFORK_TESTDIR/fuzz/<name>, sorted (none: nfiles 0). */
static void list_inputs(struct harness *h)
{
    const char *dir = getenv("TFORK_TESTDIR");
    char path[4096];
    struct dirent *e;
    DIR *d;

    snprintf(path, sizeof path, "%s/fuzz/%s", dir ? dir : "tests", h->name);
    d = opendir(path);
    if (!d)
        return;
    h->files = calloc(MAX_INPUTS, sizeof *h->files);
    while (h->files && h->nfiles < MAX_INPUTS && (e = readdir(d))) {
        char full[8192];
        struct stat sb;

        if (e->d_name[0] == '.')
            continue;
        snprintf(full, sizeof full, "%s/%s", path, e->d_name);
        if (stat(full, &sb) == 0 && S_ISREG(sb.st_mode))
            h->files[h->nfiles++] = strdup(full);
    }
    closedir(d);
    qsort(h->files, (size_t)h->nfiles, sizeof *h->files, by_name);
}

static uint8_t *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf = NULL;
    size_t cap = 0, n = 0, k;

    ck_assert_msg(f != NULL, "%s: %s", path, strerror(errno));
    do {
        if (n == cap) {
            cap = cap ? cap * 2 : 65536;
            buf = realloc(buf, cap);
            ck_assert_ptr_nonnull(buf);
        }
        k = fread(buf + n, 1, cap - n, f);
        n += k;
    } while (k > 0);
    ck_assert_msg(!ferror(f), "%s: read error", path);
    fclose(f);
    *len = n;
    return buf;
}

static void replay(struct harness *h, int i)
{
    int fds0 = fuzz_fd_count();
    size_t len;
    uint8_t *buf;

    ck_assert_int_lt(i, h->nfiles);
    buf = slurp(h->files[i], &len);
    fuzz_input_name = h->files[i];
    /* the harness aborts (a signal Check reports) on any bug */
    ck_assert_int_eq(h->one(buf, len), 0);
    free(buf);
#if UNDER_ASAN
    /* what libFuzzer's leak detection saw: memory nothing points to */
    ck_assert_msg(__lsan_do_recoverable_leak_check() == 0,
                  "%s: memory leaked (LeakSanitizer's report above)",
                  h->files[i]);
#endif
    ck_assert_msg(fuzz_fd_count() == fds0, "%s: %d fds open, %d before",
                  h->files[i], fuzz_fd_count(), fds0);
    ck_assert_msg(waitpid(-1, NULL, WNOHANG) < 0 && errno == ECHILD,
                  "%s: a child process was left", h->files[i]);
}

START_TEST(test_cmd)
{
    replay(&harnesses[0], _i);
}
END_TEST

START_TEST(test_reply)
{
    replay(&harnesses[1], _i);
}
END_TEST

START_TEST(test_rpc)
{
    replay(&harnesses[2], _i);
}
END_TEST

START_TEST(test_serve)
{
    replay(&harnesses[3], _i);
}
END_TEST

/* A harness whose directory is missing or empty has lost its corpus. */
START_TEST(test_corpus_present)
{
    for (int i = 0; i < NHARNESS; i++)
        ck_assert_msg(harnesses[i].nfiles > 0, "tests/fuzz/%s/: no inputs "
                      "(is TFORK_TESTDIR set?)", harnesses[i].name);
}
END_TEST

int main(void)
{
    const TTest *const replays[NHARNESS] = {
        test_cmd, test_reply, test_rpc, test_serve,
    };
    Suite *s = suite_create("fuzz");
    SRunner *sr;
    TCase *tc;
    int failed;

    tc = tcase_create("corpus");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_corpus_present);
    suite_add_tcase(s, tc);
    /* one TCase per harness, one test per input file (_i) */
    for (int i = 0; i < NHARNESS; i++) {
        list_inputs(&harnesses[i]);
        tc = tcase_create(harnesses[i].name);
        tcase_set_timeout(tc, 60);
        if (harnesses[i].nfiles > 0)
            tcase_add_loop_test(tc, replays[i], 0, harnesses[i].nfiles);
        suite_add_tcase(s, tc);
    }
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
