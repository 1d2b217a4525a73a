/* tfork.h: spawn pre-initialised processes cheaply from a small template.
 * The one public header of libtfork; see tfork(3) and ../README. */
#ifndef TFORK_H
#define TFORK_H

#include <stddef.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TFORK_VERSION_MAJOR 0
#define TFORK_VERSION_MINOR 1
#define TFORK_VERSION_PATCH 0
#define TFORK_VERSION_STRING "0.1.0"

#if defined(__GNUC__) || defined(__clang__)
#define TFORK_EXTERN __attribute__((visibility("default")))
#else
#define TFORK_EXTERN
#endif

struct ev_loop;

typedef struct tfork tfork;             /* a process being prepared */

/* "0.1.0": the version of the library actually linked. */
TFORK_EXTERN const char *tfork_version(void);

/* A short text for an error code returned by any tfork_* call
 * (tfork_strerror(-ENOENT); a plain errno value works too, 0 is
 * "success"); never NULL, static storage. */
TFORK_EXTERN const char *tfork_strerror(int err);

/* ---- constructors ----
 * Each returns a handle owned by the caller (release with tfork_free, or
 * hand it over with tfork_run/tfork_exec), or NULL with errno set
 * (EINVAL for bad arguments).  None blocks: commands are queued and sent
 * from the loop. */

/* A child of the default template.  The default template is made on first
 * use (the early copy if tfork_early() was called, else a tfork_new_exec
 * template) and is bound to the loop of that first use: a later call with
 * another loop fails with EXDEV. */
TFORK_EXTERN tfork *tfork_new(struct ev_loop *loop);

/* A fresh, empty template: tfork-serve started with posix_spawn (found in
 * the configured libexecdir, or $TFORK_SERVE), or, after tfork_early(), a
 * fork of the early copy (bound to the loop of its first use, as the
 * default template is: EXDEV for another loop).  Its pid is known at once
 * in the first case. */
TFORK_EXTERN tfork *tfork_new_exec(struct ev_loop *loop);

/* A child of tpl (a template or any process not yet run): it inherits
 * everything tpl loaded, evaluated and was sent so far.  tpl stays usable
 * and still belongs to the caller. */
TFORK_EXTERN tfork *tfork_fork(tfork *tpl);

/* Forks the calling program now and makes the copy a template: the copy
 * keeps all code and data of the caller but closes every descriptor except
 * 0/1/2, resets signal dispositions and the mask, and serves commands.
 * Safe from a multi-threaded caller (only this thread lives on in the
 * copy); cost grows with the caller's size, so call it early. */
TFORK_EXTERN tfork *tfork_template(struct ev_loop *loop);

/* First thing in main(): forks a pristine copy of the program, which waits
 * for commands.  tfork_new_exec then forks that copy instead of exec'ing
 * tfork-serve, and tfork_new forks children straight from it.  Returns 0,
 * or -errno (-EALREADY when called twice).  Not thread-safe: call it
 * before any thread exists. */
TFORK_EXTERN int tfork_early(void);

/* ---- preparation ----
 * Each queues one command for p's process and returns 0, or -errno:
 * -EINVAL for bad arguments or a handle already run, -E2BIG beyond the
 * caps below.  Strings and buffers are copied: the caller's memory is free
 * to reuse when the call returns.  Failures of the command itself (a module
 * that does not load, ...) reach the run/exec callback. */

#define TFORK_ARG_MAX (64u << 20)       /* bytes in one tfork_send_arg */

/* dlopen(module, RTLD_NOW|RTLD_GLOBAL) in p's process.  On failure the run
 * callback gets -ELIBACC with the module path and the dlerror text. */
TFORK_EXTERN int tfork_require(tfork *p, const char *module);

/* Calls int func(int argc, char **argv) in p's process (found through
 * TFORK_EXPORT, then dlsym).  Missing: -ENOENT; nonzero: -ECANCELED. */
TFORK_EXTERN int tfork_eval(tfork *p, const char *func, int argc,
                            const char *const argv[]);

/* An octet string for the run function's argv (binary, may be empty). */
TFORK_EXTERN int tfork_send_arg(tfork *p, const void *buf, size_t len);

/* A descriptor for the run function's argv: fd is dup'ed, the caller keeps
 * its own and may close it at once. */
TFORK_EXTERN int tfork_send_fd(tfork *p, int fd);

/* ---- hand-over ----
 * cb runs exactly once, from the loop and never inside the call that
 * queued it: with err == 0 and fd the client's end of p's socket
 * (non-blocking, close-on-exec, now the caller's to close) once the child
 * found func and is about to call it; or with fd == -1, err < 0 and
 * tfork_errmsg(p) saying why.  p is freed when cb returns.  If the call
 * itself fails (returns < 0), cb never runs and p still belongs to the
 * caller. */
typedef void tfork_run_cb(tfork *p, int fd, int err, void *data);

/* In p's process, calls  int func(int fd, int argc, const tfork_arg *argv)
 * with every arg and fd sent (the template's first, then p's own, in the
 * order sent); func's return value becomes the exit status.  A process
 * whose run failed (func not found, an earlier require or eval failed)
 * exits with status 0 once the callback has its error. */
TFORK_EXTERN int tfork_run(tfork *p, const char *func, tfork_run_cb *cb,
                           void *data);

/* In p's process, execve()s path (looked up in the template's PATH when it
 * has no '/') with argv and envp (NULL: the template's environment).  The
 * fds sent become the program's 0, 1, 2, ... in order.  cb gets fd == -1
 * and err == 0 once execve succeeded, or the execve errno (-ENOENT ...). */
TFORK_EXTERN int tfork_exec(tfork *p, const char *path, char *const argv[],
                            char *const envp[], tfork_run_cb *cb, void *data);

/* ---- exit status ----
 * cb fires exactly once, from the loop, with the waitpid status of p's
 * process, also after p was freed or run.  status is -1 only when the
 * status can no longer be learned (the process that reaps it was killed).
 * Set it before tfork_run/tfork_exec/tfork_free; a pending on_exit keeps
 * ev_run alive.  Returns 0, or -EINVAL (NULL cb, p already run), -EBUSY
 * (already set), -ENOMEM. */
typedef void tfork_exit_cb(pid_t pid, int status, void *data);
TFORK_EXTERN int tfork_on_exit(tfork *p, tfork_exit_cb *cb, void *data);

/* p's pid: known when tfork_new_exec (without an early copy) and
 * tfork_template return; otherwise 0 until the template has answered, and
 * valid at the latest inside the run callback. */
TFORK_EXTERN pid_t tfork_pid(const tfork *p);

/* Why p failed, for a human (names the function, module or program and the
 * cause); "" while nothing failed.  Valid until p is freed. */
TFORK_EXTERN const char *tfork_errmsg(const tfork *p);

/* Releases p.  An unrun child exits.  A template takes no more commands
 * and exits once the last of its children with a pending on_exit has been
 * reported and no handle forked from it (tfork_fork) is left (at once if
 * none); running children are not signalled.
 * Commands already queued are still delivered.  A no-op on NULL and on a
 * handle whose run/exec was accepted (the library frees those). */
TFORK_EXTERN void tfork_free(tfork *p);

/* ---- child side ---- */
typedef struct tfork_arg {
    const char *buf;    /* octet string, NUL-terminated for convenience */
    size_t len;         /* its length, excluding the NUL */
    int fd;             /* >= 0: a descriptor sent with send_fd (buf NULL) */
} tfork_arg;

/* A run function:  int func(int fd, int argc, const tfork_arg *argv);
 * fd is the child's end of the socket (blocking, close-on-exec); the fds in
 * argv are close-on-exec.  When func returns, stdio is flushed and the
 * child _exits with the return value. */
typedef int tfork_run_func(int fd, int argc, const tfork_arg *argv);
typedef int tfork_eval_func(int argc, char **argv);

/* Registry behind TFORK_EXPORT; not called directly. */
struct tfork_export {
    const char *name;                   /* the function's name */
    void (*func)(void);                 /* the function */
    struct tfork_export *next;          /* registry link */
};
TFORK_EXTERN void tfork_export_register(struct tfork_export *e);

/* At file scope after func's definition:  TFORK_EXPORT(my_worker);
 * makes func findable by name (run, eval) without -rdynamic, from the
 * program itself and from modules loaded with tfork_require. */
#define TFORK_EXPORT(func)                                                  \
    static struct tfork_export tfork_export_##func = {                      \
        #func, (void (*)(void))(func), NULL };                      \
    __attribute__((constructor)) static void tfork_export_ctor_##func(void) \
    { tfork_export_register(&tfork_export_##func); }                        \
    struct tfork_export

#ifdef __cplusplus
}
#endif
#endif
