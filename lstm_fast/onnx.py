"""ONNX's LSTM, GRU and RNN operators on lstm_fast's engine.

`lstm`, `gru` and `rnn` take the operators' inputs in the operators' order
(optional ones as None) and their attributes as keyword arguments with the
operators' names and defaults (opset 22), and return the operators' outputs.
Unlike ONNX Runtime they also run `layout=1` and float64. float16 runs in
float32 on the float16 weights and inputs, its outputs rounded to float16.

`load(model)` builds an `Operator` for every LSTM/GRU/RNN node of an ONNX
model (needs the onnx package; this module itself does not).

ONNX conventions, converted here to the engine's torch order: LSTM gates
i, o, f, c and peepholes P = [Pi, Po, Pf]; GRU gates z, r, h; B = [Wb, Rb].
Points the specification leaves open follow ONNX Runtime: `clip` bounds the
inputs of the gate activations, not the cell state fed to h; `input_forget=1`
sets f = 1 - i; `activation_alpha`/`activation_beta` are consumed in order by
the activations that take them. Two points depart from ONNX Runtime on
purpose:
- An activation without a value in activation_alpha/beta gets the default
  of the ONNX operator of the same name, as the specification says
  (LeakyRelu 0.01, ThresholdedRelu 1.0, HardSigmoid 0.2/0.5, Elu 1.0,
  Affine 1.0/0.0; ScaledTanh has none, so it needs both given). ONNX Runtime
  1.31 does so for LeakyRelu, HardSigmoid and Elu but uses 0 for Affine,
  ThresholdedRelu and ScaledTanh (Affine then outputs zeros).
- A sequence of length 0 (sequence_lens, or seq_length 0) ends in its
  initial state (Y_h = initial_h, Y_c = initial_c, zeros when absent), the
  state after no steps, as TensorFlow and lstm_fast's layers have it (torch
  refuses length 0); ONNX Runtime returns zeros.
"""
import numbers
import os
import sys

import numpy as np

from . import _config, _core
from ._config import resolve_isa
from .layers import _to_numpy

__all__ = ["lstm", "gru", "rnn", "Operator", "load", "ACTIVATIONS"]

# ONNX's names, as the operators spell them; matching is case-insensitive.
ACTIVATIONS = ("Relu", "Tanh", "Sigmoid", "Affine", "LeakyRelu", "ThresholdedRelu",
               "ScaledTanh", "HardSigmoid", "Elu", "Softsign", "Softplus")
_BY_LOWER = {name.lower(): name for name in ACTIVATIONS}
# Which activations take alpha / beta, with their operators' defaults (None:
# no default, the value must be given).
_PARAMS = {
    "affine": {"alpha": 1.0, "beta": 0.0},
    "leakyrelu": {"alpha": 0.01},
    "thresholdedrelu": {"alpha": 1.0},
    "scaledtanh": {"alpha": None, "beta": None},
    "hardsigmoid": {"alpha": 0.2, "beta": 0.5},
    "elu": {"alpha": 1.0},
}

_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
_DEFAULT_ACTIVATIONS = {"LSTM": ("Sigmoid", "Tanh", "Tanh"), "GRU": ("Sigmoid", "Tanh"),
                        "RNN": ("Tanh",)}
# ONNX gate block k of the engine's (torch's) gate order.
_TORCH_ORDER = {"LSTM": (0, 2, 3, 1), "GRU": (1, 0, 2), "RNN": (0,)}
_DIRECTIONS = {"forward": 1, "reverse": 1, "bidirectional": 2}
_TYPES = (np.float16, np.float32, np.float64)  # the operators' T


def _flag(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value not in (0, 1):
        raise ValueError(f"{name} must be 0 or 1, got {value!r}")
    return int(value)


def _array(name, value, dtype=None):
    # bfloat16 tensors are refused, not widened: T of these operators here
    # is float16, float32 or float64.
    array = _to_numpy(name, value, widen_bfloat16=False)
    if dtype is not None:
        if array.dtype.kind != "f":
            raise TypeError(f"{name} must hold floating-point values, got dtype {array.dtype}")
        array = array.astype(dtype, copy=False)
    return array


def _expect_shape(name, array, shape):
    if array.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {array.shape}")


def _floats(name, values):
    try:
        return [float(v) for v in (values if values is not None else ())]
    except OverflowError:  # an int past the float range
        raise ValueError(f"{name} must hold finite numbers, got {values!r}") from None
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a list of numbers, got {values!r}") from None


def _resolve_activations(op, activations, alphas, betas, num_directions):
    """Per direction, one (lower-case name, alpha, beta) per role."""
    roles = len(_DEFAULT_ACTIVATIONS[op])
    if activations is None:
        names = list(_DEFAULT_ACTIVATIONS[op]) * num_directions
    else:
        if isinstance(activations, str):
            raise TypeError("activations must be a list of names, got a str")
        names = list(activations)
        if len(names) != roles * num_directions:
            raise ValueError(
                f"activations must list {roles * num_directions} functions for {op} with "
                f"{num_directions} direction(s), got {len(names)}"
            )
    queues = {"alpha": _floats("activation_alpha", alphas), "beta": _floats("activation_beta", betas)}
    resolved = []
    for name in names:
        key = name.lower() if isinstance(name, str) else None
        if key not in _BY_LOWER:
            raise ValueError(
                f"activations: unknown activation {name!r}; expected one of {', '.join(ACTIVATIONS)}"
            )
        params = dict(_PARAMS.get(key, {}))
        for which in params:
            if queues[which]:
                params[which] = queues[which].pop(0)
            elif params[which] is None:
                raise ValueError(f"activation_{which}: {_BY_LOWER[key]} needs a value (it has no default)")
        resolved.append((key, params.get("alpha", 0.0), params.get("beta", 0.0)))
    return [resolved[d * roles:(d + 1) * roles] for d in range(num_directions)]


def _reverse_within_lengths(T, lengths):
    """Time index per (t, n) reversing each sequence inside its own length, so
    that a forward pass over the gathered input is that sequence's reverse
    pass; applied to the output it maps back (the map is its own inverse)."""
    t = np.arange(T)[:, None]
    ends = np.asarray(lengths, dtype=np.int64)[None, :]
    return np.where(t < ends, ends - 1 - t, t)


class Operator:
    """One ONNX LSTM/GRU/RNN node: converted and packed weights, called with the
    operator's data inputs (X, sequence_lens, initial_h[, initial_c]).

    Building it converts and packs W, R, B (and P) once; each call then only
    runs the recurrence. The arguments are those of lstm/gru/rnn.
    """

    def __init__(self, op, W, R, B=None, P=None, *, hidden_size=None, direction="forward",
                 layout=0, activations=None, activation_alpha=None, activation_beta=None,
                 clip=None, input_forget=0, linear_before_reset=0, dtype=None):
        if not isinstance(op, str) or op not in _GATES:
            raise ValueError(f"op must be LSTM, GRU or RNN, got {op!r}")
        if not isinstance(direction, str) or direction not in _DIRECTIONS:
            raise ValueError(
                f"direction must be forward, reverse or bidirectional, got {direction!r}"
            )
        self.op, self.direction = op, direction
        self.layout = _flag("layout", layout)
        input_forget = _flag("input_forget", input_forget)
        linear_before_reset = _flag("linear_before_reset", linear_before_reset)
        if input_forget and op != "LSTM":
            raise ValueError(f"input_forget is an LSTM attribute, not {op}'s")
        if linear_before_reset and op != "GRU":
            raise ValueError(f"linear_before_reset is a GRU attribute, not {op}'s")
        if clip is not None:
            if isinstance(clip, bool) or not isinstance(clip, numbers.Real) or not clip > 0:
                raise ValueError(f"clip must be a number > 0 (inf: no clip), got {clip!r}")
            # inf bounds nothing, as ONNX Runtime runs it; nor does an int
            # past the float range (float() would raise OverflowError).
            if clip > sys.float_info.max:
                clip = None

        W = _array("W", W)
        if dtype is None:
            if W.dtype not in _TYPES:
                raise TypeError(f"W must be float16, float32 or float64, got dtype {W.dtype}")
            dtype = W.dtype
        try:
            self.dtype = np.dtype(dtype)
        except TypeError:
            self.dtype = None
        if self.dtype not in _TYPES:
            raise TypeError(f"dtype must be float16, float32 or float64, got {dtype!r}")
        # What the engine runs: float16 goes through float32 (no float16
        # arithmetic in the kernels; float32 holds every float16 exactly).
        self._compute_dtype = np.dtype(np.float32) if self.dtype == np.float16 else self.dtype
        G, D = _GATES[op], _DIRECTIONS[direction]
        W = self._weight("W", W)
        if W.ndim != 3 or W.shape[0] != D or W.shape[1] % G or W.shape[1] == 0:
            raise ValueError(
                f"W must have shape [num_directions={D}, {G}*hidden_size, input_size], "
                f"got {W.shape}"
            )
        H, I = W.shape[1] // G, W.shape[2]
        if I == 0:
            raise ValueError(f"W must have input_size >= 1 (its last axis), got shape {W.shape}")
        if hidden_size is not None and (isinstance(hidden_size, bool)
                                        or not isinstance(hidden_size, numbers.Integral)):
            raise TypeError(f"hidden_size must be an int, got {hidden_size!r}")
        if hidden_size is not None and hidden_size != H:
            raise ValueError(
                f"hidden_size={hidden_size} is inconsistent with W of shape {W.shape} "
                f"(hidden_size {H})"
            )
        R = self._weight("R", R)
        _expect_shape("R", R, (D, G * H, H))
        if B is not None:
            B = self._weight("B", B)
            _expect_shape("B", B, (D, 2 * G * H))
        if P is not None:
            if op != "LSTM":
                raise ValueError(f"P (peepholes) is an LSTM input, not {op}'s")
            P = self._weight("P", P)
            _expect_shape("P", P, (D, 3 * H))
        self.hidden_size, self.input_size, self.num_directions = H, I, D
        # Data inputs a model file fixes as constants (see load): used by a
        # call that does not give them.
        self.constant_inputs = {}

        resolved = _resolve_activations(op, activations, activation_alpha, activation_beta, D)
        cell = op.lower()
        if op == "RNN":
            # Both directions plain Relu: the relu cell's own (fast) path.
            plain_relu = all(entry[0][0] == "relu" for entry in resolved)
            cell = "rnn_relu" if plain_relu else "rnn_tanh"

        def blocks(array, count):
            # ONNX gate blocks -> torch's order, along axis 0.
            size = array.shape[0] // count
            return np.ascontiguousarray(np.concatenate(
                [array[k * size:(k + 1) * size] for k in _TORCH_ORDER[op]]))

        weights = []
        for d in range(D):
            group = [blocks(W[d], G), blocks(R[d], G)]
            if B is not None:
                group += [blocks(B[d, :G * H], G), blocks(B[d, G * H:], G)]
            else:
                group += [None, None]
            group.append(None)
            if P is not None:
                p_i, p_o, p_f = P[d, :H], P[d, H:2 * H], P[d, 2 * H:]
                group.append(np.ascontiguousarray(np.concatenate([p_i, p_f, p_o])))
            weights.append(tuple(group))
        self._engine = _core.Engine(
            cell, I, H, 0, 1, D, B is not None, self._compute_dtype, resolve_isa(), weights,
            peephole=P is not None, coupled_input_forget=bool(input_forget),
            reset_before_product=op == "GRU" and not linear_before_reset,
            clip=0.0 if clip is None else float(clip),
            activations=None if resolved == _resolve_activations(op, None, None, None, D)
            else resolved,
        )

    def _weight(self, name, value):
        # Rounded to T first: what an ONNX model of type T holds.
        return _array(name, value, self.dtype).astype(self._compute_dtype, copy=False)

    def _data(self, name, value):
        # ONNX gives X, the weights and the states one type T: another dtype
        # is refused (as ONNX Runtime and torch do), not silently converted.
        array = _to_numpy(name, value, widen_bfloat16=False)
        if array.dtype != self.dtype:
            raise TypeError(f"{name} must be {self.dtype} like the node's weights, got dtype "
                            f"{array.dtype}")
        return array.astype(self._compute_dtype, copy=False)

    def __call__(self, X, sequence_lens=None, initial_h=None, initial_c=None):
        """Run the node. Returns (Y, Y_h, Y_c) for LSTM, (Y, Y_h) otherwise.
        Arguments left None take the node's constant_inputs, if any."""
        D, H = self.num_directions, self.hidden_size
        if self.constant_inputs:
            given = {"sequence_lens": sequence_lens, "initial_h": initial_h,
                     "initial_c": initial_c}
            for key, value in self.constant_inputs.items():
                if given[key] is None:
                    given[key] = value
            sequence_lens, initial_h, initial_c = (given["sequence_lens"], given["initial_h"],
                                                   given["initial_c"])
        X = self._data("X", X)
        if X.ndim != 3 or X.shape[2] != self.input_size:
            order = "[batch_size, seq_length" if self.layout else "[seq_length, batch_size"
            raise ValueError(f"X must have shape {order}, input_size={self.input_size}], "
                             f"got {X.shape}")
        x = X.transpose(1, 0, 2) if self.layout else X
        T, N = x.shape[0], x.shape[1]
        state_shape = (N, D, H) if self.layout else (D, N, H)

        def state(name, value):
            if value is None:
                return None
            array = self._data(name, value)
            _expect_shape(name, array, state_shape)
            return np.ascontiguousarray(array.transpose(1, 0, 2) if self.layout else array)

        h0 = state("initial_h", initial_h)
        if initial_c is not None and self.op != "LSTM":
            raise ValueError(f"initial_c is an LSTM input, not {self.op}'s")
        c0 = state("initial_c", initial_c)
        lengths = None
        if sequence_lens is not None:
            lengths = _to_numpy("sequence_lens", sequence_lens)
            if lengths.size == 0 and lengths.dtype.kind == "f":
                lengths = lengths.astype(np.int64)  # [] for a batch of 0: numpy calls it float
            if lengths.dtype.kind not in "iu":
                raise TypeError(f"sequence_lens must hold integers, got dtype {lengths.dtype}")
            if lengths.shape != (N,):
                raise ValueError(f"sequence_lens must have shape ({N},), got {lengths.shape}")
            if N and (lengths.min() < 0 or lengths.max() > T):
                raise ValueError(f"sequence_lens must be in [0, {T}] (seq_length), got values "
                                 f"from {lengths.min()} to {lengths.max()}")
            lengths = np.ascontiguousarray(lengths, dtype=np.int64)

        if self.direction == "reverse":
            index = _reverse_within_lengths(T, [T] * N if lengths is None else lengths)
            x = x[index, np.arange(N)[None, :]]
        x = np.ascontiguousarray(x)
        y, h_n, c_n = self._engine.forward(x, h0, c0, lengths, _config.thread_pool())
        if self.direction == "reverse":
            y = y[index, np.arange(N)[None, :]]
        Y = y.reshape(T, N, D, H).transpose(0, 2, 1, 3)  # [T, D, N, H]
        if self.layout:
            outputs = [Y.transpose(2, 0, 1, 3), h_n.transpose(1, 0, 2)]
            if c_n is not None:
                outputs.append(c_n.transpose(1, 0, 2))
        else:
            outputs = [Y, h_n] + ([c_n] if c_n is not None else [])
        with np.errstate(over="ignore"):  # to float16: inf, as ONNX Runtime's
            return tuple(np.ascontiguousarray(a, dtype=self.dtype) for a in outputs)


def _dtype_of(X):
    array = _to_numpy("X", X, widen_bfloat16=False)
    if array.dtype not in _TYPES:
        raise TypeError(f"X must be float16, float32 or float64, got dtype {array.dtype}")
    return array.dtype


def lstm(X, W, R, B=None, sequence_lens=None, initial_h=None, initial_c=None, P=None, *,
         activation_alpha=None, activation_beta=None, activations=None, clip=None,
         direction="forward", hidden_size=None, input_forget=0, layout=0):
    """ONNX LSTM: returns (Y, Y_h, Y_c) in X's dtype (float16, float32 or float64).

    Shapes (layout=0): X [seq_length, batch_size, input_size]; W
    [num_directions, 4*hidden_size, input_size]; R [num_directions,
    4*hidden_size, hidden_size]; B [num_directions, 8*hidden_size]; P
    [num_directions, 3*hidden_size]; initial_h, initial_c, Y_h, Y_c
    [num_directions, batch_size, hidden_size]; Y [seq_length, num_directions,
    batch_size, hidden_size]. layout=1 puts batch_size first in X, the states
    and Y. The weights are converted to X's dtype; the states must have it.
    """
    op = Operator("LSTM", W, R, B, P, hidden_size=hidden_size, direction=direction, layout=layout,
                  activations=activations, activation_alpha=activation_alpha,
                  activation_beta=activation_beta, clip=clip, input_forget=input_forget,
                  dtype=_dtype_of(X))
    return op(X, sequence_lens, initial_h, initial_c)


def gru(X, W, R, B=None, sequence_lens=None, initial_h=None, *, activation_alpha=None,
        activation_beta=None, activations=None, clip=None, direction="forward", hidden_size=None,
        layout=0, linear_before_reset=0):
    """ONNX GRU: returns (Y, Y_h). Shapes as lstm with 3*hidden_size gate rows
    and B [num_directions, 6*hidden_size]; linear_before_reset=1 is torch's GRU.
    The weights are converted to X's dtype; initial_h must have it."""
    op = Operator("GRU", W, R, B, hidden_size=hidden_size, direction=direction, layout=layout,
                  activations=activations, activation_alpha=activation_alpha,
                  activation_beta=activation_beta, clip=clip,
                  linear_before_reset=linear_before_reset, dtype=_dtype_of(X))
    return op(X, sequence_lens, initial_h)


def rnn(X, W, R, B=None, sequence_lens=None, initial_h=None, *, activation_alpha=None,
        activation_beta=None, activations=None, clip=None, direction="forward", hidden_size=None,
        layout=0):
    """ONNX RNN: returns (Y, Y_h). Shapes as lstm with hidden_size gate rows and
    B [num_directions, 2*hidden_size]. The weights are converted to X's dtype;
    initial_h must have it."""
    op = Operator("RNN", W, R, B, hidden_size=hidden_size, direction=direction, layout=layout,
                  activations=activations, activation_alpha=activation_alpha,
                  activation_beta=activation_beta, clip=clip, dtype=_dtype_of(X))
    return op(X, sequence_lens, initial_h)


# Input positions of the operators' optional inputs that load reads from
# constants: weights are required to be constant, data inputs may be.
_WEIGHT_INPUTS = {"LSTM": {1: "W", 2: "R", 3: "B", 7: "P"}, "GRU": {1: "W", 2: "R", 3: "B"},
                  "RNN": {1: "W", 2: "R", 3: "B"}}
_DATA_INPUTS = {"LSTM": {4: "sequence_lens", 5: "initial_h", 6: "initial_c"},
                "GRU": {4: "sequence_lens", 5: "initial_h"},
                "RNN": {4: "sequence_lens", 5: "initial_h"}}
# How many inputs each operator has (the last ones optional).
_MAX_INPUTS = {"LSTM": 8, "GRU": 6, "RNN": 6}
_REQUIRED_INPUTS = {0: "X", 1: "W", 2: "R"}
# The type each attribute has in the operators' schemas.
_ATTRIBUTE_TYPES = {"activation_alpha": "FLOATS", "activation_beta": "FLOATS",
                    "activations": "STRINGS", "clip": "FLOAT", "direction": "STRING",
                    "hidden_size": "INT", "input_forget": "INT", "layout": "INT",
                    "linear_before_reset": "INT", "output_sequence": "INT"}
# Attributes of some opsets only: (first, last) opset that has them.
_ATTRIBUTE_OPSETS = {"layout": (14, None), "output_sequence": (1, 6)}
# The attributes of each operator (opset 7 to 22) that Operator takes.
_ATTRIBUTES = {
    "LSTM": {"activation_alpha", "activation_beta", "activations", "clip", "direction",
             "hidden_size", "input_forget", "layout"},
    "GRU": {"activation_alpha", "activation_beta", "activations", "clip", "direction",
            "hidden_size", "layout", "linear_before_reset"},
    "RNN": {"activation_alpha", "activation_beta", "activations", "clip", "direction",
            "hidden_size", "layout"},
}
# Opset 1's output_sequence only said whether Y is an output; Y always is here.
_IGNORED_ATTRIBUTES = {"output_sequence"}


def load(model):
    """Operators for every LSTM, GRU and RNN node of an ONNX model.

    model: a path, the serialized model (bytes) or an onnx.ModelProto; the
    nodes of its main graph are read (not those inside If/Loop/Scan bodies
    or model functions). Weights (W, R, B, P) must be initializers or
    Constant nodes with a dense value (also through Identity nodes), of the
    one type T the operator gives weights and states; the data
    inputs (X, sequence_lens, initial_h, initial_c) are what the returned
    Operator is called with, except those the model fixes as constants, which
    the Operator keeps in constant_inputs and uses when a call leaves them
    out. Returns {node name: Operator}; an unnamed node is called
    op_type_index (its index in the graph's node list), with a suffix _1,
    _2, ... if a named node already has that name. Nodes that the operator
    schemas (of the model's opset) refuse are refused: too many or missing
    inputs, attributes of the wrong type or not in that opset, int64 lengths.
    Needs the onnx package.
    """
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as error:
        raise ImportError("lstm_fast.onnx.load needs the onnx package: pip install onnx") from error
    if isinstance(model, (bytes, bytearray, memoryview)):
        model = onnx.load_from_string(bytes(model))
    elif isinstance(model, (str, os.PathLike)) or callable(getattr(model, "read", None)):
        model = onnx.load(model)
    elif not isinstance(model, onnx.ModelProto):
        # (onnx.load would take an int as a file descriptor, and close it)
        raise TypeError(f"model must be a path, a file, bytes or an onnx.ModelProto, "
                        f"got {type(model).__name__}")
    graph = model.graph
    opset = next((entry.version for entry in model.opset_import
                  if entry.domain in ("", "ai.onnx")), None)
    # Tensors by name, converted only when a recurrent node reads them (a
    # model's other constants may be large, or stored elsewhere).
    constants = {tensor.name: tensor for tensor in graph.initializer}
    for node in graph.node:
        # (value_ints and the other list forms are int64 or 1-D: never a
        # valid input of these operators)
        if (node.op_type == "Constant" and node.domain in ("", "ai.onnx") and node.attribute
                and node.attribute[0].name == "value"):
            constants[node.output[0]] = node.attribute[0].t
    # Identity of a constant is that constant (torch's exporter passes shared
    # weights through Identity nodes). Nodes are in topological order.
    for node in graph.node:
        if (node.op_type == "Identity" and node.domain in ("", "ai.onnx") and node.input
                and node.input[0] in constants):
            constants[node.output[0]] = constants[node.input[0]]
    operators = {}
    node_names = {node.name for node in graph.node if node.name}
    for index, node in enumerate(graph.node):
        if node.op_type not in _GATES or node.domain not in ("", "ai.onnx"):
            continue
        if node.name:
            name = node.name
            if name in operators:  # (ONNX Runtime refuses such a model too)
                raise ValueError(f"two recurrent nodes of the model are called {name!r}; "
                                 "give the nodes unique names")
        else:
            # op_type_index, unless a named node has taken that: then a suffix.
            name = base = f"{node.op_type}_{index}"
            suffix = 0
            while name in node_names or name in operators:
                suffix += 1
                name = f"{base}_{suffix}"
        if len(node.input) > _MAX_INPUTS[node.op_type]:
            raise ValueError(f"node {name}: {node.op_type} takes at most "
                             f"{_MAX_INPUTS[node.op_type]} inputs, got {len(node.input)}")
        for position, key in _REQUIRED_INPUTS.items():
            if position >= len(node.input) or not node.input[position]:
                raise ValueError(f"node {name}: input {key} (position {position}) is required")
        weight_inputs, data_inputs = _WEIGHT_INPUTS[node.op_type], _DATA_INPUTS[node.op_type]
        arrays, data = {}, {}
        for position, key in {**weight_inputs, **data_inputs}.items():
            source = node.input[position] if position < len(node.input) else ""
            if not source:
                continue
            if source in constants:
                target = data if position in data_inputs else arrays
                target[key] = numpy_helper.to_array(constants[source])
            elif position in weight_inputs:
                raise ValueError(f"node {name}: input {key} ({source!r}) is not a constant "
                                 "lstm_fast reads (an initializer, or a Constant node's dense "
                                 "value)")
        # One type T for the weights and the states (ONNX's type constraint;
        # ONNX Runtime refuses such a model too), where Operator would cast.
        if "sequence_lens" in data and data["sequence_lens"].dtype != np.int32:
            raise TypeError(f"node {name}: sequence_lens must be int32 (the operator's T1), "
                            f"got {data['sequence_lens'].dtype}")
        for key, array in {**arrays, **data}.items():
            if key not in ("W", "sequence_lens") and array.dtype != arrays["W"].dtype:
                raise TypeError(f"node {name}: {key} must have W's type ({arrays['W'].dtype}): "
                                f"an ONNX node has one type T for its weights and states, "
                                f"got {array.dtype}")
        attributes = {}
        for attr in node.attribute:
            expected = _ATTRIBUTE_TYPES.get(attr.name)
            if expected is None:
                attributes[attr.name] = None  # (reported as unknown below)
                continue
            if attr.type != getattr(onnx.AttributeProto, expected):
                raise ValueError(f"node {name}: attribute {attr.name} must be of type "
                                 f"{expected}, got "
                                 f"{onnx.AttributeProto.AttributeType.Name(attr.type)}")
            first, last = _ATTRIBUTE_OPSETS.get(attr.name, (1, None))
            if opset is not None and not first <= opset <= (last or opset):
                until = f" to {last}" if last else " on"
                raise ValueError(f"node {name}: attribute {attr.name} exists in opset {first}"
                                 f"{until}, and the model's opset is {opset}")
            if attr.name not in _IGNORED_ATTRIBUTES:
                value = onnx.helper.get_attribute_value(attr)
                if attr.name == "direction":
                    value = value.decode()
                elif attr.name == "activations":
                    value = [a.decode() for a in value]
                attributes[attr.name] = value
        unknown = sorted(set(attributes) - _ATTRIBUTES[node.op_type])
        if unknown:
            raise ValueError(f"node {name}: {node.op_type} has no attribute(s) {unknown}; "
                             f"known: {', '.join(sorted(_ATTRIBUTES[node.op_type]))}")
        try:
            operator = Operator(node.op_type, **arrays, **attributes)
        except (TypeError, ValueError) as error:
            raise type(error)(f"node {name}: {error}") from error
        operator.constant_inputs = data
        operators[name] = operator
    return operators
