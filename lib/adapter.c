/*
 * adapter.c - the learned context mapping of one base model (sa-adapter(5)):
 * a seeded initialisation, GGUF load and save, and the fingerprint that
 * binds deltas to it.
 *
 * Per layer l and adapted matrix M (GGUF ne innermost first, all F32):
 *   blk.L.M.sa_q   {dh, r, Hk}      Q  [Hk][r][dh]
 *   blk.L.M.sa_g   {dh, Hk}         g  [Hk][dh]
 *   blk.L.M.sa_b   {r, Hk}          b  [Hk][r]
 *   blk.L.M.sa_w1  {Dkv, d_out}     W1 [d_out][Dkv]
 *   blk.L.M.sa_w2  {d_in, r}        W2 [r][d_in]
 * The least-squares memory (SA_MAPPING_LSQ) has no sa_q, sa_g, sa_b; its rank
 * r is Hk * dk, and per layer l, with dx the width of its keys (Dkv, or d_in
 * of the one adapted matrix when keyed by its input):
 *   blk.L.sa_mem_p   {dx, dk, Hk}   P [Hk][dk][dx]
 *   blk.L.sa_mem_pb  {dk, Hk}       p [Hk][dk]   (not when keyed by the input)
 *   blk.L.sa_mem_w   {dx, Hk}       w [Hk][dx]
 *   blk.L.sa_mem_c   {Hk}           c [Hk]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sa.h"
#include "adapter_impl.h"
#include "kernels_impl.h"    /* sa_rows_to_f32 */

#define ADAPTER_VERSION 1u       /* SA_MAPPING_POOL */
#define ADAPTER_VERSION_LSQ 2u   /* SA_MAPPING_LSQ: earlier readers refuse it */

/* The same limits a delta header obeys: an adapter must be able to make one. */
#define MAX_LAYER 4096
#define MAX_HEAD_KV 4096
#define MAX_D_HEAD 4096
#define MAX_RANK 65536
#define MAX_CHUNK (1 << 24)
#define MAX_WIDTH (1 << 20)

#define MAX_D_KEY 4096
#define MAX_VALUE_OFFSET 1

enum { T_Q, T_G, T_B, T_W1, T_W2, T_N };
static const char *const tensor_suffix[T_N] = { "sa_q", "sa_g", "sa_b", "sa_w1", "sa_w2" };
/* the memory's tensors, per layer */
enum { M_P, M_PB, M_W, M_C, M_N };
static const char *const memory_suffix[M_N] = { "sa_mem_p", "sa_mem_pb", "sa_mem_w", "sa_mem_c" };
static const char *const kind_name[] = { "pool", "lsq" };
static const char *const key_source_name[] = { "keys", "input" };
static const char *const records_name[] = { "packed", "alone" };

/* The gate bias of a memory keyed by the input: sigmoid(4) = 0.982, every
 * token nearly fully written. */
#define INPUT_GATE_BIAS 4.0f

static int
check_config(int kind, int n_layer, int n_head_kv, int d_head, int rank, int chunk, int d_key,
    float lambda, int key_source, uint32_t mats, const char *name)
{
	if (n_layer < 1 || n_layer > MAX_LAYER)
		return sa_fail(SA_EDATA, "%s: n_layer %d out of range 1..%d", name, n_layer, MAX_LAYER);
	if (n_head_kv < 1 || n_head_kv > MAX_HEAD_KV)
		return sa_fail(SA_EDATA, "%s: n_head_kv %d out of range 1..%d", name, n_head_kv, MAX_HEAD_KV);
	if (d_head < 1 || d_head > MAX_D_HEAD)
		return sa_fail(SA_EDATA, "%s: d_head %d out of range 1..%d", name, d_head, MAX_D_HEAD);
	if (rank < 1 || rank > MAX_RANK)
		return sa_fail(SA_EDATA, "%s: rank %d out of range 1..%d", name, rank, MAX_RANK);
	if (kind == SA_MAPPING_LSQ) {
		if (d_key < 1 || d_key > MAX_D_KEY)
			return sa_fail(SA_EDATA, "%s: d_key %d out of range 1..%d", name, d_key, MAX_D_KEY);
		if ((int64_t)n_head_kv * d_key != rank)
			return sa_fail(SA_EDATA, "%s: rank %d is not n_head_kv %d times d_key %d", name,
			    rank, n_head_kv, d_key);
		if (chunk != 0)
			return sa_fail(SA_EDATA, "%s: chunk %d: the memory has no chunks (0)", name, chunk);
		if (!(lambda > 0) || !isfinite(lambda))
			return sa_fail(SA_EDATA, "%s: lambda %g is not a positive number", name, lambda);
	} else if (chunk < 1 || chunk > MAX_CHUNK)
		return sa_fail(SA_EDATA, "%s: chunk %d out of range 1..%d", name, chunk, MAX_CHUNK);
	if (mats == 0 || mats >> SA_NMAT)
		return sa_fail(SA_EDATA, "%s: bad matrix set 0x%x", name, (unsigned)mats);
	if (key_source == SA_KEYS_INPUT && (kind != SA_MAPPING_LSQ || mats & (mats - 1)))
		return sa_fail(SA_EDATA, "%s: key_source input is for a memory (lsq) over exactly one "
		    "matrix kind", name);
	return SA_OK;
}

/* Element counts of the five tensors of one (l, m): 0 for those a kind
 * does not have. */
static void
tensor_sizes(const sa_adapter *a, int d_out, int d_in, size_t n[T_N])
{
	size_t Hk = a->n_head_kv, r = a->rank, dh = a->d_head, pool = a->mapping == SA_MAPPING_POOL;

	n[T_Q] = pool * Hk * r * dh;
	n[T_G] = pool * Hk * dh;
	n[T_B] = pool * Hk * r;
	n[T_W1] = (size_t)d_out * Hk * dh;
	n[T_W2] = r * (size_t)d_in;
}

int
sa_adapter_key_mat(const sa_adapter *a)
{
	for (int m = 0; a->key_source == SA_KEYS_INPUT && m < SA_NMAT; m++)
		if (sa_adapted(a->mats, m))
			return m;
	return -1;
}

/* Width dx of layer l's memory keys. */
static int
key_width(const sa_adapter *a, int l)
{
	int m = sa_adapter_key_mat(a);

	return m < 0 ? a->n_head_kv * a->d_head : SA_ADAPTER_MAT(a, l, m)->d_in;
}

/* Element counts of one layer's memory tensors, for keys of width dx. */
static void
memory_sizes(const sa_adapter *a, size_t dx, size_t n[M_N])
{
	size_t Hk = a->n_head_kv, dk = a->d_key;

	n[M_P] = Hk * dk * dx;
	n[M_PB] = a->key_source == SA_KEYS_INPUT ? 0 : Hk * dk;
	n[M_W] = Hk * dx;
	n[M_C] = Hk;
}

static void
tensor_name(char *buf, size_t n, int l, int m, int t)
{
	snprintf(buf, n, "blk.%d.%s.%s", l, sa_mat_name(m), tensor_suffix[t]);
}

static void
memory_name(char *buf, size_t n, int l, int t)
{
	snprintf(buf, n, "blk.%d.%s", l, memory_suffix[t]);
}

/* GGUF dims (innermost first) of memory tensor t, for keys of width dx. */
static int
memory_dims(const sa_adapter *a, int64_t dx, int t, int64_t ne[4])
{
	int64_t Hk = a->n_head_kv, dk = a->d_key;

	ne[1] = ne[2] = ne[3] = 1;
	switch (t) {
	case M_P: ne[0] = dx; ne[1] = dk; ne[2] = Hk; return 3;
	case M_PB: ne[0] = dk; ne[1] = Hk; return 2;
	case M_W: ne[0] = dx; ne[1] = Hk; return 2;
	default: ne[0] = Hk; return 1;
	}
}

/* GGUF dims (innermost first) of tensor t of (l, m). */
static int
tensor_dims(const sa_adapter *a, const sa_adapter_mat *am, int t, int64_t ne[4])
{
	int64_t Hk = a->n_head_kv, r = a->rank, dh = a->d_head;

	ne[2] = ne[3] = 1;
	switch (t) {
	case T_Q: ne[0] = dh; ne[1] = r; ne[2] = Hk; return 3;
	case T_G: ne[0] = dh; ne[1] = Hk; return 2;
	case T_B: ne[0] = r; ne[1] = Hk; return 2;
	case T_W1: ne[0] = Hk * dh; ne[1] = am->d_out; return 2;
	default: ne[0] = am->d_in; ne[1] = r; return 2;
	}
}

/*
 * One tensor of the adapter, as the file has it: its name and GGUF dims, where
 * its data (a view into the arena) is kept and its element count, 0 for one
 * the kind or an unadapted matrix lacks.  am is its matrix, NULL for a memory.
 */
typedef struct {
	char name[64];
	int nd;
	int64_t ne[4];
	float **x;
	size_t n;
	const sa_adapter_mat *am;
	int t;
} adapter_tensor;

/* How many adapter_tensor_at numbers: every (l, m, t) of the matrices, then
 * every (l, t) of the memories. */
static size_t
adapter_tensor_count(const sa_adapter *a)
{
	return (size_t)a->n_layer * (SA_NMAT * T_N + (a->mapping == SA_MAPPING_LSQ) * M_N);
}

/* Tensor i of a, in the file's order. */
static void
adapter_tensor_at(const sa_adapter *a, size_t i, adapter_tensor *at)
{
	size_t n_mat = (size_t)a->n_layer * SA_NMAT * T_N;

	if (i < n_mat) {
		int l = (int)(i / (SA_NMAT * T_N)), m = (int)(i / T_N % SA_NMAT), t = (int)(i % T_N);
		sa_adapter_mat *am = SA_ADAPTER_MAT(a, l, m);
		float **x[T_N] = { &am->Q, &am->g, &am->b, &am->W1, &am->W2 };
		size_t n[T_N];

		tensor_sizes(a, am->d_out, am->d_in, n);
		*at = (adapter_tensor){ .x = x[t], .n = sa_adapted(a->mats, m) ? n[t] : 0, .t = t,
		    .am = sa_adapted(a->mats, m) ? am : NULL };
		at->nd = tensor_dims(a, am, t, at->ne);
		tensor_name(at->name, sizeof at->name, l, m, t);
	} else {
		int l = (int)((i - n_mat) / M_N), t = (int)((i - n_mat) % M_N);
		sa_adapter_memory *mm = &a->mem[l];
		float **x[M_N] = { &mm->P, &mm->p, &mm->w, &mm->c };
		size_t dx = (size_t)key_width(a, l), n[M_N];

		memory_sizes(a, dx, n);
		*at = (adapter_tensor){ .x = x[t], .n = n[t], .t = t };
		at->nd = memory_dims(a, (int64_t)dx, t, at->ne);
		memory_name(at->name, sizeof at->name, l, t);
	}
}

sa_memory_params
sa_adapter_memory_params(const sa_adapter *a, int layer)
{
	const sa_adapter_memory *mm = &a->mem[layer];

	return (sa_memory_params){ mm->P, mm->p, mm->w, mm->c, a->n_head_kv, a->d_head, a->d_key,
	    a->value_offset, key_width(a, layer), a->key_source == SA_KEYS_INPUT };
}

void
sa_adapter_free(sa_adapter *a)
{
	if (!a)
		return;
	free(a->path);
	free(a->mat);
	free(a->mem);
	free(a->arena);
	free(a);
}

int
sa_adapter_alloc(sa_adapter **out, int n_layer, int n_head_kv, int d_head,
    int rank, int chunk, uint32_t mats, const int *d_out, const int *d_in)
{
	return sa_adapter_alloc_kind(out, SA_MAPPING_POOL, n_layer, n_head_kv, d_head, rank, chunk,
	    0, 0, SA_KEYS_KV, mats, d_out, d_in);
}

int
sa_adapter_alloc_kind(sa_adapter **out, int kind, int n_layer, int n_head_kv, int d_head,
    int rank, int chunk, int d_key, float lambda, int key_source, uint32_t mats,
    const int *d_out, const int *d_in)
{
	sa_adapter *a;
	adapter_tensor at;
	size_t total = 0;
	float *p;
	int rc;

	*out = NULL;
	if ((rc = check_config(kind, n_layer, n_head_kv, d_head, rank, chunk, d_key, lambda,
	    key_source, mats, "adapter")) != SA_OK)
		return rc;
	if (!(a = sa_calloc(1, sizeof *a)))
		return SA_EINTERNAL;
	a->mapping = kind;
	a->key_source = key_source;
	a->d_key = d_key;
	a->lambda = lambda;
	a->n_layer = n_layer;
	a->n_head_kv = n_head_kv;
	a->d_head = d_head;
	a->rank = rank;
	a->chunk = chunk;
	a->mats = mats;
	if (!(a->mat = sa_calloc((size_t)n_layer * SA_NMAT, sizeof *a->mat))) {
		sa_adapter_free(a);
		return SA_EINTERNAL;
	}
	for (int l = 0; l < n_layer; l++)
		for (int m = 0; m < SA_NMAT; m++) {
			size_t i = (size_t)l * SA_NMAT + m;
			if (!sa_adapted(mats, m))
				continue;
			if (d_out[i] < 1 || d_out[i] > MAX_WIDTH || d_in[i] < 1 || d_in[i] > MAX_WIDTH) {
				sa_adapter_free(a);
				return sa_fail(SA_EDATA, "adapter: layer %d %s has a bad shape %d x %d",
				    l, sa_mat_name(m), d_out[i], d_in[i]);
			}
			a->mat[i].d_out = d_out[i];
			a->mat[i].d_in = d_in[i];
		}
	if (kind == SA_MAPPING_LSQ && !(a->mem = sa_calloc((size_t)n_layer, sizeof *a->mem))) {
		sa_adapter_free(a);
		return SA_EINTERNAL;
	}
	for (size_t i = 0; i < adapter_tensor_count(a); i++) {
		adapter_tensor_at(a, i, &at);
		total += at.n;
	}
	/* One block for every tensor: loading and freeing stay one call each. */
	if (!(a->arena = sa_calloc(total, sizeof(float)))) {
		sa_adapter_free(a);
		return SA_EINTERNAL;
	}
	p = a->arena;
	for (size_t i = 0; i < adapter_tensor_count(a); i++) {
		adapter_tensor_at(a, i, &at);
		*at.x = at.n ? p : NULL;
		p += at.n;
	}
	*out = a;
	return SA_OK;
}

static uint64_t
hash_u64(uint64_t h, uint64_t v)
{
	unsigned char b[8];

	for (int i = 0; i < 8; i++)
		b[i] = (unsigned char)(v >> 8 * i);
	return sa_hash64(h, b, 8);
}

uint64_t
sa_adapter_fingerprint(const sa_adapter *a)
{
	uint64_t h = SA_HASH64_INIT;

	h = sa_hash64(h, "streamadapter", 13);
	h = hash_u64(h, a->mapping == SA_MAPPING_LSQ ? ADAPTER_VERSION_LSQ : ADAPTER_VERSION);
	if (a->mapping == SA_MAPPING_LSQ) {
		uint32_t bits;
		memcpy(&bits, &a->lambda, sizeof bits);
		h = hash_u64(h, (uint64_t)a->d_key);
		h = hash_u64(h, bits);
		/* absent from the files of offset 0, and from their hash */
		if (a->value_offset)
			h = hash_u64(h, (uint64_t)a->value_offset | 1ull << 32);
		/* so is the key source of the files keyed by the layer's keys */
		if (a->key_source == SA_KEYS_INPUT)
			h = hash_u64(h, (uint64_t)a->key_source | 2ull << 32);
	}
	/* and the layout of records of the files that pack them */
	if (a->records != SA_RECORDS_PACKED)
		h = hash_u64(h, (uint64_t)a->records | 3ull << 32);
	h = hash_u64(h, (uint64_t)a->n_layer);
	h = hash_u64(h, (uint64_t)a->n_head_kv);
	h = hash_u64(h, (uint64_t)a->d_head);
	h = hash_u64(h, (uint64_t)a->rank);
	h = hash_u64(h, (uint64_t)a->chunk);
	h = hash_u64(h, a->mats);
	h = hash_u64(h, a->model_fingerprint);
	for (size_t i = 0; i < adapter_tensor_count(a); i++) {
		adapter_tensor at;
		adapter_tensor_at(a, i, &at);
		/* each adapted matrix's shape before its tensors */
		if (at.am && at.t == 0) {
			h = hash_u64(h, (uint64_t)at.am->d_out);
			h = hash_u64(h, (uint64_t)at.am->d_in);
		}
		/* Floats hash as their little-endian bytes (the file's). */
		if (at.n)
			h = sa_hash64(h, *at.x, at.n * sizeof(float));
	}
	return h;
}

/* ------------------------------------------------------ initialisation */

/* n draws of N(0, std^2), Box-Muller. */
static void
fill_normal(float *x, size_t n, double std, uint64_t *s)
{
	for (size_t i = 0; i < n; i += 2) {
		double u = sa_unif_mid(s), v = sa_unif_mid(s);  /* never 0: log(u) is finite */
		double rad = std * sqrt(-2.0 * log(u));
		x[i] = (float)(rad * cos(2 * M_PI * v));
		if (i + 1 < n)
			x[i + 1] = (float)(rad * sin(2 * M_PI * v));
	}
}

/* The stream of tensor t of (layer, matrix); the memory's are matrix SA_NMAT. */
static uint64_t
tensor_stream(uint64_t seed, int l, int m, int t)
{
	uint64_t s = seed;

	s = sa_splitmix64(&s) ^ ((uint64_t)l << 32 | (uint64_t)m << 8 | (uint64_t)t);
	return sa_splitmix64(&s);
}

/* P [dk][dx] with rows of unit norm: the identity when dk = dx, else
 * random directions. */
static void
unit_rows(float *P, int dk, int dx, uint64_t *s)
{
	if (dk == dx) {
		memset(P, 0, (size_t)dk * dx * sizeof *P);
		for (int i = 0; i < dk; i++)
			P[(size_t)i * dx + i] = 1;
		return;
	}
	fill_normal(P, (size_t)dk * dx, 1.0, s);
	for (int i = 0; i < dk; i++) {
		float *row = P + (size_t)i * dx;
		double norm = 0;
		for (int j = 0; j < dx; j++)
			norm += (double)row[j] * row[j];
		norm = 1 / sqrt(norm);
		for (int j = 0; j < dx; j++)
			row[j] = (float)(row[j] * norm);
	}
}

/*
 * The memory's features start as random projections of the keys, of unit
 * scale for keys of unit scale, with no offset; the write gate at sigmoid(0):
 * every token half written until training makes the write selective.
 * Keyed by the input, P's rows have unit norm (init_input_keys scales
 * them to the model's activations) and every token is nearly fully
 * written: an untrained read must see every pair.
 */
static void
randomize_memory(sa_adapter *a, uint64_t seed)
{
	size_t n[M_N];

	for (int l = 0; l < a->n_layer; l++) {
		sa_adapter_memory *mm = &a->mem[l];
		int dx = key_width(a, l);
		uint64_t s = tensor_stream(seed, l, SA_NMAT, M_P);
		memory_sizes(a, dx, n);
		if (a->key_source == SA_KEYS_INPUT) {
			for (int h = 0; h < a->n_head_kv; h++)
				unit_rows(mm->P + (size_t)h * a->d_key * dx, a->d_key, dx, &s);
			memset(mm->w, 0, n[M_W] * sizeof(float));
			for (int h = 0; h < a->n_head_kv; h++)
				mm->c[h] = INPUT_GATE_BIAS;
			continue;
		}
		fill_normal(mm->P, n[M_P], 1.0 / sqrt((double)dx), &s);
		s = tensor_stream(seed, l, SA_NMAT, M_W);
		fill_normal(mm->w, n[M_W], 1.0 / sqrt((double)dx), &s);
		memset(mm->p, 0, n[M_PB] * sizeof(float));
		memset(mm->c, 0, n[M_C] * sizeof(float));
	}
}

/*
 * Each tensor draws from its own stream, keyed by (seed, layer, matrix,
 * tensor): the values of blk.3.attn_v.sa_q do not change when another
 * matrix is added to the set.
 */
void
sa_adapter_randomize(sa_adapter *a, uint64_t seed, float w1_scale)
{
	double dh = a->d_head, Dkv = (double)a->n_head_kv * a->d_head;
	size_t n[T_N];

	if (a->mapping == SA_MAPPING_LSQ)
		randomize_memory(a, seed);

	for (int l = 0; l < a->n_layer; l++)
		for (int m = 0; m < SA_NMAT; m++) {
			sa_adapter_mat *am = SA_ADAPTER_MAT(a, l, m);
			if (!sa_adapted(a->mats, m))
				continue;
			tensor_sizes(a, am->d_out, am->d_in, n);
			for (int t = 0; t < T_N; t++) {
				uint64_t s = tensor_stream(seed, l, m, t);
				if (!n[t])
					continue;
				switch (t) {
				case T_Q:
					/* The softmax divides by sqrt(dh): unit queries give
					 * logits of unit scale for unit keys. */
					fill_normal(am->Q, n[t], 1.0, &s);
					break;
				case T_G:
					fill_normal(am->g, n[t], 1.0 / sqrt(dh), &s);
					break;
				case T_B:
					for (size_t i = 0; i < n[t]; i++)
						am->b[i] = SA_ADAPTER_BIAS_INIT;
					break;
				case T_W1:
					/* Zero: a new adapter leaves the model exactly as it is. */
					if (w1_scale != 0)
						fill_normal(am->W1, n[t], fabs(w1_scale) / sqrt(Dkv), &s);
					else
						memset(am->W1, 0, n[t] * sizeof(float));
					break;
				case T_W2:
					/* keyed by the input, the read is the write's map */
					if (a->key_source == SA_KEYS_INPUT)
						memcpy(am->W2, a->mem[l].P, n[t] * sizeof(float));
					else
						fill_normal(am->W2, n[t], 1.0 / sqrt((double)am->d_in), &s);
					break;
				}
			}
		}
	a->fingerprint = sa_adapter_fingerprint(a);
}

static int
init_kind(sa_adapter **out, const sa_model *model, int kind, int rank, int chunk, int d_key,
    float lambda, int key_source, uint32_t mats, uint64_t seed, float w1_scale)
{
	const sa_config *c = &model->cfg;
	int *d_out, *d_in, rc;
	size_t n = (size_t)c->n_layer * SA_NMAT;

	*out = NULL;
	if (mats == 0 || mats >> SA_NMAT)
		return sa_fail(SA_EUSAGE, "bad matrix set 0x%x", (unsigned)mats);
	if (!isfinite(w1_scale))
		return sa_fail(SA_EUSAGE, "W1 scale is not a finite number");
	if (c->n_layer < 1 || c->n_layer > MAX_LAYER)
		return sa_fail(SA_EDATA, "model has %d layers", c->n_layer);
	d_out = sa_calloc(n, sizeof *d_out);
	d_in = sa_calloc(n, sizeof *d_in);
	if (!d_out || !d_in) {
		free(d_out);
		free(d_in);
		return SA_EINTERNAL;
	}
	for (int m = 0; m < SA_NMAT; m++) {
		int o, i;
		if (!sa_adapted(mats, m))
			continue;
		if ((rc = sa_model_mat_dims(model, m, &o, &i)) != SA_OK)
			goto done;
		for (int l = 0; l < c->n_layer; l++) {
			d_out[(size_t)l * SA_NMAT + m] = o;
			d_in[(size_t)l * SA_NMAT + m] = i;
		}
	}
	rc = sa_adapter_alloc_kind(out, kind, c->n_layer, c->n_head_kv, c->d_head, rank, chunk,
	    d_key, lambda, key_source, mats, d_out, d_in);
	/* The limits are the adapter's, but a bad rank, chunk, d_key or lambda
	 * is the caller's. */
	if (rc == SA_EDATA && (rank < 1 || rank > MAX_RANK ||
	    (kind == SA_MAPPING_POOL && (chunk < 1 || chunk > MAX_CHUNK)) ||
	    (kind == SA_MAPPING_LSQ && (d_key < 1 || d_key > MAX_D_KEY || !(lambda > 0) || !isfinite(lambda)))))
		rc = SA_EUSAGE;
	if (rc != SA_OK)
		goto done;
	(*out)->model_fingerprint = model->fingerprint;
	sa_adapter_randomize(*out, seed, w1_scale);
done:
	free(d_out);
	free(d_in);
	return rc;
}

int
sa_adapter_init(sa_adapter **out, const sa_model *model, int rank, int chunk,
    uint32_t mats, uint64_t seed, float w1_scale)
{
	return init_kind(out, model, SA_MAPPING_POOL, rank, chunk, 0, 0, SA_KEYS_KV, mats, seed,
	    w1_scale);
}

/* A text to measure activations on: prose, then demonstrations. */
static const char probe_text[] =
    "The river runs past the old mill, and the children watch the boats go by.\n"
    "apple -> red\nsky -> blue\ngrass -> green\nslate -> flower\ncandle -> river\n";

typedef struct probe {
	double *sq;    /* [n_layer][n]: |x_t|^2 of every token */
	int n, d_in;
} probe;

static void
probe_hook(void *ctx, int layer, int i0, int n, const float *x)
{
	probe *p = ctx;

	for (int t = 0; t < n; t++) {
		const float *xt = x + (size_t)t * p->d_in;
		double q = 0;
		for (int j = 0; j < p->d_in; j++)
			q += (double)xt[j] * xt[j];
		p->sq[(size_t)layer * p->n + i0 + t] = q;
	}
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/*
 * ms [n_layer]: a typical token's |x|^2 for the input x of matrix mat, the
 * median over the tokens of probe_text after the first (where attention has
 * nothing to mix and some models park huge activations).
 */
static int
input_sizes(const sa_model *model, int mat, double *ms)
{
	const sa_config *c = &model->cfg;
	probe p = { NULL, 0, 0 };
	sa_kvcache *kv = NULL;
	int *toks = NULL, n, d_out, rc;

	if ((rc = sa_model_mat_dims(model, mat, &d_out, &p.d_in)) != SA_OK ||
	    (rc = sa_tokenize(model->vocab, probe_text, strlen(probe_text), 1, &toks, &n)) != SA_OK)
		return rc;
	p.n = n = n < c->n_ctx ? n : c->n_ctx;
	if (n < 2) {
		rc = sa_fail(SA_EDATA, "the model's context is too short to measure its activations");
		goto done;
	}
	if (!(p.sq = sa_malloc((size_t)c->n_layer * n * sizeof *p.sq)) ||
	    (rc = sa_kvcache_new(&kv, model, n)) != SA_OK) {
		rc = SA_EINTERNAL;
		goto done;
	}
	sa_kvcache_set_input_hook(kv, mat, probe_hook, &p);
	if ((rc = sa_forward(kv, toks, n, NULL, 0)) != SA_OK)
		goto done;
	for (int l = 0; l < c->n_layer; l++) {
		double *sq = p.sq + (size_t)l * n + 1;
		qsort(sq, (size_t)n - 1, sizeof *sq, cmp_double);
		ms[l] = sq[(n - 1) / 2];
	}
done:
	sa_kvcache_free(kv);
	free(p.sq);
	free(toks);
	return rc;
}

/*
 * W1 [d_out][Dkv] of a memory keyed by the input: what the model itself
 * does with a head's values.  attn_output and ffn_down (outputs to the
 * residual stream): block h is the mean of W_o's column blocks of the
 * query heads that read KV head h, so that a recalled value enters the
 * residual as a head of that group attending to its token would put it;
 * attn_v: the identity (the value recalled joins the token's own); the
 * others have no such map and keep W1 = 0.
 */
static int
values_out(const sa_model *model, int l, int mat, float *W1)
{
	const sa_config *c = &model->cfg;
	int Hk = c->n_head_kv, dh = c->d_head, grp = c->n_head / Hk, Dkv = Hk * dh;
	int qd = c->n_head * dh, d_out, d_in, rc;
	float *row;

	if ((rc = sa_model_mat_dims(model, mat, &d_out, &d_in)) != SA_OK)
		return rc;
	memset(W1, 0, (size_t)d_out * Dkv * sizeof *W1);
	if (mat == SA_MAT_V) {
		for (int i = 0; i < Dkv; i++)
			W1[(size_t)i * Dkv + i] = 1;
		return SA_OK;
	}
	if (mat != SA_MAT_O && mat != SA_MAT_DOWN)
		return SA_OK;
	if (!(row = sa_malloc((size_t)qd * sizeof *row)))
		return SA_EINTERNAL;
	for (int r = 0; r < d_out; r++) {
		sa_rows_to_f32(&model->layers[l].w[SA_MAT_O], r, r + 1, row);
		for (int h = 0; h < Hk; h++)
			for (int i = 0; i < dh; i++) {
				double sum = 0;
				for (int j = h * grp; j < (h + 1) * grp; j++)
					sum += row[(size_t)j * dh + i];
				W1[(size_t)r * Dkv + (size_t)h * dh + i] = (float)(sum / grp);
			}
	}
	free(row);
	return SA_OK;
}

/*
 * A memory keyed by the input, ready to use untrained: P's rows scaled so
 * that a typical token's features have unit norm (E|P x|^2 = dk/dx |x|^2
 * for rows of unit norm), W2 = P again, and W1 from values_out unless
 * w1_scale asked for a random one.
 */
static int
init_input_keys(sa_adapter *a, const sa_model *model, float w1_scale)
{
	int mat = sa_adapter_key_mat(a), rc;
	double *ms = sa_malloc((size_t)a->n_layer * sizeof *ms);

	if (!ms)
		return SA_EINTERNAL;
	if ((rc = input_sizes(model, mat, ms)) != SA_OK)
		goto done;
	for (int l = 0; l < a->n_layer; l++) {
		sa_adapter_mat *am = SA_ADAPTER_MAT(a, l, mat);
		size_t n = (size_t)a->rank * am->d_in;
		double f = ms[l] > 0 ? sqrt(am->d_in / (a->d_key * ms[l])) : 1;
		for (size_t i = 0; i < n; i++)
			a->mem[l].P[i] = (float)(a->mem[l].P[i] * f);
		memcpy(am->W2, a->mem[l].P, n * sizeof(float));
		if (w1_scale == 0 && (rc = values_out(model, l, mat, am->W1)) != SA_OK)
			goto done;
	}
done:
	free(ms);
	return rc;
}

int
sa_adapter_init_lsq(sa_adapter **out, const sa_model *model, int d_key, float lambda,
    int value_offset, int key_source, uint32_t mats, uint64_t seed, float w1_scale)
{
	int Hk = model->cfg.n_head_kv > 0 ? model->cfg.n_head_kv : 1;
	int most = MAX_RANK / Hk < MAX_D_KEY ? MAX_RANK / Hk : MAX_D_KEY, rc;

	*out = NULL;
	if (d_key < 1 || d_key > most)
		return sa_fail(SA_EUSAGE, "d_key %d out of range 1..%d", d_key, most);
	if (value_offset < 0 || value_offset > MAX_VALUE_OFFSET)
		return sa_fail(SA_EUSAGE, "value offset %d out of range 0..%d", value_offset,
		    MAX_VALUE_OFFSET);
	if (key_source != SA_KEYS_KV && key_source != SA_KEYS_INPUT)
		return sa_fail(SA_EUSAGE, "unknown key source %d", key_source);
	if (key_source == SA_KEYS_INPUT && mats & (mats - 1))
		return sa_fail(SA_EUSAGE, "a memory keyed by the input adapts exactly one matrix "
		    "kind (e.g. attn_output)");
	rc = init_kind(out, model, SA_MAPPING_LSQ, Hk * d_key, 0, d_key, lambda, key_source, mats,
	    seed, w1_scale);
	if (rc != SA_OK)
		return rc;
	if (key_source == SA_KEYS_INPUT) {
		if (d_key > key_width(*out, 0))
			rc = sa_fail(SA_EUSAGE, "d_key %d exceeds the input's width %d: no more "
			    "linear features are independent", d_key, key_width(*out, 0));
		else
			rc = init_input_keys(*out, model, w1_scale);
		if (rc != SA_OK) {
			sa_adapter_free(*out);
			*out = NULL;
			return rc;
		}
	}
	(*out)->value_offset = value_offset;
	(*out)->fingerprint = sa_adapter_fingerprint(*out);
	return SA_OK;
}

/*
 * The new slots get fresh queries but zero rows of W2, so that
 * Delta W = W1 H^T W2 is the old one until training moves them: W2's new
 * rows learn first (their gradient goes through the new rows of H), and the
 * queries follow.  Their gate biases are the mean of the head's old ones: a
 * new slot that kept more than the trained ones would hold a state many
 * times larger, which W2 then learns to magnify.
 */
int
sa_adapter_grow(sa_adapter **out, const sa_adapter *a, const sa_model *model, int rank,
    uint64_t seed)
{
	size_t r0 = a->rank, dh = a->d_head;
	sa_adapter *g;
	int rc;

	*out = NULL;
	if (a->mapping != SA_MAPPING_POOL)
		return sa_fail(SA_EUSAGE, "only an adapter of the pool kind grows");
	if (rank < a->rank)
		return sa_fail(SA_EUSAGE, "rank %d is below the adapter's %d", rank, a->rank);
	if ((rc = sa_adapter_check(a, model)) != SA_OK)
		return rc;
	if ((rc = sa_adapter_init(&g, model, rank, a->chunk, a->mats, seed, 0)) != SA_OK)
		return rc;
	for (int l = 0; l < a->n_layer; l++)
		for (int m = 0; m < SA_NMAT; m++) {
			const sa_adapter_mat *src = SA_ADAPTER_MAT(a, l, m);
			sa_adapter_mat *dst = SA_ADAPTER_MAT(g, l, m);
			if (!sa_adapted(a->mats, m))
				continue;
			for (int h = 0; h < a->n_head_kv; h++) {
				float *b = dst->b + (size_t)h * rank;
				double mean = 0;
				memcpy(dst->Q + (size_t)h * rank * dh, src->Q + h * r0 * dh,
				    r0 * dh * sizeof(float));
				memcpy(b, src->b + h * r0, r0 * sizeof(float));
				for (size_t j = 0; j < r0; j++)
					mean += b[j];
				for (size_t j = r0; j < (size_t)rank; j++)
					b[j] = (float)(mean / r0);
			}
			memcpy(dst->g, src->g, (size_t)a->n_head_kv * dh * sizeof(float));
			memcpy(dst->W1, src->W1, (size_t)src->d_out * a->n_head_kv * dh * sizeof(float));
			memcpy(dst->W2, src->W2, r0 * src->d_in * sizeof(float));
			memset(dst->W2 + r0 * src->d_in, 0, (rank - r0) * src->d_in * sizeof(float));
		}
	g->fingerprint = sa_adapter_fingerprint(g);
	*out = g;
	return SA_OK;
}

/* ------------------------------------------------------------ the file */

static int
check_finite(const sa_adapter *a, const char *name)
{
	for (size_t i = 0; i < adapter_tensor_count(a); i++) {
		adapter_tensor at;
		adapter_tensor_at(a, i, &at);
		for (size_t j = 0; j < at.n; j++)
			if (!isfinite((*at.x)[j]))
				return sa_fail(SA_EDATA, "%s: tensor %s holds a non-finite value", name,
				    at.name);
	}
	return SA_OK;
}

static void
hex64(char buf[17], uint64_t v)
{
	snprintf(buf, 17, "%016llx", (unsigned long long)v);
}

int
sa_adapter_save(const sa_adapter *a, const sa_model *model, const char *path)
{
	sa_gguf_writer *w;
	sa_str names[SA_NMAT];
	char hex[17], title[256];
	uint64_t nm = 0;
	int rc;

	if ((rc = sa_adapter_check(a, model)) != SA_OK)
		return rc;
	if (a->fingerprint != sa_adapter_fingerprint(a))
		return sa_fail(SA_EINTERNAL, "%s: adapter changed since its fingerprint was set",
		    strcmp(path, "-") ? path : "stdout");
	/* A file that sa_adapter_load would refuse is not written at all. */
	if ((rc = check_finite(a, strcmp(path, "-") ? path : "stdout")) != SA_OK)
		return rc;
	for (int m = 0; m < SA_NMAT; m++)
		if (sa_adapted(a->mats, m)) {
			names[nm].s = sa_mat_name(m);
			names[nm++].n = strlen(sa_mat_name(m));
		}
	if (!(w = sa_gguf_writer_new()))
		return sa_fail(SA_EINTERNAL, "out of memory");
	snprintf(title, sizeof title, "StreamAdapter for %s", model->name ? model->name : "a model");
	rc = sa_gguf_writer_copy_kv(w, model->gguf, "general.architecture");
#define SET(call) if (rc == SA_OK) rc = (call)
	SET(sa_gguf_writer_set_str(w, "general.type", "adapter"));
	SET(sa_gguf_writer_set_str(w, "general.name", title));
	/* Not "lora": llama.cpp then refuses the file by name instead of
	 * failing on missing tensors. */
	SET(sa_gguf_writer_set_str(w, "adapter.type", "streamadapter"));
	SET(sa_gguf_writer_set_u32(w, "streamadapter.version",
	    a->mapping == SA_MAPPING_LSQ ? ADAPTER_VERSION_LSQ : ADAPTER_VERSION));
	SET(sa_gguf_writer_set_str(w, "streamadapter.kind", kind_name[a->mapping]));
	SET(sa_gguf_writer_set_u32(w, "streamadapter.n_layer", (uint32_t)a->n_layer));
	SET(sa_gguf_writer_set_u32(w, "streamadapter.n_head_kv", (uint32_t)a->n_head_kv));
	SET(sa_gguf_writer_set_u32(w, "streamadapter.d_head", (uint32_t)a->d_head));
	SET(sa_gguf_writer_set_u32(w, "streamadapter.rank", (uint32_t)a->rank));
	SET(sa_gguf_writer_set_u32(w, "streamadapter.chunk", (uint32_t)a->chunk));
	if (a->mapping == SA_MAPPING_LSQ) {
		SET(sa_gguf_writer_set_u32(w, "streamadapter.d_key", (uint32_t)a->d_key));
		SET(sa_gguf_writer_set_f32(w, "streamadapter.lambda", a->lambda));
		if (a->value_offset)
			SET(sa_gguf_writer_set_u32(w, "streamadapter.value_offset",
			    (uint32_t)a->value_offset));
		if (a->key_source == SA_KEYS_INPUT)
			SET(sa_gguf_writer_set_str(w, "streamadapter.key_source",
			    key_source_name[a->key_source]));
	}
	if (a->records != SA_RECORDS_PACKED)
		SET(sa_gguf_writer_set_str(w, "streamadapter.records", records_name[a->records]));
	SET(sa_gguf_writer_set_strs(w, "streamadapter.matrices", nm, names));
	hex64(hex, a->model_fingerprint);
	SET(sa_gguf_writer_set_str(w, "streamadapter.model_fingerprint", hex));
	hex64(hex, a->fingerprint);
	SET(sa_gguf_writer_set_str(w, "streamadapter.fingerprint", hex));
	SET(sa_gguf_writer_set_str(w, "streamadapter.base_model", model->name ? model->name : ""));
	for (size_t i = 0; i < adapter_tensor_count(a) && rc == SA_OK; i++) {
		adapter_tensor at;
		adapter_tensor_at(a, i, &at);
		if (at.n)
			rc = sa_gguf_writer_add_tensor(w, at.name, SA_TYPE_F32, at.nd, at.ne, *at.x);
	}
#undef SET
	if (rc == SA_OK)
		rc = sa_gguf_writer_save(w, path);
	sa_gguf_writer_free(w);
	return rc;
}

static int
get_dim(const sa_gguf *g, const char *key, int *v, const char *path)
{
	uint32_t x;
	int rc;

	if ((rc = sa_gguf_get_u32(g, key, &x)) != SA_OK)
		return rc;
	if (x > INT32_MAX)
		return sa_fail(SA_EDATA, "%s: %s = %u is too large", path, key, x);
	*v = (int)x;
	return SA_OK;
}

static int
get_hex64(const sa_gguf *g, const char *key, uint64_t *v, const char *path)
{
	char buf[17], *end;
	sa_str s;
	int rc;

	if ((rc = sa_gguf_get_str(g, key, &s)) != SA_OK)
		return rc;
	if (s.n != 16)
		return sa_fail(SA_EDATA, "%s: %s is not 16 hex digits", path, key);
	memcpy(buf, s.s, 16);
	buf[16] = '\0';
	for (int i = 0; i < 16; i++)
		if (!strchr("0123456789abcdefABCDEF", buf[i]))
			return sa_fail(SA_EDATA, "%s: %s is not 16 hex digits", path, key);
	*v = strtoull(buf, &end, 16);
	return SA_OK;
}

/* The index of s among names [n], or n. */
static int
name_index(sa_str s, const char *const *names, int n)
{
	int i = 0;

	while (i < n && !(s.n == strlen(names[i]) && !memcmp(s.s, names[i], s.n)))
		i++;
	return i;
}

/* streamadapter.records: absent in the files that pack them. */
static int
read_records(const sa_gguf *g, const char *path, int *records)
{
	sa_str s;
	int rc;

	*records = SA_RECORDS_PACKED;
	if (!sa_gguf_has(g, "streamadapter.records"))
		return SA_OK;
	if ((rc = sa_gguf_get_str(g, "streamadapter.records", &s)) != SA_OK)
		return rc;
	if ((*records = name_index(s, records_name, 2)) == 2)
		return sa_fail(SA_EDATA, "%s: unknown records '%.*s' (packed, alone)", path,
		    (int)(s.n > 32 ? 32 : s.n), s.s);
	return SA_OK;
}

/* The header fields of an adapter file, checked; tensors are not touched. */
static int
read_config(const sa_gguf *g, const char *path, int *kind, int *n_layer, int *n_head_kv,
    int *d_head, int *rank, int *chunk, int *d_key, float *lambda, int *value_offset,
    int *key_source, uint32_t *mats, uint64_t *model_fp, uint64_t *fp)
{
	sa_str s, *names = NULL;
	uint64_t n = 0;
	uint32_t version;
	int rc;

	if (!sa_gguf_has(g, "general.type"))
		return sa_fail(SA_EDATA, "%s: not an adapter (no general.type)", path);
	if ((rc = sa_gguf_get_str(g, "general.type", &s)) != SA_OK)
		return rc;
	if (s.n != 7 || memcmp(s.s, "adapter", 7) != 0)
		return sa_fail(SA_EDATA, "%s: not an adapter (general.type is %.*s)", path,
		    (int)(s.n > 32 ? 32 : s.n), s.s);
	if (!sa_gguf_has(g, "streamadapter.version")) {
		if (sa_gguf_get_str(g, "adapter.type", &s) == SA_OK)
			return sa_fail(SA_EDATA, "%s: a %.*s adapter, not a StreamAdapter adapter", path,
			    (int)(s.n > 32 ? 32 : s.n), s.s);
		return sa_fail(SA_EDATA, "%s: not a StreamAdapter adapter", path);
	}
	if ((rc = sa_gguf_get_u32(g, "streamadapter.version", &version)) != SA_OK)
		return rc;
	if (version != ADAPTER_VERSION && version != ADAPTER_VERSION_LSQ)
		return sa_fail(SA_EDATA, "%s: unsupported adapter version %u", path, version);
	/* version 1 is the pool kind, with or without the key; 2 names its kind */
	*kind = SA_MAPPING_POOL;
	if (version == ADAPTER_VERSION_LSQ || sa_gguf_has(g, "streamadapter.kind")) {
		if ((rc = sa_gguf_get_str(g, "streamadapter.kind", &s)) != SA_OK)
			return rc;
		*kind = name_index(s, kind_name, 2);
		if (*kind == 2 || (*kind == SA_MAPPING_LSQ) != (version == ADAPTER_VERSION_LSQ))
			return sa_fail(SA_EDATA, "%s: unknown mapping kind '%.*s' for version %u", path,
			    (int)(s.n > 32 ? 32 : s.n), s.s, version);
	}
	*d_key = 0;
	*lambda = 0;
	*value_offset = 0;
	if (*kind == SA_MAPPING_LSQ && ((rc = get_dim(g, "streamadapter.d_key", d_key, path)) != SA_OK ||
	    (rc = sa_gguf_get_f32(g, "streamadapter.lambda", lambda)) != SA_OK))
		return rc;
	if (*kind == SA_MAPPING_LSQ && sa_gguf_has(g, "streamadapter.value_offset")) {
		uint32_t o;
		if ((rc = sa_gguf_get_u32(g, "streamadapter.value_offset", &o)) != SA_OK)
			return rc;
		if (o > MAX_VALUE_OFFSET)
			return sa_fail(SA_EDATA, "%s: value_offset %u out of range 0..%d", path, o,
			    MAX_VALUE_OFFSET);
		*value_offset = (int)o;
	}
	*key_source = SA_KEYS_KV;
	if (sa_gguf_has(g, "streamadapter.key_source")) {
		if ((rc = sa_gguf_get_str(g, "streamadapter.key_source", &s)) != SA_OK)
			return rc;
		if ((*key_source = name_index(s, key_source_name, 2)) == 2)
			return sa_fail(SA_EDATA, "%s: unknown key_source '%.*s' (keys, input)", path,
			    (int)(s.n > 32 ? 32 : s.n), s.s);
	}
	if ((rc = get_dim(g, "streamadapter.n_layer", n_layer, path)) != SA_OK ||
	    (rc = get_dim(g, "streamadapter.n_head_kv", n_head_kv, path)) != SA_OK ||
	    (rc = get_dim(g, "streamadapter.d_head", d_head, path)) != SA_OK ||
	    (rc = get_dim(g, "streamadapter.rank", rank, path)) != SA_OK ||
	    (rc = get_dim(g, "streamadapter.chunk", chunk, path)) != SA_OK ||
	    (rc = get_hex64(g, "streamadapter.model_fingerprint", model_fp, path)) != SA_OK ||
	    (rc = get_hex64(g, "streamadapter.fingerprint", fp, path)) != SA_OK ||
	    (rc = sa_gguf_get_strs(g, "streamadapter.matrices", &n, &names)) != SA_OK)
		return rc;
	*mats = 0;
	for (uint64_t i = 0; i < n; i++) {
		char buf[32];
		int m;
		if (names[i].n >= sizeof buf) {
			free(names);
			return sa_fail(SA_EDATA, "%s: unknown matrix in streamadapter.matrices", path);
		}
		memcpy(buf, names[i].s, names[i].n);
		buf[names[i].n] = '\0';
		if ((m = sa_mat_from_name(buf)) < 0) {
			free(names);
			return sa_fail(SA_EDATA, "%s: unknown matrix %s in streamadapter.matrices", path, buf);
		}
		if (sa_adapted(*mats, m)) {
			free(names);
			return sa_fail(SA_EDATA, "%s: matrix %s listed twice", path, buf);
		}
		*mats |= 1u << m;
	}
	free(names);
	return check_config(*kind, *n_layer, *n_head_kv, *d_head, *rank, *chunk, *d_key, *lambda,
	    *key_source, *mats, path);
}

/* Tensor t of (l, m), checked for type and the dims the config implies
 * (W1's rows and W2's columns are read from the file: want 0 there). */
static int
find_named(const sa_gguf *g, const char *path, const char *name, const int64_t want[4],
    int nd, const sa_tensor_info **out)
{
	const sa_tensor_info *ti;

	if (!(ti = sa_gguf_tensor(g, name)))
		return sa_fail(SA_EDATA, "%s: missing tensor %s", path, name);
	if (ti->type != SA_TYPE_F32)
		return sa_fail(SA_EDATA, "%s: tensor %s is %s, not F32", path, name, sa_type_name(ti->type));
	for (int i = 0; i < 4; i++)
		if ((i >= nd && ti->ne[i] != 1) || (want[i] && ti->ne[i] != want[i]))
			return sa_fail(SA_EDATA, "%s: tensor %s has shape {%lld, %lld, %lld, %lld}, "
			    "want {%lld, %lld, %lld, %lld}", path, name,
			    (long long)ti->ne[0], (long long)ti->ne[1], (long long)ti->ne[2], (long long)ti->ne[3],
			    (long long)want[0], (long long)want[1], (long long)want[2], (long long)want[3]);
	*out = ti;
	return SA_OK;
}

static int
find_tensor(const sa_gguf *g, const char *path, int l, int m, int t, const int64_t want[4],
    int nd, const sa_tensor_info **out)
{
	char name[64];

	tensor_name(name, sizeof name, l, m, t);
	return find_named(g, path, name, want, nd, out);
}

/* Copy a tensor of n floats (checked by find_named) into dst. */
static int
copy_tensor(const sa_tensor_info *ti, const char *path, const char *name, float *dst, size_t n)
{
	if (ti->nbytes != n * sizeof(float))
		return sa_fail(SA_EDATA, "%s: tensor %s has %zu bytes", path, name, ti->nbytes);
	memcpy(dst, ti->data, n * sizeof(float));
	return SA_OK;
}

int
sa_adapter_load(sa_adapter **out, const char *path)
{
	sa_gguf *g = NULL;
	sa_adapter *a = NULL, shape;
	int kind = 0, n_layer = 0, n_head_kv = 0, d_head = 0, rank = 0, chunk = 0, d_key = 0, rc;
	int value_offset = 0, key_source = SA_KEYS_KV;
	float lambda = 0;
	int *d_out = NULL, *d_in = NULL;
	uint32_t mats = 0;
	uint64_t model_fp, fp, n_expect = 0;
	size_t n;

	*out = NULL;
	if ((rc = sa_gguf_open(&g, path)) != SA_OK)
		return rc;
	path = sa_gguf_path(g);
	if ((rc = read_config(g, path, &kind, &n_layer, &n_head_kv, &d_head, &rank, &chunk, &d_key,
	    &lambda, &value_offset, &key_source, &mats, &model_fp, &fp)) != SA_OK)
		goto done;

	/* W1 and W2 carry the widths of their matrix; read them first. */
	n = (size_t)n_layer * SA_NMAT;
	d_out = sa_calloc(n, sizeof *d_out);
	d_in = sa_calloc(n, sizeof *d_in);
	if (!d_out || !d_in) {
		rc = SA_EINTERNAL;
		goto done;
	}
	memset(&shape, 0, sizeof shape);
	shape.mapping = kind;
	shape.d_key = d_key;
	shape.n_head_kv = n_head_kv;
	shape.d_head = d_head;
	shape.rank = rank;
	shape.key_source = key_source;
	shape.mats = mats;
	for (int l = 0; l < n_layer; l++)
		for (int m = 0; m < SA_NMAT; m++) {
			const sa_tensor_info *w1, *w2;
			sa_adapter_mat am = { 0 };
			int64_t ne[4];
			int nd;
			if (!sa_adapted(mats, m))
				continue;
			nd = tensor_dims(&shape, &am, T_W1, ne);
			if ((rc = find_tensor(g, path, l, m, T_W1, ne, nd, &w1)) != SA_OK)
				goto done;
			nd = tensor_dims(&shape, &am, T_W2, ne);
			if ((rc = find_tensor(g, path, l, m, T_W2, ne, nd, &w2)) != SA_OK)
				goto done;
			if (w1->ne[1] > MAX_WIDTH || w2->ne[0] > MAX_WIDTH) {
				rc = sa_fail(SA_EDATA, "%s: layer %d %s is too wide", path, l, sa_mat_name(m));
				goto done;
			}
			d_out[(size_t)l * SA_NMAT + m] = (int)w1->ne[1];
			d_in[(size_t)l * SA_NMAT + m] = (int)w2->ne[0];
			/* Every tensor in the file with its shape before anything is
			 * allocated: the header alone (rank 65536 of heads of 4096)
			 * could ask for gigabytes, and tensors never share bytes, so
			 * what is checked here is no larger than the file. */
			am.d_out = d_out[(size_t)l * SA_NMAT + m];
			am.d_in = d_in[(size_t)l * SA_NMAT + m];
			for (int t = T_Q; kind == SA_MAPPING_POOL && t <= T_B; t++) {
				const sa_tensor_info *ti;
				nd = tensor_dims(&shape, &am, t, ne);
				if ((rc = find_tensor(g, path, l, m, t, ne, nd, &ti)) != SA_OK)
					goto done;
			}
			n_expect += kind == SA_MAPPING_POOL ? T_N : 2;
		}
	for (int l = 0; kind == SA_MAPPING_LSQ && l < n_layer; l++) {
		int km = sa_adapter_key_mat(&shape);
		int64_t dx = km < 0 ? (int64_t)n_head_kv * d_head : d_in[(size_t)l * SA_NMAT + km];
		size_t nm[M_N];
		memory_sizes(&shape, (size_t)dx, nm);
		for (int t = 0; t < M_N; t++) {
			const sa_tensor_info *ti;
			char name[64];
			int64_t ne[4];
			int nd = memory_dims(&shape, dx, t, ne);
			if (!nm[t])
				continue;
			memory_name(name, sizeof name, l, t);
			if ((rc = find_named(g, path, name, ne, nd, &ti)) != SA_OK)
				goto done;
			n_expect++;
		}
	}
	if (sa_gguf_n_tensors(g) != n_expect) {
		rc = sa_fail(SA_EDATA, "%s: %llu tensors, the configuration has %llu", path,
		    (unsigned long long)sa_gguf_n_tensors(g), (unsigned long long)n_expect);
		goto done;
	}
	if ((rc = sa_adapter_alloc_kind(&a, kind, n_layer, n_head_kv, d_head, rank, chunk, d_key,
	    lambda, key_source, mats, d_out, d_in)) != SA_OK) {
		if (rc == SA_EDATA)
			rc = sa_fail(SA_EDATA, "%s: %s", path, sa_error());
		goto done;
	}
	a->model_fingerprint = model_fp;
	a->value_offset = value_offset;
	if ((rc = read_records(g, path, &a->records)) != SA_OK)
		goto done;
	for (size_t i = 0; i < adapter_tensor_count(a); i++) {
		const sa_tensor_info *ti;
		adapter_tensor at;
		adapter_tensor_at(a, i, &at);
		if (at.n && ((rc = find_named(g, path, at.name, at.ne, at.nd, &ti)) != SA_OK ||
		    (rc = copy_tensor(ti, path, at.name, *at.x, at.n)) != SA_OK))
			goto done;
	}
	if ((rc = check_finite(a, path)) != SA_OK)
		goto done;
	a->fingerprint = sa_adapter_fingerprint(a);
	if (a->fingerprint != fp) {
		rc = sa_fail(SA_EDATA, "%s: fingerprint mismatch (the file says %016llx, its data "
		    "gives %016llx): corrupted or edited", path,
		    (unsigned long long)fp, (unsigned long long)a->fingerprint);
		goto done;
	}
	if (!(a->path = strdup(path))) {
		rc = sa_fail(SA_EINTERNAL, "out of memory");
		goto done;
	}
	*out = a;
	a = NULL;
done:
	free(d_out);
	free(d_in);
	sa_adapter_free(a);
	sa_gguf_close(g);
	return rc;
}
