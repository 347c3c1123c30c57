"""Validate tests/reference.py itself against torch.nn (float64). Needs no lstm_fast."""
import numpy as np
import pytest

import reference
from helpers import (MODES, is_lstm, load_into_torch, make_hx, make_input, make_rng, proj_for,
                     ref_mode, split, torch_cell, torch_forward, torch_module)

torch = pytest.importorskip("torch")

# Reference vs torch, both float64: agreement is at the rounding level.
RTOL = ATOL = 1e-12

# (T, B, I, H, num_layers, bidirectional, bias, batch_first, with_hx, lengths)
CONFIGS = [
    (5, 3, 4, 6, 1, False, True, False, False, None),
    (4, 2, 3, 5, 3, True, False, False, True, None),
    (6, 4, 5, 7, 2, True, True, True, True, None),
    (7, 5, 3, 4, 2, True, True, False, True, [3, 7, 1, 5, 7]),       # unsorted lengths
    (6, 4, 2, 9, 1, False, True, True, False, [6, 2, 4, 1]),          # batch_first lengths
    (1, 1, 1, 2, 2, True, True, False, True, None),                   # T=1, B=1, I=1
]


def _compare(mode, got, expected):
    gy, gh, gc = split(mode, got)
    ey, eh, ec = split(mode, expected)
    assert gy.shape == ey.shape and gh.shape == eh.shape
    err = max(np.max(np.abs(gy - ey), initial=0), np.max(np.abs(gh - eh), initial=0))
    np.testing.assert_allclose(gy, ey, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(gh, eh, rtol=RTOL, atol=ATOL)
    if is_lstm(mode):
        assert gc.shape == ec.shape
        np.testing.assert_allclose(gc, ec, rtol=RTOL, atol=ATOL)
        err = max(err, np.max(np.abs(gc - ec), initial=0))
    return err


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("cfg", CONFIGS, ids=[f"cfg{i}" for i in range(len(CONFIGS))])
def test_network_matches_torch(mode, cfg):
    T, B, I, H, L, bidir, bias, batch_first, with_hx, lengths = cfg
    P = proj_for(mode, H)
    rng = make_rng("ref-vs-torch", mode, cfg)
    params = reference.random_params(ref_mode(mode), I, H, L, bidir, bias, P, rng=rng, scale=0.6)
    module = load_into_torch(torch_module(mode, I, H, num_layers=L, bias=bias, batch_first=batch_first,
                                          bidirectional=bidir, proj_size=P), params)
    x = make_input(rng, T, B, I, batch_first=batch_first)
    D = 2 if bidir else 1
    hx = make_hx(mode, rng, L * D, B, H, P) if with_hx else None
    expected = torch_forward(module, mode, x, hx, lengths, batch_first)
    got = reference.module_forward(ref_mode(mode), params, x, hx, lengths, batch_first)
    err = _compare(mode, got, expected)
    print(f"{mode} {cfg}: max abs diff vs torch {err:.3g}")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("with_hx", [False, True])
def test_unbatched_matches_torch(mode, with_hx):
    T, I, H, L = 5, 3, 6, 2
    P = proj_for(mode, H)
    rng = make_rng("ref-unbatched", mode, with_hx)
    params = reference.random_params(ref_mode(mode), I, H, L, True, True, P, rng=rng, scale=0.6)
    module = load_into_torch(torch_module(mode, I, H, num_layers=L, bidirectional=True, proj_size=P),
                             params)
    x = make_input(rng, T, 1, I, unbatched=True)
    hx = make_hx(mode, rng, 2 * L, 1, H, P, unbatched=True) if with_hx else None
    expected = torch_forward(module, mode, x, hx)
    got = reference.module_forward(ref_mode(mode), params, x, hx)
    _compare(mode, got, expected)


def test_zero_length_semantics():
    """torch cannot pack a length-0 sequence; check the reference's definition directly:
    a length-0 sequence has zero outputs and h_n = h_0, c_n = c_0, and does not
    disturb its neighbours (which must equal running them alone)."""
    rng = make_rng("zero-length")
    T, B, I, H, L = 4, 3, 2, 5, 2
    params = reference.random_params("lstm", I, H, L, True, True, 0, rng=rng, scale=0.6)
    x = make_input(rng, T, B, I)
    h0, c0 = make_hx("lstm", rng, 2 * L, B, H)
    y, h, c = reference.rnn_forward("lstm", params, x, h0, c0, lengths=[4, 0, 2])
    assert np.all(y[:, 1] == 0) and np.all(y[2:, 2] == 0)
    np.testing.assert_array_equal(h[:, 1], h0[:, 1])
    np.testing.assert_array_equal(c[:, 1], c0[:, 1])
    # batch element 2 (length 2) equals running its first 2 steps alone
    y2, h2, c2 = reference.rnn_forward("lstm", params, x[:2, 2:3], h0[:, 2:3], c0[:, 2:3])
    np.testing.assert_allclose(y[:2, 2:3], y2, rtol=0, atol=1e-15)
    np.testing.assert_allclose(h[:, 2:3], h2, rtol=0, atol=1e-15)


@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn_tanh", "rnn_relu"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batched", [True, False])
def test_cells_match_torch(mode, bias, batched):
    I, H, N = 3, 5, 4
    rng = make_rng("ref-cell", mode, bias, batched)
    module = torch_cell(mode, I, H, bias=bias)
    shapes = reference.cell_param_shapes(mode, I, H, bias)
    assert {k: tuple(v.shape) for k, v in module.state_dict().items()} == shapes
    params = {k: rng.uniform(-0.6, 0.6, s) for k, s in shapes.items()}
    load_into_torch(module, params)
    x = rng.standard_normal((N, I) if batched else (I,))
    lead = (N,) if batched else ()
    h = rng.uniform(-1, 1, lead + (H,))
    c = rng.uniform(-2, 2, lead + (H,))
    hx = (h, c) if mode == "lstm" else h
    with torch.no_grad():
        thx = (torch.from_numpy(h), torch.from_numpy(c)) if mode == "lstm" else torch.from_numpy(h)
        out = module(torch.from_numpy(x), thx)
    got = reference.cell_forward(mode, params, x, hx)
    if mode == "lstm":
        np.testing.assert_allclose(got[0], out[0].numpy(), rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(got[1], out[1].numpy(), rtol=RTOL, atol=ATOL)
    else:
        np.testing.assert_allclose(got, out.numpy(), rtol=RTOL, atol=ATOL)
    # hx=None means zeros
    with torch.no_grad():
        out0 = module(torch.from_numpy(x))
    got0 = reference.cell_forward(mode, params, x)
    first = out0[0] if mode == "lstm" else out0
    np.testing.assert_allclose(got0[0] if mode == "lstm" else got0, first.numpy(), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("layers,bidir,bias", [(1, False, True), (3, True, False), (2, True, True)])
def test_param_names_and_shapes_match_torch(mode, layers, bidir, bias):
    I, H = 7, 6
    P = proj_for(mode, H)
    module = torch_module(mode, I, H, num_layers=layers, bias=bias, bidirectional=bidir, proj_size=P)
    sd = module.state_dict()
    assert list(sd) == reference.param_names(ref_mode(mode), layers, bidir, bias, P)
    shapes = reference.param_shapes(ref_mode(mode), I, H, layers, bidir, bias, P)
    assert list(shapes) == list(sd)
    assert shapes == {k: tuple(v.shape) for k, v in sd.items()}


def test_reference_sigmoid_is_stable():
    v = np.array([-800.0, -40.0, -1e-300, 0.0, 1e-300, 40.0, 800.0])
    s = reference.sigmoid(v)
    assert np.all(np.isfinite(s))
    assert s[0] == 0.0 and s[-1] == 1.0 and s[3] == 0.5
    np.testing.assert_allclose(reference.sigmoid(np.linspace(-5, 5, 11)),
                               torch.sigmoid(torch.linspace(-5, 5, 11, dtype=torch.float64)).numpy(),
                               rtol=1e-15, atol=0)
