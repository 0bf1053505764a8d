"""grad_norm and the whole step on a real NVIDIA GPU (skipped without one).

float32: the GPU's partials equal the CPU's bit for bit, whatever the GPU's
size: the square of a float32 is exact in float64, so NVVM's fused
multiply-add rounds as the CPU's multiply then add (kernels/reduce.py), and
the chunks and the lanes' order are the same. float64: each square rounds
inside the fused multiply-add, so the two differ by rounding (``EXACT_RTOL``
of test_norm). The whole step is compared with torch's CUDA pipeline at the
float32 budget, as in test_wholestep.
"""
import math
import os

import numpy as np
import pytest

if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
    pytest.skip("the CUDA simulator is on; these tests need a real GPU",
                allow_module_level=True)
pytest.importorskip("numba_cuda", reason="numba-cuda is not installed (fastadapt[cuda])")
from numba import cuda  # noqa: E402

if not cuda.is_available():
    pytest.skip("no CUDA GPU or driver", allow_module_level=True)

import fastadapt  # noqa: E402
from fastadapt.kernels import reduce as kernels  # noqa: E402

from conftest import assert_close  # noqa: E402

pytestmark = pytest.mark.gpu
EXACT_RTOL = 2e-14


@pytest.fixture(scope="module")
def torch():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch was built without CUDA")
    return torch


@pytest.mark.parametrize("n", [1, 7, 257, kernels.CHUNK + 1, 2000 * kernels.CHUNK + 13])
def test_float32_norm_equals_the_cpus(torch, n):
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    y = np.random.default_rng(n + 1).standard_normal(33).astype(np.float32)
    expected = fastadapt.grad_norm(x, y)
    assert fastadapt.grad_norm(torch.from_numpy(x).cuda(), torch.from_numpy(y).cuda()) \
        == expected
    assert fastadapt.grad_norm(cuda.to_device(x), cuda.to_device(y)) == expected


def test_float64_norm_and_non_finite(torch):
    x = np.random.default_rng(0).standard_normal(3 * kernels.CHUNK + 5)
    assert fastadapt.grad_norm(torch.from_numpy(x).cuda()) == pytest.approx(
        fastadapt.grad_norm(x), rel=EXACT_RTOL)
    for where in (0, x.size // 2, x.size - 1):
        y = x.copy()
        y[where] = np.inf
        assert fastadapt.grad_norm(torch.from_numpy(y).cuda()) == math.inf
        y[(where + 3) % y.size] = np.nan
        assert math.isnan(fastadapt.grad_norm(torch.from_numpy(y).cuda()))


def test_whole_step_matches_torchs_cuda_pipeline(torch):
    rng = np.random.default_rng(0)
    shapes = [(7,), (300, 5), (1,), (1000,)]
    params0 = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    scale, max_norm = 1024.0, 1.0
    grads = [[(rng.standard_normal(s) * scale).astype(np.float32) for s in shapes]
             for _ in range(5)]
    grads[2][1][4, 2] = np.inf                       # step 3 is skipped
    opt = fastadapt.Adam([torch.from_numpy(p).cuda() for p in params0], max_grad_norm=max_norm)
    skipped = []
    for g in grads:
        opt.step([torch.from_numpy(a).cuda() for a in g], grad_scale=scale)
        skipped.append(opt.step_skipped)
    tparams = [torch.from_numpy(p).cuda().requires_grad_() for p in params0]
    topt = torch.optim.Adam(tparams, foreach=False)
    scaler = torch.amp.GradScaler("cuda", init_scale=scale)
    for g in grads:
        scaler.scale(torch.ones((), device="cuda"))
        for p, a in zip(tparams, g):
            p.grad = torch.from_numpy(a).cuda()
        scaler.unscale_(topt)
        torch.nn.utils.clip_grad_norm_(tparams, max_norm)
        scaler.step(topt)
        scaler.update(scale)
    assert skipped == [False, False, True, False, False]
    assert opt.state[0]["step"] == 4
    for p, tp in zip(opt.params, tparams):
        assert_close(p.cpu().numpy(), tp.detach().cpu().numpy(), np.float32)
