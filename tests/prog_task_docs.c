/* prog_task_docs.c: tfork_task_fork_server with the address taken
 * straight from argv[1], as a user's program would.  The server's
 * process title is written over the argv area, so this shows whether the
 * server copied the address before that.  Prints "reply: <method> <arg>"
 * and exits 0 when a call came back; 1 (and why on stderr) otherwise. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <ev.h>

#include "tfork.h"
#include "tfork/task.h"

static int docs_prog_echo(tfork_task_req *req, const char *method, int n,
                          const struct iovec *args)
{
    (void)method;
    return tfork_task_reply(req, n, args);
}
TFORK_EXPORT(docs_prog_echo);

static int got;

static void on_reply(tfork_task_checkout *co, int err, const char *msg,
                     int n, const struct iovec *res, void *data)
{
    (void)co;
    (void)data;
    if (err < 0 || n != 1)
        fprintf(stderr, "prog_task_docs: call failed: %s\n", msg);
    else
        printf("reply: %s\n", (const char *)res[0].iov_base);
    got = err == 0;
}

int main(int argc, char **argv)
{
    tfork_task_server_opts so;
    tfork_task_client_opts co;
    tfork_task_client *c;
    tfork_task_checkout *k;
    struct ev_loop *loop;
    struct iovec a = { (void *)"hi", 2 };
    pid_t server;
    int st;

    if (argc != 2)
        return 2;
    memset(&so, 0, sizeof so);
    so.listen = argv[1];
    so.interface = "docs_prog_echo";
    server = tfork_task_fork_server(&so);
    if (server < 0) {
        fprintf(stderr, "prog_task_docs: tfork_task_fork_server %s: %s\n",
                argv[1], tfork_strerror(server));
        return 1;
    }
    loop = ev_loop_new(EVFLAG_AUTO);
    memset(&co, 0, sizeof co);
    co.connect = argv[1];
    co.timeout = 20;
    c = loop ? tfork_task_client_new(loop, &co) : NULL;
    k = c ? tfork_task_checkout_new(c, 0) : NULL;
    if (k && tfork_task_call(k, "m", 1, &a, on_reply, NULL) == 0) {
        tfork_task_release(k);
        ev_run(loop, 0);
    }
    tfork_task_client_free(c);
    if (loop)
        ev_loop_destroy(loop);
    kill(server, SIGTERM);
    while (waitpid(server, &st, 0) < 0 && errno == EINTR)
        ;
    return got ? 0 : 1;
}
