/*
 * sa-merge - combine deltas of one adapter: in sequence (--chain, exact:
 * the state one encoder would reach over all the inputs in order), or as a
 * weighted mean or sum of their states.
 */
#include <math.h>
#include <unistd.h>

#include "tool.h"

static const char usage_text[] =
    "usage: sa-merge [--chain | --mean | --sum] [-qv] [-o OUT] [FILE[:W] ...]\n";

enum { CHAIN, MEAN, SUM };

static void
help(void)
{
	fputs(usage_text, stdout);
	fputs("\n"
	    "Combine deltas made with the same adapter into one.\n\n"
	    "      --chain         the inputs one after the other, as if encoded in one\n"
	    "                      stream (default; exact)\n"
	    "      --mean          mean of the states; FILE:W gives weights, divided by\n"
	    "                      their sum\n"
	    "      --sum           weighted sum of the states (weights default to 1)\n"
	    "  -o, --output FILE   write the result here (default: stdout)\n"
	    "  -q, --quiet         no messages but errors\n"
	    "  -v, --verbose       say what was merged\n"
	    "  -h, --help          this help\n"
	    "  -V, --version       version\n"
	    "\nFILE '-' is stdin (once); weighted, after \"--\": -- -:W.  With no FILE,\n"
	    "read stdin.\n", stdout);
}

int
main(int argc, char **argv)
{
	enum { O_CHAIN = 256, O_MEAN, O_SUM };
	static const struct option longopts[] = {
		FLAG("chain", O_CHAIN), FLAG("mean", O_MEAN), FLAG("sum", O_SUM),
		ARG("output", 'o'), FLAG("quiet", 'q'), FLAG("verbose", 'v'), OPTIONS_END,
	};
	static char *stdin_only[] = { "-" };
	const char *out = "-";
	char **args, **files;
	double *w, wsum = 0;
	sa_deltas *ds;
	sa_delta *res;
	int mode = CHAIN, nmode = 0, verbose = 0, n, weighted = 0, c;

	setprogname_(argv[0]);
	while ((c = getopt_long(argc, argv, "o:qvhV", longopts, NULL)) != -1) {
		switch (c) {
		case O_CHAIN: mode = CHAIN; nmode++; break;
		case O_MEAN: mode = MEAN; nmode++; break;
		case O_SUM: mode = SUM; nmode++; break;
		case 'o': out = optarg; break;
		case 'q': verbose = -1; break;
		case 'v': verbose = 1; break;
		case 'h': help(); close_stdout(); return 0;
		case 'V': puts("sa-merge " SA_VERSION); close_stdout(); return 0;
		default: usage_die(usage_text, NULL);
		}
	}
	if (nmode > 1) {
		usage_die(usage_text, "--chain, --mean and --sum exclude each other");
	}
	args = optind < argc ? argv + optind : stdin_only;
	n = optind < argc ? argc - optind : 1;
	if (!(w = calloc((size_t)n, sizeof *w)) || !(files = calloc((size_t)n, sizeof *files)))
		die(SA_EINTERNAL, "out of memory");
	for (int i = 0; i < n; i++) {
		if (split_scale("weight", args[i], &files[i], &w[i]))
			weighted = 1;
		wsum += w[i];
	}
	stdin_operands(files, n, "a delta");
	if (weighted && mode == CHAIN)
		die(SA_EUSAGE, "weights (FILE:W) need --mean or --sum");
	if (mode == MEAN) {
		if (wsum == 0 || !isfinite(wsum))
			die(SA_EUSAGE, "the weights of --mean sum to %g", wsum);
		for (int i = 0; i < n; i++)
			w[i] /= wsum;
	}
	if (strcmp(out, "-") == 0 && isatty(1))
		die(SA_EUSAGE, "refusing to write a binary delta to a terminal (use -o FILE)");

	TRY(sa_deltas_load(&ds, files, NULL, n));

	if (mode == CHAIN) {
		res = ds->d[0];
		ds->d[0] = NULL;
		for (int i = 1; i < n; i++)
			TRY(sa_delta_chain(res, ds->d[i]));
	} else {
		TRY(sa_delta_combine(&res, ds->d, w, n));
	}
	sa_outfile_install_signals();
	TRY(sa_delta_save(res, out));
	if (verbose > 0)
		warnx_("%s %d delta%s (%llu tokens, %llu demonstrations) into %s",
		    mode == CHAIN ? "chained" : mode == MEAN ? "averaged" : "summed", n, n == 1 ? "" : "s",
		    (unsigned long long)res->n_tokens, (unsigned long long)res->n_demos,
		    strcmp(out, "-") ? out : "stdout");
	for (int i = 0; i < n; i++)
		free(files[i]);
	sa_deltas_free(ds);
	sa_delta_free(res);
	free(files);
	free(w);
	close_stdout();
	return 0;
}
