/*
 * test_trainer.c - the trainer of libsa through its API, as a program
 * other than sa-train would use it: a run stopped at a checkpoint and
 * resumed in another trainer ends with the bytes of an uninterrupted one;
 * the schedule warms up; bad options and inputs come back as status codes
 * with their messages (the library never exits); a checkpoint of another
 * run is refused and leaves the trainer as it was; an adapter trains for
 * the model a pretraining run wrote.
 * usage: test_trainer VOCAB.gguf TEXT POOLDIR TMPDIR
 */
#include <string.h>

#include "sa.h"
#include "t.h"

static const char *text[1];

static sa_train_opts
tiny(const char *vocab, const char *pool, const char *ckpt)
{
	sa_train_opts o = {
		.mode = SA_TRAIN_PRETRAIN, .vocab = vocab, .ckpt = ckpt, .texts = text,
		.n_texts = 1, .pool = pool, .dim = 16, .layers = 1, .heads = 2, .kv_heads = 1,
		.ctx = 16, .tied = 1, .save_type = SA_TYPE_F32, .rope_base = 10000, .chunk = 8,
		.kmin = 1, .kmax = 8, .queries = 2, .text_segs = 1,
		.mats = 1u << SA_MAT_Q | 1u << SA_MAT_V, .steps = 6, .batch_tokens = 64,
		.micro = 2, .lr = 1e-2, .min_lr = -1, .warmup = 2, .wd = 0.1, .clip = 1,
		.gate_lr = 1, .gate_bias = NAN, .seed = 3,
	};
	return o;
}

/* The bytes of a file, malloc'd, or NULL. */
static char *
slurp(const char *path, size_t *n)
{
	char *data;

	return sa_file_read(path, &data, n) == SA_OK ? data : NULL;
}

static int
same_file(const char *a, const char *b)
{
	size_t na, nb;
	char *da = slurp(a, &na), *db = slurp(b, &nb);
	int same = da && db && na == nb && memcmp(da, db, na) == 0;

	free(da);
	free(db);
	return same;
}

int
main(int argc, char **argv)
{
	char whole[4096], part[4096], ckpt[4096], other[4096], dir[4096];
	sa_train_opts o;
	sa_train_stats s;
	sa_train_eval e;
	sa_trainer *t;

	if (argc != 5) {
		fprintf(stderr, "usage: test_trainer VOCAB.gguf TEXT POOLDIR TMPDIR\n");
		return 2;
	}
	sa_set_threads(1);
	text[0] = argv[2];
	snprintf(dir, sizeof dir, "%s/ck", argv[4]);
	snprintf(other, sizeof other, "%s/ck/adapter-state.gguf", argv[4]);
	snprintf(ckpt, sizeof ckpt, "%s/ck/state.gguf", argv[4]);
	snprintf(whole, sizeof whole, "%s/whole.gguf", argv[4]);
	snprintf(part, sizeof part, "%s/part.gguf", argv[4]);

	/* six steps in one go */
	o = tiny(argv[1], argv[3], dir);
	CHECK_OK(sa_trainer_new(&t, &o));
	CHECK(sa_trainer_steps(t) == 0);
	CHECK_OK(sa_trainer_evaluate(t, &e));
	/* windows of 16 tokens show each label once: first sights only */
	CHECK(e.valid_loss > 0 && e.copy_acc_first >= 0 && e.copy_acc_first <= 1 && isnan(e.sa_acc));
	for (int i = 0; i < 6; i++) {
		CHECK_OK(sa_trainer_step(t, &s));
		CHECK(s.tokens == 64 && s.loss > 0 && s.grad_norm > 0);
		if (i == 0)   /* warmup: a half of the rate at the first of two steps */
			CHECK_NEAR(s.lr, 5e-3, 1e-9);
	}
	CHECK(sa_trainer_steps(t) == 6);
	CHECK_OK(sa_trainer_save(t, whole));
	sa_trainer_free(t);

	/* four, a checkpoint, and two more in another trainer */
	CHECK_OK(sa_trainer_new(&t, &o));
	for (int i = 0; i < 4; i++)
		CHECK_OK(sa_trainer_step(t, &s));
	CHECK_OK(sa_trainer_checkpoint(t, ckpt));
	sa_trainer_free(t);
	CHECK_OK(sa_trainer_new(&t, &o));
	CHECK_OK(sa_trainer_resume(t, ckpt));
	CHECK(sa_trainer_steps(t) == 4);
	while (sa_trainer_steps(t) < 6)
		CHECK_OK(sa_trainer_step(t, &s));
	CHECK_OK(sa_trainer_save(t, part));
	CHECK(same_file(whole, part));

	/* an adapter for the model just made */
	sa_train_opts ao = tiny(NULL, argv[3], dir);
	sa_trainer *a;
	ao.mode = SA_TRAIN_ADAPTER;
	ao.model = whole;
	ao.texts = NULL;
	ao.n_texts = 0;
	ao.rank = 2;
	CHECK_OK(sa_trainer_new(&a, &ao));
	CHECK_OK(sa_trainer_evaluate(a, &e));
	CHECK(e.answers > 0 && e.sa_acc >= 0 && e.sa_acc <= 1 && isnan(e.valid_loss));
	CHECK_OK(sa_trainer_step(a, &s));
	/* its episodes shown, one JSON object a line */
	static const char head[] = "{\"kind\":\"map\",\"context\":[\"";
	FILE *fp = tmpfile();
	char line[8192];
	int n_ep = 0;
	CHECK(fp != NULL);
	CHECK_OK(sa_trainer_show_data(a, 2, fp));
	rewind(fp);
	while (fgets(line, sizeof line, fp))
		n_ep += strncmp(line, head, strlen(head)) == 0 &&
		    strstr(line, "],\"queries\":[[\"") != NULL;
	CHECK(n_ep == 2);
	fclose(fp);
	CHECK_OK(sa_trainer_checkpoint(a, other));
	sa_trainer_free(a);

	/* a checkpoint of another run is refused; the trainer stays */
	CHECK(sa_trainer_resume(t, other) == SA_EDATA);
	CHECK(strstr(sa_error(), "checkpoint of another run") != NULL);
	CHECK(sa_trainer_steps(t) == 6);
	CHECK_OK(sa_trainer_save(t, part));
	CHECK(same_file(whole, part));
	sa_trainer_free(t);

	/* errors are codes and messages, never an exit */
	o = tiny(argv[1], argv[3], dir);
	o.mix[3] = 1;
	o.mode = SA_TRAIN_ADAPTER;
	CHECK(sa_trainer_new(&t, &o) == SA_EUSAGE && !t);
	CHECK(strstr(sa_error(), "repeated-span episodes are for --pretrain") != NULL);
	o = tiny(argv[1], argv[3], dir);
	const char *tasks[] = { "/nonexistent/task" };
	o.tasks = tasks;
	o.n_tasks = 1;
	CHECK(sa_trainer_new(&t, &o) == SA_ENOINPUT);
	CHECK(strstr(sa_error(), "/nonexistent/task") != NULL);
	o = tiny(argv[1], argv[3], dir);
	o.seq = 17;
	CHECK(sa_trainer_new(&t, &o) == SA_EUSAGE);
	CHECK(strstr(sa_error(), "exceeds the model's context of 16") != NULL);
	return t_done();
}
