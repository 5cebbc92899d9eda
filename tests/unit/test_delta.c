/*
 * test_delta.c - delta files and the algebra on states, on small synthetic
 * adapters and states built here: round trips through memory and through a
 * pipe, determinism, every truncation and every flipped bit, hand-made
 * headers with absurd sizes, chain and mean against their definitions, and
 * the low-rank factors against a direct computation.
 */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include "sa.h"
#include "adapter_impl.h"
#include "t.h"

/* A model shape with Dkv != d_model and a set of matrices with gaps in
 * its bitmask, so index mistakes show. */
enum { NL = 3, HK = 2, DH = 4, R = 3, CHUNK = 8, DM = 16, DFF = 24 };
static const uint32_t MATS = 1u << SA_MAT_Q | 1u << SA_MAT_V | 1u << SA_MAT_O | 1u << SA_MAT_DOWN;

static uint64_t rng = 1;

static double
urand(void)
{
	rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
	return (double)(rng >> 11) / 9007199254740992.0;
}

static sa_adapter *
make_adapter(uint64_t seed, float w1_scale)
{
	int d_out[NL * SA_NMAT], d_in[NL * SA_NMAT];
	static const int out_[SA_NMAT] = { DM, HK * DH, HK * DH, DM, DFF, DFF, DM };
	static const int in_[SA_NMAT] = { DM, DM, DM, DM, DM, DM, DFF };
	sa_adapter *a = NULL;

	for (int l = 0; l < NL; l++)
		for (int m = 0; m < SA_NMAT; m++) {
			d_out[l * SA_NMAT + m] = out_[m];
			d_in[l * SA_NMAT + m] = in_[m];
		}
	CHECK_OK(sa_adapter_alloc(&a, NL, HK, DH, R, CHUNK, MATS, d_out, d_in));
	if (!a)
		exit(1);
	a->model_fingerprint = 0x1234567890abcdefULL;
	sa_adapter_randomize(a, seed, w1_scale);
	return a;
}

/* A state with h in [-1, 1), P in (0, 1), counts and one source. */
static sa_delta *
make_delta(const sa_adapter *a, uint64_t seed)
{
	sa_delta *d = NULL;
	size_t nh, np;

	CHECK_OK(sa_delta_new(&d, a));
	if (!d)
		exit(1);
	rng = seed * 2654435761u + 7;
	nh = (size_t)sa_delta_n_used(d) * HK * R * DH;
	np = (size_t)sa_delta_n_used(d) * HK * R;
	for (size_t i = 0; i < nh; i++)
		d->h[i] = (float)(2 * urand() - 1);
	for (size_t i = 0; i < np; i++)
		d->P[i] = (float)(0.05 + 0.9 * urand());
	d->n_tokens = 100 + seed;
	d->n_demos = 1 + seed % 5;
	d->params = strdup("template={input} -> {label}\\n");
	d->sources = calloc(1, sizeof *d->sources);
	d->sources[0].name = malloc(32);
	snprintf(d->sources[0].name, 32, "demos-%llu.tsv", (unsigned long long)seed);
	d->sources[0].hash = seed * 0x9e3779b97f4a7c15ULL;
	d->n_sources = 1;
	return d;
}

static int
same_delta(const sa_delta *a, const sa_delta *b)
{
	size_t nh = (size_t)sa_delta_n_used(a) * a->n_head_kv * a->rank * a->d_head;
	size_t np = (size_t)sa_delta_n_used(a) * a->n_head_kv * a->rank;

	if (a->model_fingerprint != b->model_fingerprint || a->adapter_fingerprint != b->adapter_fingerprint ||
	    a->n_layer != b->n_layer || a->n_head_kv != b->n_head_kv || a->d_head != b->d_head ||
	    a->rank != b->rank || a->chunk != b->chunk || a->mats != b->mats ||
	    a->n_tokens != b->n_tokens || a->n_demos != b->n_demos || a->n_sources != b->n_sources)
		return 0;
	if (!a->adapter_path != !b->adapter_path || (a->adapter_path && strcmp(a->adapter_path, b->adapter_path)))
		return 0;
	if (!a->params != !b->params || (a->params && strcmp(a->params, b->params)))
		return 0;
	for (int i = 0; i < a->n_sources; i++)
		if (strcmp(a->sources[i].name, b->sources[i].name) || a->sources[i].hash != b->sources[i].hash)
			return 0;
	return memcmp(a->h, b->h, nh * sizeof(float)) == 0 && memcmp(a->P, b->P, np * sizeof(float)) == 0;
}

/* The file's bytes, through a memory stream. */
static unsigned char *
serialize(const sa_delta *d, size_t *len)
{
	char *buf = NULL;
	size_t n = 0;
	FILE *fp = open_memstream(&buf, &n);

	CHECK_OK(sa_delta_write(d, fp, "mem"));
	fclose(fp);
	*len = n;
	return (unsigned char *)buf;
}

/* Parse len bytes; returns the status (the delta is freed). */
static int
parse(const unsigned char *p, size_t len)
{
	sa_delta *d = NULL;
	FILE *fp = len ? fmemopen((void *)p, len, "rb") : fopen("/dev/null", "rb");
	int rc;

	if (!fp) {
		perror("fmemopen");
		exit(1);
	}
	rc = sa_delta_read(&d, fp, "x.delta");
	fclose(fp);
	if (rc == SA_OK)
		sa_delta_free(d);
	return rc;
}

static int
has(const char *s)
{
	return strstr(sa_error(), s) != NULL;
}

static void
test_roundtrip(const sa_adapter *a)
{
	sa_delta *d = make_delta(a, 1), *c = NULL, *back = NULL;
	unsigned char *b1, *b2, *b3;
	size_t n1, n2, n3;
	int fds[2];
	pid_t pid;
	FILE *fp;

	d->adapter_path = strdup("adapters/tiny.gguf");
	b1 = serialize(d, &n1);
	b2 = serialize(d, &n2);
	CHECK(n1 == n2 && memcmp(b1, b2, n1) == 0);
	CHECK_OK(sa_delta_clone(&c, d));
	CHECK(same_delta(c, d));
	b3 = serialize(c, &n3);
	CHECK(n1 == n3 && memcmp(b1, b3, n1) == 0);

	/* Through a real pipe: nothing may seek. */
	if (pipe(fds) != 0) {
		perror("pipe");
		exit(1);
	}
	if ((pid = fork()) == 0) {
		FILE *w = fdopen(fds[1], "wb");
		close(fds[0]);
		_exit(sa_delta_write(d, w, "pipe") == SA_OK && fclose(w) == 0 ? 0 : 1);
	}
	close(fds[1]);
	fp = fdopen(fds[0], "rb");
	CHECK_OK(sa_delta_read(&back, fp, "pipe"));
	CHECK(getc(fp) == EOF);   /* consumed exactly to its last byte */
	fclose(fp);
	{
		int st = 1;
		waitpid(pid, &st, 0);
		CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	}
	CHECK(back && same_delta(back, d));
	sa_delta_free(back);
	back = NULL;

	/* Two deltas back to back in one stream read one after the other. */
	{
		unsigned char *two = malloc(2 * n1);
		sa_delta *x = NULL, *y = NULL;
		memcpy(two, b1, n1);
		memcpy(two + n1, b1, n1);
		fp = fmemopen(two, 2 * n1, "rb");
		CHECK_OK(sa_delta_read(&x, fp, "two"));
		CHECK_OK(sa_delta_read(&y, fp, "two"));
		CHECK(x && y && same_delta(x, d) && same_delta(y, d));
		fclose(fp);
		sa_delta_free(x);
		sa_delta_free(y);
		free(two);
	}

	/* Through a file with sa_delta_save / sa_delta_load; then trailing data. */
	{
		char path[] = "/tmp/test_delta.XXXXXX";
		int fd = mkstemp(path);
		close(fd);
		CHECK_OK(sa_delta_save(d, path));
		CHECK_OK(sa_delta_load(&back, path));
		CHECK(back && same_delta(back, d));
		sa_delta_free(back);
		back = NULL;
		fp = fopen(path, "ab");
		fputc('x', fp);
		fclose(fp);
		CHECK(sa_delta_load(&back, path) == SA_EDATA && has("data after the end"));
		CHECK(back == NULL);
		unlink(path);
		CHECK(sa_delta_load(&back, path) == SA_ENOINPUT);
	}
	free(b1);
	free(b2);
	free(b3);
	sa_delta_free(c);
	sa_delta_free(d);
}

static void
test_new_and_index(const sa_adapter *a)
{
	sa_delta *d = NULL;
	int k = 0;

	CHECK_OK(sa_delta_new(&d, a));
	CHECK(sa_delta_n_used(d) == NL * 4);
	CHECK(d->model_fingerprint == a->model_fingerprint && d->adapter_fingerprint == a->fingerprint);
	for (int l = 0; l < NL; l++)
		for (int m = 0; m < SA_NMAT; m++) {
			float *h = sa_delta_h(d, l, m), *P = sa_delta_P(d, l, m);
			if (!sa_adapted(MATS, m)) {
				CHECK(h == NULL && P == NULL);
				continue;
			}
			/* pairs in order of l then m, densely packed */
			CHECK(h == d->h + (size_t)k * HK * R * DH);
			CHECK(P == d->P + (size_t)k * HK * R);
			CHECK(h[0] == 0.0f && P[HK * R - 1] == 1.0f);
			k++;
		}
	CHECK(sa_delta_h(d, NL, SA_MAT_Q) == NULL && sa_delta_h(d, -1, SA_MAT_Q) == NULL);
	sa_delta_free(d);
}

/* Every prefix of the file fails cleanly; so does every flipped bit. */
static void
test_corruption(const sa_adapter *a)
{
	sa_delta *d = make_delta(a, 2);
	unsigned char *b, *t;
	size_t n, hdr;
	int bad_trunc = 0, bad_flip = 0;

	b = serialize(d, &n);
	CHECK(parse(b, n) == SA_OK);
	for (size_t len = 0; len < n; len++)
		if (parse(b, len) != SA_EDATA)
			bad_trunc++;
	CHECK(bad_trunc == 0);
	CHECK(parse(b, n - 1) == SA_EDATA && has("x.delta: truncated"));
	CHECK(parse(b, 20) == SA_EDATA && has("x.delta: truncated"));

	t = malloc(n);
	for (size_t i = 0; i < n; i++)
		for (int bit = 0; bit < 8; bit++) {
			memcpy(t, b, n);
			t[i] ^= (unsigned char)(1u << bit);
			if (parse(t, n) != SA_EDATA)
				bad_flip++;
		}
	CHECK(bad_flip == 0);

	/* A byte of the params string: only the header CRC can see it. */
	hdr = 8 + 4 + 4 + 16 + 24 + 16 + 4 + strlen(d->adapter_path ? d->adapter_path : "") + 4;
	memcpy(t, b, n);
	t[hdr + 2] ^= 0x20;
	CHECK(parse(t, n) == SA_EDATA && has("x.delta: CRC mismatch (corrupted)"));
	/* A byte in the middle of the compressed payload. */
	memcpy(t, b, n);
	t[n - 40] ^= 0x01;
	CHECK(parse(t, n) == SA_EDATA && has("corrupted"));
	/* Wrong magic, other version. */
	memcpy(t, b, n);
	t[0] = 'X';
	CHECK(parse(t, n) == SA_EDATA && has("x.delta: not a delta file"));
	CHECK(parse((const unsigned char *)"GGUF\3\0\0\0", 8) == SA_EDATA && has("not a delta file"));
	memcpy(t, b, n);
	t[8] = 9;
	CHECK(parse(t, n) == SA_EDATA && has("x.delta: unsupported version 9"));
	free(t);
	free(b);
	sa_delta_free(d);
}

/* ------------------------------------------------- hand-made files */

typedef struct hm {
	uint32_t version, n_layer, n_head_kv, d_head, rank, chunk, mats, n_sources;
	uint64_t payload;      /* 0: the true size */
	int n_real;            /* sources really written */
	const float *h, *P;    /* payload values, NULL: none written */
} hm;

static void
put32(FILE *fp, uint32_t v, uint32_t *crc)
{
	unsigned char x[4] = { v, v >> 8, v >> 16, v >> 24 };
	fwrite(x, 1, 4, fp);
	if (crc)
		*crc = (uint32_t)crc32(*crc, x, 4);
}

static void
put64(FILE *fp, uint64_t v, uint32_t *crc)
{
	put32(fp, (uint32_t)v, crc);
	put32(fp, (uint32_t)(v >> 32), crc);
}

static void
putb(FILE *fp, const void *p, size_t n, uint32_t *crc)
{
	fwrite(p, 1, n, fp);
	*crc = (uint32_t)crc32(*crc, p, n);
}

/* A delta written by this test's own reading of sa-delta(5), not by the library. */
static unsigned char *
handmade(const hm *f, size_t *len)
{
	char *buf = NULL;
	size_t n = 0;
	FILE *fp = open_memstream(&buf, &n);
	uint32_t crc = 0;
	uint64_t used = (uint64_t)f->n_layer * __builtin_popcount(f->mats);
	uint64_t nh = used * f->n_head_kv * f->rank * f->d_head, np = used * f->n_head_kv * f->rank;

	putb(fp, "SADELTA", 8, &crc);
	put32(fp, f->version, &crc);
	put32(fp, 0, &crc);
	put64(fp, 0x1111, &crc);
	put64(fp, 0x2222, &crc);
	put32(fp, f->n_layer, &crc);
	put32(fp, f->n_head_kv, &crc);
	put32(fp, f->d_head, &crc);
	put32(fp, f->rank, &crc);
	put32(fp, f->chunk, &crc);
	put32(fp, f->mats, &crc);
	put64(fp, 10, &crc);
	put64(fp, 1, &crc);
	put32(fp, 0, &crc);
	put32(fp, 2, &crc);
	putb(fp, "p=", 2, &crc);
	put32(fp, f->n_sources, &crc);
	for (int i = 0; i < f->n_real; i++) {
		put32(fp, 1, &crc);
		putb(fp, "s", 1, &crc);
		put64(fp, (uint64_t)i, &crc);
	}
	put64(fp, f->payload ? f->payload : (nh + np) * 4, &crc);
	put32(fp, crc, NULL);
	if (f->h) {
		size_t raw = (size_t)(nh + np) * 4;
		unsigned char *in = malloc(raw);
		uLongf zn = compressBound(raw);
		unsigned char *z = malloc(zn);
		memcpy(in, f->h, nh * 4);
		memcpy(in + nh * 4, f->P, np * 4);
		compress2(z, &zn, in, raw, 6);
		/* frames of 100 bytes: the reader must not care how it is cut */
		for (uLongf o = 0; o < zn; o += 100) {
			uint32_t k = zn - o < 100 ? (uint32_t)(zn - o) : 100;
			put32(fp, k, NULL);
			fwrite(z + o, 1, k, fp);
		}
		put32(fp, 0, NULL);
		put32(fp, (uint32_t)crc32(0, in, raw), NULL);
		fwrite("SADELEND", 1, 8, fp);
		free(in);
		free(z);
	}
	fclose(fp);
	*len = n;
	return (unsigned char *)buf;
}

/* Run fn in a child whose address space may grow by at most 256 MiB:
 * an allocation sized from a lying header would fail there as
 * SA_EINTERNAL instead of the SA_EDATA the child checks for. */
static int
bounded(int (*fn)(void))
{
	pid_t pid = fork();
	int st = 0;

	if (pid == 0) {
		long pages = 0, page = sysconf(_SC_PAGESIZE);
		FILE *fp = fopen("/proc/self/statm", "r");
		struct rlimit rl;
		if (fp) {
			if (fscanf(fp, "%ld", &pages) != 1)
				pages = 0;
			fclose(fp);
		}
		rl.rlim_cur = rl.rlim_max = (rlim_t)pages * page + (256u << 20);
		setrlimit(RLIMIT_AS, &rl);
		_exit(fn());
	}
	waitpid(pid, &st, 0);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static int
huge_rank(void)
{
	hm f = { 1, 1, 1, 1, 1u << 31, 8, 1, 0, 0, 0, NULL, NULL };
	size_t n;
	unsigned char *b = handmade(&f, &n);
	int ok = parse(b, n) == SA_EDATA && has("rank 2147483648 out of range");
	free(b);
	return !ok;
}

static int
many_sources(void)
{
	hm f = { 1, 1, 1, 1, 1, 8, 1, 1000000000u, 0, 3, NULL, NULL };
	size_t n;
	unsigned char *b = handmade(&f, &n);
	int ok = parse(b, n) == SA_EDATA && has("sources exceed the limit");
	free(b);
	return !ok;
}

/* Legal but large (3.5 GiB of state), and the file ends after the header. */
static int
big_truncated(void)
{
	hm f = { 1, 56, 64, 128, 1024, 8, 1, 0, 0, 0, NULL, NULL };
	size_t n;
	unsigned char *b = handmade(&f, &n);
	int ok = parse(b, n) == SA_EDATA && has("truncated");
	free(b);
	return !ok;
}

static int
too_big(void)
{
	hm f = { 1, 4096, 4096, 4096, 65536, 8, 0x7f, 0, 0, 0, NULL, NULL };
	size_t n;
	unsigned char *b = handmade(&f, &n);
	int ok = parse(b, n) == SA_EDATA && has("exceeds the limit");
	free(b);
	return !ok;
}

static void
test_handmade(void)
{
	float h[2 * 3 * 4], P[2 * 3];
	hm f = { 1, 1, 2, 4, 3, 8, 1u << SA_MAT_V, 2, 0, 2, h, P };
	unsigned char *b;
	size_t n;
	sa_delta *d = NULL;
	FILE *fp;

	for (int i = 0; i < 24; i++)
		h[i] = (float)i / 8;
	for (int i = 0; i < 6; i++)
		P[i] = 0.5f;
	b = handmade(&f, &n);
	fp = fmemopen(b, n, "rb");
	CHECK_OK(sa_delta_read(&d, fp, "hand.delta"));
	fclose(fp);
	CHECK(d && d->n_sources == 2 && d->params && strcmp(d->params, "p=") == 0);
	CHECK(d && d->adapter_path == NULL && sa_delta_h(d, 0, SA_MAT_V)[23] == 23.0f / 8);
	sa_delta_free(d);
	free(b);

	h[5] = NAN;
	b = handmade(&f, &n);
	CHECK(parse(b, n) == SA_EDATA && has("non-finite value in h of layer 0 attn_v"));
	free(b);
	h[5] = 0;
	P[1] = INFINITY;
	b = handmade(&f, &n);
	CHECK(parse(b, n) == SA_EDATA && has("non-finite value in P"));
	free(b);
	P[1] = 0.5f;

	f.payload = 1000;
	b = handmade(&f, &n);
	CHECK(parse(b, n) == SA_EDATA && has("payload of 1000 bytes"));
	free(b);
	f.payload = 0;
	f.version = 9;
	b = handmade(&f, &n);
	CHECK(parse(b, n) == SA_EDATA && has("unsupported version 9"));
	free(b);

	CHECK(bounded(huge_rank) == 0);
	CHECK(bounded(many_sources) == 0);
	CHECK(bounded(big_truncated) == 0);
	CHECK(bounded(too_big) == 0);
}

/* --------------------------------------------------------- algebra */

/* The recurrence of streamadapter.md step 4 over random chunk outputs and
 * gates, for chunks [c0, c1): what an encoder would leave. */
static void
run_recurrence(sa_delta *d, float *S, float *gate, int c0, int c1)
{
	size_t rows = (size_t)sa_delta_n_used(d) * HK * R;

	for (int c = c0; c < c1; c++)
		for (size_t i = 0; i < rows; i++) {
			float a = gate[(size_t)c * rows + i];
			for (int j = 0; j < DH; j++)
				d->h[i * DH + j] = a * d->h[i * DH + j] + S[((size_t)c * rows + i) * DH + j];
			d->P[i] *= a;
		}
}

static double
max_diff(const float *a, const float *b, size_t n)
{
	double m = 0;
	for (size_t i = 0; i < n; i++)
		if (fabs((double)a[i] - b[i]) > m)
			m = fabs((double)a[i] - b[i]);
	return m;
}

static void
test_chain(const sa_adapter *a)
{
	enum { NC = 10 };
	sa_delta *whole = NULL, *A = NULL, *B = NULL, *C = NULL, *ab = NULL, *bc = NULL;
	size_t rows, nh;
	float *S, *gate;

	CHECK_OK(sa_delta_new(&whole, a));
	rows = (size_t)sa_delta_n_used(whole) * HK * R;
	nh = rows * DH;
	S = malloc(NC * nh * sizeof *S);
	gate = malloc(NC * rows * sizeof *gate);
	rng = 99;
	for (size_t i = 0; i < NC * nh; i++)
		S[i] = (float)(2 * urand() - 1);
	for (size_t i = 0; i < NC * rows; i++)
		gate[i] = (float)(0.5 + 0.5 * urand());

	/* One stream of 10 chunks, and the same cut into 3 + 4 + 3. */
	run_recurrence(whole, S, gate, 0, NC);
	CHECK_OK(sa_delta_new(&A, a));
	CHECK_OK(sa_delta_new(&B, a));
	CHECK_OK(sa_delta_new(&C, a));
	run_recurrence(A, S, gate, 0, 3);
	run_recurrence(B, S, gate, 3, 7);
	run_recurrence(C, S, gate, 7, NC);
	A->n_tokens = 30; B->n_tokens = 40; C->n_tokens = 30;
	A->n_demos = 1; B->n_demos = 2; C->n_demos = 3;

	/* (A.B).C */
	CHECK_OK(sa_delta_clone(&ab, A));
	CHECK_OK(sa_delta_chain(ab, B));
	/* exactly the formula, element by element */
	{
		int exact = 1;
		for (size_t i = 0; i < rows; i++) {
			if (ab->P[i] != A->P[i] * B->P[i])
				exact = 0;
			for (int j = 0; j < DH; j++)
				if (ab->h[i * DH + j] != B->P[i] * A->h[i * DH + j] + B->h[i * DH + j])
					exact = 0;
		}
		CHECK(exact);
	}
	CHECK_OK(sa_delta_chain(ab, C));
	/* A.(B.C) */
	CHECK_OK(sa_delta_clone(&bc, B));
	CHECK_OK(sa_delta_chain(bc, C));
	CHECK_OK(sa_delta_chain(A, bc));

	CHECK(max_diff(ab->h, whole->h, nh) < 1e-5);
	CHECK(max_diff(ab->P, whole->P, rows) < 1e-6);
	CHECK(max_diff(A->h, ab->h, nh) < 1e-5);
	CHECK(max_diff(A->P, ab->P, rows) < 1e-6);
	CHECK(ab->n_tokens == 100 && ab->n_demos == 6 && A->n_tokens == 100);

	/* Sources append in order. */
	{
		sa_delta *x = make_delta(a, 3), *y = make_delta(a, 4);
		CHECK_OK(sa_delta_chain(x, y));
		CHECK(x->n_sources == 2 && strcmp(x->sources[0].name, "demos-3.tsv") == 0 &&
		    strcmp(x->sources[1].name, "demos-4.tsv") == 0 && x->sources[1].hash == y->sources[0].hash);
		CHECK(x->n_tokens == 103 + 104 && x->n_demos == 4 + 5);
		sa_delta_free(x);
		sa_delta_free(y);
	}
	free(S);
	free(gate);
	sa_delta_free(whole);
	sa_delta_free(A);
	sa_delta_free(B);
	sa_delta_free(C);
	sa_delta_free(ab);
	sa_delta_free(bc);
}

/* Delta W of (l, m) in full: B A with B from sa_delta_factors. */
static float *
full_delta_w(const sa_adapter *a, const sa_delta *d, int l, int m, float s)
{
	const sa_adapter_mat *am = SA_ADAPTER_MAT(a, l, m);
	float *B = NULL, *W;
	const float *A = NULL;

	CHECK_OK(sa_delta_factors(a, d, l, m, s, &B, &A));
	W = calloc((size_t)am->d_out * am->d_in, sizeof *W);
	for (int o = 0; o < am->d_out; o++)
		for (int i = 0; i < am->d_in; i++) {
			double acc = 0;
			for (int k = 0; k < a->rank; k++)
				acc += (double)B[o * a->rank + k] * A[k * am->d_in + i];
			W[o * am->d_in + i] = (float)acc;
		}
	free(B);
	return W;
}

static void
test_factors(const sa_adapter *a)
{
	sa_delta *d = make_delta(a, 5);
	int Dkv = HK * DH, bad = 0;

	for (int l = 0; l < NL; l++)
		for (int m = 0; m < SA_NMAT; m++) {
			const sa_adapter_mat *am = SA_ADAPTER_MAT(a, l, m);
			const float *h = sa_delta_h(d, l, m), *A = NULL;
			float *B = NULL;
			if (!sa_adapted(MATS, m))
				continue;
			CHECK_OK(sa_delta_factors(a, d, l, m, 0.5f, &B, &A));
			CHECK(A == am->W2);
			/* B[o][i] = s sum_{head, j} W1[o][head*dh + j] h[head][i][j] */
			for (int o = 0; o < am->d_out; o++)
				for (int i = 0; i < R; i++) {
					double acc = 0;
					for (int hd = 0; hd < HK; hd++)
						for (int j = 0; j < DH; j++)
							acc += (double)am->W1[o * Dkv + hd * DH + j] * h[(hd * R + i) * DH + j];
					if (fabs(0.5 * acc - B[o * R + i]) > 1e-5)
						bad++;
				}
			free(B);
		}
	CHECK(bad == 0);
	sa_delta_free(d);
}

static void
test_combine(const sa_adapter *a)
{
	sa_delta *d[3], *mean = NULL, *sum = NULL;
	double w3[3] = { 1.0 / 3, 1.0 / 3, 1.0 / 3 }, ws[3] = { 2.0, -0.5, 1.0 };
	int bad_mean = 0, bad_sum = 0;
	double scale = 0;

	for (int k = 0; k < 3; k++)
		d[k] = make_delta(a, 10 + k);
	CHECK_OK(sa_delta_combine(&mean, d, w3, 3));
	CHECK_OK(sa_delta_combine(&sum, d, ws, 3));
	CHECK(mean->n_tokens == 110 + 111 + 112 && mean->n_sources == 3);
	CHECK(mean->params && strcmp(mean->params, d[0]->params) == 0);

	/* The update of the mean state is the mean of the updates, for a
	 * random W1 (an initial adapter's W1 = 0 would make this trivial). */
	for (int l = 0; l < NL; l++)
		for (int m = 0; m < SA_NMAT; m++) {
			const sa_adapter_mat *am = SA_ADAPTER_MAT(a, l, m);
			size_t n = (size_t)am->d_out * am->d_in;
			float *W[3], *Wm, *Ws;
			if (!sa_adapted(MATS, m))
				continue;
			for (int k = 0; k < 3; k++)
				W[k] = full_delta_w(a, d[k], l, m, 1.0f);
			Wm = full_delta_w(a, mean, l, m, 1.0f);
			Ws = full_delta_w(a, sum, l, m, 1.0f);
			for (size_t i = 0; i < n; i++) {
				double want = (W[0][i] + W[1][i] + W[2][i]) / 3;
				double wsum = 2.0 * W[0][i] - 0.5 * W[1][i] + W[2][i];
				if (fabs(want) > scale)
					scale = fabs(want);
				if (fabs(Wm[i] - want) > 1e-5 * (1 + fabs(want)))
					bad_mean++;
				if (fabs(Ws[i] - wsum) > 1e-5 * (1 + fabs(wsum)))
					bad_sum++;
			}
			for (int k = 0; k < 3; k++)
				free(W[k]);
			free(Wm);
			free(Ws);
		}
	CHECK(scale > 1e-3);   /* the updates are not all zero */
	CHECK(bad_mean == 0);
	CHECK(bad_sum == 0);

	/* Chaining across a mean stays exact: X then mean(d) = mean(X then d). */
	{
		sa_delta *x = make_delta(a, 20), *xm = NULL, *c[3], *mc = NULL;
		size_t nh = (size_t)sa_delta_n_used(x) * HK * R * DH, np = (size_t)sa_delta_n_used(x) * HK * R;
		CHECK_OK(sa_delta_clone(&xm, x));
		CHECK_OK(sa_delta_chain(xm, mean));
		for (int k = 0; k < 3; k++) {
			CHECK_OK(sa_delta_clone(&c[k], x));
			CHECK_OK(sa_delta_chain(c[k], d[k]));
		}
		CHECK_OK(sa_delta_combine(&mc, c, w3, 3));
		CHECK(max_diff(xm->h, mc->h, nh) < 1e-5);
		CHECK(max_diff(xm->P, mc->P, np) < 1e-6);
		for (int k = 0; k < 3; k++)
			sa_delta_free(c[k]);
		sa_delta_free(x);
		sa_delta_free(xm);
		sa_delta_free(mc);
	}
	for (int k = 0; k < 3; k++)
		sa_delta_free(d[k]);
	sa_delta_free(mean);
	sa_delta_free(sum);
}

static void
test_compatible(const sa_adapter *a, const sa_adapter *other)
{
	sa_delta *x = make_delta(a, 1), *y = make_delta(other, 2), *z = NULL;
	double w[2] = { 0.5, 0.5 };
	sa_delta *pair[2] = { x, y };

	CHECK(sa_delta_compatible(x, "a.delta", x, "b.delta") == SA_OK);
	CHECK(sa_delta_compatible(x, "a.delta", y, "b.delta") == SA_EDATA);
	CHECK(has("a.delta") && has("b.delta") && has("different adapters"));
	CHECK(sa_delta_chain(x, y) == SA_EDATA);
	CHECK(sa_delta_combine(&z, pair, w, 2) == SA_EDATA && z == NULL);
	y->adapter_fingerprint = x->adapter_fingerprint;
	y->model_fingerprint ^= 1;
	CHECK(sa_delta_compatible(x, "a.delta", y, "b.delta") == SA_EDATA && has("different models"));
	y->model_fingerprint ^= 1;
	y->chunk = 16;
	CHECK(sa_delta_compatible(x, "a.delta", y, "b.delta") == SA_EDATA && has("chunk"));
	sa_delta_free(x);
	sa_delta_free(y);
}

static void
test_write_refuses(const sa_adapter *a)
{
	sa_delta *d = make_delta(a, 6);
	FILE *fp = fopen("/dev/null", "wb");

	d->h[7] = NAN;
	CHECK(sa_delta_write(d, fp, "out.delta") == SA_EDATA && has("out.delta: non-finite value in h"));
	d->h[7] = 0;
	d->rank = 1 << 20;
	CHECK(sa_delta_write(d, fp, "out.delta") == SA_EDATA && has("rank"));
	fclose(fp);
	d->rank = R;
	/* A failed save leaves no file and no temporary behind. */
	CHECK(sa_delta_save(d, "/nonexistent-dir/x.delta") == SA_ECANTCREAT);
	sa_delta_free(d);
}

static void
test_print(const sa_adapter *a)
{
	sa_delta *d = make_delta(a, 7);
	char *buf = NULL;
	size_t n = 0;
	FILE *fp = open_memstream(&buf, &n);
	sa_json j;

	sa_delta_print(d, fp, 1);
	fclose(fp);
	CHECK(n > 0 && buf[n - 1] == '\n' && memchr(buf, '\n', n) == buf + n - 1);
	CHECK_OK(sa_json_parse(buf, n, &j));
	{
		const sa_json *r = sa_json_get(&j, "rank"), *s = sa_json_get(&j, "sources");
		const sa_json *m = sa_json_get(&j, "matrices");
		CHECK(r && r->type == SA_JSON_NUM && r->num == R);
		CHECK(s && s->type == SA_JSON_ARR && s->n == 1);
		CHECK(m && m->type == SA_JSON_ARR && m->n == 4 && strcmp(m->items[2].str, "attn_output") == 0);
	}
	sa_json_free(&j);
	free(buf);

	buf = NULL;
	fp = open_memstream(&buf, &n);
	sa_delta_print(d, fp, 0);
	fclose(fp);
	CHECK(strstr(buf, "rank:                3\n") != NULL);
	CHECK(strstr(buf, "matrices:            attn_q,attn_v,attn_output,ffn_down\n") != NULL);
	free(buf);
	sa_delta_free(d);
}

static void
test_adapter_init(void)
{
	sa_adapter *a = make_adapter(42, 0), *b = make_adapter(42, 0), *c = make_adapter(43, 0);
	const sa_adapter_mat *am = SA_ADAPTER_MAT(a, 1, SA_MAT_V);
	double sq = 0, w1 = 0;

	CHECK(a->fingerprint == b->fingerprint && a->fingerprint != c->fingerprint);
	CHECK(a->fingerprint == sa_adapter_fingerprint(a));
	CHECK(memcmp(am->Q, SA_ADAPTER_MAT(b, 1, SA_MAT_V)->Q, HK * R * DH * sizeof(float)) == 0);
	for (int i = 0; i < HK * R; i++)
		CHECK(am->b[i] == SA_ADAPTER_BIAS_INIT);
	CHECK(am->d_out == HK * DH && am->d_in == DM);
	for (int i = 0; i < am->d_out * HK * DH; i++)
		w1 += fabs(am->W1[i]);
	CHECK(w1 == 0);
	for (int i = 0; i < R * DM; i++)
		sq += (double)am->W2[i] * am->W2[i];
	/* W2 ~ N(0, 1/d_in): row norms near 1 */
	CHECK(sq / R > 0.3 && sq / R < 3);
	am->W2[0] += 1;
	CHECK(sa_adapter_fingerprint(a) != a->fingerprint);
	sa_adapter_free(a);
	sa_adapter_free(b);
	sa_adapter_free(c);
}

/* ------------------------------------------------- with a real model */

/* Logits of a fixed prompt, for the model as it is now. */
static float *
logits_of(const sa_model *m)
{
	static const int toks[] = { 1, 5, 9, 17, 33, 12, 7, 3 };
	float *lg = malloc((size_t)m->cfg.n_vocab * sizeof *lg);
	sa_kvcache *st = NULL;

	CHECK_OK(sa_kvcache_new(&st, m, 64));
	CHECK_OK(sa_forward(st, toks, 8, lg, 0));
	sa_kvcache_free(st);
	return lg;
}

/*
 * Side paths of one's own (sa_delta_sides) keep the adapter's W2 as their
 * A, shared, and sa_side_copy shares it again: the same logits as the
 * model's own side paths (want), which copy it; a second delta on the
 * same path copies it, the ranks concatenated.
 */
static void
test_shared_w2(sa_model *m, const sa_adapter *a, const sa_delta *d, const float *want)
{
	const float *W2 = SA_ADAPTER_MAT(a, 0, SA_MAT_Q)->W2;
	size_t n = (size_t)d->rank * m->cfg.d_model, one;
	sa_lowrank *own = NULL, *cp = NULL;
	float *got;

	CHECK_OK(sa_delta_apply(m, a, d, 1.0f, 0));
	CHECK(m->side && !m->side[SA_MAT_Q].a_shared && m->side[SA_MAT_Q].A != W2);
	sa_model_reset_weights(m);
	CHECK_OK(sa_delta_sides(&own, m, a, d, 1.0f));
	if (!own)
		return;
	CHECK(own[SA_MAT_Q].a_shared && own[SA_MAT_Q].A == W2);
	CHECK_OK(sa_side_copy(&cp, m, own));
	CHECK(cp && cp[SA_MAT_Q].a_shared && cp[SA_MAT_Q].A == W2);
	one = sa_side_bytes(own, m);
	CHECK(sa_side_bytes(cp, m) == one);
	m->side = cp;
	got = logits_of(m);
	m->side = NULL;
	CHECK(memcmp(got, want, (size_t)m->cfg.n_vocab * sizeof *got) == 0);
	CHECK_OK(sa_delta_sides(&own, m, a, d, 0.5f));
	CHECK(!own[SA_MAT_Q].a_shared && own[SA_MAT_Q].rank == 2 * d->rank);
	CHECK(!memcmp(own[SA_MAT_Q].A, W2, n * sizeof *W2) &&
	    !memcmp(own[SA_MAT_Q].A + n, W2, n * sizeof *W2));
	CHECK(sa_side_bytes(own, m) > 2 * one);
	sa_side_free(own, m);
	sa_side_free(cp, m);
	free(got);
}

/* Find the first occurrence of n bytes in a file and overwrite them. */
static int
patch_file(const char *path, const void *find, const void *repl, size_t n)
{
	char *data = NULL;
	size_t len = 0;
	int ok = 0;

	if (sa_file_read(path, &data, &len) != SA_OK)
		return 0;
	for (size_t i = 0; i + n <= len; i++)
		if (memcmp(data + i, find, n) == 0) {
			FILE *fp = fopen(path, "r+b");
			fseek(fp, (long)i, SEEK_SET);
			fwrite(repl, 1, n, fp);
			fclose(fp);
			ok = 1;
			break;
		}
	free(data);
	return ok;
}

/* Write d recording adapter path rec (NULL: none) to dir/name. */
static void
save_recording(sa_delta *d, const char *rec, const char *dir, const char *name)
{
	char path[512];

	free(d->adapter_path);
	d->adapter_path = rec ? strdup(rec) : NULL;
	snprintf(path, sizeof path, "%s/%s", dir, name);
	CHECK_OK(sa_delta_save(d, path));
}

/* sa_deltas_bind on dir/name alone (given, fallback as it takes them): its
 * status, and the adapter's path in *found when one was bound. */
static int
bind_one(const char *dir, const char *name, const sa_model *m, const char *given,
    const char *fallback, char *found, size_t size)
{
	char path[512], *paths[1] = { path };
	sa_deltas *ds;
	int rc;

	snprintf(path, sizeof path, "%s/%s", dir, name);
	*found = 0;
	CHECK_OK(sa_deltas_load(&ds, paths, NULL, 1));
	if (!ds)
		return -1;
	rc = sa_deltas_bind(ds, m, given, fallback);
	if (rc == SA_OK)
		snprintf(found, size, "%s", ds->adapter->path);
	sa_deltas_free(ds);
	return rc;
}

/*
 * One check binds model, adapter and delta, naming the delta; the adapter
 * of a delta is -a, else the path it records, that path from the delta's
 * directory, its name beside the delta, else the default when it matches.
 */
static void
test_binding(sa_model *m, const sa_adapter *a, const sa_adapter *a0)
{
	char dir[] = "/tmp/test_delta_bind.XXXXXX", sub[600], apath[700], a0path[700], got[700];
	sa_model other = *m;
	sa_delta *d, *e;

	if (!mkdtemp(dir))
		return;
	CHECK_OK(sa_delta_new(&d, a));
	CHECK_OK(sa_binding_check(m, a, d, "x.delta"));
	CHECK_OK(sa_binding_check(NULL, a, d, NULL));
	CHECK_OK(sa_binding_check(m, NULL, d, NULL));
	other.fingerprint ^= 1;
	CHECK(sa_binding_check(&other, a, NULL, NULL) == SA_EDATA && has("was made for another model"));
	CHECK(sa_binding_check(&other, NULL, d, "x.delta") == SA_EDATA &&
	    has("x.delta was made for another model"));
	CHECK(sa_binding_check(m, a0, d, "x.delta") == SA_EDATA &&
	    has("x.delta was made with another adapter"));
	CHECK_OK(sa_delta_clone(&e, d));
	e->rank++;
	CHECK(sa_binding_check(NULL, a, e, "y.delta") == SA_EDATA && has("y.delta: shape does not match"));
	e->rank--;
	e->n_layer++;
	CHECK(sa_binding_check(m, NULL, e, "y.delta") == SA_EDATA && has("y.delta has"));
	sa_delta_free(e);

	snprintf(sub, sizeof sub, "%s/sub", dir);
	snprintf(apath, sizeof apath, "%s/a.gguf", sub);
	snprintf(a0path, sizeof a0path, "%s/a0.gguf", dir);
	CHECK(mkdir(sub, 0777) == 0);
	CHECK_OK(sa_adapter_save(a, m, apath));
	CHECK_OK(sa_adapter_save(a0, m, a0path));
	/* the path it records, absolute, or from the delta's directory */
	save_recording(d, apath, sub, "abs.delta");
	CHECK(bind_one(sub, "abs.delta", m, NULL, NULL, got, sizeof got) == SA_OK && !strcmp(got, apath));
	save_recording(d, "sub/a.gguf", dir, "rel.delta");
	CHECK(bind_one(dir, "rel.delta", m, NULL, NULL, got, sizeof got) == SA_OK && strstr(got, "sub/a.gguf"));
	/* moved with it: its name beside the delta */
	save_recording(d, "/nonexistent/a.gguf", sub, "moved.delta");
	CHECK(bind_one(sub, "moved.delta", m, NULL, NULL, got, sizeof got) == SA_OK &&
	    !strcmp(got, apath));
	/* -a wins, and is checked */
	CHECK(bind_one(sub, "moved.delta", m, a0path, NULL, got, sizeof got) == SA_EDATA &&
	    has("moved.delta was made with another adapter"));
	/* missing: the default when it is the delta's adapter */
	save_recording(d, "/nonexistent/zz.gguf", sub, "lost.delta");
	CHECK(bind_one(sub, "lost.delta", m, NULL, apath, got, sizeof got) == SA_OK && !strcmp(got, apath));
	CHECK(bind_one(sub, "lost.delta", m, NULL, a0path, got, sizeof got) == SA_ENOINPUT &&
	    has("its adapter /nonexistent/zz.gguf is missing"));
	save_recording(d, NULL, sub, "none.delta");
	CHECK(bind_one(sub, "none.delta", m, NULL, NULL, got, sizeof got) == SA_EUSAGE &&
	    has("records no adapter"));
	sa_delta_free(d);

	/* deltas of two adapters do not load together */
	{
		char p1[700], p2[700], *paths[2] = { p1, p2 };
		sa_deltas *ds = NULL;
		snprintf(p1, sizeof p1, "%s/abs.delta", sub);
		snprintf(p2, sizeof p2, "%s/other.delta", sub);
		CHECK_OK(sa_delta_new(&e, a0));
		CHECK_OK(sa_delta_save(e, p2));
		CHECK(sa_deltas_load(&ds, paths, NULL, 2) == SA_EDATA && has("different adapters") && !ds);
		sa_delta_free(e);
	}
	{
		char cmd[700];
		snprintf(cmd, sizeof cmd, "rm -r '%s'", dir);
		CHECK(system(cmd) == 0);
	}
}

static void
test_with_model(const char *model_path)
{
	uint32_t mats = 1u << SA_MAT_Q | 1u << SA_MAT_K | 1u << SA_MAT_V | 1u << SA_MAT_O | 1u << SA_MAT_DOWN;
	sa_model *m = NULL, other;
	sa_adapter *a0 = NULL, *a = NULL, *b = NULL;
	sa_delta *d = NULL;
	char path[] = "/tmp/test_delta_adapter.XXXXXX";
	float *base, *merged, *side, *zero;
	int fd, n_vocab;
	double dm = 0, ds = 0, scale = 0;

	CHECK_OK(sa_model_load(&m, model_path));
	if (!m)
		return;
	n_vocab = m->cfg.n_vocab;
	CHECK_OK(sa_adapter_init(&a0, m, 4, 8, mats, 7, 0));
	CHECK_OK(sa_adapter_init(&a, m, 4, 8, mats, 7, 0.5f));
	CHECK(sa_adapter_init(&b, m, 0, 8, mats, 7, 0) == SA_EUSAGE && b == NULL);
	CHECK(a0->fingerprint != a->fingerprint && a->model_fingerprint == m->fingerprint);
	/* Same seed, same Q, g, b, W2: only W1 differs. */
	CHECK(memcmp(SA_ADAPTER_MAT(a0, 1, SA_MAT_DOWN)->W2, SA_ADAPTER_MAT(a, 1, SA_MAT_DOWN)->W2,
	    (size_t)4 * m->cfg.d_ff * sizeof(float)) == 0);

	/* Save and load: the same adapter, bit for bit. */
	fd = mkstemp(path);
	close(fd);
	CHECK_OK(sa_adapter_save(a, m, path));
	CHECK_OK(sa_adapter_load(&b, path));
	if (b) {
		int same = b->fingerprint == a->fingerprint && b->mats == mats && b->rank == 4 &&
		    b->chunk == 8 && b->model_fingerprint == m->fingerprint && strcmp(b->path, path) == 0;
		for (int l = 0; l < a->n_layer; l++)
			for (int mt = 0; mt < SA_NMAT; mt++) {
				const sa_adapter_mat *x = SA_ADAPTER_MAT(a, l, mt), *y = SA_ADAPTER_MAT(b, l, mt);
				int Dkv = a->n_head_kv * a->d_head;
				if (!sa_adapted(mats, mt))
					continue;
				same &= x->d_out == y->d_out && x->d_in == y->d_in;
				same &= !memcmp(x->Q, y->Q, (size_t)Dkv * 4 * sizeof(float));
				same &= !memcmp(x->g, y->g, (size_t)Dkv * sizeof(float));
				same &= !memcmp(x->b, y->b, (size_t)a->n_head_kv * 4 * sizeof(float));
				same &= !memcmp(x->W1, y->W1, (size_t)x->d_out * Dkv * sizeof(float));
				same &= !memcmp(x->W2, y->W2, (size_t)4 * x->d_in * sizeof(float));
			}
		CHECK(same);
		CHECK_OK(sa_adapter_check(b, m));
		sa_adapter_free(b);
		b = NULL;
	}

	/* Another model: refused, naming both fingerprints. */
	other = *m;
	other.fingerprint ^= 0xff;
	{
		char want[40];
		CHECK(sa_adapter_check(a, &other) == SA_EDATA && has("was made for another model"));
		snprintf(want, sizeof want, "%016llx", (unsigned long long)other.fingerprint);
		CHECK(has(want));
		snprintf(want, sizeof want, "%016llx", (unsigned long long)m->fingerprint);
		CHECK(has(want));
	}

	/* An edited weight breaks the fingerprint; a NaN is refused as such. */
	{
		const float *w1 = SA_ADAPTER_MAT(a, 0, SA_MAT_K)->W1;
		float edit[4] = { w1[0], w1[1], w1[2], w1[3] + 1 }, nan4[4] = { w1[0], NAN, w1[2], w1[3] };
		CHECK(patch_file(path, w1, edit, sizeof edit));
		CHECK(sa_adapter_load(&b, path) == SA_EDATA && has("fingerprint mismatch") && b == NULL);
		CHECK(patch_file(path, edit, nan4, sizeof nan4));
		CHECK(sa_adapter_load(&b, path) == SA_EDATA && has("blk.0.attn_k.sa_w1 holds a non-finite value"));
		CHECK(sa_adapter_load(&b, model_path) == SA_EDATA && has("not an adapter"));
	}
	unlink(path);

	/* Absorption: merged and side paths give the same logits; a zero W1
	 * leaves the model exactly as it was. */
	CHECK_OK(sa_delta_new(&d, a));
	rng = 77;
	for (size_t i = 0; i < (size_t)sa_delta_n_used(d) * d->n_head_kv * d->rank * d->d_head; i++)
		d->h[i] = (float)(2 * urand() - 1);

	base = logits_of(m);
	CHECK_OK(sa_delta_apply(m, a, d, 1.0f, 1));
	merged = logits_of(m);
	sa_model_reset_weights(m);
	CHECK_OK(sa_delta_apply(m, a, d, 1.0f, 0));
	side = logits_of(m);
	sa_model_reset_weights(m);
	test_shared_w2(m, a, d, side);
	d->adapter_fingerprint = a0->fingerprint;
	CHECK_OK(sa_delta_apply(m, a0, d, 1.0f, 1));
	zero = logits_of(m);
	sa_model_reset_weights(m);
	for (int i = 0; i < n_vocab; i++) {
		dm = fmax(dm, fabs(merged[i] - base[i]));
		ds = fmax(ds, fabs(merged[i] - side[i]));
		scale = fmax(scale, fabs(base[i]));
	}
	CHECK(dm > 1e-3);                       /* the delta does something */
	CHECK(ds < 1e-4 * (1 + scale));         /* both ways agree */
	CHECK(memcmp(zero, base, (size_t)n_vocab * sizeof(float)) == 0);
	fprintf(stderr, "absorption: |merged - base| %.3g, |merged - side| %.3g\n", dm, ds);

	/* A delta of another adapter, or for another model, is refused. */
	CHECK(sa_delta_apply(m, a, d, 1.0f, 1) == SA_EDATA && has("another adapter"));
	d->adapter_fingerprint = a->fingerprint;
	d->model_fingerprint ^= 1;
	CHECK(sa_delta_apply(m, a, d, 1.0f, 1) == SA_EDATA && has("another model"));
	test_binding(m, a, a0);

	free(base);
	free(merged);
	free(side);
	free(zero);
	sa_delta_free(d);
	sa_adapter_free(a0);
	sa_adapter_free(a);
	sa_model_free(m);
}

int
main(int argc, char **argv)
{
	sa_adapter *a = make_adapter(1, 0.5f), *other = make_adapter(2, 0.5f);

	signal(SIGPIPE, SIG_IGN);
	test_new_and_index(a);
	test_roundtrip(a);
	test_corruption(a);
	test_handmade();
	test_chain(a);
	test_factors(a);
	test_combine(a);
	test_compatible(a, other);
	test_write_refuses(a);
	test_print(a);
	test_adapter_init();
	/* With a model file (tests/helpers/mkmodel): adapter files and absorption. */
	if (argc > 1)
		test_with_model(argv[1]);
	sa_adapter_free(a);
	sa_adapter_free(other);
	return t_done();
}
