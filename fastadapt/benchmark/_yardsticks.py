"""Yardsticks for the storage section: one minimal Adam kernel per 16-bit mode.

Each is a plain ``prange`` loop doing the mode's work with the mode's bytes
and nothing else: no options (torch's default Adam, no weight decay, no
AMSGrad, no maximize), no checks, no NaN care, no flat buffers. Timed in the
same run as fastadapt's modes, they show what this machine reaches for those
bytes, so ``fastadapt / yardstick`` (time over time) is what fastadapt's
generality costs. They are not designs to copy.

The arithmetic is fastadapt's, operation for operation (``m + (1 - b1)(g - m)``,
``v b2 + (1 - b2) g g``, ``p + (-lr / bc1) m / (sqrt(v) / sqrt(bc2) + eps)``),
so a test can hold each to fastadapt's result (tests/test_bench_storage.py).
bfloat16 arrays arrive as ``uint16`` bits; narrowing rounds to nearest-even
(NaN not kept) or, stochastically, adds 16 random bits below the kept ones and
truncates. The random bits are fastadapt's own (the top 16 of Wellons'
lowbias32 of ``key + index`` in 32-bit integers, the key being the stream's
input at index 0, ``convert16.page_base``), for arrays below 2**32 elements, so
a test holds the stochastic yardsticks to fastadapt's result bit for bit too.
"""
import math

import numba as nb
import numpy as np

from ..kernels._jit import cached
from ..kernels.convert16 import PYTHON, bits_to_float32, float32_to_bits, stream_key

_U16 = np.uint32(16)


@nb.njit(inline="always")
def _widen(bits):
    return bits_to_float32(np.uint32(np.uint32(bits) << _U16))


@nb.njit(inline="always")
def _nearest(x):
    b = float32_to_bits(x)
    return np.uint16((b + np.uint32(0x7FFF) + ((b >> _U16) & np.uint32(1))) >> _U16)


@nb.njit(inline="always")
def _stochastic(x, i, key):
    # Numba widens uint32 arithmetic to 64 bits; each np.uint32 narrows it back
    # (lowbias32's last step, h ^ (h >> 16), leaves the top 16 bits as they are)
    h = np.uint32(np.uint32(i) + key)
    h = np.uint32(h ^ (h >> _U16))
    h = np.uint32(h * np.uint32(0x7FEB352D))
    h = np.uint32(h ^ (h >> np.uint32(15)))
    h = np.uint32(h * np.uint32(0x846CA68B))
    return np.uint16((float32_to_bits(x) + (h >> _U16)) >> _U16)


@nb.njit(inline="always")
def _adam(p, g, m, v, omb1, b2, omb2, bc2_sqrt, eps, neg_step):
    m = m + omb1 * (g - m)
    v = v * b2 + omb2 * g * g
    return p + neg_step * m / (math.sqrt(v) / bc2_sqrt + eps), m, v


def _fp32(p, g, m, v, omb1, b2, omb2, bc2_sqrt, eps, neg_step):
    for i in nb.prange(p.size):
        p[i], m[i], v[i] = _adam(p[i], g[i], m[i], v[i], omb1, b2, omb2, bc2_sqrt, eps,
                                 neg_step)


def _bf16_state(p, g, m, v, omb1, b2, omb2, bc2_sqrt, eps, neg_step):
    for i in nb.prange(p.size):
        pi, mi, vi = _adam(p[i], g[i], _widen(m[i]), _widen(v[i]), omb1, b2, omb2, bc2_sqrt,
                           eps, neg_step)
        p[i], m[i], v[i] = pi, _nearest(mi), _nearest(vi)


def _bf16_nearest(p, g, m, v, omb1, b2, omb2, bc2_sqrt, eps, neg_step):
    for i in nb.prange(p.size):
        pi, mi, vi = _adam(_widen(p[i]), _widen(g[i]), _widen(m[i]), _widen(v[i]), omb1, b2,
                           omb2, bc2_sqrt, eps, neg_step)
        p[i], m[i], v[i] = _nearest(pi), _nearest(mi), _nearest(vi)


def _bf16_sr(p, g, m, v, omb1, b2, omb2, bc2_sqrt, eps, neg_step, key):
    for i in nb.prange(p.size):
        pi, mi, vi = _adam(_widen(p[i]), _widen(g[i]), _widen(m[i]), _widen(v[i]), omb1, b2,
                           omb2, bc2_sqrt, eps, neg_step)
        p[i], m[i], v[i] = _stochastic(pi, i, key), _nearest(mi), _nearest(vi)


def _bf16_sr_fp32_state(p, g, m, v, omb1, b2, omb2, bc2_sqrt, eps, neg_step, key):
    for i in nb.prange(p.size):
        pi, m[i], v[i] = _adam(_widen(p[i]), _widen(g[i]), m[i], v[i], omb1, b2, omb2,
                               bc2_sqrt, eps, neg_step)
        p[i] = _stochastic(pi, i, key)


def _bf16_master(p, g, m, v, master, omb1, b2, omb2, bc2_sqrt, eps, neg_step):
    for i in nb.prange(p.size):
        pi, m[i], v[i] = _adam(master[i], _widen(g[i]), m[i], v[i], omb1, b2, omb2, bc2_sqrt,
                               eps, neg_step)
        master[i] = pi
        p[i] = _nearest(pi)


def _compile(func):
    return cached(nb.njit, func, parallel=True, error_model="numpy")


#: mode key (as the storage section's) -> compiled kernel. Arguments: param,
#: grad, exp_avg, exp_avg_sq (bfloat16 ones as uint16 bits), then the master
#: copy for bf16_master, the float32 scalars of :func:`scalars`, then the
#: uint32 key of the step for the stochastic ones.
KERNELS = {"fp32": _compile(_fp32), "bf16_state": _compile(_bf16_state),
           "bf16_nearest": _compile(_bf16_nearest), "bf16_sr": _compile(_bf16_sr),
           "bf16_sr_fp32_state": _compile(_bf16_sr_fp32_state),
           "bf16_master": _compile(_bf16_master)}
STOCHASTIC = ("bf16_sr", "bf16_sr_fp32_state")


def scalars(step, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
    """The per-step float32 scalars, computed as fastadapt's Adam computes them
    (in float64 on the host, then rounded once)."""
    b1, b2 = betas
    f32 = np.float32
    return (f32(1.0 - b1), f32(b2), f32(1.0 - b2), f32(math.sqrt(1.0 - b2 ** step)), f32(eps),
            f32(-lr / (1.0 - b1 ** step)))


def step_key(seed, step):
    """The uint32 key of (seed, step) for the stochastic yardsticks: the hash
    input of index 0 of fastadapt's stream for them."""
    return np.uint32(PYTHON.page_base(*stream_key(seed, step), 0))


def make_step(mode, param, grad, exp_avg, exp_avg_sq, master=None, seed=1):
    """A zero-argument callable taking one Adam step in ``mode`` (counting
    steps from 1) on the given arrays, bfloat16 ones given as ``uint16`` views."""
    kernel = KERNELS[mode]
    arrays = (param, grad, exp_avg, exp_avg_sq) + ((master,) if mode == "bf16_master" else ())
    count = [0]

    def step():
        count[0] += 1
        extra = (step_key(seed, count[0]),) if mode in STOCHASTIC else ()
        kernel(*arrays, *scalars(count[0]), *extra)
    return step
