/* check_exec.c: tfork_exec, the fork+exec replacement: the program's
 * fds, output, pid, PATH lookup, environment, exec failures and exit
 * statuses (on_exit).  Every test runs on a private loop (_i == 0) and on
 * libev's default loop (_i == 1), and checks that it leaves no descriptor
 * and no child behind. */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tfork.h"

/* ---------------------------------------------------------------- helpers */

static double now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int fd_count(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *de;
    int n = 0;

    ck_assert_ptr_nonnull(d);
    while ((de = readdir(d)))
        if (de->d_name[0] != '.' && atoi(de->d_name) != dirfd(d))
            n++;
    closedir(d);
    return n;
}

/* Children of pid (every thread's), zombies included. */
static int children_of(pid_t pid, pid_t *out, int max)
{
    char path[320];
    DIR *d;
    struct dirent *de;
    int n = 0;

    snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
    d = opendir(path);
    if (!d)
        return 0;
    while ((de = readdir(d))) {
        FILE *f;
        int c;

        if (de->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "/proc/%d/task/%s/children", (int)pid,
                 de->d_name);
        f = fopen(path, "re");
        if (!f)
            continue;
        while (fscanf(f, "%d", &c) == 1) {
            if (n < max)
                out[n] = c;
            n++;
        }
        fclose(f);
    }
    closedir(d);
    return n;
}

static void tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
}

/* Runs loop until cond holds; fails the test after secs seconds. */
#define RUN_UNTIL(loop, cond, secs)                                         \
    do {                                                                    \
        double dl_ = now() + (secs);                                        \
        ev_timer tick_;                                                     \
        ev_timer_init(&tick_, tick_cb, 0.05, 0.05);                         \
        ev_timer_start((loop), &tick_);                                     \
        while (!(cond)) {                                                   \
            ck_assert_msg(now() < dl_, "timed out waiting for: %s", #cond); \
            ev_run((loop), EVRUN_ONCE);                                     \
        }                                                                   \
        ev_timer_stop((loop), &tick_);                                      \
    } while (0)

static struct ev_loop *loop_for(int i)
{
    struct ev_loop *loop = i ? ev_default_loop(0) : ev_loop_new(EVFLAG_AUTO);

    ck_assert_ptr_nonnull(loop);
    return loop;
}

static void watchdog_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    *(int *)w->data = 1;
    ev_break(loop, EVBREAK_ALL);
}

/* The library keeps nothing alive once all is done: ev_run returns by
 * itself (an unreferenced watchdog says if it did not). */
static void loop_drains(struct ev_loop *loop)
{
    ev_timer wd;
    int fired = 0;

    ev_timer_init(&wd, watchdog_cb, 10., 0.);
    wd.data = &fired;
    ev_timer_start(loop, &wd);
    ev_unref(loop);
    ev_run(loop, 0);
    ev_ref(loop);
    ev_timer_stop(loop, &wd);
    ck_assert_msg(!fired, "ev_run did not return: a watcher stayed active");
}

static void no_children(void)
{
    pid_t kids[16];
    int n = children_of(getpid(), kids, 16);

    ck_assert_msg(n == 0, "%d child(ren) left behind, first %d", n,
                  n ? (int)kids[0] : 0);
    errno = 0;
    ck_assert_int_eq(waitpid(-1, NULL, WNOHANG), -1);
    ck_assert_int_eq(errno, ECHILD);
}

struct res {
    int run_called;
    int run_fd;
    int run_err;
    pid_t run_pid;
    char msg[512];
    int exit_called;
    pid_t exit_pid;
    int status;
};

static void on_run(tfork *p, int fd, int err, void *data)
{
    struct res *r = data;

    r->run_called++;
    r->run_fd = fd;
    r->run_err = err;
    r->run_pid = tfork_pid(p);
    snprintf(r->msg, sizeof r->msg, "%s", tfork_errmsg(p));
}

static void on_exit_cb(pid_t pid, int status, void *data)
{
    struct res *r = data;

    r->exit_called++;
    r->exit_pid = pid;
    r->status = status;
}

/* Reads fd until EOF (every writer closed) into out; fails the test if
 * EOF does not come within secs seconds. */
static size_t read_to_eof(int fd, char *out, size_t cap, double secs)
{
    double dl = now() + secs;
    size_t len = 0;

    for (;;) {
        struct pollfd pfd = { fd, POLLIN, 0 };
        int left = (int)((dl - now()) * 1000);
        ssize_t n;

        ck_assert_msg(left > 0, "no EOF: a copy of the write end lives on");
        if (poll(&pfd, 1, left) <= 0)
            continue;
        n = read(fd, out + len, cap - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        ck_assert_msg(n >= 0, "read: %s", strerror(errno));
        if (n == 0)
            break;
        len += (size_t)n;
        ck_assert_msg(len < cap - 1, "more output than expected");
    }
    out[len] = '\0';
    return len;
}

/* One exec in a fresh tfork_new_exec template, stdin /dev/null and
 * stdout a pipe whose bytes land in out; r gets the run and exit
 * callbacks.  The template is freed and reaped before it returns. */
static void exec_capture(struct ev_loop *loop, const char *path,
                         char *const argv[], char *const envp[],
                         void (*before)(void), struct res *r, char *out,
                         size_t cap)
{
    struct res tr;
    tfork *tpl, *p;
    int null, pp[2];

    memset(r, 0, sizeof *r);
    memset(&tr, 0, sizeof tr);
    tpl = tfork_new_exec(loop);
    ck_assert_msg(tpl != NULL, "no template: %s", strerror(errno));
    ck_assert_int_gt(tfork_pid(tpl), 0);
    ck_assert_int_eq(tfork_on_exit(tpl, on_exit_cb, &tr), 0);
    if (before)
        before();
    p = tfork_fork(tpl);
    ck_assert_msg(p != NULL, "no process: %s", strerror(errno));
    null = open("/dev/null", O_RDONLY | O_CLOEXEC);
    ck_assert_int_ge(null, 0);
    ck_assert_int_eq(pipe2(pp, O_CLOEXEC), 0);
    ck_assert_int_eq(tfork_send_fd(p, null), 0);
    ck_assert_int_eq(tfork_send_fd(p, pp[1]), 0);
    close(null);    /* the library has its own copies */
    close(pp[1]);
    ck_assert_int_eq(tfork_on_exit(p, on_exit_cb, r), 0);
    ck_assert_int_eq(tfork_exec(p, path, argv, envp, on_run, r), 0);
    ck_assert_int_eq(r->run_called, 0);     /* never inside the call */
    RUN_UNTIL(loop, r->run_called && r->exit_called, 30);
    read_to_eof(pp[0], out, cap, 30);
    close(pp[0]);
    tfork_free(tpl);
    RUN_UNTIL(loop, tr.exit_called, 30);
    ck_assert_int_eq(tr.exit_called, 1);
    ck_assert_msg(tr.status != -1 && WIFEXITED(tr.status) &&
                  WEXITSTATUS(tr.status) == 0,
                  "template exit status 0x%x", tr.status);
    ck_assert_int_eq(r->run_called, 1);
    ck_assert_int_eq(r->exit_called, 1);
}

/* Common end of every test: nothing referenced, nothing left. */
static void finish(struct ev_loop *loop, int fds0)
{
    loop_drains(loop);
    ev_loop_destroy(loop);
    ck_assert_int_eq(fd_count(), fds0);
    no_children();
}

#define ARGV(...) ((char *const[]){ __VA_ARGS__, NULL })

/* ---------------------------------------------------------------- output */

START_TEST(test_echo_output)
{
    int fds0 = fd_count();
    struct ev_loop *loop = loop_for(_i);
    struct res r;
    char out[256];

    exec_capture(loop, "/bin/echo", ARGV((char *)"echo", (char *)"hello",
                 (char *)"exec world"), NULL, NULL, &r, out, sizeof out);
    ck_assert_int_eq(r.run_fd, -1);
    ck_assert_int_eq(r.run_err, 0);
    ck_assert_str_eq(r.msg, "");
    ck_assert_str_eq(out, "hello exec world\n");
    ck_assert_msg(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0,
                  "status 0x%x", r.status);
    ck_assert_int_gt(r.run_pid, 0);
    ck_assert_int_eq(r.exit_pid, r.run_pid);
    finish(loop, fds0);
}
END_TEST

/* tfork_pid(p), the on_exit pid and the program's own getpid() agree. */
START_TEST(test_pid_is_program_pid)
{
    int fds0 = fd_count();
    struct ev_loop *loop = loop_for(_i);
    struct res r;
    char out[256], want[64];

    exec_capture(loop, "/bin/sh", ARGV((char *)"sh", (char *)"-c",
                 (char *)"echo $$"), NULL, NULL, &r, out, sizeof out);
    ck_assert_int_eq(r.run_err, 0);
    ck_assert_int_gt(r.run_pid, 0);
    snprintf(want, sizeof want, "%d\n", (int)r.run_pid);
    ck_assert_str_eq(out, want);
    ck_assert_int_eq(r.exit_pid, r.run_pid);
    ck_assert_msg(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0,
                  "status 0x%x", r.status);
    finish(loop, fds0);
}
END_TEST

/* Only the fds sent are placed: 0 and 1 here; the program sees its
 * stdin as /dev/null (reads EOF at once). */
START_TEST(test_fds_in_order)
{
    int fds0 = fd_count();
    struct ev_loop *loop = loop_for(_i);
    struct res r;
    char out[256];

    exec_capture(loop, "/bin/sh", ARGV((char *)"sh", (char *)"-c",
                 (char *)"cat; echo after-cat; readlink /proc/self/fd/0"),
                 NULL, NULL, &r, out, sizeof out);
    ck_assert_int_eq(r.run_err, 0);
    ck_assert_str_eq(out, "after-cat\n/dev/null\n");
    ck_assert_msg(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0,
                  "status 0x%x", r.status);
    finish(loop, fds0);
}
END_TEST

/* ---------------------------------------------------------------- lookup */

START_TEST(test_path_lookup)
{
    int fds0 = fd_count();
    struct ev_loop *loop = loop_for(_i);
    struct res r;
    char out[256];

    exec_capture(loop, "echo", ARGV((char *)"echo", (char *)"via-path"),
                 NULL, NULL, &r, out, sizeof out);
    ck_assert_int_eq(r.run_fd, -1);
    ck_assert_int_eq(r.run_err, 0);
    ck_assert_str_eq(out, "via-path\n");
    ck_assert_msg(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0,
                  "status 0x%x", r.status);
    finish(loop, fds0);
}
END_TEST

START_TEST(test_missing_program)
{
    int fds0 = fd_count();
    struct ev_loop *loop = loop_for(_i);
    struct res r;
    char out[256];

    exec_capture(loop, "/nonexistent/tfork-no-such-prog",
                 ARGV((char *)"tfork-no-such-prog"), NULL, NULL, &r, out,
                 sizeof out);
    ck_assert_int_eq(r.run_fd, -1);
    ck_assert_int_eq(r.run_err, -ENOENT);
    ck_assert_msg(strstr(r.msg, "/nonexistent/tfork-no-such-prog") != NULL,
                  "message does not name the program: '%s'", r.msg);
    ck_assert_str_eq(out, "");
    /* the process existed: its exit is reported, once, with a real
     * status */
    ck_assert_msg(r.status != -1 && (WIFEXITED(r.status) ||
                                     WIFSIGNALED(r.status)),
                  "status 0x%x", r.status);
    finish(loop, fds0);
}
END_TEST

START_TEST(test_missing_program_in_path)
{
    int fds0 = fd_count();
    struct ev_loop *loop = loop_for(_i);
    struct res r;
    char out[256];

    exec_capture(loop, "tfork-no-such-prog-xyz",
                 ARGV((char *)"tfork-no-such-prog-xyz"), NULL, NULL, &r,
                 out, sizeof out);
    ck_assert_int_eq(r.run_fd, -1);
    ck_assert_int_eq(r.run_err, -ENOENT);
    ck_assert_msg(strstr(r.msg, "tfork-no-such-prog-xyz") != NULL,
                  "message does not name the program: '%s'", r.msg);
    ck_assert_str_eq(out, "");
    finish(loop, fds0);
}
END_TEST

START_TEST(test_not_executable)
{
    int fds0 = fd_count();
    struct ev_loop *loop = loop_for(_i);
    struct res r;
    char out[256];

    exec_capture(loop, "/etc/passwd", ARGV((char *)"passwd"), NULL, NULL,
                 &r, out, sizeof out);
    ck_assert_int_eq(r.run_fd, -1);
    ck_assert_int_eq(r.run_err, -EACCES);
    ck_assert_msg(strstr(r.msg, "/etc/passwd") != NULL,
                  "message does not name the program: '%s'", r.msg);
    finish(loop, fds0);
}
END_TEST

/* ---------------------------------------------------------------- env */

START_TEST(test_envp_given)
{
    int fds0 = fd_count();
    struct ev_loop *loop = loop_for(_i);
    struct res r;
    char out[256];

    exec_capture(loop, "/usr/bin/env", ARGV((char *)"env"),
                 ARGV((char *)"A=1"), NULL, &r, out, sizeof out);
    ck_assert_int_eq(r.run_err, 0);
    ck_assert_str_eq(out, "A=1\n");
    ck_assert_msg(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0,
                  "status 0x%x", r.status);
    finish(loop, fds0);
}
END_TEST

/* An empty envp is an empty environment, not "keep the template's". */
START_TEST(test_envp_empty)
{
    int fds0 = fd_count();
    struct ev_loop *loop = loop_for(_i);
    struct res r;
    char out[256];
    char *const empty[] = { NULL };

    exec_capture(loop, "/usr/bin/env", ARGV((char *)"env"), empty, NULL,
                 &r, out, sizeof out);
    ck_assert_int_eq(r.run_err, 0);
    ck_assert_str_eq(out, "");
    finish(loop, fds0);
}
END_TEST

static void set_late_var(void)
{
    setenv("TFORK_CHECK_EXEC_LATE", "late", 1);
}

/* envp NULL: the template's environment, i.e. the client's when the
 * template was made (a variable set afterwards is not there). */
START_TEST(test_envp_null_keeps_template_env)
{
    int fds0 = fd_count();
    struct ev_loop *loop = loop_for(_i);
    struct res r;
    char out[256];

    setenv("TFORK_CHECK_EXEC_VAR", "kept-1", 1);
    unsetenv("TFORK_CHECK_EXEC_LATE");
    exec_capture(loop, "/bin/sh", ARGV((char *)"sh", (char *)"-c",
                 (char *)"echo \"$TFORK_CHECK_EXEC_VAR\" "
                 "\"${TFORK_CHECK_EXEC_LATE-unset}\""), NULL, set_late_var,
                 &r, out, sizeof out);
    ck_assert_int_eq(r.run_err, 0);
    ck_assert_str_eq(out, "kept-1 unset\n");
    finish(loop, fds0);
}
END_TEST

/* ---------------------------------------------------------------- status */

START_TEST(test_exit_status_3)
{
    int fds0 = fd_count();
    struct ev_loop *loop = loop_for(_i);
    struct res r;
    char out[256];

    exec_capture(loop, "/bin/sh", ARGV((char *)"sh", (char *)"-c",
                 (char *)"exit 3"), NULL, NULL, &r, out, sizeof out);
    ck_assert_int_eq(r.run_err, 0);
    ck_assert_msg(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 3,
                  "status 0x%x", r.status);
    ck_assert_int_eq(r.exit_pid, r.run_pid);
    finish(loop, fds0);
}
END_TEST

START_TEST(test_killed_by_sigterm)
{
    int fds0 = fd_count();
    struct ev_loop *loop = loop_for(_i);
    struct res r;
    char out[256];

    exec_capture(loop, "/bin/sh", ARGV((char *)"sh", (char *)"-c",
                 (char *)"kill -TERM $$; sleep 5"), NULL, NULL, &r, out,
                 sizeof out);
    ck_assert_int_eq(r.run_err, 0);
    ck_assert_msg(r.status != -1 && WIFSIGNALED(r.status) &&
                  WTERMSIG(r.status) == SIGTERM, "status 0x%x", r.status);
    ck_assert_int_eq(r.exit_pid, r.run_pid);
    finish(loop, fds0);
}
END_TEST

/* ---------------------------------------------------------------- hygiene */

static void usr1_handler(int sig)
{
    (void)sig;
}

/* The client has inheritable fds, a handler, an ignored and a blocked
 * signal: the program sees only the fds sent (and the template's 2),
 * nothing blocked, nothing ignored. */
START_TEST(test_program_starts_clean)
{
    int fds0 = fd_count();
    struct ev_loop *loop = loop_for(_i);
    int leak_null, leak_pipe[2];
    struct sigaction sa, old1, old2;
    sigset_t hup, oldmask;
    struct res r;
    char out[512];

    leak_null = open("/dev/null", O_RDONLY);
    ck_assert_int_ge(leak_null, 0);
    ck_assert_int_eq(pipe(leak_pipe), 0);
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = usr1_handler;
    sigemptyset(&sa.sa_mask);
    ck_assert_int_eq(sigaction(SIGUSR1, &sa, &old1), 0);
    sa.sa_handler = SIG_IGN;
    ck_assert_int_eq(sigaction(SIGUSR2, &sa, &old2), 0);
    sigemptyset(&hup);
    sigaddset(&hup, SIGHUP);
    ck_assert_int_eq(sigprocmask(SIG_BLOCK, &hup, &oldmask), 0);

    exec_capture(loop, "/bin/sh", ARGV((char *)"sh", (char *)"-c",
                 (char *)"ls /proc/$$/fd; "
                 "while read l; do case $l in SigBlk*|SigIgn*) "
                 "echo \"$l\";; esac; done </proc/$$/status"),
                 NULL, NULL, &r, out, sizeof out);
    ck_assert_int_eq(r.run_err, 0);
    ck_assert_str_eq(out, "0\n1\n2\n"
                     "SigBlk:\t0000000000000000\n"
                     "SigIgn:\t0000000000000000\n");

    close(leak_null);
    close(leak_pipe[0]);
    close(leak_pipe[1]);
    sigaction(SIGUSR1, &old1, NULL);
    sigaction(SIGUSR2, &old2, NULL);
    sigprocmask(SIG_SETMASK, &oldmask, NULL);
    finish(loop, fds0);
}
END_TEST

/* ---------------------------------------------------------------- suite */

static Suite *exec_suite(void)
{
    Suite *s = suite_create("exec");
    TCase *tc;

    tc = tcase_create("output");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_echo_output, 0, 2);
    tcase_add_loop_test(tc, test_pid_is_program_pid, 0, 2);
    tcase_add_loop_test(tc, test_fds_in_order, 0, 2);
    suite_add_tcase(s, tc);

    tc = tcase_create("lookup");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_path_lookup, 0, 2);
    tcase_add_loop_test(tc, test_missing_program, 0, 2);
    tcase_add_loop_test(tc, test_missing_program_in_path, 0, 2);
    tcase_add_loop_test(tc, test_not_executable, 0, 2);
    suite_add_tcase(s, tc);

    tc = tcase_create("environment");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_envp_given, 0, 2);
    tcase_add_loop_test(tc, test_envp_empty, 0, 2);
    tcase_add_loop_test(tc, test_envp_null_keeps_template_env, 0, 2);
    suite_add_tcase(s, tc);

    tc = tcase_create("status");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_exit_status_3, 0, 2);
    tcase_add_loop_test(tc, test_killed_by_sigterm, 0, 2);
    suite_add_tcase(s, tc);

    tc = tcase_create("hygiene");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_program_starts_clean, 0, 2);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(exec_suite());
    int failed;

    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
