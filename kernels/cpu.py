"""The CPU target: the drivers of ``loops.py`` as Numba ``prange`` loops.

``DRIVERS[rule].parallel`` runs on Numba's thread pool; ``.serial`` is the
same source compiled without ``parallel=True``, for arrays below
``SERIAL_BELOW`` elements where waking the pool costs more than the loop.
Scalars arrive as a small array of the arrays' dtype: building a tuple of
NumPy scalars per call costs more than the whole update of a small array.
Both versions are cached on disk under their own names, stamped with every
kernel source file.
"""
import types

from numba import njit, prange
from numba.core.caching import FunctionCache

from . import loops, math
from ._cache import watching

if __name__ != "fastadapt.kernels.cpu":
    # From the repository root ``kernels`` is also importable as a top-level
    # package, but Numba's disk cache records the module name, and a kernel
    # cached under "kernels.cpu" fails to load (ModuleNotFoundError) in every
    # later process where only fastadapt is importable.
    raise ImportError(f"import this module as fastadapt.kernels.cpu, not {__name__}")

# Measured on 2 cores with `fastadapt bench --threshold`: the parallel region
# costs about 2 us more than a serial loop, which the serial loop's lack of
# SIMD repays at a few hundred elements.
SERIAL_BELOW = 512

_Cache = watching(FunctionCache, math.__file__, __file__)
_elem, _sources = loops.build(njit(inline="always"), prange, __name__)


def _cached(dispatcher):
    dispatcher._cache = _Cache(dispatcher.py_func)  # what cache=True does
    return dispatcher


def _compile(rule, source):
    serial = types.FunctionType(source.__code__, source.__globals__, rule + "_serial")
    serial.__qualname__, serial.__module__ = source.__qualname__ + "_serial", __name__
    return types.SimpleNamespace(
        parallel=_cached(njit(parallel=True, nogil=True)(source)),
        serial=_cached(njit(nogil=True)(serial)),
    )


DRIVERS = {rule: _compile(rule, source) for rule, source in _sources.items()}
