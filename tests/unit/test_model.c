/*
 * test_model - the model loader and sa_forward against a naive reference
 * forward pass written here (plain loops, double accumulation, weights read
 * from the GGUF tensors by name), on random models from tests/helpers/mkmodel.
 *
 *   test_model                          run every check
 *   test_model --load FILE              load FILE; print sa_error() and exit
 *                                       with the status on failure
 *   test_model --make-bad KIND IN OUT   write a copy of model IN with one
 *                                       defect: arch, missing, type, shape,
 *                                       scale (a NaN block scale in row 3)
 *
 * Environment: SA_MKMODEL (default tests/helpers/mkmodel), TMPDIR.
 *
 * Tolerances, as max |got - ref| / max |ref| over a logit vector: 1e-4 for
 * F32 weights.  With F16, BF16 and Q8_0 weights sa_forward rounds each matrix
 * input to the weight's type, as llama.cpp does: against the reference in
 * exact arithmetic that costs up to a few percent for Q8_0 (tol_of); against
 * the reference that rounds the same way (tol_round), only roundings that
 * fall the other way after a 1-ulp difference remain.  Both are about three
 * times the worst error seen on these models over ten token draws
 * (TEST_MODEL_SEED=1..10).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sa.h"
#include "types_impl.h"   /* sa_type_scales */
#include "kernels_impl.h"
#include "t.h"

static char tmpdir[256];

static int make_bad(const char *kind, const char *in, const char *out);

static double
tol_of(int type)
{
	switch (type) {
	case SA_TYPE_F32: return 1e-4;
	case SA_TYPE_F16: return 5e-3;
	case SA_TYPE_BF16: return 2e-2;
	case SA_TYPE_Q8_0: return 1.5e-1;
	}
	return 0;
}

static double
tol_round(int type)
{
	switch (type) {
	case SA_TYPE_F32: return 1e-4;
	case SA_TYPE_F16: return 4e-3;
	case SA_TYPE_BF16: return 1e-2;
	case SA_TYPE_Q8_0: return 4e-2;
	}
	return 0;
}

/* ------------------------------------------------------------- helpers */

static uint64_t rng = 0x9e3779b97f4a7c15ULL;

static double
frand(void)   /* uniform in [-1, 1) */
{
	rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
	return (double)(rng >> 11) / (double)(1ULL << 52) - 1.0;
}

/* Make a model with mkmodel; args space-separated. */
static int
make_model(const char *out, const char *args)
{
	const char *mk = getenv("SA_MKMODEL") ? getenv("SA_MKMODEL") : "tests/helpers/mkmodel";
	char *argv[64], buf[512];
	int n = 0, status;
	pid_t pid;

	snprintf(buf, sizeof buf, "%s", args);
	argv[n++] = (char *)mk;
	for (char *tok = strtok(buf, " "); tok && n < 60; tok = strtok(NULL, " "))
		argv[n++] = tok;
	argv[n++] = "-o";
	argv[n++] = (char *)out;
	argv[n] = NULL;
	if ((pid = fork()) == 0) {
		execv(mk, argv);
		_exit(127);
	}
	if (pid < 0 || waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status)) {
		fprintf(stderr, "mkmodel %s failed\n", args);
		return -1;
	}
	return 0;
}

/* max |a - b| / max |b| */
static double
rel_err(const float *a, const double *b, int n)
{
	double err = 0, scale = 0;
	for (int i = 0; i < n; i++) {
		double d = fabs(a[i] - b[i]);
		if (!(d <= err))
			err = d;
		if (fabs(b[i]) > scale)
			scale = fabs(b[i]);
	}
	return scale > 0 ? err / scale : err;
}

static double
rel_errf(const float *a, const float *b, int n)
{
	double err = 0, scale = 0;
	for (int i = 0; i < n; i++) {
		double d = fabs((double)a[i] - b[i]);
		if (!(d <= err))
			err = d;
		if (fabs(b[i]) > scale)
			scale = fabs(b[i]);
	}
	return scale > 0 ? err / scale : err;
}

/* ---------------------------------------------------- reference model */

/* A low-rank update y += B (A x) on one matrix. */
typedef struct upd {
	int layer, mat, rank;
	float *B, *A;
} upd;

typedef struct ref {
	sa_config c;
	int n_vocab;
	int type;               /* of the matrices */
	int round;              /* 1: round matrix inputs to the type, as ggml */
	double *embd, *out_norm, *output;
	struct {
		double *attn_norm, *ffn_norm, *bq, *bk, *bv;
		double *w[SA_NMAT];
	} *L;
	int in_mat;             /* with ins: the matrix whose input ref_forward keeps */
	double *ins;            /* [n_layer][n][its d_in], or NULL */
} ref;

/* Tensor name as F64 [rows][cols], or NULL if absent. */
static double *
tensor_f64(const sa_gguf *g, const char *name)
{
	const sa_tensor_info *t = sa_gguf_tensor(g, name);
	double *out;
	float *row;
	size_t rb;

	if (!t)
		return NULL;
	out = malloc((size_t)t->ne[0] * t->ne[1] * sizeof *out);
	row = malloc((size_t)t->ne[0] * sizeof *row);
	rb = sa_type_row_size(t->type, t->ne[0]);
	for (int64_t r = 0; r < t->ne[1]; r++) {
		sa_row_to_f32(t->type, (const char *)t->data + r * rb, row, t->ne[0]);
		for (int64_t i = 0; i < t->ne[0]; i++)
			out[r * t->ne[0] + i] = row[i];
	}
	free(row);
	return out;
}

static void
build_ref(ref *r, const sa_model *m)
{
	static const char *const mats[SA_NMAT] = {
		"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down",
	};
	char name[96];

	r->c = m->cfg;
	r->n_vocab = m->cfg.n_vocab;
	r->type = sa_gguf_tensor(m->gguf, "blk.0.attn_q.weight")->type;
	r->round = 0;
	r->ins = NULL;
	r->embd = tensor_f64(m->gguf, "token_embd.weight");
	r->out_norm = tensor_f64(m->gguf, "output_norm.weight");
	r->output = tensor_f64(m->gguf, "output.weight");
	r->L = calloc((size_t)r->c.n_layer, sizeof *r->L);
	for (int l = 0; l < r->c.n_layer; l++) {
#define T(field, suffix) (snprintf(name, sizeof name, "blk.%d.%s", l, suffix), \
		r->L[l].field = tensor_f64(m->gguf, name))
		T(attn_norm, "attn_norm.weight");
		T(ffn_norm, "ffn_norm.weight");
		T(bq, "attn_q.bias");
		T(bk, "attn_k.bias");
		T(bv, "attn_v.bias");
		for (int k = 0; k < SA_NMAT; k++) {
			char s[48];
			snprintf(s, sizeof s, "%s.weight", mats[k]);
			T(w[k], s);
		}
#undef T
	}
}

static void
free_ref(ref *r)
{
	for (int l = 0; l < r->c.n_layer; l++) {
		free(r->L[l].attn_norm);
		free(r->L[l].ffn_norm);
		free(r->L[l].bq);
		free(r->L[l].bk);
		free(r->L[l].bv);
		for (int k = 0; k < SA_NMAT; k++)
			free(r->L[l].w[k]);
	}
	free(r->L);
	free(r->embd);
	free(r->out_norm);
	free(r->output);
}

/* y [rows] = W [rows][cols] x (+ b) (+ updates of (l, mat)); with rt other
 * than F32, x is first rounded to that type (the updates see it rounded too). */
static void
ref_linear(int rt, const double *W, const double *b, int rows, int cols, const double *xin,
    double *y, const upd *u, int nu, int l, int mat)
{
	double *x = malloc((size_t)cols * sizeof *x);
	float *xf = malloc((size_t)cols * sizeof *xf);
	void *buf = malloc((size_t)cols * sizeof(float));

	for (int c = 0; c < cols; c++)
		xf[c] = (float)xin[c];
	if (rt != SA_TYPE_F32) {
		sa_row_from_f32(rt, xf, buf, cols);
		sa_row_to_f32(rt, buf, xf, cols);
	}
	for (int c = 0; c < cols; c++)
		x[c] = rt != SA_TYPE_F32 ? xf[c] : xin[c];
	free(xf);
	free(buf);
	for (int r = 0; r < rows; r++) {
		double s = b ? b[r] : 0;
		for (int c = 0; c < cols; c++)
			s += W[(size_t)r * cols + c] * x[c];
		y[r] = s;
	}
	for (int i = 0; i < nu; i++) {
		if (u[i].layer != l || u[i].mat != mat)
			continue;
		double *t = calloc((size_t)u[i].rank, sizeof *t);
		for (int k = 0; k < u[i].rank; k++)
			for (int c = 0; c < cols; c++)
				t[k] += (double)u[i].A[(size_t)k * cols + c] * x[c];
		for (int r = 0; r < rows; r++)
			for (int k = 0; k < u[i].rank; k++)
				y[r] += (double)u[i].B[(size_t)r * u[i].rank + k] * t[k];
		free(t);
	}
	free(x);
}

static void
ref_rmsnorm(double *out, const double *x, const double *w, int n, double eps)
{
	double ss = 0;
	for (int i = 0; i < n; i++)
		ss += x[i] * x[i];
	double s = 1.0 / sqrt(ss / n + eps);
	for (int i = 0; i < n; i++)
		out[i] = x[i] * s * w[i];
}

static void
ref_rope(const sa_config *c, double *v, int nh, int pos)
{
	int half = c->rope_dim / 2;
	for (int h = 0; h < nh; h++) {
		double *hv = v + (size_t)h * c->d_head;
		for (int j = 0; j < half; j++) {
			double th = pos * pow(c->rope_base, -2.0 * j / c->rope_dim);
			int i0 = c->rope_neox ? j : 2 * j, i1 = c->rope_neox ? j + half : 2 * j + 1;
			double x0 = hv[i0], x1 = hv[i1];
			hv[i0] = x0 * cos(th) - x1 * sin(th);
			hv[i1] = x0 * sin(th) + x1 * cos(th);
		}
	}
}

/* Row i of matrix mat's input in layer l, kept when r->ins asks for it. */
static void
ref_input(const ref *r, int l, int mat, int i, int n, const double *x, int width)
{
	if (r->ins && r->in_mat == mat)
		memcpy(r->ins + ((size_t)l * n + i) * width, x, (size_t)width * sizeof *x);
}

/*
 * Logits [n][V] of toks at positions 0..n-1; keys [n_layer][n][kvd],
 * values and queries [n_layer][n][qd] (before RoPE) if not NULL.
 */
static void
ref_forward(const ref *r, const int *toks, int n, const upd *u, int nu, double *logits,
    double *keys, double *vals, double *queries)
{
	const sa_config *c = &r->c;
	int d = c->d_model, H = c->n_head, Hk = c->n_head_kv, dh = c->d_head, ff = c->d_ff;
	int qd = H * dh, kvd = Hk * dh, V = r->n_vocab;
	double *x = calloc((size_t)n * d, sizeof *x), *xn = malloc((size_t)d * sizeof *xn);
	double *q = malloc((size_t)n * qd * sizeof *q), *k = malloc((size_t)n * kvd * sizeof *k);
	double *v = malloc((size_t)n * kvd * sizeof *v), *att = malloc((size_t)qd * sizeof *att);
	double *o = malloc((size_t)d * sizeof *o), *g = malloc((size_t)ff * sizeof *g);
	double *up = malloc((size_t)ff * sizeof *up), *sc = malloc((size_t)n * sizeof *sc);

	int rt = r->round ? r->type : SA_TYPE_F32;

	for (int i = 0; i < n; i++)
		memcpy(x + (size_t)i * d, r->embd + (size_t)toks[i] * d, (size_t)d * sizeof *x);
	for (int l = 0; l < c->n_layer; l++) {
		for (int i = 0; i < n; i++) {
			ref_rmsnorm(xn, x + (size_t)i * d, r->L[l].attn_norm, d, c->norm_eps);
			for (int m = SA_MAT_Q; m <= SA_MAT_V; m++)
				ref_input(r, l, m, i, n, xn, d);
			ref_linear(rt, r->L[l].w[SA_MAT_Q], r->L[l].bq, qd, d, xn, q + (size_t)i * qd, u, nu, l, SA_MAT_Q);
			ref_linear(rt, r->L[l].w[SA_MAT_K], r->L[l].bk, kvd, d, xn, k + (size_t)i * kvd, u, nu, l, SA_MAT_K);
			ref_linear(rt, r->L[l].w[SA_MAT_V], r->L[l].bv, kvd, d, xn, v + (size_t)i * kvd, u, nu, l, SA_MAT_V);
		}
		if (keys)
			memcpy(keys + (size_t)l * n * kvd, k, (size_t)n * kvd * sizeof *k);
		if (vals)
			memcpy(vals + (size_t)l * n * kvd, v, (size_t)n * kvd * sizeof *v);
		if (queries)
			memcpy(queries + (size_t)l * n * qd, q, (size_t)n * qd * sizeof *q);
		for (int i = 0; i < n; i++) {
			ref_rope(c, q + (size_t)i * qd, H, i);
			ref_rope(c, k + (size_t)i * kvd, Hk, i);
		}
		for (int i = 0; i < n; i++) {
			for (int h = 0; h < H; h++) {
				int gk = h / (H / Hk);
				double max = -INFINITY, sum = 0;
				for (int j = 0; j <= i; j++) {
					double s = 0;
					for (int e = 0; e < dh; e++)
						s += q[(size_t)i * qd + h * dh + e] * k[(size_t)j * kvd + gk * dh + e];
					sc[j] = s / sqrt((double)dh);
					if (sc[j] > max)
						max = sc[j];
				}
				for (int j = 0; j <= i; j++)
					sum += sc[j] = exp(sc[j] - max);
				for (int e = 0; e < dh; e++) {
					double s = 0;
					for (int j = 0; j <= i; j++)
						s += sc[j] / sum * v[(size_t)j * kvd + gk * dh + e];
					att[h * dh + e] = s;
				}
			}
			ref_input(r, l, SA_MAT_O, i, n, att, qd);
			ref_linear(rt, r->L[l].w[SA_MAT_O], NULL, d, qd, att, o, u, nu, l, SA_MAT_O);
			for (int e = 0; e < d; e++)
				x[(size_t)i * d + e] += o[e];
		}
		for (int i = 0; i < n; i++) {
			double *xi = x + (size_t)i * d;
			ref_rmsnorm(xn, xi, r->L[l].ffn_norm, d, c->norm_eps);
			ref_input(r, l, SA_MAT_GATE, i, n, xn, d);
			ref_input(r, l, SA_MAT_UP, i, n, xn, d);
			ref_linear(rt, r->L[l].w[SA_MAT_GATE], NULL, ff, d, xn, g, u, nu, l, SA_MAT_GATE);
			ref_linear(rt, r->L[l].w[SA_MAT_UP], NULL, ff, d, xn, up, u, nu, l, SA_MAT_UP);
			for (int e = 0; e < ff; e++)
				g[e] = g[e] / (1 + exp(-g[e])) * up[e];
			ref_input(r, l, SA_MAT_DOWN, i, n, g, ff);
			ref_linear(rt, r->L[l].w[SA_MAT_DOWN], NULL, d, ff, g, o, u, nu, l, SA_MAT_DOWN);
			for (int e = 0; e < d; e++)
				xi[e] += o[e];
		}
	}
	for (int i = 0; i < n; i++) {
		ref_rmsnorm(xn, x + (size_t)i * d, r->out_norm, d, c->norm_eps);
		ref_linear(rt, r->output ? r->output : r->embd, NULL, V, d, xn, logits + (size_t)i * V,
		    NULL, 0, -1, -1);
	}
	free(x); free(xn); free(q); free(k); free(v); free(att); free(o); free(g); free(up); free(sc);
}

/* ------------------------------------------------------------ the tests */

/* Keys and values the hook saw, appended per layer; queries the q hook saw. */
typedef struct hook_log {
	int n_layer, kvd, cap;
	int *n;           /* [n_layer] tokens so far */
	float *k, *v;     /* [n_layer][cap][kvd] */
	int qd, *nq;      /* [n_layer] queries so far */
	float *q;         /* [n_layer][cap][qd] */
} hook_log;

static void
log_hook(void *ctx, int layer, int n, const float *k, const float *v)
{
	hook_log *h = ctx;
	size_t off = ((size_t)layer * h->cap + h->n[layer]) * h->kvd;
	if (h->n[layer] + n > h->cap)
		return;
	memcpy(h->k + off, k, (size_t)n * h->kvd * sizeof(float));
	memcpy(h->v + off, v, (size_t)n * h->kvd * sizeof(float));
	h->n[layer] += n;
}

static void
log_q_hook(void *ctx, int layer, int n, const float *q)
{
	hook_log *h = ctx;
	if (h->nq[layer] + n > h->cap)
		return;
	memcpy(h->q + ((size_t)layer * h->cap + h->nq[layer]) * h->qd, q,
	    (size_t)n * h->qd * sizeof(float));
	h->nq[layer] += n;
}

static void
random_toks(int *t, int n, int V)
{
	for (int i = 0; i < n; i++)
		t[i] = (int)((frand() + 1) / 2 * V) % V;
}

/* Logits for toks through one prefill (all rows) of a fresh state. */
static int
run_prefill(sa_model *m, const int *toks, int n, float *logits)
{
	sa_kvcache *s;
	int rc;
	if ((rc = sa_kvcache_new(&s, m, 0)) != SA_OK)
		return rc;
	rc = sa_forward(s, toks, n, logits, 1);
	sa_kvcache_free(s);
	return rc;
}

/* Logits for toks through n single-token decodes. */
static int
run_decode(sa_model *m, const int *toks, int n, float *logits)
{
	sa_kvcache *s;
	int rc = SA_OK;
	if ((rc = sa_kvcache_new(&s, m, 0)) != SA_OK)
		return rc;
	for (int i = 0; i < n && rc == SA_OK; i++)
		rc = sa_forward(s, toks + i, 1, logits + (size_t)i * m->cfg.n_vocab, 0);
	sa_kvcache_free(s);
	return rc;
}

/* The reference, the prefill and the decode path agree; the hooks see the
 * keys, values and queries before RoPE and change nothing.  Against the reference in exact arithmetic within the
 * type's tolerance, and against the reference that rounds matrix inputs as
 * ggml does within the closer tol_round. */
static void
test_against_ref(sa_model *m, ref *r, int n, const char *what)
{
	int V = m->cfg.n_vocab, L = m->cfg.n_layer;
	int kvd = m->cfg.n_head_kv * m->cfg.d_head, qd = m->cfg.n_head * m->cfg.d_head;
	int type = m->layers[0].w[SA_MAT_Q].type;
	double tol = tol_of(type), worst = 0, worst_dec = 0, worst_k = 0, worst_r = 0;
	int *toks = malloc((size_t)n * sizeof *toks);
	double *want = malloc((size_t)n * V * sizeof *want);
	double *want_r = malloc((size_t)n * V * sizeof *want_r);
	double *keys = malloc((size_t)L * n * kvd * sizeof *keys);
	double *vals = malloc((size_t)L * n * kvd * sizeof *vals);
	double *quers = malloc((size_t)L * n * qd * sizeof *quers);
	float *pre = malloc((size_t)n * V * sizeof *pre), *dec = malloc((size_t)n * V * sizeof *dec);
	float *plain = malloc((size_t)n * V * sizeof *plain);
	hook_log h = { L, kvd, n, calloc((size_t)L, sizeof(int)),
		malloc((size_t)L * n * kvd * sizeof(float)), malloc((size_t)L * n * kvd * sizeof(float)),
		qd, calloc((size_t)L, sizeof(int)), malloc((size_t)L * n * qd * sizeof(float)) };
	sa_kvcache *s;

	random_toks(toks, n, V);
	r->round = 0;
	ref_forward(r, toks, n, NULL, 0, want, keys, vals, quers);
	if (type != SA_TYPE_F32) {
		r->round = 1;
		ref_forward(r, toks, n, NULL, 0, want_r, NULL, NULL, NULL);
		r->round = 0;
	} else
		memcpy(want_r, want, (size_t)n * V * sizeof *want);

	/* prefill, watching the hooks; the same bits as without them */
	CHECK_OK(sa_kvcache_new(&s, m, 0));
	sa_kvcache_set_hook(s, log_hook, &h);
	sa_kvcache_set_q_hook(s, log_q_hook, &h);
	CHECK_OK(sa_forward(s, toks, n, pre, 1));
	CHECK(sa_kvcache_pos(s) == n);
	for (int l = 0; l < L; l++) {
		CHECK(h.n[l] == n);
		CHECK(h.nq[l] == n);
		double ek = rel_err(h.k + (size_t)l * n * kvd, keys + (size_t)l * n * kvd, n * kvd);
		double ev = rel_err(h.v + (size_t)l * n * kvd, vals + (size_t)l * n * kvd, n * kvd);
		double eq = rel_err(h.q + (size_t)l * n * qd, quers + (size_t)l * n * qd, n * qd);
		worst_k = fmax(worst_k, fmax(eq, fmax(ek, ev)));
	}
	/* rows of one pass take no cache with a hook */
	sa_kvcache_truncate(s, 0);
	sa_kvcache_set_hook(s, NULL, NULL);
	CHECK(sa_forward_rows(&s, toks, 1, plain) == SA_EUSAGE);
	sa_kvcache_set_q_hook(s, NULL, NULL);
	CHECK_OK(sa_forward(s, toks, n, plain, 1));
	CHECK(memcmp(plain, pre, (size_t)n * V * sizeof *pre) == 0);
	sa_kvcache_free(s);

	/* decode, one token at a time */
	CHECK_OK(run_decode(m, toks, n, dec));
	for (int i = 0; i < n; i++) {
		size_t o = (size_t)i * V;
		worst = fmax(worst, rel_err(pre + o, want + o, V));
		worst_dec = fmax(worst_dec, rel_err(dec + o, want + o, V));
		worst_r = fmax(worst_r, fmax(rel_err(pre + o, want_r + o, V), rel_err(dec + o, want_r + o, V)));
	}
	printf("%-20s %-4s n=%-3d prefill %.1e decode %.1e (tol %g)  rounded ref %.1e (tol %g)  "
	    "q/k/v %.1e  prefill-decode %.1e\n", what, sa_type_name(type), n, worst, worst_dec, tol,
	    worst_r, tol_round(type), worst_k, rel_errf(pre, dec, n * V));
	CHECK(worst <= tol);
	CHECK(worst_dec <= tol);
	CHECK(worst_r <= tol_round(type));
	CHECK(worst_k <= tol);
	CHECK(rel_errf(pre + (size_t)(n - 1) * V, dec + (size_t)(n - 1) * V, V) <= tol_round(type));

	free(toks); free(want); free(want_r); free(keys); free(vals); free(quers); free(pre);
	free(dec); free(plain);
	free(h.n); free(h.k); free(h.v); free(h.nq); free(h.q);
}

/* The input hook's rows of one matrix, in order per layer. */
typedef struct input_log {
	int width, cap, bad;
	int pos;          /* of the call's first token */
	int *n;           /* [n_layer] rows so far */
	float *x;         /* [n_layer][cap][width] */
} input_log;

static void
input_log_hook(void *ctx, int layer, int i0, int n, const float *x)
{
	input_log *h = ctx;

	if (h->pos + i0 != h->n[layer] || h->pos + i0 + n > h->cap) {
		h->bad = 1;
		return;
	}
	memcpy(h->x + ((size_t)layer * h->cap + h->n[layer]) * h->width, x,
	    (size_t)n * h->width * sizeof *x);
	h->n[layer] += n;
}

/*
 * The input hook sees every matrix's input as the reference computes it,
 * every row of every layer once and in order (over N > FBLK tokens, the
 * FFN's in blocks), the last layer's too when no logits are wanted; the
 * logits of a pass stay the same bits with it.
 */
static void
test_input_hook(sa_model *m, ref *r, int N)
{
	int V = m->cfg.n_vocab, L = m->cfg.n_layer, *toks = malloc((size_t)N * sizeof *toks);
	double tol = tol_of(m->layers[0].w[SA_MAT_Q].type), worst = 0;
	float *with = malloc((size_t)N * V * sizeof *with), *without = malloc((size_t)N * V * sizeof *without);
	double *want = malloc((size_t)N * V * sizeof *want);

	random_toks(toks, N, V);
	CHECK_OK(run_prefill(m, toks, N, without));
	for (int mat = 0; mat < SA_NMAT; mat++) {
		int d_out, d_in;
		CHECK_OK(sa_model_mat_dims(m, mat, &d_out, &d_in));
		input_log h = { d_in, N, 0, 0, calloc((size_t)L, sizeof(int)),
			malloc((size_t)L * N * d_in * sizeof(float)) };
		sa_kvcache *s;
		r->in_mat = mat;
		r->ins = malloc((size_t)L * N * d_in * sizeof *r->ins);
		ref_forward(r, toks, N, NULL, 0, want, NULL, NULL, NULL);
		for (int pass = 0; pass < 2; pass++) {
			/* all logits (sgemm), then short pieces without logits (row kernels) */
			CHECK_OK(sa_kvcache_new(&s, m, 0));
			sa_kvcache_set_input_hook(s, mat, input_log_hook, &h);
			memset(h.n, 0, (size_t)L * sizeof(int));
			if (pass == 0) {
				CHECK_OK(sa_forward(s, toks, N, with, 1));
				CHECK(memcmp(with, without, (size_t)N * V * sizeof *with) == 0);
			} else {
				for (h.pos = 0; h.pos < N; h.pos += 5)
					CHECK_OK(sa_forward(s, toks + h.pos, 5, NULL, 0));
			}
			CHECK(!h.bad);
			for (int l = 0; l < L; l++) {
				CHECK(h.n[l] == N);
				worst = fmax(worst, rel_err(h.x + (size_t)l * N * d_in,
				    r->ins + (size_t)l * N * d_in, N * d_in));
			}
			sa_kvcache_free(s);
		}
		free(r->ins);
		r->ins = NULL;
		free(h.n);
		free(h.x);
	}
	printf("input hook: every matrix's input against the reference %.1e (tol %g)\n", worst, tol);
	CHECK(worst <= tol);
	free(with);
	free(without);
	free(want);
	free(toks);
}

/* Prefill in pieces (with a later piece at pos > 0), last logits only. */
static void
test_pieces(sa_model *m, const ref *r, const int *cuts, int ncuts, int n)
{
	int V = m->cfg.n_vocab, *toks = malloc((size_t)n * sizeof *toks);
	double *want = malloc((size_t)n * V * sizeof *want);
	float *got = malloc((size_t)V * sizeof *got);
	sa_kvcache *s;
	int at = 0;

	random_toks(toks, n, V);
	ref_forward(r, toks, n, NULL, 0, want, NULL, NULL, NULL);
	CHECK_OK(sa_kvcache_new(&s, m, 0));
	for (int i = 0; i <= ncuts; i++) {
		int end = i < ncuts ? cuts[i] : n;
		CHECK_OK(sa_forward(s, toks + at, end - at, got, 0));
		CHECK(rel_err(got, want + (size_t)(end - 1) * V, V) <= tol_of(m->layers[0].w[0].type));
		at = end;
	}
	CHECK(sa_kvcache_pos(s) == n);
	sa_kvcache_free(s);
	free(toks); free(want); free(got);
}

/* A batch short enough for the row kernels computes each token exactly as
 * decoding it alone does. */
static void
test_short_batch(sa_model *m)
{
	enum { N = 9 };
	int V = m->cfg.n_vocab, toks[N];
	float *a = malloc((size_t)N * V * sizeof *a), *b = malloc((size_t)N * V * sizeof *b);

	random_toks(toks, N, V);
	CHECK_OK(run_prefill(m, toks, N, a));
	CHECK_OK(run_decode(m, toks, N, b));
	CHECK(!memcmp(a, b, (size_t)N * V * sizeof *a));
	free(a);
	free(b);
}

/* A shared prompt, then continuations: truncate + re-run == fresh run. */
static void
test_truncate(sa_model *m)
{
	int V = m->cfg.n_vocab, p[9], a[5], b[5];
	float *la = malloc((size_t)5 * V * sizeof(float)), *lb = malloc((size_t)5 * V * sizeof(float));
	float *fresh = malloc((size_t)5 * V * sizeof(float));
	sa_kvcache *s;

	random_toks(p, 9, V);
	random_toks(a, 5, V);
	random_toks(b, 5, V);
	CHECK_OK(sa_kvcache_new(&s, m, 0));
	CHECK_OK(sa_forward(s, p, 9, NULL, 0));
	CHECK_OK(sa_forward(s, a, 5, la, 1));
	CHECK(sa_kvcache_pos(s) == 14);
	sa_kvcache_truncate(s, 9);
	CHECK(sa_kvcache_pos(s) == 9);
	sa_kvcache_truncate(s, 12);            /* cannot grow */
	CHECK(sa_kvcache_pos(s) == 9);
	CHECK_OK(sa_forward(s, b, 5, lb, 1));
	sa_kvcache_free(s);

	CHECK_OK(sa_kvcache_new(&s, m, 0));
	CHECK_OK(sa_forward(s, p, 9, NULL, 0));
	CHECK_OK(sa_forward(s, b, 5, fresh, 1));
	CHECK(!memcmp(lb, fresh, (size_t)5 * V * sizeof(float)));
	CHECK(memcmp(la, lb, (size_t)5 * V * sizeof(float)));
	/* and token by token after a truncation to 0 */
	sa_kvcache_truncate(s, -3);
	CHECK(sa_kvcache_pos(s) == 0);
	sa_kvcache_free(s);
	free(la); free(lb); free(fresh);
}

/* Merged and side paths agree with each other and with the reference; a zero
 * update is exact; reset returns to the base model. */
static void
test_lowrank(sa_model *m, const ref *r)
{
	enum { N = 12, NU = 6 };
	int V = m->cfg.n_vocab, toks[N];
	int type = m->layers[0].w[SA_MAT_Q].type;
	size_t bytes = (size_t)N * V * sizeof(float);
	float *base = malloc(bytes), *base_dec = malloc(bytes), *merged = malloc(bytes);
	float *side = malloc(bytes), *side_dec = malloc(bytes), *merged_dec = malloc(bytes);
	float *again = malloc(bytes);
	double *want = malloc((size_t)N * V * sizeof *want);
	/* two updates of the same matrix exercise concatenated side ranks;
	 * the last, of rank 0 here, gets a rank that holds V's path dense */
	upd u[NU] = {
		{ 0, SA_MAT_Q, 3, NULL, NULL }, { 0, SA_MAT_Q, 2, NULL, NULL },
		{ m->cfg.n_layer - 1, SA_MAT_V, 2, NULL, NULL },
		{ 0, SA_MAT_DOWN, 4, NULL, NULL }, { m->cfg.n_layer - 1, SA_MAT_UP, 1, NULL, NULL },
		{ m->cfg.n_layer - 1, SA_MAT_V, 0, NULL, NULL },
	};
	float *zB, *zA;
	int dout, din;

	random_toks(toks, N, V);
	for (int i = 0; i < NU; i++) {
		sa_model_mat_dims(m, u[i].mat, &dout, &din);
		if (!u[i].rank)
			u[i].rank = dout * din / (dout + din) - 1;
		u[i].B = malloc((size_t)dout * u[i].rank * sizeof(float));
		u[i].A = malloc((size_t)u[i].rank * din * sizeof(float));
		for (int j = 0; j < dout * u[i].rank; j++)
			u[i].B[j] = (float)(0.05 * frand());
		for (int j = 0; j < u[i].rank * din; j++)
			u[i].A[j] = (float)(0.5 * frand());
	}
	CHECK_OK(run_prefill(m, toks, N, base));
	CHECK_OK(run_decode(m, toks, N, base_dec));

	/* zero updates: nothing changes, not a bit */
	sa_model_mat_dims(m, SA_MAT_K, &dout, &din);
	zB = calloc((size_t)dout * 4, sizeof(float));
	zA = malloc((size_t)4 * din * sizeof(float));
	for (int j = 0; j < 4 * din; j++)
		zA[j] = (float)frand();
	CHECK_OK(sa_model_merge_lowrank(m, 0, SA_MAT_K, 4, zB, zA));
	CHECK_OK(sa_model_add_side(m, 0, SA_MAT_K, 4, zB, zA));
	CHECK(m->merged == NULL && m->side == NULL);
	CHECK_OK(run_prefill(m, toks, N, again));
	CHECK(!memcmp(again, base, bytes));
	CHECK_OK(run_decode(m, toks, N, again));
	CHECK(!memcmp(again, base_dec, bytes));

	/* merged */
	for (int i = 0; i < NU; i++)
		CHECK_OK(sa_model_merge_lowrank(m, u[i].layer, u[i].mat, u[i].rank, u[i].B, u[i].A));
	CHECK(m->merged != NULL && m->side == NULL);
	CHECK(m->layers[0].w[SA_MAT_Q].type == SA_TYPE_F32);
	CHECK_OK(run_prefill(m, toks, N, merged));
	CHECK_OK(run_decode(m, toks, N, merged_dec));
	sa_model_reset_weights(m);
	CHECK(m->merged == NULL && m->side == NULL);
	CHECK(m->layers[0].w[SA_MAT_Q].type == type);

	/* side */
	for (int i = 0; i < NU; i++)
		CHECK_OK(sa_model_add_side(m, u[i].layer, u[i].mat, u[i].rank, u[i].B, u[i].A));
	CHECK(m->merged == NULL && m->side != NULL);
	CHECK(m->side[SA_MAT_Q].rank == 5 && m->side[SA_MAT_Q].A && !m->side[SA_MAT_Q].D);
	/* 2 + r - 1 > d_in d_out / (d_in + d_out): V's side path went dense */
	{
		const sa_lowrank *v = &m->side[(size_t)(m->cfg.n_layer - 1) * SA_NMAT + SA_MAT_V];
		CHECK(v->rank == 2 + u[NU - 1].rank && v->D && !v->A && !v->B);
	}
	CHECK_OK(run_prefill(m, toks, N, side));
	CHECK_OK(run_decode(m, toks, N, side_dec));
	sa_model_reset_weights(m);
	CHECK(m->side == NULL);

	/* back to the base, exactly */
	CHECK_OK(run_prefill(m, toks, N, again));
	CHECK(!memcmp(again, base, bytes));

	ref_forward(r, toks, N, u, NU, want, NULL, NULL, NULL);
	double e_ms = 0, e_msd = 0, e_ref = 0, e_base = 0;
	for (int i = 0; i < N; i++) {
		size_t o = (size_t)i * V;
		e_ms = fmax(e_ms, rel_errf(merged + o, side + o, V));
		e_msd = fmax(e_msd, rel_errf(merged_dec + o, side_dec + o, V));
		e_ref = fmax(e_ref, fmax(rel_err(merged + o, want + o, V), rel_err(side_dec + o, want + o, V)));
		e_base = fmax(e_base, rel_errf(merged + o, base + o, V));
	}
	printf("%-40s %-4s merged-side %.2e (decode %.2e), vs reference %.2e, update moved %.2e\n",
	    "low-rank updates", sa_type_name(type), e_ms, e_msd, e_ref, e_base);
	/* 1e-4 with F32 weights; with rounded inputs a 1-ulp difference may
	 * round the other way downstream */
	CHECK(e_ms <= (type == SA_TYPE_F32 ? 1e-4 : tol_round(type)));
	CHECK(e_msd <= (type == SA_TYPE_F32 ? 1e-4 : tol_round(type)));
	CHECK(e_ref <= tol_of(type));
	CHECK(e_base > 1e-2);   /* the update did something */

	for (int i = 0; i < NU; i++) {
		free(u[i].A);
		free(u[i].B);
	}
	free(zA); free(zB); free(base); free(base_dec); free(merged); free(side);
	free(side_dec); free(merged_dec); free(again); free(want);
}

/* Results do not depend on the number of threads: prefill and decoding
 * give the same bits with 1, 2, 3 and 7. */
static void
test_threads(sa_model *m)
{
	enum { N = 40 };
	static const int nth[] = { 2, 3, 7 };
	int V = m->cfg.n_vocab, toks[N];
	size_t bytes = (size_t)N * V * sizeof(float);
	float *p1 = malloc(bytes), *p2 = malloc(bytes), *d1 = malloc(bytes), *d2 = malloc(bytes);

	random_toks(toks, N, V);
	sa_set_threads(1);
	CHECK(sa_get_threads() == 1);
	CHECK_OK(run_prefill(m, toks, N, p1));
	CHECK_OK(run_decode(m, toks, N, d1));
	for (size_t i = 0; i < sizeof nth / sizeof *nth; i++) {
		sa_set_threads(nth[i]);
		CHECK(sa_get_threads() == nth[i]);
		CHECK_OK(run_prefill(m, toks, N, p2));
		CHECK_OK(run_decode(m, toks, N, d2));
		CHECK(!memcmp(p1, p2, bytes));
		CHECK(!memcmp(d1, d2, bytes));
	}
	sa_set_threads(0);
	free(p1); free(p2); free(d1); free(d2);
}

/* sa_sgemm against sums in double, and the same bits with any number of
 * threads, for products of one block and of many (a last one shorter),
 * with B transposed or not and beta 0 or 1. */
static void
test_sgemm(void)
{
	static const int shapes[][3] = { { 5, 7, 3 }, { 40, 300, 64 }, { 100, 1000, 96 } };
	static const int nth[] = { 2, 3, 7 };

	for (size_t k = 0; k < sizeof shapes / sizeof *shapes; k++)
	for (int tb = 0; tb < 2; tb++)
	for (int beta = 0; beta < 2; beta++) {
		int M = shapes[k][0], N = shapes[k][1], K = shapes[k][2];
		float *A = malloc((size_t)M * K * sizeof *A), *B = malloc((size_t)K * N * sizeof *B);
		float *C0 = malloc((size_t)M * N * sizeof *C0), *C1 = malloc((size_t)M * N * sizeof *C1);
		float *C2 = malloc((size_t)M * N * sizeof *C2);
		double err = 0, big = 0;

		for (int i = 0; i < M * K; i++)
			A[i] = (float)frand();
		for (int i = 0; i < K * N; i++)
			B[i] = (float)frand();
		for (int i = 0; i < M * N; i++)
			C0[i] = (float)frand();
		memcpy(C1, C0, (size_t)M * N * sizeof *C1);
		sa_set_threads(1);
		sa_sgemm(tb ? CblasTrans : CblasNoTrans, M, N, K, 0.5f, A, K, B, tb ? K : N,
		    (float)beta, C1, N);
		for (int i = 0; i < M; i++)
			for (int j = 0; j < N; j++) {
				double want = beta * (double)C0[(size_t)i * N + j];
				for (int l = 0; l < K; l++)
					want += 0.5 * A[(size_t)i * K + l] *
					    (tb ? B[(size_t)j * K + l] : B[(size_t)l * N + j]);
				err = fmax(err, fabs(C1[(size_t)i * N + j] - want));
				big = fmax(big, fabs(want));
			}
		CHECK(err <= 1e-5 * big);
		for (size_t t = 0; t < sizeof nth / sizeof *nth; t++) {
			memcpy(C2, C0, (size_t)M * N * sizeof *C2);
			sa_set_threads(nth[t]);
			sa_sgemm(tb ? CblasTrans : CblasNoTrans, M, N, K, 0.5f, A, K, B, tb ? K : N,
			    (float)beta, C2, N);
			CHECK(!memcmp(C1, C2, (size_t)M * N * sizeof *C2));
		}
		free(A); free(B); free(C0); free(C1); free(C2);
	}
	sa_set_threads(0);
}

static void
test_bounds(sa_model *m)
{
	int V = m->cfg.n_vocab, toks[40];
	float *lg = malloc((size_t)V * sizeof *lg);
	sa_kvcache *s;

	random_toks(toks, 40, V);
	CHECK_OK(sa_kvcache_new(&s, m, 0));
	CHECK(sa_kvcache_ctx(s) == m->cfg.n_ctx);
	sa_kvcache_free(s);
	CHECK_OK(sa_kvcache_new(&s, m, m->cfg.n_ctx * 100));
	CHECK(sa_kvcache_ctx(s) == m->cfg.n_ctx);
	sa_kvcache_free(s);

	CHECK_OK(sa_kvcache_new(&s, m, 16));
	CHECK(sa_kvcache_ctx(s) == 16);
	CHECK(sa_forward(s, toks, 17, lg, 0) == SA_EDATA);
	CHECK(strstr(sa_error(), "prompt of 17 tokens exceeds the context of 16") != NULL);
	CHECK(sa_kvcache_pos(s) == 0);
	CHECK_OK(sa_forward(s, toks, 10, lg, 0));
	CHECK(sa_kvcache_kv_bytes(s) == (size_t)10 * m->cfg.n_layer * m->cfg.n_head_kv *
	    m->cfg.d_head * 2 * sizeof(float));
	CHECK(sa_forward(s, toks, 7, lg, 0) == SA_EDATA);
	CHECK(strstr(sa_error(), "prompt of 17 tokens") != NULL);
	CHECK(sa_kvcache_pos(s) == 10);
	CHECK_OK(sa_forward(s, toks, 6, lg, 0));
	CHECK(sa_kvcache_pos(s) == 16);
	toks[0] = V;
	sa_kvcache_truncate(s, 0);
	CHECK(sa_forward(s, toks, 1, lg, 0) == SA_EDATA);
	toks[0] = -1;
	CHECK(sa_forward(s, toks, 1, lg, 0) == SA_EDATA);
	CHECK(sa_forward(s, toks, 0, lg, 0) != SA_OK);
	CHECK(sa_kvcache_pos(s) == 0);
	sa_kvcache_free(s);
	free(lg);
}

/* One model: load, config as asked, and every forward check. */
static sa_model *
load_made(const char *name, const char *args)
{
	char path[512];
	sa_model *m = NULL;

	snprintf(path, sizeof path, "%s/%s.gguf", tmpdir, name);
	CHECK(make_model(path, args) == 0);
	CHECK_OK(sa_model_load(&m, path));
	return m;
}

static void
test_model(const char *name, const char *args, int n, int heavy)
{
	sa_model *m = load_made(name, args);
	ref r;

	if (!m)
		return;
	build_ref(&r, m);
	test_against_ref(m, &r, n, name);
	if (heavy) {
		int cuts[2] = { 7, 20 };
		test_short_batch(m);
		test_pieces(m, &r, cuts, 2, 60);
		test_truncate(m);
		test_lowrank(m, &r);
	}
	test_input_hook(m, &r, n > 40 ? n : 40);
	free_ref(&r);
	sa_model_free(m);
}

static void
test_config(void)
{
	sa_model *m = load_made("cfg", "--arch qwen2 --layers 3 --dim 96 --heads 6 --kv-heads 2 "
	    "--ff 80 --ctx 300 --rope-base 50000 --eps 1e-6 --tied --name cfg-model -s 5");
	sa_model *m2, *m3, *m4;
	int dout, din;

	if (!m)
		return;
	CHECK(m->cfg.arch == SA_ARCH_QWEN2);
	CHECK(m->cfg.n_layer == 3 && m->cfg.d_model == 96 && m->cfg.n_head == 6);
	CHECK(m->cfg.n_head_kv == 2 && m->cfg.d_head == 16 && m->cfg.d_ff == 80);
	CHECK(m->cfg.n_ctx == 300 && m->cfg.rope_dim == 16 && m->cfg.rope_neox == 1);
	CHECK(m->cfg.rope_base == 50000.0f && m->cfg.norm_eps == 1e-6f);
	CHECK(m->cfg.n_vocab == sa_vocab_size(m->vocab));
	CHECK(m->output.data == m->tok_embd.data);
	CHECK(m->layers[2].bq.data && m->layers[2].bk.data && m->layers[2].bv.data);
	CHECK(!strcmp(m->name, "cfg-model"));
	CHECK(sa_model_fingerprint(m) == m->fingerprint && m->fingerprint != 0);
	CHECK(m->merged == NULL && m->side == NULL);
	CHECK_OK(sa_model_mat_dims(m, SA_MAT_K, &dout, &din));
	CHECK(dout == 32 && din == 96);
	CHECK_OK(sa_model_mat_dims(m, SA_MAT_O, &dout, &din));
	CHECK(dout == 96 && din == 96);
	CHECK_OK(sa_model_mat_dims(m, SA_MAT_DOWN, &dout, &din));
	CHECK(dout == 96 && din == 80);
	CHECK(sa_model_mat_dims(m, SA_NMAT, &dout, &din) != SA_OK);
	CHECK(sa_model_merge_lowrank(m, 3, 0, 1, (float[96]){ 0 }, (float[96]){ 0 }) == SA_EUSAGE);
	CHECK(sa_model_add_side(m, 0, -1, 1, (float[96]){ 0 }, (float[96]){ 0 }) == SA_EUSAGE);

	/* same file: same fingerprint; other seed or type: another one */
	CHECK((m2 = load_made("cfg", "--arch qwen2 --layers 3 --dim 96 --heads 6 --kv-heads 2 "
	    "--ff 80 --ctx 300 --rope-base 50000 --eps 1e-6 --tied --name cfg-model -s 5")) != NULL);
	CHECK((m3 = load_made("cfg3", "--arch qwen2 --layers 3 --dim 96 --heads 6 --kv-heads 2 "
	    "--ff 80 --ctx 300 --rope-base 50000 --eps 1e-6 --tied --name cfg-model -s 6")) != NULL);
	CHECK((m4 = load_made("cfg4", "--arch qwen2 --layers 3 --dim 96 --heads 6 --kv-heads 2 "
	    "--ff 80 --ctx 300 --rope-base 50000 --eps 1e-6 --tied --name cfg-model -s 5 -t f16")) != NULL);
	if (m2 && m3 && m4) {
		CHECK(m2->fingerprint == m->fingerprint);
		CHECK(m3->fingerprint != m->fingerprint);
		CHECK(m4->fingerprint != m->fingerprint);
		/* F16 prefill: the path's own kernel, its inputs packed over the pool */
		test_threads(m4);
	}
	sa_model_free(m2);
	sa_model_free(m3);
	sa_model_free(m4);

	for (int k = 0; k < SA_NMAT; k++)
		CHECK(sa_mat_from_name(sa_mat_name(k)) == k);
	CHECK(!strcmp(sa_mat_name(SA_MAT_O), "attn_output"));
	CHECK(sa_mat_from_name("attn_qkv") == -1 && sa_mat_name(SA_NMAT) == NULL);

	test_bounds(m);
	test_threads(m);
	sa_model_free(m);
}

/* Llama 3's rope_freqs.weight divides the rotation angles, linear rope
 * scaling multiplies them: ones change nothing, twos equal a factor of 2. */
static void
test_rope_variants(void)
{
	enum { N = 24 };
	const char *kinds[] = { "", "freqs1", "freqs2", "scale2" };
	char base[512], path[512];
	int toks[N], V = 0;
	float *lg[4] = { 0 };

	snprintf(base, sizeof base, "%s/rope.gguf", tmpdir);
	if (make_model(base, "--arch llama --layers 2 --dim 64 --heads 4 -s 12") != 0) {
		CHECK(0);
		return;
	}
	for (int k = 0; k < 4; k++) {
		sa_model *m;
		snprintf(path, sizeof path, "%s/rope-%d.gguf", tmpdir, k);
		if (k)
			CHECK_OK(make_bad(kinds[k], base, path));
		CHECK_OK(sa_model_load(&m, k ? path : base));
		if (!m)
			return;
		if (!k) {
			V = m->cfg.n_vocab;
			random_toks(toks, N, V);
		}
		lg[k] = malloc((size_t)N * V * sizeof(float));
		CHECK_OK(run_prefill(m, toks, N, lg[k]));
		sa_model_free(m);
	}
	CHECK(!memcmp(lg[0], lg[1], (size_t)N * V * sizeof(float)));
	CHECK(!memcmp(lg[2], lg[3], (size_t)N * V * sizeof(float)));
	CHECK(rel_errf(lg[2], lg[0], N * V) > 1e-3);
	for (int k = 0; k < 4; k++)
		free(lg[k]);

	sa_model *m = NULL;
	snprintf(path, sizeof path, "%s/rope-yarn.gguf", tmpdir);
	CHECK_OK(make_bad("yarn", base, path));
	CHECK(sa_model_load(&m, path) == SA_EDATA);
	CHECK(strstr(sa_error(), "rope scaling type yarn is not supported") != NULL);
}

/* The forward pass rounds matrix inputs with its own vector code: the same
 * values and Q8_0 blocks as the conversions of types.c, ties included. */
static void
test_round(void)
{
	enum { N = 1024 };
	static const int types[] = { SA_TYPE_F16, SA_TYPE_BF16, SA_TYPE_Q8_0 };
	float *x = malloc(N * sizeof *x), *a = malloc(N * sizeof *a), *b = malloc(N * sizeof *b);
	char *qa = malloc(N * sizeof(float)), *qb = malloc(N * sizeof(float));
	int bad = 0;

	for (int rep = 0; rep < 300; rep++) {
		double scale = rep % 7 == 0 ? 1e-6 : rep % 5 == 0 ? 300 : 3;
		for (int i = 0; i < N; i++) {
			x[i] = (float)(scale * frand());
			if (rep % 3 == 0 && i % 9 == 0)    /* halves: ties of the rounding */
				x[i] = (float)(int)(x[i] * 2) / 2;
			if (rep % 13 == 0 && i % 32 < 31)  /* blocks of nearly all zeros */
				x[i] = 0;
		}
		for (size_t t = 0; t < sizeof types / sizeof *types; t++) {
			sa_row_from_f32(types[t], x, qa, N);
			sa_row_to_f32(types[t], qa, a, N);
			sa_round_row(types[t], x, b, qb, N);
			bad += memcmp(a, b, N * sizeof *a) != 0;
			bad += types[t] == SA_TYPE_Q8_0 && memcmp(qa, qb, sa_type_row_size(types[t], N));
		}
	}
	CHECK(bad == 0);
	free(x); free(a); free(b); free(qa); free(qb);
}

/* The kernels' conversion of quantized rows (vector code where the CPU has
 * it) gives the floats of types.c, bit for bit: random blocks with random
 * finite scales, normal and subnormal, of either sign. */
static void
test_blocks(void)
{
	enum { ROWS = 3, COLS = 512 };
	static const int types[] = { SA_TYPE_Q4_0, SA_TYPE_Q4_1, SA_TYPE_Q5_0, SA_TYPE_Q5_1,
	    SA_TYPE_Q8_0, SA_TYPE_Q2_K, SA_TYPE_Q3_K, SA_TYPE_Q4_K, SA_TYPE_Q5_K, SA_TYPE_Q6_K };
	static unsigned char w[ROWS * COLS * 2];
	static float a[ROWS * COLS], b[ROWS * COLS];
	int bad = 0;

	for (size_t t = 0; t < sizeof types / sizeof *types; t++) {
		size_t rb = sa_type_row_size(types[t], COLS), off[2];
		int64_t be;
		size_t bb;
		int ns = sa_type_scales(types[t], off);
		sa_type_block(types[t], &be, &bb);
		for (int rep = 0; rep < 20; rep++) {
			for (size_t i = 0; i < ROWS * rb; i++)
				w[i] = (unsigned char)((frand() + 1) * 128);
			for (size_t blk = 0; blk < ROWS * rb / bb; blk++)
				for (int k = 0; k < ns; k++) {
					uint16_t h = (uint16_t)((frand() + 1) * 32768) & 0xbfff;   /* finite */
					memcpy(w + blk * bb + off[k], &h, 2);
				}
			sa_matrix m = { types[t], ROWS, COLS, w };
			sa_rows_to_f32(&m, 0, ROWS, a);
			for (int r = 0; r < ROWS; r++)
				sa_row_to_f32(types[t], w + r * rb, b + r * COLS, COLS);
			bad += memcmp(a, b, sizeof a) != 0;
		}
	}
	CHECK(bad == 0);
}

/* ------------------------------------------------- load-error fixtures */

/*
 * Copy in to out, changing one thing.  Defects: arch, missing, type, shape,
 * yarn (rope scaling of a kind not supported).  Variants: freqs1, freqs2
 * (a rope_freqs.weight of ones, of twos), scale2 (linear rope scaling by 2).
 */
static int
make_bad(const char *kind, const char *in, const char *out)
{
	sa_gguf *g;
	sa_gguf_writer *w;
	void *zeros = calloc(1, 1 << 24);
	float freqs[512];
	int rc;

	if ((rc = sa_gguf_open(&g, in)) != SA_OK)
		return rc;
	w = sa_gguf_writer_new();
	for (uint64_t i = 0; i < sa_gguf_n_kv(g); i++) {
		sa_str k = sa_gguf_kv_key(g, i);
		char key[256];
		snprintf(key, sizeof key, "%.*s", (int)k.n, k.s);
		if (!strcmp(kind, "arch") && !strcmp(key, "general.architecture"))
			continue;
		if ((rc = sa_gguf_writer_copy_kv(w, g, key)) != SA_OK)
			return rc;
	}
	if (!strcmp(kind, "arch"))
		sa_gguf_writer_set_str(w, "general.architecture", "gptj");
	if (!strcmp(kind, "yarn"))
		sa_gguf_writer_set_str(w, "llama.rope.scaling.type", "yarn");
	if (!strcmp(kind, "scale2")) {
		sa_gguf_writer_set_str(w, "llama.rope.scaling.type", "linear");
		sa_gguf_writer_set_f32(w, "llama.rope.scaling.factor", 2.0f);
	}
	if (!strcmp(kind, "freqs1") || !strcmp(kind, "freqs2")) {
		uint32_t rope_dim;
		if ((rc = sa_gguf_get_u32(g, "llama.rope.dimension_count", &rope_dim)) != SA_OK)
			return rc;
		int64_t ne[1] = { rope_dim / 2 };
		for (int i = 0; i < 512; i++)
			freqs[i] = kind[5] == '1' ? 1.0f : 2.0f;
		if ((rc = sa_gguf_writer_add_tensor(w, "rope_freqs.weight", SA_TYPE_F32, 1, ne, freqs)) != SA_OK)
			return rc;
	}
	for (uint64_t i = 0; i < sa_gguf_n_tensors(g); i++) {
		const sa_tensor_info *t = sa_gguf_tensor_at(g, i);
		int64_t ne[4] = { t->ne[0], t->ne[1], t->ne[2], t->ne[3] };
		int type = t->type;
		const void *data = t->data;
		int target = !strcmp(t->name, "blk.1.attn_k.weight");

		if (target && !strcmp(kind, "missing"))
			continue;
		if (target && !strcmp(kind, "type")) {
			type = 23;      /* IQ4_XS */
			data = zeros;
		}
		if (target && !strcmp(kind, "scale")) {
			/* the last fp16 scale of row 3's first block (dmin or m
			 * where a block has two) */
			size_t off[2], rb = sa_type_row_size(type, ne[0]);
			int ns = sa_type_scales(type, off);
			if (!ns || 4 * rb > (1 << 24))
				return SA_EUSAGE;
			memcpy(zeros, data, t->nbytes);
			memcpy((char *)zeros + 3 * rb + off[ns - 1], &(uint16_t){ 0x7e00 }, 2);
			data = zeros;
		}
		if (target && !strcmp(kind, "shape")) {
			ne[1] += 1;
			data = zeros;
		}
		if ((rc = sa_gguf_writer_add_tensor(w, t->name, type, t->n_dims, ne, data)) != SA_OK)
			return rc;
	}
	rc = sa_gguf_writer_save(w, out);
	sa_gguf_writer_free(w);
	sa_gguf_close(g);
	free(zeros);
	return rc;
}

int
main(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "--load")) {
		sa_model *m;
		int rc = sa_model_load(&m, argv[2]);
		if (rc != SA_OK) {
			printf("%s\n", sa_error());
			return rc;
		}
		printf("%s: %d layers\n", m->name, m->cfg.n_layer);
		sa_model_free(m);
		return 0;
	}
	if (argc == 5 && !strcmp(argv[1], "--make-bad")) {
		int rc = make_bad(argv[2], argv[3], argv[4]);
		if (rc != SA_OK)
			fprintf(stderr, "test_model: %s\n", sa_error());
		return rc;
	}
	if (argc != 1) {
		fprintf(stderr, "usage: test_model [--load FILE | --make-bad KIND IN OUT]\n");
		return 64;
	}

	snprintf(tmpdir, sizeof tmpdir, "%s/test_model.XXXXXX",
	    getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (getenv("TEST_MODEL_SEED"))     /* to try other token draws */
		rng ^= strtoull(getenv("TEST_MODEL_SEED"), NULL, 0) * 0x2545f4914f6cdd1dULL;
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 1;
	}

	test_round();
	test_sgemm();
	test_blocks();
	test_config();
	test_rope_variants();
	test_model("llama-mha-untied", "--arch llama --layers 2 --dim 64 --heads 4", 20, 1);
	test_model("llama-gqa-tied", "--arch llama --layers 3 --dim 64 --heads 8 --kv-heads 2 --tied -s 2", 20, 1);
	test_model("qwen2-gqa-untied", "--arch qwen2 --layers 2 --dim 64 --heads 8 --kv-heads 2 -s 3", 20, 1);
	test_model("qwen2-mha-tied", "--arch qwen2 --layers 2 --dim 48 --heads 3 --ff 40 --tied -s 4", 20, 1);
	/* long enough for the sgemm attention in blocks and FFN blocks */
	test_model("llama-gqa-long", "--arch llama --layers 2 --dim 32 --heads 4 --kv-heads 2 "
	    "--ff 48 --ctx 700 -s 7", 600, 0);
	test_model("llama-gqa-f16", "--arch llama --layers 2 --dim 64 --heads 8 --kv-heads 2 -t f16 -s 8", 40, 1);
	test_model("qwen2-gqa-bf16", "--arch qwen2 --layers 2 --dim 64 --heads 8 --kv-heads 2 -t bf16 -s 9", 40, 1);
	test_model("llama-gqa-q8_0", "--arch llama --layers 2 --dim 64 --heads 8 --kv-heads 2 -t q8_0 -s 10", 40, 1);
	test_model("qwen2-tied-q8_0", "--arch qwen2 --layers 2 --dim 64 --heads 4 --tied -t q8_0 -s 11", 40, 1);

	char cmd[300];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
	if (system(cmd) != 0)
		fprintf(stderr, "test_model: could not remove %s\n", tmpdir);
	return t_done();
}
