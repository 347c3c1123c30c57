"""A batch of one projects its input ahead (grid.c, step_tile_ahead): steps
go in blocks of S rows (8 for the LSTM, 6 for the GRU on AVX-512), each step
carrying one slice of the next block's input projection, from the second
block on; sequences shorter than 2S steps keep the GEMM. The other ISAs never
project ahead, so under them these tests check the plain path on the same
cases; Engine.schedule says which path a case takes, and the tests check it.

Only layers whose packed W_hh exceeds 128 KiB project ahead: smaller ones
sum their steps in halves instead (kernel_body.h, accumulate_halves), which
a W_ih streaming alongside would undo. So these layers are that large.

The sizes reach every edge of that schedule: T below, at and just past 2S,
last blocks of one row and of S-1 rows (LSTM T=23, GRU T=17), W_ih shorter
and longer than W_hh (I = 1, 3, 37 and 150 against H = 113 or P = 72; with
I = 1 the first slice of W_ih is empty, with I = 150 it outlasts W_hh's
rows), a partial last panel (H = 113), the
reverse direction's blocks walked from the end, and lengths that end inside
a block.
"""
import numpy as np
import pytest

import lstm_fast
import reference
from helpers import (assert_result, assert_split_call_matches, engine_forward, make_hx, make_input,
                     make_layer, make_rng, params64, ref_mode)
from lstm_fast import _core

H = 113
P = 72  # LSTMP: W_hh is P x 4H, over 128 KiB with H padded to 116, 120 or 128
LENGTHS_IN_BLOCKS = [1, 5, 7, 8, 9, 11, 12, 13, 15, 16, 17, 23, 24, 33, 50]
AHEAD_ROWS = {"lstm": 8, "lstmp": 8, "gru": 6}  # the AVX-512 kernels' blocks


def packed_w_ih_bytes(mode, I, H, dtype):
    """Bytes of one layer-direction's packed W_ih: gate blocks of I+1 rows of
    H rounded up to the SIMD width (the AVX-512 one, where S > 0)."""
    gates = 3 if mode == "gru" else 4
    block = 64 // np.dtype(dtype).itemsize
    return gates * -(-H // block) * block * (I + 1) * np.dtype(dtype).itemsize


HALVES_MAX_W_HH_BYTES = 128 * 1024  # internal.h, LF_HALVES_MAX_W_HH_BYTES


def packed_w_hh_bytes(engine):
    """Bytes of one layer-direction's packed W_hh: state_size rows of every
    gate's H rounded up to the SIMD width (the AVX-512 one, where S > 0)."""
    gates = 3 if engine.cell == "gru" else 4
    itemsize = np.dtype(engine.dtype).itemsize
    block = 64 // itemsize
    return engine.state_size * gates * -(-engine.hidden_size // block) * block * itemsize


def expected_ahead_rows(engine, mode, T, B=1):
    # engine.isa: the ISA of the kernels that run the layer (the amx ISA's
    # float64 layers run AVX-512's). The layers below have W_ih far below
    # any L2 (test_large_w_ih_keeps_the_gemm), and on amx far below the
    # AMX projection's bound (lf_call_uses_amx).
    S = AHEAD_ROWS.get(mode, 0) if engine.isa in ("avx512", "amx") else 0
    if packed_w_hh_bytes(engine) <= HALVES_MAX_W_HH_BYTES:
        S = 0
    return S if B == 1 and T >= 2 * S else 0


@pytest.mark.parametrize("T", LENGTHS_IN_BLOCKS)
@pytest.mark.parametrize("I", [1, 3, 37, 150])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("mode", ["lstm", "lstmp", "gru"])
def test_batch_of_one_matches_reference(isa, mode, dtype, I, T):
    rng = make_rng("ahead", mode, np.dtype(dtype).name, I, T)
    layer = make_layer(mode, I, H, bidirectional=True, dtype=dtype, seed=T,
                       proj_size=P if mode == "lstmp" else None)
    P_used = layer.proj_size if mode == "lstmp" else 0
    x = make_input(rng, T, 1, I, dtype)
    hx = make_hx(mode, rng, 2, 1, H, P_used, dtype)
    # a sequence that ends inside a block, two steps before the input's end
    lengths = [max(T - 2, 0)] if T % 2 else None
    expected = reference.module_forward(ref_mode(mode), params64(layer), x, hx, lengths, False)
    engine = layer._current_engine()
    assert engine.schedule(T, 1)["ahead_rows"] == expected_ahead_rows(engine, mode, T)
    assert expected_ahead_rows(engine, mode, 10**6) > 0 or engine.isa not in ("avx512", "amx")
    assert not engine.schedule(T, 1)["recurrent_halves"]
    assert_result(mode, layer(x, hx=hx, lengths=lengths), expected, dtype)


HL = 113  # LAYERS' hidden size
LAYERS = {
    "lstm": lambda dtype: make_layer("lstm", 37, HL, num_layers=2, bidirectional=True,
                                     dtype=dtype, seed=1),
    "lstmp": lambda dtype: make_layer("lstmp", 37, HL, num_layers=2, bidirectional=True,
                                      proj_size=P, dtype=dtype, seed=2),
    "gru": lambda dtype: make_layer("gru", 37, HL, num_layers=2, bidirectional=True,
                                    dtype=dtype, seed=3),
    "lstm-variant": lambda dtype: lstm_fast.LSTM(
        37, HL, num_layers=2, bidirectional=True, dtype=dtype, seed=4,
        variant={"peephole": True, "coupled_input_forget": True, "clip": 1.25}),
    "gru-variant": lambda dtype: lstm_fast.GRU(
        37, HL, num_layers=2, bidirectional=True, dtype=dtype, seed=5,
        variant={"clip": 0.75, "activations": [[("hardsigmoid", 0.25, 0.5), ("softsign", 0, 0)]] * 2}),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", list(LAYERS))
def test_batch_of_one_gives_the_bits_of_a_batched_row(isa, name, dtype):
    # Row 0 of a batch of two runs the batched tiles and the GEMM; alone it
    # projects ahead. Every sum keeps its order either way, so the bits
    # match, and they match on two threads too. Stacked and bidirectional:
    # the second layer projects the first one's output ahead. Row 0's
    # sequence ends inside a block (the reverse direction starts there).
    layer = LAYERS[name](dtype)
    mode = "lstmp" if name == "lstmp" else name.split("-")[0]
    rng = make_rng("ahead-bits", name, np.dtype(dtype).name)
    T = 61
    x = make_input(rng, T, 2, 37, dtype)
    P = layer.proj_size if mode.startswith("lstm") else 0
    hx = make_hx(mode, rng, 4, 2, HL, P, dtype)
    row0 = tuple(a[:, :1] for a in hx) if isinstance(hx, tuple) else hx[:, :1]
    lengths = [T - 12, T]
    engine = layer._current_engine()
    assert engine.schedule(T, 1)["ahead_rows"] == expected_ahead_rows(engine, mode, T)
    assert engine.schedule(T, 2)["ahead_rows"] == 0
    batched = engine_forward(layer, x, hx, lengths)
    alone = engine_forward(layer, x[:, :1], row0, lengths[:1])
    two_threads = engine_forward(layer, x[:, :1], row0, lengths[:1], _core.ThreadPool(2), 2)
    for got, whole in zip(alone, batched):  # y, h_n, c_n: the batch is axis 1
        if got is not None:
            np.testing.assert_array_equal(got, whole[:, :1])
    for a, b in zip(alone, two_threads):
        if a is not None:
            np.testing.assert_array_equal(a, b)


def test_batch_of_one_split_into_calls_gives_the_same_bits(isa):
    # Blocks restart at every call: a sequence cut at a point inside a block
    # and carried over in its state gives the same bits as one call.
    layer = make_layer("lstm", 24, 113, dtype=np.float32, seed=7)
    x = make_input(make_rng("ahead-split"), 203, 1, 24, np.float32)
    engine = layer._current_engine()
    assert engine.schedule(182, 1)["ahead_rows"] == expected_ahead_rows(engine, "lstm", 182)
    assert_split_call_matches(layer, x, 21)


@pytest.mark.parametrize("mode", ["rnn_tanh", "rnn_relu", "gru_reset_before"])
def test_cells_that_never_project_ahead(isa, mode):
    # A plain RNN's lone row splits its sums instead (accumulate_short), and
    # the reset-before GRU's step runs in two phases.
    if mode == "gru_reset_before":
        layer = lstm_fast.GRU(8, 16, variant={"reset_before_product": True})
    else:
        layer = make_layer(mode, 8, 16)
    assert layer._current_engine().schedule(100, 1)["ahead_rows"] == 0
    assert not layer._current_engine().schedule(100, 1)["recurrent_halves"]  # no 3-4 gate panels


def test_projecting_ahead_needs_a_ring_of_two_blocks_only(isa):
    # The ring of gx holds 2S rows however long the sequence.
    engine = make_layer("lstm", 8, 128, dtype=np.float32, seed=6)._current_engine()
    ring = engine.workspace_bytes(10**6, 1) - engine.workspace_bytes(1, 1)
    if expected_ahead_rows(engine, "lstm", 10**6):
        # 2S rows of G*Hp float32 (a one-step call has no gx: its step projects)
        assert ring == 2 * 8 * 4 * 128 * 4
        assert engine.workspace_bytes(16, 1) == engine.workspace_bytes(10**6, 1)
    else:
        assert 0 < ring < 5 * 1024 * 1024


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("mode", ["lstm", "gru"])
def test_large_w_ih_keeps_the_gemm(isa, mode, dtype):
    # Projecting ahead reads all of W_ih once per block of S steps: only
    # while it fits the cache that streams to a core at the L2's rate. Just
    # below that it does; at it, the GEMM chunks (which read W_ih once per
    # chunk) run instead, with the same results. The second layer of a stack
    # has its own W_ih (I = H).
    probe = make_layer(mode, 1, 1, dtype=dtype)._current_engine()
    bound = probe.ahead_cache_bytes
    if probe.isa not in ("avx512", "amx"):
        assert bound == 0  # those kernels never project ahead
        return
    assert bound >= _core.l2_cache_bytes() and bound > 0  # the L2, AMD's L3, or 1 MiB if unknown
    H = 112  # W_hh over 128 KiB, as projecting ahead needs
    per_input = packed_w_ih_bytes(mode, 1, H, dtype) // 2  # bytes per input feature
    I_over = -(-bound // per_input) - 1                    # I + 1 rows: W_ih reaches the bound
    I_fits = I_over - 1
    assert (packed_w_ih_bytes(mode, I_fits, H, dtype) < bound
            <= packed_w_ih_bytes(mode, I_over, H, dtype))
    T = 2 * AHEAD_ROWS[mode]
    for I, fits in ((I_fits, True), (I_over, False)):
        layer = make_layer(mode, I, H, dtype=dtype, seed=8)
        expected = expected_ahead_rows(layer._current_engine(), mode, T) if fits else 0
        assert expected > 0 or not fits
        schedule = layer._current_engine().schedule(T, 1)
        # (on amx so wide an input goes to the AMX tiles instead)
        assert schedule["ahead_rows"] == (0 if schedule["input_on_amx"] else expected)
    if bound <= 4 << 20:  # an L3-sized bound (AMD) would take layers of hundreds of MiB
        H_deep = 16  # the smallest multiple of 16 whose layer 1 (I = 2H) has W_ih past the bound
        while packed_w_ih_bytes(mode, 2 * H_deep, H_deep, dtype) < bound:
            H_deep += 16
        deep = make_layer(mode, 3, H_deep, num_layers=2, bidirectional=True, dtype=dtype, seed=9)
        assert deep._current_engine().schedule(T, 1)["ahead_rows"] == 0
        shallow = make_layer(mode, 3, H_deep - 16, num_layers=2, bidirectional=True, dtype=dtype)
        assert shallow._current_engine().schedule(T, 1)["ahead_rows"] == expected_ahead_rows(
            shallow._current_engine(), mode, T) > 0
    # The chunked path's result, checked against the reference.
    rng = make_rng("ahead-large", mode, np.dtype(dtype).name)
    x = make_input(rng, T, 1, I_over, dtype)
    hx = make_hx(mode, rng, 1, 1, H, 0, dtype)
    expected = reference.module_forward(ref_mode(mode), params64(layer), x, hx, None, False)
    assert_result(mode, layer(x, hx=hx), expected, dtype)


@pytest.mark.parametrize("mode", ["lstm", "lstmp", "gru"])
def test_small_layers_sum_in_halves_in_either_order(isa, mode):
    # W_hh up to 128 KiB: no projecting ahead; each step sums its recurrent
    # product in two halves, the upper one first on odd steps (t plus the
    # call's parity, which Engine._run advances every call). Either order
    # must give the same bits: a call repeated (the other order at every
    # step), a sequence cut at an odd step, and the same row in a batch.
    layer = make_layer(mode, 24, 64, dtype=np.float32, seed=21)
    engine = layer._current_engine()
    assert packed_w_hh_bytes(engine) <= HALVES_MAX_W_HH_BYTES
    assert engine.schedule(50, 1)["ahead_rows"] == 0
    assert all(engine.schedule(T, B)["recurrent_halves"] for T, B in ((1, 1), (50, 1), (50, 7)))
    rng = make_rng("halves", mode)
    T = 33
    x = make_input(rng, T, 3, 24, np.float32)
    alone = engine_forward(layer, x[:, :1])
    for got, want in zip(engine_forward(layer, x[:, :1]), alone):
        if want is not None:
            np.testing.assert_array_equal(got, want)
    for got, whole in zip(alone, engine_forward(layer, x)):
        if got is not None:
            np.testing.assert_array_equal(got, whole[:, :1])
    if mode.startswith("lstm"):
        assert_split_call_matches(layer, x, 11)
    expected = reference.module_forward(ref_mode(mode), params64(layer), x, None, None, False)
    assert_result(mode, layer(x), expected, np.float32)
