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

typedef struct emitter {
	const sa_vocab *v;
	textout *out;
	const int *prompt;
	int n_prompt, first;
} emitter;

static int
emit_token(void *ctx, int tok, int *stop)
{
	emitter *e = ctx;
	char small[256], *piece = small;
	int first = e->first, n, rc;

	e->first = 0;
	/* After a bare BOS, the detokenizer knows whether the token's leading
	 * space belongs to the text (it does not for SentencePiece). */
	if (first && e->n_prompt == 1 && e->prompt[0] == sa_vocab_bos(e->v)) {
		int pair[2] = { e->prompt[0], tok };
		char *text;
		size_t len;

		if ((rc = sa_detokenize(e->v, pair, 2, &text, &len)) != SA_OK)
			return rc;
		rc = text_put(e->out, text, len);
		free(text);
		return rc;
	}
	n = sa_token_to_piece(e->v, tok, small, sizeof small);
	if (n > (int)sizeof small) {
		if (!(piece = sa_malloc((size_t)n)))
			return SA_EINTERNAL;
		sa_token_to_piece(e->v, tok, piece, n);
	}
	rc = n > 0 ? text_put(e->out, piece, (size_t)n) : SA_OK;
	if (piece != small)
		free(piece);
	return rc;
}

static int
generate(sa_session *s, const char *prompt, size_t plen, const sa_sampling *p, textout *out)
{
	emitter e = { sa_session_vocab(s), out, NULL, 0, 1 };
	sa_sampler smp;
	int *toks, rc, end;

	if ((rc = sa_session_tokenize(s, prompt, plen, &toks, &e.n_prompt)) != SA_OK)
		return rc;
	e.prompt = toks;
	sa_sampler_init(&smp, (float)p->temp, (int)p->top_k, (float)p->top_p, (float)p->min_p, p->seed);
	rc = sa_session_generate(s, toks, e.n_prompt, &smp, p->n_predict, emit_token, &e);
	end = text_end(out);
	free(toks);
	return rc != SA_OK ? rc : end;
}

/* ------------------------------------------------------------ scoring */

/* Sum log-likelihood of every token after the first. */
static int
score_text(sa_session *s, const char *text, size_t len, double *logprob, int *count)
{
	int *toks, n, rc;

	if ((rc = sa_session_tokenize(s, text, len, &toks, &n)) != SA_OK)
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
	rc = seq && n_seq ? sa_session_tokenize(s, req->text, req->len, &ptoks, &np) : SA_EINTERNAL;
	for (int i = 0; i < n && rc == SA_OK; i++) {
		char *text = sa_malloc(req->len + req->choice_len[i] + 1);

		if (!text) {
			rc = SA_EINTERNAL;
			break;
		}
		memcpy(text, req->text, req->len);
		memcpy(text + req->len, req->choice[i], req->choice_len[i]);
		rc = sa_session_tokenize(s, text, req->len + req->choice_len[i], &seq[i], &n_seq[i]);
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

	if ((rc = score_text(s, req->text, req->len, &lp, &count)) != SA_OK)
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

static int
reply_text(sa_session *s, const sa_request *req, sa_reply *out)
{
	textout t = { out->fp, out->name, 1, { 0 }, 0, 0 };
	char *gen = NULL;
	size_t glen;
	int rc;

	if (!out->json) {
		rc = out->echo ? text_put(&t, req->text, req->len) : SA_OK;
		if (rc == SA_OK)
			rc = generate(s, req->text, req->len, &req->smp, &t);
		out->last = t.last;
		return rc;
	}
	if (!(t.fp = open_memstream(&gen, &glen)))
		return sa_fail(SA_EINTERNAL, "out of memory");
	t.flush = 0;
	rc = generate(s, req->text, req->len, &req->smp, &t);
	fclose(t.fp);
	if (rc == SA_OK) {
		put_head(out);
		fputs("\"text\":", out->fp);
		sa_json_put_str(out->fp, gen, glen);
		fputs("}\n", out->fp);
	}
	free(gen);
	return rc;
}

int
sa_request_run(sa_session *s, const sa_request *req, sa_reply *out)
{
	if (req->score)
		return reply_score(s, req, out);
	if (req->n_choices)
		return reply_choices(s, req, out);
	return reply_text(s, req, out);
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

/* The sampling keys of a generation request over the defaults. */
static int
req_sampling(const sa_json *req, sa_sampling *p)
{
	double n_predict = (double)p->n_predict, top_k = (double)p->top_k, seed = -2;
	int rc;

	if ((rc = req_num(req, "n_predict", -1, INT_MAX, 1, &n_predict)) ||
	    (rc = req_num(req, "temp", 0, 1e6, 0, &p->temp)) ||
	    (rc = req_num(req, "top_k", 0, INT_MAX, 1, &top_k)) ||
	    (rc = req_num(req, "top_p", 0, 1, 0, &p->top_p)) ||
	    (rc = req_num(req, "min_p", 0, 1, 0, &p->min_p)) ||
	    (rc = req_num(req, "seed", -1, 0x1p64, 1, &seed)))
		return rc;
	p->n_predict = (long)n_predict;
	p->top_k = (long)top_k;
	if (seed == -1)
		p->seed = sa_seed_from_clock();
	else if (seed >= 0)
		p->seed = seed >= 0x1p64 ? UINT64_MAX : (uint64_t)seed;
	return SA_OK;
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

/* A request object: "choices" ranks them after "prompt", "score": true
 * scores "text" (or "prompt"), else "prompt" is generated after. */
static int
batch_request(sa_session *s, sa_deltaset *ds, const sa_json *j, const sa_sampling *def,
    sa_reply *out)
{
	const sa_json *choices = sa_json_get(j, "choices"), *score = sa_json_get(j, "score");
	const sa_sides *sides = NULL;
	sa_request req = { .smp = *def };
	const char **cs = NULL;
	size_t *cl = NULL;
	int rc;

	if (score && score->type != SA_JSON_BOOL)
		return sa_fail(SA_EDATA, "\"score\" must be true or false");
	if (choices) {
		if ((rc = req_str(j, "prompt", &req.text, &req.len)))
			return rc;
		if (choices->type != SA_JSON_ARR || choices->n == 0)
			return sa_fail(SA_EDATA, "\"choices\" must be a non-empty array of strings");
		for (size_t i = 0; i < choices->n; i++)
			if (choices->items[i].type != SA_JSON_STR)
				return sa_fail(SA_EDATA, "\"choices\" must be a non-empty array of strings");
		if (!(cs = sa_calloc(choices->n, sizeof *cs)) || !(cl = sa_calloc(choices->n, sizeof *cl))) {
			free(cs);
			return SA_EINTERNAL;
		}
		for (size_t i = 0; i < choices->n; i++) {
			cs[i] = choices->items[i].str;
			cl[i] = choices->items[i].len;
		}
		req.choice = cs;
		req.choice_len = cl;
		req.n_choices = (int)choices->n;
	} else if (score && score->num) {
		req.score = 1;
		if (sa_json_get(j, "text"))
			rc = req_str(j, "text", &req.text, &req.len);
		else if (sa_json_get(j, "prompt"))
			rc = req_str(j, "prompt", &req.text, &req.len);
		else
			rc = sa_fail(SA_EDATA, "missing \"text\"");
		if (rc)
			return rc;
	} else if ((rc = req_str(j, "prompt", &req.text, &req.len)) ||
	    (rc = req_sampling(j, &req.smp))) {
		return rc;
	}
	if ((rc = req_sides(j, ds, &sides)) == SA_OK) {
		sa_session_use_sides(s, sides);
		rc = sa_request_run(s, &req, out);
		if (sides)
			sa_deltaset_put(ds, sides);
	}
	free(cs);
	free(cl);
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
 */
typedef struct slot {
	sa_session *s;
	int busy;
	const sa_sides *sides;
	sa_sampler smp;
	long i, max_new;
	int next;                 /* token to run next, -1 none */
	int *toks;                /* the prompt (the emitter reads it) */
	emitter e;
	textout t;                /* the text, to gen */
	char *gen;
	size_t glen;
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

/* Slot k's generation ended (rc): its text or its error is its record. */
static int
slot_end(server *sv, slot *k, int rc)
{
	record *r = &sv->q[k->rec % sv->qcap];
	sa_reply reply = { NULL, sv->out_name, 1, 0, k->id, k->id_len, 0 };
	int end = text_end(&k->t);

	fclose(k->t.fp);
	rc = rc != SA_OK ? rc : end;
	if (rc == SA_OK || rc == SA_EDATA) {
		if (!(reply.fp = open_memstream(&r->buf, &r->len)))
			rc = sa_fail(SA_EINTERNAL, "out of memory");
		else if (rc == SA_OK) {
			put_head(&reply);
			fputs("\"text\":", reply.fp);
			sa_json_put_str(reply.fp, k->gen, k->glen);
			fputs("}\n", reply.fp);
		} else {
			put_error(&reply, k->lineno);
			sv->failed = 1;
			rc = SA_OK;
		}
		if (reply.fp)
			fclose(reply.fp);
		r->done = 1;
	}
	if (k->sides)
		sa_deltaset_put(sv->ds, k->sides);
	free(k->gen);
	free(k->toks);
	free(k->id);
	memset(&k->t, 0, sizeof k->t);
	k->gen = NULL;
	k->toks = NULL;
	k->id = NULL;
	k->busy = 0;
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
		rc = sa_session_gen_step(k->s, &k->smp, k->i++, k->max_new, emit_token, &k->e, &k->next);
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

/* Generation request j of line lineno set off on a free slot: its prompt
 * fed; the steps draw its tokens. */
static int
slot_start(server *sv, const sa_json *j, const sa_json *id, const sa_sampling *def,
    long lineno)
{
	sa_request req = { .smp = *def };
	slot *k;
	long rec;
	int rc, n;

	if ((rc = slot_free(sv, &k)) != SA_OK || (rc = record_new(sv, &rec)) != SA_OK)
		return rc;
	memset(k, 0, sizeof *k);
	k->s = sv->s[k - sv->sl];
	k->rec = rec;
	k->lineno = lineno;
	k->id_len = id ? id->raw_len : 4;
	k->id = strndup(id ? id->raw : "null", k->id_len);
	k->t = (textout){ open_memstream(&k->gen, &k->glen), sv->out_name, 0, { 0 }, 0, 0 };
	if (!k->id || !k->t.fp) {
		if (k->t.fp)
			fclose(k->t.fp);
		free(k->id);
		free(k->gen);
		return sa_fail(SA_EINTERNAL, "out of memory");
	}
	k->busy = 1;
	if ((rc = req_str(j, "prompt", &req.text, &req.len)) == SA_OK &&
	    (rc = req_sampling(j, &req.smp)) == SA_OK &&
	    (rc = req_sides(j, sv->ds, &k->sides)) == SA_OK) {
		sa_session_use_sides(k->s, k->sides);
		sa_session_reset(k->s);
		rc = sa_session_tokenize(k->s, req.text, req.len, &k->toks, &n);
	}
	if (rc == SA_OK) {
		k->e = (emitter){ sa_session_vocab(k->s), &k->t, k->toks, n, 1 };
		sa_sampler_init(&k->smp, (float)req.smp.temp, (int)req.smp.top_k,
		    (float)req.smp.top_p, (float)req.smp.min_p, req.smp.seed);
		k->max_new = req.smp.n_predict;
		rc = sa_session_gen_start(k->s, k->toks, n, k->max_new);
	}
	if (rc != SA_OK || k->max_new == 0)
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
    const sa_sampling *def, FILE *out, const char *out_name)
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
			rc = slot_start(&sv, &req, id, def, lineno);
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
