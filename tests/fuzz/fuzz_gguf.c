/*
 * fuzz_gguf.c - the GGUF reader on arbitrary bytes: open, every typed
 * getter on every key, every tensor's bounds, the tokenizer built from the
 * metadata, and a write/read round trip that must give back the same
 * metadata types and tensor bytes.
 */
#include "fuzz.h"

static void
gguf_getters(const sa_gguf *g, const char *key)
{
	uint32_t u32;
	uint64_t u64, n;
	int64_t i64;
	float f;
	int b, et;
	sa_str s, *strs;
	char *dup;
	const void *data;

	sa_gguf_get_u32(g, key, &u32);
	sa_gguf_get_u64(g, key, &u64);
	sa_gguf_get_i64(g, key, &i64);
	sa_gguf_get_f32(g, key, &f);
	sa_gguf_get_bool(g, key, &b);
	if (sa_gguf_get_str(g, key, &s) == SA_OK && s.n)
		if (s.s[0] == 1 && s.s[s.n - 1] == 2)   /* touch both ends */
			fputc(0, stderr);
	if (sa_gguf_get_strdup(g, key, &dup) == SA_OK)
		free(dup);
	sa_gguf_get_arr(g, key, &et, &n, &data);
	if (sa_gguf_get_strs(g, key, &n, &strs) == SA_OK) {
		size_t sum = 0;
		for (uint64_t i = 0; i < n; i++)
			if (strs[i].n)
				sum += (unsigned char)strs[i].s[0] + (unsigned char)strs[i].s[strs[i].n - 1];
		if (sum == 1)
			fputc(0, stderr);
		free(strs);
	}
}

static void
gguf_vocab(const sa_gguf *g)
{
	static const char text[] = " Hello world, héllo\n\t 123 <s></s>";
	sa_vocab *v;
	int *toks, n;
	char *back, piece[64];
	size_t len;

	if (sa_vocab_load(&v, g) != SA_OK)
		return;
	if (sa_tokenize(v, text, sizeof text - 1, 1, &toks, &n) == SA_OK) {
		if (sa_detokenize(v, toks, n, &back, &len) == SA_OK)
			free(back);
		free(toks);
	}
	for (int i = 0; i < sa_vocab_size(v) && i < 512; i++) {
		sa_token_to_piece(v, i, piece, sizeof piece);
		sa_vocab_is_eog(v, i);
	}
	sa_vocab_free(v);
}

/* Copy every entry and tensor through the writer and read it back. */
static void
gguf_roundtrip(const sa_gguf *g)
{
	sa_gguf_writer *w = sa_gguf_writer_new();
	sa_gguf *h = NULL;
	char *buf = NULL, path[64];
	size_t len = 0, n_kv = 0;
	FILE *fp;
	int fd, rc = SA_OK;

	if (!w)
		abort();
	for (uint64_t i = 0; i < sa_gguf_n_kv(g) && rc == SA_OK; i++) {
		sa_str k = sa_gguf_kv_key(g, i);
		char key[256];
		if (k.n == 0 || k.n >= sizeof key || memchr(k.s, 0, k.n))
			continue;
		memcpy(key, k.s, k.n);
		key[k.n] = '\0';
		/* the writer takes only a u32 alignment; the reader any integer */
		if (strcmp(key, "general.alignment") == 0)
			continue;
		rc = sa_gguf_writer_copy_kv(w, g, key);
		n_kv++;
	}
	for (uint64_t i = 0; i < sa_gguf_n_tensors(g) && rc == SA_OK; i++) {
		const sa_tensor_info *t = sa_gguf_tensor_at(g, i);
		rc = sa_gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data);
	}
	if (rc != SA_OK) {
		fprintf(stderr, "writer refused what the reader took: %s\n", sa_error());
		abort();
	}
	if (!(fp = open_memstream(&buf, &len)))
		abort();
	if (sa_gguf_writer_write(w, fp, "memory") != SA_OK)
		abort();
	fclose(fp);
	sa_gguf_writer_free(w);
	if (fuzz_path((const uint8_t *)buf, len, path, &fd) != 0)
		abort();
	if (sa_gguf_open(&h, path) != SA_OK) {
		fprintf(stderr, "written file does not read back: %s\n", sa_error());
		abort();
	}
	if (sa_gguf_n_kv(h) != n_kv || sa_gguf_n_tensors(h) != sa_gguf_n_tensors(g))
		abort();
	for (uint64_t i = 0; i < sa_gguf_n_tensors(g); i++) {
		const sa_tensor_info *a = sa_gguf_tensor_at(g, i), *b = sa_gguf_tensor_at(h, i);
		if (strcmp(a->name, b->name) || a->type != b->type || a->nbytes != b->nbytes ||
		    memcmp(a->ne, b->ne, sizeof a->ne) || memcmp(a->data, b->data, a->nbytes))
			abort();
	}
	sa_gguf_close(h);
	fuzz_path_close(fd);
	free(buf);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	sa_gguf *g;
	char path[64];
	int fd, rc;

	if (fuzz_path(data, size, path, &fd) != 0)
		return 0;
	rc = sa_gguf_open(&g, path);
	fuzz_check_status(rc, SA_EDATA, "sa_gguf_open");
	if (rc == SA_OK) {
		sa_gguf_version(g);
		for (uint64_t i = 0; i < sa_gguf_n_kv(g); i++) {
			sa_str k = sa_gguf_kv_key(g, i);
			char key[256];
			sa_gguf_kv_type(g, i);
			if (k.n >= sizeof key || memchr(k.s, 0, k.n))
				continue;
			memcpy(key, k.s, k.n);
			key[k.n] = '\0';
			if (!sa_gguf_has(g, key))
				abort();
			gguf_getters(g, key);
		}
		gguf_getters(g, "no.such.key");
		for (uint64_t i = 0; i < sa_gguf_n_tensors(g); i++) {
			const sa_tensor_info *t = sa_gguf_tensor_at(g, i);
			const unsigned char *p = t->data;
			if (sa_gguf_tensor(g, t->name) != t)
				abort();
			if (t->nbytes && (p[0] == 1 && p[t->nbytes - 1] == 2))
				fputc(0, stderr);
			if (sa_type_supported(t->type) && t->nbytes <= 4096) {
				float row[4096];
				int64_t n = t->ne[0] <= 4096 ? t->ne[0] : 0;
				if (n && sa_type_row_size(t->type, n) <= t->nbytes)
					sa_row_to_f32(t->type, t->data, row, n);
			}
		}
		sa_gguf_tensor_at(g, sa_gguf_n_tensors(g));
		gguf_vocab(g);
		gguf_roundtrip(g);
		sa_gguf_close(g);
	}
	fuzz_path_close(fd);
	return 0;
}
