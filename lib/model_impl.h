/*
 * model_impl.h - the parts of a loaded model that only model.c and
 * forward.c see.  sa_model_load allocates an sa_model_full and hands out
 * its first member, so the public struct stays as sa.h has it.
 */
#ifndef MODEL_IMPL_H
#define MODEL_IMPL_H

#include "sa.h"

typedef struct sa_model_impl {
	/* The mapped matrices, by layer * SA_NMAT + mat.  Their types also say
	 * how a matrix's input is rounded, even after a merge replaced the
	 * matrix by an F32 copy: merged and side paths then see the same input. */
	sa_matrix *base;
	float **owned;          /* merged F32 copies, or NULL */
	float *vecs;            /* F32 copies of norm/bias vectors stored in another type */
	float *rope_freqs;      /* [rope_dim/2] frequency divisors (rope_freqs.weight), or NULL */
	float rope_freq_scale;  /* 1 / rope.scaling.factor for linear scaling, else 1 */
	float kq_scale;         /* attention.scale, 0 for 1/sqrt(d_head) */
} sa_model_impl;

typedef struct sa_model_full {
	sa_model pub;           /* first: a model's address is its full struct's */
	sa_model_impl impl;
} sa_model_full;

static inline sa_model_impl *sa_model_impl_of(const sa_model *m)
{
	return &((sa_model_full *)m)->impl;
}

#endif
