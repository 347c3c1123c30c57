"""Bad arguments raise clean Python exceptions whose message names the argument."""
import collections

import numpy as np
import pytest

import lstm_fast
from helpers import make_cell, make_layer, make_rng

HX = r"hx|h_0|h0|c_0|c0"          # how a message may name the initial state


def _x(T=4, B=2, I=3, dtype=np.float32):
    return make_rng("bad-x", T, B, I).standard_normal((T, B, I)).astype(dtype)


# ---------------------------------------------------------------------------
# forward arguments
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn_tanh"])
@pytest.mark.parametrize("shape", [(3,), (4, 2, 3, 1), (), (4, 2, 5), (4, 5), (4, 2, 0)])
def test_input_shape(isa, mode, shape):
    layer = make_layer(mode, 3, 4)
    with pytest.raises(ValueError, match="input"):
        layer(np.zeros(shape, np.float32))


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.bool_, np.complex64, np.complex128, object])
def test_input_dtype(isa, dtype):
    layer = make_layer("lstm", 3, 4)
    with pytest.raises(TypeError, match="input"):
        layer(np.ones((4, 2, 3), dtype=dtype))


def test_input_strings(isa):
    layer = make_layer("gru", 3, 4)
    with pytest.raises(TypeError, match="input"):
        layer([[["a", "b", "c"]]])


def test_lstm_hx_structure(isa):
    layer = make_layer("lstm", 3, 4, num_layers=2)
    h = np.zeros((2, 2, 4), np.float32)
    c = np.zeros((2, 2, 4), np.float32)
    x = _x()
    for bad in [h, (h,), (h, c, c), [h], (None, c), (h, None)]:
        with pytest.raises((TypeError, ValueError), match=HX):
            layer(x, bad)
    cell = lstm_fast.LSTMCell(3, 4)
    for bad in [(None, c[0]), (h[0], None)]:  # as torch: zeros are hx=None, not half a tuple
        with pytest.raises(TypeError, match=HX):
            cell(x[0], bad)
    # unbatched input with batched state and vice versa
    with pytest.raises(ValueError, match=HX):
        layer(x[:, 0], (h, c))
    with pytest.raises(ValueError, match=HX):
        layer(x, (h[:, 0], c[:, 0]))


@pytest.mark.parametrize("h_shape,c_shape", [
    ((1, 2, 4), (2, 2, 4)),       # wrong number of layers in h
    ((2, 3, 4), (2, 2, 4)),       # wrong batch in h
    ((2, 2, 5), (2, 2, 4)),       # wrong width in h
    ((2, 2, 4), (2, 2, 3)),       # wrong width in c
    ((2, 2, 4), (4, 2, 4)),       # wrong layers in c
    ((2, 2, 4), (2, 1, 4)),       # wrong batch in c
    ((2, 2, 4, 1), (2, 2, 4)),    # wrong rank
])
def test_lstm_hx_shapes(isa, h_shape, c_shape):
    layer = make_layer("lstm", 3, 4, num_layers=2)
    with pytest.raises(ValueError, match=HX):
        layer(_x(), (np.zeros(h_shape, np.float32), np.zeros(c_shape, np.float32)))


def test_lstmp_hx_shapes(isa):
    layer = make_layer("lstm", 3, 6, proj_size=2)
    x = _x()
    ok = (np.zeros((1, 2, 2), np.float32), np.zeros((1, 2, 6), np.float32))
    layer(x, ok)
    with pytest.raises(ValueError, match=HX):             # h must have width P, not H
        layer(x, (np.zeros((1, 2, 6), np.float32), ok[1]))
    with pytest.raises(ValueError, match=HX):             # c must have width H, not P
        layer(x, (ok[0], np.zeros((1, 2, 2), np.float32)))


@pytest.mark.parametrize("mode", ["gru", "rnn_relu"])
def test_gru_rnn_hx(isa, mode):
    layer = make_layer(mode, 3, 4, bidirectional=True)
    x = _x()
    h = np.zeros((2, 2, 4), np.float32)
    layer(x, h)
    with pytest.raises((TypeError, ValueError), match=HX):
        layer(x, (h, h))
    # A list of two states (LSTM-style [h, c]) would stack into one valid-
    # looking h of shape (2, 2, 4) here: refused like the tuple.
    with pytest.raises(TypeError, match="only LSTM takes a pair"):
        layer(x, [h[0], h[1]])
    with pytest.raises(TypeError, match="only LSTM takes a pair"):
        layer(x, collections.deque([h[0], h[1]]))
    cell = make_cell(mode, 3, 4)
    with pytest.raises(TypeError, match="only LSTM takes a pair"):
        cell(np.zeros((2, 3), np.float32), [np.zeros(4, np.float32), np.zeros(4, np.float32)])
    for shape in [(1, 2, 4), (2, 3, 4), (2, 2, 3), (2, 4), (2, 2, 4, 1)]:
        with pytest.raises(ValueError, match=HX):
            layer(x, np.zeros(shape, np.float32))
    with pytest.raises(TypeError, match=HX):
        layer(x, h.astype(np.int64))
    with pytest.raises(TypeError, match=HX):
        layer(x, h.astype(np.complex64))


@pytest.mark.parametrize("lengths,exc", [
    ([4], ValueError),                 # too few
    ([4, 4, 4], ValueError),           # too many
    ([5, 1], ValueError),              # > T
    ([-1, 2], ValueError),             # < 0
    ([[4, 4]], ValueError),            # 2-D
    (np.array([[4], [4]]), ValueError),
    ([1.5, 2], TypeError),             # not integers
    (np.array([1.5, 2.0]), TypeError),
    (["a", "b"], TypeError),
    (np.array([1 + 0j, 2]), TypeError),
])
def test_lengths(isa, lengths, exc):
    layer = make_layer("lstm", 3, 4)
    with pytest.raises(exc, match="lengths"):
        layer(_x(T=4, B=2), lengths=lengths)


def test_lengths_huge_values(isa):
    layer = make_layer("gru", 3, 4)
    for bad in ([2**40, 1], [2**63 - 1, 1], [-(2**63), 1]):
        with pytest.raises((ValueError, OverflowError), match="lengths"):
            layer(_x(T=4, B=2), lengths=bad)
    # Past uint64 NumPy keeps Python ints as objects: still a range error.
    for bad in ([2**70, 1], [-(2**70), 1], [2**64, 2**70]):
        with pytest.raises(ValueError, match=r"lengths must be in \[0, 4\]"):
            layer(_x(T=4, B=2), lengths=bad)
    with pytest.raises(TypeError, match="lengths must be integers, got dtype object"):
        layer(_x(T=4, B=2), lengths=[2**70, "a"])


def test_lengths_with_unbatched_input(isa):
    layer = make_layer("lstm", 3, 4)
    with pytest.raises(ValueError, match="lengths"):
        layer(_x()[:, 0], lengths=[4])
    with pytest.raises(ValueError, match="lengths"):
        layer(_x()[:, 0], lengths=4)


def test_cell_bad_input(isa):
    cell = make_cell("lstm", 3, 4)
    with pytest.raises(ValueError, match="input"):
        cell(np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match="input"):
        cell(np.zeros((1, 2, 3), np.float32))
    with pytest.raises(TypeError, match="input"):
        cell(np.zeros((2, 3), np.int32))
    with pytest.raises((TypeError, ValueError), match=HX):
        cell(np.zeros((2, 3), np.float32), np.zeros((2, 4), np.float32))     # LSTMCell needs (h, c)
    with pytest.raises(ValueError, match=HX):
        cell(np.zeros((2, 3), np.float32), (np.zeros((3, 4), np.float32), np.zeros((2, 4), np.float32)))
    gru = make_cell("gru", 3, 4)
    with pytest.raises(ValueError, match=HX):
        gru(np.zeros((2, 3), np.float32), np.zeros((2, 5), np.float32))


# ---------------------------------------------------------------------------
# constructors
# ---------------------------------------------------------------------------
CLASSES = [lstm_fast.LSTM, lstm_fast.GRU, lstm_fast.RNN]


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_constructor_sizes(cls):
    with pytest.raises(ValueError, match="hidden_size"):
        cls(3, 0)
    with pytest.raises(ValueError, match="hidden_size"):
        cls(3, -2)
    with pytest.raises((TypeError, ValueError), match="hidden_size"):
        cls(3, 4.0)
    with pytest.raises((TypeError, ValueError), match="hidden_size"):
        cls(3, True)
    with pytest.raises((TypeError, ValueError), match="hidden_size"):
        cls(3, "4")
    with pytest.raises(ValueError, match="input_size"):
        cls(0, 4)
    with pytest.raises((TypeError, ValueError), match="input_size"):
        cls(2.5, 4)
    with pytest.raises(ValueError, match="num_layers"):
        cls(3, 4, num_layers=0)
    with pytest.raises(ValueError, match="num_layers"):
        cls(3, 4, num_layers=-1)
    with pytest.raises((TypeError, ValueError), match="num_layers"):
        cls(3, 4, num_layers=1.0)
    for p in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="dropout"):
            cls(3, 4, dropout=p)
    for dt in (np.float16, np.int32, int, np.complex64, np.longdouble):
        with pytest.raises(TypeError, match="dtype"):
            cls(3, 4, dtype=dt)
    # numpy-style dtype spellings of the two supported types are fine
    assert cls(3, 4, dtype="float64").state_dict()["weight_ih_l0"].dtype == np.float64
    assert cls(3, 4, dtype=np.dtype(np.float32)).state_dict()["weight_ih_l0"].dtype == np.float32


def test_numpy_integer_sizes_accepted():
    layer = lstm_fast.LSTM(np.int64(3), np.int32(4), num_layers=np.int64(2))
    assert layer.hidden_size == 4 and layer.num_layers == 2


def test_constructor_proj_size():
    for p in (4, 5, -1):
        with pytest.raises(ValueError, match="proj_size"):
            lstm_fast.LSTM(3, 4, proj_size=p)
    with pytest.raises((TypeError, ValueError), match="proj_size"):
        lstm_fast.LSTM(3, 4, proj_size=1.5)
    with pytest.raises((TypeError, ValueError), match="proj_size"):
        lstm_fast.GRU(3, 4, proj_size=2)
    with pytest.raises((TypeError, ValueError), match="proj_size"):
        lstm_fast.RNN(3, 4, proj_size=2)


def test_constructor_nonlinearity():
    with pytest.raises(ValueError, match="nonlinearity"):
        lstm_fast.RNN(3, 4, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="nonlinearity"):
        lstm_fast.RNNCell(3, 4, nonlinearity="TANH ")
    with pytest.raises((TypeError, ValueError), match="nonlinearity"):
        lstm_fast.LSTM(3, 4, nonlinearity="tanh")


@pytest.mark.parametrize("cls", [lstm_fast.LSTMCell, lstm_fast.GRUCell, lstm_fast.RNNCell],
                         ids=lambda c: c.__name__)
def test_cell_constructor(cls):
    with pytest.raises(ValueError, match="hidden_size"):
        cls(3, 0)
    with pytest.raises(ValueError, match="input_size"):
        cls(-1, 3)
    with pytest.raises(TypeError, match="dtype"):
        cls(3, 4, dtype=np.float16)


@pytest.mark.parametrize("kwargs", [
    dict(input_size=3, hidden_size=2**62),
    dict(input_size=2**62, hidden_size=4),
    dict(input_size=3, hidden_size=2**45),             # ~1.5 PB: larger than any address space
    dict(input_size=2**40, hidden_size=2**40),
    dict(input_size=3, hidden_size=2**63),
])
@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_absurd_sizes_fail_cleanly(cls, kwargs):
    # Sizes are chosen so that even the first parameter array cannot exist (its byte count
    # overflows int64 or exceeds any 64-bit address space): a build that only allocates
    # must still fail at once, even with memory overcommit, never touch the memory or crash.
    # ValueError naming the sizes, before anything is allocated (a MemoryError
    # would mean the library tried).
    with pytest.raises(ValueError, match="more than this platform can address"):
        cls(**kwargs)


def test_absurd_cell_size_fails_cleanly():
    with pytest.raises(ValueError, match="more than this platform can address"):
        lstm_fast.LSTMCell(3, 2**62)


# ---------------------------------------------------------------------------
# parameters
# ---------------------------------------------------------------------------
def test_parameter_assignment_shape():
    layer = make_layer("lstm", 3, 4, num_layers=2, bidirectional=True)
    with pytest.raises(ValueError, match="weight_ih_l1_reverse"):
        layer.weight_ih_l1_reverse = np.zeros((16, 3))         # layer 1 input is D*H = 8
    with pytest.raises(ValueError, match="bias_hh_l0"):
        layer.bias_hh_l0 = np.zeros((15,))
    with pytest.raises(ValueError, match="weight_hh_l0"):
        layer.weight_hh_l0 = np.zeros((4, 16))                 # transposed
    with pytest.raises(TypeError, match="weight_hh_l0"):
        layer.weight_hh_l0 = np.zeros((16, 4), dtype=np.complex128)
    with pytest.raises(TypeError, match="weight_hh_l0"):
        layer.weight_hh_l0 = np.zeros((16, 4), dtype=object)
    # still the original parameters afterwards
    assert layer.weight_ih_l1_reverse.shape == (16, 8)


def test_parameter_assignment_no_bias():
    layer = make_layer("gru", 3, 4, bias=False)
    assert "bias_ih_l0" not in layer.state_dict()
    with pytest.raises((AttributeError, ValueError, KeyError), match="bias_ih_l0"):
        layer.bias_ih_l0 = np.zeros(12)


def test_peepholes_of_a_module_without_them_are_refused():
    plain = lstm_fast.LSTM(3, 4)
    with pytest.raises(AttributeError, match="peephole_l0"):
        plain.peephole_l0 = np.zeros(12)
    peephole = lstm_fast.LSTM(3, 4, variant={"peephole": True})
    peephole.peephole_l0 = np.ones(12)     # the real one is still assignable
    with pytest.raises(AttributeError, match="peephole_l1"):
        peephole.peephole_l1 = np.zeros(12)


@pytest.mark.parametrize("mode", ["lstmp", "gru"])
def test_load_state_dict_errors(mode):
    layer = make_layer(mode, 3, 6, num_layers=2)
    sd = layer.state_dict()
    missing = dict(sd)
    del missing["weight_hh_l1"]
    with pytest.raises((KeyError, ValueError, RuntimeError), match="weight_hh_l1"):
        layer.load_state_dict(missing)
    extra = dict(sd, weight_ih_l7=np.zeros((3, 3)))
    with pytest.raises((KeyError, ValueError, RuntimeError), match="weight_ih_l7"):
        layer.load_state_dict(extra)
    wrong = dict(sd, bias_ih_l1=np.zeros(5))
    with pytest.raises(ValueError, match="bias_ih_l1"):
        layer.load_state_dict(wrong)
    wrong = dict(sd, weight_ih_l0=sd["weight_ih_l0"].T)
    with pytest.raises(ValueError, match="weight_ih_l0"):
        layer.load_state_dict(wrong)
    wrong = dict(sd, weight_ih_l0=sd["weight_ih_l0"].astype(np.int64))
    with pytest.raises(TypeError, match="weight_ih_l0"):
        layer.load_state_dict(wrong)


# ---------------------------------------------------------------------------
# LSTM_FAST_ISA
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["avx3", "AVX-2", "sse", "portable,avx2", "1"])
def test_unknown_isa_env(monkeypatch, value):
    monkeypatch.setenv("LSTM_FAST_ISA", value)
    with pytest.raises(ValueError, match="LSTM_FAST_ISA") as info:
        lstm_fast.LSTM(3, 4)
    assert "portable" in str(info.value)      # the message lists the allowed values


@pytest.mark.parametrize("value", ["", "  "])
def test_empty_isa_env_means_auto(monkeypatch, value):
    # As an empty LSTM_FAST_NUM_THREADS means the default: `export VAR=` in a
    # script is how many people unset a variable.
    from lstm_fast import _core
    monkeypatch.setenv("LSTM_FAST_ISA", value)
    assert lstm_fast.LSTM(3, 4).isa == _core.isa_best()
    assert lstm_fast.cpu_info()["isa_forced"] is None


def test_unavailable_isa_env(monkeypatch):
    from lstm_fast import _core
    unavailable = [n for n in _core.isa_names() if not _core.isa_available(n)]
    if not unavailable:
        pytest.skip("every ISA the core knows is available on this machine")
    monkeypatch.setenv("LSTM_FAST_ISA", unavailable[0])
    with pytest.raises(ValueError, match=unavailable[0]):
        lstm_fast.GRU(3, 4)
