"""One layer shared by several Python threads."""
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import lstm_fast  # noqa: F401
from helpers import make_hx, make_input, make_layer, make_rng, split

N_THREADS = 4


@pytest.mark.parametrize("mode", ["lstmp", "gru", "rnn_tanh"])
def test_concurrent_calls_match_sequential(isa, mode):
    rng = make_rng("threads", mode)
    I, H, L = 16, 48, 2
    layer = make_layer(mode, I, H, num_layers=L, bidirectional=True, dtype=np.float32, seed=8)
    P = layer.proj_size if mode == "lstmp" else 0
    jobs = []
    for k in range(24):
        T, B = 10 + k % 5, 1 + k % 7
        x = make_input(rng, T, B, I, np.float32)
        hx = make_hx(mode, rng, 2 * L, B, H, P, np.float32) if k % 2 else None
        lengths = list(rng.integers(0, T + 1, B)) if k % 3 == 0 else None
        jobs.append((x, hx, lengths))
    sequential = [split(mode, layer(*job)) for job in jobs]

    barrier = threading.Barrier(N_THREADS)

    def run(job_index):
        if job_index < N_THREADS:
            barrier.wait(timeout=60)     # start the first calls together
        return split(mode, layer(*jobs[job_index]))

    with ThreadPoolExecutor(N_THREADS) as pool:
        for _ in range(3):
            concurrent = list(pool.map(run, range(len(jobs))))
            for got, want in zip(concurrent, sequential):
                for a, b in zip(got, want):
                    if b is not None:
                        np.testing.assert_array_equal(a, b)


def test_assignment_racing_with_calls(isa):
    """Calls racing with a parameter assignment never crash and each result belongs to
    one parameter set or the other (no torn weights)."""
    rng = make_rng("race")
    I, H = 8, 24
    layer = make_layer("lstm", I, H, num_layers=2, dtype=np.float64, seed=9)
    x = make_input(rng, 12, 4, I)
    w_a = layer.weight_hh_l1.copy()
    w_b = rng.uniform(-0.3, 0.3, w_a.shape)
    y_a = layer(x)[0]
    layer.weight_hh_l1 = w_b
    y_b = layer(x)[0]
    assert not np.allclose(y_a, y_b)
    layer.weight_hh_l1 = w_a

    stop = threading.Event()
    errors = []

    def writer():
        try:
            i = 0
            while not stop.is_set():
                layer.weight_hh_l1 = w_b if i % 2 == 0 else w_a
                i += 1
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def reader(_):
        y = layer(x)[0]
        return np.array_equal(y, y_a) or np.array_equal(y, y_b)

    t = threading.Thread(target=writer)
    t.start()
    try:
        with ThreadPoolExecutor(3) as pool:
            consistent = list(pool.map(reader, range(150)))
    finally:
        stop.set()
        t.join()
    assert not errors, errors
    assert all(consistent), f"{consistent.count(False)} results from mixed weights"
    final = layer(x)[0]                       # the layer still works and matches its weights
    expected = y_a if np.array_equal(layer.weight_hh_l1, w_a) else y_b
    np.testing.assert_array_equal(final, expected)
