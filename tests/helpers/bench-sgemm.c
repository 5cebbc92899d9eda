/*
 * bench-sgemm - the machine's sgemm rate, as the yardstick of training
 * speed: GFLOP/s of square products of size N with T threads (libsa's
 * sa_sgemm: single-threaded OpenBLAS on each thread of its pool).
 * usage: bench-sgemm [N [T [REPS]]]
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "sa.h"
#include "kernels_impl.h"

int
main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 1024, t = argc > 2 ? atoi(argv[2]) : 0;
	int reps = argc > 3 ? atoi(argv[3]) : 10;
	float *a, *b, *c;
	struct timespec t0, t1;

	if (n < 16 || reps < 1)
		return 64;
	sa_set_threads(t);
	a = malloc((size_t)n * n * sizeof *a);
	b = malloc((size_t)n * n * sizeof *b);
	c = malloc((size_t)n * n * sizeof *c);
	if (!a || !b || !c)
		return 70;
	for (size_t i = 0; i < (size_t)n * n; i++) {
		a[i] = (float)(i % 7) - 3;
		b[i] = (float)(i % 5) - 2;
	}
	/* one call to warm up, then the timed ones */
	sa_sgemm(CblasTrans, n, n, n, 1, a, n, b, n, 0, c, n);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int r = 0; r < reps; r++)
		sa_sgemm(CblasTrans, n, n, n, 1, a, n, b, n, 0, c, n);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double s = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9;
	printf("%.2f\n", reps * 2.0 * n * n * n / s / 1e9);
	return 0;
}
