/*
 * kernel_body.h -- the kernels, written once for one element type and one
 * ISA. kernel_isa.h includes it twice (float, double) per ISA, defining:
 *   REAL      element type          VEC   its SIMD vector type
 *   NB        elements per VEC      F(x)  x with a per-dtype suffix
 *   VSIGMOID / VTANH / VRELU        vector activations (vector_math.h)
 *   LF_MR     batch rows per register tile (per ISA: what fits the
 *             register file with 4 gates of accumulators)
 *
 * Two kernels:
 *   gemm  C = A @ panels (+ bias): the input projection of a whole chunk of
 *         time steps, and the LSTMP projection.
 *   step  one recurrent step: gates = gx + h_prev @ W_hh, then the cell
 *         update on the same register tile (the fused "post-GEMM").
 * Register tiles are LF_MR batch rows x one panel (G gates x NB hidden
 * units). Tile shape parameters are compile-time constants at every call
 * (switches below), so the accumulator arrays live in registers.
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

/* acc[r][g] += sum_k A[r][k] * panel[k][g*NB : g*NB+NB] */
static LF_INLINE void F(accumulate)(const int rows, const int G, int64_t K, const REAL *A,
                                    int64_t lda, const REAL *panel, VEC acc[LF_MR][4]) {
    for (int64_t k = 0; k < K; ++k) {
        const REAL *w = panel + k * G * NB;
        VEC wv[4];
#pragma GCC unroll 4
        for (int g = 0; g < G; ++g) wv[g] = F(load)(w + g * NB);
#pragma GCC unroll 8
        for (int r = 0; r < rows; ++r) {
            const VEC a = F(splat)(A[r * lda + k]);
#pragma GCC unroll 4
            for (int g = 0; g < G; ++g) acc[r][g] += a * wv[g];
        }
    }
}

/* Expands CALL(n) for the remaining-rows count n in 1..LF_MR. */
#define LF_ROW_SWITCH(rows, CALL)          \
    switch (rows) {                        \
    case 1: CALL(1); break;                \
    case 2: CALL(2); break;                \
    LF_ROW_CASES_ABOVE_2(CALL)             \
    default: break;                        \
    }

/* One register tile of C over the shared dimension [k0, k1): starts from the
 * bias (first slice) or from the partial sums stored in C by the previous
 * slice. Partial sums are stored at full precision and resumed in the same
 * order, so slicing K does not change a single bit of the result. */
static LF_INLINE void F(gemm_tile)(const int rows, const int G, const lf_gemm_args *g,
                                   int64_t r0, int64_t p, int64_t k0, int64_t k1) {
    const int64_t PW = G * NB;
    const REAL *bias = g->bias ? (const REAL *)g->bias + p * PW : NULL;
    VEC acc[LF_MR][4];
    for (int r = 0; r < rows; ++r) {
        const REAL *c = (const REAL *)g->C + (r0 + r) * g->ldc;
        for (int gg = 0; gg < G; ++gg) {
            const int64_t col = p * PW + gg * NB, n = g->n_cols - col;
            if (k0 > 0) acc[r][gg] = n >= NB ? F(load)(c + col) : n > 0 ? F(load_n)(c + col, n) : F(splat)(0);
            else acc[r][gg] = bias ? F(load)(bias + gg * NB) : F(splat)(0);
        }
    }
    F(accumulate)(rows, G, k1 - k0, (const REAL *)g->A + r0 * g->lda + k0, g->lda,
                  (const REAL *)g->panels + (p * g->K + k0) * PW, acc);
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
 * while every panel streams past it, and each panel is cut into slices of
 * the shared dimension small enough (LF_GEMM_SLICE_BYTES) to stay in L1
 * while all the row tiles of the block use it. */
#define LF_GEMM_ROWS_BYTES ((int64_t)192 * 1024)
#define LF_GEMM_SLICE_BYTES ((int64_t)32 * 1024)

static LF_INLINE void F(gemm_gates)(const int G, const lf_gemm_args *g) {
    const int64_t K = g->K > 0 ? g->K : 1;
    int64_t block_rows = LF_GEMM_ROWS_BYTES / (K * (int64_t)sizeof(REAL));
    block_rows = block_rows < LF_MR ? LF_MR : block_rows - block_rows % LF_MR;
    int64_t slice = LF_GEMM_SLICE_BYTES / (G * NB * (int64_t)sizeof(REAL));
    if (slice < 16) slice = 16;
    for (int64_t m0 = 0; m0 < g->M; m0 += block_rows) {
        const int64_t m1 = m0 + block_rows < g->M ? m0 + block_rows : g->M;
        for (int64_t p = 0; p < g->n_panels; ++p)
            for (int64_t k0 = 0; k0 < g->K || k0 == 0; k0 += slice) {
                const int64_t k1 = k0 + slice < g->K ? k0 + slice : g->K;
                for (int64_t r0 = m0; r0 < m1; r0 += LF_MR) {
                    const int64_t left = m1 - r0;
                    const int rows = left < LF_MR ? (int)left : LF_MR;
#define LF_GEMM_CALL(n) F(gemm_tile)(n, G, g, r0, p, k0, k1)
                    LF_ROW_SWITCH(rows, LF_GEMM_CALL)
#undef LF_GEMM_CALL
                }
                if (k1 >= g->K) break;
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

/* The cell update of one batch row on one panel: NB hidden units from u0,
 * n of them real. acc holds the gate pre-activations. */
static LF_INLINE void F(finish_row)(const lf_cell_kind cell, const lf_step_args *s,
                                    const VEC *acc, int64_t b, int64_t p) {
    const int64_t u0 = p * NB, n = s->H - u0 < NB ? s->H - u0 : NB;
    const REAL *h_prev = (const REAL *)s->h_prev + b * s->R + u0;
    REAL *h_next = (REAL *)s->h_next + b * s->R + u0;
    REAL *y = s->y ? (REAL *)s->y + b * s->ldy + u0 : NULL;
    if (s->lengths && s->t >= s->lengths[b]) {
        /* Ended sequence: state frozen, output zero. With LSTMP the
         * projection step in grid.c does this for the projected h. */
        if (!s->m) {
            memcpy(h_next, h_prev, (size_t)n * sizeof(REAL));
            memset(y, 0, (size_t)n * sizeof(REAL));
        }
        return;
    }
    VEC h;
    switch (cell) {
    case LF_CELL_LSTM: {
        REAL *c = (REAL *)s->c + b * s->H + u0;
        const VEC i = VSIGMOID(acc[0]), f = VSIGMOID(acc[1]);
        const VEC g = VTANH(acc[2]), o = VSIGMOID(acc[3]);
        const VEC c_new = f * F(load_n)(c, n) + i * g;
        F(store_n)(c, c_new, n);
        h = o * VTANH(c_new);
        if (s->m) {
            F(store_n)((REAL *)s->m + b * s->H + u0, h, n);
            return;
        }
        break;
    }
    case LF_CELL_GRU: {
        const int64_t ldgx = 3 * s->n_panels * NB;
        const VEC gx_n = F(load)((const REAL *)s->gx + b * ldgx + p * 3 * NB + 2 * NB);
        const VEC r = VSIGMOID(acc[0]), z = VSIGMOID(acc[1]);
        const VEC cand = VTANH(gx_n + r * acc[2]);
        h = cand + z * (F(load_n)(h_prev, n) - cand); /* (1-z)*n + z*h */
        break;
    }
    case LF_CELL_RNN_TANH: h = VTANH(acc[0]); break;
    default: h = VRELU(acc[0]); break;
    }
    F(store_n)(h_next, h, n);
    F(store_n)(y, h, n);
}

static LF_INLINE void F(step_tile)(const int rows, const int G, const lf_cell_kind cell,
                                   const lf_step_args *s, int64_t r0, int64_t p) {
    const int64_t PW = G * NB, ldgx = G * s->n_panels * NB;
    VEC acc[LF_MR][4];
    for (int r = 0; r < rows; ++r) {
        const REAL *gx = (const REAL *)s->gx + (r0 + r) * ldgx + p * PW;
        for (int g = 0; g < G; ++g)
            acc[r][g] = (cell == LF_CELL_GRU && g == 2) ? F(load)((const REAL *)s->b_hn + p * NB)
                                                        : F(load)(gx + g * NB);
    }
    F(accumulate)(rows, G, s->R, (const REAL *)s->h_prev + r0 * s->R, s->R,
                  (const REAL *)s->w_hh + p * s->R * PW, acc);
    for (int r = 0; r < rows; ++r) F(finish_row)(cell, s, acc[r], r0 + r, p);
}

static LF_INLINE void F(step_cell)(const int G, const lf_cell_kind cell, const lf_step_args *s) {
    for (int64_t p = s->panel_begin; p < s->panel_end; ++p)
        for (int64_t r0 = 0; r0 < s->B; r0 += LF_MR) {
            const int64_t left = s->B - r0;
            const int rows = left < LF_MR ? (int)left : LF_MR;
#define LF_STEP_CALL(n) F(step_tile)(n, G, cell, s, r0, p)
            LF_ROW_SWITCH(rows, LF_STEP_CALL)
#undef LF_STEP_CALL
        }
}

static void F(step)(const lf_step_args *s) {
    switch (s->cell) {
    case LF_CELL_LSTM: F(step_cell)(4, LF_CELL_LSTM, s); break;
    case LF_CELL_GRU: F(step_cell)(3, LF_CELL_GRU, s); break;
    case LF_CELL_RNN_TANH: F(step_cell)(1, LF_CELL_RNN_TANH, s); break;
    case LF_CELL_RNN_RELU: F(step_cell)(1, LF_CELL_RNN_RELU, s); break;
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
