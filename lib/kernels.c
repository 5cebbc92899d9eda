/*
 * kernels.c - dot products over weight rows in F32, F16, BF16 and Q8_0,
 * the products of F16, Q8_0, Q4_K, Q5_K and Q6_K rows with many inputs
 * (prefill), and the conversions of rows to F32 for the sgemm path.  Rows
 * of the other block types (Q4_0 .. Q6_K) take the kernels of
 * kernels_quant.c, in integers against their input quantized once; where
 * a path has none, they are converted a few blocks at a time on the stack
 * and go through the F32 dot product.
 *
 * Each kernel exists as a portable version and as versions for wider vector
 * extensions (AVX2 with FMA and F16C; AVX-512 F, BW and VL, with VNNI where
 * the CPU has it), compiled with target attributes.  The first call reads
 * the CPU's feature bits (cpuid) and fills the one table of kernels of the
 * library: the widest path the CPU has, or a narrower one SA_KERNELS names.
 * A path lacking a kernel of its own takes the next narrower one's.  The
 * table holds the kernels of kernels_float.c too, whose bits are the same
 * on every path: its set for the path.
 *
 * The inputs of a row dot product are already rounded the way llama.cpp
 * rounds them (F16 weights see F16 activations, Q8_0 weights see Q8_0
 * activations, K-quants Q8_K ones), so the products of the fast kernels
 * equal those of the sgemm path; only the order of the sums differs, and
 * for the other block types where their scales are applied.
 */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "sa.h"
#include "expf_impl.h"
#include "kernels_impl.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <immintrin.h>
#define HAVE_X86 1
#endif

typedef sa_rows_fn rows_fn;
typedef sa_rowsn_fn rowsn_fn;
/* dst [nr][n] = rows as F32. */
typedef void deq_fn(const void *w, size_t row_bytes, int64_t n, float *dst, int64_t nr);
/* y[t*ldy + r] = row r of w (nr rows of n columns) . input t, for the nx
 * inputs packed in xp (sa_gemm_pack); sa_gemm_rows says how. */
typedef void gemm_fn(const void *w, size_t row_bytes, int64_t n, int64_t nr, const float *xp,
    int nx, float *y, size_t ldy);
/* The same for Q8_0 rows and inputs packed by sa_gemm_pack_q8_0. */
typedef void qgemm_fn(const void *w, size_t row_bytes, int64_t n, int64_t nr, const void *xp,
    int nx, float *y, size_t ldy);
/* The same for rows of a K-quant type and the inputs' Q8_K blocks. */
typedef void kgemm_fn(int type, const void *w, size_t row_bytes, int64_t n, int64_t nr,
    const void *xq, int nx, float *y, size_t ldy);

static struct kernels {
	const sa_float_kernels *f;   /* kernels_float.c's */
	rows_fn *rows_f32, *rows_f16, *rows_bf16, *rows_q8_0;
	rowsn_fn *rowsn_f32, *rowsn_f16, *rowsn_bf16, *rowsn_q8_0;
	deq_fn *deq_bf16;
	void (*fp16_to_fp32)(const uint16_t *, float *, int64_t);
	void (*fp32_to_fp16)(const float *, uint16_t *, int64_t);
	/* dst [n] = n weights of Q8_0 and Q4_0 .. Q6_K blocks as F32 */
	void (*blocks)(int type, const void *src, float *dst, int64_t n);
	void (*round_f16)(const float *, float *, void *, int64_t);
	void (*round_q8_0)(const float *, float *, void *, int64_t);
	void (*round_q8_k)(const float *, float *, void *, int64_t);
	float (*dot)(const float *, const float *, int64_t);
	rows_fn *dots;                  /* F32 rows, each sum dot's (sa_dot_rows) */
	void (*axpy)(float, const float *, float *, int64_t);
	float (*max)(const float *, int64_t);
	double (*exp_sum)(float *, const float *, int64_t, float);
	const sa_quant_rows *quant;     /* [type] rows of Q4_0 .. Q6_K, kernels_quant.c */
	gemm_fn *gemm_f16;              /* F16 rows against packed inputs */
	qgemm_fn *gemm_q8_0;            /* Q8_0 rows against packed Q8_0 inputs */
	kgemm_fn *gemm_k;               /* Q4_K, Q5_K, Q6_K rows against Q8_K inputs */
	void (*pack)(const float *, int, int64_t, float *);   /* sa_gemm_pack */
} K;

/* ------------------------------------------------------------ portable */

static float
dot_generic(const float *a, const float *b, int64_t n)
{
	float s[8] = {0};
	int64_t i = 0;
	for (; i + 8 <= n; i += 8)
		for (int j = 0; j < 8; j++)
			s[j] += a[i + j] * b[i + j];
	for (; i < n; i++)
		s[0] += a[i] * b[i];
	return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

static void
axpy_generic(float a, const float *x, float *y, int64_t n)
{
	for (int64_t i = 0; i < n; i++)
		y[i] += a * x[i];
}

static void
rows_f32_generic(const void *w, size_t rb, int64_t n, const float *x,
    const void *xq, float *y, int64_t nr)
{
	for (int64_t r = 0; r < nr; r++)
		y[r] = dot_generic((const float *)((const char *)w + r * rb), x, n);
}

/* F16 and BF16 rows in the lane order of dot_generic, so a row gives the
 * same sum as its F32 copy does. */
static void
rows_half_generic(float (*cvt)(uint16_t), const void *w, size_t rb, int64_t n,
    const float *x, float *y, int64_t nr)
{
	for (int64_t r = 0; r < nr; r++) {
		const uint16_t *row = (const uint16_t *)((const char *)w + r * rb);
		float s[8] = {0};
		int64_t i = 0;
		for (; i + 8 <= n; i += 8)
			for (int j = 0; j < 8; j++)
				s[j] += cvt(row[i + j]) * x[i + j];
		for (; i < n; i++)
			s[0] += cvt(row[i]) * x[i];
		y[r] = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
	}
}

static void
rows_f16_generic(const void *w, size_t rb, int64_t n, const float *x,
    const void *xq, float *y, int64_t nr)
{
	rows_half_generic(sa_fp16_to_fp32, w, rb, n, x, y, nr);
}

static void
rows_bf16_generic(const void *w, size_t rb, int64_t n, const float *x,
    const void *xq, float *y, int64_t nr)
{
	rows_half_generic(sa_bf16_to_fp32, w, rb, n, x, y, nr);
}

static void
rows_q8_0_generic(const void *w, size_t rb, int64_t n, const float *x,
    const void *xq, float *y, int64_t nr)
{
	const sa_block_q8_0 *bx = xq;
	int64_t nb = n / SA_QK8_0;
	for (int64_t r = 0; r < nr; r++) {
		const sa_block_q8_0 *bw = (const sa_block_q8_0 *)((const char *)w + r * rb);
		float s = 0;
		for (int64_t b = 0; b < nb; b++) {
			int32_t is = 0;
			for (int j = 0; j < SA_QK8_0; j++)
				is += bw[b].qs[j] * bx[b].qs[j];
			s += sa_fp16_to_fp32(bw[b].d) * sa_fp16_to_fp32(bx[b].d) * (float)is;
		}
		y[r] = s;
	}
}

/* Several inputs: one after the other, which gives the same sums. */
#define ROWSN_GENERIC(T) \
static void rowsn_##T##_generic(const void *w, size_t rb, int64_t n, int nx, const float *x, \
    size_t ldx, const void *xq, size_t ldxq, float *y, size_t ldy, int64_t nr) \
{ \
	for (int j = 0; j < nx; j++) \
		rows_##T##_generic(w, rb, n, x + j * ldx, \
		    xq ? (const char *)xq + j * ldxq : NULL, y + j * ldy, nr); \
}
ROWSN_GENERIC(f32)
ROWSN_GENERIC(f16)
ROWSN_GENERIC(bf16)
ROWSN_GENERIC(q8_0)

/* Through the type and back, with the conversions of types.c. */
static void
round_generic(int type, const float *src, float *dst, void *buf, int64_t n)
{
	sa_row_from_f32(type, src, buf, n);
	sa_row_to_f32(type, buf, dst, n);
}

static void
round_q8_0_generic(const float *src, float *dst, void *buf, int64_t n)
{
	round_generic(SA_TYPE_Q8_0, src, dst, buf, n);
}

static void
round_q8_k_generic(const float *src, float *dst, void *buf, int64_t n)
{
	round_generic(SA_TYPE_Q8_K, src, dst, buf, n);
}

static void
round_f16_generic(const float *src, float *dst, void *buf, int64_t n)
{
	round_generic(SA_TYPE_F16, src, dst, buf, n);
}

static void
deq_generic(int type, const void *w, size_t rb, int64_t n, float *dst, int64_t nr)
{
	for (int64_t r = 0; r < nr; r++)
		sa_row_to_f32(type, (const char *)w + r * rb, dst + r * n, n);
}

/* Input t, column c of inputs packed by sa_gemm_pack, n columns a row. */
static inline float
packed(const float *xp, int64_t n, int t, int64_t c)
{
	return xp[((size_t)(t / GEMM_LANES) * n + c) * GEMM_LANES + t % GEMM_LANES];
}

/* Each sum in the order of the columns, as the vector kernels add them
 * (their fused multiply-adds round as this does: the products of F16
 * values are exact in F32). */
static void
gemm_f16_generic(const void *w, size_t rb, int64_t n, int64_t nr, const float *xp, int nx,
    float *y, size_t ldy)
{
	for (int64_t r = 0; r < nr; r++) {
		const uint16_t *row = (const uint16_t *)((const char *)w + r * rb);
		for (int t = 0; t < nx; t++) {
			float s = 0;
			for (int64_t c = 0; c < n; c++)
				s += sa_fp16_to_fp32(row[c]) * packed(xp, n, t, c);
			y[t * ldy + r] = s;
		}
	}
}

static void
pack_generic(const float *x, int nx, int64_t n, float *xp)
{
	for (int p = 0; p < nx; p += GEMM_LANES)
		for (int64_t c = 0; c < n; c++, xp += GEMM_LANES)
			for (int t = 0; t < GEMM_LANES; t++)
				xp[t] = p + t < nx ? x[(size_t)(p + t) * n + c] : 0;
}

/* Input t of inputs packed by sa_gemm_pack_q8_0, nb blocks each: its
 * int8, then the blocks' scales, then -128 times the sums of their int8. */
static inline const int8_t *
q8p_qs(const void *xp, int64_t nb, int t)
{
	return (const int8_t *)xp + (size_t)t * Q8P_BYTES(nb);
}
static inline const float *
q8p_d(const void *xp, int64_t nb, int t)
{
	return (const float *)(q8p_qs(xp, nb, t) + nb * SA_QK8_0);
}
static inline const int32_t *
q8p_off(const void *xp, int64_t nb, int t)
{
	return (const int32_t *)(q8p_qs(xp, nb, t) + nb * (SA_QK8_0 + 4));
}

static void
pack_q8_0(const void *xq, size_t ldxq, int nx, int64_t n, void *xp)
{
	int64_t nb = n / SA_QK8_0;
	for (int t = 0; t < nx; t++) {
		const sa_block_q8_0 *b = (const sa_block_q8_0 *)((const char *)xq + t * ldxq);
		int8_t *qs = (int8_t *)q8p_qs(xp, nb, t);
		float *d = (float *)q8p_d(xp, nb, t);
		int32_t *off = (int32_t *)q8p_off(xp, nb, t);
		for (int64_t i = 0; i < nb; i++) {
			memcpy(qs + i * SA_QK8_0, b[i].qs, SA_QK8_0);
			d[i] = sa_fp16_to_fp32(b[i].d);
			off[i] = 0;
			for (int j = 0; j < SA_QK8_0; j++)
				off[i] -= 128 * b[i].qs[j];
		}
	}
}

/* Each sum block after block, dw*dx times the block's exact integer dot
 * added to it: the order of rows_q8_0_generic, and so its bits. */
static void
gemm_q8_0_generic(const void *w, size_t rb, int64_t n, int64_t nr, const void *xp, int nx,
    float *y, size_t ldy)
{
	int64_t nb = n / SA_QK8_0;
	for (int64_t r = 0; r < nr; r++) {
		const sa_block_q8_0 *bw = (const sa_block_q8_0 *)((const char *)w + r * rb);
		for (int t = 0; t < nx; t++) {
			const int8_t *qs = q8p_qs(xp, nb, t);
			const float *xd = q8p_d(xp, nb, t);
			float s = 0;
			for (int64_t b = 0; b < nb; b++) {
				int32_t is = 0;
				for (int j = 0; j < SA_QK8_0; j++)
					is += bw[b].qs[j] * qs[b * SA_QK8_0 + j];
				s += sa_fp16_to_fp32(bw[b].d) * xd[b] * (float)is;
			}
			y[t * ldy + r] = s;
		}
	}
}

/* The portable row kernel of the type, input after input. */
static void
gemm_k_generic(int type, const void *w, size_t rb, int64_t n, int64_t nr, const void *xq, int nx,
    float *y, size_t ldy)
{
	sa_quant_generic[type].rowsn(w, rb, n, nx, NULL, 0, xq, Q8K_BYTES(n / SA_QK_K), y, ldy, nr);
}

static void
deq_bf16_generic(const void *w, size_t rb, int64_t n, float *dst, int64_t nr)
{
	deq_generic(SA_TYPE_BF16, w, rb, n, dst, nr);
}

static void
fp16_to_fp32_generic(const uint16_t *src, float *dst, int64_t n)
{
	for (int64_t i = 0; i < n; i++)
		dst[i] = sa_fp16_to_fp32(src[i]);
}

static void
fp32_to_fp16_generic(const float *src, uint16_t *dst, int64_t n)
{
	for (int64_t i = 0; i < n; i++)
		dst[i] = sa_fp32_to_fp16(src[i]);
}

static float
max_generic(const float *x, int64_t n)
{
	float mx = x[0];
	for (int64_t i = 1; i < n; i++)
		if (x[i] > mx)
			mx = x[i];
	return mx;
}

static double
exp_sum_generic(float *y, const float *x, int64_t n, float mx)
{
	double p[8] = { 0 }, sum;
	int64_t i = 0;

	for (int64_t j = 0; j < n; j++)
		y[j] = expf_neg(x[j] - mx);
	for (; i + 8 <= n; i += 8)
		for (int l = 0; l < 8; l++)
			p[l] += y[i + l];
	sum = ((p[0] + p[4]) + (p[1] + p[5])) + ((p[2] + p[6]) + (p[3] + p[7]));
	for (; i < n; i++)
		sum += y[i];
	return sum;
}

/* ---------------------------------------------------------------- AVX2 */

#ifdef HAVE_X86
#define AVX2 __attribute__((target("avx2,fma,f16c")))

AVX2 static inline float
hsum8(__m256 v)
{
	__m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
	s = _mm_add_ps(s, _mm_movehl_ps(s, s));
	s = _mm_add_ss(s, _mm_movehdup_ps(s));
	return _mm_cvtss_f32(s);
}

/* 8 BF16 values -> 8 floats: bf16 is the high half of an fp32. */
AVX2 static inline __m256
load_bf16(const uint16_t *p)
{
	__m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
	return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

AVX2 static inline __m256
load_f16(const uint16_t *p)
{
	return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

AVX2 static float
dot_avx2(const float *a, const float *b, int64_t n)
{
	__m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
	int64_t i = 0;
	for (; i + 16 <= n; i += 16) {
		s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
		s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
	}
	for (; i + 8 <= n; i += 8)
		s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
	float s = hsum8(_mm256_add_ps(s0, s1));
	for (; i < n; i++)
		s += a[i] * b[i];
	return s;
}

/* Its rows sum in another order than dot_avx2: the dots one at a time. */
AVX2 static void
dots_avx2(const void *w, size_t rb, int64_t n, const float *x, const void *xq, float *y,
    int64_t nr)
{
	for (int64_t r = 0; r < nr; r++)
		y[r] = dot_avx2((const float *)((const char *)w + r * rb), x, n);
}

AVX2 static void
axpy_avx2(float a, const float *x, float *y, int64_t n)
{
	__m256 va = _mm256_set1_ps(a);
	int64_t i = 0;
	for (; i + 8 <= n; i += 8)
		_mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
	for (; i < n; i++)
		y[i] += a * x[i];
}

/*
 * Row dot products, written once for each vector width W (V holding L
 * floats): dot1 = row [n] . x [n].  Four independent accumulators over 4L
 * columns hide the FMA latency behind the loads; a row is read once, front
 * to back, which is what the hardware prefetcher likes.  ld converts L
 * weights from column i.  fold adds the columns past the last 4L (into the
 * first accumulator, then one at a time) and sums the four.
 *
 * Several inputs (rowsn): every pair of a row and an input gets dot1's
 * sums, from the same four accumulators filled in the same order and
 * folded the same way.  tile takes nt rows and g inputs over columns
 * c0..c1, their 4 nt g accumulators in registers (nt and g are constants
 * where it is inlined; 24 of AVX-512's 32 registers for 2 rows and 3
 * inputs or 16 for a row and 4, 12 of AVX2's 16 for a row and 3): each
 * weight vector is loaded and converted once for the g inputs, each input
 * vector loaded once for the nt rows.  Between calls the accumulators
 * wait in acc.
 */
typedef __m256 (*ld8_fn)(const void *, int64_t);
typedef float (*ld1_fn)(const void *, int64_t);

AVX2 static inline __m256 ld8_f32(const void *p, int64_t i) { return _mm256_loadu_ps((const float *)p + i); }
AVX2 static inline __m256 ld8_f16(const void *p, int64_t i) { return load_f16((const uint16_t *)p + i); }
AVX2 static inline __m256 ld8_bf16(const void *p, int64_t i) { return load_bf16((const uint16_t *)p + i); }
AVX2 static inline float ld1_f32(const void *p, int64_t i) { return ((const float *)p)[i]; }
AVX2 static inline float ld1_f16(const void *p, int64_t i) { return _cvtsh_ss(((const uint16_t *)p)[i]); }
AVX2 static inline float ld1_bf16(const void *p, int64_t i) { return sa_bf16_to_fp32(((const uint16_t *)p)[i]); }

#define ALWAYS_INLINE AVX2 static inline __attribute__((always_inline))

#define UNROLL _Pragma("GCC unroll 8")

/* the lines of n elements of es bytes from element i on, PREFETCH_AHEAD on */
static inline __attribute__((always_inline)) void
prefetch_step(const void *row, int64_t i, int es, int n)
{
	const char *p = (const char *)row + i * es + PREFETCH_AHEAD;
	for (int o = 0; o < n * es; o += 64)
		_mm_prefetch(p + o, _MM_HINT_T0);
}

/* rowsn's tiles, of TILE_ROWS rows (at most) and TILE_INPUTS inputs, and
 * its blocks of BLOCK_ROWS rows taken PANEL columns at a time: the panel
 * of 3 inputs, 24 KiB, stays in L1 (48 KiB on Zen 5, 32 KiB on others). */
#define TILE_ROWS 2
#define TILE_INPUTS 3
#define BLOCK_ROWS 32
#define PANEL 2048

#define ROW_DOTS(W, INLINE, V, L, LD, LOADU, FMADD, ADD, ZERO, HSUM) \
INLINE float \
fold_##W(LD ld, ld1_fn ld1, const char *row, const float *x, int64_t i, int64_t n, V s0, V s1, \
    V s2, V s3) \
{ \
	for (; i + L <= n; i += L) \
		s0 = FMADD(ld(row, i), LOADU(x + i), s0); \
	float s = HSUM(ADD(ADD(s0, s1), ADD(s2, s3))); \
	for (; i < n; i++) \
		s += ld1(row, i) * x[i]; \
	return s; \
} \
INLINE float \
dot1_##W(LD ld, ld1_fn ld1, int es, const void *row, const float *x, int64_t n) \
{ \
	V s0 = ZERO(), s1 = s0, s2 = s0, s3 = s0; \
	int64_t i = 0; \
	for (; i + 4 * L <= n; i += 4 * L) { \
		prefetch_step(row, i, es, 4 * L); \
		s0 = FMADD(ld(row, i), LOADU(x + i), s0); \
		s1 = FMADD(ld(row, i + L), LOADU(x + i + L), s1); \
		s2 = FMADD(ld(row, i + 2 * L), LOADU(x + i + 2 * L), s2); \
		s3 = FMADD(ld(row, i + 3 * L), LOADU(x + i + 3 * L), s3); \
	} \
	return fold_##W(ld, ld1, row, x, i, n, s0, s1, s2, s3); \
} \
/* \
 * y[j*ldy + t] = row t [n] . input j [n] (rows rb bytes apart, inputs ldx \
 * floats) for t < nt, j < g: columns c0..c1 (multiples of 4L up to n4) of \
 * the sums, those before from acc [nt][g][4].  The last panel (c1 = n4) \
 * folds them into y, the others leave them in acc.  pf: rows to prefetch \
 * at the columns read, line p0 of every ps bytes. \
 */ \
INLINE void \
tile_##W(LD ld, ld1_fn ld1, int es, const char *row, size_t rb, int nt, const float *x, \
    size_t ldx, int g, int64_t c0, int64_t c1, int64_t n4, int64_t n, const char *pf, int p0, \
    int ps, V (*acc)[ROWS_GROUP][4], float *y, size_t ldy) \
{ \
	V s[TILE_ROWS][ROWS_GROUP][4]; \
	UNROLL for (int t = 0; t < nt; t++) \
		UNROLL for (int j = 0; j < g; j++) \
			UNROLL for (int k = 0; k < 4; k++) \
				s[t][j][k] = c0 ? acc[t][j][k] : ZERO(); \
	for (int64_t i = c0; i < c1; i += 4 * L) { \
		UNROLL for (int t = 0; t < nt; t++) \
			for (int o = p0; o < 4 * L * es; o += ps) \
				_mm_prefetch(pf + t * rb + i * es + o, _MM_HINT_T2); \
		UNROLL for (int k = 0; k < 4; k++) { \
			V wv[TILE_ROWS]; \
			UNROLL for (int t = 0; t < nt; t++) \
				wv[t] = ld(row + t * rb, i + k * L); \
			UNROLL for (int j = 0; j < g; j++) { \
				V xv = LOADU(x + j * ldx + i + k * L); \
				/* in a register: the compiler would load it \
				 * again into each row's FMA */ \
				if (nt > 1) \
					__asm__("" : "+v"(xv)); \
				UNROLL for (int t = 0; t < nt; t++) \
					s[t][j][k] = FMADD(wv[t], xv, s[t][j][k]); \
			} \
		} \
	} \
	UNROLL for (int t = 0; t < nt; t++) \
		UNROLL for (int j = 0; j < g; j++) \
			if (c1 < n4) \
				UNROLL for (int k = 0; k < 4; k++) \
					acc[t][j][k] = s[t][j][k]; \
			else \
				y[j * ldy + t] = fold_##W(ld, ld1, row + t * rb, x + j * ldx, n4, n, \
				    s[t][j][0], s[t][j][1], s[t][j][2], s[t][j][3]); \
} \
INLINE void \
tiles_##W(LD ld, ld1_fn ld1, int es, const char *row, size_t rb, int nt, const float *x, \
    size_t ldx, int g, int64_t c0, int64_t c1, int64_t n4, int64_t n, const char *pf, int p0, \
    int ps, V (*acc)[ROWS_GROUP][4], float *y, size_t ldy) \
{ \
	switch (g) { \
	case 1: tile_##W(ld, ld1, es, row, rb, nt, x, ldx, 1, c0, c1, n4, n, pf, p0, ps, acc, y, ldy); break; \
	case 2: tile_##W(ld, ld1, es, row, rb, nt, x, ldx, 2, c0, c1, n4, n, pf, p0, ps, acc, y, ldy); break; \
	case 3: tile_##W(ld, ld1, es, row, rb, nt, x, ldx, 3, c0, c1, n4, n, pf, p0, ps, acc, y, ldy); break; \
	default: tile_##W(ld, ld1, es, row, rb, nt, x, ldx, nt == 1 ? ROWS_GROUP : 3, c0, c1, n4, n, \
	    pf, p0, ps, acc, y, ldy); break; \
	} \
} \
/* \
 * y[j*ldy + r] = row r . input j for the m <= BLOCK_ROWS rows from w and \
 * nx inputs, PANEL columns at a time, so that the inputs of a pass stay in \
 * L1 and the rows in L2 (forward.c passes blocks of 128 KiB).  Up to G1 \
 * inputs go in one pass, a row at a time, the rows streaming through once, \
 * each prefetching the next.  More go in groups of up to TILE_INPUTS, as \
 * even as they go, each group a pass over the rows in tiles of R, every \
 * pass prefetching its share of the lines of the next block: memory \
 * streams while the passes compute. \
 */ \
INLINE void \
block_##W(LD ld, ld1_fn ld1, int es, int R, int G1, const char *w, size_t rb, int64_t n, \
    int m, int nx, const float *x, size_t ldx, float *y, size_t ldy) \
{ \
	V acc[BLOCK_ROWS][ROWS_GROUP][4]; \
	int64_t n4 = n / (4 * L) * (4 * L); \
	int ng = nx <= G1 ? 1 : (nx + TILE_INPUTS - 1) / TILE_INPUTS, gs = (nx + ng - 1) / ng; \
	for (int j0 = 0; j0 < nx; j0 += gs) { \
		int g = nx - j0 < gs ? nx - j0 : gs, p0 = 64 * (j0 / gs); \
		const float *xg = x + j0 * ldx; \
		float *yg = y + j0 * ldy; \
		for (int r = 0; r < m && !n4; r++) \
			for (int j = 0; j < g; j++) \
				yg[j * ldy + r] = fold_##W(ld, ld1, w + r * rb, xg + j * ldx, 0, n, \
				    ZERO(), ZERO(), ZERO(), ZERO()); \
		for (int64_t c0 = 0; c0 < n4; c0 += PANEL) { \
			int64_t c1 = n4 - c0 < PANEL ? n4 : c0 + PANEL; \
			int r = 0; \
			for (; ng > 1 && r + R <= m; r += R) \
				tiles_##W(ld, ld1, es, w + r * rb, rb, R, xg, ldx, g, c0, c1, n4, n, \
				    w + (r + m) * rb, p0, 64 * ng, acc + r, yg + r, ldy); \
			for (; r < m; r++) \
				tiles_##W(ld, ld1, es, w + r * rb, rb, 1, xg, ldx, g, c0, c1, n4, n, \
				    w + (r + (ng == 1 ? 1 : m)) * rb, p0, 64 * ng, acc + r, yg + r, ldy); \
		} \
	} \
}

/* rows_T_W and rowsn_T_W: the rows of type T (ES bytes an element);
 * rowsn in tiles of R rows, or of one row for up to G1 inputs. */
#define FLOAT_ROWS(W, ATTR, LD, T, ES, R, G1) \
ATTR static void rows_##T##_##W(const void *w, size_t rb, int64_t n, const float *x, \
    const void *xq, float *y, int64_t nr) \
{ \
	for (int64_t r = 0; r < nr; r++) \
		y[r] = dot1_##W(LD##_##T, ld1_##T, ES, (const char *)w + r * rb, x, n); \
} \
ATTR static void rowsn_##T##_##W(const void *w, size_t rb, int64_t n, int nx, const float *x, \
    size_t ldx, const void *xq, size_t ldxq, float *y, size_t ldy, int64_t nr) \
{ \
	for (int64_t r = 0; r < nr; r += BLOCK_ROWS) \
		block_##W(LD##_##T, ld1_##T, ES, R, G1, (const char *)w + r * rb, rb, n, \
		    nr - r < BLOCK_ROWS ? (int)(nr - r) : BLOCK_ROWS, nx, x, ldx, y + r, ldy); \
}

ROW_DOTS(avx2, ALWAYS_INLINE, __m256, 8, ld8_fn, _mm256_loadu_ps, _mm256_fmadd_ps, _mm256_add_ps,
    _mm256_setzero_ps, hsum8)
FLOAT_ROWS(avx2, AVX2, ld8, f32, 4, 1, 3)
FLOAT_ROWS(avx2, AVX2, ld8, f16, 2, 1, 3)
FLOAT_ROWS(avx2, AVX2, ld8, bf16, 2, 1, 3)

/*
 * Q8_0 rows against Q8_0 inputs.  A block's 32 int8 products sum exactly in
 * int32 (maddubs wants unsigned x signed: w's sign moves onto x); the sums
 * of 8 blocks are folded into one vector, one lane per block, and scaled by
 * the 8 blocks' dw*dx with a single FMA.  The input's scales are converted
 * to float once per call.
 */
AVX2 static inline __m256i
block_isum(const int8_t *w, const int8_t *x)
{
	__m256i qw = _mm256_loadu_si256((const __m256i *)w);
	__m256i qx = _mm256_loadu_si256((const __m256i *)x);
	__m256i p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(qw, qw), _mm256_sign_epi8(qx, qw));
	return _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
}

/* 8 vectors of 8 int32 -> one vector of their 8 horizontal sums, as floats */
AVX2 static inline __m256
fold8(const __m256i *p)
{
	__m256i t0 = _mm256_hadd_epi32(p[0], p[1]), t1 = _mm256_hadd_epi32(p[2], p[3]);
	__m256i t2 = _mm256_hadd_epi32(p[4], p[5]), t3 = _mm256_hadd_epi32(p[6], p[7]);
	__m256i u0 = _mm256_hadd_epi32(t0, t1), u1 = _mm256_hadd_epi32(t2, t3);
	__m256i v = _mm256_add_epi32(_mm256_permute2x128_si256(u0, u1, 0x20),
	    _mm256_permute2x128_si256(u0, u1, 0x31));
	return _mm256_cvtepi32_ps(v);
}

/* the fp16 scales of blocks b..b+7, as floats */
AVX2 static inline __m256
scales8(const sa_block_q8_0 *b)
{
	return _mm256_cvtph_ps(_mm_set_epi16((short)b[7].d, (short)b[6].d, (short)b[5].d,
	    (short)b[4].d, (short)b[3].d, (short)b[2].d, (short)b[1].d, (short)b[0].d));
}

#define Q8_MAXB 2048     /* blocks of an input whose scales fit the stack */

/* s + blocks b..nb-1 of the dot of a row and an input, one at a time */
ALWAYS_INLINE float
q8_tail(const sa_block_q8_0 *bw, const sa_block_q8_0 *bx, const float *xd, int64_t b,
    int64_t nb, float s)
{
	for (; b < nb; b++) {
		__m256i i = block_isum(bw[b].qs, bx[b].qs);
		__m128i h = _mm_add_epi32(_mm256_castsi256_si128(i), _mm256_extracti128_si256(i, 1));
		h = _mm_hadd_epi32(h, h);
		h = _mm_hadd_epi32(h, h);
		s += _cvtsh_ss(bw[b].d) * xd[b] * (float)_mm_cvtsi128_si32(h);
	}
	return s;
}

/* dot of one row with one input whose scales are xd; blocks past the
 * last multiple of 8 one at a time */
ALWAYS_INLINE float
q8_row_avx2(const sa_block_q8_0 *bw, const sa_block_q8_0 *bx, const float *xd, int64_t nb)
{
	__m256 acc = _mm256_setzero_ps();
	__m256i p[8];
	int64_t b = 0;
	float s;

	for (; b + 8 <= nb; b += 8) {
		/* 8 blocks are 272 bytes: every line of them, PREFETCH_AHEAD on */
		for (int o = 0; o < 8 * (int)sizeof *bw; o += 64)
			_mm_prefetch((const char *)(bw + b) + PREFETCH_AHEAD + o, _MM_HINT_T0);
		for (int k = 0; k < 8; k++)
			p[k] = block_isum(bw[b + k].qs, bx[b + k].qs);
		acc = _mm256_fmadd_ps(_mm256_mul_ps(scales8(bw + b), _mm256_loadu_ps(xd + b)), fold8(p), acc);
	}
	s = hsum8(acc);
	return q8_tail(bw, bx, xd, b, nb, s);
}

/* rows_q8_0_V and rowsn_q8_0_V through q8_row_V: one input, or the inputs
 * ROWS_GROUP at a time, each row read from memory once for a group (then
 * from L1) */
#define Q8_ROWS(V, ATTR) \
ATTR static void rows_q8_0_##V(const void *w, size_t rb, int64_t n, const float *x, \
    const void *xq, float *y, int64_t nr) \
{ \
	const sa_block_q8_0 *bx = xq; \
	int64_t nb = n / SA_QK8_0; \
	float xd[Q8_MAXB]; \
	if (nb > Q8_MAXB) { \
		rows_q8_0_generic(w, rb, n, x, xq, y, nr); \
		return; \
	} \
	for (int64_t b = 0; b < nb; b++) \
		xd[b] = _cvtsh_ss(bx[b].d); \
	for (int64_t r = 0; r < nr; r++) \
		y[r] = q8_row_##V((const sa_block_q8_0 *)((const char *)w + r * rb), bx, xd, nb); \
} \
ATTR static void rowsn_q8_0_##V(const void *w, size_t rb, int64_t n, int nx, const float *x, \
    size_t ldx, const void *xq, size_t ldxq, float *y, size_t ldy, int64_t nr) \
{ \
	const sa_block_q8_0 *bx[ROWS_GROUP]; \
	int64_t nb = n / SA_QK8_0; \
	float xd[ROWS_GROUP][Q8_MAXB]; \
	if (nb > Q8_MAXB) { \
		rowsn_q8_0_generic(w, rb, n, nx, x, ldx, xq, ldxq, y, ldy, nr); \
		return; \
	} \
	for (int j0 = 0; j0 < nx; j0 += ROWS_GROUP) { \
		int g = nx - j0 < ROWS_GROUP ? nx - j0 : ROWS_GROUP; \
		for (int j = 0; j < g; j++) { \
			bx[j] = (const sa_block_q8_0 *)((const char *)xq + (j0 + j) * ldxq); \
			for (int64_t b = 0; b < nb; b++) \
				xd[j][b] = _cvtsh_ss(bx[j][b].d); \
		} \
		for (int64_t r = 0; r < nr; r++) { \
			const sa_block_q8_0 *bw = (const sa_block_q8_0 *)((const char *)w + r * rb); \
			for (int j = 0; j < g; j++) \
				y[(j0 + j) * ldy + r] = q8_row_##V(bw, bx[j], xd[j], nb); \
		} \
	} \
}
Q8_ROWS(avx2, AVX2)

/*
 * Products of Q8_0 rows with many inputs (prefill) in integers, against
 * the inputs quantized once and packed (sa_gemm_pack_q8_0).  A panel of L
 * rows (a vector's int32 lanes) is repacked Q8_KB blocks at a time so that
 * lane r of vector j of a block holds int8 4j..4j+3 of row r's: a block of
 * all L rows with one input is then 8 steps, each against 4 int8 of the
 * input broadcast, into one int32 lane per row, no sums across lanes.
 * The steps: VPDPBUSD (VNNI), unsigned x signed, on w + 128 (the sign bit
 * flipped), less 128 times the sum of the input's block; else VPMADDUBSW
 * with w's sign moved onto x and VPMADDWD.  Either way the block's exact
 * integer dot, scaled by dw*dx and added to the lane's float sum block
 * after block: the bits of gemm_q8_0_generic.  A tile is P panels against
 * T_ inputs (2 x 6 on AVX-512, 1 x 4 on AVX2); between repacked chunks the
 * sums wait in y.
 */
#define Q8_KB 64

/* Rows r < m of a panel of L (zeros for the rest), blocks k0..k0+kl-1:
 * wp [kl][8][L] int32 as above, row lane[l] in lane l (each int8 ^ 0x80
 * with off), wd [kl][L] the blocks' scales alike. */
static inline void
q8_repack(const char *w, size_t rb, int m, int L, const uint8_t *lane, int64_t k0, int64_t kl,
    int off, int32_t *wp, float *wd)
{
	for (int l = 0; l < L; l++) {
		int r = lane[l];
		const sa_block_q8_0 *bw = (const sa_block_q8_0 *)(w + r * rb) + k0;
		for (int64_t b = 0; b < kl; b++) {
			wd[b * L + l] = r < m ? sa_fp16_to_fp32(bw[b].d) : 0;
			for (int j = 0; j < 8; j++) {
				uint32_t v = 0;
				if (r < m)
					memcpy(&v, bw[b].qs + 4 * j, 4);
				wp[(b * 8 + j) * L + l] = (int32_t)(off ? v ^ 0x80808080u : v);
			}
		}
	}
}

#define GEMM_Q8(W, ATTR, INLINE, VI, VF, L, P, T_, STEP, OFF, REPACK, SET1I, ZEROI, CVT, LOADF, \
    SET1F, MULF, ADDF, ZEROF, LDY, STY) \
/* y [T][rows m of the P panels] (+)= the panels' rows . inputs from xp \
 * over kl blocks from k0 (sums from y unless first); each broadcast of \
 * the input feeds the P panels */ \
INLINE void \
gemm_q8_tile_##W(int T, const VI *wp, const float *wd, const void *xp, int64_t nb, int64_t k0, \
    int64_t kl, float *y, size_t ldy, int m, int first) \
{ \
	VF acc[P][T_]; \
	UNROLL for (int p = 0; p < P; p++) \
		UNROLL for (int t = 0; t < T; t++) \
			acc[p][t] = first ? ZEROF() : LDY(y + t * ldy + p * L, m - p * L); \
	for (int64_t b = 0; b < kl; b++) { \
		VF dw[P]; \
		UNROLL for (int p = 0; p < P; p++) \
			dw[p] = LOADF(wd + (p * Q8_KB + b) * L); \
		UNROLL for (int t = 0; t < T; t++) { \
			const int8_t *q = q8p_qs(xp, nb, t) + (k0 + b) * SA_QK8_0; \
			VI is[P]; \
			UNROLL for (int p = 0; p < P; p++) \
				is[p] = OFF ? SET1I(q8p_off(xp, nb, t)[k0 + b]) : ZEROI(); \
			UNROLL for (int j = 0; j < 8; j++) { \
				int32_t x4; \
				memcpy(&x4, q + 4 * j, 4); \
				VI xb = SET1I(x4); \
				UNROLL for (int p = 0; p < P; p++) \
					is[p] = STEP(is[p], wp[(p * Q8_KB + b) * 8 + j], xb); \
			} \
			VF dx = SET1F(q8p_d(xp, nb, t)[k0 + b]); \
			UNROLL for (int p = 0; p < P; p++) \
				acc[p][t] = ADDF(acc[p][t], MULF(MULF(dw[p], dx), CVT(is[p]))); \
		} \
	} \
	UNROLL for (int p = 0; p < P; p++) \
		UNROLL for (int t = 0; t < T; t++) \
			STY(y + t * ldy + p * L, acc[p][t], m - p * L); \
} \
ATTR static void \
gemm_q8_0_##W(const void *w, size_t rb, int64_t n, int64_t nr, const void *xp, int nx, \
    float *y, size_t ldy) \
{ \
	_Alignas(64) int32_t wp[P * Q8_KB * 8 * L]; \
	_Alignas(64) float wd[P * Q8_KB * L]; \
	int64_t nb = n / SA_QK8_0; \
	size_t xs = Q8P_BYTES(nb); \
	for (int64_t r0 = 0; r0 < nr; r0 += P * L) { \
		int m = nr - r0 < P * L ? (int)(nr - r0) : P * L; \
		for (int64_t k0 = 0; k0 < nb; k0 += Q8_KB) { \
			int64_t kl = nb - k0 < Q8_KB ? nb - k0 : Q8_KB; \
			int t = 0; \
			for (int p = 0; p < P; p++) { \
				int mp = m - p * L < 0 ? 0 : m - p * L < L ? m - p * L : L; \
				REPACK((const char *)w + (r0 + p * L) * rb, rb, mp, k0, kl, OFF, \
				    wp + p * Q8_KB * 8 * L, wd + p * Q8_KB * L); \
			} \
			for (; t + T_ <= nx; t += T_) \
				gemm_q8_tile_##W(T_, (const VI *)wp, wd, (const char *)xp + t * xs, nb, k0, kl, \
				    y + t * ldy + r0, ldy, m, !k0); \
			for (; t < nx; t++) \
				gemm_q8_tile_##W(1, (const VI *)wp, wd, (const char *)xp + t * xs, nb, k0, kl, \
				    y + t * ldy + r0, ldy, m, !k0); \
		} \
	} \
}

/* one step of the AVX2 tile: 4 int8 of 8 rows . 4 of the input, each row's
 * 4 products into its lane */
ALWAYS_INLINE __m256i
q8_step_avx2(__m256i acc, __m256i w, __m256i x)
{
	__m256i p16 = _mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(x, w));
	return _mm256_add_epi32(acc, _mm256_madd_epi16(p16, _mm256_set1_epi16(1)));
}

ALWAYS_INLINE void
repack8(const char *w, size_t rb, int m, int64_t k0, int64_t kl, int off, int32_t *wp, float *wd)
{
	static const uint8_t lane[8] = { 0, 1, 2, 3, 4, 5, 6, 7 };
	q8_repack(w, rb, m, 8, lane, k0, kl, off, wp, wd);
}

/* y [m] of 8 floats, and back */
ALWAYS_INLINE __m256i
mask8(int m)
{
	return _mm256_cmpgt_epi32(_mm256_set1_epi32(m), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
ALWAYS_INLINE __m256
ldy8(const float *y, int m)
{
	return _mm256_maskload_ps(y, mask8(m));
}
ALWAYS_INLINE void
sty8(float *y, __m256 v, int m)
{
	_mm256_maskstore_ps(y, mask8(m), v);
}

GEMM_Q8(avx2, AVX2, ALWAYS_INLINE, __m256i, __m256, 8, 1, 4, q8_step_avx2, 0, repack8,
    _mm256_set1_epi32, _mm256_setzero_si256, _mm256_cvtepi32_ps, _mm256_load_ps, _mm256_set1_ps,
    _mm256_mul_ps, _mm256_add_ps, _mm256_setzero_ps, ldy8, sty8)

/*
 * Products of Q4_K, Q5_K and Q6_K rows with many inputs (prefill) in
 * integers, against the inputs' Q8_K blocks as sa_round_row leaves them
 * (input t at xq + t * Q8K_BYTES(n / SA_QK_K)).  A panel of L rows is
 * repacked QK_KB blocks of 256 at a time (qk_repack8, qk_repack16), each
 * block to QK_VECS vectors of L int32 lanes, lane l holding row l:
 *   QK_W ..    64: its weights 4k..4k+3 as unsigned bytes (Q6_K's + 32)
 *   QK_SC ..   16: its sub-blocks' scales (8 of 32 for Q4_K and Q5_K, 16
 *                  of 16 for Q6_K), as int32, or for VPMADDWD as twice
 *                  the int16
 *   QK_MP ..    8: int16 pairs c[2k], c[2k+1] meeting the input's sums of
 *                  16 (bsums): Q4_K's and Q5_K's minimums, Q6_K's scales
 *                  times 32 (its weights are q - 32)
 *   QK_D, QK_DMIN: the block's fp16 scales as floats
 * A sub-block of L rows against one input is then 8 (Q6_K: 4) steps, each
 * against 4 int8 of the input broadcast: VPDPBUSD into an int32 lane per
 * row, then times the scale (VPMULLD); or VPMADDUBSW and VPMADDWD by the
 * scale.  The block's integers are exact either way, and each lane's sum
 * takes them block after block as dot_q4_k_generic and dot_q6_k_generic
 * do (dx*dw*sum - dx*dmin*msum, or dx*dw*(sum - msum)): their bits.
 * A tile is P panels against T_ inputs: each vector of weights, loaded
 * once, meets the T_ inputs' broadcasts.
 */
#define QK_KB 4
enum { QK_W = 0, QK_SC = 64, QK_MP = 80, QK_D = 88, QK_DMIN = 89, QK_VECS = 90 };

/* The 256 weights of a Q4_K, Q5_K (q5) or Q6_K (q6) block as unsigned
 * bytes in order, into u: Q4_K's and Q5_K's 32 bytes of qs give 2
 * sub-blocks of 32 (low nibbles, then high), Q5_K's bit j of qh[l] the
 * fifth bit of weight l of sub-block j; Q6_K's half blocks, 64 bytes of
 * ql and 32 of qh, give 4 runs of 32: the low nibbles of ql[0..31] and
 * of ql[32..63], then their high nibbles, under bits 2i, 2i+1 of qh. */
ALWAYS_INLINE void
qk_unpack(int q5, int q6, const char *blk, uint8_t *u)
{
	const __m256i m4 = _mm256_set1_epi8(0xf), m2 = _mm256_set1_epi8(3);

	if (q6) {
		const sa_block_q6_k *b = (const sa_block_q6_k *)blk;
		for (int h = 0; h < 2; h++) {
			__m256i hb = _mm256_loadu_si256((const __m256i *)(b->qh + 32 * h));
			for (int i = 0; i < 4; i++) {
				__m256i l = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * h + i % 2 * 32));
				__m256i lo = _mm256_and_si256(_mm256_srli_epi16(l, 4 * (i / 2)), m4);
				__m256i hi = _mm256_and_si256(_mm256_srli_epi16(hb, 2 * i), m2);
				_mm256_storeu_si256((__m256i *)(u + 128 * h + 32 * i),
				    _mm256_or_si256(lo, _mm256_slli_epi16(hi, 4)));
			}
		}
		return;
	}
	const uint8_t *qs = q5 ? ((const sa_block_q5_k *)blk)->qs : ((const sa_block_q4_k *)blk)->qs;
	__m256i hb = q5 ? _mm256_loadu_si256((const __m256i *)((const sa_block_q5_k *)blk)->qh) :
	    _mm256_setzero_si256();
	for (int c = 0; c < 4; c++) {
		__m256i v = _mm256_loadu_si256((const __m256i *)(qs + 32 * c));
		__m256i lo = _mm256_and_si256(v, m4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
		if (q5) {
			__m256i one = _mm256_set1_epi8(1);
			lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb,
			    2 * c), one), 4));
			hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb,
			    2 * c + 1), one), 4));
		}
		_mm256_storeu_si256((__m256i *)(u + 64 * c), lo);
		_mm256_storeu_si256((__m256i *)(u + 64 * c + 32), hi);
	}
}

/* Block k0 + b, b < kl, of rows r < m of a panel of 8 (zeros for the
 * rest) into wp + b * QK_VECS * 8, as above, row l in lane l; pair: the
 * scales as int16 pairs. */
ALWAYS_INLINE void
qk_repack8(int type, const char *w, size_t rb, int m, int64_t k0, int64_t kl, int pair,
    int32_t *wp)
{
	enum { L = 8 };
	int q6 = type == SA_TYPE_Q6_K, q5 = type == SA_TYPE_Q5_K;
	size_t bb = sa_type_row_size(type, SA_QK_K);

	for (int l = 0; l < L; l++)
		for (int64_t b = 0; b < kl; b++) {
			int32_t *o = wp + b * QK_VECS * L + l;
			const char *blk = w + l * rb + (k0 + b) * bb;
			_Alignas(32) uint8_t u[SA_QK_K];
			int sc[16] = { 0 }, c[16] = { 0 };
			float d[2] = { 0, 0 };
			/* the same block of the next chunk: 16 or more rows are more
			 * streams than the hardware prefetcher follows */
			for (size_t o2 = 0; o2 < bb; o2 += 64)
				_mm_prefetch(blk + QK_KB * bb + o2, _MM_HINT_T0);
			if (l >= m) {
				memset(u, 0, sizeof u);
			} else if (q6) {
				const sa_block_q6_k *w6 = (const sa_block_q6_k *)blk;
				qk_unpack(0, 1, blk, u);
				for (int j = 0; j < 16; j++) {
					sc[j] = w6->scales[j];
					c[j] = 32 * sc[j];
				}
				d[0] = _cvtsh_ss(w6->d);
			} else {
				const sa_block_q4_k *w4 = (const sa_block_q4_k *)blk;
				qk_unpack(q5, 0, blk, u);
				for (int j = 0; j < 8; j++) {
					sa_k4_scale_min(w4->scales, j, &sc[j], &c[2 * j]);
					c[2 * j + 1] = c[2 * j];
				}
				d[0] = _cvtsh_ss(w4->d);
				d[1] = _cvtsh_ss(w4->dmin);
			}
			for (int k = 0; k < 64; k++)
				memcpy(o + (QK_W + k) * L, u + 4 * k, 4);
			for (int j = 0; j < 16; j++)
				o[(QK_SC + j) * L] = pair ? (int32_t)((uint32_t)(sc[j] & 0xffff) * 0x10001u) : sc[j];
			for (int k = 0; k < 8; k++)
				o[(QK_MP + k) * L] = (int32_t)((uint32_t)(c[2 * k] & 0xffff) |
				    (uint32_t)c[2 * k + 1] << 16);
			memcpy(o + QK_D * L, &d[0], 4);
			memcpy(o + QK_DMIN * L, &d[1], 4);
		}
}

#define GEMM_QK(W, ATTR, INLINE, VI, VF, L, P, T_, REPACK, PAIR, STEP, SCALE, PAIRS, SET1I, ZEROI, \
    SUBI, CVT, LOADF, SET1F, MULF, ADDF, SUBF, ZEROF, LDY, STY) \
/* y [T][rows m of the P panels] (+)= the panels' rows . inputs from xq \
 * (xs bytes apart) over kl blocks from k0 (sums from y unless first) */ \
INLINE void \
gemm_qk_tile_##W(int q6, int T, const VI *wp, const char *xq, size_t xs, int64_t k0, int64_t kl, \
    float *y, size_t ldy, int m, int first) \
{ \
	const int ns = q6 ? 16 : 8, steps = 64 / ns; \
	VF acc[P][T_]; \
	UNROLL for (int p = 0; p < P; p++) \
		UNROLL for (int t = 0; t < T; t++) \
			acc[p][t] = first ? ZEROF() : LDY(y + t * ldy + p * L, m - p * L); \
	for (int64_t b = 0; b < kl; b++) { \
		const VI *wb[P]; \
		const sa_block_q8_k *x[T_]; \
		VI sum[P][T_], s[P][T_]; \
		UNROLL for (int p = 0; p < P; p++) \
			wb[p] = wp + (p * QK_KB + b) * QK_VECS; \
		UNROLL for (int t = 0; t < T; t++) { \
			x[t] = (const sa_block_q8_k *)(xq + t * xs) + k0 + b; \
			UNROLL for (int p = 0; p < P; p++) \
				sum[p][t] = ZEROI(); \
		} \
		for (int j = 0; j < ns; j++) { \
			UNROLL for (int p = 0; p < P; p++) \
				UNROLL for (int t = 0; t < T; t++) \
					s[p][t] = ZEROI(); \
			UNROLL for (int k = 0; k < steps; k++) { \
				VI wv[P]; \
				UNROLL for (int p = 0; p < P; p++) \
					wv[p] = wb[p][QK_W + j * steps + k]; \
				UNROLL for (int t = 0; t < T; t++) { \
					int32_t x4; \
					memcpy(&x4, x[t]->qs + 4 * (j * steps + k), 4); \
					VI xb = SET1I(x4); \
					UNROLL for (int p = 0; p < P; p++) \
						s[p][t] = STEP(s[p][t], wv[p], xb, wb[p][QK_SC + j]); \
				} \
			} \
			UNROLL for (int p = 0; p < P; p++) \
				UNROLL for (int t = 0; t < T; t++) \
					sum[p][t] = SCALE(sum[p][t], s[p][t], wb[p][QK_SC + j]); \
		} \
		/* the pairs' sums, in s */ \
		UNROLL for (int p = 0; p < P; p++) \
			UNROLL for (int t = 0; t < T; t++) \
				s[p][t] = ZEROI(); \
		UNROLL for (int k = 0; k < 8; k++) \
			UNROLL for (int t = 0; t < T; t++) { \
				int32_t b2; \
				memcpy(&b2, x[t]->bsums + 2 * k, 4); \
				VI bs = SET1I(b2); \
				UNROLL for (int p = 0; p < P; p++) \
					s[p][t] = PAIRS(s[p][t], wb[p][QK_MP + k], bs); \
			} \
		UNROLL for (int t = 0; t < T; t++) { \
			VF dx = SET1F(x[t]->d); \
			UNROLL for (int p = 0; p < P; p++) { \
				VF dw = MULF(dx, LOADF((const float *)(wb[p] + QK_D))); \
				if (q6) \
					acc[p][t] = ADDF(acc[p][t], MULF(dw, CVT(SUBI(sum[p][t], s[p][t])))); \
				else \
					acc[p][t] = ADDF(acc[p][t], SUBF(MULF(dw, CVT(sum[p][t])), \
					    MULF(MULF(dx, LOADF((const float *)(wb[p] + QK_DMIN))), CVT(s[p][t])))); \
			} \
		} \
	} \
	UNROLL for (int p = 0; p < P; p++) \
		UNROLL for (int t = 0; t < T; t++) \
			STY(y + t * ldy + p * L, acc[p][t], m - p * L); \
} \
ATTR static void \
gemm_k_##W(int type, const void *w, size_t rb, int64_t n, int64_t nr, const void *xq, int nx, \
    float *y, size_t ldy) \
{ \
	_Alignas(64) int32_t wp[P * QK_KB * QK_VECS * L]; \
	int64_t nb = n / SA_QK_K; \
	size_t xs = Q8K_BYTES(nb); \
	for (int64_t r0 = 0; r0 < nr; r0 += P * L) { \
		int m = nr - r0 < P * L ? (int)(nr - r0) : P * L; \
		for (int64_t k0 = 0; k0 < nb; k0 += QK_KB) { \
			int64_t kl = nb - k0 < QK_KB ? nb - k0 : QK_KB; \
			int t = 0; \
			for (int p = 0; p < P; p++) { \
				int mp = m - p * L < 0 ? 0 : m - p * L < L ? m - p * L : L; \
				REPACK(type, (const char *)w + (r0 + p * L) * rb, rb, mp, k0, kl, PAIR, \
				    wp + p * QK_KB * QK_VECS * L); \
			} \
			for (; t + T_ <= nx; t += T_) \
				if (type == SA_TYPE_Q6_K) \
					gemm_qk_tile_##W(1, T_, (const VI *)wp, (const char *)xq + t * xs, xs, \
					    k0, kl, y + t * ldy + r0, ldy, m, !k0); \
				else \
					gemm_qk_tile_##W(0, T_, (const VI *)wp, (const char *)xq + t * xs, xs, \
					    k0, kl, y + t * ldy + r0, ldy, m, !k0); \
			for (; t < nx; t++) \
				if (type == SA_TYPE_Q6_K) \
					gemm_qk_tile_##W(1, 1, (const VI *)wp, (const char *)xq + t * xs, xs, \
					    k0, kl, y + t * ldy + r0, ldy, m, !k0); \
				else \
					gemm_qk_tile_##W(0, 1, (const VI *)wp, (const char *)xq + t * xs, xs, \
					    k0, kl, y + t * ldy + r0, ldy, m, !k0); \
		} \
	} \
}

/* The K-quant GEMM's steps on 8 rows: VPMADDUBSW, then VPMADDWD by the
 * scale sc (the sub-block's sum s then only added), or by the pairs c */
#define QK_STEP_AVX2(acc, w, x, sc) \
	_mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), sc))
#define QK_SCALE_AVX2(sum, s, sc) _mm256_add_epi32(sum, s)
#define QK_PAIRS_AVX2(acc, c, bs) _mm256_add_epi32(acc, _mm256_madd_epi16(c, bs))

GEMM_QK(avx2, AVX2, ALWAYS_INLINE, __m256i, __m256, 8, 1, 4, qk_repack8, 1, QK_STEP_AVX2,
    QK_SCALE_AVX2, QK_PAIRS_AVX2, _mm256_set1_epi32, _mm256_setzero_si256, _mm256_sub_epi32,
    _mm256_cvtepi32_ps, _mm256_load_ps, _mm256_set1_ps, _mm256_mul_ps, _mm256_add_ps,
    _mm256_sub_ps, _mm256_setzero_ps, ldy8, sty8)

/* The hardware conversions: exact to F32, to nearest even to F16. */
AVX2 static void
fp16_to_fp32_avx2(const uint16_t *src, float *dst, int64_t n)
{
	int64_t i = 0;
	for (; i + 8 <= n; i += 8)
		_mm256_storeu_ps(dst + i, load_f16(src + i));
	for (; i < n; i++)
		dst[i] = _cvtsh_ss(src[i]);
}

AVX2 static void
fp32_to_fp16_avx2(const float *src, uint16_t *dst, int64_t n)
{
	int64_t i = 0;
	for (; i + 8 <= n; i += 8)
		_mm_storeu_si128((__m128i *)(dst + i),
		    _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
	for (; i < n; i++)
		dst[i] = sa_fp32_to_fp16(src[i]);
}

/*
 * Products of F16 rows with many inputs (prefill), without sgemm's copies:
 * the inputs packed once by the caller, GEMM_LANES of them to a vector for
 * every column (sa_gemm_pack), the rows converted to F32 a few hundred
 * columns at a time into a buffer that stays in L1.  Written once for each
 * vector width W (V holding L floats, VP = GEMM_LANES / L of them to a
 * column of a panel).  A tile holds the sums of R rows x T vectors of
 * inputs in registers (8 x 3 in 24 of AVX-512's 32, 6 x 2 in 12 of AVX2's
 * 16; T a multiple of VP): per column, T loads of inputs and R broadcasts
 * of weights feed R T FMAs.  Each lane is one sum, added column after
 * column: the bits of the portable kernel.  Blocks, so that what a pass
 * reads again stays near:
 *   GEMM_KB columns: the inputs' share of them (GEMM_TB inputs, 128 KiB)
 *   stays in L2 while every row group of the block goes over it;
 *   RB rows x GEMM_TB inputs: the sums between column blocks, in a
 *   buffer of up to 32 KiB, written to y at the end.
 */
#define GEMM_KB 256
#define GEMM_TB 128

#define GEMM_F16(W, ATTR, INLINE, V, L, R_, T_, RB, LOADU, STOREU, FMADD, SET1, ZERO) \
/* c [R][GEMM_TB] (+)= wb [R][GEMM_KB] . the T vectors of inputs [kl] from \
 * xp (panels ps floats apart) */ \
INLINE void \
gemm_tile_##W(int R, int T, const float *wb, const float *xp, size_t ps, int64_t kl, \
    float *c, int first) \
{ \
	enum { VP = GEMM_LANES / L }; \
	V acc[R_][T_]; \
	UNROLL for (int r = 0; r < R; r++) \
		UNROLL for (int t = 0; t < T; t++) \
			acc[r][t] = first ? ZERO() : LOADU(c + r * GEMM_TB + t * L); \
	for (int64_t k = 0; k < kl; k++) { \
		V xv[T_]; \
		UNROLL for (int t = 0; t < T; t++) \
			xv[t] = LOADU(xp + t / VP * ps + k * GEMM_LANES + t % VP * L); \
		UNROLL for (int r = 0; r < R; r++) { \
			V wv = SET1(wb[r * GEMM_KB + k]); \
			UNROLL for (int t = 0; t < T; t++) \
				acc[r][t] = FMADD(wv, xv[t], acc[r][t]); \
		} \
	} \
	UNROLL for (int r = 0; r < R; r++) \
		UNROLL for (int t = 0; t < T; t++) \
			STOREU(c + r * GEMM_TB + t * L, acc[r][t]); \
} \
/* the tiles of R rows over the nv vectors of inputs of np panels */ \
INLINE void \
gemm_panels_##W(int R, const float *wb, const float *xp, size_t ps, int np, int64_t kl, \
    float *c, int first) \
{ \
	int v = 0, nv = np * (GEMM_LANES / L); \
	for (; v + T_ <= nv; v += T_) \
		gemm_tile_##W(R, T_, wb, xp + v / (GEMM_LANES / L) * ps, ps, kl, c + v * L, first); \
	if (nv - v == 2) \
		gemm_tile_##W(R, 2, wb, xp + v / (GEMM_LANES / L) * ps, ps, kl, c + v * L, first); \
	if (nv - v == 1) \
		gemm_tile_##W(R, 1, wb, xp + v / (GEMM_LANES / L) * ps, ps, kl, c + v * L, first); \
} \
ATTR static void \
gemm_f16_##W(const void *w, size_t rb, int64_t n, int64_t nr, const float *xp, int nx, \
    float *y, size_t ldy) \
{ \
	_Alignas(64) float wb[R_ * GEMM_KB], c[RB * GEMM_TB]; \
	size_t ps = (size_t)n * GEMM_LANES; \
	for (int64_t r0 = 0; r0 < nr; r0 += RB) { \
		int m = nr - r0 < RB ? (int)(nr - r0) : RB; \
		for (int t0 = 0; t0 < nx; t0 += GEMM_TB) { \
			int nt = nx - t0 < GEMM_TB ? nx - t0 : GEMM_TB; \
			int np = (nt + GEMM_LANES - 1) / GEMM_LANES; \
			const float *xb = xp + (size_t)(t0 / GEMM_LANES) * ps; \
			for (int64_t k0 = 0; k0 < n; k0 += GEMM_KB) { \
				int64_t kl = n - k0 < GEMM_KB ? n - k0 : GEMM_KB; \
				for (int r = 0; r < m; ) { \
					int R = m - r < R_ ? 1 : R_; \
					const char *wr = (const char *)w + (r0 + r) * rb + k0 * 2; \
					/* these rows' next columns, or the next rows' first: \
					 * from memory while the tiles compute */ \
					const char *pf = k0 + GEMM_KB < n ? wr + GEMM_KB * 2 : \
					    r0 + RB + r < nr ? wr + RB * rb - k0 * 2 : NULL; \
					for (int i = 0; pf && i < R; i++) \
						for (int o = 0; o < GEMM_KB * 2; o += 64) \
							_mm_prefetch(pf + i * rb + o, _MM_HINT_T1); \
					for (int i = 0; i < R; i++) \
						fp16_to_fp32_##W((const uint16_t *)(wr + i * rb), \
						    wb + i * GEMM_KB, kl); \
					if (R == R_) \
						gemm_panels_##W(R_, wb, xb + k0 * GEMM_LANES, ps, np, kl, \
						    c + r * GEMM_TB, !k0); \
					else \
						gemm_panels_##W(1, wb, xb + k0 * GEMM_LANES, ps, np, kl, \
						    c + r * GEMM_TB, !k0); \
					r += R; \
				} \
			} \
			for (int t = 0; t < nt; t++) \
				for (int r = 0; r < m; r++) \
					y[(t0 + t) * ldy + r0 + r] = c[r * GEMM_TB + t]; \
		} \
	} \
}

GEMM_F16(avx2, AVX2, ALWAYS_INLINE, __m256, 8, 6, 2, 48, _mm256_loadu_ps, _mm256_storeu_ps,
    _mm256_fmadd_ps, _mm256_set1_ps, _mm256_setzero_ps)

AVX2 static void
deq_bf16_avx2(const void *w, size_t rb, int64_t n, float *dst, int64_t nr)
{
	for (int64_t r = 0; r < nr; r++, dst += n) {
		const uint16_t *row = (const uint16_t *)((const char *)w + r * rb);
		int64_t i = 0;
		for (; i + 8 <= n; i += 8)
			_mm256_storeu_ps(dst + i, load_bf16(row + i));
		for (; i < n; i++)
			dst[i] = sa_bf16_to_fp32(row[i]);
	}
}

/*
 * Q8_0, Q4_0, Q4_K, Q5_K and Q6_K blocks -> F32 [n], the floats of types.c: the
 * same integer, converted exactly, then the same multiply and subtract
 * (never fused).  Other block types go to types.c.  The unpacking is
 * written once on 16 bytes; put16 stores their 16 floats a * q (- b), q
 * signed or not, on 8 lanes (AVX2) or 16 (AVX-512).
 */
typedef void (*put16_fn)(float *y, __m128i q, float a, float b, int sub, int sign);

ALWAYS_INLINE void
put16_avx2(float *y, __m128i q, float a, float b, int sub, int sign)
{
	__m256 va = _mm256_set1_ps(a), vb = _mm256_set1_ps(b);
	for (int h = 0; h < 2; h++, q = _mm_srli_si128(q, 8), y += 8) {
		__m256i i = sign ? _mm256_cvtepi8_epi32(q) : _mm256_cvtepu8_epi32(q);
		__m256 f = _mm256_mul_ps(va, _mm256_cvtepi32_ps(i));
		_mm256_storeu_ps(y, sub ? _mm256_sub_ps(f, vb) : f);
	}
}

ALWAYS_INLINE void
blocks_body(put16_fn put16, int type, const void *src, float *y, int64_t n)
{
	const uint8_t *p = src;
	const __m128i m4 = _mm_set1_epi8(0x0f);

	switch (type) {
	case SA_TYPE_Q8_0:
		for (int64_t i = 0; i < n / SA_QK8_0; i++, y += SA_QK8_0) {
			const sa_block_q8_0 *b = (const sa_block_q8_0 *)p + i;
			float d = _cvtsh_ss(b->d);
			put16(y, _mm_loadu_si128((const __m128i *)b->qs), d, 0, 0, 1);
			put16(y + 16, _mm_loadu_si128((const __m128i *)(b->qs + 16)), d, 0, 0, 1);
		}
		return;
	case SA_TYPE_Q4_0:
		for (int64_t i = 0; i < n / SA_QK; i++, y += SA_QK) {
			const sa_block_q4_0 *b = (const sa_block_q4_0 *)p + i;
			float d = _cvtsh_ss(b->d);
			__m128i v = _mm_loadu_si128((const __m128i *)b->qs), e = _mm_set1_epi8(8);
			put16(y, _mm_sub_epi8(_mm_and_si128(v, m4), e), d, 0, 0, 1);
			put16(y + 16, _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(v, 4), m4), e), d, 0, 0, 1);
		}
		return;
	case SA_TYPE_Q4_K:
	case SA_TYPE_Q5_K: {
		int q5 = type == SA_TYPE_Q5_K;
		size_t bb = q5 ? sizeof(sa_block_q5_k) : sizeof(sa_block_q4_k);
		for (int64_t i = 0; i < n / SA_QK_K; i++, y += SA_QK_K) {
			const sa_block_q4_k *b = (const sa_block_q4_k *)(p + i * bb);
			const uint8_t *qh = q5 ? ((const sa_block_q5_k *)b)->qh : NULL;
			const uint8_t *qs = q5 ? ((const sa_block_q5_k *)b)->qs : b->qs;
			float d = _cvtsh_ss(b->d), min = _cvtsh_ss(b->dmin);
			for (int s = 0; s < 8; s++) {
				int sc, m;
				sa_k4_scale_min(b->scales, s, &sc, &m);
				for (int h = 0; h < 2; h++) {
					__m128i v = _mm_loadu_si128((const __m128i *)(qs + s / 2 * 32 + 16 * h));
					v = _mm_and_si128(_mm_srl_epi16(v, _mm_cvtsi32_si128(s % 2 * 4)), m4);
					if (qh) {
						__m128i u = _mm_loadu_si128((const __m128i *)(qh + 16 * h));
						u = _mm_and_si128(_mm_srl_epi16(u, _mm_cvtsi32_si128(s)), _mm_set1_epi8(1));
						v = _mm_or_si128(v, _mm_slli_epi16(u, 4));
					}
					put16(y + s * 32 + 16 * h, v, d * sc, min * m, 1, 0);
				}
			}
		}
		return;
	}
	case SA_TYPE_Q6_K:
		for (int64_t i = 0; i < n / SA_QK_K; i++, y += SA_QK_K) {
			const sa_block_q6_k *b = (const sa_block_q6_k *)p + i;
			float d = _cvtsh_ss(b->d);
			for (int s = 0; s < 16; s++) {
				__m128i l = _mm_loadu_si128((const __m128i *)(b->ql + s / 8 * 64 + s / 2 % 2 * 32 + s % 2 * 16));
				__m128i h = _mm_loadu_si128((const __m128i *)(b->qh + s / 8 * 32 + s % 2 * 16));
				l = _mm_and_si128(_mm_srl_epi16(l, _mm_cvtsi32_si128(s / 4 % 2 * 4)), m4);
				h = _mm_and_si128(_mm_srl_epi16(h, _mm_cvtsi32_si128(2 * (s / 2 % 4))), _mm_set1_epi8(3));
				__m128i q = _mm_sub_epi8(_mm_or_si128(l, _mm_slli_epi16(h, 4)), _mm_set1_epi8(32));
				put16(y + s * 16, q, d * b->scales[s], 0, 0, 1);
			}
		}
		return;
	}
	sa_row_to_f32(type, src, y, n);
}

AVX2 static void
blocks_avx2(int type, const void *src, float *y, int64_t n)
{
	blocks_body(put16_avx2, type, src, y, n);
}

/*
 * Rounding of matrix inputs through a type, the same values as
 * sa_row_from_f32 then sa_row_to_f32 give.  Q8_0: d = amax/127 and
 * q = roundf(x * (1/d)), half away from zero; the blocks go to buf.
 */
AVX2 static void
round_q8_0_avx2(const float *src, float *dst, void *buf, int64_t n)
{
	sa_block_q8_0 *b = buf;
	const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
	const __m256 half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.0f);

	for (int64_t i = 0; i < n / SA_QK8_0; i++, src += SA_QK8_0, dst += SA_QK8_0) {
		__m256 v[4], m;
		for (int k = 0; k < 4; k++)
			v[k] = _mm256_loadu_ps(src + 8 * k);
		m = _mm256_max_ps(_mm256_max_ps(_mm256_and_ps(v[0], absmask), _mm256_and_ps(v[1], absmask)),
		    _mm256_max_ps(_mm256_and_ps(v[2], absmask), _mm256_and_ps(v[3], absmask)));
		__m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
		m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
		m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
		float amax = _mm_cvtss_f32(m4), d = amax / 127, id = d != 0 ? 1 / d : 0;
		uint16_t dh = sa_fp32_to_fp16(d);
		__m256 vid = _mm256_set1_ps(id), vd = _mm256_set1_ps(_cvtsh_ss(dh));
		__m256i qi[4];
		b[i].d = dh;
		for (int k = 0; k < 4; k++) {
			__m256 x = _mm256_mul_ps(v[k], vid);
			__m256 t = _mm256_round_ps(x, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
			__m256 up = _mm256_cmp_ps(_mm256_and_ps(_mm256_sub_ps(x, t), absmask), half, _CMP_GE_OQ);
			/* +-1 with the sign of x where the fraction is at least a half */
			__m256 adj = _mm256_and_ps(up, _mm256_or_ps(one, _mm256_andnot_ps(absmask, x)));
			t = _mm256_add_ps(t, adj);
			_mm256_storeu_ps(dst + 8 * k, _mm256_mul_ps(vd, t));
			qi[k] = _mm256_cvtps_epi32(t);
		}
		/* int32 -> int8, in order */
		__m256i p01 = _mm256_packs_epi32(qi[0], qi[1]), p23 = _mm256_packs_epi32(qi[2], qi[3]);
		__m256i p = _mm256_packs_epi16(p01, p23);
		p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
		_mm256_storeu_si256((__m256i *)b[i].qs, p);
	}
}

/* F16: the hardware conversion rounds to nearest even, as sa_fp32_to_fp16. */
AVX2 static void
round_f16_avx2(const float *src, float *dst, void *buf, int64_t n)
{
	int64_t i = 0;
	for (; i + 8 <= n; i += 8)
		_mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm256_cvtps_ph(_mm256_loadu_ps(src + i),
		    _MM_FROUND_TO_NEAREST_INT)));
	for (; i < n; i++)
		dst[i] = sa_fp16_to_fp32(sa_fp32_to_fp16(src[i]));
}
/* Plain AVX2 (no FMA): the same operations in the same order as the
 * generic forms, for the same bits. */
__attribute__((target("avx2"))) static float
max_avx2(const float *x, int64_t n)
{
	float mx = x[0], m8[8];
	int64_t n8 = n & ~(int64_t)7;
	__m256 vm = _mm256_set1_ps(mx);

	for (int64_t i = 0; i < n8; i += 8)
		vm = _mm256_max_ps(vm, _mm256_loadu_ps(x + i));
	_mm256_storeu_ps(m8, vm);
	for (int l = 0; l < 8; l++)
		if (m8[l] > mx)
			mx = m8[l];
	for (int64_t i = n8; i < n; i++)
		if (x[i] > mx)
			mx = x[i];
	return mx;
}

__attribute__((target("avx2"))) static double
exp_sum_avx2(float *y, const float *x, int64_t n, float mx)
{
	__m256d lo = _mm256_setzero_pd(), hi = lo;
	__m256 vm = _mm256_set1_ps(mx);
	int64_t i = 0, n8 = n & ~(int64_t)7;
	double d[4], sum;

	for (; i < n8; i += 8) {
		__m256 e = expf_neg_avx2(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm));
		_mm256_storeu_ps(y + i, e);
		lo = _mm256_add_pd(lo, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
		hi = _mm256_add_pd(hi, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
	}
	/* lanes l and l + 4 first, then in pairs, as the generic form folds */
	_mm256_storeu_pd(d, _mm256_add_pd(lo, hi));
	sum = (d[0] + d[1]) + (d[2] + d[3]);
	for (; i < n; i++) {
		y[i] = expf_neg(x[i] - mx);
		sum += y[i];
	}
	return sum;
}

/* ------------------------------------------------------------- AVX-512 */

/*
 * The same kernels on 16 lanes.  Sums are cut differently from the AVX2
 * ones, so the last bits differ between paths; within a path, one input
 * or several still give an input the same sums.
 */
#define AVX512 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl")))
#define AVX512_INLINE AVX512 static inline __attribute__((always_inline))
#define VNNI __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))
#define VNNI_INLINE VNNI static inline __attribute__((always_inline))

typedef __m512 (*ld16_fn)(const void *, int64_t);

AVX512_INLINE __m512 ld16_f32(const void *p, int64_t i) { return _mm512_loadu_ps((const float *)p + i); }
AVX512_INLINE __m512
ld16_f16(const void *p, int64_t i)
{
	return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)p + i)));
}
AVX512_INLINE __m512
ld16_bf16(const void *p, int64_t i)
{
	__m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)((const uint16_t *)p + i)));
	return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
}

ROW_DOTS(avx512, AVX512_INLINE, __m512, 16, ld16_fn, _mm512_loadu_ps, _mm512_fmadd_ps,
    _mm512_add_ps, _mm512_setzero_ps, _mm512_reduce_add_ps)
FLOAT_ROWS(avx512, AVX512, ld16, f32, 4, 2, 4)
FLOAT_ROWS(avx512, AVX512, ld16, f16, 2, 2, 4)
FLOAT_ROWS(avx512, AVX512, ld16, bf16, 2, 2, 4)

/*
 * Q8_0 rows against Q8_0 inputs, two blocks per 512-bit register: the
 * int32 sums of 4 products each, 8 lanes per block, exact; converted to
 * float, they are scaled by their block's dw*dx and summed into two
 * accumulators.  w's sign moves onto x as in the AVX2 kernel, for the
 * unsigned x signed products of VPMADDUBSW or, with VNNI, VPDPBUSD: the
 * same integers either way.
 */
typedef __m512i (*pair_fn)(__m512i uw, __m512i sx);

AVX512_INLINE __m512i
pair_bw(__m512i uw, __m512i sx)
{
	return _mm512_madd_epi16(_mm512_maddubs_epi16(uw, sx), _mm512_set1_epi16(1));
}

VNNI static inline __attribute__((always_inline)) __m512i
pair_vnni(__m512i uw, __m512i sx)
{
	return _mm512_dpbusd_epi32(_mm512_setzero_si512(), uw, sx);
}

/* the 64 int8 of blocks b and b+1 */
AVX512_INLINE __m512i
load_pair(const sa_block_q8_0 *b)
{
	return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)b[0].qs)),
	    _mm256_loadu_si256((const __m256i *)b[1].qs), 1);
}

/* the fp16 scales of blocks b..b+15, as floats */
AVX512_INLINE __m512
scales16(const sa_block_q8_0 *b)
{
	return _mm512_cvtph_ps(_mm256_set_epi16((short)b[15].d, (short)b[14].d, (short)b[13].d,
	    (short)b[12].d, (short)b[11].d, (short)b[10].d, (short)b[9].d, (short)b[8].d,
	    (short)b[7].d, (short)b[6].d, (short)b[5].d, (short)b[4].d, (short)b[3].d,
	    (short)b[2].d, (short)b[1].d, (short)b[0].d));
}

/* dot of one row with one input whose scales are xd; blocks past the last
 * multiple of 16 one at a time, as in the AVX2 kernel */
AVX512_INLINE float
q8_row512(pair_fn pair, const sa_block_q8_0 *bw, const sa_block_q8_0 *bx, const float *xd,
    int64_t nb)
{
	const __m512i half = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
	__m512 acc[2] = { _mm512_setzero_ps(), _mm512_setzero_ps() };
	int64_t b = 0;
	float s;

	for (; b + 16 <= nb; b += 16) {
		/* 16 blocks are 544 bytes: every line of them, PREFETCH_AHEAD on */
		for (int o = 0; o < 16 * (int)sizeof *bw; o += 64)
			_mm_prefetch((const char *)(bw + b) + PREFETCH_AHEAD + o, _MM_HINT_T0);
		__m512 sc = _mm512_mul_ps(scales16(bw + b), _mm512_loadu_ps(xd + b));
		for (int k = 0; k < 8; k++) {
			__m512i qw = load_pair(bw + b + 2 * k), qx = load_pair(bx + b + 2 * k);
			__m512i sx = _mm512_mask_sub_epi8(qx, _mm512_movepi8_mask(qw), _mm512_setzero_si512(), qx);
			__m512 p = _mm512_cvtepi32_ps(pair(_mm512_abs_epi8(qw), sx));
			__m512 d = _mm512_permutexvar_ps(_mm512_add_epi32(half, _mm512_set1_epi32(2 * k)), sc);
			acc[k & 1] = _mm512_fmadd_ps(p, d, acc[k & 1]);
		}
	}
	s = _mm512_reduce_add_ps(_mm512_add_ps(acc[0], acc[1]));
	return q8_tail(bw, bx, xd, b, nb, s);
}

AVX512_INLINE float
q8_row_bw(const sa_block_q8_0 *bw, const sa_block_q8_0 *bx, const float *xd, int64_t nb)
{
	return q8_row512(pair_bw, bw, bx, xd, nb);
}

VNNI static inline __attribute__((always_inline)) float
q8_row_vnni(const sa_block_q8_0 *bw, const sa_block_q8_0 *bx, const float *xd, int64_t nb)
{
	return q8_row512(pair_vnni, bw, bx, xd, nb);
}

Q8_ROWS(bw, AVX512)
Q8_ROWS(vnni, VNNI)

/* The Q8_0 GEMM's steps on 16 rows: VPMADDUBSW with w's sign moved onto x
 * (AVX-512 BW has no VPSIGNB), or VPDPBUSD on w + 128 */
AVX512_INLINE __m512i
q8_step_bw(__m512i acc, __m512i w, __m512i x)
{
	__m512i sx = _mm512_mask_sub_epi8(x, _mm512_movepi8_mask(w), _mm512_setzero_si512(), x);
	__m512i p16 = _mm512_maddubs_epi16(_mm512_abs_epi8(w), sx);
	return _mm512_add_epi32(acc, _mm512_madd_epi16(p16, _mm512_set1_epi16(1)));
}

VNNI static inline __attribute__((always_inline)) __m512i
q8_step_vnni(__m512i acc, __m512i w, __m512i x)
{
	return _mm512_dpbusd_epi32(acc, w, x);
}

/*
 * A panel of 16 rows repacked by a transpose in registers: rows 2i and
 * 2i+1 of a block in one vector, then 32-bit and 64-bit unpacks and 128-bit
 * shuffles, which leave row lane16[l] in lane l (the sums go back to row
 * order in ldy16 and sty16).  The last panel, with fewer rows, through
 * q8_repack in the same order.
 */
static const uint8_t lane16[16] = { 0, 2, 4, 6, 1, 3, 5, 7, 8, 10, 12, 14, 9, 11, 13, 15 };

AVX512_INLINE void
repack16(const char *w, size_t rb, int m, int64_t k0, int64_t kl, int off, int32_t *wp,
    float *wd)
{
	if (m < 16) {
		q8_repack(w, rb, m, 16, lane16, k0, kl, off, wp, wd);
		return;
	}
	const __m512i flip = _mm512_set1_epi8(off ? (char)0x80 : 0);
	for (int64_t b = 0; b < kl; b++) {
		__m512i a[8], u[8], v[8];
		uint16_t d[16];
		for (int i = 0; i < 8; i++) {
			const sa_block_q8_0 *r0 = (const sa_block_q8_0 *)(w + 2 * i * rb) + k0 + b;
			const sa_block_q8_0 *r1 = (const sa_block_q8_0 *)(w + (2 * i + 1) * rb) + k0 + b;
			a[i] = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256(
			    (const __m256i *)r0->qs)), _mm256_loadu_si256((const __m256i *)r1->qs), 1);
		}
		/* u: pairs of rows 4 apart interleaved (the even 32-bit words of a
		 * 128-bit lane, then the odd) */
		for (int i = 0; i < 8; i += 2) {
			u[i] = _mm512_unpacklo_epi32(a[i], a[i + 1]);
			u[i + 1] = _mm512_unpackhi_epi32(a[i], a[i + 1]);
		}
		/* v: 4 rows per 128-bit lane, one 32-bit word of each: words
		 * c, c+4 of rows 0..7 (v[0..3]) and of rows 8..15 (v[4..7]) */
		for (int h = 0; h < 2; h++)
			for (int i = 0; i < 2; i++) {
				v[4 * h + 2 * i] = _mm512_unpacklo_epi64(u[4 * h + i], u[4 * h + 2 + i]);
				v[4 * h + 2 * i + 1] = _mm512_unpackhi_epi64(u[4 * h + i], u[4 * h + 2 + i]);
			}
		/* the 128-bit lanes of word c of all rows together: words 0, 1,
		 * 2, 3 from lanes 0 and 2, words 4..7 from lanes 1 and 3 */
		for (int c = 0; c < 4; c++) {
			__m512i lo = _mm512_shuffle_i32x4(v[c], v[4 + c], 0x88);
			__m512i hi = _mm512_shuffle_i32x4(v[c], v[4 + c], 0xdd);
			_mm512_store_si512(wp + (b * 8 + c) * 16, _mm512_xor_si512(lo, flip));
			_mm512_store_si512(wp + (b * 8 + 4 + c) * 16, _mm512_xor_si512(hi, flip));
		}
		for (int l = 0; l < 16; l++)
			d[l] = ((const sa_block_q8_0 *)(w + lane16[l] * rb) + k0 + b)->d;
		_mm512_store_ps(wd + b * 16, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)d)));
	}
}

/* rows 0 <= r < m of 16 */
static inline __mmask16
mask16(int m)
{
	return (__mmask16)(m >= 16 ? 0xffff : m <= 0 ? 0 : (1u << m) - 1);
}

/* y [m] of the sums of 16 rows, lane l holding row lane16[l] */
AVX512_INLINE __m512
ldy16(const float *y, int m)
{
	const __m512i row = _mm512_set_epi32(15, 13, 11, 9, 14, 12, 10, 8, 7, 5, 3, 1, 6, 4, 2, 0);
	return _mm512_permutexvar_ps(row, _mm512_maskz_loadu_ps(mask16(m), y));
}
AVX512_INLINE void
sty16(float *y, __m512 v, int m)
{
	const __m512i lane = _mm512_set_epi32(15, 11, 14, 10, 13, 9, 12, 8, 7, 3, 6, 2, 5, 1, 4, 0);
	_mm512_mask_storeu_ps(y, mask16(m), _mm512_permutexvar_ps(lane, v));
}

/* two panels (32 rows) against 6 inputs: 12 sums in registers, each
 * broadcast of the input feeding 2 VPDPBUSD (TinyLlama's FFN up, 128
 * inputs, one thread: 4.9-5.2 ms, 5.6-5.8 with one panel against 8) */
#define Q8_P512 2
#define Q8_T512 6
GEMM_Q8(bw, AVX512, AVX512_INLINE, __m512i, __m512, 16, Q8_P512, Q8_T512, q8_step_bw, 0, repack16,
    _mm512_set1_epi32, _mm512_setzero_si512, _mm512_cvtepi32_ps, _mm512_load_ps, _mm512_set1_ps,
    _mm512_mul_ps, _mm512_add_ps, _mm512_setzero_ps, ldy16, sty16)
GEMM_Q8(vnni, VNNI, VNNI static inline __attribute__((always_inline)), __m512i, __m512, 16,
    Q8_P512, Q8_T512,
    q8_step_vnni, 1, repack16, _mm512_set1_epi32, _mm512_setzero_si512, _mm512_cvtepi32_ps,
    _mm512_load_ps, _mm512_set1_ps, _mm512_mul_ps, _mm512_add_ps, _mm512_setzero_ps, ldy16,
    sty16)

/*
 * The K-quant GEMM's repack of a panel of 16 rows, a block of all of them
 * at a time: each 4 bytes of a block's fields gathered from the 16 rows
 * (VPGATHERDD, row l in lane l, rows past m masked off as zeros), then
 * unpacked in the lanes.  The nibbles of qs, the bits of qh and the bytes
 * of the scales lie in 4 bytes as the weights they make do.
 */
AVX512_INLINE __m512i
gather16(__mmask16 k, __m512i rows, const char *p)
{
	return _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), k, rows, p, 1);
}

/* scale or pair (x, x) as int32 lanes: the layout of the scales (pair) */
AVX512_INLINE __m512i
scale16(__m512i x, int pair)
{
	return pair ? _mm512_or_si512(_mm512_slli_epi32(x, 16), _mm512_and_si512(x,
	    _mm512_set1_epi32(0xffff))) : x;
}

/* fp16 in the low 16 bits of each lane as floats */
AVX512_INLINE __m512
half16(__m512i x)
{
	return _mm512_cvtph_ps(_mm512_cvtepi32_epi16(x));
}

AVX512_INLINE void
qk_repack16(int type, const char *w, size_t rb, int m, int64_t k0, int64_t kl, int pair,
    int32_t *wp)
{
	const __m512i m4 = _mm512_set1_epi32(0x0f0f0f0f), m2 = _mm512_set1_epi32(0x03030303);
	const __m512i m6 = _mm512_set1_epi32(0x3f), one = _mm512_set1_epi32(0x01010101);
	const __m512i rows = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7,
	    6, 5, 4, 3, 2, 1, 0), _mm512_set1_epi32((int)rb));
	const __mmask16 k = mask16(m);
	int q6 = type == SA_TYPE_Q6_K, q5 = type == SA_TYPE_Q5_K;
	size_t bb = sa_type_row_size(type, SA_QK_K);

	for (int64_t b = 0; b < kl; b++) {
		const char *blk = w + (k0 + b) * bb;
		__m512i *o = (__m512i *)(wp + b * QK_VECS * 16);
		/* the same block of the next chunk: 16 or more rows are more
		 * streams than the hardware prefetcher follows */
		for (int r = 0; r < m; r++)
			for (size_t c = 0; c < bb; c += 64)
				_mm_prefetch(blk + r * rb + QK_KB * bb + c, _MM_HINT_T0);
		if (q6) {
			const sa_block_q6_k *b6 = (const sa_block_q6_k *)blk;
			__m512i sc[16];
			for (int h = 0; h < 2; h++)
				for (int s = 0; s < 8; s++) {
					__m512i hs = gather16(k, rows, (const char *)b6->qh + 32 * h + 4 * s);
					__m512i lo = gather16(k, rows, (const char *)b6->ql + 64 * h + 4 * s);
					__m512i hi = gather16(k, rows, (const char *)b6->ql + 64 * h + 32 + 4 * s);
					for (int i = 0; i < 4; i++) {
						__m512i l = _mm512_and_si512(_mm512_srli_epi32(i % 2 ? hi : lo,
						    4 * (i / 2)), m4);
						__m512i u = _mm512_and_si512(_mm512_srli_epi32(hs, 2 * i), m2);
						o[QK_W + 32 * h + 8 * i + s] = _mm512_or_si512(l,
						    _mm512_slli_epi32(u, 4));
					}
				}
			for (int j = 0; j < 16; j += 4) {
				__m512i g = gather16(k, rows, (const char *)b6->scales + j);
				for (int i = 0; i < 4; i++)
					sc[j + i] = _mm512_srai_epi32(_mm512_slli_epi32(g, 24 - 8 * i), 24);
			}
			for (int j = 0; j < 16; j++)
				o[QK_SC + j] = scale16(sc[j], pair);
			for (int j = 0; j < 8; j++)
				o[QK_MP + j] = _mm512_or_si512(_mm512_slli_epi32(sc[2 * j + 1], 21),
				    _mm512_and_si512(_mm512_slli_epi32(sc[2 * j], 5), _mm512_set1_epi32(0xffff)));
			/* d, the last 2 bytes of the block: read with the 2 before */
			_mm512_store_ps(o + QK_D, half16(_mm512_srli_epi32(gather16(k, rows,
			    (const char *)&b6->d - 2), 16)));
			_mm512_store_ps(o + QK_DMIN, _mm512_setzero_ps());
			continue;
		}
		const sa_block_q4_k *b4 = (const sa_block_q4_k *)blk;
		const char *qs = (const char *)(q5 ? ((const sa_block_q5_k *)blk)->qs : b4->qs);
		for (int c = 0; c < 4; c++)
			for (int s = 0; s < 8; s++) {
				__m512i v = gather16(k, rows, qs + 32 * c + 4 * s);
				o[QK_W + 16 * c + s] = _mm512_and_si512(v, m4);
				o[QK_W + 16 * c + 8 + s] = _mm512_and_si512(_mm512_srli_epi32(v, 4), m4);
			}
		if (q5)
			for (int s = 0; s < 8; s++) {
				__m512i h = gather16(k, rows, (const char *)((const sa_block_q5_k *)blk)->qh + 4 * s);
				for (int j = 0; j < 8; j++)
					o[QK_W + 8 * j + s] = _mm512_or_si512(o[QK_W + 8 * j + s],
					    _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(h, j), one), 4));
			}
		/* sa_k4_scale_min on the 12 bytes of 16 rows */
		__m512i g0 = gather16(k, rows, (const char *)b4->scales);
		__m512i g1 = gather16(k, rows, (const char *)b4->scales + 4);
		__m512i g2 = gather16(k, rows, (const char *)b4->scales + 8);
		for (int j = 0; j < 4; j++) {
			__m512i sc = _mm512_and_si512(_mm512_srli_epi32(g0, 8 * j), m6);
			__m512i mn = _mm512_and_si512(_mm512_srli_epi32(g1, 8 * j), m6);
			__m512i sh = _mm512_srli_epi32(g2, 8 * j);
			__m512i sc4 = _mm512_or_si512(_mm512_and_si512(sh, _mm512_set1_epi32(0xf)),
			    _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(g0, 8 * j + 6),
			    _mm512_set1_epi32(3)), 4));
			__m512i mn4 = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(sh, 4),
			    _mm512_set1_epi32(0xf)), _mm512_slli_epi32(_mm512_and_si512(
			    _mm512_srli_epi32(g1, 8 * j + 6), _mm512_set1_epi32(3)), 4));
			o[QK_SC + j] = scale16(sc, pair);
			o[QK_SC + 4 + j] = scale16(sc4, pair);
			o[QK_MP + j] = scale16(mn, 1);
			o[QK_MP + 4 + j] = scale16(mn4, 1);
		}
		for (int j = 8; j < 16; j++)
			o[QK_SC + j] = _mm512_setzero_si512();
		__m512i dd = gather16(k, rows, blk);
		_mm512_store_ps(o + QK_D, half16(_mm512_and_si512(dd, _mm512_set1_epi32(0xffff))));
		_mm512_store_ps(o + QK_DMIN, half16(_mm512_srli_epi32(dd, 16)));
	}
}

/* y [m] of the sums of 16 rows in order, and back */
AVX512_INLINE __m512
qk_ldy16(const float *y, int m)
{
	return _mm512_maskz_loadu_ps(mask16(m), y);
}
AVX512_INLINE void
qk_sty16(float *y, __m512 v, int m)
{
	_mm512_mask_storeu_ps(y, mask16(m), v);
}

/* The K-quant GEMM's steps on 16 rows: those of AVX2, or VPDPBUSD, then
 * the sub-block's sum times the scale (VPMULLD), and the pairs by
 * VPDPWSSD */
#define QK_STEP_BW(acc, w, x, sc) \
	_mm512_add_epi32(acc, _mm512_madd_epi16(_mm512_maddubs_epi16(w, x), sc))
#define QK_SCALE_BW(sum, s, sc) _mm512_add_epi32(sum, s)
#define QK_PAIRS_BW(acc, c, bs) _mm512_add_epi32(acc, _mm512_madd_epi16(c, bs))
#define QK_STEP_VNNI(acc, w, x, sc) _mm512_dpbusd_epi32(acc, w, x)
#define QK_SCALE_VNNI(sum, s, sc) _mm512_add_epi32(sum, _mm512_mullo_epi32(s, sc))
#define QK_PAIRS_VNNI(acc, c, bs) _mm512_dpwssd_epi32(acc, c, bs)

/* two panels (32 rows) against 4 inputs: 8 sums of a sub-block, 8 of
 * the block and 8 float sums in registers (5632 x 2048 Q4_K, 128 inputs,
 * one thread: 5.1 ms; 6.4 with a weight vector loaded for each input, 2 x 6) */
#define QK_P512 2
#define QK_T512 4
GEMM_QK(bw, AVX512, AVX512_INLINE, __m512i, __m512, 16, QK_P512, QK_T512, qk_repack16, 1, QK_STEP_BW,
    QK_SCALE_BW, QK_PAIRS_BW, _mm512_set1_epi32, _mm512_setzero_si512, _mm512_sub_epi32,
    _mm512_cvtepi32_ps, _mm512_load_ps, _mm512_set1_ps, _mm512_mul_ps, _mm512_add_ps,
    _mm512_sub_ps, _mm512_setzero_ps, qk_ldy16, qk_sty16)
GEMM_QK(vnni, VNNI, VNNI_INLINE, __m512i, __m512, 16, QK_P512, QK_T512, qk_repack16, 0, QK_STEP_VNNI,
    QK_SCALE_VNNI, QK_PAIRS_VNNI, _mm512_set1_epi32, _mm512_setzero_si512, _mm512_sub_epi32,
    _mm512_cvtepi32_ps, _mm512_load_ps, _mm512_set1_ps, _mm512_mul_ps, _mm512_add_ps,
    _mm512_sub_ps, _mm512_setzero_ps, qk_ldy16, qk_sty16)

AVX512 static void
fp16_to_fp32_avx512(const uint16_t *src, float *dst, int64_t n)
{
	int64_t i = 0;
	for (; i + 16 <= n; i += 16)
		_mm512_storeu_ps(dst + i, ld16_f16(src, i));
	for (; i < n; i++)
		dst[i] = _cvtsh_ss(src[i]);
}

AVX512_INLINE void
put16_avx512(float *y, __m128i q, float a, float b, int sub, int sign)
{
	__m512i i = sign ? _mm512_cvtepi8_epi32(q) : _mm512_cvtepu8_epi32(q);
	__m512 f = _mm512_mul_ps(_mm512_set1_ps(a), _mm512_cvtepi32_ps(i));
	_mm512_storeu_ps(y, sub ? _mm512_sub_ps(f, _mm512_set1_ps(b)) : f);
}

AVX512 static void
blocks_avx512(int type, const void *src, float *y, int64_t n)
{
	blocks_body(put16_avx512, type, src, y, n);
}

AVX512 static float
dot_avx512(const float *a, const float *b, int64_t n)
{
	return dot1_avx512(ld16_f32, ld1_f32, 4, a, b, n);
}

/* a column of 16 inputs in one gather, the inputs after nx zeros */
AVX512 static void
pack_avx512(const float *x, int nx, int64_t n, float *xp)
{
	__m512i idx = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5,
	    4, 3, 2, 1, 0), _mm512_set1_epi32((int)n));

	for (int p = 0; p < nx; p += GEMM_LANES) {
		__mmask16 in = nx - p >= GEMM_LANES ? 0xffff : (__mmask16)((1u << (nx - p)) - 1);
		const float *xr = x + (size_t)p * n;
		for (int64_t c = 0; c < n; c++, xp += GEMM_LANES)
			_mm512_storeu_ps(xp, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), in, idx,
			    xr + c, 4));
	}
}

GEMM_F16(avx512, AVX512, AVX512_INLINE, __m512, 16, 8, 3, 64, _mm512_loadu_ps, _mm512_storeu_ps,
    _mm512_fmadd_ps, _mm512_set1_ps, _mm512_setzero_ps)
#endif /* HAVE_X86 */

/* ------------------------------------------------------------ dispatch */

static const char *const path_names[] = { "generic", "avx2", "avx512" };

static const struct kernels kernels_generic = {
	&sa_float_kernels_generic,
	rows_f32_generic, rows_f16_generic, rows_bf16_generic, rows_q8_0_generic,
	rowsn_f32_generic, rowsn_f16_generic, rowsn_bf16_generic, rowsn_q8_0_generic,
	deq_bf16_generic, fp16_to_fp32_generic, fp32_to_fp16_generic,
	sa_row_to_f32, round_f16_generic, round_q8_0_generic, round_q8_k_generic,
	dot_generic, rows_f32_generic, axpy_generic, max_generic, exp_sum_generic, sa_quant_generic,
	gemm_f16_generic, gemm_q8_0_generic, gemm_k_generic, pack_generic,
};

#ifdef HAVE_X86
static const struct kernels kernels_avx2 = {
	&sa_float_kernels_avx2,
	rows_f32_avx2, rows_f16_avx2, rows_bf16_avx2, rows_q8_0_avx2,
	rowsn_f32_avx2, rowsn_f16_avx2, rowsn_bf16_avx2, rowsn_q8_0_avx2,
	deq_bf16_avx2, fp16_to_fp32_avx2, fp32_to_fp16_avx2,
	blocks_avx2, round_f16_avx2, round_q8_0_avx2, sa_round_q8_k_avx2,
	dot_avx2, dots_avx2, axpy_avx2, max_avx2, exp_sum_avx2, sa_quant_avx2,
	gemm_f16_avx2, gemm_q8_0_avx2, gemm_k_avx2, pack_generic,
};

/* AVX-512 kernels where they pay, AVX2 ones for the rest; Q8_0 rows
 * through VPMADDUBSW, or VNNI where kernels_init finds it */
static const struct kernels kernels_avx512 = {
	&sa_float_kernels_avx2,
	rows_f32_avx512, rows_f16_avx512, rows_bf16_avx512, rows_q8_0_bw,
	rowsn_f32_avx512, rowsn_f16_avx512, rowsn_bf16_avx512, rowsn_q8_0_bw,
	deq_bf16_avx2, fp16_to_fp32_avx512, fp32_to_fp16_avx2,
	blocks_avx512, round_f16_avx2, round_q8_0_avx2, sa_round_q8_k_avx2,
	dot_avx512, rows_f32_avx512, axpy_avx2, max_avx2, exp_sum_avx2, sa_quant_avx512,
	gemm_f16_avx512, gemm_q8_0_bw, gemm_k_bw, pack_avx512,
};

/*
 * The SA_CPU_ features of this CPU: cpuid's bits (leaf 1 ECX, leaf 7 EBX,
 * ECX and, subleaf 1, EAX), where the OS also saves the registers they use
 * (XCR0: YMM bits 1-2, ZMM bits 5-7), without which they fault.
 */
static unsigned
cpu_read(void)
{
	unsigned a, b, c, d, lo, hi, max7, f = 0;

	if (!__get_cpuid(1, &a, &b, &c, &d) || !(c >> 27 & 1))    /* OSXSAVE */
		return 0;
	int fma = c >> 12 & 1, avx = c >> 28 & 1, f16c = c >> 29 & 1;
	__asm__ volatile ("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
	if (!__get_cpuid_count(7, 0, &max7, &b, &c, &d))
		return 0;
	if ((lo & 0x6) == 0x6 && avx && fma && f16c && (b >> 5 & 1))
		f |= SA_CPU_AVX2;
	/* F (EBX 16), BW (30), VL (31) */
	if ((f & SA_CPU_AVX2) && (lo & 0xe6) == 0xe6 && (b >> 16 & 1) && (b >> 30 & 1) && (b >> 31 & 1))
		f |= SA_CPU_AVX512;
	if ((f & SA_CPU_AVX512) && (c >> 11 & 1))
		f |= SA_CPU_VNNI;
	if ((f & SA_CPU_AVX512) && max7 >= 1 && __get_cpuid_count(7, 1, &a, &b, &c, &d) && (a >> 5 & 1))
		f |= SA_CPU_BF16;
	return f;
}
#endif

static pthread_once_t kernels_once = PTHREAD_ONCE_INIT;
static int kernels_path = SA_KERNELS_GENERIC;
static unsigned cpu_features;

static void
kernels_init(void)
{
	const char *want = getenv("SA_KERNELS");

	K = kernels_generic;
#ifdef HAVE_X86
	cpu_features = cpu_read();
	if (cpu_features & SA_CPU_AVX512)
		kernels_path = SA_KERNELS_AVX512;
	else if (cpu_features & SA_CPU_AVX2)
		kernels_path = SA_KERNELS_AVX2;
#endif
	/* a narrower path by name, for tests and comparisons */
	for (int p = 0; want && p < kernels_path; p++)
		if (!strcmp(want, path_names[p]))
			kernels_path = p;
#ifdef HAVE_X86
	if (kernels_path == SA_KERNELS_AVX2)
		K = kernels_avx2;
	if (kernels_path == SA_KERNELS_AVX512) {
		K = kernels_avx512;
		if (cpu_features & SA_CPU_VNNI) {
			K.rows_q8_0 = rows_q8_0_vnni;
			K.rowsn_q8_0 = rowsn_q8_0_vnni;
			K.quant = sa_quant_vnni;
			K.gemm_q8_0 = gemm_q8_0_vnni;
			K.gemm_k = gemm_k_vnni;
		}
	}
#endif
}

static inline const struct kernels *
kernels(void)
{
	pthread_once(&kernels_once, kernels_init);
	return &K;
}

int
sa_kernels_path(void)
{
	kernels();
	return kernels_path;
}

const char *
sa_kernels_name(void)
{
	return path_names[sa_kernels_path()];
}

unsigned
sa_cpu_features(void)
{
	kernels();
	return cpu_features;
}

int
sa_type_act(int type)
{
	switch (type) {
	case SA_TYPE_Q4_0: case SA_TYPE_Q4_1: case SA_TYPE_Q5_0: case SA_TYPE_Q5_1:
		/* Q8_1, which Q4_1 and Q5_1 see, holds the values of Q8_0 */
		return SA_TYPE_Q8_0;
	case SA_TYPE_Q2_K: case SA_TYPE_Q3_K: case SA_TYPE_Q4_K: case SA_TYPE_Q5_K:
	case SA_TYPE_Q6_K:
		return SA_TYPE_Q8_K;
	}
	return type;
}

/*
 * y[j*ldy + r] = row r of w (nr rows of n columns, a block type) . input j
 * (x + j*ldx) for nx inputs: DEQ_FLOATS of a row converted at a time, then
 * dotted with every input; an input's sums do not depend on nx.
 */
#define DEQ_FLOATS 1024
static void
rows_blocks(const struct kernels *k, int type, const char *w, size_t rb, int64_t n,
    int64_t nr, int nx, const float *x, size_t ldx, float *y, size_t ldy)
{
	float buf[DEQ_FLOATS];
	int64_t be;
	size_t bb;

	sa_type_block(type, &be, &bb);
	int64_t step = DEQ_FLOATS / be * be;
	for (int64_t r = 0; r < nr; r++) {
		const char *row = w + r * rb;
		for (int j = 0; j < nx; j++)
			y[j * ldy + r] = 0;
		for (int64_t c = 0; c < n; c += step) {
			int64_t len = n - c < step ? n - c : step;
			k->blocks(type, row + c / be * bb, buf, len);
			for (int j = 0; j < nx; j++)
				y[j * ldy + r] += k->dot(buf, x + j * ldx + c, len);
		}
	}
}

void
sa_rows_dot_n(const sa_matrix *w, int64_t r0, int64_t r1, int nx, const float *x,
    size_t ldx, const void *xq, size_t ldxq, float *y, size_t ldy)
{
	const struct kernels *k = kernels();
	size_t rb = sa_type_row_size(w->type, w->cols);
	const char *p = (const char *)w->data + (size_t)r0 * rb;
	rows_fn *f;
	rowsn_fn *fn;

	if (r1 <= r0)
		return;
	switch (w->type) {
	case SA_TYPE_F32: f = k->rows_f32; fn = k->rowsn_f32; break;
	case SA_TYPE_F16: f = k->rows_f16; fn = k->rowsn_f16; break;
	case SA_TYPE_BF16: f = k->rows_bf16; fn = k->rowsn_bf16; break;
	case SA_TYPE_Q8_0: f = k->rows_q8_0; fn = k->rowsn_q8_0; break;
	default:
		/* in integers against the input quantized, or through F32 */
		if (xq && w->type < SA_QUANT_TYPES && (f = k->quant[w->type].rows)) {
			fn = k->quant[w->type].rowsn;
			break;
		}
		rows_blocks(k, w->type, p, rb, w->cols, r1 - r0, nx, x, ldx, y + r0, ldy);
		return;
	}
	if (nx == 1)
		f(p, rb, w->cols, x, xq, y + r0, r1 - r0);
	else
		fn(p, rb, w->cols, nx, x, ldx, xq, ldxq, y + r0, ldy, r1 - r0);
}

int
sa_rows_batch(int type)
{
	const struct kernels *k = kernels();

	return kernels_path != SA_KERNELS_GENERIC && type >= 0 && type < SA_QUANT_TYPES &&
	    k->quant[type].rows && sa_type_act(type) == SA_TYPE_Q8_K;
}

int
sa_gemm_own(int type)
{
	/* the portable kernels are there to check the others against */
	return (type == SA_TYPE_F16 || type == SA_TYPE_Q8_0 || type == SA_TYPE_Q4_K ||
	    type == SA_TYPE_Q5_K || type == SA_TYPE_Q6_K) && sa_kernels_path() != SA_KERNELS_GENERIC;
}

void
sa_gemm_pack(const float *x, int nx, int64_t n, float *xp)
{
	kernels()->pack(x, nx, n, xp);
}

void
sa_gemm_pack_q8_0(const void *xq, size_t ldxq, int nx, int64_t n, void *xp)
{
	pack_q8_0(xq, ldxq, nx, n, xp);
}

void
sa_gemm_rows(const sa_matrix *w, int64_t r0, int64_t r1, const void *xp, int nx, float *y,
    size_t ldy)
{
	const struct kernels *k = kernels();
	size_t rb = sa_type_row_size(w->type, w->cols);
	const char *p = (const char *)w->data + (size_t)r0 * rb;

	if (r1 <= r0)
		return;
	if (w->type == SA_TYPE_Q8_0)
		k->gemm_q8_0(p, rb, w->cols, r1 - r0, xp, nx, y + r0, ldy);
	else if (sa_type_act(w->type) == SA_TYPE_Q8_K)
		k->gemm_k(w->type, p, rb, w->cols, r1 - r0, xp, nx, y + r0, ldy);
	else
		k->gemm_f16(p, rb, w->cols, r1 - r0, xp, nx, y + r0, ldy);
}

void
sa_rows_dot(const sa_matrix *w, int64_t r0, int64_t r1, const float *x,
    const void *xq, float *y)
{
	sa_rows_dot_n(w, r0, r1, 1, x, 0, xq, 0, y, 0);
}

void
sa_rows_to_f32(const sa_matrix *w, int64_t r0, int64_t r1, float *dst)
{
	const struct kernels *k = kernels();
	size_t rb = sa_type_row_size(w->type, w->cols);
	const char *p = (const char *)w->data + (size_t)r0 * rb;

	if (r1 <= r0)
		return;
	switch (w->type) {
	case SA_TYPE_F32: memcpy(dst, p, (size_t)(r1 - r0) * rb); break;
	case SA_TYPE_F16:
		for (int64_t r = r0; r < r1; r++, p += rb, dst += w->cols)
			k->fp16_to_fp32((const uint16_t *)p, dst, w->cols);
		break;
	case SA_TYPE_BF16: k->deq_bf16(p, rb, w->cols, dst, r1 - r0); break;
	default:
		for (int64_t r = r0; r < r1; r++, p += rb, dst += w->cols)
			k->blocks(w->type, p, dst, w->cols);
		break;
	}
}

void
sa_round_row(int type, const float *src, float *dst, void *buf, int64_t n)
{
	const struct kernels *k = kernels();

	switch (type) {
	case SA_TYPE_F16: k->round_f16(src, dst, buf, n); break;
	case SA_TYPE_Q8_0: k->round_q8_0(src, dst, buf, n); break;
	case SA_TYPE_Q8_K: k->round_q8_k(src, dst, buf, n); break;
	case SA_TYPE_F32: if (dst != src) memcpy(dst, src, (size_t)n * sizeof(float)); break;
	default: round_generic(type, src, dst, buf, n); break;
	}
}

void
sa_fp16_to_fp32_n(const uint16_t *src, float *dst, int64_t n)
{
	kernels()->fp16_to_fp32(src, dst, n);
}

void
sa_fp32_to_fp16_n(const float *src, uint16_t *dst, int64_t n)
{
	kernels()->fp32_to_fp16(src, dst, n);
}

const sa_float_kernels *
sa_kernels_float(void)
{
	return kernels()->f;
}

float
sa_dot_f32(const float *a, const float *b, int64_t n)
{
	return kernels()->dot(a, b, n);
}

void
sa_dot_rows(const float *M, int64_t rows, int64_t cols, const float *x, float *y)
{
	kernels()->dots(M, (size_t)cols * sizeof *M, cols, x, NULL, y, rows);
}

void
sa_axpy_f32(float a, const float *x, float *y, int64_t n)
{
	kernels()->axpy(a, x, y, n);
}

float
sa_max_f32(const float *x, int64_t n)
{
	return kernels()->max(x, n);
}

double
sa_exp_sum_f32(float *y, const float *x, int64_t n, float mx)
{
	return kernels()->exp_sum(y, x, n, mx);
}

void
sa_softmax_f32(float *x, int64_t n)
{
	float inv = (float)(1.0 / sa_exp_sum_f32(x, x, n, sa_max_f32(x, n)));

	for (int64_t i = 0; i < n; i++)
		x[i] *= inv;
}
