/*
 * util.c - errors, output files, whole-file reads, the clock, random numbers,
 * hashing.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "sa.h"

/* ---------------------------------------------------------------- errors */

static _Thread_local char errbuf[1024];

const char *
sa_error(void)
{
	return errbuf;
}

int
sa_fail(int code, const char *fmt, ...)
{
	/* Format into a scratch buffer first: callers may pass sa_error() itself
	 * as an argument to extend the previous message. */
	char tmp[sizeof errbuf];
	size_t o = 0;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(tmp, sizeof tmp, fmt, ap);
	va_end(ap);
	/* Messages quote names and values from untrusted files: a control
	 * byte there would break the one-line message or drive the terminal,
	 * so each is shown as an escape. */
	for (const unsigned char *p = (const unsigned char *)tmp; *p; p++) {
		char esc[5];
		size_t n = 1;
		if (*p < 0x20 || *p == 0x7f)
			n = (size_t)snprintf(esc, sizeof esc, *p == '\n' ? "\\n" : *p == '\t' ? "\\t"
			    : "\\x%02x", *p);
		else
			esc[0] = (char)*p;
		if (o + n >= sizeof errbuf)
			break;
		memcpy(errbuf + o, esc, n);
		o += n;
	}
	errbuf[o] = '\0';
	return code;
}

const char *
sa_num_text(char buf[32], double v)
{
	snprintf(buf, 32, fabs(v) < 1e20 && v == floor(v) ? "%.0f" : "%g", v);
	return buf;
}

void *
sa_malloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (!p)
		sa_fail(SA_EINTERNAL, "out of memory");
	return p;
}

void *
sa_calloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);

	if (!p)
		sa_fail(SA_EINTERNAL, "out of memory");
	return p;
}

/* --------------------------------------------------------- output files */

/*
 * Temporary names still on disk, for the signal handler.  A fixed table of
 * atomic pointers: the handler may only read it, never allocate or lock.
 * An outfile that finds the table full still works, it is just not cleaned
 * up on a signal.
 */
#define MAX_TMP 64
static _Atomic(char *) tmp_names[MAX_TMP];

static void
tmp_register(char *name)
{
	for (int i = 0; i < MAX_TMP; i++) {
		char *expect = NULL;
		if (atomic_compare_exchange_strong(&tmp_names[i], &expect, name))
			return;
	}
}

static void
tmp_unregister(const char *name)
{
	for (int i = 0; i < MAX_TMP; i++) {
		char *expect = (char *)name;
		if (atomic_compare_exchange_strong(&tmp_names[i], &expect, NULL))
			return;
	}
}

static void
on_fatal_signal(int sig)
{
	struct sigaction sa;
	int saved = errno;

	for (int i = 0; i < MAX_TMP; i++) {
		char *name = atomic_load(&tmp_names[i]);
		if (name)
			unlink(name);
	}
	/* Die of the same signal, so the parent sees how we ended. */
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = SIG_DFL;
	sigemptyset(&sa.sa_mask);
	sigaction(sig, &sa, NULL);
	raise(sig);
	errno = saved;
}

void
sa_outfile_install_signals(void)
{
	static const int sigs[] = { SIGINT, SIGTERM, SIGHUP };

	for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
		struct sigaction sa, old;

		/* A signal the caller ignores (nohup) stays ignored. */
		if (sigaction(sigs[i], NULL, &old) == 0 && old.sa_handler == SIG_IGN)
			continue;
		memset(&sa, 0, sizeof sa);
		sa.sa_handler = on_fatal_signal;
		sigemptyset(&sa.sa_mask);
		sigaction(sigs[i], &sa, NULL);
	}
}

static mode_t
default_mode(void)
{
	static _Atomic int cached = -1;
	int m = atomic_load(&cached);

	if (m < 0) {
		mode_t mask = umask(0);
		umask(mask);
		m = 0666 & ~mask;
		atomic_store(&cached, m);
	}
	return (mode_t)m;
}

/*
 * The file a write to path replaces: a symbolic link is followed to its
 * target (made if missing), so that the link stays and points at the new
 * file, as editors and install(1) do.  malloc'd; NULL with errno set.
 */
static char *
follow_links(const char *path)
{
	char *p = strdup(path), *q, *slash, target[PATH_MAX];
	struct stat st;
	ssize_t n;

	for (int hops = 0; p; hops++) {
		if (lstat(p, &st) != 0 || !S_ISLNK(st.st_mode))
			return p;
		if (hops == 40 || (n = readlink(p, target, sizeof target - 1)) < 0) {
			if (hops == 40)
				errno = ELOOP;
			free(p);
			return NULL;
		}
		target[n] = '\0';
		/* a relative target is relative to the link's directory */
		slash = strrchr(p, '/');
		if (target[0] == '/' || !slash)
			q = strdup(target);
		else if (asprintf(&q, "%.*s/%s", (int)(slash - p), p, target) < 0)
			q = NULL;
		free(p);
		p = q;
	}
	return NULL;
}

int
sa_outfile_open(sa_outfile *o, const char *path)
{
	const char *slash, *base;
	struct stat st;
	size_t dirlen, n;
	int fd;

	memset(o, 0, sizeof *o);
	if (strcmp(path, "-") == 0) {
		o->fp = stdout;
		return SA_OK;
	}
	/* A device or fifo (/dev/null, a named pipe) is written in place:
	 * renaming over it would replace it with a regular file. */
	if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
		if (S_ISDIR(st.st_mode))
			return sa_fail(SA_ECANTCREAT, "%s: %s", path, strerror(EISDIR));
		if (!(o->path = strdup(path)))
			return sa_fail(SA_EINTERNAL, "out of memory");
		if (!(o->fp = fopen(path, "wb"))) {
			int e = errno;
			free(o->path);
			o->path = NULL;
			return sa_fail(SA_ECANTCREAT, "%s: %s", path, strerror(e));
		}
		return SA_OK;
	}
	if (!(o->path = follow_links(path))) {
		int e = errno;
		return e == ENOMEM ? sa_fail(SA_EINTERNAL, "out of memory")
		    : sa_fail(SA_ECANTCREAT, "%s: %s", path, strerror(e));
	}
	path = o->path;
	slash = strrchr(path, '/');
	base = slash ? slash + 1 : path;
	dirlen = slash ? (size_t)(slash - path) + 1 : 0;
	if (!*base) {
		int rc = sa_fail(SA_ECANTCREAT, "%s: is a directory", path);
		free(o->path);
		o->path = NULL;
		return rc;
	}

	n = dirlen + 1 + strlen(base) + 8 + 1;
	if (!(o->tmp = malloc(n))) {
		free(o->path);
		o->path = NULL;
		return sa_fail(SA_EINTERNAL, "out of memory");
	}
	snprintf(o->tmp, n, "%.*s.%s.XXXXXX", (int)dirlen, path, base);

	if ((fd = mkstemp(o->tmp)) < 0) {
		/* The file is replaced, not written: what failed is making a
		 * new one beside it (a read-only or special directory). */
		int rc = sa_fail(SA_ECANTCREAT, "%s: cannot create a temporary file in %.*s: %s",
		    path, dirlen > 1 ? (int)dirlen - 1 : (int)dirlen, dirlen ? path : ".", strerror(errno));
		free(o->path);
		free(o->tmp);
		memset(o, 0, sizeof *o);
		return rc;
	}
	tmp_register(o->tmp);
	/* mkstemp makes the file 0600; the result should look like any other
	 * file the user creates. */
	fchmod(fd, default_mode());
	if (!(o->fp = fdopen(fd, "wb"))) {
		int e = errno;
		close(fd);
		sa_outfile_abort(o);
		return sa_fail(SA_ECANTCREAT, "%s: %s", path, strerror(e));
	}
	return SA_OK;
}

int
sa_outfile_commit(sa_outfile *o)
{
	int bad, e = 0;

	if (!o->fp)
		return sa_fail(SA_EINTERNAL, "outfile committed twice");
	if (!o->path) {
		/* stdout stays open: close_stdout() checks and closes it at exit. */
		errno = 0;
		bad = fflush(o->fp) != 0 || ferror(o->fp);
		e = errno;
		o->fp = NULL;
		if (bad)
			return sa_fail(SA_EIO, "stdout: %s", strerror(e ? e : EIO));
		return SA_OK;
	}

	errno = 0;
	bad = ferror(o->fp);
	if (fflush(o->fp) != 0)
		bad = 1;
	e = errno;
	if (fclose(o->fp) != 0 && !bad) {
		bad = 1;
		e = errno;
	}
	o->fp = NULL;
	if (bad) {
		int rc = sa_fail(SA_EIO, "%s: %s", o->path, strerror(e ? e : EIO));
		sa_outfile_abort(o);
		return rc;
	}
	if (!o->tmp) {
		free(o->path);
		memset(o, 0, sizeof *o);
		return SA_OK;
	}
	if (rename(o->tmp, o->path) != 0) {
		int rc = sa_fail(SA_ECANTCREAT, "%s: cannot rename %s onto it: %s", o->path, o->tmp,
		    strerror(errno));
		sa_outfile_abort(o);
		return rc;
	}
	tmp_unregister(o->tmp);
	free(o->tmp);
	free(o->path);
	memset(o, 0, sizeof *o);
	return SA_OK;
}

void
sa_outfile_abort(sa_outfile *o)
{
	if (!o->path) {
		if (o->fp)
			fflush(o->fp);
		o->fp = NULL;
		return;
	}
	if (o->fp)
		fclose(o->fp);
	if (o->tmp) {
		unlink(o->tmp);
		tmp_unregister(o->tmp);
	}
	free(o->tmp);
	free(o->path);
	memset(o, 0, sizeof *o);
}

int
sa_stdout_close(void)
{
	int bad, e;

	errno = 0;
	bad = fflush(stdout) != 0 || ferror(stdout);
	e = errno;
	if (fclose(stdout) != 0 && !bad) {
		bad = 1;
		e = errno;
	}
	if (bad)
		return sa_fail(SA_EIO, "stdout: %s", strerror(e ? e : EIO));
	return SA_OK;
}

double
sa_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int
read_fd(int fd, const char *name, char **data, size_t *len)
{
	size_t cap = 1 << 16, n = 0;
	char probe[4096], *buf, *p;
	struct stat st;

	if (fstat(fd, &st) == 0) {
		if (S_ISDIR(st.st_mode))
			return sa_fail(SA_ENOINPUT, "%s: %s", name, strerror(EISDIR));
		if (S_ISREG(st.st_mode) && st.st_size > 0 && (uint64_t)st.st_size < SIZE_MAX / 2)
			cap = (size_t)st.st_size + 1;
	}
	if (!(buf = malloc(cap)))
		return sa_fail(SA_EINTERNAL, "%s: out of memory", name);
	for (;;) {
		/* When the buffer is full, read into a probe first: a regular file
		 * of the size fstat gave then ends without any reallocation. */
		int full = n + 1 == cap;
		char *dst = full ? probe : buf + n;
		size_t room = full ? sizeof probe : cap - 1 - n;
		ssize_t r = read(fd, dst, room);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			int e = errno;
			free(buf);
			return sa_fail(SA_EIO, "%s: %s", name, strerror(e));
		}
		if (r == 0)
			break;
		if (full) {
			size_t want = cap;
			while (want < n + (size_t)r + 1 && want <= SIZE_MAX / 2)
				want *= 2;
			if (want < n + (size_t)r + 1 || !(p = realloc(buf, want))) {
				free(buf);
				return sa_fail(SA_EINTERNAL, "%s: out of memory", name);
			}
			buf = p;
			cap = want;
			memcpy(buf + n, probe, (size_t)r);
		}
		n += (size_t)r;
	}
	buf[n] = '\0';
	*data = buf;
	*len = n;
	return SA_OK;
}

int
sa_file_read(const char *path, char **data, size_t *len)
{
	int fd, rc;

	*data = NULL;
	*len = 0;
	if (strcmp(path, "-") == 0)
		return read_fd(0, "stdin", data, len);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return sa_fail(SA_ENOINPUT, "%s: %s", path, strerror(errno));
	rc = read_fd(fd, path, data, len);
	close(fd);
	return rc;
}

int
sa_file_read_gz(const char *path, char **data, size_t *len)
{
	gzFile gz;
	size_t n = 0, cap = 1 << 16;
	char *buf, *p;
	int r, e;

	*data = NULL;
	*len = 0;
	errno = 0;
	/* zlib reads data that is not gzip as it is */
	if (!(gz = strcmp(path, "-") == 0 ? gzdopen(dup(0), "rb") : gzopen(path, "rb")))
		return sa_fail(SA_ENOINPUT, "%s: %s", path, strerror(errno ? errno : ENOENT));
	if (!(buf = sa_malloc(cap))) {
		gzclose(gz);
		return SA_EINTERNAL;
	}
	while ((r = gzread(gz, buf + n, (unsigned)(cap - n - 1))) > 0) {
		n += (size_t)r;
		if (cap - n < 2) {
			if (!(p = realloc(buf, cap *= 2))) {
				free(buf);
				gzclose(gz);
				return sa_fail(SA_EINTERNAL, "%s: out of memory", path);
			}
			buf = p;
		}
	}
	if (r < 0) {
		const char *msg = gzerror(gz, &e);
		int rc = e == Z_ERRNO ? sa_fail(SA_EIO, "%s: %s", path, strerror(errno))
		    : sa_fail(SA_EDATA, "%s: %s", path, msg);
		free(buf);
		gzclose(gz);
		return rc;
	}
	gzclose(gz);
	buf[n] = 0;
	*data = buf;
	*len = n;
	return SA_OK;
}

/* ------------------------------------------------------- random numbers */

uint64_t
sa_splitmix64(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

double
sa_unif(uint64_t *s)
{
	return (double)(sa_splitmix64(s) >> 11) * 0x1.0p-53;
}

double
sa_unif_mid(uint64_t *s)
{
	return ((sa_splitmix64(s) >> 11) + 0.5) * 0x1.0p-53;
}

double
sa_unif_pos(uint64_t *s)
{
	return ((sa_splitmix64(s) >> 11) + 1) * 0x1.0p-53;
}

long
sa_unif_below(uint64_t *s, long n)
{
	return n > 0 ? (long)(sa_unif(s) * n) : 0;
}

uint64_t
sa_rng_next(sa_rng *r)
{
	return sa_splitmix64(&r->s);
}

double
sa_rng_unif(sa_rng *r)
{
	return sa_unif(&r->s);
}

long
sa_rng_below(sa_rng *r, long n)
{
	return n > 0 ? (long)(sa_rng_next(r) % (uint64_t)n) : 0;
}

/* --------------------------------------------------------------- hashing */

uint64_t
sa_hash64(uint64_t h, const void *p, size_t n)
{
	const unsigned char *b = p;

	for (size_t i = 0; i < n; i++) {
		h ^= b[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

uint32_t
sa_crc32(uint32_t crc, const void *p, size_t n)
{
	const unsigned char *b = p;

	/* zlib takes uInt lengths. */
	while (n > 0) {
		uInt chunk = n > (1u << 30) ? (1u << 30) : (uInt)n;
		crc = (uint32_t)crc32(crc, b, chunk);
		b += chunk;
		n -= chunk;
	}
	return crc;
}

int
sa_toks_push(sa_toks *a, const int *t, int n)
{
	if (a->n + n > a->cap) {
		int cap = a->cap ? a->cap : 64, *p;
		while (cap < a->n + n)
			cap *= 2;
		if (!(p = realloc(a->t, (size_t)cap * sizeof *p)))
			return sa_fail(SA_EINTERNAL, "out of memory");
		a->t = p;
		a->cap = cap;
	}
	memcpy(a->t + a->n, t, (size_t)n * sizeof *t);
	a->n += n;
	return SA_OK;
}
