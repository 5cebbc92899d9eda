/*
 * train_data.c - what the trainer reads, and the episodes it draws from it:
 * the text corpus, tasks, word pools and open-vocabulary words, the four
 * kinds of pretraining sequence and the adapter's episodes.
 *
 * Every draw comes from one splitmix64 stream in a fixed order, so that a
 * seed gives the same data on any machine and for any number of threads,
 * and a checkpoint of the stream's state resumes it exactly.
 */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "sa.h"
#include "train_impl.h"

/* ------------------------------------------------------------ token data */

static int
tokenize(const sa_tdata *d, const char *s, size_t n, sa_toks *out)
{
	*out = (sa_toks){ 0 };
	int rc = sa_tokenize(d->vocab, s, n, 0, &out->t, &out->n);
	out->cap = out->n;
	return rc;
}

/* FILE.gz is read through zlib. */
static int
read_text(const char *path, char **data, size_t *len)
{
	size_t n = strlen(path), cap = 1 << 20, used = 0;
	gzFile gz;
	char *buf, *p;
	int got;

	if (n < 3 || strcmp(path + n - 3, ".gz"))
		return sa_file_read(path, data, len);
	if (!(gz = gzopen(path, "rb")))
		return sa_fail(SA_ENOINPUT, "%s: %s", path, strerror(errno));
	if (!(buf = sa_malloc(cap))) {
		gzclose(gz);
		return SA_EINTERNAL;
	}
	while ((got = gzread(gz, buf + used, (unsigned)(cap - used - 1))) > 0) {
		used += got;
		if (cap - used < 2) {
			if (!(p = realloc(buf, cap *= 2))) {
				free(buf);
				gzclose(gz);
				return sa_fail(SA_EINTERNAL, "out of memory");
			}
			buf = p;
		}
	}
	gzclose(gz);
	if (got < 0) {
		free(buf);
		return sa_fail(SA_EDATA, "%s: not a valid gzip file", path);
	}
	buf[used] = 0;
	*data = buf;
	*len = used;
	return SA_OK;
}

/* The lines of a text file, each tokenized on its own, appended to dst. */
static int
load_text(sa_tdata *d, sa_toks *dst, const char *path)
{
	char *data;
	size_t len, start = 0;
	int rc;

	if ((rc = read_text(path, &data, &len)) != SA_OK)
		return rc;
	for (size_t i = 0; i <= len && rc == SA_OK; i++) {
		if (i < len && data[i] != '\n')
			continue;
		if (i > start) {
			sa_toks t;
			if ((rc = tokenize(d, data + start, i - start + (i < len), &t)) == SA_OK)
				rc = sa_toks_push(dst, t.t, t.n);
			free(t.t);
		}
		start = i + 1;
	}
	free(data);
	return rc;
}

/* ----------------------------------------------------------------- tasks */

/* label's index in labels[0..*n), appended when new. */
static int
label_index(const char **labels, int *n, const char *label)
{
	for (int i = 0; i < *n; i++)
		if (!strcmp(labels[i], label))
			return i;
	labels[*n] = label;
	return (*n)++;
}

/* The examples ex[0..n) tokenized as sa_qa_build does: "{input} ->", then
 * the answer. */
static int
load_examples(sa_tdata *d, const sa_example *ex, int n, const char **labels,
    int *n_labels, sa_texample **out)
{
	int rc = SA_OK;

	if (!(*out = sa_calloc((size_t)n, sizeof **out)))
		return SA_EINTERNAL;
	for (int i = 0; i < n && rc == SA_OK; i++) {
		sa_texample *e = &(*out)[i];
		const char *label = ex[i].label;
		sa_qa q;
		e->label = label_index(labels, n_labels, label);
		if ((rc = sa_qa_build(&q, d->vocab, ex[i].input, &label, 1)) != SA_OK)
			break;
		e->answer_at = q.n_prefix;
		if ((rc = sa_toks_push(&e->demo, q.query, q.n_prefix)) == SA_OK)
			rc = sa_toks_push(&e->demo, q.answer[0], q.n_answer[0]);
		sa_qa_free(&q);
	}
	return rc;
}

static int
load_task(sa_tdata *d, sa_ttask *t, const char *dir)
{
	sa_task *st;
	const char **labels;
	int rc;

	if ((rc = sa_task_load(&st, dir, "dev")) != SA_OK)
		return rc;
	if (!(labels = sa_calloc((size_t)st->n_train + st->n_eval, sizeof *labels))) {
		sa_task_free(st);
		return SA_EINTERNAL;
	}
	if ((rc = load_examples(d, st->train, st->n_train, labels, &t->n_labels, &t->train)) == SA_OK)
		rc = load_examples(d, st->eval, st->n_eval, labels, &t->n_labels, &t->dev);
	t->n_train = st->n_train;
	t->n_dev = st->n_eval;
	if (rc == SA_OK && t->n_train < 2)
		rc = sa_fail(SA_EDATA, "%s: fewer than 2 training examples", dir);
	t->renamable = t->n_labels >= 2 && t->n_labels <= 16;
	for (int j = 0; j < t->n_labels; j++)
		t->renamable &= isalpha((unsigned char)labels[j][0]) != 0;
	/* each label's tokens where an answer has them, the newline left out */
	for (int i = 0; rc == SA_OK && t->renamable && i < t->n_train; i++) {
		const sa_texample *x = &t->train[i];
		int n = x->demo.n - x->answer_at - 1;
		if (t->label_n[x->label] == 0 && n >= 1 && n <= 3) {
			memcpy(t->label_tok[x->label], x->demo.t + x->answer_at, (size_t)n * sizeof(int));
			t->label_n[x->label] = n;
		}
	}
	free(labels);
	sa_task_free(st);
	return rc;
}

/* ----------------------------------------------------------------- pools */

static int
load_pool(sa_tdata *d, sa_tpool *p, const char *dir, const char *file)
{
	char path[4096], *data, *line, *save = NULL;
	size_t len;
	int rc;

	snprintf(path, sizeof path, "%s/%s", dir, file);
	if ((rc = sa_file_read(path, &data, &len)) != SA_OK)
		return rc;
	for (line = strtok_r(data, "\n", &save); line && rc == SA_OK;
	    line = strtok_r(NULL, "\n", &save)) {
		if (!*line)
			continue;
		sa_toks *w = realloc(p->w, (p->n + 1) * sizeof *w);
		if (!w) {
			rc = sa_fail(SA_EINTERNAL, "out of memory");
			break;
		}
		p->w = w;
		if ((rc = tokenize(d, line, strlen(line), &p->w[p->n])) == SA_OK)
			p->n++;
	}
	free(data);
	if (rc == SA_OK && p->n < 4)
		rc = sa_fail(SA_EDATA, "%s: fewer than 4 entries", path);
	return rc;
}

static void
pool_free(sa_tpool *p)
{
	for (int i = 0; i < p->n; i++)
		free(p->w[i].t);
	free(p->w);
}

/*
 * Open-vocabulary words for random mappings (--map-vocab) and renamed task
 * labels (--rename): one to three tokens, a word-start piece (" cat") and
 * continuation pieces ("s"), half of them whole words of the corpus and half
 * made-up compounds of pieces, so that the only way to answer is to read the
 * context.  A word of two or three tokens whose text hashes (FNV-1a) to 0
 * or 1 mod 10 is held out: scripts/make-pools.py draws the dev and test
 * pools of data/pools from exactly those, so evaluation binds words no
 * episode bound.
 */
typedef struct word { int t[3], n; } word;

enum { LINE_KEY_MAX = 6 };   /* tokens of a key laid out after a newline */

static int
piece_letters(const sa_tdata *d, int tok, char *buf, int cap)
{
	int n = sa_token_to_piece(d->vocab, tok, buf, cap - 1);
	return n < cap ? n : -1;
}

static int
build_word_pieces(sa_tdata *d)
{
	int V = sa_vocab_size(d->vocab);

	if (!(d->piece_kind = sa_calloc((size_t)V, 1)) ||
	    !(d->word_start = sa_malloc(V * sizeof *d->word_start)) ||
	    !(d->word_cont = sa_malloc(V * sizeof *d->word_cont)))
		return SA_EINTERNAL;
	for (int i = 0; i < V; i++) {
		char b[64];
		int n = piece_letters(d, i, b, sizeof b), lead = n > 0 && b[0] == ' ', k;
		for (k = lead; k < n && b[k] >= 'a' && b[k] <= 'z'; k++)
			;
		if (n < 1 || k < n || n - lead < 1 + lead)
			continue;
		d->piece_kind[i] = lead ? 1 : 2;
		if (lead)
			d->word_start[d->n_word_start++] = i;
		else
			d->word_cont[d->n_word_cont++] = i;
	}
	if (d->n_word_start < 16 || d->n_word_cont < 16)
		return sa_fail(SA_EDATA, "--map-vocab: the vocabulary has too few word pieces");
	return SA_OK;
}

/*
 * 1 if the word's text (without its leading space) is held out.  Words of
 * one token never are: a token that never answers a mapping is one the
 * model learns never to answer, and then it cannot copy it either.
 */
static int
word_held_out(const sa_tdata *d, const word *w)
{
	uint32_t h = 0x811c9dc5u;

	if (w->n < 2)
		return 0;
	for (int i = 0; i < w->n; i++) {
		char b[64];
		int n = piece_letters(d, w->t[i], b, sizeof b);
		for (int k = i == 0; k < n; k++)
			h = (h ^ (unsigned char)b[k]) * 0x01000193u;
	}
	return h % 10 < 2;
}

/* A word of n_tok tokens (1 to 3), not held out: with text_only a whole
 * word of the corpus, else one in two times. */
static word
draw_word(const sa_tdata *d, uint64_t *r, int n_tok, int text_only)
{
	const sa_toks *c = &d->corpus;
	const signed char *kind = d->piece_kind;
	/* chosen once: chosen again after each word of the wrong length, the
	 * corpus would lose to compounds, which never miss */
	int from_corpus = (text_only || sa_splitmix64(r) & 1) && c->n > 64;

	for (;;) {
		word w = { .n = 0 };
		if (from_corpus) {
			/* the next whole word of the corpus from a random place */
			long at = sa_unif_below(r, c->n - 64), end = at + 60;
			while (at < end && kind[c->t[at]] != 1)
				at++;
			if (at == end)
				continue;
			w.t[w.n++] = c->t[at++];
			while (w.n < 3 && kind[c->t[at]] == 2)
				w.t[w.n++] = c->t[at++];
			if (w.n != n_tok || kind[c->t[at]] == 2)
				continue;
		} else {
			w.t[w.n++] = d->word_start[sa_unif_below(r, d->n_word_start)];
			while (w.n < n_tok)
				w.t[w.n++] = d->word_cont[sa_unif_below(r, d->n_word_cont)];
		}
		if (!word_held_out(d, &w))
			return w;
	}
}

/* One to three tokens: a label's length, or a key's. */
static int
draw_word_len(uint64_t *r)
{
	return 1 + (int)sa_unif_below(r, 3);
}

static int
word_eq(const word *a, const word *b)
{
	return a->n == b->n && !memcmp(a->t, b->t, a->n * sizeof *a->t);
}

/* n distinct words. */
static void
draw_words(const sa_tdata *d, uint64_t *r, word *w, int n)
{
	for (int i = 0; i < n; i++) {
		int dup;
		do {
			w[i] = draw_word(d, r, draw_word_len(r), 0);
			dup = 0;
			for (int j = 0; j < i && !dup; j++)
				dup = word_eq(&w[i], &w[j]);
		} while (dup);
	}
}

/*
 * n distinct words of two or three tokens made of a few pieces, so that
 * they share beginnings and endings ("con-cert", "con-tract", "pro-tract"):
 * a model that tells words apart by one of their tokens cannot answer
 * these, and real words share pieces so.
 */
static void
draw_words_alike(const sa_tdata *d, uint64_t *r, word *w, int n)
{
	int start[8], cont[8], ns = 2, nc = 2;

	while (ns * nc * (1 + nc) < 2 * n && ns < 8)
		ns++, nc++;
	for (int i = 0; i < ns; i++)
		start[i] = d->word_start[sa_unif_below(r, d->n_word_start)];
	for (int i = 0; i < nc; i++)
		cont[i] = d->word_cont[sa_unif_below(r, d->n_word_cont)];
	for (int i = 0; i < n; i++) {
		int dup, tries = 0;
		do {
			/* the pieces drawn may repeat and leave fewer words than
			 * asked: then a word of any pieces */
			if (++tries > 100)
				w[i] = draw_word(d, r, 2 + (int)sa_unif_below(r, 2), 0);
			else {
				w[i].n = 2 + (int)sa_unif_below(r, 2);
				w[i].t[0] = start[sa_unif_below(r, ns)];
				for (int k = 1; k < w[i].n; k++)
					w[i].t[k] = cont[sa_unif_below(r, nc)];
			}
			dup = word_held_out(d, &w[i]);
			for (int j = 0; j < i && !dup; j++)
				dup = word_eq(&w[i], &w[j]);
		} while (dup);
	}
}

static sa_toks
word_toks(word *w)
{
	return (sa_toks){ .t = w->t, .n = w->n, .cap = w->n };
}

/* ------------------------------------------------------------------ load */

/* s's tokens mid-line: after "x". */
static int
mid_line(sa_tdata *d, const char *s, sa_toks *out)
{
	int whole, rc = sa_tokenize_after(d->vocab, "x", s, strlen(s), &out->t, &out->n, &whole);

	out->cap = out->n;
	return rc;
}

int
sa_tdata_load(sa_tdata *d, const sa_train_opts *o, const sa_vocab *vocab)
{
	int rc = SA_OK;

	memset(d, 0, sizeof *d);
	d->o = o;
	d->vocab = vocab;
	for (int i = 0; i < o->n_texts && rc == SA_OK; i++)
		rc = load_text(d, &d->corpus, o->texts[i]);
	if (rc == SA_OK && o->valid)
		rc = load_text(d, &d->valid, o->valid);
	if (rc != SA_OK)
		return rc;
	if ((o->mix[0] > 0 || o->mix[3] > 0) && d->corpus.n < 2 * o->seq + 2)
		return sa_fail(SA_EDATA, "the text is shorter than two sequences");
	if (!(d->tasks = sa_calloc(o->n_tasks ? o->n_tasks : 1, sizeof *d->tasks)))
		return SA_EINTERNAL;
	for (; d->n_tasks < o->n_tasks && rc == SA_OK; d->n_tasks++)
		rc = load_task(d, &d->tasks[d->n_tasks], o->tasks[d->n_tasks]);
	if (rc == SA_OK && o->pool && (rc = load_pool(d, &d->words, o->pool, "words.txt")) == SA_OK)
		rc = load_pool(d, &d->labels, o->pool, "labels.txt");
	if (rc == SA_OK && o->eval_pool &&
	    (rc = load_pool(d, &d->eval_words, o->eval_pool, "words.txt")) == SA_OK)
		rc = load_pool(d, &d->eval_labels, o->eval_pool, "labels.txt");
	if (rc == SA_OK && (o->map_vocab || o->rename > 0))
		rc = build_word_pieces(d);
	/* the separators of random mappings, tokenized as they appear mid-line */
	if (rc == SA_OK && (rc = mid_line(d, " ->", &d->sep[0])) == SA_OK)
		rc = mid_line(d, "\n", &d->sep[1]);
	if (rc == SA_OK && !(d->buf = sa_malloc((size_t)(o->seq + 8) * sizeof *d->buf)))
		rc = SA_EINTERNAL;
	return rc;
}

void
sa_tdata_free(sa_tdata *d)
{
	free(d->corpus.t);
	free(d->valid.t);
	for (int i = 0; i < d->n_tasks; i++) {
		sa_ttask *t = &d->tasks[i];
		for (int j = 0; t->train && j < t->n_train; j++)
			free(t->train[j].demo.t);
		for (int j = 0; t->dev && j < t->n_dev; j++)
			free(t->dev[j].demo.t);
		free(t->train);
		free(t->dev);
	}
	free(d->tasks);
	pool_free(&d->words);
	pool_free(&d->labels);
	pool_free(&d->eval_words);
	pool_free(&d->eval_labels);
	free(d->sep[0].t);
	free(d->sep[1].t);
	free(d->piece_kind);
	free(d->word_start);
	free(d->word_cont);
	free(d->buf);
	memset(d, 0, sizeof *d);
}

/* ---------------------------------------------------- pretraining sequences */

/*
 * A sequence of T+1 tokens for pretraining: inputs are [0, T), targets
 * [1, T].  Task and random-mapping episodes repeat demonstrations of one
 * mapping, so that later answers can be read from earlier ones: that is
 * what teaches the model to learn in context.
 */
void
sa_tdata_window(const sa_toks *src, uint64_t *r, int *seq, int T)
{
	long s = sa_unif_below(r, src->n - T - 1);
	memcpy(seq, src->t + s, (size_t)(T + 1) * sizeof *seq);
}

static int
fill_seq(int *seq, int n, int T, const sa_toks *t)
{
	for (int i = 0; i < t->n && n <= T; i++)
		seq[n++] = t->t[i];
	return n;
}

/*
 * A task's demonstration, or with name, its label word replaced: "{input} ->"
 * as it was, then the new word and the newline (d->buf holds cap tokens).
 * Seen tasks renamed per episode must be answered from the context, not
 * from the task's labels.
 */
static sa_toks
demo_toks(const sa_tdata *d, const sa_texample *x, word *name, int cap)
{
	sa_toks t = { .t = d->buf };

	if (!name)
		return x->demo;
	for (int i = 0; i < x->answer_at && t.n < cap; i++)
		t.t[t.n++] = x->demo.t[i];
	for (int i = 0; i < name->n && t.n < cap; i++)
		t.t[t.n++] = name->t[i];
	for (int i = 0; i < d->sep[1].n && t.n < cap; i++)
		t.t[t.n++] = d->sep[1].t[i];
	return t;
}

/*
 * The task of an episode, and whether it is renamed (then names holds its
 * label words): in half the renamed episodes new words, in half the task's
 * own labels shuffled so that none keeps its class, which only reading the
 * context can tell from the labels the model knows.
 */
static const sa_ttask *
draw_task(const sa_tdata *d, uint64_t *r, word names[16], int *renamed)
{
	const sa_ttask *t = &d->tasks[sa_unif_below(r, d->n_tasks)];
	int own = 1, perm[16];

	*renamed = d->o->rename > 0 && t->renamable && sa_unif(r) < d->o->rename;
	if (!*renamed)
		return t;
	for (int j = 0; j < t->n_labels; j++)
		own &= t->label_n[j] > 0;
	if (!own || sa_splitmix64(r) & 1) {
		draw_words(d, r, names, t->n_labels);
		return t;
	}
	/* a random cyclic shift of a random order: no label stays in place */
	for (int j = 0; j < t->n_labels; j++)
		perm[j] = j;
	for (int j = t->n_labels - 1; j > 0; j--) {
		int k = sa_unif_below(r, j + 1), x = perm[j];
		perm[j] = perm[k];
		perm[k] = x;
	}
	for (int j = 0; j < t->n_labels; j++) {
		int from = perm[j], to = perm[(j + 1) % t->n_labels];
		names[from].n = t->label_n[to];
		memcpy(names[from].t, t->label_tok[to], (size_t)t->label_n[to] * sizeof(int));
	}
	return t;
}

static void
episode_task(const sa_tdata *d, uint64_t *r, int *seq, unsigned char *unscored, int T)
{
	int n = 0, bos = sa_vocab_bos(d->vocab), renamed;
	unsigned char shown[16] = { 0 };
	word names[16];
	const sa_ttask *t = draw_task(d, r, names, &renamed);

	if (bos >= 0)
		seq[n++] = bos;
	while (n <= T) {
		const sa_texample *x = &t->train[sa_unif_below(r, t->n_train)];
		sa_toks dt = demo_toks(d, x, renamed ? &names[x->label] : NULL, d->o->seq + 8);
		int at = n;
		n = fill_seq(seq, n, T, &dt);
		/* as in episode_map_vocab: a new name's first answer is unknowable */
		if (renamed && !shown[x->label]) {
			if (at + x->answer_at < n)
				memset(unscored + at + x->answer_at, 1, n - at - x->answer_at);
			shown[x->label] = 1;
		}
	}
}

/*
 * Word w's tokens where a text has it right after a newline (no space
 * before it) in out [LINE_KEY_MAX]; 0 when they do not fit.
 */
static int
key_after_newline(const sa_tdata *d, const word *w, int *out)
{
	char text[256];
	size_t len = 0;
	int *t, n, whole;

	for (int i = 0; i < w->n; i++) {
		int pn = sa_token_to_piece(d->vocab, w->t[i], text + len, (int)(sizeof text - len));
		if (pn < 0 || (size_t)pn >= sizeof text - len)
			return 0;
		len += (size_t)pn;
	}
	if (len > 0 && text[0] == ' ')
		memmove(text, text + 1, --len);
	if (sa_tokenize_after(d->vocab, "x\n", text, len, &t, &n, &whole) != SA_OK)
		return 0;
	if (!whole || n > LINE_KEY_MAX)
		n = 0;
	memcpy(out, t, (size_t)n * sizeof *out);
	free(t);
	return n;
}

/*
 * "word -> label\n" lines of a fresh mapping of open-vocabulary words: every
 * pair once in a random order (as many as four fifths of the window hold),
 * then passes over those pairs, each in a new order, until the window is
 * full, so that recall of pairs seen once is trained up to as many pairs
 * as a window holds.  Passes, not draws at random, so that how often a
 * label was seen says nothing of whether it is the answer (drawn at
 * random, a pair asked often was likely to be asked again).  Labels at
 * first sight are not scored: they cannot be known, and scoring them
 * teaches a prior over labels that keeps the model from copying a word it
 * never saw as a label.
 *
 * Half the episodes are laid out as records tokenized one by one (each key
 * a word-start piece, as sa-encode and sa-eval tokenize demonstrations);
 * half as one text, the way a prompt is tokenized: a key after a newline
 * has no leading space, so its first piece is another token.  A model
 * trained on one layout only reads the other poorly.
 */
static void
episode_map_vocab(const sa_tdata *d, uint64_t *r, int *seq, unsigned char *unscored, int T)
{
	enum { MAXK = 96 };
	word keys[MAXK], vals[MAXK];
	int order[MAXK], n = 0, bos = sa_vocab_bos(d->vocab), as_text = sa_splitmix64(r) & 1;
	int line_keys[MAXK][LINE_KEY_MAX], n_line_key[MAXK];
	int n_keys = (int)floor(exp(log(2) + sa_unif(r) * (log(MAXK) - log(2))));

	/* in half the episodes, keys alike; in half, labels alike */
	if (sa_splitmix64(r) & 1)
		draw_words_alike(d, r, keys, n_keys);
	else
		draw_words(d, r, keys, n_keys);
	if (sa_splitmix64(r) & 1)
		draw_words_alike(d, r, vals, n_keys);
	else
		for (int i = 0; i < n_keys; i++)
			vals[i] = draw_word(d, r, draw_word_len(r), 0);
	for (int i = 0; i < n_keys; i++)
		order[i] = i;
	for (int i = n_keys - 1; i > 0; i--) {
		int j = sa_unif_below(r, i + 1), t = order[i];
		order[i] = order[j];
		order[j] = t;
	}
	for (int i = 0; i < n_keys; i++)
		n_line_key[i] = as_text ? key_after_newline(d, &keys[i], line_keys[i]) : 0;
	if (bos >= 0)
		seq[n++] = bos;
	for (int i = 0, shown = n_keys; n <= T; i++) {
		/* the first pass ends where it would leave less than a fifth of
		 * the window for answers that can be read back */
		if (i > 0 && i < shown && n > T * 4 / 5)
			shown = i;
		/* each pass after it a fresh order of the shown pairs */
		if (i >= shown && (i - shown) % shown == 0)
			for (int j = shown - 1; j > 0; j--) {
				int m = sa_unif_below(r, j + 1), t = order[j];
				order[j] = order[m];
				order[m] = t;
			}
		int k = order[i < shown ? i : (i - shown) % shown], at;
		sa_toks kt = word_toks(&keys[k]), vt = word_toks(&vals[k]);
		if (i > 0 && n_line_key[k] > 0)
			kt = (sa_toks){ .t = line_keys[k], .n = n_line_key[k], .cap = n_line_key[k] };
		n = fill_seq(seq, n, T, &kt);
		n = fill_seq(seq, n, T, &d->sep[0]);
		at = n;
		n = fill_seq(seq, n, T, &vt);
		if (i < shown)   /* a label at first sight cannot be known */
			memset(unscored + at, 1, n - at);
		n = fill_seq(seq, n, T, &d->sep[1]);
	}
}

/* "word -> label\n" lines of a fresh random mapping of a few pool words. */
static void
episode_map(const sa_tdata *d, uint64_t *r, int *seq, int T, int n_keys)
{
	int keys[64], vals[64], n = 0, bos = sa_vocab_bos(d->vocab);

	if (n_keys > 64)
		n_keys = 64;
	for (int i = 0; i < n_keys; i++) {
		keys[i] = sa_unif_below(r, d->words.n);
		vals[i] = sa_unif_below(r, d->labels.n);
	}
	if (bos >= 0)
		seq[n++] = bos;
	while (n <= T) {
		int k = sa_unif_below(r, n_keys);
		n = fill_seq(seq, n, T, &d->words.w[keys[k]]);
		n = fill_seq(seq, n, T, &d->sep[0]);
		n = fill_seq(seq, n, T, &d->labels.w[vals[k]]);
		n = fill_seq(seq, n, T, &d->sep[1]);
	}
}

/*
 * A span of text, repeated until the window is full.  Only the first copy
 * can be predicted from language alone; the others must be read back from
 * the context.  These induction episodes teach a small model to copy from
 * context far sooner than random mappings do, whose only copyable tokens
 * are the labels.  No BOS, as in text windows: a model that saw BOS before
 * repeats alone comes to expect every prompt to repeat.
 */
static void
episode_repeat(uint64_t *r, const sa_toks *src, int *seq, int T)
{
	int len = 8 << sa_unif_below(r, 4), n = 0;
	long s;

	len += sa_unif_below(r, len);                 /* 8 to 127 tokens */
	if (len > T / 2)                          /* at least two copies */
		len = T / 2 > 1 ? T / 2 : 1;
	s = sa_unif_below(r, src->n - len);
	while (n <= T)
		for (int i = 0; i < len && n <= T; i++)
			seq[n++] = src->t[s + i];
}

/* An episode kind (the index into the mix) drawn by the shares. */
static int
pick_kind(const sa_tdata *d, uint64_t *r)
{
	const double *mix = d->o->mix;
	double u = sa_unif(r) * (mix[0] + mix[1] + mix[2] + mix[3]), below = 0;
	int k;

	for (k = 0; k < 3; k++)
		if (u < (below += mix[k]))
			break;
	return k;
}

int
sa_tdata_sequence(sa_tdata *d, uint64_t *r, int *s, unsigned char *unscored, int T)
{
	int kind = pick_kind(d, r);

	memset(unscored, 0, (size_t)T + 1);
	switch (kind) {
	case 0: sa_tdata_window(&d->corpus, r, s, T); break;
	case 1: episode_task(d, r, s, unscored, T); break;
	case 2:
		if (d->o->map_vocab)
			episode_map_vocab(d, r, s, unscored, T);
		else
			episode_map(d, r, s, T, 2 + sa_unif_below(r, 15));
		break;
	default: episode_repeat(r, &d->corpus, s, T); break;
	}
	return kind;
}

/* s[0..n) as a JSON string on fp. */
static int
put_text(const sa_tdata *d, const int *s, int n, FILE *fp)
{
	char *text;
	size_t len;
	int rc = sa_detokenize(d->vocab, s, n, &text, &len);

	if (rc == SA_OK)
		sa_json_put_str(fp, text, len);
	free(text);
	return rc;
}

int
sa_tdata_show(sa_tdata *d, uint64_t *r, long n, int T, FILE *fp)
{
	static const char *kinds[] = { "text", "task", "map", "repeat" };
	int *s = sa_malloc((size_t)(T + 1) * sizeof *s), rc = SA_OK;
	unsigned char *unscored = sa_malloc((size_t)T + 1);

	for (long i = 0; i < n && s && unscored && rc == SA_OK; i++) {
		int kind = sa_tdata_sequence(d, r, s, unscored, T);
		fprintf(fp, "{\"kind\":\"%s\",\"text\":", kinds[kind]);
		rc = put_text(d, s, T + 1, fp);
		/* the runs of tokens that are no targets */
		fputs(",\"unscored\":[", fp);
		for (int t = 0, first = 1; t <= T && rc == SA_OK; t++) {
			int e = t;
			if (!unscored[t])
				continue;
			while (e <= T && unscored[e])
				e++;
			fputs(first ? "" : ",", fp);
			rc = put_text(d, s + t, e - t, fp);
			first = 0;
			t = e;
		}
		fputs("]}\n", fp);
	}
	if (!s || !unscored)
		rc = SA_EINTERNAL;
	free(s);
	free(unscored);
	return rc;
}

int
sa_tdata_show_episodes(sa_tdata *d, uint64_t *r, long n, int T, int records, FILE *fp)
{
	static const char *kinds[] = { "text", "task", "map" };
	int Q = d->o->queries, rc = SA_OK;
	sa_episode e = { .in = sa_malloc((size_t)Q * T * sizeof(int)),
	    .tgt = sa_malloc((size_t)Q * T * sizeof(int)) };
	long n_tok = 0;

	if (!e.in || !e.tgt)
		rc = SA_EINTERNAL;
	for (long i = 0; i < n && rc == SA_OK; i++) {
		if ((rc = sa_tdata_episode(d, r, &e, T, &n_tok, 0, records)) != SA_OK)
			break;
		fprintf(fp, "{\"kind\":\"%s\",\"context\":[", kinds[e.kind]);
		for (int s = 0; s < e.n_seg && rc == SA_OK; s++) {
			int end = s + 1 < e.n_seg ? e.seg[s + 1] : e.ctx.n;
			fputs(s ? "," : "", fp);
			rc = put_text(d, e.ctx.t + e.seg[s], end - e.seg[s], fp);
		}
		/* a query: its input up to the first scored answer, and the answer */
		fputs("],\"queries\":[", fp);
		for (int q = 0; q < e.Q && rc == SA_OK; q++) {
			const int *in = e.in + q * e.Tq, *tgt = e.tgt + q * e.Tq;
			int a = 0, b;
			while (a < e.Tq && tgt[a] < 0)
				a++;
			for (b = a; b < e.Tq && tgt[b] >= 0; b++)
				;
			fputs(q ? ",[" : "[", fp);
			if ((rc = put_text(d, in, a < e.Tq ? a + 1 : e.Tq, fp)) == SA_OK) {
				fputc(',', fp);
				rc = put_text(d, tgt + a, b - a, fp);
			}
			fputc(']', fp);
		}
		fputs("]}\n", fp);
	}
	free(e.in);
	free(e.tgt);
	free(e.ctx.t);
	return rc;
}

/* ------------------------------------------------------------- copy test */

const sa_tpool *
sa_tdata_copy_words(const sa_tdata *d, const sa_tpool **labels)
{
	const sa_tpool *w = d->eval_words.n ? &d->eval_words : &d->words;

	*labels = d->eval_words.n ? &d->eval_labels : &d->labels;
	return w->n ? w : NULL;
}

void
sa_tdata_copy_test(const sa_tdata *d, uint64_t *r, int *s, int *in, int *tgt,
    int *first, int T)
{
	const sa_tpool *el, *ew = sa_tdata_copy_words(d, &el);
	int keys[8], vals[8], k = 0, bos = sa_vocab_bos(d->vocab), seen[8] = { 0 };

	for (int i = 0; i < 8; i++) {
		keys[i] = sa_unif_below(r, ew->n);
		vals[i] = sa_unif_below(r, el->n);
	}
	if (bos >= 0)
		s[k++] = bos;
	for (int i = 0; i < T; i++) {
		tgt[i] = -1;
		first[i] = 0;
	}
	while (k <= T) {
		int j = sa_unif_below(r, 8);
		k = fill_seq(s, k, T, &ew->w[keys[j]]);
		k = fill_seq(s, k, T, &d->sep[0]);
		if (k < T) {
			/* position k-1 predicts the label's first token */
			tgt[k - 1] = el->w[vals[j]].t[0];
			first[k - 1] = !seen[j];
			seen[j] = 1;
		}
		k = fill_seq(s, k, T, &el->w[vals[j]]);
		k = fill_seq(s, k, T, &d->sep[1]);
	}
	for (int i = 0; i < T; i++)
		in[i] = s[i];
}

/* ------------------------------------------------------- adapter episodes */

/* A new segment of e's context, from position 0: BOS again. */
static int
new_segment(sa_episode *e, int bos)
{
	e->seg[e->n_seg++] = e->ctx.n;
	return bos >= 0 ? sa_toks_push(&e->ctx, &bos, 1) : SA_OK;
}

/*
 * Make room in e's context for a demonstration of n tokens: a new segment
 * when the one it would go in is full, or, alone, holds one already.
 * 0: it fits (len, the tokens of its segment so far, updated); 1: the
 * context is full; else an error.
 */
static int
room_for(sa_episode *e, int n, int T, int bos, int alone, int *len)
{
	int b = bos >= 0, rc;

	if (alone ? *len == b : *len + n <= T)
		return 0;
	if (e->n_seg == (alone ? SA_EPISODE_SEGS : SA_EPISODE_WINDOWS) ||
	    e->ctx.n + b + n > SA_EPISODE_WINDOWS * T)
		return 1;
	if ((rc = new_segment(e, bos)) != SA_OK)
		return rc;
	*len = b;
	return 0;
}

int
sa_tdata_episode(sa_tdata *d, uint64_t *r, sa_episode *e, int T, long *n_tok, int held_out,
    int records)
{
	int alone = records == SA_RECORDS_ALONE;
	const sa_train_opts *o = d->o;
	int bos = sa_vocab_bos(d->vocab), Q = o->queries, rc = SA_OK;
	double lk = log(o->kmin), hk = log(o->kmax);
	int k = (int)floor(exp(lk + sa_unif(r) * (hk - lk)) + 0.5);
	int kind = pick_kind(d, r);
	int *in = e->in, *tgt = e->tgt;
	const sa_toks *c = &d->corpus;

	if (k < 1)
		k = 1;
	/* the context must fit the context-state buffers: 16 windows */
	e->ctx.n = 0;
	e->seg[0] = 0;
	e->n_seg = 1;
	if (bos >= 0 && (rc = sa_toks_push(&e->ctx, &bos, 1)) != SA_OK)
		return rc;
	for (int i = 0; i < Q * T; i++) {
		in[i] = 0;
		tgt[i] = -1;
	}
	if (kind == 0 && c->n > (o->text_segs + 1) * T + 2) {
		/* language modelling: context = one or more text segments (the
		 * state must not blow up over long contexts), target = the next */
		int len = T - 1, ns = o->text_segs > 1 ? 1 + (int)sa_unif_below(r, o->text_segs) : 1;
		long s = sa_unif_below(r, c->n - (long)(ns + 1) * len - 1);
		for (int j = 0; j < ns && rc == SA_OK; j++, s += len) {
			if (j)
				rc = new_segment(e, bos);
			if (rc == SA_OK)
				rc = sa_toks_push(&e->ctx, c->t + s, len);
		}
		if (rc != SA_OK)
			return rc;
		Q = 1;
		in[0] = bos >= 0 ? bos : c->t[s];
		for (int i = 0; i < len; i++) {
			if (i + 1 < T)
				in[i + 1] = c->t[s + i];
			tgt[i] = c->t[s + i];
		}
		tgt[T - 1] = -1;
		e->kind = 0;
	} else if (kind == 1 && d->n_tasks) {
		int len = e->ctx.n, renamed, cap = o->seq + 8;
		word names[16];
		const sa_ttask *t = draw_task(d, r, names, &renamed);
		for (int i = 0; i < k; i++) {
			const sa_texample *x = &t->train[sa_unif_below(r, t->n_train)];
			sa_toks dt = demo_toks(d, x, renamed ? &names[x->label] : NULL, cap);
			if (dt.n + (bos >= 0) > o->seq)
				continue;
			if ((rc = room_for(e, dt.n, o->seq, bos, alone, &len)) == 1)
				break;
			if (rc != SA_OK || (rc = sa_toks_push(&e->ctx, dt.t, dt.n)) != SA_OK)
				return rc;
			len += dt.n;
		}
		int from_dev = held_out && t->n_dev > 0;
		e->kind = 1;
		for (int q = 0; q < Q; q++) {
			const sa_texample *x = from_dev ? &t->dev[sa_unif_below(r, t->n_dev)]
			    : &t->train[sa_unif_below(r, t->n_train)];
			sa_toks dt = demo_toks(d, x, renamed ? &names[x->label] : NULL, cap);
			int n = 0;
			if (bos >= 0)
				in[q * T + n++] = bos;
			for (int i = 0; i < dt.n && n < T; i++) {
				in[q * T + n] = dt.t[i];
				if (i >= x->answer_at && n > 0)
					tgt[q * T + n - 1] = dt.t[i];
				n++;
			}
		}
	} else {
		/* random mapping: the answers exist only in the context */
		/* up to 63 pairs from a pool; open-vocabulary mappings reach 255,
		 * past what one window holds, for the memory to hold.  Half of
		 * those show k pairs once each, as a user's demonstrations and
		 * sa-eval --map do: in k + nk records, each of nk pairs is seen
		 * twice or more, and the memory was seldom asked for many pairs
		 * seen once. */
		int most = o->map_vocab ? 255 : 63, once = o->map_vocab && sa_splitmix64(r) & 1;
		e->kind = 2;
		int nk = once ? (k < most ? k : most) : 1 + sa_unif_below(r, k < most ? k : most);
		int len = e->ctx.n;
		word wk[256], wv[256];
		sa_toks keys[256], vals[256];
		int alike_v = o->map_vocab && sa_splitmix64(r) & 1;
		/* real words' later tokens meet the base's own continuation of
		 * them, which made-up labels do not */
		int text_v = o->map_vocab && o->word_labels > 0 && sa_unif(r) < o->word_labels;
		alike_v &= !text_v;
		if (o->map_vocab && sa_splitmix64(r) & 1)
			draw_words_alike(d, r, wk, nk);
		else if (o->map_vocab)
			draw_words(d, r, wk, nk);
		if (alike_v)
			draw_words_alike(d, r, wv, nk);
		for (int i = 0; i < nk; i++) {
			if (o->map_vocab) {
				if (!alike_v)
					wv[i] = draw_word(d, r, draw_word_len(r), text_v);
				keys[i] = word_toks(&wk[i]);
				vals[i] = word_toks(&wv[i]);
			} else {
				keys[i] = d->words.w[sa_unif_below(r, d->words.n)];
				vals[i] = d->labels.w[sa_unif_below(r, d->labels.n)];
			}
		}
		for (int i = 0; i < (once ? nk : k + nk); i++) {
			int j = i < nk ? i : sa_unif_below(r, nk);
			sa_toks parts[4] = { keys[j], d->sep[0], vals[j], d->sep[1] };
			int n = parts[0].n + parts[1].n + parts[2].n + parts[3].n;
			if ((rc = room_for(e, n, o->seq, bos, alone, &len)) == 1)
				break;
			for (int p = 0; p < 4 && rc == SA_OK; p++)
				rc = sa_toks_push(&e->ctx, parts[p].t, parts[p].n);
			if (rc != SA_OK)
				return rc;
			len += n;
		}
		for (int q = 0; q < Q; q++) {
			int j = sa_unif_below(r, nk), n = 0;
			if (bos >= 0)
				in[q * T + n++] = bos;
			sa_toks parts[4] = { keys[j], d->sep[0], vals[j], d->sep[1] };
			for (int p = 0; p < 4; p++)
				for (int i = 0; i < parts[p].n && n < T; i++) {
					in[q * T + n] = parts[p].t[i];
					if (p >= 2 && n > 0)
						tgt[q * T + n - 1] = parts[p].t[i];
					n++;
				}
		}
	}
	/* queries: shortest T that holds them all */
	int Tq = 1;
	for (int q = 0; q < Q; q++)
		for (int i = 0; i < T; i++)
			if (in[q * T + i] || tgt[q * T + i] >= 0)
				Tq = i + 2 > Tq ? i + 2 : Tq;
	if (Tq > T)
		Tq = T;
	for (int q = 0; q < Q; q++)
		for (int i = 0; i < Tq; i++) {
			in[q * Tq + i] = in[q * T + i];
			tgt[q * Tq + i] = tgt[q * T + i];
		}
	e->Q = Q;
	e->Tq = Tq;
	*n_tok += e->ctx.n + (long)Q * Tq;
	return SA_OK;
}
