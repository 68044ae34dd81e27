/* Timing helpers shared by the benchmarks. */
#ifndef MICROVM_BENCH_H
#define MICROVM_BENCH_H

#include <stdlib.h>
#include <time.h>

static inline double now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static inline int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

/* The @p quantile (0..1) of @v (sorted in place). */
static inline double quantile(double *v, int n, double p)
{
	qsort(v, (size_t)n, sizeof(*v), cmp_double);
	return v[(int)(p * (n - 1) + 0.5)];
}

static inline double median(double *v, int n)
{
	return quantile(v, n, 0.5);
}

#endif
