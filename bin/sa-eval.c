/*
 * sa-eval - the project's results: accuracy of zero-shot, in-context
 * learning and StreamAdapter on tasks, with the per-query cost of each;
 * perplexity of held-out text with and without its preceding context; and
 * recall of random mappings as the number of pairs grows.  The protocol is
 * libsa's (lib/evaluate.c); this tool prints its tables and its records.
 */
#include <getopt.h>

#include "tool.h"

static const char synopsis[] =
    "usage: sa-eval [-m MODEL] [-a ADAPTER] --task DIR... [--seen LIST] [--unseen LIST]\n"
    "               [--split-file FILE] [-k N] [-K N] [--split test|dev] [--limit N]\n"
    "               [--max-labels N] [--rename swap|pool [--pool DIR]] [-s N] [--jsonl FILE]\n"
    "               [-t N] [-q | -v]\n"
    "       sa-eval [-m MODEL] [-a ADAPTER] --text FILE... [--segment N] [--many M] [--limit N]\n"
    "       sa-eval [-m MODEL] [-a ADAPTER]... --map --pool DIR [--pairs LIST] [--repeat N]\n"
    "               [--episodes N] [--icl-layout records|text] [--limit N] [--csv FILE]\n";

static void
help(void)
{
	fputs(synopsis, stdout);
	fputs("\n"
	    "Tasks (default): accuracy per task of zero-shot, ICL with k demonstrations,\n"
	    "StreamAdapter with a delta of the same k, and with K; then per-query cost.\n"
	    "  -m, --model FILE      base model (default: $SA_MODEL, else the installed one)\n"
	    "  -a, --adapter FILE    adapter of that model (default: $SA_ADAPTER, else the installed\n"
	    "                        one; repeatable with --map)\n"
	    "      --task DIR        DIR/train.tsv, DIR/test.tsv, DIR/dev.tsv (repeatable)\n"
	    "      --seen LIST       comma-separated names of tasks the adapter was trained on\n"
	    "      --unseen LIST     names of tasks it never saw\n"
	    "      --split-file FILE seen/unseen (and kind) per task: see sa-eval(1)\n"
	    "  -k, --shots N         demonstrations for ICL and the delta (default 16)\n"
	    "  -K, --many-shots N    demonstrations for the large delta (default: 4 times\n"
	    "                        those that fit in the context)\n"
	    "      --split NAME      queries from test (default) or dev\n"
	    "      --limit N         at most N queries per task (passages, queries per episode)\n"
	    "      --max-labels N    classify a task with at most N labels (default 32)\n"
	    "      --max-new N       tokens to generate per answer (default 32)\n"
	    "      --rename swap|pool  other label words for classification tasks: each\n"
	    "                        class the next one's (two classes swap), or words\n"
	    "                        of --pool DIR's labels.txt\n"
	    "  -s, --seed N          draw of the demonstrations (default 1)\n"
	    "      --scale X         delta scale (default 1)\n"
	    "      --jsonl FILE      one JSON object per query and method\n"
	    "\n"
	    "Text: perplexity of each segment given nothing, the previous segment in the\n"
	    "prompt, a delta of the previous segment, a delta of the M previous ones,\n"
	    "the segment itself in the prompt, a delta of the segment itself.\n"
	    "      --text FILE       held-out text, plain or gzip (repeatable)\n"
	    "      --segment N       tokens per segment (default 128)\n"
	    "      --many M          segments in the large delta (default 8)\n"
	    "\n"
	    "Random mappings: recall of n word -> label pairs shown in the context.\n"
	    "      --map             this mode\n"
	    "      --pool DIR        DIR/words.txt and DIR/labels.txt\n"
	    "      --pairs LIST      numbers of pairs (default 1,2,4,8,16,32,64,128,256)\n"
	    "      --repeat N        times each pair is shown (default 1)\n"
	    "      --episodes N      mappings drawn per number of pairs (default 4)\n"
	    "      --icl-layout L    ICL's prompt: the encoder's records (default), or\n"
	    "                        text: records and query as one text, as sa-run -p has it\n"
	    "      --csv FILE        the table as CSV (for scripts/plot-map.gp)\n"
	    "\n"
	    "  -t, --threads N       threads (default: all CPUs)\n"
	    "  -q, --quiet           no progress\n"
	    "  -v, --verbose         what each task's demonstrations and deltas hold\n"
	    "  -h, --help            this help\n"
	    "  -V, --version         version\n", stdout);
}

static struct {
	sa_eval_opts eo;
	const char *jsonl, *csv;
	char **adapters, **tasks, **texts;   /* [argc] each */
	int n_adapters, n_tasks, n_texts;
	int *pairs;
	int what, quiet, verbose, progress;
	sa_eval_report report;
} opt;

static void
parse_pairs(char *s)
{
	char *tok, *save = NULL;
	int n = 0;

	free(opt.pairs);
	if (!(opt.pairs = calloc(strlen(s) / 2 + 1, sizeof *opt.pairs)))
		die(SA_EINTERNAL, "out of memory");
	for (tok = strtok_r(s, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
		opt.pairs[n++] = (int)parse_long("--pairs", tok, 1, 1 << 20);
	if (!n)
		usage_die(synopsis, "--pairs: empty list");
	opt.eo.pairs = opt.pairs;
	opt.eo.n_pairs = n;
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
	if (verbose ? opt.verbose : !opt.quiet)
		warnx_("%s", msg);
}

/* A query: the progress, and its line of --jsonl. */
static void
record(void *ctx, const sa_eval_record *r)
{
	const char *base;

	if (opt.what == SA_EVAL_MAP)
		progress("%d pairs, episode %d/%d: %s %d/%d", r->pairs, r->episode + 1,
		    opt.eo.episodes, r->method, r->i + 1, r->n);
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
	enum { O_TASK = 256, O_SEEN, O_UNSEEN, O_SPLITFILE, O_SPLIT, O_LIMIT, O_MAXLABELS,
	    O_MAXNEW, O_SCALE, O_JSONL, O_TEXT, O_SEGMENT, O_MANY, O_MAP, O_POOL, O_RENAME, O_PAIRS,
	    O_REPEAT, O_EPISODES, O_CSV, O_LAYOUT };
	static const struct option longopts[] = {
		ARG("model", 'm'), ARG("adapter", 'a'), ARG("task", O_TASK), ARG("seen", O_SEEN),
		ARG("unseen", O_UNSEEN), ARG("split-file", O_SPLITFILE), ARG("split", O_SPLIT),
		ARG("limit", O_LIMIT), ARG("max-labels", O_MAXLABELS), ARG("max-new", O_MAXNEW),
		ARG("seed", 's'), ARG("shots", 'k'), ARG("many-shots", 'K'), ARG("scale", O_SCALE),
		ARG("jsonl", O_JSONL), ARG("text", O_TEXT), ARG("segment", O_SEGMENT),
		ARG("many", O_MANY), FLAG("map", O_MAP), ARG("pool", O_POOL), ARG("rename", O_RENAME),
		ARG("pairs", O_PAIRS), ARG("repeat", O_REPEAT), ARG("episodes", O_EPISODES),
		ARG("icl-layout", O_LAYOUT), ARG("csv", O_CSV), ARG("threads", 't'), FLAG("quiet", 'q'), FLAG("verbose", 'v'),
		OPTIONS_END,
	};
	sa_eval_opts *eo = &opt.eo;
	sa_eval_hooks hooks = { .start = start, .record = record, .row = row, .note = note };
	const char *model_path = NULL;
	sa_model *model;
	sa_adapter **adapters;
	sa_eval_table *table;
	int c, map, modes, rc;

	setprogname_(argv[0]);
	sa_eval_opts_default(eo);
	if (!(opt.adapters = calloc((size_t)argc + 1, sizeof(char *))) ||
	    !(opt.tasks = calloc((size_t)argc, sizeof(char *))) ||
	    !(opt.texts = calloc((size_t)argc, sizeof(char *))))
		die(SA_EINTERNAL, "out of memory");
	while ((c = getopt_long(argc, argv, "m:a:k:K:s:t:qvhV", longopts, NULL)) != -1) {
		switch (c) {
		case 'm': model_path = optarg; break;
		case 'a': opt.adapters[opt.n_adapters++] = optarg; break;
		case O_TASK: opt.tasks[opt.n_tasks++] = optarg; break;
		case O_SEEN: eo->seen = optarg; break;
		case O_UNSEEN: eo->unseen = optarg; break;
		case O_SPLITFILE: eo->split_file = optarg; break;
		case O_SPLIT:
			if (strcmp(optarg, "test") && strcmp(optarg, "dev"))
				usage_die(synopsis, "--split: want test or dev, not '%s'", optarg);
			eo->split = optarg;
			break;
		case 'k': eo->k = (int)parse_long("--shots", optarg, 1, 1 << 20); break;
		case 'K': eo->K = (int)parse_long("--many-shots", optarg, 1, 1 << 24); break;
		case O_LIMIT: eo->limit = (int)parse_long("--limit", optarg, 1, INT_MAX); break;
		case O_MAXLABELS: eo->max_labels = (int)parse_long("--max-labels", optarg, 1, 1 << 16); break;
		case O_MAXNEW: eo->max_new = (int)parse_long("--max-new", optarg, 1, 1 << 16); break;
		case 's': eo->seed = (uint64_t)parse_long("--seed", optarg, 0, LONG_MAX); break;
		case O_SCALE: eo->scale = parse_double("--scale", optarg, -1e6, 1e6); break;
		case O_JSONL: opt.jsonl = optarg; break;
		case O_TEXT: opt.texts[opt.n_texts++] = optarg; break;
		case O_SEGMENT: eo->segment = (int)parse_long("--segment", optarg, 2, 1 << 20); break;
		case O_MANY: eo->many = (int)parse_long("--many", optarg, 1, 1 << 16); break;
		case O_MAP: opt.what = SA_EVAL_MAP; break;
		case O_POOL: eo->pool = optarg; break;
		case O_RENAME:
			if (strcmp(optarg, "swap") && strcmp(optarg, "pool"))
				usage_die(synopsis, "--rename: 'swap' or 'pool', not '%s'", optarg);
			eo->rename = strcmp(optarg, "swap") ? SA_RENAME_POOL : SA_RENAME_SWAP;
			break;
		case O_PAIRS: parse_pairs(optarg); break;
		case O_REPEAT: eo->repeat = (int)parse_long("--repeat", optarg, 1, 64); break;
		case O_EPISODES: eo->episodes = (int)parse_long("--episodes", optarg, 1, 1 << 20); break;
		case O_LAYOUT:
			if (strcmp(optarg, "records") && strcmp(optarg, "text"))
				usage_die(synopsis, "--icl-layout: records or text, not '%s'", optarg);
			eo->icl_text = !strcmp(optarg, "text");
			break;
		case O_CSV: opt.csv = optarg; break;
		case 't': sa_set_threads((int)parse_long("--threads", optarg, 1, 1024)); break;
		case 'q': opt.quiet = 1; opt.verbose = 0; break;
		case 'v': opt.verbose = 1; opt.quiet = 0; break;
		case 'h': help(); close_stdout(); return 0;
		case 'V': puts("sa-eval " SA_VERSION); close_stdout(); return 0;
		default: usage_die(synopsis, NULL);
		}
	}
	for (int i = optind; i < argc; i++)
		opt.tasks[opt.n_tasks++] = argv[i];
	map = opt.what == SA_EVAL_MAP;
	modes = (opt.n_tasks > 0) + (opt.n_texts > 0) + map;
	if (modes != 1)
		usage_die(synopsis, modes ? "--task, --text and --map are separate runs" : "nothing to evaluate: give --task, --text or --map");
	if (!opt.n_adapters)
		opt.adapters[opt.n_adapters++] = (char *)need_adapter(NULL, synopsis);
	if (opt.n_texts)
		opt.what = SA_EVAL_TEXT;
	if (!map && opt.n_adapters > 1)
		usage_die(synopsis, "several adapters are compared only with --map");
	if (map && !eo->pool)
		usage_die(synopsis, "--map needs --pool DIR");
	if (opt.csv && !map)
		usage_die(synopsis, "--csv goes with --map");
	if (opt.jsonl && strcmp(opt.jsonl, "-") == 0)
		usage_die(synopsis, "--jsonl: give a file name (the standard output holds the tables)");
	if (opt.csv && strcmp(opt.csv, "-") == 0)
		usage_die(synopsis, "--csv: give a file name (the standard output holds the tables)");
	if (opt.n_adapters > 64)
		usage_die(synopsis, "at most 64 adapters");
	if (sa_eval_opts_check(eo) != SA_OK)
		usage_die(synopsis, "%s", sa_error());
	model_path = need_model(model_path, synopsis);
	opt.progress = !opt.quiet && isatty(2);
	opt.report = (sa_eval_report){ .out = stdout, .what = opt.what, .many = eo->many };

	TRY(sa_model_load(&model, model_path));
	if (!(adapters = calloc((size_t)opt.n_adapters, sizeof *adapters)))
		die(SA_EINTERNAL, "out of memory");
	for (int i = 0; i < opt.n_adapters; i++) {
		TRY(sa_adapter_load(&adapters[i], opt.adapters[i]));
		TRY(sa_adapter_check(adapters[i], model));
	}
	atexit(abort_outputs);
	sa_outfile_install_signals();
	if (opt.jsonl)
		TRY(sa_outfile_open(&out_jsonl, opt.jsonl));
	if (opt.csv)
		TRY(sa_outfile_open(&out_csv, opt.csv));
	opt.report.csv = out_csv.fp;

	if (opt.n_tasks)
		rc = sa_eval_tasks(&table, model, adapters[0], opt.tasks, opt.n_tasks, eo, &hooks);
	else if (opt.n_texts)
		rc = sa_eval_text(&table, model, adapters[0], opt.texts, opt.n_texts, eo, &hooks);
	else
		rc = sa_eval_map(&table, model, adapters, opt.n_adapters, eo, &hooks);
	if (rc == SA_EUSAGE)
		usage_die(synopsis, "%s", sa_error());
	TRY(rc);
	sa_eval_report_end(&opt.report, table);

	if (out_jsonl.fp)
		TRY(sa_outfile_commit(&out_jsonl));
	if (out_csv.fp)
		TRY(sa_outfile_commit(&out_csv));
	sa_eval_table_free(table);
	for (int i = 0; i < opt.n_adapters; i++)
		sa_adapter_free(adapters[i]);
	free(adapters);
	sa_model_free(model);
	close_stdout();
	return 0;
}
