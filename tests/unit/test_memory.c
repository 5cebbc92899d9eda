/* test_memory.c - the least-squares memory (lib/memory.c): recall of what
 * was written, exact composition, the trainer's float sums against the
 * encoder's double ones, and gradients against finite differences; with
 * each key bound to its own value and to the next token's; with linear
 * features of a wider input; and the read-out's bits against the textbook
 * Cholesky order. */
#include <math.h>
#include <string.h>

#include "sa.h"
#include "t.h"

enum { HK = 2, DH = 4, DK = 12, DKV = HK * DH, DX = 20 };

static uint64_t seed = 7;

static float
rnd(void)
{
	seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
	return (float)((seed >> 40) / (double)(1 << 24) * 2 - 1);
}

static void
fill(float *x, size_t n, float scale)
{
	for (size_t i = 0; i < n; i++)
		x[i] = rnd() * scale;
}

static float P[HK * DK * DKV], p[HK * DK], w[HK * DKV], c[HK];
static sa_memory_params mp = { P, p, w, c, HK, DH, DK, 0, DKV, 0 };
/* linear features of an input of DX */
static float Pl[HK * DK * DX], wl[HK * DX], cl[HK];
static sa_memory_params ml = { Pl, NULL, wl, cl, HK, DH, DK, 1, DX, 1 };
static int split;    /* the second segment's start, 0: one segment */

/* loss = sum R .* M over every head, M read from the double sums of m */
static double
loss_of(const sa_memory_params *m, const float *K, const float *V, int n, double lambda,
    const float *R)
{
	double G[HK * DH * DK] = { 0 }, S[HK * DK * DK] = { 0 }, l = 0;
	float Gf[HK * DH * DK], Sf[HK * DK * DK], M[DH * DK];

	if (split) {
		sa_memory_write(m, K, V, split, G, S);
		sa_memory_write(m, K + split * m->dx, V + split * DKV, n - split, G, S);
	} else {
		sa_memory_write(m, K, V, n, G, S);
	}
	for (size_t i = 0; i < sizeof Gf / sizeof *Gf; i++)
		Gf[i] = (float)G[i];
	for (size_t i = 0; i < sizeof Sf / sizeof *Sf; i++)
		Sf[i] = (float)S[i];
	for (int h = 0; h < HK; h++) {
		sa_memory_read(Gf + h * DH * DK, Sf + h * DK * DK, DH, DK, lambda, M);
		for (int i = 0; i < DH * DK; i++)
			l += (double)R[h * DH * DK + i] * M[i];
	}
	return l;
}

/* the analytic gradient of one parameter against central differences */
static void
check_grad(const char *name, const sa_memory_params *m, float *param, const float *grad,
    int n_check, int stride, const float *K, const float *V, int n, double lambda, const float *R)
{
	for (int k = 0; k < n_check; k++) {
		int i = k * stride;
		float keep = param[i];
		double h = 1e-2, lp, lm, fd;
		param[i] = keep + (float)h;
		lp = loss_of(m, K, V, n, lambda, R);
		param[i] = keep - (float)h;
		lm = loss_of(m, K, V, n, lambda, R);
		param[i] = keep;
		fd = (lp - lm) / (2 * h);
		if (fabs(fd - grad[i]) > 2e-3 + 2e-2 * fabs(fd))
			fprintf(stderr, "%s[%d]: analytic %g, finite differences %g\n", name, i, grad[i], fd);
		CHECK(fabs(fd - grad[i]) <= 2e-3 + 2e-2 * fabs(fd));
	}
}

/*
 * M [dh][dk] = G (S + lambda I)^-1 the textbook way: each entry of the
 * factor and of each substitution one chain of subtractions, k ascending.
 * sa_memory_read sums side by side in the same order, so the same bits.
 */
static void
read_textbook(const float *G, const float *S, int dh, int dk, double lambda, float *M)
{
	static double L[64 * 64], x[64];

	for (int i = 0; i < dk; i++)
		for (int j = 0; j <= i; j++)
			L[i * dk + j] = 0.5 * ((double)S[i * dk + j] + S[j * dk + i]) + (i == j ? lambda : 0);
	for (int j = 0; j < dk; j++) {
		double d = L[j * dk + j];
		for (int k = 0; k < j; k++)
			d -= L[j * dk + k] * L[j * dk + k];
		L[j * dk + j] = d = sqrt(d);
		for (int i = j + 1; i < dk; i++) {
			double s = L[i * dk + j];
			for (int k = 0; k < j; k++)
				s -= L[i * dk + k] * L[j * dk + k];
			L[i * dk + j] = s / d;
		}
	}
	for (int r = 0; r < dh; r++) {
		for (int i = 0; i < dk; i++) {
			double s = G[r * dk + i];
			for (int k = 0; k < i; k++)
				s -= L[i * dk + k] * x[k];
			x[i] = s / L[i * dk + i];
		}
		for (int i = dk - 1; i >= 0; i--) {
			double s = x[i];
			for (int k = i + 1; k < dk; k++)
				s -= L[k * dk + i] * x[k];
			x[i] = s / L[i * dk + i];
		}
		for (int i = 0; i < dk; i++)
			M[r * dk + i] = (float)x[i];
	}
}

static void
test_read_bits(void)
{
	enum { RH = 7, RK = 40, RN = 90 };
	static float X[RN * RK], G[RH * RK], S[RK * RK], M[RH * RK], Mt[RH * RK];

	fill(X, RN * RK, 1.0f);
	fill(G, RH * RK, 3.0f);
	for (int i = 0; i < RK; i++)
		for (int j = 0; j < RK; j++) {
			double s = 0;
			for (int t = 0; t < RN; t++)
				s += (double)X[t * RK + i] * X[t * RK + j];
			S[i * RK + j] = (float)s;
		}
	CHECK_OK(sa_memory_read(G, S, RH, RK, 0.1, M));
	read_textbook(G, S, RH, RK, 0.1, Mt);
	CHECK(memcmp(M, Mt, sizeof M) == 0);
}

int
main(void)
{
	enum { N = 10 };
	float K[2 * N * DKV], V[2 * N * DKV];
	double G[HK * DH * DK] = { 0 }, S[HK * DK * DK] = { 0 };
	double GA[HK * DH * DK] = { 0 }, SA[HK * DK * DK] = { 0 };

	fill(P, sizeof P / sizeof *P, 0.6f);
	fill(p, sizeof p / sizeof *p, 0.3f);
	fill(w, sizeof w / sizeof *w, 0.2f);
	fill(K, sizeof K / sizeof *K, 1.0f);
	fill(V, sizeof V / sizeof *V, 1.0f);

	/* Recall: with every token written fully (beta -> 1) and fewer tokens
	 * than features, M phi_t gives v_t back. */
	for (int h = 0; h < HK; h++)
		c[h] = 30;
	CHECK_OK(sa_memory_write(&mp, K, V, N, G, S));
	{
		float Gf[DH * DK], Sf[DK * DK], M[DH * DK];
		float u[N * HK * DK], phi[N * HK * DK], beta[N * HK];
		float G2[HK * DH * DK], S2[HK * DK * DK];
		double worst = 0;
		CHECK_OK(sa_memory_train_forward(&mp, K, V, N, NULL, 0, u, phi, beta, G2, S2));
		for (int h = 0; h < HK; h++) {
			for (int i = 0; i < DH * DK; i++)
				Gf[i] = (float)G[h * DH * DK + i];
			for (int i = 0; i < DK * DK; i++)
				Sf[i] = (float)S[h * DK * DK + i];
			CHECK_OK(sa_memory_read(Gf, Sf, DH, DK, 1e-6, M));
			for (int t = 0; t < N; t++)
				for (int i = 0; i < DH; i++) {
					double r = 0;
					for (int j = 0; j < DK; j++)
						r += (double)M[i * DK + j] * phi[(t * HK + h) * DK + j];
					r -= V[t * DKV + h * DH + i];
					worst = fabs(r) > worst ? fabs(r) : worst;
				}
		}
		fprintf(stderr, "recall of %d tokens in %d features: worst error %.2g\n", N, DK, worst);
		CHECK(worst < 1e-2);
		/* the trainer's float sums are the encoder's double ones */
		for (int i = 0; i < HK * DH * DK; i++)
			CHECK_NEAR(G2[i], G[i], 1e-5 * (1 + fabs(G[i])));
		for (int i = 0; i < HK * DK * DK; i++)
			CHECK_NEAR(S2[i], S[i], 1e-5 * (1 + fabs(S[i])));
	}

	/* Composition: A then B equals the sum of the two. */
	memset(G, 0, sizeof G);
	memset(S, 0, sizeof S);
	CHECK_OK(sa_memory_write(&mp, K, V, 2 * N, G, S));
	CHECK_OK(sa_memory_write(&mp, K, V, N, GA, SA));
	CHECK_OK(sa_memory_write(&mp, K + N * DKV, V + N * DKV, N, GA, SA));
	for (int i = 0; i < HK * DH * DK; i++)
		CHECK_NEAR(GA[i], G[i], 1e-12 * (1 + fabs(G[i])));
	for (int i = 0; i < HK * DK * DK; i++)
		CHECK_NEAR(SA[i], S[i], 1e-12 * (1 + fabs(S[i])));

	/* A singular memory without lambda is refused, not inverted. */
	{
		float Z[DK * DK] = { 0 }, Gz[DH * DK] = { 0 }, M[DH * DK];
		CHECK(sa_memory_read(Gz, Z, DH, DK, 0, M) == SA_EDATA);
	}

	/* Gradients, with partial writes (beta around 1/2) and a few more
	 * tokens than features, where the solve matters; then with each key
	 * bound to the next token's value, over two segments. */
	for (int h = 0; h < HK; h++)
		c[h] = 0.3f * (float)h;
	for (int offset = 0; offset <= 1; offset++) {
		int n = 2 * N, seg[2] = { 0, N };
		double lambda = 0.5;
		float R[HK * DH * DK], u[2 * N * HK * DK], phi[2 * N * HK * DK], beta[2 * N * HK];
		float Gf[HK * DH * DK], Sf[HK * DK * DK];
		float gP[sizeof P / sizeof *P] = { 0 }, gp[sizeof p / sizeof *p] = { 0 };
		float gw[sizeof w / sizeof *w] = { 0 }, gc[HK] = { 0 };
		sa_memory_grads gr = { gP, gp, gw, gc };
		mp.offset = offset;
		split = offset ? N : 0;
		fill(R, sizeof R / sizeof *R, 1.0f);
		CHECK_OK(sa_memory_train_forward(&mp, K, V, n, offset ? seg : NULL, offset ? 2 : 0,
		    u, phi, beta, Gf, Sf));
		CHECK_OK(sa_memory_train_backward(&mp, K, V, n, offset ? seg : NULL, offset ? 2 : 0,
		    u, phi, beta, Gf, Sf, lambda, R, &gr));
		check_grad("P", &mp, P, gP, 12, 17, K, V, n, lambda, R);
		check_grad("p", &mp, p, gp, 8, 3, K, V, n, lambda, R);
		check_grad("w", &mp, w, gw, 8, 2, K, V, n, lambda, R);
		check_grad("c", &mp, c, gc, HK, 1, K, V, n, lambda, R);
	}
	split = 0;

	/* Value offset 1: M phi_t gives v_{t+1} back, the last token of a
	 * segment is not written, and a pair never spans two segments. */
	mp.offset = 1;
	for (int h = 0; h < HK; h++)
		c[h] = 30;
	{
		double G1[HK * DH * DK] = { 0 }, S1[HK * DK * DK] = { 0 };
		double Gw[HK * DH * DK] = { 0 }, Sw[HK * DK * DK] = { 0 };
		float Gs[HK * DH * DK], Ss[HK * DK * DK], M[DH * DK], Gh[DH * DK], Sh[DK * DK];
		float u[2 * N * HK * DK], phi[2 * N * HK * DK], beta[2 * N * HK];
		int seg[2] = { 0, N };
		double worst = 0, apart = 0;
		CHECK_OK(sa_memory_write(&mp, K, V, N, G1, S1));
		CHECK_OK(sa_memory_write(&mp, K + N * DKV, V + N * DKV, N, G1, S1));
		CHECK_OK(sa_memory_write(&mp, K, V, 2 * N, Gw, Sw));
		CHECK_OK(sa_memory_train_forward(&mp, K, V, 2 * N, seg, 2, u, phi, beta, Gs, Ss));
		for (int i = 0; i < HK * DH * DK; i++) {
			CHECK_NEAR(Gs[i], G1[i], 1e-5 * (1 + fabs(G1[i])));
			apart = fmax(apart, fabs(Gw[i] - G1[i]));
		}
		for (int i = 0; i < HK * DK * DK; i++)
			CHECK_NEAR(Ss[i], S1[i], 1e-5 * (1 + fabs(S1[i])));
		CHECK(apart > 1e-3);    /* one long segment holds one pair more */
		CHECK(beta[(N - 1) * HK] == 0 && beta[(2 * N - 1) * HK + 1] == 0 && beta[0] > 0.9f);
		memset(G1, 0, sizeof G1);
		memset(S1, 0, sizeof S1);
		CHECK_OK(sa_memory_write(&mp, K, V, N, G1, S1));
		for (int h = 0; h < HK; h++) {
			for (int i = 0; i < DH * DK; i++)
				Gh[i] = (float)G1[h * DH * DK + i];
			for (int i = 0; i < DK * DK; i++)
				Sh[i] = (float)S1[h * DK * DK + i];
			CHECK_OK(sa_memory_read(Gh, Sh, DH, DK, 1e-6, M));
			for (int t = 0; t + 1 < N; t++)
				for (int i = 0; i < DH; i++) {
					double r = 0;
					for (int j = 0; j < DK; j++)
						r += (double)M[i * DK + j] * phi[(t * HK + h) * DK + j];
					r -= V[(t + 1) * DKV + h * DH + i];
					worst = fabs(r) > worst ? fabs(r) : worst;
				}
		}
		fprintf(stderr, "offset 1: recall of %d next values: worst error %.2g\n", N - 1, worst);
		CHECK(worst < 1e-2);
	}
	mp.offset = 0;

	/* Linear features of a wider input (the matrix's own): fewer tokens
	 * than features come back exactly, P x of the same x reads them; the
	 * gradients over two segments, with gates near 1/2. */
	{
		float X[2 * N * DX], u[2 * N * HK * DK], phi[2 * N * HK * DK], beta[2 * N * HK];
		float Gf[HK * DH * DK], Sf[HK * DK * DK], M[DH * DK], R[HK * DH * DK];
		float gP[sizeof Pl / sizeof *Pl] = { 0 }, gw[sizeof wl / sizeof *wl] = { 0 }, gc[HK] = { 0 };
		sa_memory_grads gr = { gP, NULL, gw, gc };
		int seg[2] = { 0, N };
		double worst = 0;
		fill(Pl, sizeof Pl / sizeof *Pl, 0.3f);
		fill(wl, sizeof wl / sizeof *wl, 0.2f);
		fill(X, sizeof X / sizeof *X, 1.0f);
		for (int h = 0; h < HK; h++)
			cl[h] = 30;
		CHECK_OK(sa_memory_train_forward(&ml, X, V, N, NULL, 0, u, phi, beta, Gf, Sf));
		for (int h = 0; h < HK; h++) {
			CHECK_OK(sa_memory_read(Gf + h * DH * DK, Sf + h * DK * DK, DH, DK, 1e-6, M));
			for (int t = 0; t + 1 < N; t++)
				for (int i = 0; i < DH; i++) {
					double r = 0;
					for (int j = 0; j < DK; j++) {
						double f = 0;
						for (int k = 0; k < DX; k++)
							f += (double)Pl[(h * DK + j) * DX + k] * X[t * DX + k];
						r += (double)M[i * DK + j] * f;
					}
					r -= V[(t + 1) * DKV + h * DH + i];
					worst = fabs(r) > worst ? fabs(r) : worst;
				}
		}
		fprintf(stderr, "linear features: recall of %d next values: worst error %.2g\n", N - 1, worst);
		CHECK(worst < 1e-2);
		for (int h = 0; h < HK; h++)
			cl[h] = 0.2f * (float)h;
		split = N;
		fill(R, sizeof R / sizeof *R, 1.0f);
		CHECK_OK(sa_memory_train_forward(&ml, X, V, 2 * N, seg, 2, u, phi, beta, Gf, Sf));
		CHECK_OK(sa_memory_train_backward(&ml, X, V, 2 * N, seg, 2, u, phi, beta, Gf, Sf, 0.5, R, &gr));
		check_grad("P (linear)", &ml, Pl, gP, 12, 19, X, V, 2 * N, 0.5, R);
		check_grad("w (linear)", &ml, wl, gw, 8, 3, X, V, 2 * N, 0.5, R);
		check_grad("c (linear)", &ml, cl, gc, HK, 1, X, V, 2 * N, 0.5, R);
		split = 0;
	}

	/* The side layout: W1 H^T is W1 blockdiag(M), and dH folds back onto M
	 * as its transpose. */
	{
		float M[HK * DH * DK], H[HK * DK * DKV], dM[HK * DH * DK] = { 0 }, W1[3 * DKV];
		fill(M, sizeof M / sizeof *M, 1.0f);
		fill(W1, sizeof W1 / sizeof *W1, 1.0f);
		sa_memory_side(M, HK, DH, DK, H);
		for (int o = 0; o < 3; o++)
			for (int h = 0; h < HK; h++)
				for (int j = 0; j < DK; j++) {
					double via_h = 0, direct = 0;
					for (int c = 0; c < DKV; c++)
						via_h += (double)W1[o * DKV + c] * H[(h * DK + j) * DKV + c];
					for (int i = 0; i < DH; i++)
						direct += (double)W1[o * DKV + h * DH + i] * M[(h * DH + i) * DK + j];
					CHECK_NEAR(via_h, direct, 1e-5);
				}
		sa_memory_side_backward(H, HK, DH, DK, dM);
		for (int i = 0; i < HK * DH * DK; i++)
			CHECK(dM[i] == M[i]);
	}
	test_read_bits();
	return t_done();
}
