"""Disk caching through Numba's public ``cache=True``, with an in-memory fallback.

Numba raises ``RuntimeError: cannot cache function ...: no locator available``
when neither the package directory nor ``NUMBA_CACHE_DIR`` (nor the user's
cache directory) is writable. Importing fastadapt must still work there, so
``cached`` then compiles that kernel in memory (once per process) and warns
once, saying how to enable the cache.
"""
import types
import warnings

_warned = []


def cached(decorator, func, **options):
    """``decorator(cache=True, **options)(func)``, or without the cache when no
    cache location is writable (with one warning per process)."""
    try:
        return decorator(cache=True, **options)(func)
    except RuntimeError as exc:
        if "cannot cache" not in str(exc):
            raise
        if not _warned:
            _warned.append(True)
            warnings.warn(
                "fastadapt: no writable cache location for the compiled kernels "
                f"({exc}); compiling them in memory, once per process. Set "
                "NUMBA_CACHE_DIR to a writable directory to cache them on disk.",
                RuntimeWarning, stacklevel=2)
        return decorator(**options)(func)


def renamed(func, suffix, **bind):
    """A copy of ``func`` whose name and qualname end in ``suffix``: a second
    compiled version of one source (the serial twin of a parallel driver)
    gets cache entries of its own. ``bind`` rebinds global names the copy
    calls (a variant of one loop for another input type)."""
    scope = {**func.__globals__, **bind} if bind else func.__globals__
    clone = types.FunctionType(func.__code__, scope, func.__name__ + suffix,
                               func.__defaults__, func.__closure__)
    clone.__qualname__ = func.__qualname__ + suffix
    clone.__module__ = func.__module__
    return clone
