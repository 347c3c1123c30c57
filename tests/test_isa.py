"""cpu_info(), LSTM_FAST_ISA forcing, and agreement of results across ISAs."""
import numpy as np
import pytest

import lstm_fast
from helpers import MODES, make_hx, make_input, make_layer, make_rng, proj_for, split

KEYS = {"version", "isa_compiled", "isa_available", "isa_best", "isa_active", "isa_forced",
        "vector_width", "platform", "l2_cache_bytes"}


def test_cpu_info_keys():
    info = lstm_fast.cpu_info()
    assert KEYS <= set(info), KEYS - set(info)
    assert isinstance(info["version"], str) and info["version"]
    from lstm_fast import _core
    assert info["version"] == _core.version()
    names = set(_core.isa_names())
    assert {"portable", "avx2", "avx512"} <= names
    assert "portable" in info["isa_compiled"] and "portable" in info["isa_available"]
    assert set(info["isa_available"]) <= set(info["isa_compiled"]) <= names
    assert info["isa_best"] in info["isa_available"]
    assert info["isa_best"] == _core.isa_best()
    assert info["isa_active"] == info["isa_best"]          # env cleared by the autouse fixture
    assert info["isa_forced"] is None
    for name in names:
        assert _core.isa_compiled(name) == (name in info["isa_compiled"])
        assert _core.isa_available(name) == (name in info["isa_available"])
    # best is the most capable available one, in the core's order
    order = list(_core.isa_names())
    assert order.index(info["isa_best"]) == max(order.index(n) for n in info["isa_available"])
    for name in info["isa_available"]:
        w = info["vector_width"][name]
        assert w["float32"] >= 1 and w["float64"] >= 1 and w["float32"] >= w["float64"]
        assert w["float32"] == _core.isa_vector_width(name, np.float32)
        assert w["float64"] == _core.isa_vector_width(name, np.float64)
    # CPUID 0x80000006 on x86-64 (KiB units; a hypervisor may leave it 0);
    # elsewhere what the C library reports, or 0
    assert info["l2_cache_bytes"] == _core.l2_cache_bytes() >= 0
    if info["machine"].lower() in ("x86_64", "amd64") and info["l2_cache_bytes"]:
        assert info["l2_cache_bytes"] >= 64 * 1024 and info["l2_cache_bytes"] % 1024 == 0


def test_cpu_info_is_fresh_copy():
    """Callers may mutate what they get without changing what the next caller sees."""
    a = lstm_fast.cpu_info()
    a["vector_width"].clear()
    a["isa_best"] = "bogus"
    b = lstm_fast.cpu_info()
    assert b["isa_best"] != "bogus" and b["vector_width"]


def test_isa_forced(isa):
    info = lstm_fast.cpu_info()
    assert info["isa_active"] == isa and info["isa_forced"] == isa
    for mode in ("lstm", "gru", "rnn_tanh"):
        layer = make_layer(mode, 3, 4)
        assert layer.isa == isa
        # What runs: the ISA the engine's kernel table names itself by.
        assert layer._current_engine().isa == isa
    assert lstm_fast.LSTMCell(3, 4)._current_engine().isa == isa


def test_auto_is_best(monkeypatch):
    monkeypatch.setenv("LSTM_FAST_ISA", "auto")
    best = lstm_fast.cpu_info()["isa_best"]
    assert make_layer("lstm", 3, 4).isa == best
    assert lstm_fast.cpu_info()["isa_active"] == best
    monkeypatch.delenv("LSTM_FAST_ISA")
    assert make_layer("gru", 3, 4).isa == best


def test_isa_names_ignore_spaces_and_case(monkeypatch):
    best = lstm_fast.cpu_info()["isa_best"]
    for value, isa in ((" Portable ", "portable"), ("AUTO", best), (" auto", best)):
        monkeypatch.setenv("LSTM_FAST_ISA", value)
        assert make_layer("lstm", 3, 4).isa == isa
        forced = None if value.strip().lower() == "auto" else isa
        assert lstm_fast.cpu_info()["isa_forced"] == forced
    monkeypatch.setenv("LSTM_FAST_ISA", " AVX3")  # quoted as set
    with pytest.raises(ValueError, match="LSTM_FAST_ISA=' AVX3' is not a known ISA"):
        make_layer("lstm", 3, 4)


def test_env_read_at_engine_build(monkeypatch):
    """Changing LSTM_FAST_ISA affects layers built afterwards, not existing ones."""
    available = lstm_fast.cpu_info()["isa_available"]
    monkeypatch.setenv("LSTM_FAST_ISA", "portable")
    a = make_layer("lstm", 3, 4)
    monkeypatch.setenv("LSTM_FAST_ISA", available[-1])
    b = make_layer("lstm", 3, 4)
    assert a.isa == "portable" and b.isa == available[-1]


def test_show_config(capsys):
    lstm_fast.show_config()
    out = capsys.readouterr().out
    info = lstm_fast.cpu_info()
    assert info["version"] in out
    for name in info["isa_available"]:
        assert name in out


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("mode", MODES)
def test_results_agree_across_isas(monkeypatch, mode, dtype):
    available = lstm_fast.cpu_info()["isa_available"]
    if len(available) < 2:
        pytest.skip("only one ISA available")
    T, B, I, H, L = 9, 7, 19, 37, 2             # H not a multiple of any vector width
    P = proj_for(mode, H)
    rng = make_rng("cross-isa", mode)
    x = make_input(rng, T, B, I, dtype)
    hx = make_hx(mode, rng, 2 * L, B, H, P, dtype)
    lengths = [9, 3, 0, 7, 1, 9, 5]
    results = {}
    for name in available:
        monkeypatch.setenv("LSTM_FAST_ISA", name)
        layer = make_layer(mode, I, H, num_layers=L, bidirectional=True, dtype=dtype, seed=17)
        assert layer.isa == name
        results[name] = split(mode, layer(x, hx, lengths))
    ref = results["portable"]
    atol = 2e-5 if dtype == np.float32 else 1e-12
    for name, res in results.items():
        for a, b in zip(res, ref):
            if b is not None:
                np.testing.assert_allclose(a, b, rtol=atol * 5, atol=atol, err_msg=name)
