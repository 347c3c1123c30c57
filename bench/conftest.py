"""Fixtures of the benchmark groups (run: python -m pytest bench --benchmark-only).

Cases, peers, data and checks all come from lstm_fast.bench, the module behind
`python -m lstm_fast bench`, so the two cannot drift apart.
"""
from dataclasses import dataclass

import numpy as np
import pytest

from lstm_fast import bench as lb
from lstm_fast._config import default_threads


def pytest_addoption(parser):
    group = parser.getgroup("lstm_fast benchmarks")
    group.addoption(
        "--quick-cases",
        action="store_true",
        help="the small cases of `python -m lstm_fast bench --quick` instead of the default table",
    )
    group.addoption(
        "--peer-threads",
        type=int,
        default=None,
        help="threads of lstm_fast, torch, onnxruntime and NumPy's OpenBLAS (default: the CPUs available)",
    )


def pytest_generate_tests(metafunc):
    if "case" in metafunc.fixturenames:
        cases = lb.select_cases(quick=metafunc.config.getoption("--quick-cases"))
        metafunc.parametrize("case", cases, ids=[c.name for c in cases])


@pytest.fixture(scope="session")
def peer_threads(pytestconfig):
    threads = pytestconfig.getoption("--peer-threads") or default_threads()
    lb.set_threads(threads)
    return threads


@dataclass
class CaseData:
    problem: lb.Problem
    lstm_fast: np.ndarray  # what every other peer must reproduce
    reference: np.ndarray  # float64, what lstm_fast must reproduce


@pytest.fixture(scope="session")
def case_data(peer_threads):
    """case -> CaseData, computed once per case for all its peers."""
    cache = {}

    def get(case):
        if case not in cache:
            problem = lb.make_problem(case)
            ours = lb.collect(case, lb.build_peer("lstm_fast", case, problem, peer_threads))
            cache[case] = CaseData(problem, ours, lb.reference(problem))
        return cache[case]

    return get
