/*
 * tool.h - what every sa tool's main shares: its name in messages, die/warn,
 * number parsing for options, the default model and adapter, the closing
 * check of stdout, and its options: one table that gives getopt_long's, the
 * letters and the --help text, and says what each option does.
 * Included by exactly one .c per tool, which defines TOOL (its name) first,
 * so the definitions live here.
 */
#ifndef TOOL_H
#define TOOL_H

#include <errno.h>
#include <float.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sa.h"

static const char *argv0 = "sa";

static void __attribute__((unused))
setprogname_(const char *a)
{
	const char *s = strrchr(a, '/');
	argv0 = s ? s + 1 : a;
}

/* The one line of a message on stderr: "tool: message". */
static void
vwarnx_(const char *fmt, va_list ap)
{
	fprintf(stderr, "%s: ", argv0);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
}

static void __attribute__((unused))
warnx_(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vwarnx_(fmt, ap);
	va_end(ap);
}

/* Exit with status after a one-line message. */
static void __attribute__((noreturn))
die(int status, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vwarnx_(fmt, ap);
	va_end(ap);
	exit(status);
}

/* Exit with a library status and its message. */
static void __attribute__((noreturn))
die_sa(int rc)
{
	die(rc, "%s", sa_error());
}

#define TRY(expr) do { int try_rc_ = (expr); if (try_rc_ != SA_OK) die_sa(try_rc_); } while (0)

static long __attribute__((unused))
parse_long(const char *opt, const char *s, long lo, long hi)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < lo || v > hi)
		die(SA_EUSAGE, "%s: invalid value '%s' (want an integer from %ld to %ld)", opt, s, lo, hi);
	return v;
}

static double __attribute__((unused))
parse_double(const char *opt, const char *s, double lo, double hi)
{
	char *end, a[32], b[32];
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || !(v >= lo && v <= hi))
		die(SA_EUSAGE, "%s: invalid value '%s' (want a number from %s to %s)", opt, s,
		    sa_num_text(a, lo), sa_num_text(b, hi));
	return v;
}

/*
 * An operand FILE[:NUMBER] (sa-run -d, sa-merge, sa-export): the number
 * after the last ':' scales the file, unless the whole operand names a
 * file, which wins: "x:2" is the file x:2 if there is one, else x at 2;
 * "x:2:1" is x:2 at 1; "x:y" is a name.  A number that is not a finite
 * float (nan, inf, 1e40) is a usage error.  *path is malloc'd, *scale 1
 * when none is given; returns whether one was.
 */
static int __attribute__((unused))
split_scale(const char *what, const char *arg, char **path, double *scale)
{
	const char *colon = strrchr(arg, ':');
	char *end;
	double v = 1;
	int given = 0;

	if (colon && colon > arg && access(arg, F_OK) != 0) {
		v = strtod(colon + 1, &end);
		given = end > colon + 1 && !*end;
		if (given && !(fabs(v) <= FLT_MAX))
			die(SA_EUSAGE, "%s %s in '%s' is not a finite float", what, colon + 1, arg);
	}
	*scale = given ? v : 1;
	if (!(*path = given ? strndup(arg, (size_t)(colon - arg)) : strdup(arg)))
		die(SA_EINTERNAL, "out of memory");
	return given;
}

/* --mats LIST: GGUF names of matrices, comma-separated, or "all". */
static uint32_t __attribute__((unused))
parse_mats(const char *list)
{
	uint32_t mats = 0;
	char *copy, *tok, *save;

	if (strcmp(list, "all") == 0)
		return (1u << SA_NMAT) - 1;
	if (!(copy = strdup(list)))
		die(SA_EINTERNAL, "out of memory");
	for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		int m = sa_mat_from_name(tok);
		if (m < 0)
			die(SA_EUSAGE, "--mats: unknown matrix '%s' (attn_q, attn_k, attn_v, "
			    "attn_output, ffn_gate, ffn_up, ffn_down)", tok);
		mats |= 1u << m;
	}
	free(copy);
	if (!mats)
		die(SA_EUSAGE, "--mats: empty list");
	return mats;
}

/* --kind pool|lsq: an adapter's context mapping. */
static int __attribute__((unused))
parse_kind(const char *s)
{
	if (strcmp(s, "pool") && strcmp(s, "lsq"))
		die(SA_EUSAGE, "--kind: unknown kind '%s' (pool, lsq)", s);
	return strcmp(s, "lsq") ? SA_MAPPING_POOL : SA_MAPPING_LSQ;
}

/* -c N against the model: 0 is the model's own context, and more than it
 * is refused rather than quietly cut to it. */
static int __attribute__((unused))
ctx_size(long n, const sa_model *m)
{
	if (n > m->cfg.n_ctx)
		die(SA_EUSAGE, "--ctx-size %ld exceeds the model's context of %d", n, m->cfg.n_ctx);
	return n ? (int)n : m->cfg.n_ctx;
}

/*
 * Input from a terminal is refused, as gzip refuses compressed data from
 * one: a tool that waits for what nobody is going to type looks hung.
 */
static void __attribute__((unused))
stdin_not_terminal(const char *what, const char *hint)
{
	if (isatty(STDIN_FILENO))
		die(SA_EUSAGE, "refusing to read %s from a terminal (%s)", what, hint);
}

/* How many of files[0..n) are '-', the standard input. */
static int __attribute__((unused))
stdin_count(const char *const *files, int n)
{
	int seen = 0;

	for (int i = 0; i < n; i++)
		seen += strcmp(files[i], "-") == 0;
	return seen;
}

/* File operands, '-' the standard input: at most once, and no terminal. */
static void __attribute__((unused))
stdin_operands(char *const *files, int n, const char *what)
{
	int seen = stdin_count((const char *const *)files, n);

	if (seen > 1)
		die(SA_EUSAGE, "stdin ('-') given more than once");
	if (seen)
		stdin_not_terminal(what, "give a file, or pipe one in");
}

/* A usage error: the message (if any), the tool's synopsis, exit 64. */
static void __attribute__((noreturn, unused))
usage_die(const char *synopsis, const char *fmt, ...)
{
	va_list ap;

	if (fmt) {
		va_start(ap, fmt);
		vwarnx_(fmt, ap);
		va_end(ap);
	}
	fputs(synopsis, stderr);
	exit(SA_EUSAGE);
}

/* The path the format makes, in buf, when it fits and is readable; else NULL. */
static const char * __attribute__((format(printf, 3, 4)))
readable(char *buf, size_t size, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, size, fmt, ap);
	va_end(ap);
	return n > 0 && (size_t)n < size && access(buf, R_OK) == 0 ? buf : NULL;
}

/*
 * NAME of the shipped files (model.gguf, adapter.gguf) into buf: in data/
 * of the source tree the tool runs from (bin/.. of the executable), else in
 * SA_DATADIR, where make install puts them (the Makefile derives it from
 * PREFIX).  NULL when neither has it.
 */
static const char *
shipped_file(char *buf, size_t size, const char *name)
{
	char exe[PATH_MAX], *slash = NULL;
	ssize_t n;

	if ((n = readlink("/proc/self/exe", exe, sizeof exe - 1)) > 0) {
		exe[n] = 0;
		for (int up = 0; up < 2 && (slash = strrchr(exe, '/')); up++)
			*slash = 0;
	}
	if (slash && readable(buf, size, "%s/data/%s", exe, name))
		return buf;
	return readable(buf, size, "%s/%s", SA_DATADIR, name);
}

/* The inputs a tool finds by itself when not given: the model and the adapter. */
enum { INPUT_MODEL, INPUT_ADAPTER, INPUT_N };
static const struct {
	const char *what, *option, *env, *name;
} default_inputs[INPUT_N] = {
	[INPUT_MODEL] = { "model", "-m MODEL", "SA_MODEL", "model.gguf" },
	[INPUT_ADAPTER] = { "adapter", "-a ADAPTER", "SA_ADAPTER", "adapter.gguf" },
};

/* The file of an input not given: $ENV when set, else the shipped NAME. */
static __attribute__((unused)) const char *
default_input(int which)
{
	static char buf[INPUT_N][PATH_MAX];
	const char *e = getenv(default_inputs[which].env);

	return e && *e ? e : shipped_file(buf[which], sizeof buf[which], default_inputs[which].name);
}

/* The file given (-m FILE, -a FILE), else the default; a usage error when none. */
static __attribute__((unused)) const char *
need_input(int which, const char *given, const char *synopsis)
{
	const char *p = given ? given : default_input(which);

	if (!p)
		usage_die(synopsis, "no %s: give %s or set %s (there is no %s/%s)",
		    default_inputs[which].what, default_inputs[which].option,
		    default_inputs[which].env, SA_DATADIR, default_inputs[which].name);
	return p;
}

/* -f is the prompt file, as in llama.cpp; the format of sa-encode and
 * sa-export is -F.  A usage error that says so for -f FORMAT. */
static void __attribute__((noreturn, unused))
format_moved(const char *arg, const char *synopsis)
{
	usage_die(synopsis, "-f %s: the format option is -F (--format); did you mean -F %s?", arg, arg);
}

/* A library's message (sa_note_fn): a line on stderr. */
static void __attribute__((unused))
note_stderr(void *ctx, const char *msg)
{
	warnx_("%s", msg);
}

/* Seconds on the monotonic clock, for rates and timings. */
static double __attribute__((unused))
now(void)
{
	return sa_now();
}

/* Flush and close stdout; a failure (disk full, closed pipe) is an I/O error. */
static void __attribute__((unused))
close_stdout(void)
{
	if (sa_stdout_close() != SA_OK)
		die_sa(SA_EIO);
}

/* An output of binary data (-o OUT) on a terminal is refused. */
static void __attribute__((unused))
stdout_not_terminal(const char *out, const char *what)
{
	if (strcmp(out, "-") == 0 && isatty(STDOUT_FILENO))
		die(SA_EUSAGE, "refusing to write a binary %s to a terminal (use -o FILE)", what);
}

/* The values of a repeatable option, in the order given (argv's strings). */
typedef struct tool_list {
	const char **v;          /* malloc'd */
	int n;
} tool_list;

static void
list_push(tool_list *l, const char *s)
{
	if (!(l->v = realloc(l->v, (size_t)(l->n + 1) * sizeof *l->v)))
		die(SA_EINTERNAL, "out of memory");
	l->v[l->n++] = s;
}

/* Files with a scale each, FILE[:NUMBER] split (split_scale). */
typedef struct scaled_list {
	char **path;             /* malloc'd, each too */
	double *scale;
	int n;
} scaled_list;

/* arg, a FILE[:NUMBER] ("weight" or "scale" in messages), after the others;
 * returns whether it gave a number. */
static int __attribute__((unused))
scaled_push(scaled_list *l, const char *what, const char *arg)
{
	if (!(l->path = realloc(l->path, (size_t)(l->n + 1) * sizeof *l->path)) ||
	    !(l->scale = realloc(l->scale, (size_t)(l->n + 1) * sizeof *l->scale)))
		die(SA_EINTERNAL, "out of memory");
	l->n++;
	return split_scale(what, arg, &l->path[l->n - 1], &l->scale[l->n - 1]);
}

static void __attribute__((unused))
scaled_free(scaled_list *l)
{
	for (int i = 0; i < l->n; i++)
		free(l->path[i]);
	free(l->path);
	free(l->scale);
}

/* ------------------------------------------------------------ options */

/*
 * A tool's options are one table of tool_opt, a line each:
 *   { "name", 'x', "ARG", ACTION, "its line of --help" }
 * the long name, the letter (0: none), the value's name in the help (NULL:
 * the option takes none), what the option does, and the help (NULL: an
 * alias, not listed; "a\nb": b goes on the next line).  The ACTION:
 *   STR(&s)          s = the value
 *   NUM(&x, lo, hi)  x = the value, a number from lo to hi, of x's type
 *                    (int, long, uint64_t, float, double)
 *   FLAG(&i, v)      i = v
 *   LIST(&l)         the value after the others of tool_list l
 *   CALL(code)       the tool's own: its function is called with the entry
 * TEXT("...") is a line of the help as it is; OPTIONS_END, -h and -V,
 * closes the table.  A bad number is a usage error naming --name.
 */
enum { OPT_END, OPT_TEXT, OPT_STR, OPT_FLAG, OPT_INT, OPT_LONG, OPT_U64, OPT_FLOAT,
    OPT_DOUBLE, OPT_LIST, OPT_CALL, OPT_HELP, OPT_VERSION };

typedef struct tool_opt {
	const char *name;
	int letter;
	const char *arg;
	int kind;                /* OPT_* */
	void *p;                 /* the variable set */
	long lo, hi;             /* the range of an integer, */
	double dlo, dhi;         /* of a float */
	int val;                 /* FLAG: the value set; CALL: the code */
	const char *help;
} tool_opt;

/* _Generic: a variable of another type does not compile. */
#define STR(p) OPT_STR, _Generic((p), const char **: (p)), 0, 0, 0, 0, 0
#define NUM(p, lo, hi) _Generic((p), int *: OPT_INT, long *: OPT_LONG, uint64_t *: OPT_U64, \
    float *: OPT_FLOAT, double *: OPT_DOUBLE), (p), (long)(lo), (long)(hi), lo, hi, 0
#define FLAG(p, v) OPT_FLAG, _Generic((p), int *: (p)), 0, 0, 0, 0, v
#define LIST(p) OPT_LIST, _Generic((p), tool_list *: (p)), 0, 0, 0, 0, 0
#define CALL(code) OPT_CALL, NULL, 0, 0, 0, 0, code
#define TEXT(s) { NULL, 0, NULL, OPT_TEXT, NULL, 0, 0, 0, 0, 0, s }
#define OPTIONS_END { "help", 'h', NULL, OPT_HELP, NULL, 0, 0, 0, 0, 0, "this help" }, \
    { "version", 'V', NULL, OPT_VERSION, NULL, 0, 0, 0, 0, 0, "version" }, { NULL }

/* The column of the options' descriptions in the help. */
#define HELP_COLUMN 24

/* The help: the synopsis, then an entry a line, the options' descriptions
 * at HELP_COLUMN (or two spaces after a longer option). */
static void
opts_help(const tool_opt *t, const char *synopsis)
{
	fputs(synopsis, stdout);
	for (; t->kind; t++) {
		int n;

		if (t->kind == OPT_TEXT)
			puts(t->help);
		if (t->kind == OPT_TEXT || !t->help)
			continue;
		n = t->letter ? printf("  -%c, --%s", t->letter, t->name) : printf("      --%s", t->name);
		n += t->arg ? printf(" %s", t->arg) : 0;
		printf("%*s", n <= HELP_COLUMN - 2 ? HELP_COLUMN - n : 2, "");
		for (const char *s = t->help; *s; s++)
			if (putchar(*s) == '\n')
				printf("%*s", HELP_COLUMN, "");
		putchar('\n');
	}
}

/* Do what option t says with its value arg. */
static void
opt_do(const tool_opt *t, const char *arg, const tool_opt *table, const char *synopsis,
    void (*call)(void *, const tool_opt *, const char *), void *ctx)
{
	char name[64];

	snprintf(name, sizeof name, "--%s", t->name ? t->name : "");
	switch (t->kind) {
	case OPT_STR: *(const char **)t->p = arg; break;
	case OPT_FLAG: *(int *)t->p = t->val; break;
	case OPT_INT: *(int *)t->p = (int)parse_long(name, arg, t->lo, t->hi); break;
	case OPT_LONG: *(long *)t->p = parse_long(name, arg, t->lo, t->hi); break;
	case OPT_U64: *(uint64_t *)t->p = (uint64_t)parse_long(name, arg, t->lo, t->hi); break;
	case OPT_FLOAT: *(float *)t->p = (float)parse_double(name, arg, t->dlo, t->dhi); break;
	case OPT_DOUBLE: *(double *)t->p = parse_double(name, arg, t->dlo, t->dhi); break;
	case OPT_LIST: list_push(t->p, arg); break;
	case OPT_CALL: call(ctx, t, arg); break;
	case OPT_HELP: opts_help(table, synopsis); close_stdout(); exit(0);
	case OPT_VERSION: puts(TOOL " " SA_VERSION); close_stdout(); exit(0);
	}
}

#define OPTS_MAX 96

/*
 * argv's options by table t, in order, each as its entry says (a CALL
 * through call(ctx, entry, value)); an unknown one, or one without its
 * value, is a usage error.  Returns the index of the first operand.
 * getopt_long takes a prefix of one name for the option; its table has the
 * entries in order, and entries of one CALL code are one option to it: a
 * prefix of several of their names stands for the first.
 */
static int __attribute__((unused))
opts_parse(int argc, char **argv, const tool_opt *t, const char *synopsis,
    void (*call)(void *ctx, const tool_opt *t, const char *arg), void *ctx)
{
	struct option lo[OPTS_MAX + 1] = { { 0 } };
	const tool_opt *of[OPTS_MAX], *e;
	char so[3 * OPTS_MAX + 1], *s = so;
	int n = 0, c, li;

	for (e = t; e->kind; e++) {
		if (e->letter)
			s += sprintf(s, "%c%s", e->letter, e->arg ? ":" : "");
		if (e->name) {
			if (n == OPTS_MAX)
				die(SA_EINTERNAL, "more than %d options", OPTS_MAX);
			of[n] = e;
			lo[n++] = (struct option){ e->name, e->arg ? required_argument : no_argument,
			    NULL, e->letter ? e->letter : e->kind == OPT_CALL ? 256 + e->val :
			    1024 + (int)(e - t) };
		}
	}
	while (li = -1, (c = getopt_long(argc, argv, so, lo, &li)) != -1) {
		for (e = t; li < 0 && e->kind && e->letter != c; e++)
			;
		if (c == '?' || c == ':')
			usage_die(synopsis, NULL);
		opt_do(li >= 0 ? of[li] : e, optarg, t, synopsis, call, ctx);
	}
	return optind;
}

#endif
