"""The benchmark's documents: the terminal report and the Markdown one
(``bench/RESULTS.md``), laid out around the tables of :mod:`._tables`, all
generated from one run's data (the dict ``fastadapt bench --json`` writes);
the plots are :mod:`._plot`'s."""
import os

from ._configs import size_label as _n
from ._machine import load_text, one_line
from ._tables import (DASH, DISTURBED_ABOVE, Table, accuracy_table, cold_start_table,
                      cuda_table, disturbed, gpt2_table, load_table, per_call_table,
                      register_table, storage_table, sweep_table, threshold_table,
                      throughput_table, wholestep_tables)

LOAD_TITLE = "Mid-size updates on a busy machine: the thread pool only where it pays"
LOAD_TEXT = ("Adam's compiled loop, mean microseconds per call (a mean, since a late "
             "thread shows in a minority of calls): always on the thread pool, always "
             "serial, and as the dispatcher runs updates of `SERIAL_BELOW` to "
             "`ADAPTIVE_BELOW` elements (fastadapt/_pool.py: the loop whose recent calls "
             "were faster, the other tried now and then). First on the machine as it was, "
             "then with one spinning process per CPU. `pool / choice` above 1: the choice "
             "is faster.")


# ----------------------------------------------------------------- documents
_EXPLAIN = (
    "Times are medians over interleaved rounds (every implementation timed once per "
    "round, in rotated order). GB/s = bytes moved per step / time, where bytes = "
    "itemsize x (3 + 2 x state arrays) x n (param read+written, grad read, each state "
    "array read+written). % roofline = the same-traffic roofline kernel's time / "
    "fastadapt's, at the same size (the roofline kernel is called directly, so on small "
    "arrays this column measures fastadapt's per-call overhead; on large ones, above "
    "100% means the two are equal within the noise). Every \"x\" column, in every table, "
    "is the rival's time / fastadapt's time: above 1, fastadapt is faster. torch runs "
    "`optimizer.step()` on one parameter tensor with `.grad` set. NumPy is the "
    "in-place-ufunc rival in `fastadapt/benchmark/_numpy_reference.py` (one pass over "
    "memory per ufunc) with its two or three temporaries allocated once and reused; "
    "\"NumPy fresh temps\" is the same code allocating them in every call "
    "(`np.empty_like`), as a step function that keeps no buffers does. A measurement "
    "during which other processes used more than 15% of the CPUs (machine busy time from "
    "/proc/stat minus this process's CPU time) is taken again, up to `--retries` times; "
    "one that stayed disturbed shows \"— busy N%\" instead of figures, since they would "
    "measure the contention rather than the code (`--json` keeps them)."
)


def _wrap(text, width=100):
    import textwrap
    return "\n".join(textwrap.wrap(text, width))


def bandwidth(data):
    """``(GB/s, n, rows)``: the median over rules of the same-traffic roofline's
    bandwidth at the largest size of the sweep (undisturbed rows only), the
    figure every row's % roofline is relative to; ``(None, n, 0)`` if none."""
    rows = [r for r in data.get("sweep") or [] if "gbps" in r["implementations"]["roofline"]]
    if not rows:
        return None, None, 0
    n = max(r["n"] for r in rows)
    good = sorted(r["implementations"]["roofline"]["gbps"] for r in rows
                  if r["n"] == n and disturbed(r) is None)
    if not good:
        return None, n, 0
    mid = len(good) // 2
    median = good[mid] if len(good) % 2 else (good[mid - 1] + good[mid]) / 2
    return median, n, len(good)


def _cache_line(data):
    """One line on the sizes that run from cache, or "" if the cache is unknown."""
    cache = (data["machine"].get("caches") or {}).get("largest_bytes")
    rows = data.get("sweep") or []
    if not cache or not rows:
        return ""
    itemsize = 4 if data["settings"]["dtype"] == "float32" else 8

    def footprint(r):          # param, grad and each state array, once each
        states = (r["bytes_per_element"] // itemsize - 3) // 2
        return (2 + states) * itemsize * r["n"]
    resident = sorted({r["n"] for r in rows if footprint(r) <= cache})
    sizes = ", ".join(_n(n) for n in resident) if resident else "none"
    return (f"Cache-resident sizes: when a row's arrays fit in the {cache / 2**20:.0f} MiB "
            f"last-level cache (here n = {sizes}), the update runs from cache, not from "
            "memory, so its GB/s can exceed the bandwidth above; % roofline still compares "
            "it with the roofline kernel at that same size.")


def _bandwidth_line(data):
    gbps, n, count = bandwidth(data)
    if n is None:
        return ""
    if gbps is None:
        return (f"Memory bandwidth: {DASH} (every roofline measurement at n = {_n(n)} was "
                "disturbed by other processes)")
    return (f"Memory bandwidth the rows are compared with: {gbps:.1f} GB/s, the in-place "
            f"same-traffic roofline kernel at n = {_n(n)} ("
            + (f"median over {count} rules)" if count > 1 else "one rule undisturbed)"))


def sections_text(data):
    """``[(title, body)]`` for the terminal."""
    out = []
    if data.get("sweep"):
        out.append((f"Update step, {data['settings']['dtype']}", sweep_table(data["sweep"]).text()))
    if data.get("per_call"):
        out.append(("Per-call cost on small arrays (fastadapt = driver alone + Python side)",
                    per_call_table(data["per_call"]).text()))
    if data.get("threshold"):
        t = data["threshold"]
        out.append((f"Serial vs parallel driver, us per call ({t['dtype']}); SERIAL_BELOW = "
                    f"{t['serial_below']} in kernels/cpu.py, median crossover measured here: "
                    f"{_cross(t['median_crossover'], t)}", threshold_table(t).text()))
    if data.get("load"):
        out.append((LOAD_TITLE, load_table(data["load"]).text()))
    for g in filter(None, (data.get("gpt2"), data.get("gpt2_narrow"))):
        out.append((f"GPT-2 shapes (d_model={g.get('d_model', 768)}), Adam: {g['arrays']} "
                    f"arrays, {g['elements']:,} elements, {g['dtype']}", gpt2_table(g).text()))
    if data.get("cold_start"):
        c = data["cold_start"]
        out.append((f"Cold start: adam_step on {c['n']:,} {c['dtype']} elements in a fresh "
                    "process", cold_start_table(c).text()))
    if data.get("cuda") is not None:
        c = data["cuda"]
        if c["available"]:
            out.append((_gpu_title(c), cuda_table(c).text()))
            if c.get("registers", {}).get("rows"):
                out.append((_REGISTERS_TITLE, register_table(c["registers"]).text()))
        else:
            out.append(("GPU", c["reason"]))
    for title, table in wholestep_tables(data.get("wholestep")):
        out.append((title, table.text()))
    if data.get("torch_step"):
        out.append(("fastadapt.torch: optimizer.step() against torch.optim",
                    _torch_step_markdown(data["torch_step"])))
    if data.get("storage"):
        s = data["storage"]
        out.append((f"Storage modes, Adam at n = {_n(s['n'])} (1.0x = torch fused float32 "
                     "Adam, same run)",
                     "\n".join(filter(None, (_storage_disturbed(s), storage_table(s).text())))))
        if s.get("skipped"):
            out.append(("Storage modes not measured", _storage_skipped(s)))
        out.append(("Storage modes, per call on small arrays", _storage_per_call(s)))
    if data.get("accuracy"):
        from ._accuracy import problems
        for result in problems(data["accuracy"]):
            out.append((_accuracy_title(result), accuracy_table(result).text()))
    if data.get("zero"):
        out.append(("Sharded state (ZeRO): step time per rank and state bytes per rank",
                    _zero_markdown(data["zero"])))
    note = _disturbance_note(data)
    if note:
        out.append(("Disturbed measurements", _wrap(note)))
    return out


def _zero_markdown(data):
    from ._zero import markdown
    return markdown(data)


def _torch_step_markdown(data):
    from ._torch_step import markdown
    return markdown(data).rstrip()


def _accuracy_title(a):
    what = a.get("title", "a small MLP")
    metric = a.get("metric", "final loss")
    start = {"final f - f*": "f - f*", "validation loss": "validation loss"}.get(metric, "loss")
    batches = "minibatch" if metric == "validation loss" else "full-batch"
    return (f"Storage modes, accuracy: Adam (lr {a['lr']:g}) on {what}, {a['steps']} "
            f"{batches} steps from {start} {a['initial_loss']:.4g}")


def _storage_disturbed(s):
    from ._storage_modes import disturbed_text
    return _wrap(disturbed_text(s, DISTURBED_ABOVE))


def _storage_skipped(s):
    from ._storage_modes import skipped_text
    return skipped_text(s)


def _storage_columns(s):
    from ._storage_modes import columns_text
    return columns_text(s)


def _storage_per_call(s):
    from ._storage_modes import per_call_text
    return per_call_text(s)


_REGISTERS_TITLE = ("Registers per thread of each CUDA kernel (ptxas -v on NVVM's PTX; "
                    "stack and spill in bytes)")


def _gpu_title(c):
    title = f"GPU: {c['device']}"
    if c.get("roofline_gbps"):
        title += (f"; memory bandwidth {c['roofline_gbps']:.0f} GB/s (same-traffic roofline "
                  f"kernel at n = {_n(c['roofline_n'])})")
    if c.get("torch_unavailable"):
        title += f"; torch columns: {c['torch_unavailable']}"
    return title


def _disturbance_note(data):
    """A footnote for "— busy" cells, or "" when nothing stayed disturbed."""
    entries = list(data.get("sweep", [])) + list(data.get("per_call", []))
    entries += [{"others_cpu": o} for r in (data.get("threshold") or {}).get("rows", [])
                for o in r.get("others_cpu", [])]
    entries += [g for g in (data.get("gpt2"), data.get("gpt2_narrow")) if g]
    marked = sum(1 for e in entries if disturbed(e) is not None)
    if not marked:
        return ""
    return (f"{marked} of {len(entries)} measurements stayed disturbed: other processes used "
            f"more than {DISTURBED_ABOVE:.0%} of the CPUs while they ran, even after "
            f"{data['settings'].get('retries', 0)} retries, so they show \"— busy N%\" "
            "instead of figures. Run again on a quieter machine (`--json` keeps the raw "
            "numbers).")


def _cross(value, t):
    if value is None:
        return "n/a"
    sizes = t["rows"][0]["sizes"] if t["rows"] else [0]
    return f"{value:,}" if value <= sizes[-1] else f"> {sizes[-1]:,}"


def text_report(data):
    lines = [f"fastadapt bench: {one_line(data['machine'])}"]
    for extra in (_bandwidth_line(data), _cache_line(data)):
        if extra:
            lines.append(_wrap(extra))
    lines += ["", _wrap(_EXPLAIN), ""]
    for title, body in sections_text(data):
        lines += [title, body, ""]
    lines.append(f"wall time {data['wall_s']:.0f} s")
    return "\n".join(lines)


def markdown_report(data, plot_path=None, markdown_path=None, accuracy_plot_path=None):
    m = data["machine"]
    v = m["versions"]
    mem = f"{m['memory_bytes'] / 2**30:.1f} GiB" if m["memory_bytes"] else "unknown"
    gbps, n, count = bandwidth(data)
    machine_rows = [
        ["CPU", m["cpu"]],
        *([["compiled for (LLVM's CPU, vector instructions)", m["compile_target"]]]
          if m.get("compile_target") else []),
        ["cores", f"{m['usable_cpus']} usable ({m['logical_cpus']} logical)"],
        ["memory", mem],
    ]
    caches = (m.get("caches") or {}).get("levels")
    if caches:
        machine_rows.append(["caches", ", ".join(f"{k} {b / 2**20:g} MiB" for k, b in
                                                   caches.items())])
    if n is not None:
        machine_rows.append([
            f"memory bandwidth (same-traffic roofline kernel at n = {_n(n)}, median over the "
            "rules; what % roofline is relative to)",
            f"{gbps:.1f} GB/s" if gbps is not None else f"{DASH} (disturbed)"])
    machine_rows += [
        ["threads", f"numba {m['numba_threads']} ({m['numba_threading_layer']}), torch "
                    f"{m['torch_threads'] if m['torch_threads'] else 'n/a'}"],
        ["software", f"fastadapt {v['fastadapt']}, numba {v['numba']}, numpy {v['numpy']}, "
                     f"torch {v['torch'] or 'not installed'}, python {v['python']}"],
        ["load average (1 min, all processes)", load_text(m)],
        ["platform", m["platform"]],
        ["date", m["date_utc"]],
        ["run time", f"{data['wall_s']:.0f} s (of which re-measuring disturbed "
                     f"measurements: {data.get('retry_seconds', 0):.0f} s)"],
    ]
    lines = [
        "# fastadapt benchmark results",
        "",
        "Generated by `" + " ".join(data["command"]) + "` — do not edit by hand; "
        "see `bench/README.md` to regenerate.",
        "",
        "## Machine",
        "",
        Table(["", ""], machine_rows, right=()).markdown(),
        "",
        _EXPLAIN,
        "",
    ]
    cache_line = _cache_line(data)
    if cache_line:
        lines += [cache_line, ""]
    if data.get("sweep"):
        lines += [f"## Update step ({data['settings']['dtype']})", "",
                  sweep_table(data["sweep"]).markdown(), ""]
        note = _disturbance_note(data)
        if note:
            lines += [note, ""]
        if plot_path:
            rel = os.path.relpath(plot_path, os.path.dirname(os.path.abspath(markdown_path))
                                  if markdown_path else ".")
            lines += [f"![throughput vs size]({rel})", ""]
        lines += ["### Throughput per implementation (GB/s)", "",
                  throughput_table(data["sweep"]).markdown(), ""]
    if data.get("per_call"):
        lines += ["## Per-call cost on small arrays", "",
                  "`driver alone` calls the compiled loop directly with the dispatcher's "
                  "arguments; `Python side` = fastadapt - driver alone (argument checks, "
                  "scalars, dispatch); `x bare call` = fastadapt / driver alone, the median "
                  "of the ratio within each round (the two ran back to back) and its "
                  "quartiles, shown on a busy machine too.", "", per_call_table(data["per_call"]).markdown(), ""]
    if data.get("threshold"):
        t = data["threshold"]
        lines += ["## Serial / parallel threshold", "",
                  f"Microseconds per call of `DRIVERS[rule].serial` and `.parallel`. "
                  f"`SERIAL_BELOW` is {t['serial_below']}; the median crossover measured here "
                  f"is {_cross(t['median_crossover'], t)}. Regenerate with "
                  "`fastadapt bench --threshold`.", "", threshold_table(t).markdown(), ""]
    if data.get("load"):
        lines += [f"## {LOAD_TITLE}", "", LOAD_TEXT, "", load_table(data["load"]).markdown(), ""]
    for g in filter(None, (data.get("gpt2"), data.get("gpt2_narrow"))):
        d = g.get("d_model", 768)
        lines += [f"## A model-shaped step: GPT-2 small shapes, d_model={d}", "",
                  f"Adam over the {g['arrays']} parameter arrays of GPT-2 small"
                  + ("" if d == 768 else f" narrowed to d_model={d}")
                  + f" ({g['elements']:,} {g['dtype']} elements): fastadapt's optimizer class "
                  "keeps them in one flat buffer (one kernel call); torch steps the list of "
                  "tensors; `adam_step` on one array of the same size is the class's floor. "
                  "Speed-up = that row's time / fastadapt.Adam's.", "",
                  gpt2_table(g).markdown(), ""]
    if data.get("cold_start"):
        c = data["cold_start"]
        lines += ["## Cold start", "",
                  f"`import fastadapt` and the first `adam_step` ({c['n']:,} {c['dtype']} "
                  "elements) in a fresh process: first with an empty compile cache (the "
                  "one-off compile), then with the cache that run filled.", "",
                  cold_start_table(c).markdown(), ""]
    tables = wholestep_tables(data.get("wholestep"))
    if tables:
        lines += ["## Whole-step fusion", "",
                  "fastadapt's step with `max_grad_norm` reads the gradients once for the "
                  "global norm, then folds the loss scale and the clipping coefficient into "
                  "the update's gradient scalar: 4 + 28 bytes per float32 element for Adam, "
                  "against torch's `GradScaler.unscale_` (8), `clip_grad_norm_` (4 + 8) and "
                  "the step (28).", ""]
        for title, table in tables:
            lines += [f"### {title}", "", table.markdown(), ""]
    if data.get("torch_step"):
        lines += ["## fastadapt.torch", "", _torch_step_markdown(data["torch_step"]), ""]
    if data.get("storage"):
        s = data["storage"]
        lines += ["## Fewer bytes: storage modes (Adam)", "",
                  f"One Adam step at n = {_n(s['n'])} in each storage mode, interleaved with "
                  "torch's fused float32 Adam (1.0x) in one run; bytes per element are what "
                  "each mode reads and writes.", "", _storage_columns(s), ""]
        if _storage_disturbed(s):
            lines += [_storage_disturbed(s), ""]
        lines += [storage_table(s).markdown(), ""]
        if s.get("skipped"):
            lines += ["Not measured:", "", "```", _storage_skipped(s), "```", ""]
        lines += ["Per call on small arrays, against fastadapt's float32 call:", "",
                  "```", _storage_per_call(s), "```", ""]
    if data.get("accuracy"):
        from ._accuracy import problems
        lines += ["## Fewer bytes: accuracy", "",
                  "Each problem trained in every storage mode from the same start; the "
                  "figure in each mode and its ratio to float32's (above 1: the mode hurts).",
                  ""]
        for a in problems(data["accuracy"]):
            lines += [_accuracy_title(a) + ".", "", accuracy_table(a).markdown(), ""]
        for name, why in data["accuracy"].get("unavailable", {}).items():
            lines += [f"Not run: the {name} problem ({why}).", ""]
        if accuracy_plot_path:
            rel = os.path.relpath(accuracy_plot_path,
                                  os.path.dirname(os.path.abspath(markdown_path))
                                  if markdown_path else ".")
            lines += [f"![training curves per storage mode]({rel})", ""]
    if data.get("zero"):
        lines += ["## Sharded state (ZeRO)", "",
                  "`fastadapt.torch.ZeroRedundancyOptimizer` against torch's "
                  "`ZeroRedundancyOptimizer` (fused Adam), each rank a process; time per "
                  "step is the slower rank's median, state bytes are measured per rank.", "",
                  _zero_markdown(data["zero"]), ""]
    if data.get("cuda") is not None:
        c = data["cuda"]
        lines += ["## GPU", ""]
        if c["available"]:
            lines += [_gpu_title(c) + ".", "", cuda_table(c).markdown(), ""]
            if c.get("registers", {}).get("rows"):
                lines += [_REGISTERS_TITLE + ".", "",
                          register_table(c["registers"]).markdown(), ""]
        else:
            lines += [c["reason"] + ".", ""]
    return "\n".join(lines)
