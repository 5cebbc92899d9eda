/*
 * sa-merge - combine deltas of one adapter: in sequence (--chain, exact:
 * the state one encoder would reach over all the inputs in order), or as a
 * weighted mean or sum of their states.
 */
#include <math.h>
#include <unistd.h>

#define TOOL "sa-merge"
#include "tool.h"

static const char usage_text[] =
    "usage: sa-merge [--chain | --mean | --sum] [-qv] [-o OUT] [FILE[:W] ...]\n";

enum { CHAIN, MEAN, SUM };

/* --chain, --mean, --sum: the mode, and how many were given. */
typedef struct mode {
	int which, n;
} mode;

static void
opt_call(void *ctx, const tool_opt *t, const char *arg)
{
	mode *m = ctx;

	m->which = t->val;
	m->n++;
}

int
main(int argc, char **argv)
{
	static char *stdin_only[] = { "-" };
	const char *out = "-";
	char **args;
	double wsum = 0;
	scaled_list in = { 0 };
	sa_deltas *ds;
	sa_delta *res;
	mode m = { CHAIN, 0 };
	int verbose = 0, n, weighted = 0;
	const tool_opt table[] = {
		TEXT("\nCombine deltas made with the same adapter into one.  FILE '-' is stdin\n"
		    "(once); weighted, after \"--\": -- -:W.  With no FILE, read stdin.\n"),
		{ "chain", 0, NULL, CALL(CHAIN), "the inputs one after the other, as if encoded in\n"
		    "one stream (default; exact)" },
		{ "mean", 0, NULL, CALL(MEAN), "mean of the states; FILE:W gives weights, divided\nby their sum" },
		{ "sum", 0, NULL, CALL(SUM), "weighted sum of the states (weights default to 1)" },
		{ "output", 'o', "FILE", STR(&out), "write the result here (default: stdout)" },
		{ "quiet", 'q', NULL, FLAG(&verbose, -1), "no messages but errors" },
		{ "verbose", 'v', NULL, FLAG(&verbose, 1), "say what was merged" },
		OPTIONS_END,
	};

	setprogname_(argv[0]);
	opts_parse(argc, argv, table, usage_text, opt_call, &m);
	if (m.n > 1) {
		usage_die(usage_text, "--chain, --mean and --sum exclude each other");
	}
	args = optind < argc ? argv + optind : stdin_only;
	n = optind < argc ? argc - optind : 1;
	for (int i = 0; i < n; i++) {
		if (scaled_push(&in, "weight", args[i]))
			weighted = 1;
		wsum += in.scale[i];
	}
	stdin_operands(in.path, n, "a delta");
	if (weighted && m.which == CHAIN)
		die(SA_EUSAGE, "weights (FILE:W) need --mean or --sum");
	if (m.which == MEAN) {
		if (wsum == 0 || !isfinite(wsum))
			die(SA_EUSAGE, "the weights of --mean sum to %g", wsum);
		for (int i = 0; i < n; i++)
			in.scale[i] /= wsum;
	}
	stdout_not_terminal(out, "delta");

	TRY(sa_deltas_load(&ds, in.path, NULL, n));

	if (m.which == CHAIN) {
		res = ds->d[0];
		ds->d[0] = NULL;
		for (int i = 1; i < n; i++)
			TRY(sa_delta_chain(res, ds->d[i]));
	} else {
		TRY(sa_delta_combine(&res, ds->d, in.scale, n));
	}
	sa_outfile_install_signals();
	TRY(sa_delta_save(res, out));
	if (verbose > 0)
		warnx_("%s %d delta%s (%llu tokens, %llu demonstrations) into %s",
		    m.which == CHAIN ? "chained" : m.which == MEAN ? "averaged" : "summed", n, n == 1 ? "" : "s",
		    (unsigned long long)res->n_tokens, (unsigned long long)res->n_demos,
		    strcmp(out, "-") ? out : "stdout");
	sa_deltas_free(ds);
	sa_delta_free(res);
	scaled_free(&in);
	close_stdout();
	return 0;
}
