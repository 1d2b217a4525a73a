/* check_task_docs.c: what tfork_task(3) and tfork-task(1) promise beyond
 * the task suite's AnyEvent::Task ports, each found wrong while writing
 * them: a checkout that failed while waiting for a worker stops waiting
 * (ev_run returns); tfork_task_fork_server and the tfork-task program
 * serve at an address that lives in argv (their process titles are
 * written over it). */
#include <check.h>
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <libgen.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tfork.h"
#include "tfork/task.h"
#include "testutil.h"
#include "under_valgrind.h"

/* ---------------------------------------------------------------- helpers */

struct answer {
    int called;
    int err;
    char msg[256];
    int n;
    char part[2][64];
};

static void on_answer(tfork_task_checkout *co, int err, const char *msg,
                      int n, const struct iovec *res, void *data)
{
    struct answer *a = data;

    (void)co;
    ck_assert_int_eq(tu_in_api, 0);     /* never inside tfork_task_call */
    a->called++;
    a->err = err;
    snprintf(a->msg, sizeof a->msg, "%s", msg);
    a->n = n;
    for (int i = 0; i < n && i < 2; i++)
        snprintf(a->part[i], sizeof a->part[i], "%s",
                 (const char *)res[i].iov_base);
}

/* A fresh private directory for unix sockets (mode 0700). */
static void tmp_dir(char *dir, size_t cap)
{
    const char *t = getenv("TMPDIR");

    snprintf(dir, cap, "%s/tfork-task-docs.XXXXXX", t && *t ? t : "/tmp");
    ck_assert_msg(mkdtemp(dir) != NULL, "mkdtemp: %s", strerror(errno));
}

/* Starts path with argv, stdout on a pipe whose read end goes to *out. */
static pid_t spawn(const char *path, char *const argv[], int *out)
{
    int pp[2];
    pid_t pid;

    ck_assert_int_eq(pipe2(pp, O_CLOEXEC), 0);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        dup2(pp[1], 1);
        execv(path, argv);
        _exit(127);
    }
    close(pp[1]);
    *out = pp[0];
    return pid;
}

/* One line of fd (without its newline) within secs; "" at EOF. */
static void read_line(int fd, char *out, size_t cap, double secs)
{
    double dl = tu_now() + secs;
    size_t len = 0;

    out[0] = '\0';
    while (!memchr(out, '\n', len) && len < cap - 1) {
        struct pollfd pfd = { fd, POLLIN, 0 };
        ssize_t n;

        ck_assert_msg(tu_now() < dl, "no line within %.0f s (so far '%s')",
                      secs, out);
        if (poll(&pfd, 1, 100) <= 0)
            continue;
        n = read(fd, out + len, 1);     /* byte by byte: no read-ahead */
        if (n <= 0)
            break;
        len += (size_t)n;
        out[len] = '\0';
    }
    if (len && out[len - 1] == '\n')
        out[len - 1] = '\0';
}

static int wait_status(pid_t pid, double secs)
{
    double dl = tu_now() + secs;
    int st;
    pid_t r;

    while ((r = waitpid(pid, &st, WNOHANG)) == 0) {
        if (tu_now() > dl) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            ck_abort_msg("pid %d did not exit within %.0f s", (int)pid,
                         secs);
        }
        usleep(10000);
    }
    ck_assert_int_eq(r, pid);
    return st;
}

/* ------------------------------------------------- a failed checkout */

/* A checkout waiting for a worker of a server that is not there fails
 * (_i 0: its timeout, 1: tfork_task_abort).  Its calls are answered; then
 * nothing is left to wait for, so ev_run must return by itself even
 * before the checkout is released: the client stops connecting for it. */
START_TEST(test_failed_checkout_stops_waiting)
{
    int fds0 = tu_fd_count();
    struct ev_loop *loop = tu_loop_for(0);
    tfork_task_client_opts o;
    tfork_task_client *c;
    tfork_task_checkout *co;
    struct answer a[2];
    char dir[256], addr[300];

    memset(a, 0, sizeof a);
    tmp_dir(dir, sizeof dir);
    snprintf(addr, sizeof addr, "unix:%s/nobody-listens", dir);
    memset(&o, 0, sizeof o);
    o.connect = addr;
    c = API(tfork_task_client_new(loop, &o));
    ck_assert_msg(c != NULL, "client: %s", strerror(errno));
    co = API(tfork_task_checkout_new(c, _i == 0 ? 0.3 : 60));
    ck_assert_ptr_nonnull(co);
    ck_assert_int_eq(API(tfork_task_call(co, "m", 0, NULL, on_answer,
                                         &a[0])), 0);
    ck_assert_int_eq(API(tfork_task_call(co, "m", 0, NULL, on_answer,
                                         &a[1])), 0);
    if (_i == 1) {
        /* let it try to connect a few times first */
        double t = tu_now() + 0.2;

        RUN_UNTIL(loop, tu_now() > t, 10);
        APIV(tfork_task_abort(co, "given up"));
    }
    RUN_UNTIL(loop, a[0].called && a[1].called, 10);
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(a[i].called, 1);
        ck_assert_int_eq(a[i].err, _i == 0 ? -ETIMEDOUT : -ECONNABORTED);
        if (_i == 1)
            ck_assert_str_eq(a[i].msg, "given up");
    }
    /* the bug: the checkout stayed in the wait queue, and the client
     * kept reconnecting for it, forever, with the loop held */
    tu_loop_drains(loop);
    ck_assert_int_eq(tfork_task_client_workers(c), 0);
    APIV(tfork_task_release(co));
    APIV(tfork_task_client_free(c));
    tu_finish(loop, fds0);
    ck_assert_int_eq(a[0].called + a[1].called, 2);
    ck_assert_int_eq(rmdir(dir), 0);
}
END_TEST

/* ------------------------------------------------- argv addresses */

/* tfork_task_fork_server(o) with o.listen = argv[1] of the caller: the
 * server process sets its title over argv, which must not reach the
 * address before the server has taken its copy. */
START_TEST(test_fork_server_argv_address)
{
    int fds0 = tu_fd_count();
    char dir[256], addr[300], path[4096], line[256], sock[300];
    int out, st;
    pid_t pid;

    tmp_dir(dir, sizeof dir);
    snprintf(addr, sizeof addr, "unix:%s/socket", dir);
    snprintf(path, sizeof path, "%s", tu_testdir("prog_task_docs"));
    pid = spawn(path, (char *const[]){ path, addr, NULL }, &out);
    read_line(out, line, sizeof line, 30);
    close(out);
    st = wait_status(pid, 30);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0,
                  "prog_task_docs %s: wait status 0x%x, output '%s'", addr,
                  st, line);
    ck_assert_str_eq(line, "reply: hi");
    /* the prog stopped its server with SIGTERM, which leaves the file */
    snprintf(sock, sizeof sock, "%s/socket", dir);
    unlink(sock);
    ck_assert_int_eq(rmdir(dir), 0);
    ck_assert_int_eq(tu_fd_count(), fds0);
    tu_no_children();
}
END_TEST

/* The tfork-task program: the address, module and function names come
 * from its argv.  It prints the address once it serves, answers a call
 * through the module, shows its title, and exits 0 on SIGTERM, removing
 * its socket. */
START_TEST(test_tfork_task_program)
{
    int fds0 = tu_fd_count();
    struct ev_loop *loop = tu_loop_for(0);
    const char *serve = getenv("TFORK_SERVE");
    char dir[256], addr[320], prog[4096], mod[4096], line[512], sock[300];
    char title[256], tmp[4096];
    tfork_task_client_opts o;
    tfork_task_client *c;
    tfork_task_checkout *co;
    struct answer a;
    struct iovec arg = { (void *)"x y", 3 };
    struct stat sb;
    int out, st;
    pid_t pid;
    FILE *f;
    size_t n;

    ck_assert_msg(serve && *serve, "TFORK_SERVE is not set (make check "
                  "sets it to the build tree's tfork-serve)");
    snprintf(tmp, sizeof tmp, "%s", serve);
    snprintf(prog, sizeof prog, "%s/tfork-task", dirname(tmp));
    ck_assert_msg(access(prog, X_OK) == 0, "%s: %s (make tfork-task)", prog,
                  strerror(errno));
    snprintf(mod, sizeof mod, "%s", tu_testdir("mod_task_docs.so"));
    tmp_dir(dir, sizeof dir);
    snprintf(sock, sizeof sock, "%s/socket", dir);
    snprintf(addr, sizeof addr, "unix:%s", sock);
    pid = spawn(prog, (char *const[]){ prog, (char *)"--require", mod,
                                       (char *)"--interface",
                                       (char *)"docs_echo", (char *)"--name",
                                       (char *)"docs", addr, NULL }, &out);
    read_line(out, line, sizeof line, 30);
    ck_assert_msg(strcmp(line, addr) == 0, "tfork-task printed '%s', not "
                  "'%s' (it exits 2 when it cannot serve)", line, addr);

    /* under valgrind cmdline is valgrind's: the kernel's comm holds the
     * title's first 15 bytes */
    snprintf(tmp, sizeof tmp, "/proc/%d/%s", (int)pid,
             uv_running(pid) ? "comm" : "cmdline");
    f = fopen(tmp, "re");
    ck_assert_ptr_nonnull(f);
    n = fread(title, 1, sizeof title - 1, f);
    fclose(f);
    title[n] = '\0';
    if (uv_running(pid)) {
        title[strcspn(title, "\n")] = '\0';
        ck_assert_str_eq(title, "tfork-task docs");
    } else {
        ck_assert_str_eq(title, "tfork-task docs: server");
    }

    memset(&a, 0, sizeof a);
    memset(&o, 0, sizeof o);
    o.connect = addr;
    c = API(tfork_task_client_new(loop, &o));
    ck_assert_ptr_nonnull(c);
    co = API(tfork_task_checkout_new(c, 20));
    ck_assert_ptr_nonnull(co);
    ck_assert_int_eq(API(tfork_task_call(co, "ping", 1, &arg, on_answer,
                                         &a)), 0);
    APIV(tfork_task_release(co));
    RUN_UNTIL(loop, a.called, 30);
    ck_assert_msg(a.err == 0, "call failed: %s", a.msg);
    ck_assert_int_eq(a.n, 2);
    ck_assert_str_eq(a.part[0], "ping");
    ck_assert_str_eq(a.part[1], "x y");
    APIV(tfork_task_client_free(c));

    ck_assert_int_eq(kill(pid, SIGTERM), 0);
    st = wait_status(pid, 30);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0,
                  "tfork-task after SIGTERM: wait status 0x%x", st);
    read_line(out, line, sizeof line, 30);
    ck_assert_str_eq(line, "");         /* EOF, nothing more printed */
    close(out);
    ck_assert_int_eq(lstat(sock, &sb), -1);     /* it removed its socket */
    ck_assert_int_eq(rmdir(dir), 0);
    tu_finish(loop, fds0);
}
END_TEST

/* ---------------------------------------------------------------- suite */

static Suite *task_docs_suite(void)
{
    Suite *s = suite_create("task_docs");
    TCase *tc;

    tc = tcase_create("failed checkouts");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_failed_checkout_stops_waiting, 0, 2);
    suite_add_tcase(s, tc);

    tc = tcase_create("argv addresses");
    tcase_set_timeout(tc, 90);
    tcase_add_test(tc, test_fork_server_argv_address);
    tcase_add_test(tc, test_tfork_task_program);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(task_docs_suite());
    int failed;

    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
