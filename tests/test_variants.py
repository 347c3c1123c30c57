"""Cell variants at the engine and layer level: option checks, the default
path staying default, multi-layer layers with variants against the ONNX
reference stacked layer on layer (the operators cover one layer each), and
projected LSTMs with variants against reference.py's variant LSTM (ONNX has
no projection), itself checked against the ONNX reference."""
import functools

import numpy as np
import pytest

import lstm_fast
import reference as ref
from helpers import assert_result, make_hx, make_input, make_rng, tol
from lstm_fast import _core


def engine(cell="lstm", H=3, D=1, **options):
    G = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}[cell]
    group = (np.zeros((G * H, 2)), np.zeros((G * H, H)), None, None, None)
    if options.get("peephole"):
        group += (np.zeros(3 * H),)
    return _core.Engine(cell, 2, H, 0, 1, D, False, np.float64, "auto", [group] * D, **options)


@pytest.mark.parametrize("cell,options,match", [
    ("gru", {"peephole": True}, "option this cell kind does not have"),
    ("rnn_tanh", {"coupled_input_forget": True}, "option this cell kind does not have"),
    ("lstm", {"reset_before_product": True}, "option this cell kind does not have"),
    ("lstm", {"clip": float("nan")}, "clip must be a finite number"),
    ("lstm", {"clip": -0.5}, "clip must be a finite number"),
    ("lstm", {"activations": [[("sigmoid", 0, 0), ("swish", 0, 0), ("tanh", 0, 0)]]},
     "unknown activation 'swish'"),
    ("lstm", {"activations": [[("sigmoid", 0, 0), ("tanh", 0, 0)]]}, "must hold 3"),
    ("gru", {"activations": [[("leakyrelu", float("inf"), 0), ("tanh", 0, 0)]]},
     "alpha and beta must be finite"),
    ("rnn_tanh", {"activations": [[("relu", 0, 0)]] * 2}, "one entry per direction"),
])
def test_engine_rejects_bad_options(cell, options, match):
    with pytest.raises(ValueError, match=match):
        engine(cell, **options)


def test_float32_activation_parameters_must_be_float32_numbers():
    # The float32 kernels use alpha and beta as floats, where 1e39 is inf.
    group = (np.zeros((3, 2)), np.zeros((3, 3)), None, None, None)
    for alpha, beta in ((1e39, 0.0), (1.0, -1e39)):
        activations = [[("affine", alpha, beta)]]
        with pytest.raises(ValueError, match="alpha and beta of a layer computing in float32 must be "
                                             "finite as float32 values"):
            _core.Engine("rnn_tanh", 2, 3, 0, 1, 1, False, np.float32, "auto", [
                tuple(None if a is None else a.astype(np.float32) for a in group)],
                activations=activations)
        _core.Engine("rnn_tanh", 2, 3, 0, 1, 1, False, np.float64, "auto", [group],
                     activations=activations)
    # What rounds to FLT_MAX is accepted; from there on half an ulp up, inf.
    largest = float(np.finfo(np.float32).max)
    for value in (largest, 3.4028235e38, largest + 2.0 ** 102):
        _core.Engine("rnn_tanh", 2, 3, 0, 1, 1, False, np.float32, "auto", [
            tuple(None if a is None else a.astype(np.float32) for a in group)],
            activations=[[("affine", value, -value)]])
    with pytest.raises(ValueError, match="computing in float32 must be finite"):
        _core.Engine("rnn_tanh", 2, 3, 0, 1, 1, False, np.float32, "auto", [
            tuple(None if a is None else a.astype(np.float32) for a in group)],
            activations=[[("affine", largest + 2.0 ** 103, 0.0)]])
    with pytest.raises(ValueError, match="alpha and beta must be finite"):
        engine("gru", activations=[[("leakyrelu", 10 ** 400, 0), ("tanh", 0, 0)]])


def test_peephole_array_required():
    group = (np.zeros((12, 2)), np.zeros((12, 3)), None, None, None)
    with pytest.raises(TypeError, match="peephole must be a numpy.ndarray"):
        _core.Engine("lstm", 2, 3, 0, 1, 1, False, np.float64, "auto", [group], peephole=True)
    with pytest.raises(ValueError, match="peephole must be None"):
        _core.Engine("lstm", 2, 3, 0, 1, 1, False, np.float64, "auto", [group + (np.zeros(9),)])


def test_default_path_stays_default():
    """Explicitly naming the cell's own activations keeps the fast path."""
    assert not engine("lstm").generic
    own = [[("sigmoid", 0, 0), ("tanh", 0, 0), ("tanh", 0, 0)]]
    assert not engine("lstm", activations=own).generic
    assert not engine("rnn_relu", activations=[[("relu", 0, 0)]]).generic
    assert engine("rnn_tanh", activations=[[("relu", 0, 0)]]).generic
    assert engine("lstm", clip=3.0).generic
    assert engine("gru", reset_before_product=True).generic


def to_onnx_gru(w, count=3):
    """torch r, z, n blocks -> ONNX z, r, h."""
    size = w.shape[0] // count
    return np.concatenate([w[size:2 * size], w[:size], w[2 * size:]])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_multilayer_reset_before_gru(dtype, isa, rng):
    variant = {"reset_before_product": True, "clip": 1.5,
               "activations": [[("hardsigmoid", 0.25, 0.5), ("softsign", 0, 0)]] * 2}
    layer = lstm_fast.GRU(4, 7, num_layers=2, bidirectional=True, dtype=dtype, seed=3,
                          variant=variant)
    x = make_input(rng, 6, 3, 4, dtype)
    lengths = [6, 2, 4]
    y, h_n = layer(x, lengths=lengths)
    params = layer.state_dict()
    inp = x.astype(np.float64)
    for k in range(2):
        W, R, B = [], [], []
        for sfx in ("", "_reverse"):
            W.append(to_onnx_gru(params[f"weight_ih_l{k}{sfx}"]))
            R.append(to_onnx_gru(params[f"weight_hh_l{k}{sfx}"]))
            B.append(np.concatenate([to_onnx_gru(params[f"bias_ih_l{k}{sfx}"]),
                                     to_onnx_gru(params[f"bias_hh_l{k}{sfx}"])]))
        Y, Y_h = ref.onnx_forward("GRU", inp, np.stack(W), np.stack(R), np.stack(B), lengths,
                                  direction="bidirectional", clip=1.5,
                                  activations=["HardSigmoid", "Softsign"] * 2,
                                  activation_alpha=[0.25, 0.25], activation_beta=[0.5, 0.5])
        np.testing.assert_allclose(h_n[2 * k:2 * k + 2], Y_h, **tol(dtype))
        inp = Y.transpose(0, 2, 1, 3).reshape(6, 3, 14)
    assert y.dtype == h_n.dtype == np.dtype(dtype)
    np.testing.assert_allclose(y, inp, **tol(dtype))


def test_layer_variant_checks():
    with pytest.raises(ValueError, match="unknown keys"):
        lstm_fast.LSTM(2, 3, variant={"peepholes": True})
    # An option the cell kind does not have is named.
    for cls, key, match in ((lstm_fast.GRU, "peephole", "of the LSTM cell, not of GRU's"),
                            (lstm_fast.GRU, "coupled_input_forget", "of the LSTM cell"),
                            (lstm_fast.RNN, "peephole", "of the LSTM cell, not of RNN_TANH's"),
                            (lstm_fast.LSTM, "reset_before_product", "of the GRU cell")):
        with pytest.raises(ValueError, match=f"variant\\['{key}'\\] is an option {match}"):
            cls(2, 3, variant={key: True})
    with pytest.raises(ValueError, match="variant has unknown keys 'x', 1; allowed"):
        lstm_fast.LSTM(2, 3, variant={1: True, "x": 1})
    with pytest.raises(ValueError, match="clip must be a finite number >= 0"):
        lstm_fast.LSTM(2, 3, variant={"clip": 10 ** 400})
    layer = lstm_fast.LSTM(2, 3, bidirectional=True, variant={"peephole": True, "clip": 2.0})
    assert layer.state_dict()["peephole_l0_reverse"].shape == (9,)
    assert layer.variant == {"peephole": True, "clip": 2.0}
    assert "variant=" in repr(layer)
    with pytest.raises(ValueError, match="no equivalent"):
        layer.to_torch()
    # The torch cell's values are not a variant.
    assert lstm_fast.LSTM(2, 3, variant={"clip": 0.0, "peephole": False}).variant is None


def test_variant_naming_the_cells_own_activations_converts_to_torch():
    torch = pytest.importorskip("torch")
    own = [("sigmoid", 0, 0), ("tanh", 0, 0), ("tanh", 0, 0)]
    layer = lstm_fast.LSTM(2, 3, bidirectional=True, variant={"activations": [own] * 2}, seed=1)
    x = np.random.default_rng(0).standard_normal((4, 2, 2)).astype(np.float32)
    with torch.no_grad():
        got = layer.to_torch()(torch.from_numpy(x))[0].numpy()
    np.testing.assert_allclose(got, layer(x)[0], rtol=1e-5, atol=1e-6)
    relu = lstm_fast.RNN(2, 3, nonlinearity="relu", variant={"activations": [[("relu", 0, 0)]]})
    assert relu.to_torch().nonlinearity == "relu"
    # relu activations make a tanh RNN a relu one (mode and all), which
    # torch has; another activation has no equivalent.
    tanh_as_relu = lstm_fast.RNN(2, 3, variant={"activations": [[("relu", 0, 0)]]})
    assert tanh_as_relu.to_torch().nonlinearity == "relu"
    softsign = lstm_fast.RNN(2, 3, variant={"activations": [[("softsign", 0, 0)]]})
    with pytest.raises(ValueError, match="no equivalent"):
        softsign.to_torch()


@pytest.mark.parametrize("variant, error, match", [
    ({"peephole": "no"}, TypeError, "peephole"),
    ({"coupled_input_forget": 1}, TypeError, "coupled_input_forget"),
    ({"clip": "3"}, TypeError, "clip"),
    ({"activations": [[("sigmoid", 0, 0), "tanh", ("tanh", 0, 0)]]}, ValueError,
     r"activations\[0\]\[1\].*triple"),
    ({"activations": [[("sigmoid", "a", 0), ("tanh", 0, 0), ("tanh", 0, 0)]]}, TypeError,
     r"activations\[0\]\[0\].*numbers"),
    ({"activations": 5}, TypeError, r"variant\['activations'\]"),
    ({"activations": [5]}, TypeError, r"variant\['activations'\]"),
])
def test_bad_variant_values_are_named(variant, error, match):
    with pytest.raises(error, match=match):
        lstm_fast.LSTM(2, 3, variant=variant)


@pytest.mark.parametrize("H", [1, 3, 8, 9, 10, 11, 12, 15, 16, 37, 70])
@pytest.mark.parametrize("B", [1, 2, 4])
@pytest.mark.parametrize("cell", ["rnn_tanh", "rnn_relu", "gru_reset_before"])
def test_split_accumulator_chains(cell, B, H, isa, rng):
    # One- and two-gate tiles of 1, 2 or 4 rows split the recurrent sum over
    # k into S = 8 / (rows x gates) partial sums (kernel_body.h,
    # accumulate_short). K = H here: K < S, K a multiple of S, and tails of
    # 1 to 7 for S = 8 (1 to 3 for S = 4, 1 for S = 2). Long sequences, so a
    # wrong partial sum compounds.
    T, I = 9, 5
    reset_before = cell == "gru_reset_before"
    if reset_before:
        layer = lstm_fast.GRU(I, H, dtype=np.float32, seed=H,
                              variant={"reset_before_product": True})
    else:
        layer = lstm_fast.RNN(I, H, nonlinearity=cell[4:], dtype=np.float32, seed=H)
    assert layer.isa == isa
    x = make_input(rng, T, B, I, np.float32, scale=2.0)
    h0 = rng.uniform(-0.9, 0.9, (1, B, H)).astype(np.float32)
    y, h_n = layer(x, h0)
    p = {k: v.astype(np.float64) for k, v in layer.state_dict().items()}
    if reset_before:
        W, R = to_onnx_gru(p["weight_ih_l0"]), to_onnx_gru(p["weight_hh_l0"])
        bias = np.concatenate([to_onnx_gru(p["bias_ih_l0"]), to_onnx_gru(p["bias_hh_l0"])])
        Y, Y_h = ref.onnx_forward("GRU", x, W[None], R[None], bias[None], initial_h=h0)
    else:
        bias = np.concatenate([p["bias_ih_l0"], p["bias_hh_l0"]])
        Y, Y_h = ref.onnx_forward("RNN", x, p["weight_ih_l0"][None], p["weight_hh_l0"][None],
                                  bias[None], initial_h=h0,
                                  activations=["Tanh" if cell == "rnn_tanh" else "Relu"])
    assert y.dtype == h_n.dtype == np.float32
    np.testing.assert_allclose(y, Y[:, 0], **tol(np.float32))
    np.testing.assert_allclose(h_n, Y_h, **tol(np.float32))


def test_variant_is_a_copy_the_caller_cannot_change():
    # The engine is rebuilt from the stored variant whenever a parameter
    # changes; editing the caller's lists afterwards must change nothing.
    activations = [[("sigmoid", 0, 0), ("tanh", 0, 0), ("tanh", 0, 0)]]
    layer = lstm_fast.LSTM(3, 4, seed=0, variant={"activations": activations})
    x = np.full((2, 1, 3), 3.0, np.float32)
    before = layer(x)[0]
    activations[0][1] = ("relu", 0, 0)
    layer.variant["activations"] = None       # the property hands out a copy too
    layer.weight_ih_l0 = layer.weight_ih_l0   # rebuilds the engine
    np.testing.assert_array_equal(layer(x)[0], before)
    assert layer.variant["activations"][0][1] == ("tanh", 0, 0)


LSTM_VARIANTS = {
    "peephole": {"peephole": True},
    "coupled": {"coupled_input_forget": True},
    "clip": {"clip": 0.7},
    "all": {"peephole": True, "coupled_input_forget": True, "clip": 1.1},
}


def torch_to_onnx_lstm(params, sfx):
    """One LSTM layer-direction of torch-ordered parameters (i, f, g, o; peephole
    i, f, o) in ONNX's order (i, o, f, c; P = [Pi, Po, Pf])."""
    def order(a):
        blocks = np.split(np.asarray(a, np.float64), 4)
        return np.concatenate([blocks[0], blocks[3], blocks[1], blocks[2]])
    W, R = order(params[f"weight_ih_l0{sfx}"]), order(params[f"weight_hh_l0{sfx}"])
    B = np.concatenate([order(params[f"bias_ih_l0{sfx}"]), order(params[f"bias_hh_l0{sfx}"])])
    P = None
    if f"peephole_l0{sfx}" in params:
        p_i, p_f, p_o = np.split(np.asarray(params[f"peephole_l0{sfx}"], np.float64), 3)
        P = np.concatenate([p_i, p_o, p_f])
    return W, R, B, P


@pytest.mark.parametrize("name", list(LSTM_VARIANTS))
def test_reference_variant_lstm_equals_onnx_reference(name, rng):
    # reference.py's variant LSTM (torch's gate order) and its ONNX operator
    # are written separately; for one layer without projection they must agree.
    variant = LSTM_VARIANTS[name]
    T, B, I, H = 6, 4, 3, 5
    params = ref.random_params("lstm", I, H, bidirectional=True, rng=rng, scale=0.8,
                               peephole=variant.get("peephole", False))
    x = make_input(rng, T, B, I)
    h0, c0 = make_hx("lstm", rng, 2, B, H)
    lengths = [6, 0, 3, 1]
    y, (h_n, c_n) = ref.module_forward("lstm", params, x, (h0, c0), lengths, variant=variant)
    directions = [torch_to_onnx_lstm(params, sfx) for sfx in ("", "_reverse")]
    W, R, Bias = (np.stack([d[k] for d in directions]) for k in range(3))
    P = np.stack([d[3] for d in directions]) if variant.get("peephole") else None
    Y, Y_h, Y_c = ref.onnx_forward("LSTM", x, W, R, Bias, lengths, h0, c0, P,
                                   direction="bidirectional", clip=variant.get("clip"),
                                   input_forget=int(variant.get("coupled_input_forget", False)))
    np.testing.assert_allclose(y, Y.transpose(0, 2, 1, 3).reshape(T, B, 2 * H), rtol=1e-12,
                               atol=1e-13)
    np.testing.assert_allclose(h_n, Y_h, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(c_n, Y_c, rtol=1e-12, atol=1e-13)


# (I, H, P, T, B, lengths): a few panels with a tail; and B=33, where each step
# computes its own input projection.
PROJ_SHAPES = {
    "small": (5, 20, 7, 6, 4, [6, 2, 0, 5]),
    "B33": (3, 37, 13, 4, 33, [4, 1, 0, 3] + [(i % 4) + 1 for i in range(29)]),
}


@functools.lru_cache(maxsize=None)
def _projected_case(name, shape):
    """Float32-exact parameters, input and states (one reference serves both
    dtypes) and the reference, for a two-layer bidirectional LSTMP."""
    variant = LSTM_VARIANTS[name]
    I, H, P, T, B, lengths = PROJ_SHAPES[shape]
    rng = make_rng("proj-variant", name, shape)
    # Weights large enough that gate sums pass the clip bounds.
    params = ref.random_params("lstm", I, H, 2, True, True, P, rng=rng, scale=0.8,
                               dtype=np.float32, peephole=variant.get("peephole", False))
    x = make_input(rng, T, B, I, np.float32)
    hx = make_hx("lstm", rng, 4, B, H, P, np.float32)
    expected = ref.module_forward("lstm", params, x, hx, lengths, variant=variant)
    # Premise: the variant matters here (its reference differs from torch's cell).
    plain = ref.module_forward("lstm", {k: v for k, v in params.items() if "peephole" not in k},
                               x, hx, lengths)
    assert np.abs(expected[0] - plain[0]).max() > 1e-2
    return params, x, hx, expected


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("shape", list(PROJ_SHAPES))
@pytest.mark.parametrize("name", list(LSTM_VARIANTS))
def test_projected_lstm_with_variant_matches_reference(name, shape, dtype, isa):
    params, x, hx, expected = _projected_case(name, shape)
    I, H, P, T, B, lengths = PROJ_SHAPES[shape]
    layer = lstm_fast.LSTM(I, H, num_layers=2, bidirectional=True, proj_size=P, dtype=dtype,
                           variant=LSTM_VARIANTS[name])
    assert layer.isa == isa
    layer.load_state_dict(params)
    got = layer(x.astype(dtype), tuple(a.astype(dtype) for a in hx), lengths=lengths)
    assert_result("lstm", got, expected, dtype)


def test_rnn_activations_that_are_its_own_nonlinearity_say_so():
    # All relu (or all tanh): the RNN's own cell, named as such by mode,
    # nonlinearity and to_torch, with the same numbers.
    x = np.random.default_rng(2).standard_normal((5, 2, 3)).astype(np.float32)
    relu = lstm_fast.RNN(3, 4, nonlinearity="relu", bidirectional=True, seed=1)
    for entry in (("Relu", 0, 0), ("RELU", 0.5, 0.0)):
        variant = lstm_fast.RNN(3, 4, bidirectional=True, seed=1,
                                variant={"activations": [[entry]] * 2})
        assert (variant.mode, variant.nonlinearity, variant.variant) == ("RNN_RELU", "relu", None)
        np.testing.assert_array_equal(variant(x)[0], relu(x)[0])
    tanh = lstm_fast.RNN(3, 4, nonlinearity="relu", seed=1,
                         variant={"activations": [[("tanh", 0, 0)]], "clip": 1.0})
    assert (tanh.mode, tanh.variant) == ("RNN_TANH", {"clip": 1.0})
    mixed = lstm_fast.RNN(3, 4, bidirectional=True,
                          variant={"activations": [[("relu", 0, 0)], [("tanh", 0, 0)]]})
    assert mixed.variant is not None and "activations" in mixed.variant
    # Checked as any activations first: one entry per direction, one
    # (name, alpha, beta) triple of numbers each.
    for bad, match in (([[("relu", 0, 0)]], "one entry per direction"),
                       ([[("relu", 0, 0), ("sigmoid", 0, 0)]] * 2, "must hold 1"),
                       ([[("relu", "x", None)]] * 2, "alpha and beta must be numbers"),
                       ([[("relu",)]] * 2, "triple")):
        with pytest.raises((TypeError, ValueError), match=match):
            lstm_fast.RNN(3, 4, bidirectional=True, variant={"activations": bad})
