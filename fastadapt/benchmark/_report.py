"""Tables (terminal and Markdown) and the throughput plot,
all generated from one run's data (the dict ``fastadapt bench --json`` writes)."""
import os

from ._configs import size_label as _n
from ._implementations import GPT2_LABELS, IMPLEMENTATIONS, LABELS, TORCH_MODES
from ._machine import load_text, one_line

SPEEDUP_COLUMNS = ("numpy", "numpy_alloc") + tuple(TORCH_MODES)


class Table:
    """Rows of strings with a header; rendered aligned for a terminal or as Markdown."""

    def __init__(self, headers, rows, right=None):
        self.headers = list(headers)
        self.rows = [list(r) for r in rows]
        self.right = set(range(1, len(headers))) if right is None else set(right)

    def text(self):
        cells = [self.headers] + self.rows
        widths = [max(len(r[i]) for r in cells) for i in range(len(self.headers))]

        def line(r):
            return "  ".join(c.rjust(w) if i in self.right else c.ljust(w)
                             for i, (c, w) in enumerate(zip(r, widths))).rstrip()
        rule = "  ".join("-" * w for w in widths)
        return "\n".join([line(self.headers), rule] + [line(r) for r in self.rows])

    def markdown(self):
        def line(r):
            return "| " + " | ".join(c.replace("|", "\\|") for c in r) + " |"
        align = ["---:" if i in self.right else "---" for i in range(len(self.headers))]
        return "\n".join([line(self.headers), "|" + "|".join(align) + "|"]
                         + [line(r) for r in self.rows])


def _x(value):
    return f"{value:.2f}x" if value < 10 else f"{value:.1f}x"


def _us(seconds_or_us, already_us=False):
    us = seconds_or_us if already_us else seconds_or_us * 1e6
    if us >= 10_000:
        return f"{us / 1e3:,.1f} ms"
    return f"{us:,.1f} us" if us >= 10 else f"{us:.2f} us"


DISTURBED_ABOVE = 0.15
DASH = "—"


def _disturbed(entry, above=DISTURBED_ABOVE):
    """The share of the CPUs other processes used during a measurement that
    stayed disturbed after its retries, else None."""
    others = entry.get("others_cpu") if isinstance(entry, dict) else entry
    return others if others is not None and others > above else None


def _busy(others):
    """The cell that replaces a disturbed measurement's figures."""
    return f"{DASH} busy {others:.0%}"


def _unavailable_cell(reason):
    if reason == "torch not installed":
        return reason
    if reason.startswith("no fused"):
        return "no fused"
    if "CUDA" in reason or "simulator" in reason:
        return "no CUDA torch"
    return "n/a"


# ----------------------------------------------------------------- tables
SWEEP_HEADERS = ["rule", "n", "time/step", "GB/s", "% roofline", "x NumPy",
                 "x NumPy fresh temps", "x torch single", "x torch foreach", "x torch fused"]


def sweep_table(rows):
    headers = SWEEP_HEADERS
    out = []
    for r in rows:
        if "fastadapt_us" not in r:
            out.append([r["label"], _n(r["n"]), "did not run"] + [""] * (len(headers) - 3))
            continue
        others = _disturbed(r)
        if others is not None:
            out.append([r["label"], _n(r["n"]), _busy(others)] + [DASH] * (len(headers) - 3))
            continue
        cells = [r["label"], _n(r["n"]), _us(r["fastadapt_us"], True),
                 f"{r['fastadapt_gbps']:.1f}",
                 f"{r['pct_roofline']:.0f}%" if "pct_roofline" in r else "n/a"]
        for name in SPEEDUP_COLUMNS:
            if name in r["speedup"]:
                cells.append(_x(r["speedup"][name]))
            else:
                cells.append(_unavailable_cell(r["implementations"][name]["unavailable"]))
        out.append(cells)
    return Table(headers, out, right=range(1, len(headers)))


def throughput_table(rows):
    headers = ["rule", "n", "bytes/elem"] + [f"{LABELS[i]} GB/s" for i in IMPLEMENTATIONS]
    out = []
    for r in rows:
        cells = [r["label"], _n(r["n"]), str(r["bytes_per_element"])]
        others = _disturbed(r)
        for name in IMPLEMENTATIONS:
            entry = r["implementations"][name]
            if "gbps" not in entry:
                cells.append(_unavailable_cell(entry["unavailable"]))
            elif others is not None:
                cells.append(DASH)
            else:
                cells.append(f"{entry['gbps']:.1f}")
        out.append(cells)
    return Table(headers, out)


def per_call_table(rows):
    headers = ["rule", "n", "fastadapt", "driver alone", "Python side", "x bare call",
               "torch fused", "torch single", "x torch fused"]
    out = []
    for r in rows:
        us = r["us"]
        others = _disturbed(r)
        bare = "n/a"
        if "x_bare" in r:       # a ratio within rounds: shown on a busy machine too
            lo, hi = r["x_bare_iqr"]
            bare = f"{r['x_bare']:.1f}x ({lo:.1f}-{hi:.1f})"
        if others is not None:
            out.append([r["label"], _n(r["n"]), _busy(others), DASH, DASH, bare]
                       + [DASH] * 3)
            continue

        def cell(name):
            if name in us:
                return _us(us[name], True)
            return _unavailable_cell(r["unavailable"].get(name, "n/a"))
        # a difference of two medians can fall below zero by noise: not a cost
        overhead = (_us(r["overhead_us"], True) if r["overhead_us"] >= 0
                    else f"{DASH} (below noise)")
        out.append([r["label"], _n(r["n"]), cell("fastadapt"), cell("driver"),
                    overhead, bare, cell("torch_fused"), cell("torch_single"),
                    _x(r["x_torch_fused"]) if "x_torch_fused" in r else "n/a"])
    return Table(headers, out)


def threshold_table(data):
    sizes = data["rows"][0]["sizes"] if data["rows"] else []
    headers = ["rule", "driver"] + [f"{n:,}" for n in sizes] + ["parallel faster from"]
    out = []
    for r in data["rows"]:
        others = [_disturbed(o) for o in r.get("others_cpu", [None] * len(sizes))]
        disturbed = any(o is not None for o in others)
        cross = (DASH if disturbed else f"{r['crossover']:,}" if r["crossover"]
                 else f"> {sizes[-1]:,}")
        for kind, label in (("serial_us", "serial"), ("parallel_us", "parallel")):
            out.append([r["label"] if kind == "serial_us" else "", label]
                       + [DASH if o is not None else f"{t:.2f}" for t, o in zip(r[kind], others)]
                       + [cross if kind == "serial_us" else ""])
    return Table(headers, out, right=range(2, len(headers)))


def load_table(data):
    headers = ["machine", "n", "others' CPU", "pool", "serial", "fastadapt's choice",
               "pool / choice"]
    out = [[r["load"] if r["load"] != "busy" else f"one busy process per CPU ({data['cpus']})",
            f"{r['n']:,}", "n/a" if r["others_cpu"] is None else f"{r['others_cpu']:.0%}",
            _us(r["pool_us"], True), _us(r["serial_us"], True), _us(r["choice_us"], True),
            _x(r["pool_us"] / r["choice_us"])] for r in data["rows"]]
    return Table(headers, out, right=range(1, len(headers)))


LOAD_TITLE = "Mid-size updates on a busy machine: the thread pool only where it pays"
LOAD_TEXT = ("Adam's compiled loop, mean microseconds per call (a mean, since a late "
             "thread shows in a minority of calls): always on the thread pool, always "
             "serial, and as the dispatcher runs updates of `SERIAL_BELOW` to "
             "`ADAPTIVE_BELOW` elements (fastadapt/_pool.py: the loop whose recent calls "
             "were faster, the other tried now and then). First on the machine as it was, "
             "then with one spinning process per CPU. `pool / choice` above 1: the choice "
             "is faster.")


def gpt2_table(data):
    headers = ["implementation", "time/step", "GB/s", "fastadapt.Adam speed-up"]
    out = []
    others = _disturbed(data)
    for name, r in data["results"].items():
        if others is not None:
            out.append([GPT2_LABELS[name], _busy(others), DASH, DASH])
            continue
        out.append([GPT2_LABELS[name], _us(r["median_s"]), f"{r['gbps']:.1f}",
                    _x(r["x_fastadapt_class"]) if "x_fastadapt_class" in r else "n/a"])
    for name, reason in data["unavailable"].items():
        out.append([GPT2_LABELS[name], reason, "", ""])
    return Table(headers, out)


def cold_start_table(data):
    headers = ["fresh process", "import", "first call", "second call", "whole process"]
    out = []
    for key, label in (("empty_cache", "fastadapt, empty compile cache"),
                       ("warm_cache", "fastadapt, warm compile cache"),
                       ("torch", "torch fused Adam (reference)")):
        r = data.get(key)
        if r is None:
            continue
        if "unavailable" in r:
            out.append([label, r["unavailable"], "", "", ""])
            continue
        out.append([label, _us(r["import_s"]), _us(r["first_call_s"]),
                    _us(r["second_call_s"]), _us(r["process_s"])])
    return Table(headers, out)


def cuda_table(data):
    headers = ["rule", "n", "fastadapt", "GB/s", "% roofline", "x torch single",
               "x torch foreach", "x torch fused"]
    out = []
    for r in data["rows"]:
        if "error" in r:
            out.append([r["label"], _n(r["n"]), r["error"]] + [""] * 5)
            continue
        fa = r["implementations"]["fastadapt"]
        cells = [r["label"], _n(r["n"]), _us(fa["median_s"]), f"{fa['gbps']:.0f}",
                 f"{r['pct_roofline']:.0f}%"]
        for mode in TORCH_MODES:
            if mode in r["speedup"]:
                cells.append(_x(r["speedup"][mode]))
            else:
                cells.append(_unavailable_cell(r["unavailable"].get(mode, "n/a")))
        out.append(cells)
    return Table(headers, out)


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
                  if r["n"] == n and _disturbed(r) is None)
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


_PIPELINE_LABELS = {"fastadapt": "fastadapt: grad_norm + Adam step (folded scale and clip)",
                    "fastadapt_update_only": "fastadapt: Adam step alone (no norm)",
                    "torch_fused": "torch: unscale_ + clip_grad_norm_ + fused Adam",
                    "torch_foreach": "torch: unscale_ + clip_grad_norm_ + foreach Adam",
                    "grad_norm": "fastadapt.grad_norm",
                    "read_only_roofline": "read-only roofline (sum of the same chunks)"}


def wholestep_tables(w):
    """``[(title, Table)]`` for the whole-step section (norm pass, pipelines)."""
    if not w:
        return []
    out = []
    busy = _disturbed(w["norm_pass"])
    n = w["norm_pass"]
    rows = [[_PIPELINE_LABELS.get(k, k)] + ([_busy(busy), ""] if busy else
            [f"{r['ms']:.2f}", f"{r['gbps']:.1f}"]) for k, r in n["results"].items()]
    pct = _busy(busy) if busy else f"{n['pct_roofline']:.0f}%"
    out.append((f"Global norm, one read-only pass over {_n(n['n'])} {n['dtype']} elements "
                f"({pct} of the read-only roofline)",
                Table(["implementation", "ms", "GB/s"], rows)))
    for key in ("whole_step", "whole_step_gpt2"):
        if not w.get(key):
            continue
        r = w[key]
        busy = _disturbed(r)
        shape = (f"GPT-2 small's {r['arrays']} arrays" if r.get("d_model")
                 else "one array")
        rows = []
        for name, e in r["results"].items():
            bpe = str(r["bytes_per_element"][name])
            rows.append([_PIPELINE_LABELS.get(name, name), bpe]
                        + ([_busy(busy), "", ""] if busy else
                           [f"{e['ms']:.1f}", f"{e['gbps']:.1f}", _x(e["speedup_vs"])]))
        for name, why in r.get("unavailable", {}).items():
            rows.append([_PIPELINE_LABELS.get(name, name), "", why, "", ""])
        out.append((f"Whole optimizer step (unscale, non-finite check, clip to "
                    f"{r['max_grad_norm']:g}, Adam), {shape}, {r['n']:,} {r['dtype']} "
                    "elements; x = that pipeline's time / fastadapt's",
                    Table(["pipeline", "bytes/element", "ms", "GB/s", "x"], rows)))
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


def accuracy_table(a):
    from ._accuracy import table
    return Table(*table(a), right={1, 2})


def storage_table(s):
    from ._storage_modes import storage_table as rows
    return Table(*rows(s), right={2, 3, 4, 5, 7, 8, 9})


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


def register_table(registers):
    """The table of ``_gpu.registers()``'s rows."""
    archs = ("sm_80", "sm_90")
    headers = ["kernel", *archs, *(f"{a} stack" for a in archs), *(f"{a} spill" for a in archs)]
    rows = [[r["kernel"]] + [str(r.get(h, "")) for h in headers[1:]]
            for r in registers["rows"]]
    return Table(headers, rows)


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
    marked = sum(1 for e in entries if _disturbed(e) is not None)
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
