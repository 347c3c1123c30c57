/* AVX2 + FMA kernels; setup.py compiles this file alone with -mavx2 -mfma.
 * 16 YMM registers: 3 rows x 4 gates (or 4 x 3) of accumulators and the
 * row broadcasts fill them, the FMAs taking the weight vectors straight from
 * memory. Measured against 2 rows x 4 gates (every operand in a register):
 * 0.80x the time of an LSTM layer at batch 16 and 64. */
#if !defined(__AVX2__) || !defined(__FMA__)
#error "kernels_avx2.c must be compiled with -mavx2 -mfma"
#endif
#define LF_ISA_SUFFIX avx2
#define LF_ISA_ID LF_ISA_AVX2
#define LF_VECTOR_BYTES 32
#define LF_MR 4
#define LF_STEP_ROWS(G) ((G) == 4 ? 3 : 4)
#define LF_GEMM_ROWS(G) LF_STEP_ROWS(G)
#define LF_GEMM_MR_MAX 4
#include "kernel_isa.h"
