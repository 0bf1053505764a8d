"""The GPU target: the drivers of ``loops.py`` as grid-stride CUDA kernels.

Scalars arrive as a tuple of NumPy scalars of the arrays' dtype, passed by
value in the launch's parameter buffer: no host-to-device copy, no
synchronisation. Indices are 64-bit: ``cuda.grid(1)`` and ``cuda.gridsize(1)``
sign-extend thread and block numbers to int64 before multiplying, so arrays of
2**31 or more elements are addressed correctly.

The per-element math is ``math.py`` compiled as inlined CUDA device
functions. NVVM contracts ``a * b + c`` into fused multiply-adds by default,
so float32 results may differ from the CPU's in the last bits (float64 too,
far below any tolerance); torch's CUDA kernels do the same. Kernels compile
lazily, once per dtype, and are cached on disk under names that carry a hash
of their sources (see ``loops.py``).

Under Numba's CUDA simulator the device functions run as Python on NumPy
scalars; there ``sqrt`` is ``numpy.sqrt``, which keeps a float32 argument
float32 and rounds correctly, as the GPU's ``sqrt.rn.f32`` does (Python's
``math.sqrt`` would return a float64).
"""
import math

import numpy as np
from numba import cuda

from . import loops, math as _math, storage
from ._jit import cached
from ..rules import kernel_specs

try:  # numba-cuda keeps its own config; older versions shared Numba's
    from numba.cuda.core.config import ENABLE_CUDASIM as SIMULATOR
except ImportError:
    from numba.config import ENABLE_CUDASIM as SIMULATOR

# A grid-stride loop over at most BLOCKS_PER_SM blocks of THREADS_PER_BLOCK
# threads per multiprocessor: 8 x 256 = 2048 threads, as many as an SM of
# Volta, Ampere or Hopper keeps resident, so one wave covers the GPU and each
# thread loops over the rest. Tests shrink both to run many blocks and many
# strides on tiny arrays.
THREADS_PER_BLOCK = 256
BLOCKS_PER_SM = 8

# The simulator's jit takes no ``forceinline``; it runs the Python source.
_device = (cuda.jit(device=True) if SIMULATOR
           else cuda.jit(device=True, forceinline=True))


@_device
def grid_stride(n):
    """The indices this thread visits: a grid-stride loop over ``range(n)``."""
    return range(cuda.grid(1), n, cuda.gridsize(1))


def launch_config(n, multiprocessors):
    """``(blocks, threads)`` for ``n`` elements on a GPU with that many SMs."""
    threads = THREADS_PER_BLOCK
    blocks = min(-(-n // threads), multiprocessors * BLOCKS_PER_SM)
    return max(blocks, 1), threads


VOCABULARY = {**_math.SCALAR_VOCABULARY, "sqrt": np.sqrt if SIMULATOR else math.sqrt}
SPECS = kernel_specs()
SIGNATURES = loops.signatures(SPECS)
_elem, _sources = loops.build(_device, VOCABULARY, grid_stride, __name__, __file__, SPECS)
KERNELS = {kernel: (cuda.jit(source) if SIMULATOR else cached(cuda.jit, source))
           for kernel, source in _sources.items()}

_DIGEST = loops.source_hash(__file__, SPECS)
_LAYOUTS = {}


def layout_kernel(kernel, layout):
    """The kernel of ``kernel`` for the storage ``layout`` (see
    ``cpu.layout_driver``), built on first use.

    Under the simulator the storage conversions are ``storage.PYTHON``, which
    the tests check equal to the CPU's compiled ones on every 16-bit pattern.
    The CPU's conversions are LLVM intrinsics of Numba's CPU target; GPU
    versions of them are not written yet, so a real GPU raises.
    """
    if not SIMULATOR:
        raise NotImplementedError(
            "16-bit storage, master weights and stochastic rounding run on the CPU "
            "(and under the CUDA simulator); on a real GPU only float32 and float64 "
            "arrays are supported so far")
    key = (kernel, layout)
    if key not in _LAYOUTS:
        py = storage.PYTHON
        vocabulary = {"bf16_to_f32": py.bfloat16_to_float32,
                      "f32_to_bf16": py.float32_to_bfloat16,
                      "f16_to_f32": py.half_to_float32, "f32_to_f16": py.float32_to_half,
                      "f32_to_bf16_stochastic": py.float32_to_bfloat16_stochastic,
                      "f32_to_f16_stochastic": py.float32_to_half_stochastic,
                      "random_bits": py.random_bits, "nearest_code": py.nearest_code_bucketed,
                      "magnitude_bits": py.magnitude_bits,
                      "bits_to_float32": py.bits_to_float32,
                      "float32_to_bits": py.float32_to_bits,
                      "softsign_decode": py.softsign_decode,
                      "softsign_encode": py.softsign_encode,
                      "root_decode": py.root_decode, "root_encode": py.root_encode}
        source = loops.build_layout(SIGNATURES[kernel], layout, getattr(_elem, kernel),
                                    vocabulary, grid_stride, __name__, _DIGEST)
        _LAYOUTS[key] = cuda.jit(source)
    return _LAYOUTS[key]
