"""Same-traffic roofline kernels: what an update would cost if its math were free.

An update rule with ``k`` state arrays reads ``param``, ``grad`` and the ``k``
state arrays once and writes ``param`` and the state arrays once, so it moves
``itemsize * (3 + 2 k)`` bytes per element (``Rule.bytes_per_element``).
``ROOFLINE[k]`` moves exactly those bytes with trivial math: every written
array gets the gradient added to it,

.. code-block:: text

    g = grad[i]
    param[i] += g
    state_j[i] += g        for each of the k state arrays

compiled like the real drivers (``parallel=True`` ``prange`` loop, no
fastmath, cached), so the ratio *fastadapt time / roofline time* says how much
of the achievable bandwidth the rule's math and the dispatcher leave on the
table. Like the drivers, each kernel has a ``.serial`` twin, and :func:`step`
picks it below ``cpu.SERIAL_BELOW`` elements so small sizes compare like with
like.

``copy`` is a parallel ``dst[:] = src``: the machine's copy bandwidth, counted
as one read and one write per element.
"""
import types

from numba import njit, prange

from . import cpu as _cpu  # also refuses a top-level ``kernels`` import (see cpu.py)
from ._jit import cached, renamed

MAX_STATE = 4


def roofline0(param, grad):
    for i in prange(param.size):
        param[i] += grad[i]


def roofline1(param, grad, s0):
    for i in prange(param.size):
        g = grad[i]
        param[i] += g
        s0[i] += g


def roofline2(param, grad, s0, s1):
    for i in prange(param.size):
        g = grad[i]
        param[i] += g
        s0[i] += g
        s1[i] += g


def roofline3(param, grad, s0, s1, s2):
    for i in prange(param.size):
        g = grad[i]
        param[i] += g
        s0[i] += g
        s1[i] += g
        s2[i] += g


def roofline4(param, grad, s0, s1, s2, s3):
    for i in prange(param.size):
        g = grad[i]
        param[i] += g
        s0[i] += g
        s1[i] += g
        s2[i] += g
        s3[i] += g


def copy(dst, src):
    for i in prange(dst.size):
        dst[i] = src[i]


def _compile(func):
    return types.SimpleNamespace(
        parallel=cached(njit, func, parallel=True, nogil=True),
        serial=cached(njit, renamed(func, "_serial"), nogil=True),
    )


ROOFLINE = [_compile(f) for f in (roofline0, roofline1, roofline2, roofline3, roofline4)]
copy = cached(njit, copy, parallel=True, nogil=True)


def step(param, grad, state):
    """One roofline step over 1-D arrays: ``state`` is a sequence of 0..4 arrays.

    Reads ``param``, ``grad`` and every state array once and writes ``param``
    and every state array once, the traffic of a rule with ``len(state)``
    state arrays. Serial below ``SERIAL_BELOW`` elements, like the dispatcher.
    """
    kernel = ROOFLINE[len(state)]
    if param.size < _cpu.SERIAL_BELOW:
        kernel.serial(param, grad, *state)
    else:
        kernel.parallel(param, grad, *state)
