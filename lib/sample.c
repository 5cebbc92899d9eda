/*
 * sample.c - choosing the next token from logits.
 *
 * The chain and its meaning follow llama.cpp's default sampler: top-k, then
 * top-p and min-p on the softmax of the raw logits, then the temperature,
 * then one draw.  The draw uses SplitMix64 (sa_splitmix64), whose whole
 * state fits the sampler's one 64-bit word and whose output is defined bit
 * for bit, so a seed gives the same text on every machine.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sa.h"

typedef struct cand {
	float logit;
	float p;      /* unnormalised probability, once weighed */
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

/*
 * Sort the whole vocabulary c[0..n) (ids 0..n-1, in any order) into the
 * same total order as cand_before, by a stable LSD radix sort of the logits
 * taken in id order, so that equal logits stay in id order.  O(n), where a
 * comparison sort of a large vocabulary costs tens of milliseconds.
 * key and tmp are [n].
 */
static void
sort_all(cand *c, int n, uint64_t *key, uint64_t *tmp)
{
	size_t count[2048];

	for (int i = 0; i < n; i++) {
		uint32_t u;
		float l = c[i].logit == 0 ? 0.0f : c[i].logit;   /* -0 sorts as 0 */
		memcpy(&u, &l, sizeof u);
		/* Float bits to an unsigned of the same order, then reversed. */
		u = u & 0x80000000u ? ~u : u | 0x80000000u;
		key[c[i].id] = (uint64_t)~u << 32 | (uint32_t)c[i].id;
	}
	/* Three passes of 11 bits over the upper half. */
	for (int shift = 32; shift < 64; shift += 11) {
		size_t pos = 0;
		uint64_t *t;

		memset(count, 0, sizeof count);
		for (int i = 0; i < n; i++)
			count[key[i] >> shift & 0x7ff]++;
		if (count[key[0] >> shift & 0x7ff] == (size_t)n)
			continue;   /* one digit value throughout: nothing moves */
		for (int d = 0; d < 2048; d++) {
			size_t k = count[d];
			count[d] = pos;
			pos += k;
		}
		for (int i = 0; i < n; i++)
			tmp[count[key[i] >> shift & 0x7ff]++] = key[i];
		t = key;
		key = tmp;
		tmp = t;
	}
	for (int i = 0; i < n; i++) {
		uint32_t u = ~(uint32_t)(key[i] >> 32);
		u = u & 0x80000000u ? u & 0x7fffffffu : ~u;
		memcpy(&c[i].logit, &u, sizeof u);
		c[i].id = (int)(uint32_t)key[i];
	}
}

/* Scratch kept between calls: one sampler per thread draws once per token,
 * and the vocabulary does not change size. */
typedef struct work {
	cand *c;          /* [cap] */
	uint64_t *key;    /* [cap] */
	uint64_t *tmp;    /* [cap] */
	float *pen;       /* [cap] logits after the repeat penalty */
	size_t cap;
} work;

static _Thread_local work scratch;

/* Rearrange c[0..n) so that c[0..m) are the best m, sorted.  More than a
 * few are only asked of the whole vocabulary (top-k, or top-p without it),
 * as sort_all needs. */
static void
select_top(work *w, int n, int m)
{
	cand *c = w->c;

	if (m > 1024 || (m == n && n > 64)) {
		sort_all(c, n, w->key, w->tmp);
		return;
	}
	/* A heap of the best m so far, its root the worst of them: O(n log m). */
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

void
sa_sampler_init(sa_sampler *s, float temp, int top_k, float top_p, float min_p, uint64_t seed)
{
	s->temp = temp;
	s->top_k = top_k;
	s->top_p = top_p;
	s->min_p = min_p;
	s->rng = seed;
	s->penalty = 1;
	s->last_n = 0;
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

/* Largest logit of c[0..n). */
static float
max_logit(const cand *c, int n)
{
	float max = -INFINITY;

	for (int i = 0; i < n; i++)
		if (c[i].logit > max)
			max = c[i].logit;
	return max;
}

/* c[i].p = exp((logit - max) * scale), unnormalised; returns their sum. */
static double
weigh(cand *c, int n, float scale)
{
	float max = max_logit(c, n);
	double sum = 0;

	/* All -inf: nothing has weight (and -inf - -inf must not make NaN). */
	if (max == -INFINITY) {
		for (int i = 0; i < n; i++)
			c[i].p = 0;
		return 0;
	}
	for (int i = 0; i < n; i++)
		sum += c[i].p = expf((c[i].logit - max) * scale);
	return sum;
}

/* Room for n_vocab candidates in w; 0 if out of memory. */
static int
work_fit(work *w, int n_vocab)
{
	if (w->cap >= (size_t)n_vocab)
		return 1;
	free(w->c);
	free(w->key);
	free(w->tmp);
	free(w->pen);
	w->key = sa_malloc((size_t)n_vocab * sizeof *w->key);
	w->tmp = sa_malloc((size_t)n_vocab * sizeof *w->tmp);
	w->c = sa_malloc((size_t)n_vocab * sizeof *w->c);
	w->pen = sa_malloc((size_t)n_vocab * sizeof *w->pen);
	w->cap = w->c && w->key && w->tmp && w->pen ? (size_t)n_vocab : 0;
	return w->cap > 0;
}

int
sa_sample(sa_sampler *s, const float *logits, int n_vocab)
{
	work *w = &scratch;
	cand *c;
	int n = n_vocab, sorted = 0, tok;
	double sum, run, target;

	if (n_vocab <= 0)
		return -1;
	if (!(s->temp > 0))
		return argmax(logits, n_vocab);
	if (!work_fit(w, n_vocab))
		return -1;
	c = w->c;
	for (int i = 0; i < n; i++) {
		c[i].logit = isnan(logits[i]) ? -INFINITY : logits[i];
		c[i].id = i;
	}

	/* top-k: c[0..n) [n_vocab] -> the k best, sorted */
	if (s->top_k > 0 && s->top_k < n) {
		select_top(w, n, s->top_k);
		n = s->top_k;
		sorted = 1;
	}

	/* top-p: the smallest sorted prefix whose probability reaches p */
	if (s->top_p < 1) {
		float max = max_logit(c, n);
		double cum = 0, need = s->top_p * weigh(c, n, 1);
		int m = n, keep = n;

		/* Usually a few hundred tokens carry the mass: sort only those,
		 * and all of them when they fall short (the first m stay put). */
		if (!sorted) {
			m = n < 256 ? n : 256;
			select_top(w, n, m);
		}
		for (int i = 0; i < n; i++) {
			if (i == m)
				select_top(w, n, m = n);
			cum += expf(c[i].logit - max);
			if (cum >= need) {
				keep = i + 1;
				break;
			}
		}
		n = keep;
	}

	/* min-p: keep logit >= max + log(p), i.e. prob >= p * max prob */
	if (s->min_p > 0) {
		float thr = max_logit(c, n) + logf(s->min_p);
		int k = 0;

		for (int i = 0; i < n; i++)
			if (c[i].logit >= thr)
				c[k++] = c[i];
		/* The best token always survives, even for a min-p above 1. */
		if (k == 0) {
			select_top(w, n, 1);
			k = 1;
		}
		n = k;
	}

	/* temperature, softmax, draw */
	sum = weigh(c, n, 1.0f / s->temp);
	target = sa_unif(&s->rng) * sum;
	/* The first candidate whose running sum passes the target: one of
	 * probability 0 can never be it. */
	run = 0;
	tok = -1;
	for (int i = 0; i < n; i++) {
		run += c[i].p;
		if (c[i].p > 0)
			tok = c[i].id;
		if (run > target)
			break;
	}
	if (tok < 0)	/* every logit -inf */
		tok = argmax(logits, n_vocab);
	return tok;
}

int
sa_sample_after(sa_sampler *s, const float *logits, int n_vocab, const int *toks, int n)
{
	work *w = &scratch;
	int from = s->last_n < 0 || s->last_n > n ? 0 : n - s->last_n;

	if (s->penalty == 1 || s->last_n == 0 || from == n)
		return sa_sample(s, logits, n_vocab);
	if (n_vocab <= 0 || !work_fit(w, n_vocab))
		return -1;
	/* pen [n_vocab]: a copy, so that the logits stay those of the model */
	memcpy(w->pen, logits, (size_t)n_vocab * sizeof *w->pen);
	/* key [n_vocab] marks the tokens done (sa_sample overwrites it) */
	for (int i = from; i < n; i++)
		if (toks[i] >= 0 && toks[i] < n_vocab)
			w->key[toks[i]] = 0;
	for (int i = from; i < n; i++) {
		int t = toks[i];
		if (t < 0 || t >= n_vocab || w->key[t])
			continue;
		w->key[t] = 1;
		w->pen[t] = w->pen[t] > 0 ? w->pen[t] / s->penalty : w->pen[t] * s->penalty;
	}
	return sa_sample(s, w->pen, n_vocab);
}

int
sa_logprob_top(const float *logits, int n_vocab, int k, int *ids, double *logprob)
{
	work *w = &scratch;
	float max = -INFINITY;
	double sum = 0;

	if (k > n_vocab)
		k = n_vocab;
	if (k <= 0)
		return 0;
	if (!work_fit(w, n_vocab))
		return -1;
	for (int i = 0; i < n_vocab; i++) {
		w->c[i].logit = isnan(logits[i]) ? -INFINITY : logits[i];
		w->c[i].id = i;
		if (logits[i] > max)
			max = logits[i];
	}
	select_top(w, n_vocab, k);
	/* As sa_logprob sums, so that the two agree to the bit. */
	for (int i = 0; i < n_vocab; i++)
		sum += expf(logits[i] - max);
	for (int i = 0; i < k; i++) {
		ids[i] = w->c[i].id;
		logprob[i] = (double)logits[ids[i]] - max - log(sum);
	}
	return k;
}

double
sa_logprob(const float *logits, int n_vocab, int tok)
{
	float max = -INFINITY;
	double sum = 0;

	if (tok < 0 || tok >= n_vocab)
		return -INFINITY;
	for (int i = 0; i < n_vocab; i++)
		if (logits[i] > max)
			max = logits[i];
	/* Single-precision exponentials, summed in double: the terms need no
	 * more than float accuracy, and expf is several times faster. */
	for (int i = 0; i < n_vocab; i++)
		sum += expf(logits[i] - max);
	return (double)logits[tok] - max - log(sum);
}
