"""Tables (terminal and Markdown), the targets check and the throughput plot,
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


def _star(entry, above=DISTURBED_ABOVE):
    """"*" when other processes used more than ``above`` of the CPUs meanwhile."""
    others = entry.get("others_cpu") if isinstance(entry, dict) else entry
    return "*" if others is not None and others > above else ""


def _unavailable_cell(reason):
    if reason == "torch not installed":
        return reason
    if reason.startswith("no fused"):
        return "no fused"
    return "n/a"


# ----------------------------------------------------------------- tables
def sweep_table(rows):
    headers = ["rule", "n", "time/step", "GB/s", "% roofline", "x NumPy",
               "x NumPy fresh temps", "x torch single", "x torch foreach", "x torch fused"]
    out = []
    for r in rows:
        if "fastadapt_us" not in r:
            out.append([r["label"], _n(r["n"]), "did not run"] + [""] * (len(headers) - 3))
            continue
        cells = [r["label"], _n(r["n"]), _us(r["fastadapt_us"], True) + _star(r),
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
        for name in IMPLEMENTATIONS:
            entry = r["implementations"][name]
            cells.append(f"{entry['gbps']:.1f}" if "gbps" in entry
                         else _unavailable_cell(entry["unavailable"]))
        out.append(cells)
    return Table(headers, out)


def per_call_table(rows):
    headers = ["rule", "n", "fastadapt", "driver alone", "Python side", "torch fused",
               "torch single", "fastadapt / torch fused"]
    out = []
    for r in rows:
        us = r["us"]

        def cell(name):
            if name in us:
                return _us(us[name], True)
            return _unavailable_cell(r["unavailable"].get(name, "n/a"))
        out.append([r["label"], _n(r["n"]), cell("fastadapt") + _star(r), cell("driver"),
                    _us(r["overhead_us"], True), cell("torch_fused"), cell("torch_single"),
                    f"{r['vs_torch_fused']:.2f}" if "vs_torch_fused" in r else "n/a"])
    return Table(headers, out)


def threshold_table(data):
    sizes = data["rows"][0]["sizes"] if data["rows"] else []
    headers = ["rule", "driver"] + [f"{n:,}" for n in sizes] + ["parallel faster from"]
    out = []
    for r in data["rows"]:
        cross = f"{r['crossover']:,}" if r["crossover"] else f"> {sizes[-1]:,}"
        stars = [_star(o) for o in r.get("others_cpu", [None] * len(sizes))]
        out.append([r["label"], "serial"] + [f"{t:.2f}{m}" for t, m in zip(r["serial_us"], stars)]
                   + [cross])
        out.append(["", "parallel"] + [f"{t:.2f}{m}" for t, m in zip(r["parallel_us"], stars)]
                   + [""])
    return Table(headers, out, right=range(2, len(headers)))


def gpt2_table(data):
    headers = ["implementation", "time/step", "GB/s", "x vs torch fused"]
    out = []
    for name, r in data["results"].items():
        out.append([GPT2_LABELS[name], _us(r["median_s"]) + _star(data), f"{r['gbps']:.1f}",
                    _x(r["vs_torch_fused"]) if "vs_torch_fused" in r else "n/a"])
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
    headers = ["rule", "n", "fastadapt", "GB/s", "% of copy", "x torch single",
               "x torch foreach", "x torch fused"]
    out = []
    for r in data["rows"]:
        if "error" in r:
            out.append([r["label"], _n(r["n"]), r["error"]] + [""] * 5)
            continue
        fa = r["implementations"]["fastadapt"]
        cells = [r["label"], _n(r["n"]), _us(fa["median_s"]), f"{fa['gbps']:.0f}",
                 f"{r['pct_copy']:.0f}%"]
        for mode in TORCH_MODES:
            cells.append(_x(r["speedup"][mode]) if mode in r["speedup"] else "n/a")
        out.append(cells)
    return Table(headers, out)


# ----------------------------------------------------------------- targets
def targets(data):
    """The issue's targets, checked against this run: a list of dicts with
    ``target``, ``measured`` and ``met`` (True / False)."""
    out = []
    if data["settings"]["dtype"] != "float32":
        return out
    rows = {(r["config"], r["n"]): r for r in data.get("sweep", [])}

    def check(target, value, ok, fmt):
        out.append({"target": target, "measured": fmt(value), "met": bool(ok)})
    big = 2 ** 24
    adam = rows.get(("adam", big))
    if adam and "fastadapt_us" in adam:
        if "pct_roofline" in adam:
            check("Adam fp32 2^24: >= 90% of roofline", adam["pct_roofline"],
                  adam["pct_roofline"] >= 90, lambda v: f"{v:.0f}%")
        s = adam["speedup"]
        if "torch_fused" in s:
            check("Adam fp32 2^24: >= 1.0x torch fused", s["torch_fused"],
                  s["torch_fused"] >= 1.0, _x)
        if "numpy" in s:
            fresh = (f" (with temporaries allocated per call: {_x(s['numpy_alloc'])})"
                     if "numpy_alloc" in s else "")
            check("Adam fp32 2^24: >= 6x NumPy (temporaries reused)", s["numpy"],
                  s["numpy"] >= 6, lambda v: _x(v) + fresh)
    for key, label in (("rmsprop", "RMSprop"), ("rmsprop-centered", "RMSprop centered"),
                       ("adadelta", "Adadelta")):
        r = rows.get((key, big))
        if r and "torch_best" in r.get("speedup", {}):
            check(f"{label} fp32 2^24: >= 3x torch's best", r["speedup"]["torch_best"],
                  r["speedup"]["torch_best"] >= 3, _x)
    for key, label in (("sgd-momentum", "SGD-momentum"), ("adagrad", "AdaGrad")):
        r = rows.get((key, big))
        if r and "torch_fused" in r.get("speedup", {}):
            check(f"{label} fp32 2^24: >= 1.0x torch fused", r["speedup"]["torch_fused"],
                  r["speedup"]["torch_fused"] >= 1.0, _x)
    for r in data.get("per_call", []):
        if "vs_torch_fused" in r:
            check(f"{r['label']} n={_n(r['n'])}: per call <= 2x torch fused's",
                  r["vs_torch_fused"], r["vs_torch_fused"] <= 2.0,
                  lambda v: f"{v:.2f}x torch fused's time")
    g = data.get("gpt2")
    if g and "vs_torch_fused" in g["results"].get("fastadapt_class", {}):
        v = g["results"]["fastadapt_class"]["vs_torch_fused"]
        check("GPT-2 small, fastadapt.Adam: >= 1.0x torch fused Adam", v, v >= 1.0, _x)
    for model in (g, data.get("gpt2_narrow")):
        ratio = (model or {}).get("class_over_one_array")
        if ratio is not None:
            check(f"{model['arrays']} arrays, {_n(model['elements'])} elements: fastadapt.Adam "
                  "step <= 1.1x adam_step on one array of that size", ratio, ratio <= 1.1,
                  lambda v: f"{v:.3f}x")
    return out


def targets_table(items):
    return Table(["target", "measured", ""],
                 [[t["target"], t["measured"], "met" if t["met"] else "MISSED"] for t in items],
                 right={1})


# ----------------------------------------------------------------- documents
_EXPLAIN = (
    "Times are medians over interleaved rounds (every implementation timed once per "
    "round, in rotated order). GB/s = bytes moved per step / time, where bytes = "
    "itemsize x (3 + 2 x state arrays) x n (param read+written, grad read, each state "
    "array read+written). % roofline = the same-traffic roofline kernel's time / "
    "fastadapt's (the roofline kernel is called directly, so on small arrays this "
    "column measures fastadapt's per-call overhead; on large ones, above 100% means "
    "the two are equal within the noise). \"x\" columns = that implementation's time / fastadapt's (above 1: "
    "fastadapt is faster). torch runs `optimizer.step()` on one parameter tensor with "
    "`.grad` set. NumPy is the in-place-ufunc rival in "
    "`fastadapt/benchmark/_numpy_reference.py` (one pass over memory per ufunc) with its "
    "two or three temporaries allocated once and reused; \"NumPy fresh temps\" is the same "
    "code allocating them in every call (`np.empty_like`), as a step function that keeps "
    "no buffers does. A measurement during which other processes used more than 15% of "
    "the CPUs (machine busy time from /proc/stat minus this process's CPU time) is taken "
    "again, up to `--retries` times; `*` marks one that stayed disturbed."
)


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
            out.append((f"GPU: {c['device']}, copy bandwidth {c['copy_gbps']:.0f} GB/s",
                        cuda_table(c).text()))
        else:
            out.append(("GPU", c["reason"]))
    if data.get("targets"):
        out.append(("Targets (this run)", targets_table(data["targets"]).text()))
    note = _disturbance_note(data)
    if note:
        out.append(("Disturbed measurements", note))
    return out


def _disturbance_note(data):
    """A footnote for "*" marks, or "" when nothing stayed disturbed."""
    entries = list(data.get("sweep", [])) + list(data.get("per_call", []))
    entries += [{"others_cpu": o} for r in (data.get("threshold") or {}).get("rows", [])
                for o in r.get("others_cpu", [])]
    entries += [g for g in (data.get("gpt2"), data.get("gpt2_narrow")) if g]
    marked = sum(1 for e in entries if _star(e))
    if not marked:
        return ""
    return (f"* other processes used more than {DISTURBED_ABOVE:.0%} of the CPUs during "
            f"this measurement ({marked} of {len(entries)}), even after "
            f"{data['settings'].get('retries', 0)} retries: treat it with suspicion.")


def _cross(value, t):
    if value is None:
        return "n/a"
    sizes = t["rows"][0]["sizes"] if t["rows"] else [0]
    return f"{value:,}" if value <= sizes[-1] else f"> {sizes[-1]:,}"


def text_report(data):
    lines = [f"fastadapt bench: {one_line(data['machine'])}", ""]
    for title, body in sections_text(data):
        lines += [title, body, ""]
    lines.append(f"wall time {data['wall_s']:.0f} s")
    return "\n".join(lines)


def markdown_report(data, plot_path=None, markdown_path=None):
    m = data["machine"]
    v = m["versions"]
    mem = f"{m['memory_bytes'] / 2**30:.1f} GiB" if m["memory_bytes"] else "unknown"
    copy = f"{m['copy_gbps']:.1f} GB/s" if m.get("copy_gbps") else "not measured"
    lines = [
        "# fastadapt benchmark results",
        "",
        "Generated by `" + " ".join(data["command"]) + "` — do not edit by hand; "
        "see `bench/README.md` to regenerate.",
        "",
        "## Machine",
        "",
        Table(["", ""], [
            ["CPU", m["cpu"]],
            ["cores", f"{m['usable_cpus']} usable ({m['logical_cpus']} logical)"],
            ["memory", mem],
            ["copy bandwidth (parallel `dst[:] = src`, counted as one read + one write per "
             "element as STREAM does; the in-place updates below pay no write-allocate "
             "read, so they can exceed it)", copy],
            ["threads", f"numba {m['numba_threads']} ({m['numba_threading_layer']}), torch "
                        f"{m['torch_threads'] if m['torch_threads'] else 'n/a'}"],
            ["software", f"fastadapt {v['fastadapt']}, numba {v['numba']}, numpy {v['numpy']}, "
                         f"torch {v['torch'] or 'not installed'}, python {v['python']}"],
            ["load average (1 min, all processes)", load_text(m)],
            ["platform", m["platform"]],
            ["date", m["date_utc"]],
            ["run time", f"{data['wall_s']:.0f} s (of which re-measuring disturbed "
                         f"measurements: {data.get('retry_seconds', 0):.0f} s)"],
        ], right=()).markdown(),
        "",
        _EXPLAIN,
        "",
    ]
    if data.get("targets"):
        lines += ["## Targets", "", targets_table(data["targets"]).markdown(), ""]
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
                  "scalars, dispatch).", "", per_call_table(data["per_call"]).markdown(), ""]
    if data.get("threshold"):
        t = data["threshold"]
        lines += ["## Serial / parallel threshold", "",
                  f"Microseconds per call of `DRIVERS[rule].serial` and `.parallel`. "
                  f"`SERIAL_BELOW` is {t['serial_below']}; the median crossover measured here "
                  f"is {_cross(t['median_crossover'], t)}. Regenerate with "
                  "`fastadapt bench --threshold`.", "", threshold_table(t).markdown(), ""]
    for g in filter(None, (data.get("gpt2"), data.get("gpt2_narrow"))):
        d = g.get("d_model", 768)
        lines += [f"## A model-shaped step: GPT-2 small shapes, d_model={d}", "",
                  f"Adam over the {g['arrays']} parameter arrays of GPT-2 small"
                  + ("" if d == 768 else f" narrowed to d_model={d}")
                  + f" ({g['elements']:,} {g['dtype']} elements): fastadapt's optimizer class "
                  "keeps them in one flat buffer (one kernel call); torch steps the list of "
                  "tensors; `adam_step` on one array of the same size is the class's floor.", "",
                  gpt2_table(g).markdown(), ""]
    if data.get("cold_start"):
        c = data["cold_start"]
        lines += ["## Cold start", "",
                  f"`import fastadapt` and the first `adam_step` ({c['n']:,} {c['dtype']} "
                  "elements) in a fresh process: first with an empty compile cache (the "
                  "one-off compile), then with the cache that run filled.", "",
                  cold_start_table(c).markdown(), ""]
    if data.get("cuda") is not None:
        c = data["cuda"]
        lines += ["## GPU", ""]
        if c["available"]:
            lines += [f"{c['device']}, copy bandwidth {c['copy_gbps']:.0f} GB/s", "",
                      cuda_table(c).markdown(), ""]
        else:
            lines += [c["reason"] + ".", ""]
    return "\n".join(lines)


# ----------------------------------------------------------------- plot
_STYLE = {"fastadapt": dict(color="C0", lw=2.2, marker="o"),
          "roofline": dict(color="black", lw=1.4, ls="--"),
          "numpy": dict(color="C2", marker="s", ms=3),
          "numpy_alloc": dict(color="C2", marker="s", ms=3, ls=":", alpha=0.7),
          "torch_single": dict(color="C3", marker="v", ms=3),
          "torch_foreach": dict(color="C1", marker="^", ms=3),
          "torch_fused": dict(color="C4", marker="D", ms=3)}


def plot(data, path):
    """Throughput vs size, one panel per rule configuration; returns None or
    the reason no plot was written."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed (pip install 'fastadapt[bench]')"
    rows = data.get("sweep") or []
    labels = list(dict.fromkeys(r["label"] for r in rows))
    if not labels:
        return "no sweep results to plot"
    ncols = min(4, len(labels))
    nrows = -(-len(labels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(max(4.2 * ncols, 8.4), 3.3 * nrows + 1.2),
                             squeeze=False, sharex=True)
    for ax, label in zip(axes.flat, labels):
        mine = sorted((r for r in rows if r["label"] == label), key=lambda r: r["n"])
        for name in IMPLEMENTATIONS:
            pts = [(r["n"], r["implementations"][name]["gbps"]) for r in mine
                   if "gbps" in r["implementations"][name]]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, label=LABELS[name], **_STYLE[name])
        ax.set_xscale("log")
        ax.set_title(f"{label} ({mine[0]['bytes_per_element']} B/elem)", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.set_ylim(bottom=0)
    for ax in axes.flat[len(labels):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("elements")
    for ax in axes[:, 0]:
        ax.set_ylabel("GB/s")
    handles, names = axes.flat[0].get_legend_handles_labels()
    legend_cols = len(names) if ncols >= 4 else min(4, len(names))
    legend_rows = -(-len(names) // legend_cols)
    fig.legend(handles, names, loc="lower center", ncol=legend_cols, fontsize=9, frameon=False)
    m = data["machine"]
    fig.suptitle(f"fastadapt bench, {data['settings']['dtype']}: {m['cpu']}, "
                 f"{m['usable_cpus']} cores, {m['date_utc']}", fontsize=11)
    bottom = (0.3 * legend_rows + 0.15) / fig.get_figheight()
    fig.tight_layout(rect=(0, bottom, 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
