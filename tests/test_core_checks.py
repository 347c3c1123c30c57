"""The Cython wrapper's own checks (lstm_fast._core): what reaches C is what
NumPy's C API says an array is, and bad arguments raise errors naming them."""
import numpy as np
import pytest

import lstm_fast
from lstm_fast import _config, _core

I, H = 3, 4


def _weights(w_ih=None, w_hh=None):
    rng = np.random.default_rng(0)
    w_ih = rng.uniform(-0.5, 0.5, (4 * H, I)).astype(np.float32) if w_ih is None else w_ih
    w_hh = rng.uniform(-0.5, 0.5, (4 * H, H)).astype(np.float32) if w_hh is None else w_hh
    return w_ih, w_hh


def _engine(weights, **variant):
    return _core.Engine("lstm", I, H, 0, 1, 1, False, np.float32, "auto", weights, **variant)


class _CopyingReshape(np.ndarray):
    """An ndarray whose reshape returns a copy (a pointer taken from it dies with it)."""

    def reshape(self, *shape, **kwargs):
        return np.array(self.view(np.ndarray)).reshape(*shape, **kwargs)


class _LyingShape(np.ndarray):
    """An ndarray claiming a shape, and flags, its buffer does not have."""

    @property
    def shape(self):
        return (4 * H, I)


def test_weights_of_an_ndarray_subclass_are_read_from_their_own_buffer():
    w_ih, w_hh = _weights()
    x = np.random.default_rng(1).standard_normal((5, 2, I)).astype(np.float32)
    want = _engine([(w_ih, w_hh, None, None, None)]).forward(x)[0]
    got = _engine([(w_ih.view(_CopyingReshape), w_hh.view(_CopyingReshape), None, None,
                    None)]).forward(x)[0]
    np.testing.assert_array_equal(got, want)


def test_a_subclass_lying_about_its_shape_is_refused():
    liar = np.zeros(1, np.float32).view(_LyingShape)
    assert liar.shape == (4 * H, I)  # what a Python-level check would believe
    with pytest.raises(ValueError, match=r"weights\[0\] w_ih must be .*shape \(16, 3\)"):
        _engine([(liar, _weights()[1], None, None, None)])


@pytest.mark.parametrize("group, match", [
    ((1, 2, 3, 4), r"weights\[0\] must be a tuple of 5 or 6 items .* got tuple of 4 items"),
    (7, r"weights\[0\] must be a tuple of 5 or 6 items .* got int"),
])
def test_weight_group_structure(group, match):
    with pytest.raises(ValueError, match=match):
        _engine([group])


def test_weights_must_be_a_sequence():
    with pytest.raises(TypeError, match="weights must be a list or tuple of 1 weight tuples"):
        _engine(5)


@pytest.mark.parametrize("clip", ["x", None, [1.0]])
def test_clip_must_be_a_number(clip):
    with pytest.raises(TypeError, match="clip must be a number"):
        _engine([_weights() + (None, None, None)], clip=clip)


@pytest.mark.parametrize("activations, match", [
    (5, "activations must be None or a list or tuple"),
    (["sigmoid"], r"activations\[0\] must be a list or tuple of 3"),
])
def test_activations_structure(activations, match):
    with pytest.raises(TypeError, match=match):
        _engine([_weights() + (None, None, None)], activations=activations)


def test_containers_are_read_as_they_were_checked():
    # float() of an alpha and len() of a tuple subclass run the caller's code
    # after the lengths were checked (and packing releases the GIL, so may
    # another thread): what is read must be what was checked. Reading the
    # lists again after they were emptied went past their ends (a crash).
    x = np.random.default_rng(2).standard_normal((3, 2, I)).astype(np.float32)
    group = _weights() + (None, None, None)

    entry = []

    class EmptiesEntry:
        def __float__(self):
            entry.clear()
            return 0.0

    entry.extend([("sigmoid", EmptiesEntry(), 0.0), ("tanh", 0.0, 0.0), ("tanh", 0.0, 0.0)])
    plain = [("sigmoid", 0.0, 0.0), ("tanh", 0.0, 0.0), ("tanh", 0.0, 0.0)]
    got = _engine([group], activations=[entry]).forward(x)
    want = _engine([group], activations=[plain]).forward(x)
    np.testing.assert_array_equal(got[0], want[0])

    weights = []

    class EmptiesWeights(tuple):
        def __len__(self):
            weights.clear()
            return super().__len__()

    weights.extend([EmptiesWeights(group), EmptiesWeights(group)])
    two_directions = [group, group]
    got = _core.Engine("lstm", I, H, 0, 1, 2, False, np.float32, "auto", weights).forward(x)
    want = _core.Engine("lstm", I, H, 0, 1, 2, False, np.float32, "auto",
                        two_directions).forward(x)
    np.testing.assert_array_equal(got[0], want[0])


def test_isa_name_with_a_nul_is_refused():
    with pytest.raises(ValueError, match="NUL"):
        _core.isa_available("portable\0junk")
    with pytest.raises(ValueError, match="NUL"):
        _core.Engine("lstm", I, H, 0, 1, 1, False, np.float32, "portable\0junk",
                     [_weights() + (None, None, None)])


def test_forward_names_lengths_out_of_range():
    engine = _engine([_weights() + (None, None, None)])
    x = np.zeros((5, 2, I), np.float32)
    with pytest.raises(ValueError, match=r"lengths must be in \[0, 5\] \(T\), got values from 1 to 7"):
        engine.forward(x, lengths=np.array([1, 7]))
    with pytest.raises(ValueError, match=r"lengths must be in \[0, 5\]"):
        engine.forward(x, lengths=np.array([-1, 2]))


def test_thread_counts_beyond_int_range():
    engine = _engine([_weights() + (None, None, None)])
    x = np.random.default_rng(2).standard_normal((4, 3, I)).astype(np.float32)
    pool = _core.ThreadPool(2)
    # More threads than anything can have asks for all of the pool's: same bits.
    for got, want in zip(engine.forward(x, None, None, None, pool, 2**40), engine.forward(x)):
        if want is not None:
            np.testing.assert_array_equal(got, want)
    with pytest.raises(TypeError, match="threads must be an int"):
        engine.forward(x, threads=1.5)
    with pytest.raises(ValueError, match=r"n_threads must be in \[1, 1024\], got 1099511627776"):
        _core.ThreadPool(2**40)
    with pytest.raises(TypeError, match="n_threads must be an int"):
        _core.ThreadPool("2")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vector_functions_take_unaligned_input(isa, dtype):
    itemsize = np.dtype(dtype).itemsize
    raw = bytearray(itemsize * 1003 + 1)
    x = np.frombuffer(raw, dtype, offset=1, count=1003)
    assert not x.flags.aligned
    x_aligned = np.linspace(-5, 5, 1003).astype(dtype)
    x[...] = x_aligned
    for function in (_core.vector_tanh, _core.vector_sigmoid):
        np.testing.assert_array_equal(function(x, isa), function(x_aligned, isa))


def test_default_threads_capped_at_the_pool_limit(monkeypatch):
    monkeypatch.setattr(_config.os, "sched_getaffinity", lambda pid: set(range(1500)), raising=False)
    assert _config.default_threads() == _core.MAX_THREADS


def test_report_survives_refused_threads(monkeypatch):
    def refuse():
        raise OSError("ThreadPool(8): the operating system refused to create a thread")

    monkeypatch.setattr(_config, "get_num_threads", refuse)
    info = lstm_fast.cpu_info()
    assert info["num_threads"] is None
    assert "refused" in info["threads_error"]
