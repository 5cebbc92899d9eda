/*
 * tool.h - what every sa tool's main shares: its name in messages, die/warn,
 * number parsing for options, and the closing check of stdout.
 * Included by exactly one .c per tool, so the definitions live here.
 */
#ifndef TOOL_H
#define TOOL_H

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sa.h"

static const char *argv0 = "sa";

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

/* A bound for a message: an integral one in full (2147483647, not
 * 2.14748e+09). */
static const char * __attribute__((unused))
bound_text(char buf[32], double v)
{
	snprintf(buf, 32, fabs(v) < 1e20 && v == floor(v) ? "%.0f" : "%g", v);
	return buf;
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
		    bound_text(a, lo), bound_text(b, hi));
	return v;
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

/* Seconds on the monotonic clock, for rates and timings. */
static double __attribute__((unused))
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Flush and close stdout; a failure (disk full, closed pipe) is an I/O error. */
static void __attribute__((unused))
close_stdout(void)
{
	if (sa_stdout_close() != SA_OK)
		die_sa(SA_EIO);
}

#endif
