/*
 * bench-icl - what a query costs with k demonstrations in the prompt (ICL)
 * and with the same k absorbed into a delta, as k grows.
 *
 *   bench-icl [-t threads] [-c n_ctx] [-q queries] [-r reps] [-K k_max]
 *             [-a adapter] [-T task_dir] MODEL
 *
 * Demonstrations are the first k rows of TASK/train.tsv (again from the top
 * when k is larger), queries the first rows of TASK/test.tsv, both through
 * the default template, as sa-eval(1) builds them.  A query is scored as
 * sa-eval scores a classification query: its prompt runs once, then every
 * candidate label's tokens a token at a time, the cache cut back to the
 * prompt before each.  Per k, four ways of answering the same queries:
 *
 *   icl         BOS + demonstrations + query, from position 0 every time
 *   icl-cached  the demonstrations' KV cache made once; per query the cache
 *               is cut back to them and only the query runs
 *   delta       the k demonstrations encoded into a delta (any number of
 *               segments of n_ctx tokens), merged into F32 copies of the
 *               adapted matrices; per query BOS + query alone
 *   delta-side  the same delta kept beside the matrices (y = W x + B (A x))
 *
 * ICL is left out (empty fields) once demonstrations, query and answer no
 * longer fit n_ctx; deltas go on to k_max (default: four times the largest
 * k ICL fits).  Per-query times are medians over reps x queries runs, the
 * four ways taking turns within each rep.  One-time costs: the prefill of
 * the demonstrations' cache and the encoding, once per k; merging and
 * attaching the delta, medians over the reps.
 *
 * Output: CSV on stdout, one row per k (times in ms, memory in bytes):
 *   k, demo_tokens, segments, icl_ms, icl_cached_ms, delta_ms, delta_side_ms,
 *   icl_kv, delta_kv, cache_once_ms, encode_ms, merge_ms, side_ms,
 *   merged_bytes, side_bytes
 * icl_kv is the KV cache at the fullest point of an ICL query (the cached
 * variant holds the same), delta_kv that of a query alone; merged_bytes are
 * the F32 copies a merged delta adds, side_bytes the factors of side paths.
 * With no adapter (-a), one is made as sa-init makes it by default (rank 16,
 * chunk 64, attn_q/k/v/output) but with a small random W1 in place of the
 * zeros of an untrained one: a zero update is skipped, not merged, and
 * would show no cost.  The costs do not depend on trained values.  At k = 0
 * the state is empty and the delta changes nothing (no cost either).
 */
#include <time.h>
#include <unistd.h>

#define TOOL "bench-icl"
#include "../../bin/tool.h"

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

/* Median of n values (sorted in place). */
static double
median(double *x, int n)
{
	qsort(x, (size_t)n, sizeof *x, cmp_double);
	return n % 2 ? x[n / 2] : (x[n / 2 - 1] + x[n / 2]) / 2;
}

static float *logits;

/*
 * One query on state st: cut the cache to pos, run prompt[0..n) after it,
 * then each candidate's tokens but the last (which is only predicted).
 * Returns the seconds; *kv gets the cache's bytes at its fullest.
 */
static double
run_query(sa_kvcache *st, int pos, const int *prompt, int n, const sa_qa *qa, size_t *kv)
{
	double t0 = now();
	int end;

	sa_kvcache_truncate(st, pos);
	TRY(sa_forward(st, prompt, n, logits, 0));
	end = sa_kvcache_pos(st);
	*kv = 0;
	for (int c = 0; c < qa->n_cand; c++) {
		sa_kvcache_truncate(st, end);
		for (int a = 0; a + 1 < qa->n_answer[c]; a++)
			TRY(sa_forward(st, &qa->answer[c][a], 1, logits, 0));
		if (sa_kvcache_kv_bytes(st) > *kv)
			*kv = sa_kvcache_kv_bytes(st);
	}
	return now() - t0;
}

/* Tokens of the longest candidate that enter the cache after a prompt. */
static int
answer_need(const sa_qa *qa)
{
	int need = 0;

	for (int c = 0; c < qa->n_cand; c++)
		if (qa->n_answer[c] - 1 > need)
			need = qa->n_answer[c] - 1;
	return need;
}

static void
usage(void)
{
	die(SA_EUSAGE, "usage: bench-icl [-t threads] [-c n_ctx] [-q queries] [-r reps] "
	    "[-K k_max] [-a adapter] [-T task_dir] MODEL");
}

int
main(int argc, char **argv)
{
	const char *adapter_path = NULL, *task_dir = "data/tasks/sentiment";
	int n_ctx = 0, nq = 4, reps = 3, k_max = 0, c, bos, k_icl_max = -1;
	sa_model *m;
	sa_adapter *a;
	sa_task *task;
	sa_kvcache *st, *st_cached;
	sa_qa *qa;
	int **qprompt, *nqprompt;
	double *t_icl, *t_cached, *t_delta, *t_side, *t_merge, *t_sidea;
	size_t merged_bytes = 0, side_bytes = 0;

	setprogname_(argv[0]);
	while ((c = getopt(argc, argv, "t:c:q:r:K:a:T:h")) != -1) {
		switch (c) {
		case 't': sa_set_threads((int)parse_long("-t", optarg, 1, 256)); break;
		case 'c': n_ctx = (int)parse_long("-c", optarg, 16, 1 << 20); break;
		case 'q': nq = (int)parse_long("-q", optarg, 1, 10000); break;
		case 'r': reps = (int)parse_long("-r", optarg, 1, 1000); break;
		case 'K': k_max = (int)parse_long("-K", optarg, 0, 1 << 24); break;
		case 'a': adapter_path = optarg; break;
		case 'T': task_dir = optarg; break;
		default: usage();
		}
	}
	if (argc - optind != 1)
		usage();

	TRY(sa_model_load(&m, argv[optind]));
	if (n_ctx <= 0 || n_ctx > m->cfg.n_ctx)
		n_ctx = m->cfg.n_ctx;
	if (adapter_path) {
		TRY(sa_adapter_load(&a, adapter_path));
		TRY(sa_adapter_check(a, m));
	} else {
		uint32_t mats = 1u << SA_MAT_Q | 1u << SA_MAT_K | 1u << SA_MAT_V | 1u << SA_MAT_O;
		TRY(sa_adapter_init(&a, m, 16, 64, mats, 0, 1e-3f));
	}
	for (int mat = 0; mat < SA_NMAT; mat++) {
		int d_out, d_in;
		if (!sa_adapted(a->mats, mat))
			continue;
		TRY(sa_model_mat_dims(m, mat, &d_out, &d_in));
		merged_bytes += (size_t)m->cfg.n_layer * d_out * d_in * sizeof(float);
		side_bytes += (size_t)m->cfg.n_layer * a->rank * (d_out + d_in) * sizeof(float);
	}
	TRY(sa_task_load(&task, task_dir, "test"));
	if (task->n_train < 1)
		die(SA_EDATA, "%s: no demonstrations", task_dir);
	if (nq > task->n_eval)
		nq = task->n_eval;
	bos = sa_vocab_add_bos(m->vocab) ? sa_vocab_bos(m->vocab) : -1;

	/* queries: BOS (when the vocab adds one) and the query's shared prefix */
	qa = calloc((size_t)nq, sizeof *qa);
	qprompt = calloc((size_t)nq, sizeof *qprompt);
	nqprompt = calloc((size_t)nq, sizeof *nqprompt);
	logits = malloc((size_t)m->cfg.n_vocab * sizeof *logits);
	t_icl = malloc((size_t)reps * nq * sizeof(double));
	t_cached = malloc((size_t)reps * nq * sizeof(double));
	t_delta = malloc((size_t)reps * nq * sizeof(double));
	t_side = malloc((size_t)reps * nq * sizeof(double));
	t_merge = malloc((size_t)reps * sizeof(double));
	t_sidea = malloc((size_t)reps * sizeof(double));
	if (!qa || !qprompt || !nqprompt || !logits || !t_icl || !t_cached || !t_delta ||
	    !t_side || !t_merge || !t_sidea)
		die(SA_EINTERNAL, "out of memory");
	for (int i = 0; i < nq; i++) {
		TRY(sa_qa_build(&qa[i], m->vocab, task->eval[i].input,
		    (const char *const *)task->labels, task->n_labels));
		if (!(qprompt[i] = malloc((size_t)(qa[i].n_prefix + 1) * sizeof(int))))
			die(SA_EINTERNAL, "out of memory");
		if (bos >= 0)
			qprompt[i][nqprompt[i]++] = bos;
		memcpy(qprompt[i] + nqprompt[i], qa[i].query, (size_t)qa[i].n_prefix * sizeof(int));
		nqprompt[i] += qa[i].n_prefix;
	}
	TRY(sa_kvcache_new(&st, m, n_ctx));
	TRY(sa_kvcache_new(&st_cached, m, n_ctx));

	/* page the weights in, start the threads */
	{
		size_t kv;
		run_query(st, 0, qprompt[0], nqprompt[0], &qa[0], &kv);
	}

	printf("k,demo_tokens,segments,icl_ms,icl_cached_ms,delta_ms,delta_side_ms,"
	    "icl_kv,delta_kv,cache_once_ms,encode_ms,merge_ms,side_ms,merged_bytes,side_bytes\n");
	fflush(stdout);
	for (int k = 0;; k = k ? 2 * k : 1) {
		int *idx, n_segs, fits, demo_tokens = 0, n_icl = 0;
		sa_demos *d;
		sa_segment *segs;
		sa_encoder *enc;
		sa_delta *delta;
		double t0, t_once = 0, t_encode;
		size_t kv_icl = 0, kv_delta = 0, kv;

		if (k_max > 0 && k > k_max)
			break;
		if (k_max <= 0 && k_icl_max >= 0 && k > 4 * (k_icl_max ? k_icl_max : 1))
			break;
		if (!(idx = malloc((size_t)(k ? k : 1) * sizeof *idx)))
			die(SA_EINTERNAL, "out of memory");
		for (int i = 0; i < k; i++)
			idx[i] = i % task->n_train;
		TRY(sa_demos_from_examples(&d, task_dir, task->train, idx, k));
		TRY(sa_demos_segment(d, m->vocab, n_ctx, SA_RECORDS_PACKED, &segs, &n_segs));
		for (int s = 0; s < n_segs; s++)
			demo_tokens += segs[s].n;

		/* ICL: one segment of BOS and demonstrations, then every query */
		fits = n_segs <= 1;
		for (int i = 0; i < nq && fits; i++)
			fits = (n_segs ? segs[0].n : 0) + nqprompt[i] + answer_need(&qa[i]) <= n_ctx;
		if (fits) {
			k_icl_max = k;
			n_icl = n_segs ? segs[0].n : 0;
			/* the cached variant's demonstrations (BOS included); the
			 * query then starts after them without its own BOS */
			t0 = now();
			sa_kvcache_truncate(st_cached, 0);
			if (n_icl)
				TRY(sa_forward(st_cached, segs[0].toks, n_icl, NULL, 0));
			t_once = now() - t0;
		}

		/* the delta of the same demonstrations, from the base model */
		t0 = now();
		TRY(sa_encoder_new(&enc, m, a, NULL));
		TRY(sa_encoder_feed_segments(enc, segs, n_segs, NULL, NULL, NULL));
		TRY(sa_delta_clone(&delta, sa_encoder_delta(enc)));
		t_encode = now() - t0;
		sa_encoder_free(enc);

		for (int r = 0; r < reps; r++) {
			for (int i = 0; i < nq && fits; i++) {
				int *p = malloc((size_t)(n_icl + nqprompt[i]) * sizeof *p);
				int skip = n_icl && bos >= 0;   /* the demonstrations hold BOS */
				if (!p)
					die(SA_EINTERNAL, "out of memory");
				if (n_icl)
					memcpy(p, segs[0].toks, (size_t)n_icl * sizeof *p);
				memcpy(p + n_icl, qprompt[i] + skip, (size_t)(nqprompt[i] - skip) * sizeof *p);
				t_icl[r * nq + i] = run_query(st, 0, p, n_icl + nqprompt[i] - skip, &qa[i], &kv);
				kv_icl = kv > kv_icl ? kv : kv_icl;
				t_cached[r * nq + i] = run_query(st_cached, n_icl, p + n_icl,
				    nqprompt[i] - skip, &qa[i], &kv);
				free(p);
			}
			t0 = now();
			TRY(sa_delta_apply(m, a, delta, 1, 1));
			t_merge[r] = now() - t0;
			for (int i = 0; i < nq; i++) {
				t_delta[r * nq + i] = run_query(st, 0, qprompt[i], nqprompt[i], &qa[i], &kv);
				kv_delta = kv > kv_delta ? kv : kv_delta;
			}
			sa_model_reset_weights(m);
			t0 = now();
			TRY(sa_delta_apply(m, a, delta, 1, 0));
			t_sidea[r] = now() - t0;
			for (int i = 0; i < nq; i++)
				t_side[r * nq + i] = run_query(st, 0, qprompt[i], nqprompt[i], &qa[i], &kv);
			sa_model_reset_weights(m);
		}

		printf("%d,%d,%d,", k, demo_tokens, n_segs);
		if (fits)
			printf("%.3f,%.3f,", 1e3 * median(t_icl, reps * nq), 1e3 * median(t_cached, reps * nq));
		else
			printf(",,");
		printf("%.3f,%.3f,", 1e3 * median(t_delta, reps * nq), 1e3 * median(t_side, reps * nq));
		if (fits)
			printf("%zu,", kv_icl);
		else
			printf(",");
		printf("%zu,", kv_delta);
		if (fits)
			printf("%.3f,", 1e3 * t_once);
		else
			printf(",");
		printf("%.3f,%.3f,%.3f,%zu,%zu\n", 1e3 * t_encode, 1e3 * median(t_merge, reps),
		    1e3 * median(t_sidea, reps), merged_bytes, side_bytes);
		fflush(stdout);

		sa_delta_free(delta);
		sa_segments_free(segs, n_segs);
		sa_demos_free(d);
		free(idx);
		if (!fits && k_icl_max < 0)
			k_icl_max = 0;
	}

	for (int i = 0; i < nq; i++) {
		sa_qa_free(&qa[i]);
		free(qprompt[i]);
	}
	free(qa);
	free(qprompt);
	free(nqprompt);
	free(logits);
	free(t_icl);
	free(t_cached);
	free(t_delta);
	free(t_side);
	free(t_merge);
	free(t_sidea);
	sa_kvcache_free(st);
	sa_kvcache_free(st_cached);
	sa_task_free(task);
	sa_adapter_free(a);
	sa_model_free(m);
	close_stdout();
	return 0;
}
