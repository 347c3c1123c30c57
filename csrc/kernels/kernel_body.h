/*
 * kernel_body.h -- the kernels, written once for one element type and one
 * ISA. kernel_isa.h includes it twice (float, double) per ISA, defining:
 *   REAL      element type          VEC   its SIMD vector type
 *   NB        elements per VEC      F(x)  x with a per-dtype suffix
 *   VSIGMOID / VTANH / VRELU        vector activations (vector_math.h)
 *   LF_STEP_ROWS(G)  batch rows per register tile of the step for G gate
 *             vectors (per ISA: what fits the register file), at most LF_MR
 *   LF_GEMM_ROWS(G), LF_GEMM_MR_MAX   the same for the GEMM
 *
 * Two kernels:
 *   gemm  C = A @ panels (+ bias): the input projection of a whole chunk of
 *         time steps, and the LSTMP projection.
 *   step  one recurrent step: gates = gx + h_prev @ W_hh, then the cell
 *         update on the same register tile (the fused "post-GEMM"). A batch
 *         of one may also carry a slice of the next steps' input projection
 *         in the same k loop (step_tile_ahead, on ISAs with LF_AHEAD_Q).
 * Register tiles are up to LF_MR batch rows x one panel (G gates x NB hidden
 * units), or, for a batch of one, one row x LF_ROW_PANELS panels (with the
 * projection's rows of each when projecting ahead). Tile shape
 * parameters are compile-time constants at every call (switches below), so
 * the accumulator arrays live in registers.
 */

static LF_INLINE VEC F(load)(const REAL *p) {
    VEC v;
    memcpy(&v, p, sizeof v);
    return v;
}

static LF_INLINE void F(store)(REAL *p, VEC v) { memcpy(p, &v, sizeof v); }

/* The first n lanes; the hidden width need not be a multiple of NB. */
static LF_INLINE VEC F(load_n)(const REAL *p, int64_t n) {
    if (n == NB) return F(load)(p);
    VEC v = {0};
    memcpy(&v, p, (size_t)n * sizeof(REAL));
    return v;
}

static LF_INLINE void F(store_n)(REAL *p, VEC v, int64_t n) {
    if (n == NB) F(store)(p, v);
    else memcpy(p, &v, (size_t)n * sizeof(REAL));
}

/* `a - 0` rather than `0 + a`: a - (+0) == a for every a (signed zeros and
 * NaN included), so the compiler folds it to one broadcast even without
 * -ffast-math; `0 + a` maps -0 to +0 and costs an addition per use. */
static LF_INLINE VEC F(splat)(REAL a) {
    const VEC zero = {0};
    return a - zero;
}

/* Panel rows ahead that a tile of several rows asks the cache for: the
 * panel streams from L2 (or L3) faster than the hardware prefetcher alone
 * brings it into L1 (6-9% faster for 6-row tiles at K=512, 11% for 2 rows).
 * A one-row tile is bound by the stream itself and only loses the
 * prefetches' issue slots (7% slower). */
#define LF_PREFETCH_ROWS 16
#define LF_PREFETCH_MIN_TILE_ROWS 2

/* A register tile is `rows` batch rows x NP panels, one of the two being 1:
 * several rows share each weight vector loaded, and a lone row (batch 1)
 * takes LF_ROW_PANELS panels instead. One row on one panel has only G
 * accumulator chains: too few to cover the FMA latency when the panel sits
 * in L1 or L2, and too few loads in flight when it streams from L3.
 * Measured against one panel per tile, 1 thread: tiny layer (H=64) 0.93x
 * the time, T=1000 H=128 0.95x, H=256 0.91x, GRU H=256 0.91x, H=512 0.98x;
 * four panels per tile lost to two at H<=256. Accumulator acc[r * NP + j]
 * belongs to row r and panel j. */
#define LF_ROW_PANELS 2
_Static_assert(LF_ROW_PANELS <= LF_MR, "a lone row's tile holds LF_ROW_PANELS accumulator rows");

/* The (k_stride, gate_stride) argument pair of the two panel layouts (internal.h). */
#define LF_RECURRENT_PANEL(G) LF_RECURRENT_K_STRIDE(G, NB), LF_RECURRENT_GATE_STRIDE(NB)
#define LF_PROJECTION_PANEL(K) LF_PROJECTION_K_STRIDE(NB), LF_PROJECTION_GATE_STRIDE(K, NB)

/* accumulate over k in [k_begin, k_end), asking the cache for the row
 * LF_PREFETCH_ROWS ahead when `prefetch`. */
static LF_INLINE void F(accumulate_rows)(const int rows, const int NP, const int G,
                                         int64_t k_begin, int64_t k_end, const int prefetch,
                                         const REAL *A, int64_t lda, const REAL *const *panel,
                                         const int64_t k_stride, const int64_t gate_stride,
                                         VEC acc[][4]) {
    for (int64_t k = k_begin; k < k_end; ++k) {
        VEC wv[LF_ROW_PANELS][4];
#pragma GCC unroll 2
        for (int j = 0; j < NP; ++j) {
            const REAL *w = panel[j] + k * k_stride;
#pragma GCC unroll 4
            for (int g = 0; g < G; ++g) wv[j][g] = F(load)(w + g * gate_stride);
            if (prefetch) {
#pragma GCC unroll 4
                for (int g = 0; g < G; ++g)
                    __builtin_prefetch(w + LF_PREFETCH_ROWS * k_stride + g * gate_stride, 0, 3);
            }
        }
#pragma GCC unroll 8
        for (int r = 0; r < rows; ++r) {
            const VEC a = F(splat)(A[r * lda + k]);
#pragma GCC unroll 2
            for (int j = 0; j < NP; ++j)
#pragma GCC unroll 4
                for (int g = 0; g < G; ++g) acc[r * NP + j][g] += a * wv[j][g];
        }
    }
}

/* acc[r*NP + j][g] += sum_k A[r][k] * (gate g's vector of row k of panel j)
 * over k in [k_begin, k_end) of a panel of K rows. Each accumulator is one
 * chain over k in order, whatever the tile's shape or the panel layout: a
 * value's bits do not depend on the rows or panels it was tiled with. The
 * panel's last LF_PREFETCH_ROWS rows prefetch nothing: a pointer past the
 * panel (past the packed buffer, for the last one) is undefined even if
 * never dereferenced. (Aiming those prefetches at the last row instead, a
 * select per k, took 1.03-1.05x the time at B=16-64.) */
static LF_INLINE void F(accumulate_range)(const int rows, const int NP, const int G,
                                          int64_t k_begin, int64_t k_end, int64_t K,
                                          const REAL *A, int64_t lda, const REAL *const *panel,
                                          const int64_t k_stride, const int64_t gate_stride,
                                          VEC acc[][4]) {
    int64_t prefetched = rows >= LF_PREFETCH_MIN_TILE_ROWS && K > LF_PREFETCH_ROWS
                             ? K - LF_PREFETCH_ROWS
                             : 0;
    prefetched = prefetched < k_begin ? k_begin : prefetched > k_end ? k_end : prefetched;
    F(accumulate_rows)(rows, NP, G, k_begin, prefetched, 1, A, lda, panel, k_stride, gate_stride,
                       acc);
    F(accumulate_rows)(rows, NP, G, prefetched, k_end, 0, A, lda, panel, k_stride, gate_stride,
                       acc);
}

/* accumulate_range over the whole panel. */
static LF_INLINE void F(accumulate)(const int rows, const int NP, const int G, int64_t K,
                                    const REAL *A, int64_t lda, const REAL *const *panel,
                                    const int64_t k_stride, const int64_t gate_stride,
                                    VEC acc[][4]) {
    F(accumulate_range)(rows, NP, G, 0, K, K, A, lda, panel, k_stride, gate_stride, acc);
}

/* Each FMA waits ~4 cycles for the previous one into the same register, so
 * a tile with fewer than LF_MIN_CHAINS accumulators (rows x gates) leaves
 * the FMA pipes idle, unless, as with 3 or 4 gates, loading the panel's G
 * vectors per k from L2 takes as long anyway. Measured with one gate (plain
 * RNN): B=1 0.62x, B=2 0.45x, B=4 0.91-0.97x the time, but B=3 1.04-1.13x
 * (k steps of 3 or 2 over 9 or 6 chains); with 3 or 4 gates at B=1 or 2 no
 * better than 0.96-1.05x. So only 1, 2 or 4 chains of 1 or 2 gates split. */
#define LF_MIN_CHAINS 8

/* accumulate for such a short tile (rows x G <= LF_MIN_CHAINS / 2):
 * consecutive k go round robin to S partial sums per accumulator, added in
 * a fixed order at the end. So the bits depend on K and on the tile height,
 * which follows from the batch size and a row's place in the batch (a plain
 * RNN row can differ in the last bit at B=1 and B=4), never on the thread
 * count: threads split panels, and every thread tiles the whole batch. */
static LF_INLINE void F(accumulate_short)(const int rows, const int G, int64_t K, const REAL *A,
                                          int64_t lda, const REAL *panel, VEC acc[][4]) {
    const int S = LF_MIN_CHAINS / (rows * G);
    if (S < 2) { /* nothing to split (and S = 0 would never advance k) */
        F(accumulate)(rows, 1, G, K, A, lda, &panel, LF_RECURRENT_PANEL(G), acc);
        return;
    }
    VEC part[LF_MIN_CHAINS][LF_MIN_CHAINS / 2][4];
    /* -0, not +0: the additive identity for every value, -0 included. */
    const VEC identity = F(splat)((REAL)-0.0);
#pragma GCC unroll 8
    for (int j = 0; j < S; ++j)
#pragma GCC unroll 8
        for (int r = 0; r < rows; ++r)
#pragma GCC unroll 4
            for (int g = 0; g < G; ++g) part[j][r][g] = j == 0 ? acc[r][g] : identity;
    int64_t k = 0;
    for (; k + S <= K; k += S) {
#pragma GCC unroll 8
        for (int j = 0; j < S; ++j) {
            const REAL *w = panel + (k + j) * G * NB;
#pragma GCC unroll 8
            for (int r = 0; r < rows; ++r) {
                const VEC a = F(splat)(A[r * lda + k + j]);
#pragma GCC unroll 4
                for (int g = 0; g < G; ++g) part[j][r][g] += a * F(load)(w + g * NB);
            }
        }
    }
    for (; k < K; ++k) {
        const REAL *w = panel + k * G * NB;
#pragma GCC unroll 8
        for (int r = 0; r < rows; ++r) {
            const VEC a = F(splat)(A[r * lda + k]);
#pragma GCC unroll 4
            for (int g = 0; g < G; ++g) part[0][r][g] += a * F(load)(w + g * NB);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < rows; ++r)
#pragma GCC unroll 4
        for (int g = 0; g < G; ++g) {
            VEC sum = part[0][r][g];
#pragma GCC unroll 8
            for (int j = 1; j < S; ++j) sum += part[j][r][g];
            acc[r][g] = sum;
        }
}

/* A step of a small LSTM or GRU (lf_step_args.halves) sums its recurrent
 * product in two halves of K, each one chain per accumulator in k order,
 * the lower half on top of gx and the upper from -0, added lower + upper:
 * the same bits whichever half runs first, and whatever the tile. Steps
 * alternate that order, as they do the panels' (lf_step_panel), so each
 * step walks W_hh in exactly the reverse of the last one's order and starts
 * on the weights the cache kept: a W_hh a little over the L1 (64 KiB at
 * H=64, in 48 KiB) then misses ~16 KiB a step instead of ~32. */
static LF_INLINE int F(upper_half_first)(const lf_step_args *s) {
    return ((uint64_t)s->t + s->parity) & 1;
}

static LF_INLINE void F(accumulate_halves)(const int rows, const int NP, const int G, int64_t K,
                                           const REAL *A, int64_t lda, const REAL *const *panel,
                                           const int upper_first, VEC acc[][4]) {
    const int64_t half = K / 2;
    const int n = rows * NP;
    /* What waits while the other half runs goes through memory: as a second
     * set of accumulators GCC spilled it inside the loops (B=4 1.17x the
     * time, B=16 1.06x). The empty asm takes its address, so it stays there. */
    VEC parked[LF_MR][4];
    __asm__ volatile("" : : "r"(parked) : "memory");
#define LF_PARK_EACH(stmt)                                                    \
    _Pragma("GCC unroll 8") for (int i = 0; i < n; ++i)                       \
        _Pragma("GCC unroll 4") for (int g = 0; g < G; ++g) { stmt; }
    const VEC identity = F(splat)((REAL)-0.0); /* the additive identity, -0 included */
    if (upper_first) {
        LF_PARK_EACH(parked[i][g] = acc[i][g]; acc[i][g] = identity)
        __asm__ volatile("" : : : "memory");
        F(accumulate_range)(rows, NP, G, half, K, K, A, lda, panel, LF_RECURRENT_PANEL(G), acc);
        LF_PARK_EACH(const VEC start = parked[i][g]; parked[i][g] = acc[i][g]; acc[i][g] = start)
        __asm__ volatile("" : : : "memory");
        F(accumulate_range)(rows, NP, G, 0, half, K, A, lda, panel, LF_RECURRENT_PANEL(G), acc);
    } else {
        F(accumulate_range)(rows, NP, G, 0, half, K, A, lda, panel, LF_RECURRENT_PANEL(G), acc);
        LF_PARK_EACH(parked[i][g] = acc[i][g]; acc[i][g] = identity)
        __asm__ volatile("" : : : "memory");
        F(accumulate_range)(rows, NP, G, half, K, K, A, lda, panel, LF_RECURRENT_PANEL(G), acc);
        LF_PARK_EACH(const VEC upper = acc[i][g]; acc[i][g] = parked[i][g]; parked[i][g] = upper)
        __asm__ volatile("" : : : "memory");
    }
    /* The lower half in acc, the upper parked, in either order: one addition,
     * so even a NaN's payload (x86 keeps the first operand's) is the same. */
    LF_PARK_EACH(acc[i][g] = acc[i][g] + parked[i][g])
#undef LF_PARK_EACH
}

/* The step's recurrent product: in halves (above) when asked for 3 or 4
 * gates, in split sums for short tiles of 1 or 2 gates. (The input
 * projection keeps accumulate's one chain per accumulator: the GEMM and the
 * step's fused projection must give the same bits whatever their tiles.) */
static LF_INLINE void F(accumulate_recurrent)(const int rows, const int NP, const int G,
                                              int64_t K, const REAL *A, int64_t lda,
                                              const REAL *const *panel, const int halves,
                                              const int upper_first, VEC acc[][4]) {
    if (G >= 3 && halves)
        F(accumulate_halves)(rows, NP, G, K, A, lda, panel, upper_first, acc);
    else if (NP == 1 && G <= 2 && (rows * G == 1 || rows * G == 2 || rows * G == 4))
        F(accumulate_short)(rows, G, K, A, lda, panel[0], acc);
    else
        F(accumulate)(rows, NP, G, K, A, lda, panel, LF_RECURRENT_PANEL(G), acc);
}

/* Expands CALL(n) for the remaining-rows count n in 1..LF_MR, the tallest
 * step tile. The CALLs test n <= MR (the tile height for their gate count):
 * without the test GCC compiles the taller, never-taken tiles too. */
#define LF_ROW_SWITCH(rows, CALL) LF_ROW_SWITCH_TO(LF_MR, rows, CALL)

/* A panel this small stays in L1 from a block's first row tile to its
 * last, so the GEMM asks the cache for nothing ahead: the prefetches would
 * only take load slots. Intel VM, one thread, GEMM of M=50-600 rows:
 * K=64 (16 KiB panels) 0.93x the time without them, K=128 0.92-0.97x.
 * (Larger panels stream from L2 and keep them: 6-9% faster at K=512 on
 * Zen 4, though 0.97-0.98x the time without on the Intel VM.) */
#define LF_GEMM_PREFETCH_MIN_PANEL_BYTES ((int64_t)32 * 1024)

/* One register tile of C = bias + A @ panel. The step's fused input
 * projection (step_tile with s->x) computes the same sums in the same
 * order, so the two paths give the same bits. */
static LF_INLINE void F(gemm_tile)(const int rows, const int G, const lf_gemm_args *g,
                                   int64_t r0, int64_t p) {
    const int64_t PW = G * NB;
    const REAL *bias = g->bias ? (const REAL *)g->bias + p * PW : NULL;
    const REAL *panel = (const REAL *)g->panels + p * LF_PROJECTION_ROWS(g->K) * PW;
    VEC acc[LF_GEMM_MR_MAX][4];
    for (int r = 0; r < rows; ++r)
        for (int gg = 0; gg < G; ++gg) acc[r][gg] = bias ? F(load)(bias + gg * NB) : F(splat)(0);
    const REAL *A = (const REAL *)g->A + r0 * g->lda;
    if (LF_PROJECTION_ROWS(g->K) * PW * (int64_t)sizeof(REAL) <= LF_GEMM_PREFETCH_MIN_PANEL_BYTES)
        F(accumulate_rows)(rows, 1, G, 0, g->K, 0, A, g->lda, &panel, LF_PROJECTION_PANEL(g->K),
                           acc);
    else
        F(accumulate)(rows, 1, G, g->K, A, g->lda, &panel, LF_PROJECTION_PANEL(g->K), acc);
    for (int r = 0; r < rows; ++r) {
        REAL *c = (REAL *)g->C + (r0 + r) * g->ldc;
        for (int gg = 0; gg < G; ++gg) {
            const int64_t col = p * PW + gg * NB, n = g->n_cols - col;
            if (n >= NB) F(store)(c + col, acc[r][gg]);
            else if (n > 0) F(store_n)(c + col, acc[r][gg], n);
        }
    }
}

/* Cache blocking: a block of rows of A (about LF_GEMM_ROWS_BYTES) stays in L2
 * while every panel streams past it. A tile keeps the accumulators in
 * registers over the whole shared dimension, its rows of A in L1 and the
 * panel coming from L2. Measured against cutting the shared dimension into
 * L1-sized slices of the panel (partial sums through memory), this is 14%
 * faster, and the 512 KiB block 11% faster than a 192 KiB one (K=512). */
#define LF_GEMM_ROWS_BYTES ((int64_t)512 * 1024)

static LF_INLINE void F(gemm_gates)(const int G, const lf_gemm_args *g) {
    const int64_t K = g->K > 0 ? g->K : 1;
    const int MR = LF_GEMM_ROWS(G);
    int64_t block_rows = LF_GEMM_ROWS_BYTES / (K * (int64_t)sizeof(REAL));
    block_rows = block_rows < MR ? MR : block_rows - block_rows % MR;
    for (int64_t m0 = 0; m0 < g->M; m0 += block_rows) {
        const int64_t m1 = m0 + block_rows < g->M ? m0 + block_rows : g->M;
        for (int64_t p = 0; p < g->n_panels; ++p)
            for (int64_t r0 = m0; r0 < m1; r0 += MR) {
                const int64_t left = m1 - r0;
                const int rows = left < MR ? (int)left : MR;
#define LF_GEMM_CALL(n) if ((n) <= MR) F(gemm_tile)(n, G, g, r0, p)
                LF_ROW_SWITCH_TO(LF_GEMM_MR_MAX, rows, LF_GEMM_CALL)
#undef LF_GEMM_CALL
            }
    }
}

static void F(gemm)(const lf_gemm_args *g) {
    switch (g->gates) {
    case 1: F(gemm_gates)(1, g); break;
    case 3: F(gemm_gates)(3, g); break;
    case 4: F(gemm_gates)(4, g); break;
    default: break; /* lf_plan_init admits no other gate count */
    }
}

/* ---- the general path (plan->generic): variants, clip, ONNX activations ----
 * Reached only through the `generic` constant of the step switch, so the
 * default sigmoid/tanh code above and below is compiled without it. */

/* One lane of the activations that have no vector form here: rare enough in
 * practice that clarity wins over speed. Computed in double. */
static LF_INLINE REAL F(act_lane)(const lf_activation_spec *a, REAL xr) {
    const double x = xr, alpha = a->alpha, beta = a->beta;
    switch (a->kind) {
    case LF_ACT_LEAKY_RELU: return (REAL)(x >= 0 ? x : alpha * x);
    case LF_ACT_THRESHOLDED_RELU: return (REAL)(x >= alpha ? x : 0.0);
    case LF_ACT_HARD_SIGMOID: {
        const double v = alpha * x + beta;
        return (REAL)(v < 0 ? 0.0 : v > 1 ? 1.0 : v);
    }
    case LF_ACT_ELU: return (REAL)(x >= 0 ? x : alpha * expm1(x));
    case LF_ACT_SOFTSIGN: return (REAL)(x / (1.0 + fabs(x)));
    /* log(1+e^x) without overflow: x + log(1+e^-x) for positive x. */
    case LF_ACT_SOFTPLUS: return (REAL)(x > 0 ? x + log1p(exp(-x)) : log1p(exp(x)));
    default: return xr; /* lf_plan_init admits no other kind here */
    }
}

/* a(clip(x)); clip 0 means none. The clamp keeps NaN (both compares false). */
static LF_INLINE VEC F(activate)(const lf_activation_spec *a, double clip, VEC x) {
    if (clip > 0) {
        const REAL hi = (REAL)clip;
        for (int l = 0; l < NB; ++l) x[l] = x[l] < -hi ? -hi : x[l] > hi ? hi : x[l];
    }
    switch (a->kind) {
    case LF_ACT_SIGMOID: return VSIGMOID(x);
    case LF_ACT_TANH: return VTANH(x);
    case LF_ACT_RELU: return VRELU(x);
    case LF_ACT_AFFINE: return x * (REAL)a->alpha + (REAL)a->beta;
    case LF_ACT_SCALED_TANH: return VTANH(x * (REAL)a->beta) * (REAL)a->alpha;
    default:
        for (int l = 0; l < NB; ++l) x[l] = F(act_lane)(a, x[l]);
        return x;
    }
}

/* LSTM with peepholes, coupling, clip and any activations. Clip applies to
 * the gate pre-activations after the peephole terms, not to the cell state
 * fed to h(): what ONNX Runtime computes for the ONNX operator. */
static LF_INLINE VEC F(lstm_general)(const lf_step_args *s, const VEC *acc, REAL *c, int64_t n,
                                     int64_t p) {
    const lf_cell_opts *o = s->opts;
    const REAL *peep = s->peephole ? (const REAL *)s->peephole + p * 3 * NB : NULL;
    const VEC c_prev = F(load_n)(c, n);
    VEC pre_i = acc[0], pre_f = acc[1], pre_o = acc[3];
    if (peep) {
        pre_i += F(load)(peep) * c_prev;
        pre_f += F(load)(peep + NB) * c_prev;
    }
    const VEC i = F(activate)(&o->act[LF_ROLE_F], o->clip, pre_i);
    const VEC f = (o->flags & LF_LSTM_COUPLED_INPUT_FORGET)
                      ? F(splat)(1) - i
                      : F(activate)(&o->act[LF_ROLE_F], o->clip, pre_f);
    const VEC g = F(activate)(&o->act[LF_ROLE_G], o->clip, acc[2]);
    const VEC c_new = f * c_prev + i * g;
    F(store_n)(c, c_new, n);
    if (peep) pre_o += F(load)(peep + 2 * NB) * c_new;
    return F(activate)(&o->act[LF_ROLE_F], o->clip, pre_o) * F(activate)(&o->act[LF_ROLE_H], 0, c_new);
}

/* Ended sequence: state frozen, output zero. With LSTMP the projection step
 * in grid.c does this for the projected h. */
static LF_INLINE void F(freeze_row)(const lf_step_args *s, int64_t b, int64_t u0, int64_t n) {
    if (s->m) return;
    memcpy((REAL *)s->h_next + b * s->R + u0, (const REAL *)s->h_prev + b * s->R + u0,
           (size_t)n * sizeof(REAL));
    memset((REAL *)s->y + b * s->ldy + u0, 0, (size_t)n * sizeof(REAL));
}

/* The cell update of one batch row on one panel: NB hidden units from u0,
 * n of them real. acc holds the gate pre-activations. */
static LF_INLINE void F(finish_row)(const lf_cell_kind cell, const int generic,
                                    const lf_step_args *s, const VEC *acc, int64_t b, int64_t p) {
    const int64_t u0 = p * NB, n = s->H - u0 < NB ? s->H - u0 : NB;
    /* Rows of h are R long: with LSTMP (R = P < H) u0 may lie past a row of
     * h, so h's pointers are formed only where the cell has no m. */
    if (s->lengths && s->t >= s->lengths[b]) {
        F(freeze_row)(s, b, u0, n);
        return;
    }
    const lf_cell_opts *o = s->opts;
    VEC h;
    switch (cell) {
    case LF_CELL_LSTM: {
        REAL *c = (REAL *)s->c + b * s->H + u0;
        if (generic) {
            h = F(lstm_general)(s, acc, c, n, p);
        } else {
            const VEC i = VSIGMOID(acc[0]), f = VSIGMOID(acc[1]);
            const VEC g = VTANH(acc[2]), og = VSIGMOID(acc[3]);
            const VEC c_new = f * F(load_n)(c, n) + i * g;
            F(store_n)(c, c_new, n);
            h = og * VTANH(c_new);
        }
        if (s->m) {
            F(store_n)((REAL *)s->m + b * s->H + u0, h, n);
            return;
        }
        break;
    }
    case LF_CELL_GRU: {
        const REAL *h_prev = (const REAL *)s->h_prev + b * s->R + u0;
        const VEC gx_n = F(load)((const REAL *)s->gx + b * s->ldgx + p * 3 * NB + 2 * NB);
        if (generic) {
            const VEC r = F(activate)(&o->act[LF_ROLE_F], o->clip, acc[0]);
            const VEC z = F(activate)(&o->act[LF_ROLE_F], o->clip, acc[1]);
            const VEC cand = F(activate)(&o->act[LF_ROLE_G], o->clip, gx_n + r * acc[2]);
            h = cand + z * (F(load_n)(h_prev, n) - cand);
            break;
        }
        const VEC r = VSIGMOID(acc[0]), z = VSIGMOID(acc[1]);
        const VEC cand = VTANH(gx_n + r * acc[2]);
        h = cand + z * (F(load_n)(h_prev, n) - cand); /* (1-z)*n + z*h */
        break;
    }
    case LF_CELL_RNN_TANH:
        h = generic ? F(activate)(&o->act[LF_ROLE_F], o->clip, acc[0]) : VTANH(acc[0]);
        break;
    default: h = generic ? F(activate)(&o->act[LF_ROLE_F], o->clip, acc[0]) : VRELU(acc[0]); break;
    }
    F(store_n)((REAL *)s->h_next + b * s->R + u0, h, n);
    F(store_n)((REAL *)s->y + b * s->ldy + u0, h, n);
}

/* The general cell update, out of line: inlined, its activation switch and
 * lane loops made GCC keep the accumulators of the general path's one-row
 * tiles on the stack through the product (0.8x the time once out of line,
 * peephole/clip LSTM at B=1). */
static __attribute__((noinline)) void F(finish_row_general)(const lf_cell_kind cell,
                                                            const lf_step_args *s,
                                                            const VEC *acc, int64_t b,
                                                            int64_t p) {
    F(finish_row)(cell, 1, s, acc, b, p);
}

static LF_INLINE void F(finish_tile_row)(const lf_cell_kind cell, const int generic,
                                         const lf_step_args *s, const VEC *acc, int64_t b,
                                         int64_t p) {
    if (generic) F(finish_row_general)(cell, s, acc, b, p);
    else F(finish_row)(cell, 0, s, acc, b, p);
}

/* What a step's recurrent product adds onto, for batch row b on panel p:
 * the row's gx (input projection and biases), except the GRU's n gate,
 * which keeps its input part apart and starts from its recurrent bias.
 * A GRU whose product the tiles already summed in gh adds it here. */
static LF_INLINE void F(start_gates)(const int G, const lf_cell_kind cell, const lf_step_args *s,
                                     int64_t b, int64_t p, VEC *acc) {
    const REAL *gx = (const REAL *)s->gx + b * s->ldgx + p * G * NB;
#pragma GCC unroll 4
    for (int g = 0; g < G; ++g)
        acc[g] = cell == LF_CELL_GRU && g == 2 ? F(load)((const REAL *)s->b_hn + p * NB)
                                               : F(load)(gx + g * NB);
    if (cell == LF_CELL_GRU && s->gh) {
        const REAL *gh = (const REAL *)s->gh + b * s->ldgh + p * G * NB;
#pragma GCC unroll 4
        for (int g = 0; g < G; ++g) acc[g] += F(load)(gh + g * NB);
    }
}

/* One register tile of the step (rows x NP panels p[0..NP-1], from batch
 * row r0): the recurrent product over the whole shared dimension on top of
 * gx (and for the GRU's n gate, on top of its recurrent bias; a small
 * layer's in halves, accumulate_halves), then the cell
 * update on the accumulators. With s->x, the tile first computes what the
 * GEMM would have put in gx, as gemm_tile does. With s->product_done the
 * tiles already summed the product (start_gates adds a GRU's gh). */
static LF_INLINE void F(step_tile)(const int rows, const int NP, const int G,
                                   const lf_cell_kind cell, const int generic,
                                   const lf_step_args *s, int64_t r0, const int64_t *p) {
    const int64_t PW = G * NB;
    VEC acc[LF_MR][4];
    const REAL *w_ih[LF_ROW_PANELS], *w_hh[LF_ROW_PANELS];
#pragma GCC unroll 2
    for (int j = 0; j < NP; ++j) {
        w_ih[j] = (const REAL *)s->w_ih + p[j] * LF_PROJECTION_ROWS(s->I) * PW;
        w_hh[j] = (const REAL *)s->w_hh + p[j] * s->R * PW;
    }
    if (s->x) { /* (never with product_done: calls on AMX fuse no input) */
#pragma GCC unroll 8
        for (int r = 0; r < rows; ++r)
#pragma GCC unroll 2
            for (int j = 0; j < NP; ++j)
#pragma GCC unroll 4
                for (int g = 0; g < G; ++g)
                    acc[r * NP + j][g] = F(load)((const REAL *)s->bias + p[j] * PW + g * NB);
        F(accumulate)(rows, NP, G, s->I, (const REAL *)s->x + r0 * s->I, s->I, w_ih,
                      LF_PROJECTION_PANEL(s->I), acc);
    } else {
#pragma GCC unroll 8
        for (int r = 0; r < rows; ++r)
#pragma GCC unroll 2
            for (int j = 0; j < NP; ++j) F(start_gates)(G, cell, s, r0 + r, p[j], acc[r * NP + j]);
    }
    if (!s->product_done)
        F(accumulate_recurrent)(rows, NP, G, s->R, (const REAL *)s->h_prev + r0 * s->R, s->R,
                                w_hh, s->halves, F(upper_half_first)(s), acc);
    /* Rows not force-unrolled: eight copies of the cell update made GCC keep
     * the float64 tiles' accumulators on the stack through the product. */
    for (int r = 0; r < rows; ++r)
#pragma GCC unroll 2
        for (int j = 0; j < NP; ++j)
            F(finish_tile_row)(cell, generic, s, acc[r * NP + j], r0 + r, p[j]);
}

#if LF_AHEAD_Q > 0
/* (Projecting ahead is for a batch of one off the AMX tiles, so never with
 * product_done.)
 * A lone row's step on NP panels p[0..NP-1] that also carries a share of
 * the input projection of the next S = G*LF_AHEAD_Q rows (s->ahead_x): gate
 * ahead_gate over rows [ahead_k0, ahead_k1) of W_ih, on top of the partial
 * sums in ahead_gx (the bias before W_ih's row 0). At a batch of one a step only
 * streams W_hh through the cache with the FMA units half idle, while the
 * projection GEMM is FMA-bound: interleaved in one k loop (LF_AHEAD_Q rows
 * of W_hh to one of W_ih), each runs in the other's gaps, and the step then
 * costs about its bytes at the cache's rate. One W_ih vector serves S rows,
 * so a step adds 1/S of W_ih to those bytes (contiguous: the projection
 * panel layout keeps each gate's rows together). Both sums keep one chain per
 * accumulator in k order (as accumulate and gemm_tile; a partial sum
 * stored and reloaded is exact): the same bits as without projecting ahead.
 * (Layers whose steps sum in halves, lf_step_args.halves, never project
 * ahead: plan.c.)
 * Two panels per tile, as step_cell's lone row: one panel's G recurrent
 * chains, each taking LF_AHEAD_Q dependent FMAs per iteration, bound the
 * loop by the FMA latency where two FMA pipes need 8 chains. Against one
 * panel per tile (Intel VM, 2 FMA pipes, 1 thread, B=1, I=H, same bits):
 * H=64 0.93x the time, H=256 0.93x, H=512 0.99x, T=1000 H=128 0.97x, GRU
 * H=256 0.90x; on two threads 0.93-1.05x. */
static LF_INLINE void F(step_tile_ahead)(const int NP, const int G, const lf_cell_kind cell,
                                         const int generic, const lf_step_args *s,
                                         const int64_t *p) {
    const int Q = LF_AHEAD_Q, S = G * LF_AHEAD_Q;
    const int64_t PW = G * NB, R = s->R, I = s->I;
    VEC acc[LF_ROW_PANELS][4], proj[LF_ROW_PANELS][4 * LF_AHEAD_Q];
    const REAL *x = (const REAL *)s->ahead_x;
    int64_t x_row[4 * LF_AHEAD_Q];
#pragma GCC unroll 16
    for (int r = 0; r < S; ++r) x_row[r] = (r < s->ahead_valid ? r : 0) * I;
    const int64_t rows_ih = LF_PROJECTION_ROWS(I);
    const REAL *w_hh[LF_ROW_PANELS], *w_ih[LF_ROW_PANELS];
    REAL *out[LF_ROW_PANELS];
#pragma GCC unroll 2
    for (int j = 0; j < NP; ++j) {
        F(start_gates)(G, cell, s, 0, p[j], acc[j]);
        const int64_t col = p[j] * PW + s->ahead_gate * NB;
        out[j] = (REAL *)s->ahead_gx + col;
        const VEC bias = F(load)((const REAL *)s->bias + col);
#pragma GCC unroll 16
        for (int r = 0; r < S; ++r)
            proj[j][r] = s->ahead_k0 == 0 ? bias : F(load)(out[j] + r * s->ldgx);
        w_hh[j] = (const REAL *)s->w_hh + p[j] * R * PW;
        w_ih[j] = (const REAL *)s->w_ih + (p[j] * PW + s->ahead_gate * NB) * rows_ih;
    }
    const REAL *h = (const REAL *)s->h_prev;
    int64_t kh = 0, ki = s->ahead_k0;
    for (; ki < s->ahead_k1 && kh + Q <= R; ++ki, kh += Q) {
#pragma GCC unroll 4
        for (int q = 0; q < Q; ++q) {
            const VEC a = F(splat)(h[kh + q]);
#pragma GCC unroll 2
            for (int j = 0; j < NP; ++j)
#pragma GCC unroll 4
                for (int g = 0; g < G; ++g)
                    acc[j][g] += a * F(load)(w_hh[j] + (kh + q) * PW + g * NB);
        }
        VEC w[LF_ROW_PANELS];
#pragma GCC unroll 2
        for (int j = 0; j < NP; ++j) w[j] = F(load)(w_ih[j] + ki * NB);
#pragma GCC unroll 16
        for (int r = 0; r < S; ++r) {
            const VEC a = F(splat)(x[x_row[r] + ki]);
#pragma GCC unroll 2
            for (int j = 0; j < NP; ++j) proj[j][r] += a * w[j];
        }
    }
    const REAL *w_hh_rest[LF_ROW_PANELS]; /* W_ih's slice ran out first */
#pragma GCC unroll 2
    for (int j = 0; j < NP; ++j) w_hh_rest[j] = w_hh[j] + kh * PW;
    F(accumulate)(1, NP, G, R - kh, h + kh, R, w_hh_rest, LF_RECURRENT_PANEL(G), acc);
    for (; ki < s->ahead_k1; ++ki) {
#pragma GCC unroll 2
        for (int j = 0; j < NP; ++j) {
            const VEC w = F(load)(w_ih[j] + ki * NB);
#pragma GCC unroll 16
            for (int r = 0; r < S; ++r) proj[j][r] += F(splat)(x[x_row[r] + ki]) * w;
        }
    }
#pragma GCC unroll 2
    for (int j = 0; j < NP; ++j) {
        F(finish_tile_row)(cell, generic, s, acc[j], 0, p[j]);
#pragma GCC unroll 16
        for (int r = 0; r < S; ++r) F(store)(out[j] + r * s->ldgx, proj[j][r]);
    }
}
#endif

/* Like the GEMM, a tile accumulates over the whole shared dimension with its
 * rows of h in L1 and the panel coming from L2: measured faster than slicing
 * the panel to fit L1 and carrying partial sums through memory. */
static LF_INLINE void F(step_cell)(const int G, const lf_cell_kind cell, const int generic,
                                   const lf_step_args *s) {
    const int MR = LF_STEP_ROWS(G);
    if (s->B == 1 && G >= 3) { /* (1 or 2 gates: accumulate_short splits the sums) */
#define LF_LONE_ROW_TILE(n, p) F(step_tile)(1, n, G, cell, generic, s, 0, p)
        LF_LONE_ROW_TILES(s, LF_LONE_ROW_TILE);
#undef LF_LONE_ROW_TILE
        return;
    }
    for (int64_t i = s->panel_begin; i < s->panel_end; ++i) {
        const int64_t p = lf_step_panel(s, i);
        for (int64_t r0 = 0; r0 < s->B; r0 += MR) {
            const int64_t left = s->B - r0;
            const int rows = left < MR ? (int)left : MR;
#define LF_STEP_CALL(n) if ((n) <= MR) F(step_tile)(n, 1, G, cell, generic, s, r0, &p)
            LF_ROW_SWITCH(rows, LF_STEP_CALL)
#undef LF_STEP_CALL
        }
    }
}

/* GRU with the reset before the recurrent product: n needs (r * h) @ W_hn,
 * and r * h spans every hidden unit, so the step runs in two phases (each
 * over a thread's panels, with a barrier between them in grid.c):
 * (1) r and z from the (r, z) panels, r * h_prev and z kept in the
 * workspace; (2) the n panels' product on r * h, then the state update. */
static LF_INLINE void F(gru_rb_gates_tile)(const int rows, const lf_step_args *s, int64_t r0,
                                           int64_t p) {
    const lf_cell_opts *o = s->opts;
    const int64_t ldgx = s->ldgx, Hp = s->n_panels * NB, u0 = p * NB;
    const int64_t n = s->H - u0 < NB ? s->H - u0 : NB;
    VEC acc[LF_MR][4];
    for (int r = 0; r < rows; ++r) {
        const REAL *gx = (const REAL *)s->gx + (r0 + r) * ldgx + p * 3 * NB;
        acc[r][0] = F(load)(gx);
        acc[r][1] = F(load)(gx + NB);
        if (s->product_done) { /* h_prev @ W_rz from the tiles */
            const REAL *gh = (const REAL *)s->gh + (r0 + r) * s->ldgh + p * 2 * NB;
            acc[r][0] += F(load)(gh);
            acc[r][1] += F(load)(gh + NB);
        }
    }
    const REAL *panel = (const REAL *)s->w_hh + p * s->R * 2 * NB;
    if (!s->product_done)
        F(accumulate_recurrent)(rows, 1, 2, s->R, (const REAL *)s->h_prev + r0 * s->R, s->R,
                                &panel, 0, 0, acc);
    for (int r = 0; r < rows; ++r) {
        const int64_t b = r0 + r;
        const VEC rg = F(activate)(&o->act[LF_ROLE_F], o->clip, acc[r][0]);
        const VEC z = F(activate)(&o->act[LF_ROLE_F], o->clip, acc[r][1]);
        const VEC h_prev = F(load_n)((const REAL *)s->h_prev + b * s->R + u0, n);
        F(store_n)((REAL *)s->rh + b * s->R + u0, rg * h_prev, n);
        F(store)((REAL *)s->z + b * Hp + u0, z);
    }
}

static LF_INLINE void F(gru_rb_update_tile)(const int rows, const lf_step_args *s, int64_t r0,
                                            int64_t p) {
    const lf_cell_opts *o = s->opts;
    const int64_t ldgx = s->ldgx, Hp = s->n_panels * NB, u0 = p * NB;
    const int64_t n = s->H - u0 < NB ? s->H - u0 : NB;
    VEC acc[LF_MR][4];
    for (int r = 0; r < rows; ++r) {
        acc[r][0] = F(load)((const REAL *)s->gx + (r0 + r) * ldgx + p * 3 * NB + 2 * NB);
        if (s->product_done) /* (r * h) @ W_hn from the tiles */
            acc[r][0] += F(load)((const REAL *)s->gh_n + (r0 + r) * Hp + u0);
    }
    const REAL *panel = (const REAL *)s->w_hn + p * s->R * NB;
    if (!s->product_done)
        F(accumulate_recurrent)(rows, 1, 1, s->R, (const REAL *)s->rh + r0 * s->R, s->R, &panel,
                                0, 0, acc);
    for (int r = 0; r < rows; ++r) {
        const int64_t b = r0 + r;
        if (s->lengths && s->t >= s->lengths[b]) {
            F(freeze_row)(s, b, u0, n);
            continue;
        }
        const VEC cand = F(activate)(&o->act[LF_ROLE_G], o->clip, acc[r][0]);
        const VEC z = F(load)((const REAL *)s->z + b * Hp + u0);
        const VEC h_prev = F(load_n)((const REAL *)s->h_prev + b * s->R + u0, n);
        const VEC h = cand + z * (h_prev - cand); /* (1-z)*n + z*h */
        F(store_n)((REAL *)s->h_next + b * s->R + u0, h, n);
        F(store_n)((REAL *)s->y + b * s->ldy + u0, h, n);
    }
}

/* One phase over this call's panels; grid.c runs phase 1 on every thread,
 * meets at a barrier (phase 2 reads r*h of every unit), then runs phase 2. */
static void F(step_gru_reset_before)(const lf_step_args *s) {
    const int MR = LF_STEP_ROWS(s->phase == 1 ? 2 : 1);
    for (int64_t i = s->panel_begin; i < s->panel_end; ++i) {
        const int64_t p = lf_step_panel(s, i);
        for (int64_t r0 = 0; r0 < s->B; r0 += MR) {
            const int64_t left = s->B - r0;
            const int rows = left < MR ? (int)left : MR;
            if (s->phase == 1) {
#define LF_GATES_CALL(n) F(gru_rb_gates_tile)(n, s, r0, p)
                LF_ROW_SWITCH(rows, LF_GATES_CALL)
#undef LF_GATES_CALL
            } else {
#define LF_UPDATE_CALL(n) F(gru_rb_update_tile)(n, s, r0, p)
                LF_ROW_SWITCH(rows, LF_UPDATE_CALL)
#undef LF_UPDATE_CALL
            }
        }
    }
}

/* One function per cell kind with its constants folded in. Inlined all
 * into F(step)'s switch, the function grew so large that GCC kept the
 * accumulators of the two-panel tile on the stack (1.1x slower than one
 * panel per tile, instead of 0.91-0.98x). */
#define LF_STEP_KIND(name, G, cell, generic)                                  \
    static __attribute__((noinline)) void F(name)(const lf_step_args *s) {    \
        F(step_cell)(G, cell, generic, s);                                    \
    }
LF_STEP_KIND(step_lstm, 4, LF_CELL_LSTM, 0)
LF_STEP_KIND(step_lstm_general, 4, LF_CELL_LSTM, 1)
LF_STEP_KIND(step_gru, 3, LF_CELL_GRU, 0)
LF_STEP_KIND(step_gru_general, 3, LF_CELL_GRU, 1)
LF_STEP_KIND(step_rnn_tanh, 1, LF_CELL_RNN_TANH, 0)
LF_STEP_KIND(step_rnn_tanh_general, 1, LF_CELL_RNN_TANH, 1)
LF_STEP_KIND(step_rnn_relu, 1, LF_CELL_RNN_RELU, 0)
LF_STEP_KIND(step_rnn_relu_general, 1, LF_CELL_RNN_RELU, 1)
#undef LF_STEP_KIND

#if LF_AHEAD_Q > 0
/* A lone row's panels in tiles, as step_cell's. */
static LF_INLINE void F(step_ahead_panels)(const int G, const lf_cell_kind cell, const int generic,
                                           const lf_step_args *s) {
#define LF_AHEAD_TILE(n, p) F(step_tile_ahead)(n, G, cell, generic, s, p)
    LF_LONE_ROW_TILES(s, LF_AHEAD_TILE);
#undef LF_AHEAD_TILE
}

/* The projecting-ahead steps of a batch of one (LSTM and GRU), each its
 * own function for the same reason. */
#define LF_STEP_AHEAD_KIND(name, G, cell, generic)                           \
    static __attribute__((noinline)) void F(name)(const lf_step_args *s) {   \
        F(step_ahead_panels)(G, cell, generic, s);                           \
    }
LF_STEP_AHEAD_KIND(step_lstm_ahead, 4, LF_CELL_LSTM, 0)
LF_STEP_AHEAD_KIND(step_lstm_general_ahead, 4, LF_CELL_LSTM, 1)
LF_STEP_AHEAD_KIND(step_gru_ahead, 3, LF_CELL_GRU, 0)
LF_STEP_AHEAD_KIND(step_gru_general_ahead, 3, LF_CELL_GRU, 1)
#undef LF_STEP_AHEAD_KIND
#endif

static void F(step)(const lf_step_args *s) {
#if LF_AHEAD_Q > 0
    if (s->ahead_x) { /* grid.c sets it only for B = 1, LSTM or GRU (not reset-before) */
        const int generic = s->opts != NULL;
        if (s->cell == LF_CELL_LSTM) generic ? F(step_lstm_general_ahead)(s) : F(step_lstm_ahead)(s);
        else generic ? F(step_gru_general_ahead)(s) : F(step_gru_ahead)(s);
        return;
    }
#endif
    if (s->opts) {
        switch (s->cell) {
        case LF_CELL_LSTM: F(step_lstm_general)(s); break;
        case LF_CELL_GRU:
            if (s->opts->flags & LF_GRU_RESET_BEFORE_PRODUCT) F(step_gru_reset_before)(s);
            else F(step_gru_general)(s);
            break;
        case LF_CELL_RNN_TANH: F(step_rnn_tanh_general)(s); break;
        case LF_CELL_RNN_RELU: F(step_rnn_relu_general)(s); break;
        }
        return;
    }
    switch (s->cell) {
    case LF_CELL_LSTM: F(step_lstm)(s); break;
    case LF_CELL_GRU: F(step_gru)(s); break;
    case LF_CELL_RNN_TANH: F(step_rnn_tanh)(s); break;
    case LF_CELL_RNN_RELU: F(step_rnn_relu)(s); break;
    }
}

static void F(map_sigmoid)(const void *xv, void *yv, int64_t n) {
    const REAL *x = xv;
    REAL *y = yv;
    int64_t i = 0;
    for (; i + NB <= n; i += NB) F(store)(y + i, VSIGMOID(F(load)(x + i)));
    if (i < n) F(store_n)(y + i, VSIGMOID(F(load_n)(x + i, n - i)), n - i);
}

static void F(map_tanh)(const void *xv, void *yv, int64_t n) {
    const REAL *x = xv;
    REAL *y = yv;
    int64_t i = 0;
    for (; i + NB <= n; i += NB) F(store)(y + i, VTANH(F(load)(x + i)));
    if (i < n) F(store_n)(y + i, VTANH(F(load_n)(x + i, n - i)), n - i);
}
