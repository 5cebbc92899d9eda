/*
 * test_kernels - every kernel path this CPU can run against the portable
 * one: the row dot products within a tolerance of summation order (and
 * several inputs at once each the bits of one alone), those of the block
 * types in integers also against the dequantized rows and inputs, the
 * conversions bit for bit, and kernels_float.c's kernels bit for bit; the
 * path taken from the CPU's feature bits and SA_KERNELS, and OpenBLAS's
 * core type with it.
 * usage: test_kernels (SA_KERNELS and OPENBLAS_CORETYPE as the library
 * reads them)
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* The kernel tables are static: take them from the source.  The program
 * then defines every symbol of kernels.o, so the linker never pulls that
 * member from libsa.a. */
#include "../../lib/kernels.c"
#include "t.h"

char *openblas_get_corename(void);
extern void gotoblas_dynamic_init(void) __attribute__((weak));

static uint64_t rng = 7;

static float
frand(void)
{
	return (float)(2 * sa_unif(&rng) - 1);
}

/* One path's table under test against the generic one. */
struct path {
	const char *name;
	const struct kernels *k;
};

/* MAXX inputs at once: two groups of the kernels and a part of a third */
enum { ROWS = 5, MAXN = 2080, MAXX = 2 * ROWS_GROUP + 2 };

/* |a - b| within what summing n products in another order may move: a
 * relative 1e-5 of the sum of their magnitudes (ulp 6e-8 times a few
 * hundred, far below a real error's size) */
static int
near(float a, float b, double mag)
{
	return fabs((double)a - b) <= 1e-5 * mag + 1e-30;
}

/* sum |w_i x_i| of row r of an F32 copy of the weights */
static double
magnitude(const float *wf, const float *x, int64_t n)
{
	double m = 0;
	for (int64_t i = 0; i < n; i++)
		m += fabs((double)wf[i] * x[i]);
	return m;
}

/* Rows of a block type other than Q8_0: random bytes, with finite fp16
 * scales of either sign times `scale` (and so every bit pattern of the
 * integers and sub-block scales); wf the rows as F32. */
static void
random_blocks(int type, unsigned char *w, size_t rb, int64_t n, float scale, float *wf)
{
	size_t off[2], bb;
	int64_t be;
	int ns = sa_type_scales(type, off);

	sa_type_block(type, &be, &bb);
	for (size_t i = 0; i < ROWS * rb; i++)
		w[i] = (unsigned char)((frand() + 1) * 128);
	for (size_t blk = 0; blk < ROWS * rb / bb; blk++)
		for (int k = 0; k < ns; k++) {
			uint16_t h = sa_fp32_to_fp16(frand() * scale);
			memcpy(w + blk * bb + off[k], &h, 2);
		}
	for (int r = 0; r < ROWS; r++)
		sa_row_to_f32(type, w + r * rb, wf + r * n, n);
}

/* row . x in double */
static double
dot_double(const float *w, const float *x, int64_t n)
{
	double s = 0;
	for (int64_t i = 0; i < n; i++)
		s += (double)w[i] * x[i];
	return s;
}

/* The row dot products of one type: one input against the generic
 * kernel; within a path, 1 .. MAXX inputs at once give each input the
 * bits it gets alone.  The generic kernels of the block types, in
 * integers, against the dot product of the rows and inputs as F32. */
static void
test_rows(const struct path *p, int type, int64_t n)
{
	static float wf[ROWS * MAXN], x[MAXN], xr[MAXX][MAXN], yn[MAXX][ROWS];
	static unsigned char w[ROWS * MAXN * 4], xq[MAXX][MAXN * 4];
	float y0[ROWS], y1[ROWS];
	size_t rb = sa_type_row_size(type, n);
	int bad = 0, badn = 0, badd = 0;
	rows_fn *f, *g;
	rowsn_fn *fn;

	switch (type) {
	case SA_TYPE_F32: f = p->k->rows_f32; fn = p->k->rowsn_f32; g = kernels_generic.rows_f32; break;
	case SA_TYPE_F16: f = p->k->rows_f16; fn = p->k->rowsn_f16; g = kernels_generic.rows_f16; break;
	case SA_TYPE_BF16: f = p->k->rows_bf16; fn = p->k->rowsn_bf16; g = kernels_generic.rows_bf16; break;
	case SA_TYPE_Q8_0: f = p->k->rows_q8_0; fn = p->k->rowsn_q8_0; g = kernels_generic.rows_q8_0; break;
	default:
		f = p->k->quant[type].rows;
		fn = p->k->quant[type].rowsn;
		g = kernels_generic.quant[type].rows;
		if (!f)     /* a path with no kernel of its own: through F32 */
			return;
		break;
	}
	for (int rep = 0; rep < 4; rep++) {
		if (sa_type_act(type) != type) {
			random_blocks(type, w, rb, n, rep == 3 ? 1e-3f : 1, wf);
		} else {
			for (int64_t i = 0; i < ROWS * n; i++)
				wf[i] = frand() * (rep == 3 ? 1e-3f : 1);
			for (int r = 0; r < ROWS; r++) {
				sa_row_from_f32(type, wf + r * n, w + r * rb, n);
				sa_row_to_f32(type, w + r * rb, wf + r * n, n);
			}
		}
		for (int j = 0; j < MAXX; j++) {
			for (int64_t i = 0; i < n; i++)
				x[i] = frand() * (j % 2 ? 1 : 3);
			/* the inputs rounded as the forward pass rounds them */
			round_generic(sa_type_act(type), x, xr[j], xq[j], n);
			g(w, rb, n, xr[j], xq[j], y0, ROWS);
			f(w, rb, n, xr[j], xq[j], y1, ROWS);
			for (int r = 0; r < ROWS; r++) {
				double mag = magnitude(wf + r * n, xr[j], n);
				bad += !near(y0[r], y1[r], mag);
				badd += !near(y0[r], (float)dot_double(wf + r * n, xr[j], n), mag);
			}
		}
		for (int nx = 1; nx <= MAXX; nx++) {
			fn(w, rb, n, nx, xr[0], MAXN, xq[0], sizeof xq[0], yn[0], ROWS, ROWS);
			for (int j = 0; j < nx; j++) {
				f(w, rb, n, xr[j], xq[j], y1, ROWS);
				badn += memcmp(y1, yn[j], sizeof y1) != 0;
			}
		}
	}
	if (bad || badn || badd)
		fprintf(stderr, "%s %s n=%lld: %d sums off, %d differ between one input and several, "
		    "%d off the dot product in double\n", p->name, sa_type_name(type), (long long)n,
		    bad, badn, badd);
	CHECK(bad == 0);
	CHECK(badn == 0);
	CHECK(badd == 0);
}

/* rowsn over more rows than a block, rows long enough for several
 * panels (and too short for one), 1 to 16 inputs (SMALL_N, forward.c):
 * every input gets the bits rows gives it alone, every block, tile and
 * panel boundary crossed. */
static void
test_rowsn_blocks(const struct path *p, int type, int64_t n)
{
	enum { NR = 2 * BLOCK_ROWS + TILE_ROWS + 1, NXMAX = 16, NMAX = 2 * PANEL + 104 };
	static unsigned char w[NR * NMAX * 4];
	static float x[NXMAX][NMAX], y1[NR], yn[NXMAX][NR];
	size_t rb = sa_type_row_size(type, n);
	rows_fn *f = type == SA_TYPE_F32 ? p->k->rows_f32 : type == SA_TYPE_F16 ? p->k->rows_f16 :
	    p->k->rows_bf16;
	rowsn_fn *fn = type == SA_TYPE_F32 ? p->k->rowsn_f32 : type == SA_TYPE_F16 ?
	    p->k->rowsn_f16 : p->k->rowsn_bf16;
	int bad = 0;

	for (int r = 0; r < NR; r++) {
		float row[NMAX];
		for (int64_t i = 0; i < n; i++)
			row[i] = frand();
		sa_row_from_f32(type, row, w + r * rb, n);
	}
	/* the inputs rounded as the forward pass rounds them */
	for (int j = 0; j < NXMAX; j++) {
		float v[NMAX];
		unsigned char buf[NMAX * 4];
		for (int64_t i = 0; i < n; i++)
			v[i] = frand();
		round_generic(type, v, x[j], buf, n);
	}
	for (int nx = 1; nx <= NXMAX; nx++) {
		fn(w, rb, n, nx, x[0], NMAX, NULL, 0, yn[0], NR, NR);
		for (int j = 0; j < nx; j++) {
			f(w, rb, n, x[j], NULL, y1, NR);
			bad += memcmp(y1, yn[j], sizeof y1) != 0;
		}
	}
	if (bad)
		fprintf(stderr, "%s %s n=%lld: %d of 136 inputs differ between one input and "
		    "several\n", p->name, sa_type_name(type), (long long)n, bad);
	CHECK(bad == 0);
}

/* The conversions give the generic path's bits. */
static void
test_convert(const struct path *p, int64_t n)
{
	static float src[MAXN], a[ROWS * MAXN], b[ROWS * MAXN];
	static uint16_t h[MAXN], h2[MAXN];
	static unsigned char w[ROWS * MAXN * 2], qa[MAXN * 4], qb[MAXN * 4];
	size_t rb = sa_type_row_size(SA_TYPE_BF16, n);
	static const float special[] = { 0.0f, -0.0f, 65504.0f, 65520.0f, -1e9f, 6e-8f, 3e-5f,
	    -2.9802322e-8f, 1e-40f, INFINITY, -INFINITY };
	for (int64_t i = 0; i < n; i++)
		src[i] = frand() * (i % 3 ? 1 : 1e-4f) * (i % 5 ? 1 : 1e4f);
	/* Q8_0 rounding of finite scales; the F16 and BF16 conversions then see
	 * infinities, overflow and subnormals too */
	if (n % SA_QK8_0 == 0) {
		p->k->round_q8_0(src, a, qa, n);
		kernels_generic.round_q8_0(src, b, qb, n);
		CHECK(!memcmp(a, b, n * sizeof *a) &&
		    !memcmp(qa, qb, sa_type_row_size(SA_TYPE_Q8_0, n)));
	}
	for (size_t i = 0; i < sizeof special / sizeof *special && (int64_t)i < n; i++)
		src[i * 7 % n] = special[i];
	p->k->fp32_to_fp16(src, h, n);
	kernels_generic.fp32_to_fp16(src, h2, n);
	CHECK(!memcmp(h, h2, n * sizeof *h));
	p->k->fp16_to_fp32(h, a, n);
	kernels_generic.fp16_to_fp32(h, b, n);
	CHECK(!memcmp(a, b, n * sizeof *a));

	for (int r = 0; r < ROWS; r++)
		sa_row_from_f32(SA_TYPE_BF16, src, w + r * rb, n);
	p->k->deq_bf16(w, rb, n, a, ROWS);
	kernels_generic.deq_bf16(w, rb, n, b, ROWS);
	CHECK(!memcmp(a, b, ROWS * n * sizeof *a));

	p->k->round_f16(src, a, h2, n);
	kernels_generic.round_f16(src, b, h, n);
	CHECK(!memcmp(a, b, n * sizeof *a));
}

/* The rounding to Q8_K gives types.c's values and blocks: random blocks at
 * several scales, one of zeros, ties of largest magnitude of either sign
 * first, values that round to 127.5, infinities and NaNs. */
static void
test_round_q8_k(const struct path *p)
{
	enum { N = 2048 };
	static float src[N], a[N], b[N];
	static unsigned char qa[N * 4], qb[N * 4];
	int bad = 0;

	for (int rep = 0; rep < 20; rep++) {
		for (int i = 0; i < N; i++)
			src[i] = frand() * (i / 256 % 3 ? 1 : 1e-3f) * (rep % 2 ? 1e4f : 1);
		memset(src + 256, 0, 256 * sizeof *src);              /* block 1: zeros */
		src[512 + rep] = 2, src[512 + 2 * rep + 1] = -2;      /* block 2: a tie */
		src[768 + 100] = -5, src[768 + 7 * rep % 256] = 5;    /* block 3: the other sign first */
		src[1024 + rep] = 127, src[1025 + rep] = 127.5f;      /* block 4: x * -127/max near .5 */
		if (rep % 4 == 1)
			src[1280 + rep] = rep % 8 == 1 ? INFINITY : NAN;  /* block 5 */
		p->k->round_q8_k(src, a, qa, N);
		kernels_generic.round_q8_k(src, b, qb, N);
		bad += memcmp(a, b, sizeof a) != 0 ||
		    memcmp(qa, qb, Q8K_BYTES(N / SA_QK_K)) != 0;
	}
	if (bad)
		fprintf(stderr, "%s Q8_K rounding: %d rows differ\n", p->name, bad);
	CHECK(bad == 0);
}

/* Quantized blocks to F32 give types.c's floats: random blocks with random
 * finite scales, normal and subnormal, of either sign. */
static void
test_blocks(const struct path *p)
{
	static const int types[] = { SA_TYPE_Q8_0, SA_TYPE_Q4_0, SA_TYPE_Q4_1, SA_TYPE_Q5_0,
	    SA_TYPE_Q5_1, SA_TYPE_Q2_K, SA_TYPE_Q3_K, SA_TYPE_Q4_K, SA_TYPE_Q5_K, SA_TYPE_Q6_K };
	enum { N = 1024 };
	static unsigned char w[N * 2];
	static float a[N], b[N];

	for (size_t t = 0; t < sizeof types / sizeof *types; t++) {
		size_t rb = sa_type_row_size(types[t], N), off[2], bb;
		int64_t be;
		int ns = sa_type_scales(types[t], off), bad = 0;
		sa_type_block(types[t], &be, &bb);
		for (int rep = 0; rep < 10; rep++) {
			for (size_t i = 0; i < rb; i++)
				w[i] = (unsigned char)((frand() + 1) * 128);
			for (size_t blk = 0; blk < rb / bb; blk++)
				for (int k = 0; k < ns; k++) {
					uint16_t h = (uint16_t)((frand() + 1) * 32768) & 0xbfff;   /* finite */
					memcpy(w + blk * bb + off[k], &h, 2);
				}
			p->k->blocks(types[t], w, a, N);
			kernels_generic.blocks(types[t], w, b, N);
			bad += memcmp(a, b, sizeof a) != 0;
		}
		if (bad)
			fprintf(stderr, "%s %s: %d rows differ\n", p->name, sa_type_name(types[t]), bad);
		CHECK(bad == 0);
	}
}

/* The float helpers: dot and axpy within the tolerance, max and the sum
 * of exponentials the generic bits (their vector forms fuse nothing);
 * dots the path's own dot, bit for bit. */
static void
test_floats(const struct path *p, int64_t n)
{
	static float x[MAXN], y[MAXN], a[MAXN], b[MAXN], m[3 * MAXN];
	float d[3];
	int bad = 0;

	for (int64_t i = 0; i < n; i++) {
		x[i] = frand();
		y[i] = frand() * 10;
		a[i] = b[i] = frand();
	}
	CHECK(near(p->k->dot(x, y, n), kernels_generic.dot(x, y, n), magnitude(x, y, n)));
	for (int64_t i = 0; i < 3 * n; i++)
		m[i] = frand();
	p->k->dots(m, (size_t)n * sizeof *m, n, x, NULL, d, 3);
	for (int r = 0; r < 3; r++)
		CHECK(d[r] == p->k->dot(m + r * n, x, n));
	p->k->axpy(0.3f, x, a, n);
	kernels_generic.axpy(0.3f, x, b, n);
	for (int64_t i = 0; i < n; i++)
		bad += !near(a[i], b[i], fabs(b[i]) + fabs(0.3 * x[i]));
	CHECK(bad == 0);
	CHECK(p->k->max(y, n) == kernels_generic.max(y, n));
	float mx = kernels_generic.max(y, n);
	CHECK(p->k->exp_sum(a, y, n, mx) == kernels_generic.exp_sum(b, y, n, mx));
	CHECK(!memcmp(a, b, n * sizeof *a));
}

/* kernels_float.c's set of the path: the generic set's bits, tails
 * included.  Queries, keys and values are widened floats, as the mapping
 * makes them. */
static void
test_float_kernels(const struct path *p)
{
	static const int dhs[] = { 64, 20, 13, 8, 3 }, cs[] = { 7, 8, 1 }, rs[] = { 3, 1 };
	static const int64_t ns[] = { 1, 7, 8, 17, 100, 1030 };
	enum { CMAX = 8, DMAX = 64, RMAX = 3 };
	const sa_float_kernels *f = p->k->f, *g = kernels_generic.f;
	double Q[RMAX * DMAX], K[CMAX * DMAX], V[CMAX * DMAX];
	double s1[RMAX * CMAX], s2[RMAX * CMAX], S1[RMAX * DMAX], S2[RMAX * DMAX];
	static float x[MAXN], y[MAXN], a[5][MAXN];

	for (size_t di = 0; di < sizeof dhs / sizeof *dhs; di++) {
	for (size_t ci = 0; ci < sizeof cs / sizeof *cs; ci++) {
	for (size_t ri = 0; ri < sizeof rs / sizeof *rs; ri++) {
		int dh = dhs[di], c = cs[ci], r = rs[ri];

		for (int j = 0; j < RMAX * DMAX; j++)
			Q[j] = 3 * frand();
		for (int j = 0; j < CMAX * DMAX; j++) {
			K[j] = 3 * frand();
			V[j] = 3 * frand();
			x[j] = 3 * frand();
		}
		memset(s1, 0, sizeof s1);
		memset(s2, 0, sizeof s2);
		g->scores(Q, K, r, c, dh, s1);
		f->scores(Q, K, r, c, dh, s2);
		CHECK(memcmp(s1, s2, sizeof s1) == 0);
		CHECK(s1[0] != 0 && s1[r * c - 1] != 0);
		for (int i = 0; i < r; i++)
			CHECK(g->softmax(s1 + i * c, c, 0.3) == f->softmax(s2 + i * c, c, 0.3));
		CHECK(memcmp(s1, s2, sizeof s1) == 0);
		memset(S1, 0, sizeof S1);
		memset(S2, 0, sizeof S2);
		g->mix(s1, V, r, c, dh, S1);
		f->mix(s2, V, r, c, dh, S2);
		CHECK(memcmp(S1, S2, sizeof S1) == 0);
		CHECK(S1[0] != 0 && S1[r * dh - 1] != 0);
		g->widen(x, S1, dh);
		f->widen(x, S2, dh);
		CHECK(memcmp(S1, S2, sizeof S1) == 0);
	}
	}
	}
	/* training's: the dot product in double, SwiGLU (in place too, as the
	 * forward pass runs it) and its backward */
	for (size_t s = 0; s < sizeof ns / sizeof *ns; s++) {
		int64_t n = ns[s];

		for (int64_t i = 0; i < n; i++) {
			x[i] = 8 * frand();
			y[i] = frand();
		}
		CHECK(g->dot_f64(x, y, (int)n) == f->dot_f64(x, y, (int)n));
		g->swiglu(a[0], x, y, (size_t)n);
		f->swiglu(a[1], x, y, (size_t)n);
		CHECK(!memcmp(a[0], a[1], n * sizeof **a));
		memcpy(a[2], x, n * sizeof **a);
		f->swiglu(a[2], a[2], y, (size_t)n);
		CHECK(!memcmp(a[0], a[2], n * sizeof **a));
		g->swiglu_back(a[1], a[2], y, x, a[0], (size_t)n);
		f->swiglu_back(a[3], a[4], y, x, a[0], (size_t)n);
		CHECK(!memcmp(a[1], a[3], n * sizeof **a) && !memcmp(a[2], a[4], n * sizeof **a));
	}
}

#ifdef HAVE_X86
/* exp_neg_avx2 as the mapping's kernels build it: AVX2 without FMA */
__attribute__((target("avx2"))) static void
exp4_avx2(const double *x, double *y)
{
	_mm256_storeu_pd(y, exp_neg_avx2(_mm256_loadu_pd(x)));
}
#endif

/* exp in double (expf_impl.h): the vector form gives the scalar form's
 * bits, both near libm's. */
static void
test_exp_double(void)
{
#ifdef HAVE_X86
	for (int i = 0; i < 20000; i++) {
		double x[4], y[4], worst = 0;
		for (int l = 0; l < 4; l++)
			x[l] = i < 4 ? (double[]){ 0, -708, -709, -1e-300 }[l] : -745 * pow(sa_unif(&rng), 3);
		exp4_avx2(x, y);
		for (int l = 0; l < 4; l++) {
			if (memcmp(&y[l], &(double){ exp_neg(x[l]) }, sizeof(double)) != 0)
				worst = INFINITY;
			if (x[l] >= EXP_MIN)
				worst = fmax(worst, fabs(y[l] - exp(x[l])) / exp(x[l]));
			else if (y[l] != 0)
				worst = INFINITY;
		}
		if (worst > 1e-15) {
			CHECK(worst <= 1e-15);
			for (int l = 0; l < 4; l++)
				fprintf(stderr, "exp_neg(%.17g) = %.17g, scalar %.17g, libm %.17g\n",
				    x[l], y[l], exp_neg(x[l]), exp(x[l]));
			break;
		}
	}
#endif
}

/* The products of F16 rows with packed inputs (prefill), and the packing:
 * the bits of the generic kernels, every tail of rows, inputs and columns
 * (the packed zeros after the last input too); and against the
 * sums in double, within the tolerance.  Inputs are F16 values, as the
 * forward pass rounds them; 16 of them large, so that a sum's order shows. */
static void
test_gemm(const struct path *p)
{
	static const int64_t cols[] = { 1, 17, 256, 300, 600 }, rows[] = { 1, 8, 13, 70 };
	static const int nxs[] = { 1, 15, 16, 17, 40, 130, 300 };
	enum { C = 600, R = 70, X = 300 };
	static uint16_t w[R * C];
	static float wf[R * C], x[X * C], xp[(X + 15) / 16 * 16 * C], xq[(X + 15) / 16 * 16 * C];
	static float a[X * R], b[X * R];

	for (int i = 0; i < R * C; i++)
		wf[i] = sa_fp16_to_fp32(w[i] = sa_fp32_to_fp16(frand()));
	for (int i = 0; i < X * C; i++)
		x[i] = sa_fp16_to_fp32(sa_fp32_to_fp16(frand() * (i % 37 ? 1 : 1000)));
	for (size_t c = 0; c < sizeof cols / sizeof *cols; c++)
		for (size_t r = 0; r < sizeof rows / sizeof *rows; r++)
			for (size_t t = 0; t < sizeof nxs / sizeof *nxs; t++) {
				int64_t n = cols[c], nr = rows[r];
				int nx = nxs[t], bad = 0, far = 0;
				size_t rb = n * sizeof *w;
				for (int64_t i = 0; i < nr * n; i++)
					w[i] = sa_fp32_to_fp16(wf[(i / n) * C + i % n]);
				size_t np = (nx + 15) / 16 * 16 * n;
				memset(xp, 0xff, sizeof xp);
				memset(xq, 0xff, sizeof xq);
				p->k->pack(x, nx, n, xp);
				kernels_generic.pack(x, nx, n, xq);
				bad += memcmp(xp, xq, np * sizeof *xp) != 0;
				p->k->gemm_f16(w, rb, n, nr, xp, nx, a, R);
				kernels_generic.gemm_f16(w, rb, n, nr, xp, nx, b, R);
				for (int j = 0; j < nx; j++)
					for (int64_t i = 0; i < nr; i++) {
						const float *wi = wf + i * C, *xj = x + (size_t)j * n;
						bad += memcmp(&a[j * R + i], &b[j * R + i], sizeof *a) != 0;
						far += !near(a[j * R + i], (float)dot_double(wi, xj, n),
						    magnitude(wi, xj, n));
					}
				if (bad || far)
					fprintf(stderr, "%s gemm %lld x %lld, %d inputs: %d differ, %d far\n",
					    p->name, (long long)nr, (long long)n, nx, bad, far);
				CHECK(bad == 0 && far == 0);
			}
}

/* The products of Q8_0 rows with packed Q8_0 inputs (prefill): the bits of
 * the generic kernel, which are those of the generic row kernel, every
 * tail of rows (panels of 8 and 2 x 16), inputs (tiles of 4 and 6) and blocks
 * (chunks of Q8_KB); weights with -128 in them and inputs with large
 * blocks, so that a sum's order shows. */
static void
test_gemm_q8_0(const struct path *p)
{
	static const int64_t cols[] = { 32, 96, (Q8_KB + 3) * 32 }, rows[] = { 1, 8, 13, 16, 17, 40 };
	static const int nxs[] = { 1, 3, 4, 5, 6, 8, 9, 17 };
	enum { C = (Q8_KB + 3) * 32, NB = C / 32, R = 40, X = 17 };
	static sa_block_q8_0 w[R * NB], xq[X * NB];
	static float x[X * C], xr[C], a[X * R], b[X * R], c[R];
	static char xp[X * Q8P_BYTES(NB)];

	for (int i = 0; i < R * NB; i++) {
		w[i].d = sa_fp32_to_fp16(frand() * 0.01f);
		for (int j = 0; j < 32; j++)
			w[i].qs[j] = (int8_t)(i % 5 ? (int)(frand() * 127) : -128);
	}
	for (int i = 0; i < X * C; i++)
		x[i] = frand() * (i / 32 % 7 ? 1 : 1000);
	for (size_t ci = 0; ci < sizeof cols / sizeof *cols; ci++) {
		int64_t n = cols[ci], nb = n / 32;
		size_t rb = nb * sizeof *w;
		for (int t = 0; t < X; t++)
			kernels_generic.round_q8_0(x + t * n, xr, (char *)xq + t * rb, n);
		pack_q8_0(xq, rb, X, n, xp);
		for (size_t r = 0; r < sizeof rows / sizeof *rows; r++)
			for (size_t t = 0; t < sizeof nxs / sizeof *nxs; t++) {
				int64_t nr = rows[r];
				int nx = nxs[t], bad = 0;
				memset(a, 0xff, sizeof a);
				p->k->gemm_q8_0(w, rb, n, nr, xp, nx, a, R);
				kernels_generic.gemm_q8_0(w, rb, n, nr, xp, nx, b, R);
				for (int j = 0; j < nx; j++) {
					rows_q8_0_generic(w, rb, n, NULL, (char *)xq + j * rb, c, nr);
					bad += memcmp(&a[j * R], &b[j * R], nr * sizeof *a) != 0;
					bad += memcmp(&b[j * R], c, nr * sizeof *c) != 0;
				}
				if (bad)
					fprintf(stderr, "%s gemm q8_0 %lld x %lld, %d inputs: %d differ\n",
					    p->name, (long long)nr, (long long)n, nx, bad);
				CHECK(bad == 0);
			}
	}
}

/* The products of Q4_K, Q5_K and Q6_K rows with Q8_K inputs (prefill):
 * the bits of the generic row kernel, every tail of rows (panels of 8 and
 * 2 x 16), inputs (tiles of 4 and 6, one input) and blocks (chunks of
 * QK_KB); scales of either sign, large and small, and inputs with large
 * blocks, so that a sum's order shows. */
static void
test_gemm_k(const struct path *p, int type)
{
	static const int64_t cols[] = { 256, 768, (QK_KB + 1) * 256 };
	static const int rows[] = { 1, 8, 13, 16, 17, 33, 40 }, nxs[] = { 1, 3, 4, 5, 6, 7, 13 };
	enum { C = (QK_KB + 1) * 256, R = 40, X = 13 };
	static unsigned char w[R * C], xq[X * C * 2];
	static float x[C], xr[C], a[X * R], c[R];
	size_t off[2], bb;
	int64_t be;
	int ns = sa_type_scales(type, off);

	sa_type_block(type, &be, &bb);
	for (int ci = 0; ci < (int)(sizeof cols / sizeof *cols); ci++) {
		int64_t n = cols[ci];
		size_t rb = sa_type_row_size(type, n), xs = Q8K_BYTES(n / SA_QK_K);
		for (size_t i = 0; i < R * rb; i++)
			w[i] = (unsigned char)((frand() + 1) * 128);
		for (size_t blk = 0; blk < R * rb / bb; blk++)
			for (int k = 0; k < ns; k++) {
				uint16_t h = sa_fp32_to_fp16(frand() * (blk % 3 ? 1e-3f : 1));
				memcpy(w + blk * bb + off[k], &h, 2);
			}
		for (int t = 0; t < X; t++) {
			for (int64_t i = 0; i < n; i++)
				x[i] = frand() * (i / 256 % 3 ? 1 : 1000);
			kernels_generic.round_q8_k(x, xr, xq + t * xs, n);
		}
		for (size_t r = 0; r < sizeof rows / sizeof *rows; r++)
			for (size_t ti = 0; ti < sizeof nxs / sizeof *nxs; ti++) {
				int nr = rows[r], nx = nxs[ti], bad = 0;
				memset(a, 0xff, sizeof a);
				p->k->gemm_k(type, w, rb, n, nr, xq, nx, a, R);
				for (int j = 0; j < nx; j++) {
					sa_quant_generic[type].rows(w, rb, n, NULL, xq + j * xs, c, nr);
					bad += memcmp(&a[j * R], c, nr * sizeof *c) != 0;
				}
				if (bad)
					fprintf(stderr, "%s gemm %s %d x %lld, %d inputs: %d differ\n", p->name,
					    sa_type_name(type), nr, (long long)n, nx, bad);
				CHECK(bad == 0);
			}
	}
}

/* The path from the feature bits and SA_KERNELS, its table, and OpenBLAS's
 * core type with it. */
static void
test_choice(void)
{
	unsigned cpu = sa_cpu_features();
	int widest = cpu & SA_CPU_AVX512 ? SA_KERNELS_AVX512 : cpu & SA_CPU_AVX2 ? SA_KERNELS_AVX2 :
	    SA_KERNELS_GENERIC;
	const char *want = getenv("SA_KERNELS"), *core = getenv("OPENBLAS_CORETYPE");
	int path = widest;

	for (int p = 0; want && p < widest; p++)
		if (!strcmp(want, path_names[p]))
			path = p;
	CHECK(sa_kernels_path() == path);
	CHECK(!strcmp(sa_kernels_name(), path_names[path]));
	/* each feature only with those below it */
	CHECK(!(cpu & SA_CPU_AVX512) || (cpu & SA_CPU_AVX2));
	CHECK(!(cpu & (SA_CPU_VNNI | SA_CPU_BF16)) || (cpu & SA_CPU_AVX512));
	const struct kernels *k = &kernels_generic;
#ifdef HAVE_X86
	if (path == SA_KERNELS_AVX2)
		k = &kernels_avx2;
	if (path == SA_KERNELS_AVX512) {
		k = &kernels_avx512;
		CHECK(K.rows_q8_0 == (cpu & SA_CPU_VNNI ? rows_q8_0_vnni : rows_q8_0_bw));
		CHECK(K.quant == (cpu & SA_CPU_VNNI ? sa_quant_vnni : sa_quant_avx512));
		CHECK(K.gemm_q8_0 == (cpu & SA_CPU_VNNI ? gemm_q8_0_vnni : gemm_q8_0_bw));
		CHECK(K.gemm_k == (cpu & SA_CPU_VNNI ? gemm_k_vnni : gemm_k_bw));
	}
#endif
	CHECK(K.rows_f16 == k->rows_f16 && K.dot == k->dot);
	/* kernels_float.c's kernels follow the path too */
	CHECK(sa_kernels_float() == k->f);
	CHECK(k->f == (path == SA_KERNELS_GENERIC ? &sa_float_kernels_generic : &sa_float_kernels_avx2));
	CHECK(path == SA_KERNELS_AVX512 || K.quant == k->quant);
	/* batches through the vector kernels in integers, not the portable ones */
	CHECK(sa_rows_batch(SA_TYPE_Q4_K) == (path != SA_KERNELS_GENERIC));
	CHECK(!sa_rows_batch(SA_TYPE_F16) && !sa_rows_batch(SA_TYPE_Q8_0) &&
	    !sa_rows_batch(SA_TYPE_Q4_0));
	/* F16 and Q8_0 prefill through the path's own kernels, except on the
	 * portable path */
	CHECK(sa_gemm_own(SA_TYPE_F16) == (path != SA_KERNELS_GENERIC));
	CHECK(sa_gemm_own(SA_TYPE_Q8_0) == (path != SA_KERNELS_GENERIC));
	CHECK(sa_gemm_own(SA_TYPE_Q4_K) == (path != SA_KERNELS_GENERIC));
	CHECK(sa_gemm_own(SA_TYPE_Q6_K) == (path != SA_KERNELS_GENERIC));
	CHECK(!sa_gemm_own(SA_TYPE_F32) && !sa_gemm_own(SA_TYPE_Q4_0) &&
	    !sa_gemm_own(SA_TYPE_Q3_K));

	/* the pool's start-up picked OpenBLAS's core type, or kept the user's */
	sa_set_threads(1);
	if (!gotoblas_dynamic_init)
		return;
	if (core)
		CHECK(!strcasecmp(openblas_get_corename(), core));
	else if (path == SA_KERNELS_AVX512)
		CHECK(!strcasecmp(openblas_get_corename(), cpu & SA_CPU_BF16 ? "cooperlake" : "skylakex"));
	else if (path == SA_KERNELS_AVX2)
		CHECK(!strcasecmp(openblas_get_corename(), "haswell"));
}

int
main(void)
{
	static const int types[] = { SA_TYPE_F32, SA_TYPE_F16, SA_TYPE_BF16, SA_TYPE_Q8_0,
	    SA_TYPE_Q4_0, SA_TYPE_Q4_1, SA_TYPE_Q5_0, SA_TYPE_Q5_1 };
	static const int ktypes[] = { SA_TYPE_Q2_K, SA_TYPE_Q3_K, SA_TYPE_Q4_K, SA_TYPE_Q5_K,
	    SA_TYPE_Q6_K };
	/* 1, 3, 5 and 8 blocks of 256 */
	static const int64_t ksizes[] = { 256, 768, 1280, 2048 };
	/* tails of every width: 16 and 64 floats, 16 Q8_0 blocks */
	static const int64_t sizes[] = { 32, 64, 96, 544, 1056, MAXN };
	static const int64_t odd[] = { 1, 7, 15, 17, 33, 100, 1030 };
	struct path paths[4];
	int np = 0;

	test_choice();
#ifdef HAVE_X86
	unsigned cpu = sa_cpu_features();
	if (cpu & SA_CPU_AVX2)
		paths[np++] = (struct path){ "avx2", &kernels_avx2 };
	if (cpu & SA_CPU_AVX512)
		paths[np++] = (struct path){ "avx512", &kernels_avx512 };
	static struct kernels vnni;
	if (cpu & SA_CPU_VNNI) {
		vnni = kernels_avx512;
		vnni.rows_q8_0 = rows_q8_0_vnni;
		vnni.rowsn_q8_0 = rowsn_q8_0_vnni;
		vnni.quant = sa_quant_vnni;
		vnni.gemm_q8_0 = gemm_q8_0_vnni;
		vnni.gemm_k = gemm_k_vnni;
		paths[np++] = (struct path){ "avx512-vnni", &vnni };
	}
#endif
	/* the generic path against itself: the harness holds */
	paths[np++] = (struct path){ "generic", &kernels_generic };
	for (int i = 0; i < np; i++) {
		fprintf(stderr, "path %s\n", paths[i].name);
		for (size_t t = 0; t < sizeof types / sizeof *types; t++)
			for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++)
				test_rows(&paths[i], types[t], sizes[s]);
		for (size_t t = 0; t < sizeof ktypes / sizeof *ktypes; t++)
			for (size_t s = 0; s < sizeof ksizes / sizeof *ksizes; s++)
				test_rows(&paths[i], ktypes[t], ksizes[s]);
		for (size_t t = 0; t < 3; t++)
			for (size_t s = 0; s < sizeof odd / sizeof *odd; s++)
				test_rows(&paths[i], types[t], odd[s]);
		for (size_t t = 0; t < 3; t++) {
			test_rowsn_blocks(&paths[i], types[t], 40);
			test_rowsn_blocks(&paths[i], types[t], 2 * PANEL + 104);
		}
		for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++)
			test_convert(&paths[i], sizes[s]);
		for (size_t s = 0; s < sizeof odd / sizeof *odd; s++) {
			test_convert(&paths[i], odd[s]);
			test_floats(&paths[i], odd[s]);
		}
		test_floats(&paths[i], MAXN);
		test_blocks(&paths[i]);
		test_float_kernels(&paths[i]);
		test_round_q8_k(&paths[i]);
		test_gemm(&paths[i]);
		test_gemm_q8_0(&paths[i]);
		test_gemm_k(&paths[i], SA_TYPE_Q4_K);
		test_gemm_k(&paths[i], SA_TYPE_Q5_K);
		test_gemm_k(&paths[i], SA_TYPE_Q6_K);
	}
	if (sa_cpu_features() & SA_CPU_AVX2)
		test_exp_double();
	return t_done();
}
