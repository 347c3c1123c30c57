"""`python -m lstm_fast`: arguments are checked before anything is timed."""
import json
import subprocess
import sys

import pytest


def _run(*args):
    return subprocess.run([sys.executable, "-m", "lstm_fast", *args], capture_output=True,
                          text=True, timeout=300)


def test_info_prints_the_report():
    out = _run("info")
    assert out.returncode == 0, out.stderr
    assert "ISA" in out.stdout


@pytest.mark.parametrize("args, message", [
    (["--threads", "2000"], "--threads must be in [1, 1024], got 2000"),
    (["--threads", "0"], "--threads must be in [1, 1024], got 0"),
    (["--repeat", "0"], "--repeat must be >= 1, got 0"),
    (["--max-time", "nan"], "--max-time must be a finite number > 0, got nan"),
    (["--max-time", "0"], "--max-time must be a finite number > 0"),
    (["--json", "/nonexistent-lstm-fast-dir/out.json"], "no directory /nonexistent-lstm-fast-dir"),
    (["--cases", "no_such_case"], "no_such_case"),
    (["--peers", "keras2"], "keras2"),
])
def test_bench_refuses_bad_arguments_before_timing(args, message):
    out = _run("bench", *args)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert message in out.stderr
    assert out.stdout == ""  # nothing was checked or timed


def test_bench_json_directory_refused(tmp_path):
    out = _run("bench", "--json", str(tmp_path))
    assert out.returncode == 2 and "is a directory" in out.stderr


def test_bench_runs_a_case_and_writes_json(tmp_path):
    target = tmp_path / "results.json"
    out = _run("bench", "--quick", "--cases", "lstm_T20_B1_I32_H32", "--peers", "numpy",
               "--repeat", "2", "--max-time", "0.1", "--json", str(target))
    assert out.returncode == 0, out.stderr
    assert "lstm_T20_B1_I32_H32" in out.stdout
    results = json.loads(target.read_text())["results"]
    assert {r["peer"] for r in results} == {"lstm_fast", "numpy"}
    assert all(r["ok"] for r in results)
