"""The whole-step benchmark: its rivals compute what they claim, on tiny sizes."""
import numpy as np
import pytest

import fastadapt
from fastadapt.benchmark import _pipeline
from fastadapt.kernels import reduce as kernels

from conftest import assert_close


@pytest.mark.parametrize("n", [1, 7, 3 * kernels.CHUNK + 5])
def test_read_only_roofline_reads_every_element(n):
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    starts, stops = kernels.chunks(n)
    out = np.empty(starts.size, np.float32)
    kernels.READ_ONLY.parallel(x, starts, stops, out)
    # float32 partial sums of up to 2**14 normal values, reassociated: ~1e-4 relative
    assert float(out.astype(np.float64).sum()) == pytest.approx(
        float(x.astype(np.float64).sum()), rel=1e-4, abs=1e-3)


def test_torch_pipelines_compute_fastadapts_step(torch):
    rng = np.random.default_rng(0)
    shapes = [(7,), (3, 5), (1,)]
    params = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    opt = fastadapt.Adam(params, max_grad_norm=1.0)
    for _ in range(3):
        opt.step(grads, grad_scale=1.0)
    steps = _pipeline._torch_pipelines(torch, params, grads, 1.0)
    for mode, step in steps.items():
        for _ in range(3):
            step()
        for p, tp in zip(opt.params, step.params):
            assert_close(p, tp.detach().numpy(), np.float32, mode)


def test_sections_report_bytes_and_ratios():
    lines = []
    norm = _pipeline.norm_pass(n=1000, budget_s=0.01, min_rounds=2, progress=lines.append)
    assert norm["bytes_per_element"] == 4 and norm["pct_roofline"] > 0
    assert set(norm["results"]) == {"grad_norm", "read_only_roofline"}
    step = _pipeline.whole_step(n=1000, budget_s=0.01, min_rounds=2, progress=lines.append)
    assert step["bytes_per_element"]["fastadapt"] == 32
    assert step["bytes_per_element"]["torch_fused"] == 48
    assert step["results"]["fastadapt"]["speedup_vs"] == 1.0
    assert len(lines) == 2 and "whole step" in lines[1]
