/*
 * fuzz_delta.c - the delta reader on arbitrary bytes (a stream, as from a
 * pipe).  A delta that reads must print as text and as JSON that parses,
 * write back to bytes that read as the same state, write the same bytes
 * twice, and survive the algebra (clone, chain, mean).
 *
 * An input whose first byte is 'R' (never the first of a delta) is not a file but the recipe of one:
 * kind, shapes, strings and state taken from its bytes, written by the library,
 * then one byte changed and the stream cut where the input says.  Its CRCs
 * are right, so the reader gets past the header into the payload, which
 * mutations of raw files (whose header CRC breaks at once) seldom do.
 */
#include "fuzz.h"

static FILE *
delta_stream(const uint8_t *data, size_t size)
{
	/* fmemopen refuses a zero-length buffer on some systems */
	return size ? fmemopen((void *)data, size, "rb") : fopen("/dev/null", "rb");
}

static void
delta_same(const sa_delta *a, const sa_delta *b)
{
	size_t nh, np;

	sa_delta_sizes(a, &nh, &np);
	if (a->mapping != b->mapping || a->model_fingerprint != b->model_fingerprint ||
	    a->adapter_fingerprint != b->adapter_fingerprint ||
	    a->n_layer != b->n_layer || a->n_head_kv != b->n_head_kv ||
	    a->d_head != b->d_head || a->rank != b->rank || a->chunk != b->chunk ||
	    a->mats != b->mats || a->n_tokens != b->n_tokens || a->n_demos != b->n_demos ||
	    a->n_sources != b->n_sources ||
	    memcmp(a->h, b->h, nh * sizeof(float)) || memcmp(a->P, b->P, np * sizeof(float)))
		abort();
	if (!a->adapter_path != !b->adapter_path ||
	    (a->adapter_path && strcmp(a->adapter_path, b->adapter_path)))
		abort();
	for (int i = 0; i < a->n_sources; i++)
		if (strcmp(a->sources[i].name, b->sources[i].name) ||
		    a->sources[i].hash != b->sources[i].hash)
			abort();
}

static void
delta_write(const sa_delta *d, char **buf, size_t *len)
{
	FILE *fp = open_memstream(buf, len);

	if (!fp)
		abort();
	if (sa_delta_write(d, fp, "memory") != SA_OK) {
		fprintf(stderr, "a delta that reads does not write: %s\n", sa_error());
		abort();
	}
	fclose(fp);
}

static void
delta_print(const sa_delta *d)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *fp = open_memstream(&buf, &len);
	sa_json j;

	if (!fp)
		abort();
	sa_delta_print(d, fp, 0);
	fclose(fp);
	free(buf);
	buf = NULL;
	if (!(fp = open_memstream(&buf, &len)))
		abort();
	sa_delta_print(d, fp, 1);
	fclose(fp);
	if (len == 0 || buf[len - 1] != '\n' || memchr(buf, '\n', len) != buf + len - 1)
		abort();
	if (sa_json_parse(buf, len - 1, &j) != SA_OK) {
		fprintf(stderr, "JSON description does not parse: %s\n", sa_error());
		abort();
	}
	sa_json_free(&j);
	free(buf);
}

static void
delta_recipe(const uint8_t *data, size_t size)
{
	static const char *const names[3] = { "a.tsv", "b\tc.jsonl", "" };
	sa_delta d, *r;
	sa_source src[3];
	char *buf = NULL, params[8];
	size_t len = 0, nh, np, k = 16, pos, cut;
	FILE *fp;
	int rc;

	if (size < 17)   /* 16 bytes of recipe, at least one of state */
		return;
	memset(&d, 0, sizeof d);
	d.model_fingerprint = data[1];
	d.adapter_fingerprint = data[2];
	d.n_layer = 1 + data[3] % 3;
	d.n_head_kv = 1 + data[4] % 3;
	d.d_head = 1 + data[5] % 8;
	/* the high bit of byte 7 picks the least-squares memory */
	d.mapping = data[7] >> 7 ? SA_MAPPING_LSQ : SA_MAPPING_POOL;
	d.rank = (1 + data[6] % 4) * (d.mapping == SA_MAPPING_LSQ ? d.n_head_kv : 1);
	d.chunk = d.mapping == SA_MAPPING_LSQ ? 0 : 1 + (data[7] & 0x7f);
	d.mats = 1 + data[8] % 127;
	d.n_tokens = data[9];
	d.n_demos = data[10];
	d.n_sources = data[11] % 4;
	for (int i = 0; i < d.n_sources; i++) {
		src[i].name = (char *)names[(i + (data[11] >> 2)) % 3];
		src[i].hash = (uint64_t)i * data[12];
	}
	d.sources = d.n_sources ? src : NULL;
	snprintf(params, sizeof params, "p=%u", data[12]);
	d.params = data[12] & 1 ? params : NULL;
	d.adapter_path = data[12] & 2 ? "ad.gguf" : NULL;
	sa_delta_sizes(&d, &nh, &np);
	if (!(d.h = malloc(nh * sizeof(float))) || !(d.P = malloc(np * sizeof(float))))
		abort();
	/* small exact values from the input, repeating: compressible */
	for (size_t i = 0; i < nh + np; i++) {
		float v = (float)(int8_t)data[k] / 16;
		k = k + 1 < size ? k + 1 : 16;
		if (i < nh)
			d.h[i] = v;
		else
			d.P[i - nh] = v;
	}
	if (!(fp = open_memstream(&buf, &len)))
		abort();
	if (sa_delta_write(&d, fp, "recipe") != SA_OK)
		abort();
	fclose(fp);
	/* damage: one byte xor-ed (none if 0), then a cut (none if past the end) */
	pos = ((size_t)data[13] << 8 | data[14]) % len;
	buf[pos] ^= (char)data[15];
	cut = (size_t)data[13] * 7 + data[14];
	if (cut > len)
		cut = len;
	if (!(fp = delta_stream((const uint8_t *)buf, cut)))
		abort();
	rc = sa_delta_read(&r, fp, "recipe");
	fclose(fp);
	fuzz_check_status(rc, SA_EDATA, "sa_delta_read (recipe)");
	if (rc == SA_OK) {
		if (data[15] == 0 && cut == len)
			delta_same(&d, r);
		sa_delta_free(r);
	} else if (data[15] == 0 && cut == len) {
		fprintf(stderr, "an undamaged delta does not read: %s\n", sa_error());
		abort();
	}
	free(d.h);
	free(d.P);
	free(buf);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	sa_delta *d, *e, *c, *m;
	FILE *fp;
	char *b1 = NULL, *b2 = NULL;
	size_t n1 = 0, n2 = 0;
	int rc;

	if (size > 0 && data[0] == 'R') {
		delta_recipe(data, size);
		return 0;
	}
	if (!(fp = delta_stream(data, size)))
		return 0;
	rc = sa_delta_read(&d, fp, "fuzz.delta");
	fclose(fp);
	fuzz_check_status(rc, SA_EDATA, "sa_delta_read");
	if (rc != SA_OK)
		return 0;
	delta_print(d);
	delta_write(d, &b1, &n1);
	if (!(fp = fmemopen(b1, n1, "rb")))
		abort();
	if (sa_delta_read(&e, fp, "written") != SA_OK) {
		fprintf(stderr, "written delta does not read back: %s\n", sa_error());
		abort();
	}
	if (getc(fp) != EOF)   /* the reader stops at the last byte */
		abort();
	fclose(fp);
	delta_same(d, e);
	delta_write(e, &b2, &n2);
	if (n1 != n2 || memcmp(b1, b2, n1))
		abort();
	if (sa_delta_clone(&c, d) != SA_OK)
		abort();
	delta_same(d, c);
	if (sa_delta_chain(c, e) == SA_OK) {
		sa_delta *two[2] = { d, c };
		double w[2] = { 0.5, 0.5 };
		if (sa_delta_combine(&m, two, w, 2) == SA_OK)
			sa_delta_free(m);
	}
	sa_delta_free(c);
	sa_delta_free(e);
	sa_delta_free(d);
	free(b1);
	free(b2);
	return 0;
}
