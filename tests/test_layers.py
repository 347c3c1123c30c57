"""lstm_fast.LSTM / GRU / RNN against the float64 NumPy reference, on every available ISA."""
import warnings

from collections import deque

import numpy as np
import pytest

import lstm_fast  # (a collection error here means the package is not built)
import reference
from helpers import (MODES, assert_calls_agree, assert_close, assert_result, is_lstm, make_cell, make_hx, make_input,
                     make_layer, make_rng, params64, proj_for, ref_mode, split, spy_fast_path, tol)

DTYPES = [np.float32, np.float64]

BASE = dict(T=5, B=3, I=4, H=8, L=1, bidir=False, bias=True, batch_first=False, hx=False,
            lengths=None, unbatched=False)
# Each entry covers a feature; the set as a whole covers every feature at least twice.
CONFIGS = {
    "basic": {},
    "odd-sizes": dict(T=7, B=5, I=17, H=33),
    "size1-B1": dict(T=3, B=1, I=1, H=1),                 # lstmp skipped (needs H >= 2)
    "H2-B1-hx": dict(T=4, B=1, I=3, H=2, hx=True),
    "vec16": dict(T=3, B=8, I=16, H=16, hx=True),
    "wide-bidir": dict(T=4, B=3, I=32, H=35, bidir=True),
    "deep3-bidir-hx": dict(T=6, B=4, I=3, H=5, L=3, bidir=True, hx=True),
    "nobias-hx": dict(T=5, B=3, I=5, H=9, L=2, bias=False, hx=True),
    "nobias-bidir-bf": dict(T=4, B=2, I=7, H=17, L=2, bias=False, bidir=True, batch_first=True),
    "lengths-bidir-bf-hx": dict(T=6, B=5, I=4, H=6, L=2, bidir=True, batch_first=True, hx=True,
                                lengths=[3, 6, 0, 1, 6]),
    "lengths-deep": dict(T=8, B=4, I=3, H=7, L=3, lengths=[8, 2, 5, 0]),
    "lengths-all0-hx": dict(T=4, B=2, I=3, H=4, bidir=True, hx=True, lengths=[0, 0]),
    "lengths-odd-bidir": dict(T=5, B=7, I=9, H=11, bidir=True, lengths=[5, 1, 4, 2, 5, 3, 0]),
    "T0-hx": dict(T=0, B=3, L=2, bidir=True, hx=True),
    "T0": dict(T=0, B=2),
    "T1-lengths-hx": dict(T=1, B=2, L=2, bidir=True, hx=True, lengths=[1, 0]),
    "B0": dict(T=3, B=0, bidir=True),
    "batch13-hx": dict(T=4, B=13, I=6, H=20, hx=True),
    "unbatched-bidir-hx": dict(T=5, I=3, H=7, L=2, bidir=True, unbatched=True, hx=True),
    "unbatched-bf": dict(T=4, I=5, H=3, unbatched=True, batch_first=True),
    "unbatched-T1": dict(T=1, I=2, H=9, L=2, unbatched=True),
    # One row over several SIMD blocks: the lone-row tiles of two blocks, and
    # the reversed block order of odd steps, against the reference.
    "B1-wide": dict(T=5, B=1, I=33, H=37, L=2, hx=True),
    "unbatched-wide": dict(T=4, I=33, H=40, bidir=True, unbatched=True, hx=True),
}


# every (mode, config) pair except LSTMP with hidden_size 1 (a projection needs P < H)
CASES = [(mode, name) for name in CONFIGS for mode in MODES
         if not (mode == "lstmp" and {**BASE, **CONFIGS[name]}["H"] < 2)]


def _cfg(name, mode):
    cfg = {**BASE, **CONFIGS[name]}
    if cfg["unbatched"]:
        cfg["B"] = 1
    return cfg


def _load_random_params(layer, mode, cfg, rng, dtype):
    """Replace the default init with larger random weights (saturating gates more often)."""
    P = proj_for(mode, cfg["H"])
    scale = min(0.8, 1.6 / np.sqrt(cfg["H"]))
    p = reference.random_params(ref_mode(mode), cfg["I"], cfg["H"], cfg["L"], cfg["bidir"],
                                cfg["bias"], P, rng=rng, scale=scale, dtype=dtype)
    layer.load_state_dict(p)
    return p


def _run_case(isa, mode, dtype, name, random_params=True):
    cfg = _cfg(name, mode)
    T, B, I, H, L = cfg["T"], cfg["B"], cfg["I"], cfg["H"], cfg["L"]
    D = 2 if cfg["bidir"] else 1
    P = proj_for(mode, H)
    rng = make_rng("layers", name, mode, np.dtype(dtype).name)   # same data on every ISA
    layer = make_layer(mode, I, H, num_layers=L, bias=cfg["bias"], batch_first=cfg["batch_first"],
                       bidirectional=cfg["bidir"], dtype=dtype, seed=7)
    assert layer.isa == isa
    if random_params:
        _load_random_params(layer, mode, cfg, rng, dtype)
    x = make_input(rng, T, B, I, dtype, cfg["batch_first"], cfg["unbatched"])
    hx = make_hx(mode, rng, L * D, B, H, P, dtype, cfg["unbatched"]) if cfg["hx"] else None
    lengths = cfg["lengths"]
    x_before = x.copy()
    expected = reference.module_forward(ref_mode(mode), params64(layer), x, hx, lengths,
                                        cfg["batch_first"])
    got = layer(x, hx=hx, lengths=lengths) if lengths is not None else layer(x, hx)
    assert_result(mode, got, expected, dtype)
    np.testing.assert_array_equal(x, x_before)   # input untouched
    return layer, x, hx, got, cfg


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("mode,name", CASES, ids=[f"{m}-{n}" for m, n in CASES])
def test_matches_reference(isa, mode, name, dtype):
    layer, x, hx, got, cfg = _run_case(isa, mode, dtype, name)
    y, h, c = split(mode, got)
    # shapes exactly as torch
    D = 2 if cfg["bidir"] else 1
    R = proj_for(mode, cfg["H"]) or cfg["H"]
    LD, T, B, H = cfg["L"] * D, cfg["T"], cfg["B"], cfg["H"]
    if cfg["unbatched"]:
        assert y.shape == (T, D * R) and h.shape == (LD, R)
        assert c is None or c.shape == (LD, H)
    else:
        assert y.shape == ((B, T, D * R) if cfg["batch_first"] else (T, B, D * R))
        assert h.shape == (LD, B, R)
        assert c is None or c.shape == (LD, B, H)
    # padded outputs are exactly zero
    if cfg["lengths"] is not None:
        yt = y.transpose(1, 0, 2) if cfg["batch_first"] else y
        for b, n in enumerate(cfg["lengths"]):
            assert np.all(yt[n:, b] == 0), f"output past length {n} of batch element {b} not zero"
    # stateless and deterministic: a second call gives the identical result
    again = layer.forward(x, hx, cfg["lengths"])
    for a, b_ in zip(split(mode, got), split(mode, again)):
        if a is not None:
            np.testing.assert_array_equal(a, b_)


@pytest.mark.parametrize("mode", MODES)
def test_default_init_matches_reference(isa, mode):
    _run_case(isa, mode, np.float64, "deep3-bidir-hx", random_params=False)


@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn_relu"])
def test_zero_length_keeps_initial_state(isa, mode):
    rng = make_rng("zero-len", mode)
    T, B, I, H, L = 4, 3, 3, 5, 2
    layer = make_layer(mode, I, H, num_layers=L, bidirectional=True, dtype=np.float64, seed=1)
    x = make_input(rng, T, B, I)
    hx = make_hx(mode, rng, 2 * L, B, H)
    y, h, c = split(mode, layer(x, hx, lengths=[2, 0, 4]))
    h0 = hx[0] if is_lstm(mode) else hx
    np.testing.assert_array_equal(h[:, 1], h0[:, 1])
    if is_lstm(mode):
        np.testing.assert_array_equal(c[:, 1], hx[1][:, 1])
    assert np.all(y[:, 1] == 0)
    assert not np.any(h[:, 0] == h0[:, 0])   # the others did move


@pytest.mark.parametrize("mode", MODES)
def test_padding_values_are_ignored(isa, mode):
    """Whatever sits in x past a sequence's length must not change anything."""
    rng = make_rng("pad-ignored", mode)
    T, B, I, H = 6, 4, 3, 6
    lengths = [2, 6, 0, 4]
    layer = make_layer(mode, I, H, num_layers=2, bidirectional=True, dtype=np.float64, seed=2)
    x = make_input(rng, T, B, I)
    large, non_finite = x.copy(), x.copy()
    for b, n in enumerate(lengths):
        large[n:, b] = rng.standard_normal((T - n, I)) * 100
        # NaN and inf too: masking by multiplying with 0 would spread them.
        non_finite[n:, b] = np.resize([np.nan, np.inf, -np.inf], (T - n, I))
    r1 = split(mode, layer(x, lengths=lengths))
    for padded in (large, non_finite):
        r2 = split(mode, layer(padded, lengths=lengths))
        for a, b_ in zip(r1, r2):
            if a is not None:
                np.testing.assert_array_equal(a, b_)


@pytest.mark.parametrize("mode", ["lstmp", "gru", "rnn_tanh"])
def test_lengths_all_full_equals_no_lengths(isa, mode):
    rng = make_rng("full-lengths", mode)
    T, B, I, H = 5, 3, 4, 7
    layer = make_layer(mode, I, H, num_layers=2, bidirectional=True, dtype=np.float64, seed=3)
    x = make_input(rng, T, B, I)
    r1 = split(mode, layer(x))
    r2 = split(mode, layer(x, lengths=[T] * B))
    for a, b_ in zip(r1, r2):
        if a is not None:
            np.testing.assert_allclose(a, b_, rtol=1e-13, atol=1e-14)


def test_lengths_of_any_equivalent_int64_type():
    # On Linux numpy's int64 is C long; an array built from C long long
    # (array.array('q')) has another type number for the same type.
    import array

    rng = make_rng("lengths-longlong")
    layer = make_layer("gru", 2, 3, dtype=np.float32, seed=1)
    x = make_input(rng, 4, 2, 2, np.float32)
    longlong = np.asarray(array.array("q", [3, 1]))
    assert longlong.dtype == np.int64
    expected = split("gru", layer(x, lengths=np.array([3, 1], np.int64)))
    for got, want in zip(split("gru", layer(x, lengths=longlong)), expected):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("H,P", [(2, 1), (9, 8), (16, 1), (33, 17)])
def test_projection_sizes(isa, H, P):
    rng = make_rng("proj", H, P)
    T, B, I = 4, 3, 5
    for dtype in DTYPES:
        layer = make_layer("lstm", I, H, num_layers=2, bidirectional=True, proj_size=P, dtype=dtype)
        x = make_input(rng, T, B, I, dtype)
        hx = make_hx("lstm", rng, 4, B, H, P, dtype)
        expected = reference.module_forward("lstm", params64(layer), x, hx, [4, 1, 3])
        got = layer(x, hx, lengths=[4, 1, 3])
        assert_result("lstm", got, expected, dtype)
        assert got[0].shape == (T, B, 2 * P) and got[1][0].shape == (4, B, P)
        assert got[1][1].shape == (4, B, H)


# ---------------------------------------------------------------------------
# dtype / array-like policy
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn_tanh"])
def test_input_precision_is_cast(isa, mode):
    rng = make_rng("cast", mode)
    T, B, I, H = 4, 2, 3, 5
    layer = make_layer(mode, I, H, dtype=np.float32, seed=4)
    x32 = make_input(rng, T, B, I, np.float32)
    hx32 = make_hx(mode, rng, 1, B, H, 0, np.float32)
    hx64 = tuple(a.astype(np.float64) for a in hx32) if is_lstm(mode) else hx32.astype(np.float64)
    x16 = x32.astype(np.float16)
    # Each input, cast to float32, gives the float32 call's bits (float16
    # values are exact in float32, so a float16 input equals its float32 copy).
    for x_other, hx_other, x_want in [(x32.astype(np.float64), hx64, x32), (x16, hx32, x16),
                                      (x32, hx64, x32)]:
        want = split(mode, layer(x_want.astype(np.float32), hx32))
        res = split(mode, layer(x_other, hx_other))
        for a, b in zip(res, want):
            if b is None:
                continue
            assert a.dtype == np.float32
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("mode", ["lstm", "gru"])
def test_float32_input_to_float64_layer(isa, mode):
    rng = make_rng("cast64", mode)
    layer = make_layer(mode, 3, 4, dtype=np.float64)
    x = make_input(rng, 3, 2, 3, np.float32)
    y = split(mode, layer(x))[0]
    assert y.dtype == np.float64
    expected = reference.module_forward(ref_mode(mode), params64(layer), x.astype(np.float64))
    assert_close(y, expected[0], np.float64, "output")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("mode", ["lstmp", "gru", "rnn_relu"])
def test_array_likes(isa, mode, dtype):
    """Read-only arrays, non-contiguous views, transposed views and nested lists all work."""
    rng = make_rng("array-likes", mode, np.dtype(dtype).name)
    T, B, I, H = 5, 3, 4, 6
    P = proj_for(mode, H)
    layer = make_layer(mode, I, H, num_layers=2, bidirectional=True, dtype=dtype, seed=5)
    x = make_input(rng, T, B, I, dtype)
    hx = make_hx(mode, rng, 4, B, H, P, dtype)
    lengths = [5, 2, 3]
    base = split(mode, layer(x, hx, lengths))

    ro = x.copy()
    ro.flags.writeable = False
    hx_ro = tuple(a.copy() for a in hx) if is_lstm(mode) else hx.copy()
    for a in (hx_ro if is_lstm(mode) else (hx_ro,)):
        a.flags.writeable = False
    big = np.zeros((T, 2 * B, 2 * I), dtype)          # strided view holding x
    big[:, ::2, ::2] = x
    strided = big[:, ::2, ::2]
    assert not strided.flags.c_contiguous
    fortran = np.asfortranarray(x)
    hx_list = ([hx[0].tolist(), hx[1].tolist()] if is_lstm(mode) else hx.tolist())
    hx_list = tuple(hx_list) if is_lstm(mode) else hx_list
    variants = {
        "read-only": (ro, hx_ro, np.array(lengths)),
        "strided": (strided, hx, tuple(lengths)),
        "fortran": (fortran, hx, np.array(lengths, dtype=np.int32)),
        "lists": (x.tolist(), hx_list, lengths),
    }
    for vname, (xv, hv, lv) in variants.items():
        got = split(mode, layer(xv, hv, lv))
        for a, b in zip(got, base):
            if b is not None:
                assert a.dtype == np.dtype(dtype) and a.flags.c_contiguous, vname
                np.testing.assert_array_equal(a, b, err_msg=vname)


def test_batch_first_matches_time_major(isa):
    rng = make_rng("bf")
    T, B, I, H = 5, 4, 3, 6
    a = make_layer("lstm", I, H, num_layers=2, bidirectional=True, dtype=np.float64, seed=9)
    b = make_layer("lstm", I, H, num_layers=2, bidirectional=True, dtype=np.float64, seed=9,
                   batch_first=True)
    x = make_input(rng, T, B, I)
    ya, (ha, ca) = a(x, lengths=[5, 3, 1, 4])
    yb, (hb, cb) = b(np.ascontiguousarray(x.transpose(1, 0, 2)), lengths=[5, 3, 1, 4])
    assert yb.flags.c_contiguous and yb.shape == (B, T, 2 * H)
    np.testing.assert_allclose(yb, ya.transpose(1, 0, 2), **tol(np.float64))
    np.testing.assert_allclose(hb, ha, **tol(np.float64))   # h_n is never batch-first
    np.testing.assert_allclose(cb, ca, **tol(np.float64))


def test_unbatched_equals_batch_of_one(isa):
    rng = make_rng("unbatched-b1")
    T, I, H = 6, 4, 5
    layer = make_layer("gru", I, H, num_layers=2, bidirectional=True, dtype=np.float64)
    x = make_input(rng, T, 1, I, unbatched=True)
    h0 = make_hx("gru", rng, 4, 1, H, unbatched=True)
    y1, h1 = layer(x, h0)
    y3, h3 = layer(x[:, None, :], h0[:, None, :])
    assert y1.shape == (T, 2 * H) and h1.shape == (4, H)
    np.testing.assert_allclose(y1, y3[:, 0], **tol(np.float64))
    np.testing.assert_allclose(h1, h3[:, 0], **tol(np.float64))


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("mode", ["lstm", "gru"])
def test_unbatched_fast_path_equals_converting_path(isa, mode, batch_first):
    # Exact float32 unbatched input and states take the per-call fast path
    # (outputs shaped in C), also for batch_first layers, and so does float64
    # input (cast there); float64 states take the converting path. Same bits
    # and shapes.
    rng = make_rng("unbatched-fast-path", mode, batch_first)
    T, I, H = 4, 6, 20
    layer = make_layer(mode, I, H, num_layers=2, bidirectional=True, batch_first=batch_first,
                       dtype=np.float32, seed=4)
    x = make_input(rng, T, 1, I, np.float32, unbatched=True)
    hx = make_hx(mode, rng, 4, 1, H, 0, np.float32, unbatched=True)
    wide_hx = tuple(a.astype(np.float64) for a in hx) if mode == "lstm" else hx.astype(np.float64)
    spy = spy_fast_path(layer)
    fast = split(mode, layer(x, hx))
    assert spy.accepted == 1                # the path under test
    assert fast[0].shape == (T, 2 * H) and fast[1].shape == (4, H)
    for variant_x, variant_hx, takes_fast_path in ((x.astype(np.float64), hx, True),
                                                   (x, wide_hx, False)):
        accepted = spy.accepted
        for got, want in zip(split(mode, layer(variant_x, variant_hx)), fast):
            if want is not None:
                assert got.shape == want.shape and got.dtype == np.float32
                np.testing.assert_array_equal(got, want)
        assert spy.accepted - accepted == takes_fast_path
    batched = split(mode, layer(x[None] if batch_first else x[:, None], None))
    np.testing.assert_array_equal(split(mode, layer(x))[0], batched[0].reshape(T, 2 * H))


def test_output_is_fresh_array(isa):
    """Results must not alias each other or the input."""
    rng = make_rng("fresh")
    layer = make_layer("lstm", 3, 4, dtype=np.float64)
    x = make_input(rng, 3, 2, 3)
    y1, (h1, c1) = layer(x)
    y2, (h2, c2) = layer(x)
    assert not np.shares_memory(y1, y2) and not np.shares_memory(h1, h2)
    assert not np.shares_memory(y1, x)
    y1[...] = 0                                      # outputs are writable user arrays
    np.testing.assert_array_equal(layer(x)[0], y2)


def test_calling_runs_forward_of_subclasses_too():
    """module(...) is module.forward(...), keywords included, as in torch: a
    subclass's or a mixin's forward (any signature), an instance's own forward,
    and a class's own __call__ are what calls run."""
    rng = make_rng("call-forward")
    x = make_input(rng, 4, 2, 3)
    for layer in (lstm_fast.LSTM(3, 5, seed=0), lstm_fast.GRU(3, 5, seed=0)):
        np.testing.assert_array_equal(layer(x)[0], layer.forward(x)[0])
        hx = layer(x)[1]
        np.testing.assert_array_equal(layer(x, hx=hx)[0], layer.forward(x, hx)[0])
    cell = lstm_fast.GRUCell(3, 5, seed=0)
    np.testing.assert_array_equal(cell(x[0]), cell.forward(x[0]))

    class Doubled(lstm_fast.LSTM):
        def forward(self, x, scale=2.0):
            return scale * super().forward(x)[0]

    class DoubledAgain(Doubled):
        def forward(self, x):
            return 2.0 * super().forward(x, scale=1.0)

    class Negated:
        def forward(self, x):
            return -super().forward(x)[0]

    class NegatedLSTM(Negated, lstm_fast.LSTM):  # forward from a mixin
        pass

    class Called(lstm_fast.LSTM):  # a class's own __call__ stays
        def __call__(self, x):
            return "called"

        def forward(self, x):
            return "forward"

    plain = lstm_fast.LSTM(3, 5, seed=1)
    doubled, again = Doubled(3, 5, seed=1), DoubledAgain(3, 5, seed=1)
    np.testing.assert_array_equal(doubled(x), 2.0 * plain(x)[0])
    np.testing.assert_array_equal(doubled(x, scale=3.0), 3.0 * plain(x)[0])
    np.testing.assert_array_equal(again(x), 2.0 * plain(x)[0])
    np.testing.assert_array_equal(NegatedLSTM(3, 5, seed=1)(x), -plain(x)[0])
    assert Called(3, 5)(x) == "called"
    # an instance's own forward, as torch calls it (mock.patch.object does this)
    patched = lstm_fast.LSTM(3, 5, seed=1)
    patched.forward = lambda *args, **kwargs: ("patched", args, kwargs)
    assert patched(x, hx=None) == ("patched", (x, None, None), {})


@pytest.mark.parametrize("mode", ["lstm", "gru"])
def test_unusual_arrays_match_native_ones(isa, mode):
    # The C core reads only aligned, native-byte-order, contiguous arrays of
    # the exact dtype: anything else is cast first (by the fast path for
    # input, by the converting path for states) and gives the same numbers,
    # never is read raw.
    rng = make_rng("unusual-arrays", mode)
    layer = make_layer(mode, 6, 20, num_layers=2, dtype=np.float32, seed=2)
    x = make_input(rng, 5, 3, 6, np.float32)
    hx = make_hx(mode, rng, 2, 3, 20, 0, np.float32)
    expected = split(mode, layer(x, hx))

    swapped = x.astype(x.dtype.newbyteorder(">"))
    raw = np.zeros(x.nbytes + 1, np.uint8)
    misaligned = raw[1:].view(np.float32).reshape(x.shape)
    misaligned[...] = x
    as_list_hx = list(hx) if isinstance(hx, tuple) else hx
    for variant_x, variant_hx in ((swapped, hx), (misaligned, hx), (x, as_list_hx)):
        for got, want in zip(split(mode, layer(variant_x, variant_hx)), expected):
            np.testing.assert_array_equal(got, want)


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # np.matrix's
@pytest.mark.parametrize("mode", ["lstm", "gru"])
def test_ndarray_subclasses_behave_as_plain_arrays_on_every_call(mode):
    # np.matrix keeps two dimensions through reshapes: unbatched input and
    # states given as matrices must still work, on the first call (the
    # converting path) as on later ones (the fast path), in layers, cells and
    # streams alike.
    rng = make_rng("subclasses", mode)
    x = make_input(rng, 5, 1, 3, np.float32)[:, 0]              # unbatched (T, I)
    h = rng.standard_normal((1, 4)).astype(np.float32)
    hx = (h, h * 0.5) if is_lstm(mode) else h
    as_matrix = (lambda a: tuple(np.matrix(v) for v in a)) if is_lstm(mode) else np.matrix
    want = split(mode, make_layer(mode, 3, 4, seed=1)(x, hx))
    for calls in range(2):
        layer = make_layer(mode, 3, 4, seed=1)
        if calls:
            layer(x, hx)                                         # the engine exists now
        got = split(mode, layer(np.matrix(x), as_matrix(hx)))
        for a, b in zip(got, want):
            if b is not None:
                assert type(a) is np.ndarray
                np.testing.assert_array_equal(a, b)
        cell = make_cell(mode, 3, 4, seed=1)
        if calls:
            cell(x[:1], hx)
        cell_got, cell_want = cell(np.matrix(x[:1]), as_matrix(hx)), cell(x[:1], hx)
        for a, b in zip(cell_got if is_lstm(mode) else (cell_got,),
                        cell_want if is_lstm(mode) else (cell_want,)):
            assert type(a) is np.ndarray
            np.testing.assert_array_equal(a, b)
        stream, with_state = layer.stream(batch_size=1), layer.stream(hx=as_matrix(hx))
        from_zeros = layer(x)[0]
        for t in range(len(x)):
            np.testing.assert_array_equal(stream.step(np.matrix(x[t])), from_zeros[t:t + 1])
            np.testing.assert_array_equal(with_state.step(x[t]), want[0][t])

    # A masked array's mask would be ignored: refused when anything is
    # masked, on every path; one with nothing masked is plain data.
    layer = make_layer(mode, 3, 4, seed=1)
    masked = np.ma.masked_array(x, mask=np.zeros_like(x, dtype=bool))
    masked.mask[2, 1] = True
    stream = layer.stream()
    for calls in range(2):
        with pytest.raises(TypeError, match="input is a masked array with masked values"):
            layer(masked)
        with pytest.raises(TypeError, match="masked array with masked values"):
            stream.step(masked[2])
        layer(x)
        stream.step(x[0])
    np.testing.assert_array_equal(layer(np.ma.masked_array(x))[0], layer(x)[0])
    # numpy.asarray drops the masks of masked arrays inside lists.
    for sequence in (list(masked), tuple(masked), [[step] for step in masked]):
        with pytest.raises(TypeError, match="input holds masked arrays with masked values"):
            layer(sequence)
    np.testing.assert_array_equal(layer([np.ma.masked_array(step) for step in x])[0],
                                  layer(x)[0])
    with pytest.raises(TypeError, match="input holds masked arrays with masked values"):
        layer(deque(masked))
    with pytest.raises(TypeError, match="input holds masked arrays with masked values"):
        layer.stream(batch_size=1).step([masked[2]])
    # After a number in a row, numpy.asarray makes a masked value NaN (and
    # warns): refused too, whether it is numpy.ma.masked or a masked element.
    masked_late = x.tolist()
    for late in (np.ma.masked, np.ma.masked_array(1.0, mask=True)):
        masked_late[2][1] = late
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # numpy's "converting ... to nan"
            with pytest.raises(TypeError, match="input holds masked arrays with masked values"):
                layer(masked_late)
            with pytest.raises(TypeError, match="input holds masked arrays with masked values"):
                layer.stream(batch_size=1).step([masked_late[2]])
    # A masked int after a number makes numpy raise MaskError instead.
    ints = [[1, 2, 3]] * len(x)
    ints[2] = [3, np.ma.masked_array(5, mask=True), 1]
    with pytest.raises(TypeError, match="input holds masked arrays with masked values"):
        layer(ints)
    # A NaN of the caller's own is data: it propagates, as in torch.
    with_nan = x.tolist()
    with_nan[2][1] = float("nan")
    assert np.isnan(layer(with_nan)[0][2:]).all()
    masked_h = np.ma.masked_array(h, mask=np.zeros_like(h, dtype=bool))
    masked_h.mask[0, 1] = True
    layer(x, hx)                                           # states take the fast path now
    with pytest.raises(TypeError, match="masked values"):
        layer(x, (masked_h, h) if is_lstm(mode) else masked_h)
    with pytest.raises(TypeError, match="masked values"):
        layer.stream(hx=(masked_h, h) if is_lstm(mode) else masked_h)
    if is_lstm(mode):  # (a GRU's hx is one array: a list there is refused as a pair)
        with pytest.raises(TypeError, match="holds masked arrays with masked values"):
            layer(x, (list(masked_h), h))
    # A list holding itself: numpy's refusal, not an endless scan.
    endless = []
    endless.append(endless)
    with pytest.raises(ValueError, match="input could not be converted"):
        layer(endless)


def test_memory_mapped_input_takes_the_fast_path(tmp_path):
    # np.memmap is a subclass whose C fields are an ordinary array's: read
    # as it is, without a conversion per call or per step.
    rng = make_rng("memmap")
    x = make_input(rng, 6, 2, 3, np.float32)
    mapped = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float32,
                                       shape=x.shape)
    mapped[...] = x
    layer = make_layer("lstm", 3, 4, seed=3)
    want = layer(x)[0]
    spy = spy_fast_path(layer)
    np.testing.assert_array_equal(layer(mapped)[0], want)
    assert spy.accepted == 1
    stream = make_layer("lstm", 3, 4, seed=3).stream(batch_size=2)
    for t in range(len(x)):
        np.testing.assert_array_equal(stream.step(mapped[t]), want[t])


def _stepwise_equals_whole(layer, x, mode):
    whole = split(mode, layer(x))
    state, ys = None, []
    for t in range(len(x)):
        y, state = layer(x[t : t + 1], state)
        ys.append(y)
    stepwise = split(mode, (np.concatenate(ys), state))
    T, B = x.shape[:2]
    for a, b in zip(stepwise, whole):
        if b is not None:
            assert_calls_agree(layer, a, b, (1, B), (T, B))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("B", [1, 3, 17])
@pytest.mark.parametrize("mode", MODES)
def test_one_step_per_call_equals_one_call(isa, mode, B, dtype):
    # One step per call takes the engine's fused path (each step adds its own
    # input projection, walking the panels in an order that alternates between
    # calls); one call over the sequence takes the GEMM path. Same bits. H=37
    # spans several panels on every ISA, so the order really alternates.
    T, I, H = 6, 19, 37
    layer = make_layer(mode, I, H, num_layers=2, dtype=dtype, seed=3)
    x = make_input(make_rng("stepwise", mode, B, np.dtype(dtype).name), T, B, I, dtype)
    _stepwise_equals_whole(layer, x, mode)


@pytest.mark.parametrize("cls,variant", [
    (lstm_fast.LSTM, {"peephole": True, "clip": 1.5}),
    (lstm_fast.LSTM, {"coupled_input_forget": True}),
    (lstm_fast.GRU, {"reset_before_product": True}),
])
def test_one_step_per_call_equals_one_call_variants(isa, cls, variant):
    layer = cls(11, 37, num_layers=2, variant=variant)
    x = make_input(make_rng("stepwise-variant", str(variant)), 5, 3, 11, np.float32)
    _stepwise_equals_whole(layer, x, "lstm" if cls is lstm_fast.LSTM else "gru")


@pytest.mark.parametrize("mode,variant", [
    ("lstm", None), ("gru", None),
    ("lstm", {"peephole": True, "clip": 1.5}), ("gru", {"clip": 2.0}),
])
def test_rows_do_not_depend_on_the_batch(isa, mode, variant):
    # README: LSTM and GRU results are bitwise the same whatever else is
    # batched with a sequence (tile heights, a lone row's two-panel tiles,
    # and from B=32 the fused input projection, change nothing per row).
    # Plain RNNs and reset-before GRUs are exempt (kernel_body.h,
    # accumulate_short). The variants take the general cell update.
    rng = make_rng("batch-invariance", mode, str(variant))
    T, I, H = 5, 13, 37
    if variant is None:
        layer = make_layer(mode, I, H, dtype=np.float32, seed=8)
    else:
        cls = lstm_fast.LSTM if mode == "lstm" else lstm_fast.GRU
        layer = cls(I, H, variant=variant, seed=8)
    x = make_input(rng, T, 40, I, np.float32)
    alone = split(mode, layer(np.ascontiguousarray(x[:, 2:3])))
    results = {}
    for B in (7, 40):
        results[B] = batched = split(mode, layer(np.ascontiguousarray(x[:, :B])))
        for got, want in zip(batched, alone):
            if want is not None:
                assert_calls_agree(layer, got[:, 2:3], want, (T, B), (T, 1))
    for got, want in zip(results[7], results[40]):
        if want is not None:
            np.testing.assert_array_equal(got, want[:, :7])  # both on AMX, or neither


# ---------------------------------------------------------------------------
# all_weights, dropout
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["lstmp", "gru", "rnn_relu"])
def test_all_weights(mode):
    # torch's layout: one list per layer-direction (l0, l0_reverse, l1, ...),
    # each with that group's parameters in state_dict order; the arrays are
    # the layer's own (read-only), and follow assignments.
    I, H, L = 3, 7, 2
    layer = make_layer(mode, I, H, num_layers=L, bidirectional=True, seed=2)
    names = reference.param_names(ref_mode(mode), L, True, True, proj_for(mode, H))
    groups = [[n for n in names if n.endswith(sfx)]
              for sfx in ("_l0", "_l0_reverse", "_l1", "_l1_reverse")]
    assert [len(g) for g in groups] == [5 if mode == "lstmp" else 4] * 4
    weights = layer.all_weights
    assert [len(g) for g in weights] == [len(g) for g in groups]
    for group, arrays in zip(groups, weights):
        for name, array in zip(group, arrays):
            assert array is getattr(layer, name), name
            assert not array.flags.writeable, name
    new = np.full(layer.weight_hh_l1_reverse.shape, 0.5, np.float32)
    layer.weight_hh_l1_reverse = new
    np.testing.assert_array_equal(layer.all_weights[3][1], new)


def test_all_weights_match_torch():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    module = torch.nn.LSTM(3, 6, num_layers=2, bidirectional=True, proj_size=2, bias=False)
    layer = lstm_fast.LSTM.from_torch(module)
    theirs = module.all_weights
    assert [len(g) for g in layer.all_weights] == [len(g) for g in theirs]
    for ours_group, their_group in zip(layer.all_weights, theirs):
        for ours, their in zip(ours_group, their_group):
            np.testing.assert_array_equal(ours, their.detach().numpy())


@pytest.mark.parametrize("cls", ["LSTM", "GRU", "RNN"])
def test_dropout_with_one_layer_warns_as_torch(cls):
    # torch warns (UserWarning) for dropout > 0 with one layer; the warning
    # points at the caller's line. Dropout is inactive (eval mode) either way.
    kind = getattr(lstm_fast, cls)
    with pytest.warns(UserWarning, match="num_layers greater than 1") as record:
        layer = kind(3, 4, dropout=0.5, seed=1)
    assert len(record) == 1 and record[0].filename == __file__
    assert layer.dropout == 0.5
    x = make_input(make_rng("dropout", cls), 4, 2, 3, np.float32)
    np.testing.assert_array_equal(layer(x)[0], kind(3, 4, seed=1)(x)[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kind(3, 4, num_layers=2, dropout=0.5)
        kind(3, 4, dropout=0.0)
        kind(3, 4, dropout=0)
