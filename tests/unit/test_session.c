/*
 * test_session - the KV session under sa-run and sa-eval: a prompt that
 * shares a prefix with what the cache holds runs only the tokens after it
 * (and always its last), scores and choices against every token run from
 * scratch, generation against a plain greedy loop, and the KV peak; and
 * the request sa-run's options make (lib/run.c).
 * usage: test_session MODEL.gguf (a small random model).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sa.h"
#include "t.h"

/* log p(toks[i] | toks[0..i)) summed over i > from, every token run from
 * scratch in one call. */
static double
from_scratch(sa_model *m, const int *toks, int n, int from)
{
	int V = m->cfg.n_vocab;
	float *lg = malloc((size_t)n * V * sizeof *lg);
	sa_kvcache *s;
	double lp = 0;

	CHECK_OK(sa_kvcache_new(&s, m, 0));
	CHECK_OK(sa_forward(s, toks, n - 1, lg, 1));
	for (int i = from; i < n - 1; i++)
		lp += sa_logprob(lg + (size_t)i * V, V, toks[i + 1]);
	sa_kvcache_free(s);
	free(lg);
	return lp;
}

static long
evaluated(const sa_session *s)
{
	sa_timings t;

	sa_session_timings(s, &t);
	return t.n_eval;
}

static void
test_feed(sa_model *m)
{
	sa_session *s;
	int toks[40], V = m->cfg.n_vocab;
	const float *lg;
	float *want = malloc((size_t)V * sizeof *want);
	sa_kvcache *st;

	for (int i = 0; i < 40; i++)
		toks[i] = 30 + (7 * i) % 50;
	CHECK_OK(sa_session_new(&s, m, 0, 1));
	CHECK(sa_session_ctx(s) == m->cfg.n_ctx);
	CHECK_OK(sa_session_feed(s, toks, 20, &lg));
	CHECK(evaluated(s) == 20);
	/* the same prompt again: only its last token runs, for the logits */
	CHECK_OK(sa_session_feed(s, toks, 20, &lg));
	CHECK(evaluated(s) == 21);
	/* a longer one: the tokens after the shared prefix */
	CHECK_OK(sa_session_feed(s, toks, 30, &lg));
	CHECK(evaluated(s) == 31);
	CHECK_OK(sa_kvcache_new(&st, m, 0));
	CHECK_OK(sa_forward(st, toks, 30, want, 0));
	{
		double d = 0;
		for (int i = 0; i < V; i++)
			d = fabs(lg[i] - want[i]) > d ? fabs(lg[i] - want[i]) : d;
		CHECK(d < 1e-3);
	}
	/* another token at 10: the cache goes back to it */
	toks[10]++;
	CHECK_OK(sa_session_feed(s, toks, 12, &lg));
	CHECK(evaluated(s) == 33);
	toks[10]--;
	CHECK(sa_session_feed(s, toks, 0, &lg) == SA_EDATA);
	{
		int *big = calloc((size_t)m->cfg.n_ctx + 1, sizeof *big);
		CHECK(sa_session_feed(s, big, m->cfg.n_ctx + 1, &lg) == SA_EDATA);
		free(big);
	}
	sa_kvcache_free(st);
	sa_session_free(s);
	free(want);
}

static void
test_score(sa_model *m)
{
	const sa_config *c = &m->cfg;
	size_t per_tok = (size_t)c->n_layer * c->n_head_kv * c->d_head * 2 * sizeof(float);
	int toks[30], a[14], b[16], c0[13], *seq[3] = { a, b, c0 }, n_seq[3] = { 14, 16, 13 };
	double lp = 0, lps[3];
	int count[3];
	sa_session *s;

	for (int i = 0; i < 30; i++)
		toks[i] = 40 + (5 * i) % 60;
	CHECK_OK(sa_session_new(&s, m, 0, 0));
	/* short and long runs of logits: a token per call, chunks */
	CHECK_OK(sa_session_score(s, toks, 6, 0, &lp));
	CHECK_NEAR(lp, from_scratch(m, toks, 6, 0), 1e-3);
	lp = 1;
	CHECK_OK(sa_session_score(s, toks, 30, 4, &lp));
	CHECK_NEAR(lp, 1 + from_scratch(m, toks, 30, 4), 1e-3);
	/* the last token is predicted, never run */
	CHECK(sa_session_kv_peak(s) == 29 * per_tok);
	sa_session_reset(s);
	CHECK(sa_session_kv_peak(s) == 0);

	/* choices: prompt toks[0..12), each scored after the shared prefix */
	memcpy(a, toks, 14 * sizeof *a);
	memcpy(b, toks, 12 * sizeof *b);
	b[12] = 90, b[13] = 91, b[14] = 92, b[15] = 93;
	memcpy(c0, toks, 13 * sizeof *c0);
	CHECK_OK(sa_session_choices(s, toks, 12, seq, n_seq, 3, lps, count));
	CHECK(count[0] == 2 && count[1] == 4 && count[2] == 1);
	for (int i = 0; i < 3; i++)
		CHECK_NEAR(lps[i], from_scratch(m, seq[i], n_seq[i], 11), 1e-3);
	n_seq[2] = 12;
	CHECK(sa_session_choices(s, toks, 12, seq, n_seq, 3, lps, count) == SA_EDATA &&
	    strstr(sa_error(), "choice 2 adds no tokens"));
	sa_session_free(s);
}

typedef struct got {
	int toks[64], n, stop_at;
} got;

static int
take(void *ctx, int tok, int *stop)
{
	got *g = ctx;

	g->toks[g->n++] = tok;
	*stop = g->n == g->stop_at;
	return SA_OK;
}

static void
test_generate(sa_model *m)
{
	const sa_config *c = &m->cfg;
	size_t per_tok = (size_t)c->n_layer * c->n_head_kv * c->d_head * 2 * sizeof(float);
	int V = c->n_vocab, prompt[8], want[10];
	float *lg = malloc((size_t)V * sizeof *lg);
	sa_sampler greedy;
	sa_session *s;
	sa_kvcache *st;
	sa_timings t;
	got g = { .stop_at = -1 };

	for (int i = 0; i < 8; i++)
		prompt[i] = 50 + 3 * i;
	/* the argmax chain of a plain loop */
	CHECK_OK(sa_kvcache_new(&st, m, 0));
	CHECK_OK(sa_forward(st, prompt, 8, lg, 0));
	for (int i = 0; i < 10; i++) {
		int best = 0;
		for (int j = 1; j < V; j++)
			if (lg[j] > lg[best])
				best = j;
		want[i] = best;
		CHECK_OK(sa_forward(st, &best, 1, lg, 0));
	}
	CHECK_OK(sa_session_new(&s, m, 0, 0));
	sa_sampler_init(&greedy, 0, 0, 1, 0, 0);
	CHECK_OK(sa_session_generate(s, prompt, 8, &greedy, 10, take, &g));
	for (int i = 0; i < g.n; i++)
		CHECK(g.toks[i] == want[i]);
	sa_session_timings(s, &t);
	CHECK(t.n_gen == g.n && t.n_eval == 8);
	/* the last token is handed over, not run */
	CHECK(g.n < 10 || sa_session_kv_peak(s) == (8 + 9) * per_tok);
	/* fn stops it; no token asked: nothing runs */
	g.n = 0;
	g.stop_at = 3;
	CHECK_OK(sa_session_generate(s, prompt, 8, &greedy, 10, take, &g));
	CHECK(g.n <= 3);
	g.n = 0;
	sa_session_reset(s);
	CHECK_OK(sa_session_generate(s, prompt, 8, &greedy, 0, take, &g));
	CHECK(g.n == 0 && sa_session_kv_peak(s) == 0);
	sa_kvcache_free(st);
	sa_session_free(s);
	free(lg);
}

/* sa-run's options: their defaults, a rule, and the request they make of
 * the texts (escapes, chat messages, stops, choices). */
static void
test_run_opts(void)
{
	const char *choices[] = { "x\\ty" }, *stops[] = { "\\n", "z" };
	sa_run_opts o;
	sa_run_request *r;

	sa_run_opts_default(&o);
	CHECK(o.escape && o.smp.n_predict == 128 && o.n_ctx == -1 && o.parallel == 1);
	CHECK_OK(sa_run_opts_check(&o));
	o.system = "be brief";
	CHECK(sa_run_opts_check(&o) == SA_EUSAGE && !strcmp(sa_error(), "--system goes with --chat"));
	o.chat = 1;
	o.prompt = "a\\tb";
	o.choices = choices;
	o.n_choices = 1;
	o.stops = stops;
	o.n_stops = 2;
	CHECK_OK(sa_run_opts_check(&o));
	CHECK_OK(sa_run_request_new(&r, &o));
	CHECK(r->req.len == 3 && !memcmp(r->req.text, "a\tb", 3));
	CHECK(r->req.n_choices == 1 && r->req.choice_len[0] == 3 && !strcmp(r->req.choice[0], "x\ty"));
	CHECK(r->req.smp.n_stop == 2 && !strcmp(r->req.smp.stop[0], "\n") && r->req.smp.stop_len[1] == 1);
	CHECK(r->req.n_msg == 2 && !strcmp(r->req.msg[0].role, "system") &&
	    !strcmp(r->req.msg[1].role, "user") && r->req.msg[1].content_len == 3);
	sa_run_request_free(r);
	o.escape = 0;
	o.chat = 0;
	o.system = NULL;
	CHECK_OK(sa_run_request_new(&r, &o));
	CHECK(r->req.len == 4 && r->req.n_msg == 0 && r->req.choice_len[0] == 4);
	sa_run_request_free(r);
	o.prompt = NULL;
	o.file = "/nonexistent/prompt.txt";
	CHECK(sa_run_request_new(&r, &o) == SA_ENOINPUT && !r);
}

int
main(int argc, char **argv)
{
	sa_model *m;

	if (argc != 2) {
		fprintf(stderr, "usage: test_session MODEL.gguf\n");
		return 2;
	}
	sa_set_threads(2);
	if (sa_model_load(&m, argv[1]) != SA_OK) {
		fprintf(stderr, "%s\n", sa_error());
		return 2;
	}
	test_feed(m);
	test_score(m);
	test_generate(m);
	test_run_opts();
	sa_model_free(m);
	return t_done();
}
