/*
 * plan.c -- validate a network description once and decide every size:
 * gates, padded hidden width, packed-weight layout per layer, workspace
 * layout per call shape. pack.c and grid.c only follow these numbers.
 */
#include <float.h>
#include <math.h>
#include "internal.h"

static int64_t gates_of(lf_cell_kind cell) {
    switch (cell) {
    case LF_CELL_LSTM: return 4;
    case LF_CELL_GRU: return 3;
    case LF_CELL_RNN_TANH:
    case LF_CELL_RNN_RELU: return 1;
    default: return 0;
    }
}

/* Activation roles a cell kind has (ONNX's f, g, h). */
static int roles_of(lf_cell_kind cell) {
    return cell == LF_CELL_LSTM ? 3 : cell == LF_CELL_GRU ? 2 : 1;
}

/* The function the cell itself uses in a role: what LF_ACT_DEFAULT means. */
static lf_activation own_activation(lf_cell_kind cell, int role) {
    if (cell == LF_CELL_RNN_TANH) return LF_ACT_TANH;
    if (cell == LF_CELL_RNN_RELU) return LF_ACT_RELU;
    return role == LF_ROLE_F ? LF_ACT_SIGMOID : LF_ACT_TANH;
}

static lf_status check_variants(const lf_desc *d, int *generic) {
    const unsigned lstm_only = LF_LSTM_PEEPHOLE | LF_LSTM_COUPLED_INPUT_FORGET;
    if (d->flags & ~LF_FLAGS_ALL) return LF_ERR_BAD_OPTION;
    if ((d->flags & lstm_only) && d->cell != LF_CELL_LSTM) return LF_ERR_BAD_CELL_KIND;
    if ((d->flags & LF_GRU_RESET_BEFORE_PRODUCT) && d->cell != LF_CELL_GRU)
        return LF_ERR_BAD_CELL_KIND;
    if (!isfinite(d->clip) || d->clip < 0) return LF_ERR_BAD_OPTION;
    int custom = 0;
    for (int64_t dir = 0; dir < d->num_directions; ++dir)
        for (int role = 0; role < LF_ROLES; ++role) {
            const lf_activation_spec *a = &d->activations[dir][role];
            if (a->kind < 0 || a->kind >= LF_ACT_COUNT) return LF_ERR_BAD_OPTION;
            /* A role the cell lacks must stay unset: a value there is a
             * caller's mistake (activations given in the wrong slots). */
            if (role >= roles_of(d->cell) && a->kind != LF_ACT_DEFAULT) return LF_ERR_BAD_OPTION;
            /* ONNX's attributes are floats, and the float32 kernels take
             * affine's and scaled_tanh's as floats: a value that rounds to
             * inf there (from FLT_MAX + half its ulp) is refused in float32
             * plans. The comparisons are false for NaN, refused too. */
            const double past = d->dtype == LF_FLOAT32 ? (double)FLT_MAX + 0x1p103 : INFINITY;
            if (!(fabs(a->alpha) < past && fabs(a->beta) < past)) return LF_ERR_BAD_OPTION;
            custom |= a->kind != LF_ACT_DEFAULT && a->kind != own_activation(d->cell, role);
        }
    *generic = custom || d->flags != 0 || d->clip > 0;
    return LF_OK;
}

LF_HIDDEN void lf_cell_opts_of(const lf_plan *plan, int64_t direction, lf_cell_opts *out) {
    const lf_desc *d = &plan->desc;
    out->flags = d->flags;
    out->clip = d->clip;
    for (int role = 0; role < LF_ROLES; ++role) {
        out->act[role] = d->activations[direction][role];
        if (out->act[role].kind == LF_ACT_DEFAULT) out->act[role].kind = own_activation(d->cell, role);
    }
}

/* A batch of one that projects ahead (grid.c) streams all of W_ih through
 * the cache once per block of S steps, where the GEMM chunks read it once
 * per chunk of up to 128 steps; that pays while W_ih comes at about the
 * L2's rate. On the Intel VM of bench/RESULTS.md, whose L3 delivers 30 GB/s
 * to a core against the L2's 186, LSTM B=1 H=512 (4 MiB of W_ih, 2 MiB L2)
 * took 1.17x the GEMM chunks' time projecting ahead on one thread and 1.31x
 * on two, H=1024 1.06x and 1.08x, while H=128-256 (W_ih up to 1 MiB) took
 * 0.91-0.98x; on the Zen 4 VM, whose L3 reads about as fast as its L2,
 * H=512 took 0.94x (lf_cpu_stream_cache_bytes). CPUs that report no cache
 * sizes are taken to stream 1 MiB. */
static int64_t ahead_cache_bytes(const lf_kernels *k, int64_t gates) {
    if (k->ahead_rows[gates] == 0) return 0;
    const int64_t bytes = lf_cpu_stream_cache_bytes();
    return bytes > 0 ? bytes : (int64_t)1 << 20;
}

/* Bytes of n AMX strips (column or row tiles' terms) over K (internal.h). */
static int amx_strips_bytes(size_t n, int64_t K, size_t *out) {
    return lf_mul(n, LF_AMX_STRIP_BYTES(K), out);
}

/* Largest dimension accepted: keeps every int64 product of two dimensions
 * and a gate count far from overflow before the size_t checks even start. */
#define LF_MAX_DIM ((int64_t)1 << 31)

lf_status lf_plan_init(lf_plan *plan, const lf_desc *desc) {
    if (!plan || !desc) return LF_ERR_NULL_POINTER;
    const int64_t G = gates_of(desc->cell);
    if (G == 0) return LF_ERR_BAD_CELL_KIND;
    if (desc->dtype != LF_FLOAT32 && desc->dtype != LF_FLOAT64) return LF_ERR_BAD_DTYPE;
    if (desc->isa < 0 || desc->isa >= LF_ISA_COUNT) return LF_ERR_BAD_ISA;
    if (!lf_isa_available(desc->isa)) return LF_ERR_ISA_UNAVAILABLE;
    if (desc->input_size < 1 || desc->hidden_size < 1 || desc->num_layers < 1 ||
        desc->proj_size < 0 || (desc->num_directions != 1 && desc->num_directions != 2))
        return LF_ERR_BAD_DIMENSION;
    if (desc->input_size > LF_MAX_DIM || desc->hidden_size > LF_MAX_DIM ||
        desc->num_layers > LF_MAX_DIM)
        return LF_ERR_OVERFLOW;
    if (desc->proj_size > 0 && desc->cell != LF_CELL_LSTM) return LF_ERR_BAD_CELL_KIND;
    if (desc->proj_size >= desc->hidden_size) return LF_ERR_BAD_DIMENSION;
    int generic;
    lf_status vst = check_variants(desc, &generic);
    if (vst != LF_OK) return vst;

    const lf_kernels *k = lf_kernels_for_dtype(desc->isa, desc->dtype);
    lf_plan p;
    p.desc = *desc;
    p.gates = G;
    p.state_size = desc->proj_size > 0 ? desc->proj_size : desc->hidden_size;
    p.block = k->block[desc->dtype];
    p.elem_size = desc->dtype == LF_FLOAT32 ? sizeof(float) : sizeof(double);
    size_t hp;
    if (!lf_round_up((size_t)desc->hidden_size, (size_t)p.block, &hp)) return LF_ERR_OVERFLOW;
    p.hidden_padded = (int64_t)hp;
    p.kernels = k;
    p.generic = generic;

    /* Refuse now, not at the first call, if any layer's packed size
     * overflows; layers from 1 on are alike. */
    lf_packed_layout layout;
    size_t w_ih_bytes = 0; /* the largest layer's packed W_ih */
    int halves = 0;        /* alike in every layer (W_hh's shape is) */
    for (int64_t layer = 0; layer < (desc->num_layers > 1 ? 2 : 1); ++layer) {
        lf_status st = lf_packed_layout_of(&p, layer, &layout);
        if (st != LF_OK) return st;
        if (layout.w_hh - layout.w_ih > w_ih_bytes) w_ih_bytes = layout.w_hh - layout.w_ih;
        halves |= lf_sums_in_halves(&p, &layout);
    }
    p.ahead_cache_bytes = ahead_cache_bytes(k, G);
    /* Not where the steps sum in halves: a slice of W_ih streaming through
     * the L1 with W_hh would evict what the halves' order lets the next step
     * reuse (tiny layer T=50 I=H=64: 0.89x the time without projecting
     * ahead, with the halves; T=100 H=32-80 0.89-0.95x). */
    p.project_ahead = w_ih_bytes < (size_t)p.ahead_cache_bytes && !halves;
    *plan = p;
    return LF_OK;
}

/* Bytes of a panel-packed matrix with n_rows = G*N outputs over K inputs. */
static int panels_bytes(const lf_plan *p, int64_t gates, int64_t n, int64_t K, size_t *out) {
    size_t np, t;
    if (!lf_round_up((size_t)n, (size_t)p->block, &np)) return 0;
    return lf_mul(np, (size_t)gates, &t) && lf_mul(t, (size_t)K, &t) &&
           lf_mul(t, p->elem_size, &t) && lf_round_up(t, LF_ALIGN, out);
}

LF_HIDDEN lf_status lf_packed_layout_of(const lf_plan *plan, int64_t layer, lf_packed_layout *out) {
    const lf_desc *d = &plan->desc;
    const int64_t G = plan->gates, H = d->hidden_size, R = plan->state_size;
    const int64_t in_size = lf_layer_input_size(plan, layer);
    /* The reset-before GRU needs r before the n product, so its recurrent
     * weights split into (r, z) panels and separate n panels; its b_hn sits
     * outside r and joins the other biases. */
    const int reset_before = (d->flags & LF_GRU_RESET_BEFORE_PRODUCT) != 0;
    size_t w_ih, w_hh, bias, b_hn = 0, w_hr = 0, peephole = 0, w_hn = 0, total;
    if (!panels_bytes(plan, G, H, LF_PROJECTION_ROWS(in_size), &w_ih) ||
        !panels_bytes(plan, reset_before ? 2 : G, H, R, &w_hh) ||
        !panels_bytes(plan, G, H, 1, &bias))
        return LF_ERR_OVERFLOW;
    if (d->cell == LF_CELL_GRU && !reset_before && !panels_bytes(plan, 1, H, 1, &b_hn))
        return LF_ERR_OVERFLOW;
    if (d->proj_size > 0 && !panels_bytes(plan, 1, d->proj_size, LF_PROJECTION_ROWS(H), &w_hr))
        return LF_ERR_OVERFLOW;
    if ((d->flags & LF_LSTM_PEEPHOLE) && !panels_bytes(plan, 3, H, 1, &peephole))
        return LF_ERR_OVERFLOW;
    if (reset_before && !panels_bytes(plan, 1, H, R, &w_hn)) return LF_ERR_OVERFLOW;
    size_t w_ih_tiles = 0, w_hh_tiles = 0;
    if (((const lf_kernels *)plan->kernels)->amx_split_rows) {
        const size_t column_tiles = (size_t)(plan->hidden_padded / plan->block) * (size_t)G;
        if (!amx_strips_bytes(column_tiles, in_size, &w_ih_tiles) ||
            !amx_strips_bytes(column_tiles, R, &w_hh_tiles))
            return LF_ERR_OVERFLOW;
    }
    out->in_size = in_size;
    out->w_ih = 0;
    out->w_hh = w_ih;
    if (!lf_add(out->w_hh, w_hh, &out->bias) || !lf_add(out->bias, bias, &out->b_hn) ||
        !lf_add(out->b_hn, b_hn, &out->w_hr) || !lf_add(out->w_hr, w_hr, &out->peephole) ||
        !lf_add(out->peephole, peephole, &out->w_hn) || !lf_add(out->w_hn, w_hn, &out->w_ih_tiles) ||
        !lf_add(out->w_ih_tiles, w_ih_tiles, &out->w_hh_tiles) ||
        !lf_add(out->w_hh_tiles, w_hh_tiles, &total) ||
        !lf_add(total, LF_ALIGN, &out->total))
        return LF_ERR_OVERFLOW;
    /* (inside w_hh_tiles, so no overflow: 2 of every 3 strips come first) */
    out->w_hn_tiles = reset_before ? out->w_hh_tiles + w_hh_tiles / 3 * 2 : 0;
    return LF_OK;
}

lf_isa lf_plan_kernel_isa(const lf_plan *plan) {
    if (!plan || !plan->kernels) return LF_ISA_COUNT;
    return ((const lf_kernels *)plan->kernels)->isa;
}

lf_status lf_plan_packed_size(const lf_plan *plan, int64_t layer, int64_t direction, size_t *bytes) {
    if (!plan || !bytes) return LF_ERR_NULL_POINTER;
    if (layer < 0 || layer >= plan->desc.num_layers || direction < 0 ||
        direction >= plan->desc.num_directions)
        return LF_ERR_BAD_INDEX;
    lf_packed_layout layout;
    lf_status st = lf_packed_layout_of(plan, layer, &layout);
    if (st == LF_OK) *bytes = layout.total;
    return st;
}

/* The input projection for all time steps is one matrix product, done in
 * chunks of time so that gx stays small: about LF_GX_CHUNK_BYTES per chunk,
 * which together with the weights stays in L2 between the GEMM that writes
 * it and the steps that read it, yet at least LF_GX_CHUNK_MIN_ROWS rows
 * (steps x batch), so that each W_ih panel the GEMM streams still serves a
 * dozen register tiles, and at most LF_GX_CHUNK_MAX_BYTES (at least one
 * step). The scratch is bounded however long the sequence. Against 4 MiB
 * chunks (1 thread, in-process A/B, the same bits): LSTM T=1000 B=1 H=128
 * 0.95x the time, B=1 H=256 0.96x, B=16 H=256 0.96-0.97x, B=1 H=512 1.00x,
 * GRU B=1 H=256 0.99x, GRU B=64 H=512 0.98x. 128 KiB lost 3.5% at B=1
 * H=256 and 512 KiB gained nothing; a 256-row minimum lost 1-2% to 128,
 * a 64-row one was even. (Measured before a batch of one projected ahead:
 * where it does, below, its gx is a ring of two blocks instead.) */
#define LF_GX_CHUNK_BYTES ((int64_t)256 * 1024)
#define LF_GX_CHUNK_MIN_ROWS 128
#define LF_GX_CHUNK_MAX_BYTES ((int64_t)4 * 1024 * 1024)

/* From this batch on (not the GRU, whose n gate keeps its input part
 * apart), chunks are one step long, so each step computes bias + x @ W_ih
 * itself, panel by panel (grid.c): the B x G*H projection then never makes
 * a round trip through the cache, and each W_ih panel, streamed once per
 * step, still serves B/6 register tiles. Whole layer, 1 thread, against the
 * chunked GEMM: H=128-256 at B=32-128 0.81-0.95x the time, H=512 at
 * B=64-128 0.93-0.99x, H=512 at B=32-48 1.01x; at B=16 1.03-1.05x, so
 * smaller batches keep the GEMM. The results are the same bits either way. */
#define LF_FUSED_INPUT_MIN_BATCH 32

static int add_region(size_t *cursor, size_t count, size_t elem, size_t *offset) {
    size_t bytes;
    if (!lf_mul(count, elem, &bytes) || !lf_round_up(bytes, LF_ALIGN, &bytes)) return 0;
    *offset = *cursor;
    return lf_add(*cursor, bytes, cursor);
}

LF_HIDDEN lf_status lf_workspace_layout_of(const lf_plan *plan, int64_t T, int64_t B,
                                           lf_workspace_layout *out) {
    if (T < 0 || B < 0) return LF_ERR_BAD_DIMENSION;
    const lf_desc *d = &plan->desc;
    const size_t e = plan->elem_size;
    size_t row, step_values, seq_values, state_values, cell_values;
    if (!lf_mul((size_t)plan->gates, (size_t)plan->hidden_padded, &row) ||
        !lf_mul(row, (size_t)B, &step_values))
        return LF_ERR_OVERFLOW;
    out->on_amx = lf_call_uses_amx(plan, T, B);
    out->recurs_on_amx = lf_call_recurs_on_amx(plan, T, B);
    /* Whether a one-step chunk would fuse the input projection into the step. */
    const int step_may_fuse = lf_chunk_fuses_input(plan, out->on_amx, 1);
    int64_t chunk = 1;
    size_t step_bytes;
    if ((!step_may_fuse || B < LF_FUSED_INPUT_MIN_BATCH) && step_values > 0 &&
        lf_mul(step_values, e, &step_bytes) && step_bytes < (size_t)LF_GX_CHUNK_MAX_BYTES) {
        const int64_t most = LF_GX_CHUNK_MAX_BYTES / (int64_t)step_bytes;
        const int64_t fewest = (LF_GX_CHUNK_MIN_ROWS + B - 1) / B; /* B > 0 here */
        chunk = LF_GX_CHUNK_BYTES / (int64_t)step_bytes;
        if (chunk < fewest) chunk = fewest < most ? fewest : most;
        if (chunk < 1) chunk = 1;
    }
    if (chunk > T) chunk = T > 0 ? T : 1;
    out->chunk_steps = chunk;
    const int reset_before = (d->flags & LF_GRU_RESET_BEFORE_PRODUCT) != 0;
    /* A batch of one projects ahead when the plan may (its ISA's kernels
     * can, W_ih within ahead_cache_bytes, W_hh too large for its sums in
     * halves) and the sequence has two blocks
     * (grid.c, run_steps_projecting_ahead); not the GRU with the reset
     * before the product, whose step has two phases. */
    out->ahead_rows = 0;
    if (B == 1 && plan->project_ahead && !reset_before && !out->on_amx) {
        const int64_t S = ((const lf_kernels *)plan->kernels)->ahead_rows[plan->gates];
        if (T >= 2 * S) out->ahead_rows = S;
    }
    /* Fused chunks (lf_chunk_fuses_input) never touch gx. */
    size_t gx_steps = out->ahead_rows > 0 ? (size_t)(2 * out->ahead_rows)
                      : lf_chunk_fuses_input(plan, out->on_amx, chunk) ? 0
                                                             : (size_t)chunk;
    out->pipeline_steps = lf_pipeline_steps(plan, T, B);
    if ((size_t)(2 * out->pipeline_steps) > gx_steps) gx_steps = (size_t)(2 * out->pipeline_steps);

    size_t gx_values, between = 0;
    if (!lf_mul(step_values, gx_steps, &gx_values) ||
        !lf_mul((size_t)B, (size_t)plan->state_size, &state_values) ||
        !lf_mul((size_t)B, (size_t)d->hidden_size, &cell_values))
        return LF_ERR_OVERFLOW;
    size_t hp_values;
    if (!lf_mul((size_t)B, (size_t)plan->hidden_padded, &hp_values)) return LF_ERR_OVERFLOW;
    if (d->num_layers > 1) {
        /* Layers ping-pong between y and this buffer, so only one extra
         * full-sequence buffer exists whatever the depth. */
        if (!lf_mul((size_t)T, state_values, &seq_values) ||
            !lf_mul(seq_values, (size_t)d->num_directions, &between))
            return LF_ERR_OVERFLOW;
    }
    /* AMX kernels split the rows of one projection, the largest a chunk or
     * a pipeline's chunk, of the widest input of any layer. */
    size_t split_bytes = 0;
    if (out->on_amx) {
        const int64_t steps = out->pipeline_steps > chunk ? out->pipeline_steps : chunk;
        size_t rows;
        if (!lf_mul((size_t)steps, (size_t)B, &rows) || !lf_round_up(rows, 16, &rows) ||
            !amx_strips_bytes(rows / 16, lf_widest_input(plan), &split_bytes))
            return LF_ERR_OVERFLOW;
    }
    size_t h_split_bytes = 0;
    if (out->recurs_on_amx &&
        !amx_strips_bytes((size_t)(B + 15) / 16, plan->state_size, &h_split_bytes))
        return LF_ERR_OVERFLOW;
    size_t cursor = 0;
    if (!add_region(&cursor, split_bytes, 1, &out->x_split) ||
        !add_region(&cursor, h_split_bytes, 1, &out->h_split) ||
        !add_region(&cursor, out->recurs_on_amx && d->cell == LF_CELL_GRU ? step_values : 0, e,
                    &out->gru_gh) ||
        !add_region(&cursor, gx_values, e, &out->gx) ||
        !add_region(&cursor, between, e, &out->between_layers) ||
        !add_region(&cursor, state_values, e, &out->h_a) ||
        !add_region(&cursor, state_values, e, &out->h_b) ||
        !add_region(&cursor, cell_values, e, &out->c) ||
        !add_region(&cursor, d->proj_size > 0 ? cell_values : 0, e, &out->m) ||
        !add_region(&cursor, reset_before ? state_values : 0, e, &out->gru_rh) ||
        !add_region(&cursor, reset_before ? hp_values : 0, e, &out->gru_z) ||
        !lf_add(cursor, LF_ALIGN, &out->total))
        return LF_ERR_OVERFLOW;
    return LF_OK;
}

lf_status lf_plan_workspace_size(const lf_plan *plan, int64_t T, int64_t B, size_t *bytes) {
    if (!plan || !bytes) return LF_ERR_NULL_POINTER;
    lf_workspace_layout layout;
    lf_status st = lf_workspace_layout_of(plan, T, B, &layout);
    /* With no steps lf_forward only copies the initial states: nothing to
     * allocate, however large the batch (the layout's one-step regions
     * would dwarf the states at small H). */
    if (st == LF_OK) *bytes = T > 0 && B > 0 ? layout.total : 0;
    return st;
}

lf_status lf_plan_schedule(const lf_plan *plan, int64_t T, int64_t B, lf_schedule *out) {
    if (!plan || !out) return LF_ERR_NULL_POINTER;
    lf_workspace_layout layout;
    lf_status st = lf_workspace_layout_of(plan, T, B, &layout);
    if (st == LF_OK) {
        out->chunk_steps = layout.chunk_steps;
        out->ahead_rows = layout.ahead_rows;
        out->pipeline_steps = layout.pipeline_steps;
        out->input_on_amx = layout.on_amx;
        out->recurrence_on_amx = layout.recurs_on_amx;
        lf_packed_layout packed;
        st = lf_packed_layout_of(plan, 0, &packed);
        out->recurrent_halves =
            st == LF_OK && !layout.recurs_on_amx && lf_sums_in_halves(plan, &packed);
    }
    return st;
}
