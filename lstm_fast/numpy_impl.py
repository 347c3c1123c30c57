"""Plain NumPy forward of LSTM (with projection), GRU and Elman RNN.

This is the "what a user would write in NumPy" peer of the benchmarks: one
matrix product covers the layer input for every time step, then a Python loop
over time does one recurrent product and the elementwise gate maths per step,
vectorised over the batch. It takes a torch-style state_dict, so the same
weights drive lstm_fast, torch, ONNX Runtime and this file.

It is deliberately not used by the layers, and it is not the test reference
(tests/reference.py is written separately from the equations): a peer has to
be a fair, idiomatic NumPy program, so it computes in the dtype it is given
instead of float64 and keeps the weights pre-transposed like a user would.
"""
import re

import numpy as np

__all__ = ["NumpyRNN", "forward", "GATES"]

GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}

_IFOG = [0, 1, 3, 2]

_KEY = re.compile(r"^(weight_ih|weight_hh|bias_ih|bias_hh|weight_hr)_l(\d+)(_reverse)?$")


def _sigmoid(x, out):
    # The tanh form cannot overflow (1/(1+exp(-x)) warns for x < -88 in
    # float32) and costs one transcendental, like the exp form.
    np.multiply(x, 0.5, out=out)
    np.tanh(out, out=out)
    out *= 0.5
    out += 0.5
    return out


class _Direction:
    """One layer-direction's weights, laid out once for row-major products."""

    __slots__ = ("w_ih_t", "w_hh_t", "bias_x", "bias_hn", "w_hr_t")

    def __init__(self, cell, hidden_size, p, dtype):
        H = hidden_size

        def get(name):
            value = p.get(name)
            return None if value is None else np.asarray(value, dtype=dtype)

        w_ih, w_hh = get("weight_ih"), get("weight_hh")
        b_ih, b_hh, w_hr = get("bias_ih"), get("bias_hh"), get("weight_hr")
        if w_ih is None or w_hh is None or (b_ih is None) != (b_hh is None):
            raise ValueError(f"incomplete parameters {sorted(p)}")
        if cell == "lstm":
            # torch stacks i, f, g, o; with i, f, o, g the three sigmoid gates
            # are adjacent and take one activation call per step, not three.
            def regate(a):
                return None if a is None else a.reshape((4, H) + a.shape[1:])[_IFOG].reshape(a.shape)

            w_ih, w_hh, b_ih, b_hh = regate(w_ih), regate(w_hh), regate(b_ih), regate(b_hh)
        # x @ W.T with W.T stored contiguous: the product BLAS runs fastest.
        self.w_ih_t = np.ascontiguousarray(w_ih.T)
        self.w_hh_t = np.ascontiguousarray(w_hh.T)
        self.w_hr_t = None if w_hr is None else np.ascontiguousarray(w_hr.T)
        self.bias_hn = None
        if b_ih is None:
            self.bias_x = None
        elif cell == "gru":
            # r and z see b_ih + b_hh, so both fold into the input product;
            # b_hn sits inside r * (W_hn h + b_hn) and must stay apart.
            self.bias_x = b_ih.copy()
            self.bias_x[: 2 * H] += b_hh[: 2 * H]
            self.bias_hn = b_hh[2 * H :].copy()
        else:
            self.bias_x = b_ih + b_hh


class NumpyRNN:
    """A multi-layer, optionally bidirectional network built from a state_dict.

    cell: "lstm", "gru", "rnn_tanh" or "rnn_relu". The architecture (layers,
    directions, hidden and projection sizes, bias) is read from the keys and
    shapes of state_dict, which uses torch.nn names (weight_ih_l0, ...,
    weight_hr_l0_reverse). Arrays are cast to `dtype` once, here.

    __call__(x, hx=None) with x of shape (T, B, I) returns (y, h_n, c_n):
    y (T, B, D*R), h_n (L*D, B, R), c_n (L*D, B, H) for LSTM else None.
    hx is None, h_0, or (h_0, c_0) for LSTM.
    """

    def __init__(self, cell, state_dict, dtype=np.float32):
        if cell not in GATES:
            raise ValueError(f"cell must be one of {sorted(GATES)}, got {cell!r}")
        self.cell = cell
        self.dtype = np.dtype(dtype)
        params = {}
        for key, value in state_dict.items():
            m = _KEY.match(key)
            if m is None:
                raise ValueError(f"unexpected state_dict key {key!r}")
            name, layer, reverse = m.group(1), int(m.group(2)), m.group(3) is not None
            params.setdefault((layer, int(reverse)), {})[name] = value
        if not params:
            raise ValueError("empty state_dict")
        self.num_layers = 1 + max(layer for layer, _ in params)
        self.num_directions = 1 + max(d for _, d in params)
        first = params[(0, 0)]
        G = GATES[cell]
        self.hidden_size = np.shape(first["weight_hh"])[0] // G
        self.input_size = np.shape(first["weight_ih"])[1]
        self.proj_size = np.shape(first["weight_hr"])[0] if "weight_hr" in first else 0
        self.state_size = self.proj_size or self.hidden_size
        self._dirs = []
        for layer in range(self.num_layers):
            for d in range(self.num_directions):
                if (layer, d) not in params:
                    raise ValueError(f"state_dict lacks layer {layer} direction {d}")
                self._dirs.append(_Direction(cell, self.hidden_size, params[(layer, d)], self.dtype))

    def __call__(self, x, hx=None):
        x = np.asarray(x, dtype=self.dtype)
        T, B, _ = x.shape
        L, D, H, R = self.num_layers, self.num_directions, self.hidden_size, self.state_size
        if hx is None:
            h0 = np.zeros((L * D, B, R), self.dtype)
            c0 = np.zeros((L * D, B, H), self.dtype)
        elif self.cell == "lstm":
            h0 = np.asarray(hx[0], dtype=self.dtype)
            c0 = np.asarray(hx[1], dtype=self.dtype)
        else:
            h0, c0 = np.asarray(hx, dtype=self.dtype), None
        h_n = np.empty((L * D, B, R), self.dtype)
        c_n = np.empty((L * D, B, H), self.dtype) if self.cell == "lstm" else None
        layer_input = x
        for layer in range(L):
            y = np.empty((T, B, D * R), self.dtype)
            for d in range(D):
                k = layer * D + d
                out = y[:, :, d * R : (d + 1) * R]
                h, c = self._run(self._dirs[k], layer_input, h0[k], None if c0 is None else c0[k],
                                 out, reverse=d == 1)
                h_n[k] = h
                if c_n is not None:
                    c_n[k] = c
            layer_input = y
        return layer_input, h_n, c_n

    def _run(self, w, x, h, c, out, reverse):
        T, B, I = x.shape
        H = self.hidden_size
        # The input part of every gate for every step in one product.
        xp = (x.reshape(T * B, I) @ w.w_ih_t).reshape(T, B, -1)
        if w.bias_x is not None:
            xp += w.bias_x
        h = h.copy()
        c = None if c is None else c.copy()
        steps = range(T - 1, -1, -1) if reverse else range(T)
        cell = self.cell
        if cell == "lstm":
            for t in steps:
                g = xp[t]
                g += h @ w.w_hh_t
                _sigmoid(g[:, : 3 * H], g[:, : 3 * H])
                np.tanh(g[:, 3 * H :], out=g[:, 3 * H :])
                i, f, o, gg = g[:, :H], g[:, H : 2 * H], g[:, 2 * H : 3 * H], g[:, 3 * H :]
                c *= f
                c += i * gg
                h = o * np.tanh(c)
                if w.w_hr_t is not None:
                    h = h @ w.w_hr_t
                out[t] = h
        elif cell == "gru":
            for t in steps:
                g = xp[t]
                hp = h @ w.w_hh_t
                rz = g[:, : 2 * H]
                rz += hp[:, : 2 * H]
                _sigmoid(rz, rz)
                r, z = rz[:, :H], rz[:, H:]
                hn = hp[:, 2 * H :]
                if w.bias_hn is not None:
                    hn += w.bias_hn
                n = g[:, 2 * H :]
                n += r * hn
                np.tanh(n, out=n)
                # h' = (1 - z) * n + z * h, written as n + z * (h - n).
                h = n + z * (h - n)
                out[t] = h
        else:
            relu = cell == "rnn_relu"
            for t in steps:
                g = xp[t]
                g += h @ w.w_hh_t
                if relu:
                    np.maximum(g, 0, out=g)
                else:
                    np.tanh(g, out=g)
                h = g
                out[t] = h
        return h, c


def forward(cell, state_dict, x, hx=None, dtype=np.float32):
    """One-shot NumpyRNN(cell, state_dict, dtype)(x, hx)."""
    return NumpyRNN(cell, state_dict, dtype)(x, hx)
