"""Keras 3 LSTM, GRU and SimpleRNN weights -> lstm_fast layers (keras is never imported).

Keras keeps matrices transposed, (input, gates*units), with gate blocks LSTM
i, f, c, o (torch's order) and GRU z, r, h (torch has r, z, n). A GRU with
reset_after=True (Keras's default) is torch's GRU with bias (2, 3*units)
= [input bias, recurrent bias]; reset_after=False applies the reset before
the recurrent product and has one bias (3*units,), which runs as the
engine's reset-before variant. The layers built here are batch_first, as
Keras's inputs are (batch, time, features).

Use it through LSTM.from_keras, GRU.from_keras and RNN.from_keras; a
keras.layers.RNN of one LSTMCell / GRUCell / SimpleRNNCell (alone or as a
stack of one) is read as the layer of that cell.
"""
import numpy as np

# Keras activation names -> the engine's (name, alpha, beta). Keras 3's
# hard_sigmoid is relu6(x + 3) / 6, i.e. HardSigmoid with alpha 1/6, beta 0.5.
_ACTIVATIONS = {
    "sigmoid": ("sigmoid", 0.0, 0.0),
    "tanh": ("tanh", 0.0, 0.0),
    "relu": ("relu", 0.0, 0.0),
    "linear": ("affine", 1.0, 0.0),
    "hard_sigmoid": ("hardsigmoid", 1.0 / 6.0, 0.5),
    "softsign": ("softsign", 0.0, 0.0),
    "softplus": ("softplus", 0.0, 0.0),
    "elu": ("elu", 1.0, 0.0),
}
_OWN = {"LSTM": ("sigmoid", "tanh", "tanh"), "GRU": ("sigmoid", "tanh"), "RNN": ("tanh",)}
# The Keras class each lstm_fast class copies, and the Keras recurrent classes
# (by name, keras is never imported) whose weights look alike but mean
# something else: wrappers hold a cell or a layer per direction.
_KERAS_CLASS = {"LSTM": "LSTM", "GRU": "GRU", "RNN": "SimpleRNN"}
_KERAS_RECURRENT = {"LSTM", "GRU", "SimpleRNN", "RNN", "Bidirectional", "LSTMCell", "GRUCell",
                    "SimpleRNNCell", "StackedRNNCells", "ConvLSTM1D", "ConvLSTM2D", "ConvLSTM3D"}


class Default:
    """A from_keras default that a caller did not override: with a layer, the
    layer's configuration gives these values, so an explicit one is an error,
    not silently ignored. Shows as the value itself in help()."""

    def __init__(self, value):
        self.value = value

    def __repr__(self):
        return repr(self.value)


def _activation(argument, value):
    # None: Keras's own spelling of the identity (keras.activations.get(None)).
    name = "linear" if value is None else (
        value if isinstance(value, str) else getattr(value, "__name__", None))
    if name not in _ACTIVATIONS:
        raise ValueError(
            f"{argument}={value!r} is not supported; supported Keras activations: "
            f"{', '.join(_ACTIVATIONS)}"
        )
    return _ACTIVATIONS[name]


def _array(name, value):
    # layers' conversion (it refuses masked values, takes torch tensors);
    # imported here because layers imports this module.
    from .layers import _to_numpy

    return _to_numpy(name, value)


def _matrix(name, value, rows, columns):
    array = _array(name, value)
    if array.dtype.kind != "f":
        raise TypeError(f"{name} must hold floating-point values, got dtype {array.dtype}")
    if array.ndim != 2 or (rows is not None and array.shape[0] != rows) or array.shape[1] != columns:
        expected = f"({rows if rows is not None else 'input_size'}, {columns})"
        raise ValueError(f"{name} must have shape {expected}, got {array.shape}")
    return array


def _gru_order(array):
    """Keras z, r, h blocks (last axis) -> torch r, z, n."""
    z, r, h = np.split(array, 3, axis=-1)
    return np.concatenate([r, z, h], axis=-1)


def build(cls, layer, kernel, recurrent_kernel, bias, activation, recurrent_activation,
          reset_after, dtype):
    """The body of LSTM/GRU/RNN.from_keras."""
    kind = cls._TORCH_CLASS
    settings = {"activation": activation, "recurrent_activation": recurrent_activation,
                "reset_after": reset_after}
    if layer is not None:
        if kernel is not None or recurrent_kernel is not None or bias is not None:
            raise TypeError("give either a Keras layer or kernel/recurrent_kernel/bias, not both")
        given = [name for name, value in settings.items() if not isinstance(value, Default)]
        if given:
            raise TypeError(f"{', '.join(given)}: a Keras layer's configuration gives these; "
                            f"pass them only with raw arrays")
        try:
            config = layer.get_config()
            weights = layer.get_weights()
        except AttributeError as error:
            raise TypeError(f"layer does not look like a Keras recurrent layer: {error}") from error
        expected = _KERAS_CLASS[kind]
        found = {klass.__name__ for klass in type(layer).__mro__} & _KERAS_RECURRENT
        cell = config.get("cell")
        if "cell" in config and expected not in found and "layer" not in config:
            # keras.layers.RNN(LSTMCell(...)): the layer of that cell, with the
            # cell's configuration under the RNN's (go_backwards, stateful).
            cell_class = cell.get("class_name") if isinstance(cell, dict) else None
            inner = cell.get("config", {}).get("cells") if cell_class == "StackedRNNCells" else None
            if isinstance(inner, list) and len(inner) == 1 and isinstance(inner[0], dict):
                # RNN([cell]): a stack of one cell is that cell.
                cell = inner[0]
                cell_class = cell.get("class_name")
            if cell_class != expected + "Cell" or not isinstance(cell.get("config"), dict):
                raise ValueError(
                    f"layer must be a keras.layers.{expected} or an RNN of one "
                    f"{expected}Cell, got an RNN of {cell_class or type(cell).__name__} (for "
                    f"a stack of several cells, copy each cell's arrays)"
                )
            config = {**{key: value for key, value in config.items() if key != "cell"},
                      **cell["config"]}
        elif (found and expected not in found) or "cell" in config or "layer" in config:
            raise ValueError(
                f"layer must be a keras.layers.{expected}, got a {type(layer).__name__} (for "
                f"a Bidirectional wrapper, copy the inner layer or its arrays)"
            )
        if "time_major" in config:
            raise ValueError("Keras 2 (tf.keras) layers are not supported, only Keras 3's")
        if config.get("go_backwards"):
            raise ValueError("Keras layers with go_backwards=True are not supported")
        if config.get("stateful"):
            raise ValueError("stateful Keras layers are not supported: pass the state as hx")
        use_bias = config.get("use_bias", True)
        if len(weights) != (3 if use_bias else 2):
            raise ValueError(f"layer must hold {3 if use_bias else 2} weight arrays (kernel, "
                             f"recurrent_kernel{', bias' if use_bias else ''}), got {len(weights)}")
        # No defaults: a config without these keys is not a layer this module knows.
        keys = ["activation"] + (["recurrent_activation"] if kind != "RNN" else [])
        keys += ["reset_after"] if kind == "GRU" else []
        missing = [key for key in keys if key not in config]
        if missing:
            raise ValueError(f"layer's config has no {', '.join(missing)}: not a Keras 3 "
                             f"{expected}")
        kernel, recurrent_kernel = weights[0], weights[1]
        bias = weights[2] if use_bias else None
        activation = config["activation"]
        recurrent_activation = config.get("recurrent_activation", "sigmoid")
        reset_after = config.get("reset_after", True)
    else:
        # A setting the layer kind does not have is an error, not ignored:
        # SimpleRNN has no recurrent_activation, only the GRU reset_after.
        foreign = [name for name, value in settings.items() if not isinstance(value, Default)
                   and (name == "recurrent_activation" and kind == "RNN"
                        or name == "reset_after" and kind != "GRU")]
        if foreign:
            raise TypeError(f"{', '.join(foreign)}: a Keras {_KERAS_CLASS[kind]} has no such "
                            f"setting")
        activation, recurrent_activation, reset_after = (
            value.value if isinstance(value, Default) else value for value in settings.values())
    if kernel is None or recurrent_kernel is None:
        raise TypeError("from_keras needs a Keras layer, or kernel and recurrent_kernel")

    gates = {"LSTM": 4, "GRU": 3, "RNN": 1}[kind]
    recurrent_kernel = _array("recurrent_kernel", recurrent_kernel)
    if recurrent_kernel.ndim != 2:
        multiple = f"{gates} * units" if gates > 1 else "units"
        raise ValueError(f"recurrent_kernel must have shape (units, {multiple}), "
                         f"got {recurrent_kernel.shape}")
    units = recurrent_kernel.shape[0]
    recurrent_kernel = _matrix("recurrent_kernel", recurrent_kernel, units, gates * units)
    kernel = _matrix("kernel", kernel, None, gates * units)
    if dtype is None:
        dtype = np.float64 if kernel.dtype == np.float64 else np.float32
    # Strict: a truthy string such as "False" must not mean True.
    if kind == "GRU" and not isinstance(reset_after, (bool, np.bool_)):
        raise TypeError(f"reset_after must be a bool, got {reset_after!r}")
    reset_after = bool(reset_after)
    if bias is not None:
        bias = _array("bias", bias)
        if bias.dtype.kind != "f":
            raise TypeError(f"bias must hold floating-point values, got dtype {bias.dtype}")
        expected = (2, 3 * units) if kind == "GRU" and reset_after else (gates * units,)
        if bias.shape != expected:
            raise ValueError(f"bias must have shape {expected}, got {bias.shape}")

    roles = [_activation("recurrent_activation", recurrent_activation)] if kind != "RNN" else []
    roles.append(_activation("activation", activation))
    if kind == "LSTM":
        roles.append(roles[-1])
    variant = {}
    names = tuple(role[0] for role in roles)
    nonlinearity = "tanh"
    if kind == "RNN" and names == ("relu",):
        nonlinearity = "relu"
    elif names != _OWN[kind]:
        variant["activations"] = [roles]
    if kind == "GRU" and not reset_after:
        variant["reset_before_product"] = True

    order = _gru_order if kind == "GRU" else (lambda a: a)
    state = {"weight_ih_l0": order(kernel).T, "weight_hh_l0": order(recurrent_kernel).T}
    if bias is not None:
        if kind == "GRU" and reset_after:
            state["bias_ih_l0"], state["bias_hh_l0"] = order(bias[0]), order(bias[1])
        else:
            state["bias_ih_l0"], state["bias_hh_l0"] = order(bias), np.zeros_like(bias)
    arguments = dict(batch_first=True, bias=bias is not None, dtype=dtype, variant=variant or None)
    if kind == "RNN":
        arguments["nonlinearity"] = nonlinearity
    module = cls(kernel.shape[0], units, **arguments)
    module.load_state_dict(state)
    return module
