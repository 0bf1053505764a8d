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
import types as _types

import numpy as np
from numba import cuda

from . import blockwise8, companded8, convert16, loops, math as _math
from ._jit import cached
from .layout import BLOCKWISE8, COMPANDED, storage_vocabulary
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


#: The storage conversions the layout drivers call on a real GPU (see
#: ``layout.Layout``): the CPU's intrinsics, whose bodies are integer and
#: ``half`` LLVM IR that NVVM compiles as it is (``cvt`` for float16, shifts
#: and adds for bfloat16, 32-bit multiplies for the hash, bit casts for the
#: 8-bit codes' magnitudes), and the ones written as Python functions
#: (float16's stochastic rounding, the 8-bit codecs) compiled as device
#: functions. The scratch buffers of 8-bit state are per-thread local
#: arrays. ``tests/test_gpu_compile.py`` compiles every layout for sm_80 and
#: sm_90.
_PYTHON_CODECS = {"f32_to_f16_stochastic": convert16._float32_to_half_stochastic,
                  "nearest_code": blockwise8._nearest_code_bucketed,
                  "softsign_decode": companded8._softsign_decode,
                  "softsign_encode": companded8._softsign_encode,
                  "softsign_scaling": companded8._softsign_scaling,
                  "root_decode": companded8._root_decode,
                  "root_encode": companded8._root_encode,
                  "softsign_special": companded8._softsign_special,
                  "root_special": companded8._root_special,
                  "root_scaling": companded8._root_scaling}


def _numpy_for_cuda():
    """NumPy's names as the codecs use them, but ``floor`` and ``sqrt``,
    which numba-cuda has no ufuncs for, as libdevice's ``floorf`` and
    ``sqrtf`` (float32 in, float32 out and correctly rounded, as NumPy's of a
    float32 on the CPU)."""
    from numba.cuda import libdevice
    module = _types.ModuleType("numpy_for_cuda")
    module.__dict__.update({k: v for k, v in vars(np).items() if not k.startswith("__")})
    module.floor, module.sqrt = libdevice.floorf, libdevice.sqrtf
    return module


_NUMPY_FOR_CUDA = _numpy_for_cuda()
# each codec in its own module's scope, with NumPy's names as the device has them
STORAGE = {**storage_vocabulary(),
           **{name: _device(_types.FunctionType(
               f.__code__, {**f.__globals__, "np": _NUMPY_FOR_CUDA}, f.__name__))
              for name, f in _PYTHON_CODECS.items()},
           "cuda": cuda}

#: Under the simulator the same conversions as Python on NumPy scalars
#: (each storage module's ``PYTHON``, which the tests check equal to the
#: compiled ones on every 16-bit pattern), and the 8-bit codecs'.
SIMULATED_STORAGE = {**storage_vocabulary(python=True), "cuda": cuda}

#: One block (or group) of 8-bit state per thread, its scratch buffers in
#: local memory (see ``loops.BlockLoops``).
BLOCKING = loops.BlockLoops(1, 1, "cuda.local.array")


def layout_kernel(kernel, layout):
    """The kernel of ``kernel`` for the storage ``layout`` (see
    ``cpu.layout_driver``), built on first use and cached on disk like the
    plain kernels (the layout's tag is in its name). A kernel of 8-bit state
    runs one thread per block (or group): launch it over ``units(n, layout)``
    threads."""
    key = (kernel, layout)
    if key not in _LAYOUTS:
        vocabulary = SIMULATED_STORAGE if SIMULATOR else STORAGE
        source = loops.build_layout(SIGNATURES[kernel], layout, getattr(_elem, kernel),
                                    vocabulary, grid_stride, __name__, _DIGEST, BLOCKING)
        _LAYOUTS[key] = cuda.jit(source) if SIMULATOR else cached(cuda.jit, source)
    return _LAYOUTS[key]


def units(n, layout):
    """The number of threads' worth of work in ``n`` elements of ``layout``:
    ``n``, or its blocks (groups) of 8-bit state, one thread each."""
    if layout is not None and BLOCKWISE8 in layout.codes:
        return -(-n // blockwise8.BLOCK)
    if layout is not None and set(layout.codes) & set(COMPANDED):
        return -(-n // companded8.GROUP)
    return n
