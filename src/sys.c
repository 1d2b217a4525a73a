/* sys.c: the table of system calls that tests replace to inject faults
 * (as sqlite's os_unix.c does); everything else calls through it. */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "tfork-int.h"

pid_t tfork__sys_fork(void)
{
    return fork();
}

int tfork__sys_pidfd_open(pid_t pid, unsigned flags)
{
#if defined(HAVE_PIDFD_OPEN) && defined(SYS_pidfd_open)
    return (int)syscall(SYS_pidfd_open, pid, flags);
#else
    (void)pid;
    (void)flags;
    errno = ENOSYS;
    return -1;
#endif
}

static int sys_dup_cloexec(int fd)
{
    return fcntl(fd, F_DUPFD_CLOEXEC, 3);
}

struct tfork__sys tfork__sys = {
    .fork = tfork__sys_fork,
    .socketpair = socketpair,
    .sendmsg = sendmsg,
    .recvmsg = recvmsg,
    .posix_spawn = posix_spawn,
    .posix_spawnp = posix_spawnp,
    .pidfd_open = tfork__sys_pidfd_open,
    .dup_cloexec = sys_dup_cloexec,
    .dlopen = dlopen,
    .lookup = tfork__lookup,
    .execvpe = execvpe,
};
