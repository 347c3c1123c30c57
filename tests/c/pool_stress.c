/* Stress the thread pool's job hand-off and its barrier (csrc/pool.c): jobs
 * alternate between 2, 3 and 4 threads, so a worker that sat one job out
 * reads the job fields while the next job is published, and the barrier's
 * flags start each job afresh. Every job counts its runs per thread index;
 * a run missed or repeated fails. Inside a job the threads pass rounds of
 * plain (non-atomic) writes and reads separated by barriers: a read that
 * misses a write before the last barrier fails, and ThreadSanitizer reports
 * any such pair the barrier does not order. Built with -fsanitize=thread by
 * tests/test_c_core.py, which also fails on any race the sanitizer reports. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include "internal.h"

#define ROUNDS 20

typedef struct job {
    lf_pool *pool;
    _Atomic int runs[LF_POOL_STRESS_THREADS];
    _Atomic int stale_reads;
    int n;
    int slots[LF_POOL_STRESS_THREADS]; /* written by their own thread only */
} job;

static void run_once(void *arg, int index, int count) {
    job *j = arg;
    if (count != j->n) return;
    atomic_fetch_add(&j->runs[index], 1);
    for (int round = 1; round <= ROUNDS; ++round) {
        j->slots[index] = round;
        lf_barrier_wait(j->pool, index, count);
        for (int i = 0; i < count; ++i)
            if (j->slots[i] != round) atomic_fetch_add(&j->stale_reads, 1);
        lf_barrier_wait(j->pool, index, count); /* all read before the next write */
    }
}

int main(int argc, char **argv) {
    const int jobs = argc > 1 ? atoi(argv[1]) : 1000;
    lf_pool *pool;
    if (lf_pool_create(LF_POOL_STRESS_THREADS, &pool) != LF_OK) return 2;
    int wrong = 0, stale = 0;
    for (int it = 0; it < jobs; ++it) {
        job j = {.pool = pool, .n = 2 + it % (LF_POOL_STRESS_THREADS - 1)};
        for (int i = 0; i < LF_POOL_STRESS_THREADS; ++i) atomic_init(&j.runs[i], 0);
        atomic_init(&j.stale_reads, 0);
        lf_pool_run(pool, j.n, run_once, &j);
        for (int i = 0; i < LF_POOL_STRESS_THREADS; ++i)
            wrong += atomic_load(&j.runs[i]) != (i < j.n ? 1 : 0);
        stale += atomic_load(&j.stale_reads);
    }
    lf_pool_destroy(pool);
    printf("jobs %d, wrong runs %d, stale reads %d\n", jobs, wrong, stale);
    return wrong != 0 || stale != 0;
}
