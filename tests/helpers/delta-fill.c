/*
 * delta-fill - how full a least-squares delta's memories are: per layer and
 * key/value head, the trace of S (the total write) and the key directions
 * the read-out uses, df = tr(S (S + lambda I)^-1) = sum of mu / (mu + lambda)
 * over S's eigenvalues mu, one layer per line:
 *   "layer 5 trace 2150.0 1476.6 ... df 170.9 132.7 ..."
 * A memory of dk features whose df nears dk holds as many keys as it can
 * tell apart; data/train/README.md reads it against the pairs recalled.
 */
#define TOOL "delta-fill"
#include "../../bin/tool.h"

int
main(int argc, char **argv)
{
	double lambda = 0.1;
	sa_delta *d;
	double *df;
	float *M;
	int c, dk;

	setprogname_(argv[0]);
	while ((c = getopt(argc, argv, "l:")) != -1)
		if (c != 'l' || (lambda = atof(optarg)) <= 0)
			usage_die("usage: delta-fill [-l lambda] DELTA\n", NULL);
	if (argc - optind != 1)
		usage_die("usage: delta-fill [-l lambda] DELTA\n", NULL);
	TRY(sa_delta_load(&d, argv[optind]));
	if (d->mapping != SA_MAPPING_LSQ)
		die(SA_EDATA, "%s: not a delta of the least-squares memory", argv[optind]);
	dk = d->rank / d->n_head_kv;
	M = malloc((size_t)dk * dk * sizeof *M);
	df = malloc((size_t)d->n_head_kv * sizeof *df);
	if (!M || !df)
		die(SA_EINTERNAL, "out of memory");
	for (int l = 0; l < d->n_layer; l++) {
		const float *S = sa_delta_S(d, l);
		printf("layer %d trace", l);
		for (int h = 0; h < d->n_head_kv; h++) {
			const float *Sh = S + (size_t)h * dk * dk;
			double tr = 0;
			for (int i = 0; i < dk; i++)
				tr += Sh[(size_t)i * dk + i];
			printf(" %.1f", tr);
			/* S (S + lambda I)^-1: the read-out with S as its own values */
			TRY(sa_memory_read(Sh, Sh, dk, dk, lambda, M));
			df[h] = 0;
			for (int i = 0; i < dk; i++)
				df[h] += M[(size_t)i * dk + i];
		}
		printf(" df");
		for (int h = 0; h < d->n_head_kv; h++)
			printf(" %.1f", df[h]);
		printf("\n");
	}
	free(df);
	free(M);
	sa_delta_free(d);
	close_stdout();
	return 0;
}
