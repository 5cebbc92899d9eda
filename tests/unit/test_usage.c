/*
 * test_usage.c - the usage example at the top of lib/sa.h, as a program:
 * load a model and its adapter, encode a file of demonstrations into a
 * delta, apply it, and generate greedily after a prompt.  The lines
 * between the markers are the header's, byte for byte (tests/lib.bats).
 *
 *	test_usage MODEL ADAPTER DEMOS PROMPT
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sa.h"

/* Each generated token's text to stdout; ctx is the vocabulary. */
static int
put(void *ctx, int tok, int *stop)
{
	char piece[256];
	int n = sa_token_to_piece(ctx, tok, piece, sizeof piece);

	fwrite(piece, 1, n < (int)sizeof piece ? (size_t)n : sizeof piece, stdout);
	return SA_OK;
}

int
main(int argc, char **argv)
{
	if (argc != 5) {
		fprintf(stderr, "usage: test_usage MODEL ADAPTER DEMOS PROMPT\n");
		return 64;
	}
	const char *model = argv[1], *adapter = argv[2], *demos = argv[3], *prompt = argv[4];
	/* usage: begin */
	sa_model *m; sa_adapter *a; sa_demos *d; sa_encoder *enc; sa_session *s;
	sa_sampler greedy;
	int *toks, n;

	if (sa_model_load(&m, model) || sa_adapter_load(&a, adapter) ||
	    sa_demos_read(&d, demos, NULL, 0, SA_DEMOS_TEXT, SA_DEMOS_TEMPLATE) ||
	    sa_encoder_new(&enc, m, a, NULL) ||
	    sa_encoder_feed_demos(enc, d, m->cfg.n_ctx, NULL, NULL) ||
	    sa_delta_apply(m, a, sa_encoder_delta(enc), 1, 1) ||
	    sa_session_new(&s, m, 0, 1) ||
	    sa_session_tokenize(s, prompt, strlen(prompt), &toks, &n))
		return fprintf(stderr, "%s\n", sa_error()), 1;
	sa_sampler_init(&greedy, 0, 0, 1, 0, 0);
	if (sa_session_generate(s, toks, n, &greedy, 16, put, (void *)sa_session_vocab(s)))
		return fprintf(stderr, "%s\n", sa_error()), 1;
	free(toks);
	sa_session_free(s); sa_encoder_free(enc); sa_demos_free(d);
	sa_adapter_free(a); sa_model_free(m);
	/* usage: end */
	return 0;
}
