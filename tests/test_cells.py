"""lstm_fast.LSTMCell / GRUCell / RNNCell against the float64 reference."""
import numpy as np
import pytest

import lstm_fast
import reference
from helpers import (assert_close, cell_class, make_cell, make_rng, params64, seed_of,
                     spy_fast_path, torch_cell)

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
    (3, 3, 2, True, True, True),
    (33, 17, 1, True, False, True),        # one row over two SIMD blocks of float32 AVX-512
    (8, 37, 33, True, True, True),         # larger batches: many register tiles of
    (19, 16, 40, False, True, True),       # rows, and a tail of rows after them
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


CELL_TORCH_CASES = [("lstm", True, np.float32), ("gru", False, np.float32),
                    ("rnn_relu", True, np.float64), ("rnn_tanh", False, np.float64)]


@pytest.mark.parametrize("mode,bias,dtype", CELL_TORCH_CASES)
def test_cell_from_torch_and_to_torch(isa, mode, bias, dtype):
    torch = pytest.importorskip("torch")
    torch.manual_seed(seed_of("cell-torch", mode))
    I, H, N = 5, 7, 4
    module = torch_cell(mode, I, H, bias=bias, dtype=dtype)
    cell = cell_class(mode).from_torch(module)
    assert type(cell) is cell_class(mode) and cell.isa == isa
    assert (cell.input_size, cell.hidden_size, cell.bias) == (I, H, bias)
    assert cell.dtype == np.dtype(dtype)
    if mode.startswith("rnn_"):
        assert cell.nonlinearity == mode[4:]
    theirs = module.state_dict()
    assert list(cell.state_dict()) == list(theirs)
    for name, value in theirs.items():
        np.testing.assert_array_equal(cell.state_dict()[name], value.numpy(), err_msg=name)

    back = cell.to_torch()
    assert type(back) is type(module)
    assert (back.input_size, back.hidden_size, back.bias) == (I, H, bias)
    if mode.startswith("rnn_"):
        assert back.nonlinearity == mode[4:]
    for name, value in back.state_dict().items():
        assert value.dtype == theirs[name].dtype, name
        np.testing.assert_array_equal(value.numpy(), theirs[name].numpy(), err_msg=name)

    rng = make_rng("cell-torch-data", mode)
    x = rng.standard_normal((N, I)).astype(dtype)
    h = rng.uniform(-0.9, 0.9, (N, H)).astype(dtype)
    c = rng.uniform(-2, 2, (N, H)).astype(dtype)
    hx = (h, c) if mode == "lstm" else h
    thx = tuple(map(torch.from_numpy, hx)) if mode == "lstm" else torch.from_numpy(hx)
    with torch.no_grad():
        expected = module(torch.from_numpy(x), thx)
        again = back(torch.from_numpy(x), thx)
    expected = [t.numpy() for t in expected] if mode == "lstm" else [expected.numpy()]
    again = [t.numpy() for t in again] if mode == "lstm" else [again.numpy()]
    got = cell(x, hx)
    got = list(got) if mode == "lstm" else [got]
    for g, e, a in zip(got, expected, again, strict=True):
        assert_close(g, e, dtype, "cell vs torch")
        np.testing.assert_array_equal(a, e)                 # to_torch: the same module


@pytest.mark.parametrize("cls,other,error,match", [
    ("LSTMCell", "GRUCell", ValueError, "module must be a torch.nn.LSTMCell, got a GRUCell"),
    ("GRUCell", "RNNCell", ValueError, "module must be a torch.nn.GRUCell, got a RNNCell"),
    ("RNNCell", "LSTMCell", ValueError, "module must be a torch.nn.RNNCell, got a LSTMCell"),
    ("LSTMCell", "LSTM", ValueError, "module must be a torch.nn.LSTMCell, got a LSTM"),
    ("LSTM", "LSTMCell", ValueError, "module must be a torch.nn.LSTM, got a LSTMCell"),
    ("RNN", "GRU", ValueError, "module must be a torch.nn.RNN, got a GRU"),
])
def test_cell_from_torch_refuses_another_kind(cls, other, error, match):
    torch = pytest.importorskip("torch")
    with pytest.raises(error, match=match):
        getattr(lstm_fast, cls).from_torch(getattr(torch.nn, other)(3, 4))
