/*
 * vector_math.h -- sigmoid and tanh on whole SIMD vectors, written once with
 * GCC/Clang vector extensions and compiled per ISA by kernel_isa.h (which
 * defines lf_vf / lf_vi32 / lf_vu32 / lf_vd for the ISA's vector width).
 *
 * float32, measured against float64 libm over [-20, 20] plus specials by
 * tests/test_vector_math.py:
 *   exp   (internal) range-reduced to |r| <= ln2/2, a degree-6 polynomial
 *         fitted to a relative error of 3.6e-9, so ~1 ulp from rounding.
 *         Valid for arguments in [-87, 89]; callers clamp first. e^89
 *         overflows to +inf (2^n with n = 128), which sigmoid relies on.
 *   sigmoid  1/(1+exp(-x)): no cancellation, absolute error <= 0.9e-7.
 *            x > 17.3 rounds to exactly 1; x <= -89 returns exactly 0
 *            (from -88.4 on, where 2^n is built in the exponent bits).
 *   tanh  m/(2-m) with m = 1 - exp(-2|x|) from an expm1 that keeps the
 *         relative accuracy of small |x|: one exponential and one division,
 *         no branch; absolute error <= 1.5e-7, relative <= 2.5 ulp.
 *         |x| > 9.1 is exactly +-1 (clamped, and m/(2-m) rounds to 1).
 *   NaN in gives NaN out: every clamp lets NaN through (vf_min_const).
 *   Every ISA computes the same formulas; AVX-512 takes fewer instructions
 *   (VMINPS, VSCALEFPS) and FMA targets one rounding less, so the last bit
 *   may differ between ISAs.
 * float64 uses the C library per lane: correctly rounded to about 1 ulp,
 * which is what the 1e-12 agreement with the float64 reference needs.
 */
#ifndef LSTM_FAST_VECTOR_MATH_H
#define LSTM_FAST_VECTOR_MATH_H

#include <math.h>

#define LF_NB_F32 ((int)(sizeof(lf_vf) / sizeof(float)))
#define LF_NB_F64 ((int)(sizeof(lf_vd) / sizeof(double)))

static LF_INLINE lf_vf vf_splat(float a) {
    const lf_vf zero = {0};
    return a - zero; /* exact for every a, so it folds to a broadcast */
}

/* mask lanes (all ones / all zeros, as vector compares yield) pick a, others b */
static LF_INLINE lf_vf vf_select(lf_vi32 mask, lf_vf a, lf_vf b) {
    return (lf_vf)((mask & (lf_vi32)a) | (~mask & (lf_vi32)b));
}

/* The steps with an AVX-512 instruction of their own. The activations run
 * on the two vector ports the step's FMAs use, so each instruction saved
 * is time at a batch of one (fewer instructions, not a shorter chain: a
 * lower-latency polynomial of one more FMA lost). */
#if LF_VECTOR_BYTES == 64 && defined(__AVX512F__)
#include <immintrin.h>

/* VMINPS/VMAXPS return their second operand when either is NaN: x goes
 * second, so NaN passes through. */
static LF_INLINE lf_vf vf_min_const(lf_vf x, float hi) {
    return (lf_vf)_mm512_min_ps(_mm512_set1_ps(hi), (__m512)x);
}

static LF_INLINE lf_vf vf_max_const(lf_vf x, float lo) {
    return (lf_vf)_mm512_max_ps(_mm512_set1_ps(lo), (__m512)x);
}

/* c - a*b rounded once */
static LF_INLINE lf_vf vf_fnmadd(lf_vf a, lf_vf b, lf_vf c) {
    return (lf_vf)_mm512_fnmadd_ps((__m512)a, (__m512)b, (__m512)c);
}
#define LF_HAVE_FNMADD 1

/* p * 2^n for integral n (exact, +inf on overflow), in one instruction
 * without the power 2^n itself. */
static LF_INLINE lf_vf vf_times_pow2(lf_vf p, lf_vf n, lf_vf pow2) {
    (void)pow2;
    return (lf_vf)_mm512_scalef_ps((__m512)p, (__m512)n);
}

/* 2^n, n = round(y / ln2) with y * log2(e) + 1.5*2^23 = `shifted` */
static LF_INLINE lf_vf vf_pow2(lf_vf shifted, lf_vf n) {
    (void)shifted;
    return (lf_vf)_mm512_scalef_ps(_mm512_set1_ps(1.0f), (__m512)n);
}
#else
#if LF_VECTOR_BYTES == 32 && defined(__FMA__)
#include <immintrin.h>

/* c - a*b rounded once */
static LF_INLINE lf_vf vf_fnmadd(lf_vf a, lf_vf b, lf_vf c) {
    return (lf_vf)_mm256_fnmadd_ps((__m256)a, (__m256)b, (__m256)c);
}
#define LF_HAVE_FNMADD 1
#endif

/* Selects on compares, which are false for NaN: NaN passes through. */
static LF_INLINE lf_vf vf_min_const(lf_vf x, float hi) {
    return vf_select(x > hi, vf_splat(hi), x);
}

static LF_INLINE lf_vf vf_max_const(lf_vf x, float lo) {
    return vf_select(x < lo, vf_splat(lo), x);
}

/* 2^n for n in [-126, 128] built in the exponent bits (128 reads as +inf),
 * from the bits of `shifted`, where n sits in the low mantissa bits; not
 * by converting n: converting a NaN lane to int is undefined, and so is
 * shifting a negative int left. */
static LF_INLINE lf_vf vf_pow2(lf_vf shifted, lf_vf n) {
    (void)n;
    const lf_vi32 n_bits = (lf_vi32)shifted - 0x4B400000; /* the bits of 1.5*2^23 */
    return (lf_vf)((lf_vu32)(n_bits + 127) << 23);
}

/* p * 2^n, given pow2 = vf_pow2(...) = 2^n */
static LF_INLINE lf_vf vf_times_pow2(lf_vf p, lf_vf n, lf_vf pow2) {
    (void)n;
    return p * pow2;
}
#endif

/* The range reduction shared by exp and expm1: e^(k*x) = 2^n * e^r with
 * n = round(k*x / ln2) and r = k*x - n*ln2, |r| <= ln2/2, for a constant
 * k (-1 or -2: callers need no negation) and |k*x| <= 89 (callers clamp).
 * n comes from the 1.5*2^23 trick (exact for |n| < 2^22). With a fused
 * multiply-add (vf_fnmadd: AVX-512, and AVX2 with FMA) one float32 ln2
 * suffices: its 1.9e-9 error times |n| <= 128 moves r by at most 2.4e-7,
 * and by 5e-8 (a relative 5e-8 of e^(k*x)) where sigmoid and tanh are not
 * yet saturated (|n| <= 27). */
typedef struct vf_exp_parts {
    lf_vf n, r, pow2; /* pow2 = 2^n (where unused, the compiler drops it) */
} vf_exp_parts;

static LF_INLINE vf_exp_parts vf_exp_reduce(lf_vf x, float k) {
    vf_exp_parts e;
    const lf_vf shifted = x * (k * 1.44269504088896341f) + 12582912.0f;
    e.n = shifted - 12582912.0f;
    e.pow2 = vf_pow2(shifted, e.n);
#ifdef LF_HAVE_FNMADD
    e.r = vf_fnmadd(e.n, vf_splat(0.693147180559945f), x * k); /* x * k is exact */
#else
    /* n * ln2 rounded on its own would cost up to 18 ulp of e^(k*x) at
     * |n| = 26 (and which product a compiler fuses is its choice): ln2 in
     * two parts, the first short enough that n * it is exact. */
    e.r = x * k - e.n * 0.693359375f;
    e.r = e.r - e.n * -2.12194440e-4f;
#endif
    return e;
}

/* (e^r - 1) / r on |r| <= ln2/2, as 1 + r*(c2 + r*(... c6)): e^r = 1 + r*q
 * fitted to a relative error of 3.6e-9 at degree 6 (Taylor's needs degree
 * 7 for 5e-9), so e^r carries float32's rounding alone, and r*q keeps
 * e^r - 1's relative accuracy as r goes to 0. */
static LF_INLINE lf_vf vf_expm1_quotient(lf_vf r) {
    lf_vf q = vf_splat(0.0013751409f);
    q = q * r + 0.008368919f;
    q = q * r + 0.041669533f;
    q = q * r + 0.16666518f;
    q = q * r + 0.49999988f;
    return q * r + 1.0f;
}

static LF_INLINE lf_vf vf_sigmoid(lf_vf x) {
    /* e^-x from x clamped to [-89, 87]: e^89 overflows to +inf, so very
     * negative x (and -inf) give exactly 1/(1+inf) = 0 with no select
     * after the division. */
    const vf_exp_parts e = vf_exp_reduce(vf_min_const(vf_max_const(x, -89.0f), 87.0f), -1.0f);
    const lf_vf exp_minus_x = vf_times_pow2(vf_expm1_quotient(e.r) * e.r + 1.0f, e.n, e.pow2);
    return 1.0f / (1.0f + exp_minus_x);
}

/* tanh|x| = (1 - e^-2|x|) / (1 + e^-2|x|) = m / (2 - m), m = -expm1(-2|x|):
 * one exponential and one division on every lane, and near 0 m keeps
 * full relative accuracy, so no second (series) branch is needed.
 * |x| > 9.1 is exactly +-1 (clamped, and m/(2-m) rounds to 1). */
static LF_INLINE lf_vf vf_tanh(lf_vf x) {
    const lf_vf a = (lf_vf)((lf_vi32)x & 0x7fffffff);
    const vf_exp_parts e = vf_exp_reduce(vf_min_const(a, 9.1f), -2.0f);
    /* e^-2|x| - 1 = 2^n (e^r - 1) + (2^n - 1): 2^n - 1 exact, and e^r - 1
     * = r*q free of a constant term. */
    const lf_vf scale = e.pow2;
    const lf_vf minus_m = (vf_expm1_quotient(e.r) * e.r) * scale + (scale - 1.0f);
    /* m / (2 - m) as (-m) / (-2 - (-m)); then x's sign bit replaces the
     * quotient's, so tanh(+-0) = +-0 (the quotient of zeros may be -0). */
    const lf_vf t = minus_m / (-2.0f - minus_m);
    return (lf_vf)(((lf_vi32)t & 0x7fffffff) | ((lf_vi32)x & (int32_t)0x80000000));
}

static LF_INLINE lf_vf vf_relu(lf_vf x) {
    /* select on x < 0 (not x > 0) so that NaN stays NaN, as torch's relu */
    return vf_select(x < 0.0f, vf_splat(0.0f), x);
}

static LF_INLINE lf_vd vd_sigmoid(lf_vd x) {
    for (int i = 0; i < LF_NB_F64; ++i) x[i] = 1.0 / (1.0 + exp(-x[i]));
    return x;
}

static LF_INLINE lf_vd vd_tanh(lf_vd x) {
    for (int i = 0; i < LF_NB_F64; ++i) x[i] = tanh(x[i]);
    return x;
}

static LF_INLINE lf_vd vd_relu(lf_vd x) {
    for (int i = 0; i < LF_NB_F64; ++i) x[i] = x[i] < 0.0 ? 0.0 : x[i];
    return x;
}

#endif /* LSTM_FAST_VECTOR_MATH_H */
