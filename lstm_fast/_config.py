"""Which instruction set the layers run on, and a report of the machine and build."""
import os
import platform
import sys

import numpy as np

from . import _core

ISA_ENV = "LSTM_FAST_ISA"
_AUTO = "auto"


def resolve_isa():
    """Return the ISA a layer built now would use.

    Reads the LSTM_FAST_ISA environment variable on every call (so it can be
    changed between layer builds): "auto" (the default) picks the best ISA this
    CPU runs; a named ISA is used as is, and must be one this build compiled and
    this CPU runs.

    Raises
    ------
    ValueError
        If LSTM_FAST_ISA is not one of the allowed values, or names an ISA that
        is not available here.
    """
    requested = os.environ.get(ISA_ENV, _AUTO)
    if requested == _AUTO:
        return _core.isa_best()
    known = _core.isa_names()
    # Strict on purpose: a typo silently falling back to "auto" would make a
    # forced-ISA test run measure the wrong kernels.
    if requested not in known:
        raise ValueError(
            f"{ISA_ENV}={requested!r} is not a known ISA; allowed values: "
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
            f"{ISA_ENV}={requested!r}: the {requested} ISA is not available on this CPU "
            f"({reason}); available here: {available}"
        )
    return requested


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
        value, or None when unset or "auto"), "vector_width"
        ({isa: {"float32": n, "float64": n}} for the compiled ISAs), "cpu",
        "machine", "platform", "python", "numpy".
    """
    known = _core.isa_names()
    compiled = [isa for isa in known if _core.isa_compiled(isa)]
    forced = os.environ.get(ISA_ENV)
    info = {
        "version": _core.version(),
        "isa_compiled": compiled,
        "isa_available": [isa for isa in known if _core.isa_available(isa)],
        "isa_best": _core.isa_best(),
        "isa_active": None,
        "isa_forced": None if forced in (None, _AUTO) else forced,
        "vector_width": {
            isa: {
                "float32": _core.isa_vector_width(isa, np.float32),
                "float64": _core.isa_vector_width(isa, np.float64),
            }
            for isa in compiled
        },
        "cpu": _cpu_model(),
        "machine": platform.machine(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    # A diagnostic report must still print when the variable is wrong; it then
    # shows why instead of raising.
    try:
        info["isa_active"] = resolve_isa()
    except ValueError as error:
        info["isa_error"] = str(error)
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
        ("CPU", info["cpu"]),
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
