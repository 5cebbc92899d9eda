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
    "               [--episodes N] [--limit N] [--csv FILE]\n";

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
	int map, quiet, verbose, progress;
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

/* "key":"s", after a comma unless it comes first */
static void
json_str(FILE *fp, int first, const char *key, const char *s)
{
	fprintf(fp, "%s\"%s\":", first ? "" : ",", key);
	sa_json_put_str(fp, s, strlen(s));
}

/* A query: the progress, and its line of --jsonl. */
static void
record(void *ctx, const sa_eval_record *r)
{
	FILE *fp = out_jsonl.fp;
	const char *base = opt.n_texts && strrchr(r->task, '/') ? strrchr(r->task, '/') + 1 : r->task;

	if (opt.map)
		progress("%d pairs, episode %d/%d: %s %d/%d", r->pairs, r->episode + 1,
		    opt.eo.episodes, r->method, r->i + 1, r->n);
	else if (opt.n_texts)
		progress("%s: passage %d/%d: %s", base, r->i + 1, r->n, r->method);
	else
		progress("%s: %s %d/%d", r->task, r->method, r->i + 1, r->n);
	if (!fp)
		return;
	fputc('{', fp);
	if (opt.map)
		fprintf(fp, "\"pairs\":%d,\"episode\":%d", r->pairs, r->episode);
	else
		json_str(fp, 1, opt.n_texts ? "text" : "task", r->task);
	json_str(fp, 0, "method", r->method);
	if (opt.n_tasks)
		fprintf(fp, ",\"k\":%d", r->k);
	fprintf(fp, ",\"index\":%d", r->index);
	if (opt.n_texts) {
		fprintf(fp, ",\"tokens\":%d,\"logprob\":", r->tokens);
		sa_json_put_num(fp, r->logprob);
	} else {
		if (opt.map)
			json_str(fp, 0, "input", r->input);
		json_str(fp, 0, "gold", r->gold);
		json_str(fp, 0, "prediction", r->prediction);
		fprintf(fp, ",\"correct\":%s", r->correct ? "true" : "false");
	}
	fputs(",\"time\":", fp);
	sa_json_put_num(fp, r->time);
	if (opt.n_tasks)
		fprintf(fp, ",\"kv_bytes\":%zu", r->kv_bytes);
	fputs("}\n", fp);
}

/* -------------------------------------------------------------- tables */

static int k_same = 1;          /* every task used the same k, */
static char k_used[16];         /* "=k" then */
static char head[8][64], name[8][64];   /* tasks, text: the methods' titles */

/* Method m in the first table, or in the cost table. */
static const char *
title(const sa_eval_table *t, int m, int cost)
{
	return opt.map ? t->method[m] : cost && opt.n_tasks ? name[m] : head[m];
}

/* The header of the first table (and the CSV), before the first query. */
static void
start(void *ctx, const sa_eval_table *t)
{
	static const char *const task_head[] = { "zero-shot", "ICL k%s", "SA k%s", "SA K" },
	    *task_name[] = { "zero-shot", "ICL (k%s)", "StreamAdapter (k%s)", "StreamAdapter (K)" },
	    *text_head[] = { "no context", "previous in prompt", "delta of previous",
	    "delta of %d previous", "itself in prompt", "delta of itself" };
	int n = t->n_methods;

	for (int i = 0; opt.n_tasks && i < t->n_rows; i++)
		k_same &= t->row[i].k == t->row[0].k;
	/* the k of the header is the one every task used, else a column says */
	if (opt.n_tasks && k_same)
		snprintf(k_used, sizeof k_used, "=%d", t->row[0].k);
	for (int m = 0; m < n && opt.n_tasks; m++) {
		snprintf(head[m], 64, task_head[m], k_used);
		snprintf(name[m], 64, task_name[m], k_used);
	}
	for (int m = 0; m < n && opt.n_texts; m++)
		snprintf(head[m], 64, text_head[m], opt.eo.many);
	fputs(opt.map ? "| pairs | records | tokens |" : opt.n_texts ? "| text | passages | tokens |"
	    : "| task | set | kind | queries |", stdout);
	for (int m = 0; m < n; m++)
		printf(" %s |", title(t, m, 0));
	if (opt.n_tasks)
		fputs(k_same ? " K |" : " k | K |", stdout);
	fputs(opt.map ? "\n|---:|---:|---:|" : opt.n_texts ? "\n|---|---:|---:|" : "\n|---|---|---|---:|",
	    stdout);
	for (int m = 0; m < n + (opt.n_tasks ? 2 - k_same : 0); m++)
		fputs("---:|", stdout);
	putchar('\n');
	fflush(stdout);
	if (!out_csv.fp)
		return;
	fputs("pairs,records,tokens", out_csv.fp);
	for (int m = 0; m < n; m++) {
		/* a header without commas or quotes: gnuplot reads it as a title */
		fputc(',', out_csv.fp);
		for (const char *p = t->method[m]; *p; p++)
			fputc(*p == ',' || *p == '"' ? '_' : *p, out_csv.fp);
	}
	fputc('\n', out_csv.fp);
}

/* Row i, once scored. */
static void
row(void *ctx, const sa_eval_table *t, int i)
{
	const sa_eval_row *r = &t->row[i];
	FILE *csv = out_csv.fp;

	if (opt.progress)
		fputs("\r\033[K", stderr);
	if (opt.map)
		printf("| %d | %d | %.0f |", r->n, r->records, r->tokens);
	else if (opt.n_texts)
		printf("| %s | %d | %ld |", r->name, r->n, (long)r->tokens);
	else
		printf("| %s | %s | %s | %d |", r->name, r->set < 0 ? "-" : r->set ? "seen" : "unseen",
		    r->kind == SA_KIND_CLASS ? "class" : "gen", r->n);
	if (csv)
		fprintf(csv, "%d,%d,%.0f", r->n, r->records, r->tokens);
	for (int m = 0; m < t->n_methods; m++) {
		if (isnan(r->score[m]))
			fputs(" n/a |", stdout);
		else
			printf(" %.*f |", opt.n_texts ? 3 : 1, r->score[m]);
		if (csv)
			fprintf(csv, isnan(r->score[m]) ? "," : ",%.2f", r->score[m]);
	}
	if (opt.n_tasks && !k_same)
		printf(" %d |", r->k);
	if (opt.n_tasks)
		printf(" %d |", r->K);
	putchar('\n');
	if (csv)
		fputc('\n', csv);
	fflush(stdout);
}

/* The means over the seen, the unseen (and all) tasks. */
static void
means(const sa_eval_table *t)
{
	static const char *const label[] = { "all (avg)", "unseen (avg)", "seen (avg)" };
	int any_none = 0, any_partial = 0;

	for (int i = 0; i < t->n_rows; i++)
		any_none |= t->row[i].set < 0;
	for (int set = 1; set >= (any_none ? -1 : 0); set--) {
		int n, partial;
		sa_eval_mean(t, set, 0, &n, &partial);
		printf("| %s | | | %d tasks |", label[set + 1], n);
		for (int m = 0; m < t->n_methods; m++) {
			double a = sa_eval_mean(t, set, m, &n, &partial);
			if (isnan(a))
				fputs(" n/a |", stdout);
			else
				printf(" %.1f%s |", a, partial ? "*" : "");
			any_partial |= !isnan(a) && partial;
		}
		fputs(k_same ? " |\n" : " | |\n", stdout);
	}
	if (any_partial)
		puts("\n\\* mean over the tasks where the method applies (ICL: where k demonstrations fit the context).");
}

/* What each method spent. */
static void
costs(const sa_eval_table *t)
{
	const char *unit = opt.n_texts ? "passage" : "query";

	printf("\n| method | time/%s (ms) | KV cache/%s (KiB) | prompt tokens/%s | encode+merge (ms/delta) |\n"
	    "|---|---:|---:|---:|---:|\n", unit, unit, unit);
	for (int m = 0; m < t->n_methods; m++) {
		const sa_eval_cost *c = &t->cost[m];
		printf("| %s |", title(t, m, 1));
		if (!c->n)
			fputs(" n/a | n/a | n/a |", stdout);
		else
			printf(" %.2f | %.1f | %.1f |", c->time / c->n * 1e3, c->kv / c->n / 1024,
			    c->prompt / c->n);
		if (c->n_enc)
			printf(" %.1f |\n", c->enc_time / c->n_enc * 1e3);
		else
			fputs(" |\n", stdout);
	}
}

int
main(int argc, char **argv)
{
	enum { O_TASK = 256, O_SEEN, O_UNSEEN, O_SPLITFILE, O_SPLIT, O_LIMIT, O_MAXLABELS,
	    O_MAXNEW, O_SCALE, O_JSONL, O_TEXT, O_SEGMENT, O_MANY, O_MAP, O_POOL, O_RENAME, O_PAIRS,
	    O_REPEAT, O_EPISODES, O_CSV };
	static const struct option longopts[] = {
		{ "model", required_argument, NULL, 'm' },
		{ "adapter", required_argument, NULL, 'a' },
		{ "task", required_argument, NULL, O_TASK },
		{ "seen", required_argument, NULL, O_SEEN },
		{ "unseen", required_argument, NULL, O_UNSEEN },
		{ "split-file", required_argument, NULL, O_SPLITFILE },
		{ "split", required_argument, NULL, O_SPLIT },
		{ "limit", required_argument, NULL, O_LIMIT },
		{ "max-labels", required_argument, NULL, O_MAXLABELS },
		{ "max-new", required_argument, NULL, O_MAXNEW },
		{ "seed", required_argument, NULL, 's' },
		{ "shots", required_argument, NULL, 'k' },
		{ "many-shots", required_argument, NULL, 'K' },
		{ "scale", required_argument, NULL, O_SCALE },
		{ "jsonl", required_argument, NULL, O_JSONL },
		{ "text", required_argument, NULL, O_TEXT },
		{ "segment", required_argument, NULL, O_SEGMENT },
		{ "many", required_argument, NULL, O_MANY },
		{ "map", no_argument, NULL, O_MAP },
		{ "pool", required_argument, NULL, O_POOL },
		{ "rename", required_argument, NULL, O_RENAME },
		{ "pairs", required_argument, NULL, O_PAIRS },
		{ "repeat", required_argument, NULL, O_REPEAT },
		{ "episodes", required_argument, NULL, O_EPISODES },
		{ "csv", required_argument, NULL, O_CSV },
		{ "threads", required_argument, NULL, 't' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	sa_eval_opts *eo = &opt.eo;
	sa_eval_hooks hooks = { .start = start, .record = record, .row = row, .note = note };
	const char *model_path = NULL;
	sa_model *model;
	sa_adapter **adapters;
	sa_eval_table *table;
	int c, modes, rc;

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
		case O_MAP: opt.map = 1; break;
		case O_POOL: eo->pool = optarg; break;
		case O_RENAME:
			if (strcmp(optarg, "swap") && strcmp(optarg, "pool"))
				usage_die(synopsis, "--rename: 'swap' or 'pool', not '%s'", optarg);
			eo->rename = strcmp(optarg, "swap") ? SA_RENAME_POOL : SA_RENAME_SWAP;
			break;
		case O_PAIRS: parse_pairs(optarg); break;
		case O_REPEAT: eo->repeat = (int)parse_long("--repeat", optarg, 1, 64); break;
		case O_EPISODES: eo->episodes = (int)parse_long("--episodes", optarg, 1, 1 << 20); break;
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
	modes = (opt.n_tasks > 0) + (opt.n_texts > 0) + opt.map;
	if (modes != 1)
		usage_die(synopsis, modes ? "--task, --text and --map are separate runs" : "nothing to evaluate: give --task, --text or --map");
	if (!opt.n_adapters)
		opt.adapters[opt.n_adapters++] = (char *)need_adapter(NULL, synopsis);
	if (!opt.map && opt.n_adapters > 1)
		usage_die(synopsis, "several adapters are compared only with --map");
	if (opt.map && !eo->pool)
		usage_die(synopsis, "--map needs --pool DIR");
	if (opt.csv && !opt.map)
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

	if (opt.n_tasks)
		rc = sa_eval_tasks(&table, model, adapters[0], opt.tasks, opt.n_tasks, eo, &hooks);
	else if (opt.n_texts)
		rc = sa_eval_text(&table, model, adapters[0], opt.texts, opt.n_texts, eo, &hooks);
	else
		rc = sa_eval_map(&table, model, adapters, opt.n_adapters, eo, &hooks);
	if (rc == SA_EUSAGE)
		usage_die(synopsis, "%s", sa_error());
	TRY(rc);
	if (opt.n_tasks)
		means(table);
	costs(table);

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
