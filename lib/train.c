/*
 * train.c - forward and backward of the Llama model in F32, for training.
 *
 * One clear data flow, as in llm.c's train_gpt2.c: parameters in one block,
 * activations of a whole batch kept for the backward pass, each kernel's
 * forward beside its backward, big products through sgemm.  Row-major
 * everywhere: a linear map W is [d_out][d_in] and y = x W^T.
 */
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "sa.h"
#include "kernels_impl.h"     /* sa_kernels_float, sa_softmax_f32 */
#include "train_impl.h"

/* Queries per block of the causal attention (see attention_forward). */
#define ATT_BLOCK 64
/* Rows of a weight not stored in F32 converted at a time for sgemm: 128
 * rows of TinyLlama's FFN are 2.9 MB of F32 scratch. */
#define WTILE 128

/* ------------------------------------------------------------ the model */

static size_t
layer_size(const sa_config *c)
{
	size_t d = c->d_model, hd = (size_t)c->n_head * c->d_head;
	size_t kv = (size_t)c->n_head_kv * c->d_head, ff = c->d_ff;

	return d + hd * d + 2 * kv * d + d * hd + d + 3 * ff * d;
}

/* Point the views of t (params or grads block) into base. */
static void
carve(const sa_tmodel *t, float *base, float **tok_embd, float **out_norm,
    float **output, sa_tlayer *layers)
{
	const sa_config *c = &t->cfg;
	size_t d = c->d_model, hd = (size_t)c->n_head * c->d_head;
	size_t kv = (size_t)c->n_head_kv * c->d_head, ff = c->d_ff;
	float *p = base;

	*tok_embd = p; p += (size_t)c->n_vocab * d;
	for (int l = 0; l < c->n_layer; l++) {
		sa_tlayer *L = &layers[l];
		L->attn_norm = p; p += d;
		L->w[SA_MAT_Q] = p; p += hd * d;
		L->w[SA_MAT_K] = p; p += kv * d;
		L->w[SA_MAT_V] = p; p += kv * d;
		L->w[SA_MAT_O] = p; p += d * hd;
		L->ffn_norm = p; p += d;
		L->w[SA_MAT_GATE] = p; p += ff * d;
		L->w[SA_MAT_UP] = p; p += ff * d;
		L->w[SA_MAT_DOWN] = p; p += d * ff;
	}
	*out_norm = p; p += d;
	*output = t->tied ? *tok_embd : p;
}

static int
check_config(const sa_config *c)
{
	if (c->n_layer < 1 || c->d_model < 1 || c->n_head < 1 || c->n_head_kv < 1 ||
	    c->d_head < 2 || c->d_ff < 1 || c->n_vocab < 1 || c->n_head % c->n_head_kv ||
	    c->rope_dim > c->d_head || c->rope_dim % 2)
		return sa_fail(SA_EUSAGE, "invalid model shape");
	return SA_OK;
}

static int
tmodel_alloc(sa_tmodel **out, const sa_config *cfg, int tied)
{
	sa_tmodel *t;
	int rc;

	*out = NULL;
	if ((rc = check_config(cfg)) != SA_OK)
		return rc;
	if (!(t = sa_calloc(1, sizeof *t)))
		return SA_EINTERNAL;
	t->cfg = *cfg;
	t->tied = tied;
	t->n_params = (size_t)cfg->n_vocab * cfg->d_model * (tied ? 1 : 2) +
	    (size_t)cfg->n_layer * layer_size(cfg) + cfg->d_model;
	t->params = sa_malloc(t->n_params * sizeof(float));
	t->layers = sa_calloc(cfg->n_layer, sizeof *t->layers);
	t->glayers = sa_calloc(cfg->n_layer, sizeof *t->glayers);
	t->wmat = sa_calloc((size_t)cfg->n_layer * SA_NMAT, sizeof *t->wmat);
	if (!t->params || !t->layers || !t->glayers || !t->wmat) {
		sa_tmodel_free(t);
		return SA_EINTERNAL;
	}
	carve(t, t->params, &t->tok_embd, &t->out_norm, &t->output, t->layers);
	t->wembd = (sa_matrix){ SA_TYPE_F32, cfg->n_vocab, cfg->d_model, t->tok_embd };
	t->wout = (sa_matrix){ SA_TYPE_F32, cfg->n_vocab, cfg->d_model, t->output };
	for (int l = 0; l < cfg->n_layer; l++)
		for (int m = 0; m < SA_NMAT; m++) {
			int dout, din;
			sa_tmodel_mat_dims(cfg, m, &dout, &din);
			t->wmat[l * SA_NMAT + m] = (sa_matrix){ SA_TYPE_F32, dout, din, t->layers[l].w[m] };
		}
	*out = t;
	return SA_OK;
}

void
sa_tmodel_free(sa_tmodel *t)
{
	if (!t)
		return;
	free(t->params);
	free(t->grads);
	free(t->layers);
	free(t->glayers);
	free(t->wmat);
	free(t);
}

int
sa_tmodel_want_grads(sa_tmodel *t, int on)
{
	if (!on) {
		free(t->grads);
		t->grads = NULL;
		return SA_OK;
	}
	if (t->frozen)
		return sa_fail(SA_EUSAGE, "a frozen model has no weight gradients");
	if (!t->grads && !(t->grads = sa_calloc(t->n_params, sizeof(float))))
		return SA_EINTERNAL;
	carve(t, t->grads, &t->gtok_embd, &t->gout_norm, &t->goutput, t->glayers);
	return SA_OK;
}

/* Box-Muller: the same numbers on every machine. */
static double
next_gauss(uint64_t *s)
{
	double u1 = sa_unif_pos(s);
	double u2 = sa_unif(s);
	return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

static void
fill_gauss(float *p, size_t n, double std, uint64_t *s)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (float)(std * next_gauss(s));
}

int
sa_tmodel_new(sa_tmodel **out, const sa_config *cfg, int tied, uint64_t seed)
{
	sa_tmodel *t;
	uint64_t s = seed;
	int rc;

	if (cfg->arch != SA_ARCH_LLAMA)
		return sa_fail(SA_EUSAGE, "training supports the llama architecture only");
	if ((rc = tmodel_alloc(&t, cfg, tied)) != SA_OK)
		return rc;
	const sa_config *c = &t->cfg;
	/* GPT-2's init: std 0.02, the maps that write into the residual stream
	 * scaled by 1/sqrt(2 L) so the stream's variance does not grow with depth. */
	double std = 0.02, res_std = 0.02 / sqrt(2.0 * c->n_layer);
	fill_gauss(t->tok_embd, (size_t)c->n_vocab * c->d_model, std, &s);
	for (int l = 0; l < c->n_layer; l++) {
		sa_tlayer *L = &t->layers[l];
		for (int m = 0; m < SA_NMAT; m++) {
			int dout, din;
			sa_tmodel_mat_dims(c, m, &dout, &din);
			fill_gauss(L->w[m], (size_t)dout * din,
			    (m == SA_MAT_O || m == SA_MAT_DOWN) ? res_std : std, &s);
		}
		for (int i = 0; i < c->d_model; i++)
			L->attn_norm[i] = L->ffn_norm[i] = 1.0f;
	}
	for (int i = 0; i < c->d_model; i++)
		t->out_norm[i] = 1.0f;
	if (!tied)
		fill_gauss(t->output, (size_t)c->n_vocab * c->d_model, std, &s);
	*out = t;
	return SA_OK;
}

void
sa_tmodel_mat_dims(const sa_config *c, int m, int *d_out, int *d_in)
{
	int hd = c->n_head * c->d_head, kv = c->n_head_kv * c->d_head;

	switch (m) {
	case SA_MAT_Q: *d_out = hd; *d_in = c->d_model; break;
	case SA_MAT_K: case SA_MAT_V: *d_out = kv; *d_in = c->d_model; break;
	case SA_MAT_O: *d_out = c->d_model; *d_in = hd; break;
	case SA_MAT_GATE: case SA_MAT_UP: *d_out = c->d_ff; *d_in = c->d_model; break;
	default: *d_out = c->d_model; *d_in = c->d_ff; break;
	}
}

static void
matrix_to_f32(const sa_matrix *src, float *dst)
{
	size_t rs = sa_type_row_size(src->type, src->cols);

	for (int64_t r = 0; r < src->rows; r++)
		sa_row_to_f32(src->type, (const char *)src->data + r * rs,
		    dst + r * src->cols, src->cols);
}

int
sa_tmodel_from_model(sa_tmodel **out, const sa_model *m)
{
	sa_tmodel *t;
	int rc, tied = m->output.data == m->tok_embd.data;

	if (m->cfg.arch != SA_ARCH_LLAMA)
		return sa_fail(SA_EDATA, "%s: training supports the llama architecture only", m->name);
	if ((rc = tmodel_alloc(&t, &m->cfg, tied)) != SA_OK)
		return rc;
	matrix_to_f32(&m->tok_embd, t->tok_embd);
	matrix_to_f32(&m->out_norm, t->out_norm);
	if (!tied)
		matrix_to_f32(&m->output, t->output);
	for (int l = 0; l < m->cfg.n_layer; l++) {
		matrix_to_f32(&m->layers[l].attn_norm, t->layers[l].attn_norm);
		matrix_to_f32(&m->layers[l].ffn_norm, t->layers[l].ffn_norm);
		for (int j = 0; j < SA_NMAT; j++)
			matrix_to_f32(&m->layers[l].w[j], t->layers[l].w[j]);
	}
	*out = t;
	return SA_OK;
}

int
sa_tmodel_view(sa_tmodel **out, const sa_model *m)
{
	const sa_config *c = &m->cfg;
	sa_tmodel *t;
	float *p;
	int rc;

	*out = NULL;
	if (c->arch != SA_ARCH_LLAMA)
		return sa_fail(SA_EDATA, "%s: training supports the llama architecture only", m->name);
	if ((rc = check_config(c)) != SA_OK)
		return rc;
	if (!(t = sa_calloc(1, sizeof *t)))
		return SA_EINTERNAL;
	t->cfg = *c;
	t->tied = m->output.data == m->tok_embd.data;
	t->frozen = 1;
	t->n_params = (2 * (size_t)c->n_layer + 1) * c->d_model;
	t->params = p = sa_malloc(t->n_params * sizeof(float));
	t->layers = sa_calloc(c->n_layer, sizeof *t->layers);
	t->wmat = sa_calloc((size_t)c->n_layer * SA_NMAT, sizeof *t->wmat);
	if (!t->params || !t->layers || !t->wmat) {
		sa_tmodel_free(t);
		return SA_EINTERNAL;
	}
	for (int l = 0; l < c->n_layer; l++) {
		t->layers[l].attn_norm = p; p += c->d_model;
		t->layers[l].ffn_norm = p; p += c->d_model;
		matrix_to_f32(&m->layers[l].attn_norm, t->layers[l].attn_norm);
		matrix_to_f32(&m->layers[l].ffn_norm, t->layers[l].ffn_norm);
		memcpy(t->wmat + (size_t)l * SA_NMAT, m->layers[l].w, sizeof m->layers[l].w);
	}
	t->out_norm = p;
	matrix_to_f32(&m->out_norm, t->out_norm);
	t->wembd = m->tok_embd;
	t->wout = m->output;
	*out = t;
	return SA_OK;
}

/* ---------------------------------------------------------- activations */

typedef struct tlayer_act {
	float *res;        /* [N][d]   residual stream entering the layer */
	float *xn1;        /* [N][d]   attn_norm output */
	float *rstd1;      /* [N] */
	float *q;          /* [N][Hd]  after RoPE */
	float *kraw;       /* [N][Dkv] before RoPE (the context pass reads these) */
	float *k;          /* [N][Dkv] after RoPE */
	float *v;          /* [N][Dkv] */
	float *att;        /* [B][H][T][T] softmax probabilities */
	float *ao;         /* [N][Hd]  attention output, before attn_output */
	float *mid;        /* [N][d]   residual after attention */
	float *xn2;        /* [N][d] */
	float *rstd2;      /* [N] */
	float *gate;       /* [N][ff]  before SiLU */
	float *up;         /* [N][ff] */
	float *act;        /* [N][ff]  silu(gate) * up */
	float *side_t1[SA_NMAT];   /* [N][r]   W2 x, per adapted matrix */
	float *side_t2[SA_NMAT];   /* [N][Dkv] H^T (W2 x) */
} tlayer_act;

struct sa_tact {
	sa_config cfg;
	int Bmax, Tmax, B, T;
	tlayer_act *L;
	float *res_out;    /* [N][d]  residual after the last layer */
	float *xnf;        /* [N][d] */
	float *rstdf;      /* [N] */
	float *logits;     /* [N][V] */
	float *dlogits;    /* [N][V]  exp(logit - row max) of scored rows after forward,
	                    * d(loss)/d(logits) after backward */
	float *expsum;     /* [N]     sum of a scored row's exp(logit - row max) */
	int *tokens;       /* [N] */
	int *targets;      /* [N] */
	int n_scored;
	float *rope_cos, *rope_sin;    /* [T][rope_dim/2] */
	/* backward scratch */
	float *dres, *dx, *dxn, *dq, *dk, *dv, *dao, *datt, *dff1, *dff2, *dff3;
	float *side_dt1, *side_dt2;    /* [N][rmax], [N][Dkv]: sized at first use */
	int side_rmax;
	float *wt;         /* [WTILE][widest d_in] a tile of weight rows in F32 */
	void *xq;          /* [XQ_INPUTS] inputs rounded for quantized rows: sized at first use */
	size_t xq_cap;     /* its bytes */
	void *block;
};

int
sa_tact_new(sa_tact **out, const sa_config *c, int B, int T)
{
	sa_tact *a;
	size_t N = (size_t)B * T, d = c->d_model, hd = (size_t)c->n_head * c->d_head;
	size_t kv = (size_t)c->n_head_kv * c->d_head, ff = c->d_ff, V = c->n_vocab;
	size_t att = (size_t)B * c->n_head * T * T, half = c->rope_dim / 2;
	size_t per_layer = N * (3 * d + 2 * d + hd + 3 * kv + hd + 3 * ff) + 2 * N + att;
	size_t total = c->n_layer * per_layer + N * (2 * d + 2 * V) + 2 * N +
	    2 * (size_t)T * half +
	    N * (d + d + d + hd + kv + kv + hd + 3 * (ff > hd ? ff : hd)) +
	    (size_t)(T < ATT_BLOCK ? T : ATT_BLOCK) * T +
	    (size_t)WTILE * (ff > hd ? (ff > d ? ff : d) : (hd > d ? hd : d));
	float *p;

	*out = NULL;
	if (B < 1 || T < 1)
		return sa_fail(SA_EUSAGE, "empty batch");
	if (!(a = sa_calloc(1, sizeof *a)))
		return SA_EINTERNAL;
	a->cfg = *c;
	a->Bmax = B;
	a->Tmax = T;
	a->L = sa_calloc(c->n_layer, sizeof *a->L);
	a->block = p = sa_malloc(total * sizeof(float));
	a->tokens = sa_malloc(N * sizeof(int));
	a->targets = sa_malloc(N * sizeof(int));
	if (!a->L || !a->block || !a->tokens || !a->targets) {
		sa_tact_free(a);
		return SA_EINTERNAL;
	}
#define TAKE(ptr, n) do { (ptr) = p; p += (n); } while (0)
	for (int l = 0; l < c->n_layer; l++) {
		tlayer_act *L = &a->L[l];
		TAKE(L->res, N * d); TAKE(L->xn1, N * d); TAKE(L->rstd1, N);
		TAKE(L->q, N * hd); TAKE(L->kraw, N * kv); TAKE(L->k, N * kv);
		TAKE(L->v, N * kv); TAKE(L->att, att); TAKE(L->ao, N * hd);
		TAKE(L->mid, N * d); TAKE(L->xn2, N * d); TAKE(L->rstd2, N);
		TAKE(L->gate, N * ff); TAKE(L->up, N * ff); TAKE(L->act, N * ff);
	}
	TAKE(a->res_out, N * d); TAKE(a->xnf, N * d); TAKE(a->rstdf, N);
	TAKE(a->logits, N * V); TAKE(a->dlogits, N * V); TAKE(a->expsum, N);
	TAKE(a->rope_cos, (size_t)T * half); TAKE(a->rope_sin, (size_t)T * half);
	size_t big = ff > hd ? ff : hd;
	TAKE(a->dres, N * d); TAKE(a->dx, N * d); TAKE(a->dxn, N * d);
	TAKE(a->dq, N * hd); TAKE(a->dk, N * kv); TAKE(a->dv, N * kv);
	TAKE(a->dao, N * hd); TAKE(a->dff1, N * big); TAKE(a->dff2, N * big);
	TAKE(a->dff3, N * big); TAKE(a->datt, (size_t)(T < ATT_BLOCK ? T : ATT_BLOCK) * T);
	TAKE(a->wt, (size_t)WTILE * (big > d ? big : d));
#undef TAKE
	/* RoPE as llama.cpp's normal mode: adjacent pairs (2i, 2i+1), angle
	 * pos * base^(-2i/rope_dim). */
	for (int t = 0; t < T; t++)
		for (size_t i = 0; i < half; i++) {
			double th = t * pow(c->rope_base, -2.0 * i / c->rope_dim);
			a->rope_cos[t * half + i] = (float)cos(th);
			a->rope_sin[t * half + i] = (float)sin(th);
		}
	*out = a;
	return SA_OK;
}

static void
free_side_bufs(sa_tact *a)
{
	for (int l = 0; l < a->cfg.n_layer; l++)
		for (int m = 0; m < SA_NMAT; m++) {
			free(a->L[l].side_t1[m]);
			free(a->L[l].side_t2[m]);
			a->L[l].side_t1[m] = a->L[l].side_t2[m] = NULL;
		}
	free(a->side_dt1);
	free(a->side_dt2);
	a->side_dt1 = a->side_dt2 = NULL;
	a->side_rmax = 0;
}

void
sa_tact_free(sa_tact *a)
{
	if (!a)
		return;
	if (a->L)
		free_side_bufs(a);
	free(a->L);
	free(a->block);
	free(a->xq);
	free(a->tokens);
	free(a->targets);
	free(a);
}

const float *sa_tact_keys(const sa_tact *a, int l) { return a->L[l].kraw; }
const float *sa_tact_values(const sa_tact *a, int l) { return a->L[l].v; }

/* Where layer activations L hold the input of matrix mat. */
static float **
input_slot(tlayer_act *L, int mat)
{
	return mat <= SA_MAT_V ? &L->xn1 : mat == SA_MAT_O ? &L->ao : mat == SA_MAT_DOWN ? &L->act : &L->xn2;
}

const float *
sa_tact_input(const sa_tact *a, int l, int mat)
{
	return *input_slot(&a->L[l], mat);
}
const float *sa_tact_logits(const sa_tact *a) { return a->logits; }

/* ---------------------------------------------------------------- kernels */

/* Inputs and rows of a quantized product taken together: XQ_INPUTS inputs
 * rounded (at most 420 KB of Q8_K for TinyLlama's FFN, their values in
 * a->wt) meet the rows, for the row kernels XQ_ROWS at a time, both held in
 * L2 while the kernels pass over them. */
#define XQ_INPUTS 64
#define XQ_ROWS 16

/*
 * The type the rows of a frozen W meet their inputs rounded to, in
 * integers, as inference multiplies them (through the path's own GEMM
 * where it has one, else the row kernels): Q8_0 for Q8_0, Q8_K for the
 * K-quants; 0 for the F32 tiles.  *qb: the bytes of one rounded input of
 * din columns.  a->xq grows to hold XQ_INPUTS of them, for Q8_0 the same
 * packed for the GEMM behind them.
 */
static int
rounded_type(sa_tact *a, const sa_matrix *W, int din, size_t *qb)
{
	int act = sa_type_act(W->type);
	size_t need;
	void *p;

	if (act != SA_TYPE_Q8_K && W->type != SA_TYPE_Q8_0)
		return 0;
	*qb = sa_act_row_size(act, din);
	need = XQ_INPUTS * (*qb + (W->type == SA_TYPE_Q8_0 ? Q8P_BYTES(din / SA_QK8_0) : 0));
	if (need <= a->xq_cap)
		return act;
	if (!(p = realloc(a->xq, need)))
		return 0;     /* the F32 tiles need no more memory */
	a->xq = p;
	a->xq_cap = need;
	return act;
}

/*
 * y [N][dout] = x [N][din] W^T, W [dout][din].  A frozen Q8_0 or K-quant W
 * meets its inputs rounded, in integers, as inference multiplies it (so the
 * base an adapter trains against is the one it runs with, at inference's
 * speed).  Another W not stored in F32 goes WTILE rows at a time through
 * a->wt [WTILE][din], converted exactly: only sgemm's order of sums can
 * differ from a whole F32 copy's.
 */
static void
matmul_forward(sa_tact *a, float *y, const float *x, const sa_matrix *W, int N, int din, int dout)
{
	size_t qb;
	int act;

	if (W->type == SA_TYPE_F32) {
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, dout, din,
		    1.0f, x, din, W->data, din, 0.0f, y, dout);
		return;
	}
	if ((act = rounded_type(a, W, din, &qb))) {
		char *xq = a->xq, *xp = xq + XQ_INPUTS * qb;
		for (int i0 = 0; i0 < N; i0 += XQ_INPUTS) {
			int ni = N - i0 < XQ_INPUTS ? N - i0 : XQ_INPUTS;
			float *yi = y + (size_t)i0 * dout;
			for (int i = 0; i < ni; i++)
				sa_round_row(act, x + (size_t)(i0 + i) * din, a->wt + (size_t)i * din,
				    xq + i * qb, din);
			if (sa_gemm_own(W->type)) {
				if (act == SA_TYPE_Q8_0)
					sa_gemm_pack_q8_0(xq, qb, ni, din, xp);
				sa_gemm_rows(W, 0, dout, act == SA_TYPE_Q8_0 ? xp : xq, ni, yi, dout);
				continue;
			}
			for (int r0 = 0; r0 < dout; r0 += XQ_ROWS)
				sa_rows_dot_n(W, r0, r0 + XQ_ROWS < dout ? r0 + XQ_ROWS : dout, ni,
				    a->wt, din, xq, qb, yi, dout);
		}
		return;
	}
	for (int r0 = 0; r0 < dout; r0 += WTILE) {
		int nr = dout - r0 < WTILE ? dout - r0 : WTILE;
		sa_rows_to_f32(W, r0, r0 + nr, a->wt);
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, nr, din,
		    1.0f, x, din, a->wt, din, 0.0f, y + r0, dout);
	}
}

/* dx [N][din] (+)= dy [N][dout] W;  dW [dout][din] += dy^T x (W in F32).
 * W in another type: a sum over tiles of rows, as in matmul_forward. */
static void
matmul_backward(float *dx, float *dW, const float *dy, const float *x,
    const sa_matrix *W, float *wt, int N, int din, int dout, int accumulate_dx)
{
	if (dx && W->type == SA_TYPE_F32)
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, din, dout,
		    1.0f, dy, dout, W->data, din, accumulate_dx ? 1.0f : 0.0f, dx, din);
	else if (dx)
		for (int r0 = 0; r0 < dout; r0 += WTILE) {
			int nr = dout - r0 < WTILE ? dout - r0 : WTILE;
			sa_rows_to_f32(W, r0, r0 + nr, wt);
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, din, nr,
			    1.0f, dy + r0, dout, wt, din, accumulate_dx || r0 ? 1.0f : 0.0f, dx, din);
		}
	if (dW)
		cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, dout, din, N,
		    1.0f, dy, dout, x, din, 1.0f, dW, din);
}

/*
 * The side path: t1 [N][r] = x W2^T;  t2 [N][Dkv] = t1 H;  y [N][dout] += t2 W1^T.
 * W2 [r][din], H [r][Dkv], W1 [dout][Dkv].
 */
static void
side_forward(float *y, float *t1, float *t2, const float *x, const sa_tside *s,
    int N, int din, int dout, int Dkv)
{
	int r = s->rank;

	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, r, din,
	    1.0f, x, din, s->W2, din, 0.0f, t1, r);
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, Dkv, r,
	    1.0f, t1, r, s->H, Dkv, 0.0f, t2, Dkv);
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, dout, Dkv,
	    1.0f, t2, Dkv, s->W1, Dkv, 1.0f, y, dout);
}

/* Backward of side_forward: dx += ...; dW1, dH, dW2 accumulate. */
static void
side_backward(float *dx, float *dt1, float *dt2, const float *dy, const float *x,
    const float *t1, const float *t2, const sa_tside *s, int N, int din, int dout, int Dkv)
{
	int r = s->rank;

	/* dt2 [N][Dkv] = dy W1;  dW1 [dout][Dkv] += dy^T t2 */
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, Dkv, dout,
	    1.0f, dy, dout, s->W1, Dkv, 0.0f, dt2, Dkv);
	if (s->dW1)
		cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, dout, Dkv, N,
		    1.0f, dy, dout, t2, Dkv, 1.0f, s->dW1, Dkv);
	/* dt1 [N][r] = dt2 H^T;  dH [r][Dkv] += t1^T dt2 */
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, r, Dkv,
	    1.0f, dt2, Dkv, s->H, Dkv, 0.0f, dt1, r);
	if (s->dH)
		cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, r, Dkv, N,
		    1.0f, t1, r, dt2, Dkv, 1.0f, s->dH, Dkv);
	/* dx [N][din] += dt1 W2;  dW2 [r][din] += dt1^T x */
	if (dx)
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, din, r,
		    1.0f, dt1, r, s->W2, din, 1.0f, dx, din);
	if (s->dW2)
		cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, r, din, N,
		    1.0f, dt1, r, x, din, 1.0f, s->dW2, din);
}

/* y [N][d] = x * rstd * w;  rstd [N] = 1/sqrt(mean(x^2) + eps). */
static void
rmsnorm_forward(float *y, float *rstd, const float *x, const float *w, int N, int d, float eps)
{
	for (int n = 0; n < N; n++) {
		const float *xn = x + (size_t)n * d;
		float *yn = y + (size_t)n * d;
		double ss = 0;
		for (int i = 0; i < d; i++)
			ss += (double)xn[i] * xn[i];
		float r = (float)(1.0 / sqrt(ss / d + eps));
		rstd[n] = r;
		for (int i = 0; i < d; i++)
			yn[i] = xn[i] * r * w[i];
	}
}

/* dx [N][d] += rstd (dxh - xh mean(dxh xh)) with xh = x rstd, dxh = dy w;  dw += sum dy xh. */
static void
rmsnorm_backward(float *dx, float *dw, const float *dy, const float *x,
    const float *rstd, const float *w, int N, int d)
{
	for (int n = 0; n < N; n++) {
		const float *xn = x + (size_t)n * d, *dyn = dy + (size_t)n * d;
		float *dxn = dx + (size_t)n * d;
		float r = rstd[n];
		double dot = 0;
		for (int i = 0; i < d; i++)
			dot += (double)dyn[i] * w[i] * xn[i] * r;
		float mean = (float)(dot / d);
		for (int i = 0; i < d; i++) {
			float xh = xn[i] * r;
			dxn[i] += r * (dyn[i] * w[i] - xh * mean);
			if (dw)
				dw[i] += dyn[i] * xh;
		}
	}
}

/* In place on x [B*T][nh][dh]: rotate pairs (2i, 2i+1) of the first rope_dim
 * dims of each head by pos*theta_i; dir -1 applies the inverse (backward). */
static void
rope(float *x, const sa_tact *a, int B, int T, int nh, int dh, int dir)
{
	int half = a->cfg.rope_dim / 2;

	for (int b = 0; b < B; b++)
		for (int t = 0; t < T; t++) {
			const float *c = a->rope_cos + (size_t)t * half;
			const float *s = a->rope_sin + (size_t)t * half;
			float *row = x + ((size_t)b * T + t) * nh * dh;
			for (int h = 0; h < nh; h++) {
				float *v = row + (size_t)h * dh;
				for (int i = 0; i < half; i++) {
					float x0 = v[2 * i], x1 = v[2 * i + 1], sn = dir * s[i];
					v[2 * i] = x0 * c[i] - x1 * sn;
					v[2 * i + 1] = x0 * sn + x1 * c[i];
				}
			}
		}
}

/*
 * Causal attention for one layer.  q [B*T][H][dh], k, v [B*T][Hk][dh];
 * out [B*T][H][dh]; query head h reads KV head h / (H/Hk).  att [B][H][T][T]
 * keeps the probabilities: query row i of block [i0, i1) (see ATT_BLOCK)
 * over keys 0..i1-1, zero past i; the rest of the row is not used.
 *
 * The queries go in blocks of ATT_BLOCK, and block [i0, i1) multiplies with
 * keys 0..i1-1 only: the products skip the masked upper triangle but for the
 * blocks on the diagonal (at T = 512, 56% of the full T x T work).
 */
static void
attention_forward(float *out, float *att, const float *q, const float *k,
    const float *v, int B, int T, int H, int Hk, int dh)
{
	int hd = H * dh, kvd = Hk * dh, group = H / Hk;
	float scale = 1.0f / sqrtf((float)dh);

	for (int b = 0; b < B; b++)
		for (int h = 0; h < H; h++) {
			const float *qb = q + (size_t)b * T * hd + h * dh;
			const float *kb = k + (size_t)b * T * kvd + (h / group) * dh;
			const float *vb = v + (size_t)b * T * kvd + (h / group) * dh;
			float *ob = out + (size_t)b * T * hd + h * dh;
			float *P = att + ((size_t)b * H + h) * T * T;
			for (int i0 = 0; i0 < T; i0 += ATT_BLOCK) {
				int i1 = i0 + ATT_BLOCK < T ? i0 + ATT_BLOCK : T, nb = i1 - i0;
				float *Pb = P + (size_t)i0 * T;
				/* Pb [nb][i1] = q [i0:i1] k [0:i1]^T * scale, then a causal
				 * softmax per row */
				cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nb, i1, dh,
				    scale, qb + (size_t)i0 * hd, hd, kb, kvd, 0.0f, Pb, T);
				for (int i = i0; i < i1; i++) {
					float *row = P + (size_t)i * T;
					sa_softmax_f32(row, i + 1);
					for (int j = i + 1; j < i1; j++)
						row[j] = 0.0f;
				}
				/* out [i0:i1] = Pb v [0:i1] */
				cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nb, dh, i1,
				    1.0f, Pb, T, vb, kvd, 0.0f, ob + (size_t)i0 * hd, hd);
			}
		}
}

/* dq [B*T][H][dh] = ...; dk, dv [B*T][Hk][dh] zeroed here then accumulated
 * over the heads of each group.  datt is [ATT_BLOCK][T] scratch. */
static void
attention_backward(float *dq, float *dk, float *dv, float *datt, const float *dout,
    const float *att, const float *q, const float *k, const float *v,
    int B, int T, int H, int Hk, int dh)
{
	const sa_float_kernels *fk = sa_kernels_float();
	int hd = H * dh, kvd = Hk * dh, group = H / Hk;
	float scale = 1.0f / sqrtf((float)dh);

	memset(dk, 0, (size_t)B * T * kvd * sizeof(float));
	memset(dv, 0, (size_t)B * T * kvd * sizeof(float));
	for (int b = 0; b < B; b++)
		for (int h = 0; h < H; h++) {
			size_t qo = (size_t)b * T * hd + h * dh;
			size_t ko = (size_t)b * T * kvd + (h / group) * dh;
			const float *P = att + ((size_t)b * H + h) * T * T;
			for (int i0 = 0; i0 < T; i0 += ATT_BLOCK) {
				int i1 = i0 + ATT_BLOCK < T ? i0 + ATT_BLOCK : T, nb = i1 - i0;
				const float *Pb = P + (size_t)i0 * T;
				size_t qi = qo + (size_t)i0 * hd;
				/* dP [nb][i1] = dout [i0:i1] v [0:i1]^T;  dv [0:i1] += Pb^T dout [i0:i1] */
				cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nb, i1, dh,
				    1.0f, dout + qi, hd, v + ko, kvd, 0.0f, datt, T);
				cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, i1, dh, nb,
				    1.0f, Pb, T, dout + qi, hd, 1.0f, dv + ko, kvd);
				/* softmax backward: dS = P (dP - sum_j P dP), causal part only */
				for (int i = i0; i < i1; i++) {
					const float *p = P + (size_t)i * T;
					float *d = datt + (size_t)(i - i0) * T;
					float dot = (float)fk->dot_f64(p, d, i + 1);
					for (int j = 0; j <= i; j++)
						d[j] = p[j] * (d[j] - dot);
					for (int j = i + 1; j < i1; j++)
						d[j] = 0.0f;
				}
				/* dq [i0:i1] = dS k [0:i1] * scale;  dk [0:i1] += dS^T q [i0:i1] * scale */
				cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nb, dh, i1,
				    scale, datt, T, k + ko, kvd, 0.0f, dq + qi, hd);
				cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, i1, dh, nb,
				    scale, datt, T, q + qi, hd, 1.0f, dk + ko, kvd);
			}
		}
}

/*
 * Cross-entropy forward over logits [N][V]: for each row n with a target
 * (targets[n] >= 0), e [n][V] = exp(logits - row max) and expsum [n] = its sum,
 * kept for the backward, so each logit's exp is taken once.  Returns the sum
 * of the scored rows' losses, log(expsum) + max - logit of the target.
 * Float exp, double sum: the loss of a row of 4096 logits to 1e-7.
 */
static double
cross_entropy_forward(float *e, float *expsum, const float *logits, const int *targets,
    int N, int V, int *n_scored)
{
	double sum = 0;

	for (int n = 0; n < N; n++) {
		int y = targets[n];
		if (y < 0)
			continue;
		const float *lg = logits + (size_t)n * V;
		float mx = sa_max_f32(lg, V);
		double z = sa_exp_sum_f32(e + (size_t)n * V, lg, V, mx);
		expsum[n] = (float)z;
		sum += log(z) + mx - lg[y];
		(*n_scored)++;
	}
	return sum;
}

/* d(mean loss)/d(logits) [N][V] in place over e of the forward:
 * (softmax - onehot) / n_scored on scored rows, 0 elsewhere. */
static void
cross_entropy_backward(float *e, const float *expsum, const int *targets, int N, int V,
    int n_scored)
{
	for (int n = 0; n < N; n++) {
		float *dl = e + (size_t)n * V;
		int y = targets[n];
		if (y < 0 || !n_scored) {
			memset(dl, 0, V * sizeof(float));
			continue;
		}
		float inv = 1.0f / n_scored, scale = inv / expsum[n];
		for (int i = 0; i < V; i++)
			dl[i] *= scale;
		dl[y] -= inv;
	}
}

/* ---------------------------------------------------------- the model */

static const sa_tside *
side_at(const sa_tside *side, int l, int m)
{
	if (!side || side[(size_t)l * SA_NMAT + m].rank <= 0)
		return NULL;
	return &side[(size_t)l * SA_NMAT + m];
}

/* Buffers for the side paths in use, sized for the largest rank seen. */
static int
side_bufs(sa_tact *a, const sa_tside *side)
{
	const sa_config *c = &a->cfg;
	size_t N = (size_t)a->Bmax * a->Tmax, Dkv = (size_t)c->n_head_kv * c->d_head;
	int rmax = 0;

	if (!side)
		return SA_OK;
	for (size_t i = 0; i < (size_t)c->n_layer * SA_NMAT; i++)
		if (side[i].rank > rmax)
			rmax = side[i].rank;
	if (rmax > a->side_rmax) {
		free_side_bufs(a);
		a->side_rmax = rmax;
	}
	for (int l = 0; l < c->n_layer; l++)
		for (int m = 0; m < SA_NMAT; m++) {
			tlayer_act *L = &a->L[l];
			if (!side_at(side, l, m) || L->side_t1[m])
				continue;
			L->side_t1[m] = sa_malloc(N * a->side_rmax * sizeof(float));
			L->side_t2[m] = sa_malloc(N * Dkv * sizeof(float));
			if (!L->side_t1[m] || !L->side_t2[m])
				return SA_EINTERNAL;
		}
	if (rmax && !a->side_dt1) {
		a->side_dt1 = sa_malloc(N * a->side_rmax * sizeof(float));
		a->side_dt2 = sa_malloc(N * Dkv * sizeof(float));
		if (!a->side_dt1 || !a->side_dt2)
			return SA_EINTERNAL;
	}
	return SA_OK;
}

/* y = x W^T (+ side path of (l, m)) */
static void
linear_forward(sa_tact *a, const sa_tside *side, int l, int m, float *y,
    const float *x, const sa_matrix *W, int N, int din, int dout)
{
	const sa_tside *s = side_at(side, l, m);

	matmul_forward(a, y, x, W, N, din, dout);
	if (s)
		side_forward(y, a->L[l].side_t1[m], a->L[l].side_t2[m], x, s, N, din, dout,
		    a->cfg.n_head_kv * a->cfg.d_head);
}

/* dx (+)= dy W (+ side); dW += dy^T x when dW != NULL */
static void
linear_backward(sa_tact *a, const sa_tside *side, int l, int m, float *dx, float *dW,
    const float *dy, const float *x, const sa_matrix *W, int N, int din, int dout, int acc)
{
	const sa_tside *s = side_at(side, l, m);

	matmul_backward(dx, dW, dy, x, W, a->wt, N, din, dout, acc);
	if (s)
		side_backward(dx, a->side_dt1, a->side_dt2, dy, x, a->L[l].side_t1[m],
		    a->L[l].side_t2[m], s, N, din, dout, a->cfg.n_head_kv * a->cfg.d_head);
}

/*
 * sa_tmodel_forward, and with keep 0 sa_tmodel_keys: every layer computes
 * in layer 0's activations but for its own keys, values and the input of
 * matrix keep_in (what a memory keyed by the input reads, sa_tact_input;
 * the others would cost 550 MB a context of 512 tokens on TinyLlama's
 * shape), and the residual stream stays in place (no layer reads its
 * input after mid).
 */
static int
forward(sa_tmodel *t, sa_tact *a, const sa_tside *side, const int *tokens,
    const int *targets, int B, int T, float *loss, int keep, int keep_in)
{
	const sa_config *c = &t->cfg;
	int d = c->d_model, H = c->n_head, Hk = c->n_head_kv, dh = c->d_head;
	int hd = H * dh, kv = Hk * dh, ff = c->d_ff, V = c->n_vocab;
	int N = B * T, rc;

	if (B < 1 || T < 1 || B > a->Bmax || T > a->Tmax)
		return sa_fail(SA_EUSAGE, "batch %dx%d exceeds the activations' %dx%d", B, T, a->Bmax, a->Tmax);
	if ((rc = side_bufs(a, side)) != SA_OK)
		return rc;
	a->B = B;
	a->T = T;
	for (int n = 0; n < N; n++) {
		if (tokens[n] < 0 || tokens[n] >= V || (targets && targets[n] >= V))
			return sa_fail(SA_EDATA, "token id out of range");
		a->tokens[n] = tokens[n];
		a->targets[n] = targets ? targets[n] : -1;
	}
	/* embedding */
	for (int n = 0; n < N; n++)
		sa_rows_to_f32(&t->wembd, tokens[n], tokens[n] + 1, a->L[0].res + (size_t)n * d);
	for (int l = 0; l < c->n_layer; l++) {
		tlayer_act shared = a->L[0], *L = keep ? &a->L[l] : &shared;
		const sa_tlayer *W = &t->layers[l];
		const sa_matrix *Wm = t->wmat + (size_t)l * SA_NMAT;
		float *res_next = !keep ? L->res : l + 1 < c->n_layer ? a->L[l + 1].res : a->res_out;

		shared.kraw = a->L[l].kraw;
		shared.v = a->L[l].v;
		if (keep_in >= 0)
			*input_slot(&shared, keep_in) = *input_slot(&a->L[l], keep_in);
		rmsnorm_forward(L->xn1, L->rstd1, L->res, W->attn_norm, N, d, c->norm_eps);
		linear_forward(a, side, l, SA_MAT_Q, L->q, L->xn1, &Wm[SA_MAT_Q], N, d, hd);
		linear_forward(a, side, l, SA_MAT_K, L->kraw, L->xn1, &Wm[SA_MAT_K], N, d, kv);
		linear_forward(a, side, l, SA_MAT_V, L->v, L->xn1, &Wm[SA_MAT_V], N, d, kv);
		memcpy(L->k, L->kraw, (size_t)N * kv * sizeof(float));
		rope(L->q, a, B, T, H, dh, 1);
		rope(L->k, a, B, T, Hk, dh, 1);
		attention_forward(L->ao, L->att, L->q, L->k, L->v, B, T, H, Hk, dh);
		linear_forward(a, side, l, SA_MAT_O, L->mid, L->ao, &Wm[SA_MAT_O], N, hd, d);
		for (size_t i = 0; i < (size_t)N * d; i++)
			L->mid[i] += L->res[i];
		rmsnorm_forward(L->xn2, L->rstd2, L->mid, W->ffn_norm, N, d, c->norm_eps);
		linear_forward(a, side, l, SA_MAT_GATE, L->gate, L->xn2, &Wm[SA_MAT_GATE], N, d, ff);
		linear_forward(a, side, l, SA_MAT_UP, L->up, L->xn2, &Wm[SA_MAT_UP], N, d, ff);
		sa_kernels_float()->swiglu(L->act, L->gate, L->up, (size_t)N * ff);
		linear_forward(a, side, l, SA_MAT_DOWN, res_next, L->act, &Wm[SA_MAT_DOWN], N, ff, d);
		for (size_t i = 0; i < (size_t)N * d; i++)
			res_next[i] += L->mid[i];
	}
	if (!keep)
		return SA_OK;
	rmsnorm_forward(a->xnf, a->rstdf, a->res_out, t->out_norm, N, d, c->norm_eps);
	matmul_forward(a, a->logits, a->xnf, &t->wout, N, d, V);

	/* mean cross-entropy over the scored positions */
	a->n_scored = 0;
	double sum = cross_entropy_forward(a->dlogits, a->expsum, a->logits, a->targets, N, V,
	    &a->n_scored);
	if (loss)
		*loss = a->n_scored ? (float)(sum / a->n_scored) : 0.0f;
	return SA_OK;
}

int
sa_tmodel_forward(sa_tmodel *t, sa_tact *a, const sa_tside *side,
    const int *tokens, const int *targets, int B, int T, float *loss)
{
	return forward(t, a, side, tokens, targets, B, T, loss, 1, -1);
}

int
sa_tmodel_keys(sa_tmodel *t, sa_tact *a, const int *tokens, int T, int mat)
{
	return forward(t, a, NULL, tokens, NULL, 1, T, NULL, 0, mat);
}

/* The gradient of parameter x in grads, a block laid out as t->params. */
static float *
grad_of(const sa_tmodel *t, float *grads, const float *x)
{
	return grads ? grads + (x - t->params) : NULL;
}

int
sa_tmodel_backward(sa_tmodel *t, sa_tact *a, const sa_tside *side, int weight_grads)
{
	return sa_tmodel_backward_into(t, a, side, weight_grads ? t->grads : NULL);
}

int
sa_tmodel_backward_into(const sa_tmodel *t, sa_tact *a, const sa_tside *side, float *grads)
{
	const sa_config *c = &t->cfg;
	int d = c->d_model, H = c->n_head, Hk = c->n_head_kv, dh = c->d_head;
	int hd = H * dh, kv = Hk * dh, ff = c->d_ff, V = c->n_vocab;
	int B = a->B, T = a->T, N = B * T;

	if (grads && t->frozen)
		return sa_fail(SA_EUSAGE, "a frozen model has no weight gradients");
	cross_entropy_backward(a->dlogits, a->expsum, a->targets, N, V, a->n_scored);
	/* output projection and final norm */
	memset(a->dxn, 0, (size_t)N * d * sizeof(float));
	matmul_backward(a->dxn, grad_of(t, grads, t->output), a->dlogits, a->xnf, &t->wout,
	    a->wt, N, d, V, 0);
	memset(a->dres, 0, (size_t)N * d * sizeof(float));
	rmsnorm_backward(a->dres, grad_of(t, grads, t->out_norm), a->dxn, a->res_out, a->rstdf,
	    t->out_norm, N, d);

	for (int l = c->n_layer - 1; l >= 0; l--) {
		tlayer_act *L = &a->L[l];
		const sa_tlayer *W = &t->layers[l];
		const sa_matrix *Wm = t->wmat + (size_t)l * SA_NMAT;
#define GW(m) grad_of(t, grads, W->w[m])
		/* FFN: res_next = mid + down(act); dres holds d(res_next) */
		float *dact = a->dff1, *dgate = a->dff2, *dup = a->dff3;
		linear_backward(a, side, l, SA_MAT_DOWN, dact, GW(SA_MAT_DOWN), a->dres, L->act,
		    &Wm[SA_MAT_DOWN], N, ff, d, 0);
		sa_kernels_float()->swiglu_back(dgate, dup, dact, L->gate, L->up, (size_t)N * ff);
		linear_backward(a, side, l, SA_MAT_GATE, a->dxn, GW(SA_MAT_GATE), dgate, L->xn2,
		    &Wm[SA_MAT_GATE], N, d, ff, 0);
		linear_backward(a, side, l, SA_MAT_UP, a->dxn, GW(SA_MAT_UP), dup, L->xn2,
		    &Wm[SA_MAT_UP], N, d, ff, 1);
		/* dres now becomes d(mid): the residual passes straight through */
		rmsnorm_backward(a->dres, grad_of(t, grads, W->ffn_norm), a->dxn, L->mid, L->rstd2,
		    W->ffn_norm, N, d);
		/* attention: mid = res + o(ao) */
		linear_backward(a, side, l, SA_MAT_O, a->dao, GW(SA_MAT_O), a->dres, L->ao,
		    &Wm[SA_MAT_O], N, hd, d, 0);
		attention_backward(a->dq, a->dk, a->dv, a->datt, a->dao, L->att, L->q, L->k, L->v,
		    B, T, H, Hk, dh);
		rope(a->dq, a, B, T, H, dh, -1);
		rope(a->dk, a, B, T, Hk, dh, -1);
		linear_backward(a, side, l, SA_MAT_Q, a->dxn, GW(SA_MAT_Q), a->dq, L->xn1,
		    &Wm[SA_MAT_Q], N, d, hd, 0);
		linear_backward(a, side, l, SA_MAT_K, a->dxn, GW(SA_MAT_K), a->dk, L->xn1,
		    &Wm[SA_MAT_K], N, d, kv, 1);
		linear_backward(a, side, l, SA_MAT_V, a->dxn, GW(SA_MAT_V), a->dv, L->xn1,
		    &Wm[SA_MAT_V], N, d, kv, 1);
		rmsnorm_backward(a->dres, grad_of(t, grads, W->attn_norm), a->dxn, L->res, L->rstd1,
		    W->attn_norm, N, d);
#undef GW
	}
	if (grads)
		for (int n = 0; n < N; n++) {
			float *g = grad_of(t, grads, t->tok_embd) + (size_t)a->tokens[n] * d;
			const float *dr = a->dres + (size_t)n * d;
			for (int i = 0; i < d; i++)
				g[i] += dr[i];
		}
	return SA_OK;
}

/* ------------------------------------------------------------- optimizer */

void
sa_adamw(float *p, const float *g, float *m, float *v, size_t n, int step,
    float lr, float beta1, float beta2, float eps, float wd)
{
	double c1 = 1.0 - pow(beta1, step), c2 = 1.0 - pow(beta2, step);

	for (size_t i = 0; i < n; i++) {
		m[i] = beta1 * m[i] + (1 - beta1) * g[i];
		v[i] = beta2 * v[i] + (1 - beta2) * g[i] * g[i];
		double mh = m[i] / c1, vh = v[i] / c2;
		p[i] -= (float)(lr * (mh / (sqrt(vh) + eps) + wd * p[i]));
	}
}

double
sa_l2norm(const float *x, size_t n)
{
	double s = 0;

	for (size_t i = 0; i < n; i++)
		s += (double)x[i] * x[i];
	return sqrt(s);
}

/* --------------------------------------------------- data parallelism */

/*
 * Workers that take whole items (micro-batches, episodes) of a training step
 * in turn, each with single-threaded BLAS.  With BLAS splitting each product
 * instead, the loops between products (softmax, norms, RoPE, SwiGLU, the
 * cross-entropy) ran on one core while BLAS's threads spun on the others,
 * and the many small products (attention per head, an episode's queries)
 * split badly.
 *
 * Items are taken in order.  Each computes into a zeroed gradient buffer,
 * which is added into the step's gradient once every earlier item's has
 * been: the sum is ((g0 + g1) + g2) + ... whatever the number of workers
 * and whoever ran what, so the result does not depend on it.  There are
 * two buffers per worker, so a worker that finished ahead of an earlier
 * item can go on with the next one.
 */
struct sa_tworkers {
	int n_workers;
	size_t n_grads;
	pthread_t *tid;            /* [n_workers - 1]; the caller is worker 0 */
	pthread_mutex_t mu;
	pthread_cond_t wake;       /* a run starts, or the workers stop */
	pthread_cond_t changed;    /* an item was added, or a worker left the run */
	unsigned run;              /* number of the current run */
	int stop;
	float **bufs;              /* [n_bufs][n_grads], two per worker */
	float **free_bufs;         /* [n_bufs]: the first n_free are unused */
	int n_bufs, n_free;
	/* the current run */
	sa_titem_fn fn;
	void *ctx;
	int n_items, next_item, next_add, adding, in_run;
	float *sum;                /* [n_grads] the step's gradient; NULL: none */
	float **done;              /* [n_items]: finished items' buffers, until added */
	int done_cap;
	int rc;                    /* the first failure */
	char msg[1024];
};

typedef struct worker_arg {
	sa_tworkers *w;
	int worker;
} worker_arg;

static void
add_floats(float *sum, const float *x, size_t n)
{
	for (size_t i = 0; i < n; i++)
		sum[i] += x[i];
}

/* Add finished items to the sum in item order, as far as they go.  One
 * thread adds at a time; the others leave theirs to it.  Called and
 * returns with w->mu held. */
static void
add_done(sa_tworkers *w)
{
	while (!w->adding && w->next_add < w->n_items && w->done[w->next_add]) {
		float *buf = w->done[w->next_add];
		w->adding = 1;
		pthread_mutex_unlock(&w->mu);
		add_floats(w->sum, buf, w->n_grads);
		pthread_mutex_lock(&w->mu);
		w->done[w->next_add++] = NULL;
		w->free_bufs[w->n_free++] = buf;
		w->adding = 0;
		pthread_cond_broadcast(&w->changed);
	}
}

/* Take and run items until none is left or one failed.  With w->mu held. */
static void
work(sa_tworkers *w, int worker)
{
	for (;;) {
		float *buf = NULL;
		while (w->rc == SA_OK && w->next_item < w->n_items && w->sum && !w->n_free)
			pthread_cond_wait(&w->changed, &w->mu);
		if (w->rc != SA_OK || w->next_item == w->n_items)
			return;
		if (w->sum)
			buf = w->free_bufs[--w->n_free];
		int item = w->next_item++;
		pthread_mutex_unlock(&w->mu);
		if (buf)
			memset(buf, 0, w->n_grads * sizeof(float));
		int rc = w->fn(w->ctx, worker, item, buf);
		pthread_mutex_lock(&w->mu);
		if (rc != SA_OK) {
			if (w->rc == SA_OK) {
				w->rc = rc;
				snprintf(w->msg, sizeof w->msg, "%s", sa_error());
			}
			if (buf)
				w->free_bufs[w->n_free++] = buf;
			pthread_cond_broadcast(&w->changed);
			return;
		}
		if (buf) {
			w->done[item] = buf;
			add_done(w);
		}
	}
}

static void *
worker_main(void *p)
{
	worker_arg *arg = p;
	sa_tworkers *w = arg->w;
	unsigned seen = 0;

	pthread_mutex_lock(&w->mu);
	for (;;) {
		while (w->run == seen && !w->stop)
			pthread_cond_wait(&w->wake, &w->mu);
		if (w->stop)
			break;
		seen = w->run;
		work(w, arg->worker);
		w->in_run--;
		pthread_cond_broadcast(&w->changed);
	}
	pthread_mutex_unlock(&w->mu);
	free(arg);
	return NULL;
}

int
sa_tworkers_new(sa_tworkers **out, int n_workers, size_t n_grads)
{
	sa_tworkers *w;
	sigset_t all, old;

	*out = NULL;
	if (n_workers <= 0)
		n_workers = sa_get_threads();
	if (!(w = sa_calloc(1, sizeof *w)))
		return SA_EINTERNAL;
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->wake, NULL);
	pthread_cond_init(&w->changed, NULL);
	w->n_workers = 1;
	w->n_grads = n_grads;
	if (n_grads) {
		int nb = 2 * n_workers;
		if (!(w->bufs = sa_calloc(nb, sizeof *w->bufs)) ||
		    !(w->free_bufs = sa_calloc(nb, sizeof *w->free_bufs)))
			goto oom;
		w->n_bufs = nb;
		for (int i = 0; i < nb; i++) {
			if (!(w->bufs[i] = sa_malloc(n_grads * sizeof(float))))
				goto oom;
			w->free_bufs[w->n_free++] = w->bufs[i];
		}
	}
	if (n_workers > 1 && !(w->tid = sa_calloc(n_workers - 1, sizeof *w->tid)))
		goto oom;
	/* signals go to the caller's thread, where the tools handle them */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	for (int i = 1; i < n_workers; i++) {
		worker_arg *arg = malloc(sizeof *arg);
		if (!arg)
			break;
		arg->w = w;
		arg->worker = i;
		if (pthread_create(&w->tid[i - 1], NULL, worker_main, arg)) {
			free(arg);
			break;
		}
		w->n_workers++;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (w->n_workers < n_workers) {
		sa_tworkers_free(w);
		return sa_fail(SA_EINTERNAL, "cannot start %d training threads", n_workers);
	}
	*out = w;
	return SA_OK;
oom:
	sa_tworkers_free(w);
	return SA_EINTERNAL;
}

void
sa_tworkers_free(sa_tworkers *w)
{
	if (!w)
		return;
	pthread_mutex_lock(&w->mu);
	w->stop = 1;
	pthread_cond_broadcast(&w->wake);
	pthread_mutex_unlock(&w->mu);
	for (int i = 0; i < w->n_workers - 1; i++)
		pthread_join(w->tid[i], NULL);
	for (int i = 0; i < w->n_bufs; i++)
		free(w->bufs[i]);
	free(w->bufs);
	free(w->free_bufs);
	free(w->done);
	free(w->tid);
	pthread_mutex_destroy(&w->mu);
	pthread_cond_destroy(&w->wake);
	pthread_cond_destroy(&w->changed);
	free(w);
}

int
sa_tworkers_count(const sa_tworkers *w)
{
	return w->n_workers;
}

int
sa_tworkers_run(sa_tworkers *w, sa_titem_fn fn, void *ctx, int n_items, float *grads)
{
	int rc;

	if (n_items <= 0)
		return SA_OK;
	if (!w->n_grads)
		grads = NULL;
	if (n_items > w->done_cap) {
		float **done = sa_calloc(n_items, sizeof *done);
		if (!done)
			return SA_EINTERNAL;
		free(w->done);
		w->done = done;
		w->done_cap = n_items;
	}
	pthread_mutex_lock(&w->mu);
	w->fn = fn;
	w->ctx = ctx;
	w->n_items = n_items;
	w->next_item = w->next_add = 0;
	w->sum = grads;
	w->rc = SA_OK;
	w->in_run = w->n_workers;
	w->run++;
	pthread_cond_broadcast(&w->wake);
	work(w, 0);
	w->in_run--;
	while (w->in_run)
		pthread_cond_wait(&w->changed, &w->mu);
	/* every finished item is added by now (the adding thread takes the ones
	 * finished while it added); after a failure, some may be left */
	rc = w->rc;
	for (int i = 0; i < n_items; i++)
		if (w->done[i]) {
			w->free_bufs[w->n_free++] = w->done[i];
			w->done[i] = NULL;
		}
	pthread_mutex_unlock(&w->mu);
	if (rc != SA_OK)
		return sa_fail(rc, "%s", w->msg);
	return SA_OK;
}

/* ------------------------------------------------------------- saving */

/* A tensor converted to `type` row by row; the buffer lives until the write. */
static int
add_tensor(sa_gguf_writer *w, void **bufs, int *nbufs, const char *name, int type,
    const float *data, int64_t rows, int64_t cols)
{
	int64_t ne[2] = { cols, rows };
	int nd = rows > 1 ? 2 : 1;

	if (nd == 1 || type == SA_TYPE_F32)
		return sa_gguf_writer_add_tensor(w, name, SA_TYPE_F32, nd, ne, data);
	size_t rs = sa_type_row_size(type, cols);
	if (!rs)   /* a width that is not a block multiple stays F32 */
		return sa_gguf_writer_add_tensor(w, name, SA_TYPE_F32, nd, ne, data);
	char *buf = sa_malloc(rs * rows);
	if (!buf)
		return SA_EINTERNAL;
	bufs[(*nbufs)++] = buf;
	for (int64_t r = 0; r < rows; r++)
		sa_row_from_f32(type, data + r * cols, buf + r * rs, cols);
	return sa_gguf_writer_add_tensor(w, name, type, nd, ne, buf);
}

int
sa_tmodel_save(const sa_tmodel *t, const sa_gguf *vocab_src, int type,
    const char *name, const char *path)
{
	const sa_config *c = &t->cfg;
	sa_gguf_writer *w = sa_gguf_writer_new();
	void **bufs = sa_calloc((size_t)c->n_layer * SA_NMAT + 4, sizeof(void *));
	int nbufs = 0, rc = SA_OK;
	char key[96];

	if (!w || !bufs) {
		sa_gguf_writer_free(w);
		free(bufs);
		return SA_EINTERNAL;
	}
#define OK(x) do { if ((rc = (x)) != SA_OK) goto out; } while (0)
	OK(sa_gguf_writer_set_str(w, "general.architecture", "llama"));
	OK(sa_gguf_writer_set_str(w, "general.name", name ? name : "sa"));
	OK(sa_gguf_writer_set_u32(w, "general.file_type", type == SA_TYPE_F32 ? 0 :
	    type == SA_TYPE_F16 ? 1 : type == SA_TYPE_Q8_0 ? 7 : 0));
	OK(sa_gguf_writer_set_u32(w, "llama.context_length", c->n_ctx));
	OK(sa_gguf_writer_set_u32(w, "llama.embedding_length", c->d_model));
	OK(sa_gguf_writer_set_u32(w, "llama.block_count", c->n_layer));
	OK(sa_gguf_writer_set_u32(w, "llama.feed_forward_length", c->d_ff));
	OK(sa_gguf_writer_set_u32(w, "llama.attention.head_count", c->n_head));
	OK(sa_gguf_writer_set_u32(w, "llama.attention.head_count_kv", c->n_head_kv));
	OK(sa_gguf_writer_set_u32(w, "llama.rope.dimension_count", c->rope_dim));
	OK(sa_gguf_writer_set_f32(w, "llama.rope.freq_base", c->rope_base));
	OK(sa_gguf_writer_set_f32(w, "llama.attention.layer_norm_rms_epsilon", c->norm_eps));
	OK(sa_gguf_writer_set_u32(w, "llama.vocab_size", c->n_vocab));
	for (uint64_t i = 0; i < sa_gguf_n_kv(vocab_src); i++) {
		sa_str k = sa_gguf_kv_key(vocab_src, i);
		if (k.n >= sizeof key || k.n < 10 || memcmp(k.s, "tokenizer.", 10))
			continue;
		memcpy(key, k.s, k.n);
		key[k.n] = 0;
		OK(sa_gguf_writer_copy_kv(w, vocab_src, key));
	}
	OK(add_tensor(w, bufs, &nbufs, "token_embd.weight", type, t->tok_embd, c->n_vocab, c->d_model));
	for (int l = 0; l < c->n_layer; l++) {
		const sa_tlayer *L = &t->layers[l];
		snprintf(key, sizeof key, "blk.%d.attn_norm.weight", l);
		OK(add_tensor(w, bufs, &nbufs, key, SA_TYPE_F32, L->attn_norm, 1, c->d_model));
		snprintf(key, sizeof key, "blk.%d.ffn_norm.weight", l);
		OK(add_tensor(w, bufs, &nbufs, key, SA_TYPE_F32, L->ffn_norm, 1, c->d_model));
		for (int m = 0; m < SA_NMAT; m++) {
			int dout, din;
			sa_tmodel_mat_dims(c, m, &dout, &din);
			snprintf(key, sizeof key, "blk.%d.%s.weight", l, sa_mat_name(m));
			OK(add_tensor(w, bufs, &nbufs, key, type, L->w[m], dout, din));
		}
	}
	OK(add_tensor(w, bufs, &nbufs, "output_norm.weight", SA_TYPE_F32, t->out_norm, 1, c->d_model));
	if (!t->tied)
		OK(add_tensor(w, bufs, &nbufs, "output.weight", type, t->output, c->n_vocab, c->d_model));
	rc = sa_gguf_writer_save(w, path);
out:
#undef OK
	sa_gguf_writer_free(w);
	for (int i = 0; i < nbufs; i++)
		free(bufs[i]);
	free(bufs);
	return rc;
}
