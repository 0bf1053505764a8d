"""``fastadapt demo``: the table is complete and shows what it claims to show."""
import subprocess
import sys

import numpy as np
import pytest

from fastadapt import demo

NAMES = ["SGD", "SGD-momentum", "AdaGrad", "RMSprop", "Adadelta", "Adam", "AdamW", "AMSGrad",
         "Adamax", "RAdam", "NAdam", "ASGD", "Rprop", "Lion"]


def _table_rows(out):
    rows = {}
    for line in out.splitlines():
        fields = line.split()
        if fields and fields[0] in NAMES:
            rows[fields[0]] = fields
    return rows


@pytest.mark.parametrize("seed", [0, 1])
def test_table_and_adaptive_methods_beat_sgd(capsys, seed):
    assert demo.main(["--steps", "150", "--seed", str(seed), "--no-plot"]) == 0
    out = capsys.readouterr().out
    rows = _table_rows(out)
    assert list(rows) == NAMES
    final = {name: float(fields[2]) for name, fields in rows.items()}
    for name in demo.ADAPTIVE:
        assert final[name] < final["SGD"], (name, final)
    assert f"{len(demo.ADAPTIVE)} of {len(demo.ADAPTIVE)} adaptive methods" in out
    best = min(final, key=final.get)
    assert f"the best optimizer, {best}," in out


def test_learning_rates_are_from_the_grid_and_not_at_its_edge():
    result = demo.run(steps=100)
    for row in result["rows"]:
        assert row["lr"] in demo.LR_GRID
        if row["name"] == "Rprop":      # its lr is only the first step size: it adapts its own
            continue
        assert demo.LR_GRID[0] < row["lr"] < demo.LR_GRID[-1], row["name"]   # grid wide enough


def test_without_matplotlib_prints_a_note(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)      # import matplotlib fails
    path = tmp_path / "curves.png"
    assert demo.main(["--steps", "5", "--plot", str(path)]) == 0
    out = capsys.readouterr().out
    assert "matplotlib is not installed" in out and "SGD-momentum" in out
    assert not path.exists()


def test_plot_written_with_matplotlib(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "curves.png"
    assert demo.main(["--steps", "5", "--plot", str(path)]) == 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(path) in capsys.readouterr().out


def test_command_line():
    result = subprocess.run([sys.executable, "-m", "fastadapt", "demo", "--steps", "3",
                             "--no-plot"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert set(_table_rows(result.stdout)) == set(NAMES)


def test_spikes_counts_rises_above_ten_times_the_best_gap_so_far():
    f_star = 1.0
    losses = 1.0 + np.array([1.0, 0.1, 0.01, 0.05, 0.2, 0.001, 0.015, 0.0005])
    count, (step, gap, before) = demo.spikes(losses, f_star, start=1)
    assert count == 2                    # step 4 (0.2 > 10 x 0.01), step 6 (0.015 > 10 x 0.001)
    assert step == 4 and gap == pytest.approx(0.2) and before == pytest.approx(0.01)
    assert demo.spikes(1.0 + np.array([1.0, 0.5, 0.25]), f_star, start=0) == (0, None)


def test_narrative_explains_the_stability_bound_and_the_spikes():
    result = demo.run(steps=1000, names=("SGD", "Adam", "AdamW", "RAdam"))
    text = demo.narrative(result)
    assert result["lr_cap"] < result["lr_cap_end"]          # curvature falls as the fit improves
    sgd = next(r for r in result["rows"] if r["name"] == "SGD")
    if result["lr_cap"] < sgd["lr"] <= result["lr_cap_end"]:
        assert "lies between the two" in text
    assert "stable only below" not in text
    spiky = [r["name"] for r in result["rows"] if r["spikes"][0]]
    assert "Adam" in spiky                                  # what the demo sets out to explain
    assert "Loss spikes after reaching the target" in text and "second-moment" in text
    cosine = result["adam_cosine"]
    assert cosine["spikes"][0] == 0                         # the claimed remedy, measured
    assert "annealed to 0" in text
