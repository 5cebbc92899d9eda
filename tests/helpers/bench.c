/*
 * bench - speed of the forward pass: prefill and decode tokens per second,
 * and how much of the machine's memory bandwidth decoding uses.
 *
 *   bench [-t threads] [-p n_prompt] [-n n_decode] [model.gguf ...]
 *
 * With no model, bench makes its own with tests/helpers/mkmodel (SA_MKMODEL)
 * in a temporary directory: a tiny one, and two of TinyLlama's shape (d 2048,
 * 22 layers, 32 heads, 4 KV heads, FFN 5632, the 32000-token Llama vocab of
 * tests/data/vocab) in F16 and Q8_0.  For each model it runs the warm-up
 * llama-bench runs (a prompt of n_prompt tokens, then one token, the cache
 * emptied after each), then, timed, a prompt of n_prompt tokens (default
 * 512) in one call and n_decode (default 128) tokens one at a time after
 * it, and prints one line:
 *   prefill tokens/s, decode tokens/s, weight bytes read per decoded token
 *   times tokens/s, and that as a fraction of the copy bandwidth.
 * The copy bandwidth is measured in the same run: memcpy of a 512 MiB
 * buffer on every thread at once.  It is given both ways: bytes copied per
 * second, and bytes moved (read plus written, STREAM's convention), which
 * is twice that; decoding only reads.
 */
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "sa.h"
#include "kernels_impl.h"     /* sa_kernels_name */

char *openblas_get_corename(void);

static double
now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

struct copy_job {
	char *dst;
	const char *src;
	size_t n;
};

static void *
copy_thread(void *p)
{
	struct copy_job *j = p;
	memcpy(j->dst, j->src, j->n);
	return NULL;
}

/* Bytes copied per second by nth threads copying their share of a large
 * buffer; the best of five runs. */
static double
copy_bandwidth(int nth)
{
	const size_t n = (size_t)512 << 20;
	char *src = malloc(n), *dst = malloc(n);
	pthread_t tid[64];
	struct copy_job job[64];
	double best = 0;

	if (!src || !dst)
		return 0;
	if (nth > 64)
		nth = 64;
	memset(src, 1, n);
	memset(dst, 2, n);
	for (int rep = 0; rep < 5; rep++) {
		double t0 = now(), dt;
		for (int i = 0; i < nth; i++) {
			job[i] = (struct copy_job){ dst + n / nth * i, src + n / nth * i, n / nth };
			pthread_create(&tid[i], NULL, copy_thread, &job[i]);
		}
		for (int i = 0; i < nth; i++)
			pthread_join(tid[i], NULL);
		dt = now() - t0;
		if (n / dt > best)
			best = n / dt;
	}
	free(src);
	free(dst);
	return best;
}

/* Bytes of weights one decoded token reads: every layer matrix and the
 * output matrix once (norms and one embedding row are too small to count). */
static double
weight_bytes(const sa_model *m)
{
	double b = 0;
	for (int l = 0; l < m->cfg.n_layer; l++)
		for (int k = 0; k < SA_NMAT; k++) {
			const sa_matrix *w = &m->layers[l].w[k];
			b += (double)w->rows * sa_type_row_size(w->type, w->cols);
		}
	b += (double)m->output.rows * sa_type_row_size(m->output.type, m->output.cols);
	return b;
}

static int
bench(const char *path, int n_prompt, int n_decode, double copy_bw)
{
	sa_model *m;
	sa_kvcache *s;
	float *logits;
	int *toks, tok, rc;
	double t0, t_prefill, t_decode, wb;
	uint64_t x = 88172645463325252ULL;

	if ((rc = sa_model_load(&m, path)) != SA_OK) {
		fprintf(stderr, "bench: %s\n", sa_error());
		return rc;
	}
	if (n_prompt + n_decode > m->cfg.n_ctx) {
		fprintf(stderr, "bench: %s: context %d is shorter than %d tokens\n",
		    path, m->cfg.n_ctx, n_prompt + n_decode);
		sa_model_free(m);
		return SA_EUSAGE;
	}
	if ((rc = sa_kvcache_new(&s, m, n_prompt + n_decode)) != SA_OK) {
		fprintf(stderr, "bench: %s\n", sa_error());
		sa_model_free(m);
		return rc;
	}
	logits = malloc((size_t)m->cfg.n_vocab * sizeof *logits);
	toks = malloc((size_t)n_prompt * sizeof *toks);
	if (!logits || !toks)
		return SA_EINTERNAL;
	for (int i = 0; i < n_prompt; i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		toks[i] = (int)(x % (uint64_t)m->cfg.n_vocab);
	}

	/* llama-bench's warm-up (on unless --no-warmup): a prefill of the
	 * prompt's size before timing one, a decoded token before timing
	 * decode.  It pages the weights in, starts the threads and grows the
	 * scratch to its size, which would otherwise count in the prefill. */
	if ((rc = sa_forward(s, toks, n_prompt, logits, 0)) != SA_OK)
		goto fail;
	sa_kvcache_truncate(s, 0);
	if ((rc = sa_forward(s, toks, 1, logits, 0)) != SA_OK)
		goto fail;
	sa_kvcache_truncate(s, 0);

	t0 = now();
	if ((rc = sa_forward(s, toks, n_prompt, logits, 0)) != SA_OK)
		goto fail;
	t_prefill = now() - t0;

	t0 = now();
	for (int i = 0; i < n_decode; i++) {
		tok = (int)((uint64_t)(toks[i % n_prompt] + i) % (uint64_t)m->cfg.n_vocab);
		if ((rc = sa_forward(s, &tok, 1, logits, 0)) != SA_OK)
			goto fail;
	}
	t_decode = now() - t0;

	wb = weight_bytes(m);
	printf("%-22s %5.2f GB  prefill %d: %8.1f tok/s  decode %d: %7.2f tok/s  "
	    "reads %6.2f GB/s = %3.0f%% of memcpy (%3.0f%% of its read+write)\n",
	    m->name, wb / 1e9, n_prompt, n_prompt / t_prefill, n_decode, n_decode / t_decode,
	    wb * n_decode / t_decode / 1e9, 100 * wb * n_decode / t_decode / copy_bw,
	    50 * wb * n_decode / t_decode / copy_bw);
	fflush(stdout);
fail:
	if (rc != SA_OK)
		fprintf(stderr, "bench: %s: %s\n", path, sa_error());
	free(logits);
	free(toks);
	sa_kvcache_free(s);
	sa_model_free(m);
	return rc;
}

/* Run mkmodel with args (NULL-terminated) into out. */
static int
mkmodel(const char *out, const char *const *args)
{
	const char *mk = getenv("SA_MKMODEL") ? getenv("SA_MKMODEL") : "tests/helpers/mkmodel";
	const char *argv[40];
	int n = 0, status;
	pid_t pid;

	argv[n++] = mk;
	while (*args && n < 36)
		argv[n++] = *args++;
	argv[n++] = "-o";
	argv[n++] = out;
	argv[n] = NULL;
	if ((pid = fork()) < 0)
		return -1;
	if (pid == 0) {
		execv(mk, (char *const *)argv);
		perror(mk);
		_exit(127);
	}
	if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status))
		return -1;
	return 0;
}

static void
usage(void)
{
	fprintf(stderr, "usage: bench [-t threads] [-p n_prompt] [-n n_decode] [model.gguf ...]\n");
	exit(64);
}

int
main(int argc, char **argv)
{
	static const char *vocab = "tests/data/vocab/ggml-vocab-llama-spm.gguf";
	static const char *tiny[] = { "--name", "tiny-f32", "--ctx", "1024", NULL };
	static const char *tl_f16[] = { "--name", "tinyllama-shape-f16", "--layers", "22",
		"--dim", "2048", "--heads", "32", "--kv-heads", "4", "--ff", "5632", "--ctx", "2048",
		"--vocab", NULL, "-t", "f16", NULL };
	static const char *tl_q8[] = { "--name", "tinyllama-shape-q8_0", "--layers", "22",
		"--dim", "2048", "--heads", "32", "--kv-heads", "4", "--ff", "5632", "--ctx", "2048",
		"--vocab", NULL, "-t", "q8_0", NULL };
	int n_prompt = 512, n_decode = 128, c, rc = 0;
	double bw;

	while ((c = getopt(argc, argv, "t:p:n:h")) != -1) {
		switch (c) {
		case 't': sa_set_threads(atoi(optarg)); break;
		case 'p': n_prompt = atoi(optarg); break;
		case 'n': n_decode = atoi(optarg); break;
		default: usage();
		}
	}
	if (n_prompt < 1 || n_decode < 1)
		usage();
	argc -= optind;
	argv += optind;

	sa_set_threads(sa_get_threads());
	bw = copy_bandwidth(sa_get_threads());
	printf("threads %d, kernels %s, OpenBLAS core %s, memcpy %.2f GB/s copied (%.2f GB/s read + written)\n",
	    sa_get_threads(), sa_kernels_name(), openblas_get_corename(), bw / 1e9, 2 * bw / 1e9);
	fflush(stdout);
	if (argc) {
		for (int i = 0; i < argc; i++)
			rc |= bench(argv[i], n_prompt, n_decode, bw);
		return rc ? 1 : 0;
	}

	char dir[] = "/tmp/sa-bench.XXXXXX", path[64];
	const char *const *sets[] = { tiny, tl_f16, tl_q8 };
	if (!mkdtemp(dir)) {
		perror("bench: mkdtemp");
		return 73;
	}
	tl_f16[15] = vocab;
	tl_q8[15] = vocab;
	for (size_t i = 0; i < sizeof sets / sizeof *sets; i++) {
		snprintf(path, sizeof path, "%s/model.gguf", dir);
		if (mkmodel(path, sets[i])) {
			fprintf(stderr, "bench: mkmodel failed\n");
			rc = 1;
			break;
		}
		rc |= bench(path, n_prompt, n_decode, bw);
		unlink(path);
	}
	rmdir(dir);
	return rc ? 1 : 0;
}
