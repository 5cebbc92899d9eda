/*
 * sa-train - pretrain a small base model, or train the StreamAdapter mapping
 * of a frozen base model, on text and task episodes.
 *
 * Options, then the loop over the trainer in libsa (lib/trainer.c): step,
 * log, evaluate, checkpoint.  A signal stops the run after a last checkpoint, from which
 * --resume continues exactly.
 */
#include <signal.h>

#define TOOL "sa-train"
#include "tool.h"

static const char usage_text[] =
    "usage: sa-train --pretrain --vocab FILE -o MODEL [options] [--text FILE]... [--task DIR]...\n"
    "       sa-train --adapter [-m MODEL] -o ADAPTER [options] [--task DIR]... [--text FILE]...\n";

/* sa-train's own options: what the run does around the trainer. */
typedef struct run {
	const char *out, *log;
	tool_list texts, tasks;
	long ckpt_every, eval_every, run_steps, show_data;
	int resume, threads, quiet, verbose;
} run;

static void
parse_mix(double mix[4], const char *s)
{
	int nc = 0;

	mix[3] = 0;
	if (sscanf(s, "%lf,%lf,%lf%n,%lf%n", &mix[0], &mix[1], &mix[2], &nc, &mix[3], &nc) < 3 ||
	    s[nc] || mix[0] < 0 || mix[1] < 0 || mix[2] < 0 || mix[3] < 0 ||
	    mix[0] + mix[1] + mix[2] + mix[3] <= 0)
		die(SA_EUSAGE, "--mix: want three or four non-negative shares, e.g. 0.5,0.25,0.25");
}

enum { O_PRETRAIN, O_ADAPTER, O_TYPE, O_KIND, O_MATS, O_MIX };

/* The options that are more than a value to keep. */
static void
opt_call(void *ctx, const tool_opt *t, const char *arg)
{
	sa_train_opts *o = ctx;

	switch (t->val) {
	case O_PRETRAIN: o->mode |= SA_TRAIN_PRETRAIN; break;
	case O_ADAPTER: o->mode |= SA_TRAIN_ADAPTER; break;
	case O_TYPE:
		if (!strcmp(arg, "f32")) o->save_type = SA_TYPE_F32;
		else if (!strcmp(arg, "f16")) o->save_type = SA_TYPE_F16;
		else if (!strcmp(arg, "q8_0")) o->save_type = SA_TYPE_Q8_0;
		else die(SA_EUSAGE, "--type: want f32, f16 or q8_0");
		break;
	case O_KIND: o->mapping = parse_kind(arg); break;
	case O_MATS: o->mats = parse_mats(arg); break;
	case O_MIX: parse_mix(o->mix, arg); break;
	}
}

/* o's texts and tasks are r's lists, the caller's to free. */
static void
parse_args(int argc, char **argv, sa_train_opts *o, run *r)
{
	const tool_opt table[] = {
		TEXT("Pretrain a base model, or train a StreamAdapter mapping for one (sa-train(1)).\n"),
		TEXT("Mode and files:"),
		{ "pretrain", 0, NULL, CALL(O_PRETRAIN), "train every weight of a new model (needs --vocab)" },
		{ "adapter", 0, NULL, CALL(O_ADAPTER), "train an adapter for the frozen model of -m" },
		{ "model", 'm', "FILE", STR(&o->model),
		    "base model (--adapter; default: $SA_MODEL, else\nthe installed one)" },
		{ "vocab", 0, "FILE", STR(&o->vocab), "tokenizer: a GGUF, or a TSV (id, piece, score, type)" },
		{ "init", 0, "FILE", STR(&o->init), "start from these weights (model or adapter GGUF)" },
		{ "rebind", 0, NULL, FLAG(&o->rebind, 1), "--init's adapter is of another model of this shape" },
		{ "output", 'o', "FILE", STR(&r->out),
		    "result, rewritten at every checkpoint (-: stdout at\nthe end)" },
		{ "text", 0, "FILE", LIST(&r->texts), "plain text for language-model episodes (repeatable)" },
		{ "valid", 0, "FILE", STR(&o->valid), "held-out text for the validation loss" },
		{ "task", 0, "DIR", LIST(&r->tasks), "DIR/train.tsv and DIR/dev.tsv, input and label\n(repeatable)" },
		{ "pool", 0, "DIR", STR(&o->pool), "words.txt and labels.txt for random-mapping episodes" },
		{ "map-vocab", 0, NULL, FLAG(&o->map_vocab, 1), "random mappings of words drawn from the vocabulary" },
		{ "rename", 0, "X", NUM(&o->rename, 0, 1), "share of class-task episodes with new label words (0)" },
		{ "word-labels", 0, "X", NUM(&o->word_labels, 0, 1),
		    "share of --map-vocab mappings whose labels are\nwords of the text (0)" },
		{ "eval-pool", 0, "DIR", STR(&o->eval_pool), "words and labels of the copy evaluation (--pool)" },
		{ "show-data", 0, "N", NUM(&r->show_data, 1, LONG_MAX),
		    "print the first N sequences as JSON Lines and exit" },
		TEXT("\nModel shape (--pretrain):"),
		{ "dim", 0, "N", NUM(&o->dim, 8, 16384), "model width (256)" },
		{ "layers", 0, "N", NUM(&o->layers, 1, 256), "layers (6)" },
		{ "heads", 0, "N", NUM(&o->heads, 1, 1024), "attention heads (8)" },
		{ "kv-heads", 0, "N", NUM(&o->kv_heads, 1, 1024), "heads of keys and values (4)" },
		{ "ff", 0, "N", NUM(&o->ff, 1, 1 << 20), "feed-forward width (4*dim*2/3 rounded up to 64)" },
		{ "ctx", 0, "N", NUM(&o->ctx, 8, 1 << 16), "context length (512)" },
		{ "rope-base", 0, "X", NUM(&o->rope_base, 1, 1e9), "RoPE base (10000)" },
		{ "tied", 0, NULL, FLAG(&o->tied, 1), "output shares the embedding (default)" },
		{ "untied", 0, NULL, FLAG(&o->tied, 0), "output of its own" },
		{ "type", 0, "T", CALL(O_TYPE), "saved weights: f32, f16 (default), q8_0" },
		TEXT("\nAdapter (--adapter):"),
		{ "kind", 0, "pool|lsq", CALL(O_KIND), "a new adapter's context mapping (pool)" },
		{ "rank", 'r', "N", NUM(&o->rank, 1, 4096), "pool: learned query slots per KV head (16)" },
		{ "chunk", 'C', "N", NUM(&o->chunk, 1, 1 << 16), "pool: tokens per chunk (64)" },
		{ "d-key", 0, "N", NUM(&o->d_key, 1, 4096), "lsq: features per memory (64)" },
		{ "lambda", 0, "X", NUM(&o->lambda, 1e-12, 1e12), "lsq: ridge of the read-out (1)" },
		{ "value-offset", 0, "N", NUM(&o->value_offset, 0, 1), "lsq: bind a key to the value N tokens on (0)" },
		{ "mats", 0, "LIST|all", CALL(O_MATS),
		    "adapted matrices (attn_q,attn_k,attn_v,attn_output)" },
		{ "kmin", 0, "N", NUM(&o->kmin, 1, 1 << 20), "demonstrations per episode, at least (1)" },
		{ "kmax", 0, "N", NUM(&o->kmax, 1, 1 << 20), "and at most (64), drawn log-uniform" },
		{ "queries", 0, "N", NUM(&o->queries, 1, 4096), "held-out queries per episode (8)" },
		{ "text-segs", 0, "N", NUM(&o->text_segs, 1, 16), "text contexts of 1 to N segments, uniform (1)" },
		{ "gate-lr", 0, "X", NUM(&o->gate_lr, 0, 1000),
		    "learning-rate factor of the gates (g, b; lsq: w, c)\n(1)" },
		{ "gate-bias", 0, "X", NUM(&o->gate_bias, -20, 20),
		    "gate bias of a new adapter: a = sigmoid(X) (3)" },
		TEXT("\nOptimisation:"),
		{ "steps", 0, "N", NUM(&o->steps, 1, LONG_MAX), "steps (1000)" },
		{ "batch-tokens", 0, "N", NUM(&o->batch_tokens, 1, LONG_MAX), "tokens per step (16384)" },
		{ "seq", 0, "N", NUM(&o->seq, 2, 1 << 16), "sequence length (the context length)" },
		{ "micro", 0, "N", NUM(&o->micro, 1, 4096), "sequences per micro-batch in pretraining (8)" },
		{ "lr", 0, "X", NUM(&o->lr, 0, 10), "peak learning rate (1e-3)" },
		{ "min-lr", 0, "X", NUM(&o->min_lr, 0, 10), "final learning rate (lr/10)" },
		{ "warmup", 0, "N", NUM(&o->warmup, 0, LONG_MAX), "steps of warmup (100)" },
		{ "wd", 0, "X", NUM(&o->wd, 0, 10), "weight decay of matrices (0.1)" },
		{ "clip", 0, "X", NUM(&o->clip, 0, 1e9), "gradient-norm clip (1.0)" },
		{ "seed", 's', "N", NUM(&o->seed, 0, LONG_MAX), "seed (1)" },
		{ "mix", 0, "T,K,M[,R]", CALL(O_MIX),
		    "shares of text, task, mapping and repeated-span\nepisodes" },
		TEXT("\nRuns:"),
		{ "ckpt", 0, "DIR", STR(&o->ckpt), "checkpoint directory (default: OUTPUT.ckpt)" },
		{ "ckpt-every", 0, "N", NUM(&r->ckpt_every, 1, LONG_MAX), "steps between checkpoints (100)" },
		{ "resume", 0, NULL, FLAG(&r->resume, 1), "continue from DIR's checkpoint" },
		{ "run-steps", 0, "N", NUM(&r->run_steps, 1, LONG_MAX),
		    "stop after N steps of this run (checkpointed; exit 0)" },
		{ "start-step", 0, "N", NUM(&o->start_step, 0, LONG_MAX),
		    "with --init and no checkpoint: the weights' step" },
		{ "eval-every", 0, "N", NUM(&r->eval_every, 0, LONG_MAX), "steps between evaluations (100; 0: none)" },
		{ "log", 0, "FILE", STR(&r->log), "JSON Lines log (default DIR/log.jsonl)" },
		{ "threads", 't', "N", NUM(&r->threads, 0, 1024), "threads (default: all CPUs)" },
		{ "quiet", 'q', NULL, FLAG(&r->quiet, 1), "no progress" },
		{ "verbose", 'v', NULL, FLAG(&r->verbose, 1), "progress every step, even when stderr is not a terminal" },
		OPTIONS_END,
	};

	sa_train_opts_default(o);
	*r = (run){ .ckpt_every = 100, .eval_every = 100 };
	if (opts_parse(argc, argv, table, usage_text, opt_call, o) != argc || !o->mode)
		usage_die(usage_text, NULL);
	o->texts = r->texts.v;
	o->n_texts = r->texts.n;
	o->tasks = r->tasks.v;
	o->n_tasks = r->tasks.n;
	if (r->verbose)   /* the later of -q and -v is not tracked: -v wins */
		r->quiet = 0;
	if (o->mode == SA_TRAIN_ADAPTER)
		o->model = need_input(INPUT_MODEL, o->model, usage_text);
	if (!r->out)
		die(SA_EUSAGE, "no output: give -o FILE (or -o - for stdout)");
	if (!strcmp(r->out, "-") && !o->ckpt)
		die(SA_EUSAGE, "-o - needs --ckpt DIR for the checkpoints");
	stdout_not_terminal(r->out, "result");
}

/* dir + name, malloc'd. */
static char *
path_in(const char *dir, const char *name)
{
	char *p;

	if (asprintf(&p, "%s%s", dir, name) < 0)
		die(SA_EINTERNAL, "out of memory");
	return p;
}

static volatile sig_atomic_t stop_signal;

static void
on_signal(int sig)
{
	stop_signal = sig;
}

/* SIGINT and SIGTERM stop the run after a last checkpoint.  So does a
 * hangup (the terminal went away): left to its default it killed the run
 * in the middle of a checkpoint and left the temporary file.  Under nohup
 * it stays ignored. */
static void
stop_on_signals(void)
{
	struct sigaction sa = { 0 }, old;

	sa.sa_handler = on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	if (sigaction(SIGHUP, NULL, &old) == 0 && old.sa_handler != SIG_IGN)
		sigaction(SIGHUP, &sa, NULL);
}

/* The checkpoint, then the result beside it: stdout takes one result, the
 * last, written when the run ends. */
static void
checkpoint(sa_trainer *t, const char *state, const char *out)
{
	TRY(sa_trainer_checkpoint(t, state));
	if (strcmp(out, "-"))
		TRY(sa_trainer_save(t, out));
}

static void
evaluate(sa_trainer *t, int mode, FILE *log, int quiet)
{
	long step = sa_trainer_steps(t);
	sa_train_eval e;

	TRY(sa_trainer_evaluate(t, &e));
	if (!quiet && mode == SA_TRAIN_PRETRAIN)
		warnx_("step %ld: valid loss %.4f, in-context copy accuracy %.3f (first sight %.3f)",
		    step, e.valid_loss, e.copy_acc, e.copy_acc_first);
	else if (!quiet)
		warnx_("step %ld: answer accuracy with delta %.3f, zero-shot %.3f (%d answers)",
		    step, e.sa_acc, e.zero_shot_acc, e.answers);
	sa_train_eval_print(log, mode, step, &e);
	fflush(log);
}

int
main(int argc, char **argv)
{
	sa_train_opts o;
	run r;
	sa_trainer *t;
	char *ckpt, *state, *log;
	FILE *logfp;
	long step, first_step;

	setprogname_(argv[0]);
	parse_args(argc, argv, &o, &r);
	sa_set_threads(r.threads);
	o.ckpt = ckpt = o.ckpt ? path_in(o.ckpt, "") : path_in(r.out, ".ckpt");
	TRY(sa_trainer_new(&t, &o));
	free(r.texts.v);
	free(r.tasks.v);
	if (r.show_data) {
		TRY(sa_trainer_show_data(t, r.show_data, stdout));
		sa_trainer_free(t);
		free(ckpt);
		close_stdout();
		return 0;
	}
	state = path_in(ckpt, "/state.gguf");
	if (r.resume && access(state, F_OK) == 0) {
		TRY(sa_trainer_resume(t, state));
		if (!r.quiet)
			warnx_("resumed from %s at step %ld", state, sa_trainer_steps(t));
	} else if (r.resume && !r.quiet) {
		warnx_("no checkpoint in %s: starting", ckpt);
	}
	log = r.log ? path_in(r.log, "") : path_in(ckpt, "/log.jsonl");
	if (!(logfp = fopen(log, "a")))
		die(SA_ECANTCREAT, "%s: %s", log, strerror(errno));
	stop_on_signals();

	step = first_step = sa_trainer_steps(t);
	if (r.eval_every && step == 0)
		evaluate(t, o.mode, logfp, r.quiet);
	while (step < o.steps && !stop_signal && (!r.run_steps || step - first_step < r.run_steps)) {
		sa_train_stats s;
		double t0 = now(), dt;

		TRY(sa_trainer_step(t, &s));
		step = sa_trainer_steps(t);
		dt = now() - t0;
		sa_train_stats_print(logfp, step, &s, dt);
		fflush(logfp);
		if (r.verbose || (!r.quiet && isatty(2)))
			warnx_("step %ld/%ld loss %.4f lr %.2e |g| %.3f %.0f tok/s",
			    step, o.steps, s.loss, s.lr, s.grad_norm, s.tokens / dt);
		if (r.eval_every && step % r.eval_every == 0)
			evaluate(t, o.mode, logfp, r.quiet);
		if (step % r.ckpt_every == 0 || step == o.steps ||
		    (r.run_steps && step - first_step == r.run_steps))
			checkpoint(t, state, r.out);
	}
	if (stop_signal) {
		checkpoint(t, state, r.out);
		if (!r.quiet)
			warnx_("stopped at step %ld; checkpoint saved in %s", step, ckpt);
		fclose(logfp);
		return 128 + stop_signal;
	}
	if (fclose(logfp) != 0)
		die(SA_EIO, "%s: %s", log, strerror(errno));
	/* the last step's checkpoint wrote a file; resumed at the end of the
	 * schedule, no step ran */
	if (!strcmp(r.out, "-") || step == first_step)
		TRY(sa_trainer_save(t, r.out));
	if (!r.quiet)
		warnx_("done after %ld steps; wrote %s", step, strcmp(r.out, "-") ? r.out : "stdout");
	sa_trainer_free(t);
	free(log);
	free(state);
	free(ckpt);
	close_stdout();
	return 0;
}
