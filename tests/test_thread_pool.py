"""Work split over threads: identical numbers for any thread count, and the
thread-count controls."""
import multiprocessing
import os

import numpy as np
import pytest

import lstm_fast
from lstm_fast import _config, _core
from helpers import make_hx, make_input, make_layer, make_rng, proj_for, split

MODES = ["lstm", "lstmp", "gru", "rnn_tanh", "rnn_relu"]


@pytest.mark.parametrize("B", [1, 5])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", MODES)
def test_results_bitwise_identical_for_any_thread_count(isa, mode, dtype, B):
    # 33 hidden units (and a projection of 11) give several SIMD blocks on
    # every ISA, so 2 and 3 threads really split the step; lengths and two
    # directions exercise the frozen rows and the reverse walk under threads.
    # A batch of one row takes the lone-row tiles (two blocks at a time, in
    # each thread's share of the blocks).
    rng = make_rng("thread-count", mode, np.dtype(dtype).name, B)
    I, H, L, T = 7, 33, 2, 9
    layer = make_layer(mode, I, H, num_layers=L, bidirectional=True, dtype=dtype, seed=3)
    engine = layer._current_engine()
    x = np.ascontiguousarray(make_input(rng, T, B, I, dtype))
    hx = make_hx(mode, rng, 2 * L, B, H, proj_for(mode, H), dtype)
    h0, c0 = (hx if mode.startswith("lstm") else (hx, None))
    h0 = np.ascontiguousarray(h0, dtype)
    c0 = None if c0 is None else np.ascontiguousarray(c0, dtype)
    lengths = np.array([9, 0, 4, 9, 1][:B], dtype=np.int64)

    serial = engine.forward(x, h0, c0, lengths)
    pool = _core.ThreadPool(3)
    for threads in (1, 2, 3, 0):
        threaded = engine.forward(x, h0, c0, lengths, pool, threads)
        for got, want in zip(threaded, serial):
            if want is None:
                assert got is None
            else:
                np.testing.assert_array_equal(got, want, err_msg=f"threads={threads}")


def test_layer_results_do_not_depend_on_set_num_threads(isa):
    # The engine only splits a step whose work (B * R * 4 * H_padded
    # multiply-adds for an LSTM) is at least 8192 per thread (grid.c,
    # useful_threads), and never over more threads than H_padded / block
    # panels. B=8, H=64: 131072 per step, and 4 to 16 panels of 16 to 4
    # units, so 2 and 4 threads are really used on every ISA.
    rng = make_rng("set-num-threads")
    layer = make_layer("lstm", 16, 64, num_layers=2, dtype=np.float32, seed=1)
    x = make_input(rng, 12, 8, 16, np.float32)
    before = lstm_fast.get_num_threads()
    try:
        results = []
        for n in (1, 2, 4):
            lstm_fast.set_num_threads(n)
            assert lstm_fast.get_num_threads() == n
            results.append(split("lstm", layer(x)))
    finally:
        lstm_fast.set_num_threads(before)
    for other in results[1:]:
        for got, want in zip(other, results[0]):
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("bad", [0, -1, _core.MAX_THREADS + 1])
def test_set_num_threads_out_of_range(bad):
    with pytest.raises(ValueError, match="num_threads"):
        lstm_fast.set_num_threads(bad)


@pytest.mark.parametrize("bad", [1.5, True, "2", None])
def test_set_num_threads_wrong_type(bad):
    with pytest.raises(TypeError, match="num_threads"):
        lstm_fast.set_num_threads(bad)


@pytest.mark.parametrize("value", ["0", "-3", "two", "1.5", "1_0", "+3", "\uff12", "0x2"])
def test_bad_thread_env_variable_is_named(monkeypatch, value):
    monkeypatch.setenv("LSTM_FAST_NUM_THREADS", value)
    monkeypatch.setattr(_config, "_pool", None)
    with pytest.raises(ValueError, match="LSTM_FAST_NUM_THREADS"):
        lstm_fast.get_num_threads()


def test_thread_env_variable_sets_the_default(monkeypatch):
    monkeypatch.setenv("LSTM_FAST_NUM_THREADS", " 3 ")
    monkeypatch.setattr(_config, "_pool", None)
    assert lstm_fast.get_num_threads() == 3
    assert lstm_fast.cpu_info()["num_threads"] == 3


def test_engine_refuses_negative_threads():
    layer = make_layer("gru", 4, 8, dtype=np.float32, seed=0)
    x = np.zeros((2, 1, 4), np.float32)
    with pytest.raises(ValueError, match="threads"):
        layer._current_engine().forward(x, None, None, None, _core.ThreadPool(2), -1)


def _result_of_forked_child(target):
    """Run target(queue) in a forked child; return what it put in the queue."""
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=target, args=(queue,))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0
    return queue.get(timeout=5)


def _child_runs_a_layer(queue):
    layer = make_layer("lstm", 8, 64, dtype=np.float32, seed=0)
    y, _ = layer(np.ones((20, 4, 8), np.float32))
    queue.put(float(y.sum()))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_can_run_layers():
    # The parent's pool has live workers; a forked child has none and must not
    # wait for them.
    lstm_fast.set_num_threads(2)
    layer = make_layer("lstm", 8, 64, dtype=np.float32, seed=0)
    expected = float(layer(np.ones((20, 4, 8), np.float32))[0].sum())
    assert _result_of_forked_child(_child_runs_a_layer) == expected


def _child_reports_its_threads(queue):
    layer = make_layer("gru", 4, 8, dtype=np.float32, seed=0)
    layer(np.ones((3, 1, 4), np.float32))
    queue.put(lstm_fast.get_num_threads())


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_keeps_the_parents_thread_count(monkeypatch):
    # As torch.set_num_threads: a fork-based multiprocessing pool of workers
    # set to one thread each must not grow back to the core count (nor
    # trip over a bad variable that set_num_threads overrode).
    before = lstm_fast.get_num_threads()
    monkeypatch.setenv("LSTM_FAST_NUM_THREADS", "abc")
    try:
        for threads in (1, 3):
            lstm_fast.set_num_threads(threads)
            assert _result_of_forked_child(_child_reports_its_threads) == threads
    finally:
        lstm_fast.set_num_threads(before)


@pytest.mark.parametrize("kind, options, variant", [
    (lstm_fast.LSTM, {}, {"peephole": True, "clip": 1.5, "coupled_input_forget": True}),
    (lstm_fast.LSTM, {},
     {"activations": [[("hardsigmoid", 0.25, 0.5), ("softsign", 0, 0), ("elu", 1.0, 0)]] * 2}),
    (lstm_fast.GRU, {}, {"reset_before_product": True}),
    (lstm_fast.GRU, {}, {"clip": 1.0}),
    (lstm_fast.RNN, {"nonlinearity": "relu"}, {"clip": 1.0}),
], ids=["lstm-peephole-clip-coupled", "lstm-activations", "gru-reset-before", "gru-clip",
        "rnn-relu-clip"])
def test_variant_results_identical_for_any_thread_count(isa, kind, options, variant):
    # The general (variant) path runs under the same panel split as the
    # default one; its per-unit options must land on the right units. The
    # reset-before GRU's second phase reads r*h written by every thread.
    rng = make_rng("thread-count-variant", kind.__name__, str(sorted(variant)))
    layer = kind(5, 37, num_layers=2, bidirectional=True, dtype=np.float32, seed=4,
                 variant=variant, **options)
    engine = layer._current_engine()
    x = np.ascontiguousarray(make_input(rng, 8, 3, 5, np.float32))
    lengths = np.array([8, 3, 0], dtype=np.int64)
    serial = engine.forward(x, None, None, lengths)
    pool = _core.ThreadPool(3)
    for threads in (2, 3):
        for got, want in zip(engine.forward(x, None, None, lengths, pool, threads), serial):
            np.testing.assert_array_equal(got, want)


def _child_uses_and_drops_a_pool(queue):
    # A pool made in the parent: in the child its workers do not exist.
    pool = _PARENT_POOL
    layer = make_layer("lstm", 8, 64, dtype=np.float32, seed=0)
    y = layer._current_engine().forward(np.ones((5, 2, 8), np.float32), None, None, None, pool, 2)[0]
    queue.put(float(y.sum()))


_PARENT_POOL = None


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_user_pool_in_forked_child_runs_inline_and_frees():
    global _PARENT_POOL
    _PARENT_POOL = _core.ThreadPool(2)
    layer = make_layer("lstm", 8, 64, dtype=np.float32, seed=0)
    expected = float(layer._current_engine().forward(
        np.ones((5, 2, 8), np.float32), None, None, None, _PARENT_POOL, 2)[0].sum())
    assert _result_of_forked_child(_child_uses_and_drops_a_pool) == expected
    _PARENT_POOL = None


def test_bad_thread_variable_does_not_break_the_report(monkeypatch):
    monkeypatch.setenv("LSTM_FAST_NUM_THREADS", "zero")
    monkeypatch.setattr(_config, "_pool", None)
    info = lstm_fast.cpu_info()
    assert info["num_threads"] is None
    assert "LSTM_FAST_NUM_THREADS" in info["threads_error"]
    import io
    out = io.StringIO()
    lstm_fast.show_config(file=out)
    assert "LSTM_FAST_NUM_THREADS" in out.getvalue()


def test_engine_refuses_misaligned_weights():
    w = np.zeros(4 * 3 * 2 * 4 + 1, np.uint8)[1:].view(np.float32).reshape(12, 2)
    with pytest.raises(ValueError, match="aligned"):
        _core.Engine("lstm", 2, 3, 0, 1, 1, False, np.float32, "portable",
                     [(w, np.zeros((12, 3), np.float32), None, None, None)])


def test_bench_gives_numpy_blas_the_peer_thread_count():
    # The benchmark's one-thread table must time the NumPy peer on one core
    # too: its OpenBLAS defaults to every core.
    from lstm_fast import bench

    blas_before, ours_before = bench.numpy_blas_threads(), lstm_fast.get_num_threads()
    if blas_before is None:
        pytest.skip("numpy's BLAS is not an OpenBLAS this process can reach")
    if blas_before < 2:
        pytest.skip("numpy's OpenBLAS runs one thread already (a serial build, or one core)")
    try:
        assert bench.set_threads(1) == 1
        assert bench.numpy_blas_threads() == 1 and lstm_fast.get_num_threads() == 1
        assert bench.set_threads(2) == 2
        assert bench.numpy_blas_threads() == 2 and lstm_fast.get_num_threads() == 2
    finally:
        bench.set_openblas_threads(blas_before)
        lstm_fast.set_num_threads(ours_before)
