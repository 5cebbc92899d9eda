/*
 * sa-eval - the project's results: accuracy of zero-shot, in-context
 * learning and StreamAdapter on tasks, with the per-query cost of each;
 * perplexity of held-out text with and without its preceding context; and
 * recall of random mappings as the number of pairs grows.
 *
 * Every method sees the same tokens: a demonstration is tokenized on its
 * own, an ICL prompt is BOS + demonstrations + query, and a delta is
 * encoded from the same demonstrations packed into segments of the
 * model's context, exactly as sa-encode packs them.
 */
#include <getopt.h>
#include <math.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "tool.h"

static const char synopsis[] =
    "usage: sa-eval [-m MODEL] [-a ADAPTER] --task DIR... [--seen LIST] [--unseen LIST]\n"
    "               [--split-file FILE] [-k N] [-K N] [--split test|dev] [--limit N]\n"
    "               [--max-labels N] [-s N] [--jsonl FILE] [-t N] [-q | -v]\n"
    "       sa-eval [-m MODEL] [-a ADAPTER] --text FILE... [--segment N] [--many M] [--limit N]\n"
    "       sa-eval [-m MODEL] [-a ADAPTER]... --map --pool DIR [--pairs LIST] [--repeat N]\n"
    "               [--episodes N] [--limit N] [--csv FILE]\n";

static void
help(void)
{
	fputs(synopsis, stdout);
	fputs("\n"
	    "Tasks (default): accuracy per task of zero-shot, ICL with k demonstrations,\n"
	    "StreamAdapter with a delta of the same k, and with K; then per-query cost.\n"
	    "  -m, --model FILE      base model (default: $SA_MODEL, else the installed one)\n"
	    "  -a, --adapter FILE    adapter of that model (default: $SA_ADAPTER, else the installed\n"
	    "                        one; repeatable with --map)\n"
	    "      --task DIR        DIR/train.tsv, DIR/test.tsv, DIR/dev.tsv (repeatable)\n"
	    "      --seen LIST       comma-separated names of tasks the adapter was trained on\n"
	    "      --unseen LIST     names of tasks it never saw\n"
	    "      --split-file FILE seen/unseen (and kind) per task: see sa-eval(1)\n"
	    "  -k, --shots N         demonstrations for ICL and the delta (default 16)\n"
	    "  -K, --many-shots N    demonstrations for the large delta (default: 4 times\n"
	    "                        those that fit in the context)\n"
	    "      --split NAME      queries from test (default) or dev\n"
	    "      --limit N         at most N queries per task (passages, queries per episode)\n"
	    "      --max-labels N    classify a task with at most N labels (default 32)\n"
	    "      --max-new N       tokens to generate per answer (default 32)\n"
	    "  -s, --seed N          draw of the demonstrations (default 1)\n"
	    "      --scale X         delta scale (default 1)\n"
	    "      --jsonl FILE      one JSON object per query and method\n"
	    "\n"
	    "Text: perplexity of each segment given nothing, the previous segment in the\n"
	    "prompt, a delta of the previous segment, a delta of the M previous ones.\n"
	    "      --text FILE       held-out text, plain or gzip (repeatable)\n"
	    "      --segment N       tokens per segment (default 128)\n"
	    "      --many M          segments in the large delta (default 8)\n"
	    "\n"
	    "Random mappings: recall of n word -> label pairs shown in the context.\n"
	    "      --map             this mode\n"
	    "      --pool DIR        DIR/words.txt and DIR/labels.txt\n"
	    "      --pairs LIST      numbers of pairs (default 1,2,4,8,16,32,64,128,256)\n"
	    "      --repeat N        times each pair is shown (default 1)\n"
	    "      --episodes N      mappings drawn per number of pairs (default 4)\n"
	    "      --csv FILE        the table as CSV (for scripts/plot-map.gp)\n"
	    "\n"
	    "  -t, --threads N       threads (default: all CPUs)\n"
	    "  -q, --quiet           no progress\n"
	    "  -v, --verbose         what each task's demonstrations and deltas hold\n"
	    "  -h, --help            this help\n"
	    "  -V, --version         version\n", stdout);
}


static void *
xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size);

	if (!p)
		die(SA_EINTERNAL, "out of memory");
	return p;
}

static char *
xstrdup(const char *s)
{
	char *p = strdup(s);

	if (!p)
		die(SA_EINTERNAL, "out of memory");
	return p;
}

/* ------------------------------------------------------------ options */

static struct {
	const char *model, *split_file, *split, *jsonl, *pool, *csv;
	const char **adapters, **tasks, **texts;
	int n_adapters, n_tasks, n_texts;
	char *seen, *unseen;
	long k, K, limit, max_labels, max_new, segment, many, repeat, episodes;
	long *pairs;
	int n_pairs;
	uint64_t seed;
	double scale;
	int map, quiet, verbose, progress;
} opt = {
	.split = "test", .k = 16, .max_labels = 32, .max_new = 32, .segment = 128,
	.many = 8, .repeat = 1, .episodes = 4, .seed = 1, .scale = 1,
};

static void
push(const char ***list, int *n, const char *s)
{
	const char **p = realloc(*list, (size_t)(*n + 1) * sizeof *p);

	if (!p)
		die(SA_EINTERNAL, "out of memory");
	*list = p;
	p[(*n)++] = s;
}

static void
parse_pairs(const char *s)
{
	char *copy = xstrdup(s), *tok, *save = NULL;

	opt.n_pairs = 0;
	for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		long *p = realloc(opt.pairs, (size_t)(opt.n_pairs + 1) * sizeof *p);
		if (!p)
			die(SA_EINTERNAL, "out of memory");
		opt.pairs = p;
		p[opt.n_pairs++] = parse_long("--pairs", tok, 1, 1 << 20);
	}
	if (!opt.n_pairs)
		usage_die(synopsis, "--pairs: empty list");
	free(copy);
}

/* ---------------------------------------------------------------- RNG */

/* SplitMix64: the same draws on every machine. */
typedef struct rng { uint64_t s; } rng;

static uint64_t
rng_u64(rng *r)
{
	uint64_t z = (r->s += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static int
rng_below(rng *r, int n)
{
	return n > 0 ? (int)(rng_u64(r) % (uint64_t)n) : 0;
}

static rng
rng_for(uint64_t seed, const char *name, uint64_t salt)
{
	rng r = { sa_hash64(SA_HASH64_INIT, name, strlen(name)) ^ seed * 0x9e3779b97f4a7c15ULL ^ salt };
	rng_u64(&r);
	return r;
}

/* idx[0..n) := a random permutation of 0..n-1. */
static void
shuffle(rng *r, int *idx, int n)
{
	for (int i = 0; i < n; i++)
		idx[i] = i;
	for (int i = n - 1; i > 0; i--) {
		int j = rng_below(r, i + 1), t = idx[i];
		idx[i] = idx[j];
		idx[j] = t;
	}
}

/* ------------------------------------------------------------- outputs */

/* Files written through sa_outfile: dropped if the run dies before the end. */
static sa_outfile out_jsonl, out_csv;

static void
abort_outputs(void)
{
	if (out_jsonl.fp)
		sa_outfile_abort(&out_jsonl);
	if (out_csv.fp)
		sa_outfile_abort(&out_csv);
}

static void
commit(sa_outfile *o)
{
	if (o->fp)
		TRY(sa_outfile_commit(o));
}

static void
json_str(FILE *fp, const char *key, const char *s)
{
	fprintf(fp, "\"%s\":", key);
	sa_json_put_str(fp, s, strlen(s));
}

static void
progress(const char *fmt, ...)
{
	va_list ap;

	if (!opt.progress)
		return;
	fprintf(stderr, "\r%s: ", argv0);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\033[K", stderr);
}

static void
progress_end(void)
{
	if (opt.progress)
		fputs("\r\033[K", stderr);
}

/* ------------------------------------------------------------- shared */

static sa_model *model;
static sa_adapter **adapters;
static sa_evaluator *ev;
static int n_ctx, bos;

/* Growable token list. */
typedef struct toks { int *t; int n, cap; } toks;

static void
toks_push(toks *a, const int *t, int n)
{
	if (a->n + n > a->cap) {
		int cap = a->cap ? a->cap : 256;
		int *p;
		while (cap < a->n + n)
			cap *= 2;
		if (!(p = realloc(a->t, (size_t)cap * sizeof *p)))
			die(SA_EINTERNAL, "out of memory");
		a->t = p;
		a->cap = cap;
	}
	memcpy(a->t + a->n, t, (size_t)n * sizeof *t);
	a->n += n;
}

/* What a method spent, summed over its queries (or passages). */
typedef struct cost {
	double time, kv, prompt;   /* sums of seconds, KV bytes, prompt tokens */
	long n;
	double enc_time;           /* encoding and merging of deltas */
	long n_enc;
} cost;

static void
cost_add(cost *c, double t, size_t kv, int prompt)
{
	c->time += t;
	c->kv += (double)kv;
	c->prompt += prompt;
	c->n++;
}

/* Feed segments to a new encoder and merge the delta into the model:
 * the seconds it took. */
static double
merge_delta(const sa_adapter *a, sa_segment *segs, int n_segs)
{
	double t0 = now();
	sa_encoder *enc;

	sa_model_reset_weights(model);
	TRY(sa_encoder_new(&enc, model, a, NULL));
	for (int i = 0; i < n_segs; i++)
		TRY(sa_encoder_feed(enc, segs[i].toks, segs[i].n, segs[i].n_demos));
	TRY(sa_delta_apply(model, a, sa_encoder_delta(enc), (float)opt.scale, 1));
	sa_encoder_free(enc);
	return now() - t0;
}

/* The delta of examples ex[idx[0..n)], packed as sa-encode packs them. */
static double
merge_demos(const sa_adapter *a, const char *name, const sa_example *ex, const int *idx,
    int n, int *n_segs_out)
{
	sa_demos *d;
	sa_segment *segs;
	int n_segs;
	double t;

	TRY(sa_demos_from_examples(&d, name, ex, idx, n));
	TRY(sa_demos_segment(d, model->vocab, n_ctx, &segs, &n_segs));
	t = merge_delta(a, segs, n_segs);
	if (n_segs_out)
		*n_segs_out = n_segs;
	sa_segments_free(segs, n_segs);
	sa_demos_free(d);
	return t;
}

static char *
trim(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r' || e[-1] == '\n'))
		*--e = 0;
	return s;
}

static int
same_trimmed(const char *a, const char *b)
{
	char *x = xstrdup(a), *y = xstrdup(b);
	int eq = strcmp(trim(x), trim(y)) == 0;

	free(x);
	free(y);
	return eq;
}

/* ------------------------------------------------------------- queries */

/* One query of a task, tokenized once for every method. */
typedef struct query {
	int index;             /* row of the split's file, from 0 */
	sa_qa qa;              /* candidates: the task's labels, or the gold label */
	int n_prompt;          /* query tokens in the prompt */
	int need;              /* tokens it needs after the prefix */
} query;

enum { KIND_CLASS = SA_KIND_CLASS, KIND_GEN = SA_KIND_GEN };

/* Tokens the cache holds at most for q after the prefix: its prompt, then
 * the longest candidate but its last token, which is predicted, never run. */
static int
query_need(const query *q)
{
	int longest = 0, need;

	for (int c = 0; c < q->qa.n_cand; c++)
		if (q->qa.n_answer[c] > longest)
			longest = q->qa.n_answer[c];
	need = q->qa.n_prefix + longest - 1;
	return need > q->n_prompt ? need : q->n_prompt;
}

/*
 * Answer query q after prefix (BOS, demonstrations): the chosen label or
 * the generated line in *pred (malloc'd); 1 if it is right.
 */
static int
answer(const sa_task *t, int kind, const query *q, const int *prefix, int n_prefix,
    char **pred, double *secs, size_t *kv)
{
	const char *gold = t->eval[q->index].label;
	static toks prompt;
	double t0 = now();
	int right;

	prompt.n = 0;
	toks_push(&prompt, prefix, n_prefix);
	toks_push(&prompt, q->qa.query, q->n_prompt);
	if (kind == KIND_CLASS) {
		double *lp = xcalloc((size_t)q->qa.n_cand, sizeof *lp);
		int best = 0;
		TRY(sa_eval_continuations(ev, prompt.t, prompt.n, q->qa.answer, q->qa.n_answer,
		    q->qa.n_cand, lp));
		for (int i = 1; i < q->qa.n_cand; i++)
			if (lp[i] > lp[best])
				best = i;
		*secs = now() - t0;
		*pred = xstrdup(t->labels[best]);
		right = strcmp(*pred, gold) == 0;
		free(lp);
	} else {
		char *text;
		size_t len;
		TRY(sa_eval_generate(ev, prompt.t, prompt.n, (int)opt.max_new, &text, &len));
		*secs = now() - t0;
		*pred = xstrdup(trim(text));
		free(text);
		right = same_trimmed(*pred, gold);
	}
	*kv = sa_evaluator_kv_peak(ev);
	return right;
}

/* ---------------------------------------------------------- task mode */

enum { M_ZS, M_ICL, M_SA, M_SAK, N_METHODS };
static const char *const method_key[N_METHODS] = { "zero-shot", "icl", "sa", "sa-many" };

/* A task's row of the table, and what its run needs, settled for every
 * task before the table starts: its queries and demonstrations. */
typedef struct task_row {
	int set;                   /* 1 seen, 0 unseen, -1 neither */
	int kind;
	int n_queries, k, K;       /* k, K: as used, the train split may hold fewer */
	query *qs;
	int max_need;              /* tokens the longest query needs after BOS */
	int *demo;                 /* train rows in the seed's order: k and K first ones */
	double acc[N_METHODS];     /* NAN: not applicable */
} task_row;

static cost costs[N_METHODS];

static int
in_list(const char *list, const char *name)
{
	size_t n = strlen(name);

	for (const char *p = list; p && *p;) {
		const char *c = strchr(p, ',');
		size_t l = c ? (size_t)(c - p) : strlen(p);
		if (l == n && memcmp(p, name, n) == 0)
			return 1;
		p = c ? c + 1 : NULL;
	}
	return 0;
}

/* Every name of a --seen/--unseen list must be one of the tasks. */
static void
check_list(const char *opt_name, const char *list, sa_task **tasks, int n)
{
	char *copy, *tok, *save = NULL;

	if (!list)
		return;
	copy = xstrdup(list);
	for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		int found = 0;
		for (int i = 0; i < n && !found; i++)
			found = strcmp(tasks[i]->name, tok) == 0;
		if (!found)
			usage_die(synopsis, "%s: no --task named '%s'", opt_name, tok);
	}
	free(copy);
}

/* A task is seen or unseen, not both. */
static void
check_disjoint(const char *seen, const char *unseen)
{
	char *copy, *tok, *save = NULL;

	if (!seen || !unseen)
		return;
	copy = xstrdup(seen);
	for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
		if (in_list(unseen, tok))
			usage_die(synopsis, "task '%s' is in both --seen and --unseen", tok);
	free(copy);
}

static void
run_method(const sa_task *t, int kind, int method, int k, query *qs, int nq,
    const int *prefix, int n_prefix, task_row *row)
{
	int right = 0;

	for (int i = 0; i < nq; i++) {
		char *pred;
		double secs;
		size_t kv;
		int ok;

		progress("%s: %s %d/%d", t->name, method_key[method], i + 1, nq);
		ok = answer(t, kind, &qs[i], prefix, n_prefix, &pred, &secs, &kv);
		right += ok;
		cost_add(&costs[method], secs, kv, n_prefix + qs[i].n_prompt);
		if (out_jsonl.fp) {
			FILE *fp = out_jsonl.fp;
			fputc('{', fp);
			json_str(fp, "task", t->name);
			fputc(',', fp);
			json_str(fp, "method", method_key[method]);
			fprintf(fp, ",\"k\":%d,\"index\":%d,", k, qs[i].index);
			json_str(fp, "gold", t->eval[qs[i].index].label);
			fputc(',', fp);
			json_str(fp, "prediction", pred);
			fprintf(fp, ",\"correct\":%s,\"time\":", ok ? "true" : "false");
			sa_json_put_num(fp, secs);
			fprintf(fp, ",\"kv_bytes\":%zu}\n", kv);
		}
		free(pred);
	}
	row->acc[method] = nq ? 100.0 * right / nq : NAN;
}

/* Tokens of e's record alone, as the segments hold it (lengths decide what fits). */
static int
record_len(const sa_example *e)
{
	char *s;
	int *t, n;

	if (asprintf(&s, "%s -> %s\n", e->input, e->label) < 0)
		die(SA_EINTERNAL, "out of memory");
	TRY(sa_tokenize(model->vocab, s, strlen(s), 0, &t, &n));
	free(s);
	free(t);
	return n;
}

/* The queries and demonstrations of t, scored as kind, into row. */
static void
plan_task(const sa_task *t, int kind, task_row *row)
{
	rng qr = rng_for(0, t->name, 0x5155455259ULL), dr = rng_for(opt.seed, t->name, 0);
	int *order = xcalloc((size_t)t->n_eval, sizeof *order);
	int *perm = xcalloc((size_t)t->n_train, sizeof *perm);
	int *demo = xcalloc((size_t)t->n_train, sizeof *demo);
	int nq = t->n_eval, max_need = 0, n_demos = 0, dropped = 0, k, K, n_fit, sum;
	query *qs;
	int nb = bos >= 0;

	/* Queries: a fixed subset under --limit (the seed draws demonstrations
	 * only), in file order. */
	shuffle(&qr, order, t->n_eval);
	if (opt.limit && opt.limit < nq) {
		nq = (int)opt.limit;
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
	qs = xcalloc((size_t)nq, sizeof *qs);
	int n_ok = 0;
	for (int i = 0; i < nq; i++) {
		query *q = &qs[n_ok];
		const sa_example *e = &t->eval[order[i]];
		if (kind == KIND_CLASS)
			TRY(sa_qa_build(&q->qa, model->vocab, e->input, (const char *const *)t->labels, t->n_labels));
		else
			TRY(sa_qa_build(&q->qa, model->vocab, e->input, (const char *const *)&e->label, 1));
		/* generation prompts end with the whole query, whatever the gold is */
		q->n_prompt = kind == KIND_CLASS ? q->qa.n_prefix : q->qa.n_query;
		q->need = query_need(q);
		q->index = order[i];
		if (nb + q->need > n_ctx) {
			sa_qa_free(&q->qa);
			dropped++;
			continue;
		}
		if (q->need > max_need)
			max_need = q->need;
		n_ok++;
	}
	nq = n_ok;
	if (dropped && !opt.quiet)
		warnx_("%s: %d quer%s longer than the context of %d left out", t->name, dropped,
		    dropped == 1 ? "y" : "ies", n_ctx);
	if (!nq)
		die(SA_EDATA, "%s: no query fits the context of %d", t->dir, n_ctx);

	/* Demonstrations: the seed's permutation of train, leaving out records
	 * that alone would not fit a segment. */
	shuffle(&dr, perm, t->n_train);
	k = (int)opt.k;
	K = (int)opt.K;
	n_fit = 0;
	sum = nb;
	for (int i = 0; i < t->n_train; i++) {
		int len;
		/* enough: k, K and (for K's default) the first one that overflows */
		if (n_demos >= k && (K ? n_demos >= K : sum + max_need > n_ctx && n_demos >= 4 * n_fit))
			break;
		len = record_len(&t->train[perm[i]]);
		if (nb + len > n_ctx)
			continue;
		demo[n_demos++] = perm[i];
		sum += len;
		if (sum + max_need <= n_ctx)
			n_fit = n_demos;
	}
	if (!K)
		K = 4 * (n_fit > 0 ? n_fit : 1);
	if (k > n_demos)
		k = n_demos;
	if (K > n_demos)
		K = n_demos;
	if (!k)
		die(SA_EDATA, "%s/train.tsv: no demonstration fits the context of %d", t->dir, n_ctx);

	row->kind = kind;
	row->n_queries = nq;
	row->k = k;
	row->K = K;
	row->qs = qs;
	row->max_need = max_need;
	row->demo = demo;
	free(order);
	free(perm);
}

/* Every method on t's planned queries. */
static void
run_task(const sa_task *t, task_row *row)
{
	int kind = row->kind, nq = row->n_queries, k = row->k, K = row->K;
	int max_need = row->max_need, nb = bos >= 0, *demo = row->demo;
	query *qs = row->qs;
	toks icl = { 0 };

	/* zero-shot: BOS and the query */
	sa_model_reset_weights(model);
	run_method(t, kind, M_ZS, 0, qs, nq, &bos, nb, row);

	/* ICL: the k demonstrations' own tokens, as the encoder sees them */
	{
		sa_demos *d;
		sa_segment *segs;
		int n_segs;
		TRY(sa_demos_from_examples(&d, t->name, t->train, demo, k));
		TRY(sa_demos_segment(d, model->vocab, n_ctx, &segs, &n_segs));
		if (n_segs == 1 && segs[0].n + max_need <= n_ctx) {
			toks_push(&icl, segs[0].toks, segs[0].n);
			run_method(t, kind, M_ICL, k, qs, nq, icl.t, icl.n, row);
		} else {
			row->acc[M_ICL] = NAN;
		}
		if (opt.verbose)
			warnx_("%s: %d queries (%s); k=%d: %d segment%s of %d tokens first%s; K=%d",
			    t->name, nq, kind == KIND_CLASS ? "classification" : "generation", k,
			    n_segs, n_segs == 1 ? "" : "s", segs[0].n,
			    isnan(row->acc[M_ICL]) ? ", ICL n/a" : "", K);
		sa_segments_free(segs, n_segs);
		sa_demos_free(d);
	}

	/* StreamAdapter: deltas of the same k, and of K */
	for (int m = M_SA; m <= M_SAK; m++) {
		int n = m == M_SA ? k : K, n_segs;
		double secs = merge_demos(adapters[0], t->name, t->train, demo, n, &n_segs);
		costs[m].enc_time += secs;
		costs[m].n_enc++;
		if (opt.verbose)
			warnx_("%s: delta of %d demonstrations in %d segment%s, %.1f ms", t->name, n,
			    n_segs, n_segs == 1 ? "" : "s", secs * 1e3);
		run_method(t, kind, m, n, qs, nq, &bos, nb, row);
		sa_model_reset_weights(model);
	}
	progress_end();

	for (int i = 0; i < nq; i++)
		sa_qa_free(&qs[i].qa);
	free(qs);
	free(icl.t);
	free(demo);
	row->qs = NULL;
	row->demo = NULL;
}

static void
put_acc(double a)
{
	if (isnan(a))
		fputs(" n/a |", stdout);
	else
		printf(" %.1f |", a);
}

/* Mean over rows of a set; *partial if some rows had no value. */
static double
mean_acc(const task_row *rows, int n, int set, int m, int *count, int *partial)
{
	double s = 0;
	int c = 0, all = 0;

	for (int i = 0; i < n; i++) {
		if (rows[i].set != set && set != 2)
			continue;
		all++;
		if (!isnan(rows[i].acc[m])) {
			s += rows[i].acc[m];
			c++;
		}
	}
	*count = all;
	*partial = c < all;
	return c ? s / c : NAN;
}

static void
print_cost_table(const char *unit, const char *const *names, cost *cs, int n)
{
	printf("\n| method | time/%s (ms) | KV cache/%s (KiB) | prompt tokens/%s | encode+merge (ms/delta) |\n"
	    "|---|---:|---:|---:|---:|\n", unit, unit, unit);
	for (int m = 0; m < n; m++) {
		cost *c = &cs[m];
		printf("| %s |", names[m]);
		if (!c->n) {
			fputs(" n/a | n/a | n/a |", stdout);
		} else {
			printf(" %.2f | %.1f | %.1f |", c->time / c->n * 1e3, c->kv / c->n / 1024,
			    c->prompt / c->n);
		}
		if (c->n_enc)
			printf(" %.1f |\n", c->enc_time / c->n_enc * 1e3);
		else
			fputs(" |\n", stdout);
	}
}

/* TASKS.tsv in the directory above a task, if there is one. */
static const char *
default_split_file(const char *task_dir)
{
	static char path[4096];
	size_t n = strlen(task_dir);

	while (n > 1 && task_dir[n - 1] == '/')
		n--;
	while (n > 0 && task_dir[n - 1] != '/')
		n--;
	snprintf(path, sizeof path, "%.*sTASKS.tsv", (int)n, task_dir);
	return access(path, R_OK) == 0 ? path : NULL;
}

/* The classes of t: those the split file lists, else train's (as loaded). */
static void
task_labels(sa_task *t, const sa_split_entry *e)
{
	if (!e->n_labels)
		return;
	for (int i = 0; i < t->n_labels; i++)
		free(t->labels[i]);
	free(t->labels);
	t->labels = xcalloc((size_t)e->n_labels, sizeof *t->labels);
	for (int i = 0; i < e->n_labels; i++)
		t->labels[i] = xstrdup(e->labels[i]);
	t->n_labels = e->n_labels;
}

/* A query whose label is none of the classes is never answered right. */
static void
check_labels(const sa_task *t, int listed)
{
	int missing = 0;

	for (int i = 0; i < t->n_eval; i++) {
		int j = 0;
		while (j < t->n_labels && strcmp(t->labels[j], t->eval[i].label) != 0)
			j++;
		missing += j == t->n_labels;
	}
	if (missing && !opt.quiet)
		warnx_("%s: %d %s quer%s with a label %s: never answered right%s", t->name, missing,
		    opt.split, missing == 1 ? "y" : "ies", listed ? "the split file does not list"
		    : "train.tsv lacks", listed ? "" : " (a split file can list the labels)");
}

static void
task_mode(void)
{
	sa_split_entry *split = NULL;
	int n_split = 0;
	sa_task **tasks = xcalloc((size_t)opt.n_tasks, sizeof *tasks);
	task_row *rows = xcalloc((size_t)opt.n_tasks, sizeof *rows);
	char head[N_METHODS][64];
	int any_none = 0, any_partial = 0, k_same = 1;
	char k_used[16] = "";

	if (!opt.split_file && !opt.seen && !opt.unseen)
		opt.split_file = default_split_file(opt.tasks[0]);
	if (opt.split_file)
		TRY(sa_split_read(opt.split_file, &split, &n_split));
	/* every input is checked before the first query runs */
	for (int i = 0; i < opt.n_tasks; i++)
		TRY(sa_task_load(&tasks[i], opt.tasks[i], opt.split));
	check_list("--seen", opt.seen, tasks, opt.n_tasks);
	check_list("--unseen", opt.unseen, tasks, opt.n_tasks);

	for (int i = 0; i < opt.n_tasks; i++) {
		sa_task *t = tasks[i];
		const sa_split_entry *e = NULL;
		int kind = SA_KIND_AUTO, set = -1;

		for (int j = 0; j < n_split; j++)
			if (strcmp(split[j].task, t->name) == 0)
				e = &split[j];
		if (e) {
			set = e->seen;
			kind = e->kind;
			task_labels(t, e);
		}
		if (in_list(opt.seen, t->name))
			set = 1;
		if (in_list(opt.unseen, t->name))
			set = 0;
		if (kind == SA_KIND_AUTO)
			/* one label leaves nothing to choose between */
			kind = t->n_labels >= 2 && t->n_labels <= opt.max_labels ? KIND_CLASS : KIND_GEN;
		if (kind == KIND_CLASS)
			check_labels(t, e && e->n_labels);
		rows[i].set = set;
		any_none |= set < 0;
		plan_task(t, kind, &rows[i]);
		k_same &= rows[i].k == rows[0].k;
	}

	/* the k of the header is the one every task used, else a column says */
	if (k_same)
		snprintf(k_used, sizeof k_used, "=%d", rows[0].k);
	snprintf(head[M_ZS], sizeof head[0], "zero-shot");
	snprintf(head[M_ICL], sizeof head[0], "ICL k%s", k_used);
	snprintf(head[M_SA], sizeof head[0], "SA k%s", k_used);
	snprintf(head[M_SAK], sizeof head[0], "SA K");
	printf("| task | set | kind | queries | %s | %s | %s | %s |%s K |\n"
	    "|---|---|---|---:|---:|---:|---:|---:|%s---:|\n",
	    head[M_ZS], head[M_ICL], head[M_SA], head[M_SAK], k_same ? "" : " k |",
	    k_same ? "" : "---:|");
	fflush(stdout);
	for (int i = 0; i < opt.n_tasks; i++) {
		sa_task *t = tasks[i];

		run_task(t, &rows[i]);
		printf("| %s | %s | %s | %d |", t->name, rows[i].set < 0 ? "-" : rows[i].set ? "seen" : "unseen",
		    rows[i].kind == KIND_CLASS ? "class" : "gen", rows[i].n_queries);
		for (int m = 0; m < N_METHODS; m++)
			put_acc(rows[i].acc[m]);
		if (!k_same)
			printf(" %d |", rows[i].k);
		printf(" %d |\n", rows[i].K);
		fflush(stdout);
	}
	for (int set = 1; set >= (any_none ? -1 : 0); set--) {
		static const char *const label[] = { "all (avg)", "unseen (avg)", "seen (avg)" };
		int count = 0, partial;
		/* "all" (set -1 here) averages every task */
		int s = set < 0 ? 2 : set;
		mean_acc(rows, opt.n_tasks, s, 0, &count, &partial);
		printf("| %s | | | %d tasks |", label[set + 1], count);
		for (int m = 0; m < N_METHODS; m++) {
			double a = mean_acc(rows, opt.n_tasks, s, m, &count, &partial);
			if (isnan(a)) {
				fputs(" n/a |", stdout);
			} else {
				printf(" %.1f%s |", a, partial ? "*" : "");
				any_partial |= partial;
			}
		}
		fputs(k_same ? " |\n" : " | |\n", stdout);
	}
	if (any_partial)
		puts("\n\\* mean over the tasks where the method applies (ICL: where k demonstrations fit the context).");

	{
		const char *names[N_METHODS];
		char buf[N_METHODS][64];
		snprintf(buf[M_ZS], sizeof buf[0], "zero-shot");
		snprintf(buf[M_ICL], sizeof buf[0], "ICL (k%s)", k_used);
		snprintf(buf[M_SA], sizeof buf[0], "StreamAdapter (k%s)", k_used);
		snprintf(buf[M_SAK], sizeof buf[0], "StreamAdapter (K)");
		for (int m = 0; m < N_METHODS; m++)
			names[m] = buf[m];
		print_cost_table("query", names, costs, N_METHODS);
	}
	for (int i = 0; i < opt.n_tasks; i++)
		sa_task_free(tasks[i]);
	free(tasks);
	free(rows);
	sa_split_free(split, n_split);
}

/* ---------------------------------------------------------- text mode */

/* A whole file, gzip or plain ("-" = stdin), NUL-terminated. */
static char *
read_text(const char *path, size_t *len)
{
	gzFile gz = strcmp(path, "-") == 0 ? gzdopen(dup(0), "rb") : gzopen(path, "rb");
	size_t n = 0, cap = 1 << 16;
	char *buf;
	int r;

	if (!gz)
		die(SA_ENOINPUT, "%s: %s", path, strerror(errno ? errno : ENOENT));
	buf = xcalloc(cap, 1);
	while ((r = gzread(gz, buf + n, (unsigned)(cap - n - 1))) > 0) {
		n += (size_t)r;
		if (cap - n < 2) {
			char *p = realloc(buf, cap *= 2);
			if (!p)
				die(SA_EINTERNAL, "out of memory");
			buf = p;
		}
	}
	if (r < 0) {
		int e;
		const char *msg = gzerror(gz, &e);
		die(e == Z_ERRNO ? SA_EIO : SA_EDATA, "%s: %s", path, e == Z_ERRNO ? strerror(errno) : msg);
	}
	gzclose(gz);
	buf[n] = 0;
	*len = n;
	return buf;
}

/* The text tokenized line by line, as sa-train reads text. */
static toks
tokenize_text(const char *data, size_t len)
{
	toks all = { 0 };
	size_t start = 0;

	for (size_t i = 0; i <= len; i++) {
		int *t, n;
		if (i < len && data[i] != '\n')
			continue;
		if (i > start) {
			TRY(sa_tokenize(model->vocab, data + start, i - start + (i < len), 0, &t, &n));
			toks_push(&all, t, n);
			free(t);
		}
		start = i + 1;
	}
	return all;
}

enum { T_NONE, T_PREV, T_DPREV, T_DMANY, N_TEXT };
static const char *const text_key[N_TEXT] = { "none", "prev", "delta-prev", "delta-many" };

static void
text_mode(void)
{
	int N = (int)opt.segment, M = (int)opt.many, nb = bos >= 0;
	/* without BOS the first token of a segment is the prompt, never scored */
	int given = nb ? 0 : 1;
	cost cs[N_TEXT] = { 0 };
	char head[N_TEXT][64];
	int per_seg = (n_ctx - nb) / N;
	const char *names[N_TEXT];

	if (N + nb > n_ctx)
		usage_die(synopsis, "--segment %d: a segment%s must fit the context of %d", N, nb ? " and BOS" : "", n_ctx);
	snprintf(head[T_NONE], sizeof head[0], "no context");
	snprintf(head[T_PREV], sizeof head[0], "previous in prompt");
	snprintf(head[T_DPREV], sizeof head[0], "delta of previous");
	snprintf(head[T_DMANY], sizeof head[0], "delta of %d previous", M);
	printf("| text | passages | tokens | %s | %s | %s | %s |\n|---|---:|---:|---:|---:|---:|---:|\n",
	    head[0], head[1], head[2], head[3]);
	fflush(stdout);
	for (int f = 0; f < opt.n_texts; f++) {
		size_t len;
		char *data = read_text(opt.texts[f], &len);
		toks all = tokenize_text(data, len);
		int n_blocks = all.n / N, first = M, n_pass;
		double nll[N_TEXT] = { 0 };
		long scored = 0;
		const char *base = strrchr(opt.texts[f], '/');
		toks prompt = { 0 }, seg = { 0 };

		free(data);
		if (n_blocks <= first)
			die(SA_EDATA, "%s: %d tokens: need %d segments of %d tokens", opt.texts[f],
			    all.n, M + 1, N);
		n_pass = n_blocks - first;
		if (opt.limit && opt.limit < n_pass)
			n_pass = (int)opt.limit;
		for (int p = 0; p < n_pass; p++) {
			int b = first + p;
			const int *blk = all.t + (size_t)b * N, *prev = blk - N;
			int *cand[1];
			int n_cand[1] = { N - given };
			double lp;

			cand[0] = (int *)blk + given;
			for (int m = 0; m < N_TEXT; m++) {
				double t0, secs, enc = 0;
				progress("%s: passage %d/%d: %s", base ? base + 1 : opt.texts[f], p + 1, n_pass,
				    text_key[m]);
				if (m == T_PREV && 2 * N + nb > n_ctx)
					continue;
				if (m == T_DPREV || m == T_DMANY) {
					/* segments of BOS and as many whole blocks as fit */
					sa_segment *segs;
					int from = m == T_DPREV ? b - 1 : b - M, n_segs = 0;
					segs = xcalloc((size_t)(b - from), sizeof *segs);
					for (int i = from; i < b; i += per_seg) {
						int upto = i + per_seg < b ? i + per_seg : b;
						seg.n = 0;
						if (nb)
							toks_push(&seg, &bos, 1);
						toks_push(&seg, all.t + (size_t)i * N, (upto - i) * N);
						segs[n_segs].toks = xcalloc((size_t)seg.n, sizeof(int));
						memcpy(segs[n_segs].toks, seg.t, (size_t)seg.n * sizeof(int));
						segs[n_segs++].n = seg.n;
					}
					enc = merge_delta(adapters[0], segs, n_segs);
					cs[m].enc_time += enc;
					cs[m].n_enc++;
					sa_segments_free(segs, n_segs);
				}
				prompt.n = 0;
				if (nb)
					toks_push(&prompt, &bos, 1);
				if (m == T_PREV)
					toks_push(&prompt, prev, N);
				toks_push(&prompt, blk, given);
				t0 = now();
				TRY(sa_eval_continuations(ev, prompt.t, prompt.n, cand, n_cand, 1, &lp));
				secs = now() - t0;
				sa_model_reset_weights(model);
				nll[m] -= lp;
				cost_add(&cs[m], secs, sa_evaluator_kv_peak(ev), prompt.n);
				if (out_jsonl.fp) {
					FILE *fp = out_jsonl.fp;
					fputc('{', fp);
					json_str(fp, "text", opt.texts[f]);
					fputc(',', fp);
					json_str(fp, "method", text_key[m]);
					fprintf(fp, ",\"index\":%d,\"tokens\":%d,\"logprob\":", b, N - given);
					sa_json_put_num(fp, lp);
					fputs(",\"time\":", fp);
					sa_json_put_num(fp, secs + enc);
					fputs("}\n", fp);
				}
			}
			scored += N - given;
		}
		progress_end();
		printf("| %s | %d | %ld |", opt.texts[f], n_pass, scored);
		for (int m = 0; m < N_TEXT; m++) {
			if (m == T_PREV && 2 * N + nb > n_ctx)
				fputs(" n/a |", stdout);
			else
				printf(" %.3f |", exp(nll[m] / scored));
		}
		putchar('\n');
		fflush(stdout);
		free(all.t);
		free(prompt.t);
		free(seg.t);
	}
	for (int m = 0; m < N_TEXT; m++)
		names[m] = head[m];
	print_cost_table("passage", names, cs, N_TEXT);
}

/* ----------------------------------------------------------- map mode */

typedef struct pool { char **w; int n; } pool;

static pool
read_pool(const char *dir, const char *file)
{
	char *path, *data, *line, *save = NULL;
	size_t len;
	pool p = { 0 };

	if (asprintf(&path, "%s/%s", dir, file) < 0)
		die(SA_EINTERNAL, "out of memory");
	TRY(sa_file_read(path, &data, &len));
	for (line = strtok_r(data, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *w = trim(line);
		char **q;
		if (!*w)
			continue;
		if (!(q = realloc(p.w, (size_t)(p.n + 1) * sizeof *q)))
			die(SA_EINTERNAL, "out of memory");
		p.w = q;
		p.w[p.n++] = xstrdup(w);
	}
	if (p.n < 1)
		die(SA_EDATA, "%s: no entries", path);
	free(data);
	free(path);
	return p;
}

static void
map_mode(void)
{
	pool words = read_pool(opt.pool, "words.txt"), labels = read_pool(opt.pool, "labels.txt");
	int n_ad = opt.n_adapters, n_cols = 2 + n_ad, nb = bos >= 0;
	char **col = xcalloc((size_t)n_cols, sizeof *col);
	cost *cs = xcalloc((size_t)n_cols, sizeof *cs);
	FILE *csv = out_csv.fp;

	col[0] = xstrdup("zero-shot");
	col[1] = xstrdup("ICL");
	for (int a = 0; a < n_ad; a++) {
		const char *s = strrchr(opt.adapters[a], '/');
		s = s ? s + 1 : opt.adapters[a];
		if (asprintf(&col[2 + a], "%s r=%d", s, adapters[a]->rank) < 0)
			die(SA_EINTERNAL, "out of memory");
	}
	for (int i = 0; i < opt.n_pairs; i++)
		if (opt.pairs[i] > words.n)
			usage_die(synopsis, "--pairs: %ld pairs need %ld words; %s/words.txt has %d", opt.pairs[i],
			    opt.pairs[i], opt.pool, words.n);
	printf("| pairs | records | tokens |");
	for (int c = 0; c < n_cols; c++)
		printf(" %s |", col[c]);
	fputs("\n|---:|---:|---:|", stdout);
	for (int c = 0; c < n_cols; c++)
		fputs("---:|", stdout);
	putchar('\n');
	fflush(stdout);
	if (csv) {
		fputs("pairs,records,tokens", csv);
		for (int c = 0; c < n_cols; c++) {
			/* a header without commas or quotes: gnuplot reads it as a title */
			fputc(',', csv);
			for (const char *p = col[c]; *p; p++)
				fputc(*p == ',' || *p == '"' ? '_' : *p, csv);
		}
		fputc('\n', csv);
	}

	for (int pi = 0; pi < opt.n_pairs; pi++) {
		int n = (int)opt.pairs[pi], n_rec = n * (int)opt.repeat;
		long right[64 + 2] = { 0 }, total[64 + 2] = { 0 }, tokens = 0;
		int icl_missed = 0;   /* an episode where ICL did not fit */
		sa_example *ex = xcalloc((size_t)n, sizeof *ex);
		int *wperm = xcalloc((size_t)words.n, sizeof *wperm);
		int *rec = xcalloc((size_t)n_rec, sizeof *rec), *qperm = xcalloc((size_t)n, sizeof *qperm);
		sa_task t = { .name = "map", .eval = ex, .n_eval = n };

		for (int e = 0; e < opt.episodes; e++) {
			char name[64];
			rng r;
			int nq = opt.limit && opt.limit < n ? (int)opt.limit : n, ctx_fit;
			query *qs = xcalloc((size_t)nq, sizeof *qs);
			sa_demos *d;
			sa_segment *segs;
			int n_segs, max_need = 0;

			snprintf(name, sizeof name, "map-%d-%d", n, e);
			r = rng_for(opt.seed, name, 0);
			/* n distinct words, each with a label drawn from the pool */
			shuffle(&r, wperm, words.n);
			for (int i = 0; i < n; i++) {
				ex[i].input = words.w[wperm[i]];
				ex[i].label = labels.w[rng_below(&r, labels.n)];
				ex[i].line = i + 1;
			}
			/* the pairs, each shown `repeat` times, a new order every pass */
			for (int p = 0; p < opt.repeat; p++) {
				shuffle(&r, rec + p * n, n);
			}
			shuffle(&r, qperm, n);
			for (int i = 0; i < nq; i++) {
				qs[i].index = qperm[i];
				TRY(sa_qa_build(&qs[i].qa, model->vocab, ex[qperm[i]].input,
				    (const char *const *)&ex[qperm[i]].label, 1));
				qs[i].n_prompt = qs[i].qa.n_query;
				qs[i].need = query_need(&qs[i]);
				if (qs[i].need > max_need)
					max_need = qs[i].need;
			}
			TRY(sa_demos_from_examples(&d, name, ex, rec, n_rec));
			TRY(sa_demos_segment(d, model->vocab, n_ctx, &segs, &n_segs));
			for (int s = 0; s < n_segs; s++)
				tokens += segs[s].n;
			ctx_fit = n_segs == 1 && segs[0].n + max_need <= n_ctx;
			for (int c = 0; c < n_cols; c++) {
				const int *prefix = &bos;
				int n_prefix = nb;
				if (c == 1) {
					icl_missed |= !ctx_fit;
					if (!ctx_fit)
						continue;
					prefix = segs[0].toks;
					n_prefix = segs[0].n;
				} else if (c >= 2) {
					cs[c].enc_time += merge_delta(adapters[c - 2], segs, n_segs);
					cs[c].n_enc++;
				}
				for (int i = 0; i < nq; i++) {
					char *pred;
					double secs;
					size_t kv;
					int ok;
					progress("%d pairs, episode %d/%ld: %s %d/%d", n, e + 1, opt.episodes,
					    col[c], i + 1, nq);
					ok = answer(&t, KIND_GEN, &qs[i], prefix, n_prefix, &pred, &secs, &kv);
					right[c] += ok;
					total[c]++;
					cost_add(&cs[c], secs, kv, n_prefix + qs[i].n_prompt);
					if (out_jsonl.fp) {
						FILE *fp = out_jsonl.fp;
						fprintf(fp, "{\"pairs\":%d,\"episode\":%d,", n, e);
						json_str(fp, "method", col[c]);
						fprintf(fp, ",\"index\":%d,", qs[i].index);
						json_str(fp, "input", ex[qs[i].index].input);
						fputc(',', fp);
						json_str(fp, "gold", ex[qs[i].index].label);
						fputc(',', fp);
						json_str(fp, "prediction", pred);
						fprintf(fp, ",\"correct\":%s,\"time\":", ok ? "true" : "false");
						sa_json_put_num(fp, secs);
						fputs("}\n", fp);
					}
					free(pred);
				}
				sa_model_reset_weights(model);
			}
			for (int i = 0; i < nq; i++)
				sa_qa_free(&qs[i].qa);
			free(qs);
			sa_segments_free(segs, n_segs);
			sa_demos_free(d);
		}
		progress_end();
		printf("| %d | %d | %.0f |", n, n_rec, (double)tokens / opt.episodes);
		if (csv)
			fprintf(csv, "%d,%d,%.0f", n, n_rec, (double)tokens / opt.episodes);
		/* ICL over the episodes where it fit would favour short words */
		if (icl_missed)
			total[1] = 0;
		for (int c = 0; c < n_cols; c++) {
			if (total[c]) {
				printf(" %.1f |", 100.0 * right[c] / total[c]);
				if (csv)
					fprintf(csv, ",%.2f", 100.0 * right[c] / total[c]);
			} else {
				fputs(" n/a |", stdout);
				if (csv)
					fputc(',', csv);
			}
		}
		putchar('\n');
		if (csv)
			fputc('\n', csv);
		fflush(stdout);
		free(ex);
		free(wperm);
		free(rec);
		free(qperm);
	}
	print_cost_table("query", (const char *const *)col, cs, n_cols);
	for (int c = 0; c < n_cols; c++)
		free(col[c]);
	free(col);
	free(cs);
	for (int i = 0; i < words.n; i++)
		free(words.w[i]);
	for (int i = 0; i < labels.n; i++)
		free(labels.w[i]);
	free(words.w);
	free(labels.w);
}

/* ----------------------------------------------------------------- main */

int
main(int argc, char **argv)
{
	enum { O_TASK = 256, O_SEEN, O_UNSEEN, O_SPLITFILE, O_SPLIT, O_LIMIT, O_MAXLABELS,
	    O_MAXNEW, O_SCALE, O_JSONL, O_TEXT, O_SEGMENT, O_MANY, O_MAP, O_POOL, O_PAIRS,
	    O_REPEAT, O_EPISODES, O_CSV };
	static const struct option longopts[] = {
		{ "model", required_argument, NULL, 'm' },
		{ "adapter", required_argument, NULL, 'a' },
		{ "task", required_argument, NULL, O_TASK },
		{ "seen", required_argument, NULL, O_SEEN },
		{ "unseen", required_argument, NULL, O_UNSEEN },
		{ "split-file", required_argument, NULL, O_SPLITFILE },
		{ "split", required_argument, NULL, O_SPLIT },
		{ "limit", required_argument, NULL, O_LIMIT },
		{ "max-labels", required_argument, NULL, O_MAXLABELS },
		{ "max-new", required_argument, NULL, O_MAXNEW },
		{ "seed", required_argument, NULL, 's' },
		{ "shots", required_argument, NULL, 'k' },
		{ "many-shots", required_argument, NULL, 'K' },
		{ "scale", required_argument, NULL, O_SCALE },
		{ "jsonl", required_argument, NULL, O_JSONL },
		{ "text", required_argument, NULL, O_TEXT },
		{ "segment", required_argument, NULL, O_SEGMENT },
		{ "many", required_argument, NULL, O_MANY },
		{ "map", no_argument, NULL, O_MAP },
		{ "pool", required_argument, NULL, O_POOL },
		{ "pairs", required_argument, NULL, O_PAIRS },
		{ "repeat", required_argument, NULL, O_REPEAT },
		{ "episodes", required_argument, NULL, O_EPISODES },
		{ "csv", required_argument, NULL, O_CSV },
		{ "threads", required_argument, NULL, 't' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	int c, modes;
	const char *model_path = NULL;

	setprogname_(argv[0]);
	while ((c = getopt_long(argc, argv, "m:a:k:K:s:t:qvhV", longopts, NULL)) != -1) {
		switch (c) {
		case 'm': model_path = optarg; break;
		case 'a': push(&opt.adapters, &opt.n_adapters, optarg); break;
		case O_TASK: push(&opt.tasks, &opt.n_tasks, optarg); break;
		case O_SEEN: opt.seen = optarg; break;
		case O_UNSEEN: opt.unseen = optarg; break;
		case O_SPLITFILE: opt.split_file = optarg; break;
		case O_SPLIT:
			if (strcmp(optarg, "test") && strcmp(optarg, "dev"))
				usage_die(synopsis, "--split: want test or dev, not '%s'", optarg);
			opt.split = optarg;
			break;
		case 'k': opt.k = parse_long("--shots", optarg, 1, 1 << 20); break;
		case 'K': opt.K = parse_long("--many-shots", optarg, 1, 1 << 24); break;
		case O_LIMIT: opt.limit = parse_long("--limit", optarg, 1, INT_MAX); break;
		case O_MAXLABELS: opt.max_labels = parse_long("--max-labels", optarg, 1, 1 << 16); break;
		case O_MAXNEW: opt.max_new = parse_long("--max-new", optarg, 1, 1 << 16); break;
		case 's': opt.seed = (uint64_t)parse_long("--seed", optarg, 0, LONG_MAX); break;
		case O_SCALE: opt.scale = parse_double("--scale", optarg, -1e6, 1e6); break;
		case O_JSONL: opt.jsonl = optarg; break;
		case O_TEXT: push(&opt.texts, &opt.n_texts, optarg); break;
		case O_SEGMENT: opt.segment = parse_long("--segment", optarg, 2, 1 << 20); break;
		case O_MANY: opt.many = parse_long("--many", optarg, 1, 1 << 16); break;
		case O_MAP: opt.map = 1; break;
		case O_POOL: opt.pool = optarg; break;
		case O_PAIRS: parse_pairs(optarg); break;
		case O_REPEAT: opt.repeat = parse_long("--repeat", optarg, 1, 64); break;
		case O_EPISODES: opt.episodes = parse_long("--episodes", optarg, 1, 1 << 20); break;
		case O_CSV: opt.csv = optarg; break;
		case 't': sa_set_threads((int)parse_long("--threads", optarg, 1, 1024)); break;
		case 'q': opt.quiet = 1; opt.verbose = 0; break;
		case 'v': opt.verbose = 1; opt.quiet = 0; break;
		case 'h': help(); close_stdout(); return 0;
		case 'V': puts("sa-eval " SA_VERSION); close_stdout(); return 0;
		default: usage_die(synopsis, NULL);
		}
	}
	for (int i = optind; i < argc; i++)
		push(&opt.tasks, &opt.n_tasks, argv[i]);
	modes = (opt.n_tasks > 0) + (opt.n_texts > 0) + opt.map;
	if (modes != 1)
		usage_die(synopsis, modes ? "--task, --text and --map are separate runs" : "nothing to evaluate: give --task, --text or --map");
	if (!opt.n_adapters)
		push(&opt.adapters, &opt.n_adapters, need_adapter(NULL, synopsis));
	if (!opt.map && opt.n_adapters > 1)
		usage_die(synopsis, "several adapters are compared only with --map");
	if (opt.map && !opt.pool)
		usage_die(synopsis, "--map needs --pool DIR");
	if (opt.csv && !opt.map)
		usage_die(synopsis, "--csv goes with --map");
	if (opt.jsonl && strcmp(opt.jsonl, "-") == 0)
		usage_die(synopsis, "--jsonl: give a file name (the standard output holds the tables)");
	if (opt.csv && strcmp(opt.csv, "-") == 0)
		usage_die(synopsis, "--csv: give a file name (the standard output holds the tables)");
	if (opt.n_adapters > 64)
		usage_die(synopsis, "at most 64 adapters");
	check_disjoint(opt.seen, opt.unseen);
	if (opt.map && !opt.n_pairs)
		parse_pairs("1,2,4,8,16,32,64,128,256");
	model_path = need_model(model_path, synopsis);
	opt.progress = !opt.quiet && isatty(2);

	TRY(sa_model_load(&model, model_path));
	adapters = xcalloc((size_t)opt.n_adapters, sizeof *adapters);
	for (int i = 0; i < opt.n_adapters; i++) {
		TRY(sa_adapter_load(&adapters[i], opt.adapters[i]));
		TRY(sa_adapter_check(adapters[i], model));
	}
	TRY(sa_evaluator_new(&ev, model, 0));
	n_ctx = sa_evaluator_ctx(ev);
	bos = sa_vocab_add_bos(model->vocab) ? sa_vocab_bos(model->vocab) : -1;

	atexit(abort_outputs);
	sa_outfile_install_signals();
	if (opt.jsonl)
		TRY(sa_outfile_open(&out_jsonl, opt.jsonl));
	if (opt.csv)
		TRY(sa_outfile_open(&out_csv, opt.csv));

	if (opt.n_tasks)
		task_mode();
	else if (opt.n_texts)
		text_mode();
	else
		map_mode();

	commit(&out_jsonl);
	commit(&out_csv);
	sa_evaluator_free(ev);
	for (int i = 0; i < opt.n_adapters; i++)
		sa_adapter_free(adapters[i]);
	free(adapters);
	sa_model_free(model);
	close_stdout();
	return 0;
}
