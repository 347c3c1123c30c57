/* lf_forward's size checks, through the public C API only: a sequence whose
 * x, y or states could not exist (the byte count overflows size_t) is refused with
 * LF_ERR_OVERFLOW before anything is read or written. The pointers are
 * dummies that must never be touched: a missing check crashes here. Also
 * other entry points given NULL or an out-of-range enum. Built and run by
 * tests/test_c_core.py; prints one line per case, exits 0 if all give the
 * expected result. */
#include <stdint.h>
#include <stdio.h>
#include "lstm_fast.h"

static int expect(const char *what, lf_status got, lf_status want) {
    printf("%s: %s\n", what, lf_status_string(got));
    return got != want;
}

int main(void) {
    lf_desc desc = {0};
    desc.cell = LF_CELL_LSTM;
    desc.dtype = LF_FLOAT32;
    desc.isa = LF_ISA_PORTABLE;
    desc.input_size = 3;
    desc.hidden_size = 4;
    desc.num_layers = 1; /* one layer: the workspace does not depend on T */
    desc.num_directions = 1;
    desc.has_bias = 1;
    lf_plan plan;
    if (lf_plan_init(&plan, &desc) != LF_OK) return 2;

    static char dummy[64];
    const void *packed[1] = {dummy};
    lf_forward_args args = {0};
    args.B = 1;
    args.x = args.y = args.h_n = dummy;
    args.packed = packed;
    args.workspace = dummy;
    args.workspace_bytes = SIZE_MAX; /* so only the size checks can refuse */

    int failures = 0;
    args.T = INT64_C(1) << 61; /* x: 2^61 * 3 floats */
    failures += expect("T = 2^61, B = 1", lf_forward(&plan, &args), LF_ERR_OVERFLOW);
    args.T = INT64_C(1) << 40;
    args.B = INT64_C(1) << 40;
    failures += expect("T = B = 2^40", lf_forward(&plan, &args), LF_ERR_OVERFLOW);

    /* T = 0 copies the initial states whole: 2^32 layer-directions of 2^28
     * rows are 2^66 bytes of h, which must be refused, not wrapped to 0. */
    desc.num_layers = INT64_C(1) << 31;
    desc.num_directions = 2;
    lf_plan deep;
    if (lf_plan_init(&deep, &desc) != LF_OK) return 2;
    args.T = 0;
    args.B = INT64_C(1) << 28;
    args.h0 = args.c0 = dummy;
    args.c_n = dummy;
    failures += expect("T = 0, L*D = 2^32, B = 2^28", lf_forward(&deep, &args), LF_ERR_OVERFLOW);

    float value[1] = {0};
    failures += expect("lf_vector_sigmoid, ISA 7",
                       lf_vector_sigmoid((lf_isa)7, LF_FLOAT32, value, value, 1), LF_ERR_BAD_ISA);
    /* float32 kernels take alpha as a float: 1e39 would become inf. */
    lf_desc affine = desc;
    affine.num_layers = 1;
    affine.num_directions = 1;
    affine.cell = LF_CELL_RNN_TANH;
    affine.activations[0][LF_ROLE_F].kind = LF_ACT_AFFINE;
    affine.activations[0][LF_ROLE_F].alpha = 1e39;
    lf_plan affine_plan;
    failures += expect("float32 affine alpha 1e39", lf_plan_init(&affine_plan, &affine),
                       LF_ERR_BAD_OPTION);
    affine.activations[0][LF_ROLE_F].alpha = 3.4028235e38; /* rounds to FLT_MAX */
    failures += expect("float32 affine alpha 3.4028235e38", lf_plan_init(&affine_plan, &affine),
                       LF_OK);
    affine.activations[0][LF_ROLE_F].alpha = 1e39;
    affine.dtype = LF_FLOAT64;
    failures += expect("float64 affine alpha 1e39", lf_plan_init(&affine_plan, &affine), LF_OK);
    const lf_isa none = lf_plan_kernel_isa(NULL);
    printf("lf_plan_kernel_isa(NULL): %s\n", lf_isa_name(none));
    failures += none != LF_ISA_COUNT;
    return failures != 0;
}
