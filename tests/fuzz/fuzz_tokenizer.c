/*
 * fuzz_tokenizer.c - the four reference vocabularies of tests/data/vocab
 * (SentencePiece, GPT-2, Llama 3 and Qwen2 byte-level BPE) on arbitrary
 * bytes.  The first byte picks the vocabulary and whether BOS is added;
 * the rest is the text.  Every id must be in range; the pieces must agree
 * with the detokenized text; and for the byte-level vocabularies on valid
 * UTF-8, decoding must give back the text exactly (invalid sequences become
 * U+FFFD, as in llama.cpp).
 *
 */
#include "fuzz.h"

/* Strict UTF-8 (no overlongs, surrogates or code points past U+10FFFF):
 * what llama.cpp's tokenizers take without replacing anything by U+FFFD. */
static int
tok_valid_utf8(const unsigned char *s, size_t n)
{
	for (size_t i = 0; i < n;) {
		unsigned c = s[i], k, cp;
		if (c < 0x80) {
			i++;
			continue;
		}
		k = c >= 0xf0 ? 3 : c >= 0xe0 ? 2 : c >= 0xc0 ? 1 : 0;
		if (!k || c > 0xf4 || n - i <= k)
			return 0;
		cp = c & (0x3f >> k);
		for (unsigned j = 1; j <= k; j++) {
			if ((s[i + j] & 0xc0) != 0x80)
				return 0;
			cp = cp << 6 | (s[i + j] & 0x3f);
		}
		if ((k == 1 && cp < 0x80) || (k == 2 && cp < 0x800) || (k == 3 && cp < 0x10000) ||
		    cp > 0x10ffff || (cp >= 0xd800 && cp < 0xe000))
			return 0;
		i += k + 1;
	}
	return 1;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const sa_vocab *v;
	char *text, *back, *pieces;
	size_t len, blen, plen = 0;
	int *toks, n, add, which;

	if (size < 1)
		return 0;
	which = data[0] & 3;
	add = data[0] >> 2 & 1;
	v = fuzz_vocab(which);
	len = size - 1;
	/* exactly len bytes, no terminator: the tokenizer must not read on */
	if (!(text = malloc(len ? len : 1)))
		return 0;
	memcpy(text, data + 1, len);
	if (sa_tokenize(v, text, len, add, &toks, &n) != SA_OK)
		abort();
	for (int i = 0; i < n; i++)
		if (toks[i] < 0 || toks[i] >= sa_vocab_size(v))
			abort();
	if (sa_detokenize(v, toks, n, &back, &blen) != SA_OK)
		abort();
	if (back[blen] != '\0')
		abort();

	/* the pieces, each asked for with too small a buffer first */
	if (!(pieces = malloc(blen * 4 + 64)))
		abort();
	for (int i = 0; i < n; i++) {
		char small[2];
		int k = sa_token_to_piece(v, toks[i], small, sizeof small);
		if (k < 0 || (size_t)k > blen * 4 + 64 - plen)
			abort();
		if (sa_token_to_piece(v, toks[i], pieces + plen, k) != k)
			abort();
		if (k <= 2 && memcmp(small, pieces + plen, (size_t)k))
			abort();
		plen += (size_t)k;
	}
	/* detokenize may drop one leading space after BOS, nothing else */
	if (!(plen == blen || (plen == blen + 1 && pieces[0] == ' ')) ||
	    memcmp(pieces + (plen - blen), back, blen))
		abort();

	if (which != 0 && tok_valid_utf8((const unsigned char *)text, len) &&
	    (blen != len || memcmp(back, text, len))) {
		fprintf(stderr, "%s: decode(encode(x)) != x\n", fuzz_vocab_name(which));
		abort();
	}
	free(pieces);
	free(back);
	free(toks);
	free(text);
	return 0;
}
