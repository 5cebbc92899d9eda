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
 * trainer takes the same sums as float matrix products.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "sa.h"

#define PHI_EPS 1e-12

/* The solves' loops, compiled for wider vectors too and chosen by cpuid at
 * load: each element still one multiply and one subtraction (no fused
 * multiply-adds, see the Makefile), so the same bits on every CPU. */
#if defined(__GNUC__) && defined(__x86_64__) && defined(__ELF__)
#define WIDE __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define WIDE
#endif

static double
sigmoid(double z)
{
	return 1 / (1 + exp(-z));
}

/* phi [dk], beta of token x [dx] for memory h. */
static double
features(const sa_memory_params *mp, int h, const float *x, double *phi)
{
	int dx = mp->dx, dk = mp->dk;
	const float *P = mp->P + (size_t)h * dk * dx, *w = mp->w + (size_t)h * dx;
	double norm = 0, z = mp->c[h];

	for (int i = 0; i < dk; i++) {
		double a = mp->linear ? 0 : mp->p[(size_t)h * dk + i];
		for (int j = 0; j < dx; j++)
			a += (double)P[(size_t)i * dx + j] * x[j];
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

/* Head h's sums over one segment of n tokens, in double and in order (the
 * last o tokens have no value o tokens on, and are not written). */
int
sa_memory_write_head(const sa_memory_params *mp, int h, const float *X, const float *V, int n,
    double *G, double *S)
{
	int Hk = mp->Hk, dh = mp->dh, dk = mp->dk, Dkv = Hk * dh;
	double *ph = malloc((size_t)dk * sizeof *ph);

	if (!ph)
		return sa_fail(SA_EINTERNAL, "out of memory");
	for (int t = 0; t + mp->offset < n; t++) {
		const float *x = X + (size_t)t * mp->dx;
		const float *v = V + (size_t)(t + mp->offset) * Dkv + (size_t)h * dh;
		double b = features(mp, h, x, ph);
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
	return SA_OK;
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

/*
 * L L^T = A [n][n] in place (lower triangle), and T [n][n] = L^T (row k of
 * T holds column k of L below the diagonal); 0 unless positive definite.
 * Each entry of L is the sum of the textbook order, k ascending,
 *   L[i][j] = (A[i][j] - sum_k<j L[i][k] L[j][k]) / L[j][j],
 * but a column's entries are summed side by side: one subtraction for all
 * of them at each k, reading row k of T, where an entry's own chain of n
 * dependent subtractions left the CPU waiting on each.  Same bits.
 */
WIDE static int
cholesky(double *A, double *T, int n)
{
	for (int j = 0; j < n; j++) {
		double *c = T + (size_t)j * n, d = A[(size_t)j * n + j];
		for (int k = 0; k < j; k++)
			d -= A[(size_t)j * n + k] * A[(size_t)j * n + k];
		if (!(d > 0))
			return 0;
		d = sqrt(d);
		A[(size_t)j * n + j] = d;
		for (int i = j + 1; i < n; i++)
			c[i] = A[(size_t)i * n + j];
		for (int k = 0; k < j; k++) {
			const double *tk = T + (size_t)k * n;
			double ljk = A[(size_t)j * n + k];
			for (int i = j + 1; i < n; i++)
				c[i] -= tk[i] * ljk;
		}
		for (int i = j + 1; i < n; i++)
			A[(size_t)i * n + j] = c[i] /= d;
	}
	return 1;
}

/*
 * X := (L L^T)^-1 X for the factors L, T of cholesky and X [n][m]: m
 * right-hand sides as columns, substituted side by side, each in the
 * textbook order (forward, then back).
 */
WIDE static void
cholesky_solve(const double *L, const double *T, int n, double *X, int m)
{
	for (int i = 0; i < n; i++) {
		double *xi = X + (size_t)i * m;
		for (int k = 0; k < i; k++) {
			const double *xk = X + (size_t)k * m;
			double l = L[(size_t)i * n + k];
			for (int r = 0; r < m; r++)
				xi[r] -= l * xk[r];
		}
		for (int r = 0; r < m; r++)
			xi[r] /= L[(size_t)i * n + i];
	}
	for (int i = n - 1; i >= 0; i--) {
		double *xi = X + (size_t)i * m;
		for (int k = i + 1; k < n; k++) {
			const double *xk = X + (size_t)k * m;
			double l = T[(size_t)i * n + k];
			for (int r = 0; r < m; r++)
				xi[r] -= l * xk[r];
		}
		for (int r = 0; r < m; r++)
			xi[r] /= L[(size_t)i * n + i];
	}
}

/*
 * L, T [dk][dk]: the Cholesky factors of S + lambda I.  The solve reads the
 * lower triangle of the mean of S and S^T, so that rounding in a file
 * cannot make S asymmetric.
 */
static int
factor(const float *S, int dk, double lambda, double *L, double *T)
{
	for (int i = 0; i < dk; i++)
		for (int j = 0; j <= i; j++)
			L[(size_t)i * dk + j] = 0.5 * ((double)S[(size_t)i * dk + j] + S[(size_t)j * dk + i]) +
			    (i == j ? lambda : 0);
	if (!cholesky(L, T, dk))
		return sa_fail(SA_EDATA, "the memory's key sums are not positive definite");
	return SA_OK;
}

/* M [dh][dk] = G A^-1 for A = L L^T symmetric: A X = G^T, X [dk][dh] scratch. */
static void
solve_rows(const double *L, const double *T, int dk, const float *G, int dh, float *M, double *X)
{
	for (int i = 0; i < dh; i++)
		for (int j = 0; j < dk; j++)
			X[(size_t)j * dh + i] = G[(size_t)i * dk + j];
	cholesky_solve(L, T, dk, X, dh);
	for (int i = 0; i < dh; i++)
		for (int j = 0; j < dk; j++)
			M[(size_t)i * dk + j] = (float)X[(size_t)j * dh + i];
}

int
sa_memory_read(const float *G, const float *S, int dh, int dk, double lambda, float *M)
{
	size_t nn = (size_t)dk * dk;
	double *L = malloc((2 * nn + (size_t)dk * dh) * sizeof *L);
	int rc;

	if (!L)
		return sa_fail(SA_EINTERNAL, "out of memory");
	if ((rc = factor(S, dk, lambda, L, L + nn)) == SA_OK)
		solve_rows(L, L + nn, dk, G, dh, M, L + 2 * nn);
	free(L);
	return rc;
}

/* ------------------------------------------------------------- training */

/*
 * The trainer's sums are the same as the encoder's but taken as matrix
 * products in float (the context of an episode holds thousands of tokens,
 * and per token the features alone cost dk * dx multiply-adds a head): per
 * head h, over the tokens that are written (t + o inside t's segment),
 *   U = X P^T (+ p)        [n][dk]     phi = U, or f(U) / |f(U)|
 *   beta = sigmoid(X w + c)            [n]
 *   G = V_o^T (beta phi)   [dh][dk]    V_o: the values o tokens on
 *   S = phi^T (beta phi)   [dk][dk]
 * Rows of tokens not written are zero in phi and beta, so every product
 * runs over all n - o rows.
 */

/* Which of the n tokens are written: 1 where t + o is inside t's segment. */
static unsigned char *
written_mask(const sa_memory_params *mp, int n, const int *seg, int n_seg)
{
	unsigned char *m = malloc(n > 0 ? (size_t)n : 1);

	for (int t = 0, next = 0; m && t < n; t++)
		m[t] = t + mp->offset < segment_end(seg, n_seg, n, t, &next);
	return m;
}

/* Head h's features and gates of every token into u, phi [n][Hk][dk] and
 * beta [n][Hk] (zero for a token not written). */
static void
features_head(const sa_memory_params *mp, int h, const float *X, int n, const unsigned char *on,
    float *u, float *phi, float *beta)
{
	int Hk = mp->Hk, dk = mp->dk, dx = mp->dx, ld = Hk * dk;
	const float *P = mp->P + (size_t)h * dk * dx, *w = mp->w + (size_t)h * dx;
	float *uh = u + (size_t)h * dk, *ph = phi + (size_t)h * dk;

	/* U [n][dk] = X [n][dx] P^T */
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, dk, dx, 1.0f, X, dx, P, dx,
	    0.0f, uh, ld);
	/* beta [n] = X w, then the gate */
	cblas_sgemv(CblasRowMajor, CblasNoTrans, n, dx, 1.0f, X, dx, w, 1, 0.0f, beta + h, Hk);
	for (int t = 0; t < n; t++) {
		float *ut = uh + (size_t)t * ld, *pt = ph + (size_t)t * ld;
		if (!on[t]) {
			memset(ut, 0, (size_t)dk * sizeof *ut);
			memset(pt, 0, (size_t)dk * sizeof *pt);
			beta[(size_t)t * Hk + h] = 0;
			continue;
		}
		beta[(size_t)t * Hk + h] = (float)sigmoid((double)beta[(size_t)t * Hk + h] + mp->c[h]);
		if (mp->linear) {
			memcpy(pt, ut, (size_t)dk * sizeof *pt);
			continue;
		}
		double norm = 0;
		for (int i = 0; i < dk; i++) {
			double a = (double)ut[i] + mp->p[(size_t)h * dk + i];
			ut[i] = (float)a;
			pt[i] = (float)(a > 0 ? a + 1 : exp(a));
			norm += (double)pt[i] * pt[i];
		}
		norm = 1 / sqrt(norm + PHI_EPS);
		for (int i = 0; i < dk; i++)
			pt[i] = (float)(pt[i] * norm);
	}
}

int
sa_memory_train_forward(const sa_memory_params *mp, const float *X, const float *V, int n,
    const int *seg, int n_seg, float *u, float *phi, float *beta, float *G, float *S)
{
	int Hk = mp->Hk, dh = mp->dh, dk = mp->dk, ld = Hk * dk, Dkv = Hk * dh;
	int m = n - mp->offset;     /* rows that can be written */
	unsigned char *on = written_mask(mp, n, seg, n_seg);
	float *B = malloc((size_t)(m > 0 ? m : 1) * dk * sizeof *B);

	if (!on || !B) {
		free(on);
		free(B);
		return sa_fail(SA_EINTERNAL, "out of memory");
	}
	for (int h = 0; h < Hk; h++) {
		const float *ph = phi + (size_t)h * dk;
		features_head(mp, h, X, n, on, u, phi, beta);
		memset(G + (size_t)h * dh * dk, 0, (size_t)dh * dk * sizeof *G);
		memset(S + (size_t)h * dk * dk, 0, (size_t)dk * dk * sizeof *S);
		if (m <= 0)
			continue;
		/* B [m][dk] = beta phi */
		for (int t = 0; t < m; t++) {
			float b = beta[(size_t)t * Hk + h];
			for (int i = 0; i < dk; i++)
				B[(size_t)t * dk + i] = b * ph[(size_t)t * ld + i];
		}
		/* G [dh][dk] = V_o^T B; S [dk][dk] = phi^T B */
		cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, dh, dk, m, 1.0f,
		    V + (size_t)mp->offset * Dkv + (size_t)h * dh, Dkv, B, dk, 0.0f, G + (size_t)h * dh * dk, dk);
		cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, dk, dk, m, 1.0f, ph, ld, B, dk,
		    0.0f, S + (size_t)h * dk * dk, dk);
	}
	free(on);
	free(B);
	return SA_OK;
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
 * The per-token terms are products over all tokens at once:
 *   GV = V_o dG [n][dk],  SP = phi (dS + dS^T) [n][dk],  dP += dU^T X.
 */
int
sa_memory_train_backward(const sa_memory_params *mp, const float *X, const float *V, int n,
    const int *seg, int n_seg, const float *u, const float *phi, const float *beta, const float *G, const float *S,
    double lambda, const float *dM, sa_memory_grads *gr)
{
	int Hk = mp->Hk, dh = mp->dh, dk = mp->dk, Dkv = Hk * dh, dx = mp->dx, ld = Hk * dk;
	int m = n - mp->offset, rc = SA_OK;
	size_t ndk = (size_t)dk * dk, rows = (size_t)(m > 0 ? m : 1);
	double *L = malloc((2 * ndk + (size_t)dk * dh) * sizeof *L);
	float *M = malloc((size_t)dh * dk * sizeof *M), *dG = malloc((size_t)dh * dk * sizeof *dG);
	float *dS = malloc(ndk * sizeof *dS), *GV = malloc(rows * dk * sizeof *GV);
	float *SP = malloc(rows * dk * sizeof *SP), *dz = malloc(rows * sizeof *dz);
	unsigned char *on = written_mask(mp, n, seg, n_seg);

	if (!L || !M || !dG || !dS || !GV || !SP || !dz || !on) {
		rc = sa_fail(SA_EINTERNAL, "out of memory");
		goto done;
	}
	for (int h = 0; h < Hk && m > 0; h++) {
		const float *Gh = G + (size_t)h * dh * dk, *Sh = S + h * ndk, *dMh = dM + (size_t)h * dh * dk;
		const float *ph = phi + (size_t)h * dk, *uh = u + (size_t)h * dk;
		if ((rc = factor(Sh, dk, lambda, L, L + ndk)) != SA_OK)
			goto done;
		solve_rows(L, L + ndk, dk, Gh, dh, M, L + 2 * ndk);
		solve_rows(L, L + ndk, dk, dMh, dh, dG, L + 2 * ndk);
		/* dS + dS^T = -(M^T dG + dG^T M) [dk][dk] */
		cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, dk, dk, dh, -1.0f, M, dk, dG, dk,
		    0.0f, dS, dk);
		for (int a = 0; a < dk; a++)
			for (int b = a; b < dk; b++) {
				float s = dS[(size_t)a * dk + b] + dS[(size_t)b * dk + a];
				dS[(size_t)a * dk + b] = dS[(size_t)b * dk + a] = s;
			}
		/* GV [m][dk] = V_o dG; SP [m][dk] = phi (dS + dS^T) */
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, dk, dh, 1.0f,
		    V + (size_t)mp->offset * Dkv + (size_t)h * dh, Dkv, dG, dk, 0.0f, GV, dk);
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, dk, dk, 1.0f, ph, ld, dS, dk,
		    0.0f, SP, dk);
		/* per token: dbeta, then GV becomes du */
		for (int t = 0; t < m; t++) {
			const float *pt = ph + (size_t)t * ld, *ut = uh + (size_t)t * ld;
			float *du = GV + (size_t)t * dk;
			const float *sp = SP + (size_t)t * dk;
			double b = beta[(size_t)t * Hk + h], db = 0, dot = 0, fnorm = 0;
			if (!on[t]) {
				memset(du, 0, (size_t)dk * sizeof *du);
				dz[t] = 0;
				continue;
			}
			for (int j = 0; j < dk; j++) {
				double dphi = b * ((double)du[j] + sp[j]);
				db += ((double)du[j] + 0.5 * sp[j]) * pt[j];
				du[j] = (float)dphi;
				dot += dphi * pt[j];
			}
			dz[t] = (float)(db * b * (1 - b));
			if (mp->linear)
				continue;
			for (int j = 0; j < dk; j++) {
				double f = ut[j] > 0 ? ut[j] + 1.0 : exp(ut[j]);
				fnorm += f * f;
			}
			fnorm = sqrt(fnorm + PHI_EPS);
			for (int j = 0; j < dk; j++) {
				double fp = ut[j] > 0 ? 1.0 : exp(ut[j]);
				du[j] = (float)(((double)du[j] - pt[j] * dot) * fp / fnorm);
				gr->p[(size_t)h * dk + j] += du[j];
			}
		}
		/* dP [dk][dx] += dU^T X;  dw [dx] += X^T dz;  dc += sum dz */
		cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, dk, dx, m, 1.0f, GV, dk, X, dx,
		    1.0f, gr->P + (size_t)h * dk * dx, dx);
		cblas_sgemv(CblasRowMajor, CblasTrans, m, dx, 1.0f, X, dx, dz, 1, 1.0f,
		    gr->w + (size_t)h * dx, 1);
		double c = 0;
		for (int t = 0; t < m; t++)
			c += dz[t];
		gr->c[h] += (float)c;
	}
done:
	free(L);
	free(M);
	free(dG);
	free(dS);
	free(GV);
	free(SP);
	free(dz);
	free(on);
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
