/*
 * train_impl.h - the vector kernels of training (train.c), shared with the
 * context mapping (train_ctx.c).  Not part of the public API.  Each has a
 * scalar and an AVX2 form with the same bits (see train.c).
 */
#ifndef TRAIN_IMPL_H
#define TRAIN_IMPL_H

/* The largest of x [n], n >= 1. */
float sa_train_max(const float *x, int n);
/* y [n] = exp(x - mx) for x <= mx (y may be x); returns the sum of y in double. */
double sa_train_exp_sum(float *y, const float *x, int n, float mx);
/* a . b over n floats, summed in double. */
double sa_train_dot(const float *a, const float *b, int n);

#endif
