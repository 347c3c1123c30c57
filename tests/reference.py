"""Float64 NumPy reference for LSTM / LSTMP / GRU / RNN with torch.nn semantics.

Written from the textbook / torch.nn documentation equations, one sequence and
one time step at a time. It is slow on purpose: every quantity is a plain
vector, so each line can be checked against the equations by eye.

Cell equations (torch gate order; x input, h previous state, c previous cell):

  LSTM   [i, f, g, o] = W_ih x + b_ih + W_hh h + b_hh     (4H rows, in this order)
         i, f, o = sigmoid(.), g = tanh(.)
         c' = f * c + i * g
         h' = o * tanh(c')
  LSTMP  as LSTM, then h' = W_hr (o * tanh(c'))          (W_hr is (P, H); the
         projected h' is what recurs into W_hh and what is output)
  GRU    [r, z, n] rows of W_ih x + b_ih  -> gi_r, gi_z, gi_n
                        W_hh h + b_hh  -> gh_r, gh_z, gh_n
         r = sigmoid(gi_r + gh_r); z = sigmoid(gi_z + gh_z)
         n = tanh(gi_n + r * gh_n)
         h' = (1 - z) * n + z * h
  RNN    h' = act(W_ih x + b_ih + W_hh h + b_hh), act = tanh or relu

LSTM variants (lstm_fast's `variant` option; ONNX's LSTM attributes, here in
torch's gate order), each optional:
  peephole    p = [p_i, p_f, p_o] (3H): p_i * c added to the i sum, p_f * c to
              the f sum, and p_o * c' (the new cell) to the o sum
  coupled     f = 1 - i (coupled_input_forget; the f rows are then unused)
  clip        every gate's sum (peephole term included) clipped to
              [-clip, clip] before its activation; c' itself is not clipped

Network (torch.nn.LSTM / GRU / RNN): layer 0 reads x; layer l > 0 reads the
output of layer l-1, which for a bidirectional network is the concatenation
[forward output, reverse output] along features. Dropout is a training-time
feature and is not part of inference, so it is absent here.

Per-sequence lengths follow torch's pack_padded_sequence: sequence b only has
steps 0 .. len_b - 1; its outputs at t >= len_b are zero; its final states are
taken after its own last step; the reverse direction starts at t = len_b - 1
from h_0 (and c_0). A length of 0 means no step at all: zero outputs and
h_n = h_0 (c_n = c_0).

Parameters are a dict with torch's state_dict keys (weight_ih_l0,
weight_hh_l0, bias_ih_l0, bias_hh_l0, weight_hr_l0, ..._reverse; cells use
weight_ih, weight_hh, bias_ih, bias_hh); an LSTM with peepholes adds
peephole_l0 (..._reverse), as lstm_fast names them. Anything array-like is
accepted; everything is converted to float64.
"""
import numpy as np

MODES = ("lstm", "gru", "rnn_tanh", "rnn_relu")
GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}


# --------------------------------------------------------------------------
# activations
# --------------------------------------------------------------------------
def sigmoid(v):
    """1 / (1 + exp(-v)), evaluated without overflow for either sign."""
    v = np.asarray(v, dtype=np.float64)
    out = np.empty_like(v)
    pos = v >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-v[pos]))
    e = np.exp(v[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def tanh(v):
    return np.tanh(np.asarray(v, dtype=np.float64))


def relu(v):
    return np.maximum(np.asarray(v, dtype=np.float64), 0.0)


def _f64(a):
    return None if a is None else np.array(a, dtype=np.float64)


# --------------------------------------------------------------------------
# one step of one sequence: all arguments are 1-D vectors / 2-D matrices
# --------------------------------------------------------------------------
def lstm_step(x, h, c, w_ih, w_hh, b_ih=None, b_hh=None, w_hr=None, *, peephole=None,
              coupled=False, clip=None):
    """One LSTM(P) step, optionally with the variants of the module docstring.
    Returns (h', c')."""
    H = c.shape[0]
    pre = w_ih @ x + w_hh @ h
    if b_ih is not None:
        pre = pre + b_ih + b_hh
    pre_i, pre_f, pre_g, pre_o = (pre[k * H:(k + 1) * H] for k in range(4))
    if peephole is not None:
        pre_i = pre_i + peephole[0 * H:1 * H] * c
        pre_f = pre_f + peephole[1 * H:2 * H] * c
    if clip is not None:
        pre_i, pre_f, pre_g = (np.clip(v, -clip, clip) for v in (pre_i, pre_f, pre_g))
    i = sigmoid(pre_i)
    f = 1.0 - i if coupled else sigmoid(pre_f)
    g = tanh(pre_g)
    c_new = f * c + i * g
    if peephole is not None:
        pre_o = pre_o + peephole[2 * H:3 * H] * c_new
    if clip is not None:
        pre_o = np.clip(pre_o, -clip, clip)
    o = sigmoid(pre_o)
    h_new = o * tanh(c_new)
    if w_hr is not None:
        h_new = w_hr @ h_new
    return h_new, c_new


def gru_step(x, h, w_ih, w_hh, b_ih=None, b_hh=None):
    """One GRU step, torch convention (reset gate applied to W_hn h + b_hn)."""
    H = h.shape[0]
    gi = w_ih @ x
    gh = w_hh @ h
    if b_ih is not None:
        gi = gi + b_ih
        gh = gh + b_hh
    r = sigmoid(gi[0 * H:1 * H] + gh[0 * H:1 * H])
    z = sigmoid(gi[1 * H:2 * H] + gh[1 * H:2 * H])
    n = tanh(gi[2 * H:3 * H] + r * gh[2 * H:3 * H])
    return (1.0 - z) * n + z * h


def rnn_step(x, h, w_ih, w_hh, b_ih=None, b_hh=None, nonlinearity="tanh"):
    """One Elman RNN step."""
    pre = w_ih @ x + w_hh @ h
    if b_ih is not None:
        pre = pre + b_ih + b_hh
    if nonlinearity == "tanh":
        return tanh(pre)
    if nonlinearity == "relu":
        return relu(pre)
    raise ValueError(nonlinearity)


# --------------------------------------------------------------------------
# parameter names / shapes (torch state_dict order)
# --------------------------------------------------------------------------
def param_names(mode, num_layers=1, bidirectional=False, bias=True, proj_size=0, peephole=False):
    """Keys of torch's state_dict, in torch's order (peepholes: lstm_fast's, last)."""
    names = []
    suffixes = ["", "_reverse"] if bidirectional else [""]
    for layer in range(num_layers):
        for sfx in suffixes:
            names.append(f"weight_ih_l{layer}{sfx}")
            names.append(f"weight_hh_l{layer}{sfx}")
            if bias:
                names.append(f"bias_ih_l{layer}{sfx}")
                names.append(f"bias_hh_l{layer}{sfx}")
            if proj_size:
                names.append(f"weight_hr_l{layer}{sfx}")
            if peephole:
                names.append(f"peephole_l{layer}{sfx}")
    return names


def param_shapes(mode, input_size, hidden_size, num_layers=1, bidirectional=False,
                 bias=True, proj_size=0, peephole=False):
    """dict name -> shape, in torch's order."""
    G = GATES[mode]
    D = 2 if bidirectional else 1
    R = proj_size if proj_size else hidden_size
    shapes = {}
    for name in param_names(mode, num_layers, bidirectional, bias, proj_size, peephole):
        base = name.split("_l")[0]          # weight_ih / weight_hh / bias_ih / ...
        layer = int(name.split("_l")[1].split("_")[0])
        layer_in = input_size if layer == 0 else D * R
        shapes[name] = {
            "weight_ih": (G * hidden_size, layer_in),
            "weight_hh": (G * hidden_size, R),
            "bias_ih": (G * hidden_size,),
            "bias_hh": (G * hidden_size,),
            "weight_hr": (proj_size, hidden_size),
            "peephole": (3 * hidden_size,),
        }[base]
    return shapes


def random_params(mode, input_size, hidden_size, num_layers=1, bidirectional=False,
                  bias=True, proj_size=0, rng=None, scale=None, dtype=np.float64,
                  peephole=False):
    """Random parameters U(-scale, scale), scale defaulting to 1/sqrt(H)."""
    rng = np.random.default_rng(0) if rng is None else rng
    scale = 1.0 / np.sqrt(hidden_size) if scale is None else scale
    shapes = param_shapes(mode, input_size, hidden_size, num_layers, bidirectional, bias, proj_size,
                          peephole)
    return {k: rng.uniform(-scale, scale, size=s).astype(dtype) for k, s in shapes.items()}


def describe(params, mode):
    """Infer (hidden_size, proj_size, num_layers, bidirectional, bias, peephole) from
    parameter keys."""
    G = GATES[mode]
    hidden_size = np.shape(params["weight_hh_l0"])[0] // G
    proj_size = np.shape(params["weight_hr_l0"])[0] if "weight_hr_l0" in params else 0
    num_layers = 0
    while f"weight_ih_l{num_layers}" in params:
        num_layers += 1
    bidirectional = "weight_ih_l0_reverse" in params
    bias = "bias_ih_l0" in params
    peephole = "peephole_l0" in params
    if peephole and mode != "lstm":
        raise KeyError("peepholes are an LSTM parameter")
    expected = set(param_names(mode, num_layers, bidirectional, bias, proj_size, peephole))
    if set(params) != expected:
        raise KeyError(f"inconsistent parameter keys: missing {sorted(expected - set(params))}, "
                       f"unexpected {sorted(set(params) - expected)}")
    return hidden_size, proj_size, num_layers, bidirectional, bias, peephole


# --------------------------------------------------------------------------
# full network, time-major batched input
# --------------------------------------------------------------------------
def rnn_forward(mode, params, x, h0=None, c0=None, lengths=None, variant=None):
    """Run a torch.nn.LSTM/GRU/RNN-style network.

    mode     "lstm" | "gru" | "rnn_tanh" | "rnn_relu" (LSTMP = "lstm" with weight_hr_*)
    params   dict with torch state_dict keys (structure is read off the keys;
             peephole_l* keys mean an LSTM with peepholes)
    x        (T, B, I)
    h0       (L*D, B, R) or None for zeros
    c0       (L*D, B, H) or None for zeros (LSTM only)
    lengths  (B,) ints in [0, T] or None for all T
    variant  LSTM only, as lstm_fast's option: {"peephole": bool (must match
             the parameters), "coupled_input_forget": bool, "clip": float (0:
             none)}, or None

    Returns (y (T, B, D*R), h_n (L*D, B, R), c_n (L*D, B, H) or None).
    """
    if mode not in MODES:
        raise ValueError(mode)
    H, P, L, bidirectional, bias, peephole = describe(params, mode)
    variant = dict(variant or {})
    if variant.pop("peephole", peephole) != peephole:
        raise ValueError("variant['peephole'] does not match the parameters")
    coupled = variant.pop("coupled_input_forget", False)
    clip = variant.pop("clip", 0.0) or None
    if variant or ((coupled or clip) and mode != "lstm"):
        raise ValueError(f"the reference has no variant {variant} for {mode}")
    D = 2 if bidirectional else 1
    R = P if P else H
    x = _f64(x)
    T, B, _ = x.shape
    h0 = np.zeros((L * D, B, R)) if h0 is None else _f64(h0)
    if mode == "lstm":
        c0 = np.zeros((L * D, B, H)) if c0 is None else _f64(c0)
    elif c0 is not None:
        raise ValueError("c0 only for LSTM")
    lengths = [T] * B if lengths is None else [int(n) for n in lengths]
    assert len(lengths) == B and all(0 <= n <= T for n in lengths)

    h_n = np.zeros((L * D, B, R))
    c_n = np.zeros((L * D, B, H)) if mode == "lstm" else None
    layer_input = x
    for layer in range(L):
        y = np.zeros((T, B, D * R))            # zero past each sequence's end
        for d in range(D):
            sfx = "_reverse" if d == 1 else ""
            w_ih = _f64(params[f"weight_ih_l{layer}{sfx}"])
            w_hh = _f64(params[f"weight_hh_l{layer}{sfx}"])
            b_ih = _f64(params[f"bias_ih_l{layer}{sfx}"]) if bias else None
            b_hh = _f64(params[f"bias_hh_l{layer}{sfx}"]) if bias else None
            w_hr = _f64(params[f"weight_hr_l{layer}{sfx}"]) if P else None
            w_peep = _f64(params[f"peephole_l{layer}{sfx}"]) if peephole else None
            k = layer * D + d                   # index into h0 / h_n
            for b in range(B):
                h = h0[k, b].copy()
                c = c0[k, b].copy() if mode == "lstm" else None
                steps = range(lengths[b])
                if d == 1:
                    steps = reversed(steps)     # starts at this sequence's last valid step
                for t in steps:
                    xt = layer_input[t, b]
                    if mode == "lstm":
                        h, c = lstm_step(xt, h, c, w_ih, w_hh, b_ih, b_hh, w_hr,
                                         peephole=w_peep, coupled=coupled, clip=clip)
                    elif mode == "gru":
                        h = gru_step(xt, h, w_ih, w_hh, b_ih, b_hh)
                    else:
                        h = rnn_step(xt, h, w_ih, w_hh, b_ih, b_hh, mode[4:])
                    y[t, b, d * R:(d + 1) * R] = h
                h_n[k, b] = h
                if mode == "lstm":
                    c_n[k, b] = c
        layer_input = y
    return layer_input, h_n, c_n


def module_forward(mode, params, input, hx=None, lengths=None, batch_first=False, variant=None):
    """The public-API shaped call: like torch.nn.LSTM/GRU/RNN.forward (variant: as
    rnn_forward's).

    input: (T, B, I), (B, T, I) with batch_first, or unbatched (T, I).
    hx: LSTM (h_0, c_0) tuple, others h_0; shapes (L*D, B, .) or unbatched (L*D, .).
    Returns LSTM: (output, (h_n, c_n)); others: (output, h_n), with torch's shapes.
    """
    x = _f64(input)
    unbatched = x.ndim == 2
    if unbatched:
        x = x[:, None, :]
    elif batch_first:
        x = x.transpose(1, 0, 2)
    h0 = c0 = None
    if hx is not None:
        if mode == "lstm":
            h0, c0 = (_f64(a) for a in hx)
        else:
            h0 = _f64(hx)
        if unbatched:
            h0 = h0[:, None, :]
            c0 = None if c0 is None else c0[:, None, :]
    y, h_n, c_n = rnn_forward(mode, params, x, h0, c0, lengths, variant)
    if unbatched:
        y, h_n = y[:, 0], h_n[:, 0]
        c_n = None if c_n is None else c_n[:, 0]
    elif batch_first:
        y = y.transpose(1, 0, 2)
    y = np.ascontiguousarray(y)
    return (y, (h_n, c_n)) if mode == "lstm" else (y, h_n)


# --------------------------------------------------------------------------
# cells (torch.nn.LSTMCell / GRUCell / RNNCell)
# --------------------------------------------------------------------------
def cell_forward(mode, params, input, hx=None):
    """input (N, I) or (I,). LSTM hx = (h, c); returns (h', c') for LSTM, else h'."""
    x = _f64(input)
    unbatched = x.ndim == 1
    if unbatched:
        x = x[None]
    N = x.shape[0]
    G = GATES[mode]
    w_ih = _f64(params["weight_ih"])
    w_hh = _f64(params["weight_hh"])
    b_ih = _f64(params.get("bias_ih"))
    b_hh = _f64(params.get("bias_hh"))
    H = w_hh.shape[0] // G
    if hx is None:
        h = np.zeros((N, H))
        c = np.zeros((N, H))
    elif mode == "lstm":
        h, c = (_f64(a) for a in hx)
    else:
        h, c = _f64(hx), None
    if unbatched and hx is not None:
        h = h[None]
        c = None if c is None else c[None]
    h_out = np.zeros((N, H))
    c_out = np.zeros((N, H))
    for n in range(N):
        if mode == "lstm":
            h_out[n], c_out[n] = lstm_step(x[n], h[n], c[n], w_ih, w_hh, b_ih, b_hh)
        elif mode == "gru":
            h_out[n] = gru_step(x[n], h[n], w_ih, w_hh, b_ih, b_hh)
        else:
            h_out[n] = rnn_step(x[n], h[n], w_ih, w_hh, b_ih, b_hh, mode[4:])
    if unbatched:
        h_out, c_out = h_out[0], c_out[0]
    return (h_out, c_out) if mode == "lstm" else h_out


def cell_param_shapes(mode, input_size, hidden_size, bias=True):
    G = GATES[mode]
    shapes = {"weight_ih": (G * hidden_size, input_size), "weight_hh": (G * hidden_size, hidden_size)}
    if bias:
        shapes["bias_ih"] = (G * hidden_size,)
        shapes["bias_hh"] = (G * hidden_size,)
    return shapes


# --------------------------------------------------------------------------
# ONNX LSTM / GRU / RNN operators (opset 22), from the operator specification
# --------------------------------------------------------------------------
# Gate orders are ONNX's: LSTM i, o, f, c (peepholes P = [Pi, Po, Pf]);
# GRU z, r, h; B = [Wb, Rb]. Activation f, g, h per the spec's list:
#   Affine alpha*x+beta; LeakyRelu x>=0 ? x : alpha*x; ThresholdedRelu
#   x>=alpha ? x : 0; ScaledTanh alpha*tanh(beta*x); HardSigmoid
#   min(max(alpha*x+beta, 0), 1); Elu x>=0 ? x : alpha*(e^x-1);
#   Softsign x/(1+|x|); Softplus log(1+e^x).
# Points the spec leaves open, settled as ONNX Runtime computes them:
#   clip bounds the inputs of the gate activations (f and g), not the cell
#   state fed to h; input_forget=1 sets f = 1 - i; alphas and betas are
#   consumed in order by the activations that take one.
# sequence_lens: a sequence has only steps 0 .. len-1; Y is zero past its
# end; Y_h (Y_c) is the state after its last step; reverse starts at len-1.

def _act_fn(name, alpha, beta):
    return {
        "relu": relu,
        "tanh": tanh,
        "sigmoid": sigmoid,
        "affine": lambda v: alpha * v + beta,
        "leakyrelu": lambda v: np.where(v >= 0, v, alpha * v),
        "thresholdedrelu": lambda v: np.where(v >= alpha, v, 0.0),
        "scaledtanh": lambda v: alpha * np.tanh(beta * v),
        "hardsigmoid": lambda v: np.clip(alpha * v + beta, 0.0, 1.0),
        "elu": lambda v: np.where(v >= 0, v, alpha * np.expm1(np.minimum(v, 0))),
        "softsign": lambda v: v / (1.0 + np.abs(v)),
        "softplus": lambda v: np.logaddexp(0.0, v),
    }[name.lower()]


# Which activations take alpha / beta, and their defaults (the ONNX operators'
# of the same name; ScaledTanh's operator had none, so it needs both given).
ONNX_ACTIVATION_PARAMS = {
    "affine": {"alpha": 1.0, "beta": 0.0},
    "leakyrelu": {"alpha": 0.01},
    "thresholdedrelu": {"alpha": 1.0},
    "scaledtanh": {"alpha": None, "beta": None},
    "hardsigmoid": {"alpha": 0.2, "beta": 0.5},
    "elu": {"alpha": 1.0},
}


def onnx_activations(op, activations, alphas, betas, num_directions):
    """Per direction, the list of activation callables (f[, g[, h]])."""
    defaults = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"], "RNN": ["Tanh"]}[op]
    names = list(activations) if activations else defaults * num_directions
    queues = {"alpha": list(alphas or []), "beta": list(betas or [])}
    fns = []
    for name in names:
        params = dict(ONNX_ACTIVATION_PARAMS.get(name.lower(), {}))
        for key in params:
            if queues[key]:
                params[key] = queues[key].pop(0)
        fns.append(_act_fn(name, params.get("alpha"), params.get("beta")))
    k = len(defaults)
    return [fns[d * k:(d + 1) * k] for d in range(num_directions)]


def onnx_forward(op, X, W, R, B=None, sequence_lens=None, initial_h=None, initial_c=None, P=None,
                 *, hidden_size=None, direction="forward", layout=0, activations=None,
                 activation_alpha=None, activation_beta=None, clip=None, input_forget=0,
                 linear_before_reset=0):
    """The ONNX operator `op` ("LSTM", "GRU", "RNN") in float64. Returns
    (Y, Y_h, Y_c) for LSTM, (Y, Y_h) otherwise, in the layout's shapes."""
    X = _f64(X)
    if layout:
        X = X.transpose(1, 0, 2)
        initial_h = None if initial_h is None else _f64(initial_h).transpose(1, 0, 2)
        initial_c = None if initial_c is None else _f64(initial_c).transpose(1, 0, 2)
    T, N, _ = X.shape
    D = 2 if direction == "bidirectional" else 1
    H = _f64(R).shape[-1]
    G = {"LSTM": 4, "GRU": 3, "RNN": 1}[op]
    W, R = _f64(W), _f64(R)
    B = np.zeros((D, 2 * G * H)) if B is None else _f64(B)
    P = np.zeros((D, 3 * H)) if P is None else _f64(P)
    h0 = np.zeros((D, N, H)) if initial_h is None else _f64(initial_h)
    c0 = np.zeros((D, N, H)) if initial_c is None else _f64(initial_c)
    lens = [T] * N if sequence_lens is None else [int(v) for v in sequence_lens]
    acts = onnx_activations(op, activations, activation_alpha, activation_beta, D)

    def clipped(v):
        return v if clip is None else np.clip(v, -clip, clip)

    Y = np.zeros((T, D, N, H))
    Y_h = np.zeros((D, N, H))
    Y_c = np.zeros((D, N, H))
    for d in range(D):
        reverse = direction == "reverse" or d == 1
        Wd, Rd, Wb, Rb = W[d], R[d], B[d, :G * H], B[d, G * H:]
        for n in range(N):
            h, c = h0[d, n].copy(), c0[d, n].copy()
            steps = range(lens[n])
            for t in (reversed(steps) if reverse else steps):
                x = X[t, n]
                if op == "LSTM":
                    f, g, hf = acts[d]
                    pre = Wd @ x + Rd @ h + Wb + Rb
                    pi, po, pf, pc = (pre[k * H:(k + 1) * H] for k in range(4))
                    Pi, Po, Pf = P[d, :H], P[d, H:2 * H], P[d, 2 * H:]
                    i = f(clipped(pi + Pi * c))
                    fg = 1.0 - i if input_forget else f(clipped(pf + Pf * c))
                    c = fg * c + i * g(clipped(pc))
                    o = f(clipped(po + Po * c))
                    h = o * hf(c)
                elif op == "GRU":
                    f, g = acts[d]
                    gx = Wd @ x + Wb
                    Rz, Rr, Rh = Rd[:H], Rd[H:2 * H], Rd[2 * H:]
                    Rbz, Rbr, Rbh = Rb[:H], Rb[H:2 * H], Rb[2 * H:]
                    z = f(clipped(gx[:H] + Rz @ h + Rbz))
                    r = f(clipped(gx[H:2 * H] + Rr @ h + Rbr))
                    if linear_before_reset:
                        hh = g(clipped(gx[2 * H:] + r * (Rh @ h + Rbh)))
                    else:
                        hh = g(clipped(gx[2 * H:] + Rh @ (r * h) + Rbh))
                    h = (1.0 - z) * hh + z * h
                else:
                    (f,) = acts[d]
                    h = f(clipped(Wd @ x + Rd @ h + Wb + Rb))
                Y[t, d, n] = h
            Y_h[d, n], Y_c[d, n] = h, c
    if layout:
        Y, Y_h, Y_c = Y.transpose(2, 0, 1, 3), Y_h.transpose(1, 0, 2), Y_c.transpose(1, 0, 2)
    return (Y, Y_h, Y_c) if op == "LSTM" else (Y, Y_h)
