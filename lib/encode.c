/*
 * encode.c - the context mapping: the base model runs over a segment, and a
 * hook on its forward pass turns each layer's keys and values into the
 * adapter's context state (doc/design.md, "The context mapping"), layer by
 * layer as the pass goes, so no layer's K/V outlives its own hook call.
 * A memory keyed by the adapted matrix's input keeps the layer's values
 * until the input hook has handed over that input for the whole segment,
 * then writes.
 *
 * The state is kept in double and written to the float delta on demand: the
 * recurrence runs over many chunks, and double keeps its rounding far below
 * what the delta file can show.  Every sum runs in a fixed order, and each
 * (matrix, head) of a layer runs whole on one thread of the pool, so the
 * mapping gives the same bits whatever the thread count and whatever vector
 * unit the CPU has.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sa.h"
#include "expf_impl.h"
#include "kernels_impl.h"

/* Products of two floats are exact in double; keep the compiler from fusing
 * the other multiply-adds, so every build rounds the same way (the kernels
 * of the mapping are kernels_float.c's, built so too). */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

struct sa_encoder {
	sa_model *model;
	const sa_adapter *a;
	sa_delta *delta;      /* float copy of the state, refreshed by sa_encoder_delta */
	double *h, *P;        /* [n_used][Hk][r][dh], [n_used][Hk][r];
	                       * LSQ: G [n_layer][Hk][dh][dk], S [n_layer][Hk][dk][dk] */
	int *pair;            /* [n_layer * SA_NMAT]: index of (l, m) in h/P, or -1 */
	sa_kvcache *st;
	int key_mat;          /* LSQ keyed by a matrix's input: that matrix, else -1 */
	float *X, *V;         /* then [cap][d_in], [cap][Dkv]: the layer's input and values */
	int cap, x_rows;      /* rows X and V hold; rows of the layer's input so far */
	int x_layers;         /* layers written from their input in this segment */
	int seg_n;            /* tokens of the segment being fed */
	int rc;               /* first failure inside the hook */
	const sa_float_kernels *kern;
};

/* Scratch of map_head, in doubles: Q [r][dh], K and V [C][dh], sc [r][C],
 * S [r][dh], inv [r]. */
static size_t
scratch_size(const sa_adapter *a)
{
	size_t r = (size_t)a->rank, C = (size_t)a->chunk, dh = (size_t)a->d_head;

	return r * dh + 2 * C * dh + r * C + r * dh + r;
}

/*
 * One chunk of c tokens, one KV head:
 *   Q  [r][dh]            learned queries of the head
 *   g  [dh], b [r]        gate weights and biases of the head
 *   K, V [c][dh]          the chunk's keys and values for this head
 *   h  [r][dh], P [r]     state: h = a*h + S, P = P*a
 *   sc [r][c], S [r][dh], inv [r]   scratch
 * S[i] = softmax_t(Q[i].K[t] / sqrt(dh)) V,  a[i] = sigmoid(g.S[i] + b[i]).
 */
static void
chunk_head(const sa_float_kernels *kern, const double *Q, const float *g, const float *b,
    const double *K, const double *V, int c, int r, int dh, double *h, double *P,
    double *sc, double *S, double *inv)
{
	double scale = 1.0 / sqrt((double)dh);

	kern->scores(Q, K, r, c, dh, sc);
	/* Unnormalised weights into the mix, then one division per row. */
	for (int i = 0; i < r; i++)
		inv[i] = 1.0 / kern->softmax(sc + (size_t)i * c, c, scale);
	kern->mix(sc, V, r, c, dh, S);
	for (int i = 0; i < r; i++) {
		double *Si = S + (size_t)i * dh, *hi = h + (size_t)i * dh, z = b[i], a;

		for (int j = 0; j < dh; j++)
			Si[j] *= inv[i];
		for (int j = 0; j < dh; j++)
			z += g[j] * Si[j];
		if (z >= 0) {
			a = 1.0 / (1.0 + exp_neg(-z));
		} else {
			a = exp_neg(z);
			a = a / (1.0 + a);
		}
		for (int j = 0; j < dh; j++)
			hi[j] = a * hi[j] + Si[j];
		P[i] *= a;
	}
}

/*
 * Head hd of matrix (layer, mat) over a segment of n tokens:
 *   k, v [n][Hk*dh], h [r][dh] and P [r] of the head.
 * Chunks of C tokens from the segment's start, the last one shorter, in order.
 * scratch: scratch_size(a) doubles.
 */
static void
map_head(const sa_float_kernels *kern, const sa_adapter *a, const sa_adapter_mat *am, int hd,
    const float *k, const float *v, int n, double *h, double *P, double *scratch)
{
	int Hk = a->n_head_kv, dh = a->d_head, r = a->rank, C = a->chunk, ld = Hk * dh;
	const float *Qf = am->Q + (size_t)hd * r * dh;
	const float *g = am->g + (size_t)hd * dh;
	const float *b = am->b + (size_t)hd * r;
	double *Q = scratch, *K = Q + (size_t)r * dh, *V = K + (size_t)C * dh;
	double *sc = V + (size_t)C * dh, *S = sc + (size_t)r * C, *inv = S + (size_t)r * dh;

	kern->widen(Qf, Q, r * dh);
	for (int t0 = 0; t0 < n; t0 += C) {
		int c = n - t0 < C ? n - t0 : C;
		for (int t = 0; t < c; t++) {
			size_t at = (size_t)(t0 + t) * ld + (size_t)hd * dh;
			kern->widen(k + at, K + (size_t)t * dh, dh);
			kern->widen(v + at, V + (size_t)t * dh, dh);
		}
		chunk_head(kern, Q, g, b, K, V, c, r, dh, h, P, sc, S, inv);
	}
}

/*
 * A segment of n tokens for matrix (layer, mat):
 *   k, v [n][Hk*dh], h [Hk][r][dh], P [Hk][r]
 * Heads are independent; one after the other here.
 */
int
sa_context_map(const sa_adapter *a, int layer, int mat, const float *k,
    const float *v, int n, double *h, double *P)
{
	const sa_float_kernels *kern = sa_kernels_float();
	int Hk = a->n_head_kv, dh = a->d_head, r = a->rank;
	double *scratch;

	if (layer < 0 || layer >= a->n_layer || mat < 0 || mat >= SA_NMAT ||
	    !sa_adapted(a->mats, mat))
		return sa_fail(SA_EINTERNAL, "context map: layer %d %s is not adapted",
		    layer, mat >= 0 && mat < SA_NMAT ? sa_mat_name(mat) : "?");
	if (!(scratch = sa_malloc(scratch_size(a) * sizeof *scratch)))
		return SA_EINTERNAL;
	for (int hd = 0; hd < Hk; hd++)
		map_head(kern, a, SA_ADAPTER_MAT(a, layer, mat), hd, k, v, n,
		    h + (size_t)hd * r * dh, P + (size_t)hd * r, scratch);
	free(scratch);
	return SA_OK;
}

/* ------------------------------------------------------------------ encoder */

/* One layer's work for the pool: a chunk of the job is one (matrix, head)
 * pair, run whole by one thread, so which thread runs it changes nothing. */
typedef struct layer_job {
	sa_encoder *e;
	int layer, n;
	int rc;                    /* LSQ: a failure of a head (out of memory) */
	int mat[SA_NMAT];          /* adapted matrices of the layer */
	const float *k, *v;        /* LSQ: k the memory's keys, the layer's or the input */
	double *scratch;           /* [threads][scratch_size] */
} layer_job;

/*
 * The state's blocks and their sizes in doubles: one per adapted (l, m)
 * for the pool kind, h [Hk][r][dh] and P [Hk][r]; one per layer for the
 * memory, G [Hk][dh][dk] and S [Hk][dk][dk].
 */
static void
block_sizes(const sa_adapter *a, size_t *hs, size_t *ps)
{
	size_t Hk = a->n_head_kv, dh = a->d_head, dk = a->d_key;

	*hs = a->mapping == SA_MAPPING_LSQ ? Hk * dh * dk : Hk * a->rank * dh;
	*ps = a->mapping == SA_MAPPING_LSQ ? Hk * dk * dk : Hk * a->rank;
}

/* Block p's floats in the delta, (l, m)'s or layer l's. */
static float *
delta_block(sa_delta *d, const sa_adapter *a, int l, int m, int state)
{
	if (a->mapping == SA_MAPPING_LSQ)
		return state ? sa_delta_G(d, l) : sa_delta_S(d, l);
	return state ? sa_delta_h(d, l, m) : sa_delta_P(d, l, m);
}

/* LSQ: a chunk is one head's memory of the layer. */
static void
memory_task(void *arg, int ith, int item, int n_items)
{
	layer_job *job = arg;
	const sa_adapter *a = job->e->a;
	sa_memory_params mp = sa_adapter_memory_params(a, job->layer);
	size_t hs, ps;
	int rc;

	(void)ith;
	(void)n_items;
	block_sizes(a, &hs, &ps);
	rc = sa_memory_write_head(&mp, item, job->k, job->v, job->n,
	    job->e->h + job->layer * hs + (size_t)item * a->d_head * a->d_key,
	    job->e->P + job->layer * ps + (size_t)item * a->d_key * a->d_key);
	if (rc != SA_OK)
		job->rc = rc;
}

static void
layer_task(void *arg, int ith, int item, int n_items)
{
	layer_job *job = arg;
	const sa_adapter *a = job->e->a;
	int Hk = a->n_head_kv, r = a->rank, dh = a->d_head;
	int m = job->mat[item / Hk], hd = item % Hk;
	int p = job->e->pair[(size_t)job->layer * SA_NMAT + m];
	double *scratch = job->scratch + (size_t)ith * scratch_size(a);

	(void)n_items;
	map_head(job->e->kern, a, SA_ADAPTER_MAT(a, job->layer, m), hd, job->k, job->v,
	    job->n, job->e->h + (size_t)p * Hk * r * dh + (size_t)hd * r * dh,
	    job->e->P + (size_t)p * Hk * r + (size_t)hd * r, scratch);
}

static void
encode_hook(void *ctx, int layer, int n, const float *k, const float *v)
{
	sa_encoder *e = ctx;
	const sa_adapter *a = e->a;
	layer_job job = { .e = e, .layer = layer, .n = n, .k = k, .v = v };
	int n_mats = 0;

	if (e->rc != SA_OK)
		return;
	/* The forward pass hands over the whole segment at once; chunks are
	 * cut from the segment's start, so a partial call would misplace them. */
	if (n != e->seg_n || layer < 0 || layer >= a->n_layer) {
		e->rc = sa_fail(SA_EINTERNAL, "encoder: layer %d hook got %d tokens, expected %d",
		    layer, n, e->seg_n);
		return;
	}
	if (e->key_mat >= 0) {
		/* the values wait for the input, which comes later in the layer */
		memcpy(e->V, v, (size_t)n * a->n_head_kv * a->d_head * sizeof *e->V);
		e->x_rows = 0;
		return;
	}
	if (a->mapping == SA_MAPPING_LSQ) {
		sa_pool_run_chunks(memory_task, &job, a->n_head_kv);
		e->rc = job.rc;
		return;
	}
	for (int m = 0; m < SA_NMAT; m++)
		if (e->pair[(size_t)layer * SA_NMAT + m] >= 0)
			job.mat[n_mats++] = m;
	if (n_mats == 0)
		return;
	if (!(job.scratch = sa_malloc((size_t)sa_get_threads() * scratch_size(a) *
	    sizeof *job.scratch))) {
		e->rc = SA_EINTERNAL;
		return;
	}
	sa_pool_run_chunks(layer_task, &job, n_mats * a->n_head_kv);
	free(job.scratch);
}

/* Rows i0.. of the key matrix's input of a layer; the memory writes once
 * the segment's rows are all in. */
static void
input_hook(void *ctx, int layer, int i0, int n, const float *x)
{
	sa_encoder *e = ctx;
	const sa_adapter *a = e->a;
	size_t d_in = (size_t)SA_ADAPTER_MAT(a, layer, e->key_mat)->d_in;
	layer_job job = { .e = e, .layer = layer, .n = e->seg_n, .k = e->X, .v = e->V };

	if (e->rc != SA_OK)
		return;
	if (i0 != e->x_rows || i0 + n > e->seg_n) {
		e->rc = sa_fail(SA_EINTERNAL, "encoder: layer %d input rows %d..%d, expected from %d of %d",
		    layer, i0, i0 + n, e->x_rows, e->seg_n);
		return;
	}
	memcpy(e->X + (size_t)i0 * d_in, x, (size_t)n * d_in * sizeof *e->X);
	if ((e->x_rows += n) < e->seg_n)
		return;
	sa_pool_run_chunks(memory_task, &job, a->n_head_kv);
	e->rc = job.rc;
	e->x_layers++;
}

int
sa_encoder_new(sa_encoder **out, sa_model *model, const sa_adapter *a, const sa_delta *start)
{
	sa_encoder *e;
	size_t hs, ps;
	int rc, n_used = 0;

	block_sizes(a, &hs, &ps);
	*out = NULL;
	if ((rc = sa_binding_check(model, a, start, "the delta to continue")) != SA_OK)
		return rc;
	/* The state is defined over the frozen base: a delta already applied
	 * would feed back into its own keys and values. */
	if (model->merged || model->side)
		return sa_fail(SA_EINTERNAL, "encoder: the model has a delta applied");
	if (!(e = sa_calloc(1, sizeof *e)))
		return SA_EINTERNAL;
	e->model = model;
	e->a = a;
	e->kern = sa_kernels_float();
	e->key_mat = sa_adapter_key_mat(a);
	if (!(e->pair = sa_malloc((size_t)a->n_layer * SA_NMAT * sizeof *e->pair))) {
		rc = SA_EINTERNAL;
		goto fail;
	}
	for (int l = 0; l < a->n_layer; l++)
		for (int m = 0; m < SA_NMAT; m++)
			e->pair[(size_t)l * SA_NMAT + m] = a->mapping == SA_MAPPING_LSQ ? (m == 0 ? n_used++ : -1)
			    : sa_adapted(a->mats, m) ? n_used++ : -1;
	rc = start ? sa_delta_clone(&e->delta, start) : sa_delta_new(&e->delta, a);
	if (rc != SA_OK)
		goto fail;
	if (!(e->h = sa_malloc((size_t)n_used * hs * sizeof *e->h)) ||
	    !(e->P = sa_malloc((size_t)n_used * ps * sizeof *e->P))) {
		rc = SA_EINTERNAL;
		goto fail;
	}
	for (int l = 0; l < a->n_layer; l++) {
		for (int m = 0; m < SA_NMAT; m++) {
			int p = e->pair[(size_t)l * SA_NMAT + m];
			const float *dh, *dP;
			if (p < 0)
				continue;
			dh = delta_block(e->delta, a, l, m, 1);
			dP = delta_block(e->delta, a, l, m, 0);
			for (size_t i = 0; i < hs; i++)
				e->h[(size_t)p * hs + i] = dh[i];
			for (size_t i = 0; i < ps; i++)
				e->P[(size_t)p * ps + i] = dP[i];
		}
	}
	*out = e;
	return SA_OK;
fail:
	sa_encoder_free(e);
	return rc;
}

void
sa_encoder_free(sa_encoder *e)
{
	if (!e)
		return;
	sa_kvcache_free(e->st);
	sa_delta_free(e->delta);
	free(e->X);
	free(e->V);
	free(e->h);
	free(e->P);
	free(e->pair);
	free(e);
}

/* Room for n rows of a layer's input and values. */
static int
grow_rows(sa_encoder *e, int n)
{
	const sa_adapter *a = e->a;
	size_t d_in = 0;

	for (int l = 0; l < a->n_layer; l++)
		if ((size_t)SA_ADAPTER_MAT(a, l, e->key_mat)->d_in > d_in)
			d_in = SA_ADAPTER_MAT(a, l, e->key_mat)->d_in;
	free(e->X);
	free(e->V);
	e->X = e->V = NULL;
	e->cap = 0;
	if (!(e->X = sa_malloc((size_t)n * d_in * sizeof *e->X)) ||
	    !(e->V = sa_malloc((size_t)n * a->n_head_kv * a->d_head * sizeof *e->V)))
		return SA_EINTERNAL;
	e->cap = n;
	return SA_OK;
}

int
sa_encoder_feed(sa_encoder *e, const int *toks, int n, int n_demos)
{
	int rc;

	if (n <= 0)
		return SA_OK;
	/* The cache is sized for the longest segment so far, not the model's
	 * context, which may be far longer than any segment fed. */
	if (!e->st || sa_kvcache_ctx(e->st) < n) {
		sa_kvcache_free(e->st);
		e->st = NULL;
		if ((rc = sa_kvcache_new(&e->st, e->model, n)) != SA_OK)
			return rc;
	}
	if (e->key_mat >= 0 && e->cap < n && (rc = grow_rows(e, n)) != SA_OK)
		return rc;
	sa_kvcache_truncate(e->st, 0);
	sa_kvcache_set_hook(e->st, encode_hook, e);
	if (e->key_mat >= 0)
		sa_kvcache_set_input_hook(e->st, e->key_mat, input_hook, e);
	e->seg_n = n;
	e->rc = SA_OK;
	e->x_layers = 0;
	rc = sa_forward(e->st, toks, n, NULL, 0);
	sa_kvcache_set_hook(e->st, NULL, NULL);
	sa_kvcache_set_input_hook(e->st, 0, NULL, NULL);
	if (rc == SA_OK)
		rc = e->rc;
	if (rc == SA_OK && e->key_mat >= 0 && e->x_layers != e->a->n_layer)
		rc = sa_fail(SA_EINTERNAL, "encoder: the input of %d of %d layers came", e->x_layers,
		    e->a->n_layer);
	if (rc != SA_OK)
		return rc;
	e->delta->n_tokens += (uint64_t)n;
	e->delta->n_demos += (uint64_t)n_demos;
	return SA_OK;
}

sa_delta *
sa_encoder_delta(sa_encoder *e)
{
	const sa_adapter *a = e->a;
	size_t hs, ps;

	block_sizes(a, &hs, &ps);
	for (int l = 0; l < a->n_layer; l++) {
		for (int m = 0; m < SA_NMAT; m++) {
			int p = e->pair[(size_t)l * SA_NMAT + m];
			float *dh, *dP;
			if (p < 0)
				continue;
			dh = delta_block(e->delta, a, l, m, 1);
			dP = delta_block(e->delta, a, l, m, 0);
			for (size_t i = 0; i < hs; i++)
				dh[i] = (float)e->h[(size_t)p * hs + i];
			for (size_t i = 0; i < ps; i++)
				dP[i] = (float)e->P[(size_t)p * ps + i];
		}
	}
	return e->delta;
}

int
sa_encoder_add_source(sa_encoder *e, const char *name, uint64_t hash)
{
	sa_delta *d = e->delta;
	sa_source *s;
	char *copy;

	if (!(copy = strdup(name)))
		return sa_fail(SA_EINTERNAL, "out of memory");
	if (!(s = realloc(d->sources, (size_t)(d->n_sources + 1) * sizeof *s))) {
		free(copy);
		return sa_fail(SA_EINTERNAL, "out of memory");
	}
	d->sources = s;
	s[d->n_sources].name = copy;
	s[d->n_sources].hash = hash;
	d->n_sources++;
	return SA_OK;
}

int
sa_encoder_feed_segments(sa_encoder *e, const sa_segment *segs, int n, const char *source,
    sa_encode_fn step, void *ctx)
{
	sa_encode_step st = { source, NULL, 0, n, 0, 0 };
	int rc = SA_OK;

	for (int s = 0; s < n; s++)
		st.total += segs[s].n;
	for (; st.i < n; st.i++) {
		st.seg = &segs[st.i];
		if ((rc = sa_encoder_feed(e, st.seg->toks, st.seg->n, st.seg->n_demos)) != SA_OK)
			break;
		st.done += st.seg->n;
		if (step)
			step(ctx, &st);
	}
	return rc;
}

int
sa_encoder_feed_demos(sa_encoder *e, const sa_demos *d, int n_ctx, sa_encode_fn step, void *ctx)
{
	sa_segment *segs;
	int n, rc;

	if ((rc = sa_demos_segment(d, e->model->vocab, n_ctx, e->a->records, &segs, &n)) != SA_OK)
		return rc;
	if ((rc = sa_encoder_feed_segments(e, segs, n, d->source.name, step, ctx)) == SA_OK)
		rc = sa_encoder_add_source(e, d->source.name, d->source.hash);
	sa_segments_free(segs, n);
	return rc;
}
