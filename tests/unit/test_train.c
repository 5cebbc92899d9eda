/*
 * test_train.c - gradients of the training forward pass against finite
 * differences: per tensor (a random direction inside that tensor), for the
 * whole model, and for the low-rank side path with the base frozen.
 *
 * The forward runs in float, so central differences carry rounding noise of
 * about 1e-7 * loss / h.  With h chosen so that the step changes the loss by
 * ~1e-3, a correct gradient agrees to better than 1e-2 relative; a wrong
 * term (a missing factor, a transposed product) is off by far more.
 */
#include <string.h>

#include "sa.h"
#include "t.h"

#define TOL 2e-2

static uint64_t rng = 42;

static double
urand(void)
{
	rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
	return ((rng >> 11) / 9007199254740992.0) * 2 - 1;
}

static void
fill(float *p, size_t n, double scale, double offset)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (float)(offset + scale * urand());
}

typedef struct problem {
	sa_tmodel *t;
	sa_tact *a;
	sa_tside *side;
	int tokens[150], targets[150];
	int B, T;
} problem;

static double
loss_of(problem *p)
{
	float loss;
	sa_tmodel_forward(p->t, p->a, p->side, p->tokens, p->targets, p->B, p->T, &loss);
	return loss;
}

/*
 * Directional check on the n floats at x, whose gradient is g: compare
 * <g, u> with (L(x + h u) - L(x - h u)) / 2h for a random direction u.
 */
static void
check_direction(problem *p, float *x, const float *g, size_t n, const char *what)
{
	float *u = malloc(n * sizeof *u), *x0 = malloc(n * sizeof *x0);
	double gu = 0, unorm = 0;

	for (size_t i = 0; i < n; i++) {
		u[i] = (float)urand();
		unorm += (double)u[i] * u[i];
	}
	unorm = sqrt(unorm);
	for (size_t i = 0; i < n; i++) {
		u[i] /= (float)unorm;
		gu += (double)g[i] * u[i];
	}
	memcpy(x0, x, n * sizeof *x0);
	double h = 1e-2;
	for (size_t i = 0; i < n; i++)
		x[i] = x0[i] + (float)h * u[i];
	double lp = loss_of(p);
	for (size_t i = 0; i < n; i++)
		x[i] = x0[i] - (float)h * u[i];
	double lm = loss_of(p);
	memcpy(x, x0, n * sizeof *x0);
	double fd = (lp - lm) / (2 * h);
	double err = fabs(fd - gu) / fmax(fabs(fd) + fabs(gu), 1e-3);
	t_checked++;
	if (!(err < TOL)) {
		t_failed++;
		fprintf(stderr, "gradient of %s: analytic %.6g, numeric %.6g, rel err %.3g\n",
		    what, gu, fd, err);
	}
	free(u);
	free(x0);
}

/* B sequences of T tokens, B * T <= 150 */
static void
build_bt(problem *p, int tied, int Hk, int B, int T)
{
	sa_config c = {
		.arch = SA_ARCH_LLAMA, .n_layer = 2, .d_model = 16, .n_head = 4,
		.n_head_kv = Hk, .d_head = 4, .d_ff = 24, .n_vocab = 37, .n_ctx = 160,
		.rope_dim = 4, .rope_base = 10000, .norm_eps = 1e-5f,
	};
	memset(p, 0, sizeof *p);
	p->B = B;
	p->T = T;
	CHECK_OK(sa_tmodel_new(&p->t, &c, tied, 7));
	CHECK_OK(sa_tact_new(&p->a, &c, p->B, p->T));
	/* larger weights than the training init, so the loss has curvature to test */
	fill(p->t->params, p->t->n_params, 0.4, 0);
	for (int l = 0; l < c.n_layer; l++) {
		fill(p->t->layers[l].attn_norm, c.d_model, 0.3, 1);
		fill(p->t->layers[l].ffn_norm, c.d_model, 0.3, 1);
	}
	fill(p->t->out_norm, c.d_model, 0.3, 1);
	for (int i = 0; i < p->B * p->T; i++) {
		p->tokens[i] = (int)((urand() + 1) * 18) % 37;
		p->targets[i] = i % 3 == 0 ? -1 : (int)((urand() + 1) * 18) % 37;
	}
}

static void
build(problem *p, int tied, int Hk)
{
	build_bt(p, tied, Hk, 2, 7);
}

static void
free_problem(problem *p)
{
	sa_tact_free(p->a);
	sa_tmodel_free(p->t);
}

static void
grads(problem *p, int weight_grads)
{
	loss_of(p);
	sa_tmodel_backward(p->t, p->a, p->side, weight_grads);
}

static void
test_base(int tied, int Hk)
{
	problem p;
	char what[64];

	build(&p, tied, Hk);
	CHECK_OK(sa_tmodel_want_grads(p.t, 1));
	grads(&p, 1);
	const sa_config *c = &p.t->cfg;
	snprintf(what, sizeof what, "tok_embd (tied %d, Hk %d)", tied, Hk);
	check_direction(&p, p.t->tok_embd, p.t->gtok_embd, (size_t)c->n_vocab * c->d_model, what);
	check_direction(&p, p.t->out_norm, p.t->gout_norm, c->d_model, "out_norm");
	if (!tied)
		check_direction(&p, p.t->output, p.t->goutput, (size_t)c->n_vocab * c->d_model, "output");
	for (int l = 0; l < c->n_layer; l++) {
		check_direction(&p, p.t->layers[l].attn_norm, p.t->glayers[l].attn_norm, c->d_model, "attn_norm");
		check_direction(&p, p.t->layers[l].ffn_norm, p.t->glayers[l].ffn_norm, c->d_model, "ffn_norm");
		for (int m = 0; m < SA_NMAT; m++) {
			int dout, din;
			sa_tmodel_mat_dims(c, m, &dout, &din);
			snprintf(what, sizeof what, "layer %d %s (tied %d, Hk %d)", l, sa_mat_name(m), tied, Hk);
			check_direction(&p, p.t->layers[l].w[m], p.t->glayers[l].w[m], (size_t)dout * din, what);
		}
	}
	/* the whole model at once */
	check_direction(&p, p.t->params, p.t->grads, p.t->n_params, "all parameters");
	free_problem(&p);
}

/* One sequence longer than two blocks of the causal attention: the
 * projections that feed it and the whole model. */
static void
test_long(void)
{
	problem p;
	char what[64];

	build_bt(&p, 1, 2, 1, 150);
	CHECK_OK(sa_tmodel_want_grads(p.t, 1));
	grads(&p, 1);
	const sa_config *c = &p.t->cfg;
	for (int l = 0; l < c->n_layer; l++)
		for (int m = SA_MAT_Q; m <= SA_MAT_O; m++) {
			int dout, din;
			sa_tmodel_mat_dims(c, m, &dout, &din);
			snprintf(what, sizeof what, "layer %d %s (150 tokens)", l, sa_mat_name(m));
			check_direction(&p, p.t->layers[l].w[m], p.t->glayers[l].w[m], (size_t)dout * din, what);
		}
	check_direction(&p, p.t->params, p.t->grads, p.t->n_params, "all parameters (150 tokens)");
	free_problem(&p);
}

/* Base frozen: only the side paths' W1, H, W2 get gradients, and those must
 * include the effect through every later layer. */
static void
test_side(void)
{
	problem p;
	const int r = 3;
	sa_tside side[2 * SA_NMAT];
	float *bufs[2 * SA_NMAT][6];

	build(&p, 1, 2);
	const sa_config *c = &p.t->cfg;
	int Dkv = c->n_head_kv * c->d_head;
	memset(side, 0, sizeof side);
	memset(bufs, 0, sizeof bufs);
	int used[][2] = { {0, SA_MAT_Q}, {0, SA_MAT_V}, {0, SA_MAT_DOWN}, {1, SA_MAT_O}, {1, SA_MAT_K} };
	for (size_t u = 0; u < sizeof used / sizeof used[0]; u++) {
		int l = used[u][0], m = used[u][1], dout, din;
		sa_tmodel_mat_dims(c, m, &dout, &din);
		size_t n[3] = { (size_t)dout * Dkv, (size_t)r * Dkv, (size_t)r * din };
		float **b = bufs[l * SA_NMAT + m];
		for (int i = 0; i < 3; i++) {
			b[i] = malloc(n[i] * sizeof(float));
			b[3 + i] = calloc(n[i], sizeof(float));
			fill(b[i], n[i], 0.5, 0);
		}
		sa_tside *s = &side[l * SA_NMAT + m];
		s->rank = r;
		s->W1 = b[0]; s->H = b[1]; s->W2 = b[2];
		s->dW1 = b[3]; s->dH = b[4]; s->dW2 = b[5];
	}
	p.side = side;
	grads(&p, 0);
	for (size_t u = 0; u < sizeof used / sizeof used[0]; u++) {
		int l = used[u][0], m = used[u][1], dout, din;
		char what[64];
		sa_tmodel_mat_dims(c, m, &dout, &din);
		size_t n[3] = { (size_t)dout * Dkv, (size_t)r * Dkv, (size_t)r * din };
		float **b = bufs[l * SA_NMAT + m];
		const char *names[3] = { "W1", "H", "W2" };
		for (int i = 0; i < 3; i++) {
			snprintf(what, sizeof what, "side layer %d %s %s", l, sa_mat_name(m), names[i]);
			check_direction(&p, b[i], b[3 + i], n[i], what);
		}
	}
	/* side paths with W1 = 0 leave the loss exactly as without them */
	double with = loss_of(&p);
	for (size_t u = 0; u < sizeof used / sizeof used[0]; u++) {
		int l = used[u][0], m = used[u][1], dout, din;
		sa_tmodel_mat_dims(c, m, &dout, &din);
		memset(bufs[l * SA_NMAT + m][0], 0, (size_t)dout * Dkv * sizeof(float));
	}
	double zero = loss_of(&p);
	p.side = NULL;
	double none = loss_of(&p);
	CHECK(with != none);
	CHECK(zero == none);
	for (int i = 0; i < 2 * SA_NMAT; i++)
		for (int j = 0; j < 6; j++)
			free(bufs[i][j]);
	free_problem(&p);
}

/* The context mapping: loss = <R, state> for a random R, through two
 * segments (the second ends in a partial chunk). */
static double ctx_loss(sa_tctx *c, const float *Q, const float *g, const float *b, const float *R, size_t n)
{
	sa_tctx_forward(c, 0, SA_MAT_V, Q, g, b);
	const float *h = sa_tctx_state(c, 0, SA_MAT_V);
	double s = 0;
	for (size_t i = 0; i < n; i++)
		s += (double)R[i] * h[i];
	return s;
}

static void
test_ctx(void)
{
	const int Hk = 2, dh = 4, r = 3, C = 4, L = 1, n1 = 10, n2 = 7;
	sa_tctx *c;
	float K1[10 * 8], V1[10 * 8], K2[7 * 8], V2[7 * 8];
	float Q[2 * 3 * 4], g[2 * 4], b[2 * 3], R[2 * 3 * 4];
	float dQ[2 * 3 * 4] = {0}, dg[2 * 4] = {0}, db[2 * 3] = {0};
	float *params[3] = { Q, g, b }, *grad[3] = { dQ, dg, db };
	size_t sizes[3] = { sizeof Q / 4, sizeof g / 4, sizeof b / 4 };
	const char *names[3] = { "Q", "g", "b" };

	CHECK_OK(sa_tctx_new(&c, L, Hk, dh, Hk * dh, r, C, 1u << SA_MAT_V, 64));
	fill(K1, sizeof K1 / 4, 1, 0); fill(V1, sizeof V1 / 4, 1, 0);
	fill(K2, sizeof K2 / 4, 1, 0); fill(V2, sizeof V2 / 4, 1, 0);
	fill(Q, sizeof Q / 4, 1, 0); fill(g, sizeof g / 4, 1, 0); fill(b, sizeof b / 4, 1, 1);
	fill(R, sizeof R / 4, 1, 0);
	const float *k1[1] = { K1 }, *v1[1] = { V1 }, *k2[1] = { K2 }, *v2[1] = { V2 };
	CHECK_OK(sa_tctx_add_segment(c, k1, v1, n1));
	CHECK_OK(sa_tctx_add_segment(c, k2, v2, n2));
	CHECK(sa_tctx_n_tokens(c) == n1 + n2);
	ctx_loss(c, Q, g, b, R, sizeof R / 4);
	CHECK_OK(sa_tctx_backward(c, 0, SA_MAT_V, Q, g, R, dQ, dg, db));
	for (int p = 0; p < 3; p++) {
		/* directional derivative, as check_direction but with this loss */
		size_t n = sizes[p];
		float u[32], x0[32];
		double gu = 0, un = 0;
		for (size_t i = 0; i < n; i++) { u[i] = (float)urand(); un += u[i] * u[i]; }
		for (size_t i = 0; i < n; i++) { u[i] /= (float)sqrt(un); gu += grad[p][i] * u[i]; }
		memcpy(x0, params[p], n * 4);
		double h = 1e-2;
		for (size_t i = 0; i < n; i++) params[p][i] = x0[i] + (float)h * u[i];
		double lp = ctx_loss(c, Q, g, b, R, sizeof R / 4);
		for (size_t i = 0; i < n; i++) params[p][i] = x0[i] - (float)h * u[i];
		double lm = ctx_loss(c, Q, g, b, R, sizeof R / 4);
		memcpy(params[p], x0, n * 4);
		double fd = (lp - lm) / (2 * h), err = fabs(fd - gu) / fmax(fabs(fd) + fabs(gu), 1e-3);
		t_checked++;
		if (!(err < TOL)) {
			t_failed++;
			fprintf(stderr, "gradient of context %s: analytic %.6g, numeric %.6g\n", names[p], gu, fd);
		}
	}
	sa_tctx_free(c);
}

int
main(void)
{
	sa_set_threads(1);
	test_base(0, 4);
	test_base(1, 2);
	test_base(0, 1);
	test_long();
	test_side();
	test_ctx();
	return t_done();
}
