/*
 * json.c - a strict RFC 8259 reader into a small value tree, and writers
 * for string literals and whole values.  Enough for JSON Lines requests:
 * one text per call, errors as "column N: what" so a tool can prefix the
 * line number.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sa.h"

/* Deeper nesting is refused rather than recursed into: a line of ten
 * thousand '[' must not overflow the stack. */
#define MAX_DEPTH 64

typedef struct parser {
	const char *s;
	size_t len;
	size_t pos;
	int depth;
} parser;

/* "column N" counts characters (UTF-8 sequences), 1-based, on the line of
 * the error; a text of several lines also gets "line L, ". */
static int
perr(const parser *p, size_t at, const char *fmt, ...)
{
	char msg[256];
	size_t line = 1, col = 1;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (at > p->len)
		at = p->len;
	for (size_t i = 0; i < at; i++) {
		unsigned char c = (unsigned char)p->s[i];
		if (c == '\n') {
			line++;
			col = 1;
		} else if ((c & 0xc0) != 0x80) {
			col++;
		}
	}
	if (line > 1)
		return sa_fail(SA_EDATA, "line %zu, column %zu: %s", line, col, msg);
	return sa_fail(SA_EDATA, "column %zu: %s", col, msg);
}

/* What the parser found where it expected something else, for messages. */
static const char *
describe(const parser *p, size_t at, char *buf, size_t cap)
{
	unsigned char c;

	if (at >= p->len)
		return "end of input";
	c = (unsigned char)p->s[at];
	if (c >= 0x21 && c < 0x7f)
		snprintf(buf, cap, "'%c'", c);
	else
		snprintf(buf, cap, "byte 0x%02x", c);
	return buf;
}

/*
 * Length of the well-formed UTF-8 sequence at s (Unicode Table 3-7: no
 * overlongs, no surrogates, nothing above U+10FFFF), 0 if ill-formed.
 */
static int
utf8_len(const unsigned char *s, size_t avail, uint32_t *cp)
{
	unsigned char c = s[0];
	unsigned char lo = 0x80, hi = 0xbf;
	int n;
	uint32_t v;

	if (c < 0x80) {
		*cp = c;
		return 1;
	}
	if (c >= 0xc2 && c <= 0xdf) {
		n = 2;
		v = c & 0x1f;
	} else if (c >= 0xe0 && c <= 0xef) {
		n = 3;
		v = c & 0x0f;
		if (c == 0xe0)
			lo = 0xa0;
		else if (c == 0xed)
			hi = 0x9f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		n = 4;
		v = c & 0x07;
		if (c == 0xf0)
			lo = 0x90;
		else if (c == 0xf4)
			hi = 0x8f;
	} else {
		return 0;
	}
	if ((size_t)n > avail)
		return 0;
	if (s[1] < lo || s[1] > hi)
		return 0;
	v = v << 6 | (s[1] & 0x3f);
	for (int i = 2; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		v = v << 6 | (s[i] & 0x3f);
	}
	*cp = v;
	return n;
}

size_t
sa_text_len(const char *s, size_t n)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t i = 0;
	uint32_t cp;
	int k;

	while (i < n && u[i] && (k = utf8_len(u + i, n - i, &cp)))
		i += (size_t)k;
	return i;
}

static size_t
utf8_put(char *out, uint32_t cp)
{
	if (cp < 0x80) {
		out[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		out[0] = (char)(0xc0 | cp >> 6);
		out[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		out[0] = (char)(0xe0 | cp >> 12);
		out[1] = (char)(0x80 | (cp >> 6 & 0x3f));
		out[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	out[0] = (char)(0xf0 | cp >> 18);
	out[1] = (char)(0x80 | (cp >> 12 & 0x3f));
	out[2] = (char)(0x80 | (cp >> 6 & 0x3f));
	out[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

static void
skip_ws(parser *p)
{
	while (p->pos < p->len) {
		char c = p->s[p->pos];
		if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
			break;
		p->pos++;
	}
}

static int
hex4(const parser *p, size_t at, uint32_t *v)
{
	*v = 0;
	for (int i = 0; i < 4; i++) {
		char c = at + i < p->len ? p->s[at + i] : 0;
		int d;
		if (c >= '0' && c <= '9')
			d = c - '0';
		else if (c >= 'a' && c <= 'f')
			d = c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			d = c - 'A' + 10;
		else
			return perr(p, at + i, "invalid \\u escape");
		*v = *v << 4 | (uint32_t)d;
	}
	return SA_OK;
}

/* A string literal at p->pos (on the opening quote) into a malloc'd buffer. */
static int
parse_string(parser *p, char **out, size_t *outlen)
{
	size_t start = ++p->pos, end = start;
	char *buf;
	size_t n = 0;
	int rc;

	/* Escapes never decode to more bytes than they take, so the raw span
	 * bounds the result. */
	while (end < p->len && p->s[end] != '"')
		end += p->s[end] == '\\' ? 2 : 1;
	/* Where the closing quote is missing: the end of the text. */
	if (end >= p->len)
		return perr(p, p->len, "unterminated string");
	if (!(buf = sa_malloc(end - start + 1)))
		return SA_EINTERNAL;
	while (p->pos < end) {
		unsigned char c = (unsigned char)p->s[p->pos];
		uint32_t cp, lo;
		int k;

		if (c < 0x20) {
			rc = perr(p, p->pos, "control character 0x%02x in string", c);
			goto fail;
		}
		if (c >= 0x80) {
			if (!(k = utf8_len((const unsigned char *)p->s + p->pos, end - p->pos, &cp))) {
				rc = perr(p, p->pos, "invalid UTF-8 in string");
				goto fail;
			}
			memcpy(buf + n, p->s + p->pos, (size_t)k);
			n += (size_t)k;
			p->pos += (size_t)k;
			continue;
		}
		if (c != '\\') {
			buf[n++] = (char)c;
			p->pos++;
			continue;
		}
		switch (p->s[p->pos + 1]) {
		case '"': buf[n++] = '"'; break;
		case '\\': buf[n++] = '\\'; break;
		case '/': buf[n++] = '/'; break;
		case 'b': buf[n++] = '\b'; break;
		case 'f': buf[n++] = '\f'; break;
		case 'n': buf[n++] = '\n'; break;
		case 'r': buf[n++] = '\r'; break;
		case 't': buf[n++] = '\t'; break;
		case 'u':
			if ((rc = hex4(p, p->pos + 2, &cp)))
				goto fail;
			if (cp >= 0xdc00 && cp <= 0xdfff) {
				rc = perr(p, p->pos, "unpaired surrogate \\u%04X", (unsigned)cp);
				goto fail;
			}
			if (cp >= 0xd800 && cp <= 0xdbff) {
				if (p->pos + 7 >= end || p->s[p->pos + 6] != '\\' || p->s[p->pos + 7] != 'u') {
					rc = perr(p, p->pos, "unpaired surrogate \\u%04X", (unsigned)cp);
					goto fail;
				}
				if ((rc = hex4(p, p->pos + 8, &lo)))
					goto fail;
				if (lo < 0xdc00 || lo > 0xdfff) {
					rc = perr(p, p->pos, "unpaired surrogate \\u%04X", (unsigned)cp);
					goto fail;
				}
				cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
				p->pos += 6;
			}
			n += utf8_put(buf + n, cp);
			p->pos += 4;
			break;
		default:
			rc = perr(p, p->pos, "invalid escape '\\%c'", p->s[p->pos + 1]);
			goto fail;
		}
		p->pos += 2;
	}
	p->pos = end + 1;
	buf[n] = 0;
	*out = buf;
	*outlen = n;
	return SA_OK;
fail:
	free(buf);
	return rc;
}

static int
is_digit(const parser *p, size_t i)
{
	return i < p->len && p->s[i] >= '0' && p->s[i] <= '9';
}

/* -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static int
parse_number(parser *p, double *v)
{
	size_t start = p->pos, i = p->pos;
	char small[64], *tmp = small;
	double d;

	if (i < p->len && p->s[i] == '-')
		i++;
	if (!is_digit(p, i))
		return perr(p, i, "invalid number");
	if (p->s[i] == '0') {
		i++;
		if (is_digit(p, i))
			return perr(p, i, "leading zero in number");
	} else {
		while (is_digit(p, i))
			i++;
	}
	if (i < p->len && p->s[i] == '.') {
		i++;
		if (!is_digit(p, i))
			return perr(p, i, "digit expected after '.'");
		while (is_digit(p, i))
			i++;
	}
	if (i < p->len && (p->s[i] == 'e' || p->s[i] == 'E')) {
		i++;
		if (i < p->len && (p->s[i] == '+' || p->s[i] == '-'))
			i++;
		if (!is_digit(p, i))
			return perr(p, i, "digit expected in exponent");
		while (is_digit(p, i))
			i++;
	}
	/* strtod needs a terminated copy: the text need not end here. */
	if (i - start >= sizeof small && !(tmp = sa_malloc(i - start + 1)))
		return SA_EINTERNAL;
	memcpy(tmp, p->s + start, i - start);
	tmp[i - start] = 0;
	d = strtod(tmp, NULL);
	if (tmp != small)
		free(tmp);
	if (isinf(d))
		return perr(p, start, "number out of range");
	*v = d;
	p->pos = i;
	return SA_OK;
}

/* true, false or null, as the first letter says; a word cut short or
 * misspelt is reported where it goes wrong. */
static int
parse_literal(parser *p, sa_json *out)
{
	const char *word = p->s[p->pos] == 't' ? "true" : p->s[p->pos] == 'f' ? "false" : "null";
	size_t i = 0;
	char what[16];

	while (word[i] && p->pos + i < p->len && p->s[p->pos + i] == word[i])
		i++;
	if (word[i])
		return perr(p, p->pos + i, "'%s' expected, found %s", word,
		    describe(p, p->pos + i, what, sizeof what));
	p->pos += i;
	out->type = word[0] == 'n' ? SA_JSON_NULL : SA_JSON_BOOL;
	out->num = word[0] == 't';
	return SA_OK;
}

static int parse_value(parser *p, sa_json *out);

/* Grow a parallel items/keys array when full. */
static int
grow(sa_json *j, size_t *cap, int with_keys)
{
	size_t ncap = *cap ? *cap * 2 : 4;
	sa_json *items;
	char **keys;

	if (j->n < *cap)
		return SA_OK;
	if (!(items = realloc(j->items, ncap * sizeof *items)))
		return sa_fail(SA_EINTERNAL, "out of memory");
	j->items = items;
	if (with_keys) {
		if (!(keys = realloc(j->keys, ncap * sizeof *keys)))
			return sa_fail(SA_EINTERNAL, "out of memory");
		j->keys = keys;
	}
	*cap = ncap;
	return SA_OK;
}

static int
parse_array(parser *p, sa_json *out)
{
	size_t cap = 0;
	char what[16];
	int rc;

	out->type = SA_JSON_ARR;
	p->pos++;
	skip_ws(p);
	if (p->pos < p->len && p->s[p->pos] == ']') {
		p->pos++;
		return SA_OK;
	}
	for (;;) {
		if ((rc = grow(out, &cap, 0)))
			return rc;
		/* Counted before parsing so a half-built element is freed with the rest. */
		memset(&out->items[out->n], 0, sizeof out->items[0]);
		if ((rc = parse_value(p, &out->items[out->n++])))
			return rc;
		skip_ws(p);
		if (p->pos < p->len && p->s[p->pos] == ',') {
			p->pos++;
			continue;
		}
		if (p->pos < p->len && p->s[p->pos] == ']') {
			p->pos++;
			return SA_OK;
		}
		return perr(p, p->pos, "',' or ']' expected, found %s", describe(p, p->pos, what, sizeof what));
	}
}

static int
parse_object(parser *p, sa_json *out)
{
	size_t cap = 0, klen;
	char what[16];
	int rc;

	out->type = SA_JSON_OBJ;
	p->pos++;
	skip_ws(p);
	if (p->pos < p->len && p->s[p->pos] == '}') {
		p->pos++;
		return SA_OK;
	}
	for (;;) {
		skip_ws(p);
		if (p->pos >= p->len || p->s[p->pos] != '"')
			return perr(p, p->pos, "string key expected, found %s", describe(p, p->pos, what, sizeof what));
		if ((rc = grow(out, &cap, 1)))
			return rc;
		memset(&out->items[out->n], 0, sizeof out->items[0]);
		if ((rc = parse_string(p, &out->keys[out->n], &klen)))
			return rc;
		out->n++;
		/* Keys are C strings to their users. */
		if (strlen(out->keys[out->n - 1]) != klen)
			return perr(p, p->pos - 1, "NUL character in object key");
		skip_ws(p);
		if (p->pos >= p->len || p->s[p->pos] != ':')
			return perr(p, p->pos, "':' expected, found %s", describe(p, p->pos, what, sizeof what));
		p->pos++;
		if ((rc = parse_value(p, &out->items[out->n - 1])))
			return rc;
		skip_ws(p);
		if (p->pos < p->len && p->s[p->pos] == ',') {
			p->pos++;
			continue;
		}
		if (p->pos < p->len && p->s[p->pos] == '}') {
			p->pos++;
			return SA_OK;
		}
		return perr(p, p->pos, "',' or '}' expected, found %s", describe(p, p->pos, what, sizeof what));
	}
}

static int
parse_any(parser *p, sa_json *out)
{
	char what[16];
	int rc;

	if (p->pos >= p->len)
		return perr(p, p->pos, "value expected, found end of input");
	switch (p->s[p->pos]) {
	case '{':
	case '[':
		if (++p->depth > MAX_DEPTH)
			return perr(p, p->pos, "nesting deeper than %d levels", MAX_DEPTH);
		rc = p->s[p->pos] == '{' ? parse_object(p, out) : parse_array(p, out);
		p->depth--;
		return rc;
	case '"':
		out->type = SA_JSON_STR;
		return parse_string(p, &out->str, &out->len);
	case 't':
	case 'f':
	case 'n':
		return parse_literal(p, out);
	default:
		if (p->s[p->pos] == '-' || (p->s[p->pos] >= '0' && p->s[p->pos] <= '9')) {
			out->type = SA_JSON_NUM;
			return parse_number(p, &out->num);
		}
		break;
	}
	return perr(p, p->pos, "value expected, found %s", describe(p, p->pos, what, sizeof what));
}

/* The value and, once it is whole, its source text. */
static int
parse_value(parser *p, sa_json *out)
{
	size_t start;
	int rc;

	skip_ws(p);
	start = p->pos;
	if ((rc = parse_any(p, out)) == SA_OK) {
		out->raw = p->s + start;
		out->raw_len = p->pos - start;
	}
	return rc;
}

int
sa_json_parse(const char *text, size_t len, sa_json *out)
{
	parser p = { text, len, 0, 0 };
	char what[16];
	int rc;

	memset(out, 0, sizeof *out);
	if ((rc = parse_value(&p, out)))
		goto fail;
	skip_ws(&p);
	if (p.pos < p.len) {
		rc = perr(&p, p.pos, "unexpected %s after the value", describe(&p, p.pos, what, sizeof what));
		goto fail;
	}
	return SA_OK;
fail:
	sa_json_free(out);
	memset(out, 0, sizeof *out);
	return rc;
}

void
sa_json_free(sa_json *j)
{
	if (!j)
		return;
	free(j->str);
	for (size_t i = 0; i < j->n; i++) {
		sa_json_free(&j->items[i]);
		if (j->keys)
			free(j->keys[i]);
	}
	free(j->items);
	free(j->keys);
	j->str = NULL;
	j->items = NULL;
	j->keys = NULL;
	j->n = 0;
}

const sa_json *
sa_json_get(const sa_json *obj, const char *key)
{
	size_t klen = strlen(key);

	if (!obj || obj->type != SA_JSON_OBJ)
		return NULL;
	/* Duplicate keys are legal JSON; the last one wins, as in most readers. */
	for (size_t i = obj->n; i-- > 0;)
		if (strlen(obj->keys[i]) == klen && memcmp(obj->keys[i], key, klen) == 0)
			return &obj->items[i];
	return NULL;
}

void
sa_json_put_str(FILE *fp, const char *s, size_t len)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t i = 0;

	putc('"', fp);
	while (i < len) {
		unsigned char c = u[i];
		uint32_t cp;
		int k;

		if (c >= 0x80) {
			if ((k = utf8_len(u + i, len - i, &cp))) {
				fwrite(u + i, 1, (size_t)k, fp);
				i += (size_t)k;
			} else {
				fputs("\xef\xbf\xbd", fp);
				i++;
			}
			continue;
		}
		switch (c) {
		case '"': fputs("\\\"", fp); break;
		case '\\': fputs("\\\\", fp); break;
		case '\n': fputs("\\n", fp); break;
		case '\r': fputs("\\r", fp); break;
		case '\t': fputs("\\t", fp); break;
		case '\b': fputs("\\b", fp); break;
		case '\f': fputs("\\f", fp); break;
		default:
			if (c < 0x20 || c == 0x7f)
				fprintf(fp, "\\u%04x", c);
			else
				putc(c, fp);
		}
		i++;
	}
	putc('"', fp);
}

void
sa_json_put_num(FILE *fp, double v)
{
	char buf[32];

	/* JSON has no NaN or infinities. */
	if (!isfinite(v)) {
		fputs("null", fp);
		return;
	}
	/* The shortest %g form that reads back as the same double. */
	for (int prec = 1; prec <= 17; prec++) {
		snprintf(buf, sizeof buf, "%.*g", prec, v);
		if (strtod(buf, NULL) == v)
			break;
	}
	fputs(buf, fp);
}

void
sa_json_put(FILE *fp, const sa_json *j)
{
	switch (j->type) {
	case SA_JSON_NULL:
		fputs("null", fp);
		break;
	case SA_JSON_BOOL:
		fputs(j->num ? "true" : "false", fp);
		break;
	case SA_JSON_NUM:
		sa_json_put_num(fp, j->num);
		break;
	case SA_JSON_STR:
		sa_json_put_str(fp, j->str, j->len);
		break;
	case SA_JSON_ARR:
		putc('[', fp);
		for (size_t i = 0; i < j->n; i++) {
			if (i)
				putc(',', fp);
			sa_json_put(fp, &j->items[i]);
		}
		putc(']', fp);
		break;
	case SA_JSON_OBJ:
		putc('{', fp);
		for (size_t i = 0; i < j->n; i++) {
			if (i)
				putc(',', fp);
			sa_json_put_str(fp, j->keys[i], strlen(j->keys[i]));
			putc(':', fp);
			sa_json_put(fp, &j->items[i]);
		}
		putc('}', fp);
		break;
	}
}
