"""Interoperability and numerical parity with torch.nn (skipped without torch)."""
import numpy as np
import pytest

import lstm_fast
from helpers import (MODES, is_lstm, layer_class, make_cell, make_hx, make_input, make_layer, make_rng,
                     seed_of,
                     proj_for, split, tol, torch_cell, torch_forward, torch_module)

torch = pytest.importorskip("torch")

# (I, H, num_layers, bidirectional, bias, batch_first)
MODULE_CONFIGS = [
    (4, 6, 1, False, True, False),
    (3, 9, 2, True, False, True),
    (17, 5, 3, True, True, False),
]


def _torch_dtype(dtype):
    return torch.float64 if np.dtype(dtype) == np.float64 else torch.float32


def _assert_same_state_dict(ours, theirs, dtype):
    assert list(ours) == list(theirs)
    for k in theirs:
        t = theirs[k].detach().cpu().numpy()
        o = np.asarray(ours[k])
        assert o.dtype == np.dtype(dtype), k
        assert o.shape == t.shape, k
        np.testing.assert_array_equal(o, t, err_msg=k)   # bit for bit


def _assert_outputs_close(mode, ours, theirs, dtype):
    for a, b, what in zip(split(mode, ours), split(mode, theirs), ("output", "h_n", "c_n")):
        if b is None:
            assert a is None
            continue
        assert a.shape == b.shape, what
        assert a.dtype == np.dtype(dtype), what
        np.testing.assert_allclose(a, b, err_msg=what, **tol(dtype))


def _torch_version_of(mode, cfg, dtype):
    I, H, L, bidir, bias, bf = cfg
    torch.manual_seed(seed_of(mode, cfg))
    return torch_module(mode, I, H, num_layers=L, bias=bias, batch_first=bf, bidirectional=bidir,
                        dtype=dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("cfg", MODULE_CONFIGS, ids=["small", "bidir-nobias-bf", "deep-odd"])
@pytest.mark.parametrize("mode", MODES)
def test_from_torch(isa, mode, cfg, dtype):
    I, H, L, bidir, bias, bf = cfg
    module = _torch_version_of(mode, cfg, dtype)          # parameters require grad here
    layer = layer_class(mode).from_torch(module)
    assert layer.isa == isa
    for attr in ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "bidirectional"):
        assert getattr(layer, attr) == getattr(module, attr), attr
    if is_lstm(mode):
        assert layer.proj_size == module.proj_size
    if mode.startswith("rnn_"):
        assert layer.nonlinearity == module.nonlinearity
    _assert_same_state_dict(layer.state_dict(), module.state_dict(), dtype)

    rng = make_rng("from_torch", mode, cfg, np.dtype(dtype).name)
    T, B = 6, 3
    P = proj_for(mode, H)
    x = make_input(rng, T, B, I, dtype, batch_first=bf)
    hx = make_hx(mode, rng, L * (2 if bidir else 1), B, H, P, dtype)
    _assert_outputs_close(mode, layer(x, hx), torch_forward(module, mode, x, hx, batch_first=bf), dtype)
    _assert_outputs_close(mode, layer(x), torch_forward(module, mode, x, batch_first=bf), dtype)


@pytest.mark.parametrize("mode", MODES)
def test_load_torch_state_dict(isa, mode):
    """load_state_dict takes torch tensors (via numpy.asarray); the copy is bit for bit."""
    I, H, L = 5, 7, 2
    torch.manual_seed(1)
    module = torch_module(mode, I, H, num_layers=L, bidirectional=True, dtype=np.float32)
    layer = make_layer(mode, I, H, num_layers=L, bidirectional=True, dtype=np.float32, seed=0)
    layer.load_state_dict(module.state_dict())
    _assert_same_state_dict(layer.state_dict(), module.state_dict(), np.float32)
    for k, v in module.state_dict().items():                  # attributes too
        np.testing.assert_array_equal(getattr(layer, k), v.numpy())
    rng = make_rng("load-torch", mode)
    x = make_input(rng, 4, 3, I, np.float32)
    _assert_outputs_close(mode, layer(x), torch_forward(module, mode, x), np.float32)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("mode", MODES)
def test_to_torch_round_trip(isa, mode, dtype):
    I, H, L = 4, 6, 2
    layer = make_layer(mode, I, H, num_layers=L, bidirectional=True, batch_first=True, dtype=dtype,
                       seed=21)
    module = layer.to_torch()
    expected_cls = {"lstm": torch.nn.LSTM, "lstmp": torch.nn.LSTM, "gru": torch.nn.GRU,
                    "rnn_tanh": torch.nn.RNN, "rnn_relu": torch.nn.RNN}[mode]
    assert type(module) is expected_cls
    assert module.batch_first and module.bidirectional and module.num_layers == L
    assert module.hidden_size == H and module.input_size == I
    if is_lstm(mode):
        assert module.proj_size == proj_for(mode, H)
    if mode.startswith("rnn_"):
        assert module.nonlinearity == mode[4:]
    assert all(p.dtype == _torch_dtype(dtype) for p in module.parameters())
    _assert_same_state_dict(layer.state_dict(), module.state_dict(), dtype)
    # and back again
    back = layer_class(mode).from_torch(module)
    for k, v in layer.state_dict().items():
        np.testing.assert_array_equal(back.state_dict()[k], v)
    rng = make_rng("to_torch", mode, np.dtype(dtype).name)
    x = make_input(rng, 5, 3, I, dtype, batch_first=True)
    module.eval()
    _assert_outputs_close(mode, layer(x), torch_forward(module, mode, x, batch_first=True), dtype)
    _assert_outputs_close(mode, back(x), layer(x), dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bidir,bf,with_hx", [(False, False, True), (True, True, False), (True, False, True)])
def test_lengths_match_packed_sequence(isa, mode, dtype, bidir, bf, with_hx):
    """Our lengths path == pack_padded_sequence(enforce_sorted=False) + pad_packed_sequence."""
    I, H, L, T = 3, 5, 2, 7
    lengths = [4, 7, 1, 6, 2, 7]                # unsorted, includes 1 and T (torch forbids 0)
    B = len(lengths)
    torch.manual_seed(3)
    module = torch_module(mode, I, H, num_layers=L, bidirectional=bidir, batch_first=bf, dtype=dtype)
    layer = layer_class(mode).from_torch(module)
    rng = make_rng("packed", mode, np.dtype(dtype).name, bidir, bf, with_hx)
    x = make_input(rng, T, B, I, dtype, batch_first=bf)
    hx = make_hx(mode, rng, L * (2 if bidir else 1), B, H, proj_for(mode, H), dtype) if with_hx else None
    expected = torch_forward(module, mode, x, hx, lengths, batch_first=bf)
    _assert_outputs_close(mode, layer(x, hx, lengths=lengths), expected, dtype)
    # lengths given as a torch tensor work too
    _assert_outputs_close(mode, layer(x, hx, lengths=torch.tensor(lengths)), expected, dtype)


@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn_tanh", "rnn_relu"])
@pytest.mark.parametrize("batched", [True, False])
def test_cells_match_torch(isa, mode, batched):
    I, H, N = 6, 10, 4
    torch.manual_seed(4)
    module = torch_cell(mode, I, H, dtype=np.float32)
    cell = make_cell(mode, I, H, dtype=np.float32)
    cell.load_state_dict(module.state_dict())
    for k, v in module.state_dict().items():
        np.testing.assert_array_equal(cell.state_dict()[k], v.numpy())
    rng = make_rng("cell-torch", mode, batched)
    lead = (N,) if batched else ()
    x = rng.standard_normal(lead + (I,)).astype(np.float32)
    h = rng.uniform(-1, 1, lead + (H,)).astype(np.float32)
    c = rng.uniform(-1, 1, lead + (H,)).astype(np.float32)
    with torch.no_grad():
        if mode == "lstm":
            th, tc = module(torch.from_numpy(x), (torch.from_numpy(h), torch.from_numpy(c)))
            oh, oc = cell(x, (h, c))
            np.testing.assert_allclose(oh, th.numpy(), **tol(np.float32))
            np.testing.assert_allclose(oc, tc.numpy(), **tol(np.float32))
        else:
            th = module(torch.from_numpy(x), torch.from_numpy(h))
            np.testing.assert_allclose(cell(x, h), th.numpy(), **tol(np.float32))


@pytest.mark.parametrize("mode", ["lstm", "gru"])
def test_torch_tensors_as_inputs(isa, mode):
    """Tensors are accepted wherever an array is (numpy.asarray semantics)."""
    torch.manual_seed(5)
    module = torch_module(mode, 3, 4, num_layers=1, dtype=np.float32)
    layer = layer_class(mode).from_torch(module)
    x = torch.randn(5, 2, 3)
    h = torch.randn(1, 2, 4)
    hx = (h, torch.randn(1, 2, 4)) if mode == "lstm" else h
    with torch.no_grad():
        expected = module(x, hx)
    got = layer(x, hx)
    ours = split(mode, got)
    theirs = (expected[0].numpy(),) + ((expected[1][0].numpy(), expected[1][1].numpy())
                                       if mode == "lstm" else (expected[1].numpy(), None))
    for a, b in zip(ours, theirs):
        if b is not None:
            assert isinstance(a, np.ndarray)
            np.testing.assert_allclose(a, b, **tol(np.float32))


def test_from_torch_does_not_alias(isa):
    """Later changes to the torch module must not leak into the layer."""
    torch.manual_seed(6)
    module = torch_module("lstm", 3, 4, dtype=np.float32)
    layer = lstm_fast.LSTM.from_torch(module)
    before = layer.state_dict()
    with torch.no_grad():
        for p in module.parameters():
            p.add_(1.0)
    for k, v in layer.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
