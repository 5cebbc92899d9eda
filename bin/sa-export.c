/*
 * sa-export - write deltas as a plain LoRA adapter: llama.cpp's LoRA GGUF or
 * a PEFT directory.  Several deltas are summed in the state space first,
 * exactly as sa-run applies several -d.
 */
#include <unistd.h>

#define TOOL "sa-export"
#include "tool.h"

static const char usage_text[] =
    "usage: sa-export [-m MODEL] [-a ADAPTER] [-F llama|peft] [--base-model NAME]\n"
    "                 [-o OUT] [-q | -v] DELTA[:SCALE] ...\n";

enum { LLAMA, PEFT };

/* -F FORMAT; -f FORMAT is an error that says so. */
static void
opt_call(void *ctx, const tool_opt *t, const char *arg)
{
	int *format = ctx;

	if (t->letter == 'f')
		format_moved(arg, usage_text);
	if (!strcmp(arg, "llama") || !strcmp(arg, "gguf"))
		*format = LLAMA;
	else if (!strcmp(arg, "peft"))
		*format = PEFT;
	else
		die(SA_EUSAGE, "--format: unknown format '%s' (llama, peft)", arg);
}

int
main(int argc, char **argv)
{
	const char *model_path = NULL, *adapter_arg = NULL, *out = NULL, *base_model = NULL;
	scaled_list in = { 0 };
	int format = LLAMA, verbose = 0, n;
	sa_model *model;
	sa_deltas *ds;
	const tool_opt table[] = {
		TEXT("\nWrite the low-rank update of deltas as a LoRA adapter for other tools.\n"
		    "Several deltas are summed as sum_i SCALE_i * state_i (SCALE default 1),\n"
		    "as sa-run -d does.  DELTA '-' is stdin (once); with a scale, after \"--\":\n"
		    "-- -:S.\n"),
		{ "model", 'm', "FILE", STR(&model_path), "base model (default: $SA_MODEL, else the installed one)" },
		{ "adapter", 'a', "FILE", STR(&adapter_arg), "adapter of the deltas (default: the one they\n"
		    "record, else $SA_ADAPTER, else the installed one)" },
		{ "format", 'F', "FMT", CALL(0), "llama: llama.cpp LoRA GGUF (default); peft: a PEFT\n"
		    "directory (adapter_config.json,\nadapter_model.safetensors)" },
		{ NULL, 'f', "FMT", CALL(0), NULL },
		{ "base-model", 0, "NAME", STR(&base_model),
		    "PEFT base_model_name_or_path (default: the model's\nname)" },
		{ "output", 'o', "OUT", STR(&out), "the GGUF file (default: stdout) or the PEFT directory" },
		{ "quiet", 'q', NULL, FLAG(&verbose, -1), "no messages but errors" },
		{ "verbose", 'v', NULL, FLAG(&verbose, 1), "say what was written" },
		OPTIONS_END,
	};

	setprogname_(argv[0]);
	opts_parse(argc, argv, table, usage_text, opt_call, &format);
	model_path = need_input(INPUT_MODEL, model_path, usage_text);
	if (optind >= argc) {
		usage_die(usage_text, "no delta to export");
	}
	if (format == PEFT && (!out || !strcmp(out, "-")))
		die(SA_EUSAGE, "a PEFT adapter is a directory: give it with -o DIR");
	if (base_model && format != PEFT)
		die(SA_EUSAGE, "--base-model is for --format peft");
	if (!out)
		out = "-";
	if (format == LLAMA)
		stdout_not_terminal(out, "adapter");

	n = argc - optind;
	for (int i = 0; i < n; i++)
		scaled_push(&in, "scale", argv[optind + i]);
	stdin_operands(in.path, n, "a delta");
	TRY(sa_deltas_load(&ds, in.path, in.scale, n));

	TRY(sa_model_load(&model, model_path));
	TRY(sa_deltas_bind(ds, model, adapter_arg, default_input(INPUT_ADAPTER)));

	sa_outfile_install_signals();
	if (format == LLAMA)
		TRY(sa_export_llama(model, ds->adapter, ds->d, ds->scale, n, out));
	else
		TRY(sa_export_peft(model, ds->adapter, ds->d, ds->scale, n, base_model, out));
	if (verbose > 0)
		warnx_("%d delta%s, rank %d, %d layers: %s LoRA adapter written to %s", n,
		    n == 1 ? "" : "s", ds->adapter->rank, ds->adapter->n_layer,
		    format == LLAMA ? "llama.cpp" : "PEFT", strcmp(out, "-") ? out : "stdout");

	scaled_free(&in);
	sa_deltas_free(ds);
	sa_model_free(model);
	close_stdout();
	return 0;
}
