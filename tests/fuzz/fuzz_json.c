/*
 * fuzz_json.c - the JSON reader on arbitrary bytes.  A value that parses
 * must write out compactly and parse back to the same tree, and writing
 * that must give the same text; any bytes written as a string literal
 * must parse as one string.
 */
#include "fuzz.h"

static int
json_equal(const sa_json *a, const sa_json *b)
{
	if (a->type != b->type)
		return 0;
	switch (a->type) {
	case SA_JSON_NULL:
		return 1;
	case SA_JSON_BOOL:
	case SA_JSON_NUM:
		return a->num == b->num;
	case SA_JSON_STR:
		return a->len == b->len && memcmp(a->str, b->str, a->len) == 0;
	default:
		if (a->n != b->n)
			return 0;
		for (size_t i = 0; i < a->n; i++) {
			if (a->type == SA_JSON_OBJ && strcmp(a->keys[i], b->keys[i]))
				return 0;
			if (!json_equal(&a->items[i], &b->items[i]))
				return 0;
		}
		return 1;
	}
}

static char *
json_text(const sa_json *j, size_t *len)
{
	char *buf = NULL;
	FILE *fp = open_memstream(&buf, len);

	if (!fp)
		abort();
	sa_json_put(fp, j);
	fclose(fp);
	return buf;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	sa_json j, k, s;
	char *t1, *t2, *buf = NULL;
	size_t n1, n2, len = 0;
	FILE *fp;
	int rc;

	rc = sa_json_parse((const char *)data, size, &j);
	fuzz_check_status(rc, SA_EDATA, "sa_json_parse");
	if (rc == SA_OK) {
		sa_json_get(&j, "input");
		sa_json_get(&j, "");
		t1 = json_text(&j, &n1);
		if (memchr(t1, '\n', n1))   /* one line, for JSON Lines */
			abort();
		if (sa_json_parse(t1, n1, &k) != SA_OK) {
			fprintf(stderr, "written JSON does not parse: %s\n", sa_error());
			abort();
		}
		if (!json_equal(&j, &k))
			abort();
		t2 = json_text(&k, &n2);
		if (n1 != n2 || memcmp(t1, t2, n1))
			abort();
		sa_json_free(&k);
		free(t1);
		free(t2);
		sa_json_free(&j);
	}

	if (!(fp = open_memstream(&buf, &len)))
		abort();
	sa_json_put_str(fp, (const char *)data, size);
	fclose(fp);
	if (sa_json_parse(buf, len, &s) != SA_OK || s.type != SA_JSON_STR) {
		fprintf(stderr, "string literal does not parse: %s\n", sa_error());
		abort();
	}
	sa_json_free(&s);
	free(buf);
	return 0;
}
