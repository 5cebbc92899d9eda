/*
 * encode.c - the context mapping: the base model runs over a segment, and a
 * hook on its forward pass turns each layer's keys and values into the
 * adapter's context state (streamadapter.md, "Context mapping"), layer by
 * layer as the pass goes, so no layer's K/V outlives its own hook call.
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
#include "kernels_impl.h"

/* Products of two floats are exact in double; keep the compiler from fusing
 * the other multiply-adds, so every build rounds the same way. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

typedef struct rowkern rowkern;

struct sa_encoder {
	sa_model *model;
	const sa_adapter *a;
	sa_delta *delta;      /* float copy of the state, refreshed by sa_encoder_delta */
	double *h, *P;        /* [n_used][Hk][r][dh], [n_used][Hk][r] */
	int *pair;            /* [n_layer * SA_NMAT]: index of (l, m) in h/P, or -1 */
	sa_state *st;
	int seg_n;            /* tokens of the segment being fed */
	int rc;               /* first failure inside the hook */
	const rowkern *kern;
};

/* ------------------------------------------------------------------ kernels */

/*
 * The two inner loops of the chunk attention, for one query row:
 *   scores: sc [c]  = K [c][ld] . q [dh]          (sc[t] = <q, K[t]>)
 *   mix:    S  [dh] += sum_t w[t] V [c][ld][t]    (in order of t)
 * in double.  The generic and AVX2 versions round identically: a product of
 * two floats is exact in double, every sum keeps the same order (eight
 * running sums, element j into sum j mod 8, folded as an AVX2 register
 * pair would fold them), and nothing is fused into a multiply-add.
 */
struct rowkern {
	void (*scores)(const float *q, const float *K, int ld, int c, int dh, double *sc);
	void (*mix)(const double *w, const float *V, int ld, int c, int dh, double *S);
};

static void
scores_generic(const float *q, const float *K, int ld, int c, int dh, double *sc)
{
	for (int t = 0; t < c; t++) {
		const float *k = K + (size_t)t * ld;
		double p[8] = { 0 }, s;
		int j = 0;

		for (; j + 8 <= dh; j += 8)
			for (int l = 0; l < 8; l++)
				p[l] += (double)q[j + l] * k[j + l];
		s = ((p[0] + p[4]) + (p[1] + p[5])) + ((p[2] + p[6]) + (p[3] + p[7]));
		for (; j < dh; j++)
			s += (double)q[j] * k[j];
		sc[t] = s;
	}
}

static void
mix_generic(const double *w, const float *V, int ld, int c, int dh, double *S)
{
	for (int t = 0; t < c; t++) {
		const float *v = V + (size_t)t * ld;
		for (int j = 0; j < dh; j++)
			S[j] += w[t] * v[j];
	}
}

#if defined(__x86_64__)
#include <immintrin.h>

__attribute__((target("avx2"))) static void
scores_avx2(const float *q, const float *K, int ld, int c, int dh, double *sc)
{
	for (int t = 0; t < c; t++) {
		const float *k = K + (size_t)t * ld;
		__m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd();
		double f[4], s;
		int j = 0;

		for (; j + 8 <= dh; j += 8) {
			__m256 a = _mm256_loadu_ps(q + j), b = _mm256_loadu_ps(k + j);
			lo = _mm256_add_pd(lo, _mm256_mul_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(a)),
			    _mm256_cvtps_pd(_mm256_castps256_ps128(b))));
			hi = _mm256_add_pd(hi, _mm256_mul_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(a, 1)),
			    _mm256_cvtps_pd(_mm256_extractf128_ps(b, 1))));
		}
		_mm256_storeu_pd(f, _mm256_add_pd(lo, hi));
		s = (f[0] + f[1]) + (f[2] + f[3]);
		for (; j < dh; j++)
			s += (double)q[j] * k[j];
		sc[t] = s;
	}
}

__attribute__((target("avx2"))) static void
mix_avx2(const double *w, const float *V, int ld, int c, int dh, double *S)
{
	for (int t = 0; t < c; t++) {
		const float *v = V + (size_t)t * ld;
		__m256d wt = _mm256_set1_pd(w[t]);
		int j = 0;

		for (; j + 4 <= dh; j += 4) {
			__m256d x = _mm256_cvtps_pd(_mm_loadu_ps(v + j));
			_mm256_storeu_pd(S + j, _mm256_add_pd(_mm256_loadu_pd(S + j), _mm256_mul_pd(wt, x)));
		}
		for (; j < dh; j++)
			S[j] += w[t] * v[j];
	}
}
#endif

static const rowkern *
rowkern_get(void)
{
	static const rowkern generic = { scores_generic, mix_generic };
#if defined(__x86_64__)
	static const rowkern avx2 = { scores_avx2, mix_avx2 };
	if (__builtin_cpu_supports("avx2"))
		return &avx2;
#endif
	return &generic;
}

/*
 * One chunk of c tokens, one KV head:
 *   Q  [r][dh]            learned queries of the head
 *   g  [dh], b [r]        gate weights and biases of the head
 *   k, v [c][ld]          the chunk's keys and values, this head's columns
 *   h  [r][dh], P [r]     state: h = a*h + S, P = P*a
 *   sc [c], S [dh]        scratch
 * S[i] = softmax_t(Q[i].k[t] / sqrt(dh)) v,  a[i] = sigmoid(g.S[i] + b[i]).
 */
static void
chunk_head(const rowkern *kern, const float *Q, const float *g, const float *b,
    const float *k, const float *v, int ld, int c, int r, int dh, double *h,
    double *P, double *sc, double *S)
{
	double scale = 1.0 / sqrt((double)dh);

	for (int i = 0; i < r; i++) {
		double *hi = h + (size_t)i * dh, mx = -HUGE_VAL, sum = 0, z, a;

		kern->scores(Q + (size_t)i * dh, k, ld, c, dh, sc);
		for (int t = 0; t < c; t++) {
			sc[t] *= scale;
			if (sc[t] > mx)
				mx = sc[t];
		}
		for (int t = 0; t < c; t++) {
			sc[t] = exp(sc[t] - mx);
			sum += sc[t];
		}
		for (int t = 0; t < c; t++)
			sc[t] /= sum;
		memset(S, 0, (size_t)dh * sizeof *S);
		kern->mix(sc, v, ld, c, dh, S);
		z = b[i];
		for (int j = 0; j < dh; j++)
			z += g[j] * S[j];
		a = 1.0 / (1.0 + exp(-z));
		for (int j = 0; j < dh; j++)
			hi[j] = a * hi[j] + S[j];
		P[i] *= a;
	}
}

/*
 * Head hd of matrix (layer, mat) over a segment of n tokens:
 *   k, v [n][Hk*dh], h [r][dh] and P [r] of the head.
 * Chunks of C tokens from the segment's start, the last one shorter, in order.
 * Scratch: sc [C], S [dh].
 */
static void
map_head(const rowkern *kern, const sa_adapter *a, const sa_adapter_mat *am, int hd,
    const float *k, const float *v, int n, double *h, double *P, double *sc, double *S)
{
	int Hk = a->n_head_kv, dh = a->d_head, r = a->rank, C = a->chunk, ld = Hk * dh;
	const float *Q = am->Q + (size_t)hd * r * dh;
	const float *g = am->g + (size_t)hd * dh;
	const float *b = am->b + (size_t)hd * r;

	for (int t0 = 0; t0 < n; t0 += C) {
		int c = n - t0 < C ? n - t0 : C;
		chunk_head(kern, Q, g, b, k + (size_t)t0 * ld + (size_t)hd * dh,
		    v + (size_t)t0 * ld + (size_t)hd * dh, ld, c, r, dh, h, P, sc, S);
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
	const rowkern *kern = rowkern_get();
	int Hk = a->n_head_kv, dh = a->d_head, r = a->rank;
	double *sc, *S;

	if (layer < 0 || layer >= a->n_layer || mat < 0 || mat >= SA_NMAT ||
	    !(a->mats & (1u << mat)))
		return sa_fail(SA_EINTERNAL, "context map: layer %d %s is not adapted",
		    layer, mat >= 0 && mat < SA_NMAT ? sa_mat_name(mat) : "?");
	if (!(sc = sa_malloc((size_t)(a->chunk + dh) * sizeof *sc)))
		return SA_EINTERNAL;
	S = sc + a->chunk;
	for (int hd = 0; hd < Hk; hd++)
		map_head(kern, a, SA_ADAPTER_MAT(a, layer, mat), hd, k, v, n,
		    h + (size_t)hd * r * dh, P + (size_t)hd * r, sc, S);
	free(sc);
	return SA_OK;
}

/* ------------------------------------------------------------------ encoder */

/* One layer's work for the pool: a chunk of the job is one (matrix, head)
 * pair, run whole by one thread, so which thread runs it changes nothing. */
typedef struct layer_job {
	sa_encoder *e;
	int layer, n;
	int mat[SA_NMAT];          /* adapted matrices of the layer */
	const float *k, *v;
	double *scratch;           /* [threads][C + dh] */
} layer_job;

static void
layer_task(void *arg, int ith, int item, int n_items)
{
	layer_job *job = arg;
	const sa_adapter *a = job->e->a;
	int Hk = a->n_head_kv, r = a->rank, dh = a->d_head;
	int m = job->mat[item / Hk], hd = item % Hk;
	int p = job->e->pair[(size_t)job->layer * SA_NMAT + m];
	double *sc = job->scratch + (size_t)ith * (a->chunk + dh);

	(void)n_items;
	map_head(job->e->kern, a, SA_ADAPTER_MAT(a, job->layer, m), hd, job->k, job->v,
	    job->n, job->e->h + (size_t)p * Hk * r * dh + (size_t)hd * r * dh,
	    job->e->P + (size_t)p * Hk * r + (size_t)hd * r, sc, sc + a->chunk);
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
	for (int m = 0; m < SA_NMAT; m++)
		if (e->pair[(size_t)layer * SA_NMAT + m] >= 0)
			job.mat[n_mats++] = m;
	if (n_mats == 0)
		return;
	if (!(job.scratch = sa_malloc((size_t)sa_get_threads() * (a->chunk + a->d_head) *
	    sizeof *job.scratch))) {
		e->rc = SA_EINTERNAL;
		return;
	}
	sa_pool_run_chunks(layer_task, &job, n_mats * a->n_head_kv);
	free(job.scratch);
}

static int
check_start(const sa_delta *d, const sa_model *model, const sa_adapter *a)
{
	const char *name = "the delta to continue";

	if (d->model_fingerprint != model->fingerprint)
		return sa_fail(SA_EDATA, "%s was made for another model (fingerprint %016llx, model has %016llx)",
		    name, (unsigned long long)d->model_fingerprint, (unsigned long long)model->fingerprint);
	if (d->adapter_fingerprint != a->fingerprint)
		return sa_fail(SA_EDATA, "%s was made with another adapter (fingerprint %016llx, adapter has %016llx)",
		    name, (unsigned long long)d->adapter_fingerprint, (unsigned long long)a->fingerprint);
	if (d->n_layer != a->n_layer || d->n_head_kv != a->n_head_kv || d->d_head != a->d_head ||
	    d->rank != a->rank || d->chunk != a->chunk || d->mats != a->mats)
		return sa_fail(SA_EDATA, "%s: shape does not match the adapter", name);
	return SA_OK;
}

int
sa_encoder_new(sa_encoder **out, sa_model *model, const sa_adapter *a, const sa_delta *start)
{
	sa_encoder *e;
	size_t hs = (size_t)a->n_head_kv * a->rank * a->d_head;
	size_t ps = (size_t)a->n_head_kv * a->rank;
	int rc, n_used = 0;

	*out = NULL;
	if ((rc = sa_adapter_check(a, model)) != SA_OK)
		return rc;
	/* The state is defined over the frozen base: a delta already applied
	 * would feed back into its own keys and values. */
	if (model->merged || model->side)
		return sa_fail(SA_EINTERNAL, "encoder: the model has a delta applied");
	if (start && (rc = check_start(start, model, a)) != SA_OK)
		return rc;
	if (!(e = sa_calloc(1, sizeof *e)))
		return SA_EINTERNAL;
	e->model = model;
	e->a = a;
	e->kern = rowkern_get();
	if (!(e->pair = sa_malloc((size_t)a->n_layer * SA_NMAT * sizeof *e->pair))) {
		rc = SA_EINTERNAL;
		goto fail;
	}
	for (int l = 0; l < a->n_layer; l++)
		for (int m = 0; m < SA_NMAT; m++)
			e->pair[(size_t)l * SA_NMAT + m] = (a->mats & (1u << m)) ? n_used++ : -1;
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
			dh = sa_delta_h(e->delta, l, m);
			dP = sa_delta_P(e->delta, l, m);
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
	sa_state_free(e->st);
	sa_delta_free(e->delta);
	free(e->h);
	free(e->P);
	free(e->pair);
	free(e);
}

int
sa_encoder_feed(sa_encoder *e, const int *toks, int n, int n_demos)
{
	int rc;

	if (n <= 0)
		return SA_OK;
	/* The cache is sized for the longest segment so far, not the model's
	 * context, which may be far longer than any segment fed. */
	if (!e->st || sa_state_ctx(e->st) < n) {
		sa_state_free(e->st);
		e->st = NULL;
		if ((rc = sa_state_new(&e->st, e->model, n)) != SA_OK)
			return rc;
	}
	sa_state_truncate(e->st, 0);
	sa_state_set_hook(e->st, encode_hook, e);
	e->seg_n = n;
	e->rc = SA_OK;
	rc = sa_forward(e->st, toks, n, NULL, 0);
	sa_state_set_hook(e->st, NULL, NULL);
	if (rc == SA_OK)
		rc = e->rc;
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
	size_t hs = (size_t)a->n_head_kv * a->rank * a->d_head;
	size_t ps = (size_t)a->n_head_kv * a->rank;

	for (int l = 0; l < a->n_layer; l++) {
		for (int m = 0; m < SA_NMAT; m++) {
			int p = e->pair[(size_t)l * SA_NMAT + m];
			float *dh, *dP;
			if (p < 0)
				continue;
			dh = sa_delta_h(e->delta, l, m);
			dP = sa_delta_P(e->delta, l, m);
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
