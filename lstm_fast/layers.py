"""LSTM, GRU and RNN layers and cells with torch.nn's interface, on NumPy arrays.

A module keeps its parameters in a dict of read-only arrays. The C engine that
runs them is built lazily from that dict, and a parameter change replaces the
engine instead of mutating it, so calls from several threads on one module are
safe.
"""
import math
import numbers
import os
import sys
import threading
import warnings
import weakref
from collections import deque, namedtuple
from collections.abc import Mapping, Sequence

import numpy as np

from . import _core
from . import _config
from . import keras as _keras
from ._config import resolve_isa

__all__ = ["LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell", "Stream"]

_GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}
# from_keras's defaults, told apart from the same values passed explicitly.
_KERAS_DEFAULT_ACTIVATION = _keras.Default("tanh")
_KERAS_DEFAULT_RECURRENT_ACTIVATION = _keras.Default("sigmoid")
_KERAS_DEFAULT_RESET_AFTER = _keras.Default(True)
_RNN_MODES = {"tanh": "RNN_TANH", "relu": "RNN_RELU"}
_FLOAT32 = np.dtype(np.float32)
_FLOAT64 = np.dtype(np.float64)

IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])
IncompatibleKeys.__doc__ = "Keys load_state_dict did not find, and keys it did not use (as torch)."


# Every module, for the fork hook below.
_MODULES_WITH_LOCKS = weakref.WeakSet()


def _after_fork_in_child():
    """The one fork hook. It runs before the child has other threads; the
    parent's other threads do not exist here, so whatever they held or were
    doing stays so for ever unless undone here: the thread pool's workers,
    streams they were stepping (marked torn until reset), and module locks
    held while building an engine."""
    _config.forget_pool_after_fork()
    _core.note_fork_in_child()
    for module in list(_MODULES_WITH_LOCKS):
        if module._lock.locked():
            # Held: maybe in _update_parameters between the new parameters
            # and dropping the engine built on the old ones. Drop it here.
            engine = module._engine
            if engine is not None:
                engine.supersede()
            module._engine = None
        module._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# ---------------------------------------------------------------- argument checks

def _check_int(name, value):
    # bool is an int subclass, but LSTM(4, 8, True) is a slipped positional
    # argument, not a layer count.
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} should be of type int, got: {type(value).__name__}")
    return int(value)


def _check_positive(name, value):
    value = _check_int(name, value)
    if value <= 0:
        raise ValueError(f"{name} must be greater than zero, got {value}")
    return value


def _check_bool(name, value):
    # Strict like torch: a number here is almost always a misplaced argument.
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} should be of type bool, got: {type(value).__name__}")
    return bool(value)


def _check_dtype(dtype):
    # numpy.dtype(None) is float64; here None is a mistake, not a default.
    try:
        resolved = None if dtype is None else np.dtype(dtype)
    except (TypeError, ValueError):
        resolved = None
    if resolved is None or resolved not in (_FLOAT32, _FLOAT64):
        raise TypeError(f"dtype must be numpy.float32 or numpy.float64, got {dtype!r}")
    return resolved


def _check_dropout(dropout, num_layers):
    if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real) or not 0 <= dropout <= 1:
        raise ValueError(
            "dropout should be a number in range [0, 1] representing the probability of an "
            f"element being zeroed, got {dropout!r}"
        )
    if dropout > 0 and num_layers == 1:
        # stacklevel 4: this function, _RNNBase.__init__, LSTM/GRU/RNN.__init__, the caller.
        warnings.warn(
            "dropout option adds dropout after all but last recurrent layer, so non-zero dropout "
            f"expects num_layers greater than 1, but got dropout={dropout} and "
            f"num_layers={num_layers}",
            stacklevel=4,
        )
    return float(dropout)


# Keyword arguments of _core.Engine that select a cell variant, with the value
# that means torch's cell.
_VARIANT_DEFAULTS = {
    "peephole": False,
    "coupled_input_forget": False,
    "reset_before_product": False,
    "clip": 0.0,
    "activations": None,
}


# The variant switches each cell kind has (clip and activations: all).
_VARIANT_SWITCHES = {"peephole": ("LSTM",), "coupled_input_forget": ("LSTM",),
                     "reset_before_product": ("GRU",)}


def _check_variant(variant, mode):
    """None, or a dict of the Engine's variant keywords that differ from torch's
    cell. The values themselves are checked by the engine, built at once."""
    if variant is None:
        return None
    if not isinstance(variant, Mapping):
        raise TypeError(f"variant must be None or a mapping, got {type(variant).__name__}")
    unknown = sorted(map(repr, set(variant) - set(_VARIANT_DEFAULTS)))  # (keys of any type)
    if unknown:
        raise ValueError(
            f"variant has unknown keys {', '.join(unknown)}; allowed: "
            f"{', '.join(_VARIANT_DEFAULTS)}"
        )
    for key in ("peephole", "coupled_input_forget", "reset_before_product"):
        # Strict: a truthy string such as "no" must not switch a variant on.
        if key in variant and not isinstance(variant[key], (bool, np.bool_)):
            raise TypeError(f"variant[{key!r}] must be a bool, got {variant[key]!r}")
        if variant.get(key) and mode not in _VARIANT_SWITCHES[key]:
            raise ValueError(f"variant[{key!r}] is an option of the "
                             f"{' and '.join(_VARIANT_SWITCHES[key])} cell, not of {mode}'s")
    activations = variant.get("activations")
    if activations is not None:
        # A frozen copy: the engine is rebuilt from it whenever a parameter
        # changes, so the caller's lists must not be able to change it later.
        try:
            frozen = tuple(tuple(role if isinstance(role, str) else tuple(role) for role in entry)
                           for entry in activations)
        except TypeError:
            raise TypeError(
                "variant['activations'] must hold one sequence per direction of "
                f"(name, alpha, beta) per role, got {activations!r}"
            ) from None
        variant = {**variant, "activations": frozen}
    clip = variant.get("clip", 0.0)
    if isinstance(clip, (bool, np.bool_)) or not isinstance(clip, numbers.Real):
        raise TypeError(f"variant['clip'] must be a real number (0: no clip), got {clip!r}")
    changed = {key: value for key, value in variant.items() if value != _VARIANT_DEFAULTS[key]}
    return changed or None


def _rnn_mode_of_activations(mode, variant):
    """(mode, variant) of an RNN whose variant activations (checked by the
    engine) are all plain relu or all plain tanh: RNN_RELU or RNN_TANH,
    without them."""
    names = {entry[0][0].lower() for entry in variant.get("activations") or ()}
    if len(names) != 1 or not names <= {"relu", "tanh"}:
        return mode, variant
    rest = {key: value for key, value in variant.items() if key != "activations"}
    return _rnn_mode(names.pop()), rest or None


def _rnn_mode(nonlinearity):
    mode = _RNN_MODES.get(nonlinearity) if isinstance(nonlinearity, str) else None
    if mode is None:
        raise ValueError(f"Unknown nonlinearity {nonlinearity!r}. Select from 'tanh' or 'relu'.")
    return mode


def _generator(seed):
    message = (
        f"seed must be None, a non-negative int or a numpy SeedSequence/Generator, got {seed!r}"
    )
    try:
        return np.random.default_rng(seed)
    except TypeError as error:
        raise TypeError(message) from error
    except ValueError as error:
        raise ValueError(message) from error


# ---------------------------------------------------------------- array conversion

def _is_row(value):
    """A sequence numpy.asarray reads element by element (str and bytes it
    does not)."""
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes, bytearray))


def _holds_masked_values(sequence, every_element):
    """Whether a sequence, nested or not, holds masked arrays with masked
    values: numpy.asarray would drop their masks, or make them NaN. Unless
    `every_element`, the scan of a row stops at its first number, since a row
    of numbers is by far the common case: a step per row rather than per
    element. Rows nested deeper than NumPy's dimension limit are left to
    numpy.asarray, which refuses them (a list holding itself would otherwise
    never end)."""
    rows = [(sequence, 1)]
    while rows:
        row, depth = rows.pop()
        for element in row:
            if _is_row(element):
                if depth < _MAX_DIMENSIONS:
                    rows.append((element, depth + 1))
            elif isinstance(element, np.ma.MaskedArray):
                if np.ma.is_masked(element):
                    return True
            elif isinstance(element, numbers.Number) and not every_element:
                break
    return False


_MAX_DIMENSIONS = 64  # numpy's


def _to_numpy(name, value, widen_bfloat16=True):
    """`value` as an ndarray (torch tensors through NumPy, bfloat16 ones as
    float32 unless widen_bfloat16 is false: then they are refused)."""
    if type(value) is np.ndarray:
        return value
    if isinstance(value, np.ma.MaskedArray) and np.ma.is_masked(value):
        raise TypeError(
            f"{name} is a masked array with masked values, which lstm_fast would compute "
            "with as if unmasked: fill them first (numpy.ma.filled)"
        )
    is_row = _is_row(value)
    if is_row and _holds_masked_values(value, every_element=False):
        raise _masked_values_error(name)
    try:
        # torch tensors, duck-typed so torch is never imported here: one that
        # requires grad or lives off the CPU refuses numpy.asarray.
        if callable(getattr(value, "detach", None)) and callable(getattr(value, "numpy", None)):
            tensor = value.detach().cpu()
            # A lazily negated or conjugated view (x.conj().imag) refuses
            # .numpy() until resolved; torch's own layers take it.
            for resolve in ("resolve_conj", "resolve_neg"):
                if callable(getattr(tensor, resolve, None)):
                    tensor = getattr(tensor, resolve)()
            # NumPy has no bfloat16; float32 holds every bfloat16 value exactly.
            if widen_bfloat16 and str(getattr(tensor, "dtype", "")) == "torch.bfloat16":
                tensor = tensor.float()
            return tensor.numpy()
        # A plain ndarray also for subclasses: np.matrix, for one, would keep
        # two dimensions through the reshapes of unbatched input.
        array = np.asarray(value)
    except np.ma.MaskError as error:  # a masked int after a number in a row
        if is_row and _holds_masked_values(value, every_element=True):
            raise _masked_values_error(name) from error
        raise TypeError(f"{name} could not be converted to a NumPy array: {error}") from error
    except ValueError as error:
        raise ValueError(f"{name} could not be converted to a NumPy array: {error}") from error
    except (TypeError, NotImplementedError) as error:  # NotImplementedError: torch's meta device
        raise TypeError(f"{name} could not be converted to a NumPy array: {error}") from error
    # numpy.asarray makes masked values NaN when they follow a number in a
    # row, where the quick scan above stops: a NaN, which is rare, is worth
    # the full scan.
    if (is_row and array.dtype.kind in "fc" and np.isnan(array).any()
            and _holds_masked_values(value, every_element=True)):
        raise _masked_values_error(name)
    return array


def _masked_values_error(name):
    return TypeError(
        f"{name} holds masked arrays with masked values, which lstm_fast would compute "
        "with as if unmasked: fill them first (numpy.ma.filled)"
    )


def _float_array(name, value):
    """`value` as an ndarray of any floating dtype (not yet cast or made contiguous)."""
    array = _to_numpy(name, value)
    # Integers, bools and complex numbers are refused rather than cast: casting
    # would hide a wrong argument, such as token ids passed instead of features.
    if array.dtype.kind != "f":
        raise TypeError(
            f"{name} must hold floating-point values (float16, float32 or float64, or "
            f"bfloat16 tensors), "
            f"got dtype {array.dtype}"
        )
    return array


def _lengths_array(lengths, batch, steps):
    """Check per-sequence lengths and return them as the engine takes them (int64)."""
    array = _to_numpy("lengths", lengths)
    kind = array.dtype.kind
    if kind == "O" and array.size and all(isinstance(value, numbers.Integral)
                                          and not isinstance(value, (bool, np.bool_))
                                          for value in array.flat):
        # Python ints past int64 and uint64: NumPy keeps them as objects.
        raise ValueError(f"lengths must be in [0, {steps}] (the sequence length), got values "
                         f"from {min(array.flat)} to {max(array.flat)}")
    if kind == "f":
        if not (np.isfinite(array).all() and (array == np.trunc(array)).all()):
            raise TypeError("lengths must be integers, got non-integral values")
    elif kind not in ("i", "u"):
        raise TypeError(f"lengths must be integers, got dtype {array.dtype}")
    if array.shape != (batch,):
        raise ValueError(
            f"lengths must be 1-D with one length per batch element, shape ({batch},), "
            f"got shape {array.shape}"
        )
    if batch and (array.min() < 0 or array.max() > steps):
        raise ValueError(
            f"lengths must be in [0, {steps}] (the sequence length), got values from "
            f"{array.min()} to {array.max()}"
        )
    return _engine_array(array, np.int64)


def _engine_array(array, dtype):
    """`array` as the C core reads it: C-contiguous, aligned, native byte order,
    of `dtype` (a copy only when one of these is missing)."""
    if array.dtype == dtype and array.flags.c_contiguous and array.flags.aligned:
        return array  # the common case, without np.require's cost per call
    return np.require(array, dtype=dtype, requirements=("C", "A"))


def _split_lstm_hx(hx):
    if hx is None:
        return None, None
    if not isinstance(hx, (tuple, list)):
        raise TypeError(f"hx must be a tuple (h_0, c_0) for an LSTM, got {type(hx).__name__}")
    if len(hx) != 2:
        raise ValueError(f"hx must be a tuple (h_0, c_0) of two arrays, got {len(hx)} items")
    if hx[0] is None or hx[1] is None:
        # As torch: zeros are hx=None, not half a tuple.
        raise TypeError("hx must hold two arrays (h_0, c_0); pass hx=None for zero states")
    return hx


def _frozen(array):
    # Read-only because an in-place edit would never reach the packed weights
    # of the engine; failing loudly beats silently computing with old values.
    # A view of the read-only array: setflags(write=True) on an array owning
    # its data succeeds, on such a view it raises (deliberately unlocking
    # the base first is not guarded against).
    array.setflags(write=False)
    return array.view()


def _parameter_layout(gates, input_size, hidden_size, proj_size, bias, num_layers,
                      num_directions, suffix, peephole=False):
    """Names and shapes of a module's parameters, in torch's order.

    Returns (groups, shapes). groups[l * num_directions + d] is the tuple of
    names (weight_ih, weight_hh, bias_ih, bias_hh, weight_hr[, peephole]) the
    engine takes for that layer-direction, None where a parameter is absent
    (peephole: LSTM variant, (3*hidden_size,) in the order i, f, o); shapes maps
    every name to its shape, in torch's _flat_weights_names order.
    """
    state_size = proj_size or hidden_size
    gate_rows = gates * hidden_size
    groups = []
    shapes = {}
    for layer in range(num_layers):
        layer_input = input_size if layer == 0 else num_directions * state_size
        for direction in range(num_directions):
            tail = suffix(layer, direction)
            entries = (
                ("weight_ih", (gate_rows, layer_input)),
                ("weight_hh", (gate_rows, state_size)),
                ("bias_ih", (gate_rows,) if bias else None),
                ("bias_hh", (gate_rows,) if bias else None),
                ("weight_hr", (proj_size, hidden_size) if proj_size else None),
            ) + ((("peephole", (3 * hidden_size,)),) if peephole else ())
            names = tuple(None if shape is None else stem + tail for stem, shape in entries)
            groups.append(names)
            shapes.update((name, shape) for name, (_, shape) in zip(names, entries) if name)
    return groups, shapes


def _check_addressable(layout, num_layers, num_directions, itemsize):
    """Refuse sizes whose parameters could not fit in memory, before anything is
    listed or allocated (a huge num_layers would otherwise take ages to fail)."""
    # Layers above the first all have the same shapes: two layers tell the total.
    groups, shapes = _parameter_layout(*layout, min(num_layers, 2), num_directions, _layer_suffix)
    sizes = [sum(math.prod(shapes[name]) for name in group if name) for group in groups]
    first, above = sum(sizes[:num_directions]), sum(sizes[num_directions:])
    total = (first + (num_layers - 1) * above) * itemsize
    if total > sys.maxsize:
        _, input_size, hidden_size, proj_size, _ = layout
        raise ValueError(
            f"input_size={input_size}, hidden_size={hidden_size}, proj_size={proj_size}, "
            f"num_layers={num_layers}: the parameters would take {total} bytes, more than this "
            "platform can address"
        )


def _layer_suffix(layer, direction):
    return f"_l{layer}" + ("_reverse" if direction else "")


def _cell_suffix(layer, direction):
    return ""


# ---------------------------------------------------------------- shared machinery

# The `nonlinearity` attribute of RNN and RNNCell.
_NONLINEARITY = property(
    lambda self: "relu" if self._mode == "RNN_RELU" else "tanh",
    doc="'tanh' or 'relu'.",
)


# torch.nn's recurrent classes: from_torch refuses a module of another one
# (by name, so that torch is not imported).
_TORCH_RECURRENT_CLASSES = {"LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell"}


def _call_forward(self, *args, **kwargs):
    return self.forward(*args, **kwargs)


class _RecurrentBase:
    """Parameters, lazy engine, state dicts and torch interop of layers and cells."""

    # Name of the torch.nn class with the same interface.
    _TORCH_CLASS = None
    # Constructor arguments shared with that class; both classes also expose
    # them as attributes, which is what from_torch and to_torch rely on.
    _TORCH_ARGS = ()
    # Accepted values of a torch module's `mode` (torch cells have none).
    _TORCH_MODES = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # Calling a module runs self.forward, as in torch (an instance's own
        # forward included). Our classes relay through forward's own
        # signature (_RNNBase.__call__, _RNNCellBase.__call__): *args and
        # **kwargs cost 0.3 us of a 2.5 us one-step call. A class whose
        # forward comes from elsewhere (a subclass, a mixin; any signature)
        # takes the general relay, unless it defines __call__ itself.
        if "__call__" not in cls.__dict__ and cls.forward.__module__ != __name__:
            cls.__call__ = _call_forward

    def _setup(self, mode, input_size, hidden_size, proj_size, bias, dtype, seed,
               num_layers, num_directions, suffix, variant=None):
        input_size = _check_positive("input_size", input_size)
        hidden_size = _check_positive("hidden_size", hidden_size)
        proj_size = _check_int("proj_size", proj_size)
        if proj_size < 0:
            raise ValueError(
                f"proj_size should be a positive integer or zero to disable projections, "
                f"got {proj_size}"
            )
        if proj_size >= hidden_size:
            raise ValueError(
                f"proj_size has to be smaller than hidden_size, got proj_size={proj_size} "
                f"and hidden_size={hidden_size}"
            )
        self._mode = mode
        self._input_size = input_size
        self._hidden_size = hidden_size
        self._proj_size = proj_size
        self._bias = _check_bool("bias", bias)
        self._dtype = _check_dtype(dtype)
        self._num_layers = num_layers
        self._num_directions = num_directions
        layout = (_GATES[mode], input_size, hidden_size, proj_size, self._bias)
        _check_addressable(layout, num_layers, num_directions, self._dtype.itemsize)
        self._variant = _check_variant(variant, mode)
        peephole = bool(self._variant and self._variant.get("peephole"))
        self._groups, self._shapes = _parameter_layout(*layout, num_layers, num_directions, suffix,
                                                       peephole=peephole)
        generator = _generator(seed)
        bound = 1.0 / math.sqrt(hidden_size)
        # Drawn in float64 in torch's parameter order, so one seed gives the same
        # values (up to rounding) whatever the dtype.
        self._parameters = {
            name: _frozen(generator.uniform(-bound, bound, shape).astype(self._dtype))
            for name, shape in self._shapes.items()
        }
        self._new_lock()
        self._engine = None
        # Fixed at construction: a bad LSTM_FAST_ISA fails here rather than at the
        # first call, and a parameter change never moves the module to other kernels.
        self._isa = resolve_isa()
        if self._variant:
            # A bad variant option fails here, not at the first call.
            self._current_engine()
            if mode in _RNN_MODES.values():
                # Plain relu or tanh activations (checked by that engine) are
                # an RNN's own nonlinearity: say so in mode and nonlinearity,
                # and run its own path.
                own = _rnn_mode_of_activations(mode, self._variant)
                if own != (mode, self._variant):
                    self._mode, self._variant = own
                    self._engine = None

    # -- attributes: parameters read as read-only arrays, assign with checks

    def __getattr__(self, name):
        # Only reached when normal lookup fails, i.e. for parameter names.
        parameters = self.__dict__.get("_parameters")
        if parameters is not None and name in parameters:
            return parameters[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name, value):
        parameters = self.__dict__.get("_parameters")
        if parameters is not None and name in parameters:
            self._update_parameters({name: self._checked_parameter(name, value)})
        elif parameters is not None and name.startswith(("weight_", "bias_", "peephole_")):
            # A misspelt parameter, a bias of a bias=False module or peepholes
            # of a module without them would otherwise become a plain
            # attribute that nothing reads.
            raise AttributeError(
                f"{type(self).__name__} has no parameter {name!r}; its parameters are "
                f"{', '.join(parameters)}"
            )
        else:
            object.__setattr__(self, name, value)

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(self.__dict__.get("_parameters", ())))

    def __getstate__(self):
        # A lock cannot be pickled and the engine holds C pointers; both are
        # recreated on demand.
        state = dict(self.__dict__)
        del state["_lock"], state["_engine"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        # Unpickled arrays come back writable.
        self._parameters = {name: _frozen(array) for name, array in self._parameters.items()}
        self._new_lock()
        self._engine = None
        # A copy is a module built now, possibly on another machine.
        self._isa = resolve_isa()

    def _new_lock(self):
        self._lock = threading.Lock()
        _MODULES_WITH_LOCKS.add(self)

    def _checked_parameter(self, name, value):
        array = _float_array(name, value)
        shape = self._shapes[name]
        if array.shape != shape:
            raise ValueError(f"{name} must have shape {shape}, got {array.shape}")
        return _frozen(np.array(array, dtype=self._dtype, order="C"))

    def _update_parameters(self, updates):
        with self._lock:
            # A new dict, never an in-place update: shallow copies of this module
            # share the old one.
            self._parameters = {**self._parameters, **updates}
            if self._engine is not None:
                self._engine.supersede()  # streams on it look for the new one
            self._engine = None

    # -- engine

    def _current_engine(self):
        engine = self._engine
        if engine is None:
            # Under the lock, so a parameter assigned meanwhile waits and then
            # invalidates this engine instead of being lost.
            with self._lock:
                engine = self._engine
                if engine is None:
                    engine = self._engine = self._build_engine()
        return engine

    def _build_engine(self):
        parameters = self._parameters
        weights = [
            tuple(None if name is None else parameters[name] for name in group)
            for group in self._groups
        ]
        return _core.Engine(
            self._mode.lower(), self._input_size, self._hidden_size, self._proj_size,
            self._num_layers, self._num_directions, self._bias, self._dtype, self._isa, weights,
            **(self._variant or {}),
        )

    def _initial_states(self, hx, batch, h_shape, c_shape, batched):
        """Check hx against the shapes the caller expects; return (h_0, c_0) as the
        engine takes them, None for zeros."""
        stacked = self._num_layers * self._num_directions
        engine_h_shape = (stacked, batch, self._proj_size or self._hidden_size)
        engine_c_shape = (stacked, batch, self._hidden_size)
        if self._mode == "LSTM":
            h_value, c_value = _split_lstm_hx(hx)
            return (
                self._state("h_0", h_value, h_shape, engine_h_shape, batched),
                self._state("c_0", c_value, c_shape, engine_c_shape, batched),
            )
        if isinstance(hx, tuple) or (
                isinstance(hx, (list, deque)) and any(hasattr(item, "shape") for item in hx)):
            # A list of arrays would otherwise be stacked into one: [h, c]
            # from LSTM code would run with c as the next layer's h. (A
            # nested list of numbers is an array-like h, as anywhere else.)
            raise TypeError(
                f"hx must be a single array h_0 for {type(self).__name__}; "
                f"only LSTM takes a pair (h_0, c_0), got a {type(hx).__name__}"
            )
        return self._state("hx", hx, h_shape, engine_h_shape, batched), None

    def _state(self, name, value, shape, engine_shape, batched):
        if value is None:
            return None
        array = _float_array(name, value)
        if array.shape != shape:
            kind = "batched" if batched else "unbatched"
            raise ValueError(
                f"{name} must have shape {shape} for this {kind} input, got {array.shape}"
            )
        return _engine_array(array, self._dtype).reshape(engine_shape)

    # -- public

    def __repr__(self):
        parts = [str(self._input_size), str(self._hidden_size)] + self._repr_options()
        if self._variant:
            parts.append(f"variant={self._variant!r}")
        if self._mode == "RNN_RELU":
            parts.append("nonlinearity='relu'")
        if self._dtype != _FLOAT32:
            parts.append(f"dtype={self._dtype}")
        return f"{type(self).__name__}({', '.join(parts)})"

    @property
    def input_size(self):
        return self._input_size

    @property
    def hidden_size(self):
        return self._hidden_size

    @property
    def bias(self):
        return self._bias

    @property
    def dtype(self):
        """numpy.dtype of parameters and outputs (float32 or float64)."""
        return self._dtype

    @property
    def variant(self):
        """The cell variant options that differ from torch's cell (a copy), or None."""
        return dict(self._variant) if self._variant else None

    @property
    def isa(self):
        """Name of the ISA whose kernels run this module: what LSTM_FAST_ISA selected
        when it was constructed."""
        return self._isa

    def stream(self, batch_size=None, hx=None):
        """A Stream for step-by-step inference: ``stream.step(x)`` per time step,
        the state carried inside, with no per-step allocation but the
        output (see Stream).

        batch_size : rows per step, or None for one unbatched sequence (inputs
            (input_size,)). hx : initial state shaped as this module's hx for
            such a call (zeros when None). Networks with one direction only.
        """
        return Stream(self, batch_size, hx)

    def state_dict(self):
        """Copies of the parameters, keyed and ordered as torch's state_dict()."""
        return {name: array.copy() for name, array in self._parameters.items()}

    def load_state_dict(self, state_dict, strict=True):
        """Replace parameters from a mapping of names to array-likes (torch tensors too).

        Every entry is checked (floating dtype, shape) before any is stored, so
        a bad entry leaves the module unchanged. With strict=True the keys must
        match state_dict() exactly. Returns IncompatibleKeys(missing_keys,
        unexpected_keys), as torch does.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(
                f"state_dict must be a mapping of parameter names to arrays, "
                f"got {type(state_dict).__name__}"
            )
        missing = [name for name in self._shapes if name not in state_dict]
        unexpected = [key for key in state_dict if key not in self._shapes]
        if strict and (missing or unexpected):
            raise ValueError(
                f"state_dict does not match {type(self).__name__}: missing keys {missing}, "
                f"unexpected keys {unexpected}"
            )
        self._update_parameters({
            name: self._checked_parameter(name, state_dict[name])
            for name in self._shapes if name in state_dict
        })
        return IncompatibleKeys(missing, unexpected)

    @classmethod
    def from_torch(cls, module):
        """Build a copy of a torch.nn module of the same kind.

        Duck-typed: reads the module's constructor attributes and state_dict(),
        so torch is not imported. float64 modules give float64 copies, all
        others float32.
        """
        kinds = {klass.__name__ for klass in type(module).__mro__} & _TORCH_RECURRENT_CLASSES
        if kinds and cls._TORCH_CLASS not in kinds:
            raise ValueError(f"module must be a torch.nn.{cls._TORCH_CLASS}, got a "
                             f"{type(module).__name__}")
        mode = getattr(module, "mode", None)
        if cls._TORCH_MODES and mode is not None and mode not in cls._TORCH_MODES:
            raise ValueError(
                f"module must be a torch.nn.{cls._TORCH_CLASS}, got one with mode {mode!r}"
            )
        try:
            arguments = {name: getattr(module, name) for name in cls._TORCH_ARGS}
            state = module.state_dict()
        except AttributeError as error:
            raise TypeError(
                f"module does not look like a torch.nn.{cls._TORCH_CLASS}: {error}"
            ) from error
        # torch reads its flags as truth values (LSTM(3, 4, bidirectional=1) is
        # bidirectional, GRUCell(3, 4, bias=None) has no biases); the
        # constructors here are strict.
        for flag in ("bias", "batch_first", "bidirectional"):
            if flag in arguments:
                arguments[flag] = bool(arguments[flag])
        arrays = {name: _to_numpy(name, tensor) for name, tensor in state.items()}
        first = next(iter(arrays.values()), None)
        dtype = np.float64 if first is not None and first.dtype == _FLOAT64 else np.float32
        # torch warned about dropout with one layer when the module was built;
        # built without it and then given it, the copy does not warn again.
        dropout = arguments.get("dropout", 0.0)
        if "dropout" in arguments:
            arguments["dropout"] = 0.0
        copy = cls(**arguments, dtype=dtype)
        if dropout:
            copy._dropout = _check_dropout(dropout, num_layers=2)  # 2: no one-layer warning
        copy.load_state_dict(arrays)
        return copy

    def to_torch(self):
        """Build the equivalent torch.nn module (imports torch).

        It is returned in eval mode, the mode whose outputs match this module
        (dropout inactive); call .train() on it to train.
        """
        # Activations that name the cell's own ones leave the engine on
        # torch's cell (not generic): such a variant has torch's equivalent.
        if self._variant and (set(self._variant) != {"activations"}
                              or self._current_engine().generic):
            raise ValueError(
                f"this {type(self).__name__} has cell variant options {self._variant!r} that "
                "torch.nn has no equivalent for"
            )
        import torch

        torch_class = getattr(torch.nn, self._TORCH_CLASS)
        dtype = torch.float64 if self._dtype == _FLOAT64 else torch.float32
        arguments = {name: getattr(self, name) for name in self._TORCH_ARGS}
        # Built on the meta device, so that its random initialisation (which
        # load_state_dict overwrites) leaves torch's generator alone; torch's
        # warning about dropout with one layer was given when the original
        # module was made.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="dropout option adds dropout")
            module = torch_class(**arguments, dtype=dtype, device="meta")
        module = module.to_empty(device="cpu")
        module.load_state_dict(
            {name: torch.from_numpy(array) for name, array in self.state_dict().items()}
        )
        return module.eval()


# ---------------------------------------------------------------- streams

class Stream(_core.StreamCore):
    """Step-by-step inference over a module, carrying its state between calls.

    Made by ``module.stream(batch_size=None, hx=None)`` (layers with one
    direction, and cells). ``step(x)`` runs the network on one time step,
    updates the state in place and returns the top layer's new h, computed
    exactly as a call of the module on the whole sequence would, bit for
    bit. A step allocates nothing but its result, and nothing at all with
    ``step(x, out=y)`` and input of the module's dtype: for a tiny layer on
    the bench machine, 1.1-1.6 us per step in all (bench/RESULTS.md).

    A stream runs the module's current parameters (a change applies from the
    next step) on the process-wide thread setting. One stream is one
    sequence of steps: stepping it from two threads at once raises
    RuntimeError; give each thread, or each independent sequence, its own.
    """

    __slots__ = ("_batch_size", "_h_shape", "_c_shape")

    def __init__(self, module, batch_size=None, hx=None):
        if not isinstance(module, _RecurrentBase):
            raise TypeError(f"module must be an lstm_fast layer or cell, got "
                            f"{type(module).__name__}")
        if module._num_directions != 1:
            raise ValueError(
                "stream needs a one-direction network: a bidirectional network's reverse "
                "direction starts at the end of the sequence"
            )
        if batch_size is not None:
            batch_size = _check_positive("batch_size", batch_size)
        self._start_sequence(module, batch_size, hx)

    def _start_sequence(self, module, batch_size, hx):
        # Shapes are stored only once the start succeeded: a failed start
        # leaves the stream as it was.
        batched = batch_size is not None
        batch = batch_size if batched else 1
        h_shape, c_shape = module._state_shapes(batch, batched)
        h_0, c_0 = module._initial_states(hx, batch, h_shape, c_shape, batched)
        self._start(module, _config, batch, batched, h_0, c_0)
        self._batch_size, self._h_shape, self._c_shape = batch_size, h_shape, c_shape

    def reset(self, hx=None):
        """Start a new sequence from `hx` (zeros when None), shaped as the module's hx."""
        self._start_sequence(self.module, self._batch_size, hx)

    @property
    def batch_size(self):
        """Rows per step, or None for an unbatched stream."""
        return self._batch_size

    @property
    def state(self):
        """A copy of the carried state, shaped as the module's hx: (h, c) for an
        LSTM, h otherwise; pass it as hx to the module or to another stream."""
        h, c = self._copy_state()
        h = h.reshape(self._h_shape)
        return h if c is None else (h, c.reshape(self._c_shape))

    def _converted_input(self, input):
        # StreamCore.step calls this for anything but an unmasked float
        # ndarray of the step's shape.
        module = self.module
        x = _float_array("input", input)
        batch = self.batch_size
        shape = (module._input_size,) if batch is None else (batch, module._input_size)
        if x.shape != shape:
            kind = "unbatched" if batch is None else "batched"
            raise ValueError(f"input must have shape {shape} for this {kind} stream, got {x.shape}")
        return _engine_array(x, module._dtype)

    def __repr__(self):
        return f"Stream({self.module!r}, batch_size={self.batch_size})"


# ---------------------------------------------------------------- layers

class _RNNBase(_RecurrentBase):
    """Multi-layer recurrent network over whole sequences (torch.nn.RNNBase)."""

    _TORCH_ARGS = ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout",
                   "bidirectional")

    def __init__(self, mode, input_size, hidden_size, num_layers, bias, batch_first, dropout,
                 bidirectional, proj_size, dtype, seed, variant):
        num_layers = _check_positive("num_layers", num_layers)
        self._dropout = _check_dropout(dropout, num_layers)
        self._batch_first = _check_bool("batch_first", batch_first)
        self._bidirectional = _check_bool("bidirectional", bidirectional)
        self._setup(mode, input_size, hidden_size, proj_size, bias, dtype, seed,
                    num_layers=num_layers, num_directions=2 if self._bidirectional else 1,
                    suffix=_layer_suffix, variant=variant)

    @classmethod
    def from_keras(cls, layer=None, *, kernel=None, recurrent_kernel=None, bias=None,
                   activation=_KERAS_DEFAULT_ACTIVATION,
                   recurrent_activation=_KERAS_DEFAULT_RECURRENT_ACTIVATION,
                   reset_after=_KERAS_DEFAULT_RESET_AFTER, dtype=None):
        """Build a layer from a Keras 3 LSTM / GRU / SimpleRNN (or an RNN of one
        LSTMCell / GRUCell / SimpleRNNCell), or from its raw arrays.

        The result is batch_first and returns what the Keras layer with
        return_sequences=True, return_state=True returns (h_n/c_n with a
        leading num_layers axis of 1). Duck-typed: reads layer.get_config()
        and layer.get_weights(), so keras is not imported. Without a layer,
        give kernel (input_size, G*units), recurrent_kernel (units, G*units)
        and bias (G*units,) or, for a GRU with reset_after=True, (2, 3*units),
        in Keras's layout and gate order; activation/recurrent_activation
        are Keras names (tanh, sigmoid, relu, linear, hard_sigmoid, softsign,
        softplus, elu; None is linear, as in Keras); as the Keras layers,
        SimpleRNN's (RNN) has no recurrent_activation and only the GRU has
        reset_after: giving them elsewhere is a TypeError. With a layer, its
        configuration gives activation, recurrent_activation and
        reset_after, so passing them is an error.
        dtype defaults to float64 for float64 weights, else float32.
        """
        return _keras.build(cls, layer, kernel, recurrent_kernel, bias, activation,
                            recurrent_activation, reset_after, dtype)

    @property
    def mode(self):
        """The cell kind as torch names it: LSTM, GRU, RNN_TANH or RNN_RELU."""
        return self._mode

    @property
    def num_layers(self):
        return self._num_layers

    @property
    def batch_first(self):
        return self._batch_first

    @property
    def dropout(self):
        """Kept for torch compatibility; inactive, as in torch's eval mode."""
        return self._dropout

    @property
    def bidirectional(self):
        return self._bidirectional

    @property
    def proj_size(self):
        return self._proj_size

    @property
    def all_weights(self):
        """Parameters per layer-direction, as torch's all_weights."""
        return [[self._parameters[name] for name in group if name] for group in self._groups]

    def _repr_options(self):
        options = []
        if self._proj_size:
            options.append(f"proj_size={self._proj_size}")
        if self._num_layers != 1:
            options.append(f"num_layers={self._num_layers}")
        if not self._bias:
            options.append("bias=False")
        if self._batch_first:
            options.append("batch_first=True")
        if self._dropout:
            options.append(f"dropout={self._dropout}")
        if self._bidirectional:
            options.append("bidirectional=True")
        return options

    def _state_shapes(self, batch, batched):
        """Shapes of h_0 and c_0 (as given by the caller and returned) for a call."""
        stacked = self._num_layers * self._num_directions
        state_size = self._proj_size or self._hidden_size
        if batched:
            return (stacked, batch, state_size), (stacked, batch, self._hidden_size)
        return (stacked, state_size), (stacked, self._hidden_size)

    def __call__(self, input, hx=None, lengths=None):
        return self.forward(input, hx, lengths)

    def forward(self, input, hx=None, lengths=None):
        """Run the network over a batch of sequences, or one unbatched sequence.

        Shapes (D = 2 if bidirectional else 1, R = proj_size or hidden_size,
        S = D * num_layers):

        input : (L, N, input_size), or (N, L, input_size) with batch_first, or
            (L, input_size) unbatched. Any floating array-like; cast to dtype.
        hx : initial state, zeros when None. LSTM: tuple (h_0, c_0) of shapes
            (S, N, R) and (S, N, hidden_size); GRU/RNN: h_0 of shape
            (S, N, hidden_size). Unbatched: without the N axis.
        lengths : optional, one int per batch element in [0, L], any order;
            pack_padded_sequence semantics: outputs past a sequence's end are
            0 and final states are taken at its last step. Batched input only.

        Returns
        -------
        LSTM: (output, (h_n, c_n)); GRU/RNN: (output, h_n). output is
        (L, N, D * R), or (N, L, D * R) with batch_first, or (L, D * R)
        unbatched; h_n and c_n have the shapes of h_0 and c_0.
        """
        if lengths is None:
            engine = self._engine
            if engine is not None:
                # Streaming calls (one step at a time, state carried) live or
                # die by per-call overhead: arrays that already have the exact
                # dtype, layout and shapes skip the conversions below.
                result = engine.call_fast(input, hx, _config.thread_pool(),
                                          batch_first=self._batch_first)
                if result is not None:
                    return result
        x = _float_array("input", input)
        if x.ndim not in (2, 3):
            layout = "(N, L, input_size)" if self._batch_first else "(L, N, input_size)"
            raise ValueError(
                f"input must be 3-D {layout} or 2-D (L, input_size) for one unbatched sequence, "
                f"got shape {x.shape}"
            )
        if x.shape[-1] != self._input_size:
            raise ValueError(
                f"input must have input_size={self._input_size} features in its last dimension, "
                f"got shape {x.shape}"
            )
        batched = x.ndim == 3
        if not batched:
            if lengths is not None:
                raise ValueError("lengths needs batched (3-D) input, got an unbatched (2-D) input")
            x = x.reshape(x.shape[0], 1, x.shape[1])
        elif self._batch_first:
            x = x.transpose(1, 0, 2)
        x = _engine_array(x, self._dtype)
        steps, batch = x.shape[0], x.shape[1]

        h_shape, c_shape = self._state_shapes(batch, batched)
        h_0, c_0 = self._initial_states(hx, batch, h_shape, c_shape, batched)
        if lengths is not None:
            lengths = _lengths_array(lengths, batch, steps)

        output, h_n, c_n = self._current_engine().forward(
            x, h_0, c_0, lengths, _config.thread_pool()
        )
        if not batched:
            output = output.reshape(steps, output.shape[2])
        elif self._batch_first:
            output = np.ascontiguousarray(output.transpose(1, 0, 2))
        h_n = h_n.reshape(h_shape)
        if self._mode == "LSTM":
            return output, (h_n, c_n.reshape(c_shape))
        return output, h_n


class LSTM(_RNNBase):
    """Multi-layer long short-term memory network, with torch.nn.LSTM's interface.

    Parameters
    ----------
    input_size, hidden_size : int
    num_layers : int, default 1
    bias : bool, default True
    batch_first : bool, default False
    dropout : float in [0, 1], default 0.0
        Kept for torch compatibility; inactive (inference, as torch's eval mode).
    bidirectional : bool, default False
    proj_size : int, default 0
        Width of the projected hidden state (LSTMP), 0 < proj_size < hidden_size.
    dtype : numpy.float32 or numpy.float64, default float32
    seed : optional, for numpy.random.default_rng
        Parameters start as U(-1/sqrt(hidden_size), 1/sqrt(hidden_size)).
    variant : optional mapping, keyword-only
        Cell variants beyond torch's cell, as set by from_keras and
        lstm_fast.onnx: ``peephole`` (adds parameters ``peephole_l{k}``,
        (3*hidden_size,) in the order i, f, o), ``coupled_input_forget``
        (f = 1 - i), ``clip`` (gate pre-activations clipped to [-clip, clip]),
        ``activations`` (per direction, (name, alpha, beta) for ONNX's f, g, h
        roles; names as lstm_fast.onnx.ACTIVATIONS). GRU also takes
        ``reset_before_product`` (ONNX linear_before_reset=0, Keras
        reset_after=False); RNN clip and activations. Such a layer has no
        torch.nn equivalent (to_torch raises).

    Call as ``lstm(input, hx=None, lengths=None)`` -> ``(output, (h_n, c_n))``;
    see forward.
    """

    _TORCH_CLASS = "LSTM"
    _TORCH_ARGS = _RNNBase._TORCH_ARGS + ("proj_size",)
    _TORCH_MODES = ("LSTM",)

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, proj_size=0, dtype=np.float32, seed=None, *,
                 variant=None):
        super().__init__("LSTM", input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, proj_size, dtype, seed, variant)


class GRU(_RNNBase):
    """Multi-layer gated recurrent unit network, with torch.nn.GRU's interface.

    Parameters as LSTM, without proj_size. Call as ``gru(input, hx=None,
    lengths=None)`` -> ``(output, h_n)``; see forward.
    """

    _TORCH_CLASS = "GRU"
    _TORCH_MODES = ("GRU",)

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, dtype=np.float32, seed=None, *,
                 variant=None):
        super().__init__("GRU", input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, 0, dtype, seed, variant)


class RNN(_RNNBase):
    """Multi-layer Elman network with tanh or ReLU, with torch.nn.RNN's interface.

    Parameters as LSTM without proj_size, plus nonlinearity ('tanh' or 'relu'),
    which comes fourth positionally, as in torch. Call as ``rnn(input, hx=None,
    lengths=None)`` -> ``(output, h_n)``; see forward.
    """

    _TORCH_CLASS = "RNN"
    _TORCH_ARGS = _RNNBase._TORCH_ARGS + ("nonlinearity",)
    _TORCH_MODES = ("RNN_TANH", "RNN_RELU")

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, dtype=np.float32,
                 seed=None, *, variant=None):
        super().__init__(_rnn_mode(nonlinearity), input_size, hidden_size, num_layers, bias,
                         batch_first, dropout, bidirectional, 0, dtype, seed, variant)

    nonlinearity = _NONLINEARITY


# ---------------------------------------------------------------- cells

class _RNNCellBase(_RecurrentBase):
    """One time step of one layer (torch.nn.RNNCellBase)."""

    _TORCH_ARGS = ("input_size", "hidden_size", "bias")

    def __init__(self, mode, input_size, hidden_size, bias, dtype, seed):
        self._setup(mode, input_size, hidden_size, 0, bias, dtype, seed,
                    num_layers=1, num_directions=1, suffix=_cell_suffix)

    def _repr_options(self):
        return [] if self._bias else ["bias=False"]

    def _state_shapes(self, batch, batched):
        """Shapes of h and c (as given by the caller and returned) for a call."""
        shape = (batch, self._hidden_size) if batched else (self._hidden_size,)
        return shape, shape

    def __call__(self, input, hx=None):
        return self.forward(input, hx)

    def forward(self, input, hx=None):
        """Advance the state by one step.

        input : (N, input_size), or (input_size,) unbatched; any floating array-like.
        hx : state, zeros when None. LSTMCell: tuple (h, c), each
            (N, hidden_size) or (hidden_size,); GRUCell/RNNCell: h alone.

        Returns LSTMCell: (h', c'); GRUCell/RNNCell: h'. Shapes as the state's.
        """
        engine = self._engine
        if engine is not None:
            # As in _RNNBase.forward: exact arrays skip the conversions.
            result = engine.call_fast(input, hx, _config.thread_pool(), cell=True)
            if result is not None:
                return result
        x = _float_array("input", input)
        if x.ndim not in (1, 2):
            raise ValueError(
                f"input must be 2-D (N, input_size) or 1-D (input_size,), got shape {x.shape}"
            )
        if x.shape[-1] != self._input_size:
            raise ValueError(
                f"input must have input_size={self._input_size} features in its last dimension, "
                f"got shape {x.shape}"
            )
        batched = x.ndim == 2
        batch = x.shape[0] if batched else 1
        x = _engine_array(x, self._dtype).reshape(1, batch, self._input_size)
        state_shape, _ = self._state_shapes(batch, batched)
        h_0, c_0 = self._initial_states(hx, batch, state_shape, state_shape, batched)
        _, h_n, c_n = self._current_engine().forward(x, h_0, c_0, None, _config.thread_pool())
        if self._mode == "LSTM":
            return h_n.reshape(state_shape), c_n.reshape(state_shape)
        return h_n.reshape(state_shape)


class LSTMCell(_RNNCellBase):
    """An LSTM cell, with torch.nn.LSTMCell's interface.

    Parameters: input_size, hidden_size, bias=True, dtype=numpy.float32,
    seed=None. Parameters weight_ih (4*hidden_size, input_size), weight_hh
    (4*hidden_size, hidden_size), bias_ih and bias_hh (4*hidden_size,). Call as
    ``cell(input, hx=None)`` -> ``(h', c')``; see forward.
    """

    _TORCH_CLASS = "LSTMCell"

    def __init__(self, input_size, hidden_size, bias=True, dtype=np.float32, seed=None):
        super().__init__("LSTM", input_size, hidden_size, bias, dtype, seed)


class GRUCell(_RNNCellBase):
    """A GRU cell, with torch.nn.GRUCell's interface.

    Parameters as LSTMCell, with 3*hidden_size gate rows. Call as
    ``cell(input, hx=None)`` -> ``h'``; see forward.
    """

    _TORCH_CLASS = "GRUCell"

    def __init__(self, input_size, hidden_size, bias=True, dtype=np.float32, seed=None):
        super().__init__("GRU", input_size, hidden_size, bias, dtype, seed)


class RNNCell(_RNNCellBase):
    """An Elman cell with tanh or ReLU, with torch.nn.RNNCell's interface.

    Parameters as LSTMCell plus nonlinearity ('tanh' or 'relu', fourth
    positionally as in torch), with hidden_size gate rows. Call as
    ``cell(input, hx=None)`` -> ``h'``; see forward.
    """

    _TORCH_CLASS = "RNNCell"
    _TORCH_ARGS = _RNNCellBase._TORCH_ARGS + ("nonlinearity",)

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", dtype=np.float32,
                 seed=None):
        super().__init__(_rnn_mode(nonlinearity), input_size, hidden_size, bias, dtype, seed)

    nonlinearity = _NONLINEARITY
