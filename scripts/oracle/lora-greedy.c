/*
 * lora-greedy - the llama.cpp side of the LoRA export tests: load a GGUF
 * model and, optionally, a LoRA adapter GGUF at a scale, then print the
 * log-likelihood of a prompt and its greedy continuation.
 *
 *   lora-greedy [-t threads] [-n ngen] [-l lora.gguf] [-s scale] model.gguf prompt
 *
 * The prompt is tokenized as llama_tokenize(add_special = true,
 * parse_special = false), the way sa-run tokenizes it.  Output, one record a
 * line:
 *   tokens N id...          the prompt's ids
 *   logprob X               sum of log p(id[i+1] | id[0..i]) over the prompt (%.9g)
 *   greedy G id...          argmax continuation (lowest id on ties)
 *   gap G d...              top-1 minus top-2 logit at each step
 *   text HEX                the continuation's bytes, as token pieces, in hex
 *
 * F32 KV cache and no flash attention, as dump-logits; no weight repacking.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ggml-backend.h"
#include "llama.h"

static void
usage(void)
{
	fprintf(stderr, "usage: lora-greedy [-t threads] [-n ngen] [-l lora.gguf] [-s scale] "
	    "model.gguf prompt\n");
	exit(64);
}

static void
quiet_log(enum ggml_log_level level, const char *text, void *ud)
{
	(void)ud;
	if (level == GGML_LOG_LEVEL_ERROR)
		fputs(text, stderr);
}

static int
argmax(const float *x, int n, float *gap)
{
	int best = 0;
	float second = -INFINITY;

	for (int i = 1; i < n; i++) {
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

/* log softmax(x)[tok], in double. */
static double
logprob(const float *x, int n, int tok)
{
	double mx = x[0], sum = 0;

	for (int i = 1; i < n; i++)
		if (x[i] > mx)
			mx = x[i];
	for (int i = 0; i < n; i++)
		sum += exp((double)x[i] - mx);
	return (double)x[tok] - mx - log(sum);
}

int
main(int argc, char **argv)
{
	const char *lora_path = NULL, *path, *prompt;
	int nthreads = 2, ngen = 32, c, n, nvocab;
	float scale = 1;
	double lp = 0;

	while ((c = getopt(argc, argv, "t:n:l:s:")) != -1) {
		switch (c) {
		case 't': nthreads = atoi(optarg); break;
		case 'n': ngen = atoi(optarg); break;
		case 'l': lora_path = optarg; break;
		case 's': scale = strtof(optarg, NULL); break;
		default: usage();
		}
	}
	if (argc - optind != 2 || nthreads < 1 || ngen < 1)
		usage();
	path = argv[optind];
	prompt = argv[optind + 1];

	llama_log_set(quiet_log, NULL);
	ggml_backend_load_all();
	llama_backend_init();

	struct llama_model_params mp = llama_model_default_params();
	mp.n_gpu_layers = 0;
	mp.use_extra_bufts = false;
	struct llama_model *model = llama_model_load_from_file(path, mp);
	if (!model) {
		fprintf(stderr, "lora-greedy: %s: cannot load model\n", path);
		return 66;
	}
	const struct llama_vocab *vocab = llama_model_get_vocab(model);
	nvocab = llama_vocab_n_tokens(vocab);

	int len = (int)strlen(prompt);
	n = -llama_tokenize(vocab, prompt, len, NULL, 0, true, false);
	llama_token *toks = malloc((size_t)(n > 0 ? n : 1) * sizeof *toks);
	if (n <= 0 || !toks || llama_tokenize(vocab, prompt, len, toks, n, true, false) != n) {
		fprintf(stderr, "lora-greedy: cannot tokenize the prompt\n");
		return 65;
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
		fprintf(stderr, "lora-greedy: %s: cannot create a context\n", path);
		return 70;
	}
	if (lora_path) {
		struct llama_adapter_lora *lora = llama_adapter_lora_init(model, lora_path);
		if (!lora) {
			fprintf(stderr, "lora-greedy: %s: cannot load the LoRA adapter\n", lora_path);
			return 65;
		}
		if (llama_set_adapters_lora(ctx, &lora, 1, &scale) != 0) {
			fprintf(stderr, "lora-greedy: %s: cannot apply the LoRA adapter\n", lora_path);
			return 70;
		}
	}

	struct llama_batch b = llama_batch_init(n, 0, 1);
	for (int i = 0; i < n; i++) {
		b.token[i] = toks[i];
		b.pos[i] = i;
		b.n_seq_id[i] = 1;
		b.seq_id[i][0] = 0;
		b.logits[i] = 1;
	}
	b.n_tokens = n;
	if (llama_decode(ctx, b) != 0) {
		fprintf(stderr, "lora-greedy: decode of %d tokens failed\n", n);
		return 70;
	}
	printf("tokens %d", n);
	for (int i = 0; i < n; i++)
		printf(" %d", toks[i]);
	for (int i = 0; i + 1 < n; i++)
		lp += logprob(llama_get_logits_ith(ctx, i), nvocab, toks[i + 1]);
	printf("\nlogprob %.9g\n", lp);

	llama_token *gen = malloc((size_t)ngen * sizeof *gen);
	float *gaps = malloc((size_t)ngen * sizeof *gaps);
	struct llama_batch one = llama_batch_init(1, 0, 1);
	const float *last = llama_get_logits_ith(ctx, n - 1);
	int ng = 0;
	if (!gen || !gaps)
		return 70;
	for (int i = 0; i < ngen; i++) {
		gen[ng] = argmax(last, nvocab, &gaps[ng]);
		if (llama_vocab_is_eog(vocab, gen[ng]))
			break;
		ng++;
		if (i + 1 == ngen)
			break;
		one.token[0] = gen[ng - 1];
		one.pos[0] = n + i;
		one.n_seq_id[0] = 1;
		one.seq_id[0][0] = 0;
		one.logits[0] = 1;
		one.n_tokens = 1;
		if (llama_decode(ctx, one) != 0) {
			fprintf(stderr, "lora-greedy: decode at position %d failed\n", n + i);
			return 70;
		}
		last = llama_get_logits_ith(ctx, 0);
	}
	printf("greedy %d", ng);
	for (int i = 0; i < ng; i++)
		printf(" %d", gen[i]);
	printf("\ngap %d", ng);
	for (int i = 0; i < ng; i++)
		printf(" %.3g", gaps[i]);
	printf("\ntext ");
	for (int i = 0; i < ng; i++) {
		char piece[256];
		int k = llama_token_to_piece(vocab, gen[i], piece, sizeof piece, 0, false);
		for (int j = 0; j < k; j++)
			printf("%02x", (unsigned char)piece[j]);
	}
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
		fprintf(stderr, "lora-greedy: stdout: write error\n");
		return 74;
	}
	return 0;
}
