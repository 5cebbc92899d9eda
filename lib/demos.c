/*
 * demos.c - demonstrations for the encoder: plain text, TSV and JSON Lines
 * records rendered through a template, then tokenized and packed into
 * segments that each fit the context.  A file's format comes from the
 * caller, its extension or its first line.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "sa.h"

static const char *const format_names[] = { "text", "tsv", "jsonl" };

const char *
sa_demos_format_name(int format)
{
	if (format < 0 || format > SA_DEMOS_JSONL)
		return "?";
	return format_names[format];
}

int
sa_demos_format_from_name(const char *name)
{
	for (int i = 0; i <= SA_DEMOS_JSONL; i++)
		if (strcmp(name, format_names[i]) == 0)
			return i;
	return -1;
}

/* ------------------------------------------------------------ growable text */

typedef struct buf {
	char *p;
	size_t n, cap;
} buf;

static int
buf_put(buf *b, const char *s, size_t n)
{
	if (b->n + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 64;
		char *p;

		while (cap < b->n + n + 1)
			cap *= 2;
		if (!(p = realloc(b->p, cap)))
			return sa_fail(SA_EINTERNAL, "out of memory");
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->n, s, n);
	b->n += n;
	b->p[b->n] = '\0';
	return SA_OK;
}

/* ----------------------------------------------------------------- template */

/* A template compiled into parts: literal text, or a field reference. */
typedef struct tpart {
	char *text;     /* literal (escapes expanded), or the field name */
	size_t len;
	int is_field;
	int col;        /* TSV: the header column of the field, -1 if absent */
} tpart;

typedef struct tmpl {
	tpart *part;
	int n;
} tmpl;

static void
tmpl_free(tmpl *t)
{
	for (int i = 0; i < t->n; i++)
		free(t->part[i].text);
	free(t->part);
	memset(t, 0, sizeof *t);
}

static int
tmpl_add(tmpl *t, buf *b, int is_field)
{
	tpart *p;

	if (!is_field && b->n == 0)
		return SA_OK;
	if (!(p = realloc(t->part, (size_t)(t->n + 1) * sizeof *p)))
		return sa_fail(SA_EINTERNAL, "out of memory");
	t->part = p;
	p = &t->part[t->n++];
	p->text = b->p ? b->p : strdup("");
	p->len = b->n;
	p->is_field = is_field;
	p->col = -1;
	memset(b, 0, sizeof *b);
	return p->text ? SA_OK : sa_fail(SA_EINTERNAL, "out of memory");
}

static int
tmpl_compile(tmpl *t, const char *s)
{
	buf lit = { 0 };
	int rc = SA_OK;

	memset(t, 0, sizeof *t);
	for (const char *c = s; *c && rc == SA_OK; c++) {
		if (*c == '\\') {
			char e;
			switch (c[1]) {
			case 'n': e = '\n'; break;
			case 't': e = '\t'; break;
			case 'r': e = '\r'; break;
			case '\\': e = '\\'; break;
			case '{': e = '{'; break;
			case '}': e = '}'; break;
			case '\0':
				rc = sa_fail(SA_EUSAGE, "template: ends in a lone backslash");
				continue;
			default:
				rc = sa_fail(SA_EUSAGE, "template: unknown escape \\%c", c[1]);
				continue;
			}
			rc = buf_put(&lit, &e, 1);
			c++;
		} else if (*c == '{') {
			const char *end = strchr(c + 1, '}');
			buf name = { 0 };

			if (!end) {
				rc = sa_fail(SA_EUSAGE, "template: unclosed {");
				continue;
			}
			if (end == c + 1 || memchr(c + 1, '{', (size_t)(end - c - 1))) {
				rc = sa_fail(SA_EUSAGE, "template: bad field name at '%.*s'",
				    (int)(end - c + 1), c);
				continue;
			}
			if ((rc = tmpl_add(t, &lit, 0)) != SA_OK ||
			    (rc = buf_put(&name, c + 1, (size_t)(end - c - 1))) != SA_OK ||
			    (rc = tmpl_add(t, &name, 1)) != SA_OK) {
				free(name.p);
				continue;
			}
			c = end;
		} else {
			rc = buf_put(&lit, c, 1);
		}
	}
	if (rc == SA_OK)
		rc = tmpl_add(t, &lit, 0);
	free(lit.p);
	if (rc != SA_OK)
		tmpl_free(t);
	return rc;
}

int
sa_template_check(const char *s)
{
	tmpl t;
	int rc = tmpl_compile(&t, s);

	if (rc == SA_OK)
		tmpl_free(&t);
	return rc;
}

/* ---------------------------------------------------------------- records */

static int
demos_add(sa_demos *d, buf *text, long line)
{
	sa_demo *p;

	if (!(p = realloc(d->demo, (size_t)(d->n + 1) * sizeof *p)))
		return sa_fail(SA_EINTERNAL, "out of memory");
	d->demo = p;
	if (!text->p && !(text->p = calloc(1, 1)))
		return sa_fail(SA_EINTERNAL, "out of memory");
	p[d->n].text = text->p;
	p[d->n].len = text->n;
	p[d->n].line = line;
	d->n++;
	memset(text, 0, sizeof *text);
	return SA_OK;
}

/* A UTF-8 byte order mark is not text (a source's hash still covers it). */
static void
skip_bom(const char **data, size_t *len)
{
	if (*len >= 3 && memcmp(*data, "\xef\xbb\xbf", 3) == 0) {
		*data += 3;
		*len -= 3;
	}
}

/* Next line of data at *pos: [*s, *s + *n), without '\n' and a trailing '\r'. */
static int
next_line(const char *data, size_t len, size_t *pos, const char **s, size_t *n)
{
	const char *nl;

	if (*pos >= len)
		return 0;
	*s = data + *pos;
	nl = memchr(*s, '\n', len - *pos);
	*n = nl ? (size_t)(nl - *s) : len - *pos;
	*pos += *n + (nl != NULL);
	if (*n > 0 && (*s)[*n - 1] == '\r')
		(*n)--;
	return 1;
}

static int
blank(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (s[i] != ' ' && s[i] != '\t')
			return 0;
	return 1;
}

/* A TSV value with the linear-TSV escapes \t \n \r \\ expanded. */
static int
tsv_value(buf *b, const char *s, size_t n)
{
	int rc = SA_OK;

	for (size_t i = 0; i < n && rc == SA_OK; i++) {
		char c = s[i];
		if (c == '\\' && i + 1 < n && strchr("tnr\\", s[i + 1])) {
			i++;
			c = s[i] == 't' ? '\t' : s[i] == 'n' ? '\n' : s[i] == 'r' ? '\r' : '\\';
		}
		rc = buf_put(b, &c, 1);
	}
	return rc;
}

#define MAX_FIELDS 4096

static int
parse_tsv(sa_demos *d, const char *data, size_t len, tmpl *t)
{
	const char *s, *f[MAX_FIELDS];
	size_t n, fn[MAX_FIELDS], pos = 0;
	int ncol = 0, rc = SA_OK;
	long line = 0;

	/* Header: the field names. */
	if (!next_line(data, len, &pos, &s, &n) || n == 0)
		return sa_fail(SA_EDATA, "%s:1: no header row naming the fields", d->source.name);
	line = 1;
	for (size_t i = 0, start = 0; i <= n; i++) {
		if (i < n && s[i] != '\t')
			continue;
		if (ncol == MAX_FIELDS)
			return sa_fail(SA_EDATA, "%s:1: more than %d fields", d->source.name, MAX_FIELDS);
		f[ncol] = s + start;
		fn[ncol] = i - start;
		start = i + 1;
		/* a template field would read one of them and drop the other */
		for (int c = 0; c < ncol; c++)
			if (fn[c] == fn[ncol] && fn[c] > 0 && memcmp(f[c], f[ncol], fn[c]) == 0)
				return sa_fail(SA_EDATA, "%s:1: column '%.*s' appears twice in the header",
				    d->source.name, (int)fn[c], f[c]);
		ncol++;
	}
	for (int p = 0; p < t->n; p++) {
		tpart *tp = &t->part[p];
		if (!tp->is_field)
			continue;
		for (int c = 0; c < ncol; c++)
			if (fn[c] == tp->len && memcmp(f[c], tp->text, fn[c]) == 0)
				tp->col = c;
		if (tp->col < 0)
			return sa_fail(SA_EDATA, "%s:1: no field '%s' in the header (the template uses it)",
			    d->source.name, tp->text);
	}

	while (rc == SA_OK && next_line(data, len, &pos, &s, &n)) {
		buf text = { 0 };
		int nf = 0;

		line++;
		if (n == 0)
			continue;
		for (size_t i = 0, start = 0; i <= n; i++) {
			if (i < n && s[i] != '\t')
				continue;
			if (nf == ncol) {
				nf++;
				break;
			}
			f[nf] = s + start;
			fn[nf++] = i - start;
			start = i + 1;
		}
		if (nf > ncol)
			return sa_fail(SA_EDATA, "%s:%ld: more fields than the header's %d",
			    d->source.name, line, ncol);
		for (int p = 0; p < t->n && rc == SA_OK; p++) {
			tpart *tp = &t->part[p];
			if (!tp->is_field)
				rc = buf_put(&text, tp->text, tp->len);
			else if (tp->col >= nf)
				rc = sa_fail(SA_EDATA, "%s:%ld: missing field '%s'",
				    d->source.name, line, tp->text);
			else
				rc = tsv_value(&text, f[tp->col], fn[tp->col]);
		}
		if (rc == SA_OK)
			rc = demos_add(d, &text, line);
		free(text.p);
	}
	return rc;
}

/* A JSON value as template text: strings as they are, numbers and booleans
 * as JSON writes them. */
static int
json_value(buf *b, const sa_json *j, const char *name, long line, const char *field)
{
	char num[64];

	switch (j->type) {
	case SA_JSON_STR:
		return buf_put(b, j->str, j->len);
	case SA_JSON_BOOL:
		return buf_put(b, j->num ? "true" : "false", j->num ? 4 : 5);
	case SA_JSON_NUM:
		/* The shortest form that reads back the same, like JSON writers. */
		for (int prec = 1; prec <= 17; prec++) {
			snprintf(num, sizeof num, "%.*g", prec, j->num);
			if (strtod(num, NULL) == j->num)
				break;
		}
		return buf_put(b, num, strlen(num));
	default:
		return sa_fail(SA_EDATA, "%s:%ld: field '%s' is not a string or a number",
		    name, line, field);
	}
}

static int
parse_jsonl(sa_demos *d, const char *data, size_t len, tmpl *t)
{
	const char *s;
	size_t n, pos = 0;
	long line = 0;
	int rc = SA_OK;

	while (rc == SA_OK && next_line(data, len, &pos, &s, &n)) {
		buf text = { 0 };
		sa_json j;

		line++;
		if (blank(s, n))
			continue;
		if ((rc = sa_json_parse(s, n, &j)) != SA_OK)
			return sa_fail(rc, "%s:%ld: %s (JSON Lines: one object per line)",
			    d->source.name, line, sa_error());
		if (j.type != SA_JSON_OBJ) {
			sa_json_free(&j);
			return sa_fail(SA_EDATA, "%s:%ld: not a JSON object (JSON Lines: one object per line)",
			    d->source.name, line);
		}
		for (int p = 0; p < t->n && rc == SA_OK; p++) {
			tpart *tp = &t->part[p];
			const sa_json *v;

			if (!tp->is_field)
				rc = buf_put(&text, tp->text, tp->len);
			else if (!(v = sa_json_get(&j, tp->text)))
				rc = sa_fail(SA_EDATA, "%s:%ld: missing field '%s'",
				    d->source.name, line, tp->text);
			else
				rc = json_value(&text, v, d->source.name, line, tp->text);
		}
		sa_json_free(&j);
		if (rc == SA_OK)
			rc = demos_add(d, &text, line);
		free(text.p);
	}
	return rc;
}

int
sa_demos_parse(sa_demos **out, const char *name, const char *data, size_t len,
    int format, const char *tmpl_text)
{
	sa_demos *d;
	tmpl t = { 0 };
	int rc;

	*out = NULL;
	if (format < 0 || format > SA_DEMOS_JSONL)
		return sa_fail(SA_EUSAGE, "%s: unknown format %d", name, format);
	if (!(d = sa_calloc(1, sizeof *d)))
		return SA_EINTERNAL;
	d->format = format;
	d->source.hash = sa_hash64(SA_HASH64_INIT, data, len);
	if (!(d->source.name = strdup(name))) {
		free(d);
		return sa_fail(SA_EINTERNAL, "out of memory");
	}
	skip_bom(&data, &len);
	if (format == SA_DEMOS_TEXT) {
		buf text = { 0 };
		rc = buf_put(&text, data, len);
		if (rc == SA_OK)
			rc = demos_add(d, &text, 1);
		free(text.p);
	} else if ((rc = tmpl_compile(&t, tmpl_text ? tmpl_text : SA_DEMOS_TEMPLATE)) == SA_OK) {
		rc = format == SA_DEMOS_TSV ? parse_tsv(d, data, len, &t)
		    : parse_jsonl(d, data, len, &t);
		tmpl_free(&t);
	}
	if (rc != SA_OK) {
		sa_demos_free(d);
		return rc;
	}
	*out = d;
	return SA_OK;
}

/* Nothing to encode: no record, or text of blank lines only. */
static int
demos_empty(const sa_demos *d)
{
	if (d->format != SA_DEMOS_TEXT)
		return d->n == 0;
	for (size_t i = 0; i < d->demo[0].len; i++)
		if (!strchr(" \t\r\n", d->demo[0].text[i]))
			return 0;
	return 1;
}

int
sa_demos_read(sa_demos **out, const char *path, const char *data, size_t len,
    int format, const char *tmpl_text)
{
	static const char *const what[] = { "empty text", "a header and no record", "no object" };
	const char *name = strcmp(path, "-") == 0 ? "stdin" : path;
	char *own = NULL;
	int rc;

	*out = NULL;
	if (!data) {
		if ((rc = sa_file_read(path, &own, &len)) != SA_OK)
			return rc;
		data = own;
	}
	rc = sa_demos_parse(out, name, data, len, format, tmpl_text);
	free(own);
	if (rc == SA_OK && demos_empty(*out)) {
		sa_demos_free(*out);
		*out = NULL;
		return sa_fail(SA_EDATA, "%s: no demonstrations (%s)", name, what[format]);
	}
	return rc;
}

/* ---------------------------------------------------------------- formats */

/* Bytes of a file's start that detection reads: the whole of stdin and the
 * head of a file read later give the same answer. */
#define SNIFF_LEN 65536

/* tsv, jsonl or text from the first line of data[0..len), len <= SNIFF_LEN;
 * whole: len is all of the file. */
static int
format_of_content(const char *name, const char *data, size_t len, int whole,
    const char *tmpl_text, int *format)
{
	const char *s, *j0;
	size_t n, pos = 0, ok;
	long line = 0;
	tmpl t;
	int rc;

	skip_bom(&data, &len);
	ok = sa_text_len(data, len);
	/* a head may end inside a character */
	if (ok < len && (whole || data[ok] == '\0' || len - ok > 3))
		return sa_fail(SA_EDATA, "%s: not text (a NUL byte or invalid UTF-8)", name);
	*format = SA_DEMOS_TEXT;
	do {
		if (!next_line(data, len, &pos, &s, &n))
			return SA_OK;
		line++;
	} while (blank(s, n));
	for (j0 = s; *j0 == ' ' || *j0 == '\t'; j0++)
		;
	if (*j0 == '{') {
		sa_json j;
		int obj = 0;
		/* a line longer than the head is taken for what it starts as */
		if (!whole && !memchr(s, '\n', (size_t)(data + len - s)))
			obj = 1;
		else if (sa_json_parse(s, n, &j) == SA_OK) {
			obj = j.type == SA_JSON_OBJ;
			sa_json_free(&j);
		}
		if (obj) {
			*format = SA_DEMOS_JSONL;
			return SA_OK;
		}
		return sa_fail(SA_EDATA, "%s:%ld: cannot tell the format: the line starts like "
		    "JSON Lines but is not a JSON object; give its format (text, tsv or jsonl)", name, line);
	}
	if (!memchr(s, '\t', n))
		return SA_OK;
	/* a tab: a TSV header if it names every field of the template */
	if ((rc = tmpl_compile(&t, tmpl_text ? tmpl_text : SA_DEMOS_TEMPLATE)) != SA_OK)
		return rc;
	rc = SA_OK;
	for (int p = 0; p < t.n && rc == SA_OK; p++) {
		size_t a = 0, found = 0;
		if (!t.part[p].is_field)
			continue;
		while (a <= n && !found) {
			const char *tab = memchr(s + a, '\t', n - a);
			size_t b = tab ? (size_t)(tab - s) : n;
			found = b - a == t.part[p].len && memcmp(s + a, t.part[p].text, b - a) == 0;
			a = b + 1;
		}
		if (!found)
			rc = sa_fail(SA_EDATA, "%s:%ld: cannot tell the format: a line with tabs "
			    "but not a header naming '%s'; give its format (text, tsv or jsonl)", name, line,
			    t.part[p].text);
	}
	tmpl_free(&t);
	if (rc == SA_OK)
		*format = SA_DEMOS_TSV;
	return rc;
}

int
sa_demos_format_resolve(const char *path, const char *data, size_t len,
    const char *tmpl_text, int *format)
{
	static const struct { const char *ext; int format; } ext[] = {
		{ "tsv", SA_DEMOS_TSV }, { "jsonl", SA_DEMOS_JSONL },
		{ "json", SA_DEMOS_JSONL }, { "txt", SA_DEMOS_TEXT },
	};
	const char *dot = strrchr(path, '.');
	char *head = NULL;
	FILE *fp;
	int rc, whole;

	if (*format != SA_DEMOS_AUTO)
		return SA_OK;
	if (strcmp(path, "-") != 0 && dot && !strchr(dot, '/')) {
		for (size_t i = 0; i < sizeof ext / sizeof ext[0]; i++)
			if (strcasecmp(dot + 1, ext[i].ext) == 0) {
				*format = ext[i].format;
				return SA_OK;
			}
		if (strcasecmp(dot, ".csv") == 0)
			return sa_fail(SA_EDATA, "%s: CSV is not read: convert it to TSV or "
			    "JSON Lines, or give its format", path);
	}
	if (data) {
		whole = len <= SNIFF_LEN;
		return format_of_content(strcmp(path, "-") ? path : "stdin", data,
		    whole ? len : SNIFF_LEN, whole, tmpl_text, format);
	}
	if (!(fp = fopen(path, "rb")))
		return sa_fail(SA_ENOINPUT, "%s: %s", path, strerror(errno));
	if (!(head = sa_malloc(SNIFF_LEN))) {
		fclose(fp);
		return SA_EINTERNAL;
	}
	len = fread(head, 1, SNIFF_LEN, fp);
	if (ferror(fp))
		rc = sa_fail(SA_EIO, "%s: %s", path, strerror(errno ? errno : EIO));
	else
		rc = format_of_content(path, head, len, len < SNIFF_LEN, tmpl_text, format);
	fclose(fp);
	free(head);
	return rc;
}

int
sa_demos_formats(char *const *files, int n, int forced, const char *tmpl_text,
    int *formats, char **stdin_data, size_t *stdin_len)
{
	int rc = SA_OK;

	*stdin_data = NULL;
	*stdin_len = 0;
	for (int f = 0; f < n && rc == SA_OK; f++) {
		formats[f] = forced;
		if (strcmp(files[f], "-") == 0) {
			if (*stdin_data)
				rc = sa_fail(SA_EUSAGE, "standard input can be read only once");
			else if ((rc = sa_file_read("-", stdin_data, stdin_len)) == SA_OK)
				rc = sa_demos_format_resolve("-", *stdin_data, *stdin_len, tmpl_text,
				    &formats[f]);
		} else {
			rc = sa_demos_format_resolve(files[f], NULL, 0, tmpl_text, &formats[f]);
		}
	}
	if (rc != SA_OK) {
		free(*stdin_data);
		*stdin_data = NULL;
		*stdin_len = 0;
	}
	return rc;
}

char *
sa_demos_params(const int *formats, int n, int n_ctx, const char *tmpl_text)
{
	char fmts[32] = "", *p;
	int seen = 0, records = 0, rc;

	for (int f = 0; f < n; f++) {
		if (seen & 1 << formats[f])
			continue;
		seen |= 1 << formats[f];
		if (*fmts)
			strcat(fmts, ",");
		strcat(fmts, sa_demos_format_name(formats[f]));
		records |= formats[f] != SA_DEMOS_TEXT;
	}
	rc = records ? asprintf(&p, "format=%s context=%d template=\"%s\"", fmts, n_ctx, tmpl_text)
	    : asprintf(&p, "format=%s context=%d", fmts, n_ctx);
	if (rc < 0) {
		sa_fail(SA_EINTERNAL, "out of memory");
		return NULL;
	}
	return p;
}

void
sa_demos_free(sa_demos *d)
{
	if (!d)
		return;
	for (int i = 0; i < d->n; i++)
		free(d->demo[i].text);
	free(d->demo);
	free(d->source.name);
	free(d);
}

/* --------------------------------------------------------------- segments */

typedef struct seglist {
	sa_segment *s;
	int n;
} seglist;

static int
seg_emit(seglist *l, const int *toks, int n, int n_demos, long line)
{
	sa_segment *p;

	if (!(p = realloc(l->s, (size_t)(l->n + 1) * sizeof *p)))
		return sa_fail(SA_EINTERNAL, "out of memory");
	l->s = p;
	p = &l->s[l->n];
	if (!(p->toks = sa_malloc((size_t)n * sizeof *toks)))
		return SA_EINTERNAL;
	memcpy(p->toks, toks, (size_t)n * sizeof *toks);
	p->n = n;
	p->n_demos = n_demos;
	p->line = line;
	l->n++;
	return SA_OK;
}

/* A demonstration's text -> tokens, without BOS, as d says. */
static int
tokenize(const sa_demos *d, const sa_vocab *v, const char *text, size_t len, int **toks, int *n)
{
	return d->special ? sa_tokenize_special(v, text, len, 0, toks, n) :
	    sa_tokenize(v, text, len, 0, toks, n);
}

/* A text stream: tokenized whole, cut at the last token ending a line that
 * still fits, or anywhere inside a line longer than a segment. */
static int
segment_text(const sa_demos *d, const sa_vocab *v, int n_ctx, int bos, seglist *l)
{
	int *toks = NULL, *seg = NULL, n, cap = n_ctx - (bos >= 0), rc;
	unsigned char *ends_line = NULL;
	long line = 1;

	if (d->n == 0 || d->demo[0].len == 0)
		return SA_OK;
	if ((rc = tokenize(d, v, d->demo[0].text, d->demo[0].len, &toks, &n)) != SA_OK)
		return sa_fail(rc, "%s: %s", d->source.name, sa_error());
	if (!(ends_line = sa_malloc((size_t)n + 1)) || !(seg = sa_malloc((size_t)n_ctx * sizeof *seg))) {
		rc = SA_EINTERNAL;
		goto out;
	}
	for (int i = 0; i < n; i++) {
		char piece[256];
		int pn = sa_token_to_piece(v, toks[i], piece, sizeof piece);
		/* A piece longer than the buffer: its last byte was not kept. */
		ends_line[i] = pn > 0 && pn <= (int)sizeof piece && piece[pn - 1] == '\n';
	}
	for (int s = 0; s < n; ) {
		int e = s + cap < n ? s + cap : n, m = 0;

		if (e < n) {
			int t = e;
			while (t > s && !ends_line[t - 1])
				t--;
			if (t > s)
				e = t;
		}
		if (bos >= 0)
			seg[m++] = bos;
		memcpy(seg + m, toks + s, (size_t)(e - s) * sizeof *seg);
		if ((rc = seg_emit(l, seg, m + e - s, 0, line)) != SA_OK)
			goto out;
		for (; s < e; s++)
			line += ends_line[s];
	}
	rc = SA_OK;
out:
	free(toks);
	free(seg);
	free(ends_line);
	return rc;
}

/* Records: tokenized one by one (as a prompt is, without BOS) and packed
 * greedily in order, or one to a segment (alone); a segment never splits one. */
static int
segment_records(const sa_demos *d, const sa_vocab *v, int n_ctx, int bos, int alone, seglist *l)
{
	int *seg, m = 0, n_demos = 0, rc = SA_OK;
	long line = 0;

	if (!(seg = sa_malloc((size_t)n_ctx * sizeof *seg)))
		return SA_EINTERNAL;
	for (int i = 0; i < d->n && rc == SA_OK; i++) {
		const sa_demo *dm = &d->demo[i];
		int *toks = NULL, n = 0;

		if ((rc = tokenize(d, v, dm->text, dm->len, &toks, &n)) != SA_OK) {
			rc = sa_fail(rc, "%s:%ld: %s", d->source.name, dm->line, sa_error());
			break;
		}
		if (n + (bos >= 0) > n_ctx) {
			rc = sa_fail(SA_EDATA, "%s:%ld: demonstration of %d tokens%s exceeds the context of %d",
			    d->source.name, dm->line, n + (bos >= 0), bos >= 0 ? " (with BOS)" : "", n_ctx);
		} else {
			if (n_demos > 0 && (alone || m + n > n_ctx)) {
				rc = seg_emit(l, seg, m, n_demos, line);
				n_demos = 0;
			}
			if (n_demos == 0) {
				m = 0;
				line = dm->line;
				if (bos >= 0)
					seg[m++] = bos;
			}
			memcpy(seg + m, toks, (size_t)n * sizeof *toks);
			m += n;
			n_demos++;
		}
		free(toks);
	}
	if (rc == SA_OK && n_demos > 0)
		rc = seg_emit(l, seg, m, n_demos, line);
	free(seg);
	return rc;
}

int
sa_demos_segment(const sa_demos *d, const sa_vocab *v, int n_ctx, int records,
    sa_segment **segs, int *n_segs)
{
	seglist l = { 0 };
	int bos = sa_vocab_add_bos(v) ? sa_vocab_bos(v) : -1, rc;

	*segs = NULL;
	*n_segs = 0;
	if (n_ctx < 1 + (bos >= 0))
		return sa_fail(SA_EUSAGE, "context of %d tokens is too small", n_ctx);
	if (records != SA_RECORDS_PACKED && records != SA_RECORDS_ALONE)
		return sa_fail(SA_EUSAGE, "unknown layout of records %d", records);
	rc = d->format == SA_DEMOS_TEXT ? segment_text(d, v, n_ctx, bos, &l)
	    : segment_records(d, v, n_ctx, bos, records == SA_RECORDS_ALONE, &l);
	if (rc != SA_OK) {
		sa_segments_free(l.s, l.n);
		return rc;
	}
	*segs = l.s;
	*n_segs = l.n;
	return SA_OK;
}

void
sa_segments_free(sa_segment *segs, int n)
{
	for (int i = 0; i < n; i++)
		free(segs[i].toks);
	free(segs);
}
