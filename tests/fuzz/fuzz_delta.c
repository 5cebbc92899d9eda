/*
 * fuzz_delta.c - the delta reader on arbitrary bytes (a stream, as from a
 * pipe).  A delta that reads must print as text and as JSON that parses,
 * write back to bytes that read as the same state, write the same bytes
 * twice, and survive the algebra (clone, chain, mean).
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
	int nu = sa_delta_n_used(a);
	size_t nh = (size_t)nu * a->n_head_kv * a->rank * a->d_head;
	size_t np = (size_t)nu * a->n_head_kv * a->rank;

	if (a->model_fingerprint != b->model_fingerprint ||
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

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	sa_delta *d, *e, *c, *m;
	FILE *fp = delta_stream(data, size);
	char *b1 = NULL, *b2 = NULL;
	size_t n1 = 0, n2 = 0;
	int rc;

	if (!fp)
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
