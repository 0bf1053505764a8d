"""The ``storage`` section of ``fastadapt bench`` (the issue's modes table):
every mode is measured against torch fused float32 Adam in one run, with the
bytes per element the mode moves, and the report renders it."""
import pytest

from fastadapt.benchmark import _report, _storage_modes


def test_storage_section_measures_every_mode():
    pytest.importorskip("ml_dtypes")
    data = _storage_modes.storage(3000, budget_s=0.05, min_rounds=2, progress=lambda s: None,
                                  small=(1000,))
    modes = {r["mode"]: r for r in data["rows"]}
    assert set(_storage_modes.MODES) <= set(modes)
    expected = {"fp32": 28, "bf16_state": 20, "bf16_sr": 14, "bf16_master": 30}
    for key, b in expected.items():
        assert modes[key]["bytes_per_element"] == b
    # 8-bit: 4r+4w param, 4r grad, per state 1r+1w code and 8 bytes per 256 of absmax
    assert modes["int8_state"]["bytes_per_element"] == pytest.approx(16 + 16 / 256)
    for r in data["rows"]:
        assert r["median_s"] > 0
    if data["torch_unavailable"] is None:
        assert modes["torch_fused_fp32"]["x_torch_fused_fp32"] == pytest.approx(1.0)
        assert "x_torch_fused_bf16" in modes["bf16_sr"]
        assert "x_torch_master" in modes["bf16_master"]
    assert [row["n"] for row in data["per_call"]] == [1000]
    table = _report.storage_table(data)
    text = table.text()
    assert "8-bit state" in text and "16.06" in text
    assert "| fp32 param + grad, bf16 state |" in table.markdown()


def test_accuracy_study_gradients_and_findings():
    """The study's MLP gradients against central differences (float64), and
    what it shows on this problem: float32 master weights, stochastic
    rounding, bfloat16 and 8-bit state end within 5% of float32's loss, and
    bfloat16 params with round-to-nearest end measurably worse than with
    stochastic rounding (updates below half an ulp are lost)."""
    import numpy as np
    from fastadapt.benchmark import _accuracy as A
    pytest.importorskip("ml_dtypes")
    x, y, start = A._problem(1, n=32, d=3, hidden=4)
    x, y = x.astype(np.float64), y.astype(np.float64)

    def loss64(params):
        w1, b1, w2, b2 = params
        return np.mean((np.tanh(x @ w1 + b1) @ w2 + b2 - y) ** 2)
    params = [p.astype(np.float64) for p in start]
    _, grads = A.loss_and_grads(x.astype(np.float32), y.astype(np.float32), start)
    for k, p in enumerate(params):
        for idx in [(0,) * p.ndim, tuple(s - 1 for s in p.shape)]:
            h = 1e-6
            plus = [q.copy() for q in params]
            minus = [q.copy() for q in params]
            plus[k][idx] += h
            minus[k][idx] -= h
            numeric = (loss64(plus) - loss64(minus)) / (2 * h)
            assert grads[k][idx] == pytest.approx(numeric, rel=1e-3, abs=1e-6)
    result = A.run(steps=300)
    ratio = {r["mode"]: r["ratio"] for r in result["rows"]}
    assert ratio["fp32"] == 1.0
    for mode in ("bf16_state", "int8_state", "bf16_sr", "bf16_master"):
        assert ratio[mode] < 1.05, (mode, ratio)
    assert ratio["bf16_nearest"] > ratio["bf16_sr"] * 1.1, ratio
    assert result["rows"][0]["final_loss"] < 0.1 * result["initial_loss"]
    assert "x float32's" in _report.accuracy_table(result).text()


def test_accuracy_study_on_the_demo_problem():
    """The logistic problem's float32 gradients against central differences of
    its float64 loss, and what the study shows there: stochastic rounding,
    master weights and bfloat16 state end within 10% of float32's
    suboptimality, while 8-bit state (ten weights with second moments eight
    decades apart in one 256-element block, so the small ones quantize to
    zero) ends more than ten times worse."""
    import numpy as np
    from fastadapt.benchmark import _accuracy as A
    pytest.importorskip("ml_dtypes")
    from fastadapt import demo
    x, y, _ = demo.make_problem(0)
    start, gap_and_grads = A._logistic(0)
    w = np.linspace(-1e-2, 1e-2, start[0].size).astype(np.float32)
    b = np.array([0.1], np.float32)
    _, (gw, gb) = gap_and_grads([w, b])
    w64, b64 = w.astype(np.float64), b.astype(np.float64)
    for k in range(w.size):
        h = 1e-6 / demo.make_problem(0)[2][k]       # a step in standardised units
        plus, minus = w64.copy(), w64.copy()
        plus[k] += h
        minus[k] -= h
        numeric = (demo.loss_and_grad(x, y, plus, b64)[0]
                   - demo.loss_and_grad(x, y, minus, b64)[0]) / (2 * h)
        assert gw[k] == pytest.approx(numeric, rel=1e-3, abs=1e-6)
    result = A.run(problem="logistic")
    assert result["metric"] == "final f - f*" and result["initial_loss"] > 0
    ratio = {r["mode"]: r["ratio"] for r in result["rows"]}
    for mode in ("bf16_state", "bf16_sr", "bf16_master"):
        assert abs(ratio[mode] - 1) < 0.1, (mode, ratio)
    assert ratio["int8_state"] > 10, ratio
    assert all(r["final_loss"] >= 0 for r in result["rows"])     # f* is the minimum


def test_accuracy_report_and_plot(tmp_path):
    pytest.importorskip("ml_dtypes")
    from fastadapt.benchmark import _accuracy as A
    data = A.study(steps=5, modes=["fp32", "bf16_sr"])
    assert [r["problem"] for r in A.problems(data)] == list(A.PROBLEMS)
    old = A.run(steps=5, modes=["fp32"])                # one run, as older JSON holds it
    assert A.problems(old) == [old]
    texts = [_report.accuracy_table(r).text() for r in A.problems(data)]
    assert "final loss" in texts[0] and "final f - f*" in texts[1]
    pytest.importorskip("matplotlib")
    path = tmp_path / "acc.png"
    from fastadapt.benchmark import _plot
    assert _plot.accuracy(data, str(path)) is None
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
