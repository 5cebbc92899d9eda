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
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sa.h"
#include "adapter_impl.h"

#define ADAPTER_VERSION 1u

/* The same limits a delta header obeys: an adapter must be able to make one. */
#define MAX_LAYER 4096
#define MAX_HEAD_KV 4096
#define MAX_D_HEAD 4096
#define MAX_RANK 65536
#define MAX_CHUNK (1 << 24)
#define MAX_WIDTH (1 << 20)

enum { T_Q, T_G, T_B, T_W1, T_W2, T_N };
static const char *const tensor_suffix[T_N] = { "sa_q", "sa_g", "sa_b", "sa_w1", "sa_w2" };

static int
check_config(int n_layer, int n_head_kv, int d_head, int rank, int chunk, uint32_t mats,
    const char *name)
{
	if (n_layer < 1 || n_layer > MAX_LAYER)
		return sa_fail(SA_EDATA, "%s: n_layer %d out of range 1..%d", name, n_layer, MAX_LAYER);
	if (n_head_kv < 1 || n_head_kv > MAX_HEAD_KV)
		return sa_fail(SA_EDATA, "%s: n_head_kv %d out of range 1..%d", name, n_head_kv, MAX_HEAD_KV);
	if (d_head < 1 || d_head > MAX_D_HEAD)
		return sa_fail(SA_EDATA, "%s: d_head %d out of range 1..%d", name, d_head, MAX_D_HEAD);
	if (rank < 1 || rank > MAX_RANK)
		return sa_fail(SA_EDATA, "%s: rank %d out of range 1..%d", name, rank, MAX_RANK);
	if (chunk < 1 || chunk > MAX_CHUNK)
		return sa_fail(SA_EDATA, "%s: chunk %d out of range 1..%d", name, chunk, MAX_CHUNK);
	if (mats == 0 || mats >> SA_NMAT)
		return sa_fail(SA_EDATA, "%s: bad matrix set 0x%x", name, (unsigned)mats);
	return SA_OK;
}

/* Element counts of the five tensors of one (l, m). */
static void
tensor_sizes(const sa_adapter *a, int d_out, int d_in, size_t n[T_N])
{
	size_t Hk = a->n_head_kv, r = a->rank, dh = a->d_head;

	n[T_Q] = Hk * r * dh;
	n[T_G] = Hk * dh;
	n[T_B] = Hk * r;
	n[T_W1] = (size_t)d_out * Hk * dh;
	n[T_W2] = r * (size_t)d_in;
}

static float **
tensor_ptr(sa_adapter_mat *am, int t)
{
	switch (t) {
	case T_Q: return &am->Q;
	case T_G: return &am->g;
	case T_B: return &am->b;
	case T_W1: return &am->W1;
	default: return &am->W2;
	}
}

void
sa_adapter_free(sa_adapter *a)
{
	if (!a)
		return;
	free(a->path);
	free(a->mat);
	free(a->arena);
	free(a);
}

int
sa_adapter_alloc(sa_adapter **out, int n_layer, int n_head_kv, int d_head,
    int rank, int chunk, uint32_t mats, const int *d_out, const int *d_in)
{
	sa_adapter *a;
	size_t total = 0, n[T_N];
	float *p;
	int rc;

	*out = NULL;
	if ((rc = check_config(n_layer, n_head_kv, d_head, rank, chunk, mats, "adapter")) != SA_OK)
		return rc;
	if (!(a = sa_calloc(1, sizeof *a)))
		return SA_EINTERNAL;
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
			if (!(mats >> m & 1))
				continue;
			if (d_out[i] < 1 || d_out[i] > MAX_WIDTH || d_in[i] < 1 || d_in[i] > MAX_WIDTH) {
				sa_adapter_free(a);
				return sa_fail(SA_EDATA, "adapter: layer %d %s has a bad shape %d x %d",
				    l, sa_mat_name(m), d_out[i], d_in[i]);
			}
			a->mat[i].d_out = d_out[i];
			a->mat[i].d_in = d_in[i];
			tensor_sizes(a, d_out[i], d_in[i], n);
			for (int t = 0; t < T_N; t++)
				total += n[t];
		}
	/* One block for every tensor: loading and freeing stay one call each. */
	if (!(a->arena = sa_calloc(total, sizeof(float)))) {
		sa_adapter_free(a);
		return SA_EINTERNAL;
	}
	p = a->arena;
	for (int l = 0; l < n_layer; l++)
		for (int m = 0; m < SA_NMAT; m++) {
			sa_adapter_mat *am = SA_ADAPTER_MAT(a, l, m);
			if (!(mats >> m & 1))
				continue;
			tensor_sizes(a, am->d_out, am->d_in, n);
			for (int t = 0; t < T_N; t++) {
				*tensor_ptr(am, t) = p;
				p += n[t];
			}
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
	size_t n[T_N];

	h = sa_hash64(h, "streamadapter", 13);
	h = hash_u64(h, ADAPTER_VERSION);
	h = hash_u64(h, (uint64_t)a->n_layer);
	h = hash_u64(h, (uint64_t)a->n_head_kv);
	h = hash_u64(h, (uint64_t)a->d_head);
	h = hash_u64(h, (uint64_t)a->rank);
	h = hash_u64(h, (uint64_t)a->chunk);
	h = hash_u64(h, a->mats);
	h = hash_u64(h, a->model_fingerprint);
	for (int l = 0; l < a->n_layer; l++)
		for (int m = 0; m < SA_NMAT; m++) {
			sa_adapter_mat *am = SA_ADAPTER_MAT(a, l, m);
			if (!(a->mats >> m & 1))
				continue;
			h = hash_u64(h, (uint64_t)am->d_out);
			h = hash_u64(h, (uint64_t)am->d_in);
			tensor_sizes(a, am->d_out, am->d_in, n);
			/* Floats hash as their little-endian bytes (the file's). */
			for (int t = 0; t < T_N; t++)
				h = sa_hash64(h, *tensor_ptr(am, t), n[t] * sizeof(float));
		}
	return h;
}

/* ------------------------------------------------------ initialisation */

static uint64_t
splitmix64(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* Uniform in (0, 1): never 0, so log() below is finite. */
static double
uniform(uint64_t *s)
{
	return ((splitmix64(s) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

/* n draws of N(0, std^2), Box-Muller. */
static void
fill_normal(float *x, size_t n, double std, uint64_t *s)
{
	for (size_t i = 0; i < n; i += 2) {
		double u = uniform(s), v = uniform(s);
		double rad = std * sqrt(-2.0 * log(u));
		x[i] = (float)(rad * cos(2 * M_PI * v));
		if (i + 1 < n)
			x[i + 1] = (float)(rad * sin(2 * M_PI * v));
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

	for (int l = 0; l < a->n_layer; l++)
		for (int m = 0; m < SA_NMAT; m++) {
			sa_adapter_mat *am = SA_ADAPTER_MAT(a, l, m);
			if (!(a->mats >> m & 1))
				continue;
			tensor_sizes(a, am->d_out, am->d_in, n);
			for (int t = 0; t < T_N; t++) {
				uint64_t s = seed;
				s = splitmix64(&s) ^ ((uint64_t)l << 32 | (uint64_t)m << 8 | (uint64_t)t);
				s = splitmix64(&s);
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
					fill_normal(am->W2, n[t], 1.0 / sqrt((double)am->d_in), &s);
					break;
				}
			}
		}
	a->fingerprint = sa_adapter_fingerprint(a);
}

int
sa_adapter_init(sa_adapter **out, const sa_model *model, int rank, int chunk,
    uint32_t mats, uint64_t seed, float w1_scale)
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
		if (!(mats >> m & 1))
			continue;
		if ((rc = sa_model_mat_dims(model, m, &o, &i)) != SA_OK)
			goto done;
		for (int l = 0; l < c->n_layer; l++) {
			d_out[(size_t)l * SA_NMAT + m] = o;
			d_in[(size_t)l * SA_NMAT + m] = i;
		}
	}
	rc = sa_adapter_alloc(out, c->n_layer, c->n_head_kv, c->d_head, rank, chunk,
	    mats, d_out, d_in);
	/* The limits are the adapter's, but a bad rank or chunk is the caller's. */
	if (rc == SA_EDATA && (rank < 1 || rank > MAX_RANK || chunk < 1 || chunk > MAX_CHUNK))
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
			if (!(a->mats >> m & 1))
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

static void
tensor_name(char *buf, size_t n, int l, int m, int t)
{
	snprintf(buf, n, "blk.%d.%s.%s", l, sa_mat_name(m), tensor_suffix[t]);
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

static int
check_finite(const sa_adapter *a, const char *name)
{
	size_t n[T_N];

	for (int l = 0; l < a->n_layer; l++)
		for (int m = 0; m < SA_NMAT; m++) {
			sa_adapter_mat *am = SA_ADAPTER_MAT(a, l, m);
			if (!(a->mats >> m & 1))
				continue;
			tensor_sizes(a, am->d_out, am->d_in, n);
			for (int t = 0; t < T_N; t++) {
				const float *x = *tensor_ptr(am, t);
				for (size_t i = 0; i < n[t]; i++)
					if (!isfinite(x[i])) {
						char tn[64];
						tensor_name(tn, sizeof tn, l, m, t);
						return sa_fail(SA_EDATA, "%s: tensor %s holds a non-finite value",
						    name, tn);
					}
			}
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
		if (a->mats >> m & 1) {
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
	SET(sa_gguf_writer_set_u32(w, "streamadapter.version", ADAPTER_VERSION));
	SET(sa_gguf_writer_set_u32(w, "streamadapter.n_layer", (uint32_t)a->n_layer));
	SET(sa_gguf_writer_set_u32(w, "streamadapter.n_head_kv", (uint32_t)a->n_head_kv));
	SET(sa_gguf_writer_set_u32(w, "streamadapter.d_head", (uint32_t)a->d_head));
	SET(sa_gguf_writer_set_u32(w, "streamadapter.rank", (uint32_t)a->rank));
	SET(sa_gguf_writer_set_u32(w, "streamadapter.chunk", (uint32_t)a->chunk));
	SET(sa_gguf_writer_set_strs(w, "streamadapter.matrices", nm, names));
	hex64(hex, a->model_fingerprint);
	SET(sa_gguf_writer_set_str(w, "streamadapter.model_fingerprint", hex));
	hex64(hex, a->fingerprint);
	SET(sa_gguf_writer_set_str(w, "streamadapter.fingerprint", hex));
	SET(sa_gguf_writer_set_str(w, "streamadapter.base_model", model->name ? model->name : ""));
	for (int l = 0; l < a->n_layer && rc == SA_OK; l++)
		for (int m = 0; m < SA_NMAT && rc == SA_OK; m++) {
			const sa_adapter_mat *am = SA_ADAPTER_MAT(a, l, m);
			if (!(a->mats >> m & 1))
				continue;
			for (int t = 0; t < T_N && rc == SA_OK; t++) {
				char name[64];
				int64_t ne[4];
				int nd = tensor_dims(a, am, t, ne);
				tensor_name(name, sizeof name, l, m, t);
				rc = sa_gguf_writer_add_tensor(w, name, SA_TYPE_F32, nd, ne,
				    *tensor_ptr((sa_adapter_mat *)am, t));
			}
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

/* The header fields of an adapter file, checked; tensors are not touched. */
static int
read_config(const sa_gguf *g, const char *path, int *n_layer, int *n_head_kv, int *d_head,
    int *rank, int *chunk, uint32_t *mats, uint64_t *model_fp, uint64_t *fp)
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
	if (version != ADAPTER_VERSION)
		return sa_fail(SA_EDATA, "%s: unsupported adapter version %u", path, version);
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
		if (*mats >> m & 1) {
			free(names);
			return sa_fail(SA_EDATA, "%s: matrix %s listed twice", path, buf);
		}
		*mats |= 1u << m;
	}
	free(names);
	return check_config(*n_layer, *n_head_kv, *d_head, *rank, *chunk, *mats, path);
}

/* Tensor t of (l, m), checked for type and the dims the config implies
 * (W1's rows and W2's columns are read from the file: want 0 there). */
static int
find_tensor(const sa_gguf *g, const char *path, int l, int m, int t, const int64_t want[4],
    int nd, const sa_tensor_info **out)
{
	const sa_tensor_info *ti;
	char name[64];

	tensor_name(name, sizeof name, l, m, t);
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

int
sa_adapter_load(sa_adapter **out, const char *path)
{
	sa_gguf *g = NULL;
	sa_adapter *a = NULL, shape;
	int n_layer = 0, n_head_kv = 0, d_head = 0, rank = 0, chunk = 0, rc;
	int *d_out = NULL, *d_in = NULL;
	uint32_t mats = 0;
	uint64_t model_fp, fp, n_expect = 0;
	size_t n;

	*out = NULL;
	if ((rc = sa_gguf_open(&g, path)) != SA_OK)
		return rc;
	path = sa_gguf_path(g);
	if ((rc = read_config(g, path, &n_layer, &n_head_kv, &d_head, &rank, &chunk, &mats,
	    &model_fp, &fp)) != SA_OK)
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
	shape.n_head_kv = n_head_kv;
	shape.d_head = d_head;
	shape.rank = rank;
	for (int l = 0; l < n_layer; l++)
		for (int m = 0; m < SA_NMAT; m++) {
			const sa_tensor_info *w1, *w2;
			sa_adapter_mat am = { 0 };
			int64_t ne[4];
			int nd;
			if (!(mats >> m & 1))
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
			for (int t = T_Q; t <= T_B; t++) {
				const sa_tensor_info *ti;
				nd = tensor_dims(&shape, &am, t, ne);
				if ((rc = find_tensor(g, path, l, m, t, ne, nd, &ti)) != SA_OK)
					goto done;
			}
			n_expect += T_N;
		}
	if (sa_gguf_n_tensors(g) != n_expect) {
		rc = sa_fail(SA_EDATA, "%s: %llu tensors, the configuration has %llu", path,
		    (unsigned long long)sa_gguf_n_tensors(g), (unsigned long long)n_expect);
		goto done;
	}
	if ((rc = sa_adapter_alloc(&a, n_layer, n_head_kv, d_head, rank, chunk, mats, d_out, d_in)) != SA_OK) {
		if (rc == SA_EDATA)
			rc = sa_fail(SA_EDATA, "%s: %s", path, sa_error());
		goto done;
	}
	a->model_fingerprint = model_fp;
	for (int l = 0; l < n_layer; l++)
		for (int m = 0; m < SA_NMAT; m++) {
			sa_adapter_mat *am = SA_ADAPTER_MAT(a, l, m);
			size_t sz[T_N];
			if (!(mats >> m & 1))
				continue;
			tensor_sizes(a, am->d_out, am->d_in, sz);
			for (int t = 0; t < T_N; t++) {
				const sa_tensor_info *ti;
				int64_t ne[4];
				int nd = tensor_dims(a, am, t, ne);
				float *dst = *tensor_ptr(am, t);
				if ((rc = find_tensor(g, path, l, m, t, ne, nd, &ti)) != SA_OK)
					goto done;
				if (ti->nbytes != sz[t] * sizeof(float)) {
					rc = sa_fail(SA_EDATA, "%s: tensor %s.%s has %zu bytes", path,
					    sa_mat_name(m), tensor_suffix[t], ti->nbytes);
					goto done;
				}
				memcpy(dst, ti->data, sz[t] * sizeof(float));
			}
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
