/*
 * threads.c - a small persistent pool of worker threads for the kernels.
 *
 * A decoded token runs a few hundred short parallel steps, so waking
 * sleeping threads through the kernel each time would cost more than the
 * steps themselves: idle workers spin for a while on a generation counter,
 * then fall asleep on a condition variable.  Before a BLAS call the caller
 * sends them to sleep at once (sa_pool_quiet), so the pool and BLAS never
 * compete for the cores.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
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

/* Spin iterations before a worker sleeps (about 0.1 ms to a few ms,
 * depending on how long the CPU's pause is). */
#define SPIN_MAX 20000

static struct pool {
	int nth;                /* threads including the caller */
	pthread_t *tid;         /* [nth - 1] workers */
	pthread_mutex_t mu;
	pthread_cond_t wake;    /* new job or stop */
	pthread_cond_t done;    /* last worker finished */
	atomic_uint gen;        /* incremented for every job */
	atomic_int pending;     /* workers still in the current job */
	atomic_int quiet;       /* 1: idle workers go to sleep at once */
	int stop;
	sa_task_fn fn;
	void *arg;
} pool = {
	.mu = PTHREAD_MUTEX_INITIALIZER,
	.wake = PTHREAD_COND_INITIALIZER,
	.done = PTHREAD_COND_INITIALIZER,
};

static int threads_wanted;   /* 0: not set yet */
static int pool_running;     /* threads exist for pool.nth */

static int online_cpus(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	return n < 1 ? 1 : n > 256 ? 256 : (int)n;
}

static void *worker(void *p)
{
	int ith = (int)(intptr_t)p;
	unsigned seen = 0;

	for (;;) {
		unsigned g;
		int spins = 0;

		while ((g = atomic_load_explicit(&pool.gen, memory_order_acquire)) == seen &&
		    spins < SPIN_MAX && !atomic_load_explicit(&pool.quiet, memory_order_relaxed)) {
			cpu_relax();
			spins++;
		}
		if (g == seen) {
			pthread_mutex_lock(&pool.mu);
			while ((g = atomic_load(&pool.gen)) == seen && !pool.stop)
				pthread_cond_wait(&pool.wake, &pool.mu);
			pthread_mutex_unlock(&pool.mu);
		}
		seen = g;
		if (pool.stop)
			break;
		pool.fn(pool.arg, ith, pool.nth);
		if (atomic_fetch_sub(&pool.pending, 1) == 1) {
			pthread_mutex_lock(&pool.mu);
			pthread_cond_signal(&pool.done);
			pthread_mutex_unlock(&pool.mu);
		}
	}
	return NULL;
}

static void pool_stop(void)
{
	if (!pool_running)
		return;
	pthread_mutex_lock(&pool.mu);
	pool.stop = 1;
	atomic_fetch_add(&pool.gen, 1);
	pthread_cond_broadcast(&pool.wake);
	pthread_mutex_unlock(&pool.mu);
	for (int i = 0; i < pool.nth - 1; i++)
		pthread_join(pool.tid[i], NULL);
	free(pool.tid);
	pool.tid = NULL;
	pool.nth = 1;
	pool.stop = 0;
	pool_running = 0;
}

/* Start nth - 1 workers; on failure the pool runs with those it got. */
static void pool_start(int nth)
{
	pool.nth = 1;
	atomic_store(&pool.gen, 0);
	atomic_store(&pool.quiet, 0);
	pool.stop = 0;
	pool_running = 1;
	if (nth <= 1 || !(pool.tid = calloc((size_t)nth - 1, sizeof *pool.tid)))
		return;
	for (int i = 1; i < nth; i++) {
		if (pthread_create(&pool.tid[i - 1], NULL, worker, (void *)(intptr_t)i))
			break;
		pool.nth = i + 1;
	}
}

void sa_set_threads(int n)
{
	if (n <= 0)
		n = online_cpus();
	if (n > 256)
		n = 256;
	threads_wanted = n;
	openblas_set_num_threads(n);
	if (pool_running && pool.nth != n) {
		pool_stop();
		pool_start(n);
	}
}

int sa_get_threads(void)
{
	return threads_wanted ? threads_wanted : online_cpus();
}

void sa_pool_quiet(void)
{
	atomic_store_explicit(&pool.quiet, 1, memory_order_relaxed);
}

void sa_pool_run(sa_task_fn fn, void *arg)
{
	if (!pool_running) {
		if (!threads_wanted)
			sa_set_threads(0);
		pool_start(threads_wanted);
	}
	if (pool.nth == 1) {
		fn(arg, 0, 1);
		return;
	}
	pool.fn = fn;
	pool.arg = arg;
	atomic_store(&pool.pending, pool.nth - 1);
	atomic_store_explicit(&pool.quiet, 0, memory_order_relaxed);
	pthread_mutex_lock(&pool.mu);
	atomic_fetch_add_explicit(&pool.gen, 1, memory_order_release);
	pthread_cond_broadcast(&pool.wake);
	pthread_mutex_unlock(&pool.mu);

	fn(arg, 0, pool.nth);

	for (int spins = 0; atomic_load_explicit(&pool.pending, memory_order_acquire) &&
	    spins < SPIN_MAX; spins++)
		cpu_relax();
	if (atomic_load(&pool.pending)) {
		pthread_mutex_lock(&pool.mu);
		while (atomic_load(&pool.pending))
			pthread_cond_wait(&pool.done, &pool.mu);
		pthread_mutex_unlock(&pool.mu);
	}
}
