/*
 * sa-init - a new, untrained adapter for a base model.  With W1 = 0 it
 * changes nothing, whatever delta goes through it; training starts there.
 */
#include <unistd.h>

#define TOOL "sa-init"
#include "tool.h"

static const char usage_text[] =
    "usage: sa-init [-m MODEL] [-r RANK] [-C CHUNK] [--mats LIST] [--records L] [-s N]\n"
    "               [--w1-scale X] [-o OUT]\n"
    "       sa-init --kind lsq [-m MODEL] [--key-source SRC] [--d-key N] [--lambda X]\n"
    "               [--value-offset N] [--mats LIST] [--records L] [-s N] [--w1-scale X]\n"
    "               [-o OUT]\n";

/* The options; 0 (value_offset, key_source and records -1) is one not given. */
typedef struct opts {
	const char *model, *out;
	int kind, rank, chunk, d_key, value_offset, key_source, records;
	double lambda;
	uint32_t mats;
	uint64_t seed;
	float w1_scale;
} opts;

enum { O_KIND, O_MATS, O_KEYS, O_RECORDS };

static void
opt_call(void *ctx, const tool_opt *t, const char *arg)
{
	opts *o = ctx;

	if (t->val == O_KIND)
		o->kind = parse_kind(arg);
	else if (t->val == O_MATS)
		o->mats = parse_mats(arg);
	else if (t->val == O_RECORDS && strcmp(arg, "packed") && strcmp(arg, "alone"))
		die(SA_EUSAGE, "--records: unknown layout '%s' (packed, alone)", arg);
	else if (t->val == O_RECORDS)
		o->records = strcmp(arg, "alone") ? SA_RECORDS_PACKED : SA_RECORDS_ALONE;
	else if (strcmp(arg, "keys") && strcmp(arg, "input"))
		die(SA_EUSAGE, "--key-source: unknown source '%s' (keys, input)", arg);
	else
		o->key_source = strcmp(arg, "keys") ? SA_KEYS_INPUT : SA_KEYS_KV;
}

int
main(int argc, char **argv)
{
	opts o = { .out = "-", .kind = SA_MAPPING_POOL, .value_offset = -1, .key_source = -1,
	    .records = -1 };
	const tool_opt table[] = {
		TEXT(""),
		{ "model", 'm', "FILE", STR(&o.model), "base model (default: $SA_MODEL, else the installed one)" },
		{ "kind", 0, "KIND", CALL(O_KIND), "the context mapping: pool (the paper's, default) or\n"
		    "lsq (a least-squares memory; see sa-adapter(5))" },
		{ "rank", 'r', "N", NUM(&o.rank, 1, 4096), "pool: learned query slots per KV head (default 16)" },
		{ "chunk", 'C', "N", NUM(&o.chunk, 1, 1 << 20), "pool: tokens per chunk of the mapping (default 64)" },
		{ "key-source", 0, "SRC", CALL(O_KEYS), "lsq: what the memory keys on: keys (the layer's,\n"
		    "default) or input (the adapted matrix's own; one\nmatrix kind)" },
		{ "d-key", 0, "N", NUM(&o.d_key, 1, 4096), "lsq: features per memory (default 64)" },
		{ "lambda", 0, "X", NUM(&o.lambda, 1e-12, 1e12), "lsq: ridge of the read-out (default 1; 0.1 with\n"
		    "--key-source input)" },
		{ "value-offset", 0, "N", NUM(&o.value_offset, 0, 1),
		    "lsq: bind each key to the value N tokens on (0 or 1,\ndefault 0; 1 with --key-source input)" },
		{ "mats", 0, "LIST", CALL(O_MATS), "adapted matrices, comma-separated, or 'all'\n"
		    "(default attn_q,attn_k,attn_v,attn_output;\nattn_output with --key-source input)" },
		{ "records", 0, "L", CALL(O_RECORDS), "how the encoder lays out records: packed into\n"
		    "segments, or each alone from BOS as a query runs\n(default packed; alone with --key-source input)" },
		{ "seed", 's', "N", NUM(&o.seed, 0, LONG_MAX), "seed of the random initialisation (default 0)" },
		{ "w1-scale", 0, "X", NUM(&o.w1_scale, -1e6, 1e6), "random W1 of this scale instead of zero" },
		{ "output", 'o', "FILE", STR(&o.out), "write the adapter here (default: stdout)" },
		OPTIONS_END,
	};
	sa_model *model;
	sa_adapter *a;

	setprogname_(argv[0]);
	if (opts_parse(argc, argv, table, usage_text, opt_call, &o) < argc) {
		usage_die(usage_text, "unexpected argument '%s'", argv[optind]);
	}
	if (o.kind == SA_MAPPING_LSQ && (o.rank || o.chunk))
		die(SA_EUSAGE, "-r and -C are for --kind pool; the memory has --key-source, --d-key, "
		    "--lambda and --value-offset");
	if (o.kind == SA_MAPPING_POOL && (o.d_key || o.lambda || o.value_offset >= 0 ||
	    o.key_source >= 0))
		die(SA_EUSAGE, "--key-source, --d-key, --lambda and --value-offset are for --kind lsq");
	if (o.key_source == SA_KEYS_INPUT && o.mats & (o.mats - 1))
		die(SA_EUSAGE, "--key-source input adapts exactly one matrix kind (e.g. --mats attn_output)");
	o.model = need_input(INPUT_MODEL, o.model, usage_text);
	stdout_not_terminal(o.out, "adapter");

	/* the defaults of what was not given */
	int input = o.key_source == SA_KEYS_INPUT;
	o.key_source = input ? SA_KEYS_INPUT : SA_KEYS_KV;
	if (!o.mats)
		o.mats = input ? 1u << SA_MAT_O :
		    (1u << SA_MAT_Q) | (1u << SA_MAT_K) | (1u << SA_MAT_V) | (1u << SA_MAT_O);
	o.rank = o.rank ? o.rank : 16;
	o.chunk = o.chunk ? o.chunk : 64;
	o.d_key = o.d_key ? o.d_key : 64;
	o.lambda = o.lambda ? o.lambda : input ? 0.1 : 1;
	o.value_offset = o.value_offset < 0 ? input : o.value_offset;
	o.records = o.records < 0 ? (input ? SA_RECORDS_ALONE : SA_RECORDS_PACKED) : o.records;

	TRY(sa_model_load(&model, o.model));
	if (o.kind == SA_MAPPING_LSQ)
		TRY(sa_adapter_init_lsq(&a, model, o.d_key, (float)o.lambda, o.value_offset, o.key_source,
		    o.mats, o.seed, o.w1_scale));
	else
		TRY(sa_adapter_init(&a, model, o.rank, o.chunk, o.mats, o.seed, o.w1_scale));
	a->records = o.records;
	a->fingerprint = sa_adapter_fingerprint(a);
	sa_outfile_install_signals();
	TRY(sa_adapter_save(a, model, o.out));
	sa_adapter_free(a);
	sa_model_free(model);
	close_stdout();
	return 0;
}
