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
``SERIAL_BELOW`` elements (the parallel driver), per dtype and per storage
mode (:data:`MODES`: each is a kernel of its own); and Adafactor's kernels
(:func:`fastadapt.adafactor_step`, not a rule: its 1-D and its factored
kernel, per dtype).
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


#: The storage modes of the README's "Fewer bytes" table (float32 math), the
#: split masters (``master_weights="bf16+16"`` / ``"bf16+8"``) included: each
#: name maps to ``(param dtype, grad dtype, state dtype or "int8", options)``.
MODES = {
    "bf16_state": ("float32", "float32", "bfloat16", {}),
    "int8_state": ("float32", "float32", "int8", {}),
    "int8c_state": ("float32", "float32", "int8c", {}),
    "bf16": ("bfloat16", "bfloat16", "bfloat16", {}),
    "bf16_stochastic": ("bfloat16", "bfloat16", "bfloat16", {"stochastic_rounding": True}),
    "bf16_master": ("bfloat16", "bfloat16", "float32", {"master_weights": True}),
    "bf16_split16": ("bfloat16", "bfloat16", "float32", {"master_weights": "bf16+16"}),
    "bf16_split8": ("bfloat16", "bfloat16", "float32", {"master_weights": "bf16+8"}),
}

#: Adafactor (:func:`fastadapt.adafactor_step`) is not a rule but takes a
#: ``rules`` name here: its kernels are warmed per dtype, in no storage mode.
ADAFACTOR = "adafactor"


def _resolve(rules, dtypes):
    from .rules import RULES
    if rules is None:
        names = [*RULES, ADAFACTOR]
    else:
        names = [rules] if isinstance(rules, str) else list(rules)
        unknown = [r for r in names if r not in RULES and r != ADAFACTOR]
        if unknown:
            raise ValueError(f"unknown rule(s) {', '.join(map(repr, unknown))}; "
                             f"choose from {', '.join(RULES)}, {ADAFACTOR}")
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
    return [RULES[n] for n in names if n != ADAFACTOR], kinds, ADAFACTOR in names


def _resolve_modes(modes):
    names = list(MODES) if modes is None else [modes] if isinstance(modes, str) else list(modes)
    unknown = [m for m in names if m not in MODES]
    if unknown:
        raise ValueError(f"unknown storage mode(s) {', '.join(map(repr, unknown))}; "
                         f"choose from {', '.join(MODES)}")
    return names


def warm_call(rule, n, dtype, mode=None):
    """One step of ``rule`` (a :class:`fastadapt.Rule`) with its default
    options on fresh arrays of ``n`` elements of ``dtype``, or in the storage
    mode ``mode`` of :data:`MODES`."""
    from ._dispatch import _PARALLEL_LAUNCH, kernel_call
    from ._options import EIGHT_BIT
    from .functional import step_for
    from ._storage import SPLIT_MASTER, bfloat16
    kwargs = {}
    if mode is None:
        param_dtype = grad_dtype = state_dtype = dtype
    else:
        param_dtype, grad_dtype, state_dtype, options = MODES[mode]
        master = options.get("master_weights")
        if master:
            kwargs["master_param"] = np.zeros(n, np.float32 if master is True
                                              else SPLIT_MASTER[master][0])
        if options.get("stochastic_rounding"):
            kwargs.update(stochastic_rounding=True, seed=0)

    def zeros(name):
        return np.zeros(n, bfloat16() if name == "bfloat16" else name)
    eight_bit = EIGHT_BIT.get(state_dtype)
    for name in rule.state_for():
        kwargs[name] = (eight_bit.new(n, name, rule.non_negative_state)
                        if eight_bit else zeros(state_dtype))
    if rule.takes_step:
        kwargs["step"] = 1
    step = step_for(rule)
    step(zeros(param_dtype), zeros(grad_dtype), **kwargs)
    # which loop the public step ran depends on the size and, in between, on
    # the machine's load (_pool): compile both
    planned = kernel_call(step.plan(zeros(param_dtype), zeros(grad_dtype), **kwargs))
    if planned is not None:
        _, driver, args = planned
        driver.serial(*args)
        with _PARALLEL_LAUNCH:
            driver.parallel(*args)


def warm_adafactor(n, dtype):
    """One Adafactor step on fresh ``dtype`` arrays of ``n`` elements: a 1-D
    param (the vector kernel) and a 2-D one of two rows (the factored kernel;
    ``n`` even)."""
    from .adafactor import adafactor_step
    adafactor_step(np.zeros(n, dtype), np.zeros(n, dtype), variance=np.zeros(n, dtype),
                   step=1)
    shape = (2, n // 2)
    adafactor_step(np.zeros(shape, dtype), np.zeros(shape, dtype),
                   row_var=np.zeros((2, 1), dtype), col_var=np.zeros((1, n // 2), dtype),
                   step=1)


def warmup(rules=None, dtypes=None, modes=None, progress=None):
    """Compile (first process on a machine) or load from the disk cache (any
    later process) every CPU kernel of ``rules`` x (``dtypes`` + ``modes``),
    so that no later call pays for it.

    Parameters
    ----------
    rules : str or iterable of str, optional
        Names from :data:`fastadapt.RULES` (``"adam"``, ``"sgd"``, ...) and
        ``"adafactor"`` (:func:`fastadapt.adafactor_step`'s kernels, warmed
        per dtype only: it has no storage modes); all by default.
    dtypes : dtype or iterable of dtypes, optional
        float32 and/or float64; both by default.
    modes : str or iterable of str, optional
        Storage modes, names of :data:`MODES`; all by default, ``()`` for none.
    progress : callable, optional
        Called with one line of text per rule and dtype or mode.

    Returns
    -------
    dict
        ``{(rule name, dtype or mode name): seconds}``: what each took
        (``("adafactor", dtype name)`` for Adafactor's); with every rule
        (``rules=None``) also ``("grad_norm", dtype name)``, the kernels of
        :func:`fastadapt.grad_norm`.

    Notes
    -----
    Each rule runs one step through its public functional step on a small
    array and on one of ``fastadapt.kernels.cpu.SERIAL_BELOW`` elements, so
    both the serial and the parallel driver are ready; Adafactor one step of
    a 1-D and of a 2-D param at each of those sizes. GPU kernels compile on
    their first call with GPU arrays and are not touched here.
    """
    chosen, kinds, adafactor = _resolve(rules, dtypes)
    mode_names = _resolve_modes(modes)
    times = {}

    def timed(name, label, call):
        start = time.perf_counter()
        call()
        times[(name, label)] = elapsed = time.perf_counter() - start
        if progress:
            progress(f"{name} {label}: {elapsed:.2f} s")

    def warm(rule, label, dtype, mode):
        timed(rule.name, label, lambda: [warm_call(rule, n, dtype, mode) for n in _sizes()])
    for dtype in kinds:
        for rule in chosen:
            warm(rule, dtype.name, dtype, None)
        if adafactor:
            timed(ADAFACTOR, dtype.name,
                  lambda: [warm_adafactor(n, dtype) for n in _sizes()])
        if rules is None:
            timed("grad_norm", dtype.name, lambda: _warm_grad_norm(dtype))
    for mode in mode_names:
        for rule in chosen:
            warm(rule, mode, None, mode)
    return times


def _warm_grad_norm(dtype):
    """``fastadapt.grad_norm``'s serial and parallel kernels for ``dtype``
    (both called: which one a mid-size norm runs depends on the load)."""
    from ._dispatch import _PARALLEL_LAUNCH
    from .kernels import reduce
    from .norm import grad_norm
    grad_norm(np.zeros(_SMALL, dtype))
    kernels = reduce.sum_of_squares_kernels(dtype)
    values = np.zeros(reduce.SERIAL_BELOW_CHUNKS * reduce.CHUNK, dtype)
    values = values.view(np.uint16) if values.dtype.itemsize == 2 else values
    starts, stops = reduce.chunks(values.size)
    out = np.empty(starts.size, np.float64)
    kernels.serial(values, starts, stops, out)
    with _PARALLEL_LAUNCH:
        kernels.parallel(values, starts, stops, out)


def main(argv=None):
    """``fastadapt compile``."""
    from .rules import RULES
    parser = argparse.ArgumentParser(
        prog="fastadapt compile",
        description="Compile (or load from the disk cache) every CPU kernel now, so that "
                    "no later call pays for it: the first process on a machine compiles, "
                    "later ones load in milliseconds per kernel.")
    parser.add_argument("--rules", default="all",
                        help="comma-separated: " + ", ".join([*RULES, ADAFACTOR])
                        + " (default all; adafactor: its kernels per dtype, in no storage "
                        "mode)")
    parser.add_argument("--dtypes", default="float32,float64",
                        help="comma-separated: float32, float64 (default both)")
    parser.add_argument("--modes", default="all",
                        help="comma-separated storage modes: " + ", ".join(MODES)
                        + " (default all; none for none)")
    args = parser.parse_args(argv)
    rules = None if args.rules.strip() == "all" else [
        r.strip() for r in args.rules.split(",") if r.strip()]
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    modes = (None if args.modes.strip() == "all" else () if args.modes.strip() == "none"
             else [m.strip() for m in args.modes.split(",") if m.strip()])
    try:
        _resolve(rules, dtypes)
        _resolve_modes(modes)
    except (ValueError, TypeError) as exc:
        print(f"fastadapt compile: error: {exc}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    times = warmup(rules, dtypes, modes, progress=lambda line: print(line, flush=True))
    print(f"{len(times)} rule/dtype and rule/mode pairs ready in "
          f"{time.perf_counter() - start:.2f} s")
    return 0
