"""The loop drivers, generated for both targets from each kernel's math signature.

A driver runs one kernel over 1-D arrays of one dtype (checked by the
dispatcher). Its arguments are ``param``, ``grad``, the kernel's state arrays
and ``scalars`` (the host-computed scalars in the order of the math's
signature, flags as 0 / 1; a small array on the CPU, a by-value tuple on the
GPU). It unpacks the scalars once, then for every index loads each element,
calls the math and stores the results. A state array that an option turns
off may be empty: it is loaded and stored only under its flag, which is
uniform over the loop, so LLVM unswitches the loop and vectorizes each version
(and a GPU warp never diverges on it).

For the Adam kernel the generated source reads (abridged)::

    def adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, scalars):
        grad_sign = scalars[0]
        ...
        amsgrad = scalars[11] != 0
        for i in indices(param.size):
            e_param = param[i]
            ...
            e_max_exp_avg_sq = max_exp_avg_sq[i] if amsgrad else e_param
            e_param, e_exp_avg, e_exp_avg_sq, e_max_exp_avg_sq = elem(
                e_param, e_grad, e_exp_avg, e_exp_avg_sq, e_max_exp_avg_sq, grad_sign, ...)
            param[i] = e_param
            ...
            if amsgrad:
                max_exp_avg_sq[i] = e_max_exp_avg_sq

``indices`` and ``elem`` are bound per target: ``numba.prange`` and the
``njit`` math for the CPU, a grid-stride range and the CUDA device math for
the GPU. The source is compiled with this file's name, so Numba's cache
locator finds a real source file, and each driver's ``__qualname__`` carries
a hash of every input of its code (this file, ``math.py``, the target module
and the kernels' state declarations): an edit to any of them names new cache
entries instead of serving stale ones.
"""
import hashlib
import inspect
import types
from pathlib import Path

from . import math as _math


class Signature:
    """What a driver needs to know of a kernel's math: element and scalar names."""

    def __init__(self, kernel, state):
        fn = getattr(_math, kernel)
        params = list(inspect.signature(fn).parameters.values())
        names = [p.name for p in params]
        expected = ["param", "grad", *(s for s, _ in state)]
        if names[:len(expected)] != expected:
            raise TypeError(f"math.{kernel} must take {', '.join(expected)} first, "
                            f"then its scalars; it takes {', '.join(names)}")
        self.kernel = kernel
        self.state = tuple(state)
        self.elements = tuple(expected)
        scalars = params[len(expected):]
        self.scalars = tuple(p.name for p in scalars)
        self.flags = frozenset(p.name for p in scalars if p.annotation is bool)
        for _, flag in self.state:
            if flag is not None and flag not in self.flags:
                raise TypeError(f"math.{kernel}: state flag {flag!r} must be a scalar "
                                "annotated ': bool'")

    def source(self, name):
        """The driver's Python source, as a function called ``name``."""
        arrays = ", ".join(self.elements)
        lines = [f"def {name}({arrays}, scalars):"]
        for k, s in enumerate(self.scalars):
            lines.append(f"    {s} = scalars[{k}] != 0" if s in self.flags
                         else f"    {s} = scalars[{k}]")
        lines.append("    for i in indices(param.size):")
        lines += ["        e_param = param[i]", "        e_grad = grad[i]"]
        for s, flag in self.state:
            load = f"{s}[i]" if flag is None else f"{s}[i] if {flag} else e_param"
            lines.append(f"        e_{s} = {load}")
        outputs = ", ".join(f"e_{a}" for a in ("param",) + tuple(s for s, _ in self.state))
        inputs = ", ".join([f"e_{a}" for a in self.elements] + list(self.scalars))
        lines.append(f"        {outputs} = elem({inputs})")
        lines.append("        param[i] = e_param")
        for s, flag in self.state:
            if flag is None:
                lines.append(f"        {s}[i] = e_{s}")
            else:
                lines += [f"        if {flag}:", f"            {s}[i] = e_{s}"]
        return "\n".join(lines) + "\n"


def signatures(specs):
    """Kernel name -> :class:`Signature`, for ``specs`` as ``rules.kernel_specs()``."""
    return {kernel: Signature(kernel, state) for kernel, state in specs.items()}


def source_hash(target_file, specs):
    """A short hash of everything a driver's code depends on."""
    h = hashlib.sha256()
    for path in (__file__, _math.__file__, target_file):
        h.update(Path(path).read_bytes())
    h.update(repr(sorted(specs.items())).encode())
    return h.hexdigest()[:16]


def build(element_jit, vocabulary, indices, module, target_file, specs):
    """The drivers for one target, as plain Python functions to compile.

    ``element_jit`` compiles the per-element math (e.g. ``njit(inline="always")``)
    with ``vocabulary`` (see ``math.compile_with``), ``indices(n)`` yields the
    indices this target's thread visits, and ``module`` / ``target_file`` name
    the target module: recorded in the drivers' ``__module__`` and, with the
    source hash, in their ``__qualname__`` (``cpu.adam_<hash>``) so each
    target's drivers get cache files of their own. Returns ``(math, drivers)``:
    the compiled math as a namespace and a dict kernel name -> driver.
    """
    sigs = signatures(specs)
    math = _math.compile_with(element_jit, vocabulary, names=tuple(sigs))
    digest = source_hash(target_file, specs)
    short = module.rpartition(".")[2]
    drivers = {}
    for kernel, sig in sigs.items():
        namespace = {"indices": indices, "elem": getattr(math, kernel)}
        code = compile(sig.source(kernel), __file__, "exec")
        exec(code, namespace)
        driver = namespace[kernel]
        driver.__module__ = module
        driver.__qualname__ = f"{short}.{kernel}_{digest}"
        drivers[kernel] = driver
    return math, drivers


def renamed(func, suffix):
    """A copy of ``func`` whose name and qualname end in ``suffix``."""
    clone = types.FunctionType(func.__code__, func.__globals__, func.__name__ + suffix,
                               func.__defaults__, func.__closure__)
    clone.__qualname__ = func.__qualname__ + suffix
    clone.__module__ = func.__module__
    return clone
