/* test_sample.c - greedy choice, log-probabilities, each filter of the chain,
 * the temperature, the frequencies of draws, and the seeded stream. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sa.h"
#include "t.h"

/* Logits whose softmax is exactly p (up to rounding). */
static void
logits_of(const double *p, int n, float *logits)
{
	for (int i = 0; i < n; i++)
		logits[i] = (float)log(p[i]);
}

/* Draw count times; hist[tok] counts.  Returns 0 if any draw was out of range. */
static int
draw(sa_sampler *s, const float *logits, int n, int count, int *hist)
{
	memset(hist, 0, (size_t)n * sizeof *hist);
	for (int i = 0; i < count; i++) {
		int t = sa_sample(s, logits, n);
		if (t < 0 || t >= n)
			return 0;
		hist[t]++;
	}
	return 1;
}

static void
test_greedy(void)
{
	float l[6] = { 0.5f, 2.0f, -1.0f, 2.0f, 1.9f, NAN };
	sa_sampler s;

	sa_sampler_init(&s, 0, 40, 0.95f, 0.05f, 1);
	CHECK(sa_sample(&s, l, 6) == 1);        /* tie 1/3: lowest id */
	l[3] = 2.0001f;
	CHECK(sa_sample(&s, l, 6) == 3);
	CHECK(s.rng == 1);                      /* greedy draws nothing */
	float nanfirst[3] = { NAN, -5, -4 };
	CHECK(sa_sample(&s, nanfirst, 3) == 2);
	/* top-k 1 at any temperature is greedy too. */
	sa_sampler_init(&s, 1.5f, 1, 1, 0, 7);
	CHECK(sa_sample(&s, l, 6) == 3);
}

static void
test_logprob(void)
{
	float l[5] = { 1, 2, 3, -10, 0.25f };
	double sum = 0, ref;

	for (int i = 0; i < 5; i++)
		sum += exp(sa_logprob(l, 5, i));
	CHECK_NEAR(sum, 1.0, 1e-6);
	ref = 3 - log(exp(1) + exp(2) + exp(3) + exp(-10) + exp(0.25));
	CHECK_NEAR(sa_logprob(l, 5, 2), ref, 1e-6);
	/* Shift invariance, and large logits do not overflow. */
	float big[5];
	for (int i = 0; i < 5; i++)
		big[i] = l[i] + 1000;
	CHECK_NEAR(sa_logprob(big, 5, 2), ref, 1e-4);
	CHECK(isinf(sa_logprob(l, 5, 5)) && sa_logprob(l, 5, 5) < 0);
}

static void
test_frequencies(void)
{
	double p[4] = { 0.5, 0.3, 0.15, 0.05 };
	float l[4];
	int hist[4], N = 40000;
	sa_sampler s;

	logits_of(p, 4, l);
	/* No filter at temperature 1: the draws follow the softmax. */
	sa_sampler_init(&s, 1, 0, 1, 0, 12345);
	CHECK(draw(&s, l, 4, N, hist));
	for (int i = 0; i < 4; i++)
		CHECK_NEAR((double)hist[i] / N, p[i], 0.01);

	/* Temperature 0.5 squares the probabilities before normalising. */
	double q[4], z = 0;
	for (int i = 0; i < 4; i++)
		z += q[i] = p[i] * p[i];
	sa_sampler_init(&s, 0.5f, 0, 1, 0, 99);
	CHECK(draw(&s, l, 4, N, hist));
	for (int i = 0; i < 4; i++)
		CHECK_NEAR((double)hist[i] / N, q[i] / z, 0.01);

	/* top-k 2: renormalised over the two best. */
	sa_sampler_init(&s, 1, 2, 1, 0, 5);
	CHECK(draw(&s, l, 4, N, hist));
	CHECK(hist[2] == 0 && hist[3] == 0);
	CHECK_NEAR((double)hist[0] / N, 0.5 / 0.8, 0.01);

	/* top-p 0.7: 0.5 falls short, 0.5+0.3 reaches it, so two are kept. */
	sa_sampler_init(&s, 1, 0, 0.7f, 0, 6);
	CHECK(draw(&s, l, 4, N, hist));
	CHECK(hist[0] > 0 && hist[1] > 0 && hist[2] == 0 && hist[3] == 0);
	/* top-p 0.45: the first alone reaches it. */
	sa_sampler_init(&s, 1, 0, 0.45f, 0, 6);
	CHECK(draw(&s, l, 4, 1000, hist));
	CHECK(hist[0] == 1000);

	/* min-p 0.2: keep p >= 0.2 * 0.5 = 0.1, so 0.05 goes. */
	sa_sampler_init(&s, 1, 0, 1, 0.2f, 8);
	CHECK(draw(&s, l, 4, N, hist));
	CHECK(hist[2] > 0 && hist[3] == 0);
	CHECK_NEAR((double)hist[2] / N, 0.15 / 0.95, 0.01);

	/* min-p works on the raw logits, before the temperature: at a high
	 * temperature the cut stays where it was. */
	sa_sampler_init(&s, 5, 0, 1, 0.2f, 8);
	CHECK(draw(&s, l, 4, N, hist));
	CHECK(hist[3] == 0 && hist[2] > N / 5);

	/* top-p after top-k: over the renormalised top 3 (0.5/0.95 = 0.526...),
	 * p = 0.52 keeps only the first, which it would not over all four. */
	sa_sampler_init(&s, 1, 3, 0.52f, 0, 8);
	CHECK(draw(&s, l, 4, 1000, hist));
	CHECK(hist[0] == 1000);
	sa_sampler_init(&s, 1, 0, 0.52f, 0, 8);
	CHECK(draw(&s, l, 4, N, hist));
	CHECK(hist[1] > 0);
}

/* A large flat vocabulary: top-p must look beyond the first 256 candidates. */
static void
test_wide_top_p(void)
{
	int n = 1000, *hist = malloc((size_t)n * sizeof *hist);
	float *l = calloc((size_t)n, sizeof *l);
	int maxid = 0, beyond = 0;
	sa_sampler s;

	sa_sampler_init(&s, 1, 0, 0.9f, 0, 3);
	CHECK(draw(&s, l, n, 5000, hist));
	for (int i = 0; i < n; i++) {
		if (hist[i])
			maxid = i;
		if (hist[i] && i >= 256)
			beyond = 1;
	}
	/* Equal logits sort by id: ids 0..899 are kept, no others. */
	CHECK(beyond);
	CHECK(maxid <= 899 && maxid > 850);
	free(hist);
	free(l);
}

typedef struct ref {
	float l;
	int id;
} ref;

static int
ref_cmp(const void *pa, const void *pb)
{
	const ref *a = pa, *b = pb;

	if (a->l != b->l)
		return a->l > b->l ? -1 : 1;
	return a->id - b->id;
}

/* Large top-k takes the radix-sort path: the kept set must be exactly the
 * best k by (logit, then lower id), with ties, -0 = +0, -inf and negatives. */
static void
test_large_top_k(void)
{
	int n = 2000, k = 1100, *hist = malloc((size_t)n * sizeof *hist);
	float *l = malloc((size_t)n * sizeof *l);
	ref *r = malloc((size_t)n * sizeof *r);
	char *in = calloc((size_t)n, 1);
	uint64_t x = 7;
	int outside = 0, hit = 0, finite = 0;
	sa_sampler s;

	for (int i = 0; i < n; i++) {
		uint64_t v = sa_splitmix64(&x);
		/* The cut falls among the zeros, where -0 must equal +0. */
		switch (v % 8) {
		case 0: l[i] = (float)(v >> 40) / (1 << 24) + 0.01f; break;
		case 1: case 2: l[i] = 0.0f; break;
		case 3: case 4: l[i] = -0.0f; break;
		case 5: l[i] = -INFINITY; break;
		case 6: l[i] = -(float)(v >> 40) / (1 << 24); break;
		default: l[i] = (float)(int)(v >> 62) * -0.25f - 0.25f; break;   /* many ties */
		}
		r[i].l = l[i] == 0 ? 0.0f : l[i];
		r[i].id = i;
	}
	qsort(r, (size_t)n, sizeof *r, ref_cmp);
	/* -inf has probability 0 even when kept: it cannot be hit. */
	for (int i = 0; i < k; i++) {
		in[r[i].id] = 1;
		finite += r[i].l > -INFINITY;
	}
	/* A high temperature makes the kept tokens near-equally likely. */
	sa_sampler_init(&s, 1000, k, 1, 0, 11);
	CHECK(draw(&s, l, n, 15000, hist));
	for (int i = 0; i < n; i++) {
		outside += hist[i] && !in[i];
		hit += hist[i] > 0;
	}
	CHECK(outside == 0);
	CHECK(hit == finite && finite > 1024);

	/* Top-p past the first 256: eight levels of many ties each, cut just
	 * into the fifth, whose lowest ids the partial selection moved; p
	 * halfway between the masses of the best k-1 and the best k keeps k. */
	double total = 0, before = 0;
	k = 5;
	for (int i = 0; i < n; i++) {
		int level = (int)(sa_splitmix64(&x) % 8);
		l[i] = -0.1f * (float)level;
		r[i].l = l[i];
		r[i].id = i;
		total += expf(l[i]);
		k += level < 4;
	}
	qsort(r, (size_t)n, sizeof *r, ref_cmp);
	memset(in, 0, (size_t)n);
	for (int i = 0; i < k - 1; i++) {
		in[r[i].id] = 1;
		before += expf(r[i].l - r[0].l);
	}
	in[r[k - 1].id] = 1;
	sa_sampler_init(&s, 1000, 0, (float)((before + 0.5 * expf(r[k - 1].l - r[0].l)) / total * expf(r[0].l)), 0, 12);
	CHECK(draw(&s, l, n, 15000, hist));
	outside = hit = 0;
	for (int i = 0; i < n; i++) {
		outside += hist[i] && !in[i];
		hit += hist[i] > 0;
	}
	CHECK(outside == 0);
	CHECK(hit == k);
	free(hist);
	free(l);
	free(r);
	free(in);
}

static void
test_stream(void)
{
	float l[50];
	sa_sampler a, b, c;
	uint64_t x = 0;
	int same = 1, differ = 0, expect_ok = 1;

	/* SplitMix64's published first output for seed 0. */
	CHECK(sa_splitmix64(&x) == 0xe220a8397b1dcdafULL);

	for (int i = 0; i < 50; i++)
		l[i] = (float)sin(i * 1.7) * 3;
	sa_sampler_init(&a, 0.9f, 0, 1, 0, 42);
	sa_sampler_init(&b, 0.9f, 0, 1, 0, 42);
	sa_sampler_init(&c, 0.9f, 0, 1, 0, 43);
	x = 42;
	for (int k = 0; k < 500; k++) {
		int ta = sa_sample(&a, l, 50), tb = sa_sample(&b, l, 50), tc = sa_sample(&c, l, 50);
		same &= ta == tb;
		differ |= ta != tc;

		/* Without filters the draw is the inverse CDF in id order at
		 * u = (next >> 11) / 2^53: the same on every machine. */
		double z = 0, run = 0, u = (double)(sa_splitmix64(&x) >> 11) * 0x1.0p-53;
		int want = 49;
		for (int i = 0; i < 50; i++)
			z += exp(l[i] / 0.9);
		for (int i = 0; i < 50; i++) {
			run += exp(l[i] / 0.9) / z;
			if (run > u) {
				want = i;
				break;
			}
		}
		/* Allow a rounding tie at a boundary, nothing else. */
		if (ta != want && fabs(run - u) > 1e-6)
			expect_ok = 0;
	}
	CHECK(same);
	CHECK(differ);
	CHECK(expect_ok);
}

/* llama.cpp's repeat penalty: positive logits divided, negative ones
 * multiplied, once per token of the window; the logits stay as they were. */
static void
test_penalty(void)
{
	float l[4] = { 2.0f, 1.9f, -1.0f, -1.2f }, copy[4];
	int hist[] = { 3, 0, 0, 2 }, ids[4];
	double lp[4];
	sa_sampler s;

	memcpy(copy, l, sizeof l);
	sa_sampler_init(&s, 0, 0, 1, 0, 1);
	CHECK(sa_sample_after(&s, l, 4, hist, 4) == 0);      /* off by default */
	s.penalty = 1.5f;
	s.last_n = 64;
	CHECK(sa_sample_after(&s, l, 4, hist, 4) == 1);      /* 2 / 1.5 < 1.9 */
	s.penalty = 1.01f;
	CHECK(sa_sample_after(&s, l, 4, hist, 4) == 0);      /* once, not twice */
	s.penalty = 1.5f;
	s.last_n = 1;
	CHECK(sa_sample_after(&s, l, 4, hist, 4) == 0);      /* only token 2 */
	/* -1 * 3 < -1.2: a negative logit goes down */
	l[0] = l[1] = -5;
	s.penalty = 3;
	s.last_n = -1;
	CHECK(sa_sample_after(&s, l, 4, (int[]){ 2 }, 1) == 3);
	l[0] = copy[0];
	l[1] = copy[1];
	CHECK(memcmp(l, copy, sizeof l) == 0);
	/* the best k by log-softmax, agreeing with sa_logprob */
	CHECK(sa_logprob_top(l, 4, 3, ids, lp) == 3);
	CHECK(ids[0] == 0 && ids[1] == 1 && ids[2] == 2);
	CHECK(lp[1] == sa_logprob(l, 4, 1));
	CHECK(sa_logprob_top(l, 4, 9, ids, lp) == 4 && ids[3] == 3);
}

int
main(void)
{
	test_greedy();
	test_logprob();
	test_frequencies();
	test_wide_top_p();
	test_large_top_k();
	test_stream();
	test_penalty();
	return t_done();
}
