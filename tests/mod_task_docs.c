/* mod_task_docs.c: the module check_task_docs loads into the tfork-task
 * program's workers: one interface function that answers every method
 * with the method's name followed by its arguments. */
#include <stdio.h>
#include <string.h>

#include "tfork/task.h"

int docs_echo(tfork_task_req *req, const char *method, int n,
              const struct iovec *args)
{
    struct iovec res[8];

    if (n > 7)
        return tfork_task_fail(req, "at most 7 arguments");
    res[0].iov_base = (void *)method;
    res[0].iov_len = strlen(method);
    for (int i = 0; i < n; i++)
        res[i + 1] = args[i];
    return tfork_task_reply(req, n + 1, res);
}
