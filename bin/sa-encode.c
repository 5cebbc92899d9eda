/*
 * sa-encode - turn demonstrations into a delta: the base model reads them,
 * the adapter maps their keys and values into a context state.
 */
#include <unistd.h>

#include "tool.h"

static const char usage_text[] =
    "usage: sa-encode [-m MODEL] [-a ADAPTER] [-o OUT] [--append OLD] [-F text|tsv|jsonl]\n"
    "                 [-T TEMPLATE | --chat [--chat-template NAME]] [-c N] [-t N]\n"
    "                 [--cache-dir DIR] [-q | -v] [FILE ...]\n"
    "       sa-encode --dump [-F FORMAT] [-T TEMPLATE | --chat ...] [FILE ...]\n";

static void
help(void)
{
	fputs(usage_text, stdout);
	fputs("\n"
	    "  -m, --model FILE      base model (default: $SA_MODEL, else the installed one)\n"
	    "  -a, --adapter FILE    adapter of that model (default: $SA_ADAPTER, else the installed one)\n"
	    "  -o, --output FILE     write the delta here (default: stdout)\n"
	    "      --append OLD      continue the state of delta OLD with the inputs\n"
	    "  -F, --format FMT      text, tsv or jsonl (default: from each file's extension\n"
	    "                        or first line; see sa-encode(1))\n"
	    "  -T, --template T      how a record reads (default: '" SA_DEMOS_TEMPLATE "')\n"
	    "      --chat            a record is a user message (input) and the answer (label)\n"
	    "                        in the model's chat template\n"
	    "      --chat-template NAME  that template's family instead of the model's:\n"
	    "                        " SA_CHAT_NAMES "\n"
	    "  -c, --ctx-size N      tokens per segment (default: the model's context)\n"
	    "  -t, --threads N       threads (default: all CPUs)\n"
	    "      --cache-dir DIR   reuse and keep encodings in DIR (default: $SA_CACHE_DIR)\n"
	    "      --dump            print the rendered demonstrations as JSON Lines, encode nothing\n"
	    "  -q, --quiet           no progress\n"
	    "  -v, --verbose         report every segment\n"
	    "  -h, --help            this help\n"
	    "  -V, --version         version\n", stdout);
}

static void
note(void *ctx, const char *msg)
{
	warnx_("%s", msg);
}

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

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
		ARG("model", 'm'), ARG("adapter", 'a'), ARG("output", 'o'), ARG("append", 'A'),
		ARG("format", 'F'), ARG("template", 'T'), FLAG("chat", 'H'), ARG("chat-template", 'N'),
		ARG("ctx-size", 'c'), ARG("threads", 't'), FLAG("dump", 'D'), ARG("cache-dir", 'K'),
		FLAG("quiet", 'q'), FLAG("verbose", 'v'), OPTIONS_END,
	};
	const char *model_path = NULL, *adapter_path = NULL, *out = "-", *append = NULL;
	const char *tmpl = NULL, *cache = NULL, *chat_name = NULL;
	char *stdin_data = NULL, *stdin_only[] = { "-" }, **files, *chat_tmpl = NULL;
	size_t stdin_len = 0;
	int forced = SA_DEMOS_AUTO, n_ctx = 0, quiet = 0, verbose = 0, do_dump = 0, n_files;
	int n_stdin = 0, c, *formats, hit, chat = 0;
	progress p = { 0 };
	sa_model *model;
	sa_adapter *adapter;
	sa_delta *start = NULL, *d;

	setprogname_(argv[0]);
	while ((c = getopt_long(argc, argv, "m:a:o:F:f:T:c:t:qvhV", longopts, NULL)) != -1) {
		switch (c) {
		case 'm': model_path = optarg; break;
		case 'a': adapter_path = optarg; break;
		case 'o': out = optarg; break;
		case 'A': append = optarg; break;
		case 'f': format_moved(optarg, usage_text);
		case 'F':
			if ((forced = sa_demos_format_from_name(optarg)) < 0)
				die(SA_EUSAGE, "--format: unknown format '%s' (text, tsv, jsonl)", optarg);
			break;
		case 'T': tmpl = optarg; break;
		case 'H': chat = 1; break;
		case 'N': chat_name = optarg; break;
		case 'c': n_ctx = (int)parse_long("--ctx-size", optarg, 2, INT_MAX / 2); break;
		case 't': sa_set_threads((int)parse_long("--threads", optarg, 1, 1024)); break;
		case 'D': do_dump = 1; break;
		case 'K': cache = optarg; break;
		case 'q': quiet = 1; verbose = 0; break;
		case 'v': verbose = 1; quiet = 0; break;
		case 'h': help(); close_stdout(); return 0;
		case 'V': puts("sa-encode " SA_VERSION); close_stdout(); return 0;
		default: usage_die(usage_text, NULL);
		}
	}
	files = optind < argc ? argv + optind : stdin_only;
	n_files = optind < argc ? argc - optind : 1;
	for (int f = 0; f < n_files; f++)
		n_stdin += strcmp(files[f], "-") == 0;
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
		model_path = need_model(model_path, usage_text);
	if (chat)
		tmpl = chat_tmpl = chat_template(model_path, chat_name);
	if (!do_dump) {
		adapter_path = need_adapter(adapter_path, usage_text);
	}
	if (!do_dump && strcmp(out, "-") == 0 && isatty(1))
		die(SA_EUSAGE, "refusing to write a binary delta to a terminal (use -o FILE)");
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
	p.verbose = verbose;
	p.on = !quiet && isatty(2);

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
	    .note = note, .detail = verbose ? note : NULL, .ctx = &p }, &hit));
	if (verbose && !hit)
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
