"""Parameters: names, order, read-only views, assignment, load_state_dict, init, seeds,
and copies (pickle, copy, deepcopy)."""
import copy
import pickle

import numpy as np
import pytest

import lstm_fast
import reference
from helpers import (MODES, make_hx, make_input, make_layer, make_rng, params64, proj_for,
                     ref_mode, split, tol)

STRUCTURES = [(1, False, True), (2, True, False), (3, True, True)]   # (layers, bidirectional, bias)


@pytest.mark.parametrize("layers,bidir,bias", STRUCTURES)
@pytest.mark.parametrize("mode", MODES)
def test_keys_order_shapes_dtype(mode, layers, bidir, bias):
    I, H = 5, 7
    P = proj_for(mode, H)
    for dtype in (np.float32, np.float64):
        layer = make_layer(mode, I, H, num_layers=layers, bidirectional=bidir, bias=bias, dtype=dtype)
        sd = layer.state_dict()
        assert list(sd) == reference.param_names(ref_mode(mode), layers, bidir, bias, P)
        shapes = reference.param_shapes(ref_mode(mode), I, H, layers, bidir, bias, P)
        for k, v in sd.items():
            assert isinstance(v, np.ndarray) and v.shape == shapes[k] and v.dtype == np.dtype(dtype), k
            np.testing.assert_array_equal(getattr(layer, k), v)


@pytest.mark.parametrize("mode", MODES)
def test_keys_equal_torch(mode):
    pytest.importorskip("torch")
    from helpers import torch_module
    for layers, bidir, bias in STRUCTURES:
        ours = make_layer(mode, 4, 6, num_layers=layers, bidirectional=bidir, bias=bias)
        theirs = torch_module(mode, 4, 6, num_layers=layers, bidirectional=bidir, bias=bias)
        assert list(ours.state_dict()) == list(theirs.state_dict())


def test_parameters_read_only():
    layer = make_layer("lstmp", 3, 6, num_layers=2, bidirectional=True)
    for name in layer.state_dict():
        arr = getattr(layer, name)
        assert isinstance(arr, np.ndarray)
        assert not arr.flags.writeable, name
        with pytest.raises(ValueError):
            arr[...] = 0
        with pytest.raises(ValueError):
            arr += 1
        with pytest.raises(ValueError):      # nor can it be made writable again
            arr.setflags(write=True)


def test_state_dict_returns_copies():
    layer = make_layer("gru", 3, 4, dtype=np.float64)
    sd = layer.state_dict()
    keep = {k: v.copy() for k, v in sd.items()}
    for v in sd.values():
        if v.flags.writeable:
            v[...] = 123.0
        assert not np.shares_memory(v, getattr(layer, "weight_ih_l0"))
    for k, v in layer.state_dict().items():
        np.testing.assert_array_equal(v, keep[k])


@pytest.mark.parametrize("mode", MODES)
def test_assignment_takes_effect(isa, mode):
    rng = make_rng("assign", mode)
    I, H, L = 4, 6, 2
    P = proj_for(mode, H)
    layer = make_layer(mode, I, H, num_layers=L, bidirectional=True, dtype=np.float64, seed=1)
    x = make_input(rng, 5, 3, I)
    hx = make_hx(mode, rng, 2 * L, 3, H, P)
    y_before = split(mode, layer(x, hx))[0]
    names = ["weight_hh_l1_reverse", "weight_ih_l0", "bias_hh_l1"]
    if P:
        names.append("weight_hr_l0_reverse")
    for name in names:
        shape = getattr(layer, name).shape
        new = rng.uniform(-0.5, 0.5, shape)
        setattr(layer, name, new.tolist() if name == "weight_ih_l0" else new)   # any array-like
        np.testing.assert_array_equal(getattr(layer, name), new)
        new[...] = 7.0                       # the layer holds a copy
        assert not np.any(getattr(layer, name) == 7.0), name
        assert not getattr(layer, name).flags.writeable
        with pytest.raises(ValueError):
            getattr(layer, name).setflags(write=True)
    got = layer(x, hx)
    expected = reference.module_forward(ref_mode(mode), params64(layer), x, hx)
    for a, b in zip(split(mode, got), split(mode, expected)):
        if b is not None:
            np.testing.assert_allclose(a, b, **tol(np.float64))
    assert not np.allclose(split(mode, got)[0], y_before)


def test_assignment_casts_dtype(isa):
    layer = make_layer("lstm", 3, 4, dtype=np.float32)
    w64 = make_rng("cast-assign").uniform(-1, 1, (16, 3))
    layer.weight_ih_l0 = w64
    assert layer.weight_ih_l0.dtype == np.float32
    np.testing.assert_array_equal(layer.weight_ih_l0, w64.astype(np.float32))


@pytest.mark.parametrize("mode", MODES)
def test_load_state_dict_round_trip(isa, mode):
    rng = make_rng("load", mode)
    I, H, L = 5, 6, 2
    P = proj_for(mode, H)
    a = make_layer(mode, I, H, num_layers=L, bidirectional=True, dtype=np.float32, seed=1)
    b = make_layer(mode, I, H, num_layers=L, bidirectional=True, dtype=np.float32, seed=2)
    x = make_input(rng, 4, 2, I, np.float32)
    assert not np.allclose(split(mode, a(x))[0], split(mode, b(x))[0])
    b.load_state_dict(a.state_dict())
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(b.state_dict()[k], v)
    for r1, r2 in zip(split(mode, a(x)), split(mode, b(x))):
        if r1 is not None:
            np.testing.assert_array_equal(r1, r2)
    # float64 values and plain lists are accepted and cast
    p = reference.random_params(ref_mode(mode), I, H, L, True, True, P, rng=rng)
    b.load_state_dict({k: (v.tolist() if i % 2 else v) for i, (k, v) in enumerate(p.items())})
    for k, v in p.items():
        np.testing.assert_array_equal(b.state_dict()[k], v.astype(np.float32))


def test_load_state_dict_is_atomic_on_error():
    """A failing load must leave the layer as it was (checked before anything is copied)."""
    layer = make_layer("lstm", 3, 4, num_layers=2, dtype=np.float64, seed=5)
    before = layer.state_dict()
    bad = {k: np.zeros_like(v) for k, v in before.items()}
    bad["weight_hh_l1"] = np.zeros((3, 3))          # last-but-some key has the wrong shape
    with pytest.raises(ValueError, match="weight_hh_l1"):
        layer.load_state_dict(bad)
    for k, v in layer.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_load_state_dict_non_strict():
    layer = make_layer("gru", 3, 4, dtype=np.float64, seed=5)
    before = layer.state_dict()
    new_w = np.full((12, 3), 0.25)
    layer.load_state_dict({"weight_ih_l0": new_w, "something_else": np.ones(2)}, strict=False)
    np.testing.assert_array_equal(layer.weight_ih_l0, new_w)
    np.testing.assert_array_equal(layer.weight_hh_l0, before["weight_hh_l0"])


@pytest.mark.parametrize("mode", MODES)
def test_seed_reproducible(mode):
    kw = dict(num_layers=2, bidirectional=True)
    a = make_layer(mode, 4, 5, seed=42, **kw).state_dict()
    b = make_layer(mode, 4, 5, seed=42, **kw).state_dict()
    c = make_layer(mode, 4, 5, seed=43, **kw).state_dict()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert any(not np.array_equal(a[k], c[k]) for k in a)
    # seed=None: fresh entropy each time
    d = make_layer(mode, 4, 5, seed=None, **kw).state_dict()
    e = make_layer(mode, 4, 5, seed=None, **kw).state_dict()
    assert not np.array_equal(d["weight_ih_l0"], e["weight_ih_l0"])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", MODES)
def test_default_init_range(mode, dtype):
    H = 16
    layer = make_layer(mode, 10, H, num_layers=2, bidirectional=True, dtype=dtype, seed=0)
    k = 1.0 / np.sqrt(H)
    allv = np.concatenate([v.ravel() for v in layer.state_dict().values()]).astype(np.float64)
    assert np.all(np.abs(allv) <= k)
    assert allv.min() < -0.98 * k and allv.max() > 0.98 * k      # the whole range is used
    assert abs(allv.mean()) < 0.05 * k                            # centred
    # uniform: about a quarter of the mass in each quarter of the interval
    hist, _ = np.histogram(allv, bins=4, range=(-k, k))
    assert np.all(np.abs(hist / allv.size - 0.25) < 0.03), hist
    for v in layer.state_dict().values():
        assert np.unique(v).size > 0.9 * v.size                   # not constant / repeated


def test_layer_attributes():
    layer = make_layer("lstmp", 5, 9, num_layers=3, bidirectional=True, batch_first=True, bias=False)
    assert (layer.input_size, layer.hidden_size, layer.num_layers) == (5, 9, 3)
    assert layer.bidirectional is True and layer.batch_first is True and layer.bias is False
    assert layer.proj_size == 3
    assert isinstance(layer.isa, str)
    rnn = make_layer("rnn_relu", 2, 3)
    assert rnn.nonlinearity == "relu"


# ---------------------------------------------------------------------------
# pickle / copy.copy / copy.deepcopy
# ---------------------------------------------------------------------------
def _copies(module):
    return {"pickle": pickle.loads(pickle.dumps(module)), "copy": copy.copy(module),
            "deepcopy": copy.deepcopy(module)}


def _results(module, x):
    result = module(x)
    if not isinstance(result, tuple):                       # GRUCell / RNNCell: h' alone
        return [result]
    flat = []
    for part in result:
        flat.extend(part if isinstance(part, tuple) else [part])
    return flat


COPY_CASES = {
    "lstmp-bidir": lambda: lstm_fast.LSTM(4, 6, num_layers=2, bidirectional=True, proj_size=2,
                                          seed=0),
    "gru-f64-bf": lambda: lstm_fast.GRU(4, 6, batch_first=True, dtype=np.float64, seed=1),
    "rnn-relu": lambda: lstm_fast.RNN(4, 6, nonlinearity="relu", bias=False, seed=2),
    "lstm-variant": lambda: lstm_fast.LSTM(4, 6, seed=3, variant={
        "peephole": True, "clip": 1.0, "coupled_input_forget": True}),
    "gru-variant": lambda: lstm_fast.GRU(4, 6, seed=4, variant={
        "reset_before_product": True,
        "activations": [[("hardsigmoid", 0.25, 0.5), ("softsign", 0, 0)]]}),
    "lstm-cell": lambda: lstm_fast.LSTMCell(4, 6, seed=5),
    "gru-cell-f64": lambda: lstm_fast.GRUCell(4, 6, dtype=np.float64, seed=6),
    "rnn-cell-relu": lambda: lstm_fast.RNNCell(4, 6, nonlinearity="relu", seed=7),
}


@pytest.mark.parametrize("built", [False, True], ids=["fresh", "engine-built"])
@pytest.mark.parametrize("case", list(COPY_CASES))
def test_pickle_and_copies_compute_the_same(isa, case, built):
    module = COPY_CASES[case]()
    rng = make_rng("copies", case)
    is_cell = "cell" in case
    x = rng.standard_normal((3, 4) if is_cell else (5, 3, 4)).astype(np.float32)
    if built:
        module(x)                           # the original's engine exists when it is copied
    clones = _copies(module)
    expected = _results(module, x)
    for how, clone in clones.items():
        assert type(clone) is type(module), how
        assert repr(clone) == repr(module), how
        assert clone.isa == module.isa == isa, how
        assert clone.variant == module.variant, how
        assert clone.dtype == module.dtype, how
        assert list(clone.state_dict()) == list(module.state_dict()), how
        for name, value in module.state_dict().items():
            np.testing.assert_array_equal(getattr(clone, name), value, err_msg=f"{how} {name}")
            assert not getattr(clone, name).flags.writeable, f"{how} {name}"
            with pytest.raises(ValueError):
                getattr(clone, name).setflags(write=True)
        got = _results(clone, x)
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            assert g.dtype == e.dtype and g.shape == e.shape, how
            np.testing.assert_array_equal(g, e, err_msg=how)


@pytest.mark.parametrize("how", ["pickle", "copy", "deepcopy"])
def test_copies_have_their_own_weights(how):
    layer = lstm_fast.LSTM(3, 5, num_layers=2, bidirectional=True, seed=8)
    x = make_input(make_rng("own-weights", how), 4, 2, 3, np.float32)
    before = {k: v.copy() for k, v in layer.state_dict().items()}
    y_before = layer(x)[0]
    clone = _copies(layer)[how]
    if how != "copy":                                       # a shallow copy may share them
        for name in before:
            assert not np.shares_memory(getattr(clone, name), getattr(layer, name)), name
    clone.weight_hh_l1_reverse = np.zeros((20, 5))
    clone.load_state_dict({"bias_ih_l0": np.ones(20)}, strict=False)
    assert not np.array_equal(clone(x)[0], y_before)
    for name, value in layer.state_dict().items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)
    np.testing.assert_array_equal(layer(x)[0], y_before)
    # and the other way round
    layer.weight_ih_l0 = np.zeros((20, 3))
    np.testing.assert_array_equal(clone.weight_ih_l0, before["weight_ih_l0"])


def test_unpickled_module_takes_the_isa_of_its_new_process(monkeypatch):
    # README: LSTM_FAST_ISA is read when a module is constructed or unpickled.
    available = lstm_fast.cpu_info()["isa_available"]
    if len(available) < 2:
        pytest.skip("needs two ISAs")
    first, second = available[-1], available[0]
    monkeypatch.setenv("LSTM_FAST_ISA", first)
    layer = lstm_fast.GRU(3, 17, seed=9, dtype=np.float64)
    data = pickle.dumps(layer)
    monkeypatch.setenv("LSTM_FAST_ISA", second)
    clone = pickle.loads(data)
    assert layer.isa == first and clone.isa == second
    assert clone._current_engine().isa == second
    x = make_input(make_rng("unpickle-isa"), 4, 2, 3)
    np.testing.assert_allclose(clone(x)[0], layer(x)[0], **tol(np.float64))


def test_meta_tensors_are_refused_naming_the_parameter():
    # torch's meta tensors have no data: TypeError naming the key (torch
    # itself raises NotImplementedError on .numpy()).
    torch = pytest.importorskip("torch")
    layer = lstm_fast.GRU(3, 4)
    state = {name: torch.from_numpy(array) for name, array in layer.state_dict().items()}
    state["weight_hh_l0"] = torch.empty(12, 4, device="meta")
    with pytest.raises(TypeError, match="weight_hh_l0 could not be converted"):
        layer.load_state_dict(state)
    with pytest.raises(TypeError, match="could not be converted"):
        lstm_fast.GRU.from_torch(torch.nn.GRU(3, 4, device="meta"))
