/*
 * evaluate.c - sa-eval(1)'s protocol over eval.c's tasks, prompts and
 * session: accuracy of zero-shot, in-context learning and StreamAdapter
 * on tasks, with the per-query cost of each; perplexity of held-out text
 * with and without its preceding context; recall of random mappings as the
 * number of pairs grows.  Each query's record goes to the caller's hook as
 * it is answered; the caller prints.
 *
 * Every method sees the same tokens: a demonstration is tokenized on its
 * own, an ICL prompt is BOS + demonstrations + query, and a delta is
 * encoded from the same demonstrations packed into segments of the
 * model's context, exactly as sa-encode packs them.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sa.h"

/* ------------------------------------------------------------- options */

void
sa_eval_opts_default(sa_eval_opts *o)
{
	static const int pairs[] = { 1, 2, 4, 8, 16, 32, 64, 128, 256 };

	*o = (sa_eval_opts){
		.split = "test", .k = 16, .max_labels = 32, .max_new = 32, .segment = 128,
		.many = 8, .pairs = pairs, .n_pairs = sizeof pairs / sizeof pairs[0],
		.repeat = 1, .episodes = 4, .seed = 1, .scale = 1,
	};
}

/* 1 if name[0..n) is an entry of the comma-separated list. */
static int
in_list(const char *list, const char *name, size_t n)
{
	for (const char *p = list; p && *p;) {
		const char *c = strchr(p, ',');
		size_t l = c ? (size_t)(c - p) : strlen(p);
		if (l == n && memcmp(p, name, n) == 0)
			return 1;
		p = c ? c + 1 : NULL;
	}
	return 0;
}

/* The entries of a comma-separated list, one by one: NULL at the end. */
static const char *
list_next(const char **p, size_t *n)
{
	const char *s = *p, *c;

	while (s && *s == ',')
		s++;
	if (!s || !*s)
		return NULL;
	c = strchr(s, ',');
	*n = c ? (size_t)(c - s) : strlen(s);
	*p = c;
	return s;
}

/* A task is seen or unseen, not both; new label words need a pool. */
int
sa_eval_opts_check(const sa_eval_opts *o)
{
	const char *p = o->seen, *s;
	size_t n;

	if (o->rename == SA_RENAME_POOL && !o->pool)
		return sa_fail(SA_EUSAGE, "--rename pool takes its words from --pool DIR");

	while ((s = list_next(&p, &n)))
		if (in_list(o->unseen, s, n))
			return sa_fail(SA_EUSAGE, "task '%.*s' is in both --seen and --unseen", (int)n, s);
	return SA_OK;
}

/* ---------------------------------------------------------------- shared */

/* What every mode runs with. */
typedef struct run {
	sa_model *m;
	const sa_eval_opts *o;
	const sa_eval_hooks *h;
	sa_eval_table *t;
	sa_session *s;             /* every call runs its prompt from position 0 */
	int *seq;                  /* [n_ctx + 1] scratch: prompt and candidate */
	int n_ctx;
	int bos, nb;               /* BOS, and 1 if the model wants it (else bos -1) */
	sa_toks prompt;               /* scratch for answer() */
} run;

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void __attribute__((format(printf, 3, 4)))
note(const run *r, int verbose, const char *fmt, ...)
{
	va_list ap;
	char *msg;
	int n;

	if (!r->h->note)
		return;
	va_start(ap, fmt);
	n = vasprintf(&msg, fmt, ap);
	va_end(ap);
	if (n >= 0) {
		r->h->note(r->h->ctx, verbose, msg);
		free(msg);
	}
}

static void
emit(const run *r, const sa_eval_record *rec)
{
	if (r->h->record)
		r->h->record(r->h->ctx, rec);
}

static void
row_done(const run *r, int i)
{
	if (r->h->row)
		r->h->row(r->h->ctx, r->t, i);
}

void
sa_eval_table_free(sa_eval_table *t)
{
	if (!t)
		return;
	for (int i = 0; t->method && i < t->n_methods; i++)
		free(t->method[i]);
	for (int i = 0; t->row && i < t->n_rows; i++) {
		free(t->row[i].name);
		free(t->row[i].score);
	}
	free(t->method);
	free(t->cost);
	free(t->row);
	free(t);
}

/* The run's session and a table of n_rows rows for these methods (keys
 * NULL: the caller names them). */
static int
run_open(run *r, sa_model *m, const sa_eval_opts *o, const sa_eval_hooks *h,
    const char *const *keys, int n_methods, int n_rows)
{
	static const sa_eval_hooks none;
	sa_eval_table *t;
	int rc;

	*r = (run){ .m = m, .o = o, .h = h ? h : &none };
	if (!(t = r->t = sa_calloc(1, sizeof *t)) ||
	    !(t->method = sa_calloc((size_t)n_methods, sizeof *t->method)) ||
	    !(t->cost = sa_calloc((size_t)n_methods, sizeof *t->cost)) ||
	    !(t->row = sa_calloc((size_t)n_rows, sizeof *t->row)))
		return SA_EINTERNAL;
	t->n_methods = n_methods;
	t->n_rows = n_rows;
	for (int i = 0; keys && i < n_methods; i++)
		if (!(t->method[i] = strdup(keys[i])))
			return sa_fail(SA_EINTERNAL, "out of memory");
	for (int i = 0; i < n_rows; i++) {
		if (!(t->row[i].score = sa_calloc((size_t)n_methods, sizeof(double))))
			return SA_EINTERNAL;
		t->row[i].set = -1;
	}
	if ((rc = sa_session_new(&r->s, m, 0, 0)) != SA_OK)
		return rc;
	r->n_ctx = sa_session_ctx(r->s);
	if (!(r->seq = sa_malloc(((size_t)r->n_ctx + 1) * sizeof *r->seq)))
		return SA_EINTERNAL;
	r->nb = sa_vocab_add_bos(m->vocab) != 0;
	r->bos = r->nb ? sa_vocab_bos(m->vocab) : -1;
	return SA_OK;
}

/* End a run: the table to *out if all went well, else dropped. */
static int
run_close(run *r, int rc, sa_eval_table **out)
{
	sa_model_reset_weights(r->m);
	sa_session_free(r->s);
	free(r->seq);
	free(r->prompt.t);
	if (rc == SA_OK)
		*out = r->t;
	else
		sa_eval_table_free(r->t);
	return rc;
}

static void
cost_add(sa_eval_cost *c, double t, size_t kv, int prompt)
{
	c->time += t;
	c->kv += (double)kv;
	c->prompt += prompt;
	c->n++;
}

static double
accuracy(long right, long n)
{
	return n ? 100.0 * right / n : NAN;
}

/* The stream of name under seed (and salt): a task draws the same whatever
 * else runs. */
static sa_rng
rng_for(uint64_t seed, const char *name, uint64_t salt)
{
	sa_rng r = { sa_hash64(SA_HASH64_INIT, name, strlen(name)) ^ seed * 0x9e3779b97f4a7c15ULL ^ salt };

	sa_rng_next(&r);
	return r;
}

/* idx[0..n) := a random permutation of 0..n-1. */
static void
shuffle(sa_rng *r, int *idx, int n)
{
	for (int i = 0; i < n; i++)
		idx[i] = i;
	for (int i = n - 1; i > 0; i--) {
		int j = (int)sa_rng_below(r, i + 1), t = idx[i];
		idx[i] = idx[j];
		idx[j] = t;
	}
}

/* s without the blanks around it: its start, and its length in *n. */
static const char *
trimmed(const char *s, size_t *n)
{
	size_t len;

	while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n')
		s++;
	len = strlen(s);
	while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t' || s[len - 1] == '\r' ||
	    s[len - 1] == '\n'))
		len--;
	*n = len;
	return s;
}

/* Feed segments to a new encoder and merge the delta into the model;
 * *secs: the seconds it took. */
static int
merge_delta(run *r, const sa_adapter *a, const sa_segment *segs, int n_segs, double *secs)
{
	double t0 = now();
	sa_encoder *enc;
	int rc;

	sa_model_reset_weights(r->m);
	if ((rc = sa_encoder_new(&enc, r->m, a, NULL)) != SA_OK)
		return rc;
	if ((rc = sa_encoder_feed_segments(enc, segs, n_segs, NULL, NULL, NULL)) == SA_OK)
		rc = sa_delta_apply(r->m, a, sa_encoder_delta(enc), (float)r->o->scale, 1);
	sa_encoder_free(enc);
	*secs = now() - t0;
	return rc;
}

/*
 * logprob[i] = log p(cand[i] | prompt), summed over cand[i]'s tokens.  The
 * prompt runs once, from position 0; its last logits predict each
 * candidate's first token, and the cache is cut back to it for the rest.
 */
static int
score_answers(run *r, const int *prompt, int n_prompt, int *const *cand, const int *n_cand,
    int n, double *logprob)
{
	int V = sa_vocab_size(r->m->vocab), rc;
	const float *last;

	sa_session_reset(r->s);
	if ((rc = sa_session_feed(r->s, prompt, n_prompt, &last)) != SA_OK)
		return rc;
	for (int i = 0; i < n; i++) {
		/* the last token is only predicted, never run */
		if (n_prompt + n_cand[i] - 1 > r->n_ctx)
			return sa_fail(SA_EDATA, "prompt of %d tokens and answer of %d exceed the context of %d",
			    n_prompt, n_cand[i], r->n_ctx);
		memcpy(r->seq, prompt, (size_t)n_prompt * sizeof *r->seq);
		memcpy(r->seq + n_prompt, cand[i], (size_t)n_cand[i] * sizeof *r->seq);
		logprob[i] = sa_logprob(last, V, cand[i][0]);
		if ((rc = sa_session_score(r->s, r->seq, n_prompt + n_cand[i], n_prompt,
		    &logprob[i])) != SA_OK)
			return rc;
	}
	return SA_OK;
}

/* The text of greedy decoding, up to the first newline. */
typedef struct line {
	const sa_vocab *v;
	char *s;
	size_t n, cap;
} line;

static int
line_put(void *ctx, int tok, int *stop)
{
	line *l = ctx;
	char piece[256], *nl;
	int np = sa_token_to_piece(l->v, tok, piece, sizeof piece);

	if (np > (int)sizeof piece)
		np = sizeof piece;
	if ((nl = memchr(piece, '\n', (size_t)np))) {
		np = (int)(nl - piece);
		*stop = 1;
	}
	if (l->n + (size_t)np + 1 > l->cap) {
		size_t cap = (l->n + (size_t)np + 1) * 2;
		char *p = realloc(l->s, cap);
		if (!p)
			return sa_fail(SA_EINTERNAL, "out of memory");
		l->s = p;
		l->cap = cap;
	}
	memcpy(l->s + l->n, piece, (size_t)np);
	l->n += (size_t)np;
	return SA_OK;
}

/*
 * Greedy decoding (argmax, lowest id on ties) after prompt, run from
 * position 0, until a newline, an end-of-generation token, max_new tokens
 * or the end of the context: *text (malloc'd) the text before the newline.
 */
static int
generate_line(run *r, const int *prompt, int n_prompt, int max_new, char **text, size_t *len)
{
	line l = { r->m->vocab, NULL, 0, 0 };
	sa_sampler greedy;
	int rc;

	*text = NULL;
	*len = 0;
	sa_session_reset(r->s);
	sa_sampler_init(&greedy, 0, 0, 1, 0, 0);
	if ((rc = sa_session_generate(r->s, prompt, n_prompt, &greedy, max_new, line_put, &l)) != SA_OK) {
		free(l.s);
		return rc;
	}
	if (!l.s && !(l.s = sa_malloc(1)))
		return SA_EINTERNAL;
	l.s[l.n] = 0;
	*text = l.s;
	*len = l.n;
	return SA_OK;
}

/* The demonstrations ex[idx[0..n)] in segments as sa-encode lays them out
 * (records SA_RECORDS_*); packed, they are ICL's prompt. */
static int
segment_demos(run *r, const char *name, const sa_example *ex, const int *idx, int n,
    int records, sa_segment **segs, int *n_segs)
{
	sa_demos *d;
	int rc;

	*segs = NULL;
	*n_segs = 0;
	if ((rc = sa_demos_from_examples(&d, name, ex, idx, n)) != SA_OK)
		return rc;
	rc = sa_demos_segment(d, r->m->vocab, r->n_ctx, records, segs, n_segs);
	sa_demos_free(d);
	return rc;
}

/* ---------------------------------------------------------------- queries */

/* One query, tokenized once for every method. */
typedef struct query {
	int index;             /* row of the split's file (pair of a mapping), from 0 */
	sa_qa qa;              /* candidates: the task's labels, or the gold label */
	int n_prompt;          /* query tokens in the prompt */
	int need;              /* tokens it needs after the prefix */
} query;

static void
queries_free(query *qs, int n)
{
	for (int i = 0; qs && i < n; i++)
		sa_qa_free(&qs[i].qa);
	free(qs);
}

/* Build q for example e: candidates labels[0..n_labels) (generation: the
 * gold label alone); and the tokens the cache holds at most for it after
 * the prefix: its prompt, then the longest candidate but its last token,
 * which is predicted, never run. */
static int
query_build(run *r, query *q, int kind, const sa_example *e, int index,
    char *const *labels, int n_labels, int in_text)
{
	int (*build)(sa_qa *, const sa_vocab *, const char *, const char *const *, int) =
	    in_text ? sa_qa_build_in_text : sa_qa_build;
	int longest = 0, rc;

	if (kind == SA_KIND_CLASS)
		rc = build(&q->qa, r->m->vocab, e->input, (const char *const *)labels, n_labels);
	else
		rc = build(&q->qa, r->m->vocab, e->input, (const char *const *)&e->label, 1);
	if (rc != SA_OK)
		return rc;
	/* generation prompts end with the whole query, whatever the gold is */
	q->n_prompt = kind == SA_KIND_CLASS ? q->qa.n_prefix : q->qa.n_query;
	q->index = index;
	for (int c = 0; c < q->qa.n_cand; c++)
		if (q->qa.n_answer[c] > longest)
			longest = q->qa.n_answer[c];
	q->need = q->qa.n_prefix + longest - 1;
	if (q->need < q->n_prompt)
		q->need = q->n_prompt;
	return SA_OK;
}

/*
 * Answer query q of t after prefix (BOS, demonstrations): the chosen label
 * or the generated line in *pred (malloc'd); *right 1 if it is right.
 */
static int
answer(run *r, const sa_task *t, int kind, const query *q, const int *prefix, int n_prefix,
    char **pred, int *right, double *secs)
{
	const char *gold = t->eval[q->index].label, *s;
	double t0 = now();
	size_t n, gn;
	int rc;

	*pred = NULL;
	r->prompt.n = 0;
	if ((rc = sa_toks_push(&r->prompt, prefix, n_prefix)) != SA_OK ||
	    (rc = sa_toks_push(&r->prompt, q->qa.query, q->n_prompt)) != SA_OK)
		return rc;
	if (kind == SA_KIND_CLASS) {
		double *lp = sa_calloc((size_t)q->qa.n_cand, sizeof *lp);
		int best = 0;
		if (!lp)
			return SA_EINTERNAL;
		rc = score_answers(r, r->prompt.t, r->prompt.n, q->qa.answer,
		    q->qa.n_answer, q->qa.n_cand, lp);
		for (int i = 1; rc == SA_OK && i < q->qa.n_cand; i++)
			if (lp[i] > lp[best])
				best = i;
		*secs = now() - t0;
		free(lp);
		if (rc != SA_OK)
			return rc;
		if (!(*pred = strdup(t->labels[best])))
			return sa_fail(SA_EINTERNAL, "out of memory");
		*right = strcmp(*pred, gold) == 0;
	} else {
		char *text;
		if ((rc = generate_line(r, r->prompt.t, r->prompt.n, r->o->max_new, &text,
		    &n)) != SA_OK)
			return rc;
		*secs = now() - t0;
		s = trimmed(text, &n);
		*pred = strndup(s, n);
		free(text);
		if (!*pred)
			return sa_fail(SA_EINTERNAL, "out of memory");
		s = trimmed(gold, &gn);
		*right = gn == n && memcmp(s, *pred, n) == 0;
	}
	return SA_OK;
}

/*
 * The queries qs[0..nq) of t after prefix as method m: the cost into the
 * table, each record to the hook (rec holds what the caller fills in:
 * task, k, pairs, episode); *right counts the right answers.
 */
static int
ask(run *r, const sa_task *t, int kind, int m, const query *qs, int nq, const int *prefix,
    int n_prefix, sa_eval_record *rec, long *right)
{
	for (int i = 0; i < nq; i++) {
		const sa_example *e = &t->eval[qs[i].index];
		char *pred;
		double secs;
		size_t kv;
		int ok = 0, rc;

		if ((rc = answer(r, t, kind, &qs[i], prefix, n_prefix, &pred, &ok, &secs)) != SA_OK)
			return rc;
		kv = sa_session_kv_peak(r->s);
		*right += ok;
		cost_add(&r->t->cost[m], secs, kv, n_prefix + qs[i].n_prompt);
		rec->method = r->t->method[m];
		rec->m = m;
		rec->index = qs[i].index;
		rec->i = i;
		rec->n = nq;
		rec->input = e->input;
		rec->gold = e->label;
		rec->prediction = pred;
		rec->correct = ok;
		rec->time = secs;
		rec->kv_bytes = kv;
		emit(r, rec);
		free(pred);
	}
	return SA_OK;
}

/* ----------------------------------------------------------------- tasks */

enum { M_ZS, M_ICL, M_SA, M_SAK, N_METHODS };

/* What a task's run needs, settled for every task before the first query. */
typedef struct plan {
	query *qs;
	int max_need;              /* tokens the longest query needs after BOS */
	int *demo;                 /* train rows in the seed's order: k and K first ones */
} plan;

/* Tokens of e's record alone, as the segments hold it (lengths decide what fits). */
static int
record_len(run *r, const sa_example *e, int *len)
{
	char *s;
	int *t, rc;

	if (asprintf(&s, "%s -> %s\n", e->input, e->label) < 0)
		return sa_fail(SA_EINTERNAL, "out of memory");
	rc = sa_tokenize(r->m->vocab, s, strlen(s), 0, &t, len);
	free(s);
	if (rc == SA_OK)
		free(t);
	return rc;
}

/* The queries of t, a fixed subset under limit (the seed draws
 * demonstrations only), in file order; those longer than the context left
 * out.  Into p and row. */
static int
plan_queries(run *r, const sa_task *t, plan *p, sa_eval_row *row)
{
	sa_rng qr = rng_for(0, t->name, 0x5155455259ULL);
	int *order = sa_calloc((size_t)t->n_eval, sizeof *order);
	int nq = t->n_eval, n_ok = 0, rc = SA_OK;

	if (!order || !(p->qs = sa_calloc((size_t)nq, sizeof *p->qs))) {
		free(order);
		return SA_EINTERNAL;
	}
	shuffle(&qr, order, t->n_eval);
	if (r->o->limit && r->o->limit < nq) {
		nq = r->o->limit;
		for (int i = 1; i < nq; i++)
			for (int j = i; j > 0 && order[j - 1] > order[j]; j--) {
				int x = order[j];
				order[j] = order[j - 1];
				order[j - 1] = x;
			}
	} else {
		for (int i = 0; i < nq; i++)
			order[i] = i;
	}
	for (int i = 0; i < nq; i++) {
		query *q = &p->qs[n_ok];
		if ((rc = query_build(r, q, row->kind, &t->eval[order[i]], order[i], t->labels,
		    t->n_labels, 0)) != SA_OK)
			break;
		if (r->nb + q->need > r->n_ctx) {
			sa_qa_free(&q->qa);
			continue;
		}
		if (q->need > p->max_need)
			p->max_need = q->need;
		n_ok++;
	}
	free(order);
	row->n = n_ok;
	if (rc != SA_OK)
		return rc;
	if (n_ok < nq)
		note(r, 0, "%s: %d quer%s longer than the context of %d left out", t->name, nq - n_ok,
		    nq - n_ok == 1 ? "y" : "ies", r->n_ctx);
	if (!n_ok)
		return sa_fail(SA_EDATA, "%s: no query fits the context of %d", t->dir, r->n_ctx);
	return SA_OK;
}

/* The demonstrations of t: the seed's permutation of train, leaving out
 * records that alone would not fit a segment; k and K as they can be. */
static int
plan_demos(run *r, const sa_task *t, plan *p, sa_eval_row *row)
{
	sa_rng dr = rng_for(r->o->seed, t->name, 0);
	int *perm = sa_calloc((size_t)t->n_train, sizeof *perm);
	int k = r->o->k, K = r->o->K, n_demos = 0, n_fit = 0, sum = r->nb, len, rc = SA_OK;

	if (!perm || !(p->demo = sa_calloc((size_t)t->n_train, sizeof *p->demo))) {
		free(perm);
		return SA_EINTERNAL;
	}
	shuffle(&dr, perm, t->n_train);
	for (int i = 0; i < t->n_train; i++) {
		/* enough: k, K and (for K's default) the first one that overflows */
		if (n_demos >= k && (K ? n_demos >= K : sum + p->max_need > r->n_ctx &&
		    n_demos >= 4 * n_fit))
			break;
		if ((rc = record_len(r, &t->train[perm[i]], &len)) != SA_OK)
			break;
		if (r->nb + len > r->n_ctx)
			continue;
		p->demo[n_demos++] = perm[i];
		sum += len;
		if (sum + p->max_need <= r->n_ctx)
			n_fit = n_demos;
	}
	free(perm);
	if (rc != SA_OK)
		return rc;
	if (!K)
		K = 4 * (n_fit > 0 ? n_fit : 1);
	row->k = k < n_demos ? k : n_demos;
	row->K = K < n_demos ? K : n_demos;
	if (!row->k)
		return sa_fail(SA_EDATA, "%s/train.tsv: no demonstration fits the context of %d",
		    t->dir, r->n_ctx);
	return SA_OK;
}

/* Every method on t's planned queries: the row's scores. */
static int
run_task(run *r, const sa_adapter *a, const sa_task *t, const plan *p, sa_eval_row *row)
{
	sa_eval_record rec = { .task = t->name };
	sa_segment *segs;
	int nq = row->n, n_segs, icl, rc;
	long right = 0;
	double secs;

	/* zero-shot: BOS and the query */
	sa_model_reset_weights(r->m);
	if ((rc = ask(r, t, row->kind, M_ZS, p->qs, nq, &r->bos, r->nb, &rec, &right)) != SA_OK)
		return rc;
	row->score[M_ZS] = accuracy(right, nq);

	/* ICL: the k demonstrations' own tokens, as the encoder sees them */
	if ((rc = segment_demos(r, t->name, t->train, p->demo, row->k, SA_RECORDS_PACKED, &segs,
	    &n_segs)) != SA_OK)
		return rc;
	icl = n_segs == 1 && segs[0].n + p->max_need <= r->n_ctx;
	row->score[M_ICL] = NAN;
	rec.k = row->k;
	right = 0;
	if (icl && (rc = ask(r, t, row->kind, M_ICL, p->qs, nq, segs[0].toks, segs[0].n, &rec,
	    &right)) == SA_OK)
		row->score[M_ICL] = accuracy(right, nq);
	if (rc == SA_OK)
		note(r, 1, "%s: %d queries (%s); k=%d: %d segment%s of %d tokens first%s; K=%d",
		    t->name, nq, row->kind == SA_KIND_CLASS ? "classification" : "generation", row->k,
		    n_segs, n_segs == 1 ? "" : "s", segs[0].n, icl ? "" : ", ICL n/a", row->K);
	sa_segments_free(segs, n_segs);
	if (rc != SA_OK)
		return rc;

	/* StreamAdapter: deltas of the same k, and of K */
	for (int m = M_SA; m <= M_SAK; m++) {
		rec.k = m == M_SA ? row->k : row->K;
		right = 0;
		if ((rc = segment_demos(r, t->name, t->train, p->demo, rec.k, a->records, &segs,
		    &n_segs)) != SA_OK)
			return rc;
		rc = merge_delta(r, a, segs, n_segs, &secs);
		sa_segments_free(segs, n_segs);
		if (rc != SA_OK)
			return rc;
		r->t->cost[m].enc_time += secs;
		r->t->cost[m].n_enc++;
		note(r, 1, "%s: delta of %d demonstrations in %d segment%s, %.1f ms", t->name, rec.k,
		    n_segs, n_segs == 1 ? "" : "s", secs * 1e3);
		if ((rc = ask(r, t, row->kind, m, p->qs, nq, &r->bos, r->nb, &rec, &right)) != SA_OK)
			return rc;
		row->score[m] = accuracy(right, nq);
		sa_model_reset_weights(r->m);
	}
	return SA_OK;
}

/* Every name of a --seen/--unseen list must be one of the tasks. */
static int
check_list(const char *opt_name, const char *list, sa_task *const *tasks, int n)
{
	const char *p = list, *s;
	size_t len;

	while ((s = list_next(&p, &len))) {
		int found = 0;
		for (int i = 0; i < n && !found; i++)
			found = strlen(tasks[i]->name) == len && memcmp(tasks[i]->name, s, len) == 0;
		if (!found)
			return sa_fail(SA_EUSAGE, "%s: no --task named '%.*s'", opt_name, (int)len, s);
	}
	return SA_OK;
}

/* TASKS.tsv in the directory above a task, if there is one (malloc'd). */
static char *
default_split_file(const char *task_dir)
{
	size_t n = strlen(task_dir);
	char *path;

	while (n > 1 && task_dir[n - 1] == '/')
		n--;
	while (n > 0 && task_dir[n - 1] != '/')
		n--;
	if (asprintf(&path, "%.*sTASKS.tsv", (int)n, task_dir) < 0)
		return NULL;
	if (access(path, R_OK) == 0)
		return path;
	free(path);
	return NULL;
}

/* The entries of a pool file: its lines without blanks around them, those
 * left empty skipped. */
typedef struct pool { char **w; int n; } pool;

static void
pool_free(pool *p)
{
	for (int i = 0; i < p->n; i++)
		free(p->w[i]);
	free(p->w);
}

static int
pool_read(pool *p, const char *dir, const char *file)
{
	char *path, *data, *line, *save = NULL;
	size_t len;
	int rc;

	*p = (pool){ 0 };
	if (asprintf(&path, "%s/%s", dir, file) < 0)
		return sa_fail(SA_EINTERNAL, "out of memory");
	if ((rc = sa_file_read(path, &data, &len)) != SA_OK) {
		free(path);
		return rc;
	}
	for (line = strtok_r(data, "\n", &save); line && rc == SA_OK;
	    line = strtok_r(NULL, "\n", &save)) {
		const char *w = trimmed(line, &len);
		char **q;
		if (!len)
			continue;
		if (!(q = realloc(p->w, (size_t)(p->n + 1) * sizeof *q)) || !(q[p->n] = strndup(w, len))) {
			if (q)
				p->w = q;
			rc = sa_fail(SA_EINTERNAL, "out of memory");
			break;
		}
		p->w = q;
		p->n++;
	}
	if (rc == SA_OK && p->n < 1)
		rc = sa_fail(SA_EDATA, "%s: no entries", path);
	free(data);
	free(path);
	return rc;
}

/* The classes of t: those the split file lists, else train's (as loaded). */
static int
task_labels(sa_task *t, const sa_split_entry *e)
{
	char **l;

	if (!e->n_labels)
		return SA_OK;
	if (!(l = sa_calloc((size_t)e->n_labels, sizeof *l)))
		return SA_EINTERNAL;
	for (int i = 0; i < e->n_labels; i++)
		if (!(l[i] = strdup(e->labels[i]))) {
			while (i--)
				free(l[i]);
			free(l);
			return sa_fail(SA_EINTERNAL, "out of memory");
		}
	for (int i = 0; i < t->n_labels; i++)
		free(t->labels[i]);
	free(t->labels);
	t->labels = l;
	t->n_labels = e->n_labels;
	return SA_OK;
}

/* A query whose label is none of the classes is never answered right. */
static void
check_labels(run *r, const sa_task *t, int listed)
{
	int missing = 0;

	for (int i = 0; i < t->n_eval; i++) {
		int j = 0;
		while (j < t->n_labels && strcmp(t->labels[j], t->eval[i].label) != 0)
			j++;
		missing += j == t->n_labels;
	}
	if (missing)
		note(r, 0, "%s: %d %s quer%s with a label %s: never answered right%s", t->name, missing,
		    r->o->split, missing == 1 ? "y" : "ies", listed ? "the split file does not list"
		    : "train.tsv lacks", listed ? "" : " (a split file can list the labels)");
}

/*
 * Give a classification task other label words, in its demonstrations,
 * its queries and its classes alike, so that only the context can tell
 * which word means what: each class the next one's word (SA_RENAME_SWAP:
 * two classes trade places), or words of the pool's labels.txt drawn
 * for the task (SA_RENAME_POOL).
 */
static int
rename_labels(run *r, sa_task *t)
{
	int n = t->n_labels, rc = SA_OK;
	char **to = sa_calloc((size_t)n, sizeof *to);
	pool words = { 0 };

	if (!to)
		return SA_EINTERNAL;
	if (r->o->rename == SA_RENAME_POOL) {
		sa_rng g = rng_for(r->o->seed, t->name, 7);
		int *perm;
		if ((rc = pool_read(&words, r->o->pool, "labels.txt")) != SA_OK)
			goto done;
		if (words.n < 2 * n) {
			rc = sa_fail(SA_EDATA, "%s/labels.txt: %d words, %s has %d classes to rename",
			    r->o->pool, words.n, t->name, n);
			goto done;
		}
		if (!(perm = sa_malloc((size_t)words.n * sizeof *perm))) {
			rc = SA_EINTERNAL;
			goto done;
		}
		shuffle(&g, perm, words.n);
		/* words that are none of the task's own labels */
		for (int i = 0, j = 0; i < n; j++) {
			int clash = 0;
			for (int k = 0; k < n; k++)
				clash |= strcmp(words.w[perm[j]], t->labels[k]) == 0;
			if (!clash && !(to[i++] = strdup(words.w[perm[j]])))
				rc = sa_fail(SA_EINTERNAL, "out of memory");
		}
		free(perm);
	} else {
		for (int i = 0; i < n; i++)
			if (!(to[i] = strdup(t->labels[(i + 1) % n])))
				rc = sa_fail(SA_EINTERNAL, "out of memory");
	}
	for (int s = 0; s < 2 && rc == SA_OK; s++) {
		sa_example *ex = s ? t->eval : t->train;
		for (int i = 0; i < (s ? t->n_eval : t->n_train) && rc == SA_OK; i++)
			for (int k = 0; k < n; k++) {
				char *w;
				if (strcmp(ex[i].label, t->labels[k]) != 0)
					continue;
				if (!(w = strdup(to[k])))
					rc = sa_fail(SA_EINTERNAL, "out of memory");
				else {
					free(ex[i].label);
					ex[i].label = w;
				}
				break;
			}
	}
	for (int k = 0; k < n && rc == SA_OK; k++) {
		free(t->labels[k]);
		t->labels[k] = to[k];
		to[k] = NULL;
	}
done:
	for (int k = 0; k < n; k++)
		free(to[k]);
	free(to);
	pool_free(&words);
	return rc;
}

/* Set, kind and classes of t from the split file and the lists; its plan. */
static int
task_setup(run *r, sa_task *t, const sa_split_entry *split, int n_split, plan *p,
    sa_eval_row *row)
{
	const sa_split_entry *e = NULL;
	int kind = SA_KIND_AUTO, rc;

	for (int j = 0; j < n_split; j++)
		if (strcmp(split[j].task, t->name) == 0)
			e = &split[j];
	if (e) {
		row->set = e->seen;
		kind = e->kind;
		if ((rc = task_labels(t, e)) != SA_OK)
			return rc;
	}
	if (in_list(r->o->seen, t->name, strlen(t->name)))
		row->set = 1;
	if (in_list(r->o->unseen, t->name, strlen(t->name)))
		row->set = 0;
	if (kind == SA_KIND_AUTO)
		/* one label leaves nothing to choose between */
		kind = t->n_labels >= 2 && t->n_labels <= r->o->max_labels ? SA_KIND_CLASS : SA_KIND_GEN;
	if (kind == SA_KIND_CLASS)
		check_labels(r, t, e && e->n_labels);
	if (kind == SA_KIND_CLASS && r->o->rename && (rc = rename_labels(r, t)) != SA_OK)
		return rc;
	row->kind = kind;
	if (!(row->name = strdup(t->name)))
		return sa_fail(SA_EINTERNAL, "out of memory");
	if ((rc = plan_queries(r, t, p, row)) != SA_OK)
		return rc;
	return plan_demos(r, t, p, row);
}

int
sa_eval_tasks(sa_eval_table **out, sa_model *m, const sa_adapter *a, char *const *dirs, int n,
    const sa_eval_opts *o, const sa_eval_hooks *h)
{
	static const char *const keys[N_METHODS] = { "zero-shot", "icl", "sa", "sa-many" };
	const char *split_file = o->split_file;
	char *found = NULL;
	sa_split_entry *split = NULL;
	sa_task **tasks = NULL;
	plan *plans = NULL;
	int n_split = 0, rc;
	run r;

	*out = NULL;
	if ((rc = sa_eval_opts_check(o)) != SA_OK)
		return rc;
	if ((rc = run_open(&r, m, o, h, keys, N_METHODS, n)) != SA_OK)
		goto done;
	if (!(tasks = sa_calloc((size_t)n, sizeof *tasks)) ||
	    !(plans = sa_calloc((size_t)n, sizeof *plans))) {
		rc = SA_EINTERNAL;
		goto done;
	}
	if (!split_file && !o->seen && !o->unseen && n > 0)
		split_file = found = default_split_file(dirs[0]);
	if (split_file && (rc = sa_split_read(split_file, &split, &n_split)) != SA_OK)
		goto done;
	/* every input is checked before the first query runs */
	for (int i = 0; i < n; i++)
		if ((rc = sa_task_load(&tasks[i], dirs[i], o->split)) != SA_OK)
			goto done;
	if ((rc = check_list("--seen", o->seen, tasks, n)) != SA_OK ||
	    (rc = check_list("--unseen", o->unseen, tasks, n)) != SA_OK)
		goto done;
	for (int i = 0; i < n; i++)
		if ((rc = task_setup(&r, tasks[i], split, n_split, &plans[i], &r.t->row[i])) != SA_OK)
			goto done;
	if (r.h->start)
		r.h->start(r.h->ctx, r.t);
	for (int i = 0; i < n; i++) {
		if ((rc = run_task(&r, a, tasks[i], &plans[i], &r.t->row[i])) != SA_OK)
			goto done;
		row_done(&r, i);
	}
done:
	for (int i = 0; i < n && tasks; i++) {
		sa_task_free(tasks[i]);
		if (plans) {
			queries_free(plans[i].qs, r.t->row[i].n);
			free(plans[i].demo);
		}
	}
	free(tasks);
	free(plans);
	free(found);
	sa_split_free(split, n_split);
	return run_close(&r, rc, out);
}

double
sa_eval_mean(const sa_eval_table *t, int set, int m, int *n, int *partial)
{
	double s = 0;
	int c = 0;

	*n = 0;
	for (int i = 0; i < t->n_rows; i++) {
		if (set >= 0 && t->row[i].set != set)
			continue;
		(*n)++;
		if (!isnan(t->row[i].score[m])) {
			s += t->row[i].score[m];
			c++;
		}
	}
	*partial = c < *n;
	return c ? s / c : NAN;
}

/* ------------------------------------------------------------------ text */

/* the passage alone, after the previous one, with a delta of the previous,
 * of the M previous, after itself (the bound of what a context can give),
 * with a delta of itself */
enum { T_NONE, T_PREV, T_DPREV, T_DMANY, T_SELF, T_DSELF, N_TEXT };

/* The text tokenized line by line, as sa-train reads text. */
static int
tokenize_text(const sa_vocab *v, const char *data, size_t len, sa_toks *all)
{
	size_t start = 0;
	int *t, n, rc;

	for (size_t i = 0; i <= len; i++) {
		if (i < len && data[i] != '\n')
			continue;
		if (i > start) {
			if ((rc = sa_tokenize(v, data + start, i - start + (i < len), 0, &t, &n)) != SA_OK)
				return rc;
			rc = sa_toks_push(all, t, n);
			free(t);
			if (rc != SA_OK)
				return rc;
		}
		start = i + 1;
	}
	return SA_OK;
}

/* Segments of BOS and as many whole blocks of N tokens as fit, over blocks
 * [from, to) of all: the context of a delta. */
static int
segment_blocks(run *r, const sa_toks *all, int N, int from, int to, sa_segment **segs, int *n_segs)
{
	int per_seg = (r->n_ctx - r->nb) / N;

	*n_segs = 0;
	if (!(*segs = sa_calloc((size_t)(to - from), sizeof **segs)))
		return SA_EINTERNAL;
	for (int i = from; i < to; i += per_seg) {
		int upto = i + per_seg < to ? i + per_seg : to, n = r->nb + (upto - i) * N;
		sa_segment *s = &(*segs)[*n_segs];
		if (!(s->toks = sa_malloc((size_t)n * sizeof(int))))
			return SA_EINTERNAL;
		if (r->nb)
			s->toks[0] = r->bos;
		memcpy(s->toks + r->nb, all->t + (size_t)i * N, (size_t)(n - r->nb) * sizeof(int));
		s->n = n;
		(*n_segs)++;
	}
	return SA_OK;
}

/* The tokens of one text file, long enough for the run (all->t malloc'd). */
static int
text_load(run *r, const char *path, sa_toks *all)
{
	int N = r->o->segment, need = r->o->many + r->o->skip + 1, rc;
	char *data;
	size_t len;

	if ((rc = sa_file_read_gz(path, &data, &len)) != SA_OK)
		return rc;
	rc = tokenize_text(r->m->vocab, data, len, all);
	free(data);
	if (rc == SA_OK && all->n / N < need)
		rc = sa_fail(SA_EDATA, "%s: %d tokens: need %d segments of %d tokens", path, all->n,
		    need, N);
	return rc;
}

/* One text file's tokens: its row. */
static int
text_file(run *r, const sa_adapter *a, const char *path, const sa_toks *all, sa_eval_row *row)
{
	int N = r->o->segment, M = r->o->many, nb = r->nb, n_pass, rc = SA_OK;
	/* without BOS the first token of a segment is the prompt, never scored */
	int given = nb ? 0 : 1, prev_fits = 2 * N + nb <= r->n_ctx;
	double nll[N_TEXT] = { 0 };
	long scored = 0;

	n_pass = all->n / N - M - r->o->skip;
	if (r->o->limit && r->o->limit < n_pass)
		n_pass = r->o->limit;
	for (int p = 0; p < n_pass; p++) {
		int b = M + r->o->skip + p;
		const int *blk = all->t + (size_t)b * N;
		int *cand[1] = { (int *)blk + given }, n_cand[1] = { N - given };

		for (int m = 0; m < N_TEXT; m++) {
			sa_eval_record rec = { .task = path, .method = r->t->method[m], .m = m, .index = b,
			    .i = p, .n = n_pass, .tokens = N - given };
			double t0, enc = 0;
			if ((m == T_PREV || m == T_SELF) && !prev_fits)
				continue;
			if (m == T_DPREV || m == T_DMANY || m == T_DSELF) {
				sa_segment *segs;
				int n_segs;
				rc = segment_blocks(r, all, N, m == T_DPREV ? b - 1 : m == T_DMANY ? b - M : b,
				    m == T_DSELF ? b + 1 : b, &segs, &n_segs);
				if (rc == SA_OK)
					rc = merge_delta(r, a, segs, n_segs, &enc);
				sa_segments_free(segs, n_segs);
				if (rc != SA_OK)
					return rc;
				r->t->cost[m].enc_time += enc;
				r->t->cost[m].n_enc++;
			}
			r->prompt.n = 0;
			if ((nb && (rc = sa_toks_push(&r->prompt, &r->bos, 1)) != SA_OK) ||
			    (m == T_PREV && (rc = sa_toks_push(&r->prompt, blk - N, N)) != SA_OK) ||
			    (m == T_SELF && (rc = sa_toks_push(&r->prompt, blk, N)) != SA_OK) ||
			    (rc = sa_toks_push(&r->prompt, blk, given)) != SA_OK)
				return rc;
			t0 = now();
			rc = score_answers(r, r->prompt.t, r->prompt.n, cand, n_cand, 1,
			    &rec.logprob);
			rec.time = now() - t0;
			sa_model_reset_weights(r->m);
			if (rc != SA_OK)
				return rc;
			nll[m] -= rec.logprob;
			rec.kv_bytes = sa_session_kv_peak(r->s);
			cost_add(&r->t->cost[m], rec.time, rec.kv_bytes, r->prompt.n);
			rec.time += enc;
			emit(r, &rec);
		}
		scored += N - given;
	}
	row->n = n_pass;
	row->tokens = (double)scored;
	for (int m = 0; m < N_TEXT; m++)
		row->score[m] = (m == T_PREV || m == T_SELF) && !prev_fits ? NAN : exp(nll[m] / scored);
	return SA_OK;
}

int
sa_eval_text(sa_eval_table **out, sa_model *m, const sa_adapter *a, char *const *files, int n,
    const sa_eval_opts *o, const sa_eval_hooks *h)
{
	static const char *const keys[N_TEXT] = { "none", "prev", "delta-prev", "delta-many", "self",
	    "delta-self" };
	sa_toks *text = NULL;
	run r;
	int rc;

	*out = NULL;
	if ((rc = run_open(&r, m, o, h, keys, N_TEXT, n)) != SA_OK)
		return run_close(&r, rc, out);
	if (o->segment + r.nb > r.n_ctx)
		return run_close(&r, sa_fail(SA_EUSAGE, "--segment %d: a segment%s must fit the context of %d",
		    o->segment, r.nb ? " and BOS" : "", r.n_ctx), out);
	/* every file read before the table starts: a bad one prints nothing */
	if (!(text = sa_calloc((size_t)n, sizeof *text)))
		rc = SA_EINTERNAL;
	for (int f = 0; f < n && rc == SA_OK; f++)
		rc = text_load(&r, files[f], &text[f]);
	if (rc == SA_OK && r.h->start)
		r.h->start(r.h->ctx, r.t);
	for (int f = 0; f < n && rc == SA_OK; f++) {
		if (!(r.t->row[f].name = strdup(files[f])))
			rc = sa_fail(SA_EINTERNAL, "out of memory");
		else if ((rc = text_file(&r, a, files[f], &text[f], &r.t->row[f])) == SA_OK)
			row_done(&r, f);
	}
	for (int f = 0; text && f < n; f++)
		free(text[f].t);
	free(text);
	return run_close(&r, rc, out);
}

/* ------------------------------------------------------------------- map */

/* The columns: zero-shot, ICL, then each adapter by file name and rank. */
static int
map_methods(run *r, sa_adapter *const *a, int n_adapters)
{
	char **col = r->t->method;

	if (!(col[0] = strdup("zero-shot")) || !(col[1] = strdup("ICL")))
		return sa_fail(SA_EINTERNAL, "out of memory");
	for (int i = 0; i < n_adapters; i++) {
		const char *p = a[i]->path ? a[i]->path : "adapter", *s = strrchr(p, '/');
		if (asprintf(&col[2 + i], "%s r=%d", s ? s + 1 : p, a[i]->rank) < 0) {
			col[2 + i] = NULL;
			return sa_fail(SA_EINTERNAL, "out of memory");
		}
	}
	return SA_OK;
}

int
sa_map_pool_read(sa_map_pool **out, const char *dir)
{
	pool words = { 0 }, labels = { 0 };
	sa_map_pool *p;
	int rc;

	*out = NULL;
	if ((rc = pool_read(&words, dir, "words.txt")) == SA_OK &&
	    (rc = pool_read(&labels, dir, "labels.txt")) == SA_OK && !(p = sa_malloc(sizeof *p)))
		rc = SA_EINTERNAL;
	if (rc != SA_OK) {
		pool_free(&words);
		pool_free(&labels);
		return rc;
	}
	*p = (sa_map_pool){ words.w, labels.w, words.n, labels.n };
	*out = p;
	return SA_OK;
}

void
sa_map_pool_free(sa_map_pool *p)
{
	if (!p)
		return;
	pool_free(&(pool){ p->words, p->n_words });
	pool_free(&(pool){ p->labels, p->n_labels });
	free(p);
}

int
sa_map_draw(const sa_map_pool *p, uint64_t seed, int n, int e, int repeat, sa_example *ex,
    int *rec, int *qperm)
{
	int *wperm = sa_malloc((size_t)p->n_words * sizeof *wperm);
	char name[64];
	sa_rng rng;

	if (!wperm)
		return SA_EINTERNAL;
	snprintf(name, sizeof name, "map-%d-%d", n, e);
	rng = rng_for(seed, name, 0);
	shuffle(&rng, wperm, p->n_words);
	for (int i = 0; i < n; i++) {
		ex[i].input = p->words[wperm[i]];
		ex[i].label = p->labels[sa_rng_below(&rng, p->n_labels)];
		ex[i].line = i + 1;
	}
	for (int i = 0; i < repeat; i++)
		shuffle(&rng, rec + i * n, n);
	shuffle(&rng, qperm, n);
	free(wperm);
	return SA_OK;
}

/* Scratch of one number of pairs, shared by its episodes. */
typedef struct mapping {
	int n, n_rec;              /* pairs; records in the context */
	int nq;                    /* pairs an episode asks (--limit) */
	sa_example *ex;            /* the pairs */
	int *rec, *qperm;          /* records' order; queries' */
	long *right, *total;       /* per column */
	long tokens;               /* of the contexts */
	int icl_missed;            /* an episode where ICL did not fit */
	int episodes;              /* drawn for this number of pairs */
} mapping;

/*
 * The ICL prompt of o->icl_text: BOS, then the records ex[idx[0..n)] as one
 * text, tokenized as sa-run tokenizes a prompt (*toks malloc'd).
 */
static int
prompt_of_records(run *r, const char *name, const sa_example *ex, const int *idx, int n,
    int **toks, int *n_toks)
{
	sa_demos *d;
	sa_toks all = { 0 };
	char *text = NULL;
	size_t len = 0;
	int *t = NULL, nt = 0, rc;

	if ((rc = sa_demos_from_examples(&d, name, ex, idx, n)) != SA_OK)
		return rc;
	for (int i = 0; i < d->n; i++)
		len += d->demo[i].len;
	if (!(text = sa_malloc(len + 1)))
		rc = SA_EINTERNAL;
	for (int i = 0, at = 0; rc == SA_OK && i < d->n; at += (int)d->demo[i++].len)
		memcpy(text + at, d->demo[i].text, d->demo[i].len);
	if (rc == SA_OK && (rc = sa_tokenize(r->m->vocab, text, len, 0, &t, &nt)) == SA_OK &&
	    (rc = sa_toks_push(&all, &r->bos, r->nb)) == SA_OK)
		rc = sa_toks_push(&all, t, nt);
	free(t);
	free(text);
	sa_demos_free(d);
	if (rc != SA_OK) {
		free(all.t);
		return rc;
	}
	*toks = all.t;
	*n_toks = all.n;
	return SA_OK;
}

/*
 * Episode e of mp: n distinct words, each with a label drawn from the pool,
 * shown repeat times each in a new order every pass; queries in another
 * order, every column on them.  With o->icl_text, ICL reads the records and
 * its queries as one text.
 */
static int
map_episode(run *r, sa_adapter *const *a, const sa_map_pool *p, mapping *mp, int e)
{
	int n = mp->n, nq = mp->nq, n_q = 0;
	int n_segs = 0, max_need = 0, fit, rc = SA_OK, *text = NULL, n_text = 0, n_qt = 0;
	sa_task t = { .name = "map", .eval = mp->ex, .n_eval = n };
	sa_eval_record rec = { .pairs = n, .episode = e, .episodes = mp->episodes };
	sa_segment *segs = NULL;
	query *qs, *qt = NULL;
	char name[64];

	snprintf(name, sizeof name, "map-%d-%d", n, e);
	if ((rc = sa_map_draw(p, r->o->seed, n, e, r->o->repeat, mp->ex, mp->rec, mp->qperm)) != SA_OK)
		return rc;
	if (!(qs = sa_calloc((size_t)nq, sizeof *qs)))
		return SA_EINTERNAL;
	for (; n_q < nq; n_q++) {
		int i = mp->qperm[n_q];
		if ((rc = query_build(r, &qs[n_q], SA_KIND_GEN, &mp->ex[i], i, NULL, 0, 0)) != SA_OK)
			goto done;
		if (qs[n_q].need > max_need)
			max_need = qs[n_q].need;
	}
	if ((rc = segment_demos(r, name, mp->ex, mp->rec, mp->n_rec, SA_RECORDS_PACKED, &segs,
	    &n_segs)) != SA_OK)
		goto done;
	for (int s = 0; s < n_segs; s++)
		mp->tokens += segs[s].n;
	fit = n_segs == 1 && segs[0].n + max_need <= r->n_ctx;
	if (r->o->icl_text) {
		int need = 0;
		if (!(qt = sa_calloc((size_t)nq, sizeof *qt))) {
			rc = SA_EINTERNAL;
			goto done;
		}
		for (; n_qt < nq; n_qt++) {
			int i = mp->qperm[n_qt];
			if ((rc = query_build(r, &qt[n_qt], SA_KIND_GEN, &mp->ex[i], i, NULL, 0, 1)) != SA_OK)
				goto done;
			if (qt[n_qt].need > need)
				need = qt[n_qt].need;
		}
		if ((rc = prompt_of_records(r, name, mp->ex, mp->rec, mp->n_rec, &text, &n_text)) != SA_OK)
			goto done;
		fit = n_text + need <= r->n_ctx;
	}
	for (int c = 0; c < r->t->n_methods && rc == SA_OK; c++) {
		const int *prefix = &r->bos;
		int n_prefix = r->nb;
		double secs;
		if (c == 1) {
			mp->icl_missed |= !fit;
			if (!fit)
				continue;
			prefix = qt ? text : segs[0].toks;
			n_prefix = qt ? n_text : segs[0].n;
		} else if (c >= 2) {
			const sa_adapter *ac = a[c - 2];
			sa_segment *own = NULL;
			int n_own = 0;
			if (ac->records != SA_RECORDS_PACKED && (rc = segment_demos(r, name, mp->ex,
			    mp->rec, mp->n_rec, ac->records, &own, &n_own)) != SA_OK)
				break;
			rc = own ? merge_delta(r, ac, own, n_own, &secs) :
			    merge_delta(r, ac, segs, n_segs, &secs);
			sa_segments_free(own, n_own);
			if (rc != SA_OK)
				break;
			r->t->cost[c].enc_time += secs;
			r->t->cost[c].n_enc++;
		}
		rc = ask(r, &t, SA_KIND_GEN, c, c == 1 && qt ? qt : qs, nq, prefix, n_prefix, &rec,
		    &mp->right[c]);
		mp->total[c] += nq;
		sa_model_reset_weights(r->m);
	}
done:
	queries_free(qs, n_q);
	queries_free(qt, n_qt);
	free(text);
	sa_segments_free(segs, n_segs);
	return rc;
}

/* Row i: the pairs of o->pairs[i] over every episode. */
static int
map_row(run *r, sa_adapter *const *a, const sa_map_pool *p, int i)
{
	int n = r->o->pairs[i], n_cols = r->t->n_methods, rc = SA_OK;
	int nq = r->o->limit && r->o->limit < n ? r->o->limit : n;
	/* a row of one pair an episode needs many episodes to say anything */
	int episodes = (r->o->queries + nq - 1) / nq;
	if (episodes < r->o->episodes)
		episodes = r->o->episodes;
	sa_eval_row *row = &r->t->row[i];
	mapping mp = { .n = n, .n_rec = n * r->o->repeat, .nq = nq, .episodes = episodes };

	if (!(mp.ex = sa_calloc((size_t)n, sizeof *mp.ex)) ||
	    !(mp.rec = sa_calloc((size_t)mp.n_rec, sizeof *mp.rec)) ||
	    !(mp.qperm = sa_calloc((size_t)n, sizeof *mp.qperm)) ||
	    !(mp.right = sa_calloc((size_t)n_cols, sizeof *mp.right)) ||
	    !(mp.total = sa_calloc((size_t)n_cols, sizeof *mp.total)))
		rc = SA_EINTERNAL;
	for (int e = 0; e < episodes && rc == SA_OK; e++)
		rc = map_episode(r, a, p, &mp, e);
	if (rc == SA_OK) {
		row->n = n;
		row->records = mp.n_rec;
		row->queries = episodes * nq;
		row->tokens = (double)mp.tokens / episodes;
		/* ICL over the episodes where it fit would favour short words */
		if (mp.icl_missed)
			mp.total[1] = 0;
		for (int c = 0; c < n_cols; c++)
			row->score[c] = accuracy(mp.right[c], mp.total[c]);
	}
	free(mp.ex);
	free(mp.rec);
	free(mp.qperm);
	free(mp.right);
	free(mp.total);
	return rc;
}

int
sa_eval_map(sa_eval_table **out, sa_model *m, sa_adapter *const *a, int n_adapters,
    const sa_eval_opts *o, const sa_eval_hooks *h)
{
	sa_map_pool *p = NULL;
	run r;
	int rc;

	*out = NULL;
	if ((rc = run_open(&r, m, o, h, NULL, 2 + n_adapters, o->n_pairs)) != SA_OK ||
	    (rc = sa_map_pool_read(&p, o->pool)) != SA_OK ||
	    (rc = map_methods(&r, a, n_adapters)) != SA_OK)
		goto done;
	for (int i = 0; i < o->n_pairs; i++)
		if (o->pairs[i] > p->n_words) {
			rc = sa_fail(SA_EUSAGE, "--pairs: %d pairs need %d words; %s/words.txt has %d",
			    o->pairs[i], o->pairs[i], o->pool, p->n_words);
			goto done;
		}
	if (r.h->start)
		r.h->start(r.h->ctx, r.t);
	for (int i = 0; i < o->n_pairs && rc == SA_OK; i++)
		if ((rc = map_row(&r, a, p, i)) == SA_OK)
			row_done(&r, i);
done:
	sa_map_pool_free(p);
	return run_close(&r, rc, out);
}
