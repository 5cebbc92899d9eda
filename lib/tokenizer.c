/*
 * tokenizer.c - text <-> token ids from the tokenizer.ggml.* metadata of a
 * GGUF file, giving the same ids as llama.cpp's llama_tokenize with
 * parse_special = false, or true (sa_tokenize_special).
 *
 * Two vocabulary types:
 *   "llama"  SentencePiece BPE: spaces become U+2581 ("▁"), a space is put in
 *            front of the text, adjacent pieces are merged best score first,
 *            characters no piece covers fall back to <0xNN> byte tokens.
 *   "gpt2"   byte-level BPE: the text is cut into words by the model's
 *            pre-tokenizer regex (implemented by hand below), each byte of a
 *            word is mapped to a printable code point, and adjacent symbols
 *            are merged lowest merge rank first.
 *
 * Both merge loops are the same: a doubly linked list of symbols and a heap
 * of candidate pairs, so a word of n characters costs O(n log n).  Stale
 * heap entries (one side already merged away) are recognised by their size
 * and skipped.
 *
 * User-defined tokens (token type 4) are cut out of the text before anything
 * else, as llama.cpp does even without parse_special; control tokens in the
 * text are ordinary text, unless parse_special asks for them too.
 */
#include <stdlib.h>
#include <string.h>

#include "sa.h"
#include "unicode_tables.h"

/* tokenizer.ggml.token_type values */
enum {
	TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_USER = 4,
	TT_UNUSED = 5, TT_BYTE = 6,
};

enum { VOCAB_SPM, VOCAB_BPE };

/*
 * Pre-tokenizer passes: each cuts every word so far into smaller words.  A
 * gpt2 vocabulary's tokenizer.ggml.pre names a chain of them (the regexes
 * of its tokenizer.json).
 */
enum {
	PASS_END,
	PASS_GPT2,      /* 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
	PASS_LLAMA3,    /* (?i:'s|...)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|... */
	PASS_QWEN2,     /* the same with \p{N} one at a time */
	PASS_QWEN35,    /* Qwen2's with \p{M} counted as letters */
	PASS_PUNCT,     /* [\p{P}\$\+<=>\^~\|]+ */
	PASS_PUNCT_BT,  /* [\p{P}\$\+<=>\^~\|`]+ */
	PASS_NUMS,      /* \p{N}+ */
	PASS_NUM1,      /* \p{N} */
	PASS_DIGIT3,    /* [0-9][0-9][0-9] */
};

/* Pre-tokenizers: the chains of passes. */
enum { PRE_DEFAULT, PRE_GPT2, PRE_LLAMA3, PRE_QWEN2, PRE_QWEN35, PRE_STARCODER, PRE_FALCON };
static const uint8_t pre_passes[][5] = {
	[PRE_DEFAULT] = { PASS_PUNCT, PASS_GPT2, PASS_NUMS, PASS_DIGIT3, PASS_END },
	[PRE_GPT2] = { PASS_GPT2, PASS_END },
	[PRE_LLAMA3] = { PASS_LLAMA3, PASS_END },
	[PRE_QWEN2] = { PASS_QWEN2, PASS_END },
	[PRE_QWEN35] = { PASS_QWEN35, PASS_END },
	[PRE_STARCODER] = { PASS_NUM1, PASS_GPT2, PASS_END },
	[PRE_FALCON] = { PASS_PUNCT_BT, PASS_GPT2, PASS_DIGIT3, PASS_END },
};

/* Code point class: the UC_* category bits plus White_Space. */
enum { UC_SPACE = 0x100 };

/*
 * An open-addressing hash table from byte strings to indices into an
 * external list of strings (base + off[i], len[i]).  A slot holds the high
 * 32 bits of the key's hash and index + 1 (0 = empty).
 */
typedef struct strtab {
	uint64_t *slot;
	uint64_t mask;
} strtab;

struct sa_vocab {
	int type;                /* VOCAB_* */
	int pre;                 /* PRE_* (gpt2 only) */
	int n;                   /* tokens */
	char *text;              /* every token's text, back to back */
	uint32_t *off, *len;     /* token i is text + off[i], len[i] bytes */
	float *score;            /* [n] SentencePiece scores (0 if absent) */
	uint8_t *ttype;          /* [n] TT_* */
	uint8_t *eog;            /* [n] 1 for end-of-generation tokens */
	char *piece;             /* decoded bytes of every token, back to back */
	uint32_t *poff, *plen;
	strtab tok;              /* text -> id */

	int n_merges;            /* gpt2: "left right" strings, rank = index */
	char *mtext;
	uint32_t *moff, *mlen, *msplit;
	strtab merge;

	int bos, eos, eot, eom, unk;
	int add_bos, add_eos, add_space_prefix;
	int ignore_merges;       /* a word that is a token is not merged (llama3) */
	int spm_words;           /* spm: merges never cross the start of a word */
	int byte_tok[256];       /* spm: token of each byte for the fallback */
	int *user;               /* user-defined tokens, longest first */
	int n_user;
	int *special;            /* and control and unknown ones, longest first */
	int n_special;

	/* gpt2 byte-level alphabet: byte -> code point (UTF-8), and back */
	char bl_utf8[256][2];
	uint8_t bl_len[256];
	int16_t bl_byte[324];
};

/* ------------------------------------------------------------ small helpers */

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
	const unsigned char *s = p;

	while (n--)
		h = (h ^ *s++) * 0x100000001b3ULL;
	return h;
}

/* Length of the UTF-8 sequence a lead byte announces (1 for stray bytes). */
static size_t utf8_len(unsigned char c)
{
	static const uint8_t lookup[16] = { 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4 };

	return lookup[c >> 4];
}

/*
 * Decode one code point at s[*i], leniently: a malformed sequence gives
 * U+FFFD and consumes one byte.  Overlong forms and surrogates are not
 * rejected, matching the tokenizers whose ids we reproduce.
 */
static uint32_t utf8_next(const unsigned char *s, size_t n, size_t *i)
{
	size_t k = *i;
	unsigned c = s[k];

	if (c < 0x80) {
		*i = k + 1;
		return c;
	}
	if ((c & 0xe0) == 0xc0) {
		if (k + 1 < n && (s[k + 1] & 0xc0) == 0x80) {
			*i = k + 2;
			return (c & 0x1f) << 6 | (s[k + 1] & 0x3f);
		}
	} else if ((c & 0xf0) == 0xe0) {
		if (k + 2 < n && (s[k + 1] & 0xc0) == 0x80 && (s[k + 2] & 0xc0) == 0x80) {
			*i = k + 3;
			return (c & 0x0f) << 12 | (s[k + 1] & 0x3f) << 6 | (s[k + 2] & 0x3f);
		}
	} else if ((c & 0xf8) == 0xf0) {
		if (k + 3 < n && (s[k + 1] & 0xc0) == 0x80 && (s[k + 2] & 0xc0) == 0x80
		    && (s[k + 3] & 0xc0) == 0x80) {
			uint32_t cp = (c & 0x07) << 18 | (s[k + 1] & 0x3f) << 12
			    | (s[k + 2] & 0x3f) << 6 | (s[k + 3] & 0x3f);
			*i = k + 4;
			return cp < 0x110000 ? cp : 0xfffd;
		}
	}
	*i = k + 1;
	return 0xfffd;
}

static int utf8_put(uint32_t cp, char *out)
{
	unsigned char *o = (unsigned char *)out;

	if (cp < 0x80) {
		o[0] = cp;
		return 1;
	}
	if (cp < 0x800) {
		o[0] = 0xc0 | cp >> 6;
		o[1] = 0x80 | (cp & 0x3f);
		return 2;
	}
	if (cp < 0x10000) {
		o[0] = 0xe0 | cp >> 12;
		o[1] = 0x80 | (cp >> 6 & 0x3f);
		o[2] = 0x80 | (cp & 0x3f);
		return 3;
	}
	o[0] = 0xf0 | cp >> 18;
	o[1] = 0x80 | (cp >> 12 & 0x3f);
	o[2] = 0x80 | (cp >> 6 & 0x3f);
	o[3] = 0x80 | (cp & 0x3f);
	return 4;
}

static unsigned uc_class(uint32_t cp)
{
	unsigned bits;
	size_t lo, hi;

	if (cp < 0x80) {
		bits = uc_ascii[cp];
		if ((cp >= 0x09 && cp <= 0x0d) || cp == 0x20)
			bits |= UC_SPACE;
		return bits;
	}
	if (cp >= 0x110000)
		return UC_UNDEFINED;
	/* last range starting at or before cp */
	lo = 0;
	hi = sizeof uc_ranges / sizeof uc_ranges[0];
	while (hi - lo > 1) {
		size_t mid = (lo + hi) / 2;
		if (uc_ranges[mid] >> 8 <= cp)
			lo = mid;
		else
			hi = mid;
	}
	bits = uc_ranges[lo] & 0xff;
	for (size_t i = 0; i < sizeof uc_white_space / sizeof uc_white_space[0]; i++)
		if (uc_white_space[i] == cp)
			return bits | UC_SPACE;
	return bits;
}

/* A growable array of token ids. */
typedef struct ivec {
	int *a;
	size_t n, cap;
} ivec;

static int ivec_push(ivec *v, int x)
{
	if (v->n == v->cap) {
		size_t cap = v->cap ? 2 * v->cap : 64;
		int *a = realloc(v->a, cap * sizeof *a);
		if (!a)
			return sa_fail(SA_EINTERNAL, "out of memory");
		v->a = a;
		v->cap = cap;
	}
	v->a[v->n++] = x;
	return SA_OK;
}

/* ------------------------------------------------------------ hash tables */

static int strtab_init(strtab *t, size_t n)
{
	size_t size = 16;

	while (size < 2 * n)
		size *= 2;
	t->slot = sa_calloc(size, sizeof *t->slot);
	if (!t->slot)
		return SA_EINTERNAL;
	t->mask = size - 1;
	return SA_OK;
}

/*
 * Insert index i (its string is base + off[i], len[i]).  An equal string
 * already present keeps its slot; replace says whether the new index wins.
 */
static void strtab_put(strtab *t, const char *base, const uint32_t *off,
    const uint32_t *len, uint32_t i, int replace)
{
	uint64_t h = fnv(SA_HASH64_INIT, base + off[i], len[i]);
	uint64_t tag = h >> 32 << 32;

	for (uint64_t k = h & t->mask;; k = (k + 1) & t->mask) {
		uint64_t s = t->slot[k];
		if (!s) {
			t->slot[k] = tag | (i + 1);
			return;
		}
		uint32_t j = (uint32_t)s - 1;
		if ((s & ~0xffffffffULL) == tag && len[j] == len[i]
		    && !memcmp(base + off[j], base + off[i], len[i])) {
			if (replace)
				t->slot[k] = tag | (i + 1);
			return;
		}
	}
}

/* Token id of the n bytes at s, or -1. */
static int token_find(const sa_vocab *v, const char *s, size_t n)
{
	uint64_t h = fnv(SA_HASH64_INIT, s, n);
	uint64_t tag = h >> 32 << 32;

	for (uint64_t k = h & v->tok.mask;; k = (k + 1) & v->tok.mask) {
		uint64_t e = v->tok.slot[k];
		if (!e)
			return -1;
		uint32_t j = (uint32_t)e - 1;
		if ((e & ~0xffffffffULL) == tag && v->len[j] == n
		    && !memcmp(v->text + v->off[j], s, n))
			return (int)j;
	}
}

/* Rank of the merge "a b", or -1. */
static int merge_find(const sa_vocab *v, const char *a, size_t na, const char *b, size_t nb)
{
	uint64_t h = fnv(fnv(fnv(SA_HASH64_INIT, a, na), " ", 1), b, nb);
	uint64_t tag = h >> 32 << 32;

	for (uint64_t k = h & v->merge.mask;; k = (k + 1) & v->merge.mask) {
		uint64_t e = v->merge.slot[k];
		if (!e)
			return -1;
		uint32_t j = (uint32_t)e - 1;
		const char *m = v->mtext + v->moff[j];
		if ((e & ~0xffffffffULL) == tag && v->msplit[j] == na
		    && v->mlen[j] == na + 1 + nb
		    && !memcmp(m, a, na) && !memcmp(m + na + 1, b, nb))
			return (int)j;
	}
}

/* ------------------------------------------------------------ loading */

/* Copy n strings into one block: *text, off[n], len[n]. */
static int copy_strs(const sa_str *s, uint64_t n, char **text, uint32_t **off, uint32_t **len)
{
	size_t total = 0;

	for (uint64_t i = 0; i < n; i++)
		total += s[i].n;
	if (total >= UINT32_MAX)
		return sa_fail(SA_EDATA, "tokenizer strings too large");
	*text = sa_malloc(total + 1);
	*off = sa_malloc((n + 1) * sizeof **off);
	*len = sa_malloc((n + 1) * sizeof **len);
	if (!*text || !*off || !*len)
		return SA_EINTERNAL;
	total = 0;
	for (uint64_t i = 0; i < n; i++) {
		memcpy(*text + total, s[i].s, s[i].n);
		(*off)[i] = (uint32_t)total;
		(*len)[i] = (uint32_t)s[i].n;
		total += s[i].n;
	}
	return SA_OK;
}

static int str_is(sa_str s, const char *lit)
{
	return s.n == strlen(lit) && !memcmp(s.s, lit, s.n);
}

/* An optional token id key: keeps *id when absent or out of range. */
static int get_id(const sa_gguf *g, const char *key, int n, int *id)
{
	uint32_t x;
	int rc;

	if (!sa_gguf_has(g, key))
		return SA_OK;
	if ((rc = sa_gguf_get_u32(g, key, &x)))
		return rc;
	if (x < (uint32_t)n)
		*id = (int)x;
	return SA_OK;
}

static int get_flag(const sa_gguf *g, const char *key, int *flag)
{
	if (!sa_gguf_has(g, key))
		return SA_OK;
	return sa_gguf_get_bool(g, key, flag);
}

/* tokenizer.ggml.pre names, as llama.cpp groups them. */
static const struct {
	const char *name;
	uint8_t pre, ignore_merges, add_bos;
} pre_names[] = {
	{ "default", PRE_DEFAULT, 0, 0 },
	{ "gpt-2", PRE_GPT2, 0, 0 }, { "phi-2", PRE_GPT2, 0, 0 },
	{ "mpt", PRE_GPT2, 0, 0 }, { "olmo", PRE_GPT2, 0, 0 },
	{ "jais", PRE_GPT2, 0, 0 }, { "trillion", PRE_GPT2, 0, 0 },
	{ "gigachat", PRE_GPT2, 0, 0 }, { "exaone4", PRE_GPT2, 0, 0 },
	{ "jina-es", PRE_GPT2, 0, 0 }, { "jina-de", PRE_GPT2, 0, 0 },
	{ "jina-v2-es", PRE_GPT2, 0, 0 }, { "jina-v2-de", PRE_GPT2, 0, 0 },
	{ "llama3", PRE_LLAMA3, 1, 1 }, { "llama-v3", PRE_LLAMA3, 1, 1 },
	{ "llama-bpe", PRE_LLAMA3, 1, 1 }, { "falcon3", PRE_LLAMA3, 1, 1 },
	{ "pixtral", PRE_LLAMA3, 1, 1 },
	{ "dbrx", PRE_LLAMA3, 0, 0 }, { "smaug-bpe", PRE_LLAMA3, 0, 0 },
	{ "qwen2", PRE_QWEN2, 0, 0 }, { "deepseek-r1-qwen", PRE_QWEN2, 0, 0 },
	{ "stablelm2", PRE_QWEN2, 0, 0 }, { "hunyuan", PRE_QWEN2, 0, 0 },
	{ "megrez", PRE_QWEN2, 0, 0 },
	{ "qwen35", PRE_QWEN35, 0, 0 },
	{ "starcoder", PRE_STARCODER, 0, 0 }, { "refact", PRE_STARCODER, 0, 0 },
	{ "command-r", PRE_STARCODER, 0, 0 }, { "smollm", PRE_STARCODER, 0, 0 },
	{ "codeshell", PRE_STARCODER, 0, 0 }, { "exaone", PRE_STARCODER, 0, 0 },
	{ "minerva-7b", PRE_STARCODER, 0, 0 },
	{ "falcon", PRE_FALCON, 0, 0 },
};

static int pre_type(sa_str pre, int *ignore_merges, int *add_bos)
{
	if (pre.n == 0)
		return PRE_DEFAULT;
	for (size_t i = 0; i < sizeof pre_names / sizeof pre_names[0]; i++) {
		if (str_is(pre, pre_names[i].name)) {
			*ignore_merges = pre_names[i].ignore_merges;
			if (pre_names[i].add_bos)
				*add_bos = 1;
			return pre_names[i].pre;
		}
	}
	return -1;
}

/* Hex value of a "<0xNN>" token text, or -1. */
static int byte_token_value(const char *s, size_t n)
{
	int v = 0;

	if (n != 6 || memcmp(s, "<0x", 3) || s[5] != '>')
		return -1;
	for (int i = 3; i < 5; i++) {
		int c = s[i];
		int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10
		    : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
		if (d < 0)
			return -1;
		v = v * 16 + d;
	}
	return v;
}

/*
 * The bytes a token stands for when decoding.  dst needs room for 4 bytes
 * per byte of the token's text (an SPM "▁" of 3 bytes becomes 1 byte; a
 * gpt2 code point of 1-2 bytes becomes at most its own UTF-8).
 */
static size_t decode_token(const sa_vocab *v, int id, char *dst)
{
	const char *s = v->text + v->off[id];
	size_t n = v->len[id], k = 0;

	switch (v->ttype[id]) {
	case TT_CONTROL:
	case TT_UNKNOWN:
	case TT_UNUSED:
		return 0;
	case TT_USER:
		memcpy(dst, s, n);
		return n;
	case TT_BYTE: {
		int b = byte_token_value(s, n);
		if (b < 0)
			return 0;
		dst[0] = (char)b;
		return 1;
	}
	case TT_NORMAL:
		break;
	default:
		return 0;
	}
	if (v->type == VOCAB_SPM) {
		for (size_t i = 0; i < n; i++) {
			if (i + 3 <= n && !memcmp(s + i, "\xe2\x96\x81", 3)) {
				dst[k++] = ' ';
				i += 2;
			} else {
				dst[k++] = s[i];
			}
		}
		return k;
	}
	/* gpt2: every code point of the byte-level alphabet is one byte;
	 * anything else is kept as it is. */
	for (size_t i = 0; i < n;) {
		size_t at = i;
		uint32_t cp = utf8_next((const unsigned char *)s, n, &i);
		if (cp < 324 && v->bl_byte[cp] >= 0) {
			dst[k++] = (char)v->bl_byte[cp];
		} else {
			memcpy(dst + k, s + at, i - at);
			k += i - at;
		}
	}
	return k;
}

/* The gpt2 byte-level alphabet: printable bytes stand for themselves, the
 * others are moved to U+0100 and up, in byte order. */
static void build_byte_alphabet(sa_vocab *v)
{
	int next = 256;

	for (int i = 0; i < 324; i++)
		v->bl_byte[i] = -1;
	for (int b = 0; b < 256; b++) {
		int printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || b >= 0xae;
		int cp = printable ? b : next++;
		v->bl_len[b] = (uint8_t)utf8_put((uint32_t)cp, v->bl_utf8[b]);
		v->bl_byte[cp] = (int16_t)b;
	}
}

/*
 * Tokens known by their text, as llama.cpp knows them when the metadata has
 * no id for them.  Each is made a control token (so it is neither cut out of
 * text nor printed); the end-of-generation ones end generation.
 */
static const char *const eot_texts[] = {
	"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
	"<|end_of_text|>", "<EOT>", "_<EOT>", "[EOT]",
	"<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>",
	"<end_of_utterance>", NULL
};
static const char *const eom_texts[] = { "<|eom_id|>", NULL };
static const char *const fim_pre_texts[] = {
	"<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>",
	"<\xef\xbd\x9c" "fim\xe2\x96\x81" "begin\xef\xbd\x9c>", "<PRE>",
	"\xe2\x96\x81<PRE>", "<|code_prefix|>", "<|prefix|>", NULL
};
static const char *const fim_suf_texts[] = {
	"<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>",
	"<\xef\xbd\x9c" "fim\xe2\x96\x81" "hole\xef\xbd\x9c>", "<SUF>",
	"\xe2\x96\x81<SUF>", "<|code_suffix|>", "<|suffix|>", NULL
};
static const char *const fim_mid_texts[] = {
	"<|fim_middle|>", "<fim-middle>", "<fim_middle>",
	"<\xef\xbd\x9c" "fim\xe2\x96\x81" "end\xef\xbd\x9c>", "<MID>",
	"\xe2\x96\x81<MID>", "<|code_middle|>", "<|middle|>", NULL
};
static const char *const fim_pad_texts[] = {
	"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]", NULL
};
static const char *const fim_rep_texts[] = {
	"<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>", NULL
};
static const char *const fim_sep_texts[] = { "<|file_sep|>", NULL };
static const char *const eog_texts[] = {
	"<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>",
	"<|flush|>", "<|calls|>", "<end_of_turn>", "<|endoftext|>", "</s>",
	"<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]", "<|end_of_text|>",
	"<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
	"<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>",
	"[e~[", NULL
};

static int find_text(const sa_vocab *v, const char *s)
{
	return token_find(v, s, strlen(s));
}

/* The id under key, else the first of texts in the vocabulary made a
 * control token, else -1. */
static int special_id(sa_vocab *v, const sa_gguf *g, const char *key, const char *key2,
    const char *const *texts, int *rc)
{
	int id = -1;

	if ((*rc = get_id(g, key, v->n, &id)) || id >= 0)
		return id;
	if (key2 && ((*rc = get_id(g, key2, v->n, &id)) || id >= 0))
		return id;
	for (int i = 0; texts[i]; i++) {
		if ((id = find_text(v, texts[i])) >= 0) {
			v->ttype[id] = TT_CONTROL;
			return id;
		}
	}
	return -1;
}

static int find_specials(sa_vocab *v, const sa_gguf *g)
{
	int rc = SA_OK, id, end, ret, call, calls, flush, s, tool;

	v->eot = special_id(v, g, "tokenizer.ggml.eot_token_id", NULL, eot_texts, &rc);
	if (!rc)
		v->eom = special_id(v, g, "tokenizer.ggml.eom_token_id", NULL, eom_texts, &rc);
	if (!rc)
		special_id(v, g, "tokenizer.ggml.fim_pre_token_id", "tokenizer.ggml.prefix_token_id",
		    fim_pre_texts, &rc);
	if (!rc)
		special_id(v, g, "tokenizer.ggml.fim_suf_token_id", "tokenizer.ggml.suffix_token_id",
		    fim_suf_texts, &rc);
	if (!rc)
		special_id(v, g, "tokenizer.ggml.fim_mid_token_id", "tokenizer.ggml.middle_token_id",
		    fim_mid_texts, &rc);
	if (!rc && (id = special_id(v, g, "tokenizer.ggml.fim_pad_token_id", NULL, fim_pad_texts, &rc)) >= 0)
		v->eog[id] = 1;
	if (!rc && (id = special_id(v, g, "tokenizer.ggml.fim_rep_token_id", NULL, fim_rep_texts, &rc)) >= 0)
		v->eog[id] = 1;
	if (!rc && (id = special_id(v, g, "tokenizer.ggml.fim_sep_token_id", NULL, fim_sep_texts, &rc)) >= 0)
		v->eog[id] = 1;
	if (rc)
		return rc;
	for (int i = 0; eog_texts[i]; i++) {
		if ((id = find_text(v, eog_texts[i])) >= 0) {
			v->eog[id] = 1;
			if (v->ttype[id] != TT_CONTROL)
				v->ttype[id] = TT_CONTROL;
		}
	}
	/* gpt-oss: always printed */
	for (int i = 0; i < 4; i++) {
		static const char *const shown[] = { "<|channel|>", "<|message|>", "<|start|>", "<|constrain|>" };
		if ((id = find_text(v, shown[i])) >= 0)
			v->ttype[id] = TT_USER;
	}
	if (v->eos >= 0)
		v->eog[v->eos] = 1;
	if (v->eot >= 0)
		v->eog[v->eot] = 1;
	if (v->eom >= 0)
		v->eog[v->eom] = 1;

	/* Where <|end|> ends a message but not the turn (o200k_harmony,
	 * solar-open), it is printed and does not end generation. */
	end = find_text(v, "<|end|>");
	ret = find_text(v, "<|return|>");
	call = find_text(v, "<|call|>");
	calls = find_text(v, "<|calls|>");
	flush = find_text(v, "<|flush|>");
	if (end >= 0 && v->eog[end]) {
		int has_ret = ret >= 0 && v->eog[ret];
		int has_call = (call >= 0 && v->eog[call]) || (calls >= 0 && v->eog[calls]);
		int has_flush = flush >= 0 && v->eog[flush];
		if ((has_ret && has_call) || (has_call && has_flush)) {
			v->eog[end] = 0;
			v->ttype[end] = TT_USER;
		}
	}
	/* Gemma 4: </s> is ordinary text */
	s = find_text(v, "</s>");
	tool = find_text(v, "<|tool_response>");
	if (s >= 0 && tool >= 0 && v->eog[s] && v->eog[tool]) {
		v->eog[s] = 0;
		v->ttype[s] = TT_NORMAL;
	}
	return SA_OK;
}

static int cmp_user(const void *a, const void *b, void *arg)
{
	const sa_vocab *v = arg;
	int x = *(const int *)a, y = *(const int *)b;

	if (v->len[x] != v->len[y])
		return v->len[x] > v->len[y] ? -1 : 1;
	return x < y ? -1 : x > y;
}

/* Whether token i is cut out of a text before anything else: a
 * user-defined one, or with parse_special also a control or unknown one
 * (llama.cpp's special-token cache). */
static int is_cut(const sa_vocab *v, int i, int parse_special)
{
	int t = v->ttype[i];

	return v->len[i] > 0 && (t == TT_USER ||
	    (parse_special && (t == TT_CONTROL || t == TT_UNKNOWN)));
}

/* *list: the tokens is_cut picks, longest first. */
static int cut_list(const sa_vocab *v, int parse_special, int **list, int *n)
{
	int k = 0;

	for (int i = 0; i < v->n; i++)
		k += is_cut(v, i, parse_special);
	if (!k)
		return SA_OK;
	if (!(*list = sa_malloc((size_t)k * sizeof **list)))
		return SA_EINTERNAL;
	*n = 0;
	for (int i = 0; i < v->n; i++)
		if (is_cut(v, i, parse_special))
			(*list)[(*n)++] = i;
	qsort_r(*list, (size_t)k, sizeof **list, cmp_user, (void *)v);
	return SA_OK;
}

static int load(sa_vocab *v, const sa_gguf *g)
{
	const char *path = sa_gguf_path(g);
	sa_str model, pre = { "", 0 }, *strs = NULL;
	uint64_t n;
	int rc, et;
	const void *data;

	if ((rc = sa_gguf_get_str(g, "tokenizer.ggml.model", &model)))
		return rc;
	if (str_is(model, "llama")) {
		v->type = VOCAB_SPM;
		v->bos = 1;
		v->eos = 2;
		v->unk = 0;
		v->add_bos = 1;
		v->add_space_prefix = 1;
	} else if (str_is(model, "gpt2")) {
		v->type = VOCAB_BPE;
		if (sa_gguf_has(g, "tokenizer.ggml.pre")
		    && (rc = sa_gguf_get_str(g, "tokenizer.ggml.pre", &pre)))
			return rc;
		v->pre = pre_type(pre, &v->ignore_merges, &v->add_bos);
		if (v->pre < 0)
			return sa_fail(SA_EDATA, "%s: unsupported pre-tokenizer '%.*s'",
			    path, (int)pre.n, pre.s);
	} else {
		return sa_fail(SA_EDATA, "%s: unsupported tokenizer model '%.*s'",
		    path, (int)model.n, model.s);
	}

	if ((rc = sa_gguf_get_strs(g, "tokenizer.ggml.tokens", &n, &strs)))
		return rc;
	if (n == 0 || n > INT32_MAX / 2) {
		free(strs);
		return sa_fail(SA_EDATA, "%s: tokenizer.ggml.tokens: bad count %llu",
		    path, (unsigned long long)n);
	}
	v->n = (int)n;
	rc = copy_strs(strs, n, &v->text, &v->off, &v->len);
	free(strs);
	if (rc)
		return rc;

	v->score = sa_calloc(n, sizeof *v->score);
	v->ttype = sa_malloc(n);
	v->eog = sa_calloc(n, 1);
	if (!v->score || !v->ttype || !v->eog)
		return SA_EINTERNAL;
	memset(v->ttype, TT_NORMAL, n);

	if (sa_gguf_has(g, "tokenizer.ggml.scores")) {
		if ((rc = sa_gguf_get_arr(g, "tokenizer.ggml.scores", &et, &n, &data)))
			return rc;
		if ((et != SA_GGUF_F32 && et != SA_GGUF_I32) || n < (uint64_t)v->n)
			return sa_fail(SA_EDATA, "%s: tokenizer.ggml.scores: bad type or count", path);
		for (int i = 0; i < v->n; i++) {
			if (et == SA_GGUF_F32) {
				memcpy(&v->score[i], (const char *)data + 4 * (size_t)i, 4);
			} else {
				int32_t x;
				memcpy(&x, (const char *)data + 4 * (size_t)i, 4);
				v->score[i] = (float)x;
			}
		}
	}
	if (sa_gguf_has(g, "tokenizer.ggml.token_type")) {
		if ((rc = sa_gguf_get_arr(g, "tokenizer.ggml.token_type", &et, &n, &data)))
			return rc;
		if (et != SA_GGUF_I32 || n < (uint64_t)v->n)
			return sa_fail(SA_EDATA, "%s: tokenizer.ggml.token_type: bad type or count", path);
		for (int i = 0; i < v->n; i++) {
			int32_t x;
			memcpy(&x, (const char *)data + 4 * (size_t)i, 4);
			v->ttype[i] = x >= TT_NORMAL && x <= TT_BYTE ? (uint8_t)x : 0;
		}
	}

	/* A later duplicate text wins, as in llama.cpp's text -> id map. */
	if ((rc = strtab_init(&v->tok, (size_t)v->n)))
		return rc;
	for (int i = 0; i < v->n; i++)
		if (v->len[i])
			strtab_put(&v->tok, v->text, v->off, v->len, (uint32_t)i, 1);

	if (v->type == VOCAB_BPE) {
		if ((rc = sa_gguf_get_strs(g, "tokenizer.ggml.merges", &n, &strs)))
			return rc;
		if (n >= (1u << 24)) {
			free(strs);
			return sa_fail(SA_EDATA, "%s: tokenizer.ggml.merges: too many merges", path);
		}
		v->n_merges = (int)n;
		rc = copy_strs(strs, n, &v->mtext, &v->moff, &v->mlen);
		free(strs);
		if (rc)
			return rc;
		v->msplit = sa_malloc((n + 1) * sizeof *v->msplit);
		if (!v->msplit || (rc = strtab_init(&v->merge, n)))
			return SA_EINTERNAL;
		/* "left right", split at the first space after the first byte;
		 * the first of two equal merges keeps its rank. */
		for (uint32_t i = 0; i < n; i++) {
			const char *m = v->mtext + v->moff[i];
			const char *sp = v->mlen[i] > 1 ? memchr(m + 1, ' ', v->mlen[i] - 1) : NULL;
			if (!sp)
				continue;
			v->msplit[i] = (uint32_t)(sp - m);
			strtab_put(&v->merge, v->mtext, v->moff, v->mlen, i, 0);
		}
		build_byte_alphabet(v);
		v->bos = v->eos = v->unk = -1;
	}
	if ((rc = get_id(g, "tokenizer.ggml.bos_token_id", v->n, &v->bos))
	    || (rc = get_id(g, "tokenizer.ggml.eos_token_id", v->n, &v->eos))
	    || (rc = get_id(g, "tokenizer.ggml.unknown_token_id", v->n, &v->unk))
	    || (rc = get_flag(g, "tokenizer.ggml.add_bos_token", &v->add_bos))
	    || (rc = get_flag(g, "tokenizer.ggml.add_eos_token", &v->add_eos))
	    || (rc = get_flag(g, "tokenizer.ggml.add_space_prefix", &v->add_space_prefix)))
		return rc;
	if (v->bos >= v->n)
		v->bos = -1;
	if (v->eos >= v->n)
		v->eos = -1;
	if (v->unk >= v->n)
		v->unk = -1;

	if ((rc = find_specials(v, g)))
		return rc;

	/* SPM byte fallback: <0xNN>, else the byte itself as a token. */
	for (int b = 0; b < 256; b++) {
		char hex[7], one = (char)b;
		snprintf(hex, sizeof hex, "<0x%02X>", b);
		v->byte_tok[b] = token_find(v, hex, 6);
		if (v->byte_tok[b] < 0)
			v->byte_tok[b] = token_find(v, &one, 1);
	}

	/* spm: does any piece have a "▁" after another character? */
	if (v->type == VOCAB_SPM) {
		v->spm_words = 1;
		for (int i = 0; i < v->n && v->spm_words; i++) {
			const char *t = v->text + v->off[i];
			for (uint32_t j = 1; j + 3 <= v->len[i]; j++)
				if (!memcmp(t + j, "\xe2\x96\x81", 3)
				    && (j < 3 || memcmp(t + j - 3, "\xe2\x96\x81", 3))) {
					v->spm_words = 0;
					break;
				}
		}
	}

	if ((rc = cut_list(v, 0, &v->user, &v->n_user)) ||
	    (rc = cut_list(v, 1, &v->special, &v->n_special)))
		return rc;

	/* Decoded pieces, once, so that decoding is a copy. */
	{
		size_t total = 0;
		for (int i = 0; i < v->n; i++)
			total += 4 * (size_t)v->len[i];
		v->piece = sa_malloc(total + 1);
		v->poff = sa_malloc(v->n * sizeof *v->poff);
		v->plen = sa_malloc(v->n * sizeof *v->plen);
		if (!v->piece || !v->poff || !v->plen)
			return SA_EINTERNAL;
		total = 0;
		for (int i = 0; i < v->n; i++) {
			v->poff[i] = (uint32_t)total;
			v->plen[i] = (uint32_t)decode_token(v, i, v->piece + total);
			total += v->plen[i];
		}
	}
	return SA_OK;
}

int sa_vocab_load(sa_vocab **out, const sa_gguf *g)
{
	sa_vocab *v = sa_calloc(1, sizeof *v);
	int rc;

	*out = NULL;
	if (!v)
		return SA_EINTERNAL;
	if ((rc = load(v, g))) {
		sa_vocab_free(v);
		return rc;
	}
	*out = v;
	return SA_OK;
}

void sa_vocab_free(sa_vocab *v)
{
	if (!v)
		return;
	free(v->text);
	free(v->off);
	free(v->len);
	free(v->score);
	free(v->ttype);
	free(v->eog);
	free(v->piece);
	free(v->poff);
	free(v->plen);
	free(v->tok.slot);
	free(v->mtext);
	free(v->moff);
	free(v->mlen);
	free(v->msplit);
	free(v->merge.slot);
	free(v->user);
	free(v->special);
	free(v);
}

int sa_vocab_size(const sa_vocab *v) { return v->n; }
int sa_vocab_bos(const sa_vocab *v) { return v->bos; }
int sa_vocab_eos(const sa_vocab *v) { return v->eos; }
int sa_vocab_add_bos(const sa_vocab *v) { return v->add_bos && v->bos >= 0; }

int sa_vocab_is_eog(const sa_vocab *v, int tok)
{
	return tok >= 0 && tok < v->n && v->eog[tok];
}

/* A BOS id outside the vocabulary is never used: the tokenizer keeps its
 * default, as llama.cpp does, and this says so, as llama.cpp does. */
int
sa_vocab_check_bos(const sa_vocab *v, const sa_gguf *g)
{
	static const char key[] = "tokenizer.ggml.bos_token_id";
	uint32_t id;

	if (!sa_gguf_has(g, key) || sa_gguf_get_u32(g, key, &id) != SA_OK || id < (uint32_t)v->n)
		return SA_OK;
	if (sa_vocab_add_bos(v))
		return sa_fail(SA_EDATA, "%s: %s %u is outside the vocabulary of %d tokens: using %d instead",
		    sa_gguf_path(g), key, id, v->n, v->bos);
	return sa_fail(SA_EDATA, "%s: %s %u is outside the vocabulary of %d tokens: no BOS is added",
	    sa_gguf_path(g), key, id, v->n);
}

/* ------------------------------------------------------------ merging */

typedef struct sym {
	int prev, next;
	uint32_t start, n;       /* bytes of the word; n = 0 once merged away */
} sym;

typedef struct bigram {
	float score;             /* spm: the piece's score; gpt2: -rank */
	int left, right;
	uint32_t size;           /* bytes of both sides when queued */
} bigram;

/* Scratch reused across words. */
typedef struct merger {
	sym *sym;
	size_t cap_sym;
	bigram *heap;
	size_t n_heap, cap_heap;
} merger;

static int before(const bigram *a, const bigram *b)
{
	return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static int heap_push(merger *m, bigram b)
{
	size_t i;

	if (m->n_heap == m->cap_heap) {
		size_t cap = m->cap_heap ? 2 * m->cap_heap : 256;
		bigram *h = realloc(m->heap, cap * sizeof *h);
		if (!h)
			return sa_fail(SA_EINTERNAL, "out of memory");
		m->heap = h;
		m->cap_heap = cap;
	}
	for (i = m->n_heap++; i > 0 && before(&b, &m->heap[(i - 1) / 2]); i = (i - 1) / 2)
		m->heap[i] = m->heap[(i - 1) / 2];
	m->heap[i] = b;
	return SA_OK;
}

static bigram heap_pop(merger *m)
{
	bigram top = m->heap[0], last = m->heap[--m->n_heap];
	size_t i = 0, n = m->n_heap;

	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= n)
			break;
		if (c + 1 < n && before(&m->heap[c + 1], &m->heap[c]))
			c++;
		if (!before(&m->heap[c], &last))
			break;
		m->heap[i] = m->heap[c];
		i = c;
	}
	if (n)
		m->heap[i] = last;
	return top;
}

/* Queue the pair (l, r) if the vocabulary can merge it. */
static int try_pair(const sa_vocab *v, merger *m, const char *w, int l, int r)
{
	const sym *a, *b;
	bigram bg;

	if (l < 0 || r < 0)
		return SA_OK;
	a = &m->sym[l];
	b = &m->sym[r];
	if (v->type == VOCAB_SPM) {
		int id = token_find(v, w + a->start, a->n + b->n);
		if (id < 0)
			return SA_OK;
		bg.score = v->score[id];
	} else {
		int rank = merge_find(v, w + a->start, a->n, w + b->start, b->n);
		if (rank < 0)
			return SA_OK;
		bg.score = -(float)rank;
	}
	bg.left = l;
	bg.right = r;
	bg.size = a->n + b->n;
	return heap_push(m, bg);
}

static int push_byte_fallback(const sa_vocab *v, ivec *out, const char *s, size_t n)
{
	int rc;

	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		int id;
		if (v->type == VOCAB_SPM) {
			id = v->byte_tok[c] >= 0 ? v->byte_tok[c] : v->unk;
			if (id < 0)
				return sa_fail(SA_EDATA, "no token for byte 0x%02X and no unknown token", c);
		} else {
			/* a byte-level vocabulary has every byte; if not, drop it */
			id = token_find(v, (const char *)&c, 1);
			if (id < 0)
				continue;
		}
		if ((rc = ivec_push(out, id)))
			return rc;
	}
	return SA_OK;
}

/* Merge the n bytes at w into tokens and append them to out. */
static int merge_word(const sa_vocab *v, merger *m, const char *w, size_t n, ivec *out)
{
	size_t nsym = 0;
	int rc;

	if (n == 0)
		return SA_OK;
	if (v->ignore_merges) {
		int id = token_find(v, w, n);
		if (id >= 0)
			return ivec_push(out, id);
	}
	if (n > m->cap_sym) {
		sym *s = realloc(m->sym, n * sizeof *s);
		if (!s)
			return sa_fail(SA_EINTERNAL, "out of memory");
		m->sym = s;
		m->cap_sym = n;
	}
	/* one symbol per UTF-8 character */
	for (size_t off = 0; off < n;) {
		size_t len = utf8_len((unsigned char)w[off]);
		if (len > n - off)
			len = n - off;
		m->sym[nsym].prev = (int)nsym - 1;
		m->sym[nsym].next = off + len == n ? -1 : (int)nsym + 1;
		m->sym[nsym].start = (uint32_t)off;
		m->sym[nsym].n = (uint32_t)len;
		off += len;
		nsym++;
	}
	m->n_heap = 0;
	for (size_t i = 1; i < nsym; i++)
		if ((rc = try_pair(v, m, w, (int)i - 1, (int)i)))
			return rc;
	while (m->n_heap) {
		bigram b = heap_pop(m);
		sym *l = &m->sym[b.left], *r = &m->sym[b.right];
		if (l->n == 0 || r->n == 0 || l->n + r->n != b.size)
			continue;
		l->n += r->n;
		r->n = 0;
		l->next = r->next;
		if (r->next >= 0)
			m->sym[r->next].prev = b.left;
		if ((rc = try_pair(v, m, w, l->prev, b.left))
		    || (rc = try_pair(v, m, w, b.left, l->next)))
			return rc;
	}
	for (int i = 0; i != -1; i = m->sym[i].next) {
		const char *s = w + m->sym[i].start;
		int id = token_find(v, s, m->sym[i].n);
		rc = id >= 0 ? ivec_push(out, id) : push_byte_fallback(v, out, s, m->sym[i].n);
		if (rc)
			return rc;
	}
	return SA_OK;
}

/* ------------------------------------------------------------ pre-tokenizers */

/*
 * Each splitter cuts the code points [ini, end) into words and writes their
 * lengths to out, returning how many.  cp/cl are the text's code points and
 * their classes; positions past end read as "nothing" (class 0).
 */
#define CP(p)   ((p) < end ? cp[p] : 0xffffffffu)
#define CL(p)   ((p) < end ? cl[p] : 0u)
#define WORD(e) do { size_t e_ = (e); if (e_ > last) out[k++] = (uint32_t)(e_ - last); \
	last = e_; } while (0)
#define ISL(c)  ((c) & UC_LETTER)
#define ISN(c)  ((c) & UC_NUMBER)
#define ISS(c)  ((c) & UC_SPACE)

static int ascii_lower(uint32_t c)
{
	return c >= 'A' && c <= 'Z' ? (int)(c + 32) : (int)c;
}

/* 's 't 're 've 'm 'll 'd at pos: its length (0 if none); case-insensitive
 * when fold is set. */
static size_t contraction(const uint32_t *cp, size_t pos, size_t end, int fold)
{
	int a, b;

	if (cp[pos] != '\'' || pos + 1 >= end)
		return 0;
	a = fold ? ascii_lower(cp[pos + 1]) : (int)cp[pos + 1];
	if (a == 's' || a == 't' || a == 'm' || a == 'd')
		return 2;
	if (pos + 2 >= end)
		return 0;
	b = fold ? ascii_lower(cp[pos + 2]) : (int)cp[pos + 2];
	if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l'))
		return 3;
	return 0;
}

/*
 * The end of the word of white space at pos, the splitters' last case:
 * \s+(?!\S)|\s+, or a lone code point where no space is; with newlines,
 * \s*[\r\n]+ first.
 */
static size_t space_end(const uint32_t *cp, const uint16_t *cl, size_t pos, size_t end,
    int newlines)
{
	size_t ns, nl = 0;

	for (ns = 0; ISS(CL(pos + ns)); ns++)
		if (newlines && (cp[pos + ns] == '\r' || cp[pos + ns] == '\n'))
			nl = pos + ns + 1;
	if (nl)
		return nl;
	if (ns > 1 && pos + ns < end)
		return pos + ns - 1;	/* leave the last space to the next word */
	return pos + (ns ? ns : 1);
}

/* GPT-2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
static size_t split_gpt2(const uint32_t *cp, const uint16_t *cl, size_t ini, size_t end, uint32_t *out)
{
	size_t k = 0, last = ini, pos = ini;

	while (pos < end) {
		uint32_t c = cp[pos];
		unsigned f2 = c == ' ' ? CL(pos + 1) : cl[pos];
		size_t nc = contraction(cp, pos, end, 0);

		if (nc) {
			pos += nc;
			WORD(pos);
			continue;
		}
		if (ISL(f2)) {
			pos += c == ' ';
			while (ISL(CL(pos)))
				pos++;
			WORD(pos);
			continue;
		}
		if (ISN(f2)) {
			pos += c == ' ';
			while (ISN(CL(pos)))
				pos++;
			WORD(pos);
			continue;
		}
		if (f2 && !(f2 & (UC_SPACE | UC_LETTER | UC_NUMBER))) {
			pos += c == ' ';
			while (CL(pos) && !(CL(pos) & (UC_SPACE | UC_LETTER | UC_NUMBER)))
				pos++;
			WORD(pos);
			continue;
		}
		pos = space_end(cp, cl, pos, end, 0);
		WORD(pos);
	}
	return k;
}

/*
 * Llama 3 (digits = 3), Qwen2 (digits = 1), Qwen3.5 (digits = 1, letters
 * include marks):
 * (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
 *  ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
 */
static size_t split_llama3(const uint32_t *cp, const uint16_t *cl, size_t ini, size_t end,
    uint32_t *out, size_t digits, unsigned letter)
{
	size_t k = 0, last = ini, pos = ini;

	while (pos < end) {
		uint32_t c = cp[pos];
		unsigned f = cl[pos], f2;
		size_t nc = contraction(cp, pos, end, 1);

		if (nc) {
			pos += nc;
			WORD(pos);
			continue;
		}
		if (!(c == '\r' || c == '\n' || ISN(f)) && ((f | CL(pos + 1)) & letter)) {
			pos++;
			while (CL(pos) & letter)
				pos++;
			WORD(pos);
			continue;
		}
		if (ISN(f)) {
			size_t run = pos;
			while (ISN(CL(pos))) {
				if (++pos - run >= digits) {
					WORD(pos);
					run = pos;
				}
			}
			WORD(pos);
			continue;
		}
		f2 = c == ' ' ? CL(pos + 1) : f;
		if (!(f2 & (UC_SPACE | letter | UC_NUMBER))) {
			pos += c == ' ';
			while (CL(pos) && !(CL(pos) & (UC_SPACE | letter | UC_NUMBER)))
				pos++;
			while (CP(pos) == '\r' || CP(pos) == '\n')
				pos++;
			WORD(pos);
			continue;
		}
		pos = space_end(cp, cl, pos, end, 1);
		WORD(pos);
	}
	return k;
}

/*
 * The class passes: runs of a class and the text between them (PUNCT,
 * PUNCT_BT, NUMS), each member alone (NUM1), or [0-9]{3} matches left to
 * right (DIGIT3).  Outside ASCII, white space is never punctuation or a
 * number (the regexes see it as a space).
 */
static int in_class(uint32_t c, unsigned f, int pass)
{
	if (pass == PASS_PUNCT || pass == PASS_PUNCT_BT) {
		if (c < 0x80)
			return (c >= 0x21 && c <= 0x40 && !(c >= '0' && c <= '9'))
			    || (c >= 0x5b && c <= 0x5f) || (c >= 0x7b && c <= 0x7e)
			    || (c == '`' && pass == PASS_PUNCT_BT);
		return !(f & UC_SPACE) && (f & UC_PUNCT);
	}
	if (c < 0x80)
		return c >= '0' && c <= '9';
	return !(f & UC_SPACE) && (f & UC_NUMBER);
}

static size_t split_class(const uint32_t *cp, const uint16_t *cl, size_t ini, size_t end,
    uint32_t *out, int pass)
{
	size_t k = 0, last = ini, pos = ini;

	if (pass == PASS_DIGIT3) {
		while (pos + 3 <= end) {
			if (cp[pos] - '0' < 10 && cp[pos + 1] - '0' < 10 && cp[pos + 2] - '0' < 10) {
				WORD(pos);
				pos += 3;
				WORD(pos);
			} else {
				pos++;
			}
		}
		WORD(end);
		return k;
	}
	while (pos < end) {
		int in = in_class(cp[pos], cl[pos], pass);
		if (in && pass == PASS_NUM1) {
			WORD(pos);
			WORD(++pos);
			continue;
		}
		while (pos < end && in_class(cp[pos], cl[pos], pass) == in)
			pos++;
		WORD(pos);
	}
	return k;
}

#undef CP
#undef CL
#undef WORD

/* Scratch for one call of sa_tokenize. */
typedef struct work {
	merger m;
	uint32_t *cp;
	uint16_t *cl;
	uint32_t *words, *words2;
	char *buf;
	size_t cap_cp, cap_buf;
} work;

static int work_buf(work *w, size_t n)
{
	if (n > w->cap_buf) {
		char *b = realloc(w->buf, n);
		if (!b)
			return sa_fail(SA_EINTERNAL, "out of memory");
		w->buf = b;
		w->cap_buf = n;
	}
	return SA_OK;
}

static void work_free(work *w)
{
	free(w->m.sym);
	free(w->m.heap);
	free(w->cp);
	free(w->cl);
	free(w->words);
	free(w->words2);
	free(w->buf);
}

/* One pass over every current word. */
static size_t split_pass(work *w, size_t nwords, int pass)
{
	size_t start = 0, k = 0;

	for (size_t i = 0; i < nwords; i++) {
		size_t end = start + w->words[i];
		uint32_t *o = w->words2 + k;
		switch (pass) {
		case PASS_GPT2:
			k += split_gpt2(w->cp, w->cl, start, end, o);
			break;
		case PASS_LLAMA3:
			k += split_llama3(w->cp, w->cl, start, end, o, 3, UC_LETTER);
			break;
		case PASS_QWEN2:
			k += split_llama3(w->cp, w->cl, start, end, o, 1, UC_LETTER);
			break;
		case PASS_QWEN35:
			k += split_llama3(w->cp, w->cl, start, end, o, 1, UC_LETTER | UC_MARK);
			break;
		default:
			k += split_class(w->cp, w->cl, start, end, o, pass);
			break;
		}
		start = end;
	}
	uint32_t *t = w->words;
	w->words = w->words2;
	w->words2 = t;
	return k;
}

/* gpt2: pre-tokenize, map bytes to the byte-level alphabet, merge. */
static int bpe_fragment(const sa_vocab *v, work *w, const char *text, size_t len, ivec *out)
{
	const unsigned char *s = (const unsigned char *)text;
	size_t ncp = 0, nwords, start = 0;
	int rc;

	if (len + 1 > w->cap_cp) {
		free(w->cp);
		free(w->cl);
		free(w->words);
		free(w->words2);
		w->cp = malloc((len + 1) * sizeof *w->cp);
		w->cl = malloc((len + 1) * sizeof *w->cl);
		w->words = malloc((len + 1) * sizeof *w->words);
		w->words2 = malloc((len + 1) * sizeof *w->words2);
		w->cap_cp = len + 1;
		if (!w->cp || !w->cl || !w->words || !w->words2) {
			w->cap_cp = 0;
			return sa_fail(SA_EINTERNAL, "out of memory");
		}
	}
	for (size_t i = 0; i < len;) {
		w->cp[ncp] = utf8_next(s, len, &i);
		w->cl[ncp] = (uint16_t)uc_class(w->cp[ncp]);
		ncp++;
	}
	if (ncp == 0)
		return SA_OK;
	w->words[0] = (uint32_t)ncp;
	nwords = 1;
	for (const uint8_t *pass = pre_passes[v->pre]; *pass != PASS_END; pass++)
		nwords = split_pass(w, nwords, *pass);
	for (size_t i = 0; i < nwords; i++) {
		size_t n = 0;
		/* a code point is at most 4 bytes, each 2 in the alphabet */
		if ((rc = work_buf(w, 8 * (size_t)w->words[i])))
			return rc;
		for (size_t j = start; j < start + w->words[i]; j++) {
			char u[4];
			int nu = utf8_put(w->cp[j], u);
			for (int b = 0; b < nu; b++) {
				unsigned char c = (unsigned char)u[b];
				memcpy(w->buf + n, v->bl_utf8[c], v->bl_len[c]);
				n += v->bl_len[c];
			}
		}
		start += w->words[i];
		if ((rc = merge_word(v, &w->m, w->buf, n, out)))
			return rc;
	}
	return SA_OK;
}

/*
 * spm: optional leading space, spaces to "▁", merge the whole fragment.
 * When no piece has a "▁" after another character, no merge can cross the
 * start of a "▁" that follows another character, so the text is merged in
 * those words one by one: the same pieces, with a small heap.
 */
static int spm_fragment(const sa_vocab *v, work *w, const char *text, size_t len,
    int space, ivec *out)
{
	size_t n = 0;
	int rc;

	if ((rc = work_buf(w, 3 * (len + 1))))
		return rc;
	if (space) {
		memcpy(w->buf, "\xe2\x96\x81", 3);
		n = 3;
	}
	for (size_t i = 0; i < len; i++) {
		if (text[i] == ' ') {
			memcpy(w->buf + n, "\xe2\x96\x81", 3);
			n += 3;
		} else {
			w->buf[n++] = text[i];
		}
	}
	if (v->spm_words) {
		size_t word = 0, off = 0, l;
		int after_space = 0;
		for (; off < n; off += l) {
			int space;
			l = utf8_len((unsigned char)w->buf[off]);
			if (l > n - off)
				l = n - off;
			space = l == 3 && !memcmp(w->buf + off, "\xe2\x96\x81", 3);
			if (space && off > 0 && !after_space) {
				if ((rc = merge_word(v, &w->m, w->buf + word, off - word, out)))
					return rc;
				word = off;
			}
			after_space = space;
		}
		return merge_word(v, &w->m, w->buf + word, n - word, out);
	}
	return merge_word(v, &w->m, w->buf, n, out);
}

/* A piece of the input: text (id < 0) or a user-defined token. */
typedef struct frag {
	size_t off, len;
	int id;
} frag;

/* Cut the tokens list[0..nlist) out of the text, longest token first. */
static int partition(const sa_vocab *v, const int *list, int nlist, const char *text, size_t len,
    frag **out, size_t *nout)
{
	size_t n = 1, cap = 16;
	frag *f = malloc(cap * sizeof *f);

	if (!f)
		return sa_fail(SA_EINTERNAL, "out of memory");
	f[0] = (frag){ 0, len, -1 };
	for (int u = 0; u < nlist; u++) {
		int id = list[u];
		const char *t = v->text + v->off[id];
		size_t tl = v->len[id];
		for (size_t i = 0; i < n; i++) {
			const char *hit;
			if (f[i].id >= 0 || f[i].len < tl)
				continue;
			hit = memmem(text + f[i].off, f[i].len, t, tl);
			if (!hit)
				continue;
			/* [before][token][after]: after is examined next */
			if (n + 2 > cap) {
				frag *g = realloc(f, 2 * cap * sizeof *f);
				if (!g) {
					free(f);
					return sa_fail(SA_EINTERNAL, "out of memory");
				}
				f = g;
				cap *= 2;
			}
			size_t at = (size_t)(hit - text), end = f[i].off + f[i].len;
			frag before = { f[i].off, at - f[i].off, -1 };
			frag tok = { at, tl, id };
			frag after = { at + tl, end - at - tl, -1 };
			int nb = before.len > 0, na = after.len > 0;
			memmove(&f[i + nb + 1 + na], &f[i + 1], (n - i - 1) * sizeof *f);
			if (nb)
				f[i++] = before;
			f[i] = tok;
			if (na)
				f[i + 1] = after;
			n += nb + na;
		}
	}
	*out = f;
	*nout = n;
	return SA_OK;
}

static int tokenize(const sa_vocab *v, const char *text, size_t len, int add_special,
    int parse_special, int **toks, int *n)
{
	ivec out = { 0 };
	work w = { 0 };
	frag *f = NULL;
	size_t nf = 0;
	int rc = SA_OK, prev_special = 1;

	*toks = NULL;
	*n = 0;
	if (len > INT32_MAX / 4)
		return sa_fail(SA_EDATA, "text of %zu bytes is too long to tokenize", len);
	if (add_special && sa_vocab_add_bos(v) && (rc = ivec_push(&out, v->bos)))
		goto done;
	if (len > 0 && (rc = partition(v, parse_special ? v->special : v->user,
	    parse_special ? v->n_special : v->n_user, text, len, &f, &nf)))
		goto done;
	for (size_t i = 0; i < nf && !rc; i++) {
		if (f[i].id >= 0) {
			rc = ivec_push(&out, f[i].id);
			prev_special = 1;
		} else if (v->type == VOCAB_SPM) {
			rc = spm_fragment(v, &w, text + f[i].off, f[i].len,
			    v->add_space_prefix && prev_special, &out);
			prev_special = 0;
		} else {
			rc = bpe_fragment(v, &w, text + f[i].off, f[i].len, &out);
		}
	}
	if (!rc && add_special && v->add_eos && v->eos >= 0)
		rc = ivec_push(&out, v->eos);
	if (!rc && !out.a)
		rc = (out.a = malloc(sizeof *out.a)) ? SA_OK : sa_fail(SA_EINTERNAL, "out of memory");
done:
	free(f);
	work_free(&w);
	if (rc) {
		free(out.a);
		return rc;
	}
	*toks = out.a;
	*n = (int)out.n;
	return SA_OK;
}

int sa_tokenize(const sa_vocab *v, const char *text, size_t len, int add_special,
    int **toks, int *n)
{
	return tokenize(v, text, len, add_special, 0, toks, n);
}

int sa_tokenize_special(const sa_vocab *v, const char *text, size_t len, int add_special,
    int **toks, int *n)
{
	return tokenize(v, text, len, add_special, 1, toks, n);
}

int sa_tokenize_after(const sa_vocab *v, const char *before, const char *text, size_t len,
    int **toks, int *n, int *whole)
{
	size_t nb = strlen(before);
	char *s = sa_malloc(nb + len + 1);
	int *bt = NULL, nbt = 0, skip = 0, rc;

	*toks = NULL;
	*n = 0;
	if (!s)
		return SA_EINTERNAL;
	memcpy(s, before, nb);
	memcpy(s + nb, text, len);
	s[nb + len] = '\0';
	rc = tokenize(v, s, nb + len, 0, 0, toks, n);
	free(s);
	if (rc == SA_OK && (rc = tokenize(v, before, nb, 0, 0, &bt, &nbt)) == SA_OK) {
		while (skip < nbt && skip < *n && (*toks)[skip] == bt[skip])
			skip++;
		memmove(*toks, *toks + skip, (size_t)(*n -= skip) * sizeof **toks);
		*whole = skip == nbt;
	}
	free(bt);
	if (rc != SA_OK) {
		free(*toks);
		*toks = NULL;
		*n = 0;
	}
	return rc;
}

/* ------------------------------------------------------------ decoding */

int sa_token_to_piece(const sa_vocab *v, int tok, char *buf, int cap)
{
	int n;

	if (tok < 0 || tok >= v->n)
		return 0;
	n = (int)v->plen[tok];
	if (cap > 0)
		memcpy(buf, v->piece + v->poff[tok], (size_t)(n < cap ? n : cap));
	return n;
}

const char *sa_token_text(const sa_vocab *v, int tok, size_t *len)
{
	if (tok < 0 || tok >= v->n)
		return NULL;
	*len = v->len[tok];
	return v->text + v->off[tok];
}

int sa_detokenize(const sa_vocab *v, const int *toks, int n, char **text, size_t *len)
{
	size_t total = 0, k = 0;
	int strip = v->add_space_prefix;
	char *s;

	for (int i = 0; i < n; i++)
		if (toks[i] >= 0 && toks[i] < v->n)
			total += v->plen[toks[i]];
	if (!(s = sa_malloc(total + 1)))
		return SA_EINTERNAL;
	for (int i = 0; i < n; i++) {
		const char *p;
		size_t pn;
		if (toks[i] < 0 || toks[i] >= v->n)
			continue;
		p = v->piece + v->poff[toks[i]];
		pn = v->plen[toks[i]];
		if (v->ttype[toks[i]] == TT_CONTROL || v->ttype[toks[i]] == TT_USER) {
			/* text after BOS or a user-defined token was given a
			 * leading space of its own */
			memcpy(s + k, p, pn);
			k += pn;
			strip = v->add_space_prefix;
			continue;
		}
		if (pn == 0)
			continue;
		if (strip && p[0] == ' ') {
			p++;
			pn--;
		}
		strip = 0;
		memcpy(s + k, p, pn);
		k += pn;
	}
	s[k] = '\0';
	*text = s;
	if (len)
		*len = k;
	return SA_OK;
}
