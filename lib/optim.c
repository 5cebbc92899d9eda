/*
 * optim.c - the trainer's optimiser: AdamW over one block of parameters
 * with ranges of their own weight decay and learning rate, the learning
 * rate's schedule (linear warmup, cosine decay), and the clipping of the
 * gradient's global norm.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sa.h"
#include "train_impl.h"

int
sa_optim_init(sa_optim *o, float *p, float *g, size_t n)
{
	memset(o, 0, sizeof *o);
	o->p = p;
	o->g = g;
	o->n = n;
	if (!(o->m = sa_calloc(n, sizeof(float))) || !(o->v = sa_calloc(n, sizeof(float))))
		return SA_EINTERNAL;
	return SA_OK;
}

void
sa_optim_free(sa_optim *o)
{
	free(o->m);
	free(o->v);
	free(o->range);
	memset(o, 0, sizeof *o);
}

int
sa_optim_add_range(sa_optim *o, const float *start, size_t n, float wd, float lr_factor)
{
	sa_optim_range *r = realloc(o->range, (o->n_range + 1) * sizeof *r);

	if (!r)
		return sa_fail(SA_EINTERNAL, "out of memory");
	o->range = r;
	r[o->n_range++] = (sa_optim_range){ start - o->p, start - o->p + n, wd, lr_factor };
	return SA_OK;
}

double
sa_optim_clip(sa_optim *o, double clip)
{
	double norm = sa_l2norm(o->g, o->n);

	if (isfinite(norm) && clip > 0 && norm > clip)
		for (size_t i = 0; i < o->n; i++)
			o->g[i] *= (float)(clip / norm);
	return norm;
}

/* Each range with its decay and learning rate, the gaps between them with
 * no decay at the base rate. */
void
sa_optim_step(sa_optim *o, int step, float lr)
{
	size_t at = 0;

	for (int i = 0; i <= o->n_range; i++) {
		size_t lo = i < o->n_range ? o->range[i].lo : o->n;
		if (lo > at)
			sa_adamw(o->p + at, o->g + at, o->m + at, o->v + at, lo - at,
			    step, lr, 0.9f, 0.95f, 1e-8f, 0);
		if (i < o->n_range) {
			size_t hi = o->range[i].hi;
			sa_adamw(o->p + lo, o->g + lo, o->m + lo, o->v + lo, hi - lo,
			    step, lr * o->range[i].lr_factor, 0.9f, 0.95f, 1e-8f, o->range[i].wd);
			at = hi;
		}
	}
}

float
sa_optim_lr(const sa_train_opts *o, long step)
{
	double min_lr = o->min_lr >= 0 ? o->min_lr : o->lr / 10;

	if (step < o->warmup)
		return (float)(o->lr * (step + 1) / o->warmup);
	double p = (double)(step - o->warmup) / fmax(1, o->steps - o->warmup);
	if (p > 1)
		p = 1;
	return (float)(min_lr + 0.5 * (o->lr - min_lr) * (1 + cos(M_PI * p)));
}
