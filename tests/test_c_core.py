"""The C core through small C programs (tests/c/), built here with the
system compiler where one exists (a source checkout), for what Python cannot
reach: a data race under ThreadSanitizer, and sizes no NumPy array can have."""
import shutil
import subprocess
from pathlib import Path

import pytest

CSRC = Path(__file__).resolve().parents[1] / "csrc"
PROGRAMS = Path(__file__).resolve().with_name("c")
# The core without the ISA kernels that need their own -m flags.
PORTABLE_CORE = ["status.c", "cpu_features.c", "dispatch.c", "plan.c", "pack.c", "grid.c", "pool.c",
                 "kernels/kernels_portable.c"]


def build(tmp_path, source, core_files, *flags):
    """Compile tests/c/`source` with `core_files` of csrc/; skip where that cannot be done."""
    compiler = shutil.which("gcc") or shutil.which("clang")
    if compiler is None or not (CSRC / "lstm_fast.h").exists():
        pytest.skip("needs a C compiler and the csrc/ sources (a source checkout)")
    program = tmp_path / Path(source).stem
    result = subprocess.run(
        [compiler, "-std=gnu11", "-O1", "-g", "-pthread", f"-I{CSRC}", *flags, str(PROGRAMS / source),
         *[str(CSRC / name) for name in core_files], "-lm", "-o", str(program)],
        capture_output=True, text=True,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot build {source} here: " + result.stderr.strip()[-300:])
    return program


def test_pool_hand_off_has_no_data_race(tmp_path):
    # Jobs of 2, 3 and 4 threads in turn, so a worker that sat one job out
    # reads the job fields while the next is published. x86-64 forgives
    # missing fences that AArch64 does not; ThreadSanitizer checks the C11
    # memory model itself, so such a race shows on any machine.
    program = build(tmp_path, "pool_stress.c", ["pool.c", "status.c"],
                    "-fsanitize=thread", "-DLF_POOL_STRESS_THREADS=4")
    run = subprocess.run([str(program), "1000"], capture_output=True, text=True, timeout=300)
    if "FATAL: ThreadSanitizer" in run.stderr:  # e.g. a memory layout it cannot run in
        pytest.skip("ThreadSanitizer cannot run here: " + run.stderr.strip()[-300:])
    assert "WARNING: ThreadSanitizer" not in run.stderr, run.stderr[-4000:]
    assert run.returncode == 0 and "wrong runs 0" in run.stdout, run.stdout + run.stderr[-2000:]


def test_forward_refuses_sequences_too_large_to_exist(tmp_path):
    # One layer: its workspace does not depend on T, so only lf_forward's own
    # check on x and y stands between such a T and out-of-range offsets.
    program = build(tmp_path, "forward_limits.c", PORTABLE_CORE)
    run = subprocess.run([str(program)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, f"exit {run.returncode}\n{run.stdout}{run.stderr}"
    assert run.stdout.count("too large") == 3, run.stdout
