/* AVX2 + FMA kernels; setup.py compiles this file alone with -mavx2 -mfma.
 * 16 YMM registers: 2 rows x 4 gates of accumulators plus the 4 weight
 * vectors and a broadcast fit without spilling. */
#if !defined(__AVX2__) || !defined(__FMA__)
#error "kernels_avx2.c must be compiled with -mavx2 -mfma"
#endif
#define LF_ISA_SUFFIX avx2
#define LF_ISA_ID LF_ISA_AVX2
#define LF_VECTOR_BYTES 32
#define LF_MR 2
#include "kernel_isa.h"
