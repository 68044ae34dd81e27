/* Small helpers shared by the tool's parts. */
#include <stdio.h>
#include <time.h>

#include "sandbox.h"

double sbx_now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

int sbx_fail(const char *what, const char *detail)
{
	fprintf(stderr, "microvm-sandbox: %s: %s\n", what, detail);
	return SBX_EXIT_FAILED;
}
