/*
 * sa-run - generate text with a GGUF model, or score text under it, with
 * StreamAdapter deltas applied: options, then the model, its deltas and a
 * session (lib/session.c) for the requests of lib/serve.c.
 */
#include <sys/stat.h>
#include <unistd.h>

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

static void
help(void)
{
	fputs(synopsis, stdout);
	fputs("\n"
	    "Generate text from a prompt (default), score it (--score), rank candidate\n"
	    "continuations (--choice), or serve JSON Lines requests (--batch).\n"
	    "The prompt comes from -p, -f FILE, or standard input.  Details: sa-run(1).\n"
	    "\n"
	    "  -m, --model FILE       GGUF model (default: $SA_MODEL, else the installed one)\n"
	    "  -d, --delta FILE[:S]   apply a delta at scale S (default 1); repeatable, they add\n"
	    "  -a, --adapter FILE     adapter of the deltas (default: the one they record)\n"
	    "      --unmerged         keep deltas as side paths instead of merging them\n"
	    "      --demos FILE       encode FILE as sa-encode does and apply it; repeatable\n"
	    "      --demos-format FMT text, tsv or jsonl for every --demos\n"
	    "      --cache-dir DIR    cache of --demos (default: $SA_CACHE_DIR, ~/.cache/sa)\n"
	    "      --lora FILE[:S]    apply a llama.cpp LoRA GGUF at scale S; repeatable\n"
	    "  -p, --prompt TEXT      prompt text\n"
	    "  -f, --file FILE        read the prompt from FILE ('-' = stdin)\n"
	    "  -e, --escape           expand \\n \\t \\xHH ... in prompt and choices (default)\n"
	    "      --no-escape        take the prompt and choices as they are\n"
	    "      --special          control tokens written in the prompt are tokens\n"
	    "      --chat             the prompt is a user message in the chat template\n"
	    "      --system TEXT      with --chat, a system message first\n"
	    "      --chat-template NAME  the template family instead of the model's\n"
	    "  -n, --n-predict N      tokens to generate (default 128, -1 = until the end)\n"
	    "      --temp T  --top-k K  --top-p P  --min-p P   sampling (0.8, 40, 0.95, 0.05)\n"
	    "  -s, --seed N           sampling seed (default 0, -1 = from the clock)\n"
	    "      --repeat-penalty X  --repeat-last-n N  penalty of the last tokens (1, 64)\n"
	    "      --stop TEXT        end the generation before TEXT; repeatable\n"
	    "      --logprobs N       with --json, log-probabilities and the N best\n"
	    "      --echo             print the prompt before the generated text\n"
	    "      --score            print log-likelihood, token count and perplexity\n"
	    "      --choice TEXT      score TEXT as a continuation of the prompt; repeatable\n"
	    "      --batch FILE       JSON Lines requests from FILE ('-' = stdin)\n"
	    "      --max-deltas N  --max-delta-mem MIB   side paths held (default 8, no limit)\n"
	    "      --parallel N       decode up to N generation requests together (default 1)\n"
	    "      --tokenize         print the prompt's token ids\n"
	    "      --json             JSON output\n"
	    "  -c, --ctx-size N       context length (default 4096 or the model's if smaller)\n"
	    "  -t, --threads N  --no-bos  -v, --verbose  -h, --help  -V, --version\n", stdout);
}

/* ------------------------------------------------------------ options */

typedef struct opts {
	const char *model, *adapter, *prompt, *file, *batch, *cache_dir;
	char **deltas, **lora;   /* -d, --lora FILE[:SCALE], split */
	double *scales, *lora_scales;
	const char **demos, **choices, **stops;
	int n_deltas, n_lora, n_demos, n_choices, n_stop, demos_format;
	int score, json, echo, no_bos, unmerged, verbose, escape;
	int special, chat, tokenize;
	const char *system, *chat_template;
	long max_deltas, max_delta_mem, parallel, n_ctx, threads;
	sa_sampling smp;
} opts;

/* The array a with room for n elements. */
static void *
grow(void *a, int n, size_t size)
{
	if (!(a = realloc(a, (size_t)n * size)))
		die(SA_EINTERNAL, "out of memory");
	return a;
}

/* a, of *n strings, with s after them. */
static const char **
push(const char **a, int *n, const char *s)
{
	a = grow(a, *n + 1, sizeof *a);
	a[(*n)++] = s;
	return a;
}

/* An operand FILE[:SCALE] (-d, --lora) after the *n of path and scale. */
static void
push_scaled(char ***path, double **scale, int *n, const char *arg)
{
	*path = grow(*path, *n + 1, sizeof **path);
	*scale = grow(*scale, *n + 1, sizeof **scale);
	split_scale("scale", arg, &(*path)[*n], &(*scale)[*n]);
	(*n)++;
}

/* Text given on the command line (-p, --choice, --stop, --system), copied;
 * with -e (the default) llama.cpp's escapes are expanded. */
static char *
arg_text(const char *s, int escape, size_t *len)
{
	char *t = escape ? sa_text_unescape(s, len) : strdup(s);

	if (!t)
		die(SA_EINTERNAL, "out of memory");
	*len = escape ? *len : strlen(t);
	return t;
}

/* arg_text of each of a[0..n), their lengths in *len (malloc'd). */
static char **
arg_texts(const char *const *a, int n, int escape, size_t **len)
{
	char **t = grow(NULL, n + 1, sizeof *t);

	*len = grow(NULL, n + 1, sizeof **len);
	for (int i = 0; i < n; i++)
		t[i] = arg_text(a[i], escape, &(*len)[i]);
	return t;
}

/* The n strings of a, and a. */
static void
free_strs(char **a, int n)
{
	for (int i = 0; i < n; i++)
		free(a[i]);
	free(a);
}

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
	while (strcmp(k->name, key))   /* every OPT_SMP has its key */
		k++;
	snprintf(flag, sizeof flag, "--%s", name);
	opt = opt ? opt : flag;
	sa_sampling_set(p, k, k->integer ? parse_long(opt, arg, (long)k->lo, (long)k->hi) :
	    parse_double(opt, arg, k->lo, k->hi));
}

/* Options that do not go together, in the order they are checked. */
static void
check_args(opts *o)
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
		{ o->adapter && !o->n_deltas && !o->n_demos && !o->batch,
		    "-a needs a delta (-d) or demonstrations (--demos)" },
		{ (o->max_deltas >= 0 || o->max_delta_mem >= 0 || o->parallel > 1) && !o->batch,
		    "--max-deltas, --max-delta-mem and --parallel go with --batch" },
		{ o->demos_format != SA_DEMOS_AUTO && !o->n_demos, "--demos-format goes with --demos" },
	};

	for (size_t i = 0; i < sizeof rule / sizeof rule[0]; i++)
		if (rule[i].bad)
			usage_die(synopsis, "%s", rule[i].msg);
	/* --demos alone: the default adapter, and a usage error without one */
	if (o->n_demos && !o->adapter && !o->n_deltas)
		o->adapter = need_adapter(NULL, synopsis);
}

static void
parse_args(int argc, char **argv, opts *o)
{
	enum { OPT_SMP = 256, OPT_CHOICE, OPT_BATCH, OPT_DEMOS, OPT_CACHE_DIR, OPT_DEMOS_FORMAT,
	    OPT_SYSTEM, OPT_CHAT_TEMPLATE, OPT_STOP, OPT_LORA, OPT_MAX_DELTAS, OPT_MAX_DELTA_MEM,
	    OPT_PARALLEL };
	const struct option longopts[] = {
		ARG("model", 'm'), ARG("delta", 'd'), ARG("adapter", 'a'),
		SET("unmerged", &o->unmerged, 1), ARG("demos", OPT_DEMOS),
		ARG("demos-format", OPT_DEMOS_FORMAT), ARG("cache-dir", OPT_CACHE_DIR),
		ARG("lora", OPT_LORA), ARG("max-deltas", OPT_MAX_DELTAS),
		ARG("max-delta-mem", OPT_MAX_DELTA_MEM), ARG("parallel", OPT_PARALLEL),
		ARG("prompt", 'p'), FLAG("escape", 'e'), SET("no-escape", &o->escape, 0),
		ARG("file", 'f'), SET("special", &o->special, 1), SET("chat", &o->chat, 1),
		ARG("system", OPT_SYSTEM), ARG("chat-template", OPT_CHAT_TEMPLATE),
		ARG("repeat-penalty", OPT_SMP), ARG("repeat-last-n", OPT_SMP), ARG("stop", OPT_STOP),
		ARG("logprobs", OPT_SMP), SET("tokenize", &o->tokenize, 1), ARG("n-predict", 'n'),
		ARG("predict", 'n'), ARG("temp", OPT_SMP), ARG("top-k", OPT_SMP),
		ARG("top-p", OPT_SMP), ARG("min-p", OPT_SMP), ARG("seed", 's'),
		SET("echo", &o->echo, 1), SET("score", &o->score, 1), ARG("choice", OPT_CHOICE),
		ARG("batch", OPT_BATCH), SET("json", &o->json, 1), ARG("ctx-size", 'c'),
		ARG("threads", 't'), SET("no-bos", &o->no_bos, 1), FLAG("verbose", 'v'),
		OPTIONS_END,
	};
	int c, li, stdin_users, prompt_in;

	*o = (opts){ .n_ctx = -1, .escape = 1, .demos_format = SA_DEMOS_AUTO, .max_deltas = -1,
	    .max_delta_mem = -1, .parallel = 1, .smp = { .n_predict = 128, .temp = 0.8,
	    .top_k = 40, .top_p = 0.95, .min_p = 0.05, .repeat_penalty = 1, .repeat_last_n = 64 } };
	while ((c = getopt_long(argc, argv, "m:d:a:p:ef:n:s:c:t:vhV", longopts, &li)) != -1) {
		switch (c) {
		case 0: break;   /* a flag SET sets */
		case 'm': o->model = optarg; break;
		case 'a': o->adapter = optarg; break;
		case 'd': push_scaled(&o->deltas, &o->scales, &o->n_deltas, optarg); break;
		case OPT_DEMOS: o->demos = push(o->demos, &o->n_demos, optarg); break;
		case OPT_DEMOS_FORMAT:
			if ((o->demos_format = sa_demos_format_from_name(optarg)) < 0)
				usage_die(synopsis, "--demos-format: unknown format '%s' (text, tsv, jsonl)", optarg);
			break;
		case OPT_CACHE_DIR: o->cache_dir = optarg; break;
		case OPT_LORA: push_scaled(&o->lora, &o->lora_scales, &o->n_lora, optarg); break;
		case OPT_MAX_DELTAS: o->max_deltas = parse_long("--max-deltas", optarg, 1, INT_MAX); break;
		case OPT_PARALLEL: o->parallel = parse_long("--parallel", optarg, 1, 16); break;
		case OPT_MAX_DELTA_MEM:
			o->max_delta_mem = parse_long("--max-delta-mem", optarg, 1, LONG_MAX >> 20);
			break;
		case 'p': o->prompt = optarg; break;
		case 'e': o->escape = 1; break;
		case 'f': o->file = optarg; break;
		case OPT_SYSTEM: o->system = optarg; break;
		case OPT_CHAT_TEMPLATE:
			if (sa_chat_from_name(optarg) < 0)
				usage_die(synopsis, "--chat-template: unknown family '%s' (%s)", optarg,
				    SA_CHAT_NAMES);
			o->chat_template = optarg;
			break;
		case OPT_STOP: o->stops = push(o->stops, &o->n_stop, optarg); break;
		case 'n': set_sampling(&o->smp, "-n", "n-predict", optarg); break;
		case OPT_SMP: set_sampling(&o->smp, NULL, longopts[li].name, optarg); break;
		case 's': o->smp.seed = parse_seed(optarg); break;
		case OPT_CHOICE: o->choices = push(o->choices, &o->n_choices, optarg); break;
		case OPT_BATCH: o->batch = optarg; break;
		case 'c': o->n_ctx = parse_long("-c", optarg, 0, INT_MAX); break;
		case 't': o->threads = parse_long("-t", optarg, 0, 4096); break;
		case 'v': o->verbose = 1; break;
		case 'h': help(); close_stdout(); exit(0);
		case 'V': puts("sa-run " SA_VERSION); close_stdout(); exit(0);
		default: usage_die(synopsis, NULL);
		}
	}
	if (optind < argc)
		usage_die(synopsis, "unexpected argument '%s'", argv[optind]);
	check_args(o);
	stdin_users = o->batch ? strcmp(o->batch, "-") == 0 :
	    !o->prompt && (!o->file || strcmp(o->file, "-") == 0);
	prompt_in = stdin_users;
	stdin_users += stdin_count((const char *const *)o->deltas, o->n_deltas) +
	    stdin_count(o->demos, o->n_demos);
	if (stdin_count((const char *const *)o->lora, o->n_lora))
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

static void
note(void *ctx, const char *msg)
{
	warnx_("%s", msg);
}

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
report(sa_session *const *ss, double t_load, const opts *o)
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

/* The requests of --batch, each with deltas of its own from dso. */
static int
serve(sa_session *const *ss, sa_model *model, const opts *o, const sa_deltaset_opts *dso)
{
	FILE *fp = strcmp(o->batch, "-") == 0 ? stdin : fopen(o->batch, "r");
	sa_request def = { .smp = o->smp, .special = o->special, .chat_template = o->chat_template };
	sa_deltaset *ds;
	int status;

	if (!fp)
		die(SA_ENOINPUT, "%s: %s", o->batch, strerror(errno));
	TRY(sa_deltaset_new(&ds, model, dso));
	status = sa_serve(ss, (int)o->parallel, ds, fp, o->batch, &def, stdout, "stdout");
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
	opts o;
	sa_model *model;
	sa_session *ss[16];
	sa_request req = { 0 };
	sa_reply out = { stdout, "stdout", 0, 0, NULL, 0, 0 };
	const char *model_path;
	char *text = NULL, *sys = NULL, **cs, **stops;
	size_t *cl, *stop_len, sys_len = 0;
	sa_chat_msg msg[2];
	double t0;
	int status = 0;

	setprogname_(argv[0]);
	parse_args(argc, argv, &o);
	model_path = need_model(o.model, synopsis);
	/* The prompt is read before the model loads, so bad input fails fast. */
	if (o.prompt) {
		text = arg_text(o.prompt, o.escape, &req.len);
	} else if (!o.batch) {
		TRY(sa_prompt_read(o.file ? o.file : "-", &text, &req.len));
	}
	cs = arg_texts(o.choices, o.n_choices, o.escape, &cl);
	stops = arg_texts(o.stops, o.n_stop, o.escape, &stop_len);
	o.smp.stop = (const char *const *)stops;
	o.smp.stop_len = stop_len;
	o.smp.n_stop = o.n_stop;
	if (o.system)
		sys = arg_text(o.system, o.escape, &sys_len);

	sa_delta_spec spec = { (const char *const *)o.deltas, o.scales, o.n_deltas, o.demos,
	    o.n_demos, (const char *const *)o.lora, o.lora_scales, o.n_lora };
	sa_deltaset_opts dso = { o.adapter, default_adapter(), o.cache_dir, o.demos_format,
	    o.max_deltas > 0 ? (int)o.max_deltas : 8,
	    o.max_delta_mem > 0 ? (size_t)o.max_delta_mem << 20 : 0 };
	sa_set_threads((int)o.threads);
	t0 = now();
	TRY(sa_model_load(&model, model_path));
	if (!o.no_bos && sa_vocab_check_bos(model->vocab, model->gguf) != SA_OK)
		warnx_("%s", sa_error());
	/* -d, then --demos encoded over the base model, then --lora */
	TRY(sa_delta_spec_apply(model, &spec, &dso, !o.unmerged, note, o.verbose ? note : NULL,
	    NULL));
	/* one session, and with --parallel one for each request in flight */
	for (int i = 0; i < o.parallel; i++)
		TRY(sa_session_new(&ss[i], model, o.n_ctx >= 0 ? ctx_size(o.n_ctx, model) :
		    model->cfg.n_ctx < 4096 ? model->cfg.n_ctx : 4096, !o.no_bos));
	t0 = now() - t0;

	if (o.batch) {
		status = serve(ss, model, &o, &dso);
	} else {
		req = (sa_request){ text, req.len, o.score, (const char *const *)cs, cl, o.n_choices,
		    o.smp, o.tokenize, o.special, msg, 0, o.chat_template };
		/* --chat: the prompt is the user's message, after --system's */
		if (o.chat && sys)
			msg[req.n_msg++] = (sa_chat_msg){ "system", sys, sys_len };
		if (o.chat)
			msg[req.n_msg++] = (sa_chat_msg){ "user", text, req.len };
		out.json = o.json;
		out.echo = o.echo;
		TRY(sa_request_run(ss[0], &req, &out));
		/* The text ends where it ends; where the timings follow it on
		 * one file, they start a line of their own. */
		if (o.verbose && out.last && out.last != '\n' && same_file(1, 2))
			fputc('\n', stderr);
	}

	if (o.verbose)
		report(ss, t0, &o);
	close_stdout();
	for (int i = 0; i < o.parallel; i++)
		sa_session_free(ss[i]);
	sa_model_free(model);
	free(text);
	free(sys);
	free_strs(cs, o.n_choices);
	free_strs(stops, o.n_stop);
	free_strs(o.deltas, o.n_deltas);
	free_strs(o.lora, o.n_lora);
	free(cl);
	free(stop_len);
	free(o.scales);
	free(o.lora_scales);
	free(o.choices);
	free(o.stops);
	free(o.demos);
	return status;
}
