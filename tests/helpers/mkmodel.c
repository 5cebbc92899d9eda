/*
 * mkmodel - write a small Llama-family GGUF model with random weights.
 *
 * The same arguments always give the same bytes.  Each tensor draws from
 * its own stream (the seed mixed with the tensor's name), so models that
 * differ only in --type or --layers share the weights they have in common.
 * The file loads in libsa and in llama.cpp.
 */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define TOOL "mkmodel"
#include "../../bin/tool.h"

static const char usage_text[] =
    "usage: mkmodel [--arch llama|qwen2] [--layers N] [--dim N] [--heads N]\n"
    "               [--kv-heads N] [--ff N] [--ctx N] [--type T]\n"
    "               [--tied] [--seed N] [--rope-base X] [--eps X] [--name S]\n"
    "               [--vocab FILE | --bos N] [--special TEXT]... [--chat-template T]\n"
    "               [-v] [-o FILE]\n";

static const char help_text[] =
    "Write a Llama-family GGUF model with deterministic random weights.\n"
    "\n"
    "  --arch A        llama (default) or qwen2 (adds q/k/v biases, NeoX RoPE)\n"
    "  --layers N      transformer blocks (default 2)\n"
    "  --dim N         embedding width (default 64)\n"
    "  --heads N       attention heads (default 4); head size is dim/heads\n"
    "  --kv-heads N    key/value heads (default: heads)\n"
    "  --ff N          feed-forward width (default 3*dim)\n"
    "  --ctx N         context_length (default 256)\n"
    "  -t, --type T    2-D weights and token_embd: f32 (default), f16, bf16, q8_0,\n"
    "                  q4_0, q4_1, q5_0, q5_1, q2_k, q3_k, q4_k, q5_k, q6_k (by\n"
    "                  rounding to nearest, not llama-quantize's search); norms\n"
    "                  and biases stay f32\n"
    "  --tied          no output.weight: the output shares token_embd\n"
    "  -s, --seed N    weights' seed (default 1)\n"
    "  --rope-base X   rope.freq_base (default 10000)\n"
    "  --eps X         RMS norm epsilon (default 1e-5)\n"
    "  --name S        general.name (default: mkmodel-ARCH)\n"
    "  --vocab FILE    copy every tokenizer.* key of a GGUF (e.g. a vocab-only\n"
    "                  file); n_vocab is its token count.  Default: a built-in\n"
    "                  SentencePiece vocab of bytes, ASCII and \"\xe2\x96\x81\"+letter\n"
    "  --bos N         the built-in vocab's tokenizer.ggml.bos_token_id (default 1;\n"
    "                  one past the vocab makes a model with a bad BOS)\n"
    "  --special TEXT  add a control token TEXT to the built-in vocab; repeatable\n"
    "  --chat-template T  tokenizer.chat_template (Jinja source)\n"
    "  -o FILE         output (default: stdout, \"-\")\n"
    "  -v, --verbose   say what was written\n"
    "  -h, --help, --version\n";

/* ---------------------------------------------------------------- random */

/* standard normal, Box-Muller (u1 never 0: the logarithm is finite) */
static double
gauss(sa_rng *r)
{
	double u1 = sa_unif_pos(&r->s), u2 = sa_unif_pos(&r->s);
	return sqrt(-2 * log(u1)) * cos(2 * M_PI * u2);
}

/* The stream of one tensor. */
static sa_rng
tensor_rng(uint64_t seed, const char *name)
{
	sa_rng r = { seed ^ sa_hash64(SA_HASH64_INIT, name, strlen(name)) };
	sa_rng_next(&r);
	return r;
}

/* ----------------------------------------------------------------- model */

typedef struct opts {
	const char *arch;
	int n_layer, dim, n_head, n_head_kv, d_ff, n_ctx, type, tied;
	uint64_t seed;
	float rope_base, eps;
	const char *name, *vocab, *out;
	int verbose;
	uint32_t bos;
	const char *special[16];  /* control tokens added to the built-in vocab */
	int n_special;
	const char *chat_template;
} opts;

/* Everything the writer points at until it has written. */
typedef struct bufs {
	void **p;
	int n, cap;
} bufs;

static void *
keep(bufs *b, size_t n)
{
	if (b->n == b->cap) {
		b->cap = b->cap ? b->cap * 2 : 64;
		if (!(b->p = realloc(b->p, (size_t)b->cap * sizeof *b->p)))
			die(SA_EINTERNAL, "out of memory");
	}
	if (!(b->p[b->n] = malloc(n ? n : 1)))
		die(SA_EINTERNAL, "out of memory");
	return b->p[b->n++];
}

/*
 * A tensor of ne[0] x ne[1] values x = mean + std * N(0,1), stored in type.
 */
static void
add_random(sa_gguf_writer *w, bufs *b, const opts *o, const char *name, int type,
    int64_t ne0, int64_t ne1, double mean, double std)
{
	int64_t ne[2] = { ne0, ne1 };
	int n_dims = ne1 > 1 ? 2 : 1;
	size_t row = sa_type_row_size(type, ne0);
	float *x = malloc((size_t)ne0 * sizeof *x);
	char *data = keep(b, row * (size_t)ne1);
	sa_rng r = tensor_rng(o->seed, name);

	if (!x)
		die(SA_EINTERNAL, "out of memory");
	for (int64_t i = 0; i < ne1; i++) {
		for (int64_t j = 0; j < ne0; j++)
			x[j] = (float)(mean + std * gauss(&r));
		sa_row_from_f32(type, x, data + (size_t)i * row, ne0);
	}
	free(x);
	TRY(sa_gguf_writer_add_tensor(w, name, type, n_dims, ne, data));
}

/*
 * The built-in vocab, SentencePiece style: <unk> <s> </s>, the 256 byte
 * tokens, then "▁", printable ASCII and "▁"+letter with falling scores, so
 * llama.cpp's SPM tokenizer merges "▁" with a following letter.
 */
static int
builtin_vocab(sa_gguf_writer *w, bufs *b, uint32_t bos, const char *const *special, int n_special)
{
	enum { TOK_NORMAL = 1, TOK_UNKNOWN = 2, TOK_CONTROL = 3, TOK_BYTE = 6 };
	static const char space[] = "\xe2\x96\x81";  /* U+2581 */
	char text[4096], *p = text;
	sa_str tok[512];
	float score[512];
	int32_t type[512];
	int n = 0;

#define PIECE(str, len, sc, ty) do { \
	memcpy(p, (str), (len)); \
	tok[n] = (sa_str){ p, (len) }; \
	p += (len); \
	score[n] = (sc); \
	type[n] = (ty); \
	n++; \
} while (0)

	PIECE("<unk>", 5, 0, TOK_UNKNOWN);
	PIECE("<s>", 3, 0, TOK_CONTROL);
	PIECE("</s>", 4, 0, TOK_CONTROL);
	for (int c = 0; c < 256; c++) {
		char s[8];
		snprintf(s, sizeof s, "<0x%02X>", c);
		PIECE(s, 6, 0, TOK_BYTE);
	}
	PIECE(space, 3, -1, TOK_NORMAL);
	for (int c = 0x21; c < 0x7f; c++) {
		char s = (char)c;
		PIECE(&s, 1, -(float)n, TOK_NORMAL);
	}
	for (int c = 0; c < 52; c++) {
		char s[4];
		memcpy(s, space, 3);
		s[3] = (char)(c < 26 ? 'a' + c : 'A' + c - 26);
		/* above the single characters, so merges happen */
		PIECE(s, 4, -1 - (float)c / 64, TOK_NORMAL);
	}
	for (int i = 0; i < n_special; i++)
		PIECE(special[i], strlen(special[i]), 0, TOK_CONTROL);
#undef PIECE

	(void)b;
	TRY(sa_gguf_writer_set_str(w, "tokenizer.ggml.model", "llama"));
	TRY(sa_gguf_writer_set_str(w, "tokenizer.ggml.pre", "default"));
	TRY(sa_gguf_writer_set_strs(w, "tokenizer.ggml.tokens", (uint64_t)n, tok));
	TRY(sa_gguf_writer_set_arr(w, "tokenizer.ggml.scores", SA_GGUF_F32, (uint64_t)n, score));
	TRY(sa_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", SA_GGUF_I32, (uint64_t)n, type));
	TRY(sa_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", bos));
	TRY(sa_gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 2));
	TRY(sa_gguf_writer_set_u32(w, "tokenizer.ggml.unknown_token_id", 0));
	TRY(sa_gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", 1));
	TRY(sa_gguf_writer_set_bool(w, "tokenizer.ggml.add_eos_token", 0));
	return n;
}

/* Copy tokenizer.* from a GGUF; the vocab size is its token count. */
static int
copy_vocab(sa_gguf_writer *w, const sa_gguf *g)
{
	uint64_t n_tok;
	sa_str *toks;

	for (uint64_t i = 0; i < sa_gguf_n_kv(g); i++) {
		sa_str k = sa_gguf_kv_key(g, i);
		char key[256];
		if (k.n < 10 || k.n >= sizeof key || memcmp(k.s, "tokenizer.", 10) != 0)
			continue;
		memcpy(key, k.s, (size_t)k.n);
		key[k.n] = '\0';
		TRY(sa_gguf_writer_copy_kv(w, g, key));
	}
	TRY(sa_gguf_get_strs(g, "tokenizer.ggml.tokens", &n_tok, &toks));
	free(toks);
	if (n_tok < 1 || n_tok > INT32_MAX)
		die(SA_EDATA, "%s: bad token count %llu", sa_gguf_path(g), (unsigned long long)n_tok);
	return (int)n_tok;
}

static void
build(const opts *o)
{
	sa_gguf_writer *w = sa_gguf_writer_new();
	sa_gguf *vg = NULL;
	bufs b = { 0 };
	char key[128], name[64], dflt_name[64];
	int qwen2 = strcmp(o->arch, "qwen2") == 0;
	int d_head = o->dim / o->n_head, d_kv = o->n_head_kv * d_head, d_q = o->n_head * d_head;
	int n_vocab;

	if (!w)
		die_sa(SA_EINTERNAL);
#define KEY(suffix) (snprintf(key, sizeof key, "%s." suffix, o->arch), key)
	TRY(sa_gguf_writer_set_str(w, "general.architecture", o->arch));
	snprintf(dflt_name, sizeof dflt_name, "mkmodel-%s", o->arch);
	TRY(sa_gguf_writer_set_str(w, "general.name", o->name ? o->name : dflt_name));
	TRY(sa_gguf_writer_set_u32(w, KEY("context_length"), (uint32_t)o->n_ctx));
	TRY(sa_gguf_writer_set_u32(w, KEY("embedding_length"), (uint32_t)o->dim));
	TRY(sa_gguf_writer_set_u32(w, KEY("block_count"), (uint32_t)o->n_layer));
	TRY(sa_gguf_writer_set_u32(w, KEY("feed_forward_length"), (uint32_t)o->d_ff));
	TRY(sa_gguf_writer_set_u32(w, KEY("attention.head_count"), (uint32_t)o->n_head));
	TRY(sa_gguf_writer_set_u32(w, KEY("attention.head_count_kv"), (uint32_t)o->n_head_kv));
	TRY(sa_gguf_writer_set_f32(w, KEY("rope.freq_base"), o->rope_base));
	TRY(sa_gguf_writer_set_u32(w, KEY("rope.dimension_count"), (uint32_t)d_head));
	TRY(sa_gguf_writer_set_f32(w, KEY("attention.layer_norm_rms_epsilon"), o->eps));
#undef KEY

	if (o->vocab) {
		TRY(sa_gguf_open(&vg, o->vocab));
		n_vocab = copy_vocab(w, vg);
	} else {
		n_vocab = builtin_vocab(w, &b, o->bos, o->special, o->n_special);
	}
	if (o->chat_template)
		TRY(sa_gguf_writer_set_str(w, "tokenizer.chat_template", o->chat_template));

	/* Linear maps: std 1/sqrt(d_in) keeps activations O(1) layer to layer;
	 * norms near 1 and biases big enough that dropping one shows. */
	double s_dim = 1 / sqrt(o->dim), s_q = 1 / sqrt(d_q), s_ff = 1 / sqrt(o->d_ff);
	add_random(w, &b, o, "token_embd.weight", o->type, o->dim, n_vocab, 0, s_dim);
	for (int l = 0; l < o->n_layer; l++) {
#define BLK(suffix) (snprintf(name, sizeof name, "blk.%d." suffix, l), name)
		add_random(w, &b, o, BLK("attn_norm.weight"), SA_TYPE_F32, o->dim, 1, 1, 0.1);
		add_random(w, &b, o, BLK("attn_q.weight"), o->type, o->dim, d_q, 0, s_dim);
		add_random(w, &b, o, BLK("attn_k.weight"), o->type, o->dim, d_kv, 0, s_dim);
		add_random(w, &b, o, BLK("attn_v.weight"), o->type, o->dim, d_kv, 0, s_dim);
		if (qwen2) {
			add_random(w, &b, o, BLK("attn_q.bias"), SA_TYPE_F32, d_q, 1, 0, 0.5);
			add_random(w, &b, o, BLK("attn_k.bias"), SA_TYPE_F32, d_kv, 1, 0, 0.5);
			add_random(w, &b, o, BLK("attn_v.bias"), SA_TYPE_F32, d_kv, 1, 0, 0.5);
		}
		add_random(w, &b, o, BLK("attn_output.weight"), o->type, d_q, o->dim, 0, s_q);
		add_random(w, &b, o, BLK("ffn_norm.weight"), SA_TYPE_F32, o->dim, 1, 1, 0.1);
		add_random(w, &b, o, BLK("ffn_gate.weight"), o->type, o->dim, o->d_ff, 0, s_dim);
		add_random(w, &b, o, BLK("ffn_up.weight"), o->type, o->dim, o->d_ff, 0, s_dim);
		add_random(w, &b, o, BLK("ffn_down.weight"), o->type, o->d_ff, o->dim, 0, s_ff);
#undef BLK
	}
	add_random(w, &b, o, "output_norm.weight", SA_TYPE_F32, o->dim, 1, 1, 0.1);
	if (!o->tied)
		add_random(w, &b, o, "output.weight", o->type, o->dim, n_vocab, 0, s_dim);

	TRY(sa_gguf_writer_save(w, o->out));
	if (o->verbose)
		warnx_("%s: %s, %d layers, dim %d, %d/%d heads, ff %d, vocab %d, %s",
		    strcmp(o->out, "-") ? o->out : "stdout", o->arch, o->n_layer, o->dim,
		    o->n_head, o->n_head_kv, o->d_ff, n_vocab, sa_type_name(o->type));
	sa_gguf_writer_free(w);
	sa_gguf_close(vg);
	for (int i = 0; i < b.n; i++)
		free(b.p[i]);
	free(b.p);
}

static void
usage(void)
{
	fputs(usage_text, stderr);
	exit(SA_EUSAGE);
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "arch", required_argument, NULL, 'A' },
		{ "layers", required_argument, NULL, 'L' },
		{ "dim", required_argument, NULL, 'D' },
		{ "heads", required_argument, NULL, 'H' },
		{ "kv-heads", required_argument, NULL, 'K' },
		{ "ff", required_argument, NULL, 'F' },
		{ "ctx", required_argument, NULL, 'C' },
		{ "type", required_argument, NULL, 't' },
		{ "tied", no_argument, NULL, 'T' },
		{ "seed", required_argument, NULL, 's' },
		{ "rope-base", required_argument, NULL, 'R' },
		{ "eps", required_argument, NULL, 'E' },
		{ "name", required_argument, NULL, 'N' },
		{ "vocab", required_argument, NULL, 'V' },
		{ "bos", required_argument, NULL, 'B' },
		{ "special", required_argument, NULL, 'S' },
		{ "chat-template", required_argument, NULL, 'M' },
		{ "output", required_argument, NULL, 'o' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'W' },
		{ NULL, 0, NULL, 0 },
	};
	opts o = {
		.arch = "llama", .n_layer = 2, .dim = 64, .n_head = 4, .n_head_kv = 0,
		.d_ff = 0, .n_ctx = 256, .type = SA_TYPE_F32, .seed = 1,
		.rope_base = 10000, .eps = 1e-5f, .out = "-", .bos = 1,
	};
	int bos_given = 0;
	int c;

	setprogname_(argv[0]);
	while ((c = getopt_long(argc, argv, "t:s:o:vh", longopts, NULL)) != -1) {
		switch (c) {
		case 'A':
			if (strcmp(optarg, "llama") && strcmp(optarg, "qwen2"))
				die(SA_EUSAGE, "--arch: want llama or qwen2, not '%s'", optarg);
			o.arch = optarg;
			break;
		case 'L': o.n_layer = (int)parse_long("--layers", optarg, 1, 512); break;
		case 'D': o.dim = (int)parse_long("--dim", optarg, 2, 1 << 16); break;
		case 'H': o.n_head = (int)parse_long("--heads", optarg, 1, 1024); break;
		case 'K': o.n_head_kv = (int)parse_long("--kv-heads", optarg, 1, 1024); break;
		case 'F': o.d_ff = (int)parse_long("--ff", optarg, 1, 1 << 20); break;
		case 'C': o.n_ctx = (int)parse_long("--ctx", optarg, 1, 1 << 24); break;
		case 't':
			for (o.type = 0; o.type < 64; o.type++)
				if (sa_type_supported(o.type) && !strcasecmp(optarg, sa_type_name(o.type)))
					break;
			if (o.type == 64)
				die(SA_EUSAGE, "--type: want f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, "
				    "q5_1, q2_k, q3_k, q4_k, q5_k or q6_k, not '%s'", optarg);
			break;
		case 'T': o.tied = 1; break;
		case 's': {
			char *end;
			o.seed = strtoull(optarg, &end, 0);
			if (end == optarg || *end)
				die(SA_EUSAGE, "--seed: invalid value '%s'", optarg);
			break;
		}
		case 'R': o.rope_base = (float)parse_double("--rope-base", optarg, 1, 1e12); break;
		case 'E': o.eps = (float)parse_double("--eps", optarg, 1e-12, 1); break;
		case 'N': o.name = optarg; break;
		case 'V': o.vocab = optarg; break;
		case 'B':
			o.bos = (uint32_t)parse_long("--bos", optarg, 0, UINT32_MAX);
			bos_given = 1;
			break;
		case 'S':
			if (o.n_special == 16 || strlen(optarg) > 64)
				die(SA_EUSAGE, "--special: at most 16, of at most 64 bytes");
			o.special[o.n_special++] = optarg;
			break;
		case 'M': o.chat_template = optarg; break;
		case 'o': o.out = optarg; break;
		case 'v': o.verbose = 1; break;
		case 'h':
			fputs(usage_text, stdout);
			fputc('\n', stdout);
			fputs(help_text, stdout);
			close_stdout();
			return 0;
		case 'W':
			printf("mkmodel %s\n", SA_VERSION);
			close_stdout();
			return 0;
		default:
			usage();
		}
	}
	if (optind != argc)
		usage();
	if (bos_given && o.vocab)
		die(SA_EUSAGE, "--bos is for the built-in vocab, not --vocab");
	if (!o.n_head_kv)
		o.n_head_kv = o.n_head;
	if (!o.d_ff)
		o.d_ff = 3 * o.dim;
	if (o.dim % o.n_head || (o.dim / o.n_head) % 2)
		die(SA_EUSAGE, "--dim %d must be a multiple of 2*heads (%d)", o.dim, 2 * o.n_head);
	if (o.n_head % o.n_head_kv)
		die(SA_EUSAGE, "--heads %d must be a multiple of --kv-heads %d", o.n_head, o.n_head_kv);
	if (!sa_type_row_size(o.type, o.dim) || !sa_type_row_size(o.type, o.d_ff))
		die(SA_EUSAGE, "--type %s needs --dim and --ff multiples of its block size",
		    sa_type_name(o.type));
	if (strcmp(o.out, "-") == 0 && isatty(1))
		die(SA_EUSAGE, "not writing a model to a terminal; use -o FILE");
	build(&o);
	close_stdout();
	return 0;
}
