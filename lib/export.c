/*
 * export.c - deltas as LoRA adapters other tools load: llama.cpp's LoRA
 * GGUF and a PEFT directory (adapter_config.json, adapter_model.safetensors).
 *
 * A delta through its adapter is Delta W = s W1 H^T W2 for each adapted
 * matrix: the LoRA pair B = s W1 H^T [d_out][r], A = W2 [r][d_in].  Several
 * deltas are summed in the state space before B is formed, which is exact;
 * summing B's and A's separately would not be (cross terms).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sa.h"

/* One adapted matrix's pair: B [d_out][r] (owned), A [r][d_in] (the adapter's W2). */
typedef struct lora_pair {
	int layer, mat, d_out, d_in;
	float *B;
	const float *A;
} lora_pair;

typedef struct lora {
	int rank, n;
	lora_pair *p;
} lora;

static void
free_lora(lora *L)
{
	for (int i = 0; i < L->n; i++)
		free(L->p[i].B);
	free(L->p);
	memset(L, 0, sizeof *L);
}

/* The pairs of sum_i scale[i] * delta i, for every adapted (layer, matrix). */
static int
build_lora(lora *L, const sa_model *m, const sa_adapter *a, sa_delta *const *d,
    const double *scale, int n)
{
	sa_delta *sum = NULL;
	const sa_delta *src;
	float s;
	int rc;

	memset(L, 0, sizeof *L);
	if (n < 1)
		return sa_fail(SA_EUSAGE, "no delta to export");
	if ((rc = sa_adapter_check(a, m)) != SA_OK)
		return rc;
	for (int i = 0; i < n; i++) {
		if (!isfinite(scale[i]) || fabs(scale[i]) > 3.4e38)
			return sa_fail(SA_EUSAGE, "scale %g of delta %d is not a finite float", scale[i], i + 1);
		char name[32];
		snprintf(name, sizeof name, "delta %d", i + 1);
		if ((rc = sa_binding_check(m, a, d[i], name)) != SA_OK)
			return rc;
	}
	/* One delta keeps its scale in B, as sa_delta_apply does, so that the
	 * export rounds exactly as sa-run -d FILE:S computes. */
	if (n == 1) {
		src = d[0];
		s = (float)scale[0];
	} else {
		if ((rc = sa_delta_combine(&sum, d, scale, n)) != SA_OK)
			return rc;
		src = sum;
		s = 1;
	}
	L->rank = src->rank;
	if (!(L->p = sa_calloc((size_t)src->n_layer * SA_NMAT, sizeof *L->p))) {
		sa_delta_free(sum);
		return SA_EINTERNAL;
	}
	for (int l = 0; l < src->n_layer; l++)
		for (int mat = 0; mat < SA_NMAT; mat++) {
			lora_pair *p = &L->p[L->n];
			if (!sa_adapted(src->mats, mat))
				continue;
			if ((rc = sa_delta_factors(a, src, l, mat, s, &p->B, &p->A)) != SA_OK) {
				sa_delta_free(sum);
				free_lora(L);
				return rc;
			}
			p->layer = l;
			p->mat = mat;
			p->d_out = SA_ADAPTER_MAT(a, l, mat)->d_out;
			p->d_in = SA_ADAPTER_MAT(a, l, mat)->d_in;
			L->n++;
		}
	sa_delta_free(sum);
	return SA_OK;
}

/* ------------------------------------------------------------- llama.cpp */

int
sa_export_llama(const sa_model *m, const sa_adapter *a, sa_delta *const *d,
    const double *scale, int n, const char *path)
{
	sa_gguf_writer *w;
	uint64_t tokens = 0, demos = 0;
	char hex[17], name[96];
	lora L;
	int rc;

	if ((rc = build_lora(&L, m, a, d, scale, n)) != SA_OK)
		return rc;
	if (!(w = sa_gguf_writer_new())) {
		free_lora(&L);
		return sa_fail(SA_EINTERNAL, "out of memory");
	}
	for (int i = 0; i < n; i++) {
		tokens += d[i]->n_tokens;
		demos += d[i]->n_demos;
	}
	rc = sa_gguf_writer_set_str(w, "general.type", "adapter");
	if (rc == SA_OK)
		rc = sa_gguf_writer_copy_kv(w, m->gguf, "general.architecture");
	if (rc == SA_OK)
		rc = sa_gguf_writer_set_str(w, "adapter.type", "lora");
	/* 0, not r: llama.cpp scales by user_scale * alpha / rank unless alpha
	 * is 0, and then by user_scale alone, which involves no rounding. */
	if (rc == SA_OK)
		rc = sa_gguf_writer_set_f32(w, "adapter.lora.alpha", 0.0f);
	snprintf(hex, sizeof hex, "%016llx", (unsigned long long)m->fingerprint);
	if (rc == SA_OK)
		rc = sa_gguf_writer_set_str(w, "streamadapter.export.model_fingerprint", hex);
	snprintf(hex, sizeof hex, "%016llx", (unsigned long long)a->fingerprint);
	if (rc == SA_OK)
		rc = sa_gguf_writer_set_str(w, "streamadapter.export.adapter_fingerprint", hex);
	if (rc == SA_OK)
		rc = sa_gguf_writer_set_u32(w, "streamadapter.export.deltas", (uint32_t)n);
	if (rc == SA_OK)
		rc = sa_gguf_writer_set_u64(w, "streamadapter.export.tokens", tokens);
	if (rc == SA_OK)
		rc = sa_gguf_writer_set_u64(w, "streamadapter.export.demonstrations", demos);

	for (int i = 0; rc == SA_OK && i < L.n; i++) {
		const lora_pair *p = &L.p[i];
		const sa_tensor_info *base;
		int64_t ne_a[2] = { p->d_in, L.rank }, ne_b[2] = { L.rank, p->d_out };

		/* llama.cpp's rule: base ne[0] == a ne[0], base ne[1] == b ne[1]. */
		snprintf(name, sizeof name, "blk.%d.%s.weight", p->layer, sa_mat_name(p->mat));
		base = sa_gguf_tensor(m->gguf, name);
		if (!base || base->ne[0] != p->d_in || base->ne[1] != p->d_out) {
			rc = sa_fail(SA_EDATA, "%s: no tensor %s of %d x %d for the adapter's pair",
			    sa_gguf_path(m->gguf), name, p->d_out, p->d_in);
			break;
		}
		snprintf(name, sizeof name, "blk.%d.%s.weight.lora_a", p->layer, sa_mat_name(p->mat));
		rc = sa_gguf_writer_add_tensor(w, name, SA_TYPE_F32, 2, ne_a, p->A);
		snprintf(name, sizeof name, "blk.%d.%s.weight.lora_b", p->layer, sa_mat_name(p->mat));
		if (rc == SA_OK)
			rc = sa_gguf_writer_add_tensor(w, name, SA_TYPE_F32, 2, ne_b, p->B);
	}
	if (rc == SA_OK)
		rc = sa_gguf_writer_save(w, path);
	sa_gguf_writer_free(w);
	free_lora(&L);
	return rc;
}

/* ------------------------------------------------------- q/k row order */

void
sa_rows_gguf_to_hf(const float *src, float *dst, int n_head, int d_head, int cols)
{
	int half = d_head / 2;

	for (int h = 0; h < n_head; h++)
		for (int j = 0; j < 2; j++)
			for (int i = 0; i < half; i++)
				memcpy(dst + ((size_t)h * d_head + (size_t)j * half + i) * cols,
				    src + ((size_t)h * d_head + 2 * (size_t)i + j) * cols,
				    (size_t)cols * sizeof *dst);
}

void
sa_rows_hf_to_gguf(const float *src, float *dst, int n_head, int d_head, int cols)
{
	int half = d_head / 2;

	for (int h = 0; h < n_head; h++)
		for (int j = 0; j < 2; j++)
			for (int i = 0; i < half; i++)
				memcpy(dst + ((size_t)h * d_head + 2 * (size_t)i + j) * cols,
				    src + ((size_t)h * d_head + (size_t)j * half + i) * cols,
				    (size_t)cols * sizeof *dst);
}

/* ------------------------------------------------------------------ PEFT */

/* Hugging Face module of each SA_MAT_*, under model.layers.L. */
static const char *const hf_module[SA_NMAT] = {
	"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
	"mlp.gate_proj", "mlp.up_proj", "mlp.down_proj",
};

typedef struct st_tensor {
	char name[128];
	int64_t shape[2];
	const float *data;
	uint64_t begin, end;
} st_tensor;

static int
by_name(const void *x, const void *y)
{
	return strcmp(((const st_tensor *)x)->name, ((const st_tensor *)y)->name);
}

/*
 * safetensors: u64 little-endian header length, the JSON header (padded
 * with spaces so the data starts 8-byte aligned), then the tensors'
 * little-endian bytes back to back, in the header's name order.
 */
static int
write_safetensors(FILE *fp, const char *path, st_tensor *t, int n)
{
	char *hdr = NULL;
	size_t hlen = 0;
	uint64_t off = 0, len;
	unsigned char len_le[8];
	FILE *mem;

	qsort(t, (size_t)n, sizeof *t, by_name);
	if (!(mem = open_memstream(&hdr, &hlen)))
		return sa_fail(SA_EINTERNAL, "out of memory");
	fputs("{\"__metadata__\":{\"format\":\"pt\"}", mem);
	for (int i = 0; i < n; i++) {
		t[i].begin = off;
		off += (uint64_t)t[i].shape[0] * (uint64_t)t[i].shape[1] * sizeof(float);
		t[i].end = off;
		fprintf(mem, ",\"%s\":{\"dtype\":\"F32\",\"shape\":[%lld,%lld],"
		    "\"data_offsets\":[%llu,%llu]}", t[i].name, (long long)t[i].shape[0],
		    (long long)t[i].shape[1], (unsigned long long)t[i].begin,
		    (unsigned long long)t[i].end);
	}
	fputc('}', mem);
	while ((8 + ftello(mem)) % 8)
		fputc(' ', mem);
	if (fclose(mem) != 0) {
		free(hdr);
		return sa_fail(SA_EINTERNAL, "out of memory");
	}
	len = hlen;
	for (int i = 0; i < 8; i++)
		len_le[i] = (unsigned char)(len >> (8 * i));
	fwrite(len_le, 1, 8, fp);
	fwrite(hdr, 1, hlen, fp);
	free(hdr);
	for (int i = 0; i < n; i++)
		fwrite(t[i].data, sizeof(float), (size_t)(t[i].shape[0] * t[i].shape[1]), fp);
	if (ferror(fp))
		return sa_fail(SA_EIO, "%s: %s", path, strerror(errno ? errno : EIO));
	return SA_OK;
}

static int
write_config(FILE *fp, const char *path, const lora *L, const char *base_model)
{
	uint32_t mats = 0;
	int first = 1;

	for (int i = 0; i < L->n; i++)
		mats |= 1u << L->p[i].mat;
	fputs("{\n  \"base_model_name_or_path\": ", fp);
	sa_json_put_str(fp, base_model, strlen(base_model));
	fputs(",\n  \"peft_type\": \"LORA\",\n  \"task_type\": \"CAUSAL_LM\",\n", fp);
	fprintf(fp, "  \"r\": %d,\n  \"lora_alpha\": %d,\n", L->rank, L->rank);
	fputs("  \"lora_dropout\": 0.0,\n  \"bias\": \"none\",\n  \"fan_in_fan_out\": false,\n"
	    "  \"use_rslora\": false,\n  \"use_dora\": false,\n  \"inference_mode\": true,\n"
	    "  \"target_modules\": [", fp);
	for (int m = 0; m < SA_NMAT; m++) {
		if (!sa_adapted(mats, m))
			continue;
		fprintf(fp, "%s\"%s\"", first ? "" : ", ", strchr(hf_module[m], '.') + 1);
		first = 0;
	}
	fputs("]\n}\n", fp);
	if (ferror(fp))
		return sa_fail(SA_EIO, "%s: %s", path, strerror(errno ? errno : EIO));
	return SA_OK;
}

/* Write one file of the export through fn; fsync so the rename publishes data. */
static int
write_file(const char *dir, const char *base, int (*fn)(FILE *, const char *, void *), void *ctx)
{
	char path[4096];
	FILE *fp;
	int rc;

	if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, base) >= sizeof path)
		return sa_fail(SA_ECANTCREAT, "%s: name too long", dir);
	if (!(fp = fopen(path, "wb")))
		return sa_fail(SA_ECANTCREAT, "%s: %s", path, strerror(errno));
	errno = 0;
	rc = fn(fp, path, ctx);
	if (rc == SA_OK && (fflush(fp) != 0 || fsync(fileno(fp)) != 0))
		rc = sa_fail(SA_EIO, "%s: %s", path, strerror(errno));
	if (fclose(fp) != 0 && rc == SA_OK)
		rc = sa_fail(SA_EIO, "%s: %s", path, strerror(errno));
	return rc;
}

typedef struct peft_ctx {
	const lora *L;
	const char *base_model;
	st_tensor *t;
	int n;
} peft_ctx;

static int
put_tensors(FILE *fp, const char *path, void *ctx)
{
	peft_ctx *c = ctx;
	return write_safetensors(fp, path, c->t, c->n);
}

static int
put_config(FILE *fp, const char *path, void *ctx)
{
	peft_ctx *c = ctx;
	return write_config(fp, path, c->L, c->base_model);
}

static const char *const peft_files[] = { "adapter_config.json", "adapter_model.safetensors" };

/* Remove a directory holding only files of an export (never anything else). */
static void
remove_export_dir(const char *dir)
{
	char path[4096];

	for (size_t i = 0; i < sizeof peft_files / sizeof peft_files[0]; i++) {
		if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, peft_files[i]) < sizeof path)
			unlink(path);
	}
	rmdir(dir);
}

/* 1 if dir holds nothing but the files an export writes. */
static int
only_export_files(const char *dir)
{
	DIR *dp = opendir(dir);
	struct dirent *e;
	int ok = 1;

	if (!dp)
		return 0;
	while (ok && (e = readdir(dp))) {
		int known = !strcmp(e->d_name, ".") || !strcmp(e->d_name, "..");
		for (size_t i = 0; i < sizeof peft_files / sizeof peft_files[0]; i++)
			known |= !strcmp(e->d_name, peft_files[i]);
		ok = known;
	}
	closedir(dp);
	return ok;
}

/*
 * tmp becomes dir.  An earlier export in dir is swapped out atomically
 * (renameat2 RENAME_EXCHANGE) or, where the file system cannot, moved aside
 * first; a directory holding anything else is left alone.
 */
static int
install_dir(const char *tmp, const char *dir)
{
	struct stat st;
	char old[4096];

	if (rename(tmp, dir) == 0)
		return SA_OK;
	if (errno != EEXIST && errno != ENOTEMPTY && errno != EISDIR && errno != ENOTDIR)
		return sa_fail(SA_ECANTCREAT, "%s: %s", dir, strerror(errno));
	if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
		return sa_fail(SA_ECANTCREAT, "%s: exists and is not a directory", dir);
	if (!only_export_files(dir))
		return sa_fail(SA_ECANTCREAT, "%s: exists and holds other files than an adapter's", dir);
	if (renameat2(AT_FDCWD, tmp, AT_FDCWD, dir, RENAME_EXCHANGE) == 0) {
		remove_export_dir(tmp);
		return SA_OK;
	}
	if ((size_t)snprintf(old, sizeof old, "%s.old", tmp) >= sizeof old)
		return sa_fail(SA_ECANTCREAT, "%s: name too long", dir);
	if (rename(dir, old) != 0)
		return sa_fail(SA_ECANTCREAT, "%s: %s", dir, strerror(errno));
	if (rename(tmp, dir) != 0) {
		int e = errno;
		rename(old, dir);
		return sa_fail(SA_ECANTCREAT, "%s: %s", dir, strerror(e));
	}
	remove_export_dir(old);
	return SA_OK;
}

int
sa_export_peft(const sa_model *m, const sa_adapter *a, sa_delta *const *d,
    const double *scale, int n, const char *base_model, const char *dir)
{
	char tmp[4096], clean[4096];
	const char *slash, *base;
	peft_ctx ctx = { 0 };
	float **rows = NULL;
	size_t len;
	lora L;
	int rc;

	if (!strcmp(dir, "-") || !*dir)
		return sa_fail(SA_EUSAGE, "a PEFT adapter is a directory: give its name, not '%s'", dir);
	len = strlen(dir);
	while (len > 1 && dir[len - 1] == '/')
		len--;
	if (len >= sizeof clean)
		return sa_fail(SA_ECANTCREAT, "%s: name too long", dir);
	memcpy(clean, dir, len);
	clean[len] = 0;
	slash = strrchr(clean, '/');
	base = slash ? slash + 1 : clean;
	if (!strcmp(base, ".") || !strcmp(base, "..") || !strcmp(clean, "/"))
		return sa_fail(SA_ECANTCREAT, "%s: give the adapter directory a name of its own", dir);

	if ((rc = build_lora(&L, m, a, d, scale, n)) != SA_OK)
		return rc;
	if (!(ctx.t = sa_calloc((size_t)L.n * 2, sizeof *ctx.t)) ||
	    !(rows = sa_calloc((size_t)L.n, sizeof *rows))) {
		free(ctx.t);
		free_lora(&L);
		return SA_EINTERNAL;
	}
	ctx.L = &L;
	ctx.base_model = base_model ? base_model : m->name ? m->name : "";
	for (int i = 0; i < L.n; i++) {
		const lora_pair *p = &L.p[i];
		const float *B = p->B;
		st_tensor *ta = &ctx.t[ctx.n++], *tb = &ctx.t[ctx.n++];
		int heads = p->mat == SA_MAT_Q ? m->cfg.n_head : m->cfg.n_head_kv;

		/* HF keeps q and k rows in the order before llama.cpp's RoPE
		 * permutation; qwen2 is converted without one. */
		if (m->cfg.arch == SA_ARCH_LLAMA && (p->mat == SA_MAT_Q || p->mat == SA_MAT_K)) {
			if (heads * m->cfg.d_head != p->d_out || m->cfg.d_head % 2) {
				rc = sa_fail(SA_EDATA, "layer %d %s: %d rows are not %d heads of %d",
				    p->layer, sa_mat_name(p->mat), p->d_out, heads, m->cfg.d_head);
				goto out;
			}
			if (!(rows[i] = sa_malloc((size_t)p->d_out * L.rank * sizeof **rows))) {
				rc = SA_EINTERNAL;
				goto out;
			}
			sa_rows_gguf_to_hf(p->B, rows[i], heads, m->cfg.d_head, L.rank);
			B = rows[i];
		}
		snprintf(ta->name, sizeof ta->name, "base_model.model.model.layers.%d.%s.lora_A.weight",
		    p->layer, hf_module[p->mat]);
		ta->shape[0] = L.rank;
		ta->shape[1] = p->d_in;
		ta->data = p->A;
		snprintf(tb->name, sizeof tb->name, "base_model.model.model.layers.%d.%s.lora_B.weight",
		    p->layer, hf_module[p->mat]);
		tb->shape[0] = p->d_out;
		tb->shape[1] = L.rank;
		tb->data = B;
	}

	if ((size_t)snprintf(tmp, sizeof tmp, "%.*s.%s.XXXXXX", (int)(base - clean), clean, base)
	    >= sizeof tmp) {
		rc = sa_fail(SA_ECANTCREAT, "%s: name too long", dir);
		goto out;
	}
	if (!mkdtemp(tmp)) {
		rc = sa_fail(SA_ECANTCREAT, "%s: %s", clean, strerror(errno));
		goto out;
	}
	/* mkdtemp makes it 0700; the result should look like any mkdir's. */
	{
		mode_t mask = umask(0);
		umask(mask);
		chmod(tmp, 0777 & ~mask);
	}
	if ((rc = write_file(tmp, peft_files[1], put_tensors, &ctx)) != SA_OK ||
	    (rc = write_file(tmp, peft_files[0], put_config, &ctx)) != SA_OK ||
	    (rc = install_dir(tmp, clean)) != SA_OK)
		remove_export_dir(tmp);
out:
	for (int i = 0; i < L.n; i++)
		free(rows[i]);
	free(rows);
	free(ctx.t);
	free_lora(&L);
	return rc;
}
