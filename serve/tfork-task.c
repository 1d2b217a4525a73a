/* tfork-task.c: a task server from the command line (tfork/task.h).
 * Loads a module into the workers' template and serves it until SIGINT
 * or SIGTERM.  Arguments and exit codes only; the server is libtfork's. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ev.h>

#include "tfork-int.h"

static int usage(int rc)
{
    fprintf(rc ? stderr : stdout,
            "usage: tfork-task [options] --require MODULE "
            "(--interface FUNC | --dispatch PREFIX) ADDRESS\n"
            "Serves the functions of MODULE to tfork_task clients at ADDRESS\n"
            "(unix:PATH, a path with a '/', tcp:HOST:PORT or tcp:PORT) until\n"
            "SIGINT or SIGTERM.\n"
            "  --require MODULE       shared object loaded into the template\n"
            "  --eval FUNC            int FUNC(int, char **) run there once\n"
            "  --eval-arg ARG         an argument for it (repeatable)\n"
            "  --interface FUNC       one function serves every method\n"
            "  --dispatch PREFIX      method M is the function PREFIXM\n"
            "  --setup FUNC           runs once per worker before its first call\n"
            "  --checkout-done FUNC   runs in a worker when a checkout ends\n"
            "  --hung-worker-timeout S  kill a worker after S seconds in one call\n"
            "  --name NAME            for process titles and log lines\n"
            "  --version\n"
            "It prints the address it listens on (with the port chosen for\n"
            "tcp:...:0) on stdout once it serves.  Exit status: 0 after a\n"
            "signal, 1 usage, 2 the server could not start.\n");
    return rc;
}

static void stop_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)w;
    (void)revents;
    ev_break(loop, EVBREAK_ALL);
}

/* Parses the arguments and serves; eargv has room for every
 * --eval-arg.  The exit status. */
static int task_main(int argc, char **argv, const char **eargv)
{
    tfork_task_server_opts o;
    struct ev_loop *loop;
    tfork_task_server *s;
    ev_signal sint, sterm;
    int eargc = 0;

    memset(&o, 0, sizeof o);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;

        if (strcmp(a, "--version") == 0) {
            printf("tfork-task %s\n", tfork_version());
            return 0;
        }
        if (strcmp(a, "--help") == 0)
            return usage(0);
        if (a[0] != '-') {
            if (o.listen)
                return usage(1);
            o.listen = a;
            continue;
        }
        if (!v)
            return usage(1);
        if (strcmp(a, "--require") == 0)
            o.require = v;
        else if (strcmp(a, "--eval") == 0)
            o.eval = v;
        else if (strcmp(a, "--eval-arg") == 0)
            eargv[eargc++] = v;
        else if (strcmp(a, "--interface") == 0)
            o.interface = v;
        else if (strcmp(a, "--dispatch") == 0)
            o.dispatch = v;
        else if (strcmp(a, "--setup") == 0)
            o.setup = v;
        else if (strcmp(a, "--checkout-done") == 0)
            o.checkout_done = v;
        else if (strcmp(a, "--name") == 0)
            o.name = v;
        else if (strcmp(a, "--hung-worker-timeout") == 0) {
            char *end;

            o.hung_worker_timeout = strtod(v, &end);
            if (*end || o.hung_worker_timeout < 0)
                return usage(1);
        } else
            return usage(1);
        i++;
    }
    if (!o.listen || !o.require || !o.interface == !o.dispatch ||
        (eargc && !o.eval))
        return usage(1);
    o.eval_argc = eargc;
    o.eval_argv = eargv;
    loop = ev_default_loop(0);
    s = loop ? tfork_task_server_new(loop, &o) : NULL;
    if (!s) {
        fprintf(stderr, "tfork-task: cannot serve at %s: %s\n", o.listen,
                strerror(errno));
        return 2;
    }
    /* only now: the title is written over argv, where o's strings live
     * (the server has its own copies) */
    tfork__proctitle("tfork-task %s: server", o.name ? o.name : "task");
    printf("%s\n", tfork_task_server_address(s));
    fflush(stdout);
    ev_signal_init(&sint, stop_cb, SIGINT);
    ev_signal_init(&sterm, stop_cb, SIGTERM);
    ev_signal_start(loop, &sint);
    ev_signal_start(loop, &sterm);
    ev_run(loop, 0);
    tfork_task_server_free(s);
    return 0;
}

int main(int argc, char **argv)
{
    /* freed on every way out, usage errors included (leak checkers) */
    const char **eargv = calloc((size_t)argc + 1, sizeof *eargv);
    int rc;

    tfork__proctitle_init(argc, argv);
    if (!eargv)
        return 2;
    rc = task_main(argc, argv, eargv);
    free(eargv);
    return rc;
}
