"""Accuracy and edge cases of the SIMD sigmoid / tanh kernels, on every available ISA."""
import numpy as np
import pytest

from helpers import make_rng

_core = pytest.importorskip("lstm_fast._core")

# Max abs error bounds vs a high-precision reference. Measured values are printed (pytest -s).
BOUND = {np.float32: 4e-7, np.float64: 1e-15}
DTYPES = [np.float32, np.float64]
FUNCS = ["sigmoid", "tanh"]


def _call(func, x, isa):
    return getattr(_core, f"vector_{func}")(x, isa)


def _exact(func, x):
    """tanh / sigmoid in extended precision of x's values (x already rounded to its dtype)."""
    xl = np.asarray(x, dtype=np.longdouble)
    if func == "tanh":
        return np.tanh(xl)
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-xl))


def _grid(dtype):
    rng = make_rng("vector-grid", np.dtype(dtype).name)
    dense = np.linspace(-20, 20, 400_001)
    small = np.concatenate([np.geomspace(1e-12, 1, 2001), -np.geomspace(1e-12, 1, 2001)])
    rnd = np.concatenate([rng.uniform(-20, 20, 50_001), rng.standard_normal(20_001) * 3])
    return np.concatenate([dense, small, rnd]).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("func", FUNCS)
def test_accuracy(isa, func, dtype):
    x = _grid(dtype)
    y = _call(func, x, isa)
    assert isinstance(y, np.ndarray) and y.dtype == np.dtype(dtype) and y.shape == x.shape
    err = np.abs(y.astype(np.longdouble) - _exact(func, x))
    worst = int(np.argmax(err))
    print(f"\n{isa} {func} {np.dtype(dtype).name}: max abs error {float(err[worst]):.3g} "
          f"at x={x[worst]!r}")
    assert float(err[worst]) <= BOUND[dtype], (func, isa, x[worst], y[worst])


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("func", FUNCS)
@pytest.mark.parametrize("n", [0, 1, 2, 3, 5, 7, 9, 15, 17, 31, 33, 63, 65, 1001, 1027])
def test_remainder_lengths(isa, func, dtype, n):
    """Lengths that are not multiples of any vector width: every element computed, none past n."""
    rng = make_rng("vector-len", n, np.dtype(dtype).name)
    x = rng.uniform(-9, 9, n).astype(dtype)
    y = _call(func, x, isa)
    assert y.shape == (n,) and y.dtype == np.dtype(dtype)
    if n:
        err = np.abs(y.astype(np.longdouble) - _exact(func, x))
        assert float(err.max()) <= BOUND[dtype]
        # same value whether an element sits in the vector body or in the remainder
        y_shift = _call(func, x[1:], isa)
        y_one = np.array([_call(func, x[i:i + 1], isa)[0] for i in range(min(n, 40))], dtype)
        assert float(np.max(np.abs(y_shift.astype(np.float64) - y[1:]), initial=0)) <= 2 * BOUND[dtype]
        assert float(np.max(np.abs(y_one.astype(np.float64) - y[:len(y_one)]))) <= 2 * BOUND[dtype]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_saturation_and_specials(isa, dtype):
    inf = np.inf
    x = np.array([20, -20, 40, -40, 1e4, -1e4, inf, -inf, 88.8, -88.8, 710, -710,
                  np.finfo(dtype).max, -np.finfo(dtype).max], dtype)
    t = _call("tanh", x, isa)
    s = _call("sigmoid", x, isa)
    assert np.all(np.isfinite(t)) and np.all(np.isfinite(s))
    sign = np.sign(x)
    np.testing.assert_array_equal(t, sign.astype(dtype))          # saturated exactly at +-1
    np.testing.assert_array_equal(s[x >= 40], 1.0)                 # sigmoid(>= 40) == 1 exactly
    assert s[list(x).index(-inf)] == 0.0
    assert np.all(s[x <= -40] >= 0) and np.all(s[x <= -40] < 1e-17)
    # around and below zero
    z = np.array([0.0, -0.0], dtype)
    # signed zeros kept, as libm and torch keep them: tanh(+0) = +0, tanh(-0) = -0
    np.testing.assert_array_equal(np.signbit(_call("tanh", z, isa)), [False, True])
    assert np.all(_call("tanh", z, isa) == 0)
    np.testing.assert_array_equal(_call("sigmoid", z, isa), np.array([0.5, 0.5], dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("func", FUNCS)
def test_nan_propagates(isa, func, dtype):
    x = np.array([np.nan, 1.0, -np.nan, 0.5, np.nan, 2.0, 3.0, 4.0, np.nan] * 5, dtype)[:41]
    y = _call(func, x, isa)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(x))
    ok = ~np.isnan(x)
    assert float(np.max(np.abs(y[ok].astype(np.longdouble) - _exact(func, x[ok])))) <= BOUND[dtype]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_denormals(isa, dtype):
    tiny = np.finfo(dtype).smallest_subnormal
    normal = np.finfo(dtype).tiny
    x = np.array([tiny, -tiny, tiny * 7, -tiny * 1000, normal / 2, -normal / 3, normal, -normal] * 3,
                 dtype)
    t = _call("tanh", x, isa)
    s = _call("sigmoid", x, isa)
    assert np.all(np.isfinite(t)) and np.all(np.isfinite(s))
    # tanh(x) ~ x: never bigger than |x| in magnitude, never of the opposite sign (0 allowed: FTZ)
    assert np.all(np.abs(t) <= np.abs(x)) and np.all(t * x >= 0)
    np.testing.assert_array_equal(s, np.full_like(x, 0.5))


def _neighbourhood(center, dtype, n=2000):
    """Every representable value within n ulps of +-center (both signs)."""
    itype = np.int32 if dtype == np.float32 else np.int64
    bits = int(np.array([abs(center)], dtype).view(itype)[0])
    v = np.arange(max(bits - n, 0), bits + n, dtype=itype).view(dtype)
    return np.concatenate([v, -v])


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("func", FUNCS)
def test_monotonic(isa, func, dtype):
    """Non-decreasing over a fine grid (step 2e-4 over [-20, 20], strictly); and over every
    representable value around points where approximations typically switch branch or
    range-reduce, where an approximation with a few ulps of error may wobble by at most one
    ulp of the result but must not step back further (a branch seam would)."""
    x = np.linspace(-20, 20, 200_001).astype(dtype)
    y = _call(func, x, isa)
    d = np.diff(y.astype(np.float64))
    bad = np.flatnonzero(d < 0)
    assert bad.size == 0, f"not monotonic at x={x[bad[:5]]}: y={y[bad[:5]]} then {y[bad[:5] + 1]}"
    assert y[0] < y[-1]

    parts = [_neighbourhood(c, dtype) for c in (0.0, 0.25, 0.5, 0.625, 1.0, 2.0, 4.0, 9.0, 10.0, 17.0)]
    x = np.unique(np.concatenate(parts))
    y = _call(func, x, isa)
    d = np.diff(y.astype(np.float64))
    ulp = np.spacing(np.abs(y[:-1])).astype(np.float64)
    bad = np.flatnonzero(d < -ulp)
    assert bad.size == 0, f"steps back > 1 ulp at x={x[bad[:5]]}: y={y[bad[:5]]} then {y[bad[:5] + 1]}"


def test_odd_symmetry_tanh(isa):
    x = np.linspace(0, 20, 100_001)
    for dtype in DTYPES:
        xp = x.astype(dtype)
        tp = _call("tanh", xp, isa)
        tm = _call("tanh", -xp, isa)
        assert float(np.max(np.abs(tp.astype(np.float64) + tm))) <= 2 * BOUND[dtype]
        sp = _call("sigmoid", xp, isa)
        sm = _call("sigmoid", -xp, isa)
        assert float(np.max(np.abs(sp.astype(np.float64) + sm - 1))) <= 3 * BOUND[dtype]


def test_vector_math_bad_args(isa):
    with pytest.raises(TypeError, match="x must be float32 or float64"):
        _core.vector_tanh(np.zeros(3, np.int32), isa)
    with pytest.raises(ValueError, match="unknown ISA name"):
        _core.vector_sigmoid(np.zeros(3, np.float32), "no-such-isa")
