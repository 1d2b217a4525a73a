/* main.c: tfork-serve, the template program that tfork_new_exec starts.
 * Arguments and exit codes only; the loop is serve.c's. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tfork-int.h"

static int usage(void)
{
    fprintf(stderr,
            "usage: tfork-serve [--fd N] | --version\n"
            "Serves tfork commands on the unix stream socket N (default 3).\n"
            "It is started by libtfork (tfork_new_exec), not by hand.\n"
            "Exit status: 0 when the client closed the socket, 1 usage,\n"
            "2 protocol error, 3 internal error.\n");
    return 1;
}

int main(int argc, char **argv)
{
    int fd = 3, type;
    socklen_t len = sizeof type;

    tfork__proctitle_init(argc, argv);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--fd") == 0 && i + 1 < argc) {
            char *end;
            long v = strtol(argv[++i], &end, 10);

            if (*end || v < 0 || v > 1 << 20)
                return usage();
            fd = (int)v;
        } else if (strcmp(argv[i], "--version") == 0) {
            printf("tfork-serve %s (protocol %u)\n", TFORK_VERSION_STRING,
                   TFORK_PROTO_VERSION);
            return 0;
        } else {
            return usage();
        }
    }
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0 ||
        type != SOCK_STREAM) {
        fprintf(stderr, "tfork-serve: fd %d is not a stream socket: %s\n",
                fd, errno ? strerror(errno) : "wrong type");
        return 1;
    }
    tfork__proctitle("tfork-serve: template for %d", (int)getppid());
    tfork__serve(fd, 1);
}
