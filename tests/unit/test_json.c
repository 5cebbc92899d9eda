/* test_json.c - the JSON reader and writers: values, escapes, errors with
 * their columns, limits, round trips, and random bytes that must never crash. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sa.h"
#include "t.h"

static int
parses(const char *text)
{
	sa_json j;
	int rc = sa_json_parse(text, strlen(text), &j);

	if (rc == SA_OK)
		sa_json_free(&j);
	return rc == SA_OK;
}

/* Fails with SA_EDATA and a message containing want. */
static int
fails_with(const char *text, size_t len, const char *want)
{
	sa_json j;
	int rc = sa_json_parse(text, len, &j);

	if (rc == SA_OK) {
		sa_json_free(&j);
		fprintf(stderr, "parsed, should not: %s\n", text);
		return 0;
	}
	if (rc != SA_EDATA || !strstr(sa_error(), want)) {
		fprintf(stderr, "for %s: got %d '%s', want '%s'\n", text, rc, sa_error(), want);
		return 0;
	}
	return 1;
}
#define FAILS(text, want) fails_with(text, strlen(text), want)

/* What a writer produces, as a malloc'd string. */
static char *
capture_str(const char *s, size_t len)
{
	char *buf;
	size_t n;
	FILE *fp = open_memstream(&buf, &n);

	sa_json_put_str(fp, s, len);
	fclose(fp);
	return buf;
}

static char *
capture_val(const sa_json *j)
{
	char *buf;
	size_t n;
	FILE *fp = open_memstream(&buf, &n);

	sa_json_put(fp, j);
	fclose(fp);
	return buf;
}

static char *
capture_num(double v)
{
	char *buf;
	size_t n;
	FILE *fp = open_memstream(&buf, &n);

	sa_json_put_num(fp, v);
	fclose(fp);
	return buf;
}

static void
test_values(void)
{
	const char *text = " {\"id\": 7, \"prompt\": \"hi\\n\", \"choices\": [\"a\", \"b\"],"
	    " \"ok\": true, \"no\": false, \"nil\": null, \"x\": -1.5e2, \"o\": {}} ";
	const sa_json *v;
	sa_json j;

	CHECK_OK(sa_json_parse(text, strlen(text), &j));
	CHECK(j.type == SA_JSON_OBJ && j.n == 8);
	CHECK((v = sa_json_get(&j, "id")) && v->type == SA_JSON_NUM && v->num == 7);
	CHECK((v = sa_json_get(&j, "prompt")) && v->type == SA_JSON_STR && v->len == 3 &&
	    strcmp(v->str, "hi\n") == 0);
	CHECK((v = sa_json_get(&j, "choices")) && v->type == SA_JSON_ARR && v->n == 2 &&
	    strcmp(v->items[1].str, "b") == 0);
	CHECK((v = sa_json_get(&j, "ok")) && v->type == SA_JSON_BOOL && v->num == 1);
	CHECK((v = sa_json_get(&j, "no")) && v->type == SA_JSON_BOOL && v->num == 0);
	CHECK((v = sa_json_get(&j, "nil")) && v->type == SA_JSON_NULL);
	CHECK((v = sa_json_get(&j, "x")) && v->num == -150);
	CHECK((v = sa_json_get(&j, "o")) && v->type == SA_JSON_OBJ && v->n == 0);
	CHECK(sa_json_get(&j, "missing") == NULL);
	CHECK(sa_json_get(&j.items[0], "id") == NULL);   /* not an object */
	sa_json_free(&j);

	/* Scalars at top level, and the last of duplicate keys. */
	CHECK(parses("0") && parses("-0") && parses("\"\"") && parses("[]") && parses("null"));
	CHECK(parses("1E+2") && parses("1e-2") && parses("0.5") && parses("123456789012345678901234567890"));
	CHECK_OK(sa_json_parse("{\"a\":1,\"a\":2}", 13, &j));
	CHECK((v = sa_json_get(&j, "a")) && v->num == 2);
	sa_json_free(&j);

	/* Every value keeps its source text, spaces inside and all. */
	const char *t2 = "{\"id\": 9007199254740993, \"s\": \"a\\u0041\", \"o\": { \"k\" : [1.50, -0] } }";
	CHECK_OK(sa_json_parse(t2, strlen(t2), &j));
	CHECK(j.raw == t2 && j.raw_len == strlen(t2));
	CHECK((v = sa_json_get(&j, "id")) && v->raw_len == 16 && memcmp(v->raw, "9007199254740993", 16) == 0);
	CHECK((v = sa_json_get(&j, "s")) && v->raw_len == 9 && memcmp(v->raw, "\"a\\u0041\"", 9) == 0);
	CHECK((v = sa_json_get(&j, "o")) && v->raw_len == 20 &&
	    memcmp(v->raw, "{ \"k\" : [1.50, -0] }", 20) == 0);
	CHECK(v->items[0].raw_len == 10 && memcmp(v->items[0].items[0].raw, "1.50", 4) == 0);
	sa_json_free(&j);

	/* The text need not be NUL-terminated: only len bytes are read. */
	CHECK_OK(sa_json_parse("12345", 2, &j));
	CHECK(j.type == SA_JSON_NUM && j.num == 12);
	sa_json_free(&j);
}

static void
test_escapes(void)
{
	sa_json j;
	const char *t1 = "\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"";
	const char *t2 = "\"caf\\u00e9 \\u20AC \\ud83d\\ude00\"";
	const char *t3 = "\"a\\u0000b\"";
	const char *t4 = "\"h\xc3\xa9llo \xf0\x9f\x98\x80\"";

	CHECK_OK(sa_json_parse(t1, strlen(t1), &j));
	CHECK(j.len == 8 && memcmp(j.str, "\"\\/\b\f\n\r\t", 8) == 0);
	sa_json_free(&j);
	CHECK_OK(sa_json_parse(t2, strlen(t2), &j));
	CHECK(strcmp(j.str, "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80") == 0);
	sa_json_free(&j);
	/* An escaped NUL is kept: len counts past it. */
	CHECK_OK(sa_json_parse(t3, strlen(t3), &j));
	CHECK(j.len == 3 && memcmp(j.str, "a\0b", 3) == 0);
	sa_json_free(&j);
	/* Raw UTF-8 passes through. */
	CHECK_OK(sa_json_parse(t4, strlen(t4), &j));
	CHECK(strcmp(j.str, "h\xc3\xa9llo \xf0\x9f\x98\x80") == 0);
	sa_json_free(&j);
}

static void
test_errors(void)
{
	CHECK(FAILS("", "column 1: value expected, found end of input"));
	CHECK(FAILS("   ", "column 4: value expected"));
	CHECK(FAILS("{\"a\":1,}", "column 8: string key expected, found '}'"));
	CHECK(FAILS("[1 2]", "column 4: ',' or ']' expected, found '2'"));
	CHECK(FAILS("{\"a\" 1}", "column 6: ':' expected"));
	CHECK(FAILS("{\"a\":1", "column 7: ',' or '}' expected, found end of input"));
	CHECK(FAILS("1 2", "column 3: unexpected '2' after the value"));
	CHECK(FAILS("01", "column 2: leading zero"));
	CHECK(FAILS("1.", "column 3: digit expected after '.'"));
	CHECK(FAILS(".5", "column 1: value expected, found '.'"));
	CHECK(FAILS("-", "column 2: invalid number"));
	CHECK(FAILS("+1", "column 1: value expected"));
	CHECK(FAILS("1e", "column 3: digit expected in exponent"));
	CHECK(FAILS("1e400", "column 1: number out of range"));
	CHECK(FAILS("tru", "column 4: 'true' expected, found end of input"));
	CHECK(FAILS("[nul]", "column 5: 'null' expected, found ']'"));
	CHECK(FAILS("fals e", "column 5: 'false' expected"));
	CHECK(FAILS("True", "column 1"));
	CHECK(FAILS("NaN", "column 1"));
	CHECK(FAILS("'a'", "column 1"));
	CHECK(FAILS("[1,]", "column 4: value expected, found ']'"));
	CHECK(FAILS("\"abc", "column 5: unterminated string"));
	CHECK(FAILS("\"a\\\"", "column 5: unterminated string"));
	CHECK(FAILS("\"a\tb\"", "column 3: control character 0x09 in string"));
	CHECK(FAILS("\"\\x\"", "column 2: invalid escape '\\x'"));
	CHECK(FAILS("\"\\u12G4\"", "column 6: invalid \\u escape"));
	CHECK(FAILS("\"\\u12\"", "invalid \\u escape"));
	CHECK(FAILS("\"\\ud800\"", "column 2: unpaired surrogate \\uD800"));
	CHECK(FAILS("\"\\ud800\\u0041\"", "unpaired surrogate"));
	CHECK(FAILS("\"\\udc00\\ud800\"", "unpaired surrogate \\uDC00"));
	CHECK(FAILS("\"\xc3\x28\"", "column 2: invalid UTF-8"));
	CHECK(FAILS("\"\xc0\xaf\"", "invalid UTF-8"));            /* overlong '/' */
	CHECK(FAILS("\"\xed\xa0\x80\"", "invalid UTF-8"));        /* encoded surrogate */
	CHECK(FAILS("\"\xf4\x90\x80\x80\"", "invalid UTF-8"));    /* above U+10FFFF */
	CHECK(FAILS("\"\xe2\x82\"", "invalid UTF-8"));            /* cut short */
	CHECK(FAILS("\xef\xbb\xbf{}", "column 1: value expected, found byte 0xef"));
	CHECK(FAILS("{\"a\\u0000b\":1}", "NUL character in object key"));
	/* Columns count characters, not bytes. */
	CHECK(FAILS("[\"\xc3\xa9\xc3\xa9\" x]", "column 7: ',' or ']' expected"));
	/* A text of several lines names the line. */
	CHECK(FAILS("{\n\"a\": 1,\n  x}", "line 3, column 3: string key expected"));
	/* The error is kept even though len cuts a valid text short. */
	CHECK(fails_with("[1, 2]", 4, "column 5: value expected, found end of input"));
}

static void
test_depth(void)
{
	char buf[400];
	int n;

	/* 64 levels are fine, 65 are not, and a very deep text fails fast. */
	for (n = 0; n < 64; n++)
		buf[n] = '[';
	for (int i = 0; i < 64; i++)
		buf[n++] = ']';
	buf[n] = 0;
	CHECK(parses(buf));
	memmove(buf + 1, buf, strlen(buf) + 1);
	buf[0] = '[';
	strcat(buf, "]");
	CHECK(FAILS(buf, "column 65: nesting deeper than 64 levels"));

	size_t big = 1000000;
	char *deep = malloc(big);
	memset(deep, '{', big);
	for (size_t i = 0; i < big; i += 5)
		memcpy(deep + i, "{\"a\":", 5);
	CHECK(fails_with(deep, big, "nesting deeper than 64"));
	free(deep);
}

static void
test_writers(void)
{
	char *s;
	sa_json j;

	s = capture_str("a\"b\\c\n\t\x01\x7f/", 10);
	CHECK(strcmp(s, "\"a\\\"b\\\\c\\n\\t\\u0001\\u007f/\"") == 0);
	free(s);
	/* NUL inside, and valid multi-byte UTF-8 kept as is. */
	s = capture_str("x\0y\xc3\xa9", 5);
	CHECK(strcmp(s, "\"x\\u0000y\xc3\xa9\"") == 0);
	free(s);
	/* Invalid UTF-8: each bad byte becomes U+FFFD, good ones around survive. */
	s = capture_str("a\xff" "b\xc3", 4);
	CHECK(strcmp(s, "\"a\xef\xbf\xbd" "b\xef\xbf\xbd\"") == 0);
	free(s);
	s = capture_str("\xed\xa0\x80", 3);
	CHECK(strcmp(s, "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"") == 0);
	free(s);

	/* Every byte string that is valid UTF-8 reads back unchanged. */
	for (int c = 0; c < 0x80; c++) {
		char in[3] = { 'a', (char)c, 'z' }, *out;
		out = capture_str(in, 3);
		CHECK_OK(sa_json_parse(out, strlen(out), &j));
		CHECK(j.type == SA_JSON_STR && j.len == 3 && memcmp(j.str, in, 3) == 0);
		sa_json_free(&j);
		free(out);
	}

	s = capture_num(0.1); CHECK(strcmp(s, "0.1") == 0); free(s);
	s = capture_num(7); CHECK(strcmp(s, "7") == 0); free(s);
	s = capture_num(-2.5e-300); CHECK(strcmp(s, "-2.5e-300") == 0); free(s);
	s = capture_num(1.0 / 3); CHECK(strtod(s, NULL) == 1.0 / 3); free(s);
	s = capture_num(NAN); CHECK(strcmp(s, "null") == 0); free(s);
	s = capture_num(INFINITY); CHECK(strcmp(s, "null") == 0); free(s);

	/* A whole value comes out compact and reads back the same. */
	const char *in = " { \"id\" : [1, 2.5, \"x\\u00e9\"], \"b\": {\"t\": true, \"f\": false, \"n\": null} } ";
	CHECK_OK(sa_json_parse(in, strlen(in), &j));
	s = capture_val(&j);
	CHECK(strcmp(s, "{\"id\":[1,2.5,\"x\xc3\xa9\"],\"b\":{\"t\":true,\"f\":false,\"n\":null}}") == 0);
	sa_json_free(&j);
	free(s);
}

static uint64_t
rnd(uint64_t *x)
{
	*x ^= *x << 13;
	*x ^= *x >> 7;
	*x ^= *x << 17;
	return *x;
}

/* Random mutations of valid texts: every result is either a value or an
 * error with a column, never a crash (run under valgrind to see leaks). */
static void
test_garbage(void)
{
	const char *seeds[] = {
		"{\"id\": 1, \"prompt\": \"hello \\u00e9\", \"choices\": [\"a\", \"b\"]}",
		"[true, false, null, -0.5e-3, {\"k\": [[], {}]}, \"\\ud83d\\ude00\"]",
	};
	const char alphabet[] = "{}[]\",:\\u0123456789eE+-.tfnal \t\n\xc3\xa9\xff";
	uint64_t x = 88172645463325252ULL;
	int ok = 0, bad = 0, sane = 1;

	for (int iter = 0; iter < 20000; iter++) {
		char buf[128];
		const char *src = seeds[iter & 1];
		size_t n = strlen(src);
		sa_json j;

		memcpy(buf, src, n);
		for (int k = (int)(rnd(&x) % 4) + 1; k > 0; k--) {
			size_t at = rnd(&x) % n;
			switch (rnd(&x) % 3) {
			case 0: buf[at] = alphabet[rnd(&x) % (sizeof alphabet - 1)]; break;
			case 1: n = at; break;
			default:
				if (n < sizeof buf - 1) {
					memmove(buf + at + 1, buf + at, n - at);
					buf[at] = alphabet[rnd(&x) % (sizeof alphabet - 1)];
					n++;
				}
			}
			if (n == 0)
				break;
		}
		if (sa_json_parse(buf, n, &j) == SA_OK) {
			ok++;
			sa_json_free(&j);
		} else {
			bad++;
			if (strncmp(sa_error(), "column ", 7) != 0 && strncmp(sa_error(), "line ", 5) != 0)
				sane = 0;
		}
	}
	CHECK(ok > 0 && bad > 0);
	CHECK(sane);
}

int
main(void)
{
	test_values();
	test_escapes();
	test_errors();
	test_depth();
	test_writers();
	test_garbage();
	return t_done();
}
