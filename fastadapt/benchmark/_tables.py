"""The benchmark report's tables, one per section of one run's data (the
dict ``fastadapt bench --json`` writes), each a :class:`Table` that renders
aligned for a terminal or as Markdown; a measurement other processes
disturbed shows as "— busy N%" instead of figures."""
from ._configs import size_label as _n
from ._implementations import GPT2_LABELS, IMPLEMENTATIONS, LABELS, TORCH_MODES

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


def disturbed(entry, above=DISTURBED_ABOVE):
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
        others = disturbed(r)
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
        others = disturbed(r)
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
        others = disturbed(r)
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
        others = [disturbed(o) for o in r.get("others_cpu", [None] * len(sizes))]
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


def gpt2_table(data):
    headers = ["implementation", "time/step", "GB/s", "fastadapt.Adam speed-up"]
    out = []
    others = disturbed(data)
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
    busy = disturbed(w["norm_pass"])
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
        busy = disturbed(r)
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


def accuracy_table(a):
    from ._accuracy import table
    return Table(*table(a), right={1, 2})


def storage_table(s):
    from ._storage_modes import storage_table as rows
    return Table(*rows(s), right={2, 3, 4, 5, 7, 8, 9})


def register_table(registers):
    """The table of ``_gpu.registers()``'s rows."""
    archs = ("sm_80", "sm_90")
    headers = ["kernel", *archs, *(f"{a} stack" for a in archs), *(f"{a} spill" for a in archs)]
    rows = [[r["kernel"]] + [str(r.get(h, "")) for h in headers[1:]]
            for r in registers["rows"]]
    return Table(headers, rows)
