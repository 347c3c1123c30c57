/*
 * dispatch.c -- which kernel table serves an ISA.
 *
 * The tables are const and defined by kernels/kernels_<isa>.c, each compiled
 * with its own -m flags; setup.py defines LF_HAVE_<ISA> for those that built.
 * Nothing here is mutable: the choice is made per plan (lf_plan_init), from
 * what the caller asks for, so concurrent plans never race.
 */
#include <string.h>
#include "internal.h"

extern const lf_kernels lf_kernels_portable;
#ifdef LF_HAVE_AVX2
extern const lf_kernels lf_kernels_avx2;
#endif
#ifdef LF_HAVE_AVX512
extern const lf_kernels lf_kernels_avx512;
#endif
#ifdef LF_HAVE_AMX
extern const lf_kernels lf_kernels_amx;
#endif

static const char *const isa_names[LF_ISA_COUNT] = {"portable", "avx2", "avx512", "amx"};

const char *lf_isa_name(lf_isa isa) {
    return (isa >= 0 && isa < LF_ISA_COUNT) ? isa_names[isa] : "unknown";
}

LF_HIDDEN const lf_kernels *lf_kernels_for(lf_isa isa) {
    switch (isa) {
    case LF_ISA_PORTABLE: return &lf_kernels_portable;
#ifdef LF_HAVE_AVX2
    case LF_ISA_AVX2: return &lf_kernels_avx2;
#endif
#ifdef LF_HAVE_AVX512
    case LF_ISA_AVX512: return &lf_kernels_avx512;
#endif
#ifdef LF_HAVE_AMX
    case LF_ISA_AMX: return &lf_kernels_amx;
#endif
    default: return NULL;
    }
}

/* AMX multiplies bfloat16 only, so the AMX table holds float32 kernels
 * alone, and float64 runs on the AVX-512 kernels it was built beside. */
LF_HIDDEN const lf_kernels *lf_kernels_for_dtype(lf_isa isa, lf_dtype dtype) {
    if (isa == LF_ISA_AMX && dtype == LF_FLOAT64) isa = LF_ISA_AVX512;
    return lf_kernels_for(isa);
}

int lf_isa_compiled(lf_isa isa) { return lf_kernels_for(isa) != NULL; }

int lf_isa_available(lf_isa isa) { return lf_isa_compiled(isa) && lf_cpu_supports(isa); }

lf_isa lf_isa_best(void) {
    for (int i = LF_ISA_COUNT - 1; i > 0; --i)
        if (lf_isa_available((lf_isa)i)) return (lf_isa)i;
    return LF_ISA_PORTABLE;
}

lf_status lf_isa_parse(const char *name, lf_isa *out) {
    if (!name || !out) return LF_ERR_NULL_POINTER;
    if (strcmp(name, "auto") == 0) {
        *out = lf_isa_best();
        return LF_OK;
    }
    for (int i = 0; i < LF_ISA_COUNT; ++i) {
        if (strcmp(name, isa_names[i]) == 0) {
            *out = (lf_isa)i;
            return LF_OK;
        }
    }
    return LF_ERR_BAD_ISA;
}

int64_t lf_isa_vector_width(lf_isa isa, lf_dtype dtype) {
    if (!lf_isa_compiled(isa) || (dtype != LF_FLOAT32 && dtype != LF_FLOAT64)) return 0;
    return lf_kernels_for_dtype(isa, dtype)->block[dtype];
}

static lf_status map_checked(lf_isa isa, lf_dtype dtype, const void *x, void *y, int64_t n,
                             int want_tanh) {
    if (dtype != LF_FLOAT32 && dtype != LF_FLOAT64) return LF_ERR_BAD_DTYPE;
    if (n < 0) return LF_ERR_BAD_DIMENSION;
    if (n > 0 && (!x || !y)) return LF_ERR_NULL_POINTER;
    if (isa < 0 || isa >= LF_ISA_COUNT) return LF_ERR_BAD_ISA; /* as lf_plan_init */
    if (!lf_isa_available(isa)) return LF_ERR_ISA_UNAVAILABLE;
    const lf_kernels *k = lf_kernels_for_dtype(isa, dtype);
    (want_tanh ? k->tanh[dtype] : k->sigmoid[dtype])(x, y, n);
    return LF_OK;
}

lf_status lf_vector_sigmoid(lf_isa isa, lf_dtype dtype, const void *x, void *y, int64_t n) {
    return map_checked(isa, dtype, x, y, n, 0);
}

lf_status lf_vector_tanh(lf_isa isa, lf_dtype dtype, const void *x, void *y, int64_t n) {
    return map_checked(isa, dtype, x, y, n, 1);
}
