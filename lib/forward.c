/*
 * forward.c - the forward pass of a llama/qwen2 decoder over a KV cache.
 *
 * One data flow for any number of tokens n, layer by layer:
 *   x = embed(toks)                                   [n][d]
 *   per layer: xn = rmsnorm(x) * attn_norm
 *              q, k, v = xn Wq^T (+bq), xn Wk^T (+bk), xn Wv^T (+bv)
 *              hook(k, v), q_hook(q); rope(q, k); cache <- k, v
 *              x += attention(q, cache) Wo^T
 *              xn = rmsnorm(x) * ffn_norm
 *              x += (silu(xn Wgate^T) * (xn Wup^T)) Wdown^T
 *   (the input hook sees one of these maps' inputs: xn, attention(), silu())
 *   logits = (rmsnorm(x) * out_norm) Wout^T
 * A linear map over more than SMALL_N rows goes through sgemm, in blocks
 * of weight rows (weights other than F32 converted to F32 a block at a
 * time), or for F16, Q8_0, Q4_K, Q5_K and Q6_K weights on paths that have
 * one through a kernel of their own on the weights as stored (sa_gemm_own,
 * the inputs packed once; for the block types their blocks, in integers);
 * fewer rows go through the pool's row kernels, which read each
 * weight once for all of them: decoding is bound by memory bandwidth.
 * Other block types whose row kernels compute in integers take those for
 * more rows too, SMALL_N at a time (sa_rows_batch): they beat sgemm on the
 * weights converted.  Either way every sum runs whole on one thread, in
 * an order that the number of threads does not change.
 *
 * The input of every linear map is first rounded as llama.cpp rounds it
 * for the weight's type (F16 -> F16, BF16 -> BF16, Q8_0, Q4_0 .. Q5_1 ->
 * Q8_0 blocks, the K-quants -> Q8_K blocks; sa_type_act): the same
 * values then enter sgemm and the row kernels, and the results stay close
 * to llama.cpp's.  Low-rank side paths see that rounded input too.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cblas.h>

#include "sa.h"
#include "kernels_impl.h"
#include "model_impl.h"

#define QBLK 256              /* most query rows per attention block */
#define SC_FLOATS (16 << 20)  /* aim for attention scores within 64 MiB */
#define FBLK 512              /* tokens per FFN block (bounds its scratch) */
#define ATT_GEMM_MIN 32       /* queries from which attention uses sgemm */
#define SMALL_N 16            /* tokens up to which linear maps skip sgemm */
#define MV_BLOCK (128 << 10)   /* bytes of weight rows the row kernels reuse */
/* Rows of such a block: a multiple of MV_ROWS, rounded up.  The FFN's down
 * projection of TinyLlama's shape went 11 rows to a block; 16 took 5-8%
 * off its time with 8 inputs (F16, Zen 5). */
#define MV_ROWS 8

struct sa_kvcache {
	const sa_model *m;
	int n_ctx;
	int pos;                  /* tokens in the cache */
	float **kc, **vc;         /* [n_layer] -> [n_ctx][kvd], keys after RoPE */
	sa_kv_hook hook;
	void *hook_ctx;
	sa_q_hook q_hook;
	void *q_hook_ctx;
	sa_input_hook in_hook;    /* with in_ctx: sees the input of matrix in_mat */
	void *in_ctx;
	int in_mat;
	const sa_lowrank *side;   /* [n_layer * SA_NMAT] used instead of the model's, or NULL */
	sa_kvcache *const *rows;  /* during sa_forward_rows: the cache of each row */

	int cap;                  /* tokens the scratch below holds */
	float *x;                 /* [cap][d] residual stream */
	float *xn;                /* [cap][d] normalised input of a block */
	float *xr;                /* [cap][max(d,qd)] input rounded to a weight type */
	float *q, *k, *v;         /* [cap][qd], [cap][kvd], [cap][kvd] */
	float *ao;                /* [cap][qd] attention output */
	float *tmp;               /* [cap][d] output of attn_output and ffn_down */
	float *rope;              /* [cap][rope_dim/2][2] cos, sin */
	float *hb, *hb2, *hr;     /* [min(cap,FBLK)][d_ff] gate, up, rounded hidden */
	float *hrow;              /* [widest row] a row in F16 or BF16 */
	float *wt;                /* [wt_cap] per thread: weight rows converted to F32 */
	size_t wt_cap;
	float *xp;                /* [xp_cap] inputs packed for sa_gemm_rows */
	size_t xp_cap;
	int maxw;                 /* widest matrix input: max(d, qd, d_ff) */
	float *vr[4];             /* [SMALL_N][maxw] inputs rounded to F16, BF16, Q8_0, Q8_K */
	void *xq[2];              /* [SMALL_N] rows of maxw floats' room: the Q8_0 and Q8_K
	                           * blocks of vr[2] and vr[3], which the row kernels read */
	float *lr;                /* [lr_cap] low-rank intermediate A x */
	size_t lr_cap;
	float *sc;                /* attention scores */
	size_t sc_cap;
	char *rowbuf;             /* per thread: one row in a weight type; or
	                           * per row, the Q8_0 blocks sa_gemm_rows reads */
	size_t rowbuf_cap;
};

static int
max3(int a, int b, int c)
{
	int m = a > b ? a : b;
	return m > c ? m : c;
}

/* Chunks for a job of n items: a few per thread, so a thread the system
 * runs late leaves its share to the others. */
static int
chunks_for(int64_t n)
{
	int64_t c = 4 * (int64_t)sa_get_threads();
	return (int)(n < 1 ? 1 : n < c ? n : c);
}

/* --------------------------------------------------------------- state */

/* n bytes from the start of a cache line: the vector loads of the row
 * kernels' inputs then never straddle two lines, which took a third off
 * their speed (8 inputs against F16 rows in L2, Zen 5). */
static void *
malloc_lines(size_t n)
{
	void *p;

	if (posix_memalign(&p, 64, n ? n : 1)) {
		sa_fail(SA_EINTERNAL, "out of memory");
		return NULL;
	}
	return p;
}

static void
free_scratch(sa_kvcache *s)
{
	free(s->x); free(s->xn); free(s->xr); free(s->q); free(s->k); free(s->v);
	free(s->ao); free(s->tmp); free(s->rope); free(s->hb); free(s->hb2); free(s->hr);
	s->x = s->xn = s->xr = s->q = s->k = s->v = s->ao = s->tmp = s->rope = NULL;
	s->hb = s->hb2 = s->hr = NULL;
	s->cap = 0;
}

/* Scratch for n tokens at once. */
static int
build_scratch(sa_kvcache *s, int n)
{
	const sa_config *c = &s->m->cfg;
	size_t d = c->d_model, qd = (size_t)c->n_head * c->d_head;
	size_t kvd = (size_t)c->n_head_kv * c->d_head, ff = c->d_ff;
	size_t fb = n < FBLK ? n : FBLK, N = n;

	if (n <= s->cap)
		return SA_OK;
	free_scratch(s);
	s->x = malloc_lines(N * d * sizeof(float));
	s->xn = malloc_lines(N * d * sizeof(float));
	s->xr = malloc_lines(N * (d > qd ? d : qd) * sizeof(float));
	s->q = malloc_lines(N * qd * sizeof(float));
	s->k = malloc_lines(N * kvd * sizeof(float));
	s->v = malloc_lines(N * kvd * sizeof(float));
	s->ao = malloc_lines(N * qd * sizeof(float));
	s->tmp = malloc_lines(N * d * sizeof(float));
	s->rope = malloc_lines(N * c->rope_dim * sizeof(float));
	s->hb = malloc_lines(fb * ff * sizeof(float));
	s->hb2 = malloc_lines(fb * ff * sizeof(float));
	s->hr = malloc_lines(fb * ff * sizeof(float));
	if (!s->x || !s->xn || !s->xr || !s->q || !s->k || !s->v || !s->ao || !s->tmp ||
	    !s->rope || !s->hb || !s->hb2 || !s->hr) {
		free_scratch(s);
		return SA_EINTERNAL;
	}
	s->cap = n;
	return SA_OK;
}

int
sa_kvcache_new(sa_kvcache **out, const sa_model *m, int n_ctx)
{
	const sa_config *c = &m->cfg;
	size_t kvd = (size_t)c->n_head_kv * c->d_head;
	size_t maxw = (size_t)max3(c->d_model, c->n_head * c->d_head, c->d_ff);
	size_t widest = maxw > (size_t)c->d_model ? maxw : (size_t)c->d_model;
	sa_kvcache *s;

	*out = NULL;
	if (!(s = sa_calloc(1, sizeof *s)))
		return SA_EINTERNAL;
	s->m = m;
	s->n_ctx = n_ctx <= 0 || n_ctx > c->n_ctx ? c->n_ctx : n_ctx;
	/* One block per layer: untouched pages of a long context cost nothing. */
	if (!(s->kc = sa_calloc((size_t)c->n_layer, sizeof *s->kc)) ||
	    !(s->vc = sa_calloc((size_t)c->n_layer, sizeof *s->vc)))
		goto oom;
	for (int l = 0; l < c->n_layer; l++)
		if (!(s->kc[l] = sa_calloc((size_t)s->n_ctx * kvd, sizeof(float))) ||
		    !(s->vc[l] = sa_calloc((size_t)s->n_ctx * kvd, sizeof(float))))
			goto oom;
	s->maxw = (int)maxw;
	for (int i = 0; i < 4; i++)
		if (!(s->vr[i] = malloc_lines(SMALL_N * maxw * sizeof(float))))
			goto oom;
	if (!(s->xq[0] = sa_malloc(SMALL_N * maxw * sizeof(float))) ||
	    !(s->xq[1] = sa_malloc(SMALL_N * maxw * sizeof(float))) ||
	    !(s->hrow = sa_malloc(widest * sizeof(float))))
		goto oom;
	*out = s;
	return SA_OK;
oom:
	sa_kvcache_free(s);
	return SA_EINTERNAL;
}

void
sa_kvcache_free(sa_kvcache *s)
{
	if (!s)
		return;
	for (int l = 0; s->kc && l < s->m->cfg.n_layer; l++)
		free(s->kc[l]);
	for (int l = 0; s->vc && l < s->m->cfg.n_layer; l++)
		free(s->vc[l]);
	free(s->kc);
	free(s->vc);
	free_scratch(s);
	for (int i = 0; i < 4; i++)
		free(s->vr[i]);
	free(s->xq[0]);
	free(s->xq[1]);
	free(s->hrow);
	free(s->wt);
	free(s->xp);
	free(s->lr);
	free(s->sc);
	free(s->rowbuf);
	free(s);
}

int
sa_kvcache_pos(const sa_kvcache *s)
{
	return s->pos;
}

int
sa_kvcache_ctx(const sa_kvcache *s)
{
	return s->n_ctx;
}

void
sa_kvcache_truncate(sa_kvcache *s, int pos)
{
	if (pos < 0)
		pos = 0;
	if (pos < s->pos)
		s->pos = pos;
}

void
sa_kvcache_set_side(sa_kvcache *s, const sa_lowrank *side)
{
	s->side = side;
}

void
sa_kvcache_set_hook(sa_kvcache *s, sa_kv_hook hook, void *ctx)
{
	s->hook = hook;
	s->hook_ctx = ctx;
}

void
sa_kvcache_set_q_hook(sa_kvcache *s, sa_q_hook hook, void *ctx)
{
	s->q_hook = hook;
	s->q_hook_ctx = ctx;
}

void
sa_kvcache_set_input_hook(sa_kvcache *s, int mat, sa_input_hook hook, void *ctx)
{
	s->in_hook = hook;
	s->in_ctx = ctx;
	s->in_mat = mat;
}

size_t
sa_kvcache_kv_bytes(const sa_kvcache *s)
{
	const sa_config *c = &s->m->cfg;
	return (size_t)s->pos * c->n_layer * c->n_head_kv * c->d_head * 2 * sizeof(float);
}

/* ------------------------------------------------------- small helpers */

/* out [n] = x / rms(x) * w, the sum of squares in double as ggml does. */
static void
rmsnorm(float *out, const float *x, const float *w, int n, float eps)
{
	double ss = 0;
	for (int i = 0; i < n; i++)
		ss += (double)(x[i] * x[i]);
	float scale = 1.0f / sqrtf((float)(ss / n) + eps);
	for (int i = 0; i < n; i++)
		out[i] = (x[i] * scale) * w[i];
}

/*
 * cos and sin of every rotated pair for positions pos..pos+n-1:
 * theta_j = p * base^(-2j/rope_dim) [/ freqs[j]] * freq_scale, the power
 * built by repeated multiplication in float, as ggml builds it.
 */
static void
rope_row(const sa_model *m, int pos, float *cs)
{
	const sa_config *c = &m->cfg;
	const sa_model_impl *x = sa_model_impl_of(m);
	int half = c->rope_dim / 2;
	float theta_scale = powf(c->rope_base, -2.0f / c->rope_dim), theta = (float)pos;

	for (int j = 0; j < half; j++) {
		float t = theta;
		if (x->rope_freqs)
			t /= x->rope_freqs[j];
		t *= x->rope_freq_scale;
		cs[2 * j] = cosf(t);
		cs[2 * j + 1] = sinf(t);
		theta *= theta_scale;
	}
}

/* The rotations of n tokens: those after the cache, or one a row. */
static void
rope_table(sa_kvcache *s, int n)
{
	for (int i = 0; i < n; i++)
		rope_row(s->m, s->rows ? s->rows[i]->pos : s->pos + i,
		    s->rope + (size_t)i * s->m->cfg.rope_dim);
}

/* Layer l's keys and values of n tokens into the cache, or each row's
 * into its own. */
static void
kv_store(sa_kvcache *s, int l, int n)
{
	size_t kvd = (size_t)s->m->cfg.n_head_kv * s->m->cfg.d_head;

	if (!s->rows) {
		memcpy(s->kc[l] + (size_t)s->pos * kvd, s->k, (size_t)n * kvd * sizeof(float));
		memcpy(s->vc[l] + (size_t)s->pos * kvd, s->v, (size_t)n * kvd * sizeof(float));
		return;
	}
	for (int i = 0; i < n; i++) {
		sa_kvcache *r = s->rows[i];
		memcpy(r->kc[l] + (size_t)r->pos * kvd, s->k + i * kvd, kvd * sizeof(float));
		memcpy(r->vc[l] + (size_t)r->pos * kvd, s->v + i * kvd, kvd * sizeof(float));
	}
}

/* Rotate the heads of one token's vector v [nh][d_head]: llama rotates
 * adjacent pairs (2j, 2j+1), NeoX-style models the halves (j, j+rope_dim/2). */
static void
rope_apply(const sa_config *c, const float *cs, float *v, int nh)
{
	int half = c->rope_dim / 2;
	int stride = c->rope_neox ? 1 : 2, off = c->rope_neox ? half : 1;

	for (int h = 0; h < nh; h++) {
		float *hv = v + (size_t)h * c->d_head;
		for (int j = 0; j < half; j++) {
			float *p0 = hv + j * stride, *p1 = p0 + off;
			float x0 = *p0, x1 = *p1, co = cs[2 * j], si = cs[2 * j + 1];
			*p0 = x0 * co - x1 * si;
			*p1 = x0 * si + x1 * co;
		}
	}
}

/* The steps of a row that the rows of prefill share out: over the pool
 * for more than SMALL_N rows, each row computed as on its own; on the
 * calling thread for fewer (decoding), where waking the workers would cost
 * more than the work. */
static void
rows_run(sa_chunk_fn fn, void *arg, int64_t n)
{
	if (n > SMALL_N)
		sa_pool_run_chunks(fn, arg, chunks_for(n));
	else
		fn(arg, 0, 0, 1);
}

/* x [n][d] += add (unless NULL), then xn [n][d] = rmsnorm(x) * w. */
struct norm_task {
	const sa_config *c;
	float *x, *xn;
	const float *add, *w;
	int n;
};

static void
norm_task(void *arg, int ith, int chunk, int nchunks)
{
	struct norm_task *t = arg;
	size_t d = t->c->d_model;
	int64_t lo, hi;

	sa_split(t->n, chunk, nchunks, &lo, &hi);
	for (int64_t i = lo; i < hi; i++) {
		if (t->add)
			for (size_t j = 0; j < d; j++)
				t->x[i * d + j] += t->add[i * d + j];
		rmsnorm(t->xn + i * d, t->x + i * d, t->w, (int)d, t->c->norm_eps);
	}
}

static void
norm_rows(sa_kvcache *s, float *x, const float *add, const float *w, float *xn, int n)
{
	struct norm_task t = { &s->m->cfg, x, xn, add, w, n };
	rows_run(norm_task, &t, n);
}

/* RoPE on the queries and keys of n tokens. */
struct rope_task {
	sa_kvcache *s;
	int n;
};

static void
rope_task(void *arg, int ith, int chunk, int nchunks)
{
	struct rope_task *t = arg;
	const sa_config *c = &t->s->m->cfg;
	size_t qd = (size_t)c->n_head * c->d_head, kvd = (size_t)c->n_head_kv * c->d_head;
	int64_t lo, hi;

	sa_split(t->n, chunk, nchunks, &lo, &hi);
	for (int64_t i = lo; i < hi; i++) {
		const float *cs = t->s->rope + i * c->rope_dim;
		rope_apply(c, cs, t->s->q + i * qd, c->n_head);
		rope_apply(c, cs, t->s->k + i * kvd, c->n_head_kv);
	}
}

/* h [n] := silu(h) * h2, cut at multiples of SWIGLU_CUT values: the kernel
 * goes a vector at a time from each piece's start, the values past the
 * last whole vector on their own, so pieces cut there give one call's
 * bits. */
#define SWIGLU_CUT 64
struct swiglu_task {
	float *h;
	const float *h2;
	size_t n;
};

static void
swiglu_task(void *arg, int ith, int chunk, int nchunks)
{
	struct swiglu_task *t = arg;
	int64_t lo, hi;

	sa_split((int64_t)((t->n + SWIGLU_CUT - 1) / SWIGLU_CUT), chunk, nchunks, &lo, &hi);
	lo *= SWIGLU_CUT;
	hi = (size_t)hi * SWIGLU_CUT < t->n ? hi * SWIGLU_CUT : (int64_t)t->n;
	if (hi > lo)
		sa_kernels_float()->swiglu(t->h + lo, t->h + lo, t->h2 + lo, (size_t)(hi - lo));
}

/* -------------------------------------------------------- linear maps */

/* One linear map y [n][rows] = x [n][cols] W^T (+ bias) (+ B (A x)). */
typedef struct lin {
	const sa_matrix *w;       /* the weights used: mapped or a merged F32 copy */
	int act;                  /* type the input is rounded to */
	const float *bias;        /* [rows] or NULL */
	const sa_lowrank *side;   /* or NULL */
	float *y;                 /* [n][rows] */
	sa_kvcache *const *rows;  /* or each input row's side path from its cache's */
	size_t mi;                /* layer * SA_NMAT + mat */
} lin;

/* The side path of matrix mi in cache s's forward passes, or NULL. */
static const sa_lowrank *
side_of(const sa_kvcache *s, size_t mi)
{
	const sa_lowrank *side = s->side ? s->side : s->m->side;

	return side && side[mi].rank ? &side[mi] : NULL;
}

static lin
layer_lin(const sa_kvcache *s, int l, int mat, const float *bias, float *y)
{
	const sa_model *m = s->m;
	size_t i = (size_t)l * SA_NMAT + mat;
	lin L = {
		&m->layers[l].w[mat], sa_type_act(sa_model_impl_of(m)->base[i].type), bias,
		side_of(s, i), y, s->rows, i,
	};
	return L;
}

/* Round rows through a type and back to F32, in parallel. */
struct round_task {
	int type;
	const float *src;
	float *dst;
	int64_t n, cols;
	char *buf;          /* per thread, or per row: one row in the type */
	size_t buf_stride;
	int buf_per_row;
};

static void
round_rows_task(void *arg, int ith, int chunk, int nchunks)
{
	struct round_task *t = arg;
	int64_t lo, hi;

	sa_split(t->n, chunk, nchunks, &lo, &hi);
	for (int64_t i = lo; i < hi; i++)
		sa_round_row(t->type, t->src + i * t->cols, t->dst + i * t->cols,
		    t->buf + (size_t)(t->buf_per_row ? i : ith) * t->buf_stride, t->cols);
}

/* X [n][cols] rounded to type, in dst (or X itself for F32); with keep,
 * each row in the type too, in s->rowbuf, its row size apart. */
static const float *
round_rows(sa_kvcache *s, int type, const float *X, int n, int64_t cols, float *dst, int keep,
    int *rc)
{
	size_t stride = (size_t)cols * sizeof(float), need = stride * sa_get_threads();
	struct round_task t = { type, X, dst, n, cols, NULL, stride, keep };

	if (type == SA_TYPE_F32)
		return X;
	if (keep)
		need = (t.buf_stride = sa_act_row_size(type, cols)) * n;
	if (need > s->rowbuf_cap) {
		free(s->rowbuf);
		s->rowbuf_cap = 0;
		if (!(s->rowbuf = sa_malloc(need))) {
			*rc = SA_EINTERNAL;
			return NULL;
		}
		s->rowbuf_cap = need;
	}
	t.buf = s->rowbuf;
	sa_pool_run_chunks(round_rows_task, &t, chunks_for(n));
	return dst;
}

/* Scratch *p of at least n floats, *cap of them now. */
static int
grow(float **p, size_t *cap, size_t n)
{
	if (n <= *cap)
		return SA_OK;
	free(*p);
	if (!(*p = sa_malloc(n * sizeof(float)))) {
		*cap = 0;
		return SA_EINTERNAL;
	}
	*cap = n;
	return SA_OK;
}

/* Maps over the same rounded input x [n][cols], in one job of blocks of
 * weight rows (sa_gemm_block): a block is converted to F32 on its thread if
 * stored otherwise, then multiplied there by single-threaded sgemm. */
struct mm_task {
	const lin *ls;
	int nl, n;
	int blk[SA_NMAT];         /* rows per block of each map */
	int first[SA_NMAT + 1];   /* first block of each map, then the total */
	const float *x;
	const void *xp;           /* or x packed for sa_gemm_rows (its own kernels) */
	float *wt;                /* per thread: the widest block's rows */
	size_t wt_stride;
};

static void
mm_task(void *arg, int ith, int chunk, int nchunks)
{
	struct mm_task *t = arg;
	const sa_matrix *w;
	const float *wf;
	int64_t r0, nr;
	int j = 0;

	while (chunk >= t->first[j + 1])
		j++;
	w = t->ls[j].w;
	r0 = (int64_t)(chunk - t->first[j]) * t->blk[j];
	nr = w->rows - r0 < t->blk[j] ? w->rows - r0 : t->blk[j];
	if (t->xp) {
		sa_gemm_rows(w, r0, r0 + nr, t->xp, t->n, t->ls[j].y, (size_t)w->rows);
		return;
	}
	wf = (const float *)w->data + r0 * w->cols;
	if (w->type != SA_TYPE_F32) {
		float *wt = t->wt + ith * t->wt_stride;
		sa_rows_to_f32(w, r0, r0 + nr, wt);
		wf = wt;
	}
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, t->n, (int)nr, (int)w->cols, 1.0f,
	    t->x, (int)w->cols, wf, (int)w->cols, 0.0f, t->ls[j].y + r0, (int)w->rows);
}

/* x [n][cols] packed for sa_gemm_rows, GEMM_LANES inputs (a panel) at a
 * time; or, for Q8_0 weights, the inputs' blocks xq. */
struct pack_task {
	const float *x;
	int n;
	int64_t cols;
	float *xp;
	const char *xq;
	size_t ldxq;
};

static void
pack_task(void *arg, int ith, int chunk, int nchunks)
{
	struct pack_task *t = arg;
	int64_t lo, hi;

	if (t->xq) {
		size_t ps = Q8P_BYTES(t->cols / SA_QK8_0);
		sa_split(t->n, chunk, nchunks, &lo, &hi);
		sa_gemm_pack_q8_0(t->xq + lo * t->ldxq, t->ldxq, (int)(hi - lo), t->cols,
		    (char *)t->xp + lo * ps);
		return;
	}
	sa_split((t->n + GEMM_LANES - 1) / GEMM_LANES, chunk, nchunks, &lo, &hi);
	lo *= GEMM_LANES;
	hi = hi * GEMM_LANES < t->n ? hi * GEMM_LANES : t->n;
	if (hi > lo)
		sa_gemm_pack(t->x + lo * t->cols, (int)(hi - lo), t->cols, t->xp + lo * t->cols);
}

/* Y [n][rows] = Xr [n][cols] W^T (+ bias) (+ B (A Xr)) for nl maps taking
 * the same rounding of X [n][cols], Xr; rbuf [n][cols] scratch for it. */
static int
matmul(sa_kvcache *s, const lin *ls, int nl, const float *X, int n, float *rbuf)
{
	int cols = (int)ls[0].w->cols, own = 1, rc = SA_OK;
	struct mm_task t = { ls, nl, n, { 0 }, { 0 }, NULL, NULL, NULL, 0 };
	const float *Xr;

	for (int j = 0; j < nl; j++) {
		const sa_matrix *w = ls[j].w;
		t.blk[j] = sa_gemm_block(w->rows, (int64_t)n * cols);
		t.first[j + 1] = t.first[j] + (int)((w->rows + t.blk[j] - 1) / t.blk[j]);
		if (w->type != SA_TYPE_F32 && (size_t)t.blk[j] * cols > t.wt_stride)
			t.wt_stride = (size_t)t.blk[j] * cols;
		/* the maps' kernels read the input as rounded for all of them */
		own &= sa_gemm_own(w->type) && sa_type_act(w->type) == ls[0].act;
	}
	/* the own kernels of Q8_0 and K-quant weights read the blocks of the
	 * rounded input, those of the K-quants as they are */
	int q8 = own && ls[0].w->type == SA_TYPE_Q8_0;
	int qk = own && sa_type_act(ls[0].w->type) == SA_TYPE_Q8_K;
	if (!(Xr = t.x = round_rows(s, ls[0].act, X, n, cols, rbuf, q8 || qk, &rc)))
		return rc;
	if (qk) {
		t.xp = s->rowbuf;
	} else if (q8) {
		struct pack_task pt = { NULL, n, cols, NULL, s->rowbuf,
		    sa_type_row_size(SA_TYPE_Q8_0, cols) };
		size_t bytes = (size_t)n * Q8P_BYTES(cols / SA_QK8_0);
		if (grow(&s->xp, &s->xp_cap, (bytes + sizeof(float) - 1) / sizeof(float)))
			return SA_EINTERNAL;
		t.xp = pt.xp = s->xp;
		sa_pool_run_chunks(pack_task, &pt, chunks_for(n));
	} else if (own) {
		/* the path's own kernel reads the weights as they are */
		int panels = (n + GEMM_LANES - 1) / GEMM_LANES;
		struct pack_task pt = { Xr, n, cols, NULL, NULL, 0 };
		if (grow(&s->xp, &s->xp_cap, (size_t)panels * GEMM_LANES * cols))
			return SA_EINTERNAL;
		t.xp = pt.xp = s->xp;
		sa_pool_run_chunks(pack_task, &pt, chunks_for(panels));
	} else {
		if (grow(&s->wt, &s->wt_cap, sa_get_threads() * t.wt_stride))
			return SA_EINTERNAL;
		t.wt = s->wt;
	}
	sa_pool_run_chunks(mm_task, &t, t.first[nl]);
	for (int j = 0; j < nl; j++) {
		const lin *L = &ls[j];
		int rows = (int)L->w->rows;
		if (L->bias)
			for (int i = 0; i < n; i++)
				for (int r = 0; r < rows; r++)
					L->y[(size_t)i * rows + r] += L->bias[r];
		if (L->side && L->side->D) {
			/* Y [n][rows] += Xr [n][cols] D^T */
			sa_sgemm(CblasTrans, n, rows, cols, 1.0f, Xr, cols, L->side->D, cols, 1.0f, L->y,
			    rows);
		} else if (L->side) {
			/* T [n][rank] = Xr A^T;  Y += T B^T */
			int rank = L->side->rank;
			if (grow(&s->lr, &s->lr_cap, (size_t)n * rank))
				return SA_EINTERNAL;
			sa_sgemm(CblasTrans, n, rank, cols, 1.0f, Xr, cols, L->side->A, cols, 0.0f,
			    s->lr, rank);
			sa_sgemm(CblasTrans, n, rows, rank, 1.0f, s->lr, rank, L->side->B, rank, 1.0f,
			    L->y, rows);
		}
	}
	return SA_OK;
}

/* The rows of several matrices sharing the same inputs, split over the pool. */
struct mv_task {
	const lin *ls;
	int nl, nx;
	const float *xf[SA_NMAT];   /* inputs per lin [nx][cols], rounded for its act type */
	const void *xq[SA_NMAT];    /* per lin: its inputs quantized (or NULL), xq_stride bytes apart */
	size_t x_stride, xq_stride;
	int64_t total;
	float *lr;                  /* [nl * nx][rank]: each pair's A x (side_task) */
	int rank;                   /* the widest low-rank side path's */
};

static void
mv_task(void *arg, int ith, int chunk, int nchunks)
{
	struct mv_task *t = arg;
	int64_t lo, hi, base = 0;

	sa_split(t->total, chunk, nchunks, &lo, &hi);
	for (int j = 0; j < t->nl && lo < hi; j++) {
		const sa_matrix *w = t->ls[j].w;
		if (lo < base + w->rows) {
			int64_t end = hi < base + w->rows ? hi : base + w->rows;
			/* Several inputs: the kernels take them a few at a
			 * time, each few over all the rows they are given, so
			 * the rows go a block at a time, for the later passes
			 * to find the block in the cache.  Each row's sums stay
			 * as they are: the kernels sum every row on its own. */
			int64_t blk = MV_BLOCK / (int64_t)sa_type_row_size(w->type, w->cols);
			blk = (blk + MV_ROWS - 1) / MV_ROWS * MV_ROWS;
			if (t->nx == 1 || blk < 1)
				blk = end - lo;
			for (int64_t a = lo; a < end; a += blk)
				sa_rows_dot_n(w, a - base, (a + blk < end ? a + blk : end) - base, t->nx,
				    t->xf[j], t->x_stride, t->xq[j], t->xq_stride, t->ls[j].y,
				    (size_t)w->rows);
			lo = end;
		}
		base += w->rows;
	}
}

/* The side path of map L for its input i, or NULL. */
static const sa_lowrank *
pair_side(const lin *L, int i)
{
	return L->rows ? side_of(L->rows[i], L->mi) : L->side;
}

/* y [rows] += M [rows][cols] x, a block of rows at a time through
 * sa_dot_rows: the sums of sa_dot_f32, without a call a row (a side path
 * of rank 16 is thousands of dot products of 16). */
static void
side_rows(const float *M, int64_t rows, int64_t cols, const float *x, float *y)
{
	float t[256];

	for (int64_t o = 0; o < rows; o += 256) {
		int64_t n = rows - o < 256 ? rows - o : 256;

		sa_dot_rows(M + o * cols, n, cols, x, t);
		for (int64_t r = 0; r < n; r++)
			y[o + r] += t[r];
	}
}

/* Y += bias, then Y += B (A x) (or D x), for each pair of a map and an input, over
 * the pool: inputs with side paths of their own (sa_forward_rows) read
 * each its own, 8 of rank 16 on q, k, v and o as many bytes as 7% of the
 * F16 base (TinyLlama's shape). */
static void
side_task(void *arg, int ith, int chunk, int nchunks)
{
	struct mv_task *t = arg;
	int64_t lo, hi;

	sa_split((int64_t)t->nl * t->nx, chunk, nchunks, &lo, &hi);
	for (int64_t p = lo; p < hi; p++) {
		int j = (int)(p / t->nx), i = (int)(p % t->nx);
		const lin *L = &t->ls[j];
		const sa_lowrank *side = pair_side(L, i);
		int64_t rows = L->w->rows, cols = L->w->cols;
		const float *xi = t->xf[j] + i * cols;
		float *y = L->y + i * rows, *lr = t->lr + p * t->rank;

		if (L->bias)
			for (int64_t r = 0; r < rows; r++)
				y[r] += L->bias[r];
		if (side && side->D) {
			side_rows(side->D, rows, cols, xi, y);
		} else if (side) {
			/* lr [rank] = A x;  y [rows] += B lr */
			sa_dot_rows(side->A, side->rank, cols, xi, lr);
			side_rows(side->B, rows, side->rank, lr, y);
		}
	}
}

/*
 * Y = X W^T for a few inputs X [nx][cols] through the row kernels, which
 * read each weight once for all of them: decoding (nx = 1) and short
 * batches, where converting weights for sgemm would cost more than it saves.
 */
static int
matvec(sa_kvcache *s, const lin *ls, int nl, const float *X, int nx)
{
	int64_t cols = ls[0].w->cols;
	size_t stride = (size_t)s->maxw;
	struct mv_task t = { ls, nl, nx, { 0 }, { 0 }, (size_t)cols, stride * sizeof(float), 0, NULL,
	    0 };
	int have[4] = { 0, 0, 0, 0 }, after = 0;

	for (int j = 0; j < nl; j++) {
		int a = ls[j].act;
		int k = a == SA_TYPE_F16 ? 0 : a == SA_TYPE_BF16 ? 1 : a == SA_TYPE_Q8_0 ? 2 : 3;
		t.total += ls[j].w->rows;
		if (a == SA_TYPE_F32) {
			t.xf[j] = X;
			continue;
		}
		/* a Q8_0 weight reads the Q8_0 blocks of its input from xq, the
		 * other block types their Q8_0 or Q8_K blocks */
		if (ls[j].w->type == SA_TYPE_Q8_0 && a != SA_TYPE_Q8_0)
			return sa_fail(SA_EINTERNAL, "Q8_0 weights with a %s input", sa_type_name(a));
		if (!have[k] && k >= 2 && nx > 1) {
			/* the blocks of each input kept, in parallel */
			struct round_task rt = { a, X, s->vr[k], nx, cols, s->xq[k - 2], t.xq_stride, 1 };
			sa_pool_run_chunks(round_rows_task, &rt, chunks_for(nx));
		} else if (!have[k]) {
			/* F16 and BF16 pass through hrow, free here */
			for (int i = 0; i < nx; i++) {
				void *buf = k >= 2 ? (char *)s->xq[k - 2] + i * t.xq_stride : (void *)s->hrow;
				sa_round_row(a, X + i * cols, s->vr[k] + i * cols, buf, cols);
			}
		}
		have[k] = 1;
		t.xf[j] = s->vr[k];
		t.xq[j] = k >= 2 ? s->xq[k - 2] : NULL;
	}
	sa_pool_run_chunks(mv_task, &t, chunks_for(t.total / 16));

	for (int j = 0; j < nl; j++)
		for (int i = 0; i < nx; i++) {
			const sa_lowrank *side = pair_side(&ls[j], i);
			after |= ls[j].bias || side;
			if (side && !side->D && side->rank > t.rank)
				t.rank = side->rank;
		}
	if (!after)
		return SA_OK;
	if (grow(&s->lr, &s->lr_cap, (size_t)nl * nx * t.rank))
		return SA_EINTERNAL;
	t.lr = s->lr;
	sa_pool_run_chunks(side_task, &t, chunks_for((int64_t)nl * nx));
	return SA_OK;
}

/* Do batches go faster through the row kernels for all these maps than
 * through sgemm, and do some lack a kernel of their own for many inputs? */
static int
rows_batch(const lin *ls, int nl)
{
	int own = 1;

	for (int j = 0; j < nl; j++) {
		if (!sa_rows_batch(ls[j].w->type))
			return 0;
		own &= sa_gemm_own(ls[j].w->type);
	}
	return !own;
}

/* Several maps over the same input X [n][cols]; rbuf [n][cols] scratch for
 * the rounded input.  Outputs have row stride rows (their width). */
static int
linear(sa_kvcache *s, const lin *ls, int nl, const float *X, int n, float *rbuf)
{
	int64_t cols = ls[0].w->cols;
	int rc = SA_OK;

	if (n <= SMALL_N)
		return matvec(s, ls, nl, X, n);
	if (rows_batch(ls, nl)) {
		/* SMALL_N inputs at a time through the row kernels */
		lin part[SA_NMAT];
		for (int i = 0; i < n; i += SMALL_N) {
			for (int j = 0; j < nl; j++) {
				part[j] = ls[j];
				part[j].y = ls[j].y + (size_t)i * ls[j].w->rows;
				part[j].rows = ls[j].rows ? ls[j].rows + i : NULL;
			}
			if ((rc = matvec(s, part, nl, X + (size_t)i * cols,
			    n - i < SMALL_N ? n - i : SMALL_N)) != SA_OK)
				return rc;
		}
		return SA_OK;
	}
	/* the maps from j on that take the input rounded the same way */
	for (int j = 0, k; j < nl; j = k) {
		for (k = j + 1; k < nl && ls[k].act == ls[j].act; k++)
			;
		if ((rc = matmul(s, ls + j, k - j, X, n, rbuf)) != SA_OK)
			return rc;
	}
	return SA_OK;
}

/* ---------------------------------------------------------- attention */

/* Rows i0..n-1 of this call, one (row, head) pair at a time: the kernel
 * path, for decoding and short batches. */
struct att_task {
	sa_kvcache *s;
	int l, i0, n;
	float scale;
};

/* out [dh] = softmax(q [dh] . K_g [len][dh]^T * scale) V_g [len][dh], the
 * keys and values of kv group g in caches kc, vc [len][kvd]; sc [len] scratch. */
static void
att_one(const float *q, const float *kc, const float *vc, int len, size_t kvd, int g, int dh,
    float scale, float *sc, float *out)
{
	for (int p = 0; p < len; p++)
		sc[p] = sa_dot_f32(q, kc + p * kvd + (size_t)g * dh, dh) * scale;
	sa_softmax_f32(sc, len);
	memset(out, 0, (size_t)dh * sizeof(float));
	for (int p = 0; p < len; p++)
		sa_axpy_f32(sc[p], vc + p * kvd + (size_t)g * dh, out, dh);
}

static void
att_task(void *arg, int ith, int chunk, int nchunks)
{
	struct att_task *t = arg;
	sa_kvcache *s = t->s;
	const sa_config *c = &s->m->cfg;
	int H = c->n_head, dh = c->d_head, grp = c->n_head / c->n_head_kv;
	size_t qd = (size_t)H * dh, kvd = (size_t)c->n_head_kv * dh;
	float *sc = s->sc + (size_t)ith * s->n_ctx;
	int64_t lo, hi;

	sa_split((int64_t)(t->n - t->i0) * H, chunk, nchunks, &lo, &hi);
	for (int64_t task = lo; task < hi; task++) {
		int i = t->i0 + (int)(task / H), h = (int)(task % H);
		/* a row of sa_forward_rows sees its own cache, the rows of one
		 * sequence the tokens before them */
		const sa_kvcache *kv = s->rows ? s->rows[i] : s;
		int len = s->rows ? kv->pos + 1 : s->pos + i + 1;

		att_one(s->q + i * qd + (size_t)h * dh, kv->kc[t->l], kv->vc[t->l], len, kvd,
		    h / grp, dh, t->scale, sc, s->ao + i * qd + (size_t)h * dh);
	}
}

/*
 * Head h of a block of nq query rows from qb, one head a chunk, through
 * single-threaded sgemm on the chunk's thread: scores S [nq][kvn] = scale *
 * Q_h K_g^T, where row r sees keys up to kvn - nq + r; their softmax; then
 * O_h = S V_g.
 */
struct head_task {
	sa_kvcache *s;
	int l, qb, nq, kvn;
	float scale;
};

static void
head_task(void *arg, int ith, int h, int H)
{
	struct head_task *t = arg;
	sa_kvcache *s = t->s;
	const sa_config *c = &s->m->cfg;
	int dh = c->d_head, g = h / (c->n_head / c->n_head_kv);
	int qd = H * dh, kvd = c->n_head_kv * dh;
	float *sc = s->sc + (size_t)h * t->nq * t->kvn;

	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, t->nq, t->kvn, dh, t->scale,
	    s->q + (size_t)t->qb * qd + (size_t)h * dh, qd, s->kc[t->l] + (size_t)g * dh, kvd,
	    0.0f, sc, t->kvn);
	for (int r = 0; r < t->nq; r++) {
		float *row = sc + (size_t)r * t->kvn;
		int len = t->kvn - t->nq + r + 1;
		sa_softmax_f32(row, len);
		memset(row + len, 0, (size_t)(t->kvn - len) * sizeof(float));
	}
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, t->nq, dh, t->kvn, 1.0f, sc,
	    t->kvn, s->vc[t->l] + (size_t)g * dh, kvd, 0.0f,
	    s->ao + (size_t)t->qb * qd + (size_t)h * dh, qd);
}

/*
 * ao rows i0..n-1 = causal attention of q over the cache of layer l.
 * Short batches go through the kernels one (row, head) at a time; longer
 * ones through sgemm, a block of query rows for all heads at once.
 */
static int
attention(sa_kvcache *s, int l, int i0, int n)
{
	const sa_config *c = &s->m->cfg;
	const sa_model_impl *x = sa_model_impl_of(s->m);
	int H = c->n_head, dh = c->d_head, qblk;
	float scale = x->kq_scale != 0 ? x->kq_scale : 1.0f / sqrtf((float)dh);

	if (n - i0 < ATT_GEMM_MIN) {
		struct att_task t = { s, l, i0, n, scale };
		if (grow(&s->sc, &s->sc_cap, (size_t)sa_get_threads() * s->n_ctx))
			return SA_EINTERNAL;
		sa_pool_run_chunks(att_task, &t, chunks_for((int64_t)(n - i0) * H));
		return SA_OK;
	}
	/* scores [H][qblk][kvn] within SC_FLOATS */
	qblk = (int)(SC_FLOATS / ((size_t)H * (s->pos + n)));
	qblk = qblk < 16 ? 16 : qblk > QBLK ? QBLK : qblk;
	if (grow(&s->sc, &s->sc_cap, (size_t)H * qblk * (s->pos + n)))
		return SA_EINTERNAL;
	for (int qb = i0; qb < n; qb += qblk) {
		int nq = n - qb < qblk ? n - qb : qblk;
		struct head_task t = { s, l, qb, nq, s->pos + qb + nq, scale };
		sa_pool_run_chunks(head_task, &t, H);
	}
	return SA_OK;
}

/* ------------------------------------------------------------ forward */

/* Rows i0..i0+n-1 of x, the input of the matrices in mats of layer l, to
 * the input hook if it wants one of them. */
static void
input_seen(sa_kvcache *s, int l, uint32_t mats, int i0, int n, const float *x)
{
	if (s->in_hook && sa_adapted(mats, s->in_mat))
		s->in_hook(s->in_ctx, l, i0, n, x);
}

/* x rows i0..n-1 += tmp's (attention's output), then tmp's := ffn(rmsnorm(x)),
 * FBLK rows at a time: the caller adds them to x. */
static int
ffn(sa_kvcache *s, int l, int i0, int n)
{
	const sa_model *m = s->m;
	const sa_config *c = &m->cfg;
	const sa_layer *L = &m->layers[l];
	const sa_float_kernels *fk = sa_kernels_float();
	size_t d = c->d_model, ff = c->d_ff;
	int rc;

	for (int b0 = i0; b0 < n; b0 += FBLK) {
		int nb = n - b0 < FBLK ? n - b0 : FBLK;
		float *xn = s->xn + b0 * d, *y = s->tmp + b0 * d;
		struct swiglu_task st = { s->hb, s->hb2, (size_t)nb * ff };
		norm_rows(s, s->x + b0 * d, y, L->ffn_norm.data, xn, nb);
		input_seen(s, l, 1u << SA_MAT_GATE | 1u << SA_MAT_UP, b0, nb, xn);
		lin gu[2] = {
			layer_lin(s, l, SA_MAT_GATE, NULL, s->hb),
			layer_lin(s, l, SA_MAT_UP, NULL, s->hb2),
		};
		if ((rc = linear(s, gu, 2, xn, nb, s->xr)) != SA_OK)
			return rc;
		/* hb := silu(hb) * hb2.  Rows of sa_forward_rows a row at a time,
		 * as each runs alone: the vector unit's tail then falls where it
		 * does there. */
		for (int i = 0; s->rows && i < nb; i++)
			fk->swiglu(s->hb + i * ff, s->hb + i * ff, s->hb2 + i * ff, ff);
		if (!s->rows)
			rows_run(swiglu_task, &st, nb);
		input_seen(s, l, 1u << SA_MAT_DOWN, b0, nb, s->hb);
		/* into the rows of tmp just added to x */
		lin down = layer_lin(s, l, SA_MAT_DOWN, NULL, y);
		if ((rc = linear(s, &down, 1, s->hb, nb, s->hr)) != SA_OK)
			return rc;
	}
	return SA_OK;
}

/*
 * toks [n] through the layers after the cache: the tokens of one sequence,
 * or with s->rows one token of each row's sequence.  The checks are done.
 */
static int
forward_tokens(sa_kvcache *s, const int *toks, int n, float *logits, int all_logits)
{
	const sa_model *m = s->m;
	const sa_config *c = &m->cfg;
	size_t d = c->d_model, qd = (size_t)c->n_head * c->d_head;
	int rc, i0 = 0;
	const float *ffn_out = NULL;   /* the layer before's, to add to x: tmp */

	if ((rc = build_scratch(s, n)) != SA_OK)
		return rc;

	for (int i = 0; i < n; i++)
		sa_rows_to_f32(&m->tok_embd, toks[i], toks[i] + 1, s->x + i * d);
	rope_table(s, n);

	for (int l = 0; l < c->n_layer; l++) {
		const sa_layer *L = &m->layers[l];
		int last = l == c->n_layer - 1;

		norm_rows(s, s->x, ffn_out, L->attn_norm.data, s->xn, n);
		lin qkv[3] = {
			layer_lin(s, l, SA_MAT_Q, L->bq.data, s->q),
			layer_lin(s, l, SA_MAT_K, L->bk.data, s->k),
			layer_lin(s, l, SA_MAT_V, L->bv.data, s->v),
		};
		if ((rc = linear(s, qkv, 3, s->xn, n, s->xr)) != SA_OK)
			return rc;
		if (s->hook)
			s->hook(s->hook_ctx, l, n, s->k, s->v);
		if (s->q_hook)
			s->q_hook(s->q_hook_ctx, l, n, s->q);
		input_seen(s, l, 1u << SA_MAT_Q | 1u << SA_MAT_K | 1u << SA_MAT_V, 0, n, s->xn);
		struct rope_task rt = { s, n };
		rows_run(rope_task, &rt, n);
		kv_store(s, l, n);

		/* Past the last layer's cache only the rows wanted for logits
		 * matter, unless the input hook wants every row's. */
		if (last && !s->in_hook) {
			if (!logits)
				break;
			if (!all_logits)
				i0 = n - 1;
		}
		if ((rc = attention(s, l, i0, n)) != SA_OK)
			return rc;
		input_seen(s, l, 1u << SA_MAT_O, i0, n - i0, s->ao + i0 * qd);
		lin o = layer_lin(s, l, SA_MAT_O, NULL, s->tmp + i0 * d);
		if ((rc = linear(s, &o, 1, s->ao + i0 * qd, n - i0, s->xr)) != SA_OK)
			return rc;
		if ((rc = ffn(s, l, i0, n)) != SA_OK)
			return rc;
		ffn_out = s->tmp;
	}
	for (int i = 0; s->rows && i < n; i++)
		s->rows[i]->pos++;
	if (!s->rows)
		s->pos += n;
	if (!logits)
		return SA_OK;
	if (!all_logits)
		i0 = n - 1;
	norm_rows(s, s->x + i0 * d, s->tmp + i0 * d, m->out_norm.data, s->xn + i0 * d, n - i0);
	lin out = { &m->output, sa_type_act(m->output.type), NULL, NULL, logits, NULL, 0 };
	return linear(s, &out, 1, s->xn + i0 * d, n - i0, s->xr);
}

static int
check_tokens(const sa_config *c, const int *toks, int n)
{
	for (int i = 0; i < n; i++)
		if (toks[i] < 0 || toks[i] >= c->n_vocab)
			return sa_fail(SA_EDATA, "token %d out of range (the vocabulary has %d)",
			    toks[i], c->n_vocab);
	return SA_OK;
}

int
sa_forward(sa_kvcache *s, const int *toks, int n, float *logits, int all_logits)
{
	int rc;

	if (n < 1)
		return sa_fail(SA_EUSAGE, "no tokens to run");
	if (n > s->n_ctx - s->pos)
		return sa_fail(SA_EDATA, "prompt of %lld tokens exceeds the context of %d",
		    (long long)s->pos + n, s->n_ctx);
	if ((rc = check_tokens(&s->m->cfg, toks, n)) != SA_OK)
		return rc;
	return forward_tokens(s, toks, n, logits, all_logits);
}

/*
 * One token for each of n sequences, each with its own cache, in one pass
 * over the weights: the layers of sa_forward with n = 1, for n rows at
 * once.  The linear maps read each weight once for all rows through the
 * row kernels, whose result for a row does not depend on the others; the
 * side paths, RoPE positions and attention are each row's own.  So each
 * row's logits are the bits sa_forward gives for its token alone.  The
 * scratch is kv[0]'s.
 */
int
sa_forward_rows(sa_kvcache *const *kv, const int *toks, int n, float *logits)
{
	sa_kvcache *s = kv[0];
	int rc;

	if (n < 1 || n > SMALL_N)
		return sa_fail(SA_EUSAGE, "%d rows: one pass runs 1 to %d", n, SMALL_N);
	for (int i = 0; i < n; i++) {
		if (kv[i]->m != s->m || kv[i]->n_ctx != s->n_ctx || kv[i]->hook ||
		    kv[i]->q_hook || kv[i]->in_hook)
			return sa_fail(SA_EUSAGE, "rows of one pass need caches of one model and size, "
			    "without hooks");
		if (kv[i]->pos >= kv[i]->n_ctx)
			return sa_fail(SA_EDATA, "prompt of %lld tokens exceeds the context of %d",
			    (long long)kv[i]->pos + 1, kv[i]->n_ctx);
	}
	if ((rc = check_tokens(&s->m->cfg, toks, n)) != SA_OK)
		return rc;
	s->rows = kv;
	rc = forward_tokens(s, toks, n, logits, 1);
	s->rows = NULL;
	return rc;
}
