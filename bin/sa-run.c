/*
 * sa-run - generate text with a GGUF model, or score text under it, with
 * StreamAdapter deltas applied.
 *
 * One model load serves every request.  The KV cache remembers which tokens
 * it holds, so a request that shares a prefix with the previous one (a
 * prompt scored against several choices, a batch of prompts with the same
 * few-shot header) only runs the tokens after the common prefix.
 */
#include <ctype.h>
#include <getopt.h>
#include <math.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tool.h"

static const char synopsis[] =
    "usage: sa-run [-m model] [-d delta[:scale]]... [-a adapter] [--demos file]...\n"
    "              [options] [-p text | -f file]\n"
    "       sa-run [-m model] ... --score [-p text | -f file]\n"
    "       sa-run [-m model] ... --choice text... [-p text | -f file]\n"
    "       sa-run [-m model] ... --batch file\n";

static void
help(void)
{
	fputs(synopsis, stdout);
	fputs("\n"
	    "Generate text from a prompt (default), score it (--score), rank candidate\n"
	    "continuations (--choice), or serve JSON Lines requests (--batch).\n"
	    "The prompt comes from -p, -f FILE, or standard input.\n"
	    "\n"
	    "  -m, --model FILE       GGUF model (default: $SA_MODEL, else the installed one)\n"
	    "  -d, --delta FILE[:S]   apply a delta at scale S (default 1); repeatable, they add\n"
	    "  -a, --adapter FILE     adapter of the deltas (default: the one they record, else\n"
	    "                         $SA_ADAPTER, else the installed one)\n"
	    "      --unmerged         keep deltas as side paths instead of merging them\n"
	    "      --demos FILE       encode FILE as sa-encode does (through the cache) and\n"
	    "                         apply it too; repeatable, one stream; needs the adapter\n"
	    "      --demos-format FMT text, tsv or jsonl for every --demos (default: from each\n"
	    "                         file's extension or first line, as sa-encode -f)\n"
	    "      --cache-dir DIR    cache of --demos (default: $SA_CACHE_DIR, ~/.cache/sa)\n"
	    "  -p, --prompt TEXT      prompt text\n"
	    "  -e, --escape           expand \\n \\t \\xHH ... in prompt and choices (default)\n"
	    "      --no-escape        take the prompt and choices as they are\n"
	    "  -f, --file FILE        read the prompt from FILE ('-' = stdin)\n"
	    "  -n, --n-predict N      tokens to generate (default 128, -1 = until the end)\n"
	    "      --temp T           temperature (default 0.8, 0 = greedy)\n"
	    "      --top-k K          keep the K most likely tokens (default 40, 0 = off)\n"
	    "      --top-p P          keep the smallest set of probability P (default 0.95, 1 = off)\n"
	    "      --min-p P          drop tokens below P times the best (default 0.05, 0 = off)\n"
	    "  -s, --seed N           sampling seed (default 0, -1 = from the clock)\n"
	    "      --echo             print the prompt before the generated text\n"
	    "      --score            print log-likelihood, token count and perplexity of the text\n"
	    "      --choice TEXT      score TEXT as a continuation of the prompt; repeatable\n"
	    "      --batch FILE       JSON Lines requests from FILE ('-' = stdin)\n"
	    "      --json             JSON output\n"
	    "  -c, --ctx-size N       context length (default 4096 or the model's if smaller, 0 = model's)\n"
	    "  -t, --threads N        threads (default: all CPUs)\n"
	    "      --no-bos           do not add the BOS token\n"
	    "  -v, --verbose          timings on standard error\n"
	    "  -h, --help             this help\n"
	    "  -V, --version          version\n", stdout);
}


/* ------------------------------------------------------------ options */

typedef struct sampling {
	long n_predict;
	double temp, top_p, min_p;
	long top_k;
	uint64_t seed;
} sampling;

typedef struct delta_arg {
	char *path;
	double scale;
} delta_arg;

typedef struct opts {
	const char *model, *adapter, *prompt, *file, *batch;
	delta_arg *deltas;
	int n_deltas;
	const char **choices;
	int n_choices;
	const char **demos, *cache_dir;
	int n_demos, demos_format;
	int score, json, echo, no_bos, unmerged, verbose, escape;
	long n_ctx, threads;
	sampling smp;
} opts;

/*
 * Text given on the command line (-p, --choice), copied; with -e (the
 * default) llama.cpp's escapes are processed: \n \t \r \\ \" \' and \xHH,
 * and any other backslash stays as it is.  *len counts past a \x00.
 */
static char *
arg_text(const char *s, int escape, size_t *len)
{
	char *t = strdup(s), *o = t;

	if (!t)
		die(SA_EINTERNAL, "out of memory");
	for (const char *i = s; *i; i++) {
		if (!escape || *i != '\\' || !i[1]) {
			*o++ = *i;
			continue;
		}
		switch (*++i) {
		case 'n': *o++ = '\n'; break;
		case 't': *o++ = '\t'; break;
		case 'r': *o++ = '\r'; break;
		case '\\': case '"': case '\'': *o++ = *i; break;
		case 'x':
			if (isxdigit((unsigned char)i[1]) && isxdigit((unsigned char)i[2])) {
				char hex[3] = { i[1], i[2], 0 };
				*o++ = (char)strtol(hex, NULL, 16);
				i += 2;
				break;
			}
			/* fall through */
		default:
			*o++ = '\\';
			*o++ = *i;
		}
	}
	*len = (size_t)(o - t);
	*o = 0;
	return t;
}

/* Seed -1: one from the clock. */
static uint64_t
clock_seed(void)
{
	return (uint64_t)time(NULL) * 0x9e3779b97f4a7c15ULL ^ (uint64_t)getpid() ^
	    (uint64_t)(now() * 1e9);
}

static uint64_t
parse_seed(const char *s)
{
	char *end;
	unsigned long long v;

	if (strcmp(s, "-1") == 0)
		return clock_seed();
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s || *end || s[0] == '-' || s[0] == '+')
		usage_die(synopsis, "--seed: invalid value '%s' (want -1 or an integer from 0 to 2^64-1)", s);
	return v;
}

/* ------------------------------------------------------------- runner */

/* Tokens per forward call: large when only the cache is wanted, small when
 * every position's logits are ([n][n_vocab] floats). */
#define PREFILL_CHUNK 512
#define LOGITS_CHUNK 64

typedef struct runner {
	sa_model *model;
	const sa_vocab *vocab;
	sa_state *state;
	int n_vocab, n_ctx, add_bos;
	int *cache;           /* [n_ctx] tokens the KV cache holds */
	int n_cache;
	float *logits;        /* [LOGITS_CHUNK][n_vocab] */
	float *last;          /* [n_vocab] for generation */
	double t_eval, t_gen;
	long n_eval, n_gen;
} runner;

static int
build_runner(runner *r, sa_model *model, int n_ctx, int add_bos)
{
	int rc;

	memset(r, 0, sizeof *r);
	r->model = model;
	r->vocab = model->vocab;
	r->n_vocab = model->cfg.n_vocab;
	r->add_bos = add_bos;
	if ((rc = sa_state_new(&r->state, model, n_ctx)) != SA_OK)
		return rc;
	r->n_ctx = sa_state_ctx(r->state);
	if (!(r->cache = sa_malloc((size_t)r->n_ctx * sizeof *r->cache)) ||
	    !(r->logits = sa_malloc((size_t)LOGITS_CHUNK * r->n_vocab * sizeof *r->logits)) ||
	    !(r->last = sa_malloc((size_t)r->n_vocab * sizeof *r->last)))
		return SA_EINTERNAL;
	return SA_OK;
}

static void
free_runner(runner *r)
{
	sa_state_free(r->state);
	free(r->cache);
	free(r->logits);
	free(r->last);
}

typedef void (*row_fn)(void *ctx, int pos, const float *logits);

/*
 * Make the cache hold toks[0..n) and call fn with the logits of every
 * position from `from` on.  Only the tokens after the longest prefix shared
 * with the cache (and before `from`) are run again.
 */
static int
eval(runner *r, const int *toks, int n, int from, row_fn fn, void *ctx)
{
	int keep = 0, a, rc;

	if (n > r->n_ctx)
		return sa_fail(SA_EDATA, "prompt of %d tokens exceeds the context of %d", n, r->n_ctx);
	while (keep < r->n_cache && keep < n && r->cache[keep] == toks[keep])
		keep++;
	if (keep > from)
		keep = from;
	sa_state_truncate(r->state, keep);
	r->n_cache = keep;
	for (a = keep; a < n;) {
		double t0 = now();
		int b;

		if (from >= n - 1) {
			/* Only the last position's logits: big chunks, the last one
			 * returning [n_vocab]. */
			b = a + PREFILL_CHUNK < n ? a + PREFILL_CHUNK : n;
			rc = sa_forward(r->state, toks + a, b - a, b == n ? r->logits : NULL, 0);
			if (rc == SA_OK && b == n)
				fn(ctx, n - 1, r->logits);
		} else if (a < from) {
			b = a + PREFILL_CHUNK < from ? a + PREFILL_CHUNK : from;
			rc = sa_forward(r->state, toks + a, b - a, NULL, 0);
		} else {
			b = a + LOGITS_CHUNK < n ? a + LOGITS_CHUNK : n;
			rc = sa_forward(r->state, toks + a, b - a, r->logits, 1);
			for (int p = a; rc == SA_OK && p < b; p++)
				fn(ctx, p, r->logits + (size_t)(p - a) * r->n_vocab);
		}
		if (rc != SA_OK) {
			sa_state_truncate(r->state, 0);
			r->n_cache = 0;
			return rc;
		}
		memcpy(r->cache + a, toks + a, (size_t)(b - a) * sizeof *toks);
		r->n_cache = b;
		r->t_eval += now() - t0;
		r->n_eval += b - a;
		a = b;
	}
	return SA_OK;
}

/* Text -> tokens, with BOS unless --no-bos.  *toks is malloc'd. */
static int
tokenize(runner *r, const char *text, size_t len, int **toks, int *n)
{
	return sa_tokenize(r->vocab, text, len, r->add_bos, toks, n);
}

/* ------------------------------------------------------------ scoring */

typedef struct score_acc {
	const int *toks;
	int n_vocab;
	double sum;
	int count;
} score_acc;

/* The logits at pos predict toks[pos + 1]. */
static void
score_row(void *ctx, int pos, const float *logits)
{
	score_acc *s = ctx;

	s->sum += sa_logprob(logits, s->n_vocab, s->toks[pos + 1]);
	s->count++;
}

/* Sum log-likelihood of every token after the first. */
static int
score_text(runner *r, const char *text, size_t len, double *logprob, int *count)
{
	score_acc acc = { .n_vocab = r->n_vocab };
	int *toks, n, rc;

	if ((rc = tokenize(r, text, len, &toks, &n)) != SA_OK)
		return rc;
	if (n < 2) {
		free(toks);
		return sa_fail(SA_EDATA, "text of %d token%s: nothing to score", n, n == 1 ? "" : "s");
	}
	if (n - 1 > r->n_ctx) {
		free(toks);
		return sa_fail(SA_EDATA, "text of %d tokens exceeds the context of %d", n, r->n_ctx);
	}
	acc.toks = toks;
	/* The last token is only predicted, never run. */
	rc = eval(r, toks, n - 1, 0, score_row, &acc);
	free(toks);
	*logprob = acc.sum;
	*count = acc.count;
	return rc;
}

/*
 * Log-likelihood of each choice as a continuation of prompt: prompt+choice
 * is tokenized as one text, and the tokens after the prefix it shares with
 * the prompt's own tokens are scored.
 */
static int
score_choices(runner *r, const char *prompt, size_t plen, const char *const *choice,
    const size_t *clen, int n_choices, double *logprob, int *count)
{
	int *ptoks, np, rc;

	if ((rc = tokenize(r, prompt, plen, &ptoks, &np)) != SA_OK)
		return rc;
	for (int i = 0; i < n_choices && rc == SA_OK; i++) {
		score_acc acc = { .n_vocab = r->n_vocab };
		char *text;
		int *toks, n, c = 0;

		if (!(text = sa_malloc(plen + clen[i] + 1))) {
			rc = SA_EINTERNAL;
			break;
		}
		memcpy(text, prompt, plen);
		memcpy(text + plen, choice[i], clen[i]);
		rc = tokenize(r, text, plen + clen[i], &toks, &n);
		free(text);
		if (rc != SA_OK)
			break;
		while (c < np && c < n && toks[c] == ptoks[c])
			c++;
		/* Without BOS the first token has nothing to be predicted from. */
		if (c < 1)
			c = 1;
		if (c >= n)
			rc = sa_fail(SA_EDATA, "choice %d adds no tokens to the prompt", i);
		else if (n - 1 > r->n_ctx)
			rc = sa_fail(SA_EDATA, "prompt and choice %d: %d tokens exceed the context of %d",
			    i, n, r->n_ctx);
		else {
			acc.toks = toks;
			rc = eval(r, toks, n - 1, c - 1, score_row, &acc);
			logprob[i] = acc.sum;
			count[i] = acc.count;
		}
		free(toks);
	}
	free(ptoks);
	return rc;
}

static int
best_choice(const double *logprob, int n)
{
	int best = 0;

	for (int i = 1; i < n; i++)
		if (logprob[i] > logprob[best])
			best = i;
	return best;
}

/* --------------------------------------------------------- generation */

/*
 * Text out, a character at a time: bytes of a UTF-8 sequence split across
 * byte tokens are held back until the sequence is whole, so a reader of a
 * flushed stream never sees half a character.
 */
typedef struct textout {
	FILE *fp;
	int flush;
	char pend[4];
	int npend;
	char last;            /* the last byte written, 0 before any */
} textout;

static int
utf8_need(unsigned char c)
{
	return c >= 0xf0 && c <= 0xf7 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
}

/* Only the streamed text (stdout) is flushed.  A failed write stops the
 * run there, with its reason: generating on into a full disk or a closed
 * pipe would only waste time, and the error would be lost by the end. */
static void
text_flush(textout *t)
{
	if (t->flush && (fflush(t->fp) == EOF || ferror(t->fp)))
		die(SA_EIO, "stdout: %s", strerror(errno ? errno : EIO));
}

static void
text_put(textout *t, const char *s, size_t n)
{
	char buf[4 + 256], *all = buf;
	size_t len = (size_t)t->npend + n, cut, i;

	if (len > sizeof buf && !(all = malloc(len)))
		die(SA_EINTERNAL, "out of memory");
	memcpy(all, t->pend, (size_t)t->npend);
	memcpy(all + t->npend, s, n);
	/* An incomplete sequence can only start in the last three bytes. */
	cut = len;
	for (i = len; i > 0 && len - i < 3; i--) {
		unsigned char c = (unsigned char)all[i - 1];
		if ((c & 0xc0) == 0x80)
			continue;
		if (c >= 0xc0 && i - 1 + (size_t)utf8_need(c) > len)
			cut = i - 1;
		break;
	}
	fwrite(all, 1, cut, t->fp);
	if (cut)
		t->last = all[cut - 1];
	t->npend = (int)(len - cut);
	memcpy(t->pend, all + cut, (size_t)t->npend);
	if (all != buf)
		free(all);
	text_flush(t);
}

static void
text_end(textout *t)
{
	fwrite(t->pend, 1, (size_t)t->npend, t->fp);
	if (t->npend)
		t->last = t->pend[t->npend - 1];
	t->npend = 0;
	text_flush(t);
}

static void
copy_last(void *ctx, int pos, const float *logits)
{
	runner *r = ctx;

	memcpy(r->last, logits, (size_t)r->n_vocab * sizeof *logits);
}

static int
emit_token(runner *r, textout *out, int tok, const int *prompt, int np, int first)
{
	char small[256], *piece = small;
	int n;

	/* After a bare BOS, the detokenizer knows whether the token's leading
	 * space belongs to the text (it does not for SentencePiece). */
	if (first && np == 1 && prompt[0] == sa_vocab_bos(r->vocab)) {
		int pair[2] = { prompt[0], tok }, rc;
		char *text;
		size_t len;

		if ((rc = sa_detokenize(r->vocab, pair, 2, &text, &len)) != SA_OK)
			return rc;
		text_put(out, text, len);
		free(text);
		return SA_OK;
	}
	n = sa_token_to_piece(r->vocab, tok, small, sizeof small);
	if (n > (int)sizeof small) {
		if (!(piece = sa_malloc((size_t)n)))
			return SA_EINTERNAL;
		sa_token_to_piece(r->vocab, tok, piece, n);
	}
	if (n > 0)
		text_put(out, piece, (size_t)n);
	if (piece != small)
		free(piece);
	return SA_OK;
}

static int
generate(runner *r, const char *prompt, size_t plen, const sampling *p, textout *out)
{
	sa_sampler smp;
	int *toks, np, rc;

	if ((rc = tokenize(r, prompt, plen, &toks, &np)) != SA_OK)
		return rc;
	if (np == 0) {
		free(toks);
		return sa_fail(SA_EDATA, "empty prompt (and no BOS token to start from)");
	}
	if (np > r->n_ctx) {
		free(toks);
		return sa_fail(SA_EDATA, "prompt of %d tokens exceeds the context of %d", np, r->n_ctx);
	}
	if (p->n_predict == 0) {
		free(toks);
		return SA_OK;
	}
	if ((rc = eval(r, toks, np, np - 1, copy_last, r)) != SA_OK)
		goto done;
	sa_sampler_init(&smp, (float)p->temp, (int)p->top_k, (float)p->top_p, (float)p->min_p, p->seed);
	for (long i = 0; p->n_predict < 0 || i < p->n_predict; i++) {
		double t0 = now();
		int tok = sa_sample(&smp, r->last, r->n_vocab);

		if (tok < 0) {
			rc = SA_EINTERNAL;
			break;
		}
		if (sa_vocab_is_eog(r->vocab, tok))
			break;
		if ((rc = emit_token(r, out, tok, toks, np, i == 0)) != SA_OK)
			break;
		r->n_gen++;
		/* The last token is printed, not run: nothing needs its logits. */
		if ((p->n_predict >= 0 && i + 1 >= p->n_predict) || r->n_cache >= r->n_ctx) {
			r->t_gen += now() - t0;
			break;
		}
		if ((rc = sa_forward(r->state, &tok, 1, r->last, 0)) != SA_OK)
			break;
		r->cache[r->n_cache++] = tok;
		r->t_gen += now() - t0;
	}
done:
	text_end(out);
	free(toks);
	return rc;
}

/* ---------------------------------------------------------- batch mode */

/* Library failures other than bad data end the run; bad data fails the line. */
static int
line_error(int rc)
{
	if (rc != SA_EDATA)
		die_sa(rc);
	return rc;
}

static int
req_str(const sa_json *req, const char *key, const char **s, size_t *len)
{
	const sa_json *v = sa_json_get(req, key);

	if (!v)
		return sa_fail(SA_EDATA, "missing \"%s\"", key);
	if (v->type != SA_JSON_STR)
		return sa_fail(SA_EDATA, "\"%s\" must be a string", key);
	*s = v->str;
	*len = v->len;
	return SA_OK;
}

/* An optional number in [lo, hi]; integral if want_int.  Absent: *out unchanged. */
static int
req_num(const sa_json *req, const char *key, double lo, double hi, int want_int, double *out)
{
	const sa_json *v = sa_json_get(req, key);
	char a[32], b[32];

	if (!v)
		return SA_OK;
	if (v->type != SA_JSON_NUM || !(v->num >= lo && v->num <= hi) ||
	    (want_int && v->num != floor(v->num)))
		return sa_fail(SA_EDATA, "\"%s\" must be %s from %s to %s", key,
		    want_int ? "an integer" : "a number", bound_text(a, lo), bound_text(b, hi));
	*out = v->num;
	return SA_OK;
}

/* The id as it was sent: read as a double, 10 would come back as 1e+01
 * and an id above 2^53 as another number. */
static void
put_id(const sa_json *id)
{
	fputs("{\"id\":", stdout);
	if (id)
		fwrite(id->raw, 1, id->raw_len, stdout);
	else
		fputs("null", stdout);
}

static int
batch_generate(runner *r, const sa_json *req, const sampling *def, const sa_json *id)
{
	sampling p = *def;
	double n_predict = (double)def->n_predict, top_k = (double)def->top_k, seed = -2;
	const char *prompt;
	size_t plen, tlen;
	char *text = NULL;
	textout out = { 0 };
	int rc;

	if ((rc = req_str(req, "prompt", &prompt, &plen)) ||
	    (rc = req_num(req, "n_predict", -1, INT_MAX, 1, &n_predict)) ||
	    (rc = req_num(req, "temp", 0, 1e6, 0, &p.temp)) ||
	    (rc = req_num(req, "top_k", 0, INT_MAX, 1, &top_k)) ||
	    (rc = req_num(req, "top_p", 0, 1, 0, &p.top_p)) ||
	    (rc = req_num(req, "min_p", 0, 1, 0, &p.min_p)) ||
	    (rc = req_num(req, "seed", -1, 0x1p64, 1, &seed)))
		return rc;
	p.n_predict = (long)n_predict;
	p.top_k = (long)top_k;
	if (seed == -1)
		p.seed = clock_seed();
	else if (seed >= 0)
		p.seed = seed >= 0x1p64 ? UINT64_MAX : (uint64_t)seed;
	if (!(out.fp = open_memstream(&text, &tlen)))
		return sa_fail(SA_EINTERNAL, "out of memory");
	rc = generate(r, prompt, plen, &p, &out);
	fclose(out.fp);
	if (rc == SA_OK) {
		put_id(id);
		fputs(",\"text\":", stdout);
		sa_json_put_str(stdout, text, tlen);
		fputs("}\n", stdout);
	}
	free(text);
	return rc;
}

static int
batch_choices(runner *r, const sa_json *req, const sa_json *choices, const sa_json *id)
{
	const char *prompt, **cs;
	size_t plen, *cl;
	double *lp;
	int *cnt, n, rc;

	if ((rc = req_str(req, "prompt", &prompt, &plen)))
		return rc;
	if (choices->type != SA_JSON_ARR || choices->n == 0)
		return sa_fail(SA_EDATA, "\"choices\" must be a non-empty array of strings");
	n = (int)choices->n;
	for (int i = 0; i < n; i++)
		if (choices->items[i].type != SA_JSON_STR)
			return sa_fail(SA_EDATA, "\"choices\" must be a non-empty array of strings");
	cs = calloc((size_t)n, sizeof *cs);
	cl = calloc((size_t)n, sizeof *cl);
	lp = calloc((size_t)n, sizeof *lp);
	cnt = calloc((size_t)n, sizeof *cnt);
	if (!cs || !cl || !lp || !cnt)
		die(SA_EINTERNAL, "out of memory");
	for (int i = 0; i < n; i++) {
		cs[i] = choices->items[i].str;
		cl[i] = choices->items[i].len;
	}
	if ((rc = score_choices(r, prompt, plen, cs, cl, n, lp, cnt)) == SA_OK) {
		put_id(id);
		fputs(",\"logprobs\":[", stdout);
		for (int i = 0; i < n; i++) {
			if (i)
				putchar(',');
			sa_json_put_num(stdout, lp[i]);
		}
		fputs("],\"mean_logprobs\":[", stdout);
		for (int i = 0; i < n; i++) {
			if (i)
				putchar(',');
			sa_json_put_num(stdout, lp[i] / cnt[i]);
		}
		printf("],\"best\":%d}\n", best_choice(lp, n));
	}
	free(cs);
	free(cl);
	free(lp);
	free(cnt);
	return rc;
}

static int
batch_score(runner *r, const sa_json *req, const sa_json *id)
{
	const char *text;
	size_t len;
	double lp;
	int count, rc;

	if (sa_json_get(req, "text"))
		rc = req_str(req, "text", &text, &len);
	else if (sa_json_get(req, "prompt"))
		rc = req_str(req, "prompt", &text, &len);
	else
		rc = sa_fail(SA_EDATA, "missing \"text\"");
	if (rc || (rc = score_text(r, text, len, &lp, &count)))
		return rc;
	put_id(id);
	fputs(",\"logprob\":", stdout);
	sa_json_put_num(stdout, lp);
	printf(",\"tokens\":%d,\"ppl\":", count);
	sa_json_put_num(stdout, exp(-lp / count));
	fputs("}\n", stdout);
	return SA_OK;
}

static int
batch_request(runner *r, const sa_json *req, const sampling *def, const sa_json *id)
{
	const sa_json *choices = sa_json_get(req, "choices"), *score = sa_json_get(req, "score");

	if (score && score->type != SA_JSON_BOOL)
		return sa_fail(SA_EDATA, "\"score\" must be true or false");
	if (choices)
		return batch_choices(r, req, choices, id);
	if (score && score->num)
		return batch_score(r, req, id);
	return batch_generate(r, req, def, id);
}

/* JSON Lines in, one result or error record out per line; 65 if any failed. */
static int
run_batch(runner *r, const char *path, const sampling *def)
{
	FILE *fp = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;
	long lineno = 0;
	int failed = 0;

	if (!fp)
		die(SA_ENOINPUT, "%s: %s", path, strerror(errno));
	while ((len = getline(&line, &cap, fp)) > 0) {
		const sa_json *id = NULL;
		sa_json req;
		size_t i;
		int rc;

		lineno++;
		for (i = 0; i < (size_t)len && strchr(" \t\r\n", line[i]); i++)
			;
		if (i == (size_t)len)
			continue;   /* blank lines separate nothing and ask for nothing */
		/* Without its terminator, a line cut short ends where its text
		 * does, not at column 1 of a line after it. */
		if (line[len - 1] == '\n')
			len--;
		if (line[len - 1] == '\r')
			len--;
		if ((rc = sa_json_parse(line, (size_t)len, &req)) == SA_OK) {
			if (req.type != SA_JSON_OBJ)
				rc = sa_fail(SA_EDATA, "a request must be a JSON object");
			else
				rc = batch_request(r, &req, def, id = sa_json_get(&req, "id"));
		}
		if (rc != SA_OK) {
			char msg[1100];

			line_error(rc);
			snprintf(msg, sizeof msg, "line %ld: %s", lineno, sa_error());
			put_id(id);
			fputs(",\"error\":", stdout);
			sa_json_put_str(stdout, msg, strlen(msg));
			fputs("}\n", stdout);
			failed = 1;
		}
		sa_json_free(&req);
		if (fflush(stdout) == EOF)
			die(SA_EIO, "stdout: %s", strerror(errno));
	}
	if (ferror(fp))
		die(SA_EIO, "%s: %s", path, strerror(errno));
	free(line);
	if (fp != stdin)
		fclose(fp);
	return failed ? SA_EDATA : SA_OK;
}

/* ------------------------------------------------------------- deltas */

static void
cache_note(void *ctx, const char *msg)
{
	warnx_("%s", msg);
}

/* --demos: the delta sa-encode would make, through the cache; encoded
 * before any delta is applied, over the base model. */
static sa_delta *
encode_demos(sa_model *model, const sa_adapter *a, const opts *o)
{
	char *dir = o->cache_dir ? strdup(o->cache_dir) : sa_cache_default_dir();
	sa_delta *d;
	int hit;

	if (!dir)
		die(SA_EUSAGE, "%s", sa_error());
	TRY(sa_cache_encode(&d, dir, model, a, (char *const *)o->demos, o->n_demos, o->demos_format,
	    &hit, cache_note, NULL));
	if (o->verbose)
		warnx_("demonstrations: %s, %llu tokens, %llu demonstrations", hit ? "cache hit" : "encoded",
		    (unsigned long long)d->n_tokens, (unsigned long long)d->n_demos);
	free(dir);
	return d;
}

static void
apply_deltas(sa_model *model, const opts *o)
{
	sa_delta **d = calloc((size_t)o->n_deltas + 1, sizeof *d), *demos;
	sa_adapter *a;
	const char *apath;

	if (!d)
		die(SA_EINTERNAL, "out of memory");
	for (int i = 0; i < o->n_deltas; i++) {
		TRY(sa_delta_load(&d[i], o->deltas[i].path));
		if (i > 0)
			TRY(sa_delta_compatible(d[0], o->deltas[0].path, d[i], o->deltas[i].path));
	}
	if (o->n_deltas)
		apath = delta_adapter_load(&a, o->adapter, d[0], o->deltas[0].path);
	else
		TRY(sa_adapter_load(&a, apath = o->adapter));
	TRY(sa_adapter_check(a, model));
	demos = o->n_demos ? encode_demos(model, a, o) : NULL;
	for (int i = 0; i < o->n_deltas; i++) {
		if (d[i]->adapter_fingerprint != a->fingerprint)
			die(SA_EDATA, "%s was made with another adapter than %s", o->deltas[i].path, apath);
		TRY(sa_delta_apply(model, a, d[i], (float)o->deltas[i].scale, !o->unmerged));
		sa_delta_free(d[i]);
	}
	if (demos) {
		TRY(sa_delta_apply(model, a, demos, 1.0f, !o->unmerged));
		sa_delta_free(demos);
	}
	sa_adapter_free(a);
	free(d);
}

/* --------------------------------------------------------------- main */

/* A BOS id outside the vocabulary is never used: the tokenizer keeps its
 * default, as llama.cpp does, and says so, as llama.cpp does. */
static void
check_bos(const sa_model *m, const char *path)
{
	static const char key[] = "tokenizer.ggml.bos_token_id";
	uint32_t id;

	if (!sa_gguf_has(m->gguf, key) || sa_gguf_get_u32(m->gguf, key, &id) != SA_OK ||
	    id < (uint32_t)sa_vocab_size(m->vocab))
		return;
	if (sa_vocab_add_bos(m->vocab))
		warnx_("%s: %s %u is outside the vocabulary of %d tokens: using %d instead",
		    path, key, id, sa_vocab_size(m->vocab), sa_vocab_bos(m->vocab));
	else
		warnx_("%s: %s %u is outside the vocabulary of %d tokens: no BOS is added",
		    path, key, id, sa_vocab_size(m->vocab));
}

enum {
	OPT_TEMP = 256, OPT_TOP_K, OPT_TOP_P, OPT_MIN_P, OPT_NO_BOS, OPT_SCORE,
	OPT_CHOICE, OPT_JSON, OPT_BATCH, OPT_UNMERGED, OPT_ECHO, OPT_DEMOS, OPT_CACHE_DIR,
	OPT_NO_ESCAPE, OPT_DEMOS_FORMAT,
};

static const struct option longopts[] = {
	{ "model", required_argument, NULL, 'm' },
	{ "delta", required_argument, NULL, 'd' },
	{ "adapter", required_argument, NULL, 'a' },
	{ "unmerged", no_argument, NULL, OPT_UNMERGED },
	{ "demos", required_argument, NULL, OPT_DEMOS },
	{ "demos-format", required_argument, NULL, OPT_DEMOS_FORMAT },
	{ "cache-dir", required_argument, NULL, OPT_CACHE_DIR },
	{ "prompt", required_argument, NULL, 'p' },
	{ "escape", no_argument, NULL, 'e' },
	{ "no-escape", no_argument, NULL, OPT_NO_ESCAPE },
	{ "file", required_argument, NULL, 'f' },
	{ "n-predict", required_argument, NULL, 'n' },
	{ "predict", required_argument, NULL, 'n' },
	{ "temp", required_argument, NULL, OPT_TEMP },
	{ "top-k", required_argument, NULL, OPT_TOP_K },
	{ "top-p", required_argument, NULL, OPT_TOP_P },
	{ "min-p", required_argument, NULL, OPT_MIN_P },
	{ "seed", required_argument, NULL, 's' },
	{ "echo", no_argument, NULL, OPT_ECHO },
	{ "score", no_argument, NULL, OPT_SCORE },
	{ "choice", required_argument, NULL, OPT_CHOICE },
	{ "batch", required_argument, NULL, OPT_BATCH },
	{ "json", no_argument, NULL, OPT_JSON },
	{ "ctx-size", required_argument, NULL, 'c' },
	{ "threads", required_argument, NULL, 't' },
	{ "no-bos", no_argument, NULL, OPT_NO_BOS },
	{ "verbose", no_argument, NULL, 'v' },
	{ "help", no_argument, NULL, 'h' },
	{ "version", no_argument, NULL, 'V' },
	{ NULL, 0, NULL, 0 },
};

static void
parse_args(int argc, char **argv, opts *o)
{
	int c, stdin_users, prompt_in;

	memset(o, 0, sizeof *o);
	o->smp = (sampling){ .n_predict = 128, .temp = 0.8, .top_k = 40, .top_p = 0.95,
	    .min_p = 0.05, .seed = 0 };
	o->n_ctx = -1;
	o->escape = 1;
	o->demos_format = SA_DEMOS_AUTO;
	while ((c = getopt_long(argc, argv, "m:d:a:p:ef:n:s:c:t:vhV", longopts, NULL)) != -1) {
		switch (c) {
		case 'm': o->model = optarg; break;
		case 'a': o->adapter = optarg; break;
		case 'd':
			if (!(o->deltas = realloc(o->deltas, (size_t)(o->n_deltas + 1) * sizeof *o->deltas)))
				die(SA_EINTERNAL, "out of memory");
			split_scale("scale", optarg, &o->deltas[o->n_deltas].path,
			    &o->deltas[o->n_deltas].scale);
			o->n_deltas++;
			break;
		case OPT_UNMERGED: o->unmerged = 1; break;
		case OPT_DEMOS:
			if (!(o->demos = realloc(o->demos, (size_t)(o->n_demos + 1) * sizeof *o->demos)))
				die(SA_EINTERNAL, "out of memory");
			o->demos[o->n_demos++] = optarg;
			break;
		case OPT_DEMOS_FORMAT:
			if ((o->demos_format = sa_demos_format_from_name(optarg)) < 0)
				usage_die(synopsis, "--demos-format: unknown format '%s' (text, tsv, jsonl)", optarg);
			break;
		case OPT_CACHE_DIR: o->cache_dir = optarg; break;
		case 'p': o->prompt = optarg; break;
		case 'e': o->escape = 1; break;
		case OPT_NO_ESCAPE: o->escape = 0; break;
		case 'f': o->file = optarg; break;
		case 'n': o->smp.n_predict = parse_long("-n", optarg, -1, INT_MAX); break;
		case OPT_TEMP: o->smp.temp = parse_double("--temp", optarg, 0, 1e6); break;
		case OPT_TOP_K: o->smp.top_k = parse_long("--top-k", optarg, 0, INT_MAX); break;
		case OPT_TOP_P: o->smp.top_p = parse_double("--top-p", optarg, 0, 1); break;
		case OPT_MIN_P: o->smp.min_p = parse_double("--min-p", optarg, 0, 1); break;
		case 's': o->smp.seed = parse_seed(optarg); break;
		case OPT_ECHO: o->echo = 1; break;
		case OPT_SCORE: o->score = 1; break;
		case OPT_CHOICE:
			if (!(o->choices = realloc(o->choices, (size_t)(o->n_choices + 1) * sizeof *o->choices)))
				die(SA_EINTERNAL, "out of memory");
			o->choices[o->n_choices++] = optarg;
			break;
		case OPT_BATCH: o->batch = optarg; break;
		case OPT_JSON: o->json = 1; break;
		case 'c': o->n_ctx = parse_long("-c", optarg, 0, INT_MAX); break;
		case 't': o->threads = parse_long("-t", optarg, 0, 4096); break;
		case OPT_NO_BOS: o->no_bos = 1; break;
		case 'v': o->verbose = 1; break;
		case 'h': help(); close_stdout(); exit(0);
		case 'V': puts("sa-run " SA_VERSION); close_stdout(); exit(0);
		default: usage_die(synopsis, NULL);
		}
	}
	if (optind < argc)
		usage_die(synopsis, "unexpected argument '%s'", argv[optind]);
	if (o->prompt && o->file)
		usage_die(synopsis, "give -p or -f, not both");
	if (o->batch && (o->prompt || o->file || o->score || o->n_choices || o->echo))
		usage_die(synopsis, "--batch takes its prompts from its file: no -p, -f, --score, --choice or --echo");
	if (o->score && o->n_choices)
		usage_die(synopsis, "give --score or --choice, not both");
	if (o->echo && (o->score || o->n_choices || o->json))
		usage_die(synopsis, "--echo is for plain generation");
	if (o->adapter && !o->n_deltas && !o->n_demos)
		usage_die(synopsis, "-a needs a delta (-d) or demonstrations (--demos)");
	if (o->n_demos && !o->adapter && !o->n_deltas)
		o->adapter = need_adapter(NULL, synopsis);
	if (o->demos_format != SA_DEMOS_AUTO && !o->n_demos)
		usage_die(synopsis, "--demos-format goes with --demos");
	if (o->batch)
		stdin_users = strcmp(o->batch, "-") == 0;
	else
		stdin_users = !o->prompt && (!o->file || strcmp(o->file, "-") == 0);
	prompt_in = stdin_users;
	for (int i = 0; i < o->n_deltas; i++)
		stdin_users += strcmp(o->deltas[i].path, "-") == 0;
	for (int i = 0; i < o->n_demos; i++)
		stdin_users += strcmp(o->demos[i], "-") == 0;
	if (stdin_users > 1)
		usage_die(synopsis, "only one input can come from standard input");
	if (stdin_users && !prompt_in)
		stdin_not_terminal("a delta or demonstrations", "give a file, or pipe one in");
	else if (stdin_users)
		stdin_not_terminal(o->batch ? "requests" : "the prompt",
		    o->batch ? "give a file, or pipe them in" : "give -p TEXT or -f FILE, or pipe it in");
}

/* Whether two descriptors are one file: a terminal, or 2>&1. */
static int
same_file(int a, int b)
{
	struct stat sa, sb;

	return fstat(a, &sa) == 0 && fstat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
	    sa.st_ino == sb.st_ino;
}

static void
report(const runner *r, double t_load, const opts *o)
{
	warnx_("load %.3f s; seed %llu; context %d", t_load, (unsigned long long)o->smp.seed, r->n_ctx);
	if (r->n_eval)
		warnx_("prompt: %ld tokens in %.3f s, %.1f tokens/s", r->n_eval, r->t_eval,
		    r->t_eval > 0 ? r->n_eval / r->t_eval : 0);
	if (r->n_gen)
		warnx_("generation: %ld tokens in %.3f s, %.1f tokens/s", r->n_gen, r->t_gen,
		    r->t_gen > 0 ? r->n_gen / r->t_gen : 0);
}

int
main(int argc, char **argv)
{
	opts o;
	sa_model *model;
	runner r;
	const char *model_path;
	char *text = NULL;
	size_t len = 0;
	double t0;
	int n_ctx, status = 0;

	setprogname_(argv[0]);
	parse_args(argc, argv, &o);
	model_path = need_model(o.model, synopsis);

	/* The prompt is read before the model loads, so bad input fails fast. */
	if (!o.batch) {
		if (o.prompt) {
			text = arg_text(o.prompt, o.escape, &len);
		} else {
			TRY(sa_file_read(o.file ? o.file : "-", &text, &len));
			/* As llama.cpp does with -f: a file's final newline ends the
			 * file, not the prompt. */
			if (len && text[len - 1] == '\n')
				text[--len] = 0;
		}
	}

	sa_set_threads((int)o.threads);
	t0 = now();
	TRY(sa_model_load(&model, model_path));
	if (!o.no_bos)
		check_bos(model, model_path);
	if (o.n_deltas || o.n_demos)
		apply_deltas(model, &o);
	if (o.n_ctx < 0)
		n_ctx = model->cfg.n_ctx < 4096 ? model->cfg.n_ctx : 4096;
	else
		n_ctx = ctx_size(o.n_ctx, model);
	TRY(build_runner(&r, model, n_ctx, !o.no_bos));
	t0 = now() - t0;

	if (o.batch) {
		status = run_batch(&r, o.batch, &o.smp);
	} else if (o.score) {
		double lp;
		int count;

		TRY(score_text(&r, text, len, &lp, &count));
		if (o.json) {
			fputs("{\"logprob\":", stdout);
			sa_json_put_num(stdout, lp);
			printf(",\"tokens\":%d,\"ppl\":", count);
			sa_json_put_num(stdout, exp(-lp / count));
			fputs("}\n", stdout);
		} else {
			printf("logprob %.6f tokens %d ppl %.6f\n", lp, count, exp(-lp / count));
		}
	} else if (o.n_choices) {
		double *lp = calloc((size_t)o.n_choices, sizeof *lp);
		int *cnt = calloc((size_t)o.n_choices, sizeof *cnt);
		size_t *cl = calloc((size_t)o.n_choices, sizeof *cl);
		char **cs = calloc((size_t)o.n_choices, sizeof *cs);

		if (!lp || !cnt || !cl || !cs)
			die(SA_EINTERNAL, "out of memory");
		for (int i = 0; i < o.n_choices; i++)
			cs[i] = arg_text(o.choices[i], o.escape, &cl[i]);
		TRY(score_choices(&r, text, len, (const char *const *)cs, cl, o.n_choices, lp, cnt));
		if (o.json) {
			fputs("{\"logprobs\":[", stdout);
			for (int i = 0; i < o.n_choices; i++) {
				if (i)
					putchar(',');
				sa_json_put_num(stdout, lp[i]);
			}
			fputs("],\"mean_logprobs\":[", stdout);
			for (int i = 0; i < o.n_choices; i++) {
				if (i)
					putchar(',');
				sa_json_put_num(stdout, lp[i] / cnt[i]);
			}
			printf("],\"best\":%d}\n", best_choice(lp, o.n_choices));
		} else {
			for (int i = 0; i < o.n_choices; i++)
				printf("choice %d logprob %.6f tokens %d mean %.6f\n", i, lp[i], cnt[i],
				    lp[i] / cnt[i]);
			printf("best %d\n", best_choice(lp, o.n_choices));
		}
		for (int i = 0; i < o.n_choices; i++)
			free(cs[i]);
		free(cs);
		free(lp);
		free(cnt);
		free(cl);
	} else if (o.json) {
		textout out = { 0 };
		char *gen = NULL;
		size_t glen;

		if (!(out.fp = open_memstream(&gen, &glen)))
			die(SA_EINTERNAL, "out of memory");
		TRY(generate(&r, text, len, &o.smp, &out));
		fclose(out.fp);
		fputs("{\"text\":", stdout);
		sa_json_put_str(stdout, gen, glen);
		fputs("}\n", stdout);
		free(gen);
	} else {
		textout out = { stdout, 1, { 0 }, 0, 0 };

		if (o.echo)
			text_put(&out, text, len);
		TRY(generate(&r, text, len, &o.smp, &out));
		/* The text ends where it ends; where the timings follow it on
		 * one file, they start a line of their own. */
		if (o.verbose && out.last && out.last != '\n' && same_file(1, 2))
			fputc('\n', stderr);
	}

	if (o.verbose)
		report(&r, t0, &o);
	close_stdout();
	free_runner(&r);
	sa_model_free(model);
	free(text);
	for (int i = 0; i < o.n_deltas; i++)
		free(o.deltas[i].path);
	free(o.deltas);
	free(o.choices);
	free(o.demos);
	return status;
}
