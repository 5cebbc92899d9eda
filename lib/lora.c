/*
 * lora.c - a llama.cpp LoRA GGUF read back into the model, merged or on
 * side paths: the way back of sa_export_llama, and any LoRA of the
 * model's architecture.  general.type "adapter", adapter.type "lora",
 * adapter.lora.alpha; per adapted matrix the tensors
 *   blk.L.<mat>.weight.lora_a  ne {d_in, r}    A [r][d_in]
 *   blk.L.<mat>.weight.lora_b  ne {r, d_out}   B [d_out][r]
 * and y = W x + c B (A x) with c = scale * alpha / r, or c = scale when
 * alpha is 0, as llama.cpp computes it.  c folds into B; at c = 1 the
 * factors are used as stored, so an exported delta read back this way is
 * the same side path (and the same bits) as the delta itself.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sa.h"
#include "kernels_impl.h"

/* Tensor t as F32 [rows][cols], malloc'd; a value that is not finite fails. */
static int
tensor_f32(const sa_gguf *g, const sa_tensor_info *t, float **out)
{
	sa_matrix w = { t->type, t->ne[1], t->ne[0], t->data };
	size_t n = (size_t)t->ne[0] * t->ne[1];
	float *p;

	*out = NULL;
	if (!sa_type_supported(t->type) || t->n_dims != 2)
		return sa_fail(SA_EDATA, "%s: %s: want a matrix of a supported type", sa_gguf_path(g),
		    t->name);
	if (!(p = sa_malloc(n * sizeof *p)))
		return SA_EINTERNAL;
	sa_rows_to_f32(&w, 0, w.rows, p);
	for (size_t i = 0; i < n; i++)
		if (!isfinite(p[i])) {
			free(p);
			return sa_fail(SA_EDATA, "%s: %s holds a value that is not finite",
			    sa_gguf_path(g), t->name);
		}
	*out = p;
	return SA_OK;
}

/* Whether g is a LoRA adapter for model m: SA_EDATA saying why not. */
static int
lora_check(const sa_gguf *g, const sa_model *m)
{
	const char *path = sa_gguf_path(g);
	char *arch = NULL, *fp = NULL, want[17];
	int rc = SA_OK;

	if (!sa_gguf_str_is(g, "general.type", "adapter") || !sa_gguf_str_is(g, "adapter.type", "lora"))
		return sa_fail(SA_EDATA, "%s: not a LoRA adapter (general.type \"adapter\", "
		    "adapter.type \"lora\")", path);
	if (sa_gguf_get_strdup(g, "general.architecture", &arch) != SA_OK ||
	    !sa_gguf_str_is(m->gguf, "general.architecture", arch))
		rc = sa_fail(SA_EDATA, "%s: made for architecture %s, the model is another", path,
		    arch ? arch : "(none)");
	snprintf(want, sizeof want, "%016llx", (unsigned long long)m->fingerprint);
	if (rc == SA_OK && sa_gguf_has(g, "streamadapter.export.model_fingerprint") &&
	    sa_gguf_get_strdup(g, "streamadapter.export.model_fingerprint", &fp) == SA_OK &&
	    strcmp(fp, want) != 0)
		rc = sa_fail(SA_EDATA, "%s was made for another model (fingerprint %s, %s has %s)",
		    path, fp, m->name ? m->name : "the model", want);
	free(arch);
	free(fp);
	return rc;
}

/* The pair of A tensor a (named "<base>.lora_a"), checked against the
 * model's matrix: its layer and matrix, B, and the rank. */
static int
lora_pair(const sa_gguf *g, const sa_model *m, const sa_tensor_info *a, int *layer, int *mat,
    const sa_tensor_info **b)
{
	const char *path = sa_gguf_path(g);
	char base[96], name[104], mname[64];
	int d_out, d_in, n = 0, rc;
	size_t len = strlen(a->name) - strlen(".lora_a");

	if (len >= sizeof base)
		return sa_fail(SA_EDATA, "%s: tensor name %s too long", path, a->name);
	memcpy(base, a->name, len);
	base[len] = 0;
	if (sscanf(base, "blk.%d.%63[^.].weight%n", layer, mname, &n) != 2 || (size_t)n != len ||
	    *layer < 0 || *layer >= m->cfg.n_layer || (*mat = sa_mat_from_name(mname)) < 0)
		return sa_fail(SA_EDATA, "%s: %s adapts no matrix a LoRA here can (blk.N.<matrix>.weight)",
		    path, a->name);
	snprintf(name, sizeof name, "%s.lora_b", base);
	if (!(*b = sa_gguf_tensor(g, name)))
		return sa_fail(SA_EDATA, "%s: %s has no %s", path, a->name, name);
	if ((rc = sa_model_mat_dims(m, *mat, &d_out, &d_in)) != SA_OK)
		return rc;
	/* llama.cpp's rule: base ne[0] == a ne[0], base ne[1] == b ne[1], a ne[1] == b ne[0]. */
	if (a->ne[0] != d_in || (*b)->ne[1] != d_out || a->ne[1] != (*b)->ne[0] || a->ne[1] < 1)
		return sa_fail(SA_EDATA, "%s: %s and .lora_b do not fit the model's %d x %d matrix",
		    path, a->name, d_out, d_in);
	return SA_OK;
}

/* Every pair of the LoRA at path, at user scale s: merged into merge's
 * weights, or (merge NULL) added to side paths *side of model m. */
static int
lora_put(const sa_model *m, sa_model *merge, sa_lowrank **side, const char *path, double s)
{
	sa_gguf *g;
	float alpha = 0;
	int rc;

	if ((rc = sa_gguf_open(&g, path)) != SA_OK)
		return rc;
	if ((rc = lora_check(g, m)) == SA_OK && sa_gguf_has(g, "adapter.lora.alpha"))
		rc = sa_gguf_get_f32(g, "adapter.lora.alpha", &alpha);
	for (uint64_t i = 0; rc == SA_OK && i < sa_gguf_n_tensors(g); i++) {
		const sa_tensor_info *a = sa_gguf_tensor_at(g, i), *b = NULL;
		size_t len = strlen(a->name);
		float *A = NULL, *B = NULL, c;
		int layer = 0, mat = 0, r;

		if (len > 7 && strcmp(a->name + len - 7, ".lora_b") == 0)
			continue;
		if (len <= 7 || strcmp(a->name + len - 7, ".lora_a") != 0) {
			rc = sa_fail(SA_EDATA, "%s: %s is not a LoRA factor (.lora_a, .lora_b)",
			    sa_gguf_path(g), a->name);
			break;
		}
		if ((rc = lora_pair(g, m, a, &layer, &mat, &b)) != SA_OK ||
		    (rc = tensor_f32(g, a, &A)) != SA_OK || (rc = tensor_f32(g, b, &B)) != SA_OK) {
			free(A);
			break;
		}
		r = (int)a->ne[1];
		c = alpha != 0 ? (float)(s * alpha / r) : (float)s;
		if (c != 1)
			for (size_t k = 0; k < (size_t)b->ne[0] * b->ne[1]; k++)
				B[k] *= c;
		rc = merge ? sa_model_merge_lowrank(merge, layer, mat, r, B, A)
		    : sa_side_add(side, m, layer, mat, r, B, A);
		free(A);
		free(B);
	}
	sa_gguf_close(g);
	return rc;
}

int
sa_lora_apply(sa_model *m, const char *path, double scale, int merged)
{
	return lora_put(m, merged ? m : NULL, &m->side, path, scale);
}

int
sa_lora_sides(sa_lowrank **side, const sa_model *m, const char *path, double scale)
{
	return lora_put(m, NULL, side, path, scale);
}
