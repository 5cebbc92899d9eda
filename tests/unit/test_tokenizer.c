/*
 * test_tokenizer - the tokenizer against llama.cpp's vocabulary test vectors
 * (every case of ggml-vocab-*.gguf.inp/.out, as its test-tokenizer-0 reads
 * them: cases separated by "\n__ggml_vocab_test__\n", one line of ids per
 * case, no BOS), the decode round trip, BOS/EOS, pieces, byte fallback,
 * a text's tokens after other text (sa_tokenize_after), and
 * small SentencePiece vocabularies written here to check scores, byte
 * fallback and user-defined tokens in isolation.
 *
 * usage: test_tokenizer VOCAB_DIR
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sa.h"
#include "t.h"

static const char *const vocabs[] = { "llama-spm", "gpt-2", "llama-bpe", "qwen2" };
#define NVOCAB (int)(sizeof vocabs / sizeof vocabs[0])

static const char *dir;

static sa_vocab *open_vocab(const char *path, sa_gguf **g)
{
	sa_vocab *v = NULL;

	*g = NULL;
	if (sa_gguf_open(g, path) != SA_OK) {
		fprintf(stderr, "%s\n", sa_error());
		return NULL;
	}
	if (sa_vocab_load(&v, *g) != SA_OK) {
		fprintf(stderr, "%s\n", sa_error());
		sa_gguf_close(*g);
		*g = NULL;
	}
	return v;
}

static int same_ids(const int *a, int na, const int *b, int nb)
{
	return na == nb && (na == 0 || !memcmp(a, b, na * sizeof *a));
}

static void print_ids(const char *what, const int *a, int n)
{
	fprintf(stderr, "  %s:", what);
	for (int i = 0; i < n; i++)
		fprintf(stderr, " %d", a[i]);
	fprintf(stderr, "\n");
}

/* Tokenize text and compare with the expected ids; 1 if equal. */
static int expect(const sa_vocab *v, const char *text, size_t len, int add_special,
    const int *want, int nwant)
{
	int *got = NULL, n = 0, ok;

	CHECK_OK(sa_tokenize(v, text, len, add_special, &got, &n));
	ok = same_ids(got, n, want, nwant);
	if (!ok) {
		fprintf(stderr, "text '%.*s':\n", (int)len, text);
		print_ids("want", want, nwant);
		print_ids("got ", got, n);
	}
	free(got);
	return ok;
}

/* decode(encode(text)) == text; 1 if so. */
static int round_trip(const sa_vocab *v, const char *text, size_t len, int add_special)
{
	int *ids = NULL, n = 0, ok;
	char *back = NULL;
	size_t blen = 0;

	if (sa_tokenize(v, text, len, add_special, &ids, &n) != SA_OK)
		return 0;
	if (sa_detokenize(v, ids, n, &back, &blen) != SA_OK) {
		free(ids);
		return 0;
	}
	ok = blen == len && !memcmp(back, text, len) && back[blen] == '\0';
	if (!ok)
		fprintf(stderr, "round trip of '%.*s' gave '%s'\n", (int)len, text, back);
	free(ids);
	free(back);
	return ok;
}

/* Every case of one vocabulary's test file. */
static void test_vectors(const char *name)
{
	char path[4096], *inp = NULL, *outp = NULL;
	size_t ninp, nout;
	sa_gguf *g;
	sa_vocab *v;
	int cases = 0, pass = 0, trips = 0;
	const char sep[] = "\n__ggml_vocab_test__\n";

	snprintf(path, sizeof path, "%s/ggml-vocab-%s.gguf", dir, name);
	v = open_vocab(path, &g);
	CHECK(v != NULL);
	if (!v)
		return;
	snprintf(path, sizeof path, "%s/ggml-vocab-%s.gguf.inp", dir, name);
	CHECK_OK(sa_file_read(path, &inp, &ninp));
	snprintf(path, sizeof path, "%s/ggml-vocab-%s.gguf.out", dir, name);
	CHECK_OK(sa_file_read(path, &outp, &nout));
	if (!inp || !outp)
		goto done;

	char *text = inp, *end = inp + ninp, *line = outp;
	while (text < end && *line) {
		char *next = memmem(text, (size_t)(end - text), sep, sizeof sep - 1);
		size_t len = next ? (size_t)(next - text) : (size_t)(end - text);
		char *eol = strchr(line, '\n');
		int want[4096], nwant = 0;

		if (eol)
			*eol = '\0';
		for (char *p = line; *p;) {
			char *q;
			long id = strtol(p, &q, 10);
			if (q == p)
				break;
			if (nwant < 4096)
				want[nwant++] = (int)id;
			p = q;
		}
		cases++;
		pass += expect(v, text, len, 0, want, nwant);
		trips += round_trip(v, text, len, 0);
		text = next ? next + sizeof sep - 1 : end;
		line = eol ? eol + 1 : line + strlen(line);
	}
	CHECK(cases > 20);
	CHECK(pass == cases);
	CHECK(trips == cases);
	fprintf(stderr, "%s: %d/%d cases match llama.cpp, %d/%d round trips\n",
	    name, pass, cases, trips, cases);
done:
	free(inp);
	free(outp);
	sa_vocab_free(v);
	sa_gguf_close(g);
}

static sa_vocab *open_named(const char *name, sa_gguf **g)
{
	char path[4096];

	snprintf(path, sizeof path, "%s/ggml-vocab-%s.gguf", dir, name);
	return open_vocab(path, g);
}

static int piece_is(const sa_vocab *v, int tok, const char *want)
{
	char buf[64];
	int n = sa_token_to_piece(v, tok, buf, sizeof buf);

	return n == (int)strlen(want) && !memcmp(buf, want, n);
}

/* BOS/EOS, end of generation, pieces, byte fallback on the real vocabularies. */
static void test_specials(void)
{
	sa_gguf *g;
	sa_vocab *v;
	char buf[8];

	/* llama-spm: BOS added by default, leading space, byte fallback */
	if ((v = open_named("llama-spm", &g))) {
		CHECK(sa_vocab_size(v) == 32000);
		CHECK(sa_vocab_bos(v) == 1);
		CHECK(sa_vocab_eos(v) == 2);
		CHECK(sa_vocab_add_bos(v) == 1);
		CHECK(sa_vocab_is_eog(v, 2));
		CHECK(!sa_vocab_is_eog(v, 1));
		CHECK(!sa_vocab_is_eog(v, 15043));
		CHECK(!sa_vocab_is_eog(v, -1));
		CHECK(!sa_vocab_is_eog(v, 32000));
		CHECK(expect(v, "Hello world", 11, 1, (int[]){ 1, 15043, 3186 }, 3));
		CHECK(expect(v, "", 0, 1, (int[]){ 1 }, 1));
		CHECK(expect(v, "", 0, 0, NULL, 0));
		/* the text "<s>" is text, not BOS */
		CHECK(expect(v, "<s>", 3, 0, (int[]){ 529, 29879, 29958 }, 3));
		/* U+1F999 is no piece: its four UTF-8 bytes, <0xF0> = 3 + 0xF0 */
		CHECK(expect(v, "\xf0\x9f\xa6\x99", 4, 0,
		    (int[]){ 29871, 3 + 0xf0, 3 + 0x9f, 3 + 0xa6, 3 + 0x99 }, 5));
		CHECK(round_trip(v, "\xf0\x9f\xa6\x99 x", 6, 1));
		CHECK(round_trip(v, " leading space", 14, 1));
		CHECK(round_trip(v, "Hello world", 11, 1));
		CHECK(piece_is(v, 15043, " Hello"));
		CHECK(piece_is(v, 3 + '\n', "\n"));
		CHECK(piece_is(v, 1, ""));
		CHECK(piece_is(v, 2, ""));
		CHECK(piece_is(v, 0, ""));
		/* a short buffer gets a prefix; the full length is returned */
		memset(buf, '#', sizeof buf);
		CHECK(sa_token_to_piece(v, 15043, buf, 3) == 6);
		CHECK(!memcmp(buf, " He#", 4));
		CHECK(sa_token_to_piece(v, -5, buf, sizeof buf) == 0);
		sa_vocab_free(v);
		sa_gguf_close(g);
	} else {
		CHECK(0);
	}

	/* gpt-2: no BOS, one id for BOS/EOS/end of text */
	if ((v = open_named("gpt-2", &g))) {
		CHECK(sa_vocab_size(v) == 50257);
		CHECK(sa_vocab_bos(v) == 50256);
		CHECK(sa_vocab_eos(v) == 50256);
		CHECK(sa_vocab_add_bos(v) == 0);
		CHECK(sa_vocab_is_eog(v, 50256));
		CHECK(expect(v, "Hello world", 11, 1, (int[]){ 15496, 995 }, 2));
		CHECK(expect(v, "<|endoftext|>", 13, 1,
		    (int[]){ 27, 91, 437, 1659, 5239, 91, 29 }, 7));
		CHECK(piece_is(v, 995, " world"));
		CHECK(piece_is(v, 50256, ""));
		/* invalid UTF-8 becomes U+FFFD, as llama.cpp does */
		{
			int *ids, n;
			char *back;
			size_t blen;
			CHECK_OK(sa_tokenize(v, "a\xff", 2, 0, &ids, &n));
			CHECK_OK(sa_detokenize(v, ids, n, &back, &blen));
			CHECK(blen == 4 && !memcmp(back, "a\xef\xbf\xbd", 4));
			free(ids);
			free(back);
		}
		sa_vocab_free(v);
		sa_gguf_close(g);
	} else {
		CHECK(0);
	}

	/* llama-bpe (Llama 3): BOS by default, <|eot_id|> ends generation */
	if ((v = open_named("llama-bpe", &g))) {
		CHECK(sa_vocab_bos(v) == 128000);
		CHECK(sa_vocab_eos(v) == 128001);
		CHECK(sa_vocab_add_bos(v) == 1);
		CHECK(sa_vocab_is_eog(v, 128001));
		CHECK(sa_vocab_is_eog(v, 128009));
		CHECK(!sa_vocab_is_eog(v, 128000));
		CHECK(expect(v, "Hello world", 11, 1, (int[]){ 128000, 9906, 1917 }, 3));
		CHECK(expect(v, "Hello world", 11, 0, (int[]){ 9906, 1917 }, 2));
		CHECK(round_trip(v, "Hello world", 11, 1));
		CHECK(piece_is(v, 128000, ""));
		CHECK(piece_is(v, 1917, " world"));
		sa_vocab_free(v);
		sa_gguf_close(g);
	} else {
		CHECK(0);
	}

	/* qwen2: no BOS; <|endoftext|> and <|im_end|> end generation */
	if ((v = open_named("qwen2", &g))) {
		CHECK(sa_vocab_add_bos(v) == 0);
		CHECK(sa_vocab_is_eog(v, 151643));
		CHECK(sa_vocab_is_eog(v, 151645));
		CHECK(!sa_vocab_is_eog(v, 151644));
		/* user-defined tokens are cut out of the text even so */
		CHECK(expect(v, "a[PAD151650]b", 13, 0, (int[]){ 64, 151650, 65 }, 3));
		CHECK(round_trip(v, "a[PAD151650]b", 13, 0));
		sa_vocab_free(v);
		sa_gguf_close(g);
	} else {
		CHECK(0);
	}
}

/* ---------------------------------------------------------- synthetic SPM */

enum { T_NORMAL = 1, T_UNKNOWN = 2, T_CONTROL = 3, T_USER = 4, T_BYTE = 6 };

typedef struct piece {
	const char *text;
	float score;
	int type;
} piece;

/* Write a "llama" vocabulary of the given pieces after <unk> <s> </s>
 * (and the 256 byte tokens when bytes is set), then load it. */
static sa_vocab *make_spm(const char *path, const piece *p, int np, int bytes,
    int add_space_prefix, sa_gguf **g)
{
	int n = 3 + (bytes ? 256 : 0) + np, k = 0;
	sa_str *tok = calloc(n, sizeof *tok);
	float *score = calloc(n, sizeof *score);
	int32_t *type = calloc(n, sizeof *type);
	char (*hex)[8] = calloc(256, sizeof *hex);
	sa_gguf_writer *w = sa_gguf_writer_new();
	sa_vocab *v = NULL;

	tok[k] = (sa_str){ "<unk>", 5 }; type[k++] = T_UNKNOWN;
	tok[k] = (sa_str){ "<s>", 3 }; type[k++] = T_CONTROL;
	tok[k] = (sa_str){ "</s>", 4 }; type[k++] = T_CONTROL;
	for (int b = 0; bytes && b < 256; b++) {
		snprintf(hex[b], 8, "<0x%02X>", b);
		tok[k] = (sa_str){ hex[b], 6 };
		type[k++] = T_BYTE;
	}
	for (int i = 0; i < np; i++) {
		tok[k] = (sa_str){ p[i].text, strlen(p[i].text) };
		score[k] = p[i].score;
		type[k++] = p[i].type ? p[i].type : T_NORMAL;
	}
	CHECK_OK(sa_gguf_writer_set_str(w, "general.architecture", "llama"));
	CHECK_OK(sa_gguf_writer_set_str(w, "tokenizer.ggml.model", "llama"));
	CHECK_OK(sa_gguf_writer_set_strs(w, "tokenizer.ggml.tokens", n, tok));
	CHECK_OK(sa_gguf_writer_set_arr(w, "tokenizer.ggml.scores", SA_GGUF_F32, n, score));
	CHECK_OK(sa_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", SA_GGUF_I32, n, type));
	CHECK_OK(sa_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 1));
	CHECK_OK(sa_gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 2));
	CHECK_OK(sa_gguf_writer_set_u32(w, "tokenizer.ggml.unknown_token_id", 0));
	CHECK_OK(sa_gguf_writer_set_bool(w, "tokenizer.ggml.add_eos_token", 1));
	if (add_space_prefix >= 0)
		CHECK_OK(sa_gguf_writer_set_bool(w, "tokenizer.ggml.add_space_prefix", add_space_prefix));
	CHECK_OK(sa_gguf_writer_save(w, path));
	sa_gguf_writer_free(w);
	free(tok);
	free(score);
	free(type);
	free(hex);
	v = open_vocab(path, g);
	CHECK(v != NULL);
	return v;
}

static void test_synthetic(const char *tmp)
{
	char path[4096];
	sa_gguf *g;
	sa_vocab *v;
	/* ids: 3 + 256 + index below */
	const piece p[] = {
		{ "\xe2\x96\x81", -1, 0 },      /* 259 ▁ */
		{ "a", -2, 0 },                 /* 260 */
		{ "b", -2, 0 },                 /* 261 */
		{ "c", -2, 0 },                 /* 262 */
		{ "ab", -5, 0 },                /* 263 */
		{ "bc", -3, 0 },                /* 264 */
		{ "\xe2\x96\x81" "a", -10, 0 }, /* 265 ▁a */
		{ "abc", -20, 0 },              /* 266 */
		{ "<tag>", 0, T_USER },         /* 267 */
		{ "aa", -5, 0 },                /* 268 */
	};
	enum { SP = 259, A, B, C, AB, BC, SPA, ABC, TAG, AA };

	snprintf(path, sizeof path, "%s/spm-bytes.gguf", tmp);
	if ((v = make_spm(path, p, 10, 1, -1, &g))) {
		/* "▁abc": bc (-3) beats ab (-5) and ▁a (-10); then ▁a (-10)
		 * beats a + bc = abc (-20); ▁abc is no piece. */
		CHECK(expect(v, "abc", 3, 0, (int[]){ SPA, BC }, 2));
		/* "▁aab": aa and ab tie at -5 and the leftmost pair wins */
		CHECK(expect(v, "aab", 3, 0, (int[]){ SP, AA, B }, 3));
		CHECK(expect(v, "bcbc", 4, 0, (int[]){ SP, BC, BC }, 3));
		/* no piece for d: its byte; é is two bytes */
		CHECK(expect(v, "ad", 2, 0, (int[]){ SPA, 3 + 'd' }, 2));
		CHECK(expect(v, "\xc3\xa9", 2, 0, (int[]){ SP, 3 + 0xc3, 3 + 0xa9 }, 3));
		/* BOS and EOS (add_eos_token is set) */
		CHECK(expect(v, "a", 1, 1, (int[]){ 1, SPA, 2 }, 3));
		CHECK(sa_vocab_eos(v) == 2);
		/* a user-defined token splits the text, and the text after it
		 * gets a space in front like the start of the text */
		CHECK(expect(v, "a<tag>b", 7, 0, (int[]){ SPA, TAG, SP, B }, 4));
		CHECK(expect(v, "<tag>a", 6, 0, (int[]){ TAG, SPA }, 2));
		CHECK(round_trip(v, "<tag> a<tag>", 12, 1));
		CHECK(round_trip(v, "ab cd\xc3\xa9", 7, 1));
		CHECK(round_trip(v, "a<tag>b", 7, 1));
		CHECK(piece_is(v, SPA, " a"));
		CHECK(piece_is(v, TAG, "<tag>"));
		CHECK(piece_is(v, 3 + 'd', "d"));
		sa_vocab_free(v);
		sa_gguf_close(g);
	}

	/* Higher score for ab: "▁" "ab" "c". */
	{
		piece q[10];
		memcpy(q, p, sizeof q);
		q[4].score = -2.5f;
		snprintf(path, sizeof path, "%s/spm-ab.gguf", tmp);
		if ((v = make_spm(path, q, 10, 1, -1, &g))) {
			/* "▁abc": ab, then abc (-20) as nothing else is left */
			CHECK(expect(v, "abc", 3, 0, (int[]){ SP, ABC }, 2));
			/* "▁abb": ab, then ▁ab and abb are no pieces */
			CHECK(expect(v, "abb", 3, 0, (int[]){ SP, AB, B }, 3));
			sa_vocab_free(v);
			sa_gguf_close(g);
		}
	}

	/* No byte tokens: characters without a piece become <unk>;
	 * add_space_prefix = false: no leading ▁. */
	snprintf(path, sizeof path, "%s/spm-unk.gguf", tmp);
	if ((v = make_spm(path, p, 10, 0, 0, &g))) {
		enum { SP0 = 3, A0, B0, C0, AB0, BC0, SPA0 };
		CHECK(expect(v, "adb", 3, 0, (int[]){ A0, 0, B0 }, 3));
		CHECK(expect(v, "a b", 3, 0, (int[]){ A0, SP0, B0 }, 3));
		CHECK(expect(v, " a", 2, 0, (int[]){ SPA0 }, 1));
		CHECK(round_trip(v, " a b", 4, 0));
		sa_vocab_free(v);
		sa_gguf_close(g);
	}
	unlink(path);
	snprintf(path, sizeof path, "%s/spm-bytes.gguf", tmp);
	unlink(path);
	snprintf(path, sizeof path, "%s/spm-ab.gguf", tmp);
	unlink(path);
}

/* Metadata the tokenizer refuses. */
static void test_bad(const char *tmp)
{
	char path[4096];
	sa_gguf_writer *w = sa_gguf_writer_new();
	sa_gguf *g = NULL;
	sa_vocab *v = NULL;
	sa_str tok[2] = { { "a", 1 }, { "b", 1 } };

	snprintf(path, sizeof path, "%s/bad.gguf", tmp);
	CHECK_OK(sa_gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2"));
	CHECK_OK(sa_gguf_writer_set_str(w, "tokenizer.ggml.pre", "no-such-regex"));
	CHECK_OK(sa_gguf_writer_set_strs(w, "tokenizer.ggml.tokens", 2, tok));
	CHECK_OK(sa_gguf_writer_set_strs(w, "tokenizer.ggml.merges", 0, NULL));
	CHECK_OK(sa_gguf_writer_save(w, path));
	sa_gguf_writer_free(w);
	CHECK_OK(sa_gguf_open(&g, path));
	if (g) {
		CHECK(sa_vocab_load(&v, g) == SA_EDATA);
		CHECK(v == NULL);
		CHECK(strstr(sa_error(), "no-such-regex") != NULL);
		sa_gguf_close(g);
	}

	w = sa_gguf_writer_new();
	CHECK_OK(sa_gguf_writer_set_str(w, "tokenizer.ggml.model", "wordpiece?"));
	CHECK_OK(sa_gguf_writer_set_strs(w, "tokenizer.ggml.tokens", 2, tok));
	CHECK_OK(sa_gguf_writer_save(w, path));
	sa_gguf_writer_free(w);
	CHECK_OK(sa_gguf_open(&g, path));
	if (g) {
		CHECK(sa_vocab_load(&v, g) == SA_EDATA);
		CHECK(strstr(sa_error(), "tokenizer model") != NULL);
		sa_gguf_close(g);
	}

	/* gpt2 without merges */
	w = sa_gguf_writer_new();
	CHECK_OK(sa_gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2"));
	CHECK_OK(sa_gguf_writer_set_strs(w, "tokenizer.ggml.tokens", 2, tok));
	CHECK_OK(sa_gguf_writer_save(w, path));
	sa_gguf_writer_free(w);
	CHECK_OK(sa_gguf_open(&g, path));
	if (g) {
		CHECK(sa_vocab_load(&v, g) == SA_EDATA);
		CHECK(strstr(sa_error(), "merges") != NULL);
		sa_gguf_close(g);
	}
	unlink(path);
}

/* A text's tokens where it follows other text: after a newline, SentencePiece
 * gives it no leading space; a text that merges with what is before it is
 * told. */
static void test_after(void)
{
	sa_gguf *g;
	sa_vocab *v;
	int *t, n, whole;

	if ((v = open_named("llama-spm", &g))) {
		CHECK_OK(sa_tokenize_after(v, "\n", "Hello world", 11, &t, &n, &whole));
		CHECK(whole && n == 2 && piece_is(v, t[0], "Hello") && t[1] == 3186);
		free(t);
		CHECK_OK(sa_tokenize_after(v, "x", " ->", 3, &t, &n, &whole));
		CHECK(whole && n > 0 && t[0] != 1);
		free(t);
		sa_vocab_free(v);
		sa_gguf_close(g);
	}
	/* gpt-2: "\n\n" is one token, so a newline after a newline is no
	 * token of its own */
	if ((v = open_named("gpt-2", &g))) {
		CHECK_OK(sa_tokenize_after(v, "\n", "\n", 1, &t, &n, &whole));
		CHECK(!whole);
		free(t);
		CHECK_OK(sa_tokenize_after(v, "\n", "Hello", 5, &t, &n, &whole));
		CHECK(whole && n == 1 && piece_is(v, t[0], "Hello"));
		free(t);
		sa_vocab_free(v);
		sa_gguf_close(g);
	}
}

int main(int argc, char **argv)
{
	const char *tmp = getenv("BATS_TEST_TMPDIR");

	if (argc != 2) {
		fprintf(stderr, "usage: test_tokenizer VOCAB_DIR\n");
		return 64;
	}
	dir = argv[1];
	if (!tmp || !*tmp)
		tmp = "/tmp";
	for (int i = 0; i < NVOCAB; i++)
		test_vectors(vocabs[i]);
	test_specials();
	test_after();
	test_synthetic(tmp);
	test_bad(tmp);
	return t_done();
}
