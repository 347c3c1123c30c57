/* AMX kernels: the AVX-512 steps, with every float32 input projection
 * (x @ W_ih + biases), and in calls with large batches the recurrent
 * products (h @ W_hh, grid.c), on the AMX tiles. setup.py compiles this
 * file alone with the AVX-512 flags plus -mavx512bf16 -mamx-tile
 * -mamx-bf16.
 *
 * AMX multiplies bfloat16 (8 significant bits) into float32 sums. Each
 * float32 operand is split into three bfloat16 terms, a = a0 + a1 + a2 (24
 * significant bits, as float32's), and the six products whose size
 * reaches float32's rounding error are summed: a0b0, a0b1, a0b2, a1b0,
 * a1b1, a2b0 (the three left out are below 2^-24 of a*b; each product of
 * two bfloat16 is exact in float32). So the projection has float32's
 * accuracy, at six tile products where one would do for bfloat16: one
 * core's tiles multiply bfloat16 at about 16x its float32 FMA rate
 * (3.7 TFLOP/s against 240 GFLOP/s on the Intel VM of bench/RESULTS.md).
 *
 * Calls large enough (lf_call_uses_amx, internal.h) project every input
 * row of every layer here, so their bits do not depend on the thread
 * count, and the steps never fold x @ W_ih in (not ahead, not in one-step
 * chunks). Other calls run exactly the AVX-512 path: its bits differ from
 * these in the last place, so a sequence's results can depend on the
 * shape of the call it runs in (README).
 */
#include "avx512_tiles.h"
#if !defined(__AMX_TILE__) || !defined(__AMX_BF16__) || !defined(__AVX512BF16__)
#error "kernels_amx.c must be compiled with -mamx-tile -mamx-bf16 -mavx512bf16"
#endif
#include <immintrin.h>

#define LF_ISA_SUFFIX amx
#define LF_ISA_ID LF_ISA_AMX
#define LF_AHEAD_Q 2 /* for the calls off the tiles (lf_call_uses_amx), as AVX-512's */
#define LF_FLOAT32_ONLY 1
#define LF_PROJECTION_F32 amx_project_f32
#define LF_AMX_SPLIT_ROWS amx_split_rows
struct lf_gemm_args;
static void amx_project_f32(const struct lf_gemm_args *g);
static void amx_split_rows(const void *A, int64_t lda, int64_t M, int64_t K, int64_t tile0,
                           int64_t tile1, void *out);
#include "kernel_isa.h"

/* Tiles: 0-3 sums (two row tiles x two column tiles), 4-5 the rows' terms,
 * 6-7 the columns'. All 16 rows x 64 bytes. A constant in memory rather
 * than filled in on the stack: GCC 12 dropped such stores as dead before
 * _tile_loadconfig in a small function (the palette alone was written, and
 * LDTILECFG faulted); this kernel's copy survived only by chance. */
typedef struct amx_config {
    uint8_t palette, start_row, reserved[14];
    uint16_t bytes_per_row[16];
    uint8_t rows[16];
} amx_config;

static _Alignas(64) const amx_config amx_tiles_16x64 = {
    .palette = 1,
    .bytes_per_row = {64, 64, 64, 64, 64, 64, 64, 64},
    .rows = {16, 16, 16, 16, 16, 16, 16, 16},
};

/* A pass over the row tiles covers up to this many column tiles (256
 * columns): their terms, K x 256 x 6 bytes (768 KiB at K=512), stay in the
 * L2 while every row tile streams past them. Against all columns in one
 * pass (which streams the terms from the L3 once per pair of row tiles):
 * 0.82x the time at M=128, K=512, N=2048. */
#define AMX_COLUMN_GROUP 16

/* 16 floats as their three bfloat16 terms (the rule of pack.c's
 * split_bf16x3: each the nearest to what the terms before leave; a finite
 * value that would round to infinity truncated; infinities and NaN keep hi
 * alone). */
static inline void split_16(__m512 v, __m256i terms[LF_AMX_TERMS]) {
    const __m512i exponent = _mm512_set1_epi32(0x7f800000);
    const __m512i bits = _mm512_castps_si512(v);
    const __mmask16 finite =
        _mm512_cmpneq_epi32_mask(_mm512_and_si512(bits, exponent), exponent);
    __m512i hi = _mm512_slli_epi32(_mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(v)), 16);
    const __mmask16 overflowed =
        finite & _mm512_cmpeq_epi32_mask(_mm512_and_si512(hi, exponent), exponent);
    hi = _mm512_mask_and_epi32(hi, overflowed, bits, _mm512_set1_epi32((int)0xffff0000u));
    const __m512 rest = _mm512_maskz_sub_ps(finite, v, _mm512_castsi512_ps(hi));
    const __m256bh mid = _mm512_cvtneps_pbh(rest);
    const __m512 mid_f =
        _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32((__m256i)mid), 16));
    terms[0] = _mm512_cvtepi32_epi16(_mm512_srli_epi32(hi, 16));
    terms[1] = (__m256i)mid;
    terms[2] = (__m256i)_mm512_cvtneps_pbh(_mm512_sub_ps(rest, mid_f));
}

/* Row tiles [tile0, tile1) of A (M x K, stride lda) as AMX tiles of their
 * terms (internal.h, lf_gemm_args.a_split): zeros past row M and past K. */
static void amx_split_rows(const void *A_, int64_t lda, int64_t M, int64_t K, int64_t tile0,
                           int64_t tile1, void *out) {
    const float *A = A_;
    const int64_t k_blocks = LF_AMX_K_BLOCKS(K);
    for (int64_t tile = tile0; tile < tile1; ++tile)
        for (int64_t j = 0; j < k_blocks; ++j) {
            uint16_t *dst = (uint16_t *)((char *)out + ((size_t)(tile * k_blocks + j) *
                                                        LF_AMX_TERMS * LF_AMX_TILE_BYTES));
            for (int64_t r = 0; r < 16; ++r)
                for (int64_t half = 0; half < 2; ++half) {
                    const int64_t row = tile * 16 + r, k = j * LF_AMX_K_BLOCK + half * 16;
                    const int64_t left = row < M && k < K ? K - k : 0;
                    const __mmask16 valid = left >= 16 ? 0xffff : (__mmask16)((1u << left) - 1);
                    __m256i terms[LF_AMX_TERMS];
                    split_16(_mm512_maskz_loadu_ps(valid, valid ? A + row * lda + k : A), terms);
                    for (int t = 0; t < LF_AMX_TERMS; ++t)
                        _mm256_storeu_si256((__m256i *)(dst + t * 512 + r * 32 + half * 16),
                                            terms[t]);
                }
        }
}

/* Sum tile `tile` holds rows [row, row + 16) and columns [col, col + 16)
 * of C; those past M or n_cols stay unwritten. */
#define AMX_STORE(tile, g, row, col)                                                        \
    do {                                                                                    \
        float *c_ = (float *)(g)->C + (row) * (g)->ldc + (col);                             \
        if ((row) + 16 <= (g)->M && (col) + 16 <= (g)->n_cols) {                            \
            _tile_stored(tile, c_, (g)->ldc * (int64_t)sizeof(float));                      \
        } else {                                                                            \
            _Alignas(64) float bounce_[16][16];                                             \
            _tile_stored(tile, bounce_, 64);                                                \
            const int64_t rows_ = (g)->M - (row) < 16 ? (g)->M - (row) : 16;                \
            const int64_t cols_ = (g)->n_cols - (col) < 16 ? (g)->n_cols - (col) : 16;      \
            for (int64_t r_ = 0; r_ < rows_ && cols_ > 0; ++r_)                             \
                memcpy(c_ + r_ * (g)->ldc, bounce_[r_], (size_t)cols_ * sizeof(float));     \
        }                                                                                   \
    } while (0)

/* Sum tile `tile` from rows [row, row + 16) and columns [col, col + 16) of
 * C, zeros past M or n_cols (never read: a partial tile would reach past
 * the buffer). */
#define AMX_LOAD(tile, g, row, col)                                                         \
    do {                                                                                    \
        const float *c_ = (const float *)(g)->C + (row) * (g)->ldc + (col);                 \
        if ((row) + 16 <= (g)->M && (col) + 16 <= (g)->n_cols) {                            \
            _tile_loadd(tile, c_, (g)->ldc * (int64_t)sizeof(float));                       \
        } else {                                                                            \
            _Alignas(64) float bounce_[16][16];                                             \
            memset(bounce_, 0, sizeof bounce_);                                             \
            const int64_t rows_ = (g)->M - (row) < 16 ? (g)->M - (row) : 16;                \
            const int64_t cols_ = (g)->n_cols - (col) < 16 ? (g)->n_cols - (col) : 16;      \
            for (int64_t r_ = 0; r_ < rows_ && cols_ > 0; ++r_)                             \
                memcpy(bounce_[r_], c_ + r_ * (g)->ldc, (size_t)cols_ * sizeof(float));     \
            _tile_loadd(tile, bounce_, 64);                                                 \
        }                                                                                   \
    } while (0)

/* The products of one k block into sums 0-3: for each term of the rows
 * (tiles 4, 5), each term of the columns (6, 7) that pairs with it. `both`
 * row tiles and `pair` column tiles, or only the first of each. */
static inline void multiply_block(const char *row0, const char *row1, const char *col0,
                                  const char *col1, int both, int pair) {
    for (int ta = 0; ta < LF_AMX_TERMS; ++ta) {
        _tile_loadd(4, row0 + ta * LF_AMX_TILE_BYTES, 64);
        if (both) _tile_loadd(5, row1 + ta * LF_AMX_TILE_BYTES, 64);
        for (int tb = 0; tb < LF_AMX_TERMS - ta; ++tb) {
            _tile_loadd(6, col0 + tb * LF_AMX_TILE_BYTES, 64);
            _tile_dpbf16ps(0, 4, 6);
            if (both) _tile_dpbf16ps(2, 5, 6);
            if (pair) {
                _tile_loadd(7, col1 + tb * LF_AMX_TILE_BYTES, 64);
                _tile_dpbf16ps(1, 4, 7);
                if (both) _tile_dpbf16ps(3, 5, 7);
            }
        }
    }
}

/* The FMA GEMM out of line: inlined into amx_project_f32 below, its loops
 * took 1.06x the time (M=50, K=64, N=256, one thread), 1.03x a whole call
 * of the tiny layer (T=50, I=H=64). */
static __attribute__((noinline)) void fma_project_f32(const lf_gemm_args *g) { gemm_f32(g); }

/* C = A @ W + bias (or with g->accumulate, C += A @ W) on the tiles, from
 * g->a_split and g->tiles; the FMA GEMM when there are no tiles. Each sum
 * starts from the bias (or C) and adds the products k block by k block in
 * one order, whatever the rows or the column range. */
static void amx_project_f32(const lf_gemm_args *g) {
    if (!g->tiles) {
        fma_project_f32(g);
        return;
    }
    const int64_t k_blocks = LF_AMX_K_BLOCKS(g->K), n_tiles = g->n_panels * g->gates;
    const int64_t row_tiles = (g->M + 15) / 16;
    const size_t tile_row_bytes = LF_AMX_STRIP_BYTES(g->K);
    const float *bias = g->bias;
    _Alignas(64) float bias_rows[AMX_COLUMN_GROUP][16][16];
    _tile_loadconfig(&amx_tiles_16x64);
    for (int64_t c0 = 0; c0 < n_tiles; c0 += AMX_COLUMN_GROUP) {
        const int64_t c1 = c0 + AMX_COLUMN_GROUP < n_tiles ? c0 + AMX_COLUMN_GROUP : n_tiles;
        for (int64_t c = c0; c < c1 && !g->accumulate; ++c)
            for (int r = 0; r < 16; ++r)
                _mm512_store_ps(bias_rows[c - c0][r],
                                bias ? _mm512_loadu_ps(bias + c * 16) : _mm512_setzero_ps());
        for (int64_t rt = 0; rt < row_tiles; rt += 2) {
            const int both = rt + 1 < row_tiles;
            const char *row0 = (const char *)g->a_split + (size_t)rt * tile_row_bytes;
            for (int64_t c = c0; c < c1; c += 2) {
                const int pair = c + 1 < c1;
                if (g->accumulate) {
                    AMX_LOAD(0, g, rt * 16, c * 16);
                    if (pair) AMX_LOAD(1, g, rt * 16, c * 16 + 16);
                    if (both) AMX_LOAD(2, g, rt * 16 + 16, c * 16);
                    if (both && pair) AMX_LOAD(3, g, rt * 16 + 16, c * 16 + 16);
                } else {
                    _tile_loadd(0, bias_rows[c - c0], 64);
                    if (pair) _tile_loadd(1, bias_rows[c + 1 - c0], 64);
                    if (both) _tile_loadd(2, bias_rows[c - c0], 64);
                    if (both && pair) _tile_loadd(3, bias_rows[c + 1 - c0], 64);
                }
                const char *col0 = (const char *)g->tiles + (size_t)c * tile_row_bytes;
                for (int64_t j = 0; j < k_blocks; ++j) {
                    const size_t at = (size_t)j * LF_AMX_TERMS * LF_AMX_TILE_BYTES;
                    multiply_block(row0 + at, row0 + tile_row_bytes + at, col0 + at,
                                   col0 + tile_row_bytes + at, both, pair);
                }
                AMX_STORE(0, g, rt * 16, c * 16);
                if (pair) AMX_STORE(1, g, rt * 16, c * 16 + 16);
                if (both) AMX_STORE(2, g, rt * 16 + 16, c * 16);
                if (both && pair) AMX_STORE(3, g, rt * 16 + 16, c * 16 + 16);
            }
        }
    }
    _tile_release();
}
