"""Benchmark core shared by `python -m lstm_fast bench` and bench/ (pytest-benchmark).

A case is one layer shape; a peer is a callable that runs that layer once on
fixed data and returns its output. Every peer of a case is built from the same
torch-style state_dict and sees the same input, and its output is compared
with lstm_fast's before it is timed: a fast wrong answer is not a result.

Peers:
  lstm_fast    the layer, built through load_state_dict
  numpy        lstm_fast.numpy_impl, what a user would write in NumPy
  torch        torch.nn.LSTM/GRU/RNN under inference_mode (if torch imports)
  onnxruntime  a one-node ONNX graph built with onnx.helper (if onnx and
               onnxruntime import)

Only numpy and lstm_fast are needed; torch and onnx are imported inside the
functions that use them, so a missing peer is skipped, never an import error.
"""
import ctypes
import fnmatch
import gc
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable, List, Optional

import numpy as np

from . import numpy_impl

PEERS = ("lstm_fast", "numpy", "torch", "onnxruntime")

# float32 agreement between two implementations of the same float32 network.
# Gate outputs are bounded (|h| < 1 for LSTM, GRU and tanh RNN), so the
# absolute term carries the check; the relative one is for relu RNNs. Peers
# measured within ~1e-6 of each other on the default cases (1000 steps
# included), so this leaves a wide margin without hiding a wrong gate order
# or bias, which costs 1e-2 or more.
ATOL = 1e-4
RTOL = 1e-3


@dataclass(frozen=True)
class Case:
    """One benchmarked layer: a single-layer, unidirectional network.

    streaming: each call runs ONE step (T=1 input) carrying the state from the
    previous call, as a real-time caller does; the stream restarts from a zero
    state every T steps so that every peer sees the same inputs and states.
    """

    name: str
    cell: str  # "lstm", "gru", "rnn_tanh", "rnn_relu"
    T: int
    B: int
    I: int
    H: int
    streaming: bool = False

    @property
    def gates(self) -> int:
        return numpy_impl.GATES[self.cell]

    @property
    def steps_per_call(self) -> int:
        return 1 if self.streaming else self.T

    @property
    def flops_per_call(self) -> int:
        """Multiply-adds of the input and recurrent products, counted as 2 flops."""
        return 2 * self.steps_per_call * self.B * self.gates * self.H * (self.I + self.H)


def _case(cell, T, B, I, H):
    return Case(f"{cell}_T{T}_B{B}_I{I}_H{H}", cell, T, B, I, H)


def _stream(cell, B, I, H, T=100):
    return Case(f"{cell}_stream_B{B}_I{I}_H{H}", cell, T, B, I, H, streaming=True)


DEFAULT_CASES = (
    _case("lstm", 100, 1, 256, 256),
    _case("lstm", 100, 1, 512, 512),
    _case("lstm", 50, 1, 64, 64),
    _case("lstm", 100, 16, 256, 256),
    _case("lstm", 100, 64, 512, 512),
    _case("lstm", 1000, 1, 128, 128),
    _stream("lstm", 1, 256, 256),
    _case("gru", 100, 1, 256, 256),
    _case("gru", 100, 64, 512, 512),
)

# Small shapes touching every cell kind and the streaming path: a smoke run
# of the whole harness (peers, checks, table) in a few seconds.
QUICK_CASES = (
    _case("lstm", 20, 1, 32, 32),
    _case("lstm", 20, 8, 64, 64),
    _case("gru", 20, 8, 64, 64),
    _case("rnn_tanh", 20, 8, 64, 64),
    _stream("lstm", 1, 64, 64, T=20),
)


def select_cases(patterns=None, quick=False):
    """Cases of the default (or quick) list whose names match any of the
    shell-style patterns (all of them when patterns is empty)."""
    pool = QUICK_CASES if quick else DEFAULT_CASES
    if not patterns:
        return list(pool)
    chosen = []
    for pattern in patterns:
        matched = [c for c in pool if fnmatch.fnmatchcase(c.name, pattern)]
        if not matched:
            names = ", ".join(c.name for c in pool)
            raise ValueError(f"no case matches {pattern!r}; cases: {names}")
        chosen += [c for c in matched if c not in chosen]
    return chosen


@dataclass
class Problem:
    """The weights and input every peer of a case shares (float32)."""

    case: Case
    state_dict: dict
    x: np.ndarray  # (T, B, I); for a streaming case, the stream's inputs


def make_problem(case: Case, seed: int = 0) -> Problem:
    rng = np.random.default_rng(seed)
    G, H, I = case.gates, case.H, case.I
    k = 1.0 / math.sqrt(H)  # torch's initialisation range

    def u(*shape):
        return rng.uniform(-k, k, shape).astype(np.float32)

    state_dict = {
        "weight_ih_l0": u(G * H, I),
        "weight_hh_l0": u(G * H, H),
        "bias_ih_l0": u(G * H),
        "bias_hh_l0": u(G * H),
    }
    x = rng.standard_normal((case.T, case.B, I)).astype(np.float32)
    return Problem(case, state_dict, x)


def reference(problem: Problem) -> np.ndarray:
    """The float64 output of the whole sequence (for a streaming case, of one
    whole stream, which is what collect() gathers step by step)."""
    net = numpy_impl.NumpyRNN(problem.case.cell, problem.state_dict, np.float64)
    return net(problem.x.astype(np.float64))[0]


def _as_stream(step, x):
    """One step per call over the frames of x (T, B, I): step(frame, state)
    -> (y, state), with state None at the start of each pass over x."""
    frames = [x[t : t + 1] for t in range(len(x))]
    n = len(frames)
    pos = 0
    state = None

    def call():
        nonlocal pos, state
        if pos == n:
            pos, state = 0, None
        y, state = step(frames[pos], state)
        pos += 1
        return y

    return call


def _new_layer(namespace, case):
    """A layer of the case from lstm_fast or torch.nn, which share constructors."""
    if case.cell == "lstm":
        return namespace.LSTM(case.I, case.H)
    if case.cell == "gru":
        return namespace.GRU(case.I, case.H)
    return namespace.RNN(case.I, case.H, nonlinearity=case.cell[4:])


def _build_lstm_fast(case, problem, threads):
    import lstm_fast

    layer = _new_layer(lstm_fast, case)
    layer.load_state_dict(problem.state_dict)
    x = problem.x
    if not case.streaming:
        return lambda: layer(x)[0]
    # The streaming interface: the state stays inside, a step allocates
    # only its output.
    stream = layer.stream(batch_size=case.B)
    frames = list(x)
    n = len(frames)
    pos = 0

    def call():
        nonlocal pos
        if pos == n:
            pos = 0
            stream.reset()
        y = stream.step(frames[pos])
        pos += 1
        return y

    return call


def _build_numpy(case, problem, threads):
    net = numpy_impl.NumpyRNN(case.cell, problem.state_dict, np.float32)
    x = problem.x
    if not case.streaming:
        return lambda: net(x)[0]
    lstm = case.cell == "lstm"

    def step(frame, state):
        y, h, c = net(frame, state)
        return y, ((h, c) if lstm else h)

    return _as_stream(step, x)


def _build_torch(case, problem, threads):
    import torch

    torch.set_num_threads(threads)
    module = _new_layer(torch.nn, case)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in problem.state_dict.items()})
    module.eval()
    x = torch.from_numpy(problem.x)
    if not case.streaming:

        def run():
            with torch.inference_mode():
                return module(x)[0].numpy()

        return run

    # One step per call through torch's cell (LSTMCell, GRUCell, RNNCell),
    # its fastest one-step API: nn.LSTM per step costs ~3x the cell here.
    if case.cell == "lstm":
        cell = torch.nn.LSTMCell(case.I, case.H)
    elif case.cell == "gru":
        cell = torch.nn.GRUCell(case.I, case.H)
    else:
        cell = torch.nn.RNNCell(case.I, case.H, nonlinearity=case.cell[4:])
    cell.load_state_dict({k[: -len("_l0")]: torch.from_numpy(v)
                          for k, v in problem.state_dict.items()})
    cell.eval()
    lstm = case.cell == "lstm"

    def step(frame, state):
        with torch.inference_mode():
            state = cell(frame[0], state)
        return (state[0] if lstm else state).numpy(), state

    return _as_stream(step, x)


# ONNX stacks gates in its own order; these pick torch's blocks in ONNX order.
# LSTM: ONNX i, o, f, c from torch i, f, g, o. GRU: ONNX z, r, h from torch r, z, n.
_ONNX_GATE_ORDER = {"lstm": [0, 3, 1, 2], "gru": [1, 0, 2], "rnn_tanh": [0], "rnn_relu": [0]}
# Opset 14 and IR 8 are old enough for any onnxruntime >= 1.10 to load and
# carry every attribute used here; the newest IR onnx writes by default can be
# newer than the installed runtime reads.
_ONNX_OPSET = 14
_ONNX_IR_VERSION = 8


def onnx_model(case: Case, state_dict):
    """A single LSTM/GRU/RNN node with torch's semantics, as an onnx.ModelProto.

    Inputs X (T, B, I), initial_h (1, B, H) and for LSTM initial_c; outputs
    Y (T, 1, B, H), Y_h, and for LSTM Y_c. Weights are initialisers.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    G, H = case.gates, case.H
    order = _ONNX_GATE_ORDER[case.cell]

    def reorder(a):
        a = np.asarray(a, np.float32)
        return a.reshape((G, H) + a.shape[1:])[order].reshape(a.shape)

    initializers = [
        numpy_helper.from_array(reorder(state_dict["weight_ih_l0"])[None], "W"),
        numpy_helper.from_array(reorder(state_dict["weight_hh_l0"])[None], "R"),
    ]
    has_bias = "bias_ih_l0" in state_dict
    if has_bias:
        # ONNX B is [Wb, Rb] concatenated: input bias then recurrent bias.
        bias = np.concatenate([reorder(state_dict["bias_ih_l0"]), reorder(state_dict["bias_hh_l0"])])
        initializers.append(numpy_helper.from_array(bias[None], "B"))

    lstm = case.cell == "lstm"
    node_inputs = ["X", "W", "R", "B" if has_bias else "", "", "initial_h"]
    node_outputs = ["Y", "Y_h"]
    if lstm:
        node_inputs.append("initial_c")
        node_outputs.append("Y_c")
    attrs = {"hidden_size": H, "direction": "forward"}
    if case.cell == "gru":
        # torch applies the reset gate after the recurrent product.
        attrs["linear_before_reset"] = 1
    elif case.cell != "lstm":
        attrs["activations"] = ["Relu" if case.cell == "rnn_relu" else "Tanh"]
    op = {"lstm": "LSTM", "gru": "GRU"}.get(case.cell, "RNN")
    node = helper.make_node(op, node_inputs, node_outputs, **attrs)

    f32 = TensorProto.FLOAT
    state_names = ["initial_h", "initial_c"] if lstm else ["initial_h"]
    graph = helper.make_graph(
        [node],
        f"lstm_fast_bench_{case.cell}",
        [helper.make_tensor_value_info("X", f32, ["T", "B", case.I])]
        + [helper.make_tensor_value_info(n, f32, [1, "B", H]) for n in state_names],
        [helper.make_tensor_value_info("Y", f32, ["T", 1, "B", H])]
        + [helper.make_tensor_value_info(n, f32, [1, "B", H]) for n in node_outputs[1:]],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _ONNX_OPSET)])
    model.ir_version = _ONNX_IR_VERSION
    onnx.checker.check_model(model)
    return model


def _build_onnxruntime(case, problem, threads):
    import onnxruntime as ort

    model = onnx_model(case, problem.state_dict)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(
        model.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"]
    )
    lstm = case.cell == "lstm"
    x = problem.x
    B, H = case.B, case.H
    zeros = np.zeros((1, B, H), np.float32)
    if not case.streaming:
        feeds = {"X": x, "initial_h": zeros}
        if lstm:
            feeds["initial_c"] = zeros
        shape = (case.T, B, H)
        return lambda: session.run(["Y"], feeds)[0].reshape(shape)

    def step(frame, state):
        if state is None:
            state = (zeros, zeros) if lstm else (zeros,)
        feeds = {"X": frame, "initial_h": state[0]}
        if lstm:
            feeds["initial_c"] = state[1]
        y, *state = session.run(None, feeds)
        return y.reshape(1, B, H), state

    return _as_stream(step, x)


_BUILDERS = {
    "lstm_fast": _build_lstm_fast,
    "numpy": _build_numpy,
    "torch": _build_torch,
    "onnxruntime": _build_onnxruntime,
}
# The modules each optional peer imports (bench/ skips a peer by them).
PEER_MODULES = {"torch": ("torch",), "onnxruntime": ("onnx", "onnxruntime")}


def peer_unavailable(peer: str) -> Optional[str]:
    """Why a peer cannot run here (a missing module), or None if it can."""
    if peer not in _BUILDERS:
        raise ValueError(f"unknown peer {peer!r}; peers: {', '.join(PEERS)}")
    for module in PEER_MODULES.get(peer, ()):
        try:
            __import__(module)
        except Exception as exc:  # a broken install (OSError, ...) is skipped too
            return f"{module} not importable ({type(exc).__name__}: {exc})"
    return None


def build_peer(peer: str, case: Case, problem: Problem, threads: int) -> Callable[[], np.ndarray]:
    """A callable running `peer` once on the case (one step for a streaming
    case) and returning its output as a float32 NumPy array. threads is the
    peer's intra-op thread count; lstm_fast and numpy ignore it."""
    if peer not in _BUILDERS:
        raise ValueError(f"unknown peer {peer!r}; peers: {', '.join(PEERS)}")
    return _BUILDERS[peer](case, problem, threads)


def collect(case: Case, fn) -> np.ndarray:
    """The output to check of a freshly built peer: one call, or for a
    streaming case one whole stream (T calls), stacked as (T, B, H). A
    stream is run twice: the second pass goes through the restart (state
    back to zeros) that every timed pass after the first takes, and must
    give the same values, or ValueError."""
    if case.streaming:
        # Peers return a step's output as (1, B, H) or (B, H).
        first, second = (np.stack([np.asarray(fn()).reshape(case.B, -1) for _ in range(case.T)])
                         for _ in range(2))
        if not np.array_equal(first, second, equal_nan=True):
            raise ValueError("a second pass over the stream gave other values than the first: "
                             "the restart between passes does not start from zeros")
        return second
    return np.asarray(fn()).copy()


def max_abs_diff(out, expected) -> float:
    out = np.asarray(out)
    expected = np.asarray(expected)
    if out.shape != expected.shape:
        return math.inf
    return float(np.max(np.abs(out.astype(np.float64) - expected), initial=0.0))


def matches(out, expected) -> bool:
    out = np.asarray(out)
    expected = np.asarray(expected)
    return out.shape == expected.shape and bool(
        np.allclose(out, expected, rtol=RTOL, atol=ATOL, equal_nan=False)
    )


@dataclass
class Timing:
    median: float  # seconds per call
    min: float
    number: int  # calls per timed sample
    samples: int


def _calls_per_sample(fn, min_sample_time, warmup_time) -> int:
    """Warm fn up for warmup_time; return how many calls make a sample last
    at least min_sample_time (perf_counter noise stays small for µs calls)."""
    start = time.perf_counter()
    calls = 0
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= warmup_time:
            break
    return max(1, math.ceil(min_sample_time / (elapsed / calls)))


# Pause before each interleaved sample: thread pools spin-wait after a call
# before they sleep (OpenBLAS's for about 0.1 s, ONNX Runtime's and
# OpenMP's for milliseconds, ours for at most 1 ms), and a pool still
# spinning on the other core would slow the next library's sample.
SETTLE_SECONDS = 0.15
# Then untimed calls for this long (at least one) before the sample: the
# caches hold another library's data, and after the pause our idle cores
# must wake (on a VM the host may have lent them out meanwhile).
REWARM_SECONDS = 0.02


def time_callables(fns, repeat=20, min_sample_time=0.01, max_time=3.0, warmup_time=0.2,
                   unbudgeted=()):
    """Time several callables side by side: {name: fn} -> {name: Timing}.

    Samples are interleaved, one sample of every callable per round (the
    order rotating each round), rather than all of one then all of the next.
    This machine's speed drifts by tens of percent within a minute (a VM
    whose core is shared); timed one after another, each library would be
    judged in a different weather, and a ratio would say more about the
    minute than about the code. With several callables each sample waits
    SETTLE_SECONDS first, so no other library's threads still spin. Every
    sample starts with untimed calls for REWARM_SECONDS (at least one), so
    that a library finds its own weights in the cache and its threads
    awake, as it would timed alone. Stops
    after max_time seconds of sampling per callable once every callable has
    5 samples; callables named in `unbudgeted` (a yardstick) are timed in
    every round but count toward neither. GC is off while timing, as in
    timeit."""
    names = list(fns)
    number = {name: _calls_per_sample(fns[name], min_sample_time, warmup_time) for name in names}
    samples = {name: [] for name in names}
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        sampling = 0.0
        for round_index in range(repeat):
            shift = round_index % len(names)
            for name in names[shift:] + names[:shift]:
                fn, n = fns[name], number[name]
                if len(names) > 1:
                    time.sleep(SETTLE_SECONDS)
                begin = time.perf_counter()
                while True:
                    fn()
                    t0 = time.perf_counter()
                    if t0 - begin >= REWARM_SECONDS:
                        break
                for _ in range(n):
                    fn()
                end = time.perf_counter()
                samples[name].append((end - t0) / n)
                if name not in unbudgeted:
                    sampling += end - begin
            budgeted = len([name for name in names if name not in unbudgeted])
            if round_index + 1 >= min(5, repeat) and sampling > max_time * budgeted:
                break
    finally:
        if gc_was_enabled:
            gc.enable()
    return {
        name: Timing(statistics.median(s), min(s), number[name], len(s)) for name, s in samples.items()
    }


@dataclass
class Result:
    case: Case
    peer: str
    timing: Optional[Timing] = None
    ratio: Optional[float] = None  # peer median / lstm_fast median: > 1, lstm_fast is faster
    max_abs_diff: Optional[float] = None  # vs lstm_fast; for lstm_fast itself, vs float64
    ok: bool = True
    error: Optional[str] = None  # the peer could not be built or run
    # The yardstick matmul's GFLOP/s, timed in the same rounds as this case.
    matmul_gflops: Optional[float] = None

    @property
    def gflops(self) -> Optional[float]:
        if self.timing is None or self.timing.median <= 0:
            return None
        return self.case.flops_per_call / self.timing.median / 1e9

    def as_dict(self):
        d = {
            "case": asdict(self.case),
            "peer": self.peer,
            "ok": self.ok,
            "error": self.error,
            "max_abs_diff": self.max_abs_diff,
            "ratio": self.ratio,
            "gflops": self.gflops,
            "flops_per_call": self.case.flops_per_call,
            "matmul_gflops": self.matmul_gflops,
        }
        d["timing"] = None if self.timing is None else asdict(self.timing)
        return d


def set_threads(threads: int) -> Optional[int]:
    """Give lstm_fast and numpy's BLAS the thread count of the peers (torch and
    onnxruntime take theirs in build_peer), so that a one-thread table times
    every peer on one core. Returns the BLAS thread count now in force, or
    None where it cannot be set (see numpy_blas_threads)."""
    import lstm_fast

    lstm_fast.set_num_threads(threads)
    set_openblas_threads(threads)
    return numpy_blas_threads()


def set_openblas_threads(threads: int) -> None:
    """Set the thread count of every OpenBLAS loaded in this process (numpy's,
    and scipy's if imported). OpenBLAS caps it at its compiled maximum; a
    single-threaded build ignores it."""
    for setter in _openblas_functions("set_num_threads", [ctypes.c_int], None):
        setter(threads)


def numpy_blas_threads() -> Optional[int]:
    """The thread count of the OpenBLAS that numpy loaded, or None if there is
    none this module can reach: not Linux, or another BLAS (MKL, Accelerate),
    whose threads only their own environment variables set at start-up."""
    for getter in _openblas_functions("get_num_threads", [], ctypes.c_int):
        return int(getter())
    return None


def _openblas_libraries():
    """The OpenBLAS libraries loaded in this process (numpy's wheels bundle
    one; a system numpy links the system's), found in /proc/self/maps;
    the one numpy's wheels bundle (in numpy.libs/) first, then by path."""
    paths = set()
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:  # address perms offset device inode [path]
                fields = line.split(maxsplit=5)
                path = fields[5].strip() if len(fields) == 6 else ""
                if "openblas" in os.path.basename(path).lower() and ".so" in path:
                    paths.add(path)
    except OSError:
        return []
    numpys_first = sorted(
        paths, key=lambda path: (os.path.basename(os.path.dirname(path)) != "numpy.libs", path)
    )
    libraries = []
    for path in numpys_first:
        try:
            libraries.append(ctypes.CDLL(path))  # already loaded: the same handle
        except OSError:
            continue
    return libraries


def _openblas_functions(what, argtypes, restype):
    """OpenBLAS's `openblas_<what>` from each loaded OpenBLAS that exports it
    (numpy's first), typed for ctypes. Builds export it as: numpy's
    scipy-openblas wheels prefix `scipy_` and suffix `64_` (64-bit integers),
    other ILP64 builds suffix `64_`."""
    names = (f"scipy_openblas_{what}64_", f"scipy_openblas_{what}",
             f"openblas_{what}64_", f"openblas_{what}")
    for lib in _openblas_libraries():
        function = next((getattr(lib, name) for name in names if hasattr(lib, name)), None)
        if function is not None:
            function.argtypes, function.restype = argtypes, restype
            yield function


_YARDSTICK = "\0matmul"  # the yardstick's key among the timed callables: no peer's name


def run_case(case, peers, threads, repeat=20, max_time=3.0, seed=0, report=None,
             yardstick=None) -> List[Result]:
    """Check every peer of one case against lstm_fast, then time those that
    agree together (time_callables interleaves their samples); a wrong
    answer is not timed. lstm_fast comes first: it is the output the others
    are checked against and the time they are divided by. `yardstick`, from
    matmul_yardstick, is timed in the same rounds, for the %peak column.
    `report(result)` is called for each result, in peer order, once the case
    is timed. lstm_fast and NumPy's BLAS are set to `threads` here, as torch
    and onnxruntime are in build_peer."""
    set_threads(threads)
    problem = make_problem(case, seed)
    fn = build_peer("lstm_fast", case, problem, threads)
    ours = collect(case, fn)
    ref = reference(problem)
    base = Result(case, "lstm_fast", max_abs_diff=max_abs_diff(ours, ref), ok=matches(ours, ref))
    results, fns = [base], {"lstm_fast": fn}
    for peer in peers:
        if peer == "lstm_fast":
            continue
        result = Result(case, peer)
        results.append(result)
        try:
            fn = build_peer(peer, case, problem, threads)
            out = collect(case, fn)
        except Exception as exc:  # a peer's own failure must not end the run
            result.ok = False
            result.error = f"{type(exc).__name__}: {exc}"
            continue
        # Against lstm_fast, unless lstm_fast itself is wrong: then against
        # the reference, so a right peer is not blamed for our error.
        expected = ours if base.ok else ref
        result.max_abs_diff = max_abs_diff(out, expected)
        result.ok = matches(out, expected)
        if result.ok:
            fns[peer] = fn
    if not base.ok:
        fns = {}  # no time to divide by
    elif yardstick is not None:
        fns[_YARDSTICK] = yardstick[0]
    timings = (time_callables(fns, repeat, max_time=max_time, unbudgeted={_YARDSTICK})
               if fns else {})
    matmul = (yardstick[1] / timings[_YARDSTICK].median / 1e9) if _YARDSTICK in timings else None
    for result in results:
        if result.peer in timings:
            result.timing = timings[result.peer]
            result.ratio = result.timing.median / timings["lstm_fast"].median
            result.matmul_gflops = matmul
            if not case.streaming:
                # Still right after thousands of calls (a stream's position
                # is wherever timing left it, so streams are checked once).
                again = np.asarray(fns[result.peer]()).copy()
                expected = ref if result.peer == "lstm_fast" else ours
                result.max_abs_diff = max(result.max_abs_diff, max_abs_diff(again, expected))
                result.ok = matches(again, expected)
        if report is not None:
            report(result)
    return results


# ---------------------------------------------------------------- reporting

def _fmt_time(seconds, streaming):
    if seconds is None:
        return "-"
    if streaming:
        return f"{seconds * 1e6:.1f} us/step"
    return f"{seconds * 1e3:.3f} ms"


_COLUMNS = ("case", "peer", "median", "min", "GFLOP/s %peak", "ratio", "check")


def _fmt_gflops(gflops, peak):
    if gflops is None:
        return "-"
    return f"{gflops:.1f}" if not peak else f"{gflops:.1f} {100 * gflops / peak:3.0f}%"


def table_row(case_name, peer, streaming, median, minimum, gflops, ratio, check, peak=None):
    """The cells of one table row, as strings (shared with bench/compare.py).
    peak: the matmul GFLOP/s measured in the same run, for the % column."""
    return (
        case_name,
        peer,
        _fmt_time(median, streaming),
        _fmt_time(minimum, streaming),
        _fmt_gflops(gflops, peak),
        "-" if ratio is None else f"{ratio:.2f}x",
        check,
    )


def result_row(result: Result):
    if result.error is not None:
        check = f"ERROR {result.error}"
    elif result.ok:
        check = f"ok ({result.max_abs_diff:.1e})"
    else:
        when = "not timed" if result.timing is None else "after timing"
        check = f"MISMATCH max|diff|={result.max_abs_diff:.3g} ({when})"
    t = result.timing
    return table_row(
        result.case.name,
        result.peer,
        result.case.streaming,
        None if t is None else t.median,
        None if t is None else t.min,
        result.gflops,
        result.ratio,
        check,
        result.matmul_gflops,
    )


class Table:
    """Rows printed as they come, aligned on widths fixed up front (the case
    and peer names are known before anything runs; times have a bounded width)."""

    def __init__(self, case_names, peer_names, out=sys.stdout, peak_column=True):
        self.out = out
        # compare.py has no yardstick: its header then says GFLOP/s only.
        self.columns = _COLUMNS if peak_column else _COLUMNS[:4] + ("GFLOP/s",) + _COLUMNS[5:]
        self.widths = [
            max([len("case")] + [len(n) for n in case_names]),
            max([len("peer")] + [len(n) for n in peer_names]),
            15,
            15,
            14,
            8,
        ]
        self._last_case = None

    def _line(self, cells):
        left = [cells[0].ljust(self.widths[0]), cells[1].ljust(self.widths[1])]
        right = [c.rjust(w) for c, w in zip(cells[2:6], self.widths[2:])]
        return "  ".join(left + right + [cells[6]]).rstrip()

    def header(self):
        print(self._line(self.columns), file=self.out)
        print("-" * (sum(self.widths) + 2 * len(self.widths) + len("check")), file=self.out)

    def row(self, cells):
        # The case name only on its first row keeps groups readable.
        shown = cells if cells[0] != self._last_case else ("",) + tuple(cells[1:])
        self._last_case = cells[0]
        print(self._line(shown), file=self.out, flush=True)


def matmul_yardstick(threads, size=1024):
    """A float32 matrix multiply, the yardstick of the %peak column:
    (callable, flops per call, how it runs). run_case times it in the same
    interleaved rounds as the case's peers, so both see the same weather
    (measured once up front, it read 63-74 GFLOP/s on one thread in slow
    phases, and cases then reached 145% of it). torch.mm (oneDNN or MKL
    kernels) when torch is installed, else numpy.matmul (on the threads
    set_threads gave its BLAS)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    try:
        import torch

        torch.set_num_threads(threads)
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        run, how = (lambda: torch.mm(ta, tb)), f"torch.mm {size}^3, {threads} thread(s)"
    except Exception:  # absent or broken: NumPy's BLAS instead
        blas = numpy_blas_threads()
        run, how = (lambda: a @ b), f"numpy.matmul {size}^3, {blas or 'default'} BLAS thread(s)"
    return run, 2.0 * size**3, how


def environment(threads):
    """What the figures depend on, for the report header and the JSON file."""
    import lstm_fast

    env = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "numpy": np.__version__,
        "peer_threads": threads,
        "numpy_blas_threads": numpy_blas_threads(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    info = lstm_fast.cpu_info()
    env["lstm_fast"] = info.get("version")
    env["cpu_info"] = info
    for module in ("torch", "onnxruntime", "onnx"):
        mod = sys.modules.get(module)
        if mod is not None:
            env[module] = getattr(mod, "__version__", None)
    return env


def write_json(path, results, env):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(
            {"environment": env, "results": [r.as_dict() for r in results]},
            f,
            indent=2,
            default=str,
        )
        f.write("\n")
