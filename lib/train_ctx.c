/*
 * train_ctx.c - the context mapping of StreamAdapter, forward and backward,
 * for training the adapter.
 *
 * Forward (per layer l, adapted matrix m, KV head h, chunk i of C tokens):
 *   A_i[h] = softmax(Q[h] K_i[h]^T / sqrt(dh))         [r][c]
 *   S_i[h] = A_i[h] V_i[h]                             [r][dh]
 *   a_i[h,j] = sigmoid(<g[h], S_i[h,j,:]> + b[h,j])     [r]
 *   h_i = a_i (.) h_{i-1} + S_i                        [r][dh]
 * The keys and values come from the frozen base over the context; no
 * gradient flows into them.  Backward runs the chunks in reverse, from
 * d(loss)/d(h_final) down to Q, g and b.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "sa.h"
#include "kernels_impl.h"    /* sa_softmax_f32, sa_kernels_float */
#include "train_impl.h"

struct sa_tctx {
	int n_layer, Hk, dh, r, C;
	int dx;                       /* width of a token's keys */
	uint32_t mats;
	int max_tokens;
	int n_tokens;                 /* in the stream so far */
	int n_seg;
	int *seg_start;               /* [max_tokens] (at most one segment per token) */
	float **K, **V;               /* per layer: [max_tokens][dx], [max_tokens][Hk*dh] */
	int n_chunks;                 /* of the whole stream */
	int *chunk_start, *chunk_len; /* [max chunks] */
	/* per (l, m) in use, chunk-major: */
	float **A;                    /* [chunks][Hk][r][C] */
	float **S;                    /* [chunks][Hk][r][dh] */
	float **gate;                 /* [chunks][Hk][r] */
	float **hprev;                /* [chunks][Hk][r][dh]: state before chunk i */
	float **hfinal;               /* [Hk][r][dh] */
};

static int
max_chunks(const sa_tctx *c)
{
	/* each segment adds at most one partial chunk */
	return c->max_tokens / c->C + c->max_tokens;
}

void
sa_tctx_free(sa_tctx *c)
{
	if (!c)
		return;
	size_t n = (size_t)c->n_layer * SA_NMAT;
	for (int l = 0; l < c->n_layer; l++) {
		if (c->K)
			free(c->K[l]);
		if (c->V)
			free(c->V[l]);
	}
	for (size_t i = 0; i < n; i++) {
		if (c->A) free(c->A[i]);
		if (c->S) free(c->S[i]);
		if (c->gate) free(c->gate[i]);
		if (c->hprev) free(c->hprev[i]);
		if (c->hfinal) free(c->hfinal[i]);
	}
	free(c->K); free(c->V); free(c->A); free(c->S); free(c->gate);
	free(c->hprev); free(c->hfinal);
	free(c->seg_start); free(c->chunk_start); free(c->chunk_len);
	free(c);
}

int
sa_tctx_new(sa_tctx **out, int n_layer, int n_head_kv, int d_head, int key_width, int rank,
    int chunk, uint32_t mats, int max_tokens)
{
	sa_tctx *c;
	size_t n = (size_t)n_layer * SA_NMAT, kv = (size_t)n_head_kv * d_head;

	*out = NULL;
	if (n_layer < 1 || n_head_kv < 1 || d_head < 1 || rank < 1 || chunk < 1 || max_tokens < 1 ||
	    key_width < 1 || (mats && (size_t)key_width != kv))
		return sa_fail(SA_EUSAGE, "invalid context-state shape");
	if (!(c = sa_calloc(1, sizeof *c)))
		return SA_EINTERNAL;
	c->n_layer = n_layer; c->Hk = n_head_kv; c->dh = d_head; c->dx = key_width;
	c->r = rank; c->C = chunk; c->mats = mats; c->max_tokens = max_tokens;
	int mc = max_chunks(c);
	c->seg_start = sa_malloc((size_t)max_tokens * sizeof(int));
	c->chunk_start = sa_malloc((size_t)mc * sizeof(int));
	c->chunk_len = sa_malloc((size_t)mc * sizeof(int));
	c->K = sa_calloc(n_layer, sizeof(float *));
	c->V = sa_calloc(n_layer, sizeof(float *));
	c->A = sa_calloc(n, sizeof(float *));
	c->S = sa_calloc(n, sizeof(float *));
	c->gate = sa_calloc(n, sizeof(float *));
	c->hprev = sa_calloc(n, sizeof(float *));
	c->hfinal = sa_calloc(n, sizeof(float *));
	if (!c->seg_start || !c->chunk_start || !c->chunk_len || !c->K || !c->V ||
	    !c->A || !c->S || !c->gate || !c->hprev || !c->hfinal)
		goto oom;
	for (int l = 0; l < n_layer; l++) {
		if (!(c->K[l] = sa_malloc((size_t)max_tokens * key_width * sizeof(float))) ||
		    !(c->V[l] = sa_malloc((size_t)max_tokens * kv * sizeof(float))))
			goto oom;
		for (int m = 0; m < SA_NMAT; m++) {
			size_t i = (size_t)l * SA_NMAT + m, hr = (size_t)n_head_kv * rank;
			if (!sa_adapted(mats, m))
				continue;
			if (!(c->A[i] = sa_malloc((size_t)mc * hr * chunk * sizeof(float))) ||
			    !(c->S[i] = sa_malloc((size_t)mc * hr * d_head * sizeof(float))) ||
			    !(c->gate[i] = sa_malloc((size_t)mc * hr * sizeof(float))) ||
			    !(c->hprev[i] = sa_malloc((size_t)mc * hr * d_head * sizeof(float))) ||
			    !(c->hfinal[i] = sa_malloc(hr * d_head * sizeof(float))))
				goto oom;
		}
	}
	*out = c;
	return SA_OK;
oom:
	sa_tctx_free(c);
	return SA_EINTERNAL;
}

void
sa_tctx_reset(sa_tctx *c)
{
	c->n_tokens = c->n_seg = c->n_chunks = 0;
}

int
sa_tctx_n_tokens(const sa_tctx *c)
{
	return c->n_tokens;
}

int
sa_tctx_segments(const sa_tctx *c, const int **start)
{
	*start = c->seg_start;
	return c->n_seg;
}

const float *
sa_tctx_keys(const sa_tctx *c, int l)
{
	return c->K[l];
}

const float *
sa_tctx_values(const sa_tctx *c, int l)
{
	return c->V[l];
}

/*
 * Append one segment of n tokens: K [layer] points to [n][dx], V [layer] to
 * [n][Hk*dh] for each layer, e.g. sa_tact_keys/values (keys before RoPE) or
 * sa_tact_input of a forward over it.
 */
int
sa_tctx_add_segment(sa_tctx *c, const float *const *K, const float *const *V, int n)
{
	size_t kv = (size_t)c->Hk * c->dh;

	if (n < 1)
		return SA_OK;
	if (c->n_tokens + n > c->max_tokens)
		return sa_fail(SA_EUSAGE, "context of %d tokens exceeds %d", c->n_tokens + n, c->max_tokens);
	for (int l = 0; l < c->n_layer; l++) {
		memcpy(c->K[l] + (size_t)c->n_tokens * c->dx, K[l], (size_t)n * c->dx * sizeof(float));
		memcpy(c->V[l] + (size_t)c->n_tokens * kv, V[l], (size_t)n * kv * sizeof(float));
	}
	for (int s = 0; s < n; s += c->C) {
		c->chunk_start[c->n_chunks] = c->n_tokens + s;
		c->chunk_len[c->n_chunks] = n - s < c->C ? n - s : c->C;
		c->n_chunks++;
	}
	c->seg_start[c->n_seg++] = c->n_tokens;
	c->n_tokens += n;
	return SA_OK;
}

static float
sigmoidf_(float x)
{
	return 1.0f / (1.0f + expf(-x));
}

/*
 * The state of (l, m) over the whole stream.  Q [Hk][r][dh], g [Hk][dh],
 * b [Hk][r]; result in sa_tctx_state().  Saves A, S, gate, h_prev per chunk.
 * The r queries of a head meet a chunk's keys and values in two products.
 */
int
sa_tctx_forward(sa_tctx *c, int l, int m, const float *Q, const float *g, const float *b)
{
	size_t i = (size_t)l * SA_NMAT + m;
	int Hk = c->Hk, r = c->r, dh = c->dh, C = c->C, kvd = Hk * dh;
	float scale = 1.0f / sqrtf((float)dh);
	float *h = c->hfinal[i];

	if (!sa_adapted(c->mats, m))
		return sa_fail(SA_EUSAGE, "matrix %s is not adapted", sa_mat_name(m));
	memset(h, 0, (size_t)Hk * r * dh * sizeof(float));
	for (int ci = 0; ci < c->n_chunks; ci++) {
		int t0 = c->chunk_start[ci], n = c->chunk_len[ci];
		for (int hh = 0; hh < Hk; hh++) {
			size_t o = (size_t)ci * Hk + hh;
			float *A = c->A[i] + o * r * C;          /* [r][C], n used */
			float *S = c->S[i] + o * r * dh;         /* [r][dh] */
			float *a = c->gate[i] + o * r;           /* [r] */
			float *hp = c->hprev[i] + o * r * dh;    /* [r][dh] */
			float *hs = h + (size_t)hh * r * dh;     /* [r][dh] */
			const float *Qh = Q + (size_t)hh * r * dh;
			const float *Kc = c->K[l] + (size_t)t0 * kvd + hh * dh;   /* [n][dh], rows kvd apart */
			const float *Vc = c->V[l] + (size_t)t0 * kvd + hh * dh;
			/* A [r][n] = softmax(Qh Kc^T * scale) by rows */
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, r, n, dh,
			    scale, Qh, dh, Kc, kvd, 0.0f, A, C);
			for (int j = 0; j < r; j++) {
				sa_softmax_f32(A + (size_t)j * C, n);
			}
			/* S [r][dh] = A Vc */
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, r, dh, n,
			    1.0f, A, C, Vc, kvd, 0.0f, S, dh);
			for (int j = 0; j < r; j++) {
				const float *Sj = S + (size_t)j * dh;
				float z = b[(size_t)hh * r + j];
				for (int d = 0; d < dh; d++)
					z += g[(size_t)hh * dh + d] * Sj[d];
				a[j] = sigmoidf_(z);
				for (int d = 0; d < dh; d++) {
					hp[(size_t)j * dh + d] = hs[(size_t)j * dh + d];
					hs[(size_t)j * dh + d] = a[j] * hs[(size_t)j * dh + d] + Sj[d];
				}
			}
		}
	}
	return SA_OK;
}

const float *
sa_tctx_state(const sa_tctx *c, int l, int m)
{
	return c->hfinal[(size_t)l * SA_NMAT + m];
}

/*
 * Backward of sa_tctx_forward: dh [Hk][r][dh] is d(loss)/d(h_final); the
 * gradients of Q, g, b are accumulated into dQ, dg, db (same shapes as Q, g, b).
 */
int
sa_tctx_backward(sa_tctx *c, int l, int m, const float *Q, const float *g,
    const float *dh_final, float *dQ, float *dg, float *db)
{
	size_t i = (size_t)l * SA_NMAT + m;
	int Hk = c->Hk, r = c->r, dh = c->dh, C = c->C, kvd = Hk * dh;
	float scale = 1.0f / sqrtf((float)dh);
	float *dhs = sa_malloc((size_t)r * dh * sizeof(float));   /* [r][dh] d(state) */
	float *dS = sa_malloc((size_t)r * dh * sizeof(float));    /* [r][dh] */
	float *dA = sa_malloc((size_t)r * C * sizeof(float));     /* [r][C] */

	if (!dhs || !dS || !dA) {
		free(dhs); free(dS); free(dA);
		return SA_EINTERNAL;
	}
	for (int hh = 0; hh < Hk; hh++) {
		float *dQh = dQ + (size_t)hh * r * dh;
		memcpy(dhs, dh_final + (size_t)hh * r * dh, (size_t)r * dh * sizeof(float));
		for (int ci = c->n_chunks - 1; ci >= 0; ci--) {
			int t0 = c->chunk_start[ci], n = c->chunk_len[ci];
			size_t o = (size_t)ci * Hk + hh;
			const float *A = c->A[i] + o * r * C;
			const float *S = c->S[i] + o * r * dh;
			const float *a = c->gate[i] + o * r;
			const float *hp = c->hprev[i] + o * r * dh;
			const float *Kc = c->K[l] + (size_t)t0 * kvd + hh * dh;
			const float *Vc = c->V[l] + (size_t)t0 * kvd + hh * dh;
			for (int j = 0; j < r; j++) {
				float *dhj = dhs + (size_t)j * dh, *dSj = dS + (size_t)j * dh;
				const float *Sj = S + (size_t)j * dh, *hpj = hp + (size_t)j * dh;
				/* h = a h_prev + S: dS = dh, da = <dh, h_prev>, dh_prev = a dh */
				float da = 0;
				for (int d = 0; d < dh; d++)
					da += dhj[d] * hpj[d];
				float dz = da * a[j] * (1 - a[j]);
				db[(size_t)hh * r + j] += dz;
				for (int d = 0; d < dh; d++) {
					dSj[d] = dhj[d] + dz * g[(size_t)hh * dh + d];
					dg[(size_t)hh * dh + d] += dz * Sj[d];
					dhj[d] *= a[j];
				}
			}
			/* S = A V: dA [r][n] = dS Vc^T, then the softmax backward to
			 * d(logits) * scale in place */
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, r, n, dh,
			    1.0f, dS, dh, Vc, kvd, 0.0f, dA, C);
			for (int j = 0; j < r; j++) {
				const float *Aj = A + (size_t)j * C;
				float *dAj = dA + (size_t)j * C;
				float dot = (float)sa_kernels_float()->dot_f64(dAj, Aj, n);
				for (int t = 0; t < n; t++)
					dAj[t] = Aj[t] * (dAj[t] - dot) * scale;
			}
			/* dQh [r][dh] += dA Kc */
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, r, dh, n,
			    1.0f, dA, C, Kc, kvd, 1.0f, dQh, dh);
		}
	}
	(void)Q;
	free(dhs); free(dS); free(dA);
	return SA_OK;
}
