"""Thin wrappers of the lstm_fast C core (csrc/lstm_fast.h).

This module is called directly by tests as well as by lstm_fast.layers, so it
checks every array's dtype, shape and contiguity itself before a pointer is
taken: a wrong array must raise, never reach C. The C status -> exception
mapping lives in _check alone.

The GIL is released around every C call that runs more than a few arithmetic
instructions: planning, packing, forward, the vector functions, and CPU
detection (CPUID and XGETBV trap to the hypervisor in a virtual machine: about
5 us for isa_best() on the bench machine). The O(1) arithmetic queries (names,
sizes) keep it: handing the GIL over costs more than they do, and in
Engine.forward a second release would make concurrent callers queue for the
GIL twice per call.
"""
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memset

cimport cython
cimport numpy as cnp

import math
import operator
import sys
import weakref

import numpy as np

# Engine.forward is on the path of every streaming step, so it reads array
# pointers and allocates its outputs through NumPy's C API: a typed memoryview
# per array cost more than the step of a small layer.
cnp.import_array()

_FLOAT32 = np.dtype(np.float32)
_FLOAT64 = np.dtype(np.float64)
# The least magnitude that rounds to float32 infinity: FLT_MAX plus half its ulp.
_FLOAT32_OVERFLOW = float(np.finfo(np.float32).max) + 2.0 ** 103
_INT64 = np.dtype(np.int64)
MAX_THREADS = LF_MAX_THREADS

_CELL_KINDS = {
    "lstm": LF_CELL_LSTM,
    "gru": LF_CELL_GRU,
    "rnn_tanh": LF_CELL_RNN_TANH,
    "rnn_relu": LF_CELL_RNN_RELU,
}

# ONNX's activation names, lower-cased (the ONNX functions lower-case theirs).
_ACTIVATIONS = {
    "sigmoid": LF_ACT_SIGMOID,
    "tanh": LF_ACT_TANH,
    "relu": LF_ACT_RELU,
    "affine": LF_ACT_AFFINE,
    "leakyrelu": LF_ACT_LEAKY_RELU,
    "thresholdedrelu": LF_ACT_THRESHOLDED_RELU,
    "scaledtanh": LF_ACT_SCALED_TANH,
    "hardsigmoid": LF_ACT_HARD_SIGMOID,
    "elu": LF_ACT_ELU,
    "softsign": LF_ACT_SOFTSIGN,
    "softplus": LF_ACT_SOFTPLUS,
}
# Activations per cell kind: ONNX's f, g, h roles.
_ROLES = {"lstm": 3, "gru": 2, "rnn_tanh": 1, "rnn_relu": 1}


def activation_names():
    """Activation names Engine accepts (ONNX's, lower-cased)."""
    return tuple(_ACTIVATIONS)


cdef int _check(lf_status status, str context) except -1:
    """Raise the exception the contract assigns to a C status; return 0 for LF_OK."""
    if status == LF_OK:
        return 0
    message = f"{context}: {lf_status_string(status).decode('utf-8', 'replace')}"
    if status in (LF_ERR_BAD_DIMENSION, LF_ERR_OVERFLOW, LF_ERR_BAD_CELL_KIND, LF_ERR_BAD_LENGTH,
                  LF_ERR_BAD_ISA, LF_ERR_ISA_UNAVAILABLE, LF_ERR_BAD_INDEX, LF_ERR_BAD_OPTION):
        raise ValueError(message)
    if status == LF_ERR_BAD_DTYPE:
        raise TypeError(message)
    if status == LF_ERR_OUT_OF_MEMORY:
        raise MemoryError(message)
    if status == LF_ERR_THREADS:
        raise OSError(message)
    # NULL pointers and short buffers are this wrapper's job to prevent, so they
    # mean a bug in lstm_fast rather than bad input.
    raise RuntimeError(f"{message} (status {<int>status}; this is a bug in lstm_fast)")


cdef int _parse_isa(object name, lf_isa *out) except -1:
    cdef lf_status status
    cdef const char *text
    if not isinstance(name, str):
        raise TypeError(f"isa must be a str, got {type(name).__name__}")
    if "\0" in name:  # C would read only up to it
        raise ValueError(f"isa {name!r}: an ISA name has no NUL character")
    encoded = name.encode("utf-8")
    text = encoded
    with nogil:  # "auto" runs CPU detection
        status = lf_isa_parse(text, out)
    if status != LF_OK:
        _check(status, f"isa {name!r}")
    return 0


cdef int _parse_dtype(object dtype, str name, lf_dtype *out) except -1:
    resolved = None
    # numpy.dtype(None) means float64; here None is a mistake, not a default.
    if dtype is not None:
        try:
            resolved = np.dtype(dtype)
        except (TypeError, ValueError):
            pass
    if resolved is not None and resolved == _FLOAT32:
        out[0] = LF_FLOAT32
    elif resolved is not None and resolved == _FLOAT64:
        out[0] = LF_FLOAT64
    else:
        raise TypeError(f"{name} must be float32 or float64, got {dtype!r}")
    return 0


cdef int64_t _size(str name, object value) except? -1:
    try:
        number = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(value).__name__}") from None
    if not -2**63 <= number < 2**63:
        raise ValueError(f"{name}={number} does not fit in int64")
    return number


cdef int _parse_activations(object activations, str cell, int64_t num_directions,
                            lf_desc *desc) except -1:
    """Fill desc.activations from None (the cell's own functions) or one sequence
    per direction of one (name, alpha, beta) per role."""
    cdef int64_t direction
    cdef int role
    if activations is None:
        return 0
    roles = _ROLES[cell]
    if not isinstance(activations, (list, tuple)):
        raise TypeError(f"activations must be None or a list or tuple with one entry per "
                        f"direction, got {type(activations).__name__}")
    # Snapshots (here and of each entry): float() and str.lower() below may
    # run the caller's code, which must not change what was length-checked.
    activations = tuple(activations)
    if len(activations) != num_directions:
        raise ValueError(f"activations must hold one entry per direction ({num_directions}), "
                         f"got {len(activations)}")
    for direction in range(num_directions):
        entry = activations[direction]
        if not isinstance(entry, (list, tuple)):
            raise TypeError(f"activations[{direction}] must be a list or tuple of {roles} "
                            f"(name, alpha, beta), got {type(entry).__name__}")
        entry = tuple(entry)
        if len(entry) != roles:
            raise ValueError(f"activations[{direction}] must hold {roles} (name, alpha, beta) "
                             f"for a {cell} cell, got {len(entry)}")
        for role in range(roles):
            where = f"activations[{direction}][{role}]"
            try:
                name, alpha, beta = entry[role]
            except (TypeError, ValueError):
                raise ValueError(f"{where} must be a (name, alpha, beta) triple, "
                                 f"got {entry[role]!r}") from None
            kind = _ACTIVATIONS.get(name.lower()) if isinstance(name, str) else None
            if kind is None:
                raise ValueError(f"{where}: unknown activation {name!r}; "
                                 f"expected one of {', '.join(_ACTIVATIONS)}")
            try:
                alpha_value, beta_value = float(alpha), float(beta)
            except OverflowError:  # an int past the float range
                raise ValueError(f"{where}: alpha and beta must be finite, "
                                 f"got {alpha!r}, {beta!r}") from None
            except (TypeError, ValueError):
                raise TypeError(f"{where}: alpha and beta must be numbers, "
                                f"got {alpha!r}, {beta!r}") from None
            alpha, beta = alpha_value, beta_value
            if not (math.isfinite(alpha) and math.isfinite(beta)):
                raise ValueError(f"{where}: alpha and beta must be finite, "
                                 f"got {alpha!r}, {beta!r}")
            if desc.dtype == LF_FLOAT32 and max(abs(alpha), abs(beta)) >= _FLOAT32_OVERFLOW:
                raise ValueError(f"{where}: alpha and beta of a layer computing in float32 "
                                 f"must be finite as float32 values (below "
                                 f"{_FLOAT32_OVERFLOW!r} in magnitude), got {alpha!r}, {beta!r}")
            desc.activations[direction][role].kind = kind
            desc.activations[direction][role].alpha = alpha
            desc.activations[direction][role].beta = beta
    return 0


cdef str _shape_text(tuple shape):
    trailing_comma = "," if len(shape) == 1 else ""
    return "(" + ", ".join([str(extent) for extent in shape]) + trailing_comma + ")"


cdef int _require_array(str name, object array, object dtype, tuple shape) except -1:
    """Check what the C core assumes of an array: an aligned, native byte order,
    C-contiguous ndarray of `dtype` with `shape` (at most 3 axes; entries that
    are not ints, e.g. "T", name a free extent). NumPy's C API decides
    (_fits_nd); the Python-level checks below only word the message, since an
    ndarray subclass can override .shape, .flags or .reshape but not the
    fields C reads."""
    cdef int64_t extents[3]
    cdef int axis
    cdef int ndim = len(shape)
    for axis in range(3):
        extents[axis] = (shape[axis] if axis < ndim and isinstance(shape[axis], int) else -1)
    if _fits_nd(array, (<cnp.dtype>dtype).type_num, ndim, extents[0], extents[1], extents[2]):
        return 0
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(array).__name__}")
    if array.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype}, got {array.dtype}")
    actual = array.shape
    matches = len(actual) == len(shape)
    if matches:
        for expected, extent in zip(shape, actual):
            if isinstance(expected, int) and expected != extent:
                matches = False
                break
    if not matches:
        raise ValueError(f"{name} must have shape {_shape_text(shape)}, got {actual}")
    if not array.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    if not array.flags.aligned:
        raise ValueError(f"{name} must be aligned to its element size")
    raise ValueError(f"{name} must be an aligned, C-contiguous numpy.ndarray of {dtype} in "
                     f"native byte order with shape {_shape_text(shape)}")


cdef inline bint _fits(object array, int typenum, int64_t d0, int64_t d1, int64_t d2):
    """The fast check of what C needs: an aligned, native-byte-order, C-contiguous
    ndarray of typenum; d* are the extents, -1 for any, d1 = d2 = -2 for 1-D.
    When it fails, the callers rerun the slow checks for a helpful message."""
    if d1 == -2:
        return _fits_nd(array, typenum, 1, d0, 0, 0)
    return _fits_nd(array, typenum, 3, d0, d1, d2)


cdef inline bint _fits_nd(object array, int typenum, int ndim, int64_t d0, int64_t d1,
                          int64_t d2):
    """_fits for ndim (1 to 3) extents d0, d1, d2 (the first ndim of them; -1
    for any)."""
    cdef cnp.ndarray a
    cdef cnp.npy_intp *dims
    cdef int64_t expected[3]
    cdef int axis
    if not cnp.PyArray_Check(array):
        return False
    a = <cnp.ndarray>array
    # Equivalent, not equal: on Linux int64 is NPY_LONG, yet an array built
    # from C long long (array.array('q')) is NPY_LONGLONG, the same type.
    if (not cnp.PyArray_EquivTypenums(cnp.PyArray_TYPE(a), typenum) or cnp.PyArray_NDIM(a) != ndim
            or not cnp.PyArray_IS_C_CONTIGUOUS(a) or not cnp.PyArray_ISALIGNED(a)
            or not cnp.PyArray_ISNOTSWAPPED(a)):
        return False
    dims = cnp.PyArray_DIMS(a)
    expected[0] = d0
    expected[1] = d1
    expected[2] = d2
    for axis in range(ndim):
        if expected[axis] >= 0 and dims[axis] != expected[axis]:
            return False
    return True


cdef inline void *_pointer(object array):
    """The data of None or of an ndarray that passed _fits_nd (or was made
    here); the caller keeps the array alive through the C call. Empty arrays
    give NULL, which the C core accepts for zero elements."""
    if array is None or cnp.PyArray_SIZE(<cnp.ndarray>array) == 0:
        return NULL
    return cnp.PyArray_DATA(<cnp.ndarray>array)


cdef object _empty(int ndim, int64_t d0, int64_t d1, int64_t d2, int typenum):
    cdef cnp.npy_intp dims[3]
    dims[0] = d0
    dims[1] = d1
    dims[2] = d2
    return cnp.PyArray_EMPTY(ndim, dims, typenum, 0)


cdef object _state_array(int ndim, int64_t stacked, int64_t batch, int64_t width, int typenum):
    """A final state as the caller's initial state is shaped (Engine._run)."""
    if ndim == 3:
        return _empty(3, stacked, batch, width, typenum)
    if ndim == 2:
        return _empty(2, stacked * batch, width, 0, typenum)
    return _empty(1, width, 0, 0, typenum)


cdef inline bint _unmasked_array(object array):
    """An ndarray the fast paths may read through its C fields: any but a
    masked array, whose mask they would ignore (the converting path refuses
    masked values). No MaskedArray exists unless numpy.ma was imported, so
    this imports nothing."""
    if cnp.PyArray_CheckExact(array):
        return True
    if not cnp.PyArray_Check(array):
        return False
    masked = sys.modules.get("numpy.ma")
    return masked is None or not isinstance(array, masked.MaskedArray)


cdef inline bint _state_fits(object array, int typenum, int ndim, int64_t stacked, int64_t batch,
                             int64_t width):
    """_fits_nd for a state shaped as _state_array makes it, and not masked."""
    if not _unmasked_array(array):
        return False
    if ndim == 3:
        return _fits_nd(array, typenum, 3, stacked, batch, width)
    if ndim == 2:
        return _fits_nd(array, typenum, 2, stacked * batch, width, 0)
    return _fits_nd(array, typenum, 1, width, 0, 0)


def version():
    """Version of the C core (LF_VERSION_STRING)."""
    return LF_VERSION_STRING.decode("ascii")


def isa_names():
    """Every ISA the C core knows, least to most capable."""
    cdef int index
    return tuple([lf_isa_name(<lf_isa>index).decode("ascii") for index in range(<int>LF_ISA_COUNT)])


def isa_compiled(name):
    """True if kernels for the ISA `name` were compiled into this build."""
    cdef lf_isa isa
    _parse_isa(name, &isa)
    return lf_isa_compiled(isa) != 0


def isa_available(name):
    """True if the ISA `name` was compiled in and this CPU and OS can run it."""
    cdef lf_isa isa
    cdef int available
    _parse_isa(name, &isa)
    with nogil:
        available = lf_isa_available(isa)
    return available != 0


def isa_best():
    """Name of the most capable available ISA."""
    cdef lf_isa best
    with nogil:
        best = lf_isa_best()
    return lf_isa_name(best).decode("ascii")


def l2_cache_bytes():
    """Bytes of a core's L2 cache as the CPU reports it (0: unknown)."""
    cdef int64_t bytes
    with nogil:  # CPUID traps to the hypervisor in a VM
        bytes = lf_cpu_l2_bytes()
    return bytes


def isa_vector_width(name, dtype):
    """Elements per SIMD vector of the ISA `name` for float32 or float64."""
    cdef lf_isa isa
    cdef lf_dtype parsed_dtype
    _parse_isa(name, &isa)
    _parse_dtype(dtype, "dtype", &parsed_dtype)
    return lf_isa_vector_width(isa, parsed_dtype)


cdef object _vector(object x, object isa_name, bint sigmoid):
    cdef lf_isa isa
    cdef lf_dtype dtype
    cdef lf_status status
    cdef const void *source
    cdef void *target
    cdef int64_t count
    _parse_isa(isa_name, &isa)
    array = np.asarray(x)
    _parse_dtype(array.dtype, "x", &dtype)
    if array.ndim != 1:
        raise ValueError(f"x must be 1-D, got shape {array.shape}")
    # A plain, aligned, contiguous copy when x is not one already.
    array = np.require(array, requirements=("C", "A"))
    result = np.empty(array.shape[0], array.dtype)
    source = _pointer(array)
    target = _pointer(result)
    count = array.shape[0]
    with nogil:
        if sigmoid:
            status = lf_vector_sigmoid(isa, dtype, source, target, count)
        else:
            status = lf_vector_tanh(isa, dtype, source, target, count)
    _check(status, "vector_sigmoid" if sigmoid else "vector_tanh")
    return result


def vector_sigmoid(x, isa):
    """Elementwise logistic sigmoid of a 1-D float32/float64 array with the kernels of `isa`."""
    return _vector(x, isa, True)


def vector_tanh(x, isa):
    """Elementwise tanh of a 1-D float32/float64 array with the kernels of `isa`."""
    return _vector(x, isa, False)


cdef class Engine:
    """A planned network with packed weights, ready to run forward passes.

    Immutable once built, so one Engine can serve several threads at once; a
    change of parameters means building a new Engine (and calling supersede()
    on the old one).

    Parameters
    ----------
    cell : {"lstm", "gru", "rnn_tanh", "rnn_relu"}
    input_size, hidden_size, proj_size, num_layers, num_directions : int
    bias : bool
    dtype : numpy.float32 or numpy.float64
    isa : str
        "auto" or one of isa_names().
    weights : sequence of num_layers * num_directions tuples
        Index l * num_directions + d holds (w_ih, w_hh, b_ih, b_hh, w_hr) in
        torch's layout and shapes, C-contiguous arrays of `dtype`; b_ih and
        b_hh are None iff bias is False, w_hr is None iff proj_size == 0.
        With peephole=True a sixth item holds the peepholes (3*hidden_size,)
        in the order p_i, p_f, p_o.

    Cell variants (keyword-only; see csrc/lstm_fast.h):
    peephole, coupled_input_forget : bool, LSTM only
        Gers & Schmidhuber peepholes; f = 1 - i.
    reset_before_product : bool, GRU only
        n = g(W_in x + b_in + W_hn (r * h) + b_hn) (ONNX linear_before_reset=0).
    clip : float >= 0
        Gate pre-activations clipped to [-clip, clip]; 0 for none.
    activations : None, or per direction a sequence of (name, alpha, beta)
        per role (LSTM f, g, h; GRU f, g; RNN f), names as activation_names().
    """
    cdef lf_plan _plan
    # Per layer-direction pointers into _packed_buffers, in the form lf_forward takes.
    cdef const void **_packed
    cdef list _packed_buffers
    cdef bint _is_double
    cdef unsigned int _calls  # steps run so far (calls and streams), modulo 2^32: see _run
    # Set once the module that built this engine has newer parameters: a
    # stream then asks the module for its engine again. Until then a step
    # needs no attribute lookup to know its engine is current.
    cdef bint _superseded
    cdef readonly str cell
    cdef readonly object dtype

    def __cinit__(self, str cell not None, input_size, hidden_size, proj_size, num_layers,
                  num_directions, bias, dtype, isa, weights, *, peephole=False,
                  coupled_input_forget=False, reset_before_product=False, clip=0.0,
                  activations=None):
        cdef lf_desc desc
        cdef lf_status status
        cdef Py_ssize_t count, index
        if cell not in _CELL_KINDS:
            raise ValueError(f"cell must be one of {', '.join(_CELL_KINDS)}, got {cell!r}")
        # Zero is torch's cell for every variant field.
        memset(&desc, 0, sizeof(desc))
        desc.cell = _CELL_KINDS[cell]
        _parse_dtype(dtype, "dtype", &desc.dtype)
        _parse_isa(isa, &desc.isa)
        desc.input_size = _size("input_size", input_size)
        desc.hidden_size = _size("hidden_size", hidden_size)
        desc.proj_size = _size("proj_size", proj_size)
        desc.num_layers = _size("num_layers", num_layers)
        desc.num_directions = _size("num_directions", num_directions)
        desc.has_bias = 1 if bias else 0
        desc.flags = ((LF_LSTM_PEEPHOLE if peephole else 0)
                      | (LF_LSTM_COUPLED_INPUT_FORGET if coupled_input_forget else 0)
                      | (LF_GRU_RESET_BEFORE_PRODUCT if reset_before_product else 0))
        try:
            clip_value = float(clip)
        except OverflowError:  # an int past the float range: not finite, as below
            clip_value = math.inf
        except (TypeError, ValueError):
            raise TypeError(f"clip must be a number, got {clip!r}") from None
        if not (math.isfinite(clip_value) and clip_value >= 0):
            raise ValueError(f"clip must be a finite number >= 0 (0: no clip), got {clip!r}")
        desc.clip = clip_value
        if desc.num_directions in (1, 2):  # else lf_plan_init reports it
            _parse_activations(activations, cell, desc.num_directions, &desc)
        with nogil:
            status = lf_plan_init(&self._plan, &desc)
        _check(status, f"Engine(cell={cell!r}, input_size={input_size}, hidden_size={hidden_size}, "
                       f"proj_size={proj_size}, num_layers={num_layers}, "
                       f"num_directions={num_directions})")
        self.cell = cell
        self._is_double = desc.dtype == LF_FLOAT64
        self.dtype = _FLOAT64 if self._is_double else _FLOAT32

        count = desc.num_layers * desc.num_directions
        if not isinstance(weights, (list, tuple)):
            raise TypeError(f"weights must be a list or tuple of {count} weight tuples, "
                            f"got {type(weights).__name__}")
        # A snapshot: packing releases the GIL, and another thread may change
        # the caller's list meanwhile.
        weights = tuple(weights)
        if len(weights) != count:
            raise ValueError(f"weights must hold num_layers * num_directions = {count} tuples, "
                             f"got {len(weights)}")
        self._packed = <const void **>PyMem_Malloc(count * sizeof(void *))
        if self._packed == NULL:
            raise MemoryError()
        self._packed_buffers = []
        for index in range(count):
            self._packed_buffers.append(self._pack(index, weights[index]))

    def __dealloc__(self):
        PyMem_Free(self._packed)

    def supersede(self):
        """Mark this engine as replaced by a newer one of its module (it
        still runs; streams built on it look up the module's engine again)."""
        self._superseded = True

    cdef object _pack(self, Py_ssize_t index, object group):
        """Check and pack weights[index]; store its pointer and return the buffer owning it."""
        cdef const lf_desc *desc = &self._plan.desc
        cdef int64_t layer = index // desc.num_directions
        cdef int64_t direction = index % desc.num_directions
        cdef int64_t gate_rows = self._plan.gates * desc.hidden_size
        cdef int64_t layer_input = (desc.input_size if layer == 0
                                    else desc.num_directions * self._plan.state_size)
        cdef bint has_bias = desc.has_bias != 0
        cdef bint has_projection = desc.proj_size > 0
        cdef const void *w_ih_data
        cdef const void *w_hh_data
        cdef const void *b_ih_data
        cdef const void *b_hh_data
        cdef const void *w_hr_data
        cdef const void *peephole_data
        cdef bint has_peephole = (desc.flags & LF_LSTM_PEEPHOLE) != 0
        cdef void *packed
        cdef size_t packed_bytes
        cdef lf_status status
        name = f"weights[{index}]"
        kind = type(group).__name__
        if isinstance(group, (list, tuple)):
            group = tuple(group)  # a snapshot: its length cannot change under us
        if not isinstance(group, tuple) or len(group) not in (5, 6):
            got = f"{kind} of {len(group)} items" if isinstance(group, tuple) else kind
            raise ValueError(f"{name} must be a tuple of 5 or 6 items (w_ih, w_hh, b_ih, b_hh, "
                             f"w_hr[, peephole]), got {got}")
        w_ih, w_hh, b_ih, b_hh, w_hr = group[:5]
        peephole = group[5] if len(group) == 6 else None
        _require_array(f"{name} w_ih", w_ih, self.dtype, (gate_rows, layer_input))
        _require_array(f"{name} w_hh", w_hh, self.dtype, (gate_rows, self._plan.state_size))
        for part, array in ((" b_ih", b_ih), (" b_hh", b_hh)):
            if has_bias:
                _require_array(name + part, array, self.dtype, (gate_rows,))
            elif array is not None:
                raise ValueError(f"{name}{part} must be None because bias is False")
        if has_projection:
            _require_array(f"{name} w_hr", w_hr, self.dtype, (desc.proj_size, desc.hidden_size))
        elif w_hr is not None:
            raise ValueError(f"{name} w_hr must be None because proj_size is 0")
        if has_peephole:
            _require_array(f"{name} peephole", peephole, self.dtype, (3 * desc.hidden_size,))
        elif peephole is not None:
            raise ValueError(f"{name} peephole must be None because peephole is False")

        _check(lf_plan_packed_size(&self._plan, layer, direction, &packed_bytes),
               f"{name} packed size")
        # Any alignment will do: the size includes slack the C core aligns within.
        buffer = np.empty(packed_bytes, dtype=np.uint8)
        packed = _pointer(buffer)
        w_ih_data = _pointer(w_ih)
        w_hh_data = _pointer(w_hh)
        b_ih_data = _pointer(b_ih)
        b_hh_data = _pointer(b_hh)
        w_hr_data = _pointer(w_hr)
        peephole_data = _pointer(peephole)
        with nogil:
            status = lf_pack_weights_ex(&self._plan, layer, direction, w_ih_data, w_hh_data,
                                        b_ih_data, b_hh_data, w_hr_data, peephole_data, packed,
                                        packed_bytes)
        _check(status, f"packing {name}")
        self._packed[index] = packed
        return buffer

    @property
    def isa(self):
        """Name of the ISA whose kernels this engine runs (as the kernel table
        in use names itself)."""
        return lf_isa_name(lf_plan_kernel_isa(&self._plan)).decode("ascii")

    @property
    def input_size(self):
        return self._plan.desc.input_size

    @property
    def hidden_size(self):
        return self._plan.desc.hidden_size

    @property
    def proj_size(self):
        return self._plan.desc.proj_size

    @property
    def num_layers(self):
        return self._plan.desc.num_layers

    @property
    def num_directions(self):
        return self._plan.desc.num_directions

    @property
    def bias(self):
        return self._plan.desc.has_bias != 0

    @property
    def generic(self):
        """True when a variant, clip or non-default activation puts this engine on
        the kernels' general path (the default sigmoid/tanh path is faster)."""
        return self._plan.generic != 0

    @property
    def state_size(self):
        """Width of h: proj_size when projecting, else hidden_size."""
        return self._plan.state_size

    @property
    def ahead_cache_bytes(self):
        """A batch of one projects its input ahead (schedule's ahead_rows) only
        while every layer's packed W_ih is smaller than this (and W_hh too
        large for the steps' sums in halves, schedule's recurrent_halves): the largest
        cache that streams to a core at about its L2's rate (0: this ISA's
        kernels never project ahead)."""
        return self._plan.ahead_cache_bytes

    def __repr__(self):
        return (f"Engine(cell={self.cell!r}, input_size={self.input_size}, "
                f"hidden_size={self.hidden_size}, proj_size={self.proj_size}, "
                f"num_layers={self.num_layers}, num_directions={self.num_directions}, "
                f"bias={self.bias}, dtype={self.dtype}, isa={self.isa!r})")

    def forward(self, x, h0=None, c0=None, lengths=None, ThreadPool pool=None, threads=0):
        """Run the network over a batch of sequences.

        Parameters
        ----------
        x : ndarray (T, B, input_size), C-contiguous, of the engine's dtype
        h0 : ndarray (num_layers * num_directions, B, state_size) or None for zeros
        c0 : ndarray (num_layers * num_directions, B, hidden_size) or None for
            zeros; must be None unless the cell is an LSTM
        lengths : int64 ndarray (B,) with values in [0, T], or None for all T
        pool : ThreadPool or None (the calling thread alone)
        threads : 0 to use as many of the pool's threads as the work repays
            (two, pipelined, for small steps: schedule), k > 0 to split the
            steps over exactly min(k, pool threads, hidden blocks). Results
            are bitwise identical either way.

        Returns
        -------
        y : ndarray (T, B, num_directions * state_size)
        h_n : ndarray (num_layers * num_directions, B, state_size)
        c_n : ndarray (num_layers * num_directions, B, hidden_size), or None
            unless the cell is an LSTM
        """
        cdef const lf_desc *desc = &self._plan.desc
        cdef int64_t stacked = desc.num_layers * desc.num_directions
        cdef int64_t state_size = self._plan.state_size
        cdef bint is_lstm = desc.cell == LF_CELL_LSTM
        cdef int typenum = cnp.NPY_FLOAT64 if self._is_double else cnp.NPY_FLOAT32
        cdef int64_t batch, steps
        if not _fits(x, typenum, -1, -1, desc.input_size):
            _require_array("x", x, self.dtype, ("T", "B", desc.input_size))
        batch = cnp.PyArray_DIMS(<cnp.ndarray>x)[1]
        if h0 is not None and not _fits(h0, typenum, stacked, batch, state_size):
            _require_array("h0", h0, self.dtype, (stacked, batch, state_size))
        if c0 is not None:
            if not is_lstm:
                raise ValueError(f"c0 must be None: a {self.cell} network has no cell state")
            if not _fits(c0, typenum, stacked, batch, desc.hidden_size):
                _require_array("c0", c0, self.dtype, (stacked, batch, desc.hidden_size))
        if lengths is not None and not _fits(lengths, cnp.NPY_INT64, batch, -2, -2):
            _require_array("lengths", lengths, _INT64, (batch,))
        steps = cnp.PyArray_DIMS(<cnp.ndarray>x)[0]
        if lengths is not None and batch > 0:
            shortest, longest = int(lengths.min()), int(lengths.max())
            if shortest < 0 or longest > steps:
                raise ValueError(f"lengths must be in [0, {steps}] (T), got values from "
                                 f"{shortest} to {longest}")
        threads = _size("threads", threads)
        if threads < 0:
            raise ValueError(f"threads must be >= 0, got {threads}")
        # More than the pool can have is the same request as the pool's all.
        return self._run(x, h0, c0, lengths, pool, min(threads, LF_MAX_THREADS), steps, batch,
                         3, 3)

    def workspace_bytes(self, steps, batch):
        """Scratch bytes one forward of `steps` x `batch` allocates: bounded in
        `steps` for one layer (the input projection runs in time chunks); a
        stacked network also keeps one layer's whole output sequence."""
        cdef size_t bytes
        _check(lf_plan_workspace_size(&self._plan, _size("steps", steps), _size("batch", batch),
                                      &bytes), "workspace size")
        return bytes

    def schedule(self, steps, batch):
        """How a forward of `steps` x `batch` runs (lf_plan_schedule): time
        steps per input-projection chunk, the block of a batch of one that
        projects its input ahead (0: none), the chunk a forward on two
        threads or more pipelines in (0: none), and whether the input
        projections and the recurrent ones run on AMX tiles. The same bits
        either way, but for the last two; for tests and tuning."""
        cdef lf_schedule sched
        _check(lf_plan_schedule(&self._plan, _size("steps", steps), _size("batch", batch),
                                &sched), "schedule")
        return {"chunk_steps": sched.chunk_steps, "ahead_rows": sched.ahead_rows,
                "pipeline_steps": sched.pipeline_steps,
                "input_on_amx": bool(sched.input_on_amx),
                "recurrence_on_amx": bool(sched.recurrence_on_amx),
                "recurrent_halves": bool(sched.recurrent_halves)}

    def call_fast(self, input, hx, ThreadPool pool, bint cell=False, bint batch_first=False):
        """The per-call fast path of the layers and cells: when `input` and `hx`
        (None, h, or for an LSTM the tuple (h, c)) are already C-contiguous
        arrays of the engine's dtype with exactly the shapes torch takes, run
        and return torch's result structure; otherwise return None and let the
        caller convert and validate.

        layer (cell False): input (T, B, input_size), or (T, input_size)
            unbatched; states (S, B, .) or (S, .). Returns (y, (h_n, c_n)) for an
            LSTM, else (y, h_n). batch_first layers pass only unbatched input.
        cell (a one-layer, one-direction engine): input (B, input_size), or
            (input_size,) unbatched; states (B, .) or (.,). Returns (h', c')
            for an LSTM, else h'.
        """
        cdef const lf_desc *desc = &self._plan.desc
        cdef int typenum = cnp.NPY_FLOAT64 if self._is_double else cnp.NPY_FLOAT32
        cdef int64_t stacked = desc.num_layers * desc.num_directions
        cdef int64_t steps, batch
        cdef cnp.npy_intp *dims
        cdef int ndim
        cdef bint is_lstm = desc.cell == LF_CELL_LSTM
        if not _unmasked_array(input):
            return None
        ndim = cnp.PyArray_NDIM(<cnp.ndarray>input)
        dims = cnp.PyArray_DIMS(<cnp.ndarray>input)
        if cell:
            if stacked != 1 or ndim < 1 or ndim > 2:
                return None
            steps = 1
            batch = dims[0] if ndim == 2 else 1
        else:
            if ndim < 2 or ndim > 3 or (batch_first and ndim == 3):
                return None
            steps = dims[0]
            batch = dims[1] if ndim == 3 else 1
        # Empty calls are rare; the general path handles them.
        if steps == 0 or batch == 0 or dims[ndim - 1] != desc.input_size:
            return None
        if not _fits_nd(input, typenum, ndim, -1, -1, -1):
            # Float input of the other precision (float64 from numpy.random
            # into a float32 layer), or a strided view: one cast here is far
            # cheaper than the converting path's checks (a tiny streaming
            # step: ~7 us instead of ~30 us on the bench machine).
            if cnp.PyArray_TYPE(<cnp.ndarray>input) not in (cnp.NPY_FLOAT16, cnp.NPY_FLOAT32,
                                                            cnp.NPY_FLOAT64):
                return None
            input = cnp.PyArray_FROMANY(input, typenum, ndim, ndim,
                                        cnp.NPY_ARRAY_C_CONTIGUOUS | cnp.NPY_ARRAY_ALIGNED
                                        | cnp.NPY_ARRAY_FORCECAST)
        h0 = c0 = None
        if hx is not None:
            if is_lstm:
                if type(hx) is not tuple or len(<tuple>hx) != 2:
                    return None
                h0, c0 = <tuple>hx
                if not _state_fits(c0, typenum, ndim, stacked, batch, desc.hidden_size):
                    return None
            else:
                h0 = hx
            if not _state_fits(h0, typenum, ndim, stacked, batch, self._plan.state_size):
                return None
        y, h_n, c_n = self._run(input, h0, c0, None, pool, 0, steps, batch,
                                0 if cell else ndim, ndim)
        if cell:
            return (h_n, c_n) if is_lstm else h_n
        return (y, (h_n, c_n)) if is_lstm else (y, h_n)

    cdef tuple _run(self, x, h0, c0, lengths, ThreadPool pool, int threads, int64_t steps,
                    int64_t batch, int y_ndim, int state_ndim):
        """forward() after its checks. The outputs' shapes: y_ndim 3 (T, B, D*R),
        2 (T*B, D*R), 0 none (scratch: a cell's caller wants only the state);
        state_ndim 3 (S, B, .), 2 (S*B, .), 1 (.) with S*B = 1."""
        cdef const lf_desc *desc = &self._plan.desc
        cdef int64_t stacked = desc.num_layers * desc.num_directions
        cdef int64_t state_size = self._plan.state_size
        cdef int64_t y_width = desc.num_directions * state_size
        cdef bint is_lstm = desc.cell == LF_CELL_LSTM
        cdef int typenum = cnp.NPY_FLOAT64 if self._is_double else cnp.NPY_FLOAT32
        cdef size_t workspace_bytes, y_scratch_bytes = 0
        cdef char *scratch
        cdef lf_forward_args args
        cdef lf_status status

        _check(lf_plan_workspace_size(&self._plan, steps, batch, &workspace_bytes),
               "workspace size")
        h_n = _state_array(state_ndim, stacked, batch, state_size, typenum)
        c_n = _state_array(state_ndim, stacked, batch, desc.hidden_size, typenum) if is_lstm else None
        # What the shapes below take for granted (call_fast guarantees it).
        if ((state_ndim == 1 and stacked * batch != 1)
                or (y_ndim == 0 and (steps != 1 or desc.num_directions != 1 or stacked != 1))):
            raise SystemError("Engine._run: output shapes do not fit this call")
        if y_ndim == 3:
            y = _empty(3, steps, batch, y_width, typenum)
        elif y_ndim == 2:
            y = _empty(2, steps * batch, y_width, 0, typenum)
        else:
            # Only one-step, one-layer, one-direction calls come here: y is
            # then exactly as large as h_n, which exists, so no overflow.
            y = None
            y_scratch_bytes = (<size_t>cnp.PyArray_NBYTES(<cnp.ndarray>h_n) + 63) // 64 * 64
        if workspace_bytes > (<size_t>-1) - y_scratch_bytes - 1:
            raise MemoryError(f"forward needs more than {workspace_bytes} bytes of workspace")
        # malloc, not a NumPy array: cheaper per call, and still a fresh
        # workspace per call, so concurrent calls on one engine stay independent.
        # The + 1 keeps malloc(0), which may return NULL, from reading as failure.
        scratch = <char *>malloc(workspace_bytes + y_scratch_bytes + 1)
        if scratch == NULL:
            raise MemoryError(f"forward could not allocate "
                              f"{workspace_bytes + y_scratch_bytes + 1} bytes of workspace")
        try:
            args.T = steps
            args.B = batch
            args.x = _pointer(x)
            args.h0 = _pointer(h0)
            args.c0 = _pointer(c0)
            args.lengths = <const int64_t *>_pointer(lengths)
            args.y = _pointer(y) if y is not None else <void *>scratch
            args.h_n = _pointer(h_n)
            args.c_n = _pointer(c_n)
            args.packed = self._packed
            args.workspace = scratch + y_scratch_bytes
            args.workspace_bytes = workspace_bytes
            args.pool = pool._pool if pool is not None else NULL
            args.threads = threads
            # Results never depend on it. Steps walk the weights in orders that
            # alternate with t + step_parity; counting every step run makes
            # that alternation go on from one call to the next (one step per
            # call, or a long call whose last step would otherwise walk the
            # same order as the next call's first). A racing update is harmless.
            args.step_parity = self._calls
            self._calls += <unsigned int>steps
            with nogil:
                status = lf_forward(&self._plan, &args)
        finally:
            free(scratch)
        _check(status, "forward")
        return y, h_n, c_n




cdef object _initial_state(str name, object value, int64_t layers, int64_t batch, int64_t width,
                           object dtype, int typenum):
    """A stream's own copy of an initial state (layers, batch, width), zeros for None."""
    cdef cnp.npy_intp dims[3]
    if value is None:
        dims[0] = layers
        dims[1] = batch
        dims[2] = width
        return cnp.PyArray_ZEROS(3, dims, typenum, 0)
    _require_array(name, value, dtype, (layers, batch, width))
    return np.array(value, copy=True)


# How many forks lie between the first process and this one (note_fork_in_child,
# called by the fork hook in layers.py): a stream claimed in an earlier
# generation was claimed by a thread that does not exist here.
cdef unsigned long _fork_generation = 0


def note_fork_in_child():
    global _fork_generation
    _fork_generation += 1


@cython.auto_pickle(False)  # it would pickle the workspace pointer as bytes
cdef class StreamCore:
    """The carried state and the per-step path of lstm_fast.layers.Stream.

    Holds h (num_layers, B, state_size) and, for an LSTM, c (num_layers, B,
    hidden_size), which each step updates in place, and the workspace of a
    one-step call, allocated once: a step allocates nothing but its result
    (nothing when given `out`), which keeps a small step in the microsecond
    range. _start takes the objects it consults when its engine or pool is
    superseded: `module` (with `_engine`, an Engine or None, and
    `_current_engine()`) and `threads` (with `_pool`, a ThreadPool or None,
    and `thread_pool()`); the subclass supplies `_converted_input(input)` for
    input that is not a float ndarray of the step's shape, or is masked (it
    converts it or raises).
    """
    cdef object _module
    cdef object _threads
    cdef object _h
    cdef object _c
    cdef Engine _sized_for  # the Engine the workspace and dimensions were checked against
    # The pool of the last step, weakly: a pool set_num_threads replaced must
    # not live on (with its worker threads) in a stream that no longer steps.
    cdef object _pool_ref
    cdef char *_workspace
    cdef size_t _workspace_bytes
    cdef int64_t _batch, _num_layers, _input_size, _state_size, _hidden_size
    cdef int _typenum
    cdef lf_cell_kind _cell
    cdef bint _batched, _busy
    # _busy was set in this fork generation; _torn: the process forked while
    # another thread was using the stream, so h and c may be half-written here.
    cdef unsigned long _claimed_in
    cdef bint _torn

    def _start(self, module, threads, batch_size, bint batched, h0, c0):
        """(Re)start from h0 and c0 (None for zeros; else arrays of the
        engine's dtype shaped as h and c, copied) for the network of
        `module`'s current engine, which must have one direction.
        batch_size >= 1; 1 when not batched (inputs and outputs then have no
        batch axis). Everything is checked and allocated before the stream
        changes, so a failed restart leaves it as it was."""
        self._claim()
        try:
            self._restart(module, threads, batch_size, batched, h0, c0)
            self._torn = False
        finally:
            self._busy = False

    cdef int _claim(self) except -1:
        # Under the GIL, so the check and the claim are one step; before
        # anything that may release it (NumPy allocating or copying, an
        # engine being built), so no other thread can get in between.
        if self._busy:
            if self._claimed_in == _fork_generation:
                raise RuntimeError("this stream is in a step already (from another thread, or "
                                   "a re-entrant call): a stream is one sequence of steps, so "
                                   "give each thread its own")
            # Claimed by a thread of the process that forked this one: that
            # thread does not exist here, and h and c may be half-written
            # (refused even if it was only reading them: a fork cannot tell).
            self._torn = True
        self._busy = True
        self._claimed_in = _fork_generation
        return 0

    cdef int _check_whole(self) except -1:
        if self._torn:
            raise RuntimeError("this process forked while another thread was using this "
                               "stream (a step, state or reset), so its state here may be "
                               "half-written: start a new sequence with reset() first")
        return 0

    cdef int _restart(self, object module, object threads, object batch_size, bint batched,
                      object h0, object c0) except -1:
        cdef Engine engine = module._current_engine()
        cdef const lf_desc *desc = &engine._plan.desc
        cdef bint is_lstm = desc.cell == LF_CELL_LSTM
        cdef int64_t rows = _size("batch_size", batch_size)
        cdef int typenum = cnp.NPY_FLOAT64 if engine._is_double else cnp.NPY_FLOAT32
        cdef size_t needed
        if rows < 1 or (not batched and rows != 1):
            raise ValueError(f"batch_size must be >= 1 (1 for an unbatched stream), "
                             f"got {batch_size}")
        if desc.num_directions != 1:
            raise ValueError("a stream needs a one-direction network: the reverse direction "
                             "of a bidirectional one starts at the end of the sequence")
        if c0 is not None and not is_lstm:
            raise ValueError(f"c0 must be None: a {engine.cell} network has no cell state")
        # The state arrays and the workspace must be addressable; say which
        # argument made them too large rather than letting NumPy or C fail.
        # (Python ints: no overflow. The cell state c is the widest array.)
        state_bytes = (<object>desc.num_layers * <object>rows * <object>desc.hidden_size
                       * <object>engine._plan.elem_size)
        if (state_bytes > sys.maxsize
                or lf_plan_workspace_size(&engine._plan, 1, rows, &needed) != LF_OK
                or needed >= <size_t>sys.maxsize):
            raise ValueError(f"batch_size={batch_size} is too large: this network's state would "
                             f"not fit in memory")
        h = _initial_state("h0", h0, desc.num_layers, rows, engine._plan.state_size, engine.dtype,
                           typenum)
        c = (_initial_state("c0", c0, desc.num_layers, rows, desc.hidden_size, engine.dtype,
                            typenum) if is_lstm else None)
        self._replace_workspace(needed)
        self._sized_for = engine
        self._module = module
        self._threads = threads
        self._pool_ref = None
        self._batch = rows
        self._batched = batched
        self._num_layers = desc.num_layers
        self._input_size = desc.input_size
        self._state_size = engine._plan.state_size
        self._hidden_size = desc.hidden_size
        self._typenum = typenum
        self._cell = desc.cell
        self._h = h
        self._c = c
        return 0

    cdef int _fit_engine(self, Engine engine) except -1:
        """Check that `engine` runs the network of this state and size the
        workspace for it; once per engine (a module rebuilds its engine when
        its parameters change)."""
        cdef const lf_desc *desc = &engine._plan.desc
        cdef int typenum = cnp.NPY_FLOAT64 if engine._is_double else cnp.NPY_FLOAT32
        cdef size_t needed
        if (desc.input_size != self._input_size or engine._plan.state_size != self._state_size
                or desc.hidden_size != self._hidden_size or desc.num_directions != 1
                or desc.num_layers != self._num_layers or typenum != self._typenum
                or desc.cell != self._cell):
            raise ValueError("the module's network no longer matches this stream's state")
        _check(lf_plan_workspace_size(&engine._plan, 1, self._batch, &needed), "workspace size")
        if needed > self._workspace_bytes or self._workspace == NULL:
            self._replace_workspace(needed)
        self._sized_for = engine
        return 0

    cdef int _replace_workspace(self, size_t needed) except -1:
        """A fresh workspace of `needed` bytes; the old one stays if malloc fails."""
        # + 1: malloc(0) may return NULL, which is no failure.
        cdef char *workspace = <char *>malloc(needed + 1)
        if workspace == NULL:
            raise MemoryError(f"a stream could not allocate {needed + 1} bytes of workspace")
        free(self._workspace)
        self._workspace = workspace
        self._workspace_bytes = needed
        return 0

    def __dealloc__(self):
        free(self._workspace)

    def __reduce__(self):
        raise TypeError("a stream cannot be copied or pickled: start another with "
                        "module.stream(batch_size, hx=stream.state)")

    @property
    def module(self):
        """The layer or cell this stream runs."""
        return self._module

    def _copy_state(self):
        """Copies of (h, c) (c None unless an LSTM), shaped (num_layers, B, .)."""
        if self._h is None:
            raise RuntimeError("this stream was never started")
        # Claimed: a copy may release the GIL, and a step must not change
        # h or c halfway through it.
        self._claim()
        try:
            self._check_whole()
            return self._h.copy(), None if self._c is None else self._c.copy()
        finally:
            self._busy = False

    def step(self, input, out=None):
        """Advance by one time step.

        input : (N, input_size), or (input_size,) for an unbatched stream; any
            floating array-like (cast to the module's dtype).
        out : optional array of the module's dtype shaped as the result, to
            write it into (it must not overlap input).

        Returns the top layer's new h: (N, R) or (R,), R = proj_size or
        hidden_size; that is `out` when given.
        """
        if self._h is None:
            raise RuntimeError("this stream was never started")
        self._claim()
        try:
            self._check_whole()
            return self._step(input, out)
        finally:
            self._busy = False

    cdef object _step(self, object input, object out):
        cdef Engine engine
        cdef ThreadPool pool
        cdef int ndim = 2 if self._batched else 1
        cdef int64_t batch = self._batch
        cdef size_t elem
        cdef lf_forward_args args
        cdef lf_status status
        cdef char *x_begin
        cdef char *out_begin
        # The engine and pool of the last step, unless a newer one replaced
        # them: flags on the objects, so the common step does no attribute
        # lookup (about a sixth of a tiny step's instructions).
        engine = self._sized_for
        if engine._superseded:
            module = self._module
            engine = module._engine
            if engine is None:
                engine = module._current_engine()
            if engine is not self._sized_for:
                self._fit_engine(engine)
        if not _unmasked_array(input) or not _fits_nd(
                input, self._typenum, ndim, batch if ndim == 2 else self._input_size,
                self._input_size, -1):
            if (_unmasked_array(input) and cnp.PyArray_NDIM(<cnp.ndarray>input) == ndim
                    and cnp.PyArray_TYPE(<cnp.ndarray>input) in (
                        cnp.NPY_FLOAT16, cnp.NPY_FLOAT32, cnp.NPY_FLOAT64)
                    and cnp.PyArray_DIMS(<cnp.ndarray>input)[ndim - 1] == self._input_size
                    and (ndim == 1 or cnp.PyArray_DIMS(<cnp.ndarray>input)[0] == batch)):
                # Another float precision or a strided view: one cast.
                input = cnp.PyArray_FROMANY(input, self._typenum, ndim, ndim,
                                            cnp.NPY_ARRAY_C_CONTIGUOUS | cnp.NPY_ARRAY_ALIGNED
                                            | cnp.NPY_ARRAY_FORCECAST)
            else:
                input = self._converted_input(input)
                _require_array("input", input, engine.dtype, self._input_shape())
        elem = engine._plan.elem_size
        if out is None:
            out = _empty(ndim, batch if ndim == 2 else self._state_size, self._state_size, 0,
                         self._typenum)
        else:
            # A subclass would be written past its own bookkeeping (a masked
            # array's mask would go stale).
            if type(out) is not cnp.ndarray:
                raise TypeError(f"out must be a numpy.ndarray (not a subclass), "
                                f"got {type(out).__name__}")
            if not _fits_nd(out, self._typenum, ndim, batch if ndim == 2 else self._state_size,
                            self._state_size, -1):
                _require_array("out", out, engine.dtype, self._output_shape())
            if not cnp.PyArray_ISWRITEABLE(<cnp.ndarray>out):
                raise ValueError("out must be writeable")
            # The step still reads input while it writes out.
            x_begin = <char *>cnp.PyArray_DATA(<cnp.ndarray>input)
            out_begin = <char *>cnp.PyArray_DATA(<cnp.ndarray>out)
            if (out_begin < x_begin + <size_t>(batch * self._input_size) * elem
                    and x_begin < out_begin + <size_t>(batch * self._state_size) * elem):
                raise ValueError("out must not overlap input")
        pool = self._pool_ref() if self._pool_ref is not None else None  # None once freed
        if pool is None or pool._superseded:
            threads = self._threads
            pool = threads._pool
            if pool is None:
                pool = threads.thread_pool()
            self._pool_ref = weakref.ref(pool)
        args.T = 1
        args.B = batch
        args.x = cnp.PyArray_DATA(<cnp.ndarray>input)
        # In place: lf_forward reads h0 and c0 before it writes h_n and c_n.
        # (The claim keeps _start from replacing the arrays meanwhile; these
        # locals would keep them alive anyway.)
        h = self._h
        c = self._c
        args.h_n = cnp.PyArray_DATA(<cnp.ndarray>h)
        args.h0 = args.h_n
        args.c_n = _pointer(c)
        args.c0 = args.c_n
        args.lengths = NULL
        args.y = cnp.PyArray_DATA(<cnp.ndarray>out)
        args.packed = engine._packed
        args.workspace = self._workspace
        args.workspace_bytes = self._workspace_bytes
        args.pool = pool._pool
        args.threads = 0
        # The engine's step count, as in Engine._run: streams and calls on one
        # engine go on with one alternation of walk orders between them.
        args.step_parity = engine._calls
        engine._calls += 1
        with nogil:
            status = lf_forward(&engine._plan, &args)
        _check(status, "stream step")
        return out

    cdef tuple _input_shape(self):
        if self._batched:
            return (self._batch, self._input_size)
        return (self._input_size,)

    cdef tuple _output_shape(self):
        if self._batched:
            return (self._batch, self._state_size)
        return (self._state_size,)

cdef class ThreadPool:
    """Worker threads for Engine.forward; n_threads counts the calling thread.

    A pool runs one forward at a time; a forward that finds it busy runs on its
    own thread alone, with identical results.
    """
    cdef lf_pool *_pool
    cdef bint _superseded  # no longer the process-wide pool: see StreamCore._step
    cdef object __weakref__

    def __cinit__(self, n_threads):
        cdef lf_status status
        cdef int count
        number = _size("n_threads", n_threads)
        if number < 1 or number > LF_MAX_THREADS:
            raise ValueError(f"n_threads must be in [1, {LF_MAX_THREADS}], got {number}")
        count = number
        with nogil:
            status = lf_pool_create(count, &self._pool)
        _check(status, f"ThreadPool({n_threads})")

    def __dealloc__(self):
        # Under the GIL: joining idle workers takes microseconds, and a thread
        # that let go of the GIL here while the interpreter shuts down might
        # never get it back, in the middle of a deallocation.
        if self._pool != NULL:
            lf_pool_destroy(self._pool)

    def forget_after_fork(self):
        """In a forked child the workers do not exist: drop the pool without
        joining them (a few bytes leak; joining would hang)."""
        self._pool = NULL
        self._superseded = True

    def supersede(self):
        """Mark this pool as no longer the process-wide one (it still runs
        what holds it; streams look up the current pool again)."""
        self._superseded = True

    @property
    def threads(self):
        return lf_pool_threads(self._pool) if self._pool != NULL else 1
