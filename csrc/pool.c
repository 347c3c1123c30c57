/*
 * pool.c -- a tiny thread pool for one job at a time, owned by its caller.
 *
 * The engine's parallel work is fine-grained: a recurrent step of a small
 * layer takes a few microseconds, and threads meet at a barrier after every
 * step. So workers spin for a while before sleeping (a futex wake-up costs
 * more than a step), and the barrier spins too, yielding after a while so an
 * oversubscribed machine still makes progress.
 *
 * The barrier is a dissemination barrier (Hensgen, Finkel and Manber): in
 * round r each thread raises its own flag and waits for the flag of the
 * thread 2^r before it, so after ceil(log2 n) rounds every thread has heard,
 * directly or not, from every other. Each flag has its own cache line and
 * one writer, so a pair of threads meets in one cache-line transfer each
 * way, at the same time. A shared arrival counter moves its one line between
 * the cores three times per barrier: 260 ns against 127 ns for two threads
 * on the Intel VM of bench/RESULTS.md, whose cores answer each other in
 * 120 ns.
 *
 * A pool runs one job at a time. A second caller that finds it busy runs its
 * job on its own thread alone: results do not depend on the thread count, so
 * this changes speed, never numbers.
 */
#include <stdlib.h>
#include "internal.h"

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield");
#endif
}

#define LF_SPIN_BEFORE_YIELD (1 << 12)

#if LF_HAVE_PTHREADS
#include <pthread.h>
#include <sched.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/prctl.h>
#endif

/* Rounds of the dissemination barrier for n threads: ceil(log2 n). */
static int barrier_rounds(int n) {
    int rounds = 0;
    for (int distance = 1; distance < n; distance *= 2) ++rounds;
    return rounds;
}

/* A barrier flag: how many barriers its thread has passed in this job.
 * Alone on its cache line, so raising it disturbs no other flag. */
typedef struct barrier_flag {
    _Atomic uint64_t passed;
    char pad[LF_ALIGN - sizeof(uint64_t)];
} barrier_flag;
_Static_assert(sizeof(barrier_flag) == LF_ALIGN, "one barrier flag per cache line");

static void relax_or_yield(int *spins) {
    if (*spins < LF_SPIN_BEFORE_YIELD) {
        ++*spins; /* stops counting: a wait of minutes must not overflow it */
        cpu_relax();
    } else {
        sched_yield();
    }
}

/* Pause instructions a worker spends waiting for the next job before it
 * sleeps: 10 to 140 cycles each depending on the CPU, so roughly 0.05-1 ms,
 * enough to cover the Python between two calls of a streaming loop. */
#define LF_SPIN_BEFORE_SLEEP (1 << 14)

struct lf_pool {
    int n_threads;                 /* including the calling thread */
    int n_started;                 /* workers running */
    pid_t owner;                   /* a forked child has none of the workers */
    pthread_t *threads;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    atomic_flag busy;
    /* A seqlock over the job fields below: odd while a job is being
     * published, even once it is complete; +2 per job. The fields are
     * atomics (relaxed) because a worker outside the last job may read them
     * while the next job writes them; the fences in lf_pool_run and
     * worker_main make such a read show up as a changed generation. */
    _Atomic uint64_t generation;
    _Atomic int sleepers;
    _Atomic int pending;           /* workers still inside the current job */
    _Atomic int shutdown;
    _Atomic(lf_job_fn) fn;
    _Atomic(void *) arg;
    _Atomic int n_active;
    /* The barrier's flags, thread i's flag of round r at i * rounds + r:
     * barrier_rounds(n_threads) for each thread. Zeroed by lf_pool_run for
     * the threads and rounds of each job. */
    int rounds;
    barrier_flag *flags;
};

typedef struct worker_start {
    lf_pool *pool;
    int index;
} worker_start;

static void *worker_main(void *start_) {
    const worker_start start = *(worker_start *)start_;
    free(start_);
#if defined(__linux__)
    /* So top, gdb and /proc/<pid>/task/<tid>/comm tell the workers apart
     * from the threads of whatever else runs in the process. */
    prctl(PR_SET_NAME, "lstm_fast", 0, 0, 0);
#endif
    lf_pool *pool = start.pool;
    uint64_t seen = 0;
    for (;;) {
        uint64_t generation = atomic_load(&pool->generation);
        for (int spin = 0; generation == seen && spin < LF_SPIN_BEFORE_SLEEP; ++spin) {
            cpu_relax();
            generation = atomic_load(&pool->generation);
        }
        if (generation == seen) {
            pthread_mutex_lock(&pool->lock);
            atomic_fetch_add(&pool->sleepers, 1);
            while ((generation = atomic_load(&pool->generation)) == seen)
                pthread_cond_wait(&pool->wake, &pool->lock);
            atomic_fetch_sub(&pool->sleepers, 1);
            pthread_mutex_unlock(&pool->lock);
        }
        if (generation & 1) continue; /* being published: look again */
        if (atomic_load(&pool->shutdown)) return NULL;
        /* Snapshot the job, then check no newer one started meanwhile: a
         * worker outside the last job is not waited for, so it may read
         * these fields while the next job is being written. The acquire
         * fence pairs with lf_pool_run's release fence: if any field read
         * comes from the next job, the generation read after it is odd or
         * newer (x86: compiler barriers only; AArch64 needs the fences). */
        const lf_job_fn fn = atomic_load_explicit(&pool->fn, memory_order_relaxed);
        void *const arg = atomic_load_explicit(&pool->arg, memory_order_relaxed);
        const int n_active = atomic_load_explicit(&pool->n_active, memory_order_relaxed);
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&pool->generation, memory_order_relaxed) != generation) continue;
        seen = generation;
        if (start.index < n_active) {
            fn(arg, start.index, n_active);
            atomic_fetch_sub(&pool->pending, 1);
        }
    }
}

/* Call with the job fields written between the two increments. */
static void publish_end(lf_pool *pool) {
    /* Sequentially consistent with the sleepers count a worker raises before
     * its last look at the generation: one of the two sees the other. */
    atomic_fetch_add(&pool->generation, 1);
    if (atomic_load(&pool->sleepers) > 0) {
        pthread_mutex_lock(&pool->lock);
        pthread_cond_broadcast(&pool->wake);
        pthread_mutex_unlock(&pool->lock);
    }
}

void lf_pool_destroy(lf_pool *pool) {
    if (!pool) return;
    if (pool->owner != getpid()) {
        /* A forked child: the workers (and any lock they held) exist only
         * in the parent; joining would wait forever. */
        free(pool->threads);
        free(pool->flags);
        free(pool);
        return;
    }
    atomic_fetch_add(&pool->generation, 1);
    atomic_store(&pool->shutdown, 1);
    publish_end(pool);
    for (int i = 0; i < pool->n_started; ++i) pthread_join(pool->threads[i], NULL);
    free(pool->threads);
    free(pool->flags);
    pthread_cond_destroy(&pool->wake);
    pthread_mutex_destroy(&pool->lock);
    free(pool);
}

lf_status lf_pool_create(int n_threads, lf_pool **out) {
    if (!out) return LF_ERR_NULL_POINTER;
    *out = NULL;
    if (n_threads < 1 || n_threads > LF_MAX_THREADS) return LF_ERR_BAD_DIMENSION;
    lf_pool *pool = calloc(1, sizeof *pool);
    if (!pool) return LF_ERR_OUT_OF_MEMORY;
    pool->threads = calloc((size_t)n_threads, sizeof(pthread_t));
    pool->rounds = barrier_rounds(n_threads);
    /* n_threads * rounds <= 1024 * 10 flags: no overflow. */
    const size_t flag_bytes = (size_t)n_threads * (size_t)pool->rounds * sizeof(barrier_flag);
    /* posix_memalign rather than C11's aligned_alloc, which macOS lacks
     * before 10.15. */
    void *flags = NULL;
    if (flag_bytes > 0 && posix_memalign(&flags, LF_ALIGN, flag_bytes) != 0) flags = NULL;
    pool->flags = flags;
    if (!pool->threads || (flag_bytes > 0 && !pool->flags) ||
        pthread_mutex_init(&pool->lock, NULL) != 0) {
        free(pool->threads);
        free(pool->flags);
        free(pool);
        return LF_ERR_OUT_OF_MEMORY;
    }
    if (pthread_cond_init(&pool->wake, NULL) != 0) {
        pthread_mutex_destroy(&pool->lock);
        free(pool->threads);
        free(pool->flags);
        free(pool);
        return LF_ERR_THREADS;
    }
    atomic_flag_clear(&pool->busy);
    pool->n_threads = n_threads;
    pool->owner = getpid();
    for (int i = 1; i < n_threads; ++i) {
        worker_start *start = malloc(sizeof *start);
        if (start) {
            start->pool = pool;
            start->index = i;
        }
        if (!start || pthread_create(&pool->threads[i - 1], NULL, worker_main, start) != 0) {
            free(start);
            lf_pool_destroy(pool);
            return LF_ERR_THREADS;
        }
        pool->n_started = i;
    }
    *out = pool;
    return LF_OK;
}

int lf_pool_threads(const lf_pool *pool) { return pool ? pool->n_threads : 1; }

LF_HIDDEN void lf_pool_run(lf_pool *pool, int n_wanted, lf_job_fn fn, void *arg) {
    if (!pool || n_wanted <= 1 || pool->n_threads <= 1 || pool->owner != getpid() ||
        atomic_flag_test_and_set(&pool->busy)) {
        fn(arg, 0, 1);
        return;
    }
    const int n = n_wanted < pool->n_threads ? n_wanted : pool->n_threads;
    /* Every thread of this job starts its barrier count at zero; published
     * to the workers with the job (publish_end). */
    const int rounds = barrier_rounds(n);
    for (int i = 0; i < n; ++i)
        for (int r = 0; r < rounds; ++r)
            atomic_store_explicit(&pool->flags[i * pool->rounds + r].passed, 0,
                                  memory_order_relaxed);
    atomic_store(&pool->pending, n - 1);
    atomic_fetch_add(&pool->generation, 1);
    atomic_thread_fence(memory_order_release); /* the odd generation before the fields */
    atomic_store_explicit(&pool->fn, fn, memory_order_relaxed);
    atomic_store_explicit(&pool->arg, arg, memory_order_relaxed);
    atomic_store_explicit(&pool->n_active, n, memory_order_relaxed);
    publish_end(pool);
    fn(arg, 0, n);
    int spins = 0;
    while (atomic_load(&pool->pending) > 0) relax_or_yield(&spins);
    atomic_flag_clear(&pool->busy);
}

LF_HIDDEN void lf_barrier_wait(lf_pool *pool, int index, int n) {
    if (n <= 1) return;
    /* n > 1 only inside lf_pool_run's job, so pool has flags for n threads. */
    barrier_flag *mine = pool->flags + (size_t)index * pool->rounds;
    const uint64_t passed = atomic_load_explicit(&mine[0].passed, memory_order_relaxed) + 1;
    for (int r = 0, distance = 1; distance < n; ++r, distance *= 2) {
        /* Release: what this thread wrote before the barrier (and what it
         * heard in earlier rounds) reaches whoever acquires this flag. */
        atomic_store_explicit(&mine[r].passed, passed, memory_order_release);
        const barrier_flag *from =
            pool->flags + (size_t)((index - distance + n) % n) * pool->rounds + r;
        int spins = 0;
        while (atomic_load_explicit(&from->passed, memory_order_acquire) < passed)
            relax_or_yield(&spins);
    }
}

#else /* no pthreads: a pool of one, so the API stays the same everywhere */

struct lf_pool {
    int n_threads;
};

lf_status lf_pool_create(int n_threads, lf_pool **out) {
    if (!out) return LF_ERR_NULL_POINTER;
    *out = NULL;
    if (n_threads < 1 || n_threads > LF_MAX_THREADS) return LF_ERR_BAD_DIMENSION;
    lf_pool *pool = calloc(1, sizeof *pool);
    if (!pool) return LF_ERR_OUT_OF_MEMORY;
    pool->n_threads = 1;
    *out = pool;
    return LF_OK;
}

void lf_pool_destroy(lf_pool *pool) { free(pool); }

int lf_pool_threads(const lf_pool *pool) { return 1; }

LF_HIDDEN void lf_pool_run(lf_pool *pool, int n_wanted, lf_job_fn fn, void *arg) {
    (void)pool;
    (void)n_wanted;
    fn(arg, 0, 1);
}

/* Jobs run on one thread here (lf_pool_run), so n is always 1. */
LF_HIDDEN void lf_barrier_wait(lf_pool *pool, int index, int n) {
    (void)pool;
    (void)index;
    (void)n;
}
#endif
