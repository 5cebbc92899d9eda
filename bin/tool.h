/*
 * tool.h - what every sa tool's main shares: its name in messages, die/warn,
 * number parsing for options, and the closing check of stdout.
 * Included by exactly one .c per tool, so the definitions live here.
 */
#ifndef TOOL_H
#define TOOL_H

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sa.h"

static const char *argv0 = "sa";

/*
 * Run again with OPENBLAS_CORETYPE set when OpenBLAS chose kernels far
 * slower than the CPU allows (see sa_blas_coretype).  Called first thing in
 * main, before any input is read, so the new image sees the same state.
 */
static void
blas_reexec(void)
{
	const char *core = sa_blas_coretype();
	char *args[256], buf[65536];
	FILE *fp;
	size_t n;
	int argc = 0;

	if (!core || getenv("SA_NO_REEXEC") || !(fp = fopen("/proc/self/cmdline", "rb")))
		return;
	n = fread(buf, 1, sizeof buf - 1, fp);
	fclose(fp);
	if (n == 0 || n == sizeof buf - 1)
		return;
	buf[n] = 0;
	for (size_t i = 0; i < n && argc < 255; i += strlen(buf + i) + 1)
		args[argc++] = buf + i;
	if (argc == 255)
		return;
	args[argc] = NULL;
	setenv("OPENBLAS_CORETYPE", core, 1);
	execv("/proc/self/exe", args);
	unsetenv("OPENBLAS_CORETYPE");   /* exec failed: go on as we are */
}

static void __attribute__((unused))
setprogname_(const char *a)
{
	const char *s = strrchr(a, '/');
	argv0 = s ? s + 1 : a;
	blas_reexec();
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
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || !(v >= lo && v <= hi))
		die(SA_EUSAGE, "%s: invalid value '%s' (want a number from %g to %g)", opt, s, lo, hi);
	return v;
}

/* Flush and close stdout; a failure (disk full, closed pipe) is an I/O error. */
static void __attribute__((unused))
close_stdout(void)
{
	if (sa_stdout_close() != SA_OK)
		die_sa(SA_EIO);
}

#endif
