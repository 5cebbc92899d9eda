/*
 * kernels_impl.h - compute kernels and the worker pool, shared by model.c
 * and forward.c.  Not part of the public API.
 */
#ifndef KERNELS_IMPL_H
#define KERNELS_IMPL_H

#include <stdint.h>
#include <cblas.h>
#include "sa.h"
#include "types_impl.h"    /* sa_block_q8_0 */

/* ---------------------------------------------------------------- pool */

/* A job is cut into nchunks chunks; fn runs chunk `chunk` on thread ith
 * (0 <= ith < sa_get_threads(), the caller is 0: for per-thread scratch).
 * Which thread runs which chunk varies from run to run: results must depend
 * on the chunk only. */
typedef void (*sa_chunk_fn)(void *arg, int ith, int chunk, int nchunks);

/* Run all chunks of a job (nchunks <= 0: one per thread) and wait. */
void sa_pool_run_chunks(sa_chunk_fn fn, void *arg, int nchunks);

/* The simple form: fn(arg, part, nparts) for each of nparts = threads parts,
 * concurrently (a part may use scratch of its own, indexed by part). */
typedef void (*sa_task_fn)(void *arg, int part, int nparts);
void sa_pool_run(sa_task_fn fn, void *arg);
/* C [M][N] = alpha A [M][K] op(B) + beta C, row-major, over the pool in
 * blocks of sa_gemm_block(N, M*K) columns of C: the same bits with any
 * number of threads.  Not from within a chunk of the pool, where
 * cblas_sgemm itself runs on the chunk's thread. */
void sa_sgemm(CBLAS_TRANSPOSE tb, int M, int N, int K, float alpha, const float *A,
    int lda, const float *B, int ldb, float beta, float *C, int ldc);
/* Columns per block of a product's output of n columns, work multiply-adds
 * each: a function of the shape alone. */
int sa_gemm_block(int64_t n, int64_t work);

/* The share [lo, hi) of chunk ith among nth of n items. */
static inline void sa_split(int64_t n, int ith, int nth, int64_t *lo, int64_t *hi)
{
	*lo = n * ith / nth;
	*hi = n * (ith + 1) / nth;
}

/* ------------------------------------------------------------- kernels */

/*
 * y[r] = W[r,:] . x for rows r0 <= r < r1 of W [rows][cols].
 * x [cols] F32; xq, where not NULL, holds x quantized to sa_type_act's
 * type (for Q8_0 W it must): Q8_0 blocks [cols/32] or Q8_K blocks
 * [cols/256], from sa_round_row's buf.
 */
void sa_rows_dot(const sa_matrix *w, int64_t r0, int64_t r1, const float *x,
    const void *xq, float *y);

/* y [rows] = M [rows][cols] x in F32, each y[r] what sa_dot_f32 gives for
 * row r, in one call: the row kernel where it sums as dot does. */
void sa_dot_rows(const float *M, int64_t rows, int64_t cols, const float *x, float *y);

/* The same for nx inputs at once, each weight row read once for all:
 * input j at x + j*ldx (and xq + j*ldxq bytes), output y[j*ldy + r].  An
 * input gets the same sums as from sa_rows_dot. */
void sa_rows_dot_n(const sa_matrix *w, int64_t r0, int64_t r1, int nx, const float *x,
    size_t ldx, const void *xq, size_t ldxq, float *y, size_t ldy);

/* Whether a batch of inputs goes faster through the row kernels of a
 * matrix of this type than through sgemm on its rows converted to F32:
 * the vector kernels of the K-quants, in integers.  Not the portable ones,
 * nor those of Q4_0 .. Q5_1, which weigh every block of 32 in float
 * (TinyLlama-shaped prefill, Zen 5: 0.7 times sgemm's speed for Q4_0,
 * 1.6-2 times for Q3_K_M). */
int sa_rows_batch(int type);

/*
 * Products of F16, Q8_0, Q4_K, Q5_K and Q6_K weights with many inputs
 * through the path's own kernel rather than sgemm on the weights converted
 * to F32 (sa_gemm_own): the inputs packed once, then y[t*ldy + r] = row r
 * of w . input t for rows r0 <= r < r1 (sa_gemm_rows), the same bits on
 * every path.
 *   F16: the inputs, F16 values held as F32, GEMM_LANES of them to a
 *   vector for every column: xp [ceil(nx/GEMM_LANES)][cols][GEMM_LANES] =
 *   x [nx][cols], zeros after the last (sa_gemm_pack); each sum added
 *   column after column, the products exact.
 *   Q8_0: the inputs' Q8_0 blocks (input t at xq + t*ldxq bytes, from
 *   sa_round_row), Q8P_BYTES(cols/32) bytes each (sa_gemm_pack_q8_0): their
 *   int8, then the blocks' scales as floats, then the sums of their int8
 *   as int32; each sum block after block, dw*dx times the block's integer
 *   dot added to it: the order of the portable row kernel.
 *   Q4_K, Q5_K, Q6_K: the inputs' Q8_K blocks as sa_round_row leaves
 *   them, Q8K_BYTES(cols/256) bytes each; the bits of the portable row
 *   kernel.
 */
#define GEMM_LANES 16
#define Q8P_BYTES(nb) ((size_t)(nb) * (SA_QK8_0 + 8))
/* Bytes of nb Q8_K blocks, which sa_type_row_size, for the types of
 * tensors, does not give. */
#define Q8K_BYTES(nb) ((size_t)(nb) * sizeof(sa_block_q8_k))
/* Bytes of one input of cols columns rounded to an activation type
 * (sa_type_act): Q8_K too. */
static inline size_t
sa_act_row_size(int act, int64_t cols)
{
	return act == SA_TYPE_Q8_K ? Q8K_BYTES(cols / SA_QK_K) : sa_type_row_size(act, cols);
}
int sa_gemm_own(int type);
void sa_gemm_pack(const float *x, int nx, int64_t cols, float *xp);
void sa_gemm_pack_q8_0(const void *xq, size_t ldxq, int nx, int64_t cols, void *xp);
void sa_gemm_rows(const sa_matrix *w, int64_t r0, int64_t r1, const void *xp, int nx,
    float *y, size_t ldy);

/* The type llama.cpp rounds the input of a matrix of this type to (its
 * vec_dot_type): the type itself, Q8_0 for Q4_0 .. Q5_1, Q8_K for the
 * K-quants. */
int sa_type_act(int type);

/*
 * The row kernels: y[r] = row r of w (n columns, nr rows row_bytes apart)
 * . x, for one input x [n] (rows) or for nx of them (rowsn: input j at
 * x + j*ldx, into y + j*ldy), each input of rowsn getting the bits rows
 * gives it.  The kernels of the block types read their input quantized
 * once, xq (input j at xq + j*ldxq bytes), and not x.
 */
typedef void sa_rows_fn(const void *w, size_t row_bytes, int64_t n, const float *x,
    const void *xq, float *y, int64_t nr);
typedef void sa_rowsn_fn(const void *w, size_t row_bytes, int64_t n, int nx, const float *x,
    size_t ldx, const void *xq, size_t ldxq, float *y, size_t ldy, int64_t nr);
/* Inputs a vector rowsn kernel of kernels.c takes in one pass over a row,
 * at most: the Q8_0 kernels this many, those of F32, F16 and BF16 rows 3
 * to a tile of two rows or this many to a row alone. */
#define ROWS_GROUP 4
/*
 * Bytes ahead of the weights being read that the row kernels ask for.  One
 * thread streaming rows one after another got a third of what it could
 * read with the hardware prefetcher alone (TinyLlama-shaped F16 decoding,
 * one thread: 1.4x with 4 KiB ahead; 512 B gave 1.1x, 2 KiB 1.3x).
 */
#define PREFETCH_AHEAD 4096

/*
 * The kernels of rows of the block types against inputs quantized once
 * (kernels_quant.c), by type id up to Q6_K: Q8_K inputs (sa_block_q8_k)
 * for the K-quants, Q8_0 (sa_block_q8_0) for Q4_0 .. Q5_1.  One table per
 * kernel path; a NULL entry is a type the path has no kernel for.
 */
#define SA_QUANT_TYPES (SA_TYPE_Q6_K + 1)
typedef struct sa_quant_rows {
	sa_rows_fn *rows;
	sa_rowsn_fn *rowsn;
} sa_quant_rows;
extern const sa_quant_rows sa_quant_generic[SA_QUANT_TYPES], sa_quant_avx2[SA_QUANT_TYPES],
    sa_quant_avx512[SA_QUANT_TYPES], sa_quant_vnni[SA_QUANT_TYPES];
/* The rounding of inputs to Q8_K (sa_round_row) on the AVX2 and AVX-512
 * paths: the bits of types.c's. */
void sa_round_q8_k_avx2(const float *src, float *dst, void *buf, int64_t n);

/* dst [r1-r0][cols] = rows r0..r1-1 of W as F32. */
void sa_rows_to_f32(const sa_matrix *w, int64_t r0, int64_t r1, float *dst);

/* dst [n] = src rounded through type (the values sa_row_from_f32 then
 * sa_row_to_f32 give); buf receives the row in the type, for Q8_0 the
 * blocks the Q8_0 kernels read (room for n floats is always enough). */
void sa_round_row(int type, const float *src, float *dst, void *buf, int64_t n);

/* a . b over n floats. */
float sa_dot_f32(const float *a, const float *b, int64_t n);
/* y += a * x over n floats. */
void sa_axpy_f32(float a, const float *x, float *y, int64_t n);
/* The largest of x [n], n >= 1. */
float sa_max_f32(const float *x, int64_t n);
/* y [n] = exp(x - mx) for x <= mx (y may be x); returns the sum of y in
 * double: element i into running sum i mod 8, folded in pairs, the tail
 * after.  The rows of softmax in attention and of the cross-entropy. */
double sa_exp_sum_f32(float *y, const float *x, int64_t n, float mx);
/* x [n] := exp(x - max(x)) / sum, in place, from the two above. */
void sa_softmax_f32(float *x, int64_t n);

/* dst [n] = src [n] F16 as F32 (exact), and back, rounding to nearest
 * even: the conversions of F16 rows (sa_row_to_f32, sa_row_from_f32). */
void sa_fp16_to_fp32_n(const uint16_t *src, float *dst, int64_t n);
void sa_fp32_to_fp16_n(const float *src, uint16_t *dst, int64_t n);

/*
 * Kernels whose sums give the same bits on every path (kernels_float.c),
 * one set per path, the path's through sa_kernels_float():
 *   scores   sc [r][c] = Q [r][dh] K [c][dh]^T, in double      (encode.c)
 *   softmax  sc [c] := exp(sc * scale - max); returns the sum
 *   mix      S [r][dh] = W [r][c] V [c][dh]
 *   widen    dst [n] = src [n], float to double
 *   dot_f64  a . b [n] of floats, in double                    (train.c)
 *   swiglu   act [n] = silu(gate) * up; act may be gate         (train.c, forward.c)
 *   swiglu_back  dgate, dup [n] from dact [n], gate and up
 */
typedef struct sa_float_kernels {
	void (*scores)(const double *Q, const double *K, int r, int c, int dh, double *sc);
	double (*softmax)(double *sc, int c, double scale);
	void (*mix)(const double *W, const double *V, int r, int c, int dh, double *S);
	void (*widen)(const float *src, double *dst, int n);
	double (*dot_f64)(const float *a, const float *b, int n);
	void (*swiglu)(float *act, const float *gate, const float *up, size_t n);
	void (*swiglu_back)(float *dgate, float *dup, const float *dact, const float *gate,
	    const float *up, size_t n);
} sa_float_kernels;
extern const sa_float_kernels sa_float_kernels_generic, sa_float_kernels_avx2;
const sa_float_kernels *sa_kernels_float(void);

/*
 * The kernel paths, each needing more of the CPU than the one before.  The
 * library takes one for the whole process at its first use: the widest the
 * CPU's feature bits allow, or a narrower one named by the environment
 * variable SA_KERNELS (generic, avx2 or avx512); vector code elsewhere in
 * the library follows it.
 */
enum { SA_KERNELS_GENERIC, SA_KERNELS_AVX2, SA_KERNELS_AVX512 };
int sa_kernels_path(void);
/* Its name: "generic", "avx2" or "avx512". */
const char *sa_kernels_name(void);

/* What the CPU has of what the kernels (and OpenBLAS's) use:
 * AVX2 with FMA and F16C; AVX-512 F, BW and VL; AVX512_VNNI; AVX512_BF16. */
enum { SA_CPU_AVX2 = 1, SA_CPU_AVX512 = 2, SA_CPU_VNNI = 4, SA_CPU_BF16 = 8 };
unsigned sa_cpu_features(void);

#endif
