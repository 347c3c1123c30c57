"""Which instruction set and how many threads the layers use, and a report of
the machine and build."""
import os
import platform
import sys
import threading

import numpy as np

from . import _core

ISA_ENV = "LSTM_FAST_ISA"
THREADS_ENV = "LSTM_FAST_NUM_THREADS"
_AUTO = "auto"


def resolve_isa():
    """Return the ISA a layer built now would use.

    Reads the LSTM_FAST_ISA environment variable on every call (so it can be
    changed between layer builds): "auto" (the default, also when empty) picks
    the best ISA this CPU runs; a named ISA is used as is, and must be one this
    build compiled and this CPU runs.

    Raises
    ------
    ValueError
        If LSTM_FAST_ISA is not one of the allowed values, or names an ISA that
        is not available here.
    """
    # Spaces and case do not matter, as for the thread count.
    raw = os.environ.get(ISA_ENV, _AUTO)
    requested = raw.strip().lower()
    if requested in ("", _AUTO):  # empty means unset, as for the threads
        return _core.isa_best()
    known = _core.isa_names()
    # Strict on purpose: a typo silently falling back to "auto" would make a
    # forced-ISA test run measure the wrong kernels.
    if requested not in known:
        raise ValueError(
            f"{ISA_ENV}={raw!r} is not a known ISA; allowed values: "
            f"{', '.join((_AUTO,) + known)}"
        )
    if not _core.isa_available(requested):
        reason = (
            "this CPU or OS cannot run it"
            if _core.isa_compiled(requested)
            else "it was not compiled into this build"
        )
        available = ", ".join(isa for isa in known if _core.isa_available(isa))
        raise ValueError(
            f"{ISA_ENV}={raw!r}: the {requested} ISA is not available on this CPU "
            f"({reason}); available here: {available}"
        )
    return requested


# ---------------------------------------------------------------- threads
# The C core keeps no global state; the process-wide thread setting lives
# here, as one ThreadPool shared by every layer (as torch.set_num_threads).
_pool_lock = threading.Lock()
_pool = None
# A forked child's first pool has the parent's thread count (as torch's
# set_num_threads carries over), not the environment's or the core count.
_threads_of_parent = None


def default_threads():
    """The CPUs this process may run on (in a container or under taskset
    fewer than the machine has), at most the pool's limit."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(cores, _core.MAX_THREADS))


def _threads_from_env():
    value = os.environ.get(THREADS_ENV)
    if value is None or value.strip() == "":
        return default_threads()
    digits = value.strip()
    # Plain ASCII digits only: int() would also take "1_0", "+3" and other
    # scripts' digits.
    threads = int(digits) if digits.isascii() and digits.isdigit() else 0
    if not 1 <= threads <= _core.MAX_THREADS:
        raise ValueError(
            f"{THREADS_ENV}={value!r} must be an integer in [1, {_core.MAX_THREADS}]"
        )
    return threads


def _check_threads(n):
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"num_threads must be an int, got {type(n).__name__}")
    if not 1 <= n <= _core.MAX_THREADS:
        raise ValueError(f"num_threads must be in [1, {_core.MAX_THREADS}], got {n}")
    return int(n)


def thread_pool():
    """The pool every layer runs on (created on first use from LSTM_FAST_NUM_THREADS,
    default: the cores this process may use)."""
    global _pool
    pool = _pool
    if pool is None:
        with _pool_lock:
            if _pool is None:
                _pool = _core.ThreadPool(_threads_of_parent or _threads_from_env())
            pool = _pool
    return pool


def set_num_threads(num_threads):
    """Use `num_threads` threads (the calling one included) for every layer.

    Results do not depend on it: each value is computed by one thread in a
    fixed order. Calls already running keep the pool they started with."""
    global _pool
    pool = _core.ThreadPool(_check_threads(num_threads))
    with _pool_lock:
        if _pool is not None:
            _pool.supersede()
        _pool = pool


def get_num_threads():
    """The number of threads layers run on (the calling one included)."""
    return thread_pool().threads


def forget_pool_after_fork():
    """For the fork hook (layers.py): a forked child has no worker threads,
    and using (or joining) the parent's would hang. Drop them; the child
    makes its own on first use, of as many threads."""
    global _pool, _pool_lock, _threads_of_parent
    if _pool is not None:
        _threads_of_parent = _pool.threads
        _pool.forget_after_fork()
    _pool = None
    _pool_lock = threading.Lock()


def _cpu_model():
    # platform.processor() is often empty or just "x86_64" on Linux.
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_info():
    """Describe the build, the CPU and the ISA a layer built now would use.

    Returns
    -------
    dict
        "version", "isa_compiled" (list), "isa_available" (list), "isa_best",
        "isa_active" (after LSTM_FAST_ISA; None if that variable is invalid,
        with the reason under "isa_error"), "isa_forced" (the LSTM_FAST_ISA
        value, or None when unset, empty or "auto"), "vector_width"
        ({isa: {"float32": n, "float64": n}} for the compiled ISAs), "cpu",
        "l2_cache_bytes" (a core's L2 as the CPU reports it, 0 if unknown),
        "machine", "platform", "python", "numpy", "num_threads" (None if
        LSTM_FAST_NUM_THREADS is invalid, with the reason under "threads_error").
    """
    known = _core.isa_names()
    compiled = [isa for isa in known if _core.isa_compiled(isa)]
    forced = os.environ.get(ISA_ENV, "").strip().lower()
    info = {
        "version": _core.version(),
        "isa_compiled": compiled,
        "isa_available": [isa for isa in known if _core.isa_available(isa)],
        "isa_best": _core.isa_best(),
        "isa_active": None,
        "isa_forced": None if forced in ("", _AUTO) else forced,
        "vector_width": {
            isa: {
                "float32": _core.isa_vector_width(isa, np.float32),
                "float64": _core.isa_vector_width(isa, np.float64),
            }
            for isa in compiled
        },
        "cpu": _cpu_model(),
        "l2_cache_bytes": _core.l2_cache_bytes(),
        "machine": platform.machine(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "num_threads": None,
    }
    # A diagnostic report must still print when the variable is wrong; it then
    # shows why instead of raising.
    try:
        info["isa_active"] = resolve_isa()
    except ValueError as error:
        info["isa_error"] = str(error)
    try:
        info["num_threads"] = get_num_threads()
    except (ValueError, OSError, MemoryError) as error:  # OSError: threads refused
        info["threads_error"] = str(error)
    return info


def show_config(file=None):
    """Print cpu_info() in readable form (to `file`, default sys.stdout)."""
    info = cpu_info()
    if info["isa_active"] is None:
        active = f"none: {info['isa_error']}"
    elif info["isa_forced"] is not None:
        active = f"{info['isa_active']} (forced by {ISA_ENV})"
    else:
        active = f"{info['isa_active']} (auto)"
    widths = ", ".join(
        f"{isa} {width['float32']}xf32/{width['float64']}xf64"
        for isa, width in info["vector_width"].items()
    )
    rows = [
        ("ISA active", active),
        ("ISA best", info["isa_best"]),
        ("ISA available", ", ".join(info["isa_available"]) or "none"),
        ("ISA compiled", ", ".join(info["isa_compiled"]) or "none"),
        ("vector width", widths),
        ("threads", str(info["num_threads"]) if info["num_threads"] else f"none: {info['threads_error']}"),
        ("CPU", info["cpu"]),
        ("L2 per core", f"{info['l2_cache_bytes'] // 1024} KiB" if info["l2_cache_bytes"] else "unknown"),
        ("machine", info["machine"]),
        ("platform", info["platform"]),
        ("python", info["python"]),
        ("numpy", info["numpy"]),
    ]
    out = sys.stdout if file is None else file
    print(f"lstm_fast {info['version']}", file=out)
    label_width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"  {label:<{label_width}}  {value}", file=out)
