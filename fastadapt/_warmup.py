"""Compile or load every CPU kernel ahead of time: ``fastadapt.warmup()`` and
``fastadapt compile``.

A kernel is compiled the first time a process calls it with a new dtype, and
the result is cached on disk, so only the first process on a machine pays for
compiling (about 0.5-1 s per rule, dtype and driver on 2 cores). Every later
process still pays, on its first call, for Numba to set itself up (about
0.15 s, once per process, whatever the kernel) and then a few milliseconds per
kernel to load it from the cache. ``warmup`` moves all of that to a moment of
the caller's choosing: it runs one step of each rule through the public
functional API on a small array (the serial driver) and on one of
``SERIAL_BELOW`` elements (the parallel driver), per dtype.
"""
import argparse
import sys
import time

import numpy as np

from ._dispatch import SUPPORTED_DTYPES

# below and at the serial/parallel threshold, so both drivers are exercised
_SMALL = 8


def _sizes():
    from .kernels import cpu
    return (_SMALL, cpu.SERIAL_BELOW)


def _resolve(rules, dtypes):
    from .rules import RULES
    if rules is None:
        names = list(RULES)
    else:
        names = [rules] if isinstance(rules, str) else list(rules)
        unknown = [r for r in names if r not in RULES]
        if unknown:
            raise ValueError(f"unknown rule(s) {', '.join(map(repr, unknown))}; "
                             f"choose from {', '.join(RULES)}")
    if dtypes is None:
        kinds = list(SUPPORTED_DTYPES)
    else:
        kinds = []
        for d in ([dtypes] if isinstance(dtypes, (str, type, np.dtype)) else list(dtypes)):
            try:
                dt = np.dtype(d)
            except TypeError:
                raise TypeError(f"not a dtype: {d!r}") from None
            if dt not in SUPPORTED_DTYPES:
                raise TypeError(f"unsupported dtype {dt}; fastadapt supports float32 and "
                                "float64")
            kinds.append(dt)
    return [RULES[n] for n in names], kinds


def warm_call(rule, n, dtype):
    """One step of ``rule`` (a :class:`fastadapt.Rule`) with its default
    options on fresh arrays of ``n`` elements of ``dtype``."""
    param = np.zeros(n, dtype)
    kwargs = {name: np.zeros(n, dtype) for name in rule.state_for()}
    if rule.takes_step:
        kwargs["step"] = 1
    rule.step_fn(param, np.zeros(n, dtype), **kwargs)


def warmup(rules=None, dtypes=None, progress=None):
    """Compile (first process on a machine) or load from the disk cache (any
    later process) every CPU kernel of ``rules`` x ``dtypes``, so that no later
    call pays for it.

    Parameters
    ----------
    rules : str or iterable of str, optional
        Names from :data:`fastadapt.RULES` (``"adam"``, ``"sgd"``, ...); all by
        default.
    dtypes : dtype or iterable of dtypes, optional
        float32 and/or float64; both by default.
    progress : callable, optional
        Called with one line of text per rule and dtype.

    Returns
    -------
    dict
        ``{(rule name, dtype name): seconds}``: what each took; with every
        rule (``rules=None``) also ``("grad_norm", dtype name)``, the kernels
        of :func:`fastadapt.grad_norm`.

    Notes
    -----
    Each rule runs one step through its public functional step on a small
    array and on one of ``fastadapt.kernels.cpu.SERIAL_BELOW`` elements, so
    both the serial and the parallel driver are ready. GPU kernels compile on
    their first call with GPU arrays and are not touched here.
    """
    chosen, kinds = _resolve(rules, dtypes)
    times = {}
    for dtype in kinds:
        for rule in chosen:
            start = time.perf_counter()
            for n in _sizes():
                warm_call(rule, n, dtype)
            times[(rule.name, dtype.name)] = elapsed = time.perf_counter() - start
            if progress:
                progress(f"{rule.name} {dtype.name}: {elapsed:.2f} s")
        if rules is None:
            start = time.perf_counter()
            _warm_grad_norm(dtype)
            times[("grad_norm", dtype.name)] = elapsed = time.perf_counter() - start
            if progress:
                progress(f"grad_norm {dtype.name}: {elapsed:.2f} s")
    return times


def _warm_grad_norm(dtype):
    """``fastadapt.grad_norm``'s serial and parallel kernels for ``dtype``."""
    from .kernels import reduce
    from .norm import grad_norm
    for n in (_SMALL, reduce.SERIAL_BELOW_CHUNKS * reduce.CHUNK):
        grad_norm(np.zeros(n, dtype))


def main(argv=None):
    """``fastadapt compile``."""
    from .rules import RULES
    parser = argparse.ArgumentParser(
        prog="fastadapt compile",
        description="Compile (or load from the disk cache) every CPU kernel now, so that "
                    "no later call pays for it: the first process on a machine compiles, "
                    "later ones load in milliseconds per kernel.")
    parser.add_argument("--rules", default="all",
                        help="comma-separated: " + ", ".join(RULES) + " (default all)")
    parser.add_argument("--dtypes", default="float32,float64",
                        help="comma-separated: float32, float64 (default both)")
    args = parser.parse_args(argv)
    rules = None if args.rules.strip() == "all" else [
        r.strip() for r in args.rules.split(",") if r.strip()]
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    try:
        _resolve(rules, dtypes)
    except (ValueError, TypeError) as exc:
        print(f"fastadapt compile: error: {exc}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    times = warmup(rules, dtypes, progress=lambda line: print(line, flush=True))
    print(f"{len(times)} rule/dtype pairs ready in {time.perf_counter() - start:.2f} s")
    return 0
