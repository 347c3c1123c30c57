/* Register tiles of the AVX-512 kernels (kernels_avx512.c, and
 * kernels_amx.c, whose steps are the same). 32 ZMM registers.
 * Accumulators, weight vectors and a broadcast must stay live through the
 * product: 6 rows x 4 gates (24 + 4 + 1 registers), 8 rows for 3 gates or
 * fewer. The cell update after the product may spill; over a long shared
 * dimension the taller tile's fewer weight loads win. */
#if !defined(__AVX512F__) || !defined(__AVX512VL__)
#error "AVX-512 kernels must be compiled with -mavx512f -mavx512vl"
#endif
#define LF_VECTOR_BYTES 64
#define LF_MR 8
#define LF_STEP_ROWS(G) ((G) == 4 ? 6 : 8)
#define LF_GEMM_ROWS(G) LF_STEP_ROWS(G)
#define LF_GEMM_MR_MAX 8
