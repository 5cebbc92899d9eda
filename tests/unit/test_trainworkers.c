/*
 * test_trainworkers.c - data-parallel training steps (sa_tworkers): the
 * gradient of a step's micro-batches has the same bits on 1, 2 or 3
 * workers, is their sum in item order, agrees with one model accumulating
 * them itself, and a failing item fails the run with its message.
 */
#include <string.h>

#include "sa.h"
#include "t.h"

#define NMICRO 5
#define B 2
#define T 9

static uint64_t rng = 7;

static double
urand(void)
{
	rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
	return ((rng >> 11) / 9007199254740992.0) * 2 - 1;
}

typedef struct step {
	sa_tmodel *t;
	sa_tact *act[3];                     /* one per worker */
	int tokens[NMICRO][B * T], targets[NMICRO][B * T];
	float loss[NMICRO];
	int fail_item;                       /* -1: none */
} step;

/* sa_titem_fn: forward and backward of micro-batch item. */
static int
micro(void *ctx, int worker, int item, float *grads)
{
	step *s = ctx;
	int rc;

	if (item == s->fail_item)
		return sa_fail(SA_EDATA, "micro-batch %d: made to fail", item);
	rc = sa_tmodel_forward(s->t, s->act[worker], NULL, s->tokens[item], s->targets[item],
	    B, T, &s->loss[item]);
	if (rc == SA_OK && grads)
		rc = sa_tmodel_backward_into(s->t, s->act[worker], NULL, grads);
	return rc;
}

/* The step's gradient and losses on n workers. */
static void
run_on(step *s, int n, float *grads, float *loss)
{
	sa_tworkers *w;

	memset(grads, 0, s->t->n_params * sizeof(float));
	CHECK_OK(sa_tworkers_new(&w, n, s->t->n_params));
	CHECK(sa_tworkers_count(w) == n);
	CHECK_OK(sa_tworkers_run(w, micro, s, NMICRO, grads));
	memcpy(loss, s->loss, sizeof s->loss);
	sa_tworkers_free(w);
}

int
main(void)
{
	sa_config c = {
		.arch = SA_ARCH_LLAMA, .n_layer = 2, .d_model = 16, .n_head = 4,
		.n_head_kv = 2, .d_head = 4, .d_ff = 24, .n_vocab = 37, .n_ctx = 16,
		.rope_dim = 4, .rope_base = 10000, .norm_eps = 1e-5f,
	};
	step s = { .fail_item = -1 };

	sa_set_threads(1);
	CHECK_OK(sa_tmodel_new(&s.t, &c, 0, 3));
	for (size_t i = 0; i < s.t->n_params; i++)   /* weights large enough to matter */
		s.t->params[i] += (float)(0.2 * urand());
	for (int i = 0; i < 3; i++)
		CHECK_OK(sa_tact_new(&s.act[i], &c, B, T));
	for (int m = 0; m < NMICRO; m++)
		for (int i = 0; i < B * T; i++) {
			s.tokens[m][i] = (int)((urand() + 1) * 18) % 37;
			s.targets[m][i] = i % 4 == 0 ? -1 : (int)((urand() + 1) * 18) % 37;
		}
	size_t n = s.t->n_params;
	float *g1 = malloc(n * sizeof(float)), *g2 = malloc(n * sizeof(float));
	float *g3 = malloc(n * sizeof(float)), *want = calloc(n, sizeof(float));
	float *one = malloc(n * sizeof(float));
	float l1[NMICRO], l2[NMICRO], l3[NMICRO];

	run_on(&s, 1, g1, l1);
	run_on(&s, 2, g2, l2);
	run_on(&s, 3, g3, l3);
	/* the same bits, whoever ran which micro-batch */
	CHECK(!memcmp(g1, g2, n * sizeof(float)));
	CHECK(!memcmp(g1, g3, n * sizeof(float)));
	CHECK(!memcmp(l1, l2, sizeof l1));
	CHECK(!memcmp(l1, l3, sizeof l1));

	/* the sum in item order of each micro-batch's own gradient */
	for (int m = 0; m < NMICRO; m++) {
		float loss;
		memset(one, 0, n * sizeof(float));
		CHECK_OK(sa_tmodel_forward(s.t, s.act[0], NULL, s.tokens[m], s.targets[m], B, T, &loss));
		CHECK_OK(sa_tmodel_backward_into(s.t, s.act[0], NULL, one));
		CHECK(loss == l1[m]);
		for (size_t i = 0; i < n; i++)
			want[i] += one[i];
	}
	CHECK(!memcmp(g1, want, n * sizeof(float)));

	/* and within rounding of the model accumulating them in t->grads */
	CHECK_OK(sa_tmodel_want_grads(s.t, 1));
	for (int m = 0; m < NMICRO; m++) {
		CHECK_OK(sa_tmodel_forward(s.t, s.act[1], NULL, s.tokens[m], s.targets[m], B, T, NULL));
		CHECK_OK(sa_tmodel_backward(s.t, s.act[1], NULL, 1));
	}
	double diff = 0, norm = 0;
	for (size_t i = 0; i < n; i++) {
		diff += ((double)s.t->grads[i] - g2[i]) * ((double)s.t->grads[i] - g2[i]);
		norm += (double)g2[i] * g2[i];
	}
	CHECK(norm > 0);
	CHECK(sqrt(diff / norm) < 1e-5);

	/* a failing item fails the run, with its message, on any worker */
	for (int nw = 1; nw <= 3; nw++) {
		sa_tworkers *w;
		s.fail_item = 3;
		memset(g1, 0, n * sizeof(float));
		CHECK_OK(sa_tworkers_new(&w, nw, n));
		CHECK(sa_tworkers_run(w, micro, &s, NMICRO, g1) == SA_EDATA);
		CHECK(strstr(sa_error(), "micro-batch 3: made to fail") != NULL);
		/* and the workers still run the next step whole */
		s.fail_item = -1;
		memset(g1, 0, n * sizeof(float));
		CHECK_OK(sa_tworkers_run(w, micro, &s, NMICRO, g1));
		CHECK(!memcmp(g1, g2, n * sizeof(float)));
		/* forward only: items get no gradient buffer; the same losses */
		memset(s.loss, 0, sizeof s.loss);
		CHECK_OK(sa_tworkers_run(w, micro, &s, NMICRO, NULL));
		CHECK(!memcmp(s.loss, l1, sizeof l1));
		sa_tworkers_free(w);
	}

	for (int i = 0; i < 3; i++)
		sa_tact_free(s.act[i]);
	sa_tmodel_free(s.t);
	free(g1); free(g2); free(g3); free(want); free(one);
	return t_done();
}
