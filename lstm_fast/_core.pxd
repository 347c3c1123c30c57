# Declarations of csrc/lstm_fast.h, the C core's one public header. Nothing else
# belongs here: the wrappers live in _core.pyx.
from libc.stdint cimport int64_t


cdef extern from "lstm_fast.h" nogil:
    const char *LF_VERSION_STRING

    ctypedef enum lf_status:
        LF_OK
        LF_ERR_NULL_POINTER
        LF_ERR_BAD_DIMENSION
        LF_ERR_OVERFLOW
        LF_ERR_BAD_CELL_KIND
        LF_ERR_BAD_DTYPE
        LF_ERR_BAD_LENGTH
        LF_ERR_BAD_ISA
        LF_ERR_ISA_UNAVAILABLE
        LF_ERR_BAD_INDEX
        LF_ERR_BUFFER_TOO_SMALL
        LF_ERR_OUT_OF_MEMORY
        LF_ERR_THREADS
        LF_ERR_BAD_OPTION
        LF_STATUS_COUNT

    const char *lf_status_string(lf_status status)

    ctypedef enum lf_cell_kind:
        LF_CELL_LSTM
        LF_CELL_GRU
        LF_CELL_RNN_TANH
        LF_CELL_RNN_RELU

    ctypedef enum lf_dtype:
        LF_FLOAT32
        LF_FLOAT64

    ctypedef enum lf_isa:
        LF_ISA_PORTABLE
        LF_ISA_AVX2
        LF_ISA_AVX512
        LF_ISA_AMX
        LF_ISA_COUNT

    const char *lf_isa_name(lf_isa isa)
    lf_status lf_isa_parse(const char *name, lf_isa *out)
    int lf_isa_compiled(lf_isa isa)
    int lf_isa_available(lf_isa isa)
    lf_isa lf_isa_best()
    int64_t lf_isa_vector_width(lf_isa isa, lf_dtype dtype)
    int64_t lf_cpu_l2_bytes()

    unsigned LF_LSTM_PEEPHOLE
    unsigned LF_LSTM_COUPLED_INPUT_FORGET
    unsigned LF_GRU_RESET_BEFORE_PRODUCT

    ctypedef enum lf_activation:
        LF_ACT_DEFAULT
        LF_ACT_SIGMOID
        LF_ACT_TANH
        LF_ACT_RELU
        LF_ACT_AFFINE
        LF_ACT_LEAKY_RELU
        LF_ACT_THRESHOLDED_RELU
        LF_ACT_SCALED_TANH
        LF_ACT_HARD_SIGMOID
        LF_ACT_ELU
        LF_ACT_SOFTSIGN
        LF_ACT_SOFTPLUS
        LF_ACT_COUNT

    ctypedef struct lf_activation_spec:
        lf_activation kind
        double alpha
        double beta

    int LF_ROLES

    ctypedef struct lf_desc:
        lf_cell_kind cell
        lf_dtype dtype
        lf_isa isa
        int64_t input_size
        int64_t hidden_size
        int64_t proj_size
        int64_t num_layers
        int64_t num_directions
        int has_bias
        unsigned flags
        double clip
        lf_activation_spec activations[2][3]

    ctypedef struct lf_plan:
        lf_desc desc
        int64_t gates
        int64_t state_size
        int64_t block
        int64_t hidden_padded
        size_t elem_size
        int generic
        int64_t ahead_cache_bytes
        int project_ahead
        const void *kernels

    lf_status lf_plan_init(lf_plan *plan, const lf_desc *desc)
    lf_isa lf_plan_kernel_isa(const lf_plan *plan)
    lf_status lf_plan_packed_size(const lf_plan *plan, int64_t layer, int64_t direction,
                                  size_t *bytes)
    lf_status lf_pack_weights(const lf_plan *plan, int64_t layer, int64_t direction,
                              const void *w_ih, const void *w_hh,
                              const void *b_ih, const void *b_hh, const void *w_hr,
                              void *packed, size_t packed_bytes)
    lf_status lf_pack_weights_ex(const lf_plan *plan, int64_t layer, int64_t direction,
                                 const void *w_ih, const void *w_hh,
                                 const void *b_ih, const void *b_hh, const void *w_hr,
                                 const void *peephole, void *packed, size_t packed_bytes)
    lf_status lf_plan_workspace_size(const lf_plan *plan, int64_t T, int64_t B, size_t *bytes)
    ctypedef struct lf_schedule:
        int64_t chunk_steps
        int64_t ahead_rows
        int64_t pipeline_steps
        int input_on_amx
        int recurrence_on_amx
        int recurrent_halves
    lf_status lf_plan_schedule(const lf_plan *plan, int64_t T, int64_t B, lf_schedule *out)

    int LF_MAX_THREADS
    ctypedef struct lf_pool:
        pass
    lf_status lf_pool_create(int n_threads, lf_pool **out)
    void lf_pool_destroy(lf_pool *pool)
    int lf_pool_threads(const lf_pool *pool)

    ctypedef struct lf_forward_args:
        int64_t T
        int64_t B
        const void *x
        const void *h0
        const void *c0
        const int64_t *lengths
        void *y
        void *h_n
        void *c_n
        const void *const *packed
        void *workspace
        size_t workspace_bytes
        lf_pool *pool
        int threads
        unsigned step_parity

    lf_status lf_forward(const lf_plan *plan, const lf_forward_args *args)

    lf_status lf_vector_sigmoid(lf_isa isa, lf_dtype dtype, const void *x, void *y, int64_t n)
    lf_status lf_vector_tanh(lf_isa isa, lf_dtype dtype, const void *x, void *y, int64_t n)
