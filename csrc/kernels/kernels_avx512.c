/* AVX-512 kernels; setup.py compiles this file alone with -mavx512f/bw/dq/vl.
 * 32 ZMM registers. Accumulators, weight vectors and a broadcast must stay
 * live through the product: 6 rows x 4 gates (24 + 4 + 1 registers), 8 rows
 * for 3 gates or fewer. The cell update after the product may spill; over a
 * long shared dimension the taller tile's fewer weight loads win. A step
 * that projects ahead holds 2 x (G + 2G) accumulators, two panels of
 * (LF_AHEAD_Q 2) 8 rows per W_ih vector for an LSTM: 24 of 32 registers;
 * 4 and 16 rows (one panel) measured no faster (RESULTS.md). */
#if !defined(__AVX512F__) || !defined(__AVX512VL__)
#error "kernels_avx512.c must be compiled with -mavx512f -mavx512vl"
#endif
#define LF_ISA_SUFFIX avx512
#define LF_ISA_ID LF_ISA_AVX512
#define LF_VECTOR_BYTES 64
#define LF_MR 8
#define LF_STEP_ROWS(G) ((G) == 4 ? 6 : 8)
#define LF_GEMM_ROWS(G) LF_STEP_ROWS(G)
#define LF_GEMM_MR_MAX 8
#define LF_AHEAD_Q 2
#include "kernel_isa.h"
