/*
 * sa-export - write deltas as a plain LoRA adapter: llama.cpp's LoRA GGUF or
 * a PEFT directory.  Several deltas are summed in the state space first,
 * exactly as sa-run applies several -d.
 */
#include <unistd.h>

#include "tool.h"

static const char usage_text[] =
    "usage: sa-export [-m MODEL] [-a ADAPTER] [-F llama|peft] [--base-model NAME]\n"
    "                 [-o OUT] [-q | -v] DELTA[:SCALE] ...\n";

enum { LLAMA, PEFT };

static void
help(void)
{
	fputs(usage_text, stdout);
	fputs("\n"
	    "Write the low-rank update of deltas as a LoRA adapter for other tools.\n"
	    "Several deltas are summed as sum_i SCALE_i * state_i (SCALE default 1),\n"
	    "as sa-run -d does.\n\n"
	    "  -m, --model FILE        base model (default: $SA_MODEL, else the installed one)\n"
	    "  -a, --adapter FILE      adapter of the deltas (default: the one they record, else\n"
	    "                          $SA_ADAPTER, else the installed one)\n"
	    "  -F, --format FMT        llama: llama.cpp LoRA GGUF (default); peft: a PEFT\n"
	    "                          directory (adapter_config.json, adapter_model.safetensors)\n"
	    "      --base-model NAME   PEFT base_model_name_or_path (default: the model's name)\n"
	    "  -o, --output OUT        the GGUF file (default: stdout) or the PEFT directory\n"
	    "  -q, --quiet             no messages but errors\n"
	    "  -v, --verbose           say what was written\n"
	    "  -h, --help              this help\n"
	    "  -V, --version           version\n"
	    "\nDELTA '-' is stdin (once); with a scale after \"--\": -- -:S.\n", stdout);
}

int
main(int argc, char **argv)
{
	enum { O_BASE = 256 };
	static const struct option longopts[] = {
		ARG("model", 'm'), ARG("adapter", 'a'), ARG("format", 'F'),
		ARG("base-model", O_BASE), ARG("output", 'o'), FLAG("quiet", 'q'),
		FLAG("verbose", 'v'), OPTIONS_END,
	};
	const char *model_path = NULL, *adapter_arg = NULL, *out = NULL, *base_model = NULL;
	char **files;
	double *scale;
	int format = LLAMA, verbose = 0, n, c;
	sa_model *model;
	sa_deltas *ds;

	setprogname_(argv[0]);
	while ((c = getopt_long(argc, argv, "m:a:F:f:o:qvhV", longopts, NULL)) != -1) {
		switch (c) {
		case 'm': model_path = optarg; break;
		case 'a': adapter_arg = optarg; break;
		case 'f': format_moved(optarg, usage_text);
		case 'F':
			if (!strcmp(optarg, "llama") || !strcmp(optarg, "gguf"))
				format = LLAMA;
			else if (!strcmp(optarg, "peft"))
				format = PEFT;
			else
				die(SA_EUSAGE, "--format: unknown format '%s' (llama, peft)", optarg);
			break;
		case O_BASE: base_model = optarg; break;
		case 'o': out = optarg; break;
		case 'q': verbose = -1; break;
		case 'v': verbose = 1; break;
		case 'h': help(); close_stdout(); return 0;
		case 'V': puts("sa-export " SA_VERSION); close_stdout(); return 0;
		default: usage_die(usage_text, NULL);
		}
	}
	model_path = need_model(model_path, usage_text);
	if (optind >= argc) {
		usage_die(usage_text, "no delta to export");
	}
	if (format == PEFT && (!out || !strcmp(out, "-")))
		die(SA_EUSAGE, "a PEFT adapter is a directory: give it with -o DIR");
	if (base_model && format != PEFT)
		die(SA_EUSAGE, "--base-model is for --format peft");
	if (!out)
		out = "-";
	if (format == LLAMA && !strcmp(out, "-") && isatty(1))
		die(SA_EUSAGE, "refusing to write a binary adapter to a terminal (use -o FILE)");

	n = argc - optind;
	if (!(scale = calloc((size_t)n, sizeof *scale)) || !(files = calloc((size_t)n, sizeof *files)))
		die(SA_EINTERNAL, "out of memory");
	for (int i = 0; i < n; i++)
		split_scale("scale", argv[optind + i], &files[i], &scale[i]);
	stdin_operands(files, n, "a delta");
	TRY(sa_deltas_load(&ds, files, scale, n));

	TRY(sa_model_load(&model, model_path));
	TRY(sa_deltas_bind(ds, model, adapter_arg, default_adapter()));

	sa_outfile_install_signals();
	if (format == LLAMA)
		TRY(sa_export_llama(model, ds->adapter, ds->d, ds->scale, n, out));
	else
		TRY(sa_export_peft(model, ds->adapter, ds->d, ds->scale, n, base_model, out));
	if (verbose > 0)
		warnx_("%d delta%s, rank %d, %d layers: %s LoRA adapter written to %s", n,
		    n == 1 ? "" : "s", ds->adapter->rank, ds->adapter->n_layer,
		    format == LLAMA ? "llama.cpp" : "PEFT", strcmp(out, "-") ? out : "stdout");

	for (int i = 0; i < n; i++)
		free(files[i]);
	free(files);
	free(scale);
	sa_deltas_free(ds);
	sa_model_free(model);
	close_stdout();
	return 0;
}
