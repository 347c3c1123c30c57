"""module.stream(): step-by-step inference with the state kept inside.

A stream must give, bit for bit, what one call of the module over the whole
sequence gives (which test_layers checks against the float64 reference), on
every ISA, and refuse what it cannot take with a clear exception.
"""
import copy
import gc
import os
import pickle
import signal
import threading
import time

import numpy as np
import pytest

import lstm_fast
import reference
from helpers import (MODES, assert_calls_agree, assert_result, is_lstm, make_cell, make_hx, make_input, make_layer,
                     make_rng, params64, proj_for, ref_mode, split)

DTYPES = [np.float32, np.float64]


def _stream_run(stream, x):
    """Step `stream` through x (T, ...) and stack the outputs."""
    return np.stack([stream.step(x[t]) for t in range(len(x))])


def _states(mode, state):
    return state if is_lstm(mode) else (state,)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("B", [None, 1, 3, 17])
@pytest.mark.parametrize("mode", MODES)
def test_stream_equals_whole_sequence(isa, mode, B, dtype):
    # Two layers, H=37 (several panels on every ISA, so the one-step calls'
    # alternating panel order really alternates), an initial state.
    T, I, H, L = 6, 19, 37, 2
    unbatched = B is None
    rng = make_rng("stream", mode, B, np.dtype(dtype).name)
    layer = make_layer(mode, I, H, num_layers=L, dtype=dtype, seed=3)
    assert layer.isa == isa
    x = make_input(rng, T, B or 1, I, dtype, unbatched=unbatched)
    hx = make_hx(mode, rng, L, B or 1, H, proj_for(mode, H), dtype, unbatched=unbatched)
    y, state = layer(x, hx)
    stream = layer.stream(batch_size=B, hx=hx)
    assert stream.batch_size == B and stream.module is layer
    got = _stream_run(stream, x)
    assert got.dtype == np.dtype(dtype) and got.shape == y.shape
    calls = (1, B or 1), (T, B or 1)
    assert_calls_agree(layer, got, y, *calls)
    for got_state, want in zip(_states(mode, stream.state), _states(mode, state)):
        assert got_state.shape == want.shape and got_state.dtype == want.dtype
        assert_calls_agree(layer, got_state, want, *calls)


@pytest.mark.parametrize("mode", MODES)
def test_stream_matches_reference(isa, mode):
    # Independently of the layer: the float64 reference over the sequence.
    T, B, I, H = 5, 3, 17, 33
    rng = make_rng("stream-reference", mode)
    layer = make_layer(mode, I, H, dtype=np.float32, seed=11)
    x = make_input(rng, T, B, I, np.float32)
    expected = reference.module_forward(ref_mode(mode), params64(layer), x, None, None, False)
    stream = layer.stream(batch_size=B)
    assert_result(mode, (_stream_run(stream, x), stream.state), expected, np.float32)


@pytest.mark.parametrize("B", [None, 4])
@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn_tanh"])
def test_cell_stream_equals_cell_calls(isa, mode, B):
    rng = make_rng("cell-stream", mode, B)
    I, H, T = 6, 33, 5
    cell = make_cell(mode, I, H, dtype=np.float32, seed=4)
    x = make_input(rng, T, B or 1, I, np.float32, unbatched=B is None)
    state, outputs = None, []
    for t in range(T):
        state = cell(x[t], state)
        outputs.append(state[0] if is_lstm(mode) else state)
    stream = cell.stream(batch_size=B)
    np.testing.assert_array_equal(_stream_run(stream, x), np.stack(outputs))
    for got, want in zip(_states(mode, stream.state), _states(mode, state)):
        assert got.shape == want.shape == ((B, H) if B else (H,))
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("B", [None, 3])
@pytest.mark.parametrize("cls, options, variant", [
    (lstm_fast.LSTM, {}, {"peephole": True, "clip": 1.5}),
    (lstm_fast.LSTM, {}, {"coupled_input_forget": True}),
    (lstm_fast.GRU, {}, {"reset_before_product": True}),
    (lstm_fast.RNN, {}, {"clip": 0.5}),
    (lstm_fast.RNN, {"nonlinearity": "relu"}, {"clip": 0.5}),
], ids=["lstm-peephole-clip", "lstm-coupled", "gru-reset-before", "rnn-clip", "rnn-relu-clip"])
def test_stream_variants(isa, cls, options, variant, B, dtype):
    layer = cls(11, 37, num_layers=2, variant=variant, seed=5, dtype=dtype, **options)
    x = make_input(make_rng("stream-variant", cls.__name__, str(variant)), 5, B or 1, 11, dtype)
    if B is None:
        x = x[:, 0]
    y, state = layer(x)
    stream = layer.stream(batch_size=B)
    np.testing.assert_array_equal(_stream_run(stream, x), y)
    mode = cls.__name__.lower()
    for got, want in zip(_states(mode, stream.state), _states(mode, state)):
        assert got.dtype == want.dtype == dtype
        np.testing.assert_array_equal(got, want)


def test_out_is_written_and_returned(isa):
    layer = lstm_fast.LSTM(8, 12, proj_size=5, seed=1)
    x = make_input(make_rng("stream-out"), 4, 2, 8, np.float32)
    y, _ = layer(x)
    stream = layer.stream(batch_size=2)
    out = np.full((2, 5), np.nan, np.float32)
    for t in range(4):
        assert stream.step(x[t], out=out) is out
        np.testing.assert_array_equal(out, y[t])
    # Without out, every step returns a new array.
    stream.reset()
    first, second = stream.step(x[0]), stream.step(x[1])
    assert first is not second
    np.testing.assert_array_equal(first, y[0])


def test_reset_and_state_copies(isa):
    layer = lstm_fast.GRU(4, 6, num_layers=3, seed=2)
    rng = make_rng("stream-reset")
    x = make_input(rng, 3, 2, 4, np.float32)
    h0 = make_hx("gru", rng, 3, 2, 6, dtype=np.float32)
    stream = layer.stream(batch_size=2, hx=h0)
    first = _stream_run(stream, x)
    state = stream.state
    state[...] = 99.0  # a copy: the stream does not see this
    kept = h0.copy()
    h0[...] = 99.0     # the initial state was copied too
    np.testing.assert_array_equal(_stream_run(layer.stream(batch_size=2, hx=kept), x), first)
    stream.reset(kept)
    np.testing.assert_array_equal(_stream_run(stream, x), first)
    stream.reset()
    np.testing.assert_array_equal(_stream_run(stream, x), layer(x)[0])


def test_state_continues_into_the_module(isa):
    # A stream's state is the module's hx: stream a prefix, finish with one call.
    layer = lstm_fast.LSTM(5, 9, num_layers=2, seed=6)
    x = make_input(make_rng("stream-handover"), 7, 3, 5, np.float32)
    stream = layer.stream(batch_size=3)
    _stream_run(stream, x[:3])
    y, (h, c) = layer(x[3:], stream.state)
    y_all, (h_all, c_all) = layer(x)
    for got, want in ((y, y_all[3:]), (h, h_all), (c, c_all)):
        assert_calls_agree(layer, got, want, (1, 3), (7, 3))


def test_parameter_change_applies_from_next_step(isa):
    layer = lstm_fast.LSTM(4, 10, seed=1)
    other = lstm_fast.LSTM(4, 10, seed=2)
    x = make_input(make_rng("stream-params"), 5, 2, 4, np.float32)
    stream = layer.stream(batch_size=2)
    _stream_run(stream, x[:2])
    carried = stream.state
    layer.load_state_dict(other.state_dict())
    y, _ = other(x[2:], carried)
    np.testing.assert_array_equal(_stream_run(stream, x[2:]), y)


def test_input_conversions(isa):
    # Float input of another precision, strided views and array-likes are
    # cast or converted, as one call of the module would.
    layer = lstm_fast.RNN(6, 7, seed=3)
    x64 = make_input(make_rng("stream-convert"), 3, 4, 12, np.float64)
    for name, steps in [
        ("float64", [x64[t, :, :6] .copy() for t in range(3)]),
        ("float16", [x64[t, :, :6].astype(np.float16) for t in range(3)]),
        ("strided", [x64[t, :, ::2].astype(np.float32) for t in range(3)]),
        ("fortran", [np.asfortranarray(x64[t, :, :6]) for t in range(3)]),
        ("list", [x64[t, :, :6].tolist() for t in range(3)]),
    ]:
        converted = [np.ascontiguousarray(np.asarray(x, dtype=np.float64).astype(np.float32))
                     for x in steps]
        want = _stream_run(layer.stream(batch_size=4), np.stack(converted))
        stream = layer.stream(batch_size=4)
        got = np.stack([stream.step(x) for x in steps])
        assert got.dtype == np.float32, name
        np.testing.assert_array_equal(got, want, err_msg=name)
    unbatched = layer.stream()
    np.testing.assert_array_equal(unbatched.step(list(x64[0, 0, :6])),
                                  layer.stream(batch_size=1).step(x64[0, :1, :6])[0])


def test_threads_do_not_change_results(isa):
    # H=64, B=8: enough work per step for the pool to split it.
    layer = lstm_fast.LSTM(32, 64, num_layers=2, seed=9)
    x = make_input(make_rng("stream-threads"), 6, 8, 32, np.float32)
    previous = lstm_fast.get_num_threads()
    try:
        results = []
        for threads in (1, 2):
            lstm_fast.set_num_threads(threads)
            results.append(_stream_run(layer.stream(batch_size=8), x))
    finally:
        lstm_fast.set_num_threads(previous)
    np.testing.assert_array_equal(results[0], results[1])


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads in /proc")
def test_stream_moves_to_the_pool_set_since():
    # A stream remembers the pool of its last step; after set_num_threads it
    # must not keep the old pool (and its worker threads) alive, whether it
    # steps again or not.
    def threads_now():
        # The pool's workers name themselves "lstm_fast" (pool.c): other
        # threads of the process (torch's, an earlier test's) come and go.
        names = []
        for tid in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{tid}/comm") as f:
                    names.append(f.read().strip())
            except OSError:  # the thread ended meanwhile
                pass
        return names.count("lstm_fast")

    def wait_for_threads(count):
        deadline = time.monotonic() + 5
        while threads_now() != count and time.monotonic() < deadline:
            time.sleep(0.01)
        return threads_now()

    x = np.zeros(4, np.float32)
    previous = lstm_fast.get_num_threads()
    try:
        lstm_fast.set_num_threads(1)
        gc.collect()  # an earlier test's stream may still hold a pool's workers
        alone = wait_for_threads(0)
        lstm_fast.set_num_threads(4)  # three workers
        assert wait_for_threads(alone + 3) == alone + 3
        stream = lstm_fast.LSTM(4, 8).stream()
        stream.step(x)
        lstm_fast.set_num_threads(1)  # only the stream could hold the 4-thread pool now
        assert wait_for_threads(alone) == alone
        stream.step(x)
        lstm_fast.set_num_threads(4)
        assert wait_for_threads(alone + 3) == alone + 3
        stream.step(x)
        lstm_fast.set_num_threads(1)
        assert wait_for_threads(alone) == alone
    finally:
        lstm_fast.set_num_threads(previous)


def test_streams_of_one_layer_in_threads(isa):
    layer = lstm_fast.LSTM(16, 48, seed=4)
    inputs = [make_input(make_rng("stream-concurrent", k), 40, 2, 16, np.float32)
              for k in range(4)]
    want = [layer(x)[0] for x in inputs]
    got = [None] * 4

    def run(k):
        got[k] = _stream_run(layer.stream(batch_size=2), inputs[k])

    threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for k in range(4):
        assert_calls_agree(layer, got[k], want[k], (1, 2), (40, 2))


def test_one_stream_from_two_threads_raises():
    # Steps of this size run for ~1 ms without the GIL; while one thread is
    # inside a step, the other's must be refused, not interleaved. Either
    # thread may be the one refused.
    layer = lstm_fast.LSTM(512, 512, seed=1)
    stream = layer.stream(batch_size=64)
    x = np.ones((64, 512), np.float32)
    refused = [0, 0]
    stop = threading.Event()

    def stepper(index):
        while not stop.is_set():
            try:
                stream.step(x)
            except RuntimeError as error:
                assert "in a step already" in str(error)
                refused[index] += 1
                if sum(refused) >= 6:
                    stop.set()

    other = threading.Thread(target=stepper, args=(1,))
    other.start()
    timer = threading.Timer(10.0, stop.set)
    timer.start()
    try:
        stepper(0)
    finally:
        stop.set()
        timer.cancel()
        other.join()
    assert sum(refused) >= 6


def _state_key(h, c):
    return h.tobytes() + c.tobytes()


def test_state_and_reset_during_steps_are_refused_or_whole():
    # Reading the state or restarting while another thread steps must either
    # raise or see a state the sequence really had (h and c of the same
    # step), never a half-written one, and never touch freed memory. Copies
    # and allocations of this size release the GIL inside NumPy.
    layer = lstm_fast.LSTM(8, 256, num_layers=2, seed=3)
    x = np.ones((64, 8), np.float32)
    # Every state a stream from zeros passes through in its first steps
    # (resets below keep the stepping thread far below this many steps).
    reference_stream = layer.stream(batch_size=64)
    known = {_state_key(*reference_stream.state)}
    for _ in range(3000):
        reference_stream.step(x)
        known.add(_state_key(*reference_stream.state))
    stream = layer.stream(batch_size=64)
    stop = threading.Event()
    errors = []

    def stepper():
        try:
            while not stop.is_set():
                try:
                    stream.step(x)
                except RuntimeError:
                    pass
                time.sleep(0)  # as a caller waiting for its next frame
        except BaseException as error:  # reported below
            errors.append(error)

    thread = threading.Thread(target=stepper)
    thread.start()
    seen = refused = 0
    try:
        for round_ in range(400):
            time.sleep(0)  # let the stepping thread run between our calls
            try:
                if round_ % 2:
                    stream.reset()
                    continue
                h, c = stream.state
            except RuntimeError as error:
                assert "in a step already" in str(error)
                refused += 1
                continue
            assert _state_key(h, c) in known, "a state the sequence never had"
            seen += 1
    finally:
        stop.set()
        thread.join()
    assert not errors
    assert seen > 0 and refused > 0


def _child_checks_torn_stream(stream, x, first_step):
    """In a child forked while another thread was in a step of `stream`: 0 if
    step and state refuse until reset() and reset() recovers the stream, 3
    if the stream was not in a step after all, else 1."""
    try:
        stream.step(x)
        return 3
    except RuntimeError as error:
        if "forked while another thread was using this stream" not in str(error):
            return 1
    try:
        stream.state
        return 1
    except RuntimeError as error:
        if "reset() first" not in str(error):
            return 1
    stream.reset()
    return 0 if np.array_equal(stream.step(x), first_step) else 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fork_during_a_step_leaves_the_childs_stream_needing_a_reset():
    # The stepping thread does not exist in a forked child. Its stream must
    # not stay "in a step" for ever, nor step on from a state that thread
    # was still writing: it refuses until reset(), which recovers it.
    layer = lstm_fast.LSTM(512, 512, seed=1)
    x = np.ones((64, 512), np.float32)
    first_step = layer.stream(batch_size=64).step(x)
    stream = layer.stream(batch_size=64)
    stop = threading.Event()

    def stepper():
        while not stop.is_set():
            try:
                stream.step(x)
            except RuntimeError:  # our polls below claim it for a moment
                pass

    thread = threading.Thread(target=stepper)
    thread.start()
    codes = []
    deadline = time.monotonic() + 60
    try:
        while len(codes) < 20 and 0 not in codes:
            assert thread.is_alive() and time.monotonic() < deadline
            try:
                stream.state  # succeeds unless the other thread is in a step
                continue
            except RuntimeError:
                # Only a GIL switch in these few bytecodes could let the
                # step end first: the child then answers 3, and we retry.
                pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    code = _child_checks_torn_stream(stream, x, first_step)
                finally:
                    os._exit(code)
            _, status = os.waitpid(pid, 0)
            codes.append(os.waitstatus_to_exitcode(status))
    finally:
        stop.set()
        thread.join()
    assert 0 in codes and 1 not in codes, codes
    stream.step(x)  # the parent's stream is untouched


def _fork_while_holding(hold, in_child):
    """Fork while another thread is inside hold(held, release) (from its
    held.set() until release is set); return the exit code of the child,
    which runs in_child() (0: success). The child is killed after 30 s, so
    a lock held for ever there fails the test instead of hanging it."""
    held, release = threading.Event(), threading.Event()
    thread = threading.Thread(target=hold, args=(held, release))
    thread.start()
    held.wait()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            signal.alarm(30)
            code = in_child()
        finally:
            os._exit(code)
    try:
        _, status = os.waitpid(pid, 0)
    finally:
        release.set()
        thread.join()
    return os.waitstatus_to_exitcode(status)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fork_while_another_thread_holds_a_modules_lock():
    # That thread (building an engine, say) does not exist in the child, so
    # the lock would never be released there: the child gets new locks.
    layer = lstm_fast.LSTM(4, 8, seed=2)  # no engine yet: the first call takes the lock
    x = np.ones(4, np.float32)
    expected = lstm_fast.LSTM(4, 8, seed=2).stream().step(x)

    def hold(held, release):
        with layer._lock:
            held.set()
            release.wait()

    def in_child():
        layer.stream().step(x)
        layer(x[None])
        return 0

    assert _fork_while_holding(hold, in_child) == 0
    np.testing.assert_array_equal(layer.stream().step(x), expected)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fork_during_a_parameter_update_leaves_no_stale_engine():
    # A thread of the parent between storing new parameters and dropping the
    # engine built on the old ones (under the module's lock) never finishes
    # in the child: there the module must run what its parameters say.
    layer = lstm_fast.LSTM(4, 8, seed=2)
    x = np.ones((3, 1, 4), np.float32)
    layer(x)  # an engine on the seeded weights
    zeros = {name: np.zeros_like(value) for name, value in layer.state_dict().items()}

    def update_paused_halfway(held, release):
        with layer._lock:
            layer._parameters = {**layer._parameters, **zeros}  # as _update_parameters
            held.set()
            release.wait()
            layer._engine = None

    assert _fork_while_holding(update_paused_halfway,
                               lambda: 0 if not layer(x)[0].any() else 2) == 0
    assert not layer(x)[0].any()


# ---------------------------------------------------------------- bad input

def test_bidirectional_is_refused():
    with pytest.raises(ValueError, match="one-direction"):
        lstm_fast.GRU(3, 4, bidirectional=True).stream()


@pytest.mark.parametrize("batch_size,error", [
    (0, ValueError), (-2, ValueError), (1.5, TypeError), (True, TypeError), ("3", TypeError),
])
def test_bad_batch_size(batch_size, error):
    with pytest.raises(error, match="batch_size"):
        lstm_fast.LSTM(3, 4).stream(batch_size=batch_size)


def test_huge_batch_size_is_refused_by_name():
    layer = lstm_fast.LSTM(3, 4, num_layers=2)
    with pytest.raises(ValueError, match=r"batch_size=4611686018427387904 is too large"):
        layer.stream(batch_size=2**62)
    with pytest.raises(ValueError, match=r"batch_size=\d+ does not fit in int64"):
        layer.stream(batch_size=2**70)


def test_stream_needs_a_module():
    with pytest.raises(TypeError, match="module must be an lstm_fast layer or cell"):
        lstm_fast.Stream(object())


def test_failed_reset_leaves_the_stream_as_it_was():
    layer = lstm_fast.LSTM(3, 4, num_layers=2, seed=1)
    x = make_input(make_rng("stream-failed-reset"), 4, 2, 3, np.float32)
    stream = layer.stream(batch_size=2)
    _stream_run(stream, x[:2])
    before = stream.state
    with pytest.raises(ValueError, match="h_0 must have shape"):
        stream.reset((np.zeros((2, 3, 4)), np.zeros((2, 2, 4))))
    for got, want in zip(stream.state, before):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(_stream_run(stream, x[2:]), layer(x)[0][2:])


def test_bad_hx():
    layer = lstm_fast.LSTM(3, 4, num_layers=2)
    with pytest.raises(ValueError, match=r"h_0 must have shape \(2, 5, 4\)"):
        layer.stream(batch_size=5, hx=(np.zeros((2, 4)), np.zeros((2, 5, 4))))
    with pytest.raises(ValueError, match=r"c_0 must have shape \(2, 4\)"):
        layer.stream(hx=(np.zeros((2, 4)), np.zeros((2, 5, 4))))
    with pytest.raises(TypeError, match="only LSTM takes a pair"):
        lstm_fast.GRU(3, 4).stream(hx=(np.zeros((1, 4)), np.zeros((1, 4))))
    with pytest.raises(TypeError, match="floating-point"):
        lstm_fast.RNN(3, 4).stream(hx=np.zeros((1, 4), np.int64))


def test_bad_input():
    stream = lstm_fast.LSTM(3, 4).stream(batch_size=2)
    with pytest.raises(ValueError, match=r"input must have shape \(2, 3\) for this batched"):
        stream.step(np.zeros((3, 3), np.float32))
    with pytest.raises(ValueError, match=r"input must have shape \(2, 3\)"):
        stream.step(np.zeros((1, 2, 3), np.float32))
    with pytest.raises(TypeError, match="floating-point"):
        stream.step(np.zeros((2, 3), np.int32))
    with pytest.raises(ValueError, match=r"input must have shape \(3,\) for this unbatched"):
        lstm_fast.LSTM(3, 4).stream().step(np.zeros((1, 3), np.float32))
    # A refused step leaves the state alone.
    np.testing.assert_array_equal(stream.state[0], np.zeros((1, 2, 4), np.float32))


def test_bad_out():
    stream = lstm_fast.LSTM(3, 4, dtype=np.float64).stream(batch_size=2)
    x = np.zeros((2, 3))
    with pytest.raises(ValueError, match=r"out must have shape \(2, 4\)"):
        stream.step(x, out=np.zeros((2, 5)))
    with pytest.raises(TypeError, match="out must have dtype float64"):
        stream.step(x, out=np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match="out must be C-contiguous"):
        stream.step(x, out=np.zeros((4, 2)).T)
    with pytest.raises(TypeError, match="out must be a numpy.ndarray"):
        stream.step(x, out=[[0.0] * 4] * 2)
    # A subclass would be written past its bookkeeping (a stale mask here).
    with pytest.raises(TypeError, match=r"out must be a numpy.ndarray \(not a subclass\)"):
        stream.step(x, out=np.ma.masked_array(np.zeros((2, 4)), mask=True))
    readonly = np.zeros((2, 4))
    readonly.setflags(write=False)
    with pytest.raises(ValueError, match="out must be writeable"):
        stream.step(x, out=readonly)
    # out overlapping input: both views of one buffer.
    buffer = np.zeros(16)
    with pytest.raises(ValueError, match="out must not overlap input"):
        stream.step(buffer[:6].reshape(2, 3), out=buffer[4:12].reshape(2, 4))
    np.testing.assert_array_equal(stream.state[0], np.zeros((1, 2, 4)))


def test_stream_cannot_be_pickled_or_copied():
    # (Cython's automatic pickling would have copied the workspace pointer.)
    stream = lstm_fast.LSTM(3, 4).stream()
    for operation in (pickle.dumps, copy.copy, copy.deepcopy):
        with pytest.raises(TypeError, match="cannot be copied or pickled"):
            operation(stream)


def test_unstarted_core_refuses():
    from lstm_fast import _core
    with pytest.raises(RuntimeError, match="never started"):
        _core.StreamCore().step(np.zeros(3, np.float32))
