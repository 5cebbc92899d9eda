/*
 * fuzz_demos.c - demonstration files and templates on arbitrary bytes.
 * Input: one byte choosing the format (text, TSV, JSON Lines), the
 * vocabulary and the context size, then the template up to a NUL byte
 * (empty: the default), then the file.  A template sa_template_check
 * takes must be taken by the parser too; parsed demonstrations are packed
 * into segments, which must each fit the context, start with BOS when the
 * vocabulary adds one, and hold every record exactly once.
 */
#include "fuzz.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const int ctx[4] = { 2, 5, 16, 64 };
	const uint8_t *nul;
	const sa_vocab *v;
	sa_demos *d;
	sa_segment *segs;
	char *tmpl, *file;
	size_t tlen, flen;
	int format, n_ctx, n_segs, rc, trc, total, records;

	if (size < 1)
		return 0;
	format = data[0] % 3;
	v = fuzz_vocab(data[0] >> 2 & 1);
	n_ctx = ctx[data[0] >> 3 & 3];
	records = data[0] >> 5 & 1 ? SA_RECORDS_ALONE : SA_RECORDS_PACKED;
	data++;
	size--;
	nul = memchr(data, 0, size);
	tlen = nul ? (size_t)(nul - data) : 0;
	if (!(tmpl = malloc(tlen + 1)))
		return 0;
	memcpy(tmpl, data, tlen);
	tmpl[tlen] = '\0';
	/* the file: exactly its bytes, unterminated */
	flen = nul ? size - tlen - 1 : size;
	if (!(file = malloc(flen ? flen : 1))) {
		free(tmpl);
		return 0;
	}
	memcpy(file, nul ? nul + 1 : data, flen);

	trc = sa_template_check(tmpl);
	fuzz_check_status(trc, SA_EUSAGE, "sa_template_check");
	if (trc != SA_OK && trc != SA_EUSAGE)
		abort();
	rc = sa_demos_parse(&d, "fuzz", file, flen, format, tlen ? tmpl : NULL);
	fuzz_check_status(rc, SA_EUSAGE, "sa_demos_parse");
	if (rc == SA_EUSAGE && (format == SA_DEMOS_TEXT || trc == SA_OK || !tlen))
		abort();   /* only a bad template is a usage error */
	if (rc == SA_OK) {
		if (format == SA_DEMOS_TEXT && d->n != 1)
			abort();
		for (int i = 0; i < d->n; i++)
			if (d->demo[i].text[d->demo[i].len] != '\0' || d->demo[i].line < 1)
				abort();
		rc = sa_demos_segment(d, v, n_ctx, records, &segs, &n_segs);
		fuzz_check_status(rc, SA_EUSAGE, "sa_demos_segment");
		if (rc == SA_OK) {
			int bos = sa_vocab_add_bos(v) ? sa_vocab_bos(v) : -1;
			total = 0;
			for (int i = 0; i < n_segs; i++) {
				if (segs[i].n < 1 || segs[i].n > n_ctx)
					abort();
				if (bos >= 0 && segs[i].toks[0] != bos)
					abort();
				for (int k = 0; k < segs[i].n; k++)
					if (segs[i].toks[k] < 0 || segs[i].toks[k] >= sa_vocab_size(v))
						abort();
				if (format != SA_DEMOS_TEXT && records == SA_RECORDS_ALONE &&
				    segs[i].n_demos != 1)
					abort();
				total += segs[i].n_demos;
			}
			if (format != SA_DEMOS_TEXT && total != d->n)
				abort();
			sa_segments_free(segs, n_segs);
		}
		sa_demos_free(d);
	}
	free(tmpl);
	free(file);
	return 0;
}
