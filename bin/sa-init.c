/*
 * sa-init - a new, untrained adapter for a base model.  With W1 = 0 it
 * changes nothing, whatever delta goes through it; training starts there.
 */
#include <unistd.h>

#include "tool.h"

static const char usage_text[] =
    "usage: sa-init [-m MODEL] [-r RANK] [-C CHUNK] [--mats LIST] [-s N]\n"
    "               [--w1-scale X] [-o OUT]\n"
    "       sa-init --kind lsq [-m MODEL] [--key-source SRC] [--d-key N] [--lambda X]\n"
    "               [--value-offset N] [--mats LIST] [-s N] [--w1-scale X] [-o OUT]\n";

static void
help(void)
{
	fputs(usage_text, stdout);
	fputs("\n"
	    "  -m, --model FILE      base model (default: $SA_MODEL, else the installed one)\n"
	    "      --kind KIND       the context mapping: pool (the paper's, default) or lsq\n"
	    "                        (a least-squares memory; see sa-adapter(5))\n"
	    "  -r, --rank N          pool: learned query slots per KV head (default 16)\n"
	    "  -C, --chunk N         pool: tokens per chunk of the mapping (default 64)\n"
	    "      --key-source SRC  lsq: what the memory keys on: keys (the layer's, default)\n"
	    "                        or input (the adapted matrix's own; one matrix kind)\n"
	    "      --d-key N         lsq: features per memory (default 64)\n"
	    "      --lambda X        lsq: ridge of the read-out (default 1; 0.1 with\n"
	    "                        --key-source input)\n"
	    "      --value-offset N  lsq: bind each key to the value N tokens on (0 or 1,\n"
	    "                        default 0; 1 with --key-source input)\n"
	    "      --mats LIST       adapted matrices, comma-separated, or 'all'\n"
	    "                        (default attn_q,attn_k,attn_v,attn_output;\n"
	    "                        attn_output with --key-source input)\n"
	    "  -s, --seed N          seed of the random initialisation (default 0)\n"
	    "      --w1-scale X      random W1 of this scale instead of zero\n"
	    "  -o, --output FILE     write the adapter here (default: stdout)\n"
	    "  -h, --help            this help\n"
	    "  -V, --version         version\n", stdout);
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
		ARG("model", 'm'), ARG("rank", 'r'), ARG("chunk", 'C'), ARG("kind", 'K'),
		ARG("d-key", 'D'), ARG("lambda", 'L'), ARG("value-offset", 'O'), ARG("mats", 'M'),
		ARG("key-source", 'k'),
		ARG("seed", 's'), ARG("w1-scale", 'W'), ARG("output", 'o'), OPTIONS_END,
	};
	const char *model_path = NULL, *out = "-";
	int rank = 16, chunk = 64, kind = SA_MAPPING_POOL, d_key = 64, value_offset = -1, c;
	int pool_only = 0, lsq_only = 0, key_source = SA_KEYS_KV;
	double lambda = 0;
	uint32_t mats = 0;
	uint64_t seed = 0;
	float w1_scale = 0;
	sa_model *model;
	sa_adapter *a;

	setprogname_(argv[0]);
	while ((c = getopt_long(argc, argv, "m:r:C:o:s:hV", longopts, NULL)) != -1) {
		switch (c) {
		case 'm': model_path = optarg; break;
		case 'K': kind = parse_kind(optarg); break;
		case 'r': rank = (int)parse_long("--rank", optarg, 1, 4096); pool_only = 1; break;
		case 'C': chunk = (int)parse_long("--chunk", optarg, 1, 1 << 20); pool_only = 1; break;
		case 'D': d_key = (int)parse_long("--d-key", optarg, 1, 4096); lsq_only = 1; break;
		case 'L': lambda = parse_double("--lambda", optarg, 1e-12, 1e12); lsq_only = 1; break;
		case 'O':
			value_offset = (int)parse_long("--value-offset", optarg, 0, 1);
			lsq_only = 1;
			break;
		case 'M': mats = parse_mats(optarg); break;
		case 'k':
			if (strcmp(optarg, "keys") && strcmp(optarg, "input"))
				die(SA_EUSAGE, "--key-source: unknown source '%s' (keys, input)", optarg);
			key_source = strcmp(optarg, "keys") ? SA_KEYS_INPUT : SA_KEYS_KV;
			lsq_only = 1;
			break;
		case 's': seed = (uint64_t)parse_long("--seed", optarg, 0, LONG_MAX); break;
		case 'W': w1_scale = (float)parse_double("--w1-scale", optarg, -1e6, 1e6); break;
		case 'o': out = optarg; break;
		case 'h': help(); close_stdout(); return 0;
		case 'V': puts("sa-init " SA_VERSION); close_stdout(); return 0;
		default: usage_die(usage_text, NULL);
		}
	}
	if (optind < argc) {
		usage_die(usage_text, "unexpected argument '%s'", argv[optind]);
	}
	if (kind == SA_MAPPING_LSQ && pool_only)
		die(SA_EUSAGE, "-r and -C are for --kind pool; the memory has --key-source, --d-key, "
		    "--lambda and --value-offset");
	if (kind == SA_MAPPING_POOL && lsq_only)
		die(SA_EUSAGE, "--key-source, --d-key, --lambda and --value-offset are for --kind lsq");
	if (key_source == SA_KEYS_INPUT && mats & (mats - 1))
		die(SA_EUSAGE, "--key-source input adapts exactly one matrix kind (e.g. --mats attn_output)");
	if (!mats)
		mats = key_source == SA_KEYS_INPUT ? 1u << SA_MAT_O :
		    (1u << SA_MAT_Q) | (1u << SA_MAT_K) | (1u << SA_MAT_V) | (1u << SA_MAT_O);
	if (value_offset < 0)
		value_offset = key_source == SA_KEYS_INPUT;
	if (lambda == 0)
		lambda = key_source == SA_KEYS_INPUT ? 0.1 : 1;
	model_path = need_model(model_path, usage_text);
	if (strcmp(out, "-") == 0 && isatty(1))
		die(SA_EUSAGE, "refusing to write a binary adapter to a terminal (use -o FILE)");

	TRY(sa_model_load(&model, model_path));
	if (kind == SA_MAPPING_LSQ)
		TRY(sa_adapter_init_lsq(&a, model, d_key, (float)lambda, value_offset, key_source, mats,
		    seed, w1_scale));
	else
		TRY(sa_adapter_init(&a, model, rank, chunk, mats, seed, w1_scale));
	sa_outfile_install_signals();
	TRY(sa_adapter_save(a, model, out));
	sa_adapter_free(a);
	sa_model_free(model);
	close_stdout();
	return 0;
}
