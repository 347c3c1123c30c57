"""Shapes large enough to reach every blocking path of the engine: the input
projection done in several time chunks (walked backwards for the reverse
direction), several row blocks of the GEMM, register tiles with every
remainder of rows, and a projection wide enough to be split over threads.
Small shapes fit in one chunk and one block, so the other tests never reach
these."""
import functools

import numpy as np
import pytest

import reference
from helpers import (assert_result, assert_split_call_matches, make_hx, make_input, make_layer,
                     make_rng, params64, ref_mode)
from lstm_fast import _core

# A gx row is G*Hp = 4*144 values. At B=31 rows per step a chunk (plan.c:
# 256 KiB of gx, but at least 128 rows) holds 5 steps, so T=40 takes 8
# chunks, and a chunk's 155 rows exceed a 512 KiB row block of A at K=1000
# (126 rows for float32, 60 for float64). From B=32 on, the LSTM's steps
# compute their own input projection instead (plan.c:
# LF_FUSED_INPUT_MIN_BATCH), while the GRU keeps the chunks: B=33 runs the
# fused path over a long sequence.
T, I, H = 40, 1000, 140
LENGTHS = [40, 26, 24, 1, 0, 40, 25, 9, 39] + [(7 * i) % 41 for i in range(24)]


@pytest.mark.parametrize("B", [31, 33])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("mode", ["lstm", "lstmp", "gru"])
def test_blocked_paths_match_reference(isa, mode, dtype, B):
    rng = make_rng("blocking", mode, np.dtype(dtype).name)
    layer = make_layer(mode, I, H, num_layers=1, bidirectional=True, dtype=dtype, seed=5)
    P = layer.proj_size if mode == "lstmp" else 0
    x = make_input(rng, T, B, I, dtype)
    hx = make_hx(mode, rng, 2, B, H, P, dtype)
    lengths = LENGTHS[:B]
    expected = reference.module_forward(ref_mode(mode), params64(layer), x, hx, lengths, False)
    got = layer(x, hx=hx, lengths=lengths)
    assert_result(mode, got, expected, dtype)

    # the same with the work split over threads: bitwise equal
    engine = layer._current_engine()
    x_ = np.ascontiguousarray(x, dtype)
    h0, c0 = hx if mode.startswith("lstm") else (hx, None)
    args = (x_, np.ascontiguousarray(h0, dtype),
            None if c0 is None else np.ascontiguousarray(c0, dtype),
            np.array(lengths, np.int64))
    serial = engine.forward(*args)
    threaded = engine.forward(*args, _core.ThreadPool(2), 2)
    for a, b in zip(serial, threaded):
        if a is not None:
            np.testing.assert_array_equal(a, b)


# Stacked: two bidirectional layers at B=33. The GRU's input projection comes
# in chunks of 4 steps (256 KiB // (3 * 144 * 33 * 4 bytes) = 4 steps, and
# 4 * 33 >= 128 rows; float64 takes the 128-row minimum, 4 steps too), so
# T=160 takes 40, and the reverse direction walks them backwards from each
# sequence's end; the lengths straddle chunk borders. Layer 1 reads the
# between-layers buffer (K = 2*H = 280). From B=32 on the LSTM computes the
# projection inside each step (one-step chunks), so a shorter sequence does
# for it. Most lengths are short: the reference's cost is their sum.
STACKED = {
    "gru": (160, [160, 159, 151, 147, 76, 74, 73, 1, 0]),
    "lstmp": (40, [40, 39, 21, 20, 1, 0]),
}
B_STACKED, I_STACKED = 33, 24


def _stacked_lengths(mode):
    lengths = STACKED[mode][1]
    return lengths + [(5 * i) % 13 for i in range(B_STACKED - len(lengths))]


@functools.lru_cache(maxsize=None)
def _stacked_case(mode):
    """Parameters, input and states exact in float32, and the reference for them:
    one reference serves both dtypes."""
    rng = make_rng("blocking-stacked", mode)
    T = STACKED[mode][0]
    P = 46 if mode == "lstmp" else 0
    params = reference.random_params(ref_mode(mode), I_STACKED, H, 2, True, True, P, rng=rng,
                                     dtype=np.float32)
    x = make_input(rng, T, B_STACKED, I_STACKED, np.float32)
    hx = make_hx(mode, rng, 4, B_STACKED, H, P, np.float32)
    expected = reference.module_forward(ref_mode(mode), params, x, hx, _stacked_lengths(mode))
    return params, x, hx, expected


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("mode", list(STACKED))
def test_stacked_bidirectional_chunks_match_reference(isa, mode, dtype):
    params, x, hx, expected = _stacked_case(mode)
    T = STACKED[mode][0]
    layer = make_layer(mode, I_STACKED, H, num_layers=2, bidirectional=True, dtype=dtype)
    layer.load_state_dict(params)
    # Premise: one layer's scratch is the same at T and at (T-1)//2 steps
    # only if a chunk has at most (T-1)//2 steps, i.e. T takes 3 or more.
    single = make_layer(mode, I_STACKED, H, dtype=dtype)._current_engine()
    assert single.workspace_bytes((T - 1) // 2, B_STACKED) == single.workspace_bytes(T, B_STACKED)
    h0, c0 = (a.astype(dtype) for a in hx) if mode.startswith("lstm") else (hx.astype(dtype), None)
    # Split over two threads (the single-thread results equal these bit for
    # bit: test_thread_pool.py).
    y, h_n, c_n = layer._current_engine().forward(
        x.astype(dtype), h0, c0, np.array(_stacked_lengths(mode), np.int64), _core.ThreadPool(2), 2)
    assert_result(mode, (y, (h_n, c_n) if mode.startswith("lstm") else h_n), expected, dtype)


def test_pool_survives_changing_thread_counts():
    # Workers outside one job may still be looking at it when the next one is
    # published; alternating job widths on one pool exercises that hand-off.
    layer = make_layer("lstm", 8, 48, dtype=np.float32, seed=1)
    engine = layer._current_engine()
    x = np.ones((3, 2, 8), np.float32)
    expected = engine.forward(x)
    pool = _core.ThreadPool(4)
    for i in range(3000):
        got = engine.forward(x, None, None, None, pool, (1, 3, 2, 4)[i % 4])
        np.testing.assert_array_equal(got[0], expected[0])


def test_long_sequence_needs_bounded_scratch_and_splits_exactly(isa):
    # T = 100000 must not need T x B x 4H of scratch: one layer's workspace
    # stays at a chunk of the input projection plus the states.
    layer = make_layer("lstm", 8, 32, dtype=np.float32, seed=6)
    engine = layer._current_engine()
    T = 100_000
    assert engine.workspace_bytes(T, 1) < 5 * 1024 * 1024
    assert engine.workspace_bytes(T, 1) == engine.workspace_bytes(10 * T, 1)
    x = make_input(make_rng("long"), T, 1, 8, np.float32)
    assert_split_call_matches(layer, x, 37_001)


@pytest.mark.parametrize("mode", ["lstm", "gru", "stacked"])
def test_no_steps_need_no_scratch_however_large_the_batch(mode):
    # With no steps a forward only copies the initial states, so a batch
    # whose states fit in memory must not need a step's worth of scratch
    # (at H=1 a GRU step's gx alone is ~50x the states).
    layer = make_layer("lstm" if mode == "stacked" else mode, 1, 1, dtype=np.float32, seed=7,
                       **({"num_layers": 2} if mode == "stacked" else {}))
    engine = layer._current_engine()
    for steps, batch in ((0, 2**40), (2**40, 0), (0, 0)):
        assert engine.workspace_bytes(steps, batch) == 0
    assert engine.workspace_bytes(1, 1) > 0
    batch = 3 * 2**16
    h0 = make_rng("no steps").standard_normal((layer.num_layers, batch, 1)).astype(np.float32)
    hx = (h0, -h0) if mode != "gru" else h0
    output, states = layer(np.empty((0, batch, 1), np.float32), hx)
    assert output.shape == (0, batch, 1)
    for got, want in zip(states if mode != "gru" else (states,), hx if mode != "gru" else (hx,)):
        np.testing.assert_array_equal(got, want)
