"""The whole mixed-precision step: fastadapt's two passes against torch's four.

Two measurements, each a plain function returning JSON-able data like the
other sections of ``fastadapt bench`` (``progress`` takes one line of text;
``retry``, optional, is the runner's contention guard):

:func:`norm_pass`
    ``fastadapt.grad_norm`` against a read-only roofline over the same array
    (``kernels.reduce.READ_ONLY``: a parallel float sum of the same chunks with
    reassociation allowed, so LLVM vectorizes it fully). Both read 4 bytes per
    float32 element, from memory (each call reads another copy of the array);
    ``pct_roofline`` is the norm's share of that bandwidth.

:func:`whole_step`
    float32 Adam with loss-scale unscaling, a non-finite check and global-norm
    clipping. Bytes per element:

    ============================  ====================================  =====
    fastadapt                     norm pass (read grad)                     4
                                  Adam, unscale and clip folded in         28
                                  **total**                              **32**
    torch (GradScaler + clip)     ``unscale_`` (read, write grad)           8
                                  ``clip_grad_norm_``: norm (read)          4
                                  ``clip_grad_norm_``: scale (read, write)  8
                                  ``opt.step()`` (Adam)                    28
                                  **total**                              **48**
    ============================  ====================================  =====

    torch runs ``scaler.unscale_(opt)``, ``clip_grad_norm_(params, max_norm,
    foreach=True)``, ``scaler.step(opt)``, ``scaler.update()`` with its fused
    Adam and with its foreach Adam. The loss scale is 1: torch unscales the
    gradients in place, so a larger scale would shrink them towards
    subnormals step after step (and restoring them would add a copy to its
    timed step); the work per element is the same for any scale. The clip
    threshold is below the gradients' norm, so every step clips.
    ``fastadapt_update_only`` is the same optimizer's step with no norm (28
    bytes per element): the gap to ``fastadapt`` is the norm pass's cost.

To register them as sections of the runner::

    from ._pipeline import norm_pass, whole_step
    data["norm_pass"] = norm_pass(np.float32, budget, min_rounds, progress, retry)
    data["whole_step"] = whole_step(np.float32, budget, min_rounds, progress, retry)
    data["whole_step_gpt2"] = whole_step(np.float32, budget, min_rounds, progress,
                                         retry, d_model=768)
"""
import numpy as np

from ..kernels import reduce as _reduce
from ._implementations import Unavailable, gpt2_small_shapes, import_torch
from ._timing import interleaved

#: Copies of the array the norm pass cycles through (see :func:`norm_pass`).
COPIES = 3
#: Bytes per float32 element of each pipeline (see the module docstring).
BYTES_PER_ELEMENT = {"fastadapt": 32, "fastadapt_update_only": 28, "torch_fused": 48,
                     "torch_foreach": 48}


def _measure(steps, budget_s, min_rounds, progress, retry):
    def run():
        return {"timings": interleaved(steps, budget_s=budget_s, min_rounds=min_rounds)}
    if retry is None:
        return run()
    return retry.measure(run, progress)


def norm_pass(dtype=np.float32, budget_s=1.0, min_rounds=5, progress=print, retry=None,
              n=2 ** 24):
    """``fastadapt.grad_norm`` of one array of ``n`` elements against the
    read-only roofline over the same chunks; GB/s and % of the roofline."""
    import fastadapt
    dtype = np.dtype(dtype)
    x = np.random.default_rng(0).standard_normal(n, dtype=dtype)
    # Each call, of either kernel, reads the next of COPIES copies of the
    # array, so no call finds the previous call's data in the last-level cache: one 64 MB array read
    # back to back kept part of itself in a 32 MB L3, and the roofline kernel
    # (doing less per element) then measured cache bandwidth, not memory.
    copies = [x] + [x.copy() for _ in range(COPIES - 1)]
    starts, stops = _reduce.chunks(n)
    out = np.empty(starts.size, dtype)
    roofline = (_reduce.READ_ONLY.parallel if starts.size >= _reduce.SERIAL_BELOW_CHUNKS
                else _reduce.READ_ONLY.serial)
    turn = [0]

    def next_copy():
        # one counter for both kernels: consecutive calls never read the same copy
        turn[0] += 1
        return copies[turn[0] % COPIES]
    steps = {"grad_norm": lambda: fastadapt.grad_norm(next_copy()),
             "read_only_roofline": lambda: roofline(next_copy(), starts, stops, out)}
    result = _measure(steps, budget_s, min_rounds, progress, retry)
    timings = result.pop("timings")
    nbytes = dtype.itemsize * n            # one read of every element
    data = {"n": n, "dtype": dtype.name, "bytes_per_element": dtype.itemsize,
            "results": {name: {**t.as_dict(), "ms": t.median_s * 1e3,
                               "gbps": nbytes / t.median_s / 1e9}
                        for name, t in timings.items()}, **result}
    data["pct_roofline"] = (100 * timings["read_only_roofline"].median_s
                            / timings["grad_norm"].median_s)
    progress(f"norm pass, {n:,} {dtype.name}: " + ", ".join(
        f"{k} {r['gbps']:.1f} GB/s" for k, r in data["results"].items())
        + f" ({data['pct_roofline']:.0f}% of the read-only roofline)")
    return data


def whole_step(dtype=np.float32, budget_s=1.0, min_rounds=5, progress=print, retry=None,
               n=2 ** 24, d_model=None, max_grad_norm=1.0):
    """One training step's optimizer work (unscale, inf check, clip, Adam):
    fastadapt's ``Adam(max_grad_norm=...).step(grad_scale=1.0)`` against
    torch's GradScaler + ``clip_grad_norm_`` + Adam pipeline.

    ``n`` elements in one array, or GPT-2 small's 148 arrays of width
    ``d_model`` when it is given. Memory: four implementations of four arrays
    each plus the sources, 18 arrays of the model's size (9 GB at
    ``d_model=768``, 1.2 GB at ``n=2**24``). Returns per implementation the median time,
    GB/s at its own bytes per element, and ``speedup_vs`` (torch's time over
    fastadapt's).
    """
    import fastadapt
    dtype = np.dtype(dtype)
    shapes = [(n,)] if d_model is None else gpt2_small_shapes(d_model)
    numel = sum(int(np.prod(s)) for s in shapes)
    rng = np.random.default_rng(0)
    params = [rng.standard_normal(s, dtype=dtype) for s in shapes]
    grads = [rng.standard_normal(s, dtype=dtype) for s in shapes]

    opt = fastadapt.Adam(params, max_grad_norm=max_grad_norm)
    plain = fastadapt.Adam(params)
    for o in (opt, plain):
        o.step(grads)                   # copy the gradients in once; steps reuse them
    steps = {"fastadapt": lambda: opt.step(grad_scale=1.0),
             "fastadapt_update_only": plain.step}
    unavailable = {}
    try:
        steps.update(_torch_pipelines(import_torch(), params, grads, max_grad_norm))
    except Unavailable as exc:
        unavailable = {"torch_fused": str(exc), "torch_foreach": str(exc)}
    del params, grads

    result = _measure(steps, budget_s, min_rounds, progress, retry)
    steps.clear()
    timings = result.pop("timings")
    data = {"n": numel, "arrays": len(shapes), "d_model": d_model, "dtype": dtype.name,
            "max_grad_norm": max_grad_norm, "grad_scale": 1.0,
            "bytes_per_element": {k: v * dtype.itemsize // 4
                                  for k, v in BYTES_PER_ELEMENT.items()},
            "results": {}, "unavailable": unavailable, **result}
    ours = timings["fastadapt"].median_s
    for name, t in timings.items():
        bpe = data["bytes_per_element"][name]
        data["results"][name] = {**t.as_dict(), "ms": t.median_s * 1e3,
                                 "gbps": bpe * numel / t.median_s / 1e9,
                                 "speedup_vs": t.median_s / ours}
    progress(f"whole step, {len(shapes)} arrays, {numel:,} {dtype.name}: " + ", ".join(
        f"{k} {r['ms']:.1f} ms ({r['speedup_vs']:.2f}x)" for k, r in data["results"].items()))
    return data


def _torch_pipelines(torch, params, grads, max_grad_norm):
    """torch's step, fused and foreach Adam, as zero-argument callables (each
    with its tensors as ``.params``)."""
    steps = {}
    for mode in ("fused", "foreach"):
        tparams = [torch.tensor(p, requires_grad=True) for p in params]
        for p, g in zip(tparams, grads):
            p.grad = torch.tensor(g)
        topt = torch.optim.Adam(tparams, **{mode: True})
        scaler = torch.amp.GradScaler("cpu", init_scale=1.0, growth_interval=2 ** 30)
        one = torch.ones(())

        def step(topt=topt, scaler=scaler, tparams=tparams):
            scaler.scale(one)
            scaler.unscale_(topt)
            torch.nn.utils.clip_grad_norm_(tparams, max_grad_norm, foreach=True)
            scaler.step(topt)
            scaler.update()
        step.params = tparams
        steps[f"torch_{mode}"] = step
    return steps
