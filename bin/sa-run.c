/*
 * sa-run - generate text with a GGUF model, or score text under it, with
 * StreamAdapter deltas applied: options (their rules and the request they
 * make are lib/run.c's), then the model, its deltas and a session
 * (lib/session.c) for the requests of lib/serve.c.
 */
#include <sys/stat.h>
#include <unistd.h>

#define TOOL "sa-run"
#include "tool.h"

static const char synopsis[] =
    "usage: sa-run [-m model] [-d delta[:scale]]... [-a adapter] [--demos file]...\n"
    "              [--lora file[:scale]]...\n"
    "              [options] [-p text | -f file]\n"
    "       sa-run [-m model] ... --score [-p text | -f file]\n"
    "       sa-run [-m model] ... --choice text... [-p text | -f file]\n"
    "       sa-run [-m model] ... [--max-deltas N] [--max-delta-mem MIB] [--parallel N]\n"
    "              --batch file\n"
    "       sa-run [-m model] ... --tokenize [-p text | -f file]\n";

/* ------------------------------------------------------------ options */

/* The options (lib/run.c), and the lists they point to. */
typedef struct args {
	sa_run_opts o;
	scaled_list deltas, lora;   /* -d, --lora FILE[:SCALE] */
	tool_list demos, choices, stops;
} args;

/* --seed, a 64-bit integer to the last bit (a batch request's is a JSON
 * number: sa_sampling_keys). */
static uint64_t
parse_seed(const char *s)
{
	char *end;
	unsigned long long v;

	if (strcmp(s, "-1") == 0)
		return sa_seed_from_clock();
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s || *end || s[0] == '-' || s[0] == '+')
		usage_die(synopsis, "--seed: invalid value '%s' (want -1 or an integer from 0 to 2^64-1)", s);
	return v;
}

/* A sampling option, opt in messages (NULL: --name), in the range of the
 * batch request's key of its name (sa_sampling_keys). */
static void
set_sampling(sa_sampling *p, const char *opt, const char *name, const char *arg)
{
	const sa_sampling_key *k = sa_sampling_keys;
	char key[32], flag[40];

	snprintf(key, sizeof key, "%s", name);
	for (char *c = key; (c = strchr(c, '-')); )
		*c = '_';
	while (strcmp(k->name, key))   /* every O_SMP has its key */
		k++;
	snprintf(flag, sizeof flag, "--%s", name);
	opt = opt ? opt : flag;
	sa_sampling_set(p, k, k->integer ? parse_long(opt, arg, (long)k->lo, (long)k->hi) :
	    parse_double(opt, arg, k->lo, k->hi));
}

enum { O_DELTA, O_LORA, O_DEMOS_FORMAT, O_CHAT_TEMPLATE, O_SMP, O_N, O_SEED, O_CTX, O_THREADS };

/* The options that are more than a value to keep. */
static void
opt_call(void *ctx, const tool_opt *t, const char *arg)
{
	args *a = ctx;
	sa_run_opts *o = &a->o;

	switch (t->val) {
	case O_DELTA: scaled_push(&a->deltas, "scale", arg); break;
	case O_LORA: scaled_push(&a->lora, "scale", arg); break;
	case O_DEMOS_FORMAT:
		if ((o->demos_format = sa_demos_format_from_name(arg)) < 0)
			usage_die(synopsis, "--demos-format: unknown format '%s' (text, tsv, jsonl)", arg);
		break;
	case O_CHAT_TEMPLATE:
		if (sa_chat_from_name(arg) < 0)
			usage_die(synopsis, "--chat-template: unknown family '%s' (%s)", arg, SA_CHAT_NAMES);
		o->chat_template = arg;
		break;
	case O_SMP: set_sampling(&o->smp, NULL, t->name, arg); break;
	case O_N: set_sampling(&o->smp, "-n", "n-predict", arg); break;
	case O_SEED: o->smp.seed = parse_seed(arg); break;
	case O_CTX: o->n_ctx = parse_long("-c", arg, 0, INT_MAX); break;
	case O_THREADS: o->threads = parse_long("-t", arg, 0, 4096); break;
	}
}

static void
parse_args(int argc, char **argv, args *a)
{
	sa_run_opts *o = &a->o;
	/* (two options that a prefix of their names could stand for keep the
	 * order they have always had: tool.h's opts_parse) */
	const tool_opt table[] = {
		TEXT("\nGenerate text from a prompt (default), score it (--score), rank candidate\n"
		    "continuations (--choice), or serve JSON Lines requests (--batch).\n"
		    "The prompt comes from -p, -f FILE, or standard input.  Details: sa-run(1).\n"),
		{ "model", 'm', "FILE", STR(&o->model),
		    "GGUF model (default: $SA_MODEL, else the installed one)" },
		{ "delta", 'd', "FILE[:S]", CALL(O_DELTA),
		    "apply a delta at scale S (default 1); repeatable, they add" },
		{ "adapter", 'a', "FILE", STR(&o->adapter),
		    "adapter of the deltas (default: the one they record)" },
		{ "unmerged", 0, NULL, FLAG(&o->unmerged, 1),
		    "keep deltas as side paths instead of merging them" },
		{ "demos", 0, "FILE", LIST(&a->demos),
		    "encode FILE as sa-encode does and apply it; repeatable" },
		{ "demos-format", 0, "FMT", CALL(O_DEMOS_FORMAT), "text, tsv or jsonl for every --demos" },
		{ "cache-dir", 0, "DIR", STR(&o->cache_dir),
		    "cache of --demos (default: $SA_CACHE_DIR, ~/.cache/sa)" },
		{ "lora", 0, "FILE[:S]", CALL(O_LORA), "apply a llama.cpp LoRA GGUF at scale S; repeatable" },
		{ "max-deltas", 0, "N", NUM(&o->max_deltas, 1, INT_MAX),
		    "--batch: side paths of requests held (default 8)" },
		{ "max-delta-mem", 0, "MIB", NUM(&o->max_delta_mem, 1, LONG_MAX >> 20),
		    "--batch: their memory held at most (default: no limit)" },
		{ "parallel", 0, "N", NUM(&o->parallel, 1, 16),
		    "--batch: decode up to N generation requests together\n(default 1)" },
		{ "prompt", 'p', "TEXT", STR(&o->prompt), "prompt text" },
		{ "file", 'f', "FILE", STR(&o->file), "read the prompt from FILE ('-' = stdin)" },
		{ "escape", 'e', NULL, FLAG(&o->escape, 1),
		    "expand \\n \\t \\xHH ... in prompt and choices (default)" },
		{ "no-escape", 0, NULL, FLAG(&o->escape, 0), "take the prompt and choices as they are" },
		{ "special", 0, NULL, FLAG(&o->special, 1),
		    "control tokens written in the prompt are tokens" },
		{ "chat", 0, NULL, FLAG(&o->chat, 1), "the prompt is a user message in the chat template" },
		{ "system", 0, "TEXT", STR(&o->system), "with --chat, a system message first" },
		{ "chat-template", 0, "NAME", CALL(O_CHAT_TEMPLATE),
		    "the template family instead of the model's" },
		{ "tokenize", 0, NULL, FLAG(&o->tokenize, 1), "print the prompt's token ids" },
		{ "n-predict", 'n', "N", CALL(O_N), "tokens to generate (default 128, -1 = until the end)" },
		{ "predict", 0, "N", CALL(O_N), NULL },
		{ "temp", 0, "T", CALL(O_SMP), "temperature (default 0.8, 0 = greedy)" },
		{ "top-k", 0, "K", CALL(O_SMP), "keep the K likeliest tokens (default 40, 0 = all)" },
		{ "top-p", 0, "P", CALL(O_SMP), "keep the likeliest that add up to P (default 0.95)" },
		{ "min-p", 0, "P", CALL(O_SMP), "drop those less likely than P times the likeliest\n(default 0.05)" },
		{ "repeat-penalty", 0, "X", CALL(O_SMP), "penalty of the last tokens (default 1 = none)" },
		{ "repeat-last-n", 0, "N", CALL(O_SMP), "tokens the penalty looks at (default 64)" },
		{ "stop", 0, "TEXT", LIST(&a->stops), "end the generation before TEXT; repeatable" },
		{ "seed", 's', "N", CALL(O_SEED), "sampling seed (default 0, -1 = from the clock)" },
		{ "logprobs", 0, "N", CALL(O_SMP), "with --json, log-probabilities and the N best" },
		{ "echo", 0, NULL, FLAG(&o->echo, 1), "print the prompt before the generated text" },
		{ "score", 0, NULL, FLAG(&o->score, 1), "print log-likelihood, token count and perplexity" },
		{ "choice", 0, "TEXT", LIST(&a->choices),
		    "score TEXT as a continuation of the prompt; repeatable" },
		{ "batch", 0, "FILE", STR(&o->batch), "JSON Lines requests from FILE ('-' = stdin)" },
		{ "json", 0, NULL, FLAG(&o->json, 1), "JSON output" },
		{ "ctx-size", 'c', "N", CALL(O_CTX),
		    "context length (default 4096 or the model's if smaller)" },
		{ "threads", 't', "N", CALL(O_THREADS), "threads (default: all CPUs)" },
		{ "no-bos", 0, NULL, FLAG(&o->no_bos, 1), "no BOS token first, whatever the model says" },
		{ "verbose", 'v', NULL, FLAG(&o->verbose, 1), "timings on stderr at the end" },
		OPTIONS_END,
	};
	int stdin_users, prompt_in;

	*a = (args){ 0 };
	sa_run_opts_default(o);
	if ((optind = opts_parse(argc, argv, table, synopsis, opt_call, a)) < argc)
		usage_die(synopsis, "unexpected argument '%s'", argv[optind]);
	o->spec = (sa_delta_spec){ (const char *const *)a->deltas.path, a->deltas.scale, a->deltas.n,
	    a->demos.v, a->demos.n, (const char *const *)a->lora.path, a->lora.scale, a->lora.n };
	o->choices = a->choices.v;
	o->n_choices = a->choices.n;
	o->stops = a->stops.v;
	o->n_stops = a->stops.n;
	if (sa_run_opts_check(o) != SA_OK)
		usage_die(synopsis, "%s", sa_error());
	/* --demos alone: the default adapter, and a usage error without one */
	if (o->spec.n_demos && !o->adapter && !o->spec.n)
		o->adapter = need_input(INPUT_ADAPTER, NULL, synopsis);
	stdin_users = o->batch ? strcmp(o->batch, "-") == 0 :
	    !o->prompt && (!o->file || strcmp(o->file, "-") == 0);
	prompt_in = stdin_users;
	stdin_users += stdin_count(o->spec.path, o->spec.n) + stdin_count(o->spec.demos, o->spec.n_demos);
	if (stdin_count(o->spec.lora, o->spec.n_lora))
		usage_die(synopsis, "--lora: give a file, not standard input");
	if (stdin_users > 1)
		usage_die(synopsis, "only one input can come from standard input");
	if (stdin_users && !prompt_in)
		stdin_not_terminal("a delta or demonstrations", "give a file, or pipe one in");
	else if (stdin_users)
		stdin_not_terminal(o->batch ? "requests" : "the prompt",
		    o->batch ? "give a file, or pipe them in" : "give -p TEXT or -f FILE, or pipe it in");
}

/* --------------------------------------------------------------- main */

/* Whether two descriptors are one file: a terminal, or 2>&1. */
static int
same_file(int a, int b)
{
	struct stat sa, sb;

	return fstat(a, &sa) == 0 && fstat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
	    sa.st_ino == sb.st_ino;
}

/* Timings summed over the sessions (--parallel). */
static void
report(sa_session *const *ss, double t_load, const sa_run_opts *o)
{
	sa_timings t;

	sa_sessions_timings(ss, (int)o->parallel, &t);
	warnx_("load %.3f s; seed %llu; context %d", t_load, (unsigned long long)o->smp.seed,
	    sa_session_ctx(ss[0]));
	if (t.n_eval)
		warnx_("prompt: %ld tokens in %.3f s, %.1f tokens/s", t.n_eval, t.t_eval,
		    t.t_eval > 0 ? t.n_eval / t.t_eval : 0);
	if (t.n_gen)
		warnx_("generation: %ld tokens in %.3f s, %.1f tokens/s", t.n_gen, t.t_gen,
		    t.t_gen > 0 ? t.n_gen / t.t_gen : 0);
}

/* The requests of --batch over the defaults def, each with deltas of its
 * own from dso. */
static int
serve(sa_session *const *ss, sa_model *model, const sa_run_opts *o, const sa_request *def,
    const sa_deltaset_opts *dso)
{
	FILE *fp = strcmp(o->batch, "-") == 0 ? stdin : fopen(o->batch, "r");
	sa_deltaset *ds;
	int status;

	if (!fp)
		die(SA_ENOINPUT, "%s: %s", o->batch, strerror(errno));
	TRY(sa_deltaset_new(&ds, model, dso));
	status = sa_serve(ss, (int)o->parallel, ds, fp, o->batch, def, stdout, "stdout");
	if (status != SA_OK && status != SA_EDATA)
		die_sa(status);
	if (fp != stdin)
		fclose(fp);
	sa_deltaset_free(ds);
	return status;
}

int
main(int argc, char **argv)
{
	args a;
	const sa_run_opts *o = &a.o;
	sa_run_request *r;
	sa_model *model;
	sa_session *ss[16];
	sa_reply out = { stdout, "stdout", 0, 0, NULL, 0, 0 };
	const char *model_path;
	double t0;
	int status = 0;

	setprogname_(argv[0]);
	parse_args(argc, argv, &a);
	model_path = need_input(INPUT_MODEL, o->model, synopsis);
	/* The prompt is read before the model loads, so bad input fails fast. */
	TRY(sa_run_request_new(&r, o));

	sa_deltaset_opts dso = { o->adapter, default_input(INPUT_ADAPTER), o->cache_dir, o->demos_format,
	    o->max_deltas > 0 ? (int)o->max_deltas : 8,
	    o->max_delta_mem > 0 ? (size_t)o->max_delta_mem << 20 : 0 };
	sa_set_threads((int)o->threads);
	t0 = now();
	TRY(sa_model_load(&model, model_path));
	if (!o->no_bos && sa_vocab_check_bos(model->vocab, model->gguf) != SA_OK)
		warnx_("%s", sa_error());
	/* -d, then --demos encoded over the base model, then --lora */
	TRY(sa_delta_spec_apply(model, &o->spec, &dso, !o->unmerged, note_stderr,
	    o->verbose ? note_stderr : NULL, NULL));
	/* one session, and with --parallel one for each request in flight */
	for (int i = 0; i < o->parallel; i++)
		TRY(sa_session_new(&ss[i], model, o->n_ctx >= 0 ? ctx_size(o->n_ctx, model) :
		    model->cfg.n_ctx < 4096 ? model->cfg.n_ctx : 4096, !o->no_bos));
	t0 = now() - t0;

	if (o->batch) {
		status = serve(ss, model, o, &r->req, &dso);
	} else {
		out.json = o->json;
		out.echo = o->echo;
		TRY(sa_request_run(ss[0], &r->req, &out));
		/* The text ends where it ends; where the timings follow it on
		 * one file, they start a line of their own. */
		if (o->verbose && out.last && out.last != '\n' && same_file(1, 2))
			fputc('\n', stderr);
	}

	if (o->verbose)
		report(ss, t0, o);
	close_stdout();
	for (int i = 0; i < o->parallel; i++)
		sa_session_free(ss[i]);
	sa_model_free(model);
	sa_run_request_free(r);
	scaled_free(&a.deltas);
	scaled_free(&a.lora);
	free(a.demos.v);
	free(a.choices.v);
	free(a.stops.v);
	return status;
}
