/*
 * dump-logits - the reference side of the oracle tests: run a GGUF model
 * through llama.cpp on a fixed list of token ids and print what libsa must
 * reproduce.
 *
 *   dump-logits [-t threads] [-n ngen] [-e every] [-g every] model.gguf id...
 *   dump-logits [-t threads] [-n ngen] [-e every] [-g every] -p text model.gguf
 *   dump-logits -s             (print llama.cpp's system info: CPU features)
 *
 * The ids are evaluated as one batch at positions 0..n-1 with logits
 * requested for every position (no BOS is added: it is there only if it is
 * in the list).  The logits printed are those of the last position and of
 * every position a multiple of -e back from it (default 1: all of them;
 * 0: none, for vocabularies too large to store).  -g does the same for the
 * greedy steps (default 0: none): step I is the logits that chose the I-th
 * generated token, computed from a batch of one token (the decode path).  With -p the ids are llama.cpp's tokenization of text, as
 * llama_tokenize(add_special = true, parse_special = false).  Then ngen
 * tokens are generated greedily (argmax, lowest id on ties), one at a time.
 *
 * Output, one record a line:
 *   tokens N id...
 *   vocab V
 *   logits P                   (P position lines follow)
 *   pos I x0 x1 ... x(V-1)     (%.9g: every float round-trips)
 *   steps S                    (S step lines follow)
 *   step I x0 x1 ... x(V-1)
 *   greedy G id...
 *   gap G d...                 (top-1 minus top-2 logit at each greedy step)
 *
 * The KV cache is kept in F32 and flash attention is off so that an F32
 * model is computed in F32 throughout; matrix products with F16, BF16 or
 * Q8_0 weights still round the activations to the weight type, as ggml does.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ggml-backend.h"
#include "llama.h"

static int verbose, sysinfo;

static void
usage(void)
{
	fprintf(stderr, "usage: dump-logits [-v] [-t threads] [-n ngen] [-e every] [-g every] "
	    "model.gguf id...\n"
	    "       dump-logits [-v] [-t threads] [-n ngen] [-e every] [-g every] "
	    "-p text model.gguf\n"
	    "       dump-logits -s\n");
	exit(64);
}

static void
quiet_log(enum ggml_log_level level, const char *text, void *ud)
{
	(void)ud;
	if (verbose || level == GGML_LOG_LEVEL_ERROR)
		fputs(text, stderr);
}

static long
number(const char *s, long lo, long hi)
{
	char *end;
	long v = strtol(s, &end, 10);

	if (end == s || *end || v < lo || v > hi) {
		fprintf(stderr, "dump-logits: invalid number '%s'\n", s);
		exit(64);
	}
	return v;
}

/* Index of the largest logit (the lowest on ties) and its margin over the next. */
static int
argmax(const float *x, int n, float *gap)
{
	int best = 0, i;
	float second = -INFINITY;

	for (i = 1; i < n; i++) {
		if (x[i] > x[best]) {
			second = x[best];
			best = i;
		} else if (x[i] > second) {
			second = x[i];
		}
	}
	*gap = x[best] - second;
	return best;
}

static void
print_row(const float *x, int n)
{
	int i;

	for (i = 0; i < n; i++)
		printf(" %.9g", x[i]);
	putchar('\n');
}

int
main(int argc, char **argv)
{
	const char *text = NULL, *path;
	int nthreads = 2, ngen = 64, every = 1, gevery = 0, c, i, n, nvocab, nlog;
	llama_token *toks;
	float *gaps;
	llama_token *gen;

	while ((c = getopt(argc, argv, "svt:n:e:g:p:")) != -1) {
		switch (c) {
		case 's': sysinfo = 1; break;
		case 'v': verbose = 1; break;
		case 't': nthreads = (int)number(optarg, 1, 256); break;
		case 'n': ngen = (int)number(optarg, 0, 4096); break;
		case 'e': every = (int)number(optarg, 0, 1 << 20); break;
		case 'g': gevery = (int)number(optarg, 0, 1 << 20); break;
		case 'p': text = optarg; break;
		default: usage();
		}
	}
	argc -= optind;
	argv += optind;
	if (sysinfo && argc == 0) {
		llama_log_set(quiet_log, NULL);
		ggml_backend_load_all();
		printf("%s\n", llama_print_system_info());
		return 0;
	}
	if (argc < 1 || (text && argc != 1) || (!text && argc < 2))
		usage();
	path = argv[0];

	llama_log_set(quiet_log, NULL);
	ggml_backend_load_all();
	llama_backend_init();

	struct llama_model_params mp = llama_model_default_params();
	mp.n_gpu_layers = 0;
	mp.use_extra_bufts = false;   /* no weight repacking: plain ggml kernels */
	struct llama_model *model = llama_model_load_from_file(path, mp);
	if (!model) {
		fprintf(stderr, "dump-logits: %s: cannot load model\n", path);
		return 66;
	}
	const struct llama_vocab *vocab = llama_model_get_vocab(model);
	nvocab = llama_vocab_n_tokens(vocab);

	if (text) {
		int len = (int)strlen(text);
		n = -llama_tokenize(vocab, text, len, NULL, 0, true, false);
		if (n <= 0) {
			fprintf(stderr, "dump-logits: cannot tokenize the text\n");
			return 65;
		}
		toks = malloc(n * sizeof *toks);
		if (!toks || llama_tokenize(vocab, text, len, toks, n, true, false) != n) {
			fprintf(stderr, "dump-logits: cannot tokenize the text\n");
			return 65;
		}
	} else {
		n = argc - 1;
		toks = malloc(n * sizeof *toks);
		if (!toks)
			return 70;
		for (i = 0; i < n; i++)
			toks[i] = (llama_token)number(argv[i + 1], 0, nvocab - 1);
	}

	struct llama_context_params cp = llama_context_default_params();
	cp.n_ctx = n + ngen + 1;
	cp.n_batch = n;
	cp.n_ubatch = n;
	cp.n_seq_max = 1;
	cp.n_threads = nthreads;
	cp.n_threads_batch = nthreads;
	cp.type_k = GGML_TYPE_F32;
	cp.type_v = GGML_TYPE_F32;
	cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
	cp.no_perf = true;
	struct llama_context *ctx = llama_init_from_model(model, cp);
	if (!ctx) {
		fprintf(stderr, "dump-logits: %s: cannot create a context\n", path);
		return 70;
	}

	struct llama_batch b = llama_batch_init(n, 0, 1);
	for (i = 0; i < n; i++) {
		b.token[i] = toks[i];
		b.pos[i] = i;
		b.n_seq_id[i] = 1;
		b.seq_id[i][0] = 0;
		b.logits[i] = 1;
	}
	b.n_tokens = n;
	if (llama_decode(ctx, b) != 0) {
		fprintf(stderr, "dump-logits: %s: decode of %d tokens failed\n", path, n);
		return 70;
	}

	printf("tokens %d", n);
	for (i = 0; i < n; i++)
		printf(" %d", toks[i]);
	printf("\nvocab %d\n", nvocab);
	for (nlog = 0, i = 0; i < n; i++)
		nlog += every > 0 && (n - 1 - i) % every == 0;
	printf("logits %d\n", nlog);
	for (i = 0; i < n; i++) {
		if (every == 0 || (n - 1 - i) % every != 0)
			continue;
		printf("pos %d", i);
		print_row(llama_get_logits_ith(ctx, i), nvocab);
	}

	gen = malloc((ngen + 1) * sizeof *gen);
	gaps = malloc((ngen + 1) * sizeof *gaps);
	if (!gen || !gaps)
		return 70;
	for (nlog = 0, i = 1; i < ngen; i++)
		nlog += gevery > 0 && (ngen - 1 - i) % gevery == 0;
	printf("steps %d\n", nlog);
	struct llama_batch one = llama_batch_init(1, 0, 1);
	const float *last = llama_get_logits_ith(ctx, n - 1);
	for (i = 0; i < ngen; i++) {
		if (i > 0 && gevery > 0 && (ngen - 1 - i) % gevery == 0) {
			printf("step %d", i);
			print_row(last, nvocab);
		}
		gen[i] = argmax(last, nvocab, &gaps[i]);
		if (i + 1 == ngen)
			break;
		one.token[0] = gen[i];
		one.pos[0] = n + i;
		one.n_seq_id[0] = 1;
		one.seq_id[0][0] = 0;
		one.logits[0] = 1;
		one.n_tokens = 1;
		if (llama_decode(ctx, one) != 0) {
			fprintf(stderr, "dump-logits: %s: decode at position %d failed\n", path, n + i);
			return 70;
		}
		last = llama_get_logits_ith(ctx, 0);
	}
	printf("greedy %d", ngen);
	for (i = 0; i < ngen; i++)
		printf(" %d", gen[i]);
	printf("\ngap %d", ngen);
	for (i = 0; i < ngen; i++)
		printf(" %.3g", gaps[i]);
	putchar('\n');

	llama_batch_free(one);
	llama_batch_free(b);
	llama_free(ctx);
	llama_model_free(model);
	llama_backend_free();
	free(toks);
	free(gen);
	free(gaps);
	if (fflush(stdout) != 0 || ferror(stdout)) {
		fprintf(stderr, "dump-logits: stdout: write error\n");
		return 74;
	}
	return 0;
}
