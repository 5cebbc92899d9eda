/*
 * tool.h - what every sa tool's main shares: its name in messages, die/warn,
 * its table of options, number parsing for options, the default model and
 * adapter, and the closing check of stdout.
 * Included by exactly one .c per tool, so the definitions live here.
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

/* getopt_long's table, a few options a line: ARG takes a value, FLAG none,
 * SET none and sets the int *var to val itself (getopt_long returns 0);
 * every table ends with OPTIONS_END, --help and --version. */
#define ARG(name, val) { name, required_argument, NULL, val }
#define FLAG(name, val) { name, no_argument, NULL, val }
#define SET(name, var, val) { name, no_argument, var, val }
#define OPTIONS_END FLAG("help", 'h'), FLAG("version", 'V'), { NULL, 0, NULL, 0 }

static void __attribute__((unused))
setprogname_(const char *a)
{
	const char *s = strrchr(a, '/');
	argv0 = s ? s + 1 : a;
}

static void __attribute__((unused))
warnx_(const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "%s: ", argv0);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* Exit with status after a one-line message. */
static void __attribute__((noreturn))
die(int status, const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "%s: ", argv0);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
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
		fprintf(stderr, "%s: ", argv0);
		va_start(ap, fmt);
		vfprintf(stderr, fmt, ap);
		va_end(ap);
		fputc('\n', stderr);
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

/* The file of an option not given: $ENV when set, else the shipped NAME. */
static const char *
default_file(char *buf, size_t size, const char *env, const char *name)
{
	const char *e = getenv(env);

	return e && *e ? e : shipped_file(buf, size, name);
}

static __attribute__((unused)) const char *
default_model(void)
{
	static char buf[PATH_MAX];

	return default_file(buf, sizeof buf, "SA_MODEL", "model.gguf");
}

static __attribute__((unused)) const char *
default_adapter(void)
{
	static char buf[PATH_MAX];

	return default_file(buf, sizeof buf, "SA_ADAPTER", "adapter.gguf");
}

/* -m FILE when given, else the default model; a usage error when none. */
static __attribute__((unused)) const char *
need_model(const char *given, const char *synopsis)
{
	const char *p = given ? given : default_model();

	if (!p)
		usage_die(synopsis, "no model: give -m MODEL or set SA_MODEL (there is no %s/model.gguf)",
		    SA_DATADIR);
	return p;
}

/* -a FILE when given, else the default adapter; a usage error when none. */
static __attribute__((unused)) const char *
need_adapter(const char *given, const char *synopsis)
{
	const char *p = given ? given : default_adapter();

	if (!p)
		usage_die(synopsis, "no adapter: give -a ADAPTER or set SA_ADAPTER (there is no %s/adapter.gguf)",
		    SA_DATADIR);
	return p;
}

/* -f is the prompt file, as in llama.cpp; the format of sa-encode and
 * sa-export is -F.  A usage error that says so for -f FORMAT. */
static void __attribute__((noreturn, unused))
format_moved(const char *arg, const char *synopsis)
{
	usage_die(synopsis, "-f %s: the format option is -F (--format); did you mean -F %s?", arg, arg);
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

#endif
