/*
 * test_cache - the cache's own files as sa-cache sees them: sa_cache_scan
 * (only the cache's names, regular files, oldest use first, then by name;
 * a missing directory) and sa_cache_select (what prune and clear drop).
 *
 *   test_cache DIR    DIR: a directory to fill (it is made)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "sa.h"
#include "t.h"

#define KEY_A "0123456789abcdef0123456789abcdef"
#define KEY_B "fedcba9876543210fedcba9876543210"
#define KEY_C "cccccccccccccccccccccccccccccccc"

/* dir/name with its last use at t (seconds since the epoch). */
static void
touch_at(const char *dir, const char *name, time_t t)
{
	char path[4096];
	struct timeval tv[2] = { { t, 0 }, { t, 0 } };
	FILE *fp;

	snprintf(path, sizeof path, "%s/%s", dir, name);
	if (!(fp = fopen(path, "w")) || fputs(name, fp) < 0 || fclose(fp) || utimes(path, tv)) {
		perror(path);
		exit(2);
	}
}

static void
test_scan(const char *dir)
{
	char sub[4096], missing[4096];
	sa_cache_file *v;
	int n;

	snprintf(sub, sizeof sub, "%s/" KEY_C ".delta", dir);
	snprintf(missing, sizeof missing, "%s/none", dir);
	touch_at(dir, KEY_B ".delta", 3000);
	touch_at(dir, KEY_A ".delta", 3000);        /* same time: by name */
	touch_at(dir, "." KEY_A ".delta.XyZ789", 1000);
	touch_at(dir, "." KEY_B ".lock", 2000);
	touch_at(dir, "notes.txt", 500);            /* not the cache's */
	if (mkdir(sub, 0777) != 0) {                /* a name of its, not a file */
		perror(sub);
		exit(2);
	}
	CHECK_OK(sa_cache_scan(&v, &n, dir, 1));
	CHECK(n == 4);
	if (n == 4) {
		CHECK(!strcmp(v[0].name, "." KEY_A ".delta.XyZ789") && v[0].kind == 2 && v[0].mtime == 1000);
		CHECK(!strcmp(v[1].name, "." KEY_B ".lock") && v[1].kind == 2);
		CHECK(!strcmp(v[2].name, KEY_A ".delta") && v[2].kind == 1);
		CHECK(!strcmp(v[3].name, KEY_B ".delta") && v[3].kind == 1);
		CHECK(v[3].size == (int64_t)strlen(KEY_B ".delta"));
	}
	sa_cache_scan_free(v, n);

	/* a missing cache is empty, unless it was named */
	CHECK_OK(sa_cache_scan(&v, &n, missing, 0));
	CHECK(n == 0 && !v);
	CHECK(sa_cache_scan(&v, &n, missing, 1) == SA_ENOINPUT && strstr(sa_error(), "none: "));
	CHECK(n == 0 && !v);
}

static void
test_select(void)
{
	/* oldest use first, as sa_cache_scan gives them; now = 100000 */
	sa_cache_file v[] = {
		{ "e0", 100, 1000, 1 },
		{ "t0", 7, 1000, 2 },               /* a temporary file of a dead run */
		{ "e1", 200, 50000, 1 },
		{ "t1", 7, 99000, 2 },              /* of a run still going */
		{ "e2", 300, 90000, 1 },
		{ "e3", 400, 99999, 1 },
	};
	const int n = sizeof v / sizeof v[0];
	char drop[sizeof v / sizeof v[0]];

	/* nothing asked: only the dead temporary file */
	sa_cache_select(v, n, 0, -1, -1, 100000, drop);
	CHECK(!drop[0] && drop[1] && !drop[2] && !drop[3] && !drop[4] && !drop[5]);
	/* unused for more than 20000 s */
	sa_cache_select(v, n, 0, 20000, -1, 100000, drop);
	CHECK(drop[0] && drop[1] && drop[2] && !drop[3] && !drop[4] && !drop[5]);
	/* 700 bytes of entries: the least recently used go until the rest fit */
	sa_cache_select(v, n, 0, -1, 700, 100000, drop);
	CHECK(drop[0] && drop[2] && !drop[4] && !drop[5] && !drop[3]);
	sa_cache_select(v, n, 0, -1, 699, 100000, drop);
	CHECK(drop[0] && drop[2] && drop[4] && !drop[5]);
	/* an entry dropped for its age does not count against the size */
	sa_cache_select(v, n, 0, 20000, 700, 100000, drop);
	CHECK(drop[0] && drop[2] && !drop[4] && !drop[5]);
	sa_cache_select(v, n, 0, -1, 0, 100000, drop);
	CHECK(drop[0] && drop[2] && drop[4] && drop[5] && !drop[3]);
	/* clear: everything */
	sa_cache_select(v, n, 1, -1, -1, 100000, drop);
	for (int i = 0; i < n; i++)
		CHECK(drop[i]);
}

int
main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: test_cache DIR\n");
		return 64;
	}
	if (mkdir(argv[1], 0777) != 0) {
		perror(argv[1]);
		return 2;
	}
	test_scan(argv[1]);
	test_select();
	return t_done();
}
