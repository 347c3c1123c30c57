"""Fixtures for the lstm_fast test suite.

`isa`: parametrized over lstm_fast.cpu_info()["isa_available"]; it forces the
kernel path with LSTM_FAST_ISA, which layers read when their engine is built,
so build layers inside the test, after the fixture has run. Set
LSTM_FAST_TEST_ISAS=portable,avx2 to restrict the list (e.g. while debugging):
a name the library does not know is a usage error (a typo must not silently
skip every ISA test); a known ISA this CPU or build cannot run is skipped.

`rng`: a numpy Generator seeded from the test's node id (deterministic).

The plain helpers (inputs, distinct non-zero h0/c0, layer builders, tolerance
policy) are in helpers.py; reference.py is the float64 NumPy reference.
"""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from helpers import make_rng  # noqa: E402

try:
    import lstm_fast
    lstm_fast.cpu_info  # an empty source tree imports as a namespace package
    _IMPORT_ERROR = None
except (ImportError, AttributeError) as exc:  # not built yet: only the reference tests can run
    lstm_fast = None
    _IMPORT_ERROR = exc


def _isa_params():
    """(ISAs to test, names in LSTM_FAST_TEST_ISAS that are no ISA at all)."""
    if lstm_fast is None:
        return ["portable"], []
    from lstm_fast import _core
    available = list(lstm_fast.cpu_info()["isa_available"])
    only = os.environ.get("LSTM_FAST_TEST_ISAS")
    if not only:
        return available, []
    wanted = [s.strip() for s in only.split(",") if s.strip()]
    if not wanted:
        return [], [repr(only)]
    known = _core.isa_names()
    # Known but not runnable here stays a parameter: the fixture skips it by name.
    return [i for i in known if i in wanted], [w for w in wanted if w not in known]


ISAS, _UNKNOWN_ISAS = _isa_params()


def pytest_configure(config):
    if _UNKNOWN_ISAS:
        from lstm_fast import _core
        raise pytest.UsageError(
            f"LSTM_FAST_TEST_ISAS={os.environ.get('LSTM_FAST_TEST_ISAS')!r} names unknown ISA(s) "
            f"{', '.join(_UNKNOWN_ISAS)}; known ISAs: {', '.join(_core.isa_names())}")


@pytest.fixture(autouse=True)
def _no_inherited_isa(monkeypatch):
    """Tests that do not ask for `isa` get the default (auto) path."""
    monkeypatch.delenv("LSTM_FAST_ISA", raising=False)


@pytest.fixture(params=ISAS)
def isa(request, monkeypatch, _no_inherited_isa):
    if lstm_fast is None:
        pytest.skip(f"lstm_fast is not importable: {_IMPORT_ERROR}")
    from lstm_fast import _core
    if not _core.isa_available(request.param):
        pytest.skip(f"ISA {request.param} is not available on this CPU or in this build")
    monkeypatch.setenv("LSTM_FAST_ISA", request.param)
    return request.param


@pytest.fixture
def rng(request):
    return make_rng(request.node.nodeid)


def pytest_report_header(config):
    if lstm_fast is None:
        return f"lstm_fast: NOT importable ({_IMPORT_ERROR})"
    info = lstm_fast.cpu_info()
    return (f"lstm_fast {info.get('version')}: isa_available={info.get('isa_available')} "
            f"best={info.get('isa_best')}; testing ISAs {ISAS}")
