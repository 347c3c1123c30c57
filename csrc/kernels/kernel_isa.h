/*
 * kernel_isa.h -- instantiate every kernel for one ISA.
 *
 * A kernels_<isa>.c file defines LF_ISA_SUFFIX, LF_ISA_ID, LF_VECTOR_BYTES
 * and LF_MR (optionally LF_STEP_ROWS and LF_GEMM_ROWS), is compiled with
 * that ISA's -m flags (setup.py), and includes this file. The vector extensions then lower to that ISA's instructions,
 * and the file exports exactly one symbol: its const kernel table.
 */
#include <string.h>
#include "../internal.h"

typedef float lf_vf __attribute__((vector_size(LF_VECTOR_BYTES)));
typedef int32_t lf_vi32 __attribute__((vector_size(LF_VECTOR_BYTES)));
typedef uint32_t lf_vu32 __attribute__((vector_size(LF_VECTOR_BYTES)));
typedef double lf_vd __attribute__((vector_size(LF_VECTOR_BYTES)));

#include "vector_math.h"

/* Register tile heights for G gate vectors: LF_STEP_ROWS(G) rows for the
 * step (at most LF_MR) and LF_GEMM_ROWS(G) for the GEMM (at most
 * LF_GEMM_MR_MAX). Default: LF_MR for every G. */
#ifndef LF_STEP_ROWS
#define LF_STEP_ROWS(G) LF_MR
#endif
#ifndef LF_GEMM_ROWS
#define LF_GEMM_ROWS(G) LF_MR
#define LF_GEMM_MR_MAX LF_MR
#endif
/* LF_AHEAD_Q: how many slices of W_ih a step that projects ahead
 * (step_tile_ahead) carries per gate, 0 for none; its tile holds
 * G*(LF_AHEAD_Q+1) accumulators. Measured on AVX2 and the portable path
 * (16 registers; LF_AHEAD_Q 1, 8 accumulators; Zen 4, 1 thread, B=1,
 * I=H=64-512): 1.1-1.3x the time of the GEMM chunks, so they keep those. */
#ifndef LF_AHEAD_Q
#define LF_AHEAD_Q 0
#endif

/* LF_ROW_SWITCH_TO(max, rows, CALL) expands CALL(n) for the remaining-rows
 * count n in 1..max (max 2, 4, 6 or 8), so each tile height is a constant. */
#define LF_ROW_CASES_TO_2(CALL) case 1: CALL(1); break; case 2: CALL(2); break;
#define LF_ROW_CASES_TO_4(CALL) LF_ROW_CASES_TO_2(CALL) case 3: CALL(3); break; case 4: CALL(4); break;
#define LF_ROW_CASES_TO_6(CALL) LF_ROW_CASES_TO_4(CALL) case 5: CALL(5); break; case 6: CALL(6); break;
#define LF_ROW_CASES_TO_8(CALL) LF_ROW_CASES_TO_6(CALL) case 7: CALL(7); break; case 8: CALL(8); break;
#define LF_ROW_CASES_TO(max, CALL) LF_ROW_CASES_TO_##max(CALL)
#define LF_ROW_SWITCH_TO(max, rows, CALL) \
    switch (rows) {                       \
    LF_ROW_CASES_TO(max, CALL)            \
    default: break;                       \
    }

/* The i-th panel a step visits, i in [panel_begin, panel_end): ascending on
 * even steps, descending on odd ones. Each step streams the same recurrent
 * weights; when they barely miss the cache (1 MiB at H=256 in a 1 MiB L2),
 * a cyclic order under LRU misses on every line, while reversing it starts
 * each step on the lines the last one used most recently. Measured 0.78x
 * the time of a B=1 H=256 step and 0.91x at H=512. Panels are independent,
 * so the order changes no result. */
static inline int64_t lf_step_panel(const lf_step_args *s, int64_t i) {
    return ((uint64_t)s->t + s->parity) & 1 ? s->panel_end - 1 - (i - s->panel_begin) : i;
}

/* A lone row's panels in that order, as register tiles: TILE(n, p) for each
 * LF_ROW_PANELS panels (n of them, indices p[0..n-1]), then the rest one by
 * one (kernel_body.h defines LF_ROW_PANELS). */
#define LF_LONE_ROW_TILES(s, TILE)                                                 \
    do {                                                                           \
        int64_t i_ = (s)->panel_begin;                                             \
        for (; i_ + LF_ROW_PANELS <= (s)->panel_end; i_ += LF_ROW_PANELS) {        \
            int64_t p_[LF_ROW_PANELS];                                             \
            for (int j_ = 0; j_ < LF_ROW_PANELS; ++j_) p_[j_] = lf_step_panel(s, i_ + j_); \
            TILE(LF_ROW_PANELS, p_);                                               \
        }                                                                          \
        for (; i_ < (s)->panel_end; ++i_) {                                        \
            const int64_t p_ = lf_step_panel(s, i_);                               \
            TILE(1, &p_);                                                          \
        }                                                                          \
    } while (0)

#define LF_PASTE_(a, b) a##_##b
#define LF_PASTE(a, b) LF_PASTE_(a, b)

#define REAL float
#define VEC lf_vf
#define NB LF_NB_F32
#define F(name) LF_PASTE(name, f32)
#define VSIGMOID vf_sigmoid
#define VTANH vf_tanh
#define VRELU vf_relu
#include "kernel_body.h"
#undef REAL
#undef VEC
#undef NB
#undef F
#undef VSIGMOID
#undef VTANH
#undef VRELU

/* LF_FLOAT32_ONLY: a table without float64 kernels (dispatch.c's
 * lf_kernels_for_dtype then serves float64 from another). */
#ifndef LF_FLOAT32_ONLY
#define REAL double
#define VEC lf_vd
#define NB LF_NB_F64
#define F(name) LF_PASTE(name, f64)
#define VSIGMOID vd_sigmoid
#define VTANH vd_tanh
#define VRELU vd_relu
#include "kernel_body.h"
#undef REAL
#undef VEC
#undef NB
#undef F
#undef VSIGMOID
#undef VTANH
#undef VRELU
#define LF_F64(name) name
#else
#define LF_F64(name) 0
#endif

/* LF_PROJECTION_F32: the float32 GEMM's entry, gemm_f32 unless the file
 * defines its own (declared before including this one); LF_AMX_SPLIT_ROWS
 * the AMX row split that goes with it (lf_kernels.amx_split_rows). */
#ifndef LF_PROJECTION_F32
#define LF_PROJECTION_F32 gemm_f32
#endif
#ifndef LF_AMX_SPLIT_ROWS
#define LF_AMX_SPLIT_ROWS 0
#endif

LF_HIDDEN const lf_kernels LF_PASTE(lf_kernels, LF_ISA_SUFFIX) = {
    .isa = LF_ISA_ID,
    .block = {LF_NB_F32, LF_F64(LF_NB_F64)},
    .gemm = {LF_PROJECTION_F32, LF_F64(gemm_f64)},
    .step = {step_f32, LF_F64(step_f64)},
    .sigmoid = {map_sigmoid_f32, LF_F64(map_sigmoid_f64)},
    .tanh = {map_tanh_f32, LF_F64(map_tanh_f64)},
    .ahead_rows = {0, 0, 0, 3 * LF_AHEAD_Q, 4 * LF_AHEAD_Q},
    .amx_split_rows = LF_AMX_SPLIT_ROWS,
};
