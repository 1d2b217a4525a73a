/* check_life.c: the lives of templates and children: they die with their
 * owner, children start clean (fds, signals), many spawns leave nothing
 * behind, tfork_early and tfork_template copies run the program's own
 * functions, process titles, and reaping on any loop.  Every test checks
 * that it leaves no descriptor and no child behind. */
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

/* How long a template or unrun child may outlive its killed client. */
#define OWNER_DEADLINE 1.0

/* ---------------------------------------------------------------- helpers */

static int is_child(pid_t pid)
{
    pid_t kids[64];
    int n = tu_children_of(getpid(), kids, 64);

    for (int i = 0; i < n && i < 64; i++)
        if (kids[i] == pid)
            return 1;
    return 0;
}

/* pid has exited (gone, zombie or dead) or is another process by now. */
static int proc_gone(pid_t pid, unsigned long long start)
{
    unsigned long long t;
    char st = tu_proc_state(pid, NULL, &t);

    return !st || st == 'Z' || st == 'X' || t != start;
}

/* pid does not run any more (gone, zombie or dead). */
static int dead(pid_t pid)
{
    char st = tu_proc_state(pid, NULL, NULL);

    return !st || st == 'Z' || st == 'X';
}

static const char *testdir(void)
{
    const char *d = getenv("TFORK_TESTDIR");

    return d && *d ? d : "tests";
}

static const char *module(void)
{
    static char path[4096];

    snprintf(path, sizeof path, "%s/mod_life.so", testdir());
    return path;
}

static int status_code(int st)
{
    return st != -1 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Starts tests/<name> [arg] with its stdout on out; returns its pid. */
static pid_t spawn_prog(const char *name, const char *arg, int out)
{
    char path[4096];
    pid_t pid;

    snprintf(path, sizeof path, "%s/%s", testdir(), name);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        dup2(out, 1);
        execl(path, path, arg, (char *)NULL);
        _exit(127);
    }
    return pid;
}

/* The first string of /proc/<pid>/cmdline (the process title). */
static void cmdline_of(pid_t pid, char *out, size_t cap)
{
    char path[64];
    FILE *f;
    size_t n = 0;

    snprintf(path, sizeof path, "/proc/%d/cmdline", (int)pid);
    f = fopen(path, "re");
    if (f) {
        n = fread(out, 1, cap - 1, f);
        fclose(f);
    }
    out[n] = '\0';
}

/* Whether pid's title is want, the title read left in got.  A process
 * under valgrind shows valgrind's command line in /proc/PID/cmdline (the
 * program's argv is a copy valgrind made), so there only the kernel's
 * name, /proc/PID/comm (PR_SET_NAME: want's first 15 bytes), can be
 * compared; with say, that is said on stderr. */
static int title_is(pid_t pid, const char *want, char *got, size_t cap,
                    int say)
{
    char path[64], comm[16];
    FILE *f;
    size_t n = 0;

    if (!uv_running(pid)) {
        cmdline_of(pid, got, cap);
        return strcmp(got, want) == 0;
    }
    snprintf(path, sizeof path, "/proc/%d/comm", (int)pid);
    f = fopen(path, "re");
    if (f) {
        n = fread(got, 1, cap - 1, f);
        fclose(f);
    }
    got[n] = '\0';
    got[strcspn(got, "\n")] = '\0';
    snprintf(comm, sizeof comm, "%s", want);
    if (say)
        fprintf(stderr, "pid %d runs under valgrind: its /proc/%d/comm "
                "'%s' compared with '%s', not its cmdline with '%s'\n",
                (int)pid, (int)pid, got, comm, want);
    return strcmp(got, comm) == 0;
}

/* ---------------------------------------------------------------- owner */

/* A client killed with SIGKILL: its templates and unrun children go too
 * (mode 0: tfork_new_exec, 1: tfork_template, 2: tfork_early). */
START_TEST(test_owner_death)
{
    static const char *const modes[] = { "exec", "template", "early" };
    int fds0 = tu_fd_count();
    int pp[2], st, npids = 0;
    pid_t prog, pids[8];
    unsigned long long start[8];
    char line[256], *s, *end;
    size_t len = 0;
    double dl, t0;

    ck_assert_int_eq(pipe2(pp, O_CLOEXEC), 0);
    prog = spawn_prog("prog_life_owner", modes[_i], pp[1]);
    close(pp[1]);
    dl = tu_now() + 30;
    while (!memchr(line, '\n', len)) {
        struct pollfd pfd = { pp[0], POLLIN, 0 };
        ssize_t n;

        ck_assert_msg(tu_now() < dl, "prog_life_owner printed no pids");
        if (poll(&pfd, 1, 100) <= 0)
            continue;
        n = read(pp[0], line + len, sizeof line - 1 - len);
        ck_assert_msg(n > 0, "prog_life_owner failed (output '%.*s')",
                      (int)len, line);
        len += (size_t)n;
    }
    line[len] = '\0';
    ck_assert_msg(strncmp(line, "pids ", 5) == 0, "output: %s", line);
    for (s = line + 5; npids < 8; s = end) {
        long v = strtol(s, &end, 10);

        if (end == s)
            break;
        ck_assert_int_gt(v, 0);
        pids[npids] = (pid_t)v;
        ck_assert_msg(tu_proc_state(pids[npids], NULL, &start[npids]) != 0,
                      "pid %ld does not exist", v);
        npids++;
    }
    ck_assert_int_eq(npids, _i == 2 ? 5 : 3);

    ck_assert_int_eq(kill(prog, SIGKILL), 0);
    ck_assert_int_eq(waitpid(prog, &st, 0), prog);
    ck_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    t0 = tu_now();
    for (int i = 0; i < npids; i++) {
        while (!proc_gone(pids[i], start[i]) && tu_now() < t0 + OWNER_DEADLINE)
            usleep(10000);
        ck_assert_msg(proc_gone(pids[i], start[i]),
                      "%s: process %d (#%d of '%s') still runs %.1f s after "
                      "its client died (state %c)", modes[_i], (int)pids[i],
                      i, line, OWNER_DEADLINE,
                      tu_proc_state(pids[i], NULL, NULL));
    }
    close(pp[0]);
    ck_assert_int_eq(tu_fd_count(), fds0);
    tu_no_children();
}
END_TEST

/* ---------------------------------------------------------------- hygiene */

static void usr1_handler(int sig)
{
    (void)sig;
}

struct report {
    pid_t pid, ppid;
    int sock, argfd;
    int nfds;
    int fds[64];
    char targets[64][128];
    char sigblk[64], sigign[64], sigcgt[64];   /* /proc/self/status */
    char actblk[64], actign[64], actcgt[64];   /* sigprocmask, sigaction */
    int valgrind;       /* the child runs under valgrind */
    int end;
};

static void parse_report(char *text, struct report *rep)
{
    char *save = NULL;

    memset(rep, 0, sizeof *rep);
    rep->sock = rep->argfd = -1;
    for (char *l = strtok_r(text, "\n", &save); l;
         l = strtok_r(NULL, "\n", &save)) {
        int a, b;
        char tgt[128];

        if (sscanf(l, "pid %d", &a) == 1)
            rep->pid = a;
        else if (sscanf(l, "ppid %d", &a) == 1)
            rep->ppid = a;
        else if (sscanf(l, "sock %d", &a) == 1)
            rep->sock = a;
        else if (sscanf(l, "arg %d fd %d", &a, &b) == 2)
            rep->argfd = b;
        else if (sscanf(l, "fd %d %127s", &a, tgt) == 2 && rep->nfds < 64) {
            rep->fds[rep->nfds] = a;
            snprintf(rep->targets[rep->nfds], sizeof rep->targets[0], "%s",
                     tgt);
            rep->nfds++;
        } else if (sscanf(l, "SigBlk: %63s", rep->sigblk) == 1 ||
                   sscanf(l, "SigIgn: %63s", rep->sigign) == 1 ||
                   sscanf(l, "SigCgt: %63s", rep->sigcgt) == 1 ||
                   sscanf(l, "ActBlk: %63s", rep->actblk) == 1 ||
                   sscanf(l, "ActIgn: %63s", rep->actign) == 1 ||
                   sscanf(l, "ActCgt: %63s", rep->actcgt) == 1 ||
                   sscanf(l, "valgrind %d", &rep->valgrind) == 1)
            ;
        else if (strcmp(l, "end") == 0)
            rep->end = 1;
    }
}

/* Default dispositions and an empty mask, as the child sees them itself
 * and, unless it runs under valgrind, as the kernel has them: valgrind
 * installs a handler for every signal and keeps the program's own
 * dispositions to itself, so /proc/PID/status says nothing about them. */
static void check_clean_signals(const struct report *rep, const char *what)
{
    ck_assert_str_eq(rep->actblk, "0000000000000000");
    ck_assert_str_eq(rep->actign, "0000000000000000");
    ck_assert_str_eq(rep->actcgt, "0000000000000000");
    if (rep->valgrind) {
        fprintf(stderr, "%s: child %d runs under valgrind: SigBlk, SigIgn, "
                "SigCgt of /proc/%d/status not checked (valgrind's own "
                "handlers); sigprocmask and sigaction were\n", what,
                (int)rep->pid, (int)rep->pid);
        return;
    }
    ck_assert_str_eq(rep->sigblk, "0000000000000000");
    ck_assert_str_eq(rep->sigign, "0000000000000000");
    ck_assert_str_eq(rep->sigcgt, "0000000000000000");
}

static const char *target_of(const struct report *rep, int fd)
{
    for (int i = 0; i < rep->nfds; i++)
        if (rep->fds[i] == fd)
            return rep->targets[i];
    return NULL;
}

/* A client with fds that are not close-on-exec, a signal handler, an
 * ignored and a blocked signal makes a template: the run child has
 * exactly 0, 1, 2, its socket and the fd sent, an empty mask, no handler
 * and nothing ignored.  Mode 0: tfork_new_exec, 1: tfork_template,
 * 2: tfork_new (the default template, on the default loop). */
START_TEST(test_hygiene)
{
    int fds0 = tu_fd_count(), fds_loop;
    struct ev_loop *loop = _i == 2 ? ev_default_loop(0)
                                   : ev_loop_new(EVFLAG_AUTO);
    int leak_null, leak_pipe[2], sp[2];
    struct sigaction sa, old1, old2;
    sigset_t hup, oldmask;
    struct stat sst;
    struct tu_res r, tr;
    struct report rep;
    tfork *tpl = NULL, *p;
    char text[8192], want[64];
    const char *t;

    ck_assert_ptr_nonnull(loop);
    fds_loop = tu_fd_count();
    tu_res_init(&r);
    tu_res_init(&tr);

    /* the client's mess, all inheritable */
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

    ck_assert_int_eq(pipe2(sp, O_CLOEXEC), 0);
    ck_assert_int_eq(fstat(sp[1], &sst), 0);
    if (_i == 0)
        tpl = tfork_new_exec(loop);
    else if (_i == 1)
        tpl = tfork_template(loop);
    if (tpl) {
        ck_assert_int_eq(tfork_on_exit(tpl, tu_on_exit_cb, &tr), 0);
        p = tfork_fork(tpl);
    } else {
        p = tfork_new(loop);
    }
    ck_assert_msg(p != NULL, "no process: %s", strerror(errno));
    ck_assert_int_eq(tfork_require(p, module()), 0);
    ck_assert_int_eq(tfork_send_fd(p, sp[1]), 0);
    close(sp[1]);
    ck_assert_int_eq(tfork_on_exit(p, tu_on_exit_cb, &r), 0);
    ck_assert_int_eq(tfork_run(p, "life_report", tu_on_run, &r), 0);
    RUN_UNTIL(loop, r.run_called && r.exit_called, 30);
    ck_assert_msg(r.run_err == 0, "run: %d %s", r.run_err, r.msg);
    ck_assert_int_ge(r.run_fd, 0);
    ck_assert_int_eq(status_code(r.status), 0);
    tu_read_to_eof(r.run_fd, text, sizeof text, 30);
    close(r.run_fd);
    parse_report(text, &rep);
    ck_assert_msg(rep.end, "incomplete report:\n%s", text);
    ck_assert_int_eq(rep.pid, r.run_pid);

    /* exactly 0, 1, 2, the socket and the fd sent */
    ck_assert_int_ge(rep.sock, 0);
    ck_assert_int_ge(rep.argfd, 0);
    {
        char list[512] = "";

        for (int i = 0; i < rep.nfds; i++)
            snprintf(list + strlen(list), sizeof list - strlen(list),
                     " %d=%s", rep.fds[i], rep.targets[i]);
        ck_assert_msg(rep.nfds == 5 && target_of(&rep, 0) &&
                      target_of(&rep, 1) && target_of(&rep, 2) &&
                      target_of(&rep, rep.sock) &&
                      target_of(&rep, rep.argfd) && rep.sock > 2 &&
                      rep.argfd > 2 && rep.sock != rep.argfd,
                      "mode %d: child fds:%s (socket %d, sent %d)", _i,
                      list, rep.sock, rep.argfd);
    }
    t = target_of(&rep, rep.sock);
    ck_assert_msg(strncmp(t, "socket:[", 8) == 0, "socket is %s", t);
    snprintf(want, sizeof want, "pipe:[%lu]", (unsigned long)sst.st_ino);
    ck_assert_str_eq(target_of(&rep, rep.argfd), want);

    /* default dispositions, empty mask */
    check_clean_signals(&rep, "test_hygiene");

    /* undo the mess */
    close(sp[0]);
    close(leak_null);
    close(leak_pipe[0]);
    close(leak_pipe[1]);
    sigaction(SIGUSR1, &old1, NULL);
    sigaction(SIGUSR2, &old2, NULL);
    sigprocmask(SIG_SETMASK, &oldmask, NULL);

    if (tpl) {
        ck_assert_int_eq(rep.ppid, tfork_pid(tpl));
        tfork_free(tpl);
        RUN_UNTIL(loop, tr.exit_called, 30);
        ck_assert_int_eq(status_code(tr.status), 0);
        tu_finish(loop, fds0);
    } else {
        /* the default template belongs to the library and lives on with
         * its socket: that and nothing else remains */
        pid_t kids[4];
        int n = tu_children_of(getpid(), kids, 4);

        ck_assert_msg(n == 1 && kids[0] == rep.ppid,
                      "%d children, first %d, default template %d", n,
                      n ? (int)kids[0] : 0, (int)rep.ppid);
        ck_assert_int_eq(tu_fd_count(), fds_loop + 1);
    }
}
END_TEST

/* User code in the template (eval) that sets a handler, ignores a signal
 * and blocks another: the template's children still start with default
 * dispositions and an empty mask.  Mode 0: tfork_new_exec, 1:
 * tfork_template. */
START_TEST(test_hygiene_after_eval)
{
    int fds0 = tu_fd_count();
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct tu_res r, tr;
    struct report rep;
    tfork *tpl, *p;
    char text[8192];

    ck_assert_ptr_nonnull(loop);
    tu_res_init(&r);
    tu_res_init(&tr);
    tpl = _i == 0 ? tfork_new_exec(loop) : tfork_template(loop);
    ck_assert_ptr_nonnull(tpl);
    ck_assert_int_eq(tfork_on_exit(tpl, tu_on_exit_cb, &tr), 0);
    ck_assert_int_eq(tfork_require(tpl, module()), 0);
    ck_assert_int_eq(tfork_eval(tpl, "life_set_signals", 0, NULL), 0);
    p = tfork_fork(tpl);
    ck_assert_ptr_nonnull(p);
    ck_assert_int_eq(tfork_on_exit(p, tu_on_exit_cb, &r), 0);
    ck_assert_int_eq(tfork_run(p, "life_report", tu_on_run, &r), 0);
    RUN_UNTIL(loop, r.run_called && r.exit_called, 30);
    ck_assert_msg(r.run_err == 0, "run: %d %s", r.run_err, r.msg);
    ck_assert_int_eq(status_code(r.status), 0);
    tu_read_to_eof(r.run_fd, text, sizeof text, 30);
    close(r.run_fd);
    parse_report(text, &rep);
    ck_assert_msg(rep.end, "incomplete report:\n%s", text);
    check_clean_signals(&rep, "test_hygiene_after_eval");
    tfork_free(tpl);
    RUN_UNTIL(loop, tr.exit_called, 30);
    ck_assert_int_eq(status_code(tr.status), 0);
    tu_finish(loop, fds0);
}
END_TEST

/* ---------------------------------------------------------------- spawns */

#define SPAWNS 1000
#define IN_FLIGHT 4

struct spawns {
    int started, done, failed;
    char why[512];
};

static void spawn_run_cb(tfork *p, int fd, int err, void *data)
{
    struct spawns *s = data;

    if (fd >= 0)
        close(fd);
    if (err && !s->failed++)
        snprintf(s->why, sizeof s->why, "run/exec: %d %s", err,
                 tfork_errmsg(p));
}

static void spawn_exit_cb(pid_t pid, int status, void *data)
{
    struct spawns *s = data;

    s->done++;
    if (status_code(status) != 0 && !s->failed++)
        snprintf(s->why, sizeof s->why, "process %d: status 0x%x",
                 (int)pid, status);
}

/* Every tenth spawn execs /bin/true, the others run life_exit0. */
static void spawn_one(tfork *tpl, struct spawns *s)
{
    tfork *p = tfork_fork(tpl);
    char *const argv[] = { (char *)"true", NULL };

    ck_assert_msg(p != NULL, "no process: %s", strerror(errno));
    ck_assert_int_eq(tfork_on_exit(p, spawn_exit_cb, s), 0);
    if (s->started % 10 == 9)
        ck_assert_int_eq(tfork_exec(p, "/bin/true", argv, NULL,
                                    spawn_run_cb, s), 0);
    else
        ck_assert_int_eq(tfork_run(p, "life_exit0", spawn_run_cb, s), 0);
    s->started++;
}

START_TEST(test_spawn_many)
{
    int fds0 = tu_fd_count(), fds_base, tpl_fds;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct spawns s;
    struct tu_res tr;
    tfork *tpl;
    pid_t tp, kids[8];
    double dl;

    memset(&s, 0, sizeof s);
    tu_res_init(&tr);
    tpl = tfork_new_exec(loop);
    ck_assert_msg(tpl != NULL, "no template: %s", strerror(errno));
    tp = tfork_pid(tpl);
    ck_assert_int_eq(tfork_on_exit(tpl, tu_on_exit_cb, &tr), 0);
    ck_assert_int_eq(tfork_require(tpl, module()), 0);

    /* one round first: the template is up, its fds are open */
    spawn_one(tpl, &s);
    RUN_UNTIL(loop, s.done == 1, 30);
    ck_assert_msg(!s.failed, "%s", s.why);
    fds_base = tu_fd_count();
    tpl_fds = tu_fd_count_of(tp);
    ck_assert_int_eq(tu_children_of(tp, kids, 8), 0);

    dl = tu_now() + 600;
    {
        ev_timer tick;

        ev_timer_init(&tick, tu_tick_cb, 0.05, 0.05);
        ev_timer_start(loop, &tick);
        while (s.done < SPAWNS + 1) {
            while (s.started < SPAWNS + 1 && s.started - s.done < IN_FLIGHT)
                spawn_one(tpl, &s);
            ck_assert_msg(tu_now() < dl, "only %d of %d spawns done", s.done,
                          SPAWNS);
            ev_run(loop, EVRUN_ONCE);
        }
        ev_timer_stop(loop, &tick);
    }
    ck_assert_msg(!s.failed, "%d failures, first: %s", s.failed, s.why);
    ck_assert_int_eq(s.done, SPAWNS + 1);

    /* where they started: the client's fds, the template's fds and
     * children (zombies included: none), the client's children */
    ck_assert_int_eq(tu_fd_count(), fds_base);
    ck_assert_int_eq(tu_fd_count_of(tp), tpl_fds);
    ck_assert_int_eq(tu_children_of(tp, kids, 8), 0);
    ck_assert_int_eq(tu_children_of(getpid(), kids, 8), 1);
    ck_assert_int_eq(kids[0], tp);
    ck_assert_int_ne(tu_proc_state(tp, NULL, NULL), 'Z');

    tfork_free(tpl);
    RUN_UNTIL(loop, tr.exit_called, 30);
    ck_assert_int_eq(status_code(tr.status), 0);
    tu_finish(loop, fds0);
}
END_TEST

/* ---------------------------------------------------------------- early */

/* tests/prog_life_early: tfork_early first thing, then tfork_new and
 * tfork_new_exec + tfork_fork running the program's own function. */
START_TEST(test_early_program)
{
    static const char want[] =
        "again -EALREADY\n"
        "new: marker 0 args one status 7 parent-is-early 1\n"
        "exec: marker 0 args tpl,two status 7 parent-is-template 1 "
        "template-status 0\n"
        "early-pid ";
    int fds0 = tu_fd_count();
    int pp[2], st;
    pid_t prog, early;
    char out[4096];
    double t0;

    ck_assert_int_eq(pipe2(pp, O_CLOEXEC), 0);
    prog = spawn_prog("prog_life_early", NULL, pp[1]);
    close(pp[1]);
    /* EOF only once the early copy (it shares stdout) is gone as well */
    tu_read_to_eof(pp[0], out, sizeof out, 60);
    close(pp[0]);
    ck_assert_int_eq(waitpid(prog, &st, 0), prog);
    ck_assert_msg(strncmp(out, want, sizeof want - 1) == 0,
                  "output:\n%s", out);
    ck_assert_msg(status_code(st) == 0, "exit status 0x%x, output:\n%s", st,
                  out);
    early = (pid_t)atoi(out + sizeof want - 1);
    ck_assert_int_gt(early, 0);
    ck_assert_int_ne(early, prog);
    /* its stdout is closed: it exited (or is on its way out) */
    t0 = tu_now();
    while (!dead(early) && tu_now() < t0 + 10)
        usleep(10000);
    ck_assert_msg(dead(early), "the early copy %d outlived its program",
                  (int)early);
    ck_assert_int_eq(tu_fd_count(), fds0);
    tu_no_children();
}
END_TEST

static int life_static_value;

static int life_static_report(int fd, int argc, const tfork_arg *argv)
{
    dprintf(fd, "static %d ppid %d argc %d", life_static_value,
            (int)getppid(), argc);
    for (int i = 0; i < argc; i++)
        dprintf(fd, " %s", argv[i].fd >= 0 ? "<fd>" : argv[i].buf);
    return 5;
}
TFORK_EXPORT(life_static_report);

/* tfork_template: the copy has the program's code and data as they were
 * when it was made, and runs a TFORK_EXPORT'ed static function. */
START_TEST(test_template_own_function)
{
    int fds0 = tu_fd_count();
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct tu_res r, tr;
    tfork *tpl, *p;
    pid_t tp;
    char text[512], want[512];

    tu_res_init(&r);
    tu_res_init(&tr);
    life_static_value = 24301;
    tpl = tfork_template(loop);
    life_static_value = -1;
    ck_assert_msg(tpl != NULL, "no template: %s", strerror(errno));
    tp = tfork_pid(tpl);
    ck_assert_int_gt(tp, 0);
    ck_assert(is_child(tp));
    ck_assert_int_eq(tfork_on_exit(tpl, tu_on_exit_cb, &tr), 0);
    ck_assert_int_eq(tfork_send_arg(tpl, "from-tpl", 8), 0);
    p = tfork_fork(tpl);
    ck_assert_msg(p != NULL, "no process: %s", strerror(errno));
    ck_assert_int_eq(tfork_send_arg(p, "own", 3), 0);
    ck_assert_int_eq(tfork_on_exit(p, tu_on_exit_cb, &r), 0);
    ck_assert_int_eq(tfork_run(p, "life_static_report", tu_on_run, &r), 0);
    RUN_UNTIL(loop, r.run_called && r.exit_called, 30);
    ck_assert_msg(r.run_err == 0, "run: %d %s", r.run_err, r.msg);
    tu_read_to_eof(r.run_fd, text, sizeof text, 30);
    close(r.run_fd);
    snprintf(want, sizeof want, "static 24301 ppid %d argc 2 from-tpl own",
             (int)tp);
    ck_assert_str_eq(text, want);
    ck_assert_int_eq(status_code(r.status), 5);
    ck_assert_int_eq(r.exit_pid, r.run_pid);
    tfork_free(tpl);
    RUN_UNTIL(loop, tr.exit_called, 30);
    ck_assert_int_eq(tr.exit_pid, tp);
    ck_assert_int_eq(status_code(tr.status), 0);
    tu_finish(loop, fds0);
}
END_TEST

/* ---------------------------------------------------------------- titles */

/* Mode 0: a tfork-serve template is "tfork-serve: template for <client>";
 * mode 1: a tfork_template copy is "tfork: template".  A run child is
 * "tfork: <function>" while its function runs. */
START_TEST(test_titles)
{
    int fds0 = tu_fd_count();
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct tu_res r, tr;
    tfork *tpl, *p;
    pid_t tp;
    char title[4096], want[128];
    double dl;

    tu_res_init(&r);
    tu_res_init(&tr);
    tpl = _i ? tfork_template(loop) : tfork_new_exec(loop);
    ck_assert_msg(tpl != NULL, "no template: %s", strerror(errno));
    tp = tfork_pid(tpl);
    ck_assert_int_eq(tfork_on_exit(tpl, tu_on_exit_cb, &tr), 0);
    ck_assert_int_eq(tfork_require(tpl, module()), 0);
    p = tfork_fork(tpl);
    ck_assert_msg(p != NULL, "no process: %s", strerror(errno));
    ck_assert_int_eq(tfork_on_exit(p, tu_on_exit_cb, &r), 0);
    ck_assert_int_eq(tfork_run(p, "life_title_wait", tu_on_run, &r), 0);
    RUN_UNTIL(loop, r.run_called, 30);
    ck_assert_msg(r.run_err == 0, "run: %d %s", r.run_err, r.msg);

    /* the child waits for our byte meanwhile */
    dl = tu_now() + 10;
    while (!title_is(r.run_pid, "tfork: life_title_wait", title,
                     sizeof title, 0) && tu_now() < dl)
        usleep(10000);
    ck_assert_msg(title_is(r.run_pid, "tfork: life_title_wait", title,
                           sizeof title, 1), "child's title is '%s'", title);

    if (_i)
        snprintf(want, sizeof want, "tfork: template");
    else
        snprintf(want, sizeof want, "tfork-serve: template for %d",
                 (int)getpid());
    ck_assert_msg(title_is(tp, want, title, sizeof title, 1),
                  "template's title is '%s', not '%s'", title, want);

    ck_assert_int_eq(write(r.run_fd, "x", 1), 1);
    close(r.run_fd);
    RUN_UNTIL(loop, r.exit_called, 30);
    ck_assert_int_eq(status_code(r.status), 0);
    tfork_free(tpl);
    RUN_UNTIL(loop, tr.exit_called, 30);
    tu_finish(loop, fds0);
}
END_TEST

/* ---------------------------------------------------------------- reaping */

static int pidfd_enosys(pid_t pid, unsigned flags)
{
    (void)pid;
    (void)flags;
    errno = ENOSYS;
    return -1;
}

/* tfork_free(template) without an on_exit: once the loop has run, the
 * template is reaped by the library.  Mode 0: a private loop (pidfd),
 * 1: a private loop without pidfd_open (ENOSYS: the fallback), 2: the
 * default loop (ev_child). */
START_TEST(test_reap_after_free)
{
    int fds0 = tu_fd_count();
    struct ev_loop *loop;
    struct tu_res r;
    tfork *tpl, *p;
    pid_t tp;

    if (_i == 1)
        tfork__sys.pidfd_open = pidfd_enosys;
    loop = _i == 2 ? ev_default_loop(0) : ev_loop_new(EVFLAG_AUTO);
    ck_assert_ptr_nonnull(loop);
    tu_res_init(&r);
    tpl = tfork_new_exec(loop);
    ck_assert_msg(tpl != NULL, "no template: %s", strerror(errno));
    tp = tfork_pid(tpl);
    ck_assert(is_child(tp));
    /* one child, so the template is really serving */
    ck_assert_int_eq(tfork_require(tpl, module()), 0);
    p = tfork_fork(tpl);
    ck_assert_msg(p != NULL, "no process: %s", strerror(errno));
    ck_assert_int_eq(tfork_on_exit(p, tu_on_exit_cb, &r), 0);
    ck_assert_int_eq(tfork_run(p, "life_exit0", tu_on_run, &r), 0);
    RUN_UNTIL(loop, r.run_called && r.exit_called, 30);
    ck_assert_int_eq(r.run_err, 0);
    close(r.run_fd);

    tfork_free(tpl);
    RUN_UNTIL(loop, !is_child(tp), 30);
    ck_assert_int_eq(tu_proc_state(tp, NULL, NULL), 0);
    tu_finish(loop, fds0);
    tfork__sys.pidfd_open = tfork__sys_pidfd_open;
}
END_TEST

/* A template killed from outside: its on_exit gets the signal status,
 * a child asked for afterwards fails with -EPIPE, nothing is left.
 * Mode 0: a private loop, 1: the default loop. */
START_TEST(test_template_killed)
{
    int fds0 = tu_fd_count();
    struct ev_loop *loop = _i ? ev_default_loop(0) : ev_loop_new(EVFLAG_AUTO);
    struct tu_res r, tr;
    tfork *tpl, *p;
    pid_t tp;

    ck_assert_ptr_nonnull(loop);
    tu_res_init(&r);
    tu_res_init(&tr);
    tpl = tfork_new_exec(loop);
    ck_assert_msg(tpl != NULL, "tfork_new_exec: %s", strerror(errno));
    tp = tfork_pid(tpl);
    ck_assert_int_eq(tfork_on_exit(tpl, tu_on_exit_cb, &tr), 0);
    ck_assert_int_eq(kill(tp, SIGKILL), 0);
    RUN_UNTIL(loop, tr.exit_called, 30);
    ck_assert_int_eq(tr.exit_pid, tp);
    ck_assert_msg(tr.status != -1 && WIFSIGNALED(tr.status) &&
                  WTERMSIG(tr.status) == SIGKILL, "status 0x%x", tr.status);
    ck_assert(!is_child(tp));

    p = tfork_fork(tpl);
    ck_assert_msg(p != NULL, "no process: %s", strerror(errno));
    ck_assert_int_eq(tfork_run(p, "life_exit0", tu_on_run, &r), 0);
    RUN_UNTIL(loop, r.run_called, 30);
    ck_assert_int_eq(r.run_fd, -1);
    ck_assert_int_eq(r.run_err, -EPIPE);
    ck_assert_msg(strlen(r.msg) > 0, "no message");
    tfork_free(tpl);
    tu_finish(loop, fds0);
    ck_assert_int_eq(tr.exit_called, 1);
}
END_TEST

/* ---------------------------------------------------------------- suite */

static Suite *life_suite(void)
{
    Suite *s = suite_create("life");
    TCase *tc;

    tc = tcase_create("owner death");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_owner_death, 0, 3);
    suite_add_tcase(s, tc);

    tc = tcase_create("hygiene");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_hygiene, 0, 3);
    tcase_add_loop_test(tc, test_hygiene_after_eval, 0, 2);
    suite_add_tcase(s, tc);

    tc = tcase_create("many spawns");
    tcase_set_timeout(tc, 900);
    tcase_add_test(tc, test_spawn_many);
    suite_add_tcase(s, tc);

    tc = tcase_create("program copies");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_early_program);
    tcase_add_test(tc, test_template_own_function);
    suite_add_tcase(s, tc);

    tc = tcase_create("titles");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_titles, 0, 2);
    suite_add_tcase(s, tc);

    tc = tcase_create("reaping");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_reap_after_free, 0, 3);
    tcase_add_loop_test(tc, test_template_killed, 0, 2);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(life_suite());
    int failed;

    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
