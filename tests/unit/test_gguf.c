/*
 * test_gguf - GGUF reader and writer, tensor types and conversions.
 *
 * Files are built byte by byte here, independently of the writer, so the
 * reader is checked against the format and not against itself.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sa.h"
#include "t.h"

static char tmpdir[] = "/tmp/test_gguf.XXXXXX";

/* ----------------------------------------------------------- byte builder */

typedef struct buf {
	uint8_t *p;
	size_t n, cap;
} buf;

static void
put(buf *b, const void *p, size_t n)
{
	if (b->n + n > b->cap) {
		b->cap = (b->n + n) * 2 + 64;
		b->p = realloc(b->p, b->cap);
		if (!b->p)
			abort();
	}
	memcpy(b->p + b->n, p, n);
	b->n += n;
}

static void put_u8(buf *b, uint8_t v) { put(b, &v, 1); }
static void put_u16(buf *b, uint16_t v) { put(b, &v, 2); }
static void put_u32(buf *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(buf *b, uint64_t v) { put(b, &v, 8); }
static void put_f32(buf *b, float v) { put(b, &v, 4); }
static void put_f64(buf *b, double v) { put(b, &v, 8); }

static void
put_str(buf *b, const char *s)
{
	put_u64(b, strlen(s));
	put(b, s, strlen(s));
}

static void
put_key(buf *b, const char *key, uint32_t type)
{
	put_str(b, key);
	put_u32(b, type);
}

static void
pad(buf *b, size_t align)
{
	while (b->n % align)
		put_u8(b, 0);
}

static void
header(buf *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv)
{
	put(b, "GGUF", 4);
	put_u32(b, version);
	put_u64(b, n_tensors);
	put_u64(b, n_kv);
}

static void
tensor_info(buf *b, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type, uint64_t off)
{
	put_str(b, name);
	put_u32(b, n_dims);
	for (uint32_t i = 0; i < n_dims; i++)
		put_u64(b, ne[i]);
	put_u32(b, type);
	put_u64(b, off);
}

static char *
tmp_path(const char *name)
{
	static char path[4][256];
	static int k;
	char *p = path[k++ % 4];
	snprintf(p, 256, "%s/%s", tmpdir, name);
	return p;
}

static const char *
write_file(const char *name, const void *p, size_t n)
{
	char *path = tmp_path(name);
	FILE *fp = fopen(path, "wb");
	if (!fp || fwrite(p, 1, n, fp) != n || fclose(fp) != 0) {
		perror(path);
		exit(2);
	}
	return path;
}

static int
open_bytes(sa_gguf **g, const void *p, size_t n)
{
	return sa_gguf_open(g, write_file("x.gguf", p, n));
}

/* The same bytes through a pipe on stdin: the reader then holds them in a
 * malloc'd block of exactly n bytes, where a sanitizer sees any overrun. */
static int
open_bytes_pipe(sa_gguf **g, const void *p, size_t n)
{
	int fd[2], saved = dup(0), rc;

	if (n > 60000 || pipe(fd) != 0 || saved < 0)
		abort();
	if (n && write(fd[1], p, n) != (ssize_t)n)
		abort();
	close(fd[1]);
	dup2(fd[0], 0);
	close(fd[0]);
	rc = sa_gguf_open(g, "-");
	dup2(saved, 0);
	close(saved);
	return rc;
}

static int
has(const char *msg, const char *part)
{
	if (strstr(msg, part))
		return 1;
	fprintf(stderr, "message \"%s\" lacks \"%s\"\n", msg, part);
	return 0;
}

/* --------------------------------------------------------------- a file */

/*
 * A file with every metadata value type (nested arrays, string arrays,
 * empty ones) and three tensors, laid out exactly as the writer lays it
 * out, so that copying it through the writer gives the same bytes.
 */
static float t_f32[2][8];
static uint16_t t_f16[16];
static uint8_t t_q4k[144];  /* one Q4_K block: listed, not computable */

static buf
every_type_file(uint32_t version)
{
	buf b = { 0 };

	for (int i = 0; i < 16; i++) {
		t_f32[i / 8][i % 8] = (float)i * 0.5f - 3;
		t_f16[i] = sa_fp32_to_fp16((float)i / 4);
	}
	for (int i = 0; i < 144; i++)
		t_q4k[i] = (uint8_t)(i * 7);

	header(&b, version, 3, 19);
	put_key(&b, "general.architecture", SA_GGUF_STR); put_str(&b, "llama");
	put_key(&b, "v.u8", SA_GGUF_U8); put_u8(&b, 200);
	put_key(&b, "v.i8", SA_GGUF_I8); put_u8(&b, (uint8_t)-100);
	put_key(&b, "v.u16", SA_GGUF_U16); put_u16(&b, 60000);
	put_key(&b, "v.i16", SA_GGUF_I16); put_u16(&b, (uint16_t)-30000);
	put_key(&b, "v.u32", SA_GGUF_U32); put_u32(&b, 4000000000u);
	put_key(&b, "v.i32", SA_GGUF_I32); put_u32(&b, (uint32_t)-2000000000);
	put_key(&b, "v.f32", SA_GGUF_F32); put_f32(&b, 1.5f);
	put_key(&b, "v.bool", SA_GGUF_BOOL); put_u8(&b, 1);
	put_key(&b, "v.str", SA_GGUF_STR); put_str(&b, "h\xc3\xa9llo");
	put_key(&b, "v.u64", SA_GGUF_U64); put_u64(&b, 0xfedcba9876543210ULL);
	put_key(&b, "v.i64", SA_GGUF_I64); put_u64(&b, (uint64_t)INT64_MIN);
	put_key(&b, "v.f64", SA_GGUF_F64); put_f64(&b, -2.25);
	put_key(&b, "a.i32", SA_GGUF_ARR); put_u32(&b, SA_GGUF_I32); put_u64(&b, 3);
	put_u32(&b, 7); put_u32(&b, (uint32_t)-8); put_u32(&b, 9);
	put_key(&b, "a.empty", SA_GGUF_ARR); put_u32(&b, SA_GGUF_F32); put_u64(&b, 0);
	put_key(&b, "a.str", SA_GGUF_ARR); put_u32(&b, SA_GGUF_STR); put_u64(&b, 3);
	put_str(&b, "one"); put_str(&b, ""); put_str(&b, "three");
	/* [[1, 2], [], [3]] as u16, then [["x"], ["y", "z"]] */
	put_key(&b, "a.nested", SA_GGUF_ARR); put_u32(&b, SA_GGUF_ARR); put_u64(&b, 3);
	put_u32(&b, SA_GGUF_U16); put_u64(&b, 2); put_u16(&b, 1); put_u16(&b, 2);
	put_u32(&b, SA_GGUF_U16); put_u64(&b, 0);
	put_u32(&b, SA_GGUF_U16); put_u64(&b, 1); put_u16(&b, 3);
	put_key(&b, "a.nested_str", SA_GGUF_ARR); put_u32(&b, SA_GGUF_ARR); put_u64(&b, 2);
	put_u32(&b, SA_GGUF_STR); put_u64(&b, 1); put_str(&b, "x");
	put_u32(&b, SA_GGUF_STR); put_u64(&b, 2); put_str(&b, "y"); put_str(&b, "z");
	put_key(&b, "a.bool", SA_GGUF_ARR); put_u32(&b, SA_GGUF_BOOL); put_u64(&b, 2);
	put_u8(&b, 0); put_u8(&b, 1);

	uint64_t ne_a[2] = { 8, 2 }, ne_b[1] = { 16 }, ne_c[1] = { 256 };
	tensor_info(&b, "a", 2, ne_a, SA_TYPE_F32, 0);
	tensor_info(&b, "b", 1, ne_b, SA_TYPE_F16, 64);
	tensor_info(&b, "c.q4k", 1, ne_c, 12, 96);
	pad(&b, 32);
	put(&b, t_f32, sizeof t_f32); pad(&b, 32);
	put(&b, t_f16, sizeof t_f16); pad(&b, 32);
	put(&b, t_q4k, sizeof t_q4k); pad(&b, 32);
	return b;
}

static void
check_every_type(const sa_gguf *g)
{
	uint32_t u32;
	uint64_t u64, n;
	int64_t i64;
	float f;
	int v, et;
	sa_str s, *ss;
	const void *data;

	CHECK(sa_gguf_n_kv(g) == 19);
	CHECK(sa_gguf_n_tensors(g) == 3);
	CHECK_OK(sa_gguf_get_u32(g, "v.u8", &u32)); CHECK(u32 == 200);
	CHECK_OK(sa_gguf_get_i64(g, "v.i8", &i64)); CHECK(i64 == -100);
	CHECK_OK(sa_gguf_get_u32(g, "v.u16", &u32)); CHECK(u32 == 60000);
	CHECK_OK(sa_gguf_get_i64(g, "v.i16", &i64)); CHECK(i64 == -30000);
	CHECK_OK(sa_gguf_get_u32(g, "v.u32", &u32)); CHECK(u32 == 4000000000u);
	CHECK_OK(sa_gguf_get_i64(g, "v.i32", &i64)); CHECK(i64 == -2000000000);
	CHECK_OK(sa_gguf_get_f32(g, "v.f32", &f)); CHECK(f == 1.5f);
	CHECK_OK(sa_gguf_get_bool(g, "v.bool", &v)); CHECK(v == 1);
	CHECK_OK(sa_gguf_get_str(g, "v.str", &s));
	CHECK(s.n == 6 && memcmp(s.s, "h\xc3\xa9llo", 6) == 0);
	CHECK_OK(sa_gguf_get_u64(g, "v.u64", &u64)); CHECK(u64 == 0xfedcba9876543210ULL);
	CHECK_OK(sa_gguf_get_i64(g, "v.i64", &i64)); CHECK(i64 == INT64_MIN);
	CHECK_OK(sa_gguf_get_f32(g, "v.f64", &f)); CHECK(f == -2.25f);

	/* integer getters take any integer type whose value fits, no other */
	CHECK(sa_gguf_get_u32(g, "v.i8", &u32) == SA_EDATA && has(sa_error(), "out of range"));
	CHECK(sa_gguf_get_u32(g, "v.u64", &u32) == SA_EDATA);
	CHECK(sa_gguf_get_i64(g, "v.u64", &i64) == SA_EDATA);
	CHECK(sa_gguf_get_u64(g, "v.i64", &u64) == SA_EDATA);
	CHECK_OK(sa_gguf_get_u64(g, "v.u8", &u64)); CHECK(u64 == 200);
	CHECK(sa_gguf_get_u32(g, "v.str", &u32) == SA_EDATA && has(sa_error(), "v.str"));
	CHECK(sa_gguf_get_f32(g, "v.u32", &f) == SA_EDATA);
	CHECK(sa_gguf_get_bool(g, "v.u8", &v) == SA_EDATA);
	CHECK(sa_gguf_get_str(g, "a.str", &s) == SA_EDATA);
	CHECK(sa_gguf_get_u32(g, "no.such", &u32) == SA_EDATA && has(sa_error(), "missing key no.such"));
	CHECK(sa_gguf_has(g, "v.f64") && !sa_gguf_has(g, "v.f6") && !sa_gguf_has(g, "v.f644"));

	char *dup;
	CHECK_OK(sa_gguf_get_strdup(g, "general.architecture", &dup));
	CHECK(strcmp(dup, "llama") == 0);
	free(dup);

	CHECK_OK(sa_gguf_get_arr(g, "a.i32", &et, &n, &data));
	CHECK(et == SA_GGUF_I32 && n == 3);
	if (et == SA_GGUF_I32 && n == 3) {
		int32_t x[3];
		memcpy(x, data, sizeof x);
		CHECK(x[0] == 7 && x[1] == -8 && x[2] == 9);
	}
	CHECK_OK(sa_gguf_get_arr(g, "a.empty", &et, &n, &data));
	CHECK(et == SA_GGUF_F32 && n == 0);
	CHECK_OK(sa_gguf_get_arr(g, "a.bool", &et, &n, &data));
	CHECK(et == SA_GGUF_BOOL && n == 2 && ((const uint8_t *)data)[1] == 1);
	CHECK_OK(sa_gguf_get_arr(g, "a.nested", &et, &n, &data));
	CHECK(et == SA_GGUF_ARR && n == 3);
	CHECK(sa_gguf_get_arr(g, "v.u8", &et, &n, &data) == SA_EDATA);

	CHECK_OK(sa_gguf_get_strs(g, "a.str", &n, &ss));
	CHECK(n == 3);
	if (n == 3) {
		CHECK(ss[0].n == 3 && memcmp(ss[0].s, "one", 3) == 0);
		CHECK(ss[1].n == 0);
		CHECK(ss[2].n == 5 && memcmp(ss[2].s, "three", 5) == 0);
	}
	free(ss);
	CHECK(sa_gguf_get_strs(g, "a.i32", &n, &ss) == SA_EDATA);

	/* iteration in file order */
	s = sa_gguf_kv_key(g, 0);
	CHECK(s.n == 20 && memcmp(s.s, "general.architecture", 20) == 0);
	CHECK(sa_gguf_kv_type(g, 0) == SA_GGUF_STR);
	s = sa_gguf_kv_key(g, 16);
	CHECK(s.n == 8 && memcmp(s.s, "a.nested", 8) == 0);
	CHECK(sa_gguf_kv_type(g, 16) == SA_GGUF_ARR);

	const sa_tensor_info *a = sa_gguf_tensor(g, "a"), *b = sa_gguf_tensor(g, "b");
	const sa_tensor_info *c = sa_gguf_tensor(g, "c.q4k");
	CHECK(a && b && c && !sa_gguf_tensor(g, "d") && !sa_gguf_tensor(g, "c.q4"));
	if (!a || !b || !c)
		return;
	CHECK(sa_gguf_tensor_at(g, 1) == b && !sa_gguf_tensor_at(g, 3));
	CHECK(a->type == SA_TYPE_F32 && a->n_dims == 2 && a->ne[0] == 8 && a->ne[1] == 2 &&
	    a->ne[2] == 1 && a->ne[3] == 1 && a->nbytes == 64);
	CHECK(memcmp(a->data, t_f32, sizeof t_f32) == 0);
	CHECK(b->type == SA_TYPE_F16 && b->nbytes == 32 && b->offset == 64);
	CHECK(memcmp(b->data, t_f16, sizeof t_f16) == 0);
	CHECK(c->type == 12 && c->nbytes == 144 && sa_type_supported(c->type));
	CHECK(memcmp(c->data, t_q4k, sizeof t_q4k) == 0);
	CHECK(strcmp(sa_type_name(c->type), "Q4_K") == 0);
	CHECK(((const uint8_t *)b->data - (const uint8_t *)a->data) == 64);
}

/* Copy every key and tensor of g through the writer. */
static sa_gguf_writer *
copy_all(const sa_gguf *g)
{
	sa_gguf_writer *w = sa_gguf_writer_new();

	for (uint64_t i = 0; i < sa_gguf_n_kv(g); i++) {
		sa_str k = sa_gguf_kv_key(g, i);
		char key[128];
		snprintf(key, sizeof key, "%.*s", (int)k.n, k.s);
		CHECK_OK(sa_gguf_writer_copy_kv(w, g, key));
	}
	for (uint64_t i = 0; i < sa_gguf_n_tensors(g); i++) {
		const sa_tensor_info *t = sa_gguf_tensor_at(g, i);
		CHECK_OK(sa_gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data));
	}
	return w;
}

static void
test_every_type(void)
{
	buf b = every_type_file(3);
	sa_gguf *g = NULL, *g2 = NULL;
	char *data;
	size_t len;

	CHECK_OK(open_bytes(&g, b.p, b.n));
	if (!g)
		return;
	CHECK(sa_gguf_version(g) == 3);
	check_every_type(g);

	/* the writer reproduces a canonical file byte for byte */
	sa_gguf_writer *w = copy_all(g);
	const char *out = tmp_path("copy.gguf");
	CHECK_OK(sa_gguf_writer_save(w, out));
	CHECK_OK(sa_file_read(out, &data, &len));
	CHECK(len == b.n && memcmp(data, b.p, b.n) == 0);
	free(data);
	CHECK_OK(sa_gguf_open(&g2, out));
	if (g2)
		check_every_type(g2);
	sa_gguf_close(g2);
	sa_gguf_writer_free(w);

	/* through a pipe, as a stream */
	CHECK_OK(open_bytes_pipe(&g2, b.p, b.n));
	if (g2) {
		check_every_type(g2);
		CHECK(strcmp(sa_gguf_path(g2), "stdin") == 0);
	}
	sa_gguf_close(g2);
	sa_gguf_close(g);
	free(b.p);
}

/* A version 2 file written by hand (the layout is the same as v3). */
static void
test_v2(void)
{
	buf b = every_type_file(2);
	sa_gguf *g = NULL;

	CHECK_OK(open_bytes(&g, b.p, b.n));
	if (g) {
		CHECK(sa_gguf_version(g) == 2);
		check_every_type(g);
	}
	sa_gguf_close(g);
	free(b.p);

	/* a v2 file as older converters wrote it: no tensors, no padding */
	buf v = { 0 };
	header(&v, 2, 0, 2);
	put_key(&v, "general.name", SA_GGUF_STR); put_str(&v, "old");
	put_key(&v, "n", SA_GGUF_U32); put_u32(&v, 5);
	CHECK_OK(open_bytes(&g, v.p, v.n));
	if (g) {
		uint32_t n = 0;
		CHECK_OK(sa_gguf_get_u32(g, "n", &n));
		CHECK(n == 5 && sa_gguf_n_tensors(g) == 0 && sa_gguf_version(g) == 2);
	}
	sa_gguf_close(g);
	free(v.p);

	/* general.alignment 64 by hand: the data section starts at a multiple of 64 */
	buf c = { 0 };
	uint64_t ne[1] = { 8 };
	header(&c, 3, 2, 1);
	put_key(&c, "general.alignment", SA_GGUF_U32); put_u32(&c, 64);
	tensor_info(&c, "x", 1, ne, SA_TYPE_F32, 0);
	tensor_info(&c, "y", 1, ne, SA_TYPE_F32, 64);
	pad(&c, 64);
	size_t start = c.n;
	put(&c, t_f32[0], 32); pad(&c, 64);
	put(&c, t_f32[1], 32);
	CHECK_OK(open_bytes(&g, c.p, c.n));
	if (g) {
		const sa_tensor_info *x = sa_gguf_tensor(g, "x"), *y = sa_gguf_tensor(g, "y");
		CHECK(x && y);
		if (x && y) {
			CHECK(memcmp(x->data, t_f32[0], 32) == 0 && memcmp(y->data, t_f32[1], 32) == 0);
			CHECK((const uint8_t *)y->data - (const uint8_t *)x->data == 64);
		}
	}
	sa_gguf_close(g);
	/* without the key, a section start that is not a multiple of 32 would
	 * be misread; this file's start is a multiple of 64 either way */
	CHECK(start % 64 == 0);
	free(c.p);
}

/* Every prefix of a valid file that cuts into its data is refused with
 * SA_EDATA, both through mmap and from a pipe; one that only drops the
 * padding after the last tensor still reads. */
static void
test_truncations(void)
{
	buf b = every_type_file(3);
	size_t data_end = b.n - 16;  /* the Q4_K block's 144 bytes end 16 short of 160 */
	int bad_mmap = 0, bad_pipe = 0;

	CHECK(memcmp(b.p + data_end - sizeof t_q4k, t_q4k, sizeof t_q4k) == 0);
	for (size_t n = 0; n <= b.n; n++) {
		int want = n < data_end ? SA_EDATA : SA_OK;
		sa_gguf *g = NULL;
		if (open_bytes(&g, b.p, n) != want || !g != (want != SA_OK))
			bad_mmap++;
		sa_gguf_close(g);
		g = NULL;
		if (open_bytes_pipe(&g, b.p, n) != want || !g != (want != SA_OK))
			bad_pipe++;
		sa_gguf_close(g);
	}
	CHECK(bad_mmap == 0);
	CHECK(bad_pipe == 0);
	free(b.p);
}

/* One broken file: expect SA_EDATA and a message containing want, fast. */
static void
expect_bad(const buf *b, const char *want, int line)
{
	sa_gguf *g = NULL;
	clock_t t0 = clock();
	int rc = open_bytes(&g, b->p, b->n);
	double secs = (double)(clock() - t0) / CLOCKS_PER_SEC;

	t_checked++;
	if (rc != SA_EDATA || g || !strstr(sa_error(), want) || secs > 0.5) {
		t_failed++;
		fprintf(stderr, "%s:%d: rc %d, \"%s\" (want \"%s\"), %.3fs\n", __FILE__, line,
		    rc, sa_error(), want, secs);
	}
	sa_gguf_close(g);
}
#define EXPECT_BAD(b, want) expect_bad(&(b), (want), __LINE__)

static void
test_bad_files(void)
{
	uint64_t ne1[1] = { 8 }, ne2[2] = { 8, 2 };
	buf b;

#define RESET() do { free(b.p); memset(&b, 0, sizeof b); } while (0)
	memset(&b, 0, sizeof b);

	put(&b, "GGML", 4); put_u32(&b, 3); put_u64(&b, 0); put_u64(&b, 0);
	EXPECT_BAD(b, "x.gguf: not a GGUF file");
	RESET(); put(&b, "G", 1);
	EXPECT_BAD(b, "x.gguf: truncated");
	RESET(); put(&b, "\x7f" "ELF", 4);
	EXPECT_BAD(b, "not a GGUF file");
	RESET(); header(&b, 1, 0, 0);
	EXPECT_BAD(b, "unsupported GGUF version 1");
	RESET(); header(&b, 4, 0, 0);
	EXPECT_BAD(b, "unsupported GGUF version 4");
	RESET(); header(&b, 0x03000000, 0, 0);
	EXPECT_BAD(b, "unsupported GGUF version");

	/* absurd counts in a tiny file: refused before anything is sized by them */
	RESET(); header(&b, 3, 1ULL << 60, 0); put_u64(&b, 0);
	EXPECT_BAD(b, "truncated");
	RESET(); header(&b, 3, 0, 1ULL << 60);
	EXPECT_BAD(b, "truncated");
	RESET(); header(&b, 3, UINT64_MAX, UINT64_MAX);
	EXPECT_BAD(b, "truncated");
	RESET(); header(&b, 3, 0, 1); put_u64(&b, 1ULL << 63); put(&b, "k", 1);
	EXPECT_BAD(b, "truncated");
	RESET(); header(&b, 3, 0, 1); put_key(&b, "k", SA_GGUF_STR); put_u64(&b, UINT64_MAX);
	EXPECT_BAD(b, "truncated");
	RESET(); header(&b, 3, 0, 1); put_key(&b, "k", SA_GGUF_ARR);
	put_u32(&b, SA_GGUF_U64); put_u64(&b, 1ULL << 62); put_u64(&b, 0);
	EXPECT_BAD(b, "truncated");
	RESET(); header(&b, 3, 0, 1); put_key(&b, "k", SA_GGUF_ARR);
	put_u32(&b, SA_GGUF_STR); put_u64(&b, UINT64_MAX); put_u64(&b, 0);
	EXPECT_BAD(b, "truncated");
	RESET(); header(&b, 3, 0, 1); put_key(&b, "k", SA_GGUF_ARR);
	put_u32(&b, SA_GGUF_ARR); put_u64(&b, 1ULL << 61); put_u32(&b, SA_GGUF_U8); put_u64(&b, 0);
	EXPECT_BAD(b, "truncated");

	/* bad value types and nesting */
	RESET(); header(&b, 3, 0, 1); put_key(&b, "k", 13); put_u64(&b, 0);
	EXPECT_BAD(b, "key k: bad value type 13");
	RESET(); header(&b, 3, 0, 1); put_key(&b, "k", SA_GGUF_ARR);
	put_u32(&b, 99); put_u64(&b, 1); put_u64(&b, 0);
	EXPECT_BAD(b, "bad array element type 99");
	RESET(); header(&b, 3, 0, 1); put_key(&b, "deep", SA_GGUF_ARR);
	for (int i = 0; i < 20; i++) { put_u32(&b, SA_GGUF_ARR); put_u64(&b, 1); }
	put_u32(&b, SA_GGUF_U8); put_u64(&b, 0);
	EXPECT_BAD(b, "nested too deeply");
	RESET(); header(&b, 3, 0, 2);
	put_key(&b, "k", SA_GGUF_U8); put_u8(&b, 1); put_key(&b, "k", SA_GGUF_U8); put_u8(&b, 2);
	EXPECT_BAD(b, "duplicate key k");
	RESET(); header(&b, 3, 0, 1); put_key(&b, "", SA_GGUF_U8); put_u8(&b, 1);
	EXPECT_BAD(b, "empty");
	RESET(); header(&b, 3, 0, 1); put_key(&b, "general.alignment", SA_GGUF_U32); put_u32(&b, 48);
	EXPECT_BAD(b, "general.alignment 48 is not a power of two");
	RESET(); header(&b, 3, 0, 1); put_key(&b, "general.alignment", SA_GGUF_U32); put_u32(&b, 0);
	EXPECT_BAD(b, "not a power of two");

	/* tensor infos */
	RESET(); header(&b, 3, 1, 0); tensor_info(&b, "t", 0, ne1, 0, 0); pad(&b, 32);
	put(&b, t_f32, 32);
	EXPECT_BAD(b, "tensor t: bad number of dimensions 0");
	{
		uint64_t ne5[5] = { 1, 1, 1, 1, 8 };
		RESET(); header(&b, 3, 1, 0); tensor_info(&b, "t", 5, ne5, 0, 0); pad(&b, 32);
		put(&b, t_f32, 32);
		EXPECT_BAD(b, "tensor t: bad number of dimensions 5");
	}
	{
		uint64_t ne0[2] = { 8, 0 };
		RESET(); header(&b, 3, 1, 0); tensor_info(&b, "t", 2, ne0, 0, 0); pad(&b, 32);
		put(&b, t_f32, 32);
		EXPECT_BAD(b, "tensor t: bad shape");
	}
	{
		uint64_t big[3] = { 1ULL << 32, 1ULL << 32, 2 };
		RESET(); header(&b, 3, 1, 0); tensor_info(&b, "t", 3, big, 0, 0); pad(&b, 32);
		put(&b, t_f32, 32);
		EXPECT_BAD(b, "tensor t: bad shape");
		uint64_t neg[1] = { UINT64_MAX };
		RESET(); header(&b, 3, 1, 0); tensor_info(&b, "t", 1, neg, 0, 0); pad(&b, 32);
		put(&b, t_f32, 32);
		EXPECT_BAD(b, "tensor t: bad shape");
		/* fits int64 as elements but not size_t as F32 bytes */
		uint64_t huge[2] = { 1ULL << 31, 1ULL << 31 };
		RESET(); header(&b, 3, 1, 0); tensor_info(&b, "t", 2, huge, 0, 0); pad(&b, 32);
		put(&b, t_f32, 32);
		EXPECT_BAD(b, "tensor t: too large");
		uint64_t large[2] = { 1ULL << 30, 1ULL << 30 };
		RESET(); header(&b, 3, 1, 0); tensor_info(&b, "t", 2, large, 0, 0); pad(&b, 32);
		put(&b, t_f32, 32);
		EXPECT_BAD(b, "tensor t: data out of bounds");
	}
	RESET(); header(&b, 3, 1, 0); tensor_info(&b, "t", 1, ne1, 77, 0); pad(&b, 32); put(&b, t_f32, 32);
	EXPECT_BAD(b, "tensor t: unknown type 77");
	RESET(); header(&b, 3, 1, 0); tensor_info(&b, "t", 1, ne1, SA_TYPE_Q8_0, 0); pad(&b, 32);
	put(&b, t_f32, 32);
	EXPECT_BAD(b, "do not fill");
	RESET(); header(&b, 3, 1, 0); tensor_info(&b, "t", 1, ne1, 0, 32); pad(&b, 32); put(&b, t_f32, 32);
	EXPECT_BAD(b, "tensor t: data out of bounds");
	RESET(); header(&b, 3, 1, 0); tensor_info(&b, "t", 1, ne1, 0, UINT64_MAX - 31); pad(&b, 32);
	put(&b, t_f32, 32);
	EXPECT_BAD(b, "tensor t: data out of bounds");
	RESET(); header(&b, 3, 1, 0); tensor_info(&b, "t", 1, ne1, 0, 4); pad(&b, 32); put(&b, t_f32, 64);
	EXPECT_BAD(b, "tensor t: data offset 4 is not aligned to 32");
	RESET(); header(&b, 3, 2, 0); tensor_info(&b, "t", 1, ne1, 0, 0);
	tensor_info(&b, "t", 2, ne2, 0, 32); pad(&b, 32); put(&b, t_f32, 64);
	EXPECT_BAD(b, "duplicate tensor t");
	RESET(); header(&b, 3, 1, 0); tensor_info(&b, "", 1, ne1, 0, 0); pad(&b, 32); put(&b, t_f32, 32);
	EXPECT_BAD(b, "bad name");
	/* tensors sharing bytes: a small file must not stand for many copies */
	RESET(); header(&b, 3, 2, 0); tensor_info(&b, "a", 1, ne1, 0, 0);
	tensor_info(&b, "b", 1, ne1, 0, 0); pad(&b, 32); put(&b, t_f32, 32);
	EXPECT_BAD(b, "tensors a and b overlap");
	RESET(); header(&b, 3, 2, 0); tensor_info(&b, "b", 1, ne1, 0, 64);
	tensor_info(&b, "a", 2, ne2, 0, 32); pad(&b, 32); put(&b, t_f32, 64); put(&b, t_f32, 32);
	EXPECT_BAD(b, "tensors a and b overlap");
	RESET();
#undef RESET
}

/* Writer -> reader: tensors of several types at several alignments. */
static void
test_writer(void)
{
	static const int aligns[] = { 0, 1, 8, 64, 256 };
	float row[64];
	uint16_t f16[64], bf16[64];
	uint8_t q8[2 * 34], odd[18 * 3];

	for (int i = 0; i < 64; i++)
		row[i] = (float)i / 7 - 4;
	sa_row_from_f32(SA_TYPE_F16, row, f16, 64);
	sa_row_from_f32(SA_TYPE_BF16, row, bf16, 64);
	sa_row_from_f32(SA_TYPE_Q8_0, row, q8, 64);
	for (size_t i = 0; i < sizeof odd; i++)
		odd[i] = (uint8_t)(i * 13);

	for (size_t k = 0; k < sizeof aligns / sizeof aligns[0]; k++) {
		sa_gguf_writer *w = sa_gguf_writer_new();
		int64_t ne_f32[2] = { 3, 5 }, ne64[1] = { 64 }, ne_q8[2] = { 32, 2 }, ne_q40[1] = { 96 };
		sa_str strs[2] = { { "a b", 3 }, { "\xe2\x96\x81x", 4 } };
		uint32_t ints[4] = { 1, 2, 3, 4 };
		sa_gguf *g = NULL;
		const char *path = tmp_path("w.gguf");

		if (aligns[k])
			CHECK_OK(sa_gguf_writer_set_u32(w, "general.alignment", (uint32_t)aligns[k]));
		CHECK_OK(sa_gguf_writer_set_str(w, "s", "first"));
		CHECK_OK(sa_gguf_writer_set_i32(w, "i", -5));
		CHECK_OK(sa_gguf_writer_set_u64(w, "u", 1ULL << 40));
		CHECK_OK(sa_gguf_writer_set_f32(w, "f", 0.25f));
		CHECK_OK(sa_gguf_writer_set_bool(w, "b", 1));
		CHECK_OK(sa_gguf_writer_set_arr(w, "arr", SA_GGUF_U32, 4, ints));
		CHECK_OK(sa_gguf_writer_set_strs(w, "strs", 2, strs));
		CHECK_OK(sa_gguf_writer_set_str(w, "s", "second"));   /* replaces */
		CHECK(sa_gguf_writer_set_arr(w, "bad", SA_GGUF_STR, 1, ints) != SA_OK);
		CHECK_OK(sa_gguf_writer_add_tensor(w, "f32", SA_TYPE_F32, 2, ne_f32, row));
		CHECK_OK(sa_gguf_writer_add_tensor(w, "f16", SA_TYPE_F16, 1, ne64, f16));
		CHECK_OK(sa_gguf_writer_add_tensor(w, "bf16", SA_TYPE_BF16, 1, ne64, bf16));
		CHECK_OK(sa_gguf_writer_add_tensor(w, "q8", SA_TYPE_Q8_0, 2, ne_q8, q8));
		CHECK_OK(sa_gguf_writer_add_tensor(w, "q4_0", 2, 1, ne_q40, odd));
		CHECK(sa_gguf_writer_add_tensor(w, "f16", SA_TYPE_F16, 1, ne64, f16) != SA_OK);
		CHECK(sa_gguf_writer_add_tensor(w, "q8bad", SA_TYPE_Q8_0, 1, ne_f32, q8) != SA_OK);
		CHECK(sa_gguf_writer_add_tensor(w, "t77", 77, 1, ne64, q8) != SA_OK);
		CHECK(sa_gguf_writer_add_tensor(w,
		    "a_name_that_is_far_too_long_for_ggml_which_keeps_64_bytes_only_xx",
		    SA_TYPE_F32, 1, ne64, row) != SA_OK);
		CHECK_OK(sa_gguf_writer_save(w, path));
		sa_gguf_writer_free(w);

		CHECK_OK(sa_gguf_open(&g, path));
		if (!g)
			continue;
		uint32_t a = 32, u32;
		uint64_t n;
		int64_t i64;
		float f;
		int bv, et;
		sa_str s, *ss;
		const void *data;
		if (aligns[k])
			a = (uint32_t)aligns[k];
		CHECK(sa_gguf_n_kv(g) == (aligns[k] ? 8u : 7u));
		CHECK_OK(sa_gguf_get_str(g, "s", &s)); CHECK(s.n == 6 && !memcmp(s.s, "second", 6));
		CHECK_OK(sa_gguf_get_i64(g, "i", &i64)); CHECK(i64 == -5);
		CHECK_OK(sa_gguf_get_u64(g, "u", &n)); CHECK(n == 1ULL << 40);
		CHECK(sa_gguf_get_u32(g, "u", &u32) == SA_EDATA);
		CHECK_OK(sa_gguf_get_f32(g, "f", &f)); CHECK(f == 0.25f);
		CHECK_OK(sa_gguf_get_bool(g, "b", &bv)); CHECK(bv == 1);
		CHECK_OK(sa_gguf_get_arr(g, "arr", &et, &n, &data));
		CHECK(et == SA_GGUF_U32 && n == 4 && !memcmp(data, ints, 16));
		CHECK_OK(sa_gguf_get_strs(g, "strs", &n, &ss));
		CHECK(n == 2 && ss[0].n == 3 && !memcmp(ss[1].s, "\xe2\x96\x81x", 4));
		free(ss);

		const char *names[5] = { "f32", "f16", "bf16", "q8", "q4_0" };
		const void *want[5] = { row, f16, bf16, q8, odd };
		size_t bytes[5] = { 60, 128, 128, 68, 54 };
		const uint8_t *first = NULL;
		for (int i = 0; i < 5; i++) {
			const sa_tensor_info *t = sa_gguf_tensor(g, names[i]);
			CHECK(t != NULL);
			if (!t)
				continue;
			if (!first)
				first = t->data;
			CHECK(t->nbytes == bytes[i] && !memcmp(t->data, want[i], bytes[i]));
			CHECK(t->offset % a == 0);
			CHECK((size_t)((const uint8_t *)t->data - first) == t->offset);
		}
		const sa_tensor_info *q = sa_gguf_tensor(g, "q8");
		if (q) {
			float back[64];
			CHECK(q->ne[0] == 32 && q->ne[1] == 2 && q->n_dims == 2);
			CHECK(sa_type_row_size(q->type, q->ne[0]) == 34);
			sa_row_to_f32(q->type, q->data, back, 64);
			CHECK_NEAR(back[63], row[63], 0.05);
		}
		sa_gguf_close(g);
	}

	/* streaming: a pipe can take the output, and a full disk is an I/O error */
	sa_gguf_writer *w = sa_gguf_writer_new();
	int64_t ne64[1] = { 64 };
	CHECK_OK(sa_gguf_writer_set_str(w, "general.architecture", "llama"));
	CHECK_OK(sa_gguf_writer_add_tensor(w, "x", SA_TYPE_F32, 1, ne64, row));
	FILE *full = fopen("/dev/full", "wb");
	if (full) {
		CHECK(sa_gguf_writer_write(w, full, "/dev/full") == SA_EIO);
		CHECK(has(sa_error(), "/dev/full: "));
		fclose(full);
	}
	CHECK(sa_gguf_writer_save(w, "/nonexistent-dir/x.gguf") == SA_ECANTCREAT);
	FILE *p = popen("cat > /dev/null", "w");
	if (p) {
		CHECK_OK(sa_gguf_writer_write(w, p, "pipe"));
		CHECK(pclose(p) == 0);
	}
	sa_gguf_writer_free(w);

	/* copy_kv of every kind from a file, including nested and string arrays */
	buf b = every_type_file(3);
	sa_gguf *g = NULL, *g2 = NULL;
	CHECK_OK(open_bytes(&g, b.p, b.n));
	if (g) {
		w = sa_gguf_writer_new();
		CHECK_OK(sa_gguf_writer_copy_kv(w, g, "a.nested_str"));
		CHECK_OK(sa_gguf_writer_copy_kv(w, g, "a.str"));
		CHECK_OK(sa_gguf_writer_copy_kv(w, g, "v.i64"));
		CHECK(sa_gguf_writer_copy_kv(w, g, "nope") == SA_EDATA);
		CHECK_OK(sa_gguf_writer_save(w, tmp_path("kv.gguf")));
		sa_gguf_writer_free(w);
		CHECK_OK(sa_gguf_open(&g2, tmp_path("kv.gguf")));
		if (g2) {
			uint64_t n;
			int64_t i64;
			sa_str *ss;
			int et;
			const void *d1, *d2;
			uint64_t n1;
			CHECK(sa_gguf_n_kv(g2) == 3 && sa_gguf_n_tensors(g2) == 0);
			CHECK_OK(sa_gguf_get_strs(g2, "a.str", &n, &ss));
			CHECK(n == 3 && ss[2].n == 5);
			free(ss);
			CHECK_OK(sa_gguf_get_i64(g2, "v.i64", &i64));
			CHECK(i64 == INT64_MIN);
			CHECK_OK(sa_gguf_get_arr(g2, "a.nested_str", &et, &n, &d2));
			CHECK_OK(sa_gguf_get_arr(g, "a.nested_str", &et, &n1, &d1));
			CHECK(et == SA_GGUF_ARR && n == 2 && n1 == 2 && !memcmp(d1, d2, 12 + 9 + 12 + 18));
		}
		sa_gguf_close(g2);
	}
	sa_gguf_close(g);
	free(b.p);
}

static void
test_open_errors(void)
{
	sa_gguf *g = NULL;

	CHECK(sa_gguf_open(&g, tmp_path("missing.gguf")) == SA_ENOINPUT && !g);
	CHECK(has(sa_error(), "missing.gguf: No such file"));
	CHECK(sa_gguf_open(&g, tmpdir) == SA_ENOINPUT && !g);
	CHECK(open_bytes(&g, "", 0) == SA_EDATA && !g);
}

/* ------------------------------------------------------------ conversions */

static uint32_t
bits(float f)
{
	uint32_t u;
	memcpy(&u, &f, 4);
	return u;
}

static float
from_bits(uint32_t u)
{
	float f;
	memcpy(&f, &u, 4);
	return f;
}

static void
test_fp16(void)
{
	/* every half converts to a float and back to itself (NaNs stay NaN) */
	int bad = 0;
	for (uint32_t h = 0; h < 65536; h++) {
		float f = sa_fp16_to_fp32((uint16_t)h);
		int nan = (h & 0x7c00) == 0x7c00 && (h & 0x3ff);
		if (nan ? f == f || (sa_fp32_to_fp16(f) & 0x7e00) != 0x7e00 : sa_fp32_to_fp16(f) != h)
			bad++;
	}
	CHECK(bad == 0);

	CHECK(sa_fp32_to_fp16(0.0f) == 0x0000);
	CHECK(sa_fp32_to_fp16(-0.0f) == 0x8000);
	CHECK(sa_fp32_to_fp16(1.0f) == 0x3c00);
	CHECK(sa_fp32_to_fp16(-2.0f) == 0xc000);
	CHECK(sa_fp32_to_fp16(65504.0f) == 0x7bff);
	CHECK(sa_fp32_to_fp16(65519.996f) == 0x7bff);       /* below the midpoint */
	CHECK(sa_fp32_to_fp16(65520.0f) == 0x7c00);         /* tie: to even = inf */
	CHECK(sa_fp32_to_fp16(1e10f) == 0x7c00);
	CHECK(sa_fp32_to_fp16(-1e10f) == 0xfc00);
	CHECK(sa_fp32_to_fp16(from_bits(0x7f800000)) == 0x7c00);
	CHECK((sa_fp32_to_fp16(from_bits(0x7fc00000)) & 0x7fff) > 0x7c00);
	CHECK((sa_fp32_to_fp16(from_bits(0x7f800001)) & 0x7fff) > 0x7c00);  /* sNaN stays NaN */
	CHECK(sa_fp32_to_fp16(0x1p-24f) == 0x0001);          /* smallest subnormal */
	CHECK(sa_fp32_to_fp16(0x1p-25f) == 0x0000);          /* tie: to even = 0 */
	CHECK(sa_fp32_to_fp16(0x1.000002p-25f) == 0x0001);
	CHECK(sa_fp32_to_fp16(0x3p-25f) == 0x0002);          /* 1.5 ulp: tie to even 2 */
	CHECK(sa_fp32_to_fp16(0x1p-26f) == 0x0000);
	CHECK(sa_fp32_to_fp16(0x1.ff8p-15f) == 0x03ff);      /* largest subnormal */
	CHECK(sa_fp32_to_fp16(0x1.ffcp-15f) == 0x0400);      /* tie: up into the normals */
	CHECK(sa_fp32_to_fp16(0x1.ff0p-15f) == 0x03fe);
	CHECK(sa_fp32_to_fp16(0x1p-14f) == 0x0400);
	CHECK(sa_fp32_to_fp16(1.0f + 0x1p-11f) == 0x3c00);  /* tie: to even */
	CHECK(sa_fp32_to_fp16(1.0f + 0x3p-11f) == 0x3c02);  /* tie: to even, up */
	CHECK(sa_fp32_to_fp16(from_bits(0x3f801001)) == 0x3c01);  /* just above the tie */
	CHECK(sa_fp32_to_fp16(from_bits(0x3f800fff)) == 0x3c00);  /* just below */
	CHECK(sa_fp32_to_fp16(from_bits(0x00000001)) == 0x0000);
	CHECK(sa_fp32_to_fp16(from_bits(0x80000001)) == 0x8000);
	CHECK(sa_fp16_to_fp32(0x0001) == 0x1p-24f);
	CHECK(sa_fp16_to_fp32(0x03ff) == 0x3ffp-24f);
	CHECK(sa_fp16_to_fp32(0x7c00) == INFINITY);
	CHECK(sa_fp16_to_fp32(0xfc00) == -INFINITY);
	CHECK(bits(sa_fp16_to_fp32(0x8000)) == 0x80000000);

	/* rows agree with the scalar conversion, whatever kernel runs them */
	enum { N = 4099 };
	static float x[N], y[N];
	static uint16_t h[N];
	uint64_t s = 12345;
	for (int i = 0; i < N; i++) {
		s = s * 6364136223846793005ULL + 1442695040888963407ULL;
		uint32_t u = (uint32_t)(s >> 32);
		/* half of them random bits, half in the fp16 range */
		x[i] = i % 2 ? from_bits(u) : (float)((int32_t)u) * 0x1p-20f;
	}
	x[0] = 65520.0f;
	x[1] = 0x1p-25f;
	x[2] = from_bits(0x7fc00001);
	sa_row_from_f32(SA_TYPE_F16, x, h, N);
	bad = 0;
	for (int i = 0; i < N; i++)
		if (h[i] != sa_fp32_to_fp16(x[i]))
			bad++;
	CHECK(bad == 0);
	sa_row_to_f32(SA_TYPE_F16, h, y, N);
	bad = 0;
	for (int i = 0; i < N; i++) {
		float want = sa_fp16_to_fp32(h[i]);
		if (bits(y[i]) != bits(want) && !(want != want && y[i] != y[i]))
			bad++;
	}
	CHECK(bad == 0);
}

static void
test_bf16(void)
{
	CHECK(sa_fp32_to_bf16(1.0f) == 0x3f80);
	CHECK(sa_fp32_to_bf16(-0.0f) == 0x8000);
	CHECK(sa_fp32_to_bf16(1.0f + 0x1p-8f) == 0x3f80);    /* tie: to even */
	CHECK(sa_fp32_to_bf16(1.0f + 0x3p-8f) == 0x3f82);    /* tie: to even, up */
	CHECK(sa_fp32_to_bf16(from_bits(0x3f808001)) == 0x3f81);
	CHECK(sa_fp32_to_bf16(from_bits(0x3f807fff)) == 0x3f80);
	CHECK(sa_fp32_to_bf16(from_bits(0x7f7fffff)) == 0x7f80);  /* max float rounds to inf */
	CHECK(sa_fp32_to_bf16(from_bits(0x7f800000)) == 0x7f80);
	CHECK(sa_fp32_to_bf16(from_bits(0xff800000)) == 0xff80);
	CHECK((sa_fp32_to_bf16(from_bits(0x7f800001)) & 0x7fff) > 0x7f80);  /* NaN stays NaN */
	CHECK((sa_fp32_to_bf16(from_bits(0xffc00000)) & 0x7fff) > 0x7f80);
	CHECK(sa_fp32_to_bf16(from_bits(0x00000001)) == 0x0000);  /* subnormals round too */
	CHECK(sa_fp32_to_bf16(from_bits(0x00008000)) == 0x0000);
	CHECK(sa_fp32_to_bf16(from_bits(0x00018000)) == 0x0002);
	CHECK(sa_fp32_to_bf16(from_bits(0x00010000)) == 0x0001);
	CHECK(sa_bf16_to_fp32(0x0001) == from_bits(0x00010000));
	int bad = 0;
	for (uint32_t h = 0; h < 65536; h++) {
		float f = sa_bf16_to_fp32((uint16_t)h);
		if (f == f && sa_fp32_to_bf16(f) != h)
			bad++;
	}
	CHECK(bad == 0);

	float x[5] = { 1, -2.5f, 3.0e38f, 1e-40f, 0x1.0101p0f }, y[5];
	uint16_t b[5];
	sa_row_from_f32(SA_TYPE_BF16, x, b, 5);
	sa_row_to_f32(SA_TYPE_BF16, b, y, 5);
	for (int i = 0; i < 5; i++)
		CHECK(b[i] == sa_fp32_to_bf16(x[i]) && y[i] == sa_bf16_to_fp32(b[i]));
	CHECK(y[4] == 0x1.02p0f);
}

static void
test_q8_0(void)
{
	enum { N = 32 * 64 };
	static float x[N], y[N];
	static uint8_t q[N / 32 * 34];
	uint64_t s = 99;
	double worst = 0;

	CHECK(sa_type_row_size(SA_TYPE_Q8_0, N) == sizeof q);
	CHECK(sa_type_row_size(SA_TYPE_Q8_0, 33) == 0);
	for (int i = 0; i < N; i++) {
		s = s * 6364136223846793005ULL + 1442695040888963407ULL;
		/* blocks of very different scales */
		x[i] = (float)((int32_t)(s >> 32)) * 0x1p-31f * (float)(1 << (i / 32 % 12)) / 64;
	}
	for (int i = 0; i < 32; i++)
		x[i] = 0;           /* an all-zero block: scale 0, no NaN */
	sa_row_from_f32(SA_TYPE_Q8_0, x, q, N);
	sa_row_to_f32(SA_TYPE_Q8_0, q, y, N);
	int bad = 0;
	for (int b = 0; b < N / 32; b++) {
		float amax = 0;
		for (int j = 0; j < 32; j++)
			amax = fmaxf(amax, fabsf(x[b * 32 + j]));
		double d = amax / 127.0;
		/* rounding to the grid, plus the fp16 rounding of the scale */
		double bound = d / 2 + 127 * d * 0x1p-11 + 1e-30;
		for (int j = 0; j < 32; j++) {
			double e = fabs((double)x[b * 32 + j] - y[b * 32 + j]);
			if (!(e <= bound))
				bad++;
			if (d > 0 && e / d > worst)
				worst = e / d;
		}
		/* the largest magnitude maps to +-127 */
		int8_t qs[32];
		memcpy(qs, q + b * 34 + 2, 32);
		int m = 0;
		for (int j = 0; j < 32; j++)
			m = abs(qs[j]) > m ? abs(qs[j]) : m;
		if (amax > 0 && m != 127)
			bad++;
	}
	CHECK(bad == 0);
	CHECK(worst > 0.3 && worst < 0.6);  /* the bound is tight, not vacuous */
	for (int j = 0; j < 32; j++)
		CHECK(y[j] == 0);

	/* a block by hand: x = j - 16, d = 16/127, q = round(x * 127/16) */
	float h[32];
	uint8_t blk[34];
	for (int j = 0; j < 32; j++)
		h[j] = (float)j - 16;
	sa_row_from_f32(SA_TYPE_Q8_0, h, blk, 32);
	uint16_t d16;
	memcpy(&d16, blk, 2);
	CHECK(d16 == sa_fp32_to_fp16(16.0f / 127));
	CHECK((int8_t)blk[2] == -127 && (int8_t)blk[2 + 16] == 0 && (int8_t)blk[2 + 17] == 8);
	CHECK((int8_t)blk[2 + 31] == 119);  /* 15 * 127/16 = 119.06 */
}

/* One block of each of llama-quantize's types, written byte by byte after
 * ggml's layouts (ggml-common.h), and weights worked out by hand from it. */
static void
test_blocks(void)
{
	static const struct {
		int type;
		int n;                /* block size */
		struct { int at, byte; } set[8];
		struct { int e; float v; } want[4];
	} c[] = {
		/* d = 0.5; weight j = (nibble - 8) d: low nibbles first, then high */
		{ SA_TYPE_Q4_0, 32, { { 1, 0x38 }, { 2, 0x2f }, { 17, 0x80 } },
		    { { 0, 3.5f }, { 16, -3 }, { 15, -4 }, { 31, 0 } } },
		/* d = 0.5, m = -1: nibble d + m */
		{ SA_TYPE_Q4_1, 32, { { 1, 0x38 }, { 3, 0xbc }, { 5, 0xf3 } },
		    { { 1, 0.5f }, { 17, 6.5f }, { 0, -1 }, { 31, -1 } } },
		/* d = 0.25; fifth bit j in qh (bits 0 and 17 set): (q - 16) d */
		{ SA_TYPE_Q5_0, 32, { { 1, 0x34 }, { 2, 0x01 }, { 4, 0x02 }, { 6, 0x0f }, { 7, 0x10 } },
		    { { 0, 3.75f }, { 1, -4 }, { 17, 0.25f }, { 16, -4 } } },
		/* d = 1, m = 0.5; bit 31 of qh: weight 31 = (7 + 16) + 0.5 */
		{ SA_TYPE_Q5_1, 32, { { 1, 0x3c }, { 3, 0x38 }, { 7, 0x80 }, { 23, 0x70 } },
		    { { 31, 23.5f }, { 15, 0.5f }, { 0, 0.5f } } },
		/* Q2_K: scales[16], qs[64], d = 0.5 at 80, dmin = 0.25 at 82;
		 * sub-block 0: 3 d, 2 dmin; qs[0] = 11 10 01 00 (weights 96, 64,
		 * 32, 0); sub-block 2 (weight 32): 0 d, 1 dmin; 6 (weight 96):
		 * 1 d; 8 (weight 128, qs[32] = 2): 15 d */
		{ SA_TYPE_Q2_K, 256, { { 81, 0x38 }, { 83, 0x34 }, { 0, 0x23 }, { 2, 0x10 },
		    { 6, 0x01 }, { 8, 0x0f }, { 16, 0xe4 }, { 48, 0x02 } },
		    { { 0, -0.5f }, { 32, -0.25f }, { 96, 1.5f }, { 128, 15 } } },
		/* Q3_K: hmask[32], qs[64], scales[12] at 96, d = 1 at 108; scale 0
		 * = (1 | 2 << 4) - 32 = 1, scale 9 = (15 | 0) - 32 = -17, the
		 * others -32; weight 0: 3 with its hmask bit; weight 1: 0 - 4;
		 * weight 144: qs[48] = 2, bit 4 of hmask[16] */
		{ SA_TYPE_Q3_K, 256, { { 109, 0x3c }, { 96, 0x01 }, { 104, 0x02 }, { 97, 0xf0 },
		    { 0, 0x01 }, { 32, 0x03 }, { 16, 0x10 }, { 80, 0x02 } },
		    { { 0, 3 }, { 1, -4 * 1 }, { 144, -34 }, { 255, 128 } } },
		/* Q4_K: d = 0.5, dmin = 1, scales[12] at 4, qs at 16; sub-block
		 * 0: 2 d, 3 dmin; 1: 1 d; 5: (3 | 1 << 4) d, 2 dmin; qs[0] =
		 * 0x9a (weights 0 and 32), qs[64] = 0x40 (weight 160, high) */
		{ SA_TYPE_Q4_K, 256, { { 1, 0x38 }, { 3, 0x3c }, { 4, 0x02 }, { 5, 0x41 },
		    { 8, 0x03 }, { 13, 0x23 }, { 16, 0x9a }, { 80, 0x40 } },
		    { { 0, 7 }, { 32, 4.5f }, { 160, 36 }, { 161, -2 } } },
		/* Q5_K: as Q4_K, qh[32] at 16, qs at 48; bit 0 of qh[0] adds
		 * 16 to weight 0, bit 5 of qh[1] to weight 161 (sub-block 5: 3 d) */
		{ SA_TYPE_Q5_K, 256, { { 1, 0x38 }, { 3, 0x3c }, { 4, 0x02 }, { 8, 0x03 },
		    { 13, 0x23 }, { 16, 0x01 }, { 17, 0x20 }, { 48, 0x0a } },
		    { { 0, 23 }, { 1, -3 }, { 161, 22 }, { 160, -2 } } },
		/* Q6_K: ql[128], qh[64] at 128, scales[16] at 192, d = 0.5 at
		 * 208; weight 0: (5 | 2 << 4) - 32 = 5, scale 2; weight 80:
		 * high nibble of ql[16] = 7, - 32, scale -3 */
		{ SA_TYPE_Q6_K, 256, { { 209, 0x38 }, { 192, 0x02 }, { 197, 0xfd }, { 0, 0x05 },
		    { 128, 0x02 }, { 16, 0x70 } },
		    { { 0, 5 }, { 80, 37.5f }, { 1, -32 } } },
	};
	uint8_t blk[256];
	float y[256];

	for (size_t t = 0; t < sizeof c / sizeof *c; t++) {
		memset(blk, 0, sizeof blk);
		for (int i = 0; i < 8 && c[t].set[i].byte; i++)
			blk[c[t].set[i].at] = (uint8_t)c[t].set[i].byte;
		CHECK(sa_type_supported(c[t].type));
		sa_row_to_f32(c[t].type, blk, y, c[t].n);
		for (int i = 0; i < 4 && (c[t].want[i].e || c[t].want[i].v); i++) {
			int e = c[t].want[i].e, ok = y[e] == c[t].want[i].v;
			CHECK(ok);
			if (!ok)
				printf("# %s weight %d: %g, want %g\n", sa_type_name(c[t].type),
				    e, y[e], c[t].want[i].v);
		}
	}
}

static void
test_type_names(void)
{
	CHECK(strcmp(sa_type_name(0), "F32") == 0);
	CHECK(strcmp(sa_type_name(1), "F16") == 0);
	CHECK(strcmp(sa_type_name(8), "Q8_0") == 0);
	CHECK(strcmp(sa_type_name(14), "Q6_K") == 0);
	CHECK(strcmp(sa_type_name(16), "IQ2_XXS") == 0);
	CHECK(strcmp(sa_type_name(27), "I64") == 0);
	CHECK(strcmp(sa_type_name(28), "F64") == 0);
	CHECK(strcmp(sa_type_name(30), "BF16") == 0);
	CHECK(strcmp(sa_type_name(77), "type 77") == 0);
	CHECK(strcmp(sa_type_name(4), "type 4") == 0);   /* removed from ggml */
	CHECK(strcmp(sa_type_name(-1), "type -1") == 0);
	CHECK(sa_type_supported(SA_TYPE_F32) && sa_type_supported(SA_TYPE_F16) &&
	    sa_type_supported(SA_TYPE_BF16) && sa_type_supported(SA_TYPE_Q8_0));
	CHECK(!sa_type_supported(15) && !sa_type_supported(16) && !sa_type_supported(23) &&
	    !sa_type_supported(99));
	CHECK(sa_type_row_size(SA_TYPE_F32, 10) == 40);
	CHECK(sa_type_row_size(SA_TYPE_F16, 10) == 20);
	CHECK(sa_type_row_size(SA_TYPE_BF16, 10) == 20);
	CHECK(sa_type_row_size(SA_TYPE_Q8_0, 64) == 68);
	CHECK(sa_type_row_size(SA_TYPE_Q4_K, 256) == 144);
	CHECK(sa_type_row_size(SA_TYPE_Q4_K, 128) == 0);
	CHECK(sa_type_row_size(23, 256) == 0);   /* IQ4_XS: not supported */
}

/* test_gguf --dump FILE: what the reader sees, one line per entry, for the
 * bats suite to check files made by other programs. */
static int
dump(const char *path)
{
	static const char *tn[] = { "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool",
		"str", "arr", "u64", "i64", "f64" };
	sa_gguf *g;

	if (sa_gguf_open(&g, path) != SA_OK) {
		fprintf(stderr, "test_gguf: %s\n", sa_error());
		return 1;
	}
	printf("version %u\n", sa_gguf_version(g));
	for (uint64_t i = 0; i < sa_gguf_n_kv(g); i++) {
		sa_str k = sa_gguf_kv_key(g, i);
		char key[256];
		int type = sa_gguf_kv_type(g, i), et, b;
		uint64_t n;
		int64_t v;
		float f;
		sa_str str;
		const void *data;

		snprintf(key, sizeof key, "%.*s", (int)k.n, k.s);
		printf("kv %s %s", key, type >= 0 && type <= 12 ? tn[type] : "?");
		if (type == SA_GGUF_ARR && sa_gguf_get_arr(g, key, &et, &n, &data) == SA_OK)
			printf(" %s %llu", et >= 0 && et <= 12 ? tn[et] : "?", (unsigned long long)n);
		else if (type == SA_GGUF_STR && sa_gguf_get_str(g, key, &str) == SA_OK)
			printf(" %.*s", (int)str.n, str.s);
		else if (sa_gguf_get_i64(g, key, &v) == SA_OK)
			printf(" %lld", (long long)v);
		else if (sa_gguf_get_f32(g, key, &f) == SA_OK)
			printf(" %g", f);
		else if (sa_gguf_get_bool(g, key, &b) == SA_OK)
			printf(" %s", b ? "true" : "false");
		putchar('\n');
	}
	for (uint64_t i = 0; i < sa_gguf_n_tensors(g); i++) {
		const sa_tensor_info *t = sa_gguf_tensor_at(g, i);
		printf("tensor %s %s", t->name, sa_type_name(t->type));
		for (int d = 0; d < t->n_dims; d++)
			printf(" %lld", (long long)t->ne[d]);
		printf(" %016llx\n", (unsigned long long)sa_hash64(SA_HASH64_INIT, t->data, t->nbytes));
	}
	sa_gguf_close(g);
	return sa_stdout_close() == SA_OK ? 0 : 1;
}

int
main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "--dump") == 0)
		return dump(argv[2]);
	if (argc != 1) {
		fprintf(stderr, "usage: test_gguf [--dump FILE]\n");
		return 64;
	}
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 2;
	}
	test_type_names();
	test_fp16();
	test_bf16();
	test_q8_0();
	test_blocks();
	test_every_type();
	test_v2();
	test_truncations();
	test_bad_files();
	test_writer();
	test_open_errors();

	char cmd[300];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", tmpdir);
	return t_done();
}
