/*
 * bench-encode - what the context mapping costs on top of the forward pass:
 * the same segment of n tokens run as a plain prefill (no hook) and through
 * sa_encoder_feed, alternately, best of r runs each, in wall-clock and in
 * process CPU time (the latter holds up better on a busy machine).
 *
 *   bench-encode [-n tokens] [-r runs] [-t threads] MODEL ADAPTER
 */
#include <time.h>
#include <unistd.h>

#define TOOL "bench-encode"
#include "../../bin/tool.h"

static double
clock_s(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

int
main(int argc, char **argv)
{
	int n = 512, runs = 5, c, *toks;
	double wall[2] = { 1e30, 1e30 }, cpu[2] = { 1e30, 1e30 };
	sa_model *m;
	sa_adapter *a;
	sa_kvcache *st;
	sa_encoder *e;

	setprogname_(argv[0]);
	while ((c = getopt(argc, argv, "n:r:t:")) != -1) {
		switch (c) {
		case 'n': n = (int)parse_long("-n", optarg, 1, 1 << 20); break;
		case 'r': runs = (int)parse_long("-r", optarg, 1, 1000); break;
		case 't': sa_set_threads((int)parse_long("-t", optarg, 1, 256)); break;
		default: die(SA_EUSAGE, "usage: bench-encode [-n tokens] [-r runs] [-t threads] MODEL ADAPTER");
		}
	}
	if (argc - optind != 2)
		die(SA_EUSAGE, "usage: bench-encode [-n tokens] [-r runs] [-t threads] MODEL ADAPTER");
	TRY(sa_model_load(&m, argv[optind]));
	TRY(sa_adapter_load(&a, argv[optind + 1]));
	if (!(toks = malloc((size_t)n * sizeof *toks)))
		die(SA_EINTERNAL, "out of memory");
	for (int i = 0; i < n; i++)
		toks[i] = (int)((i * 7919u + 13) % (unsigned)m->cfg.n_vocab);
	TRY(sa_kvcache_new(&st, m, n));
	TRY(sa_encoder_new(&e, m, a, NULL));
	/* One of each first: page in the weights, start the threads. */
	TRY(sa_forward(st, toks, n, NULL, 0));
	TRY(sa_encoder_feed(e, toks, n, 0));
	for (int r = 0; r < runs; r++) {
		for (int which = 0; which < 2; which++) {
			double w0 = clock_s(CLOCK_MONOTONIC), c0 = clock_s(CLOCK_PROCESS_CPUTIME_ID), w, cp;
			if (which == 0) {
				sa_kvcache_truncate(st, 0);
				TRY(sa_forward(st, toks, n, NULL, 0));
			} else {
				TRY(sa_encoder_feed(e, toks, n, 0));
			}
			w = clock_s(CLOCK_MONOTONIC) - w0;
			cp = clock_s(CLOCK_PROCESS_CPUTIME_ID) - c0;
			wall[which] = w < wall[which] ? w : wall[which];
			cpu[which] = cp < cpu[which] ? cp : cpu[which];
		}
	}
	printf("%d layers, d %d, %d KV heads x %d, rank %d, chunk %d, %d matrices; "
	    "%d tokens, %d threads, best of %d\n",
	    m->cfg.n_layer, m->cfg.d_model, a->n_head_kv, a->d_head, a->rank, a->chunk,
	    __builtin_popcount(a->mats), n, sa_get_threads(), runs);
	printf("prefill: %8.1f tokens/s wall, %8.1f tokens/CPU-s\n", n / wall[0], n / cpu[0]);
	printf("encode:  %8.1f tokens/s wall, %8.1f tokens/CPU-s\n", n / wall[1], n / cpu[1]);
	printf("encode / prefill: %.3f wall, %.3f CPU\n", wall[1] / wall[0], cpu[1] / cpu[0]);
	sa_encoder_free(e);
	sa_kvcache_free(st);
	sa_adapter_free(a);
	sa_model_free(m);
	free(toks);
	close_stdout();
	return 0;
}
