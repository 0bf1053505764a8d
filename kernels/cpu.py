"""The CPU target: the drivers of ``loops.py`` as Numba ``prange`` loops.

``DRIVERS[kernel].parallel`` runs on Numba's thread pool; ``.serial`` is the
same source compiled without ``parallel=True``, for arrays below
``SERIAL_BELOW`` elements where waking the pool costs more than the loop.
Scalars arrive as a small array of the arrays' dtype: building a tuple of
NumPy scalars per call costs more than the whole update of a small array.
Both versions follow NumPy's error model (IEEE division: ``x / 0`` is inf or
NaN, never ``ZeroDivisionError``, as in torch) and are cached on disk under
names that carry a hash of their sources (see ``loops.py``).
"""
import math

from numba import njit, prange

from . import loops, math as _math
from ._jit import cached, renamed
from .layout import storage_vocabulary

if __name__ != "fastadapt.kernels.cpu":
    # From the repository root ``kernels`` is also importable as a top-level
    # package, but Numba's disk cache records the module name, and a kernel
    # cached under "kernels.cpu" fails to load (ModuleNotFoundError) in every
    # later process where only fastadapt is importable.
    raise ImportError(f"import this module as fastadapt.kernels.cpu, not {__name__}")

from ..rules import kernel_specs  # noqa: E402  (after the guard above)

# Measured on 2 cores with `fastadapt bench --sections threshold`: waking the
# pool costs 1.5-3 us, and the serial (vectorized) loop stays faster up to
# 16K-32K elements (median crossover over the rules 32,768; Adam at 8,192:
# 3.6 us serial, 3.7 parallel). With T threads the crossover is where the
# serial loop takes T / (T - 1) times the wake-up, so it comes sooner on
# bigger machines: 8192 is near it for 2 to 16 threads.
SERIAL_BELOW = 8192

VOCABULARY = {**_math.SCALAR_VOCABULARY, "sqrt": math.sqrt}
SPECS = kernel_specs()
SIGNATURES = loops.signatures(SPECS)
_elem, _sources = loops.build(njit(inline="always", error_model="numpy"), VOCABULARY,
                              prange, __name__, __file__, SPECS)


class Driver:
    """One kernel's two compiled loops."""

    __slots__ = ("parallel", "serial")

    def __init__(self, source):
        self.parallel = cached(njit, source, parallel=True, nogil=True, error_model="numpy")
        self.serial = cached(njit, renamed(source, "_serial"), nogil=True,
                             error_model="numpy")


DRIVERS = {kernel: Driver(source) for kernel, source in _sources.items()}

#: The storage conversions the layout drivers call (see ``layout.Layout``).
STORAGE = storage_vocabulary()
_DIGEST = loops.source_hash(__file__, SPECS)
_LAYOUTS = {}


def layout_driver(kernel, layout):
    """The :class:`Driver` of ``kernel`` for the storage ``layout`` (a
    ``layout.Layout``), built on first use: each layout is a distinct cached
    driver (its tag is in the qualname), compiled when first called, so
    importing fastadapt compiles none of them."""
    key = (kernel, layout)
    driver = _LAYOUTS.get(key)
    if driver is None:
        source = loops.build_layout(SIGNATURES[kernel], layout, getattr(_elem, kernel),
                                    STORAGE, prange, __name__, _DIGEST)
        driver = _LAYOUTS[key] = Driver(source)
    return driver
