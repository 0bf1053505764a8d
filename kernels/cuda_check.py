"""The CUDA kernels compiled for GPUs that need not be here, and what the
compilers say about them.

Each kernel fastadapt launches is compiled to PTX by NVVM
(``numba.cuda.compile_ptx``) for compute capability 8.0 (A100) and 9.0
(H100), and the PTX is assembled by ``ptxas -v``, which reports registers,
stack and spills. From the PTX itself:

- **float64 instructions** (any ``.f64`` operand type) in a float32 kernel:
  a Python number or an int mixed into float32 math promotes it to float64,
  which runs at 1/64 of the float32 rate on consumer GPUs;
- **global loads and stores per element**: the element loop of an update
  kernel is cut into bodies (a run of global loads followed by a run of
  global stores: one element's, since the stores may alias the next
  element's loads and cannot be moved above them), and each body must read
  and write at most the arrays its gating setting declares, each once, in
  its storage width, and every setting must have a body that moves exactly
  the declared bytes (``rules.Rule.bytes_per_element`` for the plain
  layouts). LLVM unrolls and unswitches the loops, so one setting has several
  bodies, and a body may read less than declared (SGD's first step stores
  the momentum buffer without reading it);
- **each array once per element**: every access is traced back through the
  PTX to the kernel argument it addresses, and each loop (unrolled k times)
  must load each array it loads, and store each it stores, k times: a
  second read of an array (which would land in a body of its own, behind a
  store that may alias it) breaks the count. (Kernels that branch on an
  element's value, float16 stochastic rounding, get a weaker check: see
  :func:`branches_in_element`.)

Needs numba-cuda with NVVM and ``ptxas`` (``pip install "fastadapt[cuda]"``:
NVIDIA's wheels), no GPU and no driver. Compiling a kernel takes about a
second and assembling it about as long, so :func:`check` caches its results
on disk (keyed by everything the code depends on) and can spread the work
over processes.
"""
import collections
import concurrent.futures
import contextlib
import hashlib
import itertools
import json
import multiprocessing
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

from . import ptx as _ptx
from .layout import (BFLOAT16, BLOCKWISE8, COMPANDED, FLOAT16, NATIVE, ROOT8, SOFTSIGN8,
                     SPLIT8, SPLIT16, Layout)
from .ptx import (accesses, bodies, float64_instructions, reread, split_bodies,
                  traced_accesses, within)

#: The compute capabilities every kernel is compiled for.
CCS = ((8, 0), (9, 0))

#: The reduction kernel of ``reduce_cuda.py`` (not an update rule).
SUM_OF_SQUARES = "sum_of_squares"

_PTXAS = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill "
                    r"loads.*?Used (\d+) registers", re.S)


class Unavailable(RuntimeError):
    """NVVM or ptxas is not installed here (the reason is the message)."""


class Target(NamedTuple):
    """One kernel to compile: ``kernel`` (a kernel of ``rules.kernel_specs()``,
    or :data:`SUM_OF_SQUARES`), its compute ``dtype`` (the input's for the
    reduction) and its storage ``layout`` (a ``layout.Layout``; None: every
    array in ``dtype``)."""
    kernel: str
    dtype: str
    layout: Layout = None

    @property
    def name(self):
        if self.layout is None:
            return f"{self.kernel}[{self.dtype}]"
        return f"{self.kernel}[{self.dtype}:{self.layout.tag}]"


def _kernels():
    from . import cuda
    if cuda.SIMULATOR:
        raise Unavailable("the CUDA simulator is on (NUMBA_ENABLE_CUDASIM=1): nothing "
                          "is compiled")
    return cuda


def targets(full=False):
    """The kernels to compile: every update kernel in float32 and float64,
    the reduction for each gradient dtype, and the storage layouts of
    ``layouts(full)``."""
    from ..rules import kernel_specs
    out = [Target(k, d) for k in kernel_specs() for d in ("float32", "float64")]
    out += [Target(SUM_OF_SQUARES, d) for d in ("float32", "float64", "bfloat16", "float16")]
    out += [Target(k, "float32", layout) for k, layout in layouts(full)]
    return out


#: One of each storage feature on a real GPU, for the default run: each
#: 16-bit format as param, grad and state, master weights, stochastic
#: rounding to either format, a state-gating flag on and off.
REPRESENTATIVE = (("adam", "bbbbb", "s"), ("adam", "bffff", "m"), ("adam", "hhhhf", "s"),
                  ("adam", "hhfff", "m"), ("sgd", "ffb", ""), ("rmsprop", "bfbbb", ""),
                  ("adagrad", "hhh", ""),
                  # 8-bit state, both formats (one thread per block or group)
                  ("adam", "ffcrr", ""), ("adam", "bbcrr", "s"), ("rmsprop", "ffrcc", ""),
                  ("adam", "ffqqq", ""), ("sgd", "hhq", "m"),
                  # split master weights
                  ("adam", "bbfff", "m16"), ("rmsprop", "bfbbb", "m8"),
                  ("adam", "bbcrr", "m8"))


def _master(mode):
    """A layout's ``master`` from a mode string: "m16" / "m8" a split master,
    "m" a float32 one."""
    return SPLIT16 if "m16" in mode else SPLIT8 if "m8" in mode else "m" in mode


def layouts(full=False):
    """``(kernel, Layout)`` pairs of the storage layouts the CUDA path runs:
    :data:`REPRESENTATIVE`, or with ``full`` every 16-bit one the optimizer
    classes make (one state dtype for all the state arrays; an array its flag
    turns off stays in the compute dtype; bfloat16 params also with either
    split master), for every kernel and every setting of its flags, and with
    8-bit state in either format float32 params, and bfloat16 params and
    gradients plain, with a master copy (float32 or split) or stochastic
    rounding (the same drivers, so float16 params add nothing the 16-bit
    layouts do not)."""
    if not full:
        return [(k, Layout(tuple(codes), _master(mode), "s" in mode))
                for k, codes, mode in REPRESENTATIVE]
    from ..rules import RULES, kernel_specs
    non_negative = {rule.kernel: rule.non_negative_state for rule in RULES.values()}
    f, b, h = NATIVE, BFLOAT16, FLOAT16
    storage = [(f, f, b, "")]                          # float32 params, bfloat16 state
    storage += [(p, g, s, mode) for p, grads, states in ((b, (b, f), (f, b)),
                                                        (h, (h, f), (f, b, h)))
                for g in grads for s in states
                for mode in ("", "m", "s") + (("m16", "m8") if p == b else ())]
    out = []
    for kernel, spec in kernel_specs().items():
        gates = sorted({flag for _, flag in spec if flag is not None})
        for values in itertools.product((True, False), repeat=len(gates)):
            on = dict(zip(gates, values))
            for p, g, s, mode in storage:
                codes = (p, g) + tuple(s if flag is None or on[flag] else f
                                       for _, flag in spec)
                layout = Layout(codes, _master(mode), "s" in mode)
                if not layout.plain and (kernel, layout) not in out:
                    out.append((kernel, layout))
            for p, mode in ((f, ""), (b, ""), (b, "m"), (b, "m16"), (b, "m8"), (b, "s")):
                for eight in ("q", "c"):
                    codes = (p, p) + tuple(
                        f if not (flag is None or on[flag]) else BLOCKWISE8 if eight == "q"
                        else ROOT8 if name in non_negative[kernel] else SOFTSIGN8
                        for name, flag in spec)
                    layout = Layout(codes, _master(mode), "s" in mode)
                    if set(codes) - {f, b} and (kernel, layout) not in out:
                        out.append((kernel, layout))
    return out


def signature(target):
    """The Numba argument types the launcher passes to ``target``'s kernel."""
    from numba import types
    if target.kernel == SUM_OF_SQUARES:
        x = types.uint16 if target.dtype in ("bfloat16", "float16") else \
            getattr(types, target.dtype)
        return (x[::1], types.int64[::1], types.int64[::1], types.float64[::1])
    sig = _kernels().SIGNATURES[target.kernel]
    t = getattr(types, target.dtype)
    layout = target.layout or Layout((NATIVE,) * len(sig.elements))
    arrays = []
    for c in layout.codes:
        arrays += [types.uint16[::1]] if c in (BFLOAT16, FLOAT16) else \
            [types.uint8[::1], types.float32[::1], types.float32[::1], types.float32[::1],
             types.uint8[::1]] if c == BLOCKWISE8 else \
            [types.uint8[::1], types.float32[::1]] if c in COMPANDED else [t[::1]]
    if layout.master:
        arrays.append({SPLIT16: types.uint16, SPLIT8: types.uint8}.get(
            layout.master, types.float32)[::1])
    arrays.append(types.UniTuple(t, len(sig.scalars)))
    if layout.stochastic:
        arrays += [types.uint64, types.uint64, types.int64]
    return tuple(arrays)


def python_function(target):
    """The Python source function of ``target``'s kernel (what ``cuda.jit`` compiles)."""
    kernels = _kernels()
    if target.kernel == SUM_OF_SQUARES:
        from . import reduce_cuda
        from .._storage import bfloat16
        dtype = bfloat16() if target.dtype == "bfloat16" else np.dtype(target.dtype)
        return reduce_cuda.kernel_for(dtype).py_func
    if target.layout is None:
        return kernels.KERNELS[target.kernel].py_func
    return kernels.layout_kernel(target.kernel, target.layout).py_func


def expected_bodies(target):
    """The ``(load widths, store widths)`` of one element of ``target``'s
    update loop, sorted, for each setting of its state-gating flags."""
    sig = _kernels().SIGNATURES[target.kernel]
    itemsize = np.dtype(target.dtype).itemsize
    layout = target.layout or Layout((NATIVE,) * len(sig.elements))
    width = {a: 2 if c in (BFLOAT16, FLOAT16) else itemsize
             for a, c in zip(sig.elements, layout.codes)}
    gates = sorted({flag for _, flag in sig.state if flag is not None})
    out = set()
    for values in itertools.product((True, False), repeat=len(gates)):
        on = dict(zip(gates, values))
        states = [width[s] for s, flag in sig.state if flag is None or on[flag]]
        master = {SPLIT16: [2], SPLIT8: [1], True: [4]}.get(layout.master, [])
        loads = [*(master if layout.master is True else [width["param"], *master]),
                 width["grad"], *states]
        stores = [width["param"], *master, *states]
        out.add((tuple(sorted(loads)), tuple(sorted(stores))))
    return sorted(out)


def branches_in_element(target):
    """Whether ``target``'s element update branches on the element's value:
    stochastic rounding to float16 (three cases: NaN / inf, float16's normal
    and subnormal range, below it). NVVM then stores the parameter in each
    branch and lays the branches out away from the loop, so counting
    accesses in the PTX's text order overcounts: for these kernels
    :func:`traffic_problems` checks only that every access is to one of the
    kernel's arrays, in a declared width."""
    layout = target.layout
    return layout is not None and layout.stochastic and layout.codes[0] == FLOAT16


def is_state8(target):
    """Whether ``target`` keeps state in 8 bits (either format)."""
    return target.layout is not None and bool(
        set(target.layout.codes) & {BLOCKWISE8, *COMPANDED})


def state8_arguments(target):
    """``(name, width, role)`` of each array argument of an 8-bit state
    kernel, in order: ``role`` is ``"rw"`` (read and written, once each per
    element: the state, the param but under a master copy, the codes, and
    the scale once per group), ``"rw2"`` (a block's absmax: read once,
    written on one of two paths, for a block with or without a non-finite
    value), ``"r"`` (the gradient),
    ``"w"`` (a param under a float32 master copy) or ``"table"`` (the blockwise
    code's map, thresholds and buckets: looked up, never written)."""
    sig = _kernels().SIGNATURES[target.kernel]
    layout = target.layout
    out = []
    for a, c in zip(sig.elements, layout.codes):
        if c == BLOCKWISE8:
            out += [(f"{a}.codes", 1, "rw"), (f"{a}.absmax", 4, "rw2"), (f"{a}.map", 4, "table"),
                    (f"{a}.thresholds", 4, "table"), (f"{a}.buckets", 1, "table")]
        elif c in COMPANDED:
            out += [(f"{a}.codes", 1, "rw"), (f"{a}.scale", 4, "rw")]
        else:
            # (a split master's param is its high half: read and written)
            role = "r" if a == "grad" else "w" if a == "param" and layout.master is True \
                else "rw"
            out.append((a, 2 if c in (BFLOAT16, FLOAT16) else 4, role))
    if layout.master:
        out.append(("master", {SPLIT16: 2, SPLIT8: 1}.get(layout.master, 4), "rw"))
    return out


def state8_traffic_problems(target, ptx):
    """:func:`traffic_problems` for a kernel of 8-bit state. Its loops over a
    block (group) are three (decode the codes into local memory, update the
    elements, encode), each unrolled its own way, so bodies do not line up;
    instead, over the whole kernel, every access must be to a declared array
    in its declared width (one byte per code, four per absmax or scale), no
    table or gradient is written, and each array read and written is loaded
    by as many instructions as store it (a second read of a code, an
    element or a scale adds loads; a block's absmax is stored on two paths,
    so by half as many), the gradient (and a master copy) by as many as
    store the param."""
    arguments = state8_arguments(target)
    counts = collections.Counter()
    problems = []
    for _, op, argument, width in traced_accesses(ptx):
        if argument is None or argument >= len(arguments):
            problems.append(f"an access to argument {argument}, not one of the "
                            f"{len(arguments)} arrays")
            continue
        name, declared, role = arguments[argument]
        if width != declared:
            problems.append(f"{name} accessed {width} bytes at a time, not {declared}")
        if (op == "st" and role in ("r", "table")) or (op == "ld" and role == "w"):
            problems.append(f"{name} {'stored' if op == 'st' else 'loaded'}, declared "
                            f"{role}")
        counts[op, name] += 1
    for name, _, role in arguments:
        paths = {"rw": 1, "rw2": 2}.get(role)
        if paths and counts["st", name] != paths * counts["ld", name]:
            problems.append(f"{name}: {counts['ld', name]} loads but {counts['st', name]} "
                            f"stores (read once and written once, on one of {paths} paths)")
    readers = ["grad"] + (["master"] if target.layout.master else [])
    for name in readers:
        if counts["ld", name] != counts["st", "param"]:
            problems.append(f"{name}: {counts['ld', name]} loads but param has "
                            f"{counts['st', 'param']} stores")
    return problems


def traffic_problems(target, ptx):
    """What is wrong with ``target``'s global memory traffic in ``ptx`` (empty: nothing)."""
    if is_state8(target):
        return state8_traffic_problems(target, ptx)
    found = bodies(ptx)
    if target.kernel == SUM_OF_SQUARES:
        # One float64 partial per chunk; the element loop only reads.
        stores = [s for _, body in found for s in body]
        return [] if stores == [8] else [f"expected one 8-byte store (the chunk's "
                                         f"partial), found stores of {stores} bytes"]
    if branches_in_element(target):
        # Only what flow-insensitive counting can say: every access is to one
        # of the kernel's arrays, in one of the declared widths.
        sig = _kernels().SIGNATURES[target.kernel]
        arrays = len(sig.elements) + bool(target.layout.master)
        widths = {w for loads, stores in expected_bodies(target) for w in loads + stores}
        ops = [op for group in accesses(ptx, arrays).values() for op in group]
        problems = [f"an access to argument {arg}, not one of the {arrays} arrays"
                    for arg in sorted({a for _, a in ops if a is None or a >= arrays},
                                      key=str)]
        problems += [f"an access of {w} bytes, not a declared width {sorted(widths)}"
                     for w in sorted({w for body in found for side in body for w in side}
                                     - widths)]
        return problems
    expected = expected_bodies(target)
    problems = [f"a body loads {loads} and stores {stores} bytes, more than any setting "
                f"declares ({expected})"
                for loads, stores in sorted(set(found))
                if not any(within(loads, el) and within(stores, es) for el, es in expected)]
    problems += [f"no body moves the declared {loads} / {stores} bytes"
                 for loads, stores in expected if (loads, stores) not in found]
    sig = _kernels().SIGNATURES[target.kernel]
    arrays = len(sig.elements) + bool(target.layout and target.layout.master)
    for loop, ops in accesses(ptx, arrays).items():
        groups = [ops] if loop is not None else split_bodies(ops)
        for group in groups:
            why = reread(group)
            if why:
                where = "outside loops" if loop is None else "in a loop"
                problems.append(f"{where}, an array is read or written more than once "
                                f"per element ({why})")
    return problems


def ptxas_path():
    """The ``ptxas`` of NVIDIA's wheels (or on PATH); Unavailable if none."""
    try:
        from cuda.pathfinder import find_nvidia_binary_utility
        path = find_nvidia_binary_utility("ptxas")
    except Exception:  # an older cuda-pathfinder, or none
        path = None
    path = path or shutil.which("ptxas")
    if not path:
        raise Unavailable('ptxas not found: pip install "fastadapt[cuda]" (NVIDIA\'s '
                          "nvidia-cuda-nvcc wheel has it)")
    return path


@contextlib.contextmanager
def _compute_capability(cc):
    """numba-cuda types device functions for the current device's compute
    capability; with no GPU here, name one."""
    from numba import cuda
    import numba.cuda.dispatcher as dispatcher
    if cuda.is_available() or not hasattr(dispatcher, "get_current_device"):
        yield
        return
    saved = dispatcher.get_current_device
    dispatcher.get_current_device = lambda: type("Device", (), {"compute_capability": cc})
    try:
        yield
    finally:
        dispatcher.get_current_device = saved


def compile_function(func, sig, cc):
    """PTX of the kernel ``func`` for argument types ``sig`` and compute
    capability ``cc``, and ptxas's report on it: ``(ptx, {"registers",
    "stack", "spill_stores", "spill_loads"})`` (bytes but registers)."""
    from numba import cuda
    ptxas = ptxas_path()
    with _compute_capability(cc):
        try:
            ptx = cuda.compile_ptx(func, sig, cc=cc)[0]
        except Exception as exc:
            if "NVVM" in type(exc).__name__ or "libnvvm" in str(exc).lower():
                raise Unavailable(f"NVVM unavailable: {exc}") from None
            raise
    arch = f"sm_{cc[0]}{cc[1]}"
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp, "kernel.ptx")
        source.write_text(ptx)
        run = subprocess.run([ptxas, f"-arch={arch}", "-v", str(source),
                              "-o", str(Path(tmp, "kernel.cubin"))],
                             capture_output=True, text=True, timeout=300)
    if run.returncode:
        raise RuntimeError(f"ptxas failed for {arch}:\n{run.stderr[-3000:]}")
    m = _PTXAS.search(run.stdout + run.stderr)
    if not m:
        raise RuntimeError(f"cannot read ptxas's report:\n{run.stderr[-2000:]}")
    stack, spill_stores, spill_loads, registers = map(int, m.groups())
    return ptx, {"registers": registers, "stack": stack, "spill_stores": spill_stores,
                 "spill_loads": spill_loads}


def compile_target(target, ccs=CCS):
    """Compile and assemble ``target`` for each of ``ccs``; ``{cc: result}``,
    a result being ptxas's report (see :func:`compile_function`) plus ``f64``
    (:func:`float64_instructions`), ``problems`` (traffic, see
    :func:`traffic_problems`) and ``seconds``."""
    func, sig = python_function(target), signature(target)
    out = {}
    for cc in ccs:
        start = time.perf_counter()
        ptx, report = compile_function(func, sig, cc)
        out[cc] = {**report, "f64": float64_instructions(ptx),
                   "problems": traffic_problems(target, ptx),
                   "seconds": time.perf_counter() - start}
    return out


def problems(target, result):
    """Everything wrong with one compiled kernel: spills, float64 work in a
    float32 update, traffic beyond the declared bytes."""
    out = list(result["problems"])
    if result["spill_stores"] or result["spill_loads"]:
        out.append(f"spills {result['spill_stores']} bytes stored, "
                   f"{result['spill_loads']} loaded")
    # The reduction accumulates float32 input in float64 on purpose (exact partials).
    if target.dtype != "float64" and target.kernel != SUM_OF_SQUARES and result["f64"]:
        out.append(f"float64 instructions in a float32 kernel: {result['f64']}")
    return out


def _key(target, cc, versions):
    kernels = _kernels()
    h = hashlib.sha256()
    h.update(Path(__file__).read_bytes())
    h.update(Path(_ptx.__file__).read_bytes())
    from . import reduce_cuda
    h.update(Path(reduce_cuda.__file__).read_bytes())
    h.update(kernels._DIGEST.encode())
    h.update(repr((target, cc, versions)).encode())
    return h.hexdigest()[:32]


def _versions():
    import numba_cuda
    run = subprocess.run([ptxas_path(), "--version"], capture_output=True, text=True)
    return numba_cuda.__version__, run.stdout.strip().splitlines()[-1:]


def check(targets, ccs=CCS, cache_dir=None, workers=1):
    """Compile every target for every cc: ``{(target, cc): result}`` (see
    :func:`compile_target`). Results already in ``cache_dir`` (written by an
    earlier call, for the same sources, numba-cuda and ptxas) are read from
    there; ``workers`` > 1 compiles in that many processes."""
    _kernels()
    versions = _versions()
    cache = Path(cache_dir) if cache_dir is not None else None
    results, todo = {}, []
    for target in targets:
        cached = {}
        for cc in ccs:
            path = cache / f"{_key(target, cc, versions)}.json" if cache else None
            if path is not None and path.exists():
                cached[cc] = json.loads(path.read_text())
        if len(cached) == len(ccs):
            results.update({(target, cc): r for cc, r in cached.items()})
        else:
            todo.append(target)
    if workers > 1 and len(todo) > 1:
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
            done = list(pool.map(compile_target, todo, itertools.repeat(ccs)))
    else:
        done = [compile_target(t, ccs) for t in todo]
    for target, per_cc in zip(todo, done):
        for cc, result in per_cc.items():
            results[(target, cc)] = result
            if cache is not None:
                cache.mkdir(parents=True, exist_ok=True)
                path = cache / f"{_key(target, cc, versions)}.json"
                tmp = path.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_text(json.dumps(result))
                tmp.replace(path)
    return results


def register_table(results):
    """Rows ``{"kernel", "sm_80", "sm_90", ...}`` of registers per thread
    (and stack bytes, spill bytes) from :func:`check`'s results, one per target."""
    rows = {}
    for (target, cc), r in results.items():
        row = rows.setdefault(target.name, {"kernel": target.name})
        arch = f"sm_{cc[0]}{cc[1]}"
        row[arch] = r["registers"]
        row[f"{arch} stack"] = r["stack"]
        row[f"{arch} spill"] = r["spill_stores"] + r["spill_loads"]
    return list(rows.values())
