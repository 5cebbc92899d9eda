/*
 * sa-train - pretrain a small base model, or train the StreamAdapter mapping
 * of a frozen base model, on text and task episodes.
 *
 * Both modes share one loop: draw episodes, run forward and backward over
 * micro-batches until the step's token budget is met, clip, AdamW with warmup
 * and cosine decay, log, evaluate, checkpoint.  A checkpoint holds the
 * parameters, both Adam moments, the step and the data stream's RNG, so a
 * resumed run continues exactly where the stopped one was.
 */
#include <ctype.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <zlib.h>

#include "tool.h"

static const char usage_text[] =
    "usage: sa-train --pretrain --vocab FILE -o MODEL [options] [--text FILE]... [--task DIR]...\n"
    "       sa-train --adapter [-m MODEL] -o ADAPTER [options] [--task DIR]... [--text FILE]...\n";

static const char help_text[] =
    "Pretrain a base model, or train a StreamAdapter mapping for one.\n"
    "\n"
    "Mode and files:\n"
    "  --pretrain            train every weight of a new model (needs --vocab)\n"
    "  --adapter             train an adapter for the frozen model of -m\n"
    "  -m, --model FILE      base model (--adapter; default: $SA_MODEL, else the installed one)\n"
    "  --vocab FILE          tokenizer: a GGUF with tokenizer.* keys, or a TSV\n"
    "                        (id, piece, score, type) (--pretrain)\n"
    "  --init FILE           start from these weights (model or adapter GGUF)\n"
    "  --rebind              --init's adapter was made for another model of the\n"
    "                        same shape (an earlier base): train it for -m\n"
    "  -o, --output FILE     result, rewritten at every checkpoint (-: stdout,\n"
    "                        once at the end; needs --ckpt)\n"
    "  --text FILE           plain text for language-model episodes (repeatable)\n"
    "  --valid FILE          held-out text for the validation loss\n"
    "  --task DIR            a task: DIR/train.tsv and DIR/dev.tsv with columns\n"
    "                        input and label (repeatable)\n"
    "  --pool DIR            words.txt and labels.txt for random-mapping episodes\n"
    "  --map-vocab           random mappings of words of 1-3 tokens drawn from the\n"
    "                        vocabulary and the text, held-out words excluded\n"
    "  --rename X            share of classification-task episodes whose label\n"
    "                        words are replaced by new words (0)\n"
    "  --eval-pool DIR       words and labels of the copy evaluation (--pool)\n"
    "  --show-data N         print the first N sequences as JSON Lines and exit\n"
    "\n"
    "Model shape (--pretrain):\n"
    "  --dim N (256)  --layers N (6)  --heads N (8)  --kv-heads N (4)\n"
    "  --ff N (4*dim*2/3 rounded to 64)  --ctx N (512)  --rope-base X (10000)\n"
    "  --tied / --untied     output shares the embedding (default tied)\n"
    "  --type T              saved weights: f32, f16 (default), q8_0\n"
    "\n"
    "Adapter (--adapter):\n"
    "  -r, --rank N (16)  -C, --chunk N (64)  --mats LIST (attn_q,attn_k,attn_v,attn_output)\n"
    "  --kmin N (1)  --kmax N (64)   demonstrations per episode (log-uniform)\n"
    "  --queries N (8)               held-out queries per episode\n"
    "  --text-segs N (1)             text contexts of 1 to N segments (uniform)\n"
    "  --gate-lr X (1)               learning-rate factor of the gates (g, b)\n"
    "  --gate-bias X (3)             gate bias of a new adapter: a = sigmoid(X)\n"
    "\n"
    "Optimisation:\n"
    "  --steps N (1000)  --batch-tokens N (16384)  --seq N (ctx)  --micro N (8)\n"
    "  --lr X (1e-3)  --min-lr X (lr/10)  --warmup N (100)  --wd X (0.1)\n"
    "  --clip X (1.0)  -s, --seed N (1)\n"
    "  --mix T,K,M[,R]       shares of text, task, random-mapping and (--pretrain)\n"
    "                        repeated-span episodes\n"
    "                        (pretrain default 0.5,0.25,0.25; adapter 0,0.5,0.5)\n"
    "\n"
    "Runs:\n"
    "  --ckpt DIR            checkpoint directory (default: OUTPUT.ckpt)\n"
    "  --ckpt-every N (100)  --resume   continue from DIR's checkpoint\n"
    "  --run-steps N         stop after N steps of this run (checkpointed; exit 0)\n"
    "  --start-step N        with --init and no checkpoint: where in the schedule to\n"
    "                        begin (the weights' step; the optimizer starts afresh)\n"
    "  --eval-every N (100)  --log FILE  JSON Lines log (default DIR/log.jsonl)\n"
    "  -t, --threads N  -q, --quiet  -v, --verbose  -h, --help  -V, --version\n";

/* ------------------------------------------------------------ options */

enum { PRETRAIN = 1, ADAPTER = 2 };

static struct {
	int mode;
	const char *model, *vocab, *init, *out, *valid, *pool, *ckpt, *log;
	int rebind;                 /* --init adapter of another model */
	int map_vocab;              /* random mappings over the whole vocabulary */
	double rename;              /* share of class-task episodes with new label words */
	const char *eval_pool;      /* pool of the in-context copy evaluation */
	const char **texts, **tasks;
	int n_texts, n_tasks;
	int dim, layers, heads, kv_heads, ff, ctx, tied, save_type;
	float rope_base;
	int rank, chunk, kmin, kmax, queries, text_segs;
	uint32_t mats;
	long steps, batch_tokens, ckpt_every, eval_every, run_steps, start_step, show_data;
	int seq, micro;
	double lr, min_lr, wd, clip, gate_lr, gate_bias;
	long warmup;
	uint64_t seed;
	double mix[4];   /* text, task, random mapping, repeated span */
	int have_mix, have_rank, resume, threads, quiet, verbose;
} opt = {
	.dim = 256, .layers = 6, .heads = 8, .kv_heads = 4, .ctx = 512, .tied = 1,
	.save_type = SA_TYPE_F16, .rope_base = 10000, .rank = 16, .chunk = 64,
	.kmin = 1, .kmax = 64, .queries = 8, .text_segs = 1,
	.mats = 1u << SA_MAT_Q | 1u << SA_MAT_K | 1u << SA_MAT_V | 1u << SA_MAT_O,
	.steps = 1000, .batch_tokens = 16384, .micro = 8, .lr = 1e-3, .min_lr = -1,
	.warmup = 100, .wd = 0.1, .clip = 1.0, .gate_lr = 1, .gate_bias = NAN, .seed = 1,
	.ckpt_every = 100, .eval_every = 100,
};

static volatile sig_atomic_t stop_signal;

static void
on_signal(int sig)
{
	stop_signal = sig;
}

static void __attribute__((noreturn))
usage(void)
{
	fputs(usage_text, stderr);
	exit(SA_EUSAGE);
}

/* ---------------------------------------------------------------- RNG */

typedef struct rng { uint64_t s; } rng;

static uint64_t
rng_u64(rng *r)
{
	uint64_t z = (r->s += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static double
rng_unif(rng *r)
{
	return (rng_u64(r) >> 11) / 9007199254740992.0;
}

static long
rng_below(rng *r, long n)
{
	return n > 0 ? (long)(rng_unif(r) * n) : 0;
}

/* ------------------------------------------------------------ token data */

typedef struct toks { int *t; int n, cap; } toks;

/* The text corpus, tokenized line by line. */
static toks corpus, valid;

static void
toks_push(toks *a, const int *t, int n)
{
	if (a->n + n > a->cap) {
		int cap = a->cap ? a->cap : 64;
		while (cap < a->n + n)
			cap *= 2;
		int *p = realloc(a->t, (size_t)cap * sizeof *p);
		if (!p)
			die(SA_EINTERNAL, "out of memory");
		a->t = p;
		a->cap = cap;
	}
	memcpy(a->t + a->n, t, (size_t)n * sizeof *t);
	a->n += n;
}

static sa_vocab *vocab;

static toks
tokenize(const char *s, size_t n)
{
	toks r = { 0 };
	TRY(sa_tokenize(vocab, s, n, 0, &r.t, &r.n));
	r.cap = r.n;
	return r;
}

/* One labelled example: the whole demonstration, and where its answer starts. */
typedef struct example {
	toks demo;        /* "{input} -> {label}\n" */
	int answer_at;    /* tokens before the answer (common prefix with "{input} ->") */
	int label;        /* index into the task's label list */
} example;

typedef struct task {
	char *name;
	example *train, *dev;
	int n_train, n_dev;
	char **labels;
	int n_labels;
	int renamable;    /* 2 to 16 labels, all words: a classification task */
} task;

static task *tasks;
static int n_tasks;

static int
label_index(task *t, const char *label)
{
	for (int i = 0; i < t->n_labels; i++)
		if (!strcmp(t->labels[i], label))
			return i;
	char **p = realloc(t->labels, (t->n_labels + 1) * sizeof *p);
	if (!p || !(p[t->n_labels] = strdup(label)))
		die(SA_EINTERNAL, "out of memory");
	t->labels = p;
	return t->n_labels++;
}

static example
make_example(task *t, const char *input, const char *label)
{
	example e = { 0 };
	size_t ni = strlen(input), nl = strlen(label);
	char *full = malloc(ni + nl + 6);

	if (!full)
		die(SA_EINTERNAL, "out of memory");
	memcpy(full, input, ni);
	memcpy(full + ni, " -> ", 4);
	memcpy(full + ni + 4, label, nl);
	memcpy(full + ni + 4 + nl, "\n", 2);
	e.demo = tokenize(full, ni + nl + 5);
	toks prefix = tokenize(full, ni + 3);   /* "{input} ->" */
	int k = 0;
	while (k < prefix.n && k < e.demo.n && prefix.t[k] == e.demo.t[k])
		k++;
	e.answer_at = k;
	e.label = label_index(t, label);
	free(prefix.t);
	free(full);
	return e;
}

/* Read DIR/split.tsv with a header naming columns input and label. */
static void
load_split(task *t, const char *dir, const char *split, example **out, int *n)
{
	char path[4096];
	char *data;
	size_t len;
	sa_demos *d;

	snprintf(path, sizeof path, "%s/%s.tsv", dir, split);
	TRY(sa_file_read(path, &data, &len));
	TRY(sa_demos_parse(&d, path, data, len, SA_DEMOS_TSV, "{input}\\t{label}"));
	*out = calloc(d->n ? d->n : 1, sizeof **out);
	if (!*out)
		die(SA_EINTERNAL, "out of memory");
	*n = 0;
	for (int i = 0; i < d->n; i++) {
		char *tab = memchr(d->demo[i].text, '\t', d->demo[i].len);
		if (!tab)
			continue;
		*tab = 0;
		(*out)[(*n)++] = make_example(t, d->demo[i].text, tab + 1);
	}
	sa_demos_free(d);
	free(data);
}

static void
load_tasks(void)
{
	tasks = calloc(opt.n_tasks ? opt.n_tasks : 1, sizeof *tasks);
	for (int i = 0; i < opt.n_tasks; i++) {
		task *t = &tasks[i];
		const char *s = strrchr(opt.tasks[i], '/');
		t->name = strdup(s && s[1] ? s + 1 : opt.tasks[i]);
		load_split(t, opt.tasks[i], "train", &t->train, &t->n_train);
		load_split(t, opt.tasks[i], "dev", &t->dev, &t->n_dev);
		if (t->n_train < 2)
			die(SA_EDATA, "%s: fewer than 2 training examples", opt.tasks[i]);
		t->renamable = t->n_labels >= 2 && t->n_labels <= 16;
		for (int j = 0; j < t->n_labels; j++)
			t->renamable &= isalpha((unsigned char)t->labels[j][0]) != 0;
	}
	n_tasks = opt.n_tasks;
}

/* Word pools for random mappings: each entry pre-tokenized. */
typedef struct pool { toks *w; int n; } pool;
static pool pool_words, pool_labels, eval_words, eval_labels;
static toks arrow_nl[2];   /* " ->" is part of the word's tokens; see map_line */

static void
load_pool(pool *p, const char *dir, const char *file)
{
	char path[4096], *data, *line, *save = NULL;
	size_t len;

	snprintf(path, sizeof path, "%s/%s", dir, file);
	TRY(sa_file_read(path, &data, &len));
	for (line = strtok_r(data, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		if (!*line)
			continue;
		toks *w = realloc(p->w, (p->n + 1) * sizeof *w);
		if (!w)
			die(SA_EINTERNAL, "out of memory");
		p->w = w;
		p->w[p->n++] = tokenize(line, strlen(line));
	}
	free(data);
	if (p->n < 4)
		die(SA_EDATA, "%s: fewer than 4 entries", path);
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
static int *word_start, n_word_start, *word_cont, n_word_cont;
static signed char *piece_kind;   /* 1 word start, 2 continuation, 0 other */

static int
piece_letters(int tok, char *buf, int cap)
{
	int n = sa_token_to_piece(vocab, tok, buf, cap - 1);
	return n < cap ? n : -1;
}

static void
build_word_pieces(void)
{
	int V = sa_vocab_size(vocab);

	if (!(piece_kind = calloc((size_t)V, 1)) || !(word_start = malloc(V * sizeof *word_start)) ||
	    !(word_cont = malloc(V * sizeof *word_cont)))
		die(SA_EINTERNAL, "out of memory");
	for (int i = 0; i < V; i++) {
		char b[64];
		int n = piece_letters(i, b, sizeof b), lead = n > 0 && b[0] == ' ', k;
		for (k = lead; k < n && b[k] >= 'a' && b[k] <= 'z'; k++)
			;
		if (n < 1 || k < n || n - lead < 1 + lead)
			continue;
		piece_kind[i] = lead ? 1 : 2;
		if (lead)
			word_start[n_word_start++] = i;
		else
			word_cont[n_word_cont++] = i;
	}
	if (n_word_start < 16 || n_word_cont < 16)
		die(SA_EDATA, "--map-vocab: the vocabulary has too few word pieces");
}

/*
 * 1 if the word's text (without its leading space) is held out.  Words of
 * one token never are: a token that never answers a mapping is one the
 * model learns never to answer, and then it cannot copy it either.
 */
static int
word_held_out(const word *w)
{
	uint32_t h = 0x811c9dc5u;

	if (w->n < 2)
		return 0;

	for (int i = 0; i < w->n; i++) {
		char b[64];
		int n = piece_letters(w->t[i], b, sizeof b);
		for (int k = i == 0; k < n; k++)
			h = (h ^ (unsigned char)b[k]) * 0x01000193u;
	}
	return h % 10 < 2;
}

/* A word of n_tok tokens (1 to 3), not held out. */
static word
draw_word(rng *r, int n_tok)
{
	for (;;) {
		word w = { .n = 0 };
		if (rng_u64(r) & 1 && corpus.n > 64) {
			/* the next whole word of the corpus from a random place */
			long at = rng_below(r, corpus.n - 64), end = at + 60;
			while (at < end && piece_kind[corpus.t[at]] != 1)
				at++;
			if (at == end)
				continue;
			w.t[w.n++] = corpus.t[at++];
			while (w.n < 3 && piece_kind[corpus.t[at]] == 2)
				w.t[w.n++] = corpus.t[at++];
			if (w.n != n_tok || piece_kind[corpus.t[at]] == 2)
				continue;
		} else {
			w.t[w.n++] = word_start[rng_below(r, n_word_start)];
			while (w.n < n_tok)
				w.t[w.n++] = word_cont[rng_below(r, n_word_cont)];
		}
		if (!word_held_out(&w))
			return w;
	}
}

/* One to three tokens: a label's length, or a key's. */
static int
draw_word_len(rng *r)
{
	return 1 + (int)rng_below(r, 3);
}

static int
word_eq(const word *a, const word *b)
{
	return a->n == b->n && !memcmp(a->t, b->t, a->n * sizeof *a->t);
}

/* n distinct words. */
static void
draw_words(rng *r, word *w, int n)
{
	for (int i = 0; i < n; i++) {
		int dup;
		do {
			w[i] = draw_word(r, draw_word_len(r));
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
draw_words_alike(rng *r, word *w, int n)
{
	int start[8], cont[8], ns = 2, nc = 2;

	while (ns * nc * (1 + nc) < 2 * n && ns < 8)
		ns++, nc++;
	for (int i = 0; i < ns; i++)
		start[i] = word_start[rng_below(r, n_word_start)];
	for (int i = 0; i < nc; i++)
		cont[i] = word_cont[rng_below(r, n_word_cont)];
	for (int i = 0; i < n; i++) {
		int dup;
		do {
			w[i].n = 2 + (int)rng_below(r, 2);
			w[i].t[0] = start[rng_below(r, ns)];
			for (int k = 1; k < w[i].n; k++)
				w[i].t[k] = cont[rng_below(r, nc)];
			dup = word_held_out(&w[i]);
			for (int j = 0; j < i && !dup; j++)
				dup = word_eq(&w[i], &w[j]);
		} while (dup);
	}
}

static toks
word_toks(word *w)
{
	return (toks){ .t = w->t, .n = w->n, .cap = w->n };
}

/* The text of path; FILE.gz is read through zlib. */
static void
read_text(const char *path, char **data, size_t *len)
{
	size_t n = strlen(path), cap = 1 << 20, used = 0;
	gzFile gz;
	char *buf;
	int got;

	if (n < 3 || strcmp(path + n - 3, ".gz")) {
		TRY(sa_file_read(path, data, len));
		return;
	}
	if (!(gz = gzopen(path, "rb")))
		die(SA_ENOINPUT, "%s: %s", path, strerror(errno));
	if (!(buf = malloc(cap)))
		die(SA_EINTERNAL, "out of memory");
	while ((got = gzread(gz, buf + used, (unsigned)(cap - used - 1))) > 0) {
		used += got;
		if (cap - used < 2 && !(buf = realloc(buf, cap *= 2)))
			die(SA_EINTERNAL, "out of memory");
	}
	if (got < 0)
		die(SA_EDATA, "%s: not a valid gzip file", path);
	gzclose(gz);
	buf[used] = 0;
	*data = buf;
	*len = used;
}

static void
load_text(toks *dst, const char *path)
{
	char *data;
	size_t len, start = 0;

	read_text(path, &data, &len);
	for (size_t i = 0; i <= len; i++) {
		if (i < len && data[i] != '\n')
			continue;
		if (i > start) {
			toks t = tokenize(data + start, i - start + (i < len));
			toks_push(dst, t.t, t.n);
			free(t.t);
		}
		start = i + 1;
	}
	free(data);
}

/* ------------------------------------------------------------ episodes */

/*
 * A sequence of T+1 tokens for pretraining: inputs are [0, T), targets
 * [1, T].  tgt_mask marks positions whose target is scored.  Task and
 * random-mapping episodes repeat demonstrations of one mapping, so that later
 * answers can be read from earlier ones: that is what teaches the model to
 * learn in context.
 */
static void
episode_text(rng *r, const toks *src, int *seq, int T)
{
	long s = rng_below(r, src->n - T - 1);
	memcpy(seq, src->t + s, (size_t)(T + 1) * sizeof *seq);
}

static int
fill_seq(int *seq, int n, int T, const toks *t)
{
	for (int i = 0; i < t->n && n <= T; i++)
		seq[n++] = t->t[i];
	return n;
}

/*
 * A task's demonstration, or with name, its label word replaced: "{input} ->"
 * as it was, then the new word and the newline (buf holds cap tokens).  Seen tasks renamed per
 * episode must be answered from the context, not from the task's labels.
 */
static toks
demo_toks(const example *x, word *name, int *buf, int cap)
{
	toks d = { .t = buf };

	if (!name)
		return x->demo;
	for (int i = 0; i < x->answer_at && d.n < cap; i++)
		buf[d.n++] = x->demo.t[i];
	for (int i = 0; i < name->n && d.n < cap; i++)
		buf[d.n++] = name->t[i];
	for (int i = 0; i < arrow_nl[1].n && d.n < cap; i++)
		buf[d.n++] = arrow_nl[1].t[i];
	return d;
}

static void
episode_task(rng *r, int *seq, unsigned char *unscored, int T)
{
	task *t = &tasks[rng_below(r, n_tasks)];
	int n = 0, bos = sa_vocab_bos(vocab);
	word names[16];
	int renamed = opt.rename > 0 && t->renamable && rng_unif(r) < opt.rename;
	int *buf = malloc((size_t)(T + 8) * sizeof *buf);

	if (!buf)
		die(SA_EINTERNAL, "out of memory");
	if (renamed)
		draw_words(r, names, t->n_labels);
	if (bos >= 0)
		seq[n++] = bos;
	unsigned char shown[16] = { 0 };
	while (n <= T) {
		const example *x = &t->train[rng_below(r, t->n_train)];
		toks d = demo_toks(x, renamed ? &names[x->label] : NULL, buf, T + 8);
		int at = n;
		n = fill_seq(seq, n, T, &d);
		/* as in episode_map_vocab: a new name's first answer is unknowable */
		if (renamed && !shown[x->label]) {
			if (at + x->answer_at < n)
				memset(unscored + at + x->answer_at, 1, n - at - x->answer_at);
			shown[x->label] = 1;
		}
	}
	free(buf);
}

/*
 * "word -> label\n" lines of a fresh mapping of open-vocabulary words: every
 * pair once in a random order, then pairs again at random until the window
 * is full, so that recall of pairs seen once is trained up to as many pairs
 * as a window holds.  Labels at first sight are not scored: they cannot be
 * known, and scoring them teaches a prior over labels that keeps the model
 * from copying a word it never saw as a label.
 */
static void
episode_map_vocab(rng *r, int *seq, unsigned char *unscored, int T)
{
	enum { MAXK = 96 };
	word keys[MAXK], vals[MAXK];
	int order[MAXK], n = 0, bos = sa_vocab_bos(vocab);
	int n_keys = (int)floor(exp(log(2) + rng_unif(r) * (log(MAXK) - log(2))));

	/* in half the episodes, keys alike; in half, labels alike */
	if (rng_u64(r) & 1)
		draw_words_alike(r, keys, n_keys);
	else
		draw_words(r, keys, n_keys);
	if (rng_u64(r) & 1)
		draw_words_alike(r, vals, n_keys);
	else
		for (int i = 0; i < n_keys; i++)
			vals[i] = draw_word(r, draw_word_len(r));
	for (int i = 0; i < n_keys; i++)
		order[i] = i;
	for (int i = n_keys - 1; i > 0; i--) {
		int j = rng_below(r, i + 1), t = order[i];
		order[i] = order[j];
		order[j] = t;
	}
	if (bos >= 0)
		seq[n++] = bos;
	for (int i = 0; n <= T; i++) {
		int k = i < n_keys ? order[i] : rng_below(r, n_keys), at;
		toks kt = word_toks(&keys[k]), vt = word_toks(&vals[k]);
		n = fill_seq(seq, n, T, &kt);
		n = fill_seq(seq, n, T, &arrow_nl[0]);
		at = n;
		n = fill_seq(seq, n, T, &vt);
		if (i < n_keys)   /* a label at first sight cannot be known */
			memset(unscored + at, 1, n - at);
		n = fill_seq(seq, n, T, &arrow_nl[1]);
	}
}

/* "word -> label\n" lines of a fresh random mapping of a few words. */
static void
episode_map(rng *r, int *seq, int T, int n_keys)
{
	int keys[64], vals[64], n = 0, bos = sa_vocab_bos(vocab);

	if (n_keys > 64)
		n_keys = 64;
	for (int i = 0; i < n_keys; i++) {
		keys[i] = rng_below(r, pool_words.n);
		vals[i] = rng_below(r, pool_labels.n);
	}
	if (bos >= 0)
		seq[n++] = bos;
	while (n <= T) {
		int k = rng_below(r, n_keys);
		n = fill_seq(seq, n, T, &pool_words.w[keys[k]]);
		n = fill_seq(seq, n, T, &arrow_nl[0]);
		n = fill_seq(seq, n, T, &pool_labels.w[vals[k]]);
		n = fill_seq(seq, n, T, &arrow_nl[1]);
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
episode_repeat(rng *r, const toks *src, int *seq, int T)
{
	int len = 8 << rng_below(r, 4), n = 0;
	long s;

	len += rng_below(r, len);                 /* 8 to 127 tokens */
	if (len > T / 2)                          /* at least two copies */
		len = T / 2 > 1 ? T / 2 : 1;
	s = rng_below(r, src->n - len);
	while (n <= T)
		for (int i = 0; i < len && n <= T; i++)
			seq[n++] = src->t[s + i];
}

/* An episode kind (the index into opt.mix) drawn by the shares. */
static int
pick_kind(rng *r)
{
	double u = rng_unif(r) * (opt.mix[0] + opt.mix[1] + opt.mix[2] + opt.mix[3]), below = 0;
	int k;

	for (k = 0; k < 3; k++)
		if (u < (below += opt.mix[k]))
			break;
	return k;
}

/* ---------------------------------------------------------- parameters */

/*
 * What the optimizer sees: one block of trainable floats with its gradient
 * and moments, and ranges of it (in order) with their own weight decay and
 * learning-rate factor; outside them, no decay and factor 1.
 */
typedef struct trainable {
	float *p, *g, *m, *v;
	size_t n;
	struct range { size_t lo, hi; float wd, lr_factor; } *range;
	int n_range;
} trainable;

static void
add_range(trainable *tr, const float *start, size_t n, float wd, float lr_factor)
{
	struct range *r = realloc(tr->range, (tr->n_range + 1) * sizeof *r);

	if (!r)
		die(SA_EINTERNAL, "out of memory");
	tr->range = r;
	r[tr->n_range++] = (struct range){ start - tr->p, start - tr->p + n, wd, lr_factor };
}

/* One AdamW step: each range with its decay and learning rate, the gaps
 * between them with no decay at the base rate. */
static void
optimizer_step(trainable *tr, int step, float lr)
{
	size_t at = 0;

	for (int i = 0; i <= tr->n_range; i++) {
		size_t lo = i < tr->n_range ? tr->range[i].lo : tr->n;
		if (lo > at)
			sa_adamw(tr->p + at, tr->g + at, tr->m + at, tr->v + at, lo - at,
			    step, lr, 0.9f, 0.95f, 1e-8f, 0);
		if (i < tr->n_range) {
			size_t hi = tr->range[i].hi;
			sa_adamw(tr->p + lo, tr->g + lo, tr->m + lo, tr->v + lo, hi - lo,
			    step, lr * tr->range[i].lr_factor, 0.9f, 0.95f, 1e-8f, tr->range[i].wd);
			at = hi;
		}
	}
}

static float
lr_at(long step)
{
	double min_lr = opt.min_lr >= 0 ? opt.min_lr : opt.lr / 10;
	if (step < opt.warmup)
		return (float)(opt.lr * (step + 1) / opt.warmup);
	double p = (double)(step - opt.warmup) / fmax(1, opt.steps - opt.warmup);
	if (p > 1)
		p = 1;
	return (float)(min_lr + 0.5 * (opt.lr - min_lr) * (1 + cos(M_PI * p)));
}

/* ------------------------------------------------------------- state */

static sa_gguf *vocab_gguf;
static sa_tmodel *tm;            /* the model (trained, or frozen base) */
static sa_model *base;           /* --adapter: the loaded base */
static sa_adapter *adapter;      /* --adapter: holds the trained tensors */
static trainable tr;
static rng data_rng;
static long step;
static FILE *logfp;
static char *ckpt_path;

/* Adapter tensors live in one block so AdamW and checkpoints see one array. */
typedef struct amat { float *Q, *g, *b, *W1, *W2; size_t nQ, ng, nb, nW1, nW2; } amat;
static amat *ap;                 /* views into tr.p, [n_layer*SA_NMAT] */

static void
build_adapter_block(void)
{
	const sa_config *c = &base->cfg;
	int Hk = c->n_head_kv, dh = c->d_head, r = adapter->rank, Dkv = Hk * dh;
	size_t n = 0;

	ap = calloc((size_t)c->n_layer * SA_NMAT, sizeof *ap);
	for (int pass = 0; pass < 2; pass++) {
		size_t at = 0;
		for (int l = 0; l < c->n_layer; l++)
			for (int m = 0; m < SA_NMAT; m++) {
				if (!(adapter->mats >> m & 1))
					continue;
				int dout, din;
				sa_model_mat_dims(base, m, &dout, &din);
				size_t sz[5] = { (size_t)Hk * r * dh, (size_t)Hk * dh, (size_t)Hk * r,
				    (size_t)dout * Dkv, (size_t)r * din };
				if (pass == 1) {
					amat *P = &ap[l * SA_NMAT + m];
					float **pp[5] = { &P->Q, &P->g, &P->b, &P->W1, &P->W2 };
					size_t *np[5] = { &P->nQ, &P->ng, &P->nb, &P->nW1, &P->nW2 };
					const sa_adapter_mat *A = SA_ADAPTER_MAT(adapter, l, m);
					const float *src[5] = { A->Q, A->g, A->b, A->W1, A->W2 };
					size_t o = at;
					for (int k = 0; k < 5; k++) {
						*pp[k] = tr.p + o;
						*np[k] = sz[k];
						memcpy(tr.p + o, src[k], sz[k] * sizeof(float));
						if (k >= 3)
							add_range(&tr, tr.p + o, sz[k], (float)opt.wd, 1);
						else if (k >= 1 && opt.gate_lr != 1)
							add_range(&tr, tr.p + o, sz[k], 0, (float)opt.gate_lr);
						o += sz[k];
					}
				}
				at += sz[0] + sz[1] + sz[2] + sz[3] + sz[4];
			}
		if (pass == 0) {
			n = at;
			tr.n = n;
			tr.p = calloc(n, sizeof(float));
			tr.g = calloc(n, sizeof(float));
			tr.m = calloc(n, sizeof(float));
			tr.v = calloc(n, sizeof(float));
			if (!tr.p || !tr.g || !tr.m || !tr.v)
				die(SA_EINTERNAL, "out of memory");
		}
	}
}

/*
 * A gate of 0.95 (bias 3) keeps about 20 chunks, and the state of a long
 * context grows to many times that of the short ones training mostly sees;
 * a lower bias bounds it nearer their size.
 */
static void
set_gate_bias(sa_adapter *a, float bias)
{
	for (int l = 0; l < a->n_layer; l++)
		for (int m = 0; m < SA_NMAT; m++) {
			sa_adapter_mat *am = SA_ADAPTER_MAT(a, l, m);
			if (a->mats >> m & 1)
				for (int i = 0; i < a->n_head_kv * a->rank; i++)
					am->b[i] = bias;
		}
	a->fingerprint = sa_adapter_fingerprint(a);
}

/* Copy the block back into the adapter (for saving). */
static void
sync_adapter(void)
{
	/* the fingerprint covers the tensors: set it anew after copying them */
	for (int l = 0; l < adapter->n_layer; l++)
		for (int m = 0; m < SA_NMAT; m++) {
			if (!(adapter->mats >> m & 1))
				continue;
			amat *P = &ap[l * SA_NMAT + m];
			sa_adapter_mat *A = SA_ADAPTER_MAT(adapter, l, m);
			memcpy(A->Q, P->Q, P->nQ * sizeof(float));
			memcpy(A->g, P->g, P->ng * sizeof(float));
			memcpy(A->b, P->b, P->nb * sizeof(float));
			memcpy(A->W1, P->W1, P->nW1 * sizeof(float));
			memcpy(A->W2, P->W2, P->nW2 * sizeof(float));
		}
	adapter->fingerprint = sa_adapter_fingerprint(adapter);
}

static void
build_pretrain_block(void)
{
	const sa_config *c = &tm->cfg;

	TRY(sa_tmodel_want_grads(tm, 1));
	tr.p = tm->params;
	tr.g = tm->grads;
	tr.n = tm->n_params;
	tr.m = calloc(tr.n, sizeof(float));
	tr.v = calloc(tr.n, sizeof(float));
	if (!tr.m || !tr.v)
		die(SA_EINTERNAL, "out of memory");
	add_range(&tr, tm->tok_embd, (size_t)c->n_vocab * c->d_model, (float)opt.wd, 1);
	for (int l = 0; l < c->n_layer; l++)
		for (int m = 0; m < SA_NMAT; m++) {
			int dout, din;
			sa_tmodel_mat_dims(c, m, &dout, &din);
			add_range(&tr, tm->layers[l].w[m], (size_t)dout * din, (float)opt.wd, 1);
		}
	if (!tm->tied)
		add_range(&tr, tm->output, (size_t)c->n_vocab * c->d_model, (float)opt.wd, 1);
}

/* ---------------------------------------------------------- checkpoints */

static void
save_result(void)
{
	if (opt.mode == PRETRAIN) {
		TRY(sa_tmodel_save(tm, vocab_gguf, opt.save_type, "sa-base", opt.out));
	} else {
		sync_adapter();
		TRY(sa_adapter_save(adapter, base, opt.out));
	}
}

static void
save_checkpoint(void)
{
	sa_gguf_writer *w = sa_gguf_writer_new();
	int64_t ne[1] = { (int64_t)tr.n };

	if (!w)
		die(SA_EINTERNAL, "out of memory");
	TRY(sa_gguf_writer_set_str(w, "general.type", "sa-checkpoint"));
	TRY(sa_gguf_writer_set_u32(w, "sa.train.mode", opt.mode));
	TRY(sa_gguf_writer_set_u64(w, "sa.train.step", (uint64_t)step));
	TRY(sa_gguf_writer_set_u64(w, "sa.train.rng", data_rng.s));
	TRY(sa_gguf_writer_set_u64(w, "sa.train.n", (uint64_t)tr.n));
	TRY(sa_gguf_writer_add_tensor(w, "params", SA_TYPE_F32, 1, ne, tr.p));
	TRY(sa_gguf_writer_add_tensor(w, "adam.m", SA_TYPE_F32, 1, ne, tr.m));
	TRY(sa_gguf_writer_add_tensor(w, "adam.v", SA_TYPE_F32, 1, ne, tr.v));
	TRY(sa_gguf_writer_save(w, ckpt_path));
	sa_gguf_writer_free(w);
	/* stdout takes one result: the last, written when the run ends */
	if (strcmp(opt.out, "-"))
		save_result();
}

static int
load_checkpoint(void)
{
	sa_gguf *g;
	uint32_t mode;
	uint64_t st, rs, n;
	const sa_tensor_info *t[3];

	if (access(ckpt_path, F_OK) != 0)
		return 0;
	TRY(sa_gguf_open(&g, ckpt_path));
	TRY(sa_gguf_get_u32(g, "sa.train.mode", &mode));
	TRY(sa_gguf_get_u64(g, "sa.train.step", &st));
	TRY(sa_gguf_get_u64(g, "sa.train.rng", &rs));
	TRY(sa_gguf_get_u64(g, "sa.train.n", &n));
	t[0] = sa_gguf_tensor(g, "params");
	t[1] = sa_gguf_tensor(g, "adam.m");
	t[2] = sa_gguf_tensor(g, "adam.v");
	if (mode != (uint32_t)opt.mode || n != tr.n)
		die(SA_EDATA, "%s: checkpoint of another run (mode or size differs)", ckpt_path);
	float *dst[3] = { tr.p, tr.m, tr.v };
	for (int i = 0; i < 3; i++) {
		if (!t[i] || t[i]->type != SA_TYPE_F32 || t[i]->nbytes != n * sizeof(float))
			die(SA_EDATA, "%s: checkpoint tensors missing or of the wrong size", ckpt_path);
		memcpy(dst[i], t[i]->data, t[i]->nbytes);
	}
	step = (long)st;
	data_rng.s = rs;
	sa_gguf_close(g);
	return 1;
}

/* ------------------------------------------------------------- workers */

/*
 * The items of a step (micro-batches, adapter episodes) run on sa_tworkers:
 * all data of the step is drawn first, on this thread and in the order a
 * single thread would draw it, so the data stream does not depend on the
 * number of threads, and neither do the sums (see sa_tworkers_run).
 */
typedef struct worker {
	sa_tact *act;
	/* --adapter */
	sa_tctx *tctx;
	sa_tside *side;      /* [n_layer*SA_NMAT]: W1, W2 shared, H and dH its own,
	                      * dW1 and dW2 into the gradient of the item it runs */
	float **H, **dH;     /* per adapted (l, m): [r][Dkv] */
	float *dh_buf;       /* [Hk][r][dh] */
} worker;

static sa_tworkers *team;
static worker *workers;
static int n_workers;

/* ------------------------------------------------------------- pretrain */

/* Micro-batches of B sequences of T tokens, drawn before they run. */
typedef struct micro_batches {
	int B, T, cap;
	int *in, *tgt;       /* [cap][B][T] inputs and next-token targets */
	float *loss;         /* [cap] mean loss of each */
	int *seq;            /* [B][T+1] scratch for drawing */
	unsigned char *unscored;   /* [B][T+1] 1: the token at seq's place is no target */
	/* evaluation of in-context copying: which micro-batch, and the counts */
	int map_item, *first_sight;   /* first_sight [B][T]: 1 where a word is new */
	int seen_ok, seen_n, first_ok, first_n;
} micro_batches;

static micro_batches mb;

/* Room for n micro-batches. */
static void
micro_reserve(micro_batches *m, int n)
{
	size_t bt = (size_t)m->B * m->T;

	if (n <= m->cap)
		return;
	if (!(m->in = realloc(m->in, n * bt * sizeof *m->in)) ||
	    !(m->tgt = realloc(m->tgt, n * bt * sizeof *m->tgt)) ||
	    !(m->loss = realloc(m->loss, n * sizeof *m->loss)))
		die(SA_EINTERNAL, "out of memory");
	m->cap = n;
}

/* Inputs and targets of micro-batch i from the B sequences in m->seq. */
static void
micro_from_seq(micro_batches *m, int i)
{
	int B = m->B, T = m->T;
	int *in = m->in + (size_t)i * B * T, *tgt = m->tgt + (size_t)i * B * T;

	for (int b = 0; b < B; b++)
		for (int t = 0; t < T; t++) {
			in[b * T + t] = m->seq[(size_t)b * (T + 1) + t];
			tgt[b * T + t] = m->unscored[(size_t)b * (T + 1) + t + 1] ? -1 :
			    m->seq[(size_t)b * (T + 1) + t + 1];
		}
}

/* One pretraining sequence of T+1 tokens and which of them are not
 * targets; returns its kind (see --mix). */
static int
draw_sequence(rng *r, int *s, unsigned char *unscored, int T)
{
	int kind = pick_kind(r);

	memset(unscored, 0, (size_t)T + 1);
	switch (kind) {
	case 0: episode_text(r, &corpus, s, T); break;
	case 1: episode_task(r, s, unscored, T); break;
	case 2:
		if (opt.map_vocab)
			episode_map_vocab(r, s, unscored, T);
		else
			episode_map(r, s, T, 2 + rng_below(r, 15));
		break;
	default: episode_repeat(r, &corpus, s, T); break;
	}
	return kind;
}

/* Draw the next micro-batch of the data stream as number i. */
static void
pretrain_draw(micro_batches *m, int i)
{
	for (int b = 0; b < m->B; b++)
		draw_sequence(&data_rng, m->seq + (size_t)b * (m->T + 1),
		    m->unscored + (size_t)b * (m->T + 1), m->T);
	micro_from_seq(m, i);
}

/* --show-data: n sequences of the data stream as JSON Lines, the first
 * step's, with the runs of tokens that are not scored, so that what
 * training reads can be looked at. */
static void
show_data(long n, int T)
{
	static const char *kinds[] = { "text", "task", "map", "repeat" };
	int *s = malloc((size_t)(T + 1) * sizeof *s);
	unsigned char *unscored = malloc((size_t)T + 1);

	if (!s || !unscored)
		die(SA_EINTERNAL, "out of memory");
	for (long i = 0; i < n; i++) {
		int kind = draw_sequence(&data_rng, s, unscored, T);
		char *text;
		size_t len;
		TRY(sa_detokenize(vocab, s, T + 1, &text, &len));
		printf("{\"kind\":\"%s\",\"text\":", kinds[kind]);
		sa_json_put_str(stdout, text, len);
		free(text);
		/* the runs of tokens that are no targets */
		fputs(",\"unscored\":[", stdout);
		for (int t = 0, first = 1; t <= T; t++) {
			int e = t;
			if (!unscored[t])
				continue;
			while (e <= T && unscored[e])
				e++;
			TRY(sa_detokenize(vocab, s + t, e - t, &text, &len));
			fputs(first ? "" : ",", stdout);
			sa_json_put_str(stdout, text, len);
			free(text);
			first = 0;
			t = e;
		}
		fputs("]}\n", stdout);
	}
	free(s);
	free(unscored);
}

/* sa_titem_fn: forward (and backward, with grads) of micro-batch item. */
static int
run_micro(void *ctx, int wi, int item, float *grads)
{
	micro_batches *m = ctx;
	size_t at = (size_t)item * m->B * m->T;
	sa_tact *a = workers[wi].act;
	int rc;

	rc = sa_tmodel_forward(tm, a, NULL, m->in + at, m->tgt + at, m->B, m->T, &m->loss[item]);
	if (rc == SA_OK && grads)
		rc = sa_tmodel_backward_into(tm, a, NULL, grads);
	if (rc != SA_OK || item != m->map_item)
		return rc;
	/* the copying test: is the label's first token the top prediction */
	const float *lg = sa_tact_logits(a);
	int V = tm->cfg.n_vocab;
	for (int i = 0; i < m->B * m->T; i++) {
		int y = m->tgt[at + i];
		if (y < 0)
			continue;
		const float *row = lg + (size_t)i * V;
		int best = 0;
		for (int j = 1; j < V; j++)
			if (row[j] > row[best])
				best = j;
		if (m->first_sight[i]) {
			m->first_n++;
			m->first_ok += best == y;
		} else {
			m->seen_n++;
			m->seen_ok += best == y;
		}
	}
	return SA_OK;
}

/* One step's micro-batches until its token budget is met; their gradients
 * summed into tr.g.  Returns how many, their losses in mb.loss. */
static int
pretrain_step(long *n_tok)
{
	int n = 0;

	mb.map_item = -1;
	for (*n_tok = 0; *n_tok < opt.batch_tokens; *n_tok += (long)mb.B * mb.T) {
		micro_reserve(&mb, n + 1);
		pretrain_draw(&mb, n++);
	}
	TRY(sa_tworkers_run(team, run_micro, &mb, n, tr.g));
	return n;
}

/*
 * Evaluation: validation loss on fixed windows, and in-context accuracy on
 * fixed random-mapping episodes: at each label's first token, whether the
 * model's top prediction is right, split into the first time a word appears
 * (chance) and later times (readable from the context).
 */
static void
evaluate_pretrain(void)
{
	rng r = { 12345 };
	int B = mb.B, T = mb.T, n = 0, nv = 0;
	const toks *vsrc = valid.n > T + 1 ? &valid : &corpus;

	micro_reserve(&mb, 3);
	memset(mb.unscored, 0, (size_t)B * (T + 1));
	for (int rep = 0; rep < 2 && vsrc->n > T + 1; rep++) {
		for (int b = 0; b < B; b++)
			episode_text(&r, vsrc, mb.seq + (size_t)b * (T + 1), T);
		micro_from_seq(&mb, n++);
		nv++;
	}
	mb.map_item = -1;
	mb.seen_ok = mb.seen_n = mb.first_ok = mb.first_n = 0;
	const pool *ew = eval_words.n ? &eval_words : &pool_words;
	const pool *el = eval_words.n ? &eval_labels : &pool_labels;
	if (ew->n) {
		int *in = mb.in + (size_t)n * B * T, *tgt = mb.tgt + (size_t)n * B * T;
		/* rebuild the episodes here to know where each label starts */
		for (int b = 0; b < B; b++) {
			int keys[8], vals[8], k = 0, bos = sa_vocab_bos(vocab), seen[8] = { 0 };
			int *s = mb.seq + (size_t)b * (T + 1);
			for (int i = 0; i < 8; i++) {
				keys[i] = rng_below(&r, ew->n);
				vals[i] = rng_below(&r, el->n);
			}
			if (bos >= 0)
				s[k++] = bos;
			for (int i = 0; i < T; i++) {
				tgt[b * T + i] = -1;
				mb.first_sight[b * T + i] = 0;
			}
			while (k <= T) {
				int j = rng_below(&r, 8);
				k = fill_seq(s, k, T, &ew->w[keys[j]]);
				k = fill_seq(s, k, T, &arrow_nl[0]);
				if (k < T) {
					/* position k-1 predicts the label's first token */
					tgt[b * T + k - 1] = el->w[vals[j]].t[0];
					mb.first_sight[b * T + k - 1] = !seen[j];
					seen[j] = 1;
				}
				k = fill_seq(s, k, T, &el->w[vals[j]]);
				k = fill_seq(s, k, T, &arrow_nl[1]);
			}
			for (int i = 0; i < T; i++)
				in[b * T + i] = s[i];
		}
		mb.map_item = n++;
	}
	TRY(sa_tworkers_run(team, run_micro, &mb, n, NULL));
	double vloss = 0;
	for (int i = 0; i < nv; i++)
		vloss += mb.loss[i];
	double va = nv ? vloss / nv : NAN;
	double acc_seen = mb.seen_n ? (double)mb.seen_ok / mb.seen_n : NAN;
	double acc_first = mb.first_n ? (double)mb.first_ok / mb.first_n : NAN;
	if (!opt.quiet)
		fprintf(stderr, "sa-train: step %ld: valid loss %.4f, in-context copy accuracy %.3f (first sight %.3f)\n",
		    step, va, acc_seen, acc_first);
	if (logfp) {
		fprintf(logfp, "{\"step\":%ld,\"valid_loss\":%.6g,\"map_acc\":%.6g,\"map_acc_first\":%.6g}\n",
		    step, va, acc_seen, acc_first);
		fflush(logfp);
	}
}

/* -------------------------------------------------------------- adapter */

/* One adapter episode, drawn before it runs. */
typedef struct episode {
	toks ctx;            /* the demonstrations, segment after segment */
	int seg[16], n_seg;  /* where each segment starts in ctx (each from position 0) */
	int *in, *tgt;       /* [Q][Tq] the queries and their targets (-1: not scored) */
	int Q, Tq;
	float loss;
	int acc[3];          /* evaluation: see run_episode */
} episode;

static episode *eps;     /* one step's episodes */
static int eps_cap;

/* Room for n episodes. */
static void
episodes_reserve(int n)
{
	if (n <= eps_cap)
		return;
	if (!(eps = realloc(eps, n * sizeof *eps)))
		die(SA_EINTERNAL, "out of memory");
	for (int i = eps_cap; i < n; i++) {
		memset(&eps[i], 0, sizeof eps[i]);
		eps[i].in = malloc((size_t)opt.queries * opt.seq * sizeof(int));
		eps[i].tgt = malloc((size_t)opt.queries * opt.seq * sizeof(int));
		if (!eps[i].in || !eps[i].tgt)
			die(SA_EINTERNAL, "out of memory");
	}
	eps_cap = n;
}

/* Context pass: the frozen base over the demonstrations, segment by segment,
 * then the context mapping's state of every adapted matrix into w->H. */
static int
context_pass(worker *w, const episode *e)
{
	const sa_config *c = &tm->cfg;
	const float *K[256], *V[256];
	int rc;

	sa_tctx_reset(w->tctx);
	for (int i = 0; i < e->n_seg; i++) {
		int at = e->seg[i], len = (i + 1 < e->n_seg ? e->seg[i + 1] : e->ctx.n) - at;
		if ((rc = sa_tmodel_forward(tm, w->act, NULL, e->ctx.t + at, NULL, 1, len, NULL)) != SA_OK)
			return rc;
		for (int l = 0; l < c->n_layer; l++) {
			K[l] = sa_tact_keys(w->act, l);
			V[l] = sa_tact_values(w->act, l);
		}
		if ((rc = sa_tctx_add_segment(w->tctx, K, V, len)) != SA_OK)
			return rc;
	}
	/* H [r][Dkv] is the state h [Hk][r][dh] with heads side by side */
	int Hk = c->n_head_kv, dh = c->d_head, r = adapter->rank;
	for (int l = 0; l < c->n_layer; l++)
		for (int m = 0; m < SA_NMAT; m++) {
			if (!(adapter->mats >> m & 1))
				continue;
			amat *P = &ap[l * SA_NMAT + m];
			if ((rc = sa_tctx_forward(w->tctx, l, m, P->Q, P->g, P->b)) != SA_OK)
				return rc;
			const float *h = sa_tctx_state(w->tctx, l, m);
			float *H = w->H[l * SA_NMAT + m];
			for (int hh = 0; hh < Hk; hh++)
				for (int j = 0; j < r; j++)
					memcpy(H + (size_t)j * Hk * dh + hh * dh, h + ((size_t)hh * r + j) * dh,
					    dh * sizeof(float));
		}
	return SA_OK;
}

/* The gradient of adapter tensor x (a view into tr.p) in grads, laid out as tr.p. */
static float *
grad_in(float *grads, const float *x)
{
	return grads + (x - tr.p);
}

/* Backward from w->dH into the context mapping's Q, g, b. */
static int
context_backward(worker *w, float *grads)
{
	const sa_config *c = &tm->cfg;
	int Hk = c->n_head_kv, dh = c->d_head, r = adapter->rank, rc;

	for (int l = 0; l < c->n_layer; l++)
		for (int m = 0; m < SA_NMAT; m++) {
			if (!(adapter->mats >> m & 1))
				continue;
			const float *dH = w->dH[l * SA_NMAT + m];
			for (int hh = 0; hh < Hk; hh++)
				for (int j = 0; j < r; j++)
					memcpy(w->dh_buf + ((size_t)hh * r + j) * dh, dH + (size_t)j * Hk * dh + hh * dh,
					    dh * sizeof(float));
			amat *P = &ap[l * SA_NMAT + m];
			rc = sa_tctx_backward(w->tctx, l, m, P->Q, P->g, w->dh_buf, grad_in(grads, P->Q),
			    grad_in(grads, P->g), grad_in(grads, P->b));
			if (rc != SA_OK)
				return rc;
		}
	return SA_OK;
}

/* Each worker's side paths, mapping state and buffers for it. */
static void
build_adapter_workers(void)
{
	const sa_config *c = &tm->cfg;
	size_t n = (size_t)c->n_layer * SA_NMAT;
	int Dkv = c->n_head_kv * c->d_head;

	if (c->n_layer > 256)
		die(SA_EDATA, "too many layers");
	for (int wi = 0; wi < n_workers; wi++) {
		worker *w = &workers[wi];
		w->side = calloc(n, sizeof *w->side);
		w->H = calloc(n, sizeof *w->H);
		w->dH = calloc(n, sizeof *w->dH);
		w->dh_buf = malloc((size_t)adapter->rank * Dkv * sizeof(float));
		if (!w->side || !w->H || !w->dH || !w->dh_buf)
			die(SA_EINTERNAL, "out of memory");
		for (int l = 0; l < c->n_layer; l++)
			for (int m = 0; m < SA_NMAT; m++) {
				if (!(adapter->mats >> m & 1))
					continue;
				size_t i = (size_t)l * SA_NMAT + m;
				if (!(w->H[i] = calloc((size_t)adapter->rank * Dkv, sizeof(float))) ||
				    !(w->dH[i] = calloc((size_t)adapter->rank * Dkv, sizeof(float))))
					die(SA_EINTERNAL, "out of memory");
				w->side[i].rank = adapter->rank;
				w->side[i].W1 = ap[i].W1;
				w->side[i].W2 = ap[i].W2;
				w->side[i].H = w->H[i];
				w->side[i].dH = w->dH[i];
			}
		/* a context of up to kmax demonstrations, several segments long */
		TRY(sa_tctx_new(&w->tctx, c->n_layer, c->n_head_kv, c->d_head, adapter->rank,
		    adapter->chunk, adapter->mats, opt.seq * 16));
	}
}

/*
 * Draw one adapter episode: k demonstrations of a task (or a random
 * mapping) form the context; `queries` other examples run alone through the
 * adapted model, scored on their answer tokens only.  *n_tok counts the
 * context and query tokens.  With held_out, a task's queries come from its
 * dev split (when it has one), which training never reads.
 */
static void
draw_episode(rng *r, episode *e, int T, long *n_tok, int held_out)
{
	int bos = sa_vocab_bos(vocab), Q = opt.queries;
	double lk = log(opt.kmin), hk = log(opt.kmax);
	int k = (int)floor(exp(lk + rng_unif(r) * (hk - lk)) + 0.5);
	int kind = pick_kind(r);
	int *in = e->in, *tgt = e->tgt;

	if (k < 1)
		k = 1;
	/* the context must fit the context-state buffers: 16 segments */
	e->ctx.n = 0;
	e->seg[0] = 0;
	e->n_seg = 1;
	if (bos >= 0)
		toks_push(&e->ctx, &bos, 1);
	for (int i = 0; i < Q * T; i++) {
		in[i] = 0;
		tgt[i] = -1;
	}
	if (kind == 0 && corpus.n > (opt.text_segs + 1) * T + 2) {
		/* language modelling: context = one or more text segments (the
		 * state must not blow up over long contexts), target = the next */
		int len = T - 1, ns = opt.text_segs > 1 ? 1 + (int)rng_below(r, opt.text_segs) : 1;
		long s = rng_below(r, corpus.n - (long)(ns + 1) * len - 1);
		for (int j = 0; j < ns; j++, s += len) {
			if (j) {
				e->seg[e->n_seg++] = e->ctx.n;
				if (bos >= 0)
					toks_push(&e->ctx, &bos, 1);
			}
			toks_push(&e->ctx, corpus.t + s, len);
		}
		Q = 1;
		in[0] = bos >= 0 ? bos : corpus.t[s];
		for (int i = 0; i < len; i++) {
			if (i + 1 < T)
				in[i + 1] = corpus.t[s + i];
			tgt[i] = corpus.t[s + i];
		}
		tgt[T - 1] = -1;
	} else if (kind == 1 && n_tasks) {
		task *t = &tasks[rng_below(r, n_tasks)];
		int len = e->ctx.n, *buf = malloc((size_t)(opt.seq + 8) * sizeof *buf);
		word names[16];
		int renamed = opt.rename > 0 && t->renamable && rng_unif(r) < opt.rename;
		if (!buf)
			die(SA_EINTERNAL, "out of memory");
		if (renamed)
			draw_words(r, names, t->n_labels);
		for (int i = 0; i < k; i++) {
			const example *x = &t->train[rng_below(r, t->n_train)];
			toks dt = demo_toks(x, renamed ? &names[x->label] : NULL, buf, opt.seq + 8);
			const toks *d = &dt;
			if (d->n + (bos >= 0) > opt.seq)
				continue;
			if (len + d->n > opt.seq) {  /* a new segment: BOS again */
				if (e->n_seg == 16)
					break;
				e->seg[e->n_seg++] = e->ctx.n;
				if (bos >= 0)
					toks_push(&e->ctx, &bos, 1);
				len = bos >= 0;
			}
			toks_push(&e->ctx, d->t, d->n);
			len += d->n;
		}
		int from_dev = held_out && t->n_dev > 0;
		for (int q = 0; q < Q; q++) {
			const example *x = from_dev ? &t->dev[rng_below(r, t->n_dev)]
			    : &t->train[rng_below(r, t->n_train)];
			toks d = demo_toks(x, renamed ? &names[x->label] : NULL, buf, opt.seq + 8);
			int n = 0;
			if (bos >= 0)
				in[q * T + n++] = bos;
			for (int i = 0; i < d.n && n < T; i++) {
				in[q * T + n] = d.t[i];
				if (i >= x->answer_at && n > 0)
					tgt[q * T + n - 1] = d.t[i];
				n++;
			}
		}
		free(buf);
	} else {
		/* random mapping: the answers exist only in the context */
		int nk = 1 + rng_below(r, k < 63 ? k : 63), len = e->ctx.n;
		word wk[64], wv[64];
		toks keys[64], vals[64];
		int alike_v = opt.map_vocab && rng_u64(r) & 1;
		if (opt.map_vocab && rng_u64(r) & 1)
			draw_words_alike(r, wk, nk);
		else if (opt.map_vocab)
			draw_words(r, wk, nk);
		if (alike_v)
			draw_words_alike(r, wv, nk);
		for (int i = 0; i < nk; i++) {
			if (opt.map_vocab) {
				if (!alike_v)
					wv[i] = draw_word(r, draw_word_len(r));
				keys[i] = word_toks(&wk[i]);
				vals[i] = word_toks(&wv[i]);
			} else {
				keys[i] = pool_words.w[rng_below(r, pool_words.n)];
				vals[i] = pool_labels.w[rng_below(r, pool_labels.n)];
			}
		}
		for (int i = 0; i < k + nk; i++) {
			int j = i < nk ? i : rng_below(r, nk);
			int n = keys[j].n + arrow_nl[0].n + vals[j].n + arrow_nl[1].n;
			if (len + n > opt.seq) {
				if (e->n_seg == 16)
					break;
				e->seg[e->n_seg++] = e->ctx.n;
				if (bos >= 0)
					toks_push(&e->ctx, &bos, 1);
				len = bos >= 0;
			}
			toks_push(&e->ctx, keys[j].t, keys[j].n);
			toks_push(&e->ctx, arrow_nl[0].t, arrow_nl[0].n);
			toks_push(&e->ctx, vals[j].t, vals[j].n);
			toks_push(&e->ctx, arrow_nl[1].t, arrow_nl[1].n);
			len += n;
		}
		for (int q = 0; q < Q; q++) {
			int j = rng_below(r, nk), n = 0;
			if (bos >= 0)
				in[q * T + n++] = bos;
			toks parts[4] = { keys[j], arrow_nl[0], vals[j], arrow_nl[1] };
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
}

/*
 * sa_titem_fn: run episode `item` of eps on worker wi.  With grads, train:
 * the loss's gradient goes into grads.  Without, evaluate: acc[0] counts
 * answers whose first token the adapted model ranks first, acc[1] the same
 * for the base alone (zero-shot), acc[2] the answers seen.
 */
static int
run_episode(void *ctx, int wi, int item, float *grads)
{
	const sa_config *c = &tm->cfg;
	worker *w = &workers[wi];
	episode *e = &eps[item];
	int rc;

	(void)ctx;
	if ((rc = context_pass(w, e)) != SA_OK)
		return rc;
	for (int l = 0; l < c->n_layer; l++)
		for (int m = 0; m < SA_NMAT; m++) {
			size_t i = (size_t)l * SA_NMAT + m;
			if (!w->dH[i])
				continue;
			memset(w->dH[i], 0, (size_t)adapter->rank * c->n_head_kv * c->d_head * sizeof(float));
			w->side[i].dW1 = grads ? grad_in(grads, ap[i].W1) : NULL;
			w->side[i].dW2 = grads ? grad_in(grads, ap[i].W2) : NULL;
		}
	if ((rc = sa_tmodel_forward(tm, w->act, w->side, e->in, e->tgt, e->Q, e->Tq, &e->loss)) != SA_OK)
		return rc;
	if (grads) {
		if ((rc = sa_tmodel_backward_into(tm, w->act, w->side, NULL)) != SA_OK)
			return rc;
		return context_backward(w, grads);
	}
	/* the first answer token of each query: with the delta, then without */
	memset(e->acc, 0, sizeof e->acc);
	for (int pass = 0; pass < 2; pass++) {
		if (pass == 1 &&
		    (rc = sa_tmodel_forward(tm, w->act, NULL, e->in, e->tgt, e->Q, e->Tq, NULL)) != SA_OK)
			return rc;
		const float *lg = sa_tact_logits(w->act);
		int V = tm->cfg.n_vocab;
		for (int q = 0; q < e->Q; q++)
			for (int i = 0; i < e->Tq; i++) {
				int y = e->tgt[q * e->Tq + i];
				if (y < 0)
					continue;
				const float *row = lg + ((size_t)q * e->Tq + i) * V;
				int best = 0;
				for (int j = 1; j < V; j++)
					if (row[j] > row[best])
						best = j;
				e->acc[pass] += best == y;
				e->acc[2] += pass == 0;
				break;
			}
	}
	return SA_OK;
}

/* One step's episodes until its token budget is met; their gradients summed
 * into tr.g.  Returns how many, their losses in eps[i].loss. */
static int
adapter_step(long *n_tok)
{
	int n = 0;

	for (*n_tok = 0; *n_tok < opt.batch_tokens; n++) {
		episodes_reserve(n + 1);
		draw_episode(&data_rng, &eps[n], opt.seq, n_tok, 0);
	}
	TRY(sa_tworkers_run(team, run_episode, NULL, n, tr.g));
	return n;
}

/* StreamAdapter against zero-shot on fixed episodes of every kind in the
 * mix, task queries from the dev splits. */
static void
evaluate_adapter(void)
{
	rng r = { 777 };
	int acc[3] = { 0 }, n = 32;
	long n_tok = 0;

	episodes_reserve(n);
	for (int e = 0; e < n; e++)
		draw_episode(&r, &eps[e], opt.seq, &n_tok, 1);
	TRY(sa_tworkers_run(team, run_episode, NULL, n, NULL));
	for (int e = 0; e < n; e++)
		for (int i = 0; i < 3; i++)
			acc[i] += eps[e].acc[i];
	double sa = acc[2] ? (double)acc[0] / acc[2] : NAN, zs = acc[2] ? (double)acc[1] / acc[2] : NAN;
	if (!opt.quiet)
		fprintf(stderr, "sa-train: step %ld: answer accuracy with delta %.3f, zero-shot %.3f (%d answers)\n",
		    step, sa, zs, acc[2]);
	fprintf(logfp, "{\"step\":%ld,\"sa_acc\":%.6g,\"zero_shot_acc\":%.6g,\"answers\":%d}\n",
	    step, sa, zs, acc[2]);
	fflush(logfp);
}


/* ----------------------------------------------------------------- main */

static void
parse_mats(const char *s)
{
	char buf[256], *tok, *save = NULL;

	snprintf(buf, sizeof buf, "%s", s);
	opt.mats = 0;
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		int m = sa_mat_from_name(tok);
		if (m < 0)
			die(SA_EUSAGE, "--mats: unknown matrix '%s'", tok);
		opt.mats |= 1u << m;
	}
	if (!opt.mats)
		die(SA_EUSAGE, "--mats: empty");
}

static void
push_arg(const char ***list, int *n, const char *s)
{
	*list = realloc(*list, (*n + 1) * sizeof **list);
	(*list)[(*n)++] = s;
}

/* A vocab GGUF from a TSV of id, piece, score, type (SentencePiece order). */
static const char *
vocab_from_tsv(const char *tsv, const char *dir)
{
	static char path[4096];
	char *data, *line, *save = NULL;
	size_t len;
	sa_str *pieces = NULL;
	float *scores = NULL;
	int32_t *types = NULL;
	uint64_t n = 0, cap = 0;

	TRY(sa_file_read(tsv, &data, &len));
	for (line = strtok_r(data, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *f[4];
		int nf = 0;
		for (char *p = line; nf < 4; nf++) {
			f[nf] = p;
			char *tab = strchr(p, '\t');
			if (!tab) {
				nf++;
				break;
			}
			*tab = 0;
			p = tab + 1;
		}
		if (nf < 4 || !strcmp(f[0], "id"))
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 1024;
			pieces = realloc(pieces, cap * sizeof *pieces);
			scores = realloc(scores, cap * sizeof *scores);
			types = realloc(types, cap * sizeof *types);
		}
		if (strtoull(f[0], NULL, 10) != n)
			die(SA_EDATA, "%s: ids must count from 0 in order", tsv);
		pieces[n].s = f[1];
		pieces[n].n = strlen(f[1]);
		scores[n] = strtof(f[2], NULL);
		types[n] = (int32_t)strtol(f[3], NULL, 10);
		n++;
	}
	if (n < 4)
		die(SA_EDATA, "%s: not a vocabulary", tsv);
	sa_gguf_writer *w = sa_gguf_writer_new();
	TRY(sa_gguf_writer_set_str(w, "general.architecture", "llama"));
	TRY(sa_gguf_writer_set_str(w, "tokenizer.ggml.model", "llama"));
	TRY(sa_gguf_writer_set_strs(w, "tokenizer.ggml.tokens", n, pieces));
	TRY(sa_gguf_writer_set_arr(w, "tokenizer.ggml.scores", SA_GGUF_F32, n, scores));
	TRY(sa_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", SA_GGUF_I32, n, types));
	TRY(sa_gguf_writer_set_u32(w, "tokenizer.ggml.unknown_token_id", 0));
	TRY(sa_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 1));
	TRY(sa_gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 2));
	TRY(sa_gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", 1));
	TRY(sa_gguf_writer_set_bool(w, "tokenizer.ggml.add_eos_token", 0));
	snprintf(path, sizeof path, "%s/vocab.gguf", dir);
	TRY(sa_gguf_writer_save(w, path));
	sa_gguf_writer_free(w);
	free(pieces);
	free(scores);
	free(types);
	free(data);
	return path;
}

int
main(int argc, char **argv)
{
	enum { O_PRETRAIN = 256, O_ADAPTER, O_VOCAB, O_INIT, O_TEXT, O_VALID, O_TASK,
	    O_POOL, O_DIM, O_LAYERS, O_HEADS, O_KVHEADS, O_FF, O_CTX, O_ROPE, O_TIED,
	    O_UNTIED, O_TYPE, O_MATS, O_KMIN, O_KMAX, O_QUERIES, O_TEXTSEGS, O_STEPS,
	    O_BATCH, O_SEQ, O_MICRO, O_LR, O_MINLR, O_WARMUP, O_WD, O_CLIP, O_GATELR,
	    O_GATEBIAS, O_MIX, O_CKPT, O_CKPTEVERY, O_RESUME, O_EVALEVERY, O_LOG, O_RUNSTEPS,
	    O_STARTSTEP, O_REBIND, O_MAPVOCAB, O_RENAME, O_EVALPOOL, O_SHOWDATA };
	static const struct option longopts[] = {
		{ "pretrain", no_argument, NULL, O_PRETRAIN },
		{ "adapter", no_argument, NULL, O_ADAPTER },
		{ "model", required_argument, NULL, 'm' },
		{ "vocab", required_argument, NULL, O_VOCAB },
		{ "init", required_argument, NULL, O_INIT },
		{ "rebind", no_argument, NULL, O_REBIND },
		{ "output", required_argument, NULL, 'o' },
		{ "text", required_argument, NULL, O_TEXT },
		{ "valid", required_argument, NULL, O_VALID },
		{ "task", required_argument, NULL, O_TASK },
		{ "pool", required_argument, NULL, O_POOL },
		{ "map-vocab", no_argument, NULL, O_MAPVOCAB },
		{ "rename", required_argument, NULL, O_RENAME },
		{ "eval-pool", required_argument, NULL, O_EVALPOOL },
		{ "show-data", required_argument, NULL, O_SHOWDATA },
		{ "dim", required_argument, NULL, O_DIM },
		{ "layers", required_argument, NULL, O_LAYERS },
		{ "heads", required_argument, NULL, O_HEADS },
		{ "kv-heads", required_argument, NULL, O_KVHEADS },
		{ "ff", required_argument, NULL, O_FF },
		{ "ctx", required_argument, NULL, O_CTX },
		{ "rope-base", required_argument, NULL, O_ROPE },
		{ "tied", no_argument, NULL, O_TIED },
		{ "untied", no_argument, NULL, O_UNTIED },
		{ "type", required_argument, NULL, O_TYPE },
		{ "rank", required_argument, NULL, 'r' },
		{ "chunk", required_argument, NULL, 'C' },
		{ "mats", required_argument, NULL, O_MATS },
		{ "kmin", required_argument, NULL, O_KMIN },
		{ "kmax", required_argument, NULL, O_KMAX },
		{ "text-segs", required_argument, NULL, O_TEXTSEGS },
		{ "queries", required_argument, NULL, O_QUERIES },
		{ "steps", required_argument, NULL, O_STEPS },
		{ "batch-tokens", required_argument, NULL, O_BATCH },
		{ "seq", required_argument, NULL, O_SEQ },
		{ "micro", required_argument, NULL, O_MICRO },
		{ "lr", required_argument, NULL, O_LR },
		{ "min-lr", required_argument, NULL, O_MINLR },
		{ "warmup", required_argument, NULL, O_WARMUP },
		{ "wd", required_argument, NULL, O_WD },
		{ "gate-lr", required_argument, NULL, O_GATELR },
		{ "gate-bias", required_argument, NULL, O_GATEBIAS },
		{ "clip", required_argument, NULL, O_CLIP },
		{ "seed", required_argument, NULL, 's' },
		{ "mix", required_argument, NULL, O_MIX },
		{ "ckpt", required_argument, NULL, O_CKPT },
		{ "ckpt-every", required_argument, NULL, O_CKPTEVERY },
		{ "resume", no_argument, NULL, O_RESUME },
		{ "run-steps", required_argument, NULL, O_RUNSTEPS },
		{ "start-step", required_argument, NULL, O_STARTSTEP },
		{ "eval-every", required_argument, NULL, O_EVALEVERY },
		{ "log", required_argument, NULL, O_LOG },
		{ "threads", required_argument, NULL, 't' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	int ch, nc = 0;

	setprogname_(argv[0]);
	while ((ch = getopt_long(argc, argv, "m:o:r:C:s:t:qvhV", longopts, NULL)) != -1) {
		switch (ch) {
		case O_PRETRAIN: opt.mode |= PRETRAIN; break;
		case O_ADAPTER: opt.mode |= ADAPTER; break;
		case 'm': opt.model = optarg; break;
		case O_VOCAB: opt.vocab = optarg; break;
		case O_INIT: opt.init = optarg; break;
		case O_REBIND: opt.rebind = 1; break;
		case 'o': opt.out = optarg; break;
		case O_TEXT: push_arg(&opt.texts, &opt.n_texts, optarg); break;
		case O_VALID: opt.valid = optarg; break;
		case O_TASK: push_arg(&opt.tasks, &opt.n_tasks, optarg); break;
		case O_POOL: opt.pool = optarg; break;
		case O_MAPVOCAB: opt.map_vocab = 1; break;
		case O_RENAME: opt.rename = parse_double("--rename", optarg, 0, 1); break;
		case O_EVALPOOL: opt.eval_pool = optarg; break;
		case O_SHOWDATA: opt.show_data = parse_long("--show-data", optarg, 1, LONG_MAX); break;
		case O_DIM: opt.dim = parse_long("--dim", optarg, 8, 16384); break;
		case O_LAYERS: opt.layers = parse_long("--layers", optarg, 1, 256); break;
		case O_HEADS: opt.heads = parse_long("--heads", optarg, 1, 1024); break;
		case O_KVHEADS: opt.kv_heads = parse_long("--kv-heads", optarg, 1, 1024); break;
		case O_FF: opt.ff = parse_long("--ff", optarg, 1, 1 << 20); break;
		case O_CTX: opt.ctx = parse_long("--ctx", optarg, 8, 1 << 16); break;
		case O_ROPE: opt.rope_base = parse_double("--rope-base", optarg, 1, 1e9); break;
		case O_TIED: opt.tied = 1; break;
		case O_UNTIED: opt.tied = 0; break;
		case O_TYPE:
			if (!strcmp(optarg, "f32")) opt.save_type = SA_TYPE_F32;
			else if (!strcmp(optarg, "f16")) opt.save_type = SA_TYPE_F16;
			else if (!strcmp(optarg, "q8_0")) opt.save_type = SA_TYPE_Q8_0;
			else die(SA_EUSAGE, "--type: want f32, f16 or q8_0");
			break;
		case 'r': opt.rank = parse_long("--rank", optarg, 1, 4096); opt.have_rank = 1; break;
		case 'C': opt.chunk = parse_long("--chunk", optarg, 1, 1 << 16); break;
		case O_MATS: parse_mats(optarg); break;
		case O_KMIN: opt.kmin = parse_long("--kmin", optarg, 1, 1 << 20); break;
		case O_KMAX: opt.kmax = parse_long("--kmax", optarg, 1, 1 << 20); break;
		case O_TEXTSEGS: opt.text_segs = parse_long("--text-segs", optarg, 1, 16); break;
		case O_QUERIES: opt.queries = parse_long("--queries", optarg, 1, 4096); break;
		case O_STEPS: opt.steps = parse_long("--steps", optarg, 1, LONG_MAX); break;
		case O_BATCH: opt.batch_tokens = parse_long("--batch-tokens", optarg, 1, LONG_MAX); break;
		case O_SEQ: opt.seq = parse_long("--seq", optarg, 2, 1 << 16); break;
		case O_MICRO: opt.micro = parse_long("--micro", optarg, 1, 4096); break;
		case O_LR: opt.lr = parse_double("--lr", optarg, 0, 10); break;
		case O_MINLR: opt.min_lr = parse_double("--min-lr", optarg, 0, 10); break;
		case O_WARMUP: opt.warmup = parse_long("--warmup", optarg, 0, LONG_MAX); break;
		case O_WD: opt.wd = parse_double("--wd", optarg, 0, 10); break;
		case O_GATELR: opt.gate_lr = parse_double("--gate-lr", optarg, 0, 1000); break;
		case O_GATEBIAS: opt.gate_bias = parse_double("--gate-bias", optarg, -20, 20); break;
		case O_CLIP: opt.clip = parse_double("--clip", optarg, 0, 1e9); break;
		case 's': opt.seed = (uint64_t)parse_long("--seed", optarg, 0, LONG_MAX); break;
		case O_MIX:
			opt.mix[3] = 0;
			if (sscanf(optarg, "%lf,%lf,%lf%n,%lf%n", &opt.mix[0], &opt.mix[1], &opt.mix[2],
			    &nc, &opt.mix[3], &nc) < 3 || optarg[nc] ||
			    opt.mix[0] < 0 || opt.mix[1] < 0 || opt.mix[2] < 0 || opt.mix[3] < 0 ||
			    opt.mix[0] + opt.mix[1] + opt.mix[2] + opt.mix[3] <= 0)
				die(SA_EUSAGE, "--mix: want three or four non-negative shares, e.g. 0.5,0.25,0.25");
			opt.have_mix = 1;
			break;
		case O_CKPT: opt.ckpt = optarg; break;
		case O_CKPTEVERY: opt.ckpt_every = parse_long("--ckpt-every", optarg, 1, LONG_MAX); break;
		case O_RESUME: opt.resume = 1; break;
		case O_RUNSTEPS: opt.run_steps = parse_long("--run-steps", optarg, 1, LONG_MAX); break;
		case O_STARTSTEP: opt.start_step = parse_long("--start-step", optarg, 0, LONG_MAX); break;
		case O_EVALEVERY: opt.eval_every = parse_long("--eval-every", optarg, 0, LONG_MAX); break;
		case O_LOG: opt.log = optarg; break;
		case 't': opt.threads = parse_long("--threads", optarg, 0, 1024); break;
		case 'q': opt.quiet = 1; break;
		case 'v': opt.verbose = 1; break;
		case 'h': fputs(usage_text, stdout); fputs(help_text, stdout); close_stdout(); return 0;
		case 'V': puts("sa-train " SA_VERSION); close_stdout(); return 0;
		default: usage();
		}
	}
	if (optind != argc || !opt.mode)
		usage();
	if (opt.verbose)   /* the later of -q and -v is not tracked: -v wins */
		opt.quiet = 0;
	if (opt.mode == (PRETRAIN | ADAPTER))
		die(SA_EUSAGE, "--pretrain and --adapter are exclusive");
	if (opt.mode == PRETRAIN && !opt.vocab && !opt.init)
		die(SA_EUSAGE, "--pretrain needs --vocab (or --init)");
	if (opt.mode == ADAPTER)
		opt.model = need_model(opt.model, usage_text);
	if (!opt.out)
		die(SA_EUSAGE, "no output: give -o FILE (or -o - for stdout)");
	if (!strcmp(opt.out, "-") && !opt.ckpt)
		die(SA_EUSAGE, "-o - needs --ckpt DIR for the checkpoints");
	if (!strcmp(opt.out, "-") && isatty(1))
		die(SA_EUSAGE, "refusing to write a binary result to a terminal (use -o FILE)");
	if (!isnan(opt.gate_bias) && (opt.mode != ADAPTER || opt.init))
		die(SA_EUSAGE, "--gate-bias sets the gates of a new adapter (--adapter, no --init)");
	if (opt.rebind && (opt.mode != ADAPTER || !opt.init))
		die(SA_EUSAGE, "--rebind goes with --adapter and --init");
	if (!opt.have_mix) {
		double pre[4] = { 0.5, 0.25, 0.25, 0 }, ad[4] = { 0, 0.5, 0.5, 0 };
		memcpy(opt.mix, opt.mode == PRETRAIN ? pre : ad, sizeof opt.mix);
	}
	if (opt.mix[0] > 0 && !opt.n_texts)
		opt.mix[0] = 0;
	if (opt.mix[1] > 0 && !opt.n_tasks)
		opt.mix[1] = 0;
	if (opt.mix[2] > 0 && !opt.pool && !opt.map_vocab)
		opt.mix[2] = 0;
	if (opt.mix[3] > 0 && opt.mode != PRETRAIN)
		die(SA_EUSAGE, "--mix: repeated-span episodes are for --pretrain");
	if (opt.mix[3] > 0 && !opt.n_texts)
		opt.mix[3] = 0;
	if (opt.mix[0] + opt.mix[1] + opt.mix[2] + opt.mix[3] <= 0)
		die(SA_EUSAGE, "no training data: give --text, --task, --pool or --map-vocab");
	if (opt.map_vocab && opt.mode == PRETRAIN && !opt.n_texts)
		die(SA_EUSAGE, "--map-vocab draws words from the text: give --text");
	if (opt.kmin > opt.kmax)
		die(SA_EUSAGE, "--kmin exceeds --kmax");
	sa_set_threads(opt.threads);

	/* checkpoint directory */
	char dirbuf[4096];
	if (!opt.ckpt) {
		snprintf(dirbuf, sizeof dirbuf, "%s.ckpt", opt.out);
		opt.ckpt = dirbuf;
	}
	if (mkdir(opt.ckpt, 0777) != 0 && errno != EEXIST)
		die(SA_ECANTCREAT, "%s: %s", opt.ckpt, strerror(errno));
	ckpt_path = malloc(strlen(opt.ckpt) + 16);
	sprintf(ckpt_path, "%s/state.gguf", opt.ckpt);

	/* model, vocabulary */
	if (opt.mode == PRETRAIN) {
		sa_config c = { 0 };
		const char *vpath = opt.vocab;
		if (opt.init) {
			TRY(sa_model_load(&base, opt.init));
			TRY(sa_tmodel_from_model(&tm, base));
			c = tm->cfg;
			vpath = opt.init;
		} else {
			size_t n = strlen(vpath);
			if (n > 4 && !strcmp(vpath + n - 4, ".tsv"))
				vpath = vocab_from_tsv(vpath, opt.ckpt);
		}
		TRY(sa_gguf_open(&vocab_gguf, vpath));
		TRY(sa_vocab_load(&vocab, vocab_gguf));
		if (!opt.init) {
			c.arch = SA_ARCH_LLAMA;
			c.n_layer = opt.layers;
			c.d_model = opt.dim;
			c.n_head = opt.heads;
			c.n_head_kv = opt.kv_heads;
			if (opt.dim % opt.heads || opt.heads % opt.kv_heads)
				die(SA_EUSAGE, "--dim must divide by --heads, and --heads by --kv-heads");
			c.d_head = opt.dim / opt.heads;
			c.d_ff = opt.ff ? opt.ff : (opt.dim * 8 / 3 + 63) / 64 * 64;
			c.n_vocab = sa_vocab_size(vocab);
			c.n_ctx = opt.ctx;
			c.rope_dim = c.d_head;
			c.rope_base = opt.rope_base;
			c.norm_eps = 1e-5f;
			TRY(sa_tmodel_new(&tm, &c, opt.tied, opt.seed));
		}
		build_pretrain_block();
	} else {
		TRY(sa_model_load(&base, opt.model));
		vocab = base->vocab;
		TRY(sa_tmodel_from_model(&tm, base));
		if (opt.init) {
			TRY(sa_adapter_load(&adapter, opt.init));
			/* the shapes are still checked below; the fingerprint is set
			 * anew from the tensors once they are copied in */
			if (opt.rebind)
				adapter->model_fingerprint = base->fingerprint;
			TRY(sa_adapter_check(adapter, base));
			if (opt.have_rank && opt.rank != adapter->rank) {
				sa_adapter *grown;
				TRY(sa_adapter_grow(&grown, adapter, base, opt.rank, opt.seed));
				sa_adapter_free(adapter);
				adapter = grown;
			}
		} else {
			TRY(sa_adapter_init(&adapter, base, opt.rank, opt.chunk, opt.mats, opt.seed, 0));
			if (!isnan(opt.gate_bias))
				set_gate_bias(adapter, (float)opt.gate_bias);
		}
		build_adapter_block();
	}
	if (!opt.seq)
		opt.seq = tm->cfg.n_ctx;
	if (opt.seq > tm->cfg.n_ctx)
		die(SA_EUSAGE, "--seq %d exceeds the model's context of %d", opt.seq, tm->cfg.n_ctx);

	/* data */
	for (int i = 0; i < opt.n_texts; i++)
		load_text(&corpus, opt.texts[i]);
	if (opt.valid)
		load_text(&valid, opt.valid);
	if ((opt.mix[0] > 0 || opt.mix[3] > 0) && corpus.n < 2 * opt.seq + 2)
		die(SA_EDATA, "the text is shorter than two sequences");
	load_tasks();
	if (opt.pool) {
		load_pool(&pool_words, opt.pool, "words.txt");
		load_pool(&pool_labels, opt.pool, "labels.txt");
	}
	if (opt.eval_pool) {
		load_pool(&eval_words, opt.eval_pool, "words.txt");
		load_pool(&eval_labels, opt.eval_pool, "labels.txt");
	}
	if (opt.map_vocab || opt.rename > 0)
		build_word_pieces();
	/* the separators of random mappings, tokenized as they appear mid-line */
	{
		toks a = tokenize("x ->", 4), b = tokenize("x\n", 2), x = tokenize("x", 1);
		int skip = 0;
		while (skip < x.n && skip < a.n && x.t[skip] == a.t[skip])
			skip++;
		arrow_nl[0].n = a.n - skip;
		arrow_nl[0].t = a.t + skip;
		skip = 0;
		while (skip < x.n && skip < b.n && x.t[skip] == b.t[skip])
			skip++;
		arrow_nl[1].n = b.n - skip;
		arrow_nl[1].t = b.t + skip;
	}

	/* workers, each with activations for a micro-batch or an episode's
	 * queries; pretraining has no use for more than a step's micro-batches */
	int T = opt.seq;
	int B = opt.mode == PRETRAIN ? opt.micro : opt.queries;
	n_workers = sa_get_threads();
	if (opt.mode == PRETRAIN) {
		long per_step = (opt.batch_tokens + (long)B * T - 1) / ((long)B * T);
		if (n_workers > per_step)
			n_workers = (int)per_step;
	}
	TRY(sa_tworkers_new(&team, n_workers, tr.n));
	n_workers = sa_tworkers_count(team);
	if (!(workers = calloc(n_workers, sizeof *workers)))
		die(SA_EINTERNAL, "out of memory");
	for (int i = 0; i < n_workers; i++)
		TRY(sa_tact_new(&workers[i].act, &tm->cfg, B, T));
	mb.B = B;
	mb.T = T;
	mb.seq = malloc((size_t)B * (T + 1) * sizeof *mb.seq);
	mb.first_sight = malloc((size_t)B * T * sizeof *mb.first_sight);
	mb.unscored = calloc((size_t)B * (T + 1), 1);
	if (!mb.seq || !mb.first_sight || !mb.unscored)
		die(SA_EINTERNAL, "out of memory");
	if (opt.mode == ADAPTER)
		build_adapter_workers();
	data_rng.s = opt.seed * 0x9e3779b97f4a7c15ULL + 1;
	if (opt.show_data) {
		if (opt.mode != PRETRAIN)
			die(SA_EUSAGE, "--show-data shows pretraining sequences (--pretrain)");
		show_data(opt.show_data, T);
		close_stdout();
		return 0;
	}
	step = opt.start_step;
	if (opt.resume && load_checkpoint()) {
		if (!opt.quiet)
			fprintf(stderr, "sa-train: resumed from %s at step %ld\n", ckpt_path, step);
	} else if (opt.resume && !opt.quiet) {
		fprintf(stderr, "sa-train: no checkpoint in %s: starting\n", opt.ckpt);
	}
	if (!opt.log) {
		static char lp[4096];
		snprintf(lp, sizeof lp, "%s/log.jsonl", opt.ckpt);
		opt.log = lp;
	}
	if (!(logfp = fopen(opt.log, "a")))
		die(SA_ECANTCREAT, "%s: %s", opt.log, strerror(errno));

	struct sigaction sa = { 0 }, old;
	sa.sa_handler = on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	/* A hangup (the terminal went away) stops the run the same way; left
	 * to its default it killed the run in the middle of a checkpoint and
	 * left the temporary file.  Under nohup it stays ignored. */
	if (sigaction(SIGHUP, NULL, &old) == 0 && old.sa_handler != SIG_IGN)
		sigaction(SIGHUP, &sa, NULL);

	struct timespec t0, t1;
	if (opt.eval_every && step == 0)
		opt.mode == PRETRAIN ? evaluate_pretrain() : evaluate_adapter();
	long first_step = step;
	while (step < opt.steps && !stop_signal &&
	    (!opt.run_steps || step - first_step < opt.run_steps)) {
		long n_tok = 0;
		double loss_sum = 0;
		int n_micro;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		memset(tr.g, 0, tr.n * sizeof(float));
		if (opt.mode == PRETRAIN) {
			n_micro = pretrain_step(&n_tok);
			for (int i = 0; i < n_micro; i++)
				loss_sum += mb.loss[i];
		} else {
			n_micro = adapter_step(&n_tok);
			for (int i = 0; i < n_micro; i++)
				loss_sum += eps[i].loss;
		}
		/* each micro-batch's loss is a mean: average the gradients */
		for (size_t i = 0; i < tr.n; i++)
			tr.g[i] /= n_micro;
		double gnorm = sa_l2norm(tr.g, tr.n);
		if (!isfinite(gnorm))
			die(SA_EINTERNAL, "step %ld: gradient is not finite", step);
		if (opt.clip > 0 && gnorm > opt.clip)
			for (size_t i = 0; i < tr.n; i++)
				tr.g[i] *= (float)(opt.clip / gnorm);
		float lr = lr_at(step);
		optimizer_step(&tr, (int)step + 1, lr);
		step++;
		clock_gettime(CLOCK_MONOTONIC, &t1);
		double dt = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9;
		double loss = loss_sum / n_micro;
		fprintf(logfp, "{\"step\":%ld,\"loss\":%.6g,\"lr\":%.6g,\"grad_norm\":%.6g,\"tokens\":%ld,\"tok_per_s\":%.1f}\n",
		    step, loss, lr, gnorm, n_tok, n_tok / dt);
		fflush(logfp);
		if (opt.verbose || (!opt.quiet && isatty(2)))
			fprintf(stderr, "sa-train: step %ld/%ld loss %.4f lr %.2e |g| %.3f %.0f tok/s\n",
			    step, opt.steps, loss, lr, gnorm, n_tok / dt);
		if (opt.eval_every && step % opt.eval_every == 0)
			opt.mode == PRETRAIN ? evaluate_pretrain() : evaluate_adapter();
		if (step % opt.ckpt_every == 0 || step == opt.steps ||
		    (opt.run_steps && step - first_step == opt.run_steps))
			save_checkpoint();
	}
	if (stop_signal) {
		save_checkpoint();
		if (!opt.quiet)
			fprintf(stderr, "sa-train: stopped at step %ld; checkpoint saved in %s\n", step, opt.ckpt);
		fclose(logfp);
		return 128 + stop_signal;
	}
	if (fclose(logfp) != 0)
		die(SA_EIO, "%s: %s", opt.log, strerror(errno));
	if (!strcmp(opt.out, "-"))
		save_result();
	if (!opt.quiet)
		fprintf(stderr, "sa-train: done after %ld steps; wrote %s\n", step,
		    strcmp(opt.out, "-") ? opt.out : "stdout");
	close_stdout();
	return 0;
}
