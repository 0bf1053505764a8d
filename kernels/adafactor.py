"""Adafactor's CPU kernels: one tensor per call, with per-tensor reductions.

Adafactor (torch.optim.Adafactor, single-tensor path) is not an elementwise
update: each step needs the parameter's RMS (for ``alpha``), the row and
column means of ``grad**2`` (a tensor of dim >= 2 keeps its second moment
factored into ``row_var`` and ``col_var``, reductions over the last two
dims) and the RMS of the update (the clipping denominator). So it has no
element function in ``kernels/math.py``; each kernel here runs the whole step
of one tensor, in passes:

factored (``param`` viewed as ``(batch, rows, cols)``):
  1. row sums of ``g**2`` (parallel over rows) and column sums (parallel
     over blocks of columns, rows in order), each lerped into its factor;
  2. the update ``g / sqrt(max(var, eps1**2))`` into a buffer of the
     tensor's size (as torch materializes it), parallel over rows;
  3. the parameter's and the update's sums of squares (serial sweeps, in
     torch's order), then the in-place update, in parallel.
vector (``param`` 1-D): the variance's lerp and the update in one parallel
pass; then 3.

Precision is torch's on the CPU: float32 tensors are reduced in float32
(``torch.norm`` accumulates in the tensor's dtype there; its AVX2 kernel
keeps one vector of running sums, 8 float32 or 4 float64, added in order,
then the tail: ``_lane_sum`` does the same, so the norms match torch's bit
for bit on an AVX2 build, except for some small tensors, where torch's
comes out an ulp away), column sums of a 2-D norm go row by row (as
torch's), ``lerp_`` and ``add_(alpha=)`` are fused multiply-adds (as torch's
vectorized kernels), and the per-tensor scalars (``alpha``, the clipping
denominator) are computed in float64 like torch's Python floats, then cast
to the tensor's dtype. The serial sweeps keep torch's summation order (one
read of ``param`` and one of the update); everything else runs on Numba's
thread pool.
"""
import math

import numpy as np
from numba import njit, prange

from .cpu import SERIAL_BELOW, Driver
from .sparse import fma

if __name__ != "fastadapt.kernels.adafactor":
    # as in cpu.py: Numba's disk cache records the module name
    raise ImportError(f"import this module as fastadapt.kernels.adafactor, not {__name__}")

#: Columns per parallel task of the column sums.
_COL_BLOCK = 256


@njit(inline="always", error_model="numpy")
def _lerp(start, end, weight, weight_m1, small):
    """torch's vectorized ``lerp``: ``fma(w, end - start, start)`` for |w| < 0.5,
    else ``fma(w - 1, end - start, end)``."""
    if small:
        return fma(weight, end - start, start)
    return fma(weight_m1, end - start, end)


@njit(inline="always", error_model="numpy")
def _lane_sum(a, lo, hi, zero, square, width):
    """``sum(a[lo:hi]**2)`` (``sum(a[lo:hi])`` unless ``square``) in ``a``'s
    dtype, in the order of torch's AVX2 reductions: ``width`` running sums (8
    for float32, 4 for float64: one 256-bit vector) over whole groups, added
    to the first in order, then the tail one by one."""
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = zero
    i = lo
    while i + width <= hi:
        x0, x1, x2, x3 = a[i], a[i + 1], a[i + 2], a[i + 3]
        if square:
            x0, x1, x2, x3 = x0 * x0, x1 * x1, x2 * x2, x3 * x3
        s0 += x0
        s1 += x1
        s2 += x2
        s3 += x3
        if width == 8:
            x4, x5, x6, x7 = a[i + 4], a[i + 5], a[i + 6], a[i + 7]
            if square:
                x4, x5, x6, x7 = x4 * x4, x5 * x5, x6 * x6, x7 * x7
            s4 += x4
            s5 += x5
            s6 += x6
            s7 += x7
        i += width
    # the unused sums of width 4 are +0: adding them changes nothing (sums >= 0)
    s = ((((((s0 + s1) + s2) + s3) + s4) + s5) + s6) + s7
    while i < hi:
        x = a[i]
        s += x * x if square else x
        i += 1
    return s


@njit(inline="always", error_model="numpy")
def _clamp_min(x, low):
    """torch's ``clamp_(min=low)``: NaN stays NaN."""
    return low if x < low else x


@njit(inline="always", error_model="numpy")
def _step_size(p_norm, u_norm, eps2, rho, root_numel, d):
    """torch's Python-float scalars: ``-alpha / denom`` (``max`` as Python's:
    a NaN norm loses to the first argument)."""
    rms = float(p_norm) / root_numel
    alpha = (rms if rms > eps2 else eps2) * rho
    ratio = float(u_norm) / (root_numel * d)
    denom = ratio if ratio > 1.0 else 1.0
    return -alpha / denom


def factored(param, grad, row_var, col_var, scratch, f, h):
    """One Adafactor step of a tensor of dim >= 2, viewed as ``(batch, rows,
    cols)``; ``row_var`` is ``(batch, rows)``, ``col_var`` ``(batch, cols)``.

    ``f`` (the arrays' dtype): grad_sign, weight, weight - 1, eps1, eps1**2,
    decay (1 - lr * weight_decay), rows, cols, 1. ``h`` (float64): eps2, rho,
    sqrt(numel), d, small (|weight| < 0.5), apply_decay, the
    reductions' width (8 for float32, 4 for float64). ``scratch`` (the
    arrays' dtype, ``batch`` + 3 elements) receives each batch's clamped mean
    of ``row_var``, then the parameter's and the update's norms and the step
    size. The update takes a buffer of the tensor's size for the call."""
    grad_sign, weight, weight_m1, eps1, eps1_sq = f[0], f[1], f[2], f[3], f[4]
    decay, n_rows, n_cols, one = f[5], f[6], f[7], f[8]
    small = h[4] != 0.0
    width = int(h[6])
    zero = one - one
    batch, rows, cols = param.shape
    n = batch * rows * cols
    flat_g = grad.reshape(n)
    flat_p = param.reshape(n)
    flat_rv = row_var.reshape(batch * rows)
    # 1. the factors, lerped (the sign of g squares away)
    for k in prange(batch * rows):
        b = k // rows
        r = k - b * rows
        norm = math.sqrt(_lane_sum(flat_g, k * cols, (k + 1) * cols, zero, True, width))
        row_var[b, r] = _lerp(row_var[b, r], norm * norm / n_cols, weight, weight_m1, small)
    n_blocks = (cols + _COL_BLOCK - 1) // _COL_BLOCK
    for t in prange(batch * n_blocks):
        b = t // n_blocks
        lo = (t - b * n_blocks) * _COL_BLOCK
        hi = min(lo + _COL_BLOCK, cols)
        acc = np.zeros(hi - lo, col_var.dtype)
        for r in range(rows):
            for c in range(lo, hi):
                x = grad[b, r, c]
                acc[c - lo] += x * x
        for c in range(lo, hi):
            norm = math.sqrt(acc[c - lo])
            col_var[b, c] = _lerp(col_var[b, c], norm * norm / n_rows, weight, weight_m1, small)
    for b in range(batch):
        mean = _lane_sum(flat_rv, b * rows, (b + 1) * rows, zero, False, width) / n_rows
        scratch[b] = _clamp_min(mean, eps1)
    # 2. the update (as torch, materialized), then both norms in torch's order
    update = np.empty_like(flat_g)
    for k in prange(batch * rows):
        b = k // rows
        rv = row_var[b, k - b * rows]
        mean = scratch[b]
        base = k * cols
        for c in range(cols):
            update[base + c] = one / math.sqrt(_clamp_min(rv * col_var[b, c] / mean, eps1_sq)) * (
                flat_g[base + c] * grad_sign)
    # 3. the norms, then the parameter (prange loops stay in the kernel's own
    # body: Numba parallelizes no prange of an inlined helper)
    step_size = _norms(flat_p, update, scratch, batch, h, zero)
    apply_decay = h[5] != 0.0
    for i in prange(n):
        p = flat_p[i] * decay if apply_decay else flat_p[i]
        flat_p[i] = fma(step_size, update[i], p)


@njit(inline="always", error_model="numpy")
def _norms(flat_p, update, scratch, at, h, zero):
    """The parameter's and the update's norms (serial, torch's order) into
    ``scratch[at:at + 2]``, and the step size ``-alpha / denom`` in the
    arrays' dtype (``scratch[at + 2]``), returned."""
    width = int(h[6])
    n = flat_p.shape[0]
    p_norm = math.sqrt(_lane_sum(flat_p, 0, n, zero, True, width))
    u_norm = math.sqrt(_lane_sum(update, 0, n, zero, True, width))
    scratch[at] = p_norm
    scratch[at + 1] = u_norm
    scratch[at + 2] = _step_size(p_norm, u_norm, h[0], h[1], h[2], h[3])
    return scratch[at + 2]


def vector(param, grad, variance, scratch, f, h):
    """One Adafactor step of a 1-D tensor (``variance`` of its shape); ``f``,
    ``h`` as :func:`factored`'s, ``scratch`` of 3 elements (the norms and
    the step size)."""
    grad_sign, weight, weight_m1, eps1_sq = f[0], f[1], f[2], f[4]
    decay, one = f[5], f[8]
    small = h[4] != 0.0
    zero = one - one
    n = param.shape[0]
    update = np.empty_like(grad)
    for i in prange(n):
        g = grad[i] * grad_sign
        v = _lerp(variance[i], g * g, weight, weight_m1, small)
        variance[i] = v
        update[i] = one / math.sqrt(_clamp_min(v, eps1_sq)) * g
    step_size = _norms(param, update, scratch, 0, h, zero)
    apply_decay = h[5] != 0.0
    for i in prange(n):
        p = param[i] * decay if apply_decay else param[i]
        param[i] = fma(step_size, update[i], p)


#: Each kernel, parallel and serial (``cpu.Driver``).
FACTORED = Driver(factored)
VECTOR = Driver(vector)
__all__ = ["FACTORED", "VECTOR", "SERIAL_BELOW"]
