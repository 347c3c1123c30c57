/*
 * pack.c -- torch-layout weights -> panels (the two layouts in internal.h).
 * Done once per parameter change, never per call. Padding columns are zero
 * so the kernels never need a tail case inside a panel.
 */
#include <math.h>
#include <string.h>
#include "internal.h"

#define DEFINE_PACKERS(REAL, SFX)                                                         \
    /* W: (gates*n, K) row-major -> panels of all gates of NB units, in the              \
     * recurrent (K gate-interleaved rows) or projection (a padded block per gate)        \
     * layout. */                                                                         \
    static void pack_panels_##SFX(const void *W_, int64_t gates, int64_t n, int64_t K,    \
                                  int64_t NB, int projection, void *out_) {               \
        const REAL *W = W_;                                                               \
        REAL *out = out_;                                                                 \
        const int64_t n_panels = (n + NB - 1) / NB, width = gates * NB;                   \
        const int64_t rows = projection ? LF_PROJECTION_ROWS(K) : K;                      \
        const int64_t k_stride = projection ? LF_PROJECTION_K_STRIDE(NB)                  \
                                            : LF_RECURRENT_K_STRIDE(gates, NB);           \
        const int64_t gate_stride = projection ? LF_PROJECTION_GATE_STRIDE(K, NB)         \
                                               : LF_RECURRENT_GATE_STRIDE(NB);            \
        memset(out, 0, (size_t)(n_panels * rows * width) * sizeof(REAL));                 \
        for (int64_t g = 0; g < gates; ++g)                                               \
            for (int64_t j = 0; j < n; ++j) {                                             \
                const REAL *src = W + (g * n + j) * K;                                    \
                REAL *dst = out + (j / NB) * rows * width + g * gate_stride + j % NB;     \
                for (int64_t k = 0; k < K; ++k) dst[k * k_stride] = src[k];               \
            }                                                                             \
    }                                                                                     \
    /* The biases that can be added before the recurrent product, in panel order.        \
     * GRU keeps b_hn out: it sits inside r * (W_hn h + b_hn). */                          \
    static void pack_bias_##SFX(const lf_plan *p, const void *b_ih_, const void *b_hh_,   \
                                void *bias_, void *b_hn_) {                               \
        const REAL *b_ih = b_ih_, *b_hh = b_hh_;                                          \
        REAL *bias = bias_, *b_hn = b_hn_;                                                \
        const int64_t G = p->gates, H = p->desc.hidden_size, NB = p->block;               \
        const int64_t n_panels = p->hidden_padded / NB;                                   \
        memset(bias, 0, (size_t)(n_panels * G * NB) * sizeof(REAL));                      \
        if (b_hn) memset(b_hn, 0, (size_t)p->hidden_padded * sizeof(REAL));               \
        if (!b_ih) return;                                                                \
        for (int64_t g = 0; g < G; ++g)                                                   \
            for (int64_t j = 0; j < H; ++j) {                                             \
                const int recurrent_inside = b_hn && g == 2;                              \
                REAL v = b_ih[g * H + j] + (recurrent_inside ? 0 : b_hh[g * H + j]);      \
                bias[(j / NB) * G * NB + g * NB + j % NB] = v;                            \
                if (recurrent_inside) b_hn[j] = b_hh[g * H + j];                          \
            }                                                                             \
    }

DEFINE_PACKERS(float, f32)
DEFINE_PACKERS(double, f64)

/* float -> bfloat16, rounded to nearest even; a finite value that would
 * round to infinity is truncated instead, so each term of a split stays
 * finite and the terms still sum to the value. NaN stays NaN (quieted: its
 * payload may lie in the 16 bits that go). */
static uint16_t bf16_of(float f) {
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    if (f != f) return (uint16_t)((bits >> 16) | 0x0040u);
    if ((bits & 0x7f800000u) == 0x7f800000u) return (uint16_t)(bits >> 16); /* inf */
    const uint32_t rounded = bits + 0x7fffu + ((bits >> 16) & 1u);
    if ((rounded & 0x7f800000u) == 0x7f800000u) return (uint16_t)(bits >> 16);
    return (uint16_t)(rounded >> 16);
}

static float float_of_bf16(uint16_t h) {
    const uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* w as hi + mid + lo, each the bfloat16 nearest to what the terms before
 * it leave (exact differences: 24 significant bits in all, as float32's,
 * but the tiles read denormal terms as zero, so below about 2^-110 a
 * weight loses its last bits). Infinities and NaN keep hi alone. The rule
 * of the AMX kernel's split of the activations (kernels_amx.c), but for
 * one thing: a mid or lo of a finite w != 0 that the tiles would read as
 * zero (zero or denormal) becomes the smallest normal of w's sign, so
 * that an infinite input times w sums to an infinity, as in float32,
 * rather than to inf * 0 = NaN. That adds at most about 2^-125 |x| to a
 * product x * w. */
static void split_bf16x3(float w, uint16_t terms[LF_AMX_TERMS]) {
    float rest = w;
    for (int t = 0; t < LF_AMX_TERMS; ++t) {
        terms[t] = bf16_of(rest);
        rest = isfinite(rest) ? rest - float_of_bf16(terms[t]) : 0.0f;
    }
    const uint16_t smallest_normal = (uint16_t)(0x0080u | (signbit(w) ? 0x8000u : 0u));
    for (int t = 1; t < LF_AMX_TERMS; ++t)
        if (isfinite(w) && w != 0 && (terms[t] & 0x7f80u) == 0) terms[t] = smallest_normal;
}

/* W_ih or W_hh (gates*n, K) float32 -> AMX tiles of its panels' columns
 * (internal.h, LF_AMX_*). */
static void pack_amx_tiles(const float *W, int64_t gates, int64_t n, int64_t K, int64_t NB,
                           void *out_) {
    const int64_t n_col_tiles = (n + NB - 1) / NB * gates, k_blocks = LF_AMX_K_BLOCKS(K);
    uint16_t *out = out_;
    const size_t tile_values = LF_AMX_TILE_BYTES / sizeof(uint16_t);
    memset(out, 0, (size_t)n_col_tiles * LF_AMX_STRIP_BYTES(K));
    for (int64_t c = 0; c < n_col_tiles; ++c) {
        const int64_t g = c % gates, unit0 = c / gates * NB;
        for (int64_t u = 0; u < NB && unit0 + u < n; ++u) {
            const float *row = W + (g * n + unit0 + u) * K;
            for (int64_t k = 0; k < K; ++k) {
                const int64_t j = k / LF_AMX_K_BLOCK, i = k % LF_AMX_K_BLOCK / 2, half = k % 2;
                uint16_t terms[LF_AMX_TERMS];
                split_bf16x3(row[k], terms);
                for (int t = 0; t < LF_AMX_TERMS; ++t)
                    out[((size_t)(c * k_blocks + j) * LF_AMX_TERMS + (size_t)t) * tile_values +
                        (size_t)(i * 2 * NB + u * 2 + half)] = terms[t];
            }
        }
    }
}

typedef struct packers {
    void (*panels)(const void *W, int64_t gates, int64_t n, int64_t K, int64_t NB,
                   int projection, void *out);
    void (*bias)(const lf_plan *p, const void *b_ih, const void *b_hh, void *bias, void *b_hn);
} packers;

static const packers packers_of_dtype[2] = {
    [LF_FLOAT32] = {pack_panels_f32, pack_bias_f32},
    [LF_FLOAT64] = {pack_panels_f64, pack_bias_f64},
};

lf_status lf_pack_weights(const lf_plan *plan, int64_t layer, int64_t direction,
                          const void *w_ih, const void *w_hh,
                          const void *b_ih, const void *b_hh, const void *w_hr,
                          void *packed, size_t packed_bytes) {
    return lf_pack_weights_ex(plan, layer, direction, w_ih, w_hh, b_ih, b_hh, w_hr, NULL, packed,
                              packed_bytes);
}

lf_status lf_pack_weights_ex(const lf_plan *plan, int64_t layer, int64_t direction,
                             const void *w_ih, const void *w_hh,
                             const void *b_ih, const void *b_hh, const void *w_hr,
                             const void *peephole, void *packed, size_t packed_bytes) {
    if (!plan || !w_ih || !w_hh || !packed) return LF_ERR_NULL_POINTER;
    const lf_desc *d = &plan->desc;
    if (layer < 0 || layer >= d->num_layers || direction < 0 || direction >= d->num_directions)
        return LF_ERR_BAD_INDEX;
    if (d->has_bias ? (!b_ih || !b_hh) : (b_ih || b_hh)) return LF_ERR_NULL_POINTER;
    if ((d->proj_size > 0) != (w_hr != NULL)) return LF_ERR_NULL_POINTER;
    if (((d->flags & LF_LSTM_PEEPHOLE) != 0) != (peephole != NULL)) return LF_ERR_NULL_POINTER;
    lf_packed_layout L;
    lf_status st = lf_packed_layout_of(plan, layer, &L);
    if (st != LF_OK) return st;
    if (packed_bytes < L.total) return LF_ERR_BUFFER_TOO_SMALL;

    char *base = lf_align_ptr(packed);
    const int64_t G = plan->gates, H = d->hidden_size, R = plan->state_size, NB = plan->block;
    const int reset_before = (d->flags & LF_GRU_RESET_BEFORE_PRODUCT) != 0;
    /* torch's b_hn stays apart because r multiplies it; with the reset
     * before the product it is an ordinary bias. */
    const int keep_b_hn = d->cell == LF_CELL_GRU && !reset_before;
    const int64_t hh_gates = reset_before ? 2 : G;
    const packers *pack = &packers_of_dtype[d->dtype];
    pack->panels(w_ih, G, H, L.in_size, NB, 1, base + L.w_ih);
    pack->panels(w_hh, hh_gates, H, R, NB, 0, base + L.w_hh);
    if (reset_before) /* W_hn: the third gate block of W_hh */
        pack->panels((const char *)w_hh + (size_t)(2 * H * R) * plan->elem_size, 1, H, R, NB,
                     0, base + L.w_hn);
    pack->bias(plan, b_ih, b_hh, base + L.bias, keep_b_hn ? base + L.b_hn : NULL);
    if (w_hr) pack->panels(w_hr, 1, d->proj_size, H, NB, 1, base + L.w_hr);
    if (peephole) pack->panels(peephole, 3, H, 1, NB, 0, base + L.peephole);
    if (((const lf_kernels *)plan->kernels)->amx_split_rows) {
        pack_amx_tiles(w_ih, G, H, L.in_size, NB, base + L.w_ih_tiles);
        if (reset_before) {
            pack_amx_tiles(w_hh, 2, H, R, NB, base + L.w_hh_tiles);
            pack_amx_tiles((const float *)w_hh + 2 * H * R, 1, H, R, NB, base + L.w_hn_tiles);
        } else {
            pack_amx_tiles(w_hh, G, H, R, NB, base + L.w_hh_tiles);
        }
    }
    return LF_OK;
}
