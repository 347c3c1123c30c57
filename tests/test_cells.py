"""lstm_fast.LSTMCell / GRUCell / RNNCell against the float64 reference."""
import numpy as np
import pytest

import lstm_fast  # noqa: F401
import reference
from helpers import assert_close, make_cell, make_rng, params64, spy_fast_path

CELL_MODES = ["lstm", "gru", "rnn_tanh", "rnn_relu"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("mode", CELL_MODES)
@pytest.mark.parametrize("I,H,N,bias,batched,with_hx", [
    (4, 8, 3, True, True, True),
    (17, 33, 5, False, True, True),
    (1, 1, 1, True, True, False),
    (3, 5, 1, True, False, True),
    (16, 16, 9, True, False, False),
    (5, 3, 0, True, True, False),          # N = 0
])
def test_cell_matches_reference(isa, mode, dtype, I, H, N, bias, batched, with_hx):
    rng = make_rng("cell", mode, np.dtype(dtype).name, I, H, N, bias, batched, with_hx)
    cell = make_cell(mode, I, H, bias=bias, dtype=dtype, seed=3)
    shapes = reference.cell_param_shapes(mode, I, H, bias)
    cell.load_state_dict({k: rng.uniform(-0.7, 0.7, s).astype(dtype) for k, s in shapes.items()})
    lead = (N,) if batched else ()
    x = rng.standard_normal(lead + (I,)).astype(dtype)
    hx = None
    if with_hx:
        h = rng.uniform(-0.9, 0.9, lead + (H,)).astype(dtype)
        c = rng.uniform(-2, 2, lead + (H,)).astype(dtype)
        hx = (h, c) if mode == "lstm" else h
    expected = reference.cell_forward(mode, params64(cell), x, hx)
    got = cell(x, hx)
    if mode == "lstm":
        assert isinstance(got, tuple) and len(got) == 2
        assert_close(got[0], expected[0], dtype, "h'")
        assert_close(got[1], expected[1], dtype, "c'")
    else:
        assert_close(got, expected, dtype, "h'")


@pytest.mark.parametrize("mode", CELL_MODES)
def test_cell_step_equals_one_step_layer(isa, mode):
    """A cell loaded with a 1-layer network's weights reproduces one step of it."""
    from helpers import make_layer, split
    rng = make_rng("cell-vs-layer", mode)
    I, H, B = 5, 7, 3
    layer = make_layer(mode, I, H, dtype=np.float64, seed=11)
    cell = make_cell(mode, I, H, dtype=np.float64, seed=12)
    cell.load_state_dict({k[:-3]: v for k, v in layer.state_dict().items()})   # strip "_l0"
    x = rng.standard_normal((1, B, I))
    y, h, c = split(mode, layer(x))
    out = cell(x[0])
    h_cell = out[0] if mode == "lstm" else out
    np.testing.assert_allclose(h_cell, h[0], rtol=1e-12, atol=1e-13)
    if mode == "lstm":
        np.testing.assert_allclose(out[1], c[0], rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("mode", CELL_MODES)
def test_cell_params_and_init(mode):
    I, H = 6, 9
    cell = make_cell(mode, I, H, seed=0)
    G = reference.GATES[mode]
    sd = cell.state_dict()
    assert list(sd) == ["weight_ih", "weight_hh", "bias_ih", "bias_hh"]
    assert sd["weight_ih"].shape == (G * H, I) and sd["weight_hh"].shape == (G * H, H)
    k = 1 / np.sqrt(H)
    for v in sd.values():
        assert v.dtype == np.float32 and np.all(np.abs(v) <= k)
    assert list(make_cell(mode, I, H, bias=False).state_dict()) == ["weight_ih", "weight_hh"]
    ro = cell.weight_ih
    with pytest.raises(ValueError):
        ro[0, 0] = 1.0


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
@pytest.mark.parametrize("mode", CELL_MODES)
def test_fast_path_equals_converting_path(isa, mode, batched):
    # Exact float32 arrays take the per-call fast path (no conversion, outputs
    # shaped in C), and so does float64 or strided input, cast there; float64
    # states take the converting path. Same bits, same shapes, and fresh
    # outputs that alias no argument.
    rng = make_rng("cell-fast-path", mode, batched)
    I, H = 7, 37
    cell = make_cell(mode, I, H, dtype=np.float32, seed=5)
    lead = (3,) if batched else ()
    x = rng.standard_normal(lead + (I,)).astype(np.float32)
    h = rng.uniform(-0.9, 0.9, lead + (H,)).astype(np.float32)
    c = rng.uniform(-2, 2, lead + (H,)).astype(np.float32)
    hx = (h, c) if mode == "lstm" else h

    def outputs(result):
        return result if mode == "lstm" else (result,)

    spy = spy_fast_path(cell)
    fast = outputs(cell(x, hx))
    assert spy.accepted == 1                # the path under test
    wide_hx = tuple(a.astype(np.float64) for a in hx) if mode == "lstm" else h.astype(np.float64)
    strided = np.repeat(x, 2, axis=-1)[..., ::2]
    assert not strided.flags.c_contiguous
    for variant_x, variant_hx, takes_fast_path in ((x.astype(np.float64), hx, True),
                                                   (x, wide_hx, False), (strided, hx, True)):
        accepted = spy.accepted
        for got, want in zip(outputs(cell(variant_x, variant_hx)), fast):
            assert got.dtype == np.float32 and got.shape == lead + (H,)
            np.testing.assert_array_equal(got, want)
        assert spy.accepted - accepted == takes_fast_path
    for out in fast:
        assert out.shape == lead + (H,) and out.dtype == np.float32
        for argument in (x, h, c):
            assert not np.shares_memory(out, argument)
    h_next = fast[0]
    again = outputs(cell(x, hx))
    h_next[...] = 0                         # outputs are the caller's, not scratch
    np.testing.assert_array_equal(outputs(cell(x, hx))[0], again[0])
