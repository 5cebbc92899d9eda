/*
 * test_encode - the context mapping against a plain reference, the encoder
 * against the reference on a real forward pass, chain composition, and
 * determinism; a memory keyed by a matrix's input, its initialisation and
 * its sums.  Its kernels' paths against each other: test_kernels.
 * usage: test_encode MODEL.gguf (a small random model).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sa.h"
#include "adapter_impl.h"
#include "kernels_impl.h"   /* sa_rows_to_f32 */
#include "t.h"

static uint64_t rng_state = 42;

static double
urand(void)
{
	return sa_unif(&rng_state);
}

static void
fill(float *x, size_t n, double lo, double hi)
{
	for (size_t i = 0; i < n; i++)
		x[i] = (float)(lo + (hi - lo) * urand());
}

/*
 * The mapping as streamadapter.md writes it, one chunk, head, slot and
 * element at a time: k, v [n][Hk*dh]; h [Hk][r][dh]; P [Hk][r].
 */
static void
reference_map(const sa_adapter_mat *am, int Hk, int dh, int r, int C,
    const float *k, const float *v, int n, double *h, double *P)
{
	int ld = Hk * dh;

	for (int t0 = 0; t0 < n; t0 += C) {
		int c = n - t0 < C ? n - t0 : C;
		for (int hd = 0; hd < Hk; hd++) {
			for (int i = 0; i < r; i++) {
				double w[4096], mx = -1e300, sum = 0, S[256], z, a;
				for (int t = 0; t < c; t++) {
					double s = 0;
					for (int j = 0; j < dh; j++)
						s += (double)am->Q[(hd * r + i) * dh + j] * k[(t0 + t) * ld + hd * dh + j];
					w[t] = s / sqrt((double)dh);
					if (w[t] > mx)
						mx = w[t];
				}
				for (int t = 0; t < c; t++)
					sum += w[t] = exp(w[t] - mx);
				for (int j = 0; j < dh; j++) {
					S[j] = 0;
					for (int t = 0; t < c; t++)
						S[j] += w[t] / sum * v[(t0 + t) * ld + hd * dh + j];
				}
				z = am->b[hd * r + i];
				for (int j = 0; j < dh; j++)
					z += am->g[hd * dh + j] * S[j];
				a = 1 / (1 + exp(-z));
				for (int j = 0; j < dh; j++)
					h[(hd * r + i) * dh + j] = a * h[(hd * r + i) * dh + j] + S[j];
				P[hd * r + i] *= a;
			}
		}
	}
}

static double
max_diff(const double *a, const double *b, size_t n)
{
	double m = 0;
	for (size_t i = 0; i < n; i++)
		if (fabs(a[i] - b[i]) > m || a[i] != a[i] || b[i] != b[i])
			m = a[i] != a[i] || b[i] != b[i] ? INFINITY : fabs(a[i] - b[i]);
	return m;
}

/* sa_context_map on random keys and values, against the reference, for
 * segment lengths around the chunk size. */
static void
test_kernel(void)
{
	enum { Hk = 2, dh = 12, r = 3, C = 5, NMAX = 23 };
	sa_adapter a;
	sa_adapter_mat mats[2 * SA_NMAT];
	float Q[Hk * r * dh], g[Hk * dh], b[Hk * r], k[NMAX * Hk * dh], v[NMAX * Hk * dh];
	static const int lens[] = { 1, 4, 5, 6, 10, 23 };

	memset(&a, 0, sizeof a);
	memset(mats, 0, sizeof mats);
	a.n_layer = 2;
	a.n_head_kv = Hk;
	a.d_head = dh;
	a.rank = r;
	a.chunk = C;
	a.mats = 1u << SA_MAT_V;
	a.mat = mats;
	fill(Q, sizeof Q / sizeof *Q, -1, 1);
	fill(g, sizeof g / sizeof *g, -0.5, 0.5);
	fill(b, sizeof b / sizeof *b, -1, 1);
	SA_ADAPTER_MAT(&a, 1, SA_MAT_V)->Q = Q;
	SA_ADAPTER_MAT(&a, 1, SA_MAT_V)->g = g;
	SA_ADAPTER_MAT(&a, 1, SA_MAT_V)->b = b;

	for (size_t L = 0; L < sizeof lens / sizeof *lens; L++) {
		int n = lens[L];
		double h[Hk * r * dh], P[Hk * r], hr[Hk * r * dh], Pr[Hk * r], hmax = 0;

		fill(k, (size_t)n * Hk * dh, -2, 2);
		fill(v, (size_t)n * Hk * dh, -1, 1);
		/* A state carried in from an earlier segment. */
		for (int i = 0; i < Hk * r * dh; i++)
			h[i] = hr[i] = urand() - 0.5;
		for (int i = 0; i < Hk * r; i++)
			P[i] = Pr[i] = 0.5 + 0.5 * urand();
		CHECK_OK(sa_context_map(&a, 1, SA_MAT_V, k, v, n, h, P));
		reference_map(SA_ADAPTER_MAT(&a, 1, SA_MAT_V), Hk, dh, r, C, k, v, n, hr, Pr);
		CHECK(max_diff(h, hr, Hk * r * dh) < 1e-12);
		CHECK(max_diff(P, Pr, Hk * r) < 1e-12);
		for (int i = 0; i < Hk * r * dh; i++)
			hmax = fmax(hmax, fabs(hr[i]));
		CHECK(hmax > 0.1);
	}
	/* A matrix the adapter does not adapt is refused. */
	{
		double h[Hk * r * dh] = { 0 }, P[Hk * r];
		CHECK(sa_context_map(&a, 1, SA_MAT_Q, k, v, 3, h, P) == SA_EINTERNAL);
		CHECK(sa_context_map(&a, 2, SA_MAT_V, k, v, 3, h, P) == SA_EINTERNAL);
	}
}

/* ------------------------------------------------------- on a real model */

typedef struct capture {
	int n_layer, dkv, n;
	float **k, **v;
} capture;

static void
capture_hook(void *ctx, int layer, int n, const float *k, const float *v)
{
	capture *c = ctx;

	c->n = n;
	memcpy(c->k[layer], k, (size_t)n * c->dkv * sizeof(float));
	memcpy(c->v[layer], v, (size_t)n * c->dkv * sizeof(float));
}

static void
random_tokens(int *toks, int n, int n_vocab, int bos)
{
	for (int i = 0; i < n; i++)
		toks[i] = (int)(urand() * n_vocab);
	if (bos >= 0)
		toks[0] = bos;
}

static sa_delta *
encode(sa_model *m, sa_adapter *a, const sa_delta *start, const int *const *segs,
    const int *lens, int n_segs)
{
	sa_encoder *e;
	sa_delta *d = NULL;

	CHECK_OK(sa_encoder_new(&e, m, a, start));
	if (!e)
		return NULL;
	for (int s = 0; s < n_segs; s++)
		CHECK_OK(sa_encoder_feed(e, segs[s], lens[s], 1));
	CHECK_OK(sa_delta_clone(&d, sa_encoder_delta(e)));
	sa_encoder_free(e);
	return d;
}

static double
delta_diff(const sa_delta *a, const sa_delta *b)
{
	size_t nh, np;
	double m = 0;

	sa_delta_sizes(a, &nh, &np);
	for (size_t i = 0; i < nh; i++)
		m = fmax(m, fabs((double)a->h[i] - b->h[i]));
	for (size_t i = 0; i < np; i++)
		m = fmax(m, fabs((double)a->P[i] - b->P[i]));
	return m;
}

static char *
delta_bytes(const sa_delta *d, size_t *len)
{
	char *buf = NULL;
	FILE *fp = open_memstream(&buf, len);

	CHECK_OK(sa_delta_write(d, fp, "memory"));
	fclose(fp);
	return buf;
}

/* Encoding the segments again with 1, 2 and 3 threads gives d's bytes. */
static void
same_with_any_threads(sa_model *m, sa_adapter *a, const sa_delta *d, const int *const *segs,
    const int *lens, int n_segs)
{
	size_t la, lb;
	char *ba = delta_bytes(d, &la), *bb;

	for (int nth = 1; nth <= 3; nth++) {
		sa_delta *again;
		sa_set_threads(nth);
		again = encode(m, a, NULL, segs, lens, n_segs);
		bb = delta_bytes(again, &lb);
		CHECK(la == lb && memcmp(ba, bb, la) == 0);
		free(bb);
		sa_delta_free(again);
	}
	sa_set_threads(0);
	free(ba);
}

static void
test_model(const char *path)
{
	sa_model *m;
	sa_adapter *a;
	sa_delta *ab, *da, *db, *again, *t1;
	capture cap;
	sa_kvcache *st;
	int bos, nA = 37, nB = 20, *A, *B, Hk, dh, r;
	const int *both[2];
	int lens[2];
	uint32_t mats = 1u << SA_MAT_Q | 1u << SA_MAT_V | 1u << SA_MAT_DOWN;
	size_t la, lb;
	char *ba, *bb;

	CHECK_OK(sa_model_load(&m, path));
	if (!m)
		return;
	CHECK_OK(sa_adapter_init(&a, m, 4, 8, mats, 7, 0));
	if (!a)
		return;
	Hk = a->n_head_kv;
	dh = a->d_head;
	r = a->rank;
	bos = sa_vocab_add_bos(m->vocab) ? sa_vocab_bos(m->vocab) : -1;
	A = malloc(nA * sizeof *A);
	B = malloc(nB * sizeof *B);
	random_tokens(A, nA, m->cfg.n_vocab, bos);
	random_tokens(B, nB, m->cfg.n_vocab, bos);
	both[0] = A, both[1] = B;
	lens[0] = nA, lens[1] = nB;

	/* The encoder's state equals the reference over the keys and values
	 * of a plain forward pass, for every adapted (layer, matrix). */
	cap.n_layer = m->cfg.n_layer;
	cap.dkv = Hk * dh;
	cap.k = calloc(cap.n_layer, sizeof *cap.k);
	cap.v = calloc(cap.n_layer, sizeof *cap.v);
	for (int l = 0; l < cap.n_layer; l++) {
		cap.k[l] = malloc((size_t)nA * cap.dkv * sizeof(float));
		cap.v[l] = malloc((size_t)nA * cap.dkv * sizeof(float));
	}
	CHECK_OK(sa_kvcache_new(&st, m, 0));
	sa_kvcache_set_hook(st, capture_hook, &cap);
	CHECK_OK(sa_forward(st, A, nA, NULL, 0));
	CHECK(cap.n == nA);
	da = encode(m, a, NULL, both, lens, 1);
	for (int l = 0; l < m->cfg.n_layer; l++) {
		for (int mt = 0; mt < SA_NMAT; mt++) {
			size_t nh = (size_t)Hk * r * dh;
			double *h, *P, worst = 0, scale = 0;
			const float *eh = sa_delta_h(da, l, mt), *eP = sa_delta_P(da, l, mt);

			if (!sa_adapted(mats, mt)) {
				CHECK(eh == NULL);
				continue;
			}
			h = calloc(nh, sizeof *h);
			P = malloc(Hk * r * sizeof *P);
			for (int i = 0; i < Hk * r; i++)
				P[i] = 1;
			reference_map(SA_ADAPTER_MAT(a, l, mt), Hk, dh, r, a->chunk,
			    cap.k[l], cap.v[l], nA, h, P);
			for (size_t i = 0; i < nh; i++) {
				worst = fmax(worst, fabs(h[i] - eh[i]));
				scale = fmax(scale, fabs(h[i]));
			}
			for (int i = 0; i < Hk * r; i++)
				worst = fmax(worst, fabs(P[i] - eP[i]));
			CHECK(worst <= 1e-6 * fmax(1, scale));
			CHECK(scale > 1e-3);
			free(h);
			free(P);
		}
	}
	CHECK(da->n_tokens == (uint64_t)nA && da->n_demos == 1);

	/* Two segments in one encoder = the chain of two encodes. */
	ab = encode(m, a, NULL, both, lens, 2);
	db = encode(m, a, NULL, both + 1, lens + 1, 1);
	CHECK(delta_diff(ab, da) > 1e-3);   /* B moved the state */
	CHECK_OK(sa_delta_chain(da, db));
	CHECK(delta_diff(ab, da) < 1e-5);
	CHECK(da->n_tokens == ab->n_tokens);
	/* Starting from A's delta (--append) = encoding both. */
	t1 = encode(m, a, NULL, both, lens, 1);
	again = encode(m, a, t1, both + 1, lens + 1, 1);
	CHECK(delta_diff(ab, again) < 1e-5);
	sa_delta_free(again);

	/* Bit for bit: the same inputs give the same bytes, with any number of
	 * threads (the mapping runs each head whole on one thread; the forward
	 * pass cuts its work where the shapes say, not the threads). */
	again = encode(m, a, NULL, both, lens, 2);
	ba = delta_bytes(ab, &la);
	bb = delta_bytes(again, &lb);
	CHECK(la == lb && memcmp(ba, bb, la) == 0);
	free(ba);
	free(bb);
	sa_delta_free(again);
	same_with_any_threads(m, a, ab, both, lens, 2);

	sa_delta_free(t1);
	sa_delta_free(ab);
	sa_delta_free(da);
	sa_delta_free(db);
	sa_kvcache_free(st);
	for (int l = 0; l < cap.n_layer; l++) {
		free(cap.k[l]);
		free(cap.v[l]);
	}
	free(cap.k);
	free(cap.v);
	free(A);
	free(B);
	sa_adapter_free(a);
	sa_model_free(m);
}

/* The input of one matrix in every layer, kept whole: x [n_layer][n][d_in]. */
typedef struct inputs {
	int d_in, n;
	float *x;
} inputs;

static void
input_capture(void *ctx, int layer, int i0, int n, const float *x)
{
	inputs *c = ctx;

	memcpy(c->x + ((size_t)layer * c->n + i0) * c->d_in, x, (size_t)n * c->d_in * sizeof *x);
}

/*
 * A memory keyed by attn_output's input: W2 is P, W1's block h the mean of
 * W_o's blocks of the query heads that read KV head h; the encoder's (G, S)
 * are sa_memory_write over the input and values of a plain forward pass;
 * the same bytes with any number of threads.  Two matrix kinds, or more
 * features than the input has, are refused.
 */
static void
test_input_memory(const char *path)
{
	sa_model *m;
	sa_adapter *a;
	sa_delta *d;
	sa_kvcache *st;
	capture cap;
	inputs in;
	int n = 37, *toks, L, Hk, dh, dk, grp, d_out, qd, bos;
	const int *segs[1];

	CHECK_OK(sa_model_load(&m, path));
	if (!m)
		return;
	CHECK(sa_adapter_init_lsq(&a, m, 16, 0.01f, 1, SA_KEYS_INPUT,
	    1u << SA_MAT_O | 1u << SA_MAT_DOWN, 3, 0) == SA_EUSAGE && !a);
	CHECK(sa_adapter_init_lsq(&a, m, m->cfg.n_head * m->cfg.d_head + 1, 0.01f, 1,
	    SA_KEYS_INPUT, 1u << SA_MAT_O, 3, 0) == SA_EUSAGE && !a);
	{
		/* as a file's header would have it: the pool kind, or two kinds */
		int dims[2 * SA_NMAT] = { 0 };
		for (int i = 0; i < 2 * SA_NMAT; i++)
			dims[i] = 8;
		CHECK(sa_adapter_alloc_kind(&a, SA_MAPPING_LSQ, 2, 2, 4, 8, 0, 4, 1, SA_KEYS_INPUT,
		    1u << SA_MAT_O | 1u << SA_MAT_V, dims, dims) == SA_EDATA && !a);
		CHECK(strstr(sa_error(), "exactly one matrix kind") != NULL);
		CHECK(sa_adapter_alloc_kind(&a, SA_MAPPING_POOL, 2, 2, 4, 8, 4, 0, 0, SA_KEYS_INPUT,
		    1u << SA_MAT_O, dims, dims) == SA_EDATA && !a);
	}
	CHECK_OK(sa_adapter_init_lsq(&a, m, 16, 0.01f, 1, SA_KEYS_INPUT, 1u << SA_MAT_O, 3, 0));
	if (!a)
		return;
	L = a->n_layer, Hk = a->n_head_kv, dh = a->d_head, dk = a->d_key;
	grp = m->cfg.n_head / Hk, qd = m->cfg.n_head * dh;
	CHECK(sa_adapter_key_mat(a) == SA_MAT_O && a->value_offset == 1 && !a->mem[0].p);
	for (int l = 0; l < L; l++) {
		const sa_adapter_mat *am = SA_ADAPTER_MAT(a, l, SA_MAT_O);
		float *row = malloc((size_t)qd * sizeof *row);
		double worst = 0;
		CHECK(memcmp(am->W2, a->mem[l].P, (size_t)Hk * dk * qd * sizeof(float)) == 0);
		d_out = am->d_out;
		for (int o = 0; o < d_out; o++) {
			sa_rows_to_f32(&m->layers[l].w[SA_MAT_O], o, o + 1, row);
			for (int h = 0; h < Hk; h++)
				for (int i = 0; i < dh; i++) {
					double mean = 0;
					for (int j = h * grp; j < (h + 1) * grp; j++)
						mean += row[j * dh + i] / (double)grp;
					worst = fmax(worst, fabs(am->W1[(size_t)o * Hk * dh + h * dh + i] - mean));
				}
		}
		CHECK(worst < 1e-6);
		free(row);
	}

	bos = sa_vocab_add_bos(m->vocab) ? sa_vocab_bos(m->vocab) : -1;
	toks = malloc((size_t)n * sizeof *toks);
	random_tokens(toks, n, m->cfg.n_vocab, bos);
	segs[0] = toks;
	cap.n_layer = L;
	cap.dkv = Hk * dh;
	cap.k = calloc(L, sizeof *cap.k);
	cap.v = calloc(L, sizeof *cap.v);
	for (int l = 0; l < L; l++) {
		cap.k[l] = malloc((size_t)n * cap.dkv * sizeof(float));
		cap.v[l] = malloc((size_t)n * cap.dkv * sizeof(float));
	}
	in.d_in = qd;
	in.n = n;
	in.x = malloc((size_t)L * n * qd * sizeof *in.x);
	CHECK_OK(sa_kvcache_new(&st, m, 0));
	sa_kvcache_set_hook(st, capture_hook, &cap);
	sa_kvcache_set_input_hook(st, SA_MAT_O, input_capture, &in);
	CHECK_OK(sa_forward(st, toks, n, NULL, 0));
	d = encode(m, a, NULL, segs, &n, 1);
	for (int l = 0; d && l < L; l++) {
		sa_memory_params mp = sa_adapter_memory_params(a, l);
		size_t ng = (size_t)Hk * dh * dk, ns = (size_t)Hk * dk * dk;
		double *G = calloc(ng, sizeof *G), *S = calloc(ns, sizeof *S), worst = 0, scale = 0;
		CHECK(mp.linear && mp.dx == qd);
		CHECK_OK(sa_memory_write(&mp, in.x + (size_t)l * n * qd, cap.v[l], n, G, S));
		for (size_t i = 0; i < ng; i++) {
			worst = fmax(worst, fabs(G[i] - sa_delta_G(d, l)[i]));
			scale = fmax(scale, fabs(G[i]));
		}
		for (size_t i = 0; i < ns; i++) {
			worst = fmax(worst, fabs(S[i] - sa_delta_S(d, l)[i]));
			scale = fmax(scale, fabs(S[i]));
		}
		CHECK(worst <= 1e-6 * scale && scale > 1e-3);
		free(G);
		free(S);
	}
	same_with_any_threads(m, a, d, segs, &n, 1);
	sa_delta_free(d);
	sa_kvcache_free(st);
	for (int l = 0; l < L; l++) {
		free(cap.k[l]);
		free(cap.v[l]);
	}
	free(cap.k);
	free(cap.v);
	free(in.x);
	free(toks);
	sa_adapter_free(a);
	sa_model_free(m);
}

typedef struct steps {
	int n, last_i, n_segs;
	long done, total;
} steps;

static void
count_step(void *ctx, const sa_encode_step *s)
{
	steps *c = ctx;

	c->n++;
	c->last_i = s->i;
	c->n_segs = s->n_segs;
	c->done = s->done;
	c->total = s->total;
	CHECK(strcmp(s->source, "d.tsv") == 0 && s->seg->n > 0);
}

/* Demonstrations fed whole: the state of their segments fed one by one,
 * the same bytes, with a step after each segment; and the segments fed
 * together (sa_encoder_feed_segments), the same again. */
static void
test_feed_demos(const char *path)
{
	static const char tsv[] = "input\tlabel\ngreat film\tpos\ndull\tneg\nthe cat sat\tyes\n"
	    "kind and good\tpos\nawful\tneg\nsome more words here\tno\n";
	sa_model *m;
	sa_adapter *a;
	sa_demos *d;
	sa_segment *segs;
	sa_encoder *e1, *e2, *e3;
	steps c = { 0 }, c3 = { 0 };
	char *b1, *b2, *b3;
	size_t l1, l2, l3;
	int n_segs;

	CHECK_OK(sa_model_load(&m, path));
	CHECK_OK(sa_adapter_init(&a, m, 4, 8, 1u << SA_MAT_Q | 1u << SA_MAT_V, 5, 0.1f));
	CHECK_OK(sa_demos_parse(&d, "d.tsv", tsv, sizeof tsv - 1, SA_DEMOS_TSV, NULL));
	CHECK_OK(sa_encoder_new(&e1, m, a, NULL));
	CHECK_OK(sa_encoder_new(&e2, m, a, NULL));
	CHECK_OK(sa_encoder_feed_demos(e1, d, 24, count_step, &c));
	CHECK_OK(sa_demos_segment(d, m->vocab, 24, SA_RECORDS_PACKED, &segs, &n_segs));
	CHECK(n_segs > 1 && c.n == n_segs && c.last_i == n_segs - 1 && c.n_segs == n_segs);
	CHECK(c.done == c.total && c.total > 0);
	for (int s = 0; s < n_segs; s++)
		CHECK_OK(sa_encoder_feed(e2, segs[s].toks, segs[s].n, segs[s].n_demos));
	CHECK_OK(sa_encoder_add_source(e2, d->source.name, d->source.hash));
	CHECK_OK(sa_encoder_new(&e3, m, a, NULL));
	CHECK_OK(sa_encoder_feed_segments(e3, segs, n_segs, "d.tsv", count_step, &c3));
	CHECK(c3.n == c.n && c3.last_i == c.last_i && c3.done == c.done && c3.total == c.total);
	CHECK_OK(sa_encoder_add_source(e3, d->source.name, d->source.hash));
	b1 = delta_bytes(sa_encoder_delta(e1), &l1);
	b2 = delta_bytes(sa_encoder_delta(e2), &l2);
	b3 = delta_bytes(sa_encoder_delta(e3), &l3);
	CHECK(l1 == l2 && memcmp(b1, b2, l1) == 0);
	CHECK(l1 == l3 && memcmp(b1, b3, l1) == 0);
	CHECK(sa_encoder_delta(e1)->n_sources == 1 && sa_encoder_delta(e1)->n_demos == 6);
	free(b1);
	free(b2);
	free(b3);
	sa_segments_free(segs, n_segs);
	sa_encoder_free(e1);
	sa_encoder_free(e2);
	sa_encoder_free(e3);
	sa_demos_free(d);
	sa_adapter_free(a);
	sa_model_free(m);
}

int
main(int argc, char **argv)
{
	test_kernel();
	if (argc > 1) {
		test_model(argv[1]);
		test_feed_demos(argv[1]);
		test_input_memory(argv[1]);
	} else
		fprintf(stderr, "test_encode: no model given, kernel tests only\n");
	return t_done();
}
