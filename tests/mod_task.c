/* mod_task.c: the module tests/check_task.c has the tfork-task program
 * serve (--require): an eval function, a setup function and two methods
 * in dispatch mode ("mod_task_" + method).  It links neither libtfork
 * nor libev: tfork-serve, which the workers are forked from, exports the
 * worker-side API. */
#include <stdio.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "tfork.h"
#include "tfork/task.h"

static char mod_task_greeting[64] = "hello";   /* set by the eval */
static int mod_task_setups;                     /* setup calls here */

/* --eval mod_task_init --eval-arg WORD: the greeting, in the template. */
int mod_task_init(int argc, char **argv)
{
    if (argc != 1)
        return 1;
    snprintf(mod_task_greeting, sizeof mod_task_greeting, "%s", argv[0]);
    return 0;
}

int mod_task_setup(tfork_task_req *req)
{
    (void)req;
    mod_task_setups++;
    return 0;
}

/* "greeting NAME from PID (setups N)" */
int mod_task_greet(tfork_task_req *req, const char *method, int n,
                   const struct iovec *args)
{
    char line[256];
    struct iovec v;

    (void)method;
    snprintf(line, sizeof line, "%s %s from %d (setups %d)",
             mod_task_greeting, n > 0 ? (const char *)args[0].iov_base :
             "nobody", (int)getpid(), mod_task_setups);
    v.iov_base = line;
    v.iov_len = strlen(line);
    return tfork_task_reply(req, 1, &v);
}

int mod_task_refuse(tfork_task_req *req, const char *method, int n,
                    const struct iovec *args)
{
    (void)method;
    (void)n;
    (void)args;
    return tfork_task_fail(req, "mod_task refuses");
}
