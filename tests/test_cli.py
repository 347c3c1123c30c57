"""`python -m lstm_fast`: arguments are checked before anything is timed."""
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lstm_fast import bench

COMPARE = Path(__file__).resolve().parents[1] / "bench" / "compare.py"


@pytest.fixture(autouse=True)
def _thread_settings_restored():
    # bench.run_case sets lstm_fast's and NumPy's BLAS thread counts for the
    # process: the tests after these keep their own.
    import lstm_fast

    blas, ours = bench.numpy_blas_threads(), lstm_fast.get_num_threads()
    yield
    if blas is not None:
        bench.set_openblas_threads(blas)
    lstm_fast.set_num_threads(ours)


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


def test_bench_refuses_a_bad_isa_variable_before_timing(monkeypatch):
    monkeypatch.setenv("LSTM_FAST_ISA", "bogus")
    out = _run("bench", "--quick", "--peers", "numpy")
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert "LSTM_FAST_ISA='bogus' is not a known ISA" in out.stderr
    assert out.stdout == ""


def test_bench_json_directory_refused(tmp_path):
    out = _run("bench", "--json", str(tmp_path))
    assert out.returncode == 2 and "is a directory" in out.stderr


def test_bench_runs_a_case_and_writes_json(tmp_path):
    target = tmp_path / "results.json"
    out = _run("bench", "--quick", "--cases", "lstm_T20_B1_I32_H32", "--peers", "numpy",
               "--repeat", "2", "--max-time", "0.1", "--json", str(target))
    assert out.returncode == 0, out.stderr
    assert "lstm_T20_B1_I32_H32" in out.stdout
    data = json.loads(target.read_text())
    results = data["results"]
    assert {r["peer"] for r in results} == {"lstm_fast", "numpy"}
    assert all(r["ok"] for r in results)
    # The yardstick is timed with each case, and its rate kept per result.
    assert all(r["matmul_gflops"] > 0 for r in results)
    assert data["environment"]["skipped_peers"] == []
    assert "matmul timed in each case's rounds" in out.stdout


def _bench_without_onnxruntime(*args):
    code = ("import sys; sys.modules['onnxruntime'] = None; "
            "from lstm_fast.__main__ import main; "
            f"sys.exit(main(['bench', '--quick', {', '.join(map(repr, args))}]))")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)


def test_bench_refuses_a_named_peer_that_cannot_run():
    # Asked for by name, a missing peer is an error, not a silent omission.
    out = _bench_without_onnxruntime("--peers", "onnxruntime")
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert "peer onnxruntime cannot run here" in out.stderr
    # An empty list names no peer: the defaults, skipped where missing.
    out = _bench_without_onnxruntime("--peers", ",", "--cases", "lstm_T20_B1_I32_H32",
                                     "--repeat", "2", "--max-time", "0.05")
    assert out.returncode == 0, (out.stdout, out.stderr)
    skipped = [line for line in out.stdout.splitlines() if line.startswith("skipped peers:")]
    assert len(skipped) == 1 and "onnxruntime (" in skipped[0], out.stdout


def _run_with_a_wrong_peer(monkeypatch, peer):
    """run_case on a quick case with lstm_fast and numpy, `peer`'s output off by 1e-2."""
    case = bench.select_cases(["lstm_T20_B1_I32_H32"], quick=True)[0]
    right = bench._BUILDERS[peer]

    def wrong(case, problem, threads):
        fn = right(case, problem, threads)
        return lambda: fn() + np.float32(1e-2)

    monkeypatch.setitem(bench._BUILDERS, peer, wrong)
    return bench.run_case(case, ["lstm_fast", "numpy"], 1, repeat=2, max_time=0.05)


def test_a_wrong_peer_is_reported_and_not_timed(monkeypatch):
    ours, theirs = _run_with_a_wrong_peer(monkeypatch, "numpy")
    assert ours.ok and ours.timing is not None
    assert not theirs.ok and theirs.timing is None and theirs.ratio is None
    assert "MISMATCH" in bench.result_row(theirs)[6] and "not timed" in bench.result_row(theirs)[6]


def test_a_stream_that_restarts_from_a_stale_state_is_caught(monkeypatch):
    # Every timed pass after the first restarts the stream: a peer whose
    # restart keeps the old state must not pass its check.
    case = next(c for c in bench.select_cases(quick=True) if c.streaming)
    right = bench._BUILDERS["numpy"]

    def stale(case, problem, threads):
        fn, calls = right(case, problem, threads), [0]

        def step():
            calls[0] += 1
            return fn() + (np.float32(1e-2) if calls[0] > case.T else np.float32(0))
        return step

    monkeypatch.setitem(bench._BUILDERS, "numpy", stale)
    ours, theirs = bench.run_case(case, ["lstm_fast", "numpy"], 1, repeat=2, max_time=0.05)
    assert ours.ok and not theirs.ok and theirs.timing is None
    assert "restart between passes" in theirs.error


def test_when_lstm_fast_is_wrong_the_peers_answer_to_the_reference(monkeypatch):
    # Nothing is timed, and right peers are not blamed for our error.
    ours, theirs = _run_with_a_wrong_peer(monkeypatch, "lstm_fast")
    assert not ours.ok and ours.timing is None
    assert theirs.ok and theirs.timing is None


def test_yardstick_is_timed_every_round_outside_the_budget():
    # A slow yardstick must not use up the peers' time budget: 7 rounds of
    # ~0.03 s of sampling for `a` stay within its 0.5 s, while counting the
    # yardstick's ~0.25 s per round would end the timing after the minimum
    # of 5 rounds.
    timings = bench.time_callables(
        {"a": lambda: time.sleep(0.002), "yardstick": lambda: time.sleep(0.25)},
        repeat=7, min_sample_time=0.001, max_time=0.5, warmup_time=0.001,
        unbudgeted={"yardstick"})
    assert timings["a"].samples == timings["yardstick"].samples == 7


def _benchmark_json(path, checked, yardstick=False):
    entries = []
    for peer, median in (("lstm_fast", 1e-3), ("numpy", 3e-3)):
        info = dict(case="lstm_T20_B1_I32_H32", peer=peer, streaming=False, flops_per_call=1e6)
        if checked[peer]:
            info["checked"] = True
        entries.append({"extra_info": info, "stats": {"median": median, "min": median}})
    if yardstick:  # 4 GFLOP/s: lstm_fast's 1 GFLOP/s is 25% of it
        entries.append({"extra_info": dict(yardstick="torch.mm 1024^3, 1 thread(s)",
                                           flops_per_call=4e6, threads=1),
                        "stats": {"median": 1e-3, "min": 1e-3}})
    path.write_text(json.dumps({"benchmarks": entries}))


def test_compare_reports_peak_against_the_runs_yardstick(tmp_path):
    target = tmp_path / "out.json"
    for yardstick in (True, False):
        _benchmark_json(target, {"lstm_fast": True, "numpy": True}, yardstick=yardstick)
        out = subprocess.run([sys.executable, str(COMPARE), str(target)], capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert ("%peak = GFLOP/s / 4.0 GFLOP/s of the yardstick" in out.stdout) == yardstick
        assert (" 25%" in out.stdout) == yardstick and ("  8%" in out.stdout) == yardstick


def test_compare_flags_rows_whose_checks_did_not_pass(tmp_path):
    target = tmp_path / "out.json"
    _benchmark_json(target, {"lstm_fast": True, "numpy": True})
    out = subprocess.run([sys.executable, str(COMPARE), str(target)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "3.00x" in out.stdout and "UNCHECKED" not in out.stdout
    _benchmark_json(target, {"lstm_fast": True, "numpy": False})
    out = subprocess.run([sys.executable, str(COMPARE), str(target)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 1
    assert "UNCHECKED" in out.stdout and "lstm_T20_B1_I32_H32 / numpy" in out.stderr
