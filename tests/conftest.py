"""Shared test helpers: the tolerances (stated once, here), sizes and a torch fixture."""
import os

import numpy as np
import pytest

from fastadapt.kernels.cpu import SERIAL_BELOW

# Sizes every parity test runs: empty, scalar-like, odd, primes, both sides of the
# serial/parallel threshold, and a non-1-D shape.
SIZES = [0, 1, 7, 97, 1009, SERIAL_BELOW - 1, SERIAL_BELOW + 1, (3, 5, 7)]
DTYPES = [np.float32, np.float64]

# Examples per hypothesis test; raise it for a thorough run (e.g. =2000).
HYPOTHESIS_EXAMPLES = int(os.environ.get("FASTADAPT_HYPOTHESIS_EXAMPLES", "30"))

# The same examples in every run (a CI result does not depend on the draw);
# FASTADAPT_HYPOTHESIS_EXPLORE=1 draws fresh ones, for a search beyond them.
if os.environ.get("FASTADAPT_HYPOTHESIS_EXPLORE") != "1":
    from hypothesis import settings as _settings
    _settings.register_profile("fastadapt", derandomize=True, database=None)
    _settings.load_profile("fastadapt")

# Tolerances, in one place. A result passes when, elementwise,
#     |actual - expected| <= TOLERANCE[dtype] * (|expected| + max|expected|)
# i.e. a relative error, plus the same relative error of the array's largest
# magnitude: after N steps an element carries rounding errors from the operands
# it was computed from (the parameter, g, g**2 ...), whose size is the array's
# scale, not the element's own (p + delta can cancel to near zero).
#
# float64: 64 ulps (1.4e-14). Both sides round every operation to float64, but
#   torch's CPU kernels fuse multiply-adds (lerp, addcmul, addcdiv, add with alpha)
#   and fastadapt does not, so each step differs by about an ulp. Measured worst
#   over 20 steps, every rule and option: 6.4 ulps (Adadelta's acc_delta, which
#   squares an error-carrying ratio); 64 leaves a 10x margin and still catches an
#   Adam learning rate off by 1e-11 of itself (see test_functional's mutants).
# float32: 64 ulps (7.6e-6), the same budget in float32 ulps. Measured worst over
#   20 steps and 2e5 elements, against torch and against the float64 reference:
#   17 ulps of the array's scale (Adadelta with rho = 0; AdamW, whose
#   p * (1 - lr * wd) rounds every step). This budget is loose only for the
#   parameter's response to lr: 20 Adam steps of 1e-3 from |p| ~ 1 hide a 1e-3
#   relative lr error inside p's float32 rounding (1e-2 is caught). Every rule and
#   option also runs in float64, whose budget is 1e9 times smaller; the states
#   (exp_avg_sq, ...) are compared at 64 float32 ulps, where a perturbed beta shows.
TOLERANCE = {np.dtype(np.float32): 64 * float(np.finfo(np.float32).eps),
             np.dtype(np.float64): 64 * float(np.finfo(np.float64).eps)}


def assert_close(actual, expected, dtype, what=""):
    """Assert ``actual`` matches ``expected`` within ``TOLERANCE[dtype]`` (see above)."""
    tol = TOLERANCE[np.dtype(dtype)]
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    if expected.size == 0:
        return
    scale = float(np.max(np.abs(expected)))
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale,
                               err_msg=f"{what} ({np.dtype(dtype)}, scale {scale:.3g})")


def assert_same_result(actual, expected, dtype, what=""):
    """Compare a (param, state dict) pair with another, every state buffer included."""
    (param, state), (ref_param, ref_state) = actual, expected
    assert set(state) == set(ref_state), f"{what}: state {sorted(state)} vs {sorted(ref_state)}"
    assert_close(param, ref_param, dtype, f"{what} param")
    for name in state:
        assert_close(state[name], ref_state[name], dtype, f"{what} {name}")


def snapshot(arrays):
    """Byte copies of the given arrays, to prove later that nothing was written."""
    return [np.array(a, copy=True) if isinstance(a, np.ndarray) else a for a in arrays]


def assert_unchanged(arrays, before):
    for i, (a, b) in enumerate(zip(arrays, before)):
        if isinstance(a, np.ndarray):
            assert a.tobytes() == b.tobytes(), f"argument {i} was modified"
        else:
            assert a == b, f"argument {i} was modified"


@pytest.fixture(scope="session")
def torch():
    """torch, for the tests that compare with it (fastadapt itself never needs it)."""
    return pytest.importorskip("torch")
