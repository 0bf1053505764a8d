"""``grad_scale`` on every functional step: the gradient is divided by it inside the
kernel, as ``GradScaler.unscale_`` (``grad * (1 / scale)``) followed by the step."""
import numpy as np
import pytest

import fastadapt

import optim_cases as cases
from conftest import DTYPES, assert_same_result, assert_unchanged, snapshot

SCALES = [1.0, 2.0, 3.0, 1000.0, 2.0 ** 10, 2.0 ** 16]


def _cases():
    return [pytest.param(name, config, id=f"{name}[{cases.config_id(config)}]")
            for name in fastadapt.RULES
            for config in ({}, cases.EVERY_STATE[name], {"maximize": True})]


def _run(name, config, param0, grads, scale, unscale_first):
    """fastadapt's step on scaled gradients, either unscaled in the kernel
    (grad_scale=scale) or, as torch's pipeline does, by ``grad * (1 / scale)`` first."""
    if unscale_first:
        grads = [g * (1.0 / scale) for g in grads]      # GradScaler.unscale_
        return cases.run_fastadapt(name, config, param0, grads)
    return cases.run_fastadapt(name, {**config, "grad_scale": scale}, param0, grads)


@pytest.mark.parametrize("name, config", _cases())
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("scale", SCALES, ids=str)
def test_grad_scale_is_unscaling_first(name, config, dtype, scale):
    param0, grads = cases.problem(97, dtype, 5, steps=5)
    scaled = [(g * dtype(scale)).astype(dtype) for g in grads]
    actual = _run(name, config, param0, scaled, scale, unscale_first=False)
    expected = _run(name, config, param0, scaled, scale, unscale_first=True)
    assert_same_result(actual, expected, dtype, f"{name} grad_scale={scale}")


@pytest.mark.parametrize("name, config", [p for p in _cases()
                                          if fastadapt.RULES[p.values[0]].in_torch])
@pytest.mark.parametrize("scale", [1.0, 2.0 ** 7, 2.0 ** 16], ids=str)
def test_grad_scale_matches_torchs_unscale_then_step(torch, name, config, scale):
    dtype = np.float32
    param0, grads = cases.problem(97, dtype, 9, steps=5)
    scaled = [(g * dtype(scale)).astype(dtype) for g in grads]
    actual = cases.run_fastadapt(name, {**config, "grad_scale": scale}, param0, scaled)
    unscaled = [(torch.from_numpy(g) * (1.0 / scale)).numpy() for g in scaled]
    expected = cases.run_torch(name, config, param0, unscaled)
    assert_same_result(actual, expected, dtype, f"{name} vs torch, grad_scale={scale}")


def test_a_power_of_two_scale_is_bit_identical_to_unscaling():
    param0, grads = cases.problem(1001, np.float32, 3, steps=3)
    scaled = [g * np.float32(2.0 ** 12) for g in grads]
    a, _ = _run("adam", {}, param0, scaled, 2.0 ** 12, unscale_first=False)
    b, _ = _run("adam", {}, param0, grads, 1.0, unscale_first=False)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("value, error", [
    (0.0, ValueError), (-1.0, ValueError), (float("inf"), ValueError),
    (float("nan"), ValueError), ("2", TypeError), (True, TypeError)], ids=repr)
def test_bad_grad_scale(value, error):
    arrays = {a: np.ones(3) for a in ("param", "grad", "exp_avg", "exp_avg_sq")}
    before = snapshot(list(arrays.values()))
    with pytest.raises(error, match="grad_scale"):
        fastadapt.adam_step(**arrays, step=1, grad_scale=value)
    assert_unchanged(list(arrays.values()), before)
