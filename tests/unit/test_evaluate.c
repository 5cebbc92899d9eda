/*
 * test_evaluate - the evaluation protocol through its hooks: the table is
 * announced before the first query, each query's record comes once per
 * method, the row's scores are the records' share of right answers (means,
 * perplexities from the log-probabilities), a zero adapter answers as
 * zero-shot, and bad inputs fail before anything is reported.
 * usage: test_evaluate MODEL.gguf TMPDIR (a small random model, context 128).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sa.h"
#include "t.h"

/* Files are made in TMPDIR, the working directory. */
static void
put(const char *name, const char *text)
{
	FILE *fp;

	if (!(fp = fopen(name, "w")) || fputs(text, fp) < 0 || fclose(fp) != 0) {
		perror(name);
		exit(2);
	}
}

/* What the hooks saw. */
typedef struct seen {
	int starts, rows, bad_order;
	int n;                       /* records */
	long right[8][8], asked[8][8];   /* [row][method] */
	double logprob[8][8];
	long tokens[8][8];
	char pred[64][64];           /* zero-shot then sa-many predictions, tasks */
	int n_pred[2];
	char map[16][64];            /* "input -> gold" of zero-shot's map queries */
	int n_map;
} seen;

static void
on_start(void *ctx, const sa_eval_table *t)
{
	seen *s = ctx;

	s->starts++;
	s->bad_order |= s->n > 0;
}

static void
on_record(void *ctx, const sa_eval_record *r)
{
	seen *s = ctx;
	int row = s->rows;

	s->bad_order |= s->starts != 1 || r->i < 0 || r->i >= r->n || row >= 8 || r->m >= 8;
	if (s->bad_order)
		return;
	s->n++;
	s->right[row][r->m] += r->correct;
	s->asked[row][r->m]++;
	s->logprob[row][r->m] += r->logprob;
	s->tokens[row][r->m] += r->tokens;
	for (int w = 0; w < 2; w++)
		if (r->prediction && strcmp(r->method, w ? "sa-many" : "zero-shot") == 0 &&
		    s->n_pred[w] < 32)
			snprintf(s->pred[w * 32 + s->n_pred[w]++], 64, "%s", r->prediction);
	if (!r->task && r->m == 0 && s->n_map < 16)
		snprintf(s->map[s->n_map++], 64, "%s -> %s", r->input, r->gold);
}

static void
on_row(void *ctx, const sa_eval_table *t, int i)
{
	seen *s = ctx;

	s->bad_order |= i != s->rows;
	s->rows++;
}

static sa_eval_hooks
hooks(seen *s)
{
	memset(s, 0, sizeof *s);
	return (sa_eval_hooks){ on_start, on_record, on_row, NULL, s };
}

static void
mktask(const char *name, const char *train, const char *test)
{
	char path[256];

	mkdir(name, 0777);
	snprintf(path, sizeof path, "%s/train.tsv", name);
	put(path, train);
	snprintf(path, sizeof path, "%s/test.tsv", name);
	put(path, test);
}

static void
test_tasks(sa_model *m, sa_adapter *rand, sa_adapter *zero)
{
	sa_eval_opts o;
	sa_eval_table *t;
	sa_eval_hooks h;
	seen s;
	char *dirs[2] = { "color", "echo" };
	int n, partial;

	mktask("color", "input\tlabel\napple\tred\nbread\tblue\nchair\tred\ndoor\tblue\n"
	    "eagle\tred\nfrost\tblue\n", "input\tlabel\ngrape\tred\nhill\tblue\nice\tred\n");
	mktask("echo", "input\tlabel\napple\tapple\nbread\tbread\nchair\tchair\ndoor\tdoor\n",
	    "input\tlabel\nkite\tkite\nlamp\tlamp\n");
	sa_eval_opts_default(&o);
	o.k = 2;
	o.max_labels = 3;       /* echo's four labels: generation */
	o.seen = "color";
	h = hooks(&s);
	CHECK_OK(sa_eval_tasks(&t, m, rand, dirs, 2, &o, &h));
	CHECK(t && s.starts == 1 && s.rows == 2 && !s.bad_order);
	/* 3 + 2 queries, four methods each */
	CHECK(s.n == 20);
	CHECK(t && t->n_methods == 4 && t->n_rows == 2);
	for (int i = 0; t && i < 2; i++) {
		CHECK(t->row[i].n == (i ? 2 : 3));
		CHECK(t->row[i].set == (i ? -1 : 1));
		CHECK(t->row[i].kind == (i ? SA_KIND_GEN : SA_KIND_CLASS));
		CHECK(t->row[i].k == 2);
		for (int j = 0; j < 4; j++) {
			CHECK(s.asked[i][j] == t->row[i].n);
			CHECK(t->row[i].score[j] == 100.0 * s.right[i][j] / t->row[i].n);
		}
	}
	CHECK(t && strcmp(t->row[0].name, "color") == 0 && strcmp(t->method[3], "sa-many") == 0);
	CHECK(t && t->cost[0].n == 5 && t->cost[2].n_enc == 2 && t->cost[0].n_enc == 0);
	CHECK(t && sa_eval_mean(t, 1, 0, &n, &partial) == t->row[0].score[0] && n == 1 && !partial);
	CHECK(t && isnan(sa_eval_mean(t, 0, 0, &n, &partial)) && n == 0);
	CHECK(t && sa_eval_mean(t, -1, 2, &n, &partial) ==
	    (t->row[0].score[2] + t->row[1].score[2]) / 2 && n == 2);
	sa_eval_table_free(t);

	/* the zero adapter answers every query as zero-shot; no hooks at all is fine */
	h = hooks(&s);
	CHECK_OK(sa_eval_tasks(&t, m, zero, dirs, 2, &o, &h));
	CHECK(s.n_pred[0] == 5 && s.n_pred[1] == 5);
	for (int i = 0; i < s.n_pred[0]; i++)
		CHECK(strcmp(s.pred[i], s.pred[32 + i]) == 0);
	sa_eval_table_free(t);
	CHECK_OK(sa_eval_tasks(&t, m, zero, dirs, 1, &o, NULL));
	sa_eval_table_free(t);

	/* bad inputs: nothing reported, no table */
	o.seen = "colour";
	h = hooks(&s);
	CHECK(sa_eval_tasks(&t, m, rand, dirs, 2, &o, &h) == SA_EUSAGE && !t && !s.starts);
	CHECK(strstr(sa_error(), "no --task named 'colour'") != NULL);
	o.seen = "color,echo";
	o.unseen = "echo";
	CHECK(sa_eval_opts_check(&o) == SA_EUSAGE);
	CHECK(strstr(sa_error(), "task 'echo' is in both") != NULL);
	o.seen = o.unseen = NULL;
	dirs[1] = "none";
	CHECK(sa_eval_tasks(&t, m, rand, dirs, 2, &o, &h) == SA_ENOINPUT && !t && !s.starts);
}

static void
test_text(sa_model *m, sa_adapter *a)
{
	static const char *const words[] = { "the", "cat", "sat", "on", "a", "mat", "and", "dog" };
	sa_eval_opts o;
	sa_eval_table *t;
	sa_eval_hooks h;
	seen s;
	char *files[2] = { "text.txt", "text.txt.gz" }, line[256];
	FILE *fp = fopen(files[0], "w");

	for (int i = 0; fp && i < 60; i++) {
		line[0] = 0;
		for (int j = 0; j < 8; j++)
			snprintf(line + strlen(line), sizeof line - strlen(line), "%s%s", j ? " " : "",
			    words[(i * 7 + j * 3) % 8]);
		fprintf(fp, "%s\n", line);
	}
	CHECK(fp && fclose(fp) == 0);
	CHECK(system("gzip -c text.txt > text.txt.gz") == 0);
	sa_eval_opts_default(&o);
	o.segment = 16;
	o.many = 4;
	o.limit = 3;
	h = hooks(&s);
	CHECK_OK(sa_eval_text(&t, m, a, files, 2, &o, &h));
	CHECK(t && t->n_methods == 6 && s.starts == 1 && s.rows == 2 && !s.bad_order &&
	    s.n == 2 * 3 * 6);
	for (int i = 0; t && i < 2; i++)
		for (int j = 0; j < 6; j++) {
			CHECK(s.tokens[i][j] == (long)t->row[i].tokens && t->row[i].tokens > 0);
			CHECK_NEAR(t->row[i].score[j], exp(-s.logprob[i][j] / t->row[i].tokens), 1e-9);
			/* gzip or not, the same text */
			CHECK(t->row[i].score[j] == t->row[0].score[j]);
		}
	sa_eval_table_free(t);
	/* two segments and BOS do not fit: no prompt with the previous one, nor
	 * with the segment itself */
	o.segment = 64;
	o.many = 1;
	CHECK_OK(sa_eval_text(&t, m, a, files, 1, &o, NULL));
	CHECK(t && isnan(t->row[0].score[1]) && !isnan(t->row[0].score[2]) &&
	    isnan(t->row[0].score[4]) && !isnan(t->row[0].score[5]));
	sa_eval_table_free(t);
	o.segment = 128;
	h = hooks(&s);
	CHECK(sa_eval_text(&t, m, a, files, 1, &o, &h) == SA_EUSAGE && !t && !s.starts);
}

static void
test_map(sa_model *m, sa_adapter *rand, sa_adapter *zero)
{
	static const int pairs[] = { 1, 3 };
	sa_adapter *a[2] = { rand, zero };
	sa_map_pool *p;
	sa_eval_opts o;
	sa_eval_table *t;
	sa_eval_hooks h;
	seen s;

	mkdir("pool", 0777);
	put("pool/words.txt", "apple\nbread\n  chair \n\ndoor\neagle\n");
	put("pool/labels.txt", "red\nbig\nsun\n");
	sa_eval_opts_default(&o);
	o.pool = "pool";
	o.pairs = pairs;
	o.n_pairs = 2;
	o.episodes = 2;
	h = hooks(&s);
	CHECK_OK(sa_eval_map(&t, m, a, 2, &o, &h));
	CHECK(t && s.starts == 1 && s.rows == 2 && !s.bad_order);
	/* (1 + 3) pairs x 2 episodes x 4 columns */
	CHECK(s.n == 32);
	CHECK(t && t->n_methods == 4 && strcmp(t->method[1], "ICL") == 0);
	CHECK(t && strncmp(t->method[3], "zero.gguf r=", 12) == 0);
	for (int i = 0; t && i < 2; i++) {
		CHECK(t->row[i].n == pairs[i] && t->row[i].records == pairs[i]);
		CHECK(t->row[i].score[3] == t->row[i].score[0]);
		for (int j = 0; j < 4; j++)
			CHECK(t->row[i].score[j] == 100.0 * s.right[i][j] / s.asked[i][j]);
	}
	sa_eval_table_free(t);
	/* the pool as read, and the episodes sa_map_draw draws: n distinct words,
	 * asked in its order */
	CHECK_OK(sa_map_pool_read(&p, "pool"));
	CHECK(p && p->n_words == 5 && p->n_labels == 3 && strcmp(p->words[2], "chair") == 0);
	for (int i = 0, k = 0; p && i < 2; i++)
		for (int e = 0; e < 2; e++) {
			int n = pairs[i], rec[3], qperm[3];
			sa_example ex[3];
			char want[64];
			CHECK_OK(sa_map_draw(p, o.seed, n, e, 1, ex, rec, qperm));
			for (int j = 0; j < n; j++, k++) {
				snprintf(want, sizeof want, "%s -> %s", ex[qperm[j]].input, ex[qperm[j]].label);
				CHECK(k < s.n_map && strcmp(s.map[k], want) == 0);
				for (int j2 = 0; j2 < j; j2++)
					CHECK(strcmp(ex[j].input, ex[j2].input) != 0);
			}
		}
	CHECK(s.n_map == 8);
	sa_map_pool_free(p);
	CHECK(sa_map_pool_read(&p, "none") == SA_ENOINPUT && !p);
	/* more pairs than words */
	o.n_pairs = 1;
	o.pairs = (const int[]){ 6 };
	h = hooks(&s);
	CHECK(sa_eval_map(&t, m, a, 2, &o, &h) == SA_EUSAGE && !t && !s.starts);
	CHECK(strstr(sa_error(), "words.txt has 5") != NULL);
}

int
main(int argc, char **argv)
{
	sa_model *m;
	sa_adapter *rand = NULL, *zero = NULL;
	uint32_t mats = 1u << SA_MAT_Q | 1u << SA_MAT_K | 1u << SA_MAT_V | 1u << SA_MAT_O;

	if (argc != 3) {
		fprintf(stderr, "usage: test_evaluate MODEL.gguf TMPDIR\n");
		return 2;
	}
	CHECK_OK(sa_model_load(&m, argv[1]));
	if (!m || chdir(argv[2]) != 0)
		return t_done() + 1;
	CHECK_OK(sa_adapter_init(&rand, m, 4, 8, mats, 7, 0.5f));
	CHECK_OK(sa_adapter_init(&zero, m, 4, 8, mats, 7, 0));
	/* the map's columns name adapters by their file */
	CHECK_OK(sa_adapter_save(zero, m, "zero.gguf"));
	sa_adapter_free(zero);
	CHECK_OK(sa_adapter_load(&zero, "zero.gguf"));
	if (rand && zero) {
		test_tasks(m, rand, zero);
		test_text(m, rand);
		test_map(m, rand, zero);
	}
	sa_adapter_free(rand);
	sa_adapter_free(zero);
	sa_model_free(m);
	return t_done();
}
