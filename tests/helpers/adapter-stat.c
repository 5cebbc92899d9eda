/*
 * adapter-stat - for each tensor kind of an adapter (Q, g, b, W1, W2),
 * the mean and the mean absolute value over every adapted matrix, one kind
 * per line: "b mean 2.98 absmean 2.98".  Tests use it to see which
 * tensors training moved.
 */
#include <math.h>

#define TOOL "adapter-stat"
#include "../../bin/tool.h"

int
main(int argc, char **argv)
{
	static const char *kind[5] = { "Q", "g", "b", "W1", "W2" };
	double sum[5] = { 0 }, abs_sum[5] = { 0 }, n[5] = { 0 };
	sa_adapter *a;

	setprogname_(argv[0]);
	if (argc != 2)
		usage_die("usage: adapter-stat ADAPTER\n", NULL);
	TRY(sa_adapter_load(&a, argv[1]));
	for (int l = 0; l < a->n_layer; l++)
		for (int m = 0; m < SA_NMAT; m++) {
			const sa_adapter_mat *am = SA_ADAPTER_MAT(a, l, m);
			size_t Hk = a->n_head_kv, r = a->rank, dh = a->d_head;
			const float *t[5] = { am->Q, am->g, am->b, am->W1, am->W2 };
			size_t len[5] = { Hk * r * dh, Hk * dh, Hk * r, am->d_out * Hk * dh, r * am->d_in };
			if (!sa_adapted(a->mats, m))
				continue;
			for (int k = 0; k < 5; k++)
				for (size_t i = 0; i < len[k]; i++) {
					sum[k] += t[k][i];
					abs_sum[k] += fabs(t[k][i]);
					n[k]++;
				}
		}
	for (int k = 0; k < 5; k++)
		printf("%s mean %.9g absmean %.9g\n", kind[k], sum[k] / n[k], abs_sum[k] / n[k]);
	sa_adapter_free(a);
	return 0;
}
