"""One pytest-benchmark group per case; in each, lstm_fast and every installed
peer run on the same weights and input, and each asserts its answer first.

    python -m pytest bench --benchmark-only                  the default table
    python -m pytest bench --benchmark-only --quick-cases    small shapes
    python -m pytest bench --benchmark-only --benchmark-json=out.json
    python bench/compare.py out.json                         ratios vs lstm_fast
"""
import pytest

from lstm_fast import bench as lb

# As `python -m lstm_fast bench`: warmed up (first calls of torch and ONNX
# Runtime are slow), with the garbage collector off while timing.
TIMING = pytest.mark.benchmark(warmup=True, warmup_iterations=20, disable_gc=True)


@TIMING
def test_matmul_yardstick(benchmark, peer_threads):
    # The %peak column of compare.py divides each row's GFLOP/s by this
    # float32 matmul's, timed in the same run at the same thread count.
    run, flops, how = lb.matmul_yardstick(peer_threads)
    benchmark.group = "matmul yardstick"
    benchmark.extra_info.update(yardstick=how, flops_per_call=flops, threads=peer_threads)
    benchmark(run)


@TIMING
@pytest.mark.parametrize("peer", lb.PEERS)
def test_forward(benchmark, case, peer, case_data, peer_threads):
    for module in lb.PEER_MODULES.get(peer, ()):
        pytest.importorskip(module)
    data = case_data(case)
    # lstm_fast answers to the float64 reference, every other peer to lstm_fast.
    expected = data.reference if peer == "lstm_fast" else data.lstm_fast
    fn = lb.build_peer(peer, case, data.problem, peer_threads)
    out = lb.collect(case, fn)
    assert lb.matches(out, expected), (
        f"{peer} disagrees on {case.name}: max |diff| = {lb.max_abs_diff(out, expected):.3g}"
    )

    benchmark.group = case.name
    benchmark.extra_info.update(
        case=case.name,
        peer=peer,
        streaming=case.streaming,
        flops_per_call=case.flops_per_call,
        threads=peer_threads,
    )
    result = benchmark(fn)
    # A streaming callable has moved on to a later step by now; a whole-
    # sequence one must still give the checked answer after being timed.
    if not case.streaming:
        assert lb.matches(result, expected), f"{peer} changed its answer on {case.name} while timed"
    # pytest-benchmark writes the timing to its JSON even when an assert after
    # it fails: compare.py shows only rows that carry this mark as checked.
    benchmark.extra_info["checked"] = True
