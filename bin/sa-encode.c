/*
 * sa-encode - turn demonstrations into a delta: the base model reads them,
 * the adapter maps their keys and values into a context state.
 */
#include <unistd.h>

#define TOOL "sa-encode"
#include "tool.h"

static const char usage_text[] =
    "usage: sa-encode [-m MODEL] [-a ADAPTER] [-o OUT] [--append OLD] [-F text|tsv|jsonl]\n"
    "                 [-T TEMPLATE | --chat [--chat-template NAME]] [-c N] [-t N]\n"
    "                 [--cache-dir DIR] [-q | -v] [FILE ...]\n"
    "       sa-encode --dump [-F FORMAT] [-T TEMPLATE | --chat ...] [FILE ...]\n";

/* The record template of a chat exchange in model_path's template (or the
 * family named name). */
static char *
chat_template(const char *model_path, const char *name)
{
	sa_gguf *g;
	char *t;
	int tmpl;

	TRY(sa_gguf_open(&g, model_path));
	TRY(sa_chat_find(g, name, &tmpl));
	TRY(sa_chat_record_template(tmpl, &t));
	sa_gguf_close(g);
	return t;
}

static void
dump(char **files, int n_files, const int *formats, const char *stdin_data, size_t stdin_len,
    const char *tmpl)
{
	for (int f = 0; f < n_files; f++) {
		sa_demos *d;

		TRY(sa_demos_read(&d, files[f], strcmp(files[f], "-") ? NULL : stdin_data, stdin_len,
		    formats[f], tmpl));
		for (int i = 0; i < d->n; i++) {
			fputs("{\"source\":", stdout);
			sa_json_put_str(stdout, d->source.name, strlen(d->source.name));
			printf(",\"line\":%ld,\"text\":", d->demo[i].line);
			sa_json_put_str(stdout, d->demo[i].text, d->demo[i].len);
			fputs("}\n", stdout);
		}
		sa_demos_free(d);
	}
}

/* Progress of the segments fed: a line each (-v), or one line per input
 * rewritten in place on a terminal. */
typedef struct progress {
	int verbose, on;
	long fed;
	double t0;
} progress;

static void
step(void *ctx, const sa_encode_step *s)
{
	progress *p = ctx;

	p->fed += s->seg->n;
	if (p->verbose)
		warnx_("%s:%ld: segment of %d tokens, %d demonstrations", s->source, s->seg->line,
		    s->seg->n, s->seg->n_demos);
	else if (p->on)
		fprintf(stderr, "\r%s: %s: %ld/%ld tokens, %.0f tokens/s %s", argv0, s->source,
		    s->done, s->total, p->fed / (now() - p->t0 + 1e-9), s->i + 1 == s->n_segs ? "\n" : "");
}

/* -F FORMAT; -f FORMAT is an error that says so. */
static void
opt_call(void *ctx, const tool_opt *t, const char *arg)
{
	if (t->letter == 'f')
		format_moved(arg, usage_text);
	if ((*(int *)ctx = sa_demos_format_from_name(arg)) < 0)
		die(SA_EUSAGE, "--format: unknown format '%s' (text, tsv, jsonl)", arg);
}

int
main(int argc, char **argv)
{
	const char *model_path = NULL, *adapter_path = NULL, *out = "-", *append = NULL;
	const char *tmpl = NULL, *cache = NULL, *chat_name = NULL;
	char *stdin_data = NULL, *stdin_only[] = { "-" }, **files, *chat_tmpl = NULL;
	size_t stdin_len = 0;
	int forced = SA_DEMOS_AUTO, n_ctx = 0, threads = 0, verbose = 0, do_dump = 0, n_files;
	int n_stdin, *formats, hit, chat = 0;
	progress p = { 0 };
	sa_model *model;
	sa_adapter *adapter;
	sa_delta *start = NULL, *d;
	const tool_opt table[] = {
		TEXT(""),
		{ "model", 'm', "FILE", STR(&model_path), "base model (default: $SA_MODEL, else the installed one)" },
		{ "adapter", 'a', "FILE", STR(&adapter_path),
		    "adapter of that model (default: $SA_ADAPTER, else\nthe installed one)" },
		{ "output", 'o', "FILE", STR(&out), "write the delta here (default: stdout)" },
		{ "append", 0, "OLD", STR(&append), "continue the state of delta OLD with the inputs" },
		{ "format", 'F', "FMT", CALL(0), "text, tsv or jsonl (default: from each file's extension\n"
		    "or first line; see sa-encode(1))" },
		{ NULL, 'f', "FMT", CALL(0), NULL },
		{ "template", 'T', "T", STR(&tmpl), "how a record reads (default: '" SA_DEMOS_TEMPLATE "')" },
		{ "chat", 0, NULL, FLAG(&chat, 1), "a record is a user message (input) and the answer\n"
		    "(label) in the model's chat template" },
		{ "chat-template", 0, "NAME", STR(&chat_name),
		    "that template's family instead of the model's:\n" SA_CHAT_NAMES },
		{ "ctx-size", 'c', "N", NUM(&n_ctx, 2, INT_MAX / 2), "tokens per segment (default: the model's context)" },
		{ "threads", 't', "N", NUM(&threads, 1, 1024), "threads (default: all CPUs)" },
		{ "cache-dir", 0, "DIR", STR(&cache), "reuse and keep encodings in DIR (default: $SA_CACHE_DIR)" },
		{ "dump", 0, NULL, FLAG(&do_dump, 1),
		    "print the rendered demonstrations as JSON Lines,\nencode nothing" },
		{ "quiet", 'q', NULL, FLAG(&verbose, -1), "no progress" },
		{ "verbose", 'v', NULL, FLAG(&verbose, 1), "report every segment" },
		OPTIONS_END,
	};

	setprogname_(argv[0]);
	opts_parse(argc, argv, table, usage_text, opt_call, &forced);
	if (threads)
		sa_set_threads(threads);
	files = optind < argc ? argv + optind : stdin_only;
	n_files = optind < argc ? argc - optind : 1;
	n_stdin = stdin_count((const char *const *)files, n_files);
	if (n_stdin > 1 || (n_stdin && append && strcmp(append, "-") == 0))
		die(SA_EUSAGE, "standard input can be read only once");
	if (n_stdin || (append && strcmp(append, "-") == 0))
		stdin_not_terminal("demonstrations", "give a file, or pipe them in");
	if (chat && tmpl)
		usage_die(usage_text, "--chat writes the record template: no -T");
	if (chat_name && !chat)
		usage_die(usage_text, "--chat-template goes with --chat");
	if (!tmpl)
		tmpl = SA_DEMOS_TEMPLATE;
	if (sa_template_check(tmpl) != SA_OK)
		die(SA_EUSAGE, "%s", sa_error());
	if (!do_dump || chat)
		model_path = need_input(INPUT_MODEL, model_path, usage_text);
	if (chat)
		tmpl = chat_tmpl = chat_template(model_path, chat_name);
	if (!do_dump) {
		adapter_path = need_input(INPUT_ADAPTER, adapter_path, usage_text);
	}
	if (!do_dump)
		stdout_not_terminal(out, "delta");
	/* Every input's format before the model loads: bad input fails fast. */
	if (!(formats = calloc((size_t)n_files, sizeof *formats)))
		die(SA_EINTERNAL, "out of memory");
	TRY(sa_demos_formats(files, n_files, forced, tmpl, formats, &stdin_data, &stdin_len));
	for (int f = 0; chat && f < n_files; f++)
		if (formats[f] == SA_DEMOS_TEXT)
			die(SA_EUSAGE, "--chat takes records (tsv, jsonl): %s is text", files[f]);
	if (do_dump) {
		dump(files, n_files, formats, stdin_data, stdin_len, tmpl);
		close_stdout();
		return 0;
	}
	p.verbose = verbose > 0;
	p.on = verbose >= 0 && isatty(2);

	TRY(sa_model_load(&model, model_path));
	TRY(sa_adapter_load(&adapter, adapter_path));
	TRY(sa_adapter_check(adapter, model));
	if (append)
		TRY(sa_delta_load(&start, append));
	n_ctx = ctx_size(n_ctx, model);
	if (start)
		TRY(sa_binding_check(model, adapter, start, append));

	sa_outfile_install_signals();
	p.t0 = now();
	TRY(sa_encode_files(&d, model, adapter, &(sa_encoding){ .files = files, .formats = formats,
	    .n = n_files, .stdin_data = stdin_data, .stdin_len = stdin_len, .tmpl = tmpl, .special = chat,
	    .n_ctx = n_ctx, .start = start, .cache_dir = sa_cache_dir(cache), .step = step,
	    .note = note_stderr, .detail = verbose > 0 ? note_stderr : NULL, .ctx = &p }, &hit));
	if (verbose > 0 && !hit)
		warnx_("%ld tokens in %.2f s", p.fed, now() - p.t0);
	TRY(sa_delta_save(d, out));

	free(formats);
	free(stdin_data);
	free(chat_tmpl);
	sa_delta_free(d);
	sa_delta_free(start);
	sa_adapter_free(adapter);
	sa_model_free(model);
	close_stdout();
	return 0;
}
