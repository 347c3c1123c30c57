"""lstm_fast.torch: swapping the recurrent modules of a torch model (an LSTM, a
bidirectional GRU fed packed sequences, and cells) changes no output beyond
float tolerance, and swapping back restores torch modules."""
import copy
import subprocess
import sys
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

import lstm_fast  # noqa: E402
import lstm_fast.torch as lft  # noqa: E402

# The models here are called as many evaluation scripts call theirs, with
# gradients enabled; the warning that none flows is tested on its own below.
pytestmark = pytest.mark.filterwarnings("ignore:a swapped .* is for inference")


class Tagger(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(5, 8)
        self.encoder = nn.LSTM(8, 12, num_layers=2, proj_size=6)
        self.context = nn.Sequential(nn.GRU(6, 7, batch_first=True, bidirectional=True))
        self.cell = nn.GRUCell(14, 9)
        self.lstm_cell = nn.LSTMCell(9, 4)
        self.rnn_cell = nn.RNNCell(4, 3, nonlinearity="relu")

    def forward(self, x, lengths):
        h, (h_n, c_n) = self.encoder(self.embed(x))            # (T, B, 6)
        packed = pack_padded_sequence(h.transpose(0, 1), lengths, batch_first=True,
                                      enforce_sorted=False)
        out, g_n = self.context[0](packed)
        padded, _ = pad_packed_sequence(out, batch_first=True)
        state = self.cell(padded[:, 0])
        state, c = self.lstm_cell(state)
        return padded, g_n, h_n, c_n, self.rnn_cell(state), out.data


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_swap_model(dtype, isa):
    torch.manual_seed(0)
    model = Tagger().to(dtype).eval()
    x = torch.randn(7, 4, 5, dtype=dtype)
    lengths = torch.tensor([7, 3, 5, 1])
    with torch.no_grad():
        expected = model(x, lengths)
    model = lft.replace_modules(model)
    assert isinstance(model.encoder, lft.FastRecurrent)
    assert isinstance(model.context[0], lft.FastRecurrent)
    assert isinstance(model.cell, lft.FastCell) and isinstance(model.rnn_cell, lft.FastCell)
    assert model.encoder.fast.isa == isa
    got = model(x, lengths)
    atol = 1e-11 if dtype == torch.float64 else 2e-5
    for g, e in zip(got, expected):
        assert g.dtype == e.dtype and g.shape == e.shape
        torch.testing.assert_close(g, e, rtol=atol * 10, atol=atol)
    restored = lft.restore_modules(model)
    assert type(restored.encoder) is nn.LSTM and type(restored.cell) is nn.GRUCell
    with torch.no_grad():
        again = restored(x, lengths)
    for g, e in zip(again, expected):
        torch.testing.assert_close(g, e, rtol=0, atol=0)


def test_swapped_model_saves_and_loads_the_original_checkpoints():
    torch.manual_seed(2)
    model = Tagger().eval()
    checkpoint = model.state_dict()
    swapped = lft.replace_modules(Tagger().eval())    # other random weights
    assert list(swapped.state_dict()) == list(checkpoint)
    swapped.load_state_dict(checkpoint)               # strict: every key, no extra
    for name, value in swapped.state_dict().items():
        torch.testing.assert_close(value, checkpoint[name], rtol=0, atol=0)
    x, lengths = torch.randn(6, 2, 5), torch.tensor([6, 4])
    with torch.no_grad():
        expected = model(x, lengths)
    for g, e in zip(swapped(x, lengths), expected):
        torch.testing.assert_close(g, e, rtol=2e-4, atol=2e-5)
    # Mismatches are reported as torch reports them. As in torch, the other
    # modules load their entries before the error is raised; the module with
    # the bad entry keeps all its weights (torch would load its other
    # entries). Every value differs from the loaded ones, so each shows.
    bad = {name: value + 1 for name, value in checkpoint.items()}
    bad["encoder.weight_hh_l0"] = torch.zeros(3, 3)
    del bad["cell.bias_hh"]
    bad["cell.extra"] = torch.zeros(1)
    with pytest.raises(RuntimeError, match="encoder.*weight_hh_l0") as error:
        swapped.load_state_dict(bad)
    assert "cell.bias_hh" in str(error.value) and "cell.extra" in str(error.value)
    for name, value in swapped.state_dict().items():
        kept = name.startswith("encoder.") or name == "cell.bias_hh"
        torch.testing.assert_close(value, checkpoint[name] if kept else bad[name], rtol=0, atol=0)
    del bad["encoder.weight_hh_l0"]
    result = swapped.load_state_dict(bad, strict=False)
    assert result.missing_keys == ["encoder.weight_hh_l0", "cell.bias_hh"]
    assert result.unexpected_keys == ["cell.extra"]


def test_swapped_model_loads_a_checkpoint_of_another_dtype():
    # As torch's own modules (copy_ into the parameter), a swapped one takes
    # any floating checkpoint in its own dtype, bfloat16 included.
    torch.manual_seed(3)
    model = Tagger().eval()
    checkpoint = {name: value.to(torch.bfloat16) for name, value in model.state_dict().items()}
    model.load_state_dict(checkpoint)
    swapped = lft.replace_modules(Tagger().eval())
    swapped.load_state_dict(checkpoint)
    for name, value in swapped.state_dict().items():
        assert value.dtype == torch.float32
        torch.testing.assert_close(value, model.state_dict()[name], rtol=0, atol=0)
    x, lengths = torch.randn(6, 2, 5), torch.tensor([6, 4])
    with torch.no_grad():
        expected = model(x, lengths)
    for g, e in zip(swapped(x, lengths), expected):
        torch.testing.assert_close(g, e, rtol=2e-4, atol=2e-5)


@pytest.mark.filterwarnings("ignore:LSTM with projections")  # torch's
@pytest.mark.parametrize("start,checkpoint_dtype", [
    (torch.float16, torch.float32), (torch.float32, torch.float64),
    (torch.float64, torch.bfloat16), (torch.float32, torch.float32)])
def test_assign_takes_the_checkpoints_dtype_as_torch_does(start, checkpoint_dtype):
    # load_state_dict(assign=True) hands torch's modules the checkpoint's
    # tensors, dtype and all; a swapped module converts to it, and loads the
    # values unrounded by its former dtype.
    torch.manual_seed(4)
    model, x = nn.LSTM(3, 5, num_layers=2, proj_size=2).to(start).eval(), torch.randn(6, 2, 3)
    swapped = lft.replace_modules(nn.Sequential(nn.LSTM(3, 5, num_layers=2, proj_size=2)
                                                .to(start).eval()))
    checkpoint = {name: torch.randn_like(value, dtype=torch.float64).to(checkpoint_dtype)
                  for name, value in model.state_dict().items()}
    model.load_state_dict(checkpoint, assign=True)
    swapped.load_state_dict({f"0.{name}": value for name, value in checkpoint.items()},
                            assign=True)
    assert swapped[0].dtype == checkpoint_dtype
    for name, value in swapped.state_dict().items():
        assert value.dtype == checkpoint_dtype
        torch.testing.assert_close(value, checkpoint[name[2:]], rtol=0, atol=0)
    with torch.no_grad():
        expected = model.float()(x.float()) if checkpoint_dtype == torch.bfloat16 else \
            model(x.to(checkpoint_dtype))
    got = swapped(x.to(checkpoint_dtype))[0]
    tolerance = {torch.float32: 1e-5, torch.float64: 1e-12, torch.bfloat16: 2e-2}[checkpoint_dtype]
    torch.testing.assert_close(got.float(), expected[0].float(), rtol=tolerance, atol=tolerance)


def test_assign_with_several_dtypes_or_bad_shapes_changes_nothing():
    torch.manual_seed(5)
    swapped = lft.replace_modules(nn.GRU(3, 4).half())
    before = swapped.state_dict()
    mixed = {name: value.float() for name, value in before.items()}
    mixed["bias_hh_l0"] = mixed["bias_hh_l0"].double()
    with pytest.raises(RuntimeError, match="assign=True with tensors of several dtypes "
                                           r"\(torch.float32, torch.float64\)"):
        swapped.load_state_dict(mixed, assign=True)
    integers = {name: value.long() for name, value in before.items()}
    with pytest.raises(RuntimeError, match="assign=True with tensors of torch.int64: "
                                           "parameters must be floating-point"):
        swapped.load_state_dict(integers, assign=True)
    wrong_shape = {name: value.float() for name, value in before.items()}
    wrong_shape["weight_hh_l0"] = torch.zeros(12, 5)
    with pytest.raises(RuntimeError, match="weight_hh_l0"):
        swapped.load_state_dict(wrong_shape, assign=True)
    assert swapped.dtype == torch.float16
    for name, value in swapped.state_dict().items():
        assert value.dtype == torch.float16
        torch.testing.assert_close(value, before[name], rtol=0, atol=0)


def test_cells_of_size_zero_stay_torchs_and_the_rest_swaps():
    torch.manual_seed(9)
    model = nn.ModuleDict({"no_input": nn.LSTMCell(0, 5), "no_hidden": nn.GRUCell(5, 0),
                           "rnn": nn.RNNCell(4, 3)})
    lft.replace_modules(model)
    assert type(model["no_input"]) is nn.LSTMCell and type(model["no_hidden"]) is nn.GRUCell
    assert isinstance(model["rnn"], lft.FastCell)
    h, c = model["no_input"](torch.randn(3, 0))
    assert h.shape == c.shape == (3, 5)
    assert model["no_hidden"](torch.randn(3, 5)).shape == (3, 0)


def test_swap_refuses_modules_off_the_cpu():
    with pytest.raises(RuntimeError, match="lstm_fast runs on the CPU: LSTM's weight_ih_l0 is "
                                           "on meta"):
        lft.replace_modules(nn.Sequential(nn.LSTM(3, 4, device="meta")))


def test_swap_module_itself_with_state_and_unbatched():
    torch.manual_seed(1)
    gru = nn.GRU(3, 4, bidirectional=True).eval()
    fast = lft.replace_modules(gru)
    assert isinstance(fast, lft.FastRecurrent)
    x, h0 = torch.randn(5, 3), torch.randn(2, 4)
    with torch.no_grad():
        expected = gru(x, h0)
    got = fast(x, h0)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=2e-5)


def test_import_lstm_fast_does_not_import_torch():
    code = ("import sys, lstm_fast, lstm_fast.onnx; "
            "print(sorted(m for m in ('torch', 'onnx', 'keras') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "[]", out.stderr


@pytest.mark.filterwarnings("ignore:Complex modules")  # torch's, for the complex64 refusal
def test_swapped_model_follows_dtype_changes():
    torch.manual_seed(3)
    model = Tagger().eval()
    swapped = lft.replace_modules(Tagger().eval())
    swapped.load_state_dict(model.state_dict())
    x, lengths = torch.randn(6, 3, 5), torch.tensor([6, 2, 4])
    for convert, dtype, atol in ((lambda m: m.double(), torch.float64, 1e-11),
                                 (lambda m: m.to(torch.float32), torch.float32, 2e-5)):
        convert(model), convert(swapped)
        assert swapped.encoder.dtype == dtype and swapped.cell.dtype == dtype
        with torch.no_grad():
            expected = model(x.to(dtype), lengths)
        for g, e in zip(swapped(x.to(dtype), lengths), expected):
            assert g.dtype == dtype
            torch.testing.assert_close(g, e, rtol=atol * 10, atol=atol)
    with pytest.raises(TypeError, match="float32 and float64.*torch.complex64"):
        swapped.to(torch.complex64)
    with pytest.raises(RuntimeError, match="CPU.*meta"):
        lft.replace_modules(nn.GRU(3, 4)).to("meta")


def test_swapped_modules_refuse_input_of_another_dtype_as_torch_does():
    lstm = lft.replace_modules(nn.LSTM(3, 4))
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"input dtype \(torch.float64\) does not match"):
        nn.LSTM(3, 4)(x)                                # what torch does
    with pytest.raises(ValueError, match=r"input dtype \(torch.float64\) does not match"):
        lstm(x)
    # States, and a cell's input, fail in torch's matmul: RuntimeError.
    h = torch.zeros(1, 2, 4, dtype=torch.float64)
    with pytest.raises(RuntimeError):
        nn.GRU(3, 4)(x.float(), h)
    with pytest.raises(RuntimeError, match=r"hx\[0\] dtype \(torch.float64\)"):
        lstm(x.float(), (h, h.float()))
    cell = lft.replace_modules(nn.GRUCell(3, 4))
    with pytest.raises(RuntimeError, match=r"hx dtype \(torch.float64\)"):
        cell(torch.randn(2, 3), torch.zeros(2, 4, dtype=torch.float64))
    with pytest.raises(RuntimeError):
        nn.GRUCell(3, 4)(torch.randn(2, 3, dtype=torch.float64))
    with pytest.raises(RuntimeError, match=r"input dtype \(torch.float64\)"):
        cell(torch.randn(2, 3, dtype=torch.float64))


def test_packed_input_with_initial_state_and_cells_with_state():
    # torch reorders hx by the packed batch's sorted_indices; so must the swap.
    torch.manual_seed(4)
    gru = nn.GRU(3, 5, num_layers=2, bidirectional=True).eval()
    lengths = torch.tensor([2, 6, 4])
    packed = pack_padded_sequence(torch.randn(6, 3, 3), lengths, enforce_sorted=False)
    h0 = torch.randn(4, 3, 5)
    with torch.no_grad():
        expected = gru(packed, h0)
    got = lft.replace_modules(gru)(packed, h0)
    torch.testing.assert_close(got[0].data, expected[0].data, rtol=2e-4, atol=2e-5)
    torch.testing.assert_close(got[1], expected[1], rtol=2e-4, atol=2e-5)
    cell = nn.LSTMCell(3, 4).eval()
    x, hx = torch.randn(2, 3), (torch.randn(2, 4), torch.randn(2, 4))
    with torch.no_grad():
        expected = cell(x, hx)
    for g, e in zip(lft.replace_modules(cell)(x, hx), expected):
        torch.testing.assert_close(g, e, rtol=2e-4, atol=2e-5)


class _SizedByItsLSTM(nn.Module):
    """Model code that reads the recurrent module's configuration in forward
    and calls flatten_parameters, as much torch code does."""

    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(3, 5, num_layers=2, bidirectional=True, batch_first=True)

    def forward(self, x):
        self.rnn.flatten_parameters()
        directions = 2 if self.rnn.bidirectional else 1
        shape = (self.rnn.num_layers * directions, x.shape[0], self.rnn.hidden_size)
        h0 = torch.full(shape, 0.1)
        return self.rnn(x, (h0, h0))[0]


def test_swapped_modules_answer_torch_configuration_attributes():
    import copy
    import pickle

    torch.manual_seed(5)
    model = _SizedByItsLSTM().eval()
    x = torch.randn(2, 4, 3)
    with torch.no_grad():
        expected = model(x)
    swapped = lft.replace_modules(copy.deepcopy(model))
    torch.testing.assert_close(swapped(x), expected, rtol=2e-4, atol=2e-5)
    rnn = swapped.rnn
    for name in ("mode", "input_size", "hidden_size", "num_layers", "bias", "batch_first",
                 "dropout", "bidirectional", "proj_size"):
        assert getattr(rnn, name) == getattr(model.rnn, name), name
    cell = lft.replace_modules(nn.RNNCell(3, 4, nonlinearity="relu"))
    assert (cell.input_size, cell.hidden_size, cell.bias, cell.nonlinearity) == (3, 4, True, "relu")
    # Configuration is fixed at the swap; weights are not tensors to edit in place.
    with pytest.raises(AttributeError, match="batch_first is fixed when the module is swapped"):
        rnn.batch_first = False
    with pytest.raises(AttributeError, match=r"weight_ih_l0 of a swapped LSTM is held by lstm_fast"):
        rnn.weight_ih_l0
    with pytest.raises(AttributeError, match="has no attribute 'no_such_thing'"):
        rnn.no_such_thing
    # Copies of a swapped model still run.
    for copied in (copy.deepcopy(swapped), pickle.loads(pickle.dumps(swapped))):
        torch.testing.assert_close(copied(x), expected, rtol=2e-4, atol=2e-5)


class _Tied(nn.Module):
    """One GRU reachable as encoder and decoder, and one LSTM under two parents."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.GRU(3, 5)
        self.decoder = self.encoder
        shared = nn.LSTM(5, 4)
        self.left = nn.Sequential(shared)
        self.right = nn.Sequential(shared)

    def forward(self, x):
        return self.right(self.encoder(x)[0])[0]


def test_tied_modules_stay_tied():
    torch.manual_seed(3)
    model = _Tied().eval()
    x = torch.randn(4, 2, 3)
    with torch.no_grad():
        expected = model(x)
    swapped = lft.replace_modules(model)
    torch.testing.assert_close(swapped(x), expected, rtol=2e-4, atol=2e-5)
    assert isinstance(swapped.encoder, lft.FastRecurrent)
    assert swapped.decoder is swapped.encoder
    assert swapped.left[0] is swapped.right[0]
    assert isinstance(swapped.left[0], lft.FastRecurrent)
    restored = lft.restore_modules(swapped)
    assert isinstance(restored.encoder, nn.GRU) and restored.decoder is restored.encoder
    assert isinstance(restored.left[0], nn.LSTM) and restored.left[0] is restored.right[0]
    # torch counts shared parameters once.
    assert len(list(restored.parameters())) == len(list(_Tied().parameters())) == 8


def test_torch_flags_given_as_ints():
    # torch builds LSTM(bidirectional=1) and GRUCell(bias=0) (its LSTM then
    # fails in forward; the swap runs it as the bool would).
    torch.manual_seed(4)
    x = torch.randn(3, 2, 3)
    loose = nn.LSTM(3, 4, bidirectional=1)
    strict = nn.LSTM(3, 4, bidirectional=True)
    strict.load_state_dict(loose.state_dict())
    cell = nn.GRUCell(3, 4, bias=0)
    for module, reference, inputs in ((loose, strict, (x,)), (cell, cell, (x[0],))):
        swapped = lft.replace_modules(module)
        with torch.no_grad():
            torch.testing.assert_close(swapped(*inputs), reference(*inputs), rtol=2e-4, atol=2e-5)
    assert lft.replace_modules(nn.LSTM(3, 4, bidirectional=1)).bidirectional is True
    # A cell's bias is read as a truth value by torch: None means no biases.
    cell = nn.GRUCell(3, 4, bias=None)
    with torch.no_grad():
        torch.testing.assert_close(lft.replace_modules(cell)(x[0]), cell(x[0]),
                                   rtol=2e-4, atol=2e-5)


def test_from_torch_does_not_repeat_the_dropout_warning():
    import warnings
    with pytest.warns(UserWarning, match="dropout"):
        module = nn.LSTM(3, 4, dropout=0.5)               # torch's own warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        copy = lstm_fast.LSTM.from_torch(module)
    assert copy.dropout == 0.5


def test_packed_lstm_input_of_another_dtype_raises_as_torch():
    # torch's LSTM skips its argument check for packed input: RuntimeError.
    from torch.nn.utils.rnn import pack_sequence
    packed = pack_sequence([torch.randn(3, 3, dtype=torch.float64)])
    with pytest.raises(RuntimeError):
        nn.LSTM(3, 4)(packed)
    with pytest.raises(RuntimeError, match=r"input dtype \(torch.float64\)"):
        lft.replace_modules(nn.LSTM(3, 4))(packed)
    with pytest.raises(ValueError):
        nn.GRU(3, 4)(packed)
    with pytest.raises(ValueError, match=r"input dtype \(torch.float64\)"):
        lft.replace_modules(nn.GRU(3, 4))(packed)


@pytest.mark.parametrize("dtype, atol", [(torch.float16, 4e-3), (torch.bfloat16, 3e-2)])
def test_float16_and_bfloat16_models_compute_through_float32(dtype, atol):
    # Such modules run float32 on weights rounded as torch's are and round
    # their results to the dtype: within that rounding (plus the torch
    # layers' own, here in half) of a float32 model with the same weights.
    torch.manual_seed(5)
    model = Tagger().eval().to(dtype)
    as_float32 = copy.deepcopy(model).float()
    swapped = lft.replace_modules(copy.deepcopy(model))
    assert swapped.encoder.dtype == dtype and swapped.cell.dtype == dtype
    x, lengths = torch.randn(6, 3, 5), torch.tensor([6, 2, 4])
    with torch.no_grad():
        expected = as_float32(x, lengths)
    for got, want in zip(swapped(x.to(dtype), lengths), expected):
        assert got.dtype == dtype
        torch.testing.assert_close(got.float(), want, rtol=0, atol=atol)
    checkpoint = model.state_dict()
    for name, value in swapped.state_dict().items():
        assert value.dtype == dtype and torch.equal(value, checkpoint[name]), name
    with pytest.raises(ValueError, match=rf"input dtype \(torch.float32\) does not match weight "
                                         rf"dtype \({dtype}\)"):
        swapped.encoder(x)
    assert not swapped.load_state_dict(checkpoint).missing_keys  # through float32, exactly
    restored = lft.restore_modules(copy.deepcopy(swapped))
    assert type(restored.encoder) is nn.LSTM and restored.encoder.weight_hh_l0.dtype == dtype
    swapped.float()  # the same weights, now float32 throughout
    assert swapped.encoder.dtype == torch.float32
    for got, want in zip(swapped(x, lengths), expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=2e-5)


def test_lazily_negated_tensors_run_as_in_torch():
    # x.conj().imag is a float32 view with torch's negation bit set: torch's
    # modules take it, and so must lstm_fast, its layers and swapped modules.
    torch.manual_seed(0)
    x = torch.randn(5, 2, 3, dtype=torch.cfloat).conj().imag
    assert x.dtype == torch.float32 and x.is_neg()
    gru = nn.GRU(3, 4)
    want = gru(x.resolve_neg())[0].detach().numpy()
    np.testing.assert_allclose(lft.replace_modules(gru)(x)[0].detach().numpy(), want,
                               rtol=1e-5, atol=1e-6)
    layer = lstm_fast.GRU.from_torch(nn.GRU(3, 4))
    np.testing.assert_array_equal(layer(x)[0], layer(x.resolve_neg().numpy())[0])
    plain = nn.GRU(3, 4).state_dict()
    lazy = {name: torch.complex(torch.zeros_like(v), -v).conj().imag for name, v in plain.items()}
    assert all(v.is_neg() for v in lazy.values())
    layer.load_state_dict(lazy)
    for name, value in layer.state_dict().items():
        np.testing.assert_array_equal(value, plain[name].numpy())
    # A complex tensor itself is refused as any complex input is.
    with pytest.raises(TypeError, match="input must hold floating-point values"):
        layer(torch.randn(5, 2, 3, dtype=torch.cfloat).conj())


def test_forward_hooks_move_with_the_swap_and_back():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 3), nn.GRU(3, 4))
    seen = []
    pre = model[1].register_forward_pre_hook(lambda module, args: seen.append(("pre", module)))
    model[1].register_forward_hook(lambda module, args, out: seen.append(("post", out[0].shape)))
    x = torch.randn(5, 2, 3)
    want = model(x)[0]
    assert [kind for kind, _ in seen] == ["pre", "post"]
    lft.replace_modules(model)
    seen.clear()
    torch.testing.assert_close(model(x)[0], want)
    assert seen == [("pre", model[1]), ("post", (5, 2, 4))]
    pre.remove()                        # the handle torch gave out still works
    seen.clear()
    model(x)
    assert seen == [("post", (5, 2, 4))]
    lft.restore_modules(model)
    assert type(model[1]) is nn.GRU
    seen.clear()
    model(x)
    assert seen == [("post", (5, 2, 4))]


def test_modules_with_backward_or_state_dict_hooks_are_refused():
    for register in (lambda m: m.register_full_backward_hook(lambda *a: None),
                     lambda m: m.register_state_dict_pre_hook(lambda *a: None),
                     lambda m: m._register_state_dict_hook(lambda *a: None)):
        model = nn.Sequential(nn.LSTM(3, 4), nn.GRU(4, 2))
        register(model[1])
        with pytest.raises(TypeError, match="hooks, which a swapped module could not run; "
                                            "remove them before replace_modules"):
            lft.replace_modules(model)
        assert type(model[0]) is nn.LSTM and type(model[1]) is nn.GRU   # nothing replaced
    model = lft.replace_modules(nn.Sequential(nn.GRU(3, 4)))
    model[0].register_full_backward_hook(lambda *a: None)
    with pytest.raises(TypeError, match="remove them before restore_modules"):
        lft.restore_modules(model)


def test_shape_errors_raise_torch_exception_classes():
    cases = [
        (nn.LSTM(3, 4), (torch.randn(5, 2, 7),)),                                   # input size
        (nn.LSTM(3, 4), (torch.randn(5, 2, 3), (torch.zeros(1, 3, 4), torch.zeros(1, 2, 4)))),
        (nn.LSTM(3, 4), (torch.randn(5, 2, 3, 1),)),                                # 4-D input
        (nn.GRU(3, 4), (torch.randn(5, 3), torch.zeros(1, 2, 4))),                  # hx 3-D
        (nn.GRUCell(3, 4), (torch.randn(2, 7),)),
        (nn.GRUCell(3, 4), (torch.randn(2, 3, 3),)),                                # 3-D input
        (nn.GRUCell(3, 4), (torch.randn(2, 3), torch.zeros(3, 4))),                 # batch
        (nn.GRUCell(3, 4), (torch.randn(2, 3), torch.zeros(1, 2, 4))),              # hx 3-D
        (nn.RNNCell(3, 4), (torch.randn(2, 3), torch.tensor(0.0))),                 # hx 0-D
        (nn.LSTMCell(3, 4), (torch.randn(2, 3), (torch.zeros(1, 2, 4), torch.zeros(2, 4)))),
        (nn.LSTMCell(3, 4), (torch.randn(2, 3), (torch.zeros(2, 4), torch.zeros(1, 2, 4)))),
        (nn.LSTM(3, 4), (torch.randn(5, 2, 3), (torch.zeros(2, 4), torch.zeros(1, 2, 4)))),
        (nn.LSTM(3, 4), (torch.randn(0, 2, 3),)),                                   # no steps
        (nn.GRU(3, 4, batch_first=True), (torch.randn(2, 0, 3),)),
        (nn.RNN(3, 4), (torch.randn(0, 3),)),                                       # unbatched
        (nn.LSTM(3, 4), (torch.randn(0, 2, 5),)),                   # no steps, bad input size
        (nn.GRU(3, 4), (torch.randn(0, 2, 3), torch.zeros(1, 5, 4))),  # no steps, bad hx
    ]
    for module, args in cases:
        with pytest.raises(Exception) as expected:
            module(*args)
        # The message too where it is torch's own (the checks' order).
        match = "sequence length" if "sequence length" in str(expected.value) else None
        with pytest.raises(expected.type, match=match) as got:
            lft.replace_modules(module)(*args)
        if match is None:
            assert "sequence length" not in str(got.value)


def test_empty_batch_runs_as_in_torch():
    # No time steps is an error in torch; an empty batch is not.
    for module in (nn.LSTM(3, 4), nn.GRU(3, 4, batch_first=True), nn.RNN(3, 4)):
        x = torch.randn(0, 5, 3) if module.batch_first else torch.randn(5, 0, 3)
        expected = module(x)
        got = lft.replace_modules(module)(x)
        assert got[0].shape == expected[0].shape
        states = got[1] if isinstance(got[1], tuple) else (got[1],)
        expected_states = expected[1] if isinstance(expected[1], tuple) else (expected[1],)
        assert [s.shape for s in states] == [s.shape for s in expected_states]


def test_layers_take_bfloat16_tensors():
    # NumPy has no bfloat16: such a tensor goes through float32, exactly.
    layer = lstm_fast.GRU(3, 4, seed=6)
    x = torch.randn(5, 2, 3).to(torch.bfloat16)
    np.testing.assert_array_equal(layer(x)[0], layer(x.float().numpy())[0])


def test_dtype_changes_and_restores_leave_torchs_generator_and_warnings_alone():
    # Rebuilding torch modules from the lstm_fast copy must not draw from
    # torch's generator (their random initialisation is overwritten anyway)
    # nor repeat torch's warning about dropout with one layer.
    with pytest.warns(UserWarning, match="dropout"):
        module = nn.LSTM(3, 4, dropout=0.5)
    swapped = lft.replace_modules(nn.Sequential(module))
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        swapped.half()
        swapped.double()
        restored = lft.restore_modules(swapped)
    assert torch.equal(torch.rand(3), expected)
    assert restored[0].weight_ih_l0.dtype == torch.float64


def test_checkpoint_arrays_round_to_a_half_modules_dtype():
    # Non-tensor values (torch would refuse them) still round as the weights
    # of a float16 module do, so state_dict() shows what the module runs.
    swapped = lft.replace_modules(nn.GRU(3, 4).half())
    values = {name: np.full(tuple(value.shape), 0.1, np.float32)
              for name, value in swapped.state_dict().items()}
    swapped.load_state_dict(values)
    x = torch.randn(5, 2, 3).half()
    for name, value in swapped.state_dict().items():
        assert torch.equal(value, torch.full(value.shape, 0.1).half()), name
    reference = nn.GRU(3, 4).half()
    reference.load_state_dict(swapped.state_dict())
    np.testing.assert_array_equal(swapped(x)[0].numpy(),
                                  lft.replace_modules(reference)(x)[0].numpy())


def test_modules_pickled_before_stored_dtypes_load():
    swapped = lft.replace_modules(nn.GRU(3, 4))
    del swapped.__dict__["_stored_as"]  # as an older lstm_fast pickled it
    assert swapped.dtype == torch.float32
    assert swapped(torch.zeros(2, 1, 3))[0].dtype == torch.float32


@pytest.mark.parametrize("make", [
    lambda: nn.GRU(5, 7, num_layers=2, bidirectional=True),
    lambda: nn.LSTM(5, 7, batch_first=True),
    lambda: nn.LSTMCell(5, 7),
])
def test_tracing_records_torchs_own_module(make):
    # lstm_fast's results would enter a trace as constants: the traced
    # model, and an ONNX export of it, must follow their input.
    torch.manual_seed(6)
    original = make().eval()
    swapped = lft.replace_modules(copy.deepcopy(original))
    shape = (3, 5) if isinstance(original, nn.LSTMCell) else (4, 3, 5)
    x, other = torch.randn(shape), torch.randn(shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's TracerWarnings about its own module
        traced = torch.jit.trace(swapped, x)
    first = lambda result: result[0] if isinstance(result, tuple) else result  # noqa: E731
    with torch.no_grad():
        expected = first(original(other))
    torch.testing.assert_close(first(traced(other)), expected)
    assert isinstance(swapped, lft._FastBase)                 # the model itself stays swapped
    torch.testing.assert_close(first(swapped(other)), expected, rtol=1e-4, atol=2e-5)
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    buffer = __import__("io").BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(swapped, (x,), buffer, dynamo=False, input_names=["x"])
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["x"]
    torch.testing.assert_close(torch.from_numpy(session.run(None, {"x": other.numpy()})[0]),
                               expected, rtol=1e-4, atol=2e-5)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_scripting_and_torch_export_are_refused_clearly():
    # TorchScript would put what __prepare_scriptable__ returns into the
    # model itself; torch.export runs on fake tensors. Both refuse, and the
    # model stays as it was.
    model = lft.replace_modules(nn.Sequential(nn.Linear(5, 5), nn.GRU(5, 7)))
    with pytest.raises(RuntimeError, match="TorchScript cannot compile: script a restored copy"):
        torch.jit.script(model)
    assert isinstance(model[1], lft.FastRecurrent)
    with pytest.raises(RuntimeError, match="torch.export cannot record lstm_fast's modules"):
        torch.export.export(model, (torch.randn(4, 3, 5),), strict=False)
    assert isinstance(model[1], lft.FastRecurrent)


def test_tensors_off_the_cpu_raise_as_torch():
    # torch refuses input and states on another device than its weights
    # (RuntimeError); the meta device stands in for an accelerator here.
    for make in (lambda: nn.LSTM(3, 4), lambda: nn.GRU(3, 4), lambda: nn.LSTMCell(3, 4),
                 lambda: nn.GRUCell(3, 4)):
        torch.manual_seed(7)
        original = make()
        swapped = lft.replace_modules(copy.deepcopy(original))
        cell = isinstance(original, nn.RNNCellBase)
        x = torch.randn((2, 3) if cell else (5, 2, 3))
        h = torch.randn((2, 4) if cell else (1, 2, 4))
        lstm = isinstance(original, (nn.LSTM, nn.LSTMCell))
        meta_state = ((h.to("meta"), h) if lstm else h.to("meta"))
        for args in ((x.to("meta"),), (x, meta_state)):
            with pytest.raises(RuntimeError) as torch_error:
                original(*args)
            with pytest.raises(RuntimeError) as swapped_error:
                swapped(*args)
            if not cell:  # torch's cells word it differently
                assert str(swapped_error.value).startswith(str(torch_error.value))
            assert "meta" in str(swapped_error.value)


def test_integer_checkpoints_load_as_torchs_copy_does():
    torch.manual_seed(8)
    original, swapped = nn.GRU(3, 4), lft.replace_modules(nn.GRU(3, 4))
    checkpoint = {name: torch.randint(-3, 4, value.shape) for name, value in
                  original.state_dict().items()}
    original.load_state_dict(checkpoint)
    swapped.load_state_dict(checkpoint)
    for name, value in swapped.state_dict().items():
        assert value.dtype == torch.float32
        torch.testing.assert_close(value, original.state_dict()[name], rtol=0, atol=0)
    complex_checkpoint = dict(checkpoint, weight_hh_l0=torch.zeros(12, 4, dtype=torch.complex64))
    with pytest.raises(RuntimeError, match="weight_hh_l0"):
        swapped.load_state_dict(complex_checkpoint)


def test_a_gradient_expected_through_a_swapped_module_warns():
    model = lft.replace_modules(nn.Sequential(nn.Linear(3, 3), nn.LSTM(3, 4)))
    model[1].register_forward_hook(lambda module, args, out: None)
    x = torch.randn(5, 2, 3)
    with pytest.warns(UserWarning, match="swapped LSTM is for inference: no gradient flows") as w:
        model(x)
    # At the model code's line, however deep torch's module machinery goes.
    assert w[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with torch.no_grad():
            model(x)
        with torch.inference_mode():
            model(x)
        model[1](x)                                        # x itself needs no gradient
