/* under_valgrind.h: whether a process runs under valgrind, for the few
 * observations valgrind changes (its own fds, signal handlers and command
 * line); libc only, as test modules use it too.  Without valgrind every
 * function here is a no-op, so the normal run checks exactly as before. */
#ifndef UNDER_VALGRIND_H
#define UNDER_VALGRIND_H

#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <unistd.h>

/* A line of /proc/pid/maps (pid 0: this process) contains s. */
static inline int uv_maps_has(pid_t pid, const char *s)
{
    char path[64], line[4352];
    FILE *f;
    int found = 0;

    if (pid)
        snprintf(path, sizeof path, "/proc/%d/maps", (int)pid);
    else
        snprintf(path, sizeof path, "/proc/self/maps");
    f = fopen(path, "re");
    if (!f)
        return 0;
    while (!found && fgets(line, sizeof line, f))
        found = strstr(line, s) != NULL;
    fclose(f);
    return found;
}

/* pid (0: this process) runs under valgrind: its preload objects
 * (vgpreload_core, vgpreload_<tool>) are mapped.  No valgrind.h needed,
 * and it tells apart an exec'd program valgrind does not trace. */
static inline int uv_running(pid_t pid)
{
    return uv_maps_has(pid, "/vgpreload_");
}

/* pid runs the program at the absolute path exe.  /proc/PID/exe names
 * valgrind's tool for a program run under valgrind; the program's own
 * file is then still mapped (valgrind loads it itself). */
static inline int uv_runs_exe(pid_t pid, const char *exe)
{
    char path[64], got[4096], line[4104];
    ssize_t n;

    snprintf(path, sizeof path, "/proc/%d/exe", (int)pid);
    n = readlink(path, got, sizeof got - 1);
    if (n < 0)
        return 0;
    got[n] = 0;
    if (strcmp(got, exe) == 0)
        return 1;
    snprintf(line, sizeof line, " %s\n", exe);
    return uv_running(pid) && uv_maps_has(pid, line);
}

/* The fds this process may count as its own: all of them (INT_MAX)
 * unless it runs under valgrind, which keeps its log, the client's
 * executable and its pipes open at and above the RLIMIT_NOFILE soft
 * limit it shows its client (readdir of /proc/self/fd still lists
 * them).  Those are valgrind's, not anything tfork left open. */
static inline int uv_fd_end(void)
{
    struct rlimit rl;

    if (!uv_running(0) || getrlimit(RLIMIT_NOFILE, &rl) < 0 ||
        rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > (rlim_t)INT_MAX)
        return INT_MAX;
    return (int)rl.rlim_cur;
}

#endif
