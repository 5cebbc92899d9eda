/*
 * test_trainsave.c - the training forward and the inference engine compute
 * the same model: a random sa_tmodel saved as F32 GGUF, loaded with
 * sa_model_load, gives the same logits through sa_forward, for a short
 * prompt and for one longer than two blocks of the causal attention.
 * A frozen view of a loaded model (sa_tmodel_view) holds no copy of its
 * weights and gives what the F32 copy gives: the same bytes over F32
 * weights, the same up to the order of sums over F16 and Q8_0 ones.
 * usage: test_trainsave VOCAB.gguf TMPDIR
 */
#include <string.h>

#include "sa.h"
#include "t.h"

/* Logits of the training forward of t (*ref) and of the inference engine
 * on m (*got), over the same n tokens: [n][n_vocab] each, malloc'd. */
static void
logits_both(sa_tmodel *t, sa_model *m, const int *toks, int n, float **ref, float **got)
{
	size_t nv = (size_t)n * t->cfg.n_vocab;
	sa_tact *a;
	sa_kvcache *s;

	*ref = malloc(nv * sizeof(float));
	*got = malloc(nv * sizeof(float));
	CHECK_OK(sa_tact_new(&a, &t->cfg, 1, n));
	CHECK_OK(sa_tmodel_forward(t, a, NULL, toks, NULL, 1, n, NULL));
	memcpy(*ref, sa_tact_logits(a), nv * sizeof(float));
	CHECK_OK(sa_kvcache_new(&s, m, 0));
	CHECK_OK(sa_forward(s, toks, n, *got, 1));
	sa_kvcache_free(s);
	sa_tact_free(a);
}

static void
compare(const char *vocab_path, const char *dir, int tied, int Hk, int n)
{
	sa_config c = {
		.arch = SA_ARCH_LLAMA, .n_layer = 2, .d_model = 32, .n_head = 4,
		.n_head_kv = Hk, .d_head = 8, .d_ff = 48, .n_ctx = 160,
		.rope_dim = 8, .rope_base = 10000, .norm_eps = 1e-5f,
	};
	sa_gguf *vg;
	sa_vocab *v;
	sa_tmodel *t;
	sa_model *m;
	char path[4096];
	int toks[160];
	uint64_t r = 9;

	CHECK_OK(sa_gguf_open(&vg, vocab_path));
	CHECK_OK(sa_vocab_load(&v, vg));
	c.n_vocab = sa_vocab_size(v);
	CHECK_OK(sa_tmodel_new(&t, &c, tied, 3));
	/* weights larger than the init, so the logits spread */
	for (size_t i = 0; i < t->n_params; i++) {
		r = r * 6364136223846793005ULL + 1442695040888963407ULL;
		t->params[i] += (float)(((r >> 11) / 9007199254740992.0) - 0.5) * 0.3f;
	}
	snprintf(path, sizeof path, "%s/trained-%d-%d.gguf", dir, tied, Hk);
	CHECK_OK(sa_tmodel_save(t, vg, SA_TYPE_F32, "t", path));
	CHECK_OK(sa_model_load(&m, path));
	for (int i = 0; i < n; i++)
		toks[i] = (i * 37 + 5) % c.n_vocab;
	float *ref, *got;
	logits_both(t, m, toks, n, &ref, &got);
	double maxdiff = 0, maxref = 0;
	for (size_t i = 0; i < (size_t)n * c.n_vocab; i++) {
		maxdiff = fmax(maxdiff, fabs(got[i] - ref[i]));
		maxref = fmax(maxref, fabs(ref[i]));
	}
	CHECK(maxref > 0.1);
	CHECK_NEAR(maxdiff / maxref, 0, 1e-4);
	free(ref);
	free(got);
	sa_model_free(m);
	sa_tmodel_free(t);
	sa_vocab_free(v);
	sa_gguf_close(vg);
}

static float
urand(uint64_t *r)
{
	*r = *r * 6364136223846793005ULL + 1442695040888963407ULL;
	return (float)(((*r >> 11) / 9007199254740992.0) - 0.5);
}

/* Loss, side gradients and keys of model tm on fixed inputs, with side
 * paths of rank 3 on every Q and down of layer 1. */
static void
run(sa_tmodel *tm, sa_tact *a, float *grads, size_t per, float *loss, float *keys, int n)
{
	const sa_config *c = &tm->cfg;
	int Dkv = c->n_head_kv * c->d_head, r = 3, toks[2 * 40], tgt[2 * 40];
	sa_tside side[2 * SA_NMAT];
	uint64_t s = 5;

	memset(side, 0, sizeof side);
	memset(grads, 0, 4 * per * sizeof(float));
	for (int k = 0; k < 4; k++) {
		int l = k / 2, m = k % 2 ? SA_MAT_DOWN : SA_MAT_Q, dout, din;
		sa_tmodel_mat_dims(c, m, &dout, &din);
		sa_tside *sd = &side[l * SA_NMAT + m];
		float *w = malloc(per * 3 * sizeof(float));
		for (size_t j = 0; j < per * 3; j++)
			w[j] = 0.3f * urand(&s);
		sd->rank = r;
		sd->W1 = w;
		sd->H = w + per;
		sd->W2 = w + 2 * per;
		sd->dW1 = grads + k * per;
		sd->dH = grads + k * per + (size_t)dout * Dkv;
		sd->dW2 = sd->dH + (size_t)r * Dkv;
	}
	for (int i = 0; i < 2 * n; i++) {
		toks[i] = (i * 29 + 3) % c->n_vocab;
		tgt[i] = i % 4 ? (i * 13 + 1) % c->n_vocab : -1;
	}
	CHECK_OK(sa_tmodel_forward(tm, a, side, toks, tgt, 2, n, loss));
	CHECK_OK(sa_tmodel_backward_into(tm, a, side, NULL));
	/* the input of each matrix kind, every layer: what a memory keyed by
	 * the input writes from, one kind a pass */
	const int in_mat[4] = { SA_MAT_Q, SA_MAT_O, SA_MAT_GATE, SA_MAT_DOWN };
	size_t in_w = (size_t)n * (c->d_ff > c->d_model ? c->d_ff : c->d_model);
	float *inputs = malloc((size_t)c->n_layer * 4 * in_w * sizeof(float));
	for (int k = 0; k < 4; k++) {
		CHECK_OK(sa_tmodel_keys(tm, a, toks, n, in_mat[k]));
		for (int l = 0; l < c->n_layer; l++) {
			int dout, din;
			sa_tmodel_mat_dims(c, in_mat[k], &dout, &din);
			memcpy(inputs + ((size_t)l * 4 + k) * in_w, sa_tact_input(a, l, in_mat[k]),
			    (size_t)n * din * sizeof(float));
		}
	}
	for (int l = 0; l < c->n_layer; l++) {
		memcpy(keys + (size_t)l * 2 * n * Dkv, sa_tact_keys(a, l), (size_t)n * Dkv * sizeof(float));
		memcpy(keys + (size_t)(l * 2 + 1) * n * Dkv, sa_tact_values(a, l), (size_t)n * Dkv * sizeof(float));
	}
	/* the keys alone are the forward's */
	CHECK_OK(sa_tmodel_forward(tm, a, NULL, toks, NULL, 1, n, NULL));
	for (int l = 0; l < c->n_layer; l++) {
		CHECK(!memcmp(keys + (size_t)l * 2 * n * Dkv, sa_tact_keys(a, l), (size_t)n * Dkv * sizeof(float)));
		CHECK(!memcmp(keys + (size_t)(l * 2 + 1) * n * Dkv, sa_tact_values(a, l),
		    (size_t)n * Dkv * sizeof(float)));
		for (int k = 0; k < 4; k++) {
			int dout, din;
			sa_tmodel_mat_dims(c, in_mat[k], &dout, &din);
			CHECK(!memcmp(inputs + ((size_t)l * 4 + k) * in_w, sa_tact_input(a, l, in_mat[k]),
			    (size_t)n * din * sizeof(float)));
		}
	}
	free(inputs);
	for (int k = 0; k < 4; k++)
		free((void *)side[(k / 2) * SA_NMAT + (k % 2 ? SA_MAT_DOWN : SA_MAT_Q)].W1);
}

static void
view(const char *vocab_path, const char *dir, int type, int tied)
{
	sa_config c = {
		.arch = SA_ARCH_LLAMA, .n_layer = 2, .d_model = 64, .n_head = 4,
		.n_head_kv = 2, .d_head = 16, .d_ff = 160, .n_ctx = 64,
		.rope_dim = 16, .rope_base = 10000, .norm_eps = 1e-5f,
	};
	int n = 40, Dkv = c.n_head_kv * c.d_head;
	size_t per = (size_t)c.d_ff * Dkv + 3 * Dkv + 3 * c.d_ff;   /* W1, H, W2 at most */
	sa_gguf *vg;
	sa_vocab *v;
	sa_tmodel *t, *copy, *frozen;
	sa_model *m;
	sa_tact *a;
	char path[4096];
	uint64_t r = 11;
	float loss[2];

	CHECK_OK(sa_gguf_open(&vg, vocab_path));
	CHECK_OK(sa_vocab_load(&v, vg));
	c.n_vocab = sa_vocab_size(v);
	CHECK_OK(sa_tmodel_new(&t, &c, tied, 4));
	for (size_t i = 0; i < t->n_params; i++)
		t->params[i] += 0.2f * urand(&r);
	snprintf(path, sizeof path, "%s/view-%s-%d.gguf", dir, sa_type_name(type), tied);
	CHECK_OK(sa_tmodel_save(t, vg, type, "t", path));
	CHECK_OK(sa_model_load(&m, path));
	CHECK(m->layers[0].w[SA_MAT_DOWN].type == type);
	CHECK_OK(sa_tmodel_from_model(&copy, m));
	CHECK_OK(sa_tmodel_view(&frozen, m));
	/* the norms only, and no weight gradients */
	CHECK(frozen->n_params == (2 * (size_t)c.n_layer + 1) * c.d_model);
	CHECK(!frozen->tok_embd && !frozen->layers[1].w[SA_MAT_UP]);
	CHECK(sa_tmodel_want_grads(frozen, 1) == SA_EUSAGE);
	CHECK_OK(sa_tact_new(&a, &c, 2, n));
	size_t nk = (size_t)c.n_layer * 2 * n * Dkv;
	float *g[2], *k[2];
	for (int i = 0; i < 2; i++) {
		g[i] = malloc(4 * per * sizeof(float));
		k[i] = malloc(nk * sizeof(float));
		run(i ? frozen : copy, a, g[i], per, &loss[i], k[i], n);
	}
	CHECK(loss[0] > 1);
	if (type == SA_TYPE_F32) {
		CHECK(loss[0] == loss[1]);
		CHECK(!memcmp(g[0], g[1], 4 * per * sizeof(float)));
		CHECK(!memcmp(k[0], k[1], nk * sizeof(float)));
	} else {
		double dg = 0, mg = 0, dk = 0, mk = 0;
		for (size_t i = 0; i < 4 * per; i++) {
			dg = fmax(dg, fabs(g[0][i] - g[1][i]));
			mg = fmax(mg, fabs(g[0][i]));
		}
		for (size_t i = 0; i < nk; i++) {
			dk = fmax(dk, fabs(k[0][i] - k[1][i]));
			mk = fmax(mk, fabs(k[0][i]));
		}
		CHECK_NEAR(loss[1], loss[0], 1e-5 * loss[0]);
		CHECK(mg > 1e-3 && mk > 0.1);
		CHECK_NEAR(dg / mg, 0, 1e-4);
		CHECK_NEAR(dk / mk, 0, 1e-5);
	}
	for (int i = 0; i < 2; i++) {
		free(g[i]);
		free(k[i]);
	}
	sa_tact_free(a);
	sa_tmodel_free(frozen);
	sa_tmodel_free(copy);
	sa_model_free(m);
	sa_tmodel_free(t);
	sa_vocab_free(v);
	sa_gguf_close(vg);
}

/*
 * A frozen base in Q8_0 or a K-quant type: the training forward multiplies
 * its rows as inference does (inputs rounded to Q8_0 or Q8_K, integer dot
 * products),
 * so its logits are inference's up to the order of float sums.  Rounding
 * can amplify that order now and then (a value on a rounding boundary goes
 * one way or the other), so most tokens must agree, not all; multiplied
 * in floats without the rounding, none does (relative differences of 1e-2).
 */
static void
frozen_rounded(const char *vocab_path, const char *dir, int type)
{
	sa_config c = {
		.arch = SA_ARCH_LLAMA, .n_layer = 2, .d_model = 256, .n_head = 4,
		.n_head_kv = 2, .d_head = 64, .d_ff = 512, .n_ctx = 64,
		.rope_dim = 64, .rope_base = 10000, .norm_eps = 1e-5f,
	};
	int n = 8, toks[8], agree = 0;
	sa_gguf *vg;
	sa_vocab *v;
	sa_tmodel *t, *frozen;
	sa_model *m;
	char path[4096];
	uint64_t r = 13;

	CHECK_OK(sa_gguf_open(&vg, vocab_path));
	CHECK_OK(sa_vocab_load(&v, vg));
	c.n_vocab = sa_vocab_size(v);
	CHECK_OK(sa_tmodel_new(&t, &c, 0, 4));
	for (size_t i = 0; i < t->n_params; i++)
		t->params[i] += 0.2f * urand(&r);
	snprintf(path, sizeof path, "%s/frozen-%s.gguf", dir, sa_type_name(type));
	CHECK_OK(sa_tmodel_save(t, vg, type, "t", path));
	CHECK_OK(sa_model_load(&m, path));
	CHECK(m->layers[0].w[SA_MAT_DOWN].type == type);
	CHECK_OK(sa_tmodel_view(&frozen, m));
	for (int i = 0; i < n; i++)
		toks[i] = (i * 29 + 3) % c.n_vocab;
	float *ref, *got;
	logits_both(frozen, m, toks, n, &ref, &got);
	for (int i = 0; i < n; i++) {
		double maxdiff = 0, maxref = 0;
		for (size_t j = (size_t)i * c.n_vocab; j < (size_t)(i + 1) * c.n_vocab; j++) {
			maxdiff = fmax(maxdiff, fabs(got[j] - ref[j]));
			maxref = fmax(maxref, fabs(ref[j]));
		}
		CHECK(maxref > 0.1);
		agree += maxdiff <= 1e-5 * maxref;
	}
	CHECK(agree >= n - 2);
	free(ref);
	free(got);
	sa_tmodel_free(frozen);
	sa_model_free(m);
	sa_tmodel_free(t);
	sa_vocab_free(v);
	sa_gguf_close(vg);
}

int
main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: test_trainsave VOCAB.gguf TMPDIR\n");
		return 2;
	}
	compare(argv[1], argv[2], 1, 2, 12);
	compare(argv[1], argv[2], 0, 4, 12);
	compare(argv[1], argv[2], 1, 2, 150);
	view(argv[1], argv[2], SA_TYPE_F32, 1);
	view(argv[1], argv[2], SA_TYPE_F16, 0);
	view(argv[1], argv[2], SA_TYPE_Q4_0, 1);
	frozen_rounded(argv[1], argv[2], SA_TYPE_Q8_0);
	frozen_rounded(argv[1], argv[2], SA_TYPE_Q4_K);
	frozen_rounded(argv[1], argv[2], SA_TYPE_Q6_K);
	return t_done();
}

