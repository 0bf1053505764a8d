"""The GPU section of ``fastadapt bench``: the main table's comparison on an
NVIDIA GPU.

For every rule configuration and size: fastadapt's functional step on Numba
device arrays, a same-traffic roofline kernel (the CUDA twin of
``fastadapt.kernels.roofline``: the rule's reads and writes with trivial math,
launched with the drivers' grid), and torch.optim's single-tensor, foreach and
fused paths on CUDA tensors when torch has CUDA. Bytes per element come from
the rule registry (``Config.bytes_per_element``). All are timed in interleaved
rounds with a device synchronisation before each clock reading, so a sample of
several back-to-back steps hides each launch behind the previous kernel, as in
a training loop.

Without a GPU (or without numba-cuda) the section says why and measures
nothing. Under Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) it runs the
same code on the CPU, which tests its logic; the times then mean nothing, and
the table says so.
"""
import itertools
import os
import time

import numpy as np

from ..functional import step_for
from ._configs import make_problem
from ._implementations import TORCH_MODES, Unavailable, import_torch, torch_optimizer
from ._timing import interleaved


def status():
    """``(True, device name)`` when fastadapt can run on a GPU here, else
    ``(False, reason)``."""
    try:
        import numba_cuda  # noqa: F401  (fastadapt's GPU path needs NVIDIA's numba-cuda)
    except ImportError:
        return False, ('no GPU section: numba-cuda is not installed (pip install '
                       '"fastadapt[cuda]")')
    try:
        from numba import cuda
        available = cuda.is_available()
    except Exception as exc:  # numba-cuda broken: no GPU path
        return False, f"no GPU section: numba-cuda is not usable ({type(exc).__name__}: {exc})"
    if not available:
        return False, "no GPU section: no CUDA GPU found (numba.cuda.is_available() is False)"
    if _simulator():
        return True, "Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1: times are meaningless)"
    name = cuda.get_current_device().name
    return True, name.decode() if isinstance(name, bytes) else str(name)


def registers(full=False, cache_dir=None, workers=1):
    """Registers per thread (and stack and spill bytes) of every CUDA kernel
    for sm_80 and sm_90, compiled here by NVVM and ptxas (no GPU needed; see
    ``kernels/cuda_check.py``): ``{"rows": [...]}``, or ``{"reason": ...}``
    where the compilers are missing. ``full``: every storage layout too."""
    try:
        import numba_cuda  # noqa: F401
        from ..kernels import cuda_check
        results = cuda_check.check(cuda_check.targets(full), cache_dir=cache_dir,
                                   workers=workers)
    except ImportError:
        return {"reason": 'numba-cuda is not installed (pip install "fastadapt[cuda]")'}
    except Exception as exc:  # cuda_check.Unavailable, or the simulator is on
        return {"reason": f"{type(exc).__name__}: {exc}"}
    rows = cuda_check.register_table(results)
    problems = {f"{t.name} sm_{cc[0]}{cc[1]}": p for (t, cc), r in results.items()
                if (p := cuda_check.problems(t, r))}
    return {"rows": rows, "problems": problems}


def _simulator():
    from ..kernels import cuda as kernels
    return bool(kernels.SIMULATOR)


# ----------------------------------------------------------------- roofline
# The same-traffic kernels for 0..4 state arrays. ``cuda`` is bound to
# numba.cuda on first use (importing this module needs no CUDA); it is a module
# global, not a closure variable, so that the CUDA simulator can swap in its own.
cuda = None


def _roofline0(param, grad):
    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        param[i] += grad[i]


def _roofline1(param, grad, s0):
    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        g = grad[i]
        param[i] += g
        s0[i] += g


def _roofline2(param, grad, s0, s1):
    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        g = grad[i]
        param[i] += g
        s0[i] += g
        s1[i] += g


def _roofline3(param, grad, s0, s1, s2):
    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        g = grad[i]
        param[i] += g
        s0[i] += g
        s1[i] += g
        s2[i] += g


def _roofline4(param, grad, s0, s1, s2, s3):
    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        g = grad[i]
        param[i] += g
        s0[i] += g
        s1[i] += g
        s2[i] += g
        s3[i] += g


_SOURCES = (_roofline0, _roofline1, _roofline2, _roofline3, _roofline4)
MAX_STATE = 4
_KERNELS = {}


def roofline_kernel(k):
    """The CUDA same-traffic kernel for a rule with ``k`` state arrays (it reads
    param, grad and each state once and writes param and each state once:
    ``itemsize * (3 + 2k)`` bytes per element), compiled on first use."""
    if not 0 <= k <= MAX_STATE:
        raise ValueError(f"no roofline kernel for {k} state arrays (0..{MAX_STATE})")
    if k not in _KERNELS:
        global cuda
        from numba import cuda as numba_cuda
        cuda = numba_cuda
        _KERNELS[k] = cuda.jit(_SOURCES[k])
    return _KERNELS[k]


def _launch_config(n, cuda):
    from .. import _cuda
    from ..kernels import cuda as kernels
    device = getattr(cuda.get_current_device(), "id", 0)   # the simulator's has no id
    return kernels.launch_config(n, _cuda._sm_count(device, cuda))


# ----------------------------------------------------------------- steps
def build_steps(config, param, grad, torch_reason=None):
    """``({name: step}, {name: reason})`` for one configuration on the GPU:
    ``fastadapt`` and ``roofline`` on Numba device arrays, the torch paths on
    CUDA tensors unless ``torch_reason`` says why they cannot run."""
    from numba import cuda
    steps, unavailable = {}, {}
    state_names = config.state_names

    p, g = cuda.to_device(param), cuda.to_device(grad)
    state = {name: cuda.to_device(np.zeros_like(param)) for name in state_names}
    fn, options = step_for(config.rule), {**config.options, **state}
    if config.rule.takes_step:
        counter = itertools.count(1)
        steps["fastadapt"] = lambda: fn(p, g, step=next(counter), **options)
    else:
        steps["fastadapt"] = lambda: fn(p, g, **options)
    steps["fastadapt"].arrays = (p, g, state)

    kernel = roofline_kernel(len(state_names))
    blocks, threads = _launch_config(param.size, cuda)
    arrays = [cuda.to_device(param), cuda.to_device(grad)] + [
        cuda.to_device(np.zeros_like(param)) for _ in state_names]

    def roofline():
        kernel[blocks, threads](*arrays)
    roofline.arrays = arrays
    steps["roofline"] = roofline

    for mode in TORCH_MODES:
        if torch_reason:
            unavailable[mode] = torch_reason
            continue
        torch = import_torch()
        tp = torch.from_numpy(param.copy()).to("cuda").requires_grad_()
        tp.grad = torch.from_numpy(grad.copy()).to("cuda")
        try:
            steps[mode] = torch_optimizer(config, [tp], mode).step
        except Unavailable as exc:
            unavailable[mode] = f"{exc} on CUDA"
    return steps, unavailable


def _torch_reason():
    """None when torch can run on the GPU here, else why not."""
    if _simulator():
        return "torch does not run on the CUDA simulator"
    try:
        torch = import_torch()
    except Unavailable as exc:
        return str(exc)
    if not torch.cuda.is_available():
        return f"torch {torch.__version__} has no CUDA"
    return None


def measure(configs, sizes, dtype, budget_s, min_rounds, progress, advance=None):
    """The GPU section's data: ``{"available": False, "reason": ...}`` without
    a GPU, else the device, one row per configuration and size, and the
    roofline's bandwidth at the largest size."""
    ok, what = status()
    if not ok:
        progress(what)
        return {"available": False, "reason": what}
    from numba import cuda
    sync = cuda.synchronize
    torch_reason = _torch_reason()
    out = {"available": True, "device": what, "simulator": _simulator(), "rows": []}
    if torch_reason:
        out["torch_unavailable"] = torch_reason
    for config in configs:
        for n in sizes:
            start = time.perf_counter()
            param, grad = make_problem(n, dtype)
            nbytes = config.bytes_per_element(np.dtype(dtype).itemsize) * n
            try:
                steps, unavailable = build_steps(config, param, grad, torch_reason)
                timings = interleaved(steps, budget_s=budget_s, min_rounds=min_rounds,
                                      sync=sync)
            except Exception as exc:  # report, do not hide: the row says what failed
                out["rows"].append({"config": config.key, "label": config.label, "n": n,
                                    "error": f"{type(exc).__name__}: {exc}"})
                progress(f"GPU {config.label} n={n:,}: {type(exc).__name__}: {exc}")
                continue
            finally:
                if advance:
                    advance(budget_s + 0.5)
            row = {"config": config.key, "label": config.label, "n": n,
                   "bytes_per_element": nbytes // n,
                   "implementations": {k: {**v.as_dict(), "gbps": nbytes / v.median_s / 1e9}
                                       for k, v in timings.items()},
                   "unavailable": unavailable}
            fa = timings["fastadapt"].median_s
            row["pct_roofline"] = 100 * timings["roofline"].median_s / fa
            row["speedup"] = {k: v.median_s / fa for k, v in timings.items()
                              if k != "fastadapt"}
            out["rows"].append(row)
            progress(f"GPU {config.label} n={n:,}: fastadapt {fa * 1e6:.1f} us, "
                     f"{row['pct_roofline']:.0f}% of roofline "
                     f"({time.perf_counter() - start:.1f} s)")
            steps.clear()
    out["registers"] = registers(workers=max(1, min(8, os.cpu_count() or 1)))
    largest = [r for r in out["rows"] if "implementations" in r
               and r["n"] == max(x["n"] for x in out["rows"])]
    if largest:
        out["roofline_gbps"] = float(np.median(
            [r["implementations"]["roofline"]["gbps"] for r in largest]))
        out["roofline_n"] = largest[0]["n"]
    return out
