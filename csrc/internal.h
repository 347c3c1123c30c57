/*
 * internal.h -- private to csrc/: checked size arithmetic, the kernel table
 * type shared by every ISA build, and the byte layouts that plan.c, pack.c
 * and grid.c must agree on (computed in exactly one place, plan.c).
 */
#ifndef LSTM_FAST_INTERNAL_H
#define LSTM_FAST_INTERNAL_H

#include <stdint.h>
#include <stddef.h>
#include <stdatomic.h>
#include "lstm_fast.h"

#if !defined(LF_HAVE_PTHREADS)
#if defined(__unix__) || defined(__APPLE__)
#define LF_HAVE_PTHREADS 1
#else
#define LF_HAVE_PTHREADS 0
#endif
#endif

#if defined(__GNUC__) || defined(__clang__)
#define LF_INLINE inline __attribute__((always_inline))
#define LF_HIDDEN __attribute__((visibility("hidden")))
#else
#define LF_INLINE inline
#define LF_HIDDEN
#endif

/* Every buffer the kernels read as whole vectors starts on a cache line. */
#define LF_ALIGN 64

/* ---- checked size arithmetic: 1 on success, 0 on overflow ------------- */
static inline int lf_mul(size_t a, size_t b, size_t *out) {
    return !__builtin_mul_overflow(a, b, out);
}
static inline int lf_add(size_t a, size_t b, size_t *out) {
    return !__builtin_add_overflow(a, b, out);
}
static inline int lf_round_up(size_t a, size_t multiple, size_t *out) {
    size_t t;
    if (!lf_add(a, multiple - 1, &t)) return 0;
    *out = t - t % multiple;
    return 1;
}

/* Layer l's input width: the network's input for layer 0, both directions
 * of the layer below for the others. */
static inline int64_t lf_layer_input_size(const lf_plan *p, int64_t layer) {
    return layer == 0 ? p->desc.input_size : p->desc.num_directions * p->state_size;
}

/* The widest and the narrowest input of any layer (all deeper layers have
 * the same). */
static inline int64_t lf_widest_input(const lf_plan *p) {
    const int64_t first = p->desc.input_size, last = lf_layer_input_size(p, p->desc.num_layers - 1);
    return first > last ? first : last;
}
static inline int64_t lf_narrowest_input(const lf_plan *p) {
    const int64_t first = p->desc.input_size, last = lf_layer_input_size(p, p->desc.num_layers - 1);
    return first < last ? first : last;
}

/* ---- how a forward shares its threads (grid.c decides, plan.c sizes gx) --
 * A step's work: B*R*G*Hp multiply-adds, saturating (any overflow means
 * "plenty of work"). */
static inline int64_t lf_step_work(const lf_plan *p, int64_t B) {
    int64_t work;
    if (__builtin_mul_overflow(B, p->state_size, &work) ||
        __builtin_mul_overflow(work, p->gates * p->hidden_padded, &work))
        return INT64_MAX;
    return work;
}

/* Below this many multiply-adds per step and thread, meeting at a barrier
 * every step costs more than the second thread saves. Two threads against
 * one, T=100 (Zen 4, one run of medians over 1000 calls, work per step in
 * parentheses): LSTM B=1 H=64 (16K) 0.71x the time, B=4 H=32 (16K) 0.94x,
 * B=2 H=32 (8K) 1.00x, B=1 H=48 (9K) 1.14x, H=32 (4K) 1.16x; GRU B=1 H=48
 * (7K) 0.86x, H=64 (12K) 0.93x: the crossover lies in 7-16K. */
#define LF_MIN_STEP_WORK_PER_THREAD ((int64_t)8 * 1024)

/* Within this much work per step, two threads pipeline instead (grid.c,
 * run_steps_pipelined): one runs every step, the other projects the next
 * LF_PIPELINE_STEPS steps' input, and they meet once per such chunk instead
 * of once per step. Against what the threads did before, one thread up to
 * 16K and the steps split over two from there (Intel VM, in-process A/B,
 * T=50, I=H, same bits; work per step in parentheses, K = 1024): LSTM B=2
 * H=32 (8K) 1.08x the time, B=1 H=48 (9K) 0.87x, H=64 (16K) 0.79x, H=80
 * (25K) 0.88x, H=96 (36K) 0.98x; GRU H=64 (12K) 0.81x, H=96 (27K) 0.92x.
 * Once the stepping thread read its gx from the L3 (project_input,
 * grid.c), the bounds rose (T=100, the pipeline's time over the split
 * steps'). A batch of one, to 48K: H=96 (36K) 0.97x (T=1000 0.94x), H=104
 * (45.5K) 1.00x, GRU H=112 (36.75K) 0.96x; from it on H=112 (49K)
 * 1.00-1.03x, H=128 (64K) 1.05-1.10x, GRU H=144 (60.75K) 1.03x: its split
 * steps each stream half of W_hh, which is what two cores' caches are for.
 * Larger batches, whose steps lean more on the FMAs, to 72K: B=2 H=64
 * (32K) 0.77-0.90x, H=80 (50K) 0.91-0.99x, B=3 H=64 (48K) 0.93-0.94x, B=4
 * H=64 (64K) 0.85-0.95x. From 72K on it depends on more than the work: at
 * 72K itself B=8 H=48 (36 KiB of W_hh) took 0.83-0.86x but B=2 H=96 (144
 * KiB) 0.91-1.11x over four runs, B=3 H=80 (75K) 0.93-1.03x; B=3 H=96
 * (108K) 1.06x, B=4 H=96 (144K) 1.06x, B=2 H=128 (128K) 1.21x. */
#define LF_PIPELINE_MIN_STEP_WORK ((int64_t)9 * 1024)
#define LF_PIPELINE_MAX_STEP_WORK_BATCH_ONE ((int64_t)48 * 1024)
#define LF_PIPELINE_MAX_STEP_WORK ((int64_t)72 * 1024) /* batches of two and more */
#define LF_PIPELINE_STEPS 8
/* ... and while no layer's input is wider than this many times the state:
 * the projecting thread then keeps up with the stepping one. LSTM B=1
 * H=64, T=50, 2 threads, the pipeline's time over the split steps': I=128
 * 0.71x, 256 0.87x, 512 1.12x, 1024 1.34x. */
#define LF_PIPELINE_MAX_INPUT_PER_STATE 4

/* Steps per chunk when a forward of T x B on two threads or more, with the
 * thread count left to the core (lf_forward_args.threads 0), pipelines (a
 * ring of two such chunks of gx); 0 when it never does. */
static inline int64_t lf_pipeline_steps(const lf_plan *p, int64_t T, int64_t B) {
    const int64_t work = lf_step_work(p, B);
    const int64_t most = B == 1 ? LF_PIPELINE_MAX_STEP_WORK_BATCH_ONE : LF_PIPELINE_MAX_STEP_WORK;
    return work >= LF_PIPELINE_MIN_STEP_WORK && work < most &&
                   lf_widest_input(p) <= LF_PIPELINE_MAX_INPUT_PER_STATE * p->state_size &&
                   T >= 2 * LF_PIPELINE_STEPS
               ? LF_PIPELINE_STEPS
               : 0;
}

static inline void *lf_align_ptr(void *p) {
    uintptr_t u = (uintptr_t)p;
    return (void *)((u + (LF_ALIGN - 1)) & ~(uintptr_t)(LF_ALIGN - 1));
}

/* ---- kernel arguments ---------------------------------------------------
 * Weights are packed into panels (pack.c): for a matrix W of shape (G*N, K)
 * in torch's layout, panel p holds hidden units [p*NB, p*NB+NB) of all G
 * gates (zero past N). One panel therefore yields every gate of NB hidden
 * units, so the cell update runs while the gate values are still in
 * registers. Two layouts inside a panel:
 *   recurrent (W_hh, W_hn): K rows of G*NB, gate-interleaved, so a step
 *     streams all gates of a row of k together:
 *       panel[p][k][g*NB + u]  = W[g*N + p*NB + u][k]
 *   projection (W_ih, W_hr; what the GEMM reads): one block per gate of
 *     LF_PROJECTION_ROWS(K) x NB (K rows, then one row of zeros), so a step
 *     that projects ahead, one gate at a time, streams contiguous rows
 *     instead of every G-th vector:
 *       panel[p][g][k][u]      = W[g*N + p*NB + u][k]
 *     Measured against gate-interleaved W_ih (Zen 4, in-process A/B, LSTM
 *     B=1, 1 thread): H=512 0.82-0.86x the time, H=64-256 and batch 16/64
 *     0.99-1.04x. Without the padding row, blocks K*NB values apart start
 *     a multiple of 4 KiB apart whenever K is a multiple of 64 (64-byte
 *     rows), so the GEMM's G streams share L1 sets: batch 64 was 1.01-1.04x.
 */
#define LF_PROJECTION_ROWS(K) ((K) + 1)
/* Where gate g's vector for row k of a panel lies in each layout:
 * k * k_stride + g * gate_stride. */
#define LF_RECURRENT_K_STRIDE(G, NB) ((G) * (NB))
#define LF_RECURRENT_GATE_STRIDE(NB) (NB)
#define LF_PROJECTION_K_STRIDE(NB) (NB)
#define LF_PROJECTION_GATE_STRIDE(K, NB) (LF_PROJECTION_ROWS(K) * (NB))
typedef struct lf_gemm_args {
    int64_t M, K;          /* rows of A, shared dimension */
    const void *A;         /* (M, K), row stride lda */
    int64_t lda;
    const void *panels;    /* n_panels projection panels (gate blocks of K rows) */
    int64_t n_panels;
    int64_t gates;         /* 1, 3 or 4 */
    const void *bias;      /* n_panels*gates*NB values in panel order, or NULL */
    void *C;               /* (M, ldc) */
    int64_t ldc;
    int64_t n_cols;        /* store only columns [0, n_cols) of the panel order */
    const void *tiles;     /* AMX kernels (lf_kernels.amx_split_rows): the same
                              panels as AMX tiles (packed by pack.c), or NULL (then
                              the FMA GEMM, as for the LSTMP projection) */
    const void *a_split;   /* with tiles: A's rows as AMX tiles of their terms,
                              split by amx_split_rows */
    int accumulate;        /* with tiles: C += A @ panels (C holds the start; no bias) */
} lf_gemm_args;

/* The AMX layouts (kernels_amx.c). Projection panels: for column tile c
 * (NB = 16 columns: gate c % G of panel c / G) and block j of 32 rows of K
 * (zero past K), LF_AMX_TERMS tiles of 16 x 64 bytes, the bfloat16 terms
 * hi, mid, lo of each weight (w = hi + mid + lo to float32's precision),
 * row i holding rows 2i and 2i+1 of K interleaved per column, as
 * TDPBF16PS reads its second operand; tile (c, j, term) at
 * ((c * LF_AMX_K_BLOCKS(K) + j) * LF_AMX_TERMS + term) * LF_AMX_TILE_BYTES.
 * The rows of A (a_split) alike, 16 rows a tile, each row 32 values of K:
 * tile (row tile, j, term) at the same offset. */
#define LF_AMX_TILE_BYTES 1024
#define LF_AMX_TERMS 3
#define LF_AMX_K_BLOCK 32
#define LF_AMX_K_BLOCKS(K) (((K) + LF_AMX_K_BLOCK - 1) / LF_AMX_K_BLOCK)
/* Bytes of one column tile's (or row tile's) terms over all of K. */
#define LF_AMX_STRIP_BYTES(K) ((size_t)LF_AMX_K_BLOCKS(K) * LF_AMX_TERMS * LF_AMX_TILE_BYTES)

/* A plan's variant options for one direction, with every LF_ACT_DEFAULT
 * resolved to the cell's own function, so the kernels never look at the
 * cell kind to pick an activation. */
typedef struct lf_cell_opts {
    unsigned flags;
    double clip;                          /* 0: none */
    lf_activation_spec act[LF_ROLES];
} lf_cell_opts;

LF_HIDDEN void lf_cell_opts_of(const lf_plan *plan, int64_t direction, lf_cell_opts *out);

/* One time step of one layer-direction for rows [0, B) of the batch. */
typedef struct lf_step_args {
    lf_cell_kind cell;
    int64_t B, H, R;       /* R = K of the recurrent product */
    int64_t n_panels;      /* ceil(H / NB) */
    const void *w_hh;      /* recurrent panels, K = R */
    const void *gx;        /* (B, ldgx) input projection incl. biases, panel order */
    int64_t ldgx;          /* G*Hp */
    const void *b_hn;      /* GRU: (Hp) recurrent bias of the n gate; NULL otherwise */
    const void *h_prev;    /* (B, R) */
    void *h_next;          /* (B, R); LSTMP: written by the projection, not here */
    void *c;               /* (B, H) LSTM cell state, updated in place */
    void *m;               /* LSTMP: (B, H) o*tanh(c) before projection; else NULL */
    void *y;               /* output row of batch 0 at this step; NULL with LSTMP */
    int64_t ldy;           /* stride between batch rows of y */
    const int64_t *lengths;/* (B) sequence lengths, or NULL when all run T steps */
    int64_t t;             /* this step's time index: row b runs iff t < lengths[b] */
    int64_t panel_begin, panel_end; /* the panels (hidden-unit blocks) this call updates */
    /* Variants; all NULL unless plan->generic. */
    const lf_cell_opts *opts;    /* non-NULL selects the kernels' general path */
    const void *peephole;        /* LSTM peephole: n_panels x (3*NB) p_i, p_f, p_o */
    const void *w_hn;            /* GRU reset-before: 1-gate panels of W_hn, K = R;
                                    w_hh then holds 2-gate (r, z) panels */
    void *rh;                    /* GRU reset-before scratch: (B, R) r * h_prev */
    void *z;                     /* GRU reset-before scratch: (B, Hp) update gate */
    int phase;                   /* GRU reset-before: 1 gates, 2 update; every thread
                                    finishes phase 1 (a barrier) before any starts 2 */
    unsigned parity;             /* lf_step_panel's order is that of t + parity */
    int halves;                  /* sum the recurrent product in two halves of R
                                    (lf_sums_in_halves; kernel_body.h) */
    /* A chunk of one step (one step per call): instead of gx, the step adds
     * bias + x @ W_ih itself, panel by panel. NULL x: gx holds them. Not for
     * the GRU, whose n gate keeps the input part apart. */
    const void *x;               /* (B, I) this step's input rows */
    int64_t I;
    const void *w_ih;            /* input projection panels, K = I */
    const void *bias;            /* n_panels*G*NB, panel order */
    /* Projecting ahead (a batch of one, grid.c): the step also carries a
     * share of the input projection of the S = kernels->ahead_rows[G] rows
     * ahead_x[0..S) (stride I; rows from ahead_valid on repeat row 0, and
     * their results are never read): gate ahead_gate over rows
     * [ahead_k0, ahead_k1) of W_ih, on its own panels, on top of the partial
     * sums in rows [0, S) of ahead_gx (stride ldgx; the bias when ahead_k0
     * is 0). NULL ahead_x: none. */
    const void *ahead_x;
    int64_t ahead_valid, ahead_k0, ahead_k1;
    int ahead_gate;
    void *ahead_gx;
    /* h_prev @ W_hh is already summed (on the AMX tiles, grid.c), so the
     * step only updates the cells: into gx, or for the GRU into gh (stride
     * ldgh, gx's columns), since its n gate keeps the recurrent sum apart
     * from the input's. The reset-before GRU: gh holds h_prev @ W_rz in its
     * (r, z) panels' columns, gh_n (stride n_panels * NB) (r*h) @ W_hn. */
    int product_done;
    const void *gh, *gh_n;
    int64_t ldgh;
} lf_step_args;

typedef void (*lf_gemm_fn)(const lf_gemm_args *);
typedef void (*lf_step_fn)(const lf_step_args *);
typedef void (*lf_map_fn)(const void *x, void *y, int64_t n);
/* Row tiles [tile0, tile1) of A (M x K float32, stride lda) into `out` as
 * a_split (above). */
typedef void (*lf_split_fn)(const void *A, int64_t lda, int64_t M, int64_t K, int64_t tile0,
                            int64_t tile1, void *out);

/* One table per ISA, read-only, defined in kernels/kernels_<isa>.c. */
typedef struct lf_kernels {
    lf_isa isa;
    int64_t block[2];            /* NB per dtype: elements per vector */
    lf_gemm_fn gemm[2];          /* index: lf_dtype */
    lf_step_fn step[2];
    lf_map_fn sigmoid[2];
    lf_map_fn tanh[2];
    int ahead_rows[5];           /* index: gates; S of lf_step_args' ahead_x, a multiple of G */
    /* Non-NULL on AMX: in calls on the tiles (lf_call_uses_amx), gemm[float32]
     * reads AMX tiles (lf_gemm_args.tiles, a_split, split by this) for every
     * input projection, which the steps then never compute themselves (not
     * ahead, not in one-step chunks), and with lf_call_recurs_on_amx for
     * every recurrent product too (grid.c, recur_on_amx). */
    lf_split_fn amx_split_rows;
} lf_kernels;

LF_HIDDEN const lf_kernels *lf_kernels_for(lf_isa isa);
LF_HIDDEN const lf_kernels *lf_kernels_for_dtype(lf_isa isa, lf_dtype dtype);

/* A call projects its input on AMX tiles (kernels with amx_split_rows),
 * every chunk of every layer of it, so that its bits do not depend on the
 * thread count, when it has LF_AMX_MIN_ROWS rows (T x B) or more and each
 * layer's projection LF_AMX_MIN_WORK multiply-adds per row or more. Fewer
 * rows: a tile multiplies 16 rows in the time of one, and its six products
 * per value (kernels_amx.c) made a stream's step at batch one (I=H=256)
 * 34 us where the FMA product takes 5; and a core that ran vector FMAs for
 * more than about 10 us stalls some 3.5 us on its first tile product (the
 * Intel VM; bench/RESULTS.md), which a small call pays every time. From
 * 16 rows to 31 the FMA paths still won (I=H=256, 1 / 2 threads, T x B:
 * 1x16, 1x24, 2x8, 8x2, 16x1 1.04-1.10x / 1.05-1.13x the time on the
 * tiles, 1x28 1.03x; I=H=512 16x1 1.00x); at 32, 1x32 0.77-0.84x /
 * 0.88x, 4x8 0.88x / 0.96x, 32x1 0.89x / 1.06x. Less work: the FMA paths win (Intel
 * VM, Python-level A/B of the amx ISA against avx512, T=100, 1 / 2
 * threads, work per row in parentheses): I=H=64 (16K) B=2-8 0.97-1.02x /
 * 1.04-1.06x the time, B=1 T=50 0.93x / 1.35x (the pipeline); I=H=128
 * (64K) B=1 T=1000 1.02x / 1.08x; from GRU I=H=256 (192K) B=1 on,
 * 0.93x / 1.01x, LSTM (256K) B=1-16 0.85-0.90x, B=64 I=H=512 (1M) 0.83x. */
#define LF_AMX_MIN_ROWS 32
/* (This bound and LF_AMX_MIN_RECURRENT_BATCH below may be set with -D,
 * for A/B builds.) */
#ifndef LF_AMX_MIN_WORK
#define LF_AMX_MIN_WORK ((int64_t)128 * 1024)
#endif
static inline int lf_call_uses_amx(const lf_plan *p, int64_t T, int64_t B) {
    if (!((const lf_kernels *)p->kernels)->amx_split_rows || B <= 0 ||
        T < (LF_AMX_MIN_ROWS + B - 1) / B)
        return 0;
    const int64_t columns = p->gates * p->hidden_padded; /* <= 4 * 2^31: no overflow below */
    return lf_narrowest_input(p) >= (LF_AMX_MIN_WORK + columns - 1) / columns;
}

/* Such a call's recurrent products go to the tiles as well from a batch of
 * LF_AMX_MIN_RECURRENT_BATCH on, when the product is as large: then a
 * sequence's bits also depend on whether its batch reaches it. (The GRU
 * with the reset before the product takes two tile products a step: h @
 * W_rz, then (r*h) @ W_hn.)
 * Against the FMA step (Intel VM, in-process A/B, LSTM, 1 / 2 threads):
 * B=64 I=H=512 0.78x / 0.82x the time, B=32 H=256 0.86x / 0.89x, B=24
 * 1.24x on two threads (a partial second row tile, and one more barrier a
 * step), B=16 0.98-1.00x; GRU (its sums in gh, added by the step) B=64
 * I=H=512 0.82x / 0.87x, B=32 H=256 0.90x / 0.90x, B=128 H=256 0.86x /
 * 0.92x; reset-before GRU (two products, one more barrier a step) B=64
 * I=H=512 0.81x / 0.90x, B=32 H=256 0.85x / 1.00x, B=128 H=256 0.87x /
 * 0.95x. */
#ifndef LF_AMX_MIN_RECURRENT_BATCH
#define LF_AMX_MIN_RECURRENT_BATCH 32
#endif
static inline int lf_call_recurs_on_amx(const lf_plan *p, int64_t T, int64_t B) {
    const int64_t columns = p->gates * p->hidden_padded;
    return B >= LF_AMX_MIN_RECURRENT_BATCH && lf_call_uses_amx(p, T, B) &&
           p->state_size >= (LF_AMX_MIN_WORK + columns - 1) / columns;
}

/* One rule for plan.c (which then allocates no gx) and grid.c (which then
 * has the step project x itself): a one-step chunk fuses the input
 * projection into the step, except for the GRU, whose n gate keeps its
 * input part apart from the recurrent one, and in calls on AMX, whose
 * every input row goes through the tiles. */
static inline int lf_chunk_fuses_input(const lf_plan *p, int on_amx, int64_t chunk_steps) {
    return chunk_steps == 1 && p->desc.cell != LF_CELL_GRU && !on_amx;
}

/* ---- threads (pool.c) ---------------------------------------------------- */
/* Runs fn(arg, index, n) on n <= n_wanted threads, the caller being index 0,
 * and returns when all are done. */
typedef void (*lf_job_fn)(void *arg, int index, int n);
LF_HIDDEN void lf_pool_run(lf_pool *pool, int n_wanted, lf_job_fn fn, void *arg);

/* The barrier of the job the pool runs: thread `index` of the job's n waits
 * until all n have called it as often (any number of times per job). n = 1
 * (and so a NULL pool) returns at once. */
LF_HIDDEN void lf_barrier_wait(lf_pool *pool, int index, int n);

/* Hints that the lines of [p, p + bytes), which this core just wrote and
 * another core reads next, move from this core's caches to the shared one:
 * the reader's miss is then served by the L3 rather than by a snoop into
 * this core's L2. x86's CLDEMOTE, spelled as bytes for assemblers that
 * predate it; its opcode lies in the hint-NOP space, so CPUs without it
 * (and valgrind) run it as a NOP. Elsewhere nothing. */
static inline void lf_demote(const void *p, size_t bytes) {
#if defined(__x86_64__) && !defined(__ILP32__) /* x32's pointers fill only %edi */
    if (bytes == 0) return; /* else the line holding p would go */
    const uintptr_t first = (uintptr_t)p & ~(uintptr_t)(LF_ALIGN - 1);
    for (uintptr_t line = first; line < (uintptr_t)p + bytes; line += LF_ALIGN)
        __asm__ volatile(".byte 0x0f, 0x1c, 0x07" /* cldemote (%rdi) */ ::"D"(line) : "memory");
#else
    (void)p;
    (void)bytes;
#endif
}
LF_HIDDEN int lf_cpu_supports(lf_isa isa);
/* Bytes of the largest cache that streams to one core at about the rate of
 * its L2: the L2, or on AMD's Zen the L3 (cpu_features.c); 0 if unknown. */
LF_HIDDEN int64_t lf_cpu_stream_cache_bytes(void);

/* ---- layouts ------------------------------------------------------------ */
/* Byte offsets inside one layer-direction's packed buffer, relative to its
 * first LF_ALIGN-aligned address. */
typedef struct lf_packed_layout {
    int64_t in_size;       /* I_l */
    size_t w_ih, w_hh, bias, b_hn, w_hr; /* offsets; b_hn/w_hr unused unless GRU/LSTMP */
    size_t peephole, w_hn; /* unused unless LF_LSTM_PEEPHOLE / LF_GRU_RESET_BEFORE_PRODUCT */
    size_t w_ih_tiles, w_hh_tiles; /* AMX kernels only (LF_AMX_*); for the
                                      reset-before GRU, W_hh's (r, z) panels'
                                      tiles, then from w_hn_tiles its n panels' */
    size_t w_hn_tiles;
    size_t total;          /* bytes including alignment slack */
} lf_packed_layout;

LF_HIDDEN lf_status lf_packed_layout_of(const lf_plan *plan, int64_t layer, lf_packed_layout *out);

/* An LSTM's or GRU's steps (3- or 4-gate panels: not the reset-before
 * GRU's) sum their recurrent product in halves (lf_step_args.halves) while
 * the packed W_hh takes at most this many bytes: within a few times the
 * L1, where the halves' alternating order lets a step start on the weights
 * the L1 kept (a batch of one, Intel VM, 1 thread, in-process: T=50 I=H=64,
 * 64 KiB, 0.93-0.95x the time). Larger layers gain little at a batch of one
 * (H=128, 256 KiB, T=1000: 0.96x; H=256: 1.00-1.01x) and lose where a tile
 * holds several rows, which must park one half's sums in memory (B=2 H=128
 * 1.04x, B=4-16 H=256 1.02x). Decided per network, never per call: a row's
 * bits do not depend on its batch or the thread count. */
#define LF_HALVES_MAX_W_HH_BYTES ((size_t)128 * 1024)

static inline int lf_sums_in_halves(const lf_plan *p, const lf_packed_layout *layout) {
    return p->gates >= 3 && !(p->desc.flags & LF_GRU_RESET_BEFORE_PRODUCT) &&
           layout->bias - layout->w_hh <= LF_HALVES_MAX_W_HH_BYTES;
}

typedef struct lf_workspace_layout {
    int on_amx;            /* lf_call_uses_amx */
    int recurs_on_amx;     /* lf_call_recurs_on_amx */
    int64_t chunk_steps;   /* time steps per input-projection chunk */
    int64_t ahead_rows;    /* > 0: B = 1 projects ahead in blocks of this many
                              steps (grid.c), gx a ring of two blocks */
    int64_t pipeline_steps;/* > 0: on two threads or more (threads 0), the forward
                              pipelines in chunks of this many steps, gx a ring of two */
    size_t gx, between_layers, h_a, h_b, c, m;
    size_t gru_rh, gru_z;  /* LF_GRU_RESET_BEFORE_PRODUCT only */
    size_t x_split;        /* on_amx only: one projection's rows of input, split */
    size_t h_split;        /* recurs_on_amx only: h_prev, split */
    size_t gru_gh;         /* recurs_on_amx GRU only: h_prev @ W_hh (lf_step_args.gh,
                              and gh_n after B x 2Hp values for the reset-before GRU) */
    size_t total;
} lf_workspace_layout;

LF_HIDDEN lf_status lf_workspace_layout_of(const lf_plan *plan, int64_t T, int64_t B,
                                           lf_workspace_layout *out);

#endif /* LSTM_FAST_INTERNAL_H */
