"""lstm_fast.onnx against the ONNX specification's equations (reference.onnx_forward),
on every ISA and both dtypes, against ONNX Runtime where it runs the case, and
its argument checks. The cell variants of the C engine (peepholes, coupling,
clip, activations, reset-before GRU) are exercised here through the operators."""
import warnings

import numpy as np
import pytest

import reference as ref
from helpers import tol

lo = pytest.importorskip("lstm_fast.onnx")

OPS = {"LSTM": 4, "GRU": 3, "RNN": 1}
T, N, I, H = 6, 5, 4, 11  # N > the register-tile rows, H spans several panels and a tail


def make_inputs(rng, op, direction="bidirectional", layout=0, H=H, peephole=True, lengths=True):
    """The operator's inputs in order, as float64, with distinct non-zero states."""
    G, D = OPS[op], 2 if direction == "bidirectional" else 1
    X = rng.standard_normal((T, N, I))
    W = rng.uniform(-0.6, 0.6, (D, G * H, I))
    R = rng.uniform(-0.6, 0.6, (D, G * H, H))
    B = rng.uniform(-0.5, 0.5, (D, 2 * G * H))
    seq = np.array([T, 3, 1, T, 0])[:N] if lengths else None
    h0 = rng.uniform(0.1, 0.9, (D, N, H)) * rng.choice([-1, 1], (D, N, H))
    c0 = rng.uniform(0.2, 2.0, (D, N, H)) * rng.choice([-1, 1], (D, N, H))
    if layout:
        X, h0, c0 = X.transpose(1, 0, 2), h0.transpose(1, 0, 2), c0.transpose(1, 0, 2)
    inputs = [X, W, R, B, seq, h0]
    if op == "LSTM":
        inputs += [c0, rng.uniform(-0.5, 0.5, (D, 3 * H)) if peephole else None]
    return inputs


def call(op, inputs, **attributes):
    return {"LSTM": lo.lstm, "GRU": lo.gru, "RNN": lo.rnn}[op](*inputs, **attributes)


def check(op, inputs, dtype, **attributes):
    cast = [None if a is None else (a if a.dtype.kind == "i" else a.astype(dtype)) for a in inputs]
    got = call(op, cast, **attributes)
    expected = ref.onnx_forward(op, *cast, **attributes)
    assert len(got) == len(expected)
    for name, g, e in zip(("Y", "Y_h", "Y_c"), got, expected):
        assert g.dtype == np.dtype(dtype) and g.shape == e.shape, name
        np.testing.assert_allclose(g, e, err_msg=name, **tol(dtype))


# Every variant of every cell, each on its own and combined.
VARIANTS = {
    "LSTM": {
        "default": {},
        "peephole": {"peephole": True},
        "clip": {"clip": 0.8},
        "input_forget": {"input_forget": 1},
        "all": {"peephole": True, "clip": 1.1, "input_forget": 1,
                "activations": ["HardSigmoid", "Softsign", "ScaledTanh"] * 2,
                "activation_alpha": [0.3, 0.9, 0.25, 0.8], "activation_beta": [0.45, 1.2, 0.6, 0.9]},
    },
    "GRU": {
        "linear_before_reset_0": {"linear_before_reset": 0},
        "linear_before_reset_1": {"linear_before_reset": 1},
        "clip_lbr0": {"clip": 0.7},
        "clip_lbr1": {"clip": 0.7, "linear_before_reset": 1},
        "activations_lbr0": {"activations": ["Softsign", "Elu", "HardSigmoid", "LeakyRelu"],
                             "activation_alpha": [0.5]},
        "activations_lbr1": {"activations": ["Sigmoid", "Softplus", "Sigmoid", "Tanh"],
                             "linear_before_reset": 1},
    },
    "RNN": {
        "tanh": {},
        "relu": {"activations": ["Relu", "Relu"]},
        "mixed": {"activations": ["Relu", "Sigmoid"]},
        "clip": {"clip": 0.5},
        "relu_clip": {"activations": ["Relu", "Relu"], "clip": 0.5},  # relu's general kernel
    },
}
VARIANT_CASES = [(op, name) for op, cases in VARIANTS.items() for name in cases]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("op,case", VARIANT_CASES)
def test_variants_every_isa(op, case, dtype, isa, rng):
    attributes = dict(VARIANTS[op][case])
    peephole = attributes.pop("peephole", False)
    inputs = make_inputs(rng, op, peephole=peephole)
    check(op, inputs, dtype, direction="bidirectional", **attributes)


@pytest.mark.parametrize("name", lo.ACTIVATIONS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_each_activation_every_isa(name, dtype, isa, rng):
    # Inputs scaled so every activation sees both signs and both sides of
    # ThresholdedRelu's alpha; alpha/beta given so ScaledTanh runs.
    rnn = make_inputs(rng, "RNN")
    rnn[0] = rnn[0] * 2
    check("RNN", rnn, dtype, direction="bidirectional", activations=[name, "Tanh"],
          activation_alpha=[0.7], activation_beta=[0.3])
    lstm = make_inputs(rng, "LSTM", direction="forward", peephole=False)
    check("LSTM", lstm, dtype, activations=["Sigmoid", name, name],
          activation_alpha=[0.4, 0.6], activation_beta=[0.2, 0.8])


@pytest.mark.parametrize("layout", [0, 1])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("op", list(OPS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_directions_and_layouts(op, direction, layout, dtype, isa, rng):
    inputs = make_inputs(rng, op, direction, layout)
    check(op, inputs, dtype, direction=direction, layout=layout, clip=2.5)
    # Optional inputs absent: zeros, full lengths.
    inputs[3:] = [None] * (len(inputs) - 3)
    check(op, inputs, dtype, direction=direction, layout=layout)


def test_activation_defaults(rng):
    """The operators' defaults: alpha/beta consumed only by activations that take
    them, the rest defaulting as the ONNX operator of the same name."""
    inputs = make_inputs(rng, "RNN")
    inputs[0] = inputs[0] * 3
    for names in (["LeakyRelu", "ThresholdedRelu"], ["HardSigmoid", "Elu"], ["Affine", "Tanh"]):
        check("RNN", inputs, np.float64, direction="bidirectional", activations=names)

    def rnn(activations, alphas=None):
        return lo.rnn(*inputs, direction="bidirectional", activations=activations,
                      activation_alpha=alphas)

    # One alpha, two activations that take one: LeakyRelu (first) consumes it
    # and Elu gets its ONNX default, 1.0, as if given explicitly; Elu's alpha
    # does change the result here (inputs scaled, so negative sums occur).
    got = rnn(["LeakyRelu", "Elu"], [0.5])
    for g, e in zip(got, rnn(["LeakyRelu", "Elu"], [0.5, 1.0]), strict=True):
        np.testing.assert_array_equal(g, e)
    assert not np.array_equal(got[0], rnn(["LeakyRelu", "Elu"], [0.5, 0.3])[0])
    assert not np.array_equal(got[0], rnn(["LeakyRelu", "Elu"])[0])      # 0.5 was used
    # Tanh takes no alpha: the one given goes to the LeakyRelu after it (the
    # reverse direction, index 1), which then runs as with alpha 0.5 given to it.
    got = rnn(["Tanh", "LeakyRelu"], [0.5])
    same = rnn(["LeakyRelu", "LeakyRelu"], [0.5, 0.5])
    np.testing.assert_array_equal(got[0][:, 1], same[0][:, 1])
    np.testing.assert_array_equal(got[1][1], same[1][1])
    assert not np.array_equal(got[0][:, 1], rnn(["Tanh", "LeakyRelu"])[0][:, 1])


def test_operator_reuses_packed_weights(rng):
    X, W, R, B, seq, h0, c0, P = make_inputs(rng, "LSTM")
    node = lo.Operator("LSTM", W, R, B, P, direction="bidirectional", clip=1.5)
    for lengths in (seq, None):
        got = node(X, lengths, h0, c0)
        expected = ref.onnx_forward("LSTM", X, W, R, B, lengths, h0, c0, P,
                                    direction="bidirectional", clip=1.5)
        for g, e in zip(got, expected):
            np.testing.assert_allclose(g, e, **tol(np.float64))


# ------------------------------------------------------------------ bad arguments

def test_bad_attributes(rng):
    X, W, R, B, seq, h0, c0, P = make_inputs(rng, "LSTM", direction="forward")
    good = dict(X=X, W=W, R=R, B=B, sequence_lens=seq, initial_h=h0, initial_c=c0, P=P)

    def raises(error, match, **changes):
        arguments = {**good, **changes}
        with pytest.raises(error, match=match):
            lo.lstm(**arguments)

    raises(ValueError, "activations: unknown activation 'Swish'",
           activations=["Sigmoid", "Swish", "Tanh"])
    raises(ValueError, "activations must list 3", activations=["Sigmoid", "Tanh"])
    raises(ValueError, "activation_alpha: ScaledTanh needs a value",
           activations=["Sigmoid", "ScaledTanh", "Tanh"])
    raises(ValueError, "W must have shape", W=W[:, :-1])
    raises(ValueError, "W must have shape", W=W[None])
    raises(ValueError, "R must have shape", R=R[:, :, :-1])
    raises(ValueError, "B must have shape", B=B[:, :-1])
    raises(ValueError, "P must have shape", P=P[:, :-1])
    raises(ValueError, "sequence_lens must be in", sequence_lens=np.array([T + 1, 1, 1, 1, 1]))
    raises(ValueError, "sequence_lens must be in", sequence_lens=np.array([-1, 1, 1, 1, 1]))
    raises(ValueError, "sequence_lens must have shape", sequence_lens=np.array([1, 1]))
    raises(TypeError, "sequence_lens must hold integers", sequence_lens=seq.astype(float))
    raises(ValueError, "layout must be 0 or 1", layout=2)
    raises(ValueError, "hidden_size=12 is inconsistent with W", hidden_size=H + 1)
    raises(ValueError, "direction must be", direction="both")
    raises(ValueError, "direction must be", direction=["forward"])
    raises(TypeError, "activation_alpha must be a list of numbers",
           activations=["Sigmoid", "ScaledTanh", "Tanh"], activation_alpha=["x"])
    raises(TypeError, "activation_beta must be a list of numbers",
           activations=["Sigmoid", "ScaledTanh", "Tanh"], activation_alpha=[1.0],
           activation_beta=[None])
    raises(ValueError, "W must have shape", direction="bidirectional")
    raises(ValueError, "clip must be a number > 0", clip=-1.0)
    raises(ValueError, "clip must be a number > 0", clip=float("nan"))
    raises(ValueError, "clip must be a number > 0", clip=-float("inf"))
    raises(ValueError, "input_forget must be 0 or 1", input_forget=2)
    raises(ValueError, "initial_h must have shape", initial_h=h0[:, :2])
    raises(ValueError, "X must have shape", X=X[..., :-1])
    raises(TypeError, "X must be float16, float32 or float64", X=X.astype(np.int32))
    # Ragged nested lists: NumPy's own message would not say which input.
    raises(ValueError, "X could not be converted", X=[[[1.0, 2.0]], [[1.0]]])
    raises(ValueError, "W could not be converted", W=[[[1.0, 2.0], [3.0]]])
    raises(ValueError, "sequence_lens could not be converted", sequence_lens=[[1], [1, 2]])
    raises(ValueError, "initial_h could not be converted", initial_h=[[1.0], [1.0, 2.0]])
    with pytest.raises(ValueError, match="linear_before_reset must be 0 or 1"):
        lo.gru(X, W[:, :3 * H], R[:, :3 * H], linear_before_reset=5)
    with pytest.raises(ValueError, match="input_forget is an LSTM attribute"):
        lo.Operator("GRU", W[:, :3 * H], R[:, :3 * H], input_forget=1)
    raises(TypeError, "hidden_size must be an int, got 11.0", hidden_size=float(H))
    with pytest.raises(ValueError, match="activation_alpha must hold finite numbers"):
        lo.rnn(X, W[:, :H], R[:, :H], activations=["Affine"], activation_alpha=[10 ** 400])
    raises(TypeError, "hidden_size must be an int, got True", hidden_size=True)
    # The states must have X's dtype (the weights are converted to it).
    raises(TypeError, "initial_h must be float64 like the node's weights, got dtype float32",
           initial_h=h0.astype(np.float32))


def test_operator_dtype_checks(rng):
    X, W, R, B, seq, h0, c0, P = make_inputs(rng, "LSTM", direction="forward")
    # The dtype argument, not W, is what is wrong.
    for dtype, shown in ((np.int32, "int32"), ("bogus", "'bogus'")):
        with pytest.raises(TypeError, match=f"dtype must be float16, float32 or float64, "
                                            f"got .*{shown}"):
            lo.Operator("LSTM", W, R, dtype=dtype)
    with pytest.raises(TypeError, match="W must be float16, float32 or float64, got dtype "
                                        "int32"):
        lo.Operator("LSTM", W.astype(np.int32), R)
    assert lo.Operator("LSTM", W.astype(np.float16), R).dtype == np.float16
    node = lo.Operator("LSTM", W, R, B, P, dtype=np.float32)
    assert node.dtype == np.float32
    # X and the states must be the node's type, as ONNX's one type T has it:
    # no silent float16 upcast nor float64 downcast.
    for wrong in (np.float16, np.float64):
        with pytest.raises(TypeError, match=f"X must be float32 like the node's weights, "
                                            f"got dtype {np.dtype(wrong).name}"):
            node(X.astype(wrong))
    with pytest.raises(TypeError, match="initial_c must be float32 like the node's weights"):
        node(X.astype(np.float32), seq, h0.astype(np.float32), c0)
    Y, Y_h, Y_c = node(X.astype(np.float32), seq, h0.astype(np.float32), c0.astype(np.float32))
    assert Y.dtype == Y_h.dtype == Y_c.dtype == np.float32


@pytest.mark.parametrize("op,case", VARIANT_CASES)
def test_float16_runs_through_float32(op, case, rng):
    # float16 weights and inputs, computed in float32 (which holds them
    # exactly), outputs rounded to float16: within half a float16 ulp (plus
    # float32's error) of the float64 reference on the same float16 values.
    inputs = make_inputs(rng, op, peephole=VARIANTS[op][case].get("peephole", False))
    attributes = {k: v for k, v in VARIANTS[op][case].items() if k != "peephole"}
    attributes["direction"] = "bidirectional"
    half = [None if a is None else a if a.dtype.kind == "i" else a.astype(np.float16)
            for a in inputs]
    got = call(op, half, **attributes)
    expected = ref.onnx_forward(op, *[a if a is None or a.dtype.kind == "i" else
                                      a.astype(np.float64) for a in half], **attributes)
    for name, g, e in zip(("Y", "Y_h", "Y_c"), got, expected):
        assert g.dtype == np.float16 and g.shape == e.shape, name
        np.testing.assert_allclose(g, e, rtol=2 ** -11 + 1e-6, atol=1e-6, err_msg=name)


def test_float16_alpha_must_be_a_float32_number():
    # float16 nodes compute in float32, where 1e39 is inf; float64 ones take it.
    X, W, R, B, seq, h0 = make_inputs(np.random.default_rng(4), "RNN", direction="forward")
    for dtype, huge in ((np.float16, 1e39), (np.float32, 1e39), (np.float64, 1e300)):
        node = dict(activations=["Affine"], activation_alpha=[huge], activation_beta=[0.0])
        if dtype == np.float64:
            lo.Operator("RNN", W, R, dtype=dtype, **node)
            continue
        with pytest.raises(ValueError, match="alpha and beta of a layer computing in float32 "
                                             "must be finite as float32 values"):
            lo.Operator("RNN", W.astype(dtype), R.astype(dtype), **node)


def test_bfloat16_tensors_are_refused():
    # T is float16, float32 or float64 here: a bfloat16 X is not widened.
    torch = pytest.importorskip("torch")
    X, W, R, B, seq, h0, c0, P = make_inputs(np.random.default_rng(3), "LSTM",
                                             direction="forward")
    node = lo.Operator("LSTM", W, R, dtype=np.float32)
    bfloat16 = torch.from_numpy(X.astype(np.float32)).to(torch.bfloat16)
    with pytest.raises(TypeError, match="X could not be converted"):
        node(bfloat16)
    with pytest.raises(TypeError, match="X could not be converted"):
        lo.lstm(bfloat16, W, R)


def test_float16_overflow_gives_inf_without_a_warning(rng):
    # As ONNX Runtime: results past float16's range are inf.
    X = np.full((1, 1, 2), 200, np.float16)  # relu(2 * 200 * 300) > 65504
    W, R = np.full((1, 3, 2), 300, np.float16), np.full((1, 3, 3), 300, np.float16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Y, Y_h = lo.rnn(X, W, R, activations=["Relu"])
    assert Y.dtype == np.float16 and np.isinf(Y).all()


def test_import_needs_no_onnx():
    import subprocess
    import sys
    code = ("import sys; sys.modules['onnx'] = None; sys.modules['onnxruntime'] = None; "
            "import lstm_fast.onnx; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr


# ------------------------------------------------------------------ ONNX Runtime

def onnx_model(op, inputs, attributes, dtype=np.float32):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper
    names = ["X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P"][:len(inputs)]
    weights = {"W", "R", "B", "P"}
    element = {np.float16: TensorProto.FLOAT16, np.float32: TensorProto.FLOAT,
               np.float64: TensorProto.DOUBLE}[dtype]
    graph_inputs, initializers, feeds = [], [], {}
    for name, array in zip(names, inputs):
        if array is None:
            continue
        if name in weights:
            initializers.append(numpy_helper.from_array(array.astype(dtype), name))
        else:
            kind = TensorProto.INT32 if name == "sequence_lens" else element
            graph_inputs.append(helper.make_tensor_value_info(name, kind, array.shape))
            feeds[name] = array.astype(np.int32 if name == "sequence_lens" else dtype)
    outputs = ["Y", "Y_h", "Y_c"][:3 if op == "LSTM" else 2]
    node = helper.make_node(op, [n if a is not None else "" for n, a in zip(names, inputs)],
                            outputs, name=f"{op.lower()}_node", **attributes)
    graph = helper.make_graph(
        [node], "g", graph_inputs,
        [helper.make_tensor_value_info(o, element, None) for o in outputs], initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    return model, feeds


ORT_CASES = [
    ("LSTM", {}), ("LSTM", {"clip": 0.6}), ("LSTM", {"input_forget": 1}),
    ("LSTM", {"activations": ["HardSigmoid", "LeakyRelu", "Softsign"] * 2,
              "activation_alpha": [0.3, 0.1, 0.25, 0.2], "activation_beta": [0.4, 0.5]}),
    ("GRU", {}), ("GRU", {"linear_before_reset": 1}), ("GRU", {"clip": 0.5}),
    ("GRU", {"activations": ["Softsign", "Elu", "Sigmoid", "Softplus"]}),
    ("RNN", {}), ("RNN", {"activations": ["Relu", "Affine"], "activation_alpha": [0.5],
                          "activation_beta": [0.1]}),
]


@pytest.mark.parametrize("dtype, tolerance", [
    (np.float32, {"rtol": 1e-4, "atol": 2e-5}),
    # Both compute float16 in float32: one float16 ulp apart at most.
    (np.float16, {"rtol": 0, "atol": 1e-3}),
], ids=["float32", "float16"])
@pytest.mark.parametrize("op,attributes", ORT_CASES)
def test_matches_onnxruntime(op, attributes, dtype, tolerance, rng):
    ort = pytest.importorskip("onnxruntime")
    inputs = make_inputs(rng, op)
    inputs[4] = np.array([T, 3, 1, T, 2])  # ONNX Runtime: lengths of at least 1
    attributes = dict(attributes, direction="bidirectional", hidden_size=H)
    model, feeds = onnx_model(op, inputs, attributes, dtype)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = session.run(None, feeds)
    got = call(op, [None if a is None else a.astype(dtype) if a.dtype.kind == "f" else a
                    for a in inputs], **attributes)
    for g, e in zip(got, expected):
        assert g.dtype == e.dtype == dtype
        np.testing.assert_allclose(g, e, **tolerance)


def test_load_model_file(tmp_path, rng):
    pytest.importorskip("onnx")
    inputs = make_inputs(rng, "GRU")
    attributes = {"direction": "bidirectional", "hidden_size": H, "clip": 0.75,  # exact in float32
                  "activations": ["Sigmoid", "Tanh", "HardSigmoid", "Softsign"]}
    model, _ = onnx_model("GRU", inputs, attributes, dtype=np.float64)
    path = tmp_path / "gru.onnx"
    path.write_bytes(model.SerializeToString())
    operators = lo.load(str(path))
    assert list(operators) == ["gru_node"]
    X, _, _, _, seq, h0 = inputs
    got = operators["gru_node"](X, seq, h0)
    expected = ref.onnx_forward("GRU", *inputs, **attributes)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, **tol(np.float64))


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_load_model_exported_from_torch(kind):
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    import io
    import warnings
    torch.manual_seed(0)
    module = getattr(torch.nn, kind)(5, 7, bidirectional=True)
    x = torch.randn(6, 3, 5)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(module, (x,), buffer, dynamo=False, opset_version=14)
        except Exception as error:  # an exporter this torch build lacks
            pytest.skip(f"torch.onnx.export unavailable: {error}")
    operators = lo.load(buffer.getvalue())
    assert len(operators) == 1
    (operator,) = operators.values()
    got = operator(x.numpy())                        # Y (T, D, B, H), Y_h[, Y_c] (D, B, H)
    with torch.no_grad():
        y, states = module(x)                        # y (T, B, D*H)
    states = states if kind == "LSTM" else (states,)
    assert len(got) == 1 + len(states)
    np.testing.assert_allclose(got[0].transpose(0, 2, 1, 3).reshape(6, 3, 14), y.numpy(),
                               rtol=1e-4, atol=1e-5)
    for g, e in zip(got[1:], states):
        np.testing.assert_allclose(g, e.numpy(), rtol=1e-4, atol=1e-5)


def test_load_constant_node_weights_and_unnamed_nodes(rng):
    # Weights as Constant nodes (W, R of the LSTM) next to an initializer (B),
    # and nodes without names: each is keyed op_type_index, its index in the
    # graph's node list (the Constant nodes count).
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper
    X, W, R, B, _, h0, c0, P = make_inputs(rng, "LSTM", direction="reverse", layout=1)
    gX, gW, gR = make_inputs(rng, "GRU")[:3]
    arrays = {"W": W, "R": R, "B": B, "P": P, "gW": gW, "gR": gR}
    constant = {name: numpy_helper.from_array(arrays[name].astype(np.float32)) for name in arrays}
    nodes = [
        helper.make_node("Constant", [], ["W"], value=constant["W"]),
        helper.make_node("Constant", [], ["R"], value=constant["R"]),
        helper.make_node("Constant", [], ["P"], value=constant["P"]),
        helper.make_node("LSTM", ["X", "W", "R", "B", "", "h0", "c0", "P"], ["Y", "Y_h", "Y_c"],
                         hidden_size=H, direction="reverse", layout=1, clip=1.5),
        helper.make_node("Constant", [], ["gW"], value=constant["gW"]),
        helper.make_node("GRU", ["gX", "gW", "gR"], ["gY", "gY_h"], hidden_size=H,
                         direction="bidirectional", linear_before_reset=1),
    ]
    element = TensorProto.FLOAT
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info(name, element, a.shape)
         for name, a in (("X", X), ("h0", h0), ("c0", c0), ("gX", gX))],
        [helper.make_tensor_value_info(name, element, None) for name in ("Y", "gY")],
        initializer=[numpy_helper.from_array(B.astype(np.float32), "B"),
                     numpy_helper.from_array(gR.astype(np.float32), "gR")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    operators = lo.load(model)
    assert list(operators) == ["LSTM_3", "GRU_5"]

    f32 = [a.astype(np.float32) for a in (X, W, R, B, h0, c0, P)]
    got = operators["LSTM_3"](f32[0], None, f32[4], f32[5])
    expected = ref.onnx_forward("LSTM", f32[0], *f32[1:4], None, *f32[4:], direction="reverse",
                                layout=1, clip=1.5)
    assert len(got) == 3
    for name, g, e in zip(("Y", "Y_h", "Y_c"), got, expected):
        assert g.dtype == np.float32, name
        np.testing.assert_allclose(g, e, err_msg=name, **tol(np.float32))
    gX32, gW32, gR32 = (a.astype(np.float32) for a in (gX, gW, gR))
    got = operators["GRU_5"](gX32)
    expected = ref.onnx_forward("GRU", gX32, gW32, gR32, direction="bidirectional",
                                linear_before_reset=1)
    assert len(got) == 2
    for name, g, e in zip(("Y", "Y_h"), got, expected):
        np.testing.assert_allclose(g, e, err_msg=name, **tol(np.float32))


def _single_node_model(op, inputs, node_attributes, constant_data=(), name="node",
                       extra_initializers=()):
    """A one-node model: weights as initializers, the data inputs named in
    constant_data as initializers too, the others graph inputs."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper
    names = ["X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P"][:len(inputs)]
    initializers, graph_inputs = list(extra_initializers), []
    for key, array in zip(names, inputs):
        if array is None:
            continue
        if key in ("W", "R", "B", "P") or key in constant_data:
            dtype = np.int32 if key == "sequence_lens" else np.float32
            initializers.append(numpy_helper.from_array(array.astype(dtype), key))
        else:
            graph_inputs.append(helper.make_tensor_value_info(key, TensorProto.FLOAT, array.shape))
    outputs = ["Y", "Y_h", "Y_c"][:3 if op == "LSTM" else 2]
    node = helper.make_node(op, [n if a is not None else "" for n, a in zip(names, inputs)],
                            outputs, name=name, **node_attributes)
    graph = helper.make_graph([node], "g", graph_inputs,
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None)
                               for o in outputs], initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    return model


def test_load_uses_constant_data_inputs(rng):
    # initial_h / initial_c / sequence_lens stored in the model are the
    # node's inputs when a call leaves them out; given ones still win.
    inputs = make_inputs(rng, "LSTM", direction="forward")
    inputs = [a.astype(np.float32) if a is not None and a.dtype.kind == "f" else a for a in inputs]
    X, _, _, _, seq, h0, c0, _ = inputs
    model = _single_node_model("LSTM", inputs, {"hidden_size": H},
                               constant_data=("sequence_lens", "initial_h", "initial_c"))
    (operator,) = lo.load(model.SerializeToString()).values()
    assert sorted(operator.constant_inputs) == ["initial_c", "initial_h", "sequence_lens"]
    expected = call("LSTM", inputs)
    for g, e in zip(operator(X), expected):
        np.testing.assert_array_equal(g, e)
    other_h0 = np.zeros_like(h0)
    for g, e in zip(operator(X, initial_h=other_h0),
                    lo.lstm(X, *inputs[1:5], other_h0, c0, inputs[7])):
        np.testing.assert_array_equal(g, e)


def test_load_refuses_clashing_node_names(rng):
    onnx = pytest.importorskip("onnx")
    from onnx import helper
    inputs = make_inputs(rng, "GRU", direction="forward")[:3]
    model = _single_node_model("GRU", inputs, {"hidden_size": H}, name="GRU_1")
    # An unnamed second GRU at index 1 would be keyed GRU_1 as well: it gets
    # a suffix (the model is valid; ONNX Runtime runs it).
    model.graph.node.append(helper.make_node("GRU", ["X", "W", "R"], ["Y2", "Y2_h"],
                                             hidden_size=H, linear_before_reset=1))
    operators = lo.load(model)
    assert list(operators) == ["GRU_1", "GRU_1_1"]
    X = inputs[0].astype(np.float32)
    cast = [a.astype(np.float32) for a in inputs]
    for g, e in zip(operators["GRU_1_1"](X), call("GRU", cast, linear_before_reset=1)):
        np.testing.assert_array_equal(g, e)
    model.graph.node[1].name = "GRU_1"  # a plain duplicate name
    with pytest.raises(ValueError, match="two recurrent nodes of the model are called 'GRU_1'"):
        lo.load(model)


def test_load_checks_attributes(rng):
    pytest.importorskip("onnx")
    inputs = make_inputs(rng, "RNN", direction="forward")[:3]
    model = _single_node_model("RNN", inputs, {"hidden_size": H, "dtype": "float64"}, name="r")
    with pytest.raises(ValueError, match=r"node r: RNN has no attribute\(s\) \['dtype'\]"):
        lo.load(model)
    # Opset 1's output_sequence changes nothing here (Y is always computed);
    # opsets from 7 on have no such attribute.
    model = _single_node_model("RNN", inputs, {"hidden_size": H, "output_sequence": 0}, name="r")
    with pytest.raises(ValueError, match="attribute output_sequence exists in opset 1 to 6, "
                                         "and the model's opset is 14"):
        lo.load(model)
    model.opset_import[0].version = 1
    X = inputs[0].astype(np.float32)
    for g, e in zip(lo.load(model)["r"](X), call("RNN", [a.astype(np.float32) for a in inputs])):
        np.testing.assert_array_equal(g, e)
    # An Operator's own complaint names the node.
    model = _single_node_model("RNN", inputs, {"hidden_size": H + 1}, name="r")
    with pytest.raises(ValueError, match="node r: hidden_size=12 is inconsistent"):
        lo.load(model)


def test_load_refuses_what_onnx_refuses(rng):
    # Models onnx.checker and ONNX Runtime refuse: refused with the reason,
    # not run on a guess.
    onnx = pytest.importorskip("onnx")
    from onnx import helper, numpy_helper
    inputs = make_inputs(rng, "GRU", direction="forward")[:3]

    def model_with(change):
        model = _single_node_model("GRU", inputs, {"hidden_size": H}, name="g")
        change(model)
        return model

    def retyped_r(model):  # R double where W is float: one type T
        model.graph.initializer[1].CopyFrom(numpy_helper.from_array(inputs[2], "R"))

    def extra_input(model):  # a GRU has no initial_c (position 6) nor P
        model.graph.node[0].input.extend(["", "", "", "X"])

    def alpha_not_a_list(model):
        model.graph.node[0].attribute.append(helper.make_attribute("activation_alpha", 0.5))

    def activations_not_a_list(model):
        model.graph.node[0].attribute.append(helper.make_attribute("activations", "Tanh"))

    def no_r(model):
        del model.graph.node[0].input[2]

    def old_opset_layout(model):
        model.graph.node[0].attribute.append(helper.make_attribute("layout", 0))
        model.opset_import[0].version = 7

    for change, error, match in [
        (retyped_r, TypeError, r"node g: R must have W's type \(float32\): an ONNX node has "
                               r"one type T .* got float64"),
        (extra_input, ValueError, "node g: GRU takes at most 6 inputs, got 7"),
        (alpha_not_a_list, ValueError, "node g: attribute activation_alpha must be of type "
                                       "FLOATS, got FLOAT"),
        (activations_not_a_list, ValueError, "attribute activations must be of type STRINGS, "
                                             "got STRING"),
        (no_r, ValueError, r"node g: input R \(position 2\) is required"),
        (old_opset_layout, ValueError, "attribute layout exists in opset 14 on, and the "
                                       "model's opset is 7"),
    ]:
        with pytest.raises(error, match=match):
            lo.load(model_with(change))
    with pytest.raises(TypeError, match="model must be a path, a file, bytes or an "
                                        "onnx.ModelProto, got int"):
        lo.load(0)
    assert isinstance(lo.load(model_with(lambda model: None))["g"], lo.Operator)


def test_load_refuses_int64_sequence_lens(rng):
    # The schema's T1 is int32; ONNX Runtime refuses int64 lengths too.
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper
    inputs = make_inputs(rng, "RNN", direction="forward")[:5]
    model = _single_node_model("RNN", inputs, {"hidden_size": H}, name="r",
                               constant_data=("sequence_lens",))
    lengths = next(t for t in model.graph.initializer if t.name == "sequence_lens")
    lengths.CopyFrom(numpy_helper.from_array(inputs[4].astype(np.int64), "sequence_lens"))
    with pytest.raises(TypeError, match="node r: sequence_lens must be int32 .* got int64"):
        lo.load(model)


def test_load_converts_only_what_recurrent_nodes_read(tmp_path, rng):
    # An unrelated tensor kept in an external file: loading the model from
    # bytes (without that file) still works, the GRU's weights being inline.
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper
    inputs = make_inputs(rng, "GRU", direction="forward")[:3]
    table = numpy_helper.from_array(np.zeros((1000, 100), np.float32), "embedding")
    model = _single_node_model("GRU", inputs, {"hidden_size": H}, name="g",
                               extra_initializers=[table])
    path = tmp_path / "m.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="data.bin", size_threshold=100_000)
    X = inputs[0].astype(np.float32)
    want = call("GRU", [a.astype(np.float32) for a in inputs])
    for source in (str(path), path.read_bytes()):
        for g, e in zip(lo.load(source)["g"](X), want):
            np.testing.assert_array_equal(g, e)


def test_clip_inf_is_no_clip(rng):
    inputs = [None if a is None else (a if a.dtype.kind == "i" else a.astype(np.float32))
              for a in make_inputs(rng, "LSTM")]
    both = {"direction": "bidirectional"}
    plain = call("LSTM", inputs, **both)
    # An int past the float range bounds nothing either (float() of it raises).
    for clip in (float("inf"), 10 ** 400):
        for g, e in zip(call("LSTM", inputs, clip=clip, **both), plain):
            np.testing.assert_array_equal(g, e)


@pytest.mark.parametrize("op", list(OPS))
def test_zero_length_sequence_keeps_initial_state(op, rng):
    # Documented departure from ONNX Runtime (which returns zeros): no steps
    # leave a sequence in its initial state.
    inputs = make_inputs(rng, op)
    inputs[4] = np.array([T, 0, 2, 0, 1])
    got = call(op, inputs, direction="bidirectional")
    for state, initial in zip(got[1:], inputs[5:7]):
        np.testing.assert_array_equal(state[:, [1, 3]], initial[:, [1, 3]])
    np.testing.assert_array_equal(got[0][:, :, [1, 3]], 0.0)


def test_load_weights_through_identity_nodes(rng):
    # torch's exporter passes shared weights through Identity nodes.
    onnx = pytest.importorskip("onnx")
    from onnx import helper
    inputs = make_inputs(rng, "GRU", direction="forward")[:3]
    model = _single_node_model("GRU", inputs, {"hidden_size": H}, name="g")
    model.graph.node[0].input[2] = "R_shared"
    model.graph.node.insert(0, helper.make_node("Identity", ["R"], ["R_shared"]))
    X = inputs[0].astype(np.float32)
    for g, e in zip(lo.load(model)["g"](X), call("GRU", [a.astype(np.float32) for a in inputs])):
        np.testing.assert_array_equal(g, e)


def test_small_input_checks(rng):
    X, W, R = make_inputs(rng, "RNN", direction="forward")[:3]
    with pytest.raises(ValueError, match=r"W must have input_size >= 1"):
        lo.rnn(X[:, :, :0], W[:, :, :0], R)
    # sequence_lens=[] for a batch of 0 (numpy reads [] as float64).
    Y, Y_h = lo.rnn(X[:, :0], W, R, sequence_lens=[])
    assert Y.shape == (T, 1, 0, H) and Y_h.shape == (1, 0, H)
