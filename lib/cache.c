/*
 * cache.c - a content-addressed cache of encodings: DIR/KEY.delta, where
 * KEY hashes everything the state of an encoding depends on, so that the
 * same demonstrations through the same model and adapter are encoded once.
 *
 * Entries are whole deltas written by sa_delta_save (temporary file in the
 * same directory, then rename): a reader sees an old entry, a new one, or
 * none, never part of one, however many processes write the same key.
 * The delta's own CRCs find an entry damaged on disk.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "sa.h"

/* Bump when the meaning of a key changes, so that old entries miss. */
#define CACHE_FORMAT "sa-cache 1"

/* --------------------------------------------------------------- SHA-256 */

/* FIPS 180-4.  A key needs a hash whose collisions nobody meets by chance
 * over any number of inputs: 64-bit FNV is not that. */
typedef struct sha256 {
	uint32_t h[8];
	uint64_t n;              /* bytes hashed */
	unsigned char buf[64];
	size_t nbuf;
} sha256;

static const uint32_t sha_k[64] = {
	0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
	0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
	0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
	0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
	0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
	0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
	0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
	0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

#define ROR(x, n) ((x) >> (n) | (x) << (32 - (n)))

static void
sha_block(sha256 *s, const unsigned char *p)
{
	uint32_t w[64], a, b, c, d, e, f, g, h;

	for (int i = 0; i < 16; i++)
		w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
		    (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
	for (int i = 16; i < 64; i++) {
		uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ w[i - 15] >> 3;
		uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ w[i - 2] >> 10;
		w[i] = w[i - 16] + s0 + w[i - 7] + s1;
	}
	a = s->h[0], b = s->h[1], c = s->h[2], d = s->h[3];
	e = s->h[4], f = s->h[5], g = s->h[6], h = s->h[7];
	for (int i = 0; i < 64; i++) {
		uint32_t t1 = h + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + sha_k[i] + w[i];
		uint32_t t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
		h = g, g = f, f = e, e = d + t1;
		d = c, c = b, b = a, a = t1 + t2;
	}
	s->h[0] += a, s->h[1] += b, s->h[2] += c, s->h[3] += d;
	s->h[4] += e, s->h[5] += f, s->h[6] += g, s->h[7] += h;
}

static void
sha_init(sha256 *s)
{
	static const uint32_t h0[8] = {
		0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
		0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
	};
	memcpy(s->h, h0, sizeof h0);
	s->n = 0;
	s->nbuf = 0;
}

static void
sha_add(sha256 *s, const void *data, size_t n)
{
	const unsigned char *p = data;

	s->n += n;
	if (s->nbuf) {
		size_t take = 64 - s->nbuf < n ? 64 - s->nbuf : n;
		memcpy(s->buf + s->nbuf, p, take);
		s->nbuf += take;
		p += take;
		n -= take;
		if (s->nbuf < 64)
			return;
		sha_block(s, s->buf);
		s->nbuf = 0;
	}
	for (; n >= 64; p += 64, n -= 64)
		sha_block(s, p);
	memcpy(s->buf, p, n);
	s->nbuf = n;
}

static void
sha_end(sha256 *s, unsigned char out[32])
{
	uint64_t bits = s->n * 8;
	unsigned char pad[72] = { 0x80 };
	size_t npad = (s->nbuf < 56 ? 56 : 120) - s->nbuf;

	for (int i = 0; i < 8; i++)
		pad[npad + i] = (unsigned char)(bits >> (56 - 8 * i));
	sha_add(s, pad, npad + 8);
	for (int i = 0; i < 8; i++)
		for (int j = 0; j < 4; j++)
			out[4 * i + j] = (unsigned char)(s->h[i] >> (24 - 8 * j));
}

/* A field of the key: its length first, so no two sequences of fields
 * hash the same bytes. */
static void
sha_field(sha256 *s, const void *data, size_t n)
{
	unsigned char len[8];

	for (int i = 0; i < 8; i++)
		len[i] = (unsigned char)((uint64_t)n >> (8 * i));
	sha_add(s, len, 8);
	sha_add(s, data, n);
}

static void
sha_u64(sha256 *s, uint64_t v)
{
	unsigned char b[8];

	for (int i = 0; i < 8; i++)
		b[i] = (unsigned char)(v >> (8 * i));
	sha_field(s, b, 8);
}

/* ------------------------------------------------------------ directory */

const char *
sa_cache_dir(const char *dir)
{
	const char *env = getenv("SA_CACHE_DIR");

	if (dir && *dir)
		return dir;
	return env && *env ? env : NULL;
}

char *
sa_cache_default_dir(void)
{
	const char *env = getenv("SA_CACHE_DIR"), *xdg = getenv("XDG_CACHE_HOME");
	const char *home = getenv("HOME");
	char *p = NULL;

	if (env && *env)
		p = strdup(env);
	else if (xdg && *xdg == '/' && asprintf(&p, "%s/sa", xdg) < 0)
		p = NULL;
	else if (!(xdg && *xdg == '/') && home && *home && asprintf(&p, "%s/.cache/sa", home) < 0)
		p = NULL;
	if (!p)
		sa_fail(SA_EUSAGE, "no cache directory: set SA_CACHE_DIR or HOME");
	return p;
}

static int
is_hex(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return 0;
	return 1;
}

int
sa_cache_name_kind(const char *name)
{
	size_t n = strlen(name);

	/* KEY.delta */
	if (n == SA_CACHE_KEY_LEN + 6 && is_hex(name, SA_CACHE_KEY_LEN) &&
	    !strcmp(name + SA_CACHE_KEY_LEN, ".delta"))
		return 1;
	/* .KEY.delta.XXXXXX, sa_outfile's temporary name */
	if (n == 1 + SA_CACHE_KEY_LEN + 6 + 7 && name[0] == '.' && is_hex(name + 1, SA_CACHE_KEY_LEN) &&
	    !strncmp(name + 1 + SA_CACHE_KEY_LEN, ".delta.", 7))
		return 2;
	/* .KEY.lock, sa_cache_lock's */
	if (n == 1 + SA_CACHE_KEY_LEN + 5 && name[0] == '.' && is_hex(name + 1, SA_CACHE_KEY_LEN) &&
	    !strcmp(name + 1 + SA_CACHE_KEY_LEN, ".lock"))
		return 2;
	return 0;
}

/* A temporary file older than this belongs to a process that died. */
#define STALE_TMP_SECONDS 3600

static int
by_age(const void *x, const void *y)
{
	const sa_cache_file *a = x, *b = y;

	if (a->mtime != b->mtime)
		return a->mtime < b->mtime ? -1 : 1;
	return strcmp(a->name, b->name);
}

int
sa_cache_scan(sa_cache_file **out, int *n, const char *dir, int must_exist)
{
	DIR *dp = opendir(dir);
	struct dirent *e;
	sa_cache_file *v = NULL;
	int cap = 0, rc = SA_OK;

	*out = NULL;
	*n = 0;
	if (!dp) {
		if (errno == ENOENT && !must_exist)
			return SA_OK;
		return sa_fail(SA_ENOINPUT, "%s: %s", dir, strerror(errno));
	}
	while ((errno = 0, e = readdir(dp))) {
		int kind = sa_cache_name_kind(e->d_name);
		char path[4096];
		struct stat st;
		sa_cache_file *w;

		if (!kind)
			continue;
		snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
		if (lstat(path, &st) != 0 || !S_ISREG(st.st_mode))
			continue;   /* gone meanwhile, or not ours */
		if (*n == cap) {
			if (!(w = realloc(v, (size_t)(cap = cap ? 2 * cap : 64) * sizeof *v))) {
				rc = sa_fail(SA_EINTERNAL, "out of memory");
				break;
			}
			v = w;
		}
		if (!(v[*n].name = strdup(e->d_name))) {
			rc = sa_fail(SA_EINTERNAL, "out of memory");
			break;
		}
		v[*n].size = st.st_size;
		v[*n].mtime = st.st_mtime;
		v[*n].kind = kind;
		(*n)++;
	}
	if (rc == SA_OK && errno)
		rc = sa_fail(SA_EIO, "%s: %s", dir, strerror(errno));
	closedir(dp);
	if (rc != SA_OK) {
		sa_cache_scan_free(v, *n);
		*n = 0;
		return rc;
	}
	if (*n > 0)   /* an empty directory leaves v NULL, which qsort must not see */
		qsort(v, (size_t)*n, sizeof *v, by_age);
	*out = v;
	return SA_OK;
}

void
sa_cache_scan_free(sa_cache_file *v, int n)
{
	for (int i = 0; i < n; i++)
		free(v[i].name);
	free(v);
}

void
sa_cache_select(const sa_cache_file *v, int n, int all, double max_age, double max_size,
    int64_t now, char *drop)
{
	long long total = 0;

	for (int i = 0; i < n; i++) {
		double age = difftime((time_t)now, (time_t)v[i].mtime);
		drop[i] = 0;
		if (all)
			drop[i] = 1;
		else if (v[i].kind == 2)
			drop[i] = age > STALE_TMP_SECONDS;
		else if (max_age >= 0 && age > max_age)
			drop[i] = 1;
		if (v[i].kind == 1 && !drop[i])
			total += v[i].size;
	}
	/* Oldest use first: v is in that order. */
	for (int i = 0; max_size >= 0 && total > max_size && i < n; i++)
		if (v[i].kind == 1 && !drop[i]) {
			drop[i] = 1;
			total -= v[i].size;
		}
}

/* mkdir -p */
static int
make_dirs(const char *dir)
{
	char *p = strdup(dir);
	struct stat st;

	if (!p)
		return sa_fail(SA_EINTERNAL, "out of memory");
	for (char *s = p + 1; ; s++) {
		if (*s && *s != '/')
			continue;
		char c = *s;
		*s = 0;
		if (mkdir(p, 0777) != 0 && errno != EEXIST) {
			int e = errno;
			free(p);
			return sa_fail(SA_ECANTCREAT, "%s: %s", dir, strerror(e));
		}
		*s = c;
		if (!c)
			break;
	}
	free(p);
	if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
		return sa_fail(SA_ECANTCREAT, "%s: not a directory", dir);
	return SA_OK;
}

/* DIR/KEY.delta, the entry, or DIR/.KEY.lock, its lock. */
static char *
key_path(const char *dir, const char *key, int lock)
{
	char *p;

	if (asprintf(&p, lock ? "%s/.%s.lock" : "%s/%s.delta", dir, key) < 0) {
		sa_fail(SA_EINTERNAL, "out of memory");
		return NULL;
	}
	return p;
}

int
sa_cache_lock(const char *dir, const char *key, sa_cache_note waiting, void *ctx)
{
	struct stat held, now;
	char *path;
	int fd = -1;

	if (make_dirs(dir) != SA_OK || !(path = key_path(dir, key, 1)))
		return -1;
	for (;;) {
		if ((fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666)) < 0)
			break;
		if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
			int busy = errno == EWOULDBLOCK;
			if (busy && waiting) {
				char msg[1100];
				snprintf(msg, sizeof msg, "cache: waiting for another encoding of %s/%s.delta",
				    dir, key);
				waiting(ctx, msg);
				waiting = NULL;
			}
			if (!busy || flock(fd, LOCK_EX) != 0) {
				close(fd);
				fd = -1;
				break;
			}
		}
		/* The holder before us unlinked the file as it let go: a lock
		 * on a file no longer at path excludes nobody. */
		if (fstat(fd, &held) == 0 && stat(path, &now) == 0 &&
		    held.st_dev == now.st_dev && held.st_ino == now.st_ino)
			break;
		close(fd);
	}
	free(path);
	return fd;
}

void
sa_cache_unlock(const char *dir, const char *key, int fd)
{
	char *path;

	if (fd < 0)
		return;
	/* Unlinked while held, so that no lock files pile up; see above. */
	if ((path = key_path(dir, key, 1)))
		unlink(path);
	free(path);
	close(fd);
}

/* ------------------------------------------------------------------ key */

/* The tokenizer decides the tokens, and the model fingerprint does not
 * cover it: every tokenizer.* entry goes into the key. */
static void
hash_tokenizer(sha256 *s, const sa_gguf *g)
{
	for (uint64_t i = 0; i < sa_gguf_n_kv(g); i++) {
		sa_str k = sa_gguf_kv_key(g, i);
		int type = sa_gguf_kv_type(g, i), et;
		char key[256];
		const void *data;
		uint64_t n;
		int64_t iv;
		float fv;
		int bv;
		sa_str sv;

		if (k.n < 10 || k.n >= sizeof key || memcmp(k.s, "tokenizer.", 10) != 0)
			continue;
		memcpy(key, k.s, (size_t)k.n);
		key[k.n] = 0;
		sha_field(s, key, (size_t)k.n);
		sha_u64(s, (uint64_t)type);
		if (type == SA_GGUF_ARR && sa_gguf_get_arr(g, key, &et, &n, &data) == SA_OK) {
			/* Elements as stored; for strings, their stored encoding. */
			const char *end = data;
			if (et == SA_GGUF_STR) {
				const char *p = data;
				for (uint64_t j = 0; j < n; j++) {
					uint64_t len;
					memcpy(&len, p, 8);
					p += 8 + len;
				}
				end = p;
			} else {
				static const int size[] = { 1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8 };
				end = (const char *)data + (et >= 0 && et <= 12 ? size[et] : 0) * n;
			}
			sha_u64(s, (uint64_t)et);
			sha_field(s, data, (size_t)(end - (const char *)data));
		} else if (type == SA_GGUF_STR && sa_gguf_get_str(g, key, &sv) == SA_OK) {
			sha_field(s, sv.s, (size_t)sv.n);
		} else if ((type == SA_GGUF_F32 || type == SA_GGUF_F64) && sa_gguf_get_f32(g, key, &fv) == SA_OK) {
			sha_field(s, &fv, sizeof fv);
		} else if (type == SA_GGUF_BOOL && sa_gguf_get_bool(g, key, &bv) == SA_OK) {
			sha_u64(s, (uint64_t)bv);
		} else if (sa_gguf_get_i64(g, key, &iv) == SA_OK) {
			sha_u64(s, (uint64_t)iv);
		}
	}
}

int
sa_cache_key(char key[SA_CACHE_KEY_LEN + 1], const sa_model *m, const sa_adapter *a,
    int n_ctx, const char *tmpl, char *const *files, const int *formats, int n,
    const char *stdin_data, size_t stdin_len)
{
	static const char hexd[] = "0123456789abcdef";
	unsigned char digest[32], *buf;
	sha256 s;
	int rc = SA_OK;

	if (!(buf = sa_malloc(1 << 16)))
		return SA_EINTERNAL;
	sha_init(&s);
	sha_field(&s, CACHE_FORMAT, strlen(CACHE_FORMAT));
	sha_field(&s, SA_VERSION, strlen(SA_VERSION));
	sha_u64(&s, m->fingerprint);
	sha_u64(&s, a->fingerprint);
	hash_tokenizer(&s, m->gguf);
	sha_u64(&s, (uint64_t)n_ctx);
	sha_field(&s, tmpl, strlen(tmpl));
	sha_u64(&s, (uint64_t)n);
	for (int f = 0; f < n && rc == SA_OK; f++) {
		sha_u64(&s, (uint64_t)formats[f]);
		if (!strcmp(files[f], "-")) {
			sha256 body;
			unsigned char d2[32];
			sha_init(&body);
			sha_add(&body, stdin_data, stdin_len);
			sha_end(&body, d2);
			sha_u64(&s, (uint64_t)stdin_len);
			sha_field(&s, d2, sizeof d2);
		} else {
			/* In a stream: a file need not fit in memory twice.  Its
			 * length and digest go into the key, as stdin's do. */
			FILE *fp = fopen(files[f], "rb");
			uint64_t total = 0;
			sha256 body;
			unsigned char d2[32];
			size_t got;

			if (!fp) {
				rc = sa_fail(SA_ENOINPUT, "%s: %s", files[f], strerror(errno));
				break;
			}
			sha_init(&body);
			while ((got = fread(buf, 1, 1 << 16, fp)) > 0) {
				sha_add(&body, buf, got);
				total += got;
			}
			if (ferror(fp))
				rc = sa_fail(SA_EIO, "%s: %s", files[f], strerror(errno ? errno : EIO));
			fclose(fp);
			sha_end(&body, d2);
			sha_u64(&s, total);
			sha_field(&s, d2, sizeof d2);
		}
	}
	free(buf);
	if (rc != SA_OK)
		return rc;
	sha_end(&s, digest);
	for (int i = 0; i < SA_CACHE_KEY_LEN / 2; i++) {
		key[2 * i] = hexd[digest[i] >> 4];
		key[2 * i + 1] = hexd[digest[i] & 15];
	}
	key[SA_CACHE_KEY_LEN] = 0;
	return SA_OK;
}

/* ----------------------------------------------------------- get and put */

int
sa_cache_get(const char *dir, const char *key, const sa_model *m, const sa_adapter *a,
    char *const *files, int n, sa_delta **out)
{
	char *path = key_path(dir, key, 0);
	sa_delta *d;
	int rc;

	*out = NULL;
	if (!path)
		return SA_EINTERNAL;
	if (access(path, F_OK) != 0) {
		rc = sa_fail(SA_ENOINPUT, "%s: %s", path, strerror(errno));
		free(path);
		return rc;
	}
	if ((rc = sa_delta_load(&d, path)) != SA_OK) {
		/* Damaged on disk (CRC, truncation): a miss that says why. */
		if (rc != SA_EINTERNAL)
			rc = sa_fail(SA_EDATA, "cache entry %s", sa_error());
		free(path);
		return rc;
	}
	if (d->model_fingerprint != m->fingerprint || d->adapter_fingerprint != a->fingerprint ||
	    d->n_sources != n) {
		sa_delta_free(d);
		rc = sa_fail(SA_EDATA, "cache entry %s: not an encoding of these inputs", path);
		free(path);
		return rc;
	}
	/* The key holds the inputs' bytes, not their names: name the sources
	 * as this encoding would. */
	for (int i = 0; i < n; i++) {
		char *name = strdup(strcmp(files[i], "-") ? files[i] : "stdin");
		if (!name) {
			sa_delta_free(d);
			free(path);
			return sa_fail(SA_EINTERNAL, "out of memory");
		}
		free(d->sources[i].name);
		d->sources[i].name = name;
	}
	free(d->params);
	d->params = NULL;
	free(d->adapter_path);
	d->adapter_path = NULL;
	/* Last use, for sa-cache prune; a read-only cache still serves. */
	utimensat(AT_FDCWD, path, NULL, 0);
	free(path);
	*out = d;
	return SA_OK;
}

int
sa_cache_put(const char *dir, const char *key, const sa_delta *d)
{
	char *path;
	int rc;

	if ((rc = make_dirs(dir)) != SA_OK)
		return rc;
	if (!(path = key_path(dir, key, 0)))
		return SA_EINTERNAL;
	rc = sa_delta_save(d, path);
	free(path);
	return rc;
}
