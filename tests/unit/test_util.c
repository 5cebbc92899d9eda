/*
 * test_util - errors, output files, whole-file reads, random numbers, hashing.
 *
 *   test_util                  run the checks
 *   test_util signal DIR       start DIR/out through sa_outfile with the
 *                              signal handlers installed, then die of SIGTERM
 *   test_util nohandler DIR    the same without the handlers (leaves the temp)
 *   test_util nohup DIR        SIGHUP ignored before installing: it stays so
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sa.h"
#include "t.h"

static char tmpdir[] = "/tmp/test_util.XXXXXX";

static char *
path_in(const char *name)
{
	static char p[4][300];
	static int k;
	char *s = p[k++ % 4];
	snprintf(s, 300, "%s/%s", tmpdir, name);
	return s;
}

static int
exists(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0;
}

static int
count_entries(const char *dir)
{
	char cmd[400];
	FILE *p;
	int n = -1;

	snprintf(cmd, sizeof cmd, "ls -A '%s' | wc -l", dir);
	if ((p = popen(cmd, "r"))) {
		if (fscanf(p, "%d", &n) != 1)
			n = -1;
		pclose(p);
	}
	return n;
}

static int
file_is(const char *path, const char *want)
{
	char *data;
	size_t len;
	int ok;

	if (sa_file_read(path, &data, &len) != SA_OK)
		return 0;
	ok = len == strlen(want) && memcmp(data, want, len) == 0;
	free(data);
	return ok;
}

static int
has(const char *msg, const char *part)
{
	if (strstr(msg, part))
		return 1;
	fprintf(stderr, "message \"%s\" lacks \"%s\"\n", msg, part);
	return 0;
}

/* ------------------------------------------------------------- messages */

static void *
other_thread(void *arg)
{
	int *empty = arg;
	*empty = sa_error()[0] == '\0';
	sa_fail(SA_EDATA, "from another thread");
	return NULL;
}

static void
test_errors(void)
{
	pthread_t th;
	int empty = 0;

	CHECK(sa_fail(SA_EDATA, "%s: line %d", "f.txt", 7) == SA_EDATA);
	CHECK(strcmp(sa_error(), "f.txt: line 7") == 0);
	/* extending the previous message with itself */
	CHECK(sa_fail(SA_EIO, "%s (while saving)", sa_error()) == SA_EIO);
	CHECK(strcmp(sa_error(), "f.txt: line 7 (while saving)") == 0);
	/* each thread has its own message */
	CHECK(pthread_create(&th, NULL, other_thread, &empty) == 0);
	pthread_join(th, NULL);
	CHECK(empty);
	CHECK(strcmp(sa_error(), "f.txt: line 7 (while saving)") == 0);
	/* long messages are cut, not overrun */
	char big[3000];
	memset(big, 'x', sizeof big - 1);
	big[sizeof big - 1] = '\0';
	sa_fail(SA_EDATA, "%s", big);
	CHECK(strlen(sa_error()) > 100 && strlen(sa_error()) < sizeof big);
	/* bytes from a file cannot break the line or reach the terminal */
	sa_fail(SA_EDATA, "%s: key %s", "x.gguf", "a\nb\tc\x1b[2Jd\x7f");
	CHECK(strcmp(sa_error(), "x.gguf: key a\\nb\\tc\\x1b[2Jd\\x7f") == 0);
	sa_fail(SA_EDATA, "%s!", sa_error());
	CHECK(strcmp(sa_error(), "x.gguf: key a\\nb\\tc\\x1b[2Jd\\x7f!") == 0);
	memset(big, '\n', sizeof big - 1);
	sa_fail(SA_EDATA, "%s", big);
	CHECK(strlen(sa_error()) > 100 && !strchr(sa_error(), '\n'));

	void *p = sa_malloc(0);
	CHECK(p != NULL);
	free(p);
	sa_fail(SA_OK, "none");
	CHECK(sa_calloc(SIZE_MAX / 2, 4) == NULL);
	CHECK(strcmp(sa_error(), "out of memory") == 0);
	CHECK(sa_malloc(SIZE_MAX - 8) == NULL);
	p = sa_calloc(3, 4);
	CHECK(p && ((int *)p)[2] == 0);
	free(p);
}

static void
test_hashes(void)
{
	CHECK(sa_hash64(SA_HASH64_INIT, "", 0) == 0xcbf29ce484222325ULL);
	CHECK(sa_hash64(SA_HASH64_INIT, "a", 1) == 0xaf63dc4c8601ec8cULL);
	CHECK(sa_hash64(SA_HASH64_INIT, "foobar", 6) == 0x85944171f73967e8ULL);
	CHECK(sa_hash64(sa_hash64(SA_HASH64_INIT, "foo", 3), "bar", 3) == 0x85944171f73967e8ULL);
	CHECK(sa_crc32(0, "", 0) == 0);
	CHECK(sa_crc32(0, "123456789", 9) == 0xcbf43926u);
	CHECK(sa_crc32(sa_crc32(0, "1234", 4), "56789", 5) == 0xcbf43926u);
	CHECK(sa_crc32(0, "The quick brown fox jumps over the lazy dog", 43) == 0x414fa339u);
}

/* SplitMix64's published stream from 0, and what unif and below make of it. */
static void
test_rng(void)
{
	static const uint64_t want[] = { 0xe220a8397b1dcdafULL, 0x6e789e6aa1b965f4ULL,
	    0x06c45d188009454fULL };
	sa_rng r = { 0 }, q = { 0 };
	int seen[7] = { 0 };

	for (int i = 0; i < 3; i++)
		CHECK(sa_rng_next(&r) == want[i]);
	r.s = q.s = 42;
	for (int i = 0; i < 1000; i++) {
		uint64_t x = sa_rng_next(&q);
		double u = sa_rng_unif(&r);
		CHECK(u == (double)(x >> 11) / 9007199254740992.0 && u >= 0 && u < 1);
	}
	r.s = q.s = 7;
	for (int i = 0; i < 1000; i++) {
		long b = sa_rng_below(&r, 7);
		CHECK(b == (long)(sa_rng_next(&q) % 7));
		seen[b]++;
	}
	for (int i = 0; i < 7; i++)
		CHECK(seen[i] > 100);
	CHECK(sa_rng_below(&r, 0) == 0 && sa_rng_below(&r, -3) == 0);
	CHECK(sa_rng_below(&r, 1) == 0);

	/* The other uniforms: the formulas their callers wrote, bit for bit. */
	for (int i = 0; i < 1000; i++) {
		uint64_t s = 99 + i, t = s, k = sa_splitmix64(&t) >> 11;
		uint64_t s1 = s, s2 = s, s3 = s, s4 = s;
		CHECK(sa_unif(&s1) == k / 9007199254740992.0 && s1 == t);
		CHECK(sa_unif_mid(&s2) == (k + 0.5) * (1.0 / 9007199254740992.0) && s2 == t);
		CHECK(sa_unif_pos(&s3) == (k + 1.0) / 9007199254740993.0 && s3 == t);
		CHECK(sa_unif_below(&s4, 13) == (long)(k / 9007199254740992.0 * 13) && s4 == t);
	}
	CHECK(sa_unif_below(&r.s, 0) == 0);
}

/* ---------------------------------------------------------- output files */

static void
test_outfile(void)
{
	sa_outfile o;
	const char *out = path_in("out.txt");
	struct stat st;

	/* nothing at the final name until commit; the temp sits beside it */
	CHECK_OK(sa_outfile_open(&o, out));
	CHECK(o.fp && o.path && o.tmp && strcmp(o.path, out) == 0);
	if (!o.tmp)
		return;
	CHECK(strncmp(o.tmp, path_in(".out.txt."), strlen(path_in(".out.txt."))) == 0);
	CHECK(exists(o.tmp) && !exists(out));
	fputs("first\n", o.fp);
	char *tmp = strdup(o.tmp);
	CHECK_OK(sa_outfile_commit(&o));
	CHECK(!exists(tmp) && file_is(out, "first\n"));
	free(tmp);
	CHECK(stat(out, &st) == 0 && (st.st_mode & 0777) == 0644);  /* umask 022 */

	/* replacing: the old content stays until the new one is complete */
	CHECK_OK(sa_outfile_open(&o, out));
	fputs("second\n", o.fp);
	fflush(o.fp);
	CHECK(file_is(out, "first\n"));
	CHECK_OK(sa_outfile_commit(&o));
	CHECK(file_is(out, "second\n"));

	/* abort: the old file is untouched and no temp is left */
	CHECK_OK(sa_outfile_open(&o, out));
	fputs("third\n", o.fp);
	sa_outfile_abort(&o);
	CHECK(file_is(out, "second\n"));
	CHECK(count_entries(tmpdir) == 1);

	/* a name with no directory part goes to the current directory */
	char cwd[4096];
	if (getcwd(cwd, sizeof cwd) && chdir(tmpdir) == 0) {
		CHECK_OK(sa_outfile_open(&o, "plain"));
		CHECK(o.tmp && strncmp(o.tmp, ".plain.", 7) == 0);
		CHECK_OK(sa_outfile_commit(&o));
		CHECK(file_is(path_in("plain"), ""));
		CHECK(chdir(cwd) == 0);
	}

	CHECK(sa_outfile_open(&o, path_in("no/such/dir")) == SA_ECANTCREAT);
	CHECK(has(sa_error(), "no/such/dir: cannot create a temporary file in "));
	CHECK(has(sa_error(), "/no/such: No such file or directory"));
	CHECK(sa_outfile_open(&o, tmpdir) == SA_ECANTCREAT);
	CHECK(sa_outfile_open(&o, "dir/") == SA_ECANTCREAT);

	/* devices are written in place, never replaced */
	CHECK_OK(sa_outfile_open(&o, "/dev/null"));
	CHECK(o.tmp == NULL);
	fputs("gone\n", o.fp);
	CHECK_OK(sa_outfile_commit(&o));
	CHECK(stat("/dev/null", &st) == 0 && S_ISCHR(st.st_mode));
	if (exists("/dev/full")) {
		CHECK_OK(sa_outfile_open(&o, "/dev/full"));
		for (int i = 0; i < 10000; i++)
			fputs("no room\n", o.fp);
		CHECK(sa_outfile_commit(&o) == SA_EIO);
		CHECK(has(sa_error(), "/dev/full: No space left on device"));
		CHECK(stat("/dev/full", &st) == 0 && S_ISCHR(st.st_mode));
	}

	/* "-" is stdout: no name, no rename, and stdout stays open */
	CHECK_OK(sa_outfile_open(&o, "-"));
	CHECK(o.fp == stdout && !o.path && !o.tmp);
	CHECK_OK(sa_outfile_commit(&o));
}

/* ----------------------------------------------------------- file reads */

static void
test_file_read(void)
{
	char *data;
	size_t len;
	FILE *fp;

	fp = fopen(path_in("empty"), "w");
	fclose(fp);
	CHECK_OK(sa_file_read(path_in("empty"), &data, &len));
	CHECK(len == 0 && data && data[0] == '\0');
	free(data);

	fp = fopen(path_in("bin"), "wb");
	fwrite("a\0b\n", 1, 4, fp);
	fclose(fp);
	CHECK_OK(sa_file_read(path_in("bin"), &data, &len));
	CHECK(len == 4 && memcmp(data, "a\0b\n", 4) == 0 && data[4] == '\0');
	free(data);

	/* gzip read decompressed, plain text as it is, a damaged stream refused */
	CHECK_OK(sa_file_read_gz(path_in("bin"), &data, &len));
	CHECK(len == 4 && memcmp(data, "a\0b\n", 4) == 0 && data[4] == '\0');
	free(data);
	{
		char cmd[600];
		snprintf(cmd, sizeof cmd, "printf 'one\\ntwo\\n' | gzip > '%s'", path_in("t.gz"));
		CHECK(system(cmd) == 0);
	}
	CHECK_OK(sa_file_read_gz(path_in("t.gz"), &data, &len));
	CHECK(len == 8 && strcmp(data, "one\ntwo\n") == 0);
	free(data);
	CHECK_OK(sa_file_read(path_in("t.gz"), &data, &len));
	fp = fopen(path_in("bad.gz"), "wb");
	CHECK(len > 12);
	fwrite(data, 1, 10, fp);
	fwrite("\xff\xff\xff\xff\xff\xff\xff\xff", 1, 8, fp);
	fclose(fp);
	free(data);
	CHECK(sa_file_read_gz(path_in("bad.gz"), &data, &len) == SA_EDATA && !data);
	CHECK(has(sa_error(), "bad.gz: "));
	CHECK(sa_file_read_gz(path_in("missing"), &data, &len) == SA_ENOINPUT && !data);
	CHECK(has(sa_error(), "missing: No such file or directory"));

	CHECK(sa_file_read(path_in("missing"), &data, &len) == SA_ENOINPUT && !data);
	CHECK(has(sa_error(), "missing: No such file or directory"));
	CHECK(sa_file_read(tmpdir, &data, &len) == SA_ENOINPUT);
	CHECK(has(sa_error(), "Is a directory"));

	/* stdin, longer than a pipe holds, from another process */
	enum { N = 300000 };
	int fd[2], saved = dup(0);
	pid_t pid;
	CHECK(pipe(fd) == 0);
	if ((pid = fork()) == 0) {
		char chunk[1000];
		close(fd[0]);
		for (int i = 0; i < N / 1000; i++) {
			memset(chunk, 'a' + i % 26, sizeof chunk);
			if (write(fd[1], chunk, sizeof chunk) != (ssize_t)sizeof chunk)
				_exit(1);
		}
		_exit(0);
	}
	close(fd[1]);
	dup2(fd[0], 0);
	close(fd[0]);
	CHECK_OK(sa_file_read("-", &data, &len));
	dup2(saved, 0);
	close(saved);
	waitpid(pid, NULL, 0);
	CHECK(len == N && data[0] == 'a' && data[1000] == 'b' && data[N - 1] == 'a' + (N / 1000 - 1) % 26);
	CHECK(data[N] == '\0');
	free(data);
}

/* ------------------------------------------------------------- signals */

static int
die_midway(const char *dir, int handlers)
{
	char path[300];
	sa_outfile o;

	snprintf(path, sizeof path, "%s/out", dir);
	if (handlers)
		sa_outfile_install_signals();
	if (sa_outfile_open(&o, path) != SA_OK) {
		fprintf(stderr, "%s\n", sa_error());
		return 1;
	}
	fputs("half of it", o.fp);
	fflush(o.fp);
	raise(SIGTERM);
	return 2;  /* not reached: the signal kills */
}

static int
nohup_survives(const char *dir)
{
	char path[300];
	sa_outfile o;

	snprintf(path, sizeof path, "%s/out", dir);
	signal(SIGHUP, SIG_IGN);
	sa_outfile_install_signals();
	if (sa_outfile_open(&o, path) != SA_OK)
		return 1;
	fputs("all of it\n", o.fp);
	raise(SIGHUP);
	return sa_outfile_commit(&o) == SA_OK ? 0 : 1;
}

int
main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "signal") == 0)
		return die_midway(argv[2], 1);
	if (argc == 3 && strcmp(argv[1], "nohandler") == 0)
		return die_midway(argv[2], 0);
	if (argc == 3 && strcmp(argv[1], "nohup") == 0)
		return nohup_survives(argv[2]);
	if (argc != 1) {
		fprintf(stderr, "usage: test_util [signal|nohandler|nohup DIR]\n");
		return 64;
	}
	umask(022);
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 2;
	}
	test_errors();
	test_hashes();
	test_rng();
	test_outfile();
	test_file_read();

	char cmd[300];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", tmpdir);
	return t_done();
}
