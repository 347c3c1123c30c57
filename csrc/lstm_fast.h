/*
 * lstm_fast.h -- the one public header of the lstm_fast C core.
 *
 * Plain C99, no Python. Every function returns an lf_status (or a plain
 * value that cannot fail); nothing aborts or prints. Memory is owned by the
 * caller: ask a plan how many bytes it needs, hand the buffers in.
 *
 * Dimension letters, used everywhere in csrc/:
 *   T  time steps            B  batch size
 *   I  input features        H  hidden units (cell state width)
 *   P  projection width (LSTMP; 0 = no projection)
 *   R  width of the recurrent state h: P when P > 0, else H
 *   G  gates per cell: LSTM 4 (i, f, g, o), GRU 3 (r, z, n), RNN 1
 *   L  layers                D  directions (1 or 2)
 *
 * Weight conventions are torch.nn's: W_ih is (G*H, I_l), W_hh is (G*H, R),
 * b_ih and b_hh are (G*H), W_hr is (P, H), gates stacked in torch's order.
 * I_l is I for layer 0 and D*R above it.
 *
 * Life cycle:
 *   lf_plan_init        validate a description, decide every size once
 *   lf_plan_packed_size bytes for the packed weights of the whole network
 *   lf_pack_weights     lay one layer-direction's weights out for the kernels
 *   lf_plan_schedule    (optional) how a forward of T x B will run
 *   lf_plan_workspace_size / lf_forward
 *                       run a batch of sequences, as often as wanted,
 *                       concurrently from several threads (the plan and the
 *                       packed weights are only read).
 */
#ifndef LSTM_FAST_H
#define LSTM_FAST_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LF_VERSION_STRING "0.1.0"

typedef enum lf_status {
    LF_OK = 0,
    LF_ERR_NULL_POINTER,      /* a required pointer was NULL */
    LF_ERR_BAD_DIMENSION,     /* a size is negative, zero where it must not be, or inconsistent */
    LF_ERR_OVERFLOW,          /* a size computation would overflow size_t / int64 */
    LF_ERR_BAD_CELL_KIND,     /* unknown lf_cell_kind, or an option the kind lacks (P>0 on a GRU) */
    LF_ERR_BAD_DTYPE,         /* unknown lf_dtype */
    LF_ERR_BAD_LENGTH,        /* a sequence length outside [0, T] */
    LF_ERR_BAD_ISA,           /* unknown ISA name */
    LF_ERR_ISA_UNAVAILABLE,   /* the ISA was not compiled in or the CPU/OS cannot run it */
    LF_ERR_BAD_INDEX,         /* layer or direction index out of range */
    LF_ERR_BUFFER_TOO_SMALL,  /* a caller buffer is smaller than the plan asked for */
    LF_ERR_OUT_OF_MEMORY,     /* the C library could not allocate (thread pool only) */
    LF_ERR_THREADS,           /* the OS refused to create a thread */
    LF_ERR_BAD_OPTION,        /* unknown activation, non-finite alpha/beta/clip (alpha/beta
                                 that round to inf as floats, in a float32 plan),
                                 negative clip, unknown flag bit */
    LF_STATUS_COUNT
} lf_status;

/* A static, human-readable sentence for a status code (never NULL). */
const char *lf_status_string(lf_status status);

typedef enum lf_cell_kind {
    LF_CELL_LSTM = 0,
    LF_CELL_GRU = 1,       /* torch convention: reset applied after the recurrent product */
    LF_CELL_RNN_TANH = 2,
    LF_CELL_RNN_RELU = 3
} lf_cell_kind;

typedef enum lf_dtype { LF_FLOAT32 = 0, LF_FLOAT64 = 1 } lf_dtype;

/* Instruction sets with a kernel table. Ordered from least to most capable. */
typedef enum lf_isa {
    LF_ISA_PORTABLE = 0,   /* plain C, baseline compiler flags: runs anywhere */
    LF_ISA_AVX2 = 1,       /* x86-64 AVX2 + FMA */
    LF_ISA_AVX512 = 2,     /* x86-64 AVX-512 F/BW/DQ/VL */
    LF_ISA_AMX = 3,        /* AVX-512, with float32 input projections on AMX tiles as
                              six bfloat16 products of three-way splits (float32's
                              accuracy); float64 plans run the AVX-512 kernels */
    LF_ISA_COUNT
} lf_isa;

/* Name used by LSTM_FAST_ISA and cpu_info(): "portable", "avx2", "avx512", "amx". */
const char *lf_isa_name(lf_isa isa);
/* Strict parse of an ISA name; "auto" yields the best available ISA. */
lf_status lf_isa_parse(const char *name, lf_isa *out);
/* 1 if kernels for the ISA were compiled into this build. */
int lf_isa_compiled(lf_isa isa);
/* 1 if compiled and the CPU and OS can run it (cpuid + XGETBV). Cheap and
 * stateless: detection is repeated rather than cached, so there is no global
 * state to race on. */
int lf_isa_available(lf_isa isa);
/* The most capable available ISA. */
lf_isa lf_isa_best(void);

/* Bytes of a core's L2 cache as the CPU reports it, 0 if unknown. */
int64_t lf_cpu_l2_bytes(void);

/* Elements per SIMD vector for an ISA and dtype: the hidden-unit block width
 * of the packed weights (informational; packing handles it). */
int64_t lf_isa_vector_width(lf_isa isa, lf_dtype dtype);

/* Cell variants (lf_desc.flags). Variants of the existing cells, not new
 * kinds: weights keep torch's layout and gate order; ONNX/Keras conversions
 * reorder gates before packing. A flag the cell kind lacks is
 * LF_ERR_BAD_CELL_KIND. */
/* Gers & Schmidhuber peepholes, as ONNX: i and f also see p_i*c(t-1) and
 * p_f*c(t-1), o sees p_o*c(t) (the new cell). Vectors passed to
 * lf_pack_weights_ex as `peephole`, (3*H) in the order i, f, o. */
#define LF_LSTM_PEEPHOLE 0x1u
/* Coupled input and forget gates, as ONNX Runtime computes input_forget=1:
 * f = 1 - i. The forget rows of the weights and p_f are then unused. */
#define LF_LSTM_COUPLED_INPUT_FORGET 0x2u
/* GRU with the reset gate applied before the recurrent product (ONNX
 * linear_before_reset=0, Keras reset_after=False):
 *   n = g(W_in x + b_in + W_hn (r * h) + b_hn)
 * instead of torch's g(W_in x + b_in + r * (W_hn h + b_hn)). */
#define LF_GRU_RESET_BEFORE_PRODUCT 0x4u
#define LF_FLAGS_ALL 0x7u

/* Activation functions of ONNX's recurrent operators. alpha and beta are
 * used as given (the caller applies ONNX's defaults):
 *   AFFINE alpha*x+beta   LEAKY_RELU x>=0 ? x : alpha*x   THRESHOLDED_RELU x>=alpha ? x : 0
 *   SCALED_TANH alpha*tanh(beta*x)   HARD_SIGMOID min(max(alpha*x+beta, 0), 1)
 *   ELU x>=0 ? x : alpha*(e^x-1)   SOFTSIGN x/(1+|x|)   SOFTPLUS log(1+e^x)
 * LF_ACT_DEFAULT is the cell's own function for that role. */
typedef enum lf_activation {
    LF_ACT_DEFAULT = 0,
    LF_ACT_SIGMOID,
    LF_ACT_TANH,
    LF_ACT_RELU,
    LF_ACT_AFFINE,
    LF_ACT_LEAKY_RELU,
    LF_ACT_THRESHOLDED_RELU,
    LF_ACT_SCALED_TANH,
    LF_ACT_HARD_SIGMOID,
    LF_ACT_ELU,
    LF_ACT_SOFTSIGN,
    LF_ACT_SOFTPLUS,
    LF_ACT_COUNT
} lf_activation;

typedef struct lf_activation_spec {
    lf_activation kind;
    double alpha, beta;
} lf_activation_spec;

/* Activation roles, ONNX's f, g, h:
 *   LSTM  f: gates i, f, o (sigmoid)  g: candidate (tanh)  h: cell output (tanh)
 *   GRU   f: gates r, z (sigmoid)     g: candidate (tanh)
 *   RNN   f: the one activation (tanh / relu by cell kind) */
enum { LF_ROLE_F = 0, LF_ROLE_G = 1, LF_ROLE_H = 2, LF_ROLES = 3 };

/* What a network is. Filled by the caller, validated by lf_plan_init.
 * Zero-initialise it: every variant field's zero is torch's cell. */
typedef struct lf_desc {
    lf_cell_kind cell;
    lf_dtype dtype;
    lf_isa isa;
    int64_t input_size;     /* I  >= 1 */
    int64_t hidden_size;    /* H  >= 1 */
    int64_t proj_size;      /* P, 0 <= P < H, LSTM only */
    int64_t num_layers;     /* L  >= 1 */
    int64_t num_directions; /* D  1 or 2 */
    int has_bias;           /* 0: the network has no bias vectors */
    unsigned flags;         /* LF_LSTM_* / LF_GRU_* variants, 0 = torch's cells */
    double clip;            /* > 0: gate pre-activations clipped to [-clip, clip]
                               (not the cell state, as ONNX Runtime); 0: none */
    lf_activation_spec activations[2][LF_ROLES]; /* [direction][role] */
} lf_desc;

/* Every decision about a network, made once. Read-only after lf_plan_init;
 * fields are public for inspection but set only by lf_plan_init. */
typedef struct lf_plan {
    lf_desc desc;
    int64_t gates;          /* G */
    int64_t state_size;     /* R */
    int64_t block;          /* hidden units per packed block (SIMD width) */
    int64_t hidden_padded;  /* H rounded up to a multiple of block */
    size_t elem_size;       /* bytes per element of desc.dtype */
    int generic;            /* 1 when any variant, clip or non-default activation is
                               set: the kernels take their general (slower) path */
    int64_t ahead_cache_bytes; /* a batch of one may project its input ahead
                               (lf_schedule.ahead_rows) while every layer's packed
                               W_ih is smaller: the largest cache that streams to a
                               core at about its L2's rate (0: the ISA's kernels
                               never project ahead) */
    int project_ahead;      /* 1 when this network's W_ih is that small and its
                               W_hh too large for the L1 to help (plan.c) */
    const void *kernels;    /* const lf_kernels * of desc.isa (internal.h) */
} lf_plan;

/* Validate desc and fill plan. No allocation. */
lf_status lf_plan_init(lf_plan *plan, const lf_desc *desc);

/* The ISA of the kernel table a planned network runs, as that table names
 * itself: lets tests and diagnostics check what executes, not what was asked.
 * LF_ISA_COUNT (lf_isa_name: "unknown") for NULL or a zero-filled plan. */
lf_isa lf_plan_kernel_isa(const lf_plan *plan);

/* Bytes of packed weights for one layer and direction. */
lf_status lf_plan_packed_size(const lf_plan *plan, int64_t layer, int64_t direction, size_t *bytes);

/* Lay out one layer-direction's weights (torch layout, dtype of the plan,
 * C-contiguous) into `packed` (at least lf_plan_packed_size bytes, any
 * alignment). b_ih/b_hh must be NULL exactly when the plan has no bias;
 * w_hr must be non-NULL exactly when P > 0. The layout starts at the first
 * 64-byte boundary inside `packed`, so the bytes are valid only at that
 * address: pack again rather than copy them elsewhere. */
lf_status lf_pack_weights(const lf_plan *plan, int64_t layer, int64_t direction,
                          const void *w_ih, const void *w_hh,
                          const void *b_ih, const void *b_hh, const void *w_hr,
                          void *packed, size_t packed_bytes);

/* lf_pack_weights plus the peephole vectors (3*H: p_i, p_f, p_o), which must
 * be non-NULL exactly when the plan has LF_LSTM_PEEPHOLE. */
lf_status lf_pack_weights_ex(const lf_plan *plan, int64_t layer, int64_t direction,
                             const void *w_ih, const void *w_hh,
                             const void *b_ih, const void *b_hh, const void *w_hr,
                             const void *peephole, void *packed, size_t packed_bytes);

/* Bytes of scratch lf_forward needs for T steps of batch B (0 if T or B is 0). */
lf_status lf_plan_workspace_size(const lf_plan *plan, int64_t T, int64_t B, size_t *bytes);

/* How lf_forward runs T steps of batch B (for tests and tuning; the results
 * are the same bits whichever way, but for input_on_amx). chunk_steps: time steps per chunk of
 * the input projection, one GEMM per chunk (1: an LSTM's or RNN's step
 * projects its own input; a GRU's still takes a GEMM per step).
 * ahead_rows: 0, or the block of steps of a batch of one whose input
 * projection the previous block's steps compute, a slice each, in the
 * gaps of their recurrent product (then chunk_steps does not apply).
 * pipeline_steps: 0, or, when the forward gets two threads or more
 * (lf_forward_args.threads 0), the chunk of steps one thread projects
 * while the other runs the previous chunk's steps (then neither of the
 * others applies). input_on_amx: 1 when the input projections run on
 * AMX tiles (LF_ISA_AMX, float32, T x B of 32 rows or more, large enough
 * layers); their last bits then differ from those of the FMA products
 * other calls take. recurrence_on_amx: the recurrent products too (such
 * a call with a batch of 32 or more and as large a product).
 * recurrent_halves: 1 when the steps sum each recurrent product in two
 * halves of its shared dimension (an LSTM or a GRU, not reset-before,
 * with at most 128 KiB of packed W_hh; decided per network, never per
 * call, so it changes no bit between calls). */
typedef struct lf_schedule {
    int64_t chunk_steps;
    int64_t ahead_rows;
    int64_t pipeline_steps;
    int input_on_amx;
    int recurrence_on_amx;
    int recurrent_halves;
} lf_schedule;
lf_status lf_plan_schedule(const lf_plan *plan, int64_t T, int64_t B, lf_schedule *out);

/* A pool of worker threads for lf_forward, owned by the caller: the core
 * keeps no global state, so the caller decides how many threads exist and
 * who shares them. n_threads counts the calling thread (1 = no workers).
 * Without pthreads a pool always has one thread. A pool runs one forward at
 * a time; a concurrent forward on a busy pool runs on its caller's thread
 * alone, with identical results (they never depend on the thread count). */
#define LF_MAX_THREADS 1024
typedef struct lf_pool lf_pool;
lf_status lf_pool_create(int n_threads, lf_pool **out);
void lf_pool_destroy(lf_pool *pool);
int lf_pool_threads(const lf_pool *pool);

/* Arguments of one forward call. Arrays are C-contiguous in the plan's dtype.
 *   x        (T, B, I)
 *   h0       (L*D, B, R) or NULL for zeros
 *   c0       (L*D, B, H) or NULL for zeros (LSTM only)
 *   lengths  (B) int64 in [0, T], or NULL for "all T". Follows
 *            pack_padded_sequence: outputs past a sequence's end are zero,
 *            final states are taken at each sequence's own last step, and the
 *            reverse direction starts at that step.
 *   y        (T, B, D*R) output
 *   h_n      (L*D, B, R) output
 *   c_n      (L*D, B, H) output (LSTM only; may be NULL to discard)
 *   packed   per layer-direction packed weights, index l*D + d
 */
typedef struct lf_forward_args {
    int64_t T, B;
    const void *x;
    const void *h0;
    const void *c0;
    const int64_t *lengths;
    void *y;
    void *h_n;
    void *c_n;
    const void *const *packed;
    void *workspace;
    size_t workspace_bytes;
    lf_pool *pool;          /* NULL: run on the calling thread only */
    int threads;            /* 0: as many of the pool's threads as the work
                               repays (two, pipelined, for small steps:
                               lf_schedule); k > 0: the steps split over
                               min(k, pool size, hidden blocks), e.g. to test
                               threading on small shapes. */
    unsigned step_parity;   /* Any value gives the same results. Steps walk
                               the weights in alternating orders, chosen by the
                               parity of t + step_parity, which keeps more of
                               them in cache; a caller running one step per
                               call should alternate it (e.g. a call counter). */
} lf_forward_args;

lf_status lf_forward(const lf_plan *plan, const lf_forward_args *args);

/* Elementwise activations with the kernels of `isa`, exposed so their
 * accuracy can be tested on their own. dtype selects float/double. */
lf_status lf_vector_sigmoid(lf_isa isa, lf_dtype dtype, const void *x, void *y, int64_t n);
lf_status lf_vector_tanh(lf_isa isa, lf_dtype dtype, const void *x, void *y, int64_t n);

#ifdef __cplusplus
}
#endif
#endif /* LSTM_FAST_H */
