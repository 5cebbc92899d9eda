/*
 * memory-floor - the floor a trained context mapping must beat: how many
 * pairs of a random mapping an untrained memory over the frozen model's
 * own keys and values gives back when read with its own queries
 * (doc/design.md, "The least-squares memory"; data/train/README.md, "The
 * floor").
 *
 *   memory-floor [-m MODEL] --pool DIR [--pairs LIST] [--episodes N]
 *                [--limit N] [-s SEED] [--layer L] [--lambdas LIST]
 *                [--layout records|text] [-t N]
 *
 * The episodes are those sa-eval --map draws from the pool for the seed
 * (sa_map_draw), laid out as it lays them out for a delta: the records
 * "word -> label\n" packed into segments as sa-encode packs them, each
 * segment run alone from BOS, each layer's keys (before RoPE) and values
 * kept; each query "word ->" run alone after BOS, each layer's queries
 * (before RoPE) at its last token kept.  (--layout text: the records as
 * one text after BOS, the queries tokenized as after a newline, as
 * sa-eval --icl-layout text has them.)  For every layer and query head
 * (reading key/value head g = h / (n_head / n_head_kv)), the share of
 * queries q for which
 *   attn   q.k over the context's tokens peaks on a token of q's label;
 *   soft   the readout sum_t softmax(q.k_t / sqrt(d_head)) v_t,
 *   M q    M = G (S + lambda I)^-1 (sa_memory_read), G = sum v k^T and
 *          S = sum k k^T over every context token ("all") or over the
 *          label tokens alone ("label", as if the write were perfectly
 *          selective), for each lambda, with keys of length 1 ("unit") or
 *          as they are ("raw"), all scaled by one factor to a mean square
 *          length of 1, so that lambda weighs as much as one key either way,
 * lands nearest, by cosine, to the value of the first token of q's label
 * among the values of every label token of the context.  A label drawn
 * for two words is right for both.  A memory whose S + lambda I is not
 * positive definite (S is rounded to float, as in a delta) reads "-".
 *
 * Output: a table of percentages, a row per number of pairs and head:
 * every head of --layer L; else the head whose attention peaks right most
 * often (the first such, by layer then head).
 */
#define TOOL "memory-floor"
#include "../../bin/tool.h"

enum { MAX_LAMBDAS = 8, N_MEM = 4 };   /* memories: all/label x raw/unit */

static const char usage_text[] =
    "usage: memory-floor [-m MODEL] --pool DIR [--pairs LIST] [--episodes N] [--limit N]\n"
    "                    [-s SEED] [--layer L] [--lambdas LIST] [--layout records|text]\n"
    "                    [-t N]\n";

/* One episode: its context's keys and values, its queries, every layer. */
typedef struct episode {
	const sa_config *c;
	int n_tok, at;      /* context tokens; where the segment being run starts */
	float *k, *v;       /* [n_layer][n_tok][kvd], before RoPE */
	int *pair;          /* [n_tok] the token's record (its pair), -1 for BOS */
	char *label;        /* [n_tok] 2 a label's first token, 1 another of its tokens, 0 else */
	int nq, j;          /* queries; the one being run */
	float *q;           /* [n_layer][nq][qd] at each query's last token */
} episode;

/* Right answers per layer, head and column: attn, soft, then the memories. */
typedef struct tally {
	int n_col;
	long *right;        /* [n_layer][n_head][n_col] */
	char *failed;       /* the same: a read that was not possible */
	long asked;
} tally;

static void
kv_hook(void *ctx, int layer, int n, const float *k, const float *v)
{
	episode *ep = ctx;
	size_t kvd = (size_t)ep->c->n_head_kv * ep->c->d_head;
	size_t at = ((size_t)layer * ep->n_tok + ep->at) * kvd;

	memcpy(ep->k + at, k, n * kvd * sizeof *k);
	memcpy(ep->v + at, v, n * kvd * sizeof *v);
}

static void
q_hook(void *ctx, int layer, int n, const float *q)
{
	episode *ep = ctx;
	size_t qd = (size_t)ep->c->n_head * ep->c->d_head;

	memcpy(ep->q + ((size_t)layer * ep->nq + ep->j) * qd, q + (n - 1) * qd, qd * sizeof *q);
}

static void *
xcalloc(size_t n, size_t size)
{
	void *p = sa_calloc(n ? n : 1, size);

	if (!p)
		die_sa(SA_EINTERNAL);
	return p;
}

/* The tokens of a newline in the middle of a line: those of "x\n" past "x"'s. */
static void
newline_tokens(const sa_vocab *v, sa_toks *nl)
{
	int *x, nx, same = 0;

	TRY(sa_tokenize(v, "x\n", 2, 0, &nl->t, &nl->n));
	TRY(sa_tokenize(v, "x", 1, 0, &x, &nx));
	while (same < nx && same < nl->n && x[same] == nl->t[same])
		same++;
	memmove(nl->t, nl->t + same, (size_t)(nl->n -= same) * sizeof *nl->t);
	free(x);
}

/*
 * Mark the tokens of segment seg from ep->pair + at: its records are those
 * of pairs rec[0..seg->n_demos), tokenized as rq[0..n_demos) say.  Each
 * token gets its pair, and which of them are its label's: the record's
 * tokens after the query's, but for the newline nl that ends it.
 */
static void
mark_records(episode *ep, const sa_segment *seg, int at, int nb, const sa_qa *const *rq,
    const int *rec, const sa_toks *nl)
{
	int pos = 0;

	for (; pos < nb; pos++)
		ep->pair[at + pos] = -1;
	for (int r = 0; r < seg->n_demos; r++) {
		const sa_qa *a = rq[r];
		const int *ans = a->answer[0];
		int len = a->n_prefix + a->n_answer[0], n_label = a->n_answer[0];
		if (pos + len > seg->n ||
		    memcmp(seg->toks + pos, a->query, (size_t)a->n_prefix * sizeof *ans) ||
		    memcmp(seg->toks + pos + a->n_prefix, ans, (size_t)a->n_answer[0] * sizeof *ans))
			die(SA_EINTERNAL, "record %d of a segment is not tokenized as its query", r);
		if (n_label > nl->n && !memcmp(ans + n_label - nl->n, nl->t, (size_t)nl->n * sizeof *ans))
			n_label -= nl->n;
		for (int i = -a->n_prefix; i < a->n_answer[0]; i++, pos++) {
			ep->pair[at + pos] = rec[r];
			ep->label[at + pos] = i < 0 || i >= n_label ? 0 : i == 0 ? 2 : 1;
		}
	}
	if (pos != seg->n)
		die(SA_EINTERNAL, "a segment holds %d tokens past its records", seg->n - pos);
}

/* The records of d as one text after BOS, as sa-eval --icl-layout text
 * prompts: one segment. */
static sa_segment *
text_segment(const sa_vocab *v, const sa_demos *d, int nb, int bos, int n_ctx)
{
	sa_segment *seg = xcalloc(1, sizeof *seg);
	size_t len = 0;
	char *text;
	int *t, n;

	for (int i = 0; i < d->n; i++)
		len += d->demo[i].len;
	text = xcalloc(len + 1, 1);
	for (int i = 0, at = 0; i < d->n; at += (int)d->demo[i++].len)
		memcpy(text + at, d->demo[i].text, d->demo[i].len);
	TRY(sa_tokenize(v, text, len, 0, &t, &n));
	if (nb + n > n_ctx)
		die(SA_EUSAGE, "%d pairs as one text take %d tokens; the context has %d", d->n,
		    nb + n, n_ctx);
	seg->toks = xcalloc((size_t)(nb + n), sizeof *seg->toks);
	seg->toks[0] = bos;
	memcpy(seg->toks + nb, t, (size_t)n * sizeof *t);
	seg->n = nb + n;
	seg->n_demos = d->n;
	free(t);
	free(text);
	return seg;
}

/*
 * Episode e of n pairs into ep: ex, qperm and qa [2n] as drawn (each pair
 * tokenized at a text's start; with text, then after a newline), the
 * context's keys and values, and the queries of the first ep->nq pairs of
 * qperm.  The context is the encoder's segments of records, each after
 * BOS; with text, the records as one text after BOS, and the queries
 * tokenized as after a newline, as sa-eval --icl-layout text has them.
 */
static void
episode_run(sa_kvcache *st, const sa_model *m, const sa_map_pool *p, uint64_t seed, int n,
    int e, int text, sa_example *ex, int *qperm, sa_qa *qa, episode *ep)
{
	const sa_config *c = &m->cfg;
	size_t kvd = (size_t)c->n_head_kv * c->d_head, qd = (size_t)c->n_head * c->d_head;
	int nb = sa_vocab_add_bos(m->vocab) != 0, bos = sa_vocab_bos(m->vocab), n_segs = 1, *prompt;
	int *rec = xcalloc((size_t)n, sizeof *rec);
	const sa_qa **rq = xcalloc((size_t)n, sizeof *rq), *asked = text ? qa + n : qa;
	sa_toks nl;
	sa_segment *segs;
	sa_demos *d;

	TRY(sa_map_draw(p, seed, n, e, 1, ex, rec, qperm));
	for (int i = 0; i < n; i++) {
		const char *const *label = (const char *const *)&ex[i].label;
		TRY(sa_qa_build(&qa[i], m->vocab, ex[i].input, label, 1));
		if (text)
			TRY(sa_qa_build_in_text(&qa[n + i], m->vocab, ex[i].input, label, 1));
	}
	for (int r = 0; r < n; r++)
		rq[r] = text && r > 0 ? &qa[n + rec[r]] : &qa[rec[r]];
	newline_tokens(m->vocab, &nl);
	TRY(sa_demos_from_examples(&d, "map", ex, rec, n));
	if (text)
		segs = text_segment(m->vocab, d, nb, bos, sa_kvcache_ctx(st));
	else
		TRY(sa_demos_segment(d, m->vocab, sa_kvcache_ctx(st), SA_RECORDS_PACKED, &segs, &n_segs));
	ep->n_tok = 0;
	for (int s = 0; s < n_segs; s++)
		ep->n_tok += segs[s].n;
	ep->k = xcalloc((size_t)c->n_layer * ep->n_tok * kvd, sizeof *ep->k);
	ep->v = xcalloc((size_t)c->n_layer * ep->n_tok * kvd, sizeof *ep->v);
	ep->pair = xcalloc((size_t)ep->n_tok, sizeof *ep->pair);
	ep->label = xcalloc((size_t)ep->n_tok, sizeof *ep->label);
	ep->q = xcalloc((size_t)c->n_layer * ep->nq * qd, sizeof *ep->q);

	sa_kvcache_set_hook(st, kv_hook, ep);
	for (int s = 0, r = 0; s < n_segs; r += segs[s].n_demos, ep->at += segs[s++].n) {
		mark_records(ep, &segs[s], ep->at, nb, rq + r, rec + r, &nl);
		sa_kvcache_truncate(st, 0);
		TRY(sa_forward(st, segs[s].toks, segs[s].n, NULL, 0));
	}
	sa_kvcache_set_hook(st, NULL, NULL);

	sa_kvcache_set_q_hook(st, q_hook, ep);
	for (ep->j = 0; ep->j < ep->nq; ep->j++) {
		const sa_qa *a = &asked[qperm[ep->j]];
		prompt = xcalloc((size_t)(nb + a->n_query), sizeof *prompt);
		prompt[0] = bos;
		memcpy(prompt + nb, a->query, (size_t)a->n_query * sizeof *prompt);
		sa_kvcache_truncate(st, 0);
		TRY(sa_forward(st, prompt, nb + a->n_query, NULL, 0));
		free(prompt);
	}
	sa_kvcache_set_q_hook(st, NULL, NULL);
	sa_segments_free(segs, n_segs);
	sa_demos_free(d);
	free(nl.t);
	free(rq);
	free(rec);
}

static double
dot(const float *a, const double *b, int n)
{
	double s = 0;

	for (int i = 0; i < n; i++)
		s += a[i] * b[i];
	return s;
}

static double
sqnorm(const float *a, int n)
{
	double s = 0;

	for (int i = 0; i < n; i++)
		s += (double)a[i] * a[i];
	return s;
}

/* Key or value of token t, head g, layer l. */
static const float *
at(const episode *ep, const float *x, int l, int t, int g)
{
	size_t kvd = (size_t)ep->c->n_head_kv * ep->c->d_head;

	return x + ((size_t)l * ep->n_tok + t) * kvd + (size_t)g * ep->c->d_head;
}

/* The label token whose value (layer l, head g) is nearest r by cosine; -1: none. */
static int
nearest(const episode *ep, int l, int g, const double *r)
{
	int dh = ep->c->d_head, best = -1;
	double best_cos = -INFINITY;

	for (int t = 0; t < ep->n_tok; t++) {
		const float *v = at(ep, ep->v, l, t, g);
		double cos;
		if (!ep->label[t])
			continue;
		cos = dot(v, r, dh) / sqrt(sqnorm(v, dh) + 1e-30);
		if (cos > best_cos) {
			best_cos = cos;
			best = t;
		}
	}
	return best;
}

/* Token t answers pair i: a token of a record with i's label (first: the
 * label's first token). */
static int
answers(const episode *ep, const sa_example *ex, int t, int i, int first)
{
	return t >= 0 && ep->label[t] >= 1 + first && strcmp(ex[ep->pair[t]].label, ex[i].label) == 0;
}

/* Attention of each query head of layer l: its peak, and its readout. */
static void
score_attention(const episode *ep, int l, const sa_example *ex, const int *qperm, tally *ty)
{
	const sa_config *c = ep->c;
	int dh = c->d_head, qd = c->n_head * dh;
	double *w = xcalloc((size_t)ep->n_tok, sizeof *w), *r = xcalloc((size_t)dh, sizeof *r);
	double *qh = xcalloc((size_t)dh, sizeof *qh);

	for (int h = 0; h < c->n_head; h++) {
		int g = h / (c->n_head / c->n_head_kv);
		long *right = ty->right + ((size_t)l * c->n_head + h) * ty->n_col;
		for (int j = 0; j < ep->nq; j++) {
			const float *q = ep->q + ((size_t)l * ep->nq + j) * qd + (size_t)h * dh;
			double max = -INFINITY, sum = 0;
			int peak = 0;
			for (int i = 0; i < dh; i++)
				qh[i] = q[i];
			for (int t = 0; t < ep->n_tok; t++) {
				w[t] = dot(at(ep, ep->k, l, t, g), qh, dh) / sqrt(dh);
				if (w[t] > max) {
					max = w[t];
					peak = t;
				}
			}
			memset(r, 0, (size_t)dh * sizeof *r);
			for (int t = 0; t < ep->n_tok; t++) {
				const float *v = at(ep, ep->v, l, t, g);
				double a = exp(w[t] - max);
				sum += a;
				for (int i = 0; i < dh; i++)
					r[i] += a * v[i];
			}
			for (int i = 0; i < dh; i++)
				r[i] /= sum;
			right[0] += answers(ep, ex, peak, qperm[j], 0);
			right[1] += answers(ep, ex, nearest(ep, l, g, r), qperm[j], 1);
		}
	}
	free(w);
	free(r);
	free(qh);
}

/* The memories of layer l, each read with every query head of its group. */
static void
score_memories(const episode *ep, int l, const sa_example *ex, const int *qperm,
    const double *lambda, int n_lambda, tally *ty)
{
	const sa_config *c = ep->c;
	int dh = c->d_head, qd = c->n_head * dh, grp = c->n_head / c->n_head_kv;
	size_t dd = (size_t)dh * dh;
	double *G = xcalloc(dd, sizeof *G), *S = xcalloc(dd, sizeof *S);
	double *r = xcalloc((size_t)dh, sizeof *r);
	float *Gf = xcalloc(dd, sizeof *Gf), *Sf = xcalloc(dd, sizeof *Sf), *M = xcalloc(dd, sizeof *M);

	for (int g = 0; g < c->n_head_kv; g++)
		for (int mem = 0; mem < N_MEM; mem++) {
			int labels_only = mem / 2, unit = mem % 2, written = 0;
			double mean = 0;
			memset(G, 0, dd * sizeof *G);
			memset(S, 0, dd * sizeof *S);
			for (int t = 0; t < ep->n_tok; t++)
				if (!labels_only || ep->label[t]) {
					mean += sqnorm(at(ep, ep->k, l, t, g), dh);
					written++;
				}
			mean /= written;
			for (int t = 0; t < ep->n_tok; t++) {
				const float *k = at(ep, ep->k, l, t, g), *v = at(ep, ep->v, l, t, g);
				double s;
				if (labels_only && !ep->label[t])
					continue;
				s = 1 / sqrt((unit ? sqnorm(k, dh) : mean) + 1e-30);
				for (int i = 0; i < dh; i++)
					for (int o = 0; o < dh; o++) {
						G[(size_t)i * dh + o] += s * v[i] * k[o];
						S[(size_t)i * dh + o] += s * s * k[i] * k[o];
					}
			}
			for (size_t i = 0; i < dd; i++) {
				Gf[i] = (float)G[i];
				Sf[i] = (float)S[i];
			}
			for (int li = 0; li < n_lambda; li++) {
				int col = 2 + mem * n_lambda + li, ok;
				ok = sa_memory_read(Gf, Sf, dh, dh, lambda[li], M) == SA_OK;
				for (int h = g * grp; h < (g + 1) * grp; h++) {
					size_t cell = ((size_t)l * c->n_head + h) * ty->n_col + col;
					ty->failed[cell] |= !ok;
					for (int j = 0; ok && j < ep->nq; j++) {
						const float *q = ep->q + ((size_t)l * ep->nq + j) * qd + (size_t)h * dh;
						for (int i = 0; i < dh; i++) {
							r[i] = 0;
							for (int o = 0; o < dh; o++)
								r[i] += (double)M[(size_t)i * dh + o] * q[o];
						}
						ty->right[cell] += answers(ep, ex, nearest(ep, l, g, r), qperm[j], 1);
					}
				}
			}
		}
	free(G); free(S); free(r); free(Gf); free(Sf); free(M);
}

/* What a run measures. */
typedef struct opts {
	const char *model, *pool;
	double pairs[64], lambda[MAX_LAMBDAS];
	int n_pairs, n_lambda, episodes, limit, layer, text;
	uint64_t seed;
} opts;

static void
print_header(const opts *o)
{
	static const char *const mem[N_MEM] = { "all/raw", "all/unit", "label/raw", "label/unit" };
	int w = 6 * o->n_lambda - 1;

	printf("# %s, pool %s, %s, %d episodes, seed %llu: %% of queries right\n", o->model,
	    o->pool, o->text ? "one text" : "records", o->episodes, (unsigned long long)o->seed);
	printf("%27s", "");
	for (int k = 0; k < N_MEM; k++)
		printf(" %-*.*s", k < N_MEM - 1 ? w : 0, w, mem[k]);
	printf("\n    n layer head  attn  soft");
	for (int k = 0; k < N_MEM; k++)
		for (int i = 0; i < o->n_lambda; i++)
			printf(" %5g", o->lambda[i]);
	putchar('\n');
}

static void
print_row(const sa_config *c, const tally *ty, int n, int l, int h)
{
	size_t at = ((size_t)l * c->n_head + h) * ty->n_col;

	printf("%5d %5d %4d", n, l, h);
	for (int k = 0; k < ty->n_col; k++)
		if (ty->failed[at + k])
			printf("     -");
		else
			printf(" %5.1f", 100.0 * ty->right[at + k] / ty->asked);
	putchar('\n');
}

/* The rows of n pairs: every episode's queries on the layers asked for. */
static void
pairs_run(sa_kvcache *st, const sa_model *m, const sa_map_pool *p, const opts *o, int n,
    tally *ty)
{
	const sa_config *c = &m->cfg;
	size_t cells = (size_t)c->n_layer * c->n_head * ty->n_col;
	int l0 = o->layer < 0 ? 0 : o->layer, l1 = o->layer < 0 ? c->n_layer : o->layer + 1;
	sa_example *ex = xcalloc((size_t)n, sizeof *ex);
	sa_qa *qa = xcalloc(2 * (size_t)n, sizeof *qa);
	int *qperm = xcalloc((size_t)n, sizeof *qperm), best = 0;

	memset(ty->right, 0, cells * sizeof *ty->right);
	memset(ty->failed, 0, cells * sizeof *ty->failed);
	ty->asked = 0;
	for (int e = 0; e < o->episodes; e++) {
		episode ep = { .c = c, .nq = o->limit && o->limit < n ? o->limit : n };
		episode_run(st, m, p, o->seed, n, e, o->text, ex, qperm, qa, &ep);
		for (int l = l0; l < l1; l++) {
			score_attention(&ep, l, ex, qperm, ty);
			score_memories(&ep, l, ex, qperm, o->lambda, o->n_lambda, ty);
		}
		ty->asked += ep.nq;
		for (int i = 0; i < 2 * n; i++)
			sa_qa_free(&qa[i]);
		free(ep.k); free(ep.v); free(ep.pair); free(ep.label); free(ep.q);
	}
	if (o->layer >= 0)
		for (int h = 0; h < c->n_head; h++)
			print_row(c, ty, n, o->layer, h);
	else {
		for (int lh = 1; lh < c->n_layer * c->n_head; lh++)
			if (ty->right[(size_t)lh * ty->n_col] > ty->right[(size_t)best * ty->n_col])
				best = lh;
		print_row(c, ty, n, best / c->n_head, best % c->n_head);
	}
	fflush(stdout);
	free(ex); free(qa); free(qperm);
}

/* A comma-separated list of up to max numbers in [lo, hi]; their count. */
static int
parse_list(const char *opt, const char *s, double *out, int max, double lo, double hi)
{
	char *copy = strdup(s), *tok, *save = NULL;
	int n = 0;

	if (!copy)
		die(SA_EINTERNAL, "out of memory");
	for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		if (n == max)
			usage_die(usage_text, "%s: at most %d values", opt, max);
		out[n++] = parse_double(opt, tok, lo, hi);
	}
	free(copy);
	if (!n)
		usage_die(usage_text, "%s: empty list", opt);
	return n;
}

enum { O_PAIRS, O_LAMBDAS, O_LAYOUT, O_THREADS };

static void
opt_call(void *ctx, const tool_opt *t, const char *arg)
{
	opts *o = ctx;

	switch (t->val) {
	case O_PAIRS: o->n_pairs = parse_list("--pairs", arg, o->pairs, 64, 1, 1 << 20); break;
	case O_LAMBDAS: o->n_lambda = parse_list("--lambdas", arg, o->lambda, MAX_LAMBDAS, 1e-9, 1e9); break;
	case O_LAYOUT:
		if (strcmp(arg, "records") && strcmp(arg, "text"))
			usage_die(usage_text, "--layout: records or text, not '%s'", arg);
		o->text = !strcmp(arg, "text");
		break;
	default: sa_set_threads((int)parse_long("--threads", arg, 0, 1024));
	}
}

int
main(int argc, char **argv)
{
	opts o = {
		.pairs = { 1, 4, 16, 64 }, .n_pairs = 4, .lambda = { 0.01, 0.1, 1, 10 },
		.n_lambda = 4, .episodes = 4, .layer = -1, .seed = 1,
	};
	const tool_opt table[] = {
		TEXT("\nHow many pairs of a random mapping an untrained memory over the model's own\n"
		    "keys and values reads back with its own queries (see the source's head).\n"),
		{ "model", 'm', "FILE", STR(&o.model), "the model (default: $SA_MODEL)" },
		{ "pool", 0, "DIR", STR(&o.pool), "words.txt and labels.txt, as sa-eval --map takes them" },
		{ "pairs", 0, "LIST", CALL(O_PAIRS), "numbers of pairs, a row each (default 1,4,16,64)" },
		{ "episodes", 0, "N", NUM(&o.episodes, 1, 1 << 20), "mappings drawn per number of pairs (default 4)" },
		{ "limit", 0, "N", NUM(&o.limit, 0, 1 << 20), "queries per episode (default 0: every pair)" },
		{ "seed", 's', "N", NUM(&o.seed, 0, LONG_MAX), "the draw, as sa-eval's (default 1)" },
		{ "layer", 0, "L", NUM(&o.layer, 0, 1 << 20), "every head of layer L (default: the best head of any)" },
		{ "lambdas", 0, "LIST", CALL(O_LAMBDAS), "the memories' lambdas (default 0.01,0.1,1,10)" },
		{ "layout", 0, "L", CALL(O_LAYOUT), "the context: the encoder's records (default), or one\n"
		    "text as sa-eval --icl-layout text has it" },
		{ "threads", 't', "N", CALL(O_THREADS), "threads (default: every CPU)" },
		OPTIONS_END,
	};
	sa_map_pool *pool;
	sa_kvcache *st;
	sa_model *m;
	tally ty;

	setprogname_(argv[0]);
	opts_parse(argc, argv, table, usage_text, opt_call, &o);
	if (optind != argc)
		usage_die(usage_text, "unexpected operand '%s'", argv[optind]);
	if (!o.pool)
		usage_die(usage_text, "no pool: give --pool DIR");
	o.model = need_input(INPUT_MODEL, o.model, usage_text);
	TRY(sa_model_load(&m, o.model));
	TRY(sa_map_pool_read(&pool, o.pool));
	if (o.layer >= m->cfg.n_layer)
		die(SA_EUSAGE, "--layer %d: the model has %d layers", o.layer, m->cfg.n_layer);
	for (int i = 0; i < o.n_pairs; i++)
		if (o.pairs[i] != (int)o.pairs[i] || o.pairs[i] > pool->n_words)
			die(SA_EUSAGE, "--pairs: %g is not a number of pairs from 1 to %d (the words of %s)",
			    o.pairs[i], pool->n_words, o.pool);
	TRY(sa_kvcache_new(&st, m, 0));
	ty.n_col = 2 + N_MEM * o.n_lambda;
	ty.right = xcalloc((size_t)m->cfg.n_layer * m->cfg.n_head * ty.n_col, sizeof *ty.right);
	ty.failed = xcalloc((size_t)m->cfg.n_layer * m->cfg.n_head * ty.n_col, sizeof *ty.failed);
	print_header(&o);
	for (int i = 0; i < o.n_pairs; i++)
		pairs_run(st, m, pool, &o, (int)o.pairs[i], &ty);
	free(ty.right);
	free(ty.failed);
	sa_kvcache_free(st);
	sa_map_pool_free(pool);
	sa_model_free(m);
	close_stdout();
	return 0;
}
