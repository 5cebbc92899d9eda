/*
 * test_eval - the evaluation pieces: split files in their three forms, task
 * directories, the template's tokens (the same as a whole record's), the
 * candidates' log-likelihoods over a shared prompt cache against each
 * candidate run from scratch, and greedy decoding against a plain loop.
 * usage: test_eval MODEL.gguf TMPDIR (a small random model).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "sa.h"
#include "t.h"

static const char *tmp;

static void
put(const char *name, const char *text)
{
	char path[4096];
	FILE *fp;

	snprintf(path, sizeof path, "%s/%s", tmp, name);
	if (!(fp = fopen(path, "w")) || fputs(text, fp) < 0 || fclose(fp) != 0) {
		perror(path);
		exit(2);
	}
}

static const char *
at(const char *name)
{
	static char path[4][4096];
	static int i;

	i = (i + 1) % 4;
	snprintf(path[i], sizeof path[i], "%s/%s", tmp, name);
	return path[i];
}

static const sa_split_entry *
find(const sa_split_entry *s, int n, const char *task)
{
	for (int i = 0; i < n; i++)
		if (strcmp(s[i].task, task) == 0)
			return &s[i];
	return NULL;
}

static void
test_split(void)
{
	sa_split_entry *s;
	const sa_split_entry *e;
	int n;

	put("s.tsv", "# comment\nalpha\tseen\nbeta\tunseen\tgeneration\ngamma\tseen\tclass\n");
	CHECK_OK(sa_split_read(at("s.tsv"), &s, &n));
	CHECK(n == 3);
	CHECK((e = find(s, n, "alpha")) && e->seen == 1 && e->kind == SA_KIND_AUTO);
	CHECK((e = find(s, n, "beta")) && e->seen == 0 && e->kind == SA_KIND_GEN);
	CHECK((e = find(s, n, "gamma")) && e->seen == 1 && e->kind == SA_KIND_CLASS);
	sa_split_free(s, n);

	/* named columns, in any order, other columns ignored; labels a|b */
	put("h.tsv", "task\tkind\tlabels\tsplit\tsource\nalpha\tgen\t\tunseen\tx\n"
	    "beta\tclass\ta|North America\tseen\ty\ngamma\tgen\t-\tseen\tz\n");
	CHECK_OK(sa_split_read(at("h.tsv"), &s, &n));
	CHECK(n == 3);
	CHECK((e = find(s, n, "alpha")) && e->seen == 0 && e->kind == SA_KIND_GEN && !e->n_labels);
	CHECK((e = find(s, n, "beta")) && e->seen == 1 && e->kind == SA_KIND_CLASS &&
	    e->n_labels == 2 && !strcmp(e->labels[0], "a") && !strcmp(e->labels[1], "North America"));
	CHECK((e = find(s, n, "gamma")) && !e->n_labels);
	sa_split_free(s, n);

	/* Markdown: a set cell, or the heading's set; prose and other tables skipped */
	put("s.md", "# Seen and unseen tasks\n\nSome prose.\n\n"
	    "| task | split | kind |\n|---|---|---|\n| alpha | unseen | gen |\n\n"
	    "## Seen (three)\n\n| task | kind | why |\n|---|---|---|\n"
	    "| `beta` | class: x, y | because |\n| gamma | gen | - |\n\n"
	    "## Unseen\n\n| task | kind |\n|---|---|\n| delta | class |\n\n"
	    "## Classification and generation\n\n| thing | other |\n|---|---|\n| eps | gen |\n");
	CHECK_OK(sa_split_read(at("s.md"), &s, &n));
	CHECK(n == 4);
	CHECK((e = find(s, n, "alpha")) && e->seen == 0 && e->kind == SA_KIND_GEN);
	CHECK((e = find(s, n, "beta")) && e->seen == 1 && e->kind == SA_KIND_CLASS);
	CHECK((e = find(s, n, "gamma")) && e->seen == 1 && e->kind == SA_KIND_GEN);
	CHECK((e = find(s, n, "delta")) && e->seen == 0 && e->kind == SA_KIND_CLASS);
	CHECK(!find(s, n, "eps") && !find(s, n, "task") && !find(s, n, "thing"));
	sa_split_free(s, n);

	put("bad.tsv", "alpha\tseen\nbeta\tperhaps\n");
	CHECK(sa_split_read(at("bad.tsv"), &s, &n) == SA_EDATA);
	CHECK(strstr(sa_error(), "bad.tsv:2:") != NULL);
	put("bad2.tsv", "alpha\tseen\tsometimes\n");
	CHECK(sa_split_read(at("bad2.tsv"), &s, &n) == SA_EDATA);
	CHECK(sa_split_read(at("none.tsv"), &s, &n) == SA_ENOINPUT);
	/* a binary file is not text, and a long bad value is not quoted whole */
	{
		char path[4096], bin[200];
		FILE *fp;
		for (size_t i = 0; i < sizeof bin; i++)
			bin[i] = (char)(i % 2 ? '\t' : 0x80 + i % 64);
		snprintf(path, sizeof path, "%s/bin.tsv", tmp);
		CHECK((fp = fopen(path, "wb")) && fwrite(bin, 1, sizeof bin, fp) == sizeof bin &&
		    fclose(fp) == 0);
		CHECK(sa_split_read(path, &s, &n) == SA_EDATA);
		CHECK(strstr(sa_error(), "bin.tsv: not a text file") != NULL);
	}
	put("long.tsv", "alpha\tseen\tthis kind goes on and on and on for sixty bytes or more\n");
	CHECK(sa_split_read(at("long.tsv"), &s, &n) == SA_EDATA);
	CHECK(strstr(sa_error(), "kind 'this kind goes on and on...'") != NULL);
}

static void
test_task(void)
{
	sa_task *t;
	char dir[4096];

	snprintf(dir, sizeof dir, "%s/tk", tmp);
	mkdir(dir, 0777);
	put("tk/train.tsv", "id\tinput\tlabel\n1\ta\\tb\tyes\n2\tc\tno\n\n3\td\tyes\n");
	put("tk/test.tsv", "input\tlabel\ne\tno\n");
	put("tk/dev.tsv", "label\tinput\nyes\tf\nno\tg\n");
	snprintf(dir, sizeof dir, "%s/tk/", tmp);
	CHECK_OK(sa_task_load(&t, dir, "test"));
	CHECK(strcmp(t->name, "tk") == 0);
	CHECK(t->n_train == 3 && t->n_eval == 1);
	CHECK(strcmp(t->train[0].input, "a\tb") == 0 && strcmp(t->train[2].input, "d") == 0);
	CHECK(t->train[2].line == 5);
	CHECK(t->n_labels == 2 && strcmp(t->labels[0], "yes") == 0 && strcmp(t->labels[1], "no") == 0);
	sa_task_free(t);
	CHECK_OK(sa_task_load(&t, dir, "dev"));
	CHECK(t->n_eval == 2 && strcmp(t->eval[1].input, "g") == 0 && strcmp(t->eval[1].label, "no") == 0);
	sa_task_free(t);

	CHECK(sa_task_load(&t, at("nope"), "test") == SA_ENOINPUT);
	CHECK(sa_task_load(&t, at("tk/test.tsv"), "test") == SA_ENOINPUT);
	put("tk/test.tsv", "input\tanswer\ne\tno\n");
	CHECK(sa_task_load(&t, dir, "test") == SA_EDATA);
	CHECK(strstr(sa_error(), "test.tsv:1: no column 'label'") != NULL);
	put("tk/test.tsv", "input\tlabel\n");
	CHECK(sa_task_load(&t, dir, "test") == SA_EDATA);
	put("tk/test.tsv", "input\tlabel\nx\n");
	CHECK(sa_task_load(&t, dir, "test") == SA_EDATA);
	CHECK(strstr(sa_error(), "test.tsv:2:") != NULL);
}

/* a == b, n each */
static int
same(const int *a, const int *b, int n)
{
	return n == 0 || memcmp(a, b, (size_t)n * sizeof *a) == 0;
}

static void
test_tokens(const sa_model *m)
{
	const sa_vocab *v = m->vocab;
	const char *labels[] = { "red", "blue", "big red" };
	sa_example ex[3] = { { "apple", "red", 2 }, { "door", "blue", 3 }, { "a hill", "big red", 4 } };
	int idx[3] = { 2, 0, 1 }, *t, n, bos = sa_vocab_add_bos(v) ? sa_vocab_bos(v) : -1;
	sa_qa q;
	sa_demos *d;
	sa_segment *segs;
	int n_segs;

	CHECK_OK(sa_qa_build(&q, v, "apple", labels, 3));
	CHECK(q.n_cand == 3);
	CHECK_OK(sa_tokenize(v, "apple ->", 8, 0, &t, &n));
	CHECK(n == q.n_query && same(t, q.query, n));
	free(t);
	for (int i = 0; i < 3; i++) {
		char rec[64];
		int *whole;
		snprintf(rec, sizeof rec, "apple -> %s\n", labels[i]);
		CHECK_OK(sa_tokenize(v, rec, strlen(rec), 0, &whole, &n));
		/* prompt part + answer = the record tokenized whole */
		CHECK(n == q.n_prefix + q.n_answer[i]);
		CHECK(same(whole, q.query, q.n_prefix));
		CHECK(same(whole + q.n_prefix, q.answer[i], q.n_answer[i]));
		free(whole);
	}
	sa_qa_free(&q);

	/* in a text, after a newline: the tokens "x\n{record}" has after "x\n" */
	CHECK_OK(sa_qa_build_in_text(&q, v, "apple", labels, 3));
	for (int i = 0; i < 3; i++) {
		char rec[64];
		int *head, nh, *whole;
		snprintf(rec, sizeof rec, "x\napple -> %s\n", labels[i]);
		CHECK_OK(sa_tokenize(v, "x\n", 2, 0, &head, &nh));
		CHECK_OK(sa_tokenize(v, rec, strlen(rec), 0, &whole, &n));
		CHECK(same(whole, head, nh));
		CHECK(n - nh == q.n_prefix + q.n_answer[i]);
		CHECK(same(whole + nh, q.query, q.n_prefix));
		CHECK(same(whole + nh + q.n_prefix, q.answer[i], q.n_answer[i]));
		free(head);
		free(whole);
	}
	sa_qa_free(&q);

	/* demonstrations: rendered records, packed as sa-encode packs them */
	CHECK_OK(sa_demos_from_examples(&d, "x", ex, idx, 3));
	CHECK(d->n == 3 && strcmp(d->demo[0].text, "a hill -> big red\n") == 0 && d->demo[0].line == 4);
	CHECK(d->demo[1].len == strlen("apple -> red\n"));
	CHECK_OK(sa_demos_segment(d, v, 1000, SA_RECORDS_PACKED, &segs, &n_segs));
	CHECK(n_segs == 1 && segs[0].n_demos == 3);
	{
		int pos = 0, ok = 1;
		if (bos >= 0)
			ok &= segs[0].toks[pos++] == bos;
		for (int i = 0; i < 3; i++) {
			CHECK_OK(sa_tokenize(v, d->demo[i].text, d->demo[i].len, 0, &t, &n));
			ok &= pos + n <= segs[0].n && same(segs[0].toks + pos, t, n);
			pos += n;
			free(t);
		}
		CHECK(ok && pos == segs[0].n);
	}
	sa_segments_free(segs, n_segs);
	sa_demos_free(d);
}

/* Sum log p(cand | prompt) with every token run from position 0 on a fresh state. */
static double
from_scratch(sa_model *m, const int *prompt, int np, const int *cand, int nc)
{
	sa_kvcache *s;
	int V = m->cfg.n_vocab, n = np + nc;
	int *all = malloc((size_t)n * sizeof *all);
	float *lg = malloc((size_t)n * V * sizeof *lg);
	double lp = 0;

	memcpy(all, prompt, (size_t)np * sizeof *all);
	memcpy(all + np, cand, (size_t)nc * sizeof *all);
	CHECK_OK(sa_kvcache_new(&s, m, 0));
	CHECK_OK(sa_forward(s, all, n - 1, lg, 1));
	for (int i = np - 1; i < n - 1; i++)
		lp += sa_logprob(lg + (size_t)i * V, V, all[i + 1]);
	sa_kvcache_free(s);
	free(all);
	free(lg);
	return lp;
}

/* sa-eval's recipe: the prompt fed once, each candidate's first token from
 * its last logits, the rest scored with the cache cut back to it. */
static int
continuations(sa_session *e, const int *prompt, int np, int *const *cand, const int *n_cand,
    int n, double *lp)
{
	int V = sa_vocab_size(sa_session_vocab(e)), seq[64], rc;
	const float *last;

	sa_session_reset(e);
	if ((rc = sa_session_feed(e, prompt, np, &last)) != SA_OK)
		return rc;
	for (int i = 0; i < n && rc == SA_OK; i++) {
		memcpy(seq, prompt, (size_t)np * sizeof *seq);
		memcpy(seq + np, cand[i], (size_t)n_cand[i] * sizeof *seq);
		lp[i] = sa_logprob(last, V, cand[i][0]);
		rc = sa_session_score(e, seq, np + n_cand[i], np, &lp[i]);
	}
	return rc;
}

static int
count_token(void *ctx, int tok, int *stop)
{
	int *toks = ctx;

	toks[++toks[0]] = tok;
	return SA_OK;
}

static void
test_scoring(sa_model *m)
{
	sa_session *e;
	int prompt[12], c0[1] = { 70 }, c1[4] = { 71, 72, 73, 74 }, c2[2] = { 75, 76 };
	int *cand[3] = { c0, c1, c2 }, n_cand[3] = { 1, 4, 2 };
	int *rcand[3] = { c2, c1, c0 }, rn[3] = { 2, 4, 1 };
	double lp[3], rlp[3];
	const sa_config *c = &m->cfg;
	size_t per_tok = (size_t)c->n_layer * c->n_head_kv * c->d_head * 2 * sizeof(float);

	for (int i = 0; i < 12; i++)
		prompt[i] = 40 + 3 * i;
	CHECK_OK(sa_session_new(&e, m, 0, 0));
	CHECK_OK(continuations(e, prompt, 12, cand, n_cand, 3, lp));
	/* the cache holds the prompt and, at most, the longest candidate but its last token */
	CHECK(sa_session_kv_peak(e) == (12 + 3) * per_tok);
	for (int i = 0; i < 3; i++) {
		CHECK(lp[i] < 0);
		CHECK_NEAR(lp[i], from_scratch(m, prompt, 12, cand[i], n_cand[i]), 1e-3);
	}
	/* each candidate starts from the same cache: order changes nothing */
	CHECK_OK(continuations(e, prompt, 12, rcand, rn, 3, rlp));
	CHECK(rlp[0] == lp[2] && rlp[1] == lp[1] && rlp[2] == lp[0]);

	/* greedy decoding: the argmax chain */
	{
		sa_kvcache *s;
		sa_sampler greedy;
		int V = c->n_vocab, got[9] = { 0 }, n = 0;
		float *lg = malloc((size_t)V * sizeof *lg);

		sa_sampler_init(&greedy, 0, 0, 1, 0, 0);
		sa_session_reset(e);
		CHECK_OK(sa_session_generate(e, prompt, 12, &greedy, 8, count_token, got));
		CHECK_OK(sa_kvcache_new(&s, m, 0));
		CHECK_OK(sa_forward(s, prompt, 12, lg, 0));
		for (; n < got[0]; n++) {
			int best = 0;
			for (int i = 1; i < V; i++)
				if (lg[i] > lg[best])
					best = i;
			CHECK(got[1 + n] == best);
			CHECK_OK(sa_forward(s, &best, 1, lg, 0));
		}
		CHECK(n > 0);
		sa_kvcache_free(s);
		free(lg);
	}
	sa_session_free(e);
}

int
main(int argc, char **argv)
{
	sa_model *m;

	if (argc != 3) {
		fprintf(stderr, "usage: test_eval MODEL.gguf TMPDIR\n");
		return 2;
	}
	tmp = argv[2];
	test_split();
	test_task();
	CHECK_OK(sa_model_load(&m, argv[1]));
	if (m) {
		test_tokens(m);
		test_scoring(m);
		sa_model_free(m);
	}
	return t_done();
}
