/*
 * eval.c - what sa-eval measures with: task directories and split files,
 * and examples tokenized the way sa-encode and sa-train tokenize them.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "sa.h"

/* ------------------------------------------------------------------ tasks */

static void
free_examples(sa_example *ex, int n)
{
	for (int i = 0; ex && i < n; i++) {
		free(ex[i].input);
		free(ex[i].label);
	}
	free(ex);
}

/* The header row must name both columns (the parser would blame a template). */
static int
check_header(const char *path, const char *data, size_t len)
{
	static const char *const want[] = { "input", "label" };
	const char *nl = memchr(data, '\n', len);
	size_t n = nl ? (size_t)(nl - data) : len;

	if (n > 0 && data[n - 1] == '\r')
		n--;
	for (int w = 0; w < 2; w++) {
		size_t wl = strlen(want[w]);
		int found = 0;
		for (size_t a = 0; a <= n && !found;) {
			const char *tab = memchr(data + a, '\t', n - a);
			size_t b = tab ? (size_t)(tab - data) : n;
			found = b - a == wl && memcmp(data + a, want[w], wl) == 0;
			a = b + 1;
		}
		if (!found)
			return sa_fail(SA_EDATA, "%s:1: no column '%s' in the header (want input and label)",
			    path, want[w]);
	}
	return SA_OK;
}

/*
 * DIR/split.tsv: parsed twice, once per column, so that a value keeps any
 * tab or newline its TSV escapes hold.  Both parses skip the same blank
 * lines, so record i is the same row in both.
 */
static int
read_examples(const char *dir, const char *split, sa_example **out, int *n)
{
	sa_demos *in = NULL, *lab = NULL;
	char *path, *data = NULL;
	size_t len;
	int rc;

	*out = NULL;
	*n = 0;
	if (asprintf(&path, "%s/%s.tsv", dir, split) < 0)
		return sa_fail(SA_EINTERNAL, "out of memory");
	if ((rc = sa_file_read(path, &data, &len)) != SA_OK)
		goto done;
	if ((rc = check_header(path, data, len)) != SA_OK ||
	    (rc = sa_demos_parse(&in, path, data, len, SA_DEMOS_TSV, "{input}")) != SA_OK ||
	    (rc = sa_demos_parse(&lab, path, data, len, SA_DEMOS_TSV, "{label}")) != SA_OK)
		goto done;
	if (in->n == 0) {
		rc = sa_fail(SA_EDATA, "%s:2: no examples", path);
		goto done;
	}
	if (!(*out = sa_calloc((size_t)in->n, sizeof **out))) {
		rc = SA_EINTERNAL;
		goto done;
	}
	for (int i = 0; i < in->n; i++) {
		sa_example *e = &(*out)[i];
		/* the texts move over; the demos are freed without them */
		e->input = in->demo[i].text;
		e->label = lab->demo[i].text;
		e->line = in->demo[i].line;
		in->demo[i].text = NULL;
		lab->demo[i].text = NULL;
	}
	*n = in->n;
done:
	sa_demos_free(in);
	sa_demos_free(lab);
	free(data);
	free(path);
	return rc;
}

int
sa_task_load(sa_task **out, const char *dir, const char *split)
{
	sa_task *t;
	struct stat st;
	const char *base;
	size_t dl = strlen(dir);
	int rc;

	*out = NULL;
	if (stat(dir, &st) != 0)
		return sa_fail(SA_ENOINPUT, "%s: %s", dir, strerror(errno));
	if (!S_ISDIR(st.st_mode))
		return sa_fail(SA_ENOINPUT, "%s: not a task directory", dir);
	if (!(t = sa_calloc(1, sizeof *t)))
		return SA_EINTERNAL;
	while (dl > 1 && dir[dl - 1] == '/')
		dl--;
	if (!(t->dir = strndup(dir, dl))) {
		rc = sa_fail(SA_EINTERNAL, "out of memory");
		goto fail;
	}
	base = strrchr(t->dir, '/');
	if (!(t->name = strdup(base && base[1] ? base + 1 : t->dir))) {
		rc = sa_fail(SA_EINTERNAL, "out of memory");
		goto fail;
	}
	if ((rc = read_examples(t->dir, "train", &t->train, &t->n_train)) != SA_OK ||
	    (rc = read_examples(t->dir, split, &t->eval, &t->n_eval)) != SA_OK)
		goto fail;
	for (int i = 0; i < t->n_train; i++) {
		int j = 0;
		while (j < t->n_labels && strcmp(t->labels[j], t->train[i].label) != 0)
			j++;
		if (j < t->n_labels)
			continue;
		char **p = realloc(t->labels, (size_t)(t->n_labels + 1) * sizeof *p);
		if (!p || !(p[t->n_labels] = strdup(t->train[i].label))) {
			if (p)
				t->labels = p;
			rc = sa_fail(SA_EINTERNAL, "out of memory");
			goto fail;
		}
		t->labels = p;
		t->n_labels++;
	}
	*out = t;
	return SA_OK;
fail:
	sa_task_free(t);
	return rc;
}

void
sa_task_free(sa_task *t)
{
	if (!t)
		return;
	free_examples(t->train, t->n_train);
	free_examples(t->eval, t->n_eval);
	for (int i = 0; i < t->n_labels; i++)
		free(t->labels[i]);
	free(t->labels);
	free(t->name);
	free(t->dir);
	free(t);
}

/* ------------------------------------------------------------ split files */

static char *
trim(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t' || *s == '\r')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
		*--e = 0;
	return s;
}

static int
seen_of(const char *s)
{
	if (strcasecmp(s, "seen") == 0)
		return 1;
	if (strcasecmp(s, "unseen") == 0)
		return 0;
	return -1;
}

/* "class", "classification", "class: a, b", "gen", "generation", ... */
static int
kind_of(const char *s)
{
	static const struct { const char *word; int kind; } w[] = {
		{ "classification", SA_KIND_CLASS }, { "class", SA_KIND_CLASS },
		{ "generation", SA_KIND_GEN }, { "gen", SA_KIND_GEN },
	};

	for (size_t i = 0; i < sizeof w / sizeof w[0]; i++) {
		size_t n = strlen(w[i].word);
		if (strncasecmp(s, w[i].word, n) == 0 && (!s[n] || s[n] == ':' || s[n] == ' '))
			return w[i].kind;
	}
	return SA_KIND_AUTO;
}

static void
labels_free(char **l, int n)
{
	for (int i = 0; i < n; i++)
		free(l[i]);
	free(l);
}

/* "a|b|c" into e's labels; "" and "-" list none. */
static int
labels_set(sa_split_entry *e, const char *list)
{
	labels_free(e->labels, e->n_labels);
	e->labels = NULL;
	e->n_labels = 0;
	if (!list || !*list || strcmp(list, "-") == 0)
		return SA_OK;
	for (const char *p = list; p; ) {
		const char *bar = strchr(p, '|');
		size_t len = bar ? (size_t)(bar - p) : strlen(p);
		char **l = realloc(e->labels, (size_t)(e->n_labels + 1) * sizeof *l);

		if (!l)
			return sa_fail(SA_EINTERNAL, "out of memory");
		e->labels = l;
		if (!(l[e->n_labels] = strndup(p, len)))
			return sa_fail(SA_EINTERNAL, "out of memory");
		e->n_labels++;
		p = bar ? bar + 1 : NULL;
	}
	return SA_OK;
}

static int
split_add(sa_split_entry **s, int *n, const char *task, int seen, int kind, const char *labels)
{
	sa_split_entry *p;

	/* a later line about the same task wins */
	for (int i = 0; i < *n; i++)
		if (strcmp((*s)[i].task, task) == 0) {
			(*s)[i].seen = seen;
			(*s)[i].kind = kind;
			return labels_set(&(*s)[i], labels);
		}
	if (!(p = realloc(*s, (size_t)(*n + 1) * sizeof *p)))
		return sa_fail(SA_EINTERNAL, "out of memory");
	*s = p;
	memset(&p[*n], 0, sizeof *p);
	if (!(p[*n].task = strdup(task)))
		return sa_fail(SA_EINTERNAL, "out of memory");
	p[*n].seen = seen;
	p[*n].kind = kind;
	(*n)++;
	return labels_set(&p[*n - 1], labels);
}

/* Bytes of s a message quotes: at most 24, cut between characters. */
static int
quote_len(const char *s)
{
	size_t n = strlen(s);

	if (n <= 24)
		return (int)n;
	for (n = 24; n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80; n--)
		;
	return (int)n;
}

/* Split line at sep into at most max trimmed fields; returns how many. */
static int
fields(char *line, int sep, char **f, int max)
{
	int n = 0;

	while (n < max) {
		char *c = strchr(line, sep);
		if (c)
			*c = 0;
		f[n++] = trim(line);
		if (!c)
			break;
		line = c + 1;
	}
	return n;
}

/* A Markdown heading: 1 if it speaks of seen tasks only, 0 of unseen only. */
static int
heading_set(const char *h)
{
	int seen = 0, unseen = 0;

	for (const char *p = h; (p = strcasestr(p, "seen")); p += 4) {
		if (p - h >= 2 && strncasecmp(p - 2, "un", 2) == 0)
			unseen++;
		else
			seen++;
	}
	return seen && !unseen ? 1 : unseen && !seen ? 0 : -1;
}

/* "| `task` | ... |": a cell "seen"/"unseen" or else the heading's set,
 * a cell that names a kind; header and rule rows name neither. */
static int
split_md_row(char *line, int heading, sa_split_entry **s, int *n)
{
	char *cell[64], *task;
	int nc, seen = -1, kind = SA_KIND_AUTO;

	nc = fields(line + 1, '|', cell, 64);
	if (nc < 2)
		return SA_OK;
	for (int i = 1; i < nc; i++) {
		if (seen < 0)
			seen = seen_of(cell[i]);
		if (kind == SA_KIND_AUTO)
			kind = kind_of(cell[i]);
	}
	if (seen < 0)
		seen = heading;
	task = cell[0];
	if (*task == '`' && strlen(task) >= 2 && task[strlen(task) - 1] == '`') {
		task[strlen(task) - 1] = 0;
		task++;
	}
	if (seen < 0 || !*task || strcasecmp(task, "task") == 0 || *task == '-' || *task == ':')
		return SA_OK;
	return split_add(s, n, task, seen, kind, NULL);
}

int
sa_split_read(const char *path, sa_split_entry **out, int *n)
{
	char *data, *line, *next;
	size_t len;
	long lineno = 0;
	/* TSV columns: positional, or named by a header row starting "task" */
	int c_split = 1, c_kind = 2, c_labels = -1, heading = -1, rc;

	*out = NULL;
	*n = 0;
	if ((rc = sa_file_read(path, &data, &len)) != SA_OK)
		return rc;
	if (sa_text_len(data, len) < len) {
		free(data);
		return sa_fail(SA_EDATA, "%s: not a text file", path);
	}
	for (line = data; line && rc == SA_OK; line = next) {
		char *f[64], *p;
		int nf, seen, kind = SA_KIND_AUTO;

		lineno++;
		if ((next = strchr(line, '\n')))
			*next++ = 0;
		p = trim(line);
		if (*p == '#') {
			heading = heading_set(p);
			continue;
		}
		if (*p == '|') {
			rc = split_md_row(p, heading, out, n);
			continue;
		}
		if (!strchr(p, '\t'))
			continue;   /* prose */
		nf = fields(p, '\t', f, 64);
		if (strcasecmp(f[0], "task") == 0) {
			c_split = c_kind = c_labels = -1;
			for (int i = 1; i < nf; i++) {
				if (strcasecmp(f[i], "split") == 0 || strcasecmp(f[i], "set") == 0)
					c_split = i;
				else if (strcasecmp(f[i], "kind") == 0)
					c_kind = i;
				else if (strcasecmp(f[i], "labels") == 0)
					c_labels = i;
			}
			if (c_split < 0)
				rc = sa_fail(SA_EDATA, "%s:%ld: no column 'split' in the header", path, lineno);
			continue;
		}
		seen = c_split < nf ? seen_of(f[c_split]) : -1;
		if (c_kind >= 0 && c_kind < nf && *f[c_kind] &&
		    (kind = kind_of(f[c_kind])) == SA_KIND_AUTO)
			rc = sa_fail(SA_EDATA, "%s:%ld: kind '%.*s%s' is neither class nor gen",
			    path, lineno, quote_len(f[c_kind]), f[c_kind],
			    f[c_kind][quote_len(f[c_kind])] ? "..." : "");
		else if (seen < 0 || !*f[0])
			rc = sa_fail(SA_EDATA, "%s:%ld: want task<TAB>seen|unseen[<TAB>class|gen]",
			    path, lineno);
		else
			rc = split_add(out, n, f[0], seen, kind,
			    c_labels >= 0 && c_labels < nf ? f[c_labels] : NULL);
	}
	free(data);
	if (rc != SA_OK) {
		sa_split_free(*out, *n);
		*out = NULL;
		*n = 0;
	}
	return rc;
}

void
sa_split_free(sa_split_entry *s, int n)
{
	for (int i = 0; s && i < n; i++) {
		free(s[i].task);
		labels_free(s[i].labels, s[i].n_labels);
	}
	free(s);
}

/* --------------------------------------------------------------- template */

/* "{input} -> {label}\n" (label NULL: "{input} ->"), malloc'd. */
static char *
render(const char *input, const char *label, size_t *len)
{
	size_t ni = strlen(input), nl = label ? strlen(label) : 0;
	char *s = sa_malloc(ni + nl + 6);

	if (!s)
		return NULL;
	memcpy(s, input, ni);
	if (!label) {
		memcpy(s + ni, " ->", 4);
		*len = ni + 3;
		return s;
	}
	memcpy(s + ni, " -> ", 4);
	memcpy(s + ni + 4, label, nl);
	memcpy(s + ni + 4 + nl, "\n", 2);
	*len = ni + nl + 5;
	return s;
}

int
sa_demos_from_examples(sa_demos **out, const char *name, const sa_example *ex,
    const int *idx, int n)
{
	sa_demos *d;

	*out = NULL;
	if (!(d = sa_calloc(1, sizeof *d)))
		return SA_EINTERNAL;
	d->format = SA_DEMOS_TSV;
	if (!(d->source.name = strdup(name)) ||
	    !(d->demo = calloc(n > 0 ? (size_t)n : 1, sizeof *d->demo))) {
		sa_demos_free(d);
		return sa_fail(SA_EINTERNAL, "out of memory");
	}
	d->source.hash = SA_HASH64_INIT;
	for (int i = 0; i < n; i++) {
		const sa_example *e = &ex[idx[i]];
		sa_demo *dm = &d->demo[i];

		if (!(dm->text = render(e->input, e->label, &dm->len))) {
			sa_demos_free(d);
			return SA_EINTERNAL;
		}
		dm->line = e->line;
		d->n++;
		d->source.hash = sa_hash64(d->source.hash, dm->text, dm->len);
	}
	*out = d;
	return SA_OK;
}

/* text's tokens (no BOS); with after_newline, as a text that holds it
 * right after a newline tokenizes it. */
static int
tokenize_at(const sa_vocab *v, const char *text, size_t len, int after_newline, int **toks,
    int *n)
{
	int whole, rc;

	if (!after_newline)
		return sa_tokenize(v, text, len, 0, toks, n);
	if ((rc = sa_tokenize_after(v, "\n", text, len, toks, n, &whole)) != SA_OK || whole)
		return rc;
	free(*toks);
	*toks = NULL;
	*n = 0;
	return sa_fail(SA_EDATA, "'%.40s' does not tokenize apart from a newline before it", text);
}

static int
qa_build(sa_qa *q, const sa_vocab *v, const char *input, const char *const *labels,
    int n_labels, int after_newline)
{
	int **rec = NULL, *nrec = NULL, rc;
	size_t len;
	char *s;

	memset(q, 0, sizeof *q);
	if (!(s = render(input, NULL, &len)))
		return SA_EINTERNAL;
	rc = tokenize_at(v, s, len, after_newline, &q->query, &q->n_query);
	free(s);
	if (rc != SA_OK)
		return rc;
	q->n_prefix = q->n_query;
	if (n_labels > 0 && (!(q->answer = rec = sa_calloc((size_t)n_labels, sizeof *rec)) ||
	    !(q->n_answer = nrec = sa_calloc((size_t)n_labels, sizeof *nrec)))) {
		rc = SA_EINTERNAL;
		goto fail;
	}
	for (int i = 0; i < n_labels; i++) {
		int c = 0;

		if (!(s = render(input, labels[i], &len))) {
			rc = SA_EINTERNAL;
			goto fail;
		}
		rc = tokenize_at(v, s, len, after_newline, &rec[i], &nrec[i]);
		free(s);
		if (rc != SA_OK)
			goto fail;
		q->n_cand++;
		while (c < q->n_prefix && c < nrec[i] && rec[i][c] == q->query[c])
			c++;
		q->n_prefix = c;
	}
	/* records become answers: drop the prefix the prompt holds */
	for (int i = 0; i < n_labels; i++) {
		memmove(rec[i], rec[i] + q->n_prefix, (size_t)(nrec[i] - q->n_prefix) * sizeof **rec);
		nrec[i] -= q->n_prefix;
		if (nrec[i] == 0) {
			rc = sa_fail(SA_EDATA, "label '%s' of input '%s' adds no tokens", labels[i], input);
			goto fail;
		}
	}
	return SA_OK;
fail:
	sa_qa_free(q);
	return rc;
}

int
sa_qa_build(sa_qa *q, const sa_vocab *v, const char *input,
    const char *const *labels, int n_labels)
{
	return qa_build(q, v, input, labels, n_labels, 0);
}

int
sa_qa_build_in_text(sa_qa *q, const sa_vocab *v, const char *input,
    const char *const *labels, int n_labels)
{
	return qa_build(q, v, input, labels, n_labels, 1);
}

void
sa_qa_free(sa_qa *q)
{
	for (int i = 0; i < q->n_cand; i++)
		free(q->answer[i]);
	free(q->answer);
	free(q->n_answer);
	free(q->query);
	memset(q, 0, sizeof *q);
}
