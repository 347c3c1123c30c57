/*
 * grid.c -- the recurrence engine, shared by every cell kind.
 *
 * Architecture (after oneDNN's RNN driver):
 *   for each layer l, each direction d:
 *     for each chunk of time steps (forward or reverse order):
 *       gx = x[chunk] @ W_ih^T + biases         one GEMM over chunk*B rows
 *       for each step t of the chunk:
 *         kernels->step: gates = gx[t] + h @ W_hh^T, then the cell's
 *                        elementwise update fused on the same panel
 *         LSTMP only:    h = m @ W_hr^T, then ended sequences keep their h
 *   Layer l writes the full sequence that layer l+1 reads; layers alternate
 *   between y and one workspace buffer so the last one lands in y.
 *
 * Variable lengths (pack_padded_sequence semantics) need no reordering: a
 * sequence is "active" at step t iff t < length. Inactive rows keep their
 * state and output zeros. Walking t downwards for the reverse direction, a
 * sequence's state stays at h0 until t = length-1, which is exactly where
 * its reverse pass must begin.
 */
#include <string.h>
#include "internal.h"

typedef struct layer_buffers {
    const char *packed;         /* aligned base of this layer-direction's weights */
    lf_packed_layout layout;
} layer_buffers;

static void fill_state(void *dst, const void *src, size_t bytes) {
    if (src) memcpy(dst, src, bytes);
    else memset(dst, 0, bytes);
}

/* Which rows run at step t; returns NULL when all do, so the common case
 * skips the per-row test entirely. */
static const unsigned char *active_rows(const int64_t *lengths, int64_t B, int64_t t,
                                        unsigned char *scratch) {
    if (!lengths) return NULL;
    int all = 1;
    for (int64_t b = 0; b < B; ++b) {
        scratch[b] = t < lengths[b];
        all &= scratch[b];
    }
    return all ? NULL : scratch;
}

/* LSTMP: the step kernel wrote m = o*tanh(c); project it, then restore the
 * rows whose sequence has ended and publish the rest to y. */
static void project_state(const lf_plan *p, const lf_kernels *k, const layer_buffers *lb,
                          const void *m, const void *h_prev, void *h_next, char *y, int64_t ldy,
                          int64_t B, const unsigned char *active) {
    const int64_t P = p->desc.proj_size, H = p->desc.hidden_size;
    const size_t e = p->elem_size, row_bytes = (size_t)P * e;
    lf_gemm_args g = {
        .M = B, .K = H, .A = m, .lda = H,
        .panels = lb->packed + lb->layout.w_hr, .n_panels = (P + p->block - 1) / p->block,
        .gates = 1, .bias = NULL, .C = h_next, .ldc = P, .n_cols = P,
    };
    k->gemm[p->desc.dtype](&g);
    for (int64_t b = 0; b < B; ++b) {
        char *y_row = y + (size_t)(b * ldy) * e;
        char *h_row = (char *)h_next + (size_t)b * row_bytes;
        if (active && !active[b]) {
            memcpy(h_row, (const char *)h_prev + (size_t)b * row_bytes, row_bytes);
            memset(y_row, 0, row_bytes);
        } else {
            memcpy(y_row, h_row, row_bytes);
        }
    }
}

static void run_direction(const lf_plan *p, const lf_forward_args *a, const lf_workspace_layout *ws,
                          char *wbase, int64_t layer, int64_t dir, const char *in, char *out) {
    const lf_desc *d = &p->desc;
    const lf_kernels *k = p->kernels;
    const int64_t T = a->T, B = a->B, H = d->hidden_size, R = p->state_size;
    const int64_t D = d->num_directions, G = p->gates, NB = p->block;
    const int64_t n_panels = p->hidden_padded / NB, ld_out = D * R;
    const size_t e = p->elem_size;
    const int64_t slot = layer * D + dir;

    layer_buffers lb;
    lb.packed = lf_align_ptr((void *)a->packed[slot]);
    lf_packed_layout_of(p, layer, &lb.layout); /* validated by lf_plan_init */
    const int64_t I = lb.layout.in_size;

    char *gx = wbase + ws->gx;
    char *h_prev = wbase + ws->h_a, *h_next = wbase + ws->h_b;
    char *c = wbase + ws->c;
    char *m = d->proj_size > 0 ? wbase + ws->m : NULL;
    unsigned char *active_scratch = (unsigned char *)(wbase + ws->active);
    const size_t h_bytes = (size_t)(B * R) * e, c_bytes = (size_t)(B * H) * e;
    /* Variants: the kernels' general path reads these; NULL keeps the default one. */
    lf_cell_opts opts;
    if (p->generic) lf_cell_opts_of(p, dir, &opts);
    const int reset_before = (d->flags & LF_GRU_RESET_BEFORE_PRODUCT) != 0;

    fill_state(h_prev, a->h0 ? (const char *)a->h0 + (size_t)slot * h_bytes : NULL, h_bytes);
    if (d->cell == LF_CELL_LSTM)
        fill_state(c, a->c0 ? (const char *)a->c0 + (size_t)slot * c_bytes : NULL, c_bytes);
    if (m) memset(m, 0, c_bytes); /* rows of ended sequences are projected too */

    const int64_t chunk = ws->chunk_steps, n_chunks = (T + chunk - 1) / chunk;
    for (int64_t ci = 0; ci < n_chunks; ++ci) {
        const int64_t chunk_index = dir == 0 ? ci : n_chunks - 1 - ci;
        const int64_t t0 = chunk_index * chunk, t1 = t0 + chunk < T ? t0 + chunk : T;
        lf_gemm_args g = {
            .M = (t1 - t0) * B, .K = I, .A = in + (size_t)(t0 * B * I) * e, .lda = I,
            .panels = lb.packed + lb.layout.w_ih, .n_panels = n_panels, .gates = G,
            .bias = lb.packed + lb.layout.bias, .C = gx, .ldc = G * p->hidden_padded,
            .n_cols = G * p->hidden_padded,
        };
        k->gemm[d->dtype](&g);

        for (int64_t s = 0; s < t1 - t0; ++s) {
            const int64_t t = dir == 0 ? t0 + s : t1 - 1 - s;
            const unsigned char *active = active_rows(a->lengths, B, t, active_scratch);
            char *y_t = out + (size_t)(t * B * ld_out + dir * R) * e;
            lf_step_args st = {
                .cell = d->cell, .B = B, .H = H, .R = R, .n_panels = n_panels,
                .w_hh = lb.packed + lb.layout.w_hh,
                .gx = gx + (size_t)((t - t0) * B * G * p->hidden_padded) * e,
                .b_hn = d->cell == LF_CELL_GRU && !reset_before ? lb.packed + lb.layout.b_hn : NULL,
                .h_prev = h_prev, .h_next = h_next, .c = c, .m = m,
                .y = m ? NULL : y_t, .ldy = ld_out, .active = active,
                .opts = p->generic ? &opts : NULL,
                .peephole = (d->flags & LF_LSTM_PEEPHOLE) ? lb.packed + lb.layout.peephole : NULL,
                .w_hn = reset_before ? lb.packed + lb.layout.w_hn : NULL,
                .rh = reset_before ? wbase + ws->gru_rh : NULL,
                .z = reset_before ? wbase + ws->gru_z : NULL,
            };
            k->step[d->dtype](&st);
            if (m) project_state(p, k, &lb, m, h_prev, h_next, y_t, ld_out, B, active);
            char *swap = h_prev;
            h_prev = h_next;
            h_next = swap;
        }
    }
    memcpy((char *)a->h_n + (size_t)slot * h_bytes, h_prev, h_bytes);
    if (d->cell == LF_CELL_LSTM && a->c_n) memcpy((char *)a->c_n + (size_t)slot * c_bytes, c, c_bytes);
}

static lf_status check_args(const lf_plan *p, const lf_forward_args *a, lf_workspace_layout *ws) {
    const lf_desc *d = &p->desc;
    if (a->T < 0 || a->B < 0) return LF_ERR_BAD_DIMENSION;
    lf_status st = lf_workspace_layout_of(p, a->T, a->B, ws);
    if (st != LF_OK) return st;
    const int has_steps = a->T > 0 && a->B > 0;
    if (a->B > 0 && !a->h_n) return LF_ERR_NULL_POINTER;
    if (has_steps && (!a->x || !a->y || !a->packed || !a->workspace)) return LF_ERR_NULL_POINTER;
    if (d->cell != LF_CELL_LSTM && a->c0) return LF_ERR_BAD_CELL_KIND;
    if (has_steps && a->workspace_bytes < ws->total) return LF_ERR_BUFFER_TOO_SMALL;
    if (a->lengths)
        for (int64_t b = 0; b < a->B; ++b)
            if (a->lengths[b] < 0 || a->lengths[b] > a->T) return LF_ERR_BAD_LENGTH;
    if (has_steps)
        for (int64_t i = 0; i < d->num_layers * d->num_directions; ++i)
            if (!a->packed[i]) return LF_ERR_NULL_POINTER;
    return LF_OK;
}

lf_status lf_forward(const lf_plan *plan, const lf_forward_args *args) {
    if (!plan || !args) return LF_ERR_NULL_POINTER;
    lf_workspace_layout ws;
    lf_status st = check_args(plan, args, &ws);
    if (st != LF_OK) return st;
    const lf_desc *d = &plan->desc;
    const int64_t L = d->num_layers, D = d->num_directions, B = args->B;
    const size_t e = plan->elem_size;

    if (args->T == 0 || B == 0) {
        /* Nothing runs: the final state is the initial state. */
        const size_t h_bytes = (size_t)(L * D * B * plan->state_size) * e;
        const size_t c_bytes = (size_t)(L * D * B * d->hidden_size) * e;
        if (B > 0) fill_state(args->h_n, args->h0, h_bytes);
        if (B > 0 && d->cell == LF_CELL_LSTM && args->c_n) fill_state(args->c_n, args->c0, c_bytes);
        return LF_OK;
    }

    char *wbase = lf_align_ptr(args->workspace);
    const char *in = args->x;
    for (int64_t layer = 0; layer < L; ++layer) {
        char *out = ((L - 1 - layer) % 2 == 0) ? (char *)args->y : wbase + ws.between_layers;
        for (int64_t dir = 0; dir < D; ++dir) run_direction(plan, args, &ws, wbase, layer, dir, in, out);
        in = out;
    }
    return LF_OK;
}
