/* mod_core_basic.c: the module tests/check_core.c loads into tfork-serve
 * templates: eval functions that record, fail or stall, and run functions
 * that report what they were given (see core_report.h).  Some are found
 * through TFORK_EXPORT, the others through dlsym. */
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include "tfork.h"
#include "core_report.h"

static char mod_core_rec[CORE_REC_MAX];    /* evals seen by this process */

/* ---- eval functions ---- */

int mod_core_eval_record(int argc, char **argv);
int mod_core_eval_record(int argc, char **argv)
{
    core_record_eval(mod_core_rec, argc, argv);
    return 0;
}
TFORK_EXPORT(mod_core_eval_record);

int mod_core_eval_fail(int argc, char **argv);
int mod_core_eval_fail(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return 3;
}

/* Never returns: the template is stuck before it can answer anything. */
int mod_core_eval_block(int argc, char **argv);
int mod_core_eval_block(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    for (;;)
        pause();
}

/* The process dies in the middle of its preparation, status 5. */
int mod_core_eval_exit5(int argc, char **argv);
int mod_core_eval_exit5(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    _exit(5);
}

/* Sleeps argv[0] milliseconds: a slow template. */
int mod_core_eval_sleep(int argc, char **argv);
int mod_core_eval_sleep(int argc, char **argv)
{
    core_sleep_ms(argc > 0 ? atol(argv[0]) : 100);
    return 0;
}

/* ---- run functions ---- */

/* Found by dlsym (not exported): reports and exits 0. */
int mod_core_report(int fd, int argc, const tfork_arg *argv);
int mod_core_report(int fd, int argc, const tfork_arg *argv)
{
    return core_report(fd, argc, argv, mod_core_rec) < 0 ? 1 : 0;
}

/* Reports, waits until the client closes the socket, exits 7. */
int mod_core_exit7(int fd, int argc, const tfork_arg *argv);
int mod_core_exit7(int fd, int argc, const tfork_arg *argv)
{
    if (core_report(fd, argc, argv, mod_core_rec) < 0)
        return 1;
    core_wait_eof(fd);
    return 7;
}
TFORK_EXPORT(mod_core_exit7);

/* Reports, then waits to be killed. */
int mod_core_block(int fd, int argc, const tfork_arg *argv);
int mod_core_block(int fd, int argc, const tfork_arg *argv)
{
    if (core_report(fd, argc, argv, mod_core_rec) < 0)
        return 1;
    for (;;)
        pause();
}
TFORK_EXPORT(mod_core_block);

/* Answers "echo:<data>" on its first fd arg. */
int mod_core_echo(int fd, int argc, const tfork_arg *argv);
int mod_core_echo(int fd, int argc, const tfork_arg *argv)
{
    (void)fd;
    return core_echo(argc, argv);
}

/* Answers "got:<data>" on its own socket. */
int mod_core_sockecho(int fd, int argc, const tfork_arg *argv);
int mod_core_sockecho(int fd, int argc, const tfork_arg *argv)
{
    (void)argc;
    (void)argv;
    return core_sockecho(fd);
}
