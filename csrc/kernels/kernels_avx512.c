/* AVX-512 kernels; setup.py compiles this file alone with -mavx512f/bw/dq/vl.
 * A step that projects ahead holds 2 x (G + 2G) accumulators, two panels of
 * (LF_AHEAD_Q 2) 8 rows per W_ih vector for an LSTM: 24 of 32 registers;
 * 4 and 16 rows (one panel) measured no faster (RESULTS.md). */
#include "avx512_tiles.h"
#define LF_ISA_SUFFIX avx512
#define LF_ISA_ID LF_ISA_AVX512
#define LF_AHEAD_Q 2
#include "kernel_isa.h"
