/*
 * test_export - LoRA exports of deltas, checked against the update they
 * must carry: Delta W = W1 (sum_i s_i H_i)^T W2 computed here in double
 * from the adapter and the states, the shape rules of llama.cpp, the
 * safetensors layout, PEFT's config, the Hugging Face row order of q and k,
 * and the logits of the model with the exported pairs as side paths
 * against those with the deltas applied.
 *
 *   test_export MODEL ADAPTER DELTA1 DELTA2 TMPDIR
 */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sa.h"
#include "t.h"

static const char *hf_module[SA_NMAT] = {
	"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
	"mlp.gate_proj", "mlp.up_proj", "mlp.down_proj",
};

/*
 * llama.cpp's converter, as its Python writes it for q (n_head) and k
 * (n_head_kv): w.reshape(n_head, 2, rows/n_head/2, cols).swapaxes(1, 2)
 * .reshape(w.shape).  Element (h, j, i, c) of the HF array goes to
 * (h, i, j, c) of the GGUF one.
 */
static void
convert_permute(const float *hf, float *gguf, int n_head, int rows, int cols)
{
	int half = rows / n_head / 2;

	for (int h = 0; h < n_head; h++)
		for (int j = 0; j < 2; j++)
			for (int i = 0; i < half; i++)
				for (int c = 0; c < cols; c++)
					gguf[(((size_t)h * half + i) * 2 + j) * cols + c] =
					    hf[(((size_t)h * 2 + j) * half + i) * cols + c];
}

/* Delta W [d_out][d_in] = W1 (sum_k s_k H_k)^T W2, in double. */
static double *
reference_update(const sa_adapter *a, sa_delta *const *d, const double *s, int n, int l, int m)
{
	const sa_adapter_mat *am = SA_ADAPTER_MAT(a, l, m);
	int r = a->rank, dh = a->d_head, Hk = a->n_head_kv, Dkv = Hk * dh;
	double *H = calloc((size_t)r * Dkv, sizeof *H), *B = calloc((size_t)am->d_out * r, sizeof *B);
	double *W = calloc((size_t)am->d_out * am->d_in, sizeof *W);

	for (int k = 0; k < n; k++) {
		const float *h = sa_delta_h(d[k], l, m);
		for (int hd = 0; hd < Hk; hd++)
			for (int i = 0; i < r; i++)
				for (int j = 0; j < dh; j++)
					H[(size_t)i * Dkv + hd * dh + j] += s[k] * h[((size_t)hd * r + i) * dh + j];
	}
	for (int o = 0; o < am->d_out; o++)
		for (int i = 0; i < r; i++)
			for (int c = 0; c < Dkv; c++)
				B[(size_t)o * r + i] += (double)am->W1[(size_t)o * Dkv + c] * H[(size_t)i * Dkv + c];
	for (int o = 0; o < am->d_out; o++)
		for (int i = 0; i < r; i++)
			for (int c = 0; c < am->d_in; c++)
				W[(size_t)o * am->d_in + c] += B[(size_t)o * r + i] * am->W2[(size_t)i * am->d_in + c];
	free(H);
	free(B);
	return W;
}

/* Largest |B A - ref| relative to the largest |ref|. */
static double
product_error(const float *B, const float *A, const double *ref, int d_out, int r, int d_in)
{
	double worst = 0, big = 0;

	for (int o = 0; o < d_out; o++)
		for (int c = 0; c < d_in; c++) {
			double x = 0, y = ref[(size_t)o * d_in + c];
			for (int i = 0; i < r; i++)
				x += (double)B[(size_t)o * r + i] * A[(size_t)i * d_in + c];
			if (fabs(x - y) > worst)
				worst = fabs(x - y);
			if (fabs(y) > big)
				big = fabs(y);
		}
	return big > 0 ? worst / big : worst;
}

/* ----------------------------------------------------------- safetensors */

typedef struct st_file {
	char *bytes;
	size_t len;
	sa_json header;
	const char *data;
	size_t data_len;
} st_file;

/* Parse and check the layout; 0 if it is not valid safetensors. */
static int
st_open(st_file *f, const char *path)
{
	uint64_t hlen = 0;
	size_t end = 0;

	memset(f, 0, sizeof *f);
	if (sa_file_read(path, &f->bytes, &f->len) != SA_OK || f->len < 8)
		return 0;
	for (int i = 7; i >= 0; i--)
		hlen = hlen << 8 | (unsigned char)f->bytes[i];
	CHECK((8 + hlen) % 8 == 0);
	if (8 + hlen > f->len || sa_json_parse(f->bytes + 8, hlen, &f->header) != SA_OK)
		return 0;
	CHECK(f->header.type == SA_JSON_OBJ);
	f->data = f->bytes + 8 + hlen;
	f->data_len = f->len - 8 - hlen;
	/* Offsets tile the data section exactly, in the header's order. */
	for (size_t i = 0; i < f->header.n; i++) {
		const sa_json *e = &f->header.items[i], *off, *shape, *dt;
		if (!strcmp(f->header.keys[i], "__metadata__"))
			continue;
		off = sa_json_get(e, "data_offsets");
		shape = sa_json_get(e, "shape");
		dt = sa_json_get(e, "dtype");
		CHECK(off && off->type == SA_JSON_ARR && off->n == 2);
		CHECK(shape && shape->type == SA_JSON_ARR && shape->n == 2);
		CHECK(dt && dt->type == SA_JSON_STR && !strcmp(dt->str, "F32"));
		if (!off || off->n != 2 || !shape || shape->n != 2)
			return 0;
		CHECK(off->items[0].num == (double)end);
		CHECK(off->items[1].num - off->items[0].num ==
		    shape->items[0].num * shape->items[1].num * 4);
		end = (size_t)off->items[1].num;
	}
	CHECK(end == f->data_len);
	return 1;
}

static const float *
st_tensor(const st_file *f, const char *name, int64_t *rows, int64_t *cols)
{
	const sa_json *e = sa_json_get(&f->header, name), *off, *shape;

	if (!e)
		return NULL;
	off = sa_json_get(e, "data_offsets");
	shape = sa_json_get(e, "shape");
	*rows = (int64_t)shape->items[0].num;
	*cols = (int64_t)shape->items[1].num;
	return (const float *)(f->data + (size_t)off->items[0].num);
}

static void
st_close(st_file *f)
{
	sa_json_free(&f->header);
	free(f->bytes);
}

/* ------------------------------------------------------------------ main */

static const sa_tensor_info *
lora_tensor(const sa_gguf *g, int l, int m, char ab)
{
	char name[96];

	snprintf(name, sizeof name, "blk.%d.%s.weight.lora_%c", l, sa_mat_name(m), ab);
	return sa_gguf_tensor(g, name);
}

/* Logits of every position of toks under the model's current weights. */
static float *
logits_of(sa_model *m, const int *toks, int n)
{
	sa_kvcache *s;
	float *out = malloc((size_t)n * m->cfg.n_vocab * sizeof *out);

	CHECK_OK(sa_kvcache_new(&s, m, 64));
	CHECK_OK(sa_forward(s, toks, n, out, 1));
	sa_kvcache_free(s);
	return out;
}

static int
count_entries(const char *dir)
{
	DIR *dp = opendir(dir);
	struct dirent *e;
	int n = 0;

	while (dp && (e = readdir(dp)))
		n += e->d_name[0] != '.' || (e->d_name[1] && strcmp(e->d_name, ".."));
	if (dp)
		closedir(dp);
	return n;
}

int
main(int argc, char **argv)
{
	sa_model *model;
	sa_adapter *a;
	sa_delta *d[2];
	double s2[2] = { 0.75, -0.5 }, s1[1] = { -1.5 };
	char gguf_path[4096], one_path[4096], peft_dir[4096], path[4200];
	sa_gguf *g, *g1;
	int llama;

	if (argc != 6) {
		fprintf(stderr, "usage: test_export MODEL ADAPTER DELTA1 DELTA2 TMPDIR\n");
		return 64;
	}
	CHECK_OK(sa_model_load(&model, argv[1]));
	CHECK_OK(sa_adapter_load(&a, argv[2]));
	CHECK_OK(sa_delta_load(&d[0], argv[3]));
	CHECK_OK(sa_delta_load(&d[1], argv[4]));
	if (t_failed)
		return t_done();
	llama = model->cfg.arch == SA_ARCH_LLAMA;
	snprintf(gguf_path, sizeof gguf_path, "%s/two.gguf", argv[5]);
	snprintf(one_path, sizeof one_path, "%s/one.gguf", argv[5]);
	snprintf(peft_dir, sizeof peft_dir, "%s/peft", argv[5]);

	/* llama.cpp GGUF of 0.75 d1 - 0.5 d2. */
	CHECK_OK(sa_export_llama(model, a, d, s2, 2, gguf_path));
	CHECK_OK(sa_gguf_open(&g, gguf_path));
	{
		sa_str v;
		float alpha = -1;
		char *arch = NULL, *march = NULL;
		CHECK_OK(sa_gguf_get_str(g, "general.type", &v));
		CHECK(v.n == 7 && !memcmp(v.s, "adapter", 7));
		CHECK_OK(sa_gguf_get_str(g, "adapter.type", &v));
		CHECK(v.n == 4 && !memcmp(v.s, "lora", 4));
		CHECK_OK(sa_gguf_get_f32(g, "adapter.lora.alpha", &alpha));
		CHECK(alpha == 0);
		CHECK_OK(sa_gguf_get_strdup(g, "general.architecture", &arch));
		CHECK_OK(sa_gguf_get_strdup(model->gguf, "general.architecture", &march));
		CHECK(arch && march && !strcmp(arch, march));
		CHECK(!sa_gguf_has(g, "streamadapter.version"));
		free(arch);
		free(march);
	}
	{
		int pairs = 0;
		double worst = 0;
		for (int l = 0; l < a->n_layer; l++)
			for (int m = 0; m < SA_NMAT; m++) {
				const sa_tensor_info *ta = lora_tensor(g, l, m, 'a'), *tb = lora_tensor(g, l, m, 'b');
				const sa_matrix *w = &model->layers[l].w[m];
				double *ref, e;
				if (!sa_adapted(a->mats, m)) {
					CHECK(!ta && !tb);
					continue;
				}
				CHECK(ta && tb);
				if (!ta || !tb)
					continue;
				pairs++;
				CHECK(ta->type == SA_TYPE_F32 && tb->type == SA_TYPE_F32);
				/* llama.cpp: base ne[0] == a ne[0], base ne[1] == b ne[1],
				 * a ne[1] == b ne[0] (the rank). */
				CHECK(ta->ne[0] == w->cols && tb->ne[1] == w->rows);
				CHECK(ta->ne[1] == tb->ne[0] && ta->ne[1] == a->rank);
				ref = reference_update(a, d, s2, 2, l, m);
				e = product_error(tb->data, ta->data, ref, (int)w->rows, a->rank, (int)w->cols);
				if (e > worst)
					worst = e;
				free(ref);
			}
		CHECK(pairs == __builtin_popcount(a->mats) * a->n_layer);
		fprintf(stderr, "two deltas: %d pairs, B A within %.2g of W1 (sum s H)^T W2\n", pairs, worst);
		CHECK(worst < 1e-5);
	}

	/* One delta: B is what sa-run computes for -d FILE:S, bit for bit. */
	CHECK_OK(sa_export_llama(model, a, d, s1, 1, one_path));
	CHECK_OK(sa_gguf_open(&g1, one_path));
	for (int l = 0; l < a->n_layer; l++)
		for (int m = 0; m < SA_NMAT; m++) {
			const sa_tensor_info *ta, *tb;
			const float *A;
			float *B;
			if (!sa_adapted(a->mats, m))
				continue;
			ta = lora_tensor(g1, l, m, 'a');
			tb = lora_tensor(g1, l, m, 'b');
			CHECK_OK(sa_delta_factors(a, d[0], l, m, (float)s1[0], &B, &A));
			CHECK(ta && tb && !memcmp(ta->data, A, ta->nbytes) && !memcmp(tb->data, B, tb->nbytes));
			free(B);
		}

	/* The pairs as llama.cpp applies them (W x + B (A x), alpha 0: scale 1)
	 * give the logits of the deltas applied the way sa-run does. */
	{
		int toks[12] = { 1, 40, 51, 77, 90, 33, 12, 200, 150, 60, 7, 99 };
		float *want, *got;
		double worst = 0, big = 0;
		for (int i = 0; i < 12; i++)
			toks[i] %= model->cfg.n_vocab;
		CHECK_OK(sa_delta_apply(model, a, d[0], 0.75f, 1));
		CHECK_OK(sa_delta_apply(model, a, d[1], -0.5f, 1));
		want = logits_of(model, toks, 12);
		sa_model_reset_weights(model);
		for (int l = 0; l < a->n_layer; l++)
			for (int m = 0; m < SA_NMAT; m++) {
				const sa_tensor_info *ta = lora_tensor(g, l, m, 'a'), *tb = lora_tensor(g, l, m, 'b');
				if (ta && tb)
					CHECK_OK(sa_model_add_side(model, l, m, (int)ta->ne[1], tb->data, ta->data));
			}
		got = logits_of(model, toks, 12);
		sa_model_reset_weights(model);
		for (size_t i = 0; i < (size_t)12 * model->cfg.n_vocab; i++) {
			if (fabs(got[i] - want[i]) > worst)
				worst = fabs(got[i] - want[i]);
			if (fabs(want[i]) > big)
				big = fabs(want[i]);
		}
		fprintf(stderr, "logits with the exported pairs: within %.2g of sa_delta_apply (max |logit| %.3g)\n",
		    worst, big);
		CHECK(worst < 1e-4 * (big > 1 ? big : 1));
		/* ... and the deltas do change them. */
		{
			float *base = logits_of(model, toks, 12);
			double moved = 0;
			for (size_t i = 0; i < (size_t)12 * model->cfg.n_vocab; i++)
				if (fabs(base[i] - want[i]) > moved)
					moved = fabs(base[i] - want[i]);
			CHECK(moved > 1e-2);
			free(base);
		}
		free(want);
		free(got);
	}

	/* q/k row order: the inverse of the converter's permutation, and back. */
	{
		int heads = 3, dh = 8, cols = 5, rows = heads * dh;
		float x[24 * 5], y[24 * 5], z[24 * 5];
		for (int i = 0; i < rows * cols; i++)
			x[i] = (float)i;
		sa_rows_gguf_to_hf(x, y, heads, dh, cols);
		convert_permute(y, z, heads, rows, cols);
		CHECK(!memcmp(x, z, sizeof x));
		sa_rows_hf_to_gguf(y, z, heads, dh, cols);
		CHECK(!memcmp(x, z, sizeof x));
		CHECK(memcmp(x, y, sizeof x) != 0);
		/* Row 1 of head 0 in GGUF (i = 0, j = 1) is HF row dh/2. */
		CHECK(y[(dh / 2) * cols] == x[1 * cols]);
	}

	/* PEFT directory. */
	CHECK_OK(sa_export_peft(model, a, d, s2, 2, "org/base-model", peft_dir));
	{
		st_file f;
		sa_json cfg;
		char *text;
		size_t len;
		int ok;

		snprintf(path, sizeof path, "%s/adapter_config.json", peft_dir);
		CHECK_OK(sa_file_read(path, &text, &len));
		CHECK_OK(sa_json_parse(text, len, &cfg));
		{
			const sa_json *r = sa_json_get(&cfg, "r"), *al = sa_json_get(&cfg, "lora_alpha");
			const sa_json *pt = sa_json_get(&cfg, "peft_type"), *tt = sa_json_get(&cfg, "task_type");
			const sa_json *bm = sa_json_get(&cfg, "base_model_name_or_path");
			const sa_json *tm = sa_json_get(&cfg, "target_modules");
			size_t k = 0;
			CHECK(r && r->num == a->rank && al && al->num == a->rank);
			CHECK(pt && !strcmp(pt->str, "LORA") && tt && !strcmp(tt->str, "CAUSAL_LM"));
			CHECK(bm && !strcmp(bm->str, "org/base-model"));
			CHECK(tm && tm->type == SA_JSON_ARR && tm->n == (size_t)__builtin_popcount(a->mats));
			for (int m = 0; tm && m < SA_NMAT; m++)
				if (sa_adapted(a->mats, m)) {
					CHECK(k < tm->n && !strcmp(tm->items[k].str, strchr(hf_module[m], '.') + 1));
					k++;
				}
		}
		sa_json_free(&cfg);
		free(text);

		snprintf(path, sizeof path, "%s/adapter_model.safetensors", peft_dir);
		ok = st_open(&f, path);
		CHECK(ok);
		for (int l = 0; ok && l < a->n_layer; l++)
			for (int m = 0; m < SA_NMAT; m++) {
				const sa_tensor_info *ta = lora_tensor(g, l, m, 'a'), *tb = lora_tensor(g, l, m, 'b');
				const float *A, *B;
				int64_t ar, ac, br, bc;
				char name[160];
				if (!ta)
					continue;
				snprintf(name, sizeof name, "base_model.model.model.layers.%d.%s.lora_A.weight", l, hf_module[m]);
				A = st_tensor(&f, name, &ar, &ac);
				snprintf(name, sizeof name, "base_model.model.model.layers.%d.%s.lora_B.weight", l, hf_module[m]);
				B = st_tensor(&f, name, &br, &bc);
				CHECK(A && B);
				if (!A || !B)
					continue;
				/* PEFT: lora_A [r][d_in], lora_B [d_out][r]. */
				CHECK(ar == a->rank && ac == ta->ne[0] && br == tb->ne[1] && bc == a->rank);
				CHECK(!memcmp(A, ta->data, ta->nbytes));
				if (llama && (m == SA_MAT_Q || m == SA_MAT_K)) {
					/* Converting the HF rows as llama.cpp does gives the GGUF rows. */
					float *conv = malloc(tb->nbytes);
					int heads = m == SA_MAT_Q ? model->cfg.n_head : model->cfg.n_head_kv;
					convert_permute(B, conv, heads, (int)br, (int)bc);
					CHECK(!memcmp(conv, tb->data, tb->nbytes));
					CHECK(memcmp(B, tb->data, tb->nbytes) != 0);
					free(conv);
				} else {
					CHECK(!memcmp(B, tb->data, tb->nbytes));
				}
			}
		st_close(&f);
	}

	/* Export again over the first: replaced whole, nothing left beside it. */
	snprintf(path, sizeof path, "%s", argv[5]);
	{
		int before = count_entries(path);
		CHECK_OK(sa_export_peft(model, a, d, s1, 1, NULL, peft_dir));
		CHECK(count_entries(path) == before);
		CHECK(count_entries(peft_dir) == 2);
	}
	/* A directory holding anything else is not touched. */
	snprintf(path, sizeof path, "%s/notes.txt", peft_dir);
	{
		FILE *fp = fopen(path, "w");
		fputs("mine\n", fp);
		fclose(fp);
		CHECK(sa_export_peft(model, a, d, s1, 1, NULL, peft_dir) == SA_ECANTCREAT);
		CHECK(access(path, F_OK) == 0);
		CHECK(count_entries(peft_dir) == 3);
		CHECK(count_entries(argv[5]) == 3);   /* two.gguf, one.gguf, peft */
	}
	CHECK(sa_export_peft(model, a, d, s1, 1, NULL, "-") == SA_EUSAGE);

	/* Bad inputs. */
	CHECK(sa_export_llama(model, a, d, s2, 0, one_path) == SA_EUSAGE);
	{
		double inf[1] = { INFINITY };
		CHECK(sa_export_llama(model, a, d, inf, 1, one_path) == SA_EUSAGE);
	}
	d[1]->adapter_fingerprint ^= 1;
	CHECK(sa_export_llama(model, a, d, s2, 2, one_path) == SA_EDATA);
	CHECK(strstr(sa_error(), "another adapter") != NULL);
	d[1]->adapter_fingerprint ^= 1;
	d[0]->model_fingerprint ^= 1;
	CHECK(sa_export_llama(model, a, d, s2, 2, one_path) == SA_EDATA);
	CHECK(strstr(sa_error(), "another model") != NULL);

	sa_gguf_close(g);
	sa_gguf_close(g1);
	sa_delta_free(d[0]);
	sa_delta_free(d[1]);
	sa_adapter_free(a);
	sa_model_free(model);
	return t_done();
}
