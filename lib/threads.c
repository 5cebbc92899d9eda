/*
 * threads.c - a small persistent pool of worker threads for the kernels.
 *
 * A job is cut into chunks that the caller and the workers take from one
 * atomic counter, so a worker the kernel has not scheduled yet never holds
 * the caller up: whoever is running takes the next chunk.  The counter
 * carries the job's number in its high half, so a worker that wakes late
 * cannot take a chunk of a later job by mistake.
 *
 * A decoded token runs a few hundred short jobs, so waking sleeping threads
 * through the kernel every time would cost more than the jobs: idle workers
 * spin for a while (yielding the CPU after a moment, for machines with more
 * runnable threads than cores), then sleep on a condition variable.
 *
 * OpenBLAS runs on one thread, inside the pool's chunks (sa_sgemm): its own
 * threads would cut a product where their number says, and the sums would
 * round differently with every thread count.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <cblas.h>

#include "sa.h"
#include "kernels_impl.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#else
#define cpu_relax() ((void)0)
#endif

/* Waiting: SPIN_PAUSE rounds of pause (tens of microseconds), then
 * SPIN_YIELD rounds of sched_yield, then sleep. */
#define SPIN_PAUSE 2000
#define SPIN_YIELD 200

static struct pool {
	int nth;                /* threads including the caller */
	pthread_t *tid;         /* [nth - 1] workers */
	pthread_mutex_t mu;
	pthread_cond_t wake;    /* new job or stop */
	pthread_cond_t done;    /* last chunk finished */
	atomic_uint gen;        /* number of the current job */
	atomic_uint_fast64_t next;  /* gen << 32 | next chunk to take */
	atomic_int left;        /* chunks not finished yet */
	atomic_int sleeping;    /* the caller sleeps on done */
	atomic_int stop;
	atomic_int nchunks;
	sa_chunk_fn fn;
	void *arg;
} pool = {
	.mu = PTHREAD_MUTEX_INITIALIZER,
	.wake = PTHREAD_COND_INITIALIZER,
	.done = PTHREAD_COND_INITIALIZER,
};

static int threads_wanted;   /* 0: not set yet */
/* One job at a time: callers on several threads take turns. */
static pthread_mutex_t run_mu = PTHREAD_MUTEX_INITIALIZER;

/*
 * OpenBLAS picks its kernels from the CPU's vendor, family and model, and
 * falls back to slow ones on cores newer than its tables: 0.3.21 (Debian
 * 12) runs its Prescott (SSE3) kernels on Sapphire Rapids and later, 4
 * times slower.  Unless the user chose with OPENBLAS_CORETYPE, take the
 * core type that libsa's kernel path says (kernels.c, from the CPU's
 * feature bits): SkylakeX for avx512 (Cooperlake, which adds BF16
 * kernels, with AVX512_BF16), Haswell for avx2; generic leaves OpenBLAS
 * its own choice.  On a Zen 5 EPYC, SkylakeX's sgemm is 1.7 times
 * Haswell's.  The switch goes through the entry points of OpenBLAS builds
 * with DYNAMIC_ARCH (weak: other builds just lack them).
 */
char *openblas_get_corename(void);
extern void gotoblas_dynamic_init(void) __attribute__((weak));
extern void gotoblas_dynamic_quit(void) __attribute__((weak));

static void
blas_pick_core(void)
{
	const char *core = NULL, *now = openblas_get_corename();

	switch (sa_kernels_path()) {
	case SA_KERNELS_AVX512:
		core = sa_cpu_features() & SA_CPU_BF16 ? "Cooperlake" : "SkylakeX";
		break;
	case SA_KERNELS_AVX2:
		core = "Haswell";
		break;
	}
	if (!core || getenv("OPENBLAS_CORETYPE") || !gotoblas_dynamic_init ||
	    !gotoblas_dynamic_quit || (now && !strcasecmp(now, core)))
		return;
	setenv("OPENBLAS_CORETYPE", core, 0);
	gotoblas_dynamic_quit();
	gotoblas_dynamic_init();
	unsetenv("OPENBLAS_CORETYPE");
}

/* At start-up, before any BLAS call of any module: a switch of kernels
 * later on would give the same product different bits before and after.
 * OpenBLAS gets one thread: its products run inside the pool's chunks. */
__attribute__((constructor)) static void
blas_init(void)
{
	blas_pick_core();
	openblas_set_num_threads(1);
}
static int pool_running;     /* threads exist for pool.nth */

static int
online_cpus(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	return n < 1 ? 1 : n > 256 ? 256 : (int)n;
}

/* Take and run chunks of job gen until none is left; 1 if this thread
 * finished the job's last chunk. */
static int
run_chunks(unsigned gen, int ith)
{
	uint64_t v = atomic_load(&pool.next);
	int last = 0;

	for (;;) {
		int n = atomic_load_explicit(&pool.nchunks, memory_order_relaxed);
		if ((unsigned)(v >> 32) != gen || (int64_t)(uint32_t)v >= n)
			return last;
		if (!atomic_compare_exchange_weak(&pool.next, &v, v + 1))
			continue;
		/* the job's fields are stable while it has chunks unfinished */
		pool.fn(pool.arg, ith, (int)(uint32_t)v, atomic_load(&pool.nchunks));
		last = atomic_fetch_sub(&pool.left, 1) == 1;
		v = atomic_load(&pool.next);
	}
}

static void *
worker(void *p)
{
	int ith = (int)(intptr_t)p;
	unsigned seen = 0;

	for (;;) {
		unsigned g;
		int spins = 0;

		while ((g = atomic_load(&pool.gen)) == seen && spins < SPIN_PAUSE + SPIN_YIELD) {
			if (spins++ < SPIN_PAUSE)
				cpu_relax();
			else
				sched_yield();
		}
		if (g == seen) {
			pthread_mutex_lock(&pool.mu);
			while ((g = atomic_load(&pool.gen)) == seen && !atomic_load(&pool.stop))
				pthread_cond_wait(&pool.wake, &pool.mu);
			pthread_mutex_unlock(&pool.mu);
		}
		seen = g;
		if (atomic_load(&pool.stop))
			break;
		if (run_chunks(g, ith) && atomic_load(&pool.sleeping)) {
			pthread_mutex_lock(&pool.mu);
			pthread_cond_signal(&pool.done);
			pthread_mutex_unlock(&pool.mu);
		}
	}
	return NULL;
}

static void
pool_stop(void)
{
	if (!pool_running)
		return;
	pthread_mutex_lock(&pool.mu);
	atomic_store(&pool.stop, 1);
	atomic_fetch_add(&pool.gen, 1);
	pthread_cond_broadcast(&pool.wake);
	pthread_mutex_unlock(&pool.mu);
	for (int i = 0; i < pool.nth - 1; i++)
		pthread_join(pool.tid[i], NULL);
	free(pool.tid);
	pool.tid = NULL;
	pool.nth = 1;
	atomic_store(&pool.stop, 0);
	pool_running = 0;
}

/* Start nth - 1 workers; on failure the pool runs with those it got. */
static void
pool_start(int nth)
{
	pool.nth = 1;
	atomic_store(&pool.gen, 0);
	atomic_store(&pool.next, 0);
	atomic_store(&pool.stop, 0);
	pool_running = 1;
	if (nth <= 1 || !(pool.tid = calloc((size_t)nth - 1, sizeof *pool.tid)))
		return;
	for (int i = 1; i < nth; i++) {
		if (pthread_create(&pool.tid[i - 1], NULL, worker, (void *)(intptr_t)i))
			break;
		pool.nth = i + 1;
	}
}

void
sa_set_threads(int n)
{
	if (n <= 0)
		n = online_cpus();
	if (n > 256)
		n = 256;
	pthread_mutex_lock(&run_mu);
	threads_wanted = n;
	if (pool_running && pool.nth != n) {
		pool_stop();
		pool_start(n);
	}
	pthread_mutex_unlock(&run_mu);
}

int
sa_get_threads(void)
{
	return threads_wanted ? threads_wanted : online_cpus();
}

void
sa_pool_run_chunks(sa_chunk_fn fn, void *arg, int nchunks)
{
	unsigned gen;

	if (!threads_wanted)
		sa_set_threads(0);
	pthread_mutex_lock(&run_mu);
	if (!pool_running)
		pool_start(threads_wanted);
	if (nchunks <= 0)
		nchunks = pool.nth;
	if (pool.nth == 1 || nchunks == 1) {
		for (int c = 0; c < nchunks; c++)
			fn(arg, 0, c, nchunks);
		pthread_mutex_unlock(&run_mu);
		return;
	}
	/* shut late takers of the last job out before touching its fields */
	gen = atomic_load(&pool.gen) + 1;
	atomic_store(&pool.next, (uint64_t)gen << 32 | UINT32_MAX);
	pool.fn = fn;
	pool.arg = arg;
	atomic_store(&pool.nchunks, nchunks);
	atomic_store(&pool.left, nchunks);
	pthread_mutex_lock(&pool.mu);
	atomic_store(&pool.next, (uint64_t)gen << 32);
	atomic_store(&pool.gen, gen);
	pthread_cond_broadcast(&pool.wake);
	pthread_mutex_unlock(&pool.mu);

	run_chunks(gen, 0);

	/* only chunks a running worker took remain */
	for (int spins = 0; atomic_load(&pool.left) && spins < SPIN_PAUSE + SPIN_YIELD; spins++) {
		if (spins < SPIN_PAUSE)
			cpu_relax();
		else
			sched_yield();
	}
	if (atomic_load(&pool.left)) {
		pthread_mutex_lock(&pool.mu);
		atomic_store(&pool.sleeping, 1);
		while (atomic_load(&pool.left))
			pthread_cond_wait(&pool.done, &pool.mu);
		atomic_store(&pool.sleeping, 0);
		pthread_mutex_unlock(&pool.mu);
	}
	pthread_mutex_unlock(&run_mu);
}

/*
 * Products through sgemm in blocks of the output's columns, each block one
 * call of single-threaded OpenBLAS on one thread of the pool.  The blocks
 * depend on the shape alone, so every element comes from the same call
 * with any number of threads; no block cuts a sum, which runs along K whole
 * in its call.  A block is GEMM_COLS columns or a multiple: about
 * GEMM_BLOCKS of them to a product (each block packs the whole of A again,
 * so fewer and wider ones for wide products), up to GEMM_MAX, and at least
 * GEMM_WORK multiply-adds.  The last block is shorter.
 */
#define GEMM_COLS 128
#define GEMM_BLOCKS 16
#define GEMM_MAX 512
#define GEMM_WORK (1 << 19)

int
sa_gemm_block(int64_t n, int64_t work)
{
	int64_t b = GEMM_COLS * ((n + GEMM_BLOCKS * GEMM_COLS - 1) / (GEMM_BLOCKS * GEMM_COLS));

	if (b > GEMM_MAX)
		b = GEMM_MAX;
	if (work > 0 && b * work < GEMM_WORK)
		b = GEMM_COLS * ((GEMM_WORK + GEMM_COLS * work - 1) / (GEMM_COLS * work));
	return (int)b;
}

struct gemm_task {
	CBLAS_TRANSPOSE tb;
	int M, N, K, lda, ldb, ldc, blk;
	float alpha, beta;
	const float *A, *B;
	float *C;
};

static void
gemm_block(void *arg, int ith, int chunk, int nchunks)
{
	struct gemm_task *t = arg;
	int c0 = chunk * t->blk, nc = t->N - c0 < t->blk ? t->N - c0 : t->blk;
	const float *B = t->B + (t->tb == CblasTrans ? (size_t)c0 * t->ldb : (size_t)c0);

	cblas_sgemm(CblasRowMajor, CblasNoTrans, t->tb, t->M, nc, t->K, t->alpha, t->A, t->lda,
	    B, t->ldb, t->beta, t->C + c0, t->ldc);
}

void
sa_sgemm(CBLAS_TRANSPOSE tb, int M, int N, int K, float alpha, const float *A, int lda,
    const float *B, int ldb, float beta, float *C, int ldc)
{
	struct gemm_task t = {
		tb, M, N, K, lda, ldb, ldc, sa_gemm_block(N, (int64_t)M * K), alpha, beta, A, B, C,
	};

	if (M > 0 && N > 0)
		sa_pool_run_chunks(gemm_block, &t, (N + t.blk - 1) / t.blk);
}

struct simple_task {
	sa_task_fn fn;
	void *arg;
};

static void
simple_chunk(void *arg, int ith, int chunk, int nchunks)
{
	struct simple_task *t = arg;
	t->fn(t->arg, chunk, nchunks);
}

void
sa_pool_run(sa_task_fn fn, void *arg)
{
	struct simple_task t = { fn, arg };
	sa_pool_run_chunks(simple_chunk, &t, sa_get_threads());
}
