/* AVX-512 kernels; setup.py compiles this file alone with -mavx512f/bw/dq/vl.
 * 32 ZMM registers: 4 rows x 4 gates of accumulators, 4 weight vectors and
 * a broadcast fit without spilling. */
#if !defined(__AVX512F__) || !defined(__AVX512VL__)
#error "kernels_avx512.c must be compiled with -mavx512f -mavx512vl"
#endif
#define LF_ISA_SUFFIX avx512
#define LF_ISA_ID LF_ISA_AVX512
#define LF_VECTOR_BYTES 64
#define LF_MR 4
/* The GEMM keeps only accumulators, weights and a broadcast live: 6 rows x
 * 4 gates (24 + 4 + 1 registers), 8 rows for 3 gates or fewer: more FMAs
 * per weight load. The step stays at 4 rows (its epilogue spills above). */
#define LF_GEMM_ROWS(G) ((G) == 4 ? 6 : 8)
#define LF_GEMM_MR_MAX 8
#include "kernel_isa.h"
