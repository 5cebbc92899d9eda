/*
 * adapter-scale - an adapter whose update at layer l is S_l times the
 * given one's: W1 of every adapted matrix of layer l scaled by S_l, the
 * fingerprint recomputed.  S_l = 0 switches layer l's delta off exactly
 * (W1 = 0 is a no-op), so a run over subsets of layers measures what each
 * contributes (data/train/README.md, "Which layers do what").
 *
 *	adapter-scale -m MODEL IN OUT S0,S1,...   (one factor per layer)
 */
#define TOOL "adapter-scale"
#include "../../bin/tool.h"

static const char synopsis[] = "usage: adapter-scale -m MODEL IN OUT S0,S1,...\n";

int
main(int argc, char **argv)
{
	sa_adapter *a;
	sa_model *m;
	char *p, *end;

	setprogname_(argv[0]);
	if (argc != 6 || strcmp(argv[1], "-m"))
		usage_die(synopsis, NULL);
	TRY(sa_model_load(&m, argv[2]));
	TRY(sa_adapter_load(&a, argv[3]));
	p = argv[5];
	for (int l = 0; l < a->n_layer; l++, p = end + (*end == ',')) {
		float s = strtof(p, &end);
		if (end == p || (*end != ',' && *end != '\0') || (*end == '\0') != (l == a->n_layer - 1))
			usage_die(synopsis, "want %d factors, one per layer, comma-separated",
			    a->n_layer);
		for (int k = 0; k < SA_NMAT; k++) {
			sa_adapter_mat *am = SA_ADAPTER_MAT(a, l, k);
			size_t n = (size_t)am->d_out * a->n_head_kv * a->d_head;
			if (sa_adapted(a->mats, k))
				for (size_t i = 0; i < n; i++)
					am->W1[i] *= s;
		}
	}
	a->fingerprint = sa_adapter_fingerprint(a);
	TRY(sa_adapter_save(a, m, argv[4]));
	sa_adapter_free(a);
	sa_model_free(m);
	return 0;
}
