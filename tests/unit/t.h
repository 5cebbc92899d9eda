/* t.h - minimal test harness for the C unit tests: each CHECK counts; the
 * program exits 1 if any failed and prints what failed to stderr. */
#ifndef T_H
#define T_H
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static int t_failed, t_checked;

#define CHECK(cond) do { t_checked++; if (!(cond)) { t_failed++; \
	fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); } } while (0)
#define CHECK_OK(expr) do { int t_rc_ = (expr); t_checked++; if (t_rc_ != 0) { t_failed++; \
	fprintf(stderr, "%s:%d: %s returned %d: %s\n", __FILE__, __LINE__, #expr, t_rc_, sa_error()); } } while (0)
#define CHECK_NEAR(a, b, tol) do { double t_a_ = (a), t_b_ = (b); t_checked++; \
	if (!(fabs(t_a_ - t_b_) <= (tol)) ) { t_failed++; \
	fprintf(stderr, "%s:%d: %s = %.9g, %s = %.9g, differ by more than %g\n", \
	    __FILE__, __LINE__, #a, t_a_, #b, t_b_, (double)(tol)); } } while (0)

static int t_done(void)
{
	fprintf(stderr, "%d checks, %d failed\n", t_checked, t_failed);
	return t_failed ? 1 : (t_checked ? 0 : 1);
}
#endif
