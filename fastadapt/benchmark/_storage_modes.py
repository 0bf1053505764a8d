"""The ``storage`` section of ``fastadapt bench``: Adam in each storage mode.

Every mode of the issue "Fewer bytes that pay on the CPU" is one Adam step
(torch's defaults) at ``n`` elements, all timed in one interleaved run with:

* torch's fused float32 Adam (the 1.0x of the table) and torch's own version
  of a mode where it has one;
* for the 16-bit modes, the same step through both optimizer classes
  (``fastadapt.Adam`` on NumPy arrays, ``fastadapt.torch.Adam`` on a tensor),
  so the gap between the two faces shows, and through a *yardstick*: a
  minimal Numba kernel doing the mode's work with the mode's bytes
  (:mod:`._yardsticks`); ``time / yardstick`` is what fastadapt's generality
  costs;
* DeepSpeedCPUAdam in its three modes, where deepspeed is importable (skipped
  with the reason otherwise).

Every implementation holds its own arrays (several GiB at 2^24 in all),
but a yardstick steps the functional step's, and all of them lie as
fastadapt's classes place their buffers (``flat.host_zeros``; torch's and
DeepSpeedCPUAdam's state is moved there after their first step): where an
array lies moved a 2^24 Adam step by 13% here, torch's as much as
fastadapt's, and the classes place their buffers so whatever they are
given. 8-bit containers keep their arrays as NumPy places them. Bytes per
element are what each mode reads and writes (8-bit state: one byte per
element plus a float32 absmax per block of 256, or a float32 scale per group
of 32 when companded).

Compute cost (:func:`compute_cost`): the single-thread, in-cache time per
element of each mode's kernel, the slope of the call's time between two
sizes that fit in L2 (so the per-call cost drops out), each size's time its
fastest sample's (noise only adds time: medians let it through, and
slopes of medians moved by 3x and more between runs minutes apart). A mode whose compute
is below its bytes' time at a server's bandwidth per core is memory-bound
there; the predicted time per element is ``max(ns per element, bytes /
bandwidth per core)``, and the predicted ratio is torch fused float32's over
the mode's.
"""
import contextlib
import functools
import importlib.util

import numpy as np

from . import _yardsticks
from ._contention import CpuWatch
from ._placement import placed, placed_state, placed_tensor
from ._timing import interleaved

BLOCK = 256
SEED = 1

#: key -> (label, bytes per element) of fastadapt's modes
MODES = {
    "fp32": ("fp32 param + grad + state", 28),
    "bf16_state": ("fp32 param + grad, bf16 state", 20),
    "bf16_nearest": ("bf16 param + grad + state, round to nearest", 14),
    "bf16_sr": ("bf16 param + grad + state, stochastic rounding", 14),
    "bf16_sr_fp32_state": ("bf16 param + grad, fp32 state, stochastic rounding", 22),
    "bf16_master": ("bf16 param + grad, fp32 master + state", 30),
    # split master weights: the param read as well as written (it is the
    # master's high half), then a 2- or 1-byte correction read and written
    "bf16_split16": ("bf16 param + grad, split master bf16+16, fp32 state", 26),
    "bf16_split8": ("bf16 param + grad, split master bf16+8, fp32 state", 24),
    "int8_state": ("fp32 param + grad, 8-bit state", 12 + 2 * (2 + 8 / BLOCK)),
    "int8c_state": ("fp32 param + grad, companded 8-bit state", 12 + 2 * (2 + 8 / 32)),
    # the full low-byte configuration: bf16 param (read and written) and grad,
    # companded 8-bit moments, an 8-bit master correction
    "low12": ("bf16 param + grad, companded 8-bit state, split master bf16+8",
              6 + 2 * (2 + 8 / 32) + 2),
}
#: the modes measured through both class faces and against a yardstick
SIXTEEN_BIT = ("bf16_state", "bf16_nearest", "bf16_sr", "bf16_sr_fp32_state", "bf16_master")
TORCH_MODES = {
    "torch_fused_fp32": ("torch fused Adam, float32", 28),
    "torch_fused_bf16": ("torch fused Adam, all bfloat16", 14),
    "torch_master": ("torch fused Adam on fp32 master + copy to bf16", 30),
}
#: DeepSpeedCPUAdam's modes: key -> (label, bytes, the fastadapt mode with its bytes)
DEEPSPEED_MODES = {
    "deepspeed_fp32": ("DeepSpeedCPUAdam, float32", 28, "fp32"),
    "deepspeed_bf16": ("DeepSpeedCPUAdam, bf16 param + grad + state", 14, "bf16_nearest"),
    "deepspeed_bf16_fp32_state": ("DeepSpeedCPUAdam, bf16 param + grad, fp32 state", 22,
                                  "bf16_sr_fp32_state"),
}
FACES = {"functional": "adam_step", "numpy_class": "fastadapt.Adam",
         "torch_class": "fastadapt.torch.Adam", "yardstick": "yardstick kernel"}
#: Sizes of the compute-cost slope: both at or above the parallel driver's
#: threshold (kernels/cpu.py's SERIAL_BELOW, 8192), the larger one's arrays
#: (at most 18 bytes of footprint per element) within a 512 KiB L2.
COMPUTE_SIZES = (2 ** 13, 5 * 2 ** 12)
#: Memory bandwidth per core of the predicted column (bytes per second): a
#: many-core server's share, where this project's 2-core machines have 20-30.
CORE_BANDWIDTH = 8e9


def _bf16():
    import ml_dtypes
    return np.dtype(ml_dtypes.bfloat16)


def _problem(n, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(n).astype(np.float32),
            (rng.standard_normal(n) * 1e-3).astype(np.float32))


def _storage_of(mode):
    """(param dtype, state dtype, master?, stochastic?) of a 16-bit mode, NumPy dtypes."""
    bf16 = _bf16()
    return {"bf16_state": (np.float32, bf16, False, False),
            "bf16_nearest": (bf16, bf16, False, False),
            "bf16_sr": (bf16, bf16, False, True),
            "bf16_sr_fp32_state": (bf16, np.float32, False, True),
            "bf16_master": (bf16, np.float32, True, False)}[mode]


def _fastadapt_steps(n, seed=0, arrays=None):
    """``{mode: step}`` through the functional API, every mode of :data:`MODES`;
    ``arrays`` (a dict), where given, receives each mode's ``(param, grad,
    exp_avg, exp_avg_sq, master_param)`` (see :func:`_yardstick_steps`)."""
    import fastadapt
    bf16 = _bf16()
    p32, g32 = _problem(n, seed)
    g16 = g32.astype(bf16)
    steps = {}

    def make(key, param, grad, m, v, **extra):
        # every array the step holds placed alike (8-bit state: the
        # containers' own arrays, as NumPy places them)
        param, grad, m, v = (placed(a) if isinstance(a, np.ndarray) else a
                             for a in (param, grad, m, v))
        if "master_param" in extra:
            extra["master_param"] = placed(extra["master_param"])
        if arrays is not None:
            arrays[key] = (param, grad, m, v, extra.get("master_param"))
        count = [0]

        def step():
            count[0] += 1
            fastadapt.adam_step(param, grad, m, v, step=count[0], **extra)
        steps[key] = step
    make("fp32", p32.copy(), g32, np.zeros(n, np.float32), np.zeros(n, np.float32))
    for mode in SIXTEEN_BIT:
        pdt, sdt, master, stochastic = _storage_of(mode)
        extra = {"master_param": p32.copy()} if master else {}
        if stochastic:
            extra.update(stochastic_rounding=True, seed=SEED)
        make(mode, p32.astype(pdt), g32 if pdt == np.float32 else g16, np.zeros(n, sdt),
             np.zeros(n, sdt), **extra)
    for mode, correction in (("bf16_split16", np.int16), ("bf16_split8", np.int8)):
        make(mode, p32.astype(bf16), g16, np.zeros(n, np.float32), np.zeros(n, np.float32),
             master_param=np.zeros(n, correction))
    make("int8_state", p32.copy(), g32, fastadapt.Blockwise8(n, True),
         fastadapt.Blockwise8(n, False))
    make("int8c_state", p32.copy(), g32, fastadapt.Companded8(n, True),
         fastadapt.Companded8(n, False))
    make("low12", p32.astype(bf16), g16, fastadapt.Companded8(n, True),
         fastadapt.Companded8(n, False), master_param=np.zeros(n, np.int8))
    return steps


def _yardstick_steps(arrays):
    """``{"<mode>:yardstick": step}`` for the 16-bit modes (and float32), on
    the arrays of ``arrays[mode]`` (as :func:`_fastadapt_steps` fills it): the
    same memory as the functional step's, so where the arrays lie (their
    alignment, their pages) is not part of ``time / yardstick``. At 2**24 (AMD
    EPYC Zen 3, 2 threads, one run), a yardstick on arrays of its own moved
    that ratio by 0.1 for float32 and bfloat16-master Adam."""
    bf16 = _bf16()

    def bits(a):
        return a.view(np.uint16) if a.dtype == bf16 else a
    steps = {}
    for mode in ("fp32",) + SIXTEEN_BIT:
        *held, master = arrays[mode]
        steps[f"{mode}:yardstick"] = _yardsticks.make_step(
            mode, *map(bits, held), master=master, seed=SEED)
    return steps


def _numpy_class_steps(n, seed=0):
    """``{"<mode>:numpy_class": step}``: ``fastadapt.Adam`` over one array."""
    import fastadapt
    p32, g32 = _problem(n, seed)
    steps = {}
    for mode in SIXTEEN_BIT:
        pdt, sdt, master, stochastic = _storage_of(mode)
        opt = fastadapt.Adam([p32.astype(pdt)], state_dtype=np.dtype(sdt).name,
                             master_weights=master, stochastic_rounding=stochastic,
                             seed=SEED if stochastic else None)
        opt.grads[0][...] = g32.astype(pdt)
        steps[f"{mode}:numpy_class"] = opt.step
    return steps


def _torch_class_steps(torch, n, seed=0):
    """``{"<mode>:torch_class": step}``: ``fastadapt.torch.Adam`` over one
    tensor, its gradient handed over through a backward (the zero-copy path a
    training loop takes)."""
    import fastadapt.torch as ft
    from ._torch_step import through_autograd
    p32, g32 = _problem(n, seed)
    steps = {}
    for mode in SIXTEEN_BIT:
        pdt, sdt, master, stochastic = _storage_of(mode)
        tdt = torch.float32 if pdt == np.float32 else torch.bfloat16
        p = torch.nn.Parameter(torch.from_numpy(p32).to(tdt))
        p.grad = torch.from_numpy(g32).to(tdt)
        opt = ft.Adam([p], state_dtype=np.dtype(sdt).name, master_weights=master,
                      stochastic_rounding=stochastic, seed=SEED if stochastic else None)
        through_autograd(torch, [p])
        steps[f"{mode}:torch_class"] = opt.step
    return steps


def _import_torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def _torch_steps(n, seed=0):
    torch = _import_torch()
    if torch is None:
        return {}, "torch is not installed"
    p32, g32 = (torch.from_numpy(a) for a in _problem(n, seed))
    steps = {}

    def fused(param, grad, after=None):
        param = placed_tensor(torch, param).requires_grad_(True)
        param.grad = placed_tensor(torch, grad)
        opt = torch.optim.Adam([param], fused=True)
        opt.step()
        placed_state(torch, opt)

        def step():
            opt.step()
            if after is not None:
                after(param)
        return step
    steps["torch_fused_fp32"] = fused(p32, g32)
    steps["torch_fused_bf16"] = fused(p32.to(torch.bfloat16), g32.to(torch.bfloat16))
    copy = placed_tensor(torch, p32.to(torch.bfloat16))
    steps["torch_master"] = fused(p32, g32, after=lambda m: copy.copy_(m.detach()))
    return steps, None


@functools.lru_cache(maxsize=1)
def deepspeed_status():
    """``(DeepSpeedCPUAdam, None)`` where deepspeed and its CPU op load, else
    ``(None, reason)``. The first use JIT-builds the op with the C++ compiler
    (minutes); later processes load it from deepspeed's cache, after a check
    run as a subprocess (a second of CPU, which a measurement around it
    would count as another process's: so it runs once per process)."""
    if importlib.util.find_spec("deepspeed") is None:
        return None, "deepspeed is not installed (pip install deepspeed; optional)"
    try:
        from deepspeed.ops.adam import DeepSpeedCPUAdam
        from deepspeed.ops.op_builder import CPUAdamBuilder
        CPUAdamBuilder().load()
    except Exception as exc:                         # an import or a build failure
        return None, f"deepspeed is installed but its CPU Adam does not load: " \
                     f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return DeepSpeedCPUAdam, None


def _deepspeed_steps(n, seed=0):
    """``({key: step}, reason or None)`` for :data:`DEEPSPEED_MODES`."""
    cls, why_not = deepspeed_status()
    if cls is None:
        return {}, why_not
    import torch
    p32, g32 = (torch.from_numpy(a) for a in _problem(n, seed))
    steps = {}
    for key, dtype, fp32_state in (("deepspeed_fp32", torch.float32, True),
                                   ("deepspeed_bf16", torch.bfloat16, False),
                                   ("deepspeed_bf16_fp32_state", torch.bfloat16, True)):
        p = torch.nn.Parameter(placed_tensor(torch, p32.to(dtype)))
        p.grad = placed_tensor(torch, g32.to(dtype))
        opt = cls([p], lr=1e-3, adamw_mode=False, fp32_optimizer_states=fp32_state)
        opt.step()
        placed_state(torch, opt)
        steps[key] = opt.step
    return steps, None


def _threads(count):
    """Set Numba's and torch's thread counts; returns the previous ones."""
    import numba
    torch = _import_torch()
    before = (numba.get_num_threads(), torch.get_num_threads() if torch else None)
    numba.set_num_threads(count[0])
    if torch is not None and count[1] is not None:
        torch.set_num_threads(count[1])
    return before


def compute_cost(budget_s, min_rounds, sizes=COMPUTE_SIZES, deepspeed=True, max_sample_s=0.25,
                 watch=None):
    """``{key: ns per element}``: one thread, arrays in L2, for every mode's
    functional step, the yardsticks, torch's fused steps and DeepSpeedCPUAdam
    (where it loads). Each is the slope of the fastest sample's time per
    call between the two ``sizes`` (interleaved, many calls), so the
    per-call cost cancels (on AMD EPYC Zen 4, three runs in a row gave
    1.71 ns in each for the 12.5-byte configuration and 0.66-0.68 for
    stochastic rounding, where the same runs' medians gave 1.27-1.75 and
    0.69-1.08);
    None where noise made the slope non-positive. ``watch``: a
    :class:`CpuWatch` entered around the timing alone (building the steps
    runs other processes: DeepSpeedCPUAdam asks py-cpuinfo, in a subprocess)."""
    small, large = sizes
    before = _threads((1, 1))
    try:
        steps = {}
        for n in sizes:
            arrays = {}
            steps.update({(k, n): s for k, s in _fastadapt_steps(n, arrays=arrays).items()})
            steps.update({(k, n): s for k, s in _yardstick_steps(arrays).items()})
            steps.update({(k, n): s for k, s in _torch_steps(n)[0].items()})
            if deepspeed:
                steps.update({(k, n): s for k, s in _deepspeed_steps(n)[0].items()})
        with watch if watch is not None else contextlib.nullcontext():
            timings = interleaved(steps, budget_s=budget_s, min_rounds=min_rounds,
                                  max_sample_s=max_sample_s)
    finally:
        _threads(before)
    out = {}
    for key, n in steps:
        if n == small:
            slope = (timings[key, large].min_s - timings[key, small].min_s) / (large - small)
            out[key] = slope * 1e9 if slope > 0 else None
    return out


def _predicted(ns, nbytes, bandwidth):
    """Predicted seconds per element, or None without a compute cost."""
    return None if ns is None else max(ns * 1e-9, nbytes / bandwidth)


def storage(n, budget_s, min_rounds, progress, small=(1000, 10000), faces=True,
            deepspeed=True, compute=True, core_bandwidth=CORE_BANDWIDTH, max_sample_s=0.25):
    """One row per mode and face at ``n`` elements (module docstring), the
    per-call cost of each mode at the ``small`` sizes relative to fastadapt's
    float32 call, and (``compute``) each row's single-thread compute cost with
    its predicted ratio at ``core_bandwidth`` bytes per second per core.
    ``max_sample_s`` bounds one sample (see :func:`._timing.interleaved`)."""
    arrays = {}
    steps = _fastadapt_steps(n, arrays=arrays)
    skipped = {}
    if faces:
        steps.update(_yardstick_steps(arrays))
        steps.update(_numpy_class_steps(n))
    torch = _import_torch()
    torch_steps, why_not = _torch_steps(n)
    if why_not:
        skipped["torch"] = why_not
    elif faces:
        steps.update(_torch_class_steps(torch, n))
    steps.update(torch_steps)
    if deepspeed:
        ds_steps, ds_why = _deepspeed_steps(n)
        steps.update(ds_steps)
        if ds_why:
            skipped["deepspeed"] = ds_why
            progress(f"storage: no DeepSpeedCPUAdam rows: {ds_why}")
    progress(f"storage: {len(steps)} Adam steps of n={n:,}, interleaved")
    with CpuWatch() as watch:
        timings = interleaved(steps, budget_s=budget_s, min_rounds=min_rounds,
                              max_sample_s=max_sample_s)
    rows = [_row(key, t, n) for key, t in timings.items()]
    _relate(rows)
    progress(f"storage modes at n={n:,}: " + ", ".join(
        f"{r['key']} {r['median_s'] * 1e3:.2f} ms" for r in rows))
    per_call = []
    for m in small:
        t = interleaved(_fastadapt_steps(m), budget_s=budget_s / 4, min_rounds=min_rounds,
                        max_sample_s=max_sample_s)
        per_call.append({"n": m, "us": {k: v.median_s * 1e6 for k, v in t.items()},
                         "x_fp32": {k: t["fp32"].median_s / v.median_s for k, v in t.items()}})
    out = {"n": n, "rows": rows, "per_call": per_call, "skipped": skipped,
           "torch_unavailable": why_not, "others_cpu": watch.others}
    if compute:
        progress("storage: compute cost, one thread, arrays in L2 "
                 f"(n = {COMPUTE_SIZES[0]:,} and {COMPUTE_SIZES[1]:,})")
        watch = CpuWatch()
        ns = compute_cost(2 * budget_s, min_rounds, deepspeed=deepspeed,
                          max_sample_s=max_sample_s, watch=watch)
        out.update(compute_sizes=list(COMPUTE_SIZES), core_bandwidth=core_bandwidth,
                   compute_others_cpu=watch.others)
        _with_compute_cost(rows, ns, core_bandwidth)
    return out


def _with_compute_cost(rows, ns, core_bandwidth):
    """Each row with a compute cost in ``ns`` gets it, and its predicted ratio
    to torch fused float32 at ``core_bandwidth`` bytes per second per core."""
    base = _predicted(ns.get("torch_fused_fp32"), TORCH_MODES["torch_fused_fp32"][1],
                      core_bandwidth)
    for r in rows:
        if r["key"] in ns:
            r["ns_per_element"] = ns[r["key"]]
            pred = _predicted(ns[r["key"]], r["bytes_per_element"], core_bandwidth)
            r["predicted_x_torch_fused_fp32"] = base / pred if base and pred else None
    return rows


def _labels():
    out = {k: (v[0], v[1], k, "functional") for k, v in MODES.items()}
    out.update({k: (v[0], v[1], k, "torch") for k, v in TORCH_MODES.items()})
    out.update({k: (v[0], v[1], v[2], "deepspeed") for k, v in DEEPSPEED_MODES.items()})
    for mode in ("fp32",) + SIXTEEN_BIT:
        for face in ("numpy_class", "torch_class", "yardstick"):
            out[f"{mode}:{face}"] = (MODES[mode][0], MODES[mode][1], mode, face)
    return out


def _row(key, timing, n):
    label, nbytes, mode, face = _labels()[key]
    return {"key": key, "mode": mode, "face": face, "label": label,
            "bytes_per_element": nbytes, "median_s": timing.median_s,
            "gbps": nbytes * n / timing.median_s / 1e9,
            "iqr_over_median": timing.as_dict()["iqr_over_median"]}


def _relate(rows):
    """The ratios between rows of one run (each: the other's time / this one's,
    above 1 = this row faster, except ``x_yardstick``, time / yardstick's)."""
    t = {r["key"]: r["median_s"] for r in rows}
    base = t.get("torch_fused_fp32")
    for r in rows:
        r["x_torch_fused_fp32"] = base / r["median_s"] if base else None
        mode, face = r["mode"], r["face"]
        if face in ("functional", "numpy_class", "torch_class") \
                and f"{mode}:yardstick" in t:
            r["x_yardstick"] = r["median_s"] / t[f"{mode}:yardstick"]
        if face == "torch_class" and f"{mode}:numpy_class" in t:
            r["x_numpy_class"] = r["median_s"] / t[f"{mode}:numpy_class"]
        if face == "functional":
            peer = {"bf16_nearest": "torch_fused_bf16", "bf16_sr": "torch_fused_bf16",
                    "bf16_master": "torch_master", "bf16_split16": "torch_master",
                    "bf16_split8": "torch_master"}.get(mode)
            if peer in t:
                r["x_" + peer] = t[peer] / r["median_s"]
            for ds_key, (_, _, same_bytes) in DEEPSPEED_MODES.items():
                if same_bytes == mode and ds_key in t:
                    r["x_deepspeed"] = t[ds_key] / r["median_s"]
            # DeepSpeed keeps no master copy: its bf16 params with fp32 state
            # (22 bytes) are what it offers in the place of master weights
            if mode == "bf16_master" and "deepspeed_bf16_fp32_state" in t:
                r["x_deepspeed_no_master"] = t["deepspeed_bf16_fp32_state"] / r["median_s"]


def _fmt(value, spec=".2f", suffix="x"):
    return "n/a" if value is None else f"{value:{spec}}{suffix}"


#: the mode a torch row sits beside in the table (the same job in torch)
_TORCH_BESIDE = {"torch_fused_fp32": "fp32", "torch_fused_bf16": "bf16_nearest",
                 "torch_master": "bf16_master"}
_FACE_ORDER = ("functional", "numpy_class", "torch_class", "yardstick", "torch", "deepspeed")


def _table_order(rows):
    """Rows grouped by mode (the issue's order), each group's faces in
    :data:`_FACE_ORDER`, its same-bytes peers last."""
    modes = list(MODES)

    def key(r):
        beside = _TORCH_BESIDE.get(r["key"], r["mode"])
        return (modes.index(beside) if beside in modes else len(modes),
                _FACE_ORDER.index(r["face"]) if r["face"] in _FACE_ORDER else len(_FACE_ORDER))
    return sorted(rows, key=key)


def _peers(r):
    parts = []
    for key, what in (("x_torch_fused_bf16", "torch fused all-bf16"),
                      ("x_torch_master", "torch fused fp32 + copy"),
                      ("x_deepspeed", "DeepSpeedCPUAdam"),
                      ("x_deepspeed_no_master", "DeepSpeedCPUAdam bf16 + fp32 state, 22 B")):
        if key in r:
            parts.append(f"{r[key]:.2f}x {what}")
    if "x_numpy_class" in r:
        parts.append(f"{(r['x_numpy_class'] - 1) * 100:+.1f}% time vs fastadapt.Adam")
    return "; ".join(parts)


def storage_table(data):
    """(headers, rows) of the modes table, for the report: each mode's label
    on its first row, the faces and peers below it."""
    bandwidth = data.get("core_bandwidth", CORE_BANDWIDTH) / 1e9
    headers = ["mode", "face", "B/elem", "ms/step", "GB/s", "x torch fused fp32",
               "same-bytes peers, face gap", "time / yardstick", "ns/elem, 1 thread, L2",
               f"predicted x torch fused fp32, {bandwidth:g} GB/s/core"]
    out, last = [], None
    for r in _table_order(data["rows"]):
        computed = "ns_per_element" in r
        out.append([r["label"] if r["label"] != last else "", FACES.get(r["face"], r["face"]),
                    f"{r['bytes_per_element']:.2f}", f"{r['median_s'] * 1e3:.2f}",
                    f"{r['gbps']:.1f}", _fmt(r["x_torch_fused_fp32"]), _peers(r),
                    _fmt(r["x_yardstick"]) if "x_yardstick" in r else "",
                    _fmt(r["ns_per_element"], ".2f", "") if computed else "",
                    _fmt(r.get("predicted_x_torch_fused_fp32")) if computed else ""])
        last = r["label"]
    return headers, out


def columns_text(data):
    """What the table's columns mean (a paragraph of the Markdown report)."""
    bandwidth = data.get("core_bandwidth", CORE_BANDWIDTH) / 1e9
    small, large = data.get("compute_sizes", COMPUTE_SIZES)
    return (
        "Faces: `adam_step` (functional), `fastadapt.Adam` (NumPy class) and "
        "`fastadapt.torch.Adam` (torch class) on one tensor each; a *yardstick* is a minimal "
        "Numba kernel doing the mode's work with the mode's bytes (no options, no checks; "
        "`fastadapt/benchmark/_yardsticks.py`; it steps the functional step's arrays), and "
        "*time / yardstick* is the face's time over it (1.05x: 5% slower). Every "
        "implementation's arrays, torch's state included, are placed as fastadapt's classes "
        "place their buffers (`flat.host_zeros`), so placement is in no ratio. *Same-bytes "
        "peers* are torch's or DeepSpeedCPUAdam's "
        "version of the mode (their time over this row's: above 1, fastadapt is faster); "
        "on a torch-class row, its time against the NumPy class's. *ns/elem* is the "
        "single-thread compute cost with every array in L2: the slope of the fastest "
        f"sample's time per call between n = {small:,} and {large:,} (so the per-call cost "
        "drops out; noise only adds time). "
        "*Predicted* is torch fused float32's time per element over the mode's, each "
        f"taken as max(ns/elem, bytes per element / {bandwidth:g} GB/s): what the ratio "
        "would be on a server with that much memory bandwidth per core, where a mode "
        "whose compute is below its bytes' time is memory-bound.")


def disturbed_text(data, above):
    """A line naming the measurements other processes disturbed beyond
    ``above`` (a fraction of the CPUs), or "" when none was."""
    parts = [f"{data[key]:.0%} of the CPUs while {what} ran" for key, what in
             (("others_cpu", f"the modes at n = {data['n']:,}"),
              ("compute_others_cpu", "the compute cost (ns/elem)"))
             if data.get(key) is not None and data[key] > above]
    if not parts:
        return ""
    return ("Disturbed: other processes used " + " and ".join(parts) + "; those figures "
            "measure the contention, not the code: do not quote them.")


def skipped_text(data):
    """One line per group of rows that did not run, with the reason."""
    return "\n".join(f"{what}: {why}" for what, why in data.get("skipped", {}).items())


def per_call_text(data):
    lines = []
    for row in data["per_call"]:
        cells = ", ".join(f"{k} {row['us'][k]:.1f} us ({row['x_fp32'][k]:.2f}x fp32)"
                          for k in row["us"])
        lines.append(f"n={row['n']:,}: {cells}")
    return "\n".join(lines)
