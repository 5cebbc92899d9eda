/*
 * train_impl.h - what the files of training share and the public API does
 * not show: the random numbers, and the trainer's data (train_data.c) and
 * optimiser (optim.c), which trainer.c puts together.  Their vector
 * kernels are kernels.c's and kernels_float.c's (kernels_impl.h).
 */
#ifndef TRAIN_IMPL_H
#define TRAIN_IMPL_H

#include "sa.h"

/* ------------------------------------------------------------------ data */

/* One labelled example: the whole demonstration, and where its answer starts. */
typedef struct sa_texample {
	sa_toks demo;        /* "{input} -> {label}\n" */
	int answer_at;       /* tokens before the answer (common prefix with "{input} ->") */
	int label;           /* index into the task's labels (train's, then dev's) */
} sa_texample;

typedef struct sa_ttask {
	sa_texample *train, *dev;
	int n_train, n_dev;
	int n_labels;
	int renamable;       /* 2 to 16 labels, all words: a classification task */
	int label_tok[16][3], label_n[16];   /* a renamable task's labels as answered,
	                                      * 0 tokens when longer than 3 */
} sa_ttask;

/* Words for random mappings, each pre-tokenized. */
typedef struct sa_tpool {
	sa_toks *w;
	int n;
} sa_tpool;

/*
 * Everything the episodes are drawn from: the text corpus (tokenized line
 * by line), the tasks, the word pools and the open-vocabulary word pieces.
 * Reads the options it was loaded with (the trainer's copy) as it draws.
 */
typedef struct sa_tdata {
	const sa_train_opts *o;
	const sa_vocab *vocab;
	sa_toks corpus, valid;
	sa_ttask *tasks;
	int n_tasks;
	sa_tpool words, labels;            /* --pool */
	sa_tpool eval_words, eval_labels;  /* --eval-pool */
	sa_toks sep[2];                    /* " ->" and "\n" as they appear mid-line */
	signed char *piece_kind;           /* [n_vocab] 1 word start, 2 continuation, 0 other */
	int *word_start, n_word_start, *word_cont, n_word_cont;
	int *buf;                          /* [o->seq + 8] a demonstration with a new label */
} sa_tdata;

/* Load what o names (its mix already resolved; o->seq the window) through
 * vocab; o must outlive d. */
int sa_tdata_load(sa_tdata *d, const sa_train_opts *o, const sa_vocab *vocab);
void sa_tdata_free(sa_tdata *d);

/* A window of T+1 tokens of src at random (inputs [0, T), targets [1, T]). */
void sa_tdata_window(const sa_toks *src, uint64_t *rng, int *seq, int T);
/* One pretraining sequence of T+1 tokens of a kind drawn by the mix, and
 * which of them are no targets (unscored [T+1], 1: not scored); returns
 * the kind (0 text, 1 task, 2 random mapping, 3 repeated span). */
int sa_tdata_sequence(sa_tdata *d, uint64_t *rng, int *seq, unsigned char *unscored, int T);
/* n sequences as JSON Lines {"kind":..., "text":..., "unscored":[runs]} on fp. */
int sa_tdata_show(sa_tdata *d, uint64_t *rng, long n, int T, FILE *fp);

/* The pools of the copy test (--eval-pool, else --pool); NULL when none. */
const sa_tpool *sa_tdata_copy_words(const sa_tdata *d, const sa_tpool **labels);
/*
 * One sequence of the copy test: a random mapping of 8 words, repeated to
 * fill s [T+1].  in [T] gets its inputs; tgt [T] the label's first token at
 * the position that predicts it, -1 elsewhere; first [T] 1 where that
 * label's word appears for the first time.
 */
void sa_tdata_copy_test(const sa_tdata *d, uint64_t *rng, int *s, int *in, int *tgt,
    int *first, int T);

/* One adapter episode, drawn before it runs.  Its context holds at most
 * SA_EPISODE_WINDOWS windows of tokens: 16 segments packed, or as many
 * records alone as fit there. */
enum { SA_EPISODE_WINDOWS = 16, SA_EPISODE_SEGS = 1024 };
typedef struct sa_episode {
	sa_toks ctx;         /* the demonstrations, segment after segment */
	int seg[SA_EPISODE_SEGS], n_seg;  /* where each segment starts in ctx (each from position 0) */
	int *in, *tgt;       /* [Q][Tq] the queries and their targets (-1: not scored) */
	int Q, Tq;
	int kind;            /* 0 text, 1 task, 2 random mapping */
	float loss;
	int acc[3];          /* evaluation: see the trainer's run_episode */
} sa_episode;

/*
 * Draw an adapter episode: k demonstrations of a task (or a random mapping,
 * or text) form the context; o->queries other examples run alone through
 * the adapted model, scored on their answer tokens only.  e->in and e->tgt
 * hold o->queries * T.  *n_tok counts the context and query tokens.  With
 * held_out, a task's queries come from its dev split.  records
 * (SA_RECORDS_*): the demonstrations packed into segments of T tokens, or
 * each alone in a segment, as the adapter's encoder lays them out.
 */
int sa_tdata_episode(sa_tdata *d, uint64_t *rng, sa_episode *e, int T, long *n_tok,
    int held_out, int records);
/* n adapter episodes as JSON Lines {"kind":..., "context":[segments],
 * "queries":[[prompt, answer]...]} on fp. */
int sa_tdata_show_episodes(sa_tdata *d, uint64_t *rng, long n, int T, int records, FILE *fp);

/* ------------------------------------------------------------- optimiser */

/*
 * What AdamW sees: one block of n trainable floats p with gradient g (the
 * caller's) and moments m, v (the optimiser's), and ranges of it, in order,
 * with their own weight decay and learning-rate factor; outside them, no
 * decay and factor 1.
 */
typedef struct sa_optim_range {
	size_t lo, hi;
	float wd, lr_factor;
} sa_optim_range;

typedef struct sa_optim {
	float *p, *g, *m, *v;
	size_t n;
	sa_optim_range *range;
	int n_range;
} sa_optim;

/* Moments zeroed, no ranges. */
int sa_optim_init(sa_optim *o, float *p, float *g, size_t n);
void sa_optim_free(sa_optim *o);
/* The range of n floats at start (in p, after the ranges added before). */
int sa_optim_add_range(sa_optim *o, const float *start, size_t n, float wd, float lr_factor);
/* The gradient's global L2 norm; when finite and above clip > 0, the
 * gradient is scaled down to clip. */
double sa_optim_clip(sa_optim *o, double clip);
/* One AdamW step (betas 0.9, 0.95), step counting from 1. */
void sa_optim_step(sa_optim *o, int step, float lr);
/* The learning rate of step (from 0): linear warmup to o->lr over
 * o->warmup steps, then cosine decay to o->min_lr at o->steps. */
float sa_optim_lr(const sa_train_opts *o, long step);

#endif
