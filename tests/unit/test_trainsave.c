/*
 * test_trainsave.c - the training forward and the inference engine compute
 * the same model: a random sa_tmodel saved as F32 GGUF, loaded with
 * sa_model_load, gives the same logits through sa_forward, for a short
 * prompt and for one longer than two blocks of the causal attention.
 * usage: test_trainsave VOCAB.gguf TMPDIR
 */
#include <string.h>

#include "sa.h"
#include "t.h"

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
	sa_tact *a;
	sa_model *m;
	sa_kvcache *s;
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
	CHECK_OK(sa_tact_new(&a, &c, 1, n));
	CHECK_OK(sa_tmodel_forward(t, a, NULL, toks, NULL, 1, n, NULL));
	const float *ref = sa_tact_logits(a);
	float *got = malloc((size_t)n * c.n_vocab * sizeof(float));
	CHECK_OK(sa_kvcache_new(&s, m, 0));
	CHECK_OK(sa_forward(s, toks, n, got, 1));
	double maxdiff = 0, maxref = 0;
	for (size_t i = 0; i < (size_t)n * c.n_vocab; i++) {
		maxdiff = fmax(maxdiff, fabs(got[i] - ref[i]));
		maxref = fmax(maxref, fabs(ref[i]));
	}
	CHECK(maxref > 0.1);
	CHECK_NEAR(maxdiff / maxref, 0, 1e-4);
	free(got);
	sa_kvcache_free(s);
	sa_model_free(m);
	sa_tact_free(a);
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
	return t_done();
}
