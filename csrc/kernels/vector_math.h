/*
 * vector_math.h -- sigmoid and tanh on whole SIMD vectors, written once with
 * GCC/Clang vector extensions and compiled per ISA by kernel_isa.h (which
 * defines lf_vf / lf_vi32 / lf_vd for the ISA's vector width).
 *
 * float32, measured against float64 libm over [-20, 20] plus specials by
 * tests/test_vector_math.py:
 *   exp   (internal) range-reduced to |r| <= ln2/2, degree-7 Taylor
 *         polynomial: truncation 5e-9 relative, so ~1 ulp from rounding.
 *         Valid for x in [-87, 88]; callers clamp first.
 *   sigmoid  1/(1+exp(-x)): no cancellation, absolute error <= 1.2e-7.
 *            x > 17.3 rounds to exactly 1; x < -88 returns exactly 0.
 *   tanh  |x| < 0.4: odd Taylor series to x^13 (truncation < 4e-9 relative);
 *         |x| >= 0.4: 1 - 2/(exp(2|x|)+1), absolute error <= 2.5e-7;
 *         |x| > 9.1 is exactly +-1 (clamped, and 1 - 2.5e-8 rounds to 1).
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

static LF_INLINE lf_vf vf_exp_clamped(lf_vf x) {
    /* n = round(x / ln2) by the 1.5*2^23 trick: exact for |n| < 2^22. */
    const lf_vf n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    /* ln2 split in two so n*ln2_hi is exact and r keeps full precision. */
    lf_vf r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    lf_vf p = vf_splat(1.0f / 5040.0f);
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const lf_vi32 ni = __builtin_convertvector(n, lf_vi32);
    return p * (lf_vf)((ni + 127) << 23);
}

static LF_INLINE lf_vf vf_sigmoid(lf_vf x) {
    lf_vf z = -x;
    z = vf_select(z > 88.0f, vf_splat(88.0f), z);
    z = vf_select(z < -87.0f, vf_splat(-87.0f), z);
    const lf_vf s = 1.0f / (1.0f + vf_exp_clamped(z));
    return vf_select(x < -88.0f, vf_splat(0.0f), s);
}

static LF_INLINE lf_vf vf_tanh(lf_vf x) {
    const lf_vi32 sign = (lf_vi32)x & (int32_t)0x80000000;
    const lf_vf a = (lf_vf)((lf_vi32)x & 0x7fffffff);
    const lf_vf a_clamped = vf_select(a > 9.1f, vf_splat(9.1f), a);
    const lf_vf large = 1.0f - 2.0f / (vf_exp_clamped(a_clamped + a_clamped) + 1.0f);
    const lf_vf a2 = a * a;
    lf_vf q = vf_splat(21844.0f / 6081075.0f);
    q = q * a2 - 1382.0f / 155925.0f;
    q = q * a2 + 62.0f / 2835.0f;
    q = q * a2 - 17.0f / 315.0f;
    q = q * a2 + 2.0f / 15.0f;
    q = q * a2 - 1.0f / 3.0f;
    const lf_vf small = a + a * a2 * q;
    const lf_vf t = vf_select(a < 0.4f, small, large);
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
