/* Portable kernels: baseline flags only (SSE2 on x86-64, NEON on AArch64),
 * so this table runs on every CPU the build targets. */
#define LF_ISA_SUFFIX portable
#define LF_ISA_ID LF_ISA_PORTABLE
#define LF_VECTOR_BYTES 16
#define LF_MR 2
#include "kernel_isa.h"
