"""The C core through small C programs (tests/c/), built here with the
system compiler where one exists (a source checkout), for what Python cannot
reach: a data race under ThreadSanitizer, sizes no NumPy array can have, and
another architecture (AArch64, cross-built and run under an emulator)."""
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import reference
from helpers import make_hx, make_input, make_rng, tol

CSRC = Path(__file__).resolve().parents[1] / "csrc"
PROGRAMS = Path(__file__).resolve().with_name("c")
# The core without the ISA kernels that need their own -m flags.
PORTABLE_CORE = ["status.c", "cpu_features.c", "dispatch.c", "plan.c", "pack.c", "grid.c", "pool.c",
                 "kernels/kernels_portable.c"]


def build(tmp_path, source, core_files, *flags, compiler=None, must_build=False):
    """Compile tests/c/`source` with `core_files` of csrc/; skip where that cannot be done
    (fail instead with must_build: the compiler is there, the sources must build)."""
    compiler = compiler or shutil.which("gcc") or shutil.which("clang")
    if compiler is None or not (CSRC / "lstm_fast.h").exists():
        pytest.skip("needs a C compiler and the csrc/ sources (a source checkout)")
    program = tmp_path / Path(source).stem
    result = subprocess.run(
        [compiler, "-std=gnu11", "-O1", "-g", "-pthread", f"-I{CSRC}", *flags, str(PROGRAMS / source),
         *[str(CSRC / name) for name in core_files], "-lm", "-o", str(program)],
        capture_output=True, text=True,
    )
    if result.returncode != 0:
        if must_build:
            pytest.fail(f"{source} does not build with {compiler}:\n{result.stderr[-3000:]}")
        pytest.skip(f"cannot build {source} here: " + result.stderr.strip()[-300:])
    return program


def test_pool_hand_off_and_barrier_have_no_data_race(tmp_path):
    # Jobs of 2, 3 and 4 threads in turn, so a worker that sat one job out
    # reads the job fields while the next is published, and the barrier
    # runs with one and two rounds, for a power of two and not. x86-64
    # forgives missing fences that AArch64 does not; ThreadSanitizer checks
    # the C11 memory model itself, so such a race shows on any machine.
    program = build(tmp_path, "pool_stress.c", ["pool.c", "status.c"],
                    "-fsanitize=thread", "-DLF_POOL_STRESS_THREADS=4")
    run = subprocess.run([str(program), "1000"], capture_output=True, text=True, timeout=300)
    if "FATAL: ThreadSanitizer" in run.stderr:  # e.g. a memory layout it cannot run in
        pytest.skip("ThreadSanitizer cannot run here: " + run.stderr.strip()[-300:])
    assert "WARNING: ThreadSanitizer" not in run.stderr, run.stderr[-4000:]
    assert run.returncode == 0 and "wrong runs 0, stale reads 0" in run.stdout, \
        run.stdout + run.stderr[-2000:]


def test_forward_refuses_sequences_too_large_to_exist(tmp_path):
    # One layer: its workspace does not depend on T, so only lf_forward's own
    # check on x and y stands between such a T and out-of-range offsets.
    program = build(tmp_path, "forward_limits.c", PORTABLE_CORE)
    run = subprocess.run([str(program)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, f"exit {run.returncode}\n{run.stdout}{run.stderr}"
    assert run.stdout.count("too large") == 3, run.stdout


# Networks for forward_file.c, each against the float64 reference: every cell
# kind, LSTMP, stacked and bidirectional, variable lengths, given states, no
# bias, the general (variant) path, sizes off the 4-lane vectors (the
# portable kernels' width on both architectures), and a thread pool: threads
# k > 1 split the steps over k, k < 0 leaves a pool of -k to the core, which
# pipelines small steps (2 x 40 x 4 x 40 multiply-adds, 19 steps here).
FORWARD_CASES = {
    "lstm-bidir-lengths-threads": dict(mode="lstm", I=17, H=33, L=2, bidir=True, T=5, B=3,
                                       hx=True, lengths=[5, 0, 2], threads=2),
    "lstm-pipelined": dict(mode="lstm", I=9, H=40, L=2, bidir=True, T=19, B=2, hx=True,
                           lengths=[19, 11], threads=-2),
    "lstmp-f64": dict(mode="lstm", dtype=np.float64, I=3, H=5, P=2, T=4, B=2, hx=True),
    "gru-stacked-B1": dict(mode="gru", I=4, H=17, L=2, T=6, B=1, hx=True),
    "gru-B33-threads": dict(mode="gru", I=6, H=8, T=3, B=33, threads=2),
    "rnn-relu-nobias": dict(mode="rnn_relu", I=5, H=9, T=3, B=4, bias=False),
    "rnn-tanh-size1-f64": dict(mode="rnn_tanh", dtype=np.float64, I=1, H=1, T=2, B=1),
    "lstm-peephole-coupled-clip": dict(mode="lstm", I=7, H=19, T=4, B=2, hx=True,
                                       variant={"peephole": True, "coupled_input_forget": True,
                                                "clip": 0.8}),
}
_CELLS = {"lstm": 0, "gru": 1, "rnn_tanh": 2, "rnn_relu": 3}


def _forward_file_case(name, threads=None):
    """(input file bytes, reference outputs, dtype) of FORWARD_CASES[name],
    run on `threads` threads if given."""
    case = {**dict(dtype=np.float32, P=0, L=1, bidir=False, bias=True, hx=False, lengths=None,
                   threads=1, variant={}), **FORWARD_CASES[name]}
    if threads is not None:
        case["threads"] = threads
    mode, dtype, I, H, P, L = (case[k] for k in ("mode", "dtype", "I", "H", "P", "L"))
    T, B, D = case["T"], case["B"], 2 if case["bidir"] else 1
    variant = case["variant"]
    rng = make_rng("forward-file", name)
    params = reference.random_params(mode, I, H, L, case["bidir"], case["bias"], P, rng=rng,
                                     dtype=dtype, peephole=variant.get("peephole", False))
    x = make_input(rng, T, B, I, dtype)
    hx = make_hx(mode, rng, L * D, B, H, P, dtype) if case["hx"] else None
    h0, c0 = (hx if mode == "lstm" else (hx, None)) if hx is not None else (None, None)
    lengths = None if case["lengths"] is None else np.array(case["lengths"], np.int64)
    flags = (1 if variant.get("peephole") else 0) | (2 if variant.get("coupled_input_forget") else 0)
    head = np.array([_CELLS[mode], 0 if dtype == np.float32 else 1, I, H, P, L, D, case["bias"],
                     flags, T, B, case["threads"], h0 is not None, c0 is not None,
                     lengths is not None, 0x0102030405060708], "<i8")
    real = np.dtype(dtype).newbyteorder("<")  # the file is little-endian on any machine
    parts = [head.tobytes(), np.array(variant.get("clip", 0.0), "<f8").tobytes()]
    parts += [np.ascontiguousarray(params[k], real).tobytes() for k in params]  # torch's order
    parts += [np.ascontiguousarray(a, real).tobytes() for a in (x, h0, c0) if a is not None]
    if lengths is not None:
        parts.append(lengths.astype("<i8").tobytes())
    y, state = reference.module_forward(mode, params, x, hx, lengths, variant=variant or None)
    h_n, c_n = state if mode == "lstm" else (state, None)
    return b"".join(parts), [a for a in (y, h_n, c_n) if a is not None], dtype


def _run_forward_file(program, tmp_path, name, emulator=(), threads=None):
    """Run one case, check it against the reference; return the output's bytes."""
    data, expected, dtype = _forward_file_case(name, threads)
    (tmp_path / "in.bin").write_bytes(data)
    run = subprocess.run([*emulator, str(program), str(tmp_path / "in.bin"), str(tmp_path / "out.bin")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, f"{name}: exit {run.returncode}\n{run.stdout}{run.stderr}"
    assert run.stdout.strip() == "ok, kernels portable", run.stdout
    output = (tmp_path / "out.bin").read_bytes()
    got = np.frombuffer(output, np.dtype(dtype).newbyteorder("<"))
    assert got.size == sum(a.size for a in expected), name
    for want in expected:
        np.testing.assert_allclose(got[:want.size].reshape(want.shape), want, err_msg=name,
                                   **tol(dtype))
        got = got[want.size:]
    return output


def test_forward_file_matches_reference_here(tmp_path):
    # The driver itself, built for this machine: what the AArch64 test
    # relies on. (Where gcc runs the other programs, this one must build.)
    program = build(tmp_path, "forward_file.c", PORTABLE_CORE, "-O2",
                    must_build=shutil.which("gcc") is not None)
    for name in FORWARD_CASES:
        _run_forward_file(program, tmp_path, name)


def test_threaded_forwards_have_no_data_race(tmp_path):
    # The threaded cases (steps split over a pool, and pipelined: one thread
    # steps while the other fills the next chunk of the ring) under
    # ThreadSanitizer, which reports any pair of accesses no barrier orders.
    program = build(tmp_path, "forward_file.c", PORTABLE_CORE, "-fsanitize=thread")
    threaded = [name for name, case in FORWARD_CASES.items() if case.get("threads", 1) != 1]
    assert "lstm-pipelined" in threaded
    for name in threaded:
        data, _, _ = _forward_file_case(name)
        (tmp_path / "in.bin").write_bytes(data)
        run = subprocess.run([str(program), str(tmp_path / "in.bin"), str(tmp_path / "out.bin")],
                             capture_output=True, text=True, timeout=300)
        if "FATAL: ThreadSanitizer" in run.stderr:
            pytest.skip("ThreadSanitizer cannot run here: " + run.stderr.strip()[-300:])
        assert "WARNING: ThreadSanitizer" not in run.stderr, f"{name}\n{run.stderr[-4000:]}"
        _run_forward_file(program, tmp_path, name)  # and the reference's answers


def _can_cross_build(tmp_path, compiler):
    """Whether `compiler` links a static C program (a cross gcc without its C
    library installed does not)."""
    (tmp_path / "probe.c").write_text("#include <stdio.h>\nint main(void) { return puts(\"\"); }\n")
    return subprocess.run([compiler, "-static", str(tmp_path / "probe.c"), "-o",
                           str(tmp_path / "probe")], capture_output=True).returncode == 0


def test_portable_core_on_aarch64(tmp_path):
    # The core must build for ARM and give the reference's answers there
    # (NEON vectors, contracted multiply-adds, the pool's AArch64 code).
    # qemu-user runs the guest's threads on this x86 host, so reorderings
    # that only weaker ARM hardware allows cannot show here. Needs a cross
    # compiler with its C library, and qemu-user (.ci/run installs them
    # where it may use apt-get).
    compiler, emulator = shutil.which("aarch64-linux-gnu-gcc"), shutil.which("qemu-aarch64")
    if compiler is None or emulator is None or not _can_cross_build(tmp_path, compiler):
        pytest.skip("needs aarch64-linux-gnu-gcc (with its C library) and qemu-aarch64")
    program = build(tmp_path, "forward_file.c", PORTABLE_CORE, "-O2", "-static",
                    compiler=compiler, must_build=True)
    for name in FORWARD_CASES:
        output = _run_forward_file(program, tmp_path, name, emulator=(emulator,))
        # The same bits on one thread: the Python tests check this on x86
        # only, and ARM's contracted multiply-adds are other code.
        if FORWARD_CASES[name].get("threads", 1) != 1:
            assert _run_forward_file(program, tmp_path, name, emulator=(emulator,),
                                     threads=1) == output, name
