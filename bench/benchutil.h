/* benchutil.h: small helpers shared by the benchmark programs (a clock,
 * sorting and quantiles, option parsing).  Header-only, like
 * tests/core_report.h, so each benchmark stays one C file. */
#ifndef TFORK_BENCHUTIL_H
#define TFORK_BENCHUTIL_H

#include <errno.h>
#include <stdlib.h>
#include <time.h>

/* Monotonic clock in seconds. */
static inline double now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* qsort comparator for doubles, ascending. */
static inline int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

/* The q-quantile of v[0..n), sorted, by nearest rank. */
static inline double quantile(const double *v, int n, double q)
{
    int i = (int)(q * n + 0.999999) - 1;

    return v[i < 0 ? 0 : i >= n ? n - 1 : i];
}

/* s as a decimal int in [min, max] into *out: 0, or -1 if it is not. */
static inline int parse_int(const char *s, int min, int max, int *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max)
        return -1;
    *out = (int)v;
    return 0;
}

#endif
