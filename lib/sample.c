/*
 * sample.c - choosing the next token from logits.
 *
 * The chain and its meaning follow llama.cpp's default sampler: top-k, then
 * top-p and min-p on the softmax of the raw logits, then the temperature,
 * then one draw.  The draw uses SplitMix64, whose whole state fits the
 * sampler's one 64-bit word and whose output is defined bit for bit, so a
 * seed gives the same text on every machine.
 */
#include <math.h>
#include <stdlib.h>

#include "sa.h"

typedef struct cand {
	float logit;
	int id;
} cand;

/* Higher logit first; equal logits by lower id, so the order is total and
 * the result does not depend on the sort algorithm. */
static int
cand_before(const cand *a, const cand *b)
{
	return a->logit > b->logit || (a->logit == b->logit && a->id < b->id);
}

static int
cand_cmp(const void *pa, const void *pb)
{
	const cand *a = pa, *b = pb;

	return cand_before(a, b) ? -1 : cand_before(b, a) ? 1 : 0;
}

static void
sift_down(cand *h, int n, int i)
{
	/* A heap whose root is the worst candidate kept so far. */
	for (;;) {
		int l = 2 * i + 1, r = l + 1, w = i;
		cand t;
		if (l < n && cand_before(&h[w], &h[l]))
			w = l;
		if (r < n && cand_before(&h[w], &h[r]))
			w = r;
		if (w == i)
			return;
		t = h[i];
		h[i] = h[w];
		h[w] = t;
		i = w;
	}
}

/* Rearrange c[0..n) so that c[0..m) are the best m, sorted: O(n log m). */
static void
select_top(cand *c, int n, int m)
{
	if (m < n) {
		for (int i = m / 2 - 1; i >= 0; i--)
			sift_down(c, m, i);
		for (int i = m; i < n; i++) {
			if (cand_before(&c[i], &c[0])) {
				cand t = c[0];
				c[0] = c[i];
				c[i] = t;
				sift_down(c, m, 0);
			}
		}
	}
	qsort(c, (size_t)m, sizeof *c, cand_cmp);
}

static uint64_t
splitmix64(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

void
sa_sampler_init(sa_sampler *s, float temp, int top_k, float top_p, float min_p, uint64_t seed)
{
	s->temp = temp;
	s->top_k = top_k;
	s->top_p = top_p;
	s->min_p = min_p;
	s->rng = seed;
}

static int
argmax(const float *logits, int n)
{
	int best = 0;

	/* Strictly greater: the lowest id wins a tie.  NaN never wins. */
	for (int i = 1; i < n; i++)
		if (logits[i] > logits[best] || isnan(logits[best]))
			best = i;
	return best;
}

int
sa_sample(sa_sampler *s, const float *logits, int n_vocab)
{
	cand *c;
	int n = n_vocab, sorted = 0, tok;
	double max, sum, run, target, inv_temp;

	if (n_vocab <= 0)
		return -1;
	if (!(s->temp > 0))
		return argmax(logits, n_vocab);
	if (!(c = sa_malloc((size_t)n_vocab * sizeof *c)))
		return -1;
	for (int i = 0; i < n; i++) {
		c[i].logit = isnan(logits[i]) ? -INFINITY : logits[i];
		c[i].id = i;
	}

	/* top-k: c[0..n) [n_vocab] -> the k best, sorted */
	if (s->top_k > 0 && s->top_k < n) {
		select_top(c, n, s->top_k);
		n = s->top_k;
		sorted = 1;
	}

	/* top-p: the smallest sorted prefix whose probability reaches p */
	if (s->top_p < 1) {
		double cum = 0;
		int m = n, keep = n;

		max = -INFINITY;
		for (int i = 0; i < n; i++)
			if (c[i].logit > max)
				max = c[i].logit;
		sum = 0;
		for (int i = 0; i < n; i++)
			sum += exp(c[i].logit - max);
		/* Usually a few hundred tokens carry the mass: sort only those,
		 * and four times as many each time they fall short. */
		if (!sorted) {
			m = n < 256 ? n : 256;
			select_top(c, n, m);
		}
		for (;;) {
			cum = 0;
			keep = -1;
			for (int i = 0; i < m; i++) {
				cum += exp(c[i].logit - max) / sum;
				if (cum >= s->top_p) {
					keep = i + 1;
					break;
				}
			}
			if (keep > 0 || m == n)
				break;
			m = m < n / 4 ? m * 4 : n;
			select_top(c, n, m);
		}
		n = keep > 0 ? keep : n;
	}

	/* min-p: keep logit >= max + log(p), i.e. prob >= p * max prob */
	if (s->min_p > 0) {
		int k = 0;
		float thr;

		max = -INFINITY;
		for (int i = 0; i < n; i++)
			if (c[i].logit > max)
				max = c[i].logit;
		thr = (float)max + logf(s->min_p);
		for (int i = 0; i < n; i++)
			if (c[i].logit >= thr)
				c[k++] = c[i];
		/* The best token always survives, even for a min-p above 1. */
		if (k == 0) {
			select_top(c, n, 1);
			k = 1;
		}
		n = k;
	}

	/* temperature, softmax, draw */
	inv_temp = 1.0 / s->temp;
	max = -INFINITY;
	for (int i = 0; i < n; i++)
		if (c[i].logit * inv_temp > max)
			max = c[i].logit * inv_temp;
	sum = 0;
	for (int i = 0; i < n; i++)
		sum += exp(c[i].logit * inv_temp - max);
	target = (double)(splitmix64(&s->rng) >> 11) * 0x1.0p-53 * sum;
	/* The first candidate whose running sum passes the target: one of
	 * probability 0 can never be it. */
	run = 0;
	tok = -1;
	for (int i = 0; i < n; i++) {
		double p = exp(c[i].logit * inv_temp - max);
		run += p;
		if (p > 0)
			tok = c[i].id;
		if (run > target)
			break;
	}
	if (tok < 0)	/* every logit -inf */
		tok = argmax(logits, n_vocab);
	free(c);
	return tok;
}

double
sa_logprob(const float *logits, int n_vocab, int tok)
{
	double max = -INFINITY, sum = 0;

	if (tok < 0 || tok >= n_vocab)
		return -INFINITY;
	for (int i = 0; i < n_vocab; i++)
		if (logits[i] > max)
			max = logits[i];
	for (int i = 0; i < n_vocab; i++)
		sum += exp(logits[i] - max);
	return logits[tok] - max - log(sum);
}
