/*
 * sa-cache - list, prune and clear the cache of encodings that sa-encode
 * --cache-dir and sa-run --demos keep.  Only the cache's own files are
 * ever touched: KEY.delta entries, their temporary files and lock files.
 */
#include <time.h>

#define TOOL "sa-cache"
#include "tool.h"

static const char usage_text[] =
    "usage: sa-cache [-jqv] list [--cache-dir DIR | DIR]\n"
    "       sa-cache [-qv] prune [--max-size SIZE] [--max-age AGE] [--dry-run]\n"
    "                [--cache-dir DIR | DIR]\n"
    "       sa-cache [-qv] clear [--cache-dir DIR | DIR]\n";

/* N with a unit from units (each unit's multiplier in mult); a bare number
 * takes bare (0: not allowed). */
static double
parse_unit(const char *opt, const char *s, const char *units, const double *mult, double bare)
{
	char *end;
	double v;
	const char *u;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || !(v >= 0) || v > 1e18)
		die(SA_EUSAGE, "%s: invalid value '%s'", opt, s);
	if (!*end && bare > 0)
		return v * bare;
	if (*end && !end[1] && (u = strchr(units, *end)))
		return v * mult[u - units];
	die(SA_EUSAGE, "%s: invalid value '%s' (a number and one of %s)", opt, s, units);
}

static void
iso_time(time_t t, char *buf, size_t n)
{
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(buf, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static int
cmd_list(const char *dir, int must_exist, int json, int verbose)
{
	long long total = 0;
	int n, count = 0;
	sa_cache_file *v;

	TRY(sa_cache_scan(&v, &n, dir, must_exist));
	for (int i = 0; i < n; i++) {
		char when[32], key[SA_CACHE_KEY_LEN + 1], path[4096];
		sa_delta *d = NULL;
		int rc = SA_OK;

		if (v[i].kind != 1)
			continue;
		count++;
		total += v[i].size;
		memcpy(key, v[i].name, SA_CACHE_KEY_LEN);
		key[SA_CACHE_KEY_LEN] = 0;
		iso_time((time_t)v[i].mtime, when, sizeof when);
		snprintf(path, sizeof path, "%s/%s", dir, v[i].name);
		if (verbose > 0 && (rc = sa_delta_load(&d, path)) != SA_OK)
			warnx_("%s", sa_error());
		if (json) {
			printf("{\"key\":\"%s\",\"path\":", key);
			sa_json_put_str(stdout, path, strlen(path));
			printf(",\"bytes\":%lld,\"used\":\"%s\"", (long long)v[i].size, when);
			if (d)
				printf(",\"tokens\":%llu,\"demonstrations\":%llu,\"sources\":%d",
				    (unsigned long long)d->n_tokens, (unsigned long long)d->n_demos, d->n_sources);
			if (verbose > 0)
				printf(",\"ok\":%s", d ? "true" : "false");
			puts("}");
		} else {
			printf("%s %10lld %s", key, (long long)v[i].size, when);
			if (d)
				printf(" %llu tokens, %llu demonstrations, %d sources",
				    (unsigned long long)d->n_tokens, (unsigned long long)d->n_demos, d->n_sources);
			else if (verbose > 0)
				fputs(" damaged", stdout);
			putchar('\n');
		}
		sa_delta_free(d);
	}
	if (verbose > 0)
		warnx_("%s: %d entr%s, %lld bytes", dir, count, count == 1 ? "y" : "ies", total);
	sa_cache_scan_free(v, n);
	return SA_OK;
}

/* Drop what prune or clear selects (sa_cache_select). */
static int
cmd_prune(const char *dir, int must_exist, int all, double max_age, double max_size,
    int dry_run, int verbose)
{
	long long freed = 0, left = 0;
	int n, dropped = 0, status = SA_OK;
	sa_cache_file *v;
	char *drop;

	TRY(sa_cache_scan(&v, &n, dir, must_exist));
	if (!(drop = calloc((size_t)(n ? n : 1), 1)))
		die(SA_EINTERNAL, "out of memory");
	sa_cache_select(v, n, all, max_age, max_size, (int64_t)time(NULL), drop);
	for (int i = 0; i < n; i++) {
		char path[4096];

		if (!drop[i]) {
			left += v[i].kind == 1 ? v[i].size : 0;
			continue;
		}
		snprintf(path, sizeof path, "%s/%s", dir, v[i].name);
		if (dry_run) {
			puts(path);
		} else if (unlink(path) != 0 && errno != ENOENT) {
			warnx_("%s: %s", path, strerror(errno));
			status = SA_EIO;
			continue;
		} else if (verbose > 0) {
			warnx_("dropped %s (%lld bytes)", path, (long long)v[i].size);
		}
		dropped++;
		freed += v[i].size;
	}
	if (verbose > 0)
		warnx_("%s: %s %d file%s, %lld bytes; %lld bytes of entries left", dir,
		    dry_run ? "would drop" : "dropped", dropped, dropped == 1 ? "" : "s", freed, left);
	free(drop);
	sa_cache_scan_free(v, n);
	return status;
}

/* --max-size and --max-age in bytes and seconds; -1: not given. */
typedef struct limits {
	double size, age;
} limits;

enum { O_MAX_SIZE, O_MAX_AGE };

static void
opt_call(void *ctx, const tool_opt *t, const char *arg)
{
	static const double size_mult[] = { 1024.0, 1024.0, 1048576.0, 1073741824.0, 1099511627776.0 };
	static const double age_mult[] = { 1, 60, 3600, 86400, 604800 };
	limits *l = ctx;

	if (t->val == O_MAX_SIZE)
		l->size = parse_unit("--max-size", arg, "kKMGT", size_mult, 1);
	else
		l->age = parse_unit("--max-age", arg, "smhdw", age_mult, 0);
}

int
main(int argc, char **argv)
{
	const char *dir_opt = NULL, *cmd;
	limits lim = { -1, -1 };
	int json = 0, verbose = 0, dry_run = 0, must_exist, rc;
	char *dir;
	const tool_opt table[] = {
		TEXT("\nThe cache of encodings of sa-encode --cache-dir and sa-run --demos.\n"
		    "DIR defaults to $SA_CACHE_DIR, else $XDG_CACHE_HOME/sa, else ~/.cache/sa.\n\n"
		    "  list                  one line per entry: key, bytes, last use (UTC)\n"
		    "  prune                 drop entries unused for AGE, then the least recently\n"
		    "                        used until the rest fits SIZE; and dead temporary files\n"
		    "  clear                 drop every entry, and temporary and lock files\n"),
		{ "cache-dir", 0, "DIR", STR(&dir_opt), "the cache (as the operand DIR)" },
		{ "max-size", 0, "SIZE", CALL(O_MAX_SIZE), "bytes, or N followed by K, M, G or T (powers of 1024)" },
		{ "max-age", 0, "AGE", CALL(O_MAX_AGE), "N followed by s, m, h, d or w (30d)" },
		{ "dry-run", 0, NULL, FLAG(&dry_run, 1), "print what prune would drop, drop nothing" },
		{ "json", 'j', NULL, FLAG(&json, 1), "list as JSON Lines" },
		{ "quiet", 'q', NULL, FLAG(&verbose, -1), "no messages but errors" },
		{ "verbose", 'v', NULL, FLAG(&verbose, 1), "list: tokens, demonstrations and sources of each\n"
		    "entry (and damaged ones); prune, clear: what was\ndropped" },
		OPTIONS_END,
	};

	setprogname_(argv[0]);
	opts_parse(argc, argv, table, usage_text, opt_call, &lim);
	if (optind >= argc) {
		usage_die(usage_text, "no command (list, prune, clear)");
	}
	cmd = argv[optind++];
	if (optind < argc) {
		if (dir_opt)
			die(SA_EUSAGE, "give the cache as --cache-dir or as DIR, not both");
		dir_opt = argv[optind++];
	}
	if (optind < argc) {
		usage_die(usage_text, "unexpected argument '%s'", argv[optind]);
	}
	if (strcmp(cmd, "list") && strcmp(cmd, "prune") && strcmp(cmd, "clear")) {
		usage_die(usage_text, "unknown command '%s' (list, prune, clear)", cmd);
	}
	if ((lim.age >= 0 || lim.size >= 0 || dry_run) && strcmp(cmd, "prune"))
		die(SA_EUSAGE, "--max-age, --max-size and --dry-run are for prune");
	if (json && strcmp(cmd, "list"))
		die(SA_EUSAGE, "--json is for list");
	/* A cache named on the command line must exist; the default one may
	 * not have been made yet. */
	must_exist = dir_opt != NULL;
	if (!(dir = dir_opt ? strdup(dir_opt) : sa_cache_default_dir()))
		die(SA_EUSAGE, "%s", sa_error());

	if (!strcmp(cmd, "list"))
		rc = cmd_list(dir, must_exist, json, verbose);
	else
		rc = cmd_prune(dir, must_exist, !strcmp(cmd, "clear"), lim.age, lim.size, dry_run, verbose);
	free(dir);
	close_stdout();
	return rc;
}
