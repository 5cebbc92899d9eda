/*
 * encode.c - the context mapping: the base model runs over a segment, and a
 * hook on its forward pass turns each layer's keys and values into the
 * adapter's context state (doc/design.md, "The context mapping"), layer by
 * layer as the pass goes, so no layer's K/V outlives its own hook call.
 * A memory keyed by the adapted matrix's input keeps the layer's values
 * until the input hook has handed over that input for the whole segment,
 * then writes.
 *
 * The state is kept in double and written to the float delta on demand: the
 * recurrence runs over many chunks, and double keeps its rounding far below
 * what the delta file can show.  Every sum runs in a fixed order, and each
 * (matrix, head) of a layer runs whole on one thread of the pool, so the
 * mapping gives the same bits whatever the thread count and whatever vector
 * unit the CPU has.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sa.h"
#include "kernels_impl.h"

/* Products of two floats are exact in double; keep the compiler from fusing
 * the other multiply-adds, so every build rounds the same way. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

typedef struct rowkern rowkern;

struct sa_encoder {
	sa_model *model;
	const sa_adapter *a;
	sa_delta *delta;      /* float copy of the state, refreshed by sa_encoder_delta */
	double *h, *P;        /* [n_used][Hk][r][dh], [n_used][Hk][r];
	                       * LSQ: G [n_layer][Hk][dh][dk], S [n_layer][Hk][dk][dk] */
	int *pair;            /* [n_layer * SA_NMAT]: index of (l, m) in h/P, or -1 */
	sa_kvcache *st;
	int key_mat;          /* LSQ keyed by a matrix's input: that matrix, else -1 */
	float *X, *V;         /* then [cap][d_in], [cap][Dkv]: the layer's input and values */
	int cap, x_rows;      /* rows X and V hold; rows of the layer's input so far */
	int x_layers;         /* layers written from their input in this segment */
	int seg_n;            /* tokens of the segment being fed */
	int rc;               /* first failure inside the hook */
	const rowkern *kern;
};

/* ------------------------------------------------------------------ kernels */

/*
 * The inner loops of the chunk attention, in double on queries, keys and
 * values widened from float once per chunk:
 *   scores: sc [r][c]  = Q [r][dh] K [c][dh]^T
 *   mix:    S  [r][dh] = W [r][c] V [c][dh]      (each S[i][j] summed in order of t)
 * The generic and AVX2 versions round identically: a product of two floats
 * is exact in double, every sum keeps the same order (a dot product in eight
 * running sums, element j into sum j mod 8, folded as an AVX2 register pair
 * folds them), and nothing is fused into a multiply-add (the AVX2 versions
 * are built without FMA).
 */
struct rowkern {
	void (*scores)(const double *Q, const double *K, int r, int c, int dh, double *sc);
	/* sc [c] := exp(sc*scale - max); returns their sum */
	double (*softmax)(double *sc, int c, double scale);
	void (*mix)(const double *W, const double *V, int r, int c, int dh, double *S);
	/* dst [n] := src [n] */
	void (*widen)(const float *src, double *dst, int n);
};

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

static double
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

static double
dot_generic(const double *q, const double *k, int dh)
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

static void
scores_generic(const double *Q, const double *K, int r, int c, int dh, double *sc)
{
	for (int i = 0; i < r; i++)
		for (int t = 0; t < c; t++)
			sc[(size_t)i * c + t] = dot_generic(Q + (size_t)i * dh, K + (size_t)t * dh, dh);
}

/* Four running sums, element t into sum t mod 4, folded in pairs; the
 * tail after. */
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

static void
widen_generic(const float *src, double *dst, int n)
{
	for (int i = 0; i < n; i++)
		dst[i] = src[i];
}

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

#if defined(__x86_64__)
#include <immintrin.h>

#define AVX2 __attribute__((target("avx2")))

/* (lo + hi) folded as dot_generic folds its eight sums. */
AVX2 static inline double
fold(__m256d lo, __m256d hi)
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
			o[0] = fold(l0, h0);
			o[1] = fold(l1, h1);
			o[2] = fold(l2, h2);
			o[3] = fold(l3, h3);
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
			s = fold(lo, hi);
			for (int j = j8; j < dh; j++)
				s += q[j] * k[j];
			sc[(size_t)i * c + t] = s;
		}
	}
}

AVX2 static __m256d
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
#endif

/* The kernels' choice (kernels.c), so SA_KERNELS=generic holds here too. */
static const rowkern *
rowkern_get(void)
{
	static const rowkern generic = { scores_generic, softmax_generic, mix_generic, widen_generic };
#if defined(__x86_64__)
	static const rowkern avx2 = { scores_avx2, softmax_avx2, mix_avx2, widen_avx2 };
	if (sa_kernels_path() >= SA_KERNELS_AVX2)
		return &avx2;
#endif
	return &generic;
}

/* Scratch of map_head, in doubles: Q [r][dh], K and V [C][dh], sc [r][C],
 * S [r][dh], inv [r]. */
static size_t
scratch_size(const sa_adapter *a)
{
	size_t r = (size_t)a->rank, C = (size_t)a->chunk, dh = (size_t)a->d_head;

	return r * dh + 2 * C * dh + r * C + r * dh + r;
}

/*
 * One chunk of c tokens, one KV head:
 *   Q  [r][dh]            learned queries of the head
 *   g  [dh], b [r]        gate weights and biases of the head
 *   K, V [c][dh]          the chunk's keys and values for this head
 *   h  [r][dh], P [r]     state: h = a*h + S, P = P*a
 *   sc [r][c], S [r][dh], inv [r]   scratch
 * S[i] = softmax_t(Q[i].K[t] / sqrt(dh)) V,  a[i] = sigmoid(g.S[i] + b[i]).
 */
static void
chunk_head(const rowkern *kern, const double *Q, const float *g, const float *b,
    const double *K, const double *V, int c, int r, int dh, double *h, double *P,
    double *sc, double *S, double *inv)
{
	double scale = 1.0 / sqrt((double)dh);

	kern->scores(Q, K, r, c, dh, sc);
	/* Unnormalised weights into the mix, then one division per row. */
	for (int i = 0; i < r; i++)
		inv[i] = 1.0 / kern->softmax(sc + (size_t)i * c, c, scale);
	kern->mix(sc, V, r, c, dh, S);
	for (int i = 0; i < r; i++) {
		double *Si = S + (size_t)i * dh, *hi = h + (size_t)i * dh, z = b[i], a;

		for (int j = 0; j < dh; j++)
			Si[j] *= inv[i];
		for (int j = 0; j < dh; j++)
			z += g[j] * Si[j];
		if (z >= 0) {
			a = 1.0 / (1.0 + exp_neg(-z));
		} else {
			a = exp_neg(z);
			a = a / (1.0 + a);
		}
		for (int j = 0; j < dh; j++)
			hi[j] = a * hi[j] + Si[j];
		P[i] *= a;
	}
}

/*
 * Head hd of matrix (layer, mat) over a segment of n tokens:
 *   k, v [n][Hk*dh], h [r][dh] and P [r] of the head.
 * Chunks of C tokens from the segment's start, the last one shorter, in order.
 * scratch: scratch_size(a) doubles.
 */
static void
map_head(const rowkern *kern, const sa_adapter *a, const sa_adapter_mat *am, int hd,
    const float *k, const float *v, int n, double *h, double *P, double *scratch)
{
	int Hk = a->n_head_kv, dh = a->d_head, r = a->rank, C = a->chunk, ld = Hk * dh;
	const float *Qf = am->Q + (size_t)hd * r * dh;
	const float *g = am->g + (size_t)hd * dh;
	const float *b = am->b + (size_t)hd * r;
	double *Q = scratch, *K = Q + (size_t)r * dh, *V = K + (size_t)C * dh;
	double *sc = V + (size_t)C * dh, *S = sc + (size_t)r * C, *inv = S + (size_t)r * dh;

	kern->widen(Qf, Q, r * dh);
	for (int t0 = 0; t0 < n; t0 += C) {
		int c = n - t0 < C ? n - t0 : C;
		for (int t = 0; t < c; t++) {
			size_t at = (size_t)(t0 + t) * ld + (size_t)hd * dh;
			kern->widen(k + at, K + (size_t)t * dh, dh);
			kern->widen(v + at, V + (size_t)t * dh, dh);
		}
		chunk_head(kern, Q, g, b, K, V, c, r, dh, h, P, sc, S, inv);
	}
}

/*
 * A segment of n tokens for matrix (layer, mat):
 *   k, v [n][Hk*dh], h [Hk][r][dh], P [Hk][r]
 * Heads are independent; one after the other here.
 */
int
sa_context_map(const sa_adapter *a, int layer, int mat, const float *k,
    const float *v, int n, double *h, double *P)
{
	const rowkern *kern = rowkern_get();
	int Hk = a->n_head_kv, dh = a->d_head, r = a->rank;
	double *scratch;

	if (layer < 0 || layer >= a->n_layer || mat < 0 || mat >= SA_NMAT ||
	    !sa_adapted(a->mats, mat))
		return sa_fail(SA_EINTERNAL, "context map: layer %d %s is not adapted",
		    layer, mat >= 0 && mat < SA_NMAT ? sa_mat_name(mat) : "?");
	if (!(scratch = sa_malloc(scratch_size(a) * sizeof *scratch)))
		return SA_EINTERNAL;
	for (int hd = 0; hd < Hk; hd++)
		map_head(kern, a, SA_ADAPTER_MAT(a, layer, mat), hd, k, v, n,
		    h + (size_t)hd * r * dh, P + (size_t)hd * r, scratch);
	free(scratch);
	return SA_OK;
}

/* ------------------------------------------------------------------ encoder */

/* One layer's work for the pool: a chunk of the job is one (matrix, head)
 * pair, run whole by one thread, so which thread runs it changes nothing. */
typedef struct layer_job {
	sa_encoder *e;
	int layer, n;
	int rc;                    /* LSQ: a failure of a head (out of memory) */
	int mat[SA_NMAT];          /* adapted matrices of the layer */
	const float *k, *v;        /* LSQ: k the memory's keys, the layer's or the input */
	double *scratch;           /* [threads][scratch_size] */
} layer_job;

/*
 * The state's blocks and their sizes in doubles: one per adapted (l, m)
 * for the pool kind, h [Hk][r][dh] and P [Hk][r]; one per layer for the
 * memory, G [Hk][dh][dk] and S [Hk][dk][dk].
 */
static void
block_sizes(const sa_adapter *a, size_t *hs, size_t *ps)
{
	size_t Hk = a->n_head_kv, dh = a->d_head, dk = a->d_key;

	*hs = a->mapping == SA_MAPPING_LSQ ? Hk * dh * dk : Hk * a->rank * dh;
	*ps = a->mapping == SA_MAPPING_LSQ ? Hk * dk * dk : Hk * a->rank;
}

/* Block p's floats in the delta, (l, m)'s or layer l's. */
static float *
delta_block(sa_delta *d, const sa_adapter *a, int l, int m, int state)
{
	if (a->mapping == SA_MAPPING_LSQ)
		return state ? sa_delta_G(d, l) : sa_delta_S(d, l);
	return state ? sa_delta_h(d, l, m) : sa_delta_P(d, l, m);
}

/* LSQ: a chunk is one head's memory of the layer. */
static void
memory_task(void *arg, int ith, int item, int n_items)
{
	layer_job *job = arg;
	const sa_adapter *a = job->e->a;
	sa_memory_params mp = sa_adapter_memory_params(a, job->layer);
	size_t hs, ps;
	int rc;

	(void)ith;
	(void)n_items;
	block_sizes(a, &hs, &ps);
	rc = sa_memory_write_head(&mp, item, job->k, job->v, job->n,
	    job->e->h + job->layer * hs + (size_t)item * a->d_head * a->d_key,
	    job->e->P + job->layer * ps + (size_t)item * a->d_key * a->d_key);
	if (rc != SA_OK)
		job->rc = rc;
}

static void
layer_task(void *arg, int ith, int item, int n_items)
{
	layer_job *job = arg;
	const sa_adapter *a = job->e->a;
	int Hk = a->n_head_kv, r = a->rank, dh = a->d_head;
	int m = job->mat[item / Hk], hd = item % Hk;
	int p = job->e->pair[(size_t)job->layer * SA_NMAT + m];
	double *scratch = job->scratch + (size_t)ith * scratch_size(a);

	(void)n_items;
	map_head(job->e->kern, a, SA_ADAPTER_MAT(a, job->layer, m), hd, job->k, job->v,
	    job->n, job->e->h + (size_t)p * Hk * r * dh + (size_t)hd * r * dh,
	    job->e->P + (size_t)p * Hk * r + (size_t)hd * r, scratch);
}

static void
encode_hook(void *ctx, int layer, int n, const float *k, const float *v)
{
	sa_encoder *e = ctx;
	const sa_adapter *a = e->a;
	layer_job job = { .e = e, .layer = layer, .n = n, .k = k, .v = v };
	int n_mats = 0;

	if (e->rc != SA_OK)
		return;
	/* The forward pass hands over the whole segment at once; chunks are
	 * cut from the segment's start, so a partial call would misplace them. */
	if (n != e->seg_n || layer < 0 || layer >= a->n_layer) {
		e->rc = sa_fail(SA_EINTERNAL, "encoder: layer %d hook got %d tokens, expected %d",
		    layer, n, e->seg_n);
		return;
	}
	if (e->key_mat >= 0) {
		/* the values wait for the input, which comes later in the layer */
		memcpy(e->V, v, (size_t)n * a->n_head_kv * a->d_head * sizeof *e->V);
		e->x_rows = 0;
		return;
	}
	if (a->mapping == SA_MAPPING_LSQ) {
		sa_pool_run_chunks(memory_task, &job, a->n_head_kv);
		e->rc = job.rc;
		return;
	}
	for (int m = 0; m < SA_NMAT; m++)
		if (e->pair[(size_t)layer * SA_NMAT + m] >= 0)
			job.mat[n_mats++] = m;
	if (n_mats == 0)
		return;
	if (!(job.scratch = sa_malloc((size_t)sa_get_threads() * scratch_size(a) *
	    sizeof *job.scratch))) {
		e->rc = SA_EINTERNAL;
		return;
	}
	sa_pool_run_chunks(layer_task, &job, n_mats * a->n_head_kv);
	free(job.scratch);
}

/* Rows i0.. of the key matrix's input of a layer; the memory writes once
 * the segment's rows are all in. */
static void
input_hook(void *ctx, int layer, int i0, int n, const float *x)
{
	sa_encoder *e = ctx;
	const sa_adapter *a = e->a;
	size_t d_in = (size_t)SA_ADAPTER_MAT(a, layer, e->key_mat)->d_in;
	layer_job job = { .e = e, .layer = layer, .n = e->seg_n, .k = e->X, .v = e->V };

	if (e->rc != SA_OK)
		return;
	if (i0 != e->x_rows || i0 + n > e->seg_n) {
		e->rc = sa_fail(SA_EINTERNAL, "encoder: layer %d input rows %d..%d, expected from %d of %d",
		    layer, i0, i0 + n, e->x_rows, e->seg_n);
		return;
	}
	memcpy(e->X + (size_t)i0 * d_in, x, (size_t)n * d_in * sizeof *e->X);
	if ((e->x_rows += n) < e->seg_n)
		return;
	sa_pool_run_chunks(memory_task, &job, a->n_head_kv);
	e->rc = job.rc;
	e->x_layers++;
}

int
sa_encoder_new(sa_encoder **out, sa_model *model, const sa_adapter *a, const sa_delta *start)
{
	sa_encoder *e;
	size_t hs, ps;
	int rc, n_used = 0;

	block_sizes(a, &hs, &ps);
	*out = NULL;
	if ((rc = sa_binding_check(model, a, start, "the delta to continue")) != SA_OK)
		return rc;
	/* The state is defined over the frozen base: a delta already applied
	 * would feed back into its own keys and values. */
	if (model->merged || model->side)
		return sa_fail(SA_EINTERNAL, "encoder: the model has a delta applied");
	if (!(e = sa_calloc(1, sizeof *e)))
		return SA_EINTERNAL;
	e->model = model;
	e->a = a;
	e->kern = rowkern_get();
	e->key_mat = sa_adapter_key_mat(a);
	if (!(e->pair = sa_malloc((size_t)a->n_layer * SA_NMAT * sizeof *e->pair))) {
		rc = SA_EINTERNAL;
		goto fail;
	}
	for (int l = 0; l < a->n_layer; l++)
		for (int m = 0; m < SA_NMAT; m++)
			e->pair[(size_t)l * SA_NMAT + m] = a->mapping == SA_MAPPING_LSQ ? (m == 0 ? n_used++ : -1)
			    : sa_adapted(a->mats, m) ? n_used++ : -1;
	rc = start ? sa_delta_clone(&e->delta, start) : sa_delta_new(&e->delta, a);
	if (rc != SA_OK)
		goto fail;
	if (!(e->h = sa_malloc((size_t)n_used * hs * sizeof *e->h)) ||
	    !(e->P = sa_malloc((size_t)n_used * ps * sizeof *e->P))) {
		rc = SA_EINTERNAL;
		goto fail;
	}
	for (int l = 0; l < a->n_layer; l++) {
		for (int m = 0; m < SA_NMAT; m++) {
			int p = e->pair[(size_t)l * SA_NMAT + m];
			const float *dh, *dP;
			if (p < 0)
				continue;
			dh = delta_block(e->delta, a, l, m, 1);
			dP = delta_block(e->delta, a, l, m, 0);
			for (size_t i = 0; i < hs; i++)
				e->h[(size_t)p * hs + i] = dh[i];
			for (size_t i = 0; i < ps; i++)
				e->P[(size_t)p * ps + i] = dP[i];
		}
	}
	*out = e;
	return SA_OK;
fail:
	sa_encoder_free(e);
	return rc;
}

void
sa_encoder_free(sa_encoder *e)
{
	if (!e)
		return;
	sa_kvcache_free(e->st);
	sa_delta_free(e->delta);
	free(e->X);
	free(e->V);
	free(e->h);
	free(e->P);
	free(e->pair);
	free(e);
}

/* Room for n rows of a layer's input and values. */
static int
grow_rows(sa_encoder *e, int n)
{
	const sa_adapter *a = e->a;
	size_t d_in = 0;

	for (int l = 0; l < a->n_layer; l++)
		if ((size_t)SA_ADAPTER_MAT(a, l, e->key_mat)->d_in > d_in)
			d_in = SA_ADAPTER_MAT(a, l, e->key_mat)->d_in;
	free(e->X);
	free(e->V);
	e->X = e->V = NULL;
	e->cap = 0;
	if (!(e->X = sa_malloc((size_t)n * d_in * sizeof *e->X)) ||
	    !(e->V = sa_malloc((size_t)n * a->n_head_kv * a->d_head * sizeof *e->V)))
		return SA_EINTERNAL;
	e->cap = n;
	return SA_OK;
}

int
sa_encoder_feed(sa_encoder *e, const int *toks, int n, int n_demos)
{
	int rc;

	if (n <= 0)
		return SA_OK;
	/* The cache is sized for the longest segment so far, not the model's
	 * context, which may be far longer than any segment fed. */
	if (!e->st || sa_kvcache_ctx(e->st) < n) {
		sa_kvcache_free(e->st);
		e->st = NULL;
		if ((rc = sa_kvcache_new(&e->st, e->model, n)) != SA_OK)
			return rc;
	}
	if (e->key_mat >= 0 && e->cap < n && (rc = grow_rows(e, n)) != SA_OK)
		return rc;
	sa_kvcache_truncate(e->st, 0);
	sa_kvcache_set_hook(e->st, encode_hook, e);
	if (e->key_mat >= 0)
		sa_kvcache_set_input_hook(e->st, e->key_mat, input_hook, e);
	e->seg_n = n;
	e->rc = SA_OK;
	e->x_layers = 0;
	rc = sa_forward(e->st, toks, n, NULL, 0);
	sa_kvcache_set_hook(e->st, NULL, NULL);
	sa_kvcache_set_input_hook(e->st, 0, NULL, NULL);
	if (rc == SA_OK)
		rc = e->rc;
	if (rc == SA_OK && e->key_mat >= 0 && e->x_layers != e->a->n_layer)
		rc = sa_fail(SA_EINTERNAL, "encoder: the input of %d of %d layers came", e->x_layers,
		    e->a->n_layer);
	if (rc != SA_OK)
		return rc;
	e->delta->n_tokens += (uint64_t)n;
	e->delta->n_demos += (uint64_t)n_demos;
	return SA_OK;
}

sa_delta *
sa_encoder_delta(sa_encoder *e)
{
	const sa_adapter *a = e->a;
	size_t hs, ps;

	block_sizes(a, &hs, &ps);
	for (int l = 0; l < a->n_layer; l++) {
		for (int m = 0; m < SA_NMAT; m++) {
			int p = e->pair[(size_t)l * SA_NMAT + m];
			float *dh, *dP;
			if (p < 0)
				continue;
			dh = delta_block(e->delta, a, l, m, 1);
			dP = delta_block(e->delta, a, l, m, 0);
			for (size_t i = 0; i < hs; i++)
				dh[i] = (float)e->h[(size_t)p * hs + i];
			for (size_t i = 0; i < ps; i++)
				dP[i] = (float)e->P[(size_t)p * ps + i];
		}
	}
	return e->delta;
}

int
sa_encoder_add_source(sa_encoder *e, const char *name, uint64_t hash)
{
	sa_delta *d = e->delta;
	sa_source *s;
	char *copy;

	if (!(copy = strdup(name)))
		return sa_fail(SA_EINTERNAL, "out of memory");
	if (!(s = realloc(d->sources, (size_t)(d->n_sources + 1) * sizeof *s))) {
		free(copy);
		return sa_fail(SA_EINTERNAL, "out of memory");
	}
	d->sources = s;
	s[d->n_sources].name = copy;
	s[d->n_sources].hash = hash;
	d->n_sources++;
	return SA_OK;
}

int
sa_encoder_feed_segments(sa_encoder *e, const sa_segment *segs, int n, const char *source,
    sa_encode_fn step, void *ctx)
{
	sa_encode_step st = { source, NULL, 0, n, 0, 0 };
	int rc = SA_OK;

	for (int s = 0; s < n; s++)
		st.total += segs[s].n;
	for (; st.i < n; st.i++) {
		st.seg = &segs[st.i];
		if ((rc = sa_encoder_feed(e, st.seg->toks, st.seg->n, st.seg->n_demos)) != SA_OK)
			break;
		st.done += st.seg->n;
		if (step)
			step(ctx, &st);
	}
	return rc;
}

int
sa_encoder_feed_demos(sa_encoder *e, const sa_demos *d, int n_ctx, sa_encode_fn step, void *ctx)
{
	sa_segment *segs;
	int n, rc;

	if ((rc = sa_demos_segment(d, e->model->vocab, n_ctx, &segs, &n)) != SA_OK)
		return rc;
	if ((rc = sa_encoder_feed_segments(e, segs, n, d->source.name, step, ctx)) == SA_OK)
		rc = sa_encoder_add_source(e, d->source.name, d->source.hash);
	sa_segments_free(segs, n);
	return rc;
}
