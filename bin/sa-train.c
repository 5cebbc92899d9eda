/*
 * sa-train - pretrain a small base model, or train the StreamAdapter mapping
 * of a frozen base model, on text and task episodes.
 *
 * Options, then the loop over the trainer in libsa (lib/trainer.c): step,
 * log, evaluate, checkpoint.  A signal stops the run after a last checkpoint, from which
 * --resume continues exactly.
 */
#include <signal.h>

#include "tool.h"

static const char usage_text[] =
    "usage: sa-train --pretrain --vocab FILE -o MODEL [options] [--text FILE]... [--task DIR]...\n"
    "       sa-train --adapter [-m MODEL] -o ADAPTER [options] [--task DIR]... [--text FILE]...\n";

static const char help_text[] =
    "Pretrain a base model, or train a StreamAdapter mapping for one (sa-train(1)).\n"
    "\n"
    "Mode and files:\n"
    "  --pretrain            train every weight of a new model (needs --vocab)\n"
    "  --adapter             train an adapter for the frozen model of -m\n"
    "  -m, --model FILE      base model (--adapter; default: $SA_MODEL, else the installed one)\n"
    "  --vocab FILE          tokenizer: a GGUF, or a TSV (id, piece, score, type)\n"
    "  --init FILE           start from these weights (model or adapter GGUF)\n"
    "  --rebind              --init's adapter is of another model of this shape\n"
    "  -o, --output FILE     result, rewritten at every checkpoint (-: stdout at the end)\n"
    "  --text FILE           plain text for language-model episodes (repeatable)\n"
    "  --valid FILE          held-out text for the validation loss\n"
    "  --task DIR            DIR/train.tsv and DIR/dev.tsv, input and label (repeatable)\n"
    "  --pool DIR            words.txt and labels.txt for random-mapping episodes\n"
    "  --map-vocab           random mappings of words drawn from the vocabulary\n"
    "  --rename X            share of class-task episodes with new label words (0)\n"
    "  --eval-pool DIR       words and labels of the copy evaluation (--pool)\n"
    "  --show-data N         print the first N sequences as JSON Lines and exit\n"
    "\n"
    "Model shape (--pretrain):\n"
    "  --dim N (256)  --layers N (6)  --heads N (8)  --kv-heads N (4)\n"
    "  --ff N (4*dim*2/3 rounded to 64)  --ctx N (512)  --rope-base X (10000)\n"
    "  --tied / --untied     output shares the embedding (default tied)\n"
    "  --type T              saved weights: f32, f16 (default), q8_0\n"
    "\n"
    "Adapter (--adapter):\n"
    "  --kind pool|lsq       a new adapter's context mapping (pool)\n"
    "  -r, --rank N (16)  -C, --chunk N (64)    pool\n"
    "  --d-key N (64)  --lambda X (1)  --value-offset N (0)   lsq\n"
    "  --mats LIST|all (attn_q,attn_k,attn_v,attn_output)   adapted matrices\n"
    "  --kmin N (1)  --kmax N (64)   demonstrations per episode (log-uniform)\n"
    "  --queries N (8)               held-out queries per episode\n"
    "  --text-segs N (1)             text contexts of 1 to N segments (uniform)\n"
    "  --gate-lr X (1)               learning-rate factor of the gates (g, b; lsq: w, c)\n"
    "  --gate-bias X (3)             gate bias of a new adapter: a = sigmoid(X)\n"
    "\n"
    "Optimisation:\n"
    "  --steps N (1000)  --batch-tokens N (16384)  --seq N (ctx)  --micro N (8)\n"
    "  --lr X (1e-3)  --min-lr X (lr/10)  --warmup N (100)  --wd X (0.1)\n"
    "  --clip X (1.0)  -s, --seed N (1)\n"
    "  --mix T,K,M[,R]       shares of text, task, mapping and repeated-span episodes\n"
    "\n"
    "Runs:\n"
    "  --ckpt DIR            checkpoint directory (default: OUTPUT.ckpt)\n"
    "  --ckpt-every N (100)  --resume   continue from DIR's checkpoint\n"
    "  --run-steps N         stop after N steps of this run (checkpointed; exit 0)\n"
    "  --start-step N        with --init and no checkpoint: the weights' step\n"
    "  --eval-every N (100)  --log FILE  JSON Lines log (default DIR/log.jsonl)\n"
    "  -t, --threads N  -q, --quiet  -v, --verbose  -h, --help  -V, --version\n";

/* sa-train's own options: what the run does around the trainer. */
typedef struct run {
	const char *out, *log;
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

/* o's texts and tasks are malloc'd arrays, the caller's to free. */
static void
parse_args(int argc, char **argv, sa_train_opts *o, run *r)
{
	enum { O_PRETRAIN = 256, O_ADAPTER, O_VOCAB, O_INIT, O_TEXT, O_VALID, O_TASK,
	    O_POOL, O_DIM, O_LAYERS, O_HEADS, O_KVHEADS, O_FF, O_CTX, O_ROPE, O_TYPE, O_MATS,
	    O_KMIN, O_KMAX, O_QUERIES, O_TEXTSEGS, O_STEPS, O_BATCH, O_SEQ, O_MICRO, O_LR,
	    O_MINLR, O_WARMUP, O_WD, O_CLIP, O_GATELR, O_GATEBIAS, O_MIX, O_CKPT, O_CKPTEVERY,
	    O_EVALEVERY, O_LOG, O_RUNSTEPS, O_STARTSTEP, O_RENAME, O_EVALPOOL, O_SHOWDATA,
	    O_KIND, O_DKEY, O_LAMBDA, O_VOFFSET };
	/* in the order of the help */
	const struct option longopts[] = {
		FLAG("pretrain", O_PRETRAIN), FLAG("adapter", O_ADAPTER), ARG("model", 'm'),
		ARG("vocab", O_VOCAB), ARG("init", O_INIT), SET("rebind", &o->rebind, 1),
		ARG("output", 'o'), ARG("text", O_TEXT), ARG("valid", O_VALID), ARG("task", O_TASK),
		ARG("pool", O_POOL), SET("map-vocab", &o->map_vocab, 1), ARG("rename", O_RENAME),
		ARG("eval-pool", O_EVALPOOL), ARG("show-data", O_SHOWDATA),
		ARG("dim", O_DIM), ARG("layers", O_LAYERS), ARG("heads", O_HEADS),
		ARG("kv-heads", O_KVHEADS), ARG("ff", O_FF), ARG("ctx", O_CTX), ARG("rope-base", O_ROPE),
		SET("tied", &o->tied, 1), SET("untied", &o->tied, 0), ARG("type", O_TYPE),
		ARG("kind", O_KIND), ARG("rank", 'r'), ARG("chunk", 'C'), ARG("d-key", O_DKEY),
		ARG("lambda", O_LAMBDA), ARG("value-offset", O_VOFFSET), ARG("mats", O_MATS),
		ARG("kmin", O_KMIN), ARG("kmax", O_KMAX), ARG("queries", O_QUERIES), ARG("text-segs", O_TEXTSEGS),
		ARG("gate-lr", O_GATELR), ARG("gate-bias", O_GATEBIAS),
		ARG("steps", O_STEPS), ARG("batch-tokens", O_BATCH), ARG("seq", O_SEQ),
		ARG("micro", O_MICRO), ARG("lr", O_LR), ARG("min-lr", O_MINLR), ARG("warmup", O_WARMUP),
		ARG("wd", O_WD), ARG("clip", O_CLIP), ARG("seed", 's'), ARG("mix", O_MIX),
		ARG("ckpt", O_CKPT), ARG("ckpt-every", O_CKPTEVERY), SET("resume", &r->resume, 1),
		ARG("run-steps", O_RUNSTEPS), ARG("start-step", O_STARTSTEP),
		ARG("eval-every", O_EVALEVERY), ARG("log", O_LOG), ARG("threads", 't'),
		FLAG("quiet", 'q'), FLAG("verbose", 'v'), OPTIONS_END,
	};
	const char **texts = calloc(argc, sizeof *texts), **tasks = calloc(argc, sizeof *tasks);
	int ch;

	if (!texts || !tasks)
		die(SA_EINTERNAL, "out of memory");
	sa_train_opts_default(o);
	*r = (run){ .ckpt_every = 100, .eval_every = 100 };
	o->texts = texts;
	o->tasks = tasks;
	while ((ch = getopt_long(argc, argv, "m:o:r:C:s:t:qvhV", longopts, NULL)) != -1) {
		switch (ch) {
		case 0: break;   /* a flag SET sets */
		case O_PRETRAIN: o->mode |= SA_TRAIN_PRETRAIN; break;
		case O_ADAPTER: o->mode |= SA_TRAIN_ADAPTER; break;
		case 'm': o->model = optarg; break;
		case O_VOCAB: o->vocab = optarg; break;
		case O_INIT: o->init = optarg; break;
		case 'o': r->out = optarg; break;
		case O_TEXT: texts[o->n_texts++] = optarg; break;
		case O_VALID: o->valid = optarg; break;
		case O_TASK: tasks[o->n_tasks++] = optarg; break;
		case O_POOL: o->pool = optarg; break;
		case O_RENAME: o->rename = parse_double("--rename", optarg, 0, 1); break;
		case O_EVALPOOL: o->eval_pool = optarg; break;
		case O_SHOWDATA: r->show_data = parse_long("--show-data", optarg, 1, LONG_MAX); break;
		case O_DIM: o->dim = parse_long("--dim", optarg, 8, 16384); break;
		case O_LAYERS: o->layers = parse_long("--layers", optarg, 1, 256); break;
		case O_HEADS: o->heads = parse_long("--heads", optarg, 1, 1024); break;
		case O_KVHEADS: o->kv_heads = parse_long("--kv-heads", optarg, 1, 1024); break;
		case O_FF: o->ff = parse_long("--ff", optarg, 1, 1 << 20); break;
		case O_CTX: o->ctx = parse_long("--ctx", optarg, 8, 1 << 16); break;
		case O_ROPE: o->rope_base = parse_double("--rope-base", optarg, 1, 1e9); break;
		case O_TYPE:
			if (!strcmp(optarg, "f32")) o->save_type = SA_TYPE_F32;
			else if (!strcmp(optarg, "f16")) o->save_type = SA_TYPE_F16;
			else if (!strcmp(optarg, "q8_0")) o->save_type = SA_TYPE_Q8_0;
			else die(SA_EUSAGE, "--type: want f32, f16 or q8_0");
			break;
		case O_KIND: o->mapping = parse_kind(optarg); break;
		case O_DKEY: o->d_key = parse_long("--d-key", optarg, 1, 4096); break;
		case O_LAMBDA: o->lambda = parse_double("--lambda", optarg, 1e-12, 1e12); break;
		case O_VOFFSET: o->value_offset = (int)parse_long("--value-offset", optarg, 0, 1); break;
		case 'r': o->rank = parse_long("--rank", optarg, 1, 4096); break;
		case 'C': o->chunk = parse_long("--chunk", optarg, 1, 1 << 16); break;
		case O_MATS: o->mats = parse_mats(optarg); break;
		case O_KMIN: o->kmin = parse_long("--kmin", optarg, 1, 1 << 20); break;
		case O_KMAX: o->kmax = parse_long("--kmax", optarg, 1, 1 << 20); break;
		case O_TEXTSEGS: o->text_segs = parse_long("--text-segs", optarg, 1, 16); break;
		case O_QUERIES: o->queries = parse_long("--queries", optarg, 1, 4096); break;
		case O_STEPS: o->steps = parse_long("--steps", optarg, 1, LONG_MAX); break;
		case O_BATCH: o->batch_tokens = parse_long("--batch-tokens", optarg, 1, LONG_MAX); break;
		case O_SEQ: o->seq = parse_long("--seq", optarg, 2, 1 << 16); break;
		case O_MICRO: o->micro = parse_long("--micro", optarg, 1, 4096); break;
		case O_LR: o->lr = parse_double("--lr", optarg, 0, 10); break;
		case O_MINLR: o->min_lr = parse_double("--min-lr", optarg, 0, 10); break;
		case O_WARMUP: o->warmup = parse_long("--warmup", optarg, 0, LONG_MAX); break;
		case O_WD: o->wd = parse_double("--wd", optarg, 0, 10); break;
		case O_GATELR: o->gate_lr = parse_double("--gate-lr", optarg, 0, 1000); break;
		case O_GATEBIAS: o->gate_bias = parse_double("--gate-bias", optarg, -20, 20); break;
		case O_CLIP: o->clip = parse_double("--clip", optarg, 0, 1e9); break;
		case 's': o->seed = (uint64_t)parse_long("--seed", optarg, 0, LONG_MAX); break;
		case O_MIX: parse_mix(o->mix, optarg); break;
		case O_CKPT: o->ckpt = optarg; break;
		case O_CKPTEVERY: r->ckpt_every = parse_long("--ckpt-every", optarg, 1, LONG_MAX); break;
		case O_RUNSTEPS: r->run_steps = parse_long("--run-steps", optarg, 1, LONG_MAX); break;
		case O_STARTSTEP: o->start_step = parse_long("--start-step", optarg, 0, LONG_MAX); break;
		case O_EVALEVERY: r->eval_every = parse_long("--eval-every", optarg, 0, LONG_MAX); break;
		case O_LOG: r->log = optarg; break;
		case 't': r->threads = parse_long("--threads", optarg, 0, 1024); break;
		case 'q': r->quiet = 1; break;
		case 'v': r->verbose = 1; break;
		case 'h': fputs(usage_text, stdout); fputs(help_text, stdout); close_stdout(); exit(0);
		case 'V': puts("sa-train " SA_VERSION); close_stdout(); exit(0);
		default: usage_die(usage_text, NULL);
		}
	}
	if (optind != argc || !o->mode)
		usage_die(usage_text, NULL);
	if (r->verbose)   /* the later of -q and -v is not tracked: -v wins */
		r->quiet = 0;
	if (o->mode == SA_TRAIN_ADAPTER)
		o->model = need_model(o->model, usage_text);
	if (!r->out)
		die(SA_EUSAGE, "no output: give -o FILE (or -o - for stdout)");
	if (!strcmp(r->out, "-") && !o->ckpt)
		die(SA_EUSAGE, "-o - needs --ckpt DIR for the checkpoints");
	if (!strcmp(r->out, "-") && isatty(1))
		die(SA_EUSAGE, "refusing to write a binary result to a terminal (use -o FILE)");
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
	free((void *)o.texts);
	free((void *)o.tasks);
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
	if (!strcmp(r.out, "-"))
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
