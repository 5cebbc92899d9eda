/*
 * train_impl.h - the vector kernels of training (train.c), shared with the
 * context mapping (train_ctx.c).  Not part of the public API.  Each has a
 * scalar and an AVX2 form with the same bits (see train.c).  Softmax rows
 * are sa_softmax_f32 (kernels_impl.h), shared with the inference engine.
 */
#ifndef TRAIN_IMPL_H
#define TRAIN_IMPL_H

/* a . b over n floats, summed in double. */
double sa_train_dot(const float *a, const float *b, int n);

#endif
