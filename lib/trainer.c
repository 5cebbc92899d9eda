/*
 * trainer.c - the two trainers of sa-train(1): pretraining every weight of
 * a base model, and training the StreamAdapter mapping of a frozen one.
 *
 * Both share one step: draw the step's episodes (train_data.c), run them
 * forward and backward on the workers until the step's token budget is
 * met, average and clip the gradient, and take an AdamW step with warmup
 * and cosine decay (optim.c).  A checkpoint holds the parameters, both Adam
 * moments, the step and the data stream's state, so a resumed run
 * continues exactly where the stopped one was.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "sa.h"
#include "train_impl.h"

/*
 * The items of a step (micro-batches, adapter episodes) run on sa_tworkers:
 * all data of the step is drawn first, on the caller's thread and in the
 * order a single thread would draw it, so the data stream does not depend
 * on the number of threads, and neither do the sums (see sa_tworkers_run).
 */
typedef struct worker {
	sa_tact *act;
	/* adapter */
	sa_tctx *tctx;
	sa_tside *side;      /* [n_layer*SA_NMAT]: W1, W2 shared, H and dH its own,
	                      * dW1 and dW2 into the gradient of the item it runs */
	float **H, **dH;     /* per adapted (l, m): [r][Dkv] */
	float *dh_buf;       /* [Hk][r][dh] */
	/* the least-squares memory, per layer: what its backward needs */
	float **u, **phi, **beta;   /* [max_tokens][Hk][dk], [..][Hk][dk], [..][Hk] */
	float **G, **S, **M;        /* [Hk][dh][dk], [Hk][dk][dk], [Hk][dh][dk] */
	float *dM;                  /* [Hk][dh][dk] */
} worker;

/* An adapted matrix's tensors: views into the optimiser's block (the
 * least-squares memory has no Q, g, b: sizes 0). */
typedef struct amat { float *Q, *g, *b, *W1, *W2; size_t nQ, ng, nb, nW1, nW2; } amat;
/* A layer's memory tensors (SA_MAPPING_LSQ): views into the block. */
typedef struct amem { float *P, *p, *w, *c; size_t nP, np, nw, nc; } amem;

/* Micro-batches of B sequences of T tokens, drawn before they run. */
typedef struct micro_batches {
	int B, T, cap;
	int *in, *tgt;       /* [cap][B][T] inputs and next-token targets */
	float *loss;         /* [cap] mean loss of each */
	int *seq;            /* [B][T+1] scratch for drawing */
	unsigned char *unscored;   /* [B][T+1] 1: the token at seq's place is no target */
	/* evaluation of in-context copying: which micro-batch, and the counts */
	int map_item, *first_sight;   /* first_sight [B][T]: 1 where a word is new */
	int seen_ok, seen_n, first_ok, first_n;
} micro_batches;

struct sa_trainer {
	sa_train_opts o;     /* the caller's, the defaults resolved */
	sa_model *base;      /* adapter: the frozen base; pretrain: the init model */
	sa_gguf *vocab_gguf; /* pretrain: the tokenizer's keys, copied into results */
	sa_vocab *vocab;     /* pretrain: its own; adapter: the base's */
	sa_tmodel *tm;       /* the model (trained, or the frozen base) */
	sa_adapter *adapter; /* adapter: the trained tensors are copied in to save */
	amat *ap;            /* adapter: [n_layer*SA_NMAT] views into opt.p */
	amem *am;            /* adapter, LSQ: [n_layer] views into opt.p */
	sa_optim opt;
	sa_tdata data;
	uint64_t rng;        /* the data stream */
	long step;
	sa_tworkers *team;
	worker *workers;
	int n_workers;
	micro_batches mb;    /* pretrain */
	sa_episode *eps;     /* adapter: one step's episodes */
	int eps_cap;
};

/* The index of the largest of x[0..n), the first of equals. */
static int
argmax(const float *x, int n)
{
	int best = 0;

	for (int j = 1; j < n; j++)
		if (x[j] > x[best])
			best = j;
	return best;
}

/* ---------------------------------------------------------------- options */

/* The checks of combinations, the mode's default mix, and shares
 * without data dropped. */
static int
resolve_opts(sa_train_opts *o)
{
	static const double pre[4] = { 0.5, 0.25, 0.25, 0 }, ad[4] = { 0, 0.5, 0.5, 0 };
	double *mix = o->mix;

	if (!o->ckpt)
		return sa_fail(SA_EUSAGE, "no checkpoint directory");
	if (o->mode != SA_TRAIN_PRETRAIN && o->mode != SA_TRAIN_ADAPTER)
		return sa_fail(SA_EUSAGE, "--pretrain and --adapter are exclusive");
	if (o->mode == SA_TRAIN_PRETRAIN && !o->vocab && !o->init)
		return sa_fail(SA_EUSAGE, "--pretrain needs --vocab (or --init)");
	if (!isnan(o->gate_bias) && (o->mode != SA_TRAIN_ADAPTER || o->init))
		return sa_fail(SA_EUSAGE, "--gate-bias sets the gates of a new adapter (--adapter, no --init)");
	if ((o->mapping == SA_MAPPING_LSQ || o->d_key || o->lambda || o->value_offset) &&
	    (o->mode != SA_TRAIN_ADAPTER || o->init))
		return sa_fail(SA_EUSAGE,
		    "--kind, --d-key, --lambda and --value-offset make a new adapter (--adapter, no --init)");
	if (o->mapping == SA_MAPPING_LSQ && (o->rank || !isnan(o->gate_bias)))
		return sa_fail(SA_EUSAGE, "-r and --gate-bias are for --kind pool");
	if (o->mapping != SA_MAPPING_LSQ && (o->d_key || o->lambda || o->value_offset))
		return sa_fail(SA_EUSAGE, "--d-key, --lambda and --value-offset are for --kind lsq");
	if (o->rebind && (o->mode != SA_TRAIN_ADAPTER || !o->init))
		return sa_fail(SA_EUSAGE, "--rebind goes with --adapter and --init");
	if (mix[0] + mix[1] + mix[2] + mix[3] <= 0)
		memcpy(mix, o->mode == SA_TRAIN_PRETRAIN ? pre : ad, sizeof o->mix);
	if (mix[0] > 0 && !o->n_texts)
		mix[0] = 0;
	if (mix[1] > 0 && !o->n_tasks)
		mix[1] = 0;
	if (mix[2] > 0 && !o->pool && !o->map_vocab)
		mix[2] = 0;
	if (mix[3] > 0 && o->mode != SA_TRAIN_PRETRAIN)
		return sa_fail(SA_EUSAGE, "--mix: repeated-span episodes are for --pretrain");
	if (mix[3] > 0 && !o->n_texts)
		mix[3] = 0;
	if (mix[0] + mix[1] + mix[2] + mix[3] <= 0)
		return sa_fail(SA_EUSAGE, "no training data: give --text, --task, --pool or --map-vocab");
	if (o->map_vocab && o->mode == SA_TRAIN_PRETRAIN && !o->n_texts)
		return sa_fail(SA_EUSAGE, "--map-vocab draws words from the text: give --text");
	if (o->kmin > o->kmax)
		return sa_fail(SA_EUSAGE, "--kmin exceeds --kmax");
	if (o->word_labels > 0 && (o->mode == SA_TRAIN_PRETRAIN || !o->map_vocab || !o->n_texts))
		return sa_fail(SA_EUSAGE, "--word-labels goes with --adapter, --map-vocab and --text");
	return SA_OK;
}

/* ------------------------------------------------------------------ model */

/* DIR/vocab.gguf from a TSV of id, piece, score, type (SentencePiece order). */
static int
vocab_from_tsv(const char *tsv, const char *path)
{
	char *data, *line, *save = NULL;
	size_t len;
	sa_str *pieces = NULL;
	float *scores = NULL;
	int32_t *types = NULL;
	uint64_t n = 0, cap = 0;
	sa_gguf_writer *w = NULL;
	int rc;

	if ((rc = sa_file_read(tsv, &data, &len)) != SA_OK)
		return rc;
	for (line = strtok_r(data, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *f[4];
		int nf = 0;
		for (char *p = line; nf < 4; nf++) {
			f[nf] = p;
			char *tab = strchr(p, '\t');
			if (!tab) {
				nf++;
				break;
			}
			*tab = 0;
			p = tab + 1;
		}
		if (nf < 4 || !strcmp(f[0], "id"))
			continue;
		if (n == cap) {
			void *p1, *p2, *p3;
			cap = cap ? cap * 2 : 1024;
			if ((p1 = realloc(pieces, cap * sizeof *pieces)))
				pieces = p1;
			if ((p2 = realloc(scores, cap * sizeof *scores)))
				scores = p2;
			if ((p3 = realloc(types, cap * sizeof *types)))
				types = p3;
			if (!p1 || !p2 || !p3) {
				rc = sa_fail(SA_EINTERNAL, "out of memory");
				goto done;
			}
		}
		if (strtoull(f[0], NULL, 10) != n) {
			rc = sa_fail(SA_EDATA, "%s: ids must count from 0 in order", tsv);
			goto done;
		}
		pieces[n].s = f[1];
		pieces[n].n = strlen(f[1]);
		scores[n] = strtof(f[2], NULL);
		types[n] = (int32_t)strtol(f[3], NULL, 10);
		n++;
	}
	if (n < 4) {
		rc = sa_fail(SA_EDATA, "%s: not a vocabulary", tsv);
		goto done;
	}
	if (!(w = sa_gguf_writer_new())) {
		rc = sa_fail(SA_EINTERNAL, "out of memory");
		goto done;
	}
	if ((rc = sa_gguf_writer_set_str(w, "general.architecture", "llama")) != SA_OK ||
	    (rc = sa_gguf_writer_set_str(w, "tokenizer.ggml.model", "llama")) != SA_OK ||
	    (rc = sa_gguf_writer_set_strs(w, "tokenizer.ggml.tokens", n, pieces)) != SA_OK ||
	    (rc = sa_gguf_writer_set_arr(w, "tokenizer.ggml.scores", SA_GGUF_F32, n, scores)) != SA_OK ||
	    (rc = sa_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", SA_GGUF_I32, n, types)) != SA_OK ||
	    (rc = sa_gguf_writer_set_u32(w, "tokenizer.ggml.unknown_token_id", 0)) != SA_OK ||
	    (rc = sa_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 1)) != SA_OK ||
	    (rc = sa_gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 2)) != SA_OK ||
	    (rc = sa_gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", 1)) != SA_OK ||
	    (rc = sa_gguf_writer_set_bool(w, "tokenizer.ggml.add_eos_token", 0)) != SA_OK)
		goto done;
	rc = sa_gguf_writer_save(w, path);
done:
	sa_gguf_writer_free(w);
	free(pieces);
	free(scores);
	free(types);
	free(data);
	return rc;
}

/* Pretraining: a new model of the options' shape, or --init's weights. */
static int
build_pretrain_model(sa_trainer *t)
{
	const sa_train_opts *o = &t->o;
	const char *vpath = o->vocab;
	char path[4096];
	sa_config c = { 0 };
	size_t n;
	int rc;

	if (o->init) {
		if ((rc = sa_model_load(&t->base, o->init)) != SA_OK ||
		    (rc = sa_tmodel_from_model(&t->tm, t->base)) != SA_OK)
			return rc;
		vpath = o->init;
	} else if ((n = strlen(vpath)) > 4 && !strcmp(vpath + n - 4, ".tsv")) {
		snprintf(path, sizeof path, "%s/vocab.gguf", o->ckpt);
		if ((rc = vocab_from_tsv(vpath, path)) != SA_OK)
			return rc;
		vpath = path;
	}
	if ((rc = sa_gguf_open(&t->vocab_gguf, vpath)) != SA_OK ||
	    (rc = sa_vocab_load(&t->vocab, t->vocab_gguf)) != SA_OK || o->init)
		return rc;
	c.arch = SA_ARCH_LLAMA;
	c.n_layer = o->layers;
	c.d_model = o->dim;
	c.n_head = o->heads;
	c.n_head_kv = o->kv_heads;
	if (o->dim % o->heads || o->heads % o->kv_heads)
		return sa_fail(SA_EUSAGE, "--dim must divide by --heads, and --heads by --kv-heads");
	c.d_head = o->dim / o->heads;
	c.d_ff = o->ff ? o->ff : (o->dim * 8 / 3 + 63) / 64 * 64;
	c.n_vocab = sa_vocab_size(t->vocab);
	c.n_ctx = o->ctx;
	c.rope_dim = c.d_head;
	c.rope_base = o->rope_base;
	c.norm_eps = 1e-5f;
	return sa_tmodel_new(&t->tm, &c, o->tied, o->seed);
}

/* Every weight is trained; the matrices and embeddings decay. */
static int
build_pretrain_block(sa_trainer *t)
{
	const sa_config *c = &t->tm->cfg;
	sa_tmodel *tm = t->tm;
	float wd = (float)t->o.wd;
	int rc;

	if ((rc = sa_tmodel_want_grads(tm, 1)) != SA_OK ||
	    (rc = sa_optim_init(&t->opt, tm->params, tm->grads, tm->n_params)) != SA_OK ||
	    (rc = sa_optim_add_range(&t->opt, tm->tok_embd, (size_t)c->n_vocab * c->d_model, wd, 1)) != SA_OK)
		return rc;
	for (int l = 0; l < c->n_layer; l++)
		for (int m = 0; m < SA_NMAT; m++) {
			int dout, din;
			sa_tmodel_mat_dims(c, m, &dout, &din);
			if ((rc = sa_optim_add_range(&t->opt, tm->layers[l].w[m], (size_t)dout * din, wd, 1)) != SA_OK)
				return rc;
		}
	if (!tm->tied)
		rc = sa_optim_add_range(&t->opt, tm->output, (size_t)c->n_vocab * c->d_model, wd, 1);
	return rc;
}

/*
 * A gate of 0.95 (bias 3) keeps about 20 chunks, and the state of a long
 * context grows to many times that of the short ones training mostly sees;
 * a lower bias bounds it nearer their size.
 */
static void
set_gate_bias(sa_adapter *a, float bias)
{
	for (int l = 0; l < a->n_layer; l++)
		for (int m = 0; m < SA_NMAT; m++) {
			sa_adapter_mat *am = SA_ADAPTER_MAT(a, l, m);
			if (sa_adapted(a->mats, m))
				for (int i = 0; i < a->n_head_kv * a->rank; i++)
					am->b[i] = bias;
		}
	a->fingerprint = sa_adapter_fingerprint(a);
}

/* Adapter training: the frozen base, and a new adapter or --init's. */
static int
build_adapter_model(sa_trainer *t)
{
	const sa_train_opts *o = &t->o;
	int rc;

	if ((rc = sa_model_load(&t->base, o->model)) != SA_OK)
		return rc;
	t->vocab = t->base->vocab;
	if ((rc = sa_tmodel_view(&t->tm, t->base)) != SA_OK)
		return rc;
	if (!o->init && o->mapping == SA_MAPPING_LSQ)
		return sa_adapter_init_lsq(&t->adapter, t->base, o->d_key ? o->d_key : 64,
		    o->lambda > 0 ? (float)o->lambda : 1.0f, o->value_offset, SA_KEYS_KV, o->mats, o->seed, 0);
	if (!o->init) {
		rc = sa_adapter_init(&t->adapter, t->base, o->rank ? o->rank : 16, o->chunk, o->mats,
		    o->seed, 0);
		if (rc == SA_OK && !isnan(o->gate_bias))
			set_gate_bias(t->adapter, (float)o->gate_bias);
		return rc;
	}
	if ((rc = sa_adapter_load(&t->adapter, o->init)) != SA_OK)
		return rc;
	/* the shapes are still checked below; the fingerprint is set anew
	 * from the tensors once they are copied in */
	if (o->rebind)
		t->adapter->model_fingerprint = t->base->fingerprint;
	if ((rc = sa_adapter_check(t->adapter, t->base)) != SA_OK)
		return rc;
	if (o->rank && o->rank != t->adapter->rank) {
		sa_adapter *grown;
		if ((rc = sa_adapter_grow(&grown, t->adapter, t->base, o->rank, o->seed)) != SA_OK)
			return rc;
		sa_adapter_free(t->adapter);
		t->adapter = grown;
	}
	return SA_OK;
}

/* The adapter's tensors in one block, so that AdamW and checkpoints see
 * one array: per adapted matrix Q, g, b, W1, W2 (LSQ: W1, W2), then for
 * LSQ per layer the memory's P, p, w, c.  W1 and W2 decay; the gates (g, b;
 * LSQ: w, c) learn at gate_lr times the rate. */
static int
build_adapter_block(sa_trainer *t)
{
	const sa_config *c = &t->base->cfg;
	const sa_adapter *a = t->adapter;
	int Hk = c->n_head_kv, dh = c->d_head, r = a->rank, Dkv = Hk * dh, rc = SA_OK;
	float *p = NULL, *g = NULL;
	size_t n = 0;

	if (!(t->ap = sa_calloc((size_t)c->n_layer * SA_NMAT, sizeof *t->ap)) ||
	    !(t->am = sa_calloc((size_t)c->n_layer, sizeof *t->am)))
		return SA_EINTERNAL;
	for (int pass = 0; pass < 2; pass++) {
		size_t at = 0;
		for (int l = 0; l < c->n_layer; l++)
			for (int m = 0; m < SA_NMAT; m++) {
				if (!sa_adapted(a->mats, m))
					continue;
				int dout, din;
				sa_model_mat_dims(t->base, m, &dout, &din);
				size_t pool = a->mapping == SA_MAPPING_POOL;
				size_t sz[5] = { pool * Hk * r * dh, pool * Hk * dh, pool * Hk * r,
				    (size_t)dout * Dkv, (size_t)r * din };
				if (pass == 1) {
					amat *P = &t->ap[l * SA_NMAT + m];
					float **pp[5] = { &P->Q, &P->g, &P->b, &P->W1, &P->W2 };
					size_t *np[5] = { &P->nQ, &P->ng, &P->nb, &P->nW1, &P->nW2 };
					const sa_adapter_mat *A = SA_ADAPTER_MAT(a, l, m);
					const float *src[5] = { A->Q, A->g, A->b, A->W1, A->W2 };
					size_t o = at;
					for (int k = 0; k < 5 && rc == SA_OK; k++) {
						*pp[k] = sz[k] ? p + o : NULL;
						*np[k] = sz[k];
						if (!sz[k])
							continue;
						memcpy(p + o, src[k], sz[k] * sizeof(float));
						if (k >= 3)
							rc = sa_optim_add_range(&t->opt, p + o, sz[k], (float)t->o.wd, 1);
						else if (k >= 1 && t->o.gate_lr != 1)
							rc = sa_optim_add_range(&t->opt, p + o, sz[k], 0, (float)t->o.gate_lr);
						o += sz[k];
					}
				}
				at += sz[0] + sz[1] + sz[2] + sz[3] + sz[4];
			}
		/* the memory's tensors, per layer: the write gate (w, c) learns at
		 * gate_lr times the rate, as the pool's gates */
		for (int l = 0; a->mapping == SA_MAPPING_LSQ && l < c->n_layer; l++) {
			size_t dk = a->d_key, dx = sa_adapter_memory_params(a, l).dx;
			size_t sz[4] = { Hk * dk * dx, a->mem[l].p ? Hk * dk : 0, Hk * dx, (size_t)Hk };
			if (pass == 1) {
				amem *P = &t->am[l];
				float **pp[4] = { &P->P, &P->p, &P->w, &P->c };
				size_t *np[4] = { &P->nP, &P->np, &P->nw, &P->nc };
				const sa_adapter_memory *A = &a->mem[l];
				const float *src[4] = { A->P, A->p, A->w, A->c };
				size_t o = at;
				for (int k = 0; k < 4 && rc == SA_OK; k++) {
					*pp[k] = sz[k] ? p + o : NULL;
					*np[k] = sz[k];
					if (!sz[k])
						continue;
					memcpy(p + o, src[k], sz[k] * sizeof(float));
					if (k >= 2 && t->o.gate_lr != 1)
						rc = sa_optim_add_range(&t->opt, p + o, sz[k], 0, (float)t->o.gate_lr);
					o += sz[k];
				}
			}
			at += sz[0] + sz[1] + sz[2] + sz[3];
		}
		if (pass == 0) {
			n = at;
			if (!(p = sa_calloc(n, sizeof(float))) || !(g = sa_calloc(n, sizeof(float)))) {
				free(p);
				return SA_EINTERNAL;
			}
			/* p and g are the trainer's from here */
			if ((rc = sa_optim_init(&t->opt, p, g, n)) != SA_OK)
				return rc;
		}
	}
	return rc;
}

/* Copy the block back into the adapter (for saving). */
static void
sync_adapter(sa_trainer *t)
{
	sa_adapter *a = t->adapter;

	for (int l = 0; l < a->n_layer; l++)
		for (int m = 0; m < SA_NMAT; m++) {
			if (!sa_adapted(a->mats, m))
				continue;
			amat *P = &t->ap[l * SA_NMAT + m];
			sa_adapter_mat *A = SA_ADAPTER_MAT(a, l, m);
			if (a->mapping == SA_MAPPING_POOL) {
				memcpy(A->Q, P->Q, P->nQ * sizeof(float));
				memcpy(A->g, P->g, P->ng * sizeof(float));
				memcpy(A->b, P->b, P->nb * sizeof(float));
			}
			memcpy(A->W1, P->W1, P->nW1 * sizeof(float));
			memcpy(A->W2, P->W2, P->nW2 * sizeof(float));
		}
	for (int l = 0; a->mapping == SA_MAPPING_LSQ && l < a->n_layer; l++) {
		const amem *P = &t->am[l];
		sa_adapter_memory *A = &a->mem[l];
		memcpy(A->P, P->P, P->nP * sizeof(float));
		if (P->np)
			memcpy(A->p, P->p, P->np * sizeof(float));
		memcpy(A->w, P->w, P->nw * sizeof(float));
		memcpy(A->c, P->c, P->nc * sizeof(float));
	}
	/* the fingerprint covers the tensors: set it anew after copying them */
	a->fingerprint = sa_adapter_fingerprint(a);
}

/* ---------------------------------------------------------------- workers */

/* Each worker's side paths, mapping state and buffers for adapter episodes. */
static int
build_adapter_worker(sa_trainer *t, worker *w)
{
	const sa_config *c = &t->tm->cfg;
	const sa_adapter *a = t->adapter;
	size_t n = (size_t)c->n_layer * SA_NMAT;
	int Dkv = c->n_head_kv * c->d_head;

	if (!(w->side = sa_calloc(n, sizeof *w->side)) || !(w->H = sa_calloc(n, sizeof *w->H)) ||
	    !(w->dH = sa_calloc(n, sizeof *w->dH)) ||
	    !(w->dh_buf = sa_malloc((size_t)a->rank * Dkv * sizeof(float))))
		return SA_EINTERNAL;
	for (int l = 0; l < c->n_layer; l++)
		for (int m = 0; m < SA_NMAT; m++) {
			if (!sa_adapted(a->mats, m))
				continue;
			size_t i = (size_t)l * SA_NMAT + m;
			if (!(w->H[i] = sa_calloc((size_t)a->rank * Dkv, sizeof(float))) ||
			    !(w->dH[i] = sa_calloc((size_t)a->rank * Dkv, sizeof(float))))
				return SA_EINTERNAL;
			w->side[i].rank = a->rank;
			w->side[i].W1 = t->ap[i].W1;
			w->side[i].W2 = t->ap[i].W2;
			w->side[i].H = w->H[i];
			w->side[i].dH = w->dH[i];
		}
	/* a context of up to kmax demonstrations, several segments long */
	int max_tokens = t->o.seq * SA_EPISODE_WINDOWS;
	if (a->mapping == SA_MAPPING_POOL)
		return sa_tctx_new(&w->tctx, c->n_layer, c->n_head_kv, c->d_head, Dkv, a->rank,
		    a->chunk, a->mats, max_tokens);
	/* the memory needs the context's keys and values alone, and per layer
	 * what its backward reads */
	size_t Hk = c->n_head_kv, dh = c->d_head, dk = a->d_key, L = c->n_layer;
	if (!(w->u = sa_calloc(L, sizeof *w->u)) || !(w->phi = sa_calloc(L, sizeof *w->phi)) ||
	    !(w->beta = sa_calloc(L, sizeof *w->beta)) || !(w->G = sa_calloc(L, sizeof *w->G)) ||
	    !(w->S = sa_calloc(L, sizeof *w->S)) || !(w->M = sa_calloc(L, sizeof *w->M)) ||
	    !(w->dM = sa_malloc(Hk * dh * dk * sizeof *w->dM)))
		return SA_EINTERNAL;
	for (size_t l = 0; l < L; l++)
		if (!(w->u[l] = sa_malloc((size_t)max_tokens * Hk * dk * sizeof(float))) ||
		    !(w->phi[l] = sa_malloc((size_t)max_tokens * Hk * dk * sizeof(float))) ||
		    !(w->beta[l] = sa_malloc((size_t)max_tokens * Hk * sizeof(float))) ||
		    !(w->G[l] = sa_malloc(Hk * dh * dk * sizeof(float))) ||
		    !(w->S[l] = sa_malloc(Hk * dk * dk * sizeof(float))) ||
		    !(w->M[l] = sa_malloc(Hk * dh * dk * sizeof(float))))
			return SA_EINTERNAL;
	return sa_tctx_new(&w->tctx, c->n_layer, c->n_head_kv, c->d_head,
	    sa_adapter_memory_params(a, 0).dx, 1, 1, 0, max_tokens);
}

/* Workers, each with activations for a micro-batch or an episode's queries;
 * pretraining has no use for more than a step's micro-batches. */
static int
build_workers(sa_trainer *t)
{
	const sa_train_opts *o = &t->o;
	int T = o->seq, B = o->mode == SA_TRAIN_PRETRAIN ? o->micro : o->queries, rc;
	micro_batches *mb = &t->mb;

	t->n_workers = sa_get_threads();
	if (o->mode == SA_TRAIN_PRETRAIN) {
		long per_step = (o->batch_tokens + (long)B * T - 1) / ((long)B * T);
		if (t->n_workers > per_step)
			t->n_workers = (int)per_step;
	}
	if ((rc = sa_tworkers_new(&t->team, t->n_workers, t->opt.n)) != SA_OK)
		return rc;
	t->n_workers = sa_tworkers_count(t->team);
	if (!(t->workers = sa_calloc(t->n_workers, sizeof *t->workers)))
		return SA_EINTERNAL;
	if (o->mode == SA_TRAIN_ADAPTER && t->tm->cfg.n_layer > 256)
		return sa_fail(SA_EDATA, "too many layers");
	for (int i = 0; i < t->n_workers; i++) {
		if ((rc = sa_tact_new(&t->workers[i].act, &t->tm->cfg, B, T)) != SA_OK)
			return rc;
		if (o->mode == SA_TRAIN_ADAPTER && (rc = build_adapter_worker(t, &t->workers[i])) != SA_OK)
			return rc;
	}
	mb->B = B;
	mb->T = T;
	if (!(mb->seq = sa_malloc((size_t)B * (T + 1) * sizeof *mb->seq)) ||
	    !(mb->first_sight = sa_malloc((size_t)B * T * sizeof *mb->first_sight)) ||
	    !(mb->unscored = sa_calloc((size_t)B * (T + 1), 1)))
		return SA_EINTERNAL;
	return SA_OK;
}

static void
free_worker(worker *w, int n_mat, int n_layer)
{
	sa_tact_free(w->act);
	sa_tctx_free(w->tctx);
	for (int l = 0; w->u && l < n_layer; l++) {
		free(w->u[l]);
		free(w->phi ? w->phi[l] : NULL);
		free(w->beta ? w->beta[l] : NULL);
		free(w->G ? w->G[l] : NULL);
		free(w->S ? w->S[l] : NULL);
		free(w->M ? w->M[l] : NULL);
	}
	free(w->u);
	free(w->phi);
	free(w->beta);
	free(w->G);
	free(w->S);
	free(w->M);
	free(w->dM);
	for (int i = 0; i < n_mat && w->H; i++) {
		free(w->H[i]);
		free(w->dH ? w->dH[i] : NULL);
	}
	free(w->side);
	free(w->H);
	free(w->dH);
	free(w->dh_buf);
}

/* ---------------------------------------------------------- the trainer */

void
sa_train_opts_default(sa_train_opts *o)
{
	*o = (sa_train_opts){
		.dim = 256, .layers = 6, .heads = 8, .kv_heads = 4, .ctx = 512, .tied = 1,
		.save_type = SA_TYPE_F16, .rope_base = 10000, .chunk = 64,
		.kmin = 1, .kmax = 64, .queries = 8, .text_segs = 1,
		.mats = 1u << SA_MAT_Q | 1u << SA_MAT_K | 1u << SA_MAT_V | 1u << SA_MAT_O,
		.steps = 1000, .batch_tokens = 16384, .micro = 8, .lr = 1e-3, .min_lr = -1,
		.warmup = 100, .wd = 0.1, .clip = 1.0, .gate_lr = 1, .gate_bias = NAN, .seed = 1,
	};
}

int
sa_trainer_new(sa_trainer **out, const sa_train_opts *o)
{
	sa_trainer *t;
	int rc;

	*out = NULL;
	if (!(t = sa_calloc(1, sizeof *t)))
		return SA_EINTERNAL;
	t->o = *o;
	if ((rc = resolve_opts(&t->o)) != SA_OK)
		goto fail;
	if (mkdir(o->ckpt, 0777) != 0 && errno != EEXIST) {
		rc = sa_fail(SA_ECANTCREAT, "%s: %s", o->ckpt, strerror(errno));
		goto fail;
	}
	if (o->mode == SA_TRAIN_PRETRAIN)
		rc = build_pretrain_model(t);
	else
		rc = build_adapter_model(t);
	if (rc == SA_OK)
		rc = o->mode == SA_TRAIN_PRETRAIN ? build_pretrain_block(t) : build_adapter_block(t);
	if (rc != SA_OK)
		goto fail;
	if (!t->o.seq)
		t->o.seq = t->tm->cfg.n_ctx;
	if (t->o.seq > t->tm->cfg.n_ctx) {
		rc = sa_fail(SA_EUSAGE, "--seq %d exceeds the model's context of %d", t->o.seq,
		    t->tm->cfg.n_ctx);
		goto fail;
	}
	if ((rc = sa_tdata_load(&t->data, &t->o, t->vocab)) != SA_OK ||
	    (rc = build_workers(t)) != SA_OK)
		goto fail;
	t->rng = o->seed * 0x9e3779b97f4a7c15ULL + 1;
	t->step = o->start_step;
	*out = t;
	return SA_OK;
fail:
	sa_trainer_free(t);
	return rc;
}

void
sa_trainer_free(sa_trainer *t)
{
	int n_mat = t && t->tm ? t->tm->cfg.n_layer * SA_NMAT : 0;

	if (!t)
		return;
	for (int i = 0; t->workers && i < t->n_workers; i++)
		free_worker(&t->workers[i], n_mat, n_mat / SA_NMAT);
	free(t->workers);
	free(t->am);
	sa_tworkers_free(t->team);
	free(t->mb.in);
	free(t->mb.tgt);
	free(t->mb.loss);
	free(t->mb.seq);
	free(t->mb.first_sight);
	free(t->mb.unscored);
	for (int i = 0; i < t->eps_cap; i++) {
		free(t->eps[i].ctx.t);
		free(t->eps[i].in);
		free(t->eps[i].tgt);
	}
	free(t->eps);
	sa_tdata_free(&t->data);
	if (t->adapter) {
		/* the adapter's block is the trainer's own */
		free(t->opt.p);
		free(t->opt.g);
	}
	sa_optim_free(&t->opt);
	free(t->ap);
	sa_adapter_free(t->adapter);
	sa_tmodel_free(t->tm);
	if (t->vocab_gguf)
		sa_vocab_free(t->vocab);
	sa_gguf_close(t->vocab_gguf);
	sa_model_free(t->base);
	free(t);
}

long
sa_trainer_steps(const sa_trainer *t)
{
	return t->step;
}

/* ------------------------------------------------------------- pretrain */

/* Room for n micro-batches. */
static int
micro_reserve(micro_batches *m, int n)
{
	size_t bt = (size_t)m->B * m->T;
	void *in, *tgt, *loss;

	if (n <= m->cap)
		return SA_OK;
	if ((in = realloc(m->in, n * bt * sizeof *m->in)))
		m->in = in;
	if ((tgt = realloc(m->tgt, n * bt * sizeof *m->tgt)))
		m->tgt = tgt;
	if ((loss = realloc(m->loss, n * sizeof *m->loss)))
		m->loss = loss;
	if (!in || !tgt || !loss)
		return sa_fail(SA_EINTERNAL, "out of memory");
	m->cap = n;
	return SA_OK;
}

/* Inputs and targets of micro-batch i from the B sequences in m->seq. */
static void
micro_from_seq(micro_batches *m, int i)
{
	int B = m->B, T = m->T;
	int *in = m->in + (size_t)i * B * T, *tgt = m->tgt + (size_t)i * B * T;

	for (int b = 0; b < B; b++)
		for (int t = 0; t < T; t++) {
			in[b * T + t] = m->seq[(size_t)b * (T + 1) + t];
			tgt[b * T + t] = m->unscored[(size_t)b * (T + 1) + t + 1] ? -1 :
			    m->seq[(size_t)b * (T + 1) + t + 1];
		}
}

/* sa_titem_fn: forward (and backward, with grads) of micro-batch item. */
static int
run_micro(void *ctx, int wi, int item, float *grads)
{
	sa_trainer *t = ctx;
	micro_batches *m = &t->mb;
	size_t at = (size_t)item * m->B * m->T;
	sa_tact *a = t->workers[wi].act;
	int rc;

	rc = sa_tmodel_forward(t->tm, a, NULL, m->in + at, m->tgt + at, m->B, m->T, &m->loss[item]);
	if (rc == SA_OK && grads)
		rc = sa_tmodel_backward_into(t->tm, a, NULL, grads);
	if (rc != SA_OK || item != m->map_item)
		return rc;
	/* the copying test: is the label's first token the top prediction */
	const float *lg = sa_tact_logits(a);
	int V = t->tm->cfg.n_vocab;
	for (int i = 0; i < m->B * m->T; i++) {
		int y = m->tgt[at + i];
		if (y < 0)
			continue;
		int best = argmax(lg + (size_t)i * V, V);
		if (m->first_sight[i]) {
			m->first_n++;
			m->first_ok += best == y;
		} else {
			m->seen_n++;
			m->seen_ok += best == y;
		}
	}
	return SA_OK;
}

/* One step's micro-batches until its token budget is met; their gradients
 * summed into the optimiser's.  *n: how many, their losses in mb.loss. */
static int
pretrain_step(sa_trainer *t, int *n, long *n_tok)
{
	micro_batches *mb = &t->mb;
	int rc;

	*n = 0;
	mb->map_item = -1;
	for (*n_tok = 0; *n_tok < t->o.batch_tokens; *n_tok += (long)mb->B * mb->T) {
		if ((rc = micro_reserve(mb, *n + 1)) != SA_OK)
			return rc;
		for (int b = 0; b < mb->B; b++)
			sa_tdata_sequence(&t->data, &t->rng, mb->seq + (size_t)b * (mb->T + 1),
			    mb->unscored + (size_t)b * (mb->T + 1), mb->T);
		micro_from_seq(mb, (*n)++);
	}
	return sa_tworkers_run(t->team, run_micro, t, *n, t->opt.g);
}

/*
 * Validation loss on fixed windows, and in-context accuracy on fixed
 * random-mapping episodes: at each label's first token, whether the
 * model's top prediction is right, split into the first time a word
 * appears (chance) and later times (readable from the context).
 */
static int
evaluate_pretrain(sa_trainer *t, sa_train_eval *ev)
{
	micro_batches *mb = &t->mb;
	uint64_t r = 12345;
	int B = mb->B, T = mb->T, n = 0, nv = 0, rc;
	const sa_toks *vsrc = t->data.valid.n > T + 1 ? &t->data.valid : &t->data.corpus;
	const sa_tpool *el;

	if ((rc = micro_reserve(mb, 3)) != SA_OK)
		return rc;
	memset(mb->unscored, 0, (size_t)B * (T + 1));
	for (int rep = 0; rep < 2 && vsrc->n > T + 1; rep++) {
		for (int b = 0; b < B; b++)
			sa_tdata_window(vsrc, &r, mb->seq + (size_t)b * (T + 1), T);
		micro_from_seq(mb, n++);
		nv++;
	}
	mb->map_item = -1;
	mb->seen_ok = mb->seen_n = mb->first_ok = mb->first_n = 0;
	if (sa_tdata_copy_words(&t->data, &el)) {
		int *in = mb->in + (size_t)n * B * T, *tgt = mb->tgt + (size_t)n * B * T;
		/* rebuild the episodes here to know where each label starts */
		for (int b = 0; b < B; b++)
			sa_tdata_copy_test(&t->data, &r, mb->seq + (size_t)b * (T + 1), in + b * T,
			    tgt + b * T, mb->first_sight + b * T, T);
		mb->map_item = n++;
	}
	if ((rc = sa_tworkers_run(t->team, run_micro, t, n, NULL)) != SA_OK)
		return rc;
	double vloss = 0;
	for (int i = 0; i < nv; i++)
		vloss += mb->loss[i];
	ev->valid_loss = nv ? vloss / nv : NAN;
	ev->copy_acc = mb->seen_n ? (double)mb->seen_ok / mb->seen_n : NAN;
	ev->copy_acc_first = mb->first_n ? (double)mb->first_ok / mb->first_n : NAN;
	return SA_OK;
}

/* -------------------------------------------------------------- adapter */

/* Room for n episodes. */
static int
episodes_reserve(sa_trainer *t, int n)
{
	sa_episode *e;

	if (n <= t->eps_cap)
		return SA_OK;
	if (!(e = realloc(t->eps, n * sizeof *e)))
		return sa_fail(SA_EINTERNAL, "out of memory");
	t->eps = e;
	for (; t->eps_cap < n; t->eps_cap++) {
		e = &t->eps[t->eps_cap];
		memset(e, 0, sizeof *e);
		if (!(e->in = sa_malloc((size_t)t->o.queries * t->o.seq * sizeof(int))) ||
		    !(e->tgt = sa_malloc((size_t)t->o.queries * t->o.seq * sizeof(int)))) {
			free(e->in);
			return SA_EINTERNAL;
		}
	}
	return SA_OK;
}

/* The gradient of adapter tensor x (a view into the block) in grads, laid
 * out as the block. */
static float *
grad_in(const sa_trainer *t, float *grads, const float *x)
{
	return grads + (x - t->opt.p);
}

/* Layer l's memory over the worker's context: its parameters (the views
 * into the optimiser's block), the context's keys, values and segments. */
typedef struct {
	sa_memory_params mp;
	const float *K, *V;
	const int *seg;
	int n, n_seg;
} layer_memory;

static layer_memory
layer_memory_at(const sa_trainer *t, const worker *w, int l)
{
	const amem *P = &t->am[l];
	layer_memory lm = { sa_adapter_memory_params(t->adapter, l), sa_tctx_keys(w->tctx, l),
	    sa_tctx_values(w->tctx, l), NULL, sa_tctx_n_tokens(w->tctx), 0 };

	lm.mp.P = P->P;
	lm.mp.p = P->p;
	lm.mp.w = P->w;
	lm.mp.c = P->c;
	lm.n_seg = sa_tctx_segments(w->tctx, &lm.seg);
	return lm;
}

/*
 * The least-squares memory of every layer over the whole context (a key
 * and its value are never in different segments), read out, and laid out
 * as the side paths' H, the same for every adapted matrix of the layer.
 */
static int
memory_pass(sa_trainer *t, worker *w)
{
	const sa_adapter *a = t->adapter;
	int Hk = a->n_head_kv, dh = a->d_head, dk = a->d_key, rc;

	for (int l = 0; l < a->n_layer; l++) {
		layer_memory lm = layer_memory_at(t, w, l);
		rc = sa_memory_train_forward(&lm.mp, lm.K, lm.V, lm.n, lm.seg, lm.n_seg, w->u[l],
		    w->phi[l], w->beta[l], w->G[l], w->S[l]);
		for (int h = 0; h < Hk && rc == SA_OK; h++)
			rc = sa_memory_read(w->G[l] + (size_t)h * dh * dk, w->S[l] + (size_t)h * dk * dk, dh,
			    dk, a->lambda, w->M[l] + (size_t)h * dh * dk);
		if (rc != SA_OK)
			return rc;
		for (int m = 0; m < SA_NMAT; m++)
			if (sa_adapted(a->mats, m))
				sa_memory_side(w->M[l], Hk, dh, dk, w->H[l * SA_NMAT + m]);
	}
	return SA_OK;
}

/* Backward of memory_pass: the side paths' dH, summed over each layer's
 * matrices, back through the read-out and the sums into P, p, w, c. */
static int
memory_backward(sa_trainer *t, worker *w, float *grads)
{
	const sa_adapter *a = t->adapter;
	int Hk = a->n_head_kv, dh = a->d_head, dk = a->d_key, rc;

	for (int l = 0; l < a->n_layer; l++) {
		layer_memory lm = layer_memory_at(t, w, l);
		const amem *P = &t->am[l];
		sa_memory_grads gr = { grad_in(t, grads, P->P), P->p ? grad_in(t, grads, P->p) : NULL,
		    grad_in(t, grads, P->w), grad_in(t, grads, P->c) };
		memset(w->dM, 0, (size_t)Hk * dh * dk * sizeof *w->dM);
		for (int m = 0; m < SA_NMAT; m++)
			if (sa_adapted(a->mats, m))
				sa_memory_side_backward(w->dH[l * SA_NMAT + m], Hk, dh, dk, w->dM);
		rc = sa_memory_train_backward(&lm.mp, lm.K, lm.V, lm.n, lm.seg, lm.n_seg, w->u[l],
		    w->phi[l], w->beta[l], w->G[l], w->S[l], a->lambda, w->dM, &gr);
		if (rc != SA_OK)
			return rc;
	}
	return SA_OK;
}

/* Context pass: the frozen base over the demonstrations, segment by segment,
 * then the context mapping's state of every adapted matrix into w->H. */
static int
context_pass(sa_trainer *t, worker *w, const sa_episode *e)
{
	const sa_config *c = &t->tm->cfg;
	const float *K[256], *V[256];
	int km = sa_adapter_key_mat(t->adapter), rc;

	sa_tctx_reset(w->tctx);
	for (int i = 0; i < e->n_seg; i++) {
		int at = e->seg[i], len = (i + 1 < e->n_seg ? e->seg[i + 1] : e->ctx.n) - at;
		if ((rc = sa_tmodel_keys(t->tm, w->act, e->ctx.t + at, len, km)) != SA_OK)
			return rc;
		for (int l = 0; l < c->n_layer; l++) {
			K[l] = km < 0 ? sa_tact_keys(w->act, l) : sa_tact_input(w->act, l, km);
			V[l] = sa_tact_values(w->act, l);
		}
		if ((rc = sa_tctx_add_segment(w->tctx, K, V, len)) != SA_OK)
			return rc;
	}
	if (t->adapter->mapping == SA_MAPPING_LSQ)
		return memory_pass(t, w);
	/* H [r][Dkv] is the state h [Hk][r][dh] with heads side by side */
	int Hk = c->n_head_kv, dh = c->d_head, r = t->adapter->rank;
	for (int l = 0; l < c->n_layer; l++)
		for (int m = 0; m < SA_NMAT; m++) {
			if (!sa_adapted(t->adapter->mats, m))
				continue;
			amat *P = &t->ap[l * SA_NMAT + m];
			if ((rc = sa_tctx_forward(w->tctx, l, m, P->Q, P->g, P->b)) != SA_OK)
				return rc;
			const float *h = sa_tctx_state(w->tctx, l, m);
			float *H = w->H[l * SA_NMAT + m];
			for (int hh = 0; hh < Hk; hh++)
				for (int j = 0; j < r; j++)
					memcpy(H + (size_t)j * Hk * dh + hh * dh, h + ((size_t)hh * r + j) * dh,
					    dh * sizeof(float));
		}
	return SA_OK;
}

/* Backward from w->dH into the context mapping's Q, g, b (LSQ: P, p, w, c). */
static int
context_backward(sa_trainer *t, worker *w, float *grads)
{
	const sa_config *c = &t->tm->cfg;
	int Hk = c->n_head_kv, dh = c->d_head, r = t->adapter->rank, rc;

	if (t->adapter->mapping == SA_MAPPING_LSQ)
		return memory_backward(t, w, grads);
	for (int l = 0; l < c->n_layer; l++)
		for (int m = 0; m < SA_NMAT; m++) {
			if (!sa_adapted(t->adapter->mats, m))
				continue;
			const float *dH = w->dH[l * SA_NMAT + m];
			for (int hh = 0; hh < Hk; hh++)
				for (int j = 0; j < r; j++)
					memcpy(w->dh_buf + ((size_t)hh * r + j) * dh, dH + (size_t)j * Hk * dh + hh * dh,
					    dh * sizeof(float));
			amat *P = &t->ap[l * SA_NMAT + m];
			rc = sa_tctx_backward(w->tctx, l, m, P->Q, P->g, w->dh_buf, grad_in(t, grads, P->Q),
			    grad_in(t, grads, P->g), grad_in(t, grads, P->b));
			if (rc != SA_OK)
				return rc;
		}
	return SA_OK;
}

/*
 * sa_titem_fn: run episode `item` on worker wi.  With grads, train: the
 * loss's gradient goes into grads.  Without, evaluate: acc[0] counts
 * answers whose first token the adapted model ranks first, acc[1] the same
 * for the base alone (zero-shot), acc[2] the answers seen.
 */
static int
run_episode(void *ctx, int wi, int item, float *grads)
{
	sa_trainer *t = ctx;
	const sa_config *c = &t->tm->cfg;
	worker *w = &t->workers[wi];
	sa_episode *e = &t->eps[item];
	int rc;

	if ((rc = context_pass(t, w, e)) != SA_OK)
		return rc;
	for (int l = 0; l < c->n_layer; l++)
		for (int m = 0; m < SA_NMAT; m++) {
			size_t i = (size_t)l * SA_NMAT + m;
			if (!w->dH[i])
				continue;
			memset(w->dH[i], 0, (size_t)t->adapter->rank * c->n_head_kv * c->d_head * sizeof(float));
			w->side[i].dW1 = grads ? grad_in(t, grads, t->ap[i].W1) : NULL;
			w->side[i].dW2 = grads ? grad_in(t, grads, t->ap[i].W2) : NULL;
		}
	if ((rc = sa_tmodel_forward(t->tm, w->act, w->side, e->in, e->tgt, e->Q, e->Tq, &e->loss)) != SA_OK)
		return rc;
	if (grads) {
		if ((rc = sa_tmodel_backward_into(t->tm, w->act, w->side, NULL)) != SA_OK)
			return rc;
		return context_backward(t, w, grads);
	}
	/* the first answer token of each query: with the delta, then without */
	memset(e->acc, 0, sizeof e->acc);
	for (int pass = 0; pass < 2; pass++) {
		if (pass == 1 &&
		    (rc = sa_tmodel_forward(t->tm, w->act, NULL, e->in, e->tgt, e->Q, e->Tq, NULL)) != SA_OK)
			return rc;
		const float *lg = sa_tact_logits(w->act);
		int V = c->n_vocab;
		for (int q = 0; q < e->Q; q++)
			for (int i = 0; i < e->Tq; i++) {
				int y = e->tgt[q * e->Tq + i];
				if (y < 0)
					continue;
				e->acc[pass] += argmax(lg + ((size_t)q * e->Tq + i) * V, V) == y;
				e->acc[2] += pass == 0;
				break;
			}
	}
	return SA_OK;
}

/* One step's episodes until its token budget is met; their gradients
 * summed into the optimiser's.  *n: how many, their losses in eps[i].loss. */
static int
adapter_step(sa_trainer *t, int *n, long *n_tok)
{
	int rc;

	for (*n = 0, *n_tok = 0; *n_tok < t->o.batch_tokens; (*n)++)
		if ((rc = episodes_reserve(t, *n + 1)) != SA_OK ||
		    (rc = sa_tdata_episode(&t->data, &t->rng, &t->eps[*n], t->o.seq, n_tok, 0,
		    t->adapter->records)) != SA_OK)
			return rc;
	return sa_tworkers_run(t->team, run_episode, t, *n, t->opt.g);
}

/* StreamAdapter against zero-shot on fixed episodes of every kind in the
 * mix, task queries from the dev splits. */
static int
evaluate_adapter(sa_trainer *t, sa_train_eval *ev)
{
	uint64_t r = 777;
	int acc[3] = { 0 }, n = 32, rc;
	long n_tok = 0;

	if ((rc = episodes_reserve(t, n)) != SA_OK)
		return rc;
	for (int e = 0; e < n; e++)
		if ((rc = sa_tdata_episode(&t->data, &r, &t->eps[e], t->o.seq, &n_tok, 1,
		    t->adapter->records)) != SA_OK)
			return rc;
	if ((rc = sa_tworkers_run(t->team, run_episode, t, n, NULL)) != SA_OK)
		return rc;
	for (int e = 0; e < n; e++)
		for (int i = 0; i < 3; i++)
			acc[i] += t->eps[e].acc[i];
	ev->sa_acc = acc[2] ? (double)acc[0] / acc[2] : NAN;
	ev->zero_shot_acc = acc[2] ? (double)acc[1] / acc[2] : NAN;
	ev->answers = acc[2];
	return SA_OK;
}

/* ------------------------------------------------------------ the step */

int
sa_trainer_step(sa_trainer *t, sa_train_stats *s)
{
	sa_optim *opt = &t->opt;
	double loss_sum = 0;
	int n, rc;

	memset(s, 0, sizeof *s);
	memset(opt->g, 0, opt->n * sizeof(float));
	if (t->o.mode == SA_TRAIN_PRETRAIN) {
		if ((rc = pretrain_step(t, &n, &s->tokens)) != SA_OK)
			return rc;
		for (int i = 0; i < n; i++)
			loss_sum += t->mb.loss[i];
	} else {
		if ((rc = adapter_step(t, &n, &s->tokens)) != SA_OK)
			return rc;
		for (int i = 0; i < n; i++)
			loss_sum += t->eps[i].loss;
	}
	/* each micro-batch's loss is a mean: average the gradients */
	for (size_t i = 0; i < opt->n; i++)
		opt->g[i] /= n;
	s->grad_norm = sa_optim_clip(opt, t->o.clip);
	if (!isfinite(s->grad_norm))
		return sa_fail(SA_EINTERNAL, "step %ld: gradient is not finite", t->step);
	s->lr = sa_optim_lr(&t->o, t->step);
	sa_optim_step(opt, (int)t->step + 1, s->lr);
	t->step++;
	s->loss = loss_sum / n;
	return SA_OK;
}

int
sa_trainer_evaluate(sa_trainer *t, sa_train_eval *ev)
{
	ev->valid_loss = ev->copy_acc = ev->copy_acc_first = NAN;
	ev->sa_acc = ev->zero_shot_acc = NAN;
	ev->answers = 0;
	return t->o.mode == SA_TRAIN_PRETRAIN ? evaluate_pretrain(t, ev) : evaluate_adapter(t, ev);
}

int
sa_trainer_show_data(sa_trainer *t, long n, FILE *fp)
{
	if (t->o.mode != SA_TRAIN_PRETRAIN)
		return sa_tdata_show_episodes(&t->data, &t->rng, n, t->o.seq, t->adapter->records, fp);
	return sa_tdata_show(&t->data, &t->rng, n, t->o.seq, fp);
}

/* ----------------------------------------------------------- checkpoints */

int
sa_trainer_save(sa_trainer *t, const char *path)
{
	if (t->o.mode == SA_TRAIN_PRETRAIN)
		return sa_tmodel_save(t->tm, t->vocab_gguf, t->o.save_type, "sa-base", path);
	sync_adapter(t);
	return sa_adapter_save(t->adapter, t->base, path);
}

int
sa_trainer_checkpoint(const sa_trainer *t, const char *path)
{
	const sa_optim *opt = &t->opt;
	sa_gguf_writer *w = sa_gguf_writer_new();
	int64_t ne[1] = { (int64_t)opt->n };
	int rc;

	if (!w)
		return sa_fail(SA_EINTERNAL, "out of memory");
	if ((rc = sa_gguf_writer_set_str(w, "general.type", "sa-checkpoint")) == SA_OK &&
	    (rc = sa_gguf_writer_set_u32(w, "sa.train.mode", t->o.mode)) == SA_OK &&
	    (rc = sa_gguf_writer_set_u64(w, "sa.train.step", (uint64_t)t->step)) == SA_OK &&
	    (rc = sa_gguf_writer_set_u64(w, "sa.train.rng", t->rng)) == SA_OK &&
	    (rc = sa_gguf_writer_set_u64(w, "sa.train.n", (uint64_t)opt->n)) == SA_OK &&
	    (rc = sa_gguf_writer_add_tensor(w, "params", SA_TYPE_F32, 1, ne, opt->p)) == SA_OK &&
	    (rc = sa_gguf_writer_add_tensor(w, "adam.m", SA_TYPE_F32, 1, ne, opt->m)) == SA_OK &&
	    (rc = sa_gguf_writer_add_tensor(w, "adam.v", SA_TYPE_F32, 1, ne, opt->v)) == SA_OK)
		rc = sa_gguf_writer_save(w, path);
	sa_gguf_writer_free(w);
	return rc;
}

int
sa_trainer_resume(sa_trainer *t, const char *path)
{
	sa_optim *opt = &t->opt;
	const char *names[3] = { "params", "adam.m", "adam.v" };
	float *dst[3] = { opt->p, opt->m, opt->v };
	const sa_tensor_info *ti[3];
	sa_gguf *g;
	uint32_t mode;
	uint64_t st, rs, n;
	int rc;

	if ((rc = sa_gguf_open(&g, path)) != SA_OK)
		return rc;
	if ((rc = sa_gguf_get_u32(g, "sa.train.mode", &mode)) != SA_OK ||
	    (rc = sa_gguf_get_u64(g, "sa.train.step", &st)) != SA_OK ||
	    (rc = sa_gguf_get_u64(g, "sa.train.rng", &rs)) != SA_OK ||
	    (rc = sa_gguf_get_u64(g, "sa.train.n", &n)) != SA_OK)
		goto done;
	if (mode != (uint32_t)t->o.mode || n != opt->n) {
		rc = sa_fail(SA_EDATA, "%s: checkpoint of another run (mode or size differs)", path);
		goto done;
	}
	for (int i = 0; i < 3; i++) {
		ti[i] = sa_gguf_tensor(g, names[i]);
		if (!ti[i] || ti[i]->type != SA_TYPE_F32 || ti[i]->nbytes != n * sizeof(float)) {
			rc = sa_fail(SA_EDATA, "%s: checkpoint tensors missing or of the wrong size", path);
			goto done;
		}
	}
	/* all or nothing: a bad checkpoint leaves the trainer as it was */
	for (int i = 0; i < 3; i++)
		memcpy(dst[i], ti[i]->data, ti[i]->nbytes);
	t->step = (long)st;
	t->rng = rs;
done:
	sa_gguf_close(g);
	return rc;
}

/* ------------------------------------------------------------- the log */

void
sa_train_stats_print(FILE *fp, long step, const sa_train_stats *s, double seconds)
{
	fprintf(fp, "{\"step\":%ld,\"loss\":%.6g,\"lr\":%.6g,\"grad_norm\":%.6g,\"tokens\":%ld,\"tok_per_s\":%.1f}\n",
	    step, s->loss, s->lr, s->grad_norm, s->tokens, s->tokens / seconds);
}

void
sa_train_eval_print(FILE *fp, int mode, long step, const sa_train_eval *e)
{
	if (mode == SA_TRAIN_PRETRAIN)
		fprintf(fp, "{\"step\":%ld,\"valid_loss\":%.6g,\"map_acc\":%.6g,\"map_acc_first\":%.6g}\n",
		    step, e->valid_loss, e->copy_acc, e->copy_acc_first);
	else
		fprintf(fp, "{\"step\":%ld,\"sa_acc\":%.6g,\"zero_shot_acc\":%.6g,\"answers\":%d}\n",
		    step, e->sa_acc, e->zero_shot_acc, e->answers);
}
