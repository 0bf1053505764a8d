"""The measurements of ``fastadapt bench``, one function per section.

Each returns plain JSON-able data; :mod:`._report` turns it into tables.
``progress`` is a callable taking one line of text (shown on stderr).
"""
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from ..kernels import cpu
from ._configs import BY_KEY, make_problem
from ._implementations import (GPT2_LABELS, IMPLEMENTATIONS, LABELS, TORCH_MODES, Unavailable,
                               build_all, driver_call, gpt2_adam_steps, gpt2_small_shapes,
                               import_torch)
from ._machine import memory_available
from ._timing import interleaved


def _fmt_n(n):
    return f"{n:,}"


def _impl_entry(timing, nbytes):
    return {**timing.as_dict(), "gbps": nbytes / timing.median_s / 1e9}


# ----------------------------------------------------------------- main sweep
def sweep(configs, sizes, dtype, budget_s, min_rounds, progress, retry):
    """Every configuration at every size, all implementations interleaved;
    measured again (same arrays) while other processes disturb it (``retry``)."""
    rows, total, done = [], len(configs) * len(sizes), 0
    for config in configs:
        for n in sizes:
            done += 1
            start = time.perf_counter()
            param, grad = make_problem(n, dtype)
            steps, unavailable = build_all(config, param, grad)
            del param, grad
            row = retry.measure(
                lambda: sweep_row(config, n, dtype,
                                  interleaved(steps, budget_s=budget_s, min_rounds=min_rounds),
                                  unavailable),
                progress)
            steps.clear()                   # free this size's arrays before the next
            rows.append(row)
            progress(f"[{done}/{total}] {config.label} n={_fmt_n(n)}: {_summary(row)}"
                     f"  ({time.perf_counter() - start:.1f} s)")
    return rows


def sweep_row(config, n, dtype, timings, unavailable):
    """One (configuration, size) result with its derived ratios."""
    bpe = config.bytes_per_element(np.dtype(dtype).itemsize)
    nbytes = bpe * n
    impls = {}
    for name in IMPLEMENTATIONS:
        if name in timings:
            impls[name] = _impl_entry(timings[name], nbytes)
        else:
            impls[name] = {"unavailable": unavailable.get(name, "not run")}
    row = {"config": config.key, "label": config.label, "rule": config.rule_name,
           "options": config.options, "n": n, "dtype": np.dtype(dtype).name,
           "bytes_per_element": bpe, "implementations": impls}
    fa = timings.get("fastadapt")
    if fa is not None:
        t = fa.median_s
        row["fastadapt_us"] = t * 1e6
        row["fastadapt_gbps"] = nbytes / t / 1e9
        if "roofline" in timings:
            row["pct_roofline"] = 100 * timings["roofline"].median_s / t
        row["speedup"] = {name: timings[name].median_s / t
                          for name in timings if name != "fastadapt"}
        torch_times = [timings[m].median_s for m in TORCH_MODES if m in timings]
        if torch_times:
            row["speedup"]["torch_best"] = min(torch_times) / t
    return row


def _summary(row):
    if "fastadapt_us" not in row:
        return "fastadapt did not run"
    s = row["speedup"]
    parts = [f"fastadapt {row['fastadapt_us']:.1f} us ({row['fastadapt_gbps']:.1f} GB/s)"]
    if "pct_roofline" in row:
        parts.append(f"{row['pct_roofline']:.0f}% of roofline")
    if "numpy" in s:
        parts.append(f"{s['numpy']:.1f}x NumPy")
    for mode in TORCH_MODES:
        if mode in s:
            parts.append(f"{s[mode]:.2f}x {LABELS[mode]}")
    return ", ".join(parts)


# ----------------------------------------------------------------- per-call cost
def per_call(configs, sizes, dtype, budget_s, min_rounds, progress, retry):
    """Small arrays: the whole call vs the compiled driver alone vs torch.

    ``fastadapt - driver`` is what the Python side (checks, scalars, dispatch)
    costs per call.
    """
    rows = []
    for config in configs:
        for n in sizes:
            param, grad = make_problem(n, dtype)
            steps, unavailable = build_all(config, param, grad,
                                           ("fastadapt",) + tuple(TORCH_MODES))
            driver, args = driver_call(config, param, grad)
            kernel = driver.serial if n < cpu.SERIAL_BELOW else driver.parallel
            steps["driver"] = lambda kernel=kernel, args=args: kernel(*args)

            def run():
                timings = interleaved(steps, budget_s=budget_s, min_rounds=min_rounds)
                return {"us": {name: t.median_s * 1e6 for name, t in timings.items()}}
            row = {"config": config.key, "label": config.label, "n": n,
                   "dtype": np.dtype(dtype).name, **retry.measure(run, progress),
                   "unavailable": unavailable}
            us = row["us"]
            row["overhead_us"] = us["fastadapt"] - us["driver"]
            if "torch_fused" in us:
                row["vs_torch_fused"] = us["fastadapt"] / us["torch_fused"]
            rows.append(row)
            fused = (f", torch fused {us['torch_fused']:.1f} us" if "torch_fused" in us
                     else "")
            progress(f"per-call {config.label} n={_fmt_n(n)}: fastadapt {us['fastadapt']:.1f} us, "
                     f"driver {us['driver']:.1f} us{fused}")
    return rows


# ----------------------------------------------------------------- threshold
def threshold(configs, sizes, dtype, budget_s, min_rounds, progress, retry):
    """``DRIVERS[rule].serial`` vs ``.parallel`` on small arrays: where the
    thread pool starts paying for itself (``SERIAL_BELOW`` in kernels/cpu.py)."""
    rows = []
    for config in configs:
        times = {"serial": [], "parallel": []}
        others = []
        for n in sizes:
            param, grad = make_problem(n, dtype)
            driver, args = driver_call(config, param, grad)

            def run():
                timings = interleaved({"serial": lambda: driver.serial(*args),
                                       "parallel": lambda: driver.parallel(*args)},
                                      budget_s=budget_s, min_rounds=min_rounds)
                return {kind: t.median_s * 1e6 for kind, t in timings.items()}
            result = retry.measure(run, progress)
            for kind in times:
                times[kind].append(result[kind])
            others.append(result["others_cpu"])
        faster = [p < s for s, p in zip(times["serial"], times["parallel"])]
        crossover = next((sizes[i] for i in range(len(sizes)) if all(faster[i:])), None)
        rows.append({"config": config.key, "label": config.label, "sizes": list(sizes),
                     "serial_us": times["serial"], "parallel_us": times["parallel"],
                     "crossover": crossover, "others_cpu": others})
        progress(f"threshold {config.label}: parallel faster from n = "
                 f"{_fmt_n(crossover) if crossover else f'> {_fmt_n(sizes[-1])}'}")
    crossovers = sorted(r["crossover"] if r["crossover"] else 2 * sizes[-1] for r in rows)
    median = crossovers[(len(crossovers) - 1) // 2] if crossovers else None
    return {"serial_below": cpu.SERIAL_BELOW, "dtype": np.dtype(dtype).name, "rows": rows,
            "median_crossover": median}


# ----------------------------------------------------------------- GPT-2
GPT2_ORDER = ("fastadapt_class", "fastadapt_one_array", "torch_fused", "fastadapt_per_array",
              "torch_foreach")


def gpt2(dtype, budget_s, min_rounds, progress, retry, names=GPT2_ORDER, d_model=768):
    """Adam over GPT-2 small's 148 parameter arrays: fastadapt's optimizer class
    (one flat buffer) against torch's fused Adam over the list of tensors, and
    against ``adam_step`` on one array of the same total size (the class's
    floor). ``d_model`` narrows the model and keeps its 148 arrays."""
    shapes = gpt2_small_shapes(d_model)
    numel = sum(int(np.prod(s)) for s in shapes)
    itemsize = np.dtype(dtype).itemsize
    per_impl = 4 * numel * itemsize          # param, grad, exp_avg, exp_avg_sq
    sources = 2 * numel * itemsize
    available = memory_available()
    try:
        import_torch()
        chosen = list(names)
    except Unavailable:
        chosen = [n for n in names if not n.startswith("torch")]
    if available is not None:
        while chosen and sources + per_impl * len(chosen) > 0.75 * available:
            chosen.pop()
    out = {"arrays": len(shapes), "elements": numel, "d_model": d_model, "dtype": np.dtype(dtype).name,
           "bytes_per_step": BY_KEY["adam"].bytes_per_element(itemsize) * numel, "results": {}, "unavailable": {}}
    for name in names:
        if name not in chosen:
            out["unavailable"][name] = ("torch not installed" if name.startswith("torch")
                                        and "torch_fused" not in chosen
                                        else "not enough free memory for it as well")
    if not chosen:
        return out
    progress(f"GPT-2 (d_model={d_model}): {len(shapes)} arrays, {_fmt_n(numel)} elements, "
             f"{per_impl * len(chosen) / 2**30:.1f} GiB for {len(chosen)} implementations")
    rng = np.random.default_rng(0)
    flat_param = rng.standard_normal(numel, dtype=np.dtype(dtype))
    flat_grad = rng.standard_normal(numel, dtype=np.dtype(dtype))
    steps, unavailable = gpt2_adam_steps(shapes, flat_param, flat_grad, chosen)
    del flat_param, flat_grad
    out["unavailable"].update(unavailable)
    result = retry.measure(
        lambda: {"timings": interleaved(steps, budget_s=budget_s, min_rounds=min_rounds)},
        progress)
    steps.clear()
    timings = result.pop("timings")
    out.update(result)
    for name, t in timings.items():
        out["results"][name] = {**t.as_dict(), "ms": t.median_s * 1e3,
                                "gbps": out["bytes_per_step"] / t.median_s / 1e9}
    if "fastadapt_class" in timings and "fastadapt_one_array" in timings:
        out["class_over_one_array"] = (timings["fastadapt_class"].median_s
                                       / timings["fastadapt_one_array"].median_s)
    base = timings.get("torch_fused")
    if base is not None:
        for name, t in timings.items():
            out["results"][name]["vs_torch_fused"] = base.median_s / t.median_s
    progress(f"GPT-2 (d_model={d_model}) Adam: " + ", ".join(
        f"{GPT2_LABELS[n]} {r['ms']:.1f} ms" for n, r in out["results"].items()))
    return out


# ----------------------------------------------------------------- cold start
_COLD_SCRIPT = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np
t1 = time.perf_counter()
import fastadapt
t2 = time.perf_counter()
n, dtype = int(sys.argv[1]), sys.argv[2]
p = np.ones(n, dtype); g = np.full(n, 0.5, dtype); m = np.zeros(n, dtype); v = np.zeros(n, dtype)
t3 = time.perf_counter()
fastadapt.adam_step(p, g, m, v, step=1)
t4 = time.perf_counter()
fastadapt.adam_step(p, g, m, v, step=2)
t5 = time.perf_counter()
print(json.dumps({"import_s": t2 - t1, "first_call_s": t4 - t3, "second_call_s": t5 - t4}))
"""

_TORCH_COLD_SCRIPT = r"""
import json, sys, time
n, dtype = int(sys.argv[1]), sys.argv[2]
t1 = time.perf_counter()
import torch
t2 = time.perf_counter()
p = torch.ones(n, dtype=getattr(torch, dtype), requires_grad=True)
p.grad = torch.full_like(p, 0.5)
opt = torch.optim.Adam([p], fused=True)
t3 = time.perf_counter()
opt.step()
t4 = time.perf_counter()
opt.step()
t5 = time.perf_counter()
print(json.dumps({"import_s": t2 - t1, "first_call_s": t4 - t3, "second_call_s": t5 - t4}))
"""


def _run_fresh(script, args, env, cwd):
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", script, *map(str, args)], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"fresh process failed ({proc.returncode}): {proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_s"] = wall
    return result


def cold_start(dtype, progress, n=10**6):
    """Import + first ``adam_step`` in fresh processes sharing a new, empty
    compile cache: the first process compiles (and fills the cache), the second
    is what every later process pays. torch's fused Adam for reference."""
    out = {"n": n, "dtype": np.dtype(dtype).name}
    with tempfile.TemporaryDirectory(prefix="fastadapt-bench-") as tmp:
        env = dict(os.environ, NUMBA_CACHE_DIR=os.path.join(tmp, "numba-cache"))
        progress("cold start: fresh process, empty compile cache (compiles adam_step)...")
        out["empty_cache"] = _run_fresh(_COLD_SCRIPT, (n, np.dtype(dtype).name), env, tmp)
        progress("cold start: fresh process, warm compile cache...")
        out["warm_cache"] = _run_fresh(_COLD_SCRIPT, (n, np.dtype(dtype).name), env, tmp)
        try:
            import_torch()
        except Unavailable as exc:
            out["torch"] = {"unavailable": str(exc)}
        else:
            progress("cold start: torch fused Adam in a fresh process...")
            _run_fresh(_TORCH_COLD_SCRIPT, (n, np.dtype(dtype).name), env, tmp)  # warm the OS file cache
            out["torch"] = _run_fresh(_TORCH_COLD_SCRIPT, (n, np.dtype(dtype).name), env, tmp)
    progress(f"cold start: first call {out['empty_cache']['first_call_s']:.2f} s with an empty "
             f"cache, {out['warm_cache']['first_call_s'] * 1e3:.1f} ms with a warm one")
    return out


# ----------------------------------------------------------------- CUDA
def gpu_status():
    """``(True, description)`` with a usable GPU for fastadapt and torch, else
    ``(False, reason)``."""
    try:
        from numba import cuda
        numba_ok = cuda.is_available()
    except Exception as exc:  # numba-cuda missing or broken: no GPU path
        return False, f"no GPU (numba.cuda unavailable: {type(exc).__name__})"
    if not numba_ok:
        return False, "no GPU (numba.cuda.is_available() is False)"
    try:
        torch = import_torch()
    except Unavailable:
        return False, "GPU present but torch is not installed (the GPU columns use torch CUDA tensors)"
    if not torch.cuda.is_available():
        return False, "GPU present but this torch build has no CUDA"
    return True, torch.cuda.get_device_name()


def cuda(configs, sizes, dtype, budget_s, min_rounds, progress):
    """fastadapt on torch CUDA tensors against torch's CUDA paths, and the
    device's copy bandwidth."""
    ok, what = gpu_status()
    if not ok:
        progress(what)
        return {"available": False, "reason": what}
    torch = import_torch()
    sync = torch.cuda.synchronize
    out = {"available": True, "device": what, "rows": []}
    src = torch.ones(1 << 28, dtype=torch.float32, device="cuda")
    dst = torch.empty_like(src)
    t = interleaved({"copy": lambda: dst.copy_(src)}, budget_s=0.5, min_rounds=10, sync=sync)
    out["copy_gbps"] = 2 * src.numel() * 4 / t["copy"].median_s / 1e9
    src = dst = None
    progress(f"GPU {what}: copy bandwidth {out['copy_gbps']:.0f} GB/s")
    for config in configs:
        for n in sizes:
            param, grad = make_problem(n, dtype)
            steps, unavailable = {}, {}
            p = torch.from_numpy(param).to("cuda")
            g = torch.from_numpy(grad).to("cuda")
            state = {name: torch.zeros_like(p) for name in config.state_names}
            fn, opts = config.rule.step_fn, dict(config.options, **state)
            counter = iter(range(1, 1 << 62))
            if config.rule.takes_step:
                steps["fastadapt"] = lambda: fn(p, g, step=next(counter), **opts)
            else:
                steps["fastadapt"] = lambda: fn(p, g, **opts)
            for mode in TORCH_MODES:
                tp = torch.from_numpy(param).to("cuda").requires_grad_()
                tp.grad = torch.from_numpy(grad).to("cuda")
                try:
                    opt = getattr(torch.optim, config.rule.torch_name)(
                        [tp], **config.torch_kwargs(), **TORCH_MODES[mode])
                    opt.step()
                    steps[mode] = opt.step
                except (TypeError, RuntimeError, ValueError):
                    unavailable[mode] = f"no {mode[6:]} {config.rule.torch_name} on CUDA"
            try:
                timings = interleaved(steps, budget_s=budget_s, min_rounds=min_rounds, sync=sync)
            except Exception as exc:  # report, do not hide: the row says what failed
                out["rows"].append({"config": config.key, "label": config.label, "n": n,
                                    "error": f"{type(exc).__name__}: {exc}"})
                progress(f"GPU {config.label} n={_fmt_n(n)}: {type(exc).__name__}: {exc}")
                continue
            nbytes = config.bytes_per_element(np.dtype(dtype).itemsize) * n
            row = {"config": config.key, "label": config.label, "n": n,
                   "implementations": {k: _impl_entry(v, nbytes) for k, v in timings.items()},
                   "unavailable": unavailable}
            fa = timings["fastadapt"].median_s
            row["pct_copy"] = 100 * (nbytes / fa / 1e9) / out["copy_gbps"]
            row["speedup"] = {k: v.median_s / fa for k, v in timings.items() if k != "fastadapt"}
            out["rows"].append(row)
            progress(f"GPU {config.label} n={_fmt_n(n)}: fastadapt {fa * 1e6:.1f} us")
            steps.clear()
            torch.cuda.empty_cache()
    return out


__all__ = ["sweep", "per_call", "threshold", "gpt2", "cold_start", "cuda", "gpu_status"]
