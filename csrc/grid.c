/*
 * grid.c -- the recurrence engine, shared by every cell kind.
 *
 * Architecture (after oneDNN's RNN driver):
 *   for each layer l, each direction d:
 *     for each chunk of time steps (forward or reverse order):
 *       gx = x[chunk] @ W_ih^T + biases         one GEMM over chunk*B rows
 *       for each step t of the chunk:
 *         kernels->step: gates = gx[t] + h @ W_hh^T, then the cell's
 *                        elementwise update fused on the same panel
 *         LSTMP only:    h = m @ W_hr^T, then ended sequences keep their h
 *   Layer l writes the full sequence that layer l+1 reads; layers alternate
 *   between y and one workspace buffer so the last one lands in y.
 *   A batch of one with a W_hh past the L1's reach instead projects ahead:
 *   each step also computes a slice of the next steps' gx, in the gaps of
 *   its own memory-bound product (run_steps_projecting_ahead).
 *
 * Threads split the hidden units: thread i owns a fixed range of panels
 * (blocks of hidden units, all gates) for the whole call. It computes the
 * input projection of exactly the gx columns its own step then reads, so the
 * only meeting point is one barrier per step, after which every thread sees
 * the complete new h (two with LSTMP: m must be complete before projecting).
 * Each value is computed by one thread, its sums grouped the same way
 * whatever the thread count (kernel_body.h), so results are bitwise
 * identical for any number of threads. A step too small for that
 * barrier to pay runs on one thread while another projects the next chunk's
 * input (run_steps_pipelined), meeting once per chunk.
 *
 * Variable lengths (pack_padded_sequence semantics) need no reordering: a
 * sequence runs at step t iff t < length. Ended rows keep their state and
 * output zeros. Walking t downwards for the reverse direction, a sequence's
 * state stays at h0 until t = length-1, which is exactly where its reverse
 * pass must begin.
 */
#include <string.h>
#include "internal.h"

typedef struct forward_job {
    const lf_plan *plan;
    const lf_forward_args *args;
    const lf_workspace_layout *ws;
    char *wbase;
    int pipelined;             /* run_steps_pipelined, in chunks of ws->pipeline_steps,
                                  if the pool gives the job two threads */
} forward_job;

static void fill_state(void *dst, const void *src, size_t bytes) {
    if (src) memmove(dst, src, bytes); /* a C caller may pass h_n == h0 */
    else memset(dst, 0, bytes);
}

/* Contiguous share [begin, end) of n items for thread index of count. */
static void share(int64_t n, int index, int count, int64_t *begin, int64_t *end) {
    *begin = n * index / count;
    *end = n * (index + 1) / count;
}

/* LSTMP: the step kernels wrote m = o*tanh(c) for all units; project this
 * thread's share of the P outputs, then restore the rows whose sequence has
 * ended and publish the rest to y. */
static void project_state(const lf_plan *p, const char *packed, const lf_packed_layout *layout,
                          const void *m, const char *h_prev, char *h_next, char *y, int64_t ldy,
                          int64_t B, const int64_t *lengths, int64_t t, int index, int count) {
    const int64_t P = p->desc.proj_size, H = p->desc.hidden_size, NB = p->block;
    const size_t e = p->elem_size;
    int64_t p0, p1;
    share((P + NB - 1) / NB, index, count, &p0, &p1);
    if (p0 == p1) return;
    const int64_t col0 = p0 * NB, cols = (p1 * NB < P ? p1 * NB : P) - col0;
    lf_gemm_args g = {
        .M = B, .K = H, .A = m, .lda = H,
        .panels = packed + layout->w_hr + (size_t)(p0 * LF_PROJECTION_ROWS(H) * NB) * e,
        .n_panels = p1 - p0,
        .gates = 1, .bias = NULL, .C = h_next + (size_t)col0 * e, .ldc = P, .n_cols = cols,
    };
    ((const lf_kernels *)p->kernels)->gemm[p->desc.dtype](&g);
    const size_t bytes = (size_t)cols * e;
    for (int64_t b = 0; b < B; ++b) {
        char *y_row = y + (size_t)(b * ldy + col0) * e;
        char *h_row = h_next + (size_t)(b * P + col0) * e;
        if (lengths && t >= lengths[b]) {
            memcpy(h_row, h_prev + (size_t)(b * P + col0) * e, bytes);
            memset(y_row, 0, bytes);
        } else {
            memcpy(y_row, h_row, bytes);
        }
    }
}

/* One layer-direction as one thread runs it. */
typedef struct direction_run {
    forward_job *job;
    const lf_packed_layout *layout;
    const char *packed;        /* this layer-direction's packed weights */
    const char *in;            /* (T, B, I) */
    char *out;                 /* (T, B, D*R) */
    int64_t dir;
    int index, count;          /* this thread, of the count that share each step
                                  (pipelined: 0 of 1, the thread that steps) */
    char *h_prev, *h_next;     /* swapped after every step */
} direction_run;

/* Share `part` of `parts` of the panels of the input projection (biases
 * included) of time steps [t0, t1) into gx, one row per (t, b) from t0 on.
 * With `for_another_core`, the rows it wrote then go to the shared cache
 * (lf_demote) for the core that steps through them: read from the
 * writer's L2 instead, 8 rows a chunk slowed every step of the pipeline
 * (Intel VM, B=1, H=64: 0.51 us a step, 0.47 demoted, as on one thread
 * alone; the tiny layer 0.91x the time, GRU H=64 0.95x). */
static void project_input(const direction_run *run, int part, int parts, int64_t t0, int64_t t1,
                          char *gx, int for_another_core) {
    const lf_plan *p = run->job->plan;
    const int64_t B = run->job->args->B, I = run->layout->in_size;
    const int64_t G = p->gates, width = G * p->block, ldgx = G * p->hidden_padded;
    const size_t e = p->elem_size;
    const lf_kernels *k = p->kernels;
    const int64_t M = (t1 - t0) * B;
    const char *A = run->in + (size_t)(t0 * B * I) * e;
    char *a_split = NULL;
    if (run->job->ws->on_amx) {
        /* The rows' split, shared: each thread splits its share of the row
         * tiles, and all wait for the whole before multiplying. (The
         * threads that project together are all of the job's, or one: a
         * pipelined job has two threads, lf_forward.) */
        a_split = run->job->wbase + run->job->ws->x_split;
        int64_t tile0, tile1;
        share((M + 15) / 16, part, parts, &tile0, &tile1);
        k->amx_split_rows(A, I, M, I, tile0, tile1, a_split);
        lf_barrier_wait(run->job->args->pool, part, parts);
    }
    int64_t p0, p1;
    share(p->hidden_padded / p->block, part, parts, &p0, &p1);
    if (p1 == p0) return;
    char *C = gx + (size_t)(p0 * width) * e;
    lf_gemm_args g = {
        .M = M, .K = I, .A = A, .lda = I,
        .panels = run->packed + run->layout->w_ih +
                  (size_t)(p0 * LF_PROJECTION_ROWS(I) * width) * e,
        .n_panels = p1 - p0, .gates = G,
        .bias = run->packed + run->layout->bias + (size_t)(p0 * width) * e,
        .C = C, .ldc = ldgx, .n_cols = (p1 - p0) * width,
        .tiles = a_split ? run->packed + run->layout->w_ih_tiles +
                               (size_t)(p0 * G) * LF_AMX_STRIP_BYTES(I)
                         : NULL,
        .a_split = a_split,
    };
    k->gemm[p->desc.dtype](&g);
    if (for_another_core)
        for (int64_t row = 0; row < g.M; ++row)
            lf_demote(C + (size_t)(row * ldgx) * e, (size_t)g.n_cols * e);
}

/* Asks the cache now for [p, p + bytes), which other cores just wrote,
 * rather than meeting those misses a line at a time in the product that
 * reads it: a chunk of gx (pipelined) or the new h (split steps). No more
 * than 16 KiB, a third of a 48 KiB L1 (half of a 32 KiB one): a small
 * step's rows are a few KiB. */
static void prefetch_from_other_cores(const char *p, size_t bytes) {
    const size_t most = (size_t)16 * 1024, ask = bytes < most ? bytes : most;
    for (size_t offset = 0; offset < ask; offset += LF_ALIGN) __builtin_prefetch(p + offset, 0, 3);
}

/* A step's recurrent product on the AMX tiles (lf_call_recurs_on_amx),
 * A (B x R: h_prev, or the reset-before GRU's r*h) times the W_hh panels
 * of `gates` gates whose tiles start at `tile_offset` of the packed
 * buffer: the threads split their shares of A's row tiles, meet, and each
 * adds the product to its own panels' columns of `sums` (the step's gx,
 * with `accumulate`) or writes it there (the GRU's gh, which the step adds
 * in start_gates); the step kernel then runs no product of its own
 * (lf_step_args.product_done). */
static void recur_on_amx(direction_run *run, const lf_step_args *st, const void *A,
                         size_t tile_offset, int64_t gates, void *sums, int64_t ld_sums,
                         int accumulate) {
    const forward_job *job = run->job;
    const lf_plan *p = job->plan;
    const lf_kernels *k = p->kernels;
    const int64_t B = job->args->B, R = p->state_size;
    char *a_split = job->wbase + job->ws->h_split;
    int64_t tile0, tile1;
    share((B + 15) / 16, run->index, run->count, &tile0, &tile1);
    k->amx_split_rows(A, R, B, R, tile0, tile1, a_split);
    lf_barrier_wait(job->args->pool, run->index, run->count);
    if (st->panel_end == st->panel_begin) return;
    const int64_t p0 = st->panel_begin, width = gates * p->block;
    lf_gemm_args g = {
        .M = B, .K = R, .A = A, .lda = R,
        .n_panels = st->panel_end - p0, .gates = gates,
        .C = (char *)sums + (size_t)(p0 * width) * sizeof(float), .ldc = ld_sums,
        .n_cols = (st->panel_end - p0) * width,
        .tiles = run->packed + tile_offset + (size_t)(p0 * gates) * LF_AMX_STRIP_BYTES(R),
        .a_split = a_split, .accumulate = accumulate,
    };
    k->gemm[LF_FLOAT32](&g);
}

/* One time step on this thread's panels (st: everything but the state and
 * output rows), the barriers after it, LSTMP's projection, and the swap of
 * h_prev and h_next. */
static void run_step(direction_run *run, lf_step_args *st) {
    forward_job *job = run->job;
    const lf_plan *p = job->plan;
    const lf_kernels *k = p->kernels;
    const lf_dtype dtype = p->desc.dtype;
    const int64_t R = p->state_size, ld_out = p->desc.num_directions * R, B = job->args->B;
    char *y_t = run->out + (size_t)(st->t * B * ld_out + run->dir * R) * p->elem_size;
    const int has_panels = st->panel_end > st->panel_begin;
    st->h_prev = run->h_prev;
    st->h_next = run->h_next;
    st->y = st->m ? NULL : y_t;
    const int on_tiles = job->ws->recurs_on_amx;
    const lf_packed_layout *L = run->layout;
    if (p->desc.flags & LF_GRU_RESET_BEFORE_PRODUCT) {
        if (on_tiles) recur_on_amx(run, st, st->h_prev, L->w_hh_tiles, 2, (void *)st->gh, st->ldgh, 0);
        st->phase = 1;
        if (has_panels) k->step[dtype](st);
        lf_barrier_wait(job->args->pool, run->index, run->count);
        st->phase = 2;
        if (on_tiles)
            recur_on_amx(run, st, st->rh, L->w_hn_tiles, 1, (void *)st->gh_n, p->hidden_padded, 0);
    } else if (on_tiles) {
        const int into_gx = st->gh == NULL; /* (the GRU keeps its sums apart) */
        recur_on_amx(run, st, st->h_prev, L->w_hh_tiles, p->gates,
                     (void *)(into_gx ? st->gx : st->gh), into_gx ? st->ldgx : st->ldgh, into_gx);
    }
    if (has_panels) k->step[dtype](st);
    lf_barrier_wait(job->args->pool, run->index, run->count);
    if (st->m) {
        project_state(p, run->packed, run->layout, st->m, run->h_prev, run->h_next, y_t, ld_out,
                      B, job->args->lengths, st->t, run->index, run->count);
        lf_barrier_wait(job->args->pool, run->index, run->count);
    }
    /* The other threads' units of the new h sit in their caches (two
     * threads, three runs: T=1000 B=1 H=128 0.95x the time, H=256
     * 0.98-0.99x, H=512 0.93-1.01x, GRU H=256 0.96-0.97x, B=4 H=128
     * 0.97-0.98x, B=16 0.99x). */
    if (run->count > 1) prefetch_from_other_cores(run->h_next, (size_t)(B * R) * p->elem_size);
    char *swap = run->h_prev;
    run->h_prev = run->h_next;
    run->h_next = swap;
}

/* Time steps [lo, hi) of block j of S steps, in the direction's order. */
static void block_steps(int64_t j, int64_t S, int64_t T, int64_t dir, int64_t *lo, int64_t *hi) {
    const int64_t first = j * S, end = first + S < T ? first + S : T;
    *lo = dir == 0 ? first : T - end;
    *hi = dir == 0 ? end : T - first;
}

/* A batch of one projects its input ahead (plan.c decides when: kernels
 * with ahead_rows, so far AVX-512, a W_ih within lf_plan.ahead_cache_bytes,
 * a W_hh whose steps do not sum in halves (lf_sums_in_halves) and T of two
 * blocks or more; unless it pipelines): steps go
 * in blocks of S = ahead_rows[G], and while block j runs, its S steps
 * compute the input projection of block j+1's S rows (step_tile_ahead),
 * each one gate over one slice of W_ih, into the other half of a two-block
 * ring in gx; only block 0 takes the GEMM. Measured against the GEMM
 * chunks (Zen 4, 1 thread, LSTM, I=H, same bits): H=64 T=50 0.88x the
 * time, H=128 T=1000 0.85x, H=256 0.90x, H=512 0.94x; with I = 8-16x H
 * 0.96-1.06x (before the projection panel layout, internal.h, took H=512
 * to 0.82-0.86x of that). */
static void run_steps_projecting_ahead(direction_run *run, const lf_step_args *common,
                                       int64_t S) {
    const lf_plan *p = run->job->plan;
    const int64_t T = run->job->args->T, I = run->layout->in_size, Q = S / p->gates;
    const size_t e = p->elem_size, block_bytes = (size_t)(S * common->ldgx) * e;
    char *ring = run->job->wbase + run->job->ws->gx;
    const int64_t n_blocks = (T + S - 1) / S;
    lf_step_args st = *common; /* once: each step sets only its own fields */
    int64_t lo, hi;
    block_steps(0, S, T, run->dir, &lo, &hi);
    project_input(run, run->index, run->count, lo, hi, ring, 0);
    for (int64_t j = 0; j < n_blocks; ++j) {
        char *this_block = ring + (size_t)(j % 2) * block_bytes;
        char *next_block = ring + (size_t)((j + 1) % 2) * block_bytes;
        int64_t next_lo = 0, next_hi = 0;
        const int has_next = j + 1 < n_blocks;
        if (has_next) block_steps(j + 1, S, T, run->dir, &next_lo, &next_hi);
        for (int64_t i = 0; i < hi - lo; ++i) {
            const int64_t t = run->dir == 0 ? lo + i : hi - 1 - i;
            st.t = t;
            st.gx = this_block + (size_t)((t - lo) * common->ldgx) * e;
            st.ahead_x = NULL;
            if (has_next) { /* then this block has all S steps */
                st.ahead_x = run->in + (size_t)(next_lo * I) * e;
                st.ahead_valid = next_hi - next_lo;
                st.ahead_gate = (int)(i / Q);
                st.ahead_k0 = I * (i % Q) / Q;
                st.ahead_k1 = I * (i % Q + 1) / Q;
                st.ahead_gx = next_block;
            }
            run_step(run, &st);
        }
        lo = next_lo;
        hi = next_hi;
    }
}

/* The time steps in chunks: one GEMM for a chunk's input projection, then
 * its steps. A one-step chunk (one step per call, a large batch: plan.c, or
 * the last step of a sequence) leaves the input projection to the step,
 * panel by panel: its W_ih and W_hh panels then stream together, in the
 * step's alternating order. */
static void run_steps_in_chunks(direction_run *run, const lf_step_args *common) {
    const lf_plan *p = run->job->plan;
    const int64_t T = run->job->args->T, B = run->job->args->B, I = run->layout->in_size;
    const size_t e = p->elem_size;
    char *gx = run->job->wbase + run->job->ws->gx;
    const int64_t chunk = run->job->ws->chunk_steps, n_chunks = (T + chunk - 1) / chunk;
    lf_step_args st = *common; /* once: each step sets only its own fields */
    for (int64_t ci = 0; ci < n_chunks; ++ci) {
        const int64_t chunk_index = run->dir == 0 ? ci : n_chunks - 1 - ci;
        const int64_t t0 = chunk_index * chunk, t1 = t0 + chunk < T ? t0 + chunk : T;
        const int fused_input = lf_chunk_fuses_input(p, run->job->ws->on_amx, t1 - t0);
        if (!fused_input) project_input(run, run->index, run->count, t0, t1, gx, 0);
        for (int64_t s = 0; s < t1 - t0; ++s) {
            const int64_t t = run->dir == 0 ? t0 + s : t1 - 1 - s;
            st.t = t;
            st.gx = gx + (size_t)((t - t0) * B * common->ldgx) * e;
            st.x = fused_input ? run->in + (size_t)(t * B * I) * e : NULL;
            run_step(run, &st);
        }
    }
}

/* A step too small to split over threads (lf_pipeline_steps, internal.h) on
 * two: thread 0 runs every step, chunk after chunk, while thread 1 (the
 * others, if the job has more) computes the next chunk's input projection
 * into the other half of a ring of two chunks of gx; they meet once per
 * chunk, and all project the first one. The GEMM is the chunked path's,
 * so the bits are too. index and count: this thread of the job's. */
static void run_steps_pipelined(direction_run *run, const lf_step_args *common, int index,
                                int count) {
    forward_job *job = run->job;
    const lf_plan *p = job->plan;
    const int64_t T = job->args->T, B = job->args->B, C = job->ws->pipeline_steps;
    const size_t e = p->elem_size, chunk_bytes = (size_t)(C * B * common->ldgx) * e;
    char *ring = job->wbase + job->ws->gx;
    const int64_t n_chunks = (T + C - 1) / C;
    int64_t lo, hi;
    block_steps(0, C, T, run->dir, &lo, &hi);
    project_input(run, index, count, lo, hi, ring, index > 0);
    lf_barrier_wait(job->args->pool, index, count);
    lf_step_args st = *common; /* once: each step sets only its own fields */
    for (int64_t j = 0; j < n_chunks; ++j) {
        char *this_chunk = ring + (size_t)(j % 2) * chunk_bytes;
        if (index == 0) {
            prefetch_from_other_cores(this_chunk, chunk_bytes);
            block_steps(j, C, T, run->dir, &lo, &hi);
            for (int64_t i = 0; i < hi - lo; ++i) {
                const int64_t t = run->dir == 0 ? lo + i : hi - 1 - i;
                st.t = t;
                st.gx = this_chunk + (size_t)((t - lo) * B * common->ldgx) * e;
                run_step(run, &st);
            }
        } else if (j + 1 < n_chunks) {
            int64_t next_lo, next_hi;
            block_steps(j + 1, C, T, run->dir, &next_lo, &next_hi);
            project_input(run, index - 1, count - 1, next_lo, next_hi,
                          ring + (size_t)((j + 1) % 2) * chunk_bytes, 1);
        }
        /* Chunk j's rows are read and chunk j+1's written before either
         * half of the ring is reused. */
        lf_barrier_wait(job->args->pool, index, count);
    }
}

static void run_direction(forward_job *job, int64_t layer, int64_t dir, const char *in, char *out,
                          int index, int count) {
    const lf_plan *p = job->plan;
    const lf_forward_args *a = job->args;
    const lf_workspace_layout *ws = job->ws;
    const lf_desc *d = &p->desc;
    const int64_t B = a->B, H = d->hidden_size, R = p->state_size;
    const int64_t D = d->num_directions, G = p->gates, NB = p->block, Hp = p->hidden_padded;
    const int64_t n_panels = Hp / NB, ld_out = D * R, slot = layer * D + dir;
    const size_t e = p->elem_size;
    const char *packed = lf_align_ptr((void *)a->packed[slot]);
    lf_packed_layout layout;
    lf_packed_layout_of(p, layer, &layout); /* cannot fail: lf_plan_init checked it */
    const int64_t I = layout.in_size;

    char *wbase = job->wbase;
    char *h_prev = wbase + ws->h_a, *h_next = wbase + ws->h_b;
    char *c = wbase + ws->c;
    char *m = d->proj_size > 0 ? wbase + ws->m : NULL;
    const size_t h_bytes = (size_t)(B * R) * e, c_bytes = (size_t)(B * H) * e;
    /* Variants: the kernels' general path reads these; NULL keeps the default one. */
    lf_cell_opts opts;
    if (p->generic) lf_cell_opts_of(p, dir, &opts);
    const int reset_before = (d->flags & LF_GRU_RESET_BEFORE_PRODUCT) != 0;

    /* The previous direction's last reads of the shared state are done. */
    lf_barrier_wait(job->args->pool, index, count);
    if (index == 0) {
        fill_state(h_prev, a->h0 ? (const char *)a->h0 + (size_t)slot * h_bytes : NULL, h_bytes);
        if (d->cell == LF_CELL_LSTM)
            fill_state(c, a->c0 ? (const char *)a->c0 + (size_t)slot * c_bytes : NULL, c_bytes);
        if (m) memset(m, 0, c_bytes); /* rows of ended sequences are projected too */
    }
    lf_barrier_wait(job->args->pool, index, count);

    /* The threads that share each step, and this one's panels. (A busy
     * pool runs the job on one thread, which then steps as usual.) */
    const int pipelined = job->pipelined && count > 1;
    const int step_index = pipelined ? 0 : index, step_count = pipelined ? 1 : count;
    int64_t p0 = 0, p1 = 0;
    if (step_index == index) share(n_panels, step_index, step_count, &p0, &p1);
    const int64_t ldgx = G * Hp;
    /* What every step of this layer-direction shares; each step sets its
     * time index, gx row, output row and (fused or ahead) input rows. */
    const lf_step_args common = {
        .cell = d->cell, .B = B, .H = H, .R = R, .n_panels = n_panels,
        .w_hh = packed + layout.w_hh, .ldgx = ldgx,
        .b_hn = d->cell == LF_CELL_GRU && !reset_before ? packed + layout.b_hn : NULL,
        .c = c, .m = m, .ldy = ld_out, .lengths = a->lengths,
        .panel_begin = p0, .panel_end = p1,
        .opts = p->generic ? &opts : NULL,
        .peephole = (d->flags & LF_LSTM_PEEPHOLE) ? packed + layout.peephole : NULL,
        .w_hn = reset_before ? packed + layout.w_hn : NULL,
        .rh = reset_before ? wbase + ws->gru_rh : NULL,
        .z = reset_before ? wbase + ws->gru_z : NULL,
        .parity = a->step_parity, .I = I, .product_done = ws->recurs_on_amx,
        .halves = lf_sums_in_halves(p, &layout),
        .gh = ws->recurs_on_amx && d->cell == LF_CELL_GRU ? wbase + ws->gru_gh : NULL,
        .ldgh = reset_before ? 2 * Hp : ldgx,
        .gh_n = ws->recurs_on_amx && reset_before
                    ? wbase + ws->gru_gh + (size_t)(B * 2 * Hp) * sizeof(float)
                    : NULL,
        .w_ih = packed + layout.w_ih, .bias = packed + layout.bias,
    };
    direction_run run = {
        .job = job, .layout = &layout, .packed = packed, .in = in, .out = out, .dir = dir,
        .index = step_index, .count = step_count, .h_prev = h_prev, .h_next = h_next,
    };
    if (pipelined) run_steps_pipelined(&run, &common, index, count);
    else if (ws->ahead_rows > 0) run_steps_projecting_ahead(&run, &common, ws->ahead_rows);
    else run_steps_in_chunks(&run, &common);
    h_prev = run.h_prev;
    if (index == 0) {
        memcpy((char *)a->h_n + (size_t)slot * h_bytes, h_prev, h_bytes);
        if (d->cell == LF_CELL_LSTM && a->c_n)
            memcpy((char *)a->c_n + (size_t)slot * c_bytes, c, c_bytes);
    }
}

static void forward_thread(void *arg, int index, int count) {
    forward_job *job = arg;
    const lf_desc *d = &job->plan->desc;
    const int64_t L = d->num_layers;
    const char *in = job->args->x;
    for (int64_t layer = 0; layer < L; ++layer) {
        char *out = ((L - 1 - layer) % 2 == 0) ? (char *)job->args->y
                                                : job->wbase + job->ws->between_layers;
        for (int64_t dir = 0; dir < d->num_directions; ++dir)
            run_direction(job, layer, dir, in, out, index, count);
        in = out;
    }
}

static int useful_threads(const lf_plan *p, int64_t B, int available, int requested) {
    const int64_t n_panels = p->hidden_padded / p->block;
    int64_t n = requested > 0 ? requested : lf_step_work(p, B) / LF_MIN_STEP_WORK_PER_THREAD;
    if (n > n_panels) n = n_panels;
    if (n > available) n = available;
    return n < 1 ? 1 : (int)n;
}

/* Also gives the byte sizes of h0/h_n and c0/c_n: with T = 0 nothing else
 * bounds them (the workspace covers one layer's rows, num_layers can be
 * 2^31), and they are copied whole. */
static lf_status check_args(const lf_plan *p, const lf_forward_args *a, lf_workspace_layout *ws,
                            size_t *h_bytes, size_t *c_bytes) {
    const lf_desc *d = &p->desc;
    if (a->T < 0 || a->B < 0 || a->threads < 0) return LF_ERR_BAD_DIMENSION;
    lf_status st = lf_workspace_layout_of(p, a->T, a->B, ws);
    if (st != LF_OK) return st;
    /* x is (T, B, I) and y (T, B, D*R); the offsets into them are int64
     * products, so their byte sizes must fit (for one layer the workspace
     * does not bound T). Then T*B*I < 2^62 and no offset overflows. */
    size_t feature_bytes, x_bytes, y_bytes; /* feature: one input or output value per (t, b) */
    if (!lf_mul((size_t)a->T, (size_t)a->B, &feature_bytes) ||
        !lf_mul(feature_bytes, p->elem_size, &feature_bytes) ||
        !lf_mul(feature_bytes, (size_t)d->input_size, &x_bytes) ||
        !lf_mul(feature_bytes, (size_t)(d->num_directions * p->state_size), &y_bytes))
        return LF_ERR_OVERFLOW;
    size_t state_rows; /* (layer, direction, batch row) triples */
    if (!lf_mul((size_t)(d->num_layers * d->num_directions), (size_t)a->B, &state_rows) ||
        !lf_mul(state_rows, p->elem_size, &state_rows) ||
        !lf_mul(state_rows, (size_t)p->state_size, h_bytes) ||
        !lf_mul(state_rows, (size_t)d->hidden_size, c_bytes))
        return LF_ERR_OVERFLOW;
    const int has_steps = a->T > 0 && a->B > 0;
    if (a->B > 0 && !a->h_n) return LF_ERR_NULL_POINTER;
    if (has_steps && (!a->x || !a->y || !a->packed || !a->workspace)) return LF_ERR_NULL_POINTER;
    if (d->cell != LF_CELL_LSTM && a->c0) return LF_ERR_BAD_CELL_KIND;
    if (has_steps && a->workspace_bytes < ws->total) return LF_ERR_BUFFER_TOO_SMALL;
    if (a->lengths)
        for (int64_t b = 0; b < a->B; ++b)
            if (a->lengths[b] < 0 || a->lengths[b] > a->T) return LF_ERR_BAD_LENGTH;
    if (has_steps)
        for (int64_t i = 0; i < d->num_layers * d->num_directions; ++i)
            if (!a->packed[i]) return LF_ERR_NULL_POINTER;
    return LF_OK;
}

lf_status lf_forward(const lf_plan *plan, const lf_forward_args *args) {
    if (!plan || !args) return LF_ERR_NULL_POINTER;
    lf_workspace_layout ws;
    size_t h_bytes, c_bytes;
    lf_status st = check_args(plan, args, &ws, &h_bytes, &c_bytes);
    if (st != LF_OK) return st;
    const lf_desc *d = &plan->desc;
    const int64_t B = args->B;

    if (args->T == 0 || B == 0) {
        /* Nothing runs: the final state is the initial state. */
        if (B > 0) fill_state(args->h_n, args->h0, h_bytes);
        if (B > 0 && d->cell == LF_CELL_LSTM && args->c_n) fill_state(args->c_n, args->c0, c_bytes);
        return LF_OK;
    }
    forward_job job = {.plan = plan, .args = args, .ws = &ws, .wbase = lf_align_ptr(args->workspace)};
    const int available = lf_pool_threads(args->pool);
    /* A requested thread count splits the steps, as documented. */
    job.pipelined = ws.pipeline_steps > 0 && available >= 2 && args->threads == 0;
    const int n = job.pipelined ? 2 : useful_threads(plan, B, available, args->threads);
    lf_pool_run(args->pool, n, forward_thread, &job);
    return LF_OK;
}
