"""The amx ISA: float32 products on AMX tiles (kernels_amx.c).

A call projects its input as six bfloat16 products of three-way splits of x
and W_ih when it has 32 rows (T x B) or more and every layer's projection
128K multiply-adds per row or more (lf_call_uses_amx), and from a batch of
32 its recurrent products h @ W_hh too (lf_call_recurs_on_amx); other calls
take the AVX-512 path. The general suites run on amx too, but their layers are small;
here the shapes reach every edge of the tile code: 32, 33, 48 and 50 rows
(pairs of row tiles, a lone last one, partial ones alone or in a pair), inputs that end in a partial block of
32 values of K, hidden widths with a partial or a lone column tile, several
groups of 16 column tiles, stacks whose second layer reads the first's
output, both directions, lengths, and every cell kind.
"""
import numpy as np
import pytest

import lstm_fast
import reference
from helpers import (MODES, assert_result, engine_forward, make_hx, make_input, make_layer,
                     make_rng, params64, ref_mode, split, tol)
from lstm_fast import _core

pytestmark = pytest.mark.skipif(not _core.isa_available("amx"),
                                reason="no AMX on this CPU or in this build")

MIN_WORK = 128 * 1024  # LF_AMX_MIN_WORK


@pytest.fixture
def amx(monkeypatch):
    monkeypatch.setenv("LSTM_FAST_ISA", "amx")


def on_amx(layer, T, B):
    return layer._current_engine().schedule(T, B)["input_on_amx"]


def assert_threads_agree(layer, x, hx=None, lengths=None):
    """The same bits on the calling thread alone and on pools of two and three."""
    one = engine_forward(layer, x, hx, lengths)
    for pool in (_core.ThreadPool(2), _core.ThreadPool(3)):
        for a, b in zip(one, engine_forward(layer, x, hx, lengths, pool=pool)):
            if a is not None:
                np.testing.assert_array_equal(a, b)


def test_which_calls_are_on_the_tiles(amx):
    layer = make_layer("lstm", 64, 96)  # 64 x 4 x 96 = 24K per row: too little
    assert layer._current_engine().isa == "amx"
    assert not on_amx(layer, 100, 64)
    assert layer._current_engine().schedule(100, 1)["ahead_rows"] > 0  # as on AVX-512
    layer = make_layer("lstm", 512, 64)  # 128K
    assert not on_amx(layer, 31, 1) and on_amx(layer, 32, 1)
    assert not on_amx(layer, 10, 3) and on_amx(layer, 8, 4) and on_amx(layer, 1, 32)
    assert not on_amx(layer, 0, 32) and not on_amx(layer, 32, 0)
    assert not on_amx(make_layer("lstm", 511, 64), 100, 1)
    assert layer._current_engine().schedule(100, 1)["ahead_rows"] == 0
    assert layer._current_engine().schedule(100, 64)["chunk_steps"] > 1  # never fused
    # every layer's projection must be large enough: here the second's is not
    assert not on_amx(make_layer("lstm", 512, 64, num_layers=2, proj_size=0), 100, 1)
    assert on_amx(make_layer("gru", 256, 176, num_layers=2, bidirectional=True), 32, 1)
    # float64 runs the AVX-512 kernels
    wide = make_layer("lstm", 512, 64, dtype=np.float64)
    assert wide._current_engine().isa == "avx512" and not on_amx(wide, 100, 64)


def input_for(mode, H, past):
    """The narrowest input that puts a layer on the tiles, plus `past`."""
    gates = {"lstm": 4, "lstmp": 4, "gru": 3}.get(mode, 1)
    padded = -(-H // 16) * 16
    return -(-MIN_WORK // (gates * padded)) + past


# (H, past): one column tile per gate, a partial column tile, several groups
# of 16 column tiles; inputs that end in a partial block of K, or a full one.
SHAPES = [(16, 1), (50, 17), (180, 3), (1100, 0)]


@pytest.mark.parametrize("T,B", [(32, 1), (33, 1), (16, 3), (1, 33), (2, 16), (25, 2)])
@pytest.mark.parametrize("H,past", SHAPES)
@pytest.mark.parametrize("mode", MODES)
def test_matches_reference(amx, mode, H, past, T, B):
    I = input_for(mode, H, past)
    rng = make_rng("amx", mode, I, T, B)
    layer = make_layer(mode, I, H, seed=I + T, proj_size=0)
    assert on_amx(layer, T, B)
    # Scaled so that a pre-activation stays about as large whatever I: at
    # I=8193 (one RNN column tile) unscaled ones reach +-40, and float32's
    # own rounding of such a sum, on either path, nears the tolerance.
    x = make_input(rng, T, B, I, np.float32) * np.float32(min(1.0, (256 / I) ** 0.5))
    hx = make_hx(mode, rng, 1, B, H, 0, np.float32)
    lengths = None if B == 1 else [T - b % T for b in range(B)]
    expected = reference.module_forward(ref_mode(mode), params64(layer), x, hx, lengths, False)
    assert_result(mode, layer(x, hx=hx, lengths=lengths), expected, np.float32)


@pytest.mark.parametrize("mode", ["lstm", "lstmp", "gru"])
def test_stacked_bidirectional(amx, mode):
    # The second layer reads both directions of the first (I = 2R).
    T, B, I, H = 9, 4, 300, 150
    P = 140 if mode == "lstmp" else 0
    rng = make_rng("amx-stack", mode)
    layer = make_layer(mode, I, H, num_layers=2, bidirectional=True, proj_size=P, seed=4)
    assert on_amx(layer, T, B)
    x = make_input(rng, T, B, I, np.float32)
    hx = make_hx(mode, rng, 4, B, H, P, np.float32)
    expected = reference.module_forward(ref_mode(mode), params64(layer), x, hx, [9, 3, 0, 8],
                                        False)
    assert_result(mode, layer(x, hx=hx, lengths=[9, 3, 0, 8]), expected, np.float32)


@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn_tanh"])
def test_same_bits_on_any_thread_count_and_in_any_batch(amx, mode):
    # Each row's sums run in one order whatever the row tiles, the threads'
    # share of the columns (split steps) or of the row split, and the
    # pipeline's chunks: the same bits. Row 1 alone (T = 40 rows) is on
    # AMX too, so it matches its batched self exactly (LSTM, GRU).
    T, B, H = 40, 5, 48
    I = input_for(mode, H, 5)
    layer = make_layer(mode, I, H, seed=3)
    assert on_amx(layer, T, B) and on_amx(layer, T, 1)
    x = make_input(make_rng("amx-bits", mode), T, B, I, np.float32)
    one = engine_forward(layer, x)
    for pool, threads in ((_core.ThreadPool(2), 0), (_core.ThreadPool(2), 2),
                          (_core.ThreadPool(3), 3)):
        for a, b in zip(one, engine_forward(layer, x, pool=pool, threads=threads)):
            if a is not None:
                np.testing.assert_array_equal(a, b)
    if mode.startswith("rnn"):
        return  # a plain RNN's lone row splits its recurrent sums (README)
    alone = split(mode, layer(np.ascontiguousarray(x[:, 1:2])))
    for got, whole in zip(alone, split(mode, layer(x))):
        if got is not None:
            np.testing.assert_array_equal(got, whole[:, 1:2])


def test_pipelined_batch_of_one(amx):
    # A small step with a wide input, on two threads, pipelines: the second
    # thread projects each chunk of 8 rows on the tiles, alone, while the
    # first steps.
    layer = make_layer("lstm", 352, 96, seed=10)  # 352 x 4 x 96 = 132K per row
    x = make_input(make_rng("amx-pipeline"), 50, 1, 352, np.float32)
    assert on_amx(layer, 50, 1) and layer._current_engine().schedule(50, 1)["pipeline_steps"] > 0
    one = engine_forward(layer, x)
    two = engine_forward(layer, x, pool=_core.ThreadPool(2))
    for a, b in zip(one, two):
        if a is not None:
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("mode,I,H,recurrent", [("lstm", 600, 60, False),
                                                ("gru", 300, 220, True)])
def test_stream_of_a_batch_of_32_equals_one_call(amx, mode, I, H, recurrent):
    # A batch of 32 is on AMX one step at a time too (and the GRU's
    # recurrent product with it).
    layer = make_layer(mode, I, H, seed=2)
    x = make_input(make_rng("amx-stream", mode), 6, 32, I, np.float32)
    assert on_amx(layer, 1, 32)
    assert layer._current_engine().schedule(1, 32)["recurrence_on_amx"] == recurrent
    y, state = layer(x)
    stream = layer.stream(batch_size=32)
    got = np.stack([stream.step(x[t]) for t in range(len(x))])
    np.testing.assert_array_equal(got, y)
    if mode == "lstm":
        np.testing.assert_array_equal(stream.state[1], state[1])


def test_huge_and_not_finite_inputs_as_in_float32(amx, monkeypatch):
    # Values that would round to infinity in bfloat16 (from 3.39e38) are
    # split by truncation, so their products stay finite; an infinite input
    # saturates the gates (not inf * 0 = NaN from a zero term of a weight);
    # NaN propagates. As the AVX-512 path's float32 arithmetic does.
    T, B, H = 32, 1, 64
    I = input_for("rnn_tanh", H, 0)
    layer = make_layer("rnn_tanh", I, H, seed=1)
    weights = layer.state_dict()
    weights["weight_ih_l0"][:, 0] = 0.5   # exactly a bfloat16: zero mid and lo terms
    layer.load_state_dict(weights)
    x = make_input(make_rng("amx-huge"), T, B, I, np.float32)
    x[2, 0, :4] = [3.4e38, -3.4e38, 3.39e38, 1.0]
    x[3, 0, 0] = np.inf
    x[5, 0, 2] = np.nan
    x[7, 0, 0] = 3.3e-38                  # near the smallest normal
    y = layer(x)[0]
    assert on_amx(layer, T, B)
    monkeypatch.setenv("LSTM_FAST_ISA", "avx512")
    fma = make_layer("rnn_tanh", I, H, seed=1)
    fma.load_state_dict(weights)
    want = fma(x)[0]
    assert np.all(np.abs(y[3]) == 1) and np.all(np.isnan(y[5:])) and np.all(np.isfinite(y[:5]))
    np.testing.assert_allclose(y, want, equal_nan=True, **tol(np.float32))


def onnx_gru(params, x, h0, lengths, variant, reverse=False):
    """A one-layer GRU with clip or the reset before the product (which
    reference.py's torch-shaped GRU lacks), through the ONNX reference."""
    def onnx_order(w):  # torch's r, z, n blocks -> ONNX's z, r, h
        r, z, n = np.split(np.asarray(w, np.float64), 3)
        return np.concatenate([z, r, n])
    W = onnx_order(params["weight_ih_l0"])[None]
    R = onnx_order(params["weight_hh_l0"])[None]
    bias = np.concatenate([onnx_order(params["bias_ih_l0"]),
                           onnx_order(params["bias_hh_l0"])])[None]
    y, h_n = reference.onnx_forward(
        "GRU", x, W, R, bias, lengths, h0, clip=variant.get("clip"),
        direction="reverse" if reverse else "forward",
        linear_before_reset=0 if variant.get("reset_before_product") else 1)
    return y[:, 0], h_n


@pytest.mark.parametrize("mode,variant", [
    ("lstm", None), ("lstmp", None), ("rnn_relu", None), ("gru", None),
    ("lstm", {"peephole": True, "clip": 2.0}), ("gru", {"clip": 1.5}),
    ("gru", {"reset_before_product": True, "clip": 1.5}),
])
def test_recurrence_on_the_tiles(amx, mode, variant):
    # From a batch of 32, the recurrent product goes to the tiles too (gx
    # += h @ W_hh, or the GRU's gh = h @ W_hh, its n gate needing the sum
    # apart; then the step only activates): against the reference, with
    # lengths and an initial state, and the same bits on two and three
    # threads (each its own panels, h split by row tiles). The GRU with the
    # reset before the product takes two: h @ W_rz, then (r*h) @ W_hn.
    T, B = 6, 35 if mode != "gru" else 50  # a partial row tile, lone or paired
    # R x G x Hp >= 128K: 180 x 4 x 192, LSTMP 170 x 4 x 208, RNN 368 x 1 x
    # 368, GRU 220 x 3 x 224
    H, P = {"lstmp": (200, 170), "rnn_relu": (368, 0), "gru": (220, 0)}.get(mode, (180, 0))
    I = input_for(mode, H, 7)
    rng = make_rng("amx-recurrent", mode, str(variant))
    if variant is None:
        layer = make_layer(mode, I, H, proj_size=P, seed=6)
    else:
        layer = type(make_layer(mode, 1, 1))(I, H, variant=variant, seed=6)
    schedule = layer._current_engine().schedule(T, B)
    assert schedule["input_on_amx"] and schedule["recurrence_on_amx"]
    assert not layer._current_engine().schedule(T, 31)["recurrence_on_amx"]
    x = make_input(rng, T, B, I, np.float32)
    hx = make_hx(mode, rng, 1, B, H, P, np.float32)
    lengths = [T - b % (T + 1) for b in range(B)]
    if mode == "gru" and variant:
        expected = onnx_gru(layer.state_dict(), x, hx, lengths, variant)
    else:
        expected = reference.module_forward(ref_mode(mode), params64(layer), x, hx, lengths,
                                            False, variant=variant)
    assert_result(mode, layer(x, hx=hx, lengths=lengths), expected, np.float32)
    assert_threads_agree(layer, x, hx, lengths)


@pytest.mark.parametrize("mode,H,reset_before", [("lstm", 180, False), ("gru", 220, False),
                                                  ("gru", 220, True)])
def test_recurrence_on_the_tiles_stacked_bidirectional(amx, mode, H, reset_before):
    # Both directions of both layers take the tiles, one after another, on
    # one workspace (h's or r*h's split and the GRU's gh reused).
    T, B = 4, 33
    I = input_for(mode, H, 3)
    rng = make_rng("amx-recurrent-stack", mode, str(reset_before))
    if reset_before:
        layer = lstm_fast.GRU(I, H, num_layers=2, bidirectional=True, seed=8,
                              variant={"reset_before_product": True})
    else:
        layer = make_layer(mode, I, H, num_layers=2, bidirectional=True, proj_size=0, seed=8)
    assert layer._current_engine().schedule(T, B)["recurrence_on_amx"]
    x = make_input(rng, T, B, I, np.float32)
    hx = make_hx(mode, rng, 4, B, H, 0, np.float32)
    lengths = [T - b % (T + 1) for b in range(B)]
    if reset_before:  # the ONNX reference, one layer at a time
        params = layer.state_dict()
        inp, expected_h = x, []
        for k in range(2):
            ys = []
            for d, sfx in enumerate(("", "_reverse")):
                one = {f"{name}_l0": params[f"{name}_l{k}{sfx}"]
                       for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
                y, h_n = onnx_gru(one, inp, hx[2 * k + d:2 * k + d + 1], lengths,
                                  {"reset_before_product": True}, reverse=d == 1)
                ys.append(y)
                expected_h.append(h_n[0])
            inp = np.concatenate(ys, axis=2)
        expected = (inp, np.stack(expected_h))
    else:
        expected = reference.module_forward(ref_mode(mode), params64(layer), x, hx, lengths,
                                            False)
    assert_result(mode, layer(x, hx=hx, lengths=lengths), expected, np.float32)
    assert_threads_agree(layer, x, hx, lengths)


def test_a_nan_weight_stays_nan(amx, monkeypatch):
    # A NaN whose payload lies only in the low 16 bits must not become an
    # infinity in bfloat16 (which a large input would turn into a finite,
    # saturated gate); as in float32, its unit's outputs are NaN.
    T, B, H = 32, 1, 16
    I = input_for("rnn_relu", H, 0)
    layer = make_layer("rnn_relu", I, H, seed=2)
    weights = layer.state_dict()
    weights["weight_hh_l0"][:] = 0
    weights["weight_ih_l0"][3, 5] = np.array(0x7f800001, np.uint32).view(np.float32)
    layer.load_state_dict(weights)
    x = make_input(make_rng("amx-nan"), T, B, I, np.float32)
    x[:, :, 5] = 1 + 2**-9 + 2**-18  # three positive terms: inf * each would sum to inf
    y = layer(x)[0]
    assert on_amx(layer, T, B)
    # the first step's NaN is unit 3's alone; from the second on, 0 * NaN in
    # the recurrent product spreads it, as float32 does
    assert np.isnan(y[0, 0, 3]) and np.all(np.isfinite(np.delete(y[0], 3, axis=1)))
    monkeypatch.setenv("LSTM_FAST_ISA", "avx512")
    fma = make_layer("rnn_relu", I, H, seed=2)
    fma.load_state_dict(weights)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(fma(x)[0]))
