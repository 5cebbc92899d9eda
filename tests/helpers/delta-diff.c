/*
 * delta-diff - compare two deltas: the largest absolute difference of their
 * states (h and P), and whether their fingerprints, shapes, counts and
 * sources agree.  Exits 1 when anything differs beyond the tolerance:
 * -t TOL absolute, -r TOL relative to the largest |h| (the memory's sums
 * grow with the tokens written, so their rounding does too).
 */
#include <getopt.h>
#include <math.h>

#define TOOL "delta-diff"
#include "../../bin/tool.h"

int
main(int argc, char **argv)
{
	double tol = 0, rel = -1, worst = 0, scale = 0;
	sa_delta *a, *b;
	size_t nh, np;
	int c, bad = 0;

	setprogname_(argv[0]);
	while ((c = getopt(argc, argv, "t:r:")) != -1) {
		if (c == 't')
			tol = parse_double("-t", optarg, 0, 1e30);
		else if (c == 'r')
			rel = parse_double("-r", optarg, 0, 1e30);
		else
			die(SA_EUSAGE, "usage: delta-diff [-t TOL | -r TOL] A B");
	}
	if (argc - optind != 2)
		die(SA_EUSAGE, "usage: delta-diff [-t TOL | -r TOL] A B");
	TRY(sa_delta_load(&a, argv[optind]));
	TRY(sa_delta_load(&b, argv[optind + 1]));
	if (sa_delta_compatible(a, argv[optind], b, argv[optind + 1]) != SA_OK)
		die(1, "%s", sa_error());
	if (a->n_tokens != b->n_tokens || a->n_demos != b->n_demos) {
		printf("counts differ: %llu tokens %llu demos, %llu tokens %llu demos\n",
		    (unsigned long long)a->n_tokens, (unsigned long long)a->n_demos,
		    (unsigned long long)b->n_tokens, (unsigned long long)b->n_demos);
		bad = 1;
	}
	if (strcmp(a->params ? a->params : "", b->params ? b->params : "") != 0 ||
	    strcmp(a->adapter_path ? a->adapter_path : "", b->adapter_path ? b->adapter_path : "") != 0) {
		printf("parameters or adapter path differ: '%s' '%s', '%s' '%s'\n",
		    a->params ? a->params : "", a->adapter_path ? a->adapter_path : "",
		    b->params ? b->params : "", b->adapter_path ? b->adapter_path : "");
		bad = 1;
	}
	if (a->n_sources != b->n_sources) {
		printf("sources differ: %d, %d\n", a->n_sources, b->n_sources);
		bad = 1;
	}
	for (int i = 0; !bad && i < a->n_sources; i++) {
		if (strcmp(a->sources[i].name, b->sources[i].name) != 0 ||
		    a->sources[i].hash != b->sources[i].hash) {
			printf("source %d differs: %s, %s\n", i, a->sources[i].name, b->sources[i].name);
			bad = 1;
		}
	}
	sa_delta_sizes(a, &nh, &np);
	for (size_t i = 0; i < nh; i++) {
		worst = fmax(worst, fabs((double)a->h[i] - b->h[i]));
		scale = fmax(scale, fabs((double)a->h[i]));
		if (isnan(a->h[i]) != isnan(b->h[i]))
			worst = INFINITY;
	}
	for (size_t i = 0; i < np; i++)
		worst = fmax(worst, fabs((double)a->P[i] - b->P[i]));
	printf("max |h|: %.9g\nmax difference: %.9g\n", scale, worst);
	if (worst > (rel >= 0 ? rel * scale : tol))
		bad = 1;
	sa_delta_free(a);
	sa_delta_free(b);
	close_stdout();
	return bad;
}
