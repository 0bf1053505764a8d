"""The GPU twin of ``reduce.py``: per-chunk sums of squares as a CUDA kernel.

One block of ``LANES`` threads per chunk (a grid-stride loop over chunks when
there are more chunks than blocks): thread ``k`` is lane ``k`` and adds
``float64(x[i])**2`` for ``i = start + k, start + k + LANES, ...`` (consecutive
threads read consecutive elements, so the loads are coalesced), then the
lanes are added as the same binary tree as on the CPU, in shared memory, and
thread 0 writes the chunk's partial to ``out[c]``. The host adds the partials
exactly (``reduce.add_exactly``), as it does the CPU's.

Why the partials go back to the host rather than to a second kernel: the
result is a Python float, so the host waits for the GPU anyway; the exact sum
of at most ``n / CHUNK`` float64 (6 104 for 10**8 elements, 48 KB) costs a
few microseconds, and it keeps the final sum identical to the CPU's whatever
the GPU's size or launch shape.

bfloat16 and float16 arrays arrive as their ``uint16`` bits and are widened
exactly to float32 in the loop (``SUM_OF_SQUARES_BF16`` / ``_F16``), so their
partials equal those of a float32 copy, as on the CPU.

Indices are 64-bit (``starts`` / ``stops`` are int64). The kernel compiles
lazily, once per input dtype, and is cached on disk.
"""
import numpy as np
from numba import cuda

from . import convert16
from ._jit import cached, renamed
from .cuda import SIMULATOR, _device
from .reduce import LANES

#: At most this many blocks per multiprocessor; more chunks are looped over.
BLOCKS_PER_SM = 8


def _same(x):
    return x


widen = _same if SIMULATOR else _device(_same)


def sum_of_squares(x, starts, stops, out):
    lanes = cuda.shared.array(LANES, np.float64)
    k = cuda.threadIdx.x
    for c in range(cuda.blockIdx.x, starts.size, cuda.gridDim.x):
        acc = np.float64(0.0)
        for i in range(starts[c] + k, stops[c], LANES):
            v = np.float64(widen(x[i]))
            acc += v * v
        lanes[k] = acc
        cuda.syncthreads()
        s = LANES // 2
        while s > 0:
            if k < s:
                lanes[k] += lanes[k + s]
            cuda.syncthreads()
            s //= 2
        if k == 0:
            out[c] = lanes[0]
        cuda.syncthreads()  # lanes[0] is read before the next chunk overwrites it


def _compile(func):
    # The simulator's jit takes no ``cache``; it runs the Python source.
    return cuda.jit(func) if SIMULATOR else cached(cuda.jit, func)


_PY = convert16.PYTHON
SUM_OF_SQUARES = _compile(sum_of_squares)
SUM_OF_SQUARES_BF16 = _compile(renamed(sum_of_squares, "_bf16", widen=(
    _PY.bfloat16_to_float32 if SIMULATOR else convert16.bfloat16_to_float32)))
SUM_OF_SQUARES_F16 = _compile(renamed(sum_of_squares, "_f16", widen=(
    _PY.half_to_float32 if SIMULATOR else convert16.half_to_float32)))


def kernel_for(dtype):
    """The kernel for arrays of ``dtype`` (16-bit ones passed as their bits)."""
    dtype = np.dtype(dtype)
    if dtype == np.float16:
        return SUM_OF_SQUARES_F16
    return SUM_OF_SQUARES_BF16 if dtype.itemsize == 2 else SUM_OF_SQUARES


def launch_config(chunks, multiprocessors):
    """``(blocks, threads)`` for ``chunks`` chunks on a GPU with that many SMs."""
    return max(min(chunks, multiprocessors * BLOCKS_PER_SM), 1), LANES
