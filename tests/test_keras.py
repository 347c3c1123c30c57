"""Keras 3 weights: from raw arrays against the ONNX reference (Keras's GRU and
LSTM are ONNX's with the gate blocks reordered, no keras needed), and parity
with Keras itself (torch backend) when keras is installed."""
import os

import numpy as np
import pytest

import lstm_fast
import reference as ref
from helpers import tol


def keras_arrays(rng, kind, I, H, reset_after=True):
    G = {"LSTM": 4, "GRU": 3, "RNN": 1}[kind]
    kernel = rng.uniform(-0.5, 0.5, (I, G * H))
    recurrent = rng.uniform(-0.5, 0.5, (H, G * H))
    bias = rng.uniform(-0.5, 0.5, (2, G * H) if kind == "GRU" and reset_after else (G * H,))
    return kernel, recurrent, bias


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind,reset_after,activation,recurrent_activation", [
    ("LSTM", True, "tanh", "sigmoid"),
    ("LSTM", True, "softsign", "hard_sigmoid"),
    ("GRU", True, "tanh", "sigmoid"),
    ("GRU", False, "tanh", "sigmoid"),
    ("GRU", False, "elu", "hard_sigmoid"),
    ("RNN", True, "tanh", "sigmoid"),
    ("RNN", True, "relu", "sigmoid"),
    ("RNN", True, "linear", "sigmoid"),
])
def test_raw_arrays_match_equations(kind, reset_after, activation, recurrent_activation, dtype,
                                    isa, rng):
    I, H, T, N = 3, 9, 5, 4
    kernel, recurrent, bias = keras_arrays(rng, kind, I, H, reset_after)
    cls = {"LSTM": lstm_fast.LSTM, "GRU": lstm_fast.GRU, "RNN": lstm_fast.RNN}[kind]
    settings = {"activation": activation}  # those the Keras layer of this kind has
    if kind != "RNN":
        settings["recurrent_activation"] = recurrent_activation
    if kind == "GRU":
        settings["reset_after"] = reset_after
    layer = cls.from_keras(kernel=kernel.astype(dtype), recurrent_kernel=recurrent.astype(dtype),
                           bias=bias.astype(dtype), **settings)
    assert layer.dtype == np.dtype(dtype) and layer.batch_first
    x = rng.standard_normal((N, T, I)).astype(dtype)
    out = layer(x)
    # Keras -> ONNX: matrices transposed; LSTM i,f,c,o -> i,o,f,c; GRU z,r,h as is.
    order = {"LSTM": [0, 3, 1, 2], "GRU": [0, 1, 2], "RNN": [0]}[kind]

    def onnx_order(a):
        blocks = np.split(np.asarray(a, dtype=np.float64), len(order), axis=-1)
        return np.concatenate([blocks[k] for k in order], axis=-1)

    W, R = onnx_order(kernel.astype(dtype)).T[None], onnx_order(recurrent.astype(dtype)).T[None]
    b = bias.astype(dtype).astype(np.float64)
    B = np.concatenate([onnx_order(b[0]), onnx_order(b[1])]) if b.ndim == 2 else \
        np.concatenate([onnx_order(b), np.zeros_like(b)])
    names = {"tanh": "Tanh", "sigmoid": "Sigmoid", "relu": "Relu", "softsign": "Softsign",
             "hard_sigmoid": "HardSigmoid", "elu": "Elu", "linear": "Affine"}
    acts = [names[activation]] if kind == "RNN" else [names[recurrent_activation],
                                                      names[activation]]
    if kind == "LSTM":
        acts.append(names[activation])
    alphas = [1 / 6 if a == "HardSigmoid" else 1.0 for a in acts if a in ("HardSigmoid", "Elu", "Affine")]
    betas = [0.5 if a == "HardSigmoid" else 0.0 for a in acts if a in ("HardSigmoid", "Affine")]
    expected = ref.onnx_forward(kind, x.transpose(1, 0, 2), W, R, B[None], activations=acts,
                                activation_alpha=alphas, activation_beta=betas,
                                linear_before_reset=int(reset_after))
    y = out[0]
    np.testing.assert_allclose(y, expected[0][:, 0].transpose(1, 0, 2), **tol(dtype))
    h_n = out[1][0] if kind == "LSTM" else out[1]
    np.testing.assert_allclose(h_n, expected[1], **tol(dtype))
    if kind == "LSTM":
        np.testing.assert_allclose(out[1][1], expected[2], **tol(dtype))


def test_bad_keras_arguments(rng):
    kernel, recurrent, bias = keras_arrays(rng, "GRU", 3, 4)
    with pytest.raises(ValueError, match="bias must have shape \\(12,\\)"):
        lstm_fast.GRU.from_keras(kernel=kernel, recurrent_kernel=recurrent, bias=bias,
                                 reset_after=False)
    with pytest.raises(ValueError, match="recurrent_kernel must have shape"):
        lstm_fast.GRU.from_keras(kernel=kernel, recurrent_kernel=recurrent[:, :-1])
    # Not 2-D: the message names units, not an extent computed from nothing.
    with pytest.raises(ValueError, match=r"recurrent_kernel must have shape \(units, 4 \* units\), "
                                         r"got \(16,\)"):
        lstm_fast.LSTM.from_keras(kernel=np.zeros((3, 16)), recurrent_kernel=np.zeros(16))
    masked = np.ma.masked_array(kernel, mask=np.zeros_like(kernel, dtype=bool))
    masked.mask[0, 0] = True
    with pytest.raises(TypeError, match="kernel is a masked array with masked values"):
        lstm_fast.GRU.from_keras(kernel=masked, recurrent_kernel=recurrent)
    with pytest.raises(ValueError, match="activation='gelu' is not supported"):
        lstm_fast.GRU.from_keras(kernel=kernel, recurrent_kernel=recurrent, activation="gelu")
    with pytest.raises(TypeError, match="needs a Keras layer"):
        lstm_fast.LSTM.from_keras()
    with pytest.raises(TypeError, match="dtype must be numpy.float32 or numpy.float64"):
        lstm_fast.GRU.from_keras(kernel=kernel, recurrent_kernel=recurrent, bias=bias,
                                 dtype=np.int32)
    with pytest.raises(TypeError, match="bias must hold floating-point values, got dtype int"):
        lstm_fast.GRU.from_keras(kernel=kernel, recurrent_kernel=recurrent,
                                 bias=np.arange(24).reshape(2, 12))
    # A truthy non-bool must not pass for reset_after=True (no bias to catch it).
    for value in ("False", 1, None):
        with pytest.raises(TypeError, match="reset_after must be a bool"):
            lstm_fast.GRU.from_keras(kernel=kernel, recurrent_kernel=recurrent,
                                     reset_after=value)
    # Settings the kind does not have are refused, not ignored (even at
    # their GRU / LSTM default values).
    lstm_kernel, lstm_recurrent, _ = keras_arrays(rng, "LSTM", 3, 4)
    rnn_kernel, rnn_recurrent, _ = keras_arrays(rng, "RNN", 3, 4)
    with pytest.raises(TypeError, match="recurrent_activation: a Keras SimpleRNN has no such "
                                        "setting"):
        lstm_fast.RNN.from_keras(kernel=rnn_kernel, recurrent_kernel=rnn_recurrent,
                                 recurrent_activation="sigmoid")
    for cls, arrays in ((lstm_fast.LSTM, (lstm_kernel, lstm_recurrent)),
                        (lstm_fast.RNN, (rnn_kernel, rnn_recurrent))):
        with pytest.raises(TypeError, match="reset_after: a Keras .* has no such setting"):
            cls.from_keras(kernel=arrays[0], recurrent_kernel=arrays[1], reset_after=True)


def test_activation_none_is_linear_as_in_keras(rng):
    kernel, recurrent, bias = keras_arrays(rng, "RNN", 3, 4)
    x = rng.standard_normal((2, 5, 3))
    none = lstm_fast.RNN.from_keras(kernel=kernel, recurrent_kernel=recurrent, bias=bias,
                                    activation=None, dtype=np.float64)
    linear = lstm_fast.RNN.from_keras(kernel=kernel, recurrent_kernel=recurrent, bias=bias,
                                      activation="linear", dtype=np.float64)
    np.testing.assert_array_equal(none(x)[0], linear(x)[0])
    # and it is the identity: h_t = x_t W + h_{t-1} U + b
    h = np.zeros(4)
    for t in range(5):
        h = x[0, t] @ kernel + h @ recurrent + bias
    np.testing.assert_allclose(none(x)[0][0, -1], h, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [None, np.float32, np.float64])
@pytest.mark.parametrize("given", [np.float32, np.float64])
def test_dtype_argument(given, dtype, rng):
    # dtype=None follows the arrays (float64 stays float64, all else float32);
    # a dtype given casts the arrays, as building from arrays of that dtype.
    kernel, recurrent, bias = (a.astype(given) for a in keras_arrays(rng, "LSTM", 3, 5))
    layer = lstm_fast.LSTM.from_keras(kernel=kernel, recurrent_kernel=recurrent, bias=bias,
                                      dtype=dtype)
    want = np.dtype(given if dtype is None else dtype)
    assert layer.dtype == want
    same = lstm_fast.LSTM.from_keras(kernel=kernel.astype(want),
                                     recurrent_kernel=recurrent.astype(want), bias=bias.astype(want))
    assert same.dtype == want
    for name, value in same.state_dict().items():
        assert getattr(layer, name).dtype == want, name
        np.testing.assert_array_equal(getattr(layer, name), value, err_msg=name)
    x = rng.standard_normal((2, 4, 3))
    y = layer(x)[0]
    assert y.dtype == want
    np.testing.assert_array_equal(y, same(x)[0])


def test_float16_arrays_give_float32():
    kernel, recurrent, bias = keras_arrays(np.random.default_rng(0), "GRU", 3, 4)
    layer = lstm_fast.GRU.from_keras(kernel=kernel.astype(np.float16),
                                     recurrent_kernel=recurrent.astype(np.float16),
                                     bias=bias.astype(np.float16))
    assert layer.dtype == np.float32
    # Keras's z block (columns 0:4) is torch's second one (rows 4:8), exactly.
    np.testing.assert_array_equal(layer.weight_hh_l0[4:8], recurrent.astype(np.float16)[:, :4].T)


@pytest.fixture(scope="module")
def keras():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    module = pytest.importorskip("keras")
    if module.backend.backend() != "torch":
        pytest.skip(f"keras runs on the {module.backend.backend()} backend, not torch")
    return module


@pytest.mark.parametrize("kind,options", [
    ("LSTM", {}),
    ("LSTM", {"recurrent_activation": "hard_sigmoid", "activation": "softsign"}),
    ("LSTM", {"use_bias": False}),
    ("GRU", {"reset_after": True}),
    ("GRU", {"reset_after": False}),
    ("GRU", {"reset_after": False, "use_bias": False}),
    ("SimpleRNN", {}),
    ("SimpleRNN", {"activation": "relu"}),
])
def test_keras_parity(keras, kind, options, rng):
    import torch
    layer = getattr(keras.layers, kind)(7, return_sequences=True, return_state=True,
                                        bias_initializer="random_uniform", **options)
    x = rng.standard_normal((3, 6, 5)).astype(np.float32)
    outputs = [np.asarray(torch.as_tensor(o).detach().cpu()) for o in layer(x)]
    cls = {"LSTM": lstm_fast.LSTM, "GRU": lstm_fast.GRU, "SimpleRNN": lstm_fast.RNN}[kind]
    fast = cls.from_keras(layer)
    assert fast.bias == options.get("use_bias", True)
    result = fast(x)
    np.testing.assert_allclose(result[0], outputs[0], rtol=1e-4, atol=2e-5)
    if kind == "LSTM":
        np.testing.assert_allclose(result[1][0][0], outputs[1], rtol=1e-4, atol=2e-5)
        np.testing.assert_allclose(result[1][1][0], outputs[2], rtol=1e-4, atol=2e-5)
    else:
        np.testing.assert_allclose(result[1][0], outputs[1], rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("kind,option,match", [
    ("LSTM", "go_backwards", "go_backwards=True are not supported"),
    ("GRU", "go_backwards", "go_backwards=True are not supported"),
    ("SimpleRNN", "stateful", "stateful Keras layers are not supported"),
    ("LSTM", "stateful", "stateful Keras layers are not supported"),
])
def test_keras_layers_that_cannot_be_copied_are_refused(keras, kind, option, match, rng):
    # A reversed or stateful layer would give other results than the copy.
    layer = getattr(keras.layers, kind)(4, **{option: True})
    layer(rng.standard_normal((2, 3, 5)).astype(np.float32))       # built, weights exist
    cls = {"LSTM": lstm_fast.LSTM, "GRU": lstm_fast.GRU, "SimpleRNN": lstm_fast.RNN}[kind]
    with pytest.raises(ValueError, match=match):
        cls.from_keras(layer)


def test_wrappers_and_other_kinds_are_refused(keras, rng):
    # Their first weights have valid shapes: without the check the copy would
    # silently keep one cell, one direction, or the default activations.
    L = keras.layers
    x = rng.standard_normal((2, 3, 5)).astype(np.float32)
    for layer, cls, expected in [
            (L.RNN([L.LSTMCell(4), L.LSTMCell(4)]), lstm_fast.LSTM, "LSTM"),
            (L.RNN(L.GRUCell(4)), lstm_fast.LSTM, "LSTM"),
            (L.Bidirectional(L.LSTM(4)), lstm_fast.LSTM, "LSTM"),
            (L.GRU(4), lstm_fast.LSTM, "LSTM"),
            (L.LSTM(4), lstm_fast.RNN, "SimpleRNN")]:
        layer(x)                                       # built, weights exist
        with pytest.raises(ValueError, match=f"layer must be a keras.layers.{expected}"
                                             f"( or an RNN of one {expected}Cell)?, got"):
            cls.from_keras(layer)


@pytest.mark.parametrize("cell,options", [
    ("LSTMCell", {"activation": "relu"}),
    ("GRUCell", {"reset_after": False}),
    ("GRUCell", {}),
    ("SimpleRNNCell", {"activation": "relu", "use_bias": False}),
])
def test_rnn_of_one_cell(keras, cell, options, rng):
    # keras.layers.RNN(cell) is the layer of that cell, its options included
    # (a relu LSTMCell must not come back with tanh).
    import torch
    layer = keras.layers.RNN(getattr(keras.layers, cell)(6, bias_initializer="random_uniform",
                                                         **options),
                             return_sequences=True, return_state=True)
    x = rng.standard_normal((3, 5, 4)).astype(np.float32)
    outputs = [np.asarray(torch.as_tensor(o).detach().cpu()) for o in layer(x)]
    cls = {"LSTMCell": lstm_fast.LSTM, "GRUCell": lstm_fast.GRU,
           "SimpleRNNCell": lstm_fast.RNN}[cell]
    result = cls.from_keras(layer)(x)
    np.testing.assert_allclose(result[0], outputs[0], rtol=1e-4, atol=2e-5)
    states = result[1] if cell == "LSTMCell" else (result[1],)
    for got, want in zip(states, outputs[1:]):
        np.testing.assert_allclose(got[0], want, rtol=1e-4, atol=2e-5)


def test_rnn_of_a_stack_of_one_cell(keras, rng):
    import torch
    layer = keras.layers.RNN([keras.layers.GRUCell(5, bias_initializer="random_uniform")],
                             return_sequences=True)
    x = rng.standard_normal((2, 4, 3)).astype(np.float32)
    expected = np.asarray(torch.as_tensor(layer(x)).detach().cpu())
    np.testing.assert_allclose(lstm_fast.GRU.from_keras(layer)(x)[0], expected,
                               rtol=1e-4, atol=2e-5)


def test_rnn_of_one_cell_keeps_the_rnn_options(keras, rng):
    layer = keras.layers.RNN(keras.layers.LSTMCell(4), go_backwards=True)
    layer(rng.standard_normal((2, 3, 5)).astype(np.float32))
    with pytest.raises(ValueError, match="go_backwards=True are not supported"):
        lstm_fast.LSTM.from_keras(layer)


class _FakeLayer:
    """Duck-typed stand-in for a Keras layer (config and weights as given)."""

    def __init__(self, config, weights):
        self._config, self._weights = config, weights

    def get_config(self):
        return self._config

    def get_weights(self):
        return self._weights


def test_layer_configs_that_are_not_keras_3(rng):
    k, rk, b = (rng.standard_normal(s).astype(np.float32) for s in ((5, 16), (4, 16), (16,)))
    config = {"activation": "tanh", "recurrent_activation": "sigmoid", "use_bias": True}
    assert lstm_fast.LSTM.from_keras(_FakeLayer(config, [k, rk, b])).hidden_size == 4
    with pytest.raises(ValueError, match="Keras 2"):
        lstm_fast.LSTM.from_keras(_FakeLayer({**config, "time_major": False}, [k, rk, b]))
    with pytest.raises(ValueError, match="must hold 3 weight arrays .* got 2"):
        lstm_fast.LSTM.from_keras(_FakeLayer(config, [k, rk]))
    with pytest.raises(ValueError, match="must hold 2 weight arrays .* got 3"):
        lstm_fast.LSTM.from_keras(_FakeLayer({**config, "use_bias": False}, [k, rk, b]))
    with pytest.raises(ValueError, match="config has no recurrent_activation"):
        lstm_fast.LSTM.from_keras(_FakeLayer({"activation": "relu"}, [k, rk, b]))


@pytest.mark.parametrize("argument,value", [
    ("activation", "relu"), ("activation", "tanh"), ("recurrent_activation", "sigmoid"),
    ("reset_after", True), ("reset_after", False),
])
def test_layer_with_settings_of_its_own_config_refused(argument, value, rng):
    # The layer's config decides these; a value passed beside it (even the
    # default's) would be silently ignored, so it is refused.
    k, rk, b = (rng.standard_normal(s).astype(np.float32) for s in ((5, 12), (4, 12), (2, 12)))
    config = {"activation": "tanh", "recurrent_activation": "sigmoid", "reset_after": True}
    layer = _FakeLayer(config, [k, rk, b])
    assert lstm_fast.GRU.from_keras(layer).hidden_size == 4
    with pytest.raises(TypeError, match=f"{argument}: a Keras layer's configuration gives"):
        lstm_fast.GRU.from_keras(layer, **{argument: value})
