/*
 * adapter_impl.h - building adapters without a model file: the pieces
 * sa_adapter_init is made of, for code (and tests) that know the shapes.
 */
#ifndef ADAPTER_IMPL_H
#define ADAPTER_IMPL_H

#include "sa.h"

/* Gate bias of a new adapter: sigmoid(3) = 0.953, so every slot starts
 * nearly open and keeps most of what earlier chunks put into it. */
#define SA_ADAPTER_BIAS_INIT 3.0f

/*
 * An adapter with every tensor zero.  d_out and d_in give the width of
 * matrix m in layer l at index l * SA_NMAT + m (entries of matrices not in
 * mats are ignored).  The fingerprints are left 0.
 */
int sa_adapter_alloc(sa_adapter **out, int n_layer, int n_head_kv, int d_head,
    int rank, int chunk, uint32_t mats, const int *d_out, const int *d_in);
/* The same for either kind (SA_MAPPING_LSQ: rank = n_head_kv * d_key, chunk 0;
 * key_source SA_KEYS_*). */
int sa_adapter_alloc_kind(sa_adapter **out, int kind, int n_layer, int n_head_kv, int d_head,
    int rank, int chunk, int d_key, float lambda, int key_source, uint32_t mats,
    const int *d_out, const int *d_in);

/* Fill every tensor from seed as sa_adapter_init documents, then set the
 * adapter's fingerprint. */
void sa_adapter_randomize(sa_adapter *a, uint64_t seed, float w1_scale);

#endif
