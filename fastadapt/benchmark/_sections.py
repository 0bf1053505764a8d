"""The measurements of ``fastadapt bench``, one function per section.

Each returns plain JSON-able data; :mod:`._tables` and :mod:`._report` turn it
into tables and reports.
``progress`` is a callable taking one line of text (shown on stderr).
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from ..kernels import cpu
from ._bare import bare_step, driver_call
from ._configs import BY_KEY, make_problem
from ._implementations import (GPT2_LABELS, IMPLEMENTATIONS, LABELS, TORCH_MODES, Unavailable,
                               build_all, gpt2_adam_steps, gpt2_small_shapes, import_torch)
from ._machine import memory_available
from ._timing import interleaved


def _fmt_n(n):
    return f"{n:,}"


def _impl_entry(timing, nbytes):
    return {**timing.as_dict(), "gbps": nbytes / timing.median_s / 1e9}


def _advance(progress, seconds):
    """Tell a :class:`~._cli.Progress` that ``seconds`` of its plan are done
    (a plain callable, as tests pass, has nothing to tell)."""
    advance = getattr(progress, "advance", None)
    if advance:
        advance(seconds)


# ----------------------------------------------------------------- budget arithmetic
# What a section should take, for the overall ETA and for sizing the default
# run. The unit is one same-traffic pass over the row's bytes at an assumed
# 20 GB/s (2 cores; the ETA corrects the assumption as the run goes). Per
# round, the seven implementations of a row cost about 30 passes (NumPy ~8,
# NumPy with fresh temporaries ~10, torch single-tensor ~5, foreach ~4, fused
# ~1.2, fastadapt and the roofline 1 each) plus, since each sample lasts as
# long as the slowest call up to ``max_sample_s``, about 7 times the slowest
# call (~10 passes) in repeated calls of the fast ones.
ASSUMED_BANDWIDTH = 20e9
_PASSES_PER_ROUND = 30
_SLOWEST_PASSES = 10


def estimate_sweep_row(config, n, dtype, budget_s, min_rounds, max_sample_s=0.25):
    one = config.bytes_per_element(np.dtype(dtype).itemsize) * n / ASSUMED_BANDWIDTH
    sample = min(max_sample_s, _SLOWEST_PASSES * one)
    round_s = _PASSES_PER_ROUND * one + 7 * sample
    setup = 0.25 + 40 * one         # copies, the torch optimizers' first steps, estimates
    return max(budget_s, min_rounds * round_s) + setup


def estimate_gpt2(d_model, dtype, budget_s, min_rounds):
    numel = sum(int(np.prod(s)) for s in gpt2_small_shapes(d_model))
    one = BY_KEY["adam"].bytes_per_element(np.dtype(dtype).itemsize) * numel / ASSUMED_BANDWIDTH
    return max(budget_s, min_rounds * 23 * one) + 1.0 + 15 * one


# ----------------------------------------------------------------- main sweep
def sweep(configs, sizes, dtype, budget_s, min_rounds, progress, retry, max_sample_s=0.25):
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
                                  interleaved(steps, budget_s=budget_s, min_rounds=min_rounds,
                                              max_sample_s=max_sample_s),
                                  unavailable),
                progress)
            steps.clear()                   # free this size's arrays before the next
            rows.append(row)
            _advance(progress, estimate_sweep_row(config, n, dtype, budget_s, min_rounds,
                                                  max_sample_s))
            progress(f"[{done}/{total}] {config.label} n={_fmt_n(n)}: "
                     f"{_summary(row, retry.threshold)}"
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


def _busy_text(result):
    return (f"disturbed (other processes used {result['others_cpu']:.0%} of the CPUs): "
            "no figures")


def _summary(row, disturbed_above):
    if "fastadapt_us" not in row:
        return "fastadapt did not run"
    if row.get("others_cpu") is not None and row["others_cpu"] > disturbed_above:
        return _busy_text(row)
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
    costs per call; ``x_bare`` is fastadapt's time over the bare driver call
    (:mod:`._bare`), the median over the rounds of the ratio within each
    round, with the quartiles of those ratios in ``x_bare_iqr``: both ran in
    every round, one after the other, so the ratio holds on a busy machine.
    """
    rows = []
    for config in configs:
        for n in sizes:
            param, grad = make_problem(n, dtype)
            steps, unavailable = build_all(config, param, grad,
                                           ("fastadapt",) + tuple(TORCH_MODES))
            steps["driver"] = bare_step(config, param, grad)

            def run():
                timings = interleaved(steps, budget_s=budget_s, min_rounds=min_rounds)
                out = {"us": {name: t.median_s * 1e6 for name, t in timings.items()}}
                if "fastadapt" in timings:
                    out.update(_ratio_spread(timings["fastadapt"], timings["driver"], "x_bare"))
                return out
            row = {"config": config.key, "label": config.label, "n": n,
                   "dtype": np.dtype(dtype).name, **retry.measure(run, progress),
                   "unavailable": unavailable}
            us = row["us"]
            row["overhead_us"] = us["fastadapt"] - us["driver"]
            if "torch_fused" in us:       # rival time / fastadapt time, as everywhere
                row["x_torch_fused"] = us["torch_fused"] / us["fastadapt"]
            rows.append(row)
            _advance(progress, budget_s + 0.2)
            fused = (f", torch fused {us['torch_fused']:.1f} us" if "torch_fused" in us
                     else "")
            if retry.disturbed(row):
                progress(f"per-call {config.label} n={_fmt_n(n)}: {_busy_text(row)}")
            else:
                progress(f"per-call {config.label} n={_fmt_n(n)}: fastadapt "
                         f"{us['fastadapt']:.1f} us, driver {us['driver']:.1f} us "
                         f"({row['x_bare']:.1f}x the bare call){fused}")
    return rows


def _ratio_spread(slow, fast, key):
    """``{key: median ratio, key_iqr: [q1, q3]}`` of ``slow``'s time over
    ``fast``'s, round by round (two :class:`~._timing.Timing` of one
    ``interleaved`` run: one sample of each per round)."""
    ratios = sorted(a / b for a, b in zip(slow.samples, fast.samples))
    if len(ratios) >= 4:
        q = statistics.quantiles(ratios, n=4)
        spread = [q[0], q[2]]
    else:
        spread = [ratios[0], ratios[-1]]
    return {key: statistics.median(ratios), f"{key}_iqr": spread}


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
            _advance(progress, budget_s + 0.05)
        faster = [p < s for s, p in zip(times["serial"], times["parallel"])]
        crossover = next((sizes[i] for i in range(len(sizes)) if all(faster[i:])), None)
        rows.append({"config": config.key, "label": config.label, "sizes": list(sizes),
                     "serial_us": times["serial"], "parallel_us": times["parallel"],
                     "crossover": crossover, "others_cpu": others})
        if any(o is not None and o > retry.threshold for o in others):
            progress(f"threshold {config.label}: disturbed by other processes (up to "
                     f"{max(o for o in others if o is not None):.0%} of the CPUs): no figures")
        else:
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
    estimate = estimate_gpt2(d_model, dtype, budget_s, min_rounds)
    if not chosen:
        _advance(progress, estimate)
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
    base = timings.get("fastadapt_class")
    if base is not None:       # each row's time / fastadapt.Adam's: higher = fastadapt faster
        for name, t in timings.items():
            out["results"][name]["x_fastadapt_class"] = t.median_s / base.median_s
    _advance(progress, estimate)
    if retry.disturbed(out):
        progress(f"GPT-2 (d_model={d_model}) Adam: {_busy_text(out)}")
    else:
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


# ----------------------------------------------------------------- GPU
def gpu_status():
    """``(True, device name)`` with a GPU fastadapt can use, else ``(False, reason)``."""
    from . import _gpu
    return _gpu.status()


def cuda(configs, sizes, dtype, budget_s, min_rounds, progress):
    """The main table's comparison on the GPU (see ``_gpu``)."""
    from . import _gpu
    return _gpu.measure(configs, sizes, dtype, budget_s, min_rounds, progress,
                        advance=getattr(progress, "advance", None))


__all__ = ["sweep", "per_call", "threshold", "gpt2", "cold_start", "cuda", "gpu_status",
           "estimate_sweep_row", "estimate_gpt2"]
