/*
 * serve.c - what sa-run does with a text, on a session: generate after it,
 * score it, or rank continuations of it; the result as text or as a JSON
 * object.  And the JSON Lines batch: a request a line, a result or error
 * record a line, every request on the one session.
 */
#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sa.h"

uint64_t
sa_seed_from_clock(void)
{
	return (uint64_t)time(NULL) * 0x9e3779b97f4a7c15ULL ^ (uint64_t)getpid() ^
	    (uint64_t)(sa_now() * 1e9);
}

/* In the order a request's keys are checked: its first bad one is told. */
const sa_sampling_key sa_sampling_keys[] = {
	{ "n_predict", -1, INT_MAX, 1 }, { "temp", 0, 1e6, 0 }, { "top_k", 0, INT_MAX, 1 },
	{ "top_p", 0, 1, 0 }, { "min_p", 0, 1, 0 }, { "seed", -1, 0x1p64, 1 },
	{ "repeat_penalty", 0, 1e6, 0 }, { "repeat_last_n", -1, INT_MAX, 1 },
	{ "logprobs", 0, SA_MAX_PROBS, 1 }, { NULL, 0, 0, 0 },
};

void
sa_sampling_set(sa_sampling *p, const sa_sampling_key *k, double v)
{
	const char *n = k->name;

	if (!strcmp(n, "n_predict"))
		p->n_predict = (long)v;
	else if (!strcmp(n, "temp"))
		p->temp = v;
	else if (!strcmp(n, "top_k"))
		p->top_k = (long)v;
	else if (!strcmp(n, "top_p"))
		p->top_p = v;
	else if (!strcmp(n, "min_p"))
		p->min_p = v;
	else if (!strcmp(n, "seed"))
		p->seed = v < 0 ? sa_seed_from_clock() : v >= 0x1p64 ? UINT64_MAX : (uint64_t)v;
	else if (!strcmp(n, "repeat_penalty"))
		p->repeat_penalty = v;
	else if (!strcmp(n, "repeat_last_n"))
		p->repeat_last_n = (long)v;
	else if (!strcmp(n, "logprobs"))
		p->n_probs = (int)v;
}

int
sa_prompt_read(const char *path, char **text, size_t *len)
{
	int rc = sa_file_read(path, text, len);

	if (rc == SA_OK && *len && (*text)[*len - 1] == '\n')
		(*text)[--*len] = 0;
	return rc;
}

char *
sa_text_unescape(const char *s, size_t *len)
{
	char *t = strdup(s), *o = t;

	if (!t) {
		sa_fail(SA_EINTERNAL, "out of memory");
		return NULL;
	}
	for (const char *i = s; *i; i++) {
		if (*i != '\\' || !i[1]) {
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

/* ------------------------------------------------------------ text out */

/*
 * Text out, a character at a time: bytes of a UTF-8 sequence split across
 * byte tokens are held back until the sequence is whole, so a reader of a
 * flushed stream never sees half a character.
 */
typedef struct textout {
	FILE *fp;
	const char *name;
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

/* Only the streamed text is flushed.  A failed write stops the run there,
 * with its reason: generating on into a full disk or a closed pipe would
 * only waste time, and the error would be lost by the end. */
static int
text_flush(textout *t)
{
	if (t->flush && (fflush(t->fp) == EOF || ferror(t->fp)))
		return sa_fail(SA_EIO, "%s: %s", t->name, strerror(errno ? errno : EIO));
	return SA_OK;
}

static int
text_put(textout *t, const char *s, size_t n)
{
	char buf[4 + 256], *all = buf;
	size_t len = (size_t)t->npend + n, cut, i;

	if (len > sizeof buf && !(all = sa_malloc(len)))
		return SA_EINTERNAL;
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
	return text_flush(t);
}

static int
text_end(textout *t)
{
	fwrite(t->pend, 1, (size_t)t->npend, t->fp);
	if (t->npend)
		t->last = t->pend[t->npend - 1];
	t->npend = 0;
	return text_flush(t);
}

/* --------------------------------------------------------- generation */

/* Text -> tokens, the control tokens written in it too when special. */
static int
tokenize(const sa_session *s, int special, const char *text, size_t len, int **toks, int *n)
{
	return special ? sa_session_tokenize_special(s, text, len, toks, n) :
	    sa_session_tokenize(s, text, len, toks, n);
}

typedef struct emitter {
	const sa_session *s;
	const sa_vocab *v;
	const sa_sampling *p;
	textout *out;
	int *prompt;          /* the prompt's tokens, its own */
	int n_prompt, first;
	char *held;           /* text that may be the start of a stop string */
	size_t n_held, cap;
	FILE *probs;          /* n_probs > 0: the tokens' log-probabilities, JSON */
	int n_gen;
} emitter;

/* The first stop string in t[0..n): its offset, or n. */
static size_t
stop_find(const sa_sampling *p, const char *t, size_t n)
{
	size_t at = n;

	for (int i = 0; i < p->n_stop; i++) {
		const char *hit = p->stop_len[i] ? memmem(t, n, p->stop[i], p->stop_len[i]) : NULL;
		if (hit && (size_t)(hit - t) < at)
			at = (size_t)(hit - t);
	}
	return at;
}

/* Where the tail of t[0..n) that could still grow into a stop string starts. */
static size_t
stop_hold(const sa_sampling *p, const char *t, size_t n)
{
	for (size_t at = 0; at < n; at++)
		for (int i = 0; i < p->n_stop; i++)
			if (p->stop_len[i] > n - at && memcmp(t + at, p->stop[i], n - at) == 0)
				return at;
	return n;
}

/* Text of a token out; with stop strings, through the held text: what
 * cannot be part of one goes out, a stop string ends the generation. */
static int
emit_text(emitter *e, const char *s, size_t n, int *stop)
{
	size_t at;
	int rc;

	if (!e->p->n_stop)
		return text_put(e->out, s, n);
	if (e->n_held + n > e->cap) {
		size_t cap = 2 * (e->n_held + n);
		char *h = realloc(e->held, cap);
		if (!h)
			return sa_fail(SA_EINTERNAL, "out of memory");
		e->held = h;
		e->cap = cap;
	}
	memcpy(e->held + e->n_held, s, n);
	e->n_held += n;
	if ((at = stop_find(e->p, e->held, e->n_held)) < e->n_held) {
		*stop = 1;
		e->n_held = 0;
		return text_put(e->out, e->held, at);
	}
	at = stop_hold(e->p, e->held, e->n_held);
	rc = text_put(e->out, e->held, at);
	memmove(e->held, e->held + at, e->n_held - at);
	e->n_held -= at;
	return rc;
}

static void
put_prob(FILE *fp, const sa_vocab *v, int tok, double logprob)
{
	char piece[256];
	int n = sa_token_to_piece(v, tok, piece, sizeof piece);

	fprintf(fp, "{\"id\":%d,\"token\":", tok);
	sa_json_put_str(fp, piece, (size_t)(n < (int)sizeof piece ? n : (int)sizeof piece));
	fputs(",\"logprob\":", fp);
	sa_json_put_num(fp, logprob);
}

/* The token drawn, its log-probability and the n_probs best, as llama.cpp's
 * server gives them. */
static int
emit_probs(emitter *e, int tok)
{
	const float *logits = sa_session_logits(e->s);
	int nv = sa_vocab_size(e->v), k = e->p->n_probs, *ids = sa_malloc((size_t)k * sizeof *ids);
	double *lp = sa_malloc((size_t)k * sizeof *lp);

	if (!ids || !lp || (k = sa_logprob_top(logits, nv, k, ids, lp)) < 0) {
		free(ids);
		free(lp);
		return sa_fail(SA_EINTERNAL, "out of memory");
	}
	if (e->n_gen++)
		fputc(',', e->probs);
	put_prob(e->probs, e->v, tok, sa_logprob(logits, nv, tok));
	fputs(",\"top_logprobs\":[", e->probs);
	for (int i = 0; i < k; i++) {
		if (i)
			fputc(',', e->probs);
		put_prob(e->probs, e->v, ids[i], lp[i]);
		fputc('}', e->probs);
	}
	fputs("]}", e->probs);
	free(ids);
	free(lp);
	return SA_OK;
}

static int
emit_token(void *ctx, int tok, int *stop)
{
	emitter *e = ctx;
	char small[256], *piece = small;
	int first = e->first, n, rc;

	e->first = 0;
	if (e->probs && (rc = emit_probs(e, tok)) != SA_OK)
		return rc;
	/* After a bare BOS, the detokenizer knows whether the token's leading
	 * space belongs to the text (it does not for SentencePiece). */
	if (first && e->n_prompt == 1 && e->prompt[0] == sa_vocab_bos(e->v)) {
		int pair[2] = { e->prompt[0], tok };
		char *text;
		size_t len;

		if ((rc = sa_detokenize(e->v, pair, 2, &text, &len)) != SA_OK)
			return rc;
		rc = emit_text(e, text, len, stop);
		free(text);
		return rc;
	}
	n = sa_token_to_piece(e->v, tok, small, sizeof small);
	if (n > (int)sizeof small) {
		if (!(piece = sa_malloc((size_t)n)))
			return SA_EINTERNAL;
		sa_token_to_piece(e->v, tok, piece, n);
	}
	rc = n > 0 ? emit_text(e, piece, (size_t)n, stop) : SA_OK;
	if (piece != small)
		free(piece);
	return rc;
}

/* A generation set off: req's prompt tokenized into e (its text to out,
 * its log-probabilities to probs when not NULL), the sampler set. */
static int
gen_open(sa_session *s, const sa_request *req, textout *out, FILE *probs, emitter *e,
    sa_sampler *smp)
{
	const sa_sampling *p = &req->smp;

	*e = (emitter){ s, sa_session_vocab(s), p, out, NULL, 0, 1, NULL, 0, 0, probs, 0 };
	sa_sampler_init(smp, (float)p->temp, (int)p->top_k, (float)p->top_p, (float)p->min_p, p->seed);
	if (p->repeat_penalty > 0) {
		smp->penalty = (float)p->repeat_penalty;
		smp->last_n = p->repeat_last_n < INT_MAX ? (int)p->repeat_last_n : INT_MAX;
	}
	return tokenize(s, req->special, req->text, req->len, &e->prompt, &e->n_prompt);
}

/* The generation ended (rc): held text that no stop string completed is
 * text. */
static int
gen_close(emitter *e, int rc)
{
	int end;

	if (rc == SA_OK && e->n_held)
		rc = text_put(e->out, e->held, e->n_held);
	end = text_end(e->out);
	free(e->held);
	free(e->prompt);
	e->held = NULL;
	e->prompt = NULL;
	return rc != SA_OK ? rc : end;
}

static int
generate(sa_session *s, const sa_request *req, textout *out, FILE *probs)
{
	emitter e;
	sa_sampler smp;
	int rc;

	if ((rc = gen_open(s, req, out, probs, &e, &smp)) == SA_OK)
		rc = sa_session_generate(s, e.prompt, e.n_prompt, &smp, req->smp.n_predict,
		    emit_token, &e);
	return gen_close(&e, rc);
}

/* ------------------------------------------------------------ scoring */

/* Sum log-likelihood of every token after the first. */
static int
score_text(sa_session *s, const sa_request *req, double *logprob, int *count)
{
	int *toks, n, rc;

	if ((rc = tokenize(s, req->special, req->text, req->len, &toks, &n)) != SA_OK)
		return rc;
	if (n < 2)
		rc = sa_fail(SA_EDATA, "text of %d token%s: nothing to score", n, n == 1 ? "" : "s");
	else if (n - 1 > sa_session_ctx(s))
		rc = sa_fail(SA_EDATA, "text of %d tokens exceeds the context of %d", n, sa_session_ctx(s));
	else {
		*logprob = 0;
		*count = n - 1;
		rc = sa_session_score(s, toks, n, 0, logprob);
	}
	free(toks);
	return rc;
}

/* Each choice after the prompt, tokenized with it as one text. */
static int
score_choices(sa_session *s, const sa_request *req, double *logprob, int *count)
{
	int n = req->n_choices, *ptoks = NULL, np, **seq, *n_seq, rc;

	seq = sa_calloc((size_t)n, sizeof *seq);
	n_seq = sa_calloc((size_t)n, sizeof *n_seq);
	rc = seq && n_seq ? tokenize(s, req->special, req->text, req->len, &ptoks, &np) : SA_EINTERNAL;
	for (int i = 0; i < n && rc == SA_OK; i++) {
		char *text = sa_malloc(req->len + req->choice_len[i] + 1);

		if (!text) {
			rc = SA_EINTERNAL;
			break;
		}
		memcpy(text, req->text, req->len);
		memcpy(text + req->len, req->choice[i], req->choice_len[i]);
		rc = tokenize(s, req->special, text, req->len + req->choice_len[i], &seq[i], &n_seq[i]);
		free(text);
	}
	if (rc == SA_OK)
		rc = sa_session_choices(s, ptoks, np, seq, n_seq, n, logprob, count);
	for (int i = 0; seq && i < n; i++)
		free(seq[i]);
	free(seq);
	free(n_seq);
	free(ptoks);
	return rc;
}

/* ------------------------------------------------------------- replies */

/* "{", or "{"id":ID," for a batch record. */
static void
put_head(const sa_reply *out)
{
	fputc('{', out->fp);
	if (out->id) {
		fputs("\"id\":", out->fp);
		fwrite(out->id, 1, out->id_len, out->fp);
		fputc(',', out->fp);
	}
}

static void
put_nums(FILE *fp, const char *key, const double *v, const int *div, int n)
{
	fprintf(fp, "\"%s\":[", key);
	for (int i = 0; i < n; i++) {
		if (i)
			fputc(',', fp);
		sa_json_put_num(fp, div ? v[i] / div[i] : v[i]);
	}
	fputc(']', fp);
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

static int
reply_score(sa_session *s, const sa_request *req, sa_reply *out)
{
	double lp = 0;
	int count = 0, rc;

	if ((rc = score_text(s, req, &lp, &count)) != SA_OK)
		return rc;
	if (!out->json) {
		fprintf(out->fp, "logprob %.6f tokens %d ppl %.6f\n", lp, count, exp(-lp / count));
		return SA_OK;
	}
	put_head(out);
	fputs("\"logprob\":", out->fp);
	sa_json_put_num(out->fp, lp);
	fprintf(out->fp, ",\"tokens\":%d,\"ppl\":", count);
	sa_json_put_num(out->fp, exp(-lp / count));
	fputs("}\n", out->fp);
	return SA_OK;
}

static int
reply_choices(sa_session *s, const sa_request *req, sa_reply *out)
{
	int n = req->n_choices, *cnt = sa_calloc((size_t)n, sizeof *cnt), rc;
	double *lp = sa_calloc((size_t)n, sizeof *lp);

	rc = lp && cnt ? score_choices(s, req, lp, cnt) : SA_EINTERNAL;
	if (rc == SA_OK && out->json) {
		put_head(out);
		put_nums(out->fp, "logprobs", lp, NULL, n);
		fputc(',', out->fp);
		put_nums(out->fp, "mean_logprobs", lp, cnt, n);
		fprintf(out->fp, ",\"best\":%d}\n", best_choice(lp, n));
	} else if (rc == SA_OK) {
		for (int i = 0; i < n; i++)
			fprintf(out->fp, "choice %d logprob %.6f tokens %d mean %.6f\n", i, lp[i], cnt[i],
			    lp[i] / cnt[i]);
		fprintf(out->fp, "best %d\n", best_choice(lp, n));
	}
	free(lp);
	free(cnt);
	return rc;
}

/* A generation's text and log-probabilities, in memory until its record
 * is written. */
typedef struct genbuf {
	textout t;
	FILE *pf;             /* NULL: no log-probabilities asked */
	char *gen, *probs;
	size_t glen, plen;
} genbuf;

static int
genbuf_open(genbuf *g, const char *name, int probs)
{
	*g = (genbuf){ { NULL, name, 0, { 0 }, 0, 0 }, NULL, NULL, NULL, 0, 0 };
	if ((g->t.fp = open_memstream(&g->gen, &g->glen)) &&
	    (!probs || (g->pf = open_memstream(&g->probs, &g->plen))))
		return SA_OK;
	if (g->t.fp)
		fclose(g->t.fp);
	free(g->gen);
	return sa_fail(SA_EINTERNAL, "out of memory");
}

/* The record of the generation: its text and, when asked, its tokens'
 * log-probabilities; when put, out of memory. */
static void
genbuf_close(genbuf *g, const sa_reply *out, int put)
{
	fclose(g->t.fp);
	if (g->pf)
		fclose(g->pf);
	if (put) {
		put_head(out);
		fputs("\"text\":", out->fp);
		sa_json_put_str(out->fp, g->gen, g->glen);
		if (g->pf)
			fprintf(out->fp, ",\"logprobs\":[%.*s]", (int)g->plen, g->probs);
		fputs("}\n", out->fp);
	}
	free(g->gen);
	free(g->probs);
}

static int
reply_text(sa_session *s, const sa_request *req, sa_reply *out)
{
	textout t = { out->fp, out->name, 1, { 0 }, 0, 0 };
	genbuf g;
	int rc;

	if (!out->json) {
		rc = out->echo ? text_put(&t, req->text, req->len) : SA_OK;
		if (rc == SA_OK)
			rc = generate(s, req, &t, NULL);
		out->last = t.last;
		return rc;
	}
	if ((rc = genbuf_open(&g, out->name, req->smp.n_probs > 0)) != SA_OK)
		return rc;
	rc = generate(s, req, &g.t, g.pf);
	genbuf_close(&g, out, rc == SA_OK);
	return rc;
}

/* The tokens of the text: "[1, 2, 3]" as llama-tokenize --ids prints them,
 * or in JSON each token's id and piece (a control token's own text, as
 * llama.cpp shows it, where it prints as nothing). */
static int
reply_tokens(sa_session *s, const sa_request *req, sa_reply *out)
{
	const sa_vocab *v = sa_session_vocab(s);
	int *toks, n, rc;

	if ((rc = tokenize(s, req->special, req->text, req->len, &toks, &n)) != SA_OK)
		return rc;
	if (out->json) {
		put_head(out);
		fputs("\"tokens\":[", out->fp);
	} else {
		fputc('[', out->fp);
	}
	for (int i = 0; i < n; i++) {
		char piece[256];
		int len = sa_token_to_piece(v, toks[i], piece, sizeof piece);
		const char *text;
		size_t tlen;

		if (!out->json) {
			fprintf(out->fp, i ? ", %d" : "%d", toks[i]);
			continue;
		}
		fprintf(out->fp, i ? ",{\"id\":%d,\"piece\":" : "{\"id\":%d,\"piece\":", toks[i]);
		if (len == 0 && (text = sa_token_text(v, toks[i], &tlen)))
			sa_json_put_str(out->fp, text, tlen);
		else
			sa_json_put_str(out->fp, piece, (size_t)(len < (int)sizeof piece ? len : (int)sizeof piece));
		fputc('}', out->fp);
	}
	fputs(out->json ? "]}\n" : "]\n", out->fp);
	free(toks);
	return SA_OK;
}

/* r: req with its messages as the text of the chat template, whose
 * control tokens are tokens; *chat that text, to free. */
static int
chat_apply(const sa_session *s, const sa_request *req, sa_request *r, char **chat)
{
	int tmpl, rc;

	*r = *req;
	*chat = NULL;
	if (!req->n_msg)
		return SA_OK;
	if ((rc = sa_chat_find(sa_session_model(s)->gguf, req->chat_template, &tmpl)) ||
	    (rc = sa_chat_render(tmpl, req->msg, req->n_msg, 1, chat, &r->len)))
		return rc;
	r->text = *chat;
	r->special = 1;
	return SA_OK;
}

int
sa_request_run(sa_session *s, const sa_request *req, sa_reply *out)
{
	sa_request r;
	char *chat;
	int rc;

	if ((rc = chat_apply(s, req, &r, &chat)) == SA_OK)
		rc = r.tokenize ? reply_tokens(s, &r, out) : r.score ? reply_score(s, &r, out) :
		    r.n_choices ? reply_choices(s, &r, out) : reply_text(s, &r, out);
	free(chat);
	return rc;
}

/* ----------------------------------------------------------- batches */

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
		    want_int ? "an integer" : "a number", sa_num_text(a, lo), sa_num_text(b, hi));
	*out = v->num;
	return SA_OK;
}

/* A non-empty array of strings (or of objects when objs), or absent. */
static int
req_arr(const sa_json *req, const char *key, int objs, const sa_json **arr)
{
	const sa_json *v = sa_json_get(req, key);

	*arr = v;
	if (!v)
		return SA_OK;
	if (v->type != SA_JSON_ARR || v->n == 0)
		goto bad;
	for (size_t i = 0; i < v->n; i++)
		if (v->items[i].type != (objs ? SA_JSON_OBJ : SA_JSON_STR))
			goto bad;
	return SA_OK;
bad:
	return sa_fail(SA_EDATA, "\"%s\" must be a non-empty array of %s", key,
	    objs ? "objects" : "strings");
}

/* The strings of array key, a non-empty one, into *s and *len (the
 * caller's to free) and *n; absent: *n = 0. */
static int
req_strs(const sa_json *req, const char *key, const char ***s, size_t **len, int *n)
{
	const sa_json *a;
	int rc;

	if ((rc = req_arr(req, key, 0, &a)) || !a)
		return rc;
	if (!(*s = sa_calloc(a->n, sizeof **s)) || !(*len = sa_calloc(a->n, sizeof **len)))
		return SA_EINTERNAL;
	for (size_t i = 0; i < a->n; i++) {
		(*s)[i] = a->items[i].str;
		(*len)[i] = a->items[i].len;
	}
	*n = (int)a->n;
	return SA_OK;
}

/* The sampling keys of a generation request over the defaults. */
static int
req_sampling(const sa_json *req, sa_sampling *p)
{
	for (const sa_sampling_key *k = sa_sampling_keys; k->name; k++) {
		double v = 0;
		int rc;

		if (!sa_json_get(req, k->name))
			continue;
		if ((rc = req_num(req, k->name, k->lo, k->hi, k->integer, &v)) != SA_OK)
			return rc;
		sa_sampling_set(p, k, v);
	}
	return SA_OK;
}

/* "messages": [{"role": ..., "content": ...}, ...] into *msg (the
 * caller's to free), when there are. */
static int
req_messages(const sa_json *j, sa_request *req, sa_chat_msg **msg)
{
	const sa_json *a;
	int rc;

	if ((rc = req_arr(j, "messages", 1, &a)) || !a)
		return rc;
	if (!(*msg = sa_calloc(a->n, sizeof **msg)))
		return SA_EINTERNAL;
	for (size_t i = 0; i < a->n; i++) {
		const sa_json *role = sa_json_get(&a->items[i], "role");
		const sa_json *content = sa_json_get(&a->items[i], "content");

		if (!role || role->type != SA_JSON_STR || strlen(role->str) != role->len ||
		    !content || content->type != SA_JSON_STR)
			return sa_fail(SA_EDATA, "\"messages\"[%zu] must have a string \"role\" "
			    "and \"content\"", i);
		(*msg)[i] = (sa_chat_msg){ role->str, content->str, content->len };
	}
	req->msg = *msg;
	req->n_msg = (int)a->n;
	return SA_OK;
}

/* The prompt: "messages" in the chat template, or "prompt". */
static int
req_prompt(const sa_json *j, sa_request *req, sa_chat_msg **msg)
{
	if (sa_json_get(j, "messages")) {
		if (sa_json_get(j, "prompt"))
			return sa_fail(SA_EDATA, "give \"prompt\" or \"messages\", not both");
		return req_messages(j, req, msg);
	}
	return req_str(j, "prompt", &req->text, &req->len);
}

/* Whether v names a file: a string without NUL, not empty, and not "-"
 * (the standard input may be the requests themselves). */
static int
req_file(const sa_json *v)
{
	return v->type == SA_JSON_STR && v->len && strlen(v->str) == v->len && strcmp(v->str, "-");
}

/* "deltas" or "lora": an array of files, each a string (scale 1) or an
 * object {"file": F, "scale": S}.  Absent: none.  The strings stay j's. */
static int
req_files(const sa_json *j, const char *key, const char ***path, double **scale, int *n)
{
	const sa_json *v = sa_json_get(j, key);

	*n = 0;
	if (!v)
		return SA_OK;
	if (v->type != SA_JSON_ARR)
		return sa_fail(SA_EDATA, "\"%s\" must be an array of files", key);
	if (!(*path = sa_calloc(v->n + 1, sizeof **path)) || !(*scale = sa_calloc(v->n + 1, sizeof **scale)))
		return SA_EINTERNAL;
	for (size_t i = 0; i < v->n; i++) {
		const sa_json *f = &v->items[i], *file = f, *sc = NULL;

		if (f->type == SA_JSON_OBJ) {
			file = sa_json_get(f, "file");
			sc = sa_json_get(f, "scale");
		}
		if (!file || !req_file(file))
			return sa_fail(SA_EDATA, "\"%s\": item %zu: want a file name or "
			    "{\"file\": NAME, \"scale\": S}", key, i + 1);
		if (sc && (sc->type != SA_JSON_NUM || !(fabs(sc->num) <= FLT_MAX)))
			return sa_fail(SA_EDATA, "\"%s\": item %zu: \"scale\" must be a finite float",
			    key, i + 1);
		(*path)[i] = file->str;
		(*scale)[i] = sc ? sc->num : 1;
	}
	*n = (int)v->n;
	return SA_OK;
}

/* "demos": a file or an array of files, one stream. */
static int
req_demos(const sa_json *j, const char ***path, int *n)
{
	const sa_json *v = sa_json_get(j, "demos");
	size_t k = v && v->type == SA_JSON_ARR ? v->n : 1;

	*n = 0;
	if (!v)
		return SA_OK;
	if (!(*path = sa_calloc(k + 1, sizeof **path)))
		return SA_EINTERNAL;
	for (size_t i = 0; i < k; i++) {
		const sa_json *f = v->type == SA_JSON_ARR ? &v->items[i] : v;

		if (!req_file(f))
			return sa_fail(SA_EDATA, "\"demos\" must be a file name or an array of them");
		(*path)[i] = f->str;
	}
	*n = (int)k;
	return SA_OK;
}

/* The side paths of the request's deltas, demonstrations and LoRA files,
 * NULL when it has none.  Not loadable: the line fails, not the batch. */
static int
req_sides(const sa_json *j, sa_deltaset *ds, const sa_sides **sides)
{
	const char **path = NULL, **lora = NULL, **demos = NULL;
	double *scale = NULL, *lora_scale = NULL;
	sa_delta_spec sp = { 0 };
	int rc;

	*sides = NULL;
	if ((rc = req_files(j, "deltas", &path, &scale, &sp.n)) == SA_OK &&
	    (rc = req_files(j, "lora", &lora, &lora_scale, &sp.n_lora)) == SA_OK &&
	    (rc = req_demos(j, &demos, &sp.n_demos)) == SA_OK &&
	    (sp.n || sp.n_lora || sp.n_demos)) {
		sp.path = path;
		sp.scale = scale;
		sp.lora = lora;
		sp.lora_scale = lora_scale;
		sp.demos = demos;
		rc = ds ? sa_deltaset_get(ds, &sp, sides) : sa_fail(SA_EDATA, "requests take no deltas here");
		if (rc != SA_OK && rc != SA_EINTERNAL)
			rc = SA_EDATA;
	}
	free(path);
	free(scale);
	free(lora);
	free(lora_scale);
	free(demos);
	return rc;
}

/* A request object read: req, and the arrays it points into j with, its
 * own (batch_free). */
typedef struct batch {
	sa_request req;
	const char **cs, **stop;
	size_t *cl, *stop_len;
	sa_chat_msg *msg;
} batch;

static void
batch_free(batch *b)
{
	free(b->cs);
	free(b->cl);
	free(b->msg);
	free(b->stop);
	free(b->stop_len);
}

/* What the request asks, into b->req. */
static int
batch_kind(const sa_json *j, const sa_json *choices, const sa_json *score, batch *b)
{
	sa_request *req = &b->req;
	int rc;

	if (choices) {
		if ((rc = req_prompt(j, req, &b->msg)) ||
		    (rc = req_strs(j, "choices", &b->cs, &b->cl, &req->n_choices)))
			return rc;
		req->choice = b->cs;
		req->choice_len = b->cl;
		return SA_OK;
	}
	if (score && score->num) {
		req->score = 1;
		if (sa_json_get(j, "text"))
			return req_str(j, "text", &req->text, &req->len);
		if (sa_json_get(j, "prompt") || sa_json_get(j, "messages"))
			return req_prompt(j, req, &b->msg);
		return sa_fail(SA_EDATA, "missing \"text\"");
	}
	if ((rc = req_prompt(j, req, &b->msg)) || (rc = req_sampling(j, &req->smp)))
		return rc;
	if (!sa_json_get(j, "stop"))
		return SA_OK;
	rc = req_strs(j, "stop", &b->stop, &b->stop_len, &req->smp.n_stop);
	req->smp.stop = b->stop;
	req->smp.stop_len = b->stop_len;
	return rc;
}

/* A request object: "choices" ranks them after "prompt", "score": true
 * scores "text" (or "prompt"), else "prompt" is generated after; each
 * "prompt" may be "messages" instead.  Over the defaults def. */
static int
batch_read(const sa_json *j, const sa_request *def, batch *b)
{
	const sa_json *choices = sa_json_get(j, "choices"), *score = sa_json_get(j, "score");
	const sa_json *special = sa_json_get(j, "special");

	*b = (batch){ .req = { .smp = def->smp, .special = def->special,
	    .chat_template = def->chat_template } };
	if (score && score->type != SA_JSON_BOOL)
		return sa_fail(SA_EDATA, "\"score\" must be true or false");
	if (special && special->type != SA_JSON_BOOL)
		return sa_fail(SA_EDATA, "\"special\" must be true or false");
	if (special)
		b->req.special = special->num != 0;
	return batch_kind(j, choices, score, b);
}

/* Request j carried out alone on s, with its side paths. */
static int
batch_request(sa_session *s, sa_deltaset *ds, const sa_json *j, const sa_request *def,
    sa_reply *out)
{
	const sa_sides *sides = NULL;
	batch b;
	int rc;

	if ((rc = batch_read(j, def, &b)) == SA_OK && (rc = req_sides(j, ds, &sides)) == SA_OK) {
		sa_session_use_sides(s, sides);
		rc = sa_request_run(s, &b.req, out);
		if (sides)
			sa_deltaset_put(ds, sides);
	}
	batch_free(&b);
	return rc;
}

/* ------------------------------------------------ requests in flight */

/*
 * With several sessions, generation requests run together: each on a
 * session (a slot) of its own, and every decoding step one pass over the
 * weights for all of them (sa_sessions_decode).  Other requests run alone
 * on a free session.  Records come out in the order of the lines: one
 * that is done waits for those before it.  Every request starts from an
 * empty cache: which cache a request would meet depends on the others in
 * flight, and a prompt run in other chunks rounds otherwise (sgemm or the
 * row kernels), so each answer is that of the request alone, exactly.
 * A slot's tokens go through the emitter of a generation alone: its stop
 * strings, repeat penalty and log-probabilities are the same.
 */
typedef struct slot {
	sa_session *s;
	int busy;
	sa_json j;                /* the request, which b points into */
	batch b;
	sa_request r;             /* b.req, its messages rendered (chat) */
	char *chat;
	const sa_sides *sides;
	sa_sampler smp;
	long i;
	int next;                 /* token to run next, -1 none */
	emitter e;
	genbuf g;                 /* its text and log-probabilities */
	long rec;                 /* its record in the queue */
	char *id;                 /* JSON text of its id */
	size_t id_len;
	long lineno;
} slot;

typedef struct record {
	char *buf;
	size_t len;
	int done;
} record;

typedef struct server {
	sa_session *const *s;
	int n;
	slot *sl;
	sa_deltaset *ds;
	record *q;                /* records q0.. not yet written */
	long q0, qn, qcap;
	FILE *out;
	const char *out_name;
	int failed;
} server;

/* The JSON object of a failed line. */
static void
put_error(const sa_reply *r, long lineno)
{
	char msg[1100];

	snprintf(msg, sizeof msg, "line %ld: %s", lineno, sa_error());
	put_head(r);
	fputs("\"error\":", r->fp);
	sa_json_put_str(r->fp, msg, strlen(msg));
	fputs("}\n", r->fp);
}

/* A place for the next record, which a memory stream fills. */
static int
record_new(server *sv, long *idx)
{
	if (sv->qn - sv->q0 == sv->qcap) {
		long cap = sv->qcap ? 2 * sv->qcap : 16;
		record *q = sa_calloc((size_t)cap, sizeof *q);

		if (!q)
			return SA_EINTERNAL;
		for (long k = sv->q0; k < sv->qn; k++)
			q[k % cap] = sv->q[k % sv->qcap];
		free(sv->q);
		sv->q = q;
		sv->qcap = cap;
	}
	*idx = sv->qn++;
	sv->q[*idx % sv->qcap] = (record){ NULL, 0, 0 };
	return SA_OK;
}

/* The records done, from the first on, to the output. */
static int
records_flush(server *sv)
{
	while (sv->q0 < sv->qn && sv->q[sv->q0 % sv->qcap].done) {
		record *r = &sv->q[sv->q0++ % sv->qcap];

		fwrite(r->buf, 1, r->len, sv->out);
		free(r->buf);
		if (fflush(sv->out) == EOF)
			return sa_fail(SA_EIO, "%s: %s", sv->out_name, strerror(errno));
	}
	return SA_OK;
}

/* Slot k's request, done with: what it holds freed. */
static void
slot_clear(server *sv, slot *k)
{
	if (k->sides)
		sa_deltaset_put(sv->ds, k->sides);
	batch_free(&k->b);
	sa_json_free(&k->j);
	free(k->chat);
	free(k->id);
	k->busy = 0;
}

/* Slot k's generation ended (rc): its text or its error is its record. */
static int
slot_end(server *sv, slot *k, int rc)
{
	record *r = &sv->q[k->rec % sv->qcap];
	sa_reply reply = { NULL, sv->out_name, 1, 0, k->id, k->id_len, 0 };

	rc = gen_close(&k->e, rc);
	if ((rc == SA_OK || rc == SA_EDATA) && !(reply.fp = open_memstream(&r->buf, &r->len)))
		rc = sa_fail(SA_EINTERNAL, "out of memory");
	genbuf_close(&k->g, &reply, rc == SA_OK);
	if (rc == SA_EDATA) {
		put_error(&reply, k->lineno);
		sv->failed = 1;
		rc = SA_OK;
	}
	if (reply.fp) {
		fclose(reply.fp);
		r->done = 1;
	}
	slot_clear(sv, k);
	return rc;
}

/* One step of every generation in flight: a token drawn for each, then
 * one pass that runs the tokens of those that go on. */
static int
step(server *sv)
{
	sa_session *run[16];
	int toks[16], n = 0, rc = SA_OK;

	for (int j = 0; j < sv->n && rc == SA_OK; j++) {
		slot *k = &sv->sl[j];

		if (!k->busy)
			continue;
		rc = sa_session_gen_step(k->s, &k->smp, k->i++, k->r.smp.n_predict, emit_token, &k->e,
		    &k->next);
		if (rc != SA_OK || k->next < 0)
			rc = slot_end(sv, k, rc);
		else {
			run[n] = k->s;
			toks[n++] = k->next;
		}
	}
	if (rc == SA_OK && n)
		rc = sa_sessions_decode(run, toks, n);
	return rc;
}

/* A slot without a generation, after as many steps as free one. */
static int
slot_free(server *sv, slot **out)
{
	int rc = SA_OK;

	for (;;) {
		for (int j = 0; j < sv->n; j++)
			if (!sv->sl[j].busy) {
				*out = &sv->sl[j];
				return SA_OK;
			}
		if ((rc = step(sv)) != SA_OK || (rc = records_flush(sv)) != SA_OK)
			return rc;
	}
}

/* Generation request *j (now the slot's) of line lineno set off on a free
 * slot: its prompt fed; the steps draw its tokens. */
static int
slot_start(server *sv, sa_json *j, const sa_request *def, long lineno)
{
	const sa_json *id = sa_json_get(j, "id");
	slot *k;
	long rec;
	int rc, rc2;

	if ((rc = slot_free(sv, &k)) != SA_OK || (rc = record_new(sv, &rec)) != SA_OK)
		return rc;
	memset(k, 0, sizeof *k);
	k->s = sv->s[k - sv->sl];
	k->rec = rec;
	k->lineno = lineno;
	k->id_len = id ? id->raw_len : 4;
	if (!(k->id = strndup(id ? id->raw : "null", k->id_len)))
		return sa_fail(SA_EINTERNAL, "out of memory");
	k->j = *j;
	memset(j, 0, sizeof *j);
	rc = batch_read(&k->j, def, &k->b);
	if ((rc2 = genbuf_open(&k->g, sv->out_name, rc == SA_OK && k->b.req.smp.n_probs > 0))) {
		slot_clear(sv, k);
		return rc2;
	}
	k->busy = 1;
	k->e.out = &k->g.t;
	if (rc == SA_OK && (rc = req_sides(&k->j, sv->ds, &k->sides)) == SA_OK &&
	    (rc = chat_apply(k->s, &k->b.req, &k->r, &k->chat)) == SA_OK) {
		sa_session_use_sides(k->s, k->sides);
		sa_session_reset(k->s);
		if ((rc = gen_open(k->s, &k->r, &k->g.t, k->g.pf, &k->e, &k->smp)) == SA_OK)
			rc = sa_session_gen_start(k->s, k->e.prompt, k->e.n_prompt, k->r.smp.n_predict);
	}
	if (rc != SA_OK || k->r.smp.n_predict == 0)
		return slot_end(sv, k, rc);
	return SA_OK;
}

/* Whether request j generates text: neither "choices" nor a "score" but false. */
static int
generates(const sa_json *j)
{
	const sa_json *score = sa_json_get(j, "score");

	return !sa_json_get(j, "choices") && (!score || (score->type == SA_JSON_BOOL && !score->num));
}

int
sa_serve(sa_session *const *s, int n, sa_deltaset *ds, FILE *in, const char *in_name,
    const sa_request *def, FILE *out, const char *out_name)
{
	server sv = { s, n, NULL, ds, NULL, 0, 0, 0, out, out_name, 0 };
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;
	long lineno = 0;
	int rc = SA_OK;

	if (n < 1 || n > 16)
		return sa_fail(SA_EUSAGE, "%d sessions: a batch runs on 1 to 16", n);
	if (!(sv.sl = sa_calloc((size_t)n, sizeof *sv.sl)))
		return SA_EINTERNAL;
	while (rc == SA_OK && (len = getline(&line, &cap, in)) > 0) {
		sa_reply reply = { out, out_name, 1, 0, "null", 4, 0 };
		const sa_json *id = NULL;
		record *r = NULL;
		sa_json req;
		slot *k;
		long rec;
		size_t i;

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
			id = sa_json_get(&req, "id");
			if (req.type != SA_JSON_OBJ)
				rc = sa_fail(SA_EDATA, "a request must be a JSON object");
			else if (id) {
				reply.id = id->raw;
				reply.id_len = id->raw_len;
			}
		}
		if (rc == SA_OK && n > 1 && generates(&req)) {
			rc = slot_start(&sv, &req, def, lineno);
		} else {
			/* Alone on a free session; behind records still to come,
			 * into a record of its own. */
			if ((rc == SA_OK || rc == SA_EDATA) && sv.q0 < sv.qn) {
				int rc2 = record_new(&sv, &rec);

				if (rc2 == SA_OK) {
					r = &sv.q[rec % sv.qcap];
					if (!(reply.fp = open_memstream(&r->buf, &r->len)))
						rc2 = sa_fail(SA_EINTERNAL, "out of memory");
				}
				rc = rc2 != SA_OK ? rc2 : rc;
			}
			if (rc == SA_OK && (rc = slot_free(&sv, &k)) == SA_OK) {
				if (n > 1)
					sa_session_reset(s[k - sv.sl]);
				rc = batch_request(s[k - sv.sl], ds, &req, def, &reply);
			}
			/* Bad data fails its line; anything else ends the run. */
			if (rc == SA_EDATA) {
				put_error(&reply, lineno);
				sv.failed = 1;
				rc = SA_OK;
			}
			if (r) {
				fclose(reply.fp);
				r->done = 1;
			}
		}
		sa_json_free(&req);
		if (rc == SA_OK && !r && sv.q0 == sv.qn && fflush(out) == EOF)
			rc = sa_fail(SA_EIO, "%s: %s", out_name, strerror(errno));
		if (rc == SA_OK)
			rc = records_flush(&sv);
	}
	if (rc == SA_OK && ferror(in))
		rc = sa_fail(SA_EIO, "%s: %s", in_name, strerror(errno));
	for (int j = 0; j < n && rc == SA_OK; j++)
		while (rc == SA_OK && sv.sl[j].busy)
			if ((rc = step(&sv)) == SA_OK)
				rc = records_flush(&sv);
	for (int j = 0; j < n; j++)
		if (sv.sl[j].busy)
			slot_end(&sv, &sv.sl[j], rc);
	for (long k = sv.q0; k < sv.qn; k++)
		free(sv.q[k % sv.qcap].buf);
	free(sv.q);
	free(sv.sl);
	free(line);
	if (rc != SA_OK)
		return rc;
	return sv.failed ? SA_EDATA : SA_OK;
}
