/*
 * session.c - one KV cache of a model that remembers which tokens it holds,
 * so that a call sharing a prefix with the one before (a prompt scored
 * against several choices, a batch of prompts with the same few-shot
 * header) runs only the tokens after the common prefix.  Over it: feeding
 * a prompt, scoring a text after a point, ranking choices, generating.
 */
#include <stdlib.h>
#include <string.h>

#include "sa.h"

/* Tokens per forward call: many when only the cache is wanted, fewer when
 * every position's logits come back ([n][n_vocab] floats). */
#define PREFILL_CHUNK 512
#define LOGITS_CHUNK 64
/* Logits of at most this many positions are computed a token per call:
 * the matrix-vector kernels read quantized weights as they are, where a
 * batch of n > 1 pays for converting every weight.  Either way each
 * token's logits are the same bits (sa_forward). */
#define SHORT_RUN 8

struct sa_session {
	sa_model *model;
	sa_kvcache *kv;
	int n_vocab, n_ctx, add_bos;
	int *toks;            /* [n_ctx] the tokens the KV cache holds */
	int n;
	float *rows;          /* [LOGITS_CHUNK][n_vocab] */
	float *last;          /* [n_vocab] logits after the last token fed */
	size_t kv_peak;
	uint64_t side;        /* serial of the side paths the cache was made under */
	sa_timings t;
};

int
sa_session_new(sa_session **out, sa_model *m, int n_ctx, int add_bos)
{
	sa_session *s;
	int rc;

	*out = NULL;
	if (!(s = sa_calloc(1, sizeof *s)))
		return SA_EINTERNAL;
	s->model = m;
	s->n_vocab = m->cfg.n_vocab;
	s->add_bos = add_bos;
	if ((rc = sa_kvcache_new(&s->kv, m, n_ctx)) != SA_OK) {
		free(s);
		return rc;
	}
	s->n_ctx = sa_kvcache_ctx(s->kv);
	if (!(s->toks = sa_malloc((size_t)s->n_ctx * sizeof *s->toks)) ||
	    !(s->rows = sa_malloc((size_t)LOGITS_CHUNK * s->n_vocab * sizeof *s->rows)) ||
	    !(s->last = sa_malloc((size_t)s->n_vocab * sizeof *s->last))) {
		sa_session_free(s);
		return SA_EINTERNAL;
	}
	*out = s;
	return SA_OK;
}

void
sa_session_free(sa_session *s)
{
	if (!s)
		return;
	sa_kvcache_free(s->kv);
	free(s->toks);
	free(s->rows);
	free(s->last);
	free(s);
}

int
sa_session_ctx(const sa_session *s)
{
	return s->n_ctx;
}

const sa_vocab *
sa_session_vocab(const sa_session *s)
{
	return s->model->vocab;
}

/* Forget every token (after a failed run: the cache may be half written). */
static void
forget(sa_session *s)
{
	sa_kvcache_truncate(s->kv, 0);
	s->n = 0;
}

void
sa_session_reset(sa_session *s)
{
	forget(s);
	s->kv_peak = 0;
}

void
sa_session_use_sides(sa_session *s, const sa_sides *sides)
{
	uint64_t serial = sides ? sides->serial : 0;

	if (serial != s->side)
		forget(s);
	s->side = serial;
	sa_kvcache_set_side(s->kv, sides ? sides->side : NULL);
}

static void
note_peak(sa_session *s)
{
	size_t kv = sa_kvcache_kv_bytes(s->kv);

	if (kv > s->kv_peak)
		s->kv_peak = kv;
}

size_t
sa_session_kv_peak(const sa_session *s)
{
	return s->kv_peak;
}

void
sa_session_timings(const sa_session *s, sa_timings *t)
{
	*t = s->t;
}

void
sa_sessions_timings(sa_session *const *s, int n, sa_timings *t)
{
	*t = (sa_timings){ 0 };
	for (int i = 0; i < n; i++) {
		t->n_eval += s[i]->t.n_eval;
		t->t_eval += s[i]->t.t_eval;
		t->n_gen += s[i]->t.n_gen;
		t->t_gen += s[i]->t.t_gen;
	}
}

int
sa_session_tokenize(const sa_session *s, const char *text, size_t len, int **toks, int *n)
{
	return sa_tokenize(s->model->vocab, text, len, s->add_bos, toks, n);
}

int
sa_session_tokenize_special(const sa_session *s, const char *text, size_t len, int **toks, int *n)
{
	return sa_tokenize_special(s->model->vocab, text, len, s->add_bos, toks, n);
}

const sa_model *
sa_session_model(const sa_session *s)
{
	return s->model;
}

const float *
sa_session_logits(const sa_session *s)
{
	return s->last;
}

/* Run toks[a..b) after the cache; logits as sa_forward takes them. */
static int
forward(sa_session *s, const int *toks, int a, int b, float *logits, int all)
{
	double t0 = sa_now();
	int rc;

	if ((rc = sa_forward(s->kv, toks + a, b - a, logits, all)) != SA_OK) {
		forget(s);
		return rc;
	}
	memcpy(s->toks + a, toks + a, (size_t)(b - a) * sizeof *toks);
	s->n = b;
	s->t.t_eval += sa_now() - t0;
	s->t.n_eval += b - a;
	note_peak(s);
	return SA_OK;
}

typedef void (*row_fn)(void *ctx, int pos, const float *logits);

/*
 * Make the cache hold toks[0..n) and call fn with the logits of every
 * position from `from` on.  Only the tokens after the longest prefix shared
 * with the cache (and before `from`) are run again.
 */
static int
run(sa_session *s, const int *toks, int n, int from, row_fn fn, void *ctx)
{
	int keep = 0, rc = SA_OK;

	if (n > s->n_ctx)
		return sa_fail(SA_EDATA, "prompt of %d tokens exceeds the context of %d", n, s->n_ctx);
	while (keep < s->n && keep < n && s->toks[keep] == toks[keep])
		keep++;
	if (keep > from)
		keep = from;
	sa_kvcache_truncate(s->kv, keep);
	s->n = keep;
	if (from >= n - 1) {
		/* Only the last position's logits: big chunks, the last one
		 * returning [n_vocab]. */
		for (int a = keep, b; rc == SA_OK && a < n; a = b) {
			b = a + PREFILL_CHUNK < n ? a + PREFILL_CHUNK : n;
			rc = forward(s, toks, a, b, b == n ? s->rows : NULL, 0);
			if (rc == SA_OK && b == n)
				fn(ctx, n - 1, s->rows);
		}
		return rc;
	}
	for (int a = keep, b; rc == SA_OK && a < from; a = b) {
		b = a + PREFILL_CHUNK < from ? a + PREFILL_CHUNK : from;
		rc = forward(s, toks, a, b, NULL, 0);
	}
	int step = n - from <= SHORT_RUN ? 1 : LOGITS_CHUNK;
	for (int a = from, b; rc == SA_OK && a < n; a = b) {
		b = a + step < n ? a + step : n;
		rc = forward(s, toks, a, b, s->rows, 1);
		for (int p = a; rc == SA_OK && p < b; p++)
			fn(ctx, p, s->rows + (size_t)(p - a) * s->n_vocab);
	}
	return rc;
}

static void
copy_last(void *ctx, int pos, const float *logits)
{
	sa_session *s = ctx;

	memcpy(s->last, logits, (size_t)s->n_vocab * sizeof *logits);
}

int
sa_session_feed(sa_session *s, const int *toks, int n, const float **logits)
{
	int rc;

	if (n < 1)
		return sa_fail(SA_EDATA, "empty prompt (and no BOS token to start from)");
	if ((rc = run(s, toks, n, n - 1, copy_last, s)) != SA_OK)
		return rc;
	*logits = s->last;
	return SA_OK;
}

typedef struct score_acc {
	const int *toks;
	int n_vocab;
	double *sum;
} score_acc;

/* The logits at pos predict toks[pos + 1]. */
static void
score_row(void *ctx, int pos, const float *logits)
{
	score_acc *a = ctx;

	*a->sum += sa_logprob(logits, a->n_vocab, a->toks[pos + 1]);
}

int
sa_session_score(sa_session *s, const int *toks, int n, int from, double *logprob)
{
	score_acc acc = { toks, s->n_vocab, logprob };

	if (from < 0 || from >= n - 1)
		return SA_OK;
	/* The last token is only predicted, never run. */
	return run(s, toks, n - 1, from, score_row, &acc);
}

int
sa_session_choices(sa_session *s, const int *prompt, int n_prompt, int *const *seq,
    const int *n_seq, int n, double *logprob, int *count)
{
	int rc = SA_OK;

	for (int i = 0; i < n && rc == SA_OK; i++) {
		const int *t = seq[i];
		int c = 0;

		while (c < n_prompt && c < n_seq[i] && t[c] == prompt[c])
			c++;
		/* Without BOS the first token has nothing to be predicted from. */
		if (c < 1)
			c = 1;
		if (c >= n_seq[i])
			return sa_fail(SA_EDATA, "choice %d adds no tokens to the prompt", i);
		if (n_seq[i] - 1 > s->n_ctx)
			return sa_fail(SA_EDATA, "prompt and choice %d: %d tokens exceed the context of %d",
			    i, n_seq[i], s->n_ctx);
		logprob[i] = 0;
		count[i] = n_seq[i] - c;
		rc = sa_session_score(s, t, n_seq[i], c - 1, &logprob[i]);
	}
	return rc;
}

int
sa_session_gen_step(sa_session *s, sa_sampler *smp, long i, long max_new, sa_token_fn fn,
    void *ctx, int *next)
{
	double t0 = sa_now();
	int tok = sa_sample_after(smp, s->last, s->n_vocab, s->toks, s->n), stop = 0, rc;

	*next = -1;
	if (tok < 0)
		return sa_fail(SA_EINTERNAL, "out of memory");
	if (sa_vocab_is_eog(s->model->vocab, tok))
		return SA_OK;
	if ((rc = fn(ctx, tok, &stop)) != SA_OK)
		return rc;
	s->t.n_gen++;
	s->t.t_gen += sa_now() - t0;
	/* The last token is handed over, not run: nothing needs its logits. */
	if (!stop && (max_new < 0 || i + 1 < max_new) && s->n < s->n_ctx)
		*next = tok;
	return SA_OK;
}

/* tok has run after the cache: it holds it now. */
static void
gen_ran(sa_session *s, int tok, double t)
{
	s->toks[s->n++] = tok;
	note_peak(s);
	s->t.t_gen += t;
}

int
sa_sessions_decode(sa_session *const *s, const int *toks, int n)
{
	sa_kvcache *kv[16];
	double t0 = sa_now(), t;
	int rc;

	if (n < 1 || n > 16)
		return sa_fail(SA_EUSAGE, "%d sessions: one pass decodes 1 to 16", n);
	for (int i = 0; i < n; i++)
		kv[i] = s[i]->kv;
	if ((rc = sa_forward_rows(kv, toks, n, s[0]->rows)) != SA_OK)
		return rc;
	t = (sa_now() - t0) / n;
	for (int i = 0; i < n; i++) {
		memcpy(s[i]->last, s[0]->rows + (size_t)i * s[0]->n_vocab,
		    (size_t)s[0]->n_vocab * sizeof *s[i]->last);
		gen_ran(s[i], toks[i], t);
	}
	return SA_OK;
}

int
sa_session_gen_start(sa_session *s, const int *toks, int n, long max_new)
{
	const float *logits;

	if (n < 1)
		return sa_fail(SA_EDATA, "empty prompt (and no BOS token to start from)");
	if (n > s->n_ctx)
		return sa_fail(SA_EDATA, "prompt of %d tokens exceeds the context of %d", n, s->n_ctx);
	return max_new == 0 ? SA_OK : sa_session_feed(s, toks, n, &logits);
}

int
sa_session_generate(sa_session *s, const int *toks, int n, sa_sampler *smp, long max_new,
    sa_token_fn fn, void *ctx)
{
	int rc, tok;

	if ((rc = sa_session_gen_start(s, toks, n, max_new)) != SA_OK || max_new == 0)
		return rc;
	for (long i = 0; max_new < 0 || i < max_new; i++) {
		double t0;

		if ((rc = sa_session_gen_step(s, smp, i, max_new, fn, ctx, &tok)) != SA_OK || tok < 0)
			return rc;
		t0 = sa_now();
		if ((rc = sa_forward(s->kv, &tok, 1, s->last, 0)) != SA_OK)
			return rc;
		gen_ran(s, tok, sa_now() - t0);
	}
	return SA_OK;
}
