/* pool_map.c: Coro::ProcessPool's conveniences over tfork_pool_call: an
 * ordered map (one callback with every result in input order) and a
 * stream (a callback per result as it finishes, then an end). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tfork-int.h"

struct batch {
    int n;                      /* inputs */
    int left;                   /* results still to come */
    tfork_pool_map_cb *map;     /* map: all at the end */
    tfork_pool_each_cb *each;   /* stream: one by one */
    void (*end)(void *data);
    void *data;
    int refused;                /* inputs from here on were refused */
    int refused_err;            /* with this code */
    tfork__timer *t;            /* n == 0: the callback from the loop */
    tfork_pool_result *res;     /* map: results kept until the end */
    struct item {
        struct batch *b;
        int index;
    } *items;
};

/* A message we could not copy (out of memory): never freed. */
static const char nomsg[] = "";

static const char *msg_copy(const char *m)
{
    char *c = strdup(m ? m : "");

    return c ? c : nomsg;
}

static void batch_free(struct batch *b)
{
    if (b->res) {
        for (int i = 0; i < b->n; i++) {
            free((void *)b->res[i].res);
            if (b->res[i].err && b->res[i].msg != nomsg)
                free((void *)b->res[i].msg);
        }
        free(b->res);
    }
    free(b->items);
    tfork__timer_free(b->t);
    free(b);
}

/* A map result outlives the callback: parts and message are copied into
 * one block (iovecs, then each part with its NUL). */
static void keep(tfork_pool_result *out, int err, const char *msg, int n,
                 const struct iovec *res)
{
    size_t total = (size_t)n * sizeof(struct iovec);
    struct iovec *v;
    char *p;

    out->err = err;
    out->msg = "";
    out->n = 0;
    out->res = NULL;
    if (err) {
        out->msg = msg_copy(msg);
        return;
    }
    for (int i = 0; i < n; i++)
        total += res[i].iov_len + 1;
    v = malloc(total ? total : 1);
    if (!v) {
        out->err = -ENOMEM;
        out->msg = msg_copy("out of memory keeping a map result");
        return;
    }
    p = (char *)(v + n);
    for (int i = 0; i < n; i++) {
        v[i].iov_base = p;
        v[i].iov_len = res[i].iov_len;
        memcpy(p, res[i].iov_base, res[i].iov_len);
        p[res[i].iov_len] = '\0';
        p += res[i].iov_len + 1;
    }
    out->n = n;
    out->res = v;
}

static void finish(struct batch *b);

static void one_done(int err, const char *msg, int n,
                     const struct iovec *res, void *data)
{
    struct item *it = data;
    struct batch *b = it->b;

    if (b->map) {
        keep(&b->res[it->index], err, msg, n, res);
    } else {
        tfork_pool_result r = { err, msg, n, res };

        b->each(it->index, &r, b->data);
    }
    if (--b->left)
        return;
    finish(b);
}

/* Every result is in: the map's callback, or the stream's refused
 * inputs (if any) and its end. */
static void finish(struct batch *b)
{
    if (b->map) {
        b->map(b->n, b->res, b->data);
    } else {
        for (int k = b->refused; k < b->n; k++) {
            tfork_pool_result r = { b->refused_err,
                                    "the pool refused this call", 0, NULL };

            b->each(k, &r, b->data);
        }
        if (b->end)
            b->end(b->data);
    }
    batch_free(b);
}

static void zero_cb(void *arg)
{
    finish(arg);
}

static int batch_run(tfork_pool *pool, int n, const struct iovec *inputs,
                     struct batch *b)
{
    int e = 0, i;

    if (n < 0 || (n > 0 && !inputs)) {
        batch_free(b);
        return -EINVAL;
    }
    for (i = 0; i < n; i++)
        if (!inputs[i].iov_base && inputs[i].iov_len) {
            batch_free(b);
            return -EINVAL;
        }
    if (!pool) {
        batch_free(b);
        return -EINVAL;
    }
    /* with queue_max, all n must fit, or none is called */
    if (n > tfork__pool_room(pool)) {
        batch_free(b);
        return -EAGAIN;
    }
    b->n = n;
    b->left = n;
    b->refused = n;
    b->items = malloc((n ? (size_t)n : 1) * sizeof *b->items);
    if (!b->items || (b->map && !(b->res = calloc(n ? (size_t)n : 1,
                                                   sizeof *b->res)))) {
        batch_free(b);
        return -ENOMEM;
    }
    if (n == 0) {
        /* nothing to wait for: the callback still comes from the loop */
        b->t = tfork__timer_new(tfork__pool_loop(pool), zero_cb, b);
        if (!b->t) {
            batch_free(b);
            return -ENOMEM;
        }
        tfork__timer_start(b->t, 0, 1);
        return 0;
    }
    for (i = 0; i < n; i++) {
        b->items[i].b = b;
        b->items[i].index = i;
        e = tfork_pool_call(pool, 1, &inputs[i], one_done, &b->items[i]);
        if (e < 0)
            break;
    }
    if (i == n)
        return 0;
    if (i == 0) {
        batch_free(b);
        return e;
    }
    /* some went out: the rest fail with e when the batch ends (their
     * callbacks must not run inside this call) */
    b->left -= n - i;
    b->refused = i;
    b->refused_err = e;
    if (b->map)
        for (int k = i; k < n; k++) {
            b->res[k].err = e;
            b->res[k].msg = msg_copy("the pool refused this call");
        }
    return 0;
}

int tfork_pool_map(tfork_pool *pool, int n, const struct iovec *inputs,
                   tfork_pool_map_cb *cb, void *data)
{
    struct batch *b;

    if (!cb)
        return -EINVAL;
    b = calloc(1, sizeof *b);
    if (!b)
        return -ENOMEM;
    b->map = cb;
    b->data = data;
    return batch_run(pool, n, inputs, b);
}

int tfork_pool_stream(tfork_pool *pool, int n, const struct iovec *inputs,
                      tfork_pool_each_cb *each, void (*end)(void *data),
                      void *data)
{
    struct batch *b;

    if (!each)
        return -EINVAL;
    b = calloc(1, sizeof *b);
    if (!b)
        return -ENOMEM;
    b->each = each;
    b->end = end;
    b->data = data;
    return batch_run(pool, n, inputs, b);
}
