/*
 * gguf.c - GGUF v2/v3 reader (mmap) and v3 writer (one streaming pass).
 *
 * The file is untrusted: every count, length and offset is checked against
 * the bytes that remain before it is used, so a header that claims 2^60
 * tensors in a 100-byte file is refused before anything is allocated.  Every
 * allocation is bounded by the file size.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sa.h"
#include "types_impl.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "GGUF is little-endian; this reader assumes a little-endian host"
#endif

#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_DIMS 4
/* ggml keeps tensor names in a 64-byte field, NUL included. */
#define GGUF_MAX_NAME 64
/* Arrays of arrays are legal; a depth bound keeps the parser's stack small. */
#define GGUF_MAX_NESTING 8

/* Smallest encodings, to bound counts by the bytes left: a metadata entry
 * is a key length (8), a type (4) and at least one value byte; a tensor info
 * is a name length (8), n_dims (4), one dimension (8), a type (4), an offset (8). */
#define MIN_KV_BYTES 13
#define MIN_TENSOR_INFO_BYTES 32

typedef struct gguf_kv {
	sa_str key;
	int type;              /* SA_GGUF_* */
	int elem_type;         /* arrays: element type */
	uint64_t n;            /* arrays: element count */
	const uint8_t *raw;    /* the value as stored (arrays: from the element type on) */
	uint64_t raw_len;
	const uint8_t *elems;  /* arrays: the first element */
} gguf_kv;

/* Open-addressing index from names to entries; a slot holds index+1. */
typedef struct name_index {
	uint64_t *slot;
	uint64_t mask;
} name_index;

struct sa_gguf {
	char *path;
	uint32_t version;
	const uint8_t *base;
	size_t size;
	int mapped;            /* base is an mmap (else malloc'd) */
	uint64_t alignment;
	uint64_t data_offset;  /* of the data section, from the start of the file */
	uint64_t n_kv;
	gguf_kv *kv;
	name_index kv_index;
	uint64_t n_tensors;
	sa_tensor_info *tensors;
	char *names;           /* one block for all tensor names */
	name_index tensor_index;
};

/* ---------------------------------------------------------------- values */

static size_t
value_size(int type)
{
	switch (type) {
	case SA_GGUF_U8: case SA_GGUF_I8: case SA_GGUF_BOOL: return 1;
	case SA_GGUF_U16: case SA_GGUF_I16: return 2;
	case SA_GGUF_U32: case SA_GGUF_I32: case SA_GGUF_F32: return 4;
	case SA_GGUF_U64: case SA_GGUF_I64: case SA_GGUF_F64: return 8;
	default: return 0;  /* string, array, or not a type */
	}
}

static const char *
value_type_name(int type)
{
	static const char *names[] = {
		"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool",
		"string", "array", "u64", "i64", "f64",
	};
	return type >= 0 && type <= SA_GGUF_F64 ? names[type] : "unknown";
}

static uint32_t
le32(const uint8_t *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
	return v;
}

static uint64_t
le64(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return v;
}

/* ---------------------------------------------------------------- cursor */

typedef struct cursor {
	const uint8_t *base;
	uint64_t off, size;
	const char *path;
} cursor;

static uint64_t
left(const cursor *c)
{
	return c->size - c->off;
}

static int
truncated(const cursor *c)
{
	sa_fail(SA_EDATA, "%s: truncated", c->path);
	return SA_EDATA;
}

static int
take(cursor *c, uint64_t n, const uint8_t **p)
{
	if (n > left(c))
		return truncated(c);
	*p = c->base + c->off;
	c->off += n;
	return SA_OK;
}

static int
read_u32(cursor *c, uint32_t *v)
{
	const uint8_t *p;
	int rc = take(c, 4, &p);
	if (rc == SA_OK)
		*v = le32(p);
	return rc;
}

static int
read_u64(cursor *c, uint64_t *v)
{
	const uint8_t *p;
	int rc = take(c, 8, &p);
	if (rc == SA_OK)
		*v = le64(p);
	return rc;
}

static int
read_str(cursor *c, sa_str *s)
{
	const uint8_t *p;
	uint64_t n;
	int rc;

	if ((rc = read_u64(c, &n)) != SA_OK || (rc = take(c, n, &p)) != SA_OK)
		return rc;
	s->s = (const char *)p;
	s->n = n;
	return SA_OK;
}

/* Skip one value of the given type, checking every length on the way. */
static int
skip_value(cursor *c, int type, int depth, const sa_str *key)
{
	const uint8_t *p;
	uint32_t et;
	uint64_t n;
	sa_str s;
	size_t es;
	int rc;

	if ((es = value_size(type)))
		return take(c, es, &p);
	if (type == SA_GGUF_STR)
		return read_str(c, &s);
	if (type != SA_GGUF_ARR)
		return sa_fail(SA_EDATA, "%s: key %.*s: bad value type %d", c->path,
		    (int)key->n, key->s, type);
	if (depth >= GGUF_MAX_NESTING)
		return sa_fail(SA_EDATA, "%s: key %.*s: arrays nested too deeply", c->path,
		    (int)key->n, key->s);
	if ((rc = read_u32(c, &et)) != SA_OK || (rc = read_u64(c, &n)) != SA_OK)
		return rc;
	if ((es = value_size((int)et))) {
		if (n > left(c) / es)
			return truncated(c);
		return take(c, n * es, &p);
	}
	/* A string takes at least its 8-byte length, an array its 12-byte
	 * header: the loop below runs at most left/8 times. */
	if (et != SA_GGUF_STR && et != SA_GGUF_ARR)
		return sa_fail(SA_EDATA, "%s: key %.*s: bad array element type %u", c->path,
		    (int)key->n, key->s, et);
	if (n > left(c) / (et == SA_GGUF_STR ? 8 : 12))
		return truncated(c);
	for (uint64_t i = 0; i < n; i++)
		if ((rc = skip_value(c, (int)et, depth + 1, key)) != SA_OK)
			return rc;
	return SA_OK;
}

/* ----------------------------------------------------------- name index */

static uint64_t
name_hash(const char *s, uint64_t n)
{
	return sa_hash64(SA_HASH64_INIT, s, (size_t)n);
}

static int
index_init(name_index *ix, uint64_t n)
{
	uint64_t cap = 16;

	while (cap < 2 * n)
		cap *= 2;
	if (!(ix->slot = sa_calloc((size_t)cap, sizeof *ix->slot)))
		return SA_EINTERNAL;
	ix->mask = cap - 1;
	return SA_OK;
}

/* Index of name in the entries, or -1; *slotp is where it would go. */
static int64_t
index_find(const name_index *ix, const char *s, uint64_t n,
    sa_str (*name_of)(const void *, uint64_t), const void *ctx, uint64_t *slotp)
{
	uint64_t h = name_hash(s, n) & ix->mask;

	for (;; h = (h + 1) & ix->mask) {
		uint64_t e = ix->slot[h];
		if (!e) {
			if (slotp)
				*slotp = h;
			return -1;
		}
		sa_str o = name_of(ctx, e - 1);
		if (o.n == n && memcmp(o.s, s, (size_t)n) == 0)
			return (int64_t)(e - 1);
	}
}

static sa_str
kv_name(const void *ctx, uint64_t i)
{
	return ((const sa_gguf *)ctx)->kv[i].key;
}

static sa_str
tensor_name(const void *ctx, uint64_t i)
{
	const sa_tensor_info *t = &((const sa_gguf *)ctx)->tensors[i];
	sa_str s = { t->name, strlen(t->name) };
	return s;
}

/* ---------------------------------------------------------------- reader */

static const gguf_kv *
find_kv(const sa_gguf *g, const char *key)
{
	int64_t i;

	if (!g->kv_index.slot)
		return NULL;
	i = index_find(&g->kv_index, key, strlen(key), kv_name, g, NULL);
	return i < 0 ? NULL : &g->kv[i];
}

static int
parse_kvs(sa_gguf *g, cursor *c)
{
	int rc;

	if (g->n_kv > left(c) / MIN_KV_BYTES)
		return truncated(c);
	if (!(g->kv = sa_calloc((size_t)g->n_kv + 1, sizeof *g->kv)))
		return SA_EINTERNAL;
	if ((rc = index_init(&g->kv_index, g->n_kv)) != SA_OK)
		return rc;
	for (uint64_t i = 0; i < g->n_kv; i++) {
		gguf_kv *kv = &g->kv[i];
		uint32_t type;
		uint64_t slot = 0, start;

		if ((rc = read_str(c, &kv->key)) != SA_OK || (rc = read_u32(c, &type)) != SA_OK)
			return rc;
		if (kv->key.n == 0)
			return sa_fail(SA_EDATA, "%s: metadata key %llu is empty", g->path,
			    (unsigned long long)i);
		if (index_find(&g->kv_index, kv->key.s, kv->key.n, kv_name, g, &slot) >= 0)
			return sa_fail(SA_EDATA, "%s: duplicate key %.*s", g->path,
			    (int)kv->key.n, kv->key.s);
		kv->type = (int)type;
		start = c->off;
		if ((rc = skip_value(c, kv->type, 0, &kv->key)) != SA_OK)
			return rc;
		kv->raw = c->base + start;
		kv->raw_len = c->off - start;
		if (kv->type == SA_GGUF_ARR) {
			kv->elem_type = (int)le32(kv->raw);
			kv->n = le64(kv->raw + 4);
			kv->elems = kv->raw + 12;
		}
		g->kv_index.slot[slot] = i + 1;
	}
	return SA_OK;
}

static int
read_alignment(sa_gguf *g)
{
	uint32_t a;
	int rc;

	g->alignment = GGUF_DEFAULT_ALIGNMENT;
	if (!sa_gguf_has(g, "general.alignment"))
		return SA_OK;
	if ((rc = sa_gguf_get_u32(g, "general.alignment", &a)) != SA_OK)
		return rc;
	if (a == 0 || (a & (a - 1)))
		return sa_fail(SA_EDATA, "%s: general.alignment %u is not a power of two", g->path, a);
	g->alignment = a;
	return SA_OK;
}

/* Tensor infos: shapes and types first, names copied into one block after. */
static int
parse_tensor_infos(sa_gguf *g, cursor *c)
{
	sa_str *names;
	uint64_t name_bytes = 0;
	int rc;

	if (g->n_tensors > left(c) / MIN_TENSOR_INFO_BYTES)
		return truncated(c);
	if (!(g->tensors = sa_calloc((size_t)g->n_tensors + 1, sizeof *g->tensors)))
		return SA_EINTERNAL;
	if (!(names = sa_calloc((size_t)g->n_tensors + 1, sizeof *names)))
		return SA_EINTERNAL;

	for (uint64_t i = 0; i < g->n_tensors; i++) {
		sa_tensor_info *t = &g->tensors[i];
		sa_str *name = &names[i];
		uint32_t n_dims, type;
		uint64_t nel = 1;
		int64_t be;
		size_t bb;

		if ((rc = read_str(c, name)) != SA_OK || (rc = read_u32(c, &n_dims)) != SA_OK)
			goto out;
		/* names are printed with %.*s below; keep them short and NUL-free */
		if (name->n == 0 || name->n >= GGUF_MAX_NAME || memchr(name->s, 0, (size_t)name->n)) {
			rc = sa_fail(SA_EDATA, "%s: tensor %llu: bad name", g->path,
			    (unsigned long long)i);
			goto out;
		}
		if (n_dims < 1 || n_dims > GGUF_MAX_DIMS) {
			rc = sa_fail(SA_EDATA, "%s: tensor %.*s: bad number of dimensions %u",
			    g->path, (int)name->n, name->s, n_dims);
			goto out;
		}
		t->n_dims = (int)n_dims;
		for (int d = 0; d < GGUF_MAX_DIMS; d++) {
			uint64_t ne = 1;
			if (d < (int)n_dims && (rc = read_u64(c, &ne)) != SA_OK)
				goto out;
			if (ne < 1 || ne > (uint64_t)INT64_MAX / nel) {
				rc = sa_fail(SA_EDATA, "%s: tensor %.*s: bad shape", g->path,
				    (int)name->n, name->s);
				goto out;
			}
			t->ne[d] = (int64_t)ne;
			nel *= ne;
		}
		if ((rc = read_u32(c, &type)) != SA_OK || (rc = read_u64(c, &t->offset)) != SA_OK)
			goto out;
		t->type = (int)type;
		if (type > INT_MAX || !sa_type_block(t->type, &be, &bb)) {
			rc = sa_fail(SA_EDATA, "%s: tensor %.*s: unknown type %u", g->path,
			    (int)name->n, name->s, type);
			goto out;
		}
		if (t->ne[0] % be) {
			rc = sa_fail(SA_EDATA, "%s: tensor %.*s: rows of %lld elements do not fill "
			    "%s blocks of %lld", g->path, (int)name->n, name->s,
			    (long long)t->ne[0], sa_type_name(t->type), (long long)be);
			goto out;
		}
		if (nel / (uint64_t)be > SIZE_MAX / bb) {
			rc = sa_fail(SA_EDATA, "%s: tensor %.*s: too large", g->path,
			    (int)name->n, name->s);
			goto out;
		}
		t->nbytes = (size_t)(nel / (uint64_t)be) * bb;
		name_bytes += name->n + 1;
	}

	/* name_bytes <= file size + n_tensors: both already bounded */
	if (!(g->names = sa_malloc((size_t)name_bytes))) {
		rc = SA_EINTERNAL;
		goto out;
	}
	if ((rc = index_init(&g->tensor_index, g->n_tensors)) != SA_OK)
		goto out;
	{
		char *p = g->names;
		for (uint64_t i = 0; i < g->n_tensors; i++) {
			uint64_t slot = 0;
			memcpy(p, names[i].s, (size_t)names[i].n);
			p[names[i].n] = '\0';
			g->tensors[i].name = p;
			p += names[i].n + 1;
			if (index_find(&g->tensor_index, names[i].s, names[i].n, tensor_name, g, &slot) >= 0) {
				rc = sa_fail(SA_EDATA, "%s: duplicate tensor %s", g->path, g->tensors[i].name);
				goto out;
			}
			g->tensor_index.slot[slot] = i + 1;
		}
	}
	rc = SA_OK;
out:
	free(names);
	return rc;
}

static int
by_offset(const void *a, const void *b, void *ctx)
{
	const sa_tensor_info *t = ctx;
	uint64_t x = t[*(const uint64_t *)a].offset, y = t[*(const uint64_t *)b].offset;

	return x < y ? -1 : x > y;
}

/* No two tensors may share bytes (llama.cpp requires them back to back).
 * Besides, readers copy tensors: with shared bytes, a small file could
 * name the same megabyte a thousand times and have them allocate a
 * gigabyte.  Disjoint tensors keep every copy within the file's size. */
static int
check_overlap(sa_gguf *g)
{
	uint64_t *order;

	if (g->n_tensors < 2)
		return SA_OK;
	if (!(order = sa_malloc((size_t)g->n_tensors * sizeof *order)))
		return SA_EINTERNAL;
	for (uint64_t i = 0; i < g->n_tensors; i++)
		order[i] = i;
	qsort_r(order, (size_t)g->n_tensors, sizeof *order, by_offset, g->tensors);
	for (uint64_t i = 1; i < g->n_tensors; i++) {
		const sa_tensor_info *a = &g->tensors[order[i - 1]], *b = &g->tensors[order[i]];
		if (b->offset - a->offset < a->nbytes) {
			int rc = sa_fail(SA_EDATA, "%s: tensors %s and %s overlap", g->path,
			    a->name, b->name);
			free(order);
			return rc;
		}
	}
	free(order);
	return SA_OK;
}

/* The data section starts at the next multiple of the alignment; each
 * tensor's bytes must lie inside it. */
static int
bind_tensor_data(sa_gguf *g, uint64_t end_of_infos)
{
	uint64_t a = g->alignment, data_size;

	g->data_offset = end_of_infos + (a - end_of_infos % a) % a;
	if (g->n_tensors == 0)
		return SA_OK;
	if (g->data_offset > g->size)
		return sa_fail(SA_EDATA, "%s: truncated", g->path);
	data_size = g->size - g->data_offset;
	for (uint64_t i = 0; i < g->n_tensors; i++) {
		sa_tensor_info *t = &g->tensors[i];
		if (t->offset % a)
			return sa_fail(SA_EDATA, "%s: tensor %s: data offset %llu is not aligned to %llu",
			    g->path, t->name, (unsigned long long)t->offset, (unsigned long long)a);
		if (t->offset > data_size || t->nbytes > data_size - t->offset)
			return sa_fail(SA_EDATA, "%s: tensor %s: data out of bounds", g->path, t->name);
		t->data = g->base + g->data_offset + t->offset;
	}
	return check_overlap(g);
}

static int
parse(sa_gguf *g)
{
	static const uint8_t magic[4] = { 'G', 'G', 'U', 'F' };
	cursor c = { g->base, 0, g->size, g->path };
	const uint8_t *p;
	int rc;

	if (g->size < 4)
		return sa_fail(SA_EDATA, "%s: %s", g->path,
		    memcmp(g->base, magic, g->size) == 0 ? "truncated" : "not a GGUF file");
	if (g->size >= 8 && memcmp(g->base, SA_DELTA_MAGIC, 8) == 0)
		return sa_fail(SA_EDATA, "%s: this is an sa delta, not a GGUF file", g->path);
	if (memcmp(g->base, magic, 4) != 0)
		return sa_fail(SA_EDATA, "%s: not a GGUF file", g->path);
	take(&c, 4, &p);
	if ((rc = read_u32(&c, &g->version)) != SA_OK)
		return rc;
	if (g->version != 2 && g->version != 3)
		return sa_fail(SA_EDATA, "%s: unsupported GGUF version %u", g->path, g->version);
	if ((rc = read_u64(&c, &g->n_tensors)) != SA_OK || (rc = read_u64(&c, &g->n_kv)) != SA_OK)
		return rc;
	/* Refuse impossible counts before the first entry is parsed. */
	if (g->n_tensors > left(&c) / MIN_TENSOR_INFO_BYTES ||
	    g->n_kv > left(&c) / MIN_KV_BYTES ||
	    g->n_tensors * MIN_TENSOR_INFO_BYTES + g->n_kv * MIN_KV_BYTES > left(&c))
		return truncated(&c);
	if ((rc = parse_kvs(g, &c)) != SA_OK || (rc = read_alignment(g)) != SA_OK ||
	    (rc = parse_tensor_infos(g, &c)) != SA_OK)
		return rc;
	return bind_tensor_data(g, c.off);
}

int
sa_gguf_open(sa_gguf **out, const char *path)
{
	struct stat st;
	sa_gguf *g;
	int fd = -1, rc;

	*out = NULL;
	if (!(g = sa_calloc(1, sizeof *g)))
		return SA_EINTERNAL;
	if (!(g->path = strdup(strcmp(path, "-") == 0 ? "stdin" : path))) {
		free(g);
		return sa_fail(SA_EINTERNAL, "out of memory");
	}
	if (strcmp(path, "-") != 0) {
		if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
			rc = sa_fail(SA_ENOINPUT, "%s: %s", path, strerror(errno));
			goto fail;
		}
		if (fstat(fd, &st) != 0) {
			rc = sa_fail(SA_ENOINPUT, "%s: %s", path, strerror(errno));
			goto fail;
		}
		if (S_ISDIR(st.st_mode)) {
			rc = sa_fail(SA_ENOINPUT, "%s: %s", path, strerror(EISDIR));
			goto fail;
		}
	}
	if (fd >= 0 && S_ISREG(st.st_mode) && st.st_size > 0) {
		void *m;
		if ((uint64_t)st.st_size > SIZE_MAX) {
			rc = sa_fail(SA_EDATA, "%s: too large", path);
			goto fail;
		}
		m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
		if (m == MAP_FAILED) {
			rc = sa_fail(SA_EIO, "%s: %s", path, strerror(errno));
			goto fail;
		}
		g->base = m;
		g->size = (size_t)st.st_size;
		g->mapped = 1;
	} else {
		/* a pipe, stdin, or an empty file: read it whole */
		char *data;
		size_t len;
		if (fd >= 0) {
			close(fd);
			fd = -1;
		}
		if ((rc = sa_file_read(path, &data, &len)) != SA_OK)
			goto fail;
		g->base = (const uint8_t *)data;
		g->size = len;
	}
	if (fd >= 0)
		close(fd);
	fd = -1;
	if ((rc = parse(g)) != SA_OK)
		goto fail;
	*out = g;
	return SA_OK;
fail:
	if (fd >= 0)
		close(fd);
	sa_gguf_close(g);
	return rc;
}

void
sa_gguf_close(sa_gguf *g)
{
	if (!g)
		return;
	if (g->mapped)
		munmap((void *)g->base, g->size);
	else
		free((void *)g->base);
	free(g->kv);
	free(g->kv_index.slot);
	free(g->tensors);
	free(g->names);
	free(g->tensor_index.slot);
	free(g->path);
	free(g);
}

const char *
sa_gguf_path(const sa_gguf *g)
{
	return g->path;
}

uint32_t
sa_gguf_version(const sa_gguf *g)
{
	return g->version;
}

/* --------------------------------------------------------------- getters */

static int
missing(const sa_gguf *g, const char *key)
{
	return sa_fail(SA_EDATA, "%s: missing key %s", g->path, key);
}

static int
wrong_type(const sa_gguf *g, const gguf_kv *kv, const char *want)
{
	return sa_fail(SA_EDATA, "%s: key %.*s is %s, expected %s", g->path,
	    (int)kv->key.n, kv->key.s, value_type_name(kv->type), want);
}

int
sa_gguf_has(const sa_gguf *g, const char *key)
{
	return find_kv(g, key) != NULL;
}

/* Any integer value as a sign flag and magnitude, so every range check
 * is exact. */
static int
get_int(const sa_gguf *g, const char *key, int *neg, uint64_t *mag)
{
	const gguf_kv *kv = find_kv(g, key);
	int64_t s;

	if (!kv)
		return missing(g, key);
	*neg = 0;
	switch (kv->type) {
	case SA_GGUF_U8: *mag = kv->raw[0]; return SA_OK;
	case SA_GGUF_U16: *mag = (uint16_t)(kv->raw[0] | kv->raw[1] << 8); return SA_OK;
	case SA_GGUF_U32: *mag = le32(kv->raw); return SA_OK;
	case SA_GGUF_U64: *mag = le64(kv->raw); return SA_OK;
	case SA_GGUF_I8: s = (int8_t)kv->raw[0]; break;
	case SA_GGUF_I16: s = (int16_t)(uint16_t)(kv->raw[0] | kv->raw[1] << 8); break;
	case SA_GGUF_I32: s = (int32_t)le32(kv->raw); break;
	case SA_GGUF_I64: s = (int64_t)le64(kv->raw); break;
	default:
		return wrong_type(g, kv, "an integer");
	}
	*neg = s < 0;
	*mag = s < 0 ? -(uint64_t)s : (uint64_t)s;
	return SA_OK;
}

static int
out_of_range(const sa_gguf *g, const char *key, int neg, uint64_t mag)
{
	return sa_fail(SA_EDATA, "%s: key %s: value %s%llu out of range", g->path, key,
	    neg ? "-" : "", (unsigned long long)mag);
}

int
sa_gguf_get_u32(const sa_gguf *g, const char *key, uint32_t *v)
{
	uint64_t mag;
	int neg, rc;

	if ((rc = get_int(g, key, &neg, &mag)) != SA_OK)
		return rc;
	if ((neg && mag) || mag > UINT32_MAX)
		return out_of_range(g, key, neg, mag);
	*v = (uint32_t)mag;
	return SA_OK;
}

int
sa_gguf_get_u64(const sa_gguf *g, const char *key, uint64_t *v)
{
	uint64_t mag;
	int neg, rc;

	if ((rc = get_int(g, key, &neg, &mag)) != SA_OK)
		return rc;
	if (neg && mag)
		return out_of_range(g, key, neg, mag);
	*v = mag;
	return SA_OK;
}

int
sa_gguf_get_i64(const sa_gguf *g, const char *key, int64_t *v)
{
	uint64_t mag;
	int neg, rc;

	if ((rc = get_int(g, key, &neg, &mag)) != SA_OK)
		return rc;
	if (neg ? mag > (uint64_t)INT64_MAX + 1 : mag > (uint64_t)INT64_MAX)
		return out_of_range(g, key, neg, mag);
	*v = neg ? (int64_t)(0 - mag) : (int64_t)mag;
	return SA_OK;
}

int
sa_gguf_get_f32(const sa_gguf *g, const char *key, float *v)
{
	const gguf_kv *kv = find_kv(g, key);

	if (!kv)
		return missing(g, key);
	if (kv->type == SA_GGUF_F32) {
		memcpy(v, kv->raw, 4);
	} else if (kv->type == SA_GGUF_F64) {
		double d;
		memcpy(&d, kv->raw, 8);
		*v = (float)d;
	} else {
		return wrong_type(g, kv, "a float");
	}
	return SA_OK;
}

int
sa_gguf_get_bool(const sa_gguf *g, const char *key, int *v)
{
	const gguf_kv *kv = find_kv(g, key);

	if (!kv)
		return missing(g, key);
	if (kv->type != SA_GGUF_BOOL)
		return wrong_type(g, kv, "bool");
	*v = kv->raw[0] != 0;
	return SA_OK;
}

int
sa_gguf_get_str(const sa_gguf *g, const char *key, sa_str *v)
{
	const gguf_kv *kv = find_kv(g, key);

	if (!kv)
		return missing(g, key);
	if (kv->type != SA_GGUF_STR)
		return wrong_type(g, kv, "string");
	v->n = le64(kv->raw);
	v->s = (const char *)kv->raw + 8;
	return SA_OK;
}

int
sa_gguf_str_is(const sa_gguf *g, const char *key, const char *lit)
{
	const gguf_kv *kv = find_kv(g, key);

	return kv && kv->type == SA_GGUF_STR && le64(kv->raw) == strlen(lit) &&
	    memcmp(kv->raw + 8, lit, strlen(lit)) == 0;
}

int
sa_gguf_get_strdup(const sa_gguf *g, const char *key, char **v)
{
	sa_str s;
	int rc;

	if ((rc = sa_gguf_get_str(g, key, &s)) != SA_OK)
		return rc;
	if (!(*v = sa_malloc((size_t)s.n + 1)))
		return SA_EINTERNAL;
	memcpy(*v, s.s, (size_t)s.n);
	(*v)[s.n] = '\0';
	return SA_OK;
}

int
sa_gguf_get_arr(const sa_gguf *g, const char *key, int *elem_type, uint64_t *n, const void **data)
{
	const gguf_kv *kv = find_kv(g, key);

	if (!kv)
		return missing(g, key);
	if (kv->type != SA_GGUF_ARR)
		return wrong_type(g, kv, "array");
	*elem_type = kv->elem_type;
	*n = kv->n;
	*data = kv->elems;
	return SA_OK;
}

int
sa_gguf_get_strs(const sa_gguf *g, const char *key, uint64_t *n, sa_str **v)
{
	const gguf_kv *kv = find_kv(g, key);
	const uint8_t *p;

	if (!kv)
		return missing(g, key);
	if (kv->type != SA_GGUF_ARR || kv->elem_type != SA_GGUF_STR)
		return sa_fail(SA_EDATA, "%s: key %s is not an array of strings", g->path, key);
	/* n strings of >= 8 bytes each were checked against the file size */
	if (!(*v = sa_malloc((size_t)kv->n * sizeof **v)))
		return SA_EINTERNAL;
	p = kv->elems;
	for (uint64_t i = 0; i < kv->n; i++) {
		(*v)[i].n = le64(p);
		(*v)[i].s = (const char *)p + 8;
		p += 8 + (*v)[i].n;
	}
	*n = kv->n;
	return SA_OK;
}

uint64_t
sa_gguf_n_kv(const sa_gguf *g)
{
	return g->n_kv;
}

sa_str
sa_gguf_kv_key(const sa_gguf *g, uint64_t i)
{
	sa_str none = { "", 0 };
	return i < g->n_kv ? g->kv[i].key : none;
}

int
sa_gguf_kv_type(const sa_gguf *g, uint64_t i)
{
	return i < g->n_kv ? g->kv[i].type : -1;
}

uint64_t
sa_gguf_n_tensors(const sa_gguf *g)
{
	return g->n_tensors;
}

const sa_tensor_info *
sa_gguf_tensor_at(const sa_gguf *g, uint64_t i)
{
	return i < g->n_tensors ? &g->tensors[i] : NULL;
}

const sa_tensor_info *
sa_gguf_tensor(const sa_gguf *g, const char *name)
{
	int64_t i;

	if (!g->tensor_index.slot)
		return NULL;
	i = index_find(&g->tensor_index, name, strlen(name), tensor_name, g, NULL);
	return i < 0 ? NULL : &g->tensors[i];
}

/* ---------------------------------------------------------------- writer */

typedef struct wkv {
	char *key;
	int type;
	uint8_t *val;      /* encoded value, as it goes after the type field */
	size_t len;
} wkv;

typedef struct wtensor {
	char *name;
	int type, n_dims;
	int64_t ne[GGUF_MAX_DIMS];
	const void *data;
	size_t nbytes;
	uint64_t offset;
} wtensor;

struct sa_gguf_writer {
	wkv *kv;
	size_t n_kv, cap_kv;
	wtensor *t;
	size_t n_t, cap_t;
};

sa_gguf_writer *
sa_gguf_writer_new(void)
{
	return sa_calloc(1, sizeof(sa_gguf_writer));
}

void
sa_gguf_writer_free(sa_gguf_writer *w)
{
	if (!w)
		return;
	for (size_t i = 0; i < w->n_kv; i++) {
		free(w->kv[i].key);
		free(w->kv[i].val);
	}
	for (size_t i = 0; i < w->n_t; i++)
		free(w->t[i].name);
	free(w->kv);
	free(w->t);
	free(w);
}

static int
grow(void **arr, size_t *cap, size_t n, size_t elem)
{
	void *p;
	size_t c;

	if (n < *cap)
		return SA_OK;
	c = *cap ? *cap * 2 : 16;
	if (c > SIZE_MAX / elem || !(p = realloc(*arr, c * elem)))
		return sa_fail(SA_EINTERNAL, "out of memory");
	*arr = p;
	*cap = c;
	return SA_OK;
}

/* Set key to an encoded value (taking ownership of val); a key set twice
 * keeps its place and takes the new value. */
static int
set_kv(sa_gguf_writer *w, const char *key, int type, uint8_t *val, size_t len)
{
	char *k;
	int rc;

	if (!*key) {
		free(val);
		return sa_fail(SA_EINTERNAL, "empty metadata key");
	}
	for (size_t i = 0; i < w->n_kv; i++) {
		if (strcmp(w->kv[i].key, key) == 0) {
			free(w->kv[i].val);
			w->kv[i].type = type;
			w->kv[i].val = val;
			w->kv[i].len = len;
			return SA_OK;
		}
	}
	if ((rc = grow((void **)&w->kv, &w->cap_kv, w->n_kv, sizeof *w->kv)) != SA_OK) {
		free(val);
		return rc;
	}
	if (!(k = strdup(key))) {
		free(val);
		return sa_fail(SA_EINTERNAL, "out of memory");
	}
	w->kv[w->n_kv++] = (wkv){ k, type, val, len };
	return SA_OK;
}

static int
set_scalar(sa_gguf_writer *w, const char *key, int type, const void *v)
{
	size_t n = value_size(type);
	uint8_t *val = sa_malloc(n);

	if (!val)
		return SA_EINTERNAL;
	memcpy(val, v, n);
	return set_kv(w, key, type, val, n);
}

int
sa_gguf_writer_set_u32(sa_gguf_writer *w, const char *key, uint32_t v)
{
	return set_scalar(w, key, SA_GGUF_U32, &v);
}

int
sa_gguf_writer_set_i32(sa_gguf_writer *w, const char *key, int32_t v)
{
	return set_scalar(w, key, SA_GGUF_I32, &v);
}

int
sa_gguf_writer_set_u64(sa_gguf_writer *w, const char *key, uint64_t v)
{
	return set_scalar(w, key, SA_GGUF_U64, &v);
}

int
sa_gguf_writer_set_f32(sa_gguf_writer *w, const char *key, float v)
{
	return set_scalar(w, key, SA_GGUF_F32, &v);
}

int
sa_gguf_writer_set_bool(sa_gguf_writer *w, const char *key, int v)
{
	uint8_t b = v != 0;
	return set_scalar(w, key, SA_GGUF_BOOL, &b);
}

int
sa_gguf_writer_set_str(sa_gguf_writer *w, const char *key, const char *v)
{
	uint64_t n = strlen(v);
	uint8_t *val = sa_malloc(8 + (size_t)n);

	if (!val)
		return SA_EINTERNAL;
	memcpy(val, &n, 8);
	memcpy(val + 8, v, (size_t)n);
	return set_kv(w, key, SA_GGUF_STR, val, 8 + (size_t)n);
}

int
sa_gguf_writer_set_arr(sa_gguf_writer *w, const char *key, int elem_type, uint64_t n, const void *data)
{
	size_t es = value_size(elem_type);
	uint32_t et = (uint32_t)elem_type;
	uint8_t *val;

	if (!es)
		return sa_fail(SA_EINTERNAL, "key %s: array element type %d is not fixed-size", key, elem_type);
	if (n > (SIZE_MAX - 12) / es)
		return sa_fail(SA_EINTERNAL, "key %s: array too large", key);
	if (!(val = sa_malloc(12 + (size_t)n * es)))
		return SA_EINTERNAL;
	memcpy(val, &et, 4);
	memcpy(val + 4, &n, 8);
	if (n)
		memcpy(val + 12, data, (size_t)n * es);
	return set_kv(w, key, SA_GGUF_ARR, val, 12 + (size_t)n * es);
}

int
sa_gguf_writer_set_strs(sa_gguf_writer *w, const char *key, uint64_t n, const sa_str *v)
{
	uint32_t et = SA_GGUF_STR;
	size_t len = 12;
	uint8_t *val, *p;

	for (uint64_t i = 0; i < n; i++) {
		if (v[i].n > SIZE_MAX - 8 - len)
			return sa_fail(SA_EINTERNAL, "key %s: array too large", key);
		len += 8 + (size_t)v[i].n;
	}
	if (!(val = sa_malloc(len)))
		return SA_EINTERNAL;
	memcpy(val, &et, 4);
	memcpy(val + 4, &n, 8);
	p = val + 12;
	for (uint64_t i = 0; i < n; i++) {
		memcpy(p, &v[i].n, 8);
		if (v[i].n)
			memcpy(p + 8, v[i].s, (size_t)v[i].n);
		p += 8 + v[i].n;
	}
	return set_kv(w, key, SA_GGUF_ARR, val, len);
}

int
sa_gguf_writer_copy_kv(sa_gguf_writer *w, const sa_gguf *g, const char *key)
{
	const gguf_kv *kv = find_kv(g, key);
	uint8_t *val;

	if (!kv)
		return missing(g, key);
	/* The stored encoding is already what the writer emits. */
	if (!(val = sa_malloc((size_t)kv->raw_len)))
		return SA_EINTERNAL;
	memcpy(val, kv->raw, (size_t)kv->raw_len);
	return set_kv(w, key, kv->type, val, (size_t)kv->raw_len);
}

int
sa_gguf_writer_add_tensor(sa_gguf_writer *w, const char *name, int type,
    int n_dims, const int64_t *ne, const void *data)
{
	wtensor *t;
	uint64_t nel = 1;
	size_t len = strlen(name), bb;
	int64_t be;
	int rc;

	if (len == 0 || len >= GGUF_MAX_NAME)
		return sa_fail(SA_EINTERNAL, "tensor %s: name must have 1 to %d bytes", name,
		    GGUF_MAX_NAME - 1);
	if (n_dims < 1 || n_dims > GGUF_MAX_DIMS)
		return sa_fail(SA_EINTERNAL, "tensor %s: bad number of dimensions %d", name, n_dims);
	if (!sa_type_block(type, &be, &bb))
		return sa_fail(SA_EINTERNAL, "tensor %s: unknown type %d", name, type);
	for (int d = 0; d < n_dims; d++) {
		if (ne[d] < 1 || (uint64_t)ne[d] > (uint64_t)INT64_MAX / nel)
			return sa_fail(SA_EINTERNAL, "tensor %s: bad shape", name);
		nel *= (uint64_t)ne[d];
	}
	if (ne[0] % be)
		return sa_fail(SA_EINTERNAL, "tensor %s: rows of %lld elements do not fill %s blocks",
		    name, (long long)ne[0], sa_type_name(type));
	if (nel / (uint64_t)be > SIZE_MAX / bb)
		return sa_fail(SA_EINTERNAL, "tensor %s: too large", name);
	for (size_t i = 0; i < w->n_t; i++)
		if (strcmp(w->t[i].name, name) == 0)
			return sa_fail(SA_EINTERNAL, "duplicate tensor %s", name);
	if ((rc = grow((void **)&w->t, &w->cap_t, w->n_t, sizeof *w->t)) != SA_OK)
		return rc;
	t = &w->t[w->n_t];
	memset(t, 0, sizeof *t);
	if (!(t->name = strdup(name)))
		return sa_fail(SA_EINTERNAL, "out of memory");
	t->type = type;
	t->n_dims = n_dims;
	for (int d = 0; d < GGUF_MAX_DIMS; d++)
		t->ne[d] = d < n_dims ? ne[d] : 1;
	t->data = data;
	t->nbytes = (size_t)(nel / (uint64_t)be) * bb;
	w->n_t++;
	return SA_OK;
}

/* Output with a running byte count (for padding) and a sticky error. */
typedef struct wout {
	FILE *fp;
	uint64_t pos;
	int err;
} wout;

static void
put(wout *o, const void *p, size_t n)
{
	if (o->err || n == 0)
		return;
	if (fwrite(p, 1, n, o->fp) != n)
		o->err = errno ? errno : EIO;
	o->pos += n;
}

static void
put_u32(wout *o, uint32_t v)
{
	put(o, &v, 4);
}

static void
put_u64(wout *o, uint64_t v)
{
	put(o, &v, 8);
}

static void
put_str(wout *o, const char *s, size_t n)
{
	put_u64(o, n);
	put(o, s, n);
}

static void
pad_to(wout *o, uint64_t align)
{
	static const uint8_t zeros[256];

	while (o->pos % align) {
		uint64_t n = align - o->pos % align;
		put(o, zeros, n < sizeof zeros ? (size_t)n : sizeof zeros);
		if (o->err)
			return;
	}
}

static int
writer_alignment(const sa_gguf_writer *w, uint64_t *align)
{
	*align = GGUF_DEFAULT_ALIGNMENT;
	for (size_t i = 0; i < w->n_kv; i++) {
		uint32_t a;
		if (strcmp(w->kv[i].key, "general.alignment") != 0)
			continue;
		if (w->kv[i].type != SA_GGUF_U32)
			return sa_fail(SA_EINTERNAL, "general.alignment must be u32");
		memcpy(&a, w->kv[i].val, 4);
		if (a == 0 || (a & (a - 1)))
			return sa_fail(SA_EINTERNAL, "general.alignment %u is not a power of two", a);
		*align = a;
	}
	return SA_OK;
}

int
sa_gguf_writer_write(sa_gguf_writer *w, FILE *fp, const char *name_for_errors)
{
	wout o = { fp, 0, 0 };
	uint64_t align, off = 0;
	int rc;

	if ((rc = writer_alignment(w, &align)) != SA_OK)
		return rc;
	/* llama.cpp wants each tensor right after the previous one, padded. */
	for (size_t i = 0; i < w->n_t; i++) {
		w->t[i].offset = off;
		off += w->t[i].nbytes + (align - w->t[i].nbytes % align) % align;
	}

	errno = 0;
	put(&o, "GGUF", 4);
	put_u32(&o, 3);
	put_u64(&o, w->n_t);
	put_u64(&o, w->n_kv);
	for (size_t i = 0; i < w->n_kv; i++) {
		put_str(&o, w->kv[i].key, strlen(w->kv[i].key));
		put_u32(&o, (uint32_t)w->kv[i].type);
		put(&o, w->kv[i].val, w->kv[i].len);
	}
	for (size_t i = 0; i < w->n_t; i++) {
		const wtensor *t = &w->t[i];
		put_str(&o, t->name, strlen(t->name));
		put_u32(&o, (uint32_t)t->n_dims);
		for (int d = 0; d < t->n_dims; d++)
			put_u64(&o, (uint64_t)t->ne[d]);
		put_u32(&o, (uint32_t)t->type);
		put_u64(&o, t->offset);
	}
	pad_to(&o, align);
	for (size_t i = 0; i < w->n_t; i++) {
		put(&o, w->t[i].data, w->t[i].nbytes);
		pad_to(&o, align);
	}
	if (!o.err && fflush(fp) != 0)
		o.err = errno ? errno : EIO;
	if (!o.err && ferror(fp))
		o.err = EIO;
	if (o.err)
		return sa_fail(SA_EIO, "%s: %s", name_for_errors, strerror(o.err));
	return SA_OK;
}

int
sa_gguf_writer_save(sa_gguf_writer *w, const char *path)
{
	sa_outfile o;
	int rc;

	if ((rc = sa_outfile_open(&o, path)) != SA_OK)
		return rc;
	if ((rc = sa_gguf_writer_write(w, o.fp, strcmp(path, "-") == 0 ? "stdout" : path)) != SA_OK) {
		sa_outfile_abort(&o);
		return rc;
	}
	return sa_outfile_commit(&o);
}
