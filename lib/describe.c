/*
 * describe.c - what a file is (sa-info): a delta's header, or for a GGUF
 * file its kind (model, StreamAdapter adapter, LoRA adapter, vocabulary)
 * with the metadata that matters here, its tensor count and types, and the
 * fingerprint that binds adapters and deltas to it.  Models and adapters
 * are described only once their own loaders accept them.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sa.h"

/* -------------------------------------------------- output of one file */

/* Human "key: value" lines or the members of one JSON object. */
typedef struct out {
	FILE *fp;
	int json;
	int n;      /* members written */
} out;

static void
key(out *o, const char *k)
{
	if (o->json) {
		fputs(o->n++ ? "," : "{", o->fp);
		sa_json_put_str(o->fp, k, strlen(k));
		fputc(':', o->fp);
	} else {
		/* the JSON key with spaces, as sa_delta_print writes them */
		char label[64];
		snprintf(label, sizeof label, "%s:", k);
		for (char *p = label; *p; p++)
			if (*p == '_')
				*p = ' ';
		fprintf(o->fp, "%-21s", label);
	}
}

static void
end_value(out *o)
{
	if (!o->json)
		fputc('\n', o->fp);
}

static void
put_str(out *o, const char *k, const char *v, size_t n)
{
	key(o, k);
	if (o->json)
		sa_json_put_str(o->fp, v, n);
	else
		/* One line per key, whatever the file holds. */
		for (size_t i = 0; i < n; i++) {
			unsigned char ch = (unsigned char)v[i];
			if (ch < 0x20 || ch == 0x7f)
				fprintf(o->fp, "\\x%02x", ch);
			else
				fputc(ch, o->fp);
		}
	end_value(o);
}

static void
put_cstr(out *o, const char *k, const char *v)
{
	put_str(o, k, v, strlen(v));
}

static void
put_int(out *o, const char *k, long long v)
{
	key(o, k);
	fprintf(o->fp, "%lld", v);
	end_value(o);
}

static void
put_num(out *o, const char *k, double v)
{
	key(o, k);
	fprintf(o->fp, "%.9g", v);
	end_value(o);
}

static void
put_hex(out *o, const char *k, uint64_t v)
{
	char buf[17];

	snprintf(buf, sizeof buf, "%016llx", (unsigned long long)v);
	put_cstr(o, k, buf);
}

static void
put_mats(out *o, uint32_t mats)
{
	int first = 1;

	key(o, "matrices");
	if (o->json)
		fputc('[', o->fp);
	for (int m = 0; m < SA_NMAT; m++) {
		if (!sa_adapted(mats, m))
			continue;
		fprintf(o->fp, o->json ? "%s\"%s\"" : "%s%s", first ? "" : ",", sa_mat_name(m));
		first = 0;
	}
	if (o->json)
		fputc(']', o->fp);
	end_value(o);
}

static void
finish(out *o)
{
	if (o->json)
		fputs(o->n ? "}\n" : "{}\n", o->fp);
}

/* ----------------------------------------------------------------- GGUF */

/* A string value, or NULL. */
static int
get_sa_str(const sa_gguf *g, const char *k, sa_str *v)
{
	return sa_gguf_has(g, k) && sa_gguf_get_str(g, k, v) == SA_OK;
}

static void
put_gguf_str(out *o, const char *label, const sa_gguf *g, const char *k)
{
	sa_str s;

	if (get_sa_str(g, k, &s))
		put_str(o, label, s.s, (size_t)s.n);
}

/* "F32 12, F16 9", or {"F32":12,"F16":9}. */
static void
put_tensor_types(out *o, const sa_gguf *g)
{
	enum { NT = 128 };
	uint64_t count[NT + 1] = { 0 }, n = sa_gguf_n_tensors(g);
	int first = 1;

	for (uint64_t i = 0; i < n; i++) {
		int t = sa_gguf_tensor_at(g, i)->type;
		count[t >= 0 && t < NT ? t : NT]++;
	}
	put_int(o, "tensors", (long long)n);
	key(o, "tensor_types");
	if (o->json)
		fputc('{', o->fp);
	for (int t = 0; t <= NT; t++) {
		const char *name = t < NT ? sa_type_name(t) : "other";
		if (!count[t])
			continue;
		if (o->json) {
			fputs(first ? "" : ",", o->fp);
			sa_json_put_str(o->fp, name, strlen(name));
			fprintf(o->fp, ":%llu", (unsigned long long)count[t]);
		} else {
			fprintf(o->fp, "%s%s %llu", first ? "" : ", ", name, (unsigned long long)count[t]);
		}
		first = 0;
	}
	if (o->json)
		fputc('}', o->fp);
	else if (first)
		fputc('-', o->fp);
	end_value(o);
}

/* How a GGUF file's description starts: its kind, version and architecture. */
static void
put_head(out *o, const sa_gguf *g, const char *kind)
{
	put_cstr(o, "kind", kind);
	put_int(o, "gguf_version", sa_gguf_version(g));
	put_gguf_str(o, "architecture", g, "general.architecture");
}

static int
describe_model(out *o, const sa_gguf *g, const char *path)
{
	const sa_config *c;
	sa_model *m;
	int rc;

	/* The model's own loader, first: a file it refuses is not
	 * described; what sa-run would see, and its fingerprint. */
	if ((rc = sa_model_load(&m, path)) != SA_OK)
		return rc;
	c = &m->cfg;
	put_head(o, g, "model");
	put_gguf_str(o, "name", g, "general.name");
	put_int(o, "n_layer", c->n_layer);
	put_int(o, "d_model", c->d_model);
	put_int(o, "n_head", c->n_head);
	put_int(o, "n_head_kv", c->n_head_kv);
	put_int(o, "d_head", c->d_head);
	put_int(o, "d_ff", c->d_ff);
	put_int(o, "n_vocab", c->n_vocab);
	put_int(o, "n_ctx", c->n_ctx);
	put_hex(o, "fingerprint", m->fingerprint);
	sa_model_free(m);
	put_tensor_types(o, g);
	finish(o);
	return SA_OK;
}

static int
describe_adapter(out *o, const sa_gguf *g, const char *path)
{
	sa_adapter *a;
	sa_str s;
	int rc;

	if (!sa_gguf_has(g, "streamadapter.version")) {
		float alpha;
		put_head(o, g, get_sa_str(g, "adapter.type", &s) && s.n == 4 &&
		    memcmp(s.s, "lora", 4) == 0 ? "lora adapter" : "adapter");
		put_gguf_str(o, "name", g, "general.name");
		put_gguf_str(o, "adapter_type", g, "adapter.type");
		if (sa_gguf_has(g, "adapter.lora.alpha") &&
		    sa_gguf_get_f32(g, "adapter.lora.alpha", &alpha) == SA_OK)
			put_num(o, "lora_alpha", alpha);
		put_tensor_types(o, g);
		finish(o);
		return SA_OK;
	}
	/* Loading checks every shape, every value and the fingerprint. */
	if ((rc = sa_adapter_load(&a, path)) != SA_OK)
		return rc;
	put_head(o, g, "adapter");
	put_gguf_str(o, "base_model", g, "streamadapter.base_model");
	put_hex(o, "model_fingerprint", a->model_fingerprint);
	put_hex(o, "fingerprint", a->fingerprint);
	put_int(o, "n_layer", a->n_layer);
	put_int(o, "n_head_kv", a->n_head_kv);
	put_int(o, "d_head", a->d_head);
	put_cstr(o, "mapping", a->mapping == SA_MAPPING_LSQ ? "lsq" : "pool");
	put_int(o, "rank", a->rank);
	if (a->mapping == SA_MAPPING_LSQ) {
		put_int(o, "d_key", a->d_key);
		put_num(o, "lambda", a->lambda);
		put_int(o, "value_offset", a->value_offset);
		put_cstr(o, "key_source", a->key_source == SA_KEYS_INPUT ? "input" : "keys");
	} else {
		put_int(o, "chunk", a->chunk);
	}
	put_cstr(o, "records", a->records == SA_RECORDS_ALONE ? "alone" : "packed");
	put_mats(o, a->mats);
	put_tensor_types(o, g);
	finish(o);
	sa_adapter_free(a);
	return SA_OK;
}

static int
describe_gguf(out *o, const char *path)
{
	sa_gguf *g;
	sa_str type;
	int rc;

	if ((rc = sa_gguf_open(&g, path)) != SA_OK)
		return rc;
	if (!get_sa_str(g, "general.type", &type) || (type.n == 5 && memcmp(type.s, "model", 5) == 0)) {
		if (sa_gguf_n_tensors(g) == 0 && sa_gguf_has(g, "tokenizer.ggml.tokens")) {
			uint64_t n = 0;
			sa_str *toks = NULL;
			put_head(o, g, "vocab");
			put_gguf_str(o, "name", g, "general.name");
			put_gguf_str(o, "tokenizer", g, "tokenizer.ggml.model");
			if (sa_gguf_get_strs(g, "tokenizer.ggml.tokens", &n, &toks) == SA_OK)
				put_int(o, "n_vocab", (long long)n);
			free(toks);
			put_tensor_types(o, g);
			finish(o);
		} else {
			rc = describe_model(o, g, path);
		}
	} else if (type.n == 7 && memcmp(type.s, "adapter", 7) == 0) {
		rc = describe_adapter(o, g, path);
	} else {
		put_cstr(o, "kind", "gguf");
		put_int(o, "gguf_version", sa_gguf_version(g));
		put_str(o, "general_type", type.s, (size_t)type.n);
		put_gguf_str(o, "architecture", g, "general.architecture");
		put_gguf_str(o, "name", g, "general.name");
		put_tensor_types(o, g);
		finish(o);
	}
	sa_gguf_close(g);
	return rc;
}

/* ---------------------------------------------------------------- delta */

static int
describe_delta(out *o, FILE *fp, const char *name)
{
	sa_delta *d;
	char *buf = NULL;
	size_t n = 0;
	FILE *mem;
	int rc;

	if ((rc = sa_delta_read(&d, fp, name)) != SA_OK)
		return rc;
	if (getc(fp) != EOF) {
		sa_delta_free(d);
		return sa_fail(SA_EDATA, "%s: data after the end of the delta", name);
	}
	/* The library prints the header; the file's name goes in front. */
	if (!(mem = open_memstream(&buf, &n)))
		return sa_fail(SA_EINTERNAL, "out of memory");
	sa_delta_print(d, mem, o->json);
	fclose(mem);
	sa_delta_free(d);
	if (o->json)
		fprintf(o->fp, ",%s", n > 0 && buf[0] == '{' ? buf + 1 : "}\n");
	else
		fwrite(buf, 1, n, o->fp);
	free(buf);
	return SA_OK;
}

/* ------------------------------------------------------------ dispatch */

/* Messages about the copy of stdin should name stdin. */
static void
rename_in_error(const char *from, const char *to)
{
	const char *msg = sa_error(), *at = strstr(msg, from);

	if (at)
		sa_fail(SA_OK, "%.*s%s%s", (int)(at - msg), msg, to, at + strlen(from));
}

/* stdin as a regular file we can map: copy it to a temporary file. */
static int
stdin_to_file(const char *data, size_t len, char *tmpl)
{
	int fd = mkstemp(tmpl);
	size_t off = 0;

	if (fd < 0)
		return sa_fail(SA_ECANTCREAT, "%s: %s", tmpl, strerror(errno));
	while (off < len) {
		ssize_t w = write(fd, data + off, len - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			int e = errno;
			close(fd);
			unlink(tmpl);
			return sa_fail(SA_EIO, "%s: %s", tmpl, strerror(e ? e : EIO));
		}
		off += (size_t)w;
	}
	close(fd);
	return SA_OK;
}

int
sa_file_describe(FILE *dst, const char *path, int json)
{
	out ob = { dst, json, 0 }, *o = &ob;
	const char *name = strcmp(path, "-") ? path : "stdin";
	unsigned char magic[8] = { 0 };
	size_t got;
	int rc;

	put_cstr(o, "file", name);
	if (strcmp(path, "-") == 0) {
		char *data, tmp[4096];
		const char *dir = getenv("TMPDIR");
		size_t len;
		FILE *fp;

		if ((rc = sa_file_read("-", &data, &len)) != SA_OK)
			return rc;
		if (len >= 8 && memcmp(data, "SADELTA", 8) == 0) {
			if (!(fp = fmemopen(data, len, "rb"))) {
				free(data);
				return sa_fail(SA_EINTERNAL, "out of memory");
			}
			rc = describe_delta(o, fp, name);
			fclose(fp);
		} else if (len >= 4 && memcmp(data, "GGUF", 4) == 0) {
			snprintf(tmp, sizeof tmp, "%s/sa-info.XXXXXX", dir && *dir ? dir : "/tmp");
			if ((rc = stdin_to_file(data, len, tmp)) == SA_OK) {
				rc = describe_gguf(o, tmp);
				unlink(tmp);
				if (rc != SA_OK)
					rename_in_error(tmp, "stdin");
			}
		} else {
			rc = sa_fail(SA_EDATA, "stdin: neither a delta nor a GGUF file");
		}
		free(data);
		return rc;
	}

	{
		FILE *fp = fopen(path, "rb");
		struct stat st;
		if (!fp)
			return sa_fail(SA_ENOINPUT, "%s: %s", path, strerror(errno));
		if (fstat(fileno(fp), &st) == 0 && S_ISDIR(st.st_mode)) {
			fclose(fp);
			return sa_fail(SA_ENOINPUT, "%s: %s", path, strerror(EISDIR));
		}
		got = fread(magic, 1, sizeof magic, fp);
		if (ferror(fp)) {
			int e = errno;
			fclose(fp);
			return sa_fail(SA_EIO, "%s: %s", path, strerror(e ? e : EIO));
		}
		if (got == 8 && memcmp(magic, "SADELTA", 8) == 0) {
			rewind(fp);
			rc = describe_delta(o, fp, name);
			fclose(fp);
			return rc;
		}
		fclose(fp);
	}
	if (got >= 4 && memcmp(magic, "GGUF", 4) == 0)
		return describe_gguf(o, path);
	return sa_fail(SA_EDATA, "%s: neither a delta nor a GGUF file", path);
}
