/*
 * vector_math.h -- sigmoid and tanh on whole SIMD vectors, written once with
 * GCC/Clang vector extensions and compiled per ISA by kernel_isa.h (which
 * defines lf_vf / lf_vi32 / lf_vu32 / lf_vd for the ISA's vector width).
 *
 * float32, measured against float64 libm over [-20, 20] plus specials by
 * tests/test_vector_math.py:
 *   exp   (internal) range-reduced to |r| <= ln2/2, degree-7 Taylor
 *         polynomial: truncation 5e-9 relative, so ~1 ulp from rounding.
 *         Valid for x in [-87, 88]; callers clamp first. From 88.4 to 89
 *         the exponent 2^128 reads as +inf, which sigmoid relies on.
 *   sigmoid  1/(1+exp(-x)): no cancellation, absolute error <= 0.9e-7.
 *            x > 17.3 rounds to exactly 1; x < -88.4 returns exactly 0.
 *   tanh  m/(2-m) with m = 1 - exp(-2|x|) from an expm1 that keeps the
 *         relative accuracy of small |x|: one exponential and one division,
 *         no branch; absolute error <= 1.5e-7, relative <= 3.2 ulp.
 *         |x| > 9.1 is exactly +-1 (clamped, and m/(2-m) rounds to 1).
 *   NaN in gives NaN out: every clamp is a compare-and-select whose compare
 *   is false for NaN, so NaN flows through to the result.
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

/* The range reduction shared by exp and expm1: x = n*ln2 + r with
 * |r| <= ln2/2, e^r = 1 + r*q (q a degree-6 Taylor polynomial, so e^r's
 * truncation is 5e-9 relative), and scale = 2^n built in the exponent bits. */
typedef struct vf_exp_parts {
    lf_vf r, q, scale;
} vf_exp_parts;

static LF_INLINE vf_exp_parts vf_exp_reduce(lf_vf x) {
    vf_exp_parts e;
    /* n = round(x / ln2) by the 1.5*2^23 trick: exact for |n| < 2^22. */
    const lf_vf shifted = x * 1.44269504088896341f + 12582912.0f;
    const lf_vf n = shifted - 12582912.0f;
    /* ln2 split in two so n*ln2_hi is exact and r keeps full precision. */
    e.r = x - n * 0.693359375f;
    e.r = e.r - n * -2.12194440e-4f;
    lf_vf q = vf_splat(1.0f / 5040.0f);
    q = q * e.r + 1.0f / 720.0f;
    q = q * e.r + 1.0f / 120.0f;
    q = q * e.r + 1.0f / 24.0f;
    q = q * e.r + 1.0f / 6.0f;
    q = q * e.r + 0.5f;
    e.q = q * e.r + 1.0f;
    /* n as an integer from the bits of the shifted sum (exponent fixed, n
     * in the low mantissa bits), not by converting n: converting a NaN lane
     * to int is undefined, and so is shifting a negative int left. */
    const lf_vi32 ni = (lf_vi32)shifted - 0x4B400000; /* the bits of 1.5*2^23 */
    e.scale = (lf_vf)((lf_vu32)(ni + 127) << 23);
    return e;
}

static LF_INLINE lf_vf vf_exp_clamped(lf_vf x) {
    const vf_exp_parts e = vf_exp_reduce(x);
    return (e.q * e.r + 1.0f) * e.scale;
}

/* e^x - 1 for x in [-19, 0], without the cancellation of exp(x) - 1 near 0:
 * e^x - 1 = 2^n (e^r - 1) + (2^n - 1), with 2^n - 1 exact and e^r - 1 = r*q
 * free of a constant term, so small x keeps its relative accuracy. */
static LF_INLINE lf_vf vf_expm1_nonpositive(lf_vf x) {
    const vf_exp_parts e = vf_exp_reduce(x);
    return (e.q * e.r) * e.scale + (e.scale - 1.0f);
}

static LF_INLINE lf_vf vf_sigmoid(lf_vf x) {
    /* The upper clamp of -x is past ln(FLT_MAX): there the exponent bits
     * 2^128 read as +inf, so very negative x (and -inf) give exactly
     * 1/(1+inf) = 0 with no select after the division. */
    lf_vf z = -x;
    z = vf_select(z > 89.0f, vf_splat(89.0f), z);
    z = vf_select(z < -87.0f, vf_splat(-87.0f), z);
    return 1.0f / (1.0f + vf_exp_clamped(z));
}

/* tanh|x| = (1 - e^-2|x|) / (1 + e^-2|x|) = m / (2 - m), m = -expm1(-2|x|):
 * one exponential and one division on every lane, and near 0 m keeps
 * full relative accuracy, so no second (series) branch is needed. */
static LF_INLINE lf_vf vf_tanh(lf_vf x) {
    const lf_vi32 sign = (lf_vi32)x & (int32_t)0x80000000;
    const lf_vf a = (lf_vf)((lf_vi32)x & 0x7fffffff);
    const lf_vf a_clamped = vf_select(a > 9.1f, vf_splat(9.1f), a);
    /* 0 - e, not -e: expm1(-0) is +0 here, and -(+0) would give tanh(+0) = -0. */
    const lf_vf m = 0.0f - vf_expm1_nonpositive(-2.0f * a_clamped);
    const lf_vf t = m / (2.0f - m);
    return (lf_vf)((lf_vi32)t | sign);
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
