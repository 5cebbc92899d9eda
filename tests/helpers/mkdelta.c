/*
 * mkdelta - a delta with a random state, for tests of the tools that read
 * deltas: shapes and fingerprints from an adapter file (-a) or given
 * directly, h uniform in [-1, 1) and P in [0.05, 0.95) from a seed.  For a
 * least-squares memory, P holds the key sums S, which the read-out solves
 * with: each is made symmetric and diagonally dominant (positive definite),
 * as sums of features' outer products are.
 */
#include <getopt.h>
#include <unistd.h>

#define TOOL "mkdelta"
#include "../../bin/tool.h"

static const char usage_text[] =
    "usage: mkdelta [-a ADAPTER | [--layers N] [--kv-heads N] [--head-dim N]\n"
    "               [--rank N] [--chunk N] [--mats LIST] [--model-fp HEX]\n"
    "               [--adapter-fp HEX]] [-s SEED] [--tokens N] [--demos N]\n"
    "               [--source NAME] [--params TEXT] [-o FILE]\n";

static void
help(void)
{
	fputs(usage_text, stdout);
	fputs("\n"
	    "Write a delta whose state is random from SEED (default 1).\n\n"
	    "  -a, --adapter FILE  take shapes and fingerprints from this adapter\n"
	    "  --layers N          n_layer (default 2)\n"
	    "  --kv-heads N        n_head_kv (default 2)\n"
	    "  --head-dim N        d_head (default 8)\n"
	    "  --rank N            rank (default 4)\n"
	    "  --chunk N           chunk (default 16)\n"
	    "  --mats LIST         comma-separated matrices (default attn_q,attn_v)\n"
	    "  --model-fp HEX      model fingerprint (default 1)\n"
	    "  --adapter-fp HEX    adapter fingerprint (default 2)\n"
	    "  --tokens N          n_tokens (default 100)\n"
	    "  --demos N           n_demos (default 4)\n"
	    "  --source NAME       record one source NAME (hash from the seed)\n"
	    "  --params TEXT       the parameters string\n"
	    "  -o FILE             output (default stdout)\n", stdout);
}

static uint64_t
parse_hex(const char *opt, const char *s)
{
	char *end;
	uint64_t v;

	errno = 0;
	v = strtoull(s, &end, 16);
	if (errno || end == s || *end)
		die(SA_EUSAGE, "%s: invalid hex number '%s'", opt, s);
	return v;
}

int
main(int argc, char **argv)
{
	enum { O_LAYERS = 256, O_KV, O_DH, O_RANK, O_CHUNK, O_MATS, O_MFP, O_AFP, O_TOK,
		O_DEMOS, O_SRC, O_PARAMS };
	static const struct option longopts[] = {
		{ "adapter", required_argument, NULL, 'a' },
		{ "seed", required_argument, NULL, 's' },
		{ "layers", required_argument, NULL, O_LAYERS },
		{ "kv-heads", required_argument, NULL, O_KV },
		{ "head-dim", required_argument, NULL, O_DH },
		{ "rank", required_argument, NULL, O_RANK },
		{ "chunk", required_argument, NULL, O_CHUNK },
		{ "mats", required_argument, NULL, O_MATS },
		{ "model-fp", required_argument, NULL, O_MFP },
		{ "adapter-fp", required_argument, NULL, O_AFP },
		{ "tokens", required_argument, NULL, O_TOK },
		{ "demos", required_argument, NULL, O_DEMOS },
		{ "source", required_argument, NULL, O_SRC },
		{ "params", required_argument, NULL, O_PARAMS },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	sa_adapter shape = { .n_layer = 2, .n_head_kv = 2, .d_head = 8, .rank = 4, .chunk = 16,
	    .mats = 1u << SA_MAT_Q | 1u << SA_MAT_V, .model_fingerprint = 1, .fingerprint = 2 };
	sa_adapter *loaded = NULL;
	const char *adapter = NULL, *out = "-", *source = NULL, *params = NULL;
	uint64_t seed = 1, tokens = 100, demos = 4, s;
	sa_delta *d;
	size_t nh, np;
	int c;

	setprogname_(argv[0]);
	while ((c = getopt_long(argc, argv, "a:s:o:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'a': adapter = optarg; break;
		case 's': seed = (uint64_t)parse_long("--seed", optarg, 0, LONG_MAX); break;
		case 'o': out = optarg; break;
		case O_LAYERS: shape.n_layer = (int)parse_long("--layers", optarg, 1, 1 << 20); break;
		case O_KV: shape.n_head_kv = (int)parse_long("--kv-heads", optarg, 1, 1 << 20); break;
		case O_DH: shape.d_head = (int)parse_long("--head-dim", optarg, 1, 1 << 20); break;
		case O_RANK: shape.rank = (int)parse_long("--rank", optarg, 1, INT_MAX); break;
		case O_CHUNK: shape.chunk = (int)parse_long("--chunk", optarg, 1, INT_MAX); break;
		case O_MATS: shape.mats = parse_mats(optarg); break;
		case O_MFP: shape.model_fingerprint = parse_hex("--model-fp", optarg); break;
		case O_AFP: shape.fingerprint = parse_hex("--adapter-fp", optarg); break;
		case O_TOK: tokens = (uint64_t)parse_long("--tokens", optarg, 0, LONG_MAX); break;
		case O_DEMOS: demos = (uint64_t)parse_long("--demos", optarg, 0, LONG_MAX); break;
		case O_SRC: source = optarg; break;
		case O_PARAMS: params = optarg; break;
		case 'h': help(); close_stdout(); return 0;
		default: fputs(usage_text, stderr); return SA_EUSAGE;
		}
	}
	if (optind < argc) {
		fputs(usage_text, stderr);
		return SA_EUSAGE;
	}
	if (adapter)
		TRY(sa_adapter_load(&loaded, adapter));
	TRY(sa_delta_new(&d, loaded ? loaded : &shape));
	s = seed;
	sa_delta_sizes(d, &nh, &np);
	for (size_t i = 0; i < nh; i++)
		d->h[i] = (float)(2 * sa_unif(&s) - 1);
	for (size_t i = 0; i < np; i++)
		d->P[i] = (float)(0.05 + 0.9 * sa_unif(&s));
	if (d->mapping == SA_MAPPING_LSQ) {
		size_t dk = (size_t)(d->rank / d->n_head_kv);
		for (float *S = d->P; S < d->P + np; S += dk * dk)
			for (size_t i = 0; i < dk; i++) {
				S[i * dk + i] = 1 + S[i * dk + i];
				for (size_t j = 0; j < i; j++)
					S[i * dk + j] = S[j * dk + i] /= (float)(2 * dk);
			}
	}
	d->n_tokens = tokens;
	d->n_demos = demos;
	if (params && !(d->params = strdup(params)))
		die(SA_EINTERNAL, "out of memory");
	if (source) {
		if (!(d->sources = calloc(1, sizeof *d->sources)) || !(d->sources[0].name = strdup(source)))
			die(SA_EINTERNAL, "out of memory");
		d->sources[0].hash = sa_hash64(SA_HASH64_INIT, &seed, sizeof seed);
		d->n_sources = 1;
	}
	TRY(sa_delta_save(d, out));
	sa_delta_free(d);
	sa_adapter_free(loaded);
	close_stdout();
	return 0;
}
