/*
 * delta.c - context states (sa-delta(5)): the binary file, the exact
 * algebra on states (chain, weighted sums) and their description.  A state
 * goes into a model's weights in apply.c.
 *
 * File layout, little-endian throughout:
 *   header   "SADELTA\0", u32 version, u32 kind (0 pool, 1 lsq), u64 model and
 *            adapter fingerprints, u32 n_layer n_head_kv d_head rank chunk
 *            mats, u64 n_tokens n_demos, u32-length strings adapter_path and
 *            params, u32 n_sources and per source (u32-length name, u64 hash),
 *            u64 payload size, u32 CRC-32 of every header byte before it
 *   payload  one zlib stream (deflate, level 6) of every h then every P
 *            (lsq: every G then every S) as F32, cut into frames (u32
 *            length, bytes); an empty frame ends it
 *   trailer  u32 CRC-32 of the uncompressed payload, "SADELEND"
 * Nothing needs a seek, so deltas travel through pipes.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "sa.h"
#include "kernels_impl.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "delta.c stores floats as they lie in memory: little-endian hosts only"
#endif

#define DELTA_END "SADELEND"       /* 8 bytes, no NUL */
#define DELTA_VERSION 1u       /* SA_MAPPING_POOL */
#define DELTA_VERSION_LSQ 2u   /* SA_MAPPING_LSQ: earlier readers refuse it */
#define MAX_D_KEY 4096

/* Sanity limits, checked before anything is allocated from a header. */
#define MAX_LAYER 4096
#define MAX_HEAD_KV 4096
#define MAX_D_HEAD 4096
#define MAX_RANK 65536
#define MAX_CHUNK (1 << 24)
#define MAX_PAYLOAD (1ull << 32)   /* bytes of h and P together */
#define MAX_STR (1u << 16)         /* adapter path, source name */
#define MAX_PARAMS (1u << 20)
#define MAX_SOURCES (1u << 20)

#define IOBUF (1 << 16)             /* frames the writer makes */
#define MAX_FRAME (1u << 20)       /* frames a reader accepts */

static int
popcount32(uint32_t x)
{
	return __builtin_popcount(x);
}

int
sa_delta_n_used(const sa_delta *d)
{
	return d->mapping == SA_MAPPING_LSQ ? d->n_layer : d->n_layer * popcount32(d->mats);
}

static int
d_key(const sa_delta *d)
{
	return d->rank / d->n_head_kv;
}

/* Floats of h (LSQ: G) and of P (LSQ: S) per stored block. */
static size_t
h_per_pair(const sa_delta *d)
{
	if (d->mapping == SA_MAPPING_LSQ)
		return (size_t)d->n_head_kv * d->d_head * d_key(d);
	return (size_t)d->n_head_kv * d->rank * d->d_head;
}

static size_t
p_per_pair(const sa_delta *d)
{
	if (d->mapping == SA_MAPPING_LSQ)
		return (size_t)d->n_head_kv * d_key(d) * d_key(d);
	return (size_t)d->n_head_kv * d->rank;
}

/* Index of pair (layer, mat) among the stored ones, or -1. */
static int
pair_index(const sa_delta *d, int layer, int mat)
{
	if (d->mapping != SA_MAPPING_POOL || layer < 0 || layer >= d->n_layer || mat < 0 ||
	    mat >= SA_NMAT || !sa_adapted(d->mats, mat))
		return -1;
	return layer * popcount32(d->mats) + popcount32(d->mats & ((1u << mat) - 1));
}

void
sa_delta_sizes(const sa_delta *d, size_t *nh, size_t *np)
{
	*nh = (size_t)sa_delta_n_used(d) * h_per_pair(d);
	*np = (size_t)sa_delta_n_used(d) * p_per_pair(d);
}

float *
sa_delta_G(const sa_delta *d, int layer)
{
	if (d->mapping != SA_MAPPING_LSQ || layer < 0 || layer >= d->n_layer)
		return NULL;
	return d->h + (size_t)layer * h_per_pair(d);
}

float *
sa_delta_S(const sa_delta *d, int layer)
{
	if (d->mapping != SA_MAPPING_LSQ || layer < 0 || layer >= d->n_layer)
		return NULL;
	return d->P + (size_t)layer * p_per_pair(d);
}

float *
sa_delta_h(const sa_delta *d, int layer, int mat)
{
	int i = pair_index(d, layer, mat);
	return i < 0 ? NULL : d->h + (size_t)i * h_per_pair(d);
}

float *
sa_delta_P(const sa_delta *d, int layer, int mat)
{
	int i = pair_index(d, layer, mat);
	return i < 0 ? NULL : d->P + (size_t)i * p_per_pair(d);
}

/* Every shape field within limits and the payload not too large. */
static int
check_shape(const sa_delta *d, const char *name)
{
	uint64_t n;

	if (d->n_layer < 1 || d->n_layer > MAX_LAYER)
		return sa_fail(SA_EDATA, "%s: n_layer %d out of range 1..%d", name, d->n_layer, MAX_LAYER);
	if (d->n_head_kv < 1 || d->n_head_kv > MAX_HEAD_KV)
		return sa_fail(SA_EDATA, "%s: n_head_kv %d out of range 1..%d", name, d->n_head_kv, MAX_HEAD_KV);
	if (d->d_head < 1 || d->d_head > MAX_D_HEAD)
		return sa_fail(SA_EDATA, "%s: d_head %d out of range 1..%d", name, d->d_head, MAX_D_HEAD);
	if (d->rank < 1 || d->rank > MAX_RANK)
		return sa_fail(SA_EDATA, "%s: rank %d out of range 1..%d", name, d->rank, MAX_RANK);
	if (d->mapping == SA_MAPPING_LSQ) {
		if (d->rank % d->n_head_kv || d_key(d) > MAX_D_KEY)
			return sa_fail(SA_EDATA, "%s: rank %d is not n_head_kv %d times a d_key of 1..%d",
			    name, d->rank, d->n_head_kv, MAX_D_KEY);
		if (d->chunk != 0)
			return sa_fail(SA_EDATA, "%s: chunk %d: the memory has no chunks (0)", name, d->chunk);
	} else if (d->chunk < 1 || d->chunk > MAX_CHUNK)
		return sa_fail(SA_EDATA, "%s: chunk %d out of range 1..%d", name, d->chunk, MAX_CHUNK);
	if (d->mats == 0 || d->mats >> SA_NMAT)
		return sa_fail(SA_EDATA, "%s: bad matrix set 0x%x", name, (unsigned)d->mats);
	/* Each factor is below 2^16 (d_key 2^12) and there are at most 2^12 * 7
	 * blocks, so the products cannot overflow 64 bits. */
	if (d->mapping == SA_MAPPING_LSQ)
		n = (uint64_t)d->n_layer * d->n_head_kv * d_key(d) * ((uint64_t)d->d_head + d_key(d)) * 4;
	else
		n = (uint64_t)sa_delta_n_used(d) * d->n_head_kv * d->rank * ((uint64_t)d->d_head + 1) * 4;
	if (n > MAX_PAYLOAD)
		return sa_fail(SA_EDATA, "%s: state of %llu bytes exceeds the limit of %llu",
		    name, (unsigned long long)n, (unsigned long long)MAX_PAYLOAD);
	return SA_OK;
}

static uint64_t
payload_bytes(const sa_delta *d)
{
	return (uint64_t)sa_delta_n_used(d) * (h_per_pair(d) + p_per_pair(d)) * sizeof(float);
}

/* Allocate h and P for the shape already in d. */
static int
alloc_state(sa_delta *d)
{
	size_t nu = (size_t)sa_delta_n_used(d);

	d->h = sa_malloc(nu * h_per_pair(d) * sizeof(float));
	d->P = sa_malloc(nu * p_per_pair(d) * sizeof(float));
	if (!d->h || !d->P)
		return SA_EINTERNAL;
	return SA_OK;
}

void
sa_delta_free(sa_delta *d)
{
	if (!d)
		return;
	free(d->adapter_path);
	free(d->params);
	for (int i = 0; i < d->n_sources; i++)
		free(d->sources[i].name);
	free(d->sources);
	free(d->h);
	free(d->P);
	free(d);
}

int
sa_delta_new(sa_delta **out, const sa_adapter *a)
{
	sa_delta *d;
	size_t nh, np;
	int rc;

	*out = NULL;
	if (!(d = sa_calloc(1, sizeof *d)))
		return SA_EINTERNAL;
	d->mapping = a->mapping;
	d->model_fingerprint = a->model_fingerprint;
	d->adapter_fingerprint = a->fingerprint;
	d->n_layer = a->n_layer;
	d->n_head_kv = a->n_head_kv;
	d->d_head = a->d_head;
	d->rank = a->rank;
	d->chunk = a->chunk;
	d->mats = a->mats;
	if ((rc = check_shape(d, a->path ? a->path : "adapter")) != SA_OK)
		goto fail;
	if (a->path && !(d->adapter_path = strdup(a->path))) {
		rc = sa_fail(SA_EINTERNAL, "out of memory");
		goto fail;
	}
	if ((rc = alloc_state(d)) != SA_OK)
		goto fail;
	nh = (size_t)sa_delta_n_used(d) * h_per_pair(d);
	np = (size_t)sa_delta_n_used(d) * p_per_pair(d);
	memset(d->h, 0, nh * sizeof(float));
	for (size_t i = 0; i < np; i++)
		d->P[i] = d->mapping == SA_MAPPING_LSQ ? 0.0f : 1.0f;
	*out = d;
	return SA_OK;
fail:
	sa_delta_free(d);
	return rc;
}

static char *
dup_or_null(const char *s, int *bad)
{
	char *t;

	if (!s)
		return NULL;
	if (!(t = strdup(s)))
		*bad = 1;
	return t;
}

int
sa_delta_clone(sa_delta **out, const sa_delta *d)
{
	sa_delta *c;
	int bad = 0;
	size_t nu = (size_t)sa_delta_n_used(d);

	*out = NULL;
	if (!(c = sa_calloc(1, sizeof *c)))
		return SA_EINTERNAL;
	*c = *d;
	c->adapter_path = c->params = NULL;
	c->sources = NULL;
	c->n_sources = 0;
	c->h = c->P = NULL;
	c->adapter_path = dup_or_null(d->adapter_path, &bad);
	c->params = dup_or_null(d->params, &bad);
	if (d->n_sources > 0) {
		if (!(c->sources = calloc((size_t)d->n_sources, sizeof *c->sources)))
			bad = 1;
		else
			for (; c->n_sources < d->n_sources; c->n_sources++) {
				sa_source *s = &c->sources[c->n_sources];
				s->hash = d->sources[c->n_sources].hash;
				if (!(s->name = strdup(d->sources[c->n_sources].name))) {
					bad = 1;
					break;
				}
			}
	}
	if (bad || alloc_state(c) != SA_OK) {
		sa_delta_free(c);
		return sa_fail(SA_EINTERNAL, "out of memory");
	}
	memcpy(c->h, d->h, nu * h_per_pair(d) * sizeof(float));
	memcpy(c->P, d->P, nu * p_per_pair(d) * sizeof(float));
	*out = c;
	return SA_OK;
}

/* First non-finite value of the state, as a message; SA_OK if none. */
static int
check_finite(const sa_delta *d, const char *name)
{
	size_t hp = h_per_pair(d), pp = p_per_pair(d);
	int lsq = d->mapping == SA_MAPPING_LSQ, k = 0;

	for (int l = 0; l < d->n_layer; l++)
		for (int m = 0; m < SA_NMAT; m++) {
			if (lsq ? m > 0 : !sa_adapted(d->mats, m))
				continue;
			for (size_t i = 0; i < hp; i++)
				if (!isfinite(d->h[(size_t)k * hp + i]))
					return sa_fail(SA_EDATA, "%s: non-finite value in %s of layer %d%s%s",
					    name, lsq ? "G" : "h", l, lsq ? "" : " ", lsq ? "" : sa_mat_name(m));
			for (size_t i = 0; i < pp; i++)
				if (!isfinite(d->P[(size_t)k * pp + i]))
					return sa_fail(SA_EDATA, "%s: non-finite value in %s of layer %d%s%s",
					    name, lsq ? "S" : "P", l, lsq ? "" : " ", lsq ? "" : sa_mat_name(m));
			k++;
		}
	return SA_OK;
}

/* ------------------------------------------------------------- writing */

typedef struct buf {
	unsigned char *p;
	size_t n, cap;
	int oom;
} buf;

static void
buf_put(buf *b, const void *p, size_t n)
{
	/* n = 0 comes with p = NULL (an absent string): memcpy must not see it */
	if (b->oom || n == 0)
		return;
	if (b->n + n > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		unsigned char *q;
		while (cap < b->n + n)
			cap *= 2;
		if (!(q = realloc(b->p, cap))) {
			b->oom = 1;
			return;
		}
		b->p = q;
		b->cap = cap;
	}
	memcpy(b->p + b->n, p, n);
	b->n += n;
}

static void
buf_u32(buf *b, uint32_t v)
{
	unsigned char x[4] = { v, v >> 8, v >> 16, v >> 24 };
	buf_put(b, x, 4);
}

static void
buf_u64(buf *b, uint64_t v)
{
	buf_u32(b, (uint32_t)v);
	buf_u32(b, (uint32_t)(v >> 32));
}

static void
buf_str(buf *b, const char *s)
{
	size_t n = s ? strlen(s) : 0;
	buf_u32(b, (uint32_t)n);
	buf_put(b, s, n);
}

static int
check_strings(const sa_delta *d, const char *name)
{
	if (d->adapter_path && strlen(d->adapter_path) > MAX_STR)
		return sa_fail(SA_EDATA, "%s: adapter path longer than %u bytes", name, MAX_STR);
	if (d->params && strlen(d->params) > MAX_PARAMS)
		return sa_fail(SA_EDATA, "%s: parameters longer than %u bytes", name, MAX_PARAMS);
	if (d->n_sources < 0 || (unsigned)d->n_sources > MAX_SOURCES)
		return sa_fail(SA_EDATA, "%s: %d sources, more than %u", name, d->n_sources, MAX_SOURCES);
	for (int i = 0; i < d->n_sources; i++)
		if (strlen(d->sources[i].name) > MAX_STR)
			return sa_fail(SA_EDATA, "%s: source name longer than %u bytes", name, MAX_STR);
	return SA_OK;
}

static int
write_all(FILE *fp, const void *p, size_t n, const char *name)
{
	if (n && fwrite(p, 1, n, fp) != n)
		return sa_fail(SA_EIO, "%s: %s", name, strerror(errno ? errno : EIO));
	return SA_OK;
}

/* One frame of the payload: u32 length, then the bytes. */
static int
put_frame(FILE *fp, const unsigned char *p, size_t n, const char *name)
{
	unsigned char len[4] = { n, n >> 8, n >> 16, n >> 24 };
	int rc;

	if ((rc = write_all(fp, len, 4, name)) != SA_OK)
		return rc;
	return write_all(fp, p, n, name);
}

/* Deflate n bytes at p into frames; finish the stream when last. */
static int
deflate_part(z_stream *z, FILE *fp, const void *p, size_t n, int last, const char *name)
{
	unsigned char out[IOBUF];
	const unsigned char *in = p;
	int rc, zr;

	do {
		uInt step = n > (1u << 30) ? (1u << 30) : (uInt)n;
		int flush = last && step == n ? Z_FINISH : Z_NO_FLUSH;
		z->next_in = (Bytef *)in;
		z->avail_in = step;
		do {
			z->next_out = out;
			z->avail_out = sizeof out;
			zr = deflate(z, flush);
			if (zr == Z_STREAM_ERROR)
				return sa_fail(SA_EINTERNAL, "%s: deflate failed", name);
			if (sizeof out - z->avail_out > 0 &&
			    (rc = put_frame(fp, out, sizeof out - z->avail_out, name)) != SA_OK)
				return rc;
		} while (z->avail_out == 0);
		in += step;
		n -= step;
	} while (n > 0);
	return SA_OK;
}

int
sa_delta_write(const sa_delta *d, FILE *fp, const char *name)
{
	buf b = { 0 };
	z_stream z;
	uint32_t crc;
	size_t nh, np;
	int rc;

	if ((rc = check_shape(d, name)) != SA_OK || (rc = check_strings(d, name)) != SA_OK ||
	    (rc = check_finite(d, name)) != SA_OK)
		return rc;

	buf_put(&b, SA_DELTA_MAGIC, 8);
	buf_u32(&b, d->mapping == SA_MAPPING_LSQ ? DELTA_VERSION_LSQ : DELTA_VERSION);
	buf_u32(&b, (uint32_t)d->mapping);
	buf_u64(&b, d->model_fingerprint);
	buf_u64(&b, d->adapter_fingerprint);
	buf_u32(&b, (uint32_t)d->n_layer);
	buf_u32(&b, (uint32_t)d->n_head_kv);
	buf_u32(&b, (uint32_t)d->d_head);
	buf_u32(&b, (uint32_t)d->rank);
	buf_u32(&b, (uint32_t)d->chunk);
	buf_u32(&b, d->mats);
	buf_u64(&b, d->n_tokens);
	buf_u64(&b, d->n_demos);
	buf_str(&b, d->adapter_path);
	buf_str(&b, d->params);
	buf_u32(&b, (uint32_t)d->n_sources);
	for (int i = 0; i < d->n_sources; i++) {
		buf_str(&b, d->sources[i].name);
		buf_u64(&b, d->sources[i].hash);
	}
	buf_u64(&b, payload_bytes(d));
	if (b.oom) {
		free(b.p);
		return sa_fail(SA_EINTERNAL, "out of memory");
	}
	buf_u32(&b, sa_crc32(0, b.p, b.n));
	if (b.oom) {
		free(b.p);
		return sa_fail(SA_EINTERNAL, "out of memory");
	}
	errno = 0;
	rc = write_all(fp, b.p, b.n, name);
	free(b.p);
	if (rc != SA_OK)
		return rc;

	nh = (size_t)sa_delta_n_used(d) * h_per_pair(d) * sizeof(float);
	np = (size_t)sa_delta_n_used(d) * p_per_pair(d) * sizeof(float);
	crc = sa_crc32(sa_crc32(0, d->h, nh), d->P, np);
	memset(&z, 0, sizeof z);
	/* Fixed level, window and memory level: the same state always gives
	 * the same bytes (with the same zlib). */
	if (deflateInit2(&z, 6, Z_DEFLATED, 15, 8, Z_DEFAULT_STRATEGY) != Z_OK)
		return sa_fail(SA_EINTERNAL, "%s: deflateInit failed", name);
	rc = deflate_part(&z, fp, d->h, nh, 0, name);
	if (rc == SA_OK)
		rc = deflate_part(&z, fp, d->P, np, 1, name);
	deflateEnd(&z);
	if (rc != SA_OK)
		return rc;

	{
		/* An empty frame ends the payload. */
		unsigned char t[16] = { 0, 0, 0, 0, crc, crc >> 8, crc >> 16, crc >> 24 };
		memcpy(t + 8, DELTA_END, 8);
		if ((rc = write_all(fp, t, sizeof t, name)) != SA_OK)
			return rc;
	}
	if (fflush(fp) != 0 || ferror(fp))
		return sa_fail(SA_EIO, "%s: %s", name, strerror(errno ? errno : EIO));
	return SA_OK;
}

int
sa_delta_save(const sa_delta *d, const char *path)
{
	sa_outfile o;
	int rc;

	if ((rc = sa_outfile_open(&o, path)) != SA_OK)
		return rc;
	if ((rc = sa_delta_write(d, o.fp, strcmp(path, "-") ? path : "stdout")) != SA_OK) {
		sa_outfile_abort(&o);
		return rc;
	}
	return sa_outfile_commit(&o);
}

/* ------------------------------------------------------------- reading */

/* Reads go straight to stdio in exact sizes, so a delta is consumed up to
 * its last byte and not one further.  Header bytes feed a running CRC. */
typedef struct reader {
	FILE *fp;
	const char *name;
	uint32_t crc;
} reader;

/* Exactly n bytes, or "truncated". */
static int
get(reader *r, void *dst, size_t n)
{
	size_t got = n ? fread(dst, 1, n, r->fp) : 0;

	if (got != n) {
		if (ferror(r->fp))
			return sa_fail(SA_EIO, "%s: %s", r->name, strerror(errno ? errno : EIO));
		return sa_fail(SA_EDATA, "%s: truncated", r->name);
	}
	r->crc = sa_crc32(r->crc, dst, n);
	return SA_OK;
}

static int
get_u32(reader *r, uint32_t *v)
{
	unsigned char x[4];
	int rc = get(r, x, 4);

	*v = (uint32_t)x[0] | (uint32_t)x[1] << 8 | (uint32_t)x[2] << 16 | (uint32_t)x[3] << 24;
	return rc;
}

static int
get_u64(reader *r, uint64_t *v)
{
	uint32_t lo = 0, hi = 0;
	int rc;

	if ((rc = get_u32(r, &lo)) != SA_OK || (rc = get_u32(r, &hi)) != SA_OK)
		return rc;
	*v = (uint64_t)hi << 32 | lo;
	return SA_OK;
}

static int
get_int(reader *r, int *v, const char *what, uint32_t max)
{
	uint32_t x;
	int rc;

	if ((rc = get_u32(r, &x)) != SA_OK)
		return rc;
	if (x < 1 || x > max)
		return sa_fail(SA_EDATA, "%s: %s %u out of range 1..%u", r->name, what, x, max);
	*v = (int)x;
	return SA_OK;
}

/* A u32-length string; NULL when empty and allow_null. */
static int
get_str(reader *r, char **out, uint32_t max, const char *what, int allow_null)
{
	uint32_t n;
	char *s;
	int rc;

	*out = NULL;
	if ((rc = get_u32(r, &n)) != SA_OK)
		return rc;
	if (n > max)
		return sa_fail(SA_EDATA, "%s: %s of %u bytes exceeds the limit of %u", r->name, what, n, max);
	if (n == 0 && allow_null)
		return SA_OK;
	if (!(s = sa_malloc(n + 1)))
		return SA_EINTERNAL;
	if ((rc = get(r, s, n)) != SA_OK) {
		free(s);
		return rc;
	}
	s[n] = '\0';
	if (strlen(s) != n) {
		free(s);
		return sa_fail(SA_EDATA, "%s: NUL byte inside the %s", r->name, what);
	}
	*out = s;
	return SA_OK;
}

static int
read_header(reader *r, sa_delta *d, uint64_t *payload)
{
	unsigned char magic[8];
	uint32_t version, kind, n_src, crc, want;
	size_t got;
	int rc;

	/* The magic by hand, so that a short file of other bytes is "not a
	 * delta file" rather than "truncated". */
	got = fread(magic, 1, sizeof magic, r->fp);
	if (got < sizeof magic && ferror(r->fp))
		return sa_fail(SA_EIO, "%s: %s", r->name, strerror(errno ? errno : EIO));
	r->crc = sa_crc32(0, magic, got);
	if (memcmp(magic, SA_DELTA_MAGIC, got) != 0)
		return sa_fail(SA_EDATA, "%s: not a delta file", r->name);
	if (got == 0)
		return sa_fail(SA_EDATA, "%s: empty, not a delta file", r->name);
	if (got < sizeof magic)
		return sa_fail(SA_EDATA, "%s: truncated", r->name);

	if ((rc = get_u32(r, &version)) != SA_OK)
		return rc;
	if (version != DELTA_VERSION && version != DELTA_VERSION_LSQ)
		return sa_fail(SA_EDATA, "%s: unsupported version %u", r->name, version);
	if ((rc = get_u32(r, &kind)) != SA_OK)
		return rc;
	/* version 1 is the pool kind (its field was reserved, 0), 2 the memory */
	if (kind != (version == DELTA_VERSION_LSQ ? SA_MAPPING_LSQ : SA_MAPPING_POOL))
		return sa_fail(SA_EDATA, "%s: kind %u in a version %u delta (corrupted)", r->name, kind,
		    version);
	d->mapping = (int)kind;
	if ((rc = get_u64(r, &d->model_fingerprint)) != SA_OK ||
	    (rc = get_u64(r, &d->adapter_fingerprint)) != SA_OK ||
	    (rc = get_int(r, &d->n_layer, "n_layer", MAX_LAYER)) != SA_OK ||
	    (rc = get_int(r, &d->n_head_kv, "n_head_kv", MAX_HEAD_KV)) != SA_OK ||
	    (rc = get_int(r, &d->d_head, "d_head", MAX_D_HEAD)) != SA_OK ||
	    (rc = get_int(r, &d->rank, "rank", MAX_RANK)) != SA_OK ||
	    (rc = (d->mapping == SA_MAPPING_LSQ ? get_u32(r, (uint32_t *)&d->chunk) :
	    get_int(r, &d->chunk, "chunk", MAX_CHUNK))) != SA_OK ||
	    (rc = get_u32(r, &d->mats)) != SA_OK)
		return rc;
	if ((rc = check_shape(d, r->name)) != SA_OK)
		return rc;
	if ((rc = get_u64(r, &d->n_tokens)) != SA_OK ||
	    (rc = get_u64(r, &d->n_demos)) != SA_OK ||
	    (rc = get_str(r, &d->adapter_path, MAX_STR, "adapter path", 1)) != SA_OK ||
	    (rc = get_str(r, &d->params, MAX_PARAMS, "parameters", 1)) != SA_OK ||
	    (rc = get_u32(r, &n_src)) != SA_OK)
		return rc;
	if (n_src > MAX_SOURCES)
		return sa_fail(SA_EDATA, "%s: %u sources exceed the limit of %u", r->name, n_src, MAX_SOURCES);
	/* Grown as sources arrive: a lying count costs nothing until the
	 * bytes are really there. */
	for (uint32_t i = 0; i < n_src; i++) {
		sa_source *s;
		if ((i & (i - 1)) == 0) {
			size_t cap = i ? 2 * (size_t)i : 1;
			if (!(s = realloc(d->sources, cap * sizeof *s)))
				return sa_fail(SA_EINTERNAL, "out of memory");
			d->sources = s;
		}
		s = &d->sources[d->n_sources];
		if ((rc = get_str(r, &s->name, MAX_STR, "source name", 0)) != SA_OK)
			return rc;
		d->n_sources++;
		if ((rc = get_u64(r, &s->hash)) != SA_OK)
			return rc;
	}
	if ((rc = get_u64(r, payload)) != SA_OK)
		return rc;
	want = r->crc;
	if ((rc = get_u32(r, &crc)) != SA_OK)
		return rc;
	if (crc != want)
		return sa_fail(SA_EDATA, "%s: CRC mismatch (corrupted)", r->name);
	if (*payload != payload_bytes(d))
		return sa_fail(SA_EDATA, "%s: payload of %llu bytes, the shapes need %llu (corrupted)",
		    r->name, (unsigned long long)*payload, (unsigned long long)payload_bytes(d));
	return SA_OK;
}

/*
 * Inflate the frames into h then P.  The zlib stream must end exactly with
 * the last frame and the payload's size.  h and P grow as data arrives, so
 * a header that promises more than the file holds costs little memory.
 */
static int
read_payload(reader *r, sa_delta *d)
{
	float **arr[2] = { &d->h, &d->P };
	size_t total[2] = {
		(size_t)sa_delta_n_used(d) * h_per_pair(d) * sizeof(float),
		(size_t)sa_delta_n_used(d) * p_per_pair(d) * sizeof(float),
	};
	size_t done[2] = { 0, 0 }, cap[2] = { 0, 0 };
	unsigned char *frame, spill, end[8];
	z_stream z;
	int part = 0, zr = Z_OK, rc = SA_OK;
	uint32_t crc = 0, want, n;

	if (!(frame = sa_malloc(MAX_FRAME)))
		return SA_EINTERNAL;
	memset(&z, 0, sizeof z);
	if (inflateInit(&z) != Z_OK) {
		free(frame);
		return sa_fail(SA_EINTERNAL, "%s: inflateInit failed", r->name);
	}
	for (;;) {
		if ((rc = get_u32(r, &n)) != SA_OK)
			break;
		if (n == 0)
			break;
		if (n > MAX_FRAME) {
			rc = sa_fail(SA_EDATA, "%s: frame of %u bytes exceeds the limit of %u (corrupted)",
			    r->name, n, MAX_FRAME);
			break;
		}
		if (zr == Z_STREAM_END) {
			rc = sa_fail(SA_EDATA, "%s: data after the end of the payload (corrupted)", r->name);
			break;
		}
		if ((rc = get(r, frame, n)) != SA_OK)
			break;
		z.next_in = frame;
		z.avail_in = n;
		while (z.avail_in > 0 && zr != Z_STREAM_END) {
			unsigned char *before;
			size_t made;
			if (part < 2) {
				if (done[part] == cap[part]) {
					size_t c = cap[part] < (1u << 20) ? (1u << 20) : 2 * cap[part];
					void *p;
					if (c > total[part])
						c = total[part];
					if (!(p = realloc(*arr[part], c))) {
						rc = sa_fail(SA_EINTERNAL, "out of memory");
						break;
					}
					*arr[part] = p;
					cap[part] = c;
				}
				z.next_out = (unsigned char *)*arr[part] + done[part];
				z.avail_out = cap[part] - done[part] > (1u << 30) ? (1u << 30)
				    : (uInt)(cap[part] - done[part]);
			} else {
				/* Everything expected is in: any more output is too much. */
				z.next_out = &spill;
				z.avail_out = 1;
			}
			before = z.next_out;
			zr = inflate(&z, Z_NO_FLUSH);
			made = (size_t)(z.next_out - before);
			if (zr == Z_MEM_ERROR) {
				rc = sa_fail(SA_EINTERNAL, "out of memory");
				break;
			}
			if (zr != Z_OK && zr != Z_STREAM_END && zr != Z_BUF_ERROR) {
				rc = sa_fail(SA_EDATA, "%s: corrupted payload (%s)", r->name,
				    z.msg ? z.msg : "bad deflate data");
				break;
			}
			if (part == 2 && made > 0) {
				rc = sa_fail(SA_EDATA, "%s: payload longer than its header says (corrupted)", r->name);
				break;
			}
			if (part < 2) {
				crc = sa_crc32(crc, before, made);
				done[part] += made;
				while (part < 2 && done[part] == total[part])
					part++;
			}
			if (zr == Z_BUF_ERROR && made == 0)
				break;
		}
		if (rc != SA_OK)
			break;
		if (z.avail_in > 0) {
			rc = sa_fail(SA_EDATA, "%s: data after the end of the payload (corrupted)", r->name);
			break;
		}
	}
	inflateEnd(&z);
	free(frame);
	if (rc != SA_OK)
		return rc;
	if (zr != Z_STREAM_END || part < 2)
		return sa_fail(SA_EDATA, "%s: payload shorter than its header says (corrupted)", r->name);
	if ((rc = get_u32(r, &want)) != SA_OK || (rc = get(r, end, sizeof end)) != SA_OK)
		return rc;
	if (want != crc)
		return sa_fail(SA_EDATA, "%s: CRC mismatch (corrupted)", r->name);
	if (memcmp(end, DELTA_END, sizeof end) != 0)
		return sa_fail(SA_EDATA, "%s: bad end marker (corrupted)", r->name);
	return SA_OK;
}

int
sa_delta_read(sa_delta **out, FILE *fp, const char *name)
{
	reader r = { fp, name, 0 };
	sa_delta *d;
	uint64_t payload;
	int rc;

	*out = NULL;
	if (!(d = sa_calloc(1, sizeof *d)))
		return SA_EINTERNAL;
	errno = 0;
	if ((rc = read_header(&r, d, &payload)) != SA_OK || (rc = read_payload(&r, d)) != SA_OK || (rc = check_finite(d, name)) != SA_OK) {
		sa_delta_free(d);
		return rc;
	}
	*out = d;
	return SA_OK;
}

int
sa_delta_load(sa_delta **out, const char *path)
{
	int is_stdin = strcmp(path, "-") == 0, rc;
	const char *name = is_stdin ? "stdin" : path;
	FILE *fp = is_stdin ? stdin : fopen(path, "rb");

	*out = NULL;
	if (!fp)
		return sa_fail(SA_ENOINPUT, "%s: %s", path, strerror(errno));
	rc = sa_delta_read(out, fp, name);
	if (rc == SA_OK && getc(fp) != EOF) {
		sa_delta_free(*out);
		*out = NULL;
		rc = sa_fail(SA_EDATA, "%s: data after the end of the delta", name);
	}
	if (!is_stdin)
		fclose(fp);
	return rc;
}

/* ----------------------------------------------------------- algebra */

static const char *
nm(const char *s)
{
	return s ? s : "delta";
}

int
sa_delta_compatible(const sa_delta *a, const char *name_a, const sa_delta *b, const char *name_b)
{
	name_a = nm(name_a);
	name_b = nm(name_b);
	if (a->model_fingerprint != b->model_fingerprint)
		return sa_fail(SA_EDATA, "%s and %s were made for different models "
		    "(model fingerprints %016llx and %016llx)", name_a, name_b,
		    (unsigned long long)a->model_fingerprint, (unsigned long long)b->model_fingerprint);
	if (a->adapter_fingerprint != b->adapter_fingerprint)
		return sa_fail(SA_EDATA, "%s and %s were made with different adapters "
		    "(adapter fingerprints %016llx and %016llx)", name_a, name_b,
		    (unsigned long long)a->adapter_fingerprint, (unsigned long long)b->adapter_fingerprint);
#define SAME(f) if (a->f != b->f) return sa_fail(SA_EDATA, \
		"%s and %s differ in " #f " (%lld and %lld)", name_a, name_b, \
		(long long)a->f, (long long)b->f)
	SAME(mapping);
	SAME(n_layer);
	SAME(n_head_kv);
	SAME(d_head);
	SAME(rank);
	SAME(chunk);
	SAME(mats);
#undef SAME
	return SA_OK;
}

int
sa_delta_join_params(sa_delta *d, const char *params)
{
	char *a = d->params, *j;
	size_t n;

	if (!params || !*params || (a && strcmp(a, params) == 0))
		return SA_OK;
	if (!a || !*a) {
		if (!(j = strdup(params)))
			return sa_fail(SA_EINTERNAL, "out of memory");
	} else {
		n = strlen(a) + 2 + strlen(params) + 1;
		if (!(j = sa_malloc(n)))
			return SA_EINTERNAL;
		snprintf(j, n, "%s; %s", a, params);
	}
	free(a);
	d->params = j;
	return SA_OK;
}

/* Append b's sources and counts to a (the state is left alone). */
static int
append_meta(sa_delta *a, const sa_delta *b)
{
	sa_source *s;
	int rc;

	if (a->n_tokens + b->n_tokens < a->n_tokens || a->n_demos + b->n_demos < a->n_demos)
		return sa_fail(SA_EDATA, "token or demonstration count overflows");
	if ((uint64_t)a->n_sources + (uint64_t)b->n_sources > MAX_SOURCES)
		return sa_fail(SA_EDATA, "more than %u sources", MAX_SOURCES);
	if (b->n_sources > 0) {
		if (!(s = realloc(a->sources, ((size_t)a->n_sources + b->n_sources) * sizeof *s)))
			return sa_fail(SA_EINTERNAL, "out of memory");
		a->sources = s;
		for (int i = 0; i < b->n_sources; i++) {
			s = &a->sources[a->n_sources];
			s->hash = b->sources[i].hash;
			if (!(s->name = strdup(b->sources[i].name)))
				return sa_fail(SA_EINTERNAL, "out of memory");
			a->n_sources++;
		}
	}
	if ((rc = sa_delta_join_params(a, b->params)) != SA_OK)
		return rc;
	a->n_tokens += b->n_tokens;
	a->n_demos += b->n_demos;
	return SA_OK;
}

/*
 * The recurrence h_i = a_i (.) h_{i-1} + S_i never reads h in the gate, so
 * running B after A gives h_AB = P_B (.) h_A + h_B and P_AB = P_A (.) P_B,
 * exactly the state one encoder would have reached over A then B.
 */
int
sa_delta_chain(sa_delta *a, const sa_delta *b)
{
	size_t rows = (size_t)sa_delta_n_used(a) * p_per_pair(a);
	int dh = a->d_head, rc;

	if ((rc = sa_delta_compatible(a, "first delta", b, "second delta")) != SA_OK)
		return rc;
	if (a->mapping == SA_MAPPING_LSQ) {
		/* the memory's sums have no gates: B's tokens add to A's */
		size_t nh = (size_t)sa_delta_n_used(a) * h_per_pair(a);
		for (size_t i = 0; i < nh; i++)
			a->h[i] += b->h[i];
		for (size_t i = 0; i < rows; i++)
			a->P[i] += b->P[i];
		return append_meta(a, b);
	}
	for (size_t i = 0; i < rows; i++) {
		float pb = b->P[i];
		float *ha = a->h + i * dh;
		const float *hb = b->h + i * dh;
		for (int j = 0; j < dh; j++)
			ha[j] = pb * ha[j] + hb[j];
		a->P[i] *= pb;
	}
	return append_meta(a, b);
}

/*
 * Weighted sum of states.  Delta W is linear in h, so the sum of the states
 * gives exactly the weighted sum of the weight updates.  P sums the same
 * way, which keeps chaining exact across a mean: with weights summing to 1,
 * "A then mean(B_i)" equals mean("A then B_i").  Accumulated in double so
 * the result does not depend on how many inputs there are.
 */
int
sa_delta_combine(sa_delta **out, sa_delta *const *d, const double *w, int n)
{
	sa_delta *c;
	size_t nh, np;
	int rc;

	*out = NULL;
	if (n < 1)
		return sa_fail(SA_EUSAGE, "no delta to combine");
	for (int k = 1; k < n; k++)
		if ((rc = sa_delta_compatible(d[0], "first delta", d[k], "another delta")) != SA_OK)
			return rc;
	for (int k = 0; k < n; k++)
		if (!isfinite(w[k]))
			return sa_fail(SA_EUSAGE, "weight %g is not a finite number", w[k]);
	if ((rc = sa_delta_clone(&c, d[0])) != SA_OK)
		return rc;
	c->n_tokens = c->n_demos = 0;
	for (int i = 0; i < c->n_sources; i++)
		free(c->sources[i].name);
	free(c->sources);
	c->sources = NULL;
	c->n_sources = 0;
	free(c->params);
	c->params = NULL;
	for (int k = 0; k < n; k++)
		if ((rc = append_meta(c, d[k])) != SA_OK) {
			sa_delta_free(c);
			return rc;
		}
	nh = (size_t)sa_delta_n_used(c) * h_per_pair(c);
	np = (size_t)sa_delta_n_used(c) * p_per_pair(c);
	for (size_t i = 0; i < nh; i++) {
		double s = 0;
		for (int k = 0; k < n; k++)
			s += w[k] * d[k]->h[i];
		c->h[i] = (float)s;
	}
	for (size_t i = 0; i < np; i++) {
		double s = 0;
		for (int k = 0; k < n; k++)
			s += w[k] * d[k]->P[i];
		c->P[i] = (float)s;
	}
	if ((rc = check_finite(c, "combined delta")) != SA_OK) {
		sa_delta_free(c);
		return rc;
	}
	*out = c;
	return SA_OK;
}

/* ------------------------------------------------------------ printing */

static void
mats_list(FILE *fp, uint32_t mats, int json)
{
	int first = 1;

	if (json)
		fputc('[', fp);
	for (int m = 0; m < SA_NMAT; m++) {
		if (!sa_adapted(mats, m))
			continue;
		if (json)
			fprintf(fp, "%s\"%s\"", first ? "" : ",", sa_mat_name(m));
		else
			fprintf(fp, "%s%s", first ? "" : ",", sa_mat_name(m));
		first = 0;
	}
	if (json)
		fputc(']', fp);
}

static void
json_str_or_null(FILE *fp, const char *s)
{
	if (s)
		sa_json_put_str(fp, s, strlen(s));
	else
		fputs("null", fp);
}

/* Text on one line: control bytes escaped, so each key stays one line. */
static void
put_line_text(FILE *fp, const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '\n')
			fputs("\\n", fp);
		else if (*p == '\t')
			fputs("\\t", fp);
		else if (*p < 0x20 || *p == 0x7f)
			fprintf(fp, "\\x%02x", *p);
		else
			fputc(*p, fp);
	}
}

void
sa_delta_print(const sa_delta *d, FILE *fp, int json)
{
	size_t nh = (size_t)sa_delta_n_used(d) * h_per_pair(d);
	size_t np = (size_t)sa_delta_n_used(d) * p_per_pair(d);
	double hss = 0, psum = 0;
	int lsq = d->mapping == SA_MAPPING_LSQ, dk = lsq ? d_key(d) : 0;
	unsigned version = lsq ? DELTA_VERSION_LSQ : DELTA_VERSION;
	const char *mapping = lsq ? "lsq" : "pool";

	for (size_t i = 0; i < nh; i++)
		hss += (double)d->h[i] * d->h[i];
	/* pool: the mean gate product; lsq: the trace of S per memory, how
	 * many tokens' worth were written */
	for (size_t i = 0; i < np; i++)
		psum += !lsq ? d->P[i] : i % ((size_t)dk * dk) % (dk + 1) == 0 ? d->P[i] : 0;

	if (json) {
		fprintf(fp, "{\"kind\":\"delta\",\"version\":%u,\"mapping\":\"%s\"", version, mapping);
		fprintf(fp, ",\"model_fingerprint\":\"%016llx\"", (unsigned long long)d->model_fingerprint);
		fprintf(fp, ",\"adapter_fingerprint\":\"%016llx\"", (unsigned long long)d->adapter_fingerprint);
		fputs(",\"adapter\":", fp);
		json_str_or_null(fp, d->adapter_path);
		fprintf(fp, ",\"n_layer\":%d,\"n_head_kv\":%d,\"d_head\":%d,\"rank\":%d",
		    d->n_layer, d->n_head_kv, d->d_head, d->rank);
		if (lsq)
			fprintf(fp, ",\"d_key\":%d", dk);
		else
			fprintf(fp, ",\"chunk\":%d", d->chunk);
		fputs(",\"matrices\":", fp);
		mats_list(fp, d->mats, 1);
		fprintf(fp, ",\"n_tokens\":%llu,\"n_demos\":%llu",
		    (unsigned long long)d->n_tokens, (unsigned long long)d->n_demos);
		fputs(",\"params\":", fp);
		json_str_or_null(fp, d->params);
		fprintf(fp, ",\"state_bytes\":%llu", (unsigned long long)payload_bytes(d));
		if (lsq)
			fprintf(fp, ",\"g_norm\":%.9g,\"s_trace\":%.9g", sqrt(hss),
			    psum / ((double)d->n_layer * d->n_head_kv));
		else
			fprintf(fp, ",\"h_norm\":%.9g,\"p_mean\":%.9g", sqrt(hss), np ? psum / np : 0.0);
		fputs(",\"sources\":[", fp);
		for (int i = 0; i < d->n_sources; i++) {
			fprintf(fp, "%s{\"name\":", i ? "," : "");
			sa_json_put_str(fp, d->sources[i].name, strlen(d->sources[i].name));
			fprintf(fp, ",\"hash\":\"%016llx\"}", (unsigned long long)d->sources[i].hash);
		}
		fputs("]}\n", fp);
		return;
	}

	/* The JSON keys, with spaces for underscores (sa-info(1)). */
#define KEY(k) fprintf(fp, "%-21s", k ":")
	KEY("kind");                fputs("delta\n", fp);
	KEY("version");             fprintf(fp, "%u\n", version);
	KEY("mapping");             fprintf(fp, "%s\n", mapping);
	KEY("model fingerprint");   fprintf(fp, "%016llx\n", (unsigned long long)d->model_fingerprint);
	KEY("adapter fingerprint"); fprintf(fp, "%016llx\n", (unsigned long long)d->adapter_fingerprint);
	KEY("adapter");             put_line_text(fp, d->adapter_path ? d->adapter_path : "-"); fputc('\n', fp);
	KEY("n layer");             fprintf(fp, "%d\n", d->n_layer);
	KEY("n head kv");           fprintf(fp, "%d\n", d->n_head_kv);
	KEY("d head");              fprintf(fp, "%d\n", d->d_head);
	KEY("rank");                fprintf(fp, "%d\n", d->rank);
	if (lsq) {
		KEY("d key");       fprintf(fp, "%d\n", dk);
	} else {
		KEY("chunk");       fprintf(fp, "%d\n", d->chunk);
	}
	KEY("matrices");            mats_list(fp, d->mats, 0); fputc('\n', fp);
	KEY("n tokens");            fprintf(fp, "%llu\n", (unsigned long long)d->n_tokens);
	KEY("n demos");             fprintf(fp, "%llu\n", (unsigned long long)d->n_demos);
	KEY("params");              put_line_text(fp, d->params && *d->params ? d->params : "-"); fputc('\n', fp);
	KEY("state bytes");         fprintf(fp, "%llu\n", (unsigned long long)payload_bytes(d));
	if (lsq) {
		KEY("g norm");      fprintf(fp, "%.6g\n", sqrt(hss));
		KEY("s trace");     fprintf(fp, "%.6g\n", psum / ((double)d->n_layer * d->n_head_kv));
	} else {
		KEY("h norm");      fprintf(fp, "%.6g\n", sqrt(hss));
		KEY("p mean");      fprintf(fp, "%.6g\n", np ? psum / np : 0.0);
	}
	KEY("sources");             fprintf(fp, "%d\n", d->n_sources);
	/* the members of "sources": hash and name */
	for (int i = 0; i < d->n_sources; i++) {
		KEY("source");
		fprintf(fp, "%016llx ", (unsigned long long)d->sources[i].hash);
		put_line_text(fp, d->sources[i].name);
		fputc('\n', fp);
	}
#undef KEY
}
