/*
 * expf_impl.h - exp(x) for x <= 0, in float (the inference engine's and the
 * trainer's softmax and SiLU: kernels.c, kernels_float.c) and in double (the
 * context mapping: encode.c, kernels_float.c).  Not part of the public API.
 *
 * In float to a few ulp, 0 below -87 (where 2^k would leave the normal range):
 * x = k ln2 + r with |r| <= ln2/2 (ln2 in two parts, the first exact in
 * k * ln2_hi), the Taylor polynomial of degree 7 in r, then 2^k through the
 * exponent bits.  Written once as scalar code and once for AVX2 with the same
 * operations in the same order, so both give the same bits; libm's expf, one
 * call per value, was a third of a small model's prefill and 7% of a
 * pretraining step.
 */
#ifndef EXPF_IMPL_H
#define EXPF_IMPL_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#define EXPF_MIN (-87.0f)
static const float expf_log2e = 1.44269504088896341f;
static const float expf_ln2_hi = 0.693359375f;        /* 355/512 */
static const float expf_ln2_lo = -2.12194440e-4f;
static const float expf_c[8] = {
	1.0f, 1.0f, 1.0f / 2, 1.0f / 6, 1.0f / 24, 1.0f / 120, 1.0f / 720, 1.0f / 5040,
};

static inline float
expf_neg(float x)
{
	float k, r, p;
	uint32_t bits;

	if (!(x >= EXPF_MIN))
		return x != x ? x : 0.0f;
	k = nearbyintf(x * expf_log2e);
	r = x - k * expf_ln2_hi;
	r = r - k * expf_ln2_lo;
	p = expf_c[7];
	for (int i = 6; i >= 0; i--)
		p = p * r + expf_c[i];
	bits = (uint32_t)((int32_t)k + 127) << 23;
	memcpy(&k, &bits, sizeof k);
	return p * k;
}

/*
 * exp(x) for x <= 0, to a few ulp, 0 below -708: x = k ln2 + r
 * with |r| <= ln2/2, then the Taylor polynomial of degree 13 in r, then
 * 2^k through the exponent bits.  Written once as scalar code and once for
 * AVX2 with the same operations in the same order, so both give the same
 * bits (unlike libm's exp, which may pick an FMA path at run time).
 */
#define EXP_MIN (-708.0)
static const double exp_log2e = 1.4426950408889634074;
static const double exp_ln2_hi = 6.93147180369123816490e-01;   /* low 32 bits zero */
static const double exp_ln2_lo = 1.90821492927058770002e-10;
static const double exp_c[14] = {
	1.0, 1.0, 1.0 / 2, 1.0 / 6, 1.0 / 24, 1.0 / 120, 1.0 / 720, 1.0 / 5040,
	1.0 / 40320, 1.0 / 362880, 1.0 / 3628800, 1.0 / 39916800, 1.0 / 479001600,
	1.0 / 6227020800,
};

static inline double
exp_neg(double x)
{
	double k, r, p;
	uint64_t bits;

	if (!(x >= EXP_MIN))
		return x != x ? x : 0.0;
	k = nearbyint(x * exp_log2e);
	r = x - k * exp_ln2_hi;
	r = r - k * exp_ln2_lo;
	p = exp_c[13];
	for (int i = 12; i >= 0; i--)
		p = p * r + exp_c[i];
	bits = (uint64_t)((int64_t)k + 1023) << 52;
	memcpy(&k, &bits, sizeof k);
	return p * k;
}

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

/* inlined into the loops: a call per eight values cost as much as the work */
__attribute__((target("avx2"), always_inline)) static inline __m256
expf_neg_avx2(__m256 x)
{
	__m256 k = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(expf_log2e)),
	    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
	__m256 r = _mm256_sub_ps(x, _mm256_mul_ps(k, _mm256_set1_ps(expf_ln2_hi)));
	__m256 p = _mm256_set1_ps(expf_c[7]), two_k;

	r = _mm256_sub_ps(r, _mm256_mul_ps(k, _mm256_set1_ps(expf_ln2_lo)));
	for (int i = 6; i >= 0; i--)
		p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(expf_c[i]));
	two_k = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k),
	    _mm256_set1_epi32(127)), 23));
	p = _mm256_mul_ps(p, two_k);
	/* below EXPF_MIN: 0; NaN stays NaN through p */
	return _mm256_andnot_ps(_mm256_cmp_ps(x, _mm256_set1_ps(EXPF_MIN), _CMP_LT_OQ), p);
}

__attribute__((target("avx2"), always_inline)) static inline __m256d
exp_neg_avx2(__m256d x)
{
	__m256d k = _mm256_round_pd(_mm256_mul_pd(x, _mm256_set1_pd(exp_log2e)),
	    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
	__m256d r = _mm256_sub_pd(x, _mm256_mul_pd(k, _mm256_set1_pd(exp_ln2_hi)));
	__m256d p = _mm256_set1_pd(exp_c[13]), two_k;
	__m256i e;

	r = _mm256_sub_pd(r, _mm256_mul_pd(k, _mm256_set1_pd(exp_ln2_lo)));
	for (int i = 12; i >= 0; i--)
		p = _mm256_add_pd(_mm256_mul_pd(p, r), _mm256_set1_pd(exp_c[i]));
	e = _mm256_cvtepi32_epi64(_mm256_cvtpd_epi32(k));
	two_k = _mm256_castsi256_pd(_mm256_slli_epi64(_mm256_add_epi64(e, _mm256_set1_epi64x(1023)), 52));
	p = _mm256_mul_pd(p, two_k);
	/* Below EXP_MIN: 0; NaN stays NaN through p. */
	return _mm256_andnot_pd(_mm256_cmp_pd(x, _mm256_set1_pd(EXP_MIN), _CMP_LT_OQ), p);
}
#endif

#endif
