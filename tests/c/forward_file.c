/* One lf_forward described in a file, through the public C API only, for
 * tests/test_c_core.py to run the core where Python cannot: built for
 * another architecture (AArch64) and run under an emulator, its results
 * are checked against the float64 NumPy reference.
 *
 *   forward_file IN OUT     exit 0 and OUT written, or exit 1 and the status
 *
 * IN: 16 int64 (cell, dtype, I, H, P, L, D, has_bias, flags, T, B, threads,
 * has_h0, has_c0, has_lengths, BYTE_ORDER_MARK), one double (clip); then per
 * layer-direction w_ih, w_hh, [b_ih, b_hh], [w_hr], [peephole] in torch's
 * layouts; then x, [h0], [c0], [lengths (int64)], and nothing more. OUT: y,
 * h_n, [c_n]. Arrays are C-contiguous in the network's dtype, little-endian
 * (the mark, read back, says whether this machine reads them so). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include "lstm_fast.h"

#define BYTE_ORDER_MARK INT64_C(0x0102030405060708)

static FILE *in_file;

/* `count` elements of `size` bytes from IN into a new buffer (NULL on a
 * short file; count 0 gives a valid 1-byte buffer). */
static void *read_array(int64_t count, size_t size) {
    void *data = malloc((size_t)count * size + 1);
    if (data && fread(data, size, (size_t)count, in_file) != (size_t)count) {
        free(data);
        data = NULL;
    }
    return data;
}

static int fail(const char *what, lf_status status) {
    printf("%s: %s\n", what, lf_status_string(status));
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 3 || !(in_file = fopen(argv[1], "rb"))) return 2;
    int64_t head[16];
    double clip;
    if (fread(head, sizeof head[0], 16, in_file) != 16 || fread(&clip, sizeof clip, 1, in_file) != 1)
        return 2;
    if (head[15] != BYTE_ORDER_MARK) {
        printf("not a little-endian machine, or not a forward file\n");
        return 2;
    }
    lf_desc desc = {0};
    desc.cell = (lf_cell_kind)head[0];
    desc.dtype = (lf_dtype)head[1];
    desc.isa = LF_ISA_PORTABLE;
    desc.input_size = head[2];
    desc.hidden_size = head[3];
    desc.proj_size = head[4];
    desc.num_layers = head[5];
    desc.num_directions = head[6];
    desc.has_bias = (int)head[7];
    desc.flags = (unsigned)head[8];
    desc.clip = clip;
    const int64_t T = head[9], B = head[10];
    lf_plan plan;
    lf_status status = lf_plan_init(&plan, &desc);
    if (status != LF_OK) return fail("lf_plan_init", status);

    const size_t e = plan.elem_size;
    const int64_t G = plan.gates, H = desc.hidden_size, R = plan.state_size, P = desc.proj_size;
    const int64_t D = desc.num_directions, LD = desc.num_layers * D;
    const void **packed = calloc((size_t)LD, sizeof *packed);
    if (!packed) return 2;
    for (int64_t slot = 0; slot < LD; ++slot) {
        const int64_t layer_input = slot < D ? desc.input_size : D * R;
        void *w_ih = read_array(G * H * layer_input, e), *w_hh = read_array(G * H * R, e);
        void *b_ih = desc.has_bias ? read_array(G * H, e) : NULL;
        void *b_hh = desc.has_bias ? read_array(G * H, e) : NULL;
        void *w_hr = P > 0 ? read_array(P * H, e) : NULL;
        void *peephole = desc.flags & LF_LSTM_PEEPHOLE ? read_array(3 * H, e) : NULL;
        size_t bytes;
        status = lf_plan_packed_size(&plan, slot / D, slot % D, &bytes);
        if (status != LF_OK) return fail("lf_plan_packed_size", status);
        void *buffer = malloc(bytes);
        if (!buffer || !w_ih || !w_hh || (desc.has_bias && (!b_ih || !b_hh)) || (P > 0 && !w_hr) ||
            (desc.flags & LF_LSTM_PEEPHOLE && !peephole))
            return 2;
        status = lf_pack_weights_ex(&plan, slot / D, slot % D, w_ih, w_hh, b_ih, b_hh, w_hr,
                                    peephole, buffer, bytes);
        if (status != LF_OK) return fail("lf_pack_weights_ex", status);
        packed[slot] = buffer;
        free(w_ih), free(w_hh), free(b_ih), free(b_hh), free(w_hr), free(peephole);
    }

    lf_forward_args args = {0};
    args.T = T;
    args.B = B;
    args.x = read_array(T * B * desc.input_size, e);
    args.h0 = head[12] ? read_array(LD * B * R, e) : NULL;
    args.c0 = head[13] ? read_array(LD * B * H, e) : NULL;
    args.lengths = head[14] ? read_array(B, sizeof(int64_t)) : NULL;
    if ((head[12] && !args.h0) || (head[13] && !args.c0) || (head[14] && !args.lengths) ||
        fgetc(in_file) != EOF) /* a file the writer and this reader disagree on */
        return 2;
    const int64_t y_count = T * B * D * R, h_count = LD * B * R, c_count = LD * B * H;
    args.y = malloc((size_t)y_count * e + 1);
    args.h_n = malloc((size_t)h_count * e + 1);
    args.c_n = desc.cell == LF_CELL_LSTM ? malloc((size_t)c_count * e + 1) : NULL;
    args.packed = packed;
    status = lf_plan_workspace_size(&plan, T, B, &args.workspace_bytes);
    if (status != LF_OK) return fail("lf_plan_workspace_size", status);
    args.workspace = malloc(args.workspace_bytes + 1);
    if (!args.x || !args.y || !args.h_n || !args.workspace) return 2;
    /* threads k > 1: the steps split over k; k < 0: a pool of -k threads
     * used as the core decides (lf_forward_args.threads 0). */
    const int64_t threads = head[11], pool_threads = threads < 0 ? -threads : threads;
    args.threads = threads > 0 ? (int)threads : 0;
    if (pool_threads > 1) {
        status = lf_pool_create((int)pool_threads, &args.pool);
        if (status != LF_OK) return fail("lf_pool_create", status);
    }
    status = lf_forward(&plan, &args);
    lf_pool_destroy(args.pool);
    if (status != LF_OK) return fail("lf_forward", status);

    FILE *out = fopen(argv[2], "wb");
    if (!out || fwrite(args.y, e, (size_t)y_count, out) != (size_t)y_count ||
        fwrite(args.h_n, e, (size_t)h_count, out) != (size_t)h_count ||
        (args.c_n && fwrite(args.c_n, e, (size_t)c_count, out) != (size_t)c_count) || fclose(out))
        return 2;
    printf("ok, kernels %s\n", lf_isa_name(lf_plan_kernel_isa(&plan)));
    return 0;
}
