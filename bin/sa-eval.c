/*
 * sa-eval - the project's results: accuracy of zero-shot, in-context
 * learning and StreamAdapter on tasks, with the per-query cost of each;
 * perplexity of held-out text with and without its preceding context; and
 * recall of random mappings as the number of pairs grows.  The protocol is
 * libsa's (lib/evaluate.c); this tool prints its tables and its records.
 */

#define TOOL "sa-eval"
#include "tool.h"

static const char synopsis[] =
    "usage: sa-eval [-m MODEL] [-a ADAPTER] --task DIR... [--seen LIST] [--unseen LIST]\n"
    "               [--split-file FILE] [-k N] [-K N] [--split test|dev] [--limit N]\n"
    "               [--max-labels N] [--rename swap|pool [--pool DIR]] [-s N] [--jsonl FILE]\n"
    "               [-t N] [-q | -v]\n"
    "       sa-eval [-m MODEL] [-a ADAPTER] --text FILE... [--segment N] [--many M] [--skip N]\n"
    "               [--limit N] [--jsonl FILE]\n"
    "       sa-eval [-m MODEL] [-a ADAPTER]... --map --pool DIR [--pairs LIST] [--repeat N]\n"
    "               [--episodes N] [--queries N] [--icl-layout records|text] [--limit N]\n"
    "               [--csv FILE] [--jsonl FILE]\n";

static struct {
	sa_eval_opts eo;
	const char *jsonl, *csv;
	tool_list adapters, tasks, texts;
	int *pairs;
	int what, verbose, progress;   /* verbose -1: quiet */
	sa_eval_report report;
} opt;

static void
parse_pairs(const char *list)
{
	char *s, *tok, *save = NULL;
	int n = 0;

	free(opt.pairs);
	if (!(s = strdup(list)) || !(opt.pairs = calloc(strlen(s) / 2 + 1, sizeof *opt.pairs)))
		die(SA_EINTERNAL, "out of memory");
	for (tok = strtok_r(s, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
		opt.pairs[n++] = (int)parse_long("--pairs", tok, 1, 1 << 20);
	free(s);
	if (!n)
		usage_die(synopsis, "--pairs: empty list");
	opt.eo.pairs = opt.pairs;
	opt.eo.n_pairs = n;
}

enum { O_SPLIT, O_RENAME, O_PAIRS, O_LAYOUT };

/* The options that are more than a value to keep. */
static void
opt_call(void *ctx, const tool_opt *t, const char *arg)
{
	sa_eval_opts *eo = ctx;

	switch (t->val) {
	case O_SPLIT:
		if (strcmp(arg, "test") && strcmp(arg, "dev"))
			usage_die(synopsis, "--split: want test or dev, not '%s'", arg);
		eo->split = arg;
		break;
	case O_RENAME:
		if (strcmp(arg, "swap") && strcmp(arg, "pool"))
			usage_die(synopsis, "--rename: 'swap' or 'pool', not '%s'", arg);
		eo->rename = strcmp(arg, "swap") ? SA_RENAME_POOL : SA_RENAME_SWAP;
		break;
	case O_PAIRS: parse_pairs(arg); break;
	case O_LAYOUT:
		if (strcmp(arg, "records") && strcmp(arg, "text"))
			usage_die(synopsis, "--icl-layout: records or text, not '%s'", arg);
		eo->icl_text = !strcmp(arg, "text");
		break;
	}
}

/* The options, and the operands: tasks. */
static void
parse_args(int argc, char **argv, const char **model_path, int *threads)
{
	sa_eval_opts *eo = &opt.eo;
	const tool_opt table[] = {
		TEXT("\nTasks (default): accuracy per task of zero-shot, ICL with k demonstrations,\n"
		    "StreamAdapter with a delta of the same k, and with K; then per-query cost."),
		{ "model", 'm', "FILE", STR(model_path),
		    "base model (default: $SA_MODEL, else the installed one)" },
		{ "adapter", 'a', "FILE", LIST(&opt.adapters), "adapter of that model (default: $SA_ADAPTER,\n"
		    "else the installed one; repeatable with --map)" },
		{ "task", 0, "DIR", LIST(&opt.tasks), "DIR/train.tsv, DIR/test.tsv, DIR/dev.tsv (repeatable)" },
		{ "seen", 0, "LIST", STR(&eo->seen),
		    "comma-separated names of tasks the adapter was\ntrained on" },
		{ "unseen", 0, "LIST", STR(&eo->unseen), "names of tasks it never saw" },
		{ "split-file", 0, "FILE", STR(&eo->split_file), "seen/unseen (and kind) per task: see sa-eval(1)" },
		{ "split", 0, "NAME", CALL(O_SPLIT), "queries from test (default) or dev" },
		{ "limit", 0, "N", NUM(&eo->limit, 1, INT_MAX),
		    "at most N queries per task (passages, queries per\nepisode)" },
		{ "max-labels", 0, "N", NUM(&eo->max_labels, 1, 1 << 16),
		    "classify a task with at most N labels (default 32)" },
		{ "max-new", 0, "N", NUM(&eo->max_new, 1, 1 << 16), "tokens to generate per answer (default 32)" },
		{ "rename", 0, "swap|pool", CALL(O_RENAME), "other label words for classification tasks: each\n"
		    "class the next one's (two classes swap), or words\nof --pool DIR's labels.txt" },
		{ "seed", 's', "N", NUM(&eo->seed, 0, LONG_MAX), "draw of the demonstrations (default 1)" },
		{ "shots", 'k', "N", NUM(&eo->k, 1, 1 << 20),
		    "demonstrations for ICL and the delta (default 16)" },
		{ "many-shots", 'K', "N", NUM(&eo->K, 1, 1 << 24), "demonstrations for the large delta (default:\n"
		    "4 times those that fit in the context)" },
		{ "scale", 0, "X", NUM(&eo->scale, -1e6, 1e6), "delta scale (default 1)" },
		{ "jsonl", 0, "FILE", STR(&opt.jsonl), "one JSON object per query and method" },
		TEXT("\nText: perplexity of each segment given nothing, the previous segment in the\n"
		    "prompt, a delta of the previous segment, a delta of the M previous ones,\n"
		    "the segment itself in the prompt, a delta of the segment itself."),
		{ "text", 0, "FILE", LIST(&opt.texts), "held-out text, plain or gzip (repeatable)" },
		{ "segment", 0, "N", NUM(&eo->segment, 2, 1 << 20), "tokens per segment (default 128)" },
		{ "many", 0, "M", NUM(&eo->many, 1, 1 << 16), "segments in the large delta (default 8)" },
		{ "skip", 0, "N", NUM(&eo->skip, 0, 1 << 24), "passages left out before the first scored (0)" },
		TEXT("\nRandom mappings: recall of n word -> label pairs shown in the context."),
		{ "map", 0, NULL, FLAG(&opt.what, SA_EVAL_MAP), "this mode" },
		{ "pool", 0, "DIR", STR(&eo->pool), "DIR/words.txt and DIR/labels.txt" },
		{ "pairs", 0, "LIST", CALL(O_PAIRS), "numbers of pairs (default 1,2,4,8,16,32,64,128,256)" },
		{ "repeat", 0, "N", NUM(&eo->repeat, 1, 64), "times each pair is shown (default 1)" },
		{ "episodes", 0, "N", NUM(&eo->episodes, 1, 1 << 20), "mappings drawn per number of pairs (default 4)" },
		{ "queries", 0, "N", NUM(&eo->queries, 0, 1 << 24), "at least N queries a number of pairs: more\n"
		    "episodes where it has fewer pairs (default 0)" },
		{ "icl-layout", 0, "L", CALL(O_LAYOUT), "ICL's prompt: the encoder's records (default), or\n"
		    "text: records and query as one text, as sa-run -p\nhas it" },
		{ "csv", 0, "FILE", STR(&opt.csv), "the table as CSV (for scripts/plot-map.gp)" },
		TEXT(""),
		{ "threads", 't', "N", NUM(threads, 1, 1024), "threads (default: all CPUs)" },
		{ "quiet", 'q', NULL, FLAG(&opt.verbose, -1), "no progress" },
		{ "verbose", 'v', NULL, FLAG(&opt.verbose, 1), "what each task's demonstrations and deltas hold" },
		OPTIONS_END,
	};

	sa_eval_opts_default(eo);
	for (int i = opts_parse(argc, argv, table, synopsis, opt_call, eo); i < argc; i++)
		list_push(&opt.tasks, argv[i]);
}

/* Files written through sa_outfile: dropped if the run dies before the end. */
static sa_outfile out_jsonl, out_csv;

static void
abort_outputs(void)
{
	if (out_jsonl.fp)
		sa_outfile_abort(&out_jsonl);
	if (out_csv.fp)
		sa_outfile_abort(&out_csv);
}

static void
progress(const char *fmt, ...)
{
	va_list ap;

	if (!opt.progress)
		return;
	fprintf(stderr, "\r%s: ", argv0);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\033[K", stderr);
}

static void
note(void *ctx, int verbose, const char *msg)
{
	if (verbose ? opt.verbose > 0 : opt.verbose >= 0)
		warnx_("%s", msg);
}

/* A query: the progress, and its line of --jsonl. */
static void
record(void *ctx, const sa_eval_record *r)
{
	const char *base;

	if (opt.what == SA_EVAL_MAP)
		progress("%d pairs, episode %d/%d: %s %d/%d", r->pairs, r->episode + 1,
		    r->episodes, r->method, r->i + 1, r->n);
	else if (opt.what == SA_EVAL_TEXT)
		progress("%s: passage %d/%d: %s", (base = strrchr(r->task, '/')) ? base + 1 : r->task,
		    r->i + 1, r->n, r->method);
	else
		progress("%s: %s %d/%d", r->task, r->method, r->i + 1, r->n);
	if (out_jsonl.fp)
		sa_eval_record_print(out_jsonl.fp, r, opt.what);
}

/* The tables: their header before the first query, then each row once scored. */
static void
start(void *ctx, const sa_eval_table *t)
{
	sa_eval_report_start(&opt.report, t);
}

static void
row(void *ctx, const sa_eval_table *t, int i)
{
	if (opt.progress)
		fputs("\r\033[K", stderr);
	sa_eval_report_row(&opt.report, t, i);
}

int
main(int argc, char **argv)
{
	sa_eval_opts *eo = &opt.eo;
	sa_eval_hooks hooks = { .start = start, .record = record, .row = row, .note = note };
	const char *model_path = NULL;
	sa_model *model;
	sa_adapter **adapters;
	sa_eval_table *table;
	int map, modes, rc, threads = 0;

	setprogname_(argv[0]);
	parse_args(argc, argv, &model_path, &threads);
	map = opt.what == SA_EVAL_MAP;
	modes = (opt.tasks.n > 0) + (opt.texts.n > 0) + map;
	if (modes != 1)
		usage_die(synopsis, modes ? "--task, --text and --map are separate runs" : "nothing to evaluate: give --task, --text or --map");
	if (!opt.adapters.n)
		list_push(&opt.adapters, need_input(INPUT_ADAPTER, NULL, synopsis));
	if (opt.texts.n)
		opt.what = SA_EVAL_TEXT;
	if (!map && opt.adapters.n > 1)
		usage_die(synopsis, "several adapters are compared only with --map");
	if (map && !eo->pool)
		usage_die(synopsis, "--map needs --pool DIR");
	if (opt.csv && !map)
		usage_die(synopsis, "--csv goes with --map");
	if (opt.jsonl && strcmp(opt.jsonl, "-") == 0)
		usage_die(synopsis, "--jsonl: give a file name (the standard output holds the tables)");
	if (opt.csv && strcmp(opt.csv, "-") == 0)
		usage_die(synopsis, "--csv: give a file name (the standard output holds the tables)");
	if (opt.adapters.n > 64)
		usage_die(synopsis, "at most 64 adapters");
	if (sa_eval_opts_check(eo) != SA_OK)
		usage_die(synopsis, "%s", sa_error());
	model_path = need_input(INPUT_MODEL, model_path, synopsis);
	opt.progress = opt.verbose >= 0 && isatty(2);
	opt.report = (sa_eval_report){ .out = stdout, .what = opt.what, .many = eo->many };

	if (threads)
		sa_set_threads(threads);
	TRY(sa_model_load(&model, model_path));
	if (!(adapters = calloc((size_t)opt.adapters.n, sizeof *adapters)))
		die(SA_EINTERNAL, "out of memory");
	for (int i = 0; i < opt.adapters.n; i++) {
		TRY(sa_adapter_load(&adapters[i], opt.adapters.v[i]));
		TRY(sa_adapter_check(adapters[i], model));
	}
	atexit(abort_outputs);
	sa_outfile_install_signals();
	if (opt.jsonl)
		TRY(sa_outfile_open(&out_jsonl, opt.jsonl));
	if (opt.csv)
		TRY(sa_outfile_open(&out_csv, opt.csv));
	opt.report.csv = out_csv.fp;

	if (opt.tasks.n)
		rc = sa_eval_tasks(&table, model, adapters[0], (char *const *)opt.tasks.v, opt.tasks.n,
		    eo, &hooks);
	else if (opt.texts.n)
		rc = sa_eval_text(&table, model, adapters[0], (char *const *)opt.texts.v, opt.texts.n,
		    eo, &hooks);
	else
		rc = sa_eval_map(&table, model, adapters, opt.adapters.n, eo, &hooks);
	if (rc == SA_EUSAGE)
		usage_die(synopsis, "%s", sa_error());
	TRY(rc);
	sa_eval_report_end(&opt.report, table);

	if (out_jsonl.fp)
		TRY(sa_outfile_commit(&out_jsonl));
	if (out_csv.fp)
		TRY(sa_outfile_commit(&out_csv));
	sa_eval_table_free(table);
	for (int i = 0; i < opt.adapters.n; i++)
		sa_adapter_free(adapters[i]);
	free(adapters);
	sa_model_free(model);
	close_stdout();
	return 0;
}
