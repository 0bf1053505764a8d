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
