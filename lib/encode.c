/*
 * encode.c - the context mapping: the base model runs over a segment, and a
 * hook on its forward pass turns each layer's keys and values into the
 * adapter's context state (streamadapter.md, "Context mapping"), layer by
 * layer as the pass goes, so no layer's K/V outlives its own hook call.
 *
 * The state is kept in double and written to the float delta on demand: the
 * recurrence runs over many chunks, and double keeps its rounding far below
 * what the delta file can show.  Every sum runs in a fixed order on one
 * thread, so the result is the same bit for bit whatever the thread count
 * and whatever vector unit the CPU has.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sa.h"

/* Products of two floats are exact in double; keep the compiler from fusing
 * the other multiply-adds, so every build rounds the same way. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

struct sa_encoder {
	sa_model *model;
	const sa_adapter *a;
	sa_delta *delta;      /* float copy of the state, refreshed by sa_encoder_delta */
	double *h, *P;        /* [n_used][Hk][r][dh], [n_used][Hk][r] */
	int *pair;            /* [n_layer * SA_NMAT]: index of (l, m) in h/P, or -1 */
	sa_state *st;
	int seg_n;            /* tokens of the segment being fed */
	int rc;               /* first failure inside the hook */
};

/* ------------------------------------------------------------------ kernels */

/* <a, b> over n floats, in double with four running sums (one per lane of
 * a vector unit that has them; the order is fixed either way). */
static double
dot_ff(const float *a, const float *b, int n)
{
	double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
	int j = 0;

	for (; j + 4 <= n; j += 4) {
		s0 += (double)a[j] * b[j];
		s1 += (double)a[j + 1] * b[j + 1];
		s2 += (double)a[j + 2] * b[j + 2];
		s3 += (double)a[j + 3] * b[j + 3];
	}
	for (; j < n; j++)
		s0 += (double)a[j] * b[j];
	return (s0 + s1) + (s2 + s3);
}

/*
 * One chunk of c tokens, one KV head:
 *   Q  [r][dh]            learned queries of the head
 *   g  [dh], b [r]        gate weights and biases of the head
 *   k, v [c][ld]          the chunk's keys and values, this head's columns
 *   h  [r][dh], P [r]     state: h = a*h + S, P = P*a
 *   sc [c], S [r][dh]     scratch
 * S[i] = softmax_t(Q[i].k[t] / sqrt(dh)) v,  a[i] = sigmoid(g.S[i] + b[i]).
 */
static void
chunk_head(const float *Q, const float *g, const float *b, const float *k,
    const float *v, int ld, int c, int r, int dh, double *h, double *P,
    double *sc, double *S)
{
	double scale = 1.0 / sqrt((double)dh);

	for (int i = 0; i < r; i++) {
		const float *q = Q + (size_t)i * dh;
		double *Si = S + (size_t)i * dh, mx = -HUGE_VAL, sum = 0, z, a;

		for (int t = 0; t < c; t++) {
			sc[t] = dot_ff(q, k + (size_t)t * ld, dh) * scale;
			if (sc[t] > mx)
				mx = sc[t];
		}
		for (int t = 0; t < c; t++) {
			sc[t] = exp(sc[t] - mx);
			sum += sc[t];
		}
		memset(Si, 0, (size_t)dh * sizeof *Si);
		for (int t = 0; t < c; t++) {
			const float *vt = v + (size_t)t * ld;
			double p = sc[t] / sum;
			for (int j = 0; j < dh; j++)
				Si[j] += p * vt[j];
		}
		z = b[i];
		for (int j = 0; j < dh; j++)
			z += g[j] * Si[j];
		a = 1.0 / (1.0 + exp(-z));
		for (int j = 0; j < dh; j++)
			h[(size_t)i * dh + j] = a * h[(size_t)i * dh + j] + Si[j];
		P[i] *= a;
	}
}

/*
 * A segment of n tokens for matrix (layer, mat):
 *   k, v [n][Hk*dh], h [Hk][r][dh], P [Hk][r]
 * Chunks of C tokens from the segment's start, the last one shorter; heads
 * are independent, chunks run in order.
 */
int
sa_context_map(const sa_adapter *a, int layer, int mat, const float *k,
    const float *v, int n, double *h, double *P)
{
	const sa_adapter_mat *am;
	int Hk = a->n_head_kv, dh = a->d_head, r = a->rank, C = a->chunk;
	int ld = Hk * dh;
	double *sc, *S;

	if (layer < 0 || layer >= a->n_layer || mat < 0 || mat >= SA_NMAT ||
	    !(a->mats & (1u << mat)))
		return sa_fail(SA_EINTERNAL, "context map: layer %d %s is not adapted",
		    layer, mat >= 0 && mat < SA_NMAT ? sa_mat_name(mat) : "?");
	am = SA_ADAPTER_MAT(a, layer, mat);
	if (!(sc = sa_malloc((size_t)C * sizeof *sc)))
		return SA_EINTERNAL;
	if (!(S = sa_malloc((size_t)r * dh * sizeof *S))) {
		free(sc);
		return SA_EINTERNAL;
	}
	for (int hd = 0; hd < Hk; hd++) {
		const float *Q = am->Q + (size_t)hd * r * dh;
		const float *g = am->g + (size_t)hd * dh;
		const float *b = am->b + (size_t)hd * r;
		double *hh = h + (size_t)hd * r * dh, *PP = P + (size_t)hd * r;

		for (int t0 = 0; t0 < n; t0 += C) {
			int c = n - t0 < C ? n - t0 : C;
			chunk_head(Q, g, b, k + (size_t)t0 * ld + (size_t)hd * dh,
			    v + (size_t)t0 * ld + (size_t)hd * dh, ld, c, r, dh, hh, PP, sc, S);
		}
	}
	free(sc);
	free(S);
	return SA_OK;
}

/* ------------------------------------------------------------------ encoder */

static void
encode_hook(void *ctx, int layer, int n, const float *k, const float *v)
{
	sa_encoder *e = ctx;
	const sa_adapter *a = e->a;
	size_t hs = (size_t)a->n_head_kv * a->rank * a->d_head;
	size_t ps = (size_t)a->n_head_kv * a->rank;

	if (e->rc != SA_OK)
		return;
	/* The forward pass hands over the whole segment at once; chunks are
	 * cut from the segment's start, so a partial call would misplace them. */
	if (n != e->seg_n || layer < 0 || layer >= a->n_layer) {
		e->rc = sa_fail(SA_EINTERNAL, "encoder: layer %d hook got %d tokens, expected %d",
		    layer, n, e->seg_n);
		return;
	}
	for (int m = 0; m < SA_NMAT && e->rc == SA_OK; m++) {
		int p = e->pair[(size_t)layer * SA_NMAT + m];
		if (p >= 0)
			e->rc = sa_context_map(a, layer, m, k, v, n, e->h + (size_t)p * hs,
			    e->P + (size_t)p * ps);
	}
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
