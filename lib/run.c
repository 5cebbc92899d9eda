/*
 * run.c - sa-run(1)'s command line as the library takes it: its options
 * (sa_run_opts), the rules that combine them, and the request they make of
 * the texts given (the prompt read, escapes expanded, chat messages).
 * What a request does is serve.c's, which also holds the sampling keys the
 * options share with a batch request's.
 */
#include <stdlib.h>
#include <string.h>

#include "sa.h"

void
sa_run_opts_default(sa_run_opts *o)
{
	*o = (sa_run_opts){ .demos_format = SA_DEMOS_AUTO, .max_deltas = -1, .max_delta_mem = -1,
	    .parallel = 1, .escape = 1, .n_ctx = -1, .smp = { .n_predict = 128, .temp = 0.8,
	    .top_k = 40, .top_p = 0.95, .min_p = 0.05, .repeat_penalty = 1, .repeat_last_n = 64 } };
}

int
sa_run_opts_check(const sa_run_opts *o)
{
	const int scoring = o->score || o->n_choices;
	const struct { int bad; const char *msg; } rule[] = {
		{ o->prompt && o->file, "give -p or -f, not both" },
		{ o->batch && (o->prompt || o->file || scoring || o->echo),
		    "--batch takes its prompts from its file: no -p, -f, --score, --choice or --echo" },
		{ o->score && o->n_choices, "give --score or --choice, not both" },
		{ o->echo && (scoring || o->json), "--echo is for plain generation" },
		{ o->tokenize && (o->batch || scoring || o->echo),
		    "--tokenize prints tokens: no --batch, --score, --choice or --echo" },
		{ o->chat && o->batch, "--chat is for -p or -f: a batch request gives \"messages\"" },
		{ o->system && !o->chat, "--system goes with --chat" },
		{ o->chat_template && !o->chat && !o->batch, "--chat-template goes with --chat or --batch" },
		{ o->smp.n_probs && !o->json && !o->batch, "--logprobs needs --json" },
		{ o->adapter && !o->spec.n && !o->spec.n_demos && !o->batch,
		    "-a needs a delta (-d) or demonstrations (--demos)" },
		{ (o->max_deltas >= 0 || o->max_delta_mem >= 0 || o->parallel > 1) && !o->batch,
		    "--max-deltas, --max-delta-mem and --parallel go with --batch" },
		{ o->demos_format != SA_DEMOS_AUTO && !o->spec.n_demos, "--demos-format goes with --demos" },
	};

	for (size_t i = 0; i < sizeof rule / sizeof rule[0]; i++)
		if (rule[i].bad)
			return sa_fail(SA_EUSAGE, "%s", rule[i].msg);
	return SA_OK;
}

/* s copied into *t, with llama.cpp's escapes expanded when escape. */
static int
arg_text(const char *s, int escape, char **t, size_t *len)
{
	if (escape)
		return (*t = sa_text_unescape(s, len)) ? SA_OK : SA_EINTERNAL;
	if (!(*t = strdup(s)))
		return sa_fail(SA_EINTERNAL, "out of memory");
	*len = strlen(*t);
	return SA_OK;
}

/* arg_text of each of a[0..n) into *t, their lengths into *len. */
static int
arg_texts(const char *const *a, int n, int escape, char ***t, size_t **len)
{
	int rc = SA_OK;

	if (!(*t = sa_calloc((size_t)n + 1, sizeof **t)) ||
	    !(*len = sa_calloc((size_t)n + 1, sizeof **len)))
		return SA_EINTERNAL;
	for (int i = 0; i < n && rc == SA_OK; i++)
		rc = arg_text(a[i], escape, &(*t)[i], &(*len)[i]);
	return rc;
}

int
sa_run_request_new(sa_run_request **out, const sa_run_opts *o)
{
	sa_run_request *r = sa_calloc(1, sizeof *r);
	sa_request *q;
	size_t sys_len = 0;
	int rc = SA_OK;

	if (!(*out = r))
		return SA_EINTERNAL;
	q = &r->req;
	*q = (sa_request){ .score = o->score, .n_choices = o->n_choices, .smp = o->smp,
	    .tokenize = o->tokenize, .special = o->special, .msg = r->msg,
	    .chat_template = o->chat_template };
	if (o->prompt)
		rc = arg_text(o->prompt, o->escape, &r->text, &q->len);
	else if (!o->batch)
		rc = sa_prompt_read(o->file ? o->file : "-", &r->text, &q->len);
	q->text = r->text;
	if (rc == SA_OK)
		rc = arg_texts(o->choices, o->n_choices, o->escape, &r->choices, &r->choice_len);
	if (rc == SA_OK)
		rc = arg_texts(o->stops, o->n_stops, o->escape, &r->stops, &r->stop_len);
	if (rc == SA_OK && o->system)
		rc = arg_text(o->system, o->escape, &r->system, &sys_len);
	r->n_choices = o->n_choices;
	r->n_stops = o->n_stops;
	if (rc != SA_OK) {
		sa_run_request_free(r);
		*out = NULL;
		return rc;
	}
	q->choice = (const char *const *)r->choices;
	q->choice_len = r->choice_len;
	q->smp.stop = (const char *const *)r->stops;
	q->smp.stop_len = r->stop_len;
	q->smp.n_stop = o->n_stops;
	/* --chat: the prompt is the user's message, after --system's */
	if (o->chat && r->system)
		r->msg[q->n_msg++] = (sa_chat_msg){ "system", r->system, sys_len };
	if (o->chat)
		r->msg[q->n_msg++] = (sa_chat_msg){ "user", r->text, q->len };
	return SA_OK;
}

void
sa_run_request_free(sa_run_request *r)
{
	if (!r)
		return;
	for (int i = 0; r->choices && i < r->n_choices; i++)
		free(r->choices[i]);
	for (int i = 0; r->stops && i < r->n_stops; i++)
		free(r->stops[i]);
	free(r->choices);
	free(r->choice_len);
	free(r->stops);
	free(r->stop_len);
	free(r->text);
	free(r->system);
	free(r);
}
