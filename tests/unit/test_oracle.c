/*
 * test_oracle - libsa's forward pass against llama.cpp's.
 *
 *   test_oracle [-v] [ref...]
 *
 * Each reference in tests/data/oracle (made by scripts/oracle/make-refs.sh,
 * which runs llama.cpp) names the mkmodel arguments of a model, a list of
 * token ids (or a text and llama.cpp's tokenization of it), llama.cpp's
 * logits at the listed positions and its 64-token greedy continuation.
 * The model is made again here (mkmodel is deterministic), run through
 * sa_forward, and compared:
 *   - the tokenization of the text, if any, must be identical;
 *   - at every listed position, max_j |libsa_j - ref_j| / max_j |ref_j| must
 *     stay within the tolerance of the model's weight type (tol_of below);
 *   - the greedy continuation (argmax, lowest id on ties), computed one token
 *     at a time, must be identical for every type.
 * The first mismatch of each reference is printed; the exit status is 1 if
 * any check failed.  With no ref operand every *.ref in tests/data/oracle is
 * checked.  -v prints the measured error of each reference.
 *
 * Environment: SA_MKMODEL (default tests/helpers/mkmodel), SA_ORACLE_DIR
 * (default tests/data/oracle), TMPDIR.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sa.h"
#include "t.h"

/*
 * Tolerance on the relative logit error, by the type of the weight matrices.
 * F32 must agree to float precision (measured: at most 1.8e-6).  With other
 * types both programs round the input of each matrix product to the weight
 * type (F16, BF16, Q8_0 blocks), but from F32 values that differ in the
 * last bits (another order of summation), so now and then an element lands
 * on the other side of a rounding boundary, and random untrained models
 * amplify that from layer to layer.  Measured over 24 random models a type
 * (scripts/oracle/make-refs.sh -s 4): at most 7.5e-4 (F16), 5.9e-3 (BF16),
 * 2.2e-2 (Q8_0); llama.cpp's native and portable builds differ from each
 * other by as much.  The bounds below leave a margin of 2 to 4 over that.
 * The block types of llama-quantize's presets round inputs to Q8_0 (Q4_0 ..
 * Q5_1) or Q8_K blocks (the K-quants) as llama.cpp does; measured on one
 * model each: 1.6e-2 (Q4_K; llama.cpp repacks those rows and rounds their
 * inputs with other code), 8e-3 to 1.5e-2 (Q4_0 .. Q5_1), below 2e-6 for
 * the other K-quants.  They get the bound of Q8_0.
 * The bugs this test is for (RoPE variant, eps, biases, GQA sharing, tied
 * output) move logits by far more; the F32 models see the subtle ones.
 */
static double
tol_of(int type)
{
	switch (type) {
	case SA_TYPE_F32:  return 1e-4;
	case SA_TYPE_F16:  return 3e-3;
	case SA_TYPE_BF16: return 2e-2;
	case SA_TYPE_Q8_0: case SA_TYPE_Q4_0: case SA_TYPE_Q4_1: case SA_TYPE_Q5_0:
	case SA_TYPE_Q5_1: case SA_TYPE_Q2_K: case SA_TYPE_Q3_K: case SA_TYPE_Q4_K:
	case SA_TYPE_Q5_K: case SA_TYPE_Q6_K:
		return 5e-2;
	}
	return 0;
}

static int verbose;

typedef struct ref {
	const char *path;
	char *buf;            /* the file; strings below point into it */
	char **mkargs;        /* mkmodel arguments, NULL-terminated */
	char *text;           /* NULL, or the text that was tokenized */
	int *toks, ntoks;
	int nvocab;
	int nlog, *logpos;    /* positions whose logits are given */
	float *logits;        /* [nlog][nvocab] */
	int nstep, *steppos;  /* greedy steps whose logits are given */
	float *steplogits;    /* [nstep][nvocab] */
	int ngen, *greedy;
	float *gap;           /* llama.cpp's top-1 minus top-2 at each greedy step */
} ref;

static void
free_ref(ref *r)
{
	free(r->buf);
	free(r->mkargs);
	free(r->toks);
	free(r->logpos);
	free(r->logits);
	free(r->steppos);
	free(r->steplogits);
	free(r->greedy);
	free(r->gap);
	memset(r, 0, sizeof *r);
}

/* Next whitespace-separated word of *p on the current line, or NULL. */
static char *
word(char **p)
{
	char *s = *p, *w;

	while (*s == ' ' || *s == '\t')
		s++;
	if (!*s || *s == '\n') {
		*p = s;
		return NULL;
	}
	w = s;
	while (*s && *s != ' ' && *s != '\t' && *s != '\n')
		s++;
	if (*s == ' ' || *s == '\t')
		*s++ = '\0';
	*p = s;
	return w;
}

static int
read_int(const ref *r, int line, char **p, long lo, long hi, int *v)
{
	char *w = word(p), *end;
	long x;

	if (!w)
		return sa_fail(SA_EDATA, "%s:%d: missing number", r->path, line);
	x = strtol(w, &end, 10);
	if (end == w || (*end && *end != '\n') || x < lo || x > hi)
		return sa_fail(SA_EDATA, "%s:%d: bad number '%.20s'", r->path, line, w);
	*v = (int)x;
	return SA_OK;
}

static int
read_ints(const ref *r, int line, char **p, long hi, int **v, int *n)
{
	int rc, i;

	if ((rc = read_int(r, line, p, 0, 1 << 20, n)) != SA_OK)
		return rc;
	free(*v);
	if (!(*v = sa_malloc((size_t)*n * sizeof **v)))
		return SA_EINTERNAL;
	for (i = 0; i < *n; i++)
		if ((rc = read_int(r, line, p, 0, hi, &(*v)[i])) != SA_OK)
			return rc;
	return SA_OK;
}

static int
read_floats(const ref *r, int line, char **p, float *v, int n)
{
	char *w, *end;
	int i;

	for (i = 0; i < n; i++) {
		if (!(w = word(p)))
			return sa_fail(SA_EDATA, "%s:%d: %d numbers, expected %d", r->path, line, i, n);
		v[i] = strtof(w, &end);
		if (end == w || (*end && *end != '\n'))
			return sa_fail(SA_EDATA, "%s:%d: bad number '%.20s'", r->path, line, w);
	}
	return SA_OK;
}

static int
load_ref(ref *r, const char *path)
{
	size_t len;
	char *p, *next, *key;
	int rc, line = 0, nargs = 0, ilog = 0, istep = 0, junk;

	memset(r, 0, sizeof *r);
	r->path = path;
	if ((rc = sa_file_read(path, &r->buf, &len)) != SA_OK)
		return rc;
	for (p = r->buf; *p; p = next) {
		line++;
		next = strchr(p, '\n');
		next = next ? next + 1 : p + strlen(p);
		if (next > p && next[-1] == '\n')
			next[-1] = '\0';
		if (*p == '#' || *p == '\0')
			continue;
		if (!(key = word(&p)))
			continue;
		if (!strcmp(key, "mkmodel")) {
			if (!(r->mkargs = sa_calloc(strlen(p) / 2 + 3, sizeof *r->mkargs)))
				return SA_EINTERNAL;
			r->mkargs[nargs++] = key;
			while ((r->mkargs[nargs] = word(&p)))
				nargs++;
		} else if (!strcmp(key, "text")) {
			r->text = p;   /* the rest of the line, after one space */
		} else if (!strcmp(key, "tokens")) {
			if ((rc = read_ints(r, line, &p, 1 << 30, &r->toks, &r->ntoks)) != SA_OK)
				return rc;
		} else if (!strcmp(key, "vocab")) {
			if ((rc = read_int(r, line, &p, 1, 1 << 24, &r->nvocab)) != SA_OK)
				return rc;
		} else if (!strcmp(key, "logits")) {
			if ((rc = read_int(r, line, &p, 0, 1 << 20, &r->nlog)) != SA_OK)
				return rc;
			if (!r->nvocab || !r->ntoks)
				return sa_fail(SA_EDATA, "%s:%d: logits before tokens and vocab", path, line);
			r->logpos = sa_calloc(r->nlog, sizeof *r->logpos);
			r->logits = sa_calloc((size_t)r->nlog * r->nvocab, sizeof *r->logits);
			if (!r->logpos || !r->logits)
				return SA_EINTERNAL;
		} else if (!strcmp(key, "pos")) {
			if (ilog >= r->nlog)
				return sa_fail(SA_EDATA, "%s:%d: more positions than announced", path, line);
			if ((rc = read_int(r, line, &p, 0, r->ntoks - 1, &r->logpos[ilog])) != SA_OK)
				return rc;
			rc = read_floats(r, line, &p, r->logits + (size_t)ilog * r->nvocab, r->nvocab);
			if (rc != SA_OK)
				return rc;
			ilog++;
		} else if (!strcmp(key, "steps")) {
			if ((rc = read_int(r, line, &p, 0, 1 << 20, &r->nstep)) != SA_OK)
				return rc;
			if (!r->nvocab)
				return sa_fail(SA_EDATA, "%s:%d: steps before vocab", path, line);
			r->steppos = sa_calloc(r->nstep, sizeof *r->steppos);
			r->steplogits = sa_calloc((size_t)r->nstep * r->nvocab, sizeof *r->steplogits);
			if (!r->steppos || !r->steplogits)
				return SA_EINTERNAL;
		} else if (!strcmp(key, "step")) {
			if (istep >= r->nstep)
				return sa_fail(SA_EDATA, "%s:%d: more steps than announced", path, line);
			if ((rc = read_int(r, line, &p, 1, 1 << 20, &r->steppos[istep])) != SA_OK)
				return rc;
			rc = read_floats(r, line, &p, r->steplogits + (size_t)istep * r->nvocab, r->nvocab);
			if (rc != SA_OK)
				return rc;
			istep++;
		} else if (!strcmp(key, "greedy")) {
			if ((rc = read_ints(r, line, &p, 1 << 30, &r->greedy, &r->ngen)) != SA_OK)
				return rc;
		} else if (!strcmp(key, "gap")) {
			if ((rc = read_int(r, line, &p, 0, 1 << 20, &junk)) != SA_OK)
				return rc;
			if (junk != r->ngen)
				return sa_fail(SA_EDATA, "%s:%d: gap count differs from greedy", path, line);
			if (!(r->gap = sa_calloc(junk, sizeof *r->gap)))
				return SA_EINTERNAL;
			if ((rc = read_floats(r, line, &p, r->gap, junk)) != SA_OK)
				return rc;
		} else {
			return sa_fail(SA_EDATA, "%s:%d: unknown record '%s'", path, line, key);
		}
	}
	if (!r->mkargs || !r->toks || !r->nvocab || !r->greedy || ilog != r->nlog ||
	    istep != r->nstep)
		return sa_fail(SA_EDATA, "%s: incomplete reference", path);
	return SA_OK;
}

/* Run mkmodel with the reference's arguments plus -o out. */
static int
make_model(const ref *r, const char *mkmodel, const char *out)
{
	int n, status;
	char **argv;
	pid_t pid;

	for (n = 0; r->mkargs[n]; n++)
		;
	if (!(argv = sa_calloc(n + 3, sizeof *argv)))
		return SA_EINTERNAL;
	argv[0] = (char *)mkmodel;
	memcpy(argv + 1, r->mkargs + 1, (n - 1) * sizeof *argv);
	argv[n] = "-o";
	argv[n + 1] = (char *)out;
	fflush(stdout);
	fflush(stderr);
	if ((pid = fork()) < 0) {
		free(argv);
		return sa_fail(SA_EINTERNAL, "fork: %s", strerror(errno));
	}
	if (pid == 0) {
		execv(mkmodel, argv);
		fprintf(stderr, "%s: %s\n", mkmodel, strerror(errno));
		_exit(127);
	}
	free(argv);
	if (waitpid(pid, &status, 0) < 0)
		return sa_fail(SA_EINTERNAL, "waitpid: %s", strerror(errno));
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		return sa_fail(SA_EINTERNAL, "%s: mkmodel failed (status %d)", r->path, status);
	return SA_OK;
}

static int
argmax(const float *x, int n)
{
	int best = 0, i;

	for (i = 1; i < n; i++)
		if (x[i] > x[best])
			best = i;
	return best;
}

static const char *
base(const char *path)
{
	const char *s = strrchr(path, '/');
	return s ? s + 1 : path;
}

/* What check_ref measured, for -v. */
typedef struct measure {
	double worst;         /* largest relative error of any row */
	const char *where;    /* "position" or "step" */
	int at;               /* its position or step */
	int failed;           /* a check has failed: print only the first failure */
} measure;

/*
 * Compare one row of logits: max_j |got_j - want_j| / max_j |want_j| must be
 * within tol.  what/idx name the row in messages ("position 3", "step 21").
 */
static void
check_row(const ref *r, int type, double tol, const char *what, int idx,
    const float *want, const float *got, measure *ms)
{
	double scale = 0, err = 0, rel;
	int at = 0, j;

	for (j = 0; j < r->nvocab; j++)
		if (fabs(want[j]) > scale)
			scale = fabs(want[j]);
	for (j = 0; j < r->nvocab; j++) {
		double d = fabs((double)got[j] - want[j]);
		if (!(d <= err)) {
			err = d;
			at = j;
		}
	}
	rel = scale > 0 ? err / scale : err;
	if (verbose > 1)
		printf("%s: %s %d: max rel err %.3g at token %d\n", base(r->path), what, idx, rel, at);
	if (!(rel <= ms->worst) || !ms->where) {
		ms->worst = rel;
		ms->where = what;
		ms->at = idx;
	}
	t_checked++;
	if (!(rel <= tol)) {
		t_failed++;
		if (!ms->failed)
			fprintf(stderr, "FAIL %s (%s): %s %d: logits differ by %.3g relative "
			    "(tolerance %g): token %d: libsa %.9g, llama.cpp %.9g (max |ref| %.6g)\n",
			    base(r->path), sa_type_name(type), what, idx, rel, tol, at,
			    got[at], want[at], scale);
		ms->failed = 1;
	}
}

/* Check one reference; 0 if everything agrees.  Failures are also counted in t.h's totals. */
static int
check_ref(const char *path, const char *mkmodel, const char *tmpdir)
{
	ref r;
	sa_model *m = NULL;
	sa_kvcache *s = NULL;
	float *logits = NULL, *last;
	char model_path[4200];
	int rc, i, type = -1, step = 0, diverged = -1;
	double tol = 0;
	measure ms = { 0, NULL, -1, 0 };

	t_checked++;
	if ((rc = load_ref(&r, path)) != SA_OK) {
		fprintf(stderr, "FAIL %s\n", sa_error());
		t_failed++;
		free_ref(&r);
		return 1;
	}
	snprintf(model_path, sizeof model_path, "%s/%s.gguf", tmpdir, base(path));
	if ((rc = make_model(&r, mkmodel, model_path)) != SA_OK ||
	    (rc = sa_model_load(&m, model_path)) != SA_OK ||
	    (rc = sa_kvcache_new(&s, m, r.ntoks + r.ngen)) != SA_OK) {
		fprintf(stderr, "FAIL %s: %s\n", base(path), sa_error());
		t_failed++;
		ms.failed = 1;
		goto out;
	}
	type = m->layers[0].w[SA_MAT_Q].type;
	tol = tol_of(type);

	t_checked++;
	if (m->cfg.n_vocab != r.nvocab) {
		fprintf(stderr, "FAIL %s: libsa sees a vocab of %d, llama.cpp %d\n",
		    base(path), m->cfg.n_vocab, r.nvocab);
		t_failed++;
		ms.failed = 1;
		goto out;
	}

	if (r.text) {
		int *toks = NULL, n = 0;

		t_checked++;
		if ((rc = sa_tokenize(m->vocab, r.text, strlen(r.text), 1, &toks, &n)) != SA_OK) {
			fprintf(stderr, "FAIL %s: sa_tokenize: %s\n", base(path), sa_error());
			t_failed++;
			ms.failed = 1;
			goto out;
		}
		for (i = 0; i < n && i < r.ntoks && toks[i] == r.toks[i]; i++)
			;
		if (i < n || i < r.ntoks) {
			fprintf(stderr, "FAIL %s: tokenization differs at token %d: libsa %d, llama.cpp %d "
			    "(libsa %d tokens, llama.cpp %d)\n", base(path), i,
			    i < n ? toks[i] : -1, i < r.ntoks ? r.toks[i] : -1, n, r.ntoks);
			t_failed++;
			ms.failed = 1;
		}
		free(toks);
	}

	/* Prefill: every position in one call, as llama.cpp's single batch. */
	t_checked++;
	if (!(logits = sa_malloc((size_t)r.ntoks * r.nvocab * sizeof *logits)) ||
	    (rc = sa_forward(s, r.toks, r.ntoks, logits, 1)) != SA_OK) {
		fprintf(stderr, "FAIL %s: sa_forward: %s\n", base(path), sa_error());
		t_failed++;
		ms.failed = 1;
		goto out;
	}
	for (i = 0; i < r.nlog; i++)
		check_row(&r, type, tol, "position", r.logpos[i], r.logits + (size_t)i * r.nvocab,
		    logits + (size_t)r.logpos[i] * r.nvocab, &ms);

	/* Greedy continuation, one token at a time (the matrix-vector path). */
	last = logits + (size_t)(r.ntoks - 1) * r.nvocab;
	for (i = 0; i < r.ngen; i++) {
		int tok = argmax(last, r.nvocab);

		if (step < r.nstep && r.steppos[step] == i) {
			check_row(&r, type, tol, "step", i, r.steplogits + (size_t)step * r.nvocab,
			    last, &ms);
			step++;
		}
		t_checked++;
		if (tok != r.greedy[i]) {
			t_failed++;
			fprintf(stderr, "FAIL %s (%s): greedy token %d (position %d) differs: libsa %d "
			    "(logit %.9g), llama.cpp %d (logit %.9g in libsa; llama.cpp's top-2 gap %.3g)\n",
			    base(path), sa_type_name(type), i, r.ntoks + i, tok, last[tok],
			    r.greedy[i], r.greedy[i] >= 0 && r.greedy[i] < r.nvocab ? last[r.greedy[i]] : NAN,
			    r.gap ? r.gap[i] : NAN);
			ms.failed = 1;
			diverged = i;
			break;
		}
		if (i + 1 == r.ngen)
			break;
		if ((rc = sa_forward(s, &tok, 1, last, 0)) != SA_OK) {
			fprintf(stderr, "FAIL %s: sa_forward at position %d: %s\n",
			    base(path), r.ntoks + i, sa_error());
			t_failed++;
			ms.failed = 1;
			diverged = i;
			break;
		}
	}
	if (verbose) {
		float mingap = INFINITY;
		for (i = 0; r.gap && i < r.ngen; i++)
			if (r.gap[i] < mingap)
				mingap = r.gap[i];
		printf("%-32s %-5s max rel err %.3g (%s %d; tolerance %g), greedy %s, "
		    "smallest gap %.3g\n", base(path), sa_type_name(type), ms.worst,
		    ms.where ? ms.where : "none", ms.at, tol,
		    diverged < 0 ? "identical" : "DIVERGED", mingap);
	}
out:
	free(logits);
	sa_kvcache_free(s);
	sa_model_free(m);
	unlink(model_path);
	free_ref(&r);
	return ms.failed;
}

static int
by_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int
main(int argc, char **argv)
{
	const char *mkmodel = getenv("SA_MKMODEL");
	const char *dir = getenv("SA_ORACLE_DIR");
	const char *tmp = getenv("TMPDIR");
	char tmpdir[4096], **refs = NULL;
	int nrefs = 0, i, c, nfailed = 0;

	while ((c = getopt(argc, argv, "v")) != -1) {
		if (c != 'v') {
			fprintf(stderr, "usage: test_oracle [-v] [ref...]\n");
			return 64;
		}
		verbose++;
	}
	argc -= optind;
	argv += optind;

	/* Run from the top of the tree or from tests/unit. */
	if (access("tests/data/oracle", F_OK) != 0 && access("../../tests/data/oracle", F_OK) == 0)
		if (chdir("../..") != 0)
			return 70;
	if (!mkmodel)
		mkmodel = "tests/helpers/mkmodel";
	if (!dir)
		dir = "tests/data/oracle";
	snprintf(tmpdir, sizeof tmpdir, "%s/oracle.XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(tmpdir)) {
		fprintf(stderr, "test_oracle: %s: %s\n", tmpdir, strerror(errno));
		return 70;
	}

	if (argc > 0) {
		refs = argv;
		nrefs = argc;
	} else {
		DIR *d = opendir(dir);
		struct dirent *e;
		size_t cap = 0;

		if (!d) {
			fprintf(stderr, "test_oracle: %s: %s\n", dir, strerror(errno));
			return 66;
		}
		while ((e = readdir(d))) {
			size_t n = strlen(e->d_name);
			if (n < 5 || strcmp(e->d_name + n - 4, ".ref"))
				continue;
			if ((size_t)nrefs == cap) {
				cap = cap ? 2 * cap : 16;
				refs = realloc(refs, cap * sizeof *refs);
			}
			if (!refs || asprintf(&refs[nrefs], "%s/%s", dir, e->d_name) < 0)
				return 70;
			nrefs++;
		}
		closedir(d);
		qsort(refs, nrefs, sizeof *refs, by_name);
	}
	for (i = 0; i < nrefs; i++)
		nfailed += check_ref(refs[i], mkmodel, tmpdir);
	rmdir(tmpdir);
	if (nfailed)
		fprintf(stderr, "%d of %d references disagree with libsa\n", nfailed, nrefs);
	return t_done();
}
