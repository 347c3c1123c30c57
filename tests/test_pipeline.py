"""A step too small to split over threads runs pipelined on two (grid.c,
run_steps_pipelined): one thread runs every step, the other projects the
next chunk's input into a ring of two chunks, and they meet once per chunk.
Engine.schedule says when (pipeline_steps); these tests pick shapes where it
does, check that, and compare a two-thread call with a one-thread call bit
for bit and with the float64 reference: every cell kind, LSTMP, variants,
stacked and bidirectional layers (the reverse direction walks the chunks
from the end), lengths ending inside a chunk or at zero, and T from the
shortest that pipelines to lengths off the chunk size.
"""
import numpy as np
import pytest

import lstm_fast
import reference
from helpers import (assert_result, engine_forward, make_hx, make_input, make_layer, make_rng,
                     params64, ref_mode)
from lstm_fast import _core

CHUNK = 8  # LF_PIPELINE_STEPS


def _variant_layer(mode, I, H, dtype, seed, **kw):
    if mode == "lstm_variant":
        return lstm_fast.LSTM(I, H, dtype=dtype, seed=seed, **kw,
                              variant={"peephole": True, "coupled_input_forget": True, "clip": 1.5})
    return lstm_fast.GRU(I, H, dtype=dtype, seed=seed, **kw,
                         variant={"reset_before_product": True, "clip": 0.9})


LAYERS = {  # mode -> (input size, hidden size, layer factory)
    "lstm": (13, 40, lambda dtype, **kw: make_layer("lstm", 13, 40, dtype=dtype, seed=1, **kw)),
    "lstmp": (13, 40, lambda dtype, **kw: make_layer("lstmp", 13, 40, proj_size=17, dtype=dtype,
                                                     seed=2, **kw)),
    "gru": (13, 40, lambda dtype, **kw: make_layer("gru", 13, 40, dtype=dtype, seed=3, **kw)),
    "rnn_tanh": (13, 64, lambda dtype, **kw: make_layer("rnn_tanh", 13, 64, dtype=dtype, seed=4,
                                                        **kw)),
    "rnn_relu": (13, 64, lambda dtype, **kw: make_layer("rnn_relu", 13, 64, dtype=dtype, seed=5,
                                                        **kw)),
    "lstm_variant": (13, 40, lambda dtype, **kw: _variant_layer("lstm_variant", 13, 40, dtype, 6,
                                                                **kw)),
    "gru_variant": (13, 40, lambda dtype, **kw: _variant_layer("gru_variant", 13, 40, dtype, 7,
                                                               **kw)),
}


def _pipelined_batch(engine, T):
    """The smallest batch whose step is in the pipelined range."""
    for B in range(1, 17):
        if engine.schedule(T, B)["pipeline_steps"]:
            return B
    pytest.fail("no batch up to 16 pipelines: the test's shapes miss the range")


def _ref_mode(mode):
    return {"lstm_variant": "lstm", "gru_variant": "gru"}.get(mode, ref_mode(mode))


@pytest.mark.parametrize("T", [2 * CHUNK, 2 * CHUNK + 1, 3 * CHUNK - 1, 41])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("mode", list(LAYERS))
def test_pipelined_matches_one_thread_and_reference(isa, mode, dtype, T):
    I, H, factory = LAYERS[mode]
    layer = factory(dtype, num_layers=2, bidirectional=True)
    engine = layer._current_engine()
    B = _pipelined_batch(engine, T)
    assert engine.schedule(T, B)["pipeline_steps"] == CHUNK
    assert engine.schedule(2 * CHUNK - 1, B)["pipeline_steps"] == 0  # too short to pipeline
    rng = make_rng("pipeline", mode, np.dtype(dtype).name, T)
    x = make_input(rng, T, B, I, dtype)
    P = getattr(layer, "proj_size", 0)
    hx = make_hx(_ref_mode(mode), rng, 4, B, H, P, dtype)
    # ends inside a chunk, at zero, at T, and one step into the second chunk
    lengths = [T - 3, 0, T, CHUNK + 1][:B] + [T] * max(0, B - 4)
    one = engine_forward(layer, x, hx, lengths)
    two = engine_forward(layer, x, hx, lengths, _core.ThreadPool(2))
    for a, b in zip(one, two):
        if a is not None:
            np.testing.assert_array_equal(a, b)
    if mode == "gru_variant":
        return  # no module reference for the reset-before GRU: its bits match one thread
    variant = layer.variant if mode == "lstm_variant" else None
    expected = reference.module_forward(_ref_mode(mode), params64(layer), x, hx, lengths, False,
                                        variant=variant)
    assert_result(_ref_mode(mode), layer(x, hx=hx, lengths=lengths), expected, dtype)


def test_pipelined_through_the_layer_api(isa):
    # The layers pass the process's thread setting; with two threads a small
    # LSTM pipelines and gives the bits of one thread.
    layer = make_layer("lstm", 24, 64, dtype=np.float32, seed=8)
    assert layer._current_engine().schedule(50, 1)["pipeline_steps"] == CHUNK
    x = make_input(make_rng("pipeline-api"), 50, 1, 24, np.float32)
    previous = lstm_fast.get_num_threads()
    try:
        lstm_fast.set_num_threads(1)
        one = layer(x)
        lstm_fast.set_num_threads(2)
        two = layer(x)
    finally:
        lstm_fast.set_num_threads(previous)
    np.testing.assert_array_equal(one[0], two[0])
    for a, b in zip(one[1], two[1]):
        np.testing.assert_array_equal(a, b)


def test_pipeline_range_follows_the_step_work(isa):
    # Pipelined from LF_PIPELINE_MIN_STEP_WORK (9K) multiply-adds per step,
    # B*R*G*Hp (Hp: H padded to the block, 16/8/4 floats on AVX-512/AVX2/
    # portable), below LF_PIPELINE_MAX_STEP_WORK_BATCH_ONE (48K) at B=1 and
    # LF_PIPELINE_MAX_STEP_WORK (72K) for larger batches; K = 1024.
    def pipeline_steps(H, B, proj_size=0):
        layer = make_layer("lstm", 8, H, proj_size=proj_size, dtype=np.float32)
        return layer._current_engine().schedule(100, B)["pipeline_steps"]

    assert pipeline_steps(64, 1) == CHUNK          # 16K
    assert pipeline_steps(96, 1) == CHUNK          # 36K
    assert pipeline_steps(128, 1, proj_size=95) == CHUNK  # 95*4*128: 47.5K
    assert pipeline_steps(128, 1, proj_size=96) == 0      # 48K: the steps split
    assert pipeline_steps(64, 3) == CHUNK          # 48K in a batch of three
    assert pipeline_steps(64, 4) == CHUNK          # 64K
    assert pipeline_steps(96, 2) == 0              # 72K
    assert pipeline_steps(32, 2) == 0              # 8K: one thread
    assert pipeline_steps(32, 3) == CHUNK          # 12K


# Shapes whose one-thread path is another one: projecting ahead (a batch of
# one, AVX-512, W_hh over 128 KiB), the GEMM chunks with the steps' sums in
# halves (W_hh up to 128 KiB), the step's fused input projection (a batch
# of 32 and up). Values: layer, T, B, ahead_rows on AVX-512.
OTHER_PATHS = {
    "lstm-B1": (lambda: make_layer("lstm", 96, 96, dtype=np.float32, seed=10), 50, 1, 8),
    "gru-B1": (lambda: make_layer("gru", 112, 112, dtype=np.float32, seed=11), 50, 1, 6),
    "lstm-B1-halves": (lambda: make_layer("lstm", 64, 64, dtype=np.float32, seed=14), 50, 1, 0),
    "gru-B1-halves": (lambda: make_layer("gru", 64, 64, dtype=np.float32, seed=15), 49, 1, 0),
    "lstm-B32": (lambda: make_layer("lstm", 12, 12, dtype=np.float32, seed=12), 23, 32, 0),
}


@pytest.mark.parametrize("name", list(OTHER_PATHS))
def test_pipelined_gives_the_bits_of_the_other_paths(isa, name):
    factory, T, B, ahead = OTHER_PATHS[name]
    layer = factory()
    engine = layer._current_engine()
    assert engine.schedule(T, B)["pipeline_steps"] == CHUNK
    assert engine.schedule(T, B)["ahead_rows"] == (ahead if isa in ("avx512", "amx") else 0)
    if B > 1:
        assert engine.schedule(T, B)["chunk_steps"] == 1  # fused on one thread
    x = make_input(make_rng("pipeline-paths", name), T, B, engine.input_size, np.float32)
    one = engine_forward(layer, x)
    for got in (engine_forward(layer, x, pool=_core.ThreadPool(2)),
                engine_forward(layer, x, pool=_core.ThreadPool(4)),  # a job of 2 on a pool of 4
                engine_forward(layer, x, pool=_core.ThreadPool(2), threads=2)):  # the split steps
        for a, b in zip(one, got):
            if a is not None:
                np.testing.assert_array_equal(a, b)


def test_pipelined_calls_sharing_a_busy_pool(isa):
    # A second caller that finds the pool busy runs alone (count 1), where a
    # job marked for the pipeline must step as usual; every call, whichever
    # ran how, gives the one-thread bits.
    import threading
    layer = make_layer("lstm", 48, 48, dtype=np.float32, seed=13)
    assert layer._current_engine().schedule(40, 1)["pipeline_steps"] == CHUNK
    xs = [make_input(make_rng("pipeline-busy", i), 40, 1, 48, np.float32) for i in range(4)]
    expected = [engine_forward(layer, x)[0] for x in xs]
    pool, failures = _core.ThreadPool(2), []

    def caller(offset):
        for i in range(60):
            k = (i + offset) % len(xs)
            if not np.array_equal(engine_forward(layer, xs[k], pool=pool)[0], expected[k]):
                failures.append(k)

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures


def test_a_wide_input_splits_the_steps_instead(isa):
    # The projecting thread must keep up: no layer's input wider than 4x the
    # state (the second layer of a bidirectional stack reads 2x).
    for I, expected in ((4 * 48, CHUNK), (4 * 48 + 1, 0)):
        engine = make_layer("lstm", I, 48, dtype=np.float32)._current_engine()
        assert engine.schedule(40, 1)["pipeline_steps"] == expected
    stacked = make_layer("lstm", 8, 48, num_layers=2, bidirectional=True, dtype=np.float32)
    assert stacked._current_engine().schedule(40, 1)["pipeline_steps"] == CHUNK
    for I, expected in ((44, CHUNK), (45, 0)):  # the state of an LSTMP is P = 11 wide
        lstmp = make_layer("lstmp", I, 96, proj_size=11, dtype=np.float32)
        assert lstmp._current_engine().schedule(40, 4)["pipeline_steps"] == expected
