/*
 * memory.c - the least-squares memory, the second kind of context mapping
 * (doc/design.md, "The least-squares memory").
 *
 * Per layer, one memory per key/value head h.  For each context token t the
 * memory reads a key x_t [dx] and the values v_t [dh] of head h.  The key is
 * the layer's keys (all heads, before RoPE; dx = Dkv), with features
 *
 *   u_t    = P[h] x_t + p[h]                      [dk]
 *   f_t    = u + 1 where u > 0, else exp(u)       [dk]   positive features
 *   phi_t  = f_t / |f_t|                          [dk]
 *
 * or the adapted matrix's input (dx = d_in), with linear features
 * phi_t = u_t = P[h] x_t, the very map W2 = P applies to a query's input;
 * then either way
 *
 *   beta_t = sigmoid(<w[h], x_t> + c[h])                 how much t is written
 *   G[h]  += beta_t v_{t+o} phi_t^T               [dh][dk]
 *   S[h]  += beta_t phi_t phi_t^T                 [dk][dk]
 *
 * With the value offset o = 1 the memory binds each token's key to the
 * value of the token after it, as the next-token prediction at a query
 * reads it: the key of "word ->" in a demonstration to the value of the
 * label that follows.  A pair never reaches across the end of a segment,
 * and the last o tokens of one are not written.
 *
 * Both sums are linear in the tokens, so streams compose exactly by adding
 * (G, S).  Only when a delta is applied is the memory read out, as the
 * least-squares map from features to values:
 *
 *   M[h] = G[h] (S[h] + lambda I)^-1              [dh][dk]
 *
 * The solve whitens the features, so any dk linearly independent ones are
 * recalled (lambda -> 0), where a plain sum of v phi^T mixes every pair whose
 * features are not orthogonal.  The keys' features go through a positive
 * nonlinearity so that dk may exceed Dkv; the input's stay linear, so that
 * a query's input read through W2 = P lands where the same activation
 * was written.
 *
 * The sums run in double in a fixed order (one head after the other,
 * tokens in order), so a delta is the same bits on any thread count; the
 * trainer takes the same sums, rounded to float.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sa.h"

#define PHI_EPS 1e-12

static double
sigmoid(double z)
{
	return 1 / (1 + exp(-z));
}

/* phi [dk], beta of token x [dx] for memory h; u [dk] keeps the
 * pre-activations when not NULL. */
static double
features(const sa_memory_params *mp, int h, const float *x, double *phi, double *u)
{
	int dx = mp->dx, dk = mp->dk;
	const float *P = mp->P + (size_t)h * dk * dx, *w = mp->w + (size_t)h * dx;
	double norm = 0, z = mp->c[h];

	for (int i = 0; i < dk; i++) {
		double a = mp->linear ? 0 : mp->p[(size_t)h * dk + i];
		for (int j = 0; j < dx; j++)
			a += (double)P[(size_t)i * dx + j] * x[j];
		if (u)
			u[i] = a;
		phi[i] = mp->linear ? a : a > 0 ? a + 1 : exp(a);
		norm += phi[i] * phi[i];
	}
	if (!mp->linear) {
		norm = 1 / sqrt(norm + PHI_EPS);
		for (int i = 0; i < dk; i++)
			phi[i] *= norm;
	}
	for (int j = 0; j < dx; j++)
		z += (double)w[j] * x[j];
	return sigmoid(z);
}

/*
 * The first token after t that a pair starting at t may not reach: the
 * start of the next segment (seg [n_seg], ascending; NULL: one segment),
 * else n.  *next walks seg along with t.
 */
static int
segment_end(const int *seg, int n_seg, int n, int t, int *next)
{
	while (*next < n_seg && seg[*next] <= t)
		(*next)++;
	return *next < n_seg ? seg[*next] : n;
}

/*
 * Head h's sums over n tokens, in double and in order; with u, phi, beta
 * not NULL, each token's features are kept there too ([n][Hk][dk], [n][Hk]:
 * what the trainer's backward reads; zero for a token not written).
 */
static int
write_head(const sa_memory_params *mp, int h, const float *X, const float *V, int n,
    const int *seg, int n_seg, double *G, double *S, float *u, float *phi, float *beta)
{
	int Hk = mp->Hk, dh = mp->dh, dk = mp->dk, Dkv = Hk * dh, next = 0;
	double *ph = malloc((size_t)dk * sizeof *ph), *uh = malloc((size_t)dk * sizeof *uh);

	if (!ph || !uh) {
		free(ph);
		free(uh);
		return sa_fail(SA_EINTERNAL, "out of memory");
	}
	for (int t = 0; t < n; t++) {
		const float *x = X + (size_t)t * mp->dx;
		size_t at = ((size_t)t * Hk + h) * dk;
		if (t + mp->offset >= segment_end(seg, n_seg, n, t, &next)) {
			if (u) {
				beta[(size_t)t * Hk + h] = 0;
				memset(u + at, 0, (size_t)dk * sizeof *u);
				memset(phi + at, 0, (size_t)dk * sizeof *phi);
			}
			continue;
		}
		const float *v = V + (size_t)(t + mp->offset) * Dkv + (size_t)h * dh;
		double b = features(mp, h, x, ph, u ? uh : NULL);
		if (u) {
			beta[(size_t)t * Hk + h] = (float)b;
			for (int i = 0; i < dk; i++) {
				u[at + i] = (float)uh[i];
				phi[at + i] = (float)ph[i];
			}
		}
		for (int i = 0; i < dh; i++) {
			double bv = b * v[i];
			for (int j = 0; j < dk; j++)
				G[(size_t)i * dk + j] += bv * ph[j];
		}
		for (int i = 0; i < dk; i++) {
			double bp = b * ph[i];
			for (int j = 0; j < dk; j++)
				S[(size_t)i * dk + j] += bp * ph[j];
		}
	}
	free(ph);
	free(uh);
	return SA_OK;
}

int
sa_memory_write_head(const sa_memory_params *mp, int h, const float *X, const float *V, int n,
    double *G, double *S)
{
	return write_head(mp, h, X, V, n, NULL, 0, G, S, NULL, NULL, NULL);
}

int
sa_memory_write(const sa_memory_params *mp, const float *X, const float *V, int n,
    double *G, double *S)
{
	int dh = mp->dh, dk = mp->dk, rc = SA_OK;

	for (int h = 0; h < mp->Hk && rc == SA_OK; h++)
		rc = sa_memory_write_head(mp, h, X, V, n, G + (size_t)h * dh * dk, S + (size_t)h * dk * dk);
	return rc;
}

/* L L^T = A [n][n] in place (lower triangle); 0 unless positive definite. */
static int
cholesky(double *A, int n)
{
	for (int j = 0; j < n; j++) {
		double d = A[(size_t)j * n + j];
		for (int k = 0; k < j; k++)
			d -= A[(size_t)j * n + k] * A[(size_t)j * n + k];
		if (!(d > 0))
			return 0;
		d = sqrt(d);
		A[(size_t)j * n + j] = d;
		for (int i = j + 1; i < n; i++) {
			double s = A[(size_t)i * n + j];
			for (int k = 0; k < j; k++)
				s -= A[(size_t)i * n + k] * A[(size_t)j * n + k];
			A[(size_t)i * n + j] = s / d;
		}
	}
	return 1;
}

/* x := (L L^T)^-1 x for the factor L [n][n] of cholesky. */
static void
cholesky_solve(const double *L, int n, double *x)
{
	for (int i = 0; i < n; i++) {
		double s = x[i];
		for (int k = 0; k < i; k++)
			s -= L[(size_t)i * n + k] * x[k];
		x[i] = s / L[(size_t)i * n + i];
	}
	for (int i = n - 1; i >= 0; i--) {
		double s = x[i];
		for (int k = i + 1; k < n; k++)
			s -= L[(size_t)k * n + i] * x[k];
		x[i] = s / L[(size_t)i * n + i];
	}
}

/*
 * L [dk][dk]: the Cholesky factor of S + lambda I.  The solve reads the
 * lower triangle of the mean of S and S^T, so that rounding in a file
 * cannot make S asymmetric.
 */
static int
factor(const float *S, int dk, double lambda, double *L)
{
	for (int i = 0; i < dk; i++)
		for (int j = 0; j <= i; j++)
			L[(size_t)i * dk + j] = 0.5 * ((double)S[(size_t)i * dk + j] + S[(size_t)j * dk + i]) +
			    (i == j ? lambda : 0);
	if (!cholesky(L, dk))
		return sa_fail(SA_EDATA, "the memory's key sums are not positive definite");
	return SA_OK;
}

int
sa_memory_read(const float *G, const float *S, int dh, int dk, double lambda, float *M)
{
	double *L = malloc((size_t)dk * dk * sizeof *L), *row = malloc((size_t)dk * sizeof *row);
	int rc = SA_OK;

	if (!L || !row) {
		rc = sa_fail(SA_EINTERNAL, "out of memory");
		goto done;
	}
	if ((rc = factor(S, dk, lambda, L)) != SA_OK)
		goto done;
	/* M = G A^-1: each row of M solves A m = g (A symmetric) */
	for (int i = 0; i < dh; i++) {
		for (int j = 0; j < dk; j++)
			row[j] = G[(size_t)i * dk + j];
		cholesky_solve(L, dk, row);
		for (int j = 0; j < dk; j++)
			M[(size_t)i * dk + j] = (float)row[j];
	}
done:
	free(L);
	free(row);
	return rc;
}

/* ------------------------------------------------------------- training */

int
sa_memory_train_forward(const sa_memory_params *mp, const float *X, const float *V, int n,
    const int *seg, int n_seg, float *u, float *phi, float *beta, float *G, float *S)
{
	size_t ng = (size_t)mp->dh * mp->dk, ns = (size_t)mp->dk * mp->dk;
	double *g = malloc(ng * sizeof *g), *sq = malloc(ns * sizeof *sq);
	int rc = g && sq ? SA_OK : sa_fail(SA_EINTERNAL, "out of memory");

	/* the encoder's sums, so that training sees the deltas sa-encode makes */
	for (int h = 0; h < mp->Hk && rc == SA_OK; h++) {
		memset(g, 0, ng * sizeof *g);
		memset(sq, 0, ns * sizeof *sq);
		rc = write_head(mp, h, X, V, n, seg, n_seg, g, sq, u, phi, beta);
		for (size_t i = 0; i < ng; i++)
			G[h * ng + i] = (float)g[i];
		for (size_t i = 0; i < ns; i++)
			S[h * ns + i] = (float)sq[i];
	}
	free(g);
	free(sq);
	return rc;
}

/*
 * Backward of M = G (S + lambda I)^-1 and of the sums, for memory h:
 *   dG = dM A^-1                [dh][dk]
 *   dS = -M^T dG                [dk][dk]
 *   dbeta_t = v_{t+o}^T dG phi_t + phi_t^T dS phi_t
 *   dphi_t  = beta_t (dG^T v_{t+o} + (dS + dS^T) phi_t)
 *   du = (dphi - phi <phi, dphi>) f'(u) / |f|,   dP += du x^T, dp += du
 *     (linear features: du = dphi, and there is no p)
 *   dz = dbeta beta (1 - beta),  dw += dz x,  dc += dz
 */
int
sa_memory_train_backward(const sa_memory_params *mp, const float *X, const float *V, int n,
    const int *seg, int n_seg, const float *u, const float *phi, const float *beta, const float *G, const float *S,
    double lambda, const float *dM, sa_memory_grads *gr)
{
	int Hk = mp->Hk, dh = mp->dh, dk = mp->dk, Dkv = Hk * dh, dx = mp->dx, rc = SA_OK;
	size_t ndk = (size_t)dk * dk;
	double *L = malloc(ndk * sizeof *L), *M = malloc((size_t)dh * dk * sizeof *M);
	double *dG = malloc((size_t)dh * dk * sizeof *dG), *dS = malloc(ndk * sizeof *dS);
	double *dphi = malloc((size_t)dk * sizeof *dphi), *row = malloc((size_t)dk * sizeof *row);

	if (!L || !M || !dG || !dS || !dphi || !row) {
		rc = sa_fail(SA_EINTERNAL, "out of memory");
		goto done;
	}
	for (int h = 0; h < Hk; h++) {
		const float *Gh = G + (size_t)h * dh * dk, *Sh = S + h * ndk, *dMh = dM + (size_t)h * dh * dk;
		if ((rc = factor(Sh, dk, lambda, L)) != SA_OK)
			goto done;
		for (int i = 0; i < dh; i++) {
			for (int j = 0; j < dk; j++)
				row[j] = Gh[(size_t)i * dk + j];
			cholesky_solve(L, dk, row);
			memcpy(M + (size_t)i * dk, row, dk * sizeof *row);
			for (int j = 0; j < dk; j++)
				row[j] = dMh[(size_t)i * dk + j];
			cholesky_solve(L, dk, row);
			memcpy(dG + (size_t)i * dk, row, dk * sizeof *row);
		}
		for (int a = 0; a < dk; a++)
			for (int b = 0; b < dk; b++) {
				double s = 0;
				for (int i = 0; i < dh; i++)
					s += M[(size_t)i * dk + a] * dG[(size_t)i * dk + b];
				dS[(size_t)a * dk + b] = -s;
			}
		for (int t = 0, next = 0; t < n; t++) {
			if (t + mp->offset >= segment_end(seg, n_seg, n, t, &next))
				continue;
			const float *x = X + (size_t)t * dx;
			const float *v = V + (size_t)(t + mp->offset) * Dkv + (size_t)h * dh;
			const float *ph = phi + ((size_t)t * Hk + h) * dk, *uh = u + ((size_t)t * Hk + h) * dk;
			double b = beta[(size_t)t * Hk + h], db = 0, dot = 0, fnorm = 0;
			for (int j = 0; j < dk; j++) {
				double gv = 0, sp = 0;
				for (int i = 0; i < dh; i++)
					gv += dG[(size_t)i * dk + j] * v[i];
				for (int i = 0; i < dk; i++)
					sp += (dS[(size_t)j * dk + i] + dS[(size_t)i * dk + j]) * ph[i];
				db += gv * ph[j] + 0.5 * sp * ph[j];
				dphi[j] = b * (gv + sp);
				dot += dphi[j] * ph[j];
			}
			for (int j = 0; j < dk; j++) {
				double f = uh[j] > 0 ? uh[j] + 1.0 : exp(uh[j]);
				fnorm += f * f;
			}
			fnorm = sqrt(fnorm + PHI_EPS);
			float *dP = gr->P + (size_t)h * dk * dx;
			for (int j = 0; j < dk; j++) {
				double fp = uh[j] > 0 ? 1.0 : exp(uh[j]);
				double du = mp->linear ? dphi[j] : (dphi[j] - ph[j] * dot) * fp / fnorm;
				if (!mp->linear)
					gr->p[(size_t)h * dk + j] += (float)du;
				for (int k = 0; k < dx; k++)
					dP[(size_t)j * dx + k] += (float)(du * x[k]);
			}
			double dz = db * b * (1 - b);
			for (int k = 0; k < dx; k++)
				gr->w[(size_t)h * dx + k] += (float)(dz * x[k]);
			gr->c[h] += (float)dz;
		}
	}
done:
	free(L);
	free(M);
	free(dG);
	free(dS);
	free(dphi);
	free(row);
	return rc;
}

/*
 * The read-out as the trainer's side path takes it (sa_tside, H [r][Dkv]
 * with W1 [d_out][Dkv] and W2 [r][d_in]):
 *   H [Hk*dk][Hk*dh],  H[h*dk + j][h*dh + i] = M[h][i][j], 0 off the blocks
 * so that W1 H^T = W1 blockdiag(M), as sa_delta_factors makes B.
 */
void
sa_memory_side(const float *M, int Hk, int dh, int dk, float *H)
{
	size_t Dkv = (size_t)Hk * dh;

	memset(H, 0, (size_t)Hk * dk * Dkv * sizeof *H);
	for (int h = 0; h < Hk; h++)
		for (int i = 0; i < dh; i++)
			for (int j = 0; j < dk; j++)
				H[((size_t)h * dk + j) * Dkv + (size_t)h * dh + i] = M[((size_t)h * dh + i) * dk + j];
}

/* dM [Hk][dh][dk] += the blocks of dH [Hk*dk][Hk*dh] (off them, nothing
 * flows: H is zero there whatever the memory holds). */
void
sa_memory_side_backward(const float *dH, int Hk, int dh, int dk, float *dM)
{
	size_t Dkv = (size_t)Hk * dh;

	for (int h = 0; h < Hk; h++)
		for (int i = 0; i < dh; i++)
			for (int j = 0; j < dk; j++)
				dM[((size_t)h * dh + i) * dk + j] += dH[((size_t)h * dk + j) * Dkv + (size_t)h * dh + i];
}
