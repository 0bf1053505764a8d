"""The ``storage`` section of ``fastadapt bench``: Adam in each storage mode.

Every mode of the issue "Fewer bytes than fp32" is one Adam step (torch's
defaults) at ``n`` elements, timed interleaved with torch's fused float32
Adam (the 1.0x of the table) and, where torch has the same mode, torch's own
version of it. Bytes per element are what each mode reads and writes (8-bit
state: one byte per element plus a float32 absmax per block of 256, or a
float32 scale per group of 32 when companded). Per-call
costs on small arrays are reported against fastadapt's own float32 call.
"""
import numpy as np

from ._timing import interleaved

BLOCK = 256

#: key -> (label, bytes per element)
MODES = {
    "fp32": ("fastadapt, float32", 28),
    "bf16_state": ("fp32 param + grad, bf16 state", 20),
    "int8_state": ("fp32 param + grad, 8-bit state", 12 + 2 * (2 + 8 / BLOCK)),
    "int8c_state": ("fp32 param + grad, companded 8-bit state", 12 + 2 * (2 + 8 / 32)),
    "bf16_sr": ("bf16 param + grad + state, stochastic rounding", 14),
    "bf16_master": ("bf16 param + grad, fp32 master + state", 30),
}
TORCH_MODES = {
    "torch_fused_fp32": ("torch fused Adam, float32", 28),
    "torch_fused_bf16": ("torch fused Adam, all bfloat16", 14),
    "torch_master": ("torch fused Adam on fp32 master + copy to bf16", 30),
}


def _fastadapt_steps(n, seed=0):
    import ml_dtypes
    import fastadapt
    bf16 = np.dtype(ml_dtypes.bfloat16)
    rng = np.random.default_rng(seed)
    p32 = rng.standard_normal(n).astype(np.float32)
    g32 = (rng.standard_normal(n) * 1e-3).astype(np.float32)
    steps, counters = {}, {}

    def make(key, param, grad, m, v, **extra):
        counters[key] = 0

        def step():
            counters[key] += 1
            fastadapt.adam_step(param, grad, m, v, step=counters[key], **extra)
        steps[key] = step
    make("fp32", p32.copy(), g32, np.zeros(n, np.float32), np.zeros(n, np.float32))
    make("bf16_state", p32.copy(), g32, np.zeros(n, bf16), np.zeros(n, bf16))
    make("int8_state", p32.copy(), g32, fastadapt.Blockwise8(n, True),
         fastadapt.Blockwise8(n, False))
    make("int8c_state", p32.copy(), g32, fastadapt.Companded8(n, True),
         fastadapt.Companded8(n, False))
    make("bf16_sr", p32.astype(bf16), g32.astype(bf16), np.zeros(n, bf16), np.zeros(n, bf16),
         stochastic_rounding=True, seed=1)
    make("bf16_master", p32.astype(bf16), g32.astype(bf16), np.zeros(n, np.float32),
         np.zeros(n, np.float32), master_param=p32.copy())
    return steps


def _torch_steps(n, seed=0):
    try:
        import torch
    except ImportError:
        return {}, "torch is not installed"
    rng = np.random.default_rng(seed)
    p32 = torch.from_numpy(rng.standard_normal(n).astype(np.float32))
    g32 = torch.from_numpy((rng.standard_normal(n) * 1e-3).astype(np.float32))
    steps = {}

    def fused(param, grad, after=None):
        param = param.clone().requires_grad_(True)
        param.grad = grad.clone()
        opt = torch.optim.Adam([param], fused=True)

        def step():
            opt.step()
            if after is not None:
                after(param)
        return step
    steps["torch_fused_fp32"] = fused(p32, g32)
    steps["torch_fused_bf16"] = fused(p32.to(torch.bfloat16), g32.to(torch.bfloat16))
    copy = p32.to(torch.bfloat16)
    steps["torch_master"] = fused(p32, g32, after=lambda m: copy.copy_(m.detach()))
    return steps, None


def storage(n, budget_s, min_rounds, progress, small=(1000, 10000)):
    """One row per mode at ``n`` elements, and the per-call cost of each mode
    at the ``small`` sizes relative to fastadapt's float32 call."""
    steps = _fastadapt_steps(n)
    torch_steps, why_not = _torch_steps(n)
    steps.update(torch_steps)
    timings = interleaved(steps, budget_s=budget_s, min_rounds=min_rounds)
    base = timings.get("torch_fused_fp32")
    # 8-bit state: param 4r+4w, grad 4r, each state 1r+1w plus absmax 4r+4w per block
    bytes_of = {k: v[1] for k, v in MODES.items()}
    bytes_of.update({k: v[1] for k, v in TORCH_MODES.items()})
    labels = {**{k: v[0] for k, v in MODES.items()}, **{k: v[0] for k, v in TORCH_MODES.items()}}
    rows = []
    for key, t in timings.items():
        rows.append({"mode": key, "label": labels[key], "bytes_per_element": bytes_of[key],
                     "median_s": t.median_s, "gbps": bytes_of[key] * n / t.median_s / 1e9,
                     "x_torch_fused_fp32": base.median_s / t.median_s if base else None})
    if "torch_fused_bf16" in timings:
        sr = next(r for r in rows if r["mode"] == "bf16_sr")
        sr["x_torch_fused_bf16"] = timings["torch_fused_bf16"].median_s / timings[
            "bf16_sr"].median_s
    if "torch_master" in timings:
        m = next(r for r in rows if r["mode"] == "bf16_master")
        m["x_torch_master"] = timings["torch_master"].median_s / timings[
            "bf16_master"].median_s
    progress(f"storage modes at n={n:,}: " + ", ".join(
        f"{r['mode']} {r['median_s'] * 1e3:.2f} ms" for r in rows))
    per_call = []
    for m in small:
        t = interleaved(_fastadapt_steps(m), budget_s=budget_s / 4, min_rounds=min_rounds)
        per_call.append({"n": m, "us": {k: v.median_s * 1e6 for k, v in t.items()},
                         "x_fp32": {k: t["fp32"].median_s / v.median_s for k, v in t.items()}})
    return {"n": n, "rows": rows, "per_call": per_call, "torch_unavailable": why_not}


def storage_table(data):
    """(headers, rows) of the modes table, for the report."""
    headers = ["mode", "bytes/elem", "ms per step", "GB/s", "x torch fused fp32"]
    out = []
    for r in data["rows"]:
        x = r["x_torch_fused_fp32"]
        extra = ""
        if "x_torch_fused_bf16" in r:
            extra = f" ({r['x_torch_fused_bf16']:.2f}x torch fused on all-bf16)"
        if "x_torch_master" in r:
            extra = f" ({r['x_torch_master']:.2f}x torch's fused fp32 step + copy)"
        out.append([r["label"], f"{r['bytes_per_element']:.2f}",
                    f"{r['median_s'] * 1e3:.2f}", f"{r['gbps']:.1f}",
                    ("n/a" if x is None else f"{x:.2f}x") + extra])
    return headers, out


def per_call_text(data):
    lines = []
    for row in data["per_call"]:
        cells = ", ".join(f"{k} {row['us'][k]:.1f} us ({row['x_fp32'][k]:.2f}x fp32)"
                          for k in row["us"])
        lines.append(f"n={row['n']:,}: {cells}")
    return "\n".join(lines)
