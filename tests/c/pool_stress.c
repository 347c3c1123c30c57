/* Stress the thread pool's job hand-off (csrc/pool.c): jobs alternate
 * between 2, 3 and 4 threads, so a worker that sat one job out reads the job
 * fields while the next job is published. Every job counts its runs per
 * thread index; a run missed or repeated fails. Built with
 * -fsanitize=thread by tests/test_c_core.py, which also fails on any
 * race the sanitizer reports. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include "internal.h"

typedef struct job {
    _Atomic int runs[LF_POOL_STRESS_THREADS];
    int n;
} job;

static void run_once(void *arg, int index, int count) {
    job *j = arg;
    if (count == j->n) atomic_fetch_add(&j->runs[index], 1);
}

int main(int argc, char **argv) {
    const int jobs = argc > 1 ? atoi(argv[1]) : 1000;
    lf_pool *pool;
    if (lf_pool_create(LF_POOL_STRESS_THREADS, &pool) != LF_OK) return 2;
    int wrong = 0;
    for (int it = 0; it < jobs; ++it) {
        job j = {.n = 2 + it % (LF_POOL_STRESS_THREADS - 1)};
        for (int i = 0; i < LF_POOL_STRESS_THREADS; ++i) atomic_init(&j.runs[i], 0);
        lf_pool_run(pool, j.n, run_once, &j);
        for (int i = 0; i < LF_POOL_STRESS_THREADS; ++i)
            wrong += atomic_load(&j.runs[i]) != (i < j.n ? 1 : 0);
    }
    lf_pool_destroy(pool);
    printf("jobs %d, wrong runs %d\n", jobs, wrong);
    return wrong != 0;
}
