/* proctitle.c: process titles that say what a process is ("tfork-serve:
 * template for 123", "tfork: worker"), as ps shows them.  The title is
 * written over the argv area, extended over the environment strings once
 * those are copied to the heap (the setproctitle technique). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "tfork-int.h"

extern char **environ;

static char *area;          /* start of argv[0] */
static size_t area_len;     /* bytes we may overwrite */
static int argc0;
static char **argv0;
static int moved;           /* environ strings copied away */

void tfork__proctitle_init(int argc, char **argv)
{
    if (area || argc < 1 || !argv || !argv[0])
        return;
    argc0 = argc;
    argv0 = argv;
    area = argv[0];
}

/* glibc calls ELF constructors with (argc, argv, envp), in the program
 * and in shared objects, so copies of user programs know their argv. */
__attribute__((constructor)) static void proctitle_ctor(int argc,
                                                       char **argv,
                                                       char **envp)
{
    (void)envp;
    tfork__proctitle_init(argc, argv);
}

static void extend(void)
{
    char *end;
    int i;

    moved = 1;
    end = argv0[0] + strlen(argv0[0]) + 1;
    for (i = 1; i < argc0 && argv0[i] == end; i++)
        end = argv0[i] + strlen(argv0[i]) + 1;
    if (i < argc0) {
        area_len = (size_t)(end - area);
        return;
    }
    /* environment strings that follow argv contiguously join the area
     * once they live on the heap */
    for (i = 0; environ && environ[i] && environ[i] == end; i++) {
        char *copy = strdup(environ[i]);

        if (!copy)
            break;
        end = environ[i] + strlen(environ[i]) + 1;
        environ[i] = copy;
    }
    area_len = (size_t)(end - area);
}

void tfork__proctitle(const char *fmt, ...)
{
    char buf[256];
    va_list ap;
    size_t n;

    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    prctl(PR_SET_NAME, buf, 0, 0, 0);
    if (!area)
        return;
    if (!moved)
        extend();
    if (area_len < 2)
        return;
    n = strlen(buf);
    if (n > area_len - 1)
        n = area_len - 1;
    memcpy(area, buf, n);
    memset(area + n, 0, area_len - n);
}
