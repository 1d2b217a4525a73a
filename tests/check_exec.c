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
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tfork.h"
#include "tfork-int.h"
#include "testutil.h"
#include "under_valgrind.h"

/* ---------------------------------------------------------------- helpers */

/* One exec in a fresh tfork_new_exec template, stdin /dev/null and
 * stdout a pipe whose bytes land in out; r gets the run and exit
 * callbacks.  The template is freed and reaped before it returns. */
static void exec_capture(struct ev_loop *loop, const char *path,
                         char *const argv[], char *const envp[],
                         void (*before)(void), struct tu_res *r, char *out,
                         size_t cap)
{
    struct tu_res tr;
    tfork *tpl, *p;
    int null, pp[2];

    memset(r, 0, sizeof *r);
    memset(&tr, 0, sizeof tr);
    tpl = tfork_new_exec(loop);
    ck_assert_msg(tpl != NULL, "no template: %s", strerror(errno));
    ck_assert_int_gt(tfork_pid(tpl), 0);
    ck_assert_int_eq(tfork_on_exit(tpl, tu_on_exit_cb, &tr), 0);
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
    ck_assert_int_eq(tfork_on_exit(p, tu_on_exit_cb, r), 0);
    ck_assert_int_eq(tfork_exec(p, path, argv, envp, tu_on_run, r), 0);
    ck_assert_int_eq(r->run_called, 0);     /* never inside the call */
    RUN_UNTIL(loop, r->run_called && r->exit_called, 30);
    tu_read_to_eof(pp[0], out, cap, 30);
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

#define ARGV(...) ((char *const[]){ __VA_ARGS__, NULL })

/* ---------------------------------------------------------------- output */

START_TEST(test_echo_output)
{
    int fds0 = tu_fd_count();
    struct ev_loop *loop = tu_loop_for(_i);
    struct tu_res r;
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
    tu_finish(loop, fds0);
}
END_TEST

/* tfork_pid(p), the on_exit pid and the program's own getpid() agree. */
START_TEST(test_pid_is_program_pid)
{
    int fds0 = tu_fd_count();
    struct ev_loop *loop = tu_loop_for(_i);
    struct tu_res r;
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
    tu_finish(loop, fds0);
}
END_TEST

/* Only the fds sent are placed: 0 and 1 here; the program sees its
 * stdin as /dev/null (reads EOF at once). */
START_TEST(test_fds_in_order)
{
    int fds0 = tu_fd_count();
    struct ev_loop *loop = tu_loop_for(_i);
    struct tu_res r;
    char out[256];

    exec_capture(loop, "/bin/sh", ARGV((char *)"sh", (char *)"-c",
                 (char *)"cat; echo after-cat; readlink /proc/self/fd/0"),
                 NULL, NULL, &r, out, sizeof out);
    ck_assert_int_eq(r.run_err, 0);
    ck_assert_str_eq(out, "after-cat\n/dev/null\n");
    ck_assert_msg(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0,
                  "status 0x%x", r.status);
    tu_finish(loop, fds0);
}
END_TEST

/* Ten fds: the program gets them on 0..9 (fd 9 is the pipe), and the
 * child's own socket, which may sit among those numbers, survives the
 * placing: a missing program is still reported (_i bit 1), with 127.
 * _i bit 2: the exec is queued only after the fork has happened, so the
 * forked child execs itself; otherwise the template spawns the program
 * and places the fds through posix_spawn's file actions. */
START_TEST(test_many_fds)
{
    int fds0 = tu_fd_count();
    struct ev_loop *loop = tu_loop_for(_i & 1);
    int missing = (_i >> 1) & 1, late = _i >> 2;
    struct tu_res r, tr;
    tfork *tpl, *p;
    int null, pp[2];
    char out[256];

    tu_res_init(&r);
    tu_res_init(&tr);
    tpl = tfork_new_exec(loop);
    ck_assert_ptr_nonnull(tpl);
    ck_assert_int_eq(tfork_on_exit(tpl, tu_on_exit_cb, &tr), 0);
    p = tfork_fork(tpl);
    ck_assert_ptr_nonnull(p);
    if (late)
        RUN_UNTIL(loop, tfork_pid(p) > 0, 30);
    null = open("/dev/null", O_RDONLY | O_CLOEXEC);
    ck_assert_int_ge(null, 0);
    ck_assert_int_eq(pipe2(pp, O_CLOEXEC), 0);
    for (int i = 0; i < 9; i++)
        ck_assert_int_eq(tfork_send_fd(p, null), 0);
    ck_assert_int_eq(tfork_send_fd(p, pp[1]), 0);
    close(null);
    close(pp[1]);
    ck_assert_int_eq(tfork_on_exit(p, tu_on_exit_cb, &r), 0);
    ck_assert_int_eq(tfork_exec(p, missing ? "/nonexistent/tfork-nine" :
                                "/bin/sh", ARGV((char *)"sh", (char *)"-c",
                                (char *)"echo nine >&9; readlink /proc/self/fd/8 >&9"),
                                NULL, tu_on_run, &r), 0);
    RUN_UNTIL(loop, r.run_called && r.exit_called, 30);
    tu_read_to_eof(pp[0], out, sizeof out, 30);
    close(pp[0]);
    tfork_free(tpl);
    RUN_UNTIL(loop, tr.exit_called, 30);
    ck_assert_int_eq(r.run_fd, -1);
    if (missing) {
        ck_assert_int_eq(r.run_err, -ENOENT);
        ck_assert_msg(strstr(r.msg, "/nonexistent/tfork-nine") != NULL,
                      "message: '%s'", r.msg);
        ck_assert_str_eq(out, "");
        ck_assert_msg(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 127,
                      "status 0x%x", r.status);
    } else {
        ck_assert_int_eq(r.run_err, 0);
        ck_assert_str_eq(out, "nine\n/dev/null\n");
        ck_assert_msg(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0,
                      "status 0x%x", r.status);
    }
    tu_finish(loop, fds0);
}
END_TEST

/* ---------------------------------------------------------------- lookup */

START_TEST(test_path_lookup)
{
    int fds0 = tu_fd_count();
    struct ev_loop *loop = tu_loop_for(_i);
    struct tu_res r;
    char out[256];

    exec_capture(loop, "echo", ARGV((char *)"echo", (char *)"via-path"),
                 NULL, NULL, &r, out, sizeof out);
    ck_assert_int_eq(r.run_fd, -1);
    ck_assert_int_eq(r.run_err, 0);
    ck_assert_str_eq(out, "via-path\n");
    ck_assert_msg(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0,
                  "status 0x%x", r.status);
    tu_finish(loop, fds0);
}
END_TEST

START_TEST(test_missing_program)
{
    int fds0 = tu_fd_count();
    struct ev_loop *loop = tu_loop_for(_i);
    struct tu_res r;
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
    tu_finish(loop, fds0);
}
END_TEST

START_TEST(test_missing_program_in_path)
{
    int fds0 = tu_fd_count();
    struct ev_loop *loop = tu_loop_for(_i);
    struct tu_res r;
    char out[256];

    exec_capture(loop, "tfork-no-such-prog-xyz",
                 ARGV((char *)"tfork-no-such-prog-xyz"), NULL, NULL, &r,
                 out, sizeof out);
    ck_assert_int_eq(r.run_fd, -1);
    ck_assert_int_eq(r.run_err, -ENOENT);
    ck_assert_msg(strstr(r.msg, "tfork-no-such-prog-xyz") != NULL,
                  "message does not name the program: '%s'", r.msg);
    ck_assert_str_eq(out, "");
    tu_finish(loop, fds0);
}
END_TEST

START_TEST(test_not_executable)
{
    int fds0 = tu_fd_count();
    struct ev_loop *loop = tu_loop_for(_i);
    struct tu_res r;
    char out[256];

    exec_capture(loop, "/etc/passwd", ARGV((char *)"passwd"), NULL, NULL,
                 &r, out, sizeof out);
    ck_assert_int_eq(r.run_fd, -1);
    ck_assert_int_eq(r.run_err, -EACCES);
    ck_assert_msg(strstr(r.msg, "/etc/passwd") != NULL,
                  "message does not name the program: '%s'", r.msg);
    tu_finish(loop, fds0);
}
END_TEST

/* ---------------------------------------------------------------- env */

START_TEST(test_envp_given)
{
    int fds0 = tu_fd_count();
    struct ev_loop *loop = tu_loop_for(_i);
    struct tu_res r;
    char out[256];

    exec_capture(loop, "/usr/bin/env", ARGV((char *)"env"),
                 ARGV((char *)"A=1"), NULL, &r, out, sizeof out);
    ck_assert_int_eq(r.run_err, 0);
    ck_assert_str_eq(out, "A=1\n");
    ck_assert_msg(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0,
                  "status 0x%x", r.status);
    tu_finish(loop, fds0);
}
END_TEST

/* An empty envp is an empty environment, not "keep the template's". */
START_TEST(test_envp_empty)
{
    int fds0 = tu_fd_count();
    struct ev_loop *loop = tu_loop_for(_i);
    struct tu_res r;
    char out[256];
    char *const empty[] = { NULL };

    exec_capture(loop, "/usr/bin/env", ARGV((char *)"env"), empty, NULL,
                 &r, out, sizeof out);
    ck_assert_int_eq(r.run_err, 0);
    ck_assert_str_eq(out, "");
    tu_finish(loop, fds0);
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
    int fds0 = tu_fd_count();
    struct ev_loop *loop = tu_loop_for(_i);
    struct tu_res r;
    char out[256];

    setenv("TFORK_CHECK_EXEC_VAR", "kept-1", 1);
    unsetenv("TFORK_CHECK_EXEC_LATE");
    exec_capture(loop, "/bin/sh", ARGV((char *)"sh", (char *)"-c",
                 (char *)"echo \"$TFORK_CHECK_EXEC_VAR\" "
                 "\"${TFORK_CHECK_EXEC_LATE-unset}\""), NULL, set_late_var,
                 &r, out, sizeof out);
    ck_assert_int_eq(r.run_err, 0);
    ck_assert_str_eq(out, "kept-1 unset\n");
    tu_finish(loop, fds0);
}
END_TEST

/* ---------------------------------------------------------------- status */

START_TEST(test_exit_status_3)
{
    int fds0 = tu_fd_count();
    struct ev_loop *loop = tu_loop_for(_i);
    struct tu_res r;
    char out[256];

    exec_capture(loop, "/bin/sh", ARGV((char *)"sh", (char *)"-c",
                 (char *)"exit 3"), NULL, NULL, &r, out, sizeof out);
    ck_assert_int_eq(r.run_err, 0);
    ck_assert_msg(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 3,
                  "status 0x%x", r.status);
    ck_assert_int_eq(r.exit_pid, r.run_pid);
    tu_finish(loop, fds0);
}
END_TEST

START_TEST(test_killed_by_sigterm)
{
    int fds0 = tu_fd_count();
    struct ev_loop *loop = tu_loop_for(_i);
    struct tu_res r;
    char out[256];

    exec_capture(loop, "/bin/sh", ARGV((char *)"sh", (char *)"-c",
                 (char *)"kill -TERM $$; sleep 5"), NULL, NULL, &r, out,
                 sizeof out);
    ck_assert_int_eq(r.run_err, 0);
    ck_assert_msg(r.status != -1 && WIFSIGNALED(r.status) &&
                  WTERMSIG(r.status) == SIGTERM, "status 0x%x", r.status);
    ck_assert_int_eq(r.exit_pid, r.run_pid);
    tu_finish(loop, fds0);
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
    int fds0 = tu_fd_count();
    struct ev_loop *loop = tu_loop_for(_i);
    int leak_null, leak_pipe[2];
    struct sigaction sa, old1, old2;
    sigset_t hup, oldmask;
    struct tu_res r;
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
    tu_finish(loop, fds0);
}
END_TEST

/* ---------------------------------------------------------------- spawn */

static pid_t exec_main_pid;

/* fork fails in every process but the test process itself */
static pid_t fork_fail_in_copy(void)
{
    if (getpid() == exec_main_pid)
        return tfork__sys_fork();
    errno = EAGAIN;
    return -1;
}

/* A child that only execs is spawned by its template, never forked: in a
 * template whose fork always fails, an exec queued at once still runs
 * the program (with its fds and pid), while one queued after the fork
 * was tried needs that fork and fails with its error. */
START_TEST(test_exec_needs_no_fork)
{
    int fds0 = tu_fd_count();
    struct ev_loop *loop = tu_loop_for(_i);
    struct tu_res r, r2, tr;
    tfork *tpl, *p, *p2;
    int null, pp[2];
    char out[256];

    /* The template is a copy of this process: under valgrind it forks
     * for every exec (posix_spawn cannot report a failed exec there, see
     * spawn_reports_errors in serve/serve.c), so there is no spawn to
     * test. */
    if (uv_running(0)) {
        fprintf(stderr, "test_exec_needs_no_fork:%d: skipped: under valgrind "
                "templates fork for exec, never posix_spawn\n", _i);
        tu_finish(loop, fds0);
        return;
    }
    tu_res_init(&r);
    tu_res_init(&r2);
    tu_res_init(&tr);
    exec_main_pid = getpid();
    tfork__sys.fork = fork_fail_in_copy;
    tpl = tfork_template(loop);
    tfork__sys.fork = tfork__sys_fork;
    ck_assert_ptr_nonnull(tpl);
    ck_assert_int_eq(tfork_on_exit(tpl, tu_on_exit_cb, &tr), 0);

    p = tfork_fork(tpl);
    ck_assert_ptr_nonnull(p);
    null = open("/dev/null", O_RDONLY | O_CLOEXEC);
    ck_assert_int_ge(null, 0);
    ck_assert_int_eq(pipe2(pp, O_CLOEXEC), 0);
    ck_assert_int_eq(tfork_send_fd(p, null), 0);
    ck_assert_int_eq(tfork_send_fd(p, pp[1]), 0);
    close(null);
    close(pp[1]);
    ck_assert_int_eq(tfork_on_exit(p, tu_on_exit_cb, &r), 0);
    ck_assert_int_eq(tfork_exec(p, "/bin/sh", ARGV((char *)"sh", (char *)"-c",
                                (char *)"echo spawned $$"), NULL, tu_on_run,
                                &r), 0);

    p2 = tfork_fork(tpl);
    ck_assert_ptr_nonnull(p2);
    ck_assert_int_eq(tfork_on_exit(p2, tu_on_exit_cb, &r2), 0);
    RUN_UNTIL(loop, r.run_called && r.exit_called && r2.exit_called, 30);
    ck_assert_int_eq(tfork_exec(p2, "/bin/true", ARGV((char *)"true"), NULL,
                                tu_on_run, &r2), 0);
    RUN_UNTIL(loop, r2.run_called, 30);
    tu_read_to_eof(pp[0], out, sizeof out, 30);
    close(pp[0]);
    tfork_free(tpl);
    RUN_UNTIL(loop, tr.exit_called, 30);

    ck_assert_int_eq(r.run_err, 0);
    ck_assert_int_eq(r.run_fd, -1);
    ck_assert_int_gt(r.run_pid, 0);
    {
        char want[64];

        snprintf(want, sizeof want, "spawned %d\n", (int)r.run_pid);
        ck_assert_str_eq(out, want);
    }
    ck_assert_int_eq(r.exit_pid, r.run_pid);
    ck_assert_msg(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0,
                  "status 0x%x", r.status);
    ck_assert_int_eq(r2.run_err, -EAGAIN);
    ck_assert_msg(strstr(r2.msg, "fork failed") != NULL, "message: '%s'",
                  r2.msg);
    ck_assert_int_eq(r2.status, -1);    /* it never existed */
    ck_assert_msg(WIFEXITED(tr.status) && WEXITSTATUS(tr.status) == 0,
                  "template status 0x%x", tr.status);
    tu_finish(loop, fds0);
}
END_TEST

/* A script without "#!" is run by /bin/sh, as execvp does: posix_spawn
 * refuses it (ENOEXEC), and the template then forks a child whose execvp
 * runs it. */
START_TEST(test_script_without_shebang)
{
    int fds0 = tu_fd_count();
    struct ev_loop *loop = tu_loop_for(_i);
    struct tu_res r;
    char out[256], dir[] = "/tmp/tfork-check-exec-XXXXXX", path[64];
    FILE *f;

    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/script", dir);
    f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs("echo no-shebang \"$1\"\n", f);
    ck_assert_int_eq(fclose(f), 0);
    ck_assert_int_eq(chmod(path, 0755), 0);
    exec_capture(loop, path, ARGV((char *)"script", (char *)"one arg"),
                 NULL, NULL, &r, out, sizeof out);
    unlink(path);
    rmdir(dir);
    ck_assert_int_eq(r.run_err, 0);
    ck_assert_str_eq(out, "no-shebang one arg\n");
    ck_assert_msg(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0,
                  "status 0x%x", r.status);
    ck_assert_int_eq(r.exit_pid, r.run_pid);
    tu_finish(loop, fds0);
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
    tcase_add_loop_test(tc, test_many_fds, 0, 8);
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

    tc = tcase_create("spawn");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_exec_needs_no_fork, 0, 2);
    tcase_add_loop_test(tc, test_script_without_shebang, 0, 2);
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
