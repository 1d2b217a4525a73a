/* export.c: finding run and eval functions by name: the TFORK_EXPORT
 * registry first (works without -rdynamic), then dlsym(RTLD_DEFAULT). */
#include <dlfcn.h>
#include <string.h>

#include "tfork-int.h"

static struct tfork_export *exports;   /* filled by constructors */

TFORK_EXTERN void tfork_export_register(struct tfork_export *e)
{
    if (!e || !e->name || !e->func)
        return;
    e->next = exports;
    exports = e;
}

void (*tfork__lookup(const char *name))(void)
{
    struct tfork_export *e;
    void *sym;
    void (*f)(void);

    for (e = exports; e; e = e->next)
        if (strcmp(e->name, name) == 0)
            return e->func;
    sym = dlsym(RTLD_DEFAULT, name);
    if (!sym)
        return NULL;
    /* POSIX guarantees a data pointer from dlsym converts to a function */
    memcpy(&f, &sym, sizeof f);
    return f;
}
