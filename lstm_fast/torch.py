"""Run the recurrent modules of a torch model on lstm_fast: `replace_modules(model)`
swaps every nn.LSTM, nn.GRU, nn.RNN, nn.LSTMCell, nn.GRUCell and nn.RNNCell
for a module that takes and returns the same things (tensors, PackedSequence,
batch_first, unbatched input, hx) but runs lstm_fast under torch.no_grad();
`restore_modules(model)` swaps them back.

Inference only: the replacements have no gradients (they warn when one is
expected to flow back through them) and ignore dropout (as torch's eval
mode). torch.jit.trace and torch.onnx.export (its TorchScript path) record
torch's own modules, built from their parameters; torch.jit.script and
torch.export refuse them. Only CPU modules swap; cells of no inputs or no
hidden units (which torch builds) stay torch's. They follow the model's
`.double()` / `.float()` / `.half()` / `.to(dtype)` (other devices raise),
load checkpoints of any real dtype in their own (as torch's copy_ does)
and, like torch, refuse input and states of another dtype than theirs or
on another device, with torch's exception classes (shape errors too). A
float16 or bfloat16 module computes in float32 on weights rounded to its
dtype, as torch's are, and rounds its outputs to that dtype; other dtypes
raise TypeError.
Importing this module imports torch, so lstm_fast only imports it on use
(`import lstm_fast.torch`).
"""
import contextlib
import os
import sys
import warnings

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from lstm_fast import layers as _layers

__all__ = ["FastRecurrent", "FastCell", "replace_modules", "restore_modules"]

_LAYERS = {nn.LSTM: _layers.LSTM, nn.GRU: _layers.GRU, nn.RNN: _layers.RNN}
_CELLS = {nn.LSTMCell: _layers.LSTMCell, nn.GRUCell: _layers.GRUCell, nn.RNNCell: _layers.RNNCell}


def _numpy(tensor, name="input"):
    # The layers' conversion (lazily negated views resolved, and so on), done
    # here so that the layer takes its per-call fast path for arrays.
    return None if tensor is None else _layers._to_numpy(name, tensor)


def _state_numpy(hx):
    if isinstance(hx, (tuple, list)):
        return tuple(_numpy(t, f"hx[{i}]") for i, t in enumerate(hx))
    return _numpy(hx, "hx")


@contextlib.contextmanager
def _shape_errors_as_torch(dims_accepted):
    """torch raises ValueError for arguments of a wrong number of dimensions
    (dims_accepted False) and RuntimeError for the other shape mismatches
    (input size, states); lstm_fast raises ValueError for all, so inside this
    the latter become RuntimeError."""
    try:
        yield
    except ValueError as error:
        if not dims_accepted:
            raise
        raise RuntimeError(str(error)) from error


def _tensor(array, like, dtype):
    return torch.from_numpy(array).to(device=like.device, dtype=dtype)


_TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}
# Dtypes a swapped module holds its weights and results in while lstm_fast
# computes in float32: its kernels have no such arithmetic, and float32 is
# the more precise; the results differ from torch's by about the dtype's
# rounding, since torch's CPU kernels also round h and c at every step.
_STORED_ONLY = (torch.float16, torch.bfloat16)

# torch.nn's configuration attributes, which model code reads in forward
# (h0 = zeros(rnn.num_layers * 2, batch, rnn.hidden_size)): the swapped
# modules answer them from the lstm_fast copy, read-only.
_CONFIGURATION = ("mode", "input_size", "hidden_size", "num_layers", "bias", "batch_first",
                  "dropout", "bidirectional", "proj_size", "nonlinearity")


class _FastBase(nn.Module):
    """Holds the lstm_fast copy; the torch module is rebuilt from it on restore.

    The weights are not torch parameters (nothing here trains), but the
    module's state_dict holds them under torch's names, so a swapped model
    saves and loads the checkpoints of the original one."""

    _stored_as = None  # (for modules pickled before it existed)

    def __init__(self, fast, stored_as=None):
        super().__init__()
        self.fast = fast
        self._stored_as = stored_as  # one of _STORED_ONLY, or None

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)  # torch's parameters, buffers, submodules
        except AttributeError:
            pass
        fast = self.__dict__.get("fast")
        if fast is not None and name in _CONFIGURATION and hasattr(fast, name):
            return getattr(fast, name)
        if fast is not None and name in fast._shapes:
            # Not a tensor copy: an in-place edit of it (nn.init.*_) would
            # silently change nothing.
            raise AttributeError(
                f"{name} of a swapped {type(fast).__name__} is held by lstm_fast, not as a "
                f"torch Parameter: read it with state_dict()['{name}'] (or .fast.{name}), "
                f"change it with load_state_dict"
            )
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name, value):
        if name in _CONFIGURATION and "fast" in self.__dict__:
            raise AttributeError(f"{name} is fixed when the module is swapped: swap a torch "
                                 f"module built with the value you want")
        super().__setattr__(name, value)

    @property
    def dtype(self):
        """The torch dtype of the weights, inputs and results."""
        return self._stored_as or _TORCH_DTYPES[self.fast.dtype.name]

    def _apply(self, fn, recurse=True):
        # Module.double(), .float(), .to(...), .cuda() all come here with the
        # conversion as fn; the weights are NumPy arrays it cannot reach, so
        # ask it what it makes of a tensor like them and follow.
        probe = fn(torch.zeros(1, dtype=self.dtype))
        name = type(self.fast).__name__
        if probe.device.type != "cpu":
            raise RuntimeError(f"lstm_fast runs on the CPU: a swapped {name} cannot move to "
                               f"{probe.device}")
        if probe.dtype != self.dtype:
            self._convert(probe.dtype)
        return super()._apply(fn, recurse)

    def _convert(self, dtype):
        stored_as = dtype if dtype in _STORED_ONLY else None
        if stored_as is None and dtype not in _TORCH_DTYPES.values():
            raise TypeError(f"lstm_fast runs float32 and float64 (float16 and bfloat16 "
                            f"through float32): a swapped {type(self.fast).__name__} cannot "
                            f"become {dtype}")
        # Through torch's own conversion, so the weights round as its do.
        self.fast = type(self.fast).from_torch(self.to_torch().to(dtype))
        self._stored_as = stored_as

    def _check_tensors(self, input, hx, packed=False):
        """torch refuses input or states whose dtype is not the weights':
        ValueError for a layer's input, RuntimeError (from its matmul) for
        states, for a cell's input and for an LSTM's packed input (torch's
        LSTM skips its argument check for a PackedSequence); so do these.
        Then, as torch, RuntimeError for tensors off the weights' device (the
        CPU): they would otherwise be copied over and back without a word.
        And a warning where a gradient is expected to flow: none does here."""
        tensors = [("input", input)]
        if isinstance(hx, (tuple, list)):
            tensors += [(f"hx[{i}]", t) for i, t in enumerate(hx)]
        elif hx is not None:
            tensors.append(("hx", hx))
        self._check_dtypes(tensors, packed)
        for what, tensor in tensors:
            if isinstance(tensor, torch.Tensor) and not tensor.is_cpu:
                role = "parameter" if what == "input" else "hidden"
                found = (f"input tensor at {tensor.device} and parameter tensor at cpu"
                         if what == "input" else
                         f"input tensor at {input.device} and hidden tensor at {tensor.device}")
                raise RuntimeError(f"Input and {role} tensors are not at the same device, found "
                                   f"{found} (lstm_fast runs on the CPU)")
        if torch.is_grad_enabled() and any(isinstance(tensor, torch.Tensor)
                                           and tensor.requires_grad for _, tensor in tensors):
            warnings.warn(f"a swapped {type(self.fast).__name__} is for inference: no gradient "
                          f"flows back through it to its input or states (train the torch "
                          f"model: lstm_fast.torch.restore_modules)",
                          stacklevel=_stacklevel_of_caller())

    def _check_dtypes(self, tensors, packed):
        for what, tensor in tensors:
            if isinstance(tensor, torch.Tensor) and tensor.dtype != self.dtype:
                model_advice = (f", or convert the model: model.to({tensor.dtype})"
                                if tensor.dtype in (*_TORCH_DTYPES.values(), *_STORED_ONLY)
                                else " (lstm_fast runs float16, bfloat16, float32 and float64 "
                                "modules)")
                checked_by_torch = isinstance(self, FastRecurrent) and not (
                    packed and self.fast.mode == "LSTM")
                error = ValueError if what == "input" and checked_by_torch else RuntimeError
                raise error(
                    f"{type(self.fast).__name__} {what} dtype ({tensor.dtype}) does not match "
                    f"weight dtype ({self.dtype}). Convert {what}: .to({self.dtype}){model_advice}"
                )

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        for name, array in self.fast.state_dict().items():
            destination[prefix + name] = torch.from_numpy(array).to(self.dtype)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        names = self.fast.state_dict().keys()
        mine = {name: state_dict[prefix + name] for name in names if prefix + name in state_dict}
        missing_keys.extend(prefix + name for name in names if name not in mine)
        unexpected_keys.extend(key for key in state_dict
                               if key.startswith(prefix) and key[len(prefix):] not in names)
        where = f"in {prefix[:-1] or 'the module'}"
        before = self.fast, self._stored_as
        if local_metadata.get("assign_to_params_buffers", False):
            # load_state_dict(assign=True): torch's module takes the
            # checkpoint's tensors, and with them their dtype.
            dtypes = {value.dtype for value in mine.values() if isinstance(value, torch.Tensor)}
            integral = sorted(str(dtype) for dtype in dtypes
                              if not dtype.is_floating_point and not dtype.is_complex)
            if integral:  # torch's Parameter refuses them too (no gradient)
                error_msgs.append(f"{where}: assign=True with tensors of {', '.join(integral)}: "
                                  f"parameters must be floating-point")
                return
            if len(dtypes) > 1:
                error_msgs.append(f"{where}: assign=True with tensors of several dtypes "
                                  f"({', '.join(sorted(map(str, dtypes)))}): a swapped module "
                                  f"holds one")
                return
            if dtypes and (dtype := dtypes.pop()) != self.dtype:
                try:
                    self._convert(dtype)
                except TypeError as error:
                    error_msgs.append(f"{where}: {error}")
                    return
        # Real values take the weights' dtype, as torch's copy_ into a
        # parameter does (a bfloat16 checkpoint has no NumPy form of its own).
        mine = {name: value.to(self.dtype) if isinstance(value, torch.Tensor)
                and not value.is_complex() else value for name, value in mine.items()}
        try:
            arrays = {name: _numpy(value, name) for name, value in mine.items()}
            if self._stored_as is not None:  # arrays too round as the weights do
                arrays = {name: torch.from_numpy(np.array(array, np.float32)).to(
                    self._stored_as).float().numpy() if array.dtype.kind == "f" else array
                    for name, array in arrays.items()}
            self.fast.load_state_dict(arrays, strict=False)
        except (TypeError, ValueError) as error:  # shapes or dtypes: torch's way to report
            error_msgs.append(f"{where}: {error}")
            self.fast, self._stored_as = before  # a refused load changes nothing

    def to_torch(self):
        """The equivalent torch module, with the current parameters."""
        module = self.fast.to_torch()
        return module if self._stored_as is None else module.to(self._stored_as)

    def _torch_module_to_record(self):
        """to_torch(), built outside the trace being recorded (if any): its
        construction (random initialisation, the copies of the parameters)
        is no part of the model, and torch.onnx.export has no operator for
        some of it. torch offers no public way to pause a trace. Its
        parameters enter the graph as constants, which must not require
        gradients (nor would they have any here)."""
        get_state = getattr(torch._C, "_get_tracing_state", None)
        set_state = getattr(torch._C, "_set_tracing_state", None)
        state = get_state() if get_state is not None and set_state is not None else None
        if state is None:
            return self.to_torch().requires_grad_(False)
        set_state(None)
        try:
            return self.to_torch().requires_grad_(False)
        finally:
            set_state(state)

    def __prepare_scriptable__(self):
        # torch.jit.script asks this of every submodule, and puts what it
        # returns into the model itself: handing it a torch module would
        # quietly restore the user's model, so refuse instead.
        raise RuntimeError(
            f"a swapped {type(self.fast).__name__} runs NumPy and C code, which TorchScript "
            f"cannot compile: script a restored copy, "
            f"lstm_fast.torch.restore_modules(copy.deepcopy(model)), or trace the model "
            f"(torch.jit.trace and torch.onnx.export record torch's own module for it)")

    def extra_repr(self):
        stored = "" if self._stored_as is None else f", stored_as={self._stored_as}"
        return f"lstm_fast.{self.fast!r}, isa={self.fast.isa!r}{stored}"


class FastRecurrent(_FastBase):
    """An nn.LSTM / nn.GRU / nn.RNN replacement running lstm_fast."""

    def __init__(self, module):
        super().__init__(_LAYERS[type(module)].from_torch(module), _stored_as_of(module))

    def forward(self, input, hx=None):
        if _recording_a_graph():
            return self._torch_module_to_record()(input, hx)
        fast = self.fast
        packed = isinstance(input, PackedSequence)
        self._check_tensors(input.data if packed else input, hx, packed)
        with torch.no_grad():
            lengths = None
            if packed:
                padded, lengths = pad_packed_sequence(input, batch_first=fast.batch_first)
                x, lengths = _numpy(padded), lengths.numpy()
                reference = input.data
            else:
                x, reference = _numpy(input), input
            with _shape_errors_as_torch(packed or input.dim() in (2, 3)):
                output, states = fast(x, _state_numpy(hx), lengths=lengths)
            # lstm_fast's layers return empty outputs for no time steps;
            # torch's refuse them (after checking the sizes, as above), and a
            # swapped module keeps to torch.
            if not packed and input.shape[1 if input.dim() == 3 and fast.batch_first else 0] == 0:
                raise RuntimeError("Expected sequence length to be larger than 0 in RNN")
            dtype = self.dtype
            output = _tensor(output, reference, dtype)
            if fast.mode == "LSTM":
                states = (_tensor(states[0], reference, dtype),
                          _tensor(states[1], reference, dtype))
            else:
                states = _tensor(states, reference, dtype)
            if packed:
                output = self._repack(output, input)
        return output, states

    def flatten_parameters(self):
        """Nothing to do (torch's lays weights out for cuDNN); here so that model
        code calling it keeps working after the swap."""

    def _repack(self, output, like):
        # The packed data of step t holds the sequences still running at t, in
        # the input's sorted order: the same batch_sizes and indices as torch.
        time_major = output.transpose(0, 1) if self.fast.batch_first else output
        order = like.sorted_indices
        if order is None:
            order = torch.arange(time_major.shape[1], device=output.device)
        data = torch.cat([time_major[t, order[:size]] for t, size in enumerate(like.batch_sizes)])
        return PackedSequence(data, like.batch_sizes, like.sorted_indices, like.unsorted_indices)


class FastCell(_FastBase):
    """An nn.LSTMCell / nn.GRUCell / nn.RNNCell replacement running lstm_fast."""

    def __init__(self, module):
        super().__init__(_CELLS[type(module)].from_torch(module), _stored_as_of(module))

    def forward(self, input, hx=None):
        if _recording_a_graph():
            return self._torch_module_to_record()(input, hx)
        self._check_tensors(input, hx)
        with torch.no_grad():
            # torch's cells raise ValueError for input or states of a wrong
            # number of dimensions (its layers only for the input).
            states = hx if isinstance(hx, (tuple, list)) else () if hx is None else (hx,)
            dims_accepted = input.dim() in (1, 2) and all(
                not isinstance(state, torch.Tensor) or state.dim() in (1, 2) for state in states)
            with _shape_errors_as_torch(dims_accepted):
                result = self.fast(_numpy(input), _state_numpy(hx))
            if isinstance(result, tuple):
                return tuple(_tensor(r, input, self.dtype) for r in result)
            return _tensor(result, input, self.dtype)


_TORCH_MODULES_DIR = os.path.dirname(sys.modules[nn.Module.__module__].__file__)


def _stacklevel_of_caller():
    """The stacklevel of the first frame outside this file and torch.nn's
    module machinery (whose depth varies with hooks): a warning then points
    at the model code that called the module."""
    frame, level = sys._getframe(1), 1
    while frame is not None and (frame.f_code.co_filename == __file__ or
                                 frame.f_code.co_filename.startswith(_TORCH_MODULES_DIR)):
        frame, level = frame.f_back, level + 1
    return level


_is_exporting = getattr(torch.compiler, "is_exporting", lambda: False)


def _recording_a_graph():
    """Whether torch is recording this call into a graph. lstm_fast's results
    would enter it as constants, the same whatever the input: under
    torch.jit.trace (and torch.onnx.export's TorchScript path) the swapped
    modules have torch's own modules, built from their parameters, recorded
    instead; torch.export, which runs on fake tensors, they refuse."""
    if _is_exporting():
        raise RuntimeError("torch.export cannot record lstm_fast's modules, which run NumPy "
                           "and C code: export a restored copy, "
                           "lstm_fast.torch.restore_modules(copy.deepcopy(model)), or trace "
                           "the model (torch.jit.trace, torch.onnx.export(..., dynamo=False))")
    return torch.jit.is_tracing()


def _stored_as_of(module):
    dtype = next(module.parameters()).dtype  # torch's modules have weights
    return dtype if dtype in _STORED_ONLY else None


def _swap(model, convert):
    # Every replacement is built before any is put in place, so a module
    # that cannot be converted leaves the model untouched. A module
    # reachable twice (tied between two parents, or two names in one) gets
    # one replacement, reused everywhere: a shared module stays shared, and
    # restoring gives back one shared torch module. _modules, not
    # named_children(), which skips a repeat within a parent.
    replacements = {}  # id(module) -> (module, its replacement or None)
    edges = []  # (parent, name, child) for every child slot reached

    def visit(module):
        if id(module) in replacements:
            return
        replaced = convert(module)
        replacements[id(module)] = (module, replaced)  # the module kept alive for id()
        if replaced is None:
            for name, child in list(module._modules.items()):
                if child is not None:
                    edges.append((module, name, child))
                    visit(child)

    visit(model)
    for parent, name, child in edges:
        replaced = replacements[id(child)][1]
        if replaced is not None:
            setattr(parent, name, replaced)
    root = replacements[id(model)][1]
    return model if root is None else root


# Hooks that run around forward move with a swap as the very dicts torch
# keeps them in, so they fire on the replacement and the handles torch gave
# out still remove them. Hooks on gradients or on state_dict could not run as
# registered: a module carrying them is refused rather than silently losing
# them.
_FORWARD_HOOKS = ("_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_forward_hooks",
                  "_forward_hooks_with_kwargs", "_forward_hooks_always_called")
_REFUSED_HOOKS = {"_backward_hooks": "backward", "_backward_pre_hooks": "backward",
                  "_state_dict_hooks": "state_dict", "_state_dict_pre_hooks": "state_dict",
                  "_load_state_dict_pre_hooks": "load_state_dict",
                  "_load_state_dict_post_hooks": "load_state_dict"}


def _with_hooks_of(source, replacement):
    for name in _FORWARD_HOOKS:
        if name in vars(source):
            object.__setattr__(replacement, name, vars(source)[name])
    return replacement


def _refuse_unmovable_hooks(module, swap):
    for name, kind in _REFUSED_HOOKS.items():
        if vars(module).get(name):
            raise TypeError(f"{type(module).__name__} has {kind} hooks, which a swapped module "
                            f"could not run; remove them before {swap} (forward hooks are "
                            f"carried over)")


def _to_fast(module):
    # Exact types: a subclass may change forward, which a swap would lose.
    if type(module) not in _LAYERS and type(module) not in _CELLS:
        return None
    # torch builds cells of no inputs or no hidden units (its layers refuse
    # them, as lstm_fast's do); such a cell has nothing to speed up, so it
    # stays torch's, and the rest of the model still swaps.
    if module.input_size == 0 or module.hidden_size == 0:
        return None
    _refuse_unmovable_hooks(module, "replace_modules")
    for name, parameter in module.named_parameters():
        if parameter.device.type != "cpu":
            raise RuntimeError(f"lstm_fast runs on the CPU: {type(module).__name__}'s {name} "
                               f"is on {parameter.device}; move the model (model.cpu()) before "
                               f"replace_modules")
        if parameter.dtype not in (*_TORCH_DTYPES.values(), *_STORED_ONLY):
            raise TypeError(f"lstm_fast runs float32 and float64 (float16 and bfloat16 "
                            f"through float32): {type(module).__name__}'s {name} is "
                            f"{parameter.dtype}; convert the model (model.float()) before "
                            f"replace_modules")
    return _with_hooks_of(module, FastRecurrent(module) if type(module) in _LAYERS
                          else FastCell(module))


def replace_modules(model):
    """Replace every torch recurrent layer and cell in `model` (in place) by its
    lstm_fast counterpart; returns the model (or the replacement, when `model`
    itself is one). Parameters are copied: later edits of the originals do
    not reach the copies. Forward hooks move to the replacements; a module
    with backward or state_dict hooks is refused (TypeError), and then no
    module is replaced."""
    return _swap(model, _to_fast)


def restore_modules(model):
    """The reverse of replace_modules: torch modules back in place, built from
    the lstm_fast copies' parameters (returned in eval mode)."""
    def to_torch(module):
        if not isinstance(module, _FastBase):
            return None
        _refuse_unmovable_hooks(module, "restore_modules")
        return _with_hooks_of(module, module.to_torch())

    return _swap(model, to_torch)
