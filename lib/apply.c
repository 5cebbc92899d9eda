/*
 * apply.c - a delta into the model it was made for: whether model, adapter
 * and deltas belong together (one check for every tool), the adapter a
 * delta names, and Delta W = s W1 H^T W2 merged into the weights or kept
 * on a side path.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "sa.h"
#include "kernels_impl.h"

/* ------------------------------------------------------------- binding */

static int
made_for(const char *name, uint64_t want, const char *other, uint64_t have)
{
	return sa_fail(SA_EDATA, "%s was made for another model (fingerprint %016llx, %s has %016llx)",
	    name, (unsigned long long)want, other, (unsigned long long)have);
}

int
sa_binding_check(const sa_model *m, const sa_adapter *a, const sa_delta *d, const char *dname)
{
	const char *an = a && a->path ? a->path : "the adapter";
	const char *mn = m && m->name ? m->name : "the model";

	dname = dname ? dname : "delta";
	if (m && a) {
		if (a->model_fingerprint != m->fingerprint)
			return made_for(an, a->model_fingerprint, mn, m->fingerprint);
		if (a->n_layer != m->cfg.n_layer || a->n_head_kv != m->cfg.n_head_kv ||
		    a->d_head != m->cfg.d_head)
			return sa_fail(SA_EDATA, "%s: shape (%d layers, %d kv heads of %d) does not match "
			    "the model's (%d, %d, %d)", an, a->n_layer, a->n_head_kv, a->d_head,
			    m->cfg.n_layer, m->cfg.n_head_kv, m->cfg.d_head);
		for (int mat = 0; mat < SA_NMAT; mat++) {
			int o, i, rc;
			if (!sa_adapted(a->mats, mat))
				continue;
			if ((rc = sa_model_mat_dims(m, mat, &o, &i)) != SA_OK)
				return rc;
			for (int l = 0; l < a->n_layer; l++) {
				const sa_adapter_mat *am = SA_ADAPTER_MAT(a, l, mat);
				if (am->d_out != o || am->d_in != i)
					return sa_fail(SA_EDATA, "%s: layer %d %s is %d x %d, the model's is %d x %d",
					    an, l, sa_mat_name(mat), am->d_out, am->d_in, o, i);
			}
		}
	}
	if (m && d) {
		if (d->model_fingerprint != m->fingerprint)
			return made_for(dname, d->model_fingerprint, mn, m->fingerprint);
		if (d->n_layer != m->cfg.n_layer)
			return sa_fail(SA_EDATA, "%s has %d layers, the model %d", dname, d->n_layer,
			    m->cfg.n_layer);
	}
	if (a && d) {
		if (d->adapter_fingerprint != a->fingerprint)
			return sa_fail(SA_EDATA, "%s was made with another adapter (fingerprint %016llx, "
			    "%s has %016llx)", dname, (unsigned long long)d->adapter_fingerprint, an,
			    (unsigned long long)a->fingerprint);
		if (a->mapping != d->mapping || a->n_layer != d->n_layer || a->n_head_kv != d->n_head_kv ||
		    a->d_head != d->d_head || a->rank != d->rank || a->chunk != d->chunk ||
		    a->mats != d->mats)
			return sa_fail(SA_EDATA, "%s: shape does not match %s", dname, an);
	}
	return SA_OK;
}

int
sa_adapter_check(const sa_adapter *a, const sa_model *model)
{
	return sa_binding_check(model, a, NULL, NULL);
}

/* ---------------------------------------------------------- absorption */

/*
 * The memory read out: M [n][Hk][dh][dk] = G (S + lambda I)^-1 for the n
 * layers from l0, each (layer, head) a chunk of the pool, the solves
 * independent of each other (the same bits on any thread count).
 */
struct readout {
	const sa_adapter *a;
	const sa_delta *d;
	int l0;
	float *M;
	int *rc;                  /* [n * Hk] */
};

static void
readout_head(void *arg, int ith, int chunk, int nchunks)
{
	struct readout *t = arg;
	const sa_delta *d = t->d;
	int Hk = d->n_head_kv, dh = d->d_head, dk = d->rank / Hk, l = t->l0 + chunk / Hk,
	    h = chunk % Hk;

	t->rc[chunk] = sa_memory_read(sa_delta_G(d, l) + (size_t)h * dh * dk,
	    sa_delta_S(d, l) + (size_t)h * dk * dk, dh, dk, t->a->lambda,
	    t->M + (size_t)chunk * dh * dk);
}

static int
memory_readout(const sa_adapter *a, const sa_delta *d, int l0, int n, float **M)
{
	int Hk = d->n_head_kv, dk = d->rank / Hk, rc = SA_OK;
	struct readout t = { a, d, l0, sa_malloc((size_t)n * Hk * d->d_head * dk * sizeof(float)),
	    sa_calloc((size_t)n * Hk, sizeof(int)) };

	if (t.M && t.rc)
		sa_pool_run_chunks(readout_head, &t, n * Hk);
	else
		rc = SA_EINTERNAL;
	/* a worker's message stays on its thread: the solve again here */
	for (int c = 0; c < n * Hk && rc == SA_OK; c++)
		if (t.rc[c] != SA_OK) {
			readout_head(&t, 0, c, n * Hk);
			rc = t.rc[c];
		}
	free(t.rc);
	if (rc != SA_OK) {
		free(t.M);
		t.M = NULL;
	}
	*M = t.M;
	return rc;
}

/*
 * The factors of (layer, mat) from the layer's read-out Ml [Hk][dh][dk]:
 *   B [d_out][Hk*dk], B[:, h*dk + j] = s * sum_i W1[:, h*dh + i] M[h][i][j]
 *   A = W2 [Hk*dk][d_in]
 * so that Delta W = B A = s W1 blockdiag(M) W2.
 */
static int
memory_factors(const sa_adapter *a, const sa_delta *d, const float *Ml, int layer, int mat,
    float s, float **B, const float **A)
{
	const sa_adapter_mat *am = SA_ADAPTER_MAT(a, layer, mat);
	int Hk = d->n_head_kv, dh = d->d_head, dk = d->rank / Hk, Dkv = Hk * dh, r = d->rank;

	if (!(*B = sa_malloc((size_t)am->d_out * r * sizeof **B)))
		return SA_EINTERNAL;
	/* B[:, h-block] [d_out][dk] = s * W1[:, h-block] [d_out][dh] . M[h] [dh][dk] */
	for (int h = 0; h < Hk; h++)
		sa_sgemm(CblasNoTrans, am->d_out, dk, dh, s, am->W1 + (size_t)h * dh, Dkv,
		    Ml + (size_t)h * dh * dk, dk, 0.0f, *B + (size_t)h * dk, r);
	*A = am->W2;
	return SA_OK;
}

/* Factors of (layer, mat); of a memory, from M, the delta's read-out from
 * layer 0 on, or, NULL, the layer's read out now. */
static int
factors(const sa_adapter *a, const sa_delta *d, const float *M, int layer, int mat, float s,
    float **B, const float **A)
{
	const sa_adapter_mat *am;
	const float *h;
	float *H, *Ml = NULL;
	int Hk = d->n_head_kv, r = d->rank, dh = d->d_head, Dkv = Hk * dh, rc;

	*B = NULL;
	*A = NULL;
	if ((rc = sa_binding_check(NULL, a, d, NULL)) != SA_OK)
		return rc;
	if (layer < 0 || layer >= d->n_layer || mat < 0 || mat >= SA_NMAT || !sa_adapted(d->mats, mat))
		return sa_fail(SA_EINTERNAL, "layer %d %s is not in the delta", layer,
		    mat >= 0 && mat < SA_NMAT ? sa_mat_name(mat) : "?");
	if (d->mapping == SA_MAPPING_LSQ) {
		if (!M && (rc = memory_readout(a, d, layer, 1, &Ml)) != SA_OK)
			return rc;
		rc = memory_factors(a, d, M ? M + (size_t)layer * Dkv * (r / Hk) : Ml, layer, mat, s,
		    B, A);
		free(Ml);
		return rc;
	}
	h = sa_delta_h(d, layer, mat);
	am = SA_ADAPTER_MAT(a, layer, mat);

	/* H [r][Dkv], H[i][head*dh + j] = h[head][i][j]: the heads of slot i
	 * side by side, the layout W1's columns expect. */
	if (!(H = sa_malloc((size_t)r * Dkv * sizeof *H)))
		return SA_EINTERNAL;
	for (int hd = 0; hd < Hk; hd++)
		for (int i = 0; i < r; i++)
			memcpy(H + (size_t)i * Dkv + (size_t)hd * dh, h + ((size_t)hd * r + i) * dh,
			    (size_t)dh * sizeof *H);
	if (!(*B = sa_malloc((size_t)am->d_out * r * sizeof **B))) {
		free(H);
		return SA_EINTERNAL;
	}
	/* B [d_out][r] = s * W1 [d_out][Dkv] . H^T [Dkv][r] */
	sa_sgemm(CblasTrans, am->d_out, r, Dkv, s, am->W1, Dkv, H, Dkv, 0.0f, *B, r);
	free(H);
	*A = am->W2;
	return SA_OK;
}

int
sa_delta_factors(const sa_adapter *a, const sa_delta *d, int layer, int mat,
    float s, float **B, const float **A)
{
	return factors(a, d, NULL, layer, mat, s, B, A);
}

/* Every matrix of d at scale s merged into merge's weights, or, merge NULL,
 * added to the side paths *side of model m, A the adapter's when shared
 * (the model's own copy it: the adapter goes before the model). */
static int
delta_put(const sa_model *m, sa_model *merge, sa_lowrank **side, int shared,
    const sa_adapter *a, const sa_delta *d, float s)
{
	float *M = NULL;
	int rc;

	/* a memory read out once, all its layers' heads over the pool */
	if ((rc = sa_binding_check(m, a, d, NULL)) != SA_OK || (d->mapping == SA_MAPPING_LSQ &&
	    (rc = memory_readout(a, d, 0, d->n_layer, &M)) != SA_OK))
		return rc;
	for (int l = 0; l < d->n_layer && rc == SA_OK; l++)
		for (int mat = 0; mat < SA_NMAT && rc == SA_OK; mat++) {
			const float *A;
			float *B;
			if (!sa_adapted(d->mats, mat))
				continue;
			if ((rc = factors(a, d, M, l, mat, s, &B, &A)) != SA_OK)
				break;
			rc = merge ? sa_model_merge_lowrank(merge, l, mat, d->rank, B, A)
			    : shared ? sa_side_add_shared(side, m, l, mat, d->rank, B, A)
			    : sa_side_add(side, m, l, mat, d->rank, B, A);
			free(B);
		}
	free(M);
	return rc;
}

int
sa_delta_apply(sa_model *m, const sa_adapter *a, const sa_delta *d, float s, int merged)
{
	return delta_put(m, merged ? m : NULL, &m->side, 0, a, d, s);
}

int
sa_delta_sides(sa_lowrank **side, const sa_model *m, const sa_adapter *a, const sa_delta *d,
    float s)
{
	return delta_put(m, NULL, side, 1, a, d, s);
}

/* ------------------------------------------------------ deltas given */

static const char *
name_of(const char *path)
{
	return strcmp(path, "-") ? path : "stdin";
}

void
sa_deltas_free(sa_deltas *ds)
{
	if (!ds)
		return;
	for (int i = 0; i < ds->n; i++) {
		sa_delta_free(ds->d[i]);
		free(ds->path[i]);
	}
	free(ds->d);
	free(ds->path);
	free(ds->scale);
	sa_adapter_free(ds->adapter);
	free(ds);
}

int
sa_deltas_load(sa_deltas **out, char *const *path, const double *scale, int n)
{
	sa_deltas *ds;
	int rc = SA_OK;

	*out = NULL;
	if (!(ds = sa_calloc(1, sizeof *ds)))
		return SA_EINTERNAL;
	if (n > 0 && (!(ds->d = sa_calloc((size_t)n, sizeof *ds->d)) ||
	    !(ds->path = sa_calloc((size_t)n, sizeof *ds->path)) ||
	    !(ds->scale = sa_calloc((size_t)n, sizeof *ds->scale)))) {
		sa_deltas_free(ds);
		return SA_EINTERNAL;
	}
	for (; ds->n < n && rc == SA_OK; ds->n++) {
		int i = ds->n;
		ds->scale[i] = scale ? scale[i] : 1;
		if (!(ds->path[i] = strdup(path[i])))
			rc = sa_fail(SA_EINTERNAL, "out of memory");
		else if ((rc = sa_delta_load(&ds->d[i], path[i])) == SA_OK && i > 0)
			rc = sa_delta_compatible(ds->d[0], name_of(path[0]), ds->d[i], name_of(path[i]));
	}
	if (rc != SA_OK) {
		sa_deltas_free(ds);
		return rc;
	}
	*out = ds;
	return SA_OK;
}

/* DIR/NAME, dir the first n bytes of dir, malloc'd when readable, else NULL. */
static char *
readable(const char *dir, int n, const char *name)
{
	char *p;

	if (asprintf(&p, "%.*s/%s", n, dir, name) < 0)
		return NULL;
	if (access(p, R_OK) == 0)
		return p;
	free(p);
	return NULL;
}

/*
 * The adapter of delta d, read from path: the path d records (sa-encode
 * writes it absolute), that path relative to the delta's directory, a file
 * of its name in the delta's directory (the two moved together), else
 * fallback (the default adapter) if d was made with it.
 */
int
sa_delta_adapter(sa_adapter **out, const sa_delta *d, const char *path, const char *fallback)
{
	const char *rec = d->adapter_path && *d->adapter_path ? d->adapter_path : NULL;
	const char *base = rec && strrchr(rec, '/') ? strrchr(rec, '/') + 1 : rec;
	const char *slash = strrchr(path, '/'), *dir = slash ? path : ".";
	int n = slash ? (int)(slash - path) : 1, beside = rec && strcmp(path, "-") != 0, rc;
	char *found = NULL;

	if (rec && access(rec, R_OK) == 0)
		return sa_adapter_load(out, rec);
	if (beside && rec[0] != '/')
		found = readable(dir, n, rec);
	if (!found && beside)
		found = readable(dir, n, base);
	if (found) {
		rc = sa_adapter_load(out, found);
		free(found);
		return rc;
	}
	if (fallback) {
		if ((rc = sa_adapter_load(out, fallback)) != SA_OK)
			return rc;
		if ((*out)->fingerprint == d->adapter_fingerprint)
			return SA_OK;
		sa_adapter_free(*out);
		*out = NULL;
	}
	if (rec)
		return sa_fail(SA_ENOINPUT, "%s: its adapter %s is missing, and none is beside it: "
		    "give -a ADAPTER", name_of(path), rec);
	return sa_fail(SA_EUSAGE, "%s records no adapter: give -a ADAPTER", name_of(path));
}

int
sa_deltas_bind(sa_deltas *ds, const sa_model *m, const char *given, const char *fallback)
{
	int rc;

	if (given)
		rc = sa_adapter_load(&ds->adapter, given);
	else if (ds->n)
		rc = sa_delta_adapter(&ds->adapter, ds->d[0], ds->path[0], fallback);
	else
		rc = sa_fail(SA_EUSAGE, "no adapter: give -a ADAPTER");
	if (rc != SA_OK || (rc = sa_binding_check(m, ds->adapter, NULL, NULL)) != SA_OK)
		return rc;
	for (int i = 0; i < ds->n; i++)
		if ((rc = sa_binding_check(m, ds->adapter, ds->d[i], name_of(ds->path[i]))) != SA_OK)
			return rc;
	return SA_OK;
}

int
sa_deltas_add(sa_deltas *ds, sa_delta *d, double s, const char *name)
{
	size_t n = (size_t)ds->n + 1;
	sa_delta **dd = realloc(ds->d, n * sizeof *dd);
	char **path = dd ? realloc(ds->path, n * sizeof *path) : NULL;
	double *scale = path ? realloc(ds->scale, n * sizeof *scale) : NULL;

	if (dd)
		ds->d = dd;
	if (path)
		ds->path = path;
	if (scale)
		ds->scale = scale;
	if (!scale || !(ds->path[ds->n] = strdup(name)))
		return sa_fail(SA_EINTERNAL, "out of memory");
	ds->d[ds->n] = d;
	ds->scale[ds->n++] = s;
	return SA_OK;
}

int
sa_deltas_add_demos(sa_deltas *ds, sa_model *m, const char *cache_dir, char *const *files,
    int n, int format, int *hit, sa_cache_note note, void *ctx)
{
	sa_delta *d;
	int rc;

	if ((rc = sa_cache_encode(&d, cache_dir, m, ds->adapter, files, n, format, hit, note,
	    ctx)) != SA_OK)
		return rc;
	if ((rc = sa_deltas_add(ds, d, 1, "demonstrations")) != SA_OK)
		sa_delta_free(d);
	return rc;
}

int
sa_deltas_apply(sa_model *m, const sa_deltas *ds, int merged)
{
	int rc;

	for (int i = 0; i < ds->n; i++)
		if ((rc = sa_delta_apply(m, ds->adapter, ds->d[i], (float)ds->scale[i], merged)) != SA_OK)
			return rc;
	return SA_OK;
}
