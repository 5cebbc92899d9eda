/*
 * kernels_quant.c - dot products of weight rows of the block types with
 * inputs quantized once per input vector, in integers, as llama.cpp's
 * ggml_vec_dot_*_q8_K and *_q8_0 compute them.
 *
 * A K-quant row [n] (n/256 blocks) meets its input as Q8_K blocks (a float
 * scale, 256 int8, the sums of each 16); Q4_0 .. Q5_1 rows [n] (n/32
 * blocks) meet Q8_0 blocks.  Within a block the products of the weights'
 * integers by the input's int8 and their sums under the sub-block scales
 * are exact in int32; the block's scales (fp16 of the weights times the
 * input's) then weigh that sum in float, and the minimums or offsets of a
 * sub-block multiply the input's sum over it (bsums) instead of each value.
 * Results thus differ from the dequantized F32 dot product only in where
 * the scales are applied and in the order of the float sums; between
 * paths, only in the order of the float sums.
 *
 * A portable kernel dot_T_generic(row, x, nb) takes one input; rowsn runs
 * it for each input in turn.  A vector kernel dot_T_P(row, xs, g, nb, y,
 * ldy) takes g inputs (xs[0..g-1]) in one pass over the nb blocks of a
 * row, unpacking each block once for all of them, every input with
 * accumulators of its own filled in the same order whatever g is: it is
 * inlined with g a constant, and rowsn's inputs get the bits rows gives
 * them.
 */
#include <math.h>
#include <string.h>

#include "sa.h"
#include "kernels_impl.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define HAVE_X86 1
#endif

#define ALWAYS_INLINE static inline __attribute__((always_inline))

static float
h2f(uint16_t h)
{
	return sa_fp16_to_fp32(h);
}

/* -------------------------------------------------------------- portable */

/* Each block: the int32 sum under the sub-block scales, then in float
 * dx * dw * sum - dx * dmin * (minimums . the input's sums). */

/* Q4_K or Q5_K [nb] . Q8_K [nb]: 8 sub-blocks of 32, 6-bit scale and
 * minimum; Q5_K's fifth bit of weight l of sub-block j is bit j of qh[l] */
static float
dot_q45_k_generic(int q5, const void *row, const sa_block_q8_k *x, int64_t nb)
{
	size_t bb = q5 ? sizeof(sa_block_q5_k) : sizeof(sa_block_q4_k);
	float s = 0;

	for (int64_t i = 0; i < nb; i++) {
		const sa_block_q4_k *w = (const sa_block_q4_k *)((const char *)row + i * bb);
		const uint8_t *qh = q5 ? ((const sa_block_q5_k *)w)->qh : NULL;
		const uint8_t *qs = q5 ? ((const sa_block_q5_k *)w)->qs : w->qs;
		int32_t sum = 0, msum = 0;
		for (int j = 0; j < 8; j++) {
			const uint8_t *q = qs + j / 2 * 32;
			const int8_t *xq = x[i].qs + j * 32;
			int sc, m, shift = j % 2 * 4, t = 0;
			sa_k4_scale_min(w->scales, j, &sc, &m);
			for (int l = 0; l < 32; l++)
				t += ((q[l] >> shift & 0xf) | (qh ? (qh[l] >> j & 1) << 4 : 0)) * xq[l];
			sum += sc * t;
			msum += m * (x[i].bsums[2 * j] + x[i].bsums[2 * j + 1]);
		}
		s += x[i].d * h2f(w->d) * (float)sum - x[i].d * h2f(w->dmin) * (float)msum;
	}
	return s;
}

static float
dot_q4_k_generic(const void *row, const void *x, int64_t nb)
{
	return dot_q45_k_generic(0, row, x, nb);
}

static float
dot_q5_k_generic(const void *row, const void *x, int64_t nb)
{
	return dot_q45_k_generic(1, row, x, nb);
}

/* Q6_K [nb] . Q8_K [nb]: 16 sub-blocks of 16, int8 scales, q - 32 */
static float
dot_q6_k_generic(const void *row, const void *xv, int64_t nb)
{
	const sa_block_q6_k *w = row;
	const sa_block_q8_k *x = xv;
	float s = 0;

	for (int64_t i = 0; i < nb; i++) {
		int32_t sum = 0;
		for (int j = 0; j < 16; j++) {
			const uint8_t *ql = w[i].ql + j / 8 * 64 + j / 2 % 2 * 32 + j % 2 * 16;
			const uint8_t *qh = w[i].qh + j / 8 * 32 + j % 2 * 16;
			const int8_t *xq = x[i].qs + j * 16;
			int lo = j / 4 % 2 * 4, hi = 2 * (j / 2 % 4), t = 0;
			for (int l = 0; l < 16; l++)
				t += (((ql[l] >> lo & 0xf) | (qh[l] >> hi & 3) << 4) - 32) * xq[l];
			sum += w[i].scales[j] * t;
		}
		s += x[i].d * h2f(w[i].d) * (float)sum;
	}
	return s;
}

/* Q2_K or Q3_K [nb] . Q8_K [nb]: 16 sub-blocks of 16 weights of 2 bits,
 * Q2_K's with 4-bit scales and minimums, Q3_K's with a third bit (set:
 * the weight as it is, clear: less 4) and 6-bit scales - 32 */
static float
dot_q23_k_generic(int q3, const void *row, const sa_block_q8_k *x, int64_t nb)
{
	size_t bb = q3 ? sizeof(sa_block_q3_k) : sizeof(sa_block_q2_k);
	float s = 0;

	for (int64_t i = 0; i < nb; i++) {
		const char *b = (const char *)row + i * bb;
		const sa_block_q2_k *w2 = (const sa_block_q2_k *)b;
		const sa_block_q3_k *w3 = (const sa_block_q3_k *)b;
		const uint8_t *qs = q3 ? w3->qs : w2->qs;
		int32_t sum = 0, msum = 0;
		for (int j = 0; j < 16; j++) {
			const uint8_t *q = qs + j / 8 * 32 + j % 2 * 16;
			const int8_t *xq = x[i].qs + j * 16;
			int shift = 2 * (j / 2 % 4), t = 0;
			for (int l = 0; l < 16; l++)
				t += ((q[l] >> shift & 3) -
				    (q3 && !(w3->hmask[j % 2 * 16 + l] >> j / 2 & 1) ? 4 : 0)) * xq[l];
			sum += (q3 ? sa_q3_k_scale(w3->scales, j) : w2->scales[j] & 0xf) * t;
			if (!q3)
				msum += (w2->scales[j] >> 4) * x[i].bsums[j];
		}
		s += x[i].d * h2f(q3 ? w3->d : w2->d) * (float)sum -
		    (q3 ? 0 : x[i].d * h2f(w2->dmin) * (float)msum);
	}
	return s;
}

static float
dot_q2_k_generic(const void *row, const void *x, int64_t nb)
{
	return dot_q23_k_generic(0, row, x, nb);
}

static float
dot_q3_k_generic(const void *row, const void *x, int64_t nb)
{
	return dot_q23_k_generic(1, row, x, nb);
}

/* Where the fields of a block of Q4_0 .. Q5_1 are: its bytes, and the
 * offsets of the minimum m and the fifth bits qh (0 where it has none) and
 * of the nibbles qs (weights l and l + 16 in byte l); d at 0. */
struct q32_layout {
	size_t bytes, m, qh, qs;
};

static struct q32_layout
q32_layout(int type)
{
	size_t m = type == SA_TYPE_Q4_1 || type == SA_TYPE_Q5_1 ? 2 : 0;
	size_t qh = type == SA_TYPE_Q5_0 || type == SA_TYPE_Q5_1 ? 2 + m : 0;
	size_t qs = 2 + m + (qh ? 4 : 0);
	struct q32_layout l = { qs + 16, m, qh, qs };
	return l;
}

/* Q4_0, Q4_1, Q5_0 or Q5_1 [nb blocks of 32] . Q8_0 [nb]: dw * dx * sum
 * (q - 8 or 16) x, or with a minimum dw * dx * sum q x + m * dx * sum x */
static float
dot_q32_generic(int type, const void *row, const sa_block_q8_0 *x, int64_t nb)
{
	struct q32_layout lay = q32_layout(type);
	int off = lay.m ? 0 : lay.qh ? 16 : 8;
	float s = 0;

	for (int64_t i = 0; i < nb; i++) {
		const uint8_t *b = (const uint8_t *)row + i * lay.bytes;
		uint16_t d, m = 0;
		uint32_t h = 0;
		int32_t t = 0, xs = 0;
		memcpy(&d, b, 2);
		if (lay.m)
			memcpy(&m, b + lay.m, 2);
		if (lay.qh)
			h = b[lay.qh] | (uint32_t)b[lay.qh + 1] << 8 | (uint32_t)b[lay.qh + 2] << 16 |
			    (uint32_t)b[lay.qh + 3] << 24;
		for (int l = 0; l < 32; l++) {
			int q = (l < 16 ? b[lay.qs + l] & 0xf : b[lay.qs + l - 16] >> 4) | (h >> l & 1) << 4;
			t += q * x[i].qs[l];
			xs += x[i].qs[l];
		}
		float dx = h2f(x[i].d);
		if (lay.m)
			s += h2f(d) * dx * (float)t + h2f(m) * dx * (float)xs;
		else
			s += h2f(d) * dx * (float)(t - off * xs);
	}
	return s;
}

/* rows_T_generic and rowsn_T_generic from dot_T_generic: the inputs one
 * after the other, which gives each the same sums; BE weights a block. */
#define GENERIC_ROWS(T, BE) \
static void rows_##T##_generic(const void *w, size_t rb, int64_t n, const float *x, \
    const void *xq, float *y, int64_t nr) \
{ \
	for (int64_t r = 0; r < nr; r++) \
		y[r] = dot_##T##_generic((const char *)w + r * rb, xq, n / BE); \
} \
static void rowsn_##T##_generic(const void *w, size_t rb, int64_t n, int nx, const float *x, \
    size_t ldx, const void *xq, size_t ldxq, float *y, size_t ldy, int64_t nr) \
{ \
	for (int j = 0; j < nx; j++) \
		rows_##T##_generic(w, rb, n, NULL, (const char *)xq + j * ldxq, y + j * ldy, nr); \
}
#define Q32_GENERIC(T, TYPE) \
static float dot_##T##_generic(const void *row, const void *x, int64_t nb) \
{ \
	return dot_q32_generic(TYPE, row, x, nb); \
} \
GENERIC_ROWS(T, SA_QK)
Q32_GENERIC(q4_0, SA_TYPE_Q4_0)
Q32_GENERIC(q4_1, SA_TYPE_Q4_1)
Q32_GENERIC(q5_0, SA_TYPE_Q5_0)
Q32_GENERIC(q5_1, SA_TYPE_Q5_1)
GENERIC_ROWS(q2_k, SA_QK_K)
GENERIC_ROWS(q3_k, SA_QK_K)
GENERIC_ROWS(q4_k, SA_QK_K)
GENERIC_ROWS(q5_k, SA_QK_K)
GENERIC_ROWS(q6_k, SA_QK_K)

const sa_quant_rows sa_quant_generic[SA_QUANT_TYPES] = {
	[SA_TYPE_Q4_0] = { rows_q4_0_generic, rowsn_q4_0_generic },
	[SA_TYPE_Q4_1] = { rows_q4_1_generic, rowsn_q4_1_generic },
	[SA_TYPE_Q5_0] = { rows_q5_0_generic, rowsn_q5_0_generic },
	[SA_TYPE_Q5_1] = { rows_q5_1_generic, rowsn_q5_1_generic },
	[SA_TYPE_Q2_K] = { rows_q2_k_generic, rowsn_q2_k_generic },
	[SA_TYPE_Q3_K] = { rows_q3_k_generic, rowsn_q3_k_generic },
	[SA_TYPE_Q4_K] = { rows_q4_k_generic, rowsn_q4_k_generic },
	[SA_TYPE_Q5_K] = { rows_q5_k_generic, rowsn_q5_k_generic },
	[SA_TYPE_Q6_K] = { rows_q6_k_generic, rowsn_q6_k_generic },
};

/* ------------------------------------------------------------------ x86 */

#ifdef HAVE_X86
#define AVX2 __attribute__((target("avx2,fma,f16c")))
#define AVX2_INLINE AVX2 ALWAYS_INLINE
#define AVX512 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl")))
#define AVX512_INLINE AVX512 ALWAYS_INLINE
#define VNNI __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))
#define VNNI_INLINE VNNI ALWAYS_INLINE
/* the loops over inputs and parts of a block, unrolled: their arrays then
 * stay in registers */
#define UNROLL _Pragma("GCC unroll 8")

/* Inputs a pass, at most: the AVX-512 kernels of the K-quants take this
 * many (up to 8, the cases of VECTOR_ROWS), their accumulators still in
 * the 32 registers, the AVX2 ones 3 (16 registers). */
#define QUANT_GROUP 8

/* rows_T_P and rowsn_T_P from dot_T_P, which takes g inputs a pass over
 * a row: rowsn G at a time, each group over all the rows (the caller
 * passes as many as the cache holds); BE weights a block. */
#define VECTOR_ROWS(T, P, ATTR, G, BE) \
ATTR static void rows_##T##_##P(const void *w, size_t rb, int64_t n, const float *x, \
    const void *xq, float *y, int64_t nr) \
{ \
	const void *xs[1] = { xq }; \
	for (int64_t r = 0; r < nr; r++) \
		dot_##T##_##P((const char *)w + r * rb, xs, 1, n / BE, y + r, 0); \
} \
ATTR static void rowsn_##T##_##P(const void *w, size_t rb, int64_t n, int nx, const float *x, \
    size_t ldx, const void *xq, size_t ldxq, float *y, size_t ldy, int64_t nr) \
{ \
	for (int j0 = 0; j0 < nx; j0 += G) { \
		int g = nx - j0 < G ? nx - j0 : G; \
		const void *xs[G]; \
		for (int j = 0; j < g; j++) \
			xs[j] = (const char *)xq + (j0 + j) * ldxq; \
		for (int64_t r = 0; r < nr; r++) { \
			const char *row = (const char *)w + r * rb; \
			float *yj = y + j0 * ldy + r; \
			switch (g) { \
			case 1: dot_##T##_##P(row, xs, 1, n / BE, yj, ldy); break; \
			case 2: dot_##T##_##P(row, xs, 2, n / BE, yj, ldy); break; \
			case 3: dot_##T##_##P(row, xs, 3, n / BE, yj, ldy); break; \
			case 4: dot_##T##_##P(row, xs, 4 < G ? 4 : G, n / BE, yj, ldy); break; \
			case 5: dot_##T##_##P(row, xs, 5 < G ? 5 : G, n / BE, yj, ldy); break; \
			case 6: dot_##T##_##P(row, xs, 6 < G ? 6 : G, n / BE, yj, ldy); break; \
			case 7: dot_##T##_##P(row, xs, 7 < G ? 7 : G, n / BE, yj, ldy); break; \
			default: dot_##T##_##P(row, xs, G, n / BE, yj, ldy); break; \
			} \
		} \
	} \
}

/* the lines of a block of bb bytes at p, PREFETCH_AHEAD on */
ALWAYS_INLINE void
prefetch_block(const void *p, size_t bb)
{
	for (size_t o = 0; o < bb; o += 64)
		_mm_prefetch((const char *)p + PREFETCH_AHEAD + o, _MM_HINT_T0);
}

/* the sum of the 8 lanes, folded in halves */
AVX2_INLINE float
hsum8(__m256 v)
{
	__m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
	s = _mm_add_ps(s, _mm_movehl_ps(s, s));
	return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

/* The 8 scales of a Q4_K or Q5_K block, from their 12 bytes (the packing
 * of sa_k4_scale_min; the 4 bytes after them, of the same block, read and
 * dropped), as int16 in each 128 bits of *sc; its 8 minimums as int16 in
 * *mins, each twice, for the two sums of 16 of a sub-block. */
AVX2_INLINE void
k4_scales(const uint8_t *s12, __m128i *sc, __m256i *mins)
{
	__m128i v = _mm_loadu_si128((const __m128i *)s12);
	/* bytes: scales 0-3, 4-7, minimums 0-3, 4-7: low bits, then high */
	__m128i lo = _mm_shuffle_epi8(v, _mm_setr_epi8(0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 8, 9, 10, 11));
	__m128i hi = _mm_shuffle_epi8(v, _mm_setr_epi8(-1, -1, -1, -1, 0, 1, 2, 3, -1, -1, -1, -1, 4, 5, 6, 7));
	__m128i u = _mm_or_si128(_mm_and_si128(lo, _mm_setr_epi8(63, 63, 63, 63, 15, 15, 15, 15,
	    63, 63, 63, 63, 0, 0, 0, 0)), _mm_and_si128(_mm_srli_epi16(lo, 4),
	    _mm_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 15, 15, 15, 15)));
	u = _mm_or_si128(u, _mm_and_si128(_mm_srli_epi16(hi, 2), _mm_set1_epi8(0x30)));
	*sc = _mm_cvtepu8_epi16(u);
	*mins = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(u,
	    _mm_setr_epi8(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15)));
}

/* int16 lanes all holding int16 lane s of each 128 bits (for shuffle_epi8) */
#define PICK16(s) ((short)(((2 * (s) + 1) << 8) | 2 * (s)))

/* 16 in the bytes of b where bit `bit` is set: the fifth bit of Q5_K */
AVX2_INLINE __m256i
fifth_bit(__m256i b, int bit)
{
	__m256i m = _mm256_set1_epi8((char)(1 << bit));
	return _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(b, m), m), _mm256_set1_epi8(16));
}

/* The minimums' part of a Q4_K or Q5_K block for input block x:
 * acc += dx * -dmin * (mins [16] . the input's sums over each 16). */
AVX2_INLINE __m256
k4_mins(__m256 acc, __m256i mins, const sa_block_q8_k *x, float ndmin)
{
	__m256i bs = _mm256_loadu_si256((const __m256i *)x->bsums);
	return _mm256_fmadd_ps(_mm256_set1_ps(x->d * ndmin), _mm256_cvtepi32_ps(_mm256_madd_epi16(mins, bs)),
	    acc);
}

/*
 * Q4_K or Q5_K rows [nb blocks] . g Q8_K inputs [nb], AVX2: per block and
 * input, sub-blocks of 32 as 32 unsigned weights by 32 int8 (maddubs,
 * pairs of int16), weighed by their scale and summed in int32 (madd); the
 * 8 int32 lanes scaled by dx*dw into a float accumulator, the minimums'
 * part into another.
 */
AVX2_INLINE void
dot_q45_k_avx2(int q5, const void *row, const void *const *xs, int g, int64_t nb, float *y,
    size_t ldy)
{
	const __m256i m4 = _mm256_set1_epi8(0xf);
	size_t bb = q5 ? sizeof(sa_block_q5_k) : sizeof(sa_block_q4_k);
	__m256 acc[QUANT_GROUP], accm[QUANT_GROUP];

	UNROLL for (int j = 0; j < g; j++)
		acc[j] = accm[j] = _mm256_setzero_ps();
	for (int64_t i = 0; i < nb; i++) {
		const sa_block_q4_k *b = (const sa_block_q4_k *)((const char *)row + i * bb);
		const sa_block_q5_k *b5 = (const sa_block_q5_k *)b;
		const uint8_t *qs = q5 ? b5->qs : b->qs;
		__m256i hb = q5 ? _mm256_loadu_si256((const __m256i *)b5->qh) : _mm256_setzero_si256();
		__m256i mins, sum[QUANT_GROUP];
		__m128i sc8;
		k4_scales(b->scales, &sc8, &mins);
		__m256i sc = _mm256_broadcastsi128_si256(sc8);
		float dw = _cvtsh_ss(b->d), ndmin = -_cvtsh_ss(b->dmin);

		prefetch_block(b, bb);
		UNROLL for (int j = 0; j < g; j++)
			sum[j] = _mm256_setzero_si256();
		UNROLL for (int k = 0; k < 4; k++) {
			__m256i bits = _mm256_loadu_si256((const __m256i *)(qs + 32 * k));
			__m256i lo = _mm256_and_si256(bits, m4);
			__m256i hi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
			__m256i sl = _mm256_shuffle_epi8(sc, _mm256_set1_epi16(PICK16(2 * k)));
			__m256i sh = _mm256_shuffle_epi8(sc, _mm256_set1_epi16(PICK16(2 * k + 1)));
			if (q5) {
				lo = _mm256_or_si256(lo, fifth_bit(hb, 2 * k));
				hi = _mm256_or_si256(hi, fifth_bit(hb, 2 * k + 1));
			}
			UNROLL for (int j = 0; j < g; j++) {
				const int8_t *xq = ((const sa_block_q8_k *)xs[j])[i].qs + 64 * k;
				__m256i pl = _mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i *)xq));
				__m256i ph = _mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i *)(xq + 32)));
				sum[j] = _mm256_add_epi32(sum[j], _mm256_add_epi32(_mm256_madd_epi16(sl, pl),
				    _mm256_madd_epi16(sh, ph)));
			}
		}
		UNROLL for (int j = 0; j < g; j++) {
			const sa_block_q8_k *x = (const sa_block_q8_k *)xs[j] + i;
			accm[j] = k4_mins(accm[j], mins, x, ndmin);
			acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(x->d * dw), _mm256_cvtepi32_ps(sum[j]), acc[j]);
		}
	}
	UNROLL for (int j = 0; j < g; j++)
		y[j * ldy] = hsum8(acc[j]) + hsum8(accm[j]);
}

AVX2_INLINE void
dot_q4_k_avx2(const void *row, const void *const *xs, int g, int64_t nb, float *y, size_t ldy)
{
	dot_q45_k_avx2(0, row, xs, g, nb, y, ldy);
}

AVX2_INLINE void
dot_q5_k_avx2(const void *row, const void *const *xs, int g, int64_t nb, float *y, size_t ldy)
{
	dot_q45_k_avx2(1, row, xs, g, nb, y, ldy);
}

/* Of the 16 int8 scales of a Q2_K, Q3_K or Q6_K block, those of sub-blocks
 * s and s + 1 as int16, 8 lanes each. */
AVX2_INLINE __m256i
pick_scales(__m128i sc8, int s)
{
	const int64_t one = 0x0101010101010101;

	return _mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc8, _mm_set_epi64x(one * (s + 1), one * s)));
}

/* The 6-bit weights q of Q6_K as unsigned bytes; q - 32 is the weight, so
 * the block's sum less 32 * (scales . the input's sums over each 16). */
AVX2_INLINE __m256i
q6_offset(const sa_block_q8_k *x, __m256i sc16)
{
	__m256i bs = _mm256_loadu_si256((const __m256i *)x->bsums);
	return _mm256_slli_epi32(_mm256_madd_epi16(bs, sc16), 5);
}

/*
 * Q6_K rows [nb blocks] . g Q8_K inputs [nb], AVX2: per half block, the
 * 4 vectors of 32 weights, each two sub-blocks of 16 (one per 128 bits)
 * whose int8 scales multiply their maddubs pairs (madd).
 */
AVX2_INLINE void
dot_q6_k_avx2(const void *row, const void *const *xs, int g, int64_t nb, float *y, size_t ldy)
{
	const __m256i m4 = _mm256_set1_epi8(0xf), m2 = _mm256_set1_epi8(3);
	__m256 acc[QUANT_GROUP];

	UNROLL for (int j = 0; j < g; j++)
		acc[j] = _mm256_setzero_ps();
	for (int64_t i = 0; i < nb; i++) {
		const sa_block_q6_k *b = (const sa_block_q6_k *)row + i;
		__m128i sc8 = _mm_loadu_si128((const __m128i *)b->scales);
		__m256i sum[QUANT_GROUP];
		float dw = _cvtsh_ss(b->d);

		prefetch_block(b, sizeof *b);
		UNROLL for (int j = 0; j < g; j++)
			sum[j] = _mm256_setzero_si256();
		UNROLL for (int h = 0; h < 2; h++) {
			__m256i l0 = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * h));
			__m256i l1 = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * h + 32));
			__m256i hb = _mm256_loadu_si256((const __m256i *)(b->qh + 32 * h)), q[4];
			q[0] = _mm256_or_si256(_mm256_and_si256(l0, m4),
			    _mm256_slli_epi16(_mm256_and_si256(hb, m2), 4));
			q[1] = _mm256_or_si256(_mm256_and_si256(l1, m4),
			    _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2), m2), 4));
			q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
			    _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 4), m2), 4));
			q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
			    _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 6), m2), 4));
			UNROLL for (int v = 0; v < 4; v++) {
				int s = 8 * h + 2 * v;     /* sub-blocks s and s + 1 */
				__m256i scv = pick_scales(sc8, s);
				UNROLL for (int j = 0; j < g; j++) {
					const int8_t *xq = ((const sa_block_q8_k *)xs[j])[i].qs + 16 * s;
					__m256i p = _mm256_maddubs_epi16(q[v], _mm256_loadu_si256((const __m256i *)xq));
					sum[j] = _mm256_add_epi32(sum[j], _mm256_madd_epi16(scv, p));
				}
			}
		}
		UNROLL for (int j = 0; j < g; j++) {
			const sa_block_q8_k *x = (const sa_block_q8_k *)xs[j] + i;
			__m256i t = _mm256_sub_epi32(sum[j], q6_offset(x, _mm256_cvtepi8_epi16(sc8)));
			acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(x->d * dw), _mm256_cvtepi32_ps(t), acc[j]);
		}
	}
	UNROLL for (int j = 0; j < g; j++)
		y[j * ldy] = hsum8(acc[j]);
}

VECTOR_ROWS(q4_k, avx2, AVX2, 3, SA_QK_K)
VECTOR_ROWS(q5_k, avx2, AVX2, 3, SA_QK_K)
VECTOR_ROWS(q6_k, avx2, AVX2, 3, SA_QK_K)

/*
 * src [n] -> Q8_K blocks in buf and their values d * q in dst, the bits
 * of types.c's rounding (sa_row_from_f32 then sa_row_to_f32): per block of
 * 256, max the first value of largest magnitude, q = nearest even of
 * x * -127/max (at most 127), d = 1/(-127/max), and the sums of q per 16.
 * A block with an infinity or a NaN goes through types.c.
 */
AVX2 void
sa_round_q8_k_avx2(const float *src, float *dst, void *buf, int64_t n)
{
	const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
	const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
	sa_block_q8_k *b = buf;

	for (int64_t i = 0; i < n / SA_QK_K; i++, src += SA_QK_K, dst += SA_QK_K) {
		__m256 m = _mm256_setzero_ps(), nan = m;
		for (int k = 0; k < SA_QK_K; k += 8) {
			__m256 x = _mm256_loadu_ps(src + k);
			m = _mm256_max_ps(m, _mm256_and_ps(x, absmask));
			nan = _mm256_or_ps(nan, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
		}
		float amax = 0, a8[8];
		_mm256_storeu_ps(a8, m);
		for (int l = 0; l < 8; l++)
			if (a8[l] > amax)
				amax = a8[l];
		if (amax == INFINITY || _mm256_movemask_ps(nan)) {
			sa_row_from_f32(SA_TYPE_Q8_K, src, b + i, SA_QK_K);
			sa_row_to_f32(SA_TYPE_Q8_K, b + i, dst, SA_QK_K);
			continue;
		}
		if (amax == 0) {
			memset(&b[i], 0, sizeof b[i]);
			memset(dst, 0, SA_QK_K * sizeof *dst);
			continue;
		}
		int first = 0;
		for (int k = 0; k < SA_QK_K; k += 8) {
			__m256 e = _mm256_cmp_ps(_mm256_and_ps(_mm256_loadu_ps(src + k), absmask),
			    _mm256_set1_ps(amax), _CMP_EQ_OQ);
			int mask = _mm256_movemask_ps(e);
			if (mask) {
				first = k + __builtin_ctz((unsigned)mask);
				break;
			}
		}
		float iscale = -127.f / src[first];
		__m256 vs = _mm256_set1_ps(iscale);
		b[i].d = 1 / iscale;
		__m256 vd = _mm256_set1_ps(b[i].d);
		for (int k = 0; k < SA_QK_K; k += 32) {
			__m256i q[4];
			for (int l = 0; l < 4; l++) {
				q[l] = _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(vs,
				    _mm256_loadu_ps(src + k + 8 * l))), _mm256_set1_epi32(127));
				_mm256_storeu_ps(dst + k + 8 * l, _mm256_mul_ps(vd, _mm256_cvtepi32_ps(q[l])));
			}
			/* int32 -> int8, in order */
			__m256i p = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
			p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
			_mm256_storeu_si256((__m256i *)(b[i].qs + k), p);
			/* lane l: the sum of bytes 4l..4l+3; after two horizontal
			 * adds, lanes 0 and 4: the sums of the two 16 */
			__m256i t = _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, p), ones16);
			t = _mm256_hadd_epi32(t, t);
			t = _mm256_hadd_epi32(t, t);
			b[i].bsums[k / 16] = (int16_t)_mm256_extract_epi32(t, 0);
			b[i].bsums[k / 16 + 1] = (int16_t)_mm256_extract_epi32(t, 4);
		}
	}
}

/* Q3_K's 16 scales as int8, from their 12 bytes (sa_q3_k_scale's
 * packing): low nibbles of bytes 0..7, then their high nibbles, each
 * with 2 high bits from bytes 8..11, less 32. */
AVX2_INLINE __m128i
q3_scales(const uint8_t *s12)
{
	uint32_t t[3];

	memcpy(t, s12, 12);
	__m128i u = _mm_set_epi32((int)((t[1] >> 4 & 0x0f0f0f0f) | (t[2] >> 6 & 0x03030303) << 4),
	    (int)((t[0] >> 4 & 0x0f0f0f0f) | (t[2] >> 4 & 0x03030303) << 4),
	    (int)((t[1] & 0x0f0f0f0f) | (t[2] >> 2 & 0x03030303) << 4),
	    (int)((t[0] & 0x0f0f0f0f) | (t[2] & 0x03030303) << 4));
	return _mm_sub_epi8(u, _mm_set1_epi8(32));
}

/*
 * Q2_K or Q3_K rows [nb blocks] . g Q8_K inputs [nb], AVX2: 32 bytes of qs
 * hold 128 weights, 2 bits each at 4 shifts, each shift 32 consecutive
 * weights of two sub-blocks of 16 (one per 128 bits) weighed by their
 * scales.  Q2_K's 4-bit minimums meet the input's sums of 16; Q3_K's
 * weight q - 4 (third bit clear) or q is taken as q + 4 * bit (unsigned,
 * for maddubs), less 4 * (scales . the input's sums of 16).
 */
AVX2_INLINE void
dot_q23_k_avx2(int q3, const void *row, const void *const *xs, int g, int64_t nb, float *y,
    size_t ldy)
{
	const __m256i m2 = _mm256_set1_epi8(3), four = _mm256_set1_epi8(4);
	const __m128i m4 = _mm_set1_epi8(0xf);
	size_t bb = q3 ? sizeof(sa_block_q3_k) : sizeof(sa_block_q2_k);
	__m256 acc[QUANT_GROUP], accm[QUANT_GROUP];

	UNROLL for (int j = 0; j < g; j++)
		acc[j] = accm[j] = _mm256_setzero_ps();
	for (int64_t i = 0; i < nb; i++) {
		const char *blk = (const char *)row + i * bb;
		const sa_block_q2_k *b2 = (const sa_block_q2_k *)blk;
		const sa_block_q3_k *b3 = (const sa_block_q3_k *)blk;
		__m128i sm = q3 ? _mm_setzero_si128() : _mm_loadu_si128((const __m128i *)b2->scales);
		__m128i sc8 = q3 ? q3_scales(b3->scales) : _mm_and_si128(sm, m4);
		__m256i mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sm, 4), m4));
		__m256i hm = q3 ? _mm256_loadu_si256((const __m256i *)b3->hmask) : _mm256_setzero_si256();
		const uint8_t *qs = q3 ? b3->qs : b2->qs;
		__m256i sum[QUANT_GROUP];
		float dw = _cvtsh_ss(q3 ? b3->d : b2->d), ndmin = q3 ? 0 : -_cvtsh_ss(b2->dmin);

		prefetch_block(blk, bb);
		UNROLL for (int j = 0; j < g; j++)
			sum[j] = _mm256_setzero_si256();
		UNROLL for (int h = 0; h < 2; h++) {
			__m256i bits = _mm256_loadu_si256((const __m256i *)(qs + 32 * h));
			UNROLL for (int c = 0; c < 4; c++) {
				int s = 8 * h + 2 * c;     /* sub-blocks s and s + 1 */
				__m256i q = _mm256_and_si256(_mm256_srli_epi16(bits, 2 * c), m2);
				__m256i scv = pick_scales(sc8, s);
				if (q3) {
					__m256i bit = _mm256_set1_epi8((char)(1 << (4 * h + c)));
					q = _mm256_or_si256(q, _mm256_and_si256(_mm256_cmpeq_epi8(
					    _mm256_and_si256(hm, bit), bit), four));
				}
				UNROLL for (int j = 0; j < g; j++) {
					const int8_t *xq = ((const sa_block_q8_k *)xs[j])[i].qs + 16 * s;
					__m256i p = _mm256_maddubs_epi16(q, _mm256_loadu_si256((const __m256i *)xq));
					sum[j] = _mm256_add_epi32(sum[j], _mm256_madd_epi16(scv, p));
				}
			}
		}
		UNROLL for (int j = 0; j < g; j++) {
			const sa_block_q8_k *x = (const sa_block_q8_k *)xs[j] + i;
			__m256i bs = _mm256_loadu_si256((const __m256i *)x->bsums);
			if (q3)
				sum[j] = _mm256_sub_epi32(sum[j],
				    _mm256_slli_epi32(_mm256_madd_epi16(bs, _mm256_cvtepi8_epi16(sc8)), 2));
			else
				accm[j] = _mm256_fmadd_ps(_mm256_set1_ps(x->d * ndmin),
				    _mm256_cvtepi32_ps(_mm256_madd_epi16(mins, bs)), accm[j]);
			acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(x->d * dw), _mm256_cvtepi32_ps(sum[j]), acc[j]);
		}
	}
	UNROLL for (int j = 0; j < g; j++)
		y[j * ldy] = q3 ? hsum8(acc[j]) : hsum8(acc[j]) + hsum8(accm[j]);
}

AVX2_INLINE void
dot_q2_k_avx2(const void *row, const void *const *xs, int g, int64_t nb, float *y, size_t ldy)
{
	dot_q23_k_avx2(0, row, xs, g, nb, y, ldy);
}

AVX2_INLINE void
dot_q3_k_avx2(const void *row, const void *const *xs, int g, int64_t nb, float *y, size_t ldy)
{
	dot_q23_k_avx2(1, row, xs, g, nb, y, ldy);
}

VECTOR_ROWS(q2_k, avx2, AVX2, 3, SA_QK_K)
VECTOR_ROWS(q3_k, avx2, AVX2, 3, SA_QK_K)

/* The 32 integers of a block of Q4_0 .. Q5_1 as bytes in order: 16 bytes
 * of nibbles (weights l and l + 16), with Q5's fifth bits (bit l of qh
 * for weight l) as 16. */
AVX2_INLINE __m256i
q32_bytes(const uint8_t *qs, const uint8_t *qh)
{
	__m128i b = _mm_loadu_si128((const __m128i *)qs);
	__m256i q = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(b, 4), b), _mm256_set1_epi8(0xf));
	uint32_t h;

	if (!qh)
		return q;
	memcpy(&h, qh, 4);
	__m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)h),
	    _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0));
	const __m256i bit = _mm256_set1_epi64x((int64_t)0x8040201008040201);
	return _mm256_or_si256(q, _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit),
	    _mm256_set1_epi8(16)));
}

/*
 * Q4_0, Q4_1, Q5_0 or Q5_1 rows [nb blocks of 32] . g Q8_0 inputs [nb],
 * AVX2: per block and input, the 32 products in int32 lanes scaled by
 * dw*dx into a float accumulator.  Q4_0 and Q5_0 weights q - 8 or q - 16
 * are signed: their sign moves onto x for maddubs.  Q4_1 and Q5_1 add
 * m*dx times the input's sum.
 */
AVX2_INLINE void
dot_q32_avx2(int type, const void *row, const void *const *xs, int g, int64_t nb, float *y,
    size_t ldy)
{
	const __m256i ones = _mm256_set1_epi16(1), ones8 = _mm256_set1_epi8(1);
	struct q32_layout lay = q32_layout(type);
	int min = lay.m != 0;
	__m256 acc[QUANT_GROUP];

	UNROLL for (int j = 0; j < g; j++)
		acc[j] = _mm256_setzero_ps();
	for (int64_t i = 0; i < nb; i++) {
		const uint8_t *b = (const uint8_t *)row + i * lay.bytes;
		uint16_t d, m = 0;
		memcpy(&d, b, 2);
		if (min)
			memcpy(&m, b + lay.m, 2);
		__m256i q = q32_bytes(b + lay.qs, lay.qh ? b + lay.qh : NULL);
		float dw = _cvtsh_ss(d), mw = _cvtsh_ss(m);

		if (!min)
			q = _mm256_sub_epi8(q, _mm256_set1_epi8(lay.qh ? 16 : 8));
		__m256i aq = _mm256_sign_epi8(q, q);
		UNROLL for (int j = 0; j < g; j++) {
			const sa_block_q8_0 *x = (const sa_block_q8_0 *)xs[j] + i;
			__m256i xv = _mm256_loadu_si256((const __m256i *)x->qs);
			float dx = _cvtsh_ss(x->d);
			if (min) {
				__m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(q, xv), ones);
				__m256i sx = _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, xv), ones);
				acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(dw * dx), _mm256_cvtepi32_ps(p), acc[j]);
				acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(mw * dx), _mm256_cvtepi32_ps(sx), acc[j]);
			} else {
				__m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(aq, _mm256_sign_epi8(xv, q)), ones);
				acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(dw * dx), _mm256_cvtepi32_ps(p), acc[j]);
			}
		}
	}
	UNROLL for (int j = 0; j < g; j++)
		y[j * ldy] = hsum8(acc[j]);
}

#define Q32_KERNEL(T, TYPE) \
AVX2_INLINE void dot_##T##_avx2(const void *row, const void *const *xs, int g, int64_t nb, \
    float *y, size_t ldy) { dot_q32_avx2(TYPE, row, xs, g, nb, y, ldy); } \
VECTOR_ROWS(T, avx2, AVX2, 3, SA_QK)
Q32_KERNEL(q4_0, SA_TYPE_Q4_0)
Q32_KERNEL(q4_1, SA_TYPE_Q4_1)
Q32_KERNEL(q5_0, SA_TYPE_Q5_0)
Q32_KERNEL(q5_1, SA_TYPE_Q5_1)

/*
 * AVX-512: the same sums on 64 weights a vector, two sub-blocks of 32
 * (Q4_K, Q5_K) or four of 16 (Q6_K) side by side, two such vectors at a
 * time: dot2 adds to the int32 sums acc the products of weights qa and qb
 * (unsigned bytes) with inputs xa and xb, each under its sub-block's
 * scale.  Without VNNI as maddubs' int16 pairs times the scales sca and
 * scb (VPMADDWD); with it as sums of 4 (VPDPBUSD, below 2^15 for 6-bit
 * weights), packed to int16 and times the scales laid out as the packing
 * leaves them, scp (VPDPWSSD): the same integers either way.
 */
typedef __m512i (*dot2_fn)(__m512i acc, __m512i qa, __m512i xa, __m512i qb, __m512i xb,
    __m512i sca, __m512i scb, __m512i scp);

AVX512_INLINE __m512i
dot2_bw(__m512i acc, __m512i qa, __m512i xa, __m512i qb, __m512i xb, __m512i sca, __m512i scb,
    __m512i scp)
{
	acc = _mm512_add_epi32(acc, _mm512_madd_epi16(sca, _mm512_maddubs_epi16(qa, xa)));
	return _mm512_add_epi32(acc, _mm512_madd_epi16(scb, _mm512_maddubs_epi16(qb, xb)));
}

VNNI_INLINE __m512i
dot2_vnni(__m512i acc, __m512i qa, __m512i xa, __m512i qb, __m512i xb, __m512i sca, __m512i scb,
    __m512i scp)
{
	__m512i z = _mm512_setzero_si512();
	__m512i p = _mm512_packs_epi32(_mm512_dpbusd_epi32(z, qa, xa), _mm512_dpbusd_epi32(z, qb, xb));
	return _mm512_dpwssd_epi32(acc, scp, p);
}

/* 4 int16 lanes all holding int16 lane s (of each 128 bits, for
 * shuffle_epi8) */
#define PICK64(s) ((int64_t)((uint16_t)PICK16(s) * 0x0001000100010001ull))

/* a in the low 256 bits, b in the high */
AVX512_INLINE __m512i
join256(__m256i a, __m256i b)
{
	return _mm512_inserti64x4(_mm512_castsi256_si512(a), b, 1);
}

/* Q4_K or Q5_K rows [nb] . g Q8_K inputs [nb], AVX-512: 64 bytes of qs
 * hold 4 sub-blocks, low nibbles [s | s+2], high [s+1 | s+3]; regrouped
 * [s | s+1] and [s+2 | s+3] they meet 64 consecutive input values. */
AVX512_INLINE void
dot_q45_k_512(dot2_fn dot2, int q5, const void *row, const void *const *xs, int g, int64_t nb,
    float *y, size_t ldy)
{
	const __m512i m4 = _mm512_set1_epi8(0xf), sixteen = _mm512_set1_epi8(16);
	size_t bb = q5 ? sizeof(sa_block_q5_k) : sizeof(sa_block_q4_k);
	__m512 acc[QUANT_GROUP];
	__m256 accm[QUANT_GROUP];

	UNROLL for (int j = 0; j < g; j++) {
		acc[j] = _mm512_setzero_ps();
		accm[j] = _mm256_setzero_ps();
	}
	for (int64_t i = 0; i < nb; i++) {
		const sa_block_q4_k *b = (const sa_block_q4_k *)((const char *)row + i * bb);
		const sa_block_q5_k *b5 = (const sa_block_q5_k *)b;
		const uint8_t *qs = q5 ? b5->qs : b->qs;
		__m512i hb = q5 ? _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)b5->qh)) :
		    _mm512_setzero_si512();
		__m256i mins;
		__m128i sc8;
		k4_scales(b->scales, &sc8, &mins);
		__m512i sc = _mm512_broadcast_i32x4(sc8), sum[QUANT_GROUP];
		float dw = _cvtsh_ss(b->d), ndmin = -_cvtsh_ss(b->dmin);

		prefetch_block(b, bb);
		UNROLL for (int j = 0; j < g; j++)
			sum[j] = _mm512_setzero_si512();
		UNROLL for (int h = 0; h < 2; h++) {
			__m512i bits = _mm512_loadu_si512(qs + 64 * h);
			__m512i lo = _mm512_and_si512(bits, m4);
			__m512i hi = _mm512_and_si512(_mm512_srli_epi16(bits, 4), m4);
			__m512i q[2] = { _mm512_shuffle_i64x2(lo, hi, 0x44), _mm512_shuffle_i64x2(lo, hi, 0xee) };
			__m512i scv[2];
			UNROLL for (int v = 0; v < 2; v++) {
				int s = 4 * h + 2 * v;     /* sub-blocks s and s + 1 */
				scv[v] = _mm512_shuffle_epi8(sc, join256(_mm256_set1_epi16(PICK16(s)),
				    _mm256_set1_epi16(PICK16(s + 1))));
				if (q5) {
					__m512i m = join256(_mm256_set1_epi8((char)(1 << s)),
					    _mm256_set1_epi8((char)(1 << (s + 1))));
					q[v] = _mm512_or_si512(q[v],
					    _mm512_maskz_mov_epi8(_mm512_test_epi8_mask(hb, m), sixteen));
				}
			}
			/* the packing's 128-bit lanes: sub-blocks 4h and 4h+2,
			 * twice, then 4h+1 and 4h+3 twice */
			__m512i scp = _mm512_shuffle_epi8(sc, _mm512_set_epi64(PICK64(4 * h + 3),
			    PICK64(4 * h + 1), PICK64(4 * h + 3), PICK64(4 * h + 1), PICK64(4 * h + 2),
			    PICK64(4 * h), PICK64(4 * h + 2), PICK64(4 * h)));
			UNROLL for (int j = 0; j < g; j++) {
				const int8_t *xq = ((const sa_block_q8_k *)xs[j])[i].qs + 128 * h;
				sum[j] = dot2(sum[j], q[0], _mm512_loadu_si512(xq), q[1],
				    _mm512_loadu_si512(xq + 64), scv[0], scv[1], scp);
			}
		}
		UNROLL for (int j = 0; j < g; j++) {
			const sa_block_q8_k *x = (const sa_block_q8_k *)xs[j] + i;
			accm[j] = k4_mins(accm[j], mins, x, ndmin);
			acc[j] = _mm512_fmadd_ps(_mm512_set1_ps(x->d * dw), _mm512_cvtepi32_ps(sum[j]), acc[j]);
		}
	}
	UNROLL for (int j = 0; j < g; j++)
		y[j * ldy] = _mm512_reduce_add_ps(acc[j]) + hsum8(accm[j]);
}

/* Q6_K rows [nb] . g Q8_K inputs [nb], AVX-512: 64 bytes of ql give 64
 * consecutive weights in their low nibbles and the next 64 in their high
 * ones; qh's 32 bytes, in both halves, give each its two high bits. */
AVX512_INLINE void
dot_q6_k_512(dot2_fn dot2, const void *row, const void *const *xs, int g, int64_t nb, float *y,
    size_t ldy)
{
	const __m512i m4 = _mm512_set1_epi8(0xf);
	/* the high bits of weights 0..31 and 32..63 of a half block, and of
	 * 64..95 and 96..127, moved to bits 4-5 */
	const __m512i mlo = join256(_mm256_set1_epi8(3), _mm256_set1_epi8(12));
	const __m512i slo = join256(_mm256_set1_epi16(4), _mm256_set1_epi16(2));
	const __m512i mhi = join256(_mm256_set1_epi8(48), _mm256_set1_epi8((char)192));
	const __m512i shi = join256(_mm256_set1_epi16(0), _mm256_set1_epi16(2));
	/* int16 lane l: scale l/8, the sub-block of its 128 bits */
	const int64_t r = 0x0001000100010001;
	const __m512i quarter = _mm512_set_epi64(3 * r, 3 * r, 2 * r, 2 * r, r, r, 0, 0);
	/* the packing's 128-bit lane k: scales k and 4 + k, 4 lanes each */
	const __m512i packed = _mm512_set_epi64(7 * r, 3 * r, 6 * r, 2 * r, 5 * r, r, 4 * r, 0);
	__m512 acc[QUANT_GROUP];

	UNROLL for (int j = 0; j < g; j++)
		acc[j] = _mm512_setzero_ps();
	for (int64_t i = 0; i < nb; i++) {
		const sa_block_q6_k *b = (const sa_block_q6_k *)row + i;
		__m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)b->scales));
		__m512i sc = _mm512_castsi256_si512(sc16), sum[QUANT_GROUP];
		float dw = _cvtsh_ss(b->d);

		prefetch_block(b, sizeof *b);
		UNROLL for (int j = 0; j < g; j++)
			sum[j] = _mm512_setzero_si512();
		UNROLL for (int h = 0; h < 2; h++) {
			__m512i l = _mm512_loadu_si512(b->ql + 64 * h);
			__m512i hb = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(b->qh + 32 * h)));
			__m512i q[2] = {
				_mm512_or_si512(_mm512_and_si512(l, m4),
				    _mm512_sllv_epi16(_mm512_and_si512(hb, mlo), slo)),
				_mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(l, 4), m4),
				    _mm512_srlv_epi16(_mm512_and_si512(hb, mhi), shi)),
			};
			__m512i sca = _mm512_permutexvar_epi16(_mm512_add_epi16(quarter,
			    _mm512_set1_epi16((short)(8 * h))), sc);
			__m512i scb = _mm512_permutexvar_epi16(_mm512_add_epi16(quarter,
			    _mm512_set1_epi16((short)(8 * h + 4))), sc);
			__m512i scp = _mm512_permutexvar_epi16(_mm512_add_epi16(packed,
			    _mm512_set1_epi16((short)(8 * h))), sc);
			UNROLL for (int j = 0; j < g; j++) {
				const int8_t *xq = ((const sa_block_q8_k *)xs[j])[i].qs + 128 * h;
				sum[j] = dot2(sum[j], q[0], _mm512_loadu_si512(xq), q[1],
				    _mm512_loadu_si512(xq + 64), sca, scb, scp);
			}
		}
		UNROLL for (int j = 0; j < g; j++) {
			const sa_block_q8_k *x = (const sa_block_q8_k *)xs[j] + i;
			__m512i t = _mm512_sub_epi32(sum[j], _mm512_zextsi256_si512(q6_offset(x, sc16)));
			acc[j] = _mm512_fmadd_ps(_mm512_set1_ps(x->d * dw), _mm512_cvtepi32_ps(t), acc[j]);
		}
	}
	UNROLL for (int j = 0; j < g; j++)
		y[j * ldy] = _mm512_reduce_add_ps(acc[j]);
}

#define KQUANTS_512(P, INLINE, ATTR) \
INLINE void dot_q4_k_##P(const void *row, const void *const *xs, int g, int64_t nb, float *y, \
    size_t ldy) { dot_q45_k_512(dot2_##P, 0, row, xs, g, nb, y, ldy); } \
INLINE void dot_q5_k_##P(const void *row, const void *const *xs, int g, int64_t nb, float *y, \
    size_t ldy) { dot_q45_k_512(dot2_##P, 1, row, xs, g, nb, y, ldy); } \
INLINE void dot_q6_k_##P(const void *row, const void *const *xs, int g, int64_t nb, float *y, \
    size_t ldy) { dot_q6_k_512(dot2_##P, row, xs, g, nb, y, ldy); } \
VECTOR_ROWS(q4_k, P, ATTR, QUANT_GROUP, SA_QK_K) \
VECTOR_ROWS(q5_k, P, ATTR, QUANT_GROUP, SA_QK_K) \
VECTOR_ROWS(q6_k, P, ATTR, QUANT_GROUP, SA_QK_K)
KQUANTS_512(bw, AVX512_INLINE, AVX512)
KQUANTS_512(vnni, VNNI_INLINE, VNNI)

/* AVX-512 tables: their own Q4_K, Q5_K and Q6_K kernels, the AVX2 ones of
 * the other types */
#define QUANT_TABLE(P512) { \
	[SA_TYPE_Q4_0] = { rows_q4_0_avx2, rowsn_q4_0_avx2 }, \
	[SA_TYPE_Q4_1] = { rows_q4_1_avx2, rowsn_q4_1_avx2 }, \
	[SA_TYPE_Q5_0] = { rows_q5_0_avx2, rowsn_q5_0_avx2 }, \
	[SA_TYPE_Q5_1] = { rows_q5_1_avx2, rowsn_q5_1_avx2 }, \
	[SA_TYPE_Q2_K] = { rows_q2_k_avx2, rowsn_q2_k_avx2 }, \
	[SA_TYPE_Q3_K] = { rows_q3_k_avx2, rowsn_q3_k_avx2 }, \
	[SA_TYPE_Q4_K] = { rows_q4_k_##P512, rowsn_q4_k_##P512 }, \
	[SA_TYPE_Q5_K] = { rows_q5_k_##P512, rowsn_q5_k_##P512 }, \
	[SA_TYPE_Q6_K] = { rows_q6_k_##P512, rowsn_q6_k_##P512 }, \
}
const sa_quant_rows sa_quant_avx2[SA_QUANT_TYPES] = QUANT_TABLE(avx2);
const sa_quant_rows sa_quant_avx512[SA_QUANT_TYPES] = QUANT_TABLE(bw);
const sa_quant_rows sa_quant_vnni[SA_QUANT_TYPES] = QUANT_TABLE(vnni);
#endif /* HAVE_X86 */
