/*
 * model.c - load a llama or qwen2 GGUF model: configuration, tensor binding
 * with shape checks, the fingerprint, and low-rank updates (merged into F32
 * copies or kept on the side).
 *
 * Hyperparameters follow llama.cpp: keys "<arch>.<name>", with its defaults
 * where a key is optional.  Matrices stay in the mapping, in their stored
 * type; only norm and bias vectors stored in another type than F32 are
 * converted at load.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sa.h"
#include "kernels_impl.h"
#include "model_impl.h"

static const char *const mat_names[SA_NMAT] = {
	"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down",
};

const char *
sa_mat_name(int m)
{
	return m >= 0 && m < SA_NMAT ? mat_names[m] : NULL;
}

int
sa_mat_from_name(const char *name)
{
	for (int m = 0; name && m < SA_NMAT; m++)
		if (!strcmp(name, mat_names[m]))
			return m;
	return -1;
}

/* ---------------------------------------------------------- configuration */

/* A u32 hyperparameter "<arch>.<key>"; def < 0 makes it required. */
static int
get_u32(const sa_gguf *g, const char *arch, const char *key, long def, int *v)
{
	char full[128];
	uint32_t u;
	int rc;

	snprintf(full, sizeof full, "%s.%s", arch, key);
	if (!sa_gguf_has(g, full) && def >= 0) {
		*v = (int)def;
		return SA_OK;
	}
	if ((rc = sa_gguf_get_u32(g, full, &u)) != SA_OK)
		return rc;
	if (u > (1u << 30))
		return sa_fail(SA_EDATA, "%s: %s = %u is out of range", sa_gguf_path(g), full, u);
	*v = (int)u;
	return SA_OK;
}

static int
get_f32(const sa_gguf *g, const char *arch, const char *key, float def, float *v)
{
	char full[128];

	snprintf(full, sizeof full, "%s.%s", arch, key);
	if (!sa_gguf_has(g, full)) {
		*v = def;
		return SA_OK;
	}
	return sa_gguf_get_f32(g, full, v);
}

static int
read_config(sa_model *m, sa_model_impl *x, const char *arch)
{
	const sa_gguf *g = m->gguf;
	const char *path = sa_gguf_path(g);
	sa_config *c = &m->cfg;
	int rc, key_len, val_len, n_expert;
	float scale_factor;
	char key[128];

	if ((rc = get_u32(g, arch, "block_count", -1, &c->n_layer)) ||
	    (rc = get_u32(g, arch, "embedding_length", -1, &c->d_model)) ||
	    (rc = get_u32(g, arch, "feed_forward_length", -1, &c->d_ff)) ||
	    (rc = get_u32(g, arch, "attention.head_count", -1, &c->n_head)) ||
	    (rc = get_u32(g, arch, "attention.head_count_kv", c->n_head, &c->n_head_kv)) ||
	    (rc = get_u32(g, arch, "context_length", -1, &c->n_ctx)) ||
	    (rc = get_u32(g, arch, "expert_count", 0, &n_expert)) ||
	    (rc = get_f32(g, arch, "rope.freq_base", 10000.0f, &c->rope_base)) ||
	    (rc = get_f32(g, arch, "attention.layer_norm_rms_epsilon", 1e-5f, &c->norm_eps)))
		return rc;
	if (c->n_layer < 1 || c->d_model < 1 || c->d_ff < 1 || c->n_ctx < 1 || c->n_head < 1)
		return sa_fail(SA_EDATA, "%s: block_count, embedding_length, feed_forward_length, "
		    "head_count and context_length must be positive", path);
	if (n_expert > 0)
		return sa_fail(SA_EDATA, "%s: mixture-of-experts models are not supported", path);
	if (c->n_head_kv < 1 || c->n_head % c->n_head_kv)
		return sa_fail(SA_EDATA, "%s: %d attention heads cannot share %d key/value heads",
		    path, c->n_head, c->n_head_kv);

	/* Head size: d_model / n_head unless the file says otherwise. */
	if ((rc = get_u32(g, arch, "attention.key_length",
	    c->d_model % c->n_head ? -1 : c->d_model / c->n_head, &key_len)) ||
	    (rc = get_u32(g, arch, "attention.value_length", key_len, &val_len)))
		return rc;
	if (key_len < 2 || key_len != val_len)
		return sa_fail(SA_EDATA, "%s: key length %d and value length %d must be equal and at least 2",
		    path, key_len, val_len);
	c->d_head = key_len;
	if ((rc = get_u32(g, arch, "rope.dimension_count", c->d_head, &c->rope_dim)))
		return rc;
	if (c->rope_dim < 2 || c->rope_dim % 2 || c->rope_dim > c->d_head)
		return sa_fail(SA_EDATA, "%s: rope.dimension_count %d must be even and at most the head size %d",
		    path, c->rope_dim, c->d_head);
	if (c->arch == SA_ARCH_LLAMA && c->rope_dim != c->d_head)
		return sa_fail(SA_EDATA, "%s: rope.dimension_count %d differs from the head size %d",
		    path, c->rope_dim, c->d_head);
	c->rope_neox = c->arch == SA_ARCH_QWEN2;
	if (!(c->rope_base > 0) || !(c->norm_eps >= 0))
		return sa_fail(SA_EDATA, "%s: bad rope.freq_base or layer_norm_rms_epsilon", path);

	/* Linear position scaling is what llama.cpp does for these models;
	 * YaRN and friends need corrections this engine does not make. */
	snprintf(key, sizeof key, "%s.rope.scaling.type", arch);
	if (sa_gguf_has(g, key)) {
		sa_str t;
		if ((rc = sa_gguf_get_str(g, key, &t)) != SA_OK)
			return rc;
		if (!(t.n == 4 && !memcmp(t.s, "none", 4)) && !(t.n == 6 && !memcmp(t.s, "linear", 6)))
			return sa_fail(SA_EDATA, "%s: rope scaling type %.*s is not supported (none, linear are)",
			    path, (int)(t.n > 32 ? 32 : t.n), t.s);
	}
	if ((rc = get_f32(g, arch, "rope.scaling.factor", 0, &scale_factor)))
		return rc;
	if (scale_factor == 0 && (rc = get_f32(g, arch, "rope.scale_linear", 0, &scale_factor)))
		return rc;
	if (scale_factor < 0)
		return sa_fail(SA_EDATA, "%s: negative rope scaling factor", path);
	x->rope_freq_scale = scale_factor == 0 ? 1.0f : 1.0f / scale_factor;
	if ((rc = get_f32(g, arch, "attention.scale", 0, &x->kq_scale)))
		return rc;

	if ((int64_t)c->n_head * c->d_head > (1 << 20) || c->d_model > (1 << 20) || c->d_ff > (1 << 22) ||
	    c->n_layer > 4096)
		return sa_fail(SA_EDATA, "%s: model dimensions out of range", path);
	return SA_OK;
}

/* ---------------------------------------------------------------- tensors */

static void
shape_str(char *buf, size_t cap, int n_dims, const int64_t *ne)
{
	size_t k = 0;
	k += snprintf(buf + k, cap - k, "[");
	for (int i = 0; i < n_dims && k < cap; i++)
		k += snprintf(buf + k, cap - k, "%s%lld", i ? ", " : "", (long long)ne[i]);
	if (k < cap)
		snprintf(buf + k, cap - k, "]");
}

/*
 * Bind tensor name with GGUF shape {ne0} (ne1 = 0) or {ne0, ne1} to out.
 * Absent and not required: out->data stays NULL.
 */
static int
bind(sa_model *m, const char *name, int64_t ne0, int64_t ne1, int required, sa_matrix *out)
{
	const char *path = sa_gguf_path(m->gguf);
	const sa_tensor_info *t = sa_gguf_tensor(m->gguf, name);
	int64_t want[2] = { ne0, ne1 };
	int want_dims = ne1 ? 2 : 1;
	size_t rb;

	memset(out, 0, sizeof *out);
	if (!t)
		return required ? sa_fail(SA_EDATA, "%s: missing tensor %s", path, name) : SA_OK;
	if (!sa_type_supported(t->type))
		return sa_fail(SA_EDATA, "%s: tensor %s has type %s, which is not supported "
		    "(F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K .. Q6_K are)",
		    path, name, sa_type_name(t->type));
	if (t->ne[0] != ne0 || t->ne[1] != (ne1 ? ne1 : 1) || t->ne[2] != 1 || t->ne[3] != 1) {
		char got[96], exp[96];
		shape_str(got, sizeof got, t->n_dims, t->ne);
		shape_str(exp, sizeof exp, want_dims, want);
		return sa_fail(SA_EDATA, "%s: tensor %s has shape %s, expected %s", path, name, got, exp);
	}
	if (!(rb = sa_type_row_size(t->type, ne0)))
		return sa_fail(SA_EDATA, "%s: tensor %s: rows of %lld elements do not fill %s blocks",
		    path, name, (long long)ne0, sa_type_name(t->type));
	if (t->nbytes != rb * (size_t)(ne1 ? ne1 : 1))
		return sa_fail(SA_EDATA, "%s: tensor %s: size %zu does not match its shape", path, name, t->nbytes);
	out->type = t->type;
	out->rows = ne1 ? ne1 : 1;
	out->cols = ne0;
	out->data = t->data;
	return SA_OK;
}

/* Vectors are used as F32; others get an F32 copy from the arena. */
static int
vec_to_f32(sa_model_impl *x, size_t arena_cap, size_t *used, sa_matrix *v)
{
	float *dst;

	if (!v->data || v->type == SA_TYPE_F32)
		return SA_OK;
	if (!x->vecs && !(x->vecs = sa_malloc(arena_cap * sizeof(float))))
		return SA_EINTERNAL;
	dst = x->vecs + *used;
	*used += (size_t)v->cols;
	sa_row_to_f32(v->type, v->data, dst, v->cols);
	v->type = SA_TYPE_F32;
	v->data = dst;
	return SA_OK;
}

/* Tensors that change the computation if present, which this engine lacks. */
static int
check_unsupported(const sa_model *m)
{
	static const char *const per_layer[] = {
		"attn_qkv.weight", "attn_output.bias", "ffn_gate.bias", "ffn_up.bias",
		"ffn_down.bias", "attn_q_norm.weight", "attn_k_norm.weight", "ffn_gate_inp.weight",
	};
	char name[96];

	if (sa_gguf_tensor(m->gguf, "output.bias"))
		return sa_fail(SA_EDATA, "%s: tensor output.bias is not supported", sa_gguf_path(m->gguf));
	for (int l = 0; l < m->cfg.n_layer; l++)
		for (size_t i = 0; i < sizeof per_layer / sizeof *per_layer; i++) {
			snprintf(name, sizeof name, "blk.%d.%s", l, per_layer[i]);
			if (sa_gguf_tensor(m->gguf, name))
				return sa_fail(SA_EDATA, "%s: tensor %s is not supported",
				    sa_gguf_path(m->gguf), name);
		}
	return SA_OK;
}

static int
bind_all(sa_model *m, sa_model_impl *x)
{
	const sa_config *c = &m->cfg;
	const char *path = sa_gguf_path(m->gguf);
	const sa_tensor_info *te = sa_gguf_tensor(m->gguf, "token_embd.weight");
	int64_t d = c->d_model, qd = (int64_t)c->n_head * c->d_head;
	int64_t kvd = (int64_t)c->n_head_kv * c->d_head, ff = c->d_ff;
	size_t arena = 0, used = 0;
	char name[96];
	sa_matrix rf;
	int rc;

	if (!te)
		return sa_fail(SA_EDATA, "%s: missing tensor token_embd.weight", path);
	if (te->ne[1] < 1 || te->ne[1] > (1 << 24))
		return sa_fail(SA_EDATA, "%s: tensor token_embd.weight has %lld rows", path, (long long)te->ne[1]);
	m->cfg.n_vocab = (int)te->ne[1];
	if ((rc = bind(m, "token_embd.weight", d, c->n_vocab, 1, &m->tok_embd)) ||
	    (rc = bind(m, "output_norm.weight", d, 0, 1, &m->out_norm)) ||
	    (rc = bind(m, "output.weight", d, c->n_vocab, 0, &m->output)))
		return rc;
	if (!m->output.data)
		m->output = m->tok_embd;
	if ((rc = check_unsupported(m)))
		return rc;

	if (!(m->layers = sa_calloc((size_t)c->n_layer, sizeof *m->layers)) ||
	    !(x->base = sa_calloc((size_t)c->n_layer * SA_NMAT, sizeof *x->base)))
		return SA_EINTERNAL;
	for (int l = 0; l < c->n_layer; l++) {
		sa_layer *L = &m->layers[l];
		int64_t io[SA_NMAT][2] = {
			{ d, qd }, { d, kvd }, { d, kvd }, { qd, d }, { d, ff }, { d, ff }, { ff, d },
		};
#define BIND(suffix, n0, n1, req, dst) \
		(snprintf(name, sizeof name, "blk.%d.%s", l, suffix), bind(m, name, n0, n1, req, dst))
		if ((rc = BIND("attn_norm.weight", d, 0, 1, &L->attn_norm)) ||
		    (rc = BIND("ffn_norm.weight", d, 0, 1, &L->ffn_norm)) ||
		    (rc = BIND("attn_q.bias", qd, 0, 0, &L->bq)) ||
		    (rc = BIND("attn_k.bias", kvd, 0, 0, &L->bk)) ||
		    (rc = BIND("attn_v.bias", kvd, 0, 0, &L->bv)))
			return rc;
		for (int mat = 0; mat < SA_NMAT; mat++) {
			char suffix[32];
			snprintf(suffix, sizeof suffix, "%s.weight", mat_names[mat]);
			if ((rc = BIND(suffix, io[mat][0], io[mat][1], 1, &L->w[mat])))
				return rc;
			x->base[(size_t)l * SA_NMAT + mat] = L->w[mat];
		}
#undef BIND
		arena += 2 * (size_t)d + (size_t)qd + 2 * (size_t)kvd;
	}
	arena += (size_t)d;

	/* Norms and biases in F32, whatever the file stores. */
	if ((rc = vec_to_f32(x, arena, &used, &m->out_norm)))
		return rc;
	for (int l = 0; l < c->n_layer; l++) {
		sa_layer *L = &m->layers[l];
		if ((rc = vec_to_f32(x, arena, &used, &L->attn_norm)) ||
		    (rc = vec_to_f32(x, arena, &used, &L->ffn_norm)) ||
		    (rc = vec_to_f32(x, arena, &used, &L->bq)) ||
		    (rc = vec_to_f32(x, arena, &used, &L->bk)) ||
		    (rc = vec_to_f32(x, arena, &used, &L->bv)))
			return rc;
	}

	/* Llama 3 divides the rotation frequencies by these. */
	if ((rc = bind(m, "rope_freqs.weight", c->rope_dim / 2, 0, 0, &rf)))
		return rc;
	if (rf.data) {
		if (!(x->rope_freqs = sa_malloc((size_t)c->rope_dim / 2 * sizeof(float))))
			return SA_EINTERNAL;
		sa_row_to_f32(rf.type, rf.data, x->rope_freqs, c->rope_dim / 2);
		for (int i = 0; i < c->rope_dim / 2; i++)
			if (!(x->rope_freqs[i] > 0))
				return sa_fail(SA_EDATA, "%s: tensor rope_freqs.weight holds a value <= 0", path);
	}
	return SA_OK;
}

/* ------------------------------------------------------------ fingerprint */

static uint64_t
hash_u64(uint64_t h, uint64_t v)
{
	unsigned char b[8];
	for (int i = 0; i < 8; i++)
		b[i] = (unsigned char)(v >> (8 * i));
	return sa_hash64(h, b, 8);
}

static uint64_t
hash_f32(uint64_t h, float f)
{
	uint32_t u;
	memcpy(&u, &f, 4);
	return hash_u64(h, u);
}

/*
 * Name, type, shape and a sample of the bytes: the whole tensor below
 * 64 KiB, else 16 blocks of 4 KiB, the first, the last and 14 between at
 * offsets i * (nbytes - 4096) / 15, i = 1..14.
 */
static uint64_t
hash_tensor(uint64_t h, const sa_tensor_info *t)
{
	const unsigned char *p = t->data;
	const size_t blk = 4096;

	h = sa_hash64(h, t->name, strlen(t->name) + 1);
	h = hash_u64(h, (uint64_t)t->type);
	h = hash_u64(h, (uint64_t)t->n_dims);
	for (int i = 0; i < 4; i++)
		h = hash_u64(h, (uint64_t)t->ne[i]);
	h = hash_u64(h, t->nbytes);
	if (t->nbytes < 16 * blk)
		return sa_hash64(h, p, t->nbytes);
	for (uint64_t i = 0; i < 16; i++)
		h = sa_hash64(h, p + (uint64_t)(t->nbytes - blk) * i / 15, blk);
	return h;
}

static uint64_t
hash_named(uint64_t h, const sa_gguf *g, const char *name)
{
	const sa_tensor_info *t = sa_gguf_tensor(g, name);
	return t ? hash_tensor(h, t) : h;
}

/* The fingerprint covers the tensors the model uses, in a fixed order, so it
 * does not depend on how a file lays them out. */
static uint64_t
fingerprint(const sa_model *m)
{
	const sa_config *c = &m->cfg;
	const sa_model_impl *x = sa_model_impl_of(m);
	uint64_t h = SA_HASH64_INIT;
	char name[96];

	h = sa_hash64(h, "sa-model-1", 10);
	h = hash_u64(h, (uint64_t)c->arch);
	h = hash_u64(h, (uint64_t)c->n_layer);
	h = hash_u64(h, (uint64_t)c->d_model);
	h = hash_u64(h, (uint64_t)c->n_head);
	h = hash_u64(h, (uint64_t)c->n_head_kv);
	h = hash_u64(h, (uint64_t)c->d_head);
	h = hash_u64(h, (uint64_t)c->d_ff);
	h = hash_u64(h, (uint64_t)c->n_vocab);
	h = hash_u64(h, (uint64_t)c->n_ctx);
	h = hash_u64(h, (uint64_t)c->rope_dim);
	h = hash_u64(h, (uint64_t)c->rope_neox);
	h = hash_f32(h, c->rope_base);
	h = hash_f32(h, c->norm_eps);
	h = hash_f32(h, x->rope_freq_scale);
	h = hash_f32(h, x->kq_scale);

	h = hash_named(h, m->gguf, "token_embd.weight");
	h = hash_named(h, m->gguf, "output_norm.weight");
	h = hash_named(h, m->gguf, "output.weight");
	h = hash_named(h, m->gguf, "rope_freqs.weight");
	for (int l = 0; l < c->n_layer; l++) {
		static const char *const names[] = {
			"attn_norm.weight", "attn_q.weight", "attn_k.weight", "attn_v.weight",
			"attn_output.weight", "attn_q.bias", "attn_k.bias", "attn_v.bias",
			"ffn_norm.weight", "ffn_gate.weight", "ffn_up.weight", "ffn_down.weight",
		};
		for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
			snprintf(name, sizeof name, "blk.%d.%s", l, names[i]);
			h = hash_named(h, m->gguf, name);
		}
	}
	return h;
}

uint64_t
sa_model_fingerprint(const sa_model *m)
{
	return m->fingerprint;
}

/* ------------------------------------------------------ finite weights */

/*
 * A NaN or Inf weight poisons every logit it reaches, and what comes out
 * looks like a model's output ("logprob -nan").  Finding them costs one
 * pass over the weights, which the first forward pass makes anyway.  Only
 * exponent bits are looked at: all ones is Inf or NaN in every float type.
 */
static int64_t
first_nonfinite_row(const sa_matrix *w, int64_t r0, int64_t r1)
{
	size_t rb = sa_type_row_size(w->type, w->cols);

	for (int64_t r = r0; r < r1; r++) {
		const unsigned char *row = (const unsigned char *)w->data + (size_t)r * rb;
		unsigned bad = 0;

		switch (w->type) {
		case SA_TYPE_F32: {
			const uint32_t *u = (const uint32_t *)row;
			for (int64_t i = 0; i < w->cols; i++)
				bad |= (u[i] & 0x7f800000u) == 0x7f800000u;
			break;
		}
		case SA_TYPE_F16: {
			const uint16_t *h = (const uint16_t *)row;
			for (int64_t i = 0; i < w->cols; i++)
				bad |= (h[i] & 0x7c00u) == 0x7c00u;
			break;
		}
		case SA_TYPE_BF16: {
			const uint16_t *h = (const uint16_t *)row;
			for (int64_t i = 0; i < w->cols; i++)
				bad |= (h[i] & 0x7f80u) == 0x7f80u;
			break;
		}
		default: {
			/* the integer quants are always finite; only the fp16
			 * scales can be not */
			int64_t be;
			size_t bb, off[2];
			int ns = sa_type_scales(w->type, off);
			sa_type_block(w->type, &be, &bb);
			for (int64_t i = 0; i < w->cols / be; i++)
				for (int k = 0; k < ns; k++) {
					uint16_t h;
					memcpy(&h, row + i * bb + off[k], 2);
					bad |= (h & 0x7c00u) == 0x7c00u;
				}
			break;
		}
		}
		if (bad)
			return r;
	}
	return -1;
}

struct finite_task {
	const sa_matrix *w;
	int64_t *first_bad;    /* [nchunks], -1 where the chunk is clean */
};

static void
finite_rows(void *arg, int ith, int chunk, int nchunks)
{
	struct finite_task *t = arg;
	int64_t lo, hi;

	(void)ith;
	sa_split(t->w->rows, chunk, nchunks, &lo, &hi);
	t->first_bad[chunk] = first_nonfinite_row(t->w, lo, hi);
}

/* SA_EDATA naming the tensor and the first row of w holding a NaN or Inf. */
static int
check_finite(const sa_model *m, const char *name, const sa_matrix *w)
{
	enum { NCHUNKS = 64 };
	int64_t first_bad[NCHUNKS];
	struct finite_task t = { w, first_bad };
	int nchunks = w->rows < NCHUNKS ? (int)w->rows : NCHUNKS;

	if (!w->data)
		return SA_OK;
	if (nchunks <= 1)
		first_bad[0] = first_nonfinite_row(w, 0, w->rows), nchunks = 1;
	else
		sa_pool_run_chunks(finite_rows, &t, nchunks);
	for (int c = 0; c < nchunks; c++)
		if (first_bad[c] >= 0)
			return sa_fail(SA_EDATA, "%s: tensor %s holds a non-finite value in row %lld",
			    sa_gguf_path(m->gguf), name, (long long)first_bad[c]);
	return SA_OK;
}

static int
check_all_finite(const sa_model *m)
{
	char name[96];
	int rc;

	if ((rc = check_finite(m, "token_embd.weight", &m->tok_embd)) ||
	    (rc = check_finite(m, "output_norm.weight", &m->out_norm)))
		return rc;
	if (m->output.data != m->tok_embd.data &&
	    (rc = check_finite(m, "output.weight", &m->output)))
		return rc;
	for (int l = 0; l < m->cfg.n_layer; l++) {
		const sa_layer *L = &m->layers[l];
		const struct { const char *suffix; const sa_matrix *w; } vec[] = {
			{ "attn_norm.weight", &L->attn_norm }, { "ffn_norm.weight", &L->ffn_norm },
			{ "attn_q.bias", &L->bq }, { "attn_k.bias", &L->bk }, { "attn_v.bias", &L->bv },
		};
		for (int i = 0; i < SA_NMAT; i++) {
			snprintf(name, sizeof name, "blk.%d.%s.weight", l, mat_names[i]);
			if ((rc = check_finite(m, name, &L->w[i])))
				return rc;
		}
		for (size_t i = 0; i < sizeof vec / sizeof *vec; i++) {
			snprintf(name, sizeof name, "blk.%d.%s", l, vec[i].suffix);
			if ((rc = check_finite(m, name, vec[i].w)))
				return rc;
		}
	}
	return SA_OK;
}

/* ------------------------------------------------------------- load, free */

/* Adapters and checkpoints say what they are: without this, the message
 * would be the first model key they lack. */
static int
refuse_other_kinds(const sa_gguf *g, const char *path)
{
	if (sa_gguf_str_is(g, "general.type", "adapter")) {
		if (sa_gguf_has(g, "streamadapter.version"))
			return sa_fail(SA_EDATA, "%s: this is an sa adapter, not a model (give it with -a)", path);
		if (sa_gguf_str_is(g, "adapter.type", "lora"))
			return sa_fail(SA_EDATA, "%s: this is a LoRA adapter, not a model", path);
		return sa_fail(SA_EDATA, "%s: this is an adapter, not a model", path);
	}
	if (sa_gguf_str_is(g, "general.type", "sa-checkpoint"))
		return sa_fail(SA_EDATA, "%s: this is a checkpoint of sa-train, not a model "
		    "(the model is sa-train's -o file)", path);
	return SA_OK;
}

int
sa_model_load(sa_model **out, const char *path)
{
	sa_model_full *full;
	sa_model *m;
	char *arch = NULL;
	int rc;

	*out = NULL;
	if (!(full = sa_calloc(1, sizeof *full)))
		return SA_EINTERNAL;
	m = &full->pub;
	if ((rc = sa_gguf_open(&m->gguf, path)) != SA_OK ||
	    (rc = refuse_other_kinds(m->gguf, path)) != SA_OK)
		goto fail;
	/* Not "missing key general.architecture", as if one key were amiss. */
	if (sa_gguf_n_kv(m->gguf) == 0) {
		rc = sa_fail(SA_EDATA, "%s: no metadata at all (0 keys): a model needs general.architecture, "
		    "its hyperparameters and a tokenizer", path);
		goto fail;
	}
	if ((rc = sa_gguf_get_strdup(m->gguf, "general.architecture", &arch)) != SA_OK)
		goto fail;
	if (!strcmp(arch, "llama"))
		m->cfg.arch = SA_ARCH_LLAMA;
	else if (!strcmp(arch, "qwen2"))
		m->cfg.arch = SA_ARCH_QWEN2;
	else {
		rc = sa_fail(SA_EDATA, "%s: unknown architecture '%.64s' (llama and qwen2 are supported)",
		    path, arch);
		goto fail;
	}
	if ((rc = read_config(m, &full->impl, arch)) != SA_OK ||
	    (rc = bind_all(m, &full->impl)) != SA_OK ||
	    (rc = check_all_finite(m)) != SA_OK)
		goto fail;
	if ((rc = sa_vocab_load(&m->vocab, m->gguf)) != SA_OK)
		goto fail;
	if (sa_vocab_size(m->vocab) != m->cfg.n_vocab) {
		rc = sa_fail(SA_EDATA, "%s: tensor token_embd.weight has %d rows but the vocabulary has %d tokens",
		    path, m->cfg.n_vocab, sa_vocab_size(m->vocab));
		goto fail;
	}
	if (sa_gguf_has(m->gguf, "general.name")) {
		if ((rc = sa_gguf_get_strdup(m->gguf, "general.name", &m->name)) != SA_OK)
			goto fail;
	} else {
		const char *base = strrchr(path, '/');
		base = base ? base + 1 : path;
		if (!(m->name = strdup(base))) {
			rc = sa_fail(SA_EINTERNAL, "out of memory");
			goto fail;
		}
	}
	m->fingerprint = fingerprint(m);
	free(arch);
	*out = m;
	return SA_OK;
fail:
	free(arch);
	sa_model_free(m);
	return rc;
}

void
sa_model_free(sa_model *m)
{
	sa_model_impl *x;

	if (!m)
		return;
	x = sa_model_impl_of(m);
	sa_model_reset_weights(m);
	free(x->base);
	free(x->vecs);
	free(x->rope_freqs);
	free(m->layers);
	free(m->name);
	sa_vocab_free(m->vocab);
	sa_gguf_close(m->gguf);
	free((sa_model_full *)m);
}

int
sa_model_mat_dims(const sa_model *m, int mat, int *d_out, int *d_in)
{
	const sa_config *c = &m->cfg;
	int qd = c->n_head * c->d_head, kvd = c->n_head_kv * c->d_head;
	int io[SA_NMAT][2] = {
		{ qd, c->d_model }, { kvd, c->d_model }, { kvd, c->d_model }, { c->d_model, qd },
		{ c->d_ff, c->d_model }, { c->d_ff, c->d_model }, { c->d_model, c->d_ff },
	};

	if (mat < 0 || mat >= SA_NMAT)
		return sa_fail(SA_EUSAGE, "matrix %d out of range", mat);
	*d_out = io[mat][0];
	*d_in = io[mat][1];
	return SA_OK;
}

/* ------------------------------------------------------ low-rank updates */

static int
check_update(const sa_model *m, int layer, int mat, int rank, const float *B, const float *A)
{
	if (layer < 0 || layer >= m->cfg.n_layer)
		return sa_fail(SA_EUSAGE, "layer %d out of range (the model has %d)", layer, m->cfg.n_layer);
	if (mat < 0 || mat >= SA_NMAT)
		return sa_fail(SA_EUSAGE, "matrix %d out of range", mat);
	if (rank < 0 || rank > (1 << 16) || (rank && (!B || !A)))
		return sa_fail(SA_EUSAGE, "bad low-rank update of rank %d", rank);
	return SA_OK;
}

static int
all_zero(const float *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != 0)
			return 0;
	return 1;
}

struct deq_task {
	const sa_matrix *w;
	float *dst;
};

static void
deq_rows(void *arg, int ith, int chunk, int nchunks)
{
	struct deq_task *t = arg;
	int64_t lo, hi;

	sa_split(t->w->rows, chunk, nchunks, &lo, &hi);
	sa_rows_to_f32(t->w, lo, hi, t->dst + lo * t->w->cols);
}

/*
 * The first merge into a matrix replaces it by an F32 copy; B*A is added to
 * the copy.  A zero update changes nothing and makes no copy, so the model
 * computes exactly as before.
 */
int
sa_model_merge_lowrank(sa_model *m, int layer, int mat, int rank,
    const float *B, const float *A)
{
	sa_model_impl *x = sa_model_impl_of(m);
	size_t i = (size_t)layer * SA_NMAT + mat;
	sa_matrix *w;
	int rc;

	if ((rc = check_update(m, layer, mat, rank, B, A)) != SA_OK)
		return rc;
	w = &m->layers[layer].w[mat];
	if (!rank || all_zero(B, (size_t)w->rows * rank) || all_zero(A, (size_t)rank * w->cols))
		return SA_OK;
	if (!x->owned && !(x->owned = sa_calloc((size_t)m->cfg.n_layer * SA_NMAT, sizeof *x->owned)))
		return SA_EINTERNAL;
	if (!x->owned[i]) {
		struct deq_task t = { &x->base[i], NULL };
		if (!(t.dst = sa_malloc((size_t)w->rows * w->cols * sizeof(float))))
			return SA_EINTERNAL;
		sa_pool_run_chunks(deq_rows, &t, 0);
		x->owned[i] = t.dst;
		*w = (sa_matrix){ SA_TYPE_F32, w->rows, w->cols, t.dst };
	}
	m->merged = x->owned;
	/* W [d_out][d_in] += B [d_out][rank] A [rank][d_in] */
	sa_sgemm(CblasNoTrans, (int)w->rows, (int)w->cols, rank, 1.0f, B, rank, A, (int)w->cols,
	    1.0f, x->owned[i], (int)w->cols);
	return SA_OK;
}

/* Path s of matrix w held dense: D [d_out][d_in] = B A of what it held,
 * if anything, then += B [d_out][rank] A [rank][d_in]. */
static int
side_dense(sa_lowrank *s, const sa_matrix *w, int rank, const float *B, const float *A)
{
	int rows = (int)w->rows, cols = (int)w->cols;

	if (!s->D) {
		if (!(s->D = sa_calloc((size_t)rows * cols, sizeof *s->D)))
			return SA_EINTERNAL;
		if (s->rank)
			sa_sgemm(CblasNoTrans, rows, cols, s->rank, 1.0f, s->B, s->rank, s->A, cols, 0.0f,
			    s->D, cols);
		if (!s->a_shared)
			free(s->A);
		free(s->B);
		s->A = s->B = NULL;
		s->a_shared = 0;
	}
	sa_sgemm(CblasNoTrans, rows, cols, rank, 1.0f, B, rank, A, cols, 1.0f, s->D, cols);
	s->rank += rank;
	return SA_OK;
}

/* sa_side_add, A kept by reference where the path holds it alone if shared. */
static int
side_add(sa_lowrank **side, const sa_model *m, int layer, int mat, int rank, const float *B,
    const float *A, int shared)
{
	const sa_matrix *w;
	sa_lowrank *s;
	float *nA, *nB;
	int rc, r0;

	if ((rc = check_update(m, layer, mat, rank, B, A)) != SA_OK)
		return rc;
	w = &m->layers[layer].w[mat];
	if (!rank || all_zero(B, (size_t)w->rows * rank) || all_zero(A, (size_t)rank * w->cols))
		return SA_OK;
	if (!*side && !(*side = sa_calloc((size_t)m->cfg.n_layer * SA_NMAT, sizeof **side)))
		return SA_EINTERNAL;
	s = &(*side)[(size_t)layer * SA_NMAT + mat];
	r0 = s->rank;
	if (s->D || (int64_t)(r0 + rank) * (w->rows + w->cols) > w->rows * w->cols)
		return side_dense(s, w, rank, B, A);
	shared = shared && !r0;
	nA = shared ? (float *)A : sa_malloc((size_t)(r0 + rank) * w->cols * sizeof(float));
	nB = sa_malloc((size_t)w->rows * (r0 + rank) * sizeof(float));
	if (!nA || !nB) {
		if (!shared)
			free(nA);
		free(nB);
		return SA_EINTERNAL;
	}
	/* A gains rows, B gains columns. */
	if (r0)
		memcpy(nA, s->A, (size_t)r0 * w->cols * sizeof(float));
	if (!shared)
		memcpy(nA + (size_t)r0 * w->cols, A, (size_t)rank * w->cols * sizeof(float));
	for (int64_t o = 0; o < w->rows; o++) {
		if (r0)
			memcpy(nB + o * (r0 + rank), s->B + o * r0, (size_t)r0 * sizeof(float));
		memcpy(nB + o * (r0 + rank) + r0, B + o * rank, (size_t)rank * sizeof(float));
	}
	if (!s->a_shared)
		free(s->A);
	free(s->B);
	s->A = nA;
	s->B = nB;
	s->a_shared = shared;
	s->rank = r0 + rank;
	return SA_OK;
}

int
sa_side_add(sa_lowrank **side, const sa_model *m, int layer, int mat, int rank,
    const float *B, const float *A)
{
	return side_add(side, m, layer, mat, rank, B, A, 0);
}

int
sa_side_add_shared(sa_lowrank **side, const sa_model *m, int layer, int mat, int rank,
    const float *B, const float *A)
{
	return side_add(side, m, layer, mat, rank, B, A, 1);
}

/* A copy of the n floats at p, or NULL for none. */
static float *
floats_dup(const float *p, size_t n, int *rc)
{
	float *q;

	if (!p)
		return NULL;
	if (!(q = sa_malloc(n * sizeof *q))) {
		*rc = SA_EINTERNAL;
		return NULL;
	}
	return memcpy(q, p, n * sizeof *q);
}

int
sa_side_copy(sa_lowrank **side, const sa_model *m, const sa_lowrank *from)
{
	int rc = SA_OK;

	if (!from)
		return SA_OK;
	if (!(*side = sa_calloc((size_t)m->cfg.n_layer * SA_NMAT, sizeof **side)))
		return SA_EINTERNAL;
	for (size_t i = 0; i < (size_t)m->cfg.n_layer * SA_NMAT && rc == SA_OK; i++) {
		const sa_matrix *w = &m->layers[i / SA_NMAT].w[i % SA_NMAT];
		const sa_lowrank *f = &from[i];
		sa_lowrank *s = &(*side)[i];

		s->rank = f->rank;
		s->a_shared = f->a_shared;
		s->A = f->a_shared ? f->A : floats_dup(f->A, (size_t)f->rank * w->cols, &rc);
		s->B = floats_dup(f->B, (size_t)w->rows * f->rank, &rc);
		s->D = floats_dup(f->D, (size_t)w->rows * w->cols, &rc);
	}
	return rc;
}

size_t
sa_side_bytes(const sa_lowrank *side, const sa_model *m)
{
	size_t b = 0;

	for (size_t i = 0; side && i < (size_t)m->cfg.n_layer * SA_NMAT; i++) {
		const sa_matrix *w = &m->layers[i / SA_NMAT].w[i % SA_NMAT];
		b += side[i].D ? (size_t)(w->rows * w->cols) * sizeof(float) :
		    (size_t)side[i].rank * (size_t)(w->rows + (side[i].a_shared ? 0 : w->cols)) *
		    sizeof(float);
	}
	return b;
}

void
sa_side_free(sa_lowrank *side, const sa_model *m)
{
	if (!side)
		return;
	for (size_t i = 0; i < (size_t)m->cfg.n_layer * SA_NMAT; i++) {
		if (!side[i].a_shared)
			free(side[i].A);
		free(side[i].B);
		free(side[i].D);
	}
	free(side);
}

int
sa_model_add_side(sa_model *m, int layer, int mat, int rank,
    const float *B, const float *A)
{
	return sa_side_add(&m->side, m, layer, mat, rank, B, A);
}

void
sa_model_reset_weights(sa_model *m)
{
	sa_model_impl *x = sa_model_impl_of(m);
	size_t n = (size_t)m->cfg.n_layer * SA_NMAT;

	if (x->owned) {
		for (size_t i = 0; i < n; i++) {
			if (x->owned[i])
				m->layers[i / SA_NMAT].w[i % SA_NMAT] = x->base[i];
			free(x->owned[i]);
		}
		free(x->owned);
		x->owned = NULL;
	}
	m->merged = NULL;
	sa_side_free(m->side, m);
	m->side = NULL;
}
