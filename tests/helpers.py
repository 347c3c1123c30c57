"""Shared test helpers (plain functions; fixtures live in conftest.py).

Nothing here imports lstm_fast or torch at module import, so the reference
tests run without the compiled package and everything runs without torch.
"""
import zlib

import numpy as np


# "lstmp" is an LSTM with a projection; the reference calls it "lstm".
MODES = ("lstm", "lstmp", "gru", "rnn_tanh", "rnn_relu")


def ref_mode(mode):
    return "lstm" if mode in ("lstm", "lstmp") else mode


def is_lstm(mode):
    return ref_mode(mode) == "lstm"


def proj_for(mode, hidden_size):
    """Projection size used for mode 'lstmp' (0 for every other mode)."""
    if mode != "lstmp":
        return 0
    return max(1, hidden_size // 3) if hidden_size > 1 else 0


def seed_of(*key):
    """A deterministic 32-bit seed from any repr-able key (unlike hash(), stable across runs)."""
    return zlib.crc32(repr(key).encode())


def make_rng(*key):
    """A numpy Generator seeded deterministically from any repr-able key."""
    return np.random.default_rng(seed_of(*key))


def nonzero_uniform(rng, shape, lo, hi):
    """Values with |v| in [lo, hi] and random sign: never zero, all distinct (a.s.)."""
    return rng.uniform(lo, hi, size=shape) * rng.choice([-1.0, 1.0], size=shape)


def make_input(rng, T, B, I, dtype=np.float64, batch_first=False, unbatched=False, scale=1.0):
    if unbatched:
        shape = (T, I)
    elif batch_first:
        shape = (B, T, I)
    else:
        shape = (T, B, I)
    return (rng.standard_normal(shape) * scale).astype(dtype)


def make_hx(mode, rng, num_states, B, hidden_size, proj_size=0, dtype=np.float64, unbatched=False):
    """Distinct non-zero initial states in the public-API form.

    LSTM: (h_0, c_0) with h_0 (num_states, B, R), c_0 (num_states, B, H); others h_0.
    unbatched drops the B axis.
    """
    R = proj_size if proj_size else hidden_size
    lead = (num_states,) if unbatched else (num_states, B)
    h0 = nonzero_uniform(rng, lead + (R,), 0.1, 0.9).astype(dtype)
    if not is_lstm(mode):
        return h0
    c0 = nonzero_uniform(rng, lead + (hidden_size,), 0.2, 2.0).astype(dtype)
    return (h0, c0)


def tol(dtype):
    if np.dtype(dtype) == np.float64:
        return dict(rtol=1e-11, atol=1e-12)
    return dict(rtol=1e-4, atol=1e-5)


def split(mode, result):
    """(output, (h_n, c_n)) or (output, h_n) -> (output, h_n, c_n-or-None)."""
    y, states = result
    if is_lstm(mode):
        assert isinstance(states, tuple) and len(states) == 2, type(states)
        return y, states[0], states[1]
    assert not isinstance(states, tuple), "GRU/RNN must return h_n alone"
    return y, states, None


def layer_class(mode):
    import lstm_fast
    return {"lstm": lstm_fast.LSTM, "lstmp": lstm_fast.LSTM, "gru": lstm_fast.GRU,
            "rnn_tanh": lstm_fast.RNN, "rnn_relu": lstm_fast.RNN}[mode]


def make_layer(mode, input_size, hidden_size, *, num_layers=1, bias=True, batch_first=False,
               bidirectional=False, proj_size=None, dtype=np.float32, seed=0):
    """Build an lstm_fast layer. proj_size None means proj_for(mode, hidden_size)."""
    kw = dict(num_layers=num_layers, bias=bias, batch_first=batch_first,
              bidirectional=bidirectional, dtype=dtype, seed=seed)
    if is_lstm(mode):
        kw["proj_size"] = proj_for(mode, hidden_size) if proj_size is None else proj_size
    elif mode.startswith("rnn_"):
        kw["nonlinearity"] = mode[4:]
    return layer_class(mode)(input_size, hidden_size, **kw)


def cell_class(mode):
    import lstm_fast
    return {"lstm": lstm_fast.LSTMCell, "gru": lstm_fast.GRUCell,
            "rnn_tanh": lstm_fast.RNNCell, "rnn_relu": lstm_fast.RNNCell}[mode]


def make_cell(mode, input_size, hidden_size, *, bias=True, dtype=np.float32, seed=0):
    kw = dict(bias=bias, dtype=dtype, seed=seed)
    if mode.startswith("rnn_"):
        kw["nonlinearity"] = mode[4:]
    return cell_class(mode)(input_size, hidden_size, **kw)


def params64(obj):
    """A layer's / module's parameters as a float64 dict (via state_dict)."""
    return {k: np.array(v, dtype=np.float64) for k, v in obj.state_dict().items()}


def assert_close(got, expected, dtype, what=""):
    """Shape, dtype and C-contiguity of `got`, values against a float64 expectation."""
    assert isinstance(got, np.ndarray), f"{what}: not an ndarray but {type(got)}"
    assert got.shape == np.shape(expected), f"{what}: shape {got.shape} != {np.shape(expected)}"
    assert got.dtype == np.dtype(dtype), f"{what}: dtype {got.dtype} != {np.dtype(dtype)}"
    assert got.flags.c_contiguous, f"{what}: not C-contiguous"
    np.testing.assert_allclose(got, expected, err_msg=what, **tol(dtype))


def assert_result(mode, got, expected, dtype):
    """Compare a whole layer result (public-API structure) with the reference's."""
    y, h, c = split(mode, got)
    ey, eh, ec = split(mode, expected)
    assert_close(y, ey, dtype, "output")
    assert_close(h, eh, dtype, "h_n")
    if is_lstm(mode):
        assert_close(c, ec, dtype, "c_n")


# ----------------------------------------------------------------------------
# torch helpers (torch imported lazily; callers importorskip it first)
# ----------------------------------------------------------------------------
def torch_module(mode, input_size, hidden_size, *, num_layers=1, bias=True, batch_first=False,
                 bidirectional=False, proj_size=None, dtype=np.float64):
    import torch
    kw = dict(num_layers=num_layers, bias=bias, batch_first=batch_first, bidirectional=bidirectional)
    if is_lstm(mode):
        kw["proj_size"] = proj_for(mode, hidden_size) if proj_size is None else proj_size
        m = torch.nn.LSTM(input_size, hidden_size, **kw)
    elif mode == "gru":
        m = torch.nn.GRU(input_size, hidden_size, **kw)
    else:
        m = torch.nn.RNN(input_size, hidden_size, nonlinearity=mode[4:], **kw)
    m = m.double() if np.dtype(dtype) == np.float64 else m.float()
    return m.eval()


def torch_cell(mode, input_size, hidden_size, *, bias=True, dtype=np.float64):
    import torch
    if mode == "lstm":
        m = torch.nn.LSTMCell(input_size, hidden_size, bias=bias)
    elif mode == "gru":
        m = torch.nn.GRUCell(input_size, hidden_size, bias=bias)
    else:
        m = torch.nn.RNNCell(input_size, hidden_size, bias=bias, nonlinearity=mode[4:])
    return m.double() if np.dtype(dtype) == np.float64 else m.float()


def load_into_torch(module, params):
    import torch
    sd = {k: torch.from_numpy(np.array(v)).to(next(module.parameters()).dtype) for k, v in params.items()}
    module.load_state_dict(sd, strict=True)
    return module


def torch_forward(module, mode, input, hx=None, lengths=None, batch_first=False):
    """Run a torch RNN module; with lengths, through pack_padded_sequence(enforce_sorted=False)
    and pad_packed_sequence(total_length=T). Returns the public-API structure as numpy."""
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    def t(a):
        return torch.from_numpy(np.ascontiguousarray(a))

    thx = None
    if hx is not None:
        thx = (t(hx[0]), t(hx[1])) if is_lstm(mode) else t(hx)
    x = t(input)
    with torch.no_grad():
        if lengths is None:
            out, hn = module(x, thx)
        else:
            T = x.shape[1] if batch_first else x.shape[0]
            packed = pack_padded_sequence(x, torch.as_tensor(np.asarray(lengths), dtype=torch.int64),
                                          batch_first=batch_first, enforce_sorted=False)
            out, hn = module(packed, thx)
            out, _ = pad_packed_sequence(out, batch_first=batch_first, total_length=T)
    if is_lstm(mode):
        return out.numpy(), (hn[0].numpy(), hn[1].numpy())
    return out.numpy(), hn.numpy()


class FastPathSpy:
    """Stands in for a layer's or cell's engine and counts the calls that its
    per-call fast path (Engine.call_fast) accepted."""

    def __init__(self, engine):
        self._engine = engine
        self.accepted = 0

    def call_fast(self, *args, **kwargs):
        result = self._engine.call_fast(*args, **kwargs)
        self.accepted += result is not None
        return result

    def __getattr__(self, name):
        return getattr(self._engine, name)


def spy_fast_path(module):
    """Run `module` (an lstm_fast layer or cell) on a FastPathSpy; returns it."""
    module._current_engine()
    spy = module._engine = FastPathSpy(module._engine)
    return spy


def engine_forward(layer, x, hx=None, lengths=None, pool=None, threads=0):
    """The layer's C engine called directly (time-major x), on `pool` with
    `threads` (0: as the engine decides) or on the calling thread alone."""
    engine = layer._current_engine()
    dtype = layer.dtype
    h0, c0 = hx if isinstance(hx, tuple) else (hx, None)
    args = (np.ascontiguousarray(x, dtype),
            None if h0 is None else np.ascontiguousarray(h0, dtype),
            None if c0 is None else np.ascontiguousarray(c0, dtype),
            None if lengths is None else np.array(lengths, np.int64))
    return engine.forward(*args) if pool is None else engine.forward(*args, pool, threads)


def assert_calls_agree(layer, got, want, got_call, want_call):
    """Results for the same sequences from calls of other shapes (T, B):
    the same bits, unless one call put products on the AMX tiles that the
    other did not (the amx ISA, float32, large calls: the schedule's
    input_on_amx and recurrence_on_amx); then within float32 rounding."""
    engine = layer._current_engine()
    paths = [{key: engine.schedule(*call)[key] for key in ("input_on_amx", "recurrence_on_amx")}
             for call in (got_call, want_call)]
    if paths[0] == paths[1]:
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def assert_split_call_matches(layer, x, cut):
    """An LSTM layer over x in one call, and over x[:cut] then x[cut:] carrying
    the state: bitwise equal outputs and final states."""
    y, (h, c) = layer(x)
    y1, state = layer(x[:cut])
    y2, (h2, c2) = layer(x[cut:], state)
    B = x.shape[1]
    for got, want in ((np.concatenate([y1, y2]), y), (h2, h), (c2, c)):
        assert_calls_agree(layer, got, want, (min(cut, len(x) - cut), B), (len(x), B))
