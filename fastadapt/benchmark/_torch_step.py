"""Bench section: ``optimizer.step()`` of ``fastadapt.torch`` against ``torch.optim``.

Four measurements, every implementation timed interleaved (see
:mod:`._timing`), so only the ratios taken in one run mean anything:

* **GPT-2-small shapes** (148 tensors, 124,439,808 elements at ``d=768``):
  ``fastadapt.torch.X`` (gradients already in the flat buffer, and through
  the copy path: a gradient tensor assigned to every ``.grad`` before each
  step) against ``torch.optim.X`` fused / foreach / single-tensor where torch
  has them, for Adam, RMSprop and Adadelta by default. All implementations of
  one rule share the parameters and gradients (``fastadapt.torch`` packs them,
  torch's optimizers then run over the same tensors); each keeps its own
  state. Memory per rule: parameters and gradients, plus each
  implementation's state (Adam at ``d=768``: 0.5 + 0.5 + 3 x 1 GB, and the
  foreach path's temporaries); :func:`run` refuses sizes that do not fit in
  the memory the kernel reports available.
* **Many small tensors**: 1,000 tensors of 1,000 elements, Adam, against
  torch fused and foreach and against ``fastadapt.adam_step`` on one array of
  the same total size (the floor: the difference is fastadapt.torch's
  per-step overhead, mostly the per-parameter checks in Python).
* **A whole training step** (forward, backward, step) of a small transformer
  block on the CPU, so the step's share of an iteration is visible.
* **Storage modes** (CPU, one tensor of 2^24 elements, as the storage section,
  so the arrays are far larger than the last-level cache):
  bfloat16-state Adam against torch's fused float32 Adam, and bfloat16
  parameters with a float32 master copy against torch's fused float32 step
  on a master copy plus the copy to bfloat16 (see :func:`storage_modes`).

Threads: torch runs its operators on its own OpenMP pool and fastadapt on
Numba's (the ``omp`` layer here), so one process holds two pools; on a small
machine each pool's spinning workers can slow the other's next call. The
interleaved timing's untimed first call absorbs part of that switch; the
whole-step timing includes it, as a training loop does. Measure on a quiet
machine: on a loaded one the ratios swing by several times between runs.

:func:`run` returns plain JSON-able data; :func:`markdown` renders it.
"""
import math
import time

import numpy as np

from ._implementations import Unavailable, gpt2_small_shapes, import_torch
from ._machine import memory_available
from ._placement import placed_state, placed_tensor
from ._timing import interleaved

TORCH_MODES = {"torch_fused": {"fused": True}, "torch_foreach": {"foreach": True},
               "torch_single": {"foreach": False}}
LABELS = {"fastadapt": "fastadapt.torch (grads in the flat buffer)",
          "fastadapt_copy": "fastadapt.torch (copy path: .grad tensors assigned by hand)",
          "fastadapt_one_array": "fastadapt.adam_step on one array of the same size",
          "torch_fused": "torch.optim fused", "torch_foreach": "torch.optim foreach",
          "torch_single": "torch.optim single-tensor",
          "forward_backward_only": "forward + backward only (no step)"}
RULES = ("adam", "rmsprop", "adadelta")
# state arrays per element of each rule's default options, for the memory check
_STATE_ARRAYS = {"adam": 2, "adamw": 2, "rmsprop": 1, "adadelta": 2, "sgd": 0, "adagrad": 1}


def _sync(torch, device):
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return None


def _model_params(torch, shapes, device, seed=0):
    """Parameters with a fixed gradient, for the given shapes."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    params = []
    for shape in shapes:
        p = torch.nn.Parameter(torch.empty(shape).uniform_(-0.1, 0.1, generator=g).to(device))
        p.grad = torch.empty(shape).normal_(0, 1e-3, generator=g).to(device)
        params.append(p)
    return params


def through_autograd(torch, params):
    """Hand each parameter's ``.grad`` over again through a backward, as a
    training loop's gradients arrive: a fastadapt.torch optimizer over
    ``params`` then holds them in its flat gradient buffer (``.grad`` is its
    view, the zero-copy path); a ``.grad`` assigned by hand stays the
    caller's tensor and is copied at every step."""
    with torch.enable_grad():
        for p in params:
            g = p.grad
            p.grad = None
            (p * g).sum().backward()


def _build(torch, rule, params, names):
    """``{name: step}`` over shared ``params`` (fastadapt first: it packs them)."""
    import fastadapt.torch as ft

    steps, unavailable = {}, {}
    cls = getattr(ft, rule.torch_name)
    opt = cls(params)
    through_autograd(torch, params)
    views = [p.grad for p in params]
    if "fastadapt" in names:
        steps["fastadapt"] = opt.step
    if "fastadapt_copy" in names:
        fresh = [v.detach().clone() for v in views]

        def copy_step():
            for p, g in zip(params, fresh):
                p.grad = g
            opt.step()
            for p, v in zip(params, views):     # the other rows' gradients again
                p.grad = v
        steps["fastadapt_copy"] = copy_step
    for name in names:
        if name not in TORCH_MODES:
            continue
        torch_cls = getattr(torch.optim, rule.torch_name)
        try:
            theirs = torch_cls(params, **TORCH_MODES[name])
            theirs.step()
        except (TypeError, RuntimeError, ValueError) as exc:
            unavailable[name] = f"{exc}".splitlines()[0][:80]
            continue
        steps[name] = theirs.step
    return steps, unavailable


def _row(timings, unavailable, baseline="fastadapt"):
    entries = {name: t.as_dict() for name, t in timings.items()}
    base = timings.get(baseline)
    for name, entry in entries.items():
        if base is not None:
            entry["fastadapt_speedup"] = entry["median_s"] / base.median_s
    return {"timings": entries, "unavailable": unavailable}


def gpt2_steps(rules=RULES, d=768, device="cpu", budget_s=3.0, min_rounds=5,
               progress=print, names=("fastadapt", "fastadapt_copy", *TORCH_MODES)):
    """``optimizer.step()`` over GPT-2-small shapes, per rule (see the module doc)."""
    torch = import_torch()
    import fastadapt

    device = torch.device(device)
    shapes = gpt2_small_shapes(d)
    n = sum(int(np.prod(s)) for s in shapes)
    rows = []
    for rule_name in rules:
        rule = fastadapt.RULES[rule_name]
        impls = [x for x in names if x.startswith("fastadapt")] or ["fastadapt"]
        torch_impls = [x for x in names if x in TORCH_MODES]
        need = 4 * n * (2 + _STATE_ARRAYS.get(rule_name, 3) * (len(torch_impls) + 1)
                        + (2 if "torch_foreach" in torch_impls else 0)
                        + (1 if "fastadapt_copy" in impls else 0))
        available = memory_available() if device.type == "cpu" else \
            torch.cuda.mem_get_info(device)[0]
        if available is not None and need > 0.8 * available:
            rows.append({"rule": rule_name, "elements": n, "tensors": len(shapes),
                         "skipped": f"needs ~{need / 2**30:.1f} GiB, "
                                    f"{available / 2**30:.1f} GiB available"})
            progress(f"torch step, GPT-2 shapes d={d}, {rule_name}: skipped (memory)")
            continue
        start = time.perf_counter()
        params = _model_params(torch, shapes, device)
        steps, unavailable = _build(torch, rule, params, names)
        timings = interleaved(steps, budget_s=budget_s, min_rounds=min_rounds,
                              sync=_sync(torch, device))
        row = {"rule": rule_name, "elements": n, "tensors": len(shapes),
               "bytes_per_step": rule.bytes_per_element(4) * n, **_row(timings, unavailable)}
        rows.append(row)
        del steps, params
        progress(f"torch step, GPT-2 shapes d={d}, {rule_name}: "
                 + ", ".join(f"{k} {v['median_s'] * 1e3:.2f} ms"
                             for k, v in row["timings"].items())
                 + f" ({time.perf_counter() - start:.1f} s)")
    return rows


def many_small(count=1000, size=1000, device="cpu", budget_s=2.0, min_rounds=5,
               progress=print):
    """Adam over ``count`` tensors of ``size`` elements: the per-step overhead."""
    torch = import_torch()
    import fastadapt

    device = torch.device(device)
    params = _model_params(torch, [(size,)] * count, device)
    steps, unavailable = _build(torch, fastadapt.RULES["adam"], params,
                                ("fastadapt", "fastadapt_copy", "torch_fused",
                                 "torch_foreach"))
    if device.type == "cpu":
        flat = np.random.default_rng(0).uniform(-0.1, 0.1, count * size).astype(np.float32)
        grad = np.full_like(flat, 1e-3)
        m, v = np.zeros_like(flat), np.zeros_like(flat)
        counter = iter(range(1, 1 << 62))
        steps["fastadapt_one_array"] = lambda: fastadapt.adam_step(flat, grad, m, v,
                                                                   step=next(counter))
    timings = interleaved(steps, budget_s=budget_s, min_rounds=min_rounds,
                          sync=_sync(torch, device))
    row = {"tensors": count, "elements_each": size, **_row(timings, unavailable)}
    floor = row["timings"].get("fastadapt_one_array")
    if floor is not None:
        row["overhead_us_per_tensor"] = (row["timings"]["fastadapt"]["median_s"]
                                         - floor["median_s"]) / count * 1e6
    progress(f"torch step, {count} tensors of {size}: "
             + ", ".join(f"{k} {v['median_s'] * 1e6:.0f} us" for k, v in row["timings"].items()))
    return row


def whole_step(d_model=256, nhead=4, seq=128, batch=8, budget_s=3.0, min_rounds=5,
               progress=print):
    """Forward, backward and Adam step of one transformer encoder block (CPU)."""
    torch = import_torch()
    import fastadapt.torch as ft

    torch.manual_seed(0)
    x = torch.randn(batch, seq, d_model)
    steps, unavailable = {}, {}
    for name in ("fastadapt", "torch_fused", "torch_foreach"):
        torch.manual_seed(0)
        block = torch.nn.TransformerEncoderLayer(d_model, nhead, 4 * d_model,
                                                 batch_first=True, dropout=0.0)
        if name == "fastadapt":
            opt = ft.Adam(block.parameters(), lr=1e-4)
        else:
            try:
                opt = torch.optim.Adam(block.parameters(), lr=1e-4, **TORCH_MODES[name])
            except (TypeError, RuntimeError, ValueError) as exc:
                unavailable[name] = str(exc).splitlines()[0][:80]
                continue

        def train(block=block, opt=opt):
            opt.zero_grad(set_to_none=False)
            block(x).square().mean().backward()
            opt.step()

        def forward_backward(block=block, opt=opt):
            opt.zero_grad(set_to_none=False)
            block(x).square().mean().backward()

        steps[name] = train
        if name == "fastadapt":
            steps["forward_backward_only"] = forward_backward
    timings = interleaved(steps, budget_s=budget_s, min_rounds=min_rounds)
    row = {"d_model": d_model, "seq": seq, "batch": batch,
           "parameters": sum(p.numel() for p in block.parameters()),
           **_row(timings, unavailable)}
    fb = timings.get("forward_backward_only")
    if fb is not None:
        for name, entry in row["timings"].items():
            if name != "forward_backward_only":
                entry["step_share"] = max(0.0, 1 - fb.median_s / entry["median_s"])
    progress("torch whole training step: " + ", ".join(
        f"{k} {v['median_s'] * 1e3:.2f} ms" for k, v in row["timings"].items()))
    return row


#: The storage-mode rows: (key, label, issue target), fastadapt.torch.Adam
#: against torch's fused float32 Adam doing the same job.
STORAGE_ROWS = (
    ("bf16_state", "bf16-state Adam vs torch fused float32", 1.3),
    ("bf16_master", "bf16 params + fp32 master vs torch fused fp32 step + copy to bf16", 1.1))
#: bytes per element per step of each side (see the README's "Fewer bytes")
_STORAGE_BYTES = {"bf16_state": (20, 28), "bf16_master": (30, 30)}


def storage_modes(n=1 << 24, budget_s=3.0, min_rounds=5, progress=print):
    """Adam over one CPU tensor of ``n`` elements in the storage modes of
    ``fastadapt.torch`` against what torch does for the same job:

    * ``bf16_state``: float32 parameters and gradients, bfloat16 moments
      (``state_dtype=torch.bfloat16``, 20 bytes per element) against
      ``torch.optim.Adam(fused=True)`` on float32 (28 bytes);
    * ``bf16_master``: bfloat16 parameters and gradients with a float32
      master copy (``master_weights=True``: 30 bytes) against torch's fused
      float32 step on a float32 master (fed the bfloat16 gradient as
      float32) followed by ``p16.copy_(master)``.

    Each side has its own tensors; torch's (parameters, gradients, and its
    state after a first step) lie as fastadapt.torch places its buffers
    (``flat.host_zeros``), which moved a 2**24 step by 13% (see the storage
    section). ``speedup`` is torch's median time over fastadapt.torch's (> 1:
    fastadapt.torch is faster).
    """
    torch = import_torch()
    import fastadapt.torch as ft

    g = torch.Generator().manual_seed(0)
    start = torch.empty(n).uniform_(-0.1, 0.1, generator=g)
    grad = torch.empty(n).normal_(0, 1e-3, generator=g)
    rows = []
    for key, label, target in STORAGE_ROWS:
        steps = {}
        if key == "bf16_state":
            p = torch.nn.Parameter(start.clone())
            p.grad = grad.clone()
            ours = ft.Adam([p], state_dtype=torch.bfloat16)
            through_autograd(torch, [p])
            q = torch.nn.Parameter(placed_tensor(torch, start))
            q.grad = placed_tensor(torch, grad)
            theirs = torch.optim.Adam([q], fused=True)
            theirs.step()
            placed_state(torch, theirs)
            steps = {"fastadapt": ours.step, "torch_fused": theirs.step}
        else:
            p = torch.nn.Parameter(start.to(torch.bfloat16))
            p.grad = grad.to(torch.bfloat16)
            ours = ft.Adam([p], master_weights=True)
            through_autograd(torch, [p])
            master = torch.nn.Parameter(placed_tensor(torch, p.detach().float()))
            master.grad = placed_tensor(torch, p.grad.float())
            model = placed_tensor(torch, p.detach())
            theirs = torch.optim.Adam([master], fused=True)
            theirs.step()
            placed_state(torch, theirs)

            def torch_step(theirs=theirs, model=model, master=master):
                theirs.step()
                with torch.no_grad():
                    model.copy_(master)
            steps = {"fastadapt": ours.step, "torch_fused": torch_step}
        timings = interleaved(steps, budget_s=budget_s, min_rounds=min_rounds)
        ours_b, theirs_b = _STORAGE_BYTES[key]
        row = {"mode": key, "label": label, "target": target, "elements": n,
               "bytes_per_element": {"fastadapt": ours_b, "torch_fused": theirs_b},
               **_row(timings, {})}
        row["speedup"] = (row["timings"]["torch_fused"]["median_s"]
                          / row["timings"]["fastadapt"]["median_s"])
        rows.append(row)
        del steps, ours, theirs
        progress(f"torch storage modes, {label}: {row['speedup']:.2f}x "
                 + ", ".join(f"{k} {v['median_s'] * 1e3:.2f} ms"
                             for k, v in row["timings"].items()))
    return {"elements": n, "rows": rows}


def run(quick=False, device="cpu", progress=print, rules=RULES, d=None):
    """The whole section: ``{"gpt2": [...], "many_small": {...}, "whole_step": {...}}``.

    ``quick`` uses GPT-2's 148 tensors at width 128 (8.9M elements) and short
    budgets; otherwise the real GPT-2-small width (768, 124M elements).
    """
    d = d or (128 if quick else 768)
    budget = 1.0 if quick else 3.0
    out = {"device": str(device), "gpt2_width": d}
    try:
        out["gpt2"] = gpt2_steps(rules, d=d, device=device, budget_s=budget, progress=progress)
        out["many_small"] = many_small(device=device, budget_s=budget / 2, progress=progress)
        if str(device) == "cpu":
            out["whole_step"] = whole_step(budget_s=budget, progress=progress)
            out["storage"] = storage_modes(n=1 << 24, budget_s=budget,
                                           progress=progress)
    except Unavailable as exc:
        out["unavailable"] = str(exc)
    return out


def _ms(entry):
    return f"{entry['median_s'] * 1e3:.3f}"


def markdown(data):
    """The section's tables, as Markdown text (times are medians; "x" columns
    are the implementation's time over fastadapt.torch's, so > 1 means
    fastadapt.torch is faster)."""
    if "unavailable" in data:
        return f"fastadapt.torch step: unavailable ({data['unavailable']})\n"
    lines = [f"### optimizer.step() on GPT-2-small shapes (width {data['gpt2_width']}), "
             f"{data['device']}", "",
             "| rule | implementation | ms / step | GB/s | vs fastadapt.torch |",
             "|---|---|---|---|---|"]
    for row in data["gpt2"]:
        if "skipped" in row:
            lines.append(f"| {row['rule']} | skipped: {row['skipped']} | | | |")
            continue
        for name, entry in row["timings"].items():
            gbps = row["bytes_per_step"] / entry["median_s"] / 1e9
            lines.append(f"| {row['rule']} | {LABELS.get(name, name)} | {_ms(entry)} | "
                         f"{gbps:.1f} | {entry.get('fastadapt_speedup', math.nan):.2f}x |")
        for name, why in row["unavailable"].items():
            lines.append(f"| {row['rule']} | {LABELS.get(name, name)} | unavailable: {why} | | |")
    small = data["many_small"]
    lines += ["", f"### Adam over {small['tensors']} tensors of {small['elements_each']} "
              "elements", "", "| implementation | us / step | vs fastadapt.torch |",
              "|---|---|---|"]
    for name, entry in small["timings"].items():
        lines.append(f"| {LABELS.get(name, name)} | {entry['median_s'] * 1e6:.0f} | "
                     f"{entry.get('fastadapt_speedup', math.nan):.2f}x |")
    if "overhead_us_per_tensor" in small:
        lines.append(f"\nfastadapt.torch overhead over one flat adam_step: "
                     f"{small['overhead_us_per_tensor']:.2f} us per tensor per step")
    whole = data.get("whole_step")
    if whole:
        lines += ["", f"### Whole training step, one transformer block (d_model "
                  f"{whole['d_model']}, seq {whole['seq']}, batch {whole['batch']}, "
                  f"{whole['parameters']:,} parameters), CPU", "",
                  "| implementation | ms / iteration | optimizer step's share |", "|---|---|---|"]
        for name, entry in whole["timings"].items():
            share = entry.get("step_share")
            lines.append(f"| {LABELS.get(name, name)} | {_ms(entry)} | "
                         f"{'' if share is None else f'{share:.0%}'} |")
    storage = data.get("storage")
    if storage:
        lines += ["", f"### Storage modes: Adam over one tensor of {storage['elements']:,} "
                  "elements, CPU", "",
                  "| comparison | bytes / element (fastadapt, torch) | fastadapt ms | "
                  "torch ms | speedup | issue target |", "|---|---|---|---|---|---|"]
        for row in storage["rows"]:
            b = row["bytes_per_element"]
            lines.append(f"| {row['label']} | {b['fastadapt']}, {b['torch_fused']} | "
                         f"{_ms(row['timings']['fastadapt'])} | "
                         f"{_ms(row['timings']['torch_fused'])} | {row['speedup']:.2f}x | "
                         f">= {row['target']}x |")
    return "\n".join(lines) + "\n"
