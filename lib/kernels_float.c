/*
 * kernels_float.c - the kernels on vectors of floats and doubles whose sums
 * must give the same bits on every kernel path: the context mapping's, in
 * double (encode.c), and training's dot product in double and SwiGLU
 * (train.c; SwiGLU also serves forward.c).  Each is written once as scalar
 * code and once for AVX2 with the same operations in the same order (a
 * product of two floats is exact in double; sums run in fixed lanes, folded
 * in pairs), and nothing is fused into a multiply-add: the AVX2 versions
 * are built without FMA, and the pragma keeps clang from contracting the
 * rest.  kernels.c's table takes the set of its path (sa_kernels_float).
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "sa.h"
#include "expf_impl.h"
#include "kernels_impl.h"

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

/* ------------------------------------------------------------ portable */

/* q . k [dh] in eight running sums, element j into sum j mod 8, folded in
 * pairs; the tail after. */
static double
dot_double(const double *q, const double *k, int dh)
{
	double p[8] = { 0 }, s;
	int j = 0;

	for (; j + 8 <= dh; j += 8)
		for (int l = 0; l < 8; l++)
			p[l] += q[j + l] * k[j + l];
	s = ((p[0] + p[4]) + (p[1] + p[5])) + ((p[2] + p[6]) + (p[3] + p[7]));
	for (; j < dh; j++)
		s += q[j] * k[j];
	return s;
}

/* sc [r][c] = Q [r][dh] K [c][dh]^T */
static void
scores_generic(const double *Q, const double *K, int r, int c, int dh, double *sc)
{
	for (int i = 0; i < r; i++)
		for (int t = 0; t < c; t++)
			sc[(size_t)i * c + t] = dot_double(Q + (size_t)i * dh, K + (size_t)t * dh, dh);
}

/* sc [c] := exp(sc * scale - max), returning their sum: four running sums,
 * element t into sum t mod 4, folded in pairs; the tail after. */
static double
softmax_generic(double *sc, int c, double scale)
{
	double mx = -HUGE_VAL, p[4] = { 0 }, sum;
	int t = 0;

	for (int u = 0; u < c; u++) {
		sc[u] *= scale;
		if (sc[u] > mx)
			mx = sc[u];
	}
	for (int u = 0; u < c; u++)
		sc[u] = exp_neg(sc[u] - mx);
	for (; t + 4 <= c; t += 4)
		for (int l = 0; l < 4; l++)
			p[l] += sc[t + l];
	sum = (p[0] + p[1]) + (p[2] + p[3]);
	for (; t < c; t++)
		sum += sc[t];
	return sum;
}

/* dst [n] = src [n], widened */
static void
widen_generic(const float *src, double *dst, int n)
{
	for (int i = 0; i < n; i++)
		dst[i] = src[i];
}

/* S [r][dh] = W [r][c] V [c][dh], each S[i][j] summed in the order of t */
static void
mix_generic(const double *W, const double *V, int r, int c, int dh, double *S)
{
	for (int i = 0; i < r; i++) {
		double *Si = S + (size_t)i * dh;
		memset(Si, 0, (size_t)dh * sizeof *Si);
		for (int t = 0; t < c; t++) {
			const double *v = V + (size_t)t * dh;
			for (int j = 0; j < dh; j++)
				Si[j] += W[(size_t)i * c + t] * v[j];
		}
	}
}

/* a . b [n] of floats in double, summed as dot_double sums */
static double
dot_f64_generic(const float *a, const float *b, int n)
{
	double p[8] = { 0 }, sum;
	int i = 0;

	for (; i + 8 <= n; i += 8)
		for (int l = 0; l < 8; l++)
			p[l] += (double)a[i + l] * b[i + l];
	sum = ((p[0] + p[4]) + (p[1] + p[5])) + ((p[2] + p[6]) + (p[3] + p[7]));
	for (; i < n; i++)
		sum += (double)a[i] * b[i];
	return sum;
}

/* sigmoid(g) through e = exp(-|g|), in expf_neg's range: 1/(1+e) for g >= 0,
 * e/(1+e) below. */
static float
sigmoid_generic(float g)
{
	float e = expf_neg(-fabsf(g));
	return (g >= 0 ? 1.0f : e) / (1.0f + e);
}

/* act [n] = silu(gate) * up = gate * sigmoid(gate) * up; act may be gate */
static void
swiglu_generic(float *act, const float *gate, const float *up, size_t n)
{
	for (size_t i = 0; i < n; i++)
		act[i] = gate[i] * sigmoid_generic(gate[i]) * up[i];
}

/* dgate, dup [n] of gate, up [n] from dact [n] */
static void
swiglu_back_generic(float *dgate, float *dup, const float *dact, const float *gate,
    const float *up, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		float sg = sigmoid_generic(gate[i]);
		dup[i] = dact[i] * gate[i] * sg;
		dgate[i] = dact[i] * up[i] * sg * (1.0f + gate[i] * (1.0f - sg));
	}
}

const sa_float_kernels sa_float_kernels_generic = {
	scores_generic, softmax_generic, mix_generic, widen_generic,
	dot_f64_generic, swiglu_generic, swiglu_back_generic,
};

/* ---------------------------------------------------------------- AVX2 */

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#define AVX2 __attribute__((target("avx2")))
/* inlined into the loops: a call per eight values cost as much as the work */
#define AVX2_INLINE __attribute__((target("avx2"), always_inline)) inline

/* The eight lanes' double sums lo (lanes 0-3) and hi (4-7), folded as
 * dot_double folds them. */
AVX2 static inline double
fold_avx2(__m256d lo, __m256d hi)
{
	double f[4];

	_mm256_storeu_pd(f, _mm256_add_pd(lo, hi));
	return (f[0] + f[1]) + (f[2] + f[3]);
}

/* Four keys at a time for every query (eight independent sums keep both FP
 * ports busy), so the four keys stay in L1 while the queries go by. */
AVX2 static void
scores_avx2(const double *Q, const double *K, int r, int c, int dh, double *sc)
{
	int t = 0, j8 = dh & ~7;

	for (; t + 4 <= c; t += 4) {
		const double *k0 = K + (size_t)t * dh, *k1 = k0 + dh, *k2 = k1 + dh, *k3 = k2 + dh;
		for (int i = 0; i < r; i++) {
			const double *q = Q + (size_t)i * dh;
			double *o = sc + (size_t)i * c + t;
			__m256d l0 = _mm256_setzero_pd(), h0 = l0, l1 = l0, h1 = l0;
			__m256d l2 = l0, h2 = l0, l3 = l0, h3 = l0;

			for (int j = 0; j < j8; j += 8) {
				__m256d ql = _mm256_loadu_pd(q + j), qh = _mm256_loadu_pd(q + j + 4);
				l0 = _mm256_add_pd(l0, _mm256_mul_pd(ql, _mm256_loadu_pd(k0 + j)));
				h0 = _mm256_add_pd(h0, _mm256_mul_pd(qh, _mm256_loadu_pd(k0 + j + 4)));
				l1 = _mm256_add_pd(l1, _mm256_mul_pd(ql, _mm256_loadu_pd(k1 + j)));
				h1 = _mm256_add_pd(h1, _mm256_mul_pd(qh, _mm256_loadu_pd(k1 + j + 4)));
				l2 = _mm256_add_pd(l2, _mm256_mul_pd(ql, _mm256_loadu_pd(k2 + j)));
				h2 = _mm256_add_pd(h2, _mm256_mul_pd(qh, _mm256_loadu_pd(k2 + j + 4)));
				l3 = _mm256_add_pd(l3, _mm256_mul_pd(ql, _mm256_loadu_pd(k3 + j)));
				h3 = _mm256_add_pd(h3, _mm256_mul_pd(qh, _mm256_loadu_pd(k3 + j + 4)));
			}
			o[0] = fold_avx2(l0, h0);
			o[1] = fold_avx2(l1, h1);
			o[2] = fold_avx2(l2, h2);
			o[3] = fold_avx2(l3, h3);
			for (int j = j8; j < dh; j++) {
				o[0] += q[j] * k0[j];
				o[1] += q[j] * k1[j];
				o[2] += q[j] * k2[j];
				o[3] += q[j] * k3[j];
			}
		}
	}
	for (; t < c; t++) {
		const double *k = K + (size_t)t * dh;
		for (int i = 0; i < r; i++) {
			const double *q = Q + (size_t)i * dh;
			__m256d lo = _mm256_setzero_pd(), hi = lo;
			double s;

			for (int j = 0; j < j8; j += 8) {
				lo = _mm256_add_pd(lo, _mm256_mul_pd(_mm256_loadu_pd(q + j),
				    _mm256_loadu_pd(k + j)));
				hi = _mm256_add_pd(hi, _mm256_mul_pd(_mm256_loadu_pd(q + j + 4),
				    _mm256_loadu_pd(k + j + 4)));
			}
			s = fold_avx2(lo, hi);
			for (int j = j8; j < dh; j++)
				s += q[j] * k[j];
			sc[(size_t)i * c + t] = s;
		}
	}
}

AVX2 static double
softmax_avx2(double *sc, int c, double scale)
{
	__m256d vs = _mm256_set1_pd(scale), vm, acc = _mm256_setzero_pd();
	double mx = -HUGE_VAL, f[4], sum;
	int t = 0, c4 = c & ~3;

	for (; t < c4; t += 4)
		_mm256_storeu_pd(sc + t, _mm256_mul_pd(_mm256_loadu_pd(sc + t), vs));
	for (; t < c; t++)
		sc[t] *= scale;
	for (t = 0; t < c; t++)
		if (sc[t] > mx)
			mx = sc[t];
	vm = _mm256_set1_pd(mx);
	for (t = 0; t < c4; t += 4) {
		__m256d e = exp_neg_avx2(_mm256_sub_pd(_mm256_loadu_pd(sc + t), vm));
		_mm256_storeu_pd(sc + t, e);
		acc = _mm256_add_pd(acc, e);
	}
	for (; t < c; t++)
		sc[t] = exp_neg(sc[t] - mx);
	_mm256_storeu_pd(f, acc);
	sum = (f[0] + f[1]) + (f[2] + f[3]);
	for (t = c4; t < c; t++)
		sum += sc[t];
	return sum;
}

AVX2 static void
widen_avx2(const float *src, double *dst, int n)
{
	int i = 0;

	for (; i + 4 <= n; i += 4)
		_mm256_storeu_pd(dst + i, _mm256_cvtps_pd(_mm_loadu_ps(src + i)));
	for (; i < n; i++)
		dst[i] = src[i];
}

/* Sixteen columns of S stay in registers while t runs over the chunk; those
 * columns of V stay in L1 while the rows go by. */
AVX2 static void
mix_avx2(const double *W, const double *V, int r, int c, int dh, double *S)
{
	int j = 0;

	for (; j + 16 <= dh; j += 16) {
		for (int i = 0; i < r; i++) {
			const double *w = W + (size_t)i * c;
			__m256d s0 = _mm256_setzero_pd(), s1 = s0, s2 = s0, s3 = s0;

			for (int t = 0; t < c; t++) {
				const double *v = V + (size_t)t * dh + j;
				__m256d wt = _mm256_broadcast_sd(w + t);
				s0 = _mm256_add_pd(s0, _mm256_mul_pd(wt, _mm256_loadu_pd(v)));
				s1 = _mm256_add_pd(s1, _mm256_mul_pd(wt, _mm256_loadu_pd(v + 4)));
				s2 = _mm256_add_pd(s2, _mm256_mul_pd(wt, _mm256_loadu_pd(v + 8)));
				s3 = _mm256_add_pd(s3, _mm256_mul_pd(wt, _mm256_loadu_pd(v + 12)));
			}
			_mm256_storeu_pd(S + (size_t)i * dh + j, s0);
			_mm256_storeu_pd(S + (size_t)i * dh + j + 4, s1);
			_mm256_storeu_pd(S + (size_t)i * dh + j + 8, s2);
			_mm256_storeu_pd(S + (size_t)i * dh + j + 12, s3);
		}
	}
	for (; j + 4 <= dh; j += 4) {
		for (int i = 0; i < r; i++) {
			const double *w = W + (size_t)i * c;
			__m256d s0 = _mm256_setzero_pd();

			for (int t = 0; t < c; t++)
				s0 = _mm256_add_pd(s0, _mm256_mul_pd(_mm256_broadcast_sd(w + t),
				    _mm256_loadu_pd(V + (size_t)t * dh + j)));
			_mm256_storeu_pd(S + (size_t)i * dh + j, s0);
		}
	}
	for (; j < dh; j++) {
		for (int i = 0; i < r; i++) {
			double s = 0;
			for (int t = 0; t < c; t++)
				s += W[(size_t)i * c + t] * V[(size_t)t * dh + j];
			S[(size_t)i * dh + j] = s;
		}
	}
}

AVX2 static double
dot_f64_avx2(const float *a, const float *b, int n)
{
	__m256d lo = _mm256_setzero_pd(), hi = lo;
	int i = 0, n8 = n & ~7;
	double sum;

	for (; i < n8; i += 8) {
		__m256 va = _mm256_loadu_ps(a + i), vb = _mm256_loadu_ps(b + i);
		lo = _mm256_add_pd(lo, _mm256_mul_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(va)),
		    _mm256_cvtps_pd(_mm256_castps256_ps128(vb))));
		hi = _mm256_add_pd(hi, _mm256_mul_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(va, 1)),
		    _mm256_cvtps_pd(_mm256_extractf128_ps(vb, 1))));
	}
	sum = fold_avx2(lo, hi);
	for (; i < n; i++)
		sum += (double)a[i] * b[i];
	return sum;
}

AVX2_INLINE static __m256
sigmoid_avx2(__m256 g)
{
	const __m256 one = _mm256_set1_ps(1.0f);
	__m256 e = expf_neg_avx2(_mm256_or_ps(g, _mm256_set1_ps(-0.0f)));   /* exp(-|g|) */
	__m256 num = _mm256_blendv_ps(e, one, _mm256_cmp_ps(g, _mm256_setzero_ps(), _CMP_GE_OQ));
	return _mm256_div_ps(num, _mm256_add_ps(one, e));
}

AVX2 static void
swiglu_avx2(float *act, const float *gate, const float *up, size_t n)
{
	size_t i = 0;

	for (; i + 8 <= n; i += 8) {
		__m256 g = _mm256_loadu_ps(gate + i);
		_mm256_storeu_ps(act + i, _mm256_mul_ps(_mm256_mul_ps(g, sigmoid_avx2(g)),
		    _mm256_loadu_ps(up + i)));
	}
	swiglu_generic(act + i, gate + i, up + i, n - i);
}

AVX2 static void
swiglu_back_avx2(float *dgate, float *dup, const float *dact, const float *gate,
    const float *up, size_t n)
{
	const __m256 one = _mm256_set1_ps(1.0f);
	size_t i = 0;

	for (; i + 8 <= n; i += 8) {
		__m256 g = _mm256_loadu_ps(gate + i), da = _mm256_loadu_ps(dact + i);
		__m256 sg = sigmoid_avx2(g);
		_mm256_storeu_ps(dup + i, _mm256_mul_ps(_mm256_mul_ps(da, g), sg));
		__m256 t = _mm256_add_ps(one, _mm256_mul_ps(g, _mm256_sub_ps(one, sg)));
		_mm256_storeu_ps(dgate + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(da,
		    _mm256_loadu_ps(up + i)), sg), t));
	}
	swiglu_back_generic(dgate + i, dup + i, dact + i, gate + i, up + i, n - i);
}

const sa_float_kernels sa_float_kernels_avx2 = {
	scores_avx2, softmax_avx2, mix_avx2, widen_avx2,
	dot_f64_avx2, swiglu_avx2, swiglu_back_avx2,
};
#endif
