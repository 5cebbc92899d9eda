/*
 * sa.h - libsa, the one public header of the StreamAdapter tools.
 *
 * A model reads demonstrations once; an adapter maps the keys and values
 * they leave in its KV cache to a delta of its weights (the encoder); the
 * delta, applied, lets the model answer as if they were still in its
 * context, at the cost of an empty prompt.  The sections follow that flow.
 *
 * Usage: greedy text after a prompt, with a delta of a file of
 * demonstrations (model, adapter, demos, prompt: two GGUF files, a text
 * file of records, a string; put(ctx, tok, stop) writes a token's text).
 * The same lines are tests/unit/test_usage.c, which the tests build and run.
 *
 *	sa_model *m; sa_adapter *a; sa_demos *d; sa_encoder *enc; sa_session *s;
 *	sa_sampler greedy;
 *	int *toks, n;
 *
 *	if (sa_model_load(&m, model) || sa_adapter_load(&a, adapter) ||
 *	    sa_demos_read(&d, demos, NULL, 0, SA_DEMOS_TEXT, SA_DEMOS_TEMPLATE) ||
 *	    sa_encoder_new(&enc, m, a, NULL) ||
 *	    sa_encoder_feed_demos(enc, d, m->cfg.n_ctx, NULL, NULL) ||
 *	    sa_delta_apply(m, a, sa_encoder_delta(enc), 1, 1) ||
 *	    sa_session_new(&s, m, 0, 1) ||
 *	    sa_session_tokenize(s, prompt, strlen(prompt), &toks, &n))
 *		return fprintf(stderr, "%s\n", sa_error()), 1;
 *	sa_sampler_init(&greedy, 0, 0, 1, 0, 0);
 *	if (sa_session_generate(s, toks, n, &greedy, 16, put, (void *)sa_session_vocab(s)))
 *		return fprintf(stderr, "%s\n", sa_error()), 1;
 *	free(toks);
 *	sa_session_free(s); sa_encoder_free(enc); sa_demos_free(d);
 *	sa_adapter_free(a); sa_model_free(m);
 *
 * Contents:
 *   errors                          status codes, sa_error(), allocation
 *   tensor types, GGUF, tokenizer,  reading a model: its file, its
 *   model                           vocabulary, its weights
 *   forward pass, threads           the KV cache and one pass of tokens
 *   sampling, session, chat,        prompts, scores and generation (sa-run)
 *   requests
 *   demonstrations                  records of files, packed into segments
 *   least-squares memory, adapter   the context mappings: memory, pool
 *   delta, encoder, cache,          demonstrations -> a delta (sa-encode,
 *   encoding files                  sa-cache)
 *   applying deltas, export         a delta -> the model's weights, LoRA
 *   many deltas, LoRA in            side paths per request, LoRA files read
 *   sa-run's options                what sa-run is asked, its rules, its request
 *   evaluation, evaluation protocol sa-eval
 *   training, trainer               sa-train
 *   file description                sa-info
 *   output files, hashing,          utilities
 *   random numbers, JSON
 *
 * Status: every function that can fail returns a status code (SA_OK or a
 * sysexits value) and leaves a one-line message in sa_error(); nothing here
 * exits or prints.  Messages name the file they concern ("model.gguf: not a
 * GGUF file") and carry no tool prefix: the tool adds "sa-run: ".
 *
 * Ownership: what sa_<noun>_new, _load, _read, _parse or _clone makes
 * through its first argument (*out; NULL on failure) is the caller's, to
 * give to the matching sa_<noun>_free (which takes NULL).  Text and token
 * arrays handed back through char ** or int ** are malloc'd: free(3).
 * Every other pointer is borrowed: arguments are read during the call and
 * not kept, except that an object made over another keeps it (a KV cache,
 * session, encoder or deltaset its model, an encoder its adapter), so
 * that one must outlive it; a pointer an object hands out (its delta, its
 * logits, its vocabulary) is valid until the object is freed or, where
 * said, until its next call.
 *
 * Threads: sa_error() is per thread.  A model, vocabulary, adapter or delta
 * is only read once loaded, so threads may share it, each with its own KV
 * cache, session, encoder or sampler (an object with state belongs to one
 * thread at a time), except while something changes the model's weights
 * (sa_delta_apply, sa_deltas_apply, sa_lora_apply, sa_model_reset_weights,
 * a deltaset encoding a request's demonstrations): that needs the
 * model to itself.  The kernels' worker threads are the process's
 * (sa_set_threads): callers on several threads take turns with them.
 */
#ifndef SA_H
#define SA_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define SA_VERSION "0.1.0"

/* ---------------------------------------------------------------- errors */

/* Status codes are sysexits(3) values, so a tool can exit with them as-is. */
enum {
	SA_OK = 0,
	SA_EUSAGE = 64,     /* EX_USAGE: bad arguments */
	SA_EDATA = 65,      /* EX_DATAERR: malformed input, CRC, mismatched fingerprints */
	SA_ENOINPUT = 66,   /* EX_NOINPUT: cannot open an input */
	SA_EINTERNAL = 70,  /* EX_SOFTWARE: a bug, or out of memory */
	SA_ECANTCREAT = 73, /* EX_CANTCREAT: cannot create an output */
	SA_EIO = 74,        /* EX_IOERR: read or write failed */
};

/* The message of the last failure in this thread ("" if none). */
const char *sa_error(void);
/* Set the message (printf-style) and return code, so: return sa_fail(SA_EDATA, ...). */
int sa_fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* v for a message, in buf: an integral value in full (2147483647, not
 * 2.14748e+09), another as %g. */
const char *sa_num_text(char buf[32], double v);

/* malloc/calloc that set SA_EINTERNAL "out of memory" on failure (return NULL). */
void *sa_malloc(size_t n);
void *sa_calloc(size_t n, size_t size);

/* ---------------------------------------------------------- tensor types */

/* ggml type ids, as stored in GGUF. */
enum {
	SA_TYPE_F32 = 0,
	SA_TYPE_F16 = 1,
	SA_TYPE_Q4_0 = 2,
	SA_TYPE_Q4_1 = 3,
	SA_TYPE_Q5_0 = 6,
	SA_TYPE_Q5_1 = 7,
	SA_TYPE_Q8_0 = 8,
	SA_TYPE_Q2_K = 10,
	SA_TYPE_Q3_K = 11,
	SA_TYPE_Q4_K = 12,
	SA_TYPE_Q5_K = 13,
	SA_TYPE_Q6_K = 14,
	SA_TYPE_BF16 = 30,
};

/* "F32", "F16", "Q4_K", ... for any ggml id (for messages); "type 77" if unknown. */
const char *sa_type_name(int type);
/* 1 if this build can compute with the type (F32, F16, BF16, Q8_0, Q4_0,
 * Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K). */
int sa_type_supported(int type);
/* Bytes of one row of n elements; 0 if unsupported or n not a block multiple. */
size_t sa_type_row_size(int type, int64_t n);

float sa_fp16_to_fp32(uint16_t h);
uint16_t sa_fp32_to_fp16(float f);   /* round to nearest even */
float sa_bf16_to_fp32(uint16_t h);
uint16_t sa_fp32_to_bf16(float f);   /* round to nearest even */

/* Convert one row of n elements between F32 and a supported type. */
void sa_row_to_f32(int type, const void *src, float *dst, int64_t n);
void sa_row_from_f32(int type, const float *src, void *dst, int64_t n);

/* ------------------------------------------------------------------ GGUF */

enum {
	SA_GGUF_U8 = 0, SA_GGUF_I8 = 1, SA_GGUF_U16 = 2, SA_GGUF_I16 = 3,
	SA_GGUF_U32 = 4, SA_GGUF_I32 = 5, SA_GGUF_F32 = 6, SA_GGUF_BOOL = 7,
	SA_GGUF_STR = 8, SA_GGUF_ARR = 9, SA_GGUF_U64 = 10, SA_GGUF_I64 = 11,
	SA_GGUF_F64 = 12,
};

/* A string inside a mapped file: not NUL-terminated. */
typedef struct sa_str {
	const char *s;
	uint64_t n;
} sa_str;

typedef struct sa_tensor_info {
	char *name;            /* NUL-terminated copy */
	int type;              /* SA_TYPE_* (or another ggml id) */
	int n_dims;
	int64_t ne[4];         /* innermost first; unused dims are 1 */
	uint64_t offset;       /* relative to the data section */
	const void *data;      /* into the mapping */
	size_t nbytes;
} sa_tensor_info;

typedef struct sa_gguf sa_gguf;

/*
 * Open and map a GGUF v2/v3 file read-only.  Every count, length and offset is
 * checked against the file size before use; a bad file gives SA_EDATA with a
 * message such as "x.gguf: not a GGUF file" or "x.gguf: truncated".
 * Tensors of unsupported types are listed; callers check sa_type_supported().
 */
int sa_gguf_open(sa_gguf **out, const char *path);
void sa_gguf_close(sa_gguf *g);
const char *sa_gguf_path(const sa_gguf *g);
uint32_t sa_gguf_version(const sa_gguf *g);

/* Metadata: typed getters.  Missing key: SA_EDATA, "x.gguf: missing key K".
 * Integer getters accept any integer type whose value fits. */
int sa_gguf_has(const sa_gguf *g, const char *key);
int sa_gguf_get_u32(const sa_gguf *g, const char *key, uint32_t *v);
int sa_gguf_get_u64(const sa_gguf *g, const char *key, uint64_t *v);
int sa_gguf_get_i64(const sa_gguf *g, const char *key, int64_t *v);
int sa_gguf_get_f32(const sa_gguf *g, const char *key, float *v);   /* F32 or F64 */
int sa_gguf_get_bool(const sa_gguf *g, const char *key, int *v);
int sa_gguf_get_str(const sa_gguf *g, const char *key, sa_str *v);
/* 1 when key holds the string lit, else 0 (missing, another type or value). */
int sa_gguf_str_is(const sa_gguf *g, const char *key, const char *lit);
/* A NUL-terminated malloc'd copy of a string value. */
int sa_gguf_get_strdup(const sa_gguf *g, const char *key, char **v);
/* Array of a fixed-size element type: raw little-endian elements in the mapping.
 * Arrays of strings or arrays also succeed: *data is then their encoding as
 * stored, and *elem_type tells the caller to use sa_gguf_get_strs instead. */
int sa_gguf_get_arr(const sa_gguf *g, const char *key, int *elem_type, uint64_t *n, const void **data);
/* Array of strings: *v is a malloc'd array of n sa_str (caller frees the array only). */
int sa_gguf_get_strs(const sa_gguf *g, const char *key, uint64_t *n, sa_str **v);

/* Iterate metadata (for dumping): key i, its type, and for arrays the element type/count. */
uint64_t sa_gguf_n_kv(const sa_gguf *g);
sa_str sa_gguf_kv_key(const sa_gguf *g, uint64_t i);
int sa_gguf_kv_type(const sa_gguf *g, uint64_t i);

uint64_t sa_gguf_n_tensors(const sa_gguf *g);
const sa_tensor_info *sa_gguf_tensor_at(const sa_gguf *g, uint64_t i);
const sa_tensor_info *sa_gguf_tensor(const sa_gguf *g, const char *name);  /* NULL if absent */

/* Writer: collects metadata and tensors, then writes GGUF v3 in one pass
 * (works on a pipe).  Tensor data is not copied: it must live until write. */
typedef struct sa_gguf_writer sa_gguf_writer;
sa_gguf_writer *sa_gguf_writer_new(void);
void sa_gguf_writer_free(sa_gguf_writer *w);
int sa_gguf_writer_set_u32(sa_gguf_writer *w, const char *key, uint32_t v);
int sa_gguf_writer_set_i32(sa_gguf_writer *w, const char *key, int32_t v);
int sa_gguf_writer_set_u64(sa_gguf_writer *w, const char *key, uint64_t v);
int sa_gguf_writer_set_f32(sa_gguf_writer *w, const char *key, float v);
int sa_gguf_writer_set_bool(sa_gguf_writer *w, const char *key, int v);
int sa_gguf_writer_set_str(sa_gguf_writer *w, const char *key, const char *v);
/* Fixed-size elements (data copied). */
int sa_gguf_writer_set_arr(sa_gguf_writer *w, const char *key, int elem_type, uint64_t n, const void *data);
/* Strings of given lengths (copied). */
int sa_gguf_writer_set_strs(sa_gguf_writer *w, const char *key, uint64_t n, const sa_str *v);
/* Copy one metadata entry (any type) from an open file, e.g. the tokenizer. */
int sa_gguf_writer_copy_kv(sa_gguf_writer *w, const sa_gguf *g, const char *key);
int sa_gguf_writer_add_tensor(sa_gguf_writer *w, const char *name, int type,
    int n_dims, const int64_t *ne, const void *data);
int sa_gguf_writer_write(sa_gguf_writer *w, FILE *fp, const char *name_for_errors);
/* Write to a path ("-" = stdout) through sa_outfile. */
int sa_gguf_writer_save(sa_gguf_writer *w, const char *path);

/* ------------------------------------------------------------- tokenizer */

typedef struct sa_vocab sa_vocab;

/* Build from tokenizer.ggml.* metadata: model "llama" (SentencePiece BPE with
 * scores and byte fallback) or "gpt2" (byte-level BPE with merges; pre
 * "default"/"gpt-2", "llama-bpe", "qwen2" ...). */
int sa_vocab_load(sa_vocab **out, const sa_gguf *g);
void sa_vocab_free(sa_vocab *v);
int sa_vocab_size(const sa_vocab *v);
int sa_vocab_bos(const sa_vocab *v);     /* -1 if none */
int sa_vocab_eos(const sa_vocab *v);     /* -1 if none */
int sa_vocab_add_bos(const sa_vocab *v); /* tokenizer.ggml.add_bos_token, or the model type's default */
/* 1 for end-of-generation tokens (eos, eot, ...). */
int sa_vocab_is_eog(const sa_vocab *v, int tok);
/* SA_EDATA when g's tokenizer.ggml.bos_token_id lies outside the vocabulary:
 * the tokenizer keeps its default BOS (as llama.cpp does), and the message
 * says which, or that none is added; a warning to show. */
int sa_vocab_check_bos(const sa_vocab *v, const sa_gguf *g);

/*
 * Text -> ids, as llama.cpp's llama_tokenize(text, add_special, parse_special=false):
 * with add_special, BOS is prepended when the vocab says so.  *toks is malloc'd.
 */
int sa_tokenize(const sa_vocab *v, const char *text, size_t len, int add_special,
    int **toks, int *n);
/* As sa_tokenize with parse_special = true: control and unknown tokens
 * written in the text ("<|im_start|>") are tokens too, longest first. */
int sa_tokenize_special(const sa_vocab *v, const char *text, size_t len, int add_special,
    int **toks, int *n);
/*
 * text's tokens (no BOS) as a longer text has them where text follows
 * before ("x": mid-line, "\n": at the start of a line, where a
 * SentencePiece text would give text a leading space): the tokens of
 * before + text, less the leading ones they share with before's own.
 * *whole: whether they share all of before's, so that text tokenized
 * apart from it.  *toks is malloc'd.
 */
int sa_tokenize_after(const sa_vocab *v, const char *before, const char *text, size_t len,
    int **toks, int *n, int *whole);
/*
 * The bytes of one token as text (SPM "▁" -> ' ', <0xNN> -> the byte, gpt2
 * byte-level unicode -> bytes).  Returns the byte count (may exceed cap: then
 * only cap bytes were written).  Control tokens (BOS/EOS) give 0 bytes.
 */
int sa_token_to_piece(const sa_vocab *v, int tok, char *buf, int cap);
/* The token as the vocabulary spells it ("<|im_start|>", "\u2581the"), *len
 * bytes, not NUL-terminated, borrowed; NULL if tok is out of range. */
const char *sa_token_text(const sa_vocab *v, int tok, size_t *len);
/* ids -> text; drops the SPM leading space after BOS like llama.cpp's detokenizer
 * (the one sa_tokenize puts at the start and after a user-defined token, so
 * that decode(encode(x)) == x; no other clean-up of spaces).
 * *text is malloc'd, NUL-terminated. */
int sa_detokenize(const sa_vocab *v, const int *toks, int n, char **text, size_t *len);

/* A growable array of tokens: {0} is empty; free t.  Push n tokens
 * (SA_EINTERNAL when out of memory, the array as it was). */
typedef struct sa_toks {
	int *t;
	int n, cap;
} sa_toks;
int sa_toks_push(sa_toks *a, const int *t, int n);

/* ---------------------------------------------------------------- model */

enum { SA_ARCH_LLAMA = 0, SA_ARCH_QWEN2 = 1 };

/* The adaptable linear maps of a layer, in GGUF tensor-name order. */
enum {
	SA_MAT_Q = 0,     /* attn_q:      d_model -> H*d_h     */
	SA_MAT_K,         /* attn_k:      d_model -> D_kv      */
	SA_MAT_V,         /* attn_v:      d_model -> D_kv      */
	SA_MAT_O,         /* attn_output: H*d_h   -> d_model   */
	SA_MAT_GATE,      /* ffn_gate:    d_model -> d_ff      */
	SA_MAT_UP,        /* ffn_up:      d_model -> d_ff      */
	SA_MAT_DOWN,      /* ffn_down:    d_ff    -> d_model   */
	SA_NMAT
};
/* 1 if the set mats (a bit per SA_MAT_*, as adapters and deltas hold it)
 * has matrix m: the one test of every loop over adapted matrices. */
static inline int sa_adapted(uint32_t mats, int m) { return mats >> m & 1; }
/* "attn_q", ... ; and the inverse (-1 if unknown). */
const char *sa_mat_name(int m);
int sa_mat_from_name(const char *name);

typedef struct sa_config {
	int arch;             /* SA_ARCH_* */
	int n_layer;
	int d_model;
	int n_head;
	int n_head_kv;
	int d_head;           /* d_model / n_head */
	int d_ff;
	int n_vocab;
	int n_ctx;            /* context_length from metadata */
	int rope_dim;         /* rope.dimension_count, default d_head */
	int rope_neox;        /* 1 for qwen2 (rotate halves), 0 for llama (pairs) */
	float rope_base;      /* rope.freq_base, default 10000 */
	float norm_eps;       /* attention.layer_norm_rms_epsilon, default 1e-5 */
} sa_config;

/* A weight matrix W of shape [rows=d_out][cols=d_in] (GGUF ne = {cols, rows}),
 * each row stored in `type` (row-major, rows contiguous).  Vectors have rows=1. */
typedef struct sa_matrix {
	int type;
	int64_t rows, cols;
	const void *data;
} sa_matrix;

typedef struct sa_layer {
	sa_matrix attn_norm;              /* [d_model] F32 */
	sa_matrix w[SA_NMAT];             /* by SA_MAT_* */
	sa_matrix bq, bk, bv;             /* qwen2 biases; data NULL for llama */
	sa_matrix ffn_norm;               /* [d_model] */
} sa_layer;

/*
 * A low-rank side path for one matrix: y += B (A x), B [d_out][rank],
 * A [rank][d_in], F32; or, once rank (d_in + d_out) exceeds d_in d_out,
 * held dense: y += D x, D [d_out][d_in] the sum of the updates' B A (A and
 * B NULL), fewer multiply-adds a token.  A is the path's own unless
 * a_shared (sa_side_add_shared).
 */
typedef struct sa_lowrank {
	int rank;
	float *A;
	float *B;
	float *D;
	int a_shared;
} sa_lowrank;

typedef struct sa_model {
	sa_config cfg;
	sa_gguf *gguf;
	sa_vocab *vocab;
	char *name;                       /* general.name or the file's basename */
	uint64_t fingerprint;             /* see sa_model_fingerprint */
	sa_matrix tok_embd;               /* [n_vocab][d_model] */
	sa_matrix out_norm;               /* [d_model] */
	sa_matrix output;                 /* [n_vocab][d_model]; = tok_embd when tied */
	sa_layer *layers;                 /* [n_layer] */
	/* Set by merge/side calls: owned F32 copies replacing mapped matrices
	 * (internal), and side paths [n_layer * SA_NMAT] (NULL when none). */
	void *merged;
	sa_lowrank *side;
} sa_model;

/*
 * Load a model: maps the file, reads the config, binds every tensor, checks
 * every shape, loads the tokenizer, and reads every weight once for NaN and
 * Inf.  Unknown architecture, missing tensor, wrong shape, unsupported tensor
 * type, a non-finite weight: SA_EDATA naming the tensor.
 */
int sa_model_load(sa_model **out, const char *path);
void sa_model_free(sa_model *m);

/*
 * Identity of a base model, for binding adapters and deltas to it: a hash of
 * the architecture, every hyperparameter, every tensor's name, type and shape,
 * and a sample of each tensor's data (first, last and 14 evenly spaced 4 KiB
 * blocks; all of it when smaller than 64 KiB).
 */
uint64_t sa_model_fingerprint(const sa_model *m);

/* Per-layer input/output width of matrix m (d_in = cols, d_out = rows). */
int sa_model_mat_dims(const sa_model *m, int mat, int *d_out, int *d_in);

/* Add s*B*A to matrix (layer, mat): merged into an owned F32 copy of W. */
int sa_model_merge_lowrank(sa_model *m, int layer, int mat, int rank,
    const float *B, const float *A);
/* Or keep it on the side: y = W x + B (A x).  Several calls add up (ranks concatenate). */
int sa_model_add_side(sa_model *m, int layer, int mat, int rank,
    const float *B, const float *A);
/*
 * Side paths of one's own, side [n_layer * SA_NMAT]: *side stays NULL until
 * the first update that is not zero, then is allocated (the caller's, freed
 * with sa_side_free).  Ranks concatenate, until the path is held dense
 * (sa_lowrank): from then on each update's B A is added to D.
 * sa_model_add_side is this on m->side, so the same updates in the same
 * order give the same bits either way.
 */
int sa_side_add(sa_lowrank **side, const sa_model *m, int layer, int mat, int rank,
    const float *B, const float *A);
/* The same, but A kept where it is, not copied, while the path holds it
 * alone (the first update, low-rank): it must outlive *side.  The deltas
 * of an adapter share its W2 so: one copy for all the requests in flight
 * to read. */
int sa_side_add_shared(sa_lowrank **side, const sa_model *m, int layer, int mat, int rank,
    const float *B, const float *A);
/* *side (NULL) a copy of from, the same bits (a shared A shared again);
 * from NULL: none. */
int sa_side_copy(sa_lowrank **side, const sa_model *m, const sa_lowrank *from);
/* The bytes side paths hold of their own. */
size_t sa_side_bytes(const sa_lowrank *side, const sa_model *m);
void sa_side_free(sa_lowrank *side, const sa_model *m);
/* Drop side paths and owned copies: back to the mapped base weights. */
void sa_model_reset_weights(sa_model *m);

/* ----------------------------------------------------------- forward pass */

/* KV cache and scratch for one sequence. */
typedef struct sa_kvcache sa_kvcache;

/*
 * Hooks on sa_forward.  The KV hook is called once per layer with the
 * layer's keys before RoPE and values for the n new tokens: k and v are
 * [n][n_head_kv*d_head].  The query hook, right after it, gets the layer's
 * queries before RoPE, q [n][n_head*d_head] (query head h reads key head
 * h / (n_head / n_head_kv)).  The input hook sees the input of one matrix
 * kind (SA_MAT_*) of every layer, for new tokens i0 .. i0+n-1: x [n][d_in],
 * the normed residual (attn_q, attn_k, attn_v, ffn_gate, ffn_up), the
 * attention output (attn_output) or the SwiGLU hidden (ffn_down), before
 * its rounding to the weight's type; after the layer's other hooks, every
 * row once and in order, the FFN's in blocks.  With it set the last layer
 * runs for every row, so the last token's logits alone may round
 * differently (all of them do not).  All run on the thread that called
 * sa_forward, one call at a time, and may use the pool; k, v, q and x are
 * the pass's scratch, valid during the call only.  sa_forward_rows refuses
 * caches with hooks.
 */
typedef void (*sa_kv_hook)(void *ctx, int layer, int n, const float *k, const float *v);
typedef void (*sa_q_hook)(void *ctx, int layer, int n, const float *q);
typedef void (*sa_input_hook)(void *ctx, int layer, int i0, int n, const float *x);

int sa_kvcache_new(sa_kvcache **out, const sa_model *m, int n_ctx);  /* n_ctx <= 0: model's */
void sa_kvcache_free(sa_kvcache *s);
int sa_kvcache_pos(const sa_kvcache *s);        /* tokens in the cache */
int sa_kvcache_ctx(const sa_kvcache *s);
void sa_kvcache_truncate(sa_kvcache *s, int pos);   /* forget tokens at >= pos */
/* Hooks of this cache's forward passes; NULL: none.  sa_forward_rows
 * takes no cache with a hook. */
void sa_kvcache_set_hook(sa_kvcache *s, sa_kv_hook hook, void *ctx);
void sa_kvcache_set_q_hook(sa_kvcache *s, sa_q_hook hook, void *ctx);
void sa_kvcache_set_input_hook(sa_kvcache *s, int mat, sa_input_hook hook, void *ctx);
/* Side paths (sa_side_add) this cache's forward passes use instead of the
 * model's; NULL: the model's again.  Not copied: they must outlive their use. */
void sa_kvcache_set_side(sa_kvcache *s, const sa_lowrank *side);
/* Bytes of KV cache in use (for reports). */
size_t sa_kvcache_kv_bytes(const sa_kvcache *s);

/*
 * Run n tokens at positions pos..pos+n-1 and append them to the cache.
 * logits: NULL, or [n_vocab] for the last token (all_logits = 0), or
 * [n][n_vocab] for every token (all_logits = 1).  Prompt longer than the
 * remaining context: SA_EDATA "prompt of N tokens exceeds the context of C".
 * Up to 16 tokens go through the matrix-vector kernels, which read each
 * weight once for all of them (each token's results are bit for bit those
 * of running it alone); longer prompts through sgemm (prefill).
 */
int sa_forward(sa_kvcache *s, const int *toks, int n, float *logits, int all_logits);
/*
 * One token toks[i] after each cache kv[i] (1 <= n <= 16 caches of one
 * model and size, each with its own side paths), in one pass over the
 * weights; logits [n][n_vocab].  Row i's logits and cache are the bits
 * sa_forward(kv[i], &toks[i], 1, ...) gives: batched decoding.
 */
int sa_forward_rows(sa_kvcache *const *kv, const int *toks, int n, float *logits);

/* ---------------------------------------------------------------- threads */

/* Threads for kernels and BLAS (0 = number of online CPUs).  BLAS and the
 * library's own threads never run at once, so the total stays n. */
void sa_set_threads(int n);
int sa_get_threads(void);

/* ------------------------------------------------------------- sampling */

typedef struct sa_sampler {
	float temp;       /* 0 = greedy */
	int top_k;        /* 0 = off */
	float top_p;      /* 1 = off */
	float min_p;      /* 0 = off */
	uint64_t rng;     /* state, from --seed */
	float penalty;    /* repeat penalty, 1 = off (sa_sampler_init) */
	int last_n;       /* over this many last tokens, -1 all, 0 = off */
} sa_sampler;

void sa_sampler_init(sa_sampler *s, float temp, int top_k, float top_p, float min_p, uint64_t seed);
/* A token id: the argmax (lowest id on ties) at temp 0, else top-k, top-p,
 * min-p, temperature, then a draw from a SplitMix64 stream (the same seed
 * gives the same tokens everywhere).  -1 if out of memory. */
int sa_sample(sa_sampler *s, const float *logits, int n_vocab);
/* The same after llama.cpp's repeat penalty: the logit of each token among
 * the last last_n of toks[0..n) divided by the penalty when positive, else
 * multiplied by it (once per token, however often it came). */
int sa_sample_after(sa_sampler *s, const float *logits, int n_vocab, const int *toks, int n);
/* The k most likely tokens (ties: lower id first), best first, and their
 * log-softmax.  Returns how many (min(k, n_vocab)), -1 if out of memory. */
int sa_logprob_top(const float *logits, int n_vocab, int k, int *ids, double *logprob);
/* log-softmax of logits[tok]. */
double sa_logprob(const float *logits, int n_vocab, int tok);

/* --------------------------------------------------------------- session */

/*
 * One KV cache of a model (sa_kvcache) that remembers the tokens it holds:
 * a call that shares a prefix with what the cache holds runs only the
 * tokens after it, in chunks (many tokens a call when only the cache is
 * wanted, fewer when every position's logits are).  The model's weights
 * are whatever delta is applied at the time of the call.
 */
typedef struct sa_session sa_session;

/* n_ctx <= 0: the model's.  add_bos: the texts the session tokenizes
 * (sa_session_tokenize) start with BOS when the vocabulary wants one. */
int sa_session_new(sa_session **out, sa_model *m, int n_ctx, int add_bos);
void sa_session_free(sa_session *s);
int sa_session_ctx(const sa_session *s);
const sa_vocab *sa_session_vocab(const sa_session *s);
/* Text -> tokens (malloc'd), with BOS as the session was made; with
 * _special, the control tokens written in the text too (sa_tokenize_special). */
int sa_session_tokenize(const sa_session *s, const char *text, size_t len, int **toks, int *n);
int sa_session_tokenize_special(const sa_session *s, const char *text, size_t len, int **toks,
    int *n);
/* The model, borrowed. */
const sa_model *sa_session_model(const sa_session *s);
/* [n_vocab] the logits after the last token fed: during generation, those
 * the token handed to sa_token_fn was drawn from (before any penalty). */
const float *sa_session_logits(const sa_session *s);
/* Forget every token; the KV peak starts again from nothing. */
void sa_session_reset(sa_session *s);
/* KV-cache bytes at the fullest point since the session was made or reset
 * (sa_kvcache_kv_bytes). */
size_t sa_session_kv_peak(const sa_session *s);

/* Tokens run and seconds spent: over prompts and texts, and generating. */
typedef struct sa_timings {
	long n_eval, n_gen;
	double t_eval, t_gen;
} sa_timings;
void sa_session_timings(const sa_session *s, sa_timings *t);
/* The sum over sessions s[0..n) decoding together (sa_sessions_decode
 * shares a step's time out among them). */
void sa_sessions_timings(sa_session *const *s, int n, sa_timings *t);

/*
 * Make the cache hold toks[0..n) (n >= 1).  The last token always runs, so
 * *logits ([n_vocab], the session's, valid until the next feed or
 * generation) are those after it.  More than the context: SA_EDATA.
 */
int sa_session_feed(sa_session *s, const int *toks, int n, const float **logits);
/*
 * Add to *logprob log p(toks[i] | toks[0..i)) for i from from+1 to n-1, in
 * that order.  The cache ends holding toks[0..n-1): the last token is only
 * predicted, never run, and the prefix it shared before from is not run
 * again.
 */
int sa_session_score(sa_session *s, const int *toks, int n, int from, double *logprob);
/*
 * Rank choices of one prompt: seq[i] is prompt and choice i tokenized as one
 * text, and its tokens after the prefix it shares with the prompt's own
 * tokens (at least the first) are scored: logprob[i] their sum, count[i]
 * how many.  A choice that adds no token, or one too long: SA_EDATA.
 */
int sa_session_choices(sa_session *s, const int *prompt, int n_prompt, int *const *seq,
    const int *n_seq, int n, double *logprob, int *count);
/*
 * Generate after toks[0..n): feed them, then draw a token with smp (its
 * repeat penalty over the tokens the cache holds), hand it
 * to fn and run it, until an end-of-generation token, max_new tokens (-1:
 * no limit), the end of the context, or fn sets *stop.  The last token is
 * handed over, never run.  fn returns SA_OK, or a failure that ends the
 * generation with it.
 */
typedef int (*sa_token_fn)(void *ctx, int tok, int *stop);
int sa_session_generate(sa_session *s, const int *toks, int n, sa_sampler *smp, long max_new,
    sa_token_fn fn, void *ctx);
/*
 * The same a step at a time, for several sessions decoding together:
 * sa_session_gen_start checks and feeds the prompt (nothing when max_new is
 * 0, and then no step follows); step i (from 0) draws a token from the last
 * logits and hands it to fn; *next is the token to run next, or -1 when
 * the generation ends there.  sa_sessions_decode runs the next tokens of
 * n sessions (1 to 16, of one model and context) in one pass over the
 * weights (sa_forward_rows): each session's logits are those its token
 * alone would give, so the text is that of sa_session_generate.
 */
int sa_session_gen_start(sa_session *s, const int *toks, int n, long max_new);
int sa_session_gen_step(sa_session *s, sa_sampler *smp, long i, long max_new, sa_token_fn fn,
    void *ctx, int *next);
int sa_sessions_decode(sa_session *const *s, const int *toks, int n);

/* ------------------------------------------------------------------ chat */

/* Chat template families (lib/chat.c), named as llama.cpp's built-in list. */
enum {
	SA_CHAT_CHATML = 1, SA_CHAT_LLAMA2, SA_CHAT_LLAMA2_SYS, SA_CHAT_LLAMA2_SYS_BOS,
	SA_CHAT_LLAMA2_SYS_STRIP, SA_CHAT_MISTRAL_V1, SA_CHAT_MISTRAL_V3,
	SA_CHAT_MISTRAL_V3_TEKKEN, SA_CHAT_MISTRAL_V7, SA_CHAT_ZEPHYR, SA_CHAT_LLAMA3,
};
#define SA_CHAT_NAMES "chatml, llama2, llama2-sys, llama2-sys-bos, llama2-sys-strip, " \
    "mistral-v1, mistral-v3, mistral-v3-tekken, mistral-v7, zephyr, llama3"

/* One message of a conversation: role "system", "user" or "assistant"
 * (NUL-terminated), its content len bytes.  Borrowed. */
typedef struct sa_chat_msg {
	const char *role;
	const char *content;
	size_t content_len;
} sa_chat_msg;

/* "chatml", ...; and back (-1 if unknown). */
const char *sa_chat_name(int tmpl);
int sa_chat_from_name(const char *name);
/*
 * *tmpl: the family called name (--chat-template; unknown: SA_EUSAGE), or
 * when name is NULL the family of g's tokenizer.chat_template, recognised
 * as llama.cpp does by substrings.  No template, or one of another family:
 * SA_EDATA with a one-line message that names the supported families.
 */
int sa_chat_find(const sa_gguf *g, const char *name, int *tmpl);
/*
 * The text of messages m[0..n) in family tmpl, then the assistant's prefix
 * when add_assistant, byte for byte as llama.cpp's llama_chat_apply_template
 * writes it.  Control tokens are text in it: tokenize with
 * sa_tokenize_special.  *text malloc'd, NUL-terminated.
 */
int sa_chat_render(int tmpl, const sa_chat_msg *m, int n, int add_assistant, char **text,
    size_t *len);
/* The record template (sa_template_check's language) of one exchange in
 * family tmpl: {input} the user's message, {label} the assistant's answer.
 * *out malloc'd. */
int sa_chat_record_template(int tmpl, char **out);

/* -------------------------------------------------------------- requests */

/* How a request generates: sa-run's options, a batch request's keys. */
typedef struct sa_sampling {
	long n_predict;          /* tokens to generate, -1: until the end */
	double temp, top_p, min_p;
	long top_k;
	uint64_t seed;
	double repeat_penalty;   /* sa_sample_after; 0 or 1 = off */
	long repeat_last_n;      /* -1: the whole context */
	const char *const *stop; /* generation ends before the first of these */
	const size_t *stop_len;  /* strings in the text; it is not written */
	int n_stop;
	int n_probs;             /* JSON: each token's top n_probs log-probabilities */
} sa_sampling;

/* The most log-probabilities a token is given with (n_probs). */
#define SA_MAX_PROBS 100

/* The numbers of a sampling by the keys of a batch request, which sa-run's
 * options share ('-' for '_': --top-k is top_k; -n is n_predict; logprobs
 * sets n_probs): the values each takes, written once for both.  The table
 * ends with a NULL name. */
typedef struct sa_sampling_key {
	const char *name;
	double lo, hi;
	int integer;             /* whole numbers only */
} sa_sampling_key;
extern const sa_sampling_key sa_sampling_keys[];
/* Set k's number of p to v, one in its range: seed -1 is one from the
 * clock (sa_seed_from_clock), 2^64 the largest. */
void sa_sampling_set(sa_sampling *p, const sa_sampling_key *k, double v);

/* A seed from the clock and the process (--seed -1). */
uint64_t sa_seed_from_clock(void);
/* A prompt file ("-" = stdin) as llama.cpp's -f reads it: its final
 * newline ends the file, not the prompt.  *text malloc'd, NUL-terminated. */
int sa_prompt_read(const char *path, char **text, size_t *len);
/* s with llama.cpp's escapes expanded (\n \t \r \\ \" \' \xHH; any other
 * backslash stays), malloc'd; *len counts past a \x00.  NULL: out of memory. */
char *sa_text_unescape(const char *s, size_t *len);

/* What sa-run(1) does with a text. */
typedef struct sa_request {
	const char *text;        /* the prompt, or the text to score */
	size_t len;
	int score;               /* score the text (log-likelihood, perplexity), */
	const char *const *choice;   /* or rank these continuations of it, */
	const size_t *choice_len;
	int n_choices;
	sa_sampling smp;         /* or generate after it, */
	int tokenize;            /* or give its tokens (ids, and pieces in JSON) */
	int special;             /* control tokens written in text are tokens */
	const sa_chat_msg *msg;  /* n_msg > 0: the text is these messages and the */
	int n_msg;               /* assistant's prefix in the model's chat template */
	const char *chat_template;   /* or the family of this name (sa_chat_find) */
} sa_request;

/* Where a request's result goes, and how. */
typedef struct sa_reply {
	FILE *fp;
	const char *name;        /* of fp, for messages ("stdout") */
	int json;                /* one JSON object on a line; else text */
	int echo;                /* text generation: the prompt first */
	const char *id;          /* JSON text of a batch request's id, the first */
	size_t id_len;           /* key of the object; NULL: none */
	char last;               /* set: the last byte of text written, 0 if none */
} sa_reply;

/*
 * Carry req out on s and write its result to out.  Generated text goes out
 * a character at a time (a UTF-8 sequence split across tokens is held
 * until whole) and, as text, is flushed as it goes.  A failed write:
 * SA_EIO "NAME: ...".
 */
int sa_request_run(sa_session *s, const sa_request *req, sa_reply *out);
/*
 * The JSON Lines batch of sa-run(1): a request object a line from in (its
 * defaults def->smp, def->special, def->chat_template), a result or
 * error record a line to out, flushed, in order.  Bad data fails its line
 * with an error record; any other failure ends the batch with it.
 * SA_EDATA when a line failed.
 * A request's "deltas", "demos" and "lora" come from ds (NULL: such a
 * request fails its line); a request without runs on the session as it is.
 * With n > 1 sessions s[0..n) (up to 16, of one model and context), up to
 * n generation requests are decoded together (sa_sessions_decode), each
 * with the record it would have alone (stop strings, repeat penalty,
 * log-probabilities and messages too); records still come out in order.
 */
typedef struct sa_deltaset sa_deltaset;
int sa_serve(sa_session *const *s, int n, sa_deltaset *ds, FILE *in, const char *in_name,
    const sa_request *def, FILE *out, const char *out_name);

/* -------------------------------------------------------- demonstrations */

/* Input formats of sa-encode(1); AUTO: from the name or the content. */
enum { SA_DEMOS_AUTO = -1, SA_DEMOS_TEXT = 0, SA_DEMOS_TSV = 1, SA_DEMOS_JSONL = 2 };

/* Default record template, in the template language (escapes unexpanded). */
#define SA_DEMOS_TEMPLATE "{input} -> {label}\\n"

/* A file of demonstrations, as a delta records what it absorbed. */
typedef struct sa_source {
	char *name;
	uint64_t hash;           /* sa_hash64 of its bytes */
} sa_source;

typedef struct sa_demo {
	char *text;          /* rendered, NUL-terminated (may contain NUL: see len) */
	size_t len;
	long line;           /* line of the record in its source (1 for plain text) */
} sa_demo;

/* The demonstrations of one input file, rendered. */
typedef struct sa_demos {
	sa_source source;    /* name ("stdin" for "-") and sa_hash64 of the bytes */
	int format;          /* SA_DEMOS_*; plain text is one stream, not records */
	int special;         /* tokenized with control tokens parsed (chat turns) */
	int n;
	sa_demo *demo;
} sa_demos;

/* "text", "tsv", "jsonl"; and back (-1 if unknown). */
const char *sa_demos_format_name(int format);
int sa_demos_format_from_name(const char *name);
/*
 * The format of the demonstrations in path ("-": stdin) when *format is
 * SA_DEMOS_AUTO, by the rules of sa-encode(1): the extension in any case
 * (.tsv; .jsonl, .json; .txt), else the first non-blank line (a JSON
 * object; a TSV header naming the fields of tmpl; else text).  data: the
 * bytes when read already (stdin), else NULL and the file's start is read.
 * CSV, bytes that are not text, a line that could be either: SA_EDATA
 * "name: ...".
 */
int sa_demos_format_resolve(const char *path, const char *data, size_t len,
    const char *tmpl, int *format);
/*
 * formats[i] of files[0..n): forced unless SA_DEMOS_AUTO, else resolved.
 * "-" is read here, once, into *stdin_data (malloc'd; NULL without "-"),
 * for sa_demos_read and sa_cache_key; a second "-" is SA_EUSAGE.
 */
int sa_demos_formats(char *const *files, int n, int forced, const char *tmpl,
    int *formats, char **stdin_data, size_t *stdin_len);
/* What a delta's params say of an encoding: "format=tsv context=N
 * template=..." with each format once, in order (malloc'd; NULL on OOM). */
char *sa_demos_params(const int *formats, int n, int n_ctx, const char *tmpl);

/* {field} substitution with \n \t \r \\ \{ \} escapes; SA_EUSAGE
 * "template: ..." if malformed. */
int sa_template_check(const char *tmpl);

/*
 * Parse a file's bytes.  TSV: a header row names the fields; JSON Lines: one
 * object per line.  Each record is rendered through tmpl (NULL: the default);
 * blank lines are skipped.  A bad record or one missing a field the template
 * uses: SA_EDATA "name:LINE: ...".  Plain text: one demo holding all of it.
 */
int sa_demos_parse(sa_demos **out, const char *name, const char *data, size_t len,
    int format, const char *tmpl);
/* The demonstrations of path ("-" = stdin) in a resolved format: its bytes
 * are data when not NULL (stdin, read once), else read here.  Parsed as
 * sa_demos_parse does; none at all is SA_EDATA "name: no demonstrations". */
int sa_demos_read(sa_demos **out, const char *path, const char *data, size_t len,
    int format, const char *tmpl);
void sa_demos_free(sa_demos *d);

/* Tokens the encoder takes in one forward pass from position 0. */
typedef struct sa_segment {
	int *toks;
	int n;               /* <= n_ctx, BOS included */
	int n_demos;         /* records it holds (0 for plain text) */
	long line;           /* source line where it starts */
} sa_segment;

/*
 * How records become segments ("records" in adapter files):
 * SA_RECORDS_PACKED as many as fit, each reading those before it, as one
 * prompt would hold them; SA_RECORDS_ALONE each in a segment of its own,
 * from BOS, as a query runs, so that a query repeating a demonstration's
 * beginning reproduces the model's activations there exactly.
 */
enum { SA_RECORDS_PACKED = 0, SA_RECORDS_ALONE = 1 };

/*
 * Tokenize and pack into segments of at most n_ctx tokens, each starting
 * with BOS when the vocab adds one.  Records are tokenized one by one and
 * laid out as records (SA_RECORDS_*) says, never split; one that alone
 * exceeds n_ctx is SA_EDATA "name:LINE: ...".  Plain text is tokenized
 * whole and cut at the last line boundary that fits (at a token boundary
 * inside an over-long line).
 */
int sa_demos_segment(const sa_demos *d, const sa_vocab *v, int n_ctx, int records,
    sa_segment **segs, int *n_segs);
void sa_segments_free(sa_segment *segs, int n);

/* ------------------------------------------------- least-squares memory */

/*
 * The second kind of context mapping (lib/memory.c, doc/design.md): per
 * layer, one memory per key/value head h, over keys x [dx] (the layer's
 * keys before RoPE, dx = Dkv; or the adapted matrix's input, dx = d_in)
 * and head h's values v [dh]:
 *   P [Hk][dk][dx], p [Hk][dk]    features phi = normalize(f(P x + p)),
 *                                 f(u) = u + 1 (u > 0), exp(u) (u <= 0);
 *                                 linear: phi = P x (p unused, may be NULL)
 *   w [Hk][dx], c [Hk]            write gate beta = sigmoid(<w, x> + c)
 *   G [Hk][dh][dk] += beta v' phi^T,  S [Hk][dk][dk] += beta phi phi^T
 * read out as M [Hk][dh][dk] = G (S + lambda I)^-1, where v' is the value
 * of the token offset places after the key's (0: the same token); a token
 * with no such token in its segment is not written.  The parameters are
 * borrowed (the adapter owns them).
 */
typedef struct sa_memory_params {
	const float *P, *p, *w, *c;
	int Hk, dh, dk, offset;
	int dx;        /* width of a key */
	int linear;    /* 1: phi = P x (keys from the matrix's input) */
} sa_memory_params;

/* Add a segment of n tokens (X [n][dx], V [n][Hk*dh]) to G and S, in
 * double, in a fixed order; or to one head's G [dh][dk] and S [dk][dk]
 * (heads are independent). */
int sa_memory_write(const sa_memory_params *mp, const float *X, const float *V, int n,
    double *G, double *S);
int sa_memory_write_head(const sa_memory_params *mp, int h, const float *X, const float *V, int n,
    double *G, double *S);
/* M [dh][dk] = G [dh][dk] (S [dk][dk] + lambda I)^-1 for one head, solved in
 * double; SA_EDATA if S + lambda I is not positive definite. */
int sa_memory_read(const float *G, const float *S, int dh, int dk, double lambda, float *M);

/* Training: the same sums as float matrix products (within float rounding
 * of the encoder's), keeping what the backward needs:
 * u, phi [n][Hk][dk], beta [n][Hk]; G, S as above (overwritten).  The n
 * tokens are n_seg segments starting at seg [n_seg] (NULL: one). */
int sa_memory_train_forward(const sa_memory_params *mp, const float *X, const float *V, int n,
    const int *seg, int n_seg, float *u, float *phi, float *beta, float *G, float *S);
/* Gradients of the parameters (added into gr, shaped as the parameters)
 * from dM [Hk][dh][dk], the gradient of the read-out. */
typedef struct sa_memory_grads { float *P, *p, *w, *c; } sa_memory_grads;
int sa_memory_train_backward(const sa_memory_params *mp, const float *X, const float *V, int n,
    const int *seg, int n_seg, const float *u, const float *phi, const float *beta, const float *G, const float *S,
    double lambda, const float *dM, sa_memory_grads *gr);
/* M [Hk][dh][dk] laid out as the side path's H [Hk*dk][Hk*dh] (block
 * diagonal), and the gradient of H back onto M (added into dM). */
void sa_memory_side(const float *M, int Hk, int dh, int dk, float *H);
void sa_memory_side_backward(const float *dH, int Hk, int dh, int dk, float *dM);

/* --------------------------------------------------------------- adapter */

/*
 * The learned StreamAdapter mapping of one base model (sa-adapter(5)).
 * For layer l and adapted matrix m (bit m of mats set), with Hk = n_head_kv,
 * r = rank, dh = d_head, Dkv = Hk*dh:
 *   Q  [Hk][r][dh]   learned queries
 *   g  [Hk][dh]      gate weights
 *   b  [Hk][r]       gate biases
 *   W1 [d_out][Dkv]  zero-initialised
 *   W2 [r][d_in]
 */
typedef struct sa_adapter_mat {
	float *Q, *g, *b, *W1, *W2;
	int d_out, d_in;
} sa_adapter_mat;

/*
 * The two kinds of context mapping (the field "mapping" of adapters and
 * deltas; "kind" in the files).  SA_MAPPING_POOL is the paper's: r learned
 * queries pool each chunk, a gated recurrence sums the chunks; the delta is
 * (h, P).  SA_MAPPING_LSQ is the least-squares memory (sa_memory_*): the delta
 * is (G, S) per layer, read out when applied; its update has rank
 * n_head_kv * d_key, and the adapter's rank field holds that.
 */
enum { SA_MAPPING_POOL = 0, SA_MAPPING_LSQ = 1 };

/*
 * What the least-squares memory keys on ("key_source" in the files):
 * SA_KEYS_KV the layer's keys before RoPE, through positive normalised
 * features; SA_KEYS_INPUT the input of the adapted matrix (exactly one
 * matrix kind adapted) at every context token, through linear features
 * P x, the activation W2 reads at a query.
 */
enum { SA_KEYS_KV = 0, SA_KEYS_INPUT = 1 };

/* One layer's memory parameters (SA_MAPPING_LSQ), shaped as in sa_memory_params:
 * P [Hk][dk][dx], p [Hk][dk] (NULL for SA_KEYS_INPUT), w [Hk][dx], c [Hk];
 * dx = Dkv, or d_in of the adapted matrix for SA_KEYS_INPUT. */
typedef struct sa_adapter_memory {
	float *P, *p, *w, *c;
} sa_adapter_memory;

typedef struct sa_adapter {
	int mapping;                   /* SA_MAPPING_POOL or SA_MAPPING_LSQ */
	int n_layer, n_head_kv, d_head, rank, chunk;   /* LSQ: rank = Hk * d_key, chunk 0 */
	int d_key;                     /* LSQ: features per memory; 0 for POOL */
	float lambda;                  /* LSQ: ridge of the read-out; 0 for POOL */
	int value_offset;              /* LSQ: a key is bound to the value of the token
	                                * this many places on (0 or 1); 0 for POOL */
	int key_source;                /* LSQ: SA_KEYS_*; SA_KEYS_KV for POOL */
	int records;                   /* SA_RECORDS_*: how the encoder lays out records */
	uint32_t mats;                 /* bitmask of SA_MAT_* */
	uint64_t model_fingerprint;    /* of the base model */
	uint64_t fingerprint;          /* of this adapter's config and data */
	char *path;                    /* where it was loaded from, or NULL */
	sa_adapter_mat *mat;           /* [n_layer * SA_NMAT]; unused entries zero;
	                                * LSQ: W1 and W2 only (Q, g, b NULL) */
	sa_adapter_memory *mem;        /* LSQ: [n_layer]; NULL for POOL */
	void *arena;                   /* internal: one block for all tensors */
} sa_adapter;

/* The parameters of layer l's memory as sa_memory_* take them. */
sa_memory_params sa_adapter_memory_params(const sa_adapter *a, int layer);
/* The matrix whose input keys the memory (SA_KEYS_INPUT), else -1. */
int sa_adapter_key_mat(const sa_adapter *a);

#define SA_ADAPTER_MAT(a, l, m) (&(a)->mat[(size_t)(l) * SA_NMAT + (m)])

/* A new adapter for model: Q, g random from seed (scaled), b = bias_init,
 * W2 random, W1 = 0 unless w1_scale != 0 (random, for tests). */
int sa_adapter_init(sa_adapter **out, const sa_model *model, int rank, int chunk,
    uint32_t mats, uint64_t seed, float w1_scale);
/* A new least-squares memory adapter (SA_MAPPING_LSQ): d_key features per
 * memory, ridge lambda, value_offset 0 or 1, key_source SA_KEYS_*.
 * SA_KEYS_KV: P, w random from seed, p = 0, c = 0 (half of every token
 * written), W2 random, W1 = 0 unless w1_scale != 0.  SA_KEYS_INPUT (mats
 * one matrix, else SA_EUSAGE): P a random projection (the identity when
 * d_key = d_in) scaled so that a typical token's features, measured over
 * the model's own activations, have unit norm; W2 = P; w = 0 and c = 4
 * (every token nearly fully written); W1 the model's own map from values
 * to the matrix's output where there is one (sa-adapter(5)), else 0,
 * unless w1_scale != 0. */
int sa_adapter_init_lsq(sa_adapter **out, const sa_model *model, int d_key, float lambda,
    int value_offset, int key_source, uint32_t mats, uint64_t seed, float w1_scale);
/* A copy of a (made for model) with rank slots, rank >= a->rank: the same
 * deltas until trained, the new slots ready to learn (SA_MAPPING_POOL only). */
int sa_adapter_grow(sa_adapter **out, const sa_adapter *a, const sa_model *model, int rank,
    uint64_t seed);
int sa_adapter_load(sa_adapter **out, const char *path);
int sa_adapter_save(const sa_adapter *a, const sa_model *model, const char *path);
void sa_adapter_free(sa_adapter *a);
/* Hash of the config, model fingerprint and every tensor: what a->fingerprint
 * must hold.  Code that changes the tensors (training) stores it again. */
uint64_t sa_adapter_fingerprint(const sa_adapter *a);
/* sa_binding_check(model, a, NULL, NULL). */
int sa_adapter_check(const sa_adapter *a, const sa_model *model);

/* ----------------------------------------------------------------- delta */

#define SA_DELTA_MAGIC "SADELTA"   /* with its NUL: a delta's first 8 bytes */

/*
 * A context state (sa-delta(5)): for every (l, m) in mats, in order of l then m,
 *   h [Hk][r][dh] and P [Hk][r].
 */
typedef struct sa_delta {
	int mapping;             /* SA_MAPPING_POOL or SA_MAPPING_LSQ, as its adapter */
	uint64_t model_fingerprint, adapter_fingerprint;
	int n_layer, n_head_kv, d_head, rank, chunk;   /* LSQ: rank = Hk*dk, chunk 0 */
	uint32_t mats;
	uint64_t n_tokens, n_demos;
	char *adapter_path;      /* as recorded by sa-encode, or NULL */
	char *params;            /* encode parameters, free text (template, ...) */
	int n_sources;
	sa_source *sources;
	float *h;                /* POOL: n_used * Hk*r*dh;  LSQ: G, n_layer * Hk*dh*dk */
	float *P;                /* POOL: n_used * Hk*r;     LSQ: S, n_layer * Hk*dk*dk */
} sa_delta;

/* Number of blocks stored: (l, m) pairs (POOL) or layers (LSQ). */
int sa_delta_n_used(const sa_delta *d);
/* POOL: pair (layer, mat)'s h and P; NULL if m not in mats or for LSQ. */
float *sa_delta_h(const sa_delta *d, int layer, int mat);
float *sa_delta_P(const sa_delta *d, int layer, int mat);
/* Floats of the whole state: *nh in h (LSQ: G), *np in P (LSQ: S). */
void sa_delta_sizes(const sa_delta *d, size_t *nh, size_t *np);
/* LSQ: layer's G [Hk][dh][dk] and S [Hk][dk][dk]; NULL for POOL. */
float *sa_delta_G(const sa_delta *d, int layer);
float *sa_delta_S(const sa_delta *d, int layer);

/* An empty state for adapter a: h = 0, P = 1 (LSQ: G = 0, S = 0). */
int sa_delta_new(sa_delta **out, const sa_adapter *a);
void sa_delta_free(sa_delta *d);
int sa_delta_clone(sa_delta **out, const sa_delta *d);
/* Stream I/O, no seeking (pipes work).  name is for messages. */
int sa_delta_read(sa_delta **out, FILE *fp, const char *name);
int sa_delta_write(const sa_delta *d, FILE *fp, const char *name);
int sa_delta_load(sa_delta **out, const char *path);   /* "-" = stdin */
int sa_delta_save(const sa_delta *d, const char *path); /* "-" = stdout; tmp+rename */
/* SA_EDATA unless a and b share model and adapter fingerprints and shapes. */
int sa_delta_compatible(const sa_delta *a, const char *name_a, const sa_delta *b, const char *name_b);
/* d's params become "old; params", or params when they were empty or the
 * same; empty params leave them. */
int sa_delta_join_params(sa_delta *d, const char *params);
/* a := a then b (h = P_b*h_a + h_b, P = P_a*P_b; LSQ: G and S add);
 * sources and counts append. */
int sa_delta_chain(sa_delta *a, const sa_delta *b);
/* out := sum_i w_i * d_i (h and P both; with weights 1/n this is the mean). */
int sa_delta_combine(sa_delta **out, sa_delta *const *d, const double *w, int n);

/* Header as text (human) or one JSON object (json = 1), newline-terminated. */
void sa_delta_print(const sa_delta *d, FILE *fp, int json);

/* --------------------------------------------------------------- encoder */

typedef struct sa_encoder sa_encoder;

/* Encoder over model (run without any delta) into adapter a's state.
 * start: NULL for an empty state, or a delta to continue (--append). */
int sa_encoder_new(sa_encoder **out, sa_model *model, const sa_adapter *a, const sa_delta *start);
void sa_encoder_free(sa_encoder *e);
/* Absorb one segment of tokens (at most the context length); the KV cache is
 * reset before it, so positions start at 0.  n_demos counts what it holds. */
int sa_encoder_feed(sa_encoder *e, const int *toks, int n, int n_demos);
/* The state so far (owned by the encoder; clone to keep). */
sa_delta *sa_encoder_delta(sa_encoder *e);
/* Record a source (name and sa_hash64 of its bytes) in the state's list. */
int sa_encoder_add_source(sa_encoder *e, const char *name, uint64_t hash);

/*
 * The context mapping of one (layer, matrix) over one segment of n tokens,
 * the kernel sa_encoder_feed runs in its forward hook:
 *   k, v [n][Hk*dh]     keys (before RoPE) and values, head h at h*dh
 *   h    [Hk][r][dh]    state, updated in place: chunks of the adapter's C,
 *   P    [Hk][r]        S = softmax(Q K^T/sqrt(dh)) V, a = sigmoid(g.S + b),
 *                       h = a*h + S, P = P*a
 * Computed in double in a fixed order: the result does not depend on the
 * number of threads or the CPU's vector extensions.  SA_EINTERNAL on OOM.
 */
int sa_context_map(const sa_adapter *a, int layer, int mat, const float *k,
    const float *v, int n, double *h, double *P);

/* ----------------------------------------------------------------- cache */

/*
 * A content-addressed cache of encodings (sa-cache(1)).  An entry is the
 * delta DIR/KEY.delta, KEY 32 hex digits of a SHA-256 over what the state
 * depends on: the library version, the model and adapter fingerprints, the
 * model's tokenizer.* metadata, the segment length, the template, and each
 * input's format and bytes (not its name).  Entries are written through a
 * temporary file renamed into place: processes encoding one key at once
 * leave one whole entry.  A process that misses holds the key's lock while
 * it encodes and stores, so that the others wait and then hit.
 */
#define SA_CACHE_KEY_LEN 32

/* dir if given, else $SA_CACHE_DIR if set, else NULL: no cache. */
const char *sa_cache_dir(const char *dir);
/* $SA_CACHE_DIR, else $XDG_CACHE_HOME/sa, else $HOME/.cache/sa (malloc'd). */
char *sa_cache_default_dir(void);
/* 1 for an entry's file name, 2 for an entry's temporary or lock file,
 * 0 otherwise. */
int sa_cache_name_kind(const char *name);

/* A file of the cache, as sa-cache(1) lists and prunes them. */
typedef struct sa_cache_file {
	char *name;              /* in the cache's directory */
	int64_t size;            /* bytes */
	int64_t mtime;           /* last use, seconds since the epoch */
	int kind;                /* sa_cache_name_kind's: 1 entry, 2 temporary or lock file */
} sa_cache_file;

/*
 * The cache's own files in dir, oldest use first (then by name), into *out
 * (malloc'd, NULL when none; give to sa_cache_scan_free with *n).  A
 * missing dir is an empty cache unless must_exist (SA_ENOINPUT); SA_EIO.
 */
int sa_cache_scan(sa_cache_file **out, int *n, const char *dir, int must_exist);
void sa_cache_scan_free(sa_cache_file *v, int n);
/*
 * What sa-cache prune (or clear, all = 1) drops of v[0..n), in drop[i]:
 * every file (all), else temporary and lock files an hour old, entries
 * unused for more than max_age seconds, then the least recently used until
 * the entries left fit max_size bytes (max_age, max_size negative: no
 * limit), at time now.
 */
void sa_cache_select(const sa_cache_file *v, int n, int all, double max_age, double max_size,
    int64_t now, char *drop);

/*
 * The key of encoding files (formats[i] each, resolved; "-" = stdin, whose
 * bytes are stdin_data, see sa_demos_formats) through model m and adapter
 * a, with template tmpl, in segments of n_ctx tokens.  Files are read as a
 * stream.
 */
int sa_cache_key(char key[SA_CACHE_KEY_LEN + 1], const sa_model *m, const sa_adapter *a,
    int n_ctx, const char *tmpl, char *const *files, const int *formats, int n,
    const char *stdin_data, size_t stdin_len);
/*
 * Look key up in dir.  Hit: SA_OK, and *d with its sources named after
 * files, params and adapter_path NULL (the caller's to set); the entry's
 * time becomes its last use (sa-cache prune).  Miss: SA_ENOINPUT.  Entry
 * damaged (sa_delta_load fails: CRC, truncation) or of other inputs:
 * SA_EDATA "cache entry PATH: ..."; encoding again and sa_cache_put
 * replace it.
 */
int sa_cache_get(const char *dir, const char *key, const sa_model *m, const sa_adapter *a,
    char *const *files, int n, sa_delta **d);
/* Store d as the entry of key (dir made if missing). */
int sa_cache_put(const char *dir, const char *key, const sa_delta *d);

/* Receives what the caller may want to report: a damaged entry replaced,
 * an entry that could not be stored (neither fails the encoding). */
typedef void (*sa_cache_note)(void *ctx, const char *msg);
/*
 * The lock of key, DIR/.KEY.lock (flock(2); dir made if missing), for a
 * miss: take it, look again (another process may have stored the entry
 * meanwhile), encode, sa_cache_put, sa_cache_unlock.  Blocks while another
 * process holds it, after telling waiting(ctx, msg) if given.  Returns
 * the descriptor for sa_cache_unlock, or -1 when the cache cannot be
 * written: the encoding then goes on unlocked.
 */
int sa_cache_lock(const char *dir, const char *key, sa_cache_note waiting, void *ctx);
void sa_cache_unlock(const char *dir, const char *key, int fd);

/* ------------------------------------------------------- encoding files */

/* An encoding's progress: the segment just fed, of an input. */
typedef struct sa_encode_step {
	const char *source;      /* the input's name ("stdin" for "-") */
	const sa_segment *seg;
	int i, n_segs;           /* seg is segment i of the input's n_segs */
	long done, total;        /* the input's tokens fed so far, and in all */
} sa_encode_step;
typedef void (*sa_encode_fn)(void *ctx, const sa_encode_step *s);

/* Segments segs[0..n) into e, in order; step(ctx, ...) after each when not
 * NULL, naming source. */
int sa_encoder_feed_segments(sa_encoder *e, const sa_segment *segs, int n, const char *source,
    sa_encode_fn step, void *ctx);
/* d's demonstrations in segments of n_ctx tokens (sa_demos_segment) into e,
 * then d as a source of the state; step(ctx, ...) after each segment when
 * not NULL. */
int sa_encoder_feed_demos(sa_encoder *e, const sa_demos *d, int n_ctx, sa_encode_fn step,
    void *ctx);

/* How files become a delta (sa-encode(1)). */
typedef struct sa_encoding {
	char *const *files;      /* [n] "-" = stdin */
	const int *formats;      /* [n] resolved, by sa_demos_formats */
	int n;
	const char *stdin_data;  /* the bytes of "-", read by sa_demos_formats */
	size_t stdin_len;
	const char *tmpl;        /* the record template */
	int special;             /* its control tokens are tokens (not cached) */
	int n_ctx;               /* tokens per segment */
	const sa_delta *start;   /* a state to continue (--append), or NULL */
	const char *cache_dir;   /* the cache, or NULL; never with start */
	sa_encode_fn step;       /* after each segment, or NULL */
	sa_cache_note note;      /* a damaged entry replaced, an entry not stored */
	sa_cache_note detail;    /* cache miss, waiting for another encoding, hit */
	void *ctx;               /* of step, note and detail (each may be NULL) */
} sa_encoding;

/*
 * The files' demonstrations fed to an encoder from start (NULL: an empty
 * state) over model m (no delta applied) and adapter a, or the delta from
 * the cache when it holds the key (*hit = 1); a miss is stored.  The delta
 * records a's path made absolute and the encoding's parameters after
 * start's (sa_demos_params, sa_delta_join_params); *out is the caller's.
 */
int sa_encode_files(sa_delta **out, sa_model *m, const sa_adapter *a, const sa_encoding *e,
    int *hit);
/*
 * The delta "sa-encode -m M -a A [-F FORMAT] FILE..." makes with its
 * defaults (format SA_DEMOS_AUTO: each file's resolved, the default
 * template, the model's context), through the cache in dir (NULL: the
 * default, sa_cache_default_dir).
 */
int sa_cache_encode(sa_delta **out, const char *dir, sa_model *m, const sa_adapter *a,
    char *const *files, int n, int format, int *hit, sa_cache_note note, void *ctx);

/* ------------------------------------------------------- applying deltas */

/*
 * Whether model m, adapter a and delta d (named dname in messages; NULL:
 * "delta") belong together: the adapter made for the model, the delta made
 * for the model and through the adapter, fingerprints and shapes.  Any of
 * the three may be NULL: the others are checked against each other.
 * SA_EDATA "x.delta was made for another model (fingerprint X, NAME has Y)",
 * "... was made with another adapter ...", or the shape that differs.
 */
int sa_binding_check(const sa_model *m, const sa_adapter *a, const sa_delta *d,
    const char *dname);

/*
 * Low-rank factors of (layer, mat) for delta d through adapter a at scale s:
 * B = s * W1 H^T  [d_out][r],  A = W2  [r][d_in]  (A points into the adapter).
 * B is malloc'd.
 */
int sa_delta_factors(const sa_adapter *a, const sa_delta *d, int layer, int mat,
    float s, float **B, const float **A);
/* Apply to the model: merged into its weights (merged = 1) or as side paths. */
int sa_delta_apply(sa_model *m, const sa_adapter *a, const sa_delta *d, float s, int merged);
/* Or add to side paths *side of one's own, m left as it is: A is a's W2,
 * shared (sa_side_add_shared), so a must outlive *side. */
int sa_delta_sides(sa_lowrank **side, const sa_model *m, const sa_adapter *a, const sa_delta *d,
    float s);
/*
 * The adapter delta d (read from path) was made with, into *out: the path
 * it records, that path from the delta's directory, its name beside the
 * delta, else fallback if d was made with it (sa_deltas_bind says more).
 */
int sa_delta_adapter(sa_adapter **out, const sa_delta *d, const char *path, const char *fallback);

/* Deltas given with scales (sa-run -d FILE:S, sa-export, sa-merge), and the
 * one adapter they were made with. */
typedef struct sa_deltas {
	int n;
	sa_delta **d;            /* [n] */
	double *scale;           /* [n] */
	char **path;             /* [n] as given, "-" = stdin */
	sa_adapter *adapter;     /* NULL until sa_deltas_bind */
} sa_deltas;

/* Load path[i] at scale[i] (scale NULL: 1 each) into *out, the caller's
 * (sa_deltas_free).  Deltas that do not share model, adapter and shapes:
 * SA_EDATA (sa_delta_compatible). */
int sa_deltas_load(sa_deltas **out, char *const *path, const double *scale, int n);
/*
 * The adapter of the deltas, for model m: given when not NULL, else the
 * path the first delta records (sa-encode writes it absolute), that path
 * relative to the delta's directory, a file of its name in the delta's
 * directory (the two moved together), else fallback (the default adapter)
 * if the deltas were made with it; then sa_binding_check of the model, the
 * adapter and every delta.  None found: SA_ENOINPUT or SA_EUSAGE, "give -a".
 */
int sa_deltas_bind(sa_deltas *ds, const sa_model *m, const char *given, const char *fallback);
/* Add d at scale s after the others (the set's then); name for messages. */
int sa_deltas_add(sa_deltas *ds, sa_delta *d, double s, const char *name);
/* The delta of demonstrations files as sa-encode makes it, through the
 * cache in cache_dir (sa_cache_encode, *hit its), over model m (no delta
 * applied yet) and the deltas' adapter (sa_deltas_bind first), added at
 * scale 1 as "demonstrations" (sa-run --demos). */
int sa_deltas_add_demos(sa_deltas *ds, sa_model *m, const char *cache_dir, char *const *files,
    int n, int format, int *hit, sa_cache_note note, void *ctx);
/* Apply each delta at its scale, in order (sa_delta_apply). */
int sa_deltas_apply(sa_model *m, const sa_deltas *ds, int merged);
void sa_deltas_free(sa_deltas *ds);

/* ---------------------------------------------------------------- export */

/*
 * Deltas as a plain LoRA adapter for other tools (sa-export(1)).  Several
 * deltas of one adapter are summed in the state space first, h = sum_i s_i
 * h_i, so that each matrix gets exactly Delta W = W1 h^T W2 = B A with
 * B = W1 h^T [d_out][r] and A = W2 [r][d_in]; factors are never scaled and
 * added separately.  Every check of sa_delta_apply applies.
 */

/* llama.cpp LoRA GGUF: blk.L.<mat>.weight.lora_a (ne {d_in, r}) and .lora_b
 * (ne {r, d_out}), F32, adapter.lora.alpha = 0, which llama.cpp reads as
 * "no alpha/rank factor": its scale is then exactly the user's.  "-" = stdout. */
int sa_export_llama(const sa_model *m, const sa_adapter *a, sa_delta *const *d,
    const double *scale, int n, const char *path);
/* PEFT directory: adapter_config.json (lora_alpha = r: scaling 1) and
 * adapter_model.safetensors (F32), written to a temporary directory and
 * renamed into place.  For llama, the rows of q and k lora_B are put back
 * in Hugging Face order (see sa_rows_gguf_to_hf). */
int sa_export_peft(const sa_model *m, const sa_adapter *a, sa_delta *const *d,
    const double *scale, int n, const char *base_model, const char *dir);
/* Rows [n_head*d_head][cols] of a llama q or k projection: llama.cpp's
 * converter interleaves the two halves of every head for its RoPE
 * (HF row h*dh + j*dh/2 + i becomes GGUF row h*dh + 2*i + j); these undo
 * and redo that.  src and dst must not overlap. */
void sa_rows_gguf_to_hf(const float *src, float *dst, int n_head, int d_head, int cols);
void sa_rows_hf_to_gguf(const float *src, float *dst, int n_head, int d_head, int cols);

/* ----------------------------------------------------------- many deltas */

/*
 * The deltas of one request (sa-run --batch): files at scales, then
 * demonstrations encoded as sa-run --demos does, then llama.cpp LoRA
 * files at scales.  The arrays are the caller's.
 */
typedef struct sa_delta_spec {
	const char *const *path;
	const double *scale;
	int n;
	const char *const *demos;
	int n_demos;
	const char *const *lora;
	const double *lora_scale;
	int n_lora;
} sa_delta_spec;

/* Side paths of one spec, held by a deltaset: serial is new for every set
 * built, so a KV cache made under other deltas is never taken for it. */
typedef struct sa_sides {
	sa_lowrank *side;         /* [n_layer * SA_NMAT], NULL when all are zero */
	size_t bytes;
	uint64_t serial;
} sa_sides;

typedef struct sa_deltaset_opts {
	const char *adapter;      /* -a: every delta's adapter, or NULL */
	const char *fallback;     /* the default adapter, or NULL */
	const char *cache_dir;    /* of demonstrations (NULL: the default) */
	int demos_format;         /* SA_DEMOS_* */
	int max_held;             /* side path sets kept, at least 1 */
	size_t max_bytes;         /* and their bytes at most (0: no limit) */
} sa_deltaset_opts;

/*
 * The command line's spec (sa-run -d, --demos, --lora) applied to m itself,
 * merged into its weights (merged = 1) or as its side paths, in the order a
 * deltaset builds a request's: the files at their scales with their adapter
 * (o->adapter, else the one they record, else o->fallback: sa_deltas_bind),
 * the demonstrations encoded over m as loaded through o->cache_dir in
 * o->demos_format (sa_deltas_add_demos; note(ctx, msg) gets the cache's
 * messages, detail(ctx, msg) whether it hit and the tokens and
 * demonstrations encoded; either may be NULL), then the LoRA files
 * (sa_lora_apply).  o->max_held and o->max_bytes are not used.
 */
int sa_delta_spec_apply(sa_model *m, const sa_delta_spec *sp, const sa_deltaset_opts *o,
    int merged, sa_cache_note note, sa_cache_note detail, void *ctx);

/* Side paths of many specs over model m (sa_deltaset), built when first
 * asked for and kept until the least recently used must go.  On top of the
 * model's own side paths (copied in); with deltas merged into m, on top of
 * those. */

int sa_deltaset_new(sa_deltaset **out, sa_model *m, const sa_deltaset_opts *o);
void sa_deltaset_free(sa_deltaset *ds);
/*
 * The side paths of sp, built or held, in use until sa_deltaset_put: sets
 * in use are never dropped (the limits then wait).  A missing file, a
 * delta of another model or adapter, a LoRA that does not fit: the error
 * of the load (SA_ENOINPUT, SA_EDATA, ...), nothing held.
 */
int sa_deltaset_get(sa_deltaset *ds, const sa_delta_spec *sp, const sa_sides **out);
void sa_deltaset_put(sa_deltaset *ds, const sa_sides *s);
/* Bytes of side paths held. */
size_t sa_deltaset_bytes(const sa_deltaset *ds);
/* Run the session's next calls with these side paths (NULL: the model's
 * own); a cache made under others is forgotten, never reused. */
void sa_session_use_sides(sa_session *s, const sa_sides *sides);

/* --------------------------------------------------------------- LoRA in */

/*
 * A llama.cpp LoRA GGUF (sa_export_llama writes them) into model m at user
 * scale s: y = W x + c B (A x), c = s * alpha / rank (s when alpha is 0).
 * Merged (merged = 1) or as side paths; sa_lora_sides adds to side paths
 * of one's own instead.  Not a LoRA, another architecture or (recorded by
 * sa-export) another model, a tensor that fits no matrix: SA_EDATA.
 */
int sa_lora_apply(sa_model *m, const char *path, double s, int merged);
int sa_lora_sides(sa_lowrank **side, const sa_model *m, const char *path, double s);

/* ------------------------------------------------------ sa-run's options */

/*
 * sa-run(1)'s options, a field each (lib/run.c); strings and arrays are the
 * caller's.  They make one request (a prompt from prompt, or file, or the
 * standard input), or with batch the defaults of its requests: the
 * sampling (with the stops), special and chat_template.
 */
typedef struct sa_run_opts {
	const char *model;               /* -m */
	sa_delta_spec spec;              /* -d FILE[:S], --demos, --lora FILE[:S] */
	const char *adapter, *cache_dir; /* -a, --cache-dir */
	int demos_format, unmerged;      /* --demos-format (SA_DEMOS_AUTO: none) */
	long max_deltas, max_delta_mem;  /* --batch's side paths; -1: not given */
	long parallel;                   /* --batch's requests in flight */
	const char *prompt, *file, *batch;   /* -p, -f, --batch; NULL: not given */
	const char *system, *chat_template;
	const char *const *choices;      /* --choice, as given (see escape) */
	int n_choices;
	const char *const *stops;        /* --stop, as given */
	int n_stops;
	int escape;                      /* expand llama.cpp's escapes in the texts */
	int special, chat, tokenize, score, echo, json, no_bos, verbose;
	sa_sampling smp;                 /* -n, --temp, ... (its stops: stops) */
	long n_ctx, threads;             /* -c (-1: not given), -t */
} sa_run_opts;

/* sa-run(1)'s defaults: escapes expanded; 128 tokens at temperature 0.8,
 * top-k 40, top-p 0.95, min-p 0.05, no repeat penalty (over the last 64),
 * seed 0; one request in flight. */
void sa_run_opts_default(sa_run_opts *o);
/* SA_EUSAGE, the message naming the options, when some of o do not go
 * together: the first of sa-run(1)'s rules that o breaks. */
int sa_run_opts_check(const sa_run_opts *o);

/*
 * The request o makes: its prompt o->prompt, else (not batch) the file
 * o->file or the standard input, read now (sa_prompt_read); the texts of
 * -p, --system, --choice and --stop with llama.cpp's escapes expanded when
 * o->escape (sa_text_unescape); with o->chat, the messages of --system
 * and the prompt.  req points into the rest, which is sa_run_request's.
 */
typedef struct sa_run_request {
	sa_request req;
	sa_chat_msg msg[2];
	char *text, *system, **choices, **stops;
	size_t *choice_len, *stop_len;
	int n_choices, n_stops;
} sa_run_request;
int sa_run_request_new(sa_run_request **out, const sa_run_opts *o);
void sa_run_request_free(sa_run_request *r);

/* ------------------------------------------------------------ evaluation */

/*
 * A task of sa-eval(1): a directory with train.tsv, dev.tsv and test.tsv,
 * each headed by a row naming (at least) the columns input and label.
 */
typedef struct sa_example {
	char *input, *label;
	long line;               /* in its file */
} sa_example;

typedef struct sa_task {
	char *name;              /* the directory's last component */
	char *dir;
	sa_example *train;       /* DIR/train.tsv: where demonstrations come from */
	sa_example *eval;        /* DIR/<split>.tsv: the queries */
	int n_train, n_eval;
	char **labels;           /* distinct labels of train, in order of first use */
	int n_labels;
} sa_task;

/* No such directory or file: SA_ENOINPUT; a file without both columns, or
 * without rows: SA_EDATA "DIR/x.tsv:LINE: ...". */
int sa_task_load(sa_task **out, const char *dir, const char *split);
void sa_task_free(sa_task *t);

/* How a task is scored: candidate labels by likelihood, or greedy decoding. */
enum { SA_KIND_AUTO = -1, SA_KIND_CLASS = 0, SA_KIND_GEN = 1 };

/* One task's entry in a split file. */
typedef struct sa_split_entry {
	char *task;
	int seen;                /* 1: the adapter was trained on it; 0: unseen */
	int kind;                /* SA_KIND_*; AUTO when the file does not say */
	char **labels;           /* the classes a "labels" column lists (a|b|c) */
	int n_labels;            /* 0: not listed */
} sa_split_entry;

/*
 * A split file.  TSV: lines "task<TAB>seen|unseen[<TAB>class|gen]", or
 * columns named by a header row "task<TAB>...", of which "split" (or "set"),
 * "kind" and "labels" are read.  Markdown: table rows whose first cell is
 * the task and another cell "seen" or "unseen" (else the set is the one the
 * last heading names, as in "## Unseen tasks"); a cell starting "class" or
 * "gen" gives the kind.  Other lines are prose.  A TSV row without a set or
 * with an unknown kind: SA_EDATA "path:LINE: ..."; a file that is not UTF-8
 * text: SA_EDATA.
 */
int sa_split_read(const char *path, sa_split_entry **out, int *n);
void sa_split_free(sa_split_entry *s, int n);

/*
 * The demonstrations ex[idx[0..n)] through the default template, as
 * sa_demos_parse gives them (for sa_demos_segment).  name: the source.
 */
int sa_demos_from_examples(sa_demos **out, const char *name, const sa_example *ex,
    const int *idx, int n);

/*
 * An example under the default template, tokenized as sa-encode and
 * sa-train do it (no BOS): the query "{input} ->" and, per candidate label,
 * the record "{input} -> {label}\n".  A prompt ends with the query's first
 * n_prefix tokens (the part every record shares with the query), and
 * candidate i's answer is its record's tokens after them.
 */
typedef struct sa_qa {
	int *query;              /* [n_query] */
	int n_query, n_prefix;
	int n_cand;
	int **answer;            /* [n_cand][n_answer[i]] */
	int *n_answer;
} sa_qa;

int sa_qa_build(sa_qa *q, const sa_vocab *v, const char *input,
    const char *const *labels, int n_labels);
/* The same where a prompt of one text holds the example right after a
 * newline (after other records): tokenized as part of that text, without
 * the leading space a text's start gets. */
int sa_qa_build_in_text(sa_qa *q, const sa_vocab *v, const char *input,
    const char *const *labels, int n_labels);
void sa_qa_free(sa_qa *q);

/* -------------------------------------------------- evaluation protocol */

/*
 * sa-eval(1)'s three measurements: accuracy on tasks of zero-shot, ICL
 * with k demonstrations, and deltas of the same k and of K (sa_eval_tasks);
 * perplexity of text segments given nothing, the previous segment in the
 * prompt, a delta of it, a delta of the M previous ones (sa_eval_text);
 * recall of random word -> label mappings as the pairs grow, zero-shot,
 * ICL, then a delta per adapter (sa_eval_map).  Every method sees the
 * same tokens: an ICL prompt is BOS + demonstrations + query, and a delta
 * is encoded from the same demonstrations packed as sa-encode packs them
 * (but for icl_text, where ICL reads the prompt a user would type).
 */
enum { SA_RENAME_SWAP = 1, SA_RENAME_POOL = 2 };

typedef struct sa_eval_opts {
	/* tasks */
	const char *split;         /* queries from "test" or "dev" */
	const char *split_file;    /* sa_split_read's; NULL: TASKS.tsv beside the
	                            * first task, unless seen or unseen is given */
	const char *seen, *unseen; /* comma-separated task names, or NULL */
	int k;                     /* demonstrations of ICL and of the delta */
	int K;                     /* of the large delta; 0: 4 times those that fit */
	int max_labels;            /* classify a task with at most this many labels */
	int max_new;               /* tokens generated per answer */
	int rename;                /* classification tasks with other label words:
	                            * SA_RENAME_SWAP, SA_RENAME_POOL (from
	                            * pool/labels.txt), 0 none */
	/* text */
	int segment;               /* tokens per segment */
	int many;                  /* segments in the large delta (M) */
	int skip;                  /* passages not scored before the first one
	                            * scored (a test part apart from a dev part) */
	/* map */
	const char *pool;          /* directory of words.txt and labels.txt */
	const int *pairs;          /* numbers of pairs, a row each */
	int n_pairs;
	int repeat;                /* times each pair is shown */
	int episodes;              /* mappings drawn per number of pairs */
	int queries;               /* at least this many queries a row: more
	                            * episodes where a mapping asks fewer (0:
	                            * episodes alone) */
	int icl_text;              /* ICL's prompt as one text (sa-run -p's
	                            * tokens), not the encoder's records */
	/* all */
	int limit;                 /* queries per task or episode, passages per
	                            * text (0: all) */
	uint64_t seed;             /* draws of demonstrations and mappings */
	double scale;              /* of the deltas */
} sa_eval_opts;

/* sa-eval's defaults: test, k 16, K 0, 32 labels, 32 tokens, segments of
 * 128, M 8, pairs 1, 2, 4 ... 256, shown once, 4 episodes, seed 1, scale 1. */
void sa_eval_opts_default(sa_eval_opts *o);
/* SA_EUSAGE "task 'x' is in both --seen and --unseen". */
int sa_eval_opts_check(const sa_eval_opts *o);

/* One query (a passage, for text) under one method, as it is answered. */
typedef struct sa_eval_record {
	const char *task;          /* task name; text: the file; map: NULL */
	const char *method;        /* key of the method (sa_eval_table.method[m]) */
	int m;
	int k;                     /* tasks: demonstrations the method saw */
	int pairs, episode;        /* map: the mapping */
	int episodes;              /* map: mappings of this number of pairs */
	int index;                 /* row of the task's split (from 0); text: the
	                            * segment; map: the pair */
	int i, n;                  /* i-th (from 0) of the n queries of this run */
	const char *input, *gold, *prediction;   /* tasks and map */
	int correct;
	int tokens;                /* text: tokens scored */
	double logprob;            /* text: their log-probability */
	double time;               /* seconds; text: with the delta's encoding */
	size_t kv_bytes;           /* KV cache at its fullest */
} sa_eval_record;

/* What a method spent, summed over its queries (or passages). */
typedef struct sa_eval_cost {
	double time, kv, prompt;   /* seconds, KV-cache bytes, prompt tokens */
	long n;
	double enc_time;           /* seconds encoding and merging deltas */
	long n_enc;                /* deltas */
} sa_eval_cost;

/* A row of the table: a task, a text file or a number of pairs. */
typedef struct sa_eval_row {
	char *name;                /* task or text file; NULL for map */
	int set;                   /* tasks: 1 seen, 0 unseen, -1 neither */
	int kind;                  /* tasks: SA_KIND_CLASS or SA_KIND_GEN */
	int n;                     /* queries of a task, passages of a text, pairs */
	int k, K;                  /* tasks: as used (train may hold fewer) */
	int records;               /* map: records in the context */
	int queries;               /* map: queries each method was asked over
	                            * the episodes */
	double tokens;             /* text: tokens scored; map: tokens of the
	                            * context, mean over the episodes */
	double *score;             /* [n_methods]: accuracy in % (tasks, map) or
	                            * perplexity (text); NAN: not applicable */
} sa_eval_row;

typedef struct sa_eval_table {
	int n_methods;
	char **method;             /* keys: tasks "zero-shot" "icl" "sa" "sa-many";
	                            * text "none" "prev" "delta-prev" "delta-many";
	                            * map "zero-shot" "ICL" "<adapter file> r=<rank>" */
	sa_eval_cost *cost;        /* [n_methods] */
	int n_rows;
	sa_eval_row *row;
} sa_eval_table;

void sa_eval_table_free(sa_eval_table *t);

/*
 * What a run reports as it goes, each optional (h itself may be NULL), ctx
 * passed back: start once every input is read and checked, before the
 * first query (the rows are planned: tasks know their queries, k and K);
 * record after each query (the record and its strings live for the call);
 * row once row i is scored; note a warning (verbose 0) or what -v shows
 * (verbose 1).
 */
typedef struct sa_eval_hooks {
	void (*start)(void *ctx, const sa_eval_table *t);
	void (*record)(void *ctx, const sa_eval_record *r);
	void (*row)(void *ctx, const sa_eval_table *t, int i);
	void (*note)(void *ctx, int verbose, const char *msg);
	void *ctx;
} sa_eval_hooks;

/*
 * Each runs over its own session of model m, merging deltas into m and
 * leaving it reset, and gives the table in *out (the caller's to free;
 * NULL on failure).  A bad input is found before start: task directories
 * and split files as sa_task_load and sa_split_read say, a seen or unseen
 * name that is no task (SA_EUSAGE), a query or demonstration that cannot
 * fit the context (SA_EDATA); a segment longer than the context, more pairs
 * than words (SA_EUSAGE); an empty pool file (SA_EDATA).  A text file too
 * short for M + 1 segments: SA_EDATA when its row comes.  Text files are
 * read through sa_file_read_gz and tokenized line by line, as sa-train
 * reads text.
 */
int sa_eval_tasks(sa_eval_table **out, sa_model *m, const sa_adapter *a, char *const *dirs,
    int n, const sa_eval_opts *o, const sa_eval_hooks *h);
int sa_eval_text(sa_eval_table **out, sa_model *m, const sa_adapter *a, char *const *files,
    int n, const sa_eval_opts *o, const sa_eval_hooks *h);
int sa_eval_map(sa_eval_table **out, sa_model *m, sa_adapter *const *a, int n_adapters,
    const sa_eval_opts *o, const sa_eval_hooks *h);
/*
 * The random mappings of sa_eval_map, for other measurements on the same
 * episodes: the pool of dir, the entries of words.txt and labels.txt (their
 * lines without the blanks around them, empty ones skipped; a file without
 * entries is SA_EDATA).  sa_map_draw: episode e of n <= n_words pairs under
 * seed, as sa_eval_map draws it: ex[0..n) n distinct words, each with a
 * label drawn from the pool (the strings are the pool's), rec[0..n*repeat)
 * the order of the records (each pass a new one), qperm[0..n) the order of
 * the queries.
 */
typedef struct sa_map_pool {
	char **words, **labels;
	int n_words, n_labels;
} sa_map_pool;

int sa_map_pool_read(sa_map_pool **out, const char *dir);
void sa_map_pool_free(sa_map_pool *p);
int sa_map_draw(const sa_map_pool *p, uint64_t seed, int n, int e, int repeat, sa_example *ex,
    int *rec, int *qperm);
/*
 * Tasks: the mean score of method m over the rows of a set (1 seen, 0
 * unseen, -1 every row), over those where the method applies; NAN if it
 * applies to none.  *n: rows of the set; *partial: 1 if some lack a score.
 */
double sa_eval_mean(const sa_eval_table *t, int set, int m, int *n, int *partial);

/* What a run measures, for what prints it. */
enum { SA_EVAL_TASKS, SA_EVAL_TEXT, SA_EVAL_MAP };

/*
 * sa-eval(1)'s tables of a run of kind what, onto out as the run goes:
 * start and row are for the hooks' start and row (the header, then each
 * row once scored, flushed), end for after the run (tasks: the means over
 * seen and unseen tasks; every kind: the costs).  csv, when not NULL, takes
 * the table as CSV (map runs).  out and csv are borrowed.
 */
typedef struct sa_eval_report {
	FILE *out, *csv;
	int what;                  /* SA_EVAL_TASKS, SA_EVAL_TEXT or SA_EVAL_MAP */
	int many;                  /* text: M of sa_eval_opts, for a title */
	/* set by start: */
	int k_same;                /* tasks: every task used the same k */
	char k_used[16];           /* "=k" then, else "" */
	char head[8][64], name[8][64];   /* tasks, text: the methods' titles */
} sa_eval_report;

void sa_eval_report_start(sa_eval_report *r, const sa_eval_table *t);
void sa_eval_report_row(sa_eval_report *r, const sa_eval_table *t, int i);
void sa_eval_report_end(sa_eval_report *r, const sa_eval_table *t);
/* A query's record as one line of JSON (sa-eval --jsonl), with the keys
 * of a run of kind what. */
void sa_eval_record_print(FILE *fp, const sa_eval_record *r, int what);

/* -------------------------------------------------------------- training */

/*
 * A Llama model for training.  Trained (sa_tmodel_new, sa_tmodel_from_model),
 * it is held entirely in F32: every parameter in one block, in the order
 * tok_embd, per layer (attn_norm, attn_q, attn_k, attn_v, attn_output,
 * ffn_norm, ffn_gate, ffn_up, ffn_down), out_norm, output (absent when
 * tied); grads mirrors params (NULL when the model is frozen).  A frozen
 * view of a loaded model (sa_tmodel_view) holds only the norms in params;
 * tok_embd, output and the layers' w are NULL, and the products read the
 * model's matrices in their own type.
 */
typedef struct sa_tlayer {
	float *attn_norm;                 /* [d] */
	float *w[SA_NMAT];                /* by SA_MAT_*, [d_out][d_in] */
	float *ffn_norm;                  /* [d] */
} sa_tlayer;

typedef struct sa_tmodel {
	sa_config cfg;
	int tied;
	size_t n_params;
	float *params, *grads;
	float *tok_embd, *out_norm, *output;   /* views; output == tok_embd when tied */
	sa_tlayer *layers;
	sa_tlayer *glayers;                    /* the same views into grads */
	float *gtok_embd, *gout_norm, *goutput;
	/* the weights the products read: F32 views of params, or a frozen
	 * view's model's matrices; wmat [n_layer * SA_NMAT] by layer, SA_MAT_* */
	sa_matrix wembd, wout, *wmat;
	int frozen;                            /* a view: no gradients of weights */
} sa_tmodel;

/* A new model with scaled random weights (std 0.02, output projections
 * scaled down by sqrt(2 n_layer)), norms 1.  cfg.arch must be SA_ARCH_LLAMA. */
int sa_tmodel_new(sa_tmodel **out, const sa_config *cfg, int tied, uint64_t seed);
/* An F32 copy of a loaded model (any supported tensor types). */
int sa_tmodel_from_model(sa_tmodel **out, const sa_model *m);
/* A frozen view of a loaded model for adapter training: its matrices stay
 * in their type (converted to F32 a tile of rows at a time in the products),
 * its norms are copied; m must outlive the view.  Products over F16, BF16 or
 * quantized weights differ from those of sa_tmodel_from_model's copy only
 * in the order sgemm sums them; over F32 weights not at all. */
int sa_tmodel_view(sa_tmodel **out, const sa_model *m);
/* Allocate (zeroed) or drop gradient buffers. */
int sa_tmodel_want_grads(sa_tmodel *t, int on);
void sa_tmodel_free(sa_tmodel *t);
/* d_out and d_in of matrix SA_MAT_* under config c. */
void sa_tmodel_mat_dims(const sa_config *c, int mat, int *d_out, int *d_in);
/* Write as a GGUF llama model (type F32, F16 or Q8_0 for 2-D weights), with
 * the tokenizer.* metadata copied from vocab_src; name goes to general.name. */
int sa_tmodel_save(const sa_tmodel *t, const sa_gguf *vocab_src, int type,
    const char *name, const char *path);

/* A low-rank side path on one adapted matrix during training:
 * y = W x + W1 (H^T (W2 x)); W1 [d_out][Dkv], H [r][Dkv], W2 [r][d_in].
 * The d* pointers receive gradients (accumulated); NULL skips that one. */
typedef struct sa_tside {
	int rank;
	const float *W1, *H, *W2;
	float *dW1, *dH, *dW2;
} sa_tside;

/* Activations of one forward pass over B sequences of T tokens, kept for backward. */
typedef struct sa_tact sa_tact;

int sa_tact_new(sa_tact **out, const sa_config *cfg, int B, int T);
void sa_tact_free(sa_tact *a);

/*
 * Forward over tokens [B][T] (positions 0..T-1 in each row).  targets [B][T]:
 * the next-token id to score at each position, or -1 to skip it; *loss is the
 * mean cross-entropy over scored positions (0 scored: loss 0).  side: NULL, or
 * [n_layer * SA_NMAT] entries (rank 0 = none).  B and T at most the sizes
 * the activations were made for.  Keys before RoPE stay in the activations
 * (sa_tact_keys/values) for the context pass.
 */
int sa_tmodel_forward(sa_tmodel *t, sa_tact *a, const sa_tside *side,
    const int *tokens, const int *targets, int B, int T, float *loss);
/* The keys and values of sa_tmodel_forward over one sequence of T tokens
 * (sa_tact_keys/values), and the input of every layer's matrix mat
 * (sa_tact_input; mat < 0: none), and nothing else: the layers share the
 * rest of one set of activations, there are no logits, and no backward
 * can follow. */
int sa_tmodel_keys(sa_tmodel *t, sa_tact *a, const int *tokens, int T, int mat);
/* Backward of the last forward: accumulates into t->grads (if allocated and
 * weight_grads) and into the side paths' gradient pointers. */
int sa_tmodel_backward(sa_tmodel *t, sa_tact *a, const sa_tside *side, int weight_grads);
/* The same into grads ([n_params], laid out as t->params; NULL: no weight
 * gradients) instead of t->grads.  t is only read: threads may share it. */
int sa_tmodel_backward_into(const sa_tmodel *t, sa_tact *a, const sa_tside *side, float *grads);
/* Layer l's keys before RoPE and values of the last forward: [B*T][Dkv]. */
const float *sa_tact_keys(const sa_tact *a, int layer);
const float *sa_tact_values(const sa_tact *a, int layer);
/* The input of matrix mat (SA_MAT_*) in layer l of the last forward:
 * [B*T][d_in], as sa_input_hook describes it. */
const float *sa_tact_input(const sa_tact *a, int layer, int mat);
/* Logits of the last forward: [B*T][n_vocab]. */
const float *sa_tact_logits(const sa_tact *a);

/*
 * Data parallelism: n workers (0 = sa_get_threads()), the caller being the
 * first, run the items of a training step (micro-batches, episodes) whole,
 * each with single-threaded BLAS (a run sets BLAS to one thread, and to
 * sa_get_threads() again when it ends).  fn(ctx, worker, item, g) runs an item on
 * one worker (0 <= worker < n, for per-worker activations) and accumulates
 * its gradient into g, n_grads floats zeroed for it.  sa_tworkers_run adds
 * the items' gradients into grads one by one in item order, so the sum has
 * the same bits for any number of workers; grads NULL (or n_grads 0): g is
 * NULL, for runs without gradients.  Returns the first failure of an item
 * (later items may then not run).
 */
typedef struct sa_tworkers sa_tworkers;
typedef int (*sa_titem_fn)(void *ctx, int worker, int item, float *grads);
int sa_tworkers_new(sa_tworkers **out, int n, size_t n_grads);
void sa_tworkers_free(sa_tworkers *w);
int sa_tworkers_count(const sa_tworkers *w);
int sa_tworkers_run(sa_tworkers *w, sa_titem_fn fn, void *ctx, int n_items, float *grads);

/* AdamW over n parameters: m and v are the moment buffers (zeroed at step 0),
 * step counts from 1; wd is decoupled weight decay (call per tensor group). */
void sa_adamw(float *p, const float *g, float *m, float *v, size_t n, int step,
    float lr, float beta1, float beta2, float eps, float wd);
/* Global L2 norm of n values. */
double sa_l2norm(const float *x, size_t n);

/* The context mapping for training (forward with saved intermediates, and
 * backward to Q, g, b).  A stream is reset, then fed segment by segment with
 * the base model's keys (before RoPE; or, for a memory keyed by a matrix's
 * input, that input: key_width wide) and values of every layer. */
typedef struct sa_tctx sa_tctx;
int sa_tctx_new(sa_tctx **out, int n_layer, int n_head_kv, int d_head, int key_width, int rank,
    int chunk, uint32_t mats, int max_tokens);
void sa_tctx_free(sa_tctx *c);
void sa_tctx_reset(sa_tctx *c);
int sa_tctx_n_tokens(const sa_tctx *c);
/* The segments so far: their count, and where each starts (*start). */
int sa_tctx_segments(const sa_tctx *c, const int **start);
/* Layer l's keys and values of the stream so far: [n_tokens][key_width],
 * [n_tokens][Hk*dh]. */
const float *sa_tctx_keys(const sa_tctx *c, int l);
const float *sa_tctx_values(const sa_tctx *c, int l);
/* K[l], V[l]: [n][key_width], [n][Hk*dh] for every layer l. */
int sa_tctx_add_segment(sa_tctx *c, const float *const *K, const float *const *V, int n);
/* State of (l, m) over the stream: Q [Hk][r][dh], g [Hk][dh], b [Hk][r]. */
int sa_tctx_forward(sa_tctx *c, int l, int m, const float *Q, const float *g, const float *b);
const float *sa_tctx_state(const sa_tctx *c, int l, int m);   /* [Hk][r][dh] */
/* Accumulate dQ, dg, db from d(loss)/d(state). */
int sa_tctx_backward(sa_tctx *c, int l, int m, const float *Q, const float *g,
    const float *dh_final, float *dQ, float *dg, float *db);

/* --------------------------------------------------------------- trainer */

/*
 * sa-train(1) as a library: pretrain a base model, or train the
 * StreamAdapter mapping of a frozen one, on episodes of text, tasks, random
 * mappings and repeated spans.
 */
enum { SA_TRAIN_PRETRAIN = 1, SA_TRAIN_ADAPTER = 2 };

/*
 * What to train, on what, and how: the options of sa-train(1), filled by
 * the caller.  A field whose comment names a default for 0 takes it there;
 * the files are read while the trainer is made.
 */
typedef struct sa_train_opts {
	int mode;                    /* SA_TRAIN_* */
	const char *model;           /* adapter: the frozen base model */
	const char *vocab;           /* pretrain: a GGUF with tokenizer.* keys, or a
	                              * TSV (id, piece, score, type) */
	const char *init;            /* start from these weights (model or adapter), or NULL */
	int rebind;                  /* init is an adapter of another model of this shape */
	const char *ckpt;            /* the checkpoint directory (required), made if
	                              * missing; a TSV vocab becomes DIR/vocab.gguf */
	const char *const *texts;    /* [n_texts] plain text (FILE.gz through zlib) */
	int n_texts;
	const char *valid;           /* held-out text for the validation loss, or NULL */
	const char *const *tasks;    /* [n_tasks] directories with train.tsv and dev.tsv */
	int n_tasks;
	const char *pool;            /* words.txt and labels.txt for random mappings, or NULL */
	const char *eval_pool;       /* the same for the copy evaluation (else pool) */
	int map_vocab;               /* random mappings of open-vocabulary words */
	double rename;               /* share of class-task episodes with new label words */
	double word_labels;          /* share of open-vocabulary mappings whose labels are
	                              * all whole words of the text */
	double mix[4];               /* shares of text, task, random-mapping and repeated-span
	                              * episodes; all 0: the mode's default */
	/* pretrain: the model's shape (ff 0: 8*dim/3 rounded up to 64) and saved type */
	int dim, layers, heads, kv_heads, ff, ctx, tied, save_type;
	float rope_base;
	/* adapter (rank 0: 16 for a new one, init's own rank for init); a new
	 * adapter's mapping (SA_MAPPING_*), and for SA_MAPPING_LSQ its d_key
	 * and lambda */
	int rank, chunk, kmin, kmax, queries, text_segs;
	int mapping, d_key, value_offset;
	double lambda;
	uint32_t mats;               /* bitmask of SA_MAT_* */
	double gate_lr;              /* learning-rate factor of the gates (g, b; LSQ: w, c) */
	double gate_bias;            /* gate bias of a new adapter; NAN: the default */
	/* optimisation (seq 0: the model's context; min_lr < 0: lr / 10) */
	long steps, batch_tokens, warmup, start_step;
	int seq, micro;
	double lr, min_lr, wd, clip;
	uint64_t seed;
} sa_train_opts;

/* sa-train(1)'s defaults: a 256-wide model of 6 layers, 8 heads (4 of
 * keys and values), context 512, tied, saved as F16; chunks of 64, 1 to 64
 * demonstrations and 8 queries an episode, attn_q, attn_k, attn_v and
 * attn_output; 1000 steps of 16384 tokens in micro-batches of 8, lr 1e-3
 * (min lr / 10), warmup 100, wd 0.1, clip 1, seed 1. */
void sa_train_opts_default(sa_train_opts *o);

/*
 * A trainer: the model (and adapter), the data, the optimiser's state and
 * the workers (sa_get_threads() of them, each with its activations).  A
 * step draws its episodes, runs them forward and backward until
 * batch_tokens are met, averages and clips the gradient and takes an AdamW
 * step; its results are the same bytes for any number of threads.
 */
typedef struct sa_trainer sa_trainer;

/* Check the options' combinations (SA_EUSAGE, the message naming
 * sa-train(1)'s options), load or make the model, then the data.  o is
 * copied, its files read here only; *out is the caller's, for
 * sa_trainer_free. */
int sa_trainer_new(sa_trainer **out, const sa_train_opts *o);
void sa_trainer_free(sa_trainer *t);
/* Steps taken: start_step, or the checkpoint's, plus those since. */
long sa_trainer_steps(const sa_trainer *t);

typedef struct sa_train_stats {
	double loss;                 /* mean over the step's micro-batches or episodes */
	float lr;
	double grad_norm;            /* before clipping */
	long tokens;                 /* tokens run */
} sa_train_stats;

/* One step on the next episodes of the data stream.  A gradient that is
 * not finite: SA_EINTERNAL (the parameters are left as they were). */
int sa_trainer_step(sa_trainer *t, sa_train_stats *s);

/* Evaluation on fixed episodes (the same at every call); NAN where not
 * measured. */
typedef struct sa_train_eval {
	double valid_loss;           /* pretrain: on two micro-batches of held-out text */
	double copy_acc;             /* pretrain: label words read back from the context */
	double copy_acc_first;       /* pretrain: the same at a word's first sight (chance) */
	double sa_acc;               /* adapter: answers right with the context's delta */
	double zero_shot_acc;        /* adapter: the same for the base alone */
	int answers;                 /* adapter: answers scored */
} sa_train_eval;

int sa_trainer_evaluate(sa_trainer *t, sa_train_eval *e);
/* The next n pretraining sequences of the data stream (the first n of a new
 * trainer) as JSON Lines on fp: {"kind":"text|task|map|repeat","text":...,
 * "unscored":[the runs of tokens that are no targets]}.  An adapter
 * trainer: its next n episodes, {"kind":"text|task|map","context":[each
 * segment as the encoder runs it],"queries":[[input, scored answer]...]}. */
int sa_trainer_show_data(sa_trainer *t, long n, FILE *fp);

/* The result: the model (type save_type) or the adapter, "-" = stdout. */
int sa_trainer_save(sa_trainer *t, const char *path);
/* A checkpoint (a GGUF of general.type "sa-checkpoint"): the parameters,
 * both Adam moments, the step and the data stream's state. */
int sa_trainer_checkpoint(const sa_trainer *t, const char *path);
/* Continue from a checkpoint: exactly where the run that wrote it was.  One
 * of another mode or size: SA_EDATA, the trainer unchanged. */
int sa_trainer_resume(sa_trainer *t, const char *path);
/* The lines of sa-train's JSON Lines log: a step's stats (and its
 * tokens per second over seconds), an evaluation's results (the keys of
 * mode, SA_TRAIN_*). */
void sa_train_stats_print(FILE *fp, long step, const sa_train_stats *s, double seconds);
void sa_train_eval_print(FILE *fp, int mode, long step, const sa_train_eval *e);

/* ------------------------------------------------------ file description */

/*
 * What the file at path ("-" = stdin) is, as sa-info(1) tells it, onto fp:
 * "key: value" lines, or one JSON object on a line (json = 1).  A delta
 * shows its header; a GGUF file its kind (model, adapter, lora adapter,
 * vocab, gguf), metadata, tensor types and fingerprint.  A model or adapter
 * is described only if its loader accepts it, so on failure fp may hold
 * part of a description, which the caller drops.  SA_ENOINPUT, SA_EDATA
 * (neither a delta nor a GGUF file, or what the loaders say), SA_EIO.
 */
int sa_file_describe(FILE *fp, const char *path, int json);

/* --------------------------------------------------------- output files */

/*
 * An output written to a temporary file in the target's directory and
 * renamed into place on commit, so an interrupted run leaves either the old
 * file or the new one, never half of one.  Path "-" is stdout (no rename).
 * A symbolic link is followed: its target is replaced and the link stays.
 * Temporary names are registered so that sa_outfile_install_signals() can
 * unlink them on SIGINT/SIGTERM/SIGHUP before the process dies.
 */
typedef struct sa_outfile {
	FILE *fp;
	char *path;  /* final name (NULL for stdout) */
	char *tmp;   /* temporary name (NULL for stdout) */
} sa_outfile;

int sa_outfile_open(sa_outfile *o, const char *path);   /* SA_ECANTCREAT */
int sa_outfile_commit(sa_outfile *o);                   /* SA_EIO; closes */
void sa_outfile_abort(sa_outfile *o);                   /* unlink tmp; closes */
void sa_outfile_install_signals(void);
/* fflush+fclose(stdout) with error check; SA_EIO "stdout: ..." on failure. */
int sa_stdout_close(void);

/* Read a whole file ("-" = stdin) into memory, NUL-terminated (not counted in *len). */
int sa_file_read(const char *path, char **data, size_t *len);
/* The same, and gzip data is read decompressed (plain text stays as it is):
 * SA_EDATA "path: ..." for a damaged stream. */
int sa_file_read_gz(const char *path, char **data, size_t *len);

/* Seconds on the monotonic clock, for rates and timings. */
double sa_now(void);

/* --------------------------------------------------------------- hashing */

/* 64-bit FNV-1a, chainable: h = sa_hash64(h, p, n); start with SA_HASH64_INIT. */
#define SA_HASH64_INIT 0xcbf29ce484222325ULL
uint64_t sa_hash64(uint64_t h, const void *p, size_t n);
/* CRC-32 (zlib's polynomial), chainable from 0. */
uint32_t sa_crc32(uint32_t crc, const void *p, size_t n);

/* ------------------------------------------------------- random numbers */

/*
 * SplitMix64, the library's one generator: the next draw of the stream *s,
 * the same on every machine.  Any 64-bit value seeds it.  The uniforms
 * below take the top 53 bits k of one draw; each is some caller's, kept so
 * that its numbers stay what they were.
 */
uint64_t sa_splitmix64(uint64_t *s);
/* k * 2^-53, in [0, 1): sampling, the training data, sa_rng_unif. */
double sa_unif(uint64_t *s);
/* (k + 1/2) * 2^-53, in (0, 1), never 0: an adapter's Box-Muller. */
double sa_unif_mid(uint64_t *s);
/* (k + 1) * 2^-53, in (0, 1], never 0: the trainer's Box-Muller. */
double sa_unif_pos(uint64_t *s);
/* floor(sa_unif(s) * n), for n > 0; 0 otherwise: the training data's. */
long sa_unif_below(uint64_t *s, long n);

/* A stream as a value: { seed }. */
typedef struct sa_rng {
	uint64_t s;
} sa_rng;

uint64_t sa_rng_next(sa_rng *r);      /* sa_splitmix64(&r->s) */
double sa_rng_unif(sa_rng *r);        /* sa_unif(&r->s) */
/* sa_rng_next(r) % n, for n > 0; 0 otherwise.  (Not sa_unif_below,
 * which draws other numbers.) */
long sa_rng_below(sa_rng *r, long n);

/* ------------------------------------------------------------------ JSON */

/* A small JSON value tree (RFC 8259), enough for JSON Lines requests. */
enum { SA_JSON_NULL, SA_JSON_BOOL, SA_JSON_NUM, SA_JSON_STR, SA_JSON_ARR, SA_JSON_OBJ };
typedef struct sa_json {
	int type;
	double num;              /* NUM, BOOL (0/1) */
	char *str;               /* STR, NUL-terminated UTF-8 (may contain NUL: see len) */
	size_t len;
	struct sa_json *items;   /* ARR elements, OBJ values */
	char **keys;             /* OBJ keys */
	size_t n;
	const char *raw;         /* the value's own text in the parsed text, */
	size_t raw_len;          /* valid while that text is */
} sa_json;

/* Parse one complete JSON text; SA_EDATA with "column N: ..." on error
 * (also: invalid UTF-8, unpaired surrogates, nesting deeper than 64). */
int sa_json_parse(const char *text, size_t len, sa_json *out);
void sa_json_free(sa_json *j);
/* NULL if absent; with duplicate keys, the last one. */
const sa_json *sa_json_get(const sa_json *obj, const char *key);
/* Write s as a JSON string literal (quotes, escapes; invalid UTF-8 -> U+FFFD). */
void sa_json_put_str(FILE *fp, const char *s, size_t len);
/* Write a number in the shortest form that reads back the same (NaN, inf: null). */
void sa_json_put_num(FILE *fp, double v);
/* Write any value, compact, on one line. */
void sa_json_put(FILE *fp, const sa_json *j);
/* Bytes from the start of s[0..n) that are well-formed UTF-8 without a NUL:
 * n when all of it is text. */
size_t sa_text_len(const char *s, size_t n);

#endif
