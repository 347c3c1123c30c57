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
#include "kernel_isa.h"
